//! Embedded migrations, one ordered set per backend, applied at start.

use domain::Result;

use crate::{db_err, now_ms, with_tx, Backend, Store};

pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    sql: &'static str,
}

macro_rules! migrations {
    ($dir:literal: $($version:literal $name:literal),* $(,)?) => {
        &[$(Migration { version: $version, name: $name, sql: include_str!(concat!("../migrations/", $dir, "/", $name, ".sql")) }),*]
    };
}

const SQLITE: &[Migration] = migrations!("sqlite": 1 "0001_init", 2 "0002_vault_audit", 3 "0003_sign_in", 5 "0005_billing", 6 "0006_api_keys", 7 "0007_consent_policy", 8 "0008_deletion_support", 9 "0009_export_rights", 10 "0010_moderation", 11 "0011_rate_buckets", 12 "0012_webhooks", 13 "0013_share_links", 15 "0015_metrics");
const POSTGRES: &[Migration] = migrations!("postgres": 1 "0001_init", 2 "0002_vault_audit", 3 "0003_sign_in", 5 "0005_billing", 6 "0006_api_keys", 7 "0007_consent_policy", 8 "0008_deletion_support", 9 "0009_export_rights", 10 "0010_moderation", 11 "0011_rate_buckets", 12 "0012_webhooks", 13 "0013_share_links", 15 "0015_metrics");

/// A fingerprint of the migration set, so test fixtures can cache a migrated
/// template database per schema.
#[cfg(feature = "testing")]
pub fn schema_fingerprint() -> u64 {
    // FNV-1a: stable across builds, unlike the std hasher.
    POSTGRES.iter().flat_map(|m| m.sql.bytes()).fold(0xcbf29ce484222325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
}

impl Store {
    /// This backend's embedded migrations, in order.
    pub(crate) fn migrations(&self) -> &'static [Migration] {
        match self.backend {
            Backend::Sqlite { .. } => SQLITE,
            Backend::Postgres(_) => POSTGRES,
        }
    }

    /// Applies every migration not yet recorded, each in its own transaction.
    /// On PostgreSQL an advisory lock keeps concurrently starting nodes from
    /// racing each other.
    pub async fn migrate(&self) -> Result<usize> {
        let mut applied = 0;
        for migration in self.migrations() {
            let done = with_tx!(self, tx => {
                if let Backend::Postgres(_) = self.backend {
                    sqlx::query("SELECT pg_advisory_xact_lock(727501)").execute(&mut *tx).await.map_err(db_err)?;
                }
                sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)")
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let present: Option<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(migration.version)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                if present.is_none() {
                    sqlx::raw_sql(migration.sql).execute(&mut *tx).await.map_err(db_err)?;
                    sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
                        .bind(migration.version)
                        .bind(migration.name)
                        .bind(now_ms())
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    tracing::info!(version = migration.version, name = migration.name, "applied migration");
                }
                present.is_none()
            });
            applied += usize::from(done);
        }
        Ok(applied)
    }
}
