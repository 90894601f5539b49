//! The runner of one owned chat (spec/engine.md §11): an event loop over chat updates — its
//! subscription (opened before the first read), the worker's periodic sync, and its own tasks'
//! fast-path hints — that cancels and spawns tasks. The loop itself does no I/O besides the
//! initial read and re-reads after lost notifications.

use std::sync::Arc;

use chatretry::{CancelCause, CancelToken};
use chatstore::Change;
use chatstore::pubsub::{ChatUpdate, Notification, Topic};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::lease::LeaseProof;
use crate::resolver::{AgentConnCache, WorkspaceConnResolver};
use crate::watchdog::Progress;
use crate::{Shared, TaskCtx, TaskExit, generation, interrupt};

/// What a runner's tasks share: the workspace connection and the per-chat workspace mutex.
pub(crate) struct RunnerState {
    /// The runner's token: work that must outlive a cancelled task (cancelling its calls in
    /// the workspace) runs under it.
    pub(crate) token: CancelToken,
    pub(crate) resolver: Option<WorkspaceConnResolver>,
    pub(crate) cache: Arc<AgentConnCache>,
    pub(crate) workspace_lock: Arc<tokio::sync::Mutex<()>>,
    /// What the runner can prove of its lease; tools are dispatched only while it holds.
    pub(crate) lease: Arc<LeaseProof>,
}

/// The worker's handle on a runner.
pub(crate) struct RunnerHandle {
    pub(crate) runner_id: Uuid,
    /// The runner's lease proof, renewed by the heartbeat.
    pub(crate) lease: Arc<LeaseProof>,
    pub(crate) events: mpsc::UnboundedSender<ChatUpdate>,
    pub(crate) token: CancelToken,
    pub(crate) task: JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Generation,
    Interrupt,
    RequiresActionTimeout,
    Abandon,
}

struct Active {
    token: CancelToken,
    task: JoinHandle<()>,
}

/// Starts the runner of a chat this worker just acquired.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    chat_id: Uuid,
    runner_id: Uuid,
    parent: &CancelToken,
    acquired: tokio::time::Instant,
) -> RunnerHandle {
    let lease = Arc::new(LeaseProof::new(acquired, shared.config.lease_stale_after));
    let (events, rx) = mpsc::unbounded_channel();
    let token = parent.child();
    let cache = Arc::new(AgentConnCache::default());
    let resolver = shared.deps.connector.clone().map(|connector| {
        WorkspaceConnResolver::new(
            shared.deps.store.clone(),
            connector,
            shared.config.resolver.clone(),
            cache.clone(),
            None,
        )
        .with_chat_suffix(shared.config.tools.chat_suffix.clone())
    });
    let state = Arc::new(RunnerState {
        token: token.clone(),
        resolver,
        cache,
        workspace_lock: Arc::default(),
        lease: lease.clone(),
    });
    let runner = Runner {
        shared,
        chat_id,
        runner_id,
        token: token.clone(),
        hint: events.clone(),
        state,
        last: None,
        active: None,
        turn: None,
    };
    let live = crate::metrics::Live::runner();
    let task = tokio::spawn(async move {
        let _live = live;
        runner.run(rx).await;
    });
    RunnerHandle {
        runner_id,
        lease,
        events,
        token,
        task,
    }
}

struct Runner {
    shared: Arc<Shared>,
    chat_id: Uuid,
    runner_id: Uuid,
    token: CancelToken,
    hint: mpsc::UnboundedSender<ChatUpdate>,
    state: Arc<RunnerState>,
    last: Option<ChatUpdate>,
    active: Option<Active>,
    /// The span of the turn in progress (from the chat becoming runnable to its end): the
    /// parent of its tasks' spans.
    turn: Option<tracing::Span>,
}

