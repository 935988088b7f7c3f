//! Typed instructions (BuildKit's `frontend/dockerfile/instructions`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ast::{parse_heredoc_word, Heredoc, Node};
use super::flags::{self, Kind};
use super::mount::Mount;
use super::util::{go_quote, parse_go_duration, parse_go_i32, with_suggestion};

/// An instruction of a stage, with its location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instruction {
    /// First line of the instruction (1-based).
    pub line: usize,
    /// Last line, including continuation lines and heredoc bodies.
    pub end_line: usize,
    /// The instruction text: continuation lines joined, heredoc bodies
    /// excluded (what BuildKit shows in progress output).
    pub original: String,
    /// What it does.
    pub kind: InstructionKind,
}

/// The instructions that can appear in a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstructionKind {
    /// `RUN`.
    Run(Run),
    /// `CMD`.
    Cmd(CommandLine),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine),
    /// `SHELL ["executable", "parameters"]` (JSON form only).
    Shell(Vec<String>),
    /// `COPY`.
    Copy(Copy),
    /// `ADD`.
    Add(Add),
    /// `EXPOSE` ports as written (unexpanded), sorted as BuildKit sorts them.
    Expose(Vec<String>),
    /// `ENV` pairs (unexpanded).
    Env(Vec<KeyValue>),
    /// `ARG` definitions (unexpanded).
    Arg(Vec<ArgDef>),
    /// `WORKDIR` path (unexpanded).
    Workdir(String),
    /// `USER` (unexpanded).
    User(String),
    /// `LABEL` pairs (unexpanded).
    Label(Vec<KeyValue>),
    /// `VOLUME` paths (unexpanded).
    Volume(Vec<String>),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `ONBUILD`.
    Onbuild(Onbuild),
    /// `STOPSIGNAL` (unexpanded).
    StopSignal(String),
    /// `MAINTAINER` (deprecated).
    Maintainer(String),
}

impl InstructionKind {
    /// The instruction keyword, upper case.
    pub fn name(&self) -> &'static str {
        match self {
            InstructionKind::Run(_) => "RUN",
            InstructionKind::Cmd(_) => "CMD",
            InstructionKind::Entrypoint(_) => "ENTRYPOINT",
            InstructionKind::Shell(_) => "SHELL",
            InstructionKind::Copy(_) => "COPY",
            InstructionKind::Add(_) => "ADD",
            InstructionKind::Expose(_) => "EXPOSE",
            InstructionKind::Env(_) => "ENV",
            InstructionKind::Arg(_) => "ARG",
            InstructionKind::Workdir(_) => "WORKDIR",
            InstructionKind::User(_) => "USER",
            InstructionKind::Label(_) => "LABEL",
            InstructionKind::Volume(_) => "VOLUME",
            InstructionKind::Healthcheck(_) => "HEALTHCHECK",
            InstructionKind::Onbuild(_) => "ONBUILD",
            InstructionKind::StopSignal(_) => "STOPSIGNAL",
            InstructionKind::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// The command of `RUN`, `CMD`, `ENTRYPOINT` or `HEALTHCHECK CMD`.
///
/// BuildKit's rule: the arguments are the exec form when they parse as a JSON
/// array of strings (`["a", "b"]`); a JSON array holding anything else is an
/// error; everything else, including malformed JSON such as `[a, b]`, is the
/// shell form and runs as `<shell> -c "<string>"`. An instruction with no
/// arguments gives `Shell("")`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandLine {
    /// JSON array form: run directly, no shell, no expansion.
    Exec(Vec<String>),
    /// Shell form: the text is handed to the shell (`SHELL`, default
    /// `/bin/sh -c`).
    Shell(String),
}

/// `--network=` of `RUN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// The default network.
    #[default]
    Default,
    /// No network.
    None,
    /// The host's network.
    Host,
}

