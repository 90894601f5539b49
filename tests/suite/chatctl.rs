//! `chatctl` against a real `chatd serve` (with its provisioner and the local backend): a
//! newcomer's path from login to a finished turn that built a workspace and wrote a file, and
//! the documented exit codes.

use chatstore::testing::Fixtures as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use chatd_e2e::test_db::{KillUnder, TestDb};
use chatd_e2e::workspaces::{free_port, tempdir, wait_for_import, wait_for_import_over};
use chatd_e2e::{Daemon, workspace_binary};
use chattest::emulator::{Emulator, Match, ScriptPart, Turn};
use uuid::Uuid;

/// A home for chatctl: its own config file and `HOME`, nothing from the environment.
pub(super) struct Ctl {
    dir: tempdir::Dir,
}

impl Ctl {
    pub(super) fn new() -> Self {
        Self {
            dir: tempdir::Dir::create(),
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.0.join("config.toml")
    }

    /// Runs `chatctl <args>` with `env` added.
    async fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let binary = workspace_binary("chatctl").unwrap();
        let mut cmd = tokio::process::Command::new(binary);
        cmd.args(args)
            .env_remove("CHATCTL_SERVER")
            .env_remove("CHATCTL_TOKEN")
            .env_remove("CHATCTL_CA_CERT")
            .env("CHATCTL_CONFIG", self.config())
            .env("HOME", &self.dir.0)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME");
        for (key, value) in env {
            cmd.env(key, value);
        }
        cmd.output().await.unwrap()
    }

    pub(super) async fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[]).await
    }

    /// Runs and expects success; its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "chatctl {args:?} failed ({:?}):\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A daemon with the embedded provisioner over the test's database.
async fn daemon_with_provisioner(h: &mut TestDb, extra: &[String]) -> Daemon {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = h.serve_with_provisioner(&listen, 1).await;
    args.extend(extra.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(&args, &[]).await.unwrap()
}

fn example_template() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/templates/shell")
}

#[tokio::test]
async fn a_newcomer_logs_in_pushes_the_example_and_a_chat_builds_a_workspace_and_writes_a_file() {
    newcomer_builds_a_workspace_and_writes_a_file(None).await;
}

/// The same over TLS everywhere: chatctl and the daemon, the agent reporting to the daemon
/// (`https://` control plane, the CA from the provisioner) and the daemon calling the agent
/// (which serves TLS with the provisioner's agent certificate).
#[tokio::test]
async fn over_tls_the_agent_and_the_daemon_reach_each_other_both_ways() {
    newcomer_builds_a_workspace_and_writes_a_file(Some(&super::tls::Certs::new())).await;
}

