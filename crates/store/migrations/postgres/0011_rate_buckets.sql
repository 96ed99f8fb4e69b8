-- Rate-limit token buckets shared by every node (no account link: keys are
-- route class, scope and a network address, account id or key hash).
CREATE TABLE rate_buckets (
    key TEXT PRIMARY KEY,
    level BIGINT NOT NULL,
    at_ms BIGINT NOT NULL
);
