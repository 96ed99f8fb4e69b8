//! Counts for `/metrics` and `atelier doctor`, cheap enough to compute at
//! every scrape: the task counts read only the `tasks_metrics` index, the
//! queue and outbox figures a range of their status indexes.

use domain::Result;

use crate::{db_err, with_pool, Backend, Store};

/// Tasks in one status, for one model and engine (as recorded on the task).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TaskCount {
    pub status: String,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub count: i64,
}

/// How many items wait, and since when the oldest has waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    pub count: i64,
    pub oldest_at: Option<i64>,
}

impl Store {
    pub async fn task_counts(&self) -> Result<Vec<TaskCount>> {
        with_pool!(self, pool => sqlx::query_as(
            "SELECT status, model, provider, COUNT(*) AS count FROM tasks GROUP BY status, model, provider ORDER BY status, model, provider",
        )
        .fetch_all(pool)
        .await
        .map_err(db_err))
    }

    /// Queued tasks and the creation time of the oldest.
    pub async fn queue_backlog(&self) -> Result<Backlog> {
        self.backlog("SELECT COUNT(*), MIN(created_at) FROM tasks WHERE status = 'queued'").await
    }

    /// Mail waiting in the outbox (not yet sent, not given up on).
    pub async fn outbox_backlog(&self) -> Result<Backlog> {
        self.backlog("SELECT COUNT(*), MIN(created_at) FROM outbox WHERE status = 'pending'").await
    }

    async fn backlog(&self, sql: &'static str) -> Result<Backlog> {
        let (count, oldest_at): (i64, Option<i64>) = with_pool!(self, pool => sqlx::query_as(sql).fetch_one(pool).await.map_err(db_err))?;
        Ok(Backlog { count, oldest_at })
    }

    /// Which embedded migrations this database has recorded; nothing is
    /// applied (for `atelier doctor`).
    pub async fn migration_status(&self) -> Result<MigrationStatus> {
        let table = match self.backend {
            Backend::Sqlite { .. } => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
            Backend::Postgres(_) => {
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'schema_migrations'"
            }
        };
        let exists: i64 = with_pool!(self, pool => sqlx::query_scalar(table).fetch_one(pool).await.map_err(db_err))?;
        let recorded: Vec<i64> = if exists > 0 {
            with_pool!(self, pool => sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version").fetch_all(pool).await.map_err(db_err))?
        } else {
            Vec::new()
        };
        let known = self.migrations();
        Ok(MigrationStatus {
            applied: known.iter().filter(|m| recorded.contains(&m.version)).count(),
            pending: known.iter().filter(|m| !recorded.contains(&m.version)).map(|m| m.name).collect(),
            unknown: recorded.into_iter().filter(|v| !known.iter().any(|m| m.version == *v)).collect(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    pub applied: usize,
    /// Known to this binary, not applied, by name.
    pub pending: Vec<&'static str>,
    /// Recorded by the database but unknown to this binary (a newer one migrated it).
    pub unknown: Vec<i64>,
}
