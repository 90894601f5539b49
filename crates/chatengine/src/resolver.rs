//! The workspace-connection resolver (spec/recovery.md §1–§5): how a turn's workspace tools reach
//! the chat's workspace agent.
//!
//! [`WorkspaceConnResolver`] is chattool's [`WorkspaceResolver`]: on a tool call it borrows the
//! runner's cached connection ([`AgentConnCache`], §4) or binds the chat to the chat agent of its
//! workspace's latest build, dials it under the dial timeout with the stale-binding validation of
//! §3, and — when the dial times out — asks the two-signal gate of §5 which recovery sentinel
//! ([`WorkspaceConnError`], §1) to give the model. [`StoreConnector`] is the production dialer
//! (the workspace's control-plane secret from the store, `wsagent::client` on the agent's reported
//! address); it is also the readiness dialer of the lifecycle tools
//! ([`chattool::wait::AgentDialer`]).
//!
//! The resolver decides nothing about chat state: it reads the chat's binding, writes the agent
//! binding as metadata ([`chatstore::Store::bind_agent`]) and never touches the turn itself. A
//! cancelled turn comes back as its own cause ([`ResolveError::Cancelled`]), never as a sentinel.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agentselect::{ChatSuffix, SelectError};
use async_trait::async_trait;
use chatproto::tonic::Status;
use chatproto::wsagent::v1 as pb;
use chatretry::{CancelCause, CancelToken};
use chatstore::StoreError;
use chatstore::agents::{Agent, ConnectionStatus, connection_status};
use chatstore::prelude::*;
use chatstore::types::Chat;
use chatstore::workspaces::Build;
use chattool::conn::{DEFAULT_AGENT_CALL_DEADLINE, Deadlined, Rooted, WorkspaceConn};
use chattool::context::{BindingListener, NO_WORKSPACE, WorkspaceResolver};
use chattool::wait::{AgentDialer, agent_infos};
use tokio::time::Instant;
use uuid::Uuid;

/// Why a workspace tool cannot reach the chat's agent (spec/recovery.md §1). `Display` is the
/// model-facing text, a contract: the wording tells the model which recovery tool to call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkspaceConnError {
    /// The chat has no workspace.
    #[error("{}", NO_WORKSPACE)]
    NoWorkspace,
    /// The workspace's latest build has no agent (it is likely stopped).
    #[error(
        "workspace has no running agent: the workspace is likely stopped. Use the start_workspace tool to start it"
    )]
    NoWorkspaceAgent,
    /// The dial timed out and the latest agent has been disconnected for at least the threshold.
    #[error(
        "workspace agent has been disconnected for at least {} seconds and cannot execute tools. To recover, call stop_workspace to stop the workspace, then start_workspace to start it again",
        threshold.as_secs()
    )]
    AgentDisconnected {
        /// `workspace.agent_disconnected_recovery_threshold` (90 s), rendered in seconds.
        threshold: Duration,
    },
    /// The dial timed out and the latest agent never connected within its connection timeout.
    #[error(
        "workspace agent never connected and its connection timeout has elapsed, so it cannot execute tools. To recover, call stop_workspace to stop the workspace, then start_workspace to start it again"
    )]
    AgentNeverConnected,
    /// The dial timed out; nothing says the agent is gone (transient).
    #[error(
        "connection to the workspace agent timed out. The agent may still be reachable on the next attempt."
    )]
    DialTimeout,
    /// The agent is managed outside chatd and is not reachable; only the user can fix that.
    #[error("{}", if *never_connected {
        chattool::wait::EXTERNAL_AGENT_NOT_CONNECTED
    } else {
        chattool::wait::EXTERNAL_AGENT_OFFLINE
    })]
    ExternalAgentUnavailable {
        /// The agent's `first_connected_at` is null.
        never_connected: bool,
    },
    /// The chat's workspace changed under the resolver.
    #[error("chat workspace changed while {phase}")]
    BindingChanged {
        /// Where the change was noticed.
        phase: BindingPhase,
    },
    /// No agent connector is configured.
    #[error("workspace agent connector is not configured")]
    NotConfigured,
    /// The server is closing.
    #[error("chatd server inflight closed")]
    ServerClosing,
    /// No agent could be chosen among the latest build's agents (agentselect's text).
    #[error(transparent)]
    Selection(#[from] SelectError),
    /// The dial failed for another reason.
    #[error("dial workspace agent: {0}")]
    Dial(String),
}

/// Where a workspace change was noticed ([`WorkspaceConnError::BindingChanged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingPhase {
    /// While binding an agent (§2 step 2).
    Resolving,
    /// While dialling, at the stale-binding validation (§3).
    Connecting,
}

impl std::fmt::Display for BindingPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Resolving => "resolving agent",
            Self::Connecting => "connecting",
        })
    }
}

