//! chatd's chat engine (spec/engine.md §9–§13, spec/chatretry.md §7, spec/recovery.md §6, §8): one
//! **worker** per process acquires runnable chats and keeps their leases; one **runner** per owned
//! chat turns chat updates into short-lived **tasks** — generation (one model call or one tool
//! step per task), interrupt, requires-action timeout, abandon — each fenced so a stale task can
//! never write.
//!
//! Module map:
//! - [`worker`]: acquisition passes, heartbeats, cleanup, runner registry, shutdown hand-off;
//! - [`runner`]: the per-chat event loop;
//! - [`generation`]: load → decide → act, with the persisted retry of spec/chatretry.md §7;
//! - [`interrupt`]: finalising an interrupted turn from the buffered parts;
//! - [`compaction`]: summarising a long history into a boundary the next prompts start from;
//! - [`step`]: the pure pieces (prompt rows, decision, accumulation of parts, result caps);
//! - [`watchdog`]: the idle watchdog that restarts a task making no progress;
//! - `lease`: what a runner can prove of its lease between renewals (tools dispatch only then);
//! - `limits`: rate limits shared by the chats (and replicas) of one provider credential;
//! - [`payload`]: the stored error and retry JSON; [`models`]: provider clients;
//! - [`resolver`]: a chat's workspace connection, with the recovery gate of spec/recovery.md;
//! - [`parts`]: the live parts of running turns, which streams and the relay read;
//! - [`builds`]: workspace builds requested by the tools, checked and recorded in the store;
//! - [`metrics`]: what the engine and the daemon's services record.
//!
//! The daemon (`chatd`) starts one [`Engine`] per process with [`EngineDeps`] and
//! [`EngineConfig`], serves the API around it, and reads the live parts through
//! [`Engine::parts`]. This crate has no gRPC server.
//!
//! The engine holds no lock across a model or tool call (E4), and reads leases and deadlines on
//! the database clock (E2).

pub mod builds;
mod cancel;
pub mod compaction;
pub mod generation;
pub mod interrupt;
mod lease;
mod limits;
pub mod metrics;
pub mod models;
pub mod parts;
pub mod payload;
pub mod resolver;
pub mod runner;
pub mod step;
pub mod watchdog;
pub mod worker;

use chatstore::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatmodel::client::Timeouts;
use chatretry::{CancelCause, CancelToken, RetryPolicy, SilenceTimeout};
use chatstore::pubsub::{ChatUpdate, Pubsub};
use chatstore::types::Fence;
use chatstore::{Applied, Change, StoreError};
use chattool::builds::WorkspaceBuilds;
use chattool::wait::AgentDialer;
use chattool::{Tool, ToolSettings};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::metrics::TurnOutcome;
use crate::parts::{PartBuffer, PartBufferConfig};
use crate::resolver::{AgentConnector, ResolverSettings};
use step::BufferedPart;

pub use worker::Engine;

