use domain::task::TaskStatus;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    #[serde(skip)]
    pub password_hash: Option<String>,
    pub locale: Option<String>,
    pub role: String,
    pub status: String,
    pub age_confirmed_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// When the owner proved control of `email`; `None` until then.
    pub email_verified_at: Option<i64>,
    pub avatar_asset_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub name: String,
    pub password_hash: Option<String>,
    pub locale: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewSession {
    pub user_id: String,
    pub token_hash: String,
    pub expires_at: i64,
    /// Already truncated by the caller (IPv4 /24, IPv6 /48).
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Task {
    pub id: String,
    pub owner_id: String,
    pub kind: String,
    #[serde(serialize_with = "status_str")]
    pub status: TaskStatus,
    pub prompt: String,
    /// JSON of the kind's parameters (`domain::params::GenerateParams`).
    pub params: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub cost: i64,
    pub attempts: i64,
    pub max_attempts: i64,
    #[serde(skip)]
    pub lease_owner: Option<String>,
    #[serde(skip)]
    pub lease_expires_at: Option<i64>,
    pub progress: i64,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
}

fn status_str<S: serde::Serializer>(s: &TaskStatus, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

/// `FromRow` by hand: the status column decodes through the domain's parser.
macro_rules! task_from_row {
    ($row:ty) => {
        impl<'r> sqlx::FromRow<'r, $row> for Task {
            fn from_row(row: &'r $row) -> Result<Self, sqlx::Error> {
                use sqlx::Row;
                let status: String = row.try_get("status")?;
                Ok(Task {
                    status: TaskStatus::parse(&status).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    id: row.try_get("id")?,
                    owner_id: row.try_get("owner_id")?,
                    kind: row.try_get("kind")?,
                    prompt: row.try_get("prompt")?,
                    params: row.try_get("params")?,
                    provider: row.try_get("provider")?,
                    model: row.try_get("model")?,
                    cost: row.try_get("cost")?,
                    attempts: row.try_get("attempts")?,
                    max_attempts: row.try_get("max_attempts")?,
                    lease_owner: row.try_get("lease_owner")?,
                    lease_expires_at: row.try_get("lease_expires_at")?,
                    progress: row.try_get("progress")?,
                    error_code: row.try_get("error_code")?,
                    error_message: row.try_get("error_message")?,
                    created_at: row.try_get("created_at")?,
                    started_at: row.try_get("started_at")?,
                    finished_at: row.try_get("finished_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }
        }
    };
}
task_from_row!(sqlx::sqlite::SqliteRow);
task_from_row!(sqlx::postgres::PgRow);

pub(crate) const TASK_COLUMNS: &str = "id, owner_id, kind, status, prompt, params, provider, model, cost, attempts, max_attempts, \
     lease_owner, lease_expires_at, progress, error_code, error_message, created_at, started_at, finished_at, updated_at";

#[derive(Debug, Clone)]
pub struct NewTask {
    pub owner_id: String,
    pub kind: String,
    pub prompt: String,
    pub params: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub cost: i64,
    pub max_attempts: i64,
    pub idempotency_key: Option<String>,
    /// Fingerprint of the request body: a repeated key with another body is
    /// a client error, not a replay.
    pub request_hash: Option<String>,
}

/// One step of a task's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TaskEvent {
    pub status: String,
    pub detail: Option<String>,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Asset {
    pub id: String,
    pub owner_id: String,
    pub task_id: Option<String>,
    /// `output`, `thumbnail` or `upload`.
    pub kind: String,
    pub parent_id: Option<String>,
    #[serde(skip)]
    pub storage_key: String,
    pub content_type: String,
    pub sha256: String,
    pub size_bytes: i64,
    pub width: i64,
    pub height: i64,
    pub saved: bool,
    pub expires_at: Option<i64>,
    pub created_at: i64,
}

pub(crate) const ASSET_COLUMNS: &str =
    "id, owner_id, task_id, kind, parent_id, storage_key, content_type, sha256, size_bytes, width, height, saved, expires_at, created_at";

#[derive(Debug, Clone)]
pub struct NewAsset {
    pub id: String,
    pub owner_id: String,
    pub task_id: Option<String>,
    pub kind: String,
    pub parent_id: Option<String>,
    pub storage_key: String,
    pub content_type: String,
    pub sha256: String,
    pub size_bytes: i64,
    pub width: i64,
    pub height: i64,
    pub saved: bool,
    pub expires_at: Option<i64>,
}

/// A gallery entry: an output and, if made, its thumbnail's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct GalleryItem {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub asset: Asset,
    pub thumbnail_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Mail {
    pub id: String,
    pub user_id: Option<String>,
    pub kind: String,
    pub to_addr: String,
    pub subject: String,
    pub body_text: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
    /// Marketing mail only: the signed one-click unsubscribe link (RFC 8058).
    pub unsubscribe_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewMail {
    pub user_id: Option<String>,
    pub kind: String,
    pub to_addr: String,
    pub subject: String,
    pub body_text: String,
}

/// A page of newest-first results and the cursor for the next (older) page.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows: the extra row only says
    /// that another page exists.
    pub(crate) fn from_rows(mut rows: Vec<T>, limit: i64, id_of: impl Fn(&T) -> &str) -> Page<T> {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if more { rows.last().map(|r| id_of(r).to_string()) } else { None };
        Page { items: rows, next_cursor }
    }
}
