//! The local backend: a workspace is a directory under the data dir and its agent a `wsagent`
//! child process in its own process group.
//!
//! Layout of `<data_dir>/workspaces/<workspace id>/`:
//! - `home/` — the workspace directory (template files are copied in when absent; it survives
//!   stop and is removed by delete);
//! - `agent.json` — the running agent: pid, its start time (so a reused pid is not mistaken
//!   for it), build, agent id and token (mode 0600), read back by reconciliation;
//! - `agent.log` — the agent's own log (appended).
//!
//! Every process of a workspace runs confined as [`crate::isolation`] describes: a cleared
//! environment, and when the daemon is root a Unix user of the workspace's own.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatstore::identity::token_hash;
use chatstore::prelude::*;
use chatstore::workspaces::{JobStatus, WorkspaceTransition};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use shellscript::{self as script, Outcome};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::backend::{Backend, BuildError, BuildLogs, BuildRequest, LOG_DELAY, Reconciled, codes};
use crate::isolation::{Isolation, WorkspaceUsers};
use crate::template::{parameter_env_name, relative_path};

/// The local backend's settings.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Where workspaces live (`<data_dir>/workspaces/…`).
    pub data_dir: PathBuf,
    /// The `wsagent` executable.
    pub agent_binary: PathBuf,
    /// The agent API URL agents report to (chatd's gRPC address).
    pub control_plane_url: String,
    /// CA certificates (PEM) agents check an `https://` control plane against (`None` = the
    /// system's roots). Workspace users must be able to read the file.
    pub control_plane_ca: Option<PathBuf>,
    /// The address agents listen on (port: any free one); 127.0.0.1 unless replicas on other
    /// hosts must reach them (then this host's address, e.g. the pod IP).
    pub agent_listen_ip: std::net::IpAddr,
    /// A certificate and key (PEM) every agent serves TLS with, so it reports an `https://`
    /// address. The workspaces' users can read both files.
    pub agent_tls: Option<(PathBuf, PathBuf)>,
    /// How long a stopping agent gets between SIGTERM and SIGKILL (10 s). The agent gives its
    /// own processes half of it, so it always has the rest to report `off` before the kill.
    pub stop_grace: Duration,
    /// Heartbeat interval given to agents until the control plane names one (15 s).
    pub heartbeat_interval: Duration,
    /// The shell for build scripts (`/bin/sh`).
    pub shell: PathBuf,
    /// How workspaces are kept from the daemon and from each other: a user per workspace when
    /// the daemon runs as root, else a cleared environment only.
    pub isolation: Isolation,
}

impl LocalConfig {
    /// Defaults for a data dir, an agent binary and a control plane.
    pub fn new(data_dir: PathBuf, agent_binary: PathBuf, control_plane_url: String) -> Self {
        Self {
            data_dir,
            agent_binary,
            control_plane_url,
            control_plane_ca: None,
            agent_listen_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            agent_tls: None,
            stop_grace: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(15),
            shell: PathBuf::from("/bin/sh"),
            isolation: Isolation::for_this_process(WorkspaceUsers::default()),
        }
    }
}

/// The local backend.
#[derive(Clone)]
pub struct LocalBackend {
    store: Arc<dyn Database>,
    config: Arc<LocalConfig>,
    /// What [`Isolation::prepare`] said, once.
    prepared: Arc<std::sync::OnceLock<Result<(), String>>>,
    /// One builder of a workspace's processes at a time: a build, and the watcher of an agent
    /// that exited, which kills what the agent left.
    workspace_locks: Arc<std::sync::Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>>,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// `agent.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AgentState {
    pid: i32,
    /// Start time of the process in clock ticks since boot (`/proc/<pid>/stat` field 22).
    start_ticks: u64,
    build_id: Uuid,
    agent_id: Uuid,
    token: String,
    directory: PathBuf,
    /// The workspace user the agent runs as, when workspaces have users.
    #[serde(default)]
    uid: Option<u32>,
}

fn backend_error(what: &str, path: &Path, e: impl std::fmt::Display) -> BuildError {
    BuildError::new(
        codes::BACKEND_FAILED,
        format!("{what} {}: {e}", path.display()),
    )
}

impl LocalBackend {
    /// A backend over a store.
    pub fn new(store: Arc<dyn Database>, config: LocalConfig) -> Self {
        Self {
            store,
            config: Arc::new(config),
            prepared: Arc::default(),
            workspace_locks: Arc::default(),
        }
    }

