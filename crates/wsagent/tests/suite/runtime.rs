//! The agent's runtime against a scripted control plane (in-process): what it reports, in
//! which order, when a shutdown meets a report still in flight.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatproto::chatd::v1 as cp;
use chatproto::chatd::v1::WorkspaceAgentLifecycle as Lifecycle;
use chatproto::chatd::v1::agent_api_service_server::{AgentApiService, AgentApiServiceServer};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};
use wsagent::runtime::{Mode, Options, run};

/// A control plane that records lifecycle reports and answers the `ready` report late.
#[derive(Clone)]
struct ControlPlane {
    directory: String,
    reports: Arc<Mutex<Vec<Lifecycle>>>,
    ready_received: Arc<Notify>,
    ready_reply_delay: Duration,
}

#[tonic::async_trait]
impl AgentApiService for ControlPlane {
    async fn get_manifest(
        &self,
        _: Request<cp::GetManifestRequest>,
    ) -> Result<Response<cp::GetManifestResponse>, Status> {
        Ok(Response::new(cp::GetManifestResponse {
            agent_id: "agent".into(),
            directory: self.directory.clone(),
            control_plane_secret: "secret".into(),
            confine_files: true,
            ..Default::default()
        }))
    }

    async fn heartbeat(
        &self,
        _: Request<cp::HeartbeatRequest>,
    ) -> Result<Response<cp::HeartbeatResponse>, Status> {
        Ok(Response::new(cp::HeartbeatResponse { interval: None }))
    }

    async fn update_lifecycle(
        &self,
        request: Request<cp::UpdateLifecycleRequest>,
    ) -> Result<Response<cp::UpdateLifecycleResponse>, Status> {
        let state = request.into_inner().lifecycle_state();
        self.reports.lock().unwrap().push(state);
        if state == Lifecycle::Ready {
            self.ready_received.notify_one();
            tokio::time::sleep(self.ready_reply_delay).await;
        }
        Ok(Response::new(cp::UpdateLifecycleResponse {}))
    }

    async fn batch_create_logs(
        &self,
        _: Request<cp::BatchCreateLogsRequest>,
    ) -> Result<Response<cp::BatchCreateLogsResponse>, Status> {
        Ok(Response::new(cp::BatchCreateLogsResponse {
            logs_overflowed: false,
        }))
    }
}

/// The stop signal comes while the control plane has recorded `ready` but not answered it yet
/// (a stop right after the agent turned ready, on a loaded machine): the agent must still
/// report `shutting_down` and `off`, and end cleanly.
#[tokio::test]
async fn a_stop_while_the_ready_report_is_in_flight_still_reports_off() {
    let directory = std::env::temp_dir().join(format!("wsagent-runtime-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let plane = ControlPlane {
        directory: directory.display().to_string(),
        reports: Arc::default(),
        ready_received: Arc::default(),
        ready_reply_delay: Duration::from_millis(500),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentApiServiceServer::new(plane.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let ready = plane.ready_received.clone();
    let options = Options::new(Mode::ControlPlane {
        url,
        token: "token".into(),
    });
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        run(options, async move { ready.notified().await }),
    )
    .await
    .expect("the agent stops");
    outcome.expect("a clean stop");
    assert_eq!(
        *plane.reports.lock().unwrap(),
        [
            Lifecycle::Starting,
            Lifecycle::Ready,
            Lifecycle::ShuttingDown,
            Lifecycle::Off
        ]
    );
    let _ = std::fs::remove_dir_all(&directory);
}
