//! `chatd.v1.AgentApiService`: what workspace agents call with their per-agent token — their
//! manifest, heartbeats, lifecycle changes and startup logs. Every call is authenticated by
//! looking the token's hash up in the store; the store records connection timestamps and
//! publishes an agent-update notification on every change a waiter cares about.

use std::sync::Arc;
use std::time::Duration;

use chatproto::chatd::v1 as pb;
use chatproto::chatd::v1::agent_api_service_server::{AgentApiService, AgentApiServiceServer};
use chatstore::agents::{AgentLifecycle, AgentManifest, AgentReport};
use chatstore::prelude::*;
use tonic::{Request, Response, Status};

use crate::auth::{bearer, store_status};

/// The agent API over a workspace store.
#[derive(Debug, Clone)]
pub struct AgentApi {
    store: Arc<dyn Database>,
    heartbeat_interval: Duration,
    networks: Arc<[AgentNetwork]>,
}

/// An address block (`10.0.0.0/8`, `fd00::/8`, or one address) where agents of the local
/// backend may listen besides loopback: the network of provisioners that run apart from the
/// replicas (`--agent-listen-ip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentNetwork {
    base: std::net::IpAddr,
    prefix: u8,
}

impl std::str::FromStr for AgentNetwork {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = text.split_once('/').unwrap_or((text, ""));
        let base: std::net::IpAddr = ip
            .trim()
            .parse()
            .map_err(|e| format!("{text:?} is not an address or ADDRESS/PREFIX: {e}"))?;
        let bits = if base.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            bits
        } else {
            prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{text:?}: the prefix must be a number from 0 to {bits}"))?
        };
        Ok(Self { base, prefix })
    }
}

impl AgentNetwork {
    /// Whether `ip` is in this block.
    fn contains(self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let (base, ip, bits) = match (self.base, ip) {
            (V4(base), V4(ip)) => (u128::from(base.to_bits()), u128::from(ip.to_bits()), 32),
            (V6(base), V6(ip)) => (base.to_bits(), ip.to_bits(), 128),
            _ => return false,
        };
        let host_bits = bits - u32::from(self.prefix);
        (base ^ ip).checked_shr(host_bits).unwrap_or(0) == 0
    }
}

impl AgentApi {
    /// The service; agents are told to heartbeat every `heartbeat_interval`.
    pub fn new(store: Arc<dyn Database>, heartbeat_interval: Duration) -> Self {
        Self {
            store,
            heartbeat_interval,
            networks: Arc::new([]),
        }
    }

    /// Lets agents of the local backend report addresses in `networks` besides loopback.
    #[must_use]
    pub fn with_networks(mut self, networks: &[AgentNetwork]) -> Self {
        self.networks = networks.into();
        self
    }

    /// The tonic server.
    pub fn into_server(self) -> AgentApiServiceServer<Self> {
        AgentApiServiceServer::new(self)
    }

    /// The calling agent, from `authorization: Bearer <agent token>`.
    async fn agent<T>(&self, request: &Request<T>) -> Result<AgentManifest, Status> {
        let token = bearer(request, "agent token")?;
        self.store
            .agent_manifest_by_token(token)
            .await
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::unauthenticated(
                    "unknown agent token, or the agent's build was replaced by a newer one",
                )
            })
    }
}

/// Where chatd may dial an agent, from what the agent reports (an untrusted report: chatd sends
/// the workspace's secret to that address). An agent the local backend started listens on
/// loopback, or on an address in `networks` (a provisioner apart from the replicas), so its
/// address must be `http(s)://` on such a host and port; an external agent's may name any host.
/// A Unix socket is never taken from a report.
fn check_listen_address(
    address: &str,
    external: bool,
    networks: &[AgentNetwork],
) -> Result<(), Status> {
    let refused = |why: &str| {
        Status::invalid_argument(format!("listen_address {address:?} is refused: {why}"))
    };
    let Some(rest) = address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
    else {
        return Err(refused("it must be http:// or https://"));
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(refused("it must be scheme://host:port and nothing else"));
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok_and(|p| p > 0) => host,
        _ => return Err(refused("it must name a port")),
    };
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .ok();
    let allowed = host == "localhost"
        || ip.is_some_and(|ip| ip.is_loopback() || networks.iter().any(|n| n.contains(ip)));
    if !external && !allowed {
        return Err(refused(
            "an agent of the local backend listens on a loopback address or in --agent-networks",
        ));
    }
    Ok(())
}

