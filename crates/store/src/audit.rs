use domain::ids::new_id;
use domain::Result;
use serde::Serialize;

use crate::{db_err, now_ms, with_pool, with_tx, Page, Store};

/// One security or admin action (C34). `ip` must already be truncated.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry<'a> {
    /// The account acting; `None` for the system (sweeps, webhooks).
    pub actor_id: Option<&'a str>,
    /// A stable snake_case name, e.g. `sign_in`, `sign_in_failed`, `password_changed`.
    pub action: &'a str,
    /// The account (or object) acted upon.
    pub target_id: Option<&'a str>,
    pub ip: Option<&'a str>,
    /// Short, non-secret detail (never a password, token or prompt).
    pub detail: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuditRecord {
    pub id: String,
    pub at: i64,
    pub actor_id: Option<String>,
    pub action: String,
    pub target_id: Option<String>,
    pub ip: Option<String>,
    pub detail: Option<String>,
}

const AUDIT_COLUMNS: &str = "id, at, actor_id, action, target_id, ip, detail";

impl Store {
    pub async fn audit(&self, entry: AuditEntry<'_>) -> Result<()> {
        with_tx!(self, tx => {
            sqlx::query("INSERT INTO audit_log (id, at, actor_id, action, target_id, ip, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .bind(new_id())
                .bind(now_ms())
                .bind(entry.actor_id)
                .bind(entry.action)
                .bind(entry.target_id)
                .bind(entry.ip)
                .bind(entry.detail)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        });
        Ok(())
    }

    /// Newest first. With `user_id`, only entries where that account is the
    /// actor or the target (a user's own trail); without, everything (admins).
    pub async fn audit_entries(&self, user_id: Option<&str>, before: Option<&str>, limit: i64) -> Result<Page<AuditRecord>> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE ($1 IS NULL OR actor_id = $1 OR target_id = $1) \
             AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
        );
        let rows: Vec<AuditRecord> = with_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).bind(before).bind(limit + 1).fetch_all(pool).await.map_err(db_err)?);
        Ok(Page::from_rows(rows, limit, |r| &r.id))
    }
}
