-- Sign-in beyond passwords (issue 8): verified email, avatar, external
-- identities, single-use tokens, failed-attempt records, TOTP.

ALTER TABLE users ADD COLUMN email_verified_at BIGINT;
ALTER TABLE users ADD COLUMN avatar_asset_id TEXT REFERENCES assets(id) ON DELETE SET NULL;
-- Accounts made before verification existed keep working.
UPDATE users SET email_verified_at = created_at;

-- An account's sign-in through an external provider: `provider` is
-- `google`, `github` or `oidc:<name>`; `subject` is the provider's stable id.
CREATE TABLE identities (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    email TEXT,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE UNIQUE INDEX identities_subject ON identities(provider, subject);
CREATE INDEX identities_user ON identities(user_id);

-- Single-use tokens (email verification, password reset, email change,
-- identity linking, pending sign-in steps, OAuth state). Only the hash of a
-- token is stored; `used_at` makes it single-use.
CREATE TABLE auth_tokens (
    id TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    user_id TEXT REFERENCES users(id) ON DELETE CASCADE,
    data TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX auth_tokens_user ON auth_tokens(user_id, purpose);
CREATE INDEX auth_tokens_expiry ON auth_tokens(expires_at);

-- Failed sign-in attempts per bucket (hashed account email, truncated IP),
-- for throttling. Swept after a day.
CREATE TABLE auth_failures (
    id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX auth_failures_bucket ON auth_failures(bucket, at);

-- TOTP second factor (RFC 6238). `last_step` refuses a code used before.
CREATE TABLE user_totp (
    user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    secret TEXT NOT NULL,
    enabled_at BIGINT NOT NULL,
    last_step BIGINT NOT NULL DEFAULT 0
);

-- One-time recovery codes, stored hashed.
CREATE TABLE recovery_codes (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at BIGINT
);
CREATE INDEX recovery_codes_user ON recovery_codes(user_id);
