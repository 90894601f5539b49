//! The fault suite: what a production deployment meets besides provider faults, injected into
//! real processes. (Provider faults, a replica killed mid-turn, a killed LISTEN connection and
//! dead agents are in the engine, stream and workspace suites.)

use std::time::Duration;

use chatd_e2e::Daemon;
use chatd_e2e::test_db::{TestDb, skip_on_sqlite};
use chatd_e2e::workspaces::eventually;
use chatproto::chatd::v1 as pb;
use chatstore::testing::Fixtures as _;
use chattest::emulator::Emulator;

use super::chat_api::{Client, daemon_with, model};
use super::streams::{View, slow_reply};

#[tokio::test]
async fn three_replicas_starting_at_once_on_an_empty_database_migrate_it_once_and_make_one_admin() {
    if skip_on_sqlite("three replicas share one database") {
        return;
    }
    let db = super::migrate::empty_database().await;
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db.url,
    ];
    let (a, b, c) = tokio::join!(
        Daemon::start(&args, &[]),
        Daemon::start(&args, &[]),
        Daemon::start(&args, &[])
    );
    let replicas = [a.unwrap(), b.unwrap(), c.unwrap()];

    // Every migration applied once, successfully; every replica serves the current schema.
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let files = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../migrations/postgres"
    ))
    .unwrap()
    .filter(|f| {
        f.as_ref()
            .unwrap()
            .path()
            .extension()
            .is_some_and(|e| e == "sql")
    })
    .count();
    assert_eq!(applied.len(), files, "{applied:?}");
    assert!(applied.iter().all(|(_, success)| *success), "{applied:?}");

    // One bootstrap admin, and one replica (the one that made it) wrote its token.
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(users, 1);
    let tokens: Vec<String> = replicas
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.data_dir().join("admin-token")).ok())
        .collect();
    assert_eq!(tokens.len(), 1, "token files: {tokens:?}");

    // The token works on every replica.
    for replica in &replicas {
        let mut client = Client::new(replica, tokens[0].trim()).await;
        let listed = client
            .inner
            .list_chats(client.req(pb::ListChatsRequest::default()))
            .await;
        assert!(listed.is_ok(), "{listed:?}\n{}", replica.log());
    }
}

#[tokio::test]
async fn a_stalled_stream_client_and_one_that_leaves_mid_stream_affect_neither_the_turn_nor_others()
{
    let mut h = TestDb::create().await;
    let (slow, text) = slow_reply(100, Duration::from_millis(20));
    let emulator = Emulator::start(vec![slow]).await.unwrap();
    model(&h, &emulator).await;
    let key = h.store.fixture_token(h.user, "test", None).await.unwrap();
    let daemon = daemon_with(&mut h, &["--stream-subscriber-timeout", "1s"]).await;
    let mut client = Client::new(&daemon, &key.token).await;
    let chat = client.create("stream to three clients").await.unwrap();

    // Stalled: opens the stream and never reads it, with a flow-control window of 1 KiB, so the
    // daemon soon cannot send it anything more.
    let narrow = tonic::transport::Endpoint::from_shared(daemon.url())
        .unwrap()
        .initial_stream_window_size(1024)
        .connect()
        .await
        .unwrap();
    let mut stalled_client = Client::over(narrow, &key.token);
    let _stalled = stalled_client.stream(&chat.id, None).await.unwrap();
    // Leaving: reads a few parts, then drops the stream and its connection.
    let mut leaving_client = Client::new(&daemon, &key.token).await;
    let mut leaving = leaving_client.stream(&chat.id, None).await.unwrap();
    View::default()
        .follow(&mut leaving, "the first parts", |v| v.parts_seen >= 3)
        .await;
    drop(leaving);
    drop(leaving_client);

    // The reader sees the whole turn, every part in order, to its end.
    let mut reader = client.stream(&chat.id, None).await.unwrap();
    let mut view = View::default();
    view.follow(&mut reader, "the turn to end", |v| {
        v.status == Some(pb::ChatStatus::Waiting) && v.assistant_texts().len() == 1
    })
    .await;
    let texts = view.assistant_texts();
    assert_eq!(texts.len(), 1);
    assert_eq!(texts[0].trim_end(), text.trim_end(), "{}", daemon.log());
    // One model call for this chat (a stray request from another test's engine, on a port
    // reused by this emulator, would carry another text).
    let calls = emulator
        .requests()
        .iter()
        .filter(|r| r.last_user_text().as_deref() == Some("stream to three clients"))
        .count();
    assert_eq!(calls, 1, "one model call");
    h.finish().await;
}

