//! What a provisioner backend implements, and what it is given for a build.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chatstore::prelude::*;
use chatstore::workspaces::{Build, Job, Workspace};
use tokio::sync::Mutex;

use crate::template::{Manifest, TemplateFile};

/// Why a build failed: the job's `error` and `error_code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    /// Shown to users and to the model (non-empty).
    pub message: String,
    /// Machine-readable code, e.g. `BUILD_SCRIPT_FAILED` (may be empty).
    pub code: String,
}

impl BuildError {
    /// An error with a code.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: code.to_owned(),
        }
    }
}

/// Error codes the provisioner and the local backend use.
pub mod codes {
    /// The template's build script exited non-zero.
    pub const BUILD_SCRIPT_FAILED: &str = "BUILD_SCRIPT_FAILED";
    /// The build script outlived its timeout.
    pub const BUILD_TIMEOUT: &str = "BUILD_TIMEOUT";
    /// The template version or the build's parameters are invalid.
    pub const INVALID_TEMPLATE: &str = "INVALID_TEMPLATE";
    /// The build's parameter values are refused.
    pub const INVALID_PARAMETERS: &str = "INVALID_PARAMETERS";
    /// The backend could not do its part (I/O, spawning the agent).
    pub const BACKEND_FAILED: &str = "BACKEND_FAILED";
    /// The provisioner restarted while the job was running.
    pub const PROVISIONER_RESTARTED: &str = "PROVISIONER_RESTARTED";
}

/// Everything a backend needs for one build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The job being run.
    pub job: Job,
    /// The build.
    pub build: Build,
    /// Its workspace.
    pub workspace: Workspace,
    /// The template version's manifest.
    pub manifest: Manifest,
    /// The template version's files.
    pub files: Vec<TemplateFile>,
    /// Every declared parameter's value (defaults filled in).
    pub parameters: BTreeMap<String, String>,
}

/// Build log lines, written to the job's logs in batches.
#[derive(Clone)]
pub struct BuildLogs {
    store: Arc<dyn Database>,
    job_id: uuid::Uuid,
    pending: Arc<Mutex<Pending>>,
}

/// What a job's logs hold so far.
#[derive(Debug, Default)]
struct Pending {
    /// Lines not yet written.
    lines: Vec<LogLine>,
    /// When the oldest of them was added.
    since: Option<tokio::time::Instant>,
    /// Lines and bytes taken in all (towards [`MAX_JOB_LOG_LINES`], [`MAX_JOB_LOG_BYTES`]).
    taken_lines: usize,
    taken_bytes: usize,
    /// Whether the cap was reached (and said so in a last line).
    full: bool,
}

/// `(level, stage, output)`.
type LogLine = (String, String, String);

impl std::fmt::Debug for BuildLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildLogs")
            .field("job_id", &self.job_id)
            .finish_non_exhaustive()
    }
}

/// Lines buffered before a write is forced.
const LOG_BATCH: usize = 100;
/// The most lines one job logs; a build script printing without end is cut there.
pub const MAX_JOB_LOG_LINES: usize = 10_000;
/// The most bytes one job logs.
pub const MAX_JOB_LOG_BYTES: usize = 4 << 20;
/// The longest line kept whole; longer ones are cut.
pub const MAX_JOB_LOG_LINE_BYTES: usize = 4096;
/// Longest a line stays buffered while more output arrives (or [`BuildLogs::flush_due`] runs).
pub const LOG_DELAY: std::time::Duration = std::time::Duration::from_millis(250);

impl BuildLogs {
    /// Logs of a job.
    pub fn new(store: Arc<dyn Database>, job_id: uuid::Uuid) -> Self {
        Self {
            store,
            job_id,
            pending: Arc::default(),
        }
    }

    /// Adds a line (`level`: info, warn, error; `stage`: e.g. `prepare`, `build`, `agent`).
    /// Lines past [`MAX_JOB_LOG_LINES`] or [`MAX_JOB_LOG_BYTES`] are dropped after one line
    /// that says so; a line longer than [`MAX_JOB_LOG_LINE_BYTES`] is cut.
    pub async fn line(&self, level: &str, stage: &str, output: impl Into<String>) {
        let mut output: String = output.into();
        if output.len() > MAX_JOB_LOG_LINE_BYTES {
            let mut end = MAX_JOB_LOG_LINE_BYTES;
            while !output.is_char_boundary(end) {
                end -= 1;
            }
            output.truncate(end);
            output.push_str(" [line cut]");
        }
        let due = {
            let mut pending = self.pending.lock().await;
            if pending.full {
                return;
            }
            pending.since.get_or_insert_with(tokio::time::Instant::now);
            pending.taken_lines += 1;
            pending.taken_bytes += output.len();
            if pending.taken_lines > MAX_JOB_LOG_LINES || pending.taken_bytes > MAX_JOB_LOG_BYTES {
                pending.full = true;
                output = format!(
                    "the build printed more than {MAX_JOB_LOG_LINES} lines or {} MiB; the rest of \
                     its output is not kept",
                    MAX_JOB_LOG_BYTES >> 20
                );
            }
            pending
                .lines
                .push((level.to_owned(), stage.to_owned(), output));
            pending.lines.len() >= LOG_BATCH
                || pending
                    .since
                    .is_some_and(|since| since.elapsed() >= LOG_DELAY)
        };
        if due {
            self.flush().await;
        }
    }

    /// Writes the buffered lines once the oldest has waited [`LOG_DELAY`]; for callers that
    /// wait on output and want it visible while they wait.
    pub async fn flush_due(&self) {
        let due = self
            .pending
            .lock()
            .await
            .since
            .is_some_and(|since| since.elapsed() >= LOG_DELAY);
        if due {
            self.flush().await;
        }
    }

    /// Writes the buffered lines. A failed write is logged and the lines dropped: build logs
    /// must never fail a build.
    pub async fn flush(&self) {
        let lines = {
            let mut pending = self.pending.lock().await;
            pending.since = None;
            std::mem::take(&mut pending.lines)
        };
        if lines.is_empty() {
            return;
        }
        if let Err(e) = self.store.append_job_logs(self.job_id, &lines).await {
            tracing::warn!(job = %self.job_id, error = %e, dropped = lines.len(), "cannot write build logs");
        }
    }
}

/// What reconciliation found after a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Agents still running for their workspace's latest start build, kept.
    pub adopted: usize,
    /// Agents of a latest start build that were not running, started again.
    pub restarted: usize,
    /// Agents whose build is no longer the latest start (or whose workspace stopped), stopped.
    pub stopped: usize,
}

/// Runs workspace builds somewhere (a local directory, a container, a VM).
#[async_trait]
pub trait Backend: Send + Sync {
    /// A start build: prepare the workspace and start its agent. Returns once the agent is
    /// started; its readiness is reported by the agent itself.
    async fn start(&self, request: &BuildRequest, logs: &BuildLogs) -> Result<(), BuildError>;
    /// A stop build: ask the agent to shut down, then terminate it after a grace period. The
    /// workspace's files survive.
    async fn stop(&self, request: &BuildRequest, logs: &BuildLogs) -> Result<(), BuildError>;
    /// A delete build: stop, then remove the workspace's files.
    async fn delete(&self, request: &BuildRequest, logs: &BuildLogs) -> Result<(), BuildError>;
    /// After a restart: bring running agents in line with the workspaces' latest builds, so
    /// none is orphaned.
    async fn reconcile(&self) -> Result<Reconciled, BuildError>;
}