/// Why [`WorkspaceConnResolver::resolve`] returned no connection.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A recovery sentinel or another model-facing connection error.
    #[error(transparent)]
    Conn(#[from] WorkspaceConnError),
    /// The turn was cancelled during resolution; its cause, unchanged (§2 step 6).
    #[error(transparent)]
    Cancelled(CancelCause),
    /// The store failed where resolution cannot go on without it (reading the chat or its
    /// bound agent, persisting a binding).
    #[error("{what}")]
    Store {
        /// What was being done.
        what: &'static str,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}

impl ResolveError {
    fn store(what: &'static str) -> impl FnOnce(StoreError) -> Self {
        move |source| Self::Store { what, source }
    }
}

/// The resolver's timing and selection settings (spec/recovery.md §3, §5); defaults are the
/// spec's.
#[derive(Debug, Clone)]
pub struct ResolverSettings {
    /// `workspace.dial_timeout` (30 s): the whole dial, including a stale-binding switch.
    pub dial_timeout: Duration,
    /// `workspace.dial_validation_delay` (5 s): when a pending dial re-checks the binding.
    pub dial_validation_delay: Duration,
    /// `workspace.agent_disconnected_recovery_threshold` (90 s): how long the latest agent must
    /// have been disconnected before a timed-out dial suggests restarting the workspace.
    pub agent_disconnected_recovery_threshold: Duration,
    /// `workspace.agent_inactive_disconnect_timeout` (30 s): when a silent agent counts as
    /// disconnected (spec/engine.md §8.6).
    pub agent_inactive_timeout: Duration,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        Self {
            dial_timeout: Duration::from_secs(30),
            dial_validation_delay: Duration::from_secs(5),
            agent_disconnected_recovery_threshold: Duration::from_secs(90),
            agent_inactive_timeout: Duration::from_secs(30),
        }
    }
}

/// Dials a workspace agent. The resolver applies the dial timeout around it; the error text
/// becomes [`WorkspaceConnError::Dial`].
#[async_trait]
pub trait AgentConnector: Send + Sync {
    /// A connection to `agent` (as its row was last read).
    async fn connect(&self, agent: &Agent) -> Result<Arc<dyn WorkspaceConn>, String>;
}

/// The production [`AgentConnector`]: dials the address the agent reported with its workspace's
/// control-plane secret, and roots the connection in the agent's working directory when known.
/// Also the lifecycle tools' readiness dialer (dial, then the agent's `Health`).
#[derive(Clone)]
pub struct StoreConnector {
    store: Arc<dyn Database>,
    connect_timeout: Duration,
    call_deadline: Duration,
    tls: Option<wsagent::client::ClientTls>,
}

impl std::fmt::Debug for StoreConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConnector")
            .field("connect_timeout", &self.connect_timeout)
            .field("call_deadline", &self.call_deadline)
            .finish_non_exhaustive()
    }
}

/// The text of a dial to an agent that has not reported where it listens.
pub const NO_AGENT_ADDRESS: &str = "the agent has not reported an address yet";

impl StoreConnector {
    /// A connector reading secrets from `store`; a connection attempt fails after
    /// `connect_timeout`, a call on a connection after [`DEFAULT_AGENT_CALL_DEADLINE`].
    pub fn new(store: Arc<dyn Database>, connect_timeout: Duration) -> Self {
        Self {
            store,
            connect_timeout,
            call_deadline: DEFAULT_AGENT_CALL_DEADLINE,
            tls: None,
        }
    }

    /// What the certificates of agents that serve TLS (`https://` addresses) are checked
    /// against; without it, the system's roots.
    pub fn with_tls(mut self, tls: wsagent::client::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How long a call on a dialled connection may go unanswered before it fails with the
    /// recovery text of [`chattool::conn::no_answer_text`].
    pub fn with_call_deadline(mut self, deadline: Duration) -> Self {
        self.call_deadline = deadline;
        self
    }

    async fn client(&self, agent: &Agent) -> Result<wsagent::client::AgentConn, DialFailure> {
        if agent.address.is_empty() {
            return Err(DialFailure::Unreachable(NO_AGENT_ADDRESS.into()));
        }
        let secret = self.store.agent_secret(agent.id).await.map_err(|e| {
            DialFailure::Fatal(format!(
                "read the workspace secret: {}",
                crate::error_chain(&e)
            ))
        })?;
        wsagent::client::connect_agent(
            &agent.address,
            &secret,
            self.connect_timeout,
            self.tls.as_ref(),
        )
        .await
        .map_err(|e| DialFailure::Unreachable(e.to_string()))
    }
}

/// Why one connection attempt failed.
enum DialFailure {
    /// Not reachable now (no address yet, refused, timed out): worth another attempt.
    Unreachable(String),
    /// Will not get better by trying again.
    Fatal(String),
}

impl DialFailure {
    fn into_text(self) -> String {
        match self {
            Self::Unreachable(text) | Self::Fatal(text) => text,
        }
    }
}

/// Pause between connection attempts of one dial.
const REDIAL_PAUSE: Duration = Duration::from_millis(250);

/// The agent's working directory as the file tools' primary root: the directory it reported
/// with variables expanded, else the configured one when that is already absolute.
pub fn working_directory(agent: &Agent) -> Option<String> {
    if !agent.expanded_directory.is_empty() {
        return Some(agent.expanded_directory.clone());
    }
    agent
        .directory
        .starts_with('/')
        .then(|| agent.directory.clone())
}

#[async_trait]
impl AgentConnector for StoreConnector {
    /// Keeps trying while the agent is unreachable (a restarting or dead agent refuses
    /// connections at once): the resolver's dial timeout decides when to give up, so a dead
    /// agent reaches the two-signal gate instead of failing with a connection error. Each
    /// attempt dials the address the agent reports now: a restarted agent listens on a new port.
    async fn connect(&self, agent: &Agent) -> Result<Arc<dyn WorkspaceConn>, String> {
        let mut agent = agent.clone();
        let conn = loop {
            match self.client(&agent).await {
                Ok(conn) => break Deadlined::new(conn, self.call_deadline),
                Err(DialFailure::Fatal(text)) => return Err(text),
                Err(DialFailure::Unreachable(text)) => {
                    tracing::debug!(agent_id = %agent.id, error = %text, "agent unreachable; dialling again");
                    tokio::time::sleep(REDIAL_PAUSE).await;
                    match self.store.agent(agent.id).await {
                        Ok(now) => agent = now,
                        Err(e) => {
                            tracing::debug!(agent_id = %agent.id, error = %crate::error_chain(&e),
                            "cannot re-read the agent; dialling the address it had")
                        }
                    }
                }
            }
        };
        Ok(match working_directory(&agent) {
            Some(working_directory) => Arc::new(Rooted {
                conn,
                working_directory,
            }),
            None => Arc::new(conn),
        })
    }
}

#[async_trait]
impl AgentDialer for StoreConnector {
    async fn dial(&self, agent: &Agent) -> Result<(), String> {
        let mut conn = self.client(agent).await.map_err(DialFailure::into_text)?;
        match tokio::time::timeout(self.call_deadline, conn.health(pb::HealthRequest {})).await {
            Ok(answer) => answer.map(drop).map_err(|s| s.message().to_owned()),
            Err(_) => Err(chattool::conn::no_answer_text(self.call_deadline)),
        }
    }
}

/// The runner's agent connection cache (spec/recovery.md §4): at most one entry, lent out to
/// the tool calls of the runner's turns with borrower counting. A dropped entry's connection is
/// closed when its last borrower returns it, never while a tool still uses it.
#[derive(Default)]
pub struct AgentConnCache {
    current: Mutex<Option<Arc<CacheEntry>>>,
}

impl std::fmt::Debug for AgentConnCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = lock(&self.current);
        f.debug_struct("AgentConnCache")
            .field("agent_id", &current.as_ref().map(|e| e.agent_id))
            .field(
                "borrowers",
                &current.as_ref().map(|e| lock(&e.state).borrowers),
            )
            .finish()
    }
}

