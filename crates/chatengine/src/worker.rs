//! The worker of a process (spec/engine.md §9): acquisition passes (at start, on a ticker, on
//! ownership notifications), heartbeats that renew only fresh leases, heartbeat cleanup, the
//! periodic runner sync, the replica's registration for the part relay, and shutdown with
//! hand-off (spec/recovery.md §8).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatretry::{CancelCause, CancelToken, OsSeededRng};
use chatstore::Change;
use chatstore::pubsub::{ChatUpdate, Notification, Topic};
use chatstore::types::Fence;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::parts::PartBuffer;
use crate::runner::{self, RunnerHandle};
use crate::step::BufferedPart;
use crate::{EngineConfig, EngineDeps, Shared, models};

/// A running engine: its worker loops and runners. Drop it only after [`Engine::shutdown`] (a
/// dropped engine's tasks keep running until the runtime ends, which is what a crash test wants).
pub struct Engine {
    shared: Arc<Shared>,
    root: CancelToken,
    loops: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("worker_id", &self.shared.worker_id)
            .finish_non_exhaustive()
    }
}

/// The runners of a worker, by chat.
#[derive(Default)]
pub(crate) struct Runners {
    map: Mutex<HashMap<Uuid, RunnerHandle>>,
}

impl Shared {
    fn runners(&self) -> &Runners {
        &self.runners
    }

    /// Removes a runner that stopped (if it is still the registered one).
    pub(crate) fn forget_runner(&self, chat_id: Uuid, runner_id: Uuid) {
        let mut map = self.runners().map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&chat_id).is_some_and(|r| r.runner_id == runner_id) {
            map.remove(&chat_id);
        }
    }
}

impl Engine {
    /// Starts the worker with a fresh worker id: registers the replica, runs a first
    /// acquisition pass, and keeps the loops going until [`Engine::shutdown`].
    pub async fn start(deps: EngineDeps, config: EngineConfig) -> Engine {
        let worker_id = Uuid::new_v4();
        let tools = chattool::all_tools()
            .into_iter()
            .map(|t| (t.name(), Arc::from(t)))
            .collect();
        let active_tools = active_tools(&deps);
        let shared = Arc::new(Shared {
            worker_id,
            parts: PartBuffer::new(config.parts),
            models: models::ModelClients::new(
                config.provider_timeouts,
                config.key_references.clone(),
            ),
            tool_settings: Arc::new(config.tools.clone()),
            tools,
            active_tools,
            rng: Mutex::new(Box::new(OsSeededRng::default())),
            runners: Runners::default(),
            limits: crate::limits::build(&deps, &config),
            deps,
            config,
        });
        let root = CancelToken::new();
        if let Err(err) = shared
            .deps
            .store
            .register_worker(worker_id, &shared.config.relay_address)
            .await
        {
            tracing::warn!(error = %err, "could not register the replica; the heartbeat loop will retry");
        }
        // A replica that starts while a credential is held back holds its chats back too.
        crate::limits::refresh(&shared).await;
        let wake = Arc::new(Notify::new());
        let loops = vec![
            tokio::spawn(acquisition_loop(shared.clone(), root.clone(), wake.clone())),
            tokio::spawn(ownership_hints(shared.clone(), root.clone(), wake.clone())),
            tokio::spawn(heartbeat_loop(shared.clone(), root.clone(), wake)),
            tokio::spawn(cleanup_loop(shared.clone(), root.clone())),
            tokio::spawn(sync_loop(shared.clone(), root.clone())),
            tokio::spawn(gc_loop(shared.clone(), root.clone())),
            tokio::spawn(crate::limits::sync_loop(shared.clone(), root.clone())),
        ];
        tracing::info!(%worker_id, "chat worker started");
        Engine {
            shared,
            root,
            loops,
        }
    }

    /// This process's worker id.
    pub fn worker_id(&self) -> Uuid {
        self.shared.worker_id
    }

    /// The live part buffer (the stream loop and the relay read it).
    pub fn parts(&self) -> &PartBuffer<BufferedPart> {
        &self.shared.parts
    }

    /// The chats this worker runs.
    pub fn owned_chats(&self) -> Vec<Uuid> {
        let map = self
            .shared
            .runners
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.keys().copied().collect()
    }

