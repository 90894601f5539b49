-- The idempotency ledger of side-effecting tool calls (spec/chattool.md §10.2): a call replayed
-- after a crash or a lease takeover finds its row and returns the recorded outcome (or
-- re-attaches to the still-running process) instead of running twice. It replaces the
-- placeholder of 0001, which nothing wrote, with the columns of the spec.
DROP TABLE chat_tool_executions;

CREATE TABLE chat_tool_executions (
    chat_id       uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    tool_call_id  text NOT NULL,
    tool_name     text NOT NULL,
    args_sha256   bytea NOT NULL,
    state         text NOT NULL CHECK (state IN ('dispatched', 'completed')),
    result        jsonb,
    runner_id     uuid,
    dispatched_at timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    PRIMARY KEY (chat_id, tool_call_id),
    CHECK ((state = 'completed') = (result IS NOT NULL AND completed_at IS NOT NULL))
);

-- Purging rows of chats past the retention period scans by age.
CREATE INDEX chat_tool_executions_dispatched_at ON chat_tool_executions (dispatched_at);

-- list_templates counts distinct owners of live workspaces per template.
CREATE INDEX workspaces_template_live ON workspaces (template_id, owner_id) WHERE NOT deleted;
