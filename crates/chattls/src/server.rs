//! The server side: a certificate re-read when its files change, and the TLS connections a
//! listener accepts.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

use crate::pem::{self, TlsError};

/// How long a client may take to complete its handshake before its connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once on one listener; more connections wait in the listen backlog,
/// so a flood of clients that never finish their handshake cannot exhaust the process.
const MAX_HANDSHAKES: usize = 256;

/// Where a listener's certificate chain and private key are, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate chain, the listener's own certificate first (`tls.crt`).
    pub cert: PathBuf,
    /// Its private key: PKCS#8, PKCS#1 or SEC1 (`tls.key`).
    pub key: PathBuf,
}

impl CertFiles {
    /// The chain in `cert` and the key in `key`.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
        }
    }

    /// Reads and checks both files.
    fn load(&self) -> Result<Loaded, TlsError> {
        let cert_pem = pem::read(&self.cert)?;
        let key_pem = pem::read(&self.key)?;
        let key = pem::certified_key((&self.cert, &cert_pem), (&self.key, &key_pem))?;
        Ok(Loaded {
            cert_pem,
            key_pem,
            key,
        })
    }
}

/// A listener's TLS: the certificate in use and the files it came from. Clones share both.
///
/// Every `reload_interval` the files are read again; when their contents differ from what is in
/// use and they hold a valid pair, new handshakes use the new pair (connections already open
/// keep theirs). A pair that does not load (a half-written rotation, a key that does not match)
/// is logged and the previous one stays in use.
#[derive(Debug, Clone)]
pub struct ServerTls {
    current: Arc<Current>,
    config: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    /// Loads the pair in `files` (an error names the file and what is wrong with it) and, when
    /// `reload_interval` is not zero, starts re-reading them on the current Tokio runtime until
    /// every clone of the result is dropped.
    pub fn load(files: CertFiles, reload_interval: Duration) -> Result<Self, TlsError> {
        let loaded = files.load()?;
        let current = Arc::new(Current {
            files,
            state: RwLock::new(loaded),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // gRPC is HTTP/2 only.
        config.alpn_protocols = vec![b"h2".to_vec()];
        if !reload_interval.is_zero() {
            tokio::spawn(watch(Arc::downgrade(&current), reload_interval));
        }
        Ok(Self {
            current,
            config: Arc::new(config),
        })
    }

    /// Reads the files now; `Ok(true)` when they held a new pair, now in use.
    pub fn reload(&self) -> Result<bool, TlsError> {
        self.current.reload()
    }

    /// The TLS connections `listener` accepts, each with TCP_NODELAY set; for `tonic`'s
    /// `serve_with_incoming`. Handshakes run concurrently (a slow client does not hold up the
    /// others) and each must finish within [`HANDSHAKE_TIMEOUT`]; failed ones are logged at
    /// debug level and dropped. Accepting stops when the stream is dropped.
    pub fn incoming(&self, listener: TcpListener) -> TlsIncoming {
        let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
        let acceptor = TlsAcceptor::from(self.config.clone());
        let task = tokio::spawn(accept(listener, acceptor, tx));
        TlsIncoming { rx, task }
    }
}

/// The connections a listener accepted and completed a TLS handshake with; see
/// [`ServerTls::incoming`].
#[derive(Debug)]
pub struct TlsIncoming {
    rx: mpsc::Receiver<std::io::Result<TlsStream<TcpStream>>>,
    task: tokio::task::JoinHandle<()>,
}

impl tokio_stream::Stream for TlsIncoming {
    type Item = std::io::Result<TlsStream<TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The accept loop behind [`TlsIncoming`].
async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<std::io::Result<TlsStream<TcpStream>>>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors and the like: give the process a moment instead of spinning.
                warn!(error = %err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(err) = tcp.set_nodelay(true) {
            debug!(%peer, error = %err, "cannot set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let sender = tx.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop(permit);
            match handshake {
                Ok(Ok(stream)) => {
                    // A closed receiver means the server stopped: the connection just closes.
                    let _ = sender.send(Ok(stream)).await;
                }
                Ok(Err(err)) => debug!(%peer, error = %err, "TLS handshake failed"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        });
        if tx.is_closed() {
            return;
        }
    }
}

/// The pair in use, and where it comes from.
#[derive(Debug)]
struct Current {
    files: CertFiles,
    state: RwLock<Loaded>,
}

/// A loaded pair and the file contents it came from.
struct Loaded {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("chain_len", &self.key.cert.len())
            .finish_non_exhaustive()
    }
}

impl Current {
    fn reload(&self) -> Result<bool, TlsError> {
        let cert_pem = pem::read(&self.files.cert)?;
        let key_pem = pem::read(&self.files.key)?;
        {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            if state.cert_pem == cert_pem && state.key_pem == key_pem {
                return Ok(false);
            }
        }
        let key = pem::certified_key((&self.files.cert, &cert_pem), (&self.files.key, &key_pem))?;
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = Loaded {
            cert_pem,
            key_pem,
            key,
        };
        info!(cert = %self.files.cert.display(), "loaded a new TLS certificate");
        Ok(true)
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.state
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .key
                .clone(),
        )
    }
}

/// Re-reads the files every `interval` while the listener's TLS lives. A failure is logged once
/// per distinct error, not at every tick.
async fn watch(current: Weak<Current>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut last_error = None;
    loop {
        ticks.tick().await;
        let Some(current) = current.upgrade() else {
            return;
        };
        match current.reload() {
            Ok(_) => last_error = None,
            Err(err) => {
                let text = err.to_string();
                if last_error.as_ref() != Some(&text) {
                    warn!(error = %text, "cannot load the new TLS certificate; the previous one stays in use");
                    last_error = Some(text);
                }
            }
        }
    }
}
