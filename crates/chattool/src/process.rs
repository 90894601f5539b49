//! `execute`, `process_output`, `process_list`, `process_signal` (spec/chattool.md §9.1–§9.4,
//! §10.3). `execute` runs under the idempotency ledger ([`crate::ledger`]).
//!
//! | Tool | Arguments | Result fields |
//! |---|---|---|
//! | `execute` | `command`, `timeout`? (`10s`), `workdir`?, `run_in_background`?, `model_intent`? | [`ExecuteResult`]: `success`, `output`?, `exit_code`, `wall_duration_ms`, `error`?, `truncated`?, `note`?, `background_process_id`?, `timed_out`?, `still_running`? |
//! | `process_output` | `process_id`, `wait_timeout`? (`10s`; `0s` = snapshot) | the `execute` fields; `note: "process is still running"` while it runs |
//! | `process_list` | — | `processes: [{id, command, workdir?, running, exit_code?}]`, or `{success: false, error}` |
//! | `process_signal` | `process_id`, `signal` (`terminate` or `kill`) | `{success: true, message}`, or `{success: false, error}` |

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chatproto::tonic::Status;
use chatproto::wsagent::v1 as pb;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::conn::WorkspaceConn;
use crate::duration;
use crate::ledger::{Dispatch, ledgered, unknown_outcome};
use crate::tool::TypedTool;
use crate::{ToolContext, ToolResult};

/// Advice added when a command dumps files (§9.1 step 6).
pub const READ_FILE_NOTE: &str =
    "Consider using read_file instead of dumping file contents with shell commands.";

/// Arguments of `execute`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteArgs {
    /// Shell command, run with `sh -c` in the workspace.
    #[serde(default)]
    pub command: String,
    /// Foreground time limit, e.g. `30s`, `5m`, `1.5h` (default 10s, at most 4h). When it
    /// passes, the command keeps running in the background and its process id is returned.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Working directory (default: the workspace's).
    #[serde(default)]
    pub workdir: Option<String>,
    /// Start the command and return at once with its process id. Never use a trailing shell
    /// `&` for this.
    #[serde(default)]
    pub run_in_background: bool,
    /// A short statement of intent, shown to the user only.
    #[serde(default)]
    pub model_intent: Option<String>,
}

/// The result object of `execute` and `process_output`.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct ExecuteResult {
    /// Whether the command succeeded (exit 0), or the operation did.
    pub success: bool,
    /// Output (stdout and stderr merged), at most the output cap; omitted when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub output: String,
    /// Exit code; −1 when unknown (still running, or the output could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Milliseconds from the start to the result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_duration_ms: Option<u64>,
    /// What went wrong; omitted when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// The agent's own truncation report, passed through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Value>,
    /// Advice.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// The process to ask later with `process_output` or stop with `process_signal`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub background_process_id: String,
    /// The foreground timeout passed (§10.3).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// The process is still running (§10.3).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub still_running: bool,
}

