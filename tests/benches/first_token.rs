//! What a client sees, end to end, printed, never asserted: N clients each create a chat through
//! the gRPC API of a real `chatd serve` process and stream it, while the provider emulator (in a
//! process of its own) streams every reply as `PARTS` marked text deltas `PACING` apart. The same
//! N requests sent straight to the emulator give the baseline.
//!
//! For N = 1, 50, 200 and 1,000 concurrent chats it prints one table row: time to first token
//! through chatd and straight from the emulator, and chatd's excess over it (p50 / p99);
//! creation → provider request; provider delta → client delta; CPU seconds per 1,000 deltas of
//! chatd and of the database server; chatd's peak RSS; failed chats.
//!
//! Three processes share the two cores: the emulator, chatd, and this one (the clients). The
//! clients are spread over users, 20 chats each (the per-user limit of running chats).
//!
//! Run: `cargo bench -p chatd-e2e --bench first_token` (PostgreSQL, like the tests), or with
//! `CHATD_TEST_BACKEND=sqlite` on an embedded database file. `CHATD_BENCH_CHATS=1,50` picks the
//! levels; `CHATD_BENCH_LOG=<filter>` (e.g. `info`) sets chatd's log filter and prints its log
//! after each round, to see where the time goes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a bench prints and panics

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chatd_e2e::Daemon;
use chatd_e2e::test_db::{TestBackend, TestDb};
use chatproto::chatd::v1 as pb;
use nix::sys::signal::Signal;
use pb::chat_service_client::ChatServiceClient;
use support::{
    Clock, EmulatorProcess, EmulatorReport, Replies, authorized, cpu_seconds, cpu_seconds_of,
    create_request, markers, member_tokens, percentile_ms, status_kib,
};
use tokio::sync::Barrier;
use tonic::transport::Channel;

const PARTS: usize = 200;
const PACING: Duration = Duration::from_millis(10);
/// The most chats one user may have running (the API refuses more).
const CHATS_PER_USER: usize = 20;
/// Streams per client connection, under the server's per-connection limit.
const STREAMS_PER_CONNECTION: usize = 200;
/// Chats run through a fresh daemon before the measured ones, so the figures are a running
/// service's: every pooled database connection has prepared its statements, the provider
/// client and its connections exist.
const WARM_UP: usize = 20;
/// How long one client waits for its whole reply before it counts as failed.
const CLIENT_PATIENCE: Duration = Duration::from_secs(120);

/// What one client saw, in nanoseconds since the epoch.
#[derive(Debug, Default)]
struct Seen {
    /// Its chat's number (the text it sent).
    k: usize,
    /// Its chat's id (through chatd).
    chat_id: String,
    /// When it sent the request that starts the reply.
    sent: u128,
    /// When the first delta arrived.
    first: Option<u128>,
    /// Each delta's marker and arrival.
    deltas: Vec<(String, u128)>,
    /// Why it failed, if it did.
    failed: Option<String>,
}

impl Seen {
    fn ttft(&self) -> Option<Duration> {
        Some(nanos(self.first?.checked_sub(self.sent)?))
    }

    fn arrived(&mut self, text: &str, at: u128) {
        for token in markers(text) {
            self.first.get_or_insert(at);
            self.deltas.push((token.to_owned(), at));
        }
    }
}

fn nanos(ns: u128) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

fn replies(chats: usize) -> Replies {
    Replies {
        replies: chats,
        parts: PARTS,
        pacing: PACING,
    }
}

