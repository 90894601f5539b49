//! The chat API of a real `chatd serve` process: a turn driven through gRPC, authorization
//! (another user's chat does not exist for them), and bad input answered with the right status.

use chatstore::testing::{Fixtures as _, ModelFixtures as _};
use std::time::Duration;

use chatd_e2e::Daemon;
use chatd_e2e::on_pool;
use chatd_e2e::test_db::TestDb;
use chatd_e2e::workspaces::eventually;
use chatproto::chatd::v1 as pb;
use chatproto::chatd::v1::chat_service_client::ChatServiceClient;
use chattest::emulator::{Emulator, ScriptPart, Turn};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

/// A daemon over the test's database (no provisioner), and its address.
pub(super) async fn daemon(h: &mut TestDb) -> Daemon {
    daemon_with(h, &[]).await
}

/// A daemon over the test's database (no provisioner) with extra flags.
pub(super) async fn daemon_with(h: &mut TestDb, extra: &[&str]) -> Daemon {
    let mut args = h.serve_args("127.0.0.1:0").await;
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(&args, &[]).await.unwrap()
}

/// A chat client sending `token`.
#[derive(Clone)]
pub(super) struct Client {
    pub(super) inner: ChatServiceClient<Channel>,
    token: String,
}

impl Client {
    pub(super) async fn new(daemon: &Daemon, token: &str) -> Self {
        Self {
            inner: ChatServiceClient::new(super::serve::channel(daemon).await),
            token: token.to_owned(),
        }
    }

    /// A client over `channel`.
    pub(super) fn over(channel: Channel, token: &str) -> Self {
        Self {
            inner: ChatServiceClient::new(channel),
            token: token.to_owned(),
        }
    }

    /// A client of the daemon at `url` (e.g. one in another network namespace, or `https://`
    /// checked against `tls`).
    pub(super) async fn at(url: &str, token: &str, tls: Option<&chattls::ClientTls>) -> Self {
        let channel = chatd_e2e::connect(url, tls)
            .await
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        Self {
            inner: ChatServiceClient::new(channel),
            token: token.to_owned(),
        }
    }

    pub(super) fn req<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let value = MetadataValue::try_from(format!("Bearer {}", self.token)).unwrap();
        request.metadata_mut().insert("authorization", value);
        request
    }

    pub(super) async fn create(&mut self, text: &str) -> Result<pb::Chat, tonic::Status> {
        let request = self.req(pb::CreateChatRequest {
            content: vec![input(text)],
            ..Default::default()
        });
        self.inner
            .create_chat(request)
            .await
            .map(|r| r.into_inner())
    }

    pub(super) async fn get(&mut self, chat_id: &str) -> Result<pb::Chat, tonic::Status> {
        let request = self.req(pb::GetChatRequest {
            chat_id: chat_id.to_owned(),
        });
        self.inner.get_chat(request).await.map(|r| r.into_inner())
    }

    pub(super) async fn send(
        &mut self,
        chat_id: &str,
        text: &str,
    ) -> Result<pb::SendMessageResponse, tonic::Status> {
        let request = self.req(pb::SendMessageRequest {
            chat_id: chat_id.to_owned(),
            content: vec![input(text)],
            ..Default::default()
        });
        self.inner
            .send_message(request)
            .await
            .map(|r| r.into_inner())
    }

    pub(super) async fn messages(
        &mut self,
        chat_id: &str,
    ) -> Result<pb::ListMessagesResponse, tonic::Status> {
        let request = self.req(pb::ListMessagesRequest {
            chat_id: chat_id.to_owned(),
            ..Default::default()
        });
        self.inner
            .list_messages(request)
            .await
            .map(|r| r.into_inner())
    }

    async fn interrupt(&mut self, chat_id: &str) -> Result<pb::Chat, tonic::Status> {
        let request = self.req(pb::InterruptChatRequest {
            chat_id: chat_id.to_owned(),
        });
        self.inner
            .interrupt_chat(request)
            .await
            .map(|r| r.into_inner())
    }

    async fn archive(&mut self, chat_id: &str, archived: bool) -> Result<pb::Chat, tonic::Status> {
        let request = self.req(pb::UpdateChatRequest {
            chat_id: chat_id.to_owned(),
            archived: Some(archived),
            ..Default::default()
        });
        self.inner
            .update_chat(request)
            .await
            .map(|r| r.into_inner())
    }

    async fn list(&mut self) -> Result<pb::ListChatsResponse, tonic::Status> {
        let request = self.req(pb::ListChatsRequest::default());
        self.inner.list_chats(request).await.map(|r| r.into_inner())
    }

    /// Waits until the chat has `status`.
    pub(super) async fn until(&mut self, chat_id: &str, status: pb::ChatStatus) -> pb::Chat {
        eventually(&format!("chat {chat_id} to be {status:?}"), || {
            let mut me = Client {
                inner: self.inner.clone(),
                token: self.token.clone(),
            };
            async move {
                let chat = me.get(chat_id).await.unwrap();
                (chat.status() == status).then_some(chat)
            }
        })
        .await
    }
}

