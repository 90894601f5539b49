//! chatd's workspace-connection resolver against the test database (spec/recovery.md §2–§5): one test
//! per row of the gate table (§5.1), each named after its case, the binding and preflight
//! branches of §2, and a real `wsagent` reached through `StoreConnector`.
//!
//! The agents of the table are rows written through the store, their connection timestamps
//! set relative to now with SQL; the connector is a fake that either never
//! answers (the dial times out) or returns a connection that counts its closes. Settings are
//! short: a 300 ms dial timeout with the stale-binding check at 100 ms.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chatd_e2e::on_pool;
use chatd_e2e::test_db::TestPool;
use chatd_e2e::workspaces::Harness;
use chatengine::resolver::{
    AgentConnCache, AgentConnector, BindingPhase, ResolveError, ResolverSettings, StoreConnector,
    WorkspaceConnError, WorkspaceConnResolver,
};
use chatproto::tonic::Status;
use chatproto::wsagent::v1 as pb;
use chatretry::{CancelCause, CancelToken};
use chatstore::agents::AgentLifecycle;
use chatstore::templates::NewTemplateVersion;
use chatstore::types::Chat;
use chatstore::workspaces::{Build, WorkspaceTransition};
use chattool::conn::WorkspaceConn;
use chattool::context::{NO_WORKSPACE, WorkspaceResolver};
use chattool::wait::AgentDialer as _;
use chattool::{ChatScope, Tool as _, ToolContext, process};
use serde_json::json;
use uuid::Uuid;

/// A connection that counts its closes.
struct FakeConn {
    closed: Arc<AtomicUsize>,
}

impl Drop for FakeConn {
    fn drop(&mut self) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl WorkspaceConn for FakeConn {
    async fn start_process(
        &self,
        _: pb::StartProcessRequest,
    ) -> Result<pb::StartProcessResponse, Status> {
        Ok(pb::StartProcessResponse::default())
    }
    async fn process_output(
        &self,
        _: pb::ProcessOutputRequest,
    ) -> Result<pb::ProcessOutputResponse, Status> {
        Ok(pb::ProcessOutputResponse::default())
    }
    async fn list_processes(
        &self,
        _: pb::ListProcessesRequest,
    ) -> Result<pb::ListProcessesResponse, Status> {
        Ok(pb::ListProcessesResponse::default())
    }
    async fn signal_process(&self, _: pb::SignalProcessRequest) -> Result<(), Status> {
        Ok(())
    }
    async fn read_file(&self, _: pb::ReadFileRequest) -> Result<pb::ReadFileResponse, Status> {
        Ok(pb::ReadFileResponse::default())
    }
    async fn write_file(&self, _: pb::WriteFileRequest) -> Result<(), Status> {
        Ok(())
    }
    async fn edit_files(&self, _: pb::EditFilesRequest) -> Result<pb::EditFilesResponse, Status> {
        Ok(pb::EditFilesResponse::default())
    }
    async fn cancel(&self, _: pb::CancelRequest) -> Result<pb::CancelResponse, Status> {
        Ok(pb::CancelResponse::default())
    }
}

/// Dials by script: every agent answers, except those told to hang (the dial never completes)
/// or, with `hang_all`, every agent. Before each dial it may run one SQL statement (to break the
/// database under the resolver).
#[derive(Default)]
struct FakeConnector {
    hang_all: bool,
    hanging: Mutex<HashSet<Uuid>>,
    dialled: Mutex<Vec<Uuid>>,
    closed: Arc<AtomicUsize>,
    before_dial: Option<(TestPool, &'static str)>,
}

impl FakeConnector {
    fn timing_out() -> Self {
        Self {
            hang_all: true,
            ..Self::default()
        }
    }

    fn hang(&self, agent: Uuid) {
        self.hanging.lock().unwrap().insert(agent);
    }

