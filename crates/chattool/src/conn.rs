//! The connection to a workspace agent (spec/chattool.md §1 `WorkspaceAgentConn`): one dialled
//! connection, every request scoped to the chat. [`WorkspaceConn`] is implemented for the
//! generated `wsagent.v1` client over an intercepted channel (what `wsagent::client` dials), and
//! tests may implement it themselves.

use std::time::Duration;

use async_trait::async_trait;
use chatproto::tonic::service::Interceptor;
use chatproto::tonic::service::interceptor::InterceptedService;
use chatproto::tonic::transport::Channel;
use chatproto::tonic::{Request, Status};
use chatproto::wsagent::v1 as pb;
use chatproto::wsagent::v1::agent_client::AgentClient;

/// What the tools need from a workspace agent.
#[async_trait]
pub trait WorkspaceConn: Send + Sync {
    /// Starts a process (or finds the one started with the same idempotency key).
    async fn start_process(
        &self,
        request: pb::StartProcessRequest,
    ) -> Result<pb::StartProcessResponse, Status>;
    /// Reads a process's output, waiting up to `wait_timeout` for it to exit.
    async fn process_output(
        &self,
        request: pb::ProcessOutputRequest,
    ) -> Result<pb::ProcessOutputResponse, Status>;
    /// The chat's processes.
    async fn list_processes(
        &self,
        request: pb::ListProcessesRequest,
    ) -> Result<pb::ListProcessesResponse, Status>;
    /// Signals a process's group.
    async fn signal_process(&self, request: pb::SignalProcessRequest) -> Result<(), Status>;
    /// Reads a file with line numbers.
    async fn read_file(&self, request: pb::ReadFileRequest)
    -> Result<pb::ReadFileResponse, Status>;
    /// Writes a file atomically.
    async fn write_file(&self, request: pb::WriteFileRequest) -> Result<(), Status>;
    /// Applies an all-or-nothing batch of edits.
    async fn edit_files(
        &self,
        request: pb::EditFilesRequest,
    ) -> Result<pb::EditFilesResponse, Status>;
    /// The agent's working directory (its expanded directory, else its home), when known: the
    /// primary root of chatd's lexical path check (spec/chattool.md §10.4). `None` leaves the
    /// check to the agent alone.
    fn working_directory(&self) -> Option<&str> {
        None
    }
}

/// Shared connections are connections (e.g. `Arc<dyn WorkspaceConn>` in a cache).
#[async_trait]
impl<T: WorkspaceConn + ?Sized> WorkspaceConn for std::sync::Arc<T> {
    async fn start_process(
        &self,
        request: pb::StartProcessRequest,
    ) -> Result<pb::StartProcessResponse, Status> {
        (**self).start_process(request).await
    }

    async fn process_output(
        &self,
        request: pb::ProcessOutputRequest,
    ) -> Result<pb::ProcessOutputResponse, Status> {
        (**self).process_output(request).await
    }

    async fn list_processes(
        &self,
        request: pb::ListProcessesRequest,
    ) -> Result<pb::ListProcessesResponse, Status> {
        (**self).list_processes(request).await
    }

    async fn signal_process(&self, request: pb::SignalProcessRequest) -> Result<(), Status> {
        (**self).signal_process(request).await
    }

    async fn read_file(
        &self,
        request: pb::ReadFileRequest,
    ) -> Result<pb::ReadFileResponse, Status> {
        (**self).read_file(request).await
    }

    async fn write_file(&self, request: pb::WriteFileRequest) -> Result<(), Status> {
        (**self).write_file(request).await
    }

    async fn edit_files(
        &self,
        request: pb::EditFilesRequest,
    ) -> Result<pb::EditFilesResponse, Status> {
        (**self).edit_files(request).await
    }

    fn working_directory(&self) -> Option<&str> {
        (**self).working_directory()
    }
}

/// A connection together with the agent's working directory (what the engine knows from the
/// agent's row), so the file tools can check paths before sending them.
#[derive(Debug, Clone)]
pub struct Rooted<C> {
    /// The connection.
    pub conn: C,
    /// The agent's working directory.
    pub working_directory: String,
}

#[async_trait]
impl<C: WorkspaceConn> WorkspaceConn for Rooted<C> {
    async fn start_process(
        &self,
        request: pb::StartProcessRequest,
    ) -> Result<pb::StartProcessResponse, Status> {
        self.conn.start_process(request).await
    }

    async fn process_output(
        &self,
        request: pb::ProcessOutputRequest,
    ) -> Result<pb::ProcessOutputResponse, Status> {
        self.conn.process_output(request).await
    }

