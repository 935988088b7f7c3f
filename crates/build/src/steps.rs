//! The steps that change files — `RUN`, `COPY`, `ADD`, `WORKDIR` — in two halves: `plan`
//! expands the instruction and reads its inputs (context files, other stages, downloads)
//! into what its cache key is made of; `execute` carries it out on the step's mounted root.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use kiln_runtime::bundle::{self, Network, RunConfig, Volume};
use kiln_runtime::snapshot;
use sha2::{Digest as _, Sha256};

use crate::dockerfile::{
    expand_heredoc, expand_word, CommandLine, CopySource, Instruction, InstructionKind, Mount,
    MountType, NetworkMode, SecurityMode,
};
use crate::executor::{scope_env, Exec, LayerRef, State};
use crate::fsops::{self, CopyOptions, Owner};
use crate::graph;
use crate::ignore::IgnoreRules;
use crate::progress::StepId;

/// Why a step failed: the message, and the last lines of its output.
pub(crate) struct StepFailure {
    pub message: String,
    pub tail: Vec<String>,
}

impl StepFailure {
    pub fn message(message: String) -> StepFailure {
        StepFailure {
            message,
            tail: Vec::new(),
        }
    }
}

/// Lines of a failing step's output kept for the error report.
const TAIL_LINES: usize = 20;

/// Where a `COPY`/`ADD` source comes from.
enum Source {
    /// Paths of the build context (relative to its root).
    Context(Vec<String>),
    /// A path in another stage or image.
    Layers { layers: Vec<LayerRef>, path: String },
    /// An inline file (`COPY <<EOF`) or a downloaded `ADD` source.
    Inline {
        name: String,
        data: Vec<u8>,
        mode: u32,
    },
}

enum Kind {
    Workdir(String),
    Copy {
        sources: Vec<Source>,
        dest: String,
        dest_is_dir: bool,
        chown: Option<String>,
        chmod: Option<u32>,
        unpack_archives: bool,
        /// `--exclude` patterns, matched (with `.dockerignore` rules) against paths below
        /// each source.
        excludes: IgnoreRules,
        /// `--parents`: context sources keep their path below the destination.
        parents: bool,
    },
    Run {
        argv: Vec<String>,
        env: Vec<String>,
        network: Network,
        mounts: Vec<Mount>,
    },
}

