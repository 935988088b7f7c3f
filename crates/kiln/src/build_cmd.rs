//! `kiln build`: docker build's flags and output, on the build library.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_build::compress::LayerCompression;
use kiln_build::progress::{Progress, ProgressMode};
use kiln_build::{BaseImages, BuildOptions};
use kiln_image::transfer::{self, LayoutTarget};
use kiln_image::{Image, ImageStore, Platform, Reference};

use crate::client_cmd::{self, PushArgs, RegistryArgs};

#[derive(Args)]
pub struct BuildArgs {
    /// The build context: a directory whose files COPY and ADD read
    context: PathBuf,
    /// Name the image NAME[:TAG] (may be given several times)
    #[arg(short, long = "tag", value_name = "NAME")]
    tags: Vec<String>,
    /// The Dockerfile [default: CONTEXT/Dockerfile]
    #[arg(short, long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Set a build argument: KEY=VALUE, or KEY to take the value from the environment
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    build_args: Vec<String>,
    /// Set a label on the image: KEY=VALUE
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Build this stage (and what it needs) instead of the last one
    #[arg(long)]
    target: Option<String>,
    /// Run every step, using no cached result
    #[arg(long)]
    no_cache: bool,
    /// Platform of the image: os/arch[/variant] [default: the host's]
    #[arg(long)]
    platform: Option<String>,
    /// Also write the image elsewhere: type=oci,dest=DIR (an OCI image layout)
    #[arg(short, long, value_name = "type=oci,dest=DIR")]
    output: Vec<String>,
    /// Push every tag after the build
    #[arg(long)]
    push: bool,
    /// Layer compression: gzip or zstd
    #[arg(long, default_value = "gzip")]
    compression: String,
    /// Same inputs, same image digest: every time in the image is $SOURCE_DATE_EPOCH (0
    /// when unset); SOURCE_DATE_EPOCH alone does the same
    #[arg(long)]
    reproducible: bool,
    /// Output style: auto, plain, tty or quiet
    #[arg(long, default_value = "auto")]
    progress: String,
    /// Print only the image ID
    #[arg(short, long)]
    quiet: bool,
    /// A secret for RUN --mount=type=secret: id=ID,src=PATH
    #[arg(long, value_name = "id=ID,src=PATH")]
    secret: Vec<String>,
    /// OCI runtime that runs RUN steps
    #[arg(long, default_value = "runc")]
    runtime: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

fn key_value(text: &str, what: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("{what} {text:?}: KEY=VALUE is expected"),
    }
}

/// `id=ID,src=PATH` (also `source=`, and `env=` is not supported).
fn parse_secret(text: &str) -> Result<(String, PathBuf)> {
    let mut id = None;
    let mut src = None;
    for field in text.split(',') {
        match field.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
            Some(("type", "file")) => {}
            _ => bail!("--secret {text:?}: id=ID,src=PATH is expected"),
        }
    }
    match (id, src) {
        (Some(id), Some(src)) => Ok((id, src)),
        (None, Some(src)) => {
            let id = src
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok((id, src))
        }
        _ => bail!("--secret {text:?}: src=PATH is required"),
    }
}

/// Base images from the store, pulled when missing.
struct StoreOrPull<'a> {
    root: &'a Path,
    registry: &'a RegistryArgs,
}

impl BaseImages for StoreOrPull<'_> {
    fn resolve(&self, name: &str, platform: &Platform) -> Result<Image, String> {
        let reference = Reference::parse_normalized(name)
            .map_err(|e| e.to_string())?
            .with_default_tag();
        let store = ImageStore::open(self.root).map_err(|e| e.to_string())?;
        let found = match store.find(&reference.to_string()) {
            Ok(found) => found,
            Err(_) => {
                client_cmd::fetch(self.root, &reference, platform, self.registry)
                    .map_err(|e| format!("{e:#}"))?;
                store
                    .find(&reference.to_string())
                    .map_err(|e| e.to_string())?
            }
        };
        store
            .image(&found.target, platform)
            .map_err(|e| e.to_string())
    }
}

