-- chatd schema for the embedded SQLite store, version 1: the same tables, columns and
-- constraints as migrations/postgres/ up to its 0005, in SQLite's types.
--
-- Types: ids are 16-byte BLOBs (uuid); times are RFC 3339 TEXT in UTC, always with six
-- fractional digits (`now` is strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'), the backend binds
-- times in the same form), so they compare as text in time order; JSON is TEXT; booleans are
-- INTEGER 0/1; the PostgreSQL enum types are TEXT with a CHECK.
--
-- The version rules of spec/engine.md §7 are triggers here as in PostgreSQL (T1–T4 at the end
-- of this file). Every transition starts with the lock-and-bump of `snapshot_version`; SQLite
-- runs one writer at a time, so the lock is the write transaction itself.

-- Tenancy and authentication ------------------------------------------------------------------

CREATE TABLE organizations (
    id           BLOB PRIMARY KEY NOT NULL DEFAULT (randomblob(16)),
    name         TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'))
);

CREATE TABLE users (
    id           BLOB PRIMARY KEY NOT NULL DEFAULT (randomblob(16)),
    username     TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL DEFAULT '',
    role         TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
    suspended    INTEGER NOT NULL DEFAULT 0,
    email        TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'))
);
CREATE UNIQUE INDEX users_email_idx ON users (lower(email)) WHERE email <> '';

CREATE TABLE organization_members (
    organization_id BLOB NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')),
    PRIMARY KEY (organization_id, user_id)
);

-- API tokens: only a hash of the secret is stored; `prefix` identifies the token.
CREATE TABLE api_keys (
    id           BLOB PRIMARY KEY NOT NULL DEFAULT (randomblob(16)),
    user_id      BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL DEFAULT '',
    prefix       TEXT NOT NULL UNIQUE,
    secret_hash  BLOB NOT NULL,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')),
    expires_at   TEXT,
    last_used_at TEXT,
    revoked_at   TEXT
);
CREATE INDEX api_keys_user_id_idx ON api_keys (user_id);
CREATE UNIQUE INDEX api_keys_user_name_idx ON api_keys (user_id, name) WHERE revoked_at IS NULL;
CREATE INDEX api_keys_user_created_idx ON api_keys (user_id, created_at DESC, id DESC);

-- Models and providers (spec/engine.md §8.7) -----------------------------------------------------

CREATE TABLE chat_providers (
    id          BLOB PRIMARY KEY NOT NULL DEFAULT (randomblob(16)),
    provider    TEXT NOT NULL CHECK (provider IN (
        'anthropic', 'azure', 'bedrock', 'google', 'openai', 'openai-compat', 'openrouter', 'vercel'
    )),
    -- A reference to the key (`env:NAME`, `file:PATH`), never the key itself.
    api_key_ref TEXT NOT NULL DEFAULT '',
    base_url    TEXT NOT NULL DEFAULT '',
    enabled     INTEGER NOT NULL DEFAULT 1,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'))
);

CREATE TABLE chat_model_configs (
    id                    BLOB PRIMARY KEY NOT NULL DEFAULT (randomblob(16)),
    organization_id       BLOB NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    provider_id           BLOB NOT NULL REFERENCES chat_providers (id),
    model                 TEXT NOT NULL,
    display_name          TEXT NOT NULL DEFAULT '',
    enabled               INTEGER NOT NULL DEFAULT 1,
    is_default            INTEGER NOT NULL DEFAULT 0,
    deleted               INTEGER NOT NULL DEFAULT 0,
    context_limit         INTEGER NOT NULL CHECK (context_limit > 0),
    compression_threshold INTEGER NOT NULL DEFAULT 70
        CHECK (compression_threshold BETWEEN 0 AND 100),
    max_output_tokens     INTEGER CHECK (max_output_tokens > 0),
    temperature           REAL CHECK (temperature >= 0),
    options               TEXT NOT NULL DEFAULT '{}',
    created_at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')),
    updated_at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'))
);
-- One default per organisation.
CREATE UNIQUE INDEX chat_model_configs_one_default_idx
    ON chat_model_configs (organization_id) WHERE is_default AND NOT deleted;

-- Provisioning: jobs, templates, workspaces, agents (spec/engine.md §8.6) ----------------------

