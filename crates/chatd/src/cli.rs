//! The `chatd` command line. Every flag can also be set through a `CHATD_*` environment variable
//! or a key of the configuration file (`--config`, see [`crate::config`]); the command line wins
//! over the environment, which wins over the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::seed::{ModelSeed, ModelSeeding, SeedProvider};

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// chatd: a self-hosted control plane for AI coding agents.
#[derive(Debug, Parser)]
#[command(name = "chatd", version, about, long_about = None)]
pub struct Cli {
    /// Which log lines to write to stderr, as a `tracing` filter (e.g. `info`,
    /// `chatd=debug,tower=warn`).
    #[arg(long, env = "CHATD_LOG", default_value = "info", global = true)]
    pub log_filter: String,

    /// How log lines are written: `text` for people, `json` (one object per line, with the
    /// fields of the event and of the spans it is in, such as `chat_id`) for log collectors.
    #[arg(long, env = "CHATD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Export the spans chatd emits (a turn, its model calls, tool steps and tool calls, each
    /// with its `chat_id`) as OpenTelemetry traces over OTLP/gRPC to this collector, e.g.
    /// `http://otel-collector:4317` (`https://` for TLS, checked against the system's roots).
    /// Off when not given. Spans of `info` level and above are sent, whatever `--log-filter`
    /// says.
    #[arg(long, env = "CHATD_OTLP_ENDPOINT", global = true, value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// A TOML file of settings. Its keys are the long flags of the subcommand without the
    /// dashes (`listen = "127.0.0.1:7420"`, `database-url = "postgres://…"`, `no-migrate =
    /// true`, lists as arrays); `chatd serve` also reads `[[model]]` tables (see the README).
    /// A flag or `CHATD_*` variable wins over the file.
    #[arg(long, env = "CHATD_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: serve the gRPC API until SIGINT or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Apply the database migrations (`migrations/postgres/` or `migrations/sqlite/`) and exit.
    Migrate(MigrateArgs),
    /// Administration that needs the database, not a running daemon.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Run only the provisioner (workspace build jobs on the local backend), apart from the
    /// daemon that serves the API; start that one with `--provisioner-workers 0`.
    Provisioner(ProvisionerCommandArgs),
}

/// Flags of `chatd provisioner`.
#[derive(Debug, Args)]
pub struct ProvisionerCommandArgs {
    /// PostgreSQL URL, e.g. `postgres://chatd@127.0.0.1:5432/chatd` (a separate provisioner
    /// shares the database with the daemon, which an embedded file cannot do).
    #[arg(long, env = "CHATD_DATABASE_URL")]
    pub database_url: String,

    /// Do not apply migrations at start.
    #[arg(long, env = "CHATD_NO_MIGRATE")]
    pub no_migrate: bool,

    /// How long running jobs may take to finish after SIGINT or SIGTERM.
    #[arg(long, env = "CHATD_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Jobs run at once.
    #[arg(long, env = "CHATD_PROVISIONER_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: u16,

    /// Connection settings.
    #[command(flatten)]
    pub connect: DatabaseConnectArgs,

    /// Provisioner settings.
    #[command(flatten)]
    pub provisioner: ProvisionerArgs,
}

/// The database URL given, else the embedded file `chatd.db` in the data directory.
pub fn database_url_or_default(url: Option<&str>, data_dir: Option<&std::path::Path>) -> String {
    match url {
        Some(url) => url.to_owned(),
        None => {
            let dir =
                data_dir.map_or_else(crate::build_workers::default_data_dir, ToOwned::to_owned);
            format!("sqlite://{}", dir.join("chatd.db").display())
        }
    }
}

/// Settings of the provisioner and its local backend (shared by `serve` and `provisioner`).
#[derive(Debug, Args)]
pub struct ProvisionerArgs {
    /// Where workspaces live (`<dir>/workspaces/<id>/home`) and the provisioner keeps its id.
    /// Default: `/var/lib/chatd` for root, else `$XDG_DATA_HOME/chatd`, else
    /// `~/.local/share/chatd`.
    #[arg(long, env = "CHATD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// The uids workspaces run as, `FIRST-LAST`, when chatd runs as root: each workspace gets
    /// one of its own, owns its home, and cannot read other workspaces or the data dir's
    /// secrets. Run unprivileged, chatd cannot switch users: workspaces then run as chatd's
    /// user, isolated by environment only, and the local backend is for a single trusted user.
    #[arg(long, env = "CHATD_WORKSPACE_UIDS", default_value = "200000-265535", value_parser = parse_uid_range)]
    pub workspace_uids: (u32, u32),

    /// Most processes (threads included) one workspace may run, when workspaces have users of
    /// their own.
    #[arg(long, env = "CHATD_WORKSPACE_MAX_PROCESSES", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(16..))]
    pub workspace_max_processes: u64,

    /// The workspace agent executable started for each workspace. Default: `wsagent` next to
    /// the chatd executable, else from `PATH`.
    #[arg(long, env = "CHATD_AGENT_BINARY")]
    pub agent_binary: Option<PathBuf>,

    /// The URL agents report to (chatd's gRPC address, e.g. `http://127.0.0.1:7420`).
    /// Default for `serve`: its advertised address (`--advertise-address`). Required for
    /// `provisioner`.
    #[arg(long, env = "CHATD_CONTROL_PLANE_URL")]
    pub control_plane_url: Option<String>,

    /// CA certificates (PEM) agents check an `https://` control plane's certificate against,
    /// passed to each agent as `WSAGENT_CA_CERT`; workspace users must be able to read the file.
    /// Default for `serve`: `--tls-ca`; else the system's roots.
    #[arg(long, env = "CHATD_CONTROL_PLANE_CA", value_name = "FILE")]
    pub control_plane_ca: Option<PathBuf>,

