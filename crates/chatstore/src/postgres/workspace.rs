//! The workspace side of `PgStore`: tenancy, templates, workspaces, builds, jobs, agents and the
//! replica registry. Job and agent changes notify inside their transaction (delivered on commit).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use super::PgStore;
use super::admin::{self, like_pattern};
use crate::StoreError;
use crate::admin::{
    ApiToken, ModelConfigChanges, ModelConfigRecord, NewModelConfig, NewUser, NewestFirstCursor,
    Organization, Seeded, User, UserChanges, UserListQuery,
};
use crate::pubsub::{AGENT_CHANNEL, AgentUpdate, JOB_CHANNEL, JobUpdate};
use crate::workspace::{
    Agent, AgentLifecycle, AgentManifest, AgentReport, AgentTimes, Bootstrapped, Build, Caller,
    Job, JobLog, JobStatus, MAX_AGENT_LOG_BYTES, ModelConfig, NewApiKey, NewTemplateVersion,
    PushedVersion, Template, TemplateListing, TemplateParameter, TemplatePreset, TemplateSettings,
    TemplateVersion, Workspace, WorkspaceListQuery, WorkspaceListing, WorkspaceStore,
    WorkspaceTransition, token_hash,
};

macro_rules! job_columns {
    () => {
        "id, organization_id, type AS kind, input, worker_id, created_at, started_at, canceled_at, completed_at,
         error, error_code, job_status AS status"
    };
}

macro_rules! agent_columns {
    () => {
        "a.id, a.resource_id, a.name, a.parent_id, a.display_order, a.created_at, a.first_connected_at,
         a.last_connected_at, a.disconnected_at, a.connection_timeout_seconds, a.lifecycle_state,
         a.directory, a.expanded_directory, a.address"
    };
}

fn agent_from(r: AgentRow) -> Agent {
    Agent {
        id: r.id,
        resource_id: r.resource_id,
        name: r.name,
        parent_id: r.parent_id,
        display_order: r.display_order,
        times: AgentTimes {
            created_at: r.created_at,
            first_connected_at: r.first_connected_at,
            last_connected_at: r.last_connected_at,
            disconnected_at: r.disconnected_at,
            connection_timeout_seconds: r.connection_timeout_seconds,
        },
        lifecycle: r.lifecycle_state,
        directory: r.directory,
        expanded_directory: r.expanded_directory,
        address: r.address,
    }
}

macro_rules! build_columns {
    () => {
        "id, workspace_id, build_number, transition, job_id, template_version_id, initiator_id, parameters, reason,
         created_at"
    };
}

#[derive(Debug, FromRow)]
struct JobRow {
    id: Uuid,
    organization_id: Uuid,
    kind: String,
    input: serde_json::Value,
    worker_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    canceled_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    error: String,
    error_code: String,
    status: JobStatus,
}

impl From<JobRow> for Job {
    fn from(r: JobRow) -> Self {
        Self {
            id: r.id,
            organization_id: r.organization_id,
            kind: r.kind,
            input: r.input,
            worker_id: r.worker_id,
            created_at: r.created_at,
            started_at: r.started_at,
            canceled_at: r.canceled_at,
            completed_at: r.completed_at,
            error: r.error,
            error_code: r.error_code,
            status: r.status,
        }
    }
}

#[derive(Debug, FromRow)]
struct BuildRow {
    id: Uuid,
    workspace_id: Uuid,
    build_number: i32,
    transition: WorkspaceTransition,
    job_id: Uuid,
    template_version_id: Uuid,
    initiator_id: Option<Uuid>,
    parameters: serde_json::Value,
    reason: String,
    created_at: DateTime<Utc>,
}

impl From<BuildRow> for Build {
    fn from(r: BuildRow) -> Self {
        Self {
            id: r.id,
            workspace_id: r.workspace_id,
            build_number: r.build_number,
            transition: r.transition,
            job_id: r.job_id,
            template_version_id: r.template_version_id,
            initiator_id: r.initiator_id,
            parameters: r.parameters,
            reason: r.reason,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, FromRow)]
struct WorkspaceRow {
    id: Uuid,
    owner_id: Uuid,
    organization_id: Uuid,
    template_id: Uuid,
    name: String,
    deleted: bool,
    ttl_ms: Option<i64>,
    created_at: DateTime<Utc>,
}

#[derive(Debug, FromRow)]
struct AgentRow {
    id: Uuid,
    resource_id: Uuid,
    name: String,
    parent_id: Option<Uuid>,
    display_order: i32,
    created_at: DateTime<Utc>,
    first_connected_at: Option<DateTime<Utc>>,
    last_connected_at: Option<DateTime<Utc>>,
    disconnected_at: Option<DateTime<Utc>>,
    connection_timeout_seconds: i32,
    lifecycle_state: AgentLifecycle,
    directory: String,
    expanded_directory: String,
    address: String,
}

async fn notify_job(conn: &mut PgConnection, job_id: Uuid) -> Result<(), StoreError> {
    let payload = serde_json::to_string(&JobUpdate { job_id }).unwrap_or_default();
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(JOB_CHANNEL)
        .bind(payload)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn notify_agent(conn: &mut PgConnection, agent_id: Uuid) -> Result<(), StoreError> {
    let payload = serde_json::to_string(&AgentUpdate { agent_id }).unwrap_or_default();
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(AGENT_CHANNEL)
        .bind(payload)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn insert_job(
    conn: &mut PgConnection,
    organization_id: Uuid,
    kind: &str,
    input: serde_json::Value,
) -> Result<Uuid, StoreError> {
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO provisioner_jobs (organization_id, type, input) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(organization_id)
    .bind(kind)
    .bind(input)
    .fetch_one(&mut *conn)
    .await?;
    notify_job(conn, id).await?;
    Ok(id)
}

/// The template version a new build uses: the active one for a workspace's first build and for a
/// start of a template that requires the active version; otherwise the latest build's version
/// (a stop or a restart builds what the workspace runs).
async fn build_version(
    conn: &mut PgConnection,
    workspace: &WorkspaceRow,
    transition: WorkspaceTransition,
) -> Result<Uuid, StoreError> {
    let (active, require_active): (Option<Uuid>, bool) = sqlx::query_as(
        "SELECT active_version_id, require_active_version FROM templates WHERE id = $1",
    )
    .bind(workspace.template_id)
    .fetch_one(&mut *conn)
    .await?;
    let latest: Option<Uuid> = sqlx::query_scalar(
        "SELECT template_version_id FROM workspace_builds WHERE workspace_id = $1
          ORDER BY build_number DESC LIMIT 1",
    )
    .bind(workspace.id)
    .fetch_optional(&mut *conn)
    .await?;
    let wants_active = transition == WorkspaceTransition::Start && require_active;
    match (latest, active) {
        (Some(latest), _) if !wants_active => Ok(latest),
        (_, Some(active)) => Ok(active),
        (Some(latest), None) => Ok(latest),
        (None, None) => Err(StoreError::InvalidInput(
            "the template has no active version".into(),
        )),
    }
}

async fn insert_build(
    conn: &mut PgConnection,
    workspace: &WorkspaceRow,
    transition: WorkspaceTransition,
    initiator_id: Option<Uuid>,
    parameters: serde_json::Value,
) -> Result<Build, StoreError> {
    let version = build_version(conn, workspace, transition).await?;
    let build_id = Uuid::new_v4();
    let job_id = insert_job(
        conn,
        workspace.organization_id,
        "workspace_build",
        serde_json::json!({"build_id": build_id, "workspace_id": workspace.id, "transition": transition}),
    )
    .await?;
    let row: BuildRow = sqlx::query_as(concat!(
        "INSERT INTO workspace_builds (id, workspace_id, build_number, transition, job_id, template_version_id,
                                       initiator_id, parameters)
         VALUES ($1, $2, COALESCE((SELECT max(build_number) FROM workspace_builds WHERE workspace_id = $2), 0) + 1,
                 $3, $4, $5, $6, $7)
         RETURNING ",
        build_columns!()
    ))
    .bind(build_id)
    .bind(workspace.id)
    .bind(transition)
    .bind(job_id)
    .bind(version)
    .bind(initiator_id)
    .bind(parameters)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.into())
}

fn workspace_from(row: WorkspaceRow) -> Workspace {
    Workspace {
        id: row.id,
        owner_id: row.owner_id,
        organization_id: row.organization_id,
        template_id: row.template_id,
        name: row.name,
        deleted: row.deleted,
        ttl_ms: row.ttl_ms,
        created_at: row.created_at,
    }
}

/// The hash stored for a token secret.
fn secret_hash(secret: &str) -> Vec<u8> {
    token_hash(secret)
}

/// Compares without an early exit, so the time taken says nothing about where they differ.
fn same_hash(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, FromRow)]
struct ModelConfigRow {
    id: Uuid,
    organization_id: Uuid,
    provider_id: Uuid,
    provider: String,
    model: String,
    base_url: String,
    api_key_ref: String,
    context_limit: i64,
    compression_threshold: i32,
    options: serde_json::Value,
    is_default: bool,
}

