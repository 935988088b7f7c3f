//! `kiln image ...` and its docker-style shortcuts (`images`, `tag`, `rmi`, `inspect`).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use kiln_image::store::RefEntry;
use kiln_image::transfer::{self, LayoutTarget, RootfsOptions};
use kiln_image::{ImageStore, Platform, Reference};
use serde_json::{json, Value};

use crate::gotemplate::Template;
use crate::humanize;
use crate::inspect;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// List images
    #[command(visible_alias = "list")]
    Ls(ListArgs),
    /// Give an image another name
    Tag(TagArgs),
    /// Remove image names (and the images no name reaches any more)
    #[command(visible_alias = "rmi")]
    Rm(RemoveArgs),
    /// Show images' details
    Inspect(InspectArgs),
    /// Import images from an OCI image layout: oci:DIR[:REF]
    Import(ImportArgs),
    /// Export an image to an OCI image layout: oci:DIR[:REF]
    Export(ExportArgs),
    /// Load images from a `docker save` (or OCI) tar archive
    Load(LoadArgs),
    /// Make a one-layer image from a root filesystem tarball
    ImportRootfs(ImportRootfsArgs),
    /// Remove blobs that no image name reaches
    Prune,
}

#[derive(Args)]
pub struct ListArgs {
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    /// Show digests
    #[arg(long)]
    digests: bool,
    /// Don't truncate IDs
    #[arg(long)]
    no_trunc: bool,
    /// Go template for each image: .Repository .Tag .Digest .ID .CreatedSince .CreatedAt .Size
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct TagArgs {
    source: String,
    target: String,
}

#[derive(Args)]
pub struct RemoveArgs {
    /// Remove every name of an image given by ID
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Go template, e.g. '{{.RepoDigests}}' or '{{json .Config}}'
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args)]
pub struct ImportArgs {
    /// oci:DIR[:REF] — REF selects the entry whose org.opencontainers.image.ref.name it is
    source: String,
    /// Name for the imported image (instead of the name the layout carries)
    #[arg(long, short = 't')]
    name: Option<String>,
}

#[derive(Args)]
pub struct ExportArgs {
    image: String,
    /// oci:DIR[:REF] — REF becomes the entry's org.opencontainers.image.ref.name [default: the tag]
    dest: String,
}

