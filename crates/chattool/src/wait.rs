//! Build and readiness waits (spec/chattool.md §4, §5, §10.1): each subscribes to the row's
//! notifications **before** its first read, re-reads the row on every notification (payloads are
//! hints), and polls slowly as a safety net; deadlines are those of the spec.
//!
//! A caller that must stop early (the turn was interrupted) drops the future.

use std::sync::Arc;
use std::time::Duration;

use agentselect::{AgentInfo, ChatSuffix, find_chat_agent};
use async_trait::async_trait;
use chatstore::agents::{Agent, AgentLifecycle};
use chatstore::prelude::*;
use chatstore::pubsub::{Pubsub, Subscription, Topic};
use chatstore::workspaces::JobStatus;
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

/// Deadlines and intervals of the waits (spec/chattool.md §3, §10.1).
#[derive(Debug, Clone)]
pub struct WaitSettings {
    /// Longest wait for one build (10 min).
    pub build_timeout: Duration,
    /// Re-read without a notification this often (5 s), in case notifications were lost.
    pub safety_poll: Duration,
    /// Readiness phase 1: how long to keep dialling (2 min).
    pub agent_connect_timeout: Duration,
    /// One dial attempt's limit (5 s).
    pub dial_attempt_timeout: Duration,
    /// Between dial attempts without an agent notification (5 s).
    pub dial_retry_interval: Duration,
    /// Readiness phase 2: how long the startup scripts may take (10 min).
    pub startup_script_timeout: Duration,
}

impl Default for WaitSettings {
    fn default() -> Self {
        Self {
            build_timeout: Duration::from_secs(10 * 60),
            safety_poll: Duration::from_secs(5),
            agent_connect_timeout: Duration::from_secs(2 * 60),
            dial_attempt_timeout: Duration::from_secs(5),
            dial_retry_interval: Duration::from_secs(5),
            startup_script_timeout: Duration::from_secs(10 * 60),
        }
    }
}

/// Why a build wait ended without success (§4). `Display` is the model-facing cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildWaitError {
    /// The job failed: its error text (or `build failed`) and its error code.
    #[error("{message}")]
    Failed {
        /// The job's error, or `build failed` when it is empty.
        message: String,
        /// The job's error code (e.g. `INSUFFICIENT_QUOTA`).
        code: String,
    },
    /// The job was canceled.
    #[error("build was canceled")]
    Canceled,
    /// The build outlived the build timeout.
    #[error("timed out waiting for workspace build: context deadline exceeded")]
    TimedOut,
}

/// Proves an agent reachable (readiness phase 1): the engine dials it and releases the
/// connection at once.
#[async_trait]
pub trait AgentDialer: Send + Sync {
    /// Dials the agent; the error text is reported as `agent_error`.
    async fn dial(&self, agent: &Agent) -> Result<(), String>;
}

/// Which readiness phases to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phases {
    /// Dial, then wait for the startup scripts.
    Both,
    /// The agent is known to be connected: startup scripts only.
    StartupOnly,
}

/// The readiness fields of a create/start result (§5); all absent = ready.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// `no_agent`, `selection_error` or `not_ready`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_status: Option<String>,
    /// The selection or dial error (or the external-agent guidance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_error: Option<String>,
    /// `startup_scripts_failed`, `startup_scripts_timeout` or `startup_scripts_unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup_scripts: Option<String>,
    /// The lifecycle state that ended phase 2 without `ready`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle_state: Option<String>,
}

/// The external-agent guidance used as `agent_error` for externally managed templates whose
/// agent never connected (spec/recovery.md §1).
pub const EXTERNAL_AGENT_NOT_CONNECTED: &str = "workspace uses an externally managed agent that has not connected yet. The user needs to start the workspace externally and make sure the external agent is connected, then try again";

/// The external-agent guidance for an agent that connected before and is unreachable now
/// (spec/recovery.md §1).
pub const EXTERNAL_AGENT_OFFLINE: &str = "workspace uses an externally managed agent that is currently offline. The user needs to reconnect the external agent on its host, then try again";

