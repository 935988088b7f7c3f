//! The `kiln` command line.

mod build_cmd;
mod client_cmd;
mod cluster_cmd;
mod crictl_cmd;
mod deferred;
mod gotemplate;
mod humanize;
mod image_cmd;
mod inspect;
mod node_cmd;
mod registry_cmd;
mod run_cmd;
mod transfer_progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use deferred::Deferred;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Build, store, ship and run container images"
)]
struct Cli {
    /// Root directory of the local image store, or of the registry's storage for `kiln
    /// registry` [default: $KILN_ROOT, else /var/lib/kiln for root, else $XDG_DATA_HOME/kiln;
    /// the registry uses registry/ below it]
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a Dockerfile
    Build(Deferred<build_cmd::BuildArgs>),
    /// Manage the build cache
    #[command(subcommand)]
    Builder(Deferred<build_cmd::BuilderCommand>),
    /// Manage images in the local store
    #[command(subcommand)]
    Image(Deferred<image_cmd::ImageCommand>),
    /// List images
    Images(Deferred<image_cmd::ListArgs>),
    /// Give an image another name: kiln tag SOURCE[:TAG] TARGET[:TAG]
    Tag(Deferred<image_cmd::TagArgs>),
    /// Remove image names (and the images no name reaches any more)
    Rmi(Deferred<image_cmd::RemoveArgs>),
    /// Show images' details as JSON, or through a Go template
    Inspect(Deferred<image_cmd::InspectArgs>),
    /// Run an OCI distribution registry
    #[command(subcommand)]
    Registry(Deferred<registry_cmd::RegistryCommand>),
    /// Log in to a registry (credentials are saved in docker's config file)
    Login(Deferred<client_cmd::LoginArgs>),
    /// Log out from a registry
    Logout(Deferred<client_cmd::LogoutArgs>),
    /// Download an image from a registry
    Pull(Deferred<client_cmd::PullArgs>),
    /// Upload an image to a registry
    Push(Deferred<client_cmd::PushArgs>),
    /// Run a command in a new container
    Run(Deferred<run_cmd::RunArgs>),
    /// List containers
    Ps(Deferred<run_cmd::PsArgs>),
    /// Show a container's output
    Logs(Deferred<run_cmd::LogsArgs>),
    /// Run a command in a running container
    Exec(Deferred<run_cmd::ExecArgs>),
    /// Stop running containers (SIGTERM, then SIGKILL)
    Stop(Deferred<run_cmd::StopArgs>),
    /// Remove containers
    Rm(Deferred<run_cmd::RmArgs>),
    /// Start the cluster: the Kubernetes API server (kubectl's kubeconfig is written for you)
    Up(Deferred<cluster_cmd::UpArgs>),
    /// Stop the cluster started by `kiln up`
    Down(Deferred<cluster_cmd::DownArgs>),
    /// Run the node agent: join an API server and run the pods bound to this node
    Node(Deferred<node_cmd::NodeArgs>),
    /// Inspect the node's pods, containers and images, as crictl shows them
    #[command(subcommand)]
    Crictl(Deferred<crictl_cmd::CrictlCommand>),
    #[command(hide = true)]
    ContainerShim(Deferred<run_cmd::ShimArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let explicit_root = cli.root.clone();
    let root = cli.root.unwrap_or_else(kiln_image::store::default_root);
    let ok = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    let is_run = matches!(cli.command, Command::Run(_));
    let result = match cli.command {
        Command::Registry(Deferred(cmd)) => ok(registry_cmd::run(explicit_root.as_deref(), cmd)),
        Command::Build(Deferred(args)) => ok(build_cmd::run(&root, args)),
        Command::Builder(Deferred(cmd)) => ok(build_cmd::builder(&root, cmd)),
        Command::Image(Deferred(cmd)) => ok(image_cmd::run(&root, cmd)),
        Command::Images(Deferred(args)) => {
            ok(image_cmd::run(&root, image_cmd::ImageCommand::Ls(args)))
        }
        Command::Tag(Deferred(args)) => {
            ok(image_cmd::run(&root, image_cmd::ImageCommand::Tag(args)))
        }
        Command::Rmi(Deferred(args)) => {
            ok(image_cmd::run(&root, image_cmd::ImageCommand::Rm(args)))
        }
        Command::Inspect(Deferred(args)) => ok(image_cmd::run(
            &root,
            image_cmd::ImageCommand::Inspect(args),
        )),
        Command::Login(Deferred(args)) => ok(client_cmd::login(args)),
        Command::Logout(Deferred(args)) => ok(client_cmd::logout(args)),
        Command::Pull(Deferred(args)) => ok(client_cmd::pull(&root, args)),
        Command::Push(Deferred(args)) => ok(client_cmd::push(&root, args)),
        Command::Run(Deferred(args)) => run_cmd::run(&root, args),
        Command::Exec(Deferred(args)) => run_cmd::exec(&root, args),
        Command::Ps(Deferred(args)) => ok(run_cmd::ps(&root, args)),
        Command::Logs(Deferred(args)) => ok(run_cmd::logs(&root, args)),
        Command::Stop(Deferred(args)) => ok(run_cmd::stop(&root, args)),
        Command::Rm(Deferred(args)) => ok(run_cmd::rm(&root, args)),
        Command::ContainerShim(Deferred(args)) => ok(run_cmd::shim(&root, args)),
        Command::Up(Deferred(args)) => ok(cluster_cmd::up(&root, args)),
        Command::Down(Deferred(args)) => ok(cluster_cmd::down(&root, args)),
        Command::Node(Deferred(args)) => ok(node_cmd::run(&root, args)),
        Command::Crictl(Deferred(cmd)) => ok(crictl_cmd::run(&root, cmd)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {}", error_chain(&e));
            // docker run's code for failures of its own (not the container's).
            if is_run {
                ExitCode::from(125)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