async fn newcomer_builds_a_workspace_and_writes_a_file(tls: Option<&super::tls::Certs>) {
    let mut h = TestDb::create().await;
    let key = h
        .store
        .fixture_token(h.user, "newcomer", None)
        .await
        .unwrap();
    let mut extra = Vec::new();
    if let Some(certs) = tls {
        extra.extend(certs.serve_args());
        extra.extend([
            "--agent-tls-cert".to_owned(),
            certs.paths.cert.display().to_string(),
            "--agent-tls-key".to_owned(),
            certs.paths.key.display().to_string(),
        ]);
    }
    let daemon = daemon_with_provisioner(&mut h, &extra).await;
    let ctl = Ctl::new();
    let token_file = ctl.dir.0.join("token");
    std::fs::write(&token_file, format!("{}\n", key.token)).unwrap();

    // Log in: the token is checked, then saved for the next commands (with the CA).
    let url = match tls {
        Some(_) => format!("https://{}", daemon.addr()),
        None => daemon.url(),
    };
    let mut login = vec![
        "login".to_owned(),
        "--to".to_owned(),
        url.clone(),
        "--token-file".to_owned(),
        token_file.display().to_string(),
    ];
    if let Some(certs) = tls {
        login.extend(["--ca-cert".to_owned(), certs.paths.ca.display().to_string()]);
    }
    let login: Vec<&str> = login.iter().map(String::as_str).collect();
    let out = ctl.ok(&login).await;
    assert!(out.contains("Logged in") && out.contains("ada"), "{out}");
    assert!(ctl.ok(&["whoami"]).await.contains("ada (admin"));

    // Push the example template; wait for its import.
    let example = example_template();
    let pushed = ctl
        .ok(&["--json", "template", "push", example.to_str().unwrap()])
        .await;
    let pushed: serde_json::Value = serde_json::from_str(&pushed).unwrap();
    let template_id = pushed["template"]["id"].as_str().unwrap().to_owned();
    assert_eq!(pushed["template"]["name"], "shell");
    let version_id = pushed["version"]["id"].as_str().unwrap().to_owned();
    let trust = tls.map(super::tls::Certs::trust);
    let channel = chatd_e2e::connect(&url, trust.as_ref()).await.unwrap();
    wait_for_import_over(channel, &key.token, &version_id).await;
    let listed = ctl.ok(&["template", "ls"]).await;
    assert!(
        listed.contains(&template_id) && listed.contains("shell"),
        "{listed}"
    );

    // A scripted model: create a workspace, write the file, answer.
    let emulator = Emulator::start(vec![
        Turn::with(vec![
            ScriptPart::text("I will create a workspace."),
            ScriptPart::tool_call(
                "c1",
                "create_workspace",
                serde_json::json!({"template_id": template_id, "name": "dev"}).to_string(),
            ),
        ]),
        Turn::with(vec![ScriptPart::tool_call(
            "c2",
            "execute",
            serde_json::json!({"command": "echo hello > hello.txt && cat hello.txt"}).to_string(),
        )])
        .when(Match::LastToolResultContains("ada/dev".into())),
        Turn::with(vec![ScriptPart::text("Done: hello.txt says hello.")])
            .when(Match::LastToolResultContains("hello".into())),
    ])
    .await
    .unwrap();
    let base_url = emulator.base_url();
    let created = ctl
        .ok(&[
            "admin",
            "model",
            "create",
            "--provider",
            "anthropic",
            "--model",
            "claude-test",
            "--base-url",
            &base_url,
            "--default",
        ])
        .await;
    assert!(
        created.contains("created model configuration claude-test"),
        "{created}"
    );
    assert!(
        ctl.ok(&["admin", "model", "ls"])
            .await
            .contains("claude-test  (default)")
    );

    let out = ctl
        .ok(&[
            "chat",
            "new",
            "--attach",
            "create a workspace and write hello to hello.txt",
        ])
        .await;
    let chat_id = out.lines().next().unwrap().trim().to_owned();
    for expected in [
        "I will create a workspace.",
        "→ create_workspace(",
        "← create_workspace: ok",
        "→ execute(",
        "← execute: ok",
        "Done: hello.txt says hello.",
    ] {
        assert!(
            out.contains(expected),
            "{expected:?} missing from:\n{out}\n{}",
            daemon.log()
        );
    }
    // The one workspace is the chat's.
    let listed: serde_json::Value =
        serde_json::from_str(&ctl.ok(&["--json", "workspace", "ls"]).await).unwrap();
    let workspace = Uuid::parse_str(
        listed["workspaces"][0]["id"]
            .as_str()
            .expect("the chat built a workspace"),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(
            h.data_dir
                .0
                .join("workspaces")
                .join(workspace.to_string())
                .join("home/hello.txt")
        )
        .unwrap(),
        "hello\n"
    );

    // The chat and the workspace are listed; the transcript reads back.
    let chats = ctl.ok(&["chat", "ls"]).await;
    assert!(
        chats.contains(&chat_id) && chats.contains("waiting"),
        "{chats}"
    );
    let shown = ctl.ok(&["chat", "show", &chat_id]).await;
    assert!(
        shown.contains("> create a workspace and write hello to hello.txt")
            && shown.contains("Done: hello.txt says hello."),
        "{shown}"
    );
    let workspaces = ctl.ok(&["workspace", "ls"]).await;
    assert!(
        workspaces.contains(&workspace.to_string()) && workspaces.contains("dev"),
        "{workspaces}"
    );
    // The agent listened (and the daemon dialled it) over TLS when it was given a certificate:
    // its log, in the workspace's directory, names the address it reported.
    let agent_log = std::fs::read_to_string(
        h.data_dir
            .0
            .join("workspaces")
            .join(workspace.to_string())
            .join("agent.log"),
    )
    .unwrap();
    let scheme = if tls.is_some() { "https://" } else { "http://" };
    assert!(
        agent_log.contains(&format!("addr={scheme}127.0.0.1:")),
        "{agent_log}"
    );
    drop(emulator);
    h.finish().await;
}

