//! The workspace side of the store: templates, workspaces, builds, jobs, agents, the replica
//! registry and their notifications. The template, workspace, job and agent tests run on
//! PostgreSQL and (`…_on_sqlite`) on a fresh embedded database; those that need the chat
//! domain or the replica registry run on PostgreSQL.

use chatstore::testing::Fixtures as _;
use std::time::Duration;

use chatstore::agents::{AgentLifecycle, ConnectionStatus, connection_status};
use chatstore::postgres::{PgPubsub, PgStore};
use chatstore::prelude::*;
use chatstore::pubsub::{Notification, Pubsub, Topic};
use chatstore::templates::{NewTemplateVersion, TemplateParameter, TemplatePreset};
use chatstore::workspaces::{Build, JobStatus, Workspace, WorkspaceTransition};
use chatstore::{StoreConfig, StoreError};
use uuid::Uuid;

use super::support::*;

async fn recv(sub: &mut chatstore::pubsub::Subscription) -> Notification {
    tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .unwrap()
        .unwrap()
}

/// Version `v1` of template `name` of `org`, pushed by `user`.
pub(super) fn version(org: Uuid, user: Uuid, name: &str, activate: bool) -> NewTemplateVersion {
    NewTemplateVersion {
        organization_id: org,
        template_name: name.into(),
        display_name: "Shell".into(),
        description: "A plain shell workspace".into(),
        version_name: "v1".into(),
        readme: "# Shell".into(),
        has_external_agent: false,
        manifest: serde_json::json!({"startup_script": "true"}),
        files: serde_json::json!([]),
        parameters: vec![TemplateParameter {
            name: "cpu".into(),
            kind: "number".into(),
            default_value: Some("2".into()),
            ..TemplateParameter::default()
        }],
        presets: vec![TemplatePreset {
            name: "small".into(),
            is_default: true,
            description: String::new(),
            parameters: vec![("cpu".into(), "1".into())],
        }],
        activate,
        created_by: Some(user),
    }
}

/// The template `shell` imported, and a workspace `dev` of `user` created from it with its
/// first build.
pub(super) async fn started_workspace(
    store: &(impl TemplateStore + WorkspaceStore + ?Sized),
    org: Uuid,
    user: Uuid,
) -> (Workspace, Build) {
    let template = store
        .push_template_version(version(org, user, "shell", false))
        .await
        .unwrap();
    finish_import(store).await;
    store
        .create_workspace(
            org,
            user,
            template.template_id,
            "dev",
            serde_json::json!([]),
            None,
        )
        .await
        .unwrap()
}

/// Takes the oldest pending job and finishes it.
async fn finish_import(store: &(impl WorkspaceStore + ?Sized)) {
    let job = store.acquire_job(Uuid::new_v4()).await.unwrap().unwrap();
    store.complete_job(job.id, "", "").await.unwrap();
}

both_backends!(template_versions_are_stored_and_the_first_is_active, template_versions_are_stored_and_the_first_is_active_on_sqlite => template_versions_are_stored_and_the_first_is_active_on(org, user));

async fn template_versions_are_stored_and_the_first_is_active_on(
    store: &(impl TemplateStore + WorkspaceStore + ?Sized),
    org: Uuid,
    user: Uuid,
) {
    let first = store
        .push_template_version(version(org, user, "shell", false))
        .await
        .unwrap();
    let second = store
        .push_template_version(version(org, user, "Shell", false))
        .await
        .unwrap();
    assert_eq!(
        first.template_id, second.template_id,
        "names compare case-insensitively"
    );
    assert!(first.template_created && !second.template_created);
    let active = || async {
        store
            .template(first.template_id)
            .await
            .unwrap()
            .active_version_id
    };
    assert_eq!(active().await, Some(first.version_id));
    let third = store
        .push_template_version(version(org, user, "shell", true))
        .await
        .unwrap();
    assert_eq!(active().await, Some(third.version_id));
    let presets = store
        .template_version(third.version_id)
        .await
        .unwrap()
        .presets;
    let values: usize = presets.iter().map(|(_, p)| p.parameters.len()).sum();
    assert_eq!(values, 1);
    assert_eq!(
        store.job(third.job_id).await.unwrap().status,
        JobStatus::Pending
    );
}

both_backends!(a_workspace_starts_with_a_build_and_builds_wait_for_each_other, a_workspace_starts_with_a_build_and_builds_wait_for_each_other_on_sqlite => a_workspace_starts_with_a_build_and_builds_wait_for_each_other_on(org, user));