pub(crate) struct Planned {
    /// Everything besides the instruction text that decides the step's result.
    pub key_inputs: Vec<String>,
    /// The working directory the step sets (`WORKDIR`).
    pub workdir: Option<String>,
    kind: Kind,
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// `path` made absolute against the working directory, with `.` and `..` resolved.
fn absolute(workdir: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", workdir.trim_end_matches('/'))
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

pub(crate) fn plan(
    exec: &Exec<'_>,
    ins: &Instruction,
    state: &State,
    args: &[(String, String)],
) -> Result<Planned, String> {
    let env = scope_env(state, args);
    let esc = exec.escape();
    let expand = |w: &str| expand_word(w, &env, esc).map_err(|e| e.to_string());
    match &ins.kind {
        InstructionKind::Workdir(p) => {
            let path = absolute(&state.config.working_dir(), &expand(p)?);
            Ok(Planned {
                key_inputs: vec![path.clone()],
                workdir: Some(path.clone()),
                kind: Kind::Workdir(path),
            })
        }
        InstructionKind::Copy(c) => plan_copy(
            exec,
            ins,
            state,
            &env,
            CopyParts {
                sources: &c.sources,
                excludes: &c.excludes,
                parents: c.parents,
                dest: &c.dest,
                from: c.from.as_deref(),
                chown: c.chown.as_deref(),
                chmod: c.chmod.as_deref(),
                add: false,
            },
        ),
        InstructionKind::Add(a) => {
            if a.checksum.is_some() || a.keep_git_dir.is_some() {
                return Err("ADD --checksum and --keep-git-dir are not supported".into());
            }
            plan_copy(
                exec,
                ins,
                state,
                &env,
                CopyParts {
                    sources: &a.sources,
                    excludes: &a.excludes,
                    parents: false,
                    dest: &a.dest,
                    from: None,
                    chown: a.chown.as_deref(),
                    chmod: a.chmod.as_deref(),
                    add: a.unpack != Some(false),
                },
            )
        }
        InstructionKind::Run(r) => {
            if r.security == SecurityMode::Insecure {
                return Err("RUN --security=insecure is not supported".into());
            }
            if !r.devices.is_empty() {
                return Err("RUN --device is not supported".into());
            }
            let shell = state.config.shell();
            let argv: Vec<String> = match &r.command {
                CommandLine::Exec(a) => a.clone(),
                CommandLine::Shell(cmd) => {
                    let script = run_script(cmd, &r.heredocs, &env)?;
                    shell.into_iter().chain([script]).collect()
                }
            };
            if argv.is_empty() {
                return Err("RUN needs a command".into());
            }
            let mut key_inputs = vec![serde_json::to_string(&argv).unwrap_or_default()];
            let mut mounts = Vec::new();
            for m in &r.mounts {
                let mut expander = |w: &str| expand_word(w, &env, esc).map_err(|e| e.to_string());
                let m = m.resolve(&mut expander)?;
                key_inputs.push(m.raw.clone());
                if m.kind == MountType::Bind {
                    match &m.from {
                        Some(from) => key_inputs.push(from_key(exec, ins, from)?),
                        None => {
                            let src = m.source.clone().unwrap_or_else(|| ".".into());
                            let rels = exec.ctx.resolve(&src).map_err(|e| e.to_string())?;
                            key_inputs.push(exec.ctx.digest(&rels).map_err(|e| e.to_string())?);
                        }
                    }
                }
                mounts.push(m);
            }
            // Build arguments are the step's environment too, unless ENV set the name.
            let config_env = state.config.env();
            let run_env: Vec<String> = args
                .iter()
                .filter(|(k, _)| !config_env.iter().any(|(e, _)| e == k))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            key_inputs.extend(run_env.iter().cloned());
            let network = match r.network {
                NetworkMode::None => Network::None,
                NetworkMode::Default | NetworkMode::Host => Network::Host,
            };
            key_inputs.push(format!("network={:?}", r.network));
            Ok(Planned {
                key_inputs,
                workdir: None,
                kind: Kind::Run {
                    argv,
                    env: run_env,
                    network,
                    mounts,
                },
            })
        }
        other => Err(format!("{} does not change files", other.name())),
    }
}

/// The shell script of a shell-form `RUN`: the command, with its heredocs. A lone heredoc
/// is the script itself; otherwise the shell reads the heredocs as written.
fn run_script(
    cmd: &str,
    heredocs: &[crate::dockerfile::Heredoc],
    env: &[(String, String)],
) -> Result<String, String> {
    if heredocs.is_empty() {
        return Ok(cmd.to_string());
    }
    let body = |h: &crate::dockerfile::Heredoc| -> Result<String, String> {
        if h.expand {
            expand_heredoc(&h.data(), &env.to_vec()).map_err(|e| e.to_string())
        } else {
            Ok(h.data())
        }
    };
    let trimmed = cmd.trim();
    if heredocs.len() == 1 && trimmed.starts_with("<<") && !trimmed.contains(char::is_whitespace) {
        // BuildKit runs a lone heredoc as the script (the shell expands it at run time).
        return Ok(heredocs[0].data());
    }
    let mut script = cmd.to_string();
    script.push('\n');
    for h in heredocs {
        let _ = body(h)?;
        script.push_str(&h.content);
        if !h.content.ends_with('\n') && !h.content.is_empty() {
            script.push('\n');
        }
        script.push_str(&h.name);
        script.push('\n');
    }
    Ok(script)
}

struct CopyParts<'a> {
    sources: &'a [CopySource],
    excludes: &'a [String],
    parents: bool,
    dest: &'a str,
    from: Option<&'a str>,
    chown: Option<&'a str>,
    chmod: Option<&'a str>,
    add: bool,
}

/// The layers of the stage or image a `--from` names.
fn from_layers(
    exec: &Exec<'_>,
    ins: &Instruction,
    from: &str,
) -> Result<(Vec<LayerRef>, String), String> {
    // Stages are in file order: the instruction belongs to the last one that starts
    // before it (an ONBUILD trigger carries its stage's FROM line).
    let index = exec
        .df
        .stages
        .iter()
        .rposition(|s| s.line <= ins.line)
        .unwrap_or(0);
    if let Some(i) = graph::stage_index(exec.df, index, from) {
        let state = exec
            .stage_result(i)
            .ok_or_else(|| format!("stage {from:?} was not built"))?;
        return Ok((state.layers, state.key));
    }
    let image = exec.bases.resolve(from, &exec.opts.platform)?;
    let state = crate::executor::state_of_image(&image, image.manifest_digest.to_string())?;
    Ok((state.layers, state.key))
}

fn from_key(exec: &Exec<'_>, ins: &Instruction, from: &str) -> Result<String, String> {
    from_layers(exec, ins, from).map(|(_, key)| key)
}

fn plan_copy(
    exec: &Exec<'_>,
    ins: &Instruction,
    state: &State,
    env: &[(String, String)],
    parts: CopyParts<'_>,
) -> Result<Planned, String> {
    let esc = exec.escape();
    let expand = |w: &str| expand_word(w, &env.to_vec(), esc).map_err(|e| e.to_string());
    let dest_raw = expand(parts.dest)?;
    let mut key_inputs = vec![dest_raw.clone()];
    let mut sources = Vec::new();
    let mut count = 0;
    for src in parts.sources {
        match src {
            CopySource::Heredoc(h) => {
                let data = if h.expand {
                    expand_heredoc(&h.data(), &env.to_vec()).map_err(|e| e.to_string())?
                } else {
                    h.data()
                };
                key_inputs.push(format!(
                    "heredoc:{}:{}",
                    h.name,
                    sha256_hex(data.as_bytes())
                ));
                count += 1;
                sources.push(Source::Inline {
                    name: h.name.clone(),
                    data: data.into_bytes(),
                    mode: 0o644,
                });
            }
            CopySource::Path(p) => {
                let p = expand(p)?;
                if parts.add && (p.starts_with("http://") || p.starts_with("https://")) {
                    let (name, data) = download(&p)?;
                    key_inputs.push(format!("url:{p}:{}", sha256_hex(&data)));
                    count += 1;
                    sources.push(Source::Inline {
                        name,
                        data,
                        mode: 0o600,
                    });
                } else if parts.add && (p.starts_with("git@") || p.ends_with(".git")) {
                    return Err(format!("ADD of a git repository ({p}) is not supported"));
                } else if let Some(from) = parts.from {
                    let (layers, key) = from_layers(exec, ins, from)?;
                    key_inputs.push(format!("from:{key}:{p}"));
                    count += if p.contains(['*', '?', '[']) { 2 } else { 1 };
                    sources.push(Source::Layers { layers, path: p });
                } else {
                    let rels = exec.ctx.resolve(&p).map_err(|e| e.to_string())?;
                    key_inputs.push(format!(
                        "context:{p}:{}",
                        exec.ctx.digest(&rels).map_err(|e| e.to_string())?
                    ));
                    count += rels.len();
                    sources.push(Source::Context(rels));
                }
            }
        }
    }
    let dest_is_dir = dest_raw.ends_with('/')
        || dest_raw == "."
        || dest_raw.ends_with("/.")
        || dest_raw.is_empty();
    if count > 1 && !dest_is_dir {
        return Err(format!(
            "When using {} with more than one source file, the destination must be a directory and end with a /",
            ins.kind.name()
        ));
    }
    let chown = parts.chown.map(expand).transpose()?;
    let chmod = parts
        .chmod
        .map(|c| expand(c).and_then(|c| fsops::parse_chmod(&c)))
        .transpose()?;
    let mut patterns = Vec::new();
    for e in parts.excludes {
        patterns.push(expand(e)?);
    }
    let excludes =
        IgnoreRules::parse(&patterns.join("\n")).map_err(|e| format!("--exclude: {e}"))?;
    key_inputs.push(format!(
        "chown={chown:?} chmod={chmod:?} add={} exclude={patterns:?} parents={}",
        parts.add, parts.parents
    ));
    Ok(Planned {
        key_inputs,
        workdir: None,
        kind: Kind::Copy {
            sources,
            dest: absolute(&state.config.working_dir(), &dest_raw),
            dest_is_dir,
            chown,
            chmod,
            unpack_archives: parts.add,
            excludes,
            parents: parts.parents,
        },
    })
}

/// `ADD <url>`: the body and the file name (the URL path's last segment).
fn download(url: &str) -> Result<(String, Vec<u8>), String> {
    let response = reqwest::blocking::get(url).map_err(|e| format!("ADD {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!(
            "ADD {url}: the server answered {}",
            response.status()
        ));
    }
    let name = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .rsplit('/')
        .find(|s| !s.is_empty() && !s.contains(':'))
        .unwrap_or("index.html")
        .to_string();
    let bytes = response.bytes().map_err(|e| format!("ADD {url}: {e}"))?;
    Ok((name, bytes.to_vec()))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn execute(
    exec: &Exec<'_>,
    id: StepId,
    ins: &Instruction,
    state: &State,
    _args: &[(String, String)],
    planned: &Planned,
    root: &Path,
    dir: &Path,
) -> Result<(), StepFailure> {
    let fail = |m: String| StepFailure::message(m);
    match &planned.kind {
        Kind::Workdir(path) => {
            let target = fsops::resolve_in_root(root, path, true)
                .map_err(|e| fail(format!("{path}: {e}")))?;
            fsops::mkdir_all(&target, 0, 0).map_err(|e| fail(format!("{path}: {e}")))
        }
        Kind::Copy {
            sources,
            dest,
            dest_is_dir,
            chown,
            chmod,
            unpack_archives,
            excludes,
            parents,
        } => {
            let owner = match chown {
                Some(c) => {
                    let (uid, gid, _) =
                        bundle::resolve_user(root, c).map_err(|e| fail(e.to_string()))?;
                    Some((uid, gid))
                }
                None => None,
            };
            for (i, source) in sources.iter().enumerate() {
                copy_source(
                    exec,
                    source,
                    root,
                    &dir.join(format!("from-{i}")),
                    dest,
                    *dest_is_dir,
                    owner,
                    *chmod,
                    *unpack_archives,
                    excludes,
                    *parents,
                )
                .map_err(fail)?;
            }
            Ok(())
        }
        Kind::Run {
            argv,
            env,
            network,
            mounts,
        } => run(exec, id, ins, state, root, dir, argv, env, network, mounts),
    }
}

/// Where a copied item lands: inside `dest` when it is a directory, else `dest` itself.
fn target_path(root: &Path, dest: &str, dest_is_dir: bool, name: &str) -> Result<PathBuf, String> {
    let dest_path = fsops::resolve_in_root(root, dest, true).map_err(|e| format!("{dest}: {e}"))?;
    let into_dir = dest_is_dir || std::fs::metadata(&dest_path).is_ok_and(|m| m.is_dir());
    let target = if into_dir {
        fsops::mkdir_all(&dest_path, 0, 0).map_err(|e| format!("{dest}: {e}"))?;
        fsops::resolve_in_root(root, &format!("{dest}/{name}"), false)
            .map_err(|e| format!("{dest}: {e}"))?
    } else {
        fsops::resolve_in_root(root, dest, false).map_err(|e| format!("{dest}: {e}"))?
    };
    if let Some(parent) = target.parent() {
        fsops::mkdir_all(parent, 0, 0).map_err(|e| format!("{dest}: {e}"))?;
    }
    Ok(target)
}

fn base_name(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
        .to_string()
}

/// Whether a file starts like a tar archive, compressed or not (what `ADD` unpacks).
fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 512];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return false,
        }
    }
    let head = &head[..n];
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (n >= 262 && &head[257..262] == b"ustar")
}

