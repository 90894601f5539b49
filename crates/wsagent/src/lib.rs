//! The workspace agent (issue 6, in progress): the process that runs inside a workspace and that
//! chatd dials to run commands and read, write and edit files for a chat's tools
//! (spec/chattool.md §1, §9, §10).
//!
//! - [`process::ProcessManager`]: shell commands in their own process group, output in a
//!   bounded head-and-tail buffer whose drops are reported, idempotency keys per chat, signals
//!   to the whole group, cancellation (SIGTERM, then SIGKILL after a grace period).
//! - [`files`]: line-numbered reads, atomic writes, all-or-nothing edit batches with
//!   whitespace-tolerant matching and unified diffs, every path confined to the workspace roots
//!   (symlinks resolved).
//! - [`server::AgentService`]: the `wsagent.v1.Agent` gRPC service over both, requiring the
//!   per-workspace secret as `authorization: Bearer <secret>`.
//!
//! It knows no database. Reporting to the control plane (heartbeats, lifecycle, startup logs)
//! and the startup script are the next steps.

pub mod files;
pub mod process;
pub mod server;
