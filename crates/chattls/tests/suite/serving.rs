//! A gRPC server behind `ServerTls::incoming`, dialled by clients with and without the CA.

use std::time::Duration;

use chattest::certs::{CertPaths, TestCerts};
use chattls::{CertFiles, ClientTls, ServerTls};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A health service served over `tls` on a fresh loopback port; its `https://` URL.
async fn serve(tls: &ServerTls) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = tls.incoming(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming),
    );
    url
}

/// One health check through a fresh connection; the error's causes in its debug text.
async fn check(url: &str, trust: Option<&ClientTls>) -> Result<(), String> {
    let channel = chattls::endpoint(url, trust)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(drop)
        .map_err(|e| format!("{e:?}"))
}

fn written(certs: &TestCerts) -> (tempfile::TempDir, CertPaths) {
    let dir = tempfile::tempdir().unwrap();
    let paths = certs.write_to(dir.path());
    (dir, paths)
}

/// A health server over TLS with `certs`' pair written to files re-read every `reload`.
struct Served {
    _dir: tempfile::TempDir,
    paths: CertPaths,
    tls: ServerTls,
    url: String,
}

impl Served {
    async fn start(certs: &TestCerts, reload: Duration) -> Self {
        let (dir, paths) = written(certs);
        let tls = ServerTls::load(CertFiles::new(&paths.cert, &paths.key), reload).unwrap();
        let url = serve(&tls).await;
        Self {
            _dir: dir,
            paths,
            tls,
            url,
        }
    }

    /// A client that trusts the CA of the pair first served.
    fn trust(&self) -> ClientTls {
        ClientTls::from_ca_file(&self.paths.ca).unwrap()
    }
}

#[tokio::test]
async fn a_client_with_the_ca_connects_and_one_without_it_is_refused() {
    let served = Served::start(&TestCerts::generate(), Duration::ZERO).await;
    let url = &served.url;
    check(url, Some(&served.trust())).await.unwrap();

    let refused = check(url, Some(&ClientTls::system_roots()))
        .await
        .unwrap_err();
    assert!(refused.contains("InvalidCertificate"), "{refused}");
    let other_ca = TestCerts::generate();
    let (_other_dir, other) = written(&other_ca);
    let refused = check(url, Some(&ClientTls::from_ca_file(&other.ca).unwrap()))
        .await
        .unwrap_err();
    assert!(refused.contains("InvalidCertificate"), "{refused}");
    // Plain HTTP/2 to a TLS port does not get an answer.
    let plain = url.replacen("https://", "http://", 1);
    check(&plain, None).await.unwrap_err();
}

#[tokio::test]
async fn the_server_name_can_differ_from_the_host_dialled() {
    // A replica dialled by its pod IP whose certificate names the Service.
    let served = Served::start(
        &TestCerts::for_names(&["chatd.example.svc"]),
        Duration::ZERO,
    )
    .await;
    let refused = check(&served.url, Some(&served.trust())).await.unwrap_err();
    assert!(refused.contains("InvalidCertificate"), "{refused}");
    check(
        &served.url,
        Some(&served.trust().with_server_name("chatd.example.svc")),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_rotated_certificate_is_used_by_new_connections_without_a_restart() {
    // A short interval: the watcher, not a manual reload, must pick the new pair up.
    let served = Served::start(&TestCerts::generate(), Duration::from_millis(50)).await;
    let (url, paths) = (&served.url, &served.paths);
    let trust_first = served.trust();
    check(url, Some(&trust_first)).await.unwrap();

    // Rotate to a pair from another CA, as cert-manager would: both files replaced.
    let second = TestCerts::generate();
    let second_dir = tempfile::tempdir().unwrap();
    let second_paths = second.write_to(second_dir.path());
    std::fs::write(&paths.key, &second.key_pem).unwrap();
    std::fs::write(&paths.cert, &second.cert_pem).unwrap();
    let trust_second = ClientTls::from_ca_file(&second_paths.ca).unwrap();
    // Wait for the watcher's next read (the condition, not a fixed sleep, ends the wait).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while check(url, Some(&trust_second)).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let old = check(url, Some(&trust_first)).await.unwrap_err();
    assert!(old.contains("InvalidCertificate"), "{old}");
}

#[tokio::test]
async fn a_half_written_rotation_keeps_the_previous_pair_in_use() {
    let served = Served::start(&TestCerts::generate(), Duration::ZERO).await;
    let (url, paths, tls) = (&served.url, &served.paths, &served.tls);
    let trust_first = served.trust();

    // The certificate is new, the key still the old one: not a pair.
    let second = TestCerts::generate();
    std::fs::write(&paths.cert, &second.cert_pem).unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(err.contains("cannot serve the certificate"), "{err}");
    check(url, Some(&trust_first)).await.unwrap();

    // The key arrives: the pair loads.
    std::fs::write(&paths.key, &second.key_pem).unwrap();
    assert!(tls.reload().unwrap());
    assert!(!tls.reload().unwrap(), "unchanged files are not a new pair");
    check(url, Some(&trust_first)).await.unwrap_err();
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_does_not_hold_up_others() {
    let served = Served::start(&TestCerts::generate(), Duration::ZERO).await;
    let addr = served.url.trim_start_matches("https://").to_owned();
    // Connected, silent: the server waits for its ClientHello.
    let _silent = connect_silently(&addr, 8).await;
    check(&served.url, Some(&served.trust())).await.unwrap();
}

async fn connect_silently(addr: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut streams = Vec::new();
    for _ in 0..n {
        streams.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    streams
}
