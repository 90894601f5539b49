//! The engine under load, printed, never asserted: with the provider emulator
//! streaming, how many concurrent streaming chats one process sustains (100, then 1,000), the
//! part throughput, the latency from a part leaving the emulator to it being in the part buffer
//! (p50 / p99), and the memory per active chat (RSS growth at peak / chats). The emulator runs in
//! a child process (this binary, started again with `CHATD_BENCH_EMULATOR` set), so the RSS figure
//! is the engine's own; both processes share the two cores. Targets: 1,000 chats on 2 cores, p99
//! under 5 ms, under 100 KiB per active chat.
//!
//! Each chat's reply is `PARTS` text deltas `PACING` apart, so all chats stream at once; every
//! delta carries a marker the emulator logs with its write time.
//!
//! Run: `cargo bench -p chatd-e2e --bench engine` (needs PostgreSQL, like the tests), or with
//! `CHATD_TEST_BACKEND=sqlite` on an embedded database file (the daemon's default).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a bench prints and panics

use std::collections::HashMap;
use std::time::{Duration, Instant};

mod support;

use chatd_e2e::on_pool;
use chatd_e2e::test_db::TestDb;
use chatd_e2e::workspaces::percentile;
use chatengine::parts::EpisodeKey;
use chatengine::step::BufferedPart;
use chatengine::{Engine, EngineConfig, EngineDeps};
use chatstore::types::{MessagePart, NewChat};
use chattest::emulator::{MARK_CLOSE, MARK_OPEN};
use support::{Clock, EmulatorProcess, Replies, parse_token, status_kib};

const PARTS: usize = 500;
const PACING: Duration = Duration::from_millis(20);

/// The most spans `[start, end]` that overlap at one instant.
fn max_overlap(spans: impl Iterator<Item = (u128, u128)>) -> usize {
    let mut edges: Vec<(u128, i32)> = spans.flat_map(|(a, b)| [(a, 1), (b, -1)]).collect();
    // Starts before ends at the same instant.
    edges.sort_by_key(|&(at, delta)| (at, -delta));
    let mut open = 0i32;
    let mut most = 0i32;
    for (_, delta) in edges {
        open += delta;
        most = most.max(open);
    }
    usize::try_from(most).unwrap_or(0)
}

/// Chats in this status (the same statement on both backends).
async fn count(db: &TestDb, status: &str) -> usize {
    let count: i64 = on_pool!(db.pool(), |pool| sqlx::query_scalar(
        "SELECT count(*) FROM chats WHERE CAST(status AS TEXT) = $1"
    )
    .bind(status)
    .fetch_one(pool)
    .await
    .unwrap());
    usize::try_from(count).unwrap_or(0)
}

