//! The agent process: serve `wsagent.v1.Agent`, and (with a control plane) fetch the manifest,
//! heartbeat, run the startup script and report its logs and the lifecycle
//! `created → starting → ready | start_error | start_timeout`, then `shutting_down → off` on
//! shutdown.
//!
//! [`run`] is the whole of `wsagent`'s `main`, as a library function so the provisioner's tests
//! and other hosts can run an agent in-process as well as a child process.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use chatproto::chatd::v1 as cp;
use chatproto::chatd::v1::WorkspaceAgentLifecycle as Lifecycle;
use tokio::sync::{mpsc, watch};
use tonic::Code;

use crate::client::{self, ControlPlaneConn, DialError};
use crate::files::FileRoots;
use crate::process::{ProcessConfig, ProcessManager, non_interactive_env, workspace_command};
use crate::server::AgentService;
use shellscript::{self as startup, LogLine, Outcome, Stream};

/// Where the agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address (port 0 = any free port).
    Tcp(SocketAddr),
    /// A unix socket path (created; an existing stale socket is replaced).
    Unix(PathBuf),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path, e.g. unix:/run/wsagent.sock".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(Self::Tcp)
            .map_err(|e| format!("{s:?} is neither host:port nor unix:/path ({e})"))
    }
}

/// How the agent learns what to do.
#[derive(Debug, Clone)]
pub enum Mode {
    /// No control plane: everything comes from the command line.
    Standalone {
        /// The secret callers must present.
        secret: String,
        /// The working directory and file root.
        directory: PathBuf,
        /// Run once at start (empty = none).
        startup_script: String,
        /// The script's time limit (zero = none).
        startup_timeout: Duration,
    },
    /// Report to chatd's agent API with the agent's token; the manifest comes from there.
    ControlPlane {
        /// The agent API's URL (`http://127.0.0.1:8080`).
        url: String,
        /// The agent's token.
        token: String,
    },
}

/// The agent's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to listen.
    pub listen: Listen,
    /// Where the settings come from.
    pub mode: Mode,
    /// Heartbeat interval until the control plane names one (15 s).
    pub heartbeat_interval: Duration,
    /// Dial timeout for the control plane (10 s).
    pub connect_timeout: Duration,
    /// Grace for running processes at shutdown before SIGKILL (5 s).
    pub shutdown_grace: Duration,
    /// The variable set to `true` in every process (`CHATD_AGENT`).
    pub agent_env_var: String,
    /// Serve TLS with this certificate and key (re-read when they change; TCP only): the
    /// agent then reports an `https://` address.
    pub tls: Option<chattls::CertFiles>,
    /// What the control plane's certificate is checked against when its URL is `https://`
    /// (`None` = the system's roots).
    pub control_plane_tls: Option<chattls::ClientTls>,
}

impl Options {
    /// Defaults for a mode, listening on a free loopback port.
    pub fn new(mode: Mode) -> Self {
        Self {
            listen: Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))),
            mode,
            heartbeat_interval: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            agent_env_var: "CHATD_AGENT".into(),
            tls: None,
            control_plane_tls: None,
        }
    }
}

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The control plane rejected the token (unknown, or its build was superseded).
    #[error("the control plane rejected the agent token: {0}")]
    Rejected(String),
    /// Dialing the control plane failed in a way retrying cannot fix.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The listener could not be bound.
    #[error("cannot listen on {listen:?}: {source}")]
    Listen {
        /// The address.
        listen: Listen,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] chattls::TlsError),
    /// The working directory is not usable.
    #[error("working directory {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("the agent's server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// What the agent needs to run, from the command line or the manifest.
#[derive(Debug, Clone)]
struct Plan {
    agent_id: String,
    secret: String,
    directory: PathBuf,
    startup_script: String,
    startup_timeout: Duration,
    env: Vec<(String, String)>,
    roots: Vec<PathBuf>,
    confine: bool,
}

