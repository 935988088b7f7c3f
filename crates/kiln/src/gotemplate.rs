//! The part of Go's `text/template` that `docker inspect --format` users rely
//! on, evaluated against a `serde_json::Value`.
//!
//! Docker executes these templates against its Go API structs. kiln only has
//! the JSON form of equivalent data, so the printing rules reproduce what Go
//! prints for the structs docker decodes:
//!
//! * integral numbers print as integers, because docker's numeric fields are
//!   `int64`s (Go would print a `float64` million as `1e+06`); other numbers
//!   print as Go's `%v` prints a `float64`;
//! * `null` stands for a nil slice, map or pointer: it is false, ranges zero
//!   times, has length 0, and looking a field or key up in it yields nothing
//!   instead of failing. It prints as `<nil>`, so producers should emit `[]`
//!   for an empty list if they want docker's `[]`;
//! * `json` matches docker's function, not plain `json.Marshal`: compact, and
//!   `<`, `>`, `&` are left alone because docker's encoder calls
//!   `SetEscapeHTML(false)`.
//!
//! Not supported: `define`, `template`, `block`, functions other than those in
//! [`Func`], and printf verbs other than `%s %d %v %q`.

use std::cmp::Ordering;
use std::fmt;

use serde_json::{Map, Number, Value};

/// Deepest nesting of blocks and parentheses accepted; keeps the recursive
/// parser and evaluator from overflowing the stack on hostile input.
const MAX_DEPTH: usize = 100;

const OPEN: &str = "{{";
const CLOSE: &str = "}}";
const COMMENT_OPEN: &str = "/*";
const COMMENT_CLOSE: &str = "*/";
/// A trim marker is a hyphen plus the whitespace that must separate it from
/// the action: `{{- ` or ` -}}`.
const TRIM_MARKER_LEN: usize = 2;

// ---------------------------------------------------------------------------
// Public API

/// A parsed template, ready to be rendered any number of times.
#[derive(Debug, Clone)]
pub struct Template {
    src: String,
    nodes: Vec<Node>,
}

impl Template {
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let tokens = Lexer::new(src).run()?;
        let nodes = Parser::new(src, tokens).parse_template()?;
        Ok(Template {
            src: src.to_owned(),
            nodes,
        })
    }

    pub fn render(&self, data: &Value) -> Result<String, TemplateError> {
        let mut exec = Exec {
            src: &self.src,
            vars: vec![("$".to_owned(), Val::Json(data.clone()))],
            out: String::new(),
        };
        exec.walk(&self.nodes, data)?;
        Ok(exec.out)
    }
}

/// A parse or execution error, located in the template source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    message: String,
    line: usize,
    column: usize,
    /// Source text of the action being executed, for run-time errors.
    action: Option<String>,
}

impl TemplateError {
    fn new(src: &str, offset: usize, message: impl Into<String>) -> Self {
        let before = src.get(..offset).unwrap_or(src);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        TemplateError {
            message: message.into(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            action: None,
        }
    }

    fn executing(src: &str, span: Span, message: String) -> Self {
        let mut error = TemplateError::new(src, span.start, message);
        error.action = src.get(span.start..span.end).map(str::to_owned);
        error
    }
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "template: {}:{}: ", self.line, self.column)?;
        if let Some(action) = &self.action {
            write!(f, "executing {action}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for TemplateError {}

// ---------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    If,
    Else,
    End,
    Range,
    With,
    Break,
    Continue,
    Define,
    Template,
    Block,
}

impl Keyword {
    const ALL: [Keyword; 10] = [
        Keyword::If,
        Keyword::Else,
        Keyword::End,
        Keyword::Range,
        Keyword::With,
        Keyword::Break,
        Keyword::Continue,
        Keyword::Define,
        Keyword::Template,
        Keyword::Block,
    ];

    fn from_word(word: &str) -> Option<Keyword> {
        Keyword::ALL.into_iter().find(|k| k.name() == word)
    }

    fn name(self) -> &'static str {
        match self {
            Keyword::If => "if",
            Keyword::Else => "else",
            Keyword::End => "end",
            Keyword::Range => "range",
            Keyword::With => "with",
            Keyword::Break => "break",
            Keyword::Continue => "continue",
            Keyword::Define => "define",
            Keyword::Template => "template",
            Keyword::Block => "block",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Text(String),
    Open,
    Close,
    Pipe,
    LParen,
    RParen,
    Comma,
    Declare,
    Assign,
    Dot,
    Field(String),
    /// Includes the `$`; the root is the variable named `$`.
    Variable(String),
    Ident(String),
    Keyword(Keyword),
    Literal(Value),
    Nil,
    Eof,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: usize,
    end: usize,
    /// Whitespace precedes the token inside its action: `.A.B` is one
    /// operand but `.A .B` is two, and `"a""b"` is malformed.
    spaced: bool,
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_word_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Go only treats `{{-` as a trim marker when whitespace follows, so that
/// `{{-3}}` still prints -3.
fn has_left_trim(after_open: &str) -> bool {
    after_open
        .strip_prefix('-')
        .is_some_and(|rest| rest.starts_with(is_space))
}

/// `{{`, `}}` and `{{tag}}`, for messages.
fn tag(word: &str) -> String {
    format!("{OPEN}{word}{CLOSE}")
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    tokens: Vec<Token>,
    /// Set by `-}}`: the next text loses its leading whitespace.
    trim_next_text: bool,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer {
            src,
            pos: 0,
            tokens: Vec::new(),
            trim_next_text: false,
        }
    }

    /// The whole token stream up front keeps the parser free of lexer state;
    /// `--format` strings are tiny.
    fn run(mut self) -> Result<Vec<Token>, TemplateError> {
        while self.pos < self.src.len() {
            self.lex_text();
            if self.pos < self.src.len() {
                self.lex_action()?;
            }
        }
        self.push(Tok::Eof, self.src.len(), false);
        Ok(self.tokens)
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    /// Records a token that ends at the current position.
    fn push(&mut self, tok: Tok, pos: usize, spaced: bool) {
        self.tokens.push(Token {
            tok,
            pos,
            end: self.pos,
            spaced,
        });
    }

    fn error(&self, offset: usize, message: impl Into<String>) -> TemplateError {
        TemplateError::new(self.src, offset, message)
    }

    fn lex_text(&mut self) {
        let start = self.pos;
        let rest = self.rest();
        let len = rest.find(OPEN).unwrap_or(rest.len());
        let mut text = &rest[..len];
        if std::mem::take(&mut self.trim_next_text) {
            text = text.trim_start_matches(is_space);
        }
        if rest[len..].strip_prefix(OPEN).is_some_and(has_left_trim) {
            text = text.trim_end_matches(is_space);
        }
        self.pos += len;
        if !text.is_empty() {
            self.push(Tok::Text(text.to_owned()), start, false);
        }
    }

    /// Length of the closing delimiter at the current position, and whether
    /// it carries a trim marker.
    fn at_close(&self) -> Option<(usize, bool)> {
        let rest = self.rest();
        if rest.starts_with(CLOSE) {
            return Some((CLOSE.len(), false));
        }
        let trimmed = rest
            .strip_prefix(is_space)?
            .strip_prefix('-')?
            .starts_with(CLOSE);
        trimmed.then_some((TRIM_MARKER_LEN + CLOSE.len(), true))
    }

    fn lex_action(&mut self) -> Result<(), TemplateError> {
        let start = self.pos;
        self.pos += OPEN.len();
        if has_left_trim(self.rest()) {
            self.pos += TRIM_MARKER_LEN;
        }
        if self.rest().starts_with(COMMENT_OPEN) {
            return self.lex_comment(start);
        }
        self.push(Tok::Open, start, false);

        let mut spaced = false;
        let mut open_parens = Vec::new();
        loop {
            if let Some((len, trim)) = self.at_close() {
                if let Some(&paren) = open_parens.last() {
                    return Err(self.error(paren, "unclosed left parenthesis"));
                }
                let at = self.pos;
                self.pos += len;
                self.trim_next_text = trim;
                self.push(Tok::Close, at, spaced);
                return Ok(());
            }
            let at = self.pos;
            let Some(c) = self.rest().chars().next() else {
                return Err(self.error(start, format!("unclosed action: no matching \"{CLOSE}\"")));
            };
            if is_space(c) {
                self.pos += 1;
                spaced = true;
                continue;
            }
            let tok = match c {
                '|' => self.single(Tok::Pipe),
                '(' => {
                    open_parens.push(at);
                    self.single(Tok::LParen)
                }
                ')' => {
                    if open_parens.pop().is_none() {
                        return Err(self.error(at, "unexpected right parenthesis"));
                    }
                    self.single(Tok::RParen)
                }
                ',' => self.single(Tok::Comma),
                '=' => self.single(Tok::Assign),
                ':' => {
                    if !self.rest().starts_with(":=") {
                        return Err(self.error(at, "expected \":=\" after ':'"));
                    }
                    self.pos += 2;
                    Tok::Declare
                }
                '"' => self.lex_quoted()?,
                '`' => self.lex_raw()?,
                '\'' => self.lex_char()?,
                '$' => {
                    self.pos += 1;
                    Tok::Variable(format!("${}", self.take_word()))
                }
                '.' if !self.rest()[1..].starts_with(|c: char| c.is_ascii_digit()) => {
                    self.pos += 1;
                    let name = self.take_word();
                    if name.is_empty() {
                        Tok::Dot
                    } else {
                        Tok::Field(name)
                    }
                }
                '.' | '+' | '-' | '0'..='9' => self.lex_number()?,
                c if c == '_' || c.is_alphabetic() => self.lex_word(),
                '}' => {
                    return Err(self.error(
                        at,
                        format!("unexpected \"}}\" in action (actions end with \"{CLOSE}\")"),
                    ));
                }
                c => {
                    return Err(self.error(
                        at,
                        format!(
                            "unrecognized character {c:?} (U+{:04X}) in action",
                            u32::from(c)
                        ),
                    ));
                }
            };
            self.push(tok, at, spaced);
            spaced = false;
        }
    }

    fn single(&mut self, tok: Tok) -> Tok {
        self.pos += 1;
        tok
    }

    fn lex_comment(&mut self, start: usize) -> Result<(), TemplateError> {
        let body = &self.rest()[COMMENT_OPEN.len()..];
        let Some(len) = body.find(COMMENT_CLOSE) else {
            return Err(self.error(start, "unclosed comment"));
        };
        self.pos += COMMENT_OPEN.len() + len + COMMENT_CLOSE.len();
        let Some((close_len, trim)) = self.at_close() else {
            return Err(self.error(
                start,
                format!("comment ends before closing delimiter \"{CLOSE}\""),
            ));
        };
        self.pos += close_len;
        self.trim_next_text = trim;
        Ok(())
    }

    fn take_word(&mut self) -> String {
        let rest = self.rest();
        let len = rest.find(|c: char| !is_word_char(c)).unwrap_or(rest.len());
        self.pos += len;
        rest[..len].to_owned()
    }

    fn lex_word(&mut self) -> Tok {
        let word = self.take_word();
        match word.as_str() {
            "true" => Tok::Literal(Value::Bool(true)),
            "false" => Tok::Literal(Value::Bool(false)),
            "nil" => Tok::Nil,
            _ => match Keyword::from_word(&word) {
                Some(keyword) => Tok::Keyword(keyword),
                None => Tok::Ident(word),
            },
        }
    }

    fn lex_number(&mut self) -> Result<Tok, TemplateError> {
        let start = self.pos;
        let bytes = self.rest().as_bytes();
        let mut len = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
        let digits = &bytes[len..];
        let hex = digits.starts_with(b"0x") || digits.starts_with(b"0X");
        let exponent: &[u8] = if hex { b"pP" } else { b"eE" };
        // Take everything that could belong to a literal and validate it as a
        // whole, so that `3x` is one bad number rather than two tokens.
        while let Some(&b) = bytes.get(len) {
            let exponent_sign =
                matches!(b, b'+' | b'-') && len > 0 && exponent.contains(&bytes[len - 1]);
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || exponent_sign {
                len += 1;
            } else {
                break;
            }
        }
        let text = &self.rest()[..len];
        self.pos += len;
        parse_number(text)
            .map(Tok::Literal)
            .ok_or_else(|| self.error(start, format!("bad number syntax: {text:?}")))
    }

    fn lex_quoted(&mut self) -> Result<Tok, TemplateError> {
        let start = self.pos;
        let mut chars = self.rest().char_indices().skip(1);
        let mut value = String::new();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(Tok::Literal(Value::String(value)));
                }
                '\n' => break,
                '\\' => value.push(unescape(&mut chars, '"').map_err(|m| self.error(start, m))?),
                c => value.push(c),
            }
        }
        Err(self.error(start, "unterminated quoted string"))
    }

    fn lex_raw(&mut self) -> Result<Tok, TemplateError> {
        let body = &self.rest()[1..];
        let Some(len) = body.find('`') else {
            return Err(self.error(self.pos, "unterminated raw quoted string"));
        };
        // Go drops carriage returns from raw strings so that a template means
        // the same with CRLF line endings.
        let value = body[..len].replace('\r', "");
        self.pos += len + 2;
        Ok(Tok::Literal(Value::String(value)))
    }

    fn lex_char(&mut self) -> Result<Tok, TemplateError> {
        let start = self.pos;
        let mut chars = self.rest().char_indices().skip(1);
        let value = match chars.next() {
            Some((_, '\\')) => unescape(&mut chars, '\'').map_err(|m| self.error(start, m))?,
            Some((_, c)) if c != '\'' && c != '\n' => c,
            _ => return Err(self.error(start, "malformed character constant")),
        };
        match chars.next() {
            Some((i, '\'')) => {
                self.pos += i + 1;
                Ok(Tok::Literal(Value::from(u32::from(value))))
            }
            _ => Err(self.error(start, "unterminated character constant")),
        }
    }
}

/// Decodes the escape sequence after a backslash, as Go's `strconv.Unquote`.
fn unescape(chars: &mut impl Iterator<Item = (usize, char)>, quote: char) -> Result<char, String> {
    let Some((_, c)) = chars.next() else {
        return Err("unterminated escape sequence".to_owned());
    };
    let decoded = match c {
        'a' => '\u{7}',
        'b' => '\u{8}',
        'f' => '\u{c}',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'v' => '\u{b}',
        '\\' => '\\',
        'x' => return escaped_code_point(chars, "x", None, 2, 16),
        'u' => return escaped_code_point(chars, "u", None, 4, 16),
        'U' => return escaped_code_point(chars, "U", None, 8, 16),
        '0'..='7' => return escaped_code_point(chars, "", Some(c), 3, 8),
        c if c == quote => c,
        c => return Err(format!("unknown escape sequence \\{c}")),
    };
    Ok(decoded)
}

fn escaped_code_point(
    chars: &mut impl Iterator<Item = (usize, char)>,
    escape: &str,
    first: Option<char>,
    len: usize,
    radix: u32,
) -> Result<char, String> {
    let mut digits: String = first.into_iter().collect();
    while digits.len() < len {
        match chars.next() {
            Some((_, c)) if c.is_digit(radix) => digits.push(c),
            _ => return Err(format!("invalid escape sequence \\{escape}{digits}")),
        }
    }
    let value = u32::from_str_radix(&digits, radix)
        .map_err(|_| format!("invalid escape sequence \\{escape}{digits}"))?;
    // Octal and \x escapes denote single bytes in Go; above 0x7f such a byte
    // is not text on its own, and template output is text.
    let is_byte = radix == 8 || escape == "x";
    if is_byte && value > 0x7f {
        return Err(format!(
            "escape \\{escape}{digits} is a byte that is not valid UTF-8 on its own"
        ));
    }
    char::from_u32(value)
        .ok_or_else(|| format!("escape \\{escape}{digits} is not a valid Unicode code point"))
}

/// Go's integer and floating-point literal forms, except hex floats and
/// imaginary numbers.
fn parse_number(text: &str) -> Option<Value> {
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let clean: String = unsigned.chars().filter(|&c| c != '_').collect();
    if clean.is_empty() {
        return None;
    }
    let prefixed = |lower: &str, upper: &str| {
        clean
            .strip_prefix(lower)
            .or_else(|| clean.strip_prefix(upper))
            .map(str::to_owned)
    };
    let all_digits = clean.bytes().all(|b| b.is_ascii_digit());
    let integer = if let Some(hex) = prefixed("0x", "0X") {
        Some(u64::from_str_radix(&hex, 16).ok()?)
    } else if let Some(octal) = prefixed("0o", "0O") {
        Some(u64::from_str_radix(&octal, 8).ok()?)
    } else if let Some(binary) = prefixed("0b", "0B") {
        Some(u64::from_str_radix(&binary, 2).ok()?)
    } else if all_digits && clean.len() > 1 && clean.starts_with('0') {
        // A leading zero means octal in Go, as in C.
        Some(u64::from_str_radix(&clean[1..], 8).ok()?)
    } else if all_digits {
        Some(clean.parse::<u64>().ok()?)
    } else {
        None
    };
    if let Some(magnitude) = integer {
        return if negative {
            i64::try_from(-i128::from(magnitude)).ok().map(Value::from)
        } else {
            Some(Value::from(magnitude))
        };
    }
    // Rust also accepts "inf" and "nan"; from_f64 rejects both.
    let float: f64 = clean.parse().ok()?;
    Number::from_f64(if negative { -float } else { float }).map(Value::Number)
}

// ---------------------------------------------------------------------------
// Syntax tree

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action { span: Span, pipe: Pipeline },
    If(Block),
    With(Block),
    Range(Block),
    Break,
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    If,
    With,
    Range,
}

