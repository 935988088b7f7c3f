//! Parser directives (`# syntax=`, `# escape=`, `# check=`).

use serde::{Deserialize, Serialize};

use super::util::{is_re_space, is_space};

/// The parser directives found at the top of a Dockerfile.
///
/// Directives are `# key=value` comment lines (keys case-insensitive, any
/// whitespace around `=`) that precede everything else; the first line that is
/// not a known directive (a blank line, another comment, an instruction, an
/// unknown key) ends the directive block and later directive-looking lines are
/// plain comments. A key may appear only once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directives {
    /// `# syntax=` (the frontend image BuildKit would use; kiln only records it).
    pub syntax: Option<String>,
    /// `# escape=`: `\` (the default) or `` ` ``.
    pub escape: char,
    /// `# check=` (linter configuration; recorded, otherwise ignored).
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

/// Incremental directive parser, fed every logical line's first physical line
/// like BuildKit's `DirectiveParser`.
#[derive(Debug, Default)]
pub(crate) struct DirectiveParser {
    done: bool,
    seen: Vec<String>,
}

impl DirectiveParser {
    /// Inspect one line (newline already trimmed). Returns whether the line
    /// was a directive, and updates `directives`.
    pub(crate) fn parse_line(
        &mut self,
        line: &str,
        directives: &mut Directives,
    ) -> Result<bool, String> {
        if self.done {
            return Ok(false);
        }
        let Some((key, value)) = match_directive(line) else {
            self.done = true;
            return Ok(false);
        };
        let key = key.to_ascii_lowercase();
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(false);
        }
        if self.seen.contains(&key) {
            return Err(format!("only one {key} parser directive can be used"));
        }
        self.seen.push(key.clone());
        match key.as_str() {
            "escape" => {
                directives.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(format!(
                            "invalid escape token '{value}' does not match ` or \\"
                        ))
                    }
                }
            }
            "syntax" => directives.syntax = Some(value.to_string()),
            _ => directives.check = Some(value.to_string()),
        }
        Ok(true)
    }
}

/// `#` then `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` after leading whitespace.
fn match_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start_matches(is_space);
    let first = rest.chars().next()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let key_len = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    let key = &rest[..key_len];
    let after = rest[key_len..].trim_start_matches(is_re_space);
    let t = after.strip_prefix('=')?;
    if t.contains('\n') {
        return None;
    }
    let trimmed = t.trim_start_matches(is_re_space);
    let value = if trimmed.is_empty() {
        // `.+?` must take one character: the last of the whitespace.
        let (idx, _) = t.char_indices().last()?;
        &t[idx..]
    } else {
        trimmed.trim_end_matches(is_re_space)
    };
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_directive_lines() {
        assert_eq!(match_directive("# escape=`"), Some(("escape", "`")));
        assert_eq!(match_directive("#ESCAPE = \\  "), Some(("ESCAPE", "\\")));
        assert_eq!(
            match_directive("# syntax=docker/dockerfile:1"),
            Some(("syntax", "docker/dockerfile:1"))
        );
        assert_eq!(match_directive("# escape="), None);
        assert_eq!(match_directive("# just a comment"), None);
        assert_eq!(match_directive("FROM x"), None);
        assert_eq!(match_directive("# 1x=y"), None);
    }
}