/// Runs the agent until `shutdown` resolves (or the control plane rejects its token).
pub async fn run(options: Options, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);

    let (reporter, plan) = match &options.mode {
        Mode::Standalone {
            secret,
            directory,
            startup_script,
            startup_timeout,
        } => (
            None,
            Plan {
                agent_id: String::new(),
                secret: secret.clone(),
                directory: directory.clone(),
                startup_script: startup_script.clone(),
                startup_timeout: *startup_timeout,
                env: Vec::new(),
                roots: vec![directory.clone()],
                confine: true,
            },
        ),
        Mode::ControlPlane { url, token } => {
            let conn = client::connect_control_plane_lazy(
                url,
                token,
                options.connect_timeout,
                options.control_plane_tls.as_ref(),
            )?;
            let reporter = Reporter { conn };
            let manifest = tokio::select! {
                m = reporter.manifest() => m?,
                () = &mut shutdown => return Ok(()),
            };
            let directory = PathBuf::from(&manifest.directory);
            let mut roots = vec![directory.clone()];
            roots.extend(manifest.extra_file_roots.iter().map(PathBuf::from));
            let plan = Plan {
                agent_id: manifest.agent_id.clone(),
                secret: manifest.control_plane_secret.clone(),
                directory,
                startup_script: manifest.startup_script.clone(),
                startup_timeout: manifest
                    .startup_script_timeout
                    .and_then(|d| Duration::try_from(d).ok())
                    .unwrap_or_default(),
                env: manifest.env.into_iter().collect(),
                roots,
                confine: manifest.confine_files,
            };
            (Some(reporter), plan)
        }
    };
    let directory =
        std::fs::canonicalize(&plan.directory).map_err(|source| RunError::Directory {
            path: plan.directory.clone(),
            source,
        })?;

    let mut env = non_interactive_env(&options.agent_env_var);
    env.extend(plan.env.iter().cloned());
    let mut config = ProcessConfig::new(directory.clone());
    config.env = env.clone();
    let shell = config.shell.clone();
    let home = std::env::var_os("HOME").map_or_else(|| directory.clone(), PathBuf::from);
    let service = AgentService::new(
        ProcessManager::new(config),
        FileRoots {
            roots: plan.roots.clone(),
            confine: plan.confine,
        },
        home,
        plan.agent_id.clone(),
    );
    service.set_lifecycle(Lifecycle::Created);

    let (address, server) = serve(
        &options.listen,
        options.tls.as_ref(),
        service.clone(),
        plan.secret.clone(),
        stop_rx,
    )
    .await?;
    tracing::info!(addr = %address, "listening");

    // The first heartbeat reports the address before any lifecycle state: an agent that says
    // `starting` or `ready` can be dialled.
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let heartbeats = reporter.as_ref().map(|r| {
        tokio::spawn(r.clone().heartbeat_loop(
            options.heartbeat_interval,
            Report {
                address: address.clone(),
                directory: directory.display().to_string(),
            },
            stop_tx.clone(),
            first_tx,
        ))
    });
    if heartbeats.is_some() {
        let _ = first_rx.await;
    }

    // Startup: created → starting → ready | start_error | start_timeout.
    let mut stop_watch = stop_tx.subscribe();
    let stopped = async move {
        let _ = stop_watch.wait_for(|stop| *stop).await;
    };
    let started = async {
        set_lifecycle(&service, reporter.as_ref(), Lifecycle::Starting).await;
        let (log_tx, log_rx) = mpsc::channel(1024);
        let shipper = tokio::spawn(ship_logs(reporter.clone(), log_rx));
        let outcome = if plan.startup_script.trim().is_empty() {
            drop(log_tx);
            Outcome::Succeeded
        } else {
            let command = workspace_command(&shell, &plan.startup_script, &directory, &env);
            startup::run_command(command, "startup script", plan.startup_timeout, log_tx).await
        };
        let _ = shipper.await;
        let state = match &outcome {
            Outcome::Succeeded => Lifecycle::Ready,
            Outcome::Failed(why) => {
                tracing::warn!(reason = %why, "startup script failed");
                Lifecycle::StartError
            }
            Outcome::TimedOut => {
                tracing::warn!(timeout = ?plan.startup_timeout, "startup script timed out");
                Lifecycle::StartTimeout
            }
        };
        set_lifecycle(&service, reporter.as_ref(), state).await;
    };
    // A signal can arrive while the last lifecycle report is still in flight: `shutdown` is
    // then complete and must not be polled again.
    let signalled = tokio::select! {
        () = started => false,
        () = &mut shutdown => true,
        () = stopped => false,
    };
    // Wait for the shutdown signal, unless it came already or the control plane told us to go.
    if !signalled && !*stop_tx.borrow() {
        let mut stop_watch = stop_tx.subscribe();
        tokio::select! {
            () = &mut shutdown => {}
            _ = stop_watch.wait_for(|stop| *stop) => {}
        }
    }

    // Shutdown: shutting_down → off.
    tracing::info!("shutting down");
    set_lifecycle(&service, reporter.as_ref(), Lifecycle::ShuttingDown).await;
    let killed = service.shutdown(options.shutdown_grace).await;
    if killed > 0 {
        tracing::warn!(
            killed,
            "processes outlived the shutdown grace and were killed"
        );
    }
    set_lifecycle(&service, reporter.as_ref(), Lifecycle::Off).await;
    let _ = stop_tx.send(true);
    let rejected = match heartbeats {
        Some(task) => task.await.ok().flatten(),
        None => None,
    };
    if let Some(reporter) = &reporter {
        reporter
            .send_heartbeat(
                &Report {
                    address: address.clone(),
                    directory: directory.display().to_string(),
                },
                true,
            )
            .await
            .ok();
    }
    server.await.ok().transpose()?;
    if let Listen::Unix(path) = &options.listen {
        let _ = std::fs::remove_file(path);
    }
    match rejected {
        Some(why) => Err(RunError::Rejected(why)),
        None => Ok(()),
    }
}

