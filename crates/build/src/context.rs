//! The build context: the directory a build reads `COPY` and `ADD` sources from, less what
//! `.dockerignore` leaves out, and the content digests that make cache keys (a step whose
//! sources did not change is reused; any change to a file's path, mode, link target or
//! bytes changes its digest).

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

use crate::ignore::{clean, IgnoreError, IgnoreRules};

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ignore(#[from] IgnoreError),
    #[error("{pattern:?}: {reason}")]
    Source { pattern: String, reason: String },
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A build context directory with its ignore rules.
pub struct Context {
    root: PathBuf,
    rules: IgnoreRules,
    hashes: Mutex<FileHashes>,
}

/// What a file's content hash was computed from: when a file still has the same inode,
/// size, modification and change times, its bytes are not read again (git's index and
/// BuildKit's content hash cache rely on the same stat data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stat {
    fn of(meta: &std::fs::Metadata) -> Stat {
        Stat {
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }
}

/// File content hashes by context path, kept in a file between builds.
#[derive(Default)]
struct FileHashes {
    file: Option<PathBuf>,
    entries: HashMap<String, (Stat, [u8; 32])>,
    changed: bool,
}

impl FileHashes {
    /// Reads a cache file; anything unreadable is a cold cache, never an error.
    fn load(file: &Path) -> FileHashes {
        let mut entries = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(file) {
            for line in text.lines() {
                let Some((fields, rel)) = line.split_once('\t') else {
                    continue;
                };
                let f: Vec<&str> = fields.split(' ').collect();
                let [ino, size, mtime, ctime, hash] = f.as_slice() else {
                    continue;
                };
                let (Ok(ino), Ok(size), Ok(mtime_ns), Ok(ctime_ns)) =
                    (ino.parse(), size.parse(), mtime.parse(), ctime.parse())
                else {
                    continue;
                };
                let mut digest = [0u8; 32];
                if hex::decode_to_slice(hash, &mut digest).is_err() {
                    continue;
                }
                let stat = Stat {
                    ino,
                    size,
                    mtime_ns,
                    ctime_ns,
                };
                entries.insert(rel.to_string(), (stat, digest));
            }
        }
        FileHashes {
            file: Some(file.to_path_buf()),
            entries,
            changed: false,
        }
    }
}

impl Context {
    /// Opens `root`. The ignore file is `<Dockerfile>.dockerignore` beside the Dockerfile
    /// when there is one (BuildKit's Dockerfile-specific ignore file), else the context's
    /// `.dockerignore`.
    pub fn open(root: &Path, dockerfile: Option<&Path>) -> Result<Context, ContextError> {
        let specific = dockerfile.map(|d| {
            let mut name = d.file_name().unwrap_or_default().to_os_string();
            name.push(".dockerignore");
            d.with_file_name(name)
        });
        let candidates = specific.into_iter().chain([root.join(".dockerignore")]);
        let mut rules = IgnoreRules::default();
        for path in candidates {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    rules = IgnoreRules::parse(&text)?;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&path)(e)),
            }
        }
        Ok(Context {
            root: root.to_path_buf(),
            rules,
            hashes: Mutex::new(FileHashes::default()),
        })
    }

    /// Keeps file content hashes in `file` between builds (see [`Context::save_hashes`]).
    pub fn with_hash_cache(self, file: &Path) -> Context {
        Context {
            hashes: Mutex::new(FileHashes::load(file)),
            ..self
        }
    }

    /// Writes the file hashes learned by this build back to the cache file (whole, or not
    /// at all).
    pub fn save_hashes(&self) -> Result<(), ContextError> {
        let Ok(hashes) = self.hashes.lock() else {
            return Ok(());
        };
        let Some(file) = hashes.file.as_ref().filter(|_| hashes.changed) else {
            return Ok(());
        };
        let mut text = String::new();
        for (rel, (st, digest)) in &hashes.entries {
            if rel.contains(['\n', '\t']) {
                continue;
            }
            text.push_str(&format!(
                "{} {} {} {} {}\t{rel}\n",
                st.ino,
                st.size,
                st.mtime_ns,
                st.ctime_ns,
                hex::encode(digest)
            ));
        }
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        }
        let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::write(&tmp, text).map_err(io_at(&tmp))?;
        std::fs::rename(&tmp, file).map_err(io_at(file))
    }

    /// The SHA-256 of a file's bytes, from the cache when its stat data is unchanged.
    fn file_hash(
        &self,
        rel: &str,
        path: &Path,
        meta: &std::fs::Metadata,
    ) -> Result<[u8; 32], ContextError> {
        let stat = Stat::of(meta);
        if let Ok(h) = self.hashes.lock() {
            if let Some((cached, digest)) = h.entries.get(rel) {
                if *cached == stat {
                    return Ok(*digest);
                }
            }
        }
        let mut hash = Sha256::new();
        let mut file = std::fs::File::open(path).map_err(io_at(path))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(io_at(path))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
        }
        let digest: [u8; 32] = hash.finalize().into();
        // A file written in the last two seconds may be written again within the same
        // timestamp tick, unseen; it is hashed again next time rather than trusted. (Any
        // later write moves an older modification time, so older files are safe.)
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let settled = now_ns - stat.mtime_ns > 2_000_000_000;
        if settled {
            if let Ok(mut h) = self.hashes.lock() {
                h.entries.insert(rel.to_string(), (stat, digest));
                h.changed = true;
            }
        }
        Ok(digest)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn is_ignored(&self, rel: &str) -> bool {
        self.rules.is_ignored(rel)
    }

    /// Every path under `rel` (a file or directory of the context) that the ignore rules
    /// keep, relative to the context root, in name order; directories before their contents.
    pub fn walk(&self, rel: &str) -> Result<Vec<String>, ContextError> {
        Ok(self.walk_stat(rel)?.into_iter().map(|(p, _)| p).collect())
    }

    /// [`Context::walk`] with each path's metadata (not following symlinks).
    fn walk_stat(&self, rel: &str) -> Result<Vec<(String, std::fs::Metadata)>, ContextError> {
        let mut out = Vec::new();
        let start = self.root.join(rel);
        let meta = std::fs::symlink_metadata(&start).map_err(io_at(&start))?;
        let is_dir = meta.is_dir();
        if !rel.is_empty() && rel != "." && !self.is_ignored(rel) {
            out.push((rel.to_string(), meta));
        }
        if is_dir {
            self.walk_dir(rel, &mut out)?;
        }
        Ok(out)
    }

    fn walk_dir(
        &self,
        rel: &str,
        out: &mut Vec<(String, std::fs::Metadata)>,
    ) -> Result<(), ContextError> {
        let dir = self.root.join(rel);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(io_at(&dir))?
            .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
            .collect();
        names.sort();
        for name in names {
            let child = if rel.is_empty() || rel == "." {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ignored = self.is_ignored(&child);
            let path = self.root.join(&child);
            let meta = std::fs::symlink_metadata(&path).map_err(io_at(&path))?;
            let is_dir = meta.is_dir();
            if !ignored {
                out.push((child.clone(), meta));
            }
            // An ignored directory is still entered when an exception may re-include
            // something inside it.
            if is_dir && (!ignored || self.rules.has_exceptions()) {
                self.walk_dir(&child, out)?;
            }
        }
        Ok(())
    }

    /// The context paths a `COPY` source names: a path, or a pattern with `*`, `?` and
    /// `[...]` in any component (Go's `filepath.Match`). An ignored or missing source is
    /// an error that names it, as in docker.
    pub fn resolve(&self, source: &str) -> Result<Vec<String>, ContextError> {
        let cleaned = clean(source.trim_start_matches('/'));
        if !cleaned.contains(['*', '?', '[']) {
            let path = self.root.join(&cleaned);
            if cleaned.split('/').any(|c| c == "..")
                || std::fs::symlink_metadata(&path).is_err()
                || (cleaned != "." && self.is_ignored(&cleaned))
            {
                return Err(ContextError::Source {
                    pattern: source.to_string(),
                    reason: "not found in the build context (or excluded by .dockerignore)".into(),
                });
            }
            return Ok(vec![cleaned]);
        }
        let pattern = glob_regex(&cleaned).map_err(|reason| ContextError::Source {
            pattern: source.to_string(),
            reason,
        })?;
        let depth = cleaned.split('/').count();
        let matches: Vec<String> = self
            .walk("")?
            .into_iter()
            .filter(|p| p.split('/').count() == depth && pattern.is_match(p))
            .collect();
        if matches.is_empty() {
            return Err(ContextError::Source {
                pattern: source.to_string(),
                reason: "no source files were specified (nothing in the build context matches)"
                    .into(),
            });
        }
        Ok(matches)
    }

    /// The digest of the content under the given context paths: paths, types, modes,
    /// ownership, link targets and file bytes, in walk order. Timestamps do not count (a
    /// fresh checkout of the same files hits the cache).
    pub fn digest(&self, paths: &[String]) -> Result<String, ContextError> {
        let mut hash = Sha256::new();
        for top in paths {
            for (rel, meta) in self.walk_stat(top)? {
                let path = self.root.join(&rel);
                hash.update(rel.as_bytes());
                hash.update([0]);
                hash.update(meta.permissions().mode().to_le_bytes());
                hash.update(meta.uid().to_le_bytes());
                hash.update(meta.gid().to_le_bytes());
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&path).map_err(io_at(&path))?;
                    hash.update(target.as_os_str().as_encoded_bytes());
                } else if meta.is_file() {
                    hash.update(meta.len().to_le_bytes());
                    hash.update(self.file_hash(&rel, &path, &meta)?);
                }
                hash.update([0xff]);
            }
        }
        Ok(format!("sha256:{:x}", hash.finalize()))
    }
}