macro_rules! template_columns {
    () => {
        "id, organization_id, name, display_name, description, deleted, deprecated, active_version_id,
         require_active_version, chat_enabled, default_ttl_ms, created_by, created_at, updated_at"
    };
}

#[derive(Debug, FromRow)]
struct TemplateRow {
    id: Uuid,
    organization_id: Uuid,
    name: String,
    display_name: String,
    description: String,
    deleted: bool,
    deprecated: String,
    active_version_id: Option<Uuid>,
    require_active_version: bool,
    chat_enabled: bool,
    default_ttl_ms: i64,
    created_by: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<TemplateRow> for Template {
    fn from(r: TemplateRow) -> Self {
        Self {
            id: r.id,
            organization_id: r.organization_id,
            name: r.name,
            display_name: r.display_name,
            description: r.description,
            deleted: r.deleted,
            deprecated: r.deprecated,
            active_version_id: r.active_version_id,
            require_active_version: r.require_active_version,
            chat_enabled: r.chat_enabled,
            default_ttl_ms: r.default_ttl_ms,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, FromRow)]
struct ParameterRow {
    name: String,
    display_name: String,
    description: String,
    kind: String,
    mutable: bool,
    default_value: Option<String>,
    options: serde_json::Value,
    display_order: i32,
    form_type: String,
    ephemeral: bool,
    validation_regex: String,
    validation_min: Option<i32>,
    validation_max: Option<i32>,
    validation_error: String,
}

/// Inserts an API token for a user. Both parts of the token come from the OS's random source
/// (UUID v4); only a hash of the secret is stored.
pub(super) async fn insert_api_key(
    conn: &mut PgConnection,
    user_id: Uuid,
    name: &str,
    lifetime: Option<Duration>,
) -> Result<NewApiKey, StoreError> {
    let prefix = Uuid::new_v4().simple().to_string()[..10].to_owned();
    let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO api_keys (user_id, name, prefix, secret_hash, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING id",
    )
    .bind(user_id)
    .bind(name)
    .bind(&prefix)
    .bind(secret_hash(&secret))
    .bind(lifetime.map(|l| l.as_secs_f64()))
    .fetch_one(&mut *conn)
    .await
    .map_err(|err| match &err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            StoreError::Conflict(format!("the user already has a valid token named {name:?}"))
        }
        _ => StoreError::Query(err),
    })?;
    Ok(NewApiKey {
        id,
        token: format!("chatd_{prefix}_{secret}"),
    })
}

#[derive(Debug, FromRow)]
struct TemplateCountRow {
    #[sqlx(flatten)]
    template: TemplateRow,
    active_developers: i64,
}

macro_rules! workspace_listing_columns {
    () => {
        "w.id, w.owner_id, w.organization_id, w.template_id, w.name, w.deleted, w.ttl_ms, w.created_at,
         GREATEST(w.updated_at, (SELECT max(b.created_at) FROM workspace_builds b WHERE b.workspace_id = w.id))
             AS updated_at,
         u.username AS owner_name, t.name AS template_name
           FROM workspaces w JOIN users u ON u.id = w.owner_id JOIN templates t ON t.id = w.template_id"
    };
}

#[derive(Debug, FromRow)]
struct WorkspaceListingRow {
    #[sqlx(flatten)]
    workspace: WorkspaceRow,
    updated_at: DateTime<Utc>,
    owner_name: String,
    template_name: String,
}