#[allow(clippy::too_many_arguments)]
fn copy_source(
    exec: &Exec<'_>,
    source: &Source,
    root: &Path,
    view: &Path,
    dest: &str,
    dest_is_dir: bool,
    owner: Option<(u32, u32)>,
    chmod: Option<u32>,
    unpack_archives: bool,
    excludes: &IgnoreRules,
    parents: bool,
) -> Result<(), String> {
    match source {
        Source::Inline { name, data, mode } => {
            let target = target_path(root, dest, dest_is_dir, name)?;
            fsops::write_file(
                &target,
                data,
                chmod.unwrap_or(*mode),
                owner.unwrap_or((0, 0)),
                None,
            )
            .map_err(|e| format!("{}: {e}", target.display()))
        }
        Source::Context(rels) => {
            let options = CopyOptions {
                owner: match owner {
                    Some((uid, gid)) => Owner::Set { uid, gid },
                    None => Owner::Set { uid: 0, gid: 0 },
                },
                chmod,
            };
            let ctx_root = exec.ctx.root();
            for rel in rels {
                if excludes.is_ignored(&base_name(rel)) {
                    continue;
                }
                let src = ctx_root.join(rel);
                let meta = std::fs::metadata(&src).map_err(|e| format!("{rel}: {e}"))?;
                // With --parents the source's own path is kept below the destination.
                let dest_owned;
                let dest = if parents {
                    dest_owned = format!(
                        "{}/{}",
                        dest.trim_end_matches('/'),
                        rel.trim_start_matches("./")
                    );
                    if let Some(parent) = Path::new(&dest_owned).parent() {
                        let p = fsops::resolve_in_root(root, &parent.display().to_string(), true)
                            .map_err(|e| format!("{dest_owned}: {e}"))?;
                        fsops::mkdir_all(&p, 0, 0).map_err(|e| format!("{dest_owned}: {e}"))?;
                    }
                    dest_owned.as_str()
                } else {
                    dest
                };
                let dest_is_dir = dest_is_dir && !parents;
                if meta.is_dir() {
                    let top = format!("{}/", rel.trim_end_matches('/'));
                    let entries: Vec<String> = exec
                        .ctx
                        .walk(rel)
                        .map_err(|e| e.to_string())?
                        .into_iter()
                        .filter(|p| match p.strip_prefix(&top) {
                            Some(below) => !excludes.is_ignored(below),
                            None => true,
                        })
                        .collect();
                    let target = fsops::resolve_in_root(root, dest, true)
                        .map_err(|e| format!("{dest}: {e}"))?;
                    if let Some(parent) = target.parent() {
                        fsops::mkdir_all(parent, 0, 0).map_err(|e| format!("{dest}: {e}"))?;
                    }
                    fsops::copy_tree(ctx_root, rel, &entries, &target, &options)
                        .map_err(|e| format!("copying {rel}: {e}"))?;
                } else if unpack_archives && is_archive(&src) {
                    extract(&src, root, dest, owner)?;
                } else {
                    let target = target_path(root, dest, dest_is_dir, &base_name(rel))?;
                    fsops::copy_tree(ctx_root, rel, std::slice::from_ref(rel), &target, &options)
                        .map_err(|e| format!("copying {rel}: {e}"))?;
                }
            }
            Ok(())
        }
        Source::Layers { layers, path } => {
            let lowers = exec.lower_dirs(layers)?;
            snapshot::mount_read_only(&lowers, view).map_err(|e| e.to_string())?;
            let result = copy_from_view(
                view,
                path,
                root,
                CopyTarget {
                    dest,
                    dest_is_dir,
                    owner,
                    chmod,
                },
                excludes,
            );
            let _ = kiln_runtime::snapshot::RootFs::Overlay {
                merged: view.to_path_buf(),
                upper: view.to_path_buf(),
            }
            .unmount();
            result
        }
    }
}

