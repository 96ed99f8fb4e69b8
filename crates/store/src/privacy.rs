//! Privacy records: consent proofs (C21), per-account restriction and
//! marketing choices (C25, C37), pseudonymous analytics with daily keys
//! (C22), truncated request logs (C23) and policy versions with their
//! acceptances (C42, C43). Time is always an argument, so sweeps and tests
//! move a clock instead of waiting.

use domain::ids::new_id;
use domain::{Error, Result};
use serde::Serialize;

use crate::users::USER_COLUMNS;
use crate::{db_err, is_unique_violation, with_pool, with_tx, NewMail, Store, User};

pub const DAY_MS: i64 = 86_400_000;

/// The day number (days since the Unix epoch) of a time.
pub fn day_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(DAY_MS)
}

/// The optional cookie categories; essential cookies need no consent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConsentChoice {
    pub analytics: bool,
    pub preferences: bool,
    pub marketing: bool,
}

pub struct NewConsent<'a> {
    pub user_id: Option<&'a str>,
    /// The random id of the browser's consent cookie.
    pub visitor_id: &'a str,
    pub choice: ConsentChoice,
    pub policy_version: &'a str,
    /// `banner`, `settings` or `gpc`.
    pub source: &'a str,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ConsentRecord {
    pub id: String,
    pub user_id: Option<String>,
    pub visitor_id: String,
    pub analytics: bool,
    pub preferences: bool,
    pub marketing: bool,
    pub policy_version: String,
    pub source: String,
    pub created_at: i64,
}

const CONSENT_COLUMNS: &str = "id, user_id, visitor_id, analytics, preferences, marketing, policy_version, source, created_at";

/// An account's privacy choices; the defaults hold until the owner acts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AccountPrivacy {
    pub restricted: bool,
    pub marketing_opt_in: bool,
}

pub struct NewAnalyticsEvent<'a> {
    pub at: i64,
    /// The keyed hash of the visitor, never an account id or address.
    pub visitor: &'a str,
    /// `page` or `feature`.
    pub kind: &'a str,
    /// A route template such as `/images/{id}`, never a concrete URL.
    pub name: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AnalyticsDay {
    pub day: i64,
    pub kind: String,
    pub name: String,
    pub events: i64,
    pub visitors: i64,
}

