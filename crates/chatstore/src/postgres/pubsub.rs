//! LISTEN/NOTIFY with one listening connection per process on the global channels, fanned out
//! in-process by topic.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::StoreError;
use crate::pubsub::{
    AGENT_CHANNEL, CHANNELS, Hub, JOB_CHANNEL, Notification, OWNERSHIP_CHANNEL, Pubsub,
    Subscription, Topic, UPDATE_CHANNEL,
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
        let notification = match channel {
            UPDATE_CHANNEL => serde_json::from_str(payload).map(Notification::ChatUpdate),
            OWNERSHIP_CHANNEL => serde_json::from_str(payload).map(Notification::Ownership),
            JOB_CHANNEL => serde_json::from_str(payload).map(Notification::Job),
            AGENT_CHANNEL => serde_json::from_str(payload).map(Notification::Agent),
            other => {
                debug!(
                    channel = other,
                    "ignoring a notification on an unknown channel"
                );
                return;
            }
        };
        match notification {
            Ok(notification) => self.hub.publish(notification),
            Err(err) => debug!(channel, error = %err, "ignoring a malformed notification"),
        }
    }
}