#[derive(Args)]
pub struct LoadArgs {
    /// Read from this file instead of standard input
    #[arg(short, long)]
    input: Option<PathBuf>,
    /// Print nothing
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
pub struct ImportRootfsArgs {
    /// Root filesystem tarball (plain, gzip or zstd); - for standard input
    tarball: PathBuf,
    /// Name for the new image, e.g. busybox:1.36
    name: String,
    /// Platform the binaries in the tarball are built for [default: this machine's]
    #[arg(long)]
    platform: Option<String>,
    /// Default command: a JSON array ('["sh"]') or a shell command line
    #[arg(long)]
    cmd: Option<String>,
    /// Environment variable for the image config, KEY=VALUE (repeatable)
    #[arg(short, long = "env")]
    env: Vec<String>,
}

fn open_store(root: &Path) -> Result<ImageStore> {
    ImageStore::open(root).with_context(|| format!("opening the image store at {}", root.display()))
}

pub fn run(root: &Path, command: ImageCommand) -> Result<()> {
    let store = open_store(root)?;
    match command {
        ImageCommand::Ls(args) => list(&store, &args),
        ImageCommand::Tag(args) => tag(&store, &args),
        ImageCommand::Rm(args) => remove(&store, &args),
        ImageCommand::Inspect(args) => inspect_images(&store, &args),
        ImageCommand::Import(args) => import(&store, &args),
        ImageCommand::Export(args) => export(&store, &args),
        ImageCommand::Load(args) => load(&store, &args),
        ImageCommand::ImportRootfs(args) => import_rootfs(&store, &args),
        ImageCommand::Prune => prune(&store),
    }
}

fn parse_name(input: &str) -> Result<Reference> {
    Ok(Reference::parse_normalized(input)?)
}

fn list(store: &ImageStore, args: &ListArgs) -> Result<()> {
    let refs = store.refs().list()?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let template = args.format.as_deref().map(Template::parse).transpose()?;
    let mut rows = Vec::new();
    let mut seen_ids = Vec::new();
    for e in &refs {
        // A digest-only name is shown only when its repository has no tag for the image.
        if e.name.tag().is_none()
            && refs.iter().any(|o| {
                o.name.tag().is_some()
                    && o.name.repository() == e.name.repository()
                    && o.target.digest == e.target.digest
            })
        {
            continue;
        }
        let (id, created, size) = match store.image(&e.target, &Platform::host()) {
            Ok(image) => {
                let created = image.config.created().clone().unwrap_or_default();
                (
                    image.config_digest.to_string(),
                    created,
                    image.content_size(),
                )
            }
            Err(_) => (e.target.digest.to_string(), String::new(), e.target.size),
        };
        let created_unix =
            time::OffsetDateTime::parse(&created, &time::format_description::well_known::Rfc3339)
                .map(|t| t.unix_timestamp())
                .ok();
        let short_id = if args.no_trunc {
            id.clone()
        } else {
            id.split_once(':')
                .map_or(id.as_str(), |(_, h)| &h[..12.min(h.len())])
                .to_string()
        };
        rows.push(json!({
            "Repository": e.name.familiar_repository(),
            "Tag": e.name.tag().unwrap_or("<none>"),
            "Digest": e.name.digest().map_or_else(|| e.target.digest.to_string(), |d| d.to_string()),
            "ID": short_id,
            "CreatedSince": created_unix.map_or("N/A".to_string(), |c| format!("{} ago", humanize::duration(now - c))),
            "CreatedAt": created,
            "Size": humanize::size(size),
        }));
        if !seen_ids.contains(&short_id) {
            seen_ids.push(short_id);
        }
    }
    let mut out = io::stdout().lock();
    if args.quiet {
        for id in seen_ids {
            writeln!(out, "{id}")?;
        }
        return Ok(());
    }
    if let Some(t) = template {
        for row in &rows {
            writeln!(out, "{}", t.render(row)?)?;
        }
        return Ok(());
    }
    let mut header = vec!["REPOSITORY", "TAG"];
    if args.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    let mut table = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for row in &rows {
        let cell = |k: &str| row[k].as_str().unwrap_or_default().to_string();
        let mut line = vec![cell("Repository"), cell("Tag")];
        if args.digests {
            line.push(cell("Digest"));
        }
        line.extend([cell("ID"), cell("CreatedSince"), cell("Size")]);
        table.push(line);
    }
    write!(out, "{}", humanize::table(&table))?;
    Ok(())
}

fn tag(store: &ImageStore, args: &TagArgs) -> Result<()> {
    let found = store.find(&args.source)?;
    let target = parse_name(&args.target)?;
    if target.digest().is_some() {
        bail!(
            "refusing to create a tag with a digest reference: {}",
            args.target
        );
    }
    store.tag(&found.target, &target)?;
    Ok(())
}

fn remove(store: &ImageStore, args: &RemoveArgs) -> Result<()> {
    let mut failed = false;
    let mut out = io::stdout().lock();
    for input in &args.images {
        match remove_one(store, input, args.force, &mut out) {
            Ok(()) => {}
            Err(e) => {
                eprintln!("Error: {e:#}");
                failed = true;
            }
        }
    }
    // Content no name reaches is removed now if no writer is busy; otherwise `image prune`.
    store.try_prune()?;
    if failed {
        bail!("some images could not be removed");
    }
    Ok(())
}

fn remove_one(store: &ImageStore, input: &str, force: bool, out: &mut impl Write) -> Result<()> {
    let found = store.find(input)?;
    let refs = store.refs().list()?;
    let same_image = |e: &&RefEntry| e.target.digest == found.target.digest;
    let to_remove: Vec<Reference> = match &found.name {
        Some(name) => {
            let mut names = vec![name.clone()];
            // As docker does: untagging an image's last tag in a repository also drops that
            // repository's digest names for it.
            let repo = name.repository();
            let other_tags = refs
                .iter()
                .filter(same_image)
                .any(|e| e.name.tag().is_some() && e.name.repository() == repo && &e.name != name);
            if name.tag().is_some() && !other_tags {
                names.extend(
                    refs.iter()
                        .filter(same_image)
                        .filter(|e| e.name.tag().is_none() && e.name.repository() == repo)
                        .map(|e| e.name.clone()),
                );
            }
            names
        }
        None => {
            let names: Vec<Reference> = refs
                .iter()
                .filter(same_image)
                .map(|e| e.name.clone())
                .collect();
            let repos: std::collections::BTreeSet<String> =
                names.iter().map(|n| n.repository()).collect();
            if repos.len() > 1 && !force {
                bail!(
                    "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    input
                );
            }
            names
        }
    };
    for name in &to_remove {
        if store.refs().remove(name)? {
            writeln!(out, "Untagged: {}", name.familiar())?;
        }
    }
    if store.refs().names_for(&found.target.digest)?.is_empty() {
        writeln!(out, "Deleted: {}", found.target.digest)?;
    }
    Ok(())
}

fn inspect_images(store: &ImageStore, args: &InspectArgs) -> Result<()> {
    let template = args.format.as_deref().map(Template::parse).transpose()?;
    let refs = store.refs().list()?;
    let mut records = Vec::new();
    let mut failed = false;
    for input in &args.images {
        match store.find(input) {
            Ok(found) => records.push(inspect::image_record(store, &refs, &found.target)?),
            Err(e) => {
                // `kiln inspect` also knows containers, as `docker inspect` does.
                if let Some(record) = crate::run_cmd::container_json(store.root(), input)? {
                    records.push(record);
                    continue;
                }
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    let mut out = io::stdout().lock();
    match template {
        Some(t) => {
            for r in &records {
                writeln!(out, "{}", t.render(r)?)?;
            }
        }
        None => {
            let mut buf = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
            serde::Serialize::serialize(&Value::Array(records), &mut ser)?;
            out.write_all(&buf)?;
            writeln!(out)?;
        }
    }
    if failed {
        bail!("some images could not be inspected");
    }
    Ok(())
}

fn print_imported(imported: &[transfer::Imported], quiet: bool) -> Result<()> {
    if quiet {
        return Ok(());
    }
    let mut out = io::stdout().lock();
    for i in imported {
        match &i.name {
            Some(n) => writeln!(out, "Loaded image: {}", n.familiar())?,
            None => writeln!(out, "Loaded image ID: {}", i.target.digest)?,
        }
    }
    Ok(())
}

fn import(store: &ImageStore, args: &ImportArgs) -> Result<()> {
    if !args.source.starts_with("oci:") {
        bail!(
            "unsupported source {:?}: expected oci:DIR[:REF]",
            args.source
        );
    }
    let source = LayoutTarget::parse(&args.source);
    let name = args.name.as_deref().map(parse_name).transpose()?;
    let imported = transfer::import_layout(store, &source, name.as_ref())
        .with_context(|| format!("importing {}", args.source))?;
    print_imported(&imported, false)
}

fn export(store: &ImageStore, args: &ExportArgs) -> Result<()> {
    if !args.dest.starts_with("oci:") {
        bail!(
            "unsupported destination {:?}: expected oci:DIR[:REF]",
            args.dest
        );
    }
    let found = store.find(&args.image)?;
    let dest = LayoutTarget::parse(&args.dest);
    transfer::export_layout(store, found.name.as_ref(), &found.target, &dest)
        .with_context(|| format!("exporting {} to {}", args.image, args.dest))?;
    Ok(())
}

fn load(store: &ImageStore, args: &LoadArgs) -> Result<()> {
    let imported = match &args.input {
        Some(path) => {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            transfer::load_docker_archive(store, path, file)?
        }
        None => transfer::load_docker_archive(store, Path::new("<stdin>"), io::stdin().lock())?,
    };
    print_imported(&imported, args.quiet)
}

/// `SOURCE_DATE_EPOCH` when set (reproducible builds), else now.
fn creation_time() -> Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v
            .parse::<i64>()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        _ => Ok(time::OffsetDateTime::now_utc().unix_timestamp()),
    }
}

fn import_rootfs(store: &ImageStore, args: &ImportRootfsArgs) -> Result<()> {
    let name = parse_name(&args.name)?;
    let platform = match &args.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let cmd = match &args.cmd {
        None => None,
        Some(c) if c.trim_start().starts_with('[') => Some(
            serde_json::from_str::<Vec<String>>(c)
                .with_context(|| format!("--cmd {c:?} is not a JSON array of strings"))?,
        ),
        Some(c) => Some(vec!["/bin/sh".to_string(), "-c".to_string(), c.clone()]),
    };
    for e in &args.env {
        if !e.contains('=') {
            bail!("--env {e:?} must be KEY=VALUE");
        }
    }
    let options = RootfsOptions {
        platform,
        created: creation_time()?,
        cmd,
        env: args.env.clone(),
    };
    let imported = if args.tarball.as_os_str() == "-" {
        transfer::import_rootfs(store, &args.tarball, io::stdin().lock(), &name, &options)?
    } else {
        let file = File::open(&args.tarball)
            .with_context(|| format!("opening {}", args.tarball.display()))?;
        transfer::import_rootfs(store, &args.tarball, file, &name, &options)?
    };
    let image = store.image(&imported.target, &options.platform)?;
    println!("{}", image.config_digest);
    Ok(())
}

fn prune(store: &ImageStore) -> Result<()> {
    let report = store.prune()?;
    let mut out = io::stdout().lock();
    if !report.removed.is_empty() {
        writeln!(out, "Deleted blobs:")?;
        for d in &report.removed {
            writeln!(out, "deleted: {d}")?;
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "Total reclaimed space: {}",
        humanize::size(report.bytes)
    )?;
    Ok(())
}
