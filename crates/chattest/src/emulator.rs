//! A provider emulator: a real HTTP server on loopback that speaks the Anthropic Messages and
//! OpenAI Chat Completions streaming formats, plays scripted turns, injects faults at a chosen
//! point, and records every request it receives.
//!
//! It serves HTTP/1.1 and cleartext HTTP/2 (prior knowledge) on the same port: a connection that
//! opens with the HTTP/2 preface is served with the `h2` crate (so a fault can be a real
//! RST_STREAM with a chosen code, or a GOAWAY); anything else is read as HTTP/1.1 by a small
//! hand-written server (so a fault can be a TCP reset in the middle of a body).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A part of a scripted reply, rendered into the wire format the request's path asks for.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScriptPart {
    /// Text, sent in chunks of at most `chunk` characters.
    Text {
        /// The text.
        text: String,
        /// Characters per delta.
        #[serde(default = "whole")]
        chunk: usize,
    },
    /// Reasoning, sent as one delta (Anthropic also sends a signature).
    Reasoning(String),
    /// A tool call whose JSON arguments are streamed in chunks of `chunk` characters.
    ToolCall {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// Arguments (JSON text).
        args: String,
        /// Characters per arguments delta.
        #[serde(default = "whole")]
        chunk: usize,
    },
}

fn whole() -> usize {
    usize::MAX
}

/// Durations in scripts are milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl ScriptPart {
    /// Text in one delta.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text {
            text: text.into(),
            chunk: usize::MAX,
        }
    }

    /// A tool call with its arguments in one delta.
    pub fn tool_call(
        id: impl Into<String>,
        name: impl Into<String>,
        args: impl Into<String>,
    ) -> Self {
        Self::ToolCall {
            id: id.into(),
            name: name.into(),
            args: args.into(),
            chunk: usize::MAX,
        }
    }
}

/// Where a fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPoint {
    /// Before any response header.
    BeforeHeaders,
    /// After this many stream events were sent.
    AfterEvents(usize),
}

/// What goes wrong.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// An HTTP error response (only meaningful before headers).
    Status {
        /// Status code.
        status: u16,
        /// Extra headers (e.g. `retry-after`).
        headers: Vec<(String, String)>,
        /// Body.
        body: String,
    },
    /// A provider error event inside the 200 stream (Anthropic `error` event or an OpenAI error
    /// chunk), with this error type / code and message.
    StreamError {
        /// Error type (Anthropic) or code (OpenAI).
        code: String,
        /// Message.
        message: String,
    },
    /// An HTTP/2 RST_STREAM with this reason code (on HTTP/1.1: a TCP reset).
    RstStream(u32),
    /// An HTTP/2 GOAWAY (on HTTP/1.1: a TCP reset).
    GoAway,
    /// The TCP connection is reset (RST, not FIN).
    TcpReset,
    /// No bytes for this long (milliseconds in scripts), then the stream continues.
    Stall(#[serde(with = "millis")] Duration),
    /// The stream ends cleanly but without its terminal event.
    Truncate,
    /// A frame whose data is not JSON.
    MalformedFrame,
}

/// A fault at a point.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Fault {
    /// Where.
    pub at: FaultPoint,
    /// What.
    pub kind: FaultKind,
}

/// Which requests a turn answers, so multi-step agent turns can be scripted by what the
/// client sent (e.g. the result of the previous step's tool call).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    /// Any request (the next unconditioned turn).
    #[default]
    Any,
    /// The request's last tool result contains this text.
    LastToolResultContains(String),
    /// The request's last user message contains this text.
    LastUserTextContains(String),
}

impl Match {
    fn matches(&self, body: &Value) -> bool {
        match self {
            Self::Any => true,
            Self::LastToolResultContains(needle) => {
                last_tool_result(body).is_some_and(|t| t.contains(needle.as_str()))
            }
            Self::LastUserTextContains(needle) => {
                last_user_text(body).is_some_and(|t| t.contains(needle.as_str()))
            }
        }
    }
}

