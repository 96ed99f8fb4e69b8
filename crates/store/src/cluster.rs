//! What nodes share through PostgreSQL besides tables: `NOTIFY` messages on
//! a channel, heard by a dedicated listener connection on every node. On
//! SQLite there is one process, so nothing crosses and these do nothing.

use std::future::Future;

use domain::ids::new_id;
use domain::{Error, ErrorCode, Result};
use sqlx::postgres::PgListener;
use sqlx::Connection;

use crate::{db_err, now_ms, with_tx, Backend, Store};

impl Store {
    /// Whether several nodes may share this database (PostgreSQL), so state
    /// like rate-limit buckets must live in it rather than in memory.
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Takes a token from a shared rate-limit bucket: `Ok` or the seconds
    /// until a token is there. The row is locked for the read-modify-write,
    /// so nodes never hand out the same token twice.
    pub async fn take_rate_token(&self, key: &str, size: u32, window_secs: u32, now_ms: i64) -> Result<std::result::Result<(), u64>> {
        let full = domain::rate::Bucket::full(size, window_secs, now_ms);
        let lock = if self.is_postgres() { " FOR UPDATE" } else { "" };
        let select = format!("SELECT level, at_ms FROM rate_buckets WHERE key = $1{lock}");
        Ok(with_tx!(self, tx => {
            sqlx::query("INSERT INTO rate_buckets (key, level, at_ms) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING")
                .bind(key)
                .bind(full.level)
                .bind(full.at_ms)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            let (level, at_ms): (i64, i64) = sqlx::query_as(&select).bind(key).fetch_one(&mut *tx).await.map_err(db_err)?;
            let (after, taken) = domain::rate::Bucket { level, at_ms }.take(size, window_secs, now_ms);
            sqlx::query("UPDATE rate_buckets SET level = $2, at_ms = $3 WHERE key = $1")
                .bind(key)
                .bind(after.level)
                .bind(after.at_ms)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            taken
        }))
    }

    /// Drops buckets untouched since `before_ms` (refilled long ago: a
    /// missing row reads as a full bucket).
    pub async fn prune_rate_buckets(&self, before_ms: i64) -> Result<u64> {
        Ok(with_tx!(self, tx => sqlx::query("DELETE FROM rate_buckets WHERE at_ms < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected()))
    }
}

/// PostgreSQL refuses `NOTIFY` payloads of 8000 bytes or more.
pub const MAX_NOTIFY_BYTES: usize = 7900;

/// A connection that only listens. Notifications sent while it was
/// disconnected are lost: [`Listener::recv`] says so, and callers re-read
/// what they care about.
pub struct Listener {
    inner: PgListener,
}

/// What a listener heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    Message(String),
    /// The connection dropped and was re-established; anything sent in
    /// between is lost.
    Reconnected,
}

impl Listener {
    /// The next message. An error means the database cannot be reached
    /// right now; call again later (the connection is re-opened).
    pub async fn recv(&mut self) -> Result<Heard> {
        match self.inner.try_recv().await {
            Ok(Some(n)) => Ok(Heard::Message(n.payload().to_string())),
            Ok(None) => Ok(Heard::Reconnected),
            Err(sqlx::Error::PoolClosed) => Err(Error::new(ErrorCode::Unavailable, "the store is closed")),
            Err(e) => {
                tracing::warn!(error = %e, "listener connection failed");
                Err(Error::new(ErrorCode::Unavailable, "listener connection failed"))
            }
        }
    }
}

impl Store {
    /// Sends `payloads` on `channel` in one transaction: listeners get all of
    /// them, in order, or none. Each must be shorter than [`MAX_NOTIFY_BYTES`].
    pub async fn notify(&self, channel: &str, payloads: &[String]) -> Result<()> {
        let Backend::Postgres(pool) = &self.backend else { return Ok(()) };
        if payloads.iter().any(|p| p.len() > MAX_NOTIFY_BYTES) {
            return Err(Error::internal("notification payload too large"));
        }
        let mut tx = pool.begin().await.map_err(db_err)?;
        for payload in payloads {
            sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(payload).execute(&mut *tx).await.map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    /// A dedicated connection listening on `channel`; `None` on SQLite.
    pub async fn listen(&self, channel: &str) -> Result<Option<Listener>> {
        let Backend::Postgres(pool) = &self.backend else { return Ok(None) };
        let mut inner = PgListener::connect_with(pool).await.map_err(db_err)?;
        inner.listen(channel).await.map_err(db_err)?;
        Ok(Some(Listener { inner }))
    }

    /// Runs `work` unless another node is running work under `name` right
    /// now (then `None`). On PostgreSQL the lock is an advisory lock held by
    /// a connection of its own, closed afterwards, so a node that dies
    /// mid-work frees it too. SQLite has one process: `work` always runs.
    pub async fn exclusively<T>(&self, name: &str, work: impl Future<Output = Result<T>>) -> Result<Option<T>> {
        let Backend::Postgres(pool) = &self.backend else { return work.await.map(Some) };
        let mut conn = pool.acquire().await.map_err(db_err)?.detach();
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(lock_key(name)).fetch_one(&mut conn).await.map_err(db_err)?;
        if !locked {
            return Ok(None);
        }
        let out = work.await;
        if let Err(e) = conn.close().await {
            tracing::warn!(error = %e, "closing a lock connection failed");
        }
        out.map(Some)
    }

    /// Puts a running task back in the queue without counting the attempt:
    /// its worker is shutting down, not failing. `false` when `worker_id`
    /// no longer holds the task.
    pub async fn release_task(&self, id: &str, worker_id: &str) -> Result<bool> {
        let now = now_ms();
        Ok(with_tx!(self, tx => {
            let owner: Option<String> = sqlx::query_scalar(
                "UPDATE tasks SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, progress = 0, \
                 attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, updated_at = $3 \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running' RETURNING owner_id",
            )
            .bind(id)
            .bind(worker_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            if let Some(owner) = &owner {
                sqlx::query("INSERT INTO task_events (id, task_id, owner_id, status, detail, at) VALUES ($1, $2, $3, 'queued', $4, $5)")
                    .bind(new_id())
                    .bind(id)
                    .bind(owner)
                    .bind("released: its worker stopped")
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            owner.is_some()
        }))
    }
}

/// A stable advisory-lock key per name (FNV-1a), apart from the keys other
/// statements use.
fn lock_key(name: &str) -> i64 {
    let hash = format!("atelier:{name}").bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    hash as i64
}
