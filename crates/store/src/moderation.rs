//! Moderation (C40, C41): content-rule events, reports of images, account
//! suspension, and the read-only views the admin console is built from.

use domain::ids::new_id;
use domain::{Error, Result};
use serde::Serialize;

use crate::ledger::LedgerTx;
use crate::tasks::add_event;
use crate::users::USER_COLUMNS;
use crate::{db_err, now_ms, with_pool, with_tx, Store, User};

/// A prompt or upload the content rules refused (`block`) or let through for
/// a moderator to look at (`review`).
#[derive(Debug, Clone)]
pub struct NewModerationEvent {
    pub user_id: String,
    /// `prompt` or `upload`.
    pub surface: String,
    pub category: String,
    pub rule_id: String,
    /// `block` or `review`.
    pub action: String,
    pub prompt_hash: String,
    /// Kept only when the operator turned on review retention.
    pub prompt: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ModerationEvent {
    pub id: String,
    pub user_id: String,
    pub surface: String,
    pub category: String,
    pub rule_id: String,
    pub action: String,
    pub prompt_hash: String,
    pub prompt: Option<String>,
    /// `blocked` (nothing to do), `open` (waits for a moderator), `reviewed`.
    pub status: String,
    pub created_at: i64,
    pub reviewed_at: Option<i64>,
    pub reviewed_by: Option<String>,
}

const EVENT_COLUMNS: &str =
    "id, user_id, surface, category, rule_id, action, prompt_hash, prompt, status, created_at, reviewed_at, reviewed_by";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Report {
    pub id: String,
    pub reporter_id: Option<String>,
    pub owner_id: String,
    pub asset_id: String,
    pub reason: String,
    /// `open` or `resolved`.
    pub status: String,
    pub resolution: Option<String>,
    /// The authorities' case number or other free-text reference.
    pub reference: Option<String>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub created_at: i64,
}

const REPORT_COLUMNS: &str =
    "id, reporter_id, owner_id, asset_id, reason, status, resolution, reference, resolved_by, resolved_at, created_at";

/// What a suspension ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Suspension {
    pub sessions_ended: u64,
    pub tasks_canceled: u64,
}

/// One row of the admin users list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserSummary {
    pub user: User,
    pub last_seen_at: Option<i64>,
    pub available: i64,
    pub held: i64,
    pub debt: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TaskStat {
    pub status: String,
    pub model: Option<String>,
    pub count: i64,
}

fn event_place(id: &str) -> String {
    format!("moderation_events.prompt/{id}")
}

impl Store {
    pub async fn record_moderation_event(&self, new: NewModerationEvent) -> Result<ModerationEvent> {
        let id = new_id();
        let prompt = match &new.prompt {
            Some(p) => Some(self.seal(&new.user_id, &event_place(&id), p).await?),
            None => None,
        };
        let status = if new.action == "review" { "open" } else { "blocked" };
        let sql = format!(
            "INSERT INTO moderation_events (id, user_id, surface, category, rule_id, action, prompt_hash, prompt, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {EVENT_COLUMNS}"
        );
        let event: ModerationEvent = with_tx!(self, tx => {
            sqlx::query_as(&sql)
                .bind(&id)
                .bind(&new.user_id)
                .bind(&new.surface)
                .bind(&new.category)
                .bind(&new.rule_id)
                .bind(&new.action)
                .bind(&new.prompt_hash)
                .bind(&prompt)
                .bind(status)
                .bind(now_ms())
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?
        });
        self.reveal_event(event).await
    }

    async fn reveal_event(&self, mut event: ModerationEvent) -> Result<ModerationEvent> {
        if let Some(sealed) = &event.prompt {
            event.prompt = Some(self.open(&event.user_id, &event_place(&event.id), sealed).await?);
        }
        Ok(event)
    }

