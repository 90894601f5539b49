//! The stream loop of `StreamChat` (spec/engine.md §14): one task per connected client that
//! turns database state into the events of §15.1 and splices in the live parts of the running
//! episode from whichever replica runs the chat ([`crate::relay`]).
//!
//! The loop never emits an event from a notification's fields: notifications (and a poller,
//! for lost ones) are only hints to re-read the database, and each re-read (`Sync`) compares a
//! consistent snapshot with what this client was already sent. So duplicate, late or lost
//! notifications, relay reconnects and missing parts never end a stream or send wrong events.
//! A client that does not take a batch within the subscriber timeout is cut off, so it never
//! holds anyone else up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chatproto::chatd::v1 as pb;
use chatstate::ChatStatus;
use chatstore::pubsub::{ChatUpdate, Notification, Pubsub, Subscription, Topic};
use chatstore::types::{Chat, Message, Visibility};
use chatstore::{ChatSnapshot, Store, StoreError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::closing::{Closing, spawn_client_stream};
use crate::convert;
use crate::relay::{PartSource, Relay};
use chatengine::step::pending_dynamic_calls;

/// Timing knobs of stream loops (spec/engine.md §18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamConfig {
    /// `stream.sync_poll_interval`: re-check the chat without a notification (10 s).
    pub sync_poll_interval: Duration,
    /// `parts.subscriber_timeout`: a client that takes no batch for this long is cut off (10 s).
    pub subscriber_timeout: Duration,
    /// How often a failed database read is retried before the stream ends (3).
    pub read_attempts: u32,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            sync_poll_interval: Duration::from_secs(10),
            subscriber_timeout: Duration::from_secs(10),
            read_attempts: 3,
        }
    }
}

/// Most parts spliced into one response.
const PART_BATCH: usize = 64;
/// Responses queued for a client before the loop waits (and, after the timeout, cuts it off).
const CLIENT_BUFFER: usize = 32;

/// Opens stream loops. One per process; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Streams {
    store: Arc<dyn Store>,
    pubsub: Arc<dyn Pubsub>,
    parts: PartSource,
    config: StreamConfig,
    closing: Closing,
}

/// The responses of one `StreamChat` call.
pub(crate) type ChatEvents = ReceiverStream<Result<pb::StreamChatResponse, Status>>;

impl Streams {
    /// Stream loops over the store, its notifications and the live parts of `parts`, ended
    /// when `closing` fires.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        pubsub: Arc<dyn Pubsub>,
        parts: PartSource,
        config: StreamConfig,
        closing: Closing,
    ) -> Self {
        Self {
            store,
            pubsub,
            parts,
            config,
            closing,
        }
    }

    /// Starts the loop of one client on `chat_id` (already authorised); `after_id` skips
    /// committed messages with an id at or below it in the initial state. The loop ends when
    /// the returned stream is dropped.
    pub(crate) fn open(&self, chat_id: Uuid, after_id: Option<i64>) -> ChatEvents {
        // Subscribe before the bootstrap read, so no change between the two is missed.
        let updates = self.pubsub.subscribe(Topic::Chat(chat_id));
        let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
        let (relay, parts) = Relay::new(self.parts.clone(), chat_id);
        let stream = Loop {
            store: self.store.clone(),
            config: self.config,
            chat_id,
            after_id,
            local: Local::default(),
            relay,
            tx: tx.clone(),
        };
        spawn_client_stream("chat", &self.closing, tx, stream.run(updates, parts));
        ReceiverStream::new(rx)
    }
}

/// What this client has been sent (spec/engine.md §14.2).
#[derive(Debug, Default)]
struct Local {
    snapshot_version: i64,
    history_version: i64,
    queue_version: i64,
    retry_state_version: i64,
    /// Message id → the revision last sent (or skipped by `after_id`).
    revisions: HashMap<i64, i64>,
    status: Option<ChatStatus>,
    /// History version of the last `error` sent.
    error_history: i64,
    /// History version of the last `action_required` sent.
    action_history: i64,
    worker_id: Option<Uuid>,
    generation_attempt: i64,
    /// `seq` of the last part sent in the current episode.
    seq: i64,
    /// The current attempt failed or is being retried: its remaining parts are dropped.
    attempt_retired: bool,
}

