//! Label and field selectors with the grammar and semantics of Kubernetes'
//! `labels.Parse`, `fields.ParseSelector` and `metav1.LabelSelectorAsSelector`.
//!
//! kubectl and controllers send these strings verbatim (`?labelSelector=`,
//! `?fieldSelector=`), and workload objects carry `metav1.LabelSelector`
//! objects, so the accepted syntax, the validation and the canonical string
//! form all have to agree with the real API server: a selector that Kubernetes
//! accepts must be accepted here, and one it rejects must be rejected.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

/// Why a selector could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The label selector string does not follow the grammar.
    #[error(
        "unable to parse label selector: found {found} at offset {offset}, expected {expected}"
    )]
    Syntax {
        /// The offending token, quoted, or `end of string`.
        found: String,
        /// Byte offset of the offending token in the selector.
        offset: usize,
        /// What the grammar allows at that point.
        expected: &'static str,
    },
    /// A key is not a qualified name (`[prefix/]name`).
    #[error("invalid label key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    /// A value is not a valid label value.
    #[error("invalid label value {value:?} for key {key:?}: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    /// The number or form of the values does not suit the operator.
    #[error("invalid values for key {key:?} with operator {operator}: {reason}")]
    InvalidValues {
        key: String,
        operator: Operator,
        reason: &'static str,
    },
    /// A `matchExpressions` operator that `metav1.LabelSelector` does not define.
    #[error("{0:?} is not a valid label selector operator")]
    UnsupportedOperator(String),
    /// A `metav1.LabelSelector` object of the wrong shape.
    #[error("invalid label selector object: {0}")]
    InvalidObject(String),
    /// A field selector term without an operator.
    #[error("invalid field selector: {selector:?}; can't understand {term:?}")]
    FieldTerm { selector: String, term: String },
    /// A backslash in a field selector value that escapes nothing it may escape.
    #[error("invalid field selector: invalid escape sequence {sequence:?} in {term:?}")]
    InvalidEscape { sequence: String, term: String },
    /// A `,` or `=` inside a field selector value that is not escaped.
    #[error("invalid field selector: unescaped character {character:?} in value of {term:?}")]
    UnescapedCharacter { character: char, term: String },
}

/// The relation a label requirement expresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

