//! Workspaces end to end on one machine: the test database (either backend), chatd's agent API
//! served in-process, the provisioner with the local backend, and real `wsagent` processes
//! reporting back.

use chatstore::testing::Fixtures as _;
use std::time::Duration;

use chatd_e2e::test_db::{TestDb, processes_under, skip_on_sqlite};
use chatd_e2e::workspace_binary;
use chatd_e2e::workspaces::{Harness, WorkspaceApi, eventually, free_port, push_example};
use chatproto::chatd::v1 as pb;
use chatstore::agents::{AgentLifecycle, ConnectionStatus, connection_status};
use chatstore::workspaces::{JobStatus, WorkspaceTransition};
use provisioner::template::TemplateFile;

const READY_TEMPLATE: &str = r#"
name = "ready"
[agent]
startup_script = "echo starting up; echo a warning >&2; echo \"greeting=$CHATD_PARAM_GREETING\""
[build]
script = "echo building in $(basename $(pwd))"
[[parameters]]
name = "greeting"
default = "hello"
"#;

#[tokio::test]
async fn a_workspace_builds_and_its_agent_connects_and_becomes_ready() {
    let h = Harness::start().await;
    let template = h
        .template(
            READY_TEMPLATE,
            vec![TemplateFile {
                path: "docs/notes.txt".into(),
                content: b"from the template\n".to_vec(),
                mode: 0o644,
            }],
        )
        .await;
    let (workspace, job) = h.create_workspace(template, "dev").await;
    assert_eq!(job.status, JobStatus::Succeeded, "{}", job.error);
    let logs = h.job_logs(job.id).await;
    assert!(logs.contains("building in home"), "{logs}");
    assert!(logs.contains("started agent"), "{logs}");

    let agent = h.lifecycle(workspace, AgentLifecycle::Ready).await;
    assert_eq!(
        connection_status(&agent.times, chrono::Utc::now(), Duration::from_secs(30)),
        ConnectionStatus::Connected
    );
    assert!(
        agent.address.starts_with("http://127.0.0.1:"),
        "{}",
        agent.address
    );
    let logs = h.agent_logs(agent.id).await;
    assert!(
        logs.contains(&("info".into(), "starting up".into())),
        "{logs:?}"
    );
    assert!(
        logs.contains(&("warn".into(), "a warning".into())),
        "{logs:?}"
    );
    assert!(
        logs.contains(&("info".into(), "greeting=hello".into())),
        "{logs:?}"
    );
    assert_eq!(
        std::fs::read_to_string(h.home(workspace).join("docs/notes.txt")).unwrap(),
        "from the template\n"
    );

    // The control plane reaches the agent with the workspace secret; processes get the
    // parameters and the non-interactive environment.
    let output = h
        .run_in(
            workspace,
            &agent.address,
            "echo $CHATD_PARAM_GREETING $GIT_PAGER $CHATD_WORKSPACE_NAME; pwd",
        )
        .await;
    assert_eq!(output.exit_code, Some(0));
    let home = std::fs::canonicalize(h.home(workspace)).unwrap();
    assert_eq!(
        output.output,
        format!("hello cat dev\n{}\n", home.display())
    );

    // A wrong secret is refused.
    let mut wrong =
        wsagent::client::connect_agent(&agent.address, "wrong", Duration::from_secs(5), None)
            .await
            .unwrap();
    let err = wrong
        .health(chatproto::wsagent::v1::HealthRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    h.finish().await;
}

#[tokio::test]
async fn a_failing_startup_script_leaves_the_agent_in_start_error() {
    let h = Harness::start().await;
    let (workspace, job) = h
        .template_workspace(
            "name = \"broken\"\n[agent]\nstartup_script = \"echo about to fail; exit 7\"",
            "dev",
        )
        .await;
    // The build itself succeeds: the agent started; its script is what failed.
    assert_eq!(job.status, JobStatus::Succeeded, "{}", job.error);
    let agent = h.lifecycle(workspace, AgentLifecycle::StartError).await;
    let logs = h.agent_logs(agent.id).await;
    assert!(
        logs.iter().any(|(_, line)| line == "about to fail"),
        "{logs:?}"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_startup_script_past_its_timeout_is_killed_as_start_timeout() {
    let h = Harness::start().await;
    let (workspace, _) = h.template_workspace("name = \"slow\"\n[agent]\nstartup_script = \"sleep 30\"\nstartup_script_timeout = \"1s\"", "dev").await;
    h.lifecycle(workspace, AgentLifecycle::StartTimeout).await;
    h.finish().await;
}

/// A build that prints without end keeps its first lines and a line that says the rest is
/// gone; an endless line is cut. The build itself is not failed for it.
#[tokio::test]
async fn a_builds_log_is_capped_in_lines_and_line_length() {
    let h = Harness::start().await;
    let (_, job) = h.template_workspace("name = \"chatty\"\n[build]\nscript = \"head -c 10000 /dev/zero | tr '\\\\0' a; echo; seq 1 12000\"", "dev").await;
    assert_eq!(job.status, JobStatus::Succeeded, "{}", job.error);
    let lines = h.store.job_logs(job.id, 0, 20_000).await.unwrap();
    let build: Vec<&str> = lines
        .iter()
        .filter(|l| l.stage == "build")
        .map(|l| l.output.as_str())
        .collect();
    assert!(build[0].starts_with("aaaa") && build[0].ends_with("[line cut]"));
    assert!(build[0].len() < 5000, "{}", build[0].len());
    assert!(
        lines.len() <= provisioner::backend::MAX_JOB_LOG_LINES + 1,
        "{} lines",
        lines.len()
    );
    let last = build.last().unwrap();
    assert!(
        last.contains("the rest of its output is not kept"),
        "{last}"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_build_script_that_exits_non_zero_fails_the_job_with_its_output() {
    let h = Harness::start().await;
    let (workspace, job) = h.template_workspace("name = \"nobuild\"\n[build]\nscript = \"echo compiling; echo 'missing dependency libfoo' >&2; exit 3\"", "dev").await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error_code, "BUILD_SCRIPT_FAILED");
    assert!(
        job.error.contains("the build script exited with status 3"),
        "{}",
        job.error
    );
    assert!(
        job.error.contains("missing dependency libfoo"),
        "{}",
        job.error
    );
    assert!(h.job_logs(job.id).await.contains("compiling"));
    // No agent was created or started.
    let build = h.store.latest_build(workspace).await.unwrap().unwrap();
    assert!(h.store.build_agents(build.id).await.unwrap().is_empty());
    assert!(h.backend().agent_pid(workspace).is_none());
    h.finish().await;
}

#[tokio::test]
async fn stop_turns_the_agent_off_and_keeps_the_directory_and_delete_removes_it() {
    let h = Harness::start().await;
    let (workspace, _) = h.template_workspace("name = \"plain\"", "dev").await;
    let agent = h.lifecycle(workspace, AgentLifecycle::Ready).await;
    let pid = h.backend().agent_pid(workspace).expect("the agent runs");
    std::fs::write(h.home(workspace).join("work.txt"), "keep me").unwrap();

    let stop = h.transition(workspace, WorkspaceTransition::Stop).await;
    assert_eq!(stop.status, JobStatus::Succeeded, "{}", stop.error);
    let off = h.lifecycle(workspace, AgentLifecycle::Off).await;
    assert_eq!(off.id, agent.id);
    assert!(
        off.times.disconnected_at.is_some(),
        "a clean stop reports the disconnect"
    );
    assert!(h.backend().agent_pid(workspace).is_none());
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
        "the process is gone"
    );
    assert_eq!(
        std::fs::read_to_string(h.home(workspace).join("work.txt")).unwrap(),
        "keep me"
    );

    // Starting again reuses the directory with a new agent.
    let start = h.transition(workspace, WorkspaceTransition::Start).await;
    assert_eq!(start.status, JobStatus::Succeeded, "{}", start.error);
    let again = h.lifecycle(workspace, AgentLifecycle::Ready).await;
    assert_ne!(again.id, agent.id);
    assert_eq!(
        std::fs::read_to_string(h.home(workspace).join("work.txt")).unwrap(),
        "keep me"
    );

    let delete = h.transition(workspace, WorkspaceTransition::Delete).await;
    assert_eq!(delete.status, JobStatus::Succeeded, "{}", delete.error);
    assert!(!h.home(workspace).exists());
    assert!(h.store.workspace(workspace).await.unwrap().deleted);
    h.finish().await;
}

#[tokio::test]
async fn a_killed_agent_turns_disconnected_after_the_inactive_timeout() {
    let h = Harness::start().await;
    let (workspace, _) = h.template_workspace("name = \"plain\"", "dev").await;
    h.lifecycle(workspace, AgentLifecycle::Ready).await;
    let pid = h.backend().agent_pid(workspace).unwrap();
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    // The inactive timeout is at least 2 s (spec); heartbeats came every 200 ms.
    let inactive = Duration::from_secs(2);
    let agent = eventually("the agent to count as disconnected", || async {
        let agent = h.agent(workspace).await;
        matches!(
            connection_status(&agent.times, chrono::Utc::now(), inactive),
            ConnectionStatus::Disconnected { .. }
        )
        .then_some(agent)
    })
    .await;
    // A SIGKILL leaves no clean disconnect: it is the silence that counts.
    assert!(agent.times.disconnected_at.is_none());
    assert_eq!(agent.lifecycle, AgentLifecycle::Ready);
    h.finish().await;
}

#[tokio::test]
async fn a_restarted_provisioner_adopts_restarts_and_stops_agents_and_fails_abandoned_jobs() {
    let mut h = Harness::start().await;
    let template = h.template("name = \"plain\"", Vec::new()).await;
    let (running, _) = h.create_workspace(template, "running").await;
    let (crashed, _) = h.create_workspace(template, "crashed").await;
    let (stopped, _) = h.create_workspace(template, "stopped").await;
    for ws in [running, crashed, stopped] {
        h.lifecycle(ws, AgentLifecycle::Ready).await;
    }
    let running_pid = h.backend().agent_pid(running).unwrap();
    let crashed_agent = h.agent(crashed).await;

    // The provisioner goes away; meanwhile one agent dies, one workspace gets a stop build,
    // and a job is left half-run by this provisioner.
    h.stop_provisioner().await;
    let crashed_pid = h.backend().agent_pid(crashed).unwrap();
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(crashed_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("the killed agent to be gone", || async {
        h.backend().agent_pid(crashed).is_none().then_some(())
    })
    .await;
    let stop_build = h
        .store
        .new_build(
            stopped,
            WorkspaceTransition::Stop,
            Some(h.user),
            serde_json::json!([]),
        )
        .await
        .unwrap();
    let (fourth, build) = h
        .store
        .create_workspace(
            h.organization,
            h.user,
            template,
            "abandoned",
            serde_json::json!([]),
            None,
        )
        .await
        .unwrap();
    // This provisioner takes both pending jobs and "crashes" before finishing them.
    let first = h.store.acquire_job(h.worker_id).await.unwrap().unwrap();
    assert_eq!(first.id, stop_build.job_id);
    let second = h.store.acquire_job(h.worker_id).await.unwrap().unwrap();
    assert_eq!(second.id, build.job_id);

    let recovered = h.start_provisioner().await;
    assert_eq!(recovered.failed_jobs, 2);
    assert_eq!(
        (
            recovered.agents.adopted,
            recovered.agents.restarted,
            recovered.agents.stopped
        ),
        (1, 1, 1),
        "{recovered:?}"
    );
    let abandoned = h.store.job(build.job_id).await.unwrap();
    assert_eq!(abandoned.status, JobStatus::Failed);
    assert_eq!(abandoned.error_code, "PROVISIONER_RESTARTED");
    assert!(h.backend().agent_pid(fourth.id).is_none());

    // The running agent is the same process; the crashed one is back and heartbeating; the
    // stopped workspace's agent is off.
    assert_eq!(h.backend().agent_pid(running), Some(running_pid));
    let before = h.agent(crashed).await.times.last_connected_at;
    let back = eventually("the restarted agent to heartbeat", || async {
        let agent = h.agent(crashed).await;
        (agent.times.last_connected_at > before && agent.lifecycle == AgentLifecycle::Ready)
            .then_some(agent)
    })
    .await;
    assert_eq!(back.id, crashed_agent.id);
    h.lifecycle(stopped, AgentLifecycle::Off).await;
    h.finish().await;
}

#[tokio::test]
async fn a_canceled_build_stops_its_script_and_ends_canceled() {
    let h = Harness::start().await;
    let template = h
        .template(
            "name = \"long\"\n[build]\nscript = \"echo begun; sleep 60\"",
            Vec::new(),
        )
        .await;
    let (_, build) = h.start_workspace_build(template, "dev").await;
    eventually("the build script to run", || async {
        h.job_logs(build.job_id)
            .await
            .contains("begun")
            .then_some(())
    })
    .await;
    h.store.cancel_job(build.job_id).await.unwrap();
    let job = h.job_done(build.job_id).await;
    assert_eq!(job.status, JobStatus::Canceled);
    // The canceled start build is undone (here nothing was started yet).
    let logs = h.job_logs(job.id).await;
    assert!(logs.contains("undoing the canceled start"), "{logs}");
    assert!(logs.contains("the job was canceled"), "{logs}");
    h.finish().await;
}

#[tokio::test]
async fn invalid_parameters_fail_the_build_with_every_problem() {
    let h = Harness::start().await;
    let template = h
        .template(
            "name = \"params\"\n[[parameters]]\nname = \"size\"\ntype = \"number\"\nvalidation = { max = 4 }",
            Vec::new(),
        )
        .await;
    let (workspace, build) = h
        .start_workspace_build_with(
            template,
            "dev",
            serde_json::json!([{"name": "size", "value": "9"}, {"name": "colour", "value": "red"}]),
        )
        .await;
    let job = h.job_done(build.job_id).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error_code, "INVALID_PARAMETERS");
    assert!(
        job.error.contains("9 is above the maximum 4"),
        "{}",
        job.error
    );
    assert!(
        job.error.contains("\"colour\" is not a parameter"),
        "{}",
        job.error
    );
    assert!(h.backend().agent_pid(workspace).is_none());
    h.finish().await;
}

#[tokio::test]
async fn the_example_template_is_pushed_through_the_template_service_and_builds() {
    let h = Harness::start().await;
    let key = h.store.fixture_token(h.user, "test", None).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(chatd::templates::Templates::new(h.store.clone()).into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let template = h.push_example(&format!("http://{addr}"), &key.token).await;

    let (workspace, job) = h.create_workspace(template, "shell").await;
    assert_eq!(job.status, JobStatus::Succeeded, "{}", job.error);
    h.lifecycle(workspace, AgentLifecycle::Ready).await;
    let home = h.home(workspace);
    assert_eq!(
        std::fs::read_to_string(home.join("motd.txt")).unwrap(),
        "hello from the shell workspace\n"
    );
    assert!(home.join("projects").is_dir());
    let output = std::process::Command::new(home.join("bin/hello"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello from the shell workspace\n"
    );
    h.finish().await;
}

#[tokio::test]
async fn chatd_serve_builds_workspaces_and_a_restarted_daemon_adopts_its_agents() {
    let mut db = TestDb::create().await;
    let key = db.store.fixture_token(db.user, "test", None).await.unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let args = db.serve_with_provisioner(&listen, 2).await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = chatd_e2e::Daemon::start(&args, &[]).await.unwrap();
    let services = super::serve::reflected_services(super::serve::channel(&daemon).await).await;
    for service in ["chatd.v1.AgentApiService", "chatd.v1.TemplateService"] {
        assert!(services.contains(&service.to_owned()), "{services:?}");
    }
    let template = push_example(&daemon.url(), db.organization, &key.token).await;
    let api = WorkspaceApi::connect(&daemon.url(), &key.token).await;
    let workspace = api.create(db.organization, template, "shell").await.id;
    let built = api.built(&workspace).await;
    let job = built.job.unwrap();
    assert_eq!(
        job.status(),
        pb::ProvisionerJobStatus::Succeeded,
        "{}\n{}",
        job.error,
        daemon.log()
    );
    let agent = api
        .agent_until(&workspace, "the agent to be ready", |a| {
            a.lifecycle_state() == pb::WorkspaceAgentLifecycle::Ready
        })
        .await;
    let agents = processes_under(&db.data_dir.0);
    assert_eq!(agents.len(), 1, "one agent process");

    // The daemon goes away; its agent does not.
    let status = daemon
        .stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(status.success());
    assert_eq!(processes_under(&db.data_dir.0), agents);

    // The restarted daemon adopts it, and its heartbeats reach the daemon again.
    let daemon = chatd_e2e::Daemon::start(&args, &[]).await.unwrap();
    let log = eventually("the provisioner to start", || async {
        let log = daemon.log();
        log.contains("provisioner started").then_some(log)
    })
    .await;
    assert!(log.contains("adopted_agents=1"), "{log}");
    let restarted_at = chrono::Utc::now();
    let api = WorkspaceApi::connect(&daemon.url(), &key.token).await;
    api.agent_until(&workspace, "a heartbeat after the restart", |a| {
        let heard = a.last_connected_at.as_ref().and_then(|t| {
            chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap())
        });
        a.id == agent.id && heard.is_some_and(|t| t > restarted_at)
    })
    .await;
    assert_eq!(processes_under(&db.data_dir.0), agents);

    // And stops it through a stop build.
    api.stop(&workspace).await;
    let stop = api.built(&workspace).await;
    assert_eq!(stop.transition(), pb::WorkspaceTransition::Stop);
    let job = stop.job.unwrap();
    assert_eq!(
        job.status(),
        pb::ProvisionerJobStatus::Succeeded,
        "{}",
        job.error
    );
    eventually("the agent process to exit", || async {
        processes_under(&db.data_dir.0).is_empty().then_some(())
    })
    .await;
    let status = daemon
        .stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(status.success());
    db.finish().await;
}

#[tokio::test]
async fn chatd_provisioner_runs_builds_apart_from_the_serving_daemon() {
    if skip_on_sqlite("the provisioner is a second process on the daemon's database") {
        return;
    }
    let h = Harness::bare().await;
    let database_url = h.db.postgres().unwrap().url.clone();
    let chatd = workspace_binary("chatd").unwrap();

    // Without a control-plane URL it refuses to start, saying why.
    let output = tokio::process::Command::new(&chatd)
        .args(["provisioner", "--database-url", &database_url])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("--control-plane-url is required"), "{log}");

    let daemon = chatd_e2e::Daemon::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &database_url,
        ],
        &[],
    )
    .await
    .unwrap();
    let wsagent = workspace_binary("wsagent").unwrap();
    let mut provisioner = tokio::process::Command::new(&chatd)
        .args([
            "provisioner",
            "--database-url",
            &database_url,
            "--control-plane-url",
        ])
        .arg(daemon.url())
        .arg("--data-dir")
        .arg(&h.db.data_dir.0)
        .arg("--agent-binary")
        .arg(&wsagent)
        .args(["--workers", "1", "--agent-heartbeat-interval", "200ms"])
        .arg("--workspace-uids")
        .arg(chatd_e2e::test_db::uid_range(&h.db.workspace_users))
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let (workspace, job) = h.template_workspace("name = \"apart\"", "dev").await;
    assert_eq!(job.status, JobStatus::Succeeded, "{}", job.error);
    h.lifecycle(workspace, AgentLifecycle::Ready).await;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(provisioner.id().unwrap()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), provisioner.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    daemon
        .stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .await
        .unwrap();
    h.finish().await;
}
