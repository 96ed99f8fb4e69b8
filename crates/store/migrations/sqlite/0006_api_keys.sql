-- Per-user API keys for the OpenAI-compatible and native APIs. Only the
-- SHA-256 of the secret is kept; the prefix is what the owner sees.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_owner ON api_keys(owner_id, id);

-- Server-wide secrets (e.g. the key that signs expiring download links),
-- created once and shared by every node.
CREATE TABLE server_secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    created_at BIGINT NOT NULL
);