impl BlockKind {
    fn name(self) -> &'static str {
        match self {
            BlockKind::If => "if",
            BlockKind::With => "with",
            BlockKind::Range => "range",
        }
    }
}

#[derive(Debug, Clone)]
struct Block {
    /// The opening action, e.g. `{{if .A}}`.
    span: Span,
    pipe: Pipeline,
    body: Vec<Node>,
    otherwise: Vec<Node>,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
}

#[derive(Debug, Clone)]
struct Pipeline {
    decl: Vec<String>,
    /// `$x = ...` rather than `$x := ...`.
    assign: bool,
    cmds: Vec<Command>,
}

#[derive(Debug, Clone)]
struct Command {
    args: Vec<Expr>,
}

#[derive(Debug, Clone)]
enum Expr {
    Dot,
    Nil,
    Literal(Value),
    Func(Func),
    /// `.A.B`, looked up on dot.
    Field(Vec<String>),
    Variable {
        name: String,
        fields: Vec<String>,
    },
    /// `(pipeline).A.B`
    Chain {
        base: Box<Expr>,
        fields: Vec<String>,
    },
    Pipe(Box<Pipeline>),
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields = |f: &mut fmt::Formatter<'_>, fields: &[String]| {
            fields.iter().try_for_each(|field| write!(f, ".{field}"))
        };
        match self {
            Expr::Dot => f.write_str("."),
            Expr::Nil => f.write_str("nil"),
            Expr::Literal(Value::String(s)) => f.write_str(&go_quote(s)),
            Expr::Literal(value) => f.write_str(&plain(value)),
            Expr::Func(func) => f.write_str(func.name()),
            Expr::Field(path) => fields(f, path),
            Expr::Variable { name, fields: path } => {
                f.write_str(name)?;
                fields(f, path)
            }
            Expr::Chain { base, fields: path } => {
                write!(f, "{base}")?;
                fields(f, path)
            }
            Expr::Pipe(pipe) => write!(f, "({pipe})"),
        }
    }
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.decl.is_empty() {
            let op = if self.assign { "=" } else { ":=" };
            write!(f, "{} {op} ", self.decl.join(", "))?;
        }
        for (i, cmd) in self.cmds.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            for (j, arg) in cmd.args.iter().enumerate() {
                if j > 0 {
                    f.write_str(" ")?;
                }
                write!(f, "{arg}")?;
            }
        }
        Ok(())
    }
}

/// The functions a template may call: Go's builtins plus docker's additions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    And,
    Or,
    Not,
    Len,
    Index,
    Print,
    Printf,
    Println,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Json,
    Join,
    Split,
    Upper,
    Lower,
    Title,
    Truncate,
}

impl Func {
    const ALL: [Func; 21] = [
        Func::And,
        Func::Or,
        Func::Not,
        Func::Len,
        Func::Index,
        Func::Print,
        Func::Printf,
        Func::Println,
        Func::Eq,
        Func::Ne,
        Func::Lt,
        Func::Le,
        Func::Gt,
        Func::Ge,
        Func::Json,
        Func::Join,
        Func::Split,
        Func::Upper,
        Func::Lower,
        Func::Title,
        Func::Truncate,
    ];

