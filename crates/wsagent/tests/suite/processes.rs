//! Processes: output and exit codes, waits, idempotency, chat scoping, signals to the whole
//! group, bounded output, cancellation.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use wsagent::process::{ProcessConfig, ProcessError, ProcessManager, StartRequest};

fn manager() -> ProcessManager {
    let mut config = ProcessConfig::new(std::env::temp_dir());
    config.shell = "/bin/sh".into();
    config.env = vec![("FROM_MANIFEST".into(), "manifest".into())];
    config.cancel_grace = Duration::from_millis(300);
    ProcessManager::new(config)
}

fn start(m: &ProcessManager, chat: &str, command: &str, key: &str) -> (String, bool) {
    m.start(StartRequest {
        command: command.into(),
        chat_id: chat.into(),
        idempotency_key: key.into(),
        env: vec![("CHATD_AGENT".into(), "true".into())],
        ..StartRequest::default()
    })
    .unwrap()
}

const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn output_and_exit_codes_with_stderr_merged_and_env_injected() {
    let m = manager();
    let (id, existing) = start(
        &m,
        "c1",
        "echo out; echo err >&2; echo $CHATD_AGENT $FROM_MANIFEST; exit 3",
        "",
    );
    assert!(!existing);
    let s = m.output("c1", &id, LONG).await.unwrap();
    assert!(!s.running);
    assert_eq!(s.exit_code, Some(3));
    assert!(
        s.output.contains("out\n")
            && s.output.contains("err\n")
            && s.output.contains("true manifest"),
        "{}",
        s.output
    );
    assert_eq!(s.truncated, None);
}

#[tokio::test]
async fn a_wait_returns_when_the_process_exits_or_times_out() {
    let m = manager();
    let (quick, _) = start(&m, "c1", "sleep 0.2; echo done", "");
    let started = Instant::now();
    let s = m.output("c1", &quick, LONG).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the wait ended when the process exited"
    );
    assert_eq!((s.running, s.exit_code), (false, Some(0)));

    let (slow, _) = start(&m, "c1", "sleep 30", "");
    let s = m
        .output("c1", &slow, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!((s.running, s.exit_code), (true, None));
    let snapshot = m.output("c1", &slow, Duration::ZERO).await.unwrap();
    assert!(snapshot.running);
    m.signal("c1", &slow, Signal::SIGKILL).unwrap();
    let s = m.output("c1", &slow, LONG).await.unwrap();
    assert_eq!(s.exit_code, Some(128 + 9));
}

#[tokio::test]
async fn an_idempotency_key_never_starts_a_second_process() {
    let m = manager();
    let counter = std::env::temp_dir().join(format!("wsagent-counter-{}", std::process::id()));
    let _ = std::fs::remove_file(&counter);
    let command = format!("echo x >> {}", counter.display());
    let (first, existing) = start(&m, "c1", &command, "call-1");
    assert!(!existing);
    let (again, existing) = start(&m, "c1", &command, "call-1");
    assert_eq!((again.as_str(), existing), (first.as_str(), true));
    m.output("c1", &first, LONG).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap(),
        "x\n",
        "ran exactly once"
    );
    // Another chat's key is its own.
    let (other, existing) = start(&m, "c2", &command, "call-1");
    assert!(!existing);
    assert_ne!(other, first);
    // A lookup never starts anything.
    let lookup = m.start(StartRequest {
        chat_id: "c1".into(),
        idempotency_key: "unknown".into(),
        lookup_only: true,
        command: "true".into(),
        ..StartRequest::default()
    });
    assert!(matches!(lookup, Err(ProcessError::NotFound(_))));
    let _ = std::fs::remove_file(&counter);
}

#[tokio::test]
async fn processes_are_scoped_to_their_chat_and_listed() {
    let m = manager();
    let (id, _) = start(&m, "c1", "true", "");
    assert!(matches!(
        m.output("c2", &id, Duration::ZERO).await,
        Err(ProcessError::NotFound(_))
    ));
    m.output("c1", &id, LONG).await.unwrap();
    let listed = m.list("c1");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].id.as_str(),
            listed[0].running,
            listed[0].exit_code
        ),
        (id.as_str(), false, Some(0))
    );
    assert!(m.list("c2").is_empty());
    assert!(matches!(
        m.signal("c1", &id, Signal::SIGTERM),
        Err(ProcessError::Exited(_))
    ));
    assert!(matches!(
        m.start(StartRequest {
            command: "  ".into(),
            chat_id: "c1".into(),
            ..StartRequest::default()
        }),
        Err(ProcessError::Invalid(_))
    ));
}