/// The first `cap` bytes of `text`, cut back to a character boundary.
pub fn cap_output(mut text: String, cap: usize) -> String {
    if text.len() > cap {
        let mut end = cap;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The command without a trailing background `&` (not `&&` or `|&`), if it had one.
pub fn strip_trailing_ampersand(command: &str) -> Option<String> {
    let trimmed = command.trim();
    let rest = trimmed.strip_suffix('&')?;
    if rest.ends_with('&') || rest.ends_with('|') {
        return None;
    }
    Some(rest.trim_end().to_owned())
}

/// Whether the command dumps files in a way `read_file` does better (§9.1 step 6).
pub fn dumps_files(command: &str) -> bool {
    let c = command.trim();
    let after_word = |word: &str| {
        c.strip_prefix(word)
            .filter(|rest| rest.starts_with(char::is_whitespace))
            .map(str::trim_start)
    };
    if after_word("cat").is_some() {
        return true;
    }
    ["rg", "grep"].iter().any(|tool| {
        after_word(tool).is_some_and(|rest| {
            rest.contains("--include-all")
                || rest
                    .strip_prefix("-l")
                    .is_some_and(|r| r.starts_with(char::is_whitespace))
        })
    })
}

fn truncation(t: Option<pb::OutputTruncation>) -> Option<Value> {
    t.map(|t| {
        serde_json::json!({
            "original_bytes": t.original_bytes,
            "retained_bytes": t.retained_bytes,
            "dropped_bytes": t.dropped_bytes,
        })
    })
}

/// The result fields of an output read: `success = (exit_code == 0)`, `exit_code` −1 while
/// running, the output capped, the agent's truncation passed through.
fn output_result(out: pb::ProcessOutputResponse, cap: usize) -> ExecuteResult {
    let code = if out.running {
        -1
    } else {
        out.exit_code.unwrap_or(-1)
    };
    ExecuteResult {
        success: code == 0,
        output: cap_output(out.output, cap),
        exit_code: Some(code),
        truncated: truncation(out.truncated),
        // The process's own run time, not this call's wait (which is shorter when a replay
        // attached to a running process). Older agents send none.
        wall_duration_ms: (out.run_time_ms > 0).then_some(out.run_time_ms),
        ..Default::default()
    }
}

fn proto_duration(d: Duration) -> Option<chatproto::prost_types::Duration> {
    d.try_into().ok()
}

/// An early text error from a tool.
fn fail(text: impl Into<String>) -> Result<ToolResult, ToolResult> {
    Err(ToolResult::error(text))
}

/// A JSON result from a tool.
fn done(value: &impl Serialize) -> Result<ToolResult, ToolResult> {
    Ok(ToolResult::json(value))
}

/// One blocking read of a process's output; a successful one kicks the idle watchdog.
async fn read_output(
    conn: &dyn WorkspaceConn,
    ctx: &ToolContext,
    process_id: &str,
    wait: Duration,
) -> Result<pb::ProcessOutputResponse, Status> {
    let out = conn
        .process_output(pb::ProcessOutputRequest {
            process_id: process_id.to_owned(),
            chat_id: ctx.chat_key(),
            wait_timeout: proto_duration(wait),
        })
        .await?;
    ctx.progressed();
    Ok(out)
}

/// A snapshot (no wait) bounded by `limit`.
async fn snapshot(
    conn: &dyn WorkspaceConn,
    ctx: &ToolContext,
    process_id: &str,
    limit: Duration,
) -> Result<pb::ProcessOutputResponse, String> {
    match tokio::time::timeout(limit, read_output(conn, ctx, process_id, Duration::ZERO)).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(status)) => Err(status.message().to_owned()),
        Err(_) => Err(format!("timed out after {}", duration::format(limit))),
    }
}

/// `execute`.
#[derive(Debug, Default)]
pub struct Execute;

#[async_trait]
impl TypedTool for Execute {
    type Args = ExecuteArgs;
    const NAME: &'static str = "execute";
    const DESCRIPTION: &'static str = "Run a shell command in the workspace and return its output and exit code. Foreground \
         commands wait up to `timeout` (default 10s); when it passes, the command keeps running \
         and its process id is returned for process_output and process_signal. Set \
         run_in_background for servers and other long-running commands; never end a command with \
         `&` for that. Prefer read_file over cat for reading files.";

    async fn run(&self, ctx: &ToolContext, args: ExecuteArgs) -> Result<ToolResult, ToolResult> {
        if args.command.trim().is_empty() {
            return fail("command is required");
        }
        let settings = &ctx.settings;
        let timeout = match &args.timeout {
            None => settings.execute_default_timeout,
            Some(text) if text.trim().is_empty() => settings.execute_default_timeout,
            Some(text) => match duration::parse(text) {
                Err(e) => return fail(format!("invalid timeout \"{text}\": {e}")),
                Ok(d) if d.is_non_positive() => {
                    return fail("timeout must be positive");
                }
                Ok(d) => d.magnitude.min(settings.execute_max_timeout),
            },
        };
        let (command, background) = match strip_trailing_ampersand(&args.command) {
            Some(stripped) if !args.run_in_background => (stripped, true),
            _ => (args.command.clone(), args.run_in_background),
        };
        // The ledger first: a replayed completed call answers from it even when the workspace
        // is unreachable now.
        let args = &args;
        ledgered(ctx, Self::NAME, args, |dispatch| async move {
            let conn = ctx.connection().await?;
            run_execute(
                ctx,
                conn.as_ref(),
                command,
                background,
                timeout,
                args,
                dispatch,
            )
            .await
        })
        .await
    }
}

