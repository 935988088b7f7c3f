//! Link settings for release builds of the `kiln` binary.
//!
//! One executable holds the registry, the cluster, the node agent and the builder, and a
//! long-running `kiln registry serve` would otherwise keep pages of all of it resident: the
//! kernel maps 64 KiB around every code page a process touches, and the registry's functions
//! lie scattered among the others. Release links therefore
//! - place the functions listed in `link/registry-hot-symbols.txt` (made by
//!   `scripts/registry-link-order`) side by side, and
//! - pack relative relocations (`-z pack-relative-relocs`), so the loader reads a few KiB of
//!   relocations at start instead of over half a MiB.
//!
//! Both are options of LLD, Rust's default linker on x86_64 Linux; other targets link as usual.

fn main() {
    let list = "link/registry-hot-symbols.txt";
    println!("cargo:rerun-if-changed={list}");
    println!("cargo:rerun-if-changed=build.rs");
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !release || target != "x86_64-unknown-linux-gnu" {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let path = std::path::Path::new(&dir).join(list);
    if path.exists() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            path.display()
        );
        // Names from another toolchain or lock file are simply not found: no warning per name.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}
