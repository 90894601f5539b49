//! The idempotency ledger of side-effecting tools (spec/chattool.md §10.2): `execute`,
//! `write_file` and `edit_files` record each call by `tool_call_id` before they touch the
//! workspace, and record the result before the engine commits the tool message. A call replayed
//! after a crash or a lease takeover returns the recorded result, or asks the agent what became of
//! the unfinished call by its idempotency key, instead of running it twice.

use std::future::Future;

use chatstore::types::ToolExecutionState;
use serde::Serialize;
use sha2::Digest as _;

use crate::{ToolContext, ToolResult};

/// The result of a replayed call whose outcome nobody knows (dispatched before an interruption,
/// unknown to the agent).
pub const UNKNOWN_OUTCOME: &str = "this tool call was started before an interruption and its outcome is unknown; inspect the workspace before running it again";

/// How a tool should run a call, as the ledger sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// The first time this call is seen: run it.
    First,
    /// The call was dispatched before and never completed (a crash, a lost lease): find the
    /// operation in the agent by its idempotency key and never start it anew (unless repeating it
    /// is harmless).
    Unfinished,
}

/// The JSON result for a replay whose outcome is unknown.
pub fn unknown_outcome() -> ToolResult {
    ToolResult::json(&serde_json::json!({
        "success": false,
        "exit_code": -1,
        "error": UNKNOWN_OUTCOME,
    }))
}

/// SHA-256 of the arguments' canonical JSON (object keys sorted).
pub fn args_digest(args: &impl Serialize) -> Vec<u8> {
    // `serde_json::Value` keeps object keys sorted, which makes the text canonical.
    let canonical = serde_json::to_value(args)
        .map(|v| v.to_string())
        .unwrap_or_default();
    sha2::Sha256::digest(canonical.as_bytes()).to_vec()
}

/// Runs a side-effecting call under the ledger. Without a store the call simply runs.
///
/// `run` is told whether this is the first dispatch or the replay of an unfinished one; its result
/// (`Err` is a result too) is recorded before it is returned.
pub async fn ledgered<F, Fut>(
    ctx: &ToolContext,
    tool_name: &str,
    args: &impl Serialize,
    run: F,
) -> Result<ToolResult, ToolResult>
where
    F: FnOnce(Dispatch) -> Fut,
    Fut: Future<Output = Result<ToolResult, ToolResult>>,
{
    ctx.check_lease()?;
    let Some(store) = ctx.store.clone() else {
        return run(Dispatch::First).await;
    };
    let digest = args_digest(args);
    let prior = store
        .begin_tool_execution(
            ctx.chat.id,
            &ctx.tool_call_id,
            tool_name,
            &digest,
            ctx.runner_id,
        )
        .await
        .map_err(|e| ToolResult::error(format!("record tool call: {e}")))?;
    let dispatch = match prior {
        None => Dispatch::First,
        Some(row) if row.args_sha256 != digest => {
            tracing::error!(
                chat = %ctx.chat.id,
                call = %ctx.tool_call_id,
                tool = tool_name,
                "a replayed tool call has different arguments than the recorded one; not running it"
            );
            return Ok(unknown_outcome());
        }
        Some(row) => match (row.state, row.result) {
            (ToolExecutionState::Completed, Some(result)) => {
                return match serde_json::from_value::<ToolResult>(result) {
                    Ok(r) if r.is_error => Err(r),
                    Ok(r) => Ok(r),
                    Err(e) => {
                        tracing::error!(error = %e, call = %ctx.tool_call_id, "recorded tool result is malformed");
                        Ok(unknown_outcome())
                    }
                };
            }
            _ => Dispatch::Unfinished,
        },
    };
    let outcome = run(dispatch).await;
    let result = match &outcome {
        Ok(r) | Err(r) => r,
    };
    let recorded = serde_json::to_value(result).unwrap_or_default();
    if let Err(e) = store
        .complete_tool_execution(ctx.chat.id, &ctx.tool_call_id, &recorded)
        .await
    {
        // The result still reaches the model; a later replay asks the agent instead.
        tracing::warn!(error = %e, call = %ctx.tool_call_id, "recording the tool result failed");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_ignores_key_order_but_not_values() {
        let a = args_digest(&serde_json::json!({"command": "ls", "timeout": "5s"}));
        let b: serde_json::Value =
            serde_json::from_str(r#"{"timeout":"5s","command":"ls"}"#).unwrap_or_default();
        assert_eq!(a, args_digest(&b));
        assert_ne!(a, args_digest(&serde_json::json!({"command": "ls -l"})));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn an_unknown_outcome_is_json_that_survives_replay() {
        let r = unknown_outcome();
        assert!(!r.is_error);
        let v = r.as_json().unwrap_or_default();
        assert_eq!(v["exit_code"], -1);
        assert_eq!(v["error"], UNKNOWN_OUTCOME);
    }
}
