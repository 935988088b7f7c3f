//! Dockerfile parsing for `kiln build`.
//!
//! [`parse`] reads a Dockerfile into a [`Dockerfile`]: its parser
//! [`Directives`], the global `ARG`s that precede the first `FROM`, and its
//! [`Stage`]s, each a list of typed [`Instruction`]s that carry their line and
//! text. Arguments are kept **unexpanded**; the builder expands them with
//! [`expand_word`] / [`expand_words`] (Docker's variable substitution), using
//! [`expansion_targets`] to know what each instruction expands.
//!
//! The behaviour is BuildKit's (`moby/buildkit`, `frontend/dockerfile/parser`,
//! `instructions` and `shell/lex.go`), re-implemented from reading those
//! sources and the Dockerfile reference, including error messages and a few
//! quirks a Dockerfile may depend on: a blank line does not end a line
//! continuation, `RUN <<- EOF` (space after `<<-`) is not a heredoc, and
//! splitting `a${X:-b}c` into words loses `a` ([`expand_words`]).
//!
//! # Differences from BuildKit
//!
//! - `RUN --mount` options are checked while parsing, for every stage;
//!   BuildKit checks them when it builds the stage. Options that contain `$`
//!   are checked by [`Mount::resolve`] after expansion.
//! - An `ONBUILD` trigger is parsed and checked like any instruction;
//!   BuildKit only rejects `ONBUILD`, `FROM` and `MAINTAINER` triggers and
//!   leaves the rest to the child build.
//! - Flags are read character by character; BuildKit reads flag words byte by
//!   byte, which garbles non-ASCII values such as `--chown=josé`.
//! - Error lines are always 1-based lines of the file (BuildKit reports
//!   directive errors 0-based), and `unterminated heredoc` names the
//!   delimiter.
//! - No 64 KiB line limit; `${...}` nested deeper than 200 levels and
//!   `ONBUILD` chains deeper than 64 are refused instead of recursing without
//!   bound.
//! - JSON arrays are read by `serde_json`: a lone surrogate escape
//!   (`"\ud800"`) makes the line shell form where Go substitutes U+FFFD.
//! - Variable names use Rust's Alphabetic/Numeric properties for non-ASCII
//!   characters where Go uses the L and Nd categories.
//! - `RUN --device` values are kept as written, not validated.
//! - Among equally close "did you mean" suggestions the alphabetically first
//!   is chosen (BuildKit's choice depends on map order).
//! - Linter warnings (`# check=`) are not produced.
//!
//! # Why not an existing crate
//!
//! The crates.io Dockerfile parsers were evaluated before writing this one:
//!
//! - `parse-dockerfile` (0.1.9, maintained) is the closest, but it recognises
//!   a `RUN` heredoc only when `<<` is the very first thing of the command and
//!   keeps only one ("TODO: multiple here-docs" in its source), so
//!   `RUN <<A <<B`, `RUN python3 <<EOF` and `RUN cat <<EOF > f` all fail with
//!   "unknown instruction" on the heredoc body; its `HereDoc` has no name, so
//!   `COPY <<a.txt /dst/` loses the file name; flags are raw strings (no mount
//!   parsing) and there is no variable substitution.
//! - `dockerfile-parser` (HPE, 0.9.0, pest grammar) has no heredoc support.
//! - `dockerfile-parser-rs` (3.4.0) only knows the literal `<<EOF` delimiter
//!   and joins heredoc lines with spaces.
//!
//! None could be fixed from the outside, and each would still need our own
//! substitution, mount and stage logic, so this module is self-contained
//! (dependencies: `serde`, `serde_json` for JSON arrays, `thiserror`).
//!
//! # Example
//!
//! ```
//! use kiln_build::dockerfile::{parse, InstructionKind, CommandLine};
//!
//! let df = parse("FROM python:3.9-slim\nWORKDIR /app\nCMD [\"python\", \"app.py\"]\n").unwrap();
//! let stage = &df.stages[0];
//! assert_eq!(stage.base, "python:3.9-slim");
//! assert_eq!(stage.instructions[1].line, 3);
//! assert_eq!(
//!     stage.instructions[1].kind,
//!     InstructionKind::Cmd(CommandLine::Exec(vec!["python".into(), "app.py".into()]))
//! );
//! ```