/// Follows `chat` on `daemon` as a real client does: on a stream error it reconnects and resumes
/// after the last committed message it saw. Returns the view once `done` holds, and how many
/// times it had to reconnect.
async fn follow_resuming(
    client: &mut Client,
    chat_id: &str,
    what: &str,
    done: impl Fn(&View) -> bool,
) -> (View, usize) {
    let mut reconnects = 0;
    let mut committed = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let after = committed.keys().next_back().copied();
        let mut view = View::default();
        if let Ok(mut stream) = client.stream(chat_id, after).await {
            loop {
                match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
                    Ok(Ok(Some(response))) => {
                        for event in response.events {
                            view.apply(event);
                        }
                        committed.extend(view.messages.clone());
                        let mut whole = View::default();
                        whole.messages = committed.clone();
                        whole.status = view.status;
                        if done(&whole) {
                            return (whole, reconnects);
                        }
                    }
                    Ok(Ok(None) | Err(_)) => break,
                    Err(_) => panic!("no event for 30 s waiting for {what}"),
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what} after {reconnects} reconnects"
        );
        reconnects += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Crashes and restarts `pg`, then follows the chat (resuming after errors) until its turn
/// ended with an answer; the view and how often the stream had to reconnect.
async fn crash_then_follow(
    pg: chatd_e2e::private_pg::PrivatePostgres,
    client: &mut Client,
    chat_id: &str,
) -> (chatd_e2e::private_pg::PrivatePostgres, View, usize) {
    let restarted = tokio::task::spawn_blocking(move || {
        let result = pg.crash_and_restart();
        (pg, result)
    });
    let (pg, result) = restarted.await.unwrap();
    result.unwrap_or_else(|e| panic!("restart: {e}\n{}", pg.log()));
    let (view, reconnects) = follow_resuming(client, chat_id, "the turn to end", |v| {
        v.status == Some(pb::ChatStatus::Waiting) && !v.assistant_texts().is_empty()
    })
    .await;
    (pg, view, reconnects)
}

#[tokio::test]
async fn postgresql_crashing_mid_stream_the_turn_completes_once_and_the_stream_resumes() {
    use chatd_e2e::private_pg::PrivatePostgres;
    if skip_on_sqlite("the database server restarts") {
        return;
    }
    let pg = PrivatePostgres::start(None)
        .unwrap_or_else(|why| panic!("a private PostgreSQL for this test: {why}"));
    // The reply streams for about 6 s; a second copy answers a retried call, if any.
    let (slow, text) = slow_reply(150, Duration::from_millis(40));
    let emulator = Emulator::start(vec![slow.clone(), slow]).await.unwrap();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &pg.url(""),
        "--anthropic-api-key-ref",
        "env:FAULTS_API_KEY",
        "--anthropic-base-url",
        &emulator.base_url(),
        "--anthropic-models",
        "claude-test",
        "--stream-poll-interval",
        "1s",
    ];
    let daemon = Daemon::start(&args, &[("FAULTS_API_KEY", "test-key")])
        .await
        .unwrap();
    let token = std::fs::read_to_string(daemon.data_dir().join("admin-token")).unwrap();
    let mut client = Client::new(&daemon, token.trim()).await;
    let chat = client.create("stream through a crash").await.unwrap();
    let mut stream = client.stream(&chat.id, None).await.unwrap();
    View::default()
        .follow(&mut stream, "the first parts", |v| v.parts_seen >= 10)
        .await;

    // The database crashes and comes back while the reply streams.
    drop(stream);
    let (pg, view, reconnects) = crash_then_follow(pg, &mut client, &chat.id).await;
    let texts = view.assistant_texts();
    assert_eq!(
        texts.len(),
        1,
        "one reply, committed once: {texts:?}\n{}",
        daemon.log()
    );
    assert_eq!(texts[0].trim_end(), text.trim_end());
    // The lease survived the crash: the turn kept streaming, nothing was asked twice.
    let calls = emulator
        .requests()
        .iter()
        .filter(|r| r.last_user_text().as_deref() == Some("stream through a crash"))
        .count();
    assert_eq!(
        calls,
        1,
        "model calls (client reconnects: {reconnects})\n{}",
        daemon.log()
    );
    drop(pg);
}

