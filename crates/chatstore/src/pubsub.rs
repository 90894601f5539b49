//! Notifications are hints (spec/engine.md §10): a receiver re-reads the database when one
//! arrives, and tolerates dropped, duplicated and reordered ones by comparing versions. When
//! hints may have been lost (the listening connection dropped, or a subscriber fell behind), it
//! gets [`Notification::Resync`] and must re-read everything it watches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::types::Chat;

/// Subscribing to change hints. Implemented by [`crate::postgres::PgPubsub`] and by the [`Hub`]
/// itself (the embedded store publishes on it; tests drive one directly). `Debug` so that
/// whatever holds a `dyn Pubsub` can derive its own.
pub trait Pubsub: Send + Sync + std::fmt::Debug {
    /// Subscribes to a topic. Subscribe **before** reading the state the topic describes.
    fn subscribe(&self, topic: Topic) -> Subscription;
}

/// Notifications buffered on a process-wide topic (every ownership hint, every job change); a
/// subscriber further behind gets a `Resync`.
const SHARED_TOPIC_BUFFER: usize = 256;
/// Notifications buffered on the topic of one chat, job or agent. There is one such topic per
/// active chat and a broadcast channel allocates its slots up front, so this stays small: a
/// subscriber that falls behind a handful of changes of one entity re-reads it anyway.
const ENTITY_TOPIC_BUFFER: usize = 16;

impl Topic {
    /// How many notifications the topic buffers per subscriber.
    fn buffer(self) -> usize {
        match self {
            Topic::Ownership | Topic::Jobs | Topic::Owner(_) => SHARED_TOPIC_BUFFER,
            Topic::Chat(_) | Topic::Job(_) | Topic::Agent(_) => ENTITY_TOPIC_BUFFER,
        }
    }
}

/// The in-process fan-out of notifications by topic, shared by every subscriber of a process.
#[derive(Debug, Clone, Default)]
pub struct Hub {
    topics: Arc<Topics>,
}

/// The senders of a hub's topics.
type Topics = Mutex<HashMap<Topic, broadcast::Sender<Notification>>>;

impl Hub {
    /// Delivers a notification to the topic's subscribers (dropped when there are none).
    pub fn deliver(&self, topic: Topic, notification: Notification) {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = topics.get(&topic)
            && sender.send(notification).is_err()
        {
            // Nobody listens any more.
            topics.remove(&topic);
        }
    }

    /// Delivers a notification to every topic it concerns: a chat update to the chat's topic
    /// and its owner's, a job change to the job's topic and [`Topic::Jobs`], an ownership hint
    /// to [`Topic::Ownership`], an agent change to the agent's topic, a resync to everyone.
    pub fn publish(&self, notification: Notification) {
        match notification {
            Notification::ChatUpdate(update) => {
                if let Some(owner) = update.owner_id {
                    self.deliver(
                        Topic::Owner(owner),
                        Notification::ChatUpdate(update.clone()),
                    );
                }
                self.deliver(
                    Topic::Chat(update.chat_id),
                    Notification::ChatUpdate(update),
                );
            }
            Notification::Ownership(hint) => {
                self.deliver(Topic::Ownership, Notification::Ownership(hint))
            }
            Notification::Job(update) => {
                self.deliver(Topic::Job(update.job_id), Notification::Job(update));
                self.deliver(Topic::Jobs, Notification::Job(update));
            }
            Notification::Agent(update) => {
                self.deliver(Topic::Agent(update.agent_id), Notification::Agent(update))
            }
            Notification::Resync => self.resync_all(),
        }
    }

    /// Tells every subscriber that hints may have been lost.
    pub fn resync_all(&self) {
        let topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        for sender in topics.values() {
            let _ = sender.send(Notification::Resync);
        }
    }
}

impl Pubsub for Hub {
    fn subscribe(&self, topic: Topic) -> Subscription {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let sender = topics
            .entry(topic)
            .or_insert_with(|| broadcast::channel(topic.buffer()).0);
        Subscription {
            receiver: sender.subscribe(),
            leave: Some((Arc::downgrade(&self.topics), topic)),
        }
    }
}

impl Hub {
    /// How many topics have subscribers (a topic goes with its last subscriber).
    pub fn topics(&self) -> usize {
        self.topics.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A stream of notifications for one topic.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Notification>,
    /// The hub's topics and this one, to remove it when its last subscriber leaves.
    leave: Option<(std::sync::Weak<Topics>, Topic)>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some((topics, topic)) = self.leave.take() else {
            return;
        };
        let Some(topics) = topics.upgrade() else {
            return;
        };
        let mut topics = topics.lock().unwrap_or_else(|p| p.into_inner());
        // This receiver still counts: it is the last one when the count is one.
        if topics.get(&topic).is_some_and(|s| s.receiver_count() <= 1) {
            topics.remove(&topic);
        }
    }
}

