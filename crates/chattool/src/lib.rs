//! The model-facing workspace tools (spec/chattool.md, spec/recovery.md) — in progress
//! (issue 7).
//!
//! Landed so far:
//! - [`ToolResult`]: the two failure shapes of §2.1 (text error, or JSON with an `error` key);
//! - [`args`]: argument schemas generated from the Rust argument types and checked to suit both
//!   providers' tool formats, and argument parsing whose failures are text errors that say what
//!   was wrong;
//! - [`duration`]: Go's duration grammar and formatting, which the model reads and writes.
//!
//! The tools themselves, the `ToolContext`, event-driven waits and the idempotency ledger
//! follow; see ARCHITECTURE.md, "Where issue 7 stands".

pub mod args;
pub mod duration;
mod result;

pub use result::ToolResult;