struct CacheEntry {
    agent_id: Uuid,
    /// The address the agent had reported when the dial began.
    address: String,
    home_dir: Option<String>,
    state: Mutex<EntryState>,
}

struct EntryState {
    /// `None` once closed.
    conn: Option<Arc<dyn WorkspaceConn>>,
    borrowers: usize,
    dropped: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CacheEntry {
    /// One more borrower, unless the entry was dropped (or closed).
    fn lend(self: &Arc<Self>) -> Option<AgentConnHandle> {
        let mut state = lock(&self.state);
        if state.dropped {
            return None;
        }
        let conn = state.conn.clone()?;
        state.borrowers += 1;
        Some(AgentConnHandle {
            entry: self.clone(),
            conn,
            chat_id: None,
        })
    }

    /// Marks the entry dropped; the connection to close now when nobody borrows it.
    fn mark_dropped(&self) -> Option<Arc<dyn WorkspaceConn>> {
        let mut state = lock(&self.state);
        state.dropped = true;
        if state.borrowers == 0 {
            state.conn.take()
        } else {
            None
        }
    }

    /// A borrower is done; the connection to close now if it was the last of a dropped entry.
    fn give_back(&self) -> Option<Arc<dyn WorkspaceConn>> {
        let mut state = lock(&self.state);
        state.borrowers = state.borrowers.saturating_sub(1);
        if state.dropped && state.borrowers == 0 {
            state.conn.take()
        } else {
            None
        }
    }
}

impl AgentConnCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Borrows the cached connection if it is `agent_id`'s and not dropped.
    pub fn borrow(&self, agent_id: Uuid) -> Option<AgentConnHandle> {
        let current = lock(&self.current);
        current
            .as_ref()
            .filter(|e| e.agent_id == agent_id)
            .and_then(CacheEntry::lend)
    }

    /// Adopts a freshly dialled connection to `agent_id` at `address` (what its row said when
    /// the dial began): when `agent_id`'s connection is already cached, `conn` is closed and the
    /// cached one is borrowed; otherwise the old entry is dropped and `conn` installed with one
    /// borrower (the handle returned).
    pub fn adopt(
        &self,
        agent_id: Uuid,
        address: &str,
        conn: Arc<dyn WorkspaceConn>,
    ) -> AgentConnHandle {
        let mut current = lock(&self.current);
        if let Some(handle) = current
            .as_ref()
            .filter(|e| e.agent_id == agent_id)
            .and_then(CacheEntry::lend)
        {
            drop(current);
            drop(conn);
            return handle;
        }
        let entry = Arc::new(CacheEntry {
            agent_id,
            address: address.to_owned(),
            home_dir: conn.working_directory().map(str::to_owned),
            state: Mutex::new(EntryState {
                conn: Some(conn.clone()),
                borrowers: 1,
                dropped: false,
            }),
        });
        let old = current.replace(entry.clone());
        drop(current);
        // Closed outside the lock: closing may do work.
        drop(old.and_then(|old| old.mark_dropped()));
        AgentConnHandle {
            entry,
            conn,
            chat_id: None,
        }
    }

    /// Drops the cached entry (if any): its connection is closed now if nobody borrows it,
    /// otherwise when the last borrower returns it. Also the runner's cleanup.
    pub fn drop_entry(&self) {
        let old = lock(&self.current).take();
        drop(old.and_then(|old| old.mark_dropped()));
    }

    /// The agent whose connection is cached.
    pub fn cached_agent(&self) -> Option<Uuid> {
        lock(&self.current).as_ref().map(|e| e.agent_id)
    }

    /// How many handles of the cached connection are out (0 without an entry).
    pub fn borrowers(&self) -> usize {
        lock(&self.current)
            .as_ref()
            .map_or(0, |e| lock(&e.state).borrowers)
    }

    /// The cached agent's home (working) directory, when `agent_id`'s connection is cached and
    /// knows it.
    pub fn home_dir(&self, agent_id: Uuid) -> Option<String> {
        lock(&self.current)
            .as_ref()
            .filter(|e| e.agent_id == agent_id)
            .and_then(|e| e.home_dir.clone())
    }
}

/// A borrowed cached connection. It is a [`WorkspaceConn`] (every call delegates to the cached
/// connection, with the chat id filled into requests that carry none) and returns itself to the
/// cache when dropped, so an `Arc<dyn WorkspaceConn>` handed to a tool releases on drop.
pub struct AgentConnHandle {
    entry: Arc<CacheEntry>,
    conn: Arc<dyn WorkspaceConn>,
    chat_id: Option<String>,
}

impl std::fmt::Debug for AgentConnHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConnHandle")
            .field("agent_id", &self.entry.agent_id)
            .field("chat_id", &self.chat_id)
            .finish_non_exhaustive()
    }
}

impl Drop for AgentConnHandle {
    fn drop(&mut self) {
        drop(self.entry.give_back());
    }
}

impl AgentConnHandle {
    /// The agent this connection reaches.
    pub fn agent_id(&self) -> Uuid {
        self.entry.agent_id
    }

    /// The address the agent had reported when this connection was dialled.
    pub fn address(&self) -> &str {
        &self.entry.address
    }