impl Operator {
    /// The spelling `selection.Operator` uses, which is also what Kubernetes
    /// puts in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => "gt",
            Operator::LessThan => "lt",
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One clause of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement with the checks of `labels.NewRequirement`, so a
    /// requirement that exists is always one Kubernetes would accept.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, SelectorError> {
        validate_label_key(key)?;
        let count_error = |reason| SelectorError::InvalidValues {
            key: key.to_string(),
            operator,
            reason,
        };
        match operator {
            Operator::In | Operator::NotIn => {
                if values.is_empty() {
                    return Err(count_error(
                        "for 'in', 'notin' operators, values set can't be empty",
                    ));
                }
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
                if values.len() != 1 {
                    return Err(count_error(
                        "exact-match compatibility requires one single value",
                    ));
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !values.is_empty() {
                    return Err(count_error(
                        "values set must be empty for exists and does not exist",
                    ));
                }
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    return Err(count_error(
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                if values.iter().any(|v| v.parse::<i64>().is_err()) {
                    return Err(count_error(
                        "for 'Gt', 'Lt' operators, the value must be an integer",
                    ));
                }
            }
        }
        for value in &values {
            validate_label_value(key, value)?;
        }
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values in the order they were given (parsed set-based values are
    /// already sorted and deduplicated, as Kubernetes does).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether `labels` satisfies this clause; a missing label satisfies only
    /// the negative operators, as in Kubernetes.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let found = labels.and_then(|l| l.get(&self.key)).map(label_text);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                found.is_some_and(|v| self.values.contains(&v))
            }
            Operator::NotIn | Operator::NotEquals => {
                found.is_none_or(|v| !self.values.contains(&v))
            }
            Operator::Exists => found.is_some(),
            Operator::DoesNotExist => found.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(Ok(have)) = found.map(|v| v.parse::<i64>()) else {
                    return false;
                };
                let [want] = self.values.as_slice() else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let (op, parens) = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => ("=", false),
            Operator::DoubleEquals => ("==", false),
            Operator::NotEquals => ("!=", false),
            Operator::GreaterThan => (">", false),
            Operator::LessThan => ("<", false),
            Operator::In => (" in ", true),
            Operator::NotIn => (" notin ", true),
        };
        f.write_str(op)?;
        if parens {
            f.write_str("(")?;
        }
        // Values print sorted so that equal selectors print equally, without
        // reordering what the caller stored.
        let mut sorted: Vec<&str> = self.values.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        f.write_str(&sorted.join(","))?;
        if parens {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Label values are strings in valid objects; anything else is compared by
/// its JSON text so that a malformed object can never match by accident of
/// an empty string.
fn label_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Selection {
    /// A null `metav1.LabelSelector`: selects nothing at all.
    Nothing,
    /// The conjunction of the requirements, sorted by key; empty selects all.
    All(Vec<Requirement>),
}

/// A parsed label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    selection: Selection,
}

impl Default for LabelSelector {
    fn default() -> Self {
        Self::everything()
    }
}

impl LabelSelector {
    /// The selector that matches every object (`labels.Everything()`).
    pub fn everything() -> Self {
        LabelSelector {
            selection: Selection::All(Vec::new()),
        }
    }

    /// The selector that matches no object (`labels.Nothing()`), which is what
    /// a missing selector on a workload means: a controller without a
    /// selector must not adopt every pod.
    pub fn nothing() -> Self {
        LabelSelector {
            selection: Selection::Nothing,
        }
    }

    /// Builds a selector from requirements, sorting them by key as
    /// `Selector.Add` does so the printed form is canonical.
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector {
            selection: Selection::All(requirements),
        }
    }

    /// Parses the `labelSelector` query syntax of `labels.Parse`: comma
    /// separated `key`, `!key`, `key=value`, `key==value`, `key!=value`,
    /// `key in (a,b)`, `key notin (a)`, `key>1` and `key<1`, with blanks
    /// allowed between tokens.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let tokens = lex(s);
        let mut parser = Parser { tokens, pos: 0 };
        parser.parse().map(Self::from_requirements)
    }

    /// Converts a `metav1.LabelSelector` (`{matchLabels, matchExpressions}`)
    /// as `metav1.LabelSelectorAsSelector` does: `null` selects nothing, an
    /// object with no requirements selects everything.
    pub fn from_object(selector: &Value) -> Result<Self, SelectorError> {
        let object = match selector {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(object) => object,
            other => {
                return Err(SelectorError::InvalidObject(format!(
                    "expected an object, found {}",
                    json_kind(other)
                )))
            }
        };
        let match_labels = match object.get("matchLabels") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                return Err(SelectorError::InvalidObject(format!(
                    "matchLabels must be an object, found {}",
                    json_kind(other)
                )))
            }
        };
        let match_expressions: &[Value] = match object.get("matchExpressions") {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(other) => {
                return Err(SelectorError::InvalidObject(format!(
                    "matchExpressions must be an array, found {}",
                    json_kind(other)
                )))
            }
        };
        let label_count = match_labels.map_or(0, Map::len);
        if label_count + match_expressions.len() == 0 {
            return Ok(Self::everything());
        }

        let mut requirements = Vec::with_capacity(label_count + match_expressions.len());
        for (key, value) in match_labels.into_iter().flatten() {
            let Value::String(value) = value else {
                return Err(SelectorError::InvalidObject(format!(
                    "matchLabels[{key:?}] must be a string, found {}",
                    json_kind(value)
                )));
            };
            requirements.push(Requirement::new(
                key,
                Operator::Equals,
                vec![value.clone()],
            )?);
        }
        for (index, expression) in match_expressions.iter().enumerate() {
            let Value::Object(expression) = expression else {
                return Err(SelectorError::InvalidObject(format!(
                    "matchExpressions[{index}] must be an object, found {}",
                    json_kind(expression)
                )));
            };
            let key = optional_string(expression, "key", index)?;
            let operator = match optional_string(expression, "operator", index)? {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return Err(SelectorError::UnsupportedOperator(other.to_string())),
            };
            let values = match expression.get("values") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(values)) => values
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(SelectorError::InvalidObject(format!(
                            "matchExpressions[{index}].values must hold strings, found {}",
                            json_kind(other)
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => {
                    return Err(SelectorError::InvalidObject(format!(
                        "matchExpressions[{index}].values must be an array, found {}",
                        json_kind(other)
                    )))
                }
            };
            requirements.push(Requirement::new(key, operator, values)?);
        }
        Ok(Self::from_requirements(requirements))
    }

