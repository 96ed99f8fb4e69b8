//! Sign-in state beyond the password: verified email, external identities
//! (Google, GitHub, OpenID Connect), single-use tokens, failed-attempt
//! records for throttling, TOTP secrets and recovery codes, and session
//! management for the security page.

use domain::ids::new_id;
use domain::{Error, ErrorCode, Result};
use serde::Serialize;

use crate::{db_err, is_unique_violation, now_ms, with_pool, with_tx, Store, User};

/// An external sign-in method linked to an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Identity {
    pub id: String,
    pub user_id: String,
    /// `google`, `github` or `oidc:<name>`.
    pub provider: String,
    /// The provider's stable id for the person (OIDC `sub`, GitHub numeric id).
    pub subject: String,
    pub email: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewIdentity {
    pub user_id: String,
    pub provider: String,
    pub subject: String,
    pub email: Option<String>,
}

const IDENTITY_COLUMNS: &str = "id, user_id, provider, subject, email, created_at, last_used_at";

/// A single-use token: only its hash is stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuthToken {
    pub id: String,
    pub purpose: String,
    pub user_id: Option<String>,
    /// Purpose-specific JSON (the new email of an email change, the identity
    /// to link, an OAuth flow's nonce and verifier …).
    pub data: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewAuthToken {
    pub purpose: String,
    pub token_hash: String,
    pub user_id: Option<String>,
    pub data: Option<String>,
    pub expires_at: i64,
}

const TOKEN_COLUMNS: &str = "id, purpose, user_id, data, created_at, expires_at";

/// An account's TOTP second factor.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TotpRecord {
    /// Base32 shared secret.
    pub secret: String,
    pub enabled_at: i64,
    /// The last 30-second step a code was accepted for.
    pub last_step: i64,
}

/// Where a TOTP secret is sealed: bound to its table, column and row.
fn totp_place(user_id: &str) -> String {
    format!("user_totp.secret/{user_id}")
}

/// Failed-attempt records older than this are swept.
pub const AUTH_FAILURE_RETENTION_MS: i64 = 86_400_000;

impl Store {
    // ------------------------------------------------------------ account

    /// Marks the account's email as verified (idempotent: keeps the first time).
    pub async fn mark_email_verified(&self, user_id: &str, at: i64) -> Result<()> {
        with_tx!(self, tx => {
            sqlx::query("UPDATE users SET email_verified_at = COALESCE(email_verified_at, $2), updated_at = $2 WHERE id = $1")
                .bind(user_id)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        });
        Ok(())
    }

    /// Sets or clears the password hash.
    pub async fn set_password_hash(&self, user_id: &str, password_hash: Option<&str>) -> Result<()> {
        with_tx!(self, tx => {
            sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
                .bind(user_id)
                .bind(password_hash)
                .bind(now_ms())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        });
        Ok(())
    }

    /// Replaces the account's email with a confirmed new one (verified by
    /// the confirmation itself); a taken address is `email_taken`.
    pub async fn change_email(&self, user_id: &str, email: &str, at: i64) -> Result<User> {
        let sql = format!(
            "UPDATE users SET email = $2, email_verified_at = $3, updated_at = $3 WHERE id = $1 RETURNING {}",
            crate::users::USER_COLUMNS
        );
        let updated: std::result::Result<Option<User>, sqlx::Error> = with_tx!(self, tx => {
            sqlx::query_as(&sql).bind(user_id).bind(email).bind(at).fetch_optional(&mut *tx).await
        });
        match updated {
            Ok(Some(user)) => Ok(user),
            Ok(None) => Err(Error::not_found()),
            Err(e) if is_unique_violation(&e) => Err(Error::new(ErrorCode::EmailTaken, "an account with this email already exists")),
            Err(e) => Err(db_err(e)),
        }
    }