/// How readiness picks the chat agent among a build's agents (spec/agentselect.md).
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    /// The selected agent; a selection error stops readiness (a new build, §5).
    Strict(&'a ChatSuffix),
    /// The selected agent, or the first one when selection fails, logged (a workspace that is
    /// already running, §8.1).
    FirstOnError(&'a ChatSuffix),
}

impl Selection<'_> {
    /// The chosen agent among `agents`: `Ok(None)` when there are none, `Err` with the
    /// selection error's text.
    pub fn choose<'g>(&self, agents: &'g [Agent]) -> Result<Option<&'g Agent>, String> {
        let (Self::Strict(suffix) | Self::FirstOnError(suffix)) = *self;
        match find_chat_agent(&agent_infos(agents), suffix) {
            Ok(info) => Ok(agents.iter().find(|a| a.id == info.id)),
            Err(e) if agents.is_empty() => {
                tracing::debug!(error = %e, "no agent to select");
                Ok(None)
            }
            Err(e) => match self {
                Self::Strict(_) => Err(e.to_string()),
                Self::FirstOnError(_) => {
                    tracing::warn!(error = %e, "chat agent selection failed; using the first agent");
                    Ok(agents.first())
                }
            },
        }
    }
}

/// The waits over a store and its notifications.
#[derive(Clone)]
pub struct Waits {
    store: Arc<dyn Database>,
    pubsub: Arc<dyn Pubsub>,
    settings: WaitSettings,
    on_look: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Waits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waits")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Waits {
    /// Waits for the next hint, the safety poll or the deadline, whichever comes first; false
    /// once the deadline has passed. Each look is progress (a bounded wait that keeps looking
    /// is not idle).
    async fn next_look(
        &self,
        updates: &mut Subscription,
        poll: Duration,
        deadline: Instant,
    ) -> bool {
        tokio::select! {
            _ = updates.recv() => {}
            () = tokio::time::sleep(poll) => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
        if let Some(look) = &self.on_look {
            look();
        }
        Instant::now() < deadline
    }
}

/// What agent selection needs to know of each agent (spec/agentselect.md).
pub fn agent_infos(agents: &[Agent]) -> Vec<AgentInfo> {
    agents
        .iter()
        .map(|a| AgentInfo {
            id: a.id,
            name: a.name.clone(),
            parent_id: a.parent_id,
            display_order: a.display_order,
        })
        .collect()
}

/// The lifecycle state's wire name (`start_error`, …).
pub fn lifecycle_name(state: AgentLifecycle) -> &'static str {
    match state {
        AgentLifecycle::Created => "created",
        AgentLifecycle::Starting => "starting",
        AgentLifecycle::StartTimeout => "start_timeout",
        AgentLifecycle::StartError => "start_error",
        AgentLifecycle::Ready => "ready",
        AgentLifecycle::ShuttingDown => "shutting_down",
        AgentLifecycle::ShutdownTimeout => "shutdown_timeout",
        AgentLifecycle::ShutdownError => "shutdown_error",
        AgentLifecycle::Off => "off",
    }
}

impl Waits {
    /// Waits over a store and its notifications.
    pub fn new(store: Arc<dyn Database>, pubsub: Arc<dyn Pubsub>, settings: WaitSettings) -> Self {
        Self {
            store,
            pubsub,
            settings,
            on_look: None,
        }
    }

    /// Calls `look` at every look of a wait (the idle watchdog's kick).
    pub fn on_look(mut self, look: Option<Arc<dyn Fn() + Send + Sync>>) -> Self {
        self.on_look = look;
        self
    }

    /// The settings.
    pub fn settings(&self) -> &WaitSettings {
        &self.settings
    }

    /// Waits for a build's job to finish (§4). Database read errors are retried at the next look.
    pub async fn build(&self, build_id: Uuid) -> Result<(), BuildWaitError> {
        let deadline = Instant::now() + self.settings.build_timeout;
        let job_id = loop {
            match self.store.build(build_id).await {
                Ok(build) => break build.job_id,
                Err(e) => {
                    tracing::warn!(build = %build_id, error = %e, "reading the build failed; retrying");
                    if Instant::now() >= deadline {
                        return Err(BuildWaitError::TimedOut);
                    }
                    tokio::time::sleep(self.settings.safety_poll.min(deadline - Instant::now()))
                        .await;
                }
            }
        };
        let mut updates = self.pubsub.subscribe(Topic::Job(job_id));
        loop {
            match self.store.job(job_id).await {
                Ok(job) => match job.status {
                    JobStatus::Succeeded => return Ok(()),
                    JobStatus::Failed => {
                        return Err(BuildWaitError::Failed {
                            message: if job.error.is_empty() {
                                "build failed".into()
                            } else {
                                job.error
                            },
                            code: job.error_code,
                        });
                    }
                    JobStatus::Canceled => return Err(BuildWaitError::Canceled),
                    JobStatus::Pending
                    | JobStatus::Running
                    | JobStatus::Canceling
                    | JobStatus::Unknown => {}
                },
                Err(e) => {
                    tracing::warn!(job = %job_id, error = %e, "reading the job failed; retrying")
                }
            }
            if !self
                .next_look(&mut updates, self.settings.safety_poll, deadline)
                .await
            {
                return Err(BuildWaitError::TimedOut);
            }
        }
    }

