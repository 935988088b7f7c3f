//! Layers from filesystem changes: the upper directory of an overlay (what one build step
//! wrote) becomes an OCI layer tarball. Overlay's whiteouts (character devices 0/0) and
//! opaque directories (the `trusted.overlay.opaque` attribute) become the OCI forms
//! (`.wh.NAME`, `.wh..wh..opq`). Entries are written in name order with fixed ownership
//! and, for reproducible builds, modification times clamped to `SOURCE_DATE_EPOCH`, so the
//! same changes always give the same bytes.

use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> LayerError + '_ {
    move |source| LayerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How a layer's entries are stamped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stamp {
    /// Modification times later than this are written as this (`SOURCE_DATE_EPOCH`).
    pub clamp_mtime: Option<u64>,
}

fn is_opaque(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut value = [0u8; 4];
    // SAFETY: reads at most value.len() bytes of an extended attribute into `value`.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

/// Writes the changes in `dir` (an overlay upper directory, or any tree of new files) as an
/// uncompressed tar to `out`.
pub fn write_tar(dir: &Path, out: impl Write, stamp: Stamp) -> Result<(), LayerError> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = dir.join(&rel);
        let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(&full)
            .map_err(io_at(&full))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        let mut subdirs = Vec::new();
        if !rel.as_os_str().is_empty() && is_opaque(&full) {
            append_marker(&mut builder, &rel.join(".wh..wh..opq"), stamp, &full)?;
        }
        for name in names {
            let path = rel.join(&name);
            let abs = dir.join(&path);
            let meta = std::fs::symlink_metadata(&abs).map_err(io_at(&abs))?;
            let ft = meta.file_type();
            if ft.is_char_device() && meta.rdev() == 0 {
                // An overlay whiteout: the lower file is deleted.
                let marker = rel.join(format!(".wh.{}", name.to_string_lossy()));
                append_marker(&mut builder, &marker, stamp, &abs)?;
                continue;
            }
            append_entry(&mut builder, &path, &abs, &meta, stamp)?;
            if ft.is_dir() {
                subdirs.push(path);
            }
        }
        // Depth first in name order: push in reverse so the smallest comes out first.
        for d in subdirs.into_iter().rev() {
            stack.push(d);
        }
    }
    builder
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io_at(dir))
}

fn header_for(meta: &std::fs::Metadata, stamp: Stamp) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    let mtime = meta.mtime().max(0) as u64;
    h.set_mtime(match stamp.clamp_mtime {
        Some(epoch) => mtime.min(epoch),
        None => mtime,
    });
    // Names are not looked up: ownership is the numeric ids, as in image layers.
    let _ = h.set_username("");
    let _ = h.set_groupname("");
    h
}

fn append_marker<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &Path,
    stamp: Stamp,
    source: &Path,
) -> Result<(), LayerError> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_mtime(stamp.clamp_mtime.unwrap_or(0));
    builder
        .append_data(&mut h, name, io::empty())
        .map_err(io_at(source))
}

fn append_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &Path,
    abs: &Path,
    meta: &std::fs::Metadata,
    stamp: Stamp,
) -> Result<(), LayerError> {
    let mut h = header_for(meta, stamp);
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(abs).map_err(io_at(abs))?;
        h.set_size(0);
        builder
            .append_link(&mut h, name, target)
            .map_err(io_at(abs))
    } else if ft.is_file() {
        let file = std::fs::File::open(abs).map_err(io_at(abs))?;
        builder.append_data(&mut h, name, file).map_err(io_at(abs))
    } else {
        h.set_size(0);
        builder
            .append_data(&mut h, name, io::empty())
            .map_err(io_at(abs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar_bytes: &[u8]) -> Vec<(String, u64)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.path().expect("path").display().to_string(),
                    e.header().mtime().expect("mtime"),
                )
            })
            .collect()
    }

    #[test]
    fn changes_become_a_sorted_tar_with_clamped_times() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(t.path().join("b/c")).expect("mkdir");
        std::fs::write(t.path().join("b/c/f"), b"x").expect("file");
        std::fs::write(t.path().join("a"), b"y").expect("file");
        std::os::unix::fs::symlink("a", t.path().join("link")).expect("link");
        let mut out = Vec::new();
        write_tar(
            t.path(),
            &mut out,
            Stamp {
                clamp_mtime: Some(1),
            },
        )
        .expect("tar");
        let list = entries(&out);
        let names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "link", "b/c", "b/c/f"]);
        assert!(list.iter().all(|(_, m)| *m <= 1));
        // The same tree gives the same bytes.
        let mut again = Vec::new();
        write_tar(
            t.path(),
            &mut again,
            Stamp {
                clamp_mtime: Some(1),
            },
        )
        .expect("tar");
        assert_eq!(out, again);
    }
}
