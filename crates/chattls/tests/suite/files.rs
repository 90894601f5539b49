//! Loading: what a wrong file says.

use std::time::Duration;

use chattest::certs::TestCerts;
use chattls::{CertFiles, ClientTls, ServerTls};

#[tokio::test]
async fn unusable_files_are_refused_with_the_file_and_the_reason() {
    let certs = TestCerts::generate();
    let dir = tempfile::tempdir().unwrap();
    let paths = certs.write_to(dir.path());
    let missing = dir.path().join("missing.crt");
    let load = |cert: &std::path::Path, key: &std::path::Path| {
        ServerTls::load(CertFiles::new(cert, key), Duration::ZERO)
            .unwrap_err()
            .to_string()
    };

    let err = load(&missing, &paths.key);
    assert!(
        err.starts_with(&format!("cannot read {}", missing.display())),
        "{err}"
    );
    // The certificate and the key swapped.
    let err = load(&paths.key, &paths.cert);
    assert!(err.contains("holds no usable PEM certificate"), "{err}");
    assert!(err.contains("tls.key"), "{err}");
    // A key from another pair.
    let other = TestCerts::generate();
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, &other.key_pem).unwrap();
    let err = load(&paths.cert, &other_key);
    assert!(err.contains("cannot serve the certificate"), "{err}");

    let err = ClientTls::from_ca_file(&paths.key).unwrap_err().to_string();
    assert!(err.contains("holds no usable PEM certificate"), "{err}");
    assert!(ServerTls::load(CertFiles::new(&paths.cert, &paths.key), Duration::ZERO).is_ok());
}

#[test]
fn endpoints_speak_tls_exactly_for_https() {
    assert!(chattls::endpoint("http://127.0.0.1:1", None).is_ok());
    assert!(chattls::endpoint("https://127.0.0.1:1", None).is_ok());
    let err = chattls::endpoint("127.0.0.1:1", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not an http:// or https:// URL"), "{err}");
}