    /// Readiness phase 1: dial until it works or the connect timeout passes; retries at once on
    /// an agent notification, otherwise every dial-retry interval. `Err` is the last dial error.
    pub async fn dial(&self, agent: &Agent, dialer: &dyn AgentDialer) -> Result<(), String> {
        let deadline = Instant::now() + self.settings.agent_connect_timeout;
        let mut updates = self.pubsub.subscribe(Topic::Agent(agent.id));
        loop {
            // Dial with the freshest row (its address may have changed).
            let current = self
                .store
                .agent(agent.id)
                .await
                .unwrap_or_else(|_| agent.clone());
            let last = match tokio::time::timeout(
                self.settings.dial_attempt_timeout,
                dialer.dial(&current),
            )
            .await
            {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => format!(
                    "dial timed out after {}",
                    crate::duration::format(self.settings.dial_attempt_timeout)
                ),
            };
            if !self
                .next_look(&mut updates, self.settings.dial_retry_interval, deadline)
                .await
            {
                return Err(last);
            }
        }
    }

    /// Readiness phase 2: the startup scripts' outcome (§5).
    pub async fn startup_scripts(&self, agent_id: Uuid) -> Readiness {
        let deadline = Instant::now() + self.settings.startup_script_timeout;
        let mut updates = self.pubsub.subscribe(Topic::Agent(agent_id));
        loop {
            // Read errors are ignored: keep looking.
            if let Ok(agent) = self.store.agent(agent_id).await {
                match agent.lifecycle {
                    AgentLifecycle::Created | AgentLifecycle::Starting => {}
                    AgentLifecycle::Ready => return Readiness::default(),
                    other => {
                        return Readiness {
                            startup_scripts: Some("startup_scripts_failed".into()),
                            lifecycle_state: Some(lifecycle_name(other).into()),
                            ..Readiness::default()
                        };
                    }
                }
            }
            if !self
                .next_look(&mut updates, self.settings.safety_poll, deadline)
                .await
            {
                return Readiness {
                    startup_scripts: Some("startup_scripts_timeout".into()),
                    ..Readiness::default()
                };
            }
        }
    }

    /// Readiness of a build (§5): select the chat agent, dial it (unless `phases` says it is
    /// connected), then wait for its startup scripts. `external` = the template's agents are
    /// externally managed (a failed dial reports the guidance text).
    pub async fn readiness(
        &self,
        build_id: Uuid,
        selection: Selection<'_>,
        phases: Phases,
        external: bool,
        dialer: &dyn AgentDialer,
    ) -> Readiness {
        let selection_error = |error: String| Readiness {
            agent_status: Some("selection_error".into()),
            agent_error: Some(error),
            ..Readiness::default()
        };
        let agents = match self.store.build_agents(build_id).await {
            Ok(agents) => agents,
            Err(e) => return selection_error(e.to_string()),
        };
        let agent = match selection.choose(&agents) {
            Ok(Some(agent)) => agent,
            Ok(None) => {
                return Readiness {
                    agent_status: Some("no_agent".into()),
                    ..Readiness::default()
                };
            }
            Err(e) => return selection_error(e),
        };
        if phases == Phases::Both
            && let Err(e) = self.dial(agent, dialer).await
        {
            let agent_error = match (external, agent.times.first_connected_at) {
                (false, _) => e,
                (true, None) => EXTERNAL_AGENT_NOT_CONNECTED.into(),
                (true, Some(_)) => EXTERNAL_AGENT_OFFLINE.into(),
            };
            return Readiness {
                agent_status: Some("not_ready".into()),
                agent_error: Some(agent_error),
                ..Readiness::default()
            };
        }
        self.startup_scripts(agent.id).await
    }
}
