//! A hostile workspace against a real daemon: what the model runs (a README can tell it what to
//! run) must not reach the daemon's secrets, another workspace, or outlive its workspace.
//!
//! The daemon here runs as the tests do; as root, each workspace runs as a user of its own.
//! Without root, the local backend isolates by environment only, and the cases that need a user
//! per workspace skip with a line that says so.

use std::time::Duration;

use chatd_e2e::Daemon;
use chatd_e2e::test_db::{KillUnder, TestDb, processes_running};
use chatd_e2e::workspaces::{
    Harness, WithToken as _, WorkspaceApi, eventually, free_port, push_example,
};
use chatproto::chatd::v1 as pb;
use chatstore::agents::AgentLifecycle;
use chatstore::testing::Fixtures as _;
use chatstore::workspaces::{JobStatus, WorkspaceTransition};
use chattest::emulator::{Emulator, Match, ScriptPart, Turn};
use uuid::Uuid;

const PROVIDER_KEY: &str = "sk-ant-provider-key-that-must-not-leak";
const DATABASE_PASSWORD: &str = "database-password-that-must-not-leak";
const VICTIM_SECRET: &str = "another workspace's secret that must not leak";

/// Whether the case needs root and this run has none; says so when it skips.
fn skip_unless_root(why: &str) -> bool {
    let skip = !nix::unistd::geteuid().is_root();
    if skip {
        eprintln!("skipped: not root, so workspaces have no users of their own ({why})");
    }
    skip
}

/// The daemon's `serve` arguments with the database URL moved to its environment, with a
/// password in it (trust authentication ignores it), as a deployment passes it: never on the
/// command line, which every user can read.
async fn daemon_args(db: &mut TestDb, listen: &str) -> (Vec<String>, String) {
    let mut args = db.serve_with_provisioner(listen, 2).await;
    let at = args.iter().position(|a| a == "--database-url").unwrap();
    let url: Vec<String> = args.drain(at..at + 2).collect();
    let url = url[1].replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{DATABASE_PASSWORD}@"),
        1,
    );
    (args, url)
}

/// A daemon as a deployment runs it (provider key and database URL in its environment, the
/// first admin bootstrapped on an empty database, the example template pushed), a scripted
/// model, and the admin's token.
pub(super) struct Hostile {
    pub(super) db: TestDb,
    pub(super) daemon: Daemon,
    pub(super) emulator: Emulator,
    pub(super) token: String,
    organization: Uuid,
    pub(super) template: Uuid,
    _agents: KillUnder,
}

impl Hostile {
    async fn start() -> Self {
        Self::start_with(None, |_| {}).await
    }

