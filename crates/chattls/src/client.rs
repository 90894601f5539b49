//! The client side: what a client trusts, and endpoints that use it.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::pem::{self, TlsError};

/// What a client trusts when it dials `https://`: the certificates of a CA bundle, or (by
/// default) the system's roots; and optionally the name the server's certificate must carry
/// when it is not the URL's host (replicas dialled by pod IP with a certificate for the
/// Service's name).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    ca_pem: Option<Vec<u8>>,
    server_name: Option<String>,
}

impl ClientTls {
    /// Trusts the system's roots.
    pub fn system_roots() -> Self {
        Self::default()
    }

    /// Trusts the certificates in a PEM bundle (and only those).
    pub fn from_ca_file(path: impl AsRef<Path>) -> Result<Self, TlsError> {
        let path = path.as_ref();
        let pem = pem::read(path)?;
        pem::certificates(path, &pem)?;
        Ok(Self {
            ca_pem: Some(pem),
            server_name: None,
        })
    }

    /// Checks the server's certificate against `name` instead of the URL's host.
    #[must_use]
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// The same settings for `tonic`.
    pub fn config(&self) -> ClientTlsConfig {
        let config = match &self.ca_pem {
            Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        match &self.server_name {
            Some(name) => config.domain_name(name.clone()),
            None => config,
        }
    }
}

/// Why an endpoint cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Not an `http://` or `https://` URL.
    #[error("{url:?} is not an http:// or https:// URL")]
    Scheme {
        /// What was given.
        url: String,
    },
    /// tonic refused the URL or the TLS settings.
    #[error("{url:?}: {source}")]
    Invalid {
        /// What was given.
        url: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
}

/// An endpoint for `url`: plain HTTP/2 for `http://`, TLS for `https://` with `tls` (the
/// system's roots when `None`).
pub fn endpoint(url: &str, tls: Option<&ClientTls>) -> Result<Endpoint, EndpointError> {
    let invalid = |source| EndpointError::Invalid {
        url: url.to_owned(),
        source,
    };
    let secure = if url.starts_with("https://") {
        true
    } else if url.starts_with("http://") {
        false
    } else {
        return Err(EndpointError::Scheme {
            url: url.to_owned(),
        });
    };
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(invalid)?;
    if !secure {
        return Ok(endpoint);
    }
    let config = tls.cloned().unwrap_or_default().config();
    endpoint.tls_config(config).map_err(invalid)
}