    fn lookup(name: &str) -> Option<Func> {
        Func::ALL.into_iter().find(|f| f.name() == name)
    }

    fn name(self) -> &'static str {
        match self {
            Func::And => "and",
            Func::Or => "or",
            Func::Not => "not",
            Func::Len => "len",
            Func::Index => "index",
            Func::Print => "print",
            Func::Printf => "printf",
            Func::Println => "println",
            Func::Eq => "eq",
            Func::Ne => "ne",
            Func::Lt => "lt",
            Func::Le => "le",
            Func::Gt => "gt",
            Func::Ge => "ge",
            Func::Json => "json",
            Func::Join => "join",
            Func::Split => "split",
            Func::Upper => "upper",
            Func::Lower => "lower",
            Func::Title => "title",
            Func::Truncate => "truncate",
        }
    }

    /// Minimum number of arguments, and whether more are accepted.
    fn arity(self) -> (usize, bool) {
        match self {
            Func::Print | Func::Println => (0, true),
            Func::And | Func::Or | Func::Index | Func::Printf => (1, true),
            Func::Eq => (2, true),
            Func::Not | Func::Len | Func::Json | Func::Upper | Func::Lower | Func::Title => {
                (1, false)
            }
            Func::Ne
            | Func::Lt
            | Func::Le
            | Func::Gt
            | Func::Ge
            | Func::Join
            | Func::Split
            | Func::Truncate => (2, false),
        }
    }

    fn check_arity(self, got: usize) -> Result<(), String> {
        let (want, variadic) = self.arity();
        if got == want || (variadic && got > want) {
            return Ok(());
        }
        let at_least = if variadic { "at least " } else { "" };
        Err(format!(
            "wrong number of args for {}: want {at_least}{want} got {got}",
            self.name()
        ))
    }

    /// Calls the function on evaluated arguments. `and` and `or` never get
    /// here: they evaluate their arguments lazily (see `Exec::call`).
    fn apply(self, args: &[Value]) -> Result<Value, String> {
        let string = |s: String| Ok(Value::String(s));
        match (self, args) {
            (Func::Not, [v]) => Ok(Value::Bool(!is_true_value(v))),
            (Func::Len, [v]) => length(v).map(Value::from),
            (Func::Index, [item, keys @ ..]) => index(item, keys),
            (Func::Print, _) => string(sprint(args)),
            (Func::Println, _) => string(sprintln(args)),
            (Func::Printf, [format, rest @ ..]) => string(sprintf(expect_str(format)?, rest)?),
            (Func::Eq, [a, rest @ ..]) => {
                for b in rest {
                    if equal(a, b)? {
                        return Ok(Value::Bool(true));
                    }
                }
                Ok(Value::Bool(false))
            }
            (Func::Ne, [a, b]) => Ok(Value::Bool(!equal(a, b)?)),
            (Func::Lt, [a, b]) => Ok(Value::Bool(compare(a, b)? == Ordering::Less)),
            (Func::Le, [a, b]) => Ok(Value::Bool(compare(a, b)? != Ordering::Greater)),
            (Func::Gt, [a, b]) => Ok(Value::Bool(compare(a, b)? == Ordering::Greater)),
            (Func::Ge, [a, b]) => Ok(Value::Bool(compare(a, b)? != Ordering::Less)),
            (Func::Json, [v]) => {
                let mut out = String::new();
                write_json(&mut out, v);
                string(out)
            }
            (Func::Join, [list, sep]) => join(list, expect_str(sep)?).map(Value::String),
            (Func::Split, [s, sep]) => Ok(split(expect_str(s)?, expect_str(sep)?)),
            (Func::Upper, [s]) => string(expect_str(s)?.to_uppercase()),
            (Func::Lower, [s]) => string(expect_str(s)?.to_lowercase()),
            (Func::Title, [s]) => string(title(expect_str(s)?)),
            (Func::Truncate, [s, n]) => truncate(expect_str(s)?, expect_int(n)?).map(Value::String),
            _ => Err(format!(
                "wrong number of args for {}: got {}",
                self.name(),
                args.len()
            )),
        }
    }
}

// ---------------------------------------------------------------------------
// Parser

struct Parser<'a> {
    src: &'a str,
    /// Never empty: the lexer always ends the stream with `Tok::Eof`.
    tokens: Vec<Token>,
    next: usize,
    /// Variables in scope, innermost last; like Go, references to undeclared
    /// variables are rejected before anything is rendered.
    vars: Vec<String>,
    range_depth: usize,
    depth: usize,
}

/// How a list of nodes ended; offsets are those of the action's `{{`.
enum ListEnd {
    Eof,
    End(usize),
    Else(usize),
}