impl Runner {
    async fn run(mut self, mut events: mpsc::UnboundedReceiver<ChatUpdate>) {
        // Subscribe before the first read, so no update falls between them.
        let mut updates = self.shared.deps.pubsub.subscribe(Topic::Chat(self.chat_id));
        self.refetch().await;
        loop {
            let event = tokio::select! {
                biased;
                _ = self.token.cancelled() => break,
                event = events.recv() => match event {
                    Some(event) => event,
                    None => break,
                },
                note = updates.recv() => match note {
                    Some(Notification::ChatUpdate(update)) => update,
                    Some(Notification::Resync) => { self.refetch().await; continue; }
                    Some(_) => continue,
                    None => {
                        updates = self.shared.deps.pubsub.subscribe(Topic::Chat(self.chat_id));
                        self.refetch().await;
                        continue;
                    }
                },
            };
            if !self.on_event(event) {
                break;
            }
        }
        if let Some(active) = self.active.take() {
            active
                .token
                .cancel(self.token.cause().unwrap_or(CancelCause::TurnSuperseded));
        }
        self.state.cache.drop_entry();
        self.shared.forget_runner(self.chat_id, self.runner_id);
        tracing::debug!(chat_id = %self.chat_id, runner_id = %self.runner_id, "runner stopped");
    }

    /// Reads the chat and feeds it in as an event.
    async fn refetch(&self) {
        match self.shared.deps.store.chat(self.chat_id).await {
            Ok(chat) => {
                let _ = self.hint.send(ChatUpdate::from_chat(&chat));
            }
            Err(chatstore::StoreError::ChatNotFound(_)) => {
                self.token.cancel(CancelCause::TurnSuperseded)
            }
            Err(err) => {
                tracing::warn!(chat_id = %self.chat_id, error = %err, "runner could not read its chat; the periodic sync will retry");
            }
        }
    }

    /// One event (spec/engine.md §11 steps 1–10); false = the runner stops.
    fn on_event(&mut self, event: ChatUpdate) -> bool {
        if self
            .last
            .as_ref()
            .is_some_and(|last| event.snapshot_version <= last.snapshot_version)
        {
            return true;
        }
        if event.worker_id != Some(self.shared.worker_id) || event.runner_id != Some(self.runner_id)
        {
            return false;
        }
        let unchanged = self.last.as_ref().is_some_and(|last| {
            last.history_version == event.history_version
                && last.status == event.status
                && last.archived == event.archived
        });
        let task_alive = self.active.as_ref().is_some_and(|a| !a.task.is_finished());
        if unchanged && task_alive {
            self.last = Some(event);
            return true;
        }
        if let Some(active) = self.active.take() {
            let cause = if event.status == "interrupting" {
                CancelCause::UserInterrupt
            } else {
                CancelCause::TurnSuperseded
            };
            active.token.cancel(cause);
        }
        self.follow_turn(&event);
        let kind = if event.archived {
            Kind::Abandon
        } else {
            match event.status.as_str() {
                "running" => Kind::Generation,
                "interrupting" => Kind::Interrupt,
                "requires_action" => Kind::RequiresActionTimeout,
                _ => Kind::Abandon,
            }
        };
        // A finished task with nothing new to do (e.g. an abandon that lost a race) is not
        // restarted on a duplicate event.
        if unchanged && kind != Kind::Generation {
            self.last = Some(event);
            return true;
        }
        self.spawn_task(kind, event.history_version);
        self.last = Some(event);
        true
    }

    /// Opens the turn's span when the chat becomes runnable, and closes it, with the status the
    /// turn ended in, when it stops being so.
    fn follow_turn(&mut self, event: &ChatUpdate) {
        let runnable = !event.archived
            && matches!(
                event.status.as_str(),
                "running" | "interrupting" | "requires_action"
            );
        match (&self.turn, runnable) {
            (None, true) => {
                self.turn = Some(tracing::info_span!(
                    "chat_turn",
                    chat_id = %self.chat_id,
                    runner_id = %self.runner_id,
                    outcome = tracing::field::Empty,
                ));
            }
            (Some(turn), false) => {
                turn.record("outcome", event.status.as_str());
                self.turn = None;
            }
            _ => {}
        }
    }