#[tokio::test]
async fn a_signal_reaches_the_whole_process_group() {
    let m = manager();
    let marker = std::env::temp_dir().join(format!("wsagent-group-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    // A child in the background that would write the marker if it survived.
    let (id, _) = start(
        &m,
        "c1",
        &format!("(sleep 1; touch {}) & wait", marker.display()),
        "",
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    m.signal("c1", &id, Signal::SIGTERM).unwrap();
    let s = m.output("c1", &id, LONG).await.unwrap();
    assert!(!s.running);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !marker.exists(),
        "the background child was terminated with its group"
    );
}

#[tokio::test]
async fn output_beyond_the_limit_keeps_head_and_tail_and_says_so() {
    let mut config = ProcessConfig::new(std::env::temp_dir());
    config.shell = "/bin/sh".into();
    config.output_limit = 100;
    let m = ProcessManager::new(config);
    let (id, _) = m
        .start(StartRequest {
            command: "seq 1 1000".into(),
            chat_id: "c".into(),
            ..StartRequest::default()
        })
        .unwrap();
    let s = m.output("c", &id, LONG).await.unwrap();
    let t = s.truncated.unwrap();
    assert_eq!(
        (t.retained_bytes, t.original_bytes, t.dropped_bytes),
        (100, 3893, 3793)
    );
    assert!(s.output.starts_with("1\n2\n3\n"));
    assert!(s.output.ends_with("999\n1000\n"));
}

#[tokio::test]
async fn the_run_time_is_the_processs_own_whenever_it_is_read() {
    let m = manager();
    let (id, _) = start(&m, "c1", "sleep 0.4", "");
    let done = m.output("c1", &id, LONG).await.unwrap();
    assert!(done.run_time >= Duration::from_millis(400), "{done:?}");
    // Read again later (as a replay after a takeover would): still the run until its exit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = m.output("c1", &id, LONG).await.unwrap();
    assert_eq!(later.run_time, done.run_time);
}

#[tokio::test]
async fn cancel_terminates_then_kills() {
    let m = manager();
    let (id, _) = start(&m, "c1", "trap '' TERM; sleep 30", "call-9");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(m.cancel("c1", "call-9"), (true, true));
    let s = m.output("c1", &id, LONG).await.unwrap();
    assert!(!s.running, "SIGKILL followed the ignored SIGTERM");
    assert_eq!(m.cancel("c1", "call-9"), (true, false));
    assert_eq!(m.cancel("c1", "unknown"), (false, false));
}

#[tokio::test]
async fn a_start_that_arrives_after_its_cancel_does_not_run() {
    let m = manager();
    assert_eq!(m.cancel("c1", "call-late"), (false, false));
    let refused = m
        .start(StartRequest {
            command: "touch should-not-exist".into(),
            chat_id: "c1".into(),
            idempotency_key: "call-late".into(),
            ..StartRequest::default()
        })
        .unwrap_err();
    assert!(
        matches!(&refused, ProcessError::Cancelled(key) if key == "call-late"),
        "{refused:?}"
    );
    // Only that key of that chat.
    let (id, _) = start(&m, "c2", "echo other chat", "call-late");
    assert_eq!(
        m.output("c2", &id, LONG).await.unwrap().output,
        "other chat\n"
    );
}

#[tokio::test]
async fn every_process_gets_the_non_interactive_environment() {
    let mut config = ProcessConfig::new(std::env::temp_dir());
    config.shell = "/bin/sh".into();
    let m = ProcessManager::new(config);
    let (id, _) = start(
        &m,
        "c",
        "echo $CHATD_AGENT $GIT_EDITOR $GIT_TERMINAL_PROMPT $NO_COLOR $TERM $PAGER $GIT_PAGER",
        "",
    );
    let out = m.output("c", &id, Duration::from_secs(5)).await.unwrap();
    assert_eq!(out.output, "true true 0 1 dumb cat cat\n");
}
