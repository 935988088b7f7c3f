//! File operations of `COPY` and `ADD` inside a step's root filesystem: paths resolved as
//! if the root were `/` (a symlink in the image never leads outside it), trees copied with
//! their modes, times and links, owners reset or kept.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed while resolving one path before giving up (Linux's own limit).
const MAX_LINKS: usize = 40;

/// `path` (absolute in the image, or relative to its root) resolved under `root`: symlinks
/// are followed within the root, `..` stops at it. With `follow_last` false the last
/// component is not followed (it is what gets replaced or created).
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> io::Result<PathBuf> {
    let mut pending: Vec<String> = components(path).into_iter().rev().collect();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(comp) = pending.pop() {
        match comp.as_str() {
            "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let candidate = root.join(done.join("/")).join(&comp);
        let is_last = pending.is_empty();
        let meta = std::fs::symlink_metadata(&candidate);
        if meta.as_ref().is_ok_and(|m| m.file_type().is_symlink()) && (!is_last || follow_last) {
            links += 1;
            if links > MAX_LINKS {
                return Err(io::Error::other(format!(
                    "{path}: too many levels of symbolic links"
                )));
            }
            let target = std::fs::read_link(&candidate)?;
            let target = target.to_string_lossy().into_owned();
            if target.starts_with('/') {
                done.clear();
            }
            pending.extend(components(&target).into_iter().rev());
            continue;
        }
        done.push(comp);
    }
    Ok(root.join(done.join("/")))
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// Who owns copied files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// `--chown`, or root for files from the build context.
    Set { uid: u32, gid: u32 },
    /// As in the source (files copied from another stage).
    Keep,
}

#[derive(Debug, Clone, Copy)]
pub struct CopyOptions {
    pub owner: Owner,
    /// `--chmod`: the mode of every copied file and directory.
    pub chmod: Option<u32>,
}

fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: NUL-terminated path.
    if unsafe { libc::lchown(c.as_ptr(), uid, gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets access and modification time without following a symlink.
pub fn set_mtime(path: &Path, secs: i64, nanos: i64) -> io::Result<()> {
    let c = cstr(path)?;
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: nanos,
    };
    let times = [t, t];
    // SAFETY: NUL-terminated path and two timespecs.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes whatever is at `path` unless it is a directory (which is merged into).
fn clear_for(path: &Path, dir_wanted: bool) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && dir_wanted => Ok(true),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map(|()| false),
        Ok(_) => std::fs::remove_file(path).map(|()| false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Copies one entry (not its children) from `src` to `dst`; returns whether it was a
/// directory whose times must be set after its contents.
fn copy_entry(src: &Path, dst: &Path, options: &CopyOptions) -> io::Result<bool> {
    let meta = std::fs::symlink_metadata(src)?;
    let ft = meta.file_type();
    let (uid, gid) = match options.owner {
        Owner::Set { uid, gid } => (uid, gid),
        Owner::Keep => (meta.uid(), meta.gid()),
    };
    let mode = options.chmod.unwrap_or(meta.mode() & 0o7777);
    if ft.is_dir() {
        if !clear_for(dst, true)? {
            std::fs::create_dir(dst)?;
        }
        lchown(dst, uid, gid)?;
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode))?;
        return Ok(true);
    }
    clear_for(dst, false)?;
    if ft.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)?;
        lchown(dst, uid, gid)?;
    } else if ft.is_file() {
        // copy_file_range: the kernel moves the bytes, sharing extents where it can.
        std::fs::copy(src, dst)?;
        lchown(dst, uid, gid)?;
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode))?;
    } else {
        // Sockets, FIFOs and devices have no place in an image built from files.
        return Ok(false);
    }
    set_mtime(dst, meta.mtime(), meta.mtime_nsec())?;
    Ok(false)
}

/// Copies the entries `rel_paths` (relative to `src_root`, directories before their
/// contents, as [`crate::context::Context::walk`] lists them) of the tree at `src_root/top`
/// to `dst`: `top` itself becomes `dst`, and everything under it keeps its place below.
pub fn copy_tree(
    src_root: &Path,
    top: &str,
    rel_paths: &[String],
    dst: &Path,
    options: &CopyOptions,
) -> io::Result<()> {
    let mut dirs: Vec<(PathBuf, PathBuf)> = Vec::new();
    let top_path = src_root.join(top);
    // The top of a directory source is its contents' destination: created if missing, but
    // an existing directory keeps its own metadata (docker copies the contents only).
    if std::fs::symlink_metadata(&top_path).is_ok_and(|m| m.is_dir()) {
        if !clear_for(dst, true)? {
            copy_entry(&top_path, dst, options)?;
            dirs.push((top_path.clone(), dst.to_path_buf()));
        }
    } else {
        copy_entry(&top_path, dst, options)?;
    }
    let top_clean = top.trim_matches('/');
    for rel in rel_paths {
        let rel_clean = rel.trim_matches('/');
        let below = if top_clean.is_empty() || top_clean == "." {
            rel_clean
        } else if let Some(rest) = rel_clean.strip_prefix(top_clean) {
            match rest.strip_prefix('/') {
                Some(r) => r,
                None => continue,
            }
        } else {
            continue;
        };
        if below.is_empty() {
            continue;
        }
        let src = src_root.join(rel_clean);
        let target = dst.join(below);
        // A file re-included by an ignore exception comes without its (ignored) directory.
        if let Some(parent) = target.parent() {
            if std::fs::symlink_metadata(parent).is_err() {
                let (uid, gid) = match options.owner {
                    Owner::Set { uid, gid } => (uid, gid),
                    Owner::Keep => (0, 0),
                };
                mkdir_all(parent, uid, gid)?;
            }
        }
        if copy_entry(&src, &target, options)? {
            dirs.push((src, target));
        }
    }
    // Directory times last, deepest first, since writing inside a directory changes them.
    for (src, target) in dirs.iter().rev() {
        let meta = std::fs::symlink_metadata(src)?;
        set_mtime(target, meta.mtime(), meta.mtime_nsec())?;
    }
    Ok(())
}

