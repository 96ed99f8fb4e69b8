//! Objects in any S3-compatible bucket (AWS S3, Cloudflare R2, MinIO,
//! Garage) through `object_store`. S3 makes a put visible whole or not at
//! all, so unlike the local store no temp objects are needed; large objects
//! go up in parts and an upload that fails part-way is aborted, leaving no
//! object behind.

use std::time::Duration;

use domain::{Error, ErrorCode, Result};
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig};
use serde::{Deserialize, Serialize};

use crate::{validate_key, validate_prefix, BlobStore, BoxFuture};

/// S3 refuses parts under 5 MiB (except the last one).
const MIN_PART_BYTES: u64 = 5 << 20;

/// Where objects live: `local` (a directory in the data dir) or `s3`.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `local` or `s3`.
    pub backend: String,
    pub bucket: String,
    pub region: String,
    /// Empty: AWS. Otherwise the server's URL, e.g. `https://<account>.r2.cloudflarestorage.com`.
    pub endpoint: String,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key`
    /// (MinIO, Garage and most self-hosted servers want this).
    pub path_style: bool,
    /// Empty: taken from the environment (`AWS_ACCESS_KEY_ID`, …) or the
    /// instance's role.
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Objects larger than this are uploaded in parts of this size (at
    /// least 5 MiB).
    pub multipart_part_bytes: u64,
    /// Limits for one request, and retries of a failed one.
    pub timeout_seconds: u32,
    pub max_retries: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: "local".into(),
            bucket: String::new(),
            region: "us-east-1".into(),
            endpoint: String::new(),
            path_style: false,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            multipart_part_bytes: 8 << 20,
            timeout_seconds: 30,
            max_retries: 3,
        }
    }
}

/// Hand-written so the secret key never reaches a log through `{:?}`.
impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("backend", &self.backend)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

pub struct S3Store {
    s3: AmazonS3,
    part_bytes: u64,
}

impl S3Store {
    /// Checks the settings and builds the client; no request is made yet.
    pub fn new(config: &StorageConfig) -> Result<S3Store> {
        if config.bucket.is_empty() {
            return Err(Error::invalid("storage.bucket is required for the s3 backend"));
        }
        if config.access_key_id.is_empty() != config.secret_access_key.is_empty() {
            return Err(Error::invalid("storage.access_key_id and storage.secret_access_key go together"));
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_client_options(ClientOptions::new().with_timeout(Duration::from_secs(u64::from(config.timeout_seconds.max(1)))))
            .with_retry(RetryConfig {
                max_retries: config.max_retries as usize,
                retry_timeout: Duration::from_secs(u64::from(config.timeout_seconds.max(1)) * u64::from(config.max_retries + 1)),
                ..RetryConfig::default()
            });
        if !config.endpoint.is_empty() {
            builder = builder.with_endpoint(&config.endpoint).with_allow_http(config.endpoint.starts_with("http://"));
        }
        if !config.access_key_id.is_empty() {
            builder = builder.with_access_key_id(&config.access_key_id).with_secret_access_key(&config.secret_access_key);
        }
        let s3 = builder.build().map_err(|e| Error::invalid(format!("storage: {e}")))?;
        Ok(S3Store { s3, part_bytes: config.multipart_part_bytes.max(MIN_PART_BYTES) })
    }

    async fn put_multipart(&self, path: &ObjectPath, bytes: Vec<u8>) -> Result<()> {
        let mut upload = self.s3.put_multipart(path).await.map_err(|e| s3_error("start upload", e))?;
        let bytes = bytes::Bytes::from(bytes);
        let mut sent = Ok(());
        for start in (0..bytes.len()).step_by(self.part_bytes as usize) {
            let end = (start + self.part_bytes as usize).min(bytes.len());
            if let Err(e) = upload.put_part(PutPayload::from(bytes.slice(start..end))).await {
                sent = Err(s3_error("upload part", e));
                break;
            }
        }
        let finished = match sent {
            Ok(()) => upload.complete().await.map(|_| ()).map_err(|e| s3_error("complete upload", e)),
            Err(e) => Err(e),
        };
        if finished.is_err() {
            // The parts stored so far are billed until aborted; best effort.
            if let Err(e) = upload.abort().await {
                tracing::warn!(error = %e, "blobs: could not abort a failed multipart upload");
            }
        }
        finished
    }
}

fn object_path(key: &str) -> Result<ObjectPath> {
    validate_key(key)?;
    ObjectPath::parse(key).map_err(|e| Error::invalid(format!("storage key: {e}")))
}

/// Logs the detail; the error names no key or endpoint. The server being
/// unreachable or failing is `unavailable`, so work is retried.
fn s3_error(op: &str, err: object_store::Error) -> Error {
    tracing::error!(error = %err, "blobs: s3 {op} failed");
    Error::new(ErrorCode::Unavailable, format!("storage error: {op} failed"))
}

impl BlobStore for S3Store {
    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let path = object_path(key)?;
            if bytes.len() as u64 > self.part_bytes {
                return self.put_multipart(&path, bytes).await;
            }
            self.s3.put(&path, PutPayload::from(bytes)).await.map(|_| ()).map_err(|e| s3_error("put", e))
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            let path = object_path(key)?;
            match self.s3.get(&path).await {
                Ok(found) => Ok(Some(found.bytes().await.map_err(|e| s3_error("get", e))?.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(s3_error("get", e)),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let path = object_path(key)?;
            match self.s3.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(s3_error("delete", e)),
            }
        })
    }

    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let path = object_path(key)?;
            match self.s3.head(&path).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(s3_error("head", e)),
            }
        })
    }

    fn list_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            validate_prefix(prefix)?;
            // object_store lists whole path segments: list the directory part
            // of the prefix and filter the rest as a plain string prefix.
            let dir = match prefix.rsplit_once('/') {
                Some((dir, _)) => Some(ObjectPath::parse(dir).map_err(|e| Error::invalid(format!("storage prefix: {e}")))?),
                None => None,
            };
            let listed: Vec<_> = self.s3.list(dir.as_ref()).try_collect().await.map_err(|e| s3_error("list", e))?;
            let mut keys: Vec<String> = listed
                .into_iter()
                .map(|meta| meta.location.to_string())
                .filter(|key| key.starts_with(prefix) && validate_key(key).is_ok())
                .collect();
            keys.sort();
            Ok(keys)
        })
    }
}
