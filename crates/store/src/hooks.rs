//! Completion webhooks: endpoints per account and the delivery outbox. A
//! task's end writes one delivery per enabled endpoint in the transaction
//! that ends it ([`queue_hooks`]), so no event is lost to a crash; nodes
//! claim due deliveries with a lease, like tasks, so each attempt is made
//! by one node.

use domain::ids::new_id;
use domain::{Error, Result};
use serde::Serialize;

use crate::{db_err, now_ms, with_pool, with_tx, Backend, Store};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct WebhookEndpoint {
    pub id: String,
    pub owner_id: String,
    /// Set on a one-off endpoint given as `webhook_url` with this task.
    pub task_id: Option<String>,
    pub url: String,
    pub include_prompt: bool,
    /// `enabled` or `disabled` (by its owner, or after repeated failures).
    pub status: String,
    pub consecutive_failures: i64,
    pub disabled_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const ENDPOINT_COLUMNS: &str =
    "id, owner_id, task_id, url, include_prompt, status, consecutive_failures, disabled_at, created_at, updated_at";

pub struct NewWebhookEndpoint<'a> {
    pub owner_id: &'a str,
    pub url: &'a str,
    pub secret: &'a str,
    pub include_prompt: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct WebhookDelivery {
    pub id: String,
    pub endpoint_id: String,
    pub owner_id: String,
    pub task_id: String,
    /// `task.succeeded`, `task.failed` or `task.canceled`.
    pub event: String,
    /// `pending` (retried at `next_attempt_at`), `delivered` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub response_status: Option<i64>,
    /// The start of the receiver's last answer.
    pub response_excerpt: Option<String>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

const DELIVERY_COLUMNS: &str = "d.id, d.endpoint_id, d.owner_id, d.task_id, d.event, d.status, d.attempts, d.next_attempt_at, \
     d.response_status, d.response_excerpt, d.last_error, d.created_at, d.finished_at";

/// A claimed delivery with what sending it needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub delivery: WebhookDelivery,
    pub url: String,
    pub secret: String,
    pub include_prompt: bool,
    /// The claim that must still hold when the attempt is recorded.
    pub claim: String,
}

/// How one attempt went.
#[derive(Debug, Clone, Default)]
pub struct WebhookAttempt {
    pub delivered: bool,
    pub response_status: Option<i64>,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    /// When to try again; `None` after a success or when retries are over.
    pub retry_at: Option<i64>,
}

/// One pending delivery of `task.<status>` to an endpoint.
macro_rules! insert_delivery {
    ($tx:expr, $endpoint_id:expr, $owner_id:expr, $task_id:expr, $status:expr, $at:expr) => {
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, endpoint_id, owner_id, task_id, event, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(::domain::ids::new_id())
        .bind($endpoint_id)
        .bind($owner_id)
        .bind($task_id)
        .bind(format!("task.{}", $status))
        .bind($at)
        .execute(&mut *$tx)
        .await
        .map_err($crate::db_err)?
    };
}

/// Writes a delivery of `task.<status>` for every enabled endpoint of the
/// owner (and the task's one-off endpoint) inside the transaction that
/// ends the task.
macro_rules! queue_hooks {
    ($tx:expr, $task_id:expr, $owner_id:expr, $status:expr, $at:expr) => {{
        let endpoints: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM webhook_endpoints WHERE owner_id = $1 AND status = 'enabled' AND (task_id IS NULL OR task_id = $2)",
        )
        .bind($owner_id)
        .bind($task_id)
        .fetch_all(&mut *$tx)
        .await
        .map_err($crate::db_err)?;
        for endpoint in &endpoints {
            $crate::hooks::insert_delivery!($tx, endpoint, $owner_id, $task_id, $status, $at);
        }
    }};
}
pub(crate) use {insert_delivery, queue_hooks};

/// Where an endpoint's secret lives, bound into its ciphertext.
fn secret_place(endpoint_id: &str) -> String {
    format!("webhook_endpoints.secret/{endpoint_id}")
}

impl Store {
    pub async fn create_webhook_endpoint(&self, new: NewWebhookEndpoint<'_>) -> Result<WebhookEndpoint> {
        let id = new_id();
        let sealed = self.seal(new.owner_id, &secret_place(&id), new.secret).await?;
        let sql = format!(
            "INSERT INTO webhook_endpoints (id, owner_id, url, secret, include_prompt, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {ENDPOINT_COLUMNS}"
        );
        let now = now_ms();
        Ok(with_tx!(self, tx => sqlx::query_as(&sql)
            .bind(&id)
            .bind(new.owner_id)
            .bind(new.url)
            .bind(&sealed)
            .bind(new.include_prompt)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?))
    }