    /// Gets the data dir ready and checks that workspace users can reach their homes and run
    /// the agent ([`Isolation::prepare`]); the first build does it too when nobody called this.
    pub fn prepare(&self) -> Result<(), String> {
        self.prepared
            .get_or_init(|| {
                self.config
                    .isolation
                    .prepare(&self.config.data_dir, &self.config.agent_binary)
            })
            .clone()
    }

    /// The lock of one workspace's processes.
    fn workspace_lock(&self, workspace_id: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .workspace_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.entry(workspace_id).or_default().clone()
    }

    /// The workspace user of an existing home (its owner, when in the range).
    fn home_user(&self, workspace_id: Uuid) -> Option<u32> {
        use std::os::unix::fs::MetadataExt as _;
        let users = self.config.isolation.users()?;
        let owner = std::fs::metadata(self.home_dir(workspace_id)).ok()?.uid();
        users.contains(owner).then_some(owner)
    }

    /// Kills every process the workspace's user still has, and logs how many there were.
    async fn kill_leftovers(&self, workspace_id: Uuid, logs: Option<&BuildLogs>) {
        let uid = self.home_user(workspace_id);
        let killed = self.config.isolation.kill_workspace_processes(uid).await;
        if killed > 0 {
            tracing::info!(workspace = %workspace_id, killed, "killed the workspace's remaining processes");
            if let Some(logs) = logs {
                logs.line(
                    "info",
                    "stop",
                    format!("killed {killed} remaining processes of the workspace"),
                )
                .await;
            }
        }
    }

    /// The directory of a workspace (its files are under `home/`).
    pub fn workspace_dir(&self, workspace_id: Uuid) -> PathBuf {
        self.config
            .data_dir
            .join("workspaces")
            .join(workspace_id.to_string())
    }

    /// The workspace directory the agent works in.
    pub fn home_dir(&self, workspace_id: Uuid) -> PathBuf {
        self.workspace_dir(workspace_id).join("home")
    }

    /// The pid of the workspace's running agent, if any.
    pub fn agent_pid(&self, workspace_id: Uuid) -> Option<i32> {
        read_state(&self.workspace_dir(workspace_id))
            .filter(alive)
            .map(|s| s.pid)
    }

