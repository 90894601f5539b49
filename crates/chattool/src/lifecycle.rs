//! `create_workspace`, `start_workspace`, `stop_workspace` (spec/chattool.md §8, §2.3–§2.6, §4–§6).
//!
//! All three hold the chat's workspace mutex for their whole run (§2.5), bind the chat to every
//! build they start before waiting for it (§2.6), wait on notifications ([`crate::wait`]) and
//! report build failures as JSON with `build_id` so the id survives a replay of the history.
//!
//! | Tool | Arguments | Result fields |
//! |---|---|---|
//! | `create_workspace` | `template_id`, `name`?, `parameters`?, `preset_id`? | `created`, `workspace_name`, `build_id`, `status`?, `message`?, readiness fields |
//! | `start_workspace` | `parameters`? | `started`, `workspace_name`, `build_id` or `no_build`, readiness fields, `updated_to_active_version`?, `update_reason`?, `message`? |
//! | `stop_workspace` | — | `stopped`, `workspace_name`, `build_id` or `no_build` |
//!
//! Readiness fields: `agent_status`, `agent_error`, `startup_scripts`, `lifecycle_state`
//! ([`crate::wait::Readiness`]). Failures: `{"error", "build_id"}`, the quota result
//! ([`quota_result`]), or the provisioner's refusal (`{"error", "detail"?, "validations"?}`).

use chatstore::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chatstore::agents::{ConnectionStatus, connection_status};
use chatstore::workspaces::{Build, JobStatus, Workspace, WorkspaceTransition};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::builds::{BuildRequestError, CreateRequest, WorkspaceBuilds};
use crate::templates::NOT_ALLOWED;
use crate::tool::TypedTool;
use crate::wait::{AgentDialer, BuildWaitError, Phases, Readiness, Selection, Waits};
use crate::{ToolContext, ToolResult};

/// The job error code of a build refused for quota (§6).
pub const INSUFFICIENT_QUOTA: &str = "INSUFFICIENT_QUOTA";

/// Which action a quota failure blocked (§6 `message`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaAction {
    /// `create_workspace`.
    Create,
    /// `start_workspace` (and an existing build `create_workspace` waited for).
    Start,
}

/// The quota-failure result (§6).
pub fn quota_result(error: &str, build_id: Uuid, action: QuotaAction) -> ToolResult {
    let verb = match action {
        QuotaAction::Create => "could not be created",
        QuotaAction::Start => "could not be started",
    };
    ToolResult::json(&json!({
        "error_code": INSUFFICIENT_QUOTA,
        "error": error,
        "title": "Workspace quota reached",
        "message": format!("This workspace {verb} because your workspace quota is full. Delete a workspace you no longer need to free quota, or ask an administrator to raise your group quota allowance."),
        "build_id": build_id.to_string(),
    }))
}

/// A failed build wait as the model sees it: `{"error": "<prefix>: <cause>", "build_id"}`, or
/// the quota result when the job says so and `quota` names the action.
fn build_failure(
    prefix: &str,
    err: &BuildWaitError,
    build_id: Uuid,
    quota: Option<QuotaAction>,
) -> ToolResult {
    let error = format!("{prefix}: {err}");
    if let (Some(action), BuildWaitError::Failed { code, .. }) = (quota, err)
        && code == INSUFFICIENT_QUOTA
    {
        return quota_result(&error, build_id, action);
    }
    ToolResult::json(&json!({"error": error, "build_id": build_id.to_string()}))
}

const ADJECTIVES: [&str; 8] = [
    "brave", "calm", "eager", "fuzzy", "gentle", "lucky", "quiet", "swift",
];
const NOUNS: [&str; 8] = [
    "otter", "falcon", "maple", "comet", "harbor", "lynx", "willow", "badger",
];

