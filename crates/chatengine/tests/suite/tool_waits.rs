//! chattool's build and readiness waits against real builds and agents: outcomes, texts,
//! deadlines, and the safety poll when notifications are lost.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatd_e2e::workspaces::{Dialer, Harness};
use chatstore::agents::{Agent, AgentLifecycle};
use chatstore::pubsub::Hub;
use chattool::wait::{
    AgentDialer, BuildWaitError, EXTERNAL_AGENT_NOT_CONNECTED, EXTERNAL_AGENT_OFFLINE, Phases,
    Readiness, Selection, WaitSettings, Waits,
};

fn waits(h: &Harness, settings: WaitSettings) -> Waits {
    Waits::new(h.store.clone(), h.pubsub.clone(), settings)
}

struct Refusing;

#[async_trait]
impl AgentDialer for Refusing {
    async fn dial(&self, _agent: &Agent) -> Result<(), String> {
        Err("connection refused".into())
    }
}

#[tokio::test]
async fn a_build_wait_reports_success_failure_cancellation_and_timeout() {
    let h = Harness::start().await;
    let w = waits(&h, WaitSettings::default());
    let build = h.template_build("name = \"ok\"", "ok").await;
    assert_eq!(w.build(build).await, Ok(()));

    let build = h
        .template_build(
            "name = \"failing\"\n[build]\nscript = \"echo no >&2; exit 3\"",
            "failing",
        )
        .await;
    match w.build(build).await {
        Err(BuildWaitError::Failed { message, code }) => {
            assert!(
                message.contains("the build script exited with status 3"),
                "{message}"
            );
            assert_eq!(code, "BUILD_SCRIPT_FAILED");
        }
        other => panic!("{other:?}"),
    }

    let build = h
        .template_build("name = \"slow\"\n[build]\nscript = \"sleep 30\"", "slow")
        .await;
    let short = waits(
        &h,
        WaitSettings {
            build_timeout: Duration::from_millis(500),
            ..WaitSettings::default()
        },
    );
    let err = short.build(build).await.unwrap_err();
    assert_eq!(err, BuildWaitError::TimedOut);
    assert_eq!(
        err.to_string(),
        "timed out waiting for workspace build: context deadline exceeded"
    );
    let job = h.store.build(build).await.unwrap().job_id;
    h.store.cancel_job(job).await.unwrap();
    let err = w.build(build).await.unwrap_err();
    assert_eq!(err, BuildWaitError::Canceled);
    assert_eq!(err.to_string(), "build was canceled");
    h.finish().await;
}

#[tokio::test]
async fn waits_finish_on_the_safety_poll_when_no_notification_arrives() {
    let h = Harness::start().await;
    let build = h
        .template_build(
            "name = \"quiet\"\n[agent]\nstartup_script = \"sleep 0.5\"",
            "quiet",
        )
        .await;
    // A hub nobody feeds: only the safety poll can see the changes.
    let deaf = Waits::new(
        h.store.clone(),
        Arc::new(Hub::default()),
        WaitSettings {
            safety_poll: Duration::from_millis(100),
            ..WaitSettings::default()
        },
    );
    assert_eq!(deaf.build(build).await, Ok(()));
    let dialer = Dialer {
        store: h.store.clone(),
    };
    let readiness = deaf
        .readiness(
            build,
            Selection::Strict(&Default::default()),
            Phases::Both,
            false,
            &dialer,
        )
        .await;
    assert_eq!(readiness, Readiness::default());
    h.finish().await;
}

#[tokio::test]
async fn readiness_reports_ready_failed_scripts_and_script_timeouts() {
    let h = Harness::start().await;
    let w = waits(&h, WaitSettings::default());
    let suffix = Default::default();

    let build = h
        .template_build(
            "name = \"ready\"\n[agent]\nstartup_script = \"sleep 0.3\"",
            "ready",
        )
        .await;
    w.build(build).await.unwrap();
    let dialer = Dialer {
        store: h.store.clone(),
    };
    assert_eq!(
        w.readiness(
            build,
            Selection::Strict(&suffix),
            Phases::Both,
            false,
            &dialer
        )
        .await,
        Readiness::default()
    );

    let build = h
        .template_build(
            "name = \"broken\"\n[agent]\nstartup_script = \"exit 1\"",
            "broken",
        )
        .await;
    w.build(build).await.unwrap();
    let dialer = Dialer {
        store: h.store.clone(),
    };
    let readiness = w
        .readiness(
            build,
            Selection::Strict(&suffix),
            Phases::Both,
            false,
            &dialer,
        )
        .await;
    assert_eq!(
        readiness.startup_scripts.as_deref(),
        Some("startup_scripts_failed")
    );
    assert_eq!(readiness.lifecycle_state.as_deref(), Some("start_error"));
    assert_eq!(
        serde_json::to_value(&readiness).unwrap(),
        serde_json::json!({"startup_scripts": "startup_scripts_failed", "lifecycle_state": "start_error"})
    );

    let build = h
        .template_build(
            "name = \"slowstart\"\n[agent]\nstartup_script = \"sleep 30\"",
            "slowstart",
        )
        .await;
    w.build(build).await.unwrap();
    let impatient = waits(
        &h,
        WaitSettings {
            startup_script_timeout: Duration::from_millis(800),
            ..WaitSettings::default()
        },
    );
    let readiness = impatient
        .readiness(
            build,
            Selection::Strict(&suffix),
            Phases::StartupOnly,
            false,
            &Refusing,
        )
        .await;
    assert_eq!(
        readiness.startup_scripts.as_deref(),
        Some("startup_scripts_timeout")
    );
    h.finish().await;
}

