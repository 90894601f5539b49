//! The in-process emulator's rate-limit storm.

use std::time::Duration;

use chattest::emulator::{Emulator, ScriptPart, Turn};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn post(addr: std::net::SocketAddr) -> String {
    let body = r#"{"model":"m","stream":true}"#;
    let request = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn a_storm_answers_429_with_retry_after_and_leaves_the_script_for_later() {
    let emulator = Emulator::start(vec![Turn::with(vec![ScriptPart::text("after")])])
        .await
        .unwrap();
    emulator.rate_limit_for(Duration::from_secs(600), Duration::from_secs(2));
    for _ in 0..2 {
        let response = post(emulator.addr()).await;
        assert!(response.starts_with("HTTP/1.1 429"), "{response}");
        assert!(response.contains("retry-after: 2"), "{response}");
        assert!(response.contains("rate_limit_error"), "{response}");
    }
    // A storm of no length ends the one going on.
    emulator.rate_limit_for(Duration::ZERO, Duration::ZERO);
    let response = post(emulator.addr()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("after"), "{response}");
    assert_eq!(emulator.requests().len(), 3);
}