/// Every path under `top` in `root` (relative to `root`), directories before their
/// contents, in name order: the walk of a tree that has no ignore rules.
pub fn walk_all(root: &Path, top: &str) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![top.trim_matches('/').to_string()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let meta = std::fs::symlink_metadata(&path)?;
        if !rel.is_empty() {
            out.push(rel.clone());
        }
        if meta.is_dir() {
            let mut names: Vec<String> = std::fs::read_dir(&path)?
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect();
            names.sort();
            for name in names.into_iter().rev() {
                stack.push(if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                });
            }
        }
    }
    Ok(out)
}

/// Creates `dir` and its missing parents inside the root, owned by `uid`:`gid`, mode 0755.
pub fn mkdir_all(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        mkdir_all(parent, uid, gid)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    lchown(dir, uid, gid)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
}

/// Writes an inline file (a `COPY <<EOF` heredoc or a downloaded `ADD` source).
pub fn write_file(
    dst: &Path,
    bytes: &[u8],
    mode: u32,
    owner: (u32, u32),
    mtime: Option<i64>,
) -> io::Result<()> {
    clear_for(dst, false)?;
    std::fs::write(dst, bytes)?;
    lchown(dst, owner.0, owner.1)?;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode))?;
    if let Some(t) = mtime {
        set_mtime(dst, t, 0)?;
    }
    Ok(())
}

/// Parses `--chmod`: octal digits only (`0755`, `644`).
pub fn parse_chmod(text: &str) -> Result<u32, String> {
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!(
            "invalid chmod parameter {text:?}: an octal mode such as 0755 is expected"
        ));
    }
    u32::from_str_radix(text, 8).map_err(|e| format!("invalid chmod parameter {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path();
        std::fs::create_dir_all(root.join("srv/app")).expect("mkdir");
        std::os::unix::fs::symlink("/srv/app", root.join("app")).expect("link");
        std::os::unix::fs::symlink("../../../../etc", root.join("srv/escape")).expect("link");
        assert_eq!(
            resolve_in_root(root, "/app/x", true).expect("resolve"),
            root.join("srv/app/x")
        );
        assert_eq!(
            resolve_in_root(root, "srv/escape/passwd", true).expect("resolve"),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(root, "/app", false).expect("resolve"),
            root.join("app")
        );
        std::os::unix::fs::symlink("loop", root.join("loop")).expect("link");
        assert!(resolve_in_root(root, "/loop/x", true).is_err());
    }

    #[test]
    fn a_tree_is_copied_with_modes_times_and_links() {
        let t = tempfile::tempdir().expect("tempdir");
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("d/e")).expect("mkdir");
        std::fs::write(src.join("d/e/f"), b"x").expect("write");
        std::fs::set_permissions(src.join("d/e/f"), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        std::os::unix::fs::symlink("e/f", src.join("d/link")).expect("link");
        set_mtime(&src.join("d/e/f"), 1_000_000, 0).expect("mtime");
        let dst = t.path().join("dst");
        let entries = walk_all(&src, "d").expect("walk");
        let options = CopyOptions {
            owner: Owner::Keep,
            chmod: None,
        };
        copy_tree(&src, "d", &entries, &dst, &options).expect("copy");
        let f = std::fs::metadata(dst.join("e/f")).expect("f");
        assert_eq!(f.mode() & 0o777, 0o700);
        assert_eq!(f.mtime(), 1_000_000);
        assert_eq!(
            std::fs::read_link(dst.join("link")).expect("link"),
            Path::new("e/f")
        );
    }

    #[test]
    fn chmod_must_be_octal() {
        assert_eq!(parse_chmod("0755"), Ok(0o755));
        assert_eq!(parse_chmod("644"), Ok(0o644));
        assert!(parse_chmod("u+x").is_err());
        assert!(parse_chmod("99").is_err());
        assert!(parse_chmod("").is_err());
    }
}
