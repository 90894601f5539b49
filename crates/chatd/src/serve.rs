//! `chatd serve`: the gRPC server and its lifecycle.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chatstore::StoreConfig;
use chatstore::prelude::*;
use chatstore::pubsub::Pubsub;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::ChatdError;
use crate::admin::Admin;
use crate::advertise::advertised_url;
use crate::agentapi::AgentApi;
use crate::chats::Chats;
use crate::closing::Closer;
use crate::relay::{PartSource, PartsRelay, RelaySecret};
use crate::stream::{StreamConfig, Streams};
use crate::templates::Templates;
use crate::watch::Watches;
use crate::workspaces::{Workspaces, WorkspacesConfig};
use chatengine::{Engine, EngineConfig};

/// What `chatd serve` needs to run.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address of the gRPC listener; port 0 picks a free port.
    pub listen: SocketAddr,
    /// What other replicas and agents dial to reach this one (see [`crate::AdvertiseError`]);
    /// `None` = the listen address, which must then be a specific one.
    pub advertise_address: Option<String>,
    /// A listener of its own for the part relay between replicas (so a network policy can keep
    /// everything but replicas from it); `None` = the relay is served on `listen`.
    pub relay_listen: Option<SocketAddr>,
    /// A plain-HTTP/2 listener serving only the health service, for probes that cannot speak
    /// TLS (the kubelet's gRPC probes); `None` = none.
    pub health_listen: Option<SocketAddr>,
    /// TLS of the listeners and of the connections this replica makes.
    pub tls: TlsConfig,
    /// Where agents of the local backend may listen besides loopback.
    pub agent_networks: Vec<crate::agentapi::AgentNetwork>,
    /// How long in-flight calls may take to finish after shutdown is requested.
    pub shutdown_grace: Duration,
    /// The database, when configured. The agent API, template pushes and the provisioner
    /// need it.
    pub database: Option<DatabaseConfig>,
    /// The heartbeat interval the agent API gives agents.
    pub agent_heartbeat_interval: Duration,
    /// Where the first admin's API token goes when the database has no user yet; `None` = do
    /// not create one.
    pub admin_token_file: Option<std::path::PathBuf>,
    /// How long the first admin's token is valid.
    pub admin_token_lifetime: Duration,
    /// The embedded provisioner; `None` = jobs are run by a separate `chatd provisioner`.
    pub provisioner: Option<crate::build_workers::ProvisionerSettings>,
    /// Timing of the engine and the streams.
    pub timing: Timing,
    /// The engine's limits, retries and tool settings (`chatd serve`'s engine flags); its
    /// timings, relay address and key policy come from the rest of this configuration.
    pub engine: EngineConfig,
    /// How long a client-executed tool call waits for its result (5 min).
    pub requires_action_timeout: Duration,
    /// Most messages in a chat's queue (20).
    pub max_queue: usize,
    /// Model configurations to seed at start (needs a database).
    pub models: crate::seed::ModelSeeding,
    /// Where to serve Prometheus metrics; `None` = nowhere.
    pub metrics_listen: Option<SocketAddr>,
}

/// Timing knobs of `chatd serve` (spec/engine.md §18); the defaults are the spec's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `worker.acquire_interval` (30 s).
    pub acquire_interval: Duration,
    /// `worker.heartbeat_interval` (9 s).
    pub heartbeat_interval: Duration,
    /// `worker.lease_stale_after` (30 s).
    pub lease_stale_after: Duration,
    /// `stream.sync_poll_interval` (10 s).
    pub stream_poll_interval: Duration,
    /// `parts.subscriber_timeout` (10 s).
    pub stream_subscriber_timeout: Duration,
    /// How long an agent call may go unanswered (60 s).
    pub agent_call_deadline: Duration,
    /// `interrupt.tool_cancel_wait` (30 s).
    pub tool_cancel_wait: Duration,
    /// `worker.task_idle_watchdog` (15 min).
    pub task_idle_watchdog: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        let engine = EngineConfig::default();
        Self {
            acquire_interval: engine.acquire_interval,
            heartbeat_interval: engine.heartbeat_interval,
            lease_stale_after: engine.lease_stale_after,
            stream_poll_interval: StreamConfig::default().sync_poll_interval,
            stream_subscriber_timeout: StreamConfig::default().subscriber_timeout,
            agent_call_deadline: chattool::conn::DEFAULT_AGENT_CALL_DEADLINE,
            tool_cancel_wait: engine.tool_cancel_wait,
            task_idle_watchdog: engine.task_idle_watchdog,
        }
    }
}

