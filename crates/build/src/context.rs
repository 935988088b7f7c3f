//! The build context: the directory a build reads `COPY` and `ADD` sources from, less what
//! `.dockerignore` leaves out, and the content digests that make cache keys (a step whose
//! sources did not change is reused; any change to a file's path, mode, link target or
//! bytes changes its digest).

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
        })
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
        let mut out = Vec::new();
        let start = self.root.join(rel);
        let meta = std::fs::symlink_metadata(&start).map_err(io_at(&start))?;
        if !rel.is_empty() && rel != "." && !self.is_ignored(rel) {
            out.push(rel.to_string());
        }
        if meta.is_dir() {
            self.walk_dir(rel, &mut out)?;
        }
        Ok(out)
    }

    fn walk_dir(&self, rel: &str, out: &mut Vec<String>) -> Result<(), ContextError> {
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
            if !ignored {
                out.push(child.clone());
            }
            // An ignored directory is still entered when an exception may re-include
            // something inside it.
            if meta.is_dir() && (!ignored || self.rules.has_exceptions()) {
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
            for rel in self.walk(top)? {
                let path = self.root.join(&rel);
                let meta = std::fs::symlink_metadata(&path).map_err(io_at(&path))?;
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
                    let mut file = std::fs::File::open(&path).map_err(io_at(&path))?;
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = file.read(&mut buf).map_err(io_at(&path))?;
                        if n == 0 {
                            break;
                        }
                        hash.update(&buf[..n]);
                    }
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
}
