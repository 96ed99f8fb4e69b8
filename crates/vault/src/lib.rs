//! Encryption at rest. A master key wraps one data key per account
//! (AES-256-GCM, random 96-bit nonce, key id recorded with every wrapped
//! key); data keys encrypt that account's prompts (column by column) and
//! objects (as a chunked AEAD stream, so any size streams through a fixed
//! buffer). Destroying an account's wrapped data key makes every copy of its
//! data unreadable: crypto-shredding.

mod master;
mod stream;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use domain::{Error, Result};
use rand::RngCore;

pub use master::{LocalMasterKey, MasterKey};
pub use stream::{decrypt_bytes, decrypt_stream, encrypt_bytes, encrypt_stream, CHUNK_SIZE};

/// A 256-bit account data key. The bytes are wiped when it is dropped.
pub struct DataKey([u8; 32]);

impl DataKey {
    pub fn generate() -> DataKey {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        DataKey(bytes)
    }

    pub(crate) fn from_bytes(bytes: [u8; 32]) -> DataKey {
        DataKey(bytes)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&self.0).into())
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // Volatile so the wipe is not optimised away.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(…)")
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where an account's data key comes from (the store, which keeps the
/// wrapped keys). The blob layer asks through this seam.
pub trait DataKeys: Send + Sync + 'static {
    fn data_key<'a>(&'a self, owner_id: &'a str) -> BoxFuture<'a, Result<Arc<DataKey>>>;
}

const TEXT_PREFIX: &str = "enc:v1:";

fn crypto_error() -> Error {
    Error::internal("decryption failed")
}

/// Seals a text column: `enc:v1:` + base64(nonce ‖ ciphertext). `aad` binds
/// the value to its place (table, column, row id), so a ciphertext copied
/// into another row does not open.
pub fn seal_text(key: &DataKey, aad: &str, plaintext: &str) -> String {
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let sealed = key
        .cipher()
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext.as_bytes(), aad: aad.as_bytes() })
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    format!("{TEXT_PREFIX}{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(out))
}

pub fn open_text(key: &DataKey, aad: &str, sealed: &str) -> Result<String> {
    let raw = sealed
        .strip_prefix(TEXT_PREFIX)
        .and_then(|b| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b).ok())
        .filter(|raw| raw.len() >= 12 + 16)
        .ok_or_else(crypto_error)?;
    let (nonce, ciphertext) = raw.split_at(12);
    let plain =
        key.cipher().decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: aad.as_bytes() }).map_err(|_| crypto_error())?;
    String::from_utf8(plain).map_err(|_| crypto_error())
}

pub fn is_sealed_text(value: &str) -> bool {
    value.starts_with(TEXT_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_is_bound_to_its_place() {
        let key = DataKey::generate();
        let sealed = seal_text(&key, "tasks.prompt/1", "a fox in the snow");
        assert!(is_sealed_text(&sealed) && !sealed.contains("fox"));
        assert_ne!(sealed, seal_text(&key, "tasks.prompt/1", "a fox in the snow"), "fresh nonce each time");
        assert_eq!(open_text(&key, "tasks.prompt/1", &sealed).unwrap(), "a fox in the snow");
        assert!(open_text(&key, "tasks.prompt/2", &sealed).is_err(), "moved to another row");
        assert!(open_text(&DataKey::generate(), "tasks.prompt/1", &sealed).is_err(), "another account's key");
        assert!(open_text(&key, "tasks.prompt/1", "a fox in the snow").is_err());
        assert!(open_text(&key, "tasks.prompt/1", "enc:v1:AAAA").is_err());
    }
}