/// A tool call in one delta.
fn tool(id: &str, name: &str, args: serde_json::Value) -> chattest::emulator::Turn {
    use chattest::emulator::{ScriptPart, Turn};
    Turn::with(vec![ScriptPart::tool_call(id, name, args.to_string())])
}

/// `turn`, answering only a request whose last tool result contains `text`.
fn after(turn: chattest::emulator::Turn, text: &str) -> chattest::emulator::Turn {
    turn.when(chattest::emulator::Match::LastToolResultContains(
        text.into(),
    ))
}

/// Scripts a turn that creates workspace `name`, runs `command` in it, and once the result
/// holds `done`, answers `answer`.
fn in_new_workspace(
    h: &super::security::Hostile,
    name: &str,
    command: &str,
    done: &str,
    answer: &str,
) {
    use chattest::emulator::{ScriptPart, Turn};
    let create = serde_json::json!({"template_id": h.template, "name": name});
    h.emulator.push(tool("c1", "create_workspace", create));
    let run = tool("c2", "execute", serde_json::json!({ "command": command }));
    h.emulator.push(after(run, &format!("/{name}")));
    h.emulator
        .push(after(Turn::with(vec![ScriptPart::text(answer)]), done));
}

/// A tmpfs of `bytes` mounted on a directory (as root); unmounted (lazily, for agents whose
/// working directory is inside) when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(on: &std::path::Path, bytes: u64) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        // The mount's root keeps the directory's mode.
        let mode = std::fs::metadata(on).unwrap().permissions().mode() & 0o7777;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode={mode:o}")])
            .arg("tmpfs")
            .arg(on)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mount a tmpfs on {}: {status}",
            on.display()
        );
        Self(on.to_owned())
    }

    /// Bytes left for an unprivileged writer.
    fn free(&self) -> u64 {
        let stat = nix::sys::statvfs::statvfs(&self.0).unwrap();
        stat.blocks_available() * stat.fragment_size()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_fails_workspace_writes_with_a_clear_error_and_the_daemon_keeps_serving() {
    use chattest::emulator::{ScriptPart, Turn};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a small file system for the data dir needs root");
        return;
    }
    // On the embedded store the database shares the full disk: its commits wait for room
    // (retried as any database failure), so the turn cannot end before the space returns.
    if skip_on_sqlite("the embedded database would be on the full disk too") {
        return;
    }
    let mut disk = None;
    let h = super::security::Hostile::start_with(None, |data_dir| {
        disk = Some(Tmpfs::mount(data_dir, 64 << 20));
    })
    .await;
    let disk = disk.unwrap();
    let mut client = Client::new(&h.daemon, &h.token).await;
    // A workspace, ready and used once.
    in_new_workspace(&h, "full", "echo ready", "ready", "Ready.");
    let chat = client.create("make a workspace").await.unwrap();
    client.until(&chat.id, pb::ChatStatus::Waiting).await;

    // Everything but 128 KiB of the data dir is taken, then the model writes 512 KiB into its
    // workspace.
    let filler = h.db.data_dir.0.join("filler");
    let keep = 128 << 10;
    std::fs::write(
        &filler,
        vec![0u8; usize::try_from(disk.free() - keep).unwrap()],
    )
    .unwrap();
    // Its arguments stream in deltas of 16 KiB, as providers stream them.
    let big = serde_json::json!({"path": "big.txt", "content": "x".repeat(512 << 10)});
    h.emulator.push(Turn::with(vec![ScriptPart::ToolCall {
        id: "c3".into(),
        name: "write_file".into(),
        args: big.to_string(),
        chunk: 16 << 10,
    }]));
    h.emulator.push(after(
        Turn::with(vec![ScriptPart::text("The disk is full.")]),
        "No space left on device",
    ));
    client.send(&chat.id, "write a big file").await.unwrap();
    client.until(&chat.id, pb::ChatStatus::Waiting).await;
    let before = client.messages(&chat.id).await.unwrap().messages;
    let transcript = format!("{before:?}");
    assert!(
        transcript.contains("No space left on device") && transcript.contains("The disk is full."),
        "{transcript}\n{}",
        h.daemon.log()
    );

    // The daemon still serves: with room again, the next turn runs a command in the workspace,
    // and every message committed before is still there.
    std::fs::remove_file(&filler).unwrap();
    h.emulator.push(tool(
        "c3",
        "execute",
        serde_json::json!({"command": "echo still-here"}),
    ));
    h.emulator.push(after(
        Turn::with(vec![ScriptPart::text("Still here.")]),
        "still-here",
    ));
    client.send(&chat.id, "try again").await.unwrap();
    client.until(&chat.id, pb::ChatStatus::Waiting).await;
    let after_all = client.messages(&chat.id).await.unwrap().messages;
    assert_eq!(
        after_all[..before.len()],
        before[..],
        "nothing committed was lost"
    );
    assert!(
        format!("{after_all:?}").contains("Still here."),
        "{after_all:?}"
    );
    h.finish().await;
    drop(disk);
}

