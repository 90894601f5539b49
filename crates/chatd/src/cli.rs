//! The `chatd` command line. Every flag can also be set through a `CHATD_*` environment variable;
//! a flag given on the command line wins over the environment.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// chatd: a self-hosted control plane for AI coding agents.
#[derive(Debug, Parser)]
#[command(name = "chatd", version, about, long_about = None)]
pub struct Cli {
    /// Which log lines to write to stderr, as a `tracing` filter (e.g. `info`,
    /// `chatd=debug,tower=warn`).
    #[arg(long, env = "CHATD_LOG", default_value = "info", global = true)]
    pub log_filter: String,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: serve the gRPC API until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Apply the database migrations (`migrations/postgres/`) and exit.
    Migrate(MigrateArgs),
}

/// Flags of `chatd migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// PostgreSQL URL, e.g. `postgres://chatd@127.0.0.1:5432/chatd`.
    #[arg(long, env = "CHATD_DATABASE_URL")]
    pub database_url: String,

    /// Connection settings.
    #[command(flatten)]
    pub connect: DatabaseConnectArgs,
}

/// How to reach the database.
#[derive(Debug, Args)]
pub struct DatabaseConnectArgs {
    /// How long to keep trying to reach the database before giving up (e.g. `10s`).
    #[arg(long, env = "CHATD_DATABASE_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub database_connect_timeout: Duration,
}

/// Flags of `chatd serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the gRPC listener (health, reflection and, as they land, the chatd services).
    /// Port 0 picks a free port; the chosen address is logged as `addr=`.
    #[arg(long, env = "CHATD_LISTEN", default_value = "127.0.0.1:7420")]
    pub listen: SocketAddr,

    /// How long in-flight calls and open streams may take to finish after SIGINT or SIGTERM
    /// before the daemon closes them and exits (e.g. `10s`, `1m`).
    #[arg(long, env = "CHATD_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// PostgreSQL URL. When set, the daemon connects at start and applies pending migrations
    /// (see `--no-migrate`). Not needed yet by the services served today.
    #[arg(long, env = "CHATD_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Do not apply migrations at start (apply them with `chatd migrate` instead).
    #[arg(long, env = "CHATD_NO_MIGRATE")]
    pub no_migrate: bool,

    /// Connection settings.
    #[command(flatten)]
    pub connect: DatabaseConnectArgs,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (expected e.g. `10s`, `500ms`, `1m`)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_defaults_match_the_readme() {
        let cli = Cli::try_parse_from(["chatd", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(args.listen, "127.0.0.1:7420".parse::<SocketAddr>().unwrap());
        assert_eq!(args.shutdown_grace, Duration::from_secs(10));
        assert_eq!(cli.log_filter, "info");
    }

    #[test]
    fn a_bad_duration_is_a_clear_error() {
        let err = Cli::try_parse_from(["chatd", "serve", "--shutdown-grace", "soon"]).unwrap_err();
        assert!(err.to_string().contains("expected e.g. `10s`"), "{err}");
    }

    #[test]
    fn a_bad_listen_address_is_rejected() {
        assert!(Cli::try_parse_from(["chatd", "serve", "--listen", "localhost"]).is_err());
    }
}
