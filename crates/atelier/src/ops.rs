//! Operations on a data dir outside serving: opening it (master key, store,
//! encrypted objects), backups, restores, master-key rotation, purges.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use blobs::{BlobStore, Encrypted};
use serde::{Deserialize, Serialize};
use store::{AuditEntry, BackendKind, Store};
use vault::{LocalMasterKey, MasterKey};

use crate::config::Config;

pub const MASTER_KEY_ENV: &str = "ATELIER_MASTER_KEY";

pub struct DataDir {
    pub store: Store,
    /// Ciphertext as stored: for listing, deleting and backups.
    pub objects: Arc<dyn BlobStore>,
    /// Plaintext in and out, sealed with each owner's data key.
    pub blobs: Arc<dyn BlobStore>,
}

pub fn master_key_path(config: &Config) -> PathBuf {
    config.data_dir.join("master.key")
}

/// `ATELIER_MASTER_KEY` (base64) if set, else `<data_dir>/master.key`,
/// created (0600) on first start.
fn load_master_key(config: &Config) -> Result<LocalMasterKey, String> {
    if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
        return LocalMasterKey::from_base64(&text).map_err(|e| format!("{MASTER_KEY_ENV}: {}", e.message));
    }
    let path = master_key_path(config);
    let (key, created) = LocalMasterKey::load_or_create(&path).map_err(|e| e.message)?;
    if created {
        tracing::info!(path = %path.display(), "created a new master key; back it up separately from the data");
    }
    Ok(key)
}

pub async fn open(config: &Config) -> Result<DataDir, String> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| format!("cannot create data dir {}: {e}", config.data_dir.display()))?;
    let master = load_master_key(config)?;
    let store = Store::connect(&config.database_url(), config.database.max_connections)
        .await
        .map_err(|e| e.to_string())?
        .with_master_key(Arc::new(master))
        .with_scheduling(config.scheduling.store());
    let applied = store.migrate().await.map_err(|e| e.to_string())?;
    tracing::info!(applied, backend = ?store.kind(), "database ready");
    let objects = blobs::open_store(&config.storage, &config.data_dir.join("objects")).map_err(|e| e.to_string())?;
    let blobs: Arc<dyn BlobStore> = Arc::new(Encrypted::new(objects.clone(), Arc::new(store.clone())));
    Ok(DataDir { store, objects, blobs })
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created_at: i64,
    pub backend: String,
    pub master_key_id: String,
    /// Where the objects are: `local` (the data dir's objects/) or
    /// `s3://<bucket>`.
    #[serde(default)]
    pub storage: String,
    /// Every object key at backup time. Objects are not copied, on either
    /// backend: they stay where they are, sealed; back up the objects
    /// directory or the bucket (versioning, replication) with their own
    /// tools. A restore counts the listed objects that are missing.
    pub objects: Vec<String>,
}

const SQLITE_FILE: &str = "atelier.db";
const POSTGRES_FILE: &str = "atelier.pgdump";

fn run_tool(program: &str, args: &[&str]) -> Result<(), String> {
    let status = std::process::Command::new(program).args(args).status().map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} failed: {status}"))
    }
}