enum Parsed {
    Node(Node),
    End,
    Else,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str, tokens: Vec<Token>) -> Self {
        Parser {
            src,
            tokens,
            next: 0,
            vars: vec!["$".to_owned()],
            range_depth: 0,
            depth: 0,
        }
    }

    fn parse_template(mut self) -> Result<Vec<Node>, TemplateError> {
        let (nodes, ended) = self.parse_list()?;
        let stray = match ended {
            ListEnd::Eof => return Ok(nodes),
            ListEnd::End(at) => (at, "end"),
            ListEnd::Else(at) => (at, "else"),
        };
        Err(self.error(
            stray.0,
            format!(
                "unexpected {} outside of {{{{if}}}}, {{{{range}}}} or {{{{with}}}}",
                tag(stray.1)
            ),
        ))
    }

    fn error(&self, offset: usize, message: impl Into<String>) -> TemplateError {
        TemplateError::new(self.src, offset, message)
    }

    fn peek(&self) -> &Token {
        &self.tokens[self.next.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let token = self.peek().clone();
        if self.next + 1 < self.tokens.len() {
            self.next += 1;
        }
        token
    }

    fn describe(&self, token: &Token) -> String {
        match token.tok {
            Tok::Eof => "end of template".to_owned(),
            Tok::Close => format!("\"{CLOSE}\""),
            _ => format!(
                "{:?}",
                self.src.get(token.pos..token.end).unwrap_or_default()
            ),
        }
    }

    fn unexpected(&self, token: &Token, context: &str) -> TemplateError {
        self.error(
            token.pos,
            format!("unexpected {} in {context}", self.describe(token)),
        )
    }

    fn expect_close(&mut self, what: &str) -> Result<(), TemplateError> {
        let token = self.bump();
        match token.tok {
            Tok::Close => Ok(()),
            _ => Err(self.unexpected(&token, &tag(what))),
        }
    }

    fn enter(&mut self, at: usize) -> Result<(), TemplateError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(at, format!("template nested more than {MAX_DEPTH} deep")));
        }
        Ok(())
    }

    fn parse_list(&mut self) -> Result<(Vec<Node>, ListEnd), TemplateError> {
        let mut nodes = Vec::new();
        loop {
            let token = self.bump();
            match token.tok {
                Tok::Text(text) => nodes.push(Node::Text(text)),
                Tok::Open => match self.parse_action(token.pos)? {
                    Parsed::Node(node) => nodes.push(node),
                    Parsed::End => return Ok((nodes, ListEnd::End(token.pos))),
                    Parsed::Else => return Ok((nodes, ListEnd::Else(token.pos))),
                },
                Tok::Eof => return Ok((nodes, ListEnd::Eof)),
                _ => return Err(self.unexpected(&token, "template text")),
            }
        }
    }

    /// Parses what follows a `{{`.
    fn parse_action(&mut self, open: usize) -> Result<Parsed, TemplateError> {
        let Tok::Keyword(keyword) = self.peek().tok else {
            let (pipe, end) = self.parse_pipeline("command", false)?;
            let span = Span { start: open, end };
            return Ok(Parsed::Node(Node::Action { span, pipe }));
        };
        self.bump();
        let kind = match keyword {
            Keyword::If => Some(BlockKind::If),
            Keyword::With => Some(BlockKind::With),
            Keyword::Range => Some(BlockKind::Range),
            _ => None,
        };
        if let Some(kind) = kind {
            return self.parse_block(kind, open).map(Parsed::Node);
        }
        match keyword {
            Keyword::End => {
                self.expect_close("end")?;
                Ok(Parsed::End)
            }
            // The caller decides between `{{else}}`, `{{else if ...}}` and
            // `{{else with ...}}`.
            Keyword::Else => Ok(Parsed::Else),
            Keyword::Break | Keyword::Continue => {
                if self.range_depth == 0 {
                    return Err(self.error(
                        open,
                        format!("{} outside {{{{range}}}}", tag(keyword.name())),
                    ));
                }
                self.expect_close(keyword.name())?;
                Ok(Parsed::Node(if keyword == Keyword::Break {
                    Node::Break
                } else {
                    Node::Continue
                }))
            }
            _ => Err(self.error(open, format!("{} is not supported", tag(keyword.name())))),
        }
    }

    fn parse_block(&mut self, kind: BlockKind, open: usize) -> Result<Node, TemplateError> {
        self.enter(open)?;
        let scope = self.vars.len();
        let (pipe, end) = self.parse_pipeline(kind.name(), false)?;
        let span = Span { start: open, end };
        let pipe_scope = self.vars.len();

        let in_range = usize::from(kind == BlockKind::Range);
        self.range_depth += in_range;
        let (body, ended) = self.parse_list()?;
        // {{break}} in a range's {{else}} would refer to an enclosing range.
        self.range_depth -= in_range;
        // Variables declared in the body are not set when {{else}} runs; Go
        // accepts such references and fails at run time, we refuse them now.
        self.vars.truncate(pipe_scope);

        let otherwise = match ended {
            ListEnd::End(_) => Vec::new(),
            ListEnd::Else(at) => self.parse_else(kind, open, at)?,
            ListEnd::Eof => return Err(self.unclosed(kind, open)),
        };
        self.vars.truncate(scope);
        self.depth -= 1;

        let block = Block {
            span,
            pipe,
            body,
            otherwise,
        };
        Ok(match kind {
            BlockKind::If => Node::If(block),
            BlockKind::With => Node::With(block),
            BlockKind::Range => Node::Range(block),
        })
    }

    fn parse_else(
        &mut self,
        kind: BlockKind,
        open: usize,
        else_at: usize,
    ) -> Result<Vec<Node>, TemplateError> {
        if let Tok::Keyword(keyword) = self.peek().tok {
            let chained = match (kind, keyword) {
                (BlockKind::If, Keyword::If) => Some(BlockKind::If),
                (BlockKind::With, Keyword::With) => Some(BlockKind::With),
                _ => None,
            };
            if let Some(chained) = chained {
                // `{{else if ...}}` is `{{else}}{{if ...}}` sharing one {{end}},
                // which the nested block consumes.
                self.bump();
                return Ok(vec![self.parse_block(chained, else_at)?]);
            }
            if matches!(keyword, Keyword::If | Keyword::With) {
                return Err(self.error(
                    else_at,
                    format!(
                        "{} is not allowed in {}",
                        tag(&format!("else {}", keyword.name())),
                        tag(kind.name())
                    ),
                ));
            }
        }
        self.expect_close("else")?;
        let (otherwise, ended) = self.parse_list()?;
        match ended {
            ListEnd::End(_) => Ok(otherwise),
            ListEnd::Else(at) => Err(self.error(
                at,
                format!(
                    "{} already has an {{{{else}}}}; expected {{{{end}}}}",
                    tag(kind.name())
                ),
            )),
            ListEnd::Eof => Err(self.unclosed(kind, open)),
        }
    }

    fn unclosed(&self, kind: BlockKind, open: usize) -> TemplateError {
        self.error(
            open,
            format!("unclosed {}: no matching {{{{end}}}}", tag(kind.name())),
        )
    }

    /// Parses a pipeline and the `}}` or `)` ending it; returns the offset
    /// just past that delimiter.
    fn parse_pipeline(
        &mut self,
        context: &str,
        in_parens: bool,
    ) -> Result<(Pipeline, usize), TemplateError> {
        let (decl, assign) = self.parse_declaration(context)?;
        let mut cmds: Vec<Command> = Vec::new();
        let end = loop {
            let label = if cmds.is_empty() && decl.is_empty() {
                context
            } else {
                "command"
            };
            let at = self.peek().pos;
            let cmd = self.parse_command(label)?;
            if !cmds.is_empty()
                && matches!(
                    cmd.args.first(),
                    Some(Expr::Dot | Expr::Nil | Expr::Literal(_))
                )
            {
                return Err(self.error(
                    at,
                    format!(
                        "non executable command in pipeline stage {}: only a function can take a piped value",
                        cmds.len() + 1
                    ),
                ));
            }
            cmds.push(cmd);
            let token = self.bump();
            match token.tok {
                Tok::Pipe => {}
                Tok::RParen if in_parens => break token.end,
                Tok::Close if !in_parens => break token.end,
                _ => return Err(self.unexpected(&token, context)),
            }
        };
        // In scope only from here on, so `$x := $x` reads an outer $x, as it
        // does at run time.
        if !assign {
            self.vars.extend(decl.iter().cloned());
        }
        Ok((Pipeline { decl, assign, cmds }, end))
    }

    fn parse_declaration(&mut self, context: &str) -> Result<(Vec<String>, bool), TemplateError> {
        let declares = matches!(self.peek().tok, Tok::Variable(_))
            && self
                .tokens
                .get(self.next + 1)
                .is_some_and(|t| matches!(t.tok, Tok::Declare | Tok::Assign | Tok::Comma));
        if !declares {
            return Ok((Vec::new(), false));
        }
        let mut names = Vec::new();
        loop {
            let token = self.bump();
            let Tok::Variable(name) = token.tok else {
                return Err(self.unexpected(&token, "variable declaration"));
            };
            names.push(name);
            let op = self.bump();
            match op.tok {
                Tok::Comma if context == "range" && names.len() == 1 => {}
                Tok::Comma => {
                    return Err(self.error(op.pos, format!("too many declarations in {context}")));
                }
                Tok::Declare => return Ok((names, false)),
                Tok::Assign => {
                    if let Some(name) = names.iter().find(|n| !self.vars.contains(n)) {
                        return Err(self.error(token.pos, format!("undefined variable {name:?}")));
                    }
                    return Ok((names, true));
                }
                _ => return Err(self.unexpected(&op, "variable declaration")),
            }
        }
    }

    fn parse_command(&mut self, label: &str) -> Result<Command, TemplateError> {
        let mut args = Vec::new();
        loop {
            let token = self.peek();
            if matches!(token.tok, Tok::Pipe | Tok::Close | Tok::RParen | Tok::Eof) {
                break;
            }
            if !args.is_empty() && !token.spaced {
                return Err(self.error(
                    token.pos,
                    format!(
                        "unexpected {} in operand; arguments must be separated by spaces",
                        self.describe(token)
                    ),
                ));
            }
            args.push(self.parse_operand()?);
        }
        if args.is_empty() {
            return Err(self.error(self.peek().pos, format!("missing value for {label}")));
        }
        Ok(Command { args })
    }

    fn parse_operand(&mut self) -> Result<Expr, TemplateError> {
        let token = self.bump();
        let term = match token.tok {
            Tok::Dot => Expr::Dot,
            Tok::Nil => Expr::Nil,
            Tok::Literal(value) => Expr::Literal(value),
            Tok::Field(name) => Expr::Field(vec![name]),
            Tok::Ident(name) => match Func::lookup(&name) {
                Some(func) => Expr::Func(func),
                None => {
                    return Err(self.error(token.pos, format!("function {name:?} not defined")));
                }
            },
            Tok::Variable(name) => {
                if !self.vars.contains(&name) {
                    return Err(self.error(token.pos, format!("undefined variable {name:?}")));
                }
                Expr::Variable {
                    name,
                    fields: Vec::new(),
                }
            }
            Tok::LParen => {
                self.enter(token.pos)?;
                let (pipe, _) = self.parse_pipeline("parenthesized pipeline", true)?;
                self.depth -= 1;
                Expr::Pipe(Box::new(pipe))
            }
            Tok::Keyword(keyword) => {
                return Err(self.error(
                    token.pos,
                    format!("unexpected keyword {:?} in operand", keyword.name()),
                ));
            }
            _ => return Err(self.unexpected(&token, "operand")),
        };

        let fields = self.take_field_chain();
        if fields.is_empty() {
            return Ok(term);
        }
        match term {
            Expr::Field(mut path) => {
                path.extend(fields);
                Ok(Expr::Field(path))
            }
            Expr::Variable {
                name,
                fields: mut path,
            } => {
                path.extend(fields);
                Ok(Expr::Variable { name, fields: path })
            }
            pipe @ Expr::Pipe(_) => Ok(Expr::Chain {
                base: Box::new(pipe),
                fields,
            }),
            other => Err(self.error(token.pos, format!("unexpected . after term {other}"))),
        }
    }

    /// Fields written directly after a term, as in `$x.A.B` or `(...).A`.
    fn take_field_chain(&mut self) -> Vec<String> {
        let mut fields = Vec::new();
        while let Token {
            tok: Tok::Field(name),
            spaced: false,
            ..
        } = self.peek()
        {
            fields.push(name.clone());
            self.bump();
        }
        fields
    }
}

// ---------------------------------------------------------------------------
// Evaluation

/// The result of evaluating an expression.
#[derive(Debug, Clone)]
enum Val {
    /// Go's invalid `reflect.Value`: what looking up an absent map key gives.
    /// It prints as `<no value>`, but a function receives it as nil.
    Missing,
    Json(Value),
}

impl Val {
    fn into_value(self) -> Value {
        match self {
            Val::Missing => Value::Null,
            Val::Json(value) => value,
        }
    }
}

/// How a list of nodes finished, so that `{{break}}` and `{{continue}}` can
/// unwind to their range.
enum Flow {
    Normal,
    Break,
    Continue,
}

struct Exec<'t> {
    src: &'t str,
    /// Variables in scope, innermost last; `$` is first.
    vars: Vec<(String, Val)>,
    out: String,
}

