-- Account deletion with a grace period (C31): while a row exists the account
-- is disabled (status 'deletion_pending') and the sweep purges it once
-- `purge_after` has passed; cancelling deletes the row.
CREATE TABLE account_deletions (
    user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    requested_at BIGINT NOT NULL,
    purge_after BIGINT NOT NULL
);
CREATE INDEX account_deletions_due ON account_deletions(purge_after);

-- Support and feedback messages (C26), kept with the account. The body is
-- sealed with the account's data key, like prompts.
CREATE TABLE support_tickets (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX support_tickets_user ON support_tickets(user_id, id);

-- Reports that an account belongs to a child under 13 (C05). Only reports
-- naming an existing account are kept, by its id; they go with the account.
CREATE TABLE child_reports (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    reporter_id TEXT REFERENCES users(id) ON DELETE SET NULL,
    details TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    reviewed_by TEXT REFERENCES users(id) ON DELETE SET NULL,
    reviewed_at BIGINT
);
CREATE INDEX child_reports_status ON child_reports(status, id);
CREATE INDEX child_reports_account ON child_reports(account_id);
