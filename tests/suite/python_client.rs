//! A third-party gRPC client: Python's `grpcio`, knowing nothing of chatd but its address and a
//! token, discovers the services through reflection, builds the messages from the reflected
//! descriptors and creates a chat that then runs like any other.

use chatd_e2e::test_db::TestDb;
use chatproto::chatd::v1 as pb;
use chatstore::testing::Fixtures as _;
use chattest::emulator::Emulator;
use serde_json::Value;

use super::chat_api::{Client, daemon, model, reply};

#[tokio::test]
async fn python_grpcio_lists_the_services_and_creates_a_chat_through_reflection() {
    let mut h = TestDb::create().await;
    let emulator = Emulator::start(vec![reply("Hello, Python.")])
        .await
        .unwrap();
    model(&h, &emulator).await;
    let key = h.store.fixture_token(h.user, "python", None).await.unwrap();
    let daemon = daemon(&mut h).await;

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/grpc_client.py");
    let output = tokio::process::Command::new(chattest::python())
        .arg(script)
        .arg(daemon.addr())
        .arg(&key.token)
        .arg("say hello")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "the Python client failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        daemon.log()
    );
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();

    let services: Vec<&str> = result["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for service in [
        "chatd.v1.AdminService",
        "chatd.v1.ChatService",
        "chatd.v1.TemplateService",
        "chatd.v1.WorkspaceService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(&service), "{service} not in {services:?}");
    }
    assert_eq!(result["organization"], h.organization.to_string());
    let chat_id = result["chat"]["id"].as_str().unwrap().to_owned();
    assert_eq!(result["chat"]["title"], "From Python");
    assert_eq!(result["read_back"]["id"], chat_id.as_str());
    assert_eq!(result["unauthenticated"], "UNAUTHENTICATED");

    // The chat Python created is an ordinary chat: it runs and answers.
    let mut client = Client::new(&daemon, &key.token).await;
    client.until(&chat_id, pb::ChatStatus::Waiting).await;
    let history = client.messages(&chat_id).await.unwrap();
    let last = history.messages.last().unwrap();
    assert_eq!(last.role(), pb::ChatMessageRole::Assistant);
    assert_eq!(emulator.requests().len(), 1);
    h.finish().await;
}