/// Generates a workspace name from a seed (§8.1): lower-cased, runs of other characters as `-`,
/// hyphens trimmed, `workspace` when empty, cut to 27 characters, then `-` and 4 random hex
/// digits; an `adjective-noun` name if that is still invalid.
///
/// ```
/// let name = chattool::lifecycle::generate_name("Fun Dashboard!");
/// assert!(name.starts_with("fun-dashboard-") && name.len() == "fun-dashboard-".len() + 4);
/// ```
pub fn generate_name(seed: &str) -> String {
    let mut base = String::new();
    for c in seed.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            base.push(c);
        } else if !base.ends_with('-') {
            base.push('-');
        }
    }
    let mut base = base.trim_matches('-').to_owned();
    if base.is_empty() {
        base = "workspace".into();
    }
    base.truncate(27);
    let base = base.trim_end_matches('-');
    let random = Uuid::new_v4().simple().to_string();
    let name = format!("{base}-{}", &random[..4]);
    if chatstore::workspaces::valid_name(&name) {
        return name;
    }
    let bytes = Uuid::new_v4().into_bytes();
    format!(
        "{}-{}",
        ADJECTIVES[usize::from(bytes[0]) % ADJECTIVES.len()],
        NOUNS[usize::from(bytes[1]) % NOUNS.len()]
    )
}

/// Parameter values: strings (numbers and booleans are accepted and written as text).
#[derive(Debug, Default, JsonSchema)]
#[schemars(transparent)]
pub struct ParameterValues(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for ParameterValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Option::<BTreeMap<String, Value>>::deserialize(d)?.unwrap_or_default();
        let mut out = BTreeMap::new();
        for (name, value) in raw {
            let text = match value {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(serde::de::Error::custom(format!(
                        "parameters.{name} must be a string, not {other}"
                    )));
                }
            };
            out.insert(name, text);
        }
        Ok(Self(out))
    }
}

/// Arguments of `create_workspace`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspaceArgs {
    /// The template to create from (a UUID from list_templates).
    #[serde(default)]
    pub template_id: String,
    /// Workspace name: 1–32 letters and digits in runs separated by single hyphens; generated
    /// from the template name when empty or invalid.
    #[serde(default)]
    pub name: Option<String>,
    /// Parameter values by name (see read_template).
    #[serde(default)]
    pub parameters: ParameterValues,
    /// A preset of the template's active version (see read_template).
    #[serde(default)]
    pub preset_id: Option<String>,
}

/// Arguments of `start_workspace`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartWorkspaceArgs {
    /// Parameter values for the start build (mutable parameters only).
    #[serde(default)]
    pub parameters: ParameterValues,
}

/// Arguments of `stop_workspace`: none.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopWorkspaceArgs {}

/// A dialer for deployments without one: phase 1 is skipped (phase 2 still runs).
struct NoDial;

#[async_trait]
impl AgentDialer for NoDial {
    async fn dial(&self, _agent: &chatstore::agents::Agent) -> Result<(), String> {
        Ok(())
    }
}

/// What the lifecycle tools need, checked up front.
struct Services {
    store: Arc<dyn Database>,
    builds: Arc<dyn WorkspaceBuilds>,
    waits: Waits,
    dialer: Arc<dyn AgentDialer>,
}

impl Services {
    /// The services, or the tool's "not configured" texts.
    fn of(ctx: &ToolContext, not_configured: &str, improper: &str) -> Result<Self, ToolResult> {
        ctx.check_lease()?;
        let builds = ctx
            .builds
            .clone()
            .ok_or_else(|| ToolResult::error(not_configured))?;
        let (Some(store), Some(waits)) = (ctx.store.clone(), ctx.waits()) else {
            return Err(ToolResult::error(improper));
        };
        Ok(Self {
            store,
            builds,
            waits,
            dialer: ctx.dialer.clone().unwrap_or_else(|| Arc::new(NoDial)),
        })
    }

    /// `<owner>/<name>` (the bare name if the owner cannot be read).
    async fn display_name(&self, workspace: &Workspace) -> String {
        match self.store.username(workspace.owner_id).await {
            Ok(owner) => format!("{owner}/{}", workspace.name),
            Err(_) => workspace.name.clone(),
        }
    }

