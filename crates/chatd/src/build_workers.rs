//! The provisioner's build workers inside chatd: embedded in `chatd serve` (unless
//! `--provisioner-workers 0`) or alone as `chatd provisioner`, always with the local backend.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chatstore::Database;
use chatstore::StoreConfig;
use chatstore::pubsub::Pubsub;
use provisioner::{
    Isolation, LocalBackend, LocalConfig, Provisioner, ProvisionerConfig, WorkspaceUsers,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::ChatdError;

/// The provisioner's settings.
#[derive(Debug, Clone)]
pub struct ProvisionerSettings {
    /// Where workspaces and the provisioner's id live.
    pub data_dir: PathBuf,
    /// Jobs run at once.
    pub workers: usize,
    /// The `wsagent` executable.
    pub agent_binary: PathBuf,
    /// The agent API URL given to agents; `None` = this daemon's own listener.
    pub control_plane_url: Option<String>,
    /// CA certificates agents check an `https://` control plane against; `None` = the system's
    /// roots.
    pub control_plane_ca: Option<PathBuf>,
    /// The address agents listen on.
    pub agent_listen_ip: std::net::IpAddr,
    /// The certificate and key agents serve TLS with; `None` = plain HTTP/2.
    pub agent_tls: Option<(PathBuf, PathBuf)>,
    /// Grace between SIGTERM and SIGKILL when stopping an agent.
    pub agent_stop_grace: Duration,
    /// Heartbeat interval agents start with (the agent API names the real one).
    pub agent_heartbeat_interval: Duration,
    /// Safety-net poll for jobs and cancellation.
    pub poll_interval: Duration,
    /// The users workspaces run as when the daemon is root.
    pub workspace_users: WorkspaceUsers,
}

/// `/var/lib/chatd` for root (whose home workspace users cannot enter), else
/// `$XDG_DATA_HOME/chatd`, else `~/.local/share/chatd`, else `./chatd-data`.
pub fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/chatd");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("chatd");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/share/chatd");
    }
    PathBuf::from("chatd-data")
}

/// `wsagent` next to the running executable when it is there (as cargo and the release layout
/// put it), else `wsagent` from `PATH`.
pub fn default_agent_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("wsagent")))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("wsagent"))
}

/// The provisioner's id, kept in the data dir so a restarted provisioner recognises the jobs
/// it abandoned.
fn worker_id(data_dir: &Path) -> Result<Uuid, ChatdError> {
    let path = data_dir.join("provisioner-id");
    let io = |source| ChatdError::DataDir {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Uuid::parse_str(text.trim()).map_err(|e| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a UUID ({e}); delete the file to start afresh"),
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Uuid::new_v4();
            std::fs::write(&path, format!("{id}\n")).map_err(io)?;
            Ok(id)
        }
        Err(e) => Err(io(e)),
    }
}

/// A running provisioner: stop it with [`RunningProvisioner::stop`].
#[derive(Debug)]
pub struct RunningProvisioner {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningProvisioner {
    /// Stops taking jobs and waits up to `grace` for running ones. Agents keep running; the
    /// next start adopts them.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(grace, self.task).await.is_err() {
            tracing::warn!(
                "provisioner jobs still running at the end of the grace period; the next start fails them"
            );
        }
    }
}

/// Recovers (fails abandoned jobs, reconciles agents) and starts the workers.
pub async fn start(
    settings: &ProvisionerSettings,
    store: Arc<dyn Database>,
    pubsub: Arc<dyn Pubsub>,
    control_plane_url: String,
) -> Result<RunningProvisioner, ChatdError> {
    std::fs::create_dir_all(&settings.data_dir).map_err(|source| ChatdError::DataDir {
        path: settings.data_dir.clone(),
        source,
    })?;
    let worker_id = worker_id(&settings.data_dir)?;
    if provisioner::isolation::find_program(&settings.agent_binary).is_none() {
        tracing::warn!(
            agent_binary = %settings.agent_binary.display(),
            "the workspace agent executable was not found; start builds will fail until it exists \
             (build it with `cargo build -p wsagent` or pass --agent-binary)"
        );
    }
    let mut local = LocalConfig::new(
        settings.data_dir.clone(),
        settings.agent_binary.clone(),
        control_plane_url,
    );
    local.control_plane_ca = settings.control_plane_ca.clone();
    local.agent_listen_ip = settings.agent_listen_ip;
    local.agent_tls = settings.agent_tls.clone();
    local.stop_grace = settings.agent_stop_grace;
    local.heartbeat_interval = settings.agent_heartbeat_interval;
    local.isolation = Isolation::for_this_process(settings.workspace_users);
    match local.isolation.users() {
        Some(users) => tracing::info!(
            first_uid = users.first_uid,
            uids = users.count,
            max_processes = users.max_processes,
            "workspaces run as users of their own"
        ),
        None => tracing::warn!(
            "chatd is not running as root: workspaces run as its own user and are isolated by \
             environment only, so anything a workspace runs can read what this user can; the \
             local backend is then for a single trusted user"
        ),
    }
    let backend = Arc::new(LocalBackend::new(store.clone(), local));
    if let Err(why) = backend.prepare() {
        tracing::warn!(%why, "workspace builds will fail until this is fixed");
    }
    let mut config = ProvisionerConfig::new(worker_id);
    config.workers = settings.workers.max(1);
    config.poll_interval = settings.poll_interval;
    let provisioner = Provisioner::new(store, pubsub, backend, config);
    let (stop, stop_rx) = watch::channel(false);
    let workers = settings.workers;
    let data_dir = settings.data_dir.clone();
    let task = tokio::spawn(async move {
        // Recovery needs the schema; a daemon started with --no-migrate before `chatd migrate`
        // ran keeps retrying instead of failing.
        let mut pause = Duration::from_secs(1);
        let recovered = loop {
            match provisioner.recover().await {
                Ok(recovered) => break recovered,
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), retry_in = ?pause, "provisioner recovery failed; retrying");
                    let mut stop = stop_rx.clone();
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    pause = (pause * 2).min(Duration::from_secs(30));
                }
            }
        };
        tracing::info!(
            %worker_id,
            workers,
            data_dir = %data_dir.display(),
            failed_jobs = recovered.failed_jobs,
            adopted_agents = recovered.agents.adopted,
            restarted_agents = recovered.agents.restarted,
            stopped_agents = recovered.agents.stopped,
            "provisioner started"
        );
        provisioner.run(stop_rx).await;
    });
    Ok(RunningProvisioner { stop, task })
}

/// `chatd provisioner`: the provisioner alone, until `shutdown`.
pub async fn run_alone(
    settings: ProvisionerSettings,
    database: crate::DatabaseConfig,
    grace: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ChatdError> {
    if matches!(
        chatstore::DatabaseUrl::parse(&database.url)?,
        chatstore::DatabaseUrl::Sqlite(_)
    ) {
        return Err(ChatdError::InvalidConfig(
            "`chatd provisioner` runs apart from the daemon and needs the database it uses: \
             PostgreSQL (an embedded file belongs to one process; `chatd serve` runs its own \
             provisioner)"
                .into(),
        ));
    }
    let url = settings
        .control_plane_url
        .clone()
        .ok_or(ChatdError::NoControlPlaneUrl)?;
    let database = crate::open_database(&database).await?;
    let (pubsub, listener) = database.pubsub().await?;
    let store = database.store(StoreConfig::default());
    let running = start(&settings, store, pubsub, url).await?;
    shutdown.await;
    running.stop(grace).await;
    if let Some(listener) = listener {
        listener.abort();
    }
    Ok(())
}
