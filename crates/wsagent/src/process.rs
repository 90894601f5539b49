//! Processes started for chats: shell commands in their own process group, output kept in a
//! bounded head-and-tail buffer, idempotency keys, signals and cancellation.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::sync::watch;

/// Process settings (defaults from agent.proto's comments).
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// The shell that runs commands (`$SHELL`, else `/bin/sh`).
    pub shell: PathBuf,
    /// The agent's working directory (relative workdirs resolve against it).
    pub working_dir: PathBuf,
    /// Variables every process gets (the non-interactive set of [`non_interactive_env`], then
    /// the manifest's `env`), under the request's own.
    pub env: Vec<(String, String)>,
    /// Output kept per process, in bytes (1 MiB): half the head, half the tail.
    pub output_limit: usize,
    /// Longest single wait of `output` (5 min).
    pub wait_cap: Duration,
    /// How long an exited process is remembered (1 h).
    pub exited_retention: Duration,
    /// Grace between SIGTERM and SIGKILL when cancelling (5 s).
    pub cancel_grace: Duration,
}

impl ProcessConfig {
    /// Defaults for a working directory.
    pub fn new(working_dir: PathBuf) -> Self {
        Self {
            shell: std::env::var_os("SHELL")
                .map_or_else(|| PathBuf::from("/bin/sh"), PathBuf::from),
            working_dir,
            env: non_interactive_env("CHATD_AGENT"),
            output_limit: 1024 * 1024,
            wait_cap: Duration::from_secs(5 * 60),
            exited_retention: Duration::from_secs(60 * 60),
            cancel_grace: Duration::from_secs(5),
        }
    }
}

/// The environment added to every process so that tools never wait for a terminal
/// (spec/chattool.md §9.1): `<agent_var>=true`, editors that exit at once, no prompts, no
/// colours, no pagers.
pub fn non_interactive_env(agent_var: &str) -> Vec<(String, String)> {
    [
        (agent_var, "true"),
        ("GIT_EDITOR", "true"),
        ("GIT_SEQUENCE_EDITOR", "true"),
        ("EDITOR", "true"),
        ("VISUAL", "true"),
        ("GIT_TERMINAL_PROMPT", "0"),
        ("NO_COLOR", "1"),
        ("TERM", "dumb"),
        ("PAGER", "cat"),
        ("GIT_PAGER", "cat"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Why a process operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    /// Unknown process or key (or another chat's).
    #[error("{0}")]
    NotFound(String),
    /// A malformed request.
    #[error("{0}")]
    Invalid(String),
    /// The process already exited.
    #[error("process {0} already exited")]
    Exited(String),
    /// The process could not be started or signalled.
    #[error("{0}")]
    Failed(String),
    /// The key was cancelled before a process was started with it.
    #[error("the call with idempotency key {0:?} was cancelled before its process started")]
    Cancelled(String),
}

/// How the output was cut when it exceeded the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// Bytes the process wrote.
    pub original_bytes: u64,
    /// Bytes kept.
    pub retained_bytes: u64,
    /// Bytes dropped (from the middle).
    pub dropped_bytes: u64,
}

/// A process's output and state at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Output kept so far (lossy UTF-8; stdout and stderr merged).
    pub output: String,
    /// Still running.
    pub running: bool,
    /// Exit code once exited (128 + signal for a signalled process).
    pub exit_code: Option<i32>,
    /// Present when output was dropped.
    pub truncated: Option<Truncation>,
    /// How long it has run: until its exit, or until now.
    pub run_time: Duration,
}

/// A process as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Id.
    pub id: String,
    /// Command line.
    pub command: String,
    /// Working directory.
    pub workdir: String,
    /// Running.
    pub running: bool,
    /// Exit code once exited.
    pub exit_code: Option<i32>,
    /// Start time.
    pub started_at: SystemTime,
    /// Exit time.
    pub exited_at: Option<SystemTime>,
    /// Started as a background process.
    pub background: bool,
    /// The chat.
    pub chat_id: String,
}