impl Local {
    /// Whether a hint says the database holds something this client has not seen
    /// (spec/engine.md §14.3).
    fn worth_reading(&self, hint: &ChatUpdate) -> bool {
        hint.snapshot_version > self.snapshot_version
            && (hint.history_version > self.history_version
                || hint.queue_version > self.queue_version
                || hint.retry_state_version > self.retry_state_version
                || self
                    .status
                    .as_ref()
                    .is_none_or(|s| s.as_str() != hint.status)
                || hint.worker_id != self.worker_id
                || hint.generation_attempt != self.generation_attempt)
    }
}

/// Why a loop ended.
#[derive(Debug)]
enum End {
    /// The client went away or was cut off; nothing more to tell it.
    Gone,
    /// The loop cannot go on; the client is told why.
    Failed(Status),
}

struct Loop {
    store: Arc<dyn Store>,
    config: StreamConfig,
    chat_id: Uuid,
    after_id: Option<i64>,
    local: Local,
    relay: Relay,
    tx: mpsc::Sender<Result<pb::StreamChatResponse, Status>>,
}

impl Loop {
    async fn run(
        mut self,
        mut updates: Subscription,
        mut parts: mpsc::Receiver<pb::ChatMessagePartEvent>,
    ) {
        let end = self.serve(&mut updates, &mut parts).await;
        match end {
            Err(End::Failed(status)) => {
                warn!(chat_id = %self.chat_id, error = %status.message(), "chat stream ended");
                let _ = self.tx.send(Err(status)).await;
            }
            Err(End::Gone) | Ok(()) => debug!(chat_id = %self.chat_id, "chat stream closed"),
        }
    }

    async fn serve(
        &mut self,
        updates: &mut Subscription,
        parts: &mut mpsc::Receiver<pb::ChatMessagePartEvent>,
    ) -> Result<(), End> {
        self.sync(None).await?;
        let mut poll = tokio::time::interval(self.config.sync_poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.reset();
        let mut notifications = true;
        loop {
            tokio::select! {
                () = self.tx.closed() => return Err(End::Gone),
                notification = updates.recv(), if notifications => match notification {
                    Some(Notification::ChatUpdate(update)) if update.chat_id == self.chat_id => {
                        self.sync(Some(&update)).await?;
                    }
                    Some(Notification::Resync) => self.sync(None).await?,
                    Some(_) => {}
                    // The hub is gone (shutdown): the poller carries on alone.
                    None => notifications = false,
                },
                _ = poll.tick() => {
                    let chat = self.read(|store, id| async move { store.chat(id).await }).await?;
                    self.sync(Some(&ChatUpdate::from_chat(&chat))).await?;
                }
                part = parts.recv() => {
                    // The relay lives as long as the loop, so the channel never closes here.
                    let Some(first) = part else { continue };
                    let mut events = Vec::new();
                    self.accept(first, &mut events)?;
                    while events.len() < PART_BATCH {
                        let Ok(next) = parts.try_recv() else { break };
                        self.accept(next, &mut events)?;
                    }
                    self.send(events).await?;
                }
            }
        }
    }

    /// Emits a relayed part if it belongs to the current episode and follows the last one.
    fn accept(
        &mut self,
        part: pb::ChatMessagePartEvent,
        events: &mut Vec<pb::ChatStreamEvent>,
    ) -> Result<(), End> {
        let local = &mut self.local;
        if part.history_version != local.history_version
            || part.generation_attempt != local.generation_attempt
            || local.attempt_retired
            || part.seq <= local.seq
        {
            // Another episode, a retired attempt, or a replay after a relay reconnect.
            return Ok(());
        }
        if part.seq != local.seq + 1 {
            return Err(End::Failed(Status::internal(format!(
                "live parts of chat {} skipped from {} to {}",
                self.chat_id, local.seq, part.seq
            ))));
        }
        local.seq = part.seq;
        events.push(pb::ChatStreamEvent {
            message_part: Some(part),
            ..event(pb::ChatStreamEventType::MessagePart, self.chat_id)
        });
        Ok(())
    }

    /// Sends a batch, cutting off a client that does not take it in time.
    async fn send(&self, events: Vec<pb::ChatStreamEvent>) -> Result<(), End> {
        if events.is_empty() {
            return Ok(());
        }
        let response = pb::StreamChatResponse { events };
        if deliver(&self.tx, response, self.config.subscriber_timeout).await {
            Ok(())
        } else {
            Err(End::Gone)
        }
    }

    /// A database read, retried a few times before the stream gives up.
    async fn read<T, F, Fut>(&self, op: F) -> Result<T, End>
    where
        F: Fn(Arc<dyn Store>, Uuid) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match op(self.store.clone(), self.chat_id).await {
                Ok(value) => return Ok(value),
                Err(StoreError::ChatNotFound(id)) => {
                    return Err(End::Failed(Status::not_found(format!(
                        "chat {id} not found"
                    ))));
                }
                Err(err) if attempt >= self.config.read_attempts => {
                    warn!(chat_id = %self.chat_id, error = %err, "chat stream cannot read the database");
                    return Err(End::Failed(Status::unavailable(
                        "the database is unavailable; reconnect to resume the stream",
                    )));
                }
                Err(err) => {
                    debug!(chat_id = %self.chat_id, error = %err, attempt, "chat stream read failed; retrying");
                }
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
            attempt += 1;
        }
    }

