use domain::ids::new_id;
use domain::task::TaskStatus;
use domain::{Error, ErrorCode, Result};

use crate::assets::insert_asset;
use crate::ledger::LedgerTx;
use crate::{
    db_err, is_unique_violation, now_ms, with_pool, with_tx, Backend, NewAsset, NewTask, Page, Store, Task, TaskEvent, TASK_COLUMNS,
};

/// Inserts one timeline step; used inside every status-changing transaction.
/// A step that ends the task also queues its webhook deliveries, so every
/// way a task ends (worker, cancel, sweep, suspension) sends its event.
macro_rules! add_event {
    ($tx:expr, $task_id:expr, $owner_id:expr, $status:expr, $detail:expr, $at:expr) => {{
        let status: &str = $status;
        sqlx::query("INSERT INTO task_events (id, task_id, owner_id, status, detail, at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(::domain::ids::new_id())
            .bind($task_id)
            .bind($owner_id)
            .bind(status)
            .bind($detail)
            .bind($at)
            .execute(&mut *$tx)
            .await
            .map_err($crate::db_err)?;
        if ::domain::task::TaskStatus::parse(status)?.is_terminal() {
            $crate::hooks::queue_hooks!($tx, $task_id, $owner_id, status, $at);
        }
    }};
}
pub(crate) use add_event;

/// What a submit did: a new task, or the first one for a repeated key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    Created(Task),
    Replayed(Task),
}

impl Submitted {
    pub fn task(&self) -> &Task {
        match self {
            Submitted::Created(t) | Submitted::Replayed(t) => t,
        }
    }
}

impl Store {
    /// Queues a task in one transaction. With an idempotency key, a repeat
    /// returns the first task (a different body under the same key is
    /// `idempotency_conflict`).
    pub async fn submit_task(&self, new: NewTask) -> Result<Submitted> {
        if let Some(key) = &new.idempotency_key {
            if let Some(first) = self.task_by_idempotency_key(&new.owner_id, key).await? {
                return replay(first, &new);
            }
        }
        let now = now_ms();
        let id = new_id();
        let sealed_prompt = self.seal(&new.owner_id, &prompt_place(&id), &new.prompt).await?;
        let sql = format!(
            "INSERT INTO tasks (id, owner_id, kind, status, prompt, params, provider, model, cost, idempotency_key, request_hash, \
             max_attempts, created_at, updated_at) VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
             RETURNING {TASK_COLUMNS}"
        );
        let inserted: std::result::Result<Task, sqlx::Error> = with_tx!(self, tx => {
            let task = sqlx::query_as(&sql)
                .bind(&id)
                .bind(&new.owner_id)
                .bind(&new.kind)
                .bind(&sealed_prompt)
                .bind(&new.params)
                .bind(&new.provider)
                .bind(&new.model)
                .bind(new.cost)
                .bind(&new.idempotency_key)
                .bind(&new.request_hash)
                .bind(new.max_attempts)
                .bind(now)
                .fetch_one(&mut *tx)
                .await;
            if task.is_ok() {
                add_event!(tx, &id, &new.owner_id, "queued", None::<String>, now);
                // The credit hold: one conditional update in this transaction;
                // refused (insufficient or in debt) → return rolls it all back.
                if new.cost > 0 {
                    tx.hold(&new.owner_id, &id, new.cost, now).await?;
                }
            }
            task
        });
        match inserted {
            Ok(task) => Ok(Submitted::Created(self.reveal(task).await?)),
            // Two submits with one key raced: the other one won.
            Err(e) if is_unique_violation(&e) => {
                let key = new.idempotency_key.as_deref().unwrap_or_default();
                let first = self.task_by_idempotency_key(&new.owner_id, key).await?.ok_or_else(|| db_err(e))?;
                replay(first, &new)
            }
            Err(e) => Err(db_err(e)),
        }
    }