    async fn list_processes(
        &self,
        request: pb::ListProcessesRequest,
    ) -> Result<pb::ListProcessesResponse, Status> {
        self.conn.list_processes(request).await
    }

    async fn signal_process(&self, request: pb::SignalProcessRequest) -> Result<(), Status> {
        self.conn.signal_process(request).await
    }

    async fn read_file(
        &self,
        request: pb::ReadFileRequest,
    ) -> Result<pb::ReadFileResponse, Status> {
        self.conn.read_file(request).await
    }

    async fn write_file(&self, request: pb::WriteFileRequest) -> Result<(), Status> {
        self.conn.write_file(request).await
    }

    async fn edit_files(
        &self,
        request: pb::EditFilesRequest,
    ) -> Result<pb::EditFilesResponse, Status> {
        self.conn.edit_files(request).await
    }

    fn working_directory(&self) -> Option<&str> {
        Some(&self.working_directory)
    }
}

/// How long chatd waits for an agent's answer to a call that does not wait on purpose (a
/// process output's `wait_timeout` comes on top): a stopped or hung agent must not hold a tool
/// call, and its chat, for good.
pub const AGENT_CALL_DEADLINE: Duration = Duration::from_secs(60);

/// The answer of an agent call, or DEADLINE_EXCEEDED once `limit` has passed without one.
async fn within<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<chatproto::tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(limit, call).await {
        Ok(answer) => Ok(answer?.into_inner()),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "the workspace agent did not answer within {} s",
            limit.as_secs()
        ))),
    }
}

#[async_trait]
impl<F> WorkspaceConn for AgentClient<InterceptedService<Channel, F>>
where
    F: Interceptor + Clone + Send + Sync + 'static,
{
    async fn start_process(
        &self,
        request: pb::StartProcessRequest,
    ) -> Result<pb::StartProcessResponse, Status> {
        let mut client = self.clone();
        within(
            AGENT_CALL_DEADLINE,
            AgentClient::start_process(&mut client, Request::new(request)),
        )
        .await
    }

    async fn process_output(
        &self,
        request: pb::ProcessOutputRequest,
    ) -> Result<pb::ProcessOutputResponse, Status> {
        let waits = request
            .wait_timeout
            .and_then(|w| Duration::try_from(w).ok())
            .unwrap_or_default();
        let mut client = self.clone();
        within(
            waits.saturating_add(AGENT_CALL_DEADLINE),
            AgentClient::process_output(&mut client, Request::new(request)),
        )
        .await
    }

    async fn list_processes(
        &self,
        request: pb::ListProcessesRequest,
    ) -> Result<pb::ListProcessesResponse, Status> {
        let mut client = self.clone();
        within(
            AGENT_CALL_DEADLINE,
            AgentClient::list_processes(&mut client, Request::new(request)),
        )
        .await
    }

    async fn signal_process(&self, request: pb::SignalProcessRequest) -> Result<(), Status> {
        let mut client = self.clone();
        within(
            AGENT_CALL_DEADLINE,
            AgentClient::signal_process(&mut client, Request::new(request)),
        )
        .await?;
        Ok(())
    }

    async fn read_file(
        &self,
        request: pb::ReadFileRequest,
    ) -> Result<pb::ReadFileResponse, Status> {
        let mut client = self.clone();
        within(
            AGENT_CALL_DEADLINE,
            AgentClient::read_file(&mut client, Request::new(request)),
        )
        .await
    }

    async fn write_file(&self, request: pb::WriteFileRequest) -> Result<(), Status> {
        let mut client = self.clone();
        within(
            AGENT_CALL_DEADLINE,
            AgentClient::write_file(&mut client, Request::new(request)),
        )
        .await?;
        Ok(())
    }

    async fn edit_files(
        &self,
        request: pb::EditFilesRequest,
    ) -> Result<pb::EditFilesResponse, Status> {
        let mut client = self.clone();
        within(
            AGENT_CALL_DEADLINE,
            AgentClient::edit_files(&mut client, Request::new(request)),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_agent_that_never_answers_is_a_deadline_exceeded() {
        let never = std::future::pending::<Result<chatproto::tonic::Response<()>, Status>>();
        let status = within(Duration::from_millis(20), never).await.unwrap_err();
        assert_eq!(status.code(), chatproto::tonic::Code::DeadlineExceeded);
        assert!(status.message().contains("did not answer"), "{status}");
        let answered = async { Ok(chatproto::tonic::Response::new(7)) };
        assert_eq!(
            within(Duration::from_millis(20), answered).await.unwrap(),
            7
        );
    }
}