    /// The address workspace agents listen on (each on a free port). Keep the default when
    /// the daemon that runs chats is on this host; give this host's address (the pod IP) when
    /// replicas on other hosts dial the agents (`chatd provisioner` in a pod of its own).
    #[arg(
        long,
        env = "CHATD_AGENT_LISTEN_IP",
        default_value = "127.0.0.1",
        value_name = "IP"
    )]
    pub agent_listen_ip: std::net::IpAddr,

    /// A PEM certificate every workspace agent serves TLS with (needs `--agent-tls-key`), for
    /// agents reached over a network: they then report `https://` addresses, which replicas
    /// check against `--tls-ca`. Every agent gets the same pair and workspace users can read
    /// it: it proves "an agent of this provisioner's host", while each agent still needs its
    /// workspace's secret to be called.
    #[arg(
        long,
        env = "CHATD_AGENT_TLS_CERT",
        requires = "agent_tls_key",
        value_name = "FILE"
    )]
    pub agent_tls_cert: Option<PathBuf>,

    /// The PEM private key of `--agent-tls-cert`.
    #[arg(
        long,
        env = "CHATD_AGENT_TLS_KEY",
        requires = "agent_tls_cert",
        value_name = "FILE"
    )]
    pub agent_tls_key: Option<PathBuf>,

    /// How long a stopping agent gets between SIGTERM and SIGKILL.
    #[arg(long, env = "CHATD_AGENT_STOP_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub agent_stop_grace: Duration,

    /// Safety-net poll for new jobs and cancellations when notifications are lost.
    #[arg(long, env = "CHATD_PROVISIONER_POLL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub provisioner_poll_interval: Duration,

    /// The heartbeat interval agents are told to use.
    #[arg(long, env = "CHATD_AGENT_HEARTBEAT_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub agent_heartbeat_interval: Duration,
}

impl ProvisionerArgs {
    /// The settings, with `workers` jobs at once.
    pub fn settings(&self, workers: usize) -> crate::build_workers::ProvisionerSettings {
        crate::build_workers::ProvisionerSettings {
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(crate::build_workers::default_data_dir),
            workers,
            agent_binary: self
                .agent_binary
                .clone()
                .unwrap_or_else(crate::build_workers::default_agent_binary),
            control_plane_url: self.control_plane_url.clone(),
            control_plane_ca: self.control_plane_ca.clone(),
            agent_listen_ip: self.agent_listen_ip,
            agent_tls: self.agent_tls_cert.clone().zip(self.agent_tls_key.clone()),
            agent_stop_grace: self.agent_stop_grace,
            agent_heartbeat_interval: self.agent_heartbeat_interval,
            poll_interval: self.provisioner_poll_interval,
            workspace_users: provisioner::WorkspaceUsers {
                first_uid: self.workspace_uids.0,
                count: self.workspace_uids.1 - self.workspace_uids.0 + 1,
                max_processes: self.workspace_max_processes,
            },
        }
    }
}

/// `FIRST-LAST`: an inclusive uid range above the system's own users (1000 and up).
fn parse_uid_range(text: &str) -> Result<(u32, u32), String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not FIRST-LAST, e.g. 200000-265535"))?;
    let number = |part: &str| {
        part.trim()
            .parse::<u32>()
            .map_err(|e| format!("{part:?} in {text:?} is not a uid: {e}"))
    };
    let (first, last) = (number(first)?, number(last)?);
    if first < 1000 || last < first || last == u32::MAX {
        return Err(format!(
            "{text:?}: the range must start at 1000 or above and end at or after its start"
        ));
    }
    Ok((first, last))
}

/// `chatd admin …`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Mint a new API token for an admin and print it: the way back in when the first admin's
    /// token has expired or was lost. Needs access to the database, not a running daemon.
    Token(AdminTokenArgs),
}

/// Flags of `chatd admin token`.
#[derive(Debug, Args)]
pub struct AdminTokenArgs {
    /// The admin to mint the token for.
    #[arg(long, default_value = "admin")]
    pub username: String,
    /// How long the token is valid.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub lifetime: Duration,
    /// The database.
    #[command(flatten)]
    pub database: LocalDatabaseArgs,
}

/// Flags of `chatd migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The database to migrate.
    #[command(flatten)]
    pub database: LocalDatabaseArgs,
}

/// The database of a local command (`migrate`, `admin token`).
#[derive(Debug, Args)]
pub struct LocalDatabaseArgs {
    /// The database: `postgres://USER@HOST:PORT/DB` or `sqlite://PATH`. Default: the embedded
    /// file `<data-dir>/chatd.db`, as for `serve`.
    #[arg(long, env = "CHATD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The data directory whose `chatd.db` is used when no `--database-url` is given.
    /// Default: `/var/lib/chatd` for root, else `$XDG_DATA_HOME/chatd`, else `~/.local/share/chatd`.
    #[arg(long, env = "CHATD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Connection settings.
    #[command(flatten)]
    pub connect: DatabaseConnectArgs,
}

impl LocalDatabaseArgs {
    /// The database to open, applying migrations when `migrate`.
    pub fn config(&self, migrate: bool) -> crate::DatabaseConfig {
        crate::DatabaseConfig {
            url: database_url_or_default(self.database_url.as_deref(), self.data_dir.as_deref()),
            migrate,
            connect_timeout: self.connect.database_connect_timeout,
        }
    }
}

/// How to reach the database.
#[derive(Debug, Args)]
pub struct DatabaseConnectArgs {
    /// How long to keep trying to reach the database before giving up (e.g. `10s`).
    #[arg(long, env = "CHATD_DATABASE_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub database_connect_timeout: Duration,
}