    /// Scopes every request made through this handle to the chat (spec/recovery.md §2 step 8):
    /// requests whose `chat_id` is empty get this one.
    pub fn for_chat(mut self, chat_id: Uuid) -> Self {
        self.chat_id = Some(chat_id.to_string());
        self
    }

    fn scope(&self, chat_id: &mut String) {
        if chat_id.is_empty()
            && let Some(id) = &self.chat_id
        {
            chat_id.clone_from(id);
        }
    }
}

impl AgentConnHandle {
    /// A call's answer, after dropping the cached entry when the agent did not answer in time
    /// or the connection broke: the next call dials again (and meets the recovery gate) instead
    /// of waiting on the same dead connection.
    fn observe<T>(&self, answer: Result<T, Status>) -> Result<T, Status> {
        if let Err(status) = &answer
            && matches!(
                status.code(),
                chatproto::tonic::Code::DeadlineExceeded | chatproto::tonic::Code::Unavailable
            )
        {
            tracing::info!(agent_id = %self.entry.agent_id, error = %status.message(), "dropping the cached agent connection");
            drop(self.entry.mark_dropped());
        }
        answer
    }
}

#[async_trait]
impl WorkspaceConn for AgentConnHandle {
    async fn start_process(
        &self,
        mut request: pb::StartProcessRequest,
    ) -> Result<pb::StartProcessResponse, Status> {
        self.scope(&mut request.chat_id);
        self.observe(self.conn.start_process(request).await)
    }

    async fn process_output(
        &self,
        mut request: pb::ProcessOutputRequest,
    ) -> Result<pb::ProcessOutputResponse, Status> {
        self.scope(&mut request.chat_id);
        self.observe(self.conn.process_output(request).await)
    }

    async fn list_processes(
        &self,
        mut request: pb::ListProcessesRequest,
    ) -> Result<pb::ListProcessesResponse, Status> {
        self.scope(&mut request.chat_id);
        self.observe(self.conn.list_processes(request).await)
    }

    async fn signal_process(&self, mut request: pb::SignalProcessRequest) -> Result<(), Status> {
        self.scope(&mut request.chat_id);
        self.observe(self.conn.signal_process(request).await)
    }

    async fn read_file(
        &self,
        request: pb::ReadFileRequest,
    ) -> Result<pb::ReadFileResponse, Status> {
        self.observe(self.conn.read_file(request).await)
    }

    async fn write_file(&self, mut request: pb::WriteFileRequest) -> Result<(), Status> {
        self.scope(&mut request.chat_id);
        self.observe(self.conn.write_file(request).await)
    }

    async fn edit_files(
        &self,
        mut request: pb::EditFilesRequest,
    ) -> Result<pb::EditFilesResponse, Status> {
        self.scope(&mut request.chat_id);
        self.observe(self.conn.edit_files(request).await)
    }

    async fn cancel(&self, mut request: pb::CancelRequest) -> Result<pb::CancelResponse, Status> {
        self.scope(&mut request.chat_id);
        self.observe(self.conn.cancel(request).await)
    }

    fn working_directory(&self) -> Option<&str> {
        self.conn.working_directory()
    }
}

/// Resolution makes at most this many attempts (one retry after a binding race).
const MAX_ATTEMPTS: usize = 2;

/// The text logged when the gate cannot load the latest agent (spec/recovery.md §5).
const GATE_LOAD_FAILED: &str = "failed to load latest agent for timeout classification";

type DialFuture = Pin<Box<dyn Future<Output = Result<Arc<dyn WorkspaceConn>, String>> + Send>>;

/// chatd's [`WorkspaceResolver`] (spec/recovery.md §2–§5). One per runner (it shares the
/// runner's [`AgentConnCache`]); [`for_turn`](Self::for_turn) gives the copy a turn uses, so the
/// turn's cancellation ends a resolution with the turn's cause.
#[derive(Clone)]
pub struct WorkspaceConnResolver {
    store: Arc<dyn Database>,
    connector: Arc<dyn AgentConnector>,
    settings: Arc<ResolverSettings>,
    cache: Arc<AgentConnCache>,
    on_binding: Option<Arc<dyn BindingListener>>,
    turn: CancelToken,
    chat_suffix: ChatSuffix,
}

impl std::fmt::Debug for WorkspaceConnResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceConnResolver")
            .field("settings", &self.settings)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl WorkspaceResolver for WorkspaceConnResolver {
    async fn connect(&self, chat_id: Uuid) -> Result<Arc<dyn WorkspaceConn>, String> {
        match self.resolve(chat_id).await {
            Ok(handle) => Ok(Arc::new(handle)),
            Err(e) => Err(crate::error_chain(&e)),
        }
    }
}

impl WorkspaceConnResolver {
    /// A resolver over the store, dialling with `connector`, caching in the runner's `cache`,
    /// telling `on_binding` when it persists an agent binding.
    pub fn new(
        store: Arc<dyn Database>,
        connector: Arc<dyn AgentConnector>,
        settings: ResolverSettings,
        cache: Arc<AgentConnCache>,
        on_binding: Option<Arc<dyn BindingListener>>,
    ) -> Self {
        Self {
            store,
            connector,
            settings: Arc::new(settings),
            cache,
            on_binding,
            turn: CancelToken::new(),
            chat_suffix: ChatSuffix::default(),
        }
    }

    /// Selects chat agents with this suffix (the tools' setting, so both agree; `-chat` by
    /// default).
    pub fn with_chat_suffix(mut self, suffix: ChatSuffix) -> Self {
        self.chat_suffix = suffix;
        self
    }

    /// The same resolver for one turn: cancelling `turn` ends a resolution in progress with the
    /// turn's cause.
    pub fn for_turn(&self, turn: CancelToken) -> Self {
        Self {
            turn,
            ..self.clone()
        }
    }

    /// The runner's connection cache.
    pub fn cache(&self) -> &Arc<AgentConnCache> {
        &self.cache
    }

    /// Drops the cached connection (runner shutdown, or a chat whose workspace moved): closed
    /// once the tools using it return it.
    pub fn drop_cached(&self) {
        self.cache.drop_entry();
    }

