//! The line-level syntax tree (BuildKit's `frontend/dockerfile/parser`).
//!
//! [`parse_ast`] turns the text into one [`Node`] per instruction: parser
//! directives, line continuations, comments, blank lines and heredoc bodies
//! are dealt with here, and each instruction's arguments are split the way
//! BuildKit splits them for that instruction (JSON arrays, whitespace lists,
//! `key=value` pairs, ...). Nothing is validated beyond that; the typed layer
//! ([`crate::dockerfile::parse`]) checks argument counts, flags and values.
//! Most users want [`crate::dockerfile::parse`]; this layer is public for
//! tools (linters, formatters) that need BuildKit's raw view.
//!
//! Rules, as BuildKit applies them:
//! - A UTF-8 byte-order mark on the first line is ignored. Lines end at `\n`;
//!   trailing `\r`s are dropped.
//! - Leading whitespace of an instruction's first line is dropped; a line whose
//!   first non-blank character is `#` is a comment (no trailing comments).
//! - A line ending in the escape character (optionally followed by spaces or
//!   tabs) continues on the next line, unless that escape character is itself
//!   escaped (`\\` at the end is not a continuation). Within a continuation,
//!   comment lines and whitespace-only lines are skipped (the latter with a
//!   warning, as BuildKit does), and continuation lines keep their leading
//!   whitespace.
//! - The instruction keyword is the first whitespace-separated word,
//!   case-insensitive; `--name[=value]` words right after it are flags (quotes
//!   and the escape character are processed in them; a `--` word ends them).
//! - For `RUN`, `COPY` and `ADD` (also behind `ONBUILD`) in shell form, every
//!   word of the line of the form `[n]<<[-]DELIM` starts a heredoc; their
//!   bodies follow the instruction, in order, each ended by a line equal to
//!   `DELIM` (after removing leading tabs for `<<-`). A quoted delimiter
//!   (`<<"EOF"`, `<<'EOF'`, or any quoted part) means the body is not expanded.

use serde::{Deserialize, Serialize};

use super::directives::{DirectiveParser, Directives};
use super::error::ParseError;
use super::shell::{EmptyEnv, Lexer};
use super::util::{is_re_space, is_space};

/// Deepest `ONBUILD ONBUILD ...` chain parsed (anything deeper is rejected by
/// the typed layer anyway); prevents unbounded recursion.
const MAX_ONBUILD_DEPTH: usize = 64;

/// A here-document attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heredoc {
    /// The delimiter word with quotes removed (`EOF` for `<<"EOF"`); for
    /// `COPY`/`ADD` this is also the name of the file created.
    pub name: String,
    /// The body exactly as written (lines with their line endings, without the
    /// terminating delimiter line). See [`Heredoc::data`].
    pub content: String,
    /// `false` when the delimiter was quoted: the body must not be expanded.
    pub expand: bool,
    /// `true` for `<<-`: leading tabs are stripped from every body line.
    pub chomp: bool,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 if none.
    pub fd: u64,
}

impl Heredoc {
    /// The body with leading tabs removed from each line when `chomp` is set
    /// (what `COPY`/`ADD` write and what a lone `RUN <<EOF` runs).
    pub fn data(&self) -> String {
        if self.chomp {
            chomp_heredoc_content(&self.content)
        } else {
            self.content.clone()
        }
    }
}

/// Remove leading tabs from every line (BuildKit `ChompHeredocContent`).
pub fn chomp_heredoc_content(src: &str) -> String {
    src.split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

/// One instruction as split by the line parser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The instruction keyword as written (`run`, `RUN`, ...).
    pub command: String,
    /// `--flag[=value]` words after the keyword, quotes and escapes processed.
    pub flags: Vec<String>,
    /// Arguments, split according to the instruction:
    /// JSON array elements; whitespace-separated words (`FROM`, `EXPOSE`,
    /// non-JSON `COPY`/`ADD`/`VOLUME`); the whole rest as one string (shell
    /// form of `RUN`/`CMD`/`ENTRYPOINT`/`SHELL`, `USER`, `WORKDIR`,
    /// `STOPSIGNAL`, `MAINTAINER`); quote-aware words (`ARG`);
    /// `key, value, separator` triples (`ENV`, `LABEL`; the separator is `=`
    /// or empty for the legacy `ENV key value` form); `type` followed by the
    /// command (`HEALTHCHECK`). Empty for `ONBUILD` (see `child`) and for
    /// unknown instructions.
    pub args: Vec<String>,
    /// The wrapped instruction of an `ONBUILD`.
    pub child: Option<Box<Node>>,
    /// The arguments were a JSON array (exec form).
    pub json: bool,
    /// Heredocs attached to this instruction, in order.
    pub heredocs: Vec<Heredoc>,
    /// The logical line: continuation lines joined (escape characters and
    /// skipped comment lines removed), heredoc bodies not included.
    pub original: String,
    /// First physical line (1-based).
    pub start_line: usize,
    /// Last physical line, including heredoc bodies.
    pub end_line: usize,
}

