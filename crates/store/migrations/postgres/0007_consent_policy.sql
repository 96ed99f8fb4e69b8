-- Proof of every consent choice (C21): which browser (the consent cookie's
-- random id) or account, the categories, the policy version and the source
-- (banner, settings or the Global Privacy Control signal).
CREATE TABLE consents (
    id TEXT PRIMARY KEY,
    user_id TEXT REFERENCES users(id) ON DELETE CASCADE,
    visitor_id TEXT NOT NULL,
    analytics BOOLEAN NOT NULL,
    preferences BOOLEAN NOT NULL,
    marketing BOOLEAN NOT NULL,
    policy_version TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX consents_user ON consents(user_id, id);
CREATE INDEX consents_visitor ON consents(visitor_id, id);

-- Per-account privacy choices: restriction of processing (C37) and the
-- marketing mail opt-in (C25). No row: not restricted, no marketing.
CREATE TABLE account_privacy (
    user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    restricted BOOLEAN NOT NULL DEFAULT FALSE,
    marketing_opt_in BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at BIGINT NOT NULL
);

-- First-party analytics (C22). Visitors appear only as a keyed hash whose
-- key changes every day; yesterday's key is deleted, so hashes cannot be
-- linked across days or back to a person.
CREATE TABLE analytics_keys (
    day BIGINT PRIMARY KEY,
    secret BYTEA NOT NULL
);
CREATE TABLE analytics_events (
    id TEXT PRIMARY KEY,
    day BIGINT NOT NULL,
    at BIGINT NOT NULL,
    visitor TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL
);
CREATE INDEX analytics_events_day ON analytics_events(day);
CREATE TABLE analytics_daily (
    day BIGINT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    events BIGINT NOT NULL,
    visitors BIGINT NOT NULL,
    PRIMARY KEY (day, kind, name)
);

-- Request logs (C23): the address truncated (IPv4 /24, IPv6 /48) and the
-- user agent reduced to a browser family before the row is written.
CREATE TABLE request_logs (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    status BIGINT NOT NULL,
    ip_prefix TEXT,
    browser TEXT NOT NULL
);
CREATE INDEX request_logs_at ON request_logs(at);

-- Published policy versions (C42) and who accepted a material one (C43).
CREATE TABLE policy_versions (
    version TEXT PRIMARY KEY,
    material BOOLEAN NOT NULL,
    summary TEXT NOT NULL,
    effective_at BIGINT NOT NULL,
    published_at BIGINT NOT NULL
);
CREATE TABLE policy_acceptances (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    version TEXT NOT NULL REFERENCES policy_versions(version),
    accepted_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, version)
);

-- Marketing mail carries a one-click unsubscribe link (RFC 8058).
ALTER TABLE outbox ADD COLUMN unsubscribe_url TEXT;