pub struct NewRequestLog<'a> {
    pub at: i64,
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    /// Already truncated (IPv4 /24, IPv6 /48).
    pub ip_prefix: Option<&'a str>,
    pub browser: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RequestLog {
    pub id: String,
    pub at: i64,
    pub method: String,
    pub route: String,
    pub status: i64,
    pub ip_prefix: Option<String>,
    pub browser: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PolicyVersion {
    pub version: String,
    pub material: bool,
    pub summary: String,
    pub effective_at: i64,
    pub published_at: i64,
}

const POLICY_COLUMNS: &str = "version, material, summary, effective_at, published_at";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PolicyAcceptance {
    pub version: String,
    pub accepted_at: i64,
}

impl Store {
    pub async fn record_consent(&self, new: NewConsent<'_>) -> Result<ConsentRecord> {
        let sql =
            format!("INSERT INTO consents ({CONSENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {CONSENT_COLUMNS}");
        Ok(with_tx!(self, tx => sqlx::query_as(&sql)
            .bind(new_id())
            .bind(new.user_id)
            .bind(new.visitor_id)
            .bind(new.choice.analytics)
            .bind(new.choice.preferences)
            .bind(new.choice.marketing)
            .bind(new.policy_version)
            .bind(new.source)
            .bind(new.at)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?))
    }

    /// Every consent choice made while signed in to the account, oldest
    /// first (for the owner's export).
    pub async fn consents_of_user(&self, user_id: &str) -> Result<Vec<ConsentRecord>> {
        let sql = format!("SELECT {CONSENT_COLUMNS} FROM consents WHERE user_id = $1 ORDER BY id");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).fetch_all(pool).await.map_err(db_err))
    }

    /// Every consent choice of one browser, oldest first.
    pub async fn consents_of_visitor(&self, visitor_id: &str) -> Result<Vec<ConsentRecord>> {
        let sql = format!("SELECT {CONSENT_COLUMNS} FROM consents WHERE visitor_id = $1 ORDER BY id");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(visitor_id).fetch_all(pool).await.map_err(db_err))
    }

    pub async fn account_privacy(&self, user_id: &str) -> Result<AccountPrivacy> {
        let found: Option<AccountPrivacy> = with_pool!(self, pool => sqlx::query_as("SELECT restricted, marketing_opt_in FROM account_privacy WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(pool)
            .await
            .map_err(db_err)?);
        Ok(found.unwrap_or_default())
    }

    /// Turns restriction of processing on or off (C37). Returns whether it changed.
    pub async fn set_processing_restricted(&self, user_id: &str, restricted: bool, now: i64) -> Result<bool> {
        self.set_account_privacy(user_id, "restricted", restricted, now).await
    }

    /// Turns the marketing mail opt-in on or off (C25). Returns whether it changed.
    pub async fn set_marketing_opt_in(&self, user_id: &str, opt_in: bool, now: i64) -> Result<bool> {
        self.set_account_privacy(user_id, "marketing_opt_in", opt_in, now).await
    }

    async fn set_account_privacy(&self, user_id: &str, column: &'static str, value: bool, now: i64) -> Result<bool> {
        let before = self.account_privacy(user_id).await?;
        let sql = format!(
            "INSERT INTO account_privacy (user_id, {column}, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET {column} = excluded.{column}, updated_at = excluded.updated_at"
        );
        with_tx!(self, tx => {
            sqlx::query(&sql).bind(user_id).bind(value).bind(now).execute(&mut *tx).await.map_err(|e| match e {
                sqlx::Error::Database(d) if d.is_foreign_key_violation() => Error::not_found(),
                e => db_err(e),
            })?;
        });
        let current = if column == "restricted" { before.restricted } else { before.marketing_opt_in };
        Ok(current != value)
    }

    /// Active accounts that opted in to marketing mail and did not restrict
    /// processing: the only ones a marketing send may reach.
    pub async fn marketing_recipients(&self) -> Result<Vec<User>> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE status = 'active' AND id IN \
             (SELECT user_id FROM account_privacy WHERE marketing_opt_in = TRUE AND restricted = FALSE) ORDER BY id"
        );
        with_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await.map_err(db_err))
    }

    /// Every active account (service notices such as policy changes).
    pub async fn active_accounts(&self) -> Result<Vec<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE status = 'active' ORDER BY id");
        with_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await.map_err(db_err))
    }

    /// The analytics key of `day`, created from `fresh` on the day's first
    /// use; keys of earlier days are deleted then, so yesterday's hashes can
    /// no longer be recomputed.
    pub async fn analytics_key(&self, day: i64, fresh: Vec<u8>) -> Result<Vec<u8>> {
        let select = "SELECT secret FROM analytics_keys WHERE day = $1";
        let found: Option<Vec<u8>> =
            with_pool!(self, pool => sqlx::query_scalar(select).bind(day).fetch_optional(pool).await.map_err(db_err)?);
        if let Some(key) = found {
            return Ok(key);
        }
        Ok(with_tx!(self, tx => {
            sqlx::query("DELETE FROM analytics_keys WHERE day < $1").bind(day).execute(&mut *tx).await.map_err(db_err)?;
            sqlx::query("INSERT INTO analytics_keys (day, secret) VALUES ($1, $2) ON CONFLICT (day) DO NOTHING")
                .bind(day)
                .bind(&fresh)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            sqlx::query_scalar(select).bind(day).fetch_one(&mut *tx).await.map_err(db_err)?
        }))
    }

    /// Deletes the analytics keys of days before `day`. Returns how many.
    pub async fn discard_analytics_keys(&self, day: i64) -> Result<u64> {
        Ok(
            with_tx!(self, tx => sqlx::query("DELETE FROM analytics_keys WHERE day < $1").bind(day).execute(&mut *tx).await.map_err(db_err)?.rows_affected()),
        )
    }

    pub async fn record_analytics_event(&self, event: NewAnalyticsEvent<'_>) -> Result<()> {
        with_tx!(self, tx => {
            sqlx::query("INSERT INTO analytics_events (id, day, at, visitor, kind, name) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(new_id())
                .bind(day_of(event.at))
                .bind(event.at)
                .bind(event.visitor)
                .bind(event.kind)
                .bind(event.name)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        });
        Ok(())
    }

    /// Raw analytics events not yet folded.
    pub async fn analytics_raw_count(&self) -> Result<i64> {
        with_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM analytics_events").fetch_one(pool).await.map_err(db_err))
    }

    /// Folds the raw events of every day before `before_day` into the daily
    /// aggregates (events and distinct visitors per page or feature) and
    /// deletes them, in one transaction. Whole days only, so a day's
    /// visitors are counted once. Returns the number of raw events folded.
    pub async fn fold_analytics(&self, before_day: i64) -> Result<usize> {
        let folded = with_tx!(self, tx => {
            sqlx::query(
                "INSERT INTO analytics_daily (day, kind, name, events, visitors) \
                 SELECT day, kind, name, COUNT(*), COUNT(DISTINCT visitor) FROM analytics_events WHERE day < $1 GROUP BY day, kind, name \
                 ON CONFLICT (day, kind, name) DO UPDATE SET events = analytics_daily.events + excluded.events, \
                 visitors = analytics_daily.visitors + excluded.visitors",
            )
            .bind(before_day)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            sqlx::query("DELETE FROM analytics_events WHERE day < $1").bind(before_day).execute(&mut *tx).await.map_err(db_err)?.rows_affected()
        });
        Ok(folded as usize)
    }

    /// Daily aggregates from `from_day` on, oldest first.
    pub async fn analytics_daily(&self, from_day: i64) -> Result<Vec<AnalyticsDay>> {
        let sql = "SELECT day, kind, name, events, visitors FROM analytics_daily WHERE day >= $1 ORDER BY day, kind, name";
        with_pool!(self, pool => sqlx::query_as(sql).bind(from_day).fetch_all(pool).await.map_err(db_err))
    }

    pub async fn record_request(&self, log: NewRequestLog<'_>) -> Result<()> {
        with_tx!(self, tx => {
            sqlx::query("INSERT INTO request_logs (id, at, method, route, status, ip_prefix, browser) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .bind(new_id())
                .bind(log.at)
                .bind(log.method)
                .bind(log.route)
                .bind(i64::from(log.status))
                .bind(log.ip_prefix)
                .bind(log.browser)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        });
        Ok(())
    }

    /// The newest request log rows.
    pub async fn request_logs(&self, limit: i64) -> Result<Vec<RequestLog>> {
        let sql = "SELECT id, at, method, route, status, ip_prefix, browser FROM request_logs ORDER BY at DESC, id DESC LIMIT $1";
        with_pool!(self, pool => sqlx::query_as(sql).bind(limit).fetch_all(pool).await.map_err(db_err))
    }

    /// Deletes request log rows older than `cutoff`. Returns how many.
    pub async fn delete_request_logs_before(&self, cutoff: i64) -> Result<usize> {
        let n = with_tx!(self, tx => sqlx::query("DELETE FROM request_logs WHERE at < $1").bind(cutoff).execute(&mut *tx).await.map_err(db_err)?.rows_affected());
        Ok(n as usize)
    }

    /// The newest published policy version.
    pub async fn current_policy(&self) -> Result<Option<PolicyVersion>> {
        let sql = format!("SELECT {POLICY_COLUMNS} FROM policy_versions ORDER BY published_at DESC, version DESC LIMIT 1");
        with_pool!(self, pool => sqlx::query_as(&sql).fetch_optional(pool).await.map_err(db_err))
    }

    /// Every published version, newest first.
    pub async fn policy_versions(&self) -> Result<Vec<PolicyVersion>> {
        let sql = format!("SELECT {POLICY_COLUMNS} FROM policy_versions ORDER BY published_at DESC, version DESC");
        with_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await.map_err(db_err))
    }

    /// Publishes the first version when none exists yet (a fresh install);
    /// returns the current version either way.
    pub async fn ensure_policy(&self, initial: &PolicyVersion) -> Result<PolicyVersion> {
        if let Some(current) = self.current_policy().await? {
            return Ok(current);
        }
        with_tx!(self, tx => {
            sqlx::query(&format!("INSERT INTO policy_versions ({POLICY_COLUMNS}) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (version) DO NOTHING"))
                .bind(&initial.version)
                .bind(initial.material)
                .bind(&initial.summary)
                .bind(initial.effective_at)
                .bind(initial.published_at)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        });
        self.current_policy().await?.ok_or_else(|| Error::internal("policy version missing after insert"))
    }

    /// Publishes a version and queues its notices in one transaction: either
    /// the version exists with every notice queued, or nothing happened. A
    /// version label already used is `invalid_input`.
    pub async fn publish_policy(&self, version: &PolicyVersion, notices: &[NewMail]) -> Result<()> {
        with_tx!(self, tx => {
            let inserted = sqlx::query(&format!("INSERT INTO policy_versions ({POLICY_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"))
                .bind(&version.version)
                .bind(version.material)
                .bind(&version.summary)
                .bind(version.effective_at)
                .bind(version.published_at)
                .execute(&mut *tx)
                .await;
            match inserted {
                Err(e) if is_unique_violation(&e) => return Err(Error::invalid("this policy version is already published")),
                other => other.map_err(db_err)?,
            };
            for mail in notices {
                sqlx::query(
                    "INSERT INTO outbox (id, user_id, kind, to_addr, subject, body_text, status, next_attempt_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)",
                )
                .bind(new_id())
                .bind(&mail.user_id)
                .bind(&mail.kind)
                .bind(&mail.to_addr)
                .bind(&mail.subject)
                .bind(&mail.body_text)
                .bind(version.published_at)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
        });
        Ok(())
    }

    /// The newest material version published after the account was created
    /// and not yet accepted by it: what the in-app banner asks about.
    pub async fn pending_material_policy(&self, user_id: &str) -> Result<Option<PolicyVersion>> {
        let sql = format!(
            "SELECT {POLICY_COLUMNS} FROM policy_versions WHERE material = TRUE \
             AND published_at > (SELECT created_at FROM users WHERE id = $1) ORDER BY published_at DESC, version DESC LIMIT 1"
        );
        let newest: Option<PolicyVersion> =
            with_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).fetch_optional(pool).await.map_err(db_err)?);
        let Some(newest) = newest else { return Ok(None) };
        let accepted = self.policy_acceptances_of_user(user_id).await?.iter().any(|a| a.version == newest.version);
        Ok((!accepted).then_some(newest))
    }

    /// Records that the account accepted `version`; accepting twice keeps
    /// the first time. An unknown version is `not_found`.
    pub async fn accept_policy(&self, user_id: &str, version: &str, now: i64) -> Result<()> {
        with_tx!(self, tx => {
            sqlx::query("INSERT INTO policy_acceptances (user_id, version, accepted_at) VALUES ($1, $2, $3) ON CONFLICT (user_id, version) DO NOTHING")
                .bind(user_id)
                .bind(version)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| match e {
                    sqlx::Error::Database(d) if d.is_foreign_key_violation() => Error::not_found(),
                    e => db_err(e),
                })?;
        });
        Ok(())
    }

    /// Every policy version the account accepted, oldest first (for the
    /// owner's export).
    pub async fn policy_acceptances_of_user(&self, user_id: &str) -> Result<Vec<PolicyAcceptance>> {
        let sql = "SELECT version, accepted_at FROM policy_acceptances WHERE user_id = $1 ORDER BY accepted_at, version";
        with_pool!(self, pool => sqlx::query_as(sql).bind(user_id).fetch_all(pool).await.map_err(db_err))
    }

    /// Queues a marketing message carrying its one-click unsubscribe link.
    pub async fn enqueue_marketing_mail(&self, mail: &NewMail, unsubscribe_url: &str, now: i64) -> Result<String> {
        let id = new_id();
        with_tx!(self, tx => {
            sqlx::query(
                "INSERT INTO outbox (id, user_id, kind, to_addr, subject, body_text, status, next_attempt_at, created_at, unsubscribe_url) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7, $8)",
            )
            .bind(&id)
            .bind(&mail.user_id)
            .bind(&mail.kind)
            .bind(&mail.to_addr)
            .bind(&mail.subject)
            .bind(&mail.body_text)
            .bind(now)
            .bind(unsubscribe_url)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        });
        Ok(id)
    }
}
