//! `StreamChat` of real `chatd serve` processes: the live reply and the committed state of a
//! chat as a client sees them, resuming with `after_id`, and the part relay
//! between two replicas on one database, including a replica killed mid-turn.

use chatstore::testing::{Fixtures as _, ModelFixtures as _};
use std::time::Duration;

use chatd_e2e::Daemon;
use chatd_e2e::test_db::{TestDb, skip_on_sqlite};
use chatd_e2e::workspaces::eventually;
use chatproto::chatd::v1 as pb;
use chattest::emulator::{Emulator, ScriptPart, Turn};
use nix::sys::signal::Signal;
use tonic::Streaming;

use super::chat_api::{Client, daemon, daemon_with, model, reply};

/// How long a test waits for the next stream response.
const PATIENCE: Duration = Duration::from_secs(30);

/// Timings short enough for a takeover within a test.
pub(super) const FAST: &[&str] = &[
    "--acquire-interval",
    "500ms",
    "--heartbeat-interval",
    "500ms",
    "--lease-stale-after",
    "2s",
    "--stream-poll-interval",
    "1s",
];

/// A reply streamed slowly: `chunks` text deltas of four characters, `pacing` apart.
pub(super) fn slow_reply(chunks: usize, pacing: Duration) -> (Turn, String) {
    let text: String = (0..chunks).map(|i| format!("w{i:02} ")).collect();
    let mut turn = Turn::with(vec![ScriptPart::Text {
        text: text.clone(),
        chunk: 4,
    }]);
    turn.pacing = pacing;
    (turn, text)
}

/// What a client knows from the events it applied, checked as it goes: parts of an episode
/// arrive with `seq` 1, 2, 3… after its `preview_reset`.
#[derive(Debug, Default)]
pub(super) struct View {
    events: Vec<pb::ChatStreamEvent>,
    /// Committed messages, by id.
    pub(super) messages: std::collections::BTreeMap<i64, pb::ChatMessage>,
    pub(super) status: Option<pb::ChatStatus>,
    /// Text of the live parts since the last `preview_reset`.
    pub(super) preview: String,
    /// Last `seq` seen in the current episode.
    seq: i64,
    /// Every preview text completed by a reset or a committed message.
    pub(super) parts_seen: usize,
}