pub(super) fn input(text: &str) -> pb::ChatInputPart {
    pb::ChatInputPart {
        part: Some(pb::chat_input_part::Part::Text(pb::TextPart {
            text: text.to_owned(),
        })),
    }
}

fn texts(messages: &pb::ListMessagesResponse) -> Vec<(pb::ChatMessageRole, String)> {
    messages
        .messages
        .iter()
        .map(|m| {
            let text = m
                .content
                .iter()
                .filter_map(|p| match &p.part {
                    Some(pb::chat_message_part::Part::Text(t)) => Some(t.text.as_str()),
                    _ => None,
                })
                .collect::<String>();
            (m.role(), text)
        })
        .collect()
}

/// A provider row pointing at the emulator and the organization's default model on it.
pub(super) async fn model(h: &TestDb, emulator: &Emulator) {
    h.store
        .fixture_model(
            h.organization,
            "anthropic",
            &emulator.base_url(),
            "claude-test",
            200_000,
            true,
        )
        .await
        .unwrap();
}

pub(super) fn reply(text: &str) -> Turn {
    Turn::with(vec![ScriptPart::Text {
        text: text.to_owned(),
        chunk: 4,
    }])
}

pub(super) fn assert_status(
    result: Result<impl std::fmt::Debug, tonic::Status>,
    code: Code,
    says: &str,
) {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(says),
        "{:?} does not say {says:?}",
        status.message()
    );
}