    /// Graceful shutdown (spec/recovery.md §8): stop acquiring, cancel every task with the
    /// `Shutdown` cause (no error is written), wait up to the grace period, then abandon every
    /// chat still owned so another replica takes it at once.
    pub async fn shutdown(self) {
        self.root.cancel(CancelCause::Shutdown);
        for task in &self.loops {
            task.abort();
        }
        let runners: Vec<(Uuid, RunnerHandle)> = {
            let mut map = self
                .shared
                .runners
                .map
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            map.drain().collect()
        };
        let grace = self.shared.config.shutdown_grace;
        let deadline = tokio::time::Instant::now() + grace;
        for (chat_id, runner) in runners {
            let _ = tokio::time::timeout_at(deadline, runner.task).await;
            let fence = Fence {
                worker_id: self.shared.worker_id,
                runner_id: runner.runner_id,
                history_version: None,
                generation_attempt: None,
            };
            match self
                .shared
                .deps
                .store
                .apply(chat_id, Change::Abandon, Some(fence))
                .await
            {
                Ok(_) => tracing::info!(%chat_id, "handed the chat off"),
                Err(err) => {
                    tracing::debug!(%chat_id, error = %err, "not abandoned; its lease will lapse")
                }
            }
        }
        tracing::info!(worker_id = %self.shared.worker_id, "chat worker stopped");
    }
}

/// Acquisition passes: at start, every `acquire_interval`, and when woken by a hint.
async fn acquisition_loop(shared: Arc<Shared>, root: CancelToken, wake: Arc<Notify>) {
    let mut ticker = tokio::time::interval(shared.config.acquire_interval);
    loop {
        tokio::select! {
            biased;
            _ = root.cancelled() => return,
            _ = ticker.tick() => {}
            () = wake.notified() => {}
        }
        acquisition_pass(&shared, &root).await;
    }
}

/// One pass (spec/engine.md §9.2): batches of candidates acquired in one transaction each
/// (re-checked under their row locks), repeated while full batches come back. Each chat's
/// runner starts as soon as its batch commits, so a burst of new chats is neither acquired nor
/// started one transaction after another.
async fn acquisition_pass(shared: &Arc<Shared>, root: &CancelToken) {
    let store = &shared.deps.store;
    loop {
        if root.is_cancelled() {
            return;
        }
        let sent = tokio::time::Instant::now();
        let chats = match store
            .acquire_batch(shared.worker_id, shared.config.acquire_batch)
            .await
        {
            Ok(chats) => chats,
            Err(err) => {
                tracing::warn!(error = %err, "acquisition failed");
                return;
            }
        };
        let full = i64::try_from(chats.len()).unwrap_or(i64::MAX) >= shared.config.acquire_batch;
        for chat in chats {
            start_runner(shared, root, &chat, sent);
        }
        if !full {
            return;
        }
    }
}

/// Starts the runner of a chat this worker has just acquired by a statement sent at `sent`.
fn start_runner(
    shared: &Arc<Shared>,
    root: &CancelToken,
    chat: &chatstore::types::Chat,
    sent: tokio::time::Instant,
) {
    let (chat_id, Some(runner_id)) = (chat.id, chat.runner_id) else {
        return;
    };
    let lag = (chrono::Utc::now() - chat.updated_at)
        .to_std()
        .unwrap_or_default();
    crate::metrics::acquired(lag);
    tracing::info!(%chat_id, %runner_id, status = %chat.status, "acquired chat");
    let handle = runner::spawn(shared.clone(), chat_id, runner_id, root, sent);
    let _ = handle.events.send(ChatUpdate::from_chat(chat));
    let old = {
        let mut map = shared.runners.map.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(chat_id, handle)
    };
    if let Some(old) = old {
        old.token.cancel(CancelCause::TurnSuperseded);
    }
}

/// Ownership hints wake the acquisition loop (coalesced).
async fn ownership_hints(shared: Arc<Shared>, root: CancelToken, wake: Arc<Notify>) {
    let mut hints = shared.deps.pubsub.subscribe(Topic::Ownership);
    loop {
        tokio::select! {
            biased;
            _ = root.cancelled() => return,
            note = hints.recv() => match note {
                Some(Notification::Ownership(_) | Notification::Resync) => wake.notify_one(),
                Some(_) => {}
                None => hints = shared.deps.pubsub.subscribe(Topic::Ownership),
            },
        }
    }
}

/// A period that starts one period from now and ends when the worker shuts down.
struct Ticker<'a> {
    interval: tokio::time::Interval,
    root: &'a CancelToken,
}

impl<'a> Ticker<'a> {
    async fn new(period: Duration, root: &'a CancelToken) -> Self {
        let mut interval = tokio::time::interval(period);
        interval.tick().await;
        Self { interval, root }
    }

    /// Waits for the next tick; false once the worker shuts down.
    async fn next(&mut self) -> bool {
        tokio::select! {
            biased;
            _ = self.root.cancelled() => false,
            _ = self.interval.tick() => true,
        }
    }
}

