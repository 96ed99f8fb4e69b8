-- Content rules (C40): one row per refused or flagged prompt or upload.
-- The prompt text is kept (sealed with the account's key) only when the
-- operator turns on review retention; the hash is always there.
CREATE TABLE moderation_events (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    surface TEXT NOT NULL,
    category TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    action TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    prompt TEXT,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    reviewed_at BIGINT,
    reviewed_by TEXT
);
CREATE INDEX moderation_events_status ON moderation_events(status, id);
CREATE INDEX moderation_events_user ON moderation_events(user_id, id);

-- Reports of images (C41). The reporter may leave; the report stays until
-- the reported account goes.
CREATE TABLE reports (
    id TEXT PRIMARY KEY,
    reporter_id TEXT REFERENCES users(id) ON DELETE SET NULL,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    asset_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    resolution TEXT,
    reference TEXT,
    resolved_by TEXT,
    resolved_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX reports_status ON reports(status, id);
CREATE INDEX reports_owner ON reports(owner_id);

-- Fair claims look up each owner's running and recently started tasks.
CREATE INDEX tasks_owner_status ON tasks(owner_id, status, started_at);
