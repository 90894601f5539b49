//! The `wsagent` binary in standalone mode: it listens on loopback or a unix socket, requires
//! its secret, runs its startup script, reports its lifecycle in `Health`, and exits cleanly on
//! SIGTERM; with a certificate it serves TLS.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chatproto::chatd::v1::WorkspaceAgentLifecycle as Lifecycle;
use chatproto::wsagent::v1 as pb;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wsagent-bin-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts the agent and returns it with the address it logged.
async fn agent(dir: &Path, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsagent"))
        .args(["--secret", "s3cret", "--directory"])
        .arg(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.split("addr=").nth(1) {
                return addr.trim().to_owned();
            }
        }
        panic!("wsagent exited without logging its address");
    })
    .await
    .unwrap();
    // Keep draining the log so the agent never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

async fn lifecycle(addr: &str) -> Lifecycle {
    let mut conn = wsagent::client::connect_agent(addr, "s3cret", Duration::from_secs(5), None)
        .await
        .unwrap();
    conn.health(pb::HealthRequest {})
        .await
        .unwrap()
        .into_inner()
        .lifecycle_state()
}

/// Waits until the agent's lifecycle is `wanted`.
async fn until(addr: &str, wanted: Lifecycle) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = lifecycle(addr).await;
        if now == wanted {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {now:?}, wanted {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn exits_on_sigterm(mut child: Child) {
    let pid = Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    kill(pid, Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("wsagent exits within 10 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn standalone_runs_its_startup_script_then_is_ready_and_stops_on_sigterm() {
    let dir = temp_dir();
    let (child, addr) = agent(
        &dir,
        &["--startup-script", "sleep 0.3; echo up > started.txt"],
    )
    .await;
    assert!(addr.starts_with("http://127.0.0.1:"), "{addr}");
    until(&addr, Lifecycle::Starting).await;
    until(&addr, Lifecycle::Ready).await;
    assert_eq!(
        std::fs::read_to_string(dir.join("started.txt")).unwrap(),
        "up\n"
    );
    exits_on_sigterm(child).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_failing_or_slow_startup_script_is_reported_in_health() {
    let dir = temp_dir();
    let (failing, failing_addr) = agent(&dir, &["--startup-script", "exit 4"]).await;
    let (slow, slow_addr) = agent(
        &dir,
        &["--startup-script", "sleep 30", "--startup-timeout", "300ms"],
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (a, b) = (lifecycle(&failing_addr).await, lifecycle(&slow_addr).await);
        if (a, b) == (Lifecycle::StartError, Lifecycle::StartTimeout) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "got {a:?} and {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    exits_on_sigterm(failing).await;
    exits_on_sigterm(slow).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn it_listens_on_a_unix_socket_and_removes_it_on_exit() {
    let dir = temp_dir();
    let socket = dir.join("agent.sock");
    let listen = format!("unix:{}", socket.display());
    let (child, addr) = agent(&dir, &["--listen", &listen]).await;
    assert_eq!(addr, listen);
    until(&addr, Lifecycle::Ready).await;
    let mut wrong = wsagent::client::connect_agent(&addr, "wrong", Duration::from_secs(5), None)
        .await
        .unwrap();
    assert_eq!(
        wrong.health(pb::HealthRequest {}).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    exits_on_sigterm(child).await;
    assert!(!socket.exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn missing_credentials_and_bad_addresses_are_clear_errors() {
    let output = Command::new(env!("CARGO_BIN_EXE_wsagent"))
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("--secret"), "{text}");

    let output = Command::new(env!("CARGO_BIN_EXE_wsagent"))
        .args(["--secret", "s", "--listen", "localhost"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("neither host:port nor unix:/path"), "{text}");

    let err = wsagent::client::connect_agent("tcp://x", "s", Duration::from_secs(1), None)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("expected http://host:port, https://host:port or unix:/path"),
        "{err}"
    );
}

#[tokio::test]
async fn with_a_certificate_it_serves_tls_to_callers_that_trust_its_ca_only() {
    let dir = temp_dir();
    let certs = chattest::certs::TestCerts::generate().write_to(&dir);
    let (child, addr) = agent(
        &dir,
        &[
            "--tls-cert",
            certs.cert.to_str().unwrap(),
            "--tls-key",
            certs.key.to_str().unwrap(),
        ],
    )
    .await;
    assert!(addr.starts_with("https://127.0.0.1:"), "{addr}");
    let trust = wsagent::client::ClientTls::from_ca_file(&certs.ca).unwrap();
    let mut conn =
        wsagent::client::connect_agent(&addr, "s3cret", Duration::from_secs(5), Some(&trust))
            .await
            .unwrap();
    conn.health(pb::HealthRequest {}).await.unwrap();
    let refused = wsagent::client::connect_agent(
        &addr,
        "s3cret",
        Duration::from_secs(5),
        Some(&wsagent::client::ClientTls::system_roots()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(refused, wsagent::client::DialError::Connect { .. }),
        "{refused}"
    );
    exits_on_sigterm(child).await;
    let _ = std::fs::remove_dir_all(dir);
}
