//! The model-facing tools end to end: a chat in the test database (either backend), chatd's provisioner front, the
//! provisioner with the local backend, and real `wsagent` processes reached on loopback.
//! One test per row, text and branch of spec/chattool.md §7–§8 and §10.2.

use chatstore::testing::Fixtures as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chatd_e2e::on_pool;
use chatd_e2e::workspaces::{Dialer, Harness, eventually};
use chatengine::builds::StoreBuilds;
use chatstore::templates::TemplateSettings;
use chatstore::types::Chat;
use chatstore::workspaces::{JobStatus, WorkspaceTransition};
use chattool::builds::{BuildRequestError, ResponseError};
use chattool::conn::{DEFAULT_AGENT_CALL_DEADLINE, Deadlined, Rooted, WorkspaceConn};
use chattool::context::{NO_WORKSPACE, WorkspaceResolver};
use chattool::lifecycle::{CreateWorkspace, StartWorkspace, StopWorkspace};
use chattool::templates::{ListTemplates, ReadTemplate};
use chattool::wait::agent_infos;
use chattool::{ChatScope, Tool, ToolContext, ToolResult, ToolSettings, files, process};
use serde_json::{Value, json};
use uuid::Uuid;

/// Resolves the chat's bound build to its chat agent and dials it (what the engine's resolver
/// does, without the recovery gate).
struct Resolver {
    store: Arc<dyn chatstore::Database>,
    home: Box<dyn Fn(Uuid) -> std::path::PathBuf + Send + Sync>,
}

#[async_trait]
impl WorkspaceResolver for Resolver {
    async fn connect(&self, chat_id: Uuid) -> Result<Arc<dyn WorkspaceConn>, String> {
        let chat = self.store.chat(chat_id).await.map_err(|e| e.to_string())?;
        let (Some(workspace), Some(build)) = (chat.workspace_id, chat.build_id) else {
            return Err(NO_WORKSPACE.into());
        };
        let agents = self
            .store
            .build_agents(build)
            .await
            .map_err(|e| e.to_string())?;
        let infos = agent_infos(&agents);
        let chosen = agentselect::find_chat_agent(&infos, &Default::default())
            .map_err(|e| e.to_string())?
            .id;
        let agent = agents.iter().find(|a| a.id == chosen).unwrap();
        let secret = self
            .store
            .agent_secret(agent.id)
            .await
            .map_err(|e| e.to_string())?;
        let conn =
            wsagent::client::connect_agent(&agent.address, &secret, Duration::from_secs(5), None)
                .await
                .map_err(|e| e.to_string())?;
        Ok(Arc::new(Rooted {
            conn: Deadlined::new(conn, DEFAULT_AGENT_CALL_DEADLINE),
            working_directory: (self.home)(workspace).display().to_string(),
        }))
    }
}

/// How many workspaces the database holds (deleted ones too).
async fn workspace_count(env: &Env) -> i64 {
    on_pool!(env.h.db.pool(), |pool| sqlx::query_scalar(
        "SELECT count(*) FROM workspaces"
    )
    .fetch_one(pool)
    .await
    .unwrap())
}

/// A chat of `ada` and the tool context of its turn.
struct Env {
    h: Harness,
    chat: Uuid,
    ctx: ToolContext,
    bindings: Arc<AtomicUsize>,
}

impl Env {
    async fn new(h: Harness) -> Self {
        let model = h.model("openai", "", "gpt").await;
        let chat = h.chat(model, "make me a workspace").await;
        let mut ctx = ToolContext::new(
            ChatScope {
                id: chat,
                owner_id: h.user,
                organization_id: h.organization,
            },
            "call-1",
        );
        ctx.store = Some(h.store.clone());
        ctx.pubsub = Some(h.pubsub.clone());
        ctx.builds = Some(Arc::new(StoreBuilds::new(h.store.clone())));
        ctx.dialer = Some(Arc::new(Dialer {
            store: h.store.clone(),
        }));
        let backend = h.backend();
        ctx.resolver = Some(Arc::new(Resolver {
            store: h.store.clone(),
            home: Box::new(move |ws| backend.home_dir(ws)),
        }));
        let bindings = Arc::new(AtomicUsize::new(0));
        let seen = bindings.clone();
        ctx.on_binding = Some(Arc::new(move |_: &Chat| {
            seen.fetch_add(1, Ordering::SeqCst);
        }));
        Self {
            h,
            chat,
            ctx,
            bindings,
        }
    }

    async fn call(&self, tool: &dyn Tool, args: Value) -> ToolResult {
        tool.call(&self.ctx, &args.to_string()).await
    }

    /// A JSON result (failing the test on a text error).
    async fn json(&self, tool: &dyn Tool, args: Value) -> Value {
        let r = self.call(tool, args).await;
        assert!(!r.is_error, "{}: {}", tool.name(), r.content);
        r.as_json().unwrap()
    }

    /// A text error (failing the test on a JSON result).
    async fn text(&self, tool: &dyn Tool, args: Value) -> String {
        let r = self.call(tool, args).await;
        assert!(r.is_error, "expected a text error, got {}", r.content);
        r.content
    }

    async fn chat(&self) -> Chat {
        self.h.store.chat(self.chat).await.unwrap()
    }

