//! The data export (C35): every row the account has and every object it
//! owns, as one ZIP of JSON files and images, built in the background and
//! streamed to the object store in parts. Memory stays bounded by one part
//! plus one image, however large the account.

use std::time::Instant;

use blobs::BlobStore;
use domain::{Error, ErrorCode, Result};
use serde::Serialize;
use serde_json::{json, Value};
use store::{Export, Store, User};

use crate::zip::ZipEncoder;
use crate::PrivacyConfig;

/// Size of each stored object of an archive.
pub const PART_BYTES: usize = 8 << 20;
/// How long a build may go without showing progress before another node
/// takes it over.
pub const EXPORT_LEASE_MS: i64 = 10 * 60_000;
/// Rows read per query while writing a JSON file.
const PAGE: i64 = 200;

/// What the archive holds, file by file; README.txt comes first.
pub const SECTIONS: &[&str] = &[
    "account.json",
    "identities.json",
    "sessions.json",
    "api_keys.json",
    "webhooks.json",
    "tasks.json",
    "assets.json",
    "share_links.json",
    "ledger.json",
    "credits.json",
    "payments.json",
    "subscriptions.json",
    "consents.json",
    "notices.json",
    "support_tickets.json",
    "rights_requests.json",
    "audit.json",
];

/// The archive's parts as they are written: buffered up to [`PART_BYTES`],
/// then sealed and stored, renewing the build's lease each time.
struct Parts<'a> {
    store: &'a Store,
    blobs: &'a dyn BlobStore,
    export: &'a Export,
    buf: Vec<u8>,
    stored: i64,
    lease_from: (i64, Instant),
}

impl Parts<'_> {
    async fn drain(&mut self, all: bool) -> Result<()> {
        while self.buf.len() >= PART_BYTES || (all && !self.buf.is_empty()) {
            let rest = self.buf.split_off(self.buf.len().min(PART_BYTES));
            let part = std::mem::replace(&mut self.buf, rest);
            self.blobs.put(&self.export.part_key(self.stored), part).await?;
            self.stored += 1;
            let now = self.lease_from.0 + self.lease_from.1.elapsed().as_millis() as i64;
            if !self.store.renew_export_lease(&self.export.id, now + EXPORT_LEASE_MS).await? {
                return Err(Error::new(ErrorCode::NotFound, "the export was withdrawn while it was built"));
            }
        }
        Ok(())
    }
}

struct Archive<'a> {
    zip: ZipEncoder,
    parts: Parts<'a>,
}

impl Archive<'_> {
    async fn file(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.zip.file(name, bytes, &mut self.parts.buf)?;
        self.parts.drain(false).await
    }

    fn start(&mut self, name: &str) -> Result<()> {
        self.zip.start(name, &mut self.parts.buf)
    }

    async fn data(&mut self, bytes: &[u8]) -> Result<()> {
        self.zip.data(bytes, &mut self.parts.buf)?;
        self.parts.drain(false).await
    }

    fn end(&mut self) -> Result<()> {
        self.zip.end(&mut self.parts.buf)
    }

    /// A JSON file of one value, pretty-printed for people.
    async fn json(&mut self, name: &str, value: &impl Serialize) -> Result<()> {
        self.file(name, &to_json(value)?).await
    }
}