    /// A one-off endpoint for one task (`webhook_url` on submit); its secret
    /// signs that task's event only. The task row is locked first, so a task
    /// that ends meanwhile either sees this endpoint or is seen ended here
    /// (and its event queued now).
    pub async fn create_task_webhook(&self, owner_id: &str, task_id: &str, url: &str, secret: &str) -> Result<WebhookEndpoint> {
        let id = new_id();
        let sealed = self.seal(owner_id, &secret_place(&id), secret).await?;
        let lock = if self.is_postgres() { " FOR UPDATE" } else { "" };
        let task_sql = format!("SELECT status FROM tasks WHERE id = $1 AND owner_id = $2{lock}");
        let sql = format!(
            "INSERT INTO webhook_endpoints (id, owner_id, task_id, url, secret, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {ENDPOINT_COLUMNS}"
        );
        let now = now_ms();
        Ok(with_tx!(self, tx => {
            let status: Option<String> = sqlx::query_scalar(&task_sql).bind(task_id).bind(owner_id).fetch_optional(&mut *tx).await.map_err(db_err)?;
            let status = status.ok_or_else(Error::not_found)?;
            let endpoint: WebhookEndpoint = sqlx::query_as(&sql)
                .bind(&id)
                .bind(owner_id)
                .bind(task_id)
                .bind(url)
                .bind(&sealed)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
            if domain::task::TaskStatus::parse(&status)?.is_terminal() {
                insert_delivery!(tx, &id, owner_id, task_id, &status, now);
            }
            endpoint
        }))
    }

    /// The account's endpoints, oldest first: the registered ones, and with
    /// `with_one_off` those given with a single task too (for its export).
    pub async fn list_webhook_endpoints(&self, owner_id: &str, with_one_off: bool) -> Result<Vec<WebhookEndpoint>> {
        let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE owner_id = $1 AND ($2 OR task_id IS NULL) ORDER BY id");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(owner_id).bind(with_one_off).fetch_all(pool).await.map_err(db_err))
    }

