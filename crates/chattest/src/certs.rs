//! Certificates made at test time: a CA, and server certificates it signs.

use std::path::{Path, PathBuf};

/// A CA and a server certificate it signed, as PEM. [`TestCerts::generate`] names `127.0.0.1`
/// and `localhost`; [`TestCerts::for_names`] others (IP addresses become IP SANs).
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The CA's certificate (what a client trusts).
    pub ca_pem: String,
    /// The server's certificate.
    pub cert_pem: String,
    /// The server's private key.
    pub key_pem: String,
    /// The CA, to sign more server certificates with [`TestCerts::sign`].
    issuer: std::sync::Arc<rcgen::Issuer<'static, rcgen::KeyPair>>,
}

/// Where [`TestCerts::write_to`] put the files.
#[derive(Debug, Clone)]
pub struct CertPaths {
    /// `ca.crt`.
    pub ca: PathBuf,
    /// `tls.crt`.
    pub cert: PathBuf,
    /// `tls.key`.
    pub key: PathBuf,
}

impl TestCerts {
    /// A fresh CA and a server certificate for `127.0.0.1` and `localhost`.
    pub fn generate() -> Self {
        Self::for_names(&["127.0.0.1", "localhost"])
    }

    /// A fresh CA and a server certificate for `names`.
    #[allow(clippy::expect_used)] // test support: certificates that cannot be made fail the test
    pub fn for_names(names: &[&str]) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("a CA certificate");
        let issuer = std::sync::Arc::new(Issuer::new(ca_params, ca_key));
        let (cert_pem, key_pem) = sign(&issuer, names);
        Self {
            ca_pem: ca_cert.pem(),
            cert_pem,
            key_pem,
            issuer,
        }
    }

    /// Another server certificate and key from the same CA, for `names`.
    pub fn sign(&self, names: &[&str]) -> (String, String) {
        sign(&self.issuer, names)
    }

    /// Writes `ca.crt`, `tls.crt` and `tls.key` (the layout of a cert-manager Secret) into `dir`.
    #[allow(clippy::expect_used)] // test support: a file that cannot be written fails the test
    pub fn write_to(&self, dir: &Path) -> CertPaths {
        let paths = CertPaths {
            ca: dir.join("ca.crt"),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        for (path, text) in [
            (&paths.ca, &self.ca_pem),
            (&paths.cert, &self.cert_pem),
            (&paths.key, &self.key_pem),
        ] {
            std::fs::write(path, text).expect("write a certificate file");
        }
        paths
    }
}

#[allow(clippy::expect_used)] // test support: certificates that cannot be made fail the test
fn sign(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("a server key");
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let params = rcgen::CertificateParams::new(names).expect("server parameters");
    let cert = params
        .signed_by(&key, issuer)
        .expect("a server certificate");
    (cert.pem(), key.serialize_pem())
}
