//! The connection to a workspace agent (spec/chattool.md §1 `WorkspaceAgentConn`): one dialled
//! connection, every request scoped to the chat. [`WorkspaceConn`] is implemented for the
//! generated `wsagent.v1` client over an intercepted channel (what `wsagent::client` dials), and
//! tests may implement it themselves.

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

#[async_trait]
impl<F> WorkspaceConn for AgentClient<InterceptedService<Channel, F>>
where
    F: Interceptor + Clone + Send + Sync + 'static,
{
    async fn start_process(
        &self,
        request: pb::StartProcessRequest,
    ) -> Result<pb::StartProcessResponse, Status> {
        Ok(
            AgentClient::start_process(&mut self.clone(), Request::new(request))
                .await?
                .into_inner(),
        )
    }

    async fn process_output(
        &self,
        request: pb::ProcessOutputRequest,
    ) -> Result<pb::ProcessOutputResponse, Status> {
        Ok(
            AgentClient::process_output(&mut self.clone(), Request::new(request))
                .await?
                .into_inner(),
        )
    }

    async fn list_processes(
        &self,
        request: pb::ListProcessesRequest,
    ) -> Result<pb::ListProcessesResponse, Status> {
        Ok(
            AgentClient::list_processes(&mut self.clone(), Request::new(request))
                .await?
                .into_inner(),
        )
    }

    async fn signal_process(&self, request: pb::SignalProcessRequest) -> Result<(), Status> {
        AgentClient::signal_process(&mut self.clone(), Request::new(request)).await?;
        Ok(())
    }

    async fn read_file(
        &self,
        request: pb::ReadFileRequest,
    ) -> Result<pb::ReadFileResponse, Status> {
        Ok(
            AgentClient::read_file(&mut self.clone(), Request::new(request))
                .await?
                .into_inner(),
        )
    }

    async fn write_file(&self, request: pb::WriteFileRequest) -> Result<(), Status> {
        AgentClient::write_file(&mut self.clone(), Request::new(request)).await?;
        Ok(())
    }

    async fn edit_files(
        &self,
        request: pb::EditFilesRequest,
    ) -> Result<pb::EditFilesResponse, Status> {
        Ok(
            AgentClient::edit_files(&mut self.clone(), Request::new(request))
                .await?
                .into_inner(),
        )
    }
}
