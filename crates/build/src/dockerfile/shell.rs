//! Docker's variable substitution and word splitting (BuildKit's
//! `frontend/dockerfile/shell/lex.go`), used by the builder when it expands
//! instruction arguments.
//!
//! Supported forms: `$V`, `${V}`, `${V:-word}`, `${V-word}`, `${V:+word}`,
//! `${V+word}`, `${V:?msg}`, `${V?msg}`, `${V#pat}`, `${V##pat}`, `${V%pat}`,
//! `${V%%pat}`, `${V/pat/repl}` and `${V//pat/repl}` (`pat` is a glob: `?`
//! one character, `*` any run, `\*`/`\?` literal). `${V:=word}` and other
//! modifiers are errors, as in BuildKit. The escape character (the `escape`
//! parser directive, `\` by default) escapes the next character; single
//! quotes suppress expansion; double quotes allow `$` expansion and escaping
//! of `"`, `$` and the escape character only. Quotes are removed from the
//! result. Unset variables expand to the empty string. `$1`, `$@`, `$*`, `$#`,
//! `$?`, `$-`, `$$`, `$!`, `$0` are parsed as (always unset) special
//! parameters.
//!
//! Which instructions are expanded, and which of their arguments, is given by
//! [`expansion_targets`].
//!
//! One BuildKit quirk is reproduced on purpose: when words are split
//! ([`Lexer::process_words`], used for `EXPOSE` and heredoc detection), text
//! of the current word that precedes a `${V<modifier>...}` is dropped
//! (`a${X:-b}c` splits to `["bc"]`), because BuildKit shares one word buffer
//! between nested scans.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::pattern;
use super::util::{is_digit, is_letter, is_space};

/// Deepest `${...}` nesting accepted; deeper input is rejected instead of
/// overflowing the stack (BuildKit has no limit, no real Dockerfile comes
/// close).
const MAX_NESTING: usize = 200;

/// A source of variable values for expansion.
pub trait Env {
    /// The value of `name`, or `None` when it is unset.
    fn get(&self, name: &str) -> Option<String>;
}

impl<E: Env + ?Sized> Env for &E {
    fn get(&self, name: &str) -> Option<String> {
        (**self).get(name)
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

/// A list of `(name, value)` pairs; the last definition of a name wins.
impl<K: AsRef<str>, V: AsRef<str>> Env for [(K, V)] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v.as_ref().to_string())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Env for Vec<(K, V)> {
    fn get(&self, name: &str) -> Option<String> {
        Env::get(self.as_slice(), name)
    }
}

/// An environment in which every variable is unset.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyEnv;

impl Env for EmptyEnv {
    fn get(&self, _name: &str) -> Option<String> {
        None
    }
}

/// An expansion failure. Displays like BuildKit:
/// `failed to process "${X:?}": X: is not allowed to be unset`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {}: {reason}", super::util::go_quote(.word))]
pub struct ExpandError {
    /// The word that was being expanded.
    pub word: String,
    /// What went wrong, e.g. `syntax error: missing '}'`.
    pub reason: String,
}

/// The result of [`Lexer::process_word_with_matches`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    /// The expanded word.
    pub value: String,
    /// Variables that were referenced and set.
    pub matched: BTreeSet<String>,
    /// Variables that were referenced but unset.
    pub unmatched: BTreeSet<String>,
}

/// A configurable expander, mirroring BuildKit's `shell.Lex` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    /// The escape character (`\` or `` ` ``).
    pub escape: char,
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters (used for heredoc bodies).
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written instead of removing
    /// them.
    pub skip_unset_env: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

impl Lexer {
    /// A lexer with the given escape character and default options.
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Expand `word` into a single string (BuildKit `ProcessWord`).
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String, ExpandError> {
        self.run(word, env, true).map(|(v, _, _)| v.value)
    }