    /// One registered endpoint of `owner_id`; anyone else's is `not_found`.
    pub async fn get_webhook_endpoint(&self, owner_id: &str, id: &str) -> Result<WebhookEndpoint> {
        let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND owner_id = $2 AND task_id IS NULL");
        let found: Option<WebhookEndpoint> =
            with_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(owner_id).fetch_optional(pool).await.map_err(db_err)?);
        found.ok_or_else(Error::not_found)
    }

    /// Turns an endpoint on or off and sets whether events carry the prompt.
    /// Turning it on again clears its failure count.
    pub async fn update_webhook_endpoint(
        &self,
        owner_id: &str,
        id: &str,
        enabled: Option<bool>,
        include_prompt: Option<bool>,
    ) -> Result<WebhookEndpoint> {
        let sql = format!(
            "UPDATE webhook_endpoints SET include_prompt = COALESCE($3, include_prompt), updated_at = $5, \
             status = CASE WHEN $4 IS NULL THEN status WHEN $4 THEN 'enabled' ELSE 'disabled' END, \
             consecutive_failures = CASE WHEN $4 AND status = 'disabled' THEN 0 ELSE consecutive_failures END, \
             disabled_at = CASE WHEN $4 IS NULL THEN disabled_at WHEN $4 THEN NULL ELSE COALESCE(disabled_at, $5) END \
             WHERE id = $1 AND owner_id = $2 AND task_id IS NULL RETURNING {ENDPOINT_COLUMNS}"
        );
        let updated: Option<WebhookEndpoint> = with_tx!(self, tx => sqlx::query_as(&sql)
            .bind(id)
            .bind(owner_id)
            .bind(include_prompt)
            .bind(enabled)
            .bind(now_ms())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?);
        updated.ok_or_else(Error::not_found)
    }

    /// Deletes an endpoint of `owner_id` with its deliveries.
    pub async fn delete_webhook_endpoint(&self, owner_id: &str, id: &str) -> Result<()> {
        let n = with_tx!(self, tx => sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1 AND owner_id = $2 AND task_id IS NULL")
            .bind(id)
            .bind(owner_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected());
        if n == 0 {
            return Err(Error::not_found());
        }
        Ok(())
    }

    /// The latest deliveries of one endpoint of `owner_id`, newest first.
    pub async fn webhook_deliveries(&self, owner_id: &str, endpoint_id: &str, limit: i64) -> Result<Vec<WebhookDelivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.owner_id = $1 AND d.endpoint_id = $2 ORDER BY d.id DESC LIMIT $3"
        );
        with_pool!(self, pool => sqlx::query_as(&sql).bind(owner_id).bind(endpoint_id).bind(limit).fetch_all(pool).await.map_err(db_err))
    }

    /// Every delivery of the account (for its export), oldest first.
    pub async fn webhook_deliveries_of_user(&self, owner_id: &str) -> Result<Vec<WebhookDelivery>> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.owner_id = $1 ORDER BY d.id");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(owner_id).fetch_all(pool).await.map_err(db_err))
    }

    /// Claims up to `limit` due deliveries of enabled endpoints until
    /// `now + lease_ms`. A claim whose node died runs out and the row is
    /// due again; PostgreSQL skips rows another node is claiming.
    pub async fn claim_webhook_deliveries(&self, now: i64, lease_ms: i64, limit: i64) -> Result<Vec<DueDelivery>> {
        let claim = new_id();
        let lock = match self.backend {
            Backend::Sqlite { .. } => "",
            Backend::Postgres(_) => " FOR UPDATE OF d SKIP LOCKED",
        };
        let update = format!(
            "UPDATE webhook_deliveries SET lease_owner = $1, lease_expires_at = $2 WHERE id IN (SELECT d.id FROM webhook_deliveries d \
             JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.status = 'pending' AND d.next_attempt_at <= $3 \
             AND e.status = 'enabled' AND (d.lease_expires_at IS NULL OR d.lease_expires_at < $3) \
             ORDER BY d.next_attempt_at, d.id LIMIT $4{lock})"
        );
        let select = format!(
            "SELECT {DELIVERY_COLUMNS}, e.url, e.secret, e.include_prompt FROM webhook_deliveries d \
             JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.lease_owner = $1 ORDER BY d.next_attempt_at, d.id"
        );
        let rows: Vec<(WebhookDelivery, String, String, bool)> = with_tx!(self, tx => {
            sqlx::query(&update).bind(&claim).bind(now + lease_ms).bind(now).bind(limit).execute(&mut *tx).await.map_err(db_err)?;
            let rows = sqlx::query(&select).bind(&claim).fetch_all(&mut *tx).await.map_err(db_err)?;
            rows.iter()
                .map(|row| {
                    use sqlx::{FromRow, Row};
                    Ok::<_, Error>((
                        WebhookDelivery::from_row(row).map_err(db_err)?,
                        row.try_get("url").map_err(db_err)?,
                        row.try_get("secret").map_err(db_err)?,
                        row.try_get("include_prompt").map_err(db_err)?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?
        });
        let mut due = Vec::with_capacity(rows.len());
        for (delivery, url, sealed, include_prompt) in rows {
            let secret = self.open(&delivery.owner_id, &secret_place(&delivery.endpoint_id), &sealed).await?;
            due.push(DueDelivery { delivery, url, secret, include_prompt, claim: claim.clone() });
        }
        Ok(due)
    }

    /// Records an attempt if the claim still holds. A failure counts against
    /// the endpoint; at `max_failures` in a row a registered endpoint is
    /// disabled and returned, so its owner can be told.
    pub async fn record_webhook_attempt(
        &self,
        due: &DueDelivery,
        attempt: &WebhookAttempt,
        now: i64,
        max_failures: i64,
    ) -> Result<Option<WebhookEndpoint>> {
        let status = match (attempt.delivered, attempt.retry_at) {
            (true, _) => "delivered",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        };
        let disable = format!(
            "UPDATE webhook_endpoints SET status = 'disabled', disabled_at = $2, updated_at = $2 \
             WHERE id = $1 AND status = 'enabled' AND task_id IS NULL AND consecutive_failures >= $3 RETURNING {ENDPOINT_COLUMNS}"
        );
        Ok(with_tx!(self, tx => {
            let recorded = sqlx::query(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, status = $3, next_attempt_at = COALESCE($4, next_attempt_at), \
                 response_status = $5, response_excerpt = $6, last_error = $7, lease_owner = NULL, lease_expires_at = NULL, \
                 finished_at = $8 WHERE id = $1 AND lease_owner = $2 AND status = 'pending'",
            )
            .bind(&due.delivery.id)
            .bind(&due.claim)
            .bind(status)
            .bind(attempt.retry_at)
            .bind(attempt.response_status)
            .bind(&attempt.response_excerpt)
            .bind(&attempt.error)
            .bind((status != "pending").then_some(now))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected()
                > 0;
            if !recorded {
                None
            } else if attempt.delivered {
                sqlx::query("UPDATE webhook_endpoints SET consecutive_failures = 0 WHERE id = $1")
                    .bind(&due.delivery.endpoint_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                None
            } else {
                sqlx::query("UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1 WHERE id = $1")
                    .bind(&due.delivery.endpoint_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let disabled: Option<WebhookEndpoint> = sqlx::query_as(&disable)
                    .bind(&due.delivery.endpoint_id)
                    .bind(now)
                    .bind(max_failures)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                disabled
            }
        }))
    }
}