pub mod ast;
mod directives;
mod error;
mod flags;
mod instructions;
mod mount;
mod pattern;
pub mod shell;
mod util;

use serde::{Deserialize, Serialize};

pub use ast::Heredoc;
pub use directives::Directives;
pub use error::ParseError;
pub use instructions::{
    Add, ArgDef, CommandLine, Copy, CopySource, Healthcheck, Instruction, InstructionKind,
    KeyValue, NetworkMode, Onbuild, Run, SecurityMode,
};
pub use mount::{Mount, MountType, Sharing};
pub use shell::{
    expand_heredoc, expand_word, expand_words, expands_variables, expansion_targets, EmptyEnv, Env,
    ExpandError, Lexer,
};

use instructions::Converted;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dockerfile {
    /// Parser directives from the top of the file.
    pub directives: Directives,
    /// `ARG`s before the first `FROM`; only these can be used in `FROM` lines
    /// (and re-imported into a stage by a bare `ARG name`).
    pub global_args: Vec<GlobalArg>,
    /// Build stages in file order.
    pub stages: Vec<Stage>,
}

/// An `ARG` before the first `FROM`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalArg {
    /// Name.
    pub name: String,
    /// Default value, raw (expand it with the global args defined before it).
    pub default: Option<String>,
    /// Line of the `ARG` instruction.
    pub line: usize,
}

/// A build stage: a `FROM` and the instructions up to the next `FROM`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// `AS name`, lower-cased (stage names are case-insensitive).
    pub name: Option<String>,
    /// The base image, stage name or `scratch`, unexpanded (may contain
    /// global `ARG`s).
    pub base: String,
    /// `--platform=`, unexpanded.
    pub platform: Option<String>,
    /// Instructions of the stage.
    pub instructions: Vec<Instruction>,
    /// Line of the `FROM`.
    pub line: usize,
    /// The `FROM` instruction's text.
    pub original: String,
}

impl Stage {
    /// Whether the stage starts from the empty image.
    pub fn is_scratch(&self) -> bool {
        self.base.eq_ignore_ascii_case("scratch")
    }
}

impl Dockerfile {
    /// Find a stage by name (case-insensitive) or index, as `COPY --from`
    /// and `FROM <stage>` refer to them.
    pub fn stage(&self, name_or_index: &str) -> Option<&Stage> {
        let lower = name_or_index.to_lowercase();
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
            .or_else(|| {
                name_or_index
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| self.stages.get(i))
            })
    }
}

impl std::str::FromStr for Dockerfile {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// Parse a Dockerfile.
///
/// Errors carry the 1-based line of the offending instruction and BuildKit's
/// message, e.g. `line 3: unknown instruction: RUNN (did you mean RUN?)`.
/// A file with no instructions, instructions other than `ARG` before the
/// first `FROM`, and a file without any `FROM` are errors, as in BuildKit.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let ast = ast::parse_ast(text)?;
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    let mut last_line = 1;
    for node in &ast.nodes {
        last_line = node.end_line;
        let converted = instructions::convert(node, &node.heredocs)
            .map_err(|m| ParseError::new(node.start_line, m))?;
        match converted {
            Converted::From(f) => stages.push(Stage {
                name: f.name,
                base: f.base,
                platform: f.platform,
                instructions: Vec::new(),
                line: node.start_line,
                original: node.original.trim_matches(util::is_space).to_string(),
            }),
            Converted::Instruction(ins) => match stages.last_mut() {
                Some(stage) => stage.instructions.push(ins),
                None => match ins.kind {
                    InstructionKind::Arg(defs) => {
                        global_args.extend(defs.into_iter().map(|d| GlobalArg {
                            name: d.name,
                            default: d.default,
                            line: ins.line,
                        }));
                    }
                    _ => {
                        return Err(ParseError::new(
                            node.start_line,
                            "no build stage in current context",
                        ))
                    }
                },
            },
        }
    }
    if stages.is_empty() {
        return Err(ParseError::new(
            last_line,
            "dockerfile contains no stages to build",
        ));
    }
    Ok(Dockerfile {
        directives: ast.directives,
        global_args,
        stages,
    })
}

#[cfg(test)]
mod tests;