/// Keeps the first and the last `limit / 2` bytes.
#[derive(Debug)]
struct OutputBuffer {
    limit: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl OutputBuffer {
    fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(2),
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let head_room = (self.limit / 2).saturating_sub(self.head.len());
        let (to_head, rest) = bytes.split_at(bytes.len().min(head_room));
        self.head.extend_from_slice(to_head);
        let tail_limit = self.limit - self.limit / 2;
        self.tail.extend(rest);
        while self.tail.len() > tail_limit {
            self.tail.pop_front();
        }
    }

    fn snapshot(&self) -> (String, Option<Truncation>) {
        let mut bytes = self.head.clone();
        bytes.extend(self.tail.iter());
        let retained = bytes.len() as u64;
        let truncated = (self.total > retained).then_some(Truncation {
            original_bytes: self.total,
            retained_bytes: retained,
            dropped_bytes: self.total - retained,
        });
        (String::from_utf8_lossy(&bytes).into_owned(), truncated)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Exit {
    code: i32,
    at: SystemTime,
    when: Instant,
}

#[derive(Debug)]
struct Proc {
    id: String,
    chat_id: String,
    command: String,
    workdir: PathBuf,
    background: bool,
    started_at: SystemTime,
    started: Instant,
    pgid: i32,
    output: Mutex<OutputBuffer>,
    exit: watch::Receiver<Option<Exit>>,
}

impl Proc {
    fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    fn snapshot(&self) -> Snapshot {
        let exit = self.exited();
        let (output, truncated) = lock(&self.output).snapshot();
        let ended = exit.map_or_else(Instant::now, |e| e.when);
        Snapshot {
            output,
            running: exit.is_none(),
            exit_code: exit.map(|e| e.code),
            truncated,
            run_time: ended.saturating_duration_since(self.started),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Default)]
struct State {
    processes: HashMap<String, Arc<Proc>>,
    by_key: HashMap<(String, String), String>,
    /// Keys cancelled before a process was started with them: a start that arrives after its
    /// cancel (the two race on separate streams) must not run.
    cancelled: HashMap<(String, String), Instant>,
    next: u64,
}

/// The agent's processes.
#[derive(Debug, Clone)]
pub struct ProcessManager {
    config: Arc<ProcessConfig>,
    state: Arc<Mutex<State>>,
}

/// What `start` needs.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// Shell command line.
    pub command: String,
    /// Working directory; empty = the agent's.
    pub workdir: String,
    /// Variables added for this process.
    pub env: Vec<(String, String)>,
    /// Reported by `list`.
    pub background: bool,
    /// Idempotency key; empty = none.
    pub idempotency_key: String,
    /// The chat.
    pub chat_id: String,
    /// Only look up the key's process.
    pub lookup_only: bool,
}

impl ProcessManager {
    /// A manager with these settings.
    pub fn new(config: ProcessConfig) -> Self {
        Self {
            config: Arc::new(config),
            state: Arc::default(),
        }
    }

    fn forget_old(&self, state: &mut State) {
        let retention = self.config.exited_retention;
        let expired: Vec<String> = state
            .processes
            .values()
            .filter(|p| p.exited().is_some_and(|e| e.when.elapsed() > retention))
            .map(|p| p.id.clone())
            .collect();
        for id in &expired {
            state.processes.remove(id);
        }
        state.by_key.retain(|_, id| !expired.contains(id));
        state.cancelled.retain(|_, at| at.elapsed() <= retention);
    }

    fn find(&self, chat_id: &str, id: &str) -> Result<Arc<Proc>, ProcessError> {
        let mut state = lock(&self.state);
        self.forget_old(&mut state);
        state
            .processes
            .get(id)
            .filter(|p| p.chat_id == chat_id)
            .cloned()
            .ok_or_else(|| ProcessError::NotFound(format!("process {id} not found")))
    }

    /// Starts a process (or returns the one started earlier with the same key: `(id, true)`).
    pub fn start(&self, req: StartRequest) -> Result<(String, bool), ProcessError> {
        let key = (req.chat_id.clone(), req.idempotency_key.clone());
        {
            let mut state = lock(&self.state);
            self.forget_old(&mut state);
            if !req.idempotency_key.is_empty()
                && let Some(id) = state.by_key.get(&key)
            {
                return Ok((id.clone(), true));
            }
            if state.cancelled.contains_key(&key) {
                return Err(ProcessError::Cancelled(req.idempotency_key));
            }
        }
        if req.lookup_only {
            return Err(ProcessError::NotFound(format!(
                "no process was started with idempotency key {:?}",
                req.idempotency_key
            )));
        }
        if req.command.trim().is_empty() {
            return Err(ProcessError::Invalid("command is required".into()));
        }
        let workdir = if req.workdir.is_empty() {
            self.config.working_dir.clone()
        } else {
            self.config.working_dir.join(&req.workdir)
        };
        let mut command = workspace_command(&self.config.shell, &req.command, &workdir, &[]);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        for (name, value) in self.config.env.iter().chain(req.env.iter()) {
            command.env(name, value);
        }
        let mut child = command.spawn().map_err(|e| {
            ProcessError::Failed(format!(
                "start {:?} in {}: {e}",
                req.command,
                workdir.display()
            ))
        })?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .unwrap_or(0);
        let (exit_tx, exit_rx) = watch::channel(None);
        let id = {
            let mut state = lock(&self.state);
            state.next += 1;
            format!("p{}", state.next)
        };
        let proc = Arc::new(Proc {
            id: id.clone(),
            chat_id: req.chat_id.clone(),
            command: req.command.clone(),
            workdir,
            background: req.background,
            started_at: SystemTime::now(),
            started: Instant::now(),
            pgid,
            output: Mutex::new(OutputBuffer::new(self.config.output_limit)),
            exit: exit_rx,
        });
        let readers = [
            child
                .stdout
                .take()
                .map(|s| tokio::spawn(pump(s, Arc::clone(&proc)))),
            child
                .stderr
                .take()
                .map(|s| tokio::spawn(pump(s, Arc::clone(&proc)))),
        ];
        tokio::spawn(async move {
            let status = child.wait().await;
            // Let the pipes drain, but do not wait for grandchildren that keep them open.
            for reader in readers.into_iter().flatten() {
                let _ = tokio::time::timeout(Duration::from_millis(200), reader).await;
            }
            let code = match status {
                Ok(status) => {
                    use std::os::unix::process::ExitStatusExt as _;
                    status
                        .code()
                        .or_else(|| status.signal().map(|s| 128 + s))
                        .unwrap_or(-1)
                }
                Err(_) => -1,
            };
            let _ = exit_tx.send(Some(Exit {
                code,
                at: SystemTime::now(),
                when: Instant::now(),
            }));
        });
        let mut state = lock(&self.state);
        // Cancelled while it was starting: it is recorded (its key answers) and stopped.
        let cancelled = state.cancelled.contains_key(&key);
        if !req.idempotency_key.is_empty() {
            state.by_key.insert(key, id.clone());
        }
        state.processes.insert(id.clone(), proc.clone());
        drop(state);
        if cancelled {
            self.terminate(proc);
        }
        Ok((id, false))
    }

    /// The process's output, after waiting up to `wait` (capped) for it to exit.
    pub async fn output(
        &self,
        chat_id: &str,
        id: &str,
        wait: Duration,
    ) -> Result<Snapshot, ProcessError> {
        let proc = self.find(chat_id, id)?;
        let wait = wait.min(self.config.wait_cap);
        if !wait.is_zero() && proc.exited().is_none() {
            let mut exit = proc.exit.clone();
            let _ = tokio::time::timeout(wait, exit.wait_for(Option::is_some)).await;
        }
        Ok(proc.snapshot())
    }

    /// A chat's processes, oldest first.
    pub fn list(&self, chat_id: &str) -> Vec<ProcessInfo> {
        let mut state = lock(&self.state);
        self.forget_old(&mut state);
        let mut list: Vec<ProcessInfo> = state
            .processes
            .values()
            .filter(|p| p.chat_id == chat_id)
            .map(|p| {
                let exit = p.exited();
                ProcessInfo {
                    id: p.id.clone(),
                    command: p.command.clone(),
                    workdir: p.workdir.display().to_string(),
                    running: exit.is_none(),
                    exit_code: exit.map(|e| e.code),
                    started_at: p.started_at,
                    exited_at: exit.map(|e| e.at),
                    background: p.background,
                    chat_id: p.chat_id.clone(),
                }
            })
            .collect();
        list.sort_by_key(|p| (p.started_at, p.id.clone()));
        list
    }

    /// Signals a process's whole group.
    pub fn signal(&self, chat_id: &str, id: &str, signal: Signal) -> Result<(), ProcessError> {
        let proc = self.find(chat_id, id)?;
        if proc.exited().is_some() {
            return Err(ProcessError::Exited(id.to_owned()));
        }
        killpg(Pid::from_raw(proc.pgid), signal)
            .map_err(|e| ProcessError::Failed(format!("signal {signal}: {e}")))
    }

    /// Cancels the process started with `key`: SIGTERM to its group, SIGKILL after the grace if
    /// it is still alive. Returns `(found, canceled)`.
    pub fn cancel(&self, chat_id: &str, key: &str) -> (bool, bool) {
        let pair = (chat_id.to_owned(), key.to_owned());
        let id = {
            let mut state = lock(&self.state);
            let id = state.by_key.get(&pair).cloned();
            if id.is_none() && !key.is_empty() {
                state.cancelled.insert(pair, Instant::now());
            }
            id
        };
        let Some(proc) = id.and_then(|id| self.find(chat_id, &id).ok()) else {
            return (false, false);
        };
        if proc.exited().is_some() {
            return (true, false);
        }
        self.terminate(proc);
        (true, true)
    }

    /// SIGTERM to the process group, then SIGKILL after the cancel grace if still running.
    fn terminate(&self, proc: Arc<Proc>) {
        let _ = killpg(Pid::from_raw(proc.pgid), Signal::SIGTERM);
        let grace = self.config.cancel_grace;
        tokio::spawn(async move {
            let mut exit = proc.exit.clone();
            if tokio::time::timeout(grace, exit.wait_for(Option::is_some))
                .await
                .is_err()
            {
                let _ = killpg(Pid::from_raw(proc.pgid), Signal::SIGKILL);
            }
        });
    }

    /// Agent shutdown: SIGTERM to every running process group, then SIGKILL to those still
    /// running after `grace`. Returns how many had to be killed.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        let running: Vec<Arc<Proc>> = lock(&self.state)
            .processes
            .values()
            .filter(|p| p.exited().is_none())
            .cloned()
            .collect();
        for proc in &running {
            let _ = killpg(Pid::from_raw(proc.pgid), Signal::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + grace;
        let mut killed = 0;
        for proc in running {
            let mut exit = proc.exit.clone();
            if tokio::time::timeout_at(deadline, exit.wait_for(Option::is_some))
                .await
                .is_err()
            {
                let _ = killpg(Pid::from_raw(proc.pgid), Signal::SIGKILL);
                killed += 1;
            }
        }
        killed
    }
}

async fn pump(mut pipe: impl AsyncRead + Unpin, proc: Arc<Proc>) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        lock(&proc.output).push(&buf[..n]);
    }
}

/// `shell -c script` in `dir` with `env`, as the workspace runs it: the agent's environment
/// without its own `WSAGENT_*` variables (the token above all), so nothing the workspace runs
/// inherits the agent's credentials.
pub fn workspace_command(
    shell: &std::path::Path,
    script: &str,
    dir: &std::path::Path,
    env: &[(String, String)],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(shell);
    command.arg("-c").arg(script).current_dir(dir);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("WSAGENT_") {
            command.env_remove(name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_keeps_head_and_tail_and_reports_the_drop() {
        let mut buffer = OutputBuffer::new(10);
        buffer.push(b"0123456789abcdef");
        let (text, truncation) = buffer.snapshot();
        assert_eq!(text, "01234bcdef");
        assert_eq!(
            truncation,
            Some(Truncation {
                original_bytes: 16,
                retained_bytes: 10,
                dropped_bytes: 6
            })
        );
        let mut small = OutputBuffer::new(10);
        small.push(b"abc");
        assert_eq!(small.snapshot(), ("abc".to_owned(), None));
    }
}
