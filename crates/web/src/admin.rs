//! Admin-only API. Every route answers 404 to anyone who is not an admin, so
//! its existence is not revealed.

use axum::extract::State;
use axum::Json;
use domain::Error;
use serde::Deserialize;
use store::{AuditRecord, Page, User};

use crate::api::{checked_id, QueryParams};
use crate::context::ApiUser;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn require_admin(user: &User) -> ApiResult<()> {
    if user.role == "admin" {
        Ok(())
    } else {
        Err(ApiError(Error::not_found()))
    }
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    pub account: Option<String>,
    pub before: Option<String>,
    pub limit: Option<i64>,
}

/// The audit trail (C34), newest first; `account` narrows it to one account.
pub async fn audit_log(
    State(state): State<AppState>,
    api: ApiUser,
    QueryParams(q): QueryParams<AuditQuery>,
) -> ApiResult<Json<Page<AuditRecord>>> {
    require_admin(&api.user)?;
    let account = q.account.as_deref().map(checked_id).transpose()?;
    let before = q.before.as_deref().map(checked_id).transpose()?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    Ok(Json(state.store.audit_entries(account, before, limit).await?))
}
