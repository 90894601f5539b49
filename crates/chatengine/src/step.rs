//! The pure parts of a generation step (spec/engine.md §12): which rows form the prompt, what the
//! next action is, how streamed parts become an assistant message (also for an interrupted one,
//! spec/recovery.md §6), and how tool results are capped.

use std::collections::{HashMap, HashSet};

use chatmodel::{AssistantPart, ModelMessage, StreamPart, ToolResultBlock};
use chatstore::types::{Chat, Message, MessagePart, NewMessage, Role, Visibility};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::parts::PartSize;

/// The text an unanswered tool call of an interrupted turn gets (spec/chattool.md §2.8).
pub const INTERRUPTED_RESULT: &str = "tool call was interrupted before it produced a result";
/// What ends a capped tool result (spec/engine.md §19 item 3).
pub const TRUNCATED_MARKER: &str = "\n[output truncated]";
/// The smallest share of the result budget one tool result gets.
pub const MIN_RESULT_BYTES: usize = 8 * 1024;

/// A part as it streams to clients: who produced it, the part, and for a streaming tool call
/// the next fragment of its arguments (`args_delta`, streaming only).
#[derive(Debug, Clone, PartialEq)]
pub struct LivePart {
    /// `assistant` for model output, `tool` for tool results.
    pub role: Role,
    /// The part (a delta for text and reasoning).
    pub part: MessagePart,
    /// The next fragment of a tool call's arguments.
    pub args_delta: Option<String>,
}

/// A live part as the part buffer keeps it. Most parts of a reply are text or reasoning
/// deltas of a few characters, so those are stored as a bare string (24 bytes plus the text
/// instead of a 144-byte [`LivePart`] plus the text); everything else is boxed.
#[derive(Debug, Clone, PartialEq)]
pub enum BufferedPart {
    /// An assistant text delta.
    Text(Box<str>),
    /// An assistant reasoning delta without metadata, and when it was seen.
    Reasoning(Box<str>, DateTime<Utc>),
    /// Any other part.
    Other(Box<LivePart>),
}

impl BufferedPart {
    /// The part as streamed.
    pub fn to_live(&self) -> LivePart {
        let assistant = |part| LivePart {
            role: Role::Assistant,
            part,
            args_delta: None,
        };
        match self {
            Self::Text(text) => assistant(MessagePart::text(text.to_string())),
            Self::Reasoning(text, at) => assistant(MessagePart::Reasoning {
                text: text.to_string(),
                created_at: Some(*at),
                completed_at: None,
                provider_metadata: None,
            }),
            Self::Other(live) => (**live).clone(),
        }
    }
}

impl From<LivePart> for BufferedPart {
    fn from(live: LivePart) -> Self {
        match live {
            LivePart {
                role: Role::Assistant,
                part: MessagePart::Text { text },
                args_delta: None,
            } => Self::Text(text.into_boxed_str()),
            LivePart {
                role: Role::Assistant,
                part:
                    MessagePart::Reasoning {
                        text,
                        created_at: Some(at),
                        completed_at: None,
                        provider_metadata: None,
                    },
                args_delta: None,
            } => Self::Reasoning(text.into_boxed_str(), at),
            other => Self::Other(Box::new(other)),
        }
    }
}

impl PartSize for BufferedPart {
    fn json_len(&self) -> usize {
        // `{"type":"text","text":"…"}` and the like; escapes are not counted.
        match self {
            Self::Text(text) => 25 + text.len(),
            Self::Reasoning(text, _) => 70 + text.len(),
            Self::Other(live) => {
                serde_json::to_vec(&live.part).map_or(0, |v| v.len())
                    + live.args_delta.as_ref().map_or(0, String::len)
            }
        }
    }
}

/// A tool call the model made that has no result yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCall {
    /// The call's id, as the model gave it.
    pub id: String,
    /// The tool.
    pub name: String,
    /// The arguments as JSON text.
    pub args: String,
    /// The assistant message that made the call.
    pub message_id: i64,
}

/// What a generation task does next (spec/engine.md §12.3, first match wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run the pending calls of tools chatd executes.
    ExecuteTools(Vec<PendingCall>),
    /// Only client-executed (dynamic) calls are pending.
    EnterRequiresAction,
    /// The turn is complete.
    FinishTurn,
    /// Summarise the history into a compaction boundary.
    Compact(CompactionSource),
    /// A compaction has just run and the history is still over the limit: the turn ends with
    /// the compaction error.
    FailCompaction,
    /// Ask the model.
    Generate,
}