/// TLS flags of `chatd serve`.
#[derive(Debug, Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// Serve gRPC (and the relay) over TLS with this PEM certificate chain; needs `--tls-key`.
    /// The files are re-read every `--tls-reload-interval`: a rotated pair (cert-manager) is
    /// used by new connections without a restart. The advertised address becomes `https://`.
    #[arg(
        long,
        env = "CHATD_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(
        long,
        env = "CHATD_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,

    /// How often `--tls-cert` and `--tls-key` are re-read (0s = never).
    #[arg(long, env = "CHATD_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,

    /// CA certificates (PEM) that other replicas' certificates (the relay) and the certificates
    /// of agents serving TLS are checked against. Default: the system's roots.
    #[arg(long, env = "CHATD_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// The name other replicas' certificates are checked against instead of the address
    /// dialled: replicas advertise their pod IPs, while their certificate names the Service
    /// (e.g. `chatd.chatd.svc`).
    #[arg(long, env = "CHATD_TLS_PEER_NAME", value_name = "NAME")]
    pub tls_peer_name: Option<String>,

    /// The name workspace agents' certificates are checked against instead of the address
    /// dialled (agents of a separate provisioner report its pod IP). Give agents a name of
    /// their own: workspace users can read the agents' key.
    #[arg(long, env = "CHATD_TLS_AGENT_NAME", value_name = "NAME")]
    pub tls_agent_name: Option<String>,
}

impl TlsArgs {
    /// The settings these flags give.
    pub fn config(&self) -> crate::TlsConfig {
        crate::TlsConfig {
            serve: self
                .tls_cert
                .clone()
                .zip(self.tls_key.clone())
                .map(|(cert, key)| chattls::CertFiles::new(cert, key)),
            reload_interval: self.tls_reload_interval,
            ca: self.tls_ca.clone(),
            peer_name: self.tls_peer_name.clone(),
            agent_name: self.tls_agent_name.clone(),
        }
    }
}

/// Flags of `chatd serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the gRPC listener (health, reflection and, as they land, the chatd services).
    /// Port 0 picks a free port; the chosen address is logged as `addr=`.
    #[arg(long, env = "CHATD_LISTEN", default_value = "127.0.0.1:7420")]
    pub listen: SocketAddr,

    /// The address other replicas use for the live-part relay and workspace agents use to
    /// report (unless `--control-plane-url` is given): `HOST`, `HOST:PORT`, `IP`, `IP:PORT` or an
    /// `http(s)://` URL; without a port, the listener's. Default: the listen address. Required
    /// when listening on every interface (`0.0.0.0`, `[::]`); on Kubernetes, the pod IP.
    #[arg(long, env = "CHATD_ADVERTISE_ADDRESS", value_name = "ADDR")]
    pub advertise_address: Option<String>,

    /// Serve the part relay between replicas on a listener of its own (e.g. `0.0.0.0:7421`), so a
    /// network policy can let only replicas reach it; other replicas dial the advertised host
    /// with this port. Default: the relay is served on `--listen`.
    #[arg(long, env = "CHATD_RELAY_LISTEN", value_name = "ADDR")]
    pub relay_listen: Option<SocketAddr>,

    /// Serve only the gRPC health service (`grpc.health.v1.Health`), always without TLS, on this
    /// address: for probes that cannot speak TLS, such as Kubernetes' gRPC probes. Off when not
    /// given.
    #[arg(long, env = "CHATD_HEALTH_LISTEN", value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,

    /// Addresses besides loopback where agents of the local backend may listen, as
    /// `ADDRESS/PREFIX` blocks (comma-separated): the network of `chatd provisioner` pods that
    /// run apart from the replicas (`--agent-listen-ip`). Agents report their own address, and
    /// chatd refuses one outside these blocks rather than dial it.
    #[arg(
        long,
        env = "CHATD_AGENT_NETWORKS",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub agent_networks: Vec<crate::agentapi::AgentNetwork>,

    /// TLS of the listeners, the relay and the agent connections.
    #[command(flatten)]
    pub tls: TlsArgs,

    /// Serve Prometheus metrics (`GET /metrics`) on this address, e.g. `127.0.0.1:9464`; port 0
    /// picks a free port (logged as `metrics_at=`). Off when not given.
    #[arg(long, env = "CHATD_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// How long in-flight calls and open streams may take to finish after SIGINT or SIGTERM
    /// before the daemon closes them and exits (e.g. `10s`, `1m`).
    #[arg(long, env = "CHATD_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// The database. Default: the embedded file `<data-dir>/chatd.db`, created and migrated on
    /// first start; one daemon owns it (a second one on the same file refuses to start).
    /// `sqlite://PATH` names another file; several replicas need PostgreSQL:
    /// `postgres://USER:PASSWORD@HOST:PORT/DB` (migrated at start unless `--no-migrate`); add
    /// `?sslmode=require` for TLS, or `?sslmode=verify-full&sslrootcert=/path/ca.pem` to check
    /// the server's certificate.
    #[arg(long, env = "CHATD_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Provisioner jobs run at once by the embedded provisioner; 0 = none (run
    /// `chatd provisioner` separately).
    #[arg(long, env = "CHATD_PROVISIONER_WORKERS", default_value_t = 2)]
    pub provisioner_workers: u16,

    /// Provisioner settings.
    #[command(flatten)]
    pub provisioner: ProvisionerArgs,

    /// Do not apply migrations at start (apply them with `chatd migrate` instead).
    #[arg(long, env = "CHATD_NO_MIGRATE")]
    pub no_migrate: bool,

    /// Do not create the first admin on an empty database. By default, a database without any
    /// user gets organization `default` and admin `admin`, whose API token is written to
    /// `<data-dir>/admin-token` (readable only by its owner).
    #[arg(long, env = "CHATD_NO_BOOTSTRAP_ADMIN")]
    pub no_bootstrap_admin: bool,

    /// How long the first admin's token (in `<data-dir>/admin-token`) is valid. Mint another
    /// with `chatd admin token`.
    #[arg(long, env = "CHATD_BOOTSTRAP_TOKEN_LIFETIME", default_value = "24h", value_parser = parse_duration)]
    pub bootstrap_token_lifetime: Duration,

    /// Connection settings.
    #[command(flatten)]
    pub connect: DatabaseConnectArgs,

    /// Timing of the chat engine and streams.
    #[command(flatten)]
    pub timing: TimingArgs,

    /// The engine's limits, retries and tool settings.
    #[command(flatten)]
    pub engine: EngineArgs,

    /// Model providers seeded into model configurations at start.
    #[command(flatten)]
    pub providers: ProviderArgs,

    /// The `[[model]]` tables of the configuration file (not a flag).
    #[arg(skip)]
    pub file_models: Vec<ModelSeed>,
}