async fn round(chats: usize) {
    let h = TestDb::create().await;
    let (pubsub, listener) = h.pubsub().await;
    let emulator = EmulatorProcess::start(Replies {
        replies: chats,
        parts: PARTS,
        pacing: PACING,
    });
    let clock = Clock::new();
    let model = emulator.default_model(&h).await;
    let mut ids = Vec::with_capacity(chats);
    for i in 0..chats {
        let chat = h
            .store
            .create_chat(NewChat::new(
                h.organization,
                h.user,
                model,
                vec![MessagePart::text(format!("chat {i}"))],
            ))
            .await
            .unwrap()
            .chat;
        ids.push(chat);
    }
    let engine = Engine::start(
        EngineDeps {
            store: h.store.clone(),
            pubsub,
            builds: None,
            connector: None,
            dialer: None,
        },
        EngineConfig::default(),
    )
    .await;
    // One reader per chat, subscribed before its episode exists, logging arrival times.
    let mut readers = Vec::with_capacity(chats);
    for chat in &ids {
        let mut sub = engine.parts().subscribe(EpisodeKey {
            chat_id: chat.id,
            history_version: chat.history_version,
            generation_attempt: 1,
        });
        // Written before the baseline is read, so the readers' log is not counted as the
        // engine's memory.
        let mut seen: Vec<Option<Instant>> = vec![None; PARTS];
        readers.push(tokio::spawn(async move {
            let mut reply = None;
            while let Some((_, part)) = sub.next().await {
                let at = Instant::now();
                if let BufferedPart::Text(text) = &part
                    && let Some((k, i)) = text
                        .strip_prefix(MARK_OPEN)
                        .and_then(|t| t.strip_suffix(MARK_CLOSE))
                        .and_then(parse_token)
                    && let Some(slot) = seen.get_mut(i)
                {
                    *slot = Some(at);
                    reply = Some(k);
                }
            }
            (reply, seen)
        }));
    }
    let baseline = status_kib(std::process::id(), "VmRSS");
    let started = Instant::now();
    // Sample RSS and the number of chats streaming at once until every turn has ended.
    let mut peak_rss = baseline;
    loop {
        peak_rss = peak_rss.max(status_kib(std::process::id(), "VmRSS"));
        if count(&h, "waiting").await == chats {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let mut arrivals = HashMap::new();
    for reader in readers {
        let (Some(k), seen) = reader.await.unwrap() else {
            continue;
        };
        for (i, at) in seen.into_iter().enumerate() {
            if let Some(at) = at {
                arrivals.insert((k, i), clock.unix_ns(at));
            }
        }
    }
    engine.shutdown().await;
    let marks = emulator.finish().marks;
    let errors = count(&h, "error").await;

    // When each reply streamed (first to last marked frame), from the emulator's side.
    let marks: Vec<(u128, (usize, usize))> = marks
        .into_iter()
        .filter_map(|(sent, token)| Some((sent, parse_token(&token)?)))
        .collect();
    let mut spans: HashMap<usize, (u128, u128)> = HashMap::new();
    for (sent, (k, _)) in &marks {
        let span = spans.entry(*k).or_insert((*sent, *sent));
        span.0 = span.0.min(*sent);
        span.1 = span.1.max(*sent);
    }
    let most_concurrent = max_overlap(spans.values().copied());
    // The steady window: every reply has started and none has ended.
    let steady_from = spans.values().map(|s| s.0).max().unwrap_or(0);
    let steady_to = spans.values().map(|s| s.1).min().unwrap_or(0);

    let mut all = Vec::with_capacity(marks.len());
    let mut steady = Vec::new();
    for (sent, token) in &marks {
        let Some(got) = arrivals.get(token) else {
            continue;
        };
        let latency = Duration::from_nanos(got.saturating_sub(*sent) as u64);
        all.push(latency);
        if (steady_from..=steady_to).contains(sent) {
            steady.push(latency);
        }
    }
    all.sort();
    steady.sort();
    let ms = |samples: &[Duration], p: f64| {
        if samples.is_empty() {
            f64::NAN
        } else {
            percentile(samples, p).as_secs_f64() * 1e3
        }
    };
    let growth = peak_rss.saturating_sub(baseline);
    println!(
        "{chats:>5} chats: done in {:>6.2} s, at most {most_concurrent} streaming at once, {:>8.0} parts/s | \
         wire→buffer, all {} parts: p50 {:.3} ms, p99 {:.3} ms | while all {chats} stream ({:.1} s, {} parts): \
         p50 {:.3} ms, p99 {:.3} ms | RSS +{growth} KiB = {:.1} KiB/chat | errors {errors}",
        elapsed.as_secs_f64(),
        all.len() as f64 / elapsed.as_secs_f64(),
        all.len(),
        ms(&all, 50.0),
        ms(&all, 99.0),
        steady_to.saturating_sub(steady_from) as f64 / 1e9,
        steady.len(),
        ms(&steady, 50.0),
        ms(&steady, 99.0),
        growth as f64 / chats as f64,
    );
    if let Some(listener) = listener {
        listener.abort();
    }
    h.finish().await;
}

fn main() {
    if support::run_emulator_if_child() {
        return;
    }
    support::block_on(async {
        println!(
            "engine under load on {}: {PARTS} text deltas per reply, {} ms apart",
            support::backend_name(),
            PACING.as_millis()
        );
        for chats in [100, 1000] {
            round(chats).await;
        }
    });
}
