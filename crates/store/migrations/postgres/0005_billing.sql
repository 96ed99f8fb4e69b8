-- Credits, plans and payments (issue 7). Amounts are whole credits, money in
-- minor units (cents). The same text runs on SQLite and PostgreSQL.

-- One row per account that ever had credits. `available` is spendable,
-- `held` is reserved by queued or running tasks, `debt` is what a refund or
-- dispute took back beyond what was left (it blocks new tasks). The net
-- balance `available - debt` always equals the sum of the account's ledger.
CREATE TABLE balances (
    user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    available BIGINT NOT NULL DEFAULT 0 CHECK (available >= 0),
    held BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0),
    debt BIGINT NOT NULL DEFAULT 0 CHECK (debt >= 0),
    -- 1 once the low-balance notice went out; re-armed above the threshold.
    low_notified BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);

-- Every credit movement, signed: grant, hold, capture (0: the hold became a
-- charge), release, refund, expiry, adjustment.
CREATE TABLE ledger (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    amount BIGINT NOT NULL,
    reason TEXT NOT NULL,
    reference TEXT,
    expires_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX ledger_user ON ledger(user_id, id);

-- What is left of each grant; spending takes from the lot that expires
-- first, non-expiring lots last. `source_key` (a checkout session, invoice
-- or order id, `signup:<user>` …) makes every grant happen at most once.
CREATE TABLE credit_lots (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    source_key TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    amount BIGINT NOT NULL,
    remaining BIGINT NOT NULL CHECK (remaining >= 0),
    status TEXT NOT NULL,
    expires_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX credit_lots_user ON credit_lots(user_id, status);
CREATE INDEX credit_lots_expiry ON credit_lots(status, expires_at);

-- The credits a task reserved at submit and from which lots; its status
-- moves once, held → captured | released, so a task is charged at most once.
CREATE TABLE holds (
    task_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    amount BIGINT NOT NULL,
    draws TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    settled_at BIGINT
);
CREATE INDEX holds_user ON holds(user_id, status);

-- Accounting records of purchases. They outlive the account, pseudonymised:
-- the account link is cleared, no name or email is ever stored here.
CREATE TABLE payments (
    id TEXT PRIMARY KEY,
    user_id TEXT REFERENCES users(id) ON DELETE SET NULL,
    provider TEXT NOT NULL,
    reference TEXT NOT NULL,
    payment_ref TEXT,
    product TEXT NOT NULL,
    credits BIGINT NOT NULL,
    credits_refunded BIGINT NOT NULL DEFAULT 0,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    lot_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX payments_reference ON payments(provider, reference);
CREATE INDEX payments_payment_ref ON payments(provider, payment_ref);
CREATE INDEX payments_user ON payments(user_id, id);

CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    external_id TEXT NOT NULL,
    customer_id TEXT,
    plan TEXT NOT NULL,
    status TEXT NOT NULL,
    current_period_end BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX subscriptions_external ON subscriptions(provider, external_id);
CREATE INDEX subscriptions_user ON subscriptions(user_id);

-- Every verified webhook event, recorded in the transaction that acts on it:
-- the primary key makes each event act once. `summary` keeps only the
-- fields used, never card data.
CREATE TABLE webhook_events (
    provider TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    summary TEXT NOT NULL,
    outcome TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (provider, event_id)
);
