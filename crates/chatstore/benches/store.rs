//! Store benchmark, both backends in one run: transition throughput at concurrency 1 and 8,
//! an acquisition pass over 1,000 runnable chats (one transaction per chat, then one per
//! batch of 10), and notification latency (from the start of
//! the transition to the subscriber, and from `apply` returning to the subscriber). It prints
//! each figure as it is measured, then a table with a column per backend.
//!
//! Run with `cargo bench -p chatstore`. PostgreSQL is the server of `TEST_DATABASE_URL` (default:
//! the local one; a fresh database is created and dropped); the embedded file is created in a
//! temporary directory on the same disk as `target/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark reports on stdout

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatstate::BusyBehavior;
use chatstore::pubsub::{Notification, Pubsub, Topic};
use chatstore::testing::{Fixtures as _, ModelFixtures as _, TestDatabase};
use chatstore::types::{Fence, MessagePart, NewChat, NewMessage};
use chatstore::{Change, Database, DatabaseUrl, OpenDatabase, OpenOptions, StoreConfig};
use uuid::Uuid;

#[derive(Clone)]
struct Env {
    store: Arc<dyn Database>,
    pubsub: Arc<dyn Pubsub>,
    org: Uuid,
    user: Uuid,
    model: Uuid,
}

impl Env {
    fn new_chat(&self) -> NewChat {
        NewChat::new(
            self.org,
            self.user,
            self.model,
            vec![MessagePart::text("benchmark")],
        )
    }
}

/// A store on `database` with an organization, a user and a model, made as the API makes them.
async fn seed(database: &OpenDatabase) -> (Env, Option<tokio::task::JoinHandle<()>>) {
    let store = database.store(StoreConfig::default());
    let (pubsub, listener) = database.pubsub().await.unwrap();
    let org = store.fixture_organization("bench").await.unwrap();
    let user = store.fixture_user("bench", "member", org).await.unwrap();
    let model = store
        .fixture_model(org, "anthropic", "", "m", 1000, true)
        .await
        .unwrap();
    let env = Env {
        store,
        pubsub,
        org,
        user,
        model,
    };
    (env, listener)
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

async fn throughput(env: &Env, concurrency: usize, turns_each: usize) -> f64 {
    let mut chats = Vec::new();
    for _ in 0..concurrency {
        chats.push(owned_idle_chat(env).await);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (chat, fence) in chats {
        let env = env.clone();
        tasks.push(tokio::spawn(async move {
            turns(&env, chat, fence, turns_each).await
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "transitions, concurrency {concurrency}: {total} in {:.2} s = {rate:.0} transitions/s",
        elapsed.as_secs_f64(),
    );
    rate
}

/// How an acquisition pass takes its chats.
#[derive(Debug, Clone, Copy)]
enum Acquisition {
    /// Candidates in batches of 10, then each chat in its own transaction.
    OneByOne,
    /// Batches of 10, each acquired in one transaction.
    Batched,
}

async fn acquisition_pass(env: &Env, chats: usize, how: Acquisition) -> Duration {
    for _ in 0..chats {
        env.store.create_chat(env.new_chat()).await.unwrap();
    }
    let worker = Uuid::new_v4();
    let started = Instant::now();
    let mut acquired = 0;
    loop {
        let before = acquired;
        match how {
            Acquisition::OneByOne => {
                for chat in env.store.acquisition_candidates(10).await.unwrap() {
                    let taken = env.store.acquire(chat, worker, Uuid::new_v4()).await;
                    acquired += usize::from(taken.unwrap().is_some());
                }
            }
            Acquisition::Batched => {
                acquired += env.store.acquire_batch(worker, 10).await.unwrap().len();
            }
        }
        if acquired == before {
            break;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "acquisition pass ({how:?}) over {chats} runnable chats: {acquired} acquired in {:.3} s",
        elapsed.as_secs_f64()
    );
    elapsed
}

/// p50 and p99 from the transition's start, then from `apply` returning, to the subscriber.
struct Latency([Duration; 4]);

async fn notification_latency(env: &Env, samples: usize) -> Latency {
    let hub = &env.pubsub;
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
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    };
    let latency = Latency([
        pct(&mut whole, 0.5),
        pct(&mut whole, 0.99),
        pct(&mut after_commit, 0.5),
        pct(&mut after_commit, 0.99),
    ]);
    println!(
        "notification latency over {samples} commits: from transaction start p50 {:?} p99 {:?}; \
         after apply returned p50 {:?} p99 {:?}",
        latency.0[0], latency.0[1], latency.0[2], latency.0[3]
    );
    latency
}

/// The figures of one backend.
struct Figures {
    serial: f64,
    concurrent: f64,
    one_by_one: Duration,
    batched: Duration,
    latency: Latency,
}

async fn measure(name: &str, database: &OpenDatabase) -> Figures {
    println!("== {name}");
    let (env, listener) = seed(database).await;
    let figures = Figures {
        serial: throughput(&env, 1, 100).await,
        concurrent: throughput(&env, 8, 100).await,
        one_by_one: acquisition_pass(&env, 1000, Acquisition::OneByOne).await,
        batched: acquisition_pass(&env, 1000, Acquisition::Batched).await,
        latency: notification_latency(&env, 500).await,
    };
    if let Some(listener) = listener {
        listener.abort();
    }
    figures
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
        let postgres = OpenDatabase::Postgres(db.pool.clone());
        let pg = measure("PostgreSQL", &postgres).await;
        drop(postgres);
        db.drop_database().await.unwrap();

        let dir = std::env::temp_dir().join(format!("chatstore-bench-{}", Uuid::new_v4()));
        let url = DatabaseUrl::Sqlite(dir.join("chatd.db"));
        let sqlite = OpenDatabase::open(&url, &OpenOptions::default())
            .await
            .unwrap();
        let lite = measure("SQLite (embedded file)", &sqlite).await;
        sqlite.close().await;
        let _ = std::fs::remove_dir_all(&dir);

        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
        println!();
        println!("| figure | PostgreSQL | SQLite |");
        println!("|---|---|---|");
        println!(
            "| transitions/s, concurrency 1 | {:.0} | {:.0} |",
            pg.serial, lite.serial
        );
        println!(
            "| transitions/s, concurrency 8 | {:.0} | {:.0} |",
            pg.concurrent, lite.concurrent
        );
        println!(
            "| acquisition pass, 1,000 chats, one by one | {:.3} s | {:.3} s |",
            pg.one_by_one.as_secs_f64(),
            lite.one_by_one.as_secs_f64()
        );
        println!(
            "| acquisition pass, 1,000 chats, in batches | {:.3} s | {:.3} s |",
            pg.batched.as_secs_f64(),
            lite.batched.as_secs_f64()
        );
        let rows = [
            "notification from transition start, p50",
            "notification from transition start, p99",
            "notification after apply returned, p50",
            "notification after apply returned, p99",
        ];
        for (i, row) in rows.iter().enumerate() {
            println!(
                "| {row} | {} | {} |",
                ms(pg.latency.0[i]),
                ms(lite.latency.0[i])
            );
        }
    });
}
