//! Compaction (spec/engine.md §12.3 rules 3 and 6, §12.4 `compact`, §12.6): the model
//! summarises the conversation, and the summary replaces it in every later prompt.
//!
//! One compaction commits, in one step:
//! 1. the **boundary**: a model-only user row marked `compressed`, holding the summary; prompts
//!    start from the newest boundary ([`crate::step::prompt_rows`]);
//! 2. a visible `chat_summarized` tool call and result, so the user sees that (and why) the
//!    context was compacted;
//! 3. the trailing user messages the model has not answered yet, again as model-only rows, so
//!    they follow the summary in the next prompt.
//!
//! The summary call sees the conversation as one transcript in one user message, which every
//! provider accepts whatever the history holds. When that call itself overflows the context, the
//! oldest half of the transcript's rows is dropped and the call made again, at most three times;
//! then the turn ends with the compaction error of spec/chaterror.md §12.1.

use std::fmt::Write as _;

use chaterror::{BoxError, Classification, ClassifyContext, SubReason, classify};
use chatmodel::{ModelMessage, ModelRequest, StreamPart};
use chatstore::Change;
use chatstore::models::ModelConfig;
use chatstore::types::{Message, MessagePart, NewMessage, Role, Visibility};
use futures_util::StreamExt as _;
use uuid::Uuid;

use crate::generation::{self, Outcome};
use crate::parts::EpisodeKey;
use crate::payload::RetryStatus;
use crate::step::{self, CompactionSource, LivePart, SUMMARIZED_TOOL};
use crate::{TaskCtx, TaskExit, cancelled};

/// What the summary call is asked to do (its system prompt).
pub const SUMMARY_INSTRUCTIONS: &str = "You are compacting a conversation between a user and a coding agent so that it fits the \
model's context window. Write a summary that lets the agent continue the work without the \
original messages. Keep: the user's goals and instructions, decisions made and why, the \
workspace and its state, files created or changed (with paths), commands run and what they \
showed, errors met and how they were handled, what is done, what remains, and the next step. \
Be concrete and complete; leave out pleasantries. Write the summary only.";

/// What the boundary row says before the summary.
pub const SUMMARY_PREFIX: &str =
    "The earlier conversation was compacted to fit the context window. Its summary:\n\n";

/// How often the summary call is made again with a shorter transcript after it overflowed.
pub const MAX_SHRINKS: usize = 3;

/// How much of one tool result or call argument the transcript keeps.
const TRANSCRIPT_ITEM_CHARS: usize = 4_000;

