-- The administration and workspace APIs (chatd.v1.AdminService, WorkspaceService): what their
-- messages carry that the first schema did not store.

-- Organizations and users report when they last changed; users get a unique email address
-- (empty for users created before it existed, which never collide).
ALTER TABLE organizations ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE users
    ADD COLUMN email text NOT NULL DEFAULT '',
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE UNIQUE INDEX users_email_idx ON users (lower(email)) WHERE email <> '';

-- A token's name is unique among its user's valid tokens. Existing duplicates are renamed with
-- their prefix so the index can be built.
UPDATE api_keys k SET name = k.name || '-' || k.prefix
 WHERE k.revoked_at IS NULL
   AND EXISTS (SELECT 1 FROM api_keys o
                WHERE o.user_id = k.user_id AND o.name = k.name AND o.revoked_at IS NULL
                  AND (o.created_at, o.id) < (k.created_at, k.id));
CREATE UNIQUE INDEX api_keys_user_name_idx ON api_keys (user_id, name) WHERE revoked_at IS NULL;
CREATE INDEX api_keys_user_created_idx ON api_keys (user_id, created_at DESC, id DESC);

-- Per-call generation limits of a model configuration; NULL = the provider's default.
ALTER TABLE chat_model_configs
    ADD COLUMN max_output_tokens integer CHECK (max_output_tokens > 0),
    ADD COLUMN temperature double precision CHECK (temperature >= 0);

-- Workspace listings run newest first within the caller's organizations.
CREATE INDEX workspaces_org_created_idx ON workspaces (organization_id, created_at DESC, id DESC)
    WHERE NOT deleted;