#[tokio::test]
async fn postgresql_crashing_mid_tool_step_the_command_runs_once_and_the_turn_completes() {
    use chatd_e2e::private_pg::PrivatePostgres;
    if skip_on_sqlite("the database server restarts") {
        return;
    }
    let pg = PrivatePostgres::start(None)
        .unwrap_or_else(|why| panic!("a private PostgreSQL for this test: {why}"));
    let h = super::security::Hostile::start_with(Some(&pg.url("")), |_| {}).await;
    in_new_workspace(
        &h,
        "steady",
        "echo run >> count && sleep 4 && echo finished-command",
        "finished-command",
        "Counted.",
    );
    let mut client = Client::new(&h.daemon, &h.token).await;
    let chat = client.create("count once").await.unwrap();
    let count = eventually("the command to start", || async {
        let workspaces = std::fs::read_dir(h.db.data_dir.0.join("workspaces")).ok()?;
        workspaces
            .filter_map(Result::ok)
            .map(|w| w.path().join("home").join("count"))
            .find(|count| count.exists())
    })
    .await;

    // The database crashes and comes back while the command runs.
    let (pg, view, _) = crash_then_follow(pg, &mut client, &chat.id).await;
    let texts: Vec<String> = view
        .assistant_texts()
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(texts, ["Counted."], "{}", h.daemon.log());
    let messages = client.messages(&chat.id).await.unwrap().messages;
    let results = format!("{messages:?}").matches("finished-command").count();
    // The command line is in the call's arguments and its output in the one result.
    assert_eq!(results, 2, "one call, one result: {messages:?}");
    assert_eq!(
        std::fs::read_to_string(count).unwrap(),
        "run\n",
        "the command ran once"
    );
    let calls = h
        .emulator
        .requests()
        .iter()
        .filter(|r| r.last_user_text().as_deref() == Some("count once"))
        .count();
    assert_eq!(calls, 3, "one model call per step");
    h.finish().await;
    drop(pg);
}
