//! Reading certificates and keys from PEM.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Why a certificate, a key or a CA bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no PEM `CERTIFICATE` block, or a broken one.
    #[error("{} holds no usable PEM certificate{}", path.display(), detail(reason))]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said, if it said anything.
        reason: Option<String>,
    },
    /// The file holds no PEM private key (PKCS#8, PKCS#1 or SEC1), or a broken one.
    #[error("{} holds no usable PEM private key{}", path.display(), detail(reason))]
    Key {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said, if it said anything.
        reason: Option<String>,
    },
    /// The key is not one the provider supports, or it does not belong to the certificate.
    #[error("the key in {} cannot serve the certificate in {}: {source}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the configuration.
    #[error("cannot configure TLS: {0}")]
    Config(#[source] rustls::Error),
}

fn detail(reason: &Option<String>) -> String {
    reason
        .as_ref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default()
}

/// Reads a whole file.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in `pem` (at least one).
pub(crate) fn certificates(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |reason: Option<String>| TlsError::Certificate {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(Some(e.to_string())))?;
    if certs.is_empty() {
        return Err(invalid(None));
    }
    Ok(certs)
}

/// The certificate chain in `cert_pem` with the key in `key_pem`, checked to belong together.
pub(crate) fn certified_key(
    (cert_path, cert_pem): (&Path, &[u8]),
    (key_path, key_pem): (&Path, &[u8]),
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certificates(cert_path, cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key {
        path: key_path.to_owned(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => None,
            other => Some(other.to_string()),
        },
    })?;
    CertifiedKey::from_der(chain, key, &crate::provider())
        .map(Arc::new)
        .map_err(|source| TlsError::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            source,
        })
}
