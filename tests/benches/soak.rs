//! The soak: three `chatd serve` replicas on a PostgreSQL server of their own run 200 chats for
//! a fixed time while everything around them fails. Every turn is multi-step (two tool calls,
//! then the answer); the provider emulator injects a random fault into one model call in ten
//! (429 with a Retry-After, 529, a reset mid-stream, a stall longer than the silence timeout, an
//! in-stream `overloaded_error`); a random replica is SIGKILLed and started again every 30 s;
//! the database crashes and restarts once. A chat whose turn ended gets its next message at once.
//!
//! Then it checks, and counts as violations: a user message not answered exactly once (or
//! ended in a classified error), a tool call without exactly one result, a runnable chat without
//! a live owner for longer than the takeover bound, a message seen during the run and missing at
//! the end, a chat still running after the drain. It prints a table and exits non-zero when any
//! violation was found.
//!
//! Most chats' tool steps are `list_templates` (no workspace: 200 workspaces do not fit on two
//! cores). The first 20 chats each have a workspace of their own, built by a provisioner in this
//! process whose agents report to an agent API in this process too (an address no replica kill
//! takes away); their tool steps are `execute`, each appending a line naming its turn and step to
//! a ledger file in the workspace. A committed call whose line is written twice, or missing
//! although its result says the command ran, or a line no committed call asked for, is a
//! violation: a tool side effect repeated or lost. (A call may fail before its command starts,
//! e.g. while the database restarts: its result says so and it has no line.)
//!
//! Run: `cargo bench -p chatd-e2e --bench soak` (5 minutes). `CHATD_SOAK_SECS` sets the time
//! (CI runs 60 s, `--profile dev`), `CHATD_SOAK_CHATS` the chats (200), `CHATD_SOAK_WORKSPACES`
//! how many of them have a workspace (20).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a bench prints and panics

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatd_e2e::Daemon;
use chatd_e2e::private_pg::PrivatePostgres;
use chatd_e2e::test_db::{TestDb, TestPool};
use chatd_e2e::workspaces::Harness;
use chatstate::{BusyBehavior, ChatStatus};
use chatstore::Change;
use chatstore::agents::AgentLifecycle;
use chatstore::testing::Fixtures as _;
use chatstore::types::{MessagePart, NewChat, NewMessage, Role};
use chattest::emulator::{Emulator, FaultKind, FaultPoint, ScriptPart, Turn};
use nix::sys::signal::Signal;
use serde_json::Value;
use uuid::Uuid;

const REPLICAS: usize = 3;
/// Tool calls per turn before the answer.
const STEPS: usize = 2;
/// One model call in this many gets a fault.
const FAULT_ONE_IN: u64 = 10;
const KILL_EVERY: Duration = Duration::from_secs(30);
/// The replicas' lease (`--lease-stale-after`).
const LEASE: Duration = Duration::from_secs(5);
/// The lease, the acquisition interval (2 s) and a margin of 5 s.
const TAKEOVER_BOUND: Duration = Duration::from_secs(12);
/// How long chats may take to finish after the run before the rest count as violations.
const DRAIN: Duration = Duration::from_secs(90);
/// The most chats one user may have running.
const CHATS_PER_USER: usize = 20;
/// How the user messages of a chat with a workspace begin.
const IN_WORKSPACE: &str = "soak ws ";
/// The file in a workspace's home each `execute` step appends its line to.
const LEDGER: &str = "ledger";

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}: a number"))
    })
}

/// The faults the emulator injected, by kind.
type FaultCounts = Arc<Mutex<BTreeMap<&'static str, usize>>>;

/// The user text of the turn a request continues, and how many tool rounds it already had.
fn turn_of(body: &Value) -> (String, usize) {
    let mut rounds = 0;
    for message in body["messages"].as_array().into_iter().flatten().rev() {
        let parts = message["content"].as_array();
        let results = parts
            .into_iter()
            .flatten()
            .any(|p| p["type"] == "tool_result");
        if message["role"] == "user" && !results {
            let text = match &message["content"] {
                Value::String(text) => text.clone(),
                content => content
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["text"].as_str())
                    .collect(),
            };
            return (text, rounds);
        }
        if results {
            rounds += 1;
        }
    }
    (String::new(), rounds)
}

