//! chatmodel against the provider emulator (real HTTP and SSE on loopback), for both wire
//! formats: complete turns, and every fault classified end to end by chaterror.

use std::time::{Duration, SystemTime};

use chaterror::{
    Classification, ClassifyContext, ErrorKind, Provider, SubReason, TimeoutPhase, classify,
};
use chatmodel::client::{ModelClient, ProviderConfig, Timeouts, WireFormat};
use chatmodel::{FinishReason, ModelError, ModelMessage, ModelRequest, StreamPart, ToolDefinition};
use chattest::emulator::{Emulator, FaultKind, FaultPoint, ScriptPart, Turn};
use futures_util::StreamExt as _;

fn client(emulator: &Emulator, format: WireFormat, http2: bool, timeouts: Timeouts) -> ModelClient {
    let base_url = match format {
        WireFormat::Anthropic => emulator.base_url(),
        _ => format!("{}/v1", emulator.base_url()),
    };
    ModelClient::new(ProviderConfig {
        format,
        base_url,
        api_key: Some("sk-test-key".into()),
        extra_headers: vec![("x-team".into(), "chatd".into())],
        timeouts,
        http2_prior_knowledge: http2,
    })
    .unwrap()
}

fn request() -> ModelRequest {
    ModelRequest {
        model: "emulated".into(),
        system: "You are terse.".into(),
        messages: vec![ModelMessage::User { text: "hi".into() }],
        tools: vec![ToolDefinition {
            name: "read_file".into(),
            description: "Reads a file".into(),
            input_schema: serde_json::json!({"type": "object", "properties": {"path": {"type": "string"}}}),
        }],
        max_output_tokens: Some(256),
        temperature: None,
        provider_options: None,
        cache_prompt: false,
    }
}

/// Runs a call to completion: its parts, or the first error.
async fn run(client: &ModelClient) -> Result<Vec<StreamPart>, ModelError> {
    let mut stream = client.stream(&request()).await?;
    let mut parts = Vec::new();
    while let Some(part) = stream.next().await {
        parts.push(part?);
    }
    Ok(parts)
}

fn classified(err: &ModelError) -> Classification {
    classify(err, &ClassifyContext::new(SystemTime::now()))
}

fn tool_turn() -> Turn {
    Turn::with(vec![
        ScriptPart::Reasoning("Need two files.".into()),
        ScriptPart::Text {
            text: "Reading both files now.".into(),
            chunk: 5,
        },
        ScriptPart::ToolCall {
            id: "call_a".into(),
            name: "read_file".into(),
            args: r#"{"path":"a.txt"}"#.into(),
            chunk: 4,
        },
        ScriptPart::ToolCall {
            id: "call_b".into(),
            name: "read_file".into(),
            args: r#"{"path":"b.txt"}"#.into(),
            chunk: 3,
        },
    ])
}

/// A call's parts put back together: text, reasoning, completed tool calls, finish reason.
type Assembled = (
    String,
    String,
    Vec<(String, String, String)>,
    Option<FinishReason>,
);

fn assemble(parts: &[StreamPart]) -> Assembled {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    let mut finish = None;
    for part in parts {
        match part {
            StreamPart::TextDelta(t) => text.push_str(t),
            StreamPart::ReasoningDelta(t) => reasoning.push_str(t),
            StreamPart::ToolCallEnd { id, name, args } => {
                calls.push((id.clone(), name.clone(), args.clone()))
            }
            StreamPart::Finish(reason) => finish = Some(*reason),
            _ => {}
        }
    }
    (text, reasoning, calls, finish)
}

