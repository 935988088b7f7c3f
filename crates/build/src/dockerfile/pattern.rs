//! Shell-style patterns for `${var#pat}`, `${var%pat}` and `${var/pat/repl}`.
//!
//! BuildKit turns the pattern into a Go regular expression (`?` -> `.`,
//! `*` -> `.*` or `.*?`, everything else literal, `\*`, `\?`, `\\` escaped,
//! `\}` and `\/` unescaped) and matches it with leftmost-first semantics. Go's
//! `.` does not match a newline. This module compiles the same pattern to a
//! tiny program and runs it on a Pike VM, which gives identical match
//! positions (including the preference order of lazy and greedy stars) in
//! `O(pattern * text)` time without recursion.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Lit(char),
    Any,
    Star,
}

#[derive(Debug, Clone, Copy)]
enum Inst {
    Char(char),
    Any,
    Split(usize, usize),
    Jmp(usize),
    Match,
}

/// A compiled pattern.
pub(crate) struct Pattern {
    prog: Vec<Inst>,
}

fn tokenize(pattern: &str) -> Result<Vec<Token>, String> {
    let mut chars = pattern.chars().peekable();
    // Go's text/scanner skips a byte-order mark at the very start.
    if chars.peek() == Some(&'\u{feff}') {
        chars.next();
    }
    let mut toks = Vec::new();
    while let Some(c) = chars.next() {
        match c {
            '*' => toks.push(Token::Star),
            '?' => toks.push(Token::Any),
            '\\' => {
                if matches!(chars.peek(), Some('}') | Some('/')) {
                    continue;
                }
                match chars.next() {
                    Some(e @ ('*' | '?' | '\\')) => toks.push(Token::Lit(e)),
                    other => {
                        return Err(format!(
                            "invalid escape '\\{}'",
                            other.unwrap_or('\u{fffd}')
                        ))
                    }
                }
            }
            c => toks.push(Token::Lit(c)),
        }
    }
    Ok(toks)
}

impl Pattern {
    /// Compile `pattern`; `greedy` selects `.*` over `.*?` for `*`.
    pub(crate) fn compile(pattern: &str, greedy: bool) -> Result<Pattern, String> {
        let toks = tokenize(pattern)?;
        let mut prog = Vec::with_capacity(toks.len() * 3 + 1);
        for t in toks {
            match t {
                Token::Lit(c) => prog.push(Inst::Char(c)),
                Token::Any => prog.push(Inst::Any),
                Token::Star => {
                    let split = prog.len();
                    prog.push(Inst::Match); // placeholder
                    prog.push(Inst::Any);
                    prog.push(Inst::Jmp(split));
                    let out = prog.len();
                    prog[split] = if greedy {
                        Inst::Split(split + 1, out)
                    } else {
                        Inst::Split(out, split + 1)
                    };
                }
            }
        }
        prog.push(Inst::Match);
        Ok(Pattern { prog })
    }

    fn add_thread(
        &self,
        list: &mut Vec<(usize, usize)>,
        marks: &mut [usize],
        stamp: usize,
        pc: usize,
        start: usize,
    ) {
        let mut stack = vec![pc];
        while let Some(pc) = stack.pop() {
            if marks[pc] == stamp {
                continue;
            }
            marks[pc] = stamp;
            match self.prog[pc] {
                Inst::Jmp(x) => stack.push(x),
                Inst::Split(x, y) => {
                    stack.push(y);
                    stack.push(x);
                }
                _ => list.push((pc, start)),
            }
        }
    }

    /// Leftmost-first match in `text` starting at or after `from` (or exactly
    /// at `from` when `anchored`). Returns character offsets.
    pub(crate) fn find(
        &self,
        text: &[char],
        from: usize,
        anchored: bool,
    ) -> Option<(usize, usize)> {
        let n = text.len();
        let mut marks = vec![0usize; self.prog.len()];
        let mut clist: Vec<(usize, usize)> = Vec::new();
        let mut nlist: Vec<(usize, usize)> = Vec::new();
        let mut matched = None;
        let mut pos = from;
        loop {
            if matched.is_none() && (!anchored || pos == from) {
                self.add_thread(&mut clist, &mut marks, pos + 1, 0, pos);
            }
            if clist.is_empty() {
                if matched.is_some() || anchored || pos >= n {
                    break;
                }
                pos += 1;
                continue;
            }
            nlist.clear();
            for &(pc, start) in &clist {
                match self.prog[pc] {
                    Inst::Match => {
                        matched = Some((start, pos));
                        break;
                    }
                    Inst::Char(c) => {
                        if pos < n && text[pos] == c {
                            self.add_thread(&mut nlist, &mut marks, pos + 2, pc + 1, start);
                        }
                    }
                    Inst::Any => {
                        if pos < n && text[pos] != '\n' {
                            self.add_thread(&mut nlist, &mut marks, pos + 2, pc + 1, start);
                        }
                    }
                    Inst::Split(..) | Inst::Jmp(..) => {}
                }
            }
            if pos >= n {
                break;
            }
            std::mem::swap(&mut clist, &mut nlist);
            pos += 1;
        }
        matched
    }
}

fn invalid_pattern(pattern: &str, err: String) -> String {
    format!("invalid pattern ({pattern}) in substitution: {err}")
}

/// `${var#pat}` / `${var##pat}`.
pub(crate) fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let re = Pattern::compile(pattern, greedy).map_err(|e| invalid_pattern(pattern, e))?;
    let text: Vec<char> = value.chars().collect();
    Ok(match re.find(&text, 0, true) {
        Some((_, end)) => text[end..].iter().collect(),
        None => value.to_string(),
    })
}