/// Starts (or, for an unfinished replay, finds) the process, then waits for it in the foreground.
async fn run_execute(
    ctx: &ToolContext,
    conn: &dyn WorkspaceConn,
    command: String,
    background: bool,
    timeout: Duration,
    args: &ExecuteArgs,
    dispatch: Dispatch,
) -> Result<ToolResult, ToolResult> {
    let started = Instant::now();
    let replay = dispatch == Dispatch::Unfinished;
    let request = pb::StartProcessRequest {
        command: command.clone(),
        workdir: args.workdir.clone().unwrap_or_default(),
        env: Default::default(),
        background,
        idempotency_key: ctx.tool_call_id.clone(),
        chat_id: ctx.chat_key(),
        lookup_only: replay,
    };
    // A replay must not start what the agent never saw: its outcome is unknown.
    let unknown = |status: &Status| replay && status.code() == chatproto::tonic::Code::NotFound;
    if background {
        return match conn.start_process(request).await {
            Ok(started) => done(&ExecuteResult {
                success: true,
                background_process_id: started.process_id,
                ..Default::default()
            }),
            Err(status) if unknown(&status) => Ok(unknown_outcome()),
            Err(status) => done(&ExecuteResult {
                success: false,
                error: format!("start background process: {}", status.message()),
                ..Default::default()
            }),
        };
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let process_id = match tokio::time::timeout_at(deadline, conn.start_process(request)).await {
        Ok(Ok(started)) => started.process_id,
        Ok(Err(status)) if unknown(&status) => return Ok(unknown_outcome()),
        Ok(Err(status)) => {
            return done(&ExecuteResult {
                success: false,
                error: format!("start process: {}", status.message()),
                ..Default::default()
            });
        }
        Err(_) => {
            return done(&ExecuteResult {
                success: false,
                error: format!(
                    "start process: timed out after {}",
                    duration::format(timeout)
                ),
                ..Default::default()
            });
        }
    };
    let mut result = wait_foreground(conn, ctx, &process_id, deadline, timeout).await;
    result
        .wall_duration_ms
        .get_or_insert_with(|| u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    if dumps_files(&command) && result.note.is_empty() {
        result.note = READ_FILE_NOTE.to_owned();
    }
    done(&result)
}

/// Steps 2–5 of the foreground run.
async fn wait_foreground(
    conn: &dyn WorkspaceConn,
    ctx: &ToolContext,
    process_id: &str,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> ExecuteResult {
    let cap = ctx.settings.output_cap;
    let timed_out_text = format!("command timed out after {}", duration::format(timeout));
    let exited = |out| output_result(out, cap);
    let still_running = |out, error: String| ExecuteResult {
        success: false,
        error,
        background_process_id: process_id.to_owned(),
        ..output_result(out, cap)
    };
    // §10.3: the process keeps running, and the result says so.
    let timed_out = |mut result: ExecuteResult| {
        result.timed_out = true;
        result.still_running = true;
        result.note = format!(
            "The command is still running as process {process_id}. Use process_output to \
             check on it or process_signal to stop it."
        );
        result
    };
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let attempt =
            tokio::time::timeout_at(deadline, read_output(conn, ctx, process_id, remaining)).await;
        let failure = match attempt {
            Ok(Ok(out)) if !out.running => return exited(out),
            Ok(Ok(out)) => {
                if tokio::time::Instant::now() < deadline {
                    continue; // the agent's own wait limit was shorter than ours
                }
                return timed_out(still_running(out, timed_out_text));
            }
            Ok(Err(status)) => Err(status.message().to_owned()),
            Err(_) => Ok(()), // our timer fired mid-call
        };
        // Step 5: a snapshot with a fresh limit.
        let ours = failure.is_ok();
        return match snapshot(conn, ctx, process_id, ctx.settings.snapshot_timeout).await {
            Err(snapshot_error) => ExecuteResult {
                success: false,
                exit_code: Some(-1),
                background_process_id: process_id.to_owned(),
                error: match &failure {
                    Ok(()) => format!("{timed_out_text}; failed to get output: {snapshot_error}"),
                    Err(orig) => format!(
                        "get process output: {orig}; use process_output with ID {process_id} to retry"
                    ),
                },
                ..Default::default()
            },
            Ok(out) if !out.running => exited(out),
            Ok(out) => {
                let result = still_running(
                    out,
                    match &failure {
                        Ok(()) => timed_out_text,
                        Err(orig) => format!(
                            "get process output: {orig} (process still running, use process_output to check later)"
                        ),
                    },
                );
                if ours { timed_out(result) } else { result }
            }
        };
    }
}

/// Arguments of `process_output`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessOutputArgs {
    /// The process id from `execute`.
    #[serde(default)]
    pub process_id: String,
    /// How long to wait for the process to exit, e.g. `30s` (default 10s; `0s` = a snapshot now).
    #[serde(default)]
    pub wait_timeout: Option<String>,
}

/// `process_output`.
#[derive(Debug, Default)]
pub struct ProcessOutput;

#[async_trait]
impl TypedTool for ProcessOutput {
    type Args = ProcessOutputArgs;
    const NAME: &'static str = "process_output";
    const DESCRIPTION: &'static str = "Get the output of a process started by execute, waiting up to wait_timeout (default 10s) \
         for it to exit. Returns the execute result fields; a process still running has \
         success true and a note saying so.";

    async fn run(
        &self,
        ctx: &ToolContext,
        args: ProcessOutputArgs,
    ) -> Result<ToolResult, ToolResult> {
        if args.process_id.trim().is_empty() {
            return fail("process_id is required");
        }
        let wait = match &args.wait_timeout {
            None => ctx.settings.process_output_default_wait,
            Some(text) => match duration::parse(text) {
                Err(e) => {
                    return fail(format!("invalid wait_timeout \"{text}\": {e}"));
                }
                // A negative wait is treated as an immediate snapshot (§11.6).
                Ok(d) if d.negative => Duration::ZERO,
                Ok(d) => d.magnitude,
            },
        };
        let conn = ctx.connection().await?;
        let mut output = if wait.is_zero() {
            Err(String::new())
        } else {
            read_output(conn.as_ref(), ctx, &args.process_id, wait)
                .await
                .map_err(|s| s.message().to_owned())
        };
        if output.is_err() {
            output = snapshot(
                conn.as_ref(),
                ctx,
                &args.process_id,
                ctx.settings.snapshot_timeout,
            )
            .await;
        }
        let cap = ctx.settings.output_cap;
        done(&match output {
            Err(e) => ExecuteResult {
                success: false,
                error: format!("get process output: {e}"),
                ..Default::default()
            },
            Ok(out) if out.running => ExecuteResult {
                success: true,
                note: "process is still running".into(),
                ..output_result(out, cap)
            },
            Ok(out) => output_result(out, cap),
        })
    }
}

/// Arguments of `process_list` (none).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// `process_list`.
#[derive(Debug, Default)]
pub struct ProcessList;

#[async_trait]
impl TypedTool for ProcessList {
    type Args = NoArgs;
    const NAME: &'static str = "process_list";
    const DESCRIPTION: &'static str =
        "List the processes this chat started in the workspace, running or exited.";

    async fn run(&self, ctx: &ToolContext, _args: NoArgs) -> Result<ToolResult, ToolResult> {
        let conn = ctx.connection().await?;
        Ok(
            match conn
                .list_processes(pb::ListProcessesRequest {
                    chat_id: ctx.chat_key(),
                })
                .await
            {
                Ok(list) => {
                    let processes: Vec<Value> = list
                        .processes
                        .into_iter()
                        .map(|p| {
                            let mut entry = serde_json::json!({
                                "id": p.id,
                                "command": p.command,
                                "running": p.running,
                            });
                            if !p.workdir.is_empty() {
                                entry["workdir"] = Value::String(p.workdir);
                            }
                            if let Some(code) = p.exit_code {
                                entry["exit_code"] = Value::from(code);
                            }
                            entry
                        })
                        .collect();
                    ToolResult::json(&serde_json::json!({ "processes": processes }))
                }
                Err(status) => ToolResult::json(&serde_json::json!({
                    "success": false,
                    "error": format!("list processes: {}", status.message()),
                })),
            },
        )
    }
}

/// Arguments of `process_signal`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessSignalArgs {
    /// The process id from `execute`.
    #[serde(default)]
    pub process_id: String,
    /// `terminate` (SIGTERM) or `kill` (SIGKILL); sent to the process's whole group.
    #[serde(default)]
    pub signal: String,
}