/// Writes a consistent database snapshot and the object manifest to `dir`.
pub async fn backup(config: &Config, data: &DataDir, dir: &Path) -> Result<Manifest, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let backend = match data.store.kind() {
        BackendKind::Sqlite => {
            let target = dir.join(SQLITE_FILE);
            if target.exists() {
                return Err(format!("{} already holds a backup", dir.display()));
            }
            data.store.snapshot_sqlite(&target).await.map_err(|e| e.to_string())?;
            "sqlite"
        }
        BackendKind::Postgres => {
            let target = dir.join(POSTGRES_FILE);
            run_tool("pg_dump", &["--format=custom", "--no-owner", "--file", &target.to_string_lossy(), &config.database_url()])?;
            "postgres"
        }
    };
    let manifest = Manifest {
        format: 1,
        created_at: store::now_ms(),
        backend: backend.into(),
        master_key_id: data.store.master_key_id().map_err(|e| e.to_string())?,
        storage: match config.storage.backend.as_str() {
            "s3" => format!("s3://{}", config.storage.bucket),
            other => other.to_string(),
        },
        objects: data.objects.list_prefix("").await.map_err(|e| e.to_string())?,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("manifest.json"), json).map_err(|e| format!("cannot write the manifest: {e}"))?;
    data.store
        .audit(AuditEntry {
            action: "backup_created",
            detail: Some(&format!("{} objects", manifest.objects.len())),
            ..AuditEntry::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(manifest)
}

#[derive(Debug)]
pub struct RestoreReport {
    pub purged_again: usize,
    pub objects_missing: usize,
}

/// Puts the backup's database in place (the server must be stopped), then
/// replays the tombstones: accounts purged after the backup was taken are
/// purged again before anything can read them.
pub async fn restore(config: &Config, dir: &Path) -> Result<RestoreReport, String> {
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).map_err(|e| format!("no manifest in {}: {e}", dir.display()))?)
            .map_err(|e| format!("bad manifest: {e}"))?;
    let url = config.database_url();
    match manifest.backend.as_str() {
        "sqlite" => {
            let db = url.strip_prefix("sqlite://").ok_or("the backup is SQLite but the configured database is not")?;
            let db = PathBuf::from(db);
            std::fs::create_dir_all(db.parent().unwrap_or(Path::new("."))).map_err(|e| e.to_string())?;
            let staged = db.with_extension("db.restoring");
            std::fs::copy(dir.join(SQLITE_FILE), &staged).map_err(|e| format!("cannot copy the snapshot: {e}"))?;
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
            }
            std::fs::rename(&staged, &db).map_err(|e| format!("cannot put the snapshot in place: {e}"))?;
        }
        "postgres" => {
            if !url.starts_with("postgres") {
                return Err("the backup is PostgreSQL but the configured database is not".into());
            }
            run_tool(
                "pg_restore",
                &["--clean", "--if-exists", "--no-owner", "--dbname", &url, &dir.join(POSTGRES_FILE).to_string_lossy()],
            )?;
        }
        other => return Err(format!("unknown backup backend {other}")),
    }
    let data = open(config).await?;
    let purged_again = privacy::replay_tombstones(&data.store, data.objects.as_ref()).await.map_err(|e| e.to_string())?;
    let mut objects_missing = 0;
    for key in &manifest.objects {
        if !key.starts_with("_tombstones/") && !data.objects.exists(key).await.map_err(|e| e.to_string())? {
            objects_missing += 1;
        }
    }
    data.store
        .audit(AuditEntry { action: "backup_restored", detail: Some(&format!("purged again: {purged_again}")), ..AuditEntry::default() })
        .await
        .map_err(|e| e.to_string())?;
    data.store.close().await;
    Ok(RestoreReport { purged_again, objects_missing })
}

/// Re-wraps every account key under a new master key; objects are not
/// touched. The new key replaces `master.key` (or is printed, when the key
/// comes from the environment) and the old one is no longer needed.
pub async fn rotate_master_key(config: &Config) -> Result<String, String> {
    let data = open(config).await?;
    let old_id = data.store.master_key_id().map_err(|e| e.to_string())?;
    let new_key = Arc::new(LocalMasterKey::generate());
    let from_env = std::env::var(MASTER_KEY_ENV).is_ok();
    let path = master_key_path(config);
    // Saved before the database changes, so a crash in between loses nothing.
    let pending = path.with_extension("key.new");
    if !from_env {
        new_key.write_to(&pending).map_err(|e| e.message)?;
    }
    let n = data.store.rewrap_all_keys(new_key.clone()).await.map_err(|e| e.to_string())?;
    if !from_env {
        std::fs::rename(&pending, &path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    }
    data.store
        .audit(AuditEntry {
            action: "master_key_rotated",
            detail: Some(&format!("{old_id} -> {} ({n} account keys)", new_key.id())),
            ..AuditEntry::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    data.store.close().await;
    if from_env {
        Ok(format!("re-wrapped {n} account keys. Set {MASTER_KEY_ENV}={} before the next start.", new_key.to_base64()))
    } else {
        Ok(format!("re-wrapped {n} account keys; {} now holds master key {}", path.display(), new_key.id()))
    }
}

/// `atelier admin create-user`: a verified account with a password (read
/// from standard input) and a role; the creation and the role are audited.
/// Returns the account as stored (its email normalised).
pub async fn create_user(store: &Store, email: &str, name: &str, role: &str) -> Result<store::User, String> {
    if !store::ROLES.contains(&role) {
        return Err(format!("role must be one of {}", store::ROLES.join(", ")));
    }
    let email = domain::account::normalize_email(email).map_err(|e| e.message)?;
    let mut password = String::new();
    std::io::stdin().read_line(&mut password).map_err(|e| format!("cannot read the password: {e}"))?;
    let password = password.trim_end_matches(['\r', '\n']).to_string();
    domain::account::check_password(&password).map_err(|e| e.message)?;
    let password_hash = web::hash_password(password).await.map_err(|e| e.message)?;
    let user = store
        .create_user(store::NewUser { email, name: name.trim().to_string(), password_hash: Some(password_hash), locale: None })
        .await
        .map_err(|e| e.message)?;
    store.mark_email_verified(&user.id, store::now_ms()).await.map_err(|e| e.to_string())?;
    store.set_role(&user.id, role).await.map_err(|e| e.to_string())?;
    for (action, detail) in [("account_created", "admin command"), ("role_changed", role)] {
        let entry = store::AuditEntry { action, target_id: Some(&user.id), detail: Some(detail), ..Default::default() };
        store.audit(entry).await.map_err(|e| e.to_string())?;
    }
    Ok(user)
}
