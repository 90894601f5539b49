use std::io;
use std::net::SocketAddr;

/// Why the daemon could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum ChatdError {
    /// The listen address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// The address other replicas and agents use for this one is missing or unusable.
    #[error(transparent)]
    Advertise(#[from] crate::AdvertiseError),
    /// A TLS certificate, key or CA bundle cannot be used.
    #[error(transparent)]
    Tls(#[from] chattls::TlsError),
    /// The reflection service could not be built from the embedded descriptors.
    #[error("cannot build the gRPC reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// A listener's task ended abnormally (it panicked).
    #[error("a gRPC listener stopped: {0}")]
    ServerTask(String),
    /// The gRPC server failed while serving.
    #[error("gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
    /// The database could not be reached or migrated.
    #[error(transparent)]
    Store(#[from] chatstore::StoreError),
    /// The data dir (or a file in it) is not usable.
    #[error("data dir: {path}")]
    DataDir {
        /// The path.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// `chatd provisioner` needs to know where agents report.
    #[error(
        "--control-plane-url is required: the provisioner runs apart from the daemon's agent API"
    )]
    NoControlPlaneUrl,
    /// The configuration is inconsistent (e.g. timings that contradict each other).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// `chatd admin token` cannot mint a token for the user it was given (the text says why).
    #[error("{0}")]
    AdminToken(String),
    /// Writing a command's output failed.
    #[error("cannot write the output")]
    Output(#[source] io::Error),
    /// Installing the signal handlers failed.
    #[error("cannot install signal handlers")]
    Signals(#[source] io::Error),
}