async fn a_workspace_starts_with_a_build_and_builds_wait_for_each_other_on(
    store: &(impl TemplateStore + WorkspaceStore + ?Sized),
    org: Uuid,
    user: Uuid,
) {
    let (workspace, build) = started_workspace(store, org, user).await;
    assert_eq!(
        (build.build_number, build.transition),
        (1, WorkspaceTransition::Start)
    );
    let template = store.template(workspace.template_id).await.unwrap();
    assert_eq!(Some(build.template_version_id), template.active_version_id);
    let duplicate = store
        .create_workspace(org, user, template.id, "DEV", serde_json::json!([]), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&duplicate, StoreError::Conflict(m) if m.contains("already exists")),
        "{duplicate}"
    );

    let busy = store
        .new_build(
            workspace.id,
            WorkspaceTransition::Stop,
            Some(user),
            serde_json::json!([]),
        )
        .await
        .unwrap_err();
    assert!(matches!(busy, StoreError::InvalidInput(_)), "{busy}");

    let job = store.acquire_job(Uuid::new_v4()).await.unwrap().unwrap();
    assert_eq!(job.id, build.job_id);
    assert_eq!(job.status, JobStatus::Running);
    store
        .append_job_logs(job.id, &[("info".into(), "init".into(), "hello".into())])
        .await
        .unwrap();
    assert_eq!(
        store.complete_job(job.id, "", "").await.unwrap().status,
        JobStatus::Succeeded
    );

    let stop = store
        .new_build(
            workspace.id,
            WorkspaceTransition::Stop,
            Some(user),
            serde_json::json!([]),
        )
        .await
        .unwrap();
    assert_eq!(stop.build_number, 2);
    assert_eq!(
        store.latest_build(workspace.id).await.unwrap().unwrap().id,
        stop.id
    );
    assert_eq!(store.build(stop.id).await.unwrap(), stop);
    assert_eq!(store.workspace(workspace.id).await.unwrap(), workspace);
    let unknown = store.workspace(Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(unknown, StoreError::InvalidInput(_)), "{unknown}");
}

both_backends!(jobs_are_taken_once_and_finish_as_failed_or_canceled, jobs_are_taken_once_and_finish_as_failed_or_canceled_on_sqlite => jobs_are_taken_once_and_finish_as_failed_or_canceled_on(org, user));

async fn jobs_are_taken_once_and_finish_as_failed_or_canceled_on(
    store: &(impl TemplateStore + WorkspaceStore + ?Sized),
    org: Uuid,
    user: Uuid,
) {
    for i in 0..4 {
        store
            .push_template_version(version(org, user, &format!("t{i}"), false))
            .await
            .unwrap();
    }
    // Two workers in parallel never take the same job.
    let (worker_a, worker_b) = (Uuid::new_v4(), Uuid::new_v4());
    let (a, b) = tokio::join!(store.acquire_job(worker_a), store.acquire_job(worker_b));
    let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
    assert_ne!(a.id, b.id);
    assert_eq!(
        store.jobs_in_progress(worker_a).await.unwrap(),
        vec![a.clone()]
    );

    let failed = store
        .complete_job(a.id, "terraform apply failed", "INSUFFICIENT_QUOTA")
        .await
        .unwrap();
    assert_eq!(
        (failed.status, failed.error_code.as_str()),
        (JobStatus::Failed, "INSUFFICIENT_QUOTA")
    );
    assert!(store.jobs_in_progress(worker_a).await.unwrap().is_empty());
    let canceling = store.cancel_job(b.id).await.unwrap();
    assert_eq!(canceling.status, JobStatus::Canceling);
    assert_eq!(
        store.complete_job(b.id, "", "").await.unwrap().status,
        JobStatus::Canceled
    );

    let c = store.acquire_job(Uuid::new_v4()).await.unwrap().unwrap();
    let pending = store.acquire_job(Uuid::new_v4()).await.unwrap().unwrap();
    store.complete_job(c.id, "", "").await.unwrap();
    // Finishing twice is refused.
    assert!(store.complete_job(c.id, "", "").await.is_err());
    let _ = pending;
    assert!(store.acquire_job(Uuid::new_v4()).await.unwrap().is_none());
    let unknown = store.cancel_job(Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(unknown, StoreError::InvalidInput(_)), "{unknown}");
}

