-- Data exports (C35): an archive of everything the account holds, built in
-- the background and stored sealed in `parts` objects under
-- `{user_id}/exports/{id}/`. `pending` → `running` (leased, so a crashed
-- build is taken up again) → `ready` | `failed`; deleted with its objects
-- once `expires_at` has passed.
CREATE TABLE exports (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    parts BIGINT NOT NULL DEFAULT 0,
    size_bytes BIGINT NOT NULL DEFAULT 0,
    lease_expires_at BIGINT,
    error TEXT,
    created_at BIGINT NOT NULL,
    finished_at BIGINT,
    expires_at BIGINT
);
CREATE INDEX exports_user ON exports(user_id, id);
CREATE INDEX exports_status ON exports(status, expires_at);

-- Data subject requests (C36–C38), filed from the privacy center or logged
-- by an admin when received by mail (then `contact` is the address it came
-- from, and the account is linked when one has that address). The legal
-- answer is due 30 days after receipt. received → in_progress → completed |
-- denied (with a reason).
CREATE TABLE rights_requests (
    id TEXT PRIMARY KEY,
    user_id TEXT REFERENCES users(id) ON DELETE CASCADE,
    contact TEXT,
    kind TEXT NOT NULL,
    channel TEXT NOT NULL,
    details TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    logged_by TEXT REFERENCES users(id) ON DELETE SET NULL,
    received_at BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    closed_at BIGINT
);
CREATE INDEX rights_requests_user ON rights_requests(user_id, id);
CREATE INDEX rights_requests_due ON rights_requests(status, due_at);
