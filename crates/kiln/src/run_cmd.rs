//! `kiln run`, `ps`, `logs`, `exec`, `stop`, `rm`: images as containers through an OCI
//! runtime, docker's commands and output.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_image::{ImageStore, Platform};
use kiln_runtime::bundle::{HostUser, Network, RunConfig, Volume};
use kiln_runtime::container::{Record, Runtime, Status};

#[derive(Args)]
pub struct RunArgs {
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Run in the background and print the container ID
    #[arg(short, long)]
    detach: bool,
    /// Container name [default: a random one]
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable: KEY=VALUE, or KEY to pass the host's value
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Replace the image's entrypoint (as one program; arguments follow the image name)
    #[arg(long)]
    entrypoint: Option<String>,
    /// Network: host (the host's interfaces) or none (loopback only)
    #[arg(long, default_value = "host")]
    network: String,
    /// Bind mount: SRC:DST[:ro]
    #[arg(short, long = "volume")]
    volume: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// User: name|uid[:group|gid]
    #[arg(short, long)]
    user: Option<String>,
    /// Keep standard input open
    #[arg(short, long)]
    interactive: bool,
    /// Give the container a terminal
    #[arg(short, long)]
    tty: bool,
    /// OCI runtime binary [default: runc]
    #[arg(long, default_value = "runc")]
    runtime: String,
    /// Image to run
    image: String,
    /// Command and arguments (replace the image's Cmd)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn container_id(name: Option<&str>) -> Result<String> {
    match name {
        Some(n) => {
            let valid = !n.is_empty()
                && n.len() <= 128
                && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !valid {
                bail!("invalid container name {n:?}: must match [a-zA-Z0-9][a-zA-Z0-9_.-]*");
            }
            Ok(n.to_string())
        }
        None => {
            let mut bytes = [0u8; 6];
            let f = std::fs::File::open("/dev/urandom").context("reading /dev/urandom")?;
            std::io::Read::read_exact(&mut &f, &mut bytes).context("reading /dev/urandom")?;
            Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
        }
    }
}

fn runtime_at(root: &Path, binary: &str) -> Runtime {
    Runtime::new(binary, &root.join("runtime"))
}