    /// Whether an object with these `metadata.labels` is selected; `None`
    /// stands for an object without labels.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        match &self.selection {
            Selection::Nothing => false,
            Selection::All(requirements) => requirements.iter().all(|r| r.matches(labels)),
        }
    }

    /// True when the selector places no restriction (selects everything).
    /// The nothing selector is not empty, as in Kubernetes.
    pub fn is_empty(&self) -> bool {
        matches!(&self.selection, Selection::All(r) if r.is_empty())
    }

    /// True for the selector built from a null `metav1.LabelSelector`.
    pub fn matches_nothing(&self) -> bool {
        self.selection == Selection::Nothing
    }

    /// The requirements, sorted by key (none for the nothing selector).
    pub fn requirements(&self) -> &[Requirement] {
        match &self.selection {
            Selection::Nothing => &[],
            Selection::All(r) => r,
        }
    }

    /// The single value a label must have for the selector to match, if the
    /// first requirement on that key pins one (`labels.RequiresExactMatch`).
    pub fn requires_exact_match(&self, key: &str) -> Option<&str> {
        let requirement = self.requirements().iter().find(|r| r.key == key)?;
        match (requirement.operator, requirement.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [value]) => Some(value),
            _ => None,
        }
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

fn optional_string<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    index: usize,
) -> Result<&'a str, SelectorError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(SelectorError::InvalidObject(format!(
            "matchExpressions[{index}].{field} must be a string, found {}",
            json_kind(other)
        ))),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------
// Label selector lexer and parser.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    End,
    OpenPar,
    ClosedPar,
    Comma,
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    In,
    NotIn,
    Identifier,
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    tok: Tok,
    text: &'a str,
    offset: usize,
}

impl Token<'_> {
    fn describe(&self) -> String {
        if self.tok == Tok::End {
            "end of string".to_string()
        } else {
            format!("'{}'", self.text)
        }
    }
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits a selector into tokens. Every byte that is neither blank nor one of
/// the operator characters belongs to an identifier; identifiers are checked
/// later by key and value validation, which is what rejects stray bytes.
/// That includes NUL, at which the Kubernetes lexer would silently stop
/// reading; rejecting it is safer than ignoring the rest of the input.
/// Splitting happens only at ASCII bytes, so every slice is valid UTF-8.
fn lex(s: &str) -> Vec<Token<'_>> {
    let bytes = s.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && is_blank(bytes[i]) {
            i += 1;
        }
        let start = i;
        let Some(&b) = bytes.get(i) else {
            tokens.push(Token {
                tok: Tok::End,
                text: "",
                offset: start,
            });
            return tokens;
        };
        let tok = if is_special(b) {
            // The only two-byte operators are `==` and `!=`; everything else
            // is a single byte, matching the longest-match rule of the
            // Kubernetes lexer.
            let doubled = bytes.get(i + 1) == Some(&b'=') && (b == b'=' || b == b'!');
            i += if doubled { 2 } else { 1 };
            match (b, doubled) {
                (b'=', true) => Tok::DoubleEquals,
                (b'!', true) => Tok::NotEquals,
                (b'=', _) => Tok::Equals,
                (b'!', _) => Tok::Not,
                (b'(', _) => Tok::OpenPar,
                (b')', _) => Tok::ClosedPar,
                (b',', _) => Tok::Comma,
                (b'>', _) => Tok::GreaterThan,
                _ => Tok::LessThan,
            }
        } else {
            while i < bytes.len() && !is_special(bytes[i]) && !is_blank(bytes[i]) {
                i += 1;
            }
            match s.get(start..i) {
                Some("in") => Tok::In,
                Some("notin") => Tok::NotIn,
                _ => Tok::Identifier,
            }
        };
        tokens.push(Token {
            tok,
            text: s.get(start..i).unwrap_or(""),
            offset: start,
        });
    }
}