/// Where and how copied files land.
struct CopyTarget<'a> {
    dest: &'a str,
    dest_is_dir: bool,
    owner: Option<(u32, u32)>,
    chmod: Option<u32>,
}

fn copy_from_view(
    view: &Path,
    path: &str,
    root: &Path,
    target: CopyTarget<'_>,
    excludes: &IgnoreRules,
) -> Result<(), String> {
    let CopyTarget {
        dest,
        dest_is_dir,
        owner,
        chmod,
    } = target;
    let options = CopyOptions {
        owner: match owner {
            Some((uid, gid)) => Owner::Set { uid, gid },
            None => Owner::Keep,
        },
        chmod,
    };
    let matches: Vec<String> = if path.contains(['*', '?', '[']) {
        let (dir, pattern) = match path.trim_end_matches('/').rsplit_once('/') {
            Some((d, p)) => (d.to_string(), p.to_string()),
            None => (String::new(), path.to_string()),
        };
        let re = crate::context::glob_regex(&pattern)?;
        let base = fsops::resolve_in_root(view, &dir, true).map_err(|e| format!("{path}: {e}"))?;
        let mut names: Vec<String> = std::fs::read_dir(&base)
            .map_err(|e| format!("{path}: {e}"))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| re.is_match(n))
            .collect();
        names.sort();
        if names.is_empty() {
            return Err(format!(
                "{path}: no source files were specified (nothing matches)"
            ));
        }
        let rel_base = base
            .strip_prefix(view)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        names
            .into_iter()
            .map(|n| {
                if rel_base.is_empty() {
                    n
                } else {
                    format!("{rel_base}/{n}")
                }
            })
            .collect()
    } else {
        let resolved =
            fsops::resolve_in_root(view, path, true).map_err(|e| format!("{path}: {e}"))?;
        if std::fs::symlink_metadata(&resolved).is_err() {
            return Err(format!("{path}: not found"));
        }
        vec![resolved
            .strip_prefix(view)
            .map(|p| p.display().to_string())
            .unwrap_or_default()]
    };
    for rel in matches {
        if excludes.is_ignored(&base_name(&rel)) {
            continue;
        }
        let src = view.join(&rel);
        let meta = std::fs::symlink_metadata(&src).map_err(|e| format!("{rel}: {e}"))?;
        let top = format!("{}/", rel.trim_end_matches('/'));
        let entries: Vec<String> = fsops::walk_all(view, &rel)
            .map_err(|e| format!("{rel}: {e}"))?
            .into_iter()
            .filter(|p| match p.strip_prefix(&top) {
                Some(below) => !excludes.is_ignored(below),
                None => true,
            })
            .collect();
        let target = if meta.is_dir() {
            let t = fsops::resolve_in_root(root, dest, true).map_err(|e| format!("{dest}: {e}"))?;
            if let Some(parent) = t.parent() {
                fsops::mkdir_all(parent, 0, 0).map_err(|e| format!("{dest}: {e}"))?;
            }
            t
        } else {
            target_path(root, dest, dest_is_dir, &base_name(&rel))?
        };
        fsops::copy_tree(view, &rel, &entries, &target, &options)
            .map_err(|e| format!("copying {rel}: {e}"))?;
    }
    Ok(())
}