    /// The chat's workspace connection (spec/recovery.md §2), borrowed from the cache.
    pub async fn resolve(&self, chat_id: Uuid) -> Result<AgentConnHandle, ResolveError> {
        tokio::select! {
            biased;
            cause = self.turn.cancelled() => Err(ResolveError::Cancelled(cause)),
            resolved = self.attempts(chat_id) => resolved,
        }
    }

    async fn attempts(&self, chat_id: Uuid) -> Result<AgentConnHandle, ResolveError> {
        let mut attempt = 1;
        loop {
            match self.attempt(chat_id).await {
                Err(ResolveError::Conn(WorkspaceConnError::BindingChanged { phase }))
                    if attempt < MAX_ATTEMPTS =>
                {
                    tracing::debug!(%chat_id, %phase, "chat workspace changed; resolving again");
                    attempt += 1;
                }
                resolved => return resolved,
            }
        }
    }

    async fn attempt(&self, chat_id: Uuid) -> Result<AgentConnHandle, ResolveError> {
        let chat = self
            .store
            .chat(chat_id)
            .await
            .map_err(ResolveError::store("load chat"))?;
        let Some(workspace_id) = chat.workspace_id else {
            return Err(WorkspaceConnError::NoWorkspace.into());
        };

        // Step 1: a cache hit, unless the database says the agent is disconnected or listens
        // elsewhere now (it was restarted on a new port).
        if let Some(agent_id) = chat.agent_id
            && let Some(handle) = self.cache.borrow(agent_id)
        {
            match self.fresh_status(agent_id).await {
                Ok((ConnectionStatus::Disconnected { .. }, _)) => {
                    tracing::debug!(%chat_id, %agent_id, "cached agent is disconnected; redialling");
                    drop(handle);
                    self.cache.drop_entry();
                }
                Ok((_, address)) if address != handle.address() => {
                    tracing::debug!(%chat_id, %agent_id, %address, "cached agent moved; redialling");
                    drop(handle);
                    self.cache.drop_entry();
                }
                Ok(_) => return Ok(handle.for_chat(chat_id)),
                Err(e) => {
                    // Fail open: a read error keeps the cached connection.
                    tracing::debug!(%chat_id, %agent_id, error = %crate::error_chain(&e),
                        "cannot re-read the cached agent; using the cached connection");
                    return Ok(handle.for_chat(chat_id));
                }
            }
        }

        // Step 2: the bound agent, binding one from the latest build if there is none.
        let agent = match chat.agent_id {
            Some(agent_id) => self
                .store
                .agent(agent_id)
                .await
                .map_err(ResolveError::store("load the chat's agent"))?,
            None => self.bind_latest(chat_id, workspace_id).await?,
        };

        // Step 3: an external agent known to be away is not dialled.
        self.external_preflight(&agent).await?;

        // Steps 4–7.
        let (dialled, conn) = self.dial(chat_id, workspace_id, agent).await?;

        // Step 8.
        Ok(self
            .cache
            .adopt(dialled.id, &dialled.address, conn)
            .for_chat(chat_id))
    }

    /// The agent's connection status now, by the database clock, and the address it reports.
    async fn fresh_status(&self, agent_id: Uuid) -> Result<(ConnectionStatus, String), StoreError> {
        let agent = self.store.agent(agent_id).await?;
        let now = self.store.database_now().await?;
        let status = connection_status(&agent.times, now, self.settings.agent_inactive_timeout);
        Ok((status, agent.address))
    }

    /// The latest build and its chat agent.
    async fn latest_chat_agent(&self, workspace_id: Uuid) -> Result<(Build, Agent), ResolveError> {
        let build = self
            .store
            .latest_build(workspace_id)
            .await
            .map_err(ResolveError::store("load the workspace's latest build"))?
            .ok_or(WorkspaceConnError::NoWorkspaceAgent)?;
        let agents = self
            .store
            .build_agents(build.id)
            .await
            .map_err(ResolveError::store("load the latest build's agents"))?;
        if agents.is_empty() {
            return Err(WorkspaceConnError::NoWorkspaceAgent.into());
        }
        let chosen = agentselect::find_chat_agent(&agent_infos(&agents), &self.chat_suffix)
            .map_err(WorkspaceConnError::Selection)?
            .id;
        let agent = agents
            .into_iter()
            .find(|a| a.id == chosen)
            .ok_or(WorkspaceConnError::NoWorkspaceAgent)?;
        Ok((build, agent))
    }

    /// Binds the chat to its workspace's latest chat agent (§2 step 2).
    async fn bind_latest(&self, chat_id: Uuid, workspace_id: Uuid) -> Result<Agent, ResolveError> {
        let (build, agent) = self.latest_chat_agent(workspace_id).await?;
        match self
            .store
            .bind_agent(chat_id, workspace_id, build.id, agent.id)
            .await
            .map_err(ResolveError::store("bind the chat's agent"))?
        {
            Some(chat) => {
                self.binding_changed(&chat);
                Ok(agent)
            }
            None => Err(WorkspaceConnError::BindingChanged {
                phase: BindingPhase::Resolving,
            }
            .into()),
        }
    }

    fn binding_changed(&self, chat: &Chat) {
        if let Some(listener) = &self.on_binding {
            listener.binding_changed(chat);
        }
    }

    /// §2 step 3: a disconnected or timed-out agent of an externally managed template is not
    /// dialled. Failures to tell skip the check.
    async fn external_preflight(&self, agent: &Agent) -> Result<(), WorkspaceConnError> {
        let now = match self.store.database_now().await {
            Ok(now) => now,
            Err(e) => {
                tracing::debug!(error = %crate::error_chain(&e), "no database clock; skipping the external-agent preflight");
                return Ok(());
            }
        };
        let status = connection_status(&agent.times, now, self.settings.agent_inactive_timeout);
        if !matches!(
            status,
            ConnectionStatus::Disconnected { .. } | ConnectionStatus::Timeout
        ) {
            return Ok(());
        }
        match self.store.agent_is_external(agent.id).await {
            Ok(true) => Err(WorkspaceConnError::ExternalAgentUnavailable {
                never_connected: agent.times.first_connected_at.is_none(),
            }),
            Ok(false) => Ok(()),
            Err(e) => {
                tracing::warn!(agent_id = %agent.id, error = %crate::error_chain(&e),
                    "cannot tell whether the agent is externally managed; dialling");
                Ok(())
            }
        }
    }