/// Sends `chats` streaming requests straight to an emulator at once.
async fn direct(chats: usize) -> Vec<Seen> {
    let emulator = EmulatorProcess::start(replies(chats));
    let url = format!("{}/v1/messages", emulator.base_url());
    let http = reqwest::Client::new();
    let clock = Clock::new();
    let start = Arc::new(Barrier::new(chats));
    let clients: Vec<_> = (0..chats)
        .map(|k| {
            let (http, url, start) = (http.clone(), url.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let mut seen = Seen {
                    k,
                    sent: clock.now_ns(),
                    ..Seen::default()
                };
                let body = serde_json::json!({
                    "model": "bench",
                    "max_tokens": 1024,
                    "stream": true,
                    "messages": [{"role": "user", "content": format!("c{k}")}],
                });
                let result = async {
                    let mut response = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await?;
                    while let Some(chunk) = response.chunk().await? {
                        seen.arrived(&String::from_utf8_lossy(&chunk), clock.now_ns());
                    }
                    Ok::<_, reqwest::Error>(())
                };
                if let Err(err) = tokio::time::timeout(CLIENT_PATIENCE, result)
                    .await
                    .unwrap_or_else(|_| Ok(()))
                {
                    seen.failed = Some(err.to_string());
                }
                seen
            })
        })
        .collect();
    let mut seen = Vec::with_capacity(chats);
    for client in clients {
        seen.push(client.await.unwrap());
    }
    emulator.finish();
    seen
}

/// One client: creates chat `k` as the user whose token it holds and streams it to the end of
/// the reply.
async fn client(
    mut chats: ChatServiceClient<Channel>,
    token: String,
    k: usize,
    clock: Clock,
    start: Arc<Barrier>,
) -> Seen {
    start.wait().await;
    let mut seen = Seen {
        k,
        sent: clock.now_ns(),
        ..Seen::default()
    };
    let run = async {
        let chat = chats
            .create_chat(authorized(create_request(format!("c{k}")), &token))
            .await?
            .into_inner();
        seen.chat_id.clone_from(&chat.id);
        let mut stream = chats
            .stream_chat(authorized(
                pb::StreamChatRequest {
                    chat_id: chat.id,
                    after_id: None,
                },
                &token,
            ))
            .await?
            .into_inner();
        while let Some(response) = stream.message().await? {
            let at = clock.now_ns();
            for event in response.events {
                let kind = event.r#type();
                let status = event.status();
                if let Some(part) = event.message_part.and_then(|p| p.part?.part)
                    && let pb::chat_message_part::Part::Text(text) = part
                {
                    seen.arrived(&text.text, at);
                }
                if event
                    .message
                    .is_some_and(|m| m.role() == pb::ChatMessageRole::Assistant)
                {
                    return Ok(());
                }
                if kind == pb::ChatStreamEventType::Status && status == pb::ChatStatus::Error {
                    return Err(tonic::Status::aborted("the chat ended in error"));
                }
            }
        }
        Err(tonic::Status::aborted("the stream ended before the reply"))
    };
    match tokio::time::timeout(CLIENT_PATIENCE, run).await {
        Ok(Ok(())) => {}
        Ok(Err(status)) => seen.failed = Some(status.message().to_owned()),
        Err(_) => seen.failed = Some("no whole reply in time".into()),
    }
    seen
}

/// chatd's side of a round.
struct Through {
    seen: Vec<Seen>,
    report: EmulatorReport,
    chatd_cpu: f64,
    database_cpu: Option<f64>,
    peak_rss_kib: u64,
    /// chatd's log, when `CHATD_BENCH_LOG` asked for it.
    log: Option<String>,
}