/// Timing knobs and limits of the engine (spec/engine.md §18); defaults are the spec's.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// `worker.acquire_interval`: acquisition pass without a notification (30 s).
    pub acquire_interval: Duration,
    /// `worker.acquire_batch`: chats acquired per transaction (10).
    pub acquire_batch: i64,
    /// `worker.heartbeat_interval`: lease renewal (9 s).
    pub heartbeat_interval: Duration,
    /// `worker.lease_stale_after` (30 s): a heartbeat tick times out after a third of it.
    pub lease_stale_after: Duration,
    /// `worker.heartbeat_cleanup_interval`: deleting stale heartbeat rows (30 s).
    pub heartbeat_cleanup_interval: Duration,
    /// `worker.runner_sync_interval`: re-reading every owned chat (15 s).
    pub runner_sync_interval: Duration,
    /// `worker.task_retry_initial` / `_max`: back-off of infrastructure errors (100 ms / 5 s).
    pub task_retry_initial: Duration,
    /// See `task_retry_initial`.
    pub task_retry_max: Duration,
    /// `worker.task_idle_watchdog`: a generation or interrupt task that makes no progress for
    /// this long is cancelled and started again (15 min; raised to the stream silence timeout
    /// plus 5 min, so the silence guard fires first).
    pub task_idle_watchdog: Duration,
    /// `chat.max_steps_per_turn` (1200).
    pub max_steps_per_turn: usize,
    /// `stream_silence_timeout` (10 min; zero disables).
    pub stream_silence_timeout: SilenceTimeout,
    /// `retry.*`: the persisted retry of model calls.
    pub retry: RetryPolicy,
    /// `provider.connect_timeout` / `provider.first_byte_timeout`.
    pub provider_timeouts: Timeouts,
    /// `provider.shared_rate_limits` (on): a rate limit with a Retry-After on one chat holds
    /// back the other chats of this replica, and of the replicas sharing the store, that use the
    /// same provider credential, until it ends (spec/chatretry.md §11.7).
    pub shared_rate_limits: bool,
    /// How often the holds other replicas recorded are read (1 s).
    pub shared_limit_poll: Duration,
    /// Which API key references the provider clients read (`*_API_KEY` variables and files
    /// in `/run/secrets` by default).
    pub key_references: models::KeyReferences,
    /// The deployment's system prompt (first in every prompt; empty = none).
    pub system_prompt: String,
    /// Where this replica serves the part relay (registered in `chatd_workers`).
    pub relay_address: String,
    /// `shutdown.grace`: how long shutdown waits for tasks before abandoning chats (10 s).
    pub shutdown_grace: Duration,
    /// `interrupt.tool_cancel_wait`: how long an interrupt (or an edit that removes a running
    /// step) waits in all for the workspace agent to cancel the step's calls (30 s; zero sends
    /// no cancel).
    pub tool_cancel_wait: Duration,
    /// How often old idempotency-ledger rows are purged (1 h).
    pub ledger_purge_interval: Duration,
    /// How old a ledger row must be to be purged (7 days).
    pub ledger_retention: Duration,
    /// The live part buffer.
    pub parts: PartBufferConfig,
    /// The tools' settings; their chat-agent suffix is also the resolver's.
    pub tools: ToolSettings,
    /// Workspace-connection resolution (dial timeout, recovery threshold).
    pub resolver: ResolverSettings,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            acquire_interval: Duration::from_secs(30),
            acquire_batch: 10,
            heartbeat_interval: Duration::from_secs(9),
            lease_stale_after: Duration::from_secs(30),
            heartbeat_cleanup_interval: Duration::from_secs(30),
            runner_sync_interval: Duration::from_secs(15),
            task_retry_initial: Duration::from_millis(100),
            task_retry_max: Duration::from_secs(5),
            task_idle_watchdog: watchdog::DEFAULT_IDLE_LIMIT,
            max_steps_per_turn: 1200,
            stream_silence_timeout: SilenceTimeout::default(),
            retry: RetryPolicy::default(),
            provider_timeouts: Timeouts::default(),
            shared_rate_limits: true,
            shared_limit_poll: Duration::from_secs(1),
            key_references: models::KeyReferences::default(),
            system_prompt: String::new(),
            relay_address: String::new(),
            shutdown_grace: Duration::from_secs(10),
            tool_cancel_wait: Duration::from_secs(30),
            ledger_purge_interval: Duration::from_secs(3600),
            ledger_retention: Duration::from_secs(7 * 24 * 3600),
            parts: PartBufferConfig::default(),
            tools: ToolSettings::default(),
            resolver: ResolverSettings::default(),
        }
    }
}

/// What the engine works with.
#[derive(Clone)]
pub struct EngineDeps {
    /// Chat state and the workspace read model.
    pub store: Arc<dyn Database>,
    /// Change notifications.
    pub pubsub: Arc<dyn Pubsub>,
    /// Builds workspaces for the lifecycle tools; `None` = not configured.
    pub builds: Option<Arc<dyn WorkspaceBuilds>>,
    /// Dials workspace agents for the tools; `None` = workspace tools answer "not configured".
    pub connector: Option<Arc<dyn AgentConnector>>,
    /// Proves a new agent reachable during readiness waits.
    pub dialer: Option<Arc<dyn AgentDialer>>,
}