impl ServeArgs {
    /// Every model to seed: the provider flags' first, then the configuration file's, then
    /// those of a provider whose key is in chatd's environment ([`PROVIDER_KEY_VARIABLES`])
    /// while nothing else configures that provider.
    pub fn model_seeding(&self) -> ModelSeeding {
        self.model_seeding_with(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
    }

    /// [`model_seeding`](Self::model_seeding) with `is_set` telling which environment
    /// variables are set (tests pass their own).
    pub fn model_seeding_with(&self, is_set: impl Fn(&str) -> bool) -> ModelSeeding {
        let mut seeds = self.providers.seeds();
        seeds.extend(self.file_models.iter().cloned());
        let mut from_environment = Vec::new();
        for (provider, variable) in PROVIDER_KEY_VARIABLES {
            let configured = seeds.iter().any(|s| s.provider == provider);
            if configured || !is_set(variable) {
                continue;
            }
            from_environment.push(variable);
            seeds.extend(
                self.providers
                    .provider_seeds(provider, &format!("env:{variable}")),
            );
        }
        ModelSeeding {
            organization: self.providers.models_organization.clone(),
            seeds,
            from_environment,
            keys: self.providers.key_references(),
        }
    }
}

/// The variables whose presence in chatd's environment seeds a provider that nothing else
/// configures: its `--…-models` with the key reference `env:<variable>` (never the value).
pub const PROVIDER_KEY_VARIABLES: [(SeedProvider, &str); 2] = [
    (SeedProvider::Anthropic, "ANTHROPIC_API_KEY"),
    (SeedProvider::Openai, "OPENAI_API_KEY"),
];

/// Model providers. A provider whose API key reference (or, for an OpenAI-compatible server,
/// base URL) is given has its models added to the organization's model configurations at every
/// start, unless there already (then only the key reference is updated). API keys are never
/// flags: give a reference, `env:NAME` (chatd's environment) or `file:PATH`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Model providers")]
pub struct ProviderArgs {
    /// Where the Anthropic API key comes from (`env:ANTHROPIC_API_KEY`, `file:/run/secrets/…`);
    /// seeds the `--anthropic-models`.
    #[arg(long, env = "CHATD_ANTHROPIC_API_KEY_REF", value_name = "REF")]
    pub anthropic_api_key_ref: Option<String>,

    /// Anthropic models to seed, comma-separated.
    #[arg(
        long,
        env = "CHATD_ANTHROPIC_MODELS",
        value_delimiter = ',',
        default_value = "claude-sonnet-4-5"
    )]
    pub anthropic_models: Vec<String>,

    /// Anthropic's base URL (default: its public endpoint).
    #[arg(long, env = "CHATD_ANTHROPIC_BASE_URL", value_name = "URL")]
    pub anthropic_base_url: Option<String>,

    /// Where the OpenAI API key comes from (`env:OPENAI_API_KEY`, `file:…`); seeds the
    /// `--openai-models`.
    #[arg(long, env = "CHATD_OPENAI_API_KEY_REF", value_name = "REF")]
    pub openai_api_key_ref: Option<String>,

    /// OpenAI models to seed, comma-separated.
    #[arg(
        long,
        env = "CHATD_OPENAI_MODELS",
        value_delimiter = ',',
        default_value = "gpt-4.1"
    )]
    pub openai_models: Vec<String>,

    /// OpenAI's base URL (default: its public endpoint).
    #[arg(long, env = "CHATD_OPENAI_BASE_URL", value_name = "URL")]
    pub openai_base_url: Option<String>,

    /// Base URL of an OpenAI-compatible server (vLLM, Ollama, LiteLLM, …), e.g.
    /// `http://127.0.0.1:8000/v1`; seeds the `--openai-compat-models`.
    #[arg(
        long,
        env = "CHATD_OPENAI_COMPAT_BASE_URL",
        value_name = "URL",
        requires = "openai_compat_models"
    )]
    pub openai_compat_base_url: Option<String>,

    /// Where the OpenAI-compatible server's API key comes from; none when not given.
    #[arg(long, env = "CHATD_OPENAI_COMPAT_API_KEY_REF", value_name = "REF")]
    pub openai_compat_api_key_ref: Option<String>,

    /// The OpenAI-compatible server's models to seed, comma-separated (required with
    /// `--openai-compat-base-url`).
    #[arg(
        long,
        env = "CHATD_OPENAI_COMPAT_MODELS",
        value_delimiter = ',',
        requires = "openai_compat_base_url"
    )]
    pub openai_compat_models: Vec<String>,

    /// The environment variables chatd reads API keys from (`env:NAME` references), as
    /// comma-separated patterns where `*` matches any run of characters. A model configuration
    /// naming any other variable is refused: it would send, say, the database URL to a host of
    /// an API admin's choosing.
    #[arg(
        long,
        env = "CHATD_API_KEY_ENV_PATTERNS",
        value_delimiter = ',',
        default_value = "*_API_KEY",
        value_name = "PATTERNS"
    )]
    pub api_key_env_patterns: Vec<String>,

    /// The directories chatd reads API key files from (`file:PATH` references),
    /// comma-separated; files elsewhere (symbolic links resolved) are refused.
    #[arg(
        long,
        env = "CHATD_API_KEY_DIRS",
        value_delimiter = ',',
        default_value = "/run/secrets",
        value_name = "DIRS"
    )]
    pub api_key_dirs: Vec<PathBuf>,

    /// The organization seeded models belong to (the first start creates `default`).
    #[arg(
        long,
        env = "CHATD_MODELS_ORGANIZATION",
        default_value = "default",
        value_name = "NAME"
    )]
    pub models_organization: String,
}