impl Node {
    fn new(command: String, original: String) -> Node {
        Node {
            command,
            flags: Vec::new(),
            args: Vec::new(),
            child: None,
            json: false,
            heredocs: Vec::new(),
            original,
            start_line: 0,
            end_line: 0,
        }
    }

    fn can_contain_heredoc(&self) -> bool {
        let mut node = self;
        if node.command.to_lowercase() == "onbuild" {
            if let Some(c) = &node.child {
                node = c;
            }
        }
        matches!(node.command.to_lowercase().as_str(), "add" | "copy" | "run") && !node.json
    }
}

/// A non-fatal finding (BuildKit reports these as warnings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// 1-based line.
    pub line: usize,
    /// Description.
    pub message: String,
}

/// The result of [`parse_ast`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ast {
    /// Parser directives.
    pub directives: Directives,
    /// Instructions in file order.
    pub nodes: Vec<Node>,
    /// Warnings (empty continuation lines).
    pub warnings: Vec<Warning>,
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start_matches(is_space).starts_with('#')
}

/// Remove a trailing line-continuation escape. Returns the line and whether
/// the logical line ends here.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    if let Some(before) = t.strip_suffix(escape) {
        if before.is_empty() {
            return ("", false);
        }
        if !before.ends_with(escape) {
            return (before, false);
        }
    }
    (line, true)
}

/// Parse `text` into line-level nodes.
pub fn parse_ast(text: &str) -> Result<Ast, ParseError> {
    let mut directives = Directives::default();
    let mut dp = DirectiveParser::default();
    let mut warnings = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut lines = text.split_inclusive('\n');
    let mut current_line = 0usize;

    let mut process_line = |raw: &str,
                            strip_left: bool,
                            directives: &mut Directives,
                            line_no: usize|
     -> Result<String, ParseError> {
        let mut t = trim_newline(raw);
        if strip_left {
            t = t.trim_start_matches(is_space);
        }
        dp.parse_line(t, directives)
            .map_err(|m| ParseError::new(line_no, m))?;
        Ok(if is_comment(t) {
            String::new()
        } else {
            t.to_string()
        })
    };

    while let Some(mut raw) = lines.next() {
        if current_line == 0 {
            raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
        }
        let processed = process_line(raw, true, &mut directives, current_line + 1)?;
        current_line += 1;
        let start_line = current_line;
        let escape = directives.escape;
        let (first, mut is_end) = trim_continuation(&processed, escape);
        if is_end && first.is_empty() {
            continue;
        }
        let mut buf = first.to_string();
        let mut has_empty_continuation = false;
        while !is_end {
            let Some(raw) = lines.next() else { break };
            let processed = process_line(raw, false, &mut directives, current_line + 1)?;
            current_line += 1;
            if is_comment(raw) {
                continue;
            }
            if trim_newline(&processed)
                .trim_start_matches(is_space)
                .is_empty()
            {
                has_empty_continuation = true;
                continue;
            }
            let (part, end) = trim_continuation(&processed, escape);
            is_end = end;
            buf.push_str(part);
        }
        if has_empty_continuation {
            warnings.push(Warning {
                line: current_line,
                message: format!("Empty continuation line found in: {buf}"),
            });
        }

        let mut node =
            new_node_from_line(&buf, escape, 0).map_err(|m| ParseError::new(start_line, m))?;

        if node.can_contain_heredoc() && buf.contains("<<") {
            let docs = heredocs_from_line(&buf).map_err(|m| ParseError::new(start_line, m))?;
            for mut doc in docs {
                let mut terminated = false;
                let mut content = String::new();
                for raw in lines.by_ref() {
                    current_line += 1;
                    let mut candidate = trim_newline(raw);
                    if doc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    content.push_str(raw);
                }
                if !terminated {
                    return Err(ParseError::new(
                        start_line,
                        format!("unterminated heredoc {}", doc.name),
                    ));
                }
                doc.content = content;
                node.heredocs.push(doc);
            }
        }
        node.start_line = start_line;
        node.end_line = current_line;
        if let Some(c) = node.child.as_deref_mut() {
            set_lines(c, start_line, current_line);
        }
        nodes.push(node);
    }

    if nodes.is_empty() {
        return Err(ParseError::new(
            current_line.max(1),
            "file with no instructions",
        ));
    }
    Ok(Ast {
        directives,
        nodes,
        warnings,
    })
}

