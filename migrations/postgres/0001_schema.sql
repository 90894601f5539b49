-- chatd schema, version 1 (spec/engine.md §7–§8, spec/chattool.md §10.2).
--
-- The version fields of `chats` fence concurrent work: `snapshot_version` is bumped by the
-- lock-and-bump statement that starts every transition transaction; the triggers at the end of
-- this file derive `history_version`, `queue_version`, `retry_state_version` and
-- `chat_messages.revision` from it. Applications never write those columns.

CREATE TYPE chat_status AS ENUM (
    'waiting', 'running', 'error', 'requires_action', 'interrupting',
    -- Legacy values: rows holding them classify as Invalid; the API never returns them.
    'pending', 'paused', 'completed'
);
CREATE TYPE chat_message_role AS ENUM ('system', 'user', 'assistant', 'tool');
CREATE TYPE chat_message_visibility AS ENUM ('user', 'model', 'both');
CREATE TYPE workspace_transition AS ENUM ('start', 'stop', 'delete');
CREATE TYPE provisioner_job_status AS ENUM (
    'pending', 'running', 'succeeded', 'canceling', 'canceled', 'failed', 'unknown'
);
CREATE TYPE workspace_agent_lifecycle AS ENUM (
    'created', 'starting', 'start_timeout', 'start_error', 'ready',
    'shutting_down', 'shutdown_timeout', 'shutdown_error', 'off'
);

-- Tenancy and authentication ------------------------------------------------------------------

CREATE TABLE organizations (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL UNIQUE,
    display_name text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    username     text NOT NULL UNIQUE,
    display_name text NOT NULL DEFAULT '',
    role         text NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
    suspended    boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE organization_members (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, user_id)
);

-- API tokens: only a hash of the secret is stored; `prefix` identifies the token.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL DEFAULT '',
    prefix       text NOT NULL UNIQUE,
    secret_hash  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_user_id_idx ON api_keys (user_id);

-- Models and providers (spec/engine.md §8.7) -----------------------------------------------------