/// `--security=` of `RUN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    /// The default sandbox.
    #[default]
    Sandbox,
    /// `--security=insecure`.
    Insecure,
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The command. With heredocs it is the shell-form line that names them
    /// (e.g. `<<EOF` or `python3 <<EOF`).
    pub command: CommandLine,
    /// Heredocs of the instruction, in order.
    pub heredocs: Vec<Heredoc>,
    /// `--mount=` flags, in order.
    pub mounts: Vec<Mount>,
    /// `--network=`.
    pub network: NetworkMode,
    /// `--security=`.
    pub security: SecurityMode,
    /// `--device=` values, unparsed (CDI devices; kiln does not support them).
    pub devices: Vec<String>,
}

/// A source of `COPY`/`ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopySource {
    /// A path or URL (unexpanded).
    Path(String),
    /// An inline file: `name` is the file name, [`Heredoc::data`] its
    /// contents.
    Heredoc(Heredoc),
}

/// `COPY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    /// Sources in order (unexpanded).
    pub sources: Vec<CopySource>,
    /// Destination (unexpanded).
    pub dest: String,
    /// `--from=` stage name, index or image.
    pub from: Option<String>,
    /// `--chown=`.
    pub chown: Option<String>,
    /// `--chmod=`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude=` patterns.
    pub excludes: Vec<String>,
}

/// `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Add {
    /// Sources in order (unexpanded): paths, URLs, git repositories, heredocs.
    pub sources: Vec<CopySource>,
    /// Destination (unexpanded).
    pub dest: String,
    /// `--chown=`.
    pub chown: Option<String>,
    /// `--chmod=`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--checksum=`.
    pub checksum: Option<String>,
    /// `--keep-git-dir[=bool]`, `None` when not given.
    pub keep_git_dir: Option<bool>,
    /// `--unpack[=bool]`, `None` when not given.
    pub unpack: Option<bool>,
    /// `--exclude=` patterns.
    pub excludes: Vec<String>,
}

/// A `key=value` of `ENV` or `LABEL`. Both parts are raw: quotes and escapes
/// are still in them and are removed by expansion
/// ([`crate::dockerfile::expand_word`]), which the builder must apply even
/// when there is no variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// Name.
    pub key: String,
    /// Value.
    pub value: String,
}

/// One name of an `ARG`, with its default (raw, like [`KeyValue`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgDef {
    /// Name.
    pub name: String,
    /// `ARG name=default`.
    pub default: Option<String>,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    /// `HEALTHCHECK [options] CMD command`. Durations of zero (or not given)
    /// are `None`, meaning "use the default".
    Cmd {
        /// The probe (`CMD-SHELL` in the image config for the shell form).
        command: CommandLine,
        /// `--interval=`.
        interval: Option<Duration>,
        /// `--timeout=`.
        timeout: Option<Duration>,
        /// `--start-period=`.
        start_period: Option<Duration>,
        /// `--start-interval=`.
        start_interval: Option<Duration>,
        /// `--retries=`.
        retries: Option<u32>,
    },
}

/// `ONBUILD <instruction>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Onbuild {
    /// The trigger text stored in the image config (heredoc bodies appended
    /// as BuildKit does).
    pub expression: String,
    /// The trigger, parsed.
    pub instruction: Box<Instruction>,
}

/// A `FROM` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct From {
    pub base: String,
    pub name: Option<String>,
    pub platform: Option<String>,
}

pub(crate) enum Converted {
    From(From),
    Instruction(Instruction),
}

const INSTRUCTION_NAMES: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

fn at_least_one(cmd: &str) -> String {
    format!("{cmd} requires at least one argument")
}

fn exactly_one(cmd: &str) -> String {
    format!("{cmd} requires exactly one argument")
}

fn no_destination(cmd: &str) -> String {
    format!("{cmd} requires at least two arguments, but only one was provided. Destination could not be determined")
}

fn command_line(node: &Node) -> CommandLine {
    if node.json {
        CommandLine::Exec(node.args.clone())
    } else {
        CommandLine::Shell(node.args.join(" "))
    }
}

