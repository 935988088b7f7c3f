//! The build: a Dockerfile's stages run in waves (stages of a wave at once, each after the
//! stages it needs), every step keyed by its parent's key, its expanded instruction and the
//! content of its inputs. A step whose key has a cache entry is not run again; a step that
//! runs writes what it changed, taken from an overlay upper directory, as one layer.
//!
//! A cache entry is the image state after the step (config and layers, as a manifest in the
//! store) pinned under its key, so it survives `kiln image prune` and is shared by every
//! build and Dockerfile on the store. Steps that change only the config are not cached:
//! they are recomputed, and their history times are those of the last layer, so a build
//! whose layers all come from the cache gives the same image digest again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use kiln_image::model::media_types as mt;
use kiln_image::store::blobs::{BlobStore, Expected};
use kiln_image::{Digest, Image, ImageStore, Platform, Reference, Target};
use kiln_runtime::container::Runtime;
use kiln_runtime::snapshot::{self, chain_ids, Snapshots};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::compress::{self, LayerCompression};
use crate::config::ImageConfig;
use crate::context::Context;
use crate::dockerfile::{
    self, expand_word, CommandLine, Dockerfile, Healthcheck, Instruction, InstructionKind,
};
use crate::graph;
use crate::layer::Stamp;
use crate::progress::{Progress, StepId};
use crate::steps;

/// The pin set that holds cache entries.
pub const CACHE_PINS: &str = "build-cache";

/// What to build and how.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub context_dir: PathBuf,
    /// The Dockerfile (default `<context>/Dockerfile`).
    pub dockerfile: PathBuf,
    pub tags: Vec<Reference>,
    pub build_args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub platform: Platform,
    pub compression: LayerCompression,
    /// `SOURCE_DATE_EPOCH`: every time in the image is this one, or earlier.
    pub source_date_epoch: Option<i64>,
    /// `--secret id=ID,src=PATH`.
    pub secrets: BTreeMap<String, PathBuf>,
    /// The OCI runtime that runs `RUN` steps.
    pub runtime: String,
}

/// Where base images come from: the store, or a registry when they are missing.
pub trait BaseImages: Sync {
    /// The image `name` names, for `platform`, in the store.
    fn resolve(&self, name: &str, platform: &Platform) -> Result<Image, String>;
}

/// A finished build.
#[derive(Debug, Clone)]
pub struct Built {
    pub target: Target,
    /// The image ID (its config's digest).
    pub config_digest: Digest,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{file}:{line}: {message}")]
    Parse {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}:{line}\n--------------------\n{excerpt}--------------------\n{message}")]
    Step {
        file: String,
        line: usize,
        excerpt: String,
        message: String,
    },
    #[error("{0}")]
    Setup(String),
}

/// One layer of a state.
#[derive(Debug, Clone)]
pub(crate) struct LayerRef {
    pub blob: Digest,
    pub diff_id: Digest,
    pub media_type: String,
    pub size: u64,
}

/// An image as a build step leaves it.
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
    /// The cache key of the step that made it.
    pub key: String,
}

/// A stage's variables: `ARG`s in scope, then the config's `ENV` (which wins).
pub(crate) fn scope_env(state: &State, args: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = args.to_vec();
    env.extend(state.config.env());
    env
}