CREATE TABLE provisioner_jobs (
    id              BLOB PRIMARY KEY NOT NULL DEFAULT (randomblob(16)),
    organization_id BLOB NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    type            TEXT NOT NULL CHECK (type IN ('template_version_import', 'workspace_build')),
    input           TEXT NOT NULL DEFAULT '{}',
    worker_id       BLOB,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')),
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')),
    started_at      TEXT,
    canceled_at     TEXT,
    completed_at    TEXT,
    error           TEXT NOT NULL DEFAULT '',
    error_code      TEXT NOT NULL DEFAULT '',
    -- Derived, first match wins (spec/engine.md §8.6 "job_status rule").
    job_status      TEXT GENERATED ALWAYS AS (
        CASE
            WHEN completed_at IS NOT NULL AND error <> '' THEN 'failed'
            WHEN completed_at IS NOT NULL AND canceled_at IS NOT NULL THEN 'canceled'
            WHEN completed_at IS NOT NULL THEN 'succeeded'
            WHEN error <> '' THEN 'failed'
            WHEN canceled_at IS NOT NULL THEN 'canceling'
            WHEN started_at IS NULL THEN 'pending'
            ELSE 'running'
        END
    ) STORED
);
-- Workers take pending jobs oldest first.
CREATE INDEX provisioner_jobs_pending_idx ON provisioner_jobs (created_at) WHERE started_at IS NULL;

CREATE TABLE provisioner_job_logs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     BLOB NOT NULL REFERENCES provisioner_jobs (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')),
    level      TEXT NOT NULL DEFAULT 'info',
    stage      TEXT NOT NULL DEFAULT '',
    output     TEXT NOT NULL
);
CREATE INDEX provisioner_job_logs_job_id_idx ON provisioner_job_logs (job_id, id);

CREATE TABLE templates (
    id                     BLOB PRIMARY KEY NOT NULL DEFAULT (randomblob(16)),
    organization_id        BLOB NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name                   TEXT NOT NULL,
    display_name           TEXT NOT NULL DEFAULT '',
    description            TEXT NOT NULL DEFAULT '',
    deleted                INTEGER NOT NULL DEFAULT 0,
    -- Non-empty text = deprecated (the text says why).
    deprecated             TEXT NOT NULL DEFAULT '',
    active_version_id      BLOB REFERENCES template_versions (id),
    require_active_version INTEGER NOT NULL DEFAULT 0,
    chat_enabled           INTEGER NOT NULL DEFAULT 1,
    default_ttl_ms         INTEGER NOT NULL DEFAULT 0,
    created_by             BLOB REFERENCES users (id),
    created_at             TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')),
    updated_at             TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'))
);
CREATE UNIQUE INDEX templates_org_name_idx ON templates (organization_id, lower(name)) WHERE NOT deleted;

-- Template versions are immutable once pushed.
CREATE TABLE template_versions (
    id                 BLOB PRIMARY KEY NOT NULL DEFAULT (randomblob(16)),
    template_id        BLOB NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
    name               TEXT NOT NULL DEFAULT '',
    message            TEXT NOT NULL DEFAULT '',
    readme             TEXT NOT NULL DEFAULT '',
    job_id             BLOB NOT NULL REFERENCES provisioner_jobs (id),
    has_external_agent INTEGER NOT NULL DEFAULT 0,
    -- The manifest (startup script, agent settings) and the files of the version.
    manifest           TEXT NOT NULL DEFAULT '{}',
    files              TEXT NOT NULL DEFAULT '[]',
    created_by         BLOB REFERENCES users (id),
    created_at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'))
);
CREATE INDEX template_versions_template_id_idx ON template_versions (template_id, created_at);

