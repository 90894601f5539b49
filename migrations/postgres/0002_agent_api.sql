-- The agent-facing API (chatd.v1.AgentApiService): what an agent needs from its manifest, the
-- secret the control plane uses to call the agent, and the agents' startup logs.

-- The per-workspace secret chatd sends as `authorization: Bearer` when it calls the workspace's
-- agent (wsagent.v1.Agent). Generated with the workspace.
ALTER TABLE workspaces ADD COLUMN control_plane_secret text NOT NULL DEFAULT '';

-- What the agent runs when it starts, from the template version's manifest.
ALTER TABLE workspace_agents
    ADD COLUMN startup_script text NOT NULL DEFAULT '',
    ADD COLUMN startup_script_timeout_seconds integer NOT NULL DEFAULT 0,
    ADD COLUMN env jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN logs_bytes bigint NOT NULL DEFAULT 0,
    ADD COLUMN logs_overflowed boolean NOT NULL DEFAULT false;

CREATE UNIQUE INDEX workspace_agents_token_idx ON workspace_agents (auth_token_hash)
    WHERE auth_token_hash IS NOT NULL;

CREATE TABLE workspace_agent_logs (
    id         bigserial PRIMARY KEY,
    agent_id   uuid NOT NULL REFERENCES workspace_agents (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    level      text NOT NULL DEFAULT 'info',
    source     text NOT NULL DEFAULT '',
    output     text NOT NULL
);
CREATE INDEX workspace_agent_logs_agent_idx ON workspace_agent_logs (agent_id, id);