impl From<WorkspaceListingRow> for WorkspaceListing {
    fn from(r: WorkspaceListingRow) -> Self {
        Self {
            workspace: workspace_from(r.workspace),
            owner_name: r.owner_name,
            template_name: r.template_name,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, FromRow)]
struct VersionRow {
    id: Uuid,
    template_id: Uuid,
    name: String,
    message: String,
    readme: String,
    job_id: Uuid,
    has_external_agent: bool,
    manifest: serde_json::Value,
    files: serde_json::Value,
    created_by: Option<Uuid>,
    created_at: DateTime<Utc>,
}

/// Reads a template version with its parameters and presets (and its files when `files`) on
/// `conn`; `None` when it does not exist.
async fn read_template_version(
    conn: &mut PgConnection,
    id: Uuid,
    files: bool,
) -> Result<Option<TemplateVersion>, StoreError> {
    let row: Option<VersionRow> = sqlx::query_as(
        "SELECT id, template_id, name, message, readme, job_id, has_external_agent, manifest,
                    CASE WHEN $2 THEN files ELSE 'null'::jsonb END AS files, created_by, created_at
               FROM template_versions WHERE id = $1",
    )
    .bind(id)
    .bind(files)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(v) = row else {
        return Ok(None);
    };
    let parameters: Vec<ParameterRow> = sqlx::query_as(
            "SELECT name, display_name, description, type AS kind, mutable, default_value, options, display_order,
                    form_type, ephemeral, validation_regex, validation_min, validation_max, validation_error
               FROM template_version_parameters WHERE template_version_id = $1 ORDER BY display_order, name",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
    let preset_rows: Vec<(Uuid, String, bool, String)> = sqlx::query_as(
        "SELECT id, name, is_default, description FROM template_version_presets
              WHERE template_version_id = $1 ORDER BY name",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let mut presets = Vec::new();
    for (preset_id, preset_name, is_default, description) in preset_rows {
        let values: Vec<(String, String)> = sqlx::query_as(
                "SELECT name, value FROM template_version_preset_parameters WHERE preset_id = $1 ORDER BY name",
            )
            .bind(preset_id)
            .fetch_all(&mut *conn)
            .await?;
        presets.push((
            preset_id,
            TemplatePreset {
                name: preset_name,
                is_default,
                description,
                parameters: values,
            },
        ));
    }
    Ok(Some(TemplateVersion {
        id: v.id,
        template_id: v.template_id,
        name: v.name,
        message: v.message,
        readme: v.readme,
        job_id: v.job_id,
        has_external_agent: v.has_external_agent,
        manifest: v.manifest,
        files: v.files,
        created_by: v.created_by,
        created_at: v.created_at,
        parameters: parameters
            .into_iter()
            .map(|p| TemplateParameter {
                name: p.name,
                display_name: p.display_name,
                description: p.description,
                kind: p.kind,
                mutable: p.mutable,
                default_value: p.default_value,
                options: p.options,
                display_order: p.display_order,
                form_type: p.form_type,
                ephemeral: p.ephemeral,
                validation_regex: p.validation_regex,
                validation_min: p.validation_min,
                validation_max: p.validation_max,
                validation_error: p.validation_error,
            })
            .collect(),
        presets,
    }))
}

#[async_trait]
impl WorkspaceStore for PgStore {
    async fn template(&self, id: Uuid) -> Result<Template, StoreError> {
        let row: Option<TemplateRow> = sqlx::query_as(concat!(
            "SELECT ",
            template_columns!(),
            " FROM templates WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(Template::from)
            .ok_or_else(|| StoreError::InvalidInput(format!("template {id} not found")))
    }

    async fn list_templates(
        &self,
        organization_id: Uuid,
        name_query: &str,
    ) -> Result<Vec<TemplateListing>, StoreError> {
        let pattern = like_pattern(name_query);
        let rows: Vec<TemplateRow> = sqlx::query_as(concat!(
            "SELECT ",
            template_columns!(),
            " FROM templates
              WHERE organization_id = $1 AND NOT deleted AND deprecated = '' AND name ILIKE $2"
        ))
        .bind(organization_id)
        .bind(pattern)
        .fetch_all(self.pool())
        .await?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        // Counting is an ornament of the listing: when it fails, every count is 0.
        let counts: std::collections::HashMap<Uuid, i64> = sqlx::query_as::<_, (Uuid, i64)>(
            "SELECT template_id, count(DISTINCT owner_id) FROM workspaces
              WHERE template_id = ANY($1) AND NOT deleted GROUP BY template_id",
        )
        .bind(&ids)
        .fetch_all(self.pool())
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "counting active developers failed; listing without counts");
            Vec::new()
        })
        .into_iter()
        .collect();
        let mut listing: Vec<TemplateListing> = rows
            .into_iter()
            .map(|r| TemplateListing {
                active_developers: counts.get(&r.id).copied().unwrap_or(0),
                template: r.into(),
            })
            .collect();
        listing.sort_by(|a, b| {
            b.active_developers
                .cmp(&a.active_developers)
                .then_with(|| a.template.name.cmp(&b.template.name))
                .then_with(|| a.template.id.cmp(&b.template.id))
        });
        Ok(listing)
    }

    async fn username(&self, user_id: Uuid) -> Result<String, StoreError> {
        sqlx::query_scalar("SELECT username FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::InvalidInput(format!("user {user_id} not found")))
    }

    async fn template_version(&self, id: Uuid) -> Result<TemplateVersion, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let version = read_template_version(&mut tx, id, true).await?;
        tx.commit().await?;
        version.ok_or_else(|| StoreError::InvalidInput(format!("template version {id} not found")))
    }

    async fn update_template(
        &self,
        id: Uuid,
        settings: TemplateSettings,
    ) -> Result<Template, StoreError> {
        if let Some(version) = settings.active_version_id {
            let belongs: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM template_versions WHERE id = $1 AND template_id = $2)",
            )
            .bind(version)
            .bind(id)
            .fetch_one(self.pool())
            .await?;
            if !belongs {
                return Err(StoreError::InvalidInput(format!(
                    "version {version} is not a version of template {id}"
                )));
            }
        }
        let row: Option<TemplateRow> = sqlx::query_as(concat!(
            "UPDATE templates
                SET require_active_version = COALESCE($2, require_active_version),
                    chat_enabled = COALESCE($3, chat_enabled),
                    deprecated = COALESCE($4, deprecated),
                    active_version_id = COALESCE($5, active_version_id),
                    display_name = COALESCE($6, display_name),
                    description = COALESCE($7, description),
                    default_ttl_ms = COALESCE($8, default_ttl_ms),
                    updated_at = now()
              WHERE id = $1
              RETURNING ",
            template_columns!()
        ))
        .bind(id)
        .bind(settings.require_active_version)
        .bind(settings.chat_enabled)
        .bind(&settings.deprecated)
        .bind(settings.active_version_id)
        .bind(&settings.display_name)
        .bind(&settings.description)
        .bind(settings.default_ttl_ms)
        .fetch_optional(self.pool())
        .await?;
        row.map(Template::from)
            .ok_or_else(|| StoreError::InvalidInput(format!("template {id} not found")))
    }

    async fn create_api_key(
        &self,
        user_id: Uuid,
        name: &str,
        lifetime: Option<Duration>,
    ) -> Result<NewApiKey, StoreError> {
        let mut conn = self.pool().acquire().await?;
        insert_api_key(&mut conn, user_id, name, lifetime).await
    }

    async fn bootstrap_admin(
        &self,
        organization: &str,
        username: &str,
    ) -> Result<Option<Bootstrapped>, StoreError> {
        let mut tx = self.pool().begin().await?;
        // One bootstrap at a time across replicas; the second sees the first's user.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('chatd_bootstrap_admin'))")
            .execute(&mut *tx)
            .await?;
        let any_user: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)")
            .fetch_one(&mut *tx)
            .await?;
        if any_user {
            return Ok(None);
        }
        let organization_id: Uuid = sqlx::query_scalar(
            "INSERT INTO organizations (name) VALUES ($1)
             ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        )
        .bind(organization)
        .fetch_one(&mut *tx)
        .await?;
        let user_id: Uuid = sqlx::query_scalar(
            "INSERT INTO users (username, role) VALUES ($1, 'admin') RETURNING id",
        )
        .bind(username)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO organization_members (organization_id, user_id) VALUES ($1, $2)")
            .bind(organization_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let key = insert_api_key(&mut tx, user_id, "bootstrap", None).await?;
        tx.commit().await?;
        Ok(Some(Bootstrapped {
            organization_id,
            user_id,
            key,
        }))
    }

