//! The `wsagent.v1.Agent` gRPC service over the process manager and the file operations,
//! authenticated with the per-workspace secret.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chatproto::chatd::v1::WorkspaceAgentLifecycle as Lifecycle;
use chatproto::wsagent::v1 as pb;
use chatproto::wsagent::v1::agent_server::{Agent, AgentServer};
use nix::sys::signal::Signal;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::files::{self, Edit, FileError, FileRoots};
use crate::process::{ProcessError, ProcessManager, StartRequest};

/// How long the outcome of a write or an edit is remembered for its idempotency key.
pub const EDIT_RETENTION: Duration = Duration::from_secs(60 * 60);

/// A (chat id, idempotency key) pair.
type ChatKey = (String, String);

/// What an edit batch returned, replayed for a repeated key.
type EditOutcome = Result<pb::EditFilesResponse, Status>;

/// The agent's service.
#[derive(Debug, Clone)]
pub struct AgentService {
    processes: ProcessManager,
    roots: Arc<FileRoots>,
    home_dir: PathBuf,
    agent_id: String,
    edits: Arc<Mutex<HashMap<ChatKey, (Instant, EditOutcome)>>>,
    writes: Arc<Mutex<HashMap<ChatKey, Instant>>>,
    shutting_down: Arc<std::sync::atomic::AtomicBool>,
    lifecycle: Arc<std::sync::atomic::AtomicI32>,
}

impl AgentService {
    /// A service over these processes and file roots.
    pub fn new(
        processes: ProcessManager,
        roots: FileRoots,
        home_dir: PathBuf,
        agent_id: String,
    ) -> Self {
        Self {
            processes,
            roots: Arc::new(roots),
            home_dir,
            agent_id,
            edits: Arc::default(),
            writes: Arc::default(),
            shutting_down: Arc::default(),
            lifecycle: Arc::new(std::sync::atomic::AtomicI32::from(i32::from(
                Lifecycle::Ready,
            ))),
        }
    }

    /// Records the lifecycle state `Health` reports (`ready` until set: a service without a
    /// startup script is ready at once).
    pub fn set_lifecycle(&self, state: Lifecycle) {
        self.lifecycle
            .store(state.into(), std::sync::atomic::Ordering::SeqCst);
    }

    /// Shuts down: stops accepting new processes (health turns `shutting_down`), sends SIGTERM to
    /// every running process group and SIGKILL to those still running after `grace`. Returns
    /// how many had to be killed.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.set_lifecycle(Lifecycle::ShuttingDown);
        self.processes.shutdown(grace).await
    }

    /// The tonic server, requiring `authorization: Bearer <secret>` on every call.
    pub fn into_server(self, secret: String) -> InterceptedService<AgentServer<Self>, BearerAuth> {
        InterceptedService::new(AgentServer::new(self), BearerAuth::new(secret))
    }
}

/// Checks `authorization: Bearer <secret>` with a constant-time comparison.
#[derive(Debug, Clone)]
pub struct BearerAuth {
    expected: Arc<Vec<u8>>,
}

impl BearerAuth {
    /// Requires this secret.
    pub fn new(secret: String) -> Self {
        Self {
            expected: Arc::new(format!("Bearer {secret}").into_bytes()),
        }
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let given = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        let same = given.len() == self.expected.len()
            && given
                .iter()
                .zip(self.expected.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(request)
        } else {
            Err(Status::unauthenticated("missing or wrong agent secret"))
        }
    }
}

fn process_status(err: ProcessError) -> Status {
    match err {
        ProcessError::NotFound(m) => Status::not_found(m),
        ProcessError::Invalid(m) => Status::invalid_argument(m),
        e @ ProcessError::Exited(_) => Status::failed_precondition(e.to_string()),
        ProcessError::Failed(m) => Status::internal(m),
        e @ ProcessError::Cancelled(_) => Status::aborted(e.to_string()),
    }
}