#[tokio::test]
async fn a_chat_runs_through_the_api_and_lists_and_archives() {
    let mut h = TestDb::create().await;
    let emulator = Emulator::start(vec![
        reply("Hello from the model."),
        reply("Second answer."),
        reply("SUMMARY: the user said hello twice."),
    ])
    .await
    .unwrap();
    model(&h, &emulator).await;
    let key = h.store.fixture_token(h.user, "test", None).await.unwrap();
    let daemon = daemon(&mut h).await;
    let mut client = Client::new(&daemon, &key.token).await;

    let chat = client.create("say hello").await.unwrap();
    assert_eq!(chat.title, "New Chat");
    assert_eq!(chat.organization_id, h.organization.to_string());
    client.until(&chat.id, pb::ChatStatus::Waiting).await;
    let history = client.messages(&chat.id).await.unwrap();
    assert_eq!(
        texts(&history),
        [
            (pb::ChatMessageRole::User, "say hello".to_owned()),
            (
                pb::ChatMessageRole::Assistant,
                "Hello from the model.".to_owned()
            ),
        ],
        "{}",
        daemon.log()
    );
    assert!(history.messages[1].usage.is_some());

    // A second message runs a second turn.
    let sent = client.send(&chat.id, "again").await.unwrap();
    assert!(!sent.queued);
    assert_eq!(
        sent.message.as_ref().map(|m| m.role()),
        Some(pb::ChatMessageRole::User)
    );
    client.until(&chat.id, pb::ChatStatus::Waiting).await;
    let history = client.messages(&chat.id).await.unwrap();
    assert_eq!(history.messages.len(), 4);
    assert_eq!(texts(&history)[3].1, "Second answer.");

    // Compaction: the model summarises the history; the user sees that it happened.
    let compact = |client: &mut Client| {
        let request = client.req(pb::CompactChatRequest {
            chat_id: chat.id.clone(),
        });
        let mut inner = client.inner.clone();
        async move { inner.compact_chat(request).await.map(|r| r.into_inner()) }
    };
    assert_eq!(
        compact(&mut client).await.unwrap().status(),
        pb::ChatStatus::Running
    );
    client.until(&chat.id, pb::ChatStatus::Waiting).await;
    let history = client.messages(&chat.id).await.unwrap();
    assert_eq!(history.messages.len(), 6, "{history:?}");
    let summarized = history.messages[5].content.iter().any(|p| {
        matches!(&p.part, Some(pb::chat_message_part::Part::ToolResult(r)) if r.tool_name == "chat_summarized")
    });
    assert!(summarized, "{:?}", history.messages[5]);
    assert_status(
        compact(&mut client).await,
        Code::FailedPrecondition,
        "nothing to compact",
    );

    // Listing, archiving, unarchiving.
    let listed = client.list().await.unwrap();
    assert_eq!(listed.chats.len(), 1);
    assert!(listed.next_page_token.is_empty());
    let archived = client.archive(&chat.id, true).await.unwrap();
    assert!(archived.archived);
    assert!(client.list().await.unwrap().chats.is_empty());
    assert_status(
        client.send(&chat.id, "hello?").await,
        Code::FailedPrecondition,
        "archived",
    );
    assert!(!client.archive(&chat.id, false).await.unwrap().archived);
    assert_eq!(emulator.requests().len(), 3);
    h.finish().await;
}

