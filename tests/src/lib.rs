//! Support for chatd's end-to-end tests: build and start real `chatd` processes on loopback,
//! learn the address they bound, and stop them with real signals.
//!
//! Nothing here fakes the daemon: tests talk to it over gRPC exactly as a client would.
//!
//! [`workspaces`] holds the harness of the workspace tests and benchmark; [`test_db`] the
//! database of a daemon under test, on either backend (`CHATD_TEST_BACKEND`); [`logs`] what an
//! in-process test's code logged.

pub mod logs;
pub mod netns;
pub mod private_pg;
pub mod test_db;
pub mod workspaces;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// What went wrong while driving a daemon.
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    /// `cargo build` of a binary failed.
    #[error("building {binary} failed: {detail}")]
    Build {
        /// The binary.
        binary: String,
        /// Cargo's output or the spawn error.
        detail: String,
    },
    /// The process could not be started or waited for.
    #[error("process I/O failed")]
    Io(#[from] std::io::Error),
    /// The daemon did not log its listen address in time (its log is attached).
    #[error("chatd did not report its address within {timeout:?}; log so far:\n{log}")]
    NoAddress {
        /// How long we waited.
        timeout: Duration,
        /// Everything the daemon wrote to stderr.
        log: String,
    },
    /// Sending a signal failed.
    #[error("cannot signal the daemon")]
    Signal(#[from] nix::Error),
    /// The daemon did not exit in time after a signal.
    #[error("chatd did not exit within {timeout:?} of {signal}; log so far:\n{log}")]
    NoExit {
        /// How long we waited.
        timeout: Duration,
        /// The signal sent.
        signal: Signal,
        /// Everything the daemon wrote to stderr.
        log: String,
    },
}

/// Makes the calling test the only test in its process, for tests that read process-wide state
/// which concurrent tests would change (the metrics recorder counts every engine's turns).
/// Under nextest every test has its own process already: `true`, run the body. Under `cargo
/// test` the first call re-runs this one test (`test`, its path in the test binary) in a child
/// process and returns `false` once the child passed (a failure fails the test with the child's
/// output); in the child it returns `true`.
#[allow(clippy::expect_used)] // test support: a test binary that cannot re-run itself fails the test
pub async fn in_own_process(test: &str) -> bool {
    const CHILD: &str = "CHATD_TEST_OWN_PROCESS";
    if std::env::var_os("NEXTEST").is_some() || std::env::var(CHILD).as_deref() == Ok(test) {
        return true;
    }
    let output = Command::new(std::env::current_exe().expect("the test binary"))
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, test)
        .output()
        .await
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{test} in its own process: {}\n{stdout}\n{stderr}",
        output.status
    );
    false
}

/// The workspace's target directory, derived from the running test executable
/// (`<target>/<profile>/deps/<test>`), so nested builds share the outer build's artifacts.
fn target_profile_dir() -> Result<PathBuf, E2eError> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| E2eError::Build {
            binary: "chatd".into(),
            detail: format!("cannot find the target directory from {}", exe.display()),
        })
}