/// A log source name: 1 to 64 characters of letters, digits, `_`, `-` and `.`.
fn check_log_source(source: String) -> Result<String, Status> {
    let valid = source.len() <= 64
        && source
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(source)
    } else {
        Err(Status::invalid_argument(
            "log_source must be at most 64 letters, digits, '_', '-' or '.'",
        ))
    }
}

fn lifecycle(state: pb::WorkspaceAgentLifecycle) -> Option<AgentLifecycle> {
    use pb::WorkspaceAgentLifecycle as P;
    Some(match state {
        P::Unspecified => return None,
        P::Created => AgentLifecycle::Created,
        P::Starting => AgentLifecycle::Starting,
        P::StartTimeout => AgentLifecycle::StartTimeout,
        P::StartError => AgentLifecycle::StartError,
        P::Ready => AgentLifecycle::Ready,
        P::ShuttingDown => AgentLifecycle::ShuttingDown,
        P::ShutdownTimeout => AgentLifecycle::ShutdownTimeout,
        P::ShutdownError => AgentLifecycle::ShutdownError,
        P::Off => AgentLifecycle::Off,
    })
}

fn level(level: pb::LogLevel) -> &'static str {
    match level {
        pb::LogLevel::Trace => "trace",
        pb::LogLevel::Debug => "debug",
        pb::LogLevel::Unspecified | pb::LogLevel::Info => "info",
        pb::LogLevel::Warn => "warn",
        pb::LogLevel::Error => "error",
    }
}