both_backends!(a_pending_job_canceled_is_finished_at_once, a_pending_job_canceled_is_finished_at_once_on_sqlite => a_pending_job_canceled_is_finished_at_once_on(org, user));

async fn a_pending_job_canceled_is_finished_at_once_on(
    store: &(impl TemplateStore + WorkspaceStore + ?Sized),
    org: Uuid,
    user: Uuid,
) {
    let pushed = store
        .push_template_version(version(org, user, "shell", false))
        .await
        .unwrap();
    assert_eq!(
        store.cancel_job(pushed.job_id).await.unwrap().status,
        JobStatus::Canceled
    );
    assert!(store.acquire_job(Uuid::new_v4()).await.unwrap().is_none());
}

#[tokio::test]
async fn job_and_agent_changes_notify_their_waiters() {
    let s = Seeded::new().await;
    let (hub, task) = PgPubsub::start(s.pool()).await.unwrap();
    job_and_agent_changes_notify_their_waiters_on(&s.store(), &hub, s.org, s.user).await;
    task.abort();
    s.finish().await;
}

#[tokio::test]
async fn job_and_agent_changes_notify_their_waiters_on_sqlite() {
    let s = SqliteSeeded::new().await;
    job_and_agent_changes_notify_their_waiters_on(&s.store, s.store.db().hub(), s.org, s.user)
        .await;
}

async fn job_and_agent_changes_notify_their_waiters_on(
    store: &(impl TemplateStore + WorkspaceStore + AgentStore + ?Sized),
    hub: &(impl Pubsub + ?Sized),
    org: Uuid,
    user: Uuid,
) {
    let pushed = store
        .push_template_version(version(org, user, "shell", false))
        .await
        .unwrap();
    let mut job_events = hub.subscribe(Topic::Job(pushed.job_id));
    let mut all_jobs = hub.subscribe(Topic::Jobs);
    let job = store.acquire_job(Uuid::new_v4()).await.unwrap().unwrap();
    let agent = store
        .insert_agent(job.id, "main-chat", "/work", 0, b"hash")
        .await
        .unwrap();
    let mut agent_events = hub.subscribe(Topic::Agent(agent));
    store.complete_job(job.id, "", "").await.unwrap();
    store
        .agent_heartbeat(agent, &report("http://127.0.0.1:1234"))
        .await
        .unwrap();

    // The job's events (start, completion) arrive; the last one seen says it finished.
    let mut saw_job = false;
    while !saw_job {
        saw_job = matches!(recv(&mut job_events).await, Notification::Job(u) if u.job_id == job.id)
            && store.job(job.id).await.unwrap().status == JobStatus::Succeeded;
    }
    assert!(matches!(recv(&mut all_jobs).await, Notification::Job(u) if u.job_id == job.id));
    assert!(matches!(recv(&mut agent_events).await, Notification::Agent(u) if u.agent_id == agent));
}

both_backends!(agents_report_connection_and_lifecycle, agents_report_connection_and_lifecycle_on_sqlite => agents_report_connection_and_lifecycle_on(org, user));