    /// `Sync(hints)` of spec/engine.md §14.3; `None` reads unconditionally.
    async fn sync(&mut self, hint: Option<&ChatUpdate>) -> Result<(), End> {
        if let Some(hint) = hint
            && !self.local.worth_reading(hint)
        {
            return Ok(());
        }
        let since = self.local.history_version;
        let mut snapshot = self
            .read(|store, id| async move { store.snapshot(id, since).await })
            .await?;
        let reset = snapshot.history.iter().any(|m| m.deleted);
        let wants_action = snapshot.chat.status == ChatStatus::RequiresAction
            && snapshot.chat.history_version > self.local.action_history;
        if since > 0 && (reset || wants_action) {
            // A reset re-sends everything, and pending calls need the whole prompt: read the
            // whole live history (a newer snapshot, used for this Sync entirely).
            snapshot = self
                .read(|store, id| async move { store.snapshot(id, 0).await })
                .await?;
        }
        if snapshot.chat.snapshot_version <= self.local.snapshot_version {
            return Ok(());
        }
        let bootstrap = self.local.snapshot_version == 0;
        let events = self.apply(&snapshot, reset, bootstrap);
        self.send(events).await
    }

    /// Rules 1–10 of spec/engine.md §14.3 over a snapshot newer than what was sent.
    fn apply(
        &mut self,
        snapshot: &ChatSnapshot,
        reset: bool,
        bootstrap: bool,
    ) -> Vec<pb::ChatStreamEvent> {
        let chat = &snapshot.chat;
        let id = self.chat_id;
        let local = &mut self.local;
        let mut events = Vec::new();
        let history_changed = chat.history_version > local.history_version;
        let attempt_changed = chat.generation_attempt != local.generation_attempt;
        let retry_changed = chat.retry_state_version > local.retry_state_version;

        // 1. Committed messages.
        if history_changed {
            if reset {
                events.push(event(pb::ChatStreamEventType::HistoryReset, id));
                local.revisions.clear();
            }
            for message in &snapshot.history {
                if message.deleted || message.visibility == Visibility::Model {
                    continue;
                }
                let known = local.revisions.insert(message.id, message.revision);
                let skipped = bootstrap && self.after_id.is_some_and(|after| message.id <= after);
                if !skipped && known.is_none_or(|r| r < message.revision) {
                    events.push(pb::ChatStreamEvent {
                        message: Some(convert::message(message)),
                        ..event(pb::ChatStreamEventType::Message, id)
                    });
                }
            }
        }
        // 2. The queue.
        if chat.queue_version > local.queue_version {
            events.push(pb::ChatStreamEvent {
                queued_messages: snapshot.queue.iter().map(convert::queued).collect(),
                ..event(pb::ChatStreamEventType::QueueUpdate, id)
            });
        }
        // 3. Status.
        if local.status.as_ref() != Some(&chat.status) {
            events.push(pb::ChatStreamEvent {
                status: convert::status(&chat.status).into(),
                ..event(pb::ChatStreamEventType::Status, id)
            });
        }
        // 4. The error that stopped the chat.
        if chat.status == ChatStatus::Error && chat.history_version > local.error_history {
            local.error_history = chat.history_version;
            if let Some(error) = &chat.last_error {
                events.push(pb::ChatStreamEvent {
                    error: Some(convert::chat_error(error)),
                    ..event(pb::ChatStreamEventType::Error, id)
                });
            }
        }
        // 5. Dynamic tool calls waiting for the client.
        if chat.status == ChatStatus::RequiresAction && chat.history_version > local.action_history
        {
            local.action_history = chat.history_version;
            events.push(pb::ChatStreamEvent {
                action_required: Some(pb::ActionRequired {
                    tool_calls: action_calls(chat, &snapshot.history),
                }),
                ..event(pb::ChatStreamEventType::ActionRequired, id)
            });
        }
        // 6. A retry being waited out.
        if retry_changed
            && chat.status == ChatStatus::Running
            && let Some(retry) = &chat.retry_state
        {
            events.push(pb::ChatStreamEvent {
                retry: Some(convert::retry_event(retry)),
                ..event(pb::ChatStreamEventType::Retry, id)
            });
        }
        // 7. Whether the current attempt's parts still count.
        if history_changed || attempt_changed {
            local.attempt_retired = false;
        }
        if chat.retry_state.is_some()
            || chat.status == ChatStatus::Error
            || (retry_changed && !attempt_changed)
        {
            local.attempt_retired = true;
        }
        // 8. A new episode: clients drop the live parts they have.
        if history_changed || (attempt_changed && chat.generation_attempt != 0) {
            local.seq = 0;
            events.push(event(pb::ChatStreamEventType::PreviewReset, id));
        }
        // 9. Follow the running episode.
        if chat.generation_attempt > 0 {
            self.relay.point(
                chat.worker_id,
                chat.history_version,
                chat.generation_attempt,
            );
        }
        // 10. Remember.
        local.snapshot_version = chat.snapshot_version;
        local.history_version = chat.history_version;
        local.queue_version = chat.queue_version;
        local.retry_state_version = chat.retry_state_version;
        local.status = Some(chat.status.clone());
        local.worker_id = chat.worker_id;
        local.generation_attempt = chat.generation_attempt;
        events
    }
}

/// Sends one response to a streaming client; false when the client went away or did not take
/// it within `timeout` (then it is cut off: a stuck client never holds anything up).
pub(crate) async fn deliver<T>(
    tx: &mpsc::Sender<Result<T, Status>>,
    response: T,
    timeout: Duration,
) -> bool {
    match tokio::time::timeout(timeout, tx.send(Ok(response))).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            warn!("a streaming client took nothing for {timeout:?}; cutting it off");
            false
        }
    }
}

/// An event of `kind` without payload.
fn event(kind: pb::ChatStreamEventType, chat_id: Uuid) -> pb::ChatStreamEvent {
    pb::ChatStreamEvent {
        r#type: kind.into(),
        chat_id: chat_id.to_string(),
        ..pb::ChatStreamEvent::default()
    }
}

/// The dynamic calls a `requires_action` chat waits for, on the wire.
pub(crate) fn action_calls(chat: &Chat, history: &[Message]) -> Vec<pb::ActionRequiredToolCall> {
    pending_dynamic_calls(chat, history)
        .into_iter()
        .map(|call| pb::ActionRequiredToolCall {
            tool_call_id: call.id,
            tool_name: call.name,
            args: call.args,
        })
        .collect()
}
