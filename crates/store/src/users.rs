use domain::{ids::new_id, Error, ErrorCode, Result};

use crate::{db_err, is_unique_violation, now_ms, with_pool, with_tx, NewSession, NewUser, Session, Store, User};

pub(crate) const USER_COLUMNS: &str =
    "id, email, name, password_hash, locale, role, status, age_confirmed_at, created_at, updated_at, email_verified_at, avatar_asset_id";
const SESSION_COLUMNS: &str = "id, user_id, created_at, last_seen_at, expires_at, ip, user_agent";

impl Store {
    /// Creates an account and its data key in one transaction; a taken email
    /// is `email_taken`.
    pub async fn create_user(&self, new: NewUser) -> Result<User> {
        let now = now_ms();
        let id = new_id();
        let (wrapped_key, master_key_id) = self.new_wrapped_key(&id)?;
        let sql = format!(
            "INSERT INTO users (id, email, name, password_hash, locale, age_confirmed_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $6) RETURNING {USER_COLUMNS}"
        );
        let inserted: std::result::Result<User, sqlx::Error> = with_tx!(self, tx => {
            let user = sqlx::query_as(&sql)
                .bind(&id)
                .bind(&new.email)
                .bind(&new.name)
                .bind(&new.password_hash)
                .bind(&new.locale)
                .bind(now)
                .fetch_one(&mut *tx)
                .await;
            if user.is_ok() {
                sqlx::query("INSERT INTO account_keys (user_id, wrapped_key, master_key_id, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&id)
                    .bind(&wrapped_key)
                    .bind(&master_key_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            user
        });
        match inserted {
            Ok(user) => Ok(user),
            Err(e) if is_unique_violation(&e) => Err(Error::new(ErrorCode::EmailTaken, "an account with this email already exists")),
            Err(e) => Err(db_err(e)),
        }
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await.map_err(db_err))
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(email).fetch_optional(pool).await.map_err(db_err))
    }

    /// The owner edits their profile (C01): name and preferred language.
    pub async fn update_profile(&self, user_id: &str, name: &str, locale: Option<&str>) -> Result<User> {
        let sql = format!("UPDATE users SET name = $2, locale = $3, updated_at = $4 WHERE id = $1 RETURNING {USER_COLUMNS}");
        let user: Option<User> = with_tx!(self, tx => {
            sqlx::query_as(&sql).bind(user_id).bind(name).bind(locale).bind(now_ms()).fetch_optional(&mut *tx).await.map_err(db_err)?
        });
        user.ok_or_else(Error::not_found)
    }

    pub async fn create_session(&self, new: NewSession) -> Result<Session> {
        let now = now_ms();
        let sql = format!(
            "INSERT INTO sessions (id, user_id, token_hash, created_at, last_seen_at, expires_at, ip, user_agent) \
             VALUES ($1, $2, $3, $4, $4, $5, $6, $7) RETURNING {SESSION_COLUMNS}"
        );
        Ok(with_tx!(self, tx => {
            sqlx::query_as(&sql)
                .bind(new_id())
                .bind(&new.user_id)
                .bind(&new.token_hash)
                .bind(now)
                .bind(new.expires_at)
                .bind(&new.ip)
                .bind(&new.user_agent)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?
        }))
    }

    /// The live session for a token hash and its user, if any.
    pub async fn session_by_token_hash(&self, token_hash: &str, now: i64) -> Result<Option<(Session, User)>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE token_hash = $1 AND expires_at > $2");
        let session: Option<Session> =
            with_pool!(self, pool => sqlx::query_as(&sql).bind(token_hash).bind(now).fetch_optional(pool).await.map_err(db_err)?);
        let Some(session) = session else { return Ok(None) };
        Ok(self.user_by_id(&session.user_id).await?.map(|user| (session, user)))
    }

    pub async fn sessions_of_user(&self, user_id: &str) -> Result<Vec<Session>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 ORDER BY created_at DESC");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).fetch_all(pool).await.map_err(db_err))
    }

    pub async fn delete_session_by_token_hash(&self, token_hash: &str) -> Result<bool> {
        let done = with_tx!(self, tx => {
            sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(token_hash).execute(&mut *tx).await.map_err(db_err)?.rows_affected()
        });
        Ok(done > 0)
    }

    /// Drops expired sessions, and with them the other short-lived sign-in
    /// state: expired single-use tokens and old failed-attempt records.
    pub async fn delete_expired_sessions(&self, now: i64) -> Result<u64> {
        let sessions = with_tx!(self, tx => {
            sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(now).execute(&mut *tx).await.map_err(db_err)?.rows_affected()
        });
        self.sweep_auth_records(now).await?;
        Ok(sessions)
    }
}

impl Store {
    /// Deletes the account row (every content row cascades, the wrapped data
    /// key with it) and records the tombstone, in one transaction. The audit
    /// trail outlives the account under the tombstone id (pseudonymised).
    pub async fn delete_account(&self, user_id: &str, tombstone_id: &str) -> Result<bool> {
        let now = now_ms();
        let deleted = with_tx!(self, tx => {
            let n = sqlx::query("DELETE FROM users WHERE id = $1").bind(user_id).execute(&mut *tx).await.map_err(db_err)?.rows_affected();
            for column in ["actor_id", "target_id"] {
                sqlx::query(&format!("UPDATE audit_log SET {column} = $2 WHERE {column} = $1"))
                    .bind(user_id)
                    .bind(tombstone_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            sqlx::query("INSERT INTO tombstones (id, purged_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
                .bind(tombstone_id)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            n > 0
        });
        self.forget_data_key(user_id);
        Ok(deleted)
    }

    /// Every account id (restore replays tombstones against them).
    pub async fn all_user_ids(&self) -> Result<Vec<String>> {
        with_pool!(self, pool => sqlx::query_scalar("SELECT id FROM users ORDER BY id").fetch_all(pool).await.map_err(db_err))
    }

    pub async fn tombstone_ids(&self) -> Result<Vec<String>> {
        with_pool!(self, pool => sqlx::query_scalar("SELECT id FROM tombstones ORDER BY id").fetch_all(pool).await.map_err(db_err))
    }
}

pub const ROLES: &[&str] = &["user", "moderator", "admin"];

impl Store {
    pub async fn set_role(&self, user_id: &str, role: &str) -> Result<()> {
        if !ROLES.contains(&role) {
            return Err(Error::invalid(format!("role must be one of {}", ROLES.join(", "))));
        }
        let n = with_tx!(self, tx => {
            sqlx::query("UPDATE users SET role = $2, updated_at = $3 WHERE id = $1")
                .bind(user_id)
                .bind(role)
                .bind(now_ms())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected()
        });
        if n == 0 {
            return Err(Error::not_found());
        }
        Ok(())
    }
}
