//! LISTEN/NOTIFY with one listening connection per process on the global channels, fanned out
//! in-process by topic.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::StoreError;
use crate::pubsub::{
    AGENT_CHANNEL, AgentUpdate, CHANNELS, ChatUpdate, Hub, JOB_CHANNEL, JobUpdate, Notification,
    OWNERSHIP_CHANNEL, OwnershipHint, Pubsub, Subscription, Topic, UPDATE_CHANNEL,
};

/// The process's notification hub, fed by one LISTEN connection.
#[derive(Debug, Clone)]
pub struct PgPubsub {
    hub: Hub,
}

impl Pubsub for PgPubsub {
    fn subscribe(&self, topic: Topic) -> Subscription {
        self.hub.subscribe(topic)
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
            hub: Hub::default(),
        };
        let task = tokio::spawn(hub.clone().run(listener));
        Ok((hub, task))
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
                    self.hub.resync_all();
                }
                Err(err) => {
                    warn!(error = %err, "pubsub receive failed; retrying");
                    self.hub.resync_all();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn route(&self, channel: &str, payload: &str) {
        match channel {
            UPDATE_CHANNEL => match serde_json::from_str::<ChatUpdate>(payload) {
                Ok(update) => {
                    if let Some(owner) = update.owner_id {
                        self.hub.deliver(
                            Topic::Owner(owner),
                            Notification::ChatUpdate(update.clone()),
                        );
                    }
                    self.hub.deliver(
                        Topic::Chat(update.chat_id),
                        Notification::ChatUpdate(update),
                    );
                }
                Err(err) => debug!(error = %err, "ignoring a malformed chat update"),
            },
            OWNERSHIP_CHANNEL => match serde_json::from_str::<OwnershipHint>(payload) {
                Ok(hint) => self
                    .hub
                    .deliver(Topic::Ownership, Notification::Ownership(hint)),
                Err(err) => debug!(error = %err, "ignoring a malformed ownership hint"),
            },
            JOB_CHANNEL => match serde_json::from_str::<JobUpdate>(payload) {
                Ok(update) => {
                    self.hub
                        .deliver(Topic::Job(update.job_id), Notification::Job(update));
                    self.hub.deliver(Topic::Jobs, Notification::Job(update));
                }
                Err(err) => debug!(error = %err, "ignoring a malformed job update"),
            },
            AGENT_CHANNEL => match serde_json::from_str::<AgentUpdate>(payload) {
                Ok(update) => self
                    .hub
                    .deliver(Topic::Agent(update.agent_id), Notification::Agent(update)),
                Err(err) => debug!(error = %err, "ignoring a malformed agent update"),
            },
            other => debug!(
                channel = other,
                "ignoring a notification on an unknown channel"
            ),
        }
    }
}