/// Runs one compaction step and commits it.
pub(crate) async fn compact(
    t: &TaskCtx,
    history: &[Message],
    config: &ModelConfig,
    source: CompactionSource,
) -> Result<Outcome, TaskExit> {
    let rows = step::prompt_rows(history);
    let before = step::latest_usage(&rows).unwrap_or(0);
    // The user messages not answered yet follow the summary instead of going into it.
    let answered_until = rows
        .iter()
        .rposition(|m| m.role != Role::User || m.compressed)
        .map_or(0, |i| i + 1);
    let (summarised, trailing) = rows.split_at(answered_until);
    let summarised: Vec<&Message> = summarised
        .iter()
        .copied()
        .filter(|m| m.role != Role::System || m.compressed)
        .collect();
    if summarised.is_empty() {
        // Nothing but unanswered messages: a summary cannot make them smaller.
        fail(t, 0).await?;
        return Ok(Outcome::Committed);
    }
    let client = match t.shared.models.client(config) {
        Ok(client) => client,
        Err(err) => {
            let c = generation::config_error(&format!(
                "The model configuration cannot be used: {err}."
            ));
            generation::finish_error(t, &c, RetryStatus::Terminal, 0, None).await?;
            return Ok(Outcome::Committed);
        }
    };
    let mut permit = crate::limits::admit(t, 0, config).await?;
    let (attempt, key) = generation::start_step(t).await?;
    let _episode = generation::EpisodeGuard { t, key };
    let call_id = format!("{SUMMARIZED_TOOL}_{}", Uuid::new_v4().simple());
    let call = MessagePart::ToolCall {
        tool_call_id: call_id.clone(),
        tool_name: SUMMARIZED_TOOL.into(),
        args: "{}".into(),
        provider_executed: false,
        provider_metadata: None,
    };
    publish(t, &key, Role::Assistant, call.clone());

    let mut keep = summarised.len();
    let mut shrinks = 0;
    let (summary, usage) = loop {
        let request = summary_request(config, &summarised[summarised.len() - keep..]);
        match summarise(t, client.clone(), request, &config.provider).await? {
            Ok(done) => {
                if let Some(permit) = &mut permit {
                    permit.succeeded();
                }
                break done;
            }
            Err(err) => {
                let c = classify(
                    err.as_ref(),
                    &ClassifyContext::new(std::time::SystemTime::now()),
                )
                .with_provider(&config.provider);
                if c.sub_reason != Some(SubReason::ContextWindowExceeded) {
                    return generation::on_failure(t, err, attempt, &config.provider, permit).await;
                }
                if shrinks == MAX_SHRINKS || keep <= 1 {
                    tracing::warn!(chat_id = %t.chat_id, shrinks, "the summary call still overflows the context");
                    fail(t, attempt).await?;
                    return Ok(Outcome::Committed);
                }
                shrinks += 1;
                keep = keep.div_ceil(2);
                tracing::info!(chat_id = %t.chat_id, keep, shrinks, "the summary call overflowed; dropping the oldest messages");
            }
        }
    };

    let limit = config.context_limit;
    let result = MessagePart::ToolResult {
        tool_call_id: call_id,
        tool_name: SUMMARIZED_TOOL.into(),
        result: serde_json::json!({
            "source": source.as_str(),
            "threshold": config.compression_threshold,
            "usage_percent": if limit > 0 { before.saturating_mul(100) / limit } else { 0 },
            "tokens": before,
            "context_limit": limit,
            "summary_tokens": usage.output_tokens,
        }),
        is_error: false,
        provider_executed: false,
    };
    publish(t, &key, Role::Tool, result.clone());
    let mut messages = vec![
        NewMessage {
            role: Role::User,
            visibility: Visibility::Model,
            compressed: true,
            model_config_id: Some(config.id),
            ..NewMessage::assistant(vec![MessagePart::text(format!(
                "{SUMMARY_PREFIX}{}",
                summary.trim()
            ))])
        },
        NewMessage {
            visibility: Visibility::User,
            ..NewMessage::assistant(vec![call])
        },
        NewMessage {
            visibility: Visibility::User,
            ..NewMessage::tool(vec![result])
        },
    ];
    messages.extend(trailing.iter().map(|m| NewMessage {
        role: Role::User,
        visibility: Visibility::Model,
        created_by: m.created_by,
        model_config_id: m.model_config_id,
        ..NewMessage::assistant(m.content.clone())
    }));
    tracing::info!(
        chat_id = %t.chat_id,
        source = source.as_str(),
        tokens_before = before,
        summarised = keep,
        summary_tokens = usage.output_tokens,
        "chat history compacted"
    );
    t.apply(
        Change::CommitStep {
            messages,
            consume_compaction: source == CompactionSource::Manual,
        },
        Some(attempt),
    )
    .await?;
    Ok(Outcome::Committed)
}

/// Ends the turn with the compaction error (spec/chaterror.md §12.1).
async fn fail(t: &TaskCtx, attempt: i64) -> Result<(), TaskExit> {
    let c = Classification::compaction_still_over_limit();
    let fence = (attempt > 0).then_some(attempt);
    generation::finish_error(t, &c, RetryStatus::Terminal, attempt, fence).await
}

fn publish(t: &TaskCtx, key: &EpisodeKey, role: Role, part: MessagePart) {
    generation::publish(
        t,
        key,
        LivePart {
            role,
            part,
            args_delta: None,
        },
    );
}