/// The user message of `turn` in the chat called `name`; chats with a workspace get
/// [`IN_WORKSPACE`] messages.
fn user_text(in_workspace: bool, name: impl std::fmt::Display, turn: usize) -> String {
    let prefix = if in_workspace { IN_WORKSPACE } else { "soak " };
    format!("{prefix}{name} turn {turn}")
}

/// The ledger line of step `round` of the turn asked by `text`.
fn ledger_line(text: &str, round: usize) -> String {
    format!("{text} step {round}")
}

/// The ledger line an `execute` call's arguments append (the responder's command read back).
fn line_of_command(args: &str) -> String {
    let args: Value = serde_json::from_str(args).unwrap_or_default();
    let command = args["command"].as_str().unwrap_or_default();
    command
        .strip_prefix("echo '")
        .and_then(|rest| rest.strip_suffix(&format!("' >> {LEDGER}")))
        .unwrap_or(command)
        .to_owned()
}

/// Answers each request with the next step of its turn, one in [`FAULT_ONE_IN`] with a fault.
fn responder(faults: FaultCounts) -> chattest::emulator::Responder {
    let counter = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    Arc::new(move |body: &Value| {
        let (text, rounds) = turn_of(body);
        let mut turn = if rounds < STEPS && text.starts_with(IN_WORKSPACE) {
            let command = format!("echo '{}' >> {LEDGER}", ledger_line(&text, rounds));
            Turn::with(vec![ScriptPart::tool_call(
                format!("call_{rounds}"),
                "execute",
                serde_json::json!({ "command": command }).to_string(),
            )])
        } else if rounds < STEPS {
            Turn::with(vec![ScriptPart::tool_call(
                format!("call_{rounds}"),
                "list_templates",
                "{}",
            )])
        } else {
            Turn::with(vec![ScriptPart::Text {
                text: format!("answer to {text}"),
                chunk: 8,
            }])
        };
        // xorshift over a shared counter: cheap, and different for every request.
        let mut x = counter.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x.is_multiple_of(FAULT_ONE_IN) {
            let (kind, at, fault) = match (x / FAULT_ONE_IN) % 5 {
                0 => (
                    "429",
                    FaultPoint::BeforeHeaders,
                    FaultKind::Status {
                        status: 429,
                        headers: vec![("retry-after".into(), "1".into())],
                        body: r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#.into(),
                    },
                ),
                1 => (
                    "529",
                    FaultPoint::BeforeHeaders,
                    FaultKind::Status {
                        status: 529,
                        headers: Vec::new(),
                        body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#.into(),
                    },
                ),
                2 => ("reset", FaultPoint::AfterEvents(2), FaultKind::TcpReset),
                3 => (
                    "stall",
                    FaultPoint::AfterEvents(2),
                    FaultKind::Stall(Duration::from_secs(4)),
                ),
                _ => (
                    "in-stream error",
                    FaultPoint::AfterEvents(2),
                    FaultKind::StreamError {
                        code: "overloaded_error".into(),
                        message: "Overloaded".into(),
                    },
                ),
            };
            *faults.lock().unwrap().entry(kind).or_default() += 1;
            turn = turn.fault(at, fault);
        }
        turn
    })
}

/// A replica and its worker id (read from its log).
struct Replica {
    daemon: Daemon,
    worker: Uuid,
}

async fn start_replica(url: &str) -> Replica {
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        url,
        "--no-migrate",
        "--no-bootstrap-admin",
        "--acquire-interval",
        "2s",
        "--heartbeat-interval",
        "1s",
        "--lease-stale-after",
        "5s",
        "--heartbeat-cleanup-interval",
        "5s",
        "--stream-silence-timeout",
        "2s",
        "--retry-initial-delay",
        "500ms",
        "--retry-max-delay",
        "5s",
    ];
    let daemon = Daemon::start(
        &args,
        &[(
            "CHATD_LOG",
            "warn,chatd::serve=info,chatengine::worker=info",
        )],
    )
    .await
    .unwrap();
    let worker = daemon
        .log()
        .lines()
        .filter(|l| l.contains("chat worker started"))
        .find_map(|l| {
            let at = l.find("worker_id=")? + "worker_id=".len();
            Uuid::parse_str(l.get(at..at + 36)?).ok()
        })
        .expect("the replica logs its worker id");
    Replica { daemon, worker }
}