impl Subscription {
    /// The next notification; `None` when the hub is gone. Falling behind yields `Resync`.
    pub async fn recv(&mut self) -> Option<Notification> {
        match self.receiver.recv().await {
            Ok(notification) => Some(notification),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Notification::Resync),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// The global channel of chat updates (logical `chat:update:{chat_id}`; the id is in the payload).
pub const UPDATE_CHANNEL: &str = "chatd_chat_update";
/// The global channel of ownership hints (logical `chat:ownership`).
pub const OWNERSHIP_CHANNEL: &str = "chatd_chat_ownership";
/// The global channel of provisioner job changes (logical `provisioner_job:{job_id}`).
pub const JOB_CHANNEL: &str = "chatd_job_update";
/// The global channel of agent changes (logical `workspace_agent:{agent_id}`).
pub const AGENT_CHANNEL: &str = "chatd_agent_update";

/// Every channel the process listens to.
pub const CHANNELS: [&str; 4] = [
    UPDATE_CHANNEL,
    OWNERSHIP_CHANNEL,
    JOB_CHANNEL,
    AGENT_CHANNEL,
];

/// A provisioner job changed (started, finished, cancelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUpdate {
    /// The job.
    pub job_id: Uuid,
}

/// An agent changed (connected, lifecycle, disconnected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentUpdate {
    /// The agent.
    pub agent_id: Uuid,
}

/// The payload of a chat update: the post-transition values (spec/engine.md §10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatUpdate {
    /// The chat.
    pub chat_id: Uuid,
    /// Its snapshot after the transition.
    pub snapshot_version: i64,
    /// Owner.
    pub worker_id: Option<Uuid>,
    /// Runner.
    pub runner_id: Option<Uuid>,
    /// History version.
    pub history_version: i64,
    /// Queue version.
    pub queue_version: i64,
    /// Retry-state version.
    pub retry_state_version: i64,
    /// Generation attempt.
    pub generation_attempt: i64,
    /// Status.
    pub status: String,
    /// Archived.
    pub archived: bool,
    /// The chat's owner (routes the update to [`Topic::Owner`]); absent in payloads of older
    /// replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<Uuid>,
}

impl ChatUpdate {
    /// The update describing `chat`.
    pub fn from_chat(chat: &Chat) -> Self {
        Self {
            chat_id: chat.id,
            snapshot_version: chat.snapshot_version,
            worker_id: chat.worker_id,
            runner_id: chat.runner_id,
            history_version: chat.history_version,
            queue_version: chat.queue_version,
            retry_state_version: chat.retry_state_version,
            generation_attempt: chat.generation_attempt,
            status: chat.status.as_str().to_owned(),
            archived: chat.archived,
            owner_id: Some(chat.owner_id),
        }
    }

    /// The JSON payload.
    pub fn to_payload(&self) -> String {
        // Serialising plain fields cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// An ownership hint: a runnable chat has no live owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipHint {
    /// The chat.
    pub chat_id: Uuid,
    /// Its snapshot.
    pub snapshot_version: i64,
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// A chat changed.
    ChatUpdate(ChatUpdate),
    /// A runnable chat needs an owner.
    Ownership(OwnershipHint),
    /// A provisioner job changed.
    Job(JobUpdate),
    /// An agent changed.
    Agent(AgentUpdate),
    /// Hints may have been lost: re-read the database.
    Resync,
}

/// What to listen to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Updates of one chat.
    Chat(Uuid),
    /// Ownership hints of all chats.
    Ownership,
    /// Changes of one provisioner job.
    Job(Uuid),
    /// Changes of every provisioner job (what idle provisioner workers wait on).
    Jobs,
    /// Changes of one agent.
    Agent(Uuid),
    /// Updates of every chat of one user (logical `chat:owner:{owner_id}`, what `WatchChats`
    /// listens to).
    Owner(Uuid),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(n: i64) -> Notification {
        Notification::Ownership(OwnershipHint {
            chat_id: Uuid::nil(),
            snapshot_version: n,
        })
    }

    #[test]
    fn a_topic_goes_with_its_last_subscriber() {
        let hub = Hub::default();
        let first = hub.subscribe(Topic::Chat(Uuid::nil()));
        let second = hub.subscribe(Topic::Chat(Uuid::nil()));
        let other = hub.subscribe(Topic::Jobs);
        assert_eq!(hub.topics(), 2);
        drop(first);
        assert_eq!(hub.topics(), 2, "the chat's topic still has a subscriber");
        drop(second);
        assert_eq!(hub.topics(), 1);
        drop(other);
        assert_eq!(hub.topics(), 0);
    }

    #[tokio::test]
    async fn a_hub_delivers_by_topic_and_resyncs_laggards() {
        let hub = Hub::default();
        let mut ownership = hub.subscribe(Topic::Ownership);
        let mut chat = hub.subscribe(Topic::Chat(Uuid::nil()));
        hub.deliver(Topic::Ownership, hint(1));
        assert_eq!(ownership.recv().await, Some(hint(1)));

        // A subscriber that falls more than the buffer behind is told to resync.
        for n in 0..(SHARED_TOPIC_BUFFER as i64 + 10) {
            hub.deliver(Topic::Ownership, hint(n));
        }
        assert_eq!(ownership.recv().await, Some(Notification::Resync));

        hub.resync_all();
        assert_eq!(chat.recv().await, Some(Notification::Resync));

        // The topic of one chat buffers less than the shared ones.
        for n in 0..(ENTITY_TOPIC_BUFFER as i64 + 1) {
            hub.deliver(Topic::Chat(Uuid::nil()), hint(n));
        }
        assert_eq!(chat.recv().await, Some(Notification::Resync));
    }
}