    /// Binds the chat to the build and tells the listener (§2.6). A failed binding is logged:
    /// the build goes on, and the next workspace tool call resolves the workspace again.
    async fn bind(&self, ctx: &ToolContext, workspace_id: Uuid, build_id: Uuid) {
        match self
            .store
            .bind_workspace(ctx.chat.id, workspace_id, build_id)
            .await
        {
            Ok(chat) => ctx.binding_changed(&chat),
            Err(e) => {
                tracing::warn!(chat = %ctx.chat.id, build = %build_id, error = %e, "binding the chat to its build failed");
            }
        }
    }

    /// Publishes the watch event again after readiness (§2.6).
    async fn announce(&self, ctx: &ToolContext) {
        if let Ok(chat) = self.store.chat(ctx.chat.id).await {
            ctx.binding_changed(&chat);
        }
    }

    /// Whether the build's template version has externally managed agents.
    async fn external(&self, build: &Build) -> bool {
        self.store
            .template_version(build.template_version_id)
            .await
            .is_ok_and(|v| v.has_external_agent)
    }

    /// Readiness of `build` (§5); `running` = the workspace was already running, so a failed
    /// agent selection falls back to the first agent (§8.1).
    async fn readiness(
        &self,
        ctx: &ToolContext,
        build: &Build,
        phases: Phases,
        running: bool,
    ) -> Readiness {
        let external = self.external(build).await;
        let suffix = &ctx.settings.chat_suffix;
        let selection = if running {
            Selection::FirstOnError(suffix)
        } else {
            Selection::Strict(suffix)
        };
        self.waits
            .readiness(build.id, selection, phases, external, self.dialer.as_ref())
            .await
    }
}

/// The chat's workspace with its latest build and that build's job status, read with the
/// lookup texts of §8.2.
struct Current {
    workspace: Workspace,
    latest: Option<(Build, JobStatus)>,
}

/// Reads the chat's bound workspace: `Ok(None)` when the chat has none.
async fn current(store: &dyn Database, chat_id: Uuid) -> Result<Option<Current>, ToolResult> {
    let chat = store
        .chat(chat_id)
        .await
        .map_err(|e| ToolResult::error(format!("load chat: {e}")))?;
    let Some(workspace_id) = chat.workspace_id else {
        return Ok(None);
    };
    let workspace = store
        .workspace(workspace_id)
        .await
        .map_err(|e| ToolResult::error(format!("load workspace: {e}")))?;
    let latest = match store
        .latest_build(workspace_id)
        .await
        .map_err(|e| ToolResult::error(format!("get latest build: {e}")))?
    {
        None => None,
        Some(build) => {
            let job = store
                .job(build.job_id)
                .await
                .map_err(|e| ToolResult::error(format!("get provisioner job: {e}")))?;
            Some((build, job.status))
        }
    };
    Ok(Some(Current { workspace, latest }))
}

fn in_progress(status: JobStatus) -> bool {
    !status.is_terminal()
}

/// A JSON object result.
fn object(fields: Map<String, Value>) -> ToolResult {
    ToolResult::json(&Value::Object(fields))
}

/// Adds the readiness fields to a result.
fn with_readiness(mut fields: Map<String, Value>, readiness: &Readiness) -> Map<String, Value> {
    if let Ok(Value::Object(extra)) = serde_json::to_value(readiness) {
        fields.extend(extra);
    }
    fields
}

fn provision_error(
    e: BuildRequestError,
    text_prefix: &str,
    template_id: Option<Uuid>,
) -> ToolResult {
    match e {
        BuildRequestError::Response(response) => {
            let mut fields = response.to_json();
            if let Some(id) = template_id {
                fields.insert("template_id".into(), id.to_string().into());
            }
            object(fields)
        }
        BuildRequestError::Other(text) => ToolResult::error(format!("{text_prefix}: {text}")),
    }
}

/// `create_workspace`.
#[derive(Debug, Default)]
pub struct CreateWorkspace;

/// How the existing-workspace check (§8.1 step 3) ended.
enum Existing {
    /// Go on and create a new workspace.
    Create,
    /// The chat's workspace answers the call.
    Done(ToolResult),
}