fn set_lines(node: &mut Node, start: usize, end: usize) {
    node.start_line = start;
    node.end_line = end;
    if let Some(c) = node.child.as_deref_mut() {
        set_lines(c, start, end);
    }
}

/// BuildKit's `reWhitespace`: `[\t\v\f\r ]`.
fn is_ws_sep(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// Split on runs of `[\t\v\f\r ]` (BuildKit `reWhitespace.Split(s, -1)`).
fn split_ws(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_sep = false;
    for c in s.chars() {
        if is_ws_sep(c) {
            if !in_sep {
                out.push(std::mem::take(&mut cur));
                in_sep = true;
            }
        } else {
            in_sep = false;
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

/// Split at the first run of `[\t\v\f\r ]` (BuildKit `reWhitespace.Split(s, 2)`).
fn split_ws_2(s: &str) -> (&str, Option<&str>) {
    match s.find(is_ws_sep) {
        None => (s, None),
        Some(i) => (s[..i].as_ref(), Some(s[i..].trim_start_matches(is_ws_sep))),
    }
}

fn new_node_from_line(line: &str, escape: char, depth: usize) -> Result<Node, String> {
    let trimmed = line.trim_matches(is_space);
    let (cmd, rest) = split_ws_2(trimmed);
    let (args_str, flags) = match rest {
        Some(r) => extract_builder_flags(r, escape),
        None => (String::new(), Vec::new()),
    };
    let rest = args_str.trim_matches(is_space);
    let mut node = Node::new(cmd.to_string(), line.to_string());
    node.flags = flags;
    match cmd.to_lowercase().as_str() {
        "add" | "copy" | "volume" => {
            let (args, json) = parse_maybe_json_to_list(rest)?;
            node.args = args;
            node.json = json;
        }
        "arg" => node.args = parse_words(rest, escape),
        "cmd" | "entrypoint" | "run" | "shell" => {
            let (args, json) = parse_maybe_json(rest)?;
            node.args = args;
            node.json = json;
        }
        "env" => node.args = parse_name_val(rest, "ENV", escape)?,
        "label" => node.args = parse_name_val(rest, "LABEL", escape)?,
        "expose" | "from" => node.args = split_ws_nonempty(rest),
        "healthcheck" => {
            let (args, json) = parse_health_config(rest)?;
            node.args = args;
            node.json = json;
        }
        "maintainer" | "stopsignal" | "user" | "workdir" if !rest.is_empty() => {
            node.args = vec![rest.to_string()];
        }
        "onbuild" if !rest.is_empty() && depth < MAX_ONBUILD_DEPTH => {
            node.child = Some(Box::new(new_node_from_line(rest, escape, depth + 1)?));
        }
        _ => {}
    }
    Ok(node)
}

fn split_ws_nonempty(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        Vec::new()
    } else {
        split_ws(rest)
    }
}

/// BuildKit `extractBuilderFlags`: leading `--flag` words. Returns the rest of
/// the line and the flags.
fn extract_builder_flags(line: &str, escape: char) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let n = chars.len();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut sb = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut i = 0;
    while i <= n {
        let at_end = i == n;
        let mut ch = if at_end { '\0' } else { chars[i].1 };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_space(ch) {
                i += 1;
                continue;
            }
            if ch != '-' || i + 1 == n || chars[i + 1].1 != '-' {
                return (line[chars[i].0..].to_string(), words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if sb != "--" && (blank_ok || !sb.is_empty()) {
                words.push(sb);
            }
            break;
        }
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if sb == "--" {
                    return (line[chars[i].0..].to_string(), words);
                }
                if blank_ok || !sb.is_empty() {
                    words.push(std::mem::take(&mut sb));
                }
                sb.clear();
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                i += 1;
                continue;
            }
            if ch == escape {
                if i + 1 == n {
                    i += 1;
                    continue;
                }
                i += 1;
                ch = chars[i].1;
            }
            sb.push(ch);
            i += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            i += 1;
            continue;
        }
        if ch == escape {
            if i + 1 == n {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            i += 1;
            ch = chars[i].1;
        }
        sb.push(ch);
        i += 1;
    }
    (String::new(), words)
}

/// BuildKit `parseWords`: split on whitespace, keeping quotes and escapes in
/// the words (they are removed later, by expansion).
fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let n = chars.len();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut sb = String::new();
    let mut i = 0;
    while i <= n {
        let at_end = i == n;
        let mut ch = if at_end { '\0' } else { chars[i] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_space(ch) {
                i += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !sb.is_empty() {
                words.push(std::mem::take(&mut sb));
            }
            break;
        }
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if blank_ok || !sb.is_empty() {
                    words.push(std::mem::take(&mut sb));
                }
                sb.clear();
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if i + 1 == n {
                    i += 1;
                    continue;
                }
                sb.push(ch);
                i += 1;
                ch = chars[i];
            }
            sb.push(ch);
            i += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if i + 1 == n {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            sb.push(ch);
            i += 1;
            ch = chars[i];
        }
        sb.push(ch);
        i += 1;
    }
    words
}

/// `ENV`/`LABEL` arguments as `key, value, separator` triples.
fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<String>, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        // Legacy `KEY name value` form.
        let (name, value) = split_ws_2(rest);
        return match value {
            Some(v) => Ok(vec![name.to_string(), v.to_string(), String::new()]),
            None => Err(format!("{key} must have two arguments")),
        };
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in &words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                super::util::go_quote(word)
            ));
        };
        out.push(k.to_string());
        out.push(v.to_string());
        out.push("=".to_string());
    }
    Ok(out)
}

