//! Account deletion with a grace period (C31), the sweep of unsaved outputs
//! (C39), support tickets (C26) and reports of child accounts (C05).

use domain::ids::new_id;
use domain::{Error, ErrorCode, Result};
use serde::Serialize;

use crate::{db_err, now_ms, with_pool, with_tx, Asset, Store, ASSET_COLUMNS};

/// The status of an account between its deletion request and the purge:
/// sign-in, sessions and API keys refuse it like any status but `active`.
pub const DELETION_PENDING: &str = "deletion_pending";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PendingDeletion {
    pub user_id: String,
    pub requested_at: i64,
    pub purge_after: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SupportTicket {
    pub id: String,
    pub user_id: String,
    pub subject: String,
    /// Opened (plain text) when read through the store.
    pub body: String,
    pub status: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ChildReport {
    pub id: String,
    pub account_id: String,
    pub reporter_id: Option<String>,
    pub details: String,
    /// `open`, then `confirmed` (the account is purged, and the report with
    /// it) or `dismissed`.
    pub status: String,
    pub created_at: i64,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<i64>,
}

const TICKET_COLUMNS: &str = "id, user_id, subject, body, status, created_at";
const CHILD_REPORT_COLUMNS: &str = "id, account_id, reporter_id, details, status, created_at, reviewed_by, reviewed_at";

fn ticket_place(id: &str) -> String {
    format!("support_tickets.body/{id}")
}

impl Store {
    /// Disables an active account and schedules its purge: the status
    /// changes and every session ends in the same transaction. `None` if
    /// the account is not active (already pending, suspended or gone).
    pub async fn request_account_deletion(&self, user_id: &str, now: i64, purge_after: i64) -> Result<Option<u64>> {
        let ended = with_tx!(self, tx => {
            let changed = sqlx::query("UPDATE users SET status = $2, updated_at = $3 WHERE id = $1 AND status = 'active'")
                .bind(user_id)
                .bind(DELETION_PENDING)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            if changed == 0 {
                None
            } else {
                sqlx::query(
                    "INSERT INTO account_deletions (user_id, requested_at, purge_after) VALUES ($1, $2, $3) \
                     ON CONFLICT (user_id) DO UPDATE SET requested_at = excluded.requested_at, purge_after = excluded.purge_after",
                )
                .bind(user_id)
                .bind(now)
                .bind(purge_after)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                let ended = sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(&mut *tx).await.map_err(db_err)?;
                Some(ended.rows_affected())
            }
        });
        Ok(ended)
    }

    /// Restores an account whose deletion is pending, exactly as it was;
    /// `false` if none is pending.
    pub async fn cancel_account_deletion(&self, user_id: &str) -> Result<bool> {
        let restored = with_tx!(self, tx => {
            let n = sqlx::query("DELETE FROM account_deletions WHERE user_id = $1").bind(user_id).execute(&mut *tx).await.map_err(db_err)?.rows_affected();
            if n > 0 {
                sqlx::query("UPDATE users SET status = 'active', updated_at = $2 WHERE id = $1 AND status = $3")
                    .bind(user_id)
                    .bind(now_ms())
                    .bind(DELETION_PENDING)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            n > 0
        });
        Ok(restored)
    }

    pub async fn pending_deletion(&self, user_id: &str) -> Result<Option<PendingDeletion>> {
        with_pool!(self, pool => {
            sqlx::query_as("SELECT user_id, requested_at, purge_after FROM account_deletions WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(pool)
                .await
                .map_err(db_err)
        })
    }

    /// Accounts whose grace period ended by `now`.
    pub async fn deletions_due(&self, now: i64) -> Result<Vec<String>> {
        with_pool!(self, pool => {
            sqlx::query_scalar("SELECT user_id FROM account_deletions WHERE purge_after <= $1 ORDER BY purge_after, user_id")
                .bind(now)
                .fetch_all(pool)
                .await
                .map_err(db_err)
        })
    }

    /// Unsaved outputs whose retention ended by `now`, oldest first.
    pub async fn expired_unsaved_outputs(&self, now: i64, limit: i64) -> Result<Vec<Asset>> {
        let sql = format!(
            "SELECT {ASSET_COLUMNS} FROM assets WHERE kind = 'output' AND saved = $1 AND expires_at IS NOT NULL AND expires_at <= $2 \
             ORDER BY expires_at, id LIMIT $3"
        );
        with_pool!(self, pool => sqlx::query_as(&sql).bind(false).bind(now).bind(limit).fetch_all(pool).await.map_err(db_err))
    }

    /// Deletes an output and its thumbnails if it is still unsaved and
    /// expired at `now` (the owner may have saved it since it was listed);
    /// returns the storage keys to delete, empty if it was kept.
    pub async fn delete_expired_output(&self, owner_id: &str, id: &str, now: i64) -> Result<Vec<String>> {
        let keys = with_tx!(self, tx => {
            let expired: Option<String> = sqlx::query_scalar(
                "SELECT storage_key FROM assets WHERE owner_id = $1 AND id = $2 AND kind = 'output' AND saved = $3 \
                 AND expires_at IS NOT NULL AND expires_at <= $4",
            )
            .bind(owner_id)
            .bind(id)
            .bind(false)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            match expired {
                None => Vec::new(),
                Some(key) => {
                    let mut keys: Vec<String> = sqlx::query_scalar("SELECT storage_key FROM assets WHERE owner_id = $1 AND parent_id = $2")
                        .bind(owner_id)
                        .bind(id)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    sqlx::query("DELETE FROM assets WHERE owner_id = $1 AND parent_id = $2").bind(owner_id).bind(id).execute(&mut *tx).await.map_err(db_err)?;
                    sqlx::query("DELETE FROM assets WHERE owner_id = $1 AND id = $2").bind(owner_id).bind(id).execute(&mut *tx).await.map_err(db_err)?;
                    keys.push(key);
                    keys
                }
            }
        });
        Ok(keys)
    }
}

pub const TICKET_SUBJECT_MAX: usize = 200;
pub const TICKET_BODY_MAX: usize = 10_000;
pub const CHILD_REPORT_DETAILS_MAX: usize = 4_000;

/// Trims and checks a free-text field: required, at most `max` characters.
fn checked_text<'a>(field: &str, value: &'a str, max: usize) -> Result<&'a str> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid(format!("{field} is required")));
    }
    if value.chars().count() > max {
        return Err(Error::invalid(format!("{field} is longer than {max} characters")));
    }
    Ok(value)
}

impl Store {
    /// Files a support message of the account; the body is sealed with the
    /// account's data key before it is stored.
    pub async fn create_ticket(&self, user_id: &str, subject: &str, body: &str) -> Result<SupportTicket> {
        let subject = checked_text("subject", subject, TICKET_SUBJECT_MAX)?;
        let body = checked_text("message", body, TICKET_BODY_MAX)?;
        let id = new_id();
        let sealed = self.seal(user_id, &ticket_place(&id), body).await?;
        let ticket = SupportTicket {
            id,
            user_id: user_id.to_string(),
            subject: subject.to_string(),
            body: body.to_string(),
            status: "open".into(),
            created_at: now_ms(),
        };
        with_tx!(self, tx => {
            sqlx::query("INSERT INTO support_tickets (id, user_id, subject, body, status, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(&ticket.id)
                .bind(&ticket.user_id)
                .bind(&ticket.subject)
                .bind(&sealed)
                .bind(&ticket.status)
                .bind(ticket.created_at)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        });
        Ok(ticket)
    }

    /// Every support ticket of the account, newest first, bodies opened
    /// (the page and the data export read them here).
    pub async fn tickets_of_user(&self, user_id: &str) -> Result<Vec<SupportTicket>> {
        let sql = format!("SELECT {TICKET_COLUMNS} FROM support_tickets WHERE user_id = $1 ORDER BY id DESC");
        let mut tickets: Vec<SupportTicket> =
            with_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).fetch_all(pool).await.map_err(db_err)?);
        for ticket in &mut tickets {
            ticket.body = self.open(user_id, &ticket_place(&ticket.id), &ticket.body).await?;
        }
        Ok(tickets)
    }

    /// Records a report that `account_id` belongs to a child.
    pub async fn create_child_report(&self, account_id: &str, reporter_id: Option<&str>, details: &str) -> Result<ChildReport> {
        let details = checked_text("details", details, CHILD_REPORT_DETAILS_MAX)?;
        let sql = format!(
            "INSERT INTO child_reports (id, account_id, reporter_id, details, status, created_at) VALUES ($1, $2, $3, $4, 'open', $5) \
             RETURNING {CHILD_REPORT_COLUMNS}"
        );
        Ok(with_tx!(self, tx => {
            sqlx::query_as(&sql)
                .bind(new_id())
                .bind(account_id)
                .bind(reporter_id)
                .bind(details)
                .bind(now_ms())
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?
        }))
    }

    /// Open reports first (oldest first), then the latest reviewed ones.
    pub async fn child_reports(&self, limit: i64) -> Result<Vec<ChildReport>> {
        let sql = format!(
            "SELECT {CHILD_REPORT_COLUMNS} FROM child_reports \
             ORDER BY CASE WHEN status = 'open' THEN 0 ELSE 1 END, CASE WHEN status = 'open' THEN created_at ELSE -reviewed_at END, id \
             LIMIT $1"
        );
        with_pool!(self, pool => sqlx::query_as(&sql).bind(limit).fetch_all(pool).await.map_err(db_err))
    }

    pub async fn child_report(&self, id: &str) -> Result<ChildReport> {
        let sql = format!("SELECT {CHILD_REPORT_COLUMNS} FROM child_reports WHERE id = $1");
        let report: Option<ChildReport> =
            with_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await.map_err(db_err)?);
        report.ok_or_else(Error::not_found)
    }

    /// Closes an open report as `confirmed` or `dismissed`; a report
    /// reviewed before is refused (`invalid_input`), unknown is `not_found`.
    pub async fn review_child_report(&self, id: &str, status: &str, reviewer_id: &str, now: i64) -> Result<ChildReport> {
        if !matches!(status, "confirmed" | "dismissed") {
            return Err(Error::invalid("a review confirms or dismisses"));
        }
        let sql = format!(
            "UPDATE child_reports SET status = $2, reviewed_by = $3, reviewed_at = $4 WHERE id = $1 AND status = 'open' \
             RETURNING {CHILD_REPORT_COLUMNS}"
        );
        let report: Option<ChildReport> = with_tx!(self, tx => {
            sqlx::query_as(&sql).bind(id).bind(status).bind(reviewer_id).bind(now).fetch_optional(&mut *tx).await.map_err(db_err)?
        });
        match report {
            Some(report) => Ok(report),
            None => {
                self.child_report(id).await?;
                Err(Error::new(ErrorCode::InvalidInput, "this report was already reviewed"))
            }
        }
    }
}