/// Whether `in` and `notin` are keywords (after a key) or plain identifiers
/// (anywhere a key or value may appear), so `in in (in)` is a valid selector.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self, context: Context) -> Token<'a> {
        let mut token = self
            .tokens
            .get(self.pos)
            .or_else(|| self.tokens.last())
            .copied()
            .unwrap_or(Token {
                tok: Tok::End,
                text: "",
                offset: 0,
            });
        if context == Context::Values && matches!(token.tok, Tok::In | Tok::NotIn) {
            token.tok = Tok::Identifier;
        }
        token
    }

    fn next(&mut self, context: Context) -> Token<'a> {
        let token = self.peek(context);
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let token = self.peek(Context::Values);
            match token.tok {
                Tok::Identifier | Tok::Not => {
                    requirements.push(self.requirement()?);
                    let after = self.next(Context::Values);
                    match after.tok {
                        Tok::End => return Ok(requirements),
                        Tok::Comma => {
                            let following = self.peek(Context::Values);
                            if !matches!(following.tok, Tok::Identifier | Tok::Not) {
                                return Err(syntax(following, "an identifier after ','"));
                            }
                        }
                        _ => return Err(syntax(after, "',' or end of string")),
                    }
                }
                Tok::End => return Ok(requirements),
                _ => return Err(syntax(token, "'!', an identifier, or end of string")),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (key, unary) = self.key_and_unary_operator()?;
        if let Some(operator) = unary {
            return Requirement::new(key, operator, Vec::new());
        }
        let operator = self.operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => vec![self.exact_value()?],
        };
        Requirement::new(key, operator, values)
    }

    /// Reads `[!]key` and decides whether the requirement is unary: a bare
    /// key followed by `,` or the end means "exists".
    fn key_and_unary_operator(&mut self) -> Result<(&'a str, Option<Operator>), SelectorError> {
        let mut token = self.next(Context::Values);
        let mut operator = None;
        if token.tok == Tok::Not {
            operator = Some(Operator::DoesNotExist);
            token = self.next(Context::Values);
        }
        if token.tok != Tok::Identifier {
            return Err(syntax(token, "an identifier"));
        }
        validate_label_key(token.text)?;
        if operator.is_none() && matches!(self.peek(Context::Values).tok, Tok::End | Tok::Comma) {
            operator = Some(Operator::Exists);
        }
        Ok((token.text, operator))
    }

    fn operator(&mut self) -> Result<Operator, SelectorError> {
        let token = self.next(Context::KeyAndOperator);
        Ok(match token.tok {
            Tok::In => Operator::In,
            Tok::NotIn => Operator::NotIn,
            Tok::Equals => Operator::Equals,
            Tok::DoubleEquals => Operator::DoubleEquals,
            Tok::NotEquals => Operator::NotEquals,
            Tok::GreaterThan => Operator::GreaterThan,
            Tok::LessThan => Operator::LessThan,
            _ => return Err(syntax(token, "one of in, notin, =, ==, !=, >, <")),
        })
    }

    /// Reads `(v1,v2,...)`. Empty members are the empty value, so `()`,
    /// `(,a)` and `(a,)` all include `""`; the result is sorted and
    /// deduplicated like the set Kubernetes builds.
    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        let open = self.next(Context::Values);
        if open.tok != Tok::OpenPar {
            return Err(syntax(open, "'('"));
        }
        let first = self.peek(Context::Values);
        let mut values = BTreeSet::new();
        match first.tok {
            Tok::ClosedPar => {
                self.next(Context::Values);
                values.insert(String::new());
                return Ok(values.into_iter().collect());
            }
            Tok::Identifier | Tok::Comma => {}
            _ => return Err(syntax(first, "',', ')' or an identifier")),
        }
        loop {
            let token = self.next(Context::Values);
            match token.tok {
                Tok::Identifier => {
                    values.insert(token.text.to_string());
                    let following = self.peek(Context::Values);
                    match following.tok {
                        Tok::Comma => {}
                        Tok::ClosedPar => break,
                        _ => return Err(syntax(following, "',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if values.is_empty() {
                        values.insert(String::new());
                    }
                    let following = self.peek(Context::Values);
                    if matches!(following.tok, Tok::ClosedPar | Tok::Comma) {
                        values.insert(String::new());
                    }
                    if following.tok == Tok::ClosedPar {
                        break;
                    }
                }
                _ => return Err(syntax(token, "',' or an identifier")),
            }
        }
        let close = self.next(Context::Values);
        if close.tok != Tok::ClosedPar {
            return Err(syntax(close, "')'"));
        }
        Ok(values.into_iter().collect())
    }

    /// Reads the value after `=`, `==`, `!=`, `>` or `<`; a missing value is
    /// the empty string, so `a=` and `a!=` are valid.
    fn exact_value(&mut self) -> Result<String, SelectorError> {
        if matches!(self.peek(Context::Values).tok, Tok::End | Tok::Comma) {
            return Ok(String::new());
        }
        let token = self.next(Context::Values);
        if token.tok == Tok::Identifier {
            Ok(token.text.to_string())
        } else {
            Err(syntax(token, "an identifier"))
        }
    }
}

fn syntax(token: Token<'_>, expected: &'static str) -> SelectorError {
    SelectorError::Syntax {
        found: token.describe(),
        offset: token.offset,
        expected,
    }
}

// ---------------------------------------------------------------------------
// Validation, with the rules and messages of apimachinery's content package.

const NAME_MAX: usize = 63;
const SUBDOMAIN_MAX: usize = 253;
const LABEL_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue', or 'my_value', or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, i.e. non-empty, alphanumeric
/// at both ends.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let b = label.as_bytes();
        let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        match (b.first(), b.last()) {
            (Some(first), Some(last)) => {
                edge(first) && edge(last) && b.iter().all(|c| edge(c) || *c == b'-')
            }
            _ => false,
        }
    })
}

