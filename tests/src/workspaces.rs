//! Support for the workspace tests and benchmarks: a seeded database, chatd's agent API
//! in-process, the provisioner with the local backend over a temporary data dir, and real
//! `wsagent` processes.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // test support panics where it fails

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chatd::agentapi::AgentApi;
use chatproto::chatd::v1 as pb;
use chatstore::Database;
use chatstore::agents::{Agent, AgentLifecycle};
use chatstore::pubsub::Pubsub;
use chatstore::workspaces::{Build, Job, JobStatus, WorkspaceTransition};
use provisioner::template::{self, Manifest, TemplateDir, TemplateFile};
use provisioner::{LocalBackend, LocalConfig, Provisioner, ProvisionerConfig};
use tokio::sync::watch;
use uuid::Uuid;

use crate::test_db::TestDb;
use crate::{on_pool, workspace_binary};

/// Heartbeat interval agents are given in these tests.
pub const HEARTBEAT: Duration = Duration::from_millis(200);
/// Longest wait for anything in these tests.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A database (of the backend `CHATD_TEST_BACKEND` names), the agent API on loopback, and a
/// running provisioner over the database's data dir.
#[derive(Debug)]
pub struct Harness {
    pub db: TestDb,
    pub store: Arc<dyn Database>,
    pub pubsub: Arc<dyn Pubsub>,
    listener: Option<tokio::task::JoinHandle<()>>,
    pub url: String,
    pub worker_id: Uuid,
    pub organization: Uuid,
    pub user: Uuid,
    provisioner: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    server_stop: Option<tokio::sync::oneshot::Sender<()>>,
}

pub mod tempdir {
    /// A directory removed on drop.
    #[derive(Debug)]
    pub struct Dir(pub std::path::PathBuf);