/// The visible tool call and result a compaction commits (spec/engine.md §12.4).
pub const SUMMARIZED_TOOL: &str = "chat_summarized";

/// Why a compaction runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionSource {
    /// The user asked (`CompactChat`).
    Manual,
    /// The history reached the model's compression threshold, or overflowed its context.
    Automatic,
}

impl CompactionSource {
    /// The stored name (`manual`, `automatic`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Automatic => "automatic",
        }
    }
}

/// What [`decide`] knows besides the history.
#[derive(Debug, Clone, Default)]
pub struct Situation {
    /// The chat's client-executed tools.
    pub dynamic: HashSet<String>,
    /// `chat.max_steps_per_turn`.
    pub max_steps: usize,
    /// `compaction_requested_at` is set.
    pub compaction_requested: bool,
    /// Compact automatically once the latest usage reaches this many tokens (`None`: never).
    pub compact_at: Option<i64>,
}

impl Situation {
    /// A situation with these dynamic tools and step cap, nothing about compaction.
    pub fn new(dynamic: HashSet<String>, max_steps: usize) -> Self {
        Self {
            dynamic,
            max_steps,
            ..Self::default()
        }
    }
}

/// The token count at which a model configuration compacts: `context_limit × threshold / 100`;
/// `None` when the threshold is 100 or more (disabled), not positive, or the limit unknown.
pub fn compaction_limit(context_limit: i64, threshold: i32) -> Option<i64> {
    (context_limit > 0 && (1..100).contains(&threshold))
        .then(|| context_limit.saturating_mul(i64::from(threshold)) / 100)
}

/// The tokens the latest model call used (input and cache), among the prompt's rows.
pub fn latest_usage(rows: &[&Message]) -> Option<i64> {
    rows.iter().rev().find_map(|m| {
        m.usage.as_ref().map(|u| {
            u.input_tokens
                .saturating_add(u.cache_read_tokens)
                .saturating_add(u.cache_creation_tokens)
        })
    })
}

/// Whether the prompt holds an assistant message a compaction could summarise.
pub fn has_compactable(history: &[Message]) -> bool {
    prompt_rows(history)
        .iter()
        .any(|m| m.role == Role::Assistant && !m.compressed)
}

/// The source of the last committed step, when that step was a compaction.
pub fn last_compaction(history: &[Message]) -> Option<CompactionSource> {
    let step = history
        .iter()
        .rev()
        .filter(|m| !m.deleted)
        .find(|m| matches!(m.role, Role::Assistant | Role::Tool))?;
    step.content.iter().find_map(|p| match p {
        MessagePart::ToolResult {
            tool_name, result, ..
        } if tool_name == SUMMARIZED_TOOL => Some(
            if result.get("source").and_then(Value::as_str) == Some("manual") {
                CompactionSource::Manual
            } else {
                CompactionSource::Automatic
            },
        ),
        _ => None,
    })
}

/// The rows the model sees: model-visible, not deleted; uncompressed `system` rows, the newest
/// compaction boundary, and the rows after it (spec/engine.md §8.3), in id order.
pub fn prompt_rows(history: &[Message]) -> Vec<&Message> {
    let visible = |m: &&Message| !m.deleted && m.visibility != Visibility::User;
    let boundary = history
        .iter()
        .filter(visible)
        .filter(|m| m.compressed)
        .map(|m| m.id)
        .max();
    history
        .iter()
        .filter(visible)
        .filter(|m| match boundary {
            None => true,
            Some(b) => m.id >= b || (m.role == Role::System && !m.compressed),
        })
        .collect()
}

impl PendingCall {
    /// The call's key in the idempotency ledger and the agent: the model's id scoped by the
    /// message that made the call. Providers' ids are not to be trusted alone: an
    /// OpenAI-compatible server may send none, or the same one every turn, and a replay must
    /// never find another turn's result.
    pub fn key(&self) -> String {
        format!("{}:{}", self.message_id, self.id)
    }
}

