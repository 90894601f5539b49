//! Conformance: the official Python SDKs (`anthropic`, `openai` from PyPI) parse every scripted
//! turn the emulator sends, and see its faults as the errors they expect. `scripts/test`
//! installs the SDKs into `target/sdk-venv`; `CHATD_SDK_PYTHON` may point at another
//! interpreter that has them (see [`chattest::python`]).

use std::path::PathBuf;

use chattest::emulator::{Emulator, FaultKind, FaultPoint, ScriptPart, Turn};
use serde_json::Value;

async fn run_sdks(emulator: &Emulator, scenarios: &[&str]) -> Vec<Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk_conformance.py");
    let output = tokio::process::Command::new(chattest::python())
        .arg(script)
        .arg(emulator.base_url())
        .args(scenarios)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "the SDK script failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn turn() -> Turn {
    let mut turn = Turn::with(vec![
        ScriptPart::Reasoning("Thinking it over.".into()),
        ScriptPart::Text {
            text: "Here are two calls.".into(),
            chunk: 4,
        },
        ScriptPart::ToolCall {
            id: "call_a".into(),
            name: "read_file".into(),
            args: r#"{"path":"a"}"#.into(),
            chunk: 3,
        },
        ScriptPart::ToolCall {
            id: "call_b".into(),
            name: "execute".into(),
            args: r#"{"command":"ls"}"#.into(),
            chunk: 5,
        },
    ]);
    turn.usage = (31, 17);
    turn
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_sdks_parse_scripted_turns() {
    let emulator = Emulator::start(vec![turn(), turn()]).await.unwrap();
    let results = run_sdks(&emulator, &["anthropic", "openai"]).await;

    let a = &results[0];
    assert_eq!(a["text"], "Here are two calls.");
    assert_eq!(a["reasoning"], "Thinking it over.");
    assert_eq!(
        a["tool_calls"][0],
        serde_json::json!(["call_a", "read_file", r#"{"path":"a"}"#])
    );
    assert_eq!(
        a["tool_calls"][1],
        serde_json::json!(["call_b", "execute", r#"{"command":"ls"}"#])
    );
    assert_eq!(a["finish"], "tool_use");
    assert_eq!(a["usage"], serde_json::json!([31, 17]));

    let o = &results[1];
    assert_eq!(o["text"], "Here are two calls.");
    assert_eq!(
        o["tool_calls"][0],
        serde_json::json!(["call_a", "read_file", r#"{"path":"a"}"#])
    );
    assert_eq!(
        o["tool_calls"][1],
        serde_json::json!(["call_b", "execute", r#"{"command":"ls"}"#])
    );
    assert_eq!(o["finish"], "tool_calls");
    assert_eq!(o["usage"], serde_json::json!([31, 17]));

    let requests = emulator.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].path, "/v1/messages");
    assert_eq!(requests[1].path, "/v1/chat/completions");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_sdks_see_emulated_faults_as_provider_errors() {
    let emulator = Emulator::start(vec![
        turn().fault(
            FaultPoint::AfterEvents(3),
            FaultKind::StreamError { code: "overloaded_error".into(), message: "Overloaded".into() },
        ),
        turn().fault(
            FaultPoint::BeforeHeaders,
            FaultKind::Status {
                status: 429,
                headers: vec![("retry-after".into(), "2".into())],
                body: r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#.into(),
            },
        ),
    ])
    .await
    .unwrap();
    let results = run_sdks(&emulator, &["anthropic-error", "openai-error"]).await;
    assert!(
        results[0]["message"]
            .as_str()
            .unwrap()
            .contains("overloaded_error"),
        "{}",
        results[0]
    );
    assert_eq!(results[1]["error"], "RateLimitError", "{}", results[1]);
    assert_eq!(results[1]["status"], 429);
}
