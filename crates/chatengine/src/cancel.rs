//! Stopping in the workspace what a turn leaves behind (spec/recovery.md §6 step 4, spec/
//! engine.md §12.7): the `execute`, `write_file` and `edit_files` calls of an interrupted step,
//! or of a step whose message an edit removed, get a cancel request by their idempotency key,
//! so a command the user stopped does not keep running (and writing) in the workspace.
//!
//! Best effort and bounded: the requests of one step share `interrupt.tool_cancel_wait` in
//! total, including the dial; a failure is logged and the turn goes on.

use std::time::Duration;

use chatproto::wsagent::v1 as pb;
use chatretry::CancelToken;
use chatstore::types::Message;
use chattool::conn::WorkspaceConn as _;
use uuid::Uuid;

use crate::runner::RunnerState;
use crate::step::PendingCall;

/// The tools whose calls have side effects in the workspace that a cancel stops.
const CANCELLABLE: [&str; 3] = ["execute", "write_file", "edit_files"];

/// Sends a cancel request for every cancellable call in `calls`, waiting at most `wait` in all.
/// `token` bounds the dial (the runner's: a runner that stops stops this too).
pub(crate) async fn in_workspace(
    runner: &RunnerState,
    token: CancelToken,
    chat_id: Uuid,
    calls: &[PendingCall],
    wait: Duration,
) {
    let keys: Vec<String> = calls
        .iter()
        .filter(|c| CANCELLABLE.contains(&c.name.as_str()))
        .map(PendingCall::key)
        .collect();
    let Some(resolver) = runner.resolver.as_ref() else {
        return;
    };
    if keys.is_empty() || wait.is_zero() {
        return;
    }
    let resolver = resolver.for_turn(token);
    let work = async {
        let conn = match resolver.resolve(chat_id).await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::info!(%chat_id, error = %crate::error_chain(&err), "cannot reach the workspace to cancel the calls left behind");
                return;
            }
        };
        let requests = keys.iter().map(|key| {
            let conn = &conn;
            async move {
                let request = pb::CancelRequest {
                    idempotency_key: key.clone(),
                    chat_id: chat_id.to_string(),
                };
                match conn.cancel(request).await {
                    Ok(answer) => tracing::info!(
                        %chat_id, call = %key, found = answer.found, stopped = answer.canceled,
                        "cancelled a tool call in the workspace"
                    ),
                    Err(status) => tracing::info!(
                        %chat_id, call = %key, error = %status.message(),
                        "the workspace agent refused to cancel a tool call"
                    ),
                }
            }
        });
        futures_util::future::join_all(requests).await;
    };
    if tokio::time::timeout(wait, work).await.is_err() {
        tracing::warn!(%chat_id, calls = keys.len(), wait = ?wait, "cancelling tool calls in the workspace took too long; left to the agent");
    }
}

/// The calls among `calls` whose message is no longer in `history`, or is there deleted (an
/// edit removed it).
pub(crate) fn edited_away(calls: &[PendingCall], history: &[Message]) -> Vec<PendingCall> {
    let kept: std::collections::HashSet<i64> = history
        .iter()
        .filter(|m| !m.deleted)
        .map(|m| m.id)
        .collect();
    calls
        .iter()
        .filter(|c| !kept.contains(&c.message_id))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(message_id: i64, id: &str) -> PendingCall {
        PendingCall {
            id: id.into(),
            name: "execute".into(),
            args: "{}".into(),
            message_id,
        }
    }

    fn message(id: i64, deleted: bool) -> Message {
        let mut m = crate::step::test_rows::row(id, chatstore::types::Role::Assistant, Vec::new());
        m.deleted = deleted;
        m
    }

    #[test]
    fn only_calls_whose_message_left_the_history_are_edited_away() {
        let calls = [call(7, "kept"), call(8, "deleted"), call(9, "gone")];
        let gone = edited_away(&calls, &[message(7, false), message(8, true)]);
        let ids: Vec<&str> = gone.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["deleted", "gone"]);
    }
}