/// One look at every chat: status, owner, whether the owner's lease is live.
async fn look(pool: &sqlx::PgPool) -> Option<Vec<(Uuid, String, Option<Uuid>, bool)>> {
    sqlx::query_as(
        "SELECT c.id, c.status::text, c.worker_id, EXISTS (
                SELECT 1 FROM chat_heartbeats h
                 WHERE h.chat_id = c.id AND h.runner_id = c.runner_id
                   AND h.heartbeat_at > now() - make_interval(secs => $1))
           FROM chats c",
    )
    .bind(LEASE.as_secs_f64())
    .fetch_all(pool)
    .await
    .ok()
}

fn runnable(status: &str) -> bool {
    matches!(status, "running" | "interrupting" | "requires_action")
}

#[derive(Default)]
struct Tally {
    turns_sent: usize,
    takeovers: usize,
    takeover_times: Vec<Duration>,
    kills: usize,
    violations: Vec<String>,
}

fn main() {
    if support::run_emulator_if_child() {
        return;
    }
    let run_for = Duration::from_secs(setting("CHATD_SOAK_SECS", 300));
    let chats = usize::try_from(setting("CHATD_SOAK_CHATS", 200)).unwrap();
    let workspaces = usize::try_from(setting("CHATD_SOAK_WORKSPACES", 20)).unwrap();
    support::block_on(async move {
        let violations = soak(run_for, chats, workspaces.min(chats)).await;
        if violations > 0 {
            std::process::exit(1);
        }
    });
}

/// The template of the soak's workspaces: an agent and nothing else.
const TEMPLATE: &str = "name = \"soak\"\n[agent]\nstartup_script = \"true\"\n";