#[tonic::async_trait]
impl AgentApiService for AgentApi {
    async fn get_manifest(
        &self,
        request: Request<pb::GetManifestRequest>,
    ) -> Result<Response<pb::GetManifestResponse>, Status> {
        let m = self.agent(&request).await?;
        Ok(Response::new(pb::GetManifestResponse {
            agent_id: m.agent_id.to_string(),
            agent_name: m.agent_name,
            workspace_id: m.workspace_id.to_string(),
            workspace_name: m.workspace_name,
            owner_name: m.owner_name,
            directory: m.directory,
            startup_script: m.startup_script,
            startup_script_timeout: Some(
                Duration::from_secs(u64::try_from(m.startup_script_timeout_seconds).unwrap_or(0))
                    .try_into()
                    .unwrap_or_default(),
            ),
            env: m.env.into_iter().collect(),
            control_plane_secret: m.control_plane_secret,
            confine_files: true,
            extra_file_roots: Vec::new(),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let m = self.agent(&request).await?;
        let r = request.into_inner();
        if !r.disconnecting && !r.listen_address.is_empty() {
            let external = self
                .store
                .agent_is_external(m.agent_id)
                .await
                .map_err(store_status)?;
            check_listen_address(&r.listen_address, external, &self.networks)?;
        }
        if r.disconnecting {
            self.store
                .agent_disconnected(m.agent_id)
                .await
                .map_err(store_status)?;
        } else {
            self.store
                .agent_heartbeat(
                    m.agent_id,
                    &AgentReport {
                        address: r.listen_address,
                        expanded_directory: r.expanded_directory,
                        operating_system: r.operating_system,
                    },
                )
                .await
                .map_err(store_status)?;
        }
        Ok(Response::new(pb::HeartbeatResponse {
            interval: self.heartbeat_interval.try_into().ok(),
        }))
    }

    async fn update_lifecycle(
        &self,
        request: Request<pb::UpdateLifecycleRequest>,
    ) -> Result<Response<pb::UpdateLifecycleResponse>, Status> {
        let m = self.agent(&request).await?;
        let r = request.into_inner();
        let state = lifecycle(r.lifecycle_state())
            .ok_or_else(|| Status::invalid_argument("lifecycle_state is required"))?;
        let changed_at = r
            .changed_at
            .and_then(|t| {
                chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
            })
            .unwrap_or_else(chrono::Utc::now);
        self.store
            .update_agent_lifecycle(m.agent_id, state, changed_at)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::UpdateLifecycleResponse {}))
    }

    async fn batch_create_logs(
        &self,
        request: Request<pb::BatchCreateLogsRequest>,
    ) -> Result<Response<pb::BatchCreateLogsResponse>, Status> {
        let m = self.agent(&request).await?;
        let r = request.into_inner();
        let source = if r.log_source.is_empty() {
            "startup_script".to_owned()
        } else {
            check_log_source(r.log_source)?
        };
        let lines: Vec<(String, String)> = r
            .logs
            .into_iter()
            .map(|l| (level(l.level()).to_owned(), l.output))
            .collect();
        let logs_overflowed = self
            .store
            .append_agent_logs(m.agent_id, &source, &lines)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::BatchCreateLogsResponse {
            logs_overflowed,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_report_addresses_chatd_may_dial() {
        let networks: Vec<AgentNetwork> = ["10.244.0.0/16", "fd00::/8", "192.168.1.7"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        for (address, external, allowed) in [
            ("http://127.0.0.1:4000", false, true),
            ("http://[::1]:4000", false, true),
            ("http://localhost:4000/", false, true),
            ("http://10.0.0.5:4000", false, false),
            ("https://127.0.0.1:4000", false, true),
            ("https://10.244.3.9:4000", false, true),
            ("http://10.245.0.1:4000", false, false),
            ("http://[fd00::5]:4000", false, true),
            ("http://[fe80::1]:4000", false, false),
            ("http://192.168.1.7:4000", false, true),
            ("http://192.168.1.8:4000", false, false),
            ("http://agent.example.com:4000", false, false),
            ("unix:/var/run/docker.sock", false, false),
            ("unix:/tmp/agent.sock", true, false),
            ("http://127.0.0.1", false, false),
            ("http://127.0.0.1:0", false, false),
            ("http://user@127.0.0.1:4000", false, false),
            ("http://127.0.0.1:4000/path", false, false),
            ("https://agent.example.com:443", true, true),
            ("http://10.0.0.5:4000", true, true),
            ("ftp://10.0.0.5:21", true, false),
        ] {
            assert_eq!(
                check_listen_address(address, external, &networks).is_ok(),
                allowed,
                "{address} (external: {external})"
            );
        }
    }

    #[test]
    fn agent_networks_parse_or_say_what_is_wrong() {
        assert!("10.0.0.0/8".parse::<AgentNetwork>().is_ok());
        assert!("0.0.0.0/0".parse::<AgentNetwork>().is_ok());
        assert!("fd00::/8".parse::<AgentNetwork>().is_ok());
        for (text, why) in [
            ("10.0.0.0/33", "from 0 to 32"),
            ("fd00::/129", "from 0 to 128"),
            ("10.0.0/8", "is not an address"),
            ("pods", "is not an address"),
        ] {
            let err = text.parse::<AgentNetwork>().unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
        let everything: AgentNetwork = "0.0.0.0/0".parse().unwrap();
        assert!(everything.contains("8.8.8.8".parse().unwrap()));
        assert!(!everything.contains("::1".parse().unwrap()));
    }

    #[test]
    fn log_sources_are_short_names() {
        assert!(check_log_source("startup_script".into()).is_ok());
        assert!(check_log_source("build-1.2".into()).is_ok());
        assert!(check_log_source("x".repeat(65)).is_err());
        assert!(check_log_source("a b".into()).is_err());
        assert!(check_log_source("../etc".into()).is_err());
    }
}