enum JsonError {
    NotArray,
    NotStringArray,
}

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

fn parse_json(rest: &str) -> Result<Vec<String>, JsonError> {
    let rest = rest.trim_start_matches(is_space);
    if !rest.starts_with('[') {
        return Err(JsonError::NotArray);
    }
    let value: serde_json::Value = match serde_json::from_str(rest) {
        Ok(v) => v,
        Err(e) => {
            // serde_json stops at 128 levels of nesting where Go's decoder
            // goes on; such an array certainly holds a non-string.
            if e.to_string().contains("recursion limit exceeded") {
                return Err(JsonError::NotStringArray);
            }
            return Err(JsonError::NotArray);
        }
    };
    let serde_json::Value::Array(items) = value else {
        return Err(JsonError::NotArray);
    };
    items
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(JsonError::NotStringArray),
        })
        .collect()
}

fn parse_maybe_json(rest: &str) -> Result<(Vec<String>, bool), String> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json(rest) {
        Ok(v) => Ok((v, true)),
        Err(JsonError::NotStringArray) => Err(NOT_STRING_ARRAY.into()),
        Err(JsonError::NotArray) => Ok((vec![rest.to_string()], false)),
    }
}

fn parse_maybe_json_to_list(rest: &str) -> Result<(Vec<String>, bool), String> {
    match parse_json(rest) {
        Ok(v) => Ok((v, true)),
        Err(JsonError::NotStringArray) => Err(NOT_STRING_ARRAY.into()),
        Err(JsonError::NotArray) => Ok((split_ws_nonempty(rest), false)),
    }
}

fn parse_health_config(rest: &str) -> Result<(Vec<String>, bool), String> {
    let sep = rest.find(is_space).unwrap_or(rest.len());
    if sep == 0 {
        return Ok((Vec::new(), false));
    }
    let next = rest[sep..].trim_start_matches(is_space);
    let (cmd, json) = parse_maybe_json(next)?;
    let mut args = vec![rest[..sep].to_string()];
    args.extend(cmd);
    Ok((args, json))
}

/// The parts of a heredoc marker word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeredocMarker {
    pub name: String,
    pub expand: bool,
    pub chomp: bool,
    pub fd: u64,
}