async fn soak(run_for: Duration, chat_count: usize, workspace_count: usize) -> usize {
    let pg = Arc::new(PrivatePostgres::start(None).expect("a private PostgreSQL server"));
    let mut db = TestDb::create_on(&pg.url("")).await;
    // This process makes one test database: the uids of its process block are all its own.
    db.workspace_users.count = db
        .workspace_users
        .count
        .max(u32::try_from(workspace_count).unwrap());
    let url = db.postgres().unwrap().url.clone();
    let TestPool::Postgres(pool) = db.pool() else {
        unreachable!("a database on a PostgreSQL server")
    };
    // The agent API and a provisioner, in this process: nothing the soak kills.
    let h = Harness::start_on(db).await;
    let store = h.store.clone();
    let faults = FaultCounts::default();
    let emulator = Emulator::start_with_responder(responder(faults.clone()))
        .await
        .unwrap();
    let org = h.organization;
    let model = h
        .model("anthropic", &emulator.base_url(), "claude-test")
        .await;
    let mut users = Vec::new();
    for u in 0..chat_count.div_ceil(CHATS_PER_USER) {
        users.push(
            store
                .fixture_user(&format!("soak{u}"), "member", org)
                .await
                .unwrap(),
        );
    }
    // The first chats' workspaces, built and ready before the run.
    let template = h.template(TEMPLATE, Vec::new()).await;
    let mut workspaces = Vec::new();
    for k in 0..workspace_count {
        let (workspace, _) = store
            .create_workspace(
                org,
                users[k / CHATS_PER_USER],
                template,
                &format!("soak-{k}"),
                serde_json::json!([]),
                None,
            )
            .await
            .unwrap();
        workspaces.push(workspace.id);
    }
    for workspace in &workspaces {
        h.lifecycle(*workspace, AgentLifecycle::Ready).await;
    }
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        replicas.push(Some(start_replica(&url).await));
    }
    // Replicas starting again after a kill, by slot (the run goes on meanwhile).
    let mut starting: Vec<(usize, tokio::task::JoinHandle<Replica>)> = Vec::new();

    let started = Instant::now();
    let mut owners: HashMap<Uuid, Uuid> = HashMap::new();
    let mut turn_of_chat: HashMap<Uuid, usize> = HashMap::new();
    // Chat → its workspace, for the chats that have one.
    let mut workspace_of: HashMap<Uuid, Uuid> = HashMap::new();
    for k in 0..chat_count {
        let owner = users[k / CHATS_PER_USER];
        let workspace = workspaces.get(k).copied();
        let mut new = NewChat::new(
            org,
            owner,
            model,
            vec![MessagePart::text(user_text(workspace.is_some(), k, 0))],
        );
        new.workspace_id = workspace;
        let chat = store.create_chat(new).await.unwrap().chat.id;
        owners.insert(chat, owner);
        turn_of_chat.insert(chat, 0);
        if let Some(workspace) = workspace {
            workspace_of.insert(chat, workspace);
        }
    }
    let mut tally = Tally {
        turns_sent: chat_count,
        ..Tally::default()
    };

    let mut next_kill = started + KILL_EVERY;
    let restart_at = started + run_for / 2 + Duration::from_secs(7);
    let mut restarted = None;
    let mut ownerless_since: HashMap<Uuid, Instant> = HashMap::new();
    let mut taking_over: HashMap<Uuid, (Uuid, Instant)> = HashMap::new();
    let mut seen_messages: HashSet<i64> = HashSet::new();
    // Turns that ended in a classified error (the chat was in `error` before its next message).
    let mut errored: HashSet<(Uuid, usize)> = HashSet::new();
    let mut last_message_look = Instant::now();
    let deadline = started + run_for;
    let drained_by = deadline + DRAIN;
    let mut seed = 0x2545_f491_4f6c_dd1du64;

    loop {
        let now = Instant::now();
        if now >= drained_by {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        // The database crashes once, mid-run, while the replicas work.
        if restarted.is_none() && now >= restart_at && now < deadline {
            let pg = pg.clone();
            restarted = Some(tokio::task::spawn_blocking(move || pg.crash_and_restart()));
        }
        for (slot, done) in std::mem::take(&mut starting) {
            if done.is_finished() {
                replicas[slot] = Some(done.await.unwrap());
            } else {
                starting.push((slot, done));
            }
        }
        // A random running replica is killed and started again.
        let up: Vec<usize> = (0..REPLICAS).filter(|i| replicas[*i].is_some()).collect();
        if now >= next_kill && now < deadline && !up.is_empty() {
            next_kill += KILL_EVERY;
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let victim = up[usize::try_from(seed % up.len() as u64).unwrap()];
            let replica = replicas[victim].take().unwrap();
            let killed = replica.worker;
            if let Some(chats) = look(&pool).await {
                for (chat, status, worker, _) in chats {
                    if worker == Some(killed) && runnable(&status) {
                        taking_over.insert(chat, (killed, Instant::now()));
                    }
                }
            }
            let pid = nix::unistd::Pid::from_raw(i32::try_from(replica.daemon.pid()).unwrap());
            nix::sys::signal::kill(pid, Signal::SIGKILL).unwrap();
            tally.kills += 1;
            drop(replica);
            let url = url.clone();
            starting.push((
                victim,
                tokio::spawn(async move { start_replica(&url).await }),
            ));
        }
        let Some(chats) = look(&pool).await else {
            continue; // the database is restarting
        };
        let mut settled = 0;
        for (chat, status, worker, live) in &chats {
            // Ownership: a runnable chat without a live owner, for how long.
            if runnable(status) && !(worker.is_some() && *live) {
                let since = *ownerless_since.entry(*chat).or_insert(now);
                if now - since > TAKEOVER_BOUND {
                    tally.violations.push(format!(
                        "chat {chat} was {status} without a live owner for over {TAKEOVER_BOUND:?}"
                    ));
                    ownerless_since.insert(*chat, now);
                }
            } else {
                ownerless_since.remove(chat);
            }
            if let Some((killed, at)) = taking_over.get(chat).copied()
                && (worker.is_some_and(|w| w != killed) || !runnable(status))
            {
                taking_over.remove(chat);
                tally.takeovers += 1;
                tally.takeover_times.push(now - at);
            }
            // A finished turn gets the next message while the run lasts.
            if status == "waiting" || status == "error" {
                settled += 1;
                if now < deadline {
                    let turn = turn_of_chat.get_mut(chat).unwrap();
                    *turn += 1;
                    if status == "error" {
                        errored.insert((*chat, *turn - 1));
                    }
                    let text = user_text(workspace_of.contains_key(chat), chat.simple(), *turn);
                    let sent = store
                        .apply(
                            *chat,
                            Change::SendMessage {
                                message: NewMessage::user(
                                    owners[chat],
                                    vec![MessagePart::text(text)],
                                ),
                                busy: BusyBehavior::Queue,
                                reasoning_effort: None,
                            },
                            None,
                        )
                        .await;
                    if sent.is_ok() {
                        tally.turns_sent += 1;
                    } else {
                        *turn -= 1;
                        if status == "error" {
                            errored.remove(&(*chat, *turn));
                        }
                    }
                }
            }
        }
        if now >= deadline && settled == chats.len() {
            break;
        }
        // Committed messages, to check none is lost.
        if now - last_message_look > Duration::from_secs(2) {
            last_message_look = now;
            if let Ok(ids) =
                sqlx::query_scalar::<_, i64>("SELECT id FROM chat_messages WHERE NOT deleted")
                    .fetch_all(&pool)
                    .await
            {
                seen_messages.extend(ids);
            }
        }
    }
    let database_restart = match restarted {
        Some(done) => done.await.unwrap().map(|()| "once").unwrap_or("failed"),
        None => "not reached",
    };
    for (slot, done) in starting {
        replicas[slot] = Some(done.await.unwrap());
    }
    for replica in replicas.into_iter().flatten() {
        let _ = replica
            .daemon
            .stop(Signal::SIGTERM, Duration::from_secs(30))
            .await;
    }

    // The invariants, on the final state.
    let mut turns = 0;
    let mut steps = 0;
    let mut errors = 0;
    let mut turn_times = Vec::new();
    let mut final_ids = HashSet::new();
    let mut side_effects = 0;
    // Per chat, each committed `execute` call: its id, its ledger line and its committed result.
    let mut committed_lines: HashMap<Uuid, Vec<(String, String, Option<Value>)>> = HashMap::new();
    let mut failed_before_running: Vec<String> = Vec::new();
    for chat in owners.keys() {
        let state = store.chat(*chat).await.unwrap();
        if runnable(state.status.as_str()) {
            tally.violations.push(format!(
                "chat {chat} still {} after the drain",
                state.status.as_str()
            ));
        }
        let history = store.history(*chat, false).await.unwrap();
        final_ids.extend(history.iter().map(|m| m.id));
        let mut calls: HashMap<String, usize> = HashMap::new();
        let mut results: HashMap<String, usize> = HashMap::new();
        let mut lines = Vec::new();
        // Each user message: its turn number, when it was sent, how many answers it got.
        let mut asked: Vec<(usize, chrono::DateTime<chrono::Utc>, usize)> = Vec::new();
        for message in &history {
            match message.role {
                Role::User => {
                    let text: String = message
                        .content
                        .iter()
                        .filter_map(|p| match p {
                            MessagePart::Text { text } => Some(text.as_str()),
                            _ => None,
                        })
                        .collect();
                    let n = text
                        .rsplit(' ')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    asked.push((n, message.created_at, 0));
                }
                Role::Assistant => {
                    steps += 1;
                    let mut called = false;
                    for part in &message.content {
                        if let MessagePart::ToolCall {
                            tool_call_id,
                            tool_name,
                            args,
                            ..
                        } = part
                        {
                            *calls.entry(tool_call_id.clone()).or_default() += 1;
                            called = true;
                            if tool_name == "execute" {
                                lines.push((tool_call_id.clone(), line_of_command(args), None));
                            }
                        }
                    }
                    if !called && let Some((_, at, answers)) = asked.last_mut() {
                        *answers += 1;
                        turn_times.push((message.created_at - *at).to_std().unwrap_or_default());
                    }
                }
                Role::Tool => {
                    for part in &message.content {
                        if let MessagePart::ToolResult {
                            tool_call_id,
                            result,
                            ..
                        } = part
                        {
                            *results.entry(tool_call_id.clone()).or_default() += 1;
                            // The latest call of this id is the one answered.
                            if let Some((.., answer)) =
                                lines.iter_mut().rev().find(|(id, ..)| id == tool_call_id)
                            {
                                *answer = Some(result.clone());
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        committed_lines.insert(*chat, lines);
        turns += asked.len();
        let ended_in_error = state.status == ChatStatus::Error
            && state
                .last_error
                .as_ref()
                .is_some_and(|e| e["kind"].is_string());
        let last = asked.len().saturating_sub(1);
        for (i, (n, _, answers)) in asked.iter().enumerate() {
            let classified_error = errored.contains(&(*chat, *n)) || (i == last && ended_in_error);
            if !(*answers == 1 || (*answers == 0 && classified_error)) {
                tally
                    .violations
                    .push(format!("chat {chat}: turn {n} answered {answers} times"));
            }
        }
        if state.status == ChatStatus::Error {
            errors += 1;
        }
        // Provider call ids repeat across turns: count by (id, occurrences) per chat.
        for (id, n) in &calls {
            if results.get(id) != Some(n) {
                tally.violations.push(format!(
                    "chat {chat}: call {id} made {n} times, answered {:?} times",
                    results.get(id)
                ));
            }
        }
    }
    // Tool side effects: a committed `execute` call appended its line at most once, and exactly
    // once when its result says it ran; no line came from a call that was never committed. (A
    // call can fail before its command starts, e.g. the agent unreachable while the database
    // restarts: its result says so and its line is missing.)
    for (chat, workspace) in &workspace_of {
        let committed = committed_lines.remove(chat).unwrap_or_default();
        let written = std::fs::read_to_string(h.home(*workspace).join(LEDGER)).unwrap_or_default();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for line in written.lines() {
            *counts.entry(line).or_default() += 1;
            side_effects += 1;
        }
        for (_, line, answer) in &committed {
            let ran = answer.as_ref().is_some_and(|a| a["exit_code"] == 0);
            match counts.remove(line.as_str()).unwrap_or(0) {
                1 => {}
                0 if !ran => failed_before_running.push(
                    answer
                        .as_ref()
                        .map_or("no result".to_owned(), Value::to_string),
                ),
                n => tally.violations.push(format!(
                    "chat {chat}: the side effect of `{line}` happened {n} times; its result: {}",
                    answer.as_ref().map_or("none".to_owned(), Value::to_string)
                )),
            }
        }
        for (line, n) in counts {
            tally.violations.push(format!(
                "chat {chat}: `{line}` written {n} times by a call never committed"
            ));
        }
    }
    let lost = seen_messages.difference(&final_ids).count();
    if lost > 0 {
        tally.violations.push(format!(
            "{lost} committed messages seen during the run are gone"
        ));
    }

    let requests = emulator.requests().len();
    let faults = faults.lock().unwrap().clone();
    let fault_text = faults
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut takeover_times = tally.takeover_times.clone();
    println!(
        "soak: {REPLICAS} replicas on PostgreSQL, {chat_count} chats, {} s; each turn {STEPS} tool steps then the answer",
        run_for.as_secs()
    );
    println!("| figure | value |");
    println!("|---|--:|");
    println!("| chats | {chat_count} |");
    println!(
        "| turns (user messages) | {turns} (sent {}) |",
        tally.turns_sent
    );
    println!("| steps (assistant messages) | {steps} |");
    println!(
        "| workspace commands run (ledger lines in {} workspaces) | {side_effects} |",
        workspace_of.len()
    );
    println!(
        "| workspace commands that failed before running | {} |",
        failed_before_running.len()
    );
    println!("| model calls | {requests} |");
    println!(
        "| faults injected | {} ({fault_text}) |",
        faults.values().sum::<usize>()
    );
    println!(
        "| retried model calls (calls that committed no step) | {} |",
        requests.saturating_sub(steps)
    );
    println!("| replicas killed | {} |", tally.kills);
    println!("| database crash and restart | {database_restart} |");
    println!("| takeovers | {} |", tally.takeovers);
    println!(
        "| turn time p50 / p99 (s) | {:.2} / {:.2} |",
        support::percentile_ms(&mut turn_times, 50.0) / 1e3,
        support::percentile_ms(&mut turn_times, 99.0) / 1e3
    );
    println!(
        "| takeover time p50 / p99 (s) | {:.2} / {:.2} |",
        support::percentile_ms(&mut takeover_times, 50.0) / 1e3,
        support::percentile_ms(&mut takeover_times, 99.0) / 1e3
    );
    println!("| chats ended in error | {errors} |");
    println!("| violations | {} |", tally.violations.len());
    for violation in tally.violations.iter().take(20) {
        println!("  violation: {violation}");
    }
    for result in failed_before_running.iter().take(5) {
        println!("  a command that failed before running got: {result}");
    }
    drop(emulator);
    drop(pool);
    h.finish().await;
    tally.violations.len()
}