#[tokio::test]
async fn another_users_chat_does_not_exist_for_them_and_bad_tokens_are_refused() {
    let mut h = TestDb::create().await;
    let emulator = Emulator::start(vec![reply("Hi.")]).await.unwrap();
    model(&h, &emulator).await;
    let ada = h.store.fixture_token(h.user, "ada", None).await.unwrap();
    let bob_id = h
        .store
        .fixture_user("bob", "member", h.organization)
        .await
        .unwrap();
    let bob = h.store.fixture_token(bob_id, "bob", None).await.unwrap();
    let daemon = daemon(&mut h).await;
    let mut ada = Client::new(&daemon, &ada.token).await;
    let mut bob = Client::new(&daemon, &bob.token).await;

    let chat = ada.create("mine").await.unwrap();
    ada.until(&chat.id, pb::ChatStatus::Waiting).await;
    let hidden = format!("chat {} not found", chat.id);
    assert_status(bob.get(&chat.id).await, Code::NotFound, &hidden);
    assert_status(bob.messages(&chat.id).await, Code::NotFound, &hidden);
    assert_status(bob.send(&chat.id, "hi").await, Code::NotFound, &hidden);
    assert_status(bob.interrupt(&chat.id).await, Code::NotFound, &hidden);
    assert_status(bob.archive(&chat.id, true).await, Code::NotFound, &hidden);
    assert_status(bob.stream(&chat.id, None).await, Code::NotFound, &hidden);
    assert!(bob.list().await.unwrap().chats.is_empty());
    // An id that exists answers exactly like one that does not.
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_status(
        bob.get(&unknown).await,
        Code::NotFound,
        &format!("chat {unknown} not found"),
    );

    // Bad, missing and agent tokens.
    let mut stranger = Client::new(&daemon, "chatd_nope_nope").await;
    assert_status(stranger.list().await, Code::Unauthenticated, "unknown");
    assert_status(
        stranger.stream(&chat.id, None).await,
        Code::Unauthenticated,
        "unknown",
    );
    let mut anonymous = ChatServiceClient::new(super::serve::channel(&daemon).await);
    let missing = anonymous
        .list_chats(pb::ListChatsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(
        missing.message().contains("authorization: Bearer"),
        "{missing:?}"
    );
    let mut agent = Client::new(&daemon, &format!("agent-{}", uuid::Uuid::new_v4())).await;
    assert_status(
        agent.get(&chat.id).await,
        Code::Unauthenticated,
        "API token",
    );

    // Ada still sees her chat, untouched.
    let history = ada.messages(&chat.id).await.unwrap();
    assert_eq!(history.messages.len(), 2);
    h.finish().await;
}

#[tokio::test]
async fn bad_input_gets_the_right_status_and_the_daemon_keeps_serving() {
    let mut h = TestDb::create().await;
    // The first turn streams slowly, so the chat stays busy while the queue fills.
    let mut slow = reply("slow reply that takes a while");
    slow.pacing = Duration::from_millis(400);
    let emulator = Emulator::start(vec![slow]).await.unwrap();
    model(&h, &emulator).await;
    let key = h.store.fixture_token(h.user, "test", None).await.unwrap();
    let daemon = daemon(&mut h).await;
    let mut client = Client::new(&daemon, &key.token).await;

    assert_status(
        client.get("not-a-uuid").await,
        Code::InvalidArgument,
        "\"not-a-uuid\" is not a UUID",
    );
    assert_status(
        client.get("").await,
        Code::InvalidArgument,
        "chat_id is required",
    );
    assert_status(client.create("   ").await, Code::InvalidArgument, "empty");
    let no_parts = client.req(pb::CreateChatRequest::default());
    assert_status(
        client.inner.create_chat(no_parts).await,
        Code::InvalidArgument,
        "empty",
    );
    let unknown_model = client.req(pb::CreateChatRequest {
        content: vec![input("hi")],
        model_config_id: Some(uuid::Uuid::new_v4().to_string()),
        ..Default::default()
    });
    assert_status(
        client.inner.create_chat(unknown_model).await,
        Code::NotFound,
        "model configuration",
    );
    let other_org = client.req(pb::CreateChatRequest {
        content: vec![input("hi")],
        organization_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    });
    assert_status(
        client.inner.create_chat(other_org).await,
        Code::NotFound,
        "organization",
    );

    let chat = client.create("start").await.unwrap();
    // Over the store's 1 MiB cap, under the transport's limit: the store's precise refusal.
    let big = "x".repeat(1024 * 1024 + 1);
    assert_status(
        client.send(&chat.id, &big).await,
        Code::InvalidArgument,
        "the limit is 1048576 bytes",
    );
    // Over the transport's limit: RESOURCE_EXHAUSTED, as gRPC's conventions have it.
    let huge = "x".repeat(3 * 1024 * 1024);
    assert_status(
        client.send(&chat.id, &huge).await,
        Code::ResourceExhausted,
        "the limit is: 2097152 bytes",
    );
    // A forbidden transition: archiving a busy chat.
    assert_status(
        client.archive(&chat.id, true).await,
        Code::FailedPrecondition,
        "running",
    );
    // The queue holds 20 messages; the 21st is refused.
    for n in 0..20 {
        let sent = client.send(&chat.id, &format!("queued {n}")).await.unwrap();
        assert!(sent.queued, "message {n} was not queued");
        assert!(sent.queued_message.is_some());
    }
    assert_status(
        client.send(&chat.id, "one too many").await,
        Code::ResourceExhausted,
        "queue is full",
    );
    let listed = client.messages(&chat.id).await.unwrap();
    assert_eq!(listed.queued_messages.len(), 20);
    let status = client.interrupt(&chat.id).await.unwrap().status();
    assert!(
        matches!(
            status,
            pb::ChatStatus::Interrupting | pb::ChatStatus::Running
        ),
        "{status:?}"
    );
    assert_status(
        client
            .inner
            .compact_chat(client.req(pb::CompactChatRequest {
                chat_id: chat.id.clone(),
            }))
            .await,
        Code::FailedPrecondition,
        "nothing to compact",
    );
    assert_status(
        client.stream("not-a-uuid", None).await,
        Code::InvalidArgument,
        "not a UUID",
    );
    assert_status(
        client.stream(&chat.id, Some(-1)).await,
        Code::InvalidArgument,
        "negative",
    );

    // Still serving.
    assert_eq!(client.get(&chat.id).await.unwrap().id, chat.id);
    drop(emulator);
    h.finish().await;
}

#[tokio::test]
async fn the_first_start_creates_an_admin_and_an_environment_key_gives_it_a_model() {
    use std::os::unix::fs::PermissionsExt as _;

    let mut db = TestDb::empty().await;
    let database_url = db.database_url().await;
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &database_url,
    ];
    let daemon = Daemon::start(&args, &[]).await.unwrap();
    let path = daemon.data_dir().join("admin-token");
    let log = daemon.log();
    assert!(log.contains("created the first admin"), "{log}");
    assert!(log.contains(&path.display().to_string()), "{log}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let token = std::fs::read_to_string(&path).unwrap();

    // The token works at once: a chat in the default organization needs only a model.
    let mut admin = Client::new(&daemon, token.trim()).await;
    assert!(admin.list().await.unwrap().chats.is_empty());
    assert_status(
        admin.create("hi").await,
        Code::FailedPrecondition,
        "no usable model configuration",
    );
    // The refusal says how to get a model.
    let refusal = admin.create("hi").await.unwrap_err();
    assert!(
        refusal.message().contains("chatctl admin model create")
            && refusal.message().contains("ANTHROPIC_API_KEY"),
        "{refusal:?}"
    );
    daemon
        .stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .await
        .unwrap();

    // Later starts leave the users alone. A provider key in the environment, with nothing else
    // configuring that provider, seeds its default model with a reference to the variable.
    let emulator = Emulator::start(vec![reply("Hello from the environment's key.")])
        .await
        .unwrap();
    let base_url = emulator.base_url();
    let with_key = [&args[..], &["--anthropic-base-url", &base_url]].concat();
    let again = Daemon::start(&with_key, &[("ANTHROPIC_API_KEY", "sk-from-env")])
        .await
        .unwrap();
    assert!(!again.log().contains("created the first admin"));
    assert!(!again.data_dir().join("admin-token").exists());
    assert!(
        again
            .log()
            .contains("ANTHROPIC_API_KEY is set in chatd's environment"),
        "{}",
        again.log()
    );
    let mut admin = Client::new(&again, token.trim()).await;
    let chat = admin.create("hi").await.unwrap();
    admin.until(&chat.id, pb::ChatStatus::Waiting).await;
    let requests = emulator.requests();
    assert_eq!(requests.len(), 1, "{}", again.log());
    assert_eq!(requests[0].header("x-api-key"), Some("sk-from-env"));
    assert_eq!(requests[0].body["model"], "claude-sonnet-4-5");
    again
        .stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .await
        .unwrap();

    // What the two starts left: one user, and a reference to the key, never the key.
    db.reopen().await;
    let users: i64 = on_pool!(db.pool(), |pool| sqlx::query_scalar(
        "SELECT count(*) FROM users"
    )
    .fetch_one(pool)
    .await
    .unwrap());
    assert_eq!(users, 1);
    let stored: Vec<String> = on_pool!(db.pool(), |pool| sqlx::query_scalar(
        "SELECT api_key_ref FROM chat_providers"
    )
    .fetch_all(pool)
    .await
    .unwrap());
    assert_eq!(stored, ["env:ANTHROPIC_API_KEY"]);
    db.finish().await;
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_and_a_turns_lines_name_its_chat() {
    use chattest::emulator::{FaultKind, FaultPoint};
    let mut h = TestDb::create().await;
    // One overloaded answer first, so the turn logs its failed call inside its spans.
    let overloaded = reply("never sent").fault(
        FaultPoint::BeforeHeaders,
        FaultKind::Status {
            status: 529,
            headers: vec![("retry-after".into(), "0".into())],
            body: r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#.into(),
        },
    );
    let emulator = Emulator::start(vec![overloaded, reply("Logged.")])
        .await
        .unwrap();
    model(&h, &emulator).await;
    let key = h.store.fixture_token(h.user, "test", None).await.unwrap();
    let daemon = daemon_with(&mut h, &["--log-format", "json"]).await;
    let mut client = Client::new(&daemon, &key.token).await;
    let chat = client.create("log me").await.unwrap();
    eventually("the turn to end", || {
        let mut client = client.clone();
        let id = chat.id.clone();
        async move {
            let chat = client.get(&id).await.unwrap();
            (chat.status() == pb::ChatStatus::Waiting).then_some(())
        }
    })
    .await;
    let log = daemon.log();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    for event in &events {
        for field in ["timestamp", "level", "target"] {
            assert!(event[field].is_string(), "no {field}: {event}");
        }
    }
    let failed = events
        .iter()
        .find(|e| e["message"] == "model call failed")
        .unwrap_or_else(|| panic!("no failed call in {log}"));
    // The event's own fields, and the turn's span with the chat id.
    assert_eq!(failed["status_code"], 529, "{failed}");
    let spans = failed["spans"]
        .as_array()
        .unwrap_or_else(|| panic!("{failed}"));
    assert!(
        spans
            .iter()
            .any(|s| s["name"] == "chat_turn" && s["chat_id"] == chat.id.as_str()),
        "{failed}"
    );
    h.finish().await;
}

use opentelemetry_proto::tonic::collector::trace::v1 as otlp;
use opentelemetry_proto::tonic::common::v1::any_value::Value as OtlpValue;
use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;

/// Every span an OTLP collector was sent.
#[derive(Clone, Default)]
struct Collected(std::sync::Arc<std::sync::Mutex<Vec<OtlpSpan>>>);

#[tonic::async_trait]
impl otlp::trace_service_server::TraceService for Collected {
    async fn export(
        &self,
        request: tonic::Request<otlp::ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<otlp::ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        self.0.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(
            otlp::ExportTraceServiceResponse::default(),
        ))
    }
}

/// An OTLP/gRPC trace collector on loopback.
struct OtlpReceiver {
    url: String,
    spans: Collected,
}

impl OtlpReceiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let spans = Collected::default();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(otlp::trace_service_server::TraceServiceServer::new(
                    spans.clone(),
                ))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Self { url, spans }
    }

    /// The first span named `name` whose `chat_id` attribute is `chat_id`, once it arrived.
    async fn span(&self, name: &str, chat_id: &str) -> OtlpSpan {
        let wanted = OtlpValue::StringValue(chat_id.to_owned());
        eventually(&format!("a {name} span of chat {chat_id}"), || async {
            self.spans
                .0
                .lock()
                .unwrap()
                .iter()
                .find(|span| span.name == name && attribute(span, "chat_id") == Some(&wanted))
                .cloned()
        })
        .await
    }
}

