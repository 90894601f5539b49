//! Test support for chatd (a dev-dependency only; DESIGN.md forbids depending on it otherwise).
//!
//! [`emulator::Emulator`] is a provider emulator: a real HTTP/1.1 and cleartext HTTP/2 server on
//! loopback that speaks the Anthropic Messages and OpenAI Chat Completions streaming formats,
//! plays scripted turns, injects faults (error statuses with headers, in-stream error events,
//! RST_STREAM with a chosen code, GOAWAY, TCP resets, stalls, truncated streams, malformed
//! frames) at a chosen point, and records every request.

pub mod emulator;