    fn spawn_task(&mut self, kind: Kind, history_version: i64) {
        let token = self.token.child();
        let ctx = TaskCtx {
            shared: self.shared.clone(),
            chat_id: self.chat_id,
            runner_id: self.runner_id,
            history_version,
            token: token.clone(),
            hint: self.hint.clone(),
            runner: self.state.clone(),
            progress: Progress::new(),
        };
        let config = &self.shared.config;
        // Generation and interrupt tasks only wait on purpose in ways the watchdog knows of;
        // the requires-action timeout sleeps until its deadline and abandon is one write.
        let idle_limit = matches!(kind, Kind::Generation | Kind::Interrupt).then(|| {
            crate::watchdog::effective_limit(
                config.task_idle_watchdog,
                config.stream_silence_timeout,
            )
        });
        let turn = self.turn.clone();
        let task = tokio::spawn(async move {
            let chat_id = ctx.chat_id;
            let result = loop {
                // Each run has its own token under the task's, so the watchdog can cancel a
                // run without cancelling the task.
                let run = TaskCtx {
                    token: ctx.token.child(),
                    progress: Progress::new(),
                    ..ctx.clone()
                };
                let span = tracing::info_span!(
                    parent: turn.as_ref().and_then(tracing::Span::id),
                    "chat_task",
                    chat_id = %chat_id,
                    task = ?kind,
                    history_version,
                    outcome = tracing::field::Empty,
                );
                let work = run_kind(kind, run.clone()).instrument(span.clone());
                let Some(limit) = idle_limit else {
                    let result = work.await;
                    span.record("outcome", crate::generation::exit_outcome(&result));
                    break result;
                };
                tokio::select! {
                    result = work => {
                        span.record("outcome", crate::generation::exit_outcome(&result));
                        break result;
                    }
                    () = run.progress.idle_for(limit) => {
                        span.record("outcome", "idle");
                        run.token.cancel(CancelCause::TurnSuperseded);
                        crate::metrics::task_restarted();
                        tracing::warn!(%chat_id, ?kind, idle = ?limit, "a chat task made no progress; starting it again");
                    }
                }
            };
            match result {
                Ok(()) => {}
                Err(TaskExit::Cancelled(cause)) => {
                    tracing::debug!(%chat_id, ?kind, %cause, "chat task cancelled");
                }
                Err(TaskExit::Fenced(why)) => {
                    tracing::debug!(%chat_id, ?kind, %why, "chat task fenced out");
                }
                Err(TaskExit::Store(err)) => {
                    tracing::error!(%chat_id, ?kind, error = %crate::error_chain(&err), "chat task failed");
                }
            }
        });
        self.active = Some(Active { token, task });
    }
}

/// One run of a task of `kind`.
async fn run_kind(kind: Kind, ctx: TaskCtx) -> Result<(), TaskExit> {
    match kind {
        Kind::Generation => generation::run_or_fail(ctx).await,
        Kind::Interrupt => interrupt::run(ctx).await,
        Kind::RequiresActionTimeout => requires_action_timeout(ctx).await,
        Kind::Abandon => abandon(ctx).await,
    }
}

/// Sleeps until the dynamic tool calls' deadline, then cancels them (fenced).
async fn requires_action_timeout(t: TaskCtx) -> Result<(), TaskExit> {
    let chat = t.infra(|| t.shared.deps.store.chat(t.chat_id)).await?;
    if let Some(deadline) = chat.requires_action_deadline_at {
        let now = t.database_now().await;
        if let Ok(wait) = (deadline - now).to_std() {
            t.sleep(wait).await?;
        }
    }
    t.apply(Change::CancelRequiresAction, None).await?;
    Ok(())
}

/// Lets go of a chat that needs no owner (waiting, error, archived). Fenced on the history it
/// saw: a message sent meanwhile makes the chat runnable again under the same owner, and an
/// abandon landing after it would leave a `running` chat without one.
async fn abandon(t: TaskCtx) -> Result<(), TaskExit> {
    t.apply(Change::Abandon, None).await?;
    Ok(())
}