impl Exec<'_> {
    fn walk(&mut self, nodes: &[Node], dot: &Value) -> Result<Flow, TemplateError> {
        for node in nodes {
            let flow = match node {
                Node::Text(text) => {
                    self.out.push_str(text);
                    Flow::Normal
                }
                Node::Action { span, pipe } => {
                    let src = self.src;
                    let value = self
                        .pipeline(pipe, dot)
                        .map_err(|m| TemplateError::executing(src, *span, m))?;
                    if pipe.decl.is_empty() {
                        write_val(&mut self.out, &value);
                    }
                    Flow::Normal
                }
                Node::If(block) => self.walk_conditional(block, dot, false)?,
                Node::With(block) => self.walk_conditional(block, dot, true)?,
                Node::Range(block) => self.walk_range(block, dot)?,
                Node::Break => Flow::Break,
                Node::Continue => Flow::Continue,
            };
            if !matches!(flow, Flow::Normal) {
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    fn walk_conditional(
        &mut self,
        block: &Block,
        dot: &Value,
        with: bool,
    ) -> Result<Flow, TemplateError> {
        let src = self.src;
        let scope = self.vars.len();
        let value = self
            .pipeline(&block.pipe, dot)
            .map_err(|m| TemplateError::executing(src, block.span, m))?;
        let flow = match &value {
            Val::Json(new_dot) if with && is_true_value(new_dot) => {
                self.walk(&block.body, new_dot)?
            }
            _ if !with && is_true(&value) => self.walk(&block.body, dot)?,
            _ => self.walk(&block.otherwise, dot)?,
        };
        self.vars.truncate(scope);
        Ok(flow)
    }

    fn walk_range(&mut self, block: &Block, dot: &Value) -> Result<Flow, TemplateError> {
        let src = self.src;
        let fail = |m: String| TemplateError::executing(src, block.span, m);
        let scope = self.vars.len();
        let value = self.commands(&block.pipe.cmds, dot).map_err(fail)?;
        let items = range_items(&value).map_err(fail)?;
        if items.is_empty() {
            let flow = self.walk(&block.otherwise, dot)?;
            self.vars.truncate(scope);
            return Ok(flow);
        }
        let pipe = &block.pipe;
        for (key, elem) in items {
            // Each iteration starts from the scope the range was entered with,
            // so variables declared in the body don't accumulate.
            self.vars.truncate(scope);
            let pair = [&key, &elem];
            let bound = if pipe.decl.len() == 2 {
                &pair[..]
            } else {
                &pair[1..]
            };
            for (name, value) in pipe.decl.iter().zip(bound) {
                let value = Val::Json((*value).clone());
                if pipe.assign {
                    self.set_var(name, value).map_err(fail)?;
                } else {
                    self.vars.push((name.clone(), value));
                }
            }
            if let Flow::Break = self.walk(&block.body, &elem)? {
                break;
            }
        }
        self.vars.truncate(scope);
        Ok(Flow::Normal)
    }

    fn pipeline(&mut self, pipe: &Pipeline, dot: &Value) -> Result<Val, String> {
        let value = self.commands(&pipe.cmds, dot)?;
        for name in &pipe.decl {
            if pipe.assign {
                self.set_var(name, value.clone())?;
            } else {
                self.vars.push((name.clone(), value.clone()));
            }
        }
        Ok(value)
    }

    fn commands(&mut self, cmds: &[Command], dot: &Value) -> Result<Val, String> {
        let mut piped = None;
        for cmd in cmds {
            piped = Some(self.command(cmd, dot, piped)?);
        }
        Ok(piped.unwrap_or(Val::Missing))
    }

    /// `piped` is the previous command's result, which becomes the last
    /// argument of a function call.
    fn command(&mut self, cmd: &Command, dot: &Value, piped: Option<Val>) -> Result<Val, String> {
        let Some((first, rest)) = cmd.args.split_first() else {
            return Err("empty command".to_owned());
        };
        if let Expr::Func(func) = first {
            return self.call(*func, rest, dot, piped);
        }
        if !rest.is_empty() || piped.is_some() {
            return Err(format!("can't give argument to non-function {first}"));
        }
        if let Expr::Nil = first {
            return Err("nil is not a command".to_owned());
        }
        self.eval(first, dot)
    }

    fn eval(&mut self, expr: &Expr, dot: &Value) -> Result<Val, String> {
        match expr {
            Expr::Dot => Ok(Val::Json(dot.clone())),
            Expr::Nil => Ok(Val::Json(Value::Null)),
            Expr::Literal(value) => Ok(Val::Json(value.clone())),
            Expr::Func(func) => self.call(*func, &[], dot, None),
            Expr::Field(fields) => lookup(dot, fields),
            Expr::Variable { name, fields } => match self.var(name)? {
                Val::Missing => Ok(Val::Missing),
                Val::Json(value) => lookup(value, fields),
            },
            Expr::Chain { base, fields } => match self.eval(base, dot)? {
                Val::Missing => Ok(Val::Missing),
                Val::Json(value) => lookup(&value, fields),
            },
            Expr::Pipe(pipe) => self.pipeline(pipe, dot),
        }
    }

    fn call(
        &mut self,
        func: Func,
        args: &[Expr],
        dot: &Value,
        piped: Option<Val>,
    ) -> Result<Val, String> {
        func.check_arity(args.len() + usize::from(piped.is_some()))?;
        // `and` and `or` stop evaluating at the first argument that decides
        // the result, so `and .A (index .A 0)` is safe when .A is empty.
        let stop_when = match func {
            Func::And => Some(false),
            Func::Or => Some(true),
            _ => None,
        };
        if let Some(stop_when) = stop_when {
            let mut last = Val::Missing;
            for arg in args {
                last = self.eval(arg, dot)?;
                if is_true(&last) == stop_when {
                    return Ok(last);
                }
            }
            return Ok(piped.unwrap_or(last));
        }
        let mut values = Vec::with_capacity(args.len() + 1);
        for arg in args {
            values.push(self.eval(arg, dot)?.into_value());
        }
        values.extend(piped.map(Val::into_value));
        func.apply(&values)
            .map(Val::Json)
            .map_err(|e| format!("error calling {}: {e}", func.name()))
    }

    fn var(&self, name: &str) -> Result<&Val, String> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value)
            .ok_or_else(|| format!("undefined variable: {name}"))
    }

    fn set_var(&mut self, name: &str, value: Val) -> Result<(), String> {
        let slot = self.vars.iter_mut().rev().find(|(n, _)| n == name);
        let (_, old) = slot.ok_or_else(|| format!("undefined variable: {name}"))?;
        *old = value;
        Ok(())
    }
}

fn lookup(base: &Value, fields: &[String]) -> Result<Val, String> {
    let mut current = base;
    for field in fields {
        current = match current {
            Value::Object(map) => match map.get(field) {
                Some(value) => value,
                None => return Ok(Val::Missing),
            },
            Value::Null => return Ok(Val::Missing),
            other => {
                return Err(format!(
                    "can't evaluate field {field} in type {}",
                    go_type(other)
                ));
            }
        };
    }
    Ok(Val::Json(current.clone()))
}

/// Key (or index) and element pairs, objects in sorted key order as Go
/// iterates maps.
fn range_items(value: &Val) -> Result<Vec<(Value, Value)>, String> {
    match value {
        Val::Missing | Val::Json(Value::Null) => Ok(Vec::new()),
        Val::Json(Value::Array(items)) => Ok(items
            .iter()
            .enumerate()
            .map(|(i, item)| (Value::from(i), item.clone()))
            .collect()),
        Val::Json(Value::Object(map)) => Ok(sorted_entries(map)
            .into_iter()
            .map(|(key, item)| (Value::String(key.clone()), item.clone()))
            .collect()),
        Val::Json(other) => Err(format!("range can't iterate over {}", plain(other))),
    }
}

fn is_true(value: &Val) -> bool {
    match value {
        Val::Missing => false,
        Val::Json(value) => is_true_value(value),
    }
}

fn is_true_value(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

// ---------------------------------------------------------------------------
// Builtin functions

/// The Go type docker's structs would hold, for messages.
fn go_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(n) if is_integral(n) => "int",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// Whether a number reads as an integer; see the module docs for why an
/// integral float counts.
fn is_integral(n: &Number) -> bool {
    n.is_i64()
        || n.is_u64()
        || n.as_f64()
            .is_some_and(|f| f.fract() == 0.0 && f.abs() < 1e21)
}

fn as_integer(value: &Value) -> Option<i64> {
    let Value::Number(n) = value else {
        return None;
    };
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
            .map(|f| f as i64)
    })
}

fn expect_str(value: &Value) -> Result<&str, String> {
    match value {
        Value::String(s) => Ok(s),
        Value::Null => Err("invalid value; expected string".to_owned()),
        other => Err(format!(
            "wrong type for value; expected string; got {}",
            go_type(other)
        )),
    }
}

fn expect_int(value: &Value) -> Result<i64, String> {
    as_integer(value)
        .ok_or_else(|| format!("wrong type for value; expected int; got {}", go_type(value)))
}

fn length(value: &Value) -> Result<usize, String> {
    match value {
        // Go's len counts bytes.
        Value::String(s) => Ok(s.len()),
        Value::Array(items) => Ok(items.len()),
        Value::Object(map) => Ok(map.len()),
        Value::Null => Ok(0),
        other => Err(format!("len of type {}", go_type(other))),
    }
}

fn index(item: &Value, keys: &[Value]) -> Result<Value, String> {
    let mut current = item;
    for (n, key) in keys.iter().enumerate() {
        current = match current {
            Value::Array(items) => {
                let i = slice_index(key, items.len())?;
                items
                    .get(i)
                    .ok_or_else(|| format!("index out of range: {i}"))?
            }
            // Go's index yields the zero value, nil, for an absent map key.
            Value::Object(map) => match key {
                Value::String(k) => match map.get(k) {
                    Some(value) => value,
                    None => return Ok(Value::Null),
                },
                other => {
                    return Err(format!(
                        "value has type {}; should be string",
                        go_type(other)
                    ));
                }
            },
            Value::String(s) => {
                let i = slice_index(key, s.len())?;
                let byte = s.as_bytes().get(i).copied();
                let byte = byte.ok_or_else(|| format!("index out of range: {i}"))?;
                if n + 1 < keys.len() {
                    return Err("can't index item of type uint8".to_owned());
                }
                return Ok(Value::from(byte));
            }
            Value::Null => return Ok(Value::Null),
            other => return Err(format!("can't index item of type {}", go_type(other))),
        };
    }
    Ok(current.clone())
}

fn slice_index(key: &Value, len: usize) -> Result<usize, String> {
    let i = as_integer(key)
        .ok_or_else(|| format!("cannot index slice/array with type {}", go_type(key)))?;
    usize::try_from(i)
        .ok()
        .filter(|&i| i < len)
        .ok_or_else(|| format!("index out of range: {i}"))
}

fn equal(a: &Value, b: &Value) -> Result<bool, String> {
    match (a, b) {
        (Value::Null, Value::Null) => Ok(true),
        (Value::Null, _) | (_, Value::Null) => Ok(false),
        (Value::Bool(x), Value::Bool(y)) => Ok(x == y),
        (Value::Number(x), Value::Number(y)) => Ok(compare_numbers(x, y) == Ordering::Equal),
        (Value::String(x), Value::String(y)) => Ok(x == y),
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => {
            Err("invalid type for comparison".to_owned())
        }
        _ => Err(format!(
            "incompatible types for comparison: {} and {}",
            go_type(a),
            go_type(b)
        )),
    }
}

fn compare(a: &Value, b: &Value) -> Result<Ordering, String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => Ok(compare_numbers(x, y)),
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        (Value::Number(_), Value::String(_)) | (Value::String(_), Value::Number(_)) => {
            Err(format!(
                "incompatible types for comparison: {} and {}",
                go_type(a),
                go_type(b)
            ))
        }
        _ => Err("invalid type for comparison".to_owned()),
    }
}