/// The README's first steps on a fresh machine: `chatd serve` with nothing but a data
/// directory (the embedded store), the bootstrap admin's token, a template, a model, a chat
/// that builds a workspace. Nothing reads the database but the daemon.
#[tokio::test]
async fn with_no_database_configured_the_embedded_store_serves_a_newcomers_first_chat() {
    let data = tempdir::Dir::create();
    // Workspace agents outlive a stopped daemon by design; they go with the test.
    let _agents = KillUnder(data.0.clone());
    let data_dir = data.0.display().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let wsagent = workspace_binary("wsagent").unwrap();
    let uids = chatd_e2e::test_db::uid_range(&chatd_e2e::test_db::test_workspace_users());
    let daemon = Daemon::start(
        &[
            "serve",
            "--listen",
            &listen,
            "--data-dir",
            &data_dir,
            "--workspace-uids",
            &uids,
            "--agent-binary",
            wsagent.to_str().unwrap(),
            "--agent-heartbeat-interval",
            "200ms",
            "--provisioner-poll-interval",
            "1s",
            "--provisioner-workers",
            "1",
        ],
        &[],
    )
    .await
    .unwrap();
    assert!(
        data.0.join("chatd.db").exists(),
        "the embedded database is created in the data directory"
    );
    let ctl = Ctl::new();
    let token_file = data.0.join("admin-token");
    let url = daemon.url();
    let out = ctl
        .ok(&[
            "login",
            "--to",
            &url,
            "--token-file",
            token_file.to_str().unwrap(),
        ])
        .await;
    assert!(out.contains("Logged in") && out.contains("admin"), "{out}");

    let example = example_template();
    let pushed = ctl
        .ok(&["--json", "template", "push", example.to_str().unwrap()])
        .await;
    let pushed: serde_json::Value = serde_json::from_str(&pushed).unwrap();
    let template_id = pushed["template"]["id"].as_str().unwrap().to_owned();
    let version_id = pushed["version"]["id"].as_str().unwrap().to_owned();
    let token = std::fs::read_to_string(&token_file).unwrap();
    wait_for_import(&url, token.trim(), &version_id).await;

    let emulator = Emulator::start(vec![
        Turn::with(vec![ScriptPart::tool_call(
            "c1",
            "create_workspace",
            serde_json::json!({"template_id": template_id, "name": "dev"}).to_string(),
        )]),
        Turn::with(vec![ScriptPart::tool_call(
            "c2",
            "execute",
            serde_json::json!({"command": "echo embedded > note.txt && cat note.txt"}).to_string(),
        )])
        .when(Match::LastToolResultContains("admin/dev".into())),
        Turn::with(vec![ScriptPart::text("The note says embedded.")])
            .when(Match::LastToolResultContains("embedded".into())),
    ])
    .await
    .unwrap();
    let base_url = emulator.base_url();
    ctl.ok(&[
        "admin",
        "model",
        "create",
        "--provider",
        "anthropic",
        "--model",
        "claude-test",
        "--base-url",
        &base_url,
        "--default",
    ])
    .await;
    let out = ctl
        .ok(&["chat", "new", "--attach", "write a note in a workspace"])
        .await;
    for expected in [
        "← create_workspace: ok",
        "← execute: ok",
        "The note says embedded.",
    ] {
        assert!(
            out.contains(expected),
            "{expected:?} missing from:\n{out}\n{}",
            daemon.log()
        );
    }
    let chat_id = out.lines().next().unwrap().trim().to_owned();
    let chats = ctl.ok(&["chat", "ls"]).await;
    assert!(
        chats.contains(&chat_id) && chats.contains("waiting"),
        "{chats}"
    );
    daemon
        .stop(
            nix::sys::signal::Signal::SIGTERM,
            std::time::Duration::from_secs(20),
        )
        .await
        .unwrap();
    drop(emulator);
}

#[tokio::test]
async fn exit_codes_say_what_went_wrong() {
    let mut h = chatd_e2e::test_db::TestDb::create().await;
    let key = h.store.fixture_token(h.user, "test", None).await.unwrap();
    let daemon = super::chat_api::daemon(&mut h).await;
    let ctl = Ctl::new();
    let url = daemon.url();

    // Not logged in.
    let out = ctl.run(&["chat", "ls"]).await;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("chatctl login"), "{}", stderr(&out));
    // Bad usage.
    assert_eq!(code(&ctl.run(&["chat", "frobnicate"]).await), 2);
    // A token the server refuses.
    let out = ctl
        .run_with(
            &["chat", "ls"],
            &[
                ("CHATCTL_SERVER", &url),
                ("CHATCTL_TOKEN", "chatd_nope_nope"),
            ],
        )
        .await;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let env = [
        ("CHATCTL_SERVER", url.as_str()),
        ("CHATCTL_TOKEN", key.token.as_str()),
    ];
    // Something that does not exist.
    let missing = Uuid::new_v4().to_string();
    let out = ctl.run_with(&["chat", "show", &missing], &env).await;
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    // A refused request.
    let out = ctl.run_with(&["chat", "show", "not-a-uuid"], &env).await;
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    // A server that is not there.
    let gone = format!("http://127.0.0.1:{}", free_port());
    let out = ctl
        .run_with(
            &["chat", "ls"],
            &[("CHATCTL_SERVER", &gone), ("CHATCTL_TOKEN", "x")],
        )
        .await;
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    // A template directory that is not one.
    let out = ctl
        .run_with(&["template", "push", h.data_dir.0.to_str().unwrap()], &env)
        .await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no template.toml"),
        "{}",
        stderr(&out)
    );
    h.finish().await;
}

#[tokio::test]
async fn completions_need_no_server_and_know_every_command() {
    let ctl = Ctl::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = ctl.ok(&["completions", shell]).await;
        for word in ["chatctl", "login", "chat", "template", "workspace", "admin"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = ctl.run(&["completions", "tcsh"]).await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("bash"), "{}", stderr(&out));
}