pub fn run(root: &Path, args: BuildArgs) -> Result<()> {
    let context_dir = std::path::absolute(&args.context)
        .with_context(|| format!("build context {}", args.context.display()))?;
    if !context_dir.is_dir() {
        bail!("build context {}: not a directory", args.context.display());
    }
    let dockerfile = match &args.file {
        Some(f) => std::path::absolute(f).with_context(|| format!("{}", f.display()))?,
        None => context_dir.join("Dockerfile"),
    };
    let mut tags = Vec::new();
    for t in &args.tags {
        let r = Reference::parse_normalized(t)
            .with_context(|| format!("invalid tag {t:?}"))?
            .with_default_tag();
        if r.digest().is_some() {
            bail!("invalid tag {t:?}: a tag cannot name a digest");
        }
        tags.push(r);
    }
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        match a.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), v.to_string()),
            // docker: a bare KEY takes its value from the environment, or stays unset.
            None => match std::env::var(a) {
                Ok(v) => build_args.insert(a.clone(), v),
                Err(_) => None,
            },
        };
    }
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = key_value(l, "--label")?;
        labels.insert(k, v);
    }
    let mut secrets = BTreeMap::new();
    for s in &args.secret {
        let (id, src) = parse_secret(s)?;
        secrets.insert(id, src);
    }
    let mut layout_dests = Vec::new();
    for o in &args.output {
        let mut kind = None;
        let mut dest = None;
        for field in o.split(',') {
            match field.split_once('=') {
                Some(("type", v)) => kind = Some(v.to_string()),
                Some(("dest", v)) => dest = Some(v.to_string()),
                _ => bail!("--output {o:?}: type=oci,dest=DIR is expected"),
            }
        }
        match (kind.as_deref(), dest) {
            (Some("oci"), Some(dest)) => layout_dests.push(dest),
            (Some("image"), None) => {}
            _ => bail!("--output {o:?}: type=oci,dest=DIR or type=image is supported"),
        }
    }
    let source_date_epoch =
        match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) if !v.is_empty() => Some(v.trim().parse::<i64>().with_context(|| {
                format!("SOURCE_DATE_EPOCH={v:?}: seconds since 1970 expected")
            })?),
            _ if args.reproducible => Some(0),
            _ => None,
        };
    let platform = match &args.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let options = BuildOptions {
        context_dir,
        dockerfile,
        tags: tags.clone(),
        build_args,
        labels,
        target: args.target.clone(),
        no_cache: args.no_cache,
        platform,
        compression: LayerCompression::parse(&args.compression).map_err(anyhow::Error::msg)?,
        source_date_epoch,
        secrets,
        runtime: args.runtime.clone(),
    };
    let mode = if args.quiet {
        ProgressMode::Quiet
    } else {
        ProgressMode::parse(&args.progress, std::io::stderr().is_terminal())
            .map_err(anyhow::Error::msg)?
    };
    let progress = Progress::new(mode, Box::new(std::io::stderr()));
    let bases = StoreOrPull {
        root,
        registry: &args.registry,
    };
    let built = kiln_build::build(root, &options, &bases, &progress);
    progress.finish(built.is_ok());
    let built = built?;
    if !layout_dests.is_empty() {
        let store = ImageStore::open(root)?;
        for dest in &layout_dests {
            let target = LayoutTarget::parse(&format!("oci:{dest}"));
            transfer::export_layout(&store, tags.first(), &built.target, &target)
                .with_context(|| format!("writing the image to {dest}"))?;
        }
    }
    if args.push {
        if tags.is_empty() {
            bail!("--push needs a name: give -t REGISTRY/NAME:TAG");
        }
        for tag in &tags {
            client_cmd::push(
                root,
                PushArgs::for_image(&tag.to_string(), args.registry.clone(), args.quiet),
            )?;
        }
    }
    if args.quiet {
        println!("{}", built.config_digest);
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum BuilderCommand {
    /// Remove the build cache: cached steps, their layers no image uses, and cache mounts
    Prune,
}

pub fn builder(root: &Path, cmd: BuilderCommand) -> Result<()> {
    match cmd {
        BuilderCommand::Prune => {
            let store = ImageStore::open(root)?;
            let entries = store.unpin_all(kiln_build::CACHE_PINS)?;
            let report = store.prune()?;
            let mounts = root.join("build").join("cache-mounts");
            let mut bytes = report.bytes;
            if mounts.exists() {
                bytes += dir_size(&mounts);
                std::fs::remove_dir_all(&mounts)
                    .with_context(|| format!("removing {}", mounts.display()))?;
            }
            println!("Deleted build cache objects: {entries}");
            println!("Total reclaimed space: {}", crate::humanize::size(bytes));
            Ok(())
        }
    }
}

fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|d| d.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_need_a_source() {
        assert_eq!(
            parse_secret("id=tok,src=/tmp/t").expect("secret"),
            ("tok".to_string(), PathBuf::from("/tmp/t"))
        );
        assert_eq!(parse_secret("src=/a/b").expect("secret").0, "b");
        assert!(parse_secret("id=tok").is_err());
        assert!(parse_secret("nonsense").is_err());
    }
}