impl View {
    pub(super) fn apply(&mut self, event: pb::ChatStreamEvent) {
        match event.r#type() {
            pb::ChatStreamEventType::Message => {
                let message = event.message.clone().unwrap();
                self.messages.insert(message.id, message);
            }
            pb::ChatStreamEventType::Status => self.status = Some(event.status()),
            pb::ChatStreamEventType::PreviewReset => {
                self.preview.clear();
                self.seq = 0;
            }
            pb::ChatStreamEventType::HistoryReset => self.messages.clear(),
            pb::ChatStreamEventType::MessagePart => {
                let part = event.message_part.clone().unwrap();
                assert_eq!(part.seq, self.seq + 1, "parts are contiguous: {part:?}");
                self.seq = part.seq;
                self.parts_seen += 1;
                if let Some(pb::chat_message_part::Part::Text(t)) = part.part.and_then(|p| p.part) {
                    self.preview.push_str(&t.text);
                }
            }
            _ => {}
        }
        self.events.push(event);
    }

    /// Applies responses until `done` holds.
    pub(super) async fn follow(
        &mut self,
        stream: &mut Streaming<pb::StreamChatResponse>,
        what: &str,
        done: impl Fn(&View) -> bool,
    ) {
        while !done(self) {
            let response = tokio::time::timeout(PATIENCE, stream.message())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; saw {:#?}", self.events))
                .unwrap_or_else(|s| panic!("stream failed waiting for {what}: {s:?}"))
                .unwrap_or_else(|| panic!("stream ended waiting for {what}"));
            for event in response.events {
                self.apply(event);
            }
        }
    }

    pub(super) fn assistant_texts(&self) -> Vec<String> {
        self.messages
            .values()
            .filter(|m| m.role() == pb::ChatMessageRole::Assistant)
            .map(text)
            .collect()
    }

    fn count(&self, kind: pb::ChatStreamEventType) -> usize {
        self.events.iter().filter(|e| e.r#type() == kind).count()
    }
}

fn text(message: &pb::ChatMessage) -> String {
    message
        .content
        .iter()
        .filter_map(|p| match &p.part {
            Some(pb::chat_message_part::Part::Text(t)) => Some(t.text.as_str()),
            _ => None,
        })
        .collect()
}

impl Client {
    pub(super) async fn stream(
        &mut self,
        chat_id: &str,
        after_id: Option<i64>,
    ) -> Result<Streaming<pb::StreamChatResponse>, tonic::Status> {
        let request = self.req(pb::StreamChatRequest {
            chat_id: chat_id.to_owned(),
            after_id,
        });
        self.inner
            .stream_chat(request)
            .await
            .map(|r| r.into_inner())
    }
}

#[tokio::test]
async fn a_client_sees_the_reply_live_then_committed_and_can_resume() {
    let mut h = TestDb::create().await;
    let (first, first_text) = slow_reply(12, Duration::from_millis(60));
    let emulator = Emulator::start(vec![first, reply("Second.")])
        .await
        .unwrap();
    model(&h, &emulator).await;
    let key = h.store.fixture_token(h.user, "test", None).await.unwrap();
    let daemon = daemon(&mut h).await;
    let mut client = Client::new(&daemon, &key.token).await;

    let chat = client.create("stream me").await.unwrap();
    let mut stream = client.stream(&chat.id, None).await.unwrap();
    let mut view = View::default();
    view.follow(&mut stream, "the first reply", |v| {
        v.status == Some(pb::ChatStatus::Waiting) && v.assistant_texts().len() == 1
    })
    .await;
    // The bootstrap state came first: the user's message and a status.
    let first_batch_kinds: Vec<_> = view.events.iter().take(2).map(|e| e.r#type()).collect();
    assert_eq!(
        first_batch_kinds,
        [
            pb::ChatStreamEventType::Message,
            pb::ChatStreamEventType::Status
        ],
        "{:#?}",
        view.events
    );
    assert_eq!(view.assistant_texts(), [first_text.as_str()]);
    // The whole reply streamed live before it was committed, part by part.
    assert!(
        view.parts_seen >= 12,
        "{} parts: {:#?}",
        view.parts_seen,
        view.events
    );
    let streamed: String = view
        .events
        .iter()
        .filter_map(|e| e.message_part.as_ref())
        .filter_map(|p| match p.part.as_ref()?.part.as_ref()? {
            pb::chat_message_part::Part::Text(t) => Some(t.text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(streamed, first_text);
    assert!(view.count(pb::ChatStreamEventType::PreviewReset) >= 1);

    // A second turn on the same stream.
    client.send(&chat.id, "again").await.unwrap();
    view.follow(&mut stream, "the second reply", |v| {
        v.status == Some(pb::ChatStatus::Waiting) && v.assistant_texts().len() == 2
    })
    .await;
    assert_eq!(view.assistant_texts()[1], "Second.");

    // Resuming after the last message: no message is sent again, the status is.
    let last = *view.messages.keys().last().unwrap();
    let mut resumed = client.stream(&chat.id, Some(last)).await.unwrap();
    let response = tokio::time::timeout(PATIENCE, resumed.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let kinds: Vec<_> = response.events.iter().map(|e| e.r#type()).collect();
    assert!(
        !kinds.contains(&pb::ChatStreamEventType::Message),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&pb::ChatStreamEventType::Status),
        "{kinds:?}"
    );
    // From the one before: exactly the last message.
    let mut resumed = client.stream(&chat.id, Some(last - 1)).await.unwrap();
    let response = resumed.message().await.unwrap().unwrap();
    let ids: Vec<i64> = response
        .events
        .iter()
        .filter_map(|e| e.message.as_ref().map(|m| m.id))
        .collect();
    assert_eq!(ids, [last]);
    h.finish().await;
}

/// Waits until a replica runs an attempt of the chat; that replica's worker id.
pub(super) async fn owner(h: &TestDb, chat_id: &str) -> uuid::Uuid {
    let id = uuid::Uuid::parse_str(chat_id).unwrap();
    eventually("the chat to have an owner", || async {
        let chat = h.store.chat(id).await.unwrap();
        chat.worker_id.filter(|_| chat.generation_attempt > 0)
    })
    .await
}

#[tokio::test]
async fn a_client_on_another_replica_sees_the_reply_and_the_takeover_after_a_crash() {
    if skip_on_sqlite("two replicas share one database") {
        return;
    }
    let mut h = TestDb::create().await;
    // The first attempt streams for a long time; the takeover's attempt answers at once.
    let (first, _) = slow_reply(200, Duration::from_millis(50));
    let emulator = Emulator::start(vec![first, reply("Recovered after the crash.")])
        .await
        .unwrap();
    model(&h, &emulator).await;
    let key = h.store.fixture_token(h.user, "test", None).await.unwrap();

    // Replica A runs the chat: it is alone when the chat is created.
    let a = daemon_with(&mut h, FAST).await;
    let mut through_a = Client::new(&a, &key.token).await;
    let chat = through_a.create("run on A").await.unwrap();
    let runner = owner(&h, &chat.id).await;

    // Replica B serves the client.
    let b: Daemon = daemon_with(&mut h, FAST).await;
    let mut through_b = Client::new(&b, &key.token).await;
    let mut stream = through_b.stream(&chat.id, None).await.unwrap();
    let mut view = View::default();
    view.follow(&mut stream, "live parts relayed from replica A", |v| {
        v.parts_seen >= 5
    })
    .await;
    assert_eq!(
        h.store
            .chat(uuid::Uuid::parse_str(&chat.id).unwrap())
            .await
            .unwrap()
            .worker_id,
        Some(runner),
        "A still runs the chat"
    );
    assert!(view.preview.starts_with("w00 w01 "), "{:?}", view.preview);

    // A dies mid-turn; B takes the chat over and the client, still on B, sees the turn end.
    a.stop(Signal::SIGKILL, Duration::from_secs(10))
        .await
        .unwrap();
    let resets_before = view.count(pb::ChatStreamEventType::PreviewReset);
    view.follow(&mut stream, "the turn to finish on replica B", |v| {
        v.status == Some(pb::ChatStatus::Waiting) && v.assistant_texts().len() == 1
    })
    .await;
    assert_eq!(view.assistant_texts(), ["Recovered after the crash."]);
    assert!(
        view.count(pb::ChatStreamEventType::PreviewReset) > resets_before,
        "the new attempt reset the preview"
    );
    let after = h
        .store
        .chat(uuid::Uuid::parse_str(&chat.id).unwrap())
        .await
        .unwrap();
    assert_ne!(after.worker_id, Some(runner));
    assert_eq!(emulator.requests().len(), 2, "{}", b.log());
    h.finish().await;
}

#[tokio::test]
async fn replicas_on_separate_hosts_relay_live_parts_and_take_over_after_a_crash() {
    use chatd_e2e::netns::Lab;
    use chattest::proxy::Proxy;
    if skip_on_sqlite("two replicas share one database") {
        return;
    }
    let lab = match Lab::create(2) {
        Ok(lab) => lab,
        Err(why) => {
            eprintln!("skipped: cannot make network namespaces here ({why})");
            return;
        }
    };
    let mut h = TestDb::create().await;
    let (first, _) = slow_reply(200, Duration::from_millis(50));
    let emulator = Emulator::start(vec![first, reply("Recovered on the other host.")])
        .await
        .unwrap();
    // The database and the provider listen on this machine's loopback; the hosts reach them
    // through proxies on the segment's gateway address.
    let gateway = lab.gateway();
    let provider = Proxy::start_on((gateway, 0).into(), emulator.addr())
        .await
        .unwrap();
    h.store
        .fixture_model(
            h.organization,
            "anthropic",
            &format!("http://{}", provider.addr()),
            "claude-test",
            200_000,
            true,
        )
        .await
        .unwrap();
    let key = h.store.fixture_token(h.user, "test", None).await.unwrap();
    let postgres = Proxy::start_on((gateway, 0).into(), "127.0.0.1:5432".parse().unwrap())
        .await
        .unwrap();
    let url = h
        .database_url()
        .await
        .replacen("127.0.0.1:5432", &postgres.addr().to_string(), 1);
    let start = |host: usize, listen: String, advertise: Option<String>| {
        let (url, data_dir, ns) = (
            url.clone(),
            h.data_dir.0.display().to_string(),
            lab.host(host),
        );
        async move {
            let mut args = vec![
                "serve".to_owned(),
                "--listen".to_owned(),
                listen,
                "--database-url".to_owned(),
                url,
                "--data-dir".to_owned(),
                data_dir,
            ];
            args.extend(FAST.iter().map(|a| (*a).to_owned()));
            if let Some(advertise) = advertise {
                args.extend(["--advertise-address".to_owned(), advertise]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Daemon::start_in(Some(&ns), &args, &[]).await.unwrap()
        }
    };
    let (a_addr, b_addr) = (lab.host_addr(0), lab.host_addr(1));
    // Host A listens on every interface and advertises its address; host B listens on its one.
    let a = start(0, "0.0.0.0:7420".into(), Some(a_addr.to_string())).await;
    let mut through_a = Client::at(&format!("http://{a_addr}:7420"), &key.token, None).await;
    let chat = through_a.create("run on host A").await.unwrap();
    let runner = owner(&h, &chat.id).await;
    let b = start(1, format!("{b_addr}:7420"), None).await;
    let pool = h.postgres().unwrap().pool.clone();
    let relays: Vec<String> = eventually("both replicas registered", || {
        let pool = pool.clone();
        async move {
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT relay_address FROM chatd_workers ORDER BY relay_address",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            (rows.len() == 2).then_some(rows)
        }
    })
    .await;
    assert_eq!(
        relays,
        [
            format!("http://{a_addr}:7420"),
            format!("http://{b_addr}:7420")
        ]
    );

    // A client of host B follows the chat host A runs: B relays A's live parts.
    let mut through_b = Client::at(&format!("http://{b_addr}:7420"), &key.token, None).await;
    let mut stream = through_b.stream(&chat.id, None).await.unwrap();
    let mut view = View::default();
    view.follow(&mut stream, "live parts relayed from host A", |v| {
        v.parts_seen >= 5
    })
    .await;
    assert!(view.preview.starts_with("w00 w01 "), "{:?}", view.preview);
    let chat_id = uuid::Uuid::parse_str(&chat.id).unwrap();
    assert_eq!(h.store.chat(chat_id).await.unwrap().worker_id, Some(runner));

    // Host A dies mid-turn; host B takes the chat over and its client sees the turn end.
    a.stop(Signal::SIGKILL, Duration::from_secs(10))
        .await
        .unwrap();
    view.follow(&mut stream, "the turn to finish on host B", |v| {
        v.status == Some(pb::ChatStatus::Waiting) && v.assistant_texts().len() == 1
    })
    .await;
    assert_eq!(view.assistant_texts(), ["Recovered on the other host."]);
    assert_ne!(h.store.chat(chat_id).await.unwrap().worker_id, Some(runner));
    assert_eq!(emulator.requests().len(), 2, "{}", b.log());
    drop(b);
    h.finish().await;
    drop(lab);
}

/// Reads watch events until `done` holds for the ones gathered so far.
async fn watch_until(
    watch: &mut Streaming<pb::WatchChatsResponse>,
    seen: &mut Vec<pb::WatchChatsResponse>,
    what: &str,
    done: impl Fn(&[pb::WatchChatsResponse]) -> bool,
) {
    while !done(seen) {
        let event = tokio::time::timeout(PATIENCE, watch.message())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}; saw {seen:#?}"))
            .unwrap_or_else(|s| panic!("watch failed waiting for {what}: {s:?}"))
            .unwrap_or_else(|| panic!("watch ended waiting for {what}"));
        seen.push(event);
    }
}

fn has(
    seen: &[pb::WatchChatsResponse],
    kind: pb::ChatWatchEventKind,
    status: pb::ChatStatus,
) -> bool {
    seen.iter()
        .any(|e| e.kind() == kind && e.chat.as_ref().is_some_and(|c| c.status() == status))
}

#[tokio::test]
async fn a_watch_reports_new_chats_status_and_title_changes_and_dynamic_calls_of_its_owner_only() {
    let mut h = TestDb::create().await;
    let call = Turn::with(vec![ScriptPart::ToolCall {
        id: "call-1".into(),
        name: "ask_user".into(),
        args: r#"{"question":"which colour?"}"#.into(),
        chunk: 8,
    }]);
    let emulator = Emulator::start(vec![reply("Hello."), call, reply("Blue, then.")])
        .await
        .unwrap();
    model(&h, &emulator).await;
    let ada_key = h.store.fixture_token(h.user, "ada", None).await.unwrap();
    let bob_id = h
        .store
        .fixture_user("bob", "member", h.organization)
        .await
        .unwrap();
    let bob_key = h.store.fixture_token(bob_id, "bob", None).await.unwrap();
    let daemon = daemon(&mut h).await;
    let mut ada = Client::new(&daemon, &ada_key.token).await;
    let mut bob = Client::new(&daemon, &bob_key.token).await;
    let mut ada_watch = ada
        .inner
        .watch_chats(ada.req(pb::WatchChatsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut bob_watch = bob
        .inner
        .watch_chats(bob.req(pb::WatchChatsRequest::default()))
        .await
        .unwrap()
        .into_inner();

    // A new chat runs one turn.
    let chat = ada.create("hello").await.unwrap();
    let mut seen = Vec::new();
    watch_until(&mut ada_watch, &mut seen, "created, then waiting", |s| {
        s.first()
            .is_some_and(|e| e.kind() == pb::ChatWatchEventKind::Created)
            && has(
                s,
                pb::ChatWatchEventKind::StatusChange,
                pb::ChatStatus::Waiting,
            )
    })
    .await;
    assert!(seen.iter().all(|e| e.chat.as_ref().unwrap().id == chat.id));

    // A rename.
    let renamed = ada
        .inner
        .update_chat(ada.req(pb::UpdateChatRequest {
            chat_id: chat.id.clone(),
            title: Some("Colours".into()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.title, "Colours");
    watch_until(&mut ada_watch, &mut seen, "the title change", |s| {
        s.iter().any(|e| {
            e.kind() == pb::ChatWatchEventKind::TitleChange
                && e.chat.as_ref().unwrap().title == "Colours"
        })
    })
    .await;

    // A chat with a client-executed tool that the model calls.
    let request = ada.req(pb::CreateChatRequest {
        content: vec![super::chat_api::input("ask me")],
        dynamic_tools: vec![pb::DynamicTool {
            name: "ask_user".into(),
            description: "Ask the user a question.".into(),
            input_schema: None,
        }],
        ..Default::default()
    });
    let waiting = ada.inner.create_chat(request).await.unwrap().into_inner();
    let mut seen = Vec::new();
    watch_until(&mut ada_watch, &mut seen, "the action required", |s| {
        s.iter()
            .any(|e| e.kind() == pb::ChatWatchEventKind::ActionRequired)
    })
    .await;
    let action = seen
        .iter()
        .find(|e| e.kind() == pb::ChatWatchEventKind::ActionRequired)
        .unwrap();
    assert_eq!(action.chat.as_ref().unwrap().id, waiting.id);
    assert_eq!(
        action.chat.as_ref().unwrap().status(),
        pb::ChatStatus::RequiresAction
    );
    assert_eq!(action.tool_calls.len(), 1, "{action:?}");
    assert_eq!(action.tool_calls[0].tool_call_id, "call-1");
    assert_eq!(action.tool_calls[0].tool_name, "ask_user");
    assert_eq!(action.tool_calls[0].args, r#"{"question":"which colour?"}"#);

    // The client runs the tool and submits its result: the turn goes on with it.
    ada.inner
        .submit_tool_results(ada.req(pb::SubmitToolResultsRequest {
            chat_id: waiting.id.clone(),
            results: vec![pb::ToolResultInput {
                tool_call_id: "call-1".into(),
                output: r#""blue""#.into(),
                is_error: false,
            }],
        }))
        .await
        .unwrap();
    ada.until(&waiting.id, pb::ChatStatus::Waiting).await;
    let messages = ada.messages(&waiting.id).await.unwrap();
    let last = messages.messages.last().unwrap();
    assert_eq!(last.role(), pb::ChatMessageRole::Assistant, "{messages:?}");
    let asked = emulator.requests();
    assert!(
        asked.last().unwrap().body.to_string().contains("blue"),
        "the model got the client's result"
    );

    // Bob heard nothing of Ada's chats.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), bob_watch.message())
            .await
            .is_err(),
        "another user's watch stays quiet"
    );
    h.finish().await;
}

/// A build that waits for the test: the watch must report the new build while it runs, so a
/// client can follow its logs from the start.
#[tokio::test]
async fn a_watch_reports_the_build_a_chat_starts_while_it_runs() {
    use provisioner::template::{self, Manifest};

    let mut h = TestDb::create().await;
    let gate = std::env::temp_dir().join(format!("chatd-build-gate-{}", uuid::Uuid::new_v4()));
    let manifest = Manifest::parse(&format!(
        "name = \"gated\"\n[build]\nscript = \"while [ ! -e {} ]; do sleep 0.1; done\"\n",
        gate.display()
    ))
    .unwrap();
    let pushed = h
        .store
        .push_template_version(template::new_version(
            h.organization,
            &manifest,
            &[],
            "v1",
            true,
            Some(h.user),
        ))
        .await
        .unwrap();
    let create = Turn::with(vec![ScriptPart::tool_call(
        "c1",
        "create_workspace",
        serde_json::json!({"template_id": pushed.template_id.to_string(), "name": "gated"})
            .to_string(),
    )]);
    let emulator = Emulator::start(vec![create, reply("Built.")])
        .await
        .unwrap();
    model(&h, &emulator).await;
    let key = h.store.fixture_token(h.user, "ada", None).await.unwrap();
    let listen = format!("127.0.0.1:{}", chatd_e2e::workspaces::free_port());
    let args = h.serve_with_provisioner(&listen, 2).await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&args, &[]).await.unwrap();
    let _agents = chatd_e2e::test_db::KillUnder(h.data_dir.0.clone());
    // From here on the daemon's API is the only way in (an embedded database is its alone).
    let url = daemon.url();
    chatd_e2e::workspaces::wait_for_import(&url, &key.token, &pushed.version_id.to_string()).await;

    let mut client = Client::new(&daemon, &key.token).await;
    let mut watch = client
        .inner
        .watch_chats(client.req(pb::WatchChatsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let chat = client.create("build me a workspace").await.unwrap();
    let mut seen = Vec::new();
    watch_until(&mut watch, &mut seen, "the chat's new build", |s| {
        s.iter().any(|e| {
            e.kind() == pb::ChatWatchEventKind::StatusChange
                && e.chat.as_ref().is_some_and(|c| c.build_id.is_some())
        })
    })
    .await;
    let bound = seen
        .iter()
        .find_map(|e| e.chat.as_ref().filter(|c| c.build_id.is_some()))
        .unwrap();
    assert_eq!(bound.id, chat.id);
    assert_eq!(bound.status(), pb::ChatStatus::Running);
    let workspaces = chatd_e2e::workspaces::WorkspaceApi::connect(&url, &key.token).await;
    let build = workspaces
        .get(bound.workspace_id.as_deref().unwrap())
        .await
        .latest_build
        .unwrap();
    assert_eq!(Some(build.id.as_str()), bound.build_id.as_deref());
    assert!(
        build.job.unwrap().completed_at.is_none(),
        "the build still waits for the gate"
    );
    std::fs::write(&gate, b"").unwrap();
    client.until(&chat.id, pb::ChatStatus::Waiting).await;
    let _ = std::fs::remove_file(&gate);
    daemon
        .stop(Signal::SIGTERM, Duration::from_secs(10))
        .await
        .unwrap();
    h.finish().await;
}

/// Reads a stream until it fails, and returns the status it failed with.
async fn end_status<T>(stream: &mut Streaming<T>, what: &str) -> tonic::Status {
    loop {
        match tokio::time::timeout(PATIENCE, stream.message()).await {
            Err(_) => panic!("{what} did not end"),
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => panic!("{what} ended without a status"),
            Ok(Err(status)) => return status,
        }
    }
}

#[tokio::test]
async fn sigterm_ends_open_streams_with_unavailable_instead_of_waiting_out_the_grace() {
    let mut h = TestDb::create().await;
    let emulator = Emulator::start(vec![reply("Hello.")]).await.unwrap();
    model(&h, &emulator).await;
    let key = h.store.fixture_token(h.user, "ada", None).await.unwrap();
    // A grace far longer than the test may take: only draining lets the daemon exit in time.
    let daemon = daemon_with(&mut h, &["--shutdown-grace", "120s"]).await;
    let mut client = Client::new(&daemon, &key.token).await;
    let chat = client.create("hi").await.unwrap();
    client.until(&chat.id, pb::ChatStatus::Waiting).await;

    let mut stream = client.stream(&chat.id, None).await.unwrap();
    let bootstrap = tokio::time::timeout(PATIENCE, stream.message()).await;
    assert!(matches!(bootstrap, Ok(Ok(Some(_)))), "{bootstrap:?}");
    let request = client.req(pb::WatchChatsRequest::default());
    let mut watch = client
        .inner
        .watch_chats(request)
        .await
        .unwrap()
        .into_inner();

    let log = daemon.log();
    let (stopped, chat_end, watch_end) = tokio::join!(
        daemon.stop(Signal::SIGTERM, Duration::from_secs(60)),
        end_status(&mut stream, "the chat stream"),
        end_status(&mut watch, "the watch"),
    );
    let status = stopped.unwrap_or_else(|e| panic!("the daemon did not exit: {e}\n{log}"));
    assert!(status.success(), "{status:?}\n{log}");
    for end in [chat_end, watch_end] {
        assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
        assert_eq!(end.message(), "chatd server inflight closed");
    }
    h.finish().await;
}