    /// [`Hostile::start`] on the database at `database_url` when given (an empty one), calling
    /// `prepare` with the data dir before the daemon starts.
    pub(super) async fn start_with(
        database_url: Option<&str>,
        prepare: impl FnOnce(&std::path::Path),
    ) -> Self {
        let mut db = TestDb::empty().await;
        prepare(&db.data_dir.0);
        let emulator = Emulator::start(Vec::new()).await.unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let (mut args, mut url) = daemon_args(&mut db, &listen).await;
        if let Some(other) = database_url {
            other.clone_into(&mut url);
        }
        let database_url = url;
        let base_url = emulator.base_url();
        args.extend(
            [
                "--anthropic-base-url",
                &base_url,
                "--anthropic-models",
                "claude-test",
            ]
            .map(String::from),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let daemon = Daemon::start(
            &args,
            &[
                ("ANTHROPIC_API_KEY", PROVIDER_KEY),
                ("CHATD_DATABASE_URL", &database_url),
            ],
        )
        .await
        .unwrap();
        let agents = KillUnder(db.data_dir.0.clone());
        let token = std::fs::read_to_string(db.data_dir.0.join("admin-token")).unwrap();
        let token = token.trim().to_owned();
        let url = daemon.url();
        let organization = organization_of(&url, &token).await;
        let template = push_example(&url, organization, &token).await;
        Self {
            db,
            daemon,
            emulator,
            token,
            organization,
            template,
            _agents: agents,
        }
    }

    /// Runs `command` in a new workspace `hostile` through a chat (its first message `text`)
    /// whose scripted model calls `create_workspace`, then `execute`; the chat's messages as
    /// text.
    async fn run_in_new_workspace(&self, text: &str, command: &str) -> String {
        self.emulator.push(Turn::with(vec![ScriptPart::tool_call(
            "c1",
            "create_workspace",
            serde_json::json!({"template_id": self.template, "name": "hostile"}).to_string(),
        )]));
        self.emulator.push(
            Turn::with(vec![ScriptPart::tool_call(
                "c2",
                "execute",
                serde_json::json!({ "command": command }).to_string(),
            )])
            .when(Match::LastToolResultContains("/hostile".into())),
        );
        self.emulator.push(
            Turn::with(vec![ScriptPart::text("Done.")])
                .when(Match::LastToolResultContains("probe done".into())),
        );
        let mut client = super::chat_api::Client::new(&self.daemon, &self.token).await;
        let chat = client.create(text).await.unwrap();
        client.until(&chat.id, pb::ChatStatus::Waiting).await;
        let messages = client.messages(&chat.id).await.unwrap();
        format!("{messages:?}")
    }

    pub(super) async fn finish(self) {
        self.daemon
            .stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
            .await
            .unwrap();
        self.db.finish().await;
    }
}

#[tokio::test]
async fn a_hostile_workspace_reaches_no_secret_of_the_daemon_or_of_another_workspace() {
    if skip_unless_root("the admin token, the database and other homes are then readable") {
        return;
    }
    let h = Hostile::start().await;
    let data_dir = h.db.data_dir.0.clone();
    let (organization, template, admin_token) = (h.organization, h.template, h.token.clone());
    let url = h.daemon.url();

    // The victim: another workspace with a file as its own processes would leave it.
    let api = WorkspaceApi::connect(&url, &admin_token).await;
    let victim = api.create(organization, template, "victim").await.id;
    assert_eq!(
        api.built(&victim).await.job.unwrap().status(),
        pb::ProvisionerJobStatus::Succeeded
    );
    let victim_home = data_dir.join("workspaces").join(&victim).join("home");
    let victim_file = victim_home.join("notes.txt");
    std::fs::write(&victim_file, VICTIM_SECRET).unwrap();
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&victim_home).unwrap());
    std::os::unix::fs::chown(&victim_file, Some(owner), Some(owner)).unwrap();

    let chatd_pid = h.daemon.pid();
    let probe = format!(
        "env; echo ---; cat {data}/admin-token; echo ---; tr '\\0' '\\n' < /proc/{chatd_pid}/environ; \
         echo ---; tr '\\0' '\\n' < /proc/$PPID/environ; echo ---; cat {victim}; echo ---; \
         ls {data}; head -c 64 {data}/chatd.db; cat {data}/workspaces/{victim_id}/agent.json; echo; echo probe done",
        data = data_dir.display(),
        victim = victim_file.display(),
        victim_id = victim,
    );
    let transcript = h.run_in_new_workspace("look around", &probe).await;
    assert!(transcript.contains("probe done"), "{transcript}");
    assert!(transcript.contains("Permission denied"), "{transcript}");
    for secret in [
        PROVIDER_KEY,
        DATABASE_PASSWORD,
        &admin_token,
        VICTIM_SECRET,
        "WSAGENT_TOKEN",
        "CHATD_DATABASE_URL",
        "SQLite format",
        "start_ticks",
    ] {
        assert!(
            !transcript.contains(secret),
            "the workspace read {secret:?}:\n{transcript}"
        );
    }
    assert!(
        !h.daemon.log().contains(DATABASE_PASSWORD),
        "the log shows the database password"
    );
    // The provider got its key; the workspace sees its own variables.
    assert!(
        h.emulator
            .requests()
            .iter()
            .any(|r| r.header("x-api-key") == Some(PROVIDER_KEY)),
        "the daemon did not use the provider key"
    );
    assert!(
        transcript.contains("CHATD_WORKSPACE_NAME=hostile"),
        "{transcript}"
    );
    h.finish().await;
}

