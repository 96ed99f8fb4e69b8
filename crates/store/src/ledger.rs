//! Credits: the ledger, balances, grant lots, task holds, payments,
//! subscriptions and webhook events (C13–C18).
//!
//! Every movement is a signed ledger row, and the net balance (`available -
//! debt`) always equals the sum of the account's rows. Grants land in lots;
//! spending draws from the lot that expires first (non-expiring lots last).
//! A task's hold is placed inside the submit transaction by one conditional
//! update, and later captured or released exactly once (`holds.status`).
//! Every operation on an account first locks its balance row, so they
//! serialize per account on PostgreSQL (SQLite has one writer anyway).

use domain::ids::new_id;
use domain::{Error, ErrorCode, Result};
use serde::Serialize;

use crate::{db_err, now_ms, with_pool, with_tx, NewMail, Page, Store};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Balance {
    pub user_id: String,
    /// Spendable now.
    pub available: i64,
    /// Reserved by queued and running tasks.
    pub held: i64,
    /// Taken back by a refund or dispute beyond what was left; blocks tasks.
    pub debt: i64,
    pub updated_at: i64,
}

impl Balance {
    /// `available - debt`: what the ledger sums to.
    pub fn net(&self) -> i64 {
        self.available - self.debt
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct LedgerEntry {
    pub id: String,
    pub user_id: String,
    /// grant, hold, capture, release, refund, dispute, expiry, adjustment.
    pub kind: String,
    pub amount: i64,
    pub reason: String,
    pub reference: Option<String>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct CreditLot {
    pub id: String,
    pub user_id: String,
    pub source_key: String,
    pub source: String,
    pub amount: i64,
    pub remaining: i64,
    /// open, expired or refunded.
    pub status: String,
    pub expires_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Payment {
    pub id: String,
    /// `None` once the account is deleted: the record stays, pseudonymised.
    pub user_id: Option<String>,
    pub provider: String,
    pub reference: String,
    pub payment_ref: Option<String>,
    pub product: String,
    pub credits: i64,
    pub credits_refunded: i64,
    pub amount_minor: i64,
    pub currency: String,
    /// paid, partially_refunded, refunded or disputed.
    pub status: String,
    pub lot_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Subscription {
    pub id: String,
    pub user_id: String,
    pub provider: String,
    pub external_id: String,
    pub customer_id: Option<String>,
    pub plan: String,
    pub status: String,
    pub current_period_end: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A grant of credits, at most once per `key`.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub user_id: String,
    pub amount: i64,
    /// signup, pack, plan, admin …
    pub source: String,
    /// Unique across all grants, e.g. `signup:<user>` or `stripe:cs_…`.
    pub key: String,
    pub reason: String,
    pub expires_at: Option<i64>,
}

/// A purchase as a provider reported it.
#[derive(Debug, Clone)]
pub struct NewPayment {
    pub provider: String,
    /// What the grant is keyed by: a checkout session, invoice or order id.
    pub reference: String,
    /// What refunds and disputes name (a payment intent, an order id).
    pub payment_ref: Option<String>,
    /// `pack:<id>` or `plan:<id>`.
    pub product: String,
    pub amount_minor: i64,
    pub currency: String,
}

/// A subscription's state as an event reported it, at `event_at`: older
/// reports never overwrite newer ones (events may arrive out of order).
#[derive(Debug, Clone)]
pub struct SubscriptionState {
    pub provider: String,
    pub external_id: String,
    /// Known from our metadata; without it only an existing row is updated.
    pub user_id: Option<String>,
    pub plan: Option<String>,
    pub customer_id: Option<String>,
    pub status: String,
    pub current_period_end: Option<i64>,
    pub event_at: i64,
}

#[derive(Debug, Clone)]
pub enum BillingAction {
    /// Recorded, nothing to do (an unpaid checkout, an event we do not use).
    Nothing,
    Grant {
        user_id: String,
        credits: i64,
        /// pack or plan.
        source: String,
        reason: String,
        expires_at: Option<i64>,
        payment: NewPayment,
        subscription: Option<SubscriptionState>,
        /// Queued only when this event actually granted.
        receipt: Option<NewMail>,
    },
    Subscription(SubscriptionState),
    /// A refund (`refunded_minor` of the payment's amount, `None` = all) or
    /// a dispute (always all): the purchase's credits are taken back.
    TakeBack {
        provider: String,
        payment_ref: String,
        refunded_minor: Option<i64>,
        dispute: bool,
    },
}

/// A verified webhook event, reduced to what we use.
#[derive(Debug, Clone)]
pub struct BillingEvent {
    pub provider: String,
    pub event_id: String,
    pub event_type: String,
    /// JSON of the fields used; never card data (refused if it looks like any).
    pub summary: String,
    pub action: BillingAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// This event id was processed before: nothing done.
    Duplicate,
    Granted {
        user_id: String,
        credits: i64,
    },
    /// Another event already granted this purchase.
    AlreadyGranted,
    /// The purchase was refunded before it was reported paid.
    RefundedBeforeGrant,
    /// The account no longer exists; the payment is recorded without it.
    NoAccount,
    TakenBack {
        user_id: Option<String>,
        credits: i64,
    },
    Recorded,
}

impl EventOutcome {
    fn label(&self) -> &'static str {
        match self {
            EventOutcome::Duplicate => "duplicate",
            EventOutcome::Granted { .. } => "granted",
            EventOutcome::AlreadyGranted => "already_granted",
            EventOutcome::RefundedBeforeGrant => "refunded_before_grant",
            EventOutcome::NoAccount => "no_account",
            EventOutcome::TakenBack { .. } => "taken_back",
            EventOutcome::Recorded => "recorded",
        }
    }
}

/// True when `text` holds a run of 13–19 digits (single spaces or dashes
/// allowed between them) that starts like a card brand (2–6) and passes the
/// Luhn check: what a card number looks like. Billing rows refuse such text
/// (C15). Millisecond timestamps start with 1 and are not taken for one.
pub fn contains_card_number(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && bytes[i - 1].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        let mut digits = Vec::new();
        let mut j = i;
        while j < bytes.len() {
            let b = bytes[j];
            if b.is_ascii_digit() {
                digits.push(b - b'0');
                j += 1;
            } else if (b == b' ' || b == b'-') && j + 1 < bytes.len() && bytes[j + 1].is_ascii_digit() {
                j += 1;
            } else {
                break;
            }
        }
        let glued = j < bytes.len() && bytes[j].is_ascii_alphabetic();
        if !glued && (13..=19).contains(&digits.len()) && (2..=6).contains(&digits[0]) && luhn(&digits) {
            return true;
        }
        i = j.max(i + 1);
    }
    false
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(k, &d)| {
            let d = u32::from(d);
            if k % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

fn refuse_card_data(fields: &[&str]) -> Result<()> {
    if fields.iter().any(|f| contains_card_number(f)) {
        return Err(Error::invalid("refusing to store what looks like a card number"));
    }
    Ok(())
}

/// Ledger steps on an open transaction's connection, written once for both
/// backends (the macro below implements them for each connection type).
pub(crate) trait LedgerTx {
    /// The hold: one conditional update of the balance; nothing is written
    /// when it fails (`account_in_debt` / `insufficient_credits`).
    async fn hold(&mut self, user_id: &str, task_id: &str, cost: i64, now: i64) -> Result<()>;
    /// Turns the task's hold into a charge, if it still is a hold.
    async fn capture(&mut self, task_id: &str, now: i64) -> Result<()>;
    /// Gives the task's hold back, if it still is a hold.
    async fn release(&mut self, task_id: &str, reason: &str, now: i64) -> Result<()>;
}

macro_rules! ledger_tx {
    ($conn:ty) => {
        impl LedgerTx for $conn {
            async fn hold(&mut self, user_id: &str, task_id: &str, cost: i64, now: i64) -> Result<()> {
                let n = sqlx::query(
                    "UPDATE balances SET available = available - $2, held = held + $2, updated_at = $3 \
                     WHERE user_id = $1 AND available >= $2 AND debt = 0",
                )
                .bind(user_id)
                .bind(cost)
                .bind(now)
                .execute(&mut *self)
                .await
                .map_err(db_err)?
                .rows_affected();
                if n == 0 {
                    let debt: Option<i64> =
                        sqlx::query_scalar("SELECT debt FROM balances WHERE user_id = $1").bind(user_id).fetch_optional(&mut *self).await.map_err(db_err)?;
                    return Err(if debt.unwrap_or(0) > 0 {
                        Error::new(ErrorCode::AccountInDebt, "a refunded purchase left this account owing credits; settle it before new tasks")
                    } else {
                        Error::new(ErrorCode::InsufficientCredits, format!("this task costs {cost} credits; the balance is lower"))
                    });
                }
                let draws = self.draw(user_id, cost).await?;
                sqlx::query("INSERT INTO holds (task_id, user_id, amount, draws, status, created_at) VALUES ($1, $2, $3, $4, 'held', $5)")
                    .bind(task_id)
                    .bind(user_id)
                    .bind(cost)
                    .bind(serde_json::to_string(&draws).map_err(|e| Error::internal(e.to_string()))?)
                    .bind(now)
                    .execute(&mut *self)
                    .await
                    .map_err(db_err)?;
                self.entry(user_id, "hold", -cost, "task", Some(task_id), None, now).await
            }

            async fn capture(&mut self, task_id: &str, now: i64) -> Result<()> {
                let held: Option<(String, i64)> = sqlx::query_as(
                    "UPDATE holds SET status = 'captured', settled_at = $2 WHERE task_id = $1 AND status = 'held' RETURNING user_id, amount",
                )
                .bind(task_id)
                .bind(now)
                .fetch_optional(&mut *self)
                .await
                .map_err(db_err)?;
                if let Some((user_id, amount)) = held {
                    sqlx::query("UPDATE balances SET held = held - $2, updated_at = $3 WHERE user_id = $1")
                        .bind(&user_id)
                        .bind(amount)
                        .bind(now)
                        .execute(&mut *self)
                        .await
                        .map_err(db_err)?;
                    // The hold row already moved the balance; this row records the charge.
                    self.entry(&user_id, "capture", 0, &format!("task_succeeded:{amount}"), Some(task_id), None, now).await?;
                    metrics::CREDITS.inc_by(&["captured"], amount as f64);
                }
                Ok(())
            }

            async fn release(&mut self, task_id: &str, reason: &str, now: i64) -> Result<()> {
                let held: Option<(String, i64, String)> = sqlx::query_as(
                    "UPDATE holds SET status = 'released', settled_at = $2 WHERE task_id = $1 AND status = 'held' RETURNING user_id, amount, draws",
                )
                .bind(task_id)
                .bind(now)
                .fetch_optional(&mut *self)
                .await
                .map_err(db_err)?;
                let Some((user_id, amount, draws)) = held else { return Ok(()) };
                let (_, _, debt) = self.lock_balance(&user_id, now).await?;
                let draws: Vec<(String, i64)> = serde_json::from_str(&draws).map_err(|e| Error::internal(e.to_string()))?;
                let (mut back, mut expired, mut refunded) = (0i64, 0i64, 0i64);
                for (lot_id, part) in &draws {
                    let reopened: Option<String> =
                        sqlx::query_scalar("UPDATE credit_lots SET remaining = remaining + $2 WHERE id = $1 AND status = 'open' RETURNING id")
                            .bind(lot_id)
                            .bind(part)
                            .fetch_optional(&mut *self)
                            .await
                            .map_err(db_err)?;
                    if reopened.is_some() {
                        back += part;
                        continue;
                    }
                    let status: Option<String> =
                        sqlx::query_scalar("SELECT status FROM credit_lots WHERE id = $1").bind(lot_id).fetch_optional(&mut *self).await.map_err(db_err)?;
                    if status.as_deref() == Some("expired") {
                        expired += part;
                    } else {
                        refunded += part;
                    }
                }
                self.entry(&user_id, "release", amount, reason, Some(task_id), None, now).await?;
                if expired > 0 {
                    // Credits of a lot that expired meanwhile expire on return.
                    self.entry(&user_id, "expiry", -expired, "expired", Some(task_id), None, now).await?;
                }
                // Credits of a refunded purchase pay the debt its refund
                // recorded for them; anything beyond is the owner's again.
                let settle = refunded.min(debt);
                let rest = refunded - settle;
                if rest > 0 {
                    self.new_lot(&user_id, &format!("release:{task_id}"), "release", rest, None, now).await?;
                }
                sqlx::query("UPDATE balances SET available = available + $2, held = held - $3, debt = debt - $4, updated_at = $5 WHERE user_id = $1")
                    .bind(&user_id)
                    .bind(back + rest)
                    .bind(amount)
                    .bind(settle)
                    .bind(now)
                    .execute(&mut *self)
                    .await
                    .map_err(db_err)?;
                self.settle_debt(&user_id, now).await
            }
        }

        impl LedgerSteps for $conn {
            async fn ensure_balance(&mut self, user_id: &str, now: i64) -> Result<()> {
                sqlx::query("INSERT INTO balances (user_id, updated_at) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING")
                    .bind(user_id)
                    .bind(now)
                    .execute(&mut *self)
                    .await
                    .map_err(db_err)?;
                Ok(())
            }

            async fn lock_balance(&mut self, user_id: &str, now: i64) -> Result<(i64, i64, i64)> {
                self.ensure_balance(user_id, now).await?;
                sqlx::query_as("UPDATE balances SET updated_at = $2 WHERE user_id = $1 RETURNING available, held, debt")
                    .bind(user_id)
                    .bind(now)
                    .fetch_one(&mut *self)
                    .await
                    .map_err(db_err)
            }

            #[allow(clippy::too_many_arguments)]
            async fn entry(&mut self, user_id: &str, kind: &str, amount: i64, reason: &str, reference: Option<&str>, expires_at: Option<i64>, now: i64) -> Result<()> {
                refuse_card_data(&[reason, reference.unwrap_or("")])?;
                sqlx::query(
                    "INSERT INTO ledger (id, user_id, kind, amount, reason, reference, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(new_id())
                .bind(user_id)
                .bind(kind)
                .bind(amount)
                .bind(reason)
                .bind(reference)
                .bind(expires_at)
                .bind(now)
                .execute(&mut *self)
                .await
                .map_err(db_err)?;
                Ok(())
            }

            async fn new_lot(&mut self, user_id: &str, key: &str, source: &str, amount: i64, expires_at: Option<i64>, now: i64) -> Result<Option<String>> {
                refuse_card_data(&[key, source])?;
                sqlx::query_scalar(
                    "INSERT INTO credit_lots (id, user_id, source_key, source, amount, remaining, status, expires_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $5, 'open', $6, $7) ON CONFLICT (source_key) DO NOTHING RETURNING id",
                )
                .bind(new_id())
                .bind(user_id)
                .bind(key)
                .bind(source)
                .bind(amount)
                .bind(expires_at)
                .bind(now)
                .fetch_optional(&mut *self)
                .await
                .map_err(db_err)
            }

            async fn draw(&mut self, user_id: &str, amount: i64) -> Result<Vec<(String, i64)>> {
                let lots: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT id, remaining FROM credit_lots WHERE user_id = $1 AND status = 'open' AND remaining > 0 \
                     ORDER BY CASE WHEN expires_at IS NULL THEN 1 ELSE 0 END, expires_at, created_at, id",
                )
                .bind(user_id)
                .fetch_all(&mut *self)
                .await
                .map_err(db_err)?;
                let mut left = amount;
                let mut draws = Vec::new();
                for (lot_id, remaining) in lots {
                    if left == 0 {
                        break;
                    }
                    let take = remaining.min(left);
                    sqlx::query("UPDATE credit_lots SET remaining = remaining - $2 WHERE id = $1")
                        .bind(&lot_id)
                        .bind(take)
                        .execute(&mut *self)
                        .await
                        .map_err(db_err)?;
                    draws.push((lot_id, take));
                    left -= take;
                }
                if left > 0 {
                    tracing::error!(user = %user_id, missing = left, "balance and lots disagree");
                    return Err(Error::internal("balance and credit lots disagree"));
                }
                Ok(draws)
            }

            async fn grant(&mut self, grant: &NewGrant, kind: &str, now: i64) -> Result<Option<String>> {
                if grant.amount <= 0 {
                    return Err(Error::invalid("a grant must be positive"));
                }
                self.lock_balance(&grant.user_id, now).await?;
                let Some(lot_id) = self.new_lot(&grant.user_id, &grant.key, &grant.source, grant.amount, grant.expires_at, now).await? else {
                    return Ok(None);
                };
                sqlx::query("UPDATE balances SET available = available + $2, updated_at = $3 WHERE user_id = $1")
                    .bind(&grant.user_id)
                    .bind(grant.amount)
                    .bind(now)
                    .execute(&mut *self)
                    .await
                    .map_err(db_err)?;
                self.entry(&grant.user_id, kind, grant.amount, &grant.reason, Some(&grant.key), grant.expires_at, now).await?;
                self.settle_debt(&grant.user_id, now).await?;
                // Counted for /metrics when written: a commit that then fails over-counts.
                metrics::CREDITS.inc_by(&[if kind == "grant" { "granted" } else { "adjusted" }], grant.amount as f64);
                Ok(Some(lot_id))
            }

            async fn debit(&mut self, user_id: &str, amount: i64, kind: &str, reason: &str, reference: Option<&str>, now: i64) -> Result<()> {
                let (available, _, _) = self.lock_balance(user_id, now).await?;
                let from_available = available.min(amount);
                self.draw(user_id, from_available).await?;
                sqlx::query("UPDATE balances SET available = available - $2, debt = debt + $3, updated_at = $4 WHERE user_id = $1")
                    .bind(user_id)
                    .bind(from_available)
                    .bind(amount - from_available)
                    .bind(now)
                    .execute(&mut *self)
                    .await
                    .map_err(db_err)?;
                self.entry(user_id, kind, -amount, reason, reference, None, now).await
            }

            async fn settle_debt(&mut self, user_id: &str, now: i64) -> Result<()> {
                let (available, _, debt) = self.lock_balance(user_id, now).await?;
                let settle = available.min(debt);
                if settle > 0 {
                    // Net balance unchanged: no ledger row, only lots move.
                    self.draw(user_id, settle).await?;
                    sqlx::query("UPDATE balances SET available = available - $2, debt = debt - $2 WHERE user_id = $1")
                        .bind(user_id)
                        .bind(settle)
                        .execute(&mut *self)
                        .await
                        .map_err(db_err)?;
                }
                Ok(())
            }

            async fn expire_lot(&mut self, lot_id: &str, user_id: &str, now: i64) -> Result<i64> {
                self.lock_balance(user_id, now).await?;
                let lot: Option<(i64, String, Option<i64>)> = sqlx::query_as("SELECT remaining, status, expires_at FROM credit_lots WHERE id = $1")
                    .bind(lot_id)
                    .fetch_optional(&mut *self)
                    .await
                    .map_err(db_err)?;
                let Some((remaining, status, expires_at)) = lot else { return Ok(0) };
                if status != "open" || expires_at.is_none_or(|e| e > now) {
                    return Ok(0);
                }
                sqlx::query("UPDATE credit_lots SET status = 'expired', remaining = 0 WHERE id = $1").bind(lot_id).execute(&mut *self).await.map_err(db_err)?;
                if remaining > 0 {
                    sqlx::query("UPDATE balances SET available = available - $2, updated_at = $3 WHERE user_id = $1")
                        .bind(user_id)
                        .bind(remaining)
                        .bind(now)
                        .execute(&mut *self)
                        .await
                        .map_err(db_err)?;
                    self.entry(user_id, "expiry", -remaining, "expired", Some(lot_id), None, now).await?;
                }
                Ok(remaining)
            }

            async fn take_back(&mut self, provider: &str, payment_ref: &str, refunded_minor: Option<i64>, dispute: bool, now: i64) -> Result<EventOutcome> {
                let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE provider = $1 AND (reference = $2 OR payment_ref = $2) ORDER BY created_at LIMIT 1");
                let payment: Option<Payment> = sqlx::query_as(&sql).bind(provider).bind(payment_ref).fetch_optional(&mut *self).await.map_err(db_err)?;
                let status = if dispute { "disputed" } else { "refunded" };
                let Some(payment) = payment else {
                    // Reported before the purchase itself: remember it, so the
                    // purchase, when it is reported, grants nothing.
                    sqlx::query(
                        "INSERT INTO payments (id, user_id, provider, reference, payment_ref, product, credits, amount_minor, currency, status, created_at, updated_at) \
                         VALUES ($1, NULL, $2, $3, $4, '', 0, 0, '', $5, $6, $6) ON CONFLICT (provider, reference) DO NOTHING",
                    )
                    .bind(new_id())
                    .bind(provider)
                    .bind(format!("early:{payment_ref}"))
                    .bind(payment_ref)
                    .bind(status)
                    .bind(now)
                    .execute(&mut *self)
                    .await
                    .map_err(db_err)?;
                    return Ok(EventOutcome::Recorded);
                };
                let target = match refunded_minor {
                    Some(minor) if !dispute && payment.amount_minor > 0 && minor < payment.amount_minor => {
                        // Proportional, rounded up: a partial refund takes back its share.
                        (payment.credits * minor.max(0) + payment.amount_minor - 1) / payment.amount_minor
                    }
                    _ => payment.credits,
                };
                let take = (target - payment.credits_refunded).max(0);
                let new_status = if dispute {
                    "disputed"
                } else if payment.credits_refunded + take >= payment.credits {
                    "refunded"
                } else {
                    "partially_refunded"
                };
                sqlx::query("UPDATE payments SET credits_refunded = credits_refunded + $2, status = $3, updated_at = $4 WHERE id = $1")
                    .bind(&payment.id)
                    .bind(take)
                    .bind(new_status)
                    .bind(now)
                    .execute(&mut *self)
                    .await
                    .map_err(db_err)?;
                let Some(user_id) = payment.user_id.clone() else { return Ok(EventOutcome::Recorded) };
                if take == 0 {
                    return Ok(EventOutcome::TakenBack { user_id: Some(user_id), credits: 0 });
                }
                self.lock_balance(&user_id, now).await?;
                // The purchase's own unused credits go first …
                let lot: Option<(i64, String)> = match &payment.lot_id {
                    Some(id) => sqlx::query_as("SELECT remaining, status FROM credit_lots WHERE id = $1").bind(id).fetch_optional(&mut *self).await.map_err(db_err)?,
                    None => None,
                };
                let from_lot = match &lot {
                    Some((remaining, status)) if status == "open" => (*remaining).min(take),
                    _ => 0,
                };
                if let Some(id) = &payment.lot_id {
                    let closed = new_status != "partially_refunded";
                    sqlx::query("UPDATE credit_lots SET remaining = remaining - $2, status = CASE WHEN $3 = 1 AND status = 'open' THEN 'refunded' ELSE status END WHERE id = $1")
                        .bind(id)
                        .bind(from_lot)
                        .bind(i64::from(closed))
                        .execute(&mut *self)
                        .await
                        .map_err(db_err)?;
                }
                // … what was already spent becomes a debt (other credits pay it).
                sqlx::query("UPDATE balances SET available = available - $2, debt = debt + $3, updated_at = $4 WHERE user_id = $1")
                    .bind(&user_id)
                    .bind(from_lot)
                    .bind(take - from_lot)
                    .bind(now)
                    .execute(&mut *self)
                    .await
                    .map_err(db_err)?;
                self.entry(&user_id, if dispute { "dispute" } else { "refund" }, -take, status, Some(&payment.reference), None, now).await?;
                metrics::CREDITS.inc_by(&[if dispute { "disputed" } else { "refunded" }], take as f64);
                self.settle_debt(&user_id, now).await?;
                Ok(EventOutcome::TakenBack { user_id: Some(user_id), credits: take })
            }

            async fn upsert_subscription(&mut self, s: &SubscriptionState) -> Result<()> {
                refuse_card_data(&[&s.external_id, s.customer_id.as_deref().unwrap_or(""), &s.status])?;
                match (&s.user_id, &s.plan) {
                    (Some(user_id), Some(plan)) => {
                        sqlx::query(
                            "INSERT INTO subscriptions (id, user_id, provider, external_id, customer_id, plan, status, current_period_end, created_at, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
                             ON CONFLICT (provider, external_id) DO UPDATE SET \
                             customer_id = COALESCE(excluded.customer_id, subscriptions.customer_id), plan = excluded.plan, \
                             status = CASE WHEN excluded.updated_at >= subscriptions.updated_at THEN excluded.status ELSE subscriptions.status END, \
                             current_period_end = CASE WHEN excluded.updated_at >= subscriptions.updated_at \
                                 THEN COALESCE(excluded.current_period_end, subscriptions.current_period_end) ELSE subscriptions.current_period_end END, \
                             updated_at = CASE WHEN excluded.updated_at >= subscriptions.updated_at THEN excluded.updated_at ELSE subscriptions.updated_at END",
                        )
                        .bind(new_id())
                        .bind(user_id)
                        .bind(&s.provider)
                        .bind(&s.external_id)
                        .bind(&s.customer_id)
                        .bind(plan)
                        .bind(&s.status)
                        .bind(s.current_period_end)
                        .bind(s.event_at)
                        .execute(&mut *self)
                        .await
                        .map_err(db_err)?;
                    }
                    _ => {
                        sqlx::query(
                            "UPDATE subscriptions SET status = $3, current_period_end = COALESCE($4, current_period_end), updated_at = $5 \
                             WHERE provider = $1 AND external_id = $2 AND updated_at <= $5",
                        )
                        .bind(&s.provider)
                        .bind(&s.external_id)
                        .bind(&s.status)
                        .bind(s.current_period_end)
                        .bind(s.event_at)
                        .execute(&mut *self)
                        .await
                        .map_err(db_err)?;
                    }
                }
                Ok(())
            }

            async fn insert_mail(&mut self, mail: &NewMail, now: i64) -> Result<()> {
                sqlx::query(
                    "INSERT INTO outbox (id, user_id, kind, to_addr, subject, body_text, status, next_attempt_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)",
                )
                .bind(new_id())
                .bind(&mail.user_id)
                .bind(&mail.kind)
                .bind(&mail.to_addr)
                .bind(&mail.subject)
                .bind(&mail.body_text)
                .bind(now)
                .execute(&mut *self)
                .await
                .map_err(db_err)?;
                Ok(())
            }

            async fn apply(&mut self, event: &BillingEvent, now: i64) -> Result<EventOutcome> {
                match &event.action {
                    BillingAction::Nothing => Ok(EventOutcome::Recorded),
                    BillingAction::Subscription(s) => {
                        self.upsert_subscription(s).await?;
                        Ok(EventOutcome::Recorded)
                    }
                    BillingAction::TakeBack { provider, payment_ref, refunded_minor, dispute } => {
                        self.take_back(provider, payment_ref, *refunded_minor, *dispute, now).await
                    }
                    BillingAction::Grant { user_id, credits, source, reason, expires_at, payment, subscription, receipt } => {
                        let p = payment;
                        refuse_card_data(&[&p.reference, p.payment_ref.as_deref().unwrap_or(""), &p.product, &p.currency])?;
                        let exists: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1").bind(user_id).fetch_optional(&mut *self).await.map_err(db_err)?;
                        let already: Option<String> =
                            sqlx::query_scalar("SELECT id FROM payments WHERE provider = $1 AND reference = $2").bind(&p.provider).bind(&p.reference).fetch_optional(&mut *self).await.map_err(db_err)?;
                        if already.is_some() {
                            return Ok(EventOutcome::AlreadyGranted);
                        }
                        let early: Option<String> = match &p.payment_ref {
                            Some(r) => sqlx::query_scalar("SELECT status FROM payments WHERE provider = $1 AND reference = $2")
                                .bind(&p.provider)
                                .bind(format!("early:{r}"))
                                .fetch_optional(&mut *self)
                                .await
                                .map_err(db_err)?,
                            None => None,
                        };
                        let user = exists.map(|_| user_id.clone());
                        if let (Some(sub), Some(_)) = (subscription, &user) {
                            self.upsert_subscription(sub).await?;
                        }
                        let (status, lot_id, outcome) = match (&user, early) {
                            (_, Some(status)) => (status, None, EventOutcome::RefundedBeforeGrant),
                            (None, None) => ("paid".to_string(), None, EventOutcome::NoAccount),
                            (Some(user_id), None) => {
                                let grant = NewGrant {
                                    user_id: user_id.clone(),
                                    amount: *credits,
                                    source: source.clone(),
                                    key: format!("{}:{}", p.provider, p.reference),
                                    reason: reason.clone(),
                                    expires_at: *expires_at,
                                };
                                match self.grant(&grant, "grant", now).await? {
                                    Some(lot) => ("paid".to_string(), Some(lot), EventOutcome::Granted { user_id: user_id.clone(), credits: *credits }),
                                    None => return Ok(EventOutcome::AlreadyGranted),
                                }
                            }
                        };
                        let refunded = if outcome == EventOutcome::RefundedBeforeGrant { *credits } else { 0 };
                        sqlx::query(
                            "INSERT INTO payments (id, user_id, provider, reference, payment_ref, product, credits, credits_refunded, amount_minor, currency, status, \
                             lot_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
                        )
                        .bind(new_id())
                        .bind(&user)
                        .bind(&p.provider)
                        .bind(&p.reference)
                        .bind(&p.payment_ref)
                        .bind(&p.product)
                        .bind(credits)
                        .bind(refunded)
                        .bind(p.amount_minor)
                        .bind(&p.currency)
                        .bind(&status)
                        .bind(&lot_id)
                        .bind(now)
                        .execute(&mut *self)
                        .await
                        .map_err(db_err)?;
                        if let (EventOutcome::Granted { .. }, Some(mail)) = (&outcome, receipt) {
                            self.insert_mail(mail, now).await?;
                        }
                        Ok(outcome)
                    }
                }
            }
        }
    };
}

/// Internal steps shared by the public operations.
#[allow(clippy::too_many_arguments)]
trait LedgerSteps {
    async fn ensure_balance(&mut self, user_id: &str, now: i64) -> Result<()>;
    /// Creates the row if missing and locks it until the transaction ends.
    async fn lock_balance(&mut self, user_id: &str, now: i64) -> Result<(i64, i64, i64)>;
    async fn entry(
        &mut self,
        user_id: &str,
        kind: &str,
        amount: i64,
        reason: &str,
        reference: Option<&str>,
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<()>;
    async fn new_lot(
        &mut self,
        user_id: &str,
        key: &str,
        source: &str,
        amount: i64,
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<Option<String>>;
    /// Takes `amount` from the open lots, earliest expiry first.
    async fn draw(&mut self, user_id: &str, amount: i64) -> Result<Vec<(String, i64)>>;
    /// `None` when this grant's key was granted before.
    async fn grant(&mut self, grant: &NewGrant, kind: &str, now: i64) -> Result<Option<String>>;
    /// Takes credits: from what is available, the rest as debt.
    async fn debit(&mut self, user_id: &str, amount: i64, kind: &str, reason: &str, reference: Option<&str>, now: i64) -> Result<()>;
    /// Available credits pay debt first: never both above zero.
    async fn settle_debt(&mut self, user_id: &str, now: i64) -> Result<()>;
    async fn expire_lot(&mut self, lot_id: &str, user_id: &str, now: i64) -> Result<i64>;
    async fn take_back(
        &mut self,
        provider: &str,
        payment_ref: &str,
        refunded_minor: Option<i64>,
        dispute: bool,
        now: i64,
    ) -> Result<EventOutcome>;
    async fn upsert_subscription(&mut self, s: &SubscriptionState) -> Result<()>;
    async fn insert_mail(&mut self, mail: &NewMail, now: i64) -> Result<()>;
    async fn apply(&mut self, event: &BillingEvent, now: i64) -> Result<EventOutcome>;
}

ledger_tx!(sqlx::SqliteConnection);
ledger_tx!(sqlx::PgConnection);

const BALANCE_COLUMNS: &str = "user_id, available, held, debt, updated_at";
const LEDGER_COLUMNS: &str = "id, user_id, kind, amount, reason, reference, expires_at, created_at";
const LOT_COLUMNS: &str = "id, user_id, source_key, source, amount, remaining, status, expires_at, created_at";
const PAYMENT_COLUMNS: &str = "id, user_id, provider, reference, payment_ref, product, credits, credits_refunded, amount_minor, currency, status, lot_id, created_at, updated_at";
const SUBSCRIPTION_COLUMNS: &str =
    "id, user_id, provider, external_id, customer_id, plan, status, current_period_end, created_at, updated_at";

impl Store {
    /// The account's balance; all zeros if it never had credits.
    pub async fn balance(&self, user_id: &str) -> Result<Balance> {
        let sql = format!("SELECT {BALANCE_COLUMNS} FROM balances WHERE user_id = $1");
        let found: Option<Balance> =
            with_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).fetch_optional(pool).await.map_err(db_err)?);
        Ok(found.unwrap_or_else(|| Balance { user_id: user_id.to_string(), ..Balance::default() }))
    }

    /// Grants credits once per `grant.key`; `false` if that key was granted before.
    pub async fn grant_credits(&self, grant: NewGrant) -> Result<bool> {
        let now = now_ms();
        Ok(with_tx!(self, tx => tx.grant(&grant, "grant", now).await?.is_some()))
    }

    /// An admin's correction: positive adds a non-expiring lot, negative takes
    /// credits (beyond what is available, as debt). The caller audits it.
    pub async fn adjust_credits(&self, user_id: &str, amount: i64, reason: &str) -> Result<Balance> {
        if amount == 0 {
            return Err(Error::invalid("the adjustment must not be zero"));
        }
        let now = now_ms();
        with_tx!(self, tx => {
            if amount > 0 {
                let grant = NewGrant {
                    user_id: user_id.to_string(),
                    amount,
                    source: "admin".into(),
                    key: format!("admin:{}", new_id()),
                    reason: reason.to_string(),
                    expires_at: None,
                };
                tx.grant(&grant, "adjustment", now).await?;
            } else {
                tx.debit(user_id, -amount, "adjustment", reason, None, now).await?;
            }
        });
        self.balance(user_id).await
    }

    /// Expires lots past their date (one account, or all); returns the
    /// credits that expired.
    pub async fn expire_credits(&self, user_id: Option<&str>) -> Result<i64> {
        let now = now_ms();
        let due: Vec<(String, String)> = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, user_id FROM credit_lots WHERE status = 'open' AND expires_at IS NOT NULL AND expires_at <= $1 \
                 AND ($2 IS NULL OR user_id = $2) ORDER BY expires_at LIMIT 1000",
            )
            .bind(now)
            .bind(user_id)
            .fetch_all(pool)
            .await
            .map_err(db_err)?
        });
        let mut expired = 0;
        for (lot_id, owner) in due {
            expired += with_tx!(self, tx => tx.expire_lot(&lot_id, &owner, now).await?);
        }
        Ok(expired)
    }

    /// Newest first, keyset pages.
    pub async fn ledger_entries(&self, user_id: &str, before: Option<&str>, limit: i64) -> Result<Page<LedgerEntry>> {
        let sql = format!("SELECT {LEDGER_COLUMNS} FROM ledger WHERE user_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3");
        let rows: Vec<LedgerEntry> = with_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).bind(before).bind(limit + 1).fetch_all(pool).await.map_err(db_err)?);
        Ok(Page::from_rows(rows, limit, |e| &e.id))
    }

