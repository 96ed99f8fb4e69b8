-- Per-account data keys, stored only wrapped by the master key.
CREATE TABLE account_keys (
    user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    wrapped_key BYTEA NOT NULL,
    master_key_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    rewrapped_at BIGINT
);

-- Security and admin actions: who did what to whom, when, from where
-- (truncated IP). Kept past account deletion, pseudonymised there.
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor_id TEXT,
    action TEXT NOT NULL,
    target_id TEXT,
    ip TEXT,
    detail TEXT
);
CREATE INDEX audit_actor ON audit_log(actor_id, id);
CREATE INDEX audit_target ON audit_log(target_id, id);

-- Purged accounts (pseudonymous id + time). A copy lives outside the
-- database so restoring an older backup cannot bring an account back.
CREATE TABLE tombstones (
    id TEXT PRIMARY KEY,
    purged_at BIGINT NOT NULL
);
