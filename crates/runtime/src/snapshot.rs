//! Snapshots, as containerd's overlayfs snapshotter keeps them: each layer unpacked once into
//! its own directory, named by its chain ID (so a layer shared by images, on the same parents,
//! is unpacked once), and a container's root filesystem mounted as overlayfs over them.
//! Where overlayfs is unavailable (or kiln is not root), the layers are unpacked in order
//! into the container's own directory instead, whiteouts applied by deletion.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_image::digest::Hasher;
use kiln_image::store::blobs::BlobStore;
use kiln_image::{Digest, Image};

use crate::unpack::{self, Devices, Options, UnpackError, Whiteouts};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("layer {layer}: {source}")]
    Unpack { layer: Digest, source: UnpackError },
    #[error("layer {layer} is not the content the image names: its tar has digest {actual}, the image's config says {expected}")]
    DiffId {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("image {image}: {layers} layers but {diff_ids} diff IDs in its config")]
    Mismatch {
        image: Digest,
        layers: usize,
        diff_ids: usize,
    },
    #[error("mounting overlayfs at {}: {source}", path.display())]
    Mount { path: PathBuf, source: io::Error },
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => Digest::sha256_of(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// A container's root filesystem.
#[derive(Debug)]
pub enum RootFs {
    /// overlayfs at `merged`, writes going to `upper`.
    Overlay { merged: PathBuf, upper: PathBuf },
    /// The layers copied (unpacked) into `dir`.
    Copied { dir: PathBuf },
}

impl RootFs {
    pub fn path(&self) -> &Path {
        match self {
            RootFs::Overlay { merged, .. } => merged,
            RootFs::Copied { dir } => dir,
        }
    }

    /// Unmounts an overlay (a copied tree has nothing to undo).
    pub fn unmount(&self) -> io::Result<()> {
        if let RootFs::Overlay { merged, .. } = self {
            let c = std::ffi::CString::new(merged.as_os_str().as_encoded_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
            // SAFETY: NUL-terminated path.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// Reads through to a hasher, so a layer's diff ID is checked as it is unpacked.
struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

pub struct Snapshots {
    dir: PathBuf,
    overlay: bool,
}

impl Snapshots {
    /// Snapshots under `dir` (created). Overlay snapshots need root and overlayfs.
    pub fn open(dir: &Path) -> Result<Snapshots, SnapshotError> {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let overlay = root
            && std::fs::read_to_string("/proc/filesystems")
                .map(|f| f.lines().any(|l| l.trim_end().ends_with("\toverlay")))
                .unwrap_or(false);
        Ok(Snapshots {
            dir: dir.to_path_buf(),
            overlay,
        })
    }

    /// Uses copies even where overlayfs would work.
    pub fn without_overlay(mut self) -> Snapshots {
        self.overlay = false;
        self
    }

    pub fn uses_overlay(&self) -> bool {
        self.overlay
    }

    fn layer_list(image: &Image) -> Result<Vec<(Digest, Digest)>, SnapshotError> {
        let layers = image.manifest.layers();
        let diff_ids = image.config.rootfs().diff_ids();
        if layers.len() != diff_ids.len() {
            return Err(SnapshotError::Mismatch {
                image: image.manifest_digest.clone(),
                layers: layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        let mut out = Vec::new();
        for (layer, diff) in layers.iter().zip(diff_ids) {
            let blob = Digest::parse(layer.digest().as_ref()).map_err(|e| SnapshotError::Io {
                path: PathBuf::from(layer.digest().to_string()),
                source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
            })?;
            let diff = Digest::parse(diff).map_err(|e| SnapshotError::Io {
                path: PathBuf::from(diff),
                source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
            })?;
            out.push((blob, diff));
        }
        Ok(out)
    }

    /// Unpacks `blob` (verifying it against `diff_id`) into `dest`, an empty directory.
    fn unpack_layer(
        blobs: &BlobStore,
        blob: &Digest,
        diff_id: &Digest,
        dest: &Path,
        whiteouts: Whiteouts,
    ) -> Result<(), SnapshotError> {
        let path = blobs.path(blob);
        let file = std::fs::File::open(&path).map_err(io_at(&path))?;
        let tar =
            kiln_image::transfer::decompressed(&path, file).map_err(|e| SnapshotError::Io {
                path: path.clone(),
                source: io::Error::other(e.to_string()),
            })?;
        let algorithm = diff_id.algorithm();
        let mut reader = HashingReader {
            inner: tar,
            hasher: algorithm.hasher(),
        };
        let options = Options {
            whiteouts,
            devices: Devices::Skip,
            ..Options::default()
        };
        unpack::unpack(dest, &mut reader, &options).map_err(|source| SnapshotError::Unpack {
            layer: blob.clone(),
            source,
        })?;
        // The tar's end-of-archive blocks and any padding count in the diff ID.
        io::copy(&mut reader, &mut io::sink()).map_err(io_at(&path))?;
        let actual = reader.hasher.finish();
        if &actual != diff_id {
            return Err(SnapshotError::DiffId {
                layer: blob.clone(),
                expected: diff_id.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// The unpacked directories of `image`'s layers, lowest first, unpacking those missing.
    pub fn layers(&self, blobs: &BlobStore, image: &Image) -> Result<Vec<PathBuf>, SnapshotError> {
        self.layer_dirs(blobs, &Self::layer_list(image)?)
    }

    /// The unpacked directories of layers given as (blob, diff ID) pairs, lowest first,
    /// unpacking those missing.
    pub fn layer_dirs(
        &self,
        blobs: &BlobStore,
        list: &[(Digest, Digest)],
    ) -> Result<Vec<PathBuf>, SnapshotError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let diff_ids: Vec<Digest> = list.iter().map(|(_, d)| d.clone()).collect();
        let mut out = Vec::new();
        for ((blob, diff_id), chain) in list.iter().zip(chain_ids(&diff_ids)) {
            let done = self.dir.join(chain.hex());
            if !done.join("fs").is_dir() {
                let tmp = self.dir.join(format!(
                    "tmp-{}-{}",
                    std::process::id(),
                    SEQ.fetch_add(1, Ordering::Relaxed)
                ));
                let fs = tmp.join("fs");
                std::fs::create_dir_all(&fs).map_err(io_at(&fs))?;
                let unpacked = Self::unpack_layer(blobs, blob, diff_id, &fs, Whiteouts::Overlay);
                let published = unpacked.and_then(|()| {
                    match std::fs::rename(&tmp, &done) {
                        Ok(()) => Ok(()),
                        // Another process unpacked it first: same content.
                        Err(_) if done.join("fs").is_dir() => Ok(()),
                        Err(e) => Err(io_at(&done)(e)),
                    }
                });
                if tmp.exists() {
                    let _ = std::fs::remove_dir_all(&tmp);
                }
                published?;
            }
            out.push(done.join("fs"));
        }
        Ok(out)
    }

    /// Keeps `dir`, an overlay upper directory whose changes were written as the layer with
    /// chain ID `chain`, as that layer's snapshot: the directory holds exactly what unpacking
    /// the layer would give, so the next step stacks on it without unpacking anything.
    /// When the snapshot exists already `dir` is removed instead.
    pub fn adopt(&self, dir: &Path, chain: &Digest) -> Result<PathBuf, SnapshotError> {
        let done = self.dir.join(chain.hex());
        if done.join("fs").is_dir() {
            let _ = std::fs::remove_dir_all(dir);
            return Ok(done.join("fs"));
        }
        static SEQ: AtomicU64 = AtomicU64::new(0);
        // Unique per call: two steps may adopt the same content at once.
        let tmp = self.dir.join(format!(
            "tmp-adopt-{}-{}-{}",
            chain.hex(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&tmp).map_err(io_at(&tmp))?;
        std::fs::rename(dir, tmp.join("fs")).map_err(io_at(dir))?;
        match std::fs::rename(&tmp, &done) {
            Ok(()) => {}
            Err(_) if done.join("fs").is_dir() => {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(io_at(&done)(e));
            }
        }
        Ok(done.join("fs"))
    }

    /// An empty directory to stand as the only lower layer of an image without layers.
    pub fn empty_lower(&self) -> Result<PathBuf, SnapshotError> {
        let empty = self.dir.join("empty");
        std::fs::create_dir_all(&empty).map_err(io_at(&empty))?;
        Ok(empty)
    }

    /// A writable root filesystem for a container in `container_dir`: overlayfs over the
    /// image's layer snapshots, or a copy of them.
    pub fn prepare(
        &self,
        blobs: &BlobStore,
        image: &Image,
        container_dir: &Path,
    ) -> Result<RootFs, SnapshotError> {
        if !self.overlay {
            let dir = container_dir.join("rootfs");
            std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
            for (blob, diff_id) in Self::layer_list(image)? {
                Self::unpack_layer(blobs, &blob, &diff_id, &dir, Whiteouts::Merge)?;
            }
            return Ok(RootFs::Copied { dir });
        }
        let layers = self.layers(blobs, image)?;
        let upper = container_dir.join("upper");
        let work = container_dir.join("work");
        let merged = container_dir.join("rootfs");
        let layers = if layers.is_empty() {
            vec![self.empty_lower()?]
        } else {
            layers
        };
        mount_overlay(&layers, &upper, &work, &merged)?;
        Ok(RootFs::Overlay { merged, upper })
    }
}

/// Mounts overlayfs at `merged` over `lowers` (lowest first, at least one), writes going to
/// `upper`; the three writable directories are created. Directory renames are copied up
/// and file metadata changes copy whole files (no `redirect_dir`, no `metacopy`), so the
/// upper directory alone always holds complete changes: a build step's layer is read
/// straight from it.
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> Result<(), SnapshotError> {
    for d in [upper, work, merged] {
        std::fs::create_dir_all(d).map_err(io_at(d))?;
    }
    let base = format!(
        "{},upperdir={},workdir={}",
        lowerdir_option(lowers),
        upper.display(),
        work.display()
    );
    // Kernels built without the redirect_dir/metacopy features refuse the options; their
    // defaults are the behaviour asked for.
    match mount_overlayfs(merged, &format!("{base},redirect_dir=off,metacopy=off"), 0) {
        Err(SnapshotError::Mount { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
            mount_overlayfs(merged, &base, 0)
        }
        other => other,
    }
}

/// Mounts `lowers` (lowest first) read-only at `merged`: a view of an image's files with
/// nothing to write to (a build's `COPY --from` source).
pub fn mount_read_only(lowers: &[PathBuf], merged: &Path) -> Result<(), SnapshotError> {
    std::fs::create_dir_all(merged).map_err(io_at(merged))?;
    // A lower-only overlay is read-only by construction; MS_RDONLY says so to the kernel.
    mount_overlayfs(merged, &lowerdir_option(lowers), libc::MS_RDONLY)
}

/// `lowerdir=` with the uppermost layer first.
fn lowerdir_option(lowers: &[PathBuf]) -> String {
    let lower: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    format!("lowerdir={}", lower.join(":"))
}

fn mount_overlayfs(
    merged: &Path,
    options: &str,
    flags: libc::c_ulong,
) -> Result<(), SnapshotError> {
    let c = |s: &str| std::ffi::CString::new(s).map_err(|_| io::Error::other("NUL in path"));
    let mount_err = |source| SnapshotError::Mount {
        path: merged.to_path_buf(),
        source,
    };
    let target = c(&merged.display().to_string()).map_err(mount_err)?;
    let data = c(options).map_err(mount_err)?;
    // SAFETY: NUL-terminated strings; mounts overlayfs with the options given.
    let rc = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            target.as_ptr(),
            c"overlay".as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(mount_err(io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_image::store::blobs::Expected;
    use kiln_image::{ImageStore, Platform, Target};

    fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    /// An image of three uncompressed layers in a fresh store: files, then a whiteout and an
    /// opaque directory, then an addition.
    fn image(store: &ImageStore) -> Image {
        let layers = [
            layer(&[
                ("a/b", b"1"),
                ("a/c", b"2"),
                ("d/e", b"3"),
                ("d/sub/g", b"4"),
            ]),
            layer(&[("a/.wh.b", b""), ("d/.wh..wh..opq", b""), ("d/f", b"5")]),
            layer(&[("new/file", b"6")]),
        ];
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for l in &layers {
            let d = store
                .blobs()
                .put_bytes(l, Expected::default())
                .expect("layer");
            diff_ids.push(d.to_string());
            descs.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": d.to_string(), "size": l.len()}));
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": Platform::host().architecture, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {}
        }))
        .expect("config");
        let cd = store
            .blobs()
            .put_bytes(&config, Expected::default())
            .expect("config");
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cd.to_string(), "size": config.len()},
            "layers": descs
        }))
        .expect("manifest");
        let md = store
            .blobs()
            .put_bytes(&manifest, Expected::default())
            .expect("manifest");
        let target = Target {
            digest: md,
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: manifest.len() as u64,
        };
        store.image(&target, &Platform::host()).expect("image")
    }

    fn tree(root: &Path) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).expect("read") {
                let e = e.expect("entry");
                let p = e.path();
                let rel = p.strip_prefix(base).expect("prefix").display().to_string();
                if e.file_type().expect("type").is_dir() {
                    walk(base, &p, out);
                } else {
                    out.push(format!(
                        "{rel}={}",
                        String::from_utf8_lossy(&std::fs::read(&p).expect("read"))
                    ));
                }
            }
        }
        let mut out = Vec::new();
        walk(root, root, &mut out);
        out.sort();
        out
    }

    const EXPECTED: [&str; 3] = ["a/c=2", "d/f=5", "new/file=6"];

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], Digest::sha256_of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn copied_root_filesystem_applies_whiteouts() {
        let t = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(&t.path().join("store")).expect("store");
        let img = image(&store);
        let snaps = Snapshots::open(&t.path().join("snapshots"))
            .expect("snapshots")
            .without_overlay();
        let rootfs = snaps
            .prepare(store.blobs(), &img, &t.path().join("c1"))
            .expect("prepare");
        assert_eq!(tree(rootfs.path()), EXPECTED);
    }

    #[test]
    fn overlay_root_filesystem_applies_whiteouts() {
        let t = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(&t.path().join("store")).expect("store");
        let img = image(&store);
        let snaps = Snapshots::open(&t.path().join("snapshots")).expect("snapshots");
        if !snaps.uses_overlay() {
            assert!(
                std::env::var_os("CI").is_none(),
                "overlay snapshots need root and overlayfs"
            );
            eprintln!("skipped: overlay snapshots need root and overlayfs");
            return;
        }
        let rootfs = snaps
            .prepare(store.blobs(), &img, &t.path().join("c1"))
            .expect("prepare");
        let seen = tree(rootfs.path());
        // A second container reuses the unpacked layers.
        let layers_before = std::fs::read_dir(t.path().join("snapshots"))
            .expect("read")
            .count();
        let second = snaps
            .prepare(store.blobs(), &img, &t.path().join("c2"))
            .expect("prepare");
        let layers_after = std::fs::read_dir(t.path().join("snapshots"))
            .expect("read")
            .count();
        std::fs::write(second.path().join("a/c"), b"changed").expect("write in c2");
        let first_after = tree(rootfs.path());
        rootfs.unmount().expect("unmount");
        second.unmount().expect("unmount");
        assert_eq!(seen, EXPECTED);
        assert_eq!(layers_before, layers_after);
        // Writes stay in their container's upper directory.
        assert_eq!(first_after, EXPECTED);
    }

    #[test]
    fn a_layer_that_is_not_its_diff_id_is_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(&t.path().join("store")).expect("store");
        let mut img = image(&store);
        let mut rootfs = img.config.rootfs().clone();
        let mut ids = rootfs.diff_ids().clone();
        ids[2] = Digest::sha256_of(b"something else").to_string();
        rootfs.set_diff_ids(ids);
        img.config.set_rootfs(rootfs);
        let snaps = Snapshots::open(&t.path().join("snapshots"))
            .expect("snapshots")
            .without_overlay();
        let err = snaps
            .prepare(store.blobs(), &img, &t.path().join("c1"))
            .expect_err("refused");
        assert!(matches!(err, SnapshotError::DiffId { .. }), "{err}");
    }
}