fn key_values(args: &[String], cmd: &str) -> Result<Vec<KeyValue>, String> {
    if args.is_empty() {
        return Err(at_least_one(cmd));
    }
    if !args.len().is_multiple_of(3) {
        return Err(format!("Bad input to {cmd}, too many arguments"));
    }
    args.chunks(3)
        .map(|c| {
            if c[0].is_empty() {
                Err(format!("{cmd} names can not be blank"))
            } else {
                Ok(KeyValue {
                    key: c[0].clone(),
                    value: c[1].clone(),
                })
            }
        })
        .collect()
}

fn sources_and_dest(
    node: &Node,
    heredocs: &[Heredoc],
    cmd: &str,
) -> Result<(Vec<CopySource>, String), String> {
    let (dest, srcs) = match node.args.split_last() {
        Some(x) => x,
        None => return Err(no_destination(cmd)),
    };
    if let Ok(Some(_)) = parse_heredoc_word(dest) {
        return Err(format!("{cmd} cannot accept a heredoc as a destination"));
    }
    let sources = srcs
        .iter()
        .map(|src| match parse_heredoc_word(src) {
            Ok(Some(m)) => {
                let content = heredocs
                    .iter()
                    .rev()
                    .find(|h| h.name == m.name)
                    .map(|h| h.content.clone())
                    .unwrap_or_default();
                CopySource::Heredoc(Heredoc {
                    name: m.name,
                    content,
                    expand: m.expand,
                    chomp: m.chomp,
                    fd: m.fd,
                })
            }
            _ => CopySource::Path(src.clone()),
        })
        .collect();
    Ok((sources, dest.clone()))
}

fn interval(flags: &flags::Flags, name: &str) -> Result<Option<Duration>, String> {
    let Some(s) = flags.str(name) else {
        return Ok(None);
    };
    let d = parse_go_duration(&s)?;
    if d == 0 {
        return Ok(None);
    }
    if d < 1_000_000 {
        return Err(format!(
            "Interval {} cannot be less than 1ms",
            go_quote(name)
        ));
    }
    let d = u64::try_from(d).map_err(|_| format!("time: invalid duration {}", go_quote(&s)))?;
    Ok(Some(Duration::from_nanos(d)))
}