    /// Expand `word` and report which variables were used.
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &dyn Env,
    ) -> Result<Expansion, ExpandError> {
        self.run(word, env, true).map(|(v, _, _)| v)
    }

    /// Expand `word` and split the result into words on unquoted whitespace
    /// (BuildKit `ProcessWords`). Whitespace produced by expanding a variable
    /// also splits; quoted whitespace does not.
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        self.run(word, env, false).map(|(_, w, _)| w)
    }

    fn run(
        &self,
        word: &str,
        env: &dyn Env,
        capture: bool,
    ) -> Result<(Expansion, Vec<String>, ()), ExpandError> {
        let mut chars: Vec<char> = word.chars().collect();
        if chars.first() == Some(&'\u{feff}') {
            // Go's text/scanner skips a leading byte-order mark.
            chars.remove(0);
        }
        let mut st = Scan {
            lex: *self,
            env,
            chars,
            pos: 0,
            raw_escapes: self.raw_escapes,
            words_buf: String::new(),
            capture,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
            depth: 0,
        };
        match st.process_stop_on(None, self.raw_escapes) {
            Ok((value, words)) => Ok((
                Expansion {
                    value,
                    matched: st.matched,
                    unmatched: st.unmatched,
                },
                words,
                (),
            )),
            Err(reason) => Err(ExpandError {
                word: word.to_string(),
                reason,
            }),
        }
    }
}

/// Expand variables in `word` the way BuildKit expands instruction arguments
/// (quotes removed, escapes processed with `escape`).
///
/// ```
/// use kiln_build::dockerfile::expand_word;
/// let env = vec![("NAME", "kiln")];
/// assert_eq!(expand_word("${NAME:-x}-\"$NAME\"-'$NAME'", &env, '\\').unwrap(), "kiln-kiln-$NAME");
/// ```
pub fn expand_word(word: &str, env: &dyn Env, escape: char) -> Result<String, ExpandError> {
    Lexer::new(escape).process_word(word, env)
}

/// Expand variables in `word` and split it into words (as `EXPOSE` does).
pub fn expand_words(word: &str, env: &dyn Env, escape: char) -> Result<Vec<String>, ExpandError> {
    Lexer::new(escape).process_words(word, env)
}

/// Expand the body of a heredoc whose delimiter was not quoted (`COPY <<EOF`,
/// `ADD <<EOF`): `$` references are expanded, quotes are kept, the escape
/// character is always `\`.
pub fn expand_heredoc(content: &str, env: &dyn Env) -> Result<String, ExpandError> {
    let mut lex = Lexer::new('\\');
    lex.skip_process_quotes = true;
    lex.process_word(content, env)
}

/// What BuildKit expands in an instruction, for the builder.
///
/// Returns the expanded parts of the (case-insensitive) instruction, empty
/// for instructions whose arguments are never expanded by the builder
/// (`CMD`, `ENTRYPOINT`, `SHELL`, `HEALTHCHECK`, `MAINTAINER`, `ONBUILD` —
/// an `ONBUILD` trigger is expanded when it runs in the child build; the
/// shell does its own expansion of `RUN`/`CMD`/`ENTRYPOINT` commands).
/// Unknown names give an empty slice.
///
/// | instruction | expanded |
/// |---|---|
/// | `ADD` | sources, destination, `--chown`, `--chmod`, `--checksum`, bodies of unquoted heredocs |
/// | `COPY` | sources, destination, `--chown`, `--chmod`, bodies of unquoted heredocs (`--from` is not: BuildKit rejects variables there) |
/// | `ARG` | name and default value |
/// | `ENV`, `LABEL` | keys and values |
/// | `EXPOSE` | each port, split into words after expansion |
/// | `FROM` | image and `--platform`, with global `ARG`s only |
/// | `RUN` | `--mount` option values |
/// | `STOPSIGNAL`, `USER`, `WORKDIR` | the argument |
/// | `VOLUME` | each path |
pub fn expansion_targets(instruction: &str) -> &'static [&'static str] {
    match instruction.to_ascii_uppercase().as_str() {
        "ADD" => &[
            "sources",
            "destination",
            "--chown",
            "--chmod",
            "--checksum",
            "heredoc bodies",
        ],
        "COPY" => &[
            "sources",
            "destination",
            "--chown",
            "--chmod",
            "heredoc bodies",
        ],
        "ARG" => &["name", "default value"],
        "ENV" | "LABEL" => &["keys", "values"],
        "EXPOSE" => &["ports (split into words)"],
        "FROM" => &["image (global ARGs only)", "--platform (global ARGs only)"],
        "RUN" => &["--mount option values"],
        "STOPSIGNAL" => &["signal"],
        "USER" => &["user"],
        "WORKDIR" => &["path"],
        "VOLUME" => &["paths"],
        _ => &[],
    }
}

