//! Dialing: the control plane's client of an agent (`wsagent.v1.Agent`) and the agent's client
//! of the control plane (`chatd.v1.AgentApiService`), both authenticated with a bearer value.
//!
//! Agent addresses are what the agent reports in its heartbeats: `http://127.0.0.1:4100` for
//! TCP, `https://…` for TCP with TLS (checked against the [`ClientTls`] given, the system's roots
//! when none), or `unix:/path/to/agent.sock` for a unix socket.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use chatproto::chatd::v1::agent_api_service_client::AgentApiServiceClient;
use chatproto::wsagent::v1::agent_client::AgentClient;
pub use chattls::ClientTls;
use hyper_util::rt::TokioIo;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

/// Why dialing failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The address is neither `http://host:port` nor `unix:/path`.
    #[error("invalid agent address {address:?}: {reason}")]
    InvalidAddress {
        /// The address given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token or secret cannot be sent as a header value.
    #[error("the bearer value contains characters not allowed in a header")]
    InvalidBearer,
    /// The connection could not be made.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The address dialed.
        address: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Adds `authorization: Bearer <value>` to every request.
#[derive(Debug, Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    /// A bearer interceptor for this token or secret.
    pub fn new(value: &str) -> Result<Self, DialError> {
        format!("Bearer {value}")
            .parse()
            .map(Self)
            .map_err(|_| DialError::InvalidBearer)
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A client of an agent.
pub type AgentConn = AgentClient<InterceptedService<Channel, Bearer>>;

/// A client of the control plane's agent API.
pub type ControlPlaneConn = AgentApiServiceClient<InterceptedService<Channel, Bearer>>;

/// Opens a channel to `address` (`http://…`, `https://…` or `unix:/path`), failing after
/// `connect_timeout`.
pub async fn channel(
    address: &str,
    connect_timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<Channel, DialError> {
    match target(address, connect_timeout, tls)? {
        Target::Tcp(endpoint) => endpoint.connect().await,
        Target::Unix(endpoint, path) => endpoint.connect_with_connector(unix_connector(path)).await,
    }
    .map_err(|source| DialError::Connect {
        address: address.to_owned(),
        source,
    })
}

/// A channel that connects on first use (and reconnects after failures), for peers that may
/// not be up yet.
pub fn lazy_channel(
    address: &str,
    connect_timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<Channel, DialError> {
    Ok(match target(address, connect_timeout, tls)? {
        Target::Tcp(endpoint) => endpoint.connect_lazy(),
        Target::Unix(endpoint, path) => endpoint.connect_with_connector_lazy(unix_connector(path)),
    })
}

enum Target {
    Tcp(Endpoint),
    Unix(Endpoint, PathBuf),
}

fn target(
    address: &str,
    connect_timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<Target, DialError> {
    let invalid = |reason: &str| DialError::InvalidAddress {
        address: address.to_owned(),
        reason: reason.to_owned(),
    };
    if let Some(path) = address.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(invalid("the socket path is empty"));
        }
        // The URI is required by the API but unused: the connector decides where to go.
        let endpoint = configured(
            Endpoint::from_static("http://agent.invalid"),
            connect_timeout,
        );
        return Ok(Target::Unix(endpoint, PathBuf::from(path)));
    }
    if !(address.starts_with("http://") || address.starts_with("https://")) {
        return Err(invalid(
            "expected http://host:port, https://host:port or unix:/path",
        ));
    }
    let endpoint = chattls::endpoint(address, tls).map_err(|e| invalid(&e.to_string()))?;
    Ok(Target::Tcp(configured(endpoint, connect_timeout)))
}

/// How often an idle or busy connection is pinged; a peer that does not answer a ping within
/// [`KEEPALIVE_TIMEOUT`] (a stopped process, a host gone) is dropped, failing its calls.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Every connection: the connect timeout, HTTP/2 keepalive pings (also while no call is open),
/// and no Nagle delay on small frames.
fn configured(endpoint: Endpoint, connect_timeout: Duration) -> Endpoint {
    endpoint
        .connect_timeout(connect_timeout)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true)
}

fn unix_connector(
    path: PathBuf,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<TokioIo<tokio::net::UnixStream>>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move {
            tokio::net::UnixStream::connect(path)
                .await
                .map(TokioIo::new)
        }
    })
}

/// Dials an agent with the workspace's control-plane secret.
pub async fn connect_agent(
    address: &str,
    secret: &str,
    connect_timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<AgentConn, DialError> {
    let bearer = Bearer::new(secret)?;
    let channel = channel(address, connect_timeout, tls).await?;
    Ok(AgentClient::with_interceptor(channel, bearer))
}

/// The control plane's agent API with the agent's token, connecting on first use (the control
/// plane may still be starting).
pub fn connect_control_plane_lazy(
    url: &str,
    token: &str,
    connect_timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<ControlPlaneConn, DialError> {
    let bearer = Bearer::new(token)?;
    let channel = lazy_channel(url, connect_timeout, tls)?;
    Ok(AgentApiServiceClient::with_interceptor(channel, bearer))
}