#[tokio::test]
async fn readiness_without_agents_or_reachability_says_why() {
    let h = Harness::start().await;
    let build = h
        .template_build(
            "name = \"noagent\"\n[build]\nscript = \"exit 1\"",
            "noagent",
        )
        .await;
    let w = waits(
        &h,
        WaitSettings {
            agent_connect_timeout: Duration::from_millis(600),
            dial_retry_interval: Duration::from_millis(100),
            ..WaitSettings::default()
        },
    );
    assert!(w.build(build).await.is_err());
    let suffix = Default::default();
    assert_eq!(
        w.readiness(
            build,
            Selection::Strict(&suffix),
            Phases::Both,
            false,
            &Refusing
        )
        .await,
        Readiness {
            agent_status: Some("no_agent".into()),
            ..Readiness::default()
        }
    );

    let ok = h.template("name = \"unreachable\"", Vec::new()).await;
    let (_, build) = h.start_workspace_build(ok, "unreachable").await;
    let build = build.id;
    w.build(build).await.unwrap();
    // The dial error, or for an externally managed agent the guidance, which says whether the
    // agent ever connected.
    let unreachable = async |build, external| {
        w.readiness(
            build,
            Selection::Strict(&suffix),
            Phases::Both,
            external,
            &Refusing,
        )
        .await
    };
    let readiness = unreachable(build, false).await;
    assert_eq!(readiness.agent_status.as_deref(), Some("not_ready"));
    assert_eq!(readiness.agent_error.as_deref(), Some("connection refused"));
    let (workspace, build) = h.start_workspace_build(ok, "connected-before").await;
    w.build(build.id).await.unwrap();
    h.lifecycle(workspace, AgentLifecycle::Ready).await;
    let readiness = unreachable(build.id, true).await;
    assert_eq!(
        readiness.agent_error.as_deref(),
        Some(EXTERNAL_AGENT_OFFLINE)
    );
    let build = h
        .template_build("name = \"byo\"\nexternal_agent = true", "never-connected")
        .await;
    w.build(build).await.unwrap();
    let readiness = unreachable(build, true).await;
    assert_eq!(
        readiness.agent_error.as_deref(),
        Some(EXTERNAL_AGENT_NOT_CONNECTED)
    );
    h.finish().await;
}

#[tokio::test]
async fn readiness_of_a_running_workspace_uses_the_first_agent_when_selection_fails() {
    let h = Harness::start().await;
    let w = waits(&h, WaitSettings::default());
    let suffix = agentselect::ChatSuffix::default();
    // Two agents whose names both end in the chat suffix: agent selection cannot choose. The
    // first is the workspace's real agent; the second is only a row.
    let two = h
        .template("name = \"two\"\n[agent]\nname = \"a-chat\"", Vec::new())
        .await;
    let (_, build) = h.start_workspace_build(two, "two").await;
    w.build(build.id).await.unwrap();
    h.store
        .insert_agent(build.job_id, "b-chat", "/home", 60, &[0; 32])
        .await
        .unwrap();
    let names: Vec<String> = h
        .store
        .build_agents(build.id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["a-chat", "b-chat"]);
    let dialer = Dialer {
        store: h.store.clone(),
    };
    let strict = w
        .readiness(
            build.id,
            Selection::Strict(&suffix),
            Phases::Both,
            false,
            &dialer,
        )
        .await;
    assert_eq!(strict.agent_status.as_deref(), Some("selection_error"));
    let running = w
        .readiness(
            build.id,
            Selection::FirstOnError(&suffix),
            Phases::Both,
            false,
            &dialer,
        )
        .await;
    assert_eq!(running, Readiness::default());
    h.finish().await;
}