fn to_json(value: &impl Serialize) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::internal(format!("export encoding failed: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// A JSON array written element by element, so a file of a hundred
/// thousand tasks never sits in memory whole.
struct JsonArray {
    first: bool,
}

impl JsonArray {
    async fn open(archive: &mut Archive<'_>, name: &str) -> Result<JsonArray> {
        archive.start(name)?;
        archive.data(b"[").await?;
        Ok(JsonArray { first: true })
    }

    async fn push(&mut self, archive: &mut Archive<'_>, value: &impl Serialize) -> Result<()> {
        let mut bytes = if self.first { b"\n".to_vec() } else { b",\n".to_vec() };
        bytes.extend(to_json(value)?.trim_ascii_end());
        self.first = false;
        archive.data(&bytes).await
    }

    async fn close(self, archive: &mut Archive<'_>) -> Result<()> {
        archive.data(b"\n]\n").await?;
        archive.end()
    }
}

/// The file name of an asset inside the archive.
pub fn asset_file_name(asset: &store::Asset) -> String {
    let ext = match asset.content_type.as_str() {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        _ => "bin",
    };
    format!("images/{}.{ext}", asset.id)
}

/// Writes every section of `user`'s data. `blobs` opens the account's
/// objects (the encrypting store).
async fn write_sections(archive: &mut Archive<'_>, store: &Store, blobs: &dyn BlobStore, user: &User) -> Result<()> {
    let id = user.id.as_str();
    let two_factor = store.totp_of_user(id).await?.is_some();
    let profile = json!({
        "profile": user,
        "password_set": user.password_hash.is_some(),
        "two_factor_enabled": two_factor,
        "recovery_codes_left": store.recovery_codes_left(id).await?,
    });
    archive.json("account.json", &profile).await?;
    archive.json("identities.json", &store.identities_of_user(id).await?).await?;
    archive.json("sessions.json", &store.sessions_of_user(id).await?).await?;
    archive.json("api_keys.json", &store.list_api_keys(id).await?).await?;
    // Endpoints without their secrets (never serialised), and every delivery.
    let webhooks = json!({
        "endpoints": store.list_webhook_endpoints(id, true).await?,
        "deliveries": store.webhook_deliveries_of_user(id).await?,
    });
    archive.json("webhooks.json", &webhooks).await?;

    // Tasks with their decrypted prompts, parameters and timelines.
    let mut tasks = JsonArray::open(archive, "tasks.json").await?;
    let mut before: Option<String> = None;
    loop {
        let page = store.list_tasks(id, before.as_deref(), PAGE).await?;
        for task in &page.items {
            let params: Value = serde_json::from_str(&task.params).unwrap_or_else(|_| Value::String(task.params.clone()));
            let timeline = store.task_events(id, &task.id).await?;
            let mut row = serde_json::to_value(task).map_err(|e| Error::internal(e.to_string()))?;
            row["params"] = params;
            row["timeline"] = serde_json::to_value(&timeline).map_err(|e| Error::internal(e.to_string()))?;
            tasks.push(archive, &row).await?;
        }
        match page.next_cursor {
            Some(cursor) => before = Some(cursor),
            None => break,
        }
    }
    tasks.close(archive).await?;

    // Asset records first, then their files (a ZIP entry is contiguous).
    let mut assets = JsonArray::open(archive, "assets.json").await?;
    let mut after: Option<String> = None;
    loop {
        let page = store.assets_of_user(id, after.as_deref(), PAGE).await?;
        for asset in &page.items {
            let mut row = serde_json::to_value(asset).map_err(|e| Error::internal(e.to_string()))?;
            row["file"] = Value::String(asset_file_name(asset));
            assets.push(archive, &row).await?;
        }
        match page.next_cursor {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    assets.close(archive).await?;
    let mut after: Option<String> = None;
    loop {
        let page = store.assets_of_user(id, after.as_deref(), PAGE).await?;
        for asset in &page.items {
            // An object swept between the listing and here is left out.
            if let Some(bytes) = blobs.get(&asset.storage_key).await? {
                archive.file(&asset_file_name(asset), &bytes).await?;
            }
        }
        match page.next_cursor {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }

    archive.json("share_links.json", &store.share_links_of_user(id).await?).await?;

    let mut ledger = JsonArray::open(archive, "ledger.json").await?;
    let mut before: Option<String> = None;
    loop {
        let page = store.ledger_entries(id, before.as_deref(), PAGE).await?;
        for entry in &page.items {
            ledger.push(archive, entry).await?;
        }
        match page.next_cursor {
            Some(cursor) => before = Some(cursor),
            None => break,
        }
    }
    ledger.close(archive).await?;
    let credits = json!({ "balance": store.balance(id).await?, "lots": store.credit_lots(id).await? });
    archive.json("credits.json", &credits).await?;
    archive.json("payments.json", &store.payments_of_user(id).await?).await?;
    archive.json("subscriptions.json", &store.subscriptions_of_user(id).await?).await?;

    let consents = json!({
        "settings": store.account_privacy(id).await?,
        "consents": store.consents_of_user(id).await?,
        "policy_acceptances": store.policy_acceptances_of_user(id).await?,
    });
    archive.json("consents.json", &consents).await?;

    let notices: Vec<Value> = store
        .mail_of_user(id)
        .await?
        .into_iter()
        .map(|m| {
            json!({
                "id": m.id, "kind": m.kind, "to": m.to_addr, "subject": m.subject, "body": m.body_text,
                "status": m.status, "created_at": m.created_at, "sent_at": m.sent_at,
            })
        })
        .collect();
    archive.json("notices.json", &notices).await?;
    archive.json("support_tickets.json", &store.tickets_of_user(id).await?).await?;
    archive.json("rights_requests.json", &store.rights_requests_of_user(id).await?).await?;

    let mut audit = JsonArray::open(archive, "audit.json").await?;
    let mut before: Option<String> = None;
    loop {
        let page = store.audit_entries(Some(id), before.as_deref(), PAGE).await?;
        for entry in &page.items {
            audit.push(archive, entry).await?;
        }
        match page.next_cursor {
            Some(cursor) => before = Some(cursor),
            None => break,
        }
    }
    audit.close(archive).await
}

/// Builds the archive of a claimed export and marks it ready (or failed),
/// kept for `config.export_days`. `readme` is the Art. 15 information in the
/// account's language. Returns the export as it ended; `None` if it vanished
/// meanwhile (the account was purged): then its parts are removed too.
pub async fn build_export(
    store: &Store,
    blobs: &dyn BlobStore,
    config: &PrivacyConfig,
    export: &Export,
    readme: &str,
    now_ms: i64,
) -> Result<Option<Export>> {
    let started = Instant::now();
    let expires_at = now_ms + i64::from(config.export_days) * 86_400_000;
    let written = async {
        let user = store.user_by_id(&export.user_id).await?.ok_or_else(Error::not_found)?;
        let parts = Parts { store, blobs, export, buf: Vec::new(), stored: 0, lease_from: (now_ms, started) };
        let mut archive = Archive { zip: ZipEncoder::new(now_ms), parts };
        archive.file("README.txt", readme.as_bytes()).await?;
        write_sections(&mut archive, store, blobs, &user).await?;
        let Archive { zip, mut parts } = archive;
        let size = zip.finish(&mut parts.buf)?;
        parts.drain(true).await?;
        Ok::<_, Error>((parts.stored, size))
    };
    let written = written.await;
    let finished_at = now_ms + started.elapsed().as_millis() as i64;
    match written {
        Ok((parts, size)) => {
            let done = store.finish_export(&export.id, parts, size as i64, finished_at, expires_at).await?;
            if done.is_none() {
                remove_parts(blobs, export).await?;
            }
            tracing::info!(export = %export.id, parts, size, "export ready");
            Ok(done)
        }
        Err(e) => {
            tracing::warn!(export = %export.id, error = %e, "export failed");
            store.fail_export(&export.id, e.code.as_str(), finished_at, expires_at).await?;
            let ended = store.export_of_user(&export.user_id, &export.id).await;
            if ended.is_err() {
                remove_parts(blobs, export).await?;
            }
            Ok(ended.ok())
        }
    }
}

/// Deletes every stored part of an archive (complete or not).
async fn remove_parts(objects: &dyn BlobStore, export: &Export) -> Result<usize> {
    let keys = objects.list_prefix(&export.parts_prefix()).await?;
    for key in &keys {
        objects.delete(key).await?;
    }
    Ok(keys.len())
}

/// The sweep's step: archives past their `expires_at` go, objects first,
/// then the row. Returns how many exports were removed.
pub async fn sweep_expired_exports(store: &Store, objects: &dyn BlobStore, now_ms: i64) -> Result<usize> {
    let mut removed = 0;
    loop {
        let batch = store.expired_exports(now_ms, 100).await?;
        if batch.is_empty() {
            return Ok(removed);
        }
        for export in &batch {
            remove_parts(objects, export).await?;
            removed += usize::from(store.delete_export(&export.id).await?);
        }
    }
}
