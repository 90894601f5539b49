//! The chat engine end to end: the test database (either backend), the provider emulator, the
//! local workspace backend with real agents, and one or two engines (worker ids) on one
//! database.

use std::net::ToSocketAddrs as _;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use chatd_e2e::on_pool;
use chatd_e2e::test_db::{processes_running, skip_on_sqlite};
use chatd_e2e::workspaces::{Harness, eventually};
use chatengine::builds::StoreBuilds;
use chatengine::resolver::{ResolverSettings, StoreConnector};
use chatengine::{Engine, EngineConfig, EngineDeps};
use chatretry::{Jitter, RetryPolicy, SilenceTimeout};
use chatstate::{BusyBehavior, ChatStatus};
use chatstore::Database;
use chatstore::postgres::{PgPubsub, PgStore, PoolConfig};
use chatstore::pubsub::Pubsub;
use chatstore::types::{Chat, Message, MessagePart, NewChat, NewMessage, Role};
use chatstore::{Change, StoreConfig};
use chattest::emulator::{Emulator, FaultKind, FaultPoint, Match, ScriptPart, Turn};
use chattest::proxy::{Mode, Proxy};
use provisioner::backend::Backend as _;
use serde_json::Value;
use uuid::Uuid;

fn store_config() -> StoreConfig {
    StoreConfig {
        lease_stale_after: Duration::from_secs(2),
        ..StoreConfig::default()
    }
}

/// Short intervals so leases lapse in seconds and retries wait milliseconds.
pub(super) fn config() -> EngineConfig {
    let mut config = EngineConfig {
        acquire_interval: Duration::from_millis(500),
        heartbeat_interval: Duration::from_millis(300),
        lease_stale_after: Duration::from_secs(2),
        heartbeat_cleanup_interval: Duration::from_secs(1),
        runner_sync_interval: Duration::from_millis(500),
        stream_silence_timeout: SilenceTimeout::new(Duration::from_secs(1)).unwrap(),
        retry: RetryPolicy {
            initial_delay: Duration::from_millis(400),
            max_delay: Duration::from_secs(2),
            jitter: Jitter::None,
            ..RetryPolicy::default()
        },
        shutdown_grace: Duration::from_secs(2),
        resolver: ResolverSettings {
            dial_timeout: Duration::from_secs(2),
            dial_validation_delay: Duration::from_millis(500),
            agent_disconnected_recovery_threshold: Duration::from_secs(4),
            agent_inactive_timeout: Duration::from_secs(2),
        },
        ..EngineConfig::default()
    };
    config.tools.agent_inactive_timeout = Duration::from_secs(2);
    config.tools.waits.safety_poll = Duration::from_millis(500);
    config
}

/// The engine's dependencies; a call to an agent fails after `call_deadline` without an answer.
fn deps(store: Arc<dyn Database>, pubsub: Arc<dyn Pubsub>, call_deadline: Duration) -> EngineDeps {
    EngineDeps {
        store: store.clone(),
        pubsub,
        builds: Some(Arc::new(StoreBuilds::new(store.clone()))),
        connector: Some(Arc::new(
            StoreConnector::new(store.clone(), Duration::from_secs(2))
                .with_call_deadline(call_deadline),
        )),
        dialer: Some(Arc::new(StoreConnector::new(store, Duration::from_secs(2)))),
    }
}

/// A database, the emulator playing `turns`, a default model pointing at it, and a store with
/// short leases.
pub(super) struct Run {
    pub(super) h: Harness,
    pub(super) emulator: Emulator,
    pub(super) store: Arc<dyn Database>,
    model: Uuid,
}

impl Run {
    pub(super) async fn new(h: Harness, turns: Vec<Turn>) -> Self {
        let emulator = Emulator::start(turns).await.unwrap();
        let model = h
            .model("anthropic", &emulator.base_url(), "claude-test")
            .await;
        let store = h.db.store_with(store_config());
        Self {
            h,
            emulator,
            store,
            model,
        }
    }

    pub(super) async fn engine(&self) -> Engine {
        self.engine_with(config()).await
    }

    pub(super) async fn engine_with(&self, config: EngineConfig) -> Engine {
        self.engine_with_deadline(config, chattool::conn::DEFAULT_AGENT_CALL_DEADLINE)
            .await
    }

    async fn engine_with_deadline(&self, config: EngineConfig, call_deadline: Duration) -> Engine {
        let deps = deps(self.store.clone(), self.h.pubsub.clone(), call_deadline);
        Engine::start(deps, config).await
    }

    pub(super) async fn chat(&self, text: &str) -> Uuid {
        self.store
            .create_chat(NewChat::new(
                self.h.organization,
                self.h.user,
                self.model,
                vec![MessagePart::text(text)],
            ))
            .await
            .unwrap()
            .chat
            .id
    }

    /// Sends a user message to the chat.
    async fn send(&self, chat: Uuid, text: &str, busy: BusyBehavior) {
        self.store
            .apply(
                chat,
                Change::SendMessage {
                    message: NewMessage::user(self.h.user, vec![MessagePart::text(text)]),
                    busy,
                    reasoning_effort: None,
                },
                None,
            )
            .await
            .unwrap();
    }

    async fn read(&self, chat: Uuid) -> Chat {
        self.store.chat(chat).await.unwrap()
    }

    pub(super) async fn wait(&self, chat: Uuid, what: &str, check: impl Fn(&Chat) -> bool) -> Chat {
        eventually(what, || async {
            let c = self.read(chat).await;
            check(&c).then_some(c)
        })
        .await
    }

    /// Waits until the turn is over (waiting or error).
    pub(super) async fn settled(&self, chat: Uuid) -> Chat {
        self.wait(chat, "the turn to end", |c| {
            matches!(c.status, ChatStatus::Waiting | ChatStatus::Error)
        })
        .await
    }

    pub(super) async fn history(&self, chat: Uuid) -> Vec<Message> {
        self.store.history(chat, false).await.unwrap()
    }

    pub(super) async fn finish(self) {
        drop(self.emulator);
        self.h.finish().await;
    }
}