async fn through_chatd(chats: usize) -> Through {
    let mut h = TestDb::create().await;
    let emulator = EmulatorProcess::start(replies(WARM_UP + chats));
    emulator.default_model(&h).await;
    let tokens = member_tokens(&h, chats.div_ceil(CHATS_PER_USER) + 1).await;
    let log_filter = std::env::var("CHATD_BENCH_LOG").ok();
    let args = h.serve_args("127.0.0.1:0").await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(
        &args,
        // Warnings, and the line with the address: the figures are chatd's work, not its log's.
        &[(
            "CHATD_LOG",
            log_filter.as_deref().unwrap_or("warn,chatd::serve=info"),
        )],
    )
    .await
    .unwrap();
    let mut connections = Vec::new();
    for _ in 0..chats.div_ceil(STREAMS_PER_CONNECTION) {
        connections.push(ChatServiceClient::new(
            Channel::from_shared(daemon.url())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        ));
    }
    let postgres = h.backend() == TestBackend::Postgres;
    let clock = Clock::new();
    // The warm-up chats, as the last user (their numbers follow the measured ones').
    let start = Arc::new(Barrier::new(WARM_UP));
    let warm_up: Vec<_> = (chats..chats + WARM_UP)
        .map(|k| {
            tokio::spawn(client(
                connections[0].clone(),
                tokens[tokens.len() - 1].clone(),
                k,
                clock,
                start.clone(),
            ))
        })
        .collect();
    for client in warm_up {
        let seen = client.await.unwrap();
        assert!(seen.failed.is_none(), "a warm-up chat failed: {seen:?}");
    }
    let start = Arc::new(Barrier::new(chats));
    let chatd_before = cpu_seconds(daemon.pid());
    let database_before = cpu_seconds_of("postgres");
    let clients: Vec<_> = (0..chats)
        .map(|k| {
            tokio::spawn(client(
                connections[k / STREAMS_PER_CONNECTION].clone(),
                tokens[k / CHATS_PER_USER].clone(),
                k,
                clock,
                start.clone(),
            ))
        })
        .collect();
    let mut seen = Vec::with_capacity(chats);
    for client in clients {
        seen.push(client.await.unwrap());
    }
    let chatd_cpu = cpu_seconds(daemon.pid()) - chatd_before;
    let database_cpu = postgres.then(|| cpu_seconds_of("postgres") - database_before);
    let peak_rss_kib = status_kib(daemon.pid(), "VmHWM");
    drop(connections);
    let log = log_filter.is_some().then(|| daemon.log());
    daemon
        .stop(Signal::SIGTERM, Duration::from_secs(30))
        .await
        .unwrap();
    let report = emulator.finish();
    h.finish().await;
    Through {
        seen,
        report,
        chatd_cpu,
        database_cpu,
        peak_rss_kib,
        log,
    }
}

/// From chatd's log (at `info`): when each chat was created and acquired, by chat id, in ns
/// since the epoch.
fn logged_times(log: &str, what: &str) -> HashMap<String, u128> {
    log.lines()
        .filter_map(|line| {
            let (at, rest) = line.split_once(' ')?;
            let id = rest.split_once(what)?.1.split_once("chat_id=")?.1;
            let id = id.split_whitespace().next()?.to_owned();
            let at = chrono::DateTime::parse_from_rfc3339(at).ok()?;
            Some((id, u128::try_from(at.timestamp_nanos_opt()?).ok()?))
        })
        .collect()
}

/// Where creation → provider request went, per stage (p50 / p99), from chatd's log.
fn print_stages(through: &Through, requested: &HashMap<String, u128>) {
    let Some(log) = &through.log else {
        return;
    };
    let created = logged_times(log, "chat created");
    let acquired = logged_times(log, "acquired chat");
    let (mut to_created, mut to_acquired, mut to_request) = (Vec::new(), Vec::new(), Vec::new());
    for s in &through.seen {
        let (Some(&c), Some(&a), Some(&r)) = (
            created.get(&s.chat_id),
            acquired.get(&s.chat_id),
            requested.get(&format!("c{}", s.k)),
        ) else {
            continue;
        };
        to_created.push(nanos(c.saturating_sub(s.sent)));
        to_acquired.push(nanos(a.saturating_sub(c)));
        to_request.push(nanos(r.saturating_sub(a)));
    }
    println!(
        "  stages, p50 / p99 ms: sent -> created {} | created -> acquired {} | acquired -> provider request {}",
        p50_p99(&mut to_created),
        p50_p99(&mut to_acquired),
        p50_p99(&mut to_request)
    );
}