impl CreateWorkspace {
    async fn existing(&self, ctx: &ToolContext, s: &Services) -> Result<Existing, ToolResult> {
        let Some(Current { workspace, latest }) = current(s.store.as_ref(), ctx.chat.id).await?
        else {
            return Ok(Existing::Create);
        };
        if workspace.deleted {
            return Ok(Existing::Create);
        }
        let Some((build, status)) = latest else {
            return Ok(Existing::Create);
        };
        let name = s.display_name(&workspace).await;
        let exists = |message: &str| {
            let mut fields = Map::new();
            fields.insert("created".into(), false.into());
            fields.insert("workspace_name".into(), name.clone().into());
            fields.insert("status".into(), "already_exists".into());
            fields.insert("message".into(), message.into());
            fields
        };
        if in_progress(status) {
            s.bind(ctx, workspace.id, build.id).await;
            if let Err(e) = s.waits.build(build.id).await {
                return Ok(Existing::Done(build_failure(
                    "existing workspace build failed",
                    &e,
                    build.id,
                    Some(QuotaAction::Start),
                )));
            }
            let readiness = s.readiness(ctx, &build, Phases::Both, false).await;
            s.announce(ctx).await;
            let mut fields = exists("workspace build completed");
            fields.insert("build_id".into(), build.id.to_string().into());
            return Ok(Existing::Done(object(with_readiness(fields, &readiness))));
        }
        if status != JobStatus::Succeeded {
            return Ok(Existing::Create);
        }
        match build.transition {
            WorkspaceTransition::Stop => Ok(Existing::Done(ToolResult::json(&json!({
                "created": false,
                "workspace_name": name,
                "status": "stopped",
                "message": "workspace is stopped; use start_workspace to start it",
            })))),
            WorkspaceTransition::Delete => Ok(Existing::Create),
            WorkspaceTransition::Start => {
                let Ok(agents) = s.store.build_agents(build.id).await else {
                    return Ok(Existing::Create);
                };
                let chosen = Selection::FirstOnError(&ctx.settings.chat_suffix).choose(&agents);
                let Ok(Some(agent)) = chosen else {
                    return Ok(Existing::Create);
                };
                let (message, phases) = match connection_status(
                    &agent.times,
                    chrono::Utc::now(),
                    ctx.settings.agent_inactive_timeout,
                ) {
                    ConnectionStatus::Connected => (
                        "workspace is already running and recently connected",
                        Phases::StartupOnly,
                    ),
                    ConnectionStatus::Connecting => (
                        "workspace exists and the agent is still connecting",
                        Phases::Both,
                    ),
                    ConnectionStatus::Disconnected { .. } | ConnectionStatus::Timeout => {
                        return Ok(Existing::Create);
                    }
                };
                let readiness = s.readiness(ctx, &build, phases, true).await;
                Ok(Existing::Done(object(with_readiness(
                    exists(message),
                    &readiness,
                ))))
            }
        }
    }
}

#[async_trait]
impl TypedTool for CreateWorkspace {
    type Args = CreateWorkspaceArgs;
    const NAME: &'static str = "create_workspace";
    const DESCRIPTION: &'static str = "Create a workspace for this chat from a template and wait until its agent is ready. A chat \
         has at most one usable workspace: when it already has one, this reports it instead (a \
         stopped one must be started with start_workspace). Use list_templates and read_template \
         first to choose the template, its parameters and presets.";

