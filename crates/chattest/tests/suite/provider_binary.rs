//! The `chattest-provider` binary: plays a JSON script over real HTTP, refuses bad input.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

const BINARY: &str = env!("CARGO_BIN_EXE_chattest-provider");

fn script_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("chattest-{}-{name}.json", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn plays_a_json_script_over_http() {
    let script = script_file(
        "ok",
        r#"[{"parts": [{"text": {"text": "Hello!", "chunk": 2}}], "usage": [10, 5]},
            {"fault": {"at": "before_headers", "kind": {"status": {"status": 529, "headers": [["retry-after", "1"]], "body": "{}"}}}}]"#,
    );
    let mut child = tokio::process::Command::new(BINARY)
        .arg("--script")
        .arg(&script)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    let url = line.rsplit(' ').next().unwrap().to_owned();
    let addr = url.trim_start_matches("http://").to_owned();

    let request = |body: &str| {
        format!(
            "POST /v1/messages HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    socket
        .write_all(request(r#"{"model":"m","stream":true}"#).as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains(r#""text":"He""#) && response.contains("message_stop"),
        "{response}"
    );

    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    socket.write_all(request("{}").as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 529"), "{response}");
    assert!(response.contains("retry-after: 1"), "{response}");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_bad_script_or_address_is_a_clear_error() {
    let script = script_file("bad", r#"[{"parts": [{"sing": "la"}]}]"#);
    let output = tokio::process::Command::new(BINARY)
        .arg("--script")
        .arg(&script)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a valid script"));

    let script = script_file("empty", "[]");
    let output = tokio::process::Command::new(BINARY)
        .args(["--listen", "0.0.0.0:0", "--script"])
        .arg(&script)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("only listens on loopback"));
}