/// Turn a node into a typed instruction (or a `FROM`). `heredocs` are the
/// heredocs of the enclosing node (for an `ONBUILD` trigger, its parent's).
pub(crate) fn convert(node: &Node, heredocs: &[Heredoc]) -> Result<Converted, String> {
    let args = &node.args;
    let no_flags = || flags::parse(&node.flags, &[]);
    let kind = match node.command.to_lowercase().as_str() {
        "env" => {
            no_flags()?;
            InstructionKind::Env(key_values(args, "ENV")?)
        }
        "maintainer" => {
            if args.len() != 1 {
                return Err(exactly_one("MAINTAINER"));
            }
            no_flags()?;
            InstructionKind::Maintainer(args[0].clone())
        }
        "label" => {
            no_flags()?;
            InstructionKind::Label(key_values(args, "LABEL")?)
        }
        "add" => {
            if args.len() < 2 {
                return Err(no_destination("ADD"));
            }
            let f = flags::parse(
                &node.flags,
                &[
                    ("chown", Kind::Str),
                    ("chmod", Kind::Str),
                    ("link", Kind::Bool),
                    ("keep-git-dir", Kind::Bool),
                    ("checksum", Kind::Str),
                    ("unpack", Kind::Bool),
                    ("exclude", Kind::Strs),
                ],
            )?;
            let (sources, dest) = sources_and_dest(node, heredocs, "ADD")?;
            InstructionKind::Add(Add {
                sources,
                dest,
                chown: f.str("chown"),
                chmod: f.str("chmod"),
                link: f.bool("link"),
                checksum: f.str("checksum"),
                keep_git_dir: f.opt_bool("keep-git-dir"),
                unpack: f.opt_bool("unpack"),
                excludes: f.list("exclude"),
            })
        }
        "copy" => {
            if args.len() < 2 {
                return Err(no_destination("COPY"));
            }
            let f = flags::parse(
                &node.flags,
                &[
                    ("chown", Kind::Str),
                    ("from", Kind::Str),
                    ("chmod", Kind::Str),
                    ("link", Kind::Bool),
                    ("exclude", Kind::Strs),
                    ("parents", Kind::Bool),
                ],
            )?;
            let (sources, dest) = sources_and_dest(node, heredocs, "COPY")?;
            InstructionKind::Copy(Copy {
                sources,
                dest,
                from: f.str("from"),
                chown: f.str("chown"),
                chmod: f.str("chmod"),
                link: f.bool("link"),
                parents: f.bool("parents"),
                excludes: f.list("exclude"),
            })
        }
        "from" => {
            let name = match args.len() {
                3 if args[1].eq_ignore_ascii_case("as") => {
                    let name = args[2].to_lowercase();
                    if !valid_stage_name(&name) {
                        return Err(format!(
                            "invalid name for build stage: {}, name can't start with a number or contain symbols",
                            go_quote(&args[2])
                        ));
                    }
                    Some(name)
                }
                1 => None,
                _ => return Err("FROM requires either one or three arguments".into()),
            };
            let f = flags::parse(&node.flags, &[("platform", Kind::Str)])?;
            return Ok(Converted::From(From {
                base: args[0].clone(),
                name,
                platform: f.str("platform"),
            }));
        }
        "onbuild" => {
            let Some(child) = node.child.as_deref() else {
                return Err(at_least_one("ONBUILD"));
            };
            no_flags()?;
            let trigger = child
                .command
                .trim_matches(super::util::is_space)
                .to_uppercase();
            match trigger.as_str() {
                "ONBUILD" => {
                    return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into())
                }
                "MAINTAINER" | "FROM" => {
                    return Err(format!("{trigger} isn't allowed as an ONBUILD trigger"))
                }
                _ => {}
            }
            let mut expression = strip_onbuild(&node.original).to_string();
            for h in heredocs {
                expression.push('\n');
                expression.push_str(&h.content);
                expression.push_str(&h.name);
            }
            let Converted::Instruction(inner) = convert(child, heredocs)? else {
                return Err("FROM isn't allowed as an ONBUILD trigger".into());
            };
            InstructionKind::Onbuild(Onbuild {
                expression,
                instruction: Box::new(inner),
            })
        }
        "workdir" => {
            if args.len() != 1 {
                return Err(exactly_one("WORKDIR"));
            }
            no_flags()?;
            InstructionKind::Workdir(args[0].clone())
        }
        "run" => {
            let f = flags::parse(
                &node.flags,
                &[
                    ("device", Kind::Strs),
                    ("mount", Kind::Strs),
                    ("network", Kind::Str),
                    ("security", Kind::Str),
                ],
            )?;
            let command = command_line(node);
            let mounts = f
                .list("mount")
                .iter()
                .map(|m| Mount::parse(m))
                .collect::<Result<Vec<_>, _>>()?;
            let network = match f.str("network").as_deref().unwrap_or("default") {
                "default" => NetworkMode::Default,
                "none" => NetworkMode::None,
                "host" => NetworkMode::Host,
                other => return Err(format!("invalid network mode {}", go_quote(other))),
            };
            let security = match f.str("security").as_deref().unwrap_or("sandbox") {
                "sandbox" => SecurityMode::Sandbox,
                "insecure" => SecurityMode::Insecure,
                other => return Err(format!("security {} is not valid", go_quote(other))),
            };
            InstructionKind::Run(Run {
                command,
                heredocs: heredocs.to_vec(),
                mounts,
                network,
                security,
                devices: f.list("device"),
            })
        }
        "cmd" => {
            no_flags()?;
            InstructionKind::Cmd(command_line(node))
        }
        "entrypoint" => {
            no_flags()?;
            InstructionKind::Entrypoint(command_line(node))
        }
        "healthcheck" => {
            let Some(typ) = args.first() else {
                return Err(at_least_one("HEALTHCHECK"));
            };
            let typ = typ.to_uppercase();
            if typ == "NONE" {
                if args.len() != 1 {
                    return Err("HEALTHCHECK NONE takes no arguments".into());
                }
                InstructionKind::Healthcheck(Healthcheck::None)
            } else {
                let f = flags::parse(
                    &node.flags,
                    &[
                        ("interval", Kind::Str),
                        ("timeout", Kind::Str),
                        ("start-period", Kind::Str),
                        ("start-interval", Kind::Str),
                        ("retries", Kind::Str),
                    ],
                )?;
                if typ != "CMD" {
                    return Err(format!(
                        "Unknown type {} in HEALTHCHECK (try CMD)",
                        go_quote(&typ)
                    ));
                }
                let cmd = &args[1..];
                if cmd.is_empty() {
                    return Err("Missing command after HEALTHCHECK CMD".into());
                }
                let command = if node.json {
                    CommandLine::Exec(cmd.to_vec())
                } else {
                    CommandLine::Shell(cmd.join(" "))
                };
                let interval_v = interval(&f, "interval")?;
                let timeout = interval(&f, "timeout")?;
                let start_period = interval(&f, "start-period")?;
                let start_interval = interval(&f, "start-interval")?;
                let retries = match f.str("retries") {
                    None => None,
                    Some(r) => {
                        let n = parse_go_i32(&r)?;
                        if n < 0 {
                            return Err(format!("--retries cannot be negative ({n})"));
                        }
                        Some(n as u32).filter(|&n| n != 0)
                    }
                };
                InstructionKind::Healthcheck(Healthcheck::Cmd {
                    command,
                    interval: interval_v,
                    timeout,
                    start_period,
                    start_interval,
                    retries,
                })
            }
        }
        "expose" => {
            if args.is_empty() {
                return Err(at_least_one("EXPOSE"));
            }
            no_flags()?;
            let mut ports = args.clone();
            ports.sort();
            InstructionKind::Expose(ports)
        }
        "user" => {
            if args.len() != 1 {
                return Err(exactly_one("USER"));
            }
            no_flags()?;
            InstructionKind::User(args[0].clone())
        }
        "volume" => {
            if args.is_empty() {
                return Err(at_least_one("VOLUME"));
            }
            no_flags()?;
            let mut vols = Vec::with_capacity(args.len());
            for v in args {
                let v = v.trim_matches(super::util::is_space);
                if v.is_empty() {
                    return Err("VOLUME specified can not be an empty string".into());
                }
                vols.push(v.to_string());
            }
            InstructionKind::Volume(vols)
        }
        "stopsignal" => {
            if args.len() != 1 {
                return Err(exactly_one("STOPSIGNAL"));
            }
            InstructionKind::StopSignal(args[0].clone())
        }
        "arg" => {
            if args.is_empty() {
                return Err(at_least_one("ARG"));
            }
            let mut defs = Vec::with_capacity(args.len());
            for a in args {
                match a.split_once('=') {
                    Some(("", _)) => return Err("ARG names can not be blank".into()),
                    Some((k, v)) => defs.push(ArgDef {
                        name: k.to_string(),
                        default: Some(v.to_string()),
                    }),
                    None => defs.push(ArgDef {
                        name: a.clone(),
                        default: None,
                    }),
                }
            }
            InstructionKind::Arg(defs)
        }
        "shell" => {
            no_flags()?;
            if args.is_empty() {
                return Err(at_least_one("SHELL"));
            }
            if !node.json {
                return Err("SHELL requires the arguments to be in JSON form".into());
            }
            InstructionKind::Shell(args.clone())
        }
        _ => {
            return Err(with_suggestion(
                format!("unknown instruction: {}", node.command),
                &node.command,
                INSTRUCTION_NAMES,
                false,
            ))
        }
    };
    Ok(Converted::Instruction(Instruction {
        line: node.start_line,
        end_line: node.end_line,
        original: node.original.clone(),
        kind,
    }))
}

/// `^[a-z][a-z0-9-_.]*$`
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Remove `(?i)^\s*ONBUILD\s*` from an `ONBUILD` line.
fn strip_onbuild(original: &str) -> &str {
    let s = original.trim_start_matches(super::util::is_re_space);
    match s.get(..7) {
        Some(kw) if kw.eq_ignore_ascii_case("onbuild") => {
            s[7..].trim_start_matches(super::util::is_re_space)
        }
        _ => original,
    }
}