fn ttfts(seen: &[Seen]) -> Vec<Duration> {
    seen.iter().filter_map(Seen::ttft).collect()
}

/// `p50 / p99` in milliseconds.
fn p50_p99(samples: &mut [Duration]) -> String {
    format!(
        "{:.1} / {:.1}",
        percentile_ms(samples, 50.0),
        percentile_ms(samples, 99.0)
    )
}

async fn round(chats: usize) {
    let baseline = direct(chats).await;
    let through = through_chatd(chats).await;

    // Creation → provider request: the request carries the text `c<k>` the client sent.
    let sent: HashMap<String, u128> = through
        .seen
        .iter()
        .map(|s| (format!("c{}", s.k), s.sent))
        .collect();
    let mut to_request: Vec<Duration> = through
        .report
        .requests
        .iter()
        .filter_map(|(at, text)| Some(nanos(at.checked_sub(*sent.get(text)?)?)))
        .collect();
    // Provider delta → client delta, matched by marker.
    let written: HashMap<&str, u128> = through
        .report
        .marks
        .iter()
        .map(|(at, token)| (token.as_str(), *at))
        .collect();
    let mut relay: Vec<Duration> = through
        .seen
        .iter()
        .flat_map(|s| &s.deltas)
        .filter_map(|(token, at)| Some(nanos(at.checked_sub(*written.get(token.as_str())?)?)))
        .collect();
    let deltas = relay.len();
    let mut direct_ttft = ttfts(&baseline);
    let mut chatd_ttft = ttfts(&through.seen);
    let excess = |p: f64, direct: &mut [Duration], chatd: &mut [Duration]| {
        percentile_ms(chatd, p) - percentile_ms(direct, p)
    };
    let per_kilo = |seconds: f64| seconds / (deltas.max(1) as f64 / 1000.0);
    let failed = through.seen.iter().filter(|s| s.failed.is_some()).count()
        + baseline.iter().filter(|s| s.failed.is_some()).count();
    println!(
        "| {chats:>5} | {} | {} | {:.1} / {:.1} | {} | {} | {:.3} | {} | {:.0} | {failed} |",
        p50_p99(&mut chatd_ttft),
        p50_p99(&mut direct_ttft),
        excess(50.0, &mut direct_ttft, &mut chatd_ttft),
        excess(99.0, &mut direct_ttft, &mut chatd_ttft),
        p50_p99(&mut to_request),
        p50_p99(&mut relay),
        per_kilo(through.chatd_cpu),
        through
            .database_cpu
            .map_or("in chatd".to_owned(), |cpu| format!("{:.3}", per_kilo(cpu))),
        through.peak_rss_kib as f64 / 1024.0,
    );
    let requested: HashMap<String, u128> = through
        .report
        .requests
        .iter()
        .map(|(at, text)| (text.clone(), *at))
        .collect();
    print_stages(&through, &requested);
    for s in through
        .seen
        .iter()
        .chain(&baseline)
        .filter_map(|s| s.failed.as_ref())
        .take(3)
    {
        println!("  a failed client: {s}");
    }
}

fn main() {
    if support::run_emulator_if_child() {
        return;
    }
    let levels: Vec<usize> = std::env::var("CHATD_BENCH_CHATS")
        .unwrap_or_else(|_| "1,50,200,1000".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("CHATD_BENCH_CHATS: numbers, comma-separated")
        })
        .collect();
    support::block_on(async {
        println!(
            "first token through chatd on {}: {PARTS} text deltas per reply, {} ms apart; times in ms",
            support::backend_name(),
            PACING.as_millis()
        );
        println!(
            "| chats | TTFT chatd p50 / p99 | TTFT direct p50 / p99 | added p50 / p99 | creation → provider request p50 / p99 | provider delta → client p50 / p99 | chatd CPU s / 1k deltas | database CPU s / 1k deltas | chatd peak RSS MiB | failed |"
        );
        println!("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for chats in levels {
            round(chats).await;
        }
    });
}