impl std::fmt::Debug for EngineDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineDeps").finish_non_exhaustive()
    }
}

/// Why a task ended without finishing its work. None of these writes anything.
#[derive(Debug, thiserror::Error)]
pub enum TaskExit {
    /// The task's token fired (user interrupt, shutdown, superseded turn).
    #[error("{0}")]
    Cancelled(CancelCause),
    /// The chat moved on: another owner, another history, another status.
    #[error("fence mismatch: {0}")]
    Fenced(String),
    /// A write the state machine refused for another reason (a bug, logged).
    #[error("unexpected store error")]
    Store(#[source] StoreError),
}

impl TaskExit {
    /// The exit as a span's `outcome`.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Self::Cancelled(_) => "cancelled",
            Self::Fenced(_) => "fenced",
            Self::Store(_) => "store_error",
        }
    }
}

/// State shared by the worker, its runners and their tasks.
pub(crate) struct Shared {
    pub(crate) deps: EngineDeps,
    pub(crate) config: EngineConfig,
    pub(crate) worker_id: Uuid,
    pub(crate) parts: PartBuffer<BufferedPart>,
    pub(crate) models: models::ModelClients,
    pub(crate) tools: HashMap<&'static str, Arc<dyn Tool>>,
    /// The tools offered to the model (a subset of `tools`, by what is configured).
    pub(crate) active_tools: std::collections::HashSet<&'static str>,
    pub(crate) tool_settings: Arc<ToolSettings>,
    pub(crate) rng: Mutex<Box<dyn chatretry::RetryRng>>,
    pub(crate) runners: worker::Runners,
    /// Rate limits shared per provider credential; `None` when turned off.
    pub(crate) limits: Option<Arc<chatretry::SharedLimits>>,
}

/// What a task knows of the runner that spawned it.
#[derive(Clone)]
pub(crate) struct TaskCtx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) chat_id: Uuid,
    pub(crate) runner_id: Uuid,
    /// The history the task was spawned for.
    pub(crate) history_version: i64,
    pub(crate) token: CancelToken,
    /// The runner's fast path: committed chats are fed back at once.
    pub(crate) hint: mpsc::UnboundedSender<ChatUpdate>,
    pub(crate) runner: Arc<runner::RunnerState>,
    /// Kicked as the task makes progress (the idle watchdog's input).
    pub(crate) progress: Arc<watchdog::Progress>,
}

impl TaskCtx {
    /// The fence of this task's writes; `attempt` adds the generation fence.
    pub(crate) fn fence(&self, attempt: Option<i64>) -> Fence {
        Fence {
            worker_id: self.shared.worker_id,
            runner_id: self.runner_id,
            history_version: Some(self.history_version),
            generation_attempt: attempt,
        }
    }

    /// Applies a fenced change as a [`commit`](Self::commit) with nothing more to do after it.
    pub(crate) async fn apply(
        &self,
        change: Change,
        attempt: Option<i64>,
    ) -> Result<Applied, TaskExit> {
        self.commit(change, self.fence(attempt), || {}).await
    }