    impl Dir {
        pub fn create() -> Self {
            let path =
                std::env::temp_dir().join(format!("chatd-e2e-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Harness {
    /// The agent API in-process and a running provisioner.
    pub async fn start() -> Self {
        Self::start_on(TestDb::create().await).await
    }

    /// [`Harness::start`] over `db` (a database on a private server, say).
    pub async fn start_on(db: TestDb) -> Self {
        let mut harness = Self::bare_on(db).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        harness.url = format!("http://{}", listener.local_addr().unwrap());
        let (server_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let api = AgentApi::new(harness.store.clone(), HEARTBEAT).into_server();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(api)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        harness.server_stop = Some(server_stop);
        harness.start_provisioner().await;
        harness
    }

    /// A seeded database (organization `acme`, admin `ada`) and a data dir, nothing running.
    pub async fn bare() -> Self {
        Self::bare_on(TestDb::create().await).await
    }

    async fn bare_on(db: TestDb) -> Self {
        let (pubsub, listener) = db.pubsub().await;
        Self {
            store: db.store.clone(),
            pubsub,
            listener,
            url: String::new(),
            worker_id: Uuid::new_v4(),
            organization: db.organization,
            user: db.user,
            db,
            provisioner: None,
            server_stop: None,
        }
    }

    /// A default model of `provider` (`openai`, `anthropic`) at `base_url` (empty: the
    /// provider's own) for `acme`.
    pub async fn model(&self, provider: &str, base_url: &str, name: &str) -> Uuid {
        use chatstore::testing::ModelFixtures as _;
        self.store
            .fixture_model(self.organization, provider, base_url, name, 200_000, true)
            .await
            .unwrap()
    }

    /// A chat of `ada` on `model` whose first message is `text`.
    pub async fn chat(&self, model: Uuid, text: &str) -> Uuid {
        self.store
            .create_chat(chatstore::types::NewChat::new(
                self.organization,
                self.user,
                model,
                vec![chatstore::types::MessagePart::text(text)],
            ))
            .await
            .unwrap()
            .chat
            .id
    }

    pub fn backend(&self) -> LocalBackend {
        let mut config = LocalConfig::new(
            self.db.data_dir.0.clone(),
            workspace_binary("wsagent").unwrap(),
            self.url.clone(),
        );
        // The default 10 s: on a loaded machine a stopping agent needs time to report `off`.
        config.stop_grace = Duration::from_secs(10);
        config.heartbeat_interval = HEARTBEAT;
        config.isolation = provisioner::Isolation::for_this_process(self.db.workspace_users);
        LocalBackend::new(self.store.clone(), config)
    }

    pub fn provisioner(&self) -> Provisioner {
        let mut config = ProvisionerConfig::new(self.worker_id);
        config.poll_interval = Duration::from_secs(1);
        Provisioner::new(
            self.store.clone(),
            self.pubsub.clone(),
            Arc::new(self.backend()),
            config,
        )
    }

    /// Starts (or restarts) the provisioner, recovering first as chatd does.
    pub async fn start_provisioner(&mut self) -> provisioner::Recovered {
        let provisioner = self.provisioner();
        let recovered = provisioner.recover().await.unwrap();
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(provisioner.run(stop_rx));
        self.provisioner = Some((stop, task));
        recovered
    }

    /// Stops the provisioner (the agents keep running, as when chatd exits).
    pub async fn stop_provisioner(&mut self) {
        if let Some((stop, task)) = self.provisioner.take() {
            let _ = stop.send(true);
            task.await.unwrap();
        }
    }

    /// Pushes a template with this `template.toml` and waits for its import job.
    pub async fn template(&self, toml: &str, files: Vec<TemplateFile>) -> Uuid {
        let manifest = Manifest::parse(toml).unwrap();
        assert!(manifest.problems().is_empty(), "{:?}", manifest.problems());
        let pushed = self
            .store
            .push_template_version(template::new_version(
                self.organization,
                &manifest,
                &files,
                "v1",
                true,
                Some(self.user),
            ))
            .await
            .unwrap();
        let job = self.job_done(pushed.job_id).await;
        assert_eq!(job.status, JobStatus::Succeeded, "import: {}", job.error);
        pushed.template_id
    }

    /// Pushes a template with this `template.toml` and creates workspace `name` of it without
    /// waiting: the first build's id.
    pub async fn template_build(&self, toml: &str, name: &str) -> Uuid {
        let template = self.template(toml, Vec::new()).await;
        self.start_workspace_build(template, name).await.1.id
    }

    /// Pushes a template with this `template.toml`, creates workspace `name` of it and waits
    /// for its first build's job.
    pub async fn template_workspace(&self, toml: &str, name: &str) -> (Uuid, Job) {
        let template = self.template(toml, Vec::new()).await;
        self.create_workspace(template, name).await
    }

    /// Creates a workspace and waits for its first build's job.
    pub async fn create_workspace(&self, template: Uuid, name: &str) -> (Uuid, Job) {
        let (workspace, build) = self.start_workspace_build(template, name).await;
        (workspace, self.job_done(build.job_id).await)
    }

    /// Creates a workspace without waiting: its id and first build.
    pub async fn start_workspace_build(&self, template: Uuid, name: &str) -> (Uuid, Build) {
        self.start_workspace_build_with(template, name, serde_json::json!([]))
            .await
    }

    /// Like [`Harness::start_workspace_build`], with build parameters
    /// (`[{"name", "value"}]`).
    pub async fn start_workspace_build_with(
        &self,
        template: Uuid,
        name: &str,
        parameters: serde_json::Value,
    ) -> (Uuid, Build) {
        let (workspace, build) = self
            .store
            .create_workspace(
                self.organization,
                self.user,
                template,
                name,
                parameters,
                None,
            )
            .await
            .unwrap();
        (workspace.id, build)
    }

    pub async fn transition(&self, workspace: Uuid, transition: WorkspaceTransition) -> Job {
        let build = self
            .store
            .new_build(
                workspace,
                transition,
                Some(self.user),
                serde_json::json!([]),
            )
            .await
            .unwrap();
        self.job_done(build.job_id).await
    }

    pub async fn job_done(&self, job: Uuid) -> Job {
        eventually("the job to finish", || async {
            let job = self.store.job(job).await.unwrap();
            job.completed_at.is_some().then_some(job)
        })
        .await
    }

    pub async fn agent(&self, workspace: Uuid) -> Agent {
        let build = self.store.latest_build(workspace).await.unwrap().unwrap();
        let build = if build.transition == WorkspaceTransition::Start {
            build
        } else {
            // The agent belongs to the start build before a stop.
            let id: Uuid = on_pool!(self.db.pool(), |pool| {
                sqlx::query_scalar(
                "SELECT id FROM workspace_builds WHERE workspace_id = $1 AND transition = 'start'
                  ORDER BY build_number DESC LIMIT 1",
            )
            .bind(workspace)
            .fetch_one(pool)
            .await
            .unwrap()
            });
            self.store.build(id).await.unwrap()
        };
        let mut agents = self.store.build_agents(build.id).await.unwrap();
        assert_eq!(agents.len(), 1, "one agent per build");
        agents.remove(0)
    }

    /// Waits for the workspace's agent to report `wanted`; on a timeout the panic shows the
    /// agent's own log and the logs of the workspace's jobs (the backend's view), with times.
    pub async fn lifecycle(&self, workspace: Uuid, wanted: AgentLifecycle) -> Agent {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let agent = self.agent(workspace).await;
            if agent.lifecycle == wanted {
                return agent;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out waiting for the agent to be {wanted:?}; it is {:?} ({:?})\n{}",
                    agent.lifecycle,
                    agent.times,
                    self.diagnosis(workspace).await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The agent's log file and every job log of a workspace, for failure messages.
    pub async fn diagnosis(&self, workspace: Uuid) -> String {
        let agent_log = self.backend().workspace_dir(workspace).join("agent.log");
        let agent_log = std::fs::read_to_string(&agent_log)
            .unwrap_or_else(|e| format!("({} unreadable: {e})", agent_log.display()));
        let builds: Vec<(String, i32, Uuid)> = on_pool!(self.db.pool(), |pool| sqlx::query_as(
            "SELECT CAST(transition AS TEXT), build_number, job_id FROM workspace_builds
              WHERE workspace_id = $1 ORDER BY build_number",
        )
        .bind(workspace)
        .fetch_all(pool)
        .await
        .unwrap_or_default());
        let mut out = format!("--- agent.log ---\n{agent_log}");
        for (transition, number, job) in builds {
            out.push_str(&format!("\n--- {transition} build {number}, job {job} ---"));
            for line in self
                .store
                .job_logs(job, 0, 10_000)
                .await
                .unwrap_or_default()
            {
                let (at, stage, output) = (line.created_at, line.stage, line.output);
                out.push_str(&format!("\n{at} {stage}: {output}"));
            }
        }
        out
    }

    /// The control-plane secret of a workspace (what chatd presents to its agent).
    pub async fn secret(&self, workspace: Uuid) -> String {
        let agent = self.agent(workspace).await;
        self.store.agent_secret(agent.id).await.unwrap()
    }

    /// An agent's startup log: `(level, output)` lines in order.
    pub async fn agent_logs(&self, agent: Uuid) -> Vec<(String, String)> {
        on_pool!(self.db.pool(), |pool| sqlx::query_as(
            "SELECT CAST(level AS TEXT), output FROM workspace_agent_logs
              WHERE agent_id = $1 ORDER BY id",
        )
        .bind(agent)
        .fetch_all(pool)
        .await
        .unwrap())
    }

    /// A job's log lines, joined.
    pub async fn job_logs(&self, job: Uuid) -> String {
        let lines = self.store.job_logs(job, 0, 10_000).await.unwrap();
        lines
            .into_iter()
            .map(|line| line.output)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Pushes `examples/templates/shell` through the daemon at `url` ([`push_example`]).
    pub async fn push_example(&self, url: &str, token: &str) -> Uuid {
        push_example(url, self.organization, token).await
    }

    /// Runs `command` in the workspace through its agent at `address` with the control plane's
    /// secret, as `execute` does, and waits up to 10 s for it to exit: the process's output.
    pub async fn run_in(
        &self,
        workspace: Uuid,
        address: &str,
        command: &str,
    ) -> chatproto::wsagent::v1::ProcessOutputResponse {
        let mut conn = wsagent::client::connect_agent(
            address,
            &self.secret(workspace).await,
            Duration::from_secs(5),
            None,
        )
        .await
        .unwrap();
        let started = conn
            .start_process(chatproto::wsagent::v1::StartProcessRequest {
                command: command.into(),
                chat_id: "c1".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        conn.process_output(chatproto::wsagent::v1::ProcessOutputRequest {
            process_id: started.process_id,
            chat_id: "c1".into(),
            wait_timeout: Some(Duration::from_secs(10).try_into().unwrap()),
        })
        .await
        .unwrap()
        .into_inner()
    }

    pub fn home(&self, workspace: Uuid) -> PathBuf {
        self.backend().home_dir(workspace)
    }

    pub async fn finish(mut self) {
        self.stop_provisioner().await;
        if let Some(stop) = self.server_stop.take() {
            let _ = stop.send(());
        }
        // The LISTEN connection belongs to the pool, which closes only when it is returned.
        if let Some(listener) = self.listener.take() {
            listener.abort();
            let _ = listener.await;
        }
        // Stops every agent this test started, then drops the database.
        self.db.finish().await;
    }
}

/// Readiness phase 1 for tests: chatd's `StoreConnector` (dials the agent for real with its
/// workspace's secret and asks for its health).
#[derive(Debug, Clone)]
pub struct Dialer {
    pub store: Arc<dyn Database>,
}

#[async_trait::async_trait]
impl chattool::wait::AgentDialer for Dialer {
    async fn dial(&self, agent: &Agent) -> Result<(), String> {
        let connector =
            chatengine::resolver::StoreConnector::new(self.store.clone(), Duration::from_secs(2));
        chattool::wait::AgentDialer::dial(&connector, agent).await
    }
}

/// Polls `check` every 50 ms until it yields a value; panics after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request with `authorization: Bearer <token>`.
pub trait WithToken: Sized {
    /// The request.
    fn into_request_with(self, token: String) -> tonic::Request<Self>;
}

impl<T> WithToken for T {
    fn into_request_with(self, token: String) -> tonic::Request<Self> {
        let mut request = tonic::Request::new(self);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }
}

/// A loopback port nobody listens on right now, so a restarted daemon can take the same
/// address its agents report to.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `p`th percentile (nearest rank) of sorted samples; for the benchmarks.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Pushes `examples/templates/shell` into `organization` through the TemplateService at `url`,
/// checks that a bad token is refused, and waits (through the same API) for its import job to
/// succeed. The template's id.
pub async fn push_example(url: &str, organization: Uuid, token: &str) -> Uuid {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/templates/shell");
    let example = TemplateDir::load(&dir).unwrap();
    let mut client = pb::template_service_client::TemplateServiceClient::connect(url.to_owned())
        .await
        .unwrap();
    let push = |token: String| {
        pb::PushTemplateVersionRequest {
            organization_id: organization.to_string(),
            manifest: Some(example.manifest.to_proto()),
            files: template::files_to_proto(&example.files),
            version_name: String::new(),
            message: "first".into(),
            activate: true,
        }
        .into_request_with(token)
    };

    let err = client
        .push_template_version(push("nope".into()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let pushed = client
        .push_template_version(push(token.to_owned()))
        .await
        .unwrap()
        .into_inner();
    assert!(pushed.template_created);
    let template = Uuid::parse_str(&pushed.template.unwrap().id).unwrap();
    let version = pushed.version.unwrap();
    assert!(version.active);
    wait_for_import(url, token, &version.id).await;
    template
}

/// Waits, through the TemplateService at `url`, until the import job of a template version has
/// succeeded (a failed one fails the test with its error).
pub async fn wait_for_import(url: &str, token: &str, version_id: &str) {
    wait_for_import_over(crate::connect(url, None).await.unwrap(), token, version_id).await;
}

/// [`wait_for_import`] through `channel`.
pub async fn wait_for_import_over(
    channel: tonic::transport::Channel,
    token: &str,
    version_id: &str,
) {
    let client = pb::template_service_client::TemplateServiceClient::new(channel);
    let import = eventually("the template's import job", || {
        let mut client = client.clone();
        let request = pb::GetTemplateVersionRequest {
            template_version_id: version_id.to_owned(),
        }
        .into_request_with(token.to_owned());
        async move {
            let job = client
                .get_template_version(request)
                .await
                .unwrap()
                .into_inner()
                .job
                .unwrap();
            (job.completed_at.is_some()).then_some(job)
        }
    })
    .await;
    assert_eq!(
        import.status(),
        pb::ProvisionerJobStatus::Succeeded,
        "{}",
        import.error
    );
}

/// A daemon's WorkspaceService as one user: what a daemon test uses instead of the store.
#[derive(Debug, Clone)]
pub struct WorkspaceApi {
    client: pb::workspace_service_client::WorkspaceServiceClient<tonic::transport::Channel>,
    token: String,
}

impl WorkspaceApi {
    /// Connects to the daemon at `url` with `token`.
    pub async fn connect(url: &str, token: &str) -> Self {
        let client = pb::workspace_service_client::WorkspaceServiceClient::connect(url.to_owned())
            .await
            .unwrap();
        Self {
            client,
            token: token.to_owned(),
        }
    }

    /// Creates a workspace of `template` in `organization`.
    pub async fn create(&self, organization: Uuid, template: Uuid, name: &str) -> pb::Workspace {
        let request = pb::CreateWorkspaceRequest {
            organization_id: organization.to_string(),
            template_id: template.to_string(),
            name: name.into(),
            ..Default::default()
        };
        self.client
            .clone()
            .create_workspace(request.into_request_with(self.token.clone()))
            .await
            .unwrap()
            .into_inner()
    }

    /// Reads a workspace with its latest build, job and agents.
    pub async fn get(&self, id: &str) -> pb::Workspace {
        let request = pb::GetWorkspaceRequest {
            workspace_id: id.to_owned(),
        };
        self.client
            .clone()
            .get_workspace(request.into_request_with(self.token.clone()))
            .await
            .unwrap()
            .into_inner()
    }

    /// Starts a stop build.
    pub async fn stop(&self, id: &str) -> pb::WorkspaceBuild {
        let request = pb::StopWorkspaceRequest {
            workspace_id: id.to_owned(),
        };
        self.client
            .clone()
            .stop_workspace(request.into_request_with(self.token.clone()))
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits until the workspace's latest build has finished: that build.
    pub async fn built(&self, id: &str) -> pb::WorkspaceBuild {
        eventually("the latest build to finish", || async {
            let build = self.get(id).await.latest_build.unwrap();
            build
                .job
                .as_ref()
                .is_some_and(|job| job.completed_at.is_some())
                .then_some(build)
        })
        .await
    }

    /// Waits until the agent of the workspace's latest build satisfies `check`: that agent.
    pub async fn agent_until(
        &self,
        id: &str,
        what: &str,
        check: impl Fn(&pb::WorkspaceAgent) -> bool,
    ) -> pb::WorkspaceAgent {
        eventually(what, || async {
            let build = self.get(id).await.latest_build.unwrap();
            build.agents.into_iter().find(&check)
        })
        .await
    }
}
