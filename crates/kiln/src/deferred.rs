//! Subcommand definitions that clap builds only when their subcommand is chosen.
//!
//! clap's derive builds every subcommand's arguments before it parses anything. For one binary
//! with many subcommands that means running code spread over the whole executable at every
//! start, and a long-running `kiln registry serve` or `kiln up` keeps those pages resident for
//! nothing. Wrapping a subcommand's type in [`Deferred`] hands its definition to
//! `Command::defer`, so only the chosen path (and the names and one-line help of the others)
//! is built.

use clap::{ArgMatches, Args, Command, FromArgMatches, Id, Subcommand};

/// A subcommand's arguments (`T: Args`) or nested subcommands (`T: Subcommand`), built lazily.
pub struct Deferred<T>(pub T);

impl<T: FromArgMatches> FromArgMatches for Deferred<T> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(matches).map(Self)
    }

    fn from_arg_matches_mut(matches: &mut ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches_mut(matches).map(Self)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }

    fn update_from_arg_matches_mut(&mut self, matches: &mut ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches_mut(matches)
    }
}

impl<T: Args> Args for Deferred<T> {
    fn group_id() -> Option<Id> {
        T::group_id()
    }

    fn augment_args(cmd: Command) -> Command {
        cmd.defer(T::augment_args)
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        cmd.defer(T::augment_args_for_update)
    }
}

impl<T: Subcommand> Subcommand for Deferred<T> {
    fn augment_subcommands(cmd: Command) -> Command {
        cmd.defer(T::augment_subcommands)
    }

    fn augment_subcommands_for_update(cmd: Command) -> Command {
        cmd.defer(T::augment_subcommands_for_update)
    }

    fn has_subcommand(name: &str) -> bool {
        T::has_subcommand(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Args)]
    struct Inner {
        #[arg(long)]
        level: u32,
        name: String,
    }

    #[derive(Subcommand)]
    enum Nested {
        /// Say a name
        Say(Deferred<Inner>),
    }

    #[derive(Subcommand)]
    enum Top {
        /// Run inner
        Run(Deferred<Inner>),
        /// Nested commands
        #[command(subcommand)]
        Group(Deferred<Nested>),
    }

    #[derive(Parser)]
    #[command(name = "t")]
    struct Cli {
        #[arg(long, global = true)]
        root: Option<String>,
        #[command(subcommand)]
        command: Top,
    }

    #[test]
    fn deferred_arguments_parse_like_eager_ones() {
        let cli =
            Cli::try_parse_from(["t", "run", "--level", "3", "x", "--root", "/r"]).expect("parses");
        assert_eq!(cli.root.as_deref(), Some("/r"));
        let Top::Run(Deferred(inner)) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!((inner.level, inner.name.as_str()), (3, "x"));

        let cli = Cli::try_parse_from(["t", "group", "say", "--level", "1", "y"]).expect("nested");
        let Top::Group(Deferred(Nested::Say(Deferred(inner)))) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!(inner.name, "y");
    }

    #[test]
    fn deferred_arguments_still_validate_and_document() {
        let err = Cli::try_parse_from(["t", "run", "--level", "x", "n"])
            .err()
            .expect("bad number refused");
        assert!(err.to_string().contains("--level"), "{err}");
        let err = Cli::try_parse_from(["t", "run", "--level", "1"])
            .err()
            .expect("missing positional refused");
        assert!(err.to_string().contains("<NAME>"), "{err}");
        let help = Cli::try_parse_from(["t", "--help"])
            .err()
            .expect("help")
            .to_string();
        assert!(
            help.contains("Run inner") && help.contains("Nested commands"),
            "{help}"
        );
        let help = Cli::try_parse_from(["t", "run", "--help"])
            .err()
            .expect("help")
            .to_string();
        assert!(
            help.contains("--level") && help.contains("--root"),
            "{help}"
        );
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