/// Renews the leases of live runners; runners whose lease was not renewed are stopped
/// (spec/engine.md §9.3), and an acquisition pass follows at once, so a chat whose lease lapsed
/// (here or anywhere) is not left `running` until the next periodic pass. A failed tick renews
/// nothing and stops nothing.
async fn heartbeat_loop(shared: Arc<Shared>, root: CancelToken, wake: Arc<Notify>) {
    let mut ticker = Ticker::new(shared.config.heartbeat_interval, &root).await;
    while ticker.next().await {
        let pairs: Vec<(Uuid, Uuid)> = {
            let map = shared.runners.map.lock().unwrap_or_else(|p| p.into_inner());
            map.iter().map(|(chat, r)| (*chat, r.runner_id)).collect()
        };
        let store = &shared.deps.store;
        let tick_timeout = shared.config.lease_stale_after / 3;
        let _ = tokio::time::timeout(
            tick_timeout,
            store.register_worker(shared.worker_id, &shared.config.relay_address),
        )
        .await;
        if pairs.is_empty() {
            continue;
        }
        let sent = tokio::time::Instant::now();
        let renewed =
            match tokio::time::timeout(tick_timeout, store.heartbeat(shared.worker_id, &pairs))
                .await
            {
                Ok(Ok(renewed)) => renewed,
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "heartbeat failed");
                    continue;
                }
                Err(_) => {
                    tracing::warn!("heartbeat timed out");
                    continue;
                }
            };
        let lost: Vec<(Uuid, Uuid)> = pairs
            .into_iter()
            .filter(|pair| !renewed.contains(pair))
            .collect();
        {
            let map = shared.runners.map.lock().unwrap_or_else(|p| p.into_inner());
            for (chat_id, runner_id) in &renewed {
                if let Some(runner) = map.get(chat_id).filter(|r| r.runner_id == *runner_id) {
                    runner.lease.renewed(sent);
                }
            }
        }
        if lost.is_empty() {
            continue;
        }
        {
            let mut map = shared.runners.map.lock().unwrap_or_else(|p| p.into_inner());
            for (chat_id, runner_id) in lost {
                if map.get(&chat_id).is_some_and(|r| r.runner_id == runner_id)
                    && let Some(runner) = map.remove(&chat_id)
                {
                    tracing::info!(%chat_id, %runner_id, "lease lost; stopping the runner");
                    runner.token.cancel(CancelCause::TurnSuperseded);
                }
            }
        }
        wake.notify_one();
    }
}

/// Deletes stale heartbeat rows and purges old ledger rows.
async fn cleanup_loop(shared: Arc<Shared>, root: CancelToken) {
    let mut heartbeats = tokio::time::interval(shared.config.heartbeat_cleanup_interval);
    let mut ledger = tokio::time::interval(shared.config.ledger_purge_interval);
    loop {
        tokio::select! {
            biased;
            _ = root.cancelled() => return,
            _ = heartbeats.tick() => {
                if let Err(err) = shared.deps.store.cleanup_heartbeats().await {
                    tracing::warn!(error = %err, "heartbeat cleanup failed");
                }
            }
            _ = ledger.tick() => {
                match shared.deps.store.purge_tool_executions(shared.config.ledger_retention).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "purged old tool-ledger rows"),
                    Err(err) => tracing::warn!(error = %err, "tool-ledger purge failed"),
                }
            }
        }
    }
}

/// Re-reads every owned chat and forwards it to its runner (a safety net for lost hints).
async fn sync_loop(shared: Arc<Shared>, root: CancelToken) {
    let mut ticker = Ticker::new(shared.config.runner_sync_interval, &root).await;
    while ticker.next().await {
        let chats: Vec<Uuid> = {
            let map = shared.runners.map.lock().unwrap_or_else(|p| p.into_inner());
            map.keys().copied().collect()
        };
        for chat_id in chats {
            let Ok(chat) = shared.deps.store.chat(chat_id).await else {
                continue;
            };
            let map = shared.runners.map.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(runner) = map.get(&chat_id) {
                let _ = runner.events.send(ChatUpdate::from_chat(&chat));
            }
        }
    }
}

/// Drops closed episodes nobody reads.
async fn gc_loop(shared: Arc<Shared>, root: CancelToken) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            biased;
            _ = root.cancelled() => return,
            _ = ticker.tick() => { shared.parts.collect_garbage(); }
        }
    }
}

/// The tools a turn offers: the template tools always, the lifecycle tools when builds are
/// configured, the process and file tools when agents can be dialled. A call of another known
/// tool is answered `Tool not active in this turn` (spec/chattool.md §2.8).
fn active_tools(deps: &EngineDeps) -> std::collections::HashSet<&'static str> {
    use chattool::tool::TypedTool as _;
    let mut active: std::collections::HashSet<&'static str> = [
        chattool::templates::ListTemplates::NAME,
        chattool::templates::ReadTemplate::NAME,
    ]
    .into_iter()
    .collect();
    if deps.builds.is_some() {
        active.extend([
            chattool::lifecycle::CreateWorkspace::NAME,
            chattool::lifecycle::StartWorkspace::NAME,
            chattool::lifecycle::StopWorkspace::NAME,
        ]);
    }
    if deps.connector.is_some() {
        active.extend(chattool::workspace_tools().iter().map(|t| t.name()));
    }
    active
}
