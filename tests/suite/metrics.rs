//! Prometheus metrics of a real `chatd serve` on their own port: a turn with a rate-limited
//! first call and a tool step shows up as a completed turn, a retry by kind, a classification
//! by source, a tool duration, an acquisition and, while a client streams, a subscriber.

use chatd_e2e::test_db::TestDb;
use chatd_e2e::workspaces::eventually;
use chatproto::chatd::v1 as pb;
use chatstore::testing::Fixtures as _;
use chattest::emulator::{Emulator, FaultKind, FaultPoint, ScriptPart, Turn};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::chat_api::{Client, daemon_with, model, reply};

/// `GET path` over plain HTTP/1.1: the status line and the body.
pub(crate) async fn get(addr: &str, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// The value of the series named exactly `series` (name and labels).
pub(crate) fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_turn_with_a_retry_and_a_tool_shows_up_in_the_metrics() {
    let mut h = TestDb::create().await;
    let rate_limited = reply("never sent").fault(
        FaultPoint::BeforeHeaders,
        FaultKind::Status {
            status: 429,
            headers: vec![("retry-after".into(), "1".into())],
            body: r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#
                .into(),
        },
    );
    let tool_call = Turn::with(vec![ScriptPart::ToolCall {
        id: "call_1".into(),
        name: "list_templates".into(),
        args: "{}".into(),
        chunk: 8,
    }]);
    let emulator = Emulator::start(vec![rate_limited, tool_call, reply("No templates yet.")])
        .await
        .unwrap();
    model(&h, &emulator).await;
    let key = h.store.fixture_token(h.user, "test", None).await.unwrap();
    let daemon = daemon_with(&mut h, &["--metrics-listen", "127.0.0.1:0"]).await;
    let log = daemon.log();
    let metrics_at: String = log
        .split("metrics_at=")
        .nth(1)
        .unwrap_or_else(|| panic!("no metrics address logged:\n{log}"))
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();

    let mut client = Client::new(&daemon, &key.token).await;
    let chat = client.create("which templates are there?").await.unwrap();
    client.until(&chat.id, pb::ChatStatus::Waiting).await;
    assert_eq!(emulator.requests().len(), 3, "{}", daemon.log());

    let stream = client
        .inner
        .stream_chat(client.req(pb::StreamChatRequest {
            chat_id: chat.id.clone(),
            after_id: None,
        }))
        .await
        .unwrap()
        .into_inner();
    // The runner counts the turn right after committing it, so a client can see the chat
    // waiting a moment before the counter moves.
    let text = eventually("the completed turn to be counted", || async {
        let (status, text) = get(&metrics_at, "/metrics").await;
        assert!(status.contains("200"), "{status}");
        (value(&text, "chatd_turns_total{outcome=\"completed\"}") == Some(1.0)).then_some(text)
    })
    .await;
    for (series, expected) in [
        (
            "chatd_retries_total{kind=\"rate_limit\",provider=\"anthropic\"}",
            1.0,
        ),
        (
            "chatd_error_classifications_total{provider=\"anthropic\",source=\"structured\"}",
            1.0,
        ),
        (
            "chatd_tool_duration_seconds_count{tool=\"list_templates\",outcome=\"ok\"}",
            1.0,
        ),
        ("chatd_stream_subscribers{kind=\"chat\"}", 1.0),
    ] {
        assert_eq!(value(&text, series), Some(expected), "{series} in:\n{text}");
    }
    assert!(
        value(&text, "chatd_acquisition_lag_seconds_count").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(value(&text, "chatd_active_runners").is_some(), "{text}");
    assert!(
        text.contains("# TYPE chatd_tool_duration_seconds histogram"),
        "{text}"
    );

    // A closed stream is no longer counted; other paths are not metrics.
    drop(stream);
    eventually("the subscriber gauge to drop", || async {
        let (_, text) = get(&metrics_at, "/metrics").await;
        (value(&text, "chatd_stream_subscribers{kind=\"chat\"}") == Some(0.0)).then_some(())
    })
    .await;
    let (status, _) = get(&metrics_at, "/").await;
    assert!(status.contains("404"), "{status}");
    h.finish().await;
}