pub(super) fn text_of(m: &Message) -> String {
    m.content
        .iter()
        .filter_map(|p| match p {
            MessagePart::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn results_of(m: &Message) -> Vec<(String, Value, bool)> {
    m.content
        .iter()
        .filter_map(|p| match p {
            MessagePart::ToolResult {
                tool_call_id,
                result,
                is_error,
                ..
            } => Some((tool_call_id.clone(), result.clone(), *is_error)),
            _ => None,
        })
        .collect()
}

fn roles(history: &[Message]) -> Vec<Role> {
    history.iter().map(|m| m.role).collect()
}

/// The roles of a history of one turn: the user's message, `tool_steps` steps of a call and its
/// result, and the answer when `answered`.
fn turn(tool_steps: usize, answered: bool) -> Vec<Role> {
    let mut roles = vec![Role::User];
    for _ in 0..tool_steps {
        roles.extend([Role::Assistant, Role::Tool]);
    }
    if answered {
        roles.push(Role::Assistant);
    }
    roles
}

pub(super) fn reply(text: &str) -> Turn {
    Turn::with(vec![ScriptPart::text(text)])
}

fn call(id: &str, name: &str, args: Value) -> Turn {
    Turn::with(vec![ScriptPart::tool_call(id, name, args.to_string())])
}

fn after(turn: Turn, result_contains: &str) -> Turn {
    turn.when(Match::LastToolResultContains(result_contains.into()))
}

/// Many small text deltas, `pacing` apart.
fn slow_reply(text: &str, pacing: Duration) -> Turn {
    let mut turn = Turn::with(vec![ScriptPart::Text {
        text: text.into(),
        chunk: 3,
    }]);
    turn.pacing = pacing;
    turn
}

#[tokio::test]
async fn a_full_turn_creates_a_workspace_runs_a_command_and_answers() {
    let h = Harness::start().await;
    let template = h.template("name = \"plain\"", Vec::new()).await;
    let run = Run::new(
        h,
        vec![
            Turn::with(vec![
                ScriptPart::text("Creating a workspace."),
                ScriptPart::tool_call(
                    "c1",
                    "create_workspace",
                    serde_json::json!({"template_id": template.to_string(), "name": "dev"})
                        .to_string(),
                ),
            ]),
            after(
                call(
                    "c2",
                    "execute",
                    serde_json::json!({"command": "echo hi > f && cat f"}),
                ),
                "ada/dev",
            ),
            after(reply("The file says hi."), "hi"),
        ],
    )
    .await;
    let engine = run.engine().await;
    let chat = run.chat("create a workspace and write hi to f").await;
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    // The finished turn and the hand-back are two commits: the chat is `waiting` a moment
    // before its runner lets it go.
    run.wait(chat, "the idle chat to be abandoned", |c| {
        c.worker_id.is_none()
    })
    .await;

    let history = run.history(chat).await;
    assert_eq!(roles(&history), turn(2, true));
    assert_eq!(text_of(&history[1]), "Creating a workspace.");
    let created = &results_of(&history[2])[0];
    assert_eq!(created.0, "c1");
    assert_eq!(created.1["created"], true, "{}", created.1);
    let executed = &results_of(&history[4])[0];
    assert_eq!(executed.0, "c2");
    assert!(!executed.2);
    assert_eq!(executed.1["output"], "hi\n", "{}", executed.1);
    assert_eq!(executed.1["exit_code"], 0);
    assert_eq!(text_of(&history[5]), "The file says hi.");
    // Usage is recorded on assistant rows.
    assert!(history[5].usage.is_some_and(|u| u.output_tokens > 0));

    let workspace = done.workspace_id.expect("the chat is bound");
    let file = run.h.home(workspace).join("f");
    assert_eq!(std::fs::read_to_string(file).unwrap(), "hi\n");
    // The model saw the tools and the results in order.
    let requests = run.emulator.requests();
    assert_eq!(requests.len(), 3);
    let tools: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(tools.contains(&"execute") && tools.contains(&"create_workspace"));

    engine.shutdown().await;
    run.finish().await;
}

/// A fault on the first call of a chat, and what its recorded retry says.
struct FaultCase {
    name: &'static str,
    fault: Turn,
    kind: &'static str,
}

fn fault_cases() -> Vec<FaultCase> {
    let overloaded =
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let text = || {
        Turn::with(vec![ScriptPart::Text {
            text: "partial output that must not be committed".into(),
            chunk: 5,
        }])
    };
    vec![
        FaultCase {
            name: "529",
            fault: reply("x").fault(
                FaultPoint::BeforeHeaders,
                FaultKind::Status {
                    status: 529,
                    headers: Vec::new(),
                    body: overloaded.into(),
                },
            ),
            kind: "overloaded",
        },
        FaultCase {
            name: "429 with retry-after",
            fault: reply("x").fault(
                FaultPoint::BeforeHeaders,
                FaultKind::Status {
                    status: 429,
                    headers: vec![("retry-after".into(), "1".into())],
                    body: r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#.into(),
                },
            ),
            kind: "rate_limit",
        },
        FaultCase {
            name: "reset mid-stream",
            fault: text().fault(FaultPoint::AfterEvents(3), FaultKind::RstStream(2)),
            kind: "timeout",
        },
        FaultCase {
            name: "stall",
            fault: text().fault(
                FaultPoint::AfterEvents(3),
                FaultKind::Stall(Duration::from_secs(5)),
            ),
            kind: "stream_silence_timeout",
        },
        FaultCase {
            name: "in-stream overloaded error",
            fault: text().fault(
                FaultPoint::AfterEvents(3),
                FaultKind::StreamError {
                    code: "overloaded_error".into(),
                    message: "Overloaded".into(),
                },
            ),
            kind: "overloaded",
        },
    ]
}

#[tokio::test]
async fn provider_faults_are_retried_with_a_recorded_retry_state_and_the_turn_completes() {
    let run = Run::new(Harness::bare().await, Vec::new()).await;
    let engine = run.engine().await;
    for case in fault_cases() {
        run.emulator.push(case.fault);
        run.emulator.push(reply("recovered"));
        let before = run.emulator.requests().len();
        let chat = run.chat(case.name).await;
        let retrying = run
            .wait(chat, "a recorded retry", |c| c.retry_state.is_some())
            .await;
        let state = retrying.retry_state.unwrap();
        assert_eq!(state["kind"], case.kind, "{}: {state}", case.name);
        assert_eq!(state["attempt"], 1, "{}", case.name);
        assert_eq!(state["retry_status"], "retrying");
        assert_eq!(state["max_attempts"], 25);
        if case.name == "429 with retry-after" {
            assert_eq!(state["delay_ms"], 1000, "{state}");
            assert_eq!(state["delay_source"], "retry_after_header");
        } else {
            assert_eq!(state["delay_ms"], 400, "{}: {state}", case.name);
            assert_eq!(state["delay_source"], "backoff");
        }
        let done = run.settled(chat).await;
        assert_eq!(
            done.status,
            ChatStatus::Waiting,
            "{}: {:?}",
            case.name,
            done.last_error
        );
        assert_eq!(
            done.retry_state, None,
            "a new attempt clears the retry state"
        );
        let history = run.history(chat).await;
        assert_eq!(
            roles(&history),
            [Role::User, Role::Assistant],
            "{}",
            case.name
        );
        assert_eq!(text_of(&history[1]), "recovered", "{}", case.name);
        assert_eq!(run.emulator.requests().len() - before, 2, "{}", case.name);
    }
    engine.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn auth_and_config_errors_finish_in_error_without_a_retry() {
    let run = Run::new(Harness::bare().await, Vec::new()).await;
    let engine = run.engine().await;
    let cases = [
        (
            401,
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            "auth",
        ),
        (
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"model not found: claude-nonexistent"}}"#,
            "config",
        ),
    ];
    for (status, body, kind) in cases {
        run.emulator.push(reply("x").fault(
            FaultPoint::BeforeHeaders,
            FaultKind::Status {
                status,
                headers: Vec::new(),
                body: body.into(),
            },
        ));
        let before = run.emulator.requests().len();
        let chat = run.chat("hello").await;
        let done = run.settled(chat).await;
        assert_eq!(done.status, ChatStatus::Error);
        let error = done.last_error.unwrap();
        assert_eq!(error["kind"], kind, "{error}");
        assert_eq!(error["status_code"], status, "{error}");
        assert_eq!(error["retry_status"], "terminal");
        assert_eq!(error["attempts"], 1);
        assert_eq!(error["provider"], "anthropic");
        assert!(!error["message"].as_str().unwrap().is_empty());
        assert_eq!(run.emulator.requests().len() - before, 1, "no retry");
        assert_eq!(roles(&run.history(chat).await), [Role::User]);
    }
    engine.shutdown().await;
    run.finish().await;
}

/// The model's context window and compression threshold.
async fn limit_context(run: &Run, context_limit: i64, threshold: i32) {
    on_pool!(run.h.db.pool(), |pool| sqlx::query(
        "UPDATE chat_model_configs SET context_limit = $1, compression_threshold = $2 WHERE id = $3"
    )
    .bind(context_limit)
    .bind(threshold)
    .bind(run.model)
    .execute(pool)
    .await
    .unwrap()
    .rows_affected());
}

/// A turn that answers the summary call of a compaction.
fn summary(text: &str) -> Turn {
    reply(text).when(Match::LastUserTextContains("[user]".into()))
}

/// The `chat_summarized` results in a history: (source, the whole result).
fn summaries(history: &[Message]) -> Vec<(String, Value)> {
    history
        .iter()
        .flat_map(results_of)
        .filter(|(id, _, _)| id.starts_with("chat_summarized"))
        .map(|(_, v, _)| (v["source"].as_str().unwrap().to_owned(), v))
        .collect()
}

/// The texts of the user messages of a recorded request.
fn user_texts(request: &chattest::emulator::RecordedRequest) -> Vec<String> {
    request.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].to_string())
        .collect()
}