    /// Plays the provisioner (stopped by the test): takes the next job and fails it with
    /// `error` and `code`.
    async fn fail_next_job(&self, error: &str, code: &str) {
        let job = eventually("a build job", || async {
            self.h.store.acquire_job(Uuid::new_v4()).await.unwrap()
        })
        .await;
        self.h
            .store
            .complete_job(job.id, error, code)
            .await
            .unwrap();
    }

    /// A workspace `dev` of `template` bound to the chat, whose first build stays pending: the
    /// provisioner is stopped until the test starts it again.
    async fn pending_build(&mut self, template: Uuid) -> (Uuid, chatstore::workspaces::Build) {
        self.h.stop_provisioner().await;
        let (workspace, build) = self.h.start_workspace_build(template, "dev").await;
        self.h
            .store
            .bind_workspace(self.chat, workspace, build.id)
            .await
            .unwrap();
        (workspace, build)
    }

    /// This chat's workspace, created by the tool from the `plain` template.
    async fn with_workspace(&self) {
        let template = self.plain_template().await;
        self.json(
            &CreateWorkspace,
            json!({"template_id": template.to_string()}),
        )
        .await;
    }

    async fn plain_template(&self) -> Uuid {
        self.h.template("name = \"plain\"", Vec::new()).await
    }

    async fn finish(self) {
        self.h.finish().await;
    }
}