/// Recognise a heredoc marker word `^(\d*)<<(-?)\s*([^<]*)$` and resolve its
/// delimiter (BuildKit `ParseHeredoc`). `Ok(None)`: not a heredoc.
pub(crate) fn parse_heredoc_word(word: &str) -> Result<Option<HeredocMarker>, String> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, after) = match after.strip_prefix('-') {
        Some(a) => (true, a),
        None => (false, after),
    };
    let rest = after.trim_start_matches(is_re_space);
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    let fd = if digits == 0 {
        0
    } else {
        word[..digits].parse::<u64>().unwrap_or(u64::MAX)
    };
    let mut lex = Lexer::new('\\');
    lex.skip_unset_env = true;
    let words = lex
        .process_words(rest, &EmptyEnv)
        .map_err(|e| e.to_string())?;
    if words.len() != 1 {
        return Ok(None);
    }
    lex.raw_quotes = true;
    let raw = lex
        .process_words(rest, &EmptyEnv)
        .map_err(|e| e.to_string())?;
    if raw.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let expand = quotes(&words[0]) == quotes(&raw[0]);
    Ok(Some(HeredocMarker {
        name: words.into_iter().next().unwrap_or_default(),
        expand,
        chomp,
        fd,
    }))
}

/// All heredoc markers of a logical line, in order (BuildKit
/// `heredocsFromLine`). A line that does not lex has none.
fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let mut lex = Lexer::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    lex.skip_unset_env = true;
    let words = lex.process_words(line, &EmptyEnv).unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(m) = parse_heredoc_word(&word)? {
            docs.push(Heredoc {
                name: m.name,
                content: String::new(),
                expand: m.expand,
                chomp: m.chomp,
                fd: m.fd,
            });
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(line: &str) -> Vec<String> {
        heredocs_from_line(line)
            .unwrap()
            .into_iter()
            .map(|h| h.name)
            .collect()
    }

    #[test]
    fn heredoc_words() {
        for w in [
            "<<EOF",
            "<<'EOF'",
            "<<\"EOF\"",
            "<<-EOF",
            "<<-'EOF'",
            "<<EO\"F\"",
            "<< EOF",
            "<<- EOF",
        ] {
            assert_eq!(
                parse_heredoc_word(w).unwrap().map(|m| m.name),
                Some("EOF".into()),
                "{w}"
            );
        }
        for w in ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh"] {
            assert_eq!(parse_heredoc_word(w).unwrap(), None, "{w}");
        }
        for w in ["<<'EOF", "<<\"EOF", "<<EOF'", "<<EOF\""] {
            assert!(parse_heredoc_word(w).is_err(), "{w}");
        }
        let m = parse_heredoc_word("3<<-'E'O").unwrap().unwrap();
        assert_eq!(
            (m.name.as_str(), m.expand, m.chomp, m.fd),
            ("EO", false, true, 3)
        );
    }

    #[test]
    fn heredocs_in_lines() {
        assert_eq!(names("RUN <<EOF"), ["EOF"]);
        assert_eq!(names("RUN <<-EOF"), ["EOF"]);
        assert_eq!(names("RUN << -EOF"), ["-EOF"]);
        assert_eq!(names("RUN 4<<EOF"), ["EOF"]);
        assert_eq!(names("RUN <<EOF <<EOF2"), ["EOF", "EOF2"]);
        assert!(names("RUN '<<EOF'").is_empty());
        assert!(names("RUN \"<<EOF\"").is_empty());
        // The lexer splits `<<-` from a following word, so this is no heredoc.
        assert!(names("RUN <<- EOF").is_empty());
        assert_eq!(names("RUN <<  EOF  > foo"), ["EOF"]);
    }

    #[test]
    fn flags_are_extracted() {
        let (rest, flags) = extract_builder_flags("--from=build --chown=\"a b\" src dst", '\\');
        assert_eq!(rest, "src dst");
        assert_eq!(flags, ["--from=build", "--chown=a b"]);
        let (rest, flags) = extract_builder_flags("--link -- --notaflag x", '\\');
        assert_eq!(rest, " --notaflag x");
        assert_eq!(flags, ["--link"]);
    }

    #[test]
    fn words_keep_quotes() {
        assert_eq!(
            parse_words("a=\"b c\" d='e f' g\\ h", '\\'),
            ["a=\"b c\"", "d='e f'", "g\\ h"]
        );
    }

    #[test]
    fn continuation() {
        assert_eq!(trim_continuation("a \\", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a \\  \t", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a \\\\", '\\'), ("a \\\\", true));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("a `", '`'), ("a ", false));
        assert_eq!(trim_continuation("a \\", '`'), ("a \\", true));
    }
}