    /// Applies a fenced change and then everything that follows from it — the turn metric, the
    /// runner's fast-path hint, `after` — as one unit that a cancellation cannot split.
    ///
    /// The commit's own notification can reach the runner before the reply to its `COMMIT`
    /// reaches this task, and the runner then cancels (or shutdown aborts) the task. So the unit
    /// runs in a task of its own: a write in flight is always awaited to its end, and a write
    /// that committed always has its side effects (a dropped write would also make the driver
    /// roll back a transaction the server had already committed). Between attempts the token
    /// is checked: a cancelled task starts no new write. Database failures are retried as in
    /// [`infra`](Self::infra).
    pub(crate) async fn commit(
        &self,
        change: Change,
        fence: Fence,
        after: impl FnOnce() + Send + 'static,
    ) -> Result<Applied, TaskExit> {
        let t = self.clone();
        let unit = tokio::spawn(async move {
            let ended = match change {
                Change::FinishTurn => Some(TurnOutcome::Completed),
                Change::FinishError { .. } => Some(TurnOutcome::Error),
                Change::FinishInterruption { .. } => Some(TurnOutcome::Interrupted),
                _ => None,
            };
            let store = &t.shared.deps.store;
            let applied = t
                .retrying(false, || {
                    store.apply(t.chat_id, change.clone(), Some(fence))
                })
                .await?;
            t.progress.kick();
            if let Some(outcome) = ended {
                crate::metrics::turn_finished(outcome);
            }
            after();
            let _ = t.hint.send(ChatUpdate::from_chat(&applied.chat));
            Ok(applied)
        });
        match unit.await {
            Ok(result) => result,
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            // Only a runtime shutting down cancels a spawned task.
            Err(_) => Err(TaskExit::Cancelled(CancelCause::Shutdown)),
        }
    }

    /// Runs a store operation, retrying database failures 100 ms → 5 s (spec/chatretry.md §9);
    /// fence mismatches and refusals end the task. The operation is dropped when the token
    /// fires, so only reads go through here; writes go through [`commit`](Self::commit).
    pub(crate) async fn infra<T, F, Fut>(&self, op: F) -> Result<T, TaskExit>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.retrying(true, op).await
    }

    /// The retry loop of [`infra`](Self::infra) and [`commit`](Self::commit): with
    /// `race_token`, an operation in flight is dropped when the token fires; without, it is
    /// awaited to its end and only the next attempt is not started.
    async fn retrying<T, F, Fut>(&self, race_token: bool, mut op: F) -> Result<T, TaskExit>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut delay = self.shared.config.task_retry_initial;
        loop {
            let result = if race_token {
                self.token
                    .run(op())
                    .await
                    .map_err(|c| TaskExit::Cancelled(c.cause.unwrap_or(CancelCause::Shutdown)))?
            } else if self.token.is_cancelled() {
                return Err(cancelled(&self.token));
            } else {
                op().await
            };
            match result {
                Ok(value) => return Ok(value),
                // The database refused the data: the same write fails again, so it ends the
                // task instead of wedging the chat in retries.
                Err(err) if err.is_permanent() => return Err(TaskExit::Store(err)),
                Err(StoreError::Query(err)) | Err(StoreError::Connect(err)) => {
                    tracing::warn!(chat_id = %self.chat_id, error = %err, "database error in a chat task; retrying");
                }
                Err(StoreError::FenceMismatch(why)) => return Err(TaskExit::Fenced(why.into())),
                Err(StoreError::ChatNotFound(_)) => {
                    return Err(TaskExit::Fenced("the chat is gone".into()));
                }
                Err(StoreError::Transition(err)) => return Err(TaskExit::Fenced(err.to_string())),
                Err(other) => return Err(TaskExit::Store(other)),
            }
            self.sleep(delay).await?;
            delay = (delay * 2).min(self.shared.config.task_retry_max);
        }
    }

    /// Sleeps (a deliberate wait, which the idle watchdog allows), or ends with the token's
    /// cause.
    pub(crate) async fn sleep(&self, delay: Duration) -> Result<(), TaskExit> {
        let _waiting = self.progress.waiting();
        self.token
            .run(tokio::time::sleep(delay))
            .await
            .map_err(|c| TaskExit::Cancelled(c.cause.unwrap_or(CancelCause::Shutdown)))
    }

    /// The database clock (spec/engine.md E2); the local clock if the database cannot say.
    pub(crate) async fn database_now(&self) -> chrono::DateTime<chrono::Utc> {
        match self.shared.deps.store.database_now().await {
            Ok(now) => now,
            Err(_) => chrono::Utc::now(),
        }
    }
}

/// `Cancelled(cause)` of a token that fired.
pub(crate) fn cancelled(token: &CancelToken) -> TaskExit {
    TaskExit::Cancelled(token.cause().unwrap_or(CancelCause::Shutdown))
}

/// `outer: cause: root cause`, so a log line says why, not only what.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