/// The content of the last tool result in a request of either wire format.
fn last_tool_result(body: &Value) -> Option<String> {
    let messages = body.get("messages")?.as_array()?;
    messages.iter().rev().find_map(|m| {
        if m.get("role")? == "tool" {
            return m.get("content").map(value_text);
        }
        m.get("content")?
            .as_array()?
            .iter()
            .rev()
            .find(|p| p.get("type").and_then(Value::as_str) == Some("tool_result"))
            .and_then(|p| p.get("content"))
            .map(value_text)
    })
}

/// The text of the last user message in a request of either wire format.
fn last_user_text(body: &Value) -> Option<String> {
    let messages = body.get("messages")?.as_array()?;
    let user = messages.iter().rev().find(|m| {
        m.get("role").and_then(Value::as_str) == Some("user")
            && !m
                .get("content")
                .and_then(Value::as_array)
                .is_some_and(|parts| {
                    parts
                        .iter()
                        .any(|p| p.get("type").and_then(Value::as_str) == Some("tool_result"))
                })
    })?;
    user.get("content").map(value_text)
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        other => other.to_string(),
    }
}

/// One scripted reply. In a JSON script (see `chattest-provider`) every field is optional and
/// `pacing` is in milliseconds.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct Turn {
    /// Which requests this turn answers.
    pub when: Match,
    /// The reply's parts.
    pub parts: Vec<ScriptPart>,
    /// Usage reported: (input, output) tokens.
    pub usage: (u64, u64),
    /// A finish reason to report instead of the natural one (`stop` / tool calls), in the
    /// wire's own vocabulary (e.g. `max_tokens`, `length`, `refusal`, `content_filter`).
    pub finish: Option<String>,
    /// Delay between events.
    #[serde(with = "millis")]
    pub pacing: Duration,
    /// A fault, if any.
    pub fault: Option<Fault>,
}

impl Turn {
    /// A turn with these parts.
    pub fn with(parts: Vec<ScriptPart>) -> Self {
        Self {
            parts,
            usage: (10, 5),
            ..Self::default()
        }
    }

    /// Answers only requests that match.
    pub fn when(mut self, when: Match) -> Self {
        self.when = when;
        self
    }

    /// Adds a fault.
    pub fn fault(mut self, at: FaultPoint, kind: FaultKind) -> Self {
        self.fault = Some(Fault { at, kind });
        self
    }
}

