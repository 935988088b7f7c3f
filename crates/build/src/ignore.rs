//! `.dockerignore`: which files of the build context the builder never sees, with Docker's
//! rules (moby's patternmatcher). Patterns are matched against paths relative to the
//! context root; `*`, `?` and `[...]` stay within one path component, `**` crosses any
//! number of them; a pattern that matches a directory excludes everything below it; `!`
//! makes an exception; the last matching pattern decides.

#[derive(Debug, thiserror::Error)]
#[error(".dockerignore line {line}: {reason}")]
pub struct IgnoreError {
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Clone)]
struct Pattern {
    exception: bool,
    regex: regex::Regex,
    /// The cleaned pattern, for messages.
    text: String,
}

/// The rules of one `.dockerignore` file.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    patterns: Vec<Pattern>,
}

/// Cleans a path as Go's `filepath.Clean` does (for relative, '/'-separated paths).
pub(crate) fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

/// Translates one pattern into an anchored regular expression, as patternmatcher does.
fn compile(pattern: &str) -> Result<regex::Regex, String> {
    let mut re = String::from("^");
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' => {
                if chars.get(i + 1) == Some(&'*') {
                    i += 1;
                    // `**/` at any position: zero or more whole directories.
                    if chars.get(i + 1) == Some(&'/') {
                        i += 1;
                        re.push_str("(.*/)?");
                    } else {
                        re.push_str(".*");
                    }
                } else {
                    re.push_str("[^/]*");
                }
            }
            '?' => re.push_str("[^/]"),
            '[' => {
                // A class, passed through; `!` or `^` negates as in Go's filepath.Match.
                let mut j = i + 1;
                let mut class = String::from("[");
                if matches!(chars.get(j), Some('!') | Some('^')) {
                    class.push('^');
                    j += 1;
                }
                let mut closed = false;
                while j < chars.len() {
                    let d = chars[j];
                    if d == ']' && class.len() > 1 && !class.ends_with('^') {
                        closed = true;
                        break;
                    }
                    if d == '\\' {
                        j += 1;
                        match chars.get(j) {
                            Some(e) => class.push_str(&regex::escape(&e.to_string())),
                            None => return Err("trailing backslash in a character class".into()),
                        }
                    } else if d == '[' || d == '&' || d == '~' || d == '-' && j + 1 == chars.len() {
                        class.push('\\');
                        class.push(d);
                    } else {
                        class.push(d);
                    }
                    j += 1;
                }
                if !closed {
                    return Err("unterminated character class".into());
                }
                class.push(']');
                re.push_str(&class);
                i = j;
            }
            '\\' => {
                i += 1;
                match chars.get(i) {
                    Some(e) => re.push_str(&regex::escape(&e.to_string())),
                    None => return Err("trailing backslash".into()),
                }
            }
            other => re.push_str(&regex::escape(&other.to_string())),
        }
        i += 1;
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| e.to_string())
}

impl IgnoreRules {
    /// Reads a `.dockerignore` file's text.
    pub fn parse(text: &str) -> Result<IgnoreRules, IgnoreError> {
        let mut patterns = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            if body.is_empty() {
                return Err(IgnoreError {
                    line: n + 1,
                    reason: "illegal exclusion pattern: \"!\"".into(),
                });
            }
            let mut cleaned = clean(body.trim_start_matches('/'));
            if cleaned == "." {
                cleaned = String::new();
            }
            let regex = compile(&cleaned).map_err(|reason| IgnoreError {
                line: n + 1,
                reason: format!("pattern {body:?}: {reason}"),
            })?;
            patterns.push(Pattern {
                exception,
                regex,
                text: cleaned,
            });
        }
        Ok(IgnoreRules { patterns })
    }

    /// Whether `path` (relative to the context root, '/'-separated) is left out.
    pub fn is_ignored(&self, path: &str) -> bool {
        let path = clean(path);
        let parents: Vec<String> = {
            let parts: Vec<&str> = path.split('/').collect();
            (1..parts.len()).map(|n| parts[..n].join("/")).collect()
        };
        let mut ignored = false;
        for p in &self.patterns {
            if p.text.is_empty() {
                continue;
            }
            let hit = p.regex.is_match(&path) || parents.iter().any(|d| p.regex.is_match(d));
            if hit {
                ignored = !p.exception;
            }
        }
        ignored
    }

    /// Whether any exception could re-include something below an ignored directory, so the
    /// walk must descend into it anyway.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> IgnoreRules {
        IgnoreRules::parse(text).expect("rules")
    }

    #[test]
    fn globs_stay_within_a_component_and_double_stars_cross_them() {
        let r = rules("*.pyc\n**/*.log\ndocs/*/draft\n");
        assert!(r.is_ignored("a.pyc"));
        assert!(!r.is_ignored("src/a.pyc"), "* does not cross /");
        assert!(r.is_ignored("x.log") && r.is_ignored("a/b/c/x.log"));
        assert!(r.is_ignored("docs/v1/draft") && r.is_ignored("docs/v1/draft/page.md"));
        assert!(!r.is_ignored("docs/v1/v2/draft"));
    }

    #[test]
    fn a_matched_directory_takes_its_contents_and_exceptions_win_when_last() {
        let r = rules("node_modules\n.git\n*.md\n!README.md\n");
        assert!(r.is_ignored("node_modules/a/b.js"));
        assert!(r.is_ignored(".git/HEAD"));
        assert!(r.is_ignored("CHANGES.md"));
        assert!(!r.is_ignored("README.md"));
        let r = rules("!README.md\n*.md\n");
        assert!(
            r.is_ignored("README.md"),
            "the last matching pattern decides"
        );
    }

    #[test]
    fn patterns_are_cleaned_and_rooted() {
        let r = rules("/build/\n./tmp\n  spaced  \n# comment\n\n");
        assert!(r.is_ignored("build/out.o"));
        assert!(r.is_ignored("tmp"));
        assert!(r.is_ignored("spaced"));
        assert!(!r.is_ignored("src/build/x"));
    }

    #[test]
    fn classes_and_escapes() {
        let r = rules("file[0-9].txt\nx[!a].y\nlit\\*eral\n");
        assert!(r.is_ignored("file3.txt") && !r.is_ignored("fileA.txt"));
        assert!(r.is_ignored("xb.y") && !r.is_ignored("xa.y"));
        assert!(r.is_ignored("lit*eral") && !r.is_ignored("litXeral"));
    }

    #[test]
    fn malformed_patterns_name_their_line() {
        let e = IgnoreRules::parse("ok\n!\n").expect_err("bare !");
        assert_eq!(e.line, 2);
        let e = IgnoreRules::parse("a\nb[\n").expect_err("open class");
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains("unterminated"), "{e}");
    }
}