/// `process_signal`.
#[derive(Debug, Default)]
pub struct ProcessSignal;

#[async_trait]
impl TypedTool for ProcessSignal {
    type Args = ProcessSignalArgs;
    const NAME: &'static str = "process_signal";
    const DESCRIPTION: &'static str = "Send terminate (SIGTERM) or kill (SIGKILL) to a process this chat started, foreground or \
         background, and its children.";

    async fn run(
        &self,
        ctx: &ToolContext,
        args: ProcessSignalArgs,
    ) -> Result<ToolResult, ToolResult> {
        if args.process_id.trim().is_empty() {
            return fail("process_id is required");
        }
        let signal = match args.signal.as_str() {
            "terminate" => pb::ProcessSignal::Terminate,
            "kill" => pb::ProcessSignal::Kill,
            _ => return fail("signal must be \"terminate\" or \"kill\""),
        };
        let conn = ctx.connection().await?;
        Ok(
            match conn
                .signal_process(pb::SignalProcessRequest {
                    process_id: args.process_id.clone(),
                    chat_id: ctx.chat_key(),
                    signal: signal.into(),
                })
                .await
            {
                Ok(()) => ToolResult::json(&serde_json::json!({
                    "success": true,
                    "message": format!("signal \"{}\" sent to process {}", args.signal, args.process_id),
                })),
                Err(status) => ToolResult::json(&serde_json::json!({
                    "success": false,
                    "error": format!("signal process: {}", status.message()),
                })),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailing_ampersand_means_background_but_not_and_and_or_pipe_amp() {
        assert_eq!(
            strip_trailing_ampersand("sleep 5 &").as_deref(),
            Some("sleep 5")
        );
        assert_eq!(
            strip_trailing_ampersand("  npm start&  ").as_deref(),
            Some("npm start")
        );
        assert_eq!(strip_trailing_ampersand("a &&"), None);
        assert_eq!(strip_trailing_ampersand("a |&"), None);
        assert_eq!(strip_trailing_ampersand("echo hi"), None);
    }

    #[test]
    fn file_dumps_get_the_read_file_note() {
        assert!(dumps_files("cat foo.txt"));
        assert!(dumps_files("  cat\tfoo"));
        assert!(dumps_files("rg -l needle ."));
        assert!(dumps_files("grep foo --include-all x"));
        assert!(!dumps_files("catalog list"));
        assert!(!dumps_files("grep -n foo x"));
        assert!(!dumps_files("echo cat foo"));
    }

    #[test]
    fn output_is_capped_at_a_character_boundary() {
        assert_eq!(cap_output("héllo".into(), 2), "h");
        assert_eq!(cap_output("hello".into(), 10), "hello");
        assert_eq!(cap_output("hello".into(), 3), "hel");
    }
}
