//! `WatchChats` (spec/engine.md §15.4): one task per watching client that reports lifecycle
//! events of all the caller's chats — created, status and title changes, dynamic tool calls
//! waiting for the client.
//!
//! Like the stream loop ([`crate::stream`]), the watch never trusts a notification's fields:
//! an update of one of the owner's chats (`chat:owner:{owner_id}`) makes it re-read that chat
//! and compare it with what the client was told; a lost-notification `Resync` and a periodic
//! poll re-read the whole listing. The client is told of each change once, whatever the number
//! of notifications.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chatproto::chatd::v1 as pb;
use chatstate::ChatStatus;
use chatstore::pubsub::{Notification, Pubsub, Subscription, Topic};
use chatstore::types::Chat;
use chatstore::{ChatCursor, ChatListQuery, Store, StoreError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::closing::{Closing, spawn_client_stream};
use crate::convert;
use crate::stream::{action_calls, deliver};

/// Page size of the listing a watch re-reads.
const LIST_PAGE: i64 = 200;
/// Responses queued for a client before the watch waits (and, after the timeout, cuts it off).
const CLIENT_BUFFER: usize = 64;

/// The responses of one `WatchChats` call.
pub(crate) type WatchEvents = ReceiverStream<Result<pb::WatchChatsResponse, Status>>;

/// Opens watches. One per process; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Watches {
    store: Arc<dyn Store>,
    pubsub: Arc<dyn Pubsub>,
    poll_interval: Duration,
    subscriber_timeout: Duration,
    closing: Closing,
}

impl Watches {
    /// Watches over the store and its notifications; the listing is re-read every
    /// `poll_interval`, and a client that takes no event for `subscriber_timeout` is cut off.
    /// Watches end when `closing` fires.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        pubsub: Arc<dyn Pubsub>,
        poll_interval: Duration,
        subscriber_timeout: Duration,
        closing: Closing,
    ) -> Self {
        Self {
            store,
            pubsub,
            poll_interval,
            subscriber_timeout,
            closing,
        }
    }

    /// Starts watching the chats of `owner_id` (in `organization_id` only, when given). The
    /// watch ends when the returned stream is dropped.
    pub(crate) fn open(&self, owner_id: Uuid, organization_id: Option<Uuid>) -> WatchEvents {
        // Subscribe before the first listing, so no change in between is missed.
        let updates = self.pubsub.subscribe(Topic::Owner(owner_id));
        let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
        let watch = Watch {
            store: self.store.clone(),
            owner_id,
            organization_id,
            known: HashMap::new(),
            tx: tx.clone(),
            subscriber_timeout: self.subscriber_timeout,
        };
        let task = watch.run(updates, self.poll_interval);
        spawn_client_stream("watch", &self.closing, tx, task);
        ReceiverStream::new(rx)
    }
}

/// What the client was told of one chat.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    status: ChatStatus,
    title: String,
    /// The workspace binding (workspace, build, agent): a new build is news, so a client can
    /// follow its logs at once (spec/chattool.md §2.6).
    binding: (Option<Uuid>, Option<Uuid>, Option<Uuid>),
    /// History version of the last `action_required` sent.
    action_history: i64,
}

struct Watch {
    store: Arc<dyn Store>,
    owner_id: Uuid,
    organization_id: Option<Uuid>,
    known: HashMap<Uuid, Seen>,
    tx: mpsc::Sender<Result<pb::WatchChatsResponse, Status>>,
    subscriber_timeout: Duration,
}

/// Why a watch ended.
enum End {
    /// The client went away or was cut off.
    Gone,
    /// The database failed; the client is told.
    Failed(StoreError),
}

impl From<StoreError> for End {
    fn from(err: StoreError) -> Self {
        End::Failed(err)
    }
}

impl Watch {
    async fn run(mut self, mut updates: Subscription, poll_interval: Duration) {
        match self.serve(&mut updates, poll_interval).await {
            Err(End::Failed(err)) => {
                warn!(owner_id = %self.owner_id, error = %err, "chat watch ended");
                let _ = self
                    .tx
                    .send(Err(Status::unavailable(
                        "the database is unavailable; reconnect to resume watching",
                    )))
                    .await;
            }
            Err(End::Gone) | Ok(()) => debug!(owner_id = %self.owner_id, "chat watch closed"),
        }
    }

