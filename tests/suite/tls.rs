//! TLS between every pair of processes, with certificates made by the test: clients and
//! `chatctl` with and without the CA, the relay between replicas on a listener of its own, the
//! plain health listener, and (in `chatctl.rs`) agents and the daemon both ways.

use std::time::Duration;

use chatd_e2e::test_db::{TestDb, skip_on_sqlite};
use chatd_e2e::workspaces::tempdir;
use chatd_e2e::{Daemon, health_status};
use chatstore::testing::Fixtures as _;
use chattest::certs::{CertPaths, TestCerts};
use chattest::emulator::Emulator;
use chattls::ClientTls;
use tonic_health::pb::health_check_response::ServingStatus;

use super::chat_api::{Client, daemon_with, model};
use super::chatctl::Ctl;
use super::streams::{FAST, View, owner, slow_reply};

/// Certificates for `127.0.0.1`, written into a directory removed with it.
pub(super) struct Certs {
    _dir: tempdir::Dir,
    pub(super) paths: CertPaths,
}

impl Certs {
    pub(super) fn new() -> Self {
        let dir = tempdir::Dir::create();
        let paths = TestCerts::generate().write_to(&dir.0);
        Self { _dir: dir, paths }
    }

    /// What a client that has the CA trusts.
    pub(super) fn trust(&self) -> ClientTls {
        ClientTls::from_ca_file(&self.paths.ca).unwrap()
    }

    /// `chatd serve`'s TLS flags with this pair and CA.
    pub(super) fn serve_args(&self) -> Vec<String> {
        [
            ("--tls-cert", &self.paths.cert),
            ("--tls-key", &self.paths.key),
            ("--tls-ca", &self.paths.ca),
        ]
        .into_iter()
        .flat_map(|(flag, path)| [flag.to_owned(), path.display().to_string()])
        .collect()
    }
}

#[tokio::test]
async fn replicas_serve_tls_to_clients_with_the_ca_and_relay_to_each_other_over_tls() {
    if skip_on_sqlite("two replicas share one database") {
        return;
    }
    let mut h = TestDb::create().await;
    let certs = Certs::new();
    let (slow, _) = slow_reply(200, Duration::from_millis(50));
    let emulator = Emulator::start(vec![slow]).await.unwrap();
    model(&h, &emulator).await;
    let key = h.store.fixture_token(h.user, "test", None).await.unwrap();
    let mut args: Vec<String> = FAST.iter().map(|a| (*a).to_owned()).collect();
    args.extend(certs.serve_args());
    args.extend(
        [
            "--relay-listen",
            "127.0.0.1:0",
            "--health-listen",
            "127.0.0.1:0",
        ]
        .map(str::to_owned),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let a = daemon_with(&mut h, &args).await;
    let url_a = format!("https://{}", a.addr());
    // With the CA: served. Without it, or in plain HTTP/2: refused.
    assert_eq!(
        health_status(&url_a, Some(&certs.trust()), "").await,
        Ok(ServingStatus::Serving)
    );
    let refused = health_status(&url_a, Some(&ClientTls::system_roots()), "")
        .await
        .unwrap_err();
    assert!(refused.contains("invalid peer certificate"), "{refused}");
    health_status(&format!("http://{}", a.addr()), None, "")
        .await
        .unwrap_err();
    // The health listener answers probes in plain HTTP/2 (a kubelet speaks no TLS there).
    let health_addr = a
        .logged_addr("serving health checks")
        .expect("a health listener");
    assert_eq!(
        health_status(&format!("http://{health_addr}"), None, "").await,
        Ok(ServingStatus::Serving)
    );
    // The relay has a listener of its own, advertised as https with its port.
    let relay_addr = a
        .logged_addr("serving the relay")
        .expect("a relay listener");
    assert_ne!(relay_addr, a.addr());
    let relay_port = relay_addr.rsplit_once(':').unwrap().1;
    assert!(
        a.log()
            .contains(&format!("advertised=https://127.0.0.1:{relay_port}")),
        "{}",
        a.log()
    );

    // chatctl: refused without the CA (exit 5, the reason shown), served with it.
    let ctl = Ctl::new();
    let refused = ctl
        .run(&["--server", &url_a, "--token", &key.token, "whoami"])
        .await;
    assert_eq!(refused.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("invalid peer certificate"), "{stderr}");
    let ca = certs.paths.ca.display().to_string();
    let served = ctl
        .run(&[
            "--server",
            &url_a,
            "--token",
            &key.token,
            "--ca-cert",
            &ca,
            "whoami",
        ])
        .await;
    assert!(
        served.status.success(),
        "{}",
        String::from_utf8_lossy(&served.stderr)
    );

    // Replica A runs a chat; a client of replica B sees its live parts through the relay,
    // which B reaches over TLS on A's relay listener.
    let mut through_a = Client::at(&url_a, &key.token, Some(&certs.trust())).await;
    let chat = through_a.create("run on A").await.unwrap();
    let runner = owner(&h, &chat.id).await;
    let b: Daemon = daemon_with(&mut h, &args).await;
    let mut through_b = Client::at(
        &format!("https://{}", b.addr()),
        &key.token,
        Some(&certs.trust()),
    )
    .await;
    let mut stream = through_b.stream(&chat.id, None).await.unwrap();
    let mut view = View::default();
    view.follow(&mut stream, "live parts relayed from replica A", |v| {
        v.parts_seen >= 5
    })
    .await;
    assert!(view.preview.starts_with("w00 w01 "), "{:?}", view.preview);
    let chat_row = h
        .store
        .chat(uuid::Uuid::parse_str(&chat.id).unwrap())
        .await
        .unwrap();
    assert_eq!(chat_row.worker_id, Some(runner), "A runs the chat");
    drop((a, b));
    h.finish().await;
}
