//! Store benchmark: transition throughput at concurrency 1 and 8, one acquisition pass
//! over 1,000 runnable chats, and notification latency from commit to subscriber.
//!
//! Run with `cargo bench -p chatstore` against the PostgreSQL of `TEST_DATABASE_URL` (default:
//! the local server); it creates and drops its own database and prints its figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark reports on stdout

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatstate::BusyBehavior;
use chatstore::postgres::{PgPubsub, PgStore};
use chatstore::pubsub::{Notification, Pubsub as _, Topic};
use chatstore::testing::TestDatabase;
use chatstore::types::{Fence, MessagePart, NewChat, NewMessage};
use chatstore::{Change, Store, StoreConfig};
use uuid::Uuid;

struct Env {
    store: Arc<PgStore>,
    org: Uuid,
    user: Uuid,
    model: Uuid,
}

impl Env {
    fn new_chat(&self) -> NewChat {
        NewChat {
            organization_id: self.org,
            owner_id: self.user,
            model_config_id: self.model,
            content: vec![MessagePart::text("benchmark")],
            title: None,
            system_prompt: None,
            workspace_id: None,
            reasoning_effort: None,
            labels: Default::default(),
            dynamic_tools: None,
        }
    }
}

async fn seed(db: &TestDatabase) -> Env {
    let pool = db.pool.clone();
    let org: Uuid =
        sqlx::query_scalar("INSERT INTO organizations (name) VALUES ('bench') RETURNING id")
            .fetch_one(&pool)
            .await
            .unwrap();
    let user: Uuid =
        sqlx::query_scalar("INSERT INTO users (username) VALUES ('bench') RETURNING id")
            .fetch_one(&pool)
            .await
            .unwrap();
    let provider: Uuid = sqlx::query_scalar(
        "INSERT INTO chat_providers (provider) VALUES ('anthropic') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let model: Uuid = sqlx::query_scalar(
        "INSERT INTO chat_model_configs (organization_id, provider_id, model, context_limit) VALUES ($1, $2, 'm', 1000) RETURNING id",
    )
    .bind(org)
    .bind(provider)
    .fetch_one(&pool)
    .await
    .unwrap();
    Env {
        store: Arc::new(PgStore::new(pool, StoreConfig::default())),
        org,
        user,
        model,
    }
}

/// One turn: send (idle → running), record an attempt, commit a step, finish. Returns the
/// number of transitions applied.
async fn turns(env: &Env, chat: Uuid, fence: Fence, count: usize) -> usize {
    let store = &env.store;
    let mut applied = 0;
    for _ in 0..count {
        store
            .apply(
                chat,
                Change::SendMessage {
                    message: NewMessage::user(env.user, vec![MessagePart::text("next")]),
                    busy: BusyBehavior::Queue,
                    reasoning_effort: None,
                },
                None,
            )
            .await
            .unwrap();
        let history = store.chat(chat).await.unwrap().history_version;
        let fence = Fence {
            history_version: Some(history),
            ..fence
        };
        store
            .apply(chat, Change::RecordGenerationAttempt, Some(fence))
            .await
            .unwrap();
        let committed = store
            .apply(
                chat,
                Change::CommitStep {
                    messages: vec![NewMessage::assistant(vec![MessagePart::text("answer")])],
                    consume_compaction: false,
                },
                Some(fence),
            )
            .await
            .unwrap();
        let fence = Fence {
            history_version: Some(committed.chat.history_version),
            ..fence
        };
        store
            .apply(chat, Change::FinishTurn, Some(fence))
            .await
            .unwrap();
        applied += 4;
    }
    applied
}

