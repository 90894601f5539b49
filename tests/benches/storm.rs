//! A rate-limit storm, printed, never asserted: 200 chats start at once through the gRPC API of
//! real `chatd serve` replicas (two on PostgreSQL, one on an embedded SQLite file) while the
//! provider emulator answers every request with HTTP 429 and `retry-after: 2` for 10 s, then
//! answers normally. It runs twice: with the rate limits shared per credential (the default)
//! and with `--no-shared-rate-limits` (each chat retries on its own, as the reference does).
//!
//! For each it prints: provider requests during the storm and after it, how long after the
//! storm the last chat was answered (its last commit, on the database clock), and failed
//! chats.
//!
//! Run: `cargo bench -p chatd-e2e --bench storm` (PostgreSQL, like the tests), or with
//! `CHATD_TEST_BACKEND=sqlite`. `CHATD_BENCH_STORM_CHATS` (200) and `CHATD_BENCH_STORM_SECS`
//! (10) change the size.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a bench prints and panics

mod support;

use std::time::{Duration, Instant, SystemTime};

use chatd_e2e::Daemon;
use chatd_e2e::test_db::{TestBackend, TestDb};
use chatproto::chatd::v1 as pb;
use chatstore::testing::ModelFixtures as _;
use chattest::emulator::{Emulator, ScriptPart, Turn};
use nix::sys::signal::Signal;
use pb::chat_service_client::ChatServiceClient;
use support::{authorized, create_request, member_tokens};

/// The hint every refused request carries.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// The most chats one user may have running (the API refuses more).
const CHATS_PER_USER: usize = 20;
/// How long a round may take before the chats still running count as failed.
const PATIENCE: Duration = Duration::from_secs(180);

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}: a number"))
    })
}

struct Row {
    replicas: usize,
    during: usize,
    after: usize,
    drain: Option<Duration>,
    failed: usize,
}

async fn round(shared: bool, chats: usize, storm: Duration) -> Row {
    let mut h = TestDb::create().await;
    let replies = (0..chats)
        .map(|_| Turn::with(vec![ScriptPart::text("answered")]))
        .collect();
    let emulator = Emulator::start(replies).await.unwrap();
    h.store
        .fixture_model(
            h.organization,
            "anthropic",
            &emulator.base_url(),
            "bench",
            200_000,
            true,
        )
        .await
        .unwrap();
    let tokens = member_tokens(&h, chats.div_ceil(CHATS_PER_USER)).await;

    let replicas = match h.backend() {
        TestBackend::Postgres => 2,
        TestBackend::Sqlite => 1,
    };
    let mut args = h.serve_args("127.0.0.1:0").await;
    if shared {
        // A hold heard on one replica reaches the other within this.
        args.extend(["--shared-rate-limit-poll".into(), "1s".into()]);
    } else {
        args.push("--no-shared-rate-limits".into());
    }
    let mut daemons = Vec::new();
    for replica in 0..replicas {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        if replica > 0 {
            // Other replicas get a data dir of their own (the daemon's default here).
            let at = args.iter().position(|a| *a == "--data-dir").unwrap();
            args.drain(at..at + 2);
        }
        // Warnings, and the line with the address.
        daemons.push(
            Daemon::start(&args, &[("CHATD_LOG", "warn,chatd::serve=info")])
                .await
                .unwrap(),
        );
    }
    let mut clients = Vec::new();
    for daemon in &daemons {
        clients.push(ChatServiceClient::new(
            chatd_e2e::connect(&daemon.url(), None).await.unwrap(),
        ));
    }

    emulator.rate_limit_for(storm, RETRY_AFTER);
    let storm_ends = Instant::now() + storm;
    let storm_ends_wall = SystemTime::now() + storm;
    let created: Vec<_> = (0..chats)
        .map(|k| {
            let mut client = clients[k % replicas].clone();
            let token = tokens[k / CHATS_PER_USER].clone();
            tokio::spawn(async move {
                let chat = client
                    .create_chat(authorized(create_request(format!("chat {k}")), &token))
                    .await
                    .unwrap()
                    .into_inner();
                (chat.id, token)
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(chats);
    for chat in created {
        ids.push(chat.await.unwrap());
    }

    // Wait until every chat is answered (or ended in error), reading each through the API
    // until it is.
    let deadline = Instant::now() + PATIENCE;
    let mut pending = ids;
    let mut last_commit = None;
    let mut failed = 0;
    let mut reader = clients[0].clone();
    while !pending.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut still = Vec::new();
        for (id, token) in pending {
            let request = pb::GetChatRequest {
                chat_id: id.clone(),
            };
            let chat = reader
                .get_chat(authorized(request, &token))
                .await
                .unwrap()
                .into_inner();
            match chat.status() {
                pb::ChatStatus::Waiting => {
                    let at = chat.updated_at.map(|t| SystemTime::try_from(t).unwrap());
                    last_commit = last_commit.max(at);
                }
                pb::ChatStatus::Error => failed += 1,
                _ => still.push((id, token)),
            }
        }
        pending = still;
    }
    failed += pending.len();
    let requests = emulator.requests();
    let during = requests
        .iter()
        .filter(|r| r.received_at < storm_ends)
        .count();
    for daemon in daemons {
        daemon
            .stop(Signal::SIGTERM, Duration::from_secs(30))
            .await
            .unwrap();
    }
    h.finish().await;
    Row {
        replicas,
        during,
        after: requests.len() - during,
        drain: last_commit.map(|at| at.duration_since(storm_ends_wall).unwrap_or_default()),
        failed,
    }
}

fn main() {
    if support::run_emulator_if_child() {
        return;
    }
    let chats = usize::try_from(setting("CHATD_BENCH_STORM_CHATS", 200)).unwrap();
    let storm = Duration::from_secs(setting("CHATD_BENCH_STORM_SECS", 10));
    support::block_on(async {
        println!(
            "rate-limit storm on {}: {chats} chats start at once; every provider request is refused (429, retry-after {} s) for {} s",
            support::backend_name(),
            RETRY_AFTER.as_secs(),
            storm.as_secs()
        );
        println!(
            "| rate limits | replicas | provider requests during the storm | after it | last chat answered after the storm (s) | failed chats |"
        );
        println!("|---|--:|--:|--:|--:|--:|");
        for shared in [true, false] {
            let row = round(shared, chats, storm).await;
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                if shared {
                    "shared (default)"
                } else {
                    "per chat (`--no-shared-rate-limits`)"
                },
                row.replicas,
                row.during,
                row.after,
                row.drain
                    .map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64())),
                row.failed
            );
        }
    });
}
