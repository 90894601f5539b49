//! Workspace builds: the provisioner takes provisioner jobs from the store and runs them on a
//! backend (spec/chattool.md: job statuses, lifecycle states, connection status).
//!
//! - [`worker::Provisioner`]: N workers taking jobs with `FOR UPDATE SKIP LOCKED`, woken by
//!   job notifications (a slow poll as the safety net), streaming build logs, completing or
//!   failing each job with an error text and code, honouring cancellation; at start,
//!   [`worker::Provisioner::recover`] fails the jobs a crash abandoned and reconciles agents.
//! - [`backend::Backend`]: start, stop, delete a workspace build; reconcile after a restart.
//! - [`local::LocalBackend`]: a workspace is a directory under the data dir, its agent a
//!   `wsagent` child process group reporting to chatd's agent API.
//! - [`isolation`]: what keeps a workspace from the daemon's secrets and from other workspaces
//!   (a cleared environment; a Unix user per workspace when the daemon is root).
//! - [`template`]: `template.toml` template directories, their validation and wire form, and
//!   parameter resolution.

pub mod backend;
pub mod isolation;
pub mod local;
pub mod template;
pub mod worker;

pub use backend::{Backend, BuildError, BuildLogs, BuildRequest, Reconciled};
pub use isolation::{Isolation, WorkspaceUsers};
pub use local::{LocalBackend, LocalConfig};
pub use worker::{Provisioner, ProvisionerConfig, ProvisionerError, Recovered};