async fn full_turn(format: WireFormat, http2: bool) {
    let emulator = Emulator::start(vec![tool_turn()]).await.unwrap();
    let parts = run(&client(&emulator, format, http2, Timeouts::default()))
        .await
        .unwrap();
    let (text, reasoning, calls, finish) = assemble(&parts);
    assert_eq!(text, "Reading both files now.");
    assert_eq!(reasoning, "Need two files.");
    assert_eq!(
        calls,
        vec![
            (
                "call_a".into(),
                "read_file".into(),
                r#"{"path":"a.txt"}"#.into()
            ),
            (
                "call_b".into(),
                "read_file".into(),
                r#"{"path":"b.txt"}"#.into()
            ),
        ]
    );
    assert_eq!(finish, Some(FinishReason::ToolCalls));
    assert!(
        parts
            .iter()
            .any(|p| matches!(p, StreamPart::Usage(u) if u.output_tokens == 5))
    );

    let requests = emulator.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.version, if http2 { "HTTP/2" } else { "HTTP/1.1" });
    assert_eq!(sent.header("x-team"), Some("chatd"));
    assert_eq!(sent.body["stream"], true);
    match format {
        WireFormat::Anthropic => {
            assert_eq!(sent.header("x-api-key"), Some("sk-test-key"));
            assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
            assert_eq!(sent.body["tools"][0]["name"], "read_file");
        }
        _ => {
            assert_eq!(sent.header("authorization"), Some("Bearer sk-test-key"));
            assert_eq!(sent.body["stream_options"]["include_usage"], true);
            assert_eq!(sent.body["tools"][0]["function"]["name"], "read_file");
        }
    }
}

#[tokio::test]
async fn anthropic_full_turn_over_http1() {
    full_turn(WireFormat::Anthropic, false).await;
}

#[tokio::test]
async fn anthropic_full_turn_over_http2() {
    full_turn(WireFormat::Anthropic, true).await;
}

#[tokio::test]
async fn openai_full_turn_over_http1() {
    full_turn(WireFormat::OpenAi, false).await;
}

#[tokio::test]
async fn openai_compatible_full_turn_over_http2() {
    full_turn(WireFormat::OpenAiCompatible, true).await;
}

#[tokio::test]
async fn finish_reasons_come_through() {
    for (format, wire_reason, expected) in [
        (WireFormat::Anthropic, "max_tokens", FinishReason::Length),
        (
            WireFormat::Anthropic,
            "refusal",
            FinishReason::ContentFilter,
        ),
        (WireFormat::OpenAi, "length", FinishReason::Length),
        (
            WireFormat::OpenAi,
            "content_filter",
            FinishReason::ContentFilter,
        ),
        (WireFormat::OpenAi, "stop", FinishReason::Stop),
    ] {
        let mut turn = Turn::with(vec![ScriptPart::text("partial")]);
        turn.finish = Some(wire_reason.into());
        let emulator = Emulator::start(vec![turn]).await.unwrap();
        let parts = run(&client(&emulator, format, false, Timeouts::default()))
            .await
            .unwrap();
        assert_eq!(assemble(&parts).3, Some(expected), "{wire_reason}");
    }
}

fn status(status: u16, headers: &[(&str, &str)], body: &str) -> FaultKind {
    FaultKind::Status {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        body: body.to_owned(),
    }
}

async fn fail_with(
    format: WireFormat,
    http2: bool,
    timeouts: Timeouts,
    at: FaultPoint,
    kind: FaultKind,
) -> (ModelError, Classification) {
    let emulator = Emulator::start(vec![tool_turn().fault(at, kind)])
        .await
        .unwrap();
    let err = run(&client(&emulator, format, http2, timeouts))
        .await
        .unwrap_err();
    let c = classified(&err);
    // One retry owner: the client never calls twice.
    assert_eq!(
        emulator.requests().len(),
        1,
        "the client retried on its own"
    );
    (err, c)
}

#[tokio::test]
async fn status_529_is_overloaded() {
    let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let (_, c) = fail_with(
        WireFormat::Anthropic,
        false,
        Timeouts::default(),
        FaultPoint::BeforeHeaders,
        status(529, &[], body),
    )
    .await;
    assert_eq!(
        (c.kind, c.retryable, c.status_code),
        (Some(ErrorKind::Overloaded), true, 529)
    );
    assert_eq!(c.detail, "Overloaded");
}

