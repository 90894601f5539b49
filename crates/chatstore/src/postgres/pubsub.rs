//! LISTEN/NOTIFY with one listening connection per process on the global channels, fanned out
//! in-process by topic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::StoreError;
use crate::pubsub::{
    AGENT_CHANNEL, AgentUpdate, CHANNELS, ChatUpdate, JOB_CHANNEL, JobUpdate, Notification,
    OWNERSHIP_CHANNEL, OwnershipHint, Topic, UPDATE_CHANNEL,
};

/// Notifications buffered per topic; a subscriber further behind gets a `Resync`.
const TOPIC_BUFFER: usize = 256;

/// The process's notification hub.
#[derive(Debug, Clone)]
pub struct PgPubsub {
    topics: Arc<Mutex<HashMap<Topic, broadcast::Sender<Notification>>>>,
}

/// A stream of notifications for one topic.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Notification>,
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

impl PgPubsub {
    /// Starts listening on `pool`'s database. Returns once the channels are being listened to,
    /// so a notification committed after this returns is delivered.
    pub async fn start(pool: &PgPool) -> Result<(Self, JoinHandle<()>), StoreError> {
        let mut listener = PgListener::connect_with(pool)
            .await
            .map_err(StoreError::Connect)?;
        listener
            .listen_all(CHANNELS)
            .await
            .map_err(StoreError::query)?;
        let hub = Self {
            topics: Arc::default(),
        };
        let task = tokio::spawn(hub.clone().run(listener));
        Ok((hub, task))
    }

    /// Subscribes to a topic. Subscribe **before** reading the state the topic describes.
    pub fn subscribe(&self, topic: Topic) -> Subscription {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let sender = topics
            .entry(topic)
            .or_insert_with(|| broadcast::channel(TOPIC_BUFFER).0);
        Subscription {
            receiver: sender.subscribe(),
        }
    }

    fn deliver(&self, topic: Topic, notification: Notification) {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = topics.get(&topic)
            && sender.send(notification).is_err()
        {
            // Nobody listens any more.
            topics.remove(&topic);
        }
    }

    fn resync_all(&self) {
        let topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        for sender in topics.values() {
            let _ = sender.send(Notification::Resync);
        }
    }

    async fn run(self, mut listener: PgListener) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    backoff = Duration::from_millis(100);
                    self.route(notification.channel(), notification.payload());
                }
                Ok(None) => {
                    // The connection dropped; the next `try_recv` reconnects and re-listens.
                    warn!("pubsub connection lost; subscribers will resync");
                    self.resync_all();
                }
                Err(err) => {
                    warn!(error = %err, "pubsub receive failed; retrying");
                    self.resync_all();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn route(&self, channel: &str, payload: &str) {
        match channel {
            UPDATE_CHANNEL => match serde_json::from_str::<ChatUpdate>(payload) {
                Ok(update) => self.deliver(
                    Topic::Chat(update.chat_id),
                    Notification::ChatUpdate(update),
                ),
                Err(err) => debug!(error = %err, "ignoring a malformed chat update"),
            },
            OWNERSHIP_CHANNEL => match serde_json::from_str::<OwnershipHint>(payload) {
                Ok(hint) => self.deliver(Topic::Ownership, Notification::Ownership(hint)),
                Err(err) => debug!(error = %err, "ignoring a malformed ownership hint"),
            },
            JOB_CHANNEL => match serde_json::from_str::<JobUpdate>(payload) {
                Ok(update) => self.deliver(Topic::Job(update.job_id), Notification::Job(update)),
                Err(err) => debug!(error = %err, "ignoring a malformed job update"),
            },
            AGENT_CHANNEL => match serde_json::from_str::<AgentUpdate>(payload) {
                Ok(update) => {
                    self.deliver(Topic::Agent(update.agent_id), Notification::Agent(update))
                }
                Err(err) => debug!(error = %err, "ignoring a malformed agent update"),
            },
            other => debug!(
                channel = other,
                "ignoring a notification on an unknown channel"
            ),
        }
    }
}