    async fn task_by_idempotency_key(&self, owner_id: &str, key: &str) -> Result<Option<(Task, Option<String>)>> {
        let sql = format!("SELECT {TASK_COLUMNS}, request_hash FROM tasks WHERE owner_id = $1 AND idempotency_key = $2");
        let found: Option<(Task, Option<String>)> = with_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(owner_id).bind(key).fetch_optional(pool).await.map_err(db_err)?;
            row.map(|row| {
                use sqlx::{FromRow, Row};
                Ok::<_, Error>((Task::from_row(&row).map_err(db_err)?, row.try_get("request_hash").map_err(db_err)?))
            })
            .transpose()?
        });
        match found {
            Some((task, hash)) => Ok(Some((self.reveal(task).await?, hash))),
            None => Ok(None),
        }
    }

    /// Decrypts the prompt of a task read from the database.
    async fn reveal(&self, mut task: Task) -> Result<Task> {
        task.prompt = self.open(&task.owner_id, &prompt_place(&task.id), &task.prompt).await?;
        Ok(task)
    }

    pub async fn get_task(&self, owner_id: &str, id: &str) -> Result<Task> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 AND owner_id = $2");
        let task: Option<Task> =
            with_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(owner_id).fetch_optional(pool).await.map_err(db_err)?);
        self.reveal(task.ok_or_else(Error::not_found)?).await
    }

    /// Newest first; `before` is the last id of the previous page (ids are
    /// UUIDv7, so id order is creation order).
    pub async fn list_tasks(&self, owner_id: &str, before: Option<&str>, limit: i64) -> Result<Page<Task>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE owner_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3");
        let rows: Vec<Task> = with_pool!(self, pool => {
            sqlx::query_as(&sql).bind(owner_id).bind(before).bind(limit + 1).fetch_all(pool).await.map_err(db_err)?
        });
        let mut revealed = Vec::with_capacity(rows.len());
        for task in rows {
            revealed.push(self.reveal(task).await?);
        }
        Ok(Page::from_rows(revealed, limit, |t| &t.id))
    }

    pub async fn task_events(&self, owner_id: &str, task_id: &str) -> Result<Vec<TaskEvent>> {
        with_pool!(self, pool => {
            sqlx::query_as("SELECT status, detail, at FROM task_events WHERE task_id = $1 AND owner_id = $2 ORDER BY id")
                .bind(task_id)
                .bind(owner_id)
                .fetch_all(pool)
                .await
                .map_err(db_err)
        })
    }

    /// Cancels a queued or running task of `owner_id`. A running task's worker
    /// notices at its next heartbeat and discards its work.
    pub async fn cancel_task(&self, owner_id: &str, id: &str) -> Result<Task> {
        let now = now_ms();
        let sql = format!(
            "UPDATE tasks SET status = 'canceled', finished_at = $3, updated_at = $3, lease_owner = NULL, lease_expires_at = NULL, \
             error_code = NULL, error_message = NULL WHERE id = $1 AND owner_id = $2 AND status IN ('queued', 'running') RETURNING {TASK_COLUMNS}"
        );
        let canceled: Option<Task> = with_tx!(self, tx => {
            let task: Option<Task> = sqlx::query_as(&sql).bind(id).bind(owner_id).bind(now).fetch_optional(&mut *tx).await.map_err(db_err)?;
            if task.is_some() {
                add_event!(tx, id, owner_id, "canceled", None::<String>, now);
                tx.release(id, "task_canceled", now).await?;
            }
            task
        });
        match canceled {
            Some(task) => self.reveal(task).await,
            None => {
                let task = self.get_task(owner_id, id).await?;
                task.status.check_cancelable()?;
                Err(Error::new(ErrorCode::TaskNotCancelable, "the task changed state; try again"))
            }
        }
    }

    /// Claims a queued task for `worker_id` with a lease until
    /// `now + lease_ms`. Accounts take turns: the task comes from the account
    /// with the fewest running tasks, then the one served least recently
    /// (never served first), then the oldest waiting; accounts at the
    /// scheduling cap wait. PostgreSQL skips rows other workers hold.
    pub async fn claim_task(&self, worker_id: &str, lease_ms: i64) -> Result<Option<Task>> {
        let now = now_ms();
        let running = "(SELECT COUNT(*) FROM tasks r WHERE r.owner_id = q.owner_id AND r.status = 'running')";
        let owner = format!(
            "SELECT q.owner_id FROM tasks q WHERE q.status = 'queued' AND ($4 = 0 OR {running} < $4) GROUP BY q.owner_id \
             ORDER BY {running}, COALESCE((SELECT MAX(r.started_at) FROM tasks r WHERE r.owner_id = q.owner_id), 0), \
             MIN(q.created_at), q.owner_id LIMIT 1"
        );
        let lock = match self.backend {
            Backend::Sqlite { .. } => "",
            Backend::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE tasks SET status = 'running', lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1, \
             started_at = COALESCE(started_at, $3), progress = 0, updated_at = $3 WHERE id = (SELECT id FROM tasks \
             WHERE status = 'queued' AND owner_id = ({owner}) ORDER BY created_at, id LIMIT 1{lock}) RETURNING {TASK_COLUMNS}"
        );
        let cap = self.scheduling.max_running_per_account;
        let claimed = with_tx!(self, tx => {
            // Concurrent claims on PostgreSQL would each see the account
            // under its cap: with a cap, claims take turns.
            if cap > 0 && matches!(self.backend, Backend::Postgres(_)) {
                sqlx::query("SELECT pg_advisory_xact_lock(727502)").execute(&mut *tx).await.map_err(db_err)?;
            }
            let task: Option<Task> =
                sqlx::query_as(&sql).bind(worker_id).bind(now + lease_ms).bind(now).bind(cap).fetch_optional(&mut *tx).await.map_err(db_err)?;
            if let Some(task) = &task {
                add_event!(tx, &task.id, &task.owner_id, "running", Some(format!("attempt {}", task.attempts)), now);
            }
            task
        });
        match claimed {
            Some(task) => self.reveal(task).await.map(Some),
            None => Ok(None),
        }
    }

    /// Extends the lease and records progress. `false` means the task is no
    /// longer this worker's (canceled, or the lease was lost): stop working.
    pub async fn heartbeat_task(&self, id: &str, worker_id: &str, lease_ms: i64, progress: i64) -> Result<bool> {
        let now = now_ms();
        let n = with_tx!(self, tx => {
            sqlx::query(
                "UPDATE tasks SET lease_expires_at = $3, progress = $4, updated_at = $5 \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
            )
            .bind(id)
            .bind(worker_id)
            .bind(now + lease_ms)
            .bind(progress.clamp(0, 100))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// Marks the task succeeded and records its outputs in one transaction,
    /// only if `worker_id` still holds it; `false` means the work must be
    /// discarded (another attempt or a cancel won), so nothing is recorded twice.
    pub async fn complete_task(&self, id: &str, worker_id: &str, outputs: &[NewAsset]) -> Result<bool> {
        let now = now_ms();
        Ok(with_tx!(self, tx => {
            let owner: Option<String> = sqlx::query_scalar(
                "UPDATE tasks SET status = 'succeeded', progress = 100, finished_at = $3, updated_at = $3, lease_owner = NULL, \
                 lease_expires_at = NULL, error_code = NULL, error_message = NULL \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running' RETURNING owner_id",
            )
            .bind(id)
            .bind(worker_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            match owner {
                None => false,
                Some(owner) => {
                    for asset in outputs {
                        if asset.owner_id != owner {
                            return Err(Error::internal("output owner differs from task owner"));
                        }
                        insert_asset!(tx, asset, now);
                    }
                    add_event!(tx, id, &owner, "succeeded", None::<String>, now);
                    tx.capture(id, now).await?;
                    true
                }
            }
        }))
    }

    /// Records a failure. A retryable failure with attempts left goes back to
    /// the queue; otherwise the task fails with `code`.
    pub async fn fail_task(&self, id: &str, worker_id: &str, code: &str, message: &str, retryable: bool) -> Result<bool> {
        let now = now_ms();
        Ok(with_tx!(self, tx => {
            let row: Option<(String, i64, i64)> = sqlx::query_as(
                "SELECT owner_id, attempts, max_attempts FROM tasks WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
            )
            .bind(id)
            .bind(worker_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            match row {
                None => false,
                Some((owner, attempts, max_attempts)) => {
                    let requeue = retryable && attempts < max_attempts;
                    let status = if requeue { TaskStatus::Queued } else { TaskStatus::Failed };
                    // The SELECT takes no lock on PostgreSQL: re-check the lease
                    // here so a cancel or a sweep that committed since is not undone.
                    let moved = sqlx::query(
                        "UPDATE tasks SET status = $2, lease_owner = NULL, lease_expires_at = NULL, progress = 0, updated_at = $3, \
                         finished_at = $4, error_code = $5, error_message = $6 WHERE id = $1 AND lease_owner = $7 AND status = 'running'",
                    )
                    .bind(id)
                    .bind(status.as_str())
                    .bind(now)
                    .bind((!requeue).then_some(now))
                    .bind(code)
                    .bind(message)
                    .bind(worker_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .rows_affected()
                        > 0;
                    if moved {
                        add_event!(tx, id, &owner, status.as_str(), Some(format!("{code}: {message}")), now);
                        if !requeue {
                            tx.release(id, "task_failed", now).await?;
                        }
                    }
                    moved
                }
            }
        }))
    }

    /// Re-queues running tasks whose lease ran out (their worker died), or
    /// fails them when no attempts are left. Returns how many moved.
    pub async fn requeue_expired(&self) -> Result<u64> {
        let now = now_ms();
        Ok(with_tx!(self, tx => {
            let expired: Vec<(String, String, i64, i64)> = sqlx::query_as(
                "SELECT id, owner_id, attempts, max_attempts FROM tasks WHERE status = 'running' AND lease_expires_at < $1",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
            let mut moved = 0;
            for (id, owner, attempts, max_attempts) in &expired {
                let (status, code) = if attempts < max_attempts { ("queued", None) } else { ("failed", Some("attempts_exhausted")) };
                // The SELECT takes no lock on PostgreSQL: re-check the expiry
                // so a completion, heartbeat or cancel committed since wins.
                let n = sqlx::query(
                    "UPDATE tasks SET status = $2, lease_owner = NULL, lease_expires_at = NULL, progress = 0, updated_at = $3, \
                     finished_at = $4, error_code = COALESCE($5, error_code) WHERE id = $1 AND status = 'running' AND lease_expires_at < $3",
                )
                .bind(id)
                .bind(status)
                .bind(now)
                .bind(code.map(|_| now))
                .bind(code)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
                if n > 0 {
                    add_event!(tx, id, owner, status, Some("lease expired".to_string()), now);
                    if code.is_some() {
                        tx.release(id, "task_failed", now).await?;
                    }
                    moved += 1;
                }
            }
            moved
        }))
    }

    /// Tasks waiting in the queue (for readiness and metrics).
    pub async fn queued_count(&self) -> Result<i64> {
        with_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE status = 'queued'").fetch_one(pool).await.map_err(db_err))
    }
}

/// Where a task's prompt lives, bound into its ciphertext.
fn prompt_place(task_id: &str) -> String {
    format!("tasks.prompt/{task_id}")
}

fn replay((first, first_hash): (Task, Option<String>), new: &NewTask) -> Result<Submitted> {
    if first_hash != new.request_hash {
        return Err(Error::new(ErrorCode::IdempotencyConflict, "this Idempotency-Key was used for a different request"));
    }
    Ok(Submitted::Replayed(first))
}
