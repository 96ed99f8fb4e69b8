//! Object storage behind one object-safe trait. [`LocalDirStore`] is the
//! embedded default; [`S3Store`] and the encrypting wrapper implement the
//! same trait.

mod encrypted;
mod s3;
#[cfg(feature = "testing")]
pub mod testing;

pub use encrypted::Encrypted;
pub use s3::{S3Store, StorageConfig};

use std::future::Future;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use domain::{Error, Result};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub const MAX_KEY_BYTES: usize = 512;

/// Temp files live next to their target so the rename stays on one filesystem.
const TEMP_PREFIX: &str = ".tmp-";

pub trait BlobStore: Send + Sync + 'static {
    /// Stores `bytes` under `key`, replacing any previous object atomically.
    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, Result<()>>;
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>>;
    /// Idempotent: deleting a missing key is Ok.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>>;
    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>>;
    /// Keys starting with `prefix` (a plain string prefix, as in S3), sorted.
    fn list_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>>;
}

/// Keys are `/`-separated segments of `[A-Za-z0-9._-]`, at most 512 bytes,
/// e.g. `{owner_id}/{asset_id}.png`. No empty segments, no leading `/`, and no
/// segment may start with `.` — that rules out `.`/`..` and keeps the
/// store's own temp-file names out of the key space.
pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(Error::invalid(format!("storage key must be 1 to {MAX_KEY_BYTES} bytes")));
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return Err(Error::invalid("storage key has an empty segment"));
        }
        if segment.starts_with('.') {
            return Err(Error::invalid("storage key segment must not start with '.'"));
        }
        if !segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            return Err(Error::invalid("storage key has characters outside [A-Za-z0-9._-/]"));
        }
    }
    Ok(())
}

/// Prefixes may end mid-segment or with `/`; the directory part must be a valid key.
fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.len() > MAX_KEY_BYTES {
        return Err(Error::invalid("storage prefix too long"));
    }
    match prefix.rsplit_once('/') {
        Some((dir, _)) => validate_key(dir),
        None => Ok(()),
    }?;
    if !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/')) {
        return Err(Error::invalid("storage prefix has characters outside [A-Za-z0-9._-/]"));
    }
    Ok(())
}

/// The configured store: `local` keeps objects under `local_root`.
pub fn open_store(config: &StorageConfig, local_root: &Path) -> Result<std::sync::Arc<dyn BlobStore>> {
    match config.backend.as_str() {
        "local" => Ok(std::sync::Arc::new(LocalDirStore::new(local_root)?)),
        "s3" => Ok(std::sync::Arc::new(S3Store::new(config)?)),
        other => Err(Error::invalid(format!("storage.backend must be local or s3, not {other:?}"))),
    }
}

/// Objects as files under a root directory.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    root: PathBuf,
}

impl LocalDirStore {
    /// Creates the root directory if needed.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| io_error("create storage root", &root, e))?;
        Ok(LocalDirStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds `key` (whether or not it exists).
    pub fn path_of(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    async fn blocking<T: Send + 'static>(&self, key: &str, f: impl FnOnce(PathBuf, PathBuf) -> Result<T> + Send + 'static) -> Result<T> {
        let path = self.path_of(key)?;
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || f(root, path)).await.map_err(|e| Error::internal(format!("storage task failed: {e}")))?
    }
}

/// Logs the full detail and returns an error that names neither paths nor keys.
fn io_error(op: &str, path: &Path, err: std::io::Error) -> Error {
    tracing::error!(path = %path.display(), error = %err, "blobs: {op} failed");
    Error::internal(format!("storage error: {op} failed ({})", err.kind()))
}

