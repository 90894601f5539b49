//! Workspace agents: what they report (manifest, heartbeats, lifecycle, startup logs) and the
//! connection-status rule of spec/engine.md §8.6.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::StoreError;
use crate::names::stored_names;

/// An agent's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentLifecycle {
    /// Row created, agent not started.
    Created,
    /// Running its startup script.
    Starting,
    /// The startup script took too long.
    StartTimeout,
    /// The startup script failed.
    StartError,
    /// Ready for work.
    Ready,
    /// Shutting down.
    ShuttingDown,
    /// Shutdown took too long.
    ShutdownTimeout,
    /// Shutdown failed.
    ShutdownError,
    /// Off.
    Off,
}

stored_names!(AgentLifecycle {
    Created => "created",
    Starting => "starting",
    StartTimeout => "start_timeout",
    StartError => "start_error",
    Ready => "ready",
    ShuttingDown => "shutting_down",
    ShutdownTimeout => "shutdown_timeout",
    ShutdownError => "shutdown_error",
    Off => "off",
});

/// A workspace agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// Id.
    pub id: Uuid,
    /// The resource (of a build's job) it belongs to.
    pub resource_id: Uuid,
    /// Name.
    pub name: String,
    /// Parent agent (sub-agents).
    pub parent_id: Option<Uuid>,
    /// Display order.
    pub display_order: i32,
    /// Connection timestamps and timeout.
    pub times: AgentTimes,
    /// Lifecycle state.
    pub lifecycle: AgentLifecycle,
    /// Working directory, as the template configures it.
    pub directory: String,
    /// Working directory with variables expanded, as the agent reports it in its heartbeats;
    /// empty until it has.
    pub expanded_directory: String,
    /// Where the control plane dials it.
    pub address: String,
}

/// The connection facts of an agent row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentTimes {
    /// Row created.
    pub created_at: DateTime<Utc>,
    /// First connection.
    pub first_connected_at: Option<DateTime<Utc>>,
    /// Latest heartbeat.
    pub last_connected_at: Option<DateTime<Utc>>,
    /// Reported disconnect.
    pub disconnected_at: Option<DateTime<Utc>>,
    /// Never-connected timeout, seconds; 0 disables it.
    pub connection_timeout_seconds: i32,
}

/// An agent's connection status (computed, spec/engine.md §8.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// Never connected, still within its connection timeout.
    Connecting,
    /// Connected and recently heard from.
    Connected,
    /// Disconnected, since the given time.
    Disconnected {
        /// When.
        at: DateTime<Utc>,
    },
    /// Never connected within its connection timeout.
    Timeout,
}

/// The smallest inactive-disconnect timeout accepted.
pub const MIN_INACTIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Applies the agent connection-status rule (spec/engine.md §8.6, first match wins).
/// `inactive_timeout` is `workspace.agent_inactive_disconnect_timeout` (default 30 s; at least
/// 2 s).
///
/// ```
/// use chatstore::agents::{AgentTimes, ConnectionStatus, connection_status};
/// use chrono::{Duration, Utc};
///
/// let now = Utc::now();
/// let times = AgentTimes {
///     created_at: now - Duration::seconds(60),
///     first_connected_at: Some(now - Duration::seconds(50)),
///     last_connected_at: Some(now - Duration::seconds(5)),
///     disconnected_at: None,
///     connection_timeout_seconds: 0,
/// };
/// assert_eq!(connection_status(&times, now, std::time::Duration::from_secs(30)), ConnectionStatus::Connected);
/// ```
pub fn connection_status(
    times: &AgentTimes,
    now: DateTime<Utc>,
    inactive_timeout: Duration,
) -> ConnectionStatus {
    let inactive = chrono::Duration::from_std(inactive_timeout.max(MIN_INACTIVE_TIMEOUT))
        .unwrap_or(chrono::Duration::MAX);
    let Some(_first) = times.first_connected_at else {
        let timeout = chrono::Duration::seconds(i64::from(times.connection_timeout_seconds));
        if times.connection_timeout_seconds > 0 && now - times.created_at > timeout {
            return ConnectionStatus::Timeout;
        }
        return ConnectionStatus::Connecting;
    };
    let last = times.last_connected_at.unwrap_or(times.created_at);
    if let Some(disconnected) = times.disconnected_at
        && disconnected >= last
    {
        return ConnectionStatus::Disconnected { at: disconnected };
    }
    if now - last > inactive {
        return ConnectionStatus::Disconnected { at: last };
    }
    ConnectionStatus::Connected
}

