//! The replica's metrics endpoint (`--metrics-listen`): installs the Prometheus recorder and
//! serves the text exposition format at `GET /metrics`. The metrics themselves, their names and
//! labels, are listed in `chatengine::metrics`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use chatengine::metrics::{
    ACQUISITION_LAG, ACTIVE_RUNNERS, CLASSIFICATIONS, LAG_BUCKETS, RETRIES, STREAM_SUBSCRIBERS,
    TOOL_BUCKETS, TOOL_DURATION, TURNS,
};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::ChatdError;

/// The process's recorder: installed by the first [`serve_metrics`], shared by later ones.
fn recorder() -> Result<&'static PrometheusHandle, ChatdError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle);
    }
    let invalid = |e: metrics_exporter_prometheus::BuildError| {
        ChatdError::InvalidConfig(format!("cannot set up the Prometheus recorder: {e}"))
    };
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(TOOL_DURATION.into()), TOOL_BUCKETS)
        .map_err(invalid)?
        .set_buckets_for_metric(Matcher::Full(ACQUISITION_LAG.into()), LAG_BUCKETS)
        .map_err(invalid)?
        .install_recorder()
        .map_err(invalid)?;
    describe();
    Ok(HANDLE.get_or_init(|| handle))
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(TURNS, "Turns this replica finished, by outcome.");
    describe_counter!(RETRIES, "Model calls retried, by error kind and provider.");
    describe_counter!(
        CLASSIFICATIONS,
        "Failed model calls classified, by provider and classification source."
    );
    describe_histogram!(
        TOOL_DURATION,
        metrics::Unit::Seconds,
        "Tool call durations, by tool and outcome."
    );
    describe_histogram!(
        ACQUISITION_LAG,
        metrics::Unit::Seconds,
        "Delay from a chat's last change to its acquisition by this replica."
    );
    describe_gauge!(ACTIVE_RUNNERS, "Chats this replica runs.");
    describe_gauge!(STREAM_SUBSCRIBERS, "Open client streams, by kind.");
}

/// The metrics endpoint of a running daemon.
#[derive(Debug)]
pub(crate) struct MetricsServer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Stops accepting and closes open connections.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Installs the recorder (once per process) and serves `GET /metrics` on `listen` (port 0
/// picks a free port; the bound address is logged as `metrics_at=`).
pub(crate) async fn serve_metrics(listen: SocketAddr) -> Result<MetricsServer, ChatdError> {
    let handle = recorder()?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ChatdError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ChatdError::Bind {
        addr: listen,
        source,
    })?;
    info!(metrics_at = %addr, "serving Prometheus metrics at /metrics");
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(accept(listener, handle, stopped));
    Ok(MetricsServer { stop, task })
}

/// Accepts connections until told to stop; histograms are drained every few seconds.
async fn accept(
    listener: TcpListener,
    handle: &'static PrometheusHandle,
    mut stopped: watch::Receiver<bool>,
) {
    let mut upkeep = tokio::time::interval(Duration::from_secs(5));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = upkeep.tick() => handle.run_upkeep(),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let service = hyper::service::service_fn(move |request| respond(handle, request));
                    connections.spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await;
                    });
                }
                Err(err) => {
                    warn!(error = %err, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
}

async fn respond(
    handle: &'static PrometheusHandle,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            handle.render(),
        ),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "use GET\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "chatd serves its metrics at /metrics\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    Ok(response)
}