impl ProviderArgs {
    /// The API key references chatd reads.
    pub fn key_references(&self) -> chatengine::models::KeyReferences {
        chatengine::models::KeyReferences::new(
            self.api_key_env_patterns.clone(),
            self.api_key_dirs.clone(),
        )
    }

    /// The models of `provider` (its `--…-models` and `--…-base-url`) with the key reference
    /// `key_ref`.
    fn provider_seeds(&self, provider: SeedProvider, key_ref: &str) -> Vec<ModelSeed> {
        let (models, base_url) = match provider {
            SeedProvider::Anthropic => (&self.anthropic_models, &self.anthropic_base_url),
            SeedProvider::Openai => (&self.openai_models, &self.openai_base_url),
            SeedProvider::OpenaiCompat => {
                (&self.openai_compat_models, &self.openai_compat_base_url)
            }
        };
        models
            .iter()
            .filter(|m| !m.trim().is_empty())
            .map(|model| ModelSeed {
                provider,
                model: model.trim().to_owned(),
                display_name: String::new(),
                base_url: base_url.clone().unwrap_or_default(),
                api_key_ref: key_ref.to_owned(),
                context_limit: None,
                default: false,
            })
            .collect()
    }

    /// The models these flags name, in flag order.
    pub fn seeds(&self) -> Vec<ModelSeed> {
        let providers = [
            (
                SeedProvider::Anthropic,
                self.anthropic_api_key_ref.is_some(),
                &self.anthropic_api_key_ref,
            ),
            (
                SeedProvider::Openai,
                self.openai_api_key_ref.is_some(),
                &self.openai_api_key_ref,
            ),
            (
                SeedProvider::OpenaiCompat,
                self.openai_compat_base_url.is_some(),
                &self.openai_compat_api_key_ref,
            ),
        ];
        providers
            .into_iter()
            .filter(|(_, configured, _)| *configured)
            .flat_map(|(provider, _, key_ref)| {
                self.provider_seeds(provider, key_ref.as_deref().unwrap_or_default())
            })
            .collect()
    }
}

/// Timing knobs of the chat engine and of chat streams (spec/engine.md §18). The defaults are
/// the spec's; tests shrink them.
#[derive(Debug, Clone, Args)]
pub struct TimingArgs {
    /// How often a replica looks for chats to run without being notified.
    #[arg(long, env = "CHATD_ACQUIRE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub acquire_interval: Duration,

    /// How often a replica renews the leases of the chats it runs (and its relay address).
    #[arg(long, env = "CHATD_HEARTBEAT_INTERVAL", default_value = "9s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// How old a lease may get before another replica takes the chat over (after a crash);
    /// must be longer than the heartbeat interval. Every replica must use the same value.
    #[arg(long, env = "CHATD_LEASE_STALE_AFTER", default_value = "30s", value_parser = parse_duration)]
    pub lease_stale_after: Duration,

    /// How often an open chat stream re-checks the database without being notified.
    #[arg(long, env = "CHATD_STREAM_POLL_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub stream_poll_interval: Duration,

    /// How long a stream client may take no events before it is cut off (it reconnects and
    /// resumes), so a stalled client holds nothing for long.
    #[arg(long, env = "CHATD_STREAM_SUBSCRIBER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub stream_subscriber_timeout: Duration,

    /// How long a call to a workspace agent may go unanswered (a stopped or hung agent) before
    /// the tool returns a text telling the model how to recover. Calls that wait on purpose
    /// (a process's output) get their wait on top.
    #[arg(long, env = "CHATD_AGENT_CALL_DEADLINE", default_value = "60s", value_parser = parse_duration)]
    pub agent_call_deadline: Duration,

    /// How long Stop (or an edit that removes a running step) waits in all for the workspace
    /// agent to cancel the step's commands and file writes; 0s sends no cancel.
    #[arg(long, env = "CHATD_TOOL_CANCEL_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub tool_cancel_wait: Duration,

    /// How long a chat task may make no progress before it is cancelled and started again;
    /// raised to the stream silence timeout plus 5 minutes when that is longer.
    #[arg(long, env = "CHATD_TASK_IDLE_WATCHDOG", default_value = "15m", value_parser = parse_duration)]
    pub task_idle_watchdog: Duration,
}

impl TimingArgs {
    /// The timings, checked against each other.
    pub fn timing(&self) -> Result<crate::Timing, String> {
        for (flag, value) in [
            ("--acquire-interval", self.acquire_interval),
            ("--heartbeat-interval", self.heartbeat_interval),
            ("--stream-poll-interval", self.stream_poll_interval),
            (
                "--stream-subscriber-timeout",
                self.stream_subscriber_timeout,
            ),
            ("--agent-call-deadline", self.agent_call_deadline),
            ("--task-idle-watchdog", self.task_idle_watchdog),
        ] {
            if value.is_zero() {
                return Err(format!("{flag} must be longer than zero"));
            }
        }
        if self.lease_stale_after <= self.heartbeat_interval {
            return Err(format!(
                "--lease-stale-after ({}) must be longer than --heartbeat-interval ({}), or every \
                 lease would go stale between two heartbeats",
                humantime::format_duration(self.lease_stale_after),
                humantime::format_duration(self.heartbeat_interval)
            ));
        }
        Ok(crate::Timing {
            acquire_interval: self.acquire_interval,
            heartbeat_interval: self.heartbeat_interval,
            lease_stale_after: self.lease_stale_after,
            stream_poll_interval: self.stream_poll_interval,
            stream_subscriber_timeout: self.stream_subscriber_timeout,
            agent_call_deadline: self.agent_call_deadline,
            tool_cancel_wait: self.tool_cancel_wait,
            task_idle_watchdog: self.task_idle_watchdog,
        })
    }
}

