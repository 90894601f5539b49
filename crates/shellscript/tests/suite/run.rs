//! Scripts with streamed output: line order and streams, exit status, and a timeout that kills
//! the script's whole process group.

use std::path::Path;
use std::time::Duration;

use shellscript::{LogLine, Outcome, Stream, run_script};
use tokio::sync::mpsc;

async fn run(script: &str, timeout: Duration) -> (Outcome, Vec<LogLine>) {
    let (tx, mut rx) = mpsc::channel(100);
    let env = vec![("GREETING".to_owned(), "hi".to_owned())];
    let outcome = run_script(
        Path::new("/bin/sh"),
        "test script",
        script,
        &std::env::temp_dir(),
        &env,
        timeout,
        tx,
    )
    .await;
    let mut lines = Vec::new();
    while let Some(line) = rx.recv().await {
        lines.push(line);
    }
    (outcome, lines)
}

#[tokio::test]
async fn output_lines_arrive_with_their_stream() {
    let (outcome, lines) = run(
        "echo $GREETING; echo oops >&2; printf 'no newline'",
        Duration::ZERO,
    )
    .await;
    assert_eq!(outcome, Outcome::Succeeded);
    let mut got: Vec<(Stream, String)> = lines.into_iter().map(|l| (l.stream, l.text)).collect();
    got.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        got,
        vec![
            (Stream::Stdout, "hi".to_owned()),
            (Stream::Stdout, "no newline".to_owned()),
            (Stream::Stderr, "oops".to_owned()),
        ]
    );
}

#[tokio::test]
async fn an_empty_script_is_ready_at_once() {
    assert_eq!(run("  ", Duration::ZERO).await.0, Outcome::Succeeded);
}

#[tokio::test]
async fn a_non_zero_exit_is_an_error_naming_the_script_and_status() {
    let (outcome, _) = run("exit 5", Duration::ZERO).await;
    assert_eq!(
        outcome,
        Outcome::Failed("the test script exited with status 5".into())
    );
}

#[tokio::test]
async fn a_timeout_kills_the_whole_group() {
    let marker = std::env::temp_dir().join(format!("wsagent-startup-{}", std::process::id()));
    let script = format!("(sleep 2; touch {}) & sleep 30", marker.display());
    let (outcome, _) = run(&script, Duration::from_millis(300)).await;
    assert_eq!(outcome, Outcome::TimedOut);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !marker.exists(),
        "the background child outlived the timeout"
    );
}
