//! Human output: chat listings, transcripts and the live view of `chat attach`.

use std::io::{self, Write};

use chatproto::chatd::v1 as pb;
use pb::chat_message_part::Part;

/// Longest tool argument or result summary shown on one line.
const SUMMARY_CHARS: usize = 100;

/// The lower-case wire name of an enum value: `CHAT_STATUS_WAITING` → `waiting`.
pub fn wire_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

/// A chat status as a word.
pub fn status(chat_status: i32) -> String {
    pb::ChatStatus::try_from(chat_status).map_or_else(
        |_| "unknown".to_owned(),
        |s| wire_name(s.as_str_name(), "CHAT_STATUS_"),
    )
}

/// One line of `chat ls`.
pub fn chat_line(chat: &pb::Chat) -> String {
    format!(
        "{}  {:<15}  {}",
        chat.id,
        status(chat.status),
        if chat.archived {
            format!("{} (archived)", chat.title)
        } else {
            chat.title.clone()
        }
    )
}

/// The text of a message's text parts.
pub fn text_of(parts: &[pb::ChatMessagePart]) -> String {
    parts
        .iter()
        .filter_map(|p| match &p.part {
            Some(Part::Text(t)) => Some(t.text.as_str()),
            _ => None,
        })
        .collect()
}

/// A one-line summary of a JSON argument or result: compacted and cut.
pub fn summary(raw: &str) -> String {
    let compact = serde_json::from_str::<serde_json::Value>(raw)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| raw.split_whitespace().collect::<Vec<_>>().join(" "));
    if compact.chars().count() <= SUMMARY_CHARS {
        return compact;
    }
    let cut: String = compact.chars().take(SUMMARY_CHARS).collect();
    format!("{cut}…")
}

/// Writes a committed message the way the transcript shows it.
pub fn message(out: &mut impl Write, m: &pb::ChatMessage) -> io::Result<()> {
    let role = pb::ChatMessageRole::try_from(m.role).unwrap_or(pb::ChatMessageRole::Unspecified);
    match role {
        pb::ChatMessageRole::User => {
            for line in text_of(&m.content).lines() {
                writeln!(out, "> {line}")?;
            }
        }
        pb::ChatMessageRole::Assistant | pb::ChatMessageRole::Tool => {
            let text = text_of(&m.content);
            if !text.is_empty() {
                writeln!(out, "{text}")?;
            }
            tool_parts(out, m)?;
        }
        pb::ChatMessageRole::System | pb::ChatMessageRole::Unspecified => {}
    }
    Ok(())
}

