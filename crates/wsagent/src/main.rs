//! `wsagent`: the workspace agent binary. See the library's docs and `wsagent --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use wsagent::runtime::{self, Listen, Mode, Options};

/// The workspace agent: serves processes and files to chatd inside a workspace.
///
/// With --control-plane and --token it fetches its manifest from chatd's agent API, heartbeats,
/// runs the template's startup script and reports its lifecycle. With --secret it runs
/// standalone in --directory.
#[derive(Debug, Parser)]
#[command(name = "wsagent", version)]
struct Cli {
    /// Where to listen: host:port (port 0 = any free port) or unix:/path/to.sock.
    #[arg(long, env = "WSAGENT_LISTEN", default_value = "127.0.0.1:0")]
    listen: Listen,
    /// chatd's agent API URL, e.g. http://127.0.0.1:8080.
    #[arg(
        long,
        env = "WSAGENT_CONTROL_PLANE",
        requires = "token",
        conflicts_with = "secret"
    )]
    control_plane: Option<String>,
    /// The agent's token for the control plane (prefer the variable: arguments are visible to
    /// other users in the process list).
    #[arg(long, env = "WSAGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Standalone mode: the secret callers must present as `authorization: Bearer <secret>`.
    #[arg(
        long,
        env = "WSAGENT_SECRET",
        hide_env_values = true,
        required_unless_present = "control_plane"
    )]
    secret: Option<String>,
    /// Standalone mode: the working directory, to which file operations are confined.
    #[arg(long, env = "WSAGENT_DIRECTORY", default_value = ".")]
    directory: PathBuf,
    /// Standalone mode: a script run once at start with `sh -c`.
    #[arg(long, env = "WSAGENT_STARTUP_SCRIPT", default_value = "")]
    startup_script: String,
    /// Standalone mode: the startup script's time limit (0s = none).
    #[arg(long, env = "WSAGENT_STARTUP_TIMEOUT", default_value = "0s", value_parser = parse_duration)]
    startup_timeout: Duration,
    /// Heartbeat interval until the control plane names one.
    #[arg(long, env = "WSAGENT_HEARTBEAT_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// Serve TLS with this PEM certificate chain (with --tls-key); re-read every 10 s, so a
    /// rotated certificate is used without a restart. TCP listeners only.
    #[arg(
        long,
        env = "WSAGENT_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "WSAGENT_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM) the control plane's certificate is checked against when
    /// --control-plane is https:// (default: the system's roots).
    #[arg(long, env = "WSAGENT_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Grace for running processes at shutdown before they are killed.
    #[arg(long, env = "WSAGENT_SHUTDOWN_GRACE", default_value = "5s", value_parser = parse_duration)]
    shutdown_grace: Duration,
}

/// A duration flag of at most ten years: longer ones would overflow the deadlines they set.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d > Duration::from_secs(10 * 365 * 24 * 3600) {
        return Err(format!("{text:?} is longer than ten years"));
    }
    Ok(d)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    hide_secrets();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: the provisioner sends the log to a file (`agent.log`).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WSAGENT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mode = match (cli.control_plane, cli.token, cli.secret) {
        (Some(url), Some(token), _) => Mode::ControlPlane { url, token },
        (_, _, Some(secret)) => Mode::Standalone {
            secret,
            directory: cli.directory,
            startup_script: cli.startup_script,
            startup_timeout: cli.startup_timeout,
        },
        _ => {
            tracing::error!("give --control-plane with --token, or --secret");
            return ExitCode::from(2);
        }
    };
    let mut options = Options::new(mode);
    options.listen = cli.listen;
    options.heartbeat_interval = cli.heartbeat_interval;
    options.shutdown_grace = cli.shutdown_grace;
    options.tls = cli
        .tls_cert
        .zip(cli.tls_key)
        .map(|(cert, key)| chattls::CertFiles::new(cert, key));
    if let Some(path) = &cli.ca_cert {
        match chattls::ClientTls::from_ca_file(path) {
            Ok(tls) => options.control_plane_tls = Some(tls),
            Err(e) => {
                tracing::error!(error = %e, "--ca-cert");
                return ExitCode::from(2);
            }
        }
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let signals = match Signals::install() {
            Ok(signals) => signals,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return ExitCode::FAILURE;
            }
        };
        match runtime::run(options, signals.recv()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "wsagent stopped");
                ExitCode::FAILURE
            }
        }
    })
}

/// Keeps the agent's secrets from the processes it runs, which are the workspace's and untrusted.
/// The agent becomes non-dumpable, so processes of its own user can read neither its
/// `/proc/<pid>/environ` (the environment it started with, token included) nor its memory; and
/// no child inherits a `WSAGENT_*` variable ([`wsagent::process::workspace_command`]).
fn hide_secrets() {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("wsagent: cannot make the agent non-dumpable: {e}");
    }
    // chatd creates its own files private; the workspace's files get the usual mode.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
}

/// SIGTERM and SIGINT, installed before the agent starts.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