fn hash_key(parent: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(parent.as_bytes());
    for p in parts {
        h.update([0]);
        h.update(p.as_bytes());
    }
    format!("{:x}", h.finalize())
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// The platform arguments BuildKit defines for every build.
fn platform_args(platform: &Platform) -> Vec<(String, String)> {
    let host = Platform::host();
    let full = |p: &Platform| p.to_string();
    vec![
        ("TARGETPLATFORM".to_string(), full(platform)),
        ("TARGETOS".to_string(), platform.os.clone()),
        ("TARGETARCH".to_string(), platform.architecture.clone()),
        (
            "TARGETVARIANT".to_string(),
            platform.variant.clone().unwrap_or_default(),
        ),
        ("BUILDPLATFORM".to_string(), full(&host)),
        ("BUILDOS".to_string(), host.os.clone()),
        ("BUILDARCH".to_string(), host.architecture.clone()),
        (
            "BUILDVARIANT".to_string(),
            host.variant.clone().unwrap_or_default(),
        ),
    ]
}

/// The build-time state shared by the stages.
pub(crate) struct Exec<'a> {
    /// SQLite handles are not shared between threads: stages take turns with the store.
    store: Mutex<ImageStore>,
    pub blobs: BlobStore,
    pub snapshots: Snapshots,
    pub runtime: Runtime,
    pub opts: &'a BuildOptions,
    pub df: &'a Dockerfile,
    pub ctx: Context,
    pub bases: &'a dyn BaseImages,
    pub progress: &'a Progress,
    pub work: PathBuf,
    pub cache_mounts: PathBuf,
    file_name: String,
    lines: Vec<String>,
    global_args: Vec<(String, String)>,
    seed: String,
    results: Mutex<HashMap<usize, State>>,
    seq: AtomicU64,
}

/// Builds `opts`' Dockerfile into the store and names the result with every tag.
pub fn build(
    kiln_root: &Path,
    opts: &BuildOptions,
    bases: &dyn BaseImages,
    progress: &Progress,
) -> Result<Built, BuildError> {
    let file_name = opts
        .dockerfile
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".into());
    let id = progress.begin(&format!(
        "[internal] load build definition from {file_name}"
    ));
    let text = std::fs::read_to_string(&opts.dockerfile).map_err(|e| {
        BuildError::Setup(format!(
            "reading the Dockerfile {}: {e}",
            opts.dockerfile.display()
        ))
    })?;
    let df = dockerfile::parse(&text).map_err(|e| BuildError::Parse {
        file: file_name.clone(),
        line: e.line,
        message: e.message.clone(),
    })?;
    progress.done(id);
    check_platform(&opts.platform)?;
    if unsafe { libc::geteuid() } != 0 {
        return Err(BuildError::Setup(
            "kiln build runs its steps in overlay filesystems and containers: it needs root".into(),
        ));
    }
    let ctx_id = progress.begin("[internal] load .dockerignore");
    let hash_cache = kiln_root
        .join("build")
        .join("context-hashes")
        .join(hash_key(
            "context",
            &[&opts.context_dir.display().to_string()],
        ));
    let ctx = Context::open(&opts.context_dir, Some(&opts.dockerfile))
        .map_err(|e| BuildError::Setup(format!("build context: {e}")))?
        .with_hash_cache(&hash_cache);
    progress.done(ctx_id);

    let escape = df.directives.escape;
    let mut global_args: Vec<(String, String)> = platform_args(&opts.platform);
    for arg in &df.global_args {
        let value =
            match opts.build_args.get(&arg.name) {
                Some(v) => Some(v.clone()),
                None => match &arg.default {
                    Some(d) => Some(expand_word(d, &global_args, escape).map_err(|e| {
                        BuildError::Parse {
                            file: file_name.clone(),
                            line: arg.line,
                            message: e.to_string(),
                        }
                    })?),
                    None => None,
                },
            };
        if let Some(v) = value {
            global_args.push((arg.name.clone(), v));
        }
    }
    let target = match &opts.target {
        Some(t) => df
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(t.to_lowercase().as_str()))
            .ok_or_else(|| BuildError::Setup(format!("target stage {t:?} could not be found")))?,
        None => df.stages.len() - 1,
    };
    let seed = hash_key(
        "kiln-build-v1",
        &[
            opts.compression.media_type(),
            &opts
                .source_date_epoch
                .map(|e| e.to_string())
                .unwrap_or_default(),
            &opts.platform.to_string(),
        ],
    );
    let tmp_root = kiln_root.join("build").join("tmp");
    remove_stale_work(
        &tmp_root,
        &Runtime::new(&opts.runtime, &kiln_root.join("runtime")),
    );
    let work = tmp_root.join(format!("{}", std::process::id()));
    std::fs::create_dir_all(&work)
        .map_err(|e| BuildError::Setup(format!("{}: {e}", work.display())))?;
    let snapshots = Snapshots::open(&kiln_root.join("runtime").join("snapshots"))
        .map_err(|e| BuildError::Setup(e.to_string()))?;
    if !snapshots.uses_overlay() {
        return Err(BuildError::Setup(
            "kiln build needs overlayfs (see /proc/filesystems)".into(),
        ));
    }
    let store = ImageStore::open(kiln_root).map_err(|e| BuildError::Setup(e.to_string()))?;
    let lease = store
        .lease()
        .map_err(|e| BuildError::Setup(e.to_string()))?;
    let exec = Exec {
        blobs: store.blobs().clone(),
        store: Mutex::new(store),
        snapshots,
        runtime: Runtime::new(&opts.runtime, &kiln_root.join("runtime")),
        opts,
        df: &df,
        ctx,
        bases,
        progress,
        work: work.clone(),
        cache_mounts: kiln_root.join("build").join("cache-mounts"),
        file_name,
        lines: text.lines().map(str::to_string).collect(),
        global_args,
        seed,
        results: Mutex::new(HashMap::new()),
        seq: AtomicU64::new(0),
    };
    let outcome = exec.run_waves(target);
    let _ = std::fs::remove_dir_all(&work);
    // Losing the hashes only costs reading the files again next time.
    let _ = exec.ctx.save_hashes();
    let built = outcome.and_then(|state| exec.finish(state));
    drop(lease);
    built
}