/// A request the emulator received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// Path.
    pub path: String,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` if it was not JSON).
    pub body: Value,
    /// `HTTP/1.1` or `HTTP/2`.
    pub version: &'static str,
    /// When its body had been read.
    pub received_at: std::time::Instant,
}

impl RecordedRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The text of the last user message (either wire format); `None` when there is none.
    pub fn last_user_text(&self) -> Option<String> {
        last_user_text(&self.body)
    }
}

/// Makes the reply to a request from its JSON body, for scripts too long to write out (see
/// [`Emulator::start_with_responder`]).
pub type Responder = Arc<dyn Fn(&Value) -> Turn + Send + Sync>;

#[derive(Default)]
struct Shared {
    turns: Mutex<VecDeque<Turn>>,
    /// When set, answers every request instead of the script.
    responder: Option<Responder>,
    requests: Mutex<Vec<RecordedRequest>>,
    /// When each stream frame was handed to the socket, for latency measurements.
    frame_times: Mutex<Vec<std::time::Instant>>,
    /// Marked frames: when each frame holding a `⟦token⟧` marker was written, and the token.
    marks: Mutex<Vec<(std::time::Instant, String)>>,
    /// A rate-limit storm: until this instant, every request is answered 429 with this
    /// `retry-after` (whole seconds), and no turn is used.
    storm: Mutex<Option<(std::time::Instant, u64)>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("turns", &lock(&self.turns).len())
            .field("responder", &self.responder.is_some())
            .finish_non_exhaustive()
    }
}

/// Opens a marker in scripted text: a frame holding `⟦token⟧` is logged with its write time.
pub const MARK_OPEN: &str = "⟦";
/// Closes a marker.
pub const MARK_CLOSE: &str = "⟧";

fn record_mark(shared: &Shared, frame: &str) {
    let Some(start) = frame.find(MARK_OPEN) else {
        return;
    };
    let rest = &frame[start + MARK_OPEN.len()..];
    if let Some(end) = rest.find(MARK_CLOSE) {
        lock(&shared.marks).push((std::time::Instant::now(), rest[..end].to_owned()));
    }
}

/// A running emulator. Dropping it stops the server.
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Emulator {
    /// Starts an emulator on a free loopback port that answers requests with `turns`, in
    /// order (a request beyond the script gets a 500).
    pub async fn start(turns: Vec<Turn>) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), turns).await
    }

    /// Like [`start`](Self::start), on a chosen loopback address (anything else is refused:
    /// the emulator is for tests on this machine).
    pub async fn start_on(addr: SocketAddr, turns: Vec<Turn>) -> std::io::Result<Self> {
        Self::serve(
            addr,
            Shared {
                turns: Mutex::new(turns.into()),
                ..Shared::default()
            },
        )
        .await
    }

    /// Starts an emulator on a free loopback port that answers every request with the turn
    /// `responder` makes from the request's JSON body (its `when` is ignored; its fault
    /// applies), for long generated conversations: a soak's chats, each with its own steps and
    /// faults.
    pub async fn start_with_responder(responder: Responder) -> std::io::Result<Self> {
        Self::serve(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Shared {
                responder: Some(responder),
                ..Shared::default()
            },
        )
        .await
    }

    async fn serve(addr: SocketAddr, shared: Shared) -> std::io::Result<Self> {
        if !addr.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the emulator only listens on loopback addresses, not {addr}"),
            ));
        }
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(shared);
        let accept_shared = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                // Frames go out as written, as a provider's would: no Nagle delay on paced
                // deltas.
                let _ = socket.set_nodelay(true);
                tokio::spawn(serve_connection(socket, Arc::clone(&accept_shared)));
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Appends turns to the script.
    pub fn push(&self, turn: Turn) {
        lock(&self.shared.turns).push_back(turn);
    }

    /// Answers every request for the next `duration` with HTTP 429, a `retry-after` of
    /// `retry_after` (whole seconds, at least 1) and an Anthropic `rate_limit_error` body, as a
    /// provider does when a key's limit is hit; the script is left as it is. A `duration` of
    /// zero ends a storm.
    pub fn rate_limit_for(&self, duration: Duration, retry_after: Duration) {
        let until = std::time::Instant::now() + duration;
        *lock(&self.shared.storm) = Some((until, retry_after.as_secs().max(1)));
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The marked frames written so far (see [`MARK_OPEN`]): write time and token, for
    /// measuring the latency from the wire to a client's parts.
    pub fn marks(&self) -> Vec<(std::time::Instant, String)> {
        lock(&self.shared.marks).clone()
    }

    /// When each stream frame so far was written to its socket (in order).
    pub fn frame_times(&self) -> Vec<std::time::Instant> {
        lock(&self.shared.frame_times).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The wire format a path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Anthropic,
    OpenAi,
}

fn wire_for(path: &str) -> Option<Wire> {
    if path.ends_with("/v1/messages") {
        Some(Wire::Anthropic)
    } else if path.ends_with("/chat/completions") {
        Some(Wire::OpenAi)
    } else {
        None
    }
}

/// One SSE frame to send, or a fault to act on.
#[derive(Debug)]
enum Step {
    Frame(String),
    Fault(FaultKind),
}

/// Renders a turn as the stream's frames for `wire`, with the fault inserted at its point.
fn render(turn: &Turn, wire: Wire) -> Vec<Step> {
    let frames = match wire {
        Wire::Anthropic => anthropic_frames(turn),
        Wire::OpenAi => openai_frames(turn),
    };
    let mut steps: Vec<Step> = Vec::new();
    let fault_at = match &turn.fault {
        Some(Fault {
            at: FaultPoint::AfterEvents(n),
            kind,
        }) => Some((*n, kind.clone())),
        _ => None,
    };
    for (i, frame) in frames.into_iter().enumerate() {
        if let Some((n, kind)) = &fault_at
            && *n == i
        {
            steps.push(Step::Fault(kind.clone()));
        }
        steps.push(Step::Frame(frame));
    }
    if let Some((n, kind)) = fault_at
        && n >= steps.iter().filter(|s| matches!(s, Step::Frame(_))).count()
        && !steps.iter().any(|s| matches!(s, Step::Fault(_)))
    {
        steps.push(Step::Fault(kind));
    }
    steps
}

fn chunks(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars
        .chunks(size.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

fn sse(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

fn anthropic_frames(turn: &Turn) -> Vec<String> {
    let mut frames = vec![sse(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": "msg_emulated", "type": "message", "role": "assistant", "model": "emulated",
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": turn.usage.0, "output_tokens": 1}
        }}),
    )];
    let mut has_tools = false;
    for (index, part) in turn.parts.iter().enumerate() {
        let block = |content: Value| {
            sse(
                "content_block_start",
                &json!({"type": "content_block_start", "index": index, "content_block": content}),
            )
        };
        let delta = |d: Value| {
            sse(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": d}),
            )
        };
        match part {
            ScriptPart::Text { text, chunk } => {
                frames.push(block(json!({"type": "text", "text": ""})));
                for piece in chunks(text, *chunk) {
                    frames.push(delta(json!({"type": "text_delta", "text": piece})));
                }
            }
            ScriptPart::Reasoning(text) => {
                frames.push(block(
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                ));
                frames.push(delta(json!({"type": "thinking_delta", "thinking": text})));
                frames.push(delta(
                    json!({"type": "signature_delta", "signature": "c2lnbmF0dXJl"}),
                ));
            }
            ScriptPart::ToolCall {
                id,
                name,
                args,
                chunk,
            } => {
                has_tools = true;
                frames.push(block(
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                ));
                for piece in chunks(args, *chunk) {
                    frames.push(delta(
                        json!({"type": "input_json_delta", "partial_json": piece}),
                    ));
                }
            }
        }
        frames.push(sse(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
        if index == 0 {
            frames.push(sse("ping", &json!({"type": "ping"})));
        }
    }
    let reason = turn.finish.clone().unwrap_or_else(|| {
        if has_tools {
            "tool_use".into()
        } else {
            "end_turn".into()
        }
    });
    frames.push(sse(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null},
                "usage": {"output_tokens": turn.usage.1}}),
    ));
    frames.push(sse("message_stop", &json!({"type": "message_stop"})));
    frames
}

fn openai_frames(turn: &Turn) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-emulated", "object": "chat.completion.chunk", "created": 0, "model": "emulated",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let mut frames = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    let mut tool_index = 0;
    for part in &turn.parts {
        match part {
            ScriptPart::Text { text, chunk: size } => {
                for piece in chunks(text, *size) {
                    frames.push(chunk(json!({"content": piece}), Value::Null));
                }
            }
            ScriptPart::Reasoning(text) => {
                frames.push(chunk(json!({"reasoning_content": text}), Value::Null))
            }
            ScriptPart::ToolCall {
                id,
                name,
                args,
                chunk: size,
            } => {
                frames.push(chunk(
                    json!({"tool_calls": [{"index": tool_index, "id": id, "type": "function",
                                            "function": {"name": name, "arguments": ""}}]}),
                    Value::Null,
                ));
                for piece in chunks(args, *size) {
                    frames.push(chunk(
                        json!({"tool_calls": [{"index": tool_index, "function": {"arguments": piece}}]}),
                        Value::Null,
                    ));
                }
                tool_index += 1;
            }
        }
    }
    let reason = turn.finish.clone().unwrap_or_else(|| {
        if tool_index > 0 {
            "tool_calls".into()
        } else {
            "stop".into()
        }
    });
    frames.push(chunk(json!({}), json!(reason)));
    frames.push(format!(
        "data: {}\n\n",
        json!({"id": "chatcmpl-emulated", "object": "chat.completion.chunk", "choices": [],
               "usage": {"prompt_tokens": turn.usage.0, "completion_tokens": turn.usage.1,
                         "total_tokens": turn.usage.0 + turn.usage.1}})
    ));
    frames.push("data: [DONE]\n\n".to_owned());
    frames
}

fn stream_error_frame(wire: Wire, code: &str, message: &str) -> String {
    match wire {
        Wire::Anthropic => sse(
            "error",
            &json!({"type": "error", "error": {"type": code, "message": message}}),
        ),
        Wire::OpenAi => format!(
            "data: {}\n\n",
            json!({"error": {"message": message, "type": code, "code": code, "param": null}})
        ),
    }
}

fn malformed_frame(wire: Wire) -> String {
    match wire {
        Wire::Anthropic => {
            "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": \n\n"
                .to_owned()
        }
        Wire::OpenAi => "data: {\"choices\": [\n\n".to_owned(),
    }
}

/// An HTTP error response: status, extra headers, body.
type ErrorReply = (u16, Vec<(String, String)>, String);

/// What the server does for one request: the status fault, or the streamed steps.
fn plan_reply(shared: &Shared, path: &str, body: &Value) -> Result<(Wire, Turn), ErrorReply> {
    let Some(wire) = wire_for(path) else {
        return Err((
            404,
            Vec::new(),
            json!({"error": {"message": "unknown path"}}).to_string(),
        ));
    };
    if let Some((until, retry_after)) = *lock(&shared.storm)
        && std::time::Instant::now() < until
    {
        return Err((
            429,
            vec![("retry-after".to_owned(), retry_after.to_string())],
            json!({"type": "error", "error": {"type": "rate_limit_error",
                   "message": "This request would exceed the rate limit for your organization."}})
            .to_string(),
        ));
    }
    let turn = match &shared.responder {
        Some(respond) => Some(respond(body)),
        None => {
            let mut turns = lock(&shared.turns);
            turns
                .iter()
                .position(|t| t.when.matches(body))
                .and_then(|i| turns.remove(i))
        }
    };
    let Some(turn) = turn else {
        return Err((
            500,
            Vec::new(),
            json!({"error": {"message": "the emulator's script is exhausted"}}).to_string(),
        ));
    };
    if let Some(Fault {
        at: FaultPoint::BeforeHeaders,
        kind:
            FaultKind::Status {
                status,
                headers,
                body,
            },
    }) = &turn.fault
    {
        return Err((*status, headers.clone(), body.clone()));
    }
    Ok((wire, turn))
}

async fn serve_connection(mut socket: TcpStream, shared: Arc<Shared>) {
    let mut preface = [0u8; 24];
    let is_h2 = matches!(socket.peek(&mut preface).await, Ok(24) if &preface == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    if is_h2 {
        serve_h2(socket, shared).await;
    } else {
        let _ = serve_http1(&mut socket, &shared).await;
    }
}

async fn serve_http1(socket: &mut TcpStream, shared: &Shared) -> std::io::Result<()> {
    // Read the head.
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    lock(&shared.requests).push(RecordedRequest {
        path: path.clone(),
        headers,
        body: body.clone(),
        version: "HTTP/1.1",
        received_at: std::time::Instant::now(),
    });

    let (wire, turn) = match plan_reply(shared, &path, &body) {
        Ok(reply) => reply,
        Err((status, headers, body)) => {
            let mut response = format!(
                "HTTP/1.1 {status} Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                response.push_str(&format!("{name}: {value}\r\n"));
            }
            response.push_str("\r\n");
            response.push_str(&body);
            socket.write_all(response.as_bytes()).await?;
            return socket.shutdown().await;
        }
    };
    if matches!(
        &turn.fault,
        Some(Fault {
            at: FaultPoint::BeforeHeaders,
            kind: FaultKind::TcpReset | FaultKind::RstStream(_) | FaultKind::GoAway
        })
    ) {
        // SO_LINGER 0: closing sends RST instead of FIN.
        let _ = socket.set_zero_linger();
        return Ok(());
    }
    socket
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n")
        .await?;
    for step in render(&turn, wire) {
        if !turn.pacing.is_zero() {
            tokio::time::sleep(turn.pacing).await;
        }
        match step {
            Step::Frame(frame) => {
                socket.write_all(frame.as_bytes()).await?;
                socket.flush().await?;
                lock(&shared.frame_times).push(std::time::Instant::now());
                record_mark(shared, &frame);
            }
            Step::Fault(kind) => match kind {
                FaultKind::Stall(d) => tokio::time::sleep(d).await,
                FaultKind::StreamError { code, message } => {
                    socket
                        .write_all(stream_error_frame(wire, &code, &message).as_bytes())
                        .await?;
                    return socket.shutdown().await;
                }
                FaultKind::Truncate => return socket.shutdown().await,
                FaultKind::MalformedFrame => {
                    socket.write_all(malformed_frame(wire).as_bytes()).await?;
                    return socket.shutdown().await;
                }
                FaultKind::TcpReset
                | FaultKind::RstStream(_)
                | FaultKind::GoAway
                | FaultKind::Status { .. } => {
                    socket.flush().await?;
                    let _ = socket.set_zero_linger();
                    return Ok(());
                }
            },
        }
        socket.flush().await?;
    }
    socket.shutdown().await
}

async fn serve_h2(socket: TcpStream, shared: Arc<Shared>) {
    let Ok(mut connection) = h2::server::handshake(socket).await else {
        return;
    };
    let (goaway_tx, mut goaway_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    loop {
        tokio::select! {
            request = connection.accept() => {
                let Some(Ok((request, respond))) = request else { return };
                let shared = Arc::clone(&shared);
                let goaway = goaway_tx.clone();
                tokio::spawn(async move {
                    let _ = serve_h2_stream(request, respond, &shared, goaway).await;
                });
            }
            Some(()) = goaway_rx.recv() => {
                connection.abrupt_shutdown(h2::Reason::NO_ERROR);
                // Keep driving the connection so the GOAWAY is written.
                let _ = std::future::poll_fn(|cx| connection.poll_closed(cx)).await;
                return;
            }
        }
    }
}

async fn serve_h2_stream(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    shared: &Shared,
    goaway: tokio::sync::mpsc::UnboundedSender<()>,
) -> Result<(), h2::Error> {
    let path = request.uri().path().to_owned();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .filter_map(|(n, v)| {
            v.to_str()
                .ok()
                .map(|v| (n.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    let mut body = request.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    lock(&shared.requests).push(RecordedRequest {
        path: path.clone(),
        headers,
        body: body.clone(),
        version: "HTTP/2",
        received_at: std::time::Instant::now(),
    });

    let (wire, turn) = match plan_reply(shared, &path, &body) {
        Ok(reply) => reply,
        Err((status, headers, body)) => {
            let mut response = http::Response::builder()
                .status(status)
                .header("content-type", "application/json");
            for (name, value) in headers {
                response = response.header(name, value);
            }
            let response = response.body(()).unwrap_or_default();
            let mut stream = respond.send_response(response, false)?;
            stream.send_data(Bytes::from(body), true)?;
            return Ok(());
        }
    };
    match &turn.fault {
        Some(Fault {
            at: FaultPoint::BeforeHeaders,
            kind: FaultKind::RstStream(code),
        }) => {
            respond.send_reset(h2::Reason::from(*code));
            return Ok(());
        }
        Some(Fault {
            at: FaultPoint::BeforeHeaders,
            kind: FaultKind::GoAway | FaultKind::TcpReset,
        }) => {
            let _ = goaway.send(());
            return Ok(());
        }
        _ => {}
    }
    let response = http::Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(())
        .unwrap_or_default();
    let mut stream = respond.send_response(response, false)?;
    for step in render(&turn, wire) {
        if !turn.pacing.is_zero() {
            tokio::time::sleep(turn.pacing).await;
        }
        match step {
            Step::Frame(frame) => {
                record_mark(shared, &frame);
                stream.send_data(Bytes::from(frame), false)?;
            }
            Step::Fault(kind) => match kind {
                FaultKind::Stall(d) => tokio::time::sleep(d).await,
                FaultKind::StreamError { code, message } => {
                    stream
                        .send_data(Bytes::from(stream_error_frame(wire, &code, &message)), true)?;
                    return Ok(());
                }
                FaultKind::Truncate => {
                    stream.send_data(Bytes::new(), true)?;
                    return Ok(());
                }
                FaultKind::MalformedFrame => {
                    stream.send_data(Bytes::from(malformed_frame(wire)), true)?;
                    return Ok(());
                }
                FaultKind::RstStream(code) => {
                    stream.send_reset(h2::Reason::from(code));
                    return Ok(());
                }
                FaultKind::GoAway | FaultKind::TcpReset | FaultKind::Status { .. } => {
                    let _ = goaway.send(());
                    return Ok(());
                }
            },
        }
    }
    stream.send_data(Bytes::new(), true)?;
    Ok(())
}