fn uuid_of(v: &Value) -> Uuid {
    Uuid::parse_str(v.as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn create_workspace_builds_binds_waits_for_readiness_and_execute_then_works() {
    let env = Env::new(Harness::start().await).await;
    let template = env.plain_template().await;
    let r = env
        .json(
            &CreateWorkspace,
            json!({"template_id": template.to_string(), "name": "dev"}),
        )
        .await;
    assert_eq!(r["created"], true);
    assert_eq!(r["workspace_name"], "ada/dev");
    // Ready: no readiness fields.
    for key in [
        "agent_status",
        "agent_error",
        "startup_scripts",
        "lifecycle_state",
    ] {
        assert!(r.get(key).is_none(), "{r}");
    }
    let chat = env.chat().await;
    assert_eq!(chat.build_id, Some(uuid_of(&r["build_id"])));
    assert!(chat.workspace_id.is_some());
    assert!(
        env.bindings.load(Ordering::SeqCst) >= 2,
        "bound before the wait and announced after readiness"
    );

    let out = env
        .json(
            &process::Execute,
            json!({"command": "echo hi > f && cat f"}),
        )
        .await;
    assert_eq!(
        (out["exit_code"].clone(), out["output"].clone()),
        (json!(0), json!("hi\n"))
    );
    let home = env.h.home(chat.workspace_id.unwrap());
    assert_eq!(std::fs::read_to_string(home.join("f")).unwrap(), "hi\n");
    env.finish().await;
}

#[tokio::test]
async fn create_workspace_on_a_running_workspace_reports_it_instead_of_creating_another() {
    let env = Env::new(Harness::start().await).await;
    let template = env.plain_template().await;
    let first = env
        .json(
            &CreateWorkspace,
            json!({"template_id": template.to_string()}),
        )
        .await;
    let again = env
        .json(
            &CreateWorkspace,
            json!({"template_id": template.to_string()}),
        )
        .await;
    assert_eq!(
        again,
        json!({
            "created": false,
            "workspace_name": first["workspace_name"],
            "status": "already_exists",
            "message": "workspace is already running and recently connected",
        })
    );
    env.finish().await;
}

#[tokio::test]
async fn two_concurrent_create_workspace_calls_in_one_turn_create_one_workspace() {
    let env = Env::new(Harness::start().await).await;
    let template = env.plain_template().await;
    let args = json!({"template_id": template.to_string()}).to_string();
    let (a, b) = (env.ctx.for_call("call-a"), env.ctx.for_call("call-b"));
    let (ra, rb) = tokio::join!(
        CreateWorkspace.call(&a, &args),
        CreateWorkspace.call(&b, &args)
    );
    let created: Vec<bool> = [ra, rb]
        .iter()
        .map(|r| r.as_json().unwrap()["created"].as_bool().unwrap())
        .collect();
    assert_eq!(created.iter().filter(|c| **c).count(), 1, "{created:?}");
    let count = workspace_count(&env).await;
    assert_eq!(count, 1);
    env.finish().await;
}

#[tokio::test]
async fn a_name_conflict_is_retried_once_with_a_random_suffix() {
    let env = Env::new(Harness::start().await).await;
    let template = env.plain_template().await;
    // ada already owns a workspace named `dev` (not this chat's).
    env.h.create_workspace(template, "dev").await;
    let r = env
        .json(
            &CreateWorkspace,
            json!({"template_id": template.to_string(), "name": "dev"}),
        )
        .await;
    let name = r["workspace_name"].as_str().unwrap();
    let suffix = name.strip_prefix("ada/dev-").expect(name);
    assert!(
        suffix.len() == 4 && suffix.chars().all(|c| c.is_ascii_hexdigit()),
        "{name}"
    );
    assert_eq!(r["created"], true);
    env.finish().await;
}

#[tokio::test]
async fn a_failed_build_returns_its_error_and_build_id_as_json_and_a_retry_creates_anew() {
    let env = Env::new(Harness::start().await).await;
    let template = env
        .h
        .template(
            "name = \"nobuild\"\n[build]\nscript = \"echo 'missing libfoo' >&2; exit 3\"",
            Vec::new(),
        )
        .await;
    let r = env
        .call(
            &CreateWorkspace,
            json!({"template_id": template.to_string()}),
        )
        .await;
    assert!(!r.is_error, "a JSON result, so build_id survives a replay");
    let v = r.as_json().unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("workspace build failed: "),
        "{v}"
    );
    assert!(
        v["error"].as_str().unwrap().contains("missing libfoo"),
        "{v}"
    );
    let failed = uuid_of(&v["build_id"]);
    assert_eq!(
        env.chat().await.build_id,
        Some(failed),
        "bound before the wait"
    );
    // The failed workspace is not usable: the next create makes a new one.
    let again = env
        .call(
            &CreateWorkspace,
            json!({"template_id": template.to_string()}),
        )
        .await
        .as_json()
        .unwrap();
    assert_ne!(uuid_of(&again["build_id"]), failed);
    env.finish().await;
}

#[tokio::test]
async fn a_build_refused_for_quota_returns_the_quota_result() {
    let mut env = Env::new(Harness::start().await).await;
    let template = env.plain_template().await;
    env.h.stop_provisioner().await;
    let ctx = env.ctx.clone();
    let args = json!({"template_id": template.to_string()}).to_string();
    let call = tokio::spawn(async move { CreateWorkspace.call(&ctx, &args).await });
    // Play the provisioner: refuse the build for quota.
    env.fail_next_job("quota exceeded: 3 of 3 credits used", "INSUFFICIENT_QUOTA")
        .await;
    let v = call.await.unwrap().as_json().unwrap();
    assert_eq!(v["error_code"], "INSUFFICIENT_QUOTA");
    assert_eq!(
        v["error"],
        "workspace build failed: quota exceeded: 3 of 3 credits used"
    );
    assert_eq!(v["title"], "Workspace quota reached");
    assert_eq!(
        v["message"],
        "This workspace could not be created because your workspace quota is full. Delete a workspace you no longer need to free quota, or ask an administrator to raise your group quota allowance."
    );
    assert_eq!(uuid_of(&v["build_id"]), env.chat().await.build_id.unwrap());
    env.h.start_provisioner().await;
    env.finish().await;
}

#[tokio::test]
async fn create_workspace_checks_its_arguments_and_the_template_in_order() {
    let mut env = Env::new(Harness::start().await).await;
    let template = env.plain_template().await;
    let external = env
        .h
        .template("name = \"byo\"\nexternal_agent = true", Vec::new())
        .await;
    let texts = [
        (json!({}), "template_id is required; use list_templates to find one".to_owned()),
        (
            json!({"template_id": "nope"}),
            "invalid template_id: ".to_owned(),
        ),
        (
            json!({"template_id": Uuid::new_v4().to_string()}),
            "look up template: ".to_owned(),
        ),
        (
            json!({"template_id": external.to_string()}),
            "create_workspace cannot create workspaces from templates with externally managed agents. Use list_templates to choose a different template, or if the user wants to use an external workspace, they should create it and start it up fully themselves first, then attach it to this chat".to_owned(),
        ),
        (
            json!({"template_id": template.to_string(), "preset_id": "x"}),
            "invalid preset_id: ".to_owned(),
        ),
        (
            json!({"template_id": 7}),
            "invalid arguments for create_workspace: ".to_owned(),
        ),
    ];
    for (args, expected) in texts {
        let text = env.text(&CreateWorkspace, args.clone()).await;
        assert!(text.starts_with(&expected), "{args}: {text}");
    }
    // Not allowed: outside the allow-list, or not enabled for chats.
    let not_allowed =
        "template not available for chat workspaces; use list_templates to find allowed templates";
    let mut settings = ToolSettings {
        template_allowlist: vec![external],
        ..ToolSettings::default()
    };
    env.ctx.settings = Arc::new(settings.clone());
    assert_eq!(
        env.text(
            &CreateWorkspace,
            json!({"template_id": template.to_string()})
        )
        .await,
        not_allowed
    );
    settings.template_allowlist.clear();
    env.ctx.settings = Arc::new(settings);
    env.h
        .store
        .update_template(
            template,
            TemplateSettings {
                chat_enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        env.text(
            &CreateWorkspace,
            json!({"template_id": template.to_string()})
        )
        .await,
        not_allowed
    );
    // Another organization's template.
    let elsewhere = env.h.store.fixture_organization("elsewhere").await.unwrap();
    on_pool!(env.h.db.pool(), |pool| sqlx::query(
        "UPDATE templates SET organization_id = $2, chat_enabled = true WHERE id = $1"
    )
    .bind(template)
    .bind(elsewhere)
    .execute(pool)
    .await
    .unwrap()
    .rows_affected());
    assert_eq!(
        env.text(
            &CreateWorkspace,
            json!({"template_id": template.to_string()})
        )
        .await,
        "template belongs to a different organization than this chat; use list_templates to find templates in the correct organization"
    );
    let count = workspace_count(&env).await;
    assert_eq!(count, 0, "no refused call created anything");
    env.finish().await;
}

const PARAMETERS_TEMPLATE: &str = r#"
name = "params"
display_name = "With parameters"
description = "  Needs a region.  "
readme = """---
owner: platform
---
# Params

Pick a **region** with [the docs](https://example.com/regions).
"""

[[parameters]]
name = "region"
display_name = "Region"
description = "Where it runs."
options = [{ name = "Europe", value = "eu" }, { name = "US", value = "us", description = "Virginia" }]

[[parameters]]
name = "size"
type = "number"
default = "2"
mutable = true
validation = { min = 1, max = 8 }

[[presets]]
name = "eu-small"
default = true
parameters = { region = "eu", size = "1" }
"#;

#[tokio::test]
async fn parameters_and_presets_are_checked_before_the_build() {
    let env = Env::new(Harness::start().await).await;
    let template = env.h.template(PARAMETERS_TEMPLATE, Vec::new()).await;
    let missing = env
        .json(
            &CreateWorkspace,
            json!({"template_id": template.to_string()}),
        )
        .await;
    assert_eq!(missing["error"], "invalid workspace parameters");
    assert_eq!(
        missing["validations"],
        json!([{"field": "parameters", "detail": "parameter \"region\" is required"}])
    );
    let unknown_preset = env
        .json(
            &CreateWorkspace,
            json!({"template_id": template.to_string(), "preset_id": Uuid::new_v4().to_string()}),
        )
        .await;
    assert_eq!(unknown_preset["validations"][0]["field"], "preset_id");

    let read = env
        .json(&ReadTemplate, json!({"template_id": template.to_string()}))
        .await;
    let preset = read["presets"][0]["id"].as_str().unwrap();
    let created = env
        .json(
            &CreateWorkspace,
            json!({"template_id": template.to_string(), "preset_id": preset, "parameters": {"size": 3}}),
        )
        .await;
    assert_eq!(created["created"], true, "{created}");
    let build = env
        .h
        .store
        .build(uuid_of(&created["build_id"]))
        .await
        .unwrap();
    assert_eq!(
        build.parameters,
        json!([{"name": "region", "value": "eu"}, {"name": "size", "value": "3"}]),
        "the preset, then the given values"
    );
    env.finish().await;
}

#[tokio::test]
async fn stop_and_start_are_idempotent_and_create_on_a_stopped_workspace_says_to_start_it() {
    let env = Env::new(Harness::start().await).await;
    let template = env.plain_template().await;
    assert_eq!(
        env.text(&StartWorkspace, json!({})).await,
        "chat has no workspace; use create_workspace first"
    );
    assert_eq!(
        env.text(&StopWorkspace, json!({})).await,
        "chat has no workspace; use create_workspace first"
    );
    env.json(
        &CreateWorkspace,
        json!({"template_id": template.to_string(), "name": "dev"}),
    )
    .await;
    let started = env.json(&StartWorkspace, json!({})).await;
    assert_eq!(
        started,
        json!({"started": true, "workspace_name": "ada/dev", "no_build": true})
    );

    let stopped = env.json(&StopWorkspace, json!({})).await;
    assert_eq!(stopped["stopped"], true);
    assert_eq!(
        env.chat().await.build_id,
        Some(uuid_of(&stopped["build_id"]))
    );
    assert_eq!(
        env.json(&StopWorkspace, json!({})).await,
        json!({"stopped": true, "workspace_name": "ada/dev", "no_build": true})
    );
    assert_eq!(
        env.json(
            &CreateWorkspace,
            json!({"template_id": template.to_string()})
        )
        .await,
        json!({
            "created": false,
            "workspace_name": "ada/dev",
            "status": "stopped",
            "message": "workspace is stopped; use start_workspace to start it",
        })
    );
    let restarted = env.json(&StartWorkspace, json!({})).await;
    assert_eq!(restarted["started"], true);
    assert!(restarted.get("build_id").is_some(), "{restarted}");
    assert!(restarted.get("updated_to_active_version").is_none());
    let out = env
        .json(&process::Execute, json!({"command": "echo back"}))
        .await;
    assert_eq!(out["output"], "back\n");
    env.finish().await;
}

#[tokio::test]
async fn stop_re_attempts_after_a_failed_stop_build() {
    let mut env = Env::new(Harness::start().await).await;
    env.with_workspace().await;
    env.h.stop_provisioner().await;
    let ctx = env.ctx.clone();
    let call = tokio::spawn(async move { StopWorkspace.call(&ctx, "{}").await });
    env.fail_next_job("the backend could not stop it", "").await;
    let failed = call.await.unwrap().as_json().unwrap();
    assert_eq!(
        failed["error"],
        "workspace stop build failed: the backend could not stop it"
    );
    env.h.start_provisioner().await;
    let stopped = env.json(&StopWorkspace, json!({})).await;
    assert_eq!(stopped["stopped"], true);
    assert_ne!(stopped["build_id"], failed["build_id"], "a new stop build");
    env.finish().await;
}

#[tokio::test]
async fn start_moves_to_the_active_version_when_the_template_requires_it() {
    let env = Env::new(Harness::start().await).await;
    let template = env.h.template("name = \"moving\"", Vec::new()).await;
    env.json(
        &CreateWorkspace,
        json!({"template_id": template.to_string()}),
    )
    .await;
    env.json(&StopWorkspace, json!({})).await;
    // v2 becomes active; v3 (needing a new parameter) is pushed later.
    env.h.template("name = \"moving\"\n# v2", Vec::new()).await;
    env.h
        .store
        .update_template(
            template,
            TemplateSettings {
                require_active_version: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let started = env.json(&StartWorkspace, json!({})).await;
    assert_eq!(started["updated_to_active_version"], true, "{started}");
    assert_eq!(
        started["update_reason"],
        "template requires active versions"
    );
    assert_eq!(
        started["message"],
        "Workspace started and was updated to the active template version because the template requires active versions."
    );
    let active = env
        .h
        .store
        .template(template)
        .await
        .unwrap()
        .active_version_id;
    let build = env
        .h
        .store
        .build(uuid_of(&started["build_id"]))
        .await
        .unwrap();
    assert_eq!(Some(build.template_version_id), active);

    env.json(&StopWorkspace, json!({})).await;
    env.h
        .template(
            "name = \"moving\"\n[[parameters]]\nname = \"team\"",
            Vec::new(),
        )
        .await;
    let refused = env.json(&StartWorkspace, json!({})).await;
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .starts_with("the template requires its active version"),
        "{refused}"
    );
    assert_eq!(refused["template_id"], template.to_string());
    assert_eq!(
        refused["validations"],
        json!([{"field": "parameters", "detail": "parameter \"team\" is required"}])
    );
    let with_team = env
        .json(&StartWorkspace, json!({"parameters": {"team": "core"}}))
        .await;
    assert_eq!(with_team["updated_to_active_version"], true, "{with_team}");
    env.finish().await;
}

#[tokio::test]
async fn templates_are_listed_by_use_and_read_with_readme_parameters_and_presets() {
    let env = Env::new(Harness::start().await).await;
    let plain = env.plain_template().await;
    let params = env.h.template(PARAMETERS_TEMPLATE, Vec::new()).await;
    for i in 0..10 {
        env.h
            .template(&format!("name = \"extra-{i:02}\""), Vec::new())
            .await;
    }
    env.h.create_workspace(plain, "used").await;

    let page1 = env.json(&ListTemplates, json!({})).await;
    assert_eq!(
        (
            page1["count"].clone(),
            page1["total_count"].clone(),
            page1["total_pages"].clone(),
            page1["page"].clone()
        ),
        (json!(10), json!(12), json!(2), json!(1))
    );
    assert_eq!(page1["templates"][0]["name"], "plain", "most used first");
    assert_eq!(page1["templates"][0]["active_developers"], 1);
    assert!(page1["templates"][1].get("active_developers").is_none());
    let page2 = env.json(&ListTemplates, json!({"page": 2})).await;
    assert_eq!(page2["count"], 2);
    assert_eq!(page2["templates"][1]["name"], "params");
    assert_eq!(page2["templates"][1]["description"], "Needs a region.");
    assert_eq!(page2["templates"][1]["display_name"], "With parameters");
    let past = env.json(&ListTemplates, json!({"page": 9})).await;
    assert_eq!(
        (past["count"].clone(), past["templates"].clone()),
        (json!(0), json!([]))
    );
    let zero = env.json(&ListTemplates, json!({"page": 0})).await;
    assert_eq!(zero["page"], 1);
    let found = env.json(&ListTemplates, json!({"query": "  PARAM "})).await;
    assert_eq!(found["total_count"], 1);
    assert_eq!(found["templates"][0]["id"], params.to_string());

    let read = env
        .json(&ReadTemplate, json!({"template_id": params.to_string()}))
        .await;
    let t = &read["template"];
    assert_eq!(t["name"], "params");
    let readme = t["readme"].as_str().unwrap();
    assert!(
        !readme.contains("owner: platform"),
        "front matter removed: {readme}"
    );
    assert!(!readme.contains("**") && !readme.contains('#'), "{readme}");
    assert!(readme.contains("Pick a region"), "{readme}");
    assert_eq!(
        read["parameters_note"],
        "Defaults shown are the values recorded when the template version was imported."
    );
    assert_eq!(
        read["parameters"][0],
        json!({
            "name": "region", "type": "string", "required": true, "mutable": false,
            "display_name": "Region", "description": "Where it runs.",
            "options": [{"name": "Europe", "value": "eu"},
                        {"name": "US", "value": "us", "description": "Virginia"}],
        })
    );
    assert_eq!(read["parameters"][1]["default"], "2");
    assert_eq!(read["parameters"][1]["validation_min"], 1);
    assert_eq!(read["presets"][0]["name"], "eu-small");
    assert_eq!(read["presets"][0]["default"], true);

    for (args, text) in [
        (json!({}), "template_id is required".to_owned()),
        (
            json!({"template_id": Uuid::new_v4().to_string()}),
            "template not found".to_owned(),
        ),
    ] {
        assert_eq!(env.text(&ReadTemplate, args).await, text);
    }
    // The allow-list hides templates from both tools.
    let mut ctx = env.ctx.clone();
    ctx.settings = Arc::new(ToolSettings {
        template_allowlist: vec![plain],
        ..ToolSettings::default()
    });
    let listed = ListTemplates.call(&ctx, "{}").await.as_json().unwrap();
    assert_eq!(listed["total_count"], 1);
    let refused = ReadTemplate
        .call(
            &ctx,
            &json!({"template_id": params.to_string()}).to_string(),
        )
        .await;
    assert_eq!(
        refused.content,
        "template not available for chat workspaces; use list_templates to find allowed templates"
    );
    env.finish().await;
}

#[tokio::test]
async fn a_replayed_execute_never_runs_the_command_twice() {
    let env = Env::new(Harness::start().await).await;
    env.with_workspace().await;
    let workspace = env.chat().await.workspace_id.unwrap();
    let counter = env.h.home(workspace).join("counter");
    let count = || {
        std::fs::read_to_string(&counter)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let args = json!({"command": "echo x >> counter; wc -l < counter"}).to_string();

    // Completed: the recorded result comes back, the agent is not asked.
    let ctx = env.ctx.for_call("exec-1");
    let first = process::Execute.call(&ctx, &args).await;
    let replay = process::Execute.call(&ctx, &args).await;
    assert_eq!(first, replay);
    assert_eq!(count(), 1);

    // Dispatched, and the agent ran it (the runner crashed before recording): the replay
    // finds the process by its key and returns its real result without running it again.
    on_pool!(env.h.db.pool(), |pool| sqlx::query(
        "UPDATE chat_tool_executions SET state = 'dispatched', result = NULL, completed_at = NULL
          WHERE tool_call_id = 'exec-1'"
    )
    .execute(pool)
    .await
    .unwrap()
    .rows_affected());
    let attached = process::Execute.call(&ctx, &args).await.as_json().unwrap();
    assert_eq!(attached["output"], "1\n");
    assert_eq!(count(), 1);

    // Dispatched, and the agent never saw it: the outcome is unknown; nothing runs.
    env.h
        .store
        .begin_tool_execution(
            env.chat,
            "exec-2",
            "execute",
            &chattool::ledger::args_digest(
                &serde_json::from_str::<process::ExecuteArgs>(&args).unwrap(),
            ),
            None,
        )
        .await
        .unwrap();
    let unknown = process::Execute
        .call(&env.ctx.for_call("exec-2"), &args)
        .await
        .as_json()
        .unwrap();
    assert_eq!(
        unknown,
        chattool::ledger::unknown_outcome().as_json().unwrap()
    );
    assert_eq!(count(), 1);

    // The same call id with other arguments is not run either.
    let other = process::Execute
        .call(&ctx, &json!({"command": "echo y >> counter"}).to_string())
        .await
        .as_json()
        .unwrap();
    assert_eq!(other["error"], chattool::ledger::UNKNOWN_OUTCOME);
    assert_eq!(count(), 1);

    // Edits replay the same way; an edit the agent never applied is not applied on replay.
    let edit =
        json!({"edits": [{"path": "counter", "old_text": "x", "new_text": "z"}]}).to_string();
    let edit_ctx = env.ctx.for_call("edit-1");
    let applied = files::EditFiles.call(&edit_ctx, &edit).await;
    assert!(!applied.is_error, "{}", applied.content);
    assert_eq!(files::EditFiles.call(&edit_ctx, &edit).await, applied);
    assert_eq!(std::fs::read_to_string(&counter).unwrap(), "z\n");

    // The ledger answers before the workspace is dialled: completed calls replay their results
    // even when the workspace is unreachable now.
    let unreachable = |call: &str| {
        let mut ctx = env.ctx.for_call(call);
        ctx.resolver = Some(Arc::new(Unreachable));
        ctx
    };
    let replayed = process::Execute.call(&unreachable("exec-1"), &args).await;
    assert_eq!(replayed.as_json().unwrap(), attached);
    assert_eq!(
        files::EditFiles.call(&unreachable("edit-1"), &edit).await,
        applied
    );
    let fresh = process::Execute.call(&unreachable("exec-3"), &args).await;
    assert_eq!(fresh.content, "the workspace is unreachable");
    env.finish().await;
}

/// A workspace that cannot be reached.
struct Unreachable;

#[async_trait]
impl WorkspaceResolver for Unreachable {
    async fn connect(&self, _chat_id: Uuid) -> Result<Arc<dyn WorkspaceConn>, String> {
        Err("the workspace is unreachable".into())
    }
}

#[tokio::test]
async fn execute_with_a_timeout_leaves_the_process_running_and_process_output_gets_the_result() {
    let env = Env::new(Harness::start().await).await;
    env.with_workspace().await;
    let r = env
        .json(
            &process::Execute,
            json!({"command": "sleep 2; echo finished", "timeout": "500ms"}),
        )
        .await;
    assert_eq!(r["exit_code"], -1);
    assert_eq!(r["timed_out"], true);
    assert_eq!(r["still_running"], true);
    assert_eq!(r["error"], "command timed out after 500ms");
    let id = r["background_process_id"].as_str().unwrap().to_owned();
    let done = env
        .json(
            &process::ProcessOutput,
            json!({"process_id": id, "wait_timeout": "10s"}),
        )
        .await;
    assert_eq!(
        (done["exit_code"].clone(), done["output"].clone()),
        (json!(0), json!("finished\n"))
    );
    env.finish().await;
}

#[tokio::test]
async fn create_workspace_waits_for_the_chats_build_in_progress() {
    let mut env = Env::new(Harness::start().await).await;
    let template = env.plain_template().await;
    let (_, build) = env.pending_build(template).await;
    let ctx = env.ctx.clone();
    let args = json!({"template_id": template.to_string()}).to_string();
    let call = tokio::spawn(async move { CreateWorkspace.call(&ctx, &args).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!call.is_finished(), "waiting for the pending build");
    env.h.start_provisioner().await;
    let r = call.await.unwrap().as_json().unwrap();
    assert_eq!(
        r,
        json!({
            "created": false,
            "workspace_name": "ada/dev",
            "status": "already_exists",
            "message": "workspace build completed",
            "build_id": build.id.to_string(),
        })
    );
    env.finish().await;
}

#[tokio::test]
async fn start_and_stop_wait_for_a_build_in_progress_then_act_on_its_outcome() {
    let mut env = Env::new(Harness::start().await).await;
    let template = env.plain_template().await;
    let (workspace, build) = env.pending_build(template).await;
    // start_workspace waits for the pending start build and reports it, without another.
    let ctx = env.ctx.clone();
    let start = tokio::spawn(async move { StartWorkspace.call(&ctx, "{}").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!start.is_finished(), "waiting for the pending build");
    env.h.start_provisioner().await;
    let started = start.await.unwrap().as_json().unwrap();
    assert_eq!(started["started"], true, "{started}");
    assert_eq!(uuid_of(&started["build_id"]), build.id);

    // stop_workspace waits for a pending start build, then stops the workspace.
    let stopped = env.json(&StopWorkspace, json!({})).await;
    assert_eq!(stopped["stopped"], true);
    env.json(&StartWorkspace, json!({})).await;
    env.h.stop_provisioner().await;
    let restart = env
        .h
        .store
        .new_build(
            workspace,
            WorkspaceTransition::Start,
            Some(env.h.user),
            json!([]),
        )
        .await
        .unwrap();
    let ctx = env.ctx.clone();
    let stop = tokio::spawn(async move { StopWorkspace.call(&ctx, "{}").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stop.is_finished(), "waiting for the pending build");
    env.h.start_provisioner().await;
    let stopped = stop.await.unwrap().as_json().unwrap();
    assert_eq!(stopped["stopped"], true, "{stopped}");
    let stop_build = uuid_of(&stopped["build_id"]);
    assert_ne!(
        stop_build, restart.id,
        "a stop build after the start it waited for"
    );
    env.finish().await;
}

#[tokio::test]
async fn a_start_refused_for_quota_returns_the_quota_result() {
    let mut env = Env::new(Harness::start().await).await;
    env.with_workspace().await;
    env.json(&StopWorkspace, json!({})).await;
    env.h.stop_provisioner().await;
    let ctx = env.ctx.clone();
    let start = tokio::spawn(async move { StartWorkspace.call(&ctx, "{}").await });
    env.fail_next_job("quota exceeded: 3 of 3 credits used", "INSUFFICIENT_QUOTA")
        .await;
    let v = start.await.unwrap().as_json().unwrap();
    assert_eq!(v["error_code"], "INSUFFICIENT_QUOTA", "{v}");
    assert_eq!(v["title"], "Workspace quota reached");
    assert!(
        v["message"].as_str().unwrap().starts_with(
            "This workspace could not be started because your workspace quota is full."
        ),
        "{v}"
    );
    env.h.start_provisioner().await;
    env.finish().await;
}

/// Builds that refuse every name as taken.
struct NamesTaken(std::sync::Mutex<Vec<String>>);

#[async_trait]
impl chattool::builds::WorkspaceBuilds for NamesTaken {
    async fn create_workspace(
        &self,
        request: chattool::builds::CreateRequest,
    ) -> Result<
        (
            chatstore::workspaces::Workspace,
            chatstore::workspaces::Build,
        ),
        BuildRequestError,
    > {
        self.0.lock().unwrap().push(request.name);
        Err(BuildRequestError::Response(ResponseError {
            status: 409,
            message: "workspace name already in use".into(),
            detail: String::new(),
            validations: vec![chattool::builds::FieldError {
                field: "name".into(),
                detail: "taken".into(),
            }],
        }))
    }
    async fn start_workspace(
        &self,
        _owner_id: Uuid,
        _workspace_id: Uuid,
        _parameters: std::collections::BTreeMap<String, String>,
    ) -> Result<chatstore::workspaces::Build, BuildRequestError> {
        Err(BuildRequestError::Other("not in this test".into()))
    }
    async fn stop_workspace(
        &self,
        _owner_id: Uuid,
        _workspace_id: Uuid,
    ) -> Result<chatstore::workspaces::Build, BuildRequestError> {
        Err(BuildRequestError::Other("not in this test".into()))
    }
}

#[tokio::test]
async fn a_second_name_conflict_is_reported_not_retried() {
    let mut env = Env::new(Harness::start().await).await;
    let template = env.plain_template().await;
    let taken = Arc::new(NamesTaken(std::sync::Mutex::default()));
    env.ctx.builds = Some(taken.clone());
    let r = env
        .json(
            &CreateWorkspace,
            json!({"template_id": template.to_string(), "name": "dev"}),
        )
        .await;
    assert_eq!(r["error"], "workspace name already in use", "{r}");
    assert_eq!(r["validations"][0]["field"], "name");
    let tried = taken.0.lock().unwrap().clone();
    assert_eq!(tried.len(), 2, "one retry: {tried:?}");
    assert_eq!(tried[0], "dev");
    assert!(tried[1].starts_with("dev-"), "{tried:?}");
    env.finish().await;
}

#[tokio::test]
async fn create_workspace_replaces_a_workspace_whose_agent_is_dead() {
    let mut env = Env::new(Harness::start().await).await;
    env.ctx.settings = Arc::new(ToolSettings {
        agent_inactive_timeout: Duration::from_secs(2),
        ..ToolSettings::default()
    });
    let template = env.plain_template().await;
    env.json(
        &CreateWorkspace,
        json!({"template_id": template.to_string(), "name": "first"}),
    )
    .await;
    let first = env.chat().await.workspace_id.unwrap();
    let pid = env.h.backend().agent_pid(first).unwrap();
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("the agent to count as disconnected", || async {
        let agent = env.h.agent(first).await;
        matches!(
            chatstore::agents::connection_status(
                &agent.times,
                chrono::Utc::now(),
                Duration::from_secs(2)
            ),
            chatstore::agents::ConnectionStatus::Disconnected { .. }
        )
        .then_some(())
    })
    .await;
    let r = env
        .json(
            &CreateWorkspace,
            json!({"template_id": template.to_string(), "name": "second"}),
        )
        .await;
    assert_eq!(
        (r["created"].clone(), r["workspace_name"].clone()),
        (json!(true), json!("ada/second"))
    );
    assert_ne!(env.chat().await.workspace_id, Some(first));
    env.finish().await;
}

#[tokio::test]
async fn an_immutable_parameter_cannot_change_on_start() {
    let env = Env::new(Harness::start().await).await;
    let template = env.h.template(PARAMETERS_TEMPLATE, Vec::new()).await;
    env.json(
        &CreateWorkspace,
        json!({"template_id": template.to_string(), "parameters": {"region": "eu"}}),
    )
    .await;
    env.json(&StopWorkspace, json!({})).await;
    let refused = env
        .json(&StartWorkspace, json!({"parameters": {"region": "us"}}))
        .await;
    assert_eq!(
        refused["validations"][0]["detail"],
        "parameter \"region\" is immutable and cannot be changed after creation"
    );
    assert_eq!(refused["template_id"], template.to_string());
    // A mutable one can; the rest carries over.
    let started = env
        .json(&StartWorkspace, json!({"parameters": {"size": "4"}}))
        .await;
    let build = env
        .h
        .store
        .build(uuid_of(&started["build_id"]))
        .await
        .unwrap();
    assert_eq!(
        build.parameters,
        json!([{"name": "region", "value": "eu"}, {"name": "size", "value": "4"}])
    );
    env.finish().await;
}

#[tokio::test]
async fn an_existing_workspace_whose_agent_is_still_connecting_gets_full_readiness() {
    let mut env = Env::new(Harness::start().await).await;
    env.ctx.settings = Arc::new(ToolSettings {
        waits: chattool::wait::WaitSettings {
            agent_connect_timeout: Duration::from_millis(600),
            dial_retry_interval: Duration::from_millis(200),
            ..Default::default()
        },
        ..ToolSettings::default()
    });
    // An externally managed agent: its row exists, nobody runs it, so it stays `connecting`.
    let external = env
        .h
        .template(
            "name = \"byo\"\nexternal_agent = true\n[agent]\nconnection_timeout = \"10m\"",
            Vec::new(),
        )
        .await;
    let (workspace, job) = env.h.create_workspace(external, "mine").await;
    assert_eq!(job.status, JobStatus::Succeeded, "{}", job.error);
    let build = env.h.store.latest_build(workspace).await.unwrap().unwrap();
    env.h
        .store
        .bind_workspace(env.chat, workspace, build.id)
        .await
        .unwrap();
    let r = env
        .json(
            &CreateWorkspace,
            json!({"template_id": external.to_string()}),
        )
        .await;
    assert_eq!(
        r,
        json!({
            "created": false,
            "workspace_name": "ada/mine",
            "status": "already_exists",
            "message": "workspace exists and the agent is still connecting",
            "agent_status": "not_ready",
            "agent_error": chattool::wait::EXTERNAL_AGENT_NOT_CONNECTED,
        })
    );
    env.finish().await;
}

/// A user's workspaces in an organization are capped: past the cap the request is refused (429,
/// RESOURCE_EXHAUSTED at the API).
#[tokio::test]
async fn a_users_workspaces_are_capped_per_organization() {
    use chattool::builds::{BuildRequestError, CreateRequest, WorkspaceBuilds as _};
    let h = Harness::start().await;
    let template = h.template("name = \"plain\"", Vec::new()).await;
    let builds = StoreBuilds::new(h.store.clone()).with_max_workspaces(1);
    let request = |name: &str| CreateRequest {
        organization_id: h.organization,
        owner_id: h.user,
        template_id: template,
        name: name.into(),
        parameters: Default::default(),
        preset_id: None,
        ttl: None,
    };
    builds.create_workspace(request("one")).await.unwrap();
    match builds.create_workspace(request("two")).await {
        Err(BuildRequestError::Response(refused)) => {
            assert_eq!(refused.status, 429);
            assert!(
                refused.message.contains("workspace quota reached"),
                "{}",
                refused.message
            );
        }
        other => panic!("expected the quota refusal, got {other:?}"),
    }
    h.finish().await;
}