#[tokio::test]
async fn status_429_with_retry_after_ms_is_a_rate_limit_with_a_hint() {
    let (_, c) = fail_with(
        WireFormat::OpenAi,
        false,
        Timeouts::default(),
        FaultPoint::BeforeHeaders,
        status(
            429,
            &[("retry-after-ms", "1500")],
            r#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#,
        ),
    )
    .await;
    assert_eq!(
        (c.kind, c.retryable, c.status_code),
        (Some(ErrorKind::RateLimit), true, 429)
    );
    assert_eq!(c.retry_after, Duration::from_millis(1500));
}

#[tokio::test]
async fn status_401_is_auth_and_final() {
    let (_, c) = fail_with(
        WireFormat::Anthropic,
        true,
        Timeouts::default(),
        FaultPoint::BeforeHeaders,
        status(401, &[], r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#),
    )
    .await;
    assert_eq!(
        (c.kind, c.retryable, c.status_code),
        (Some(ErrorKind::Auth), false, 401)
    );
}

#[tokio::test]
async fn status_400_context_length_is_config_with_the_sub_reason() {
    let (_, c) = fail_with(
        WireFormat::OpenAi,
        false,
        Timeouts::default(),
        FaultPoint::BeforeHeaders,
        status(400, &[], r#"{"error":{"message":"maximum context length is 8192 tokens","type":"invalid_request_error","code":"context_length_exceeded"}}"#),
    )
    .await;
    assert_eq!((c.kind, c.retryable), (Some(ErrorKind::Config), false));
    assert_eq!(c.sub_reason, Some(SubReason::ContextWindowExceeded));
}

#[tokio::test]
async fn x_should_retry_false_makes_a_503_final() {
    let (_, c) = fail_with(
        WireFormat::OpenAi,
        false,
        Timeouts::default(),
        FaultPoint::BeforeHeaders,
        status(503, &[("x-should-retry", "false")], "service unavailable"),
    )
    .await;
    assert_eq!(
        (c.kind, c.retryable, c.status_code),
        (Some(ErrorKind::Timeout), false, 503)
    );
}

#[tokio::test]
async fn in_stream_overloaded_error_after_200_is_overloaded_and_retryable() {
    let (err, c) = fail_with(
        WireFormat::Anthropic,
        false,
        Timeouts::default(),
        FaultPoint::AfterEvents(3),
        FaultKind::StreamError {
            code: "overloaded_error".into(),
            message: "Overloaded".into(),
        },
    )
    .await;
    assert!(matches!(err, ModelError::Stream(_)), "{err}");
    assert_eq!(
        (c.kind, c.retryable, c.status_code, c.provider),
        (
            Some(ErrorKind::Overloaded),
            true,
            0,
            Some(Provider::Anthropic)
        )
    );
}

#[tokio::test]
async fn openai_error_chunk_mid_stream_is_classified_by_code() {
    let (_, c) = fail_with(
        WireFormat::OpenAi,
        true,
        Timeouts::default(),
        FaultPoint::AfterEvents(2),
        FaultKind::StreamError {
            code: "server_error".into(),
            message: "The server had an error".into(),
        },
    )
    .await;
    assert_eq!((c.kind, c.retryable), (Some(ErrorKind::Generic), true));
}

#[tokio::test]
async fn a_peer_rst_stream_internal_error_mid_stream_is_a_retryable_timeout() {
    let (err, c) = fail_with(
        WireFormat::Anthropic,
        true,
        Timeouts::default(),
        FaultPoint::AfterEvents(4),
        FaultKind::RstStream(0x2),
    )
    .await;
    assert!(matches!(err, ModelError::Reset(_)), "{err:?}");
    assert_eq!((c.kind, c.retryable), (Some(ErrorKind::Timeout), true));
}

#[tokio::test]
async fn a_peer_rst_stream_protocol_error_is_not_retryable() {
    let (err, c) = fail_with(
        WireFormat::OpenAi,
        true,
        Timeouts::default(),
        FaultPoint::AfterEvents(2),
        FaultKind::RstStream(0x1),
    )
    .await;
    assert!(matches!(err, ModelError::Reset(_)), "{err:?}");
    assert_eq!((c.kind, c.retryable), (Some(ErrorKind::Generic), false));
}

#[tokio::test]
async fn a_rst_stream_before_headers_is_a_reset_too() {
    let (err, c) = fail_with(
        WireFormat::Anthropic,
        true,
        Timeouts::default(),
        FaultPoint::BeforeHeaders,
        FaultKind::RstStream(0x7),
    )
    .await;
    assert!(matches!(err, ModelError::Reset(_)), "{err:?}");
    assert_eq!((c.kind, c.retryable), (Some(ErrorKind::Timeout), true));
}

#[tokio::test]
async fn a_goaway_mid_stream_is_retryable() {
    let (_, c) = fail_with(
        WireFormat::Anthropic,
        true,
        Timeouts::default(),
        FaultPoint::AfterEvents(3),
        FaultKind::GoAway,
    )
    .await;
    assert_eq!(
        (c.kind, c.retryable),
        (Some(ErrorKind::Timeout), true),
        "{c:?}"
    );
}

#[tokio::test]
async fn a_tcp_reset_mid_stream_is_a_truncated_stream() {
    let (err, c) = fail_with(
        WireFormat::Anthropic,
        false,
        Timeouts::default(),
        FaultPoint::AfterEvents(3),
        FaultKind::TcpReset,
    )
    .await;
    assert!(matches!(err, ModelError::Truncated { .. }), "{err:?}");
    assert_eq!((c.kind, c.retryable), (Some(ErrorKind::Timeout), true));
}

#[tokio::test]
async fn a_stream_without_its_terminal_event_is_truncated() {
    let (err, c) = fail_with(
        WireFormat::Anthropic,
        false,
        Timeouts::default(),
        FaultPoint::AfterEvents(5),
        FaultKind::Truncate,
    )
    .await;
    assert_eq!(
        chaterror::full_text(&err),
        "anthropic stream closed before message_stop: unexpected EOF"
    );
    assert_eq!((c.kind, c.retryable), (Some(ErrorKind::Timeout), true));
    assert_eq!(
        c.message,
        "Anthropic stream closed unexpectedly before the response completed."
    );
}

#[tokio::test]
async fn a_malformed_frame_is_a_typed_error() {
    let (err, _) = fail_with(
        WireFormat::OpenAi,
        false,
        Timeouts::default(),
        FaultPoint::AfterEvents(2),
        FaultKind::MalformedFrame,
    )
    .await;
    assert!(matches!(err, ModelError::InvalidEvent { .. }), "{err:?}");
}

#[tokio::test]
async fn a_stall_between_events_trips_the_inter_event_timeout() {
    let timeouts = Timeouts {
        inter_event: Duration::from_millis(200),
        ..Timeouts::default()
    };
    let (err, c) = fail_with(
        WireFormat::OpenAi,
        false,
        timeouts,
        FaultPoint::AfterEvents(2),
        FaultKind::Stall(Duration::from_secs(5)),
    )
    .await;
    assert!(
        matches!(err, ModelError::Timeout(t) if t.phase == TimeoutPhase::InterEvent),
        "{err:?}"
    );
    assert_eq!((c.kind, c.retryable), (Some(ErrorKind::Timeout), true));
}

#[tokio::test]
async fn a_stall_before_the_first_event_trips_the_first_byte_timeout() {
    let timeouts = Timeouts {
        first_byte: Duration::from_millis(200),
        ..Timeouts::default()
    };
    let (err, _) = fail_with(
        WireFormat::Anthropic,
        false,
        timeouts,
        FaultPoint::AfterEvents(0),
        FaultKind::Stall(Duration::from_secs(5)),
    )
    .await;
    assert!(
        matches!(err, ModelError::Timeout(t) if t.phase == TimeoutPhase::FirstByte),
        "{err:?}"
    );
}

#[tokio::test]
async fn turns_can_be_scripted_by_what_the_client_sent() {
    use chatmodel::{AssistantPart, ToolResultBlock};
    use chattest::emulator::Match;
    // Listed out of order on purpose: the emulator picks the turn whose condition matches.
    let emulator = Emulator::start(vec![
        Turn::with(vec![ScriptPart::text("The file says 42.")])
            .when(Match::LastToolResultContains("answer-42".into())),
        Turn::with(vec![ScriptPart::tool_call(
            "call_1",
            "read_file",
            r#"{"path":"answer.txt"}"#,
        )]),
    ])
    .await
    .unwrap();
    let client = client(&emulator, WireFormat::Anthropic, false, Timeouts::default());
    let first = run(&client).await.unwrap();
    assert_eq!(assemble(&first).2.len(), 1);

    let mut follow_up = request();
    follow_up.messages.push(ModelMessage::Assistant {
        parts: vec![AssistantPart::ToolCall {
            id: "call_1".into(),
            name: "read_file".into(),
            args: "{}".into(),
        }],
    });
    follow_up.messages.push(ModelMessage::ToolResults {
        results: vec![ToolResultBlock {
            call_id: "call_1".into(),
            name: "read_file".into(),
            content: "answer-42".into(),
            is_error: false,
        }],
    });
    let mut stream = client.stream(&follow_up).await.unwrap();
    let mut parts = Vec::new();
    while let Some(part) = stream.next().await {
        parts.push(part.unwrap());
    }
    assert_eq!(assemble(&parts).0, "The file says 42.");

    // Nothing left matches: the emulator says so with a 500.
    let err = run(&client).await.unwrap_err();
    assert_eq!(classified(&err).status_code, 500);
    assert_eq!(emulator.requests().len(), 3);
}

#[tokio::test]
async fn with_chatretry_a_503_once_means_exactly_two_calls() {
    // spec/chatretry.md §11.6: the provider is called once by the first attempt and once by the
    // retry — never more, because chatmodel (and reqwest under it) never retries on its own.
    let emulator = Emulator::start(vec![
        tool_turn().fault(
            FaultPoint::BeforeHeaders,
            status(503, &[], "service unavailable"),
        ),
        tool_turn(),
    ])
    .await
    .unwrap();
    let client = client(&emulator, WireFormat::OpenAi, true, Timeouts::default());
    let policy = chatretry::RetryPolicy {
        initial_delay: Duration::from_millis(10),
        jitter: chatretry::Jitter::None,
        ..chatretry::RetryPolicy::default()
    };
    let mut retries = 0;
    let parts = chatretry::retry(
        &chatretry::CancelToken::new(),
        &policy,
        |_attempt| {
            let client = client.clone();
            async move {
                run(&client)
                    .await
                    .map_err(|e| Box::new(e) as chaterror::BoxError)
            }
        },
        |_event| retries += 1,
    )
    .await
    .unwrap();
    assert_eq!(assemble(&parts).2.len(), 2);
    assert_eq!(retries, 1);
    assert_eq!(emulator.requests().len(), 2);
}

/// A provider that redirects a model call elsewhere does not get its key carried there: the
/// client follows no redirect (the Anthropic key travels in `x-api-key`, which HTTP clients do
/// not strip on a redirect to another host).
#[tokio::test]
async fn a_redirect_is_not_followed_with_the_key() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere_addr = elsewhere.local_addr().unwrap();
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    tokio::spawn(async move {
        while elsewhere.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let provider = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let provider_addr = provider.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = provider.accept().await {
            let mut request = vec![0; 64 * 1024];
            let _ = socket.read(&mut request).await;
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{elsewhere_addr}/v1/messages\r\ncontent-length: 0\r\n\r\n"
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    let client = ModelClient::new(ProviderConfig {
        format: WireFormat::Anthropic,
        base_url: format!("http://{provider_addr}"),
        api_key: Some("sk-test-key".into()),
        extra_headers: Vec::new(),
        timeouts: Timeouts::default(),
        http2_prior_knowledge: false,
    })
    .unwrap();
    let err = run(&client).await.unwrap_err();
    assert_eq!(classified(&err).status_code, 307, "{err:?}");
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}