fn attribute<'a>(span: &'a OtlpSpan, key: &str) -> Option<&'a OtlpValue> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

#[tokio::test]
async fn a_turns_spans_are_exported_over_otlp_with_their_chat_id() {
    let mut h = TestDb::create().await;
    let emulator = Emulator::start(vec![reply("Traced.")]).await.unwrap();
    model(&h, &emulator).await;
    let key = h.store.fixture_token(h.user, "test", None).await.unwrap();
    let receiver = OtlpReceiver::start().await;
    let mut args = h.serve_args("127.0.0.1:0").await;
    args.extend(["--otlp-endpoint".to_owned(), receiver.url.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Batches leave every 100 ms instead of every 5 s (the SDK's standard variable).
    let daemon = Daemon::start(&args, &[("OTEL_BSP_SCHEDULE_DELAY", "100")])
        .await
        .unwrap();
    let mut client = Client::new(&daemon, &key.token).await;
    let chat = client.create("trace me").await.unwrap();

    let turn = receiver.span("chat_turn", &chat.id).await;
    let call = receiver.span("model_call", &chat.id).await;
    assert_eq!(
        call.trace_id, turn.trace_id,
        "the model call is in the turn's trace"
    );
    assert!(attribute(&turn, "outcome").is_some(), "{turn:?}");
    assert!(attribute(&call, "outcome").is_some(), "{call:?}");
    h.finish().await;
}
