-- Secrets shared by every replica of one deployment, created by the first replica that needs
-- one (chatd's own addition). `relay` authenticates the internal part relay between replicas
-- (ChatPartsRelay, spec/engine.md §14.4): replicas on one database trust each other through it
-- without any configuration.
CREATE TABLE chatd_cluster_secrets (
    name       text PRIMARY KEY,
    secret     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