/// How often the agent re-reads its TLS certificate and key.
const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

type ServerTask = tokio::task::JoinHandle<Result<(), tonic::transport::Error>>;

/// Binds the listener and serves the agent until `stop` turns true; returns the address to
/// advertise.
async fn serve(
    listen: &Listen,
    tls: Option<&chattls::CertFiles>,
    service: AgentService,
    secret: String,
    mut stop: watch::Receiver<bool>,
) -> Result<(String, ServerTask), RunError> {
    let bind_error = |source| RunError::Listen {
        listen: listen.clone(),
        source,
    };
    let router = tonic::transport::Server::builder().add_service(service.into_server(secret));
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    match listen {
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(bind_error)?;
            let local = listener.local_addr().map_err(bind_error)?;
            if let Some(files) = tls {
                let tls = chattls::ServerTls::load(files.clone(), TLS_RELOAD_INTERVAL)?;
                let incoming = tls.incoming(listener);
                let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped));
                return Ok((format!("https://{local}"), task));
            }
            let task =
                tokio::spawn(router.serve_with_incoming_shutdown(accepting(listener), stopped));
            Ok((format!("http://{local}"), task))
        }
        Listen::Unix(path) => {
            if path.exists() {
                std::fs::remove_file(path).map_err(bind_error)?;
            }
            let listener = tokio::net::UnixListener::bind(path).map_err(bind_error)?;
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped));
            Ok((format!("unix:{}", path.display()), task))
        }
    }
}

