//! Unpacking a layer (an uncompressed tar stream) into a snapshot directory.
//!
//! Nothing may be written outside the snapshot, whatever the tarball holds. Every path is
//! resolved by the kernel inside the snapshot (`openat2` with `RESOLVE_IN_ROOT`, so a symlink
//! to `/etc` means the snapshot's `etc`, as it will inside the container), entries are created
//! relative to their resolved parent with `*at` calls that never follow a final symlink, and
//! entry names that climb out (`..`) or start at `/` are refused outright.
//!
//! OCI whiteouts are applied one of two ways: as overlayfs expects them in a layer's own
//! directory (a `0:0` character device for `.wh.NAME`, the `trusted.overlay.opaque` xattr for
//! `.wh..wh..opq`), or by deleting from a merged tree (the copying fallback where overlayfs is
//! unavailable).

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How `.wh.` entries take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// The layer gets its own directory, stacked by overlayfs: whiteouts are recorded in
    /// overlayfs' format.
    Overlay,
    /// The layer is unpacked over its parents' files: whiteouts delete.
    Merge,
}

/// What to do with character and block devices in a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Devices {
    /// Fail the unpack.
    Refuse,
    /// Leave them out (what rootless engines do).
    Skip,
    /// Create them (needs root).
    Create,
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub whiteouts: Whiteouts,
    pub devices: Devices,
    /// Give files the owners the tarball names (needs root; otherwise they are the caller's).
    pub same_owner: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            whiteouts: Whiteouts::Overlay,
            devices: Devices::Skip,
            // SAFETY: geteuid has no preconditions.
            same_owner: unsafe { libc::geteuid() } == 0,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
    pub skipped_devices: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("refused layer entry {entry:?}: {reason}")]
    Hostile { entry: String, reason: String },
    #[error("unpacking {entry:?}: {source}")]
    Io { entry: String, source: io::Error },
    #[error("reading the layer: {0}")]
    Tar(io::Error),
}

