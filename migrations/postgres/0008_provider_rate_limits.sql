-- Rate limits shared by every replica (spec/chatretry.md §11.7): a provider credential (provider,
-- base URL and API key reference; never the key) that answered a call with a rate limit and a
-- Retry-After is held back until `hold_until` on every replica. Rows whose hold has ended mean
-- nothing and are overwritten by the next hold.
CREATE TABLE provider_rate_limits (
    credential  text PRIMARY KEY,
    hold_until  timestamptz NOT NULL,
    -- The failure that set the hold (kind, status code, provider, message), for the retry
    -- events of the chats that wait for it.
    reason      jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