pub fn run(root: &Path, args: RunArgs) -> Result<ExitCode> {
    let store = ImageStore::open(root)?;
    let found = store.find(&args.image)?;
    let image = store.image(&found.target, &Platform::host())?;
    let network = match args.network.as_str() {
        "host" => Network::Host,
        "none" => Network::None,
        other => bail!("--network {other}: expected host or none"),
    };
    let id = container_id(args.name.as_deref())?;
    let volumes = args
        .volume
        .iter()
        .map(|v| Volume::parse(v))
        .collect::<Result<Vec<_>, _>>()?;
    let run = RunConfig {
        entrypoint: args.entrypoint.map(|e| vec![e]),
        cmd: args.command,
        env: args.env,
        workdir: args.workdir,
        user: args.user,
        network,
        terminal: args.tty,
        volumes,
        hostname: id.chars().take(12).collect(),
        rootless: HostUser::unprivileged(),
    };
    if args.tty && args.detach {
        bail!("-t with -d is not supported: attach is not implemented");
    }
    let runtime = runtime_at(root, &args.runtime);
    if runtime.bundle_dir(&id).exists() {
        bail!("a container named {id} already exists");
    }
    let command = kiln_runtime::bundle::command(&image.config, &run)?;
    let rootfs = runtime
        .create_bundle(store.blobs(), &image, &id, &run)
        .with_context(|| format!("preparing container {id}"))?;
    let record = Record {
        id: id.clone(),
        image: found
            .name
            .map(|n| n.familiar())
            .unwrap_or_else(|| args.image.clone()),
        command,
        created: kiln_runtime::container::unix_now(),
        auto_remove: args.rm,
        labels: Default::default(),
    };
    runtime.save_record(&record)?;
    if args.detach {
        let mut shim =
            std::process::Command::new(std::env::current_exe().context("finding the kiln binary")?);
        shim.arg("--root")
            .arg(root)
            .args(["container-shim", "--runtime", &args.runtime, &id]);
        runtime
            .start_detached(&id, &mut shim)
            .with_context(|| format!("starting container {id}"))?;
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let exit = runtime.run_foreground(&id, args.interactive, args.tty);
    if args.rm {
        let removed = runtime.remove_bundle(&id, &rootfs);
        let exit = exit.with_context(|| format!("running container {id}"))?;
        removed.with_context(|| format!("removing container {id}"))?;
        return Ok(ExitCode::from(exit.code.clamp(0, 255) as u8));
    }
    let exit = exit.with_context(|| format!("running container {id}"))?;
    runtime.record_exit(&id, exit)?;
    Ok(ExitCode::from(exit.code.clamp(0, 255) as u8))
}

#[derive(Args)]
pub struct ShimArgs {
    #[arg(long, default_value = "runc")]
    runtime: String,
    id: String,
}

/// The detached container's keeper (started by `kiln run -d`, not by users).
pub fn shim(root: &Path, args: ShimArgs) -> Result<()> {
    runtime_at(root, &args.runtime).shim(&args.id)?;
    Ok(())
}

#[derive(Args)]
pub struct PsArgs {
    /// Show stopped containers too
    #[arg(short, long)]
    all: bool,
    /// Only IDs
    #[arg(short, long)]
    quiet: bool,
    #[arg(long, default_value = "runc")]
    runtime: String,
}

pub fn ps(root: &Path, args: PsArgs) -> Result<()> {
    let runtime = runtime_at(root, &args.runtime);
    let now = kiln_runtime::container::unix_now();
    let mut rows = Vec::new();
    for r in runtime.records()?.into_iter().rev() {
        let status = runtime.status(&r.id);
        let running = status == Status::Running;
        if !args.all && !running {
            continue;
        }
        if args.quiet {
            println!("{}", &r.id);
            continue;
        }
        let status_text = match status {
            Status::Running => format!("Up {}", crate::humanize::duration(now - r.created)),
            Status::Exited { code, finished } => format!(
                "Exited ({code}) {} ago",
                crate::humanize::duration(now - finished)
            ),
            Status::Unknown => "Unknown".to_string(),
        };
        let mut command = r.command.join(" ");
        if command.chars().count() > 20 {
            command = command.chars().take(19).collect::<String>() + "…";
        }
        rows.push([
            r.id.chars().take(12).collect::<String>(),
            r.image.clone(),
            format!("\"{command}\""),
            format!("{} ago", crate::humanize::duration(now - r.created)),
            status_text,
            r.id.clone(),
        ]);
    }
    if args.quiet {
        return Ok(());
    }
    let mut table = vec![[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "NAMES",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect::<Vec<_>>()];
    table.extend(rows.into_iter().map(|r| r.to_vec()));
    print!("{}", crate::humanize::table(&table));
    Ok(())
}

fn find(runtime: &Runtime, name: &str) -> Result<Record> {
    runtime
        .find(name)?
        .with_context(|| format!("No such container: {name}"))
}

#[derive(Args)]
pub struct LogsArgs {
    /// Keep printing as the container writes
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    #[arg(long, default_value = "runc")]
    runtime: String,
    container: String,
}

pub fn logs(root: &Path, args: LogsArgs) -> Result<()> {
    use std::io::{BufRead, Write};
    let runtime = runtime_at(root, &args.runtime);
    let record = find(&runtime, &args.container)?;
    let path = runtime.log_path(&record.id);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut reader = std::io::BufReader::new(file);
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    let mut emit = |line: &[u8]| -> Result<()> {
        if let Some((stream, full, content)) = kiln_runtime::container::parse_cri_line(line) {
            let out: &mut dyn Write = if stream == "stderr" {
                &mut stderr
            } else {
                &mut stdout
            };
            out.write_all(content)?;
            if full {
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
        Ok(())
    };
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut buf = Vec::new();
    while reader.read_until(b'\n', &mut buf)? > 0 {
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        lines.push(std::mem::take(&mut buf));
    }
    let skip = args.tail.map_or(0, |n| lines.len().saturating_sub(n));
    for line in &lines[skip..] {
        emit(line)?;
    }
    if !args.follow {
        return Ok(());
    }
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? > 0 {
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            emit(&buf)?;
            continue;
        }
        if runtime.status(&record.id) != Status::Running {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL
    #[arg(short = 't', long = "time", default_value_t = 10)]
    time: u64,
    #[arg(long, default_value = "runc")]
    runtime: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn stop(root: &Path, args: StopArgs) -> Result<()> {
    let runtime = runtime_at(root, &args.runtime);
    for name in &args.containers {
        let record = find(&runtime, name)?;
        runtime
            .stop(&record.id, std::time::Duration::from_secs(args.time))
            .with_context(|| format!("stopping {name}"))?;
        println!("{name}");
    }
    Ok(())
}

#[derive(Args)]
pub struct RmArgs {
    /// Kill running containers first
    #[arg(short, long)]
    force: bool,
    #[arg(long, default_value = "runc")]
    runtime: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn rm(root: &Path, args: RmArgs) -> Result<()> {
    let runtime = runtime_at(root, &args.runtime);
    for name in &args.containers {
        let record = find(&runtime, name)?;
        if runtime.status(&record.id) == Status::Running {
            if !args.force {
                bail!("cannot remove container {name}: it is running (stop it first, or rm -f)");
            }
            runtime.kill(&record.id, "KILL")?;
            runtime.wait_ended(&record.id, std::time::Duration::from_secs(10));
        }
        runtime
            .remove(&record.id)
            .with_context(|| format!("removing {name}"))?;
        println!("{name}");
    }
    Ok(())
}

#[derive(Args)]
pub struct ExecArgs {
    /// Keep standard input open
    #[arg(short, long)]
    interactive: bool,
    /// Give the command a terminal
    #[arg(short, long)]
    tty: bool,
    #[arg(long, default_value = "runc")]
    runtime: String,
    container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

pub fn exec(root: &Path, args: ExecArgs) -> Result<ExitCode> {
    let runtime = runtime_at(root, &args.runtime);
    let record = find(&runtime, &args.container)?;
    if runtime.status(&record.id) != Status::Running {
        bail!("container {} is not running", args.container);
    }
    let exit = runtime.exec(&record.id, &args.command, args.interactive, args.tty)?;
    Ok(ExitCode::from(exit.code.clamp(0, 255) as u8))
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A container as `docker inspect` shows it, if `name` names one.
pub fn container_json(root: &Path, name: &str) -> Result<Option<serde_json::Value>> {
    let runtime = runtime_at(root, "runc");
    let Some(r) = runtime.find(name)? else {
        return Ok(None);
    };
    let status = runtime.status(&r.id);
    let (state, running, code, finished) = match status {
        Status::Running => ("running", true, 0, String::new()),
        Status::Exited { code, finished } => ("exited", false, code, rfc3339(finished)),
        Status::Unknown => ("unknown", false, 0, String::new()),
    };
    let bundle = runtime.bundle_dir(&r.id);
    Ok(Some(serde_json::json!({
        "Id": r.id,
        "Name": format!("/{}", r.id),
        "Created": rfc3339(r.created),
        "Path": r.command.first().cloned().unwrap_or_default(),
        "Args": r.command.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": state,
            "Running": running,
            "ExitCode": code,
            "FinishedAt": finished,
        },
        "Image": r.image,
        "LogPath": runtime.log_path(&r.id),
        "HostConfig": {"AutoRemove": r.auto_remove},
        "GraphDriver": {"Data": {"MergedDir": bundle.join("rootfs"), "UpperDir": bundle.join("upper")}},
        "Config": {"Image": r.image, "Cmd": r.command},
    })))
}
