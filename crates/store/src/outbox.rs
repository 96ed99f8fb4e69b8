use domain::ids::new_id;
use domain::Result;

use crate::{db_err, now_ms, with_pool, with_tx, Mail, NewMail, Store};

const MAIL_COLUMNS: &str =
    "id, user_id, kind, to_addr, subject, body_text, status, attempts, next_attempt_at, last_error, created_at, sent_at, unsubscribe_url";

impl Store {
    /// Queues a message; the mailer delivers it later (SMTP or files).
    pub async fn enqueue_mail(&self, mail: NewMail) -> Result<String> {
        let id = new_id();
        let now = now_ms();
        with_tx!(self, tx => {
            sqlx::query(
                "INSERT INTO outbox (id, user_id, kind, to_addr, subject, body_text, status, next_attempt_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)",
            )
            .bind(&id)
            .bind(&mail.user_id)
            .bind(&mail.kind)
            .bind(&mail.to_addr)
            .bind(&mail.subject)
            .bind(&mail.body_text)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        });
        Ok(id)
    }

    /// Pending messages whose next attempt is due, oldest first.
    pub async fn due_mail(&self, now: i64, limit: i64) -> Result<Vec<Mail>> {
        let sql = format!(
            "SELECT {MAIL_COLUMNS} FROM outbox WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2"
        );
        with_pool!(self, pool => sqlx::query_as(&sql).bind(now).bind(limit).fetch_all(pool).await.map_err(db_err))
    }

    pub async fn mail_by_id(&self, id: &str) -> Result<Option<Mail>> {
        let sql = format!("SELECT {MAIL_COLUMNS} FROM outbox WHERE id = $1");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await.map_err(db_err))
    }

    /// Every message of one account, newest first.
    pub async fn mail_of_user(&self, user_id: &str) -> Result<Vec<Mail>> {
        let sql = format!("SELECT {MAIL_COLUMNS} FROM outbox WHERE user_id = $1 ORDER BY id DESC");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).fetch_all(pool).await.map_err(db_err))
    }

    pub async fn mark_mail_sent(&self, id: &str) -> Result<()> {
        let now = now_ms();
        with_tx!(self, tx => {
            sqlx::query("UPDATE outbox SET status = 'sent', sent_at = $2, attempts = attempts + 1, last_error = NULL WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        });
        Ok(())
    }

    /// Records a failed attempt: retried at `next_attempt_at`, or given up
    /// (`status = failed`) when `next_attempt_at` is `None`.
    pub async fn mark_mail_failed(&self, id: &str, error: &str, next_attempt_at: Option<i64>) -> Result<()> {
        with_tx!(self, tx => {
            sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2, status = $3, next_attempt_at = COALESCE($4, next_attempt_at) \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(error)
            .bind(if next_attempt_at.is_some() { "pending" } else { "failed" })
            .bind(next_attempt_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }
}