/// The chat engine's limits, model-call retries and timeouts, and the tools' settings
/// (spec/engine.md §18). In the configuration file they may also sit in tables named after
/// their first word: `[retry] max-attempts = 10` is `retry-max-attempts = 10`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Engine")]
pub struct EngineArgs {
    /// The name ending that marks a workspace's chat agent, when a workspace has several
    /// agents (e.g. `dev-chat`); must not be empty.
    #[arg(long, env = "CHATD_CHAT_AGENT_SUFFIX", default_value = "-chat")]
    pub chat_agent_suffix: String,

    /// Most messages that may wait in a chat's queue while it is busy.
    #[arg(long, env = "CHATD_CHAT_MAX_QUEUE", default_value_t = chatstate::MAX_QUEUE)]
    pub chat_max_queue: usize,

    /// Model calls one turn may make after the user's message before it ends.
    #[arg(long, env = "CHATD_MAX_STEPS_PER_TURN", default_value_t = 1200)]
    pub max_steps_per_turn: usize,

    /// How long a client-executed tool call waits for its result before it is answered
    /// "Tool execution timed out".
    #[arg(long, env = "CHATD_REQUIRES_ACTION_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub requires_action_timeout: Duration,

    /// How long a model's stream may send nothing before the call is retried; 0s turns the
    /// guard off; at most 24h.
    #[arg(long, env = "CHATD_STREAM_SILENCE_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub stream_silence_timeout: Duration,

    /// Most calls of one model request, the first included, before its turn fails.
    #[arg(long, env = "CHATD_RETRY_MAX_ATTEMPTS", default_value_t = 25)]
    pub retry_max_attempts: u32,

    /// The first back-off between model calls; it doubles up to `--retry-max-delay`.
    #[arg(long, env = "CHATD_RETRY_INITIAL_DELAY", default_value = "1s", value_parser = parse_duration)]
    pub retry_initial_delay: Duration,

    /// The longest back-off between model calls.
    #[arg(long, env = "CHATD_RETRY_MAX_DELAY", default_value = "60s", value_parser = parse_duration)]
    pub retry_max_delay: Duration,

    /// Wall-clock time one model request may spend failing and waiting.
    #[arg(long, env = "CHATD_RETRY_BUDGET", default_value = "30m", value_parser = parse_duration)]
    pub retry_budget: Duration,

    /// The longest provider Retry-After waited for inside a turn; longer ones park the turn.
    #[arg(long, env = "CHATD_RETRY_MAX_INLINE_RETRY_AFTER", default_value = "60s", value_parser = parse_duration)]
    pub retry_max_inline_retry_after: Duration,

    /// The longest Retry-After for which a turn is parked; longer ones end it.
    #[arg(long, env = "CHATD_RETRY_MAX_PARK", default_value = "6h", value_parser = parse_duration)]
    pub retry_max_park: Duration,

    /// How long connecting to a model provider may take.
    #[arg(long, env = "CHATD_PROVIDER_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub provider_connect_timeout: Duration,

    /// How long a provider may take to answer a request's headers.
    #[arg(long, env = "CHATD_PROVIDER_FIRST_BYTE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub provider_first_byte_timeout: Duration,

    /// Keep provider rate limits per chat. By default, a rate limit with a Retry-After on one
    /// chat holds back every chat using the same provider, base URL and API key reference (on
    /// every replica sharing the database) until it ends; then one call probes before the
    /// others go.
    #[arg(long, env = "CHATD_NO_SHARED_RATE_LIMITS")]
    pub no_shared_rate_limits: bool,

    /// How often a replica reads the rate limits the other replicas recorded.
    #[arg(long, env = "CHATD_SHARED_RATE_LIMIT_POLL", default_value = "1s", value_parser = parse_duration)]
    pub shared_rate_limit_poll: Duration,

    /// How long dialling a workspace agent may take before the tool says so.
    #[arg(long, env = "CHATD_WORKSPACE_DIAL_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub workspace_dial_timeout: Duration,

    /// How long an agent must have been disconnected before the model is told to restart its
    /// workspace (instead of trying again).
    #[arg(long, env = "CHATD_WORKSPACE_RECOVERY_THRESHOLD", default_value = "90s", value_parser = parse_duration)]
    pub workspace_recovery_threshold: Duration,

    /// `execute`'s timeout when the model gives none.
    #[arg(long, env = "CHATD_EXECUTE_DEFAULT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub execute_default_timeout: Duration,

    /// `execute`'s longest timeout; longer ones are cut to it.
    #[arg(long, env = "CHATD_EXECUTE_MAX_TIMEOUT", default_value = "4h", value_parser = parse_duration)]
    pub execute_max_timeout: Duration,

    /// The templates chats may create workspaces from (template UUIDs, comma-separated);
    /// empty = all of the organization's.
    #[arg(long, env = "CHATD_TEMPLATE_ALLOWLIST", value_delimiter = ',')]
    pub template_allowlist: Vec<uuid::Uuid>,

    /// Time to live of the workspaces chats create; default: the template's.
    #[arg(long, env = "CHATD_WORKSPACE_TTL", value_parser = parse_duration)]
    pub workspace_ttl: Option<Duration>,

    /// When a pending agent dial checks whether the chat's workspace changed under it.
    #[arg(long, env = "CHATD_WORKSPACE_DIAL_VALIDATION_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub workspace_dial_validation_delay: Duration,

    /// How long an agent may send no heartbeat before it counts as disconnected.
    #[arg(long, env = "CHATD_WORKSPACE_AGENT_INACTIVE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub workspace_agent_inactive_timeout: Duration,

    /// How often a replica deletes heartbeat rows of chats it no longer runs.
    #[arg(long, env = "CHATD_HEARTBEAT_CLEANUP_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub heartbeat_cleanup_interval: Duration,

    /// How often every chat a replica runs is read again, in case a notification was lost.
    #[arg(long, env = "CHATD_RUNNER_SYNC_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub runner_sync_interval: Duration,