/// `ADD` of a local archive: its contents unpacked into `dest`.
fn extract(src: &Path, root: &Path, dest: &str, owner: Option<(u32, u32)>) -> Result<(), String> {
    let target = fsops::resolve_in_root(root, dest, true).map_err(|e| format!("{dest}: {e}"))?;
    fsops::mkdir_all(&target, 0, 0).map_err(|e| format!("{dest}: {e}"))?;
    let file = std::fs::File::open(src).map_err(|e| format!("{}: {e}", src.display()))?;
    let tar = kiln_image::transfer::decompressed(src, file).map_err(|e| e.to_string())?;
    let options = kiln_runtime::unpack::Options {
        whiteouts: kiln_runtime::unpack::Whiteouts::Merge,
        devices: kiln_runtime::unpack::Devices::Skip,
        same_owner: owner.is_none(),
    };
    kiln_runtime::unpack::unpack(&target, tar, &options)
        .map_err(|e| format!("extracting {}: {e}", src.display()))?;
    Ok(())
}

/// A mount target that `runc` had to create in the root filesystem (a "stub"): removed
/// after the step unless the step put something in it, so mount points do not end up in
/// the layer.
struct Stub {
    path: PathBuf,
}

/// Records the first missing component of `target` inside `root`.
fn stub_for(root: &Path, target: &str) -> Option<Stub> {
    let mut path = root.to_path_buf();
    for comp in target.split('/').filter(|c| !c.is_empty()) {
        path.push(comp);
        if std::fs::symlink_metadata(&path).is_err() {
            return Some(Stub { path });
        }
    }
    None
}