    async fn run(
        &self,
        ctx: &ToolContext,
        args: CreateWorkspaceArgs,
    ) -> Result<ToolResult, ToolResult> {
        let s = Services::of(
            ctx,
            "workspace creator is not configured",
            "create_workspace is not properly configured",
        )?;
        let _held = ctx.workspace_lock.lock().await;
        if let Existing::Done(result) = self.existing(ctx, &s).await? {
            return Ok(result);
        }

        let template_text = args.template_id.trim();
        if template_text.is_empty() {
            return Err(ToolResult::error(
                "template_id is required; use list_templates to find one",
            ));
        }
        let template_id = Uuid::parse_str(template_text)
            .map_err(|e| ToolResult::error(format!("invalid template_id: {e}")))?;
        let not_allowed = || ToolResult::error(NOT_ALLOWED);
        // The allow-list is checked before the lookup; `chat_enabled` needs the row.
        if !ctx.settings.listed(template_id) {
            return Err(not_allowed());
        }
        let template = s
            .store
            .template(template_id)
            .await
            .map_err(|e| ToolResult::error(format!("look up template: {e}")))?;
        if template.deleted {
            return Err(ToolResult::error(format!(
                "look up template: template {template_id} not found"
            )));
        }
        if !ctx.settings.allows(&template) {
            return Err(not_allowed());
        }
        if template.organization_id != ctx.chat.organization_id {
            return Err(ToolResult::error(
                "template belongs to a different organization than this chat; use list_templates to find templates in the correct organization",
            ));
        }
        let active = match template.active_version_id {
            Some(id) => s
                .store
                .template_version(id)
                .await
                .map_err(|e| ToolResult::error(format!("look up template: {e}")))?,
            None => {
                return Err(ToolResult::error(
                    "look up template: the template has no active version",
                ));
            }
        };
        if active.has_external_agent {
            return Err(ToolResult::error(
                "create_workspace cannot create workspaces from templates with externally managed agents. Use list_templates to choose a different template, or if the user wants to use an external workspace, they should create it and start it up fully themselves first, then attach it to this chat",
            ));
        }
        let preset_id = match args.preset_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(
                Uuid::parse_str(text)
                    .map_err(|e| ToolResult::error(format!("invalid preset_id: {e}")))?,
            ),
        };
        let ttl = ctx.settings.workspace_ttl.filter(|t| !t.is_zero());
        let wanted = args.name.as_deref().map(str::trim).unwrap_or_default();
        let name = if wanted.is_empty() {
            generate_name(&template.name)
        } else if chatstore::workspaces::valid_name(wanted) {
            wanted.to_owned()
        } else {
            generate_name(wanted)
        };
        let request = CreateRequest {
            organization_id: ctx.chat.organization_id,
            owner_id: ctx.chat.owner_id,
            template_id,
            name: name.clone(),
            parameters: args.parameters.0,
            preset_id,
            ttl,
        };
        let created = match s.builds.create_workspace(request.clone()).await {
            Err(BuildRequestError::Response(e)) if e.is_conflict_on("name") => {
                // One retry with a random suffix; a second conflict is reported.
                s.builds
                    .create_workspace(CreateRequest {
                        name: generate_name(&name),
                        ..request
                    })
                    .await
            }
            other => other,
        };
        let (workspace, build) =
            created.map_err(|e| provision_error(e, "create workspace", None))?;
        s.bind(ctx, workspace.id, build.id).await;
        if let Err(e) = s.waits.build(build.id).await {
            return Ok(build_failure(
                "workspace build failed",
                &e,
                build.id,
                Some(QuotaAction::Create),
            ));
        }
        let readiness = s.readiness(ctx, &build, Phases::Both, false).await;
        s.announce(ctx).await;
        let mut fields = Map::new();
        fields.insert("created".into(), true.into());
        fields.insert(
            "workspace_name".into(),
            s.display_name(&workspace).await.into(),
        );
        fields.insert("build_id".into(), build.id.to_string().into());
        Ok(object(with_readiness(fields, &readiness)))
    }
}

/// Loads the chat's workspace for start/stop: the §8.2 texts when there is none or it is gone.
async fn bound_workspace(s: &Services, ctx: &ToolContext) -> Result<Current, ToolResult> {
    let current = current(s.store.as_ref(), ctx.chat.id)
        .await?
        .ok_or_else(|| ToolResult::error("chat has no workspace; use create_workspace first"))?;
    if current.workspace.deleted {
        return Err(ToolResult::error(
            "workspace was deleted; use create_workspace to make a new one",
        ));
    }
    Ok(current)
}

/// `start_workspace`.
#[derive(Debug, Default)]
pub struct StartWorkspace;