/// Tool calls of the last assistant message without a result in a later row.
pub fn pending_calls(rows: &[&Message]) -> Vec<PendingCall> {
    let Some(last) = rows.iter().rposition(|m| m.role == Role::Assistant) else {
        return Vec::new();
    };
    let answered: HashSet<&str> = rows[last..]
        .iter()
        .flat_map(|m| m.content.iter())
        .filter_map(|p| match p {
            MessagePart::ToolResult { tool_call_id, .. } => Some(tool_call_id.as_str()),
            _ => None,
        })
        .collect();
    rows[last]
        .content
        .iter()
        .filter_map(|p| match p {
            MessagePart::ToolCall {
                tool_call_id,
                tool_name,
                args,
                provider_executed: false,
                ..
            } if !answered.contains(tool_call_id.as_str()) => Some(PendingCall {
                id: tool_call_id.clone(),
                name: tool_name.clone(),
                args: args.clone(),
                message_id: rows[last].id,
            }),
            _ => None,
        })
        .collect()
}

/// The names of the chat's client-executed (dynamic) tools.
pub fn dynamic_tool_names(chat: &Chat) -> HashSet<String> {
    chat.dynamic_tools
        .as_ref()
        .and_then(|v| v.as_array())
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t.get("name")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The dynamic tool calls the client must answer: pending calls of the prompt's last
/// assistant message whose tool is one of the chat's dynamic tools.
pub fn pending_dynamic_calls(chat: &Chat, history: &[Message]) -> Vec<PendingCall> {
    let dynamic = dynamic_tool_names(chat);
    pending_calls(&prompt_rows(history))
        .into_iter()
        .filter(|c| dynamic.contains(&c.name))
        .collect()
}

/// Decides the next action over the committed history (spec/engine.md §12.3). `dynamic` names
/// the chat's client-executed tools. Compaction (rules 3 and 6) is not implemented yet.
pub fn decide(history: &[Message], situation: &Situation) -> Action {
    let rows = prompt_rows(history);
    // 1: unanswered calls.
    let pending = pending_calls(&rows);
    if !pending.is_empty() {
        let local: Vec<PendingCall> = pending
            .into_iter()
            .filter(|c| !situation.dynamic.contains(&c.name))
            .collect();
        return if local.is_empty() {
            Action::EnterRequiresAction
        } else {
            Action::ExecuteTools(local)
        };
    }
    // 3: a manual compaction with something to compact.
    if situation.compaction_requested && has_compactable(history) {
        return Action::Compact(CompactionSource::Manual);
    }
    // 4: the history is complete (a manual compaction completes what it was asked to do).
    let previous = last_compaction(history);
    if previous == Some(CompactionSource::Manual) {
        return Action::FinishTurn;
    }
    let last = rows.iter().rev().find(|m| m.role != Role::System);
    if last.is_some_and(|m| m.role == Role::Assistant) {
        return Action::FinishTurn;
    }
    // 5: the step cap.
    let last_user = rows
        .iter()
        .rposition(|m| m.role == Role::User && !m.compressed);
    let steps = rows[last_user.map_or(0, |i| i + 1)..]
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .count();
    if steps >= situation.max_steps {
        return Action::FinishTurn;
    }
    // 6: automatic compaction.
    let over = situation
        .compact_at
        .zip(latest_usage(&rows))
        .is_some_and(|(limit, used)| used > 0 && used >= limit);
    if over {
        return if previous.is_some() {
            Action::FailCompaction
        } else {
            Action::Compact(CompactionSource::Automatic)
        };
    }
    Action::Generate
}

/// A user's own instructions as the system prompt carries them (spec/engine.md §12.2); `None`
/// when there are none.
pub fn user_instructions(custom_prompt: &str) -> Option<String> {
    let prompt = custom_prompt.trim();
    (!prompt.is_empty()).then(|| format!("<user-instructions>\n{prompt}\n</user-instructions>"))
}

/// The prompt: system texts (rows of role `system`) and the conversation.
pub fn prompt(rows: &[&Message]) -> (Vec<String>, Vec<ModelMessage>) {
    let mut system = Vec::new();
    let mut messages = Vec::new();
    for m in rows {
        match m.role {
            Role::System => system.push(text_of(&m.content)),
            Role::User => messages.push(ModelMessage::User {
                text: text_of(&m.content),
            }),
            Role::Assistant => {
                let parts: Vec<AssistantPart> =
                    m.content.iter().filter_map(assistant_part).collect();
                if !parts.is_empty() {
                    messages.push(ModelMessage::Assistant { parts });
                }
            }
            Role::Tool => {
                let results: Vec<ToolResultBlock> = m
                    .content
                    .iter()
                    .filter_map(|p| match p {
                        MessagePart::ToolResult {
                            tool_call_id,
                            tool_name,
                            result,
                            is_error,
                            ..
                        } => Some(ToolResultBlock {
                            call_id: tool_call_id.clone(),
                            name: tool_name.clone(),
                            // An error is replayed as its text only (spec/engine.md §12.2).
                            content: match result {
                                Value::String(text) => text.clone(),
                                other => other.to_string(),
                            },
                            is_error: *is_error,
                        }),
                        _ => None,
                    })
                    .collect();
                if !results.is_empty() {
                    messages.push(ModelMessage::ToolResults { results });
                }
            }
        }
    }
    (system, messages)
}

fn text_of(content: &[MessagePart]) -> String {
    content
        .iter()
        .filter_map(|p| match p {
            MessagePart::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assistant_part(part: &MessagePart) -> Option<AssistantPart> {
    match part {
        MessagePart::Text { text } if !text.is_empty() => Some(AssistantPart::Text(text.clone())),
        MessagePart::Reasoning {
            text,
            provider_metadata,
            ..
        } => Some(AssistantPart::Reasoning {
            text: text.clone(),
            signature: signature(provider_metadata.as_ref()),
        }),
        MessagePart::ToolCall {
            tool_call_id,
            tool_name,
            args,
            provider_executed: false,
            ..
        } => Some(AssistantPart::ToolCall {
            id: tool_call_id.clone(),
            name: tool_name.clone(),
            args: args.clone(),
        }),
        _ => None,
    }
}

fn signature(metadata: Option<&Value>) -> Option<String> {
    metadata?.get("signature")?.as_str().map(str::to_owned)
}

/// Turns the stream's parts into live parts and the pieces of the assistant message.
#[derive(Debug, Default)]
pub struct Accumulator {
    text: String,
    reasoning: String,
    signature: Option<String>,
    reasoning_started: Option<DateTime<Utc>>,
    reasoning_done: Option<DateTime<Utc>>,
    calls: Vec<CallState>,
    results: HashMap<String, MessagePart>,
}

#[derive(Debug)]
struct CallState {
    id: String,
    name: String,
    args: String,
    complete: bool,
}

impl Accumulator {
    /// The live part of a provider stream part (`None` for bookkeeping parts such as usage),
    /// after taking it in.
    pub fn on_stream(&mut self, part: &StreamPart, now: DateTime<Utc>) -> Option<LivePart> {
        let live = match part {
            StreamPart::TextDelta(text) => MessagePart::text(text.clone()),
            StreamPart::ReasoningDelta(text) => MessagePart::Reasoning {
                text: text.clone(),
                created_at: Some(now),
                completed_at: None,
                provider_metadata: None,
            },
            StreamPart::ReasoningSignature(sig) => MessagePart::Reasoning {
                text: String::new(),
                created_at: None,
                completed_at: None,
                provider_metadata: Some(serde_json::json!({ "signature": sig })),
            },
            StreamPart::ToolCallStart { id, name } => tool_call(id, name, String::new()),
            StreamPart::ToolCallArgsDelta { id, delta } => {
                let name = self
                    .calls
                    .iter()
                    .find(|c| &c.id == id)
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                let live = LivePart {
                    role: Role::Assistant,
                    part: tool_call(id, &name, String::new()),
                    args_delta: Some(delta.clone()),
                };
                self.take(&live, now);
                return Some(live);
            }
            StreamPart::ToolCallEnd { id, name, args } => tool_call(id, name, args.clone()),
            StreamPart::ResponseId(_) | StreamPart::Usage(_) | StreamPart::Finish(_) => {
                return None;
            }
        };
        let live = LivePart {
            role: Role::Assistant,
            part: live,
            args_delta: None,
        };
        self.take(&live, now);
        Some(live)
    }

    /// Takes in a live part (from the stream, or replayed from the part buffer).
    pub fn take(&mut self, live: &LivePart, now: DateTime<Utc>) {
        if !matches!(live.part, MessagePart::Reasoning { .. })
            && self.reasoning_started.is_some()
            && self.reasoning_done.is_none()
        {
            self.reasoning_done = Some(now);
        }
        match &live.part {
            MessagePart::Text { text } => self.text.push_str(text),
            MessagePart::Reasoning {
                text,
                created_at,
                provider_metadata,
                ..
            } => {
                self.reasoning.push_str(text);
                if self.reasoning_started.is_none() {
                    self.reasoning_started = created_at.or(Some(now));
                }
                if let Some(sig) = signature(provider_metadata.as_ref()) {
                    self.signature = Some(sig);
                }
            }
            MessagePart::ToolCall {
                tool_call_id,
                tool_name,
                args,
                ..
            } => {
                let call = match self.calls.iter().position(|c| &c.id == tool_call_id) {
                    Some(i) => &mut self.calls[i],
                    None => {
                        self.calls.push(CallState {
                            id: tool_call_id.clone(),
                            name: tool_name.clone(),
                            args: String::new(),
                            complete: false,
                        });
                        let last = self.calls.len() - 1;
                        &mut self.calls[last]
                    }
                };
                if call.name.is_empty() {
                    call.name.clone_from(tool_name);
                }
                if let Some(delta) = &live.args_delta {
                    call.args.push_str(delta);
                } else if !args.is_empty() {
                    call.args.clone_from(args);
                    call.complete = true;
                }
            }
            MessagePart::ToolResult { tool_call_id, .. } => {
                self.results.insert(tool_call_id.clone(), live.part.clone());
            }
            MessagePart::Source { .. } => {}
        }
    }

    /// Whether nothing was produced.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
            && self.reasoning.is_empty()
            && self.signature.is_none()
            && self.calls.is_empty()
    }

    /// The assistant message's content: reasoning (when it has text or a signature), text,
    /// then the tool calls (arguments that are not a JSON object become `{}`).
    pub fn assistant_content(&self, now: DateTime<Utc>) -> Vec<MessagePart> {
        let mut content = Vec::new();
        if !self.reasoning.is_empty() || self.signature.is_some() {
            content.push(MessagePart::Reasoning {
                text: self.reasoning.clone(),
                created_at: self.reasoning_started,
                completed_at: self.reasoning_done.or(Some(now)),
                provider_metadata: self
                    .signature
                    .as_ref()
                    .map(|s| serde_json::json!({ "signature": s })),
            });
        }
        if !self.text.is_empty() {
            content.push(MessagePart::text(self.text.clone()));
        }
        for call in &self.calls {
            let args = if serde_json::from_str::<Value>(&call.args).is_ok_and(|v| v.is_object()) {
                call.args.clone()
            } else {
                "{}".to_owned()
            };
            content.push(tool_call(&call.id, &call.name, args));
        }
        content
    }

    /// Whether every tool call's arguments arrived complete.
    pub fn calls_complete(&self) -> bool {
        self.calls.iter().all(|c| c.complete)
    }

    /// The suffix an interrupted step commits (spec/recovery.md §6 step 5): the partial assistant
    /// message, then one tool message answering every call — `committed` are the calls of the
    /// last committed assistant message still unanswered — with the buffered result or the
    /// interruption error.
    pub fn interrupted_suffix(
        &self,
        committed: &[PendingCall],
        now: DateTime<Utc>,
    ) -> Vec<NewMessage> {
        let mut suffix = Vec::new();
        let content = self.assistant_content(now);
        if !content.is_empty() {
            suffix.push(NewMessage::assistant(content));
        }
        let calls = committed
            .iter()
            .map(|c| (c.id.clone(), c.name.clone()))
            .chain(self.calls.iter().map(|c| (c.id.clone(), c.name.clone())));
        let mut seen = HashSet::new();
        let results: Vec<MessagePart> = calls
            .filter(|(id, _)| seen.insert(id.clone()))
            .map(|(id, name)| {
                self.results
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| MessagePart::error_result(&id, &name, INTERRUPTED_RESULT))
            })
            .collect();
        if !results.is_empty() {
            suffix.push(NewMessage::tool(results));
        }
        suffix
    }
}

fn tool_call(id: &str, name: &str, args: String) -> MessagePart {
    MessagePart::ToolCall {
        tool_call_id: id.to_owned(),
        tool_name: name.to_owned(),
        args,
        provider_executed: false,
        provider_metadata: None,
    }
}

/// Each result's byte budget when `results` results share a step (spec/engine.md §19 item 3):
/// 25 % of the context window at 4 bytes per token, shared equally, at least 8 KiB each.
pub fn result_budget(context_limit: i64, results: usize) -> usize {
    let total = usize::try_from(context_limit.max(0)).unwrap_or(usize::MAX);
    (total / results.max(1)).max(MIN_RESULT_BYTES)
}

/// The stored tool-result part of a tool's result, capped at `budget` bytes. A JSON result is
/// stored as JSON; a text error, or a result that had to be cut, as a JSON string.
pub fn result_part(
    call: &PendingCall,
    result: &chattool::ToolResult,
    budget: usize,
) -> MessagePart {
    let (content, cut) = truncate(&result.content, budget);
    let value = if result.is_error || cut {
        Value::String(content)
    } else {
        serde_json::from_str(&content).unwrap_or(Value::String(content))
    };
    MessagePart::ToolResult {
        tool_call_id: call.id.clone(),
        tool_name: call.name.clone(),
        result: value,
        is_error: result.is_error,
        provider_executed: false,
    }
}

/// Cuts `text` to at most `budget` bytes (on a character boundary), ending with the marker.
pub fn truncate(text: &str, budget: usize) -> (String, bool) {
    if text.len() <= budget {
        return (text.to_owned(), false);
    }
    let mut end = budget.saturating_sub(TRUNCATED_MARKER.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (format!("{}{TRUNCATED_MARKER}", &text[..end]), true)
}

/// History rows for the engine's unit tests.
#[cfg(test)]
pub(crate) mod test_rows {
    use super::*;

    /// A committed row seen by everyone.
    pub(crate) fn row(id: i64, role: Role, content: Vec<MessagePart>) -> Message {
        Message {
            id,
            chat_id: uuid::Uuid::nil(),
            role,
            content,
            visibility: Visibility::Both,
            created_by: None,
            model_config_id: None,
            created_at: Utc::now(),
            compressed: false,
            deleted: false,
            revision: id,
            queued_message_id: None,
            usage: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use chatmodel::FinishReason;

    use super::*;

    /// A reply with reasoning, text and one tool call.
    fn sample_stream() -> Vec<StreamPart> {
        vec![
            StreamPart::ReasoningDelta("think".into()),
            StreamPart::ReasoningSignature("sig".into()),
            StreamPart::TextDelta("Hel".into()),
            StreamPart::TextDelta("lo".into()),
            StreamPart::ToolCallStart {
                id: "c1".into(),
                name: "execute".into(),
            },
            StreamPart::ToolCallArgsDelta {
                id: "c1".into(),
                delta: "{\"command\":".into(),
            },
            StreamPart::ToolCallEnd {
                id: "c1".into(),
                name: "execute".into(),
                args: "{\"command\":\"ls\"}".into(),
            },
            StreamPart::Finish(FinishReason::ToolCalls),
        ]
    }

    #[test]
    fn buffered_parts_give_back_what_was_streamed() {
        let now = Utc::now();
        let mut acc = Accumulator::default();
        let stream = sample_stream();
        let lives: Vec<LivePart> = stream
            .iter()
            .filter_map(|p| acc.on_stream(p, now))
            .collect();
        let buffered: Vec<BufferedPart> = lives.iter().cloned().map(BufferedPart::from).collect();
        assert!(matches!(buffered[0], BufferedPart::Reasoning(..)));
        assert!(
            matches!(buffered[1], BufferedPart::Other(_)),
            "metadata is kept whole"
        );
        assert!(matches!(buffered[2], BufferedPart::Text(_)));
        assert!(
            matches!(buffered[5], BufferedPart::Other(_)),
            "argument deltas are kept whole"
        );
        let back: Vec<LivePart> = buffered.iter().map(BufferedPart::to_live).collect();
        assert_eq!(back, lives);
        assert!(std::mem::size_of::<BufferedPart>() <= 32);
        let text = BufferedPart::Text("hello".into());
        let exact = serde_json::to_vec(&text.to_live().part).unwrap().len();
        assert!(text.json_len() >= exact, "{} < {exact}", text.json_len());
    }

    use super::test_rows::row;

    fn call(id: &str, name: &str) -> MessagePart {
        tool_call(id, name, "{}".into())
    }

    fn result(id: &str) -> MessagePart {
        MessagePart::error_result(id, "x", "done")
    }

    fn user(id: i64) -> Message {
        row(id, Role::User, vec![MessagePart::text("hi")])
    }

    #[test]
    fn a_new_user_message_asks_the_model() {
        assert_eq!(
            decide(&[user(1)], &Situation::new(HashSet::new(), 1200)),
            Action::Generate
        );
    }

    #[test]
    fn unanswered_local_calls_run_first_then_dynamic_ones_wait_for_the_client() {
        let dynamic: HashSet<String> = ["ask_user".to_owned()].into();
        let history = vec![
            user(1),
            row(
                2,
                Role::Assistant,
                vec![call("a", "execute"), call("b", "ask_user")],
            ),
        ];
        let Action::ExecuteTools(calls) = decide(&history, &Situation::new(dynamic.clone(), 1200))
        else {
            panic!("expected tools");
        };
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].id, "a");
        let mut answered = history.clone();
        answered.push(row(3, Role::Tool, vec![result("a")]));
        assert_eq!(
            decide(&answered, &Situation::new(dynamic.clone(), 1200)),
            Action::EnterRequiresAction
        );
    }

    #[test]
    fn an_answer_without_calls_finishes_and_answered_calls_ask_again() {
        let done = vec![
            user(1),
            row(2, Role::Assistant, vec![MessagePart::text("ok")]),
        ];
        assert_eq!(
            decide(&done, &Situation::new(HashSet::new(), 1200)),
            Action::FinishTurn
        );
        let answered = vec![
            user(1),
            row(2, Role::Assistant, vec![call("a", "execute")]),
            row(3, Role::Tool, vec![result("a")]),
        ];
        assert_eq!(
            decide(&answered, &Situation::new(HashSet::new(), 1200)),
            Action::Generate
        );
        assert_eq!(
            decide(&answered, &Situation::new(HashSet::new(), 1)),
            Action::FinishTurn
        );
    }

    /// A compaction as the engine commits it: the model-only boundary, then the visible call and
    /// result.
    fn compaction(first_id: i64, source: CompactionSource) -> Vec<Message> {
        let mut boundary = row(first_id, Role::User, vec![MessagePart::text("summary")]);
        boundary.compressed = true;
        boundary.visibility = Visibility::Model;
        let mut call = row(
            first_id + 1,
            Role::Assistant,
            vec![self::call("s", SUMMARIZED_TOOL)],
        );
        call.visibility = Visibility::User;
        let mut result = row(
            first_id + 2,
            Role::Tool,
            vec![MessagePart::ToolResult {
                tool_call_id: "s".into(),
                tool_name: SUMMARIZED_TOOL.into(),
                result: serde_json::json!({"source": source.as_str()}),
                is_error: false,
                provider_executed: false,
            }],
        );
        result.visibility = Visibility::User;
        vec![boundary, call, result]
    }

    fn with_usage(mut m: Message, input_tokens: i64) -> Message {
        m.usage = Some(chatstore::types::MessageUsage {
            input_tokens,
            ..Default::default()
        });
        m
    }

    #[test]
    fn compaction_is_manual_when_asked_automatic_over_the_threshold_and_fails_after_itself() {
        let answered = vec![
            user(1),
            with_usage(row(2, Role::Assistant, vec![call("a", "execute")]), 900),
            row(3, Role::Tool, vec![result("a")]),
        ];
        let mut situation = Situation::new(HashSet::new(), 1200);
        situation.compact_at = compaction_limit(1000, 80);
        assert_eq!(situation.compact_at, Some(800));
        assert_eq!(
            decide(&answered, &situation),
            Action::Compact(CompactionSource::Automatic)
        );
        situation.compact_at = compaction_limit(1000, 100);
        assert_eq!(decide(&answered, &situation), Action::Generate);
        assert_eq!(compaction_limit(1000, 0), None);

        // Asked for, with something to compact; not with nothing.
        situation.compaction_requested = true;
        let done = vec![
            user(1),
            row(2, Role::Assistant, vec![MessagePart::text("ok")]),
        ];
        assert_eq!(
            decide(&done, &situation),
            Action::Compact(CompactionSource::Manual)
        );
        assert_eq!(decide(&[user(1)], &situation), Action::Generate);
        situation.compaction_requested = false;

        // After an automatic compaction the model goes on from the summary; after a manual
        // one the turn is over.
        let mut automatic = answered.clone();
        automatic.extend(compaction(4, CompactionSource::Automatic));
        situation.compact_at = Some(800);
        assert_eq!(decide(&automatic, &situation), Action::Generate);
        assert_eq!(
            last_compaction(&automatic),
            Some(CompactionSource::Automatic)
        );
        let mut manual = done.clone();
        manual.extend(compaction(3, CompactionSource::Manual));
        assert_eq!(decide(&manual, &situation), Action::FinishTurn);
        assert!(!has_compactable(&manual), "only the summary is left");

        // Still over the threshold right after a compaction: the turn fails.
        let mut still = automatic.clone();
        still[3].usage = Some(chatstore::types::MessageUsage {
            input_tokens: 900,
            ..Default::default()
        });
        assert_eq!(decide(&still, &situation), Action::FailCompaction);
    }

    #[test]
    fn deleted_and_ui_only_rows_are_not_in_the_prompt() {
        let mut deleted = row(2, Role::Assistant, vec![MessagePart::text("old")]);
        deleted.deleted = true;
        let mut ui = row(3, Role::Assistant, vec![MessagePart::text("ui")]);
        ui.visibility = Visibility::User;
        let history = vec![user(1), deleted, ui];
        assert_eq!(prompt_rows(&history).len(), 1);
        assert_eq!(
            decide(&history, &Situation::new(HashSet::new(), 1200)),
            Action::Generate
        );
    }

    #[test]
    fn error_results_replay_as_their_text_and_json_results_verbatim() {
        let history = vec![
            user(1),
            row(2, Role::Assistant, vec![call("a", "x"), call("b", "y")]),
            row(
                3,
                Role::Tool,
                vec![
                    result("a"),
                    MessagePart::ToolResult {
                        tool_call_id: "b".into(),
                        tool_name: "y".into(),
                        result: serde_json::json!({"ok": true}),
                        is_error: false,
                        provider_executed: false,
                    },
                ],
            ),
        ];
        let (_, messages) = prompt(&prompt_rows(&history));
        let ModelMessage::ToolResults { results } = &messages[2] else {
            panic!("expected results");
        };
        assert_eq!(results[0].content, "done");
        assert!(results[0].is_error);
        assert_eq!(results[1].content, r#"{"ok":true}"#);
    }

    #[test]
    fn streamed_parts_accumulate_into_one_assistant_message() {
        let mut acc = Accumulator::default();
        let now = Utc::now();
        for part in sample_stream() {
            acc.on_stream(&part, now);
        }
        let content = acc.assistant_content(now);
        assert_eq!(content.len(), 3);
        assert!(
            matches!(&content[0], MessagePart::Reasoning { text, provider_metadata: Some(_), .. } if text == "think")
        );
        assert_eq!(content[1], MessagePart::text("Hello"));
        assert!(
            matches!(&content[2], MessagePart::ToolCall { args, .. } if args == "{\"command\":\"ls\"}")
        );
        assert!(acc.calls_complete());
    }

    #[test]
    fn an_interrupted_step_keeps_partial_output_and_answers_every_call() {
        let mut acc = Accumulator::default();
        let now = Utc::now();
        acc.on_stream(&StreamPart::TextDelta("partial".into()), now);
        acc.on_stream(
            &StreamPart::ToolCallStart {
                id: "c2".into(),
                name: "execute".into(),
            },
            now,
        );
        acc.on_stream(
            &StreamPart::ToolCallArgsDelta {
                id: "c2".into(),
                delta: "{\"comm".into(),
            },
            now,
        );
        let committed = vec![PendingCall {
            id: "c1".into(),
            name: "read_file".into(),
            args: "{}".into(),
            message_id: 2,
        }];
        let suffix = acc.interrupted_suffix(&committed, now);
        assert_eq!(suffix.len(), 2);
        assert_eq!(suffix[0].role, Role::Assistant);
        // Arguments that are not a JSON object yet are stored as `{}`.
        assert!(
            matches!(&suffix[0].content[1], MessagePart::ToolCall { args, .. } if args == "{}")
        );
        assert_eq!(suffix[1].content.len(), 2);
        for part in &suffix[1].content {
            assert!(
                matches!(part, MessagePart::ToolResult { result, is_error: true, .. }
                if result == INTERRUPTED_RESULT)
            );
        }
    }

    #[test]
    fn results_are_capped_on_a_character_boundary() {
        assert_eq!(result_budget(200_000, 4), 50_000);
        assert_eq!(result_budget(1000, 4), MIN_RESULT_BYTES);
        let (cut, was_cut) = truncate(&"é".repeat(100), 41);
        assert!(was_cut);
        assert!(cut.ends_with(TRUNCATED_MARKER));
        assert!(cut.len() <= 41);
        let call = PendingCall {
            id: "c".into(),
            name: "execute".into(),
            args: "{}".into(),
            message_id: 2,
        };
        let json = chattool::ToolResult {
            content: format!("{{\"output\":\"{}\"}}", "x".repeat(20_000)),
            is_error: false,
        };
        let MessagePart::ToolResult { result, .. } = result_part(&call, &json, MIN_RESULT_BYTES)
        else {
            panic!("expected a result");
        };
        assert!(result.as_str().unwrap().ends_with(TRUNCATED_MARKER));
    }
}
