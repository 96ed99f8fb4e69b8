//! Every object reaches the underlying store sealed with its owner's data key
//! (C27). The owner is the first segment of the key (`{owner_id}/…`), and the
//! whole key is bound into the ciphertext, so an object copied to another
//! key or account does not open.

use std::sync::Arc;

use domain::{Error, Result};
use vault::DataKeys;

use crate::{validate_key, BlobStore, BoxFuture};

pub struct Encrypted {
    inner: Arc<dyn BlobStore>,
    keys: Arc<dyn DataKeys>,
}

impl Encrypted {
    pub fn new(inner: Arc<dyn BlobStore>, keys: Arc<dyn DataKeys>) -> Encrypted {
        Encrypted { inner, keys }
    }

    /// The store underneath, holding ciphertext only.
    pub fn inner(&self) -> &Arc<dyn BlobStore> {
        &self.inner
    }
}

fn owner_of(key: &str) -> Result<&str> {
    validate_key(key)?;
    match key.split_once('/') {
        Some((owner, _)) if domain::ids::is_valid_id(owner) => Ok(owner),
        _ => Err(Error::invalid("object keys must start with the owner's account id")),
    }
}

impl BlobStore for Encrypted {
    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let data_key = self.keys.data_key(owner_of(key)?).await?;
            let aad = key.to_string();
            let sealed = tokio::task::spawn_blocking(move || vault::encrypt_bytes(&data_key, &aad, &bytes))
                .await
                .map_err(|_| Error::internal("encryption task failed"))??;
            self.inner.put(key, sealed).await
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            let owner = owner_of(key)?;
            let Some(sealed) = self.inner.get(key).await? else { return Ok(None) };
            let data_key = self.keys.data_key(owner).await?;
            let aad = key.to_string();
            let plain = tokio::task::spawn_blocking(move || vault::decrypt_bytes(&data_key, &aad, &sealed))
                .await
                .map_err(|_| Error::internal("decryption task failed"))??;
            Ok(Some(plain))
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        self.inner.delete(key)
    }

    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        self.inner.exists(key)
    }

    fn list_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        self.inner.list_prefix(prefix)
    }
}