fn remove_stub(stub: &Stub) {
    // Deepest first: a created chain of empty directories, or an empty file.
    fn prune(p: &Path) {
        if let Ok(meta) = std::fs::symlink_metadata(p) {
            if meta.is_dir() {
                if let Ok(entries) = std::fs::read_dir(p) {
                    for e in entries.flatten() {
                        prune(&e.path());
                    }
                }
                let _ = std::fs::remove_dir(p);
            } else if meta.is_file() && meta.size() == 0 {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    prune(&stub.path);
}

#[allow(clippy::too_many_arguments)]
fn run(
    exec: &Exec<'_>,
    id: StepId,
    ins: &Instruction,
    state: &State,
    root: &Path,
    dir: &Path,
    argv: &[String],
    env: &[String],
    network: &Network,
    mounts: &[Mount],
) -> Result<(), StepFailure> {
    let fail = |m: String| StepFailure::message(m);
    // The working directory exists before the command runs, as in docker.
    let workdir = state.config.working_dir();
    let wd = fsops::resolve_in_root(root, &workdir, true).map_err(|e| fail(e.to_string()))?;
    fsops::mkdir_all(&wd, 0, 0).map_err(|e| fail(format!("{workdir}: {e}")))?;

    let mut volumes: Vec<Volume> = Vec::new();
    let mut tmpfs: Vec<String> = Vec::new();
    let mut views: Vec<PathBuf> = Vec::new();
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )
    .map_err(|e| fail(format!("{}: {e}", hosts.display())))?;
    volumes.push(Volume {
        source: hosts,
        destination: "/etc/hosts".into(),
        read_only: true,
    });
    if Path::new("/etc/resolv.conf").exists() {
        volumes.push(Volume {
            source: PathBuf::from("/etc/resolv.conf"),
            destination: "/etc/resolv.conf".into(),
            read_only: true,
        });
    }
    let mut locks = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        // A secret without a target appears at /run/secrets/<id>, as in BuildKit.
        let target = match (&m.target, m.kind, &m.id) {
            (Some(t), _, _) => t.clone(),
            (None, MountType::Secret, Some(id)) => format!("/run/secrets/{id}"),
            _ => return Err(fail(format!("mount {:?} has no target", m.raw))),
        };
        let target = absolute(&workdir, &target);
        match m.kind {
            MountType::Bind => {
                let source = m.source.clone().unwrap_or_else(|| "/".into());
                let src_dir = match &m.from {
                    Some(from) => {
                        let (layers, _) = from_layers(exec, ins, from).map_err(fail)?;
                        let lowers = exec.lower_dirs(&layers).map_err(fail)?;
                        let view = dir.join(format!("mount-{i}"));
                        snapshot::mount_read_only(&lowers, &view)
                            .map_err(|e| fail(e.to_string()))?;
                        views.push(view.clone());
                        fsops::resolve_in_root(&view, &source, true)
                            .map_err(|e| fail(e.to_string()))?
                    }
                    None => fsops::resolve_in_root(exec.ctx.root(), &source, true)
                        .map_err(|e| fail(e.to_string()))?,
                };
                volumes.push(Volume {
                    source: src_dir,
                    destination: target,
                    read_only: m.readonly,
                });
            }
            MountType::Cache => {
                let cache_id = m.id.clone().unwrap_or_else(|| target.clone());
                let cache_dir = exec.cache_mounts.join(sha256_hex(cache_id.as_bytes()));
                std::fs::create_dir_all(&cache_dir)
                    .map_err(|e| fail(format!("{}: {e}", cache_dir.display())))?;
                let _ = std::os::unix::fs::chown(&cache_dir, m.uid, m.gid);
                if let Some(mode) = m.mode {
                    use std::os::unix::fs::PermissionsExt;
                    let _ =
                        std::fs::set_permissions(&cache_dir, std::fs::Permissions::from_mode(mode));
                }
                if m.sharing == Some(crate::dockerfile::Sharing::Locked) {
                    let lock = std::fs::File::open(&cache_dir)
                        .map_err(|e| fail(format!("{}: {e}", cache_dir.display())))?;
                    lock.lock()
                        .map_err(|e| fail(format!("{}: {e}", cache_dir.display())))?;
                    locks.push(lock);
                }
                volumes.push(Volume {
                    source: cache_dir,
                    destination: target,
                    read_only: m.readonly,
                });
            }
            MountType::Tmpfs => tmpfs.push(target),
            MountType::Secret => {
                let secret_id = m.id.clone().unwrap_or_else(|| base_name(&target));
                match exec.opts.secrets.get(&secret_id) {
                    Some(src) => volumes.push(Volume {
                        source: src.clone(),
                        destination: target,
                        read_only: true,
                    }),
                    None if m.required => {
                        return Err(fail(format!(
                            "secret {secret_id} is required but was not given (--secret id={secret_id},src=PATH)"
                        )))
                    }
                    None => {}
                }
            }
            MountType::Ssh => return Err(fail("RUN --mount=type=ssh is not supported".into())),
        }
    }
    let stubs: Vec<Stub> = volumes
        .iter()
        .map(|v| v.destination.as_str())
        .chain(tmpfs.iter().map(String::as_str))
        .chain(["/proc", "/sys", "/dev", "/etc/hosts", "/etc/resolv.conf"])
        .filter_map(|t| stub_for(root, t))
        .collect();

    let config = state.config.to_oci().map_err(fail)?;
    let run_config = RunConfig {
        entrypoint: Some(argv.to_vec()),
        cmd: Vec::new(),
        env: env.to_vec(),
        workdir: None,
        user: None,
        network: network.clone(),
        terminal: false,
        volumes,
        hostname: "buildkitsandbox".into(),
        rootless: None,
    };
    let no_host_env = |_: &str| None;
    let mut spec =
        bundle::spec(&config, &run_config, root, &no_host_env).map_err(|e| fail(e.to_string()))?;
    if !tmpfs.is_empty() {
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for t in &tmpfs {
            mounts.push(
                oci_spec::runtime::MountBuilder::default()
                    .destination(t)
                    .typ("tmpfs")
                    .source("tmpfs")
                    .options(vec!["nosuid".into(), "nodev".into(), "mode=1777".into()])
                    .build()
                    .map_err(|e| fail(e.to_string()))?,
            );
        }
        spec.set_mounts(Some(mounts));
    }
    let container_id = format!(
        "build-{}-{}",
        std::process::id(),
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let bundle_dir = exec.runtime.bundle_dir(&container_id);
    std::fs::create_dir_all(&bundle_dir)
        .map_err(|e| fail(format!("{}: {e}", bundle_dir.display())))?;
    spec.save(bundle_dir.join("config.json"))
        .map_err(|e| fail(format!("writing the step's runtime spec: {e}")))?;

    let (reader, writer) = std::io::pipe().map_err(|e| fail(format!("pipe: {e}")))?;
    let writer2 = writer.try_clone().map_err(|e| fail(format!("pipe: {e}")))?;
    let started = Instant::now();
    let progress = exec.progress;
    let (outcome, tail) = std::thread::scope(|scope| {
        let reader_thread = scope.spawn(move || {
            let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
            for line in BufReader::new(reader).split(b'\n') {
                let Ok(line) = line else { break };
                let text = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                progress.output(id, started.elapsed().as_secs_f64(), &text);
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(text);
            }
            tail.into_iter().collect::<Vec<String>>()
        });
        let outcome = exec.runtime.run_with_stdio(
            &container_id,
            Stdio::null(),
            Stdio::from(writer),
            Stdio::from(writer2),
        );
        (outcome, reader_thread.join().unwrap_or_default())
    });
    exec.runtime.delete_runtime_state(&container_id);
    let _ = std::fs::remove_dir_all(&bundle_dir);
    for view in &views {
        let _ = kiln_runtime::snapshot::RootFs::Overlay {
            merged: view.clone(),
            upper: view.clone(),
        }
        .unmount();
    }
    drop(locks);
    for stub in &stubs {
        remove_stub(stub);
    }
    let exit = outcome.map_err(|e| StepFailure {
        message: e.to_string(),
        tail: tail.clone(),
    })?;
    if exit.code != 0 {
        let shown = match argv {
            [sh, flag, script] if flag == "-c" => format!("{sh} -c {script}"),
            _ => serde_json::to_string(argv).unwrap_or_default(),
        };
        return Err(StepFailure {
            message: format!(
                "process \"{}\" did not complete successfully: exit code: {}",
                shown.trim_end(),
                exit.code
            ),
            tail,
        });
    }
    Ok(())
}