/// The connections `listener` accepts, with TCP_NODELAY set on each: small frames (a process's
/// output, a file's result) leave at once instead of waiting out Nagle's algorithm. tonic sets
/// it only on listeners it binds itself.
fn accepting(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

async fn set_lifecycle(service: &AgentService, reporter: Option<&Reporter>, state: Lifecycle) {
    service.set_lifecycle(state);
    tracing::info!(lifecycle = state.as_str_name(), "lifecycle");
    if let Some(reporter) = reporter {
        reporter.lifecycle(state).await;
    }
}

/// What every heartbeat carries.
#[derive(Debug, Clone)]
struct Report {
    address: String,
    directory: String,
}

/// The agent's connection to the control plane.
#[derive(Debug, Clone)]
struct Reporter {
    conn: ControlPlaneConn,
}

/// Pause between attempts when the control plane cannot be reached.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How many times a lifecycle update or a log batch is attempted.
const REPORT_ATTEMPTS: usize = 5;

impl Reporter {
    /// The manifest, retried until the control plane answers; a rejected token is fatal.
    async fn manifest(&self) -> Result<cp::GetManifestResponse, RunError> {
        loop {
            match self
                .conn
                .clone()
                .get_manifest(cp::GetManifestRequest {})
                .await
            {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if status.code() == Code::Unauthenticated => {
                    return Err(RunError::Rejected(status.message().to_owned()));
                }
                Err(status) => {
                    tracing::warn!(error = %status, "cannot fetch the manifest; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    async fn send_heartbeat(
        &self,
        report: &Report,
        disconnecting: bool,
    ) -> Result<cp::HeartbeatResponse, tonic::Status> {
        self.conn
            .clone()
            .heartbeat(cp::HeartbeatRequest {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                listen_address: report.address.clone(),
                operating_system: std::env::consts::OS.to_owned(),
                expanded_directory: report.directory.clone(),
                disconnecting,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Heartbeats until `stop`; a rejected token stops the agent (returned as the reason).
    /// `first` hears when the first heartbeat has been answered (or has failed).
    async fn heartbeat_loop(
        self,
        mut interval: Duration,
        report: Report,
        stop: watch::Sender<bool>,
        first: tokio::sync::oneshot::Sender<()>,
    ) -> Option<String> {
        let mut stopped = stop.subscribe();
        let mut first = Some(first);
        loop {
            let sent = self.send_heartbeat(&report, false).await;
            if let Some(first) = first.take() {
                let _ = first.send(());
            }
            match sent {
                Ok(response) => {
                    if let Some(named) = response
                        .interval
                        .and_then(|d| Duration::try_from(d).ok())
                        .filter(|d| !d.is_zero())
                    {
                        interval = named;
                    }
                }
                Err(status) if status.code() == Code::Unauthenticated => {
                    tracing::error!(error = %status, "the control plane rejected the agent token; stopping");
                    let _ = stop.send(true);
                    return Some(status.message().to_owned());
                }
                Err(status) => tracing::warn!(error = %status, "heartbeat failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stopped.wait_for(|s| *s) => return None,
            }
        }
    }

    async fn lifecycle(&self, state: Lifecycle) {
        let request = cp::UpdateLifecycleRequest {
            lifecycle_state: state.into(),
            changed_at: Some(SystemTime::now().into()),
        };
        for attempt in 1..=REPORT_ATTEMPTS {
            match self.conn.clone().update_lifecycle(request).await {
                Ok(_) => return,
                Err(status) => {
                    tracing::warn!(error = %status, attempt, "cannot report the lifecycle state");
                    if status.code() == Code::Unauthenticated {
                        return;
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// Sends a batch; returns false once the control plane says its log cap is reached.
    async fn logs(&self, lines: Vec<LogLine>) -> bool {
        let request = cp::BatchCreateLogsRequest {
            log_source: "startup_script".into(),
            logs: lines
                .into_iter()
                .map(|line| cp::AgentLog {
                    created_at: Some(line.at.into()),
                    level: match line.stream {
                        Stream::Stdout => cp::LogLevel::Info,
                        Stream::Stderr => cp::LogLevel::Warn,
                    }
                    .into(),
                    output: line.text,
                })
                .collect(),
        };
        for attempt in 1..=REPORT_ATTEMPTS {
            match self.conn.clone().batch_create_logs(request.clone()).await {
                Ok(response) => return !response.into_inner().logs_overflowed,
                Err(status) => {
                    tracing::warn!(error = %status, attempt, "cannot send startup logs");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        true
    }
}

/// Most lines per log batch.
const LOG_BATCH_LINES: usize = 100;
/// Longest a line waits before its batch is sent.
const LOG_BATCH_DELAY: Duration = Duration::from_millis(250);

/// Forwards startup output to the control plane in batches (and to the agent's own log).
async fn ship_logs(reporter: Option<Reporter>, mut lines: mpsc::Receiver<LogLine>) {
    let mut open = true;
    let mut accepting = true;
    while open {
        let Some(first) = lines.recv().await else {
            break;
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + LOG_BATCH_DELAY;
        while batch.len() < LOG_BATCH_LINES {
            match tokio::time::timeout_at(deadline, lines.recv()).await {
                Ok(Some(line)) => batch.push(line),
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        for line in &batch {
            tracing::info!(target: "wsagent::startup", "{}", line.text);
        }
        if let (Some(reporter), true) = (&reporter, accepting) {
            accepting = reporter.logs(batch).await;
            if !accepting {
                tracing::warn!(
                    "the control plane's startup-log cap is reached; further lines stay local"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_agent_listener_sets_tcp_nodelay_on_what_it_accepts() {
        use tokio_stream::StreamExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let accepted = super::accepting(listener).next().await;
        assert!(matches!(accepted, Some(Ok(s)) if s.nodelay().unwrap()));
        drop(client);
    }
}