#[tokio::test]
async fn nul_characters_in_a_tool_result_and_in_a_message_keep_the_chat_working() {
    // PostgreSQL refuses NUL in text and jsonb; the store replaces it with U+FFFD.
    let h = Hostile::start().await;
    let transcript = h
        .run_in_new_workspace("binary\0input", "printf 'a\\0b'; echo; echo probe done")
        .await;
    assert!(transcript.contains("binary\u{fffd}input"), "{transcript}");
    assert!(transcript.contains("a\u{fffd}b"), "{transcript}");
    assert!(transcript.contains("Done."), "{transcript}");
    h.finish().await;
}

async fn organization_of(url: &str, token: &str) -> Uuid {
    let mut admin = pb::admin_service_client::AdminServiceClient::connect(url.to_owned())
        .await
        .unwrap();
    let me = admin
        .who_am_i(pb::WhoAmIRequest {}.into_request_with(token.to_owned()))
        .await
        .unwrap()
        .into_inner();
    Uuid::parse_str(&me.organizations[0].id).unwrap()
}

#[tokio::test]
async fn background_processes_survive_neither_a_stop_nor_a_killed_agent() {
    if skip_unless_root("without a user per workspace, only the agent's process groups are killed")
    {
        return;
    }
    let h = Harness::start().await;
    let (workspace, _) = h.template_workspace("name = \"plain\"", "dev").await;
    let agent = h.lifecycle(workspace, AgentLifecycle::Ready).await;

    // A daemon that left the agent's process group, and a plain background job.
    let marker = format!("sleep 10{}", std::process::id());
    let escape = format!(
        "setsid {marker}1 >/dev/null 2>&1 & nohup {marker}2 >/dev/null 2>&1 & echo started"
    );
    let output = h.run_in(workspace, &agent.address, &escape).await;
    assert_eq!(output.exit_code, Some(0), "{}", output.output);
    eventually("both background processes to run", || async {
        (processes_running(&marker).len() == 2).then_some(())
    })
    .await;

    // The agent is SIGKILLed: nothing it started survives it.
    let pid = h.backend().agent_pid(workspace).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("the background processes to die with the agent", || async {
        processes_running(&marker).is_empty().then_some(())
    })
    .await;

    // A new agent, new background processes, then a stop: nothing survives it either.
    let start = h.transition(workspace, WorkspaceTransition::Start).await;
    assert_eq!(start.status, JobStatus::Succeeded, "{}", start.error);
    let agent = h.lifecycle(workspace, AgentLifecycle::Ready).await;
    let output = h.run_in(workspace, &agent.address, &escape).await;
    assert_eq!(output.exit_code, Some(0), "{}", output.output);
    eventually("both background processes to run again", || async {
        (processes_running(&marker).len() == 2).then_some(())
    })
    .await;
    let stop = h.transition(workspace, WorkspaceTransition::Stop).await;
    assert_eq!(stop.status, JobStatus::Succeeded, "{}", stop.error);
    assert!(
        processes_running(&marker).is_empty(),
        "a process outlived the stop"
    );
    h.finish().await;
}