/// TLS of a replica's listeners and of the connections it makes to other replicas (the relay)
/// and to workspace agents. One crypto provider everywhere: rustls with aws-lc-rs.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// The certificate and key of the gRPC and relay listeners; `None` = plain HTTP/2. The
    /// health listener never speaks TLS.
    pub serve: Option<chattls::CertFiles>,
    /// How often the certificate and key are re-read (a rotated pair is used by new
    /// connections without a restart); zero = never.
    pub reload_interval: Duration,
    /// CA certificates other replicas' and agents' certificates are checked against; `None` =
    /// the system's roots.
    pub ca: Option<std::path::PathBuf>,
    /// The name other replicas' certificates are checked against instead of the host dialled
    /// (replicas advertise pod IPs; their certificates name a Service).
    pub peer_name: Option<String>,
    /// The name agents' certificates are checked against instead of the host dialled. Kept
    /// apart from `peer_name`: workspace users can read the agents' key, so an agent's
    /// certificate must not pass for a replica's.
    pub agent_name: Option<String>,
}

impl TlsConfig {
    /// What this replica trusts when it dials other replicas, and when it dials agents.
    fn clients(&self) -> Result<(chattls::ClientTls, chattls::ClientTls), ChatdError> {
        let trust = match &self.ca {
            Some(path) => chattls::ClientTls::from_ca_file(path)?,
            None => chattls::ClientTls::system_roots(),
        };
        let named = |name: &Option<String>| match name {
            Some(name) => trust.clone().with_server_name(name.clone()),
            None => trust.clone(),
        };
        Ok((named(&self.peer_name), named(&self.agent_name)))
    }
}

/// The daemon's database settings.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// PostgreSQL URL.
    pub url: String,
    /// Apply pending migrations at start.
    pub migrate: bool,
    /// How long to wait for the database at start.
    pub connect_timeout: Duration,
}

/// Streams one client connection may have open at once (HTTP/2 `MAX_CONCURRENT_STREAMS`).
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// How long a call's handler may take to answer (a unary call's whole work; a stream's opening).
const HANDLER_TIMEOUT: Duration = Duration::from_secs(60);

/// Services advertised by reflection in every configuration. Only services this process
/// actually implements are listed; the chat services join as they are implemented.
const ALWAYS_SERVED: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Services served when a database is configured.
const DATABASE_SERVED: &[&str] = &[
    "chatd.v1.AdminService",
    "chatd.v1.AgentApiService",
    "chatd.v1.ChatService",
    "chatd.v1.TemplateService",
    "chatd.v1.WorkspaceService",
];

/// The connections `listener` accepts, with TCP_NODELAY set on each: a stream's small frames
/// (one delta, a status) leave at once instead of waiting out Nagle's algorithm for the ACK of
/// the previous one. tonic's own `tcp_nodelay` setting applies only to listeners it binds.
/// (The TLS listener sets it too: [`chattls::ServerTls::incoming`].)
fn accepting(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The server settings every listener shares, without services.
fn server_builder() -> Server<
    tower::layer::util::Stack<
        crate::limits::HandlerTimeoutLayer,
        tower::layer::util::Stack<
            crate::limits::OversizedRequestsLayer,
            tower::layer::util::Identity,
        >,
    >,
> {
    Server::builder()
        // Dead peers are noticed (a half-open connection holds its streams otherwise), and one
        // connection cannot open streams without bound.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .layer(crate::limits::OversizedRequestsLayer)
        .layer(crate::limits::HandlerTimeoutLayer(HANDLER_TIMEOUT))
}

/// Binds `addr` (the error names it).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ChatdError> {
    let bind_error = |source| ChatdError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((listener, bound))
}

/// Serves `router` on `listener` (over TLS when `tls`) until `stop` turns true.
fn spawn_server<L>(
    servers: &mut tokio::task::JoinSet<Result<(), ChatdError>>,
    router: tonic::transport::server::Router<L>,
    listener: TcpListener,
    tls: Option<&chattls::ServerTls>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    L: tower::Layer<tonic::service::Routes> + Clone + Send + 'static,
    L::Service: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        > + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Future: Send + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let stopped = async move {
        // A dropped sender also means "stop".
        let _ = stop.wait_for(|stop| *stop).await;
    };
    match tls {
        Some(tls) => {
            let incoming = tls.incoming(listener);
            servers.spawn(async move {
                router
                    .serve_with_incoming_shutdown(incoming, stopped)
                    .await
                    .map_err(ChatdError::Serve)
            });
        }
        None => {
            servers.spawn(async move {
                router
                    .serve_with_incoming_shutdown(accepting(listener), stopped)
                    .await
                    .map_err(ChatdError::Serve)
            });
        }
    }
}