fn unique_temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{TEMP_PREFIX}{}-{nanos:x}-{n}", std::process::id())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn put_blocking(root: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().expect("key paths have a parent");
    let created_dirs = !parent.is_dir();
    // A concurrent delete may prune the (empty) parent between mkdir and
    // creating the temp file; retry a few times.
    let mut attempt = 0;
    let (tmp_path, mut file) = loop {
        std::fs::create_dir_all(parent).map_err(|e| io_error("create directory", parent, e))?;
        let tmp_path = parent.join(unique_temp_name());
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&tmp_path) {
            Ok(file) => break (tmp_path, file),
            Err(e) if e.kind() == ErrorKind::NotFound && attempt < 3 => attempt += 1,
            Err(e) => return Err(io_error("create temp file", &tmp_path, e)),
        }
    };
    let written = file.write_all(bytes).and_then(|_| file.sync_all()).map_err(|e| io_error("write", &tmp_path, e)).and_then(|_| {
        drop(file);
        std::fs::rename(&tmp_path, path).map_err(|e| io_error("rename", path, e))
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp_path);
        return Err(e);
    }
    // Make the rename durable, and the new directories' entries too.
    sync_dir(parent).map_err(|e| io_error("sync directory", parent, e))?;
    if created_dirs {
        for dir in parent.ancestors().skip(1) {
            let _ = sync_dir(dir);
            if dir == root {
                break;
            }
        }
    }
    Ok(())
}

fn get_blocking(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        // A key that names a directory ("owner" when "owner/x.png" exists) is not an object.
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::IsADirectory | ErrorKind::NotADirectory) => Ok(None),
        Err(e) => Err(io_error("read", path, e)),
    }
}

fn delete_blocking(root: &Path, path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => return Ok(()),
        Err(e) => return Err(io_error("delete", path, e)),
    }
    let parent = path.parent().expect("key paths have a parent");
    let _ = sync_dir(parent);
    // Best effort: prune now-empty directories up to (not including) the root.
    for dir in path.ancestors().skip(1) {
        if dir == root || std::fs::remove_dir(dir).is_err() {
            break;
        }
    }
    Ok(())
}

fn list_blocking(root: &Path, prefix: &str) -> Result<Vec<String>> {
    // Walk only the directory part of the prefix; filter the rest by string.
    let start_key = prefix.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("");
    let start = if start_key.is_empty() { root.to_path_buf() } else { root.join(start_key) };
    let mut keys = Vec::new();
    let mut stack = vec![(start, start_key.to_string())];
    while let Some((dir, dir_key)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => continue,
            Err(e) => return Err(io_error("list", &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", &dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let key = if dir_key.is_empty() { name.to_string() } else { format!("{dir_key}/{name}") };
            // Skips temp files and anything else that is not a valid key.
            if validate_key(&key).is_err() {
                continue;
            }
            // file_type does not follow symlinks; symlinks are never objects.
            let file_type = entry.file_type().map_err(|e| io_error("list", &entry.path(), e))?;
            if file_type.is_dir() {
                if key.starts_with(prefix) || prefix.starts_with(&format!("{key}/")) {
                    stack.push((entry.path(), key));
                }
            } else if file_type.is_file() && key.starts_with(prefix) {
                keys.push(key);
            }
        }
    }
    keys.sort();
    Ok(keys)
}

impl BlobStore for LocalDirStore {
    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.blocking(key, move |root, path| put_blocking(&root, &path, &bytes)))
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(self.blocking(key, |_, path| get_blocking(&path)))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.blocking(key, |root, path| delete_blocking(&root, &path)))
    }

    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.blocking(key, |_, path| match std::fs::symlink_metadata(&path) {
            Ok(meta) => Ok(meta.is_file()),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(false),
            Err(e) => Err(io_error("stat", &path, e)),
        }))
    }

    fn list_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            validate_prefix(prefix)?;
            let root = self.root.clone();
            let prefix = prefix.to_string();
            tokio::task::spawn_blocking(move || list_blocking(&root, &prefix))
                .await
                .map_err(|e| Error::internal(format!("storage task failed: {e}")))?
        })
    }
}