#[tokio::test]
async fn the_first_admins_token_expires_and_chatd_admin_token_mints_another() {
    let mut db = TestDb::empty().await;
    let url = db.database_url().await;
    let data_dir = db.data_dir.0.display().to_string();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data_dir,
        "--provisioner-workers",
        "0",
        "--bootstrap-token-lifetime",
        "1h",
    ];
    let env = [("CHATD_DATABASE_URL", url.as_str())];
    let daemon = Daemon::start(&args, &env).await.unwrap();
    let token = std::fs::read_to_string(db.data_dir.0.join("admin-token")).unwrap();
    let mut admin =
        pb::admin_service_client::AdminServiceClient::new(super::serve::channel(&daemon).await);
    let tokens = admin
        .list_api_tokens(pb::ListApiTokensRequest::default().into_request_with(token.trim().into()))
        .await
        .unwrap()
        .into_inner()
        .api_tokens;
    let expires = tokens[0]
        .expires_at
        .expect("the first admin's token expires");
    let created = tokens[0].created_at.unwrap();
    assert_eq!(expires.seconds - created.seconds, 3600, "{tokens:?}");
    daemon
        .stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .await
        .unwrap();

    // With the daemon stopped (an embedded database has one user at a time), a local command
    // mints another token for the admin, and refuses anyone else.
    let chatd = chatd_e2e::workspace_binary("chatd").unwrap();
    let mint = |username: &'static str| {
        let mut command = tokio::process::Command::new(&chatd);
        command
            .args([
                "admin",
                "token",
                "--username",
                username,
                "--lifetime",
                "10m",
            ])
            .args(["--data-dir", &data_dir])
            .env("CHATD_DATABASE_URL", &url);
        command.output()
    };
    let refused = mint("nobody").await.unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("no user is named \"nobody\""), "{stderr}");
    let minted = mint("admin").await.unwrap();
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let minted = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    assert!(minted.starts_with("chatd_"), "{minted}");

    let daemon = Daemon::start(&args, &env).await.unwrap();
    let mut admin =
        pb::admin_service_client::AdminServiceClient::new(super::serve::channel(&daemon).await);
    let me = admin
        .who_am_i(pb::WhoAmIRequest {}.into_request_with(minted))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.user.unwrap().username, "admin");
    daemon
        .stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .await
        .unwrap();
    db.finish().await;
}

#[tokio::test]
async fn a_revoked_tokens_open_stream_and_watch_end_within_seconds() {
    let mut db = TestDb::create().await;
    let emulator = Emulator::start(vec![super::chat_api::reply("Hi.")])
        .await
        .unwrap();
    let (admin, bob, daemon) = ada_and_bob_on_a_daemon(&mut db, &emulator).await;
    let mut client = super::chat_api::Client::new(&daemon, &bob.token).await;
    let chat = client.create("hello").await.unwrap();
    client.until(&chat.id, pb::ChatStatus::Waiting).await;
    let stream = client.stream(&chat.id, None).await.unwrap();
    let watch = client
        .inner
        .watch_chats(client.req(pb::WatchChatsRequest::default()))
        .await
        .unwrap()
        .into_inner();

    let mut admin_api =
        pb::admin_service_client::AdminServiceClient::new(super::serve::channel(&daemon).await);
    admin_api
        .revoke_api_token(
            pb::RevokeApiTokenRequest {
                api_token_id: bob.id.to_string(),
            }
            .into_request_with(admin.token.clone()),
        )
        .await
        .unwrap();
    // Both end with UNAUTHENTICATED (after whatever they had sent), well within the test's
    // patience: the check runs every few seconds.
    let ended = |status: tonic::Status| {
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
        assert!(status.message().contains("revoked"), "{status}");
    };
    let deadline = Duration::from_secs(20);
    let (chat_end, watch_end) = tokio::time::timeout(deadline, async {
        tokio::join!(first_error(stream), first_error(watch))
    })
    .await
    .expect("the streams of a revoked token ended");
    ended(chat_end);
    ended(watch_end);
    daemon
        .stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .await
        .unwrap();
    db.finish().await;
}

/// The first error of a stream, skipping its messages.
async fn first_error<T>(mut stream: tonic::Streaming<T>) -> tonic::Status {
    loop {
        match stream.message().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without an error"),
            Err(status) => return status,
        }
    }
}

/// One user cannot occupy every worker: past 20 running chats, a new chat is refused until one
/// of theirs ends; another user is not held up.
#[tokio::test]
async fn a_user_runs_at_most_twenty_chats_at_once() {
    let mut db = TestDb::create().await;
    // Every turn streams for a minute, so the chats stay running.
    let slow = || {
        let mut turn = Turn::with(vec![ScriptPart::Text {
            text: "x".repeat(600),
            chunk: 1,
        }]);
        turn.pacing = Duration::from_millis(100);
        turn
    };
    let emulator = Emulator::start((0..22).map(|_| slow()).collect())
        .await
        .unwrap();
    let (ada, bob, daemon) = ada_and_bob_on_a_daemon(&mut db, &emulator).await;
    let mut ada = super::chat_api::Client::new(&daemon, &ada.token).await;
    let mut bob = super::chat_api::Client::new(&daemon, &bob.token).await;
    for n in 0..20 {
        ada.create(&format!("chat {n}")).await.unwrap();
    }
    let refused = ada.create("one too many").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    assert!(
        refused.message().contains("20 of your chats are running"),
        "{refused}"
    );
    bob.create("mine").await.unwrap();
    daemon
        .stop(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(10))
        .await
        .unwrap();
    db.finish().await;
}