/// The tool calls and results of a message, one line each.
fn tool_parts(out: &mut impl Write, m: &pb::ChatMessage) -> io::Result<()> {
    for part in &m.content {
        match &part.part {
            Some(Part::ToolCall(call)) => {
                writeln!(out, "→ {}({})", call.tool_name, summary(&call.args))?;
            }
            Some(Part::ToolResult(result)) => {
                let outcome = if result.is_error { "error" } else { "ok" };
                writeln!(
                    out,
                    "← {}: {outcome}: {}",
                    result.tool_name,
                    summary(&result.result)
                )?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// "retrying in 3s (overloaded, attempt 3/25)".
pub fn retry(r: &pb::RetryEvent) -> String {
    let kind = pb::ErrorKind::try_from(r.kind).map_or_else(
        |_| "error".to_owned(),
        |k| wire_name(k.as_str_name(), "ERROR_KIND_"),
    );
    let seconds = r.delay_ms.div_ceil(1000);
    let attempts = if r.max_attempts > 0 {
        format!("attempt {}/{}", r.attempt, r.max_attempts)
    } else {
        format!("attempt {}", r.attempt)
    };
    format!("retrying in {seconds}s ({kind}, {attempts})")
}

/// The live view of a chat stream: streamed text as it arrives, committed messages that were
/// not streamed (history, tool results), tool calls and their results summarised, retries,
/// errors and pending client-side tool calls.
#[derive(Debug)]
pub struct Attach<W: Write> {
    out: W,
    /// Text of the current episode was written and its line is still open.
    line_open: bool,
    /// The current episode streamed text (so its committed message need not repeat it).
    streamed: bool,
    /// The chat's last status.
    pub status: Option<pb::ChatStatus>,
    /// The last error's message, when the chat stopped with one.
    pub error: Option<String>,
}

impl<W: Write> Attach<W> {
    /// A view writing to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            line_open: false,
            streamed: false,
            status: None,
            error: None,
        }
    }

    fn close_line(&mut self) -> io::Result<()> {
        if self.line_open {
            writeln!(self.out)?;
            self.line_open = false;
        }
        Ok(())
    }

    /// Shows one event.
    pub fn event(&mut self, e: &pb::ChatStreamEvent) -> io::Result<()> {
        use pb::ChatStreamEventType as T;
        match e.r#type() {
            T::MessagePart => {
                if let Some(Part::Text(t)) = e
                    .message_part
                    .as_ref()
                    .and_then(|p| p.part.as_ref())
                    .and_then(|p| p.part.as_ref())
                {
                    write!(self.out, "{}", t.text)?;
                    self.line_open = true;
                    self.streamed = true;
                }
            }
            T::Message => {
                if let Some(m) = &e.message {
                    self.close_line()?;
                    if m.role() == pb::ChatMessageRole::Assistant && self.streamed {
                        // Its text was streamed already; show only its tool calls.
                        tool_parts(&mut self.out, m)?;
                    } else {
                        message(&mut self.out, m)?;
                    }
                    self.streamed = false;
                }
            }
            T::Status => {
                let new = e.status();
                if self.status != Some(new) && new == pb::ChatStatus::Interrupting {
                    self.close_line()?;
                    writeln!(self.out, "· interrupting")?;
                }
                if new != pb::ChatStatus::Error {
                    self.error = None;
                }
                self.status = Some(new);
            }
            T::Error => {
                self.close_line()?;
                let message = e.error.as_ref().map_or_else(
                    || "unknown error".to_owned(),
                    |err| {
                        if err.detail.is_empty() {
                            err.message.clone()
                        } else {
                            format!("{} ({})", err.message, err.detail)
                        }
                    },
                );
                writeln!(self.out, "✗ {message}")?;
                self.error = Some(message);
            }
            T::Retry => {
                if let Some(r) = &e.retry {
                    self.close_line()?;
                    writeln!(self.out, "↻ {}", retry(r))?;
                }
            }
            T::ActionRequired => {
                self.close_line()?;
                writeln!(
                    self.out,
                    "? the chat waits for results of client-side tools:"
                )?;
                for call in e.action_required.iter().flat_map(|a| &a.tool_calls) {
                    writeln!(
                        self.out,
                        "  {} {}({})",
                        call.tool_call_id,
                        call.tool_name,
                        summary(&call.args)
                    )?;
                }
            }
            T::QueueUpdate => {
                if !e.queued_messages.is_empty() {
                    self.close_line()?;
                    writeln!(self.out, "· {} queued", e.queued_messages.len())?;
                }
            }
            T::PreviewReset => {
                if self.line_open {
                    // The streamed text was dropped (a failed or restarted attempt).
                    writeln!(self.out, " [discarded]")?;
                    self.line_open = false;
                }
                self.streamed = false;
            }
            T::HistoryReset => {
                self.close_line()?;
                writeln!(self.out, "· the history changed; here it is again")?;
            }
            T::Unspecified => {}
        }
        self.out.flush()
    }

    /// Whether the chat is idle: waiting, stopped with an error or waiting for the client.
    pub fn idle(&self) -> bool {
        matches!(
            self.status,
            Some(pb::ChatStatus::Waiting | pb::ChatStatus::Error | pb::ChatStatus::RequiresAction)
        )
    }

    /// Ends the output (an open line is closed).
    pub fn finish(&mut self) -> io::Result<()> {
        self.close_line()?;
        self.out.flush()
    }

    /// The written output (for tests).
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: pb::ChatStreamEventType) -> pb::ChatStreamEvent {
        pb::ChatStreamEvent {
            r#type: kind.into(),
            chat_id: "c".into(),
            ..Default::default()
        }
    }

    fn text_part(text: &str, seq: i64) -> pb::ChatStreamEvent {
        pb::ChatStreamEvent {
            message_part: Some(pb::ChatMessagePartEvent {
                role: pb::ChatMessageRole::Assistant.into(),
                part: Some(pb::ChatMessagePart {
                    part: Some(Part::Text(pb::TextPart { text: text.into() })),
                }),
                history_version: 1,
                generation_attempt: 1,
                seq,
            }),
            ..event(pb::ChatStreamEventType::MessagePart)
        }
    }

    fn committed(role: pb::ChatMessageRole, parts: Vec<Part>) -> pb::ChatStreamEvent {
        pb::ChatStreamEvent {
            message: Some(pb::ChatMessage {
                role: role.into(),
                content: parts
                    .into_iter()
                    .map(|p| pb::ChatMessagePart { part: Some(p) })
                    .collect(),
                ..Default::default()
            }),
            ..event(pb::ChatStreamEventType::Message)
        }
    }

    fn status(s: pb::ChatStatus) -> pb::ChatStreamEvent {
        pb::ChatStreamEvent {
            status: s.into(),
            ..event(pb::ChatStreamEventType::Status)
        }
    }

    #[test]
    fn a_turn_with_a_tool_call_reads_like_a_conversation() {
        let mut view = Attach::new(Vec::new());
        let events = [
            committed(
                pb::ChatMessageRole::User,
                vec![Part::Text(pb::TextPart {
                    text: "write hello".into(),
                })],
            ),
            status(pb::ChatStatus::Running),
            event(pb::ChatStreamEventType::PreviewReset),
            text_part("Sure, ", 1),
            text_part("writing.", 2),
            committed(
                pb::ChatMessageRole::Assistant,
                vec![
                    Part::Text(pb::TextPart {
                        text: "Sure, writing.".into(),
                    }),
                    Part::ToolCall(pb::ToolCallPart {
                        tool_call_id: "t1".into(),
                        tool_name: "write_file".into(),
                        args: r#"{ "path": "hello.txt" }"#.into(),
                        ..Default::default()
                    }),
                ],
            ),
            committed(
                pb::ChatMessageRole::Tool,
                vec![Part::ToolResult(pb::ToolResultPart {
                    tool_call_id: "t1".into(),
                    tool_name: "write_file".into(),
                    result: r#"{"ok":true}"#.into(),
                    ..Default::default()
                })],
            ),
            pb::ChatStreamEvent {
                retry: Some(pb::RetryEvent {
                    attempt: 3,
                    max_attempts: 25,
                    delay_ms: 2500,
                    kind: pb::ErrorKind::Overloaded.into(),
                    ..Default::default()
                }),
                ..event(pb::ChatStreamEventType::Retry)
            },
            event(pb::ChatStreamEventType::PreviewReset),
            text_part("Done", 1),
            event(pb::ChatStreamEventType::PreviewReset),
            text_part("Done.", 1),
            committed(
                pb::ChatMessageRole::Assistant,
                vec![Part::Text(pb::TextPart {
                    text: "Done.".into(),
                })],
            ),
            status(pb::ChatStatus::Waiting),
        ];
        for e in &events {
            view.event(e).unwrap();
        }
        assert!(view.idle());
        view.finish().unwrap();
        let out = String::from_utf8(view.into_inner()).unwrap();
        assert_eq!(
            out,
            "> write hello\n\
             Sure, writing.\n\
             → write_file({\"path\":\"hello.txt\"})\n\
             ← write_file: ok: {\"ok\":true}\n\
             ↻ retrying in 3s (overloaded, attempt 3/25)\n\
             Done [discarded]\n\
             Done.\n"
        );
    }

    #[test]
    fn an_error_is_shown_and_remembered() {
        let mut view = Attach::new(Vec::new());
        view.event(&status(pb::ChatStatus::Error)).unwrap();
        view.event(&pb::ChatStreamEvent {
            error: Some(pb::ChatError {
                message: "The model provider is overloaded.".into(),
                ..Default::default()
            }),
            ..event(pb::ChatStreamEventType::Error)
        })
        .unwrap();
        assert!(view.idle());
        assert_eq!(
            view.error.as_deref(),
            Some("The model provider is overloaded.")
        );
    }

    #[test]
    fn summaries_are_compact_and_cut() {
        assert_eq!(summary(r#"{ "a" : 1 }"#), r#"{"a":1}"#);
        assert_eq!(summary("not json\n at all"), "not json at all");
        let long = summary(&"x".repeat(500));
        assert_eq!(long.chars().count(), SUMMARY_CHARS + 1);
        assert!(long.ends_with('…'));
    }
}
