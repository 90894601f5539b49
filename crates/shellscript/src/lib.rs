//! Shell scripts with streamed output, as chatd runs them: a template's build script (in the
//! provisioner) and a workspace's startup script (in the agent, its end mapped to a lifecycle
//! state). The script runs with `shell -c` in its own process group; its output is streamed line
//! by line to whoever reports it; a timeout, or dropping the future, kills the whole group.
//!
//! It does not capture output beyond what it streams, retry, or sandbox the script: the caller
//! chooses the directory, the environment and the user ([`run_command`] takes a prepared
//! command).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::sync::mpsc;

/// How a script ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It exited 0, or there was none (an agent is then `ready`).
    Succeeded,
    /// It failed, and why (an agent is then `start_error`).
    Failed(String),
    /// It outlived its timeout and was killed (an agent is then `start_timeout`).
    TimedOut,
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (logged at `info`).
    Stdout,
    /// Standard error (logged at `warn`).
    Stderr,
}

/// One line of a script's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When it was read.
    pub at: std::time::SystemTime,
    /// Where it came from.
    pub stream: Stream,
    /// The line without its newline (invalid UTF-8 replaced).
    pub text: String,
}

/// Runs `script` with `shell -c` in `dir`, with `env` added to the inherited environment, sending
/// each output line to `logs`. A zero `timeout` means none. On timeout the script's whole process
/// group is killed. `label` names the script in error texts (`startup script`, `build script`).
pub async fn run_script(
    shell: &Path,
    label: &str,
    script: &str,
    dir: &Path,
    env: &[(String, String)],
    timeout: Duration,
    logs: mpsc::Sender<LogLine>,
) -> Outcome {
    if script.trim().is_empty() {
        return Outcome::Succeeded;
    }
    let mut command = tokio::process::Command::new(shell);
    command.arg("-c").arg(script).current_dir(dir);
    for (name, value) in env {
        command.env(name, value);
    }
    run_command(command, label, timeout, logs).await
}

/// Runs a script command that the caller prepared (program, arguments, directory, environment,
/// user), as [`run_script`] does: in its own process group, its output streamed to `logs`, killed
/// with its group on timeout or when the future is dropped. Standard input is closed.
pub async fn run_command(
    mut command: tokio::process::Command,
    label: &str,
    timeout: Duration,
    logs: mpsc::Sender<LogLine>,
) -> Outcome {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let dir = command
                .as_std()
                .get_current_dir()
                .map(|d| format!(" in {}", d.display()))
                .unwrap_or_default();
            return Outcome::Failed(format!("cannot start the {label}{dir}: {e}"));
        }
    };
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    // Dropping this future (a cancelled build, a shutdown) kills the script's whole group.
    let mut guard = GroupGuard(pgid);
    let readers = [
        child
            .stdout
            .take()
            .map(|out| tokio::spawn(forward(out, Stream::Stdout, logs.clone()))),
        child
            .stderr
            .take()
            .map(|err| tokio::spawn(forward(err, Stream::Stderr, logs.clone()))),
    ];
    let waited = if timeout.is_zero() {
        Ok(child.wait().await)
    } else {
        tokio::time::timeout(timeout, child.wait()).await
    };
    let outcome = match waited {
        Ok(Ok(status)) if status.success() => Outcome::Succeeded,
        Ok(Ok(status)) => Outcome::Failed(match status.code() {
            Some(code) => format!("the {label} exited with status {code}"),
            None => format!("the {label} was killed ({status})"),
        }),
        Ok(Err(e)) => Outcome::Failed(format!("waiting for the {label}: {e}")),
        Err(_) => {
            if let Some(pgid) = guard.0.take() {
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            }
            let _ = child.wait().await;
            Outcome::TimedOut
        }
    };
    guard.0 = None;
    // Background children of the script may keep the pipes open; do not wait for them.
    for reader in readers.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_millis(200), reader).await;
    }
    outcome
}

/// Kills a process group when dropped while armed.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

async fn forward(pipe: impl AsyncRead + Unpin, stream: Stream, logs: mpsc::Sender<LogLine>) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned();
                let line = LogLine {
                    at: std::time::SystemTime::now(),
                    stream,
                    text,
                };
                if logs.send(line).await.is_err() {
                    break;
                }
            }
        }
    }
}