/// The tokens of `ada` (an admin) and of a new member `bob`, and a daemon whose model is the
/// emulator.
async fn ada_and_bob_on_a_daemon(
    db: &mut TestDb,
    emulator: &Emulator,
) -> (
    chatstore::identity::NewApiKey,
    chatstore::identity::NewApiKey,
    Daemon,
) {
    super::chat_api::model(db, emulator).await;
    let ada = db.store.fixture_token(db.user, "ada", None).await.unwrap();
    let bob = db
        .store
        .fixture_user("bob", "member", db.organization)
        .await
        .unwrap();
    let bob = db.store.fixture_token(bob, "bob", None).await.unwrap();
    (ada, bob, super::chat_api::daemon(db).await)
}

/// What the model reads through the agent cannot hang or exhaust it: a FIFO without a writer
/// and a 2 GiB file are refused at once, and the agent keeps serving.
#[tokio::test]
async fn a_fifo_and_a_huge_file_neither_hang_nor_exhaust_the_agent() {
    let h = Harness::start().await;
    let (workspace, _) = h.template_workspace("name = \"plain\"", "dev").await;
    let agent = h.lifecycle(workspace, AgentLifecycle::Ready).await;
    let made = h
        .run_in(
            workspace,
            &agent.address,
            "mkfifo pipe && truncate -s 2G huge.bin && echo made",
        )
        .await;
    assert_eq!(made.output, "made\n", "{}", made.output);
    let mut conn = wsagent::client::connect_agent(
        &agent.address,
        &h.secret(workspace).await,
        Duration::from_secs(5),
        None,
    )
    .await
    .unwrap();
    for (path, says) in [
        ("pipe", "not a regular file"),
        ("huge.bin", "larger than 32 MiB"),
    ] {
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            conn.read_file(chatproto::wsagent::v1::ReadFileRequest {
                path: path.into(),
                ..Default::default()
            }),
        )
        .await
        .expect("the read answers at once");
        let status = read.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
        assert!(status.message().contains(says), "{status}");
    }
    let echoed = h
        .run_in(workspace, &agent.address, "echo still serving")
        .await;
    assert_eq!(echoed.output, "still serving\n");
    h.finish().await;
}

/// An API admin cannot point a model's key at the daemon's secrets: a reference to a variable
/// outside `*_API_KEY` or a file outside the key directories is refused.
#[tokio::test]
async fn a_key_reference_to_the_daemons_secrets_is_refused() {
    let mut db = TestDb::create().await;
    let admin = db
        .store
        .fixture_token(db.user, "admin", None)
        .await
        .unwrap();
    let daemon = super::chat_api::daemon(&mut db).await;
    let mut api =
        pb::admin_service_client::AdminServiceClient::new(super::serve::channel(&daemon).await);
    for reference in ["env:CHATD_DATABASE_URL", "env:HOME", "file:/etc/shadow"] {
        let refused = api
            .create_model_config(
                pb::CreateModelConfigRequest {
                    organization_id: db.organization.to_string(),
                    provider: pb::ProviderKind::Anthropic.into(),
                    model: "claude-test".into(),
                    api_key_ref: reference.into(),
                    context_limit: 200_000,
                    ..Default::default()
                }
                .into_request_with(admin.token.clone()),
            )
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{reference}");
        assert!(refused.message().contains("not allowed"), "{refused}");
    }
    daemon
        .stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .await
        .unwrap();
    db.finish().await;
}