/// The summary call: the instructions, then the transcript of `rows` as one user message.
fn summary_request(config: &ModelConfig, rows: &[&Message]) -> ModelRequest {
    ModelRequest {
        model: config.model.clone(),
        system: SUMMARY_INSTRUCTIONS.into(),
        messages: vec![ModelMessage::User {
            text: transcript(rows),
        }],
        tools: Vec::new(),
        max_output_tokens: None,
        temperature: None,
        provider_options: None,
        cache_prompt: false,
    }
}

/// Makes the summary call: `Ok(Ok(text, usage))`, or the call's failure to classify.
async fn summarise(
    t: &TaskCtx,
    client: std::sync::Arc<chatmodel::client::ModelClient>,
    request: ModelRequest,
    provider: &str,
) -> Result<Result<(String, chatmodel::Usage), BoxError>, TaskExit> {
    let streamed = generation::model_stream(t, client, request, provider);
    tokio::pin!(streamed);
    let mut summary = String::new();
    let mut usage = chatmodel::Usage::default();
    loop {
        let item = tokio::select! {
            biased;
            _ = t.token.cancelled() => return Err(cancelled(&t.token)),
            item = streamed.next() => item,
        };
        t.progress.kick();
        match item {
            None => return Ok(Ok((summary, usage))),
            Some(Err(err)) if t.token.is_cancelled() => {
                drop(err);
                return Err(cancelled(&t.token));
            }
            Some(Err(err)) => return Ok(Err(err)),
            Some(Ok(StreamPart::TextDelta(text))) => summary.push_str(&text),
            Some(Ok(StreamPart::Usage(u))) => usage = u,
            Some(Ok(_)) => {}
        }
    }
}

/// The conversation as text: one block per message, tool calls and results included (each cut
/// to a few thousand characters).
pub fn transcript(rows: &[&Message]) -> String {
    let mut out = String::new();
    let cut = |text: &str| -> String {
        match text.char_indices().nth(TRANSCRIPT_ITEM_CHARS) {
            Some((at, _)) => format!("{}…", &text[..at]),
            None => text.to_owned(),
        }
    };
    for m in rows {
        let who = match (m.role, m.compressed) {
            (_, true) => "summary of earlier messages",
            (Role::User, _) => "user",
            (Role::Assistant, _) => "assistant",
            (Role::Tool, _) => "tool",
            (Role::System, _) => "system",
        };
        for part in &m.content {
            let _ = match part {
                MessagePart::Text { text } => writeln!(out, "[{who}]\n{}\n", text.trim()),
                MessagePart::ToolCall {
                    tool_name, args, ..
                } => writeln!(out, "[{who} calls {tool_name}]\n{}\n", cut(args)),
                MessagePart::ToolResult {
                    tool_name,
                    result,
                    is_error,
                    ..
                } => {
                    let text = match result {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    let what = if *is_error { "error" } else { "result" };
                    writeln!(out, "[{tool_name} {what}]\n{}\n", cut(&text))
                }
                _ => Ok(()),
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::test_rows::row;

    #[test]
    fn a_transcript_names_who_said_what_and_cuts_long_results() {
        let long = "x".repeat(TRANSCRIPT_ITEM_CHARS + 10);
        let rows = [
            row(1, Role::User, vec![MessagePart::text("fix the build")]),
            row(
                2,
                Role::Assistant,
                vec![MessagePart::ToolCall {
                    tool_call_id: "c".into(),
                    tool_name: "execute".into(),
                    args: r#"{"command":"make"}"#.into(),
                    provider_executed: false,
                    provider_metadata: None,
                }],
            ),
            row(
                3,
                Role::Tool,
                vec![MessagePart::error_result("c", "execute", &long)],
            ),
        ];
        let refs: Vec<&Message> = rows.iter().collect();
        let text = transcript(&refs);
        assert!(text.starts_with("[user]\nfix the build\n"), "{text}");
        assert!(text.contains("[assistant calls execute]\n{\"command\":\"make\"}"));
        assert!(text.contains("[execute error]\n"));
        assert!(text.contains('…'));
        assert!(text.len() < TRANSCRIPT_ITEM_CHARS + 200);
    }
}