/// Serves until `shutdown` resolves, then stops accepting, marks health NOT_SERVING, and waits
/// up to the grace period for in-flight calls before returning.
///
/// The bound address is logged as `addr=<ip:port>` once the listener is up.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ChatdError> {
    config.models.check()?;
    // Before anything is opened: a wildcard bind without an advertise address cannot work, and
    // certificates that do not load will not load later either.
    let serves_tls = config.tls.serve.is_some();
    advertised_url(
        config.advertise_address.as_deref(),
        config.listen,
        serves_tls,
    )?;
    let server_tls = match &config.tls.serve {
        Some(files) => Some(chattls::ServerTls::load(
            files.clone(),
            config.tls.reload_interval,
        )?),
        None => None,
    };
    let (replica_tls, agent_tls) = config.tls.clients()?;
    // The database comes first: the daemon reports SERVING only once its schema is current.
    let database = match &config.database {
        Some(db) => {
            let database = crate::open_database(db).await?;
            let store = database.store(StoreConfig::default());
            if let Some(path) = &config.admin_token_file
                && let Err(err) =
                    bootstrap_admin(store.as_ref(), path, config.admin_token_lifetime).await
            {
                // Not fatal: e.g. with --no-migrate the schema may not exist yet; the next start
                // tries again (it acts only while the database has no user).
                warn!(error = %err, path = %path.display(), "cannot create the first admin");
            }
            if let Err(err) = config.models.apply(store.as_ref()).await {
                // Not fatal either, for the same reason; the next start tries again.
                warn!(error = %crate::error_chain(&err), "cannot seed the configured models");
            }
            Some(database)
        }
        None => None,
    };
    let metrics = match config.metrics_listen {
        Some(addr) => Some(crate::metrics::serve_metrics(addr).await?),
        None => None,
    };
    let (listener, addr) = bind(config.listen).await?;
    let advertised = advertised_url(config.advertise_address.as_deref(), addr, serves_tls)?;
    let relay_listener = match config.relay_listen {
        Some(relay) => Some(bind(relay).await?),
        None => None,
    };
    let relay_url = match &relay_listener {
        Some((_, relay)) => crate::advertise::with_port(&advertised, relay.port()),
        None => advertised.clone(),
    };
    let health_listener = match config.health_listen {
        Some(health) => Some(bind(health).await?),
        None => None,
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", ServingStatus::Serving)
        .await;

    // Reflection in both versions: v1 for current tools, v1alpha for the many clients that
    // still speak only it (Python's grpcio-reflection, older grpcurl).
    let served: Vec<&str> = ALWAYS_SERVED
        .iter()
        .chain(database.as_ref().map_or(&[][..], |_| DATABASE_SERVED))
        .copied()
        .collect();
    let reflection = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(chatproto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for name in &served {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    let reflection_v1 = reflection().build_v1().map_err(ChatdError::Reflection)?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(ChatdError::Reflection)?;

    // One store serves every API: chats, workspaces, tokens and agents live in the same database.
    let store = database
        .as_ref()
        .map(|database| database.store(store_config(&config)));
    let agent_api = store.clone().map(|store| {
        AgentApi::new(store, config.agent_heartbeat_interval)
            .with_networks(&config.agent_networks)
            .into_server()
    });
    let templates = store
        .clone()
        .map(|store| Templates::new(store).into_server());
    let admin = store
        .clone()
        .map(|store| Admin::new(store, config.models.keys.clone()).into_server());
    // One notification hub serves the whole process (on PostgreSQL: one LISTEN connection).
    let (pubsub, _listener) = match &database {
        Some(database) => {
            let (pubsub, listener) = database.pubsub().await?;
            (Some(pubsub), listener.map(AbortOnDrop))
        }
        None => (None, None),
    };
    let provisioner = match (&store, &pubsub, &config.provisioner) {
        (Some(store), Some(pubsub), Some(settings)) => {
            let url = settings
                .control_plane_url
                .clone()
                .unwrap_or_else(|| advertised.clone());
            let mut settings = settings.clone();
            if settings.control_plane_ca.is_none() {
                settings.control_plane_ca.clone_from(&config.tls.ca);
            }
            Some(crate::build_workers::start(&settings, store.clone(), pubsub.clone(), url).await?)
        }
        _ => None,
    };

    // The chat engine runs wherever there is a database: it owns the runnable chats it acquires.
    // Streams read the same notifications and the engine's live parts (or, through the relay,
    // another replica's).
    let (closer, closing) = Closer::new();
    let mut engine = None;
    let mut chats = None;
    let mut relay = None;
    let mut workspaces = None;
    if let (Some(store), Some(pubsub)) = (&store, pubsub) {
        let engine_config = EngineConfig {
            relay_address: relay_url.clone(),
            shutdown_grace: config.shutdown_grace,
            acquire_interval: config.timing.acquire_interval,
            heartbeat_interval: config.timing.heartbeat_interval,
            lease_stale_after: config.timing.lease_stale_after,
            tool_cancel_wait: config.timing.tool_cancel_wait,
            task_idle_watchdog: config.timing.task_idle_watchdog,
            key_references: config.models.keys.clone(),
            ..config.engine.clone()
        };
        let started = start_engine(
            store.clone(),
            pubsub.clone(),
            engine_config,
            config.timing.agent_call_deadline,
            agent_tls,
        )
        .await;
        let secret = RelaySecret::new(store.clone());
        let streams = StreamConfig {
            sync_poll_interval: config.timing.stream_poll_interval,
            subscriber_timeout: config.timing.stream_subscriber_timeout,
            ..StreamConfig::default()
        };
        relay = Some(
            PartsRelay::new(
                started.parts().clone(),
                secret.clone(),
                streams.subscriber_timeout,
                closing.clone(),
            )
            .into_server(),
        );
        let source = PartSource::new(
            started.worker_id(),
            started.parts().clone(),
            store.clone(),
            secret,
            config.timing.lease_stale_after,
            replica_tls,
        );
        // One user's open streams, across the chat and workspace services.
        let slots = crate::auth::StreamSlots::default();
        let watches = Watches::new(
            store.clone(),
            pubsub.clone(),
            streams.sync_poll_interval,
            streams.subscriber_timeout,
            closing.clone(),
        );
        workspaces = Some(
            Workspaces::new(
                store.clone(),
                pubsub.clone(),
                WorkspacesConfig {
                    subscriber_timeout: streams.subscriber_timeout,
                    ..WorkspacesConfig::default()
                },
                closing.clone(),
                slots.clone(),
            )
            .into_server(),
        );
        let streams = Streams::new(store.clone(), pubsub, source, streams, closing);
        chats =
            Some(Chats::new(store.clone(), store.clone(), streams, watches, slots).into_server());
        engine = Some(started);
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    // With a relay listener of its own, the relay is served there only.
    let (relay_here, relay_apart) = match relay_listener {
        Some((relay_listener, relay_addr)) => {
            info!(addr = %relay_addr, advertised = %relay_url, "serving the relay");
            (None, relay.map(|relay| (relay, relay_listener)))
        }
        None => (relay, None),
    };
    if let Some((relay, relay_listener)) = relay_apart {
        let router = server_builder().add_service(relay);
        spawn_server(
            &mut servers,
            router,
            relay_listener,
            server_tls.as_ref(),
            stop_rx.clone(),
        );
    }
    if let Some((health_listener, health_addr)) = health_listener {
        info!(addr = %health_addr, "serving health checks");
        let router = Server::builder().add_service(health_service.clone());
        spawn_server(&mut servers, router, health_listener, None, stop_rx.clone());
    }
    let router = server_builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_optional_service(agent_api)
        .add_optional_service(templates)
        .add_optional_service(admin)
        .add_optional_service(workspaces)
        .add_optional_service(chats)
        .add_optional_service(relay_here);
    spawn_server(&mut servers, router, listener, server_tls.as_ref(), stop_rx);
    info!(%addr, %advertised, tls = serves_tls, "listening");

    tokio::select! {
        Some(stopped) = servers.join_next() => {
            // A server ends before shutdown only when it fails.
            return stopped.unwrap_or_else(|join| Err(ChatdError::ServerTask(join.to_string())));
        }
        () = shutdown => {}
    }

    info!(grace = ?config.shutdown_grace, "shutting down");
    health_reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let _ = stop_tx.send(true);
    let provisioner_stopped = async {
        if let Some(provisioner) = provisioner {
            provisioner.stop(config.shutdown_grace).await;
        }
    };
    // Streams end once the engine has handed its chats off, so a client that reconnects to
    // another replica finds the chat there (or about to be).
    let engine_stopped = async {
        if let Some(engine) = engine {
            engine.shutdown().await;
        }
        closer.close();
    };
    let all_served = async {
        while let Some(stopped) = servers.join_next().await {
            stopped.unwrap_or_else(|join| Err(ChatdError::ServerTask(join.to_string())))?;
        }
        Ok::<(), ChatdError>(())
    };
    let (served, (), ()) = tokio::join!(
        tokio::time::timeout(config.shutdown_grace, all_served),
        provisioner_stopped,
        engine_stopped
    );
    if let Some(metrics) = metrics {
        metrics.stop().await;
    }
    match served {
        Ok(result) => result?,
        Err(_) => warn!("grace period over; closing the remaining calls"),
    }
    info!("stopped");
    Ok(())
}

/// Aborts the task when dropped (the listening connection lives as long as the server).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The store's settings under these timings.
fn store_config(config: &ServeConfig) -> StoreConfig {
    StoreConfig {
        lease_stale_after: config.timing.lease_stale_after,
        requires_action_timeout: config.requires_action_timeout,
        max_queue: config.max_queue,
        ..StoreConfig::default()
    }
}

/// On a database without users: creates organization `default` with admin `admin` and writes
/// the admin's API token to `path` (mode 0600), so a newcomer can use the API at once.
async fn bootstrap_admin(
    store: &dyn Database,
    path: &std::path::Path,
    lifetime: Duration,
) -> Result<(), ChatdError> {
    let Some(created) = store
        .bootstrap_admin("default", "admin", Some(lifetime))
        .await?
    else {
        return Ok(());
    };
    if let Err(source) = write_secret(path, &format!("{}\n", created.key.token)) {
        // The admin exists; its token is lost with this error. `chatd admin token` mints one.
        tracing::error!(
            path = %path.display(),
            error = %source,
            "created the first admin (user `admin` in organization `default`) but cannot write its \
             API token; mint one with `chatd admin token`"
        );
        return Err(ChatdError::DataDir {
            path: path.to_owned(),
            source,
        });
    }
    info!(
        path = %path.display(),
        organization_id = %created.organization_id,
        valid_for = %humantime::format_duration(lifetime),
        "created the first admin (user `admin` in organization `default`); its API token is in the file at `path` (`chatd admin token` mints another)"
    );
    Ok(())
}

/// Writes `text` to a file only its owner can read, creating its directory.
fn write_secret(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open: tighten it.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}

/// Starts the chat engine over the store and its notifications, with the workspace
/// provisioner front and agent dialling for the tools.
async fn start_engine(
    store: Arc<dyn Database>,
    pubsub: Arc<dyn Pubsub>,
    config: EngineConfig,
    agent_call_deadline: Duration,
    agent_tls: chattls::ClientTls,
) -> Engine {
    use chatengine::EngineDeps;
    use chatengine::resolver::StoreConnector;

    let connector = Arc::new(
        StoreConnector::new(store.clone(), Duration::from_secs(5))
            .with_call_deadline(agent_call_deadline)
            .with_tls(agent_tls),
    );
    let deps = EngineDeps {
        store: store.clone(),
        pubsub,
        builds: Some(Arc::new(chatengine::builds::StoreBuilds::new(store))),
        connector: Some(connector.clone()),
        dialer: Some(connector),
    };
    Engine::start(deps, config).await
}

/// SIGINT and SIGTERM handlers, installed before the server starts so an early signal is not
/// lost (or, worse, kills the process without a clean shutdown).
#[derive(Debug)]
pub struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers. Needs a Tokio runtime.
    pub fn install() -> Result<Self, ChatdError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).map_err(ChatdError::Signals)?,
            terminate: signal(SignalKind::terminate()).map_err(ChatdError::Signals)?,
        })
    }

    /// Resolves on the first SIGINT or SIGTERM.
    pub async fn recv(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => info!("received SIGINT"),
            _ = self.terminate.recv() => info!("received SIGTERM"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt as _;

    #[tokio::test]
    async fn accepted_connections_send_small_writes_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = accepting(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY is set");
    }
}