/// The problems `content.IsLabelKey` reports for a key, empty when valid.
fn label_key_problems(key: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                problems.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > SUBDOMAIN_MAX {
                    problems.push(format!(
                        "prefix part must be no more than {SUBDOMAIN_MAX} bytes"
                    ));
                }
                if !is_dns1123_subdomain(prefix) {
                    problems.push(format!("prefix part {SUBDOMAIN_MSG}"));
                }
            }
            *name
        }
        _ => {
            problems.push(format!(
                "a valid label key must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc', regex used for validation is '{LABEL_NAME_FMT}') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ));
            return problems;
        }
    };
    if name.is_empty() {
        problems.push("name part must be non-empty".to_string());
    } else if name.len() > NAME_MAX {
        problems.push(format!("name part must be no more than {NAME_MAX} bytes"));
    }
    if !is_label_name(name) {
        problems.push(format!("name part {LABEL_NAME_MSG}"));
    }
    problems
}

fn validate_label_key(key: &str) -> Result<(), SelectorError> {
    let problems = label_key_problems(key);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SelectorError::InvalidKey {
            key: key.to_string(),
            reason: problems.join("; "),
        })
    }
}

fn validate_label_value(key: &str, value: &str) -> Result<(), SelectorError> {
    let mut problems = Vec::new();
    if value.len() > NAME_MAX {
        problems.push(format!("must be no more than {NAME_MAX} bytes"));
    }
    if !value.is_empty() && !is_label_name(value) {
        problems.push(LABEL_VALUE_MSG.to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SelectorError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason: problems.join("; "),
        })
    }
}

// ---------------------------------------------------------------------------
// Field selectors.

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    equal: bool,
    value: String,
}

/// A parsed field selector: a conjunction of `path=value` / `path!=value`
/// terms over dotted JSON paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses the syntax of `fields.ParseSelector`: comma-separated terms
    /// `field=value`, `field==value` or `field!=value`, where `\,`, `\=` and
    /// `\\` escape those characters in values. Unlike label selectors,
    /// nothing is trimmed and field names are not validated here: which
    /// fields exist depends on the resource, so the caller checks
    /// [`FieldSelector::fields`].
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parts = split_terms(s);
        // Kubernetes sorts the raw terms, which fixes the printed order.
        parts.sort_unstable();
        let mut terms = Vec::with_capacity(parts.len());
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, op, raw)) = split_term(part) else {
                return Err(SelectorError::FieldTerm {
                    selector: s.to_string(),
                    term: part.to_string(),
                });
            };
            let value = unescape_value(raw, part)?;
            // A term that names no field and no value constrains nothing and
            // is dropped, as Kubernetes' transform step does.
            if field.is_empty() && value.is_empty() {
                continue;
            }
            terms.push(FieldTerm {
                field: field.to_string(),
                equal: op != "!=",
                value,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// Whether every term holds for `object`. A missing field reads as `""`,
    /// numbers and booleans as their JSON text, and objects or arrays (which
    /// no field selector can usefully name) as `""`.
    pub fn matches(&self, object: &Value) -> bool {
        self.terms
            .iter()
            .all(|term| (field_text(object, &term.field) == term.value) == term.equal)
    }

    /// The field paths the selector uses, so the caller can reject the ones
    /// its resource does not support, as Kubernetes does.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| t.field.as_str())
    }

    /// The value an `=`/`==` term requires of `field`, letting the server
    /// narrow a list (`metadata.name=x`) before matching.
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.equal && t.field == field)
            .map(|t| t.value.as_str())
    }

    /// True when the selector places no restriction.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, term) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if term.equal { "=" } else { "!=" };
            write!(f, "{}{op}{}", term.field, escape_value(&term.value))?;
        }
        Ok(())
    }
}

/// Escapes `\`, `,` and `=` so a value survives a round trip through
/// [`FieldSelector::parse`].
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Splits at commas not preceded by an escaping backslash; the backslashes
/// stay in the terms for [`unescape_value`] to interpret.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(s.get(start..i).unwrap_or(""));
            start = i + 1;
        }
    }
    terms.push(s.get(start..).unwrap_or(""));
    terms
}

/// Splits a term at the first operator; field names cannot contain escapes,
/// so the first `!=`, `==` or `=` is the operator.
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = term.get(i..)?;
        for op in ["!=", "==", "="] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((term.get(..i)?, op, value));
            }
        }
    }
    None
}