    /// Copies the template's files that the home lacks, and gives them (and the directories
    /// made for them) to the workspace user `uid`.
    async fn copy_files(
        &self,
        request: &BuildRequest,
        home: &Path,
        uid: Option<u32>,
        logs: &BuildLogs,
    ) -> Result<(), BuildError> {
        use std::os::unix::fs::PermissionsExt as _;
        let mut copied = 0;
        for file in &request.files {
            let relative = relative_path(&file.path).map_err(|why| {
                BuildError::new(
                    codes::INVALID_TEMPLATE,
                    format!("file {:?}: {why}", file.path),
                )
            })?;
            let target = home.join(relative);
            if target.exists() {
                continue;
            }
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| backend_error("cannot create", parent, e))?;
            }
            std::fs::write(&target, &file.content)
                .map_err(|e| backend_error("cannot write", &target, e))?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(file.mode))
                .map_err(|e| backend_error("cannot set the mode of", &target, e))?;
            for path in target.ancestors().take_while(|p| *p != home) {
                self.config.isolation.hand_over(path, uid)?;
            }
            copied += 1;
        }
        logs.line(
            "info",
            "prepare",
            format!(
                "workspace directory {} ready ({copied} of {} template files copied, the rest already present)",
                home.display(),
                request.files.len()
            ),
        )
        .await;
        Ok(())
    }

    async fn run_build_script(
        &self,
        request: &BuildRequest,
        home: &Path,
        uid: Option<u32>,
        env: &[(String, String)],
        logs: &BuildLogs,
    ) -> Result<(), BuildError> {
        let build = &request.manifest.build;
        if build.script.trim().is_empty() {
            return Ok(());
        }
        let (tx, mut rx) = mpsc::channel::<script::LogLine>(256);
        let forward = {
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut tail = std::collections::VecDeque::new();
                loop {
                    let line = match tokio::time::timeout(LOG_DELAY, rx.recv()).await {
                        Ok(Some(line)) => line,
                        Ok(None) => break,
                        Err(_) => {
                            // Quiet for a while: make what was printed visible.
                            logs.flush_due().await;
                            continue;
                        }
                    };
                    let level = match line.stream {
                        script::Stream::Stdout => "info",
                        script::Stream::Stderr => "warn",
                    };
                    if tail.len() == 10 {
                        tail.pop_front();
                    }
                    tail.push_back(line.text.clone());
                    logs.line(level, "build", line.text).await;
                }
                tail
            })
        };
        let mut command = tokio::process::Command::new(&self.config.shell);
        command.arg("-c").arg(&build.script).current_dir(home);
        self.config.isolation.confine(&mut command, home, uid, env);
        let outcome = script::run_command(command, "build script", build.timeout, tx).await;
        let tail: Vec<String> = forward.await.unwrap_or_default().into();
        match outcome {
            Outcome::Succeeded => Ok(()),
            Outcome::Failed(why) => {
                let mut message = why;
                if !tail.is_empty() {
                    message.push_str("; last output:\n");
                    message.push_str(&tail.join("\n"));
                }
                Err(BuildError::new(codes::BUILD_SCRIPT_FAILED, message))
            }
            Outcome::TimedOut => Err(BuildError::new(
                codes::BUILD_TIMEOUT,
                format!(
                    "the build script did not finish within {}",
                    humantime::format_duration(build.timeout)
                ),
            )),
        }
    }

    /// Starts the agent of `state` confined to its workspace, records it in `agent.json`, and
    /// watches it: when it exits, whatever its workspace still runs is killed.
    fn spawn_agent(&self, workspace_id: Uuid, state: &mut AgentState) -> Result<(), BuildError> {
        let workspace_dir = self.workspace_dir(workspace_id);
        let workspace_dir = workspace_dir.as_path();
        let log_path = workspace_dir.join("agent.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| backend_error("cannot open", &log_path, e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| backend_error("cannot open", &log_path, e))?;
        let mut env = vec![
            ("WSAGENT_TOKEN".to_owned(), state.token.clone()),
            (
                "WSAGENT_HEARTBEAT_INTERVAL".to_owned(),
                humantime::format_duration(self.config.heartbeat_interval).to_string(),
            ),
            (
                "WSAGENT_SHUTDOWN_GRACE".to_owned(),
                format!(
                    "{}ms",
                    agent_process_grace(self.config.stop_grace).as_millis()
                ),
            ),
        ];
        if let Some(ca) = &self.config.control_plane_ca {
            env.push(("WSAGENT_CA_CERT".to_owned(), ca.display().to_string()));
        }
        if let Some((cert, key)) = &self.config.agent_tls {
            env.push(("WSAGENT_TLS_CERT".to_owned(), cert.display().to_string()));
            env.push(("WSAGENT_TLS_KEY".to_owned(), key.display().to_string()));
        }
        let mut command = tokio::process::Command::new(&self.config.agent_binary);
        self.config
            .isolation
            .confine(&mut command, &self.home_dir(workspace_id), state.uid, &env);
        let child = command
            .arg("--control-plane")
            .arg(&self.config.control_plane_url)
            .arg("--listen")
            .arg(std::net::SocketAddr::new(self.config.agent_listen_ip, 0).to_string())
            .current_dir(&state.directory)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| backend_error("cannot start the agent", &self.config.agent_binary, e))?;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| BuildError::new(codes::BACKEND_FAILED, "the agent exited at once"))?;
        state.pid = pid;
        state.start_ticks = start_ticks(pid).unwrap_or(0);
        write_state(workspace_dir, state)?;
        self.watch_agent(workspace_id, state.clone(), Some(child));
        Ok(())
    }

    /// Waits for the agent of `state` to exit (reaping it when it is our child, so its pid never
    /// lingers as a zombie), then kills what its workspace still runs, unless a newer agent has
    /// replaced it meanwhile.
    fn watch_agent(
        &self,
        workspace_id: Uuid,
        state: AgentState,
        child: Option<tokio::process::Child>,
    ) {
        if child.is_none() && self.config.isolation.users().is_none() {
            return;
        }
        let backend = self.clone();
        tokio::spawn(async move {
            match child {
                Some(mut child) => {
                    let _ = child.wait().await;
                }
                None => {
                    while alive(&state) {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            if backend.config.isolation.users().is_none() {
                return;
            }
            let lock = backend.workspace_lock(workspace_id);
            let _held = lock.lock().await;
            let current = read_state(&backend.workspace_dir(workspace_id));
            if current.is_none_or(|current| current.pid == state.pid) {
                backend.kill_leftovers(workspace_id, None).await;
            }
        });
    }

    /// SIGTERM to the agent's group, SIGKILL after the grace period; removes `agent.json`;
    /// then kills whatever else the workspace's user still runs.
    async fn stop_agent(
        &self,
        workspace_id: Uuid,
        logs: Option<&BuildLogs>,
    ) -> Result<(), BuildError> {
        let stopped = self.stop_agent_group(workspace_id, logs).await;
        self.kill_leftovers(workspace_id, logs).await;
        stopped
    }

    async fn stop_agent_group(
        &self,
        workspace_id: Uuid,
        logs: Option<&BuildLogs>,
    ) -> Result<(), BuildError> {
        let workspace_dir = self.workspace_dir(workspace_id);
        let Some(state) = read_state(&workspace_dir) else {
            if let Some(logs) = logs {
                logs.line("info", "stop", "no agent is running").await;
            }
            return Ok(());
        };
        if alive(&state) {
            let group = Pid::from_raw(state.pid);
            let _ = killpg(group, Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + self.config.stop_grace;
            while alive(&state) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let message = if alive(&state) {
                let _ = killpg(group, Signal::SIGKILL);
                format!(
                    "the agent (pid {}) did not stop within {}; killed it",
                    state.pid,
                    humantime::format_duration(self.config.stop_grace)
                )
            } else {
                format!("the agent (pid {}) stopped", state.pid)
            };
            if let Some(logs) = logs {
                logs.line("info", "stop", message).await;
            }
        } else if let Some(logs) = logs {
            logs.line("info", "stop", "the agent was not running").await;
        }
        let path = workspace_dir.join("agent.json");
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(backend_error("cannot remove", &path, e)),
        }
    }
}

#[async_trait]
impl Backend for LocalBackend {
    async fn start(&self, request: &BuildRequest, logs: &BuildLogs) -> Result<(), BuildError> {
        self.prepare()
            .map_err(|why| BuildError::new(codes::BACKEND_FAILED, why))?;
        let workspace_id = request.workspace.id;
        let lock = self.workspace_lock(workspace_id);
        let _held = lock.lock().await;
        let workspace_dir = self.workspace_dir(workspace_id);
        // A start over a running agent (a restart) replaces it, and nothing of the old one
        // survives.
        self.stop_agent(workspace_id, Some(logs)).await?;
        let home = self.home_dir(workspace_id);
        let uid = self
            .config
            .isolation
            .workspace_user(&self.config.data_dir.join("workspaces"), &home)?;
        self.copy_files(request, &home, uid, logs).await?;

        let mut env: BTreeMap<String, String> = request.manifest.agent.env.clone();
        env.insert(
            "CHATD_WORKSPACE_ID".into(),
            request.workspace.id.to_string(),
        );
        env.insert(
            "CHATD_WORKSPACE_NAME".into(),
            request.workspace.name.clone(),
        );
        for (name, value) in &request.parameters {
            env.insert(parameter_env_name(name), value.clone());
        }
        let env_list: Vec<(String, String)> = env.clone().into_iter().collect();
        self.run_build_script(request, &home, uid, &env_list, logs)
            .await?;

        let directory = if request.manifest.agent.directory.is_empty() {
            home.clone()
        } else {
            let relative = relative_path(&request.manifest.agent.directory).map_err(|why| {
                BuildError::new(codes::INVALID_TEMPLATE, format!("agent.directory: {why}"))
            })?;
            home.join(relative)
        };
        std::fs::create_dir_all(&directory)
            .map_err(|e| backend_error("cannot create", &directory, e))?;
        for path in directory.ancestors().take_while(|p| *p != home) {
            self.config.isolation.hand_over(path, uid)?;
        }
        let token = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        let connection_timeout =
            i32::try_from(request.manifest.agent.connection_timeout.as_secs()).unwrap_or(i32::MAX);
        let store_error = |e: chatstore::StoreError| {
            BuildError::new(
                codes::BACKEND_FAILED,
                format!("cannot record the agent: {e}"),
            )
        };
        let agent_id = self
            .store
            .insert_agent(
                request.job.id,
                &request.manifest.agent.name,
                &directory.display().to_string(),
                connection_timeout,
                &token_hash(&token),
            )
            .await
            .map_err(store_error)?;
        let startup_timeout =
            i32::try_from(request.manifest.agent.startup_script_timeout.as_secs())
                .unwrap_or(i32::MAX);
        self.store
            .set_agent_startup(
                agent_id,
                &request.manifest.agent.startup_script,
                startup_timeout,
                &env,
            )
            .await
            .map_err(store_error)?;
        let mut state = AgentState {
            pid: 0,
            start_ticks: 0,
            build_id: request.build.id,
            agent_id,
            token,
            directory,
            uid,
        };
        if request.manifest.external_agent {
            write_state(&workspace_dir, &state)?;
            logs.line(
                "info",
                "agent",
                format!(
                    "external agent {agent_id}: start it yourself with the token in {}",
                    workspace_dir.join("agent.json").display()
                ),
            )
            .await;
            return Ok(());
        }
        self.spawn_agent(workspace_id, &mut state)?;
        logs.line(
            "info",
            "agent",
            format!(
                "started agent {agent_id} (pid {}); it reports its own readiness",
                state.pid
            ),
        )
        .await;
        Ok(())
    }

    async fn stop(&self, request: &BuildRequest, logs: &BuildLogs) -> Result<(), BuildError> {
        let lock = self.workspace_lock(request.workspace.id);
        let _held = lock.lock().await;
        self.stop_agent(request.workspace.id, Some(logs)).await
    }

    async fn delete(&self, request: &BuildRequest, logs: &BuildLogs) -> Result<(), BuildError> {
        let lock = self.workspace_lock(request.workspace.id);
        let _held = lock.lock().await;
        let dir = self.workspace_dir(request.workspace.id);
        self.stop_agent(request.workspace.id, Some(logs)).await?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(backend_error("cannot remove", &dir, e)),
        }
        logs.line("info", "delete", format!("removed {}", dir.display()))
            .await;
        Ok(())
    }

    async fn reconcile(&self) -> Result<Reconciled, BuildError> {
        let root = self.config.data_dir.join("workspaces");
        let mut report = Reconciled::default();
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
            Err(e) => return Err(backend_error("cannot read", &root, e)),
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let Some(workspace_id) = entry
                .file_name()
                .to_str()
                .and_then(|n| Uuid::parse_str(n).ok())
            else {
                continue;
            };
            let Some(mut state) = read_state(&dir) else {
                continue;
            };
            let keep = match self.store.latest_build(workspace_id).await {
                Ok(Some(build))
                    if build.id == state.build_id
                        && build.transition == WorkspaceTransition::Start =>
                {
                    matches!(
                        self.store.job(build.job_id).await.map(|j| j.status),
                        Ok(JobStatus::Succeeded)
                    )
                }
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!(workspace = %workspace_id, error = %e, "cannot read the latest build; leaving the agent alone");
                    continue;
                }
            };
            let external = state.pid == 0;
            if external {
                continue;
            }
            let lock = self.workspace_lock(workspace_id);
            let _held = lock.lock().await;
            if !keep {
                self.stop_agent(workspace_id, None).await?;
                report.stopped += 1;
            } else if alive(&state) {
                self.watch_agent(workspace_id, state, None);
                report.adopted += 1;
            } else {
                self.kill_leftovers(workspace_id, None).await;
                self.spawn_agent(workspace_id, &mut state)?;
                report.restarted += 1;
            }
        }
        Ok(report)
    }
}