/// What an agent learns about itself (chatd.v1.AgentApiService.GetManifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentManifest {
    /// The agent.
    pub agent_id: Uuid,
    /// Its name.
    pub agent_name: String,
    /// The workspace.
    pub workspace_id: Uuid,
    /// The workspace's name.
    pub workspace_name: String,
    /// The owner's username.
    pub owner_name: String,
    /// Working directory.
    pub directory: String,
    /// Startup script; empty = none.
    pub startup_script: String,
    /// Startup script timeout, seconds; 0 = none.
    pub startup_script_timeout_seconds: i32,
    /// Environment for every process.
    pub env: std::collections::BTreeMap<String, String>,
    /// The secret the control plane sends when it calls the agent.
    pub control_plane_secret: String,
}

/// What an agent reports with each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentReport {
    /// Where the control plane dials it (e.g. `http://127.0.0.1:4100`).
    pub address: String,
    /// Its working directory with variables expanded.
    pub expanded_directory: String,
    /// `linux`, `darwin`, ...
    pub operating_system: String,
}

/// The most startup-log bytes kept per agent.
pub const MAX_AGENT_LOG_BYTES: i64 = 1024 * 1024;

/// What of a batch of startup-log lines is kept under [`MAX_AGENT_LOG_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CappedLogs<'a> {
    /// The lines kept: those before the first that does not fit.
    pub(crate) kept: &'a [(String, String)],
    /// The agent's log bytes with them.
    pub(crate) used: i64,
    /// A line was dropped.
    pub(crate) overflowed: bool,
}

/// Caps `lines` `(level, output)` for an agent whose log holds `used` bytes: lines are kept in
/// order until one would pass the cap; it and the lines after it are dropped.
pub(crate) fn cap_agent_logs(used: i64, lines: &[(String, String)]) -> CappedLogs<'_> {
    let mut total = used;
    for (n, (_, output)) in lines.iter().enumerate() {
        let size = i64::try_from(output.len()).unwrap_or(i64::MAX);
        if total.saturating_add(size) > MAX_AGENT_LOG_BYTES {
            return CappedLogs {
                kept: &lines[..n],
                used: total,
                overflowed: true,
            };
        }
        total += size;
    }
    CappedLogs {
        kept: lines,
        used: total,
        overflowed: false,
    }
}

/// An agent's environment as stored (a JSON object).
pub(crate) fn env_json(
    env: &std::collections::BTreeMap<String, String>,
) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(env).map_err(|source| StoreError::Corrupt {
        what: "agent env",
        source,
    })
}

/// An agent that a call names does not exist.
pub(crate) fn agent_not_found(id: Uuid) -> StoreError {
    StoreError::InvalidInput(format!("agent {id} not found"))
}

/// An agent whose workspace cannot be found (an unknown agent, or one of a template import).
pub(crate) fn agent_without_workspace(id: Uuid) -> StoreError {
    StoreError::InvalidInput(format!("agent {id} has no workspace"))
}

#[async_trait]
pub trait AgentStore: Send + Sync {
    /// Adds an agent to a job's resource (creating the resource).
    async fn insert_agent(
        &self,
        job_id: Uuid,
        name: &str,
        directory: &str,
        connection_timeout_seconds: i32,
        auth_token_hash: &[u8],
    ) -> Result<Uuid, StoreError>;
    /// The non-deleted agents of a build.
    async fn build_agents(&self, build_id: Uuid) -> Result<Vec<Agent>, StoreError>;
    /// Reads an agent.
    async fn agent(&self, agent_id: Uuid) -> Result<Agent, StoreError>;
    /// The secret the control plane presents to this agent (`authorization: Bearer`): its
    /// workspace's control-plane secret.
    async fn agent_secret(&self, agent_id: Uuid) -> Result<String, StoreError>;
    /// Whether the agent is managed outside chatd: the template version of the build it belongs
    /// to has `has_external_agent`. An agent that belongs to no build (a template import's) is
    /// not external.
    async fn agent_is_external(&self, agent_id: Uuid) -> Result<bool, StoreError>;
    /// Records an agent heartbeat (`first_connected_at` on the first one) and what it reports.
    async fn agent_heartbeat(&self, agent_id: Uuid, report: &AgentReport)
    -> Result<(), StoreError>;
    /// The manifest of the agent holding this token; `None` for an unknown token, a deleted
    /// workspace, or an agent whose start build has been superseded by a newer start build.
    /// A stop or delete build does not invalidate the token, so a stopping agent can still
    /// report `shutting_down` → `off`.
    async fn agent_manifest_by_token(
        &self,
        token: &str,
    ) -> Result<Option<AgentManifest>, StoreError>;
    /// Sets what an agent runs at start.
    async fn set_agent_startup(
        &self,
        agent_id: Uuid,
        startup_script: &str,
        timeout_seconds: i32,
        env: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), StoreError>;
    /// Appends startup-log lines `(level, output)`; returns true when the 1 MiB cap was hit
    /// (lines beyond it are dropped).
    async fn append_agent_logs(
        &self,
        agent_id: Uuid,
        source: &str,
        lines: &[(String, String)],
    ) -> Result<bool, StoreError>;
    /// Records an agent's graceful disconnect.
    async fn agent_disconnected(&self, agent_id: Uuid) -> Result<(), StoreError>;
    /// Records a lifecycle change; an update older than the stored one is ignored.
    async fn update_agent_lifecycle(
        &self,
        agent_id: Uuid,
        state: AgentLifecycle,
        changed_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration as D;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + D::seconds(secs)
    }