/// Whether the builder expands variables in any argument of `instruction`.
pub fn expands_variables(instruction: &str) -> bool {
    !expansion_targets(instruction).is_empty()
}

struct Scan<'a> {
    lex: Lexer,
    env: &'a dyn Env,
    chars: Vec<char>,
    pos: usize,
    raw_escapes: bool,
    /// Shared by nested scans, exactly like BuildKit's `wordsBuffer`.
    words_buf: String,
    capture: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
    depth: usize,
}

struct Words {
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, buf: &mut String, ch: char) {
        if is_space(ch) && self.in_word {
            if !buf.is_empty() {
                self.words.push(std::mem::take(buf));
                self.in_word = false;
            }
        } else if !is_space(ch) {
            self.add_raw_char(buf, ch);
        }
    }

    fn add_raw_char(&mut self, buf: &mut String, ch: char) {
        buf.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, buf: &mut String, s: &str) {
        for ch in s.chars() {
            self.add_char(buf, ch);
        }
    }

    fn add_raw_string(&mut self, buf: &mut String, s: &str) {
        buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self, buf: &mut String) -> Vec<String> {
        if !buf.is_empty() {
            self.words.push(std::mem::take(buf));
            self.in_word = false;
        }
        self.words
    }
}

impl Scan<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        let v = self.env.get(name);
        if self.capture {
            if v.is_some() {
                self.matched.insert(name.to_string());
            } else {
                self.unmatched.insert(name.to_string());
            }
        }
        v
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), String> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        self.words_buf.clear();
        let mut words = Words {
            words: Vec::new(),
            in_word: false,
        };
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                let mut buf = std::mem::take(&mut self.words_buf);
                let w = words.finish(&mut buf);
                self.words_buf = buf;
                return Ok((result, w));
            }
            let special = match ch {
                '$' => Some(self.process_dollar()?),
                '<' => Some(self.process_possible_heredoc()),
                '\'' if !self.lex.skip_process_quotes => Some(self.process_single_quote()?),
                '"' if !self.lex.skip_process_quotes => Some(self.process_double_quote()?),
                _ => None,
            };
            if let Some(tmp) = special {
                result.push_str(&tmp);
                let mut buf = std::mem::take(&mut self.words_buf);
                if ch == '$' {
                    words.add_string(&mut buf, &tmp);
                } else {
                    words.add_raw_string(&mut buf, &tmp);
                }
                self.words_buf = buf;
                continue;
            }
            let Some(mut ch) = self.next() else { break };
            let mut buf = std::mem::take(&mut self.words_buf);
            if ch == self.lex.escape {
                if self.raw_escapes {
                    words.add_raw_char(&mut buf, ch);
                    result.push(ch);
                }
                match self.next() {
                    None => {
                        self.words_buf = buf;
                        break;
                    }
                    Some(c) => {
                        ch = c;
                        words.add_raw_char(&mut buf, ch);
                    }
                }
            } else {
                words.add_char(&mut buf, ch);
            }
            self.words_buf = buf;
            result.push(ch);
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        let mut buf = std::mem::take(&mut self.words_buf);
        let w = words.finish(&mut buf);
        self.words_buf = buf;
        Ok((result, w))
    }

    fn process_single_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(_) => {
                    let Some(mut ch) = self.next() else { continue };
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lex.escape => {
                                self.next();
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, String> {
        if self.depth >= MAX_NESTING {
            return Err("syntax error: substitutions nested too deeply".into());
        }
        self.depth += 1;
        let r = self.process_dollar_inner();
        self.depth -= 1;
        r
    }

    fn process_dollar_inner(&mut self) -> Result<String, String> {
        self.next(); // '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next(); // '{'
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.process_name();
        let first = self.next();
        let mut chs = String::from(first.unwrap_or('\u{fffd}'));
        match first {
            Some('}') => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let mut ch = first;
                let null_is_unset = ch == Some(':');
                if null_is_unset {
                    ch = self.next();
                    chs.push(ch.unwrap_or('\u{fffd}'));
                }
                let raw = matches!(ch, Some('#' | '%'));
                if null_is_unset && raw {
                    return Err(format!("unsupported modifier ({chs}) in substitution"));
                }
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '}'".into());
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let unset_or_null = match &value {
                    None => true,
                    Some(v) => null_is_unset && v.is_empty(),
                };
                match ch {
                    Some('-') => Ok(if unset_or_null {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    Some('+') => Ok(if unset_or_null { String::new() } else { word }),
                    Some('?') => match value {
                        None => Err(format!(
                            "{name}: {}",
                            if word.is_empty() {
                                "is not allowed to be unset"
                            } else {
                                &word
                            }
                        )),
                        Some(v) if null_is_unset && v.is_empty() => Err(format!(
                            "{name}: {}",
                            if word.is_empty() {
                                "is not allowed to be empty"
                            } else {
                                &word
                            }
                        )),
                        Some(v) => Ok(v),
                    },
                    Some(c @ ('%' | '#')) => {
                        let (greedy, pat) = match word.strip_prefix(c) {
                            Some(rest) => (true, rest),
                            None => (false, word.as_str()),
                        };
                        let value = value.unwrap_or_default();
                        if c == '%' {
                            pattern::trim_suffix(pat, &value, greedy)
                        } else {
                            pattern::trim_prefix(pat, &value, greedy)
                        }
                    }
                    _ => Err(format!("unsupported modifier ({chs}) in substitution")),
                }
            }
            Some('/') => {
                let all = self.peek() == Some('/');
                if all {
                    self.next();
                }
                let pat = match self.process_stop_on(Some('/'), true) {
                    Ok((p, _)) => p,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '/' in ${}".into());
                        }
                        return Err(e);
                    }
                };
                let repl = match self.process_stop_on(Some('}'), true) {
                    Ok((r, _)) => r,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '}'".into());
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}/{pat}/{repl}}}"));
                }
                pattern::replace(&pat, &value.unwrap_or_default(), &repl, all)
            }
            _ => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(c) = self.peek() {
                    if !is_digit(c) {
                        break;
                    }
                    self.next();
                    name.push(c);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !is_letter(ch) && !is_digit(ch) && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    fn process_possible_heredoc(&mut self) -> String {
        self.next(); // '<'
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.next();
        let mut out = String::from("<<");
        while let Some(c @ ('\t' | '\r' | ' ')) = self.peek() {
            out.push(c);
            self.next();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("PWD", "/home"),
            ("SHELL", "bash"),
            ("KOREAN", "한국어"),
            ("NULL", ""),
        ]
    }

    fn word(w: &str) -> Result<String, ExpandError> {
        expand_word(w, &env(), '\\')
    }

    #[test]
    fn buildkit_env_var_table() {
        // (input, expected or None for error), from BuildKit's envVarTest.
        let cases: &[(&str, Option<&str>)] = &[
            ("hello", Some("hello")),
            ("he'll'o", Some("hello")),
            ("he'llo", None),
            ("he\\'llo", Some("he'llo")),
            ("he\\\\'llo", None),
            ("abc\\tdef", Some("abctdef")),
            ("\"abc\\tdef\"", Some("abc\\tdef")),
            ("\"abc\\\\tdef\"", Some("abc\\tdef")),
            ("'abc\\tdef'", Some("abc\\tdef")),
            ("hello\\", Some("hello")),
            ("hello\\\\", Some("hello\\")),
            ("\"hello", None),
            ("\"hello\\\"", None),
            ("\"hel'lo\"", Some("hel'lo")),
            ("'hello", None),
            ("'hello\\'", Some("hello\\")),
            ("\"''\"", Some("''")),
            ("$.", Some("$.")),
            ("he$1x", Some("hex")),
            ("he$.x", Some("he$.x")),
            ("he$pwd.", Some("he.")),
            ("he$PWD", Some("he/home")),
            ("he\\$PWD", Some("he$PWD")),
            ("he\\\\$PWD", Some("he\\/home")),
            ("\"he\\$PWD\"", Some("he$PWD")),
            ("\"he\\\\$PWD\"", Some("he\\/home")),
            ("\\${}", Some("${}")),
            ("${}", None),
            ("he${}xx", None),
            ("he${hi}xx", Some("hexx")),
            ("he${.}", None),
            ("he${XXX:-000}xx", Some("he000xx")),
            ("he${PWD:-000}xx", Some("he/homexx")),
            ("he${XXX:-$PWD}xx", Some("he/homexx")),
            ("he${XXX:-${PWD:-yyy}}xx", Some("he/homexx")),
            ("he${XXX:-${YYY:-yyy}}xx", Some("heyyyxx")),
            ("he${XXX:YYY}", None),
            ("he${XXX?}", None),
            ("he${XXX:?}", None),
            ("he${PWD?}", Some("he/home")),
            ("he${NULL?}", Some("he")),
            ("he${NULL:?}", None),
            ("he${XXX:+${PWD}}xx", Some("hexx")),
            ("he${PWD:+${SHELL}}xx", Some("hebashxx")),
            ("'he${XX}'", Some("he${XX}")),
            ("\"he'$PWD'\"", Some("he'/home'")),
            ("he${PWD", None),
            ("he${PWD:=000}xx", None),
            ("he${PWD:+${PWD}:}xx", Some("he/home:xx")),
            ("he${XXX:-\\$PWD:}xx", Some("he$PWD:xx")),
            ("he${XXX:-\\${PWD}z}xx", Some("he${PWDz}xx")),
            ("안녕$KOREAN", Some("안녕한국어")),
            ("${{aaa}", None),
            ("${aaa}}", Some("}")),
            ("${aaa:-bbb}}", Some("bbb}")),
            ("${aaa:-bbb ${foo}", None),
            ("${aaa:-bbb {foo}", Some("bbb {foo")),
            ("${:}", None),
            ("${:-bbb}", None),
            ("${1:-bbb}", Some("bbb")),
            ("$999aaa", Some("aaa")),
            ("${001:+bbb}aaa", Some("aaa")),
            ("$@@@", Some("@@")),
            ("${@:-bbb}aaa", Some("bbbaaa")),
            ("${$:-bbb}", Some("bbb")),
        ];
        for (input, expected) in cases {
            let got = word(input);
            match expected {
                Some(e) => assert_eq!(got.as_deref(), Ok(*e), "input {input:?}"),
                None => assert!(got.is_err(), "input {input:?} gave {got:?}"),
            }
        }
    }

    #[test]
    fn pattern_modifiers() {
        let env = vec![("FOO", "xxyy"), ("BAR", "x"), ("P", "/tmp/foo.txt")];
        let e = |w: &str| expand_word(w, &env, '\\');
        assert_eq!(e("${FOO#$BAR}").unwrap(), "xyy");
        assert_eq!(e("${FOO##*x}").unwrap(), "yy");
        assert_eq!(e("${FOO%y}").unwrap(), "xxy");
        assert_eq!(e("${FOO%%y*}").unwrap(), "xx");
        assert_eq!(e("${FOO/x/a}").unwrap(), "axyy");
        assert_eq!(e("${FOO//x/a}").unwrap(), "aayy");
        assert_eq!(e("${P//\\//\\/}").unwrap(), "\\/tmp\\/foo.txt");
        assert!(e("${FOO:#x}").is_err());
        assert!(e("${FOO//ww}").is_err());
        assert_eq!(e("${FOO///}").unwrap(), "xxyy");
        assert_eq!(e("${UNSET/a/b}").unwrap(), "");
    }

    #[test]
    fn error_messages() {
        let err = expand_word("${X:?}", &EmptyEnv, '\\').unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to process \"${X:?}\": X: is not allowed to be unset"
        );
        let err = expand_word("${X:?custom message}", &EmptyEnv, '\\').unwrap_err();
        assert_eq!(err.reason, "X: custom message");
        let err = expand_word("${X", &EmptyEnv, '\\').unwrap_err();
        assert_eq!(
            err.reason,
            "unsupported modifier (\u{fffd}) in substitution"
        );
        let err = expand_word("${X:-a", &EmptyEnv, '\\').unwrap_err();
        assert_eq!(err.reason, "syntax error: missing '}'");
    }

    #[test]
    fn backtick_escape() {
        assert_eq!(expand_word("a`$PWD`\\b", &env(), '`').unwrap(), "a$PWD\\b");
    }

    #[test]
    fn words() {
        let env = vec![
            ("space", "abc  def"),
            ("leading", "  ab c"),
            ("trailing", "ab c   "),
        ];
        let w = |s: &str| expand_words(s, &env, '\\');
        assert_eq!(w("hello${space}bye").unwrap(), ["helloabc", "defbye"]);
        assert_eq!(w("hello\"${space}\"bye").unwrap(), ["helloabc  defbye"]);
        assert_eq!(w("hello${leading}def").unwrap(), ["hello", "ab", "cdef"]);
        assert_eq!(w("hello${trailing}d").unwrap(), ["helloab", "c", "d"]);
        assert_eq!(w("hello\\ there").unwrap(), ["hello there"]);
        assert_eq!(w("hello\\\" there").unwrap(), ["hello\"", "there"]);
        assert!(w("hello\" there").is_err());
        // BuildKit quirk: the word prefix before a modifier substitution is lost.
        assert_eq!(w("ab${x:-c}d").unwrap(), ["cd"]);
    }

    #[test]
    fn matches_are_reported() {
        let env = vec![("A", "1")];
        let r = Lexer::new('\\')
            .process_word_with_matches("$A ${B:-x}", &env)
            .unwrap();
        assert_eq!(r.value, "1 x");
        assert!(r.matched.contains("A"));
        assert!(r.unmatched.contains("B"));
    }

    #[test]
    fn heredoc_bodies_keep_quotes() {
        let env = vec![("A", "1")];
        assert_eq!(
            expand_heredoc("'$A' \"$A\"\n", &env).unwrap(),
            "'1' \"1\"\n"
        );
    }

    #[test]
    fn expansion_list() {
        for i in [
            "ADD",
            "COPY",
            "ENV",
            "EXPOSE",
            "FROM",
            "LABEL",
            "STOPSIGNAL",
            "USER",
            "VOLUME",
            "WORKDIR",
            "ARG",
            "RUN",
        ] {
            assert!(expands_variables(i), "{i}");
            assert!(expands_variables(&i.to_lowercase()), "{i}");
        }
        for i in [
            "CMD",
            "ENTRYPOINT",
            "SHELL",
            "HEALTHCHECK",
            "MAINTAINER",
            "ONBUILD",
            "NOPE",
        ] {
            assert!(!expands_variables(i), "{i}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let w = "${a:-".repeat(10_000) + &"}".repeat(10_000);
        assert!(expand_word(&w, &EmptyEnv, '\\').is_err());
    }
}