#[tokio::test]
async fn a_history_over_the_threshold_is_compacted_and_the_turn_goes_on_from_the_summary() {
    let mut big = call("c1", "list_templates", serde_json::json!({}));
    big.usage = (600, 5);
    let run = Run::new(
        Harness::bare().await,
        vec![
            big,
            summary("SUMMARY: the user wants templates; none exist."),
            reply("Going on from the summary.")
                .when(Match::LastUserTextContains("SUMMARY:".into())),
        ],
    )
    .await;
    limit_context(&run, 1000, 50).await;
    let engine = run.engine().await;
    let chat = run.chat("which templates are there?").await;
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    let history = run.history(chat).await;
    let compacted = summaries(&history);
    assert_eq!(compacted.len(), 1);
    let (source, result) = &compacted[0];
    assert_eq!(source, "automatic");
    assert_eq!(result["usage_percent"], 60, "{result}");
    assert_eq!(result["context_limit"], 1000);
    assert_eq!(result["threshold"], 50);
    let boundary = history.iter().find(|m| m.compressed).unwrap();
    assert_eq!(boundary.visibility, chatstore::types::Visibility::Model);
    assert!(text_of(boundary).contains("SUMMARY: the user wants templates"));
    assert_eq!(
        text_of(history.last().unwrap()),
        "Going on from the summary."
    );

    // The summary call saw the conversation; the call after it only the summary.
    let requests = run.emulator.requests();
    assert_eq!(requests.len(), 3);
    let asked = user_texts(&requests[1]).join("\n");
    assert!(asked.contains("which templates are there?"), "{asked}");
    assert!(asked.contains("list_templates"), "{asked}");
    let after = user_texts(&requests[2]);
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(after[0].contains("SUMMARY:") && !after[0].contains("which templates are there?"));
    engine.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn a_context_overflow_compacts_once_then_fails_with_the_compaction_error() {
    let too_long = |text: &str| {
        reply(text).fault(
            FaultPoint::BeforeHeaders,
            FaultKind::Status {
                status: 400,
                headers: Vec::new(),
                body: r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 250000 tokens > 200000 maximum"}}"#.into(),
            },
        )
    };
    let run = Run::new(
        Harness::bare().await,
        vec![
            reply("a first answer"),
            // The second turn overflows: compaction, then generation again from the summary,
            // which goes through.
            too_long("x").when(Match::LastUserTextContains("second".into())),
            summary("SUMMARY: a first answer was given."),
            // The unanswered message follows the summary, so it is the last user text again.
            reply("answered from the summary").when(Match::LastUserTextContains("second".into())),
        ],
    )
    .await;
    let engine = run.engine().await;
    let chat = run.chat("first").await;
    run.settled(chat).await;
    run.send(chat, "second", BusyBehavior::Queue).await;
    let done = run
        .wait(chat, "the answer after the compaction", |c| {
            c.status != ChatStatus::Running && run.emulator.requests().len() >= 4
        })
        .await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    let history = run.history(chat).await;
    assert_eq!(summaries(&history)[0].0, "automatic");
    assert_eq!(
        text_of(history.last().unwrap()),
        "answered from the summary"
    );
    // The unanswered message follows the summary, as a model-only row.
    let requests = run.emulator.requests();
    let after = user_texts(&requests[3]).join("\n");
    assert!(
        after.contains("SUMMARY:") && after.contains("second"),
        "{after}"
    );

    // Overflowing again right after a compaction ends the turn with the compaction error.
    run.emulator
        .push(too_long("y").when(Match::LastUserTextContains("third".into())));
    run.emulator.push(summary("SUMMARY: still too long."));
    run.emulator
        .push(too_long("z").when(Match::LastUserTextContains("third".into())));
    run.send(chat, "third", BusyBehavior::Queue).await;
    let failed = run
        .wait(chat, "the compaction error", |c| {
            c.status == ChatStatus::Error
        })
        .await;
    let error = failed.last_error.unwrap();
    assert_eq!(error["kind"], "config", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("Conversation compaction could not reduce the history"),
        "{error}"
    );
    engine.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn a_manual_compaction_summarises_and_ends_the_turn_and_an_overflowing_summary_shrinks() {
    let overflow = reply("x").fault(
        FaultPoint::BeforeHeaders,
        FaultKind::Status {
            status: 400,
            headers: Vec::new(),
            body: r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long"}}"#.into(),
        },
    );
    let run = Run::new(
        Harness::bare().await,
        vec![
            reply("answer one"),
            reply("answer two").when(Match::LastUserTextContains("two".into())),
            // The first summary call overflows; the second, with half the rows, succeeds.
            overflow.when(Match::LastUserTextContains("[user]".into())),
            summary("SUMMARY: two questions answered."),
        ],
    )
    .await;
    let engine = run.engine().await;
    let chat = run.chat("one").await;
    run.settled(chat).await;
    run.send(chat, "two", BusyBehavior::Queue).await;
    run.wait(chat, "the second answer", |c| {
        c.status == ChatStatus::Waiting && run.emulator.requests().len() == 2
    })
    .await;
    let before = run.read(chat).await.history_version;
    run.store
        .apply(chat, Change::RequestCompaction, None)
        .await
        .unwrap();
    let done = run
        .wait(chat, "the manual compaction", |c| {
            c.status == ChatStatus::Waiting && c.history_version > before
        })
        .await;
    assert_eq!(done.compaction_requested_at, None, "the marker is consumed");
    let history = run.history(chat).await;
    let compacted = summaries(&history);
    assert_eq!(compacted.len(), 1);
    assert_eq!(compacted[0].0, "manual");
    let requests = run.emulator.requests();
    assert_eq!(requests.len(), 4, "no reply after a manual compaction");
    let (full, shrunk) = (user_texts(&requests[2]), user_texts(&requests[3]));
    assert!(full[0].contains("one") && full[0].contains("answer two"));
    assert!(
        !shrunk[0].contains("[user]\\none"),
        "the oldest rows are dropped: {shrunk:?}"
    );
    assert!(shrunk[0].contains("answer two"));
    // Asking again with nothing new to compact does nothing.
    assert!(!chatengine::step::has_compactable(&history));
    engine.shutdown().await;
    run.finish().await;
}

/// A 20-step chat on Anthropic: every request marks the system prompt and its last two messages
/// for the prompt cache, so each call reads the previous call's prefix from the cache. Prints
/// the bytes sent per step (`--nocapture`).
#[tokio::test]
async fn every_step_of_a_long_turn_marks_the_prompt_for_the_cache() {
    let steps = 20;
    let mut turns: Vec<Turn> = (0..steps)
        .map(|i| call(&format!("c{i}"), "list_templates", serde_json::json!({})))
        .collect();
    turns.push(reply("done"));
    let run = Run::new(Harness::bare().await, turns).await;
    let mut config = config();
    config.system_prompt = "You are a careful coding agent.".into();
    let engine = run.engine_with(config).await;
    let chat = run.chat("list the templates twenty times").await;
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    let requests = run.emulator.requests();
    assert_eq!(requests.len(), steps + 1);
    let mut report = String::from("step  bytes  cache marks\n");
    for (step, request) in requests.iter().enumerate() {
        let body = &request.body;
        let text = body.to_string();
        let marks = text.matches("cache_control").count();
        let messages = body["messages"].as_array().unwrap();
        let marked = |m: &Value| {
            m["content"]
                .as_array()
                .unwrap()
                .last()
                .is_some_and(|b| b["cache_control"]["type"] == "ephemeral")
        };
        assert_eq!(body["system"][0]["cache_control"]["type"], "ephemeral");
        assert!(messages.iter().rev().take(2).all(marked), "step {step}");
        assert_eq!(marks, 1 + messages.len().min(2), "step {step}");
        report.push_str(&format!("{step:>4}  {:>5}  {marks}\n", text.len()));
    }
    eprintln!("{report}");
    engine.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn the_users_own_instructions_follow_the_deployments_and_the_chats_prompts() {
    let run = Run::new(Harness::bare().await, vec![reply("bonjour")]).await;
    run.store
        .update_user(
            run.h.user,
            &chatstore::identity::UserChanges {
                custom_prompt: Some("Answer in French.".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut config = config();
    config.system_prompt = "You are chatd's agent.".into();
    let engine = run.engine_with(config).await;
    let mut new = NewChat::new(
        run.h.organization,
        run.h.user,
        run.model,
        vec![MessagePart::text("hello")],
    );
    new.system_prompt = Some("Work on the billing service.".into());
    let chat = run.store.create_chat(new).await.unwrap().chat.id;
    assert_eq!(run.settled(chat).await.status, ChatStatus::Waiting);
    let request = &run.emulator.requests()[0];
    assert_eq!(
        request.body["system"][0]["text"],
        "You are chatd's agent.\n\nWork on the billing service.\n\n<user-instructions>\nAnswer in French.\n</user-instructions>"
    );
    engine.shutdown().await;
    run.finish().await;
}

/// A chat with the client-executed tool `ask_user`, whose model calls it once (call `q1`).
async fn dynamic_chat(run: &Run, store: &Arc<dyn Database>) -> Uuid {
    let mut new = NewChat::new(
        run.h.organization,
        run.h.user,
        run.model,
        vec![MessagePart::text("ask me something")],
    );
    new.dynamic_tools = Some(serde_json::json!([{
        "name": "ask_user",
        "description": "Ask the user a question.",
        "input_schema": {"type": "object"},
    }]));
    store.create_chat(new).await.unwrap().chat.id
}

#[tokio::test]
async fn a_client_executed_tool_waits_for_its_result_and_times_out_without_one() {
    let ask = || call("q1", "ask_user", serde_json::json!({"question": "colour?"}));
    let run = Run::new(
        Harness::bare().await,
        vec![
            ask(),
            after(reply("blue it is"), "blue"),
            ask(),
            after(reply("no answer, going on"), "timed out"),
        ],
    )
    .await;
    // A short requires-action deadline for the second chat.
    let store = run.h.db.store_with(StoreConfig {
        requires_action_timeout: Duration::from_secs(1),
        ..store_config()
    });
    let engine = Engine::start(
        deps(
            store.clone(),
            run.h.pubsub.clone(),
            chattool::conn::DEFAULT_AGENT_CALL_DEADLINE,
        ),
        config(),
    )
    .await;

    // The client answers: the turn goes on with its result.
    let answered = dynamic_chat(&run, &store).await;
    let waiting = run
        .wait(answered, "the tool call for the client", |c| {
            c.status == ChatStatus::RequiresAction
        })
        .await;
    assert!(waiting.requires_action_deadline_at.is_some());
    store
        .apply(
            answered,
            Change::CompleteRequiresAction {
                results: vec![chatstore::ToolResultInput {
                    tool_call_id: "q1".into(),
                    output: r#""blue""#.into(),
                    is_error: false,
                }],
            },
            None,
        )
        .await
        .unwrap();
    let done = run.settled(answered).await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    assert_eq!(
        text_of(run.history(answered).await.last().unwrap()),
        "blue it is"
    );

    // Nobody answers: at the deadline the call gets the timeout result and the turn goes on.
    let unanswered = dynamic_chat(&run, &store).await;
    let done = run.settled(unanswered).await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    let history = run.history(unanswered).await;
    let (id, result, is_error) = results_of(&history[2]).remove(0);
    assert_eq!((id.as_str(), is_error), ("q1", true));
    assert_eq!(result, "Tool execution timed out");
    assert_eq!(text_of(history.last().unwrap()), "no answer, going on");
    engine.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn a_reply_blocked_by_the_content_filter_ends_the_turn_with_its_error() {
    let mut blocked = Turn::with(Vec::new());
    blocked.finish = Some("refusal".into());
    let run = Run::new(Harness::bare().await, vec![blocked]).await;
    let engine = run.engine().await;
    let chat = run.chat("something forbidden").await;
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Error);
    let error = done.last_error.unwrap();
    assert_eq!(error["kind"], "content_filter", "{error}");
    assert_eq!(error["retry_status"], "terminal");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("blocked this response under its content policy"),
        "{error}"
    );
    assert_eq!(roles(&run.history(chat).await), [Role::User]);
    engine.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn a_failed_call_logs_its_classification_source_and_an_ignored_should_retry() {
    let logs = chatd_e2e::logs::Capture::start();
    let refused = reply("x").fault(
        FaultPoint::BeforeHeaders,
        FaultKind::Status {
            status: 401,
            headers: vec![
                ("x-should-retry".into(), "true".into()),
                ("request-id".into(), "req_401".into()),
            ],
            body: r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#.into(),
        },
    );
    let run = Run::new(Harness::bare().await, vec![refused]).await;
    let engine = run.engine().await;
    let chat = run.chat("hello").await;
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Error);
    assert_eq!(done.last_error.unwrap()["provider_request_id"], "req_401");
    eventually("the failure's log lines", || async {
        let text = logs.text();
        let failed = text.lines().any(|l| {
            l.contains("model call failed")
                && l.contains("source=\"structured\"")
                && l.contains("req_401")
        });
        let ignored = text
            .lines()
            .any(|l| l.contains("WARN") && l.contains("x-should-retry: true"));
        (failed && ignored).then_some(())
    })
    .await;
    engine.shutdown().await;
    run.finish().await;
}

/// Waits until the idempotency ledger holds the call (it is in flight).
async fn dispatched(run: &Run, chat: Uuid, call: &str) {
    eventually("the call to be dispatched", || async {
        let n: i64 = on_pool!(run.h.db.pool(), |pool| {
            sqlx::query_scalar(
            "SELECT count(*) FROM chat_tool_executions WHERE chat_id = $1 AND tool_call_id LIKE '%:' || $2",
        )
        .bind(chat)
        .bind(call)
        .fetch_one(pool)
        .await
        .unwrap()
        });
        (n == 1).then_some(())
    })
    .await;
}

/// Waits until the chat's current episode holds at least `n` parts.
async fn parts_streamed(run: &Run, engine: &Engine, chat: Uuid, n: usize) {
    eventually("parts to stream", || async {
        let c = run.read(chat).await;
        let key = chatengine::parts::EpisodeKey {
            chat_id: chat,
            history_version: c.history_version,
            generation_attempt: c.generation_attempt,
        };
        (engine.parts().parts(&key).len() >= n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_interrupt_mid_stream_commits_the_partial_text_and_a_busy_interrupt_runs_the_new_message()
 {
    let full = "one two three four five six seven eight nine ten eleven twelve";
    let run = Run::new(
        Harness::bare().await,
        vec![slow_reply(full, Duration::from_millis(100))],
    )
    .await;
    let engine = run.engine().await;

    // Stop.
    let chat = run.chat("count slowly").await;
    parts_streamed(&run, &engine, chat, 3).await;
    run.store
        .apply(chat, Change::Interrupt, None)
        .await
        .unwrap();
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Waiting);
    assert_eq!(done.last_error, None);
    let history = run.history(chat).await;
    assert_eq!(roles(&history), [Role::User, Role::Assistant]);
    let partial = text_of(&history[1]);
    assert!(
        !partial.is_empty() && partial.len() < full.len(),
        "{partial:?}"
    );
    assert!(full.starts_with(&partial));

    // A message sent with busy behaviour `interrupt`.
    run.emulator
        .push(slow_reply(full, Duration::from_millis(100)));
    run.emulator
        .push(reply("answer two").when(Match::LastUserTextContains("second".into())));
    let chat = run.chat("count slowly again").await;
    parts_streamed(&run, &engine, chat, 3).await;
    run.send(chat, "second", BusyBehavior::Interrupt).await;
    let done = run
        .wait(chat, "the second answer", |c| {
            c.status == ChatStatus::Waiting && c.history_version > 0
        })
        .await;
    assert_eq!(done.last_error, None);
    let history = run.history(chat).await;
    assert_eq!(
        roles(&history),
        [Role::User, Role::Assistant, Role::User, Role::Assistant]
    );
    assert!(full.starts_with(&text_of(&history[1])));
    assert_eq!(text_of(&history[2]), "second");
    assert_eq!(text_of(&history[3]), "answer two");

    engine.shutdown().await;
    run.finish().await;
}

/// A run whose chat's first turn creates a workspace from a plain template, then calls
/// `execute` (id `c2`) with `execute_args`, then plays `then`.
async fn workspace_run(execute_args: Value, then: Vec<Turn>) -> Run {
    let h = Harness::start().await;
    let template = h.template("name = \"plain\"", Vec::new()).await;
    let mut turns = vec![
        call(
            "c1",
            "create_workspace",
            serde_json::json!({"template_id": template.to_string()}),
        ),
        after(call("c2", "execute", execute_args), "created"),
    ];
    turns.extend(then);
    Run::new(h, turns).await
}

/// [`workspace_run`] with a long command (60 s timeout).
async fn long_command_run(command: &str, then: Vec<Turn>) -> Run {
    workspace_run(
        serde_json::json!({"command": command, "timeout": "60s"}),
        then,
    )
    .await
}

/// A command that sleeps nearly a minute (longer than the test's patience), told apart from
/// every other run's by its duration.
fn unique_sleep() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("sleep 59.{nanos:09}")
}

/// Waits until a process whose command line contains `needle` runs.
async fn running(needle: &str) {
    eventually("the command to run", || async {
        (!processes_running(needle).is_empty()).then_some(())
    })
    .await;
}

/// Waits until no process whose command line contains `needle` runs.
async fn gone(needle: &str) {
    eventually("the command to be stopped", || async {
        processes_running(needle).is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_interrupt_mid_tool_stops_the_command_and_answers_the_call_with_the_interruption_text() {
    // A command no other test runs, so the process table tells whether it still runs.
    let sleep = unique_sleep();
    let run = long_command_run(&format!("{sleep}; echo late > late.txt"), Vec::new()).await;
    let engine = run.engine().await;
    let chat = run.chat("sleep").await;
    running(&sleep).await;
    run.store
        .apply(chat, Change::Interrupt, None)
        .await
        .unwrap();
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Waiting);
    // The agent was told to cancel the call: the shell and its sleep are gone long before the
    // sleep would have ended (the wait is bounded well below it).
    gone(&sleep).await;
    let history = run.history(chat).await;
    assert_eq!(roles(&history), turn(2, false));
    let results = results_of(&history[4]);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].0, "c2");
    assert_eq!(
        results[0].1,
        "tool call was interrupted before it produced a result"
    );
    assert!(results[0].2);
    engine.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn an_edit_that_removes_a_running_step_stops_its_command() {
    let sleep = unique_sleep();
    let edited = reply("answer to the edit").when(Match::LastUserTextContains("edited".into()));
    let run = long_command_run(&format!("{sleep}; echo late > late.txt"), vec![edited]).await;
    let engine = run.engine().await;
    let chat = run.chat("sleep").await;
    running(&sleep).await;
    let first = run.history(chat).await[0].id;
    run.store
        .apply(
            chat,
            Change::EditMessage {
                message_id: first,
                replacement: NewMessage::user(run.h.user, vec![MessagePart::text("edited")]),
            },
            None,
        )
        .await
        .unwrap();
    gone(&sleep).await;
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    let history = run.history(chat).await;
    assert_eq!(roles(&history), [Role::User, Role::Assistant]);
    assert_eq!(text_of(&history[1]), "answer to the edit");
    engine.shutdown().await;
    run.finish().await;
}

/// A chat whose workspace ran a command, on an engine whose agent calls fail after 2 s (far
/// below the test's patience: with the 60 s default a chat would not settle in time).
async fn warm_workspace() -> (Run, Engine, Uuid, Chat) {
    warm_workspace_with(config()).await
}

/// [`warm_workspace`] with the engine on `config`.
async fn warm_workspace_with(config: EngineConfig) -> (Run, Engine, Uuid, Chat) {
    let run = workspace_run(
        serde_json::json!({"command": "echo warm"}),
        vec![after(reply("ready"), "warm")],
    )
    .await;
    let engine = run
        .engine_with_deadline(config, Duration::from_secs(2))
        .await;
    let chat = run.chat("make a workspace").await;
    let ready = run.settled(chat).await;
    assert_eq!(ready.status, ChatStatus::Waiting, "{:?}", ready.last_error);
    (run, engine, chat, ready)
}

#[tokio::test]
async fn a_stopped_agent_gets_the_recovery_text_within_the_call_deadline_and_the_turn_goes_on() {
    let (run, engine, chat, ready) = warm_workspace().await;
    let agent = nix::unistd::Pid::from_raw(
        run.h
            .backend()
            .agent_pid(ready.workspace_id.unwrap())
            .unwrap(),
    );

    // The agent stops (as a debugger or an overloaded host would stop it) with the chat's
    // connection to it open, once during each kind of call.
    let calls = [
        ("c3", "read_file", serde_json::json!({"path": "notes.txt"})),
        ("c4", "execute", serde_json::json!({"command": "echo hung"})),
    ];
    for (id, tool, args) in calls {
        nix::sys::signal::kill(agent, nix::sys::signal::Signal::SIGSTOP).unwrap();
        run.emulator.push(call(id, tool, args));
        let moving_on = format!("moving on after {tool}");
        run.emulator
            .push(after(reply(&moving_on), "did not answer within 2 s"));
        run.send(chat, &format!("call {tool}"), BusyBehavior::Queue)
            .await;
        let done = run
            .wait(chat, "the turn after the hung call", |c| {
                c.status != ChatStatus::Running
            })
            .await;
        nix::sys::signal::kill(agent, nix::sys::signal::Signal::SIGCONT).unwrap();
        assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
        let history = run.history(chat).await;
        let (called, result, _) = results_of(&history[history.len() - 2]).remove(0);
        assert_eq!(called, id);
        // A text error (`read_file`), or the `error` of a failed command's JSON (`execute`).
        let text = result
            .as_str()
            .or_else(|| result["error"].as_str())
            .unwrap_or_default()
            .trim_start_matches("start process: ");
        assert!(
            text.starts_with("the workspace agent did not answer within 2 s")
                && text.contains("call stop_workspace"),
            "{tool}: {text}"
        );
        assert_eq!(text_of(history.last().unwrap()), moving_on);
    }
    engine.shutdown().await;
    run.finish().await;
}

/// Kills the workspace's agent (SIGKILL) and, once the process is gone, has the backend start it
/// again as a restarted daemon's reconciliation does.
async fn restart_agent(backend: &provisioner::LocalBackend, workspace: Uuid) {
    let old = nix::unistd::Pid::from_raw(backend.agent_pid(workspace).unwrap());
    nix::sys::signal::kill(old, nix::sys::signal::Signal::SIGKILL).unwrap();
    // A signal is delivered asynchronously: until the process is dead (gone, or a zombie) it
    // still counts as running.
    eventually("the killed agent to die", || async {
        let stat = std::fs::read_to_string(format!("/proc/{old}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        matches!(state, None | Some("Z")).then_some(())
    })
    .await;
    let reconciled = backend.reconcile().await.unwrap();
    assert_eq!(reconciled.restarted, 1, "{reconciled:?}");
    assert_ne!(backend.agent_pid(workspace), Some(old.as_raw()));
}

#[tokio::test]
async fn an_agent_killed_and_restarted_by_its_workspace_serves_the_next_call() {
    // A dial long enough for any restart: the dial follows the agent to its new address.
    let mut config = config();
    config.resolver.dial_timeout = Duration::from_secs(20);
    let (run, engine, chat, ready) = warm_workspace_with(config).await;
    let workspace = ready.workspace_id.unwrap();
    // The agent dies with the chat's connection to it open, and its workspace starts it again.
    restart_agent(&run.h.backend(), workspace).await;

    // The restarted agent listens on a new port, which it reports once it runs; the next
    // call's dial may start before that and follows the agent there: the call succeeds.
    let again = serde_json::json!({"command": "echo after-restart"});
    run.emulator.push(call("c3", "execute", again));
    run.emulator.push(after(reply("back"), "after-restart"));
    run.send(chat, "run it again", BusyBehavior::Queue).await;
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    let history = run.history(chat).await;
    let (_, result, is_error) = results_of(&history[history.len() - 2]).remove(0);
    assert!(
        !is_error && result["output"] == "after-restart\n",
        "{result}"
    );
    assert_eq!(text_of(history.last().unwrap()), "back");
    engine.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn an_agent_restarted_mid_turn_serves_the_turns_next_call() {
    // The model's second step is held back 3 s (well within the silence timeout), long enough
    // to restart the agent between the turn's two calls.
    let mut config = config();
    config.stream_silence_timeout = SilenceTimeout::new(Duration::from_secs(10)).unwrap();
    let (run, engine, chat, ready) = warm_workspace_with(config).await;
    let workspace = ready.workspace_id.unwrap();
    let backend = run.h.backend();
    let execute = |id: &str, word: &str| {
        call(
            id,
            "execute",
            serde_json::json!({ "command": format!("echo {word}") }),
        )
    };
    run.emulator.push(execute("c3", "one"));
    run.emulator.push(after(execute("c4", "two"), "one").fault(
        FaultPoint::AfterEvents(0),
        FaultKind::Stall(Duration::from_secs(3)),
    ));
    run.emulator.push(after(reply("both"), "two"));
    let moved_from = run.h.agent(workspace).await.address;
    run.send(chat, "one, then two", BusyBehavior::Queue).await;

    // Once the first call is answered, the agent dies with the turn's cached connection to it
    // open; its workspace starts it again and it reports its new port.
    eventually("the first call's result", || async {
        let history = run.history(chat).await;
        history
            .iter()
            .flat_map(results_of)
            .any(|(id, ..)| id == "c3")
            .then_some(())
    })
    .await;
    restart_agent(&backend, workspace).await;
    eventually("the agent's new address", || async {
        let agent = run.h.agent(workspace).await;
        (agent.address != moved_from).then_some(())
    })
    .await;

    // The second call sees the agent moved and dials it there.
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    let history = run.history(chat).await;
    let (_, result, is_error) = results_of(&history[history.len() - 2]).remove(0);
    assert!(!is_error && result["output"] == "two\n", "{result}");
    assert_eq!(text_of(history.last().unwrap()), "both");
    engine.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn a_task_that_makes_no_progress_is_started_again_by_the_idle_watchdog() {
    // The first stream stalls after one part; with the silence guard off only the watchdog
    // can end it.
    let stalled = reply("never finished").fault(
        FaultPoint::AfterEvents(1),
        FaultKind::Stall(Duration::from_secs(600)),
    );
    let run = Run::new(
        Harness::bare().await,
        vec![stalled, reply("after the restart")],
    )
    .await;
    let mut config = config();
    config.stream_silence_timeout = SilenceTimeout::new(Duration::ZERO).unwrap();
    config.task_idle_watchdog = Duration::from_secs(1);
    let engine = run.engine_with(config).await;
    let chat = run.chat("hello").await;
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    let history = run.history(chat).await;
    assert_eq!(text_of(history.last().unwrap()), "after the restart");
    assert_eq!(run.emulator.requests().len(), 2);
    engine.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn a_tool_outside_the_turns_set_and_an_unknown_tool_get_their_error_texts() {
    let run = Run::new(
        Harness::bare().await,
        vec![
            Turn::with(vec![
                ScriptPart::tool_call("c1", "execute", r#"{"command":"true"}"#),
                ScriptPart::tool_call("c2", "launch_rockets", "{}"),
            ]),
            after(reply("understood"), "not found"),
        ],
    )
    .await;
    // No agents can be dialled and nothing can be built: only the template tools are offered.
    let deps = EngineDeps {
        store: run.store.clone(),
        pubsub: run.h.pubsub.clone(),
        builds: None,
        connector: None,
        dialer: None,
    };
    let engine = Engine::start(deps, config()).await;
    let chat = run.chat("run true").await;
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    let history = run.history(chat).await;
    let results = results_of(&history[2]);
    assert_eq!(
        results,
        [
            (
                "c1".to_owned(),
                Value::from("Tool not active in this turn: execute"),
                true
            ),
            (
                "c2".to_owned(),
                Value::from("Tool not found: launch_rockets"),
                true
            ),
        ]
    );
    let offered: Vec<String> = run.emulator.requests()[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(offered, ["list_templates", "read_template"]);
    engine.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn a_turn_its_steps_its_model_calls_and_its_tool_calls_have_spans_with_outcomes() {
    // The test's runtime has one thread: the engine's spans are logged on it, or on the embedded
    // store's connection threads, where a span closes when the store drops it last.
    let captured = chatd_e2e::logs::Capture::start();
    let run = Run::new(
        Harness::bare().await,
        vec![
            call("c1", "list_templates", serde_json::json!({})),
            after(reply("none yet"), "templates"),
        ],
    )
    .await;
    // The default silence guard: a 1 s one could time the first call out on a loaded machine.
    let engine = run
        .engine_with(EngineConfig {
            stream_silence_timeout: SilenceTimeout::default(),
            ..config()
        })
        .await;
    let chat = run.chat("which templates?").await;
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    let text = || captured.text();
    let closed = |text: &str, name: &str, fields: &[&str]| {
        text.lines().any(|line| {
            line.contains(&format!("{name}{{"))
                && line.contains("close")
                && line.contains(&format!("chat_id={chat}"))
                && fields.iter().all(|f| line.contains(f))
        })
    };
    // A span closes when its last task lets go of it, a moment after the commit that ends it.
    let expected: [(&str, &[&str]); 5] = [
        ("chat_turn", &["outcome=\"waiting\""]),
        // Any attempt: a loaded machine may make the first call time out and go again.
        (
            "model_call",
            &["generation_attempt=", "outcome=\"committed\""],
        ),
        ("tool_step", &["calls=1", "outcome=\"committed\""]),
        (
            "tool_call",
            &["tool=list_templates", "call_id=c1", "outcome=\"ok\""],
        ),
        ("chat_task", &["task=Generation", "outcome=\"committed\""]),
    ];
    let deadline = tokio::time::Instant::now() + chatd_e2e::workspaces::PATIENCE;
    loop {
        let text = text();
        let missing: Vec<&str> = expected
            .iter()
            .filter(|(name, fields)| !closed(&text, name, fields))
            .map(|(name, _)| *name)
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans that did not close as expected: {missing:?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    engine.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn a_burst_of_chats_acquired_in_batches_by_two_replicas_runs_each_turn_once() {
    const CHATS: usize = 40;
    let logs = chatd_e2e::logs::Capture::start();
    let run = Run::new(
        Harness::bare().await,
        (0..CHATS).map(|_| reply("once")).collect(),
    )
    .await;
    let mut chats = Vec::with_capacity(CHATS);
    for i in 0..CHATS {
        chats.push(run.chat(&format!("chat {i}")).await);
    }
    // Both replicas see the whole burst at start-up and acquire it in batches of 10.
    let concurrent = EngineConfig {
        acquire_batch: 10,
        ..config()
    };
    let a = run.engine_with(concurrent.clone()).await;
    let b = run.engine_with(concurrent).await;
    for &chat in &chats {
        let done = run.settled(chat).await;
        assert_eq!(done.status, ChatStatus::Waiting, "{done:?}");
        assert_eq!(done.last_error, None);
        let history = run.history(chat).await;
        assert_eq!(roles(&history), [Role::User, Role::Assistant], "{chat}");
    }
    // One model call per chat: no chat was run by both replicas. Only this test's chats count:
    // the emulator's port may be one another test's engine still dials (a port freed and taken
    // again), and such a stray request is not this test's.
    let mut calls = std::collections::BTreeMap::<String, usize>::new();
    for request in run.emulator.requests() {
        if let Some(text) = request.last_user_text() {
            *calls.entry(text).or_default() += 1;
        }
    }
    for i in 0..CHATS {
        let text = format!("chat {i}");
        assert_eq!(
            calls.get(&text),
            Some(&1),
            "model calls for {text:?} (all: {calls:?})\n{}",
            logs.text()
        );
    }
    a.shutdown().await;
    b.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn a_stale_owner_is_fenced_out_after_a_takeover_and_leaves_no_trace() {
    let run = Run::new(
        Harness::bare().await,
        vec![
            slow_reply("from the stale owner", Duration::from_millis(150)),
            reply("from the new owner"),
        ],
    )
    .await;
    // Owner A renews its leases too rarely to notice it lost one before its stream ends.
    let a = run
        .engine_with(EngineConfig {
            heartbeat_interval: Duration::from_secs(600),
            ..config()
        })
        .await;
    let chat = run.chat("who answers?").await;
    parts_streamed(&run, &a, chat, 2).await;
    // A's lease lapses (as if its heartbeats had stopped); B takes the chat over.
    on_pool!(run.h.db.pool(), |pool| sqlx::query(
        "DELETE FROM chat_heartbeats WHERE chat_id = $1"
    )
    .bind(chat)
    .execute(pool)
    .await
    .unwrap()
    .rows_affected());
    let b = run.engine().await;
    // The finished turn and B's hand-back are two commits: wait for both, so the snapshot
    // compared below is the last one B writes.
    let done = run
        .wait(chat, "B's answer and hand-back", |c| {
            c.status == ChatStatus::Waiting && c.worker_id.is_none()
        })
        .await;
    assert_eq!(done.last_error, None);
    // A learns it lost the chat (B's acquisition is published) and stops its runner, cancelling
    // its stale task; whatever it still had in flight is fenced out.
    eventually("A to let go", || async {
        a.owned_chats().is_empty().then_some(())
    })
    .await;
    let history = run.history(chat).await;
    assert_eq!(roles(&history), [Role::User, Role::Assistant]);
    assert_eq!(text_of(&history[1]), "from the new owner");
    assert_eq!(run.read(chat).await.snapshot_version, done.snapshot_version);
    a.shutdown().await;
    b.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn a_crashed_owner_is_taken_over_and_a_replayed_execute_does_not_run_twice() {
    if skip_on_sqlite("the crashed owner is a replica with its own connections") {
        return;
    }
    let run = long_command_run(
        "echo run >> count && sleep 4 && echo finished-command",
        vec![after(reply("all done"), "finished-command")],
    )
    .await;

    // Owner A lives in its own runtime, with its own connections, so it can crash.
    let crashing = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let url = run.h.db.postgres().unwrap().url.clone();
    let (started, worker_a) = tokio::sync::oneshot::channel();
    crashing.spawn(async move {
        let pool = chatstore::postgres::connect(&url, &PoolConfig::default())
            .await
            .unwrap();
        let store = Arc::new(PgStore::new(pool.clone(), store_config()));
        let (pubsub, _listener) = PgPubsub::start(&pool).await.unwrap();
        let engine = Engine::start(
            deps(
                store,
                Arc::new(pubsub),
                chattool::conn::DEFAULT_AGENT_CALL_DEADLINE,
            ),
            config(),
        )
        .await;
        let _ = started.send(engine.worker_id());
        std::future::pending::<()>().await;
    });
    let worker_a = worker_a.await.unwrap();
    let chat = run.chat("count once").await;
    dispatched(&run, chat, "c2").await;
    assert_eq!(run.read(chat).await.worker_id, Some(worker_a));
    // The ledger says dispatched before the agent is called: crash only once the command runs
    // (its first act is to count), or the replay rightly finds nothing to attach to.
    let workspace = run.read(chat).await.workspace_id.unwrap();
    let count = run.h.home(workspace).join("count");
    eventually("the command to start", || async {
        count.exists().then_some(())
    })
    .await;
    // Crash: no abandon, no more heartbeats.
    crashing.shutdown_background();

    let b = run.engine().await;
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    let history = run.history(chat).await;
    assert_eq!(roles(&history), turn(2, true));
    let executed = &results_of(&history[4])[0];
    assert!(
        executed.1["output"]
            .as_str()
            .is_some_and(|o| o.contains("finished-command")),
        "{}",
        executed.1
    );
    // The command's own run time (it slept 4 s), not the new owner's short wait for it.
    let ran = executed.1["wall_duration_ms"].as_u64().unwrap();
    assert!(ran >= 4000, "wall_duration_ms {ran}");
    assert_eq!(text_of(&history[5]), "all done");
    assert_eq!(done.workspace_id, Some(workspace));
    let count = std::fs::read_to_string(count).unwrap();
    assert_eq!(count, "run\n", "the command ran exactly once");
    b.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn a_dead_agent_gets_the_dial_timeout_text_then_the_restart_text_and_recovers() {
    let h = Harness::start().await;
    let template = h.template("name = \"plain\"", Vec::new()).await;
    let execute = |id: &str| call(id, "execute", serde_json::json!({"command": "echo alive"}));
    let transient = "may still be reachable";
    let run = Run::new(
        h,
        vec![
            call(
                "c1",
                "create_workspace",
                serde_json::json!({"template_id": template.to_string()}),
            ),
            after(reply("ready"), "created"),
        ],
    )
    .await;
    let engine = run.engine().await;
    let chat = run.chat("make a workspace").await;
    let ready = run.settled(chat).await;
    assert_eq!(ready.status, ChatStatus::Waiting, "{:?}", ready.last_error);
    let workspace = ready.workspace_id.unwrap();

    // The agent dies.
    let pid = run.h.backend().agent_pid(workspace).unwrap();
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    // While it has been down for less than the threshold the model hears the transient text
    // and tries again; after the threshold, the stop-then-start text; it follows it.
    run.emulator.push(execute("c2"));
    for i in 3..12 {
        run.emulator
            .push(after(execute(&format!("c{i}")), transient));
    }
    run.emulator.push(after(
        call("s1", "stop_workspace", serde_json::json!({})),
        "To recover, call stop_workspace",
    ));
    run.emulator.push(after(
        call("s2", "start_workspace", serde_json::json!({})),
        "\"stopped\":true",
    ));
    run.emulator.push(after(execute("e1"), "\"started\":true"));
    run.emulator.push(after(reply("recovered"), "alive"));
    run.send(chat, "run it", BusyBehavior::Queue).await;
    let done = run
        .wait(chat, "the recovered answer", |c| {
            c.status != ChatStatus::Running
        })
        .await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    let history = run.history(chat).await;
    let results: Vec<(String, Value, bool)> = history.iter().flat_map(results_of).collect();
    let texts: Vec<String> = results
        .iter()
        .map(|(_, v, _)| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .collect();
    assert!(
        texts[1].contains(transient),
        "first call after the crash: {}",
        texts[1]
    );
    let restart = texts
        .iter()
        .position(|t| t.contains("To recover, call stop_workspace"))
        .expect("the restart text");
    assert!(texts[1..restart].iter().all(|t| t.contains(transient)));
    assert!(
        texts[restart].starts_with("workspace agent has been disconnected for at least 4 seconds"),
        "{}",
        texts[restart]
    );
    let last = results.last().unwrap();
    assert_eq!(last.0, "e1");
    assert_eq!(last.1["output"], "alive\n", "{}", last.1);
    assert_eq!(text_of(history.last().unwrap()), "recovered");
    engine.shutdown().await;
    run.finish().await;
}

/// A 503 that carries the provider's request id.
fn unavailable() -> Turn {
    reply("x").fault(
        FaultPoint::BeforeHeaders,
        FaultKind::Status {
            status: 503,
            headers: vec![("x-request-id".into(), "req_503".into())],
            body: "upstream unavailable".into(),
        },
    )
}

#[tokio::test]
async fn retries_stop_at_the_attempt_cap_with_an_exhausted_error() {
    let run = Run::new(
        Harness::bare().await,
        vec![unavailable(), unavailable(), unavailable(), reply("never")],
    )
    .await;
    let mut config = config();
    config.retry.max_attempts = 3;
    config.retry.initial_delay = Duration::from_millis(50);
    let engine = run.engine_with(config).await;
    let chat = run.chat("hello").await;
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Error);
    let error = done.last_error.unwrap();
    assert_eq!(error["retry_status"], "exhausted", "{error}");
    assert_eq!(error["attempts"], 3);
    assert_eq!(error["status_code"], 503);
    assert_eq!(error["provider_request_id"], "req_503", "{error}");
    assert_eq!(run.emulator.requests().len(), 3, "three calls, no more");
    engine.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn a_parked_turn_resumes_with_a_fresh_retry_window() {
    // A rate limit whose hint is above the inline ceiling parks the turn for 3 s; the budget
    // (2 s) is shorter than the park, so a window that kept its first start would give up on
    // the failure after it.
    let limited = reply("x").fault(
        FaultPoint::BeforeHeaders,
        FaultKind::Status {
            status: 429,
            headers: vec![("retry-after".into(), "3".into())],
            body: "slow down".into(),
        },
    );
    let run = Run::new(
        Harness::bare().await,
        vec![limited, unavailable(), reply("made it")],
    )
    .await;
    let mut config = config();
    config.retry.budget = Duration::from_secs(2);
    config.retry.max_inline_retry_after = Duration::from_secs(1);
    config.retry.initial_delay = Duration::from_millis(100);
    let engine = run.engine_with(config).await;
    let chat = run.chat("hello").await;
    let parked = run
        .wait(chat, "the turn to park", |c| c.retry_state.is_some())
        .await;
    let state = parked.retry_state.unwrap();
    assert_eq!(state["parked"], true, "{state}");
    let window = parked.retry_window_started_at.unwrap();
    assert!(
        window > chrono::Utc::now() + chrono::Duration::seconds(1),
        "the window restarts when the turn resumes, not before: {window}"
    );
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    assert_eq!(text_of(run.history(chat).await.last().unwrap()), "made it");
    assert_eq!(run.emulator.requests().len(), 3);
    engine.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn a_graceful_shutdown_hands_the_chat_off_and_the_next_owner_honours_a_pending_retry() {
    let run = Run::new(
        Harness::bare().await,
        vec![unavailable(), reply("from the next owner")],
    )
    .await;
    let mut slow_retry = config();
    slow_retry.retry.initial_delay = Duration::from_secs(3);
    let a = run.engine_with(slow_retry.clone()).await;
    let chat = run.chat("hand off").await;
    let retrying = run
        .wait(chat, "a scheduled retry", |c| c.retry_state.is_some())
        .await;
    let state = retrying.retry_state.as_ref().unwrap();
    assert_eq!(state["provider_request_id"], "req_503", "{state}");
    a.shutdown().await;
    let handed = run.read(chat).await;
    assert_eq!(
        handed.status,
        ChatStatus::Running,
        "shutdown changes no status"
    );
    assert_eq!(handed.worker_id, None, "the chat is abandoned at once");
    assert_eq!(handed.last_error, None, "shutdown writes no error");
    assert_eq!(handed.retry_state, retrying.retry_state);

    let b = run.engine_with(slow_retry).await;
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    assert_eq!(text_of(&run.history(chat).await[1]), "from the next owner");
    // The new owner waited for the recorded retry time, not less.
    let requests = run.emulator.requests();
    assert_eq!(requests.len(), 2);
    let retrying_at = chatengine::payload::retrying_at(&retrying.retry_state.unwrap()).unwrap();
    // The answer is committed after the call, which may not start before the retry time (both
    // on the database clock); without the wait it would land right after the hand-off.
    let answered = run.history(chat).await[1].created_at;
    assert!(answered >= retrying_at, "{answered} < {retrying_at}");
    b.shutdown().await;
    run.finish().await;
}

/// A commit and what follows from it are one unit. The engine's pool reaches PostgreSQL through
/// a proxy that delays every reply while its LISTEN connection is direct, so each commit's
/// notification arrives before the reply to its `COMMIT`: the runner sees the turn finished and
/// A pool on the test's PostgreSQL server through a proxy of its own, to delay or cut it.
async fn behind_a_proxy(run: &Run) -> (Proxy, sqlx::PgPool) {
    let direct =
        sqlx::postgres::PgConnectOptions::from_str(&run.h.db.postgres().unwrap().url).unwrap();
    let upstream = format!("{}:{}", direct.get_host(), direct.get_port())
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let proxy = Proxy::start(upstream).await.unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_with(direct.host("127.0.0.1").port(proxy.addr().port()))
        .await
        .unwrap();
    (proxy, pool)
}

/// An engine whose database connections (pool and `LISTEN`) go through `proxy`'s upstream.
async fn engine_behind(run: &Run) -> (Proxy, Engine) {
    let (proxy, pool) = behind_a_proxy(run).await;
    let store: Arc<dyn Database> = Arc::new(PgStore::new(pool.clone(), store_config()));
    // The listener task runs on after its handle is dropped (dropping detaches it).
    let (pubsub, _) = PgPubsub::start(&pool).await.unwrap();
    let deadline = chattool::conn::DEFAULT_AGENT_CALL_DEADLINE;
    let engine = Engine::start(deps(store, Arc::new(pubsub), deadline), config()).await;
    (proxy, engine)
}

/// Owner A is cut off from the database (its pool and `LISTEN` connection; the provider and
/// the agent stay reachable) in the middle of a command, for longer than its lease. With
/// `everyone`, so is the other replica B, until the partition ends; otherwise B reaches the
/// database directly and takes the chat over while A is cut off. Either way each command runs
/// once, the turn completes, and A, once it reaches the database again, writes nothing and lets
/// the chat go.
async fn cut_off_from_the_database(everyone: bool) {
    let second = serde_json::json!({"command": "echo second >> count2 && echo second-done"});
    let run = long_command_run(
        "echo run >> count && sleep 4 && echo finished-command",
        vec![
            after(call("c3", "execute", second), "finished-command"),
            after(reply("all done"), "second-done"),
        ],
    )
    .await;
    let (proxy_a, a) = engine_behind(&run).await;
    let chat = run.chat("count once").await;
    dispatched(&run, chat, "c2").await;
    assert_eq!(run.read(chat).await.worker_id, Some(a.worker_id()));
    let workspace = run.read(chat).await.workspace_id.unwrap();
    let home = run.h.home(workspace);
    eventually("the command to start", || async {
        home.join("count").exists().then_some(())
    })
    .await;

    let (b, proxy_b) = if everyone {
        let (proxy, b) = engine_behind(&run).await;
        (b, Some(proxy))
    } else {
        (run.engine().await, None)
    };
    proxy_a.set_mode(Mode::Blackhole);
    if let Some(proxy_b) = &proxy_b {
        proxy_b.set_mode(Mode::Blackhole);
        // Nobody reaches the database for longer than the lease (and the command).
        tokio::time::sleep(config().lease_stale_after * 3).await;
        proxy_b.end_partition();
    }
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    let history = run.history(chat).await;
    let roles_now = roles(&history);
    assert_eq!(roles_now, turn(3, true));
    assert!(
        results_of(&history[4])[0].1["output"]
            .as_str()
            .is_some_and(|o| o.contains("finished-command")),
        "{:?}",
        results_of(&history[4])
    );
    assert_eq!(text_of(&history[7]), "all done");

    // A's partition ends: its stalled statements fail, its late writes are fenced out and its
    // runner stops, and nothing it held back runs.
    proxy_a.end_partition();
    eventually("A to let go of the chat", || async {
        a.owned_chats().is_empty().then_some(())
    })
    .await;
    assert_eq!(
        roles(&run.history(chat).await),
        roles_now,
        "A wrote nothing"
    );
    let read = |name: &str| std::fs::read_to_string(home.join(name)).unwrap();
    assert_eq!(read("count"), "run\n", "the first command ran once");
    assert_eq!(read("count2"), "second\n", "the second command ran once");
    a.shutdown().await;
    b.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn a_replica_cut_off_from_the_database_lets_the_next_owner_run_each_call_once() {
    if skip_on_sqlite("a replica is cut off from a shared database server") {
        return;
    }
    cut_off_from_the_database(false).await;
}

#[tokio::test]
async fn every_replica_cut_off_from_the_database_for_longer_than_the_lease_runs_each_call_once() {
    if skip_on_sqlite("replicas are cut off from a shared database server") {
        return;
    }
    cut_off_from_the_database(true).await;
}

/// cancels the task still waiting for that reply. The turn must still be counted, the retry
/// that came before it too, and the chat handed back.
#[tokio::test]
async fn a_commit_whose_notification_outruns_its_reply_keeps_its_side_effects() {
    if skip_on_sqlite("the delay is a proxy in front of the PostgreSQL server") {
        return;
    }
    // The counters below are process-wide: other tests' engines must not add to them.
    let name =
        "suite::engine::a_commit_whose_notification_outruns_its_reply_keeps_its_side_effects";
    if !chatd_e2e::in_own_process(name).await {
        return;
    }
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let overloaded = reply("never sent").fault(
        FaultPoint::BeforeHeaders,
        FaultKind::Status {
            status: 529,
            headers: Vec::new(),
            body: r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#.into(),
        },
    );
    let run = Run::new(Harness::bare().await, vec![overloaded, reply("counted")]).await;
    let (proxy, delayed) = behind_a_proxy(&run).await;
    proxy.set_reply_delay(Duration::from_millis(50));
    // Every statement takes a round trip of 50 ms or more: leases of the default length.
    let store: Arc<dyn Database> = Arc::new(PgStore::new(delayed.clone(), StoreConfig::default()));
    let config = EngineConfig {
        lease_stale_after: StoreConfig::default().lease_stale_after,
        heartbeat_interval: Duration::from_secs(3),
        ..config()
    };
    let engine = Engine::start(
        deps(
            store,
            run.h.pubsub.clone(),
            chattool::conn::DEFAULT_AGENT_CALL_DEADLINE,
        ),
        config,
    )
    .await;

    let chat = run.chat("count me").await;
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    eventually("the turn and its retry to be counted", || async {
        let text = metrics.render();
        let value = |series: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let turns = value("chatd_turns_total{outcome=\"completed\"}");
        let retries = value("chatd_retries_total{kind=\"overloaded\",provider=\"anthropic\"}");
        (turns == Some(1.0) && retries == Some(1.0)).then_some(())
    })
    .await;
    eventually("the chat to be handed back", || async {
        let chat = run.read(chat).await;
        (chat.worker_id.is_none() && engine.owned_chats().is_empty()).then_some(())
    })
    .await;
    engine.shutdown().await;
    delayed.close().await;
    run.finish().await;
}

/// An OpenAI-compatible server may give the same call id every turn. The second turn's call is
/// a new call: it runs, and never gets the first turn's recorded result.
#[tokio::test]
async fn a_call_id_reused_in_a_later_turn_runs_anew() {
    let h = Harness::start().await;
    let template = h.template("name = \"plain\"", Vec::new()).await;
    let count = serde_json::json!({"command": "echo run >> count && echo counted"});
    let run = Run::new(
        h,
        vec![
            call(
                "w",
                "create_workspace",
                serde_json::json!({"template_id": template.to_string()}),
            )
            .when(Match::LastUserTextContains("first".into())),
            after(call("c1", "execute", count.clone()), "created"),
            after(reply("done one"), "counted"),
            call("c1", "execute", count).when(Match::LastUserTextContains("second".into())),
            after(reply("done two"), "counted"),
        ],
    )
    .await;
    let engine = run.engine().await;
    let chat = run.chat("first").await;
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    run.send(chat, "second", BusyBehavior::Queue).await;
    let done = run
        .wait(chat, "the second answer", |c| {
            c.status == ChatStatus::Waiting && c.history_version > done.history_version
        })
        .await;
    assert_eq!(done.last_error, None);
    let history = run.history(chat).await;
    assert_eq!(text_of(history.last().unwrap()), "done two");
    let workspace = done.workspace_id.unwrap();
    let count = std::fs::read_to_string(run.h.home(workspace).join("count")).unwrap();
    assert_eq!(count, "run\nrun\n", "the second turn's call ran too");
    engine.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn a_reply_over_the_message_limit_ends_the_turn_in_error_instead_of_wedging_the_chat() {
    // A tool call whose arguments alone are over the store's 1 MiB message limit.
    // Streamed in deltas of 16 KiB, as providers stream arguments.
    let big = serde_json::json!({"path": "big.txt", "content": "x".repeat(1 << 20)});
    let reply = Turn::with(vec![ScriptPart::ToolCall {
        id: "c1".into(),
        name: "write_file".into(),
        args: big.to_string(),
        chunk: 16 << 10,
    }]);
    let run = Run::new(Harness::bare().await, vec![reply]).await;
    let engine = run.engine().await;
    let chat = run.chat("write a big file").await;
    let done = run.settled(chat).await;
    assert_eq!(done.status, ChatStatus::Error);
    let error = done.last_error.unwrap();
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("chatd could not store this turn: message content is")
            && message.contains("the limit is 1048576 bytes"),
        "{error}"
    );
    assert_eq!(
        roles(&run.history(chat).await),
        [Role::User],
        "nothing half-stored"
    );
    engine.shutdown().await;
    run.finish().await;
}