/// `filepath.Match` as an anchored regular expression: wildcards stay within a component.
pub(crate) fn glob_regex(pattern: &str) -> Result<regex::Regex, String> {
    let mut re = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' => {
                re.push('[');
                if matches!(chars.peek(), Some('!') | Some('^')) {
                    chars.next();
                    re.push('^');
                }
                let mut closed = false;
                for d in chars.by_ref() {
                    if d == ']' {
                        closed = true;
                        break;
                    }
                    if matches!(d, '[' | '\\' | '&' | '~') {
                        re.push('\\');
                    }
                    re.push(d);
                }
                if !closed {
                    return Err("syntax error in pattern: unterminated [".into());
                }
                re.push(']');
            }
            '\\' => match chars.next() {
                Some(e) => re.push_str(&regex::escape(&e.to_string())),
                None => return Err("syntax error in pattern: trailing backslash".into()),
            },
            other => re.push_str(&regex::escape(&other.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| format!("syntax error in pattern: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        for (path, body) in [
            ("app.py", "print('hi')\n"),
            ("requirements.txt", "flask\n"),
            ("docs/a.md", "a"),
            ("docs/keep.md", "k"),
            ("node_modules/x/index.js", "x"),
            ("src/one.rs", "1"),
            ("src/two.rs", "2"),
        ] {
            let p = t.path().join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, body).expect("write");
        }
        std::fs::write(
            t.path().join(".dockerignore"),
            "node_modules\ndocs\n!docs/keep.md\n",
        )
        .expect("ignore");
        t
    }

    #[test]
    fn the_walk_leaves_out_ignored_paths_but_keeps_exceptions() {
        let t = tree();
        let c = Context::open(t.path(), None).expect("context");
        let all = c.walk("").expect("walk");
        assert!(all.contains(&"app.py".to_string()));
        assert!(all.contains(&"docs/keep.md".to_string()));
        assert!(!all.iter().any(|p| p.starts_with("node_modules")));
        assert!(!all.contains(&"docs/a.md".to_string()));
    }

    #[test]
    fn sources_resolve_by_path_or_pattern_and_missing_ones_are_named() {
        let t = tree();
        let c = Context::open(t.path(), None).expect("context");
        assert_eq!(c.resolve("./app.py").expect("path"), ["app.py"]);
        assert_eq!(
            c.resolve("src/*.rs").expect("glob"),
            ["src/one.rs", "src/two.rs"]
        );
        let e = c.resolve("missing.txt").expect_err("missing");
        assert!(e.to_string().contains("missing.txt"), "{e}");
        assert!(
            c.resolve("node_modules/x/index.js").is_err(),
            "ignored sources are not there"
        );
        assert!(c.resolve("../etc/passwd").is_err());
        assert!(c.resolve("[a").is_err());
    }

    #[test]
    fn digests_change_with_content_not_with_timestamps() {
        let t = tree();
        let c = Context::open(t.path(), None).expect("context");
        let before = c.digest(&[".".into()]).expect("digest");
        let app = t.path().join("app.py");
        let f = std::fs::File::options()
            .write(true)
            .open(&app)
            .expect("open");
        f.set_modified(std::time::SystemTime::UNIX_EPOCH)
            .expect("mtime");
        assert_eq!(c.digest(&[".".into()]).expect("digest"), before);
        std::fs::write(&app, "print('changed')\n").expect("write");
        assert_ne!(c.digest(&[".".into()]).expect("digest"), before);
        // Ignored files never count.
        let only_req = c.digest(&["requirements.txt".into()]).expect("digest");
        std::fs::write(t.path().join("node_modules/x/index.js"), "y").expect("write");
        assert_eq!(
            c.digest(&["requirements.txt".into()]).expect("digest"),
            only_req
        );
    }

    #[test]
    fn file_hashes_are_reused_until_the_stat_data_changes() {
        let t = tree();
        let cache = t.path().join("hashes");
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let app = t.path().join("app.py");
        let set_old = |p: &Path| {
            std::fs::File::options()
                .write(true)
                .open(p)
                .expect("open")
                .set_modified(old)
                .expect("mtime");
        };
        set_old(&app);
        let c = Context::open(t.path(), None)
            .expect("context")
            .with_hash_cache(&cache);
        let before = c.digest(&["app.py".into()]).expect("digest");
        c.save_hashes().expect("save");
        assert!(std::fs::read_to_string(&cache)
            .expect("cache")
            .contains("\tapp.py"));
        // A fresh context reads the cache and gives the same digest.
        let again = Context::open(t.path(), None)
            .expect("context")
            .with_hash_cache(&cache);
        assert_eq!(again.digest(&["app.py".into()]).expect("digest"), before);
        // Same size, same modification time, different bytes: the change time differs.
        std::fs::write(&app, "print('HI')\n").expect("write");
        set_old(&app);
        assert_ne!(again.digest(&["app.py".into()]).expect("digest"), before);
        // A damaged cache file is a cold cache.
        std::fs::write(&cache, "garbage\n1 2 3\tx\n").expect("write");
        let cold = Context::open(t.path(), None)
            .expect("context")
            .with_hash_cache(&cache);
        assert_ne!(cold.digest(&["app.py".into()]).expect("digest"), before);
    }
}