    /// Newest first, optionally narrowed to one status and one account.
    pub async fn moderation_events(&self, status: Option<&str>, user_id: Option<&str>, limit: i64) -> Result<Vec<ModerationEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM moderation_events WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR user_id = $2) \
             ORDER BY id DESC LIMIT $3"
        );
        let rows: Vec<ModerationEvent> = with_pool!(self, pool => {
            sqlx::query_as(&sql).bind(status).bind(user_id).bind(limit).fetch_all(pool).await.map_err(db_err)?
        });
        let mut out = Vec::with_capacity(rows.len());
        for event in rows {
            out.push(self.reveal_event(event).await?);
        }
        Ok(out)
    }

    /// A moderator has looked at a flagged prompt.
    pub async fn mark_moderation_event_reviewed(&self, id: &str, moderator_id: &str) -> Result<()> {
        let n = with_tx!(self, tx => {
            sqlx::query("UPDATE moderation_events SET status = 'reviewed', reviewed_at = $2, reviewed_by = $3 WHERE id = $1 AND status = 'open'")
                .bind(id)
                .bind(now_ms())
                .bind(moderator_id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected()
        });
        if n == 0 {
            return Err(Error::not_found());
        }
        Ok(())
    }

    /// Files a report about an image (an upload or an output). An unknown id
    /// is `not_found`, like an image the reporter may not see. Visitors of a
    /// share link report without an account (`reporter_id` absent).
    pub async fn create_report(&self, reporter_id: Option<&str>, asset_id: &str, reason: &str) -> Result<Report> {
        let sql = format!(
            "INSERT INTO reports (id, reporter_id, owner_id, asset_id, reason, status, created_at) \
             SELECT $1, $2, owner_id, id, $4, 'open', $5 FROM assets WHERE id = $3 AND kind IN ('upload', 'output') \
             RETURNING {REPORT_COLUMNS}"
        );
        let report: Option<Report> = with_tx!(self, tx => {
            sqlx::query_as(&sql)
                .bind(new_id())
                .bind(reporter_id)
                .bind(asset_id)
                .bind(reason)
                .bind(now_ms())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
        });
        report.ok_or_else(Error::not_found)
    }

    pub async fn reports(&self, status: Option<&str>, limit: i64) -> Result<Vec<Report>> {
        let sql = format!("SELECT {REPORT_COLUMNS} FROM reports WHERE ($1 IS NULL OR status = $1) ORDER BY id DESC LIMIT $2");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(status).bind(limit).fetch_all(pool).await.map_err(db_err))
    }

    pub async fn report(&self, id: &str) -> Result<Report> {
        let sql = format!("SELECT {REPORT_COLUMNS} FROM reports WHERE id = $1");
        let found: Option<Report> = with_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await.map_err(db_err)?);
        found.ok_or_else(Error::not_found)
    }

    /// Records the latest action taken on a report and closes it.
    pub async fn resolve_report(&self, id: &str, moderator_id: &str, resolution: &str, reference: Option<&str>) -> Result<Report> {
        let sql = format!(
            "UPDATE reports SET status = 'resolved', resolution = $2, reference = $3, resolved_by = $4, resolved_at = $5 \
             WHERE id = $1 RETURNING {REPORT_COLUMNS}"
        );
        let report: Option<Report> = with_tx!(self, tx => {
            sqlx::query_as(&sql)
                .bind(id)
                .bind(resolution)
                .bind(reference)
                .bind(moderator_id)
                .bind(now_ms())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
        });
        report.ok_or_else(Error::not_found)
    }

    /// Suspends an account in one transaction: the status (which sign-in,
    /// sessions and API keys check), every session ended, every queued or
    /// running task canceled with its credit hold released.
    pub async fn suspend_account(&self, user_id: &str) -> Result<Suspension> {
        let now = now_ms();
        Ok(with_tx!(self, tx => {
            let n = sqlx::query("UPDATE users SET status = 'suspended', updated_at = $2 WHERE id = $1")
                .bind(user_id)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            if n == 0 {
                return Err(Error::not_found());
            }
            let sessions_ended =
                sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(&mut *tx).await.map_err(db_err)?.rows_affected();
            let canceled: Vec<String> = sqlx::query_scalar(
                "UPDATE tasks SET status = 'canceled', finished_at = $2, updated_at = $2, lease_owner = NULL, lease_expires_at = NULL \
                 WHERE owner_id = $1 AND status IN ('queued', 'running') RETURNING id",
            )
            .bind(user_id)
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
            for task_id in &canceled {
                add_event!(tx, task_id, user_id, "canceled", Some("account suspended".to_string()), now);
                tx.release(task_id, "task_canceled", now).await?;
            }
            Suspension { sessions_ended, tasks_canceled: canceled.len() as u64 }
        }))
    }

    /// Gives a suspended account its access back.
    pub async fn reinstate_account(&self, user_id: &str) -> Result<()> {
        let n = with_tx!(self, tx => {
            sqlx::query("UPDATE users SET status = 'active', updated_at = $2 WHERE id = $1 AND status = 'suspended'")
                .bind(user_id)
                .bind(now_ms())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected()
        });
        if n == 0 {
            return Err(Error::not_found());
        }
        Ok(())
    }

    /// Accounts matching `query` (part of the email or name, or the exact
    /// id), newest first, with their balance and last activity.
    pub async fn search_users(&self, query: &str, limit: i64) -> Result<Vec<UserSummary>> {
        let pattern = format!("%{}%", query.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        let sql = format!(
            "SELECT {USER_COLUMNS}, \
             (SELECT MAX(s.last_seen_at) FROM sessions s WHERE s.user_id = users.id) AS last_seen_at, \
             COALESCE((SELECT b.available FROM balances b WHERE b.user_id = users.id), 0) AS available, \
             COALESCE((SELECT b.held FROM balances b WHERE b.user_id = users.id), 0) AS held, \
             COALESCE((SELECT b.debt FROM balances b WHERE b.user_id = users.id), 0) AS debt \
             FROM users WHERE $1 = '' OR id = $1 OR LOWER(email) LIKE $2 ESCAPE '\\' OR LOWER(name) LIKE $2 ESCAPE '\\' \
             ORDER BY id DESC LIMIT $3"
        );
        let query = query.trim();
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(query).bind(&pattern).bind(limit).fetch_all(pool).await.map_err(db_err)?;
            rows.iter()
                .map(|row| {
                    use sqlx::{FromRow, Row};
                    Ok(UserSummary {
                        user: User::from_row(row).map_err(db_err)?,
                        last_seen_at: row.try_get("last_seen_at").map_err(db_err)?,
                        available: row.try_get("available").map_err(db_err)?,
                        held: row.try_get("held").map_err(db_err)?,
                        debt: row.try_get("debt").map_err(db_err)?,
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
    }

    /// Tasks per status and model (the admin console's queue view).
    pub async fn task_stats(&self) -> Result<Vec<TaskStat>> {
        with_pool!(self, pool => {
            sqlx::query_as("SELECT status, model, COUNT(*) AS count FROM tasks GROUP BY status, model ORDER BY status, model")
                .fetch_all(pool)
                .await
                .map_err(db_err)
        })
    }

    /// Images (uploads and outputs) an account holds.
    pub async fn asset_count(&self, owner_id: &str) -> Result<i64> {
        with_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM assets WHERE owner_id = $1 AND kind IN ('upload', 'output')")
                .bind(owner_id)
                .fetch_one(pool)
                .await
                .map_err(db_err)
        })
    }
}
