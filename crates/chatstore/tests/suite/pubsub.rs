//! LISTEN/NOTIFY pubsub: delivery after commit only, resync after a lost connection.

use chatstate::BusyBehavior;
use chatstore::postgres::{PgPubsub, PgStore};
use chatstore::pubsub::{Notification, Pubsub as _, Topic};
use chatstore::types::{MessagePart, NewMessage};
use chatstore::{Change, Store, StoreConfig};

use super::support::*;

async fn next_update(sub: &mut chatstore::pubsub::Subscription) -> Notification {
    tokio::time::timeout(std::time::Duration::from_secs(10), sub.recv())
        .await
        .expect("a notification within 10 s")
        .expect("the hub is alive")
}

// PostgreSQL only: it sends a notification by hand inside a transaction it rolls back.
#[tokio::test]
async fn updates_arrive_after_commit_and_never_after_rollback() {
    let seeded = Seeded::new().await;
    let s = &seeded;
    let store = PgStore::new(s.pool().clone(), StoreConfig::default());
    let (hub, task) = PgPubsub::start(s.pool()).await.unwrap();
    let fixture = Fixture {
        org: s.org,
        user: s.user,
        model_config: s.model_config,
    };
    let chat = store.create_chat(fixture.new_chat()).await.unwrap().chat;
    let mut sub = hub.subscribe(Topic::Chat(chat.id));

    // Notifications are sent inside the transition's transaction: one rolled back is never
    // delivered. Simulate a transition that fails after notifying.
    let mut tx = s.pool().begin().await.unwrap();
    let mut ghost = chatstore::pubsub::ChatUpdate::from_chat(&chat);
    ghost.snapshot_version = 999;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(chatstore::pubsub::UPDATE_CHANNEL)
        .bind(ghost.to_payload())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let applied = store
        .apply(
            chat.id,
            Change::SendMessage {
                message: NewMessage::user(s.user, vec![MessagePart::text("second")]),
                busy: BusyBehavior::Queue,
                reasoning_effort: None,
            },
            None,
        )
        .await
        .unwrap();
    // The creation's own notification may still be in flight; skip older snapshots.
    loop {
        match next_update(&mut sub).await {
            Notification::ChatUpdate(update)
                if update.snapshot_version < applied.chat.snapshot_version => {}
            Notification::ChatUpdate(update) => {
                assert_ne!(
                    update.snapshot_version, 999,
                    "a rolled-back notification was delivered"
                );
                assert_eq!(update.snapshot_version, applied.chat.snapshot_version);
                assert_eq!(update.queue_version, applied.chat.queue_version);
                assert_eq!(update.status, "running");
                break;
            }
            other => panic!("expected a chat update, got {other:?}"),
        }
    }
    task.abort();
    seeded.finish().await;
}

pub async fn an_unowned_runnable_chat_sends_an_ownership_hint<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    let hub = b.pubsub().await;
    let mut hints = hub.subscribe(Topic::Ownership);
    let chat = store.create_chat(s.new_chat()).await.unwrap().chat;
    match next_update(&mut hints).await {
        Notification::Ownership(hint) => assert_eq!(hint.chat_id, chat.id),
        other => panic!("expected an ownership hint, got {other:?}"),
    }
    b.finish().await;
}

pub async fn an_owner_hears_of_every_chat_of_theirs_including_title_changes<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    let hub = b.pubsub().await;
    let mut mine = hub.subscribe(Topic::Owner(s.user));
    let mut someone_elses = hub.subscribe(Topic::Owner(uuid::Uuid::new_v4()));
    let chat = store.create_chat(s.new_chat()).await.unwrap().chat;
    match next_update(&mut mine).await {
        Notification::ChatUpdate(update) => {
            assert_eq!(update.chat_id, chat.id);
            assert_eq!(update.owner_id, Some(s.user));
        }
        other => panic!("expected a chat update, got {other:?}"),
    }
    let metadata = chatstore::ChatMetadata {
        title: Some("Renamed".into()),
        ..Default::default()
    };
    let renamed = store
        .update_chat_metadata(chat.id, &metadata)
        .await
        .unwrap();
    // A metadata write announces the chat at its current snapshot.
    match next_update(&mut mine).await {
        Notification::ChatUpdate(update) => {
            assert_eq!(update.chat_id, chat.id);
            assert_eq!(update.snapshot_version, renamed.snapshot_version);
        }
        other => panic!("expected a chat update, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), someone_elses.recv())
            .await
            .is_err(),
        "another user's topic stays quiet"
    );
    b.finish().await;
}

#[tokio::test]
async fn a_killed_listener_connection_resyncs_and_later_notifications_arrive() {
    let s = Seeded::new().await;
    let store = PgStore::new(s.pool().clone(), StoreConfig::default());
    let (hub, task) = PgPubsub::start(s.pool()).await.unwrap();
    let fixture = Fixture {
        org: s.org,
        user: s.user,
        model_config: s.model_config,
    };
    let chat = store.create_chat(fixture.new_chat()).await.unwrap().chat;
    let mut sub = hub.subscribe(Topic::Chat(chat.id));

    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE 'LISTEN%'",
    )
    .fetch_one(s.pool())
    .await
    .unwrap();
    assert_eq!(killed, 1, "exactly one listening connection per process");
    // The creation's notification may arrive first; the resync must follow.
    loop {
        match next_update(&mut sub).await {
            Notification::Resync => break,
            Notification::ChatUpdate(update) => {
                assert_eq!(update.snapshot_version, chat.snapshot_version)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    // Keep changing the chat until a notification arrives through the new connection (the
    // listener re-listens when it reconnects; changes made before that are covered by the resync).
    let mut snapshot = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let applied = store
            .apply(
                chat.id,
                Change::SendMessage {
                    message: NewMessage::user(s.user, vec![MessagePart::text("again")]),
                    busy: BusyBehavior::Queue,
                    reasoning_effort: None,
                },
                None,
            )
            .await
            .unwrap();
        snapshot = snapshot.max(applied.chat.snapshot_version);
        match tokio::time::timeout(std::time::Duration::from_millis(200), sub.recv()).await {
            Ok(Some(Notification::ChatUpdate(update))) => {
                assert!(update.snapshot_version <= snapshot);
                break;
            }
            Ok(Some(Notification::Resync)) | Err(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no notification after the reconnect"
                );
            }
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    task.abort();
    s.finish().await;
}