/// Path of the workspace binary `name` (of the package of the same name), built (or confirmed
/// fresh) once per test process with the same
/// cargo and profile as the tests, so a test never runs a stale daemon.
pub fn workspace_binary(name: &'static str) -> Result<PathBuf, E2eError> {
    static BUILT: OnceLock<Mutex<Vec<(&'static str, PathBuf)>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut built = built
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, path)) = built.iter().find(|(n, _)| *n == name) {
        return Ok(path.clone());
    }

    let profile_dir = target_profile_dir()?;
    let target_dir = profile_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let release = profile_dir.file_name().is_some_and(|p| p == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "--locked",
        "--package",
        name,
        "--bin",
        name,
    ])
    .env("CARGO_TARGET_DIR", &target_dir)
    .current_dir(env!("CARGO_MANIFEST_DIR"));
    if release {
        cmd.arg("--release");
    }
    let output = cmd.output().map_err(|e| E2eError::Build {
        binary: name.into(),
        detail: e.to_string(),
    })?;
    if !output.status.success() {
        return Err(E2eError::Build {
            binary: name.into(),
            detail: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let path = profile_dir.join(name);
    built.push((name, path.clone()));
    Ok(path)
}

/// Runs a helper program (`ip`, `initdb`, …) to completion; `Err` names it (`what`) and says
/// what it printed.
pub(crate) fn run_command(command: &mut std::process::Command, what: &str) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A channel to a daemon at `url`: TLS for `https://`, checked against `tls` (the system's
/// roots when `None`). `Err` says why the connection failed, with its causes.
pub async fn connect(
    url: &str,
    tls: Option<&chattls::ClientTls>,
) -> Result<tonic::transport::Channel, String> {
    let endpoint = chattls::endpoint(url, tls).map_err(|e| e.to_string())?;
    endpoint.connect().await.map_err(|e| chatd::error_chain(&e))
}

/// The status a gRPC health check of `service` reports at `url` (TLS as for [`connect`]); `Err`
/// when the connection or the call fails.
pub async fn health_status(
    url: &str,
    tls: Option<&chattls::ClientTls>,
    service: &str,
) -> Result<tonic_health::pb::health_check_response::ServingStatus, String> {
    let channel = connect(url, tls).await?;
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map(|response| response.into_inner().status())
        .map_err(|status| format!("{status:?}"))
}

/// A running `chatd` child process. Killed (SIGKILL) on drop if still running.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
    data_dir: workspaces::tempdir::Dir,
}

impl Daemon {
    /// Starts `chatd <args>` with extra environment variables and waits until it logs the
    /// address it listens on.
    pub async fn start(args: &[&str], env: &[(&str, &str)]) -> Result<Self, E2eError> {
        Self::start_in(None, args, env).await
    }

    /// Like [`Daemon::start`], in the network namespace `netns` when given (a host of a
    /// [`netns::Lab`]).
    pub async fn start_in(
        netns: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self, E2eError> {
        const STARTUP: Duration = Duration::from_secs(30);
        let binary = workspace_binary("chatd")?;
        let data_dir = workspaces::tempdir::Dir::create();
        // `ip netns exec` enters the namespace and then executes the daemon in its own place,
        // so the child's pid is the daemon's.
        let mut cmd = match netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(binary);
                cmd
            }
            None => Command::new(binary),
        };
        cmd.args(args)
            .env("CHATD_LOG", "info")
            // A data dir of its own (removed with the daemon), so nothing lands in the user's.
            .env("CHATD_DATA_DIR", &data_dir.0)
            // No provisioner unless a test asks for one (flags win over the environment), so
            // daemons never write workspaces into the user's data dir.
            .env("CHATD_PROVISIONER_WORKERS", "0")
            // The developer's provider keys would seed real providers; a test that wants one
            // passes it in `env`.
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("OPENAI_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd.spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("stderr of the daemon was not captured"))?;

        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let sink = Arc::clone(&log);
        // Keep draining stderr for the daemon's whole life so it never blocks on a full pipe.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = listen_addr(&line)
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(addr);
                }
                let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });

        match tokio::time::timeout(STARTUP, addr_rx).await {
            Ok(Ok(addr)) => Ok(Self {
                child,
                addr,
                log,
                data_dir,
            }),
            _ => Err(E2eError::NoAddress {
                timeout: STARTUP,
                log: snapshot(&log),
            }),
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// The data dir the daemon was given through `CHATD_DATA_DIR` (a `--data-dir` flag wins).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir.0
    }

    /// The `ip:port` the daemon listens on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://ip:port`, for tonic channels.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `addr` of the first event logged with `message` (e.g. `serving the relay`).
    pub fn logged_addr(&self, message: &str) -> Option<String> {
        self.log()
            .lines()
            .find_map(|line| logged_addr(line, message))
    }

    /// Everything the daemon has logged so far.
    pub fn log(&self) -> String {
        snapshot(&self.log)
    }

    /// Sends `signal` and waits up to `timeout` for the process to exit.
    pub async fn stop(mut self, signal: Signal, timeout: Duration) -> Result<ExitStatus, E2eError> {
        let pid = self
            .child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| std::io::Error::other("the daemon already exited"))?;
        signal::kill(Pid::from_raw(pid), signal)?;
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => Err(E2eError::NoExit {
                timeout,
                signal,
                log: self.log(),
            }),
        }
    }
}

fn snapshot(log: &Mutex<String>) -> String {
    log.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The address in the log line of the `listening` event: `addr=<ip:port>` in a text line, the
/// `addr` field in a JSON line (`--log-format json`).
fn listen_addr(line: &str) -> Option<String> {
    logged_addr(line, "listening")
}

/// The `addr` of the event whose message is `message`, in a text or a JSON line.
fn logged_addr(line: &str, message: &str) -> Option<String> {
    if line.starts_with('{') {
        let event: serde_json::Value = serde_json::from_str(line).ok()?;
        if event.get("message")?.as_str()? != message {
            return None;
        }
        return Some(event.get("addr")?.as_str()?.to_owned());
    }
    if !line.contains(&format!(": {message} ")) {
        return None;
    }
    let start = line.find("addr=")? + "addr=".len();
    let addr: String = line[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    (!addr.is_empty()).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::listen_addr;

    #[test]
    fn finds_the_address_in_the_listening_line() {
        let line = "2026-11-21T10:00:00.000Z  INFO chatd::serve: listening addr=127.0.0.1:41234";
        assert_eq!(listen_addr(line).as_deref(), Some("127.0.0.1:41234"));
        assert_eq!(listen_addr("INFO chatd: shutting down addr=x"), None);
        let json = r#"{"timestamp":"2026-12-06T10:00:00Z","level":"INFO","message":"listening","addr":"127.0.0.1:41234","target":"chatd::serve"}"#;
        assert_eq!(listen_addr(json).as_deref(), Some("127.0.0.1:41234"));
    }
}
