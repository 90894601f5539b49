//! `chatd serve` configured through a TOML file and provider flags: the models it names are
//! seeded into the organization once, turns use them with the referenced key, the environment
//! wins over the file, and a bad file stops the start with a message that names it.

use chatstore::testing::Fixtures as _;
use std::time::Duration;

use chatd_e2e::test_db::TestDb;
use chatd_e2e::workspace_binary;
use chatproto::chatd::v1 as pb;
use chattest::emulator::Emulator;
use nix::sys::signal::Signal;

use super::chat_api::{Client, reply};

/// `(provider, model, is_default)` of the organization's model configurations, as the daemon's
/// admin API lists them.
async fn models(
    daemon: &chatd_e2e::Daemon,
    token: &str,
    organization: uuid::Uuid,
) -> Vec<(String, String, bool)> {
    use chatd_e2e::workspaces::WithToken as _;
    let mut admin = chatproto::chatd::v1::admin_service_client::AdminServiceClient::new(
        super::serve::channel(daemon).await,
    );
    let listed = admin
        .list_model_configs(
            pb::ListModelConfigsRequest {
                organization_id: organization.to_string(),
                ..Default::default()
            }
            .into_request_with(token.to_owned()),
        )
        .await
        .unwrap()
        .into_inner();
    let mut rows: Vec<(String, String, bool)> = listed
        .model_configs
        .into_iter()
        .map(|c| {
            let provider = match c.provider() {
                pb::ProviderKind::Anthropic => "anthropic".to_owned(),
                pb::ProviderKind::Openai => "openai".to_owned(),
                pb::ProviderKind::OpenaiCompat => "openai-compat".to_owned(),
                other => format!("{other:?}"),
            };
            (provider, c.model, c.is_default)
        })
        .collect();
    rows.sort();
    rows
}

#[tokio::test]
async fn a_config_file_seeds_models_once_and_turns_use_the_referenced_key() {
    let mut h = TestDb::create().await;
    let emulator = Emulator::start(vec![reply("Seeded and answering.")])
        .await
        .unwrap();
    let config = h.data_dir.0.join("chatd.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            # What an operator writes once.
            shutdown-grace = "2s"
            models-organization = "acme"
            openai-compat-base-url = "{emu}/v1"
            openai-compat-models = ["compat-model"]

            [[model]]
            provider = "anthropic"
            model = "claude-seeded"
            base-url = "{emu}"
            api-key-ref = "env:E2E_ANTHROPIC_API_KEY"
            default = true
            "#,
            emu = emulator.base_url()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let key = h.store.fixture_token(h.user, "test", None).await.unwrap();
    let url = h.database_url().await;
    let start = |env: Vec<(&'static str, &'static str)>| {
        let args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &url,
            "--config",
            &config,
        ];
        async move { chatd_e2e::Daemon::start(&args, &env).await.unwrap() }
    };

    let daemon = start(vec![("E2E_ANTHROPIC_API_KEY", "sk-e2e-seeded")]).await;
    assert_eq!(
        models(&daemon, &key.token, h.organization).await,
        [
            ("anthropic".into(), "claude-seeded".into(), true),
            ("openai-compat".into(), "compat-model".into(), false),
        ],
        "{}",
        daemon.log()
    );
    // A chat that names no model gets the seeded default, called with the referenced key.
    let mut client = Client::new(&daemon, &key.token).await;
    let chat = client.create("hello").await.unwrap();
    client.until(&chat.id, pb::ChatStatus::Waiting).await;
    let requests = emulator.requests();
    assert_eq!(requests.len(), 1, "{}", daemon.log());
    assert_eq!(requests[0].path, "/v1/messages");
    assert_eq!(requests[0].header("x-api-key"), Some("sk-e2e-seeded"));
    assert_eq!(requests[0].body["model"], "claude-seeded");
    daemon
        .stop(Signal::SIGTERM, Duration::from_secs(10))
        .await
        .unwrap();

    // A restart seeds nothing new. The environment wins over the file: pointed at an
    // organization that does not exist, the daemon says so and serves anyway.
    let daemon = start(vec![("CHATD_MODELS_ORGANIZATION", "nowhere")]).await;
    assert!(
        daemon
            .log()
            .contains("cannot seed models: no such organization"),
        "{}",
        daemon.log()
    );
    // Stopped, not dropped: the next start must find the database free.
    daemon
        .stop(Signal::SIGTERM, Duration::from_secs(10))
        .await
        .unwrap();
    let daemon = start(vec![]).await;
    assert_eq!(
        models(&daemon, &key.token, h.organization).await.len(),
        2,
        "{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("already configured"),
        "{}",
        daemon.log()
    );
    drop(daemon);
    h.finish().await;
}

#[tokio::test]
async fn a_bad_config_file_stops_the_start_and_names_the_file_and_key() {
    let dir = chatd_e2e::workspaces::tempdir::Dir::create();
    let chatd = workspace_binary("chatd").unwrap();
    for (text, says) in [
        ("listen-on = \"127.0.0.1:0\"\n", "unknown key `listen-on`"),
        ("shutdown-grace = \"soon\"\n", "--shutdown-grace"),
        (
            "[[model]]\nprovider = \"openai-compat\"\nmodel = \"m\"\n",
            "base_url is required for provider openai-compat",
        ),
        ("chat-agent-suffix = \"\"\n", "--chat-agent-suffix"),
        (
            "[retry]\ninitial-delay = \"2m\"\nmax-delay = \"1m\"\n",
            "--retry-initial-delay (2m) must not be longer than --retry-max-delay (1m)",
        ),
        (
            "lease-stale-after = \"5s\"\nheartbeat-interval = \"9s\"\n",
            "--lease-stale-after (5s) must be longer than --heartbeat-interval (9s)",
        ),
    ] {
        let path = dir.0.join("chatd.toml");
        std::fs::write(&path, text).unwrap();
        let output = tokio::process::Command::new(&chatd)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .output()
            .await
            .unwrap();
        assert!(!output.status.success(), "{text} was accepted");
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(log.contains(says), "{text}: {log}");
        assert!(
            log.contains("chatd.toml") || log.contains("invalid configuration"),
            "{text}: {log}"
        );
    }
}
