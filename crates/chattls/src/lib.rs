//! TLS for chatd's gRPC connections, on rustls with the aws-lc-rs provider.
//!
//! - [`ServerTls`]: a listener's certificate and key, read from PEM files and re-read when the
//!   files change (cert-manager rotates them in place), and [`ServerTls::incoming`], the TLS
//!   connections a TCP listener accepts, ready for `tonic`'s `serve_with_incoming`.
//! - [`ClientTls`]: what a client trusts (a CA bundle, or the system's roots) and the name it
//!   checks the server's certificate against; [`endpoint`] makes a `tonic` endpoint that speaks
//!   TLS exactly when its URL is `https://`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use chattls::{CertFiles, ClientTls, ServerTls};
//!
//! // Server: re-read the files every 10 s; serve what the listener accepts.
//! let files = CertFiles::new("/etc/chatd/tls/tls.crt", "/etc/chatd/tls/tls.key");
//! let tls = ServerTls::load(files, Duration::from_secs(10))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7420").await?;
//! let _incoming = tls.incoming(listener); // give this to tonic's `serve_with_incoming`
//!
//! // Client: trust one CA, check the certificate against the URL's host.
//! let trust = ClientTls::from_ca_file("/etc/chatd/tls/ca.crt")?;
//! let _channel = chattls::endpoint("https://chatd.example:7420", Some(&trust))?.connect_lazy();
//! # Ok(()) }
//! ```
//!
//! What it will not do: client certificates (mutual TLS), OCSP stapling, or a crypto provider
//! other than aws-lc-rs.

mod client;
mod pem;
mod server;

pub use client::{ClientTls, EndpointError, endpoint};
pub use pem::TlsError;
pub use server::{CertFiles, HANDSHAKE_TIMEOUT, ServerTls, TlsIncoming};

/// The one crypto provider of every TLS connection chatd makes or accepts.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