CREATE TABLE chat_providers (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider    text NOT NULL CHECK (provider IN (
        'anthropic', 'azure', 'bedrock', 'google', 'openai', 'openai-compat', 'openrouter', 'vercel'
    )),
    -- A reference to the key (`env:NAME`, `file:PATH`), never the key itself.
    api_key_ref text NOT NULL DEFAULT '',
    base_url    text NOT NULL DEFAULT '',
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chat_model_configs (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id       uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    provider_id           uuid NOT NULL REFERENCES chat_providers (id),
    model                 text NOT NULL,
    display_name          text NOT NULL DEFAULT '',
    enabled               boolean NOT NULL DEFAULT true,
    is_default            boolean NOT NULL DEFAULT false,
    deleted               boolean NOT NULL DEFAULT false,
    context_limit         bigint NOT NULL CHECK (context_limit > 0),
    compression_threshold integer NOT NULL DEFAULT 70
        CHECK (compression_threshold BETWEEN 0 AND 100),
    options               jsonb NOT NULL DEFAULT '{}',
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
-- One default per organisation.
CREATE UNIQUE INDEX chat_model_configs_one_default_idx
    ON chat_model_configs (organization_id) WHERE is_default AND NOT deleted;

-- Provisioning: jobs, templates, workspaces, agents (spec/engine.md §8.6) ----------------------

CREATE TABLE provisioner_jobs (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    type            text NOT NULL CHECK (type IN ('template_version_import', 'workspace_build')),
    input           jsonb NOT NULL DEFAULT '{}',
    worker_id       uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    canceled_at     timestamptz,
    completed_at    timestamptz,
    error           text NOT NULL DEFAULT '',
    error_code      text NOT NULL DEFAULT '',
    -- Derived, first match wins (spec/engine.md §8.6 "job_status rule").
    job_status      provisioner_job_status GENERATED ALWAYS AS (
        CASE
            WHEN completed_at IS NOT NULL AND error <> '' THEN 'failed'::provisioner_job_status
            WHEN completed_at IS NOT NULL AND canceled_at IS NOT NULL THEN 'canceled'::provisioner_job_status
            WHEN completed_at IS NOT NULL THEN 'succeeded'::provisioner_job_status
            WHEN error <> '' THEN 'failed'::provisioner_job_status
            WHEN canceled_at IS NOT NULL THEN 'canceling'::provisioner_job_status
            WHEN started_at IS NULL THEN 'pending'::provisioner_job_status
            ELSE 'running'::provisioner_job_status
        END
    ) STORED
);
-- Workers take pending jobs oldest first (FOR UPDATE SKIP LOCKED).
CREATE INDEX provisioner_jobs_pending_idx ON provisioner_jobs (created_at) WHERE started_at IS NULL;

CREATE TABLE provisioner_job_logs (
    id         bigserial PRIMARY KEY,
    job_id     uuid NOT NULL REFERENCES provisioner_jobs (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    level      text NOT NULL DEFAULT 'info',
    stage      text NOT NULL DEFAULT '',
    output     text NOT NULL
);
CREATE INDEX provisioner_job_logs_job_id_idx ON provisioner_job_logs (job_id, id);

CREATE TABLE templates (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id        uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name                   text NOT NULL,
    display_name           text NOT NULL DEFAULT '',
    description            text NOT NULL DEFAULT '',
    deleted                boolean NOT NULL DEFAULT false,
    -- Non-empty text = deprecated (the text says why).
    deprecated             text NOT NULL DEFAULT '',
    active_version_id      uuid,
    require_active_version boolean NOT NULL DEFAULT false,
    chat_enabled           boolean NOT NULL DEFAULT true,
    default_ttl_ms         bigint NOT NULL DEFAULT 0,
    created_by             uuid REFERENCES users (id),
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX templates_org_name_idx ON templates (organization_id, lower(name)) WHERE NOT deleted;

-- Template versions are immutable once pushed.
CREATE TABLE template_versions (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    template_id        uuid NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
    name               text NOT NULL DEFAULT '',
    message            text NOT NULL DEFAULT '',
    readme             text NOT NULL DEFAULT '',
    job_id             uuid NOT NULL REFERENCES provisioner_jobs (id),
    has_external_agent boolean NOT NULL DEFAULT false,
    -- The manifest (startup script, agent settings) and the files of the version.
    manifest           jsonb NOT NULL DEFAULT '{}',
    files              jsonb NOT NULL DEFAULT '[]',
    created_by         uuid REFERENCES users (id),
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX template_versions_template_id_idx ON template_versions (template_id, created_at);
ALTER TABLE templates
    ADD CONSTRAINT templates_active_version_fk
    FOREIGN KEY (active_version_id) REFERENCES template_versions (id);

CREATE TABLE template_version_parameters (
    template_version_id uuid NOT NULL REFERENCES template_versions (id) ON DELETE CASCADE,
    name                text NOT NULL,
    display_name        text NOT NULL DEFAULT '',
    description         text NOT NULL DEFAULT '',
    type                text NOT NULL DEFAULT 'string',
    form_type           text NOT NULL DEFAULT '',
    mutable             boolean NOT NULL DEFAULT false,
    ephemeral           boolean NOT NULL DEFAULT false,
    -- NULL = no default: the parameter is required.
    default_value       text,
    options             jsonb NOT NULL DEFAULT '[]',
    validation_regex    text NOT NULL DEFAULT '',
    validation_min      integer,
    validation_max      integer,
    validation_error    text NOT NULL DEFAULT '',
    display_order       integer NOT NULL DEFAULT 0,
    PRIMARY KEY (template_version_id, name)
);

CREATE TABLE template_version_presets (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    template_version_id uuid NOT NULL REFERENCES template_versions (id) ON DELETE CASCADE,
    name                text NOT NULL,
    is_default          boolean NOT NULL DEFAULT false,
    description         text NOT NULL DEFAULT '',
    icon                text NOT NULL DEFAULT '',
    UNIQUE (template_version_id, name)
);

CREATE TABLE template_version_preset_parameters (
    preset_id uuid NOT NULL REFERENCES template_version_presets (id) ON DELETE CASCADE,
    name      text NOT NULL,
    value     text NOT NULL,
    PRIMARY KEY (preset_id, name)
);

CREATE TABLE workspaces (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id        uuid NOT NULL REFERENCES users (id),
    organization_id uuid NOT NULL REFERENCES organizations (id),
    template_id     uuid NOT NULL REFERENCES templates (id),
    name            text NOT NULL,
    deleted         boolean NOT NULL DEFAULT false,
    ttl_ms          bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX workspaces_owner_name_idx ON workspaces (owner_id, lower(name)) WHERE NOT deleted;

CREATE TABLE workspace_builds (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id        uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    build_number        integer NOT NULL,
    transition          workspace_transition NOT NULL,
    job_id              uuid NOT NULL UNIQUE REFERENCES provisioner_jobs (id),
    template_version_id uuid NOT NULL REFERENCES template_versions (id),
    initiator_id        uuid REFERENCES users (id),
    reason              text NOT NULL DEFAULT 'initiator',
    parameters          jsonb NOT NULL DEFAULT '[]',
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, build_number)
);

CREATE TABLE workspace_resources (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id     uuid NOT NULL REFERENCES provisioner_jobs (id) ON DELETE CASCADE,
    type       text NOT NULL,
    name       text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workspace_resources_job_id_idx ON workspace_resources (job_id);

CREATE TABLE workspace_agents (
    id                         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    resource_id                uuid NOT NULL REFERENCES workspace_resources (id) ON DELETE CASCADE,
    name                       text NOT NULL,
    parent_id                  uuid REFERENCES workspace_agents (id),
    display_order              integer NOT NULL DEFAULT 0,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    first_connected_at         timestamptz,
    last_connected_at          timestamptz,
    disconnected_at            timestamptz,
    -- 0 disables the never-connected timeout.
    connection_timeout_seconds integer NOT NULL DEFAULT 0,
    lifecycle_state            workspace_agent_lifecycle NOT NULL DEFAULT 'created',
    lifecycle_changed_at       timestamptz,
    directory                  text NOT NULL DEFAULT '',
    expanded_directory         text NOT NULL DEFAULT '',
    operating_system           text NOT NULL DEFAULT '',
    -- Where the control plane dials the agent, as the agent reported it.
    address                    text NOT NULL DEFAULT '',
    -- Hash of the agent's token for the agent API.
    auth_token_hash            bytea,
    deleted                    boolean NOT NULL DEFAULT false
);
CREATE INDEX workspace_agents_resource_id_idx ON workspace_agents (resource_id);

-- Chats (spec/engine.md §8.2–§8.5) ---------------------------------------------------------------

CREATE TABLE chats (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id             uuid NOT NULL REFERENCES organizations (id),
    owner_id                    uuid NOT NULL REFERENCES users (id),
    workspace_id                uuid REFERENCES workspaces (id) ON DELETE SET NULL,
    build_id                    uuid REFERENCES workspace_builds (id) ON DELETE SET NULL,
    agent_id                    uuid REFERENCES workspace_agents (id) ON DELETE SET NULL,
    title                       text NOT NULL DEFAULT 'New Chat',
    labels                      jsonb NOT NULL DEFAULT '{}',
    pin_order                   integer NOT NULL DEFAULT 0,
    dynamic_tools               jsonb,
    system_prompt               text,
    last_model_config_id        uuid NOT NULL REFERENCES chat_model_configs (id),
    last_reasoning_effort       text,
    status                      chat_status NOT NULL DEFAULT 'waiting',
    archived                    boolean NOT NULL DEFAULT false,
    last_error                  jsonb,
    requires_action_deadline_at timestamptz,
    compaction_requested_at     timestamptz,
    retry_state                 jsonb,
    retry_window_started_at     timestamptz,
    worker_id                   uuid,
    runner_id                   uuid,
    snapshot_version            bigint NOT NULL DEFAULT 1,
    history_version             bigint NOT NULL DEFAULT 0,
    queue_version               bigint NOT NULL DEFAULT 0,
    generation_attempt          bigint NOT NULL DEFAULT 0,
    retry_state_version         bigint NOT NULL DEFAULT 0,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chats_owner_id_idx ON chats (owner_id);
CREATE INDEX chats_workspace_id_idx ON chats (workspace_id);
CREATE INDEX chats_organization_id_idx ON chats (organization_id);
CREATE INDEX chats_agent_id_idx ON chats (agent_id) WHERE agent_id IS NOT NULL;
CREATE INDEX chats_labels_idx ON chats USING gin (labels);
-- Acquisition: runnable chats oldest first.
CREATE INDEX chats_acquisition_idx ON chats (status, updated_at, id) WHERE archived = false;

CREATE TABLE chat_messages (
    id                    bigserial PRIMARY KEY,
    chat_id               uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    role                  chat_message_role NOT NULL,
    content               jsonb NOT NULL DEFAULT '[]',
    visibility            chat_message_visibility NOT NULL DEFAULT 'both',
    created_by            uuid,
    model_config_id       uuid,
    created_at            timestamptz NOT NULL DEFAULT now(),
    compressed            boolean NOT NULL DEFAULT false,
    deleted               boolean NOT NULL DEFAULT false,
    -- Maintained by trigger T1 only.
    revision              bigint NOT NULL,
    queued_message_id     bigint,
    reasoning_effort      text,
    input_tokens          bigint,
    output_tokens         bigint,
    total_tokens          bigint,
    reasoning_tokens      bigint,
    cache_creation_tokens bigint,
    cache_read_tokens     bigint,
    context_limit         bigint,
    runtime_ms            bigint,
    provider_response_id  text
);
CREATE INDEX chat_messages_chat_id_idx ON chat_messages (chat_id);
CREATE INDEX chat_messages_chat_created_idx ON chat_messages (chat_id, created_at);
CREATE INDEX chat_messages_boundary_idx ON chat_messages (chat_id, id) WHERE compressed;
CREATE INDEX chat_messages_revision_idx ON chat_messages (chat_id, revision);

CREATE SEQUENCE chat_queued_messages_position_seq;

CREATE TABLE chat_queued_messages (
    id               bigserial PRIMARY KEY,
    chat_id          uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    content          jsonb NOT NULL,
    model_config_id  uuid,
    reasoning_effort text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Only the order within a chat matters; promote-to-head sets min(position) - 1.
    position         bigint NOT NULL DEFAULT nextval('chat_queued_messages_position_seq'),
    created_by       uuid NOT NULL
);
CREATE INDEX chat_queued_messages_chat_order_idx ON chat_queued_messages (chat_id, position, id);

-- Leases. UNLOGGED on purpose: rows lost in a crash only mean "stale", which is safe.
CREATE UNLOGGED TABLE chat_heartbeats (
    chat_id      uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    runner_id    uuid NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    PRIMARY KEY (chat_id, runner_id)
);
CREATE INDEX chat_heartbeats_heartbeat_at_idx ON chat_heartbeats (heartbeat_at);

-- Where each live worker serves the cross-replica part relay.
CREATE TABLE chatd_workers (
    worker_id     uuid PRIMARY KEY,
    relay_address text NOT NULL,
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

-- The idempotency ledger of tool calls (spec/chattool.md §10.2).
CREATE TABLE chat_tool_executions (
    chat_id      uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    tool_call_id text NOT NULL,
    tool_name    text NOT NULL,
    state        text NOT NULL DEFAULT 'started' CHECK (state IN ('started', 'completed')),
    process_id   text,
    result       jsonb,
    is_error     boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    PRIMARY KEY (chat_id, tool_call_id)
);

-- Version triggers (spec/engine.md §7) -----------------------------------------------------------

-- T1: the revision of a message row is the snapshot of the transaction that wrote it.
CREATE FUNCTION chat_messages_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.revision IS NOT NULL THEN
            RAISE EXCEPTION 'chat_messages.revision is maintained by the database'
                USING ERRCODE = 'check_violation';
        END IF;
    ELSE
        IF NEW.revision IS DISTINCT FROM OLD.revision THEN
            RAISE EXCEPTION 'chat_messages.revision is maintained by the database'
                USING ERRCODE = 'check_violation';
        END IF;
        IF NEW.chat_id IS DISTINCT FROM OLD.chat_id THEN
            RAISE EXCEPTION 'chat_messages.chat_id cannot change'
                USING ERRCODE = 'check_violation';
        END IF;
        IF NEW IS NOT DISTINCT FROM OLD THEN
            RETURN NEW; -- a no-op update keeps its revision
        END IF;
    END IF;
    SELECT snapshot_version INTO NEW.revision FROM chats WHERE id = NEW.chat_id;
    RETURN NEW;
END
$$;

CREATE TRIGGER t1_chat_messages_revision
    BEFORE INSERT OR UPDATE ON chat_messages
    FOR EACH ROW EXECUTE FUNCTION chat_messages_revision();

-- T2: any history change moves history_version to the current snapshot and starts a fresh
-- attempt count (and, chatd, a fresh retry window). Statement level, so a statement that also
-- updates the chat row does not conflict.
CREATE FUNCTION chat_messages_history_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE chats c
       SET history_version = c.snapshot_version,
           generation_attempt = 0,
           retry_window_started_at = NULL
     WHERE c.id IN (SELECT DISTINCT chat_id FROM new_rows);
    RETURN NULL;
END
$$;

CREATE FUNCTION chat_messages_history_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE chats c
       SET history_version = c.snapshot_version,
           generation_attempt = 0,
           retry_window_started_at = NULL
     WHERE c.id IN (
        SELECT n.chat_id
          FROM new_rows n
          JOIN old_rows o ON o.id = n.id
         WHERE n IS DISTINCT FROM o
     );
    RETURN NULL;
END
$$;

CREATE TRIGGER t2_chat_messages_history_inserted
    AFTER INSERT ON chat_messages
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION chat_messages_history_inserted();

CREATE TRIGGER t2_chat_messages_history_updated
    AFTER UPDATE ON chat_messages
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION chat_messages_history_updated();

-- T3: any queue change moves queue_version to the current snapshot.
CREATE FUNCTION chat_queued_messages_version() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    affected uuid;
BEGIN
    IF TG_OP = 'DELETE' THEN
        affected := OLD.chat_id;
    ELSE
        affected := NEW.chat_id;
    END IF;
    UPDATE chats SET queue_version = snapshot_version WHERE id = affected;
    RETURN NULL;
END
$$;

CREATE TRIGGER t3_chat_queued_messages_insert_delete
    AFTER INSERT OR DELETE ON chat_queued_messages
    FOR EACH ROW EXECUTE FUNCTION chat_queued_messages_version();

CREATE TRIGGER t3_chat_queued_messages_update
    AFTER UPDATE OF content, model_config_id, position, created_by ON chat_queued_messages
    FOR EACH ROW EXECUTE FUNCTION chat_queued_messages_version();

-- T4: retry_state belongs to one generation attempt; its version is derived.
CREATE FUNCTION chats_retry_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.retry_state_version IS DISTINCT FROM OLD.retry_state_version THEN
        RAISE EXCEPTION 'chats.retry_state_version is maintained by the database'
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.generation_attempt IS DISTINCT FROM OLD.generation_attempt THEN
        NEW.retry_state := NULL;
    END IF;
    IF NEW.retry_state IS DISTINCT FROM OLD.retry_state THEN
        NEW.retry_state_version := NEW.snapshot_version;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER t4_chats_retry_state
    BEFORE UPDATE OF retry_state, retry_state_version, generation_attempt ON chats
    FOR EACH ROW EXECUTE FUNCTION chats_retry_state();