    fn dialled(&self) -> Vec<Uuid> {
        self.dialled.lock().unwrap().clone()
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl AgentConnector for FakeConnector {
    async fn connect(
        &self,
        agent: &chatstore::agents::Agent,
    ) -> Result<Arc<dyn WorkspaceConn>, String> {
        self.dialled.lock().unwrap().push(agent.id);
        if let Some((pool, sql)) = &self.before_dial {
            on_pool!(pool, |p| sqlx::query(*sql)
                .execute(p)
                .await
                .unwrap()
                .rows_affected());
        }
        if self.hang_all || self.hanging.lock().unwrap().contains(&agent.id) {
            std::future::pending::<()>().await;
        }
        Ok(Arc::new(FakeConn {
            closed: self.closed.clone(),
        }))
    }
}

/// The fixture of §5.1: inactive timeout 30 s, threshold 90 s; the dial's 30 s and the
/// validation's 5 s shortened.
fn short() -> ResolverSettings {
    ResolverSettings {
        dial_timeout: Duration::from_millis(300),
        dial_validation_delay: Duration::from_millis(100),
        ..ResolverSettings::default()
    }
}

fn mins(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Renames a column the agent reads need, so every read of an agent row fails (a real database
/// error, not a mock).
const BREAK_AGENT_READS: &str =
    "ALTER TABLE workspace_agents RENAME COLUMN lifecycle_state TO lifecycle_state_gone";

/// A chat of `ada` and what the cases build around it.
struct Fixture {
    h: Harness,
    chat: Uuid,
    bindings: Arc<AtomicUsize>,
    cache: Arc<AgentConnCache>,
}

impl Fixture {
    async fn new() -> Self {
        Self::on(Harness::bare().await).await
    }

    async fn on(h: Harness) -> Self {
        let model = h.model("openai", "", "gpt").await;
        let chat = h.chat(model, "run something").await;
        Self {
            h,
            chat,
            bindings: Arc::default(),
            cache: Arc::default(),
        }
    }

    fn resolver(
        &self,
        connector: Arc<dyn AgentConnector>,
        settings: ResolverSettings,
    ) -> WorkspaceConnResolver {
        let seen = self.bindings.clone();
        WorkspaceConnResolver::new(
            self.h.store.clone(),
            connector,
            settings,
            self.cache.clone(),
            Some(Arc::new(move |_: &Chat| {
                seen.fetch_add(1, Ordering::SeqCst);
            })),
        )
    }

    /// Pushes a template version (a new template, or a new active version of `name`) and
    /// finishes its import job (no provisioner runs here).
    async fn template(&self, name: &str, external: bool) -> Uuid {
        let pushed = self
            .h
            .store
            .push_template_version(NewTemplateVersion {
                organization_id: self.h.organization,
                template_name: name.into(),
                display_name: name.into(),
                description: String::new(),
                version_name: Uuid::new_v4().to_string(),
                readme: String::new(),
                has_external_agent: external,
                manifest: json!({}),
                files: json!([]),
                parameters: Vec::new(),
                presets: Vec::new(),
                activate: true,
                created_by: Some(self.h.user),
            })
            .await
            .unwrap();
        self.finish_job(pushed.job_id, &[]).await;
        pushed.template_id
    }

    /// Plays the provisioner for `job`: takes it, records `agents` (name, connection timeout)
    /// on it, finishes it.
    async fn finish_job(&self, job: Uuid, agents: &[(&str, i32)]) -> Vec<Uuid> {
        let taken = self.h.store.acquire_job(Uuid::new_v4()).await.unwrap();
        assert_eq!(taken.map(|j| j.id), Some(job), "the only pending job");
        let mut ids = Vec::new();
        for (name, timeout) in agents {
            ids.push(
                self.h
                    .store
                    .insert_agent(job, name, "/home/dev", *timeout, Uuid::new_v4().as_bytes())
                    .await
                    .unwrap(),
            );
        }
        self.h.store.complete_job(job, "", "").await.unwrap();
        ids
    }

    /// A workspace of `template` whose first build has one agent `dev` with this connection
    /// timeout, bound to the chat (workspace and build; no agent yet).
    async fn workspace(&self, template: Uuid, timeout: i32) -> (Uuid, Build, Uuid) {
        let (workspace, build) = self
            .h
            .store
            .create_workspace(
                self.h.organization,
                self.h.user,
                template,
                &format!("ws{}", &Uuid::new_v4().simple().to_string()[..8]),
                json!([]),
                None,
            )
            .await
            .unwrap();
        let agent = self.finish_job(build.job_id, &[("dev", timeout)]).await[0];
        self.h
            .store
            .bind_workspace(self.chat, workspace.id, build.id)
            .await
            .unwrap();
        (workspace.id, build, agent)
    }

    /// The agent of a new workspace of a new template (`external`: its agent runs outside the
    /// provisioner) with this connection timeout, as [`Fixture::workspace`] binds it.
    async fn agent(&self, external: bool, timeout: i32) -> Uuid {
        let name = if external { "outside" } else { "plain" };
        let template = self.template(name, external).await;
        self.workspace(template, timeout).await.2
    }

    /// A new start build of the workspace with one agent, leaving the chat's binding alone.
    async fn rebuild(&self, workspace: Uuid, timeout: i32) -> (Build, Uuid) {
        let build = self
            .h
            .store
            .new_build(
                workspace,
                WorkspaceTransition::Start,
                Some(self.h.user),
                json!([]),
            )
            .await
            .unwrap();
        let agent = self.finish_job(build.job_id, &[("dev", timeout)]).await[0];
        (build, agent)
    }

    /// Sets an agent's time columns to moments before now: `[("created_at", mins(10))]`.
    async fn set(&self, agent: Uuid, ago: &[(&str, Duration)]) {
        let assignments: Vec<String> = ago
            .iter()
            .enumerate()
            .map(|(i, (column, _))| format!("{column} = ${}", i + 2))
            .collect();
        let sql = format!(
            "UPDATE workspace_agents SET {} WHERE id = $1",
            assignments.join(", ")
        );
        let now = chrono::Utc::now();
        let times = ago
            .iter()
            .map(|(_, ago)| now - chrono::Duration::from_std(*ago).unwrap());
        let sql = sqlx::AssertSqlSafe(sql);
        match self.h.db.pool() {
            TestPool::Postgres(pool) => {
                let mut query = sqlx::query(sql).bind(agent);
                for at in times {
                    query = query.bind(at);
                }
                query.execute(&pool).await.unwrap();
            }
            TestPool::Sqlite(pool) => {
                // The embedded store keeps times as text with six fractional digits.
                let mut query = sqlx::query(sql).bind(agent);
                for at in times {
                    query = query.bind(at.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string());
                }
                query.execute(&pool).await.unwrap();
            }
        }
    }

    /// The agent connected twenty minutes ago and was last heard from `last` ago.
    async fn heard_from(&self, agent: Uuid, last: Duration) {
        self.set(
            agent,
            &[
                ("first_connected_at", mins(20)),
                ("last_connected_at", last),
            ],
        )
        .await;
    }

    async fn chat(&self) -> Chat {
        self.h.store.chat(self.chat).await.unwrap()
    }

    async fn finish(self) {
        self.h.finish().await;
    }
}

/// The model-facing error of a resolution that must fail with a sentinel.
async fn sentinel(resolver: &WorkspaceConnResolver, chat: Uuid) -> WorkspaceConnError {
    match resolver.resolve(chat).await {
        Err(ResolveError::Conn(e)) => e,
        Err(other) => panic!("expected a sentinel, got {other:?}"),
        Ok(handle) => panic!("expected a sentinel, got {handle:?}"),
    }
}

const DISCONNECTED: WorkspaceConnError = WorkspaceConnError::AgentDisconnected {
    threshold: Duration::from_secs(90),
};

// §5.1, one test per case ------------------------------------------------------------------------

/// One row of the gate table: a plain workspace whose agent has `connection_timeout` seconds
/// to connect and the times `ago`, resolved through a dial that never answers. The sentinel the
/// resolver returned, and the agents it dialled.
async fn gate_row(
    connection_timeout: i32,
    ago: &[(&str, Duration)],
) -> (WorkspaceConnError, Uuid, Vec<Uuid>) {
    let f = Fixture::new().await;
    let agent = f.agent(false, connection_timeout).await;
    f.set(agent, ago).await;
    let connector = Arc::new(FakeConnector::timing_out());
    let resolver = f.resolver(connector.clone(), short());
    let error = sentinel(&resolver, f.chat).await;
    f.finish().await;
    (error, agent, connector.dialled())
}

/// Connected twenty minutes ago and last heard from `last` ago.
fn heard(last: Duration) -> [(&'static str, Duration); 2] {
    [
        ("first_connected_at", mins(20)),
        ("last_connected_at", last),
    ]
}

#[tokio::test]
async fn case01_disconnected_45_seconds_ago_is_a_dial_timeout() {
    let disconnected = [
        ("first_connected_at", mins(10)),
        ("last_connected_at", secs(50)),
        ("disconnected_at", secs(45)),
    ];
    let (error, agent, dialled) = gate_row(0, &disconnected).await;
    assert_eq!(error, WorkspaceConnError::DialTimeout);
    assert_eq!(dialled, vec![agent]);
}

#[tokio::test]
async fn case02_disconnected_exactly_the_threshold_ago_suggests_a_restart() {
    let disconnected = [
        ("first_connected_at", mins(10)),
        ("last_connected_at", secs(95)),
        ("disconnected_at", secs(90)),
    ];
    let (error, _, _) = gate_row(0, &disconnected).await;
    assert_eq!(error, DISCONNECTED);
    assert!(error.to_string().contains("at least 90 seconds"), "{error}");
}

#[tokio::test]
async fn case03_never_connected_past_its_connection_timeout() {
    let (error, _, _) = gate_row(60, &[("created_at", mins(10))]).await;
    assert_eq!(error, WorkspaceConnError::AgentNeverConnected);
}

#[tokio::test]
async fn case04_the_latest_agent_is_classified_not_a_stale_external_binding() {
    let f = Fixture::new().await;
    let template = f.template("mixed", true).await;
    let (workspace, first, external) = f.workspace(template, 0).await;
    // The stale binding: the external agent of the first build, connected (so the preflight
    // lets the dial through).
    f.heard_from(external, secs(1)).await;
    f.h.store
        .bind_agent(f.chat, workspace, first.id, external)
        .await
        .unwrap()
        .unwrap();
    // The template moves to an internal version, and a start build must use it.
    f.template("mixed", false).await;
    f.h.store
        .update_template(
            template,
            chatstore::templates::TemplateSettings {
                require_active_version: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (latest_build, latest) = f.rebuild(workspace, 60).await;
    assert!(!f.h.store.agent_is_external(latest).await.unwrap());
    assert!(f.h.store.agent_is_external(external).await.unwrap());
    assert_ne!(latest_build.template_version_id, first.template_version_id);
    f.set(latest, &[("created_at", mins(10))]).await;
    // No stale-binding switch within the dial: only the gate looks at the latest build.
    let settings = ResolverSettings {
        dial_validation_delay: Duration::from_secs(60),
        ..short()
    };
    let connector = Arc::new(FakeConnector::timing_out());
    let resolver = f.resolver(connector.clone(), settings);
    assert_eq!(
        sentinel(&resolver, f.chat).await,
        WorkspaceConnError::AgentNeverConnected
    );
    assert_eq!(
        connector.dialled(),
        vec![external],
        "the bound agent was dialled"
    );
    f.finish().await;
}

#[tokio::test]
async fn case05_never_connected_within_its_connection_timeout_is_a_dial_timeout() {
    let (error, _, _) = gate_row(60, &[("created_at", secs(30))]).await;
    assert_eq!(error, WorkspaceConnError::DialTimeout);
}

#[tokio::test]
async fn case06_connected_agent_is_a_dial_timeout() {
    let (error, _, _) = gate_row(0, &heard(secs(5))).await;
    assert_eq!(error, WorkspaceConnError::DialTimeout);
}

#[tokio::test]
async fn case07_silent_for_120_seconds_without_a_disconnect_suggests_a_restart() {
    let (error, _, _) = gate_row(0, &heard(secs(120))).await;
    assert_eq!(error, DISCONNECTED);
}

#[tokio::test]
async fn case08_the_latest_agent_cannot_be_loaded_is_a_dial_timeout_with_a_warning() {
    let f = Fixture::new().await;
    let agent = f.agent(false, 60).await;
    // Otherwise a never-connected sentinel: the gate would say so if it could read the row.
    f.set(agent, &[("created_at", mins(10))]).await;
    // The agent row reads fail from the moment the dial starts.
    let connector = Arc::new(FakeConnector {
        hang_all: true,
        before_dial: Some((f.h.db.pool(), BREAK_AGENT_READS)),
        ..FakeConnector::default()
    });
    let resolver = f.resolver(connector.clone(), short());
    let logs = chatd_e2e::logs::Capture::start();
    let error = sentinel(&resolver, f.chat).await;
    assert_eq!(error, WorkspaceConnError::DialTimeout);
    let logs = logs.text();
    assert!(
        logs.contains("WARN")
            && logs.contains("failed to load latest agent for timeout classification"),
        "{logs}"
    );
    f.finish().await;
}

#[tokio::test]
async fn case09_external_agent_that_never_connected() {
    let f = Fixture::new().await;
    let template = f.template("outside", true).await;
    // No connection timeout: the agent is "connecting", so it is dialled and the gate decides.
    f.workspace(template, 0).await;
    let connector = Arc::new(FakeConnector::timing_out());
    let resolver = f.resolver(connector.clone(), short());
    let error = sentinel(&resolver, f.chat).await;
    assert_eq!(
        error,
        WorkspaceConnError::ExternalAgentUnavailable {
            never_connected: true
        }
    );
    assert!(
        error.to_string().contains("has not connected yet"),
        "{error}"
    );
    assert_eq!(connector.dialled().len(), 1);
    f.finish().await;
}

#[tokio::test]
async fn case10_external_agent_that_connected_before() {
    let f = Fixture::new().await;
    let agent = f.agent(true, 0).await;
    f.heard_from(agent, secs(5)).await;
    let resolver = f.resolver(Arc::new(FakeConnector::timing_out()), short());
    let error = sentinel(&resolver, f.chat).await;
    assert_eq!(
        error,
        WorkspaceConnError::ExternalAgentUnavailable {
            never_connected: false
        }
    );
    assert!(error.to_string().contains("currently offline"), "{error}");
    f.finish().await;
}

#[tokio::test]
async fn case11_a_user_interrupt_during_the_dial_returns_its_cause() {
    let f = Fixture::new().await;
    let agent = f.agent(false, 60).await;
    // The gate would say "never connected" if it ran.
    f.set(agent, &[("created_at", mins(10))]).await;
    let connector = Arc::new(FakeConnector::timing_out());
    let settings = ResolverSettings {
        dial_timeout: Duration::from_secs(30),
        ..short()
    };
    let resolver = f.resolver(connector.clone(), settings);

    for via_the_tool_trait in [false, true] {
        let turn = CancelToken::new();
        let for_turn = resolver.for_turn(turn.clone());
        let interrupt = tokio::spawn({
            let connector = connector.clone();
            let before = connector.dialled().len();
            async move {
                // Once the dial is under way.
                while connector.dialled().len() == before {
                    tokio::task::yield_now().await;
                }
                turn.cancel(CancelCause::UserInterrupt);
            }
        });
        let started = tokio::time::Instant::now();
        if via_the_tool_trait {
            let text = WorkspaceResolver::connect(&for_turn, f.chat)
                .await
                .err()
                .unwrap();
            assert_eq!(text, "chat interrupted");
        } else {
            match for_turn.resolve(f.chat).await {
                Err(ResolveError::Cancelled(cause)) => {
                    assert_eq!(cause, CancelCause::UserInterrupt)
                }
                other => panic!("expected the interrupt, got {other:?}"),
            }
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        interrupt.await.unwrap();
    }
    assert_eq!(f.cache.cached_agent(), None);
    f.finish().await;
}

#[tokio::test]
async fn case12_a_cache_hit_on_an_agent_silent_for_10_minutes_redials() {
    let f = Fixture::new().await;
    let agent = f.agent(false, 0).await;
    f.heard_from(agent, secs(1)).await;
    let connector = Arc::new(FakeConnector::default());
    let resolver = f.resolver(connector.clone(), short());
    let first = resolver.resolve(f.chat).await.unwrap();
    assert_eq!(first.agent_id(), agent);
    // A hit while the agent is connected: no new dial.
    let again = resolver.resolve(f.chat).await.unwrap();
    assert_eq!((connector.dialled().len(), f.cache.borrowers()), (1, 2));
    drop((first, again));

    f.heard_from(agent, mins(10)).await;
    let redialled = resolver.resolve(f.chat).await.unwrap();
    assert_eq!(connector.dialled(), vec![agent, agent]);
    assert_eq!(connector.closed(), 1, "the cached connection was released");
    assert_eq!(
        (f.cache.cached_agent(), f.cache.borrowers()),
        (Some(agent), 1)
    );
    drop(redialled);
    f.finish().await;
}

#[tokio::test]
async fn case13_a_cache_hit_whose_agent_cannot_be_read_keeps_the_cached_connection() {
    let f = Fixture::new().await;
    let agent = f.agent(false, 0).await;
    f.heard_from(agent, secs(1)).await;
    let connector = Arc::new(FakeConnector::default());
    let resolver = f.resolver(connector.clone(), short());
    drop(resolver.resolve(f.chat).await.unwrap());

    on_pool!(f.h.db.pool(), |pool| sqlx::query(BREAK_AGENT_READS)
        .execute(pool)
        .await
        .unwrap()
        .rows_affected());
    assert!(f.h.store.agent(agent).await.is_err(), "the read fails");
    let cached = resolver.resolve(f.chat).await.unwrap();
    assert_eq!(cached.agent_id(), agent);
    assert_eq!((connector.dialled().len(), connector.closed()), (1, 0));
    drop(cached);
    f.finish().await;
}

#[tokio::test]
async fn case14_disconnected_10_minutes_ago_but_the_dial_succeeds() {
    let f = Fixture::new().await;
    let agent = f.agent(false, 0).await;
    f.set(
        agent,
        &[
            ("first_connected_at", mins(20)),
            ("last_connected_at", mins(11)),
            ("disconnected_at", mins(10)),
        ],
    )
    .await;
    let connector = Arc::new(FakeConnector::default());
    let resolver = f.resolver(connector.clone(), short());
    let conn = resolver.resolve(f.chat).await.unwrap();
    assert_eq!(conn.agent_id(), agent);
    assert_eq!(connector.dialled(), vec![agent]);
    f.finish().await;
}

#[tokio::test]
async fn case15_a_dial_still_pending_at_the_validation_delay_switches_to_the_new_agent() {
    let f = Fixture::new().await;
    let template = f.template("plain", false).await;
    let (workspace, first, old) = f.workspace(template, 0).await;
    f.heard_from(old, secs(1)).await;
    f.h.store
        .bind_agent(f.chat, workspace, first.id, old)
        .await
        .unwrap()
        .unwrap();
    let (rebuilt, new) = f.rebuild(workspace, 0).await;
    f.heard_from(new, secs(1)).await;
    // The old agent never answers; the new one does.
    let connector = Arc::new(FakeConnector::default());
    connector.hang(old);
    let resolver = f.resolver(connector.clone(), short());
    let started = tokio::time::Instant::now();
    let conn = resolver.resolve(f.chat).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(conn.agent_id(), new);
    assert_eq!(connector.dialled(), vec![old, new]);
    let chat = f.chat().await;
    assert_eq!(
        (chat.build_id, chat.agent_id),
        (Some(rebuilt.id), Some(new))
    );
    assert_eq!(
        f.bindings.load(Ordering::SeqCst),
        1,
        "the new binding is announced"
    );
    f.finish().await;
}

// §2 branches --------------------------------------------------------------------------------

#[tokio::test]
async fn a_miss_binds_the_latest_builds_chat_agent_and_announces_it() {
    let f = Fixture::new().await;
    let template = f.template("plain", false).await;
    let (workspace, build) =
        f.h.store
            .create_workspace(f.h.organization, f.h.user, template, "two", json!([]), None)
            .await
            .unwrap();
    let agents = f
        .finish_job(build.job_id, &[("aaa", 0), ("main-chat", 0)])
        .await;
    f.h.store
        .bind_workspace(f.chat, workspace.id, build.id)
        .await
        .unwrap();
    let connector = Arc::new(FakeConnector::default());
    let resolver = f.resolver(connector.clone(), short());
    let conn: Arc<dyn WorkspaceConn> = WorkspaceResolver::connect(&resolver, f.chat).await.unwrap();
    assert_eq!(connector.dialled(), vec![agents[1]], "the -chat agent");
    assert_eq!(f.chat().await.agent_id, Some(agents[1]));
    assert_eq!(f.bindings.load(Ordering::SeqCst), 1);
    assert_eq!(f.cache.borrowers(), 1);
    drop(conn);
    assert_eq!(f.cache.borrowers(), 0);

    resolver.drop_cached();
    assert_eq!((f.cache.cached_agent(), connector.closed()), (None, 1));
    f.finish().await;
}

#[tokio::test]
async fn no_workspace_no_agent_and_a_selection_error_are_told_to_the_model() {
    let f = Fixture::new().await;
    let connector = Arc::new(FakeConnector::default());
    let resolver = f.resolver(connector.clone(), short());
    assert_eq!(
        WorkspaceResolver::connect(&resolver, f.chat)
            .await
            .err()
            .unwrap(),
        NO_WORKSPACE
    );

    // Two chat agents: the model is told which.
    let template = f.template("plain", false).await;
    let (workspace, build) =
        f.h.store
            .create_workspace(
                f.h.organization,
                f.h.user,
                template,
                "twins",
                json!([]),
                None,
            )
            .await
            .unwrap();
    f.finish_job(build.job_id, &[("a-chat", 0), ("b-chat", 0)])
        .await;
    f.h.store
        .bind_workspace(f.chat, workspace.id, build.id)
        .await
        .unwrap();
    assert_eq!(
        WorkspaceResolver::connect(&resolver, f.chat)
            .await
            .err()
            .unwrap(),
        "multiple agents match the chat suffix \"-chat\": a-chat, b-chat; only one agent should use this suffix"
    );

    // Stopped: the latest build has no agent.
    let stop =
        f.h.store
            .new_build(
                workspace.id,
                WorkspaceTransition::Stop,
                Some(f.h.user),
                json!([]),
            )
            .await
            .unwrap();
    f.finish_job(stop.job_id, &[]).await;
    assert_eq!(
        sentinel(&resolver, f.chat).await,
        WorkspaceConnError::NoWorkspaceAgent
    );
    assert!(connector.dialled().is_empty());
    f.finish().await;
}

#[tokio::test]
async fn an_external_agent_known_to_be_away_is_not_dialled() {
    let f = Fixture::new().await;
    let agent = f.agent(true, 60).await;
    f.set(agent, &[("created_at", mins(10))]).await;
    let connector = Arc::new(FakeConnector::timing_out());
    let resolver = f.resolver(connector.clone(), short());
    assert_eq!(
        sentinel(&resolver, f.chat).await,
        WorkspaceConnError::ExternalAgentUnavailable {
            never_connected: true
        }
    );
    assert!(connector.dialled().is_empty());
    f.finish().await;
}

#[tokio::test]
async fn a_workspace_change_during_the_dial_is_a_binding_change() {
    let f = Fixture::new().await;
    let template = f.template("plain", false).await;
    let (_, _, agent) = f.workspace(template, 0).await;
    f.heard_from(agent, secs(1)).await;
    // While the first dial hangs, the chat moves to another workspace; the validation notices,
    // and the one retry resolves the new workspace (whose agent hangs too).
    let (other, other_build) =
        f.h.store
            .create_workspace(
                f.h.organization,
                f.h.user,
                template,
                "other",
                json!([]),
                None,
            )
            .await
            .unwrap();
    f.finish_job(other_build.job_id, &[("dev", 0)]).await;
    let connector = Arc::new(FakeConnector::timing_out());
    let resolver = f.resolver(connector.clone(), short());
    let mover = tokio::spawn({
        let (store, chat, connector) = (f.h.store.clone(), f.chat, connector.clone());
        async move {
            while connector.dialled().is_empty() {
                tokio::task::yield_now().await;
            }
            store
                .bind_workspace(chat, other.id, other_build.id)
                .await
                .unwrap();
        }
    });
    let first = sentinel(&resolver, f.chat).await;
    mover.await.unwrap();
    // The retry timed out on the new workspace's agent, which is still connecting by the
    // database: the transient text.
    assert_eq!(first, WorkspaceConnError::DialTimeout);
    assert_eq!(connector.dialled().len(), 2);
    assert_eq!(
        f.chat().await.workspace_id,
        Some(other.id),
        "bound to the new workspace's agent"
    );
    assert_eq!(
        WorkspaceConnError::BindingChanged {
            phase: BindingPhase::Connecting
        }
        .to_string(),
        "chat workspace changed while connecting"
    );
    f.finish().await;
}

// A real agent -----------------------------------------------------------------------------------

#[tokio::test]
async fn store_connector_reaches_a_real_agent_and_execute_runs_through_the_resolver() {
    let f = Fixture::on(Harness::start().await).await;
    let template = f.h.template("name = \"plain\"", Vec::new()).await;
    let (workspace, job) = f.h.create_workspace(template, "dev").await;
    assert_eq!(job.error, "");
    let agent = f.h.lifecycle(workspace, AgentLifecycle::Ready).await;
    let build = f.h.store.latest_build(workspace).await.unwrap().unwrap();
    f.h.store
        .bind_workspace(f.chat, workspace, build.id)
        .await
        .unwrap();

    let connector = Arc::new(StoreConnector::new(
        f.h.store.clone(),
        Duration::from_secs(5),
    ));
    connector.dial(&agent).await.unwrap();
    let resolver = Arc::new(f.resolver(connector, ResolverSettings::default()));

    let mut ctx = ToolContext::new(
        ChatScope {
            id: f.chat,
            owner_id: f.h.user,
            organization_id: f.h.organization,
        },
        "call-1",
    );
    ctx.store = Some(f.h.store.clone());
    ctx.resolver = Some(resolver.clone());
    let out = process::Execute
        .call(
            &ctx,
            &json!({"command": "echo hi > f && cat f"}).to_string(),
        )
        .await;
    assert!(!out.is_error, "{}", out.content);
    let out = out.as_json().unwrap();
    assert_eq!(
        (out["exit_code"].clone(), out["output"].clone()),
        (json!(0), json!("hi\n"))
    );
    let home = f.h.home(workspace);
    assert_eq!(std::fs::read_to_string(home.join("f")).unwrap(), "hi\n");

    // The connection is rooted in the directory the agent reported, and cached for the next
    // call.
    let conn = resolver.resolve(f.chat).await.unwrap();
    assert_eq!(
        conn.working_directory().map(std::path::PathBuf::from),
        Some(std::fs::canonicalize(&home).unwrap())
    );
    assert_eq!(conn.agent_id(), agent.id);
    assert_eq!(f.chat().await.agent_id, Some(agent.id));
    let listed = conn
        .list_processes(pb::ListProcessesRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.processes.len(), 1, "scoped to the chat: {listed:?}");
    drop(conn);
    resolver.drop_cached();
    f.finish().await;
}