CREATE TABLE template_version_parameters (
    template_version_id BLOB NOT NULL REFERENCES template_versions (id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    display_name        TEXT NOT NULL DEFAULT '',
    description         TEXT NOT NULL DEFAULT '',
    type                TEXT NOT NULL DEFAULT 'string',
    form_type           TEXT NOT NULL DEFAULT '',
    mutable             INTEGER NOT NULL DEFAULT 0,
    ephemeral           INTEGER NOT NULL DEFAULT 0,
    -- NULL = no default: the parameter is required.
    default_value       TEXT,
    options             TEXT NOT NULL DEFAULT '[]',
    validation_regex    TEXT NOT NULL DEFAULT '',
    validation_min      INTEGER,
    validation_max      INTEGER,
    validation_error    TEXT NOT NULL DEFAULT '',
    display_order       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (template_version_id, name)
);

CREATE TABLE template_version_presets (
    id                  BLOB PRIMARY KEY NOT NULL DEFAULT (randomblob(16)),
    template_version_id BLOB NOT NULL REFERENCES template_versions (id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    is_default          INTEGER NOT NULL DEFAULT 0,
    description         TEXT NOT NULL DEFAULT '',
    icon                TEXT NOT NULL DEFAULT '',
    UNIQUE (template_version_id, name)
);

CREATE TABLE template_version_preset_parameters (
    preset_id BLOB NOT NULL REFERENCES template_version_presets (id) ON DELETE CASCADE,
    name      TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (preset_id, name)
);

CREATE TABLE workspaces (
    id                   BLOB PRIMARY KEY NOT NULL DEFAULT (randomblob(16)),
    owner_id             BLOB NOT NULL REFERENCES users (id),
    organization_id      BLOB NOT NULL REFERENCES organizations (id),
    template_id          BLOB NOT NULL REFERENCES templates (id),
    name                 TEXT NOT NULL,
    deleted              INTEGER NOT NULL DEFAULT 0,
    ttl_ms               INTEGER,
    -- The secret chatd sends as `authorization: Bearer` when it calls the workspace's agent.
    control_plane_secret TEXT NOT NULL DEFAULT '',
    created_at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')),
    updated_at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'))
);
CREATE UNIQUE INDEX workspaces_owner_name_idx ON workspaces (owner_id, lower(name)) WHERE NOT deleted;
CREATE INDEX workspaces_template_live ON workspaces (template_id, owner_id) WHERE NOT deleted;
CREATE INDEX workspaces_org_created_idx ON workspaces (organization_id, created_at DESC, id DESC)
    WHERE NOT deleted;

CREATE TABLE workspace_builds (
    id                  BLOB PRIMARY KEY NOT NULL DEFAULT (randomblob(16)),
    workspace_id        BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    build_number        INTEGER NOT NULL,
    transition          TEXT NOT NULL CHECK (transition IN ('start', 'stop', 'delete')),
    job_id              BLOB NOT NULL UNIQUE REFERENCES provisioner_jobs (id),
    template_version_id BLOB NOT NULL REFERENCES template_versions (id),
    initiator_id        BLOB REFERENCES users (id),
    reason              TEXT NOT NULL DEFAULT 'initiator',
    parameters          TEXT NOT NULL DEFAULT '[]',
    created_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')),
    UNIQUE (workspace_id, build_number)
);

CREATE TABLE workspace_resources (
    id         BLOB PRIMARY KEY NOT NULL DEFAULT (randomblob(16)),
    job_id     BLOB NOT NULL REFERENCES provisioner_jobs (id) ON DELETE CASCADE,
    type       TEXT NOT NULL,
    name       TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'))
);
CREATE INDEX workspace_resources_job_id_idx ON workspace_resources (job_id);

CREATE TABLE workspace_agents (
    id                             BLOB PRIMARY KEY NOT NULL DEFAULT (randomblob(16)),
    resource_id                    BLOB NOT NULL REFERENCES workspace_resources (id) ON DELETE CASCADE,
    name                           TEXT NOT NULL,
    parent_id                      BLOB REFERENCES workspace_agents (id),
    display_order                  INTEGER NOT NULL DEFAULT 0,
    created_at                     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')),
    first_connected_at             TEXT,
    last_connected_at              TEXT,
    disconnected_at                TEXT,
    -- 0 disables the never-connected timeout.
    connection_timeout_seconds     INTEGER NOT NULL DEFAULT 0,
    lifecycle_state                TEXT NOT NULL DEFAULT 'created' CHECK (lifecycle_state IN (
        'created', 'starting', 'start_timeout', 'start_error', 'ready',
        'shutting_down', 'shutdown_timeout', 'shutdown_error', 'off'
    )),
    lifecycle_changed_at           TEXT,
    directory                      TEXT NOT NULL DEFAULT '',
    expanded_directory             TEXT NOT NULL DEFAULT '',
    operating_system               TEXT NOT NULL DEFAULT '',
    -- Where the control plane dials the agent, as the agent reported it.
    address                        TEXT NOT NULL DEFAULT '',
    -- Hash of the agent's token for the agent API.
    auth_token_hash                BLOB,
    deleted                        INTEGER NOT NULL DEFAULT 0,
    -- What the agent runs when it starts, from the template version's manifest.
    startup_script                 TEXT NOT NULL DEFAULT '',
    startup_script_timeout_seconds INTEGER NOT NULL DEFAULT 0,
    env                            TEXT NOT NULL DEFAULT '{}',
    logs_bytes                     INTEGER NOT NULL DEFAULT 0,
    logs_overflowed                INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX workspace_agents_resource_id_idx ON workspace_agents (resource_id);
CREATE UNIQUE INDEX workspace_agents_token_idx ON workspace_agents (auth_token_hash)
    WHERE auth_token_hash IS NOT NULL;

CREATE TABLE workspace_agent_logs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id   BLOB NOT NULL REFERENCES workspace_agents (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')),
    level      TEXT NOT NULL DEFAULT 'info',
    source     TEXT NOT NULL DEFAULT '',
    output     TEXT NOT NULL
);
CREATE INDEX workspace_agent_logs_agent_idx ON workspace_agent_logs (agent_id, id);

-- Chats (spec/engine.md §8.2–§8.5) ---------------------------------------------------------------

CREATE TABLE chats (
    id                          BLOB PRIMARY KEY NOT NULL DEFAULT (randomblob(16)),
    organization_id             BLOB NOT NULL REFERENCES organizations (id),
    owner_id                    BLOB NOT NULL REFERENCES users (id),
    workspace_id                BLOB REFERENCES workspaces (id) ON DELETE SET NULL,
    build_id                    BLOB REFERENCES workspace_builds (id) ON DELETE SET NULL,
    agent_id                    BLOB REFERENCES workspace_agents (id) ON DELETE SET NULL,
    title                       TEXT NOT NULL DEFAULT 'New Chat',
    labels                      TEXT NOT NULL DEFAULT '{}',
    pin_order                   INTEGER NOT NULL DEFAULT 0,
    dynamic_tools               TEXT,
    system_prompt               TEXT,
    last_model_config_id        BLOB NOT NULL REFERENCES chat_model_configs (id),
    last_reasoning_effort       TEXT,
    status                      TEXT NOT NULL DEFAULT 'waiting' CHECK (status IN (
        'waiting', 'running', 'error', 'requires_action', 'interrupting',
        -- Legacy values: rows holding them classify as Invalid; the API never returns them.
        'pending', 'paused', 'completed'
    )),
    archived                    INTEGER NOT NULL DEFAULT 0,
    last_error                  TEXT,
    requires_action_deadline_at TEXT,
    compaction_requested_at     TEXT,
    retry_state                 TEXT,
    retry_window_started_at     TEXT,
    worker_id                   BLOB,
    runner_id                   BLOB,
    snapshot_version            INTEGER NOT NULL DEFAULT 1,
    history_version             INTEGER NOT NULL DEFAULT 0,
    queue_version               INTEGER NOT NULL DEFAULT 0,
    generation_attempt          INTEGER NOT NULL DEFAULT 0,
    retry_state_version         INTEGER NOT NULL DEFAULT 0,
    created_at                  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')),
    updated_at                  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'))
);
CREATE INDEX chats_owner_id_idx ON chats (owner_id);
CREATE INDEX chats_workspace_id_idx ON chats (workspace_id);
CREATE INDEX chats_organization_id_idx ON chats (organization_id);
CREATE INDEX chats_agent_id_idx ON chats (agent_id) WHERE agent_id IS NOT NULL;
-- Acquisition: runnable chats oldest first.
CREATE INDEX chats_acquisition_idx ON chats (status, updated_at, id) WHERE archived = 0;

CREATE TABLE chat_messages (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id               BLOB NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    role                  TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content               TEXT NOT NULL DEFAULT '[]',
    visibility            TEXT NOT NULL DEFAULT 'both' CHECK (visibility IN ('user', 'model', 'both')),
    created_by            BLOB,
    model_config_id       BLOB,
    created_at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')),
    compressed            INTEGER NOT NULL DEFAULT 0,
    deleted               INTEGER NOT NULL DEFAULT 0,
    -- The snapshot of the transaction that wrote the row (T1).
    revision              INTEGER NOT NULL,
    queued_message_id     INTEGER,
    reasoning_effort      TEXT,
    input_tokens          INTEGER,
    output_tokens         INTEGER,
    total_tokens          INTEGER,
    reasoning_tokens      INTEGER,
    cache_creation_tokens INTEGER,
    cache_read_tokens     INTEGER,
    context_limit         INTEGER,
    runtime_ms            INTEGER,
    provider_response_id  TEXT
);
CREATE INDEX chat_messages_chat_id_idx ON chat_messages (chat_id);
CREATE INDEX chat_messages_chat_created_idx ON chat_messages (chat_id, created_at);
CREATE INDEX chat_messages_boundary_idx ON chat_messages (chat_id, id) WHERE compressed;
CREATE INDEX chat_messages_revision_idx ON chat_messages (chat_id, revision);

CREATE TABLE chat_queued_messages (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id          BLOB NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    content          TEXT NOT NULL,
    model_config_id  BLOB,
    reasoning_effort TEXT,
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')),
    -- Only the order within a chat matters; the backend appends with max(position) + 1 and
    -- promotes to the head with min(position) - 1.
    position         INTEGER NOT NULL,
    created_by       BLOB NOT NULL
);
CREATE INDEX chat_queued_messages_chat_order_idx ON chat_queued_messages (chat_id, position, id);

-- Leases.
CREATE TABLE chat_heartbeats (
    chat_id      BLOB NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    runner_id    BLOB NOT NULL,
    heartbeat_at TEXT NOT NULL,
    PRIMARY KEY (chat_id, runner_id)
);
CREATE INDEX chat_heartbeats_heartbeat_at_idx ON chat_heartbeats (heartbeat_at);

-- Where each live worker serves the part relay (one replica per file: only this one).
CREATE TABLE chatd_workers (
    worker_id     BLOB PRIMARY KEY NOT NULL,
    relay_address TEXT NOT NULL,
    heartbeat_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'))
);

-- The idempotency ledger of side-effecting tool calls (spec/chattool.md §10.2).
CREATE TABLE chat_tool_executions (
    chat_id       BLOB NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    tool_call_id  TEXT NOT NULL,
    tool_name     TEXT NOT NULL,
    args_sha256   BLOB NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('dispatched', 'completed')),
    result        TEXT,
    runner_id     BLOB,
    dispatched_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')),
    completed_at  TEXT,
    PRIMARY KEY (chat_id, tool_call_id),
    CHECK ((state = 'completed') = (result IS NOT NULL AND completed_at IS NOT NULL))
);
CREATE INDEX chat_tool_executions_dispatched_at ON chat_tool_executions (dispatched_at);

-- Secrets of the deployment, created on first use (`relay` authenticates the part relay).
CREATE TABLE chatd_cluster_secrets (
    name       TEXT PRIMARY KEY NOT NULL,
    secret     TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'))
);

-- Version triggers (spec/engine.md §7) -----------------------------------------------------------

-- T1: the revision of a message row is the snapshot of the transaction that wrote it. An insert
-- names it as `(SELECT snapshot_version FROM chats WHERE id = chat_id)`; any other value is
-- refused, as is moving a row to another chat. A changed row takes the current snapshot.
CREATE TRIGGER t1_chat_messages_revision_insert
    BEFORE INSERT ON chat_messages
    WHEN NEW.revision IS NOT (SELECT snapshot_version FROM chats WHERE id = NEW.chat_id)
BEGIN
    SELECT RAISE(ABORT, 'chat_messages.revision is maintained by the database');
END;

CREATE TRIGGER t1_chat_messages_revision_update
    BEFORE UPDATE OF revision, chat_id ON chat_messages
    WHEN NEW.chat_id IS NOT OLD.chat_id
      OR (NEW.revision IS NOT OLD.revision
          AND NEW.revision IS NOT (SELECT snapshot_version FROM chats WHERE id = NEW.chat_id))
BEGIN
    SELECT RAISE(ABORT, 'chat_messages.revision is maintained by the database');
END;

-- T1 and T2 of a changed row: it takes the current snapshot, and the chat's history_version
-- moves to it with a fresh attempt count and retry window.
CREATE TRIGGER t2_chat_messages_history_updated
    AFTER UPDATE ON chat_messages
    WHEN NEW.role IS NOT OLD.role OR NEW.content IS NOT OLD.content
      OR NEW.visibility IS NOT OLD.visibility OR NEW.created_by IS NOT OLD.created_by
      OR NEW.model_config_id IS NOT OLD.model_config_id OR NEW.created_at IS NOT OLD.created_at
      OR NEW.compressed IS NOT OLD.compressed OR NEW.deleted IS NOT OLD.deleted
      OR NEW.queued_message_id IS NOT OLD.queued_message_id
      OR NEW.reasoning_effort IS NOT OLD.reasoning_effort
      OR NEW.input_tokens IS NOT OLD.input_tokens OR NEW.output_tokens IS NOT OLD.output_tokens
      OR NEW.total_tokens IS NOT OLD.total_tokens
      OR NEW.reasoning_tokens IS NOT OLD.reasoning_tokens
      OR NEW.cache_creation_tokens IS NOT OLD.cache_creation_tokens
      OR NEW.cache_read_tokens IS NOT OLD.cache_read_tokens
      OR NEW.context_limit IS NOT OLD.context_limit OR NEW.runtime_ms IS NOT OLD.runtime_ms
      OR NEW.provider_response_id IS NOT OLD.provider_response_id
BEGIN
    UPDATE chat_messages
       SET revision = (SELECT snapshot_version FROM chats WHERE id = NEW.chat_id)
     WHERE id = NEW.id;
    UPDATE chats
       SET history_version = snapshot_version, generation_attempt = 0,
           retry_window_started_at = NULL
     WHERE id = NEW.chat_id;
END;

-- T2: an inserted row moves history_version to the snapshot, with a fresh attempt count and
-- retry window.
CREATE TRIGGER t2_chat_messages_history_inserted
    AFTER INSERT ON chat_messages
BEGIN
    UPDATE chats
       SET history_version = snapshot_version, generation_attempt = 0,
           retry_window_started_at = NULL
     WHERE id = NEW.chat_id;
END;

-- T3: any queue change moves queue_version to the current snapshot.
CREATE TRIGGER t3_chat_queued_messages_insert
    AFTER INSERT ON chat_queued_messages
BEGIN
    UPDATE chats SET queue_version = snapshot_version WHERE id = NEW.chat_id;
END;

CREATE TRIGGER t3_chat_queued_messages_delete
    AFTER DELETE ON chat_queued_messages
BEGIN
    UPDATE chats SET queue_version = snapshot_version WHERE id = OLD.chat_id;
END;

CREATE TRIGGER t3_chat_queued_messages_update
    AFTER UPDATE OF content, model_config_id, position, created_by ON chat_queued_messages
BEGIN
    UPDATE chats SET queue_version = snapshot_version WHERE id = NEW.chat_id;
END;

-- T4: retry_state belongs to one generation attempt; its version is derived.
CREATE TRIGGER t4_chats_retry_state_version
    BEFORE UPDATE OF retry_state_version ON chats
    WHEN NEW.retry_state_version IS NOT OLD.retry_state_version
     AND NEW.retry_state_version IS NOT NEW.snapshot_version
BEGIN
    SELECT RAISE(ABORT, 'chats.retry_state_version is maintained by the database');
END;

CREATE TRIGGER t4_chats_generation_attempt
    AFTER UPDATE OF generation_attempt ON chats
    WHEN NEW.generation_attempt IS NOT OLD.generation_attempt AND NEW.retry_state IS NOT NULL
BEGIN
    UPDATE chats SET retry_state = NULL WHERE id = NEW.id;
END;

CREATE TRIGGER t4_chats_retry_state
    AFTER UPDATE OF retry_state ON chats
    WHEN NEW.retry_state IS NOT OLD.retry_state
BEGIN
    UPDATE chats SET retry_state_version = snapshot_version WHERE id = NEW.id;
END;