    async fn authenticate(&self, token: &str) -> Result<Option<Caller>, StoreError> {
        let Some((prefix, secret)) = token.strip_prefix("chatd_").and_then(|t| t.split_once('_'))
        else {
            return Ok(None);
        };
        let row: Option<(Uuid, Uuid, String, Vec<u8>, Vec<Uuid>)> = sqlx::query_as(
            "SELECT k.id, u.id, u.role, k.secret_hash,
                    ARRAY(SELECT m.organization_id FROM organization_members m
                           WHERE m.user_id = u.id ORDER BY m.created_at, m.organization_id)
               FROM api_keys k JOIN users u ON u.id = k.user_id
              WHERE k.prefix = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())
                AND NOT u.suspended",
        )
        .bind(prefix)
        .fetch_optional(self.pool())
        .await?;
        let Some((key_id, user_id, role, hash, organizations)) = row else {
            return Ok(None);
        };
        if !same_hash(&hash, &secret_hash(secret)) {
            return Ok(None);
        }
        // At most once a minute: a busy token does not write on every call.
        sqlx::query(
            "UPDATE api_keys SET last_used_at = now()
              WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        )
            .bind(key_id)
            .execute(self.pool())
            .await?;
        Ok(Some(Caller {
            user_id,
            role,
            key_id,
            organizations,
        }))
    }

    async fn revoke_api_key(&self, key_id: Uuid) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1")
            .bind(key_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn create_provider(
        &self,
        kind: &str,
        api_key_ref: &str,
        base_url: &str,
    ) -> Result<Uuid, StoreError> {
        admin::create_provider(self.pool(), kind, api_key_ref, base_url).await
    }

    async fn create_model_config(
        &self,
        organization_id: Uuid,
        provider_id: Uuid,
        model: &str,
        context_limit: i64,
        is_default: bool,
    ) -> Result<Uuid, StoreError> {
        if context_limit <= 0 {
            return Err(StoreError::InvalidInput(
                "context_limit must be positive".into(),
            ));
        }
        let mut tx = self.pool().begin().await?;
        if is_default {
            sqlx::query("UPDATE chat_model_configs SET is_default = false WHERE organization_id = $1 AND is_default")
                .bind(organization_id)
                .execute(&mut *tx)
                .await?;
        }
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO chat_model_configs (organization_id, provider_id, model, context_limit, is_default)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(organization_id)
        .bind(provider_id)
        .bind(model)
        .bind(context_limit)
        .bind(is_default)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn resolve_model_config(
        &self,
        organization_id: Uuid,
        preferred: Option<Uuid>,
    ) -> Result<ModelConfig, StoreError> {
        let row: Option<ModelConfigRow> = sqlx::query_as(
            "SELECT m.id, m.organization_id, m.provider_id, p.provider, m.model, p.base_url, p.api_key_ref,
                    m.context_limit, m.compression_threshold, m.options, m.is_default
               FROM chat_model_configs m JOIN chat_providers p ON p.id = m.provider_id
              WHERE m.organization_id = $1 AND m.enabled AND NOT m.deleted AND p.enabled
                AND (m.id = $2 OR m.is_default)
              ORDER BY (m.id = $2) DESC NULLS LAST
              LIMIT 1",
        )
        .bind(organization_id)
        .bind(preferred)
        .fetch_optional(self.pool())
        .await?;
        let row = row.ok_or(StoreError::NoDefaultModelConfig)?;
        Ok(ModelConfig {
            id: row.id,
            organization_id: row.organization_id,
            provider_id: row.provider_id,
            provider: row.provider,
            model: row.model,
            base_url: row.base_url,
            api_key_ref: row.api_key_ref,
            context_limit: row.context_limit,
            compression_threshold: row.compression_threshold,
            options: row.options,
            is_default: row.is_default,
        })
    }

    async fn create_organization(&self, name: &str) -> Result<Uuid, StoreError> {
        Ok(admin::add_organization(self.pool(), name, "").await?.id)
    }

    async fn create_user(
        &self,
        username: &str,
        role: &str,
        organization_id: Uuid,
    ) -> Result<Uuid, StoreError> {
        let mut tx = self.pool().begin().await?;
        let id: Uuid =
            sqlx::query_scalar("INSERT INTO users (username, role) VALUES ($1, $2) RETURNING id")
                .bind(username)
                .bind(role)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query("INSERT INTO organization_members (organization_id, user_id) VALUES ($1, $2)")
            .bind(organization_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn push_template_version(
        &self,
        v: NewTemplateVersion,
    ) -> Result<PushedVersion, StoreError> {
        let mut tx = self.pool().begin().await?;
        let conn: &mut PgConnection = &mut tx;
        let existing: Option<(Uuid, Option<Uuid>)> = sqlx::query_as(
            "SELECT id, active_version_id FROM templates
              WHERE organization_id = $1 AND lower(name) = lower($2) AND NOT deleted FOR UPDATE",
        )
        .bind(v.organization_id)
        .bind(&v.template_name)
        .fetch_optional(&mut *conn)
        .await?;
        let template_created = existing.is_none();
        let (template_id, had_active) = match existing {
            Some((id, active)) => (id, active.is_some()),
            None => {
                let id: Uuid = sqlx::query_scalar(
                    "INSERT INTO templates (organization_id, name, display_name, description, created_by)
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                )
                .bind(v.organization_id)
                .bind(&v.template_name)
                .bind(&v.display_name)
                .bind(&v.description)
                .bind(v.created_by)
                .fetch_one(&mut *conn)
                .await?;
                (id, false)
            }
        };
        let version_id = Uuid::new_v4();
        let job_id = insert_job(
            conn,
            v.organization_id,
            "template_version_import",
            serde_json::json!({"template_version_id": version_id}),
        )
        .await?;
        sqlx::query(
            "INSERT INTO template_versions (id, template_id, name, readme, job_id, has_external_agent, manifest, files, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(version_id)
        .bind(template_id)
        .bind(&v.version_name)
        .bind(&v.readme)
        .bind(job_id)
        .bind(v.has_external_agent)
        .bind(&v.manifest)
        .bind(&v.files)
        .bind(v.created_by)
        .execute(&mut *conn)
        .await?;
        for p in &v.parameters {
            sqlx::query(
                "INSERT INTO template_version_parameters
                    (template_version_id, name, display_name, description, type, mutable, default_value, options,
                     display_order, form_type, ephemeral, validation_regex, validation_min, validation_max,
                     validation_error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(version_id)
            .bind(&p.name)
            .bind(&p.display_name)
            .bind(&p.description)
            .bind(&p.kind)
            .bind(p.mutable)
            .bind(&p.default_value)
            .bind(&p.options)
            .bind(p.display_order)
            .bind(&p.form_type)
            .bind(p.ephemeral)
            .bind(&p.validation_regex)
            .bind(p.validation_min)
            .bind(p.validation_max)
            .bind(&p.validation_error)
            .execute(&mut *conn)
            .await?;
        }
        for preset_spec in &v.presets {
            let preset: Uuid = sqlx::query_scalar(
                "INSERT INTO template_version_presets (template_version_id, name, is_default, description)
                 VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(version_id)
            .bind(&preset_spec.name)
            .bind(preset_spec.is_default)
            .bind(&preset_spec.description)
            .fetch_one(&mut *conn)
            .await?;
            for (param, value) in &preset_spec.parameters {
                sqlx::query("INSERT INTO template_version_preset_parameters (preset_id, name, value) VALUES ($1, $2, $3)")
                    .bind(preset)
                    .bind(param)
                    .bind(value)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        // The first version of a template is active at once; later ones when asked.
        if v.activate || !had_active {
            sqlx::query(
                "UPDATE templates SET active_version_id = $2, updated_at = now() WHERE id = $1",
            )
            .bind(template_id)
            .bind(version_id)
            .execute(&mut *conn)
            .await?;
        }
        tx.commit().await?;
        Ok(PushedVersion {
            template_id,
            version_id,
            job_id,
            template_created,
        })
    }

    async fn create_workspace(
        &self,
        organization_id: Uuid,
        owner_id: Uuid,
        template_id: Uuid,
        name: &str,
        parameters: serde_json::Value,
        ttl_ms: Option<i64>,
    ) -> Result<(Workspace, Build), StoreError> {
        let mut tx = self.pool().begin().await?;
        let conn: &mut PgConnection = &mut tx;
        let row: WorkspaceRow = sqlx::query_as(
            "INSERT INTO workspaces (owner_id, organization_id, template_id, name, ttl_ms, control_plane_secret)
             VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING id, owner_id, organization_id, template_id, name, deleted, ttl_ms, created_at",
        )
        .bind(owner_id)
        .bind(organization_id)
        .bind(template_id)
        .bind(name)
        .bind(ttl_ms)
        // The secret chatd presents to the workspace's agent; from the OS's random source.
        .bind(format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple()))
        .fetch_one(&mut *conn)
        .await
        .map_err(|err| match &err {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                StoreError::Conflict(format!("a workspace named {name:?} already exists"))
            }
            _ => StoreError::Query(err),
        })?;
        let build = insert_build(
            conn,
            &row,
            WorkspaceTransition::Start,
            Some(owner_id),
            parameters,
        )
        .await?;
        tx.commit().await?;
        Ok((workspace_from(row), build))
    }

    async fn new_build(
        &self,
        workspace_id: Uuid,
        transition: WorkspaceTransition,
        initiator_id: Option<Uuid>,
        parameters: serde_json::Value,
    ) -> Result<Build, StoreError> {
        let mut tx = self.pool().begin().await?;
        let conn: &mut PgConnection = &mut tx;
        let row: Option<WorkspaceRow> = sqlx::query_as(
            "SELECT id, owner_id, organization_id, template_id, name, deleted, ttl_ms, created_at
               FROM workspaces WHERE id = $1 AND NOT deleted FOR UPDATE",
        )
        .bind(workspace_id)
        .fetch_optional(&mut *conn)
        .await?;
        let row = row.ok_or_else(|| {
            StoreError::InvalidInput(format!("workspace {workspace_id} not found"))
        })?;
        let busy: Option<JobStatus> = sqlx::query_scalar(
            "SELECT j.job_status FROM workspace_builds b JOIN provisioner_jobs j ON j.id = b.job_id
              WHERE b.workspace_id = $1 ORDER BY b.build_number DESC LIMIT 1",
        )
        .bind(workspace_id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(status) = busy
            && !status.is_terminal()
        {
            return Err(StoreError::InvalidInput(format!(
                "the workspace's latest build is still {status:?}; wait for it to finish"
            )));
        }
        let build = insert_build(conn, &row, transition, initiator_id, parameters).await?;
        if transition == WorkspaceTransition::Delete {
            sqlx::query("UPDATE workspaces SET updated_at = now() WHERE id = $1")
                .bind(workspace_id)
                .execute(&mut *conn)
                .await?;
        }
        tx.commit().await?;
        Ok(build)
    }

    async fn latest_build(&self, workspace_id: Uuid) -> Result<Option<Build>, StoreError> {
        let row: Option<BuildRow> = sqlx::query_as(concat!(
            "SELECT ",
            build_columns!(),
            " FROM workspace_builds WHERE workspace_id = $1 ORDER BY build_number DESC LIMIT 1"
        ))
        .bind(workspace_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(Build::from))
    }

    async fn build(&self, build_id: Uuid) -> Result<Build, StoreError> {
        let row: Option<BuildRow> = sqlx::query_as(concat!(
            "SELECT ",
            build_columns!(),
            " FROM workspace_builds WHERE id = $1"
        ))
        .bind(build_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(Build::from).ok_or_else(|| {
            StoreError::InvalidInput(format!("workspace build {build_id} not found"))
        })
    }

    async fn workspace(&self, workspace_id: Uuid) -> Result<Workspace, StoreError> {
        let row: Option<WorkspaceRow> = sqlx::query_as(
            "SELECT id, owner_id, organization_id, template_id, name, deleted, ttl_ms, created_at
               FROM workspaces WHERE id = $1",
        )
        .bind(workspace_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(workspace_from)
            .ok_or_else(|| StoreError::InvalidInput(format!("workspace {workspace_id} not found")))
    }

    async fn jobs_in_progress(&self, worker_id: Uuid) -> Result<Vec<Job>, StoreError> {
        let rows: Vec<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM provisioner_jobs WHERE worker_id = $1 AND started_at IS NOT NULL AND completed_at IS NULL
              ORDER BY created_at, id"
        ))
        .bind(worker_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(Job::from).collect())
    }

    async fn acquire_job(&self, worker_id: Uuid) -> Result<Option<Job>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let conn: &mut PgConnection = &mut tx;
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "UPDATE provisioner_jobs SET started_at = now(), updated_at = now(), worker_id = $1
              WHERE id = (SELECT id FROM provisioner_jobs
                           WHERE started_at IS NULL AND canceled_at IS NULL
                           ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
              RETURNING ",
            job_columns!()
        ))
        .bind(worker_id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = &row {
            notify_job(conn, row.id).await?;
        }
        tx.commit().await?;
        Ok(row.map(Job::from))
    }

    async fn job(&self, id: Uuid) -> Result<Job, StoreError> {
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM provisioner_jobs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(Job::from)
            .ok_or_else(|| StoreError::InvalidInput(format!("provisioner job {id} not found")))
    }

    async fn append_job_logs(
        &self,
        job_id: Uuid,
        lines: &[(String, String, String)],
    ) -> Result<(), StoreError> {
        let levels: Vec<&str> = lines.iter().map(|l| l.0.as_str()).collect();
        let stages: Vec<&str> = lines.iter().map(|l| l.1.as_str()).collect();
        let outputs: Vec<&str> = lines.iter().map(|l| l.2.as_str()).collect();
        sqlx::query(
            "INSERT INTO provisioner_job_logs (job_id, level, stage, output)
             SELECT $1, l, s, o FROM unnest($2::text[], $3::text[], $4::text[]) AS t(l, s, o)",
        )
        .bind(job_id)
        .bind(&levels)
        .bind(&stages)
        .bind(&outputs)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn complete_job(
        &self,
        job_id: Uuid,
        error: &str,
        error_code: &str,
    ) -> Result<Job, StoreError> {
        let mut tx = self.pool().begin().await?;
        let conn: &mut PgConnection = &mut tx;
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "UPDATE provisioner_jobs
                SET completed_at = now(), updated_at = now(), error = $2, error_code = $3,
                    started_at = COALESCE(started_at, now())
              WHERE id = $1 AND completed_at IS NULL
              RETURNING ",
            job_columns!()
        ))
        .bind(job_id)
        .bind(error)
        .bind(error_code)
        .fetch_optional(&mut *conn)
        .await?;
        let row = row.ok_or_else(|| {
            StoreError::InvalidInput(format!("provisioner job {job_id} is not running"))
        })?;
        // A successful delete build deletes the workspace.
        if row.status == JobStatus::Succeeded {
            sqlx::query(
                "UPDATE workspaces w SET deleted = true, updated_at = now()
                   FROM workspace_builds b
                  WHERE b.job_id = $1 AND b.transition = 'delete' AND w.id = b.workspace_id",
            )
            .bind(job_id)
            .execute(&mut *conn)
            .await?;
        }
        notify_job(conn, job_id).await?;
        tx.commit().await?;
        Ok(row.into())
    }

    async fn cancel_job(&self, job_id: Uuid) -> Result<Job, StoreError> {
        let mut tx = self.pool().begin().await?;
        let conn: &mut PgConnection = &mut tx;
        // A job nobody took yet is finished at once; a running one is asked to stop.
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "UPDATE provisioner_jobs
                SET canceled_at = COALESCE(canceled_at, now()), updated_at = now(),
                    completed_at = CASE WHEN started_at IS NULL THEN now() ELSE completed_at END
              WHERE id = $1
              RETURNING ",
            job_columns!()
        ))
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await?;
        let row = row.ok_or_else(|| {
            StoreError::InvalidInput(format!("provisioner job {job_id} not found"))
        })?;
        notify_job(conn, job_id).await?;
        tx.commit().await?;
        Ok(row.into())
    }

    async fn insert_agent(
        &self,
        job_id: Uuid,
        name: &str,
        directory: &str,
        connection_timeout_seconds: i32,
        auth_token_hash: &[u8],
    ) -> Result<Uuid, StoreError> {
        let mut tx = self.pool().begin().await?;
        let resource: Uuid =
            sqlx::query_scalar("INSERT INTO workspace_resources (job_id, type, name) VALUES ($1, 'chatd_local', $2) RETURNING id")
                .bind(job_id)
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
        let agent: Uuid = sqlx::query_scalar(
            "INSERT INTO workspace_agents (resource_id, name, directory, connection_timeout_seconds, auth_token_hash)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(resource)
        .bind(name)
        .bind(directory)
        .bind(connection_timeout_seconds)
        .bind(auth_token_hash)
        .fetch_one(&mut *tx)
        .await?;
        notify_agent(&mut tx, agent).await?;
        tx.commit().await?;
        Ok(agent)
    }

    async fn build_agents(&self, build_id: Uuid) -> Result<Vec<Agent>, StoreError> {
        let rows: Vec<AgentRow> = sqlx::query_as(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM workspace_agents a
               JOIN workspace_resources r ON r.id = a.resource_id
               JOIN workspace_builds b ON b.job_id = r.job_id
              WHERE b.id = $1 AND NOT a.deleted
              ORDER BY a.display_order, a.name, a.id"
        ))
        .bind(build_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(agent_from).collect())
    }

    async fn agent(&self, agent_id: Uuid) -> Result<Agent, StoreError> {
        let row: Option<AgentRow> = sqlx::query_as(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM workspace_agents a WHERE a.id = $1"
        ))
        .bind(agent_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(agent_from)
            .ok_or_else(|| StoreError::InvalidInput(format!("agent {agent_id} not found")))
    }

    async fn agent_secret(&self, agent_id: Uuid) -> Result<String, StoreError> {
        sqlx::query_scalar(
            "SELECT w.control_plane_secret FROM workspace_agents a
               JOIN workspace_resources r ON r.id = a.resource_id
               JOIN workspace_builds b ON b.job_id = r.job_id
               JOIN workspaces w ON w.id = b.workspace_id
              WHERE a.id = $1",
        )
        .bind(agent_id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::InvalidInput(format!("agent {agent_id} has no workspace")))
    }

    async fn agent_is_external(&self, agent_id: Uuid) -> Result<bool, StoreError> {
        let row: Option<(Option<bool>,)> = sqlx::query_as(
            "SELECT v.has_external_agent FROM workspace_agents a
               JOIN workspace_resources r ON r.id = a.resource_id
               LEFT JOIN workspace_builds b ON b.job_id = r.job_id
               LEFT JOIN template_versions v ON v.id = b.template_version_id
              WHERE a.id = $1",
        )
        .bind(agent_id)
        .fetch_optional(self.pool())
        .await?;
        let (external,) =
            row.ok_or_else(|| StoreError::InvalidInput(format!("agent {agent_id} not found")))?;
        Ok(external.unwrap_or(false))
    }

    async fn database_now(&self) -> Result<DateTime<Utc>, StoreError> {
        Ok(sqlx::query_scalar("SELECT now()")
            .fetch_one(self.pool())
            .await?)
    }

    async fn agent_heartbeat(
        &self,
        agent_id: Uuid,
        report: &AgentReport,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        // Notify only when something a waiter cares about changed (first connection,
        // reconnection, a new address), not on every routine heartbeat.
        let changed: Option<bool> = sqlx::query_scalar(
            "WITH before AS (SELECT first_connected_at, disconnected_at, last_connected_at, address
                               FROM workspace_agents WHERE id = $1 FOR UPDATE)
             UPDATE workspace_agents a
                SET first_connected_at = COALESCE(a.first_connected_at, now()),
                    last_connected_at = now(),
                    address = $2,
                    expanded_directory = CASE WHEN $3 = '' THEN a.expanded_directory ELSE $3 END,
                    operating_system = CASE WHEN $4 = '' THEN a.operating_system ELSE $4 END
               FROM before b
              WHERE a.id = $1
             RETURNING b.first_connected_at IS NULL
                    OR (b.disconnected_at IS NOT NULL AND b.disconnected_at >= b.last_connected_at)
                    OR b.address <> $2",
        )
        .bind(agent_id)
        .bind(&report.address)
        .bind(&report.expanded_directory)
        .bind(&report.operating_system)
        .fetch_optional(&mut *tx)
        .await?;
        match changed {
            None => {
                return Err(StoreError::InvalidInput(format!(
                    "agent {agent_id} not found"
                )));
            }
            Some(true) => notify_agent(&mut tx, agent_id).await?,
            Some(false) => {}
        }
        tx.commit().await?;
        Ok(())
    }

    async fn agent_manifest_by_token(
        &self,
        token: &str,
    ) -> Result<Option<AgentManifest>, StoreError> {
        let row: Option<(
            Uuid,
            String,
            Uuid,
            String,
            String,
            String,
            String,
            i32,
            serde_json::Value,
            String,
        )> = sqlx::query_as(
            "SELECT a.id, a.name, w.id, w.name, u.username, a.directory, a.startup_script,
                    a.startup_script_timeout_seconds, a.env, w.control_plane_secret
               FROM workspace_agents a
               JOIN workspace_resources r ON r.id = a.resource_id
               JOIN workspace_builds b ON b.job_id = r.job_id
               JOIN workspaces w ON w.id = b.workspace_id
               JOIN users u ON u.id = w.owner_id
              WHERE a.auth_token_hash = $1 AND NOT a.deleted AND NOT w.deleted
                AND b.transition = 'start'
                AND b.build_number = (SELECT max(build_number) FROM workspace_builds
                                       WHERE workspace_id = w.id AND transition = 'start')",
        )
        .bind(token_hash(token))
        .fetch_optional(self.pool())
        .await?;
        let Some((
            agent_id,
            agent_name,
            workspace_id,
            workspace_name,
            owner_name,
            directory,
            startup_script,
            timeout,
            env,
            secret,
        )) = row
        else {
            return Ok(None);
        };
        Ok(Some(AgentManifest {
            agent_id,
            agent_name,
            workspace_id,
            workspace_name,
            owner_name,
            directory,
            startup_script,
            startup_script_timeout_seconds: timeout,
            env: serde_json::from_value(env).map_err(|source| StoreError::Corrupt {
                what: "agent env",
                source,
            })?,
            control_plane_secret: secret,
        }))
    }

    async fn set_agent_startup(
        &self,
        agent_id: Uuid,
        startup_script: &str,
        timeout_seconds: i32,
        env: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let env = serde_json::to_value(env).map_err(|source| StoreError::Corrupt {
            what: "agent env",
            source,
        })?;
        sqlx::query(
            "UPDATE workspace_agents SET startup_script = $2, startup_script_timeout_seconds = $3, env = $4 WHERE id = $1",
        )
        .bind(agent_id)
        .bind(startup_script)
        .bind(timeout_seconds)
        .bind(env)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn append_agent_logs(
        &self,
        agent_id: Uuid,
        source: &str,
        lines: &[(String, String)],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let used: Option<i64> =
            sqlx::query_scalar("SELECT logs_bytes FROM workspace_agents WHERE id = $1 FOR UPDATE")
                .bind(agent_id)
                .fetch_optional(&mut *tx)
                .await?;
        let mut used =
            used.ok_or_else(|| StoreError::InvalidInput(format!("agent {agent_id} not found")))?;
        let mut levels = Vec::new();
        let mut outputs = Vec::new();
        let mut overflowed = false;
        for (level, output) in lines {
            let size = output.len() as i64;
            if used + size > MAX_AGENT_LOG_BYTES {
                overflowed = true;
                break;
            }
            used += size;
            levels.push(level.as_str());
            outputs.push(output.as_str());
        }
        sqlx::query(
            "INSERT INTO workspace_agent_logs (agent_id, source, level, output)
             SELECT $1, $2, l, o FROM unnest($3::text[], $4::text[]) AS t(l, o)",
        )
        .bind(agent_id)
        .bind(source)
        .bind(&levels)
        .bind(&outputs)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE workspace_agents SET logs_bytes = $2, logs_overflowed = logs_overflowed OR $3 WHERE id = $1")
            .bind(agent_id)
            .bind(used)
            .bind(overflowed)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(overflowed)
    }

    async fn agent_disconnected(&self, agent_id: Uuid) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE workspace_agents SET disconnected_at = now() WHERE id = $1")
            .bind(agent_id)
            .execute(&mut *tx)
            .await?;
        notify_agent(&mut tx, agent_id).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_agent_lifecycle(
        &self,
        agent_id: Uuid,
        state: AgentLifecycle,
        changed_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let updated = sqlx::query(
            "UPDATE workspace_agents SET lifecycle_state = $2, lifecycle_changed_at = $3
              WHERE id = $1 AND (lifecycle_changed_at IS NULL OR lifecycle_changed_at <= $3)",
        )
        .bind(agent_id)
        .bind(state)
        .bind(changed_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated > 0 {
            notify_agent(&mut tx, agent_id).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn register_worker(
        &self,
        worker_id: Uuid,
        relay_address: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO chatd_workers (worker_id, relay_address, heartbeat_at) VALUES ($1, $2, now())
             ON CONFLICT (worker_id) DO UPDATE SET relay_address = $2, heartbeat_at = now()",
        )
        .bind(worker_id)
        .bind(relay_address)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn worker_address(
        &self,
        worker_id: Uuid,
        stale_after: Duration,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT relay_address FROM chatd_workers
              WHERE worker_id = $1 AND heartbeat_at > now() - make_interval(secs => $2)",
        )
        .bind(worker_id)
        .bind(stale_after.as_secs_f64())
        .fetch_optional(self.pool())
        .await?)
    }

    async fn cluster_secret(&self, name: &str) -> Result<String, StoreError> {
        let candidate = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        // The insert loses quietly to a secret that exists or is being created concurrently;
        // the select then reads the winner.
        sqlx::query(
            "INSERT INTO chatd_cluster_secrets (name, secret) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&candidate)
        .execute(self.pool())
        .await?;
        Ok(
            sqlx::query_scalar("SELECT secret FROM chatd_cluster_secrets WHERE name = $1")
                .bind(name)
                .fetch_one(self.pool())
                .await?,
        )
    }

    async fn add_organization(
        &self,
        name: &str,
        display_name: &str,
    ) -> Result<Organization, StoreError> {
        admin::add_organization(self.pool(), name, display_name).await
    }

    async fn organization(&self, id: Uuid) -> Result<Option<Organization>, StoreError> {
        admin::organization(self.pool(), id).await
    }

    async fn list_organizations(
        &self,
        only: Option<&[Uuid]>,
        after_name: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Organization>, StoreError> {
        admin::list_organizations(self.pool(), only, after_name, limit).await
    }

    async fn add_user(&self, user: &NewUser) -> Result<User, StoreError> {
        admin::add_user(self.pool(), user).await
    }

    async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        admin::user(self.pool(), id).await
    }

    async fn list_users(&self, query: &UserListQuery) -> Result<Vec<User>, StoreError> {
        admin::list_users(self.pool(), query).await
    }

    async fn update_user(&self, id: Uuid, changes: &UserChanges) -> Result<User, StoreError> {
        admin::update_user(self.pool(), id, changes).await
    }

    async fn issue_api_token(
        &self,
        user_id: Uuid,
        name: &str,
        lifetime: Option<Duration>,
    ) -> Result<(NewApiKey, ApiToken), StoreError> {
        admin::issue_api_token(self.pool(), user_id, name, lifetime).await
    }

    async fn api_token(&self, id: Uuid) -> Result<Option<ApiToken>, StoreError> {
        admin::api_token(self.pool(), id).await
    }

    async fn list_api_tokens(
        &self,
        user_id: Uuid,
        after: Option<NewestFirstCursor>,
        limit: i64,
    ) -> Result<Vec<ApiToken>, StoreError> {
        admin::list_api_tokens(self.pool(), user_id, after, limit).await
    }

    async fn add_model_config(
        &self,
        config: &NewModelConfig,
    ) -> Result<ModelConfigRecord, StoreError> {
        admin::add_model_config(self.pool(), config).await
    }

    async fn seed_model_config(&self, config: &NewModelConfig) -> Result<Seeded, StoreError> {
        admin::seed_model_config(self.pool(), config).await
    }

    async fn model_config(&self, id: Uuid) -> Result<Option<ModelConfigRecord>, StoreError> {
        admin::model_config(self.pool(), id).await
    }

    async fn list_model_configs(
        &self,
        organization_id: Uuid,
        enabled_only: bool,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<ModelConfigRecord>, StoreError> {
        admin::list_model_configs(self.pool(), organization_id, enabled_only, offset, limit).await
    }

    async fn update_model_config(
        &self,
        id: Uuid,
        changes: &ModelConfigChanges,
    ) -> Result<ModelConfigRecord, StoreError> {
        admin::update_model_config(self.pool(), id, changes).await
    }

    async fn delete_model_config(&self, id: Uuid) -> Result<(), StoreError> {
        admin::delete_model_config(self.pool(), id).await
    }

    async fn list_organization_templates(
        &self,
        organization_ids: &[Uuid],
        name_query: &str,
        after: Option<(String, Uuid)>,
        limit: i64,
    ) -> Result<Vec<TemplateListing>, StoreError> {
        let (after_name, after_id) = after.unzip();
        let rows: Vec<(TemplateRow, i64)> = sqlx::query_as::<_, TemplateCountRow>(concat!(
            "SELECT ",
            template_columns!(),
            ", (SELECT count(DISTINCT w.owner_id) FROM workspaces w
                 WHERE w.template_id = t.id AND NOT w.deleted) AS active_developers
               FROM templates t
              WHERE organization_id = ANY($1) AND NOT deleted AND name ILIKE $2
                AND ($3::text IS NULL OR (name, id) > ($3, $4))
              ORDER BY name, id LIMIT $5"
        ))
        .bind(organization_ids)
        .bind(like_pattern(name_query.trim()))
        .bind(after_name)
        .bind(after_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?
        .into_iter()
        .map(|r| (r.template, r.active_developers))
        .collect();
        Ok(rows
            .into_iter()
            .map(|(template, active_developers)| TemplateListing {
                template: template.into(),
                active_developers,
            })
            .collect())
    }

    async fn active_developers(&self, template_id: Uuid) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT count(DISTINCT owner_id) FROM workspaces WHERE template_id = $1 AND NOT deleted",
        )
        .bind(template_id)
        .fetch_one(self.pool())
        .await?)
    }

    async fn list_template_versions(
        &self,
        template_id: Uuid,
        after: Option<NewestFirstCursor>,
        limit: i64,
    ) -> Result<Vec<TemplateVersion>, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM template_versions
              WHERE template_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
              ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(template_id)
        .bind(after.map(|(at, _)| at))
        .bind(after.map(|(_, id)| id))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut versions = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(version) = read_template_version(&mut tx, id, false).await? {
                versions.push(version);
            }
        }
        tx.commit().await?;
        Ok(versions)
    }

    async fn delete_template(&self, id: Uuid) -> Result<Template, StoreError> {
        let mut tx = self.pool().begin().await?;
        let found: Option<bool> =
            sqlx::query_scalar("SELECT deleted FROM templates WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if found.is_none() {
            return Err(StoreError::NotFound(format!("template {id} not found")));
        }
        let in_use: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workspaces WHERE template_id = $1 AND NOT deleted",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if in_use > 0 {
            return Err(StoreError::Precondition(format!(
                "template {id} is used by {in_use} workspace(s); delete them first"
            )));
        }
        let row: TemplateRow = sqlx::query_as(concat!(
            "UPDATE templates SET deleted = true, updated_at = now() WHERE id = $1 RETURNING ",
            template_columns!()
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.into())
    }

    async fn list_workspaces(
        &self,
        query: &WorkspaceListQuery,
    ) -> Result<Vec<WorkspaceListing>, StoreError> {
        let rows: Vec<WorkspaceListingRow> = sqlx::query_as(concat!(
            "SELECT ",
            workspace_listing_columns!(),
            " WHERE NOT w.deleted AND w.organization_id = ANY($1)
                AND ($2::uuid IS NULL OR w.owner_id = $2)
                AND ($3::uuid IS NULL OR w.template_id = $3)
                AND w.name ILIKE $4
                AND ($5::timestamptz IS NULL OR (w.created_at, w.id) < ($5, $6))
              ORDER BY w.created_at DESC, w.id DESC LIMIT $7"
        ))
        .bind(&query.organization_ids)
        .bind(query.owner_id)
        .bind(query.template_id)
        .bind(like_pattern(query.name_query.trim()))
        .bind(query.after.map(|(at, _)| at))
        .bind(query.after.map(|(_, id)| id))
        .bind(query.limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(WorkspaceListing::from).collect())
    }

    async fn workspace_listing(&self, id: Uuid) -> Result<Option<WorkspaceListing>, StoreError> {
        let row: Option<WorkspaceListingRow> = sqlx::query_as(concat!(
            "SELECT ",
            workspace_listing_columns!(),
            " WHERE w.id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(WorkspaceListing::from))
    }

    async fn job_logs(
        &self,
        job_id: Uuid,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<JobLog>, StoreError> {
        let rows: Vec<(i64, DateTime<Utc>, String, String, String)> = sqlx::query_as(
            "SELECT id, created_at, level, stage, output FROM provisioner_job_logs
              WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(job_id)
        .bind(after_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, created_at, level, stage, output)| JobLog {
                id,
                created_at,
                level,
                stage,
                output,
            })
            .collect())
    }
}
