//! The workspace agent: the process that runs inside a workspace and that
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
//! - `runtime::run` (feature `server`, on by default): the agent process itself (the `wsagent`
//!   binary's `main`): standalone with a secret, or reporting to chatd's agent API with its
//!   token (manifest, heartbeats, the startup script's logs through `shellscript`, lifecycle
//!   `created → starting → ready | start_error | start_timeout`, and `shutting_down → off` on
//!   SIGTERM).
//! - [`client`]: dialing an agent (`http://…` or `unix:/path`) with the workspace secret, and
//!   the control plane with an agent token.
//!
//! It knows no database.

pub mod client;
pub mod files;
pub mod process;
#[cfg(feature = "server")]
pub mod runtime;
pub mod server;