    async fn serve(
        &mut self,
        updates: &mut Subscription,
        poll_interval: Duration,
    ) -> Result<(), End> {
        // The baseline: what exists now is known, not news.
        for chat in self.list().await? {
            self.known.insert(chat.id, seen(&chat));
        }
        let mut poll = tokio::time::interval(poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.reset();
        let mut notifications = true;
        loop {
            tokio::select! {
                () = self.tx.closed() => return Err(End::Gone),
                notification = updates.recv(), if notifications => match notification {
                    Some(Notification::ChatUpdate(update)) => {
                        match self.store.chat(update.chat_id).await {
                            Ok(chat) => self.observe(&chat).await?,
                            Err(StoreError::ChatNotFound(_)) => {}
                            Err(err) => return Err(err.into()),
                        }
                    }
                    Some(Notification::Resync) => self.observe_all().await?,
                    Some(_) => {}
                    None => notifications = false,
                },
                _ = poll.tick() => self.observe_all().await?,
            }
        }
    }

    /// The owner's unarchived chats (in the organization, when one was asked for).
    async fn list(&self) -> Result<Vec<Chat>, StoreError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .list_chats(&ChatListQuery {
                    owner_id: self.owner_id,
                    organization_id: self.organization_id,
                    archived: false,
                    after,
                    limit: LIST_PAGE,
                    ..ChatListQuery::default()
                })
                .await?;
            let full = i64::try_from(page.len()).unwrap_or(i64::MAX) >= LIST_PAGE;
            after = page.last().map(ChatCursor::of);
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }

    async fn observe_all(&mut self) -> Result<(), End> {
        for chat in self.list().await? {
            self.observe(&chat).await?;
        }
        Ok(())
    }

    /// Tells the client what changed in `chat` since it last heard of it.
    async fn observe(&mut self, chat: &Chat) -> Result<(), End> {
        if chat.owner_id != self.owner_id
            || self
                .organization_id
                .is_some_and(|org| org != chat.organization_id)
        {
            return Ok(());
        }
        let mut kinds = Vec::new();
        match self.known.get(&chat.id) {
            // Archived chats are out of view; one that was never seen is new.
            None if chat.archived => return Ok(()),
            None => kinds.push(pb::ChatWatchEventKind::Created),
            Some(before) => {
                if before.status != chat.status || before.binding != binding(chat) {
                    kinds.push(pb::ChatWatchEventKind::StatusChange);
                }
                if before.title != chat.title {
                    kinds.push(pb::ChatWatchEventKind::TitleChange);
                }
            }
        }
        let action_history = self.known.get(&chat.id).map_or(0, |s| s.action_history);
        let mut tool_calls = Vec::new();
        if chat.status == ChatStatus::RequiresAction && chat.history_version > action_history {
            let history = self.store.history(chat.id, false).await?;
            tool_calls = action_calls(chat, &history);
            kinds.push(pb::ChatWatchEventKind::ActionRequired);
        }
        let mut now = seen(chat);
        if chat.status == ChatStatus::RequiresAction {
            now.action_history = chat.history_version.max(action_history);
        }
        self.known.insert(chat.id, now);
        let wire = convert::chat(chat);
        for kind in kinds {
            let response = pb::WatchChatsResponse {
                kind: kind.into(),
                chat: Some(wire.clone()),
                tool_calls: if kind == pb::ChatWatchEventKind::ActionRequired {
                    std::mem::take(&mut tool_calls)
                } else {
                    Vec::new()
                },
            };
            self.send(response).await?;
        }
        Ok(())
    }

    async fn send(&self, response: pb::WatchChatsResponse) -> Result<(), End> {
        if deliver(&self.tx, response, self.subscriber_timeout).await {
            Ok(())
        } else {
            Err(End::Gone)
        }
    }
}

fn binding(chat: &Chat) -> (Option<Uuid>, Option<Uuid>, Option<Uuid>) {
    (chat.workspace_id, chat.build_id, chat.agent_id)
}

fn seen(chat: &Chat) -> Seen {
    Seen {
        status: chat.status.clone(),
        title: chat.title.clone(),
        binding: binding(chat),
        action_history: 0,
    }
}