/// The name components of an entry path, or why it is refused.
fn components(raw: &[u8]) -> Result<Vec<&[u8]>, String> {
    if raw.starts_with(b"/") {
        return Err("absolute path".into());
    }
    if raw.contains(&0) {
        return Err("NUL byte in path".into());
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path climbs out with `..`".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn join(components: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in components.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    out
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens `path` inside the tree rooted at `root`, resolving every symlink as if `root` were
/// `/`. `path` empty means the root itself.
pub(crate) fn open_in_root(root: RawFd, path: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    let path = if path.is_empty() { b"." as &[u8] } else { path };
    let c = cstring(path)?;
    // SAFETY: open_how is plain data; zero is a valid value for every field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid descriptor, NUL-terminated path, `how` sized as the kernel expects.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Opens (creating what is missing) the directory `components` inside `root`.
fn ensure_dir(root: RawFd, components: &[&[u8]]) -> io::Result<OwnedFd> {
    let flags = libc::O_DIRECTORY | libc::O_RDONLY;
    match open_in_root(root, &join(components), flags) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let mut dir = open_in_root(root, b"", flags)?;
    for (i, name) in components.iter().enumerate() {
        match open_in_root(root, &join(&components[..=i]), flags) {
            Ok(fd) => dir = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let c = cstring(name)?;
                // SAFETY: valid directory descriptor and NUL-terminated single name.
                match check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) }) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                dir = open_in_root(root, &join(&components[..=i]), flags).map_err(|e| {
                    if e.raw_os_error() == Some(libc::ENOENT) {
                        io::Error::new(
                            io::ErrorKind::NotFound,
                            format!(
                                "{} is a symlink to a directory that does not exist",
                                String::from_utf8_lossy(&join(&components[..=i]))
                            ),
                        )
                    } else {
                        e
                    }
                })?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(dir)
}

/// What is at `name` in `dir`, without following a symlink.
fn stat_at(dir: RawFd, name: &CStr) -> io::Result<Option<libc::stat>> {
    // SAFETY: stat is plain data filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, NUL-terminated name, writable stat buffer.
    match check(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) }) {
        Ok(_) => Ok(Some(st)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The path of an open directory (inside the snapshot, already resolved by the kernel).
fn fd_path(fd: RawFd) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
}

/// Removes whatever is at `name` in `dir`: a file, a symlink (not its target) or a whole
/// directory tree (std's removal never follows symlinks).
fn remove_at(dir: RawFd, name: &CStr) -> io::Result<()> {
    let Some(st) = stat_at(dir, name)? else {
        return Ok(());
    };
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        let path = fd_path(dir)?.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
        std::fs::remove_dir_all(path)
    } else {
        // SAFETY: valid descriptor and NUL-terminated name.
        check(unsafe { libc::unlinkat(dir, name.as_ptr(), 0) }).map(|_| ())
    }
}

/// Metadata applied to directories once every entry is in (a read-only directory would
/// otherwise refuse its own children).
struct DirMeta {
    components: Vec<Vec<u8>>,
    mode: u32,
    mtime: i64,
}

/// Unpacks the tar stream `layer` into `root` (an existing directory).
pub fn unpack(root: &Path, layer: impl Read, options: &Options) -> Result<Stats, UnpackError> {
    let root_file = File::open(root).map_err(|source| UnpackError::Io {
        entry: root.display().to_string(),
        source,
    })?;
    let root_fd = root_file.as_raw_fd();
    let mut archive = tar::Archive::new(layer);
    let mut stats = Stats::default();
    let mut created: HashSet<Vec<u8>> = HashSet::new();
    let mut dirs: Vec<DirMeta> = Vec::new();
    for entry in archive.entries().map_err(UnpackError::Tar)? {
        let mut entry = entry.map_err(UnpackError::Tar)?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let hostile = |reason: String| UnpackError::Hostile {
            entry: shown.clone(),
            reason,
        };
        let io_err = |source: io::Error| UnpackError::Io {
            entry: shown.clone(),
            source,
        };
        let comps = components(&raw).map_err(&hostile)?;
        let Some((name, parent)) = comps.split_last() else {
            continue; // the layer's root itself
        };
        stats.entries += 1;
        let parent_fd = ensure_dir(root_fd, parent).map_err(io_err)?;
        let dir = parent_fd.as_raw_fd();

        // Whiteouts.
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            stats.whiteouts += 1;
            if hidden == b".wh..opq" {
                match options.whiteouts {
                    Whiteouts::Overlay => set_opaque(dir).map_err(io_err)?,
                    Whiteouts::Merge => {
                        clear_lower(dir, parent, &created).map_err(io_err)?;
                    }
                }
            } else {
                let target = components(hidden)
                    .ok()
                    .filter(|c| c.len() == 1)
                    .ok_or_else(|| hostile("whiteout of an invalid name".into()))?;
                let c = cstring(target[0]).map_err(io_err)?;
                remove_at(dir, &c).map_err(io_err)?;
                if options.whiteouts == Whiteouts::Overlay {
                    // SAFETY: valid descriptor and NUL-terminated name; a 0:0 char device.
                    check(unsafe { libc::mknodat(dir, c.as_ptr(), libc::S_IFCHR, 0) })
                        .map_err(io_err)?;
                }
            }
            continue;
        }

        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let uid = header.uid().unwrap_or(0) as libc::uid_t;
        let gid = header.gid().unwrap_or(0) as libc::gid_t;
        let mtime = header.mtime().unwrap_or(0) as i64;
        let c = cstring(name).map_err(io_err)?;
        let existing = stat_at(dir, &c).map_err(io_err)?;
        let is_dir = |st: &libc::stat| st.st_mode & libc::S_IFMT == libc::S_IFDIR;

        use tar::EntryType as T;
        match kind {
            T::Directory => {
                if !existing.as_ref().is_some_and(is_dir) {
                    remove_at(dir, &c).map_err(io_err)?;
                    // SAFETY: valid descriptor and NUL-terminated name.
                    check(unsafe { libc::mkdirat(dir, c.as_ptr(), 0o700) }).map_err(io_err)?;
                }
                dirs.push(DirMeta {
                    components: comps.iter().map(|c| c.to_vec()).collect(),
                    mode,
                    mtime,
                });
                if options.same_owner {
                    chown_at(dir, &c, uid, gid).map_err(io_err)?;
                }
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                remove_at(dir, &c).map_err(io_err)?;
                // SAFETY: valid descriptor and NUL-terminated name; the new descriptor is
                // owned by the File below.
                let fd = check(unsafe {
                    libc::openat(
                        dir,
                        c.as_ptr(),
                        libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_WRONLY
                            | libc::O_NOFOLLOW
                            | libc::O_CLOEXEC,
                        0o600 as libc::c_uint,
                    )
                })
                .map_err(io_err)?;
                // SAFETY: a fresh descriptor owned by nothing else.
                let mut file = unsafe { File::from_raw_fd(fd) };
                stats.bytes += io::copy(&mut entry, &mut file).map_err(io_err)?;
                if options.same_owner {
                    // SAFETY: valid descriptor.
                    check(unsafe { libc::fchown(file.as_raw_fd(), uid, gid) }).map_err(io_err)?;
                }
                // After chown, which clears set-id bits.
                // SAFETY: valid descriptor.
                check(unsafe { libc::fchmod(file.as_raw_fd(), mode as libc::mode_t) })
                    .map_err(io_err)?;
                set_mtime(dir, &c, mtime).map_err(io_err)?;
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| hostile("symlink without a target".into()))?;
                let t = cstring(&target).map_err(io_err)?;
                remove_at(dir, &c).map_err(io_err)?;
                // SAFETY: NUL-terminated target and name, valid descriptor. The target is
                // only text: it is resolved later, inside the container's root.
                check(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) }).map_err(io_err)?;
                if options.same_owner {
                    chown_at(dir, &c, uid, gid).map_err(io_err)?;
                }
                set_mtime(dir, &c, mtime).map_err(io_err)?;
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| hostile("hard link without a target".into()))?;
                let target_comps = components(&target)
                    .map_err(|why| hostile(format!("hard link target: {why}")))?;
                let source = open_in_root(
                    root_fd,
                    &join(&target_comps),
                    libc::O_PATH | libc::O_NOFOLLOW,
                )
                .map_err(|e| hostile(format!("hard link target not in the layer: {e}")))?;
                // SAFETY: stat is plain data filled by the kernel.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: valid descriptor, writable buffer.
                check(unsafe { libc::fstat(source.as_raw_fd(), &mut st) }).map_err(io_err)?;
                if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                    return Err(hostile("hard link to something not a regular file".into()));
                }
                remove_at(dir, &c).map_err(io_err)?;
                let empty = cstring(b"").map_err(io_err)?;
                // SAFETY: valid descriptors; AT_EMPTY_PATH links the opened file itself.
                check(unsafe {
                    libc::linkat(
                        source.as_raw_fd(),
                        empty.as_ptr(),
                        dir,
                        c.as_ptr(),
                        libc::AT_EMPTY_PATH,
                    )
                })
                .map_err(io_err)?;
            }
            T::Char | T::Block | T::Fifo => {
                let file_type = match kind {
                    T::Char => libc::S_IFCHR,
                    T::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let mut device = 0;
                if kind != T::Fifo {
                    match options.devices {
                        Devices::Refuse => {
                            return Err(hostile("device node (refused by policy)".into()))
                        }
                        Devices::Skip => {
                            stats.skipped_devices += 1;
                            continue;
                        }
                        Devices::Create => {}
                    }
                    let major = header.device_major().ok().flatten().unwrap_or(0);
                    let minor = header.device_minor().ok().flatten().unwrap_or(0);
                    device = libc::makedev(major, minor);
                }
                remove_at(dir, &c).map_err(io_err)?;
                // SAFETY: valid descriptor and NUL-terminated name.
                check(unsafe {
                    libc::mknodat(dir, c.as_ptr(), file_type | mode as libc::mode_t, device)
                })
                .map_err(io_err)?;
                if options.same_owner {
                    chown_at(dir, &c, uid, gid).map_err(io_err)?;
                }
            }
            // PAX and GNU long-name records are consumed by the tar reader; anything else
            // carries no file.
            _ => continue,
        }
        created.insert(join(&comps));
    }
    // Deepest first, so a directory's mtime is set after its children are in.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components.len()));
    for d in dirs {
        let comps: Vec<&[u8]> = d.components.iter().map(Vec::as_slice).collect();
        let shown = String::from_utf8_lossy(&join(&comps)).into_owned();
        let io_err = |source: io::Error| UnpackError::Io {
            entry: shown.clone(),
            source,
        };
        let Some((name, parent)) = comps.split_last() else {
            continue;
        };
        let parent_fd = open_in_root(root_fd, &join(parent), libc::O_DIRECTORY | libc::O_RDONLY)
            .map_err(io_err)?;
        let c = cstring(name).map_err(io_err)?;
        // SAFETY: valid descriptor and NUL-terminated name; no symlink is followed.
        check(unsafe {
            libc::fchmodat(parent_fd.as_raw_fd(), c.as_ptr(), d.mode as libc::mode_t, 0)
        })
        .map_err(io_err)?;
        set_mtime(parent_fd.as_raw_fd(), &c, d.mtime).map_err(io_err)?;
    }
    Ok(stats)
}