    fn start_dial(&self, agent: Agent) -> DialFuture {
        let connector = self.connector.clone();
        Box::pin(async move { connector.connect(&agent).await })
    }

    /// §2 steps 4–7 with the stale-binding validation of §3: the dial, under one timeout.
    async fn dial(
        &self,
        chat_id: Uuid,
        workspace_id: Uuid,
        agent: Agent,
    ) -> Result<(Agent, Arc<dyn WorkspaceConn>), ResolveError> {
        let started = Instant::now();
        let deadline = started + self.settings.dial_timeout;
        let validate_at = started + self.settings.dial_validation_delay;
        let mut validation_due = validate_at < deadline;
        let mut dialling = self.start_dial(agent.clone());
        let mut agent = agent;
        loop {
            tokio::select! {
                biased;
                dialled = &mut dialling => {
                    return dialled
                        .map(|conn| (agent, conn))
                        .map_err(|e| WorkspaceConnError::Dial(e).into());
                }
                () = tokio::time::sleep_until(deadline) => {
                    // Signal A: the dial timed out while the turn is alive (a cancelled turn
                    // never gets here: `resolve` answers with its cause first).
                    self.cache.drop_entry();
                    return Err(self.classify_timeout(workspace_id).await.into());
                }
                () = tokio::time::sleep_until(validate_at), if validation_due => {
                    validation_due = false;
                    let checked = tokio::time::timeout_at(
                        deadline,
                        self.stale_binding(chat_id, workspace_id, agent.id),
                    )
                    .await;
                    match checked {
                        Ok(Ok(Some(latest))) => {
                            tracing::info!(%chat_id, stale = %agent.id, agent_id = %latest.id,
                                "the chat's agent binding was stale; dialling the latest build's agent");
                            dialling = self.start_dial(latest.clone());
                            agent = latest;
                        }
                        Ok(Ok(None)) | Err(_) => {}
                        Ok(Err(changed)) => return Err(changed.into()),
                    }
                }
            }
        }
    }

