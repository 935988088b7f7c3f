//! The parse error type.

/// A Dockerfile that cannot be parsed. Displays as `line N: message`; the
/// caller prepends the file name (`Dockerfile:line 3: ...` or however it
/// formats locations).
///
/// Messages follow BuildKit's wording where BuildKit has one, e.g.
/// `unknown instruction: RUNN (did you mean RUN?)`,
/// `FROM requires either one or three arguments`,
/// `ENV names can not be blank`,
/// `COPY requires at least two arguments, but only one was provided. Destination could not be determined`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number: the first line of the offending instruction.
    pub line: usize,
    /// What was wrong.
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(line: usize, message: impl Into<String>) -> Self {
        ParseError {
            line,
            message: message.into(),
        }
    }
}
