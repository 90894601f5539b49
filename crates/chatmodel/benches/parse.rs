//! chatmodel benchmark: parse throughput of each provider's stream decoder on a long
//! recorded stream, and the latency a part adds from the socket to a `StreamPart` (the provider
//! emulator records when it wrote each frame; the client records when each part came out).
//!
//! Run with `cargo bench -p chatmodel`; it prints its figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark reports on stdout

use std::time::{Duration, Instant};

use chaterror::Provider;
use chatmodel::anthropic::AnthropicDecoder;
use chatmodel::client::{ModelClient, ProviderConfig, Timeouts, WireFormat};
use chatmodel::openai::OpenAiDecoder;
use chatmodel::{ModelMessage, ModelRequest, StreamPart};
use chattest::emulator::{Emulator, ScriptPart, Turn};
use futures_util::StreamExt as _;
use serde_json::json;

const EVENTS: usize = 200_000;

fn anthropic_events() -> Vec<(String, String)> {
    let mut events = vec![
        ("message_start".to_owned(), json!({"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":10,"output_tokens":1}}}).to_string()),
        ("content_block_start".to_owned(), json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}).to_string()),
    ];
    for i in 0..EVENTS {
        events.push((
            "content_block_delta".to_owned(),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":format!("token {i} ")}}).to_string(),
        ));
    }
    events.push((
        "content_block_stop".to_owned(),
        json!({"type":"content_block_stop","index":0}).to_string(),
    ));
    events.push(("message_delta".to_owned(), json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":EVENTS}}).to_string()));
    events.push((
        "message_stop".to_owned(),
        json!({"type":"message_stop"}).to_string(),
    ));
    events
}

fn openai_chunks() -> Vec<String> {
    let mut chunks = Vec::new();
    for i in 0..EVENTS {
        chunks.push(
            json!({"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":format!("token {i} ")},"finish_reason":null}]})
                .to_string(),
        );
    }
    chunks.push(
        json!({"id":"chatcmpl-1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})
            .to_string(),
    );
    chunks.push("[DONE]".to_owned());
    chunks
}

fn parse_throughput() {
    let events = anthropic_events();
    let started = Instant::now();
    let mut decoder = AnthropicDecoder::default();
    let mut parts = 0;
    for (event, data) in &events {
        parts += decoder.decode(event, data).unwrap().len();
    }
    let elapsed = started.elapsed();
    assert!(decoder.is_complete());
    println!(
        "anthropic decoder: {} events ({parts} parts) in {:.3} s = {:.0} events/s",
        events.len(),
        elapsed.as_secs_f64(),
        events.len() as f64 / elapsed.as_secs_f64()
    );

    let chunks = openai_chunks();
    let started = Instant::now();
    let mut decoder = OpenAiDecoder::new(Provider::OpenAi);
    let mut parts = 0;
    for chunk in &chunks {
        parts += decoder.decode(chunk).unwrap().len();
    }
    let elapsed = started.elapsed();
    assert!(decoder.is_complete());
    println!(
        "openai decoder: {} chunks ({parts} parts) in {:.3} s = {:.0} chunks/s",
        chunks.len(),
        elapsed.as_secs_f64(),
        chunks.len() as f64 / elapsed.as_secs_f64()
    );
}

async fn part_latency(format: WireFormat, first_delta_frame: usize) {
    const DELTAS: usize = 2_000;
    let mut turn = Turn::with(vec![ScriptPart::Text {
        text: "x".repeat(DELTAS),
        chunk: 1,
    }]);
    turn.pacing = Duration::from_micros(500);
    let emulator = Emulator::start(vec![turn]).await.unwrap();
    let base_url = match format {
        WireFormat::Anthropic => emulator.base_url(),
        _ => format!("{}/v1", emulator.base_url()),
    };
    let client = ModelClient::new(ProviderConfig {
        format,
        base_url,
        api_key: None,
        extra_headers: Vec::new(),
        timeouts: Timeouts::default(),
        http2_prior_knowledge: false,
    })
    .unwrap();
    let request = ModelRequest {
        model: "emulated".into(),
        messages: vec![ModelMessage::User { text: "go".into() }],
        ..ModelRequest::default()
    };
    let mut stream = client.stream(&request).await.unwrap();
    let mut received = Vec::with_capacity(DELTAS);
    while let Some(part) = stream.next().await {
        if let StreamPart::TextDelta(_) = part.unwrap() {
            received.push(Instant::now());
        }
    }
    let sent = emulator.frame_times();
    let mut latencies: Vec<Duration> = received
        .iter()
        .enumerate()
        .map(|(i, at)| at.saturating_duration_since(sent[first_delta_frame + i]))
        .collect();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{format:?}: socket-to-part latency over {} parts: p50 {:?} p99 {:?} max {:?}",
        latencies.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}

fn main() {
    parse_throughput();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Anthropic: message_start, content_block_start, then the deltas.
        part_latency(WireFormat::Anthropic, 2).await;
        // OpenAI: the role chunk, then the deltas.
        part_latency(WireFormat::OpenAi, 1).await;
    });
}
