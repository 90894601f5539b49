//! The interrupt task (spec/recovery.md §6): close the interrupted episode, cancel the step's
//! calls in the workspace, build the partial assistant message from its buffered parts, answer
//! every call left without a result, and apply `FinishInterruption`. Its token is the runner's child, not the cancelled generation task's,
//! so the interrupt itself is not interrupted.

use chatstate::ChatStatus;
use chatstore::Change;

use crate::parts::EpisodeKey;
use crate::step::{self, Accumulator};
use crate::{TaskCtx, TaskExit};

/// Finalises an interrupted turn.
pub(crate) async fn run(t: TaskCtx) -> Result<(), TaskExit> {
    let snapshot = t
        .infra(|| t.shared.deps.store.snapshot(t.chat_id, 0))
        .await?;
    let chat = snapshot.chat;
    if chat.worker_id != Some(t.shared.worker_id)
        || chat.runner_id != Some(t.runner_id)
        || chat.status != ChatStatus::Interrupting
        || chat.history_version != t.history_version
    {
        return Err(TaskExit::Fenced(
            "the chat is no longer interrupting".into(),
        ));
    }
    let key = EpisodeKey {
        chat_id: t.chat_id,
        history_version: chat.history_version,
        generation_attempt: chat.generation_attempt,
    };
    t.shared.parts.close_episode(key);
    let now = chrono::Utc::now();
    let mut acc = Accumulator::default();
    for part in t.shared.parts.parts(&key) {
        acc.take(&part.to_live(), now);
    }
    let rows = step::prompt_rows(&snapshot.history);
    let committed = step::pending_calls(&rows);
    crate::cancel::in_workspace(
        &t.runner,
        t.token.clone(),
        t.chat_id,
        &committed,
        t.shared.config.tool_cancel_wait,
    )
    .await;
    let partial = acc.interrupted_suffix(&committed, now);
    tracing::info!(
        chat_id = %t.chat_id,
        partial_messages = partial.len(),
        model_invoked_at = ?t.shared.parts.model_invoked_at(&key),
        "finishing an interrupted turn"
    );
    t.apply(Change::FinishInterruption { partial }, None)
        .await?;
    Ok(())
}