/// Work directories of builds whose process is gone (killed mid-step): their overlay
/// mounts are detached, their step containers deleted and the directories removed, so a
/// crash leaves nothing behind for long.
fn remove_stale_work(tmp_root: &Path, runtime: &Runtime) {
    let Ok(entries) = std::fs::read_dir(tmp_root) else {
        return;
    };
    let mut mounts: Option<String> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let dir = entry.path();
        let prefix = format!("{}/", dir.display());
        // Deepest first: a step's view mounts sit inside its directory.
        let mounts = mounts.get_or_insert_with(|| {
            std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
        });
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&prefix))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = kiln_runtime::snapshot::RootFs::Overlay {
                merged: PathBuf::from(p),
                upper: PathBuf::from(p),
            }
            .unmount();
        }
        if let Ok(steps) = std::fs::read_dir(&dir) {
            for step in steps.flatten() {
                let id = format!("build-{pid}-{}", step.file_name().to_string_lossy());
                runtime.delete_runtime_state(&id);
                let _ = std::fs::remove_dir_all(runtime.bundle_dir(&id));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn check_platform(platform: &Platform) -> Result<(), BuildError> {
    let host = Platform::host();
    if platform.os == host.os && platform.architecture == host.architecture {
        return Ok(());
    }
    let qemu = match platform.architecture.as_str() {
        "arm64" => "aarch64",
        "amd64" => "x86_64",
        "386" => "i386",
        other => other,
    };
    let binfmt = Path::new("/proc/sys/fs/binfmt_misc").join(format!("qemu-{qemu}"));
    if platform.os == "linux" && binfmt.exists() {
        return Ok(());
    }
    Err(BuildError::Setup(format!(
        "cannot build for {platform} on this {host} host: RUN steps need qemu-user emulation for {qemu} registered with binfmt_misc ({} is missing; install qemu-user-static)",
        binfmt.display()
    )))
}

impl Exec<'_> {
    fn run_waves(&self, target: usize) -> Result<State, BuildError> {
        for wave in graph::waves(self.df, target) {
            let outcomes: Vec<Result<(), BuildError>> = std::thread::scope(|scope| {
                let handles: Vec<_> = wave
                    .iter()
                    .map(|&i| {
                        scope.spawn(move || {
                            let state = self.build_stage(i)?;
                            if let Ok(mut r) = self.results.lock() {
                                r.insert(i, state);
                            }
                            Ok(())
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(BuildError::Setup("a build stage panicked".into()))
                        })
                    })
                    .collect()
            });
            for o in outcomes {
                o?;
            }
        }
        self.stage_result(target)
            .ok_or_else(|| BuildError::Setup("the target stage produced nothing".into()))
    }

    fn store(&self) -> Result<std::sync::MutexGuard<'_, ImageStore>, String> {
        self.store
            .lock()
            .map_err(|_| "the image store lock was poisoned".to_string())
    }

    pub(crate) fn stage_result(&self, index: usize) -> Option<State> {
        self.results
            .lock()
            .ok()
            .and_then(|r| r.get(&index).cloned())
    }

    pub(crate) fn escape(&self) -> char {
        self.df.directives.escape
    }

    pub(crate) fn next_dir(&self, what: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.work.join(format!("{what}-{n}"))
    }

    /// The error of a step, pointing at its lines of the Dockerfile.
    pub(crate) fn step_error(
        &self,
        ins_line: usize,
        end_line: usize,
        message: String,
    ) -> BuildError {
        let first = ins_line.saturating_sub(2).max(1);
        let last = (end_line + 1).min(self.lines.len());
        let mut excerpt = String::new();
        for n in first..=last {
            let text = self.lines.get(n - 1).map(String::as_str).unwrap_or("");
            let mark = if (ins_line..=end_line).contains(&n) {
                ">>>"
            } else {
                "   "
            };
            excerpt.push_str(&format!(" {n:>3} | {mark} {text}\n"));
        }
        BuildError::Step {
            file: self.file_name.clone(),
            line: ins_line,
            excerpt,
            message,
        }
    }

    fn expand(
        &self,
        ins: &Instruction,
        word: &str,
        env: &[(String, String)],
    ) -> Result<String, BuildError> {
        expand_word(word, &env.to_vec(), self.escape())
            .map_err(|e| self.step_error(ins.line, ins.end_line, e.to_string()))
    }

    fn created(&self) -> String {
        match self.opts.source_date_epoch {
            Some(e) => kiln_image::model::rfc3339(e),
            None => now_rfc3339(),
        }
    }

    /// The history time of a step that only changes the config: the last entry's, so that
    /// a fully cached build is the same image again.
    fn config_step_time(&self, state: &State) -> String {
        match self.opts.source_date_epoch {
            Some(e) => kiln_image::model::rfc3339(e),
            None => state
                .config
                .last_created()
                .unwrap_or_else(|| kiln_image::model::rfc3339(0)),
        }
    }

    fn stamp(&self) -> Stamp {
        Stamp {
            clamp_mtime: self.opts.source_date_epoch.map(|e| e.max(0) as u64),
        }
    }

    fn base_state(&self, index: usize, label: &str) -> Result<State, BuildError> {
        let stage = &self.df.stages[index];
        let ins_err = |m: String| self.step_error(stage.line, stage.line, m);
        let base = expand_word(&stage.base, &self.global_args, self.escape())
            .map_err(|e| ins_err(e.to_string()))?;
        if let Some(p) = &stage.platform {
            let p = expand_word(p, &self.global_args, self.escape())
                .map_err(|e| ins_err(e.to_string()))?;
            let wanted = Platform::parse(&p).map_err(|e| ins_err(e.to_string()))?;
            if wanted.to_string() != self.opts.platform.to_string() {
                check_platform(&wanted).map_err(|e| ins_err(e.to_string()))?;
            }
        }
        let id = self.progress.begin(&format!("{label} FROM {base}"));
        let state = if base.eq_ignore_ascii_case("scratch") {
            let p = &self.opts.platform;
            State {
                config: ImageConfig::scratch(&p.os, &p.architecture, p.variant.as_deref()),
                layers: Vec::new(),
                key: hash_key(&self.seed, &["FROM scratch"]),
            }
        } else if let Some(i) = graph::stage_index(self.df, index, &base) {
            self.stage_result(i)
                .ok_or_else(|| ins_err(format!("stage {base:?} was not built")))?
        } else {
            let image = self
                .bases
                .resolve(&base, &self.opts.platform)
                .map_err(|e| ins_err(format!("base image {base}: {e}")))?;
            self.progress.note(
                id,
                &format!("resolve {base}@{} done", image.manifest_digest),
            );
            state_of_image(
                &image,
                hash_key(&self.seed, &["FROM", &image.manifest_digest.to_string()]),
            )
            .map_err(ins_err)?
        };
        self.progress.done(id);
        Ok(state)
    }

    fn build_stage(&self, index: usize) -> Result<State, BuildError> {
        let stage = &self.df.stages[index];
        let name = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{index}"));
        let mut triggers: Vec<Instruction> = Vec::new();
        let total = 1 + stage.instructions.iter().filter(|i| is_fs_step(i)).count();
        let label = |n: usize, total: usize| {
            if self.df.stages.len() > 1 {
                format!("[{name} {n}/{total}]")
            } else {
                format!("[{n}/{total}]")
            }
        };
        let mut state = self.base_state(index, &label(1, total))?;
        // A base image's ONBUILD triggers run first, and are not inherited further.
        let onbuild = state.config.onbuild();
        if !onbuild.is_empty() {
            state.config.set("OnBuild", Value::Null);
            for trigger in onbuild {
                let parsed =
                    dockerfile::parse(&format!("FROM scratch\n{trigger}\n")).map_err(|e| {
                        self.step_error(
                            stage.line,
                            stage.line,
                            format!(
                                "ONBUILD trigger {trigger:?} of the base image: {}",
                                e.message
                            ),
                        )
                    })?;
                let mut ins = parsed.stages[0].instructions.clone();
                for i in &mut ins {
                    i.line = stage.line;
                    i.end_line = stage.line;
                }
                triggers.extend(ins);
            }
        }
        let total = total + triggers.iter().filter(|i| is_fs_step(i)).count();
        let mut args: Vec<(String, String)> = Vec::new();
        let mut cmd_set = false;
        let mut n = 1;
        for ins in triggers.iter().chain(stage.instructions.iter()) {
            if is_fs_step(ins) {
                n += 1;
                state = self.fs_step(ins, state, &args, &label(n, total))?;
            } else {
                self.config_step(ins, &mut state, &mut args, &mut cmd_set)?;
            }
        }
        Ok(state)
    }

    fn config_step(
        &self,
        ins: &Instruction,
        state: &mut State,
        args: &mut Vec<(String, String)>,
        cmd_set: &mut bool,
    ) -> Result<(), BuildError> {
        let env = scope_env(state, args);
        let err = |m: String| self.step_error(ins.line, ins.end_line, m);
        let mut history = true;
        let mut key_parts: Vec<String> = vec![ins.kind.name().to_string()];
        match &ins.kind {
            InstructionKind::Arg(defs) => {
                history = false;
                for def in defs {
                    let name = self.expand(ins, &def.name, &env)?;
                    let value = match self.opts.build_args.get(&name) {
                        Some(v) => Some(v.clone()),
                        None => match &def.default {
                            Some(d) => Some(self.expand(ins, d, &scope_env(state, args))?),
                            None => self
                                .global_args
                                .iter()
                                .rev()
                                .find(|(k, _)| *k == name)
                                .map(|(_, v)| v.clone()),
                        },
                    };
                    if let Some(v) = value {
                        key_parts.push(format!("{name}={v}"));
                        args.push((name, v));
                    }
                }
            }
            InstructionKind::Env(pairs) => {
                for kv in pairs {
                    let k = self.expand(ins, &kv.key, &env)?;
                    let v = self.expand(ins, &kv.value, &env)?;
                    state.config.set_env(&k, &v);
                }
            }
            InstructionKind::Label(pairs) => {
                for kv in pairs {
                    let k = self.expand(ins, &kv.key, &env)?;
                    let v = self.expand(ins, &kv.value, &env)?;
                    state.config.set_label(&k, &v);
                }
            }
            InstructionKind::Cmd(c) => {
                state.config.set("Cmd", json!(self.command_args(state, c)));
                *cmd_set = true;
            }
            InstructionKind::Entrypoint(c) => {
                state
                    .config
                    .set("Entrypoint", json!(self.command_args(state, c)));
                if !*cmd_set {
                    state.config.set("Cmd", Value::Null);
                }
            }
            InstructionKind::Expose(ports) => {
                for p in ports {
                    for port in dockerfile::expand_words(p, &env, self.escape())
                        .map_err(|e| err(e.to_string()))?
                    {
                        let port = if port.contains('/') {
                            port
                        } else {
                            format!("{port}/tcp")
                        };
                        state.config.add_to_set("ExposedPorts", &port);
                    }
                }
            }
            InstructionKind::User(u) => {
                let u = self.expand(ins, u, &env)?;
                state.config.set("User", json!(u));
            }
            InstructionKind::Volume(paths) => {
                for p in paths {
                    let p = self.expand(ins, p, &env)?;
                    state.config.add_to_set("Volumes", &p);
                }
            }
            InstructionKind::StopSignal(s) => {
                let s = self.expand(ins, s, &env)?;
                state.config.set("StopSignal", json!(s));
            }
            InstructionKind::Shell(shell) => state.config.set("Shell", json!(shell)),
            InstructionKind::Healthcheck(h) => {
                let value = match h {
                    Healthcheck::None => json!({ "Test": ["NONE"] }),
                    Healthcheck::Cmd {
                        command,
                        interval,
                        timeout,
                        start_period,
                        start_interval,
                        retries,
                    } => {
                        let test: Vec<String> = match command {
                            CommandLine::Exec(a) => std::iter::once("CMD".to_string())
                                .chain(a.clone())
                                .collect(),
                            CommandLine::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
                        };
                        let mut v = json!({ "Test": test });
                        let nanos =
                            |d: &Option<std::time::Duration>| d.map(|d| d.as_nanos() as u64);
                        for (field, value) in [
                            ("Interval", nanos(interval)),
                            ("Timeout", nanos(timeout)),
                            ("StartPeriod", nanos(start_period)),
                            ("StartInterval", nanos(start_interval)),
                        ] {
                            if let Some(n) = value {
                                v[field] = json!(n);
                            }
                        }
                        if let Some(r) = retries {
                            v["Retries"] = json!(r);
                        }
                        v
                    }
                };
                state.config.set("Healthcheck", value);
            }
            InstructionKind::Onbuild(o) => state.config.push_onbuild(&o.expression),
            InstructionKind::Maintainer(m) => state.config.set_top("author", json!(m)),
            _ => {
                return Err(err(format!(
                    "{} changes files; it is not a config step",
                    ins.kind.name()
                )))
            }
        }
        key_parts.push(ins.original.clone());
        if history {
            let created = self.config_step_time(state);
            state.config.push_history(&created, &ins.original, true);
        }
        let parts: Vec<&str> = key_parts.iter().map(String::as_str).collect();
        state.key = hash_key(&state.key, &parts);
        Ok(())
    }

    /// A `CMD`/`ENTRYPOINT` as the config stores it: the exec form as written, the shell
    /// form behind the stage's shell.
    fn command_args(&self, state: &State, c: &CommandLine) -> Vec<String> {
        match c {
            CommandLine::Exec(a) => a.clone(),
            CommandLine::Shell(s) => {
                let mut v = state.config.shell();
                v.push(s.clone());
                v
            }
        }
    }

    /// A step that changes files: from the cache, or run in an overlay and committed.
    fn fs_step(
        &self,
        ins: &Instruction,
        state: State,
        args: &[(String, String)],
        label: &str,
    ) -> Result<State, BuildError> {
        let err = |m: String| self.step_error(ins.line, ins.end_line, m);
        let title = format!("{label} {}", ins.original);
        let planned = steps::plan(self, ins, &state, args).map_err(&err)?;
        let mut state = state;
        if let Some(wd) = &planned.workdir {
            state.config.set("WorkingDir", json!(wd));
        }
        let mut parts: Vec<&str> = vec![&ins.original];
        parts.extend(planned.key_inputs.iter().map(String::as_str));
        let key = hash_key(&state.key, &parts);
        let id = self.progress.begin(&title);
        if !self.opts.no_cache {
            if let Some(cached) = self.cached_state(&key) {
                self.progress.cached(id);
                return Ok(cached);
            }
        }
        let created = self.created();
        let result = self.run_in_overlay(id, ins, &state, args, &planned, &key, &created);
        match result {
            Ok(s) => {
                self.progress.done(id);
                Ok(s)
            }
            Err(steps::StepFailure { message, tail }) => {
                self.progress.failed(id, &tail, &message);
                Err(err(message))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run_in_overlay(
        &self,
        id: StepId,
        ins: &Instruction,
        state: &State,
        args: &[(String, String)],
        planned: &steps::Planned,
        key: &str,
        created: &str,
    ) -> Result<State, steps::StepFailure> {
        let fail = steps::StepFailure::message;
        let dir = self.next_dir("step");
        let lowers = self.lower_dirs(&state.layers).map_err(fail)?;
        let upper = dir.join("upper");
        let merged = dir.join("merged");
        snapshot::mount_overlay(&lowers, &upper, &dir.join("work"), &merged)
            .map_err(|e| fail(e.to_string()))?;
        let outcome = steps::execute(self, id, ins, state, args, planned, &merged, &dir);
        let unmounted = kiln_runtime::snapshot::RootFs::Overlay {
            merged: merged.clone(),
            upper: upper.clone(),
        }
        .unmount();
        let result = outcome.and_then(|()| {
            unmounted.map_err(|e| fail(format!("unmounting {}: {e}", merged.display())))?;
            self.commit(state, &upper, &ins.original, key, created)
                .map_err(fail)
        });
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// The snapshot directories of `layers`, unpacked where missing; an empty directory
    /// for an image without layers.
    pub(crate) fn lower_dirs(&self, layers: &[LayerRef]) -> Result<Vec<PathBuf>, String> {
        if layers.is_empty() {
            return Ok(vec![self
                .snapshots
                .empty_lower()
                .map_err(|e| e.to_string())?]);
        }
        let list: Vec<(Digest, Digest)> = layers
            .iter()
            .map(|l| (l.blob.clone(), l.diff_id.clone()))
            .collect();
        self.snapshots
            .layer_dirs(&self.blobs, &list)
            .map_err(|e| e.to_string())
    }

    /// The step's changes as a layer (none when it changed nothing), the state saved and
    /// pinned under `key`.
    fn commit(
        &self,
        state: &State,
        upper: &Path,
        created_by: &str,
        key: &str,
        created: &str,
    ) -> Result<State, String> {
        let mut next = state.clone();
        next.key = key.to_string();
        let empty = std::fs::read_dir(upper)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true);
        if empty {
            next.config.push_history(created, created_by, true);
        } else {
            let layer =
                compress::write_layer(upper, &self.blobs, self.opts.compression, self.stamp())
                    .map_err(|e| e.to_string())?;
            let size = layer.blob.size();
            let diff_id = layer.diff_id.clone();
            let blob = layer.blob.commit().map_err(|e| e.to_string())?;
            next.layers.push(LayerRef {
                blob,
                diff_id: diff_id.clone(),
                media_type: layer.media_type.to_string(),
                size,
            });
            next.config.push_diff_id(&diff_id.to_string());
            next.config.push_history(created, created_by, false);
            let diff_ids: Vec<Digest> = next.layers.iter().map(|l| l.diff_id.clone()).collect();
            if let Some(chain) = chain_ids(&diff_ids).last() {
                // The upper directory is the layer's content: the next step stacks on it.
                self.snapshots
                    .adopt(upper, chain)
                    .map_err(|e| e.to_string())?;
            }
        }
        let target = self.save(&next)?;
        self.store()?
            .pin(CACHE_PINS, key, &target)
            .map_err(|e| e.to_string())?;
        Ok(next)
    }

    /// A state as a manifest in the store.
    fn save(&self, state: &State) -> Result<Target, String> {
        let config = state.config.to_bytes();
        let config_digest = self
            .blobs
            .put_bytes(&config, Expected::default())
            .map_err(|e| e.to_string())?;
        let layers: Vec<Value> = state
            .layers
            .iter()
            .map(|l| {
                json!({
                    "mediaType": l.media_type,
                    "digest": l.blob.to_string(),
                    "size": l.size,
                })
            })
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": mt::OCI_MANIFEST,
            "config": {
                "mediaType": mt::OCI_CONFIG,
                "digest": config_digest.to_string(),
                "size": config.len(),
            },
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
        let digest = self
            .blobs
            .put_bytes(&bytes, Expected::default())
            .map_err(|e| e.to_string())?;
        Ok(Target {
            digest,
            media_type: mt::OCI_MANIFEST.to_string(),
            size: bytes.len() as u64,
        })
    }

    /// The state a cache entry holds, when every blob it names is still in the store.
    fn cached_state(&self, key: &str) -> Option<State> {
        let target = self.store().ok()?.pinned(CACHE_PINS, key).ok()??;
        let image = self
            .store()
            .ok()?
            .image(&target, &self.opts.platform)
            .ok()?;
        let state = state_of_image(&image, key.to_string()).ok()?;
        state
            .layers
            .iter()
            .all(|l| self.blobs.contains(&l.blob))
            .then_some(state)
    }

    fn finish(&self, mut state: State) -> Result<Built, BuildError> {
        let id = self.progress.begin("exporting to image");
        for (k, v) in &self.opts.labels {
            state.config.set_label(k, v);
        }
        let created = self.config_step_time(&state);
        state.config.set_created(&created);
        let target = self.save(&state).map_err(BuildError::Setup)?;
        let image = self
            .store()
            .map_err(BuildError::Setup)?
            .image(&target, &self.opts.platform)
            .map_err(|e| BuildError::Setup(e.to_string()))?;
        self.progress
            .note(id, &format!("writing image {} done", image.config_digest));
        for tag in &self.opts.tags {
            self.store()
                .map_err(BuildError::Setup)?
                .tag(&target, tag)
                .map_err(|e| BuildError::Setup(e.to_string()))?;
            self.progress.note(id, &format!("naming to {tag} done"));
        }
        self.progress.done(id);
        Ok(Built {
            target,
            config_digest: image.config_digest,
        })
    }
}

/// Whether an instruction changes files (and so gets a layer and a cache entry).
fn is_fs_step(ins: &Instruction) -> bool {
    matches!(
        ins.kind,
        InstructionKind::Run(_)
            | InstructionKind::Copy(_)
            | InstructionKind::Add(_)
            | InstructionKind::Workdir(_)
    )
}

/// The state an image stands for.
pub(crate) fn state_of_image(image: &Image, key: String) -> Result<State, String> {
    let config = ImageConfig::parse(&image.config_raw)?;
    let diff_ids = image.config.rootfs().diff_ids();
    let layers = image.manifest.layers();
    if diff_ids.len() != layers.len() {
        return Err(format!(
            "image {}: {} layers but {} diff IDs",
            image.manifest_digest,
            layers.len(),
            diff_ids.len()
        ));
    }
    let mut out = Vec::new();
    for (l, d) in layers.iter().zip(diff_ids) {
        out.push(LayerRef {
            blob: Digest::parse(l.digest().as_ref()).map_err(|e| e.to_string())?,
            diff_id: Digest::parse(d).map_err(|e| e.to_string())?,
            media_type: l.media_type().to_string(),
            size: l.size(),
        });
    }
    Ok(State {
        config,
        layers: out,
        key,
    })
}