fn file_status(err: FileError) -> Status {
    let message = err.to_string();
    match err {
        FileError::Outside { .. } => Status::permission_denied(message),
        FileError::NotFound(_) => Status::not_found(message),
        FileError::IsDirectory(_) | FileError::Invalid(_) => Status::invalid_argument(message),
        FileError::Precondition(_) => Status::failed_precondition(message),
        FileError::Io { .. } => Status::internal(message),
    }
}

/// Runs a file operation on the blocking pool: a slow disk or a huge file never stalls the
/// runtime that serves every other call (heartbeats included).
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("the file operation failed: {e}")))?
        .map_err(file_status)
}

fn timestamp(t: SystemTime) -> chatproto::prost_types::Timestamp {
    chatproto::prost_types::Timestamp::from(t)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn start_process(
        &self,
        request: Request<pb::StartProcessRequest>,
    ) -> Result<Response<pb::StartProcessResponse>, Status> {
        if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Status::unavailable("the agent is shutting down"));
        }
        let r = request.into_inner();
        let (process_id, existing) = self
            .processes
            .start(StartRequest {
                command: r.command,
                workdir: r.workdir,
                env: r.env.into_iter().collect(),
                background: r.background,
                idempotency_key: r.idempotency_key,
                chat_id: r.chat_id,
                lookup_only: r.lookup_only,
            })
            .map_err(process_status)?;
        Ok(Response::new(pb::StartProcessResponse {
            process_id,
            existing,
        }))
    }

    async fn process_output(
        &self,
        request: Request<pb::ProcessOutputRequest>,
    ) -> Result<Response<pb::ProcessOutputResponse>, Status> {
        let r = request.into_inner();
        let wait = r
            .wait_timeout
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or_default();
        let s = self
            .processes
            .output(&r.chat_id, &r.process_id, wait)
            .await
            .map_err(process_status)?;
        Ok(Response::new(pb::ProcessOutputResponse {
            output: s.output,
            running: s.running,
            exit_code: s.exit_code,
            truncated: s.truncated.map(|t| pb::OutputTruncation {
                original_bytes: t.original_bytes as i64,
                retained_bytes: t.retained_bytes as i64,
                dropped_bytes: t.dropped_bytes as i64,
                strategy: pb::TruncationStrategy::HeadTail.into(),
            }),
            run_time_ms: u64::try_from(s.run_time.as_millis()).unwrap_or(u64::MAX),
        }))
    }

    async fn list_processes(
        &self,
        request: Request<pb::ListProcessesRequest>,
    ) -> Result<Response<pb::ListProcessesResponse>, Status> {
        let chat_id = request.into_inner().chat_id;
        let processes = self
            .processes
            .list(&chat_id)
            .into_iter()
            .map(|p| pb::ProcessInfo {
                id: p.id,
                command: p.command,
                workdir: p.workdir,
                running: p.running,
                exit_code: p.exit_code,
                started_at: Some(timestamp(p.started_at)),
                exited_at: p.exited_at.map(timestamp),
                background: p.background,
                chat_id: p.chat_id,
            })
            .collect();
        Ok(Response::new(pb::ListProcessesResponse { processes }))
    }

    async fn signal_process(
        &self,
        request: Request<pb::SignalProcessRequest>,
    ) -> Result<Response<pb::SignalProcessResponse>, Status> {
        let r = request.into_inner();
        let signal = match r.signal() {
            pb::ProcessSignal::Terminate => Signal::SIGTERM,
            pb::ProcessSignal::Kill => Signal::SIGKILL,
            pb::ProcessSignal::Unspecified => {
                return Err(Status::invalid_argument(
                    "signal must be \"terminate\" or \"kill\"",
                ));
            }
        };
        self.processes
            .signal(&r.chat_id, &r.process_id, signal)
            .map_err(process_status)?;
        Ok(Response::new(pb::SignalProcessResponse {}))
    }

    async fn read_file(
        &self,
        request: Request<pb::ReadFileRequest>,
    ) -> Result<Response<pb::ReadFileResponse>, Status> {
        let r = request.into_inner();
        let roots = self.roots.clone();
        let read =
            off_runtime(move || files::read_file(&roots, &r.path, r.offset, r.limit)).await?;
        Ok(Response::new(pb::ReadFileResponse {
            content: read.content,
            file_size: read.file_size as i64,
            lines_read: read.lines_read as i64,
            total_lines: read.total_lines as i64,
        }))
    }

    async fn write_file(
        &self,
        request: Request<pb::WriteFileRequest>,
    ) -> Result<Response<pb::WriteFileResponse>, Status> {
        let r = request.into_inner();
        let key = (r.chat_id.clone(), r.idempotency_key.clone());
        if !r.idempotency_key.is_empty() {
            let mut writes = lock(&self.writes);
            writes.retain(|_, at| at.elapsed() < EDIT_RETENTION);
            if writes.contains_key(&key) {
                return Ok(Response::new(pb::WriteFileResponse {}));
            }
        }
        let roots = self.roots.clone();
        let (path, content) = (r.path, r.content);
        off_runtime(move || files::write_file(&roots, &path, &content)).await?;
        if !r.idempotency_key.is_empty() {
            lock(&self.writes).insert(key, Instant::now());
        }
        Ok(Response::new(pb::WriteFileResponse {}))
    }

    async fn edit_files(
        &self,
        request: Request<pb::EditFilesRequest>,
    ) -> Result<Response<pb::EditFilesResponse>, Status> {
        let r = request.into_inner();
        let key = (r.chat_id.clone(), r.idempotency_key.clone());
        if !r.idempotency_key.is_empty() {
            let mut edits = lock(&self.edits);
            edits.retain(|_, (at, _)| at.elapsed() < EDIT_RETENTION);
            if let Some((_, outcome)) = edits.get(&key) {
                return outcome.clone().map(|mut response| {
                    response.replayed = true;
                    Response::new(response)
                });
            }
        }
        if r.lookup_only {
            return Err(Status::not_found(format!(
                "no edit was applied with idempotency key {:?}",
                r.idempotency_key
            )));
        }
        let edits: Vec<Edit> = r
            .edits
            .into_iter()
            .map(|e| Edit {
                path: e.path,
                old_text: e.old_text,
                new_text: e.new_text,
                replace_all: e.replace_all,
            })
            .collect();
        let roots = self.roots.clone();
        let outcome = off_runtime(move || files::edit_files(&roots, &edits))
            .await
            .map(|files| pb::EditFilesResponse {
                files: files
                    .into_iter()
                    .map(|f| pb::FileDiff {
                        path: f.path,
                        diff: f.diff,
                    })
                    .collect(),
                replayed: false,
            });
        if !r.idempotency_key.is_empty() {
            lock(&self.edits).insert(key, (Instant::now(), outcome.clone()));
        }
        outcome.map(Response::new)
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        let r = request.into_inner();
        let (found, canceled) = self.processes.cancel(&r.chat_id, &r.idempotency_key);
        Ok(Response::new(pb::CancelResponse { found, canceled }))
    }

    async fn home_dir(
        &self,
        _request: Request<pb::HomeDirRequest>,
    ) -> Result<Response<pb::HomeDirResponse>, Status> {
        Ok(Response::new(pb::HomeDirResponse {
            home_dir: self.home_dir.display().to_string(),
            working_directory: self.roots.primary().display().to_string(),
            file_roots: if self.roots.confine {
                self.roots
                    .roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect()
            } else {
                Vec::new()
            },
        }))
    }

    async fn health(
        &self,
        _request: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        let shutting_down = self.shutting_down.load(std::sync::atomic::Ordering::SeqCst);
        Ok(Response::new(pb::HealthResponse {
            status: if shutting_down {
                pb::HealthStatus::ShuttingDown
            } else {
                pb::HealthStatus::Serving
            }
            .into(),
            lifecycle_state: self.lifecycle.load(std::sync::atomic::Ordering::SeqCst),
            agent_id: self.agent_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }
}