#[async_trait]
impl TypedTool for StartWorkspace {
    type Args = StartWorkspaceArgs;
    const NAME: &'static str = "start_workspace";
    const DESCRIPTION: &'static str = "Start this chat's stopped workspace and wait until its agent is ready. Also use it after \
         stop_workspace when the workspace agent stopped answering. Does nothing when the \
         workspace is already running.";

    async fn run(
        &self,
        ctx: &ToolContext,
        args: StartWorkspaceArgs,
    ) -> Result<ToolResult, ToolResult> {
        let s = Services::of(
            ctx,
            "workspace starter is not configured",
            "start_workspace is not properly configured",
        )?;
        let _held = ctx.workspace_lock.lock().await;
        let Current { workspace, latest } = bound_workspace(&s, ctx).await?;
        let name = s.display_name(&workspace).await;
        let mut fields = Map::new();
        fields.insert("started".into(), true.into());
        fields.insert("workspace_name".into(), name.into());
        let build = match latest {
            Some((build, status)) if in_progress(status) => {
                s.bind(ctx, workspace.id, build.id).await;
                if let Err(e) = s.waits.build(build.id).await {
                    return Ok(build_failure(
                        "waiting for in-progress build",
                        &e,
                        build.id,
                        None,
                    ));
                }
                fields.insert("build_id".into(), build.id.to_string().into());
                build
            }
            Some((build, JobStatus::Succeeded))
                if build.transition == WorkspaceTransition::Start =>
            {
                fields.insert("no_build".into(), true.into());
                build
            }
            previous => {
                let template = s.store.template(workspace.template_id).await.ok();
                let build = s
                    .builds
                    .start_workspace(ctx.chat.owner_id, workspace.id, args.parameters.0)
                    .await
                    .map_err(|e| {
                        provision_error(e, "start workspace", Some(workspace.template_id))
                    })?;
                s.bind(ctx, workspace.id, build.id).await;
                if let Err(e) = s.waits.build(build.id).await {
                    return Ok(build_failure(
                        "workspace start build failed",
                        &e,
                        build.id,
                        Some(QuotaAction::Start),
                    ));
                }
                fields.insert("build_id".into(), build.id.to_string().into());
                let moved = previous
                    .is_some_and(|(prev, _)| prev.template_version_id != build.template_version_id);
                if moved && template.is_some_and(|t| t.require_active_version) {
                    fields.insert("updated_to_active_version".into(), true.into());
                    fields.insert(
                        "update_reason".into(),
                        "template requires active versions".into(),
                    );
                    fields.insert("message".into(), "Workspace started and was updated to the active template version because the template requires active versions.".into());
                }
                build
            }
        };
        let readiness = s.readiness(ctx, &build, Phases::Both, false).await;
        s.announce(ctx).await;
        Ok(object(with_readiness(fields, &readiness)))
    }
}

/// `stop_workspace`.
#[derive(Debug, Default)]
pub struct StopWorkspace;

#[async_trait]
impl TypedTool for StopWorkspace {
    type Args = StopWorkspaceArgs;
    const NAME: &'static str = "stop_workspace";
    const DESCRIPTION: &'static str = "Stop this chat's workspace: running processes end, files stay. Start it again with \
         start_workspace. Does nothing when it is already stopped.";

