//! `chatd serve`: the gRPC server and its lifecycle.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::ChatdError;

/// What `chatd serve` needs to run.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address of the gRPC listener; port 0 picks a free port.
    pub listen: SocketAddr,
    /// How long in-flight calls may take to finish after shutdown is requested.
    pub shutdown_grace: Duration,
    /// The database, when configured.
    pub database: Option<DatabaseConfig>,
}

/// The daemon's database settings.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// PostgreSQL URL.
    pub url: String,
    /// Apply pending migrations at start.
    pub migrate: bool,
    /// How long to wait for the database at start.
    pub connect_timeout: Duration,
}

/// Services advertised by reflection. Only services this process actually implements are
/// listed; the chat services join as they are implemented.
const SERVED: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
];

/// Serves until `shutdown` resolves, then stops accepting, marks health NOT_SERVING, and waits
/// up to the grace period for in-flight calls before returning.
///
/// The bound address is logged as `addr=<ip:port>` once the listener is up.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ChatdError> {
    // The database comes first: the daemon reports SERVING only once its schema is current.
    let _pool = match &config.database {
        Some(db) => {
            let pool = crate::connect_database(&db.url, db.connect_timeout).await?;
            if db.migrate {
                crate::apply_migrations(&pool).await?;
            }
            Some(pool)
        }
        None => None,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ChatdError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ChatdError::Bind {
        addr: config.listen,
        source,
    })?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", ServingStatus::Serving)
        .await;

    let mut reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(chatproto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    for name in SERVED {
        reflection = reflection.with_service_name(*name);
    }
    let reflection = reflection.build_v1().map_err(ChatdError::Reflection)?;

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            // A dropped sender also means "stop".
            let _ = stop_rx.await;
        });
    tokio::pin!(server);
    info!(%addr, "listening");

    tokio::select! {
        result = &mut server => return result.map_err(ChatdError::Serve),
        () = shutdown => {}
    }

    info!(grace = ?config.shutdown_grace, "shutting down");
    health_reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let _ = stop_tx.send(());
    match tokio::time::timeout(config.shutdown_grace, &mut server).await {
        Ok(result) => result.map_err(ChatdError::Serve)?,
        Err(_) => warn!("grace period over; closing the remaining calls"),
    }
    info!("stopped");
    Ok(())
}

/// SIGINT and SIGTERM handlers, installed before the server starts so an early signal is not
/// lost (or, worse, kills the process without a clean shutdown).
#[derive(Debug)]
pub struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers. Needs a Tokio runtime.
    pub fn install() -> Result<Self, ChatdError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).map_err(ChatdError::Signals)?,
            terminate: signal(SignalKind::terminate()).map_err(ChatdError::Signals)?,
        })
    }

    /// Resolves on the first SIGINT or SIGTERM.
    pub async fn recv(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => info!("received SIGINT"),
            _ = self.terminate.recv() => info!("received SIGTERM"),
        }
    }
}