    /// Points the account at its avatar asset (or none).
    pub async fn set_avatar(&self, user_id: &str, asset_id: Option<&str>) -> Result<()> {
        with_tx!(self, tx => {
            sqlx::query("UPDATE users SET avatar_asset_id = $2, updated_at = $3 WHERE id = $1")
                .bind(user_id)
                .bind(asset_id)
                .bind(now_ms())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        });
        Ok(())
    }

    // --------------------------------------------------------- identities

    pub async fn identity(&self, provider: &str, subject: &str) -> Result<Option<Identity>> {
        let sql = format!("SELECT {IDENTITY_COLUMNS} FROM identities WHERE provider = $1 AND subject = $2");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(provider).bind(subject).fetch_optional(pool).await.map_err(db_err))
    }

    pub async fn identities_of_user(&self, user_id: &str) -> Result<Vec<Identity>> {
        let sql = format!("SELECT {IDENTITY_COLUMNS} FROM identities WHERE user_id = $1 ORDER BY created_at, id");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).fetch_all(pool).await.map_err(db_err))
    }

    /// Links an identity; one already linked (to anyone) is `identity_in_use`.
    pub async fn link_identity(&self, new: NewIdentity) -> Result<Identity> {
        let now = now_ms();
        let sql = format!(
            "INSERT INTO identities (id, user_id, provider, subject, email, created_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {IDENTITY_COLUMNS}"
        );
        let inserted: std::result::Result<Identity, sqlx::Error> = with_tx!(self, tx => {
            sqlx::query_as(&sql)
                .bind(new_id())
                .bind(&new.user_id)
                .bind(&new.provider)
                .bind(&new.subject)
                .bind(&new.email)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
        });
        match inserted {
            Ok(identity) => Ok(identity),
            Err(e) if is_unique_violation(&e) => {
                Err(Error::new(ErrorCode::IdentityInUse, "this provider account is already linked to an account"))
            }
            Err(e) => Err(db_err(e)),
        }
    }

    pub async fn touch_identity(&self, id: &str, at: i64) -> Result<()> {
        with_tx!(self, tx => {
            sqlx::query("UPDATE identities SET last_used_at = $2 WHERE id = $1").bind(id).bind(at).execute(&mut *tx).await.map_err(db_err)?;
        });
        Ok(())
    }

    /// Unlinks one of the account's identities, unless it is the last way to
    /// sign in (no password and no other identity): `last_sign_in_method`.
    /// Checked and deleted in one write transaction.
    pub async fn unlink_identity(&self, user_id: &str, identity_id: &str) -> Result<Identity> {
        let select = format!("SELECT {IDENTITY_COLUMNS} FROM identities WHERE id = $1 AND user_id = $2");
        let unlinked = with_tx!(self, tx => {
            let identity: Option<Identity> = sqlx::query_as(&select).bind(identity_id).bind(user_id).fetch_optional(&mut *tx).await.map_err(db_err)?;
            let Some(identity) = identity else { return Err(Error::not_found()) };
            let passwords: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE id = $1 AND password_hash IS NOT NULL")
                .bind(user_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
            let others: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM identities WHERE user_id = $1 AND id <> $2")
                .bind(user_id)
                .bind(identity_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
            if passwords == 0 && others == 0 {
                return Err(Error::new(ErrorCode::LastSignInMethod, "this is the account's only way to sign in"));
            }
            sqlx::query("DELETE FROM identities WHERE id = $1").bind(identity_id).execute(&mut *tx).await.map_err(db_err)?;
            identity
        });
        Ok(unlinked)
    }

    // ------------------------------------------------------------- tokens

    pub async fn create_auth_token(&self, new: NewAuthToken, now: i64) -> Result<AuthToken> {
        let sql = format!(
            "INSERT INTO auth_tokens (id, purpose, token_hash, user_id, data, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {TOKEN_COLUMNS}"
        );
        Ok(with_tx!(self, tx => {
            sqlx::query_as(&sql)
                .bind(new_id())
                .bind(&new.purpose)
                .bind(&new.token_hash)
                .bind(&new.user_id)
                .bind(&new.data)
                .bind(now)
                .bind(new.expires_at)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?
        }))
    }

    /// Uses a token: returns it once if it exists for `purpose`, is unused and
    /// unexpired; marks it used in the same statement, so two concurrent uses
    /// cannot both succeed.
    pub async fn consume_auth_token(&self, purpose: &str, token_hash: &str, now: i64) -> Result<Option<AuthToken>> {
        let sql = format!(
            "UPDATE auth_tokens SET used_at = $3 WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3 \
             RETURNING {TOKEN_COLUMNS}"
        );
        Ok(with_tx!(self, tx => {
            sqlx::query_as(&sql).bind(token_hash).bind(purpose).bind(now).fetch_optional(&mut *tx).await.map_err(db_err)?
        }))
    }

    /// Reads a usable token without using it (to show a confirmation page).
    pub async fn peek_auth_token(&self, purpose: &str, token_hash: &str, now: i64) -> Result<Option<AuthToken>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM auth_tokens WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3"
        );
        with_pool!(self, pool => sqlx::query_as(&sql).bind(token_hash).bind(purpose).bind(now).fetch_optional(pool).await.map_err(db_err))
    }

    /// Voids every unused token of one purpose for an account (e.g. older
    /// reset links once the password was reset).
    pub async fn void_auth_tokens(&self, user_id: &str, purpose: &str, now: i64) -> Result<u64> {
        Ok(with_tx!(self, tx => {
            sqlx::query("UPDATE auth_tokens SET used_at = $3 WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL")
                .bind(user_id)
                .bind(purpose)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected()
        }))
    }

    // ---------------------------------------------------------- throttling

    pub async fn record_auth_failure(&self, bucket: &str, at: i64) -> Result<()> {
        with_tx!(self, tx => {
            sqlx::query("INSERT INTO auth_failures (id, bucket, at) VALUES ($1, $2, $3)")
                .bind(new_id())
                .bind(bucket)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        });
        Ok(())
    }

    /// Times of the bucket's failures after `since`, oldest first.
    pub async fn auth_failures_since(&self, bucket: &str, since: i64) -> Result<Vec<i64>> {
        with_pool!(self, pool => {
            sqlx::query_scalar("SELECT at FROM auth_failures WHERE bucket = $1 AND at > $2 ORDER BY at")
                .bind(bucket)
                .bind(since)
                .fetch_all(pool)
                .await
                .map_err(db_err)
        })
    }

    pub async fn clear_auth_failures(&self, bucket: &str) -> Result<()> {
        with_tx!(self, tx => {
            sqlx::query("DELETE FROM auth_failures WHERE bucket = $1").bind(bucket).execute(&mut *tx).await.map_err(db_err)?;
        });
        Ok(())
    }

    /// Drops expired tokens and failed-attempt records past their retention.
    pub async fn sweep_auth_records(&self, now: i64) -> Result<u64> {
        Ok(with_tx!(self, tx => {
            let tokens = sqlx::query("DELETE FROM auth_tokens WHERE expires_at <= $1").bind(now).execute(&mut *tx).await.map_err(db_err)?.rows_affected();
            let failures = sqlx::query("DELETE FROM auth_failures WHERE at <= $1")
                .bind(now - AUTH_FAILURE_RETENTION_MS)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            tokens + failures
        }))
    }

    // ---------------------------------------------------------------- TOTP

    /// The account's TOTP record, its secret opened with the account's key.
    pub async fn totp_of_user(&self, user_id: &str) -> Result<Option<TotpRecord>> {
        let record: Option<TotpRecord> = with_pool!(self, pool => {
            sqlx::query_as("SELECT secret, enabled_at, last_step FROM user_totp WHERE user_id = $1").bind(user_id).fetch_optional(pool).await.map_err(db_err)?
        });
        match record {
            Some(mut r) => {
                r.secret = self.open(user_id, &totp_place(user_id), &r.secret).await?;
                Ok(Some(r))
            }
            None => Ok(None),
        }
    }

    /// Turns TOTP on with its secret and a fresh set of recovery codes
    /// (hashes), replacing any earlier ones. `last_step` is the step of the
    /// code that proved the enrolment: it cannot be used again.
    /// The secret is stored sealed with the account's data key (C27): a
    /// copy of the table alone yields no second factor.
    pub async fn enable_totp(&self, user_id: &str, secret: &str, last_step: i64, recovery_code_hashes: &[String], at: i64) -> Result<()> {
        let secret = self.seal(user_id, &totp_place(user_id), secret).await?;
        with_tx!(self, tx => {
            sqlx::query("DELETE FROM user_totp WHERE user_id = $1").bind(user_id).execute(&mut *tx).await.map_err(db_err)?;
            sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind(user_id).execute(&mut *tx).await.map_err(db_err)?;
            sqlx::query("INSERT INTO user_totp (user_id, secret, enabled_at, last_step) VALUES ($1, $2, $3, $4)")
                .bind(user_id)
                .bind(&secret)
                .bind(at)
                .bind(last_step)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            for hash in recovery_code_hashes {
                sqlx::query("INSERT INTO recovery_codes (id, user_id, code_hash) VALUES ($1, $2, $3)")
                    .bind(new_id())
                    .bind(user_id)
                    .bind(hash)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
        });
        Ok(())
    }

    pub async fn disable_totp(&self, user_id: &str) -> Result<bool> {
        Ok(with_tx!(self, tx => {
            sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind(user_id).execute(&mut *tx).await.map_err(db_err)?;
            sqlx::query("DELETE FROM user_totp WHERE user_id = $1").bind(user_id).execute(&mut *tx).await.map_err(db_err)?.rows_affected() > 0
        }))
    }

    /// Accepts a code's time step only if it is later than the last accepted
    /// one: a code works once, even under concurrent submissions.
    pub async fn advance_totp_step(&self, user_id: &str, step: i64) -> Result<bool> {
        Ok(with_tx!(self, tx => {
            sqlx::query("UPDATE user_totp SET last_step = $2 WHERE user_id = $1 AND last_step < $2")
                .bind(user_id)
                .bind(step)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected()
                > 0
        }))
    }

    /// Uses a recovery code (by hash) once.
    pub async fn use_recovery_code(&self, user_id: &str, code_hash: &str, at: i64) -> Result<bool> {
        Ok(with_tx!(self, tx => {
            sqlx::query("UPDATE recovery_codes SET used_at = $3 WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL")
                .bind(user_id)
                .bind(code_hash)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected()
                > 0
        }))
    }

    pub async fn recovery_codes_left(&self, user_id: &str) -> Result<i64> {
        with_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL").bind(user_id).fetch_one(pool).await.map_err(db_err)
        })
    }

    // ------------------------------------------------------------ sessions

    /// Ends one of the account's sessions; another account's id is a no-op.
    pub async fn delete_user_session(&self, user_id: &str, session_id: &str) -> Result<bool> {
        Ok(with_tx!(self, tx => {
            sqlx::query("DELETE FROM sessions WHERE id = $1 AND user_id = $2").bind(session_id).bind(user_id).execute(&mut *tx).await.map_err(db_err)?.rows_affected()
                > 0
        }))
    }

    /// Ends every session of the account, except `keep` if given.
    pub async fn delete_user_sessions(&self, user_id: &str, keep: Option<&str>) -> Result<u64> {
        Ok(with_tx!(self, tx => {
            sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND ($2 IS NULL OR id <> $2)")
                .bind(user_id)
                .bind(keep)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected()
        }))
    }

    pub async fn touch_session(&self, session_id: &str, at: i64) -> Result<()> {
        with_tx!(self, tx => {
            sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE id = $1").bind(session_id).bind(at).execute(&mut *tx).await.map_err(db_err)?;
        });
        Ok(())
    }
}
