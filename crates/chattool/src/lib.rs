//! The model-facing workspace tools (spec/chattool.md, spec/recovery.md) — in progress
//! (issue 7).
//!
//! Landed so far:
//! - [`ToolResult`]: the two failure shapes of §2.1 (text error, or JSON with an `error` key);
//! - [`args`]: argument schemas generated from the Rust argument types and checked to suit both
//!   providers' tool formats, and argument parsing whose failures are text errors that say what
//!   was wrong;
//! - [`duration`]: Go's duration grammar and formatting, which the model reads and writes;
//! - [`Tool`], [`ToolContext`] (the chat, its [`context::WorkspaceResolver`], [`ToolSettings`]) and
//!   [`conn::WorkspaceConn`], implemented for the generated `wsagent.v1` client;
//! - the process tools ([`process`]: `execute`, `process_output`, `process_list`,
//!   `process_signal`) and the file tools ([`files`]: `read_file`, `write_file`, `edit_files`).
//!
//! - [`wait`]: event-driven build and readiness waits (notifications first, a slow safety poll,
//!   the spec's deadlines), shared by the workspace-lifecycle tools.
//!
//! The template and workspace-lifecycle tools and the idempotency ledger follow; see
//! ARCHITECTURE.md, "Where issue 7 stands".

pub mod args;
pub mod conn;
pub mod context;
pub mod duration;
pub mod files;
pub mod process;
mod result;
mod tool;
pub mod wait;

pub use context::{ToolContext, ToolSettings};
pub use result::ToolResult;
pub use tool::Tool;

/// The process and file tools, in the order they are offered to the model.
pub fn workspace_tools() -> Vec<Box<dyn Tool>> {
    vec![
        Box::new(process::Execute),
        Box::new(process::ProcessOutput),
        Box::new(process::ProcessList),
        Box::new(process::ProcessSignal),
        Box::new(files::ReadFile),
        Box::new(files::WriteFile),
        Box::new(files::EditFiles),
    ]
}