    /// The first wait before a chat task retries a database failure; it doubles up to
    /// `--task-retry-max`.
    #[arg(long, env = "CHATD_TASK_RETRY_INITIAL", default_value = "100ms", value_parser = parse_duration)]
    pub task_retry_initial: Duration,

    /// The longest wait between a chat task's retries of a database failure.
    #[arg(long, env = "CHATD_TASK_RETRY_MAX", default_value = "5s", value_parser = parse_duration)]
    pub task_retry_max: Duration,

    /// Most bytes of live parts one model call keeps for streams; later parts are dropped from
    /// the live view (the committed message is whole).
    #[arg(
        long,
        env = "CHATD_PARTS_EPISODE_MAX_BYTES",
        default_value_t = 1_000_000
    )]
    pub parts_episode_max_bytes: usize,

    /// How long a finished call's live parts stay for late streams.
    #[arg(long, env = "CHATD_PARTS_EPISODE_GC_AFTER", default_value = "15s", value_parser = parse_duration)]
    pub parts_episode_gc_after: Duration,
}

impl EngineArgs {
    /// The engine configuration these settings make (timings and addresses left at their
    /// defaults), checked: a message names the flag (the file's key) that is wrong.
    pub fn engine_config(&self) -> Result<chatengine::EngineConfig, String> {
        let suffix = agentselect::ChatSuffix::new(&self.chat_agent_suffix)
            .map_err(|e| format!("--chat-agent-suffix {:?}: {e}", self.chat_agent_suffix))?;
        let silence = chatretry::SilenceTimeout::new(self.stream_silence_timeout)
            .map_err(|e| format!("--stream-silence-timeout: {e}"))?;
        if self.max_steps_per_turn == 0 {
            return Err("--max-steps-per-turn must be at least 1".into());
        }
        if self.chat_max_queue == 0 {
            return Err("--chat-max-queue must be at least 1".into());
        }
        for (flag, value) in [
            (
                "--heartbeat-cleanup-interval",
                self.heartbeat_cleanup_interval,
            ),
            ("--runner-sync-interval", self.runner_sync_interval),
            ("--task-retry-initial", self.task_retry_initial),
            (
                "--workspace-agent-inactive-timeout",
                self.workspace_agent_inactive_timeout,
            ),
            ("--requires-action-timeout", self.requires_action_timeout),
            ("--retry-initial-delay", self.retry_initial_delay),
            ("--provider-connect-timeout", self.provider_connect_timeout),
            (
                "--provider-first-byte-timeout",
                self.provider_first_byte_timeout,
            ),
            ("--workspace-dial-timeout", self.workspace_dial_timeout),
            ("--execute-default-timeout", self.execute_default_timeout),
            ("--shared-rate-limit-poll", self.shared_rate_limit_poll),
        ] {
            if value.is_zero() {
                return Err(format!("{flag} must be longer than zero"));
            }
        }
        if self.retry_max_attempts == 0 {
            return Err("--retry-max-attempts must be at least 1".into());
        }
        not_longer(
            ("--retry-initial-delay", self.retry_initial_delay),
            ("--retry-max-delay", self.retry_max_delay),
        )?;
        not_longer(
            ("--task-retry-initial", self.task_retry_initial),
            ("--task-retry-max", self.task_retry_max),
        )?;
        if self.parts_episode_max_bytes < 1024 {
            return Err("--parts-episode-max-bytes must be at least 1024".into());
        }
        not_longer(
            ("--execute-default-timeout", self.execute_default_timeout),
            ("--execute-max-timeout", self.execute_max_timeout),
        )?;
        let mut config = chatengine::EngineConfig {
            heartbeat_cleanup_interval: self.heartbeat_cleanup_interval,
            runner_sync_interval: self.runner_sync_interval,
            task_retry_initial: self.task_retry_initial,
            task_retry_max: self.task_retry_max,
            max_steps_per_turn: self.max_steps_per_turn,
            stream_silence_timeout: silence,
            retry: chatretry::RetryPolicy {
                max_attempts: self.retry_max_attempts,
                initial_delay: self.retry_initial_delay,
                max_delay: self.retry_max_delay,
                budget: self.retry_budget,
                max_inline_retry_after: self.retry_max_inline_retry_after,
                max_park: self.retry_max_park,
                ..chatretry::RetryPolicy::default()
            },
            provider_timeouts: chatmodel::client::Timeouts {
                connect: self.provider_connect_timeout,
                first_byte: self.provider_first_byte_timeout,
                ..chatmodel::client::Timeouts::default()
            },
            shared_rate_limits: !self.no_shared_rate_limits,
            shared_limit_poll: self.shared_rate_limit_poll,
            ..chatengine::EngineConfig::default()
        };
        config.retry.validate().map_err(|e| e.to_string())?;
        config.resolver.dial_timeout = self.workspace_dial_timeout;
        config.resolver.dial_validation_delay = self.workspace_dial_validation_delay;
        config.resolver.agent_disconnected_recovery_threshold = self.workspace_recovery_threshold;
        // One setting for the resolver's gate and the tools' readiness checks.
        config.resolver.agent_inactive_timeout = self.workspace_agent_inactive_timeout;
        config.tools.agent_inactive_timeout = self.workspace_agent_inactive_timeout;
        config.parts.episode_max_bytes = self.parts_episode_max_bytes;
        config.parts.gc_after = self.parts_episode_gc_after;
        let tools = &mut config.tools;
        tools.chat_suffix = suffix;
        tools.execute_default_timeout = self.execute_default_timeout;
        tools.execute_max_timeout = self.execute_max_timeout;
        tools
            .template_allowlist
            .clone_from(&self.template_allowlist);
        tools.workspace_ttl = self.workspace_ttl;
        Ok(config)
    }
}