fn read_state(workspace_dir: &Path) -> Option<AgentState> {
    let text = std::fs::read_to_string(workspace_dir.join("agent.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_state(workspace_dir: &Path, state: &AgentState) -> Result<(), BuildError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = workspace_dir.join("agent.json");
    let temp = workspace_dir.join(".agent.json.tmp");
    let text =
        serde_json::to_vec_pretty(state).map_err(|e| backend_error("cannot encode", &path, e))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| backend_error("cannot write", &temp, e))?;
    file.write_all(&text)
        .map_err(|e| backend_error("cannot write", &temp, e))?;
    std::fs::rename(&temp, &path).map_err(|e| backend_error("cannot write", &path, e))
}

/// Whether the recorded agent process still runs (the same process, not a reused pid).
fn alive(state: &AgentState) -> bool {
    state.pid > 0
        && kill(Pid::from_raw(state.pid), None).is_ok()
        && start_ticks(state.pid).is_some_and(|t| state.start_ticks == 0 || t == state.start_ticks)
        && !zombie(state.pid)
}

fn proc_stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command (field 2) is in parentheses and may contain spaces: split after it.
    let after = stat.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// Field 22 of `/proc/<pid>/stat` (the 20th after the command).
fn start_ticks(pid: i32) -> Option<u64> {
    proc_stat_fields(pid)?.get(19)?.parse().ok()
}

fn zombie(pid: i32) -> bool {
    proc_stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s == "Z"))
}

/// The grace an agent gives its processes at shutdown: half the backend's SIGKILL grace, so the
/// agent's own `shutting_down → off` reports fit in the other half, even on a loaded machine.
fn agent_process_grace(stop_grace: Duration) -> Duration {
    stop_grace / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_gets_half_the_stop_grace_for_its_processes() {
        assert_eq!(
            agent_process_grace(Duration::from_secs(10)),
            Duration::from_secs(5)
        );
        assert_eq!(
            agent_process_grace(Duration::from_secs(3)),
            Duration::from_millis(1500)
        );
    }
}