/// Reverse a pattern but keep `\x` escape pairs in order (BuildKit's
/// `reversePattern`).
fn reverse_pattern(pattern: &str) -> String {
    let p: Vec<char> = pattern.chars().collect();
    let mut out = vec!['\0'; p.len()];
    let last = p.len().saturating_sub(1);
    let mut i = 0;
    while i < p.len() {
        let out_idx = last - i;
        if p[i] == '\\' && i != last {
            out[out_idx - 1] = p[i];
            out[out_idx] = p[i + 1];
            i += 2;
        } else {
            out[out_idx] = p[i];
            i += 1;
        }
    }
    out.into_iter().collect()
}

/// `${var%pat}` / `${var%%pat}`: match the reversed pattern against the
/// reversed value, as BuildKit does.
pub(crate) fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let rp = reverse_pattern(pattern);
    let rv: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&rp, &rv, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// Expand a Go `Regexp.Expand` template for a match without capture groups:
/// `$$` is `$`, `$0`/`${0}` is the match, other names are empty, malformed
/// references are literal.
fn expand_template(template: &str, matched: &str, out: &mut String) {
    let mut t = template;
    while let Some(idx) = t.find('$') {
        out.push_str(&t[..idx]);
        t = &t[idx + 1..];
        if let Some(rest) = t.strip_prefix('$') {
            out.push('$');
            t = rest;
            continue;
        }
        let (brace, body) = match t.strip_prefix('{') {
            Some(b) => (true, b),
            None => (false, t),
        };
        let name_len = body
            .char_indices()
            .find(|&(_, c)| {
                !(crate::dockerfile::util::is_letter(c)
                    || crate::dockerfile::util::is_digit(c)
                    || c == '_')
            })
            .map_or(body.len(), |(i, _)| i);
        if name_len == 0 {
            out.push('$');
            continue;
        }
        let name = &body[..name_len];
        let mut consumed = name_len;
        if brace {
            if !body[name_len..].starts_with('}') {
                out.push('$');
                continue;
            }
            consumed += 1;
        }
        t = &body[consumed..];
        let is_zero = name == "0";
        if is_zero {
            out.push_str(matched);
        }
    }
    out.push_str(t);
}

/// `${var/pat/repl}` (`all == false`) and `${var//pat/repl}` (`all == true`).
pub(crate) fn replace(
    pattern: &str,
    value: &str,
    replacement: &str,
    all: bool,
) -> Result<String, String> {
    let re = Pattern::compile(pattern, true).map_err(|e| invalid_pattern(pattern, e))?;
    let text: Vec<char> = value.chars().collect();
    let n = text.len();
    if !all {
        return Ok(match re.find(&text, 0, false) {
            Some((a, b)) => {
                let mut s: String = text[..a].iter().collect();
                s.push_str(replacement);
                s.extend(&text[b..]);
                s
            }
            None => value.to_string(),
        });
    }
    // Go's Regexp.ReplaceAllString loop.
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= n {
        let Some((a, b)) = re.find(&text, search, false) else {
            break;
        };
        out.extend(&text[last_end..a]);
        if b > last_end || a == 0 {
            let m: String = text[a..b].iter().collect();
            expand_template(replacement, &m, &mut out);
        }
        last_end = b;
        let width = usize::from(search < n);
        if search + width > b {
            search += width;
        } else if search + 1 > b {
            search += 1;
        } else {
            search = b;
        }
    }
    out.extend(&text[last_end..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_suffix() {
        assert_eq!(trim_prefix("f*b", "foobarbaz", false).unwrap(), "arbaz");
        assert_eq!(trim_prefix("f*b", "foobarbaz", true).unwrap(), "az");
        assert_eq!(trim_suffix("b*", "foobarbaz", false).unwrap(), "foobar");
        assert_eq!(trim_suffix("b*", "foobarbaz", true).unwrap(), "foo");
        assert_eq!(trim_prefix("*x*y", "xxyy", false).unwrap(), "y");
        assert_eq!(trim_prefix("*", "xxyy", false).unwrap(), "xxyy");
        assert_eq!(trim_prefix("?\\?", "???y", false).unwrap(), "?y");
        assert_eq!(trim_suffix("\\**\\*", "a***yy*", true).unwrap(), "a");
        assert_eq!(trim_suffix("\\**", "xx**", true).unwrap(), "xx");
        // `?` and `*` do not cross newlines (Go's `.`).
        assert_eq!(trim_prefix("a*", "ab\ncd", true).unwrap(), "\ncd");
        assert!(trim_prefix("\\x", "x", false).is_err());
    }

    #[test]
    fn replacements() {
        assert_eq!(
            replace("ba", "foobarbaz", "fo", false).unwrap(),
            "fooforbaz"
        );
        assert_eq!(replace("ba", "foobarbaz", "fo", true).unwrap(), "fooforfoz");
        assert_eq!(replace("", "xxyy", "ww", false).unwrap(), "wwxxyy");
        assert_eq!(replace("", "xxyy", "", true).unwrap(), "xxyy");
        assert_eq!(replace("", "ab", "-", true).unwrap(), "-a-b-");
        assert_eq!(
            replace("/?/", "/a/foo/b/c.txt", "/", true).unwrap(),
            "/foo/c.txt"
        );
        assert_eq!(
            replace("\\*/", "/foo*/*/*.txt", ".", true).unwrap(),
            "/foo..*.txt"
        );
        // Go template expansion in ReplaceAll: $0 is the match, $$ a dollar.
        assert_eq!(replace("b", "abc", "[$0$$]", true).unwrap(), "a[b$]c");
        assert_eq!(replace("b", "abc", "[$0$$]", false).unwrap(), "a[$0$$]c");
    }
}
