//! The connection to a workspace agent (spec/chattool.md §1 `WorkspaceAgentConn`): one dialled
//! connection, every request scoped to the chat. [`WorkspaceConn`] is implemented for the
//! generated `wsagent.v1` client over an intercepted channel (what `wsagent::client` dials)
//! wrapped in [`Deadlined`], which bounds every call; tests may implement it themselves.

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
    /// Stops what was started with an idempotency key (an interrupted or edited-away call): a
    /// running process gets SIGTERM, then SIGKILL.
    async fn cancel(&self, request: pb::CancelRequest) -> Result<pb::CancelResponse, Status>;
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

    async fn cancel(&self, request: pb::CancelRequest) -> Result<pb::CancelResponse, Status> {
        (**self).cancel(request).await
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

    async fn cancel(&self, request: pb::CancelRequest) -> Result<pb::CancelResponse, Status> {
        self.conn.cancel(request).await
    }

    fn working_directory(&self) -> Option<&str> {
        Some(&self.working_directory)
    }
}

/// How long chatd waits by default for an agent's answer to a call that does not wait on purpose
/// (a process output's `wait_timeout` comes on top): a stopped or hung agent must not hold a
/// tool call, and its chat, for good.
pub const DEFAULT_AGENT_CALL_DEADLINE: Duration = Duration::from_secs(60);

/// The text of an agent call that found no answer within its deadline. It says what the model
/// can do, as the connection errors do (spec/recovery.md §1).
pub fn no_answer_text(deadline: Duration) -> String {
    format!(
        "the workspace agent did not answer within {} s: it may be overloaded, stopped or \
         unreachable. Try again; if it keeps happening, call stop_workspace to stop the \
         workspace, then start_workspace to start it again",
        deadline.as_secs_f64().ceil() as u64
    )
}

/// The answer of an agent call, or DEADLINE_EXCEEDED with [`no_answer_text`] once `limit` has
/// passed without one.
async fn within<T>(
    limit: Duration,
    shown: Duration,
    call: impl std::future::Future<Output = Result<chatproto::tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(limit, call).await {
        Ok(answer) => Ok(answer?.into_inner()),
        Err(_) => Err(Status::deadline_exceeded(no_answer_text(shown))),
    }
}

/// The generated agent client with a deadline on every call: what the engine's connector dials.
#[derive(Debug, Clone)]
pub struct Deadlined<C> {
    /// The client.
    pub client: C,
    /// How long a call may go unanswered ([`DEFAULT_AGENT_CALL_DEADLINE`] by default).
    pub deadline: Duration,
}

impl<C> Deadlined<C> {
    /// `client` with `deadline` on each call.
    pub fn new(client: C, deadline: Duration) -> Self {
        Self { client, deadline }
    }

    /// `call` on a copy of the client (tonic clients are cheap handles), within the deadline
    /// plus `waits` (the time the call waits on purpose).
    async fn call<T, Fut>(&self, waits: Duration, call: impl FnOnce(C) -> Fut) -> Result<T, Status>
    where
        C: Clone,
        Fut: std::future::Future<Output = Result<chatproto::tonic::Response<T>, Status>>,
    {
        within(
            waits.saturating_add(self.deadline),
            self.deadline,
            call(self.client.clone()),
        )
        .await
    }
}

type AgentChannel<F> = AgentClient<InterceptedService<Channel, F>>;

#[async_trait]
impl<F> WorkspaceConn for Deadlined<AgentChannel<F>>
where
    F: Interceptor + Clone + Send + Sync + 'static,
{
    async fn start_process(
        &self,
        request: pb::StartProcessRequest,
    ) -> Result<pb::StartProcessResponse, Status> {
        self.call(Duration::ZERO, |mut c| async move {
            c.start_process(Request::new(request)).await
        })
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
        self.call(waits, |mut c| async move {
            c.process_output(Request::new(request)).await
        })
        .await
    }

    async fn list_processes(
        &self,
        request: pb::ListProcessesRequest,
    ) -> Result<pb::ListProcessesResponse, Status> {
        self.call(Duration::ZERO, |mut c| async move {
            c.list_processes(Request::new(request)).await
        })
        .await
    }

    async fn signal_process(&self, request: pb::SignalProcessRequest) -> Result<(), Status> {
        self.call(Duration::ZERO, |mut c| async move {
            c.signal_process(Request::new(request)).await
        })
        .await
        .map(drop)
    }

    async fn read_file(
        &self,
        request: pb::ReadFileRequest,
    ) -> Result<pb::ReadFileResponse, Status> {
        self.call(Duration::ZERO, |mut c| async move {
            c.read_file(Request::new(request)).await
        })
        .await
    }

    async fn write_file(&self, request: pb::WriteFileRequest) -> Result<(), Status> {
        self.call(Duration::ZERO, |mut c| async move {
            c.write_file(Request::new(request)).await
        })
        .await
        .map(drop)
    }

    async fn edit_files(
        &self,
        request: pb::EditFilesRequest,
    ) -> Result<pb::EditFilesResponse, Status> {
        self.call(Duration::ZERO, |mut c| async move {
            c.edit_files(Request::new(request)).await
        })
        .await
    }

    async fn cancel(&self, request: pb::CancelRequest) -> Result<pb::CancelResponse, Status> {
        self.call(Duration::ZERO, |mut c| async move {
            c.cancel(Request::new(request)).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_agent_that_never_answers_is_a_deadline_exceeded() {
        let never = std::future::pending::<Result<chatproto::tonic::Response<()>, Status>>();
        let limit = Duration::from_millis(20);
        let status = within(limit, limit, never).await.unwrap_err();
        assert_eq!(status.code(), chatproto::tonic::Code::DeadlineExceeded);
        assert!(
            status
                .message()
                .starts_with("the workspace agent did not answer within 1 s"),
            "{status}"
        );
        assert!(status.message().contains("start_workspace"), "{status}");
        let answered = async { Ok(chatproto::tonic::Response::new(7)) };
        assert_eq!(within(limit, limit, answered).await.unwrap(), 7);
    }
}