    /// The sum of every ledger row of the account (equals `balance().net()`).
    pub async fn ledger_sum(&self, user_id: &str) -> Result<i64> {
        with_pool!(self, pool => {
            sqlx::query_scalar::<_, i64>("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger WHERE user_id = $1").bind(user_id).fetch_one(pool).await.map_err(db_err)
        })
    }

    pub async fn credit_lots(&self, user_id: &str) -> Result<Vec<CreditLot>> {
        let sql = format!("SELECT {LOT_COLUMNS} FROM credit_lots WHERE user_id = $1 ORDER BY created_at, id");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).fetch_all(pool).await.map_err(db_err))
    }

    /// The hold of a task: (amount, status) if it was charged.
    pub async fn task_hold(&self, task_id: &str) -> Result<Option<(i64, String)>> {
        with_pool!(self, pool => sqlx::query_as("SELECT amount, status FROM holds WHERE task_id = $1").bind(task_id).fetch_optional(pool).await.map_err(db_err))
    }

    pub async fn payments_of_user(&self, user_id: &str) -> Result<Vec<Payment>> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE user_id = $1 ORDER BY created_at DESC, id DESC");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).fetch_all(pool).await.map_err(db_err))
    }

    /// Every payment record, newest first (accounting; admins).
    pub async fn payments(&self, limit: i64) -> Result<Vec<Payment>> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments ORDER BY created_at DESC, id DESC LIMIT $1");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(limit).fetch_all(pool).await.map_err(db_err))
    }

    pub async fn subscriptions_of_user(&self, user_id: &str) -> Result<Vec<Subscription>> {
        let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE user_id = $1 ORDER BY created_at DESC, id DESC");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).fetch_all(pool).await.map_err(db_err))
    }

    /// The account and plan of a provider's subscription, if we know it.
    pub async fn subscription_owner(&self, provider: &str, external_id: &str) -> Result<Option<(String, String)>> {
        with_pool!(self, pool => {
            sqlx::query_as("SELECT user_id, plan FROM subscriptions WHERE provider = $1 AND external_id = $2")
                .bind(provider)
                .bind(external_id)
                .fetch_optional(pool)
                .await
                .map_err(db_err)
        })
    }

    /// Accounts owing credits (admins see them).
    pub async fn accounts_in_debt(&self, limit: i64) -> Result<Vec<Balance>> {
        let sql = format!("SELECT {BALANCE_COLUMNS} FROM balances WHERE debt > 0 ORDER BY debt DESC, user_id LIMIT $1");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(limit).fetch_all(pool).await.map_err(db_err))
    }

    /// Records a verified webhook event and acts on it in one transaction;
    /// the event's primary key makes a repeat a no-op (`Duplicate`).
    pub async fn apply_billing_event(&self, event: BillingEvent) -> Result<EventOutcome> {
        refuse_card_data(&[&event.event_id, &event.event_type, &event.summary])?;
        let now = now_ms();
        let outcome = with_tx!(self, tx => {
            let fresh: Option<String> = sqlx::query_scalar(
                "INSERT INTO webhook_events (provider, event_id, event_type, summary, outcome, received_at) VALUES ($1, $2, $3, $4, 'pending', $5) \
                 ON CONFLICT (provider, event_id) DO NOTHING RETURNING event_id",
            )
            .bind(&event.provider)
            .bind(&event.event_id)
            .bind(&event.event_type)
            .bind(&event.summary)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            if fresh.is_none() {
                EventOutcome::Duplicate
            } else {
                let outcome = tx.apply(&event, now).await?;
                sqlx::query("UPDATE webhook_events SET outcome = $3 WHERE provider = $1 AND event_id = $2")
                    .bind(&event.provider)
                    .bind(&event.event_id)
                    .bind(outcome.label())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                outcome
            }
        });
        Ok(outcome)
    }

    /// Queues `mail` once when the balance has dropped below `threshold`
    /// (re-armed when it is back at or above it). `true` if queued.
    pub async fn notify_low_balance(&self, user_id: &str, threshold: i64, mail: NewMail) -> Result<bool> {
        let now = now_ms();
        Ok(with_tx!(self, tx => {
            sqlx::query("UPDATE balances SET low_notified = 0 WHERE user_id = $1 AND available >= $2 AND low_notified = 1")
                .bind(user_id)
                .bind(threshold)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            let fired: Option<i64> = sqlx::query_scalar(
                "UPDATE balances SET low_notified = 1 WHERE user_id = $1 AND available < $2 AND low_notified = 0 RETURNING available",
            )
            .bind(user_id)
            .bind(threshold)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            if fired.is_some() {
                tx.insert_mail(&mail, now).await?;
            }
            fired.is_some()
        }))
    }

    /// The stored summary of a webhook event (tests, support).
    pub async fn webhook_event(&self, provider: &str, event_id: &str) -> Result<Option<(String, String, String)>> {
        with_pool!(self, pool => {
            sqlx::query_as("SELECT event_type, summary, outcome FROM webhook_events WHERE provider = $1 AND event_id = $2")
                .bind(provider)
                .bind(event_id)
                .fetch_optional(pool)
                .await
                .map_err(db_err)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::contains_card_number;

    #[test]
    fn c15_card_numbers_are_recognised_in_any_spacing() {
        assert!(contains_card_number("4242424242424242"));
        assert!(contains_card_number("card 4242 4242 4242 4242 exp"));
        assert!(contains_card_number("pm_card_5555-5555-5555-4444."));
        assert!(contains_card_number(r#"{"number":"378282246310005"}"#));
        assert!(!contains_card_number("4242424242424241"), "fails Luhn");
        assert!(!contains_card_number("1728734325927 1700000000000"), "millisecond timestamps");
        assert!(!contains_card_number("42424242424242424242424"), "longer than any card number");
        assert!(!contains_card_number("cs_test_a1B2c3 in_1 12345"));
    }
}
