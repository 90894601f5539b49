//! The engine under load (issue 8), printed, never asserted: with the provider emulator
//! streaming, how many concurrent streaming chats one process sustains (100, then 1,000), the
//! part throughput, the latency from a part leaving the emulator to it being in the part buffer
//! (p50 / p99), and the memory per active chat (RSS growth at peak / chats; the emulator runs in
//! the same process, so this is an upper bound). Targets: 1,000 chats on 2 cores, p99 under
//! 5 ms, under 100 KiB per active chat.
//!
//! Each chat's reply is `PARTS` text deltas `PACING` apart, so all chats stream at once; every
//! delta carries a marker the emulator logs with its write time.
//!
//! Run: `cargo bench -p chatd-e2e --bench engine` (needs PostgreSQL, like the tests).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a bench prints and panics

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatd::engine::{Engine, EngineConfig, EngineDeps};
use chatd::parts::EpisodeKey;
use chatd_e2e::workspaces::{Harness, percentile};
use chatstore::Store as _;
use chatstore::types::{MessagePart, NewChat};
use chatstore::workspace::WorkspaceStore as _;
use chattest::emulator::{Emulator, MARK_CLOSE, MARK_OPEN, ScriptPart, Turn};

const PARTS: usize = 100;
const PACING: Duration = Duration::from_millis(20);

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn turn(k: usize) -> Turn {
    let marker_len = format!("{MARK_OPEN}c{k:05}p{:03}{MARK_CLOSE}", 0)
        .chars()
        .count();
    let text: String = (0..PARTS)
        .map(|i| format!("{MARK_OPEN}c{k:05}p{i:03}{MARK_CLOSE}"))
        .collect();
    let mut turn = Turn::with(vec![ScriptPart::Text {
        text,
        chunk: marker_len,
    }]);
    turn.pacing = PACING;
    turn
}

async fn round(chats: usize) {
    let h = Harness::bare().await;
    let emulator = Emulator::start((0..chats).map(turn).collect())
        .await
        .unwrap();
    let provider = h
        .store
        .create_provider("anthropic", "", &emulator.base_url())
        .await
        .unwrap();
    let model = h
        .store
        .create_model_config(h.organization, provider, "bench", 200_000, true)
        .await
        .unwrap();
    let mut ids = Vec::with_capacity(chats);
    for i in 0..chats {
        let chat = h
            .store
            .create_chat(NewChat {
                organization_id: h.organization,
                owner_id: h.user,
                model_config_id: model,
                content: vec![MessagePart::text(format!("chat {i}"))],
                title: None,
                system_prompt: None,
                workspace_id: None,
                reasoning_effort: None,
                labels: Default::default(),
                dynamic_tools: None,
            })
            .await
            .unwrap()
            .chat;
        ids.push(chat);
    }
    let engine = Engine::start(
        EngineDeps {
            store: h.store.clone(),
            pubsub: Arc::new(h.pubsub.clone()),
            provisioner: None,
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
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(PARTS);
            while let Some((_, part)) = sub.next().await {
                let at = Instant::now();
                if let MessagePart::Text { text } = &part.part
                    && let Some(token) = text
                        .strip_prefix(MARK_OPEN)
                        .and_then(|t| t.strip_suffix(MARK_CLOSE))
                {
                    seen.push((at, token.to_owned()));
                }
            }
            seen
        }));
    }
    let baseline = rss_kib();
    let started = Instant::now();
    // Sample RSS and the number of chats streaming at once until every turn has ended.
    let mut peak_rss = baseline;
    let mut peak_streaming = 0usize;
    loop {
        peak_rss = peak_rss.max(rss_kib());
        let streaming = engine.parts().len();
        peak_streaming = peak_streaming.max(streaming);
        let waiting: i64 =
            sqlx::query_scalar("SELECT count(*) FROM chats WHERE status = 'waiting'")
                .fetch_one(&h.db.pool)
                .await
                .unwrap();
        if waiting as usize == chats {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let mut arrivals = HashMap::new();
    for reader in readers {
        for (at, token) in reader.await.unwrap() {
            arrivals.insert(token, at);
        }
    }
    let mut latencies: Vec<Duration> = emulator
        .marks()
        .into_iter()
        .filter_map(|(sent, token)| {
            arrivals
                .get(&token)
                .map(|got| got.saturating_duration_since(sent))
        })
        .collect();
    latencies.sort();
    let errors: i64 = sqlx::query_scalar("SELECT count(*) FROM chats WHERE status = 'error'")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    let parts = latencies.len();
    println!(
        "{chats:>5} chats: all turns done in {:>6.2} s | peak episodes {peak_streaming:>5} | {parts:>6} parts, {:>8.0} parts/s | wire→buffer p50 {:>7.3} ms, p99 {:>7.3} ms | RSS +{:>6} KiB = {:>5.1} KiB/chat | errors {errors}",
        elapsed.as_secs_f64(),
        parts as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&latencies, 99.0).as_secs_f64() * 1e3,
        peak_rss.saturating_sub(baseline),
        peak_rss.saturating_sub(baseline) as f64 / chats as f64,
    );
    engine.shutdown().await;
    drop(emulator);
    h.finish().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "engine under load: {PARTS} text deltas per reply, {} ms apart",
            PACING.as_millis()
        );
        for chats in [100, 1000] {
            round(chats).await;
        }
    });
}