async fn agents_report_connection_and_lifecycle_on(
    store: &(impl TemplateStore + WorkspaceStore + AgentStore + ?Sized),
    org: Uuid,
    user: Uuid,
) {
    let (_, build) = started_workspace(store, org, user).await;
    let agent = store
        .insert_agent(build.job_id, "main-chat", "/home/dev", 120, b"h")
        .await
        .unwrap();
    let now = || chrono::Utc::now();
    let agents = store.build_agents(build.id).await.unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(
        (
            agents[0].id,
            agents[0].lifecycle,
            agents[0].times.connection_timeout_seconds
        ),
        (agent, AgentLifecycle::Created, 120)
    );
    assert_eq!(
        connection_status(&agents[0].times, now(), Duration::from_secs(30)),
        ConnectionStatus::Connecting
    );

    store
        .agent_heartbeat(agent, &report("http://127.0.0.1:4000"))
        .await
        .unwrap();
    let a = &store.build_agents(build.id).await.unwrap()[0];
    assert_eq!(
        connection_status(&a.times, now(), Duration::from_secs(30)),
        ConnectionStatus::Connected
    );
    assert_eq!(a.address, "http://127.0.0.1:4000");
    assert_eq!(a.times.first_connected_at, a.times.last_connected_at);

    let t1 = now();
    store
        .update_agent_lifecycle(agent, AgentLifecycle::Ready, t1)
        .await
        .unwrap();
    // An older report does not overwrite a newer one.
    store
        .update_agent_lifecycle(
            agent,
            AgentLifecycle::Starting,
            t1 - chrono::Duration::seconds(5),
        )
        .await
        .unwrap();
    assert_eq!(
        store.build_agents(build.id).await.unwrap()[0].lifecycle,
        AgentLifecycle::Ready
    );
    // A report of the same instant is taken.
    store
        .update_agent_lifecycle(agent, AgentLifecycle::ShuttingDown, t1)
        .await
        .unwrap();
    assert_eq!(
        store.agent(agent).await.unwrap().lifecycle,
        AgentLifecycle::ShuttingDown
    );

    store.agent_disconnected(agent).await.unwrap();
    let a = &store.build_agents(build.id).await.unwrap()[0];
    assert!(matches!(
        connection_status(&a.times, now(), Duration::from_secs(30)),
        ConnectionStatus::Disconnected { .. }
    ));
    let unknown = store
        .agent_heartbeat(Uuid::new_v4(), &report("http://127.0.0.1:4000"))
        .await
        .unwrap_err();
    assert!(matches!(unknown, StoreError::InvalidInput(_)), "{unknown}");
}

#[tokio::test]
async fn the_replica_registry_forgets_silent_replicas() {
    let s = Seeded::new().await;
    let store = PgStore::new(s.pool().clone(), StoreConfig::default());
    let worker = Uuid::new_v4();
    store
        .register_worker(worker, "http://127.0.0.1:7421")
        .await
        .unwrap();
    assert_eq!(
        store
            .worker_address(worker, Duration::from_secs(30))
            .await
            .unwrap()
            .as_deref(),
        Some("http://127.0.0.1:7421")
    );
    sqlx::query("UPDATE chatd_workers SET heartbeat_at = now() - interval '1 minute'")
        .execute(s.pool())
        .await
        .unwrap();
    assert_eq!(
        store
            .worker_address(worker, Duration::from_secs(30))
            .await
            .unwrap(),
        None
    );
    s.finish().await;
}

both_backends!(templates_read_back_with_parameters_presets_and_settings, templates_read_back_with_parameters_presets_and_settings_on_sqlite => templates_read_back_with_parameters_presets_and_settings_on(org, user));