    fn times(
        first: Option<i64>,
        last: Option<i64>,
        disconnected: Option<i64>,
        timeout: i32,
    ) -> AgentTimes {
        AgentTimes {
            created_at: at(0),
            first_connected_at: first.map(at),
            last_connected_at: last.map(at),
            disconnected_at: disconnected.map(at),
            connection_timeout_seconds: timeout,
        }
    }

    macro_rules! status_rows {
        ($($name:ident: $times:expr, now $now:literal => $expected:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(connection_status(&$times, at($now), Duration::from_secs(30)), $expected);
            }
        )*};
    }

    // spec/engine.md §8.6 "Agent connection status", rule by rule.
    status_rows! {
        rule1_never_connected_past_its_timeout: times(None, None, None, 60), now 61 => ConnectionStatus::Timeout;
        rule2_never_connected_within_its_timeout: times(None, None, None, 60), now 60 => ConnectionStatus::Connecting;
        rule2_never_connected_without_a_timeout: times(None, None, None, 0), now 100_000 => ConnectionStatus::Connecting;
        rule3_reported_disconnect: times(Some(1), Some(10), Some(20), 0), now 21 => ConnectionStatus::Disconnected { at: at(20) };
        rule3_disconnect_at_the_same_instant: times(Some(1), Some(10), Some(10), 0), now 11 => ConnectionStatus::Disconnected { at: at(10) };
        rule4_silent_for_longer_than_the_inactive_timeout: times(Some(1), Some(10), None, 0), now 41 => ConnectionStatus::Disconnected { at: at(10) };
        rule4_reconnected_after_a_disconnect: times(Some(1), Some(30), Some(20), 0), now 70 => ConnectionStatus::Disconnected { at: at(30) };
        rule5_connected: times(Some(1), Some(30), Some(20), 0), now 40 => ConnectionStatus::Connected;
        rule5_heard_from_exactly_at_the_limit: times(Some(1), Some(10), None, 0), now 40 => ConnectionStatus::Connected;
    }

    #[test]
    fn logs_are_kept_until_the_first_line_past_the_cap() {
        let line = |n: usize| ("info".to_owned(), "x".repeat(n));
        let lines = [line(10), line(20)];
        let capped = cap_agent_logs(0, &lines);
        assert_eq!(
            (capped.kept.len(), capped.used, capped.overflowed),
            (2, 30, false)
        );
        // The big line does not fit; the small one after it is dropped too.
        let lines = [line(10), line(100), line(1)];
        let capped = cap_agent_logs(MAX_AGENT_LOG_BYTES - 50, &lines);
        assert_eq!(
            (capped.kept.len(), capped.used, capped.overflowed),
            (1, MAX_AGENT_LOG_BYTES - 40, true)
        );
    }

    #[test]
    fn the_inactive_timeout_is_at_least_two_seconds() {
        let t = times(Some(0), Some(10), None, 0);
        assert_eq!(
            connection_status(&t, at(11), Duration::ZERO),
            ConnectionStatus::Connected
        );
        assert_eq!(
            connection_status(&t, at(13), Duration::ZERO),
            ConnectionStatus::Disconnected { at: at(10) }
        );
    }
}