fn unescape_value(raw: &str, term: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('\\' | ',' | '=')) => out.push(escaped),
                Some(other) => {
                    return Err(SelectorError::InvalidEscape {
                        sequence: format!("\\{other}"),
                        term: term.to_string(),
                    })
                }
                None => {
                    return Err(SelectorError::InvalidEscape {
                        sequence: "\\".to_string(),
                        term: term.to_string(),
                    })
                }
            },
            ',' | '=' => {
                return Err(SelectorError::UnescapedCharacter {
                    character: c,
                    term: term.to_string(),
                })
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

fn field_text(object: &Value, path: &str) -> String {
    let mut current = object;
    for segment in path.split('.') {
        match current.get(segment) {
            Some(next) => current = next,
            None => return String::new(),
        }
    }
    match current {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null | Value::Array(_) | Value::Object(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn canonical(s: &str) -> String {
        match LabelSelector::parse(s) {
            Ok(sel) => sel.to_string(),
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn parses_and_prints_canonically() {
        let cases = [
            ("", ""),
            ("   ", ""),
            ("a=b", "a=b"),
            ("a==b", "a==b"),
            ("a!=b", "a!=b"),
            ("a", "a"),
            ("!a", "!a"),
            (" a in ( y , x ) ", "a in (x,y)"),
            ("a notin (x)", "a notin (x)"),
            ("a>1", "a>1"),
            ("a<2", "a<2"),
            ("z=1,a=2,m", "a=2,m,z=1"),
            (
                "x in (foo,,baz),y,z notin ()",
                "x in (,baz,foo),y,z notin ()",
            ),
            ("a in (b,b,a)", "a in (a,b)"),
            ("a=", "a="),
            ("a!=", "a!="),
            ("a=,b", "a=,b"),
            ("in in (in,notin)", "in in (in,notin)"),
            ("a=in", "a=in"),
            ("example.com/app=web", "example.com/app=web"),
            ("a\t=\nb", "a=b"),
            ("a in (,)", "a in ()"),
            ("a in (x,)", "a in (,x)"),
        ];
        for (input, want) in cases {
            assert_eq!(canonical(input), want, "input {input:?}");
        }
    }

    #[test]
    fn gt_lt_values_must_be_integers_and_valid_values() {
        assert!(LabelSelector::parse("a>x").is_err());
        assert!(LabelSelector::parse("a>").is_err());
        // "-1" parses as an integer but is not a valid label value.
        assert!(matches!(
            LabelSelector::parse("a>-1"),
            Err(SelectorError::InvalidValue { .. })
        ));
        assert!(LabelSelector::parse("a>+1").is_err());
        assert!(LabelSelector::parse("a<10").is_ok());
    }

    #[test]
    fn rejects_malformed_selectors_naming_the_problem() {
        let cases = [
            ("a in (", "end of string"),
            ("a in (b", "end of string"),
            ("a in b", "'b'"),
            ("=b", "'='"),
            ("a,", "end of string"),
            (",a", "','"),
            ("a b", "'b'"),
            ("!a=b", "'='"),
            ("!", "end of string"),
            ("a=b=c", "'='"),
            ("a=(b)", "'('"),
            ("a in (b c)", "'c'"),
            ("a in (=)", "'='"),
            ("a<=1", "'='"),
            ("a!b", "'!'"),
            ("a in ((b))", "'('"),
        ];
        for (input, found) in cases {
            match LabelSelector::parse(input) {
                Err(e @ SelectorError::Syntax { .. }) => {
                    assert!(e.to_string().contains(found), "{input:?}: {e}");
                }
                other => panic!("{input:?} should be a syntax error, got {other:?}"),
            }
        }
        match LabelSelector::parse("a in (") {
            Err(SelectorError::Syntax { offset, .. }) => assert_eq!(offset, 6),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_keys_and_values() {
        let long = "x".repeat(64);
        let bad_keys = [
            "-x".to_string(),
            "x-".to_string(),
            "a/b/c".to_string(),
            "/a".to_string(),
            "a/".to_string(),
            "Example.com/a".to_string(),
            "ex_ample.com/a".to_string(),
            long.clone(),
            format!("{}/a", "a".repeat(254)),
            "caf\u{e9}".to_string(),
            "a\0b".to_string(),
        ];
        for key in &bad_keys {
            match LabelSelector::parse(&format!("{key}=v")) {
                Err(SelectorError::InvalidKey { key: k, reason }) => {
                    assert_eq!(&k, key);
                    assert!(!reason.is_empty());
                }
                other => panic!("{key:?} should be an invalid key, got {other:?}"),
            }
        }
        assert!(LabelSelector::parse(&format!("{}/{}", "a".repeat(253), "x".repeat(63))).is_ok());
        assert!(LabelSelector::parse(&"x".repeat(63)).is_ok());

        match LabelSelector::parse("-x") {
            Err(e) => assert!(e.to_string().contains("\"-x\""), "{e}"),
            Ok(s) => panic!("parsed {s}"),
        }
        match LabelSelector::parse(&format!("a={long}")) {
            Err(SelectorError::InvalidValue { value, reason, .. }) => {
                assert_eq!(value, long);
                assert!(reason.contains("no more than 63 bytes"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(LabelSelector::parse("a=-b").is_err());
        assert!(LabelSelector::parse("a in (ok,_bad)").is_err());
        assert!(LabelSelector::parse("a=b_c.d-e").is_ok());
    }

    #[test]
    fn matches_like_kubernetes() {
        let l = labels(json!({"app": "web", "tier": "front", "n": "5"}));
        let m = |s: &str, l: Option<&Map<String, Value>>| match LabelSelector::parse(s) {
            Ok(sel) => sel.matches(l),
            Err(e) => panic!("{s}: {e}"),
        };
        assert!(m("", Some(&l)));
        assert!(m("", None));
        assert!(m("app=web", Some(&l)));
        assert!(m("app==web,tier", Some(&l)));
        assert!(!m("app=db", Some(&l)));
        assert!(m("app!=db", Some(&l)));
        assert!(m("missing!=x", Some(&l)));
        assert!(m("missing notin (x)", Some(&l)));
        assert!(!m("missing in (x)", Some(&l)));
        assert!(m("tier in (back,front)", Some(&l)));
        assert!(!m("tier notin (back,front)", Some(&l)));
        assert!(m("!missing", Some(&l)));
        assert!(!m("!app", Some(&l)));
        assert!(m("n>4,n<6", Some(&l)));
        assert!(!m("n>5", Some(&l)));
        assert!(!m("app>1", Some(&l)));
        assert!(!m("missing>1", Some(&l)));
        assert!(!m("app", None));
        assert!(m("!app", None));
        assert!(m("app=", Some(&labels(json!({"app": ""})))));
        assert!(!m("app=", None));
    }

    #[test]
    fn from_object_follows_label_selector_as_selector() {
        let nothing = LabelSelector::from_object(&Value::Null);
        assert!(matches!(&nothing, Ok(s) if s.matches_nothing() && !s.is_empty()));
        assert!(!LabelSelector::nothing().matches(None));
        assert_eq!(LabelSelector::nothing().to_string(), "");

        for empty in [
            json!({}),
            json!({"matchLabels": {}, "matchExpressions": []}),
        ] {
            match LabelSelector::from_object(&empty) {
                Ok(s) => {
                    assert!(s.is_empty());
                    assert!(s.matches(None));
                }
                Err(e) => panic!("{e}"),
            }
        }

        let sel = LabelSelector::from_object(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "edge"]},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "team", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist", "values": null}
            ]
        }));
        let sel = match sel {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            sel.to_string(),
            "app=web,env notin (prod),!legacy,team,tier in (edge,front)"
        );
        let good = labels(json!({"app": "web", "tier": "edge", "team": "a"}));
        assert!(sel.matches(Some(&good)));
        let bad = labels(json!({"app": "web", "tier": "edge", "team": "a", "legacy": "1"}));
        assert!(!sel.matches(Some(&bad)));
        assert_eq!(sel.requires_exact_match("app"), Some("web"));
        assert_eq!(sel.requires_exact_match("tier"), None);

        let bad_objects = [
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
                "Gt",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "in", "values": ["1"]}]}),
                "in",
            ),
            (json!({"matchExpressions": [{"key": "a"}]}), "\"\""),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
                "can't be empty",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
                "can't be empty",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
                "must be empty",
            ),
            (
                json!({"matchExpressions": [{"key": "-a", "operator": "Exists"}]}),
                "\"-a\"",
            ),
            (
                json!({"matchExpressions": [{"operator": "Exists"}]}),
                "non-empty",
            ),
            (json!({"matchLabels": {"a": "-"}}), "\"-\""),
            (json!({"matchLabels": {"a": 1}}), "matchLabels"),
            (json!({"matchLabels": []}), "matchLabels"),
            (json!({"matchExpressions": {}}), "matchExpressions"),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]}),
                "values",
            ),
            (json!("app=web"), "object"),
        ];
        for (object, needle) in bad_objects {
            match LabelSelector::from_object(&object) {
                Err(e) => assert!(e.to_string().contains(needle), "{object}: {e}"),
                Ok(s) => panic!("{object} should fail, got {s}"),
            }
        }
        assert!(matches!(
            LabelSelector::from_object(&json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})),
            Err(SelectorError::UnsupportedOperator(op)) if op == "Gt"
        ));
    }

    #[test]
    fn field_selectors_parse_escape_and_match() {
        let sel = match FieldSelector::parse("status.phase!=Failed,metadata.name=a\\,b\\=c\\\\") {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(sel.exact("metadata.name"), Some("a,b=c\\"));
        assert_eq!(sel.exact("status.phase"), None);
        assert_eq!(
            sel.fields().collect::<Vec<_>>(),
            vec!["metadata.name", "status.phase"]
        );
        assert_eq!(
            sel.to_string(),
            "metadata.name=a\\,b\\=c\\\\,status.phase!=Failed"
        );
        assert!(
            sel.matches(&json!({"metadata": {"name": "a,b=c\\"}, "status": {"phase": "Running"}}))
        );
        assert!(
            !sel.matches(&json!({"metadata": {"name": "a,b=c\\"}, "status": {"phase": "Failed"}}))
        );
        assert!(sel.matches(&json!({"metadata": {"name": "a,b=c\\"}})));

        let double = FieldSelector::parse("spec.nodeName==n1");
        assert!(matches!(&double, Ok(s) if s.exact("spec.nodeName") == Some("n1")));

        let missing = FieldSelector::parse("spec.nodeName=");
        let missing = match missing {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert!(missing.matches(&json!({"spec": {}})));
        assert!(missing.matches(&json!({})));
        assert!(!missing.matches(&json!({"spec": {"nodeName": "n"}})));

        let typed = FieldSelector::parse("spec.hostNetwork=true,count=3,type!=");
        let typed = match typed {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert!(
            typed.matches(&json!({"spec": {"hostNetwork": true}, "count": 3, "type": "Normal"}))
        );
        assert!(
            !typed.matches(&json!({"spec": {"hostNetwork": false}, "count": 3, "type": "Normal"}))
        );

        for empty in ["", ",", ",,", "="] {
            assert!(
                matches!(FieldSelector::parse(empty), Ok(s) if s.is_empty()),
                "{empty:?}"
            );
        }
        assert!(matches!(FieldSelector::parse("=b"), Ok(s) if s.exact("") == Some("b")));
        assert!(matches!(FieldSelector::parse("a!="), Ok(s) if s.fields().count() == 1));
    }

    #[test]
    fn field_selector_errors() {
        assert!(matches!(
            FieldSelector::parse("a=b,nope"),
            Err(SelectorError::FieldTerm { term, .. }) if term == "nope"
        ));
        assert!(matches!(
            FieldSelector::parse("a=b\\x"),
            Err(SelectorError::InvalidEscape { sequence, .. }) if sequence == "\\x"
        ));
        assert!(matches!(
            FieldSelector::parse("a=b\\"),
            Err(SelectorError::InvalidEscape { sequence, .. }) if sequence == "\\"
        ));
        assert!(matches!(
            FieldSelector::parse("a=b=c"),
            Err(SelectorError::UnescapedCharacter { character: '=', .. })
        ));
        // An escaped comma does not split terms.
        assert!(matches!(FieldSelector::parse("a=x\\,y"), Ok(s) if s.exact("a") == Some("x,y")));
    }

    #[test]
    fn escape_round_trips() {
        for value in ["", "plain", "a,b", "a=b", "back\\slash", "\\,=\\"] {
            let text = format!("f={}", escape_value(value));
            match FieldSelector::parse(&text) {
                Ok(s) => assert_eq!(s.exact("f"), Some(value)),
                Err(e) => panic!("{text}: {e}"),
            }
        }
    }

    /// A cheap deterministic generator so the no-panic sweep is reproducible.
    fn sweep(alphabet: &[&str], rounds: usize, mut check: impl FnMut(&str)) {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..rounds {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 12) as usize;
            let mut s = String::new();
            let mut x = state;
            for _ in 0..len {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                s.push_str(alphabet[(x >> 33) as usize % alphabet.len()]);
            }
            check(&s);
        }
    }

    #[test]
    fn parsers_never_panic_and_canonical_forms_reparse() {
        let alphabet = [
            "a", "b", "1", "=", "!", "(", ")", ",", " ", "in", "notin", ">", "<", "\\", "-", ".",
            "/", "é", "\0", "_",
        ];
        sweep(&alphabet, 20_000, |s| {
            if let Ok(sel) = LabelSelector::parse(s) {
                let printed = sel.to_string();
                match LabelSelector::parse(&printed) {
                    Ok(again) => assert_eq!(again.to_string(), printed, "{s:?}"),
                    Err(e) => panic!("{s:?} printed as {printed:?} which fails: {e}"),
                }
            }
            if let Ok(sel) = FieldSelector::parse(s) {
                let printed = sel.to_string();
                match FieldSelector::parse(&printed) {
                    Ok(again) => assert_eq!(again, sel, "{s:?}"),
                    Err(e) => panic!("{s:?} printed as {printed:?} which fails: {e}"),
                }
                let _ = sel.matches(&json!({"a": {"b": [1]}}));
            }
        });
    }
}
