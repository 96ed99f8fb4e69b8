//! The database: one `Store` API over SQLite (embedded default) and PostgreSQL
//! (scaled). Every query is written once in the SQL both understand; the few
//! statements that differ (write-transaction start, the queue claim) are
//! chosen per backend. Every content query filters on `owner_id`.

mod api_keys;
mod assets;
mod audit;
mod cluster;
mod deletion;
mod exports;
mod hooks;
mod identities;
mod keys;
mod ledger;
mod migrate;
mod models;
mod moderation;
mod outbox;
mod privacy;
mod rights;
mod shares;
mod stats;
mod tasks;
#[cfg(feature = "testing")]
pub mod testing;
mod users;

use std::str::FromStr;
use std::time::Duration;

use domain::{Error, ErrorCode, Result};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub use api_keys::{ApiKey, NewApiKey};
pub use assets::GalleryFilter;
pub use audit::{AuditEntry, AuditRecord};
pub use cluster::{Heard, Listener, MAX_NOTIFY_BYTES};
pub use deletion::{
    ChildReport, PendingDeletion, SupportTicket, CHILD_REPORT_DETAILS_MAX, DELETION_PENDING, TICKET_BODY_MAX, TICKET_SUBJECT_MAX,
};
pub use exports::Export;
pub use hooks::{DueDelivery, NewWebhookEndpoint, WebhookAttempt, WebhookDelivery, WebhookEndpoint};
pub use identities::{AuthToken, Identity, NewAuthToken, NewIdentity, TotpRecord, AUTH_FAILURE_RETENTION_MS};
pub use ledger::{
    contains_card_number, Balance, BillingAction, BillingEvent, CreditLot, EventOutcome, LedgerEntry, NewGrant, NewPayment, Payment,
    Subscription, SubscriptionState,
};
pub use models::*;
pub use moderation::{ModerationEvent, NewModerationEvent, Report, Suspension, TaskStat, UserSummary};
pub use privacy::{
    day_of, AccountPrivacy, AnalyticsDay, ConsentChoice, ConsentRecord, NewAnalyticsEvent, NewConsent, NewRequestLog, PolicyAcceptance,
    PolicyVersion, RequestLog, DAY_MS,
};
pub use rights::{NewRightsRequest, RightsRequest};
pub use shares::ShareLink;
pub use stats::{Backlog, MigrationStatus, TaskCount};
pub use tasks::Submitted;
pub use users::ROLES;

#[derive(Clone)]
pub struct Store {
    backend: Backend,
    vault: Option<std::sync::Arc<keys::Vault>>,
    scheduling: Scheduling,
}

/// How workers share the queue between accounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scheduling {
    /// Tasks one account may have running at once; 0 = no limit.
    pub max_running_per_account: i64,
}

#[derive(Clone)]
enum Backend {
    /// SQLite allows one writer: writes go through a one-connection pool so
    /// they queue in-process instead of failing with SQLITE_BUSY.
    Sqlite {
        read: SqlitePool,
        write: SqlitePool,
    },
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the backend's read pool; the body is
/// expanded once per backend so each copy is typed against its own driver.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            $crate::Backend::Sqlite { read: $pool, .. } => $body,
            $crate::Backend::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` inside a write transaction (`BEGIN IMMEDIATE` on SQLite) and
/// commits; an early return through `?` rolls back.
macro_rules! with_tx {
    ($store:expr, $tx:ident => $body:expr) => {
        match &$store.backend {
            $crate::Backend::Sqlite { write, .. } => {
                #[allow(unused_mut)]
                let mut $tx = write.begin_with("BEGIN IMMEDIATE").await.map_err($crate::db_err)?;
                let out = $body;
                $tx.commit().await.map_err($crate::db_err)?;
                out
            }
            $crate::Backend::Postgres(pool) => {
                #[allow(unused_mut)]
                let mut $tx = pool.begin().await.map_err($crate::db_err)?;
                let out = $body;
                $tx.commit().await.map_err($crate::db_err)?;
                out
            }
        }
    };
}

pub(crate) use {with_pool, with_tx};

pub(crate) fn db_err(e: sqlx::Error) -> Error {
    tracing::error!(error = %e, "database error");
    Error::new(ErrorCode::Internal, "database error")
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Milliseconds since the Unix epoch: the one time unit of every table.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

impl Store {
    /// Opens `sqlite://PATH` (created if missing) or `postgres://…`.
    /// Migrations are not run here; call [`Store::migrate`].
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store> {
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(2))
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(|e| Error::new(ErrorCode::Unavailable, format!("cannot connect to PostgreSQL: {e}")))?;
            Backend::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| Error::invalid(format!("bad SQLite URL: {e}")))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            let connect =
                |n: u32| SqlitePoolOptions::new().max_connections(n).acquire_timeout(Duration::from_secs(30)).connect_with(options.clone());
            let write = connect(1).await.map_err(|e| Error::new(ErrorCode::Unavailable, format!("cannot open SQLite: {e}")))?;
            let read = connect(max_connections.max(2))
                .await
                .map_err(|e| Error::new(ErrorCode::Unavailable, format!("cannot open SQLite: {e}")))?;
            Backend::Sqlite { read, write }
        } else {
            return Err(Error::invalid("database URL must start with sqlite: or postgres://"));
        };
        Ok(Store { backend, vault: None, scheduling: Scheduling::default() })
    }

    /// The same store, claiming tasks by `scheduling`.
    pub fn with_scheduling(mut self, scheduling: Scheduling) -> Store {
        self.scheduling = scheduling;
        self
    }

    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite { .. } => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// Readiness probe: the database answers a trivial query.
    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()).map_err(db_err))
    }

    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { read, write } => {
                write.close().await;
                read.close().await;
            }
            Backend::Postgres(pool) => pool.close().await,
        }
    }
}
