//! Test support for chatd (a dev-dependency only; DESIGN.md forbids depending on it otherwise).
//!
//! [`emulator::Emulator`] is a provider emulator: a real HTTP/1.1 and cleartext HTTP/2 server on
//! loopback that speaks the Anthropic Messages and OpenAI Chat Completions streaming formats,
//! plays scripted turns, injects faults (error statuses with headers, in-stream error events,
//! RST_STREAM with a chosen code, GOAWAY, TCP resets, stalls, truncated streams, malformed
//! frames) at a chosen point, and records every request.
//!
//! [`proxy::Proxy`] is a TCP proxy between a process and a real server that adds latency to the
//! server's replies, so a test can fix an ordering that is otherwise a race.
//!
//! [`certs::TestCerts`] makes a CA and a server certificate at test time, for TLS tests.

pub mod certs;
pub mod emulator;
pub mod proxy;

/// The Python interpreter of the tests that drive chatd from Python (the official provider SDKs,
/// a `grpcio` client): `CHATD_SDK_PYTHON` when set, else the venv `scripts/test` creates at
/// `target/sdk-venv` with `anthropic`, `openai`, `grpcio`, `grpcio-reflection` and `protobuf`.
///
/// # Panics
/// When neither exists, with a message that says how to get one: these tests are part of the
/// suite and must not pass by being skipped.
pub fn python() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("CHATD_SDK_PYTHON") {
        return path.into();
    }
    let venv =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/sdk-venv/bin/python");
    assert!(
        venv.exists(),
        "the Python test packages are not installed: run scripts/test (it creates \
         target/sdk-venv) or set CHATD_SDK_PYTHON to an interpreter that has anthropic, openai, \
         grpcio, grpcio-reflection and protobuf"
    );
    venv
}
