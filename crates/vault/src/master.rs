use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use domain::ids::to_hex;
use domain::{Error, Result};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::DataKey;

/// Wraps and unwraps data keys. The local implementation holds the key in
/// memory; a KMS-backed one would call out and never see the master key.
pub trait MasterKey: Send + Sync + 'static {
    /// Recorded with every wrapped key, so rotation knows what wrapped what.
    fn id(&self) -> &str;
    /// `aad` names the key's owner: a wrapped key moved to another account
    /// does not unwrap.
    fn wrap(&self, key: &DataKey, aad: &str) -> Result<Vec<u8>>;
    fn unwrap(&self, wrapped: &[u8], aad: &str) -> Result<DataKey>;
}

/// A 32-byte master key from a file (created 0600 at first start) or from
/// `ATELIER_MASTER_KEY` (base64).
pub struct LocalMasterKey {
    id: String,
    bytes: [u8; 32],
}

impl LocalMasterKey {
    pub fn generate() -> LocalMasterKey {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        LocalMasterKey::from_bytes(bytes)
    }

    fn from_bytes(bytes: [u8; 32]) -> LocalMasterKey {
        // The id identifies the key without revealing it.
        let id = format!("local-{}", &to_hex(&Sha256::digest([b"atelier-master-key-id:".as_slice(), &bytes].concat()))[..16]);
        LocalMasterKey { id, bytes }
    }

    pub fn from_base64(text: &str) -> Result<LocalMasterKey> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| Error::invalid("the master key must be 32 bytes in base64"))?;
        let bytes: [u8; 32] = raw.try_into().map_err(|_| Error::invalid("the master key must be 32 bytes in base64"))?;
        Ok(LocalMasterKey::from_bytes(bytes))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.bytes)
    }

    /// Reads the key file, or creates it (mode 0600, written then renamed so
    /// a crash never leaves half a key). Returns whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(LocalMasterKey, bool)> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((LocalMasterKey::from_base64(&text)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = LocalMasterKey::generate();
                key.write_to(path)?;
                Ok((key, true))
            }
            Err(e) => Err(Error::internal(format!("cannot read the master key file: {e}"))),
        }
    }

    /// Writes the key to `path` atomically with owner-only permissions.
    pub fn write_to(&self, path: &Path) -> Result<()> {
        let io = |e: std::io::Error| Error::internal(format!("cannot write the master key file: {e}"));
        let tmp = path.with_extension("tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(io)?;
        writeln!(file, "{}", self.to_base64()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(())
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&self.bytes).into())
    }
}

impl Drop for LocalMasterKey {
    fn drop(&mut self) {
        for b in self.bytes.iter_mut() {
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl MasterKey for LocalMasterKey {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, key: &DataKey, aad: &str) -> Result<Vec<u8>> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: key.bytes(), aad: aad.as_bytes() })
            .map_err(|_| Error::internal("key wrapping failed"))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    fn unwrap(&self, wrapped: &[u8], aad: &str) -> Result<DataKey> {
        if wrapped.len() != 12 + 32 + 16 {
            return Err(Error::internal("malformed wrapped key"));
        }
        let (nonce, sealed) = wrapped.split_at(12);
        let plain = self
            .cipher()
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: aad.as_bytes() })
            .map_err(|_| Error::internal("the data key does not unwrap with this master key"))?;
        let bytes: [u8; 32] = plain.try_into().map_err(|_| Error::internal("malformed data key"))?;
        Ok(DataKey::from_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_keys_unwrap_only_with_the_same_master_and_owner() {
        let master = LocalMasterKey::generate();
        let key = DataKey::generate();
        let wrapped = master.wrap(&key, "user-1").unwrap();
        assert!(!wrapped.windows(32).any(|w| w == key.bytes()), "the data key never appears in clear");
        assert_eq!(master.unwrap(&wrapped, "user-1").unwrap().bytes(), key.bytes());
        assert!(master.unwrap(&wrapped, "user-2").is_err());
        assert!(LocalMasterKey::generate().unwrap(&wrapped, "user-1").is_err());
    }

    #[test]
    fn key_file_is_created_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let (created, fresh) = LocalMasterKey::load_or_create(&path).unwrap();
        assert!(fresh);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let (loaded, fresh) = LocalMasterKey::load_or_create(&path).unwrap();
        assert!(!fresh);
        assert_eq!(created.id(), loaded.id());
        assert!(created.id().starts_with("local-") && !created.id().contains(&created.to_base64()));
        assert!(LocalMasterKey::from_base64("too short").is_err());
    }
}