async fn owned_idle_chat(env: &Env) -> (Uuid, Fence) {
    let chat = env.store.create_chat(env.new_chat()).await.unwrap().chat.id;
    let (worker_id, runner_id) = (Uuid::new_v4(), Uuid::new_v4());
    let acquired = env
        .store
        .acquire(chat, worker_id, runner_id)
        .await
        .unwrap()
        .unwrap();
    let fence = Fence {
        worker_id,
        runner_id,
        history_version: Some(acquired.history_version),
        generation_attempt: None,
    };
    env.store
        .apply(chat, Change::FinishTurn, Some(fence))
        .await
        .unwrap();
    (chat, fence)
}

async fn throughput(env: &Env, concurrency: usize, turns_each: usize) {
    let mut chats = Vec::new();
    for _ in 0..concurrency {
        chats.push(owned_idle_chat(env).await);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (chat, fence) in chats {
        let env = Env {
            store: Arc::clone(&env.store),
            org: env.org,
            user: env.user,
            model: env.model,
        };
        tasks.push(tokio::spawn(async move {
            turns(&env, chat, fence, turns_each).await
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "transitions, concurrency {concurrency}: {total} in {:.2} s = {:.0} transitions/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
}

async fn acquisition_pass(env: &Env, chats: usize) {
    for _ in 0..chats {
        env.store.create_chat(env.new_chat()).await.unwrap();
    }
    let worker = Uuid::new_v4();
    let started = Instant::now();
    let mut acquired = 0;
    loop {
        let batch = env.store.acquisition_candidates(10).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for chat in batch {
            if env
                .store
                .acquire(chat, worker, Uuid::new_v4())
                .await
                .unwrap()
                .is_some()
            {
                acquired += 1;
            }
        }
    }
    println!(
        "acquisition pass over {chats} runnable chats: {acquired} acquired in {:.3} s",
        started.elapsed().as_secs_f64()
    );
}

async fn notification_latency(env: &Env, pool: &sqlx::PgPool, samples: usize) {
    let (hub, task) = PgPubsub::start(pool).await.unwrap();
    let chat = env.store.create_chat(env.new_chat()).await.unwrap().chat.id;
    let mut sub = hub.subscribe(Topic::Chat(chat));
    // Drain the creation's notification.
    while let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
        let _ = n;
    }
    let mut after_commit = Vec::with_capacity(samples);
    let mut whole = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        let applied = env
            .store
            .apply(
                chat,
                Change::SendMessage {
                    message: NewMessage::user(env.user, vec![MessagePart::text("ping")]),
                    busy: BusyBehavior::Queue,
                    reasoning_effort: None,
                },
                None,
            )
            .await
            .unwrap();
        let committed = Instant::now();
        loop {
            match sub.recv().await.unwrap() {
                Notification::ChatUpdate(u)
                    if u.snapshot_version == applied.chat.snapshot_version =>
                {
                    break;
                }
                _ => {}
            }
        }
        let received = Instant::now();
        after_commit.push(received.saturating_duration_since(committed));
        whole.push(received - start);
        // Keep the queue from filling up.
        let queued = applied.queued.unwrap().id;
        env.store
            .apply(
                chat,
                Change::DeleteQueuedMessage {
                    queued_message_id: queued,
                },
                None,
            )
            .await
            .unwrap();
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), sub.recv()).await {}
    }
    task.abort();
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    };
    println!(
        "notification latency over {samples} commits: after commit returned p50 {:?} p99 {:?}; \
         from transaction start p50 {:?} p99 {:?}",
        pct(&mut after_commit, 0.5),
        pct(&mut after_commit, 0.99),
        pct(&mut whole, 0.5),
        pct(&mut whole, 0.99)
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let db = TestDatabase::create()
            .await
            .expect("PostgreSQL must answer at TEST_DATABASE_URL (default: the local server)");
        let env = seed(&db).await;
        throughput(&env, 1, 100).await;
        throughput(&env, 8, 100).await;
        acquisition_pass(&env, 1000).await;
        notification_latency(&env, &db.pool, 500).await;
        drop(env);
        db.drop_database().await.unwrap();
    });
}