    /// §3: the latest build's chat agent when it is not the bound one (the binding is then
    /// persisted); `None` when the binding stands or cannot be checked.
    async fn stale_binding(
        &self,
        chat_id: Uuid,
        workspace_id: Uuid,
        bound: Uuid,
    ) -> Result<Option<Agent>, WorkspaceConnError> {
        let changed = WorkspaceConnError::BindingChanged {
            phase: BindingPhase::Connecting,
        };
        match self.store.chat(chat_id).await {
            Ok(chat) if chat.workspace_id != Some(workspace_id) => return Err(changed),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(%chat_id, error = %crate::error_chain(&e), "cannot validate the agent binding");
                return Ok(None);
            }
        }
        let (build, latest) = match self.latest_chat_agent(workspace_id).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(%chat_id, error = %crate::error_chain(&e), "cannot validate the agent binding");
                return Ok(None);
            }
        };
        if latest.id == bound {
            return Ok(None);
        }
        match self
            .store
            .bind_agent(chat_id, workspace_id, build.id, latest.id)
            .await
        {
            Ok(Some(chat)) => {
                self.binding_changed(&chat);
                Ok(Some(latest))
            }
            Ok(None) => Err(changed),
            Err(e) => {
                tracing::warn!(%chat_id, error = %crate::error_chain(&e), "cannot persist the new agent binding; keeping the stale one");
                Ok(None)
            }
        }
    }

    /// The two-signal gate (spec/recovery.md §5): after a timed-out dial, the latest agent's
    /// status by the database clock decides between the transient text and a restart
    /// suggestion; an externally managed agent gets the external guidance instead.
    async fn classify_timeout(&self, workspace_id: Uuid) -> WorkspaceConnError {
        let latest = match self.latest_chat_agent(workspace_id).await {
            Ok((_, agent)) => agent,
            Err(e) => {
                tracing::warn!(%workspace_id, error = %crate::error_chain(&e), "{GATE_LOAD_FAILED}");
                return WorkspaceConnError::DialTimeout;
            }
        };
        let now = match self.store.database_now().await {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(%workspace_id, error = %crate::error_chain(&e), "{GATE_LOAD_FAILED}");
                return WorkspaceConnError::DialTimeout;
            }
        };
        let threshold = self.settings.agent_disconnected_recovery_threshold;
        let chosen =
            match connection_status(&latest.times, now, self.settings.agent_inactive_timeout) {
                ConnectionStatus::Timeout => WorkspaceConnError::AgentNeverConnected,
                ConnectionStatus::Disconnected { at }
                    if (now - at).to_std().unwrap_or(Duration::ZERO) >= threshold =>
                {
                    WorkspaceConnError::AgentDisconnected { threshold }
                }
                _ => WorkspaceConnError::DialTimeout,
            };
        match self.store.agent_is_external(latest.id).await {
            Ok(true) => WorkspaceConnError::ExternalAgentUnavailable {
                never_connected: latest.times.first_connected_at.is_none(),
            },
            Ok(false) => chosen,
            Err(e) => {
                tracing::warn!(agent_id = %latest.id, error = %crate::error_chain(&e),
                    "cannot tell whether the latest agent is externally managed");
                chosen
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const ADDRESS: &str = "http://127.0.0.1:1";

    /// A connection that counts its closes and records the chat ids of its requests.
    struct FakeConn {
        closed: Arc<AtomicUsize>,
        seen: Arc<Mutex<Vec<String>>>,
    }

    impl Drop for FakeConn {
        fn drop(&mut self) {
            self.closed.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[async_trait]
    impl WorkspaceConn for FakeConn {
        async fn start_process(
            &self,
            request: pb::StartProcessRequest,
        ) -> Result<pb::StartProcessResponse, Status> {
            lock(&self.seen).push(request.chat_id);
            Ok(pb::StartProcessResponse::default())
        }
        async fn process_output(
            &self,
            request: pb::ProcessOutputRequest,
        ) -> Result<pb::ProcessOutputResponse, Status> {
            lock(&self.seen).push(request.chat_id);
            Ok(pb::ProcessOutputResponse::default())
        }
        async fn list_processes(
            &self,
            request: pb::ListProcessesRequest,
        ) -> Result<pb::ListProcessesResponse, Status> {
            lock(&self.seen).push(request.chat_id);
            Ok(pb::ListProcessesResponse::default())
        }
        async fn signal_process(&self, request: pb::SignalProcessRequest) -> Result<(), Status> {
            lock(&self.seen).push(request.chat_id);
            Ok(())
        }
        /// The path `hung` plays an agent that never answers.
        async fn read_file(
            &self,
            request: pb::ReadFileRequest,
        ) -> Result<pb::ReadFileResponse, Status> {
            if request.path == "hung" {
                return Err(Status::deadline_exceeded("no answer"));
            }
            Ok(pb::ReadFileResponse::default())
        }
        async fn write_file(&self, request: pb::WriteFileRequest) -> Result<(), Status> {
            lock(&self.seen).push(request.chat_id);
            Ok(())
        }
        async fn edit_files(
            &self,
            request: pb::EditFilesRequest,
        ) -> Result<pb::EditFilesResponse, Status> {
            lock(&self.seen).push(request.chat_id);
            Ok(pb::EditFilesResponse::default())
        }
        async fn cancel(&self, request: pb::CancelRequest) -> Result<pb::CancelResponse, Status> {
            lock(&self.seen).push(request.chat_id);
            Ok(pb::CancelResponse::default())
        }
        fn working_directory(&self) -> Option<&str> {
            Some("/home/dev")
        }
    }

    #[derive(Default)]
    struct Counter {
        closed: Arc<AtomicUsize>,
        seen: Arc<Mutex<Vec<String>>>,
    }

    impl Counter {
        fn conn(&self) -> Arc<dyn WorkspaceConn> {
            Arc::new(FakeConn {
                closed: self.closed.clone(),
                seen: self.seen.clone(),
            })
        }
        fn closed(&self) -> usize {
            self.closed.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn an_empty_cache_and_another_agent_miss() {
        let cache = AgentConnCache::new();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(cache.borrow(a).is_none());
        let c = Counter::default();
        let _held = cache.adopt(a, ADDRESS, c.conn());
        assert!(cache.borrow(b).is_none());
        assert_eq!(cache.cached_agent(), Some(a));
    }

    #[test]
    fn adopt_installs_with_one_borrower_and_borrow_counts() {
        let cache = AgentConnCache::new();
        let a = Uuid::new_v4();
        let c = Counter::default();
        let first = cache.adopt(a, ADDRESS, c.conn());
        assert_eq!((first.agent_id(), cache.borrowers()), (a, 1));
        let second = cache.borrow(a).unwrap();
        assert_eq!(cache.borrowers(), 2);
        drop(first);
        drop(second);
        // Returned, not dropped: still cached and open.
        assert_eq!((cache.borrowers(), c.closed()), (0, 0));
        assert!(cache.borrow(a).is_some());
        assert_eq!(cache.home_dir(a).as_deref(), Some("/home/dev"));
    }

    #[test]
    fn adopting_the_cached_agent_again_closes_the_new_connection() {
        let cache = AgentConnCache::new();
        let a = Uuid::new_v4();
        let (cached, fresh) = (Counter::default(), Counter::default());
        let first = cache.adopt(a, ADDRESS, cached.conn());
        let second = cache.adopt(a, ADDRESS, fresh.conn());
        assert_eq!((fresh.closed(), cached.closed()), (1, 0));
        assert_eq!(cache.borrowers(), 2);
        drop((first, second));
        assert_eq!(cached.closed(), 0);
    }

    #[test]
    fn adopting_another_agent_drops_the_old_entry_closing_it_on_its_last_return() {
        let cache = AgentConnCache::new();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (old, new) = (Counter::default(), Counter::default());
        let in_use = cache.adopt(a, ADDRESS, old.conn());
        let other = cache.adopt(b, ADDRESS, new.conn());
        assert_eq!(cache.cached_agent(), Some(b));
        assert_eq!(cache.borrowers(), 1);
        assert!(cache.borrow(a).is_none(), "a dropped entry is not lent");
        assert_eq!(old.closed(), 0, "still in use");
        drop(in_use);
        assert_eq!(old.closed(), 1, "closed on the last return");
        drop(other);
        assert_eq!(new.closed(), 0);
    }

    #[test]
    fn drop_with_borrowers_closes_when_the_last_one_returns() {
        let cache = AgentConnCache::new();
        let a = Uuid::new_v4();
        let c = Counter::default();
        let one = cache.adopt(a, ADDRESS, c.conn());
        let two = cache.borrow(a).unwrap();
        cache.drop_entry();
        assert!(cache.borrow(a).is_none());
        assert_eq!(cache.cached_agent(), None);
        drop(one);
        assert_eq!(c.closed(), 0);
        drop(two);
        assert_eq!(c.closed(), 1);
    }

    #[test]
    fn drop_without_borrowers_closes_at_once() {
        let cache = AgentConnCache::new();
        let a = Uuid::new_v4();
        let c = Counter::default();
        drop(cache.adopt(a, ADDRESS, c.conn()));
        assert_eq!(c.closed(), 0);
        cache.drop_entry();
        assert_eq!(c.closed(), 1);
        // Dropping an empty cache is harmless.
        cache.drop_entry();
    }

    #[test]
    fn an_arc_handed_to_a_tool_returns_on_drop() {
        let cache = AgentConnCache::new();
        let a = Uuid::new_v4();
        let c = Counter::default();
        let shared: Arc<dyn WorkspaceConn> = Arc::new(cache.adopt(a, ADDRESS, c.conn()));
        let clone = shared.clone();
        assert_eq!(cache.borrowers(), 1);
        drop(shared);
        assert_eq!(cache.borrowers(), 1);
        drop(clone);
        assert_eq!(cache.borrowers(), 0);
    }

    #[tokio::test]
    async fn a_call_the_agent_did_not_answer_drops_the_entry_for_a_fresh_dial() {
        let cache = AgentConnCache::new();
        let a = Uuid::new_v4();
        let c = Counter::default();
        let handle = cache.adopt(a, ADDRESS, c.conn());
        let answered = pb::ReadFileRequest {
            path: "fine".into(),
            ..Default::default()
        };
        handle.read_file(answered).await.unwrap();
        assert!(
            cache.borrow(a).is_some(),
            "an answered call keeps the entry"
        );
        let hung = pb::ReadFileRequest {
            path: "hung".into(),
            ..Default::default()
        };
        handle.read_file(hung).await.unwrap_err();
        assert!(cache.borrow(a).is_none(), "the next call dials again");
        assert_eq!(c.closed(), 0, "closed only when its borrower returns it");
        drop(handle);
        assert_eq!(c.closed(), 1);
    }

    #[tokio::test]
    async fn a_handle_scopes_requests_to_its_chat() {
        let cache = AgentConnCache::new();
        let (a, chat) = (Uuid::new_v4(), Uuid::new_v4());
        let c = Counter::default();
        let handle = cache.adopt(a, ADDRESS, c.conn()).for_chat(chat);
        handle
            .start_process(pb::StartProcessRequest::default())
            .await
            .unwrap();
        handle
            .list_processes(pb::ListProcessesRequest {
                chat_id: "explicit".into(),
            })
            .await
            .unwrap();
        assert_eq!(
            *lock(&c.seen),
            vec![chat.to_string(), "explicit".to_owned()]
        );
        assert_eq!(handle.working_directory(), Some("/home/dev"));
    }

    #[test]
    fn the_sentinel_texts_are_the_specs() {
        use WorkspaceConnError as E;
        let rows: Vec<(E, &str)> = vec![
            (
                E::NoWorkspace,
                "this tool requires a workspace and this chat does not have one.",
            ),
            (
                E::NoWorkspaceAgent,
                "workspace has no running agent: the workspace is likely stopped. Use the start_workspace tool to start it",
            ),
            (
                E::AgentDisconnected {
                    threshold: Duration::from_secs(90),
                },
                "workspace agent has been disconnected for at least 90 seconds and cannot execute tools. To recover, call stop_workspace to stop the workspace, then start_workspace to start it again",
            ),
            (
                E::AgentDisconnected {
                    threshold: Duration::from_secs(120),
                },
                "workspace agent has been disconnected for at least 120 seconds and cannot execute tools. To recover, call stop_workspace to stop the workspace, then start_workspace to start it again",
            ),
            (
                E::AgentNeverConnected,
                "workspace agent never connected and its connection timeout has elapsed, so it cannot execute tools. To recover, call stop_workspace to stop the workspace, then start_workspace to start it again",
            ),
            (
                E::DialTimeout,
                "connection to the workspace agent timed out. The agent may still be reachable on the next attempt.",
            ),
            (
                E::ExternalAgentUnavailable {
                    never_connected: true,
                },
                "workspace uses an externally managed agent that has not connected yet. The user needs to start the workspace externally and make sure the external agent is connected, then try again",
            ),
            (
                E::ExternalAgentUnavailable {
                    never_connected: false,
                },
                "workspace uses an externally managed agent that is currently offline. The user needs to reconnect the external agent on its host, then try again",
            ),
            (
                E::BindingChanged {
                    phase: BindingPhase::Resolving,
                },
                "chat workspace changed while resolving agent",
            ),
            (
                E::BindingChanged {
                    phase: BindingPhase::Connecting,
                },
                "chat workspace changed while connecting",
            ),
            (
                E::NotConfigured,
                "workspace agent connector is not configured",
            ),
            (E::ServerClosing, "chatd server inflight closed"),
            (
                E::Selection(SelectError::NoEligibleAgents),
                "no eligible workspace agents found",
            ),
            (
                E::Dial("connection refused".into()),
                "dial workspace agent: connection refused",
            ),
        ];
        for (error, text) in rows {
            assert_eq!(error.to_string(), text, "{error:?}");
        }
        // The transient text is the dial timer's cancellation cause's.
        assert_eq!(
            E::DialTimeout.to_string(),
            CancelCause::DialTimeout.to_string()
        );
    }

    #[test]
    fn the_settings_default_to_the_specs_values() {
        let s = ResolverSettings::default();
        assert_eq!(
            (
                s.dial_timeout,
                s.dial_validation_delay,
                s.agent_disconnected_recovery_threshold,
                s.agent_inactive_timeout,
            ),
            (
                Duration::from_secs(30),
                Duration::from_secs(5),
                Duration::from_secs(90),
                Duration::from_secs(30),
            )
        );
    }

    #[test]
    fn the_working_directory_is_the_expanded_one_else_an_absolute_configured_one() {
        let agent = |directory: &str, expanded: &str| Agent {
            id: Uuid::nil(),
            resource_id: Uuid::nil(),
            name: "dev".into(),
            parent_id: None,
            display_order: 0,
            times: chatstore::agents::AgentTimes {
                created_at: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
                first_connected_at: None,
                last_connected_at: None,
                disconnected_at: None,
                connection_timeout_seconds: 0,
            },
            lifecycle: chatstore::agents::AgentLifecycle::Ready,
            directory: directory.into(),
            expanded_directory: expanded.into(),
            address: String::new(),
        };
        assert_eq!(
            working_directory(&agent("~/src", "/home/dev/src")).as_deref(),
            Some("/home/dev/src")
        );
        assert_eq!(
            working_directory(&agent("/srv/ws", "")).as_deref(),
            Some("/srv/ws")
        );
        assert_eq!(working_directory(&agent("~/src", "")), None);
    }
}