    async fn run(
        &self,
        ctx: &ToolContext,
        _args: StopWorkspaceArgs,
    ) -> Result<ToolResult, ToolResult> {
        let s = Services::of(
            ctx,
            "workspace stopper is not configured",
            "stop_workspace is not properly configured",
        )?;
        let _held = ctx.workspace_lock.lock().await;
        let Current {
            mut workspace,
            mut latest,
        } = bound_workspace(&s, ctx).await?;
        if let Some((build, status)) = &latest
            && in_progress(*status)
        {
            if let Err(e) = s.waits.build(build.id).await {
                let finished = s
                    .store
                    .job(build.job_id)
                    .await
                    .is_ok_and(|j| j.status.is_terminal());
                if !finished {
                    return Ok(build_failure(
                        "waiting for in-progress build",
                        &e,
                        build.id,
                        None,
                    ));
                }
            }
            let again = bound_workspace(&s, ctx).await?;
            workspace = again.workspace;
            latest = again.latest;
        }
        let name = s.display_name(&workspace).await;
        if let Some((build, JobStatus::Succeeded)) = &latest
            && build.transition == WorkspaceTransition::Stop
        {
            return Ok(ToolResult::json(&json!({
                "stopped": true,
                "workspace_name": name,
                "no_build": true,
            })));
        }
        let build = s
            .builds
            .stop_workspace(ctx.chat.owner_id, workspace.id)
            .await
            .map_err(|e| provision_error(e, "stop workspace", None))?;
        s.bind(ctx, workspace.id, build.id).await;
        if let Err(e) = s.waits.build(build.id).await {
            return Ok(build_failure(
                "workspace stop build failed",
                &e,
                build.id,
                None,
            ));
        }
        s.announce(ctx).await;
        Ok(ToolResult::json(&json!({
            "stopped": true,
            "workspace_name": name,
            "build_id": build.id.to_string(),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_valid_and_keep_the_seed() {
        for (seed, prefix) in [
            ("fun-dashboard", "fun-dashboard-"),
            ("My  Project!!", "my-project-"),
            ("", "workspace-"),
            ("---", "workspace-"),
            ("Ünïcode", "n-code-"),
            (
                "a-very-long-template-name-that-goes-on",
                "a-very-long-template-name-t-",
            ),
            (
                "abcdefghijklmnopqrstuvwxyz-abc",
                "abcdefghijklmnopqrstuvwxyz-",
            ),
        ] {
            let name = generate_name(seed);
            assert!(
                chatstore::workspaces::valid_name(&name),
                "{seed:?} → {name}"
            );
            let (head, tail) = name.split_at(name.len() - 4);
            assert_eq!(
                head,
                prefix.trim_end_matches('-').to_owned() + "-",
                "{seed:?}"
            );
            assert!(
                tail.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
    }

    #[test]
    fn quota_failures_name_the_action_and_keep_the_build() {
        let build = Uuid::nil();
        let failed = BuildWaitError::Failed {
            message: "quota exceeded".into(),
            code: INSUFFICIENT_QUOTA.into(),
        };
        let r = build_failure(
            "workspace build failed",
            &failed,
            build,
            Some(QuotaAction::Create),
        );
        let v = r.as_json().unwrap_or_default();
        assert_eq!(v["error_code"], INSUFFICIENT_QUOTA);
        assert_eq!(v["error"], "workspace build failed: quota exceeded");
        assert_eq!(v["title"], "Workspace quota reached");
        assert!(
            v["message"]
                .as_str()
                .unwrap_or_default()
                .contains("could not be created")
        );
        assert_eq!(v["build_id"], build.to_string());
        assert!(v.get("next_steps").is_none());
        // The stop path is not quota-aware.
        let v = build_failure("workspace stop build failed", &failed, build, None)
            .as_json()
            .unwrap_or_default();
        assert_eq!(
            v,
            json!({"error": "workspace stop build failed: quota exceeded", "build_id": build.to_string()})
        );
        let v = build_failure(
            "x",
            &BuildWaitError::Canceled,
            build,
            Some(QuotaAction::Start),
        )
        .as_json()
        .unwrap_or_default();
        assert_eq!(v["error"], "x: build was canceled");
    }

    #[test]
    fn parameter_values_accept_scalars_as_text() {
        let v: CreateWorkspaceArgs = serde_json::from_str(
            r#"{"template_id": "x", "parameters": {"cpu": 2, "gpu": false, "region": "eu"}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.parameters.0["cpu"], "2");
        assert_eq!(v.parameters.0["gpu"], "false");
        let e = serde_json::from_str::<CreateWorkspaceArgs>(r#"{"parameters": {"cpu": [1]}}"#)
            .unwrap_err();
        assert!(
            e.to_string().contains("parameters.cpu must be a string"),
            "{e}"
        );
    }
}