/// Refuses `short` longer than `long` (each a flag and its value), naming both.
fn not_longer(short: (&str, Duration), long: (&str, Duration)) -> Result<(), String> {
    if short.1 > long.1 {
        return Err(format!(
            "{} ({}) must not be longer than {} ({})",
            short.0,
            humantime::format_duration(short.1),
            long.0,
            humantime::format_duration(long.1)
        ));
    }
    Ok(())
}

/// A duration flag, at most [`MAX_DURATION`]: longer ones would overflow the deadlines they set.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{e} (expected e.g. `10s`, `500ms`, `1m`)"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "{text:?} is longer than the longest duration chatd takes, 10 years"
        ));
    }
    Ok(d)
}

/// The longest duration a flag takes (ten years).
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_stay_far_from_overflow() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("11y").is_err());
        assert!(parse_duration("500000000000y").is_err());
        assert!(Cli::try_parse_from(["chatd", "serve", "--shutdown-grace", "1000y"]).is_err());
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
    fn timings_default_to_the_spec_and_are_checked_against_each_other() {
        let parse = |extra: &[&str]| {
            let cli = Cli::try_parse_from(["chatd", "serve"].iter().chain(extra)).unwrap();
            let Command::Serve(args) = cli.command else {
                panic!("expected serve");
            };
            args.timing.timing()
        };
        assert_eq!(parse(&[]).unwrap(), crate::Timing::default());
        let err = parse(&["--heartbeat-interval", "30s"]).unwrap_err();
        assert!(
            err.contains("--lease-stale-after (30s) must be longer"),
            "{err}"
        );
        let err = parse(&["--stream-poll-interval", "0s"]).unwrap_err();
        assert!(
            err.contains("--stream-poll-interval must be longer than zero"),
            "{err}"
        );
        for flag in ["--agent-call-deadline", "--task-idle-watchdog"] {
            let err = parse(&[flag, "0s"]).unwrap_err();
            assert!(
                err.contains(&format!("{flag} must be longer than zero")),
                "{err}"
            );
        }
        let no_cancel = parse(&["--tool-cancel-wait", "0s"]).unwrap();
        assert!(no_cancel.tool_cancel_wait.is_zero());
        let fast = parse(&["--lease-stale-after", "3s", "--heartbeat-interval", "1s"]).unwrap();
        assert_eq!(fast.lease_stale_after, Duration::from_secs(3));
    }

    #[test]
    fn provider_flags_seed_their_models_only_when_configured() {
        let seeds = |extra: &[&str]| {
            let cli = Cli::try_parse_from(["chatd", "serve"].iter().chain(extra)).unwrap();
            let Command::Serve(args) = cli.command else {
                panic!("expected serve");
            };
            args.model_seeding_with(|_| false).seeds
        };
        assert!(seeds(&[]).is_empty(), "no credentials, no models");
        let seeded = seeds(&[
            "--openai-api-key-ref",
            "env:OPENAI_API_KEY",
            "--openai-compat-base-url",
            "http://127.0.0.1:8000/v1",
            "--openai-compat-models",
            "qwen,llama",
        ]);
        let summary: Vec<(&str, &str, &str, &str)> = seeded
            .iter()
            .map(|s| {
                (
                    s.provider.kind(),
                    s.model.as_str(),
                    s.base_url.as_str(),
                    s.api_key_ref.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("openai", "gpt-4.1", "", "env:OPENAI_API_KEY"),
                ("openai-compat", "qwen", "http://127.0.0.1:8000/v1", ""),
                ("openai-compat", "llama", "http://127.0.0.1:8000/v1", "")
            ]
        );
        let err = Cli::try_parse_from([
            "chatd",
            "serve",
            "--openai-compat-base-url",
            "http://127.0.0.1:8000/v1",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("--openai-compat-models"), "{err}");
    }

    #[test]
    fn a_provider_key_in_the_environment_seeds_that_provider_when_nothing_else_does() {
        let seeding = |extra: &[&str], set: &[&str]| {
            let cli = Cli::try_parse_from(["chatd", "serve"].iter().chain(extra)).unwrap();
            let Command::Serve(args) = cli.command else {
                panic!("expected serve");
            };
            let seeding = args.model_seeding_with(|name| set.contains(&name));
            let seeds: Vec<(&'static str, String, String)> = seeding
                .seeds
                .iter()
                .map(|s| (s.provider.kind(), s.model.clone(), s.api_key_ref.clone()))
                .collect();
            (seeds, seeding.from_environment)
        };
        let (seeds, from) = seeding(&[], &["ANTHROPIC_API_KEY"]);
        assert_eq!(
            seeds,
            [(
                "anthropic",
                "claude-sonnet-4-5".to_owned(),
                "env:ANTHROPIC_API_KEY".to_owned()
            )]
        );
        assert_eq!(from, ["ANTHROPIC_API_KEY"]);
        let (seeds, from) = seeding(&[], &["ANTHROPIC_API_KEY", "OPENAI_API_KEY"]);
        assert_eq!(seeds.len(), 2);
        assert_eq!(from, ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"]);
        // A configured key reference wins over the variable.
        let (seeds, from) = seeding(
            &["--anthropic-api-key-ref", "file:/run/secrets/anthropic"],
            &["ANTHROPIC_API_KEY"],
        );
        assert_eq!(
            seeds,
            [(
                "anthropic",
                "claude-sonnet-4-5".to_owned(),
                "file:/run/secrets/anthropic".to_owned()
            )]
        );
        assert!(from.is_empty());
        // The provider's model and base URL flags apply to the seeded models.
        let (seeds, _) = seeding(&["--openai-models", "gpt-a,gpt-b"], &["OPENAI_API_KEY"]);
        let models: Vec<&str> = seeds.iter().map(|s| s.1.as_str()).collect();
        assert_eq!(models, ["gpt-a", "gpt-b"]);
        assert!(seeding(&[], &[]).0.is_empty(), "no key, no models");
    }

    #[test]
    fn a_bad_listen_address_is_rejected() {
        assert!(Cli::try_parse_from(["chatd", "serve", "--listen", "localhost"]).is_err());
    }
}