fn compare_numbers(x: &Number, y: &Number) -> Ordering {
    if let (Some(a), Some(b)) = (x.as_i64(), y.as_i64()) {
        return a.cmp(&b);
    }
    if let (Some(a), Some(b)) = (x.as_u64(), y.as_u64()) {
        return a.cmp(&b);
    }
    let (a, b) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

fn join(list: &Value, sep: &str) -> Result<String, String> {
    match list {
        Value::Array(items) => Ok(items.iter().map(plain).collect::<Vec<_>>().join(sep)),
        Value::Null => Ok(String::new()),
        other => Err(format!(
            "wrong type for value; expected []string; got {}",
            go_type(other)
        )),
    }
}

/// Go's `strings.Split`: an empty separator splits into characters.
fn split(s: &str, sep: &str) -> Value {
    let parts: Vec<Value> = if sep.is_empty() {
        s.chars().map(|c| Value::String(c.to_string())).collect()
    } else {
        s.split(sep).map(|p| Value::String(p.to_owned())).collect()
    };
    Value::Array(parts)
}

/// Go's `strings.Title`, which docker uses: upper-cases the first letter of
/// each word and leaves the rest alone.
fn title(s: &str) -> String {
    fn is_separator(c: char) -> bool {
        if c.is_ascii() {
            return !(c.is_ascii_alphanumeric() || c == '_');
        }
        c.is_whitespace()
    }
    let mut out = String::with_capacity(s.len());
    let mut prev = ' ';
    for c in s.chars() {
        if is_separator(prev) {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev = c;
    }
    out
}

/// Docker's `truncate`: at most `len` bytes. Docker slices bytes blindly; we
/// back off to a character boundary rather than emit broken UTF-8.
fn truncate(s: &str, len: i64) -> Result<String, String> {
    let len = usize::try_from(len).map_err(|_| format!("slice bounds out of range [:{len}]"))?;
    if s.len() <= len {
        return Ok(s.to_owned());
    }
    let mut end = len;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Ok(s[..end].to_owned())
}

// ---------------------------------------------------------------------------
// Printing, as Go's fmt package does it

#[derive(Debug, Clone, Copy)]
struct Spec {
    verb: char,
    width: usize,
    left: bool,
}

const PLAIN: Spec = Spec {
    verb: 'v',
    width: 0,
    left: false,
};

fn write_val(out: &mut String, value: &Val) {
    match value {
        Val::Missing => out.push_str("<no value>"),
        Val::Json(value) => write_formatted(out, value, PLAIN),
    }
}

/// `%v` of a value.
fn plain(value: &Value) -> String {
    let mut out = String::new();
    write_formatted(&mut out, value, PLAIN);
    out
}

/// Like fmt, applies the verb and width to each element of a list or map.
fn write_formatted(out: &mut String, value: &Value, spec: Spec) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_formatted(out, item, spec);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push_str("map[");
            for (i, (key, item)) in sorted_entries(map).into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_formatted(out, &Value::String(key.clone()), spec);
                out.push(':');
                write_formatted(out, item, spec);
            }
            out.push(']');
        }
        scalar => match format_scalar(scalar, spec.verb) {
            Some(text) => pad(out, &text, spec),
            None if scalar.is_null() => out.push_str(&format!("%!{}(<nil>)", spec.verb)),
            None => out.push_str(&format!(
                "%!{}({}={})",
                spec.verb,
                go_type(scalar),
                plain(scalar)
            )),
        },
    }
}

/// None when the verb doesn't apply to the value (Go prints `%!d(string=x)`).
fn format_scalar(value: &Value, verb: char) -> Option<String> {
    match (value, verb) {
        (Value::String(s), 'v' | 's') => Some(s.clone()),
        (Value::String(s), 'q') => Some(go_quote(s)),
        (Value::Number(n), 'v') => Some(format_number(n)),
        (Value::Number(n), 'd') if is_integral(n) => Some(format_number(n)),
        (Value::Number(_), 'q') => {
            let code = as_integer(value)?;
            let c = u32::try_from(code)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or(char::REPLACEMENT_CHARACTER);
            Some(quote_rune(c))
        }
        (Value::Bool(b), 'v') => Some(b.to_string()),
        (Value::Null, 'v') => Some("<nil>".to_owned()),
        _ => None,
    }
}

fn pad(out: &mut String, text: &str, spec: Spec) {
    let fill = spec.width.saturating_sub(text.chars().count());
    if !spec.left {
        out.extend(std::iter::repeat_n(' ', fill));
    }
    out.push_str(text);
    if spec.left {
        out.extend(std::iter::repeat_n(' ', fill));
    }
}

fn sorted_entries(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

fn format_number(n: &Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    match n.as_f64() {
        Some(f) => format_float(f),
        None => n.to_string(),
    }
}

/// Go's `%v` for a float64 (shortest `%g`), except that integral values
/// print in full; see the module docs.
fn format_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e21 {
        return format!("{f}");
    }
    let (mantissa, exp) = scientific(f);
    if (-4..6).contains(&exp) {
        format!("{f}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    }
}

/// Shortest round-trip digits of `f` in scientific form, e.g. ("1.5", 6).
fn scientific(f: f64) -> (String, i32) {
    let text = format!("{f:e}");
    match text.split_once('e') {
        Some((mantissa, exp)) => (mantissa.to_owned(), exp.parse().unwrap_or(0)),
        None => (text, 0),
    }
}

/// Go's `fmt.Sprint`: a space between operands when neither is a string.
fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    let mut prev_string = false;
    for (i, arg) in args.iter().enumerate() {
        let is_string = arg.is_string();
        if i > 0 && !is_string && !prev_string {
            out.push(' ');
        }
        write_formatted(&mut out, arg, PLAIN);
        prev_string = is_string;
    }
    out
}

/// Go's `fmt.Sprintln`: always spaces, and a final newline.
fn sprintln(args: &[Value]) -> String {
    let mut out = args.iter().map(plain).collect::<Vec<_>>().join(" ");
    out.push('\n');
    out
}

/// Go's `fmt.Sprintf` for `%s %d %v %q`, with the `-` flag and a width.
/// Other verbs are refused rather than mis-rendered.
fn sprintf(format: &str, args: &[Value]) -> Result<String, String> {
    const MAX_WIDTH: usize = 1_000_000;
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut directive = String::from("%");
        let mut spec = PLAIN;
        while let Some(&flag) = chars.peek() {
            match flag {
                '-' => spec.left = true,
                '+' | '#' | ' ' | '0' if spec.width == 0 => {
                    return Err(format!("unsupported printf flag {flag:?} in {format:?}"));
                }
                '0'..='9' => {
                    let digit = flag.to_digit(10).map_or(0, |d| d as usize);
                    spec.width = spec.width * 10 + digit;
                    if spec.width > MAX_WIDTH {
                        return Err(format!("printf width too large in {format:?}"));
                    }
                }
                _ => break,
            }
            directive.push(flag);
            chars.next();
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        directive.push(verb);
        match verb {
            '%' => out.push('%'),
            's' | 'd' | 'v' | 'q' => match args.next() {
                Some(arg) => write_formatted(&mut out, arg, Spec { verb, ..spec }),
                None => out.push_str(&format!("%!{verb}(MISSING)")),
            },
            _ => {
                return Err(format!(
                    "unsupported printf directive {directive:?}: only %s, %d, %v and %q are supported"
                ));
            }
        }
    }
    let extra: Vec<String> = args
        .map(|arg| match arg {
            Value::Null => "<nil>".to_owned(),
            other => format!("{}={}", go_type(other), plain(other)),
        })
        .collect();
    if !extra.is_empty() {
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    Ok(out)
}

/// Go's `strconv.Quote`.
fn go_quote(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        push_escaped(&mut out, c, '"');
    }
    out.push('"');
    out
}

/// Go's `strconv.QuoteRune`, which `%q` applies to integers.
fn quote_rune(c: char) -> String {
    let mut out = String::from('\'');
    push_escaped(&mut out, c, '\'');
    out.push('\'');
    out
}

fn push_escaped(out: &mut String, c: char, quote: char) {
    match c {
        c if c == quote || c == '\\' => {
            out.push('\\');
            out.push(c);
        }
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if is_printable(c) => out.push(c),
        c if c < ' ' || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", u32::from(c))),
        c if u32::from(c) < 0x10000 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
        c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
    }
}

/// An approximation of Go's `unicode.IsPrint`.
fn is_printable(c: char) -> bool {
    let invisible = matches!(c, '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}' | '\u{feff}');
    c == ' ' || !(c.is_control() || c.is_whitespace() || invisible)
}

// ---------------------------------------------------------------------------
// JSON, as docker's `json` function writes it

fn write_json(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&json_number(n)),
        Value::String(s) => write_json_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item);
            }
            out.push(']');
        }
        // serde_json's map is sorted by key, which is also how Go encodes a map.
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, key);
                out.push(':');
                write_json(out, item);
            }
            out.push('}');
        }
    }
}

fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            // Go escapes these even with HTML escaping off: they end a line
            // in JavaScript.
            '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c if c < ' ' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's encoding of a float64: integral values without a fraction, and
