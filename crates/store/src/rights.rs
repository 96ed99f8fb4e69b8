//! Data subject requests (C36–C38) and their legal due dates.

use domain::ids::new_id;
use domain::rights::{check_kind, check_transition, normalize_details, CHANNELS, RIGHTS_DUE_MS};
use domain::{Error, Result};
use serde::Serialize;

use crate::{db_err, with_pool, with_tx, Store};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RightsRequest {
    pub id: String,
    /// The account it concerns, when known.
    pub user_id: Option<String>,
    /// The address a mailed request came from.
    pub contact: Option<String>,
    pub kind: String,
    /// `dashboard` or `email`.
    pub channel: String,
    pub details: String,
    /// received, in_progress, completed or denied.
    pub status: String,
    /// Why it was denied, or how it was settled.
    pub reason: Option<String>,
    /// The admin who logged a mailed request.
    pub logged_by: Option<String>,
    pub received_at: i64,
    pub due_at: i64,
    pub updated_at: i64,
    pub closed_at: Option<i64>,
}

const REQUEST_COLUMNS: &str =
    "id, user_id, contact, kind, channel, details, status, reason, logged_by, received_at, due_at, updated_at, closed_at";

#[derive(Debug, Clone)]
pub struct NewRightsRequest {
    pub user_id: Option<String>,
    pub contact: Option<String>,
    pub kind: String,
    pub channel: String,
    pub details: String,
    pub logged_by: Option<String>,
    pub received_at: i64,
}

impl Store {
    /// Records a request as received; due 30 days after `received_at`.
    pub async fn file_rights_request(&self, new: NewRightsRequest) -> Result<RightsRequest> {
        let kind = check_kind(&new.kind)?;
        if !CHANNELS.contains(&new.channel.as_str()) {
            return Err(Error::invalid(format!("channel must be one of {}", CHANNELS.join(", "))));
        }
        if new.user_id.is_none() && new.contact.as_deref().is_none_or(|c| c.trim().is_empty()) {
            return Err(Error::invalid("a request needs an account or a contact address"));
        }
        let details = normalize_details(&new.details)?;
        let sql = format!(
            "INSERT INTO rights_requests (id, user_id, contact, kind, channel, details, status, logged_by, received_at, due_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'received', $7, $8, $9, $8) RETURNING {REQUEST_COLUMNS}"
        );
        Ok(with_tx!(self, tx => sqlx::query_as(&sql)
            .bind(new_id())
            .bind(&new.user_id)
            .bind(&new.contact)
            .bind(kind)
            .bind(&new.channel)
            .bind(&details)
            .bind(&new.logged_by)
            .bind(new.received_at)
            .bind(new.received_at + RIGHTS_DUE_MS)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?))
    }

    /// The account's own requests, newest first.
    pub async fn rights_requests_of_user(&self, user_id: &str) -> Result<Vec<RightsRequest>> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM rights_requests WHERE user_id = $1 ORDER BY id DESC");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).fetch_all(pool).await.map_err(db_err))
    }

    /// Every request for the admins: open ones past their due date first,
    /// then the other open ones by due date, then the closed ones, most
    /// recently closed first.
    pub async fn all_rights_requests(&self, now: i64, limit: i64) -> Result<Vec<RightsRequest>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM rights_requests ORDER BY \
             CASE WHEN status IN ('received', 'in_progress') AND due_at < $1 THEN 0 WHEN status IN ('received', 'in_progress') THEN 1 ELSE 2 END, \
             CASE WHEN status IN ('received', 'in_progress') THEN due_at ELSE -closed_at END, id LIMIT $2"
        );
        with_pool!(self, pool => sqlx::query_as(&sql).bind(now).bind(limit).fetch_all(pool).await.map_err(db_err))
    }

    pub async fn rights_request(&self, id: &str) -> Result<RightsRequest> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM rights_requests WHERE id = $1");
        let found: Option<RightsRequest> =
            with_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await.map_err(db_err)?);
        found.ok_or_else(Error::not_found)
    }

    /// Moves a request along its one path (see `domain::rights`); returns
    /// the request before and after. The check and the write are one
    /// transaction, so two admins cannot both move it from the same status.
    pub async fn set_rights_request_status(
        &self,
        id: &str,
        status: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<(RightsRequest, RightsRequest)> {
        let select = format!("SELECT {REQUEST_COLUMNS} FROM rights_requests WHERE id = $1");
        let update = format!(
            "UPDATE rights_requests SET status = $2, reason = COALESCE($3, reason), updated_at = $4, \
             closed_at = CASE WHEN $2 IN ('completed', 'denied') THEN $4 ELSE NULL END WHERE id = $1 RETURNING {REQUEST_COLUMNS}"
        );
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        if reason.is_some_and(|r| r.chars().count() > 500) {
            return Err(Error::invalid("the reason may be at most 500 characters"));
        }
        with_tx!(self, tx => {
            let before: Option<RightsRequest> = sqlx::query_as(&select).bind(id).fetch_optional(&mut *tx).await.map_err(db_err)?;
            let before = before.ok_or_else(Error::not_found)?;
            check_transition(&before.status, status, reason)?;
            let after: RightsRequest =
                sqlx::query_as(&update).bind(id).bind(status).bind(reason).bind(now).fetch_one(&mut *tx).await.map_err(db_err)?;
            Ok((before, after))
        })
    }
}
