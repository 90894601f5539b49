//! The benchmarks' support module (`tests/benches/support`), tested here because bench
//! binaries run no tests.

use std::time::{Duration, Instant};

use chattest::emulator::ScriptPart;

#[path = "../benches/support/mod.rs"]
mod support;

use support::{Replies, cpu_seconds, markers, parse_token, status_kib};

#[test]
fn a_reply_names_every_delta_and_the_names_parse_back() {
    let replies = Replies {
        replies: 3,
        parts: 4,
        pacing: Duration::from_millis(10),
    };
    assert_eq!(Replies::from_env(&replies.to_env()), replies);
    let turn = replies.turn(2);
    let ScriptPart::Text { text, chunk } = &turn.parts[0] else {
        panic!("a text reply");
    };
    let found: Vec<_> = markers(text).map(parse_token).collect();
    assert_eq!(found, (0..4).map(|i| Some((2, i))).collect::<Vec<_>>());
    assert_eq!(text.chars().count(), chunk * 4);
}

#[test]
fn this_process_has_cpu_time_and_memory() {
    let pid = std::process::id();
    let spin = Instant::now();
    while spin.elapsed() < Duration::from_millis(50) {}
    assert!(cpu_seconds(pid) > 0.0);
    assert!(status_kib(pid, "VmHWM") >= status_kib(pid, "VmRSS").min(1));
}
