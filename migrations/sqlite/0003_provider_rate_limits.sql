-- Rate limits shared by every chat of the replica, kept across restarts (spec/chatretry.md
-- §11.7): a provider credential (provider, base URL and API key reference; never the key) that
-- answered a call with a rate limit and a Retry-After is held back until `hold_until`.
CREATE TABLE provider_rate_limits (
    credential  TEXT PRIMARY KEY NOT NULL,
    hold_until  TEXT NOT NULL,
    -- The failure that set the hold (JSON: kind, status code, provider, message).
    reason      TEXT NOT NULL,
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'))
);