async fn templates_read_back_with_parameters_presets_and_settings_on(
    store: &(impl TemplateStore + ?Sized),
    org: Uuid,
    user: Uuid,
) {
    let pushed = store
        .push_template_version(version(org, user, "shell", false))
        .await
        .unwrap();
    let template = store.template(pushed.template_id).await.unwrap();
    assert_eq!(
        (
            template.name.as_str(),
            template.active_version_id,
            template.chat_enabled,
            template.require_active_version
        ),
        ("shell", Some(pushed.version_id), true, false)
    );
    assert_eq!(
        (template.organization_id, template.created_by),
        (org, Some(user))
    );
    let v = store.template_version(pushed.version_id).await.unwrap();
    assert_eq!(
        (v.template_id, v.job_id, v.readme.as_str()),
        (pushed.template_id, pushed.job_id, "# Shell")
    );
    assert_eq!(v.manifest, serde_json::json!({"startup_script": "true"}));
    assert_eq!(v.files, serde_json::json!([]));
    assert_eq!(v.parameters, version(org, user, "shell", false).parameters);
    assert_eq!(v.presets.len(), 1);
    assert_eq!(
        v.presets[0].1.parameters,
        vec![("cpu".to_owned(), "1".to_owned())]
    );
    let unknown = store.template_version(Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(unknown, StoreError::InvalidInput(_)), "{unknown}");

    let updated = store
        .update_template(
            pushed.template_id,
            chatstore::templates::TemplateSettings {
                require_active_version: Some(true),
                chat_enabled: Some(false),
                deprecated: Some("use shell2".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(updated.require_active_version && !updated.chat_enabled);
    assert_eq!(updated.deprecated, "use shell2");
    assert_eq!(store.template(pushed.template_id).await.unwrap(), updated);

    let other = store
        .push_template_version(version(org, user, "other", false))
        .await
        .unwrap();
    let err = store
        .update_template(
            pushed.template_id,
            chatstore::templates::TemplateSettings {
                active_version_id: Some(other.version_id),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("is not a version of template"),
        "{err}"
    );
    let unknown = store
        .update_template(Uuid::new_v4(), Default::default())
        .await
        .unwrap_err();
    assert!(matches!(unknown, StoreError::InvalidInput(_)), "{unknown}");
}

fn report(address: &str) -> chatstore::agents::AgentReport {
    chatstore::agents::AgentReport {
        address: address.into(),
        expanded_directory: "/home/dev".into(),
        operating_system: "linux".into(),
    }
}

both_backends!(an_agent_token_leads_to_its_manifest_until_a_newer_start_build, an_agent_token_leads_to_its_manifest_until_a_newer_start_build_on_sqlite => an_agent_token_leads_to_its_manifest_until_a_newer_start_build_on(org, user));

async fn an_agent_token_leads_to_its_manifest_until_a_newer_start_build_on(
    store: &(impl TemplateStore + WorkspaceStore + AgentStore + ?Sized),
    org: Uuid,
    user: Uuid,
) {
    let (workspace, build) = started_workspace(store, org, user).await;
    let token = "agent-token-1";
    let agent = store
        .insert_agent(
            build.job_id,
            "main-chat",
            "/home/dev",
            0,
            &chatstore::identity::token_hash(token),
        )
        .await
        .unwrap();
    let env = std::collections::BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]);
    store
        .set_agent_startup(agent, "echo started", 30, &env)
        .await
        .unwrap();

    let manifest = store.agent_manifest_by_token(token).await.unwrap().unwrap();
    assert_eq!(
        (manifest.agent_id, manifest.workspace_id),
        (agent, workspace.id)
    );
    assert_eq!(
        (
            manifest.agent_name.as_str(),
            manifest.workspace_name.as_str(),
            manifest.owner_name.as_str(),
            manifest.directory.as_str()
        ),
        ("main-chat", "dev", "ada", "/home/dev")
    );
    assert_eq!(
        (
            manifest.startup_script.as_str(),
            manifest.startup_script_timeout_seconds
        ),
        ("echo started", 30)
    );
    assert_eq!(manifest.env, env);
    assert_eq!(manifest.control_plane_secret.len(), 64);
    assert!(
        store
            .agent_manifest_by_token("wrong")
            .await
            .unwrap()
            .is_none()
    );

    // Finishes the pending job and requests the next build.
    let (workspace_id, user) = (workspace.id, user);
    let next_build = |transition| async move {
        let job = store.acquire_job(Uuid::new_v4()).await.unwrap().unwrap();
        store.complete_job(job.id, "", "").await.unwrap();
        store
            .new_build(workspace_id, transition, Some(user), serde_json::json!([]))
            .await
            .unwrap()
    };

    // A stop build leaves the token usable, so the stopping agent can report its shutdown.
    next_build(WorkspaceTransition::Stop).await;
    assert!(
        store
            .agent_manifest_by_token(token)
            .await
            .unwrap()
            .is_some()
    );

    // Once a newer start build exists, the old agent's token stops working.
    next_build(WorkspaceTransition::Start).await;
    assert!(
        store
            .agent_manifest_by_token(token)
            .await
            .unwrap()
            .is_none()
    );
}

both_backends!(agent_logs_are_capped, agent_logs_are_capped_on_sqlite => agent_logs_are_capped_on(org, user));

async fn agent_logs_are_capped_on(
    store: &(impl TemplateStore + AgentStore + Raw + ?Sized),
    org: Uuid,
    user: Uuid,
) {
    let pushed = store
        .push_template_version(version(org, user, "shell", false))
        .await
        .unwrap();
    let agent = store
        .insert_agent(pushed.job_id, "a", "/", 0, b"h")
        .await
        .unwrap();
    let line = |n: usize| ("info".to_owned(), "x".repeat(n));
    assert!(
        !store
            .append_agent_logs(agent, "startup_script", &[line(10), line(20)])
            .await
            .unwrap()
    );
    let big = 1024 * 1024;
    assert!(
        store
            .append_agent_logs(agent, "startup_script", &[line(big)])
            .await
            .unwrap()
    );
    assert_eq!(
        store.agent_log_lines(agent).await,
        2,
        "the line over the cap was dropped"
    );
    let unknown = store
        .append_agent_logs(Uuid::new_v4(), "startup_script", &[line(1)])
        .await
        .unwrap_err();
    assert!(matches!(unknown, StoreError::InvalidInput(_)), "{unknown}");
}

both_backends!(templates_list_by_active_developers_then_name_and_filter_by_name, templates_list_by_active_developers_then_name_and_filter_by_name_on_sqlite => templates_list_by_active_developers_then_name_and_filter_by_name_on(org, user));

async fn templates_list_by_active_developers_then_name_and_filter_by_name_on(
    store: &(impl TemplateStore + WorkspaceStore + IdentityStore + ?Sized),
    org: Uuid,
    user: Uuid,
) {
    for name in ["zeta", "alpha", "beta", "gone", "old", "50%_off"] {
        store
            .push_template_version(version(org, user, name, true))
            .await
            .unwrap();
    }
    let id = |listing: &[chatstore::templates::TemplateListing], name: &str| {
        listing
            .iter()
            .find(|l| l.template.name == name)
            .unwrap()
            .template
            .id
    };
    let all = store.list_templates(org, "").await.unwrap();
    let (zeta, gone, old) = (id(&all, "zeta"), id(&all, "gone"), id(&all, "old"));
    store.delete_template(gone).await.unwrap();
    store
        .update_template(
            old,
            chatstore::templates::TemplateSettings {
                deprecated: Some("use zeta".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Two owners (one with two workspaces) on zeta; a deleted workspace does not count.
    let other = store.fixture_user("other", "member", org).await.unwrap();
    for (owner, name) in [(user, "a"), (user, "b"), (other, "c")] {
        store
            .create_workspace(org, owner, zeta, name, serde_json::json!([]), None)
            .await
            .unwrap();
    }

    let names = |listing: Vec<chatstore::templates::TemplateListing>| {
        listing
            .into_iter()
            .map(|l| (l.template.name, l.active_developers))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.list_templates(org, "").await.unwrap()),
        [
            ("zeta".to_owned(), 2),
            ("50%_off".to_owned(), 0),
            ("alpha".to_owned(), 0),
            ("beta".to_owned(), 0)
        ]
    );
    assert_eq!(
        names(store.list_templates(org, "ET").await.unwrap()),
        [("zeta".to_owned(), 2), ("beta".to_owned(), 0)]
    );
    // LIKE wildcards in the query are literal.
    assert_eq!(
        names(store.list_templates(org, "%_").await.unwrap()),
        [("50%_off".to_owned(), 0)]
    );
    let elsewhere = store.fixture_organization("elsewhere").await.unwrap();
    assert!(
        store
            .list_templates(elsewhere, "")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.username(other).await.unwrap(), "other");
}

both_backends!(later_builds_keep_their_version_unless_the_template_requires_the_active_one, later_builds_keep_their_version_unless_the_template_requires_the_active_one_on_sqlite => later_builds_keep_their_version_unless_the_template_requires_the_active_one_on(org, user));

async fn later_builds_keep_their_version_unless_the_template_requires_the_active_one_on(
    store: &(impl TemplateStore + WorkspaceStore + ?Sized),
    org: Uuid,
    user: Uuid,
) {
    let (workspace, first) = started_workspace(store, org, user).await;
    // A build's job finished without a worker taking it (the new version's import stays
    // pending).
    let finish = |build: Build| async move {
        store.complete_job(build.job_id, "", "").await.unwrap();
    };
    finish(first.clone()).await;
    let v2 = store
        .push_template_version(version(org, user, "shell", true))
        .await
        .unwrap();
    let build = |transition| async move {
        store
            .new_build(workspace.id, transition, Some(user), serde_json::json!([]))
            .await
            .unwrap()
    };
    let stop = build(WorkspaceTransition::Stop).await;
    assert_eq!(stop.template_version_id, first.template_version_id);
    finish(stop).await;
    let start = build(WorkspaceTransition::Start).await;
    assert_eq!(start.template_version_id, first.template_version_id);
    finish(start).await;

    store
        .update_template(
            workspace.template_id,
            chatstore::templates::TemplateSettings {
                require_active_version: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let stop = build(WorkspaceTransition::Stop).await;
    assert_eq!(stop.template_version_id, first.template_version_id);
    finish(stop).await;
    let start = build(WorkspaceTransition::Start).await;
    assert_eq!(start.template_version_id, v2.version_id);
}

#[tokio::test]
async fn a_chat_binds_to_a_workspace_build_and_forgets_its_agent() {
    let s = Seeded::new().await;
    let store = PgStore::new(s.pool().clone(), StoreConfig::default());
    let (workspace, build) = started_workspace(&store, s.org, s.user).await;
    let chat = s.chat().await;
    let before = chatstore::Store::chat(&store, chat).await.unwrap();
    let agent = store
        .insert_agent(build.job_id, "dev-chat", "/", 0, &[1])
        .await
        .unwrap();
    sqlx::query("UPDATE chats SET agent_id = $2 WHERE id = $1")
        .bind(chat)
        .bind(agent)
        .execute(s.pool())
        .await
        .unwrap();
    let bound = chatstore::Store::bind_workspace(&store, chat, workspace.id, build.id)
        .await
        .unwrap();
    assert_eq!(
        (bound.workspace_id, bound.build_id, bound.agent_id),
        (Some(workspace.id), Some(build.id), None)
    );
    // Metadata only: no transition, no version bump.
    assert_eq!(bound.snapshot_version, before.snapshot_version);
    let missing = chatstore::Store::bind_workspace(&store, Uuid::new_v4(), workspace.id, build.id)
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::ChatNotFound(_)), "{missing}");
    s.finish().await;
}

#[tokio::test]
async fn a_chat_binds_an_agent_only_while_its_workspace_is_unchanged() {
    let s = Seeded::new().await;
    let store = PgStore::new(s.pool().clone(), StoreConfig::default());
    let (workspace, build) = started_workspace(&store, s.org, s.user).await;
    let chat = s.chat().await;
    let agent = store
        .insert_agent(build.job_id, "dev-chat", "/", 0, &[1])
        .await
        .unwrap();
    chatstore::Store::bind_workspace(&store, chat, workspace.id, build.id)
        .await
        .unwrap();
    let before = chatstore::Store::chat(&store, chat).await.unwrap();

    let bound = chatstore::Store::bind_agent(&store, chat, workspace.id, build.id, agent)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (bound.workspace_id, bound.build_id, bound.agent_id),
        (Some(workspace.id), Some(build.id), Some(agent))
    );
    // Metadata only: no transition, no version bump.
    assert_eq!(bound.snapshot_version, before.snapshot_version);

    // The chat moved to another workspace meanwhile: nothing is written.
    let other = Uuid::new_v4();
    let raced = chatstore::Store::bind_agent(&store, chat, other, build.id, agent)
        .await
        .unwrap();
    assert_eq!(raced, None);
    assert_eq!(
        chatstore::Store::chat(&store, chat).await.unwrap().agent_id,
        Some(agent)
    );

    let missing =
        chatstore::Store::bind_agent(&store, Uuid::new_v4(), workspace.id, build.id, agent)
            .await
            .unwrap_err();
    assert!(matches!(missing, StoreError::ChatNotFound(_)), "{missing}");
    s.finish().await;
}

both_backends!(an_agent_reads_back_its_secret_its_external_flag_and_its_expanded_directory, an_agent_reads_back_its_secret_its_external_flag_and_its_expanded_directory_on_sqlite => an_agent_reads_back_its_secret_its_external_flag_and_its_expanded_directory_on(org, user));

async fn an_agent_reads_back_its_secret_its_external_flag_and_its_expanded_directory_on(
    store: &(impl TemplateStore + WorkspaceStore + AgentStore + ?Sized),
    org: Uuid,
    user: Uuid,
) {
    let (_, build) = started_workspace(store, org, user).await;
    let token = "dev-chat-token";
    let agent = store
        .insert_agent(
            build.job_id,
            "dev-chat",
            "~/src",
            0,
            &chatstore::identity::token_hash(token),
        )
        .await
        .unwrap();
    // The secret the control plane presents is the workspace's, the one the agent learns.
    let manifest = store.agent_manifest_by_token(token).await.unwrap().unwrap();
    assert_eq!(
        store.agent_secret(agent).await.unwrap(),
        manifest.control_plane_secret
    );
    assert!(!store.agent_is_external(agent).await.unwrap());
    assert!(store.agent_secret(Uuid::new_v4()).await.is_err());
    assert!(store.agent_is_external(Uuid::new_v4()).await.is_err());

    // Until the agent reports it, the expanded directory is empty.
    assert_eq!(store.agent(agent).await.unwrap().expanded_directory, "");
    store
        .agent_heartbeat(agent, &report("http://127.0.0.1:4000"))
        .await
        .unwrap();
    let read = store.agent(agent).await.unwrap();
    assert_eq!(
        (read.directory.as_str(), read.expanded_directory.as_str()),
        ("~/src", "/home/dev")
    );
    assert_eq!(
        store.build_agents(build.id).await.unwrap()[0].expanded_directory,
        "/home/dev"
    );
    // A heartbeat that reports no directory keeps the one reported before.
    store
        .agent_heartbeat(
            agent,
            &chatstore::agents::AgentReport {
                expanded_directory: String::new(),
                ..report("http://127.0.0.1:4000")
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.agent(agent).await.unwrap().expanded_directory,
        "/home/dev"
    );

    // A template version with an externally managed agent makes its builds' agents external.
    let external = store
        .push_template_version(NewTemplateVersion {
            has_external_agent: true,
            ..version(org, user, "outside", true)
        })
        .await
        .unwrap();
    // The first build's job is still pending; finish it, then the import.
    for _ in 0..2 {
        finish_import(store).await;
    }
    let (_, outside_build) = store
        .create_workspace(
            org,
            user,
            external.template_id,
            "outside",
            serde_json::json!([]),
            None,
        )
        .await
        .unwrap();
    let outside = store
        .insert_agent(outside_build.job_id, "laptop", "/", 0, &[2])
        .await
        .unwrap();
    assert!(store.agent_is_external(outside).await.unwrap());
}

#[tokio::test]
async fn the_database_clock_is_the_servers_now() {
    let s = Seeded::new().await;
    let store = PgStore::new(s.pool().clone(), StoreConfig::default());
    let before: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(s.pool())
        .await
        .unwrap();
    let now = store.database_now().await.unwrap();
    let after: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert!(
        before <= now && now <= after,
        "{before} <= {now} <= {after}"
    );
    s.finish().await;
}

#[tokio::test]
async fn the_tool_ledger_records_a_call_once_and_returns_it_on_replay() {
    use chatstore::Store as _;
    use chatstore::types::ToolExecutionState;
    let s = Seeded::new().await;
    let store = PgStore::new(s.pool().clone(), StoreConfig::default());
    let chat = s.chat().await;
    let runner = Uuid::new_v4();
    store
        .acquire(chat, Uuid::new_v4(), runner)
        .await
        .unwrap()
        .unwrap();
    let first = store
        .begin_tool_execution(chat, "call-1", "execute", &[7; 32], Some(runner))
        .await
        .unwrap();
    assert_eq!(first, None, "the first dispatch inserts");
    let replay = store
        .begin_tool_execution(chat, "call-1", "execute", &[7; 32], None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (replay.state, replay.runner_id, replay.result.clone()),
        (ToolExecutionState::Dispatched, Some(runner), None)
    );
    let result = serde_json::json!({"content": "{\"success\":true}", "is_error": false});
    store
        .complete_tool_execution(chat, "call-1", &result)
        .await
        .unwrap();
    let done = store
        .begin_tool_execution(chat, "call-1", "execute", &[7; 32], None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.state, ToolExecutionState::Completed);
    assert_eq!(done.result, Some(result));
    assert!(done.completed_at.is_some());
    assert!(
        store
            .complete_tool_execution(chat, "never", &serde_json::json!({}))
            .await
            .is_err()
    );
    assert!(matches!(
        store
            .begin_tool_execution(Uuid::new_v4(), "x", "execute", &[], None)
            .await
            .unwrap_err(),
        StoreError::ChatNotFound(_)
    ));
    assert_eq!(
        store
            .purge_tool_executions(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store.purge_tool_executions(Duration::ZERO).await.unwrap(),
        1
    );
    s.finish().await;
}

#[tokio::test]
async fn every_replica_reads_the_same_cluster_secret() {
    let s = Seeded::new().await;
    let a = PgStore::new(s.pool().clone(), StoreConfig::default());
    let b = PgStore::new(s.pool().clone(), StoreConfig::default());
    let (first, second) = tokio::join!(a.cluster_secret("relay"), b.cluster_secret("relay"));
    let first = first.unwrap();
    assert_eq!(first, second.unwrap(), "concurrent creators agree");
    assert!(first.len() >= 64, "{first:?}");
    assert_eq!(a.cluster_secret("relay").await.unwrap(), first, "stable");
    assert_ne!(
        a.cluster_secret("other").await.unwrap(),
        first,
        "one per name"
    );
    s.finish().await;
}