/// exponent form only for very small or large magnitudes.
fn json_number(n: &Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let Some(f) = n.as_f64() else {
        return n.to_string();
    };
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let (mantissa, exp) = scientific(f);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{}", exp.unsigned_abs())
    } else {
        format!("{f}")
    }
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn image() -> Value {
        // Keys in sorted order so the expected JSON holds whether or not
        // serde_json's `preserve_order` feature is on.
        json!({
            "Architecture": "amd64",
            "Config": {
                "Cmd": ["sh"],
                "Env": ["PATH=/usr/local/bin:/usr/bin"],
                "Labels": {
                    "com.example.version": "1.0",
                    "maintainer": "Jo <jo@example.com> & co"
                },
                "StopSignal": null
            },
            "Id": "sha256:0123456789abcdef",
            "Os": "linux",
            "RepoDigests": ["busybox@sha256:abc"],
            "RepoTags": ["busybox:latest", "busybox:1.36"],
            "Size": 4261550
        })
    }

    fn render(src: &str, data: &Value) -> String {
        Template::parse(src)
            .and_then(|t| t.render(data))
            .unwrap_or_else(|e| panic!("{src:?} failed: {e}"))
    }

    fn parse_error(src: &str) -> TemplateError {
        match Template::parse(src) {
            Ok(t) => panic!("{src:?} parsed: {t:?}"),
            Err(e) => e,
        }
    }

    fn render_error(src: &str, data: &Value) -> TemplateError {
        let template = Template::parse(src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
        match template.render(data) {
            Ok(out) => panic!("{src:?} rendered {out:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn docker_repo_digests() {
        assert_eq!(render("{{.RepoDigests}}", &image()), "[busybox@sha256:abc]");
    }

    #[test]
    fn docker_id_and_plain_text() {
        assert_eq!(
            render("id={{.Id}} os={{.Os}}/{{.Architecture}}", &image()),
            "id=sha256:0123456789abcdef os=linux/amd64"
        );
        assert_eq!(render("no actions at all", &image()), "no actions at all");
        assert_eq!(render("", &image()), "");
    }

    #[test]
    fn docker_json_config_is_compact_and_keeps_html() {
        assert_eq!(
            render("{{json .Config}}", &image()),
            r#"{"Cmd":["sh"],"Env":["PATH=/usr/local/bin:/usr/bin"],"Labels":{"com.example.version":"1.0","maintainer":"Jo <jo@example.com> & co"},"StopSignal":null}"#
        );
    }

    #[test]
    fn json_escapes_and_numbers_like_go() {
        let data = json!({"s": "a\"b\\c\nd\u{1}\u{2028}é", "f": 1.5, "i": -3, "whole": 2.0,
                          "tiny": 1e-7, "huge": 1e21, "list": [null, true]});
        assert_eq!(
            render("{{json .s}}|{{json .f}}|{{json .i}}|{{json .whole}}", &data),
            r#""a\"b\\c\nd\u0001\u2028é"|1.5|-3|2"#
        );
        assert_eq!(
            render(
                "{{json .tiny}} {{json .huge}} {{json .list}} {{json .Nope}}",
                &data
            ),
            "1e-7 1e+21 [null,true] null"
        );
    }

    #[test]
    fn docker_index_label() {
        assert_eq!(
            render(
                r#"{{index .Config.Labels "com.example.version"}}"#,
                &image()
            ),
            "1.0"
        );
        // Go's index yields nil for an absent key.
        assert_eq!(
            render(r#"{{index .Config.Labels "nope"}}"#, &image()),
            "<nil>"
        );
        assert_eq!(render("{{index .RepoTags 1}}", &image()), "busybox:1.36");
        assert_eq!(render("{{index . \"Config\" \"Cmd\" 0}}", &image()), "sh");
        assert_eq!(render(r#"{{index "abc" 1}}"#, &image()), "98");
    }

    #[test]
    fn docker_range_and_join() {
        assert_eq!(
            render("{{range .RepoTags}}{{.}} {{end}}", &image()),
            "busybox:latest busybox:1.36 "
        );
        assert_eq!(
            render(r#"{{join .RepoTags ","}}"#, &image()),
            "busybox:latest,busybox:1.36"
        );
    }

    #[test]
    fn docker_images_style_row() {
        let row = json!({"Repository": "busybox", "Tag": "latest", "ID": "0123456789ab"});
        assert_eq!(
            render("{{.Repository}}:{{.Tag}}\t{{.ID}}", &row),
            "busybox:latest\t0123456789ab"
        );
    }

    #[test]
    fn missing_key_prints_no_value() {
        assert_eq!(render("{{.Nope}}", &image()), "<no value>");
        assert_eq!(render("{{.Nope.Deeper}}", &image()), "<no value>");
        assert_eq!(render("{{.Config.StopSignal.X}}", &image()), "<no value>");
        // Passed to a function, a missing value becomes nil, as in Go.
        assert_eq!(render("{{print .Nope}}", &image()), "<nil>");
    }

    #[test]
    fn field_on_non_object_names_the_field() {
        let e = render_error("{{.Os.Name}}", &image());
        assert_eq!(e.message, "can't evaluate field Name in type string");
        assert!(e.to_string().contains("executing {{.Os.Name}}"), "{e}");
        let e = render_error("{{.RepoTags.First}}", &image());
        assert!(e.message.contains("field First"), "{e}");
    }

    #[test]
    fn values_print_like_go_fmt() {
        let data = json!({
            "int": 4261550, "neg": -7, "float": 1.25, "big": 1234567.5, "small": 0.00001,
            "whole": 3.0, "t": true, "n": null, "empty": [], "nested": [["a", 1], {"k": null}],
            "map": {"b": 2, "a": "x y"}
        });
        assert_eq!(
            render(
                "{{.int}} {{.neg}} {{.float}} {{.big}} {{.small}} {{.whole}}",
                &data
            ),
            "4261550 -7 1.25 1.2345675e+06 1e-05 3"
        );
        assert_eq!(render("{{.t}} {{.n}} {{.empty}}", &data), "true <nil> []");
        assert_eq!(render("{{.nested}}", &data), "[[a 1] map[k:<nil>]]");
        assert_eq!(render("{{.map}}", &data), "map[a:x y b:2]");
    }

    #[test]
    fn root_and_dot() {
        let data = json!({"A": {"B": {"C": "deep"}}, "Name": "root"});
        assert_eq!(render("{{.A.B.C}}", &data), "deep");
        assert_eq!(
            render("{{with .A.B}}{{.C}} {{$.Name}} {{$.A.B.C}}{{end}}", &data),
            "deep root deep"
        );
        assert_eq!(render("{{$}}", &json!("x")), "x");
        assert_eq!(render("{{.}}", &json!([1, 2])), "[1 2]");
    }

    #[test]
    fn trim_markers() {
        assert_eq!(render("a  \n {{- .Os -}} \n  b", &image()), "alinuxb");
        assert_eq!(render("a {{- .Os}} b", &image()), "alinux b");
        assert_eq!(render("a {{.Os -}} b", &image()), "a linuxb");
        assert_eq!(
            render("{{range .RepoTags -}}\n  {{.}}\n{{- end}}", &image()),
            "busybox:latestbusybox:1.36"
        );
        // Without a following space the hyphen is a minus sign.
        assert_eq!(render("x {{-3}}", &image()), "x -3");
    }

    #[test]
    fn comments() {
        assert_eq!(render("a{{/* note */}}b", &image()), "ab");
        assert_eq!(
            render("a {{- /* note\n spanning lines */ -}} b", &image()),
            "ab"
        );
        let e = parse_error("a{{/* never closed }}");
        assert!(e.message.contains("unclosed comment"), "{e}");
        let e = parse_error("{{/* c */ .A}}");
        assert!(
            e.message.contains("comment ends before closing delimiter"),
            "{e}"
        );
    }

    #[test]
    fn if_else_if_else() {
        let t = Template::parse(
            r#"{{if eq .Os "windows"}}win{{else if eq .Os "linux"}}{{if .Size}}lin{{else}}empty{{end}}{{else}}other{{end}}"#,
        )
        .unwrap();
        assert_eq!(t.render(&json!({"Os": "windows"})).unwrap(), "win");
        assert_eq!(t.render(&json!({"Os": "linux", "Size": 1})).unwrap(), "lin");
        assert_eq!(
            t.render(&json!({"Os": "linux", "Size": 0})).unwrap(),
            "empty"
        );
        assert_eq!(t.render(&json!({"Os": "plan9"})).unwrap(), "other");
    }

    #[test]
    fn truthiness_follows_go() {
        let t = Template::parse("{{if .}}T{{else}}F{{end}}").unwrap();
        for falsy in [
            json!(false),
            json!(0),
            json!(0.0),
            json!(null),
            json!(""),
            json!([]),
            json!({}),
        ] {
            assert_eq!(t.render(&falsy).unwrap(), "F", "{falsy}");
        }
        for truthy in [
            json!(true),
            json!(-1),
            json!(0.5),
            json!("0"),
            json!([0]),
            json!({"a": null}),
        ] {
            assert_eq!(t.render(&truthy).unwrap(), "T", "{truthy}");
        }
        assert_eq!(render("{{if .Missing}}T{{else}}F{{end}}", &json!({})), "F");
    }

    #[test]
    fn with_and_else() {
        assert_eq!(
            render("{{with .Config.Cmd}}{{index . 0}}{{end}}", &image()),
            "sh"
        );
        assert_eq!(
            render("{{with .Config.StopSignal}}x{{else}}none{{end}}", &image()),
            "none"
        );
        assert_eq!(
            render(
                "{{with .A}}a{{else with .B}}b={{.}}{{else}}c{{end}}",
                &json!({"B": 2})
            ),
            "b=2"
        );
        assert_eq!(render("{{with $x := .Os}}{{$x}}{{end}}", &image()), "linux");
    }

    #[test]
    fn range_with_variables() {
        assert_eq!(
            render(
                "{{range $i, $t := .RepoTags}}{{$i}}={{$t}};{{end}}",
                &image()
            ),
            "0=busybox:latest;1=busybox:1.36;"
        );
        assert_eq!(
            render("{{range $t := .RepoTags}}[{{$t}}]{{end}}", &image()),
            "[busybox:latest][busybox:1.36]"
        );
        // Objects iterate in key order, like Go maps.
        let data = json!({"Labels": {"z": "1", "a": "2", "m": "3"}});
        assert_eq!(
            render("{{range $k, $v := .Labels}}{{$k}}={{$v}} {{end}}", &data),
            "a=2 m=3 z=1 "
        );
        assert_eq!(render("{{range .Labels}}{{.}}{{end}}", &data), "231");
    }

    #[test]
    fn range_else_and_nil() {
        let data = json!({"Empty": [], "Nil": null});
        assert_eq!(
            render("{{range .Empty}}x{{else}}none{{end}}", &data),
            "none"
        );
        assert_eq!(render("{{range .Nil}}x{{else}}none{{end}}", &data), "none");
        assert_eq!(
            render("{{range .Missing}}x{{else}}none{{end}}", &data),
            "none"
        );
        let e = render_error("{{range .Os}}{{end}}", &image());
        assert_eq!(e.message, "range can't iterate over linux");
    }

    #[test]
    fn range_break_continue() {
        let data = json!([1, 2, 3, 4, 5]);
        assert_eq!(
            render("{{range .}}{{if eq . 2}}{{continue}}{{end}}{{if gt . 3}}{{break}}{{end}}{{.}}{{end}}", &data),
            "13"
        );
    }

    #[test]
    fn variables_declare_and_assign() {
        assert_eq!(
            render("{{$x := .Os}}{{$x}}-{{$x}}", &image()),
            "linux-linux"
        );
        assert_eq!(
            render(
                "{{$n := 0}}{{range .RepoTags}}{{$n = .}}{{end}}{{$n}}",
                &image()
            ),
            "busybox:1.36"
        );
        assert_eq!(render("{{$c := .Config}}{{$c.Cmd}}", &image()), "[sh]");
        assert_eq!(
            render("{{range .RepoTags}}{{$.Os}} {{end}}", &image()),
            "linux linux "
        );
        // A variable declared in a block ends with it.
        let e = parse_error("{{if .A}}{{$x := 1}}{{end}}{{$x}}");
        assert_eq!(e.message, "undefined variable \"$x\"");
        let e = parse_error("{{$y = 1}}");
        assert_eq!(e.message, "undefined variable \"$y\"");
    }

    #[test]
    fn literals() {
        assert_eq!(
            render(
                r#"{{"tab\there \"q\" back\\slash \u00e9 \x41 \101"}}"#,
                &json!(null)
            ),
            "tab\there \"q\" back\\slash é A A"
        );
        assert_eq!(
            render("{{`raw \\n {{not an action}}`}}", &json!(null)),
            "raw \\n {{not an action}}"
        );
        assert_eq!(
            render(
                "{{print 42 -7 1.5 0x1F 017 1_000 'a' true false}}",
                &json!(null)
            ),
            "42 -7 1.5 31 15 1000 97 true false"
        );
    }

    #[test]
    fn pipelines_and_parentheses() {
        assert_eq!(render("{{.Os | upper}}", &image()), "LINUX");
        assert_eq!(
            render("{{.Os | printf \"%s!\" | upper}}", &image()),
            "LINUX!"
        );
        assert_eq!(render("{{(index .RepoTags 0) | len}}", &image()), "14");
        assert_eq!(
            render(r#"{{len (split (index .RepoTags 0) ":")}}"#, &image()),
            "2"
        );
        let data = json!({"Items": [{"Name": "first"}, {"Name": "second"}]});
        assert_eq!(render("{{(index .Items 1).Name}}", &data), "second");
        assert_eq!(
            render("{{with $x := index .Items 0}}{{$x.Name}}{{end}}", &data),
            "first"
        );
    }

    #[test]
    fn string_functions() {
        let data = json!({"s": "hello wide_world-x", "id": "sha256:0123456789abcdef"});
        assert_eq!(
            render("{{upper .s}}|{{lower \"MiXeD\"}}", &data),
            "HELLO WIDE_WORLD-X|mixed"
        );
        assert_eq!(render("{{title .s}}", &data), "Hello Wide_world-X");
        assert_eq!(
            render("{{truncate .id 12}}|{{truncate \"ab\" 5}}", &data),
            "sha256:01234|ab"
        );
        assert_eq!(render("{{truncate \"héllo\" 2}}", &data), "h");
        assert_eq!(
            render(r#"{{split "a,b,,c" ","}}|{{split "ab" ""}}"#, &data),
            "[a b  c]|[a b]"
        );
        assert_eq!(
            render(r#"{{join (split "a:b:c" ":") "-"}}"#, &data),
            "a-b-c"
        );
        assert_eq!(
            render(
                "{{len .s}} {{len .Missing}} {{len (split .s \" \")}}",
                &data
            ),
            "18 0 2"
        );
    }

    #[test]
    fn print_printf_println() {
        assert_eq!(
            render(r#"{{print "a" "b" 1 2 "c" 3}}"#, &json!(null)),
            "ab1 2c3"
        );
        assert_eq!(render(r#"{{println "a" 1 .}}"#, &json!(true)), "a 1 true\n");
        assert_eq!(
            render(
                r#"{{printf "%s=%d %v %q %%" "k" 42 .RepoTags "q\"t"}}"#,
                &image()
            ),
            r#"k=42 [busybox:latest busybox:1.36] "q\"t" %"#
        );
        assert_eq!(
            render(r#"[{{printf "%-6s|%4d|%q" "ab" 7 65}}]"#, &json!(null)),
            "[ab    |   7|'A']"
        );
        assert_eq!(
            render(r#"{{printf "%d %s" "x"}}"#, &json!(null)),
            "%!d(string=x) %!s(MISSING)"
        );
        assert_eq!(
            render(r#"{{printf "%s" "a" 1 nil}}"#, &json!(null)),
            "a%!(EXTRA int=1, <nil>)"
        );
        let e = render_error(r#"{{printf "%x" 1}}"#, &json!(null));
        assert!(
            e.message.contains("unsupported printf directive \"%x\""),
            "{e}"
        );
    }

    #[test]
    fn comparisons() {
        let data = json!({"n": 5, "f": 2.5, "s": "b"});
        assert_eq!(
            render(
                "{{eq .n 5}} {{ne .n 5}} {{lt .n 6}} {{le .n 5}} {{gt .f 2}} {{ge .f 3}}",
                &data
            ),
            "true false true true true false"
        );
        assert_eq!(
            render(
                r#"{{lt .s "c"}} {{eq .s "a" "b"}} {{eq .Missing nil}}"#,
                &data
            ),
            "true true true"
        );
        let e = render_error(r#"{{eq .n "5"}}"#, &data);
        assert!(
            e.message.contains("incompatible types for comparison"),
            "{e}"
        );
        let e = render_error("{{lt true false}}", &data);
        assert!(e.message.contains("invalid type for comparison"), "{e}");
    }

    #[test]
    fn and_or_not_short_circuit() {
        let data = json!({"Empty": [], "Tags": ["a"]});
        assert_eq!(
            render("{{and 1 0 .Nope}} {{or 0 \"\" 3}} {{not .Empty}}", &data),
            "0 3 true"
        );
        // `index` would fail on the empty list; `and` never evaluates it.
        assert_eq!(
            render("{{if and .Empty (index .Empty 0)}}y{{else}}n{{end}}", &data),
            "n"
        );
        assert_eq!(
            render("{{or (index .Tags 0) (index .Empty 0)}}", &data),
            "a"
        );
        assert_eq!(render("{{.Tags | and 1}}", &data), "[a]");
    }

    #[test]
    fn malformed_unclosed_action() {
        let e = parse_error("x {{.A");
        assert!(e.message.contains("unclosed action"), "{e}");
        assert_eq!(
            e.to_string(),
            "template: 1:3: unclosed action: no matching \"}}\""
        );
        let e = parse_error("{{.A}");
        assert!(e.message.contains("unexpected \"}\""), "{e}");
    }

    #[test]
    fn malformed_unknown_function() {
        let e = parse_error("line one\n{{frobnicate .A}}");
        assert_eq!(e.message, "function \"frobnicate\" not defined");
        assert_eq!(
            e.to_string(),
            "template: 2:3: function \"frobnicate\" not defined"
        );
    }

    #[test]
    fn malformed_end_without_block() {
        let e = parse_error("a{{end}}");
        assert!(e.message.contains("unexpected {{end}}"), "{e}");
        assert!(e.to_string().starts_with("template: 1:2: "), "{e}");
        let e = parse_error("{{else}}");
        assert!(e.message.contains("unexpected {{else}}"), "{e}");
    }

    #[test]
    fn malformed_unterminated_strings() {
        let e = parse_error(r#"{{print "abc}}"#);
        assert_eq!(e.message, "unterminated quoted string");
        assert!(e.to_string().starts_with("template: 1:9: "), "{e}");
        let e = parse_error("{{print `abc}}");
        assert_eq!(e.message, "unterminated raw quoted string");
        let e = parse_error(r#"{{print "\q"}}"#);
        assert!(e.message.contains("unknown escape sequence"), "{e}");
    }

    #[test]
    fn malformed_unclosed_blocks() {
        let e = parse_error("{{if .A}}yes");
        assert_eq!(e.message, "unclosed {{if}}: no matching {{end}}");
        let e = parse_error("{{range .A}}{{if .B}}{{end}}");
        assert_eq!(e.message, "unclosed {{range}}: no matching {{end}}");
        let e = parse_error("{{with .A}}{{else}}b");
        assert_eq!(e.message, "unclosed {{with}}: no matching {{end}}");
        let e = parse_error("{{if .A}}a{{else}}b{{else}}c{{end}}");
        assert!(e.message.contains("already has an {{else}}"), "{e}");
    }

    #[test]
    fn malformed_actions() {
        let cases = [
            ("{{}}", "missing value for command"),
            ("{{if}}{{end}}", "missing value for if"),
            ("{{.A | }}", "missing value for command"),
            ("{{(.A}}", "unclosed left parenthesis"),
            ("{{.A)}}", "unexpected right parenthesis"),
            ("{{break}}", "{{break}} outside {{range}}"),
            ("{{define \"x\"}}{{end}}", "{{define}} is not supported"),
            ("{{$x}}", "undefined variable \"$x\""),
            ("{{3x}}", "bad number syntax: \"3x\""),
            (
                r#"{{print "a""b"}}"#,
                "arguments must be separated by spaces",
            ),
            (
                "{{.A | \"x\"}}",
                "non executable command in pipeline stage 2",
            ),
            ("{{$a, $b := .}}", "too many declarations in command"),
            (
                "{{range .}}{{else if .}}{{end}}",
                "{{else if}} is not allowed in {{range}}",
            ),
            ("{{.A &}}", "unrecognized character '&'"),
            ("{{\"x\".A}}", "unexpected . after term"),
        ];
        for (src, want) in cases {
            let e = parse_error(src);
            assert!(e.message.contains(want), "{src:?}: {e}");
        }
    }

    #[test]
    fn runtime_errors_name_the_problem() {
        let cases = [
            (
                "{{join .RepoTags}}",
                "wrong number of args for join: want 2 got 1",
            ),
            (
                "{{index .RepoTags 5}}",
                "error calling index: index out of range: 5",
            ),
            ("{{.Os 1}}", "can't give argument to non-function .Os"),
            ("{{upper .Size}}", "expected string; got int"),
            ("{{nil}}", "nil is not a command"),
            ("{{len .Size}}", "len of type int"),
            ("{{truncate .Os -1}}", "slice bounds out of range"),
        ];
        for (src, want) in cases {
            let e = render_error(src, &image());
            assert!(e.message.contains(want), "{src:?}: {e}");
            assert!(e.to_string().contains(&format!("executing {src}")), "{e}");
        }
    }

    #[test]
    fn paren_nesting_is_bounded() {
        let nested = |n: usize| format!("{{{{print {}1{}}}}}", "(print ".repeat(n), ")".repeat(n));
        assert_eq!(render(&nested(MAX_DEPTH), &json!(null)), "1");
        let e = parse_error(&nested(MAX_DEPTH + 1));
        assert!(e.message.contains("nested more than"), "{e}");
    }

    #[test]
    fn deep_block_nesting_renders_within_the_limit() {
        let nested = |n: usize| format!("{}x{}", "{{if 1}}".repeat(n), "{{end}}".repeat(n));
        assert_eq!(render(&nested(MAX_DEPTH), &json!(null)), "x");
        let e = parse_error(&nested(MAX_DEPTH + 1));
        assert!(e.message.contains("nested more than"), "{e}");
    }

    #[test]
    fn template_is_reusable() {
        let t = Template::parse("{{.Name}};").unwrap();
        assert_eq!(t.render(&json!({"Name": "a"})).unwrap(), "a;");
        assert_eq!(t.render(&json!({"Name": "b"})).unwrap(), "b;");
    }
}