fn chown_at(dir: RawFd, name: &CStr, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: valid descriptor and NUL-terminated name; never follows a symlink.
    check(unsafe { libc::fchownat(dir, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
        .map(|_| ())
}

fn set_mtime(dir: RawFd, name: &CStr, mtime: i64) -> io::Result<()> {
    let times = [
        libc::timespec {
            tv_sec: mtime as libc::time_t,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: mtime as libc::time_t,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid descriptor, NUL-terminated name, two timespecs.
    check(unsafe {
        libc::utimensat(
            dir,
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(|_| ())
}

fn set_opaque(dir: RawFd) -> io::Result<()> {
    let key = c"trusted.overlay.opaque";
    // SAFETY: valid descriptor (opened read-only, not O_PATH), NUL-terminated key.
    check(unsafe { libc::fsetxattr(dir, key.as_ptr(), b"y".as_ptr().cast(), 1, 0) }).map(|_| ())
}

/// An opaque directory in merge mode: everything its lower layers put there goes, what this
/// layer already created stays.
fn clear_lower(dir: RawFd, parent: &[&[u8]], created: &HashSet<Vec<u8>>) -> io::Result<()> {
    let path = fd_path(dir)?;
    for entry in std::fs::read_dir(&path)? {
        let entry = entry?;
        let name = entry.file_name();
        let mut full = parent.to_vec();
        full.push(name.as_bytes());
        let path = join(&full);
        let mut below = path.clone();
        below.push(b'/');
        if created.contains(&path) || created.iter().any(|c| c.starts_with(&below)) {
            continue;
        }
        let c = cstring(name.as_bytes())?;
        remove_at(dir, &c)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar entry: raw name bytes (hostile ones included), type, link target, contents.
    struct E<'a> {
        name: &'a [u8],
        kind: tar::EntryType,
        link: &'a [u8],
        data: &'a [u8],
    }

    fn file<'a>(name: &'a str, data: &'a [u8]) -> E<'a> {
        E {
            name: name.as_bytes(),
            kind: tar::EntryType::Regular,
            link: b"",
            data,
        }
    }
    fn dir(name: &str) -> E<'_> {
        E {
            name: name.as_bytes(),
            kind: tar::EntryType::Directory,
            link: b"",
            data: b"",
        }
    }
    fn symlink<'a>(name: &'a str, to: &'a str) -> E<'a> {
        E {
            name: name.as_bytes(),
            kind: tar::EntryType::Symlink,
            link: to.as_bytes(),
            data: b"",
        }
    }
    fn hardlink<'a>(name: &'a str, to: &'a str) -> E<'a> {
        E {
            name: name.as_bytes(),
            kind: tar::EntryType::Link,
            link: to.as_bytes(),
            data: b"",
        }
    }

    /// Writes headers by hand: `tar::Builder` itself refuses the hostile names under test.
    fn tarball(entries: &[E]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            let mut h = tar::Header::new_old();
            {
                let old = h.as_old_mut();
                old.name[..e.name.len()].copy_from_slice(e.name);
                old.linkname[..e.link.len()].copy_from_slice(e.link);
            }
            h.set_entry_type(e.kind);
            h.set_mode(if e.kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_size(e.data.len() as u64);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(e.data);
            let pad = (512 - e.data.len() % 512) % 512;
            out.extend(std::iter::repeat_n(0u8, pad));
        }
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }

    fn opts(whiteouts: Whiteouts) -> Options {
        Options {
            whiteouts,
            devices: Devices::Refuse,
            same_owner: false,
        }
    }

    /// A scratch area with the snapshot inside it, so escapes would land next to it.
    fn area() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("snapshot");
        std::fs::create_dir(&root).expect("mkdir");
        (t, root)
    }

    fn outside(t: &tempfile::TempDir) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(t.path())
            .expect("read")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "snapshot")
            .collect();
        names.sort();
        names
    }

    #[test]
    fn files_dirs_links_land_with_their_contents() {
        let (_t, root) = area();
        let layer = tarball(&[
            dir("etc"),
            file("etc/hostname", b"kiln\n"),
            file("./bin/tool", b"#!/bin/sh\n"),
            symlink("bin/sh", "tool"),
            hardlink("bin/tool2", "bin/tool"),
        ]);
        let stats = unpack(&root, &layer[..], &opts(Whiteouts::Merge)).expect("unpack");
        assert_eq!(stats.entries, 5);
        assert_eq!(
            std::fs::read(root.join("etc/hostname")).expect("read"),
            b"kiln\n"
        );
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).expect("link"),
            Path::new("tool")
        );
        assert_eq!(
            std::fs::read(root.join("bin/tool2")).expect("read"),
            b"#!/bin/sh\n"
        );
    }

    #[test]
    fn dot_dot_and_absolute_names_are_refused() {
        for name in ["../escaped", "a/../../escaped", "/escaped"] {
            let (t, root) = area();
            let layer = tarball(&[file(name, b"x")]);
            let err = unpack(&root, &layer[..], &opts(Whiteouts::Merge)).expect_err(name);
            assert!(matches!(err, UnpackError::Hostile { .. }), "{name}: {err}");
            assert!(outside(&t).is_empty(), "{name}: {:?}", outside(&t));
        }
    }

    #[test]
    fn symlinks_resolve_inside_the_snapshot() {
        let (t, root) = area();
        let escape_dir = t.path().join("victim");
        // The link's target exists inside the snapshot (as it would in a lower layer).
        let inner = root.join(escape_dir.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(&inner).expect("mkdir");
        let layer = tarball(&[
            symlink("up", ".."),
            symlink("abs", escape_dir.to_str().expect("utf8")),
            symlink("slash", "/"),
            file("up/escaped-up", b"x"),
            file("abs/escaped-abs", b"x"),
            file("slash/escaped-slash", b"x"),
        ]);
        unpack(&root, &layer[..], &opts(Whiteouts::Merge)).expect("unpack");
        assert!(outside(&t).is_empty(), "{:?}", outside(&t));
        // Each write went where the link points inside the snapshot.
        assert!(root.join("escaped-up").is_file());
        assert!(root.join("escaped-slash").is_file());
        assert!(inner.join("escaped-abs").is_file());
        // A link to a directory that exists nowhere is refused, not followed out.
        let (t, root) = area();
        let layer = tarball(&[
            symlink("dangling", t.path().join("victim").to_str().expect("utf8")),
            file("dangling/f", b"x"),
        ]);
        let err = unpack(&root, &layer[..], &opts(Whiteouts::Merge)).expect_err("dangling");
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(outside(&t).is_empty(), "{:?}", outside(&t));
    }

    #[test]
    fn a_symlink_entry_is_never_written_through() {
        let (t, root) = area();
        let target = t.path().join("target-file");
        std::fs::write(&target, b"original").expect("write");
        let layer = tarball(&[
            symlink("f", target.to_str().expect("utf8")),
            file("f", b"overwritten"),
        ]);
        unpack(&root, &layer[..], &opts(Whiteouts::Merge)).expect("unpack");
        assert_eq!(std::fs::read(&target).expect("read"), b"original");
        assert_eq!(std::fs::read(root.join("f")).expect("read"), b"overwritten");
    }

    #[test]
    fn hard_link_escapes_are_refused() {
        let (t, root) = area();
        std::fs::write(t.path().join("secret"), b"s").expect("write");
        for (name, to) in [("h1", "../secret"), ("h2", "/etc/passwd")] {
            let layer = tarball(&[hardlink(name, to)]);
            let err = unpack(&root, &layer[..], &opts(Whiteouts::Merge)).expect_err(name);
            assert!(matches!(err, UnpackError::Hostile { .. }), "{err}");
        }
        // Through a symlink: the link's target is resolved inside the snapshot, where
        // there is no such file.
        let layer = tarball(&[
            symlink("out", t.path().to_str().expect("utf8")),
            hardlink("h3", "out/secret"),
        ]);
        let err = unpack(&root, &layer[..], &opts(Whiteouts::Merge)).expect_err("h3");
        assert!(matches!(err, UnpackError::Hostile { .. }), "{err}");
        assert_eq!(outside(&t), vec!["secret".to_string()]);
        // SAFETY: stat is plain data.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let c = CString::new(t.path().join("secret").as_os_str().as_bytes()).expect("c");
        // SAFETY: valid path and buffer.
        unsafe { libc::stat(c.as_ptr(), &mut st) };
        assert_eq!(st.st_nlink, 1, "the outside file gained a link");
    }

    #[test]
    fn devices_follow_the_policy() {
        let (t, root) = area();
        let dev = E {
            name: b"dev/null",
            kind: tar::EntryType::Char,
            link: b"",
            data: b"",
        };
        let layer = tarball(&[dev]);
        let err = unpack(&root, &layer[..], &opts(Whiteouts::Merge)).expect_err("refused");
        assert!(err.to_string().contains("device node"), "{err}");
        let skip = Options {
            devices: Devices::Skip,
            ..opts(Whiteouts::Merge)
        };
        let stats = unpack(&root, &layer[..], &skip).expect("skipped");
        assert_eq!(stats.skipped_devices, 1);
        assert!(!root.join("dev/null").exists());
        assert!(outside(&t).is_empty());
    }

    #[test]
    fn whiteouts_and_opaque_directories_merge() {
        let (_t, root) = area();
        let lower = tarball(&[
            file("a/b", b"1"),
            file("a/c", b"2"),
            file("d/e", b"3"),
            file("d/sub/g", b"4"),
        ]);
        unpack(&root, &lower[..], &opts(Whiteouts::Merge)).expect("lower");
        let upper = tarball(&[
            file("d/f", b"5"),
            file(".wh.nothing-there", b""),
            file("a/.wh.b", b""),
            file("d/.wh..wh..opq", b""),
        ]);
        let stats = unpack(&root, &upper[..], &opts(Whiteouts::Merge)).expect("upper");
        assert_eq!(stats.whiteouts, 3);
        assert!(!root.join("a/b").exists());
        assert!(root.join("a/c").is_file());
        let mut d: Vec<String> = std::fs::read_dir(root.join("d"))
            .expect("read d")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        d.sort();
        assert_eq!(
            d,
            vec!["f".to_string()],
            "opaque d keeps only this layer's entries"
        );
    }

    #[test]
    fn whiteouts_in_overlay_form() {
        let (_t, root) = area();
        let upper = tarball(&[
            file("a/.wh.b", b""),
            file("d/.wh..wh..opq", b""),
            file("d/f", b"5"),
        ]);
        match unpack(&root, &upper[..], &opts(Whiteouts::Overlay)) {
            Ok(_) => {}
            // Without CAP_MKNOD / CAP_SYS_ADMIN (trusted.* xattrs) this form cannot be written.
            Err(UnpackError::Io { source, .. })
                if source.raw_os_error() == Some(libc::EPERM)
                    && std::env::var_os("CI").is_none() =>
            {
                eprintln!("skipped: overlay whiteouts need root");
                return;
            }
            Err(e) => panic!("{e}"),
        }
        use std::os::unix::fs::FileTypeExt;
        let meta = std::fs::symlink_metadata(root.join("a/b")).expect("whiteout");
        assert!(meta.file_type().is_char_device());
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.rdev(), 0);
        let mut buf = [0u8; 4];
        let path = CString::new(root.join("d").as_os_str().as_bytes()).expect("c");
        // SAFETY: valid path, key and buffer.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                buf.as_mut_ptr().cast(),
                4,
            )
        };
        assert_eq!(n, 1);
        assert_eq!(buf[0], b'y');
        assert!(root.join("d/f").is_file());
    }
}
