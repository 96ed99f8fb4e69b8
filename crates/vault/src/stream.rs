//! Objects are sealed as a STREAM (Hoang, Reyhanitabar, Rogaway, Vizár): a
//! header of magic bytes and a random 7-byte nonce prefix, then 64 KiB
//! chunks, each AES-256-GCM with nonce = prefix ‖ counter ‖ last-flag and the
//! object key as associated data. Chunks cannot be reordered, dropped or
//! truncated undetected, and only two chunks are ever held in memory.

use std::io::{Read, Write};

use aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::aead::Payload;
use domain::{Error, Result};
use rand::RngCore;

use crate::DataKey;

pub const CHUNK_SIZE: usize = 64 * 1024;
const TAG: usize = 16;
const MAGIC: &[u8; 6] = b"ATLB\x01\x00";
const PREFIX: usize = 7;

fn io_error(e: std::io::Error) -> Error {
    Error::internal(format!("stream I/O failed: {e}"))
}

fn corrupt() -> Error {
    Error::internal("the object does not decrypt: wrong key, wrong place or tampered")
}

/// Fills `buf` as far as the reader allows; fewer bytes only at the end.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(e)),
        }
    }
    Ok(n)
}

/// Encrypts everything `reader` yields into `writer`; returns bytes written.
pub fn encrypt_stream(key: &DataKey, aad: &str, mut reader: impl Read, mut writer: impl Write) -> Result<u64> {
    let mut prefix = [0u8; PREFIX];
    rand::thread_rng().fill_bytes(&mut prefix);
    writer.write_all(MAGIC).and_then(|_| writer.write_all(&prefix)).map_err(io_error)?;
    let mut written = (MAGIC.len() + PREFIX) as u64;
    let mut sealer = EncryptorBE32::from_aead(key.cipher(), (&prefix).into());
    let mut current = vec![0u8; CHUNK_SIZE];
    let mut next = vec![0u8; CHUNK_SIZE];
    let mut current_len = read_full(&mut reader, &mut current)?;
    loop {
        let next_len = if current_len == CHUNK_SIZE { read_full(&mut reader, &mut next)? } else { 0 };
        let payload = Payload { msg: &current[..current_len], aad: aad.as_bytes() };
        if next_len == 0 {
            let sealed = sealer.encrypt_last(payload).map_err(|_| Error::internal("encryption failed"))?;
            writer.write_all(&sealed).map_err(io_error)?;
            written += sealed.len() as u64;
            writer.flush().map_err(io_error)?;
            return Ok(written);
        }
        let sealed = sealer.encrypt_next(payload).map_err(|_| Error::internal("encryption failed"))?;
        writer.write_all(&sealed).map_err(io_error)?;
        written += sealed.len() as u64;
        std::mem::swap(&mut current, &mut next);
        current_len = next_len;
    }
}

/// Decrypts a sealed stream into `writer`; returns plaintext bytes written.
/// Fails (after writing only authenticated chunks) on any tampering.
pub fn decrypt_stream(key: &DataKey, aad: &str, mut reader: impl Read, mut writer: impl Write) -> Result<u64> {
    let mut header = [0u8; MAGIC.len() + PREFIX];
    if read_full(&mut reader, &mut header)? != header.len() || &header[..MAGIC.len()] != MAGIC {
        return Err(corrupt());
    }
    let prefix: [u8; PREFIX] = header[MAGIC.len()..].try_into().expect("sized above");
    let mut opener = DecryptorBE32::from_aead(key.cipher(), (&prefix).into());
    let mut current = vec![0u8; CHUNK_SIZE + TAG];
    let mut next = vec![0u8; CHUNK_SIZE + TAG];
    let mut current_len = read_full(&mut reader, &mut current)?;
    let mut written = 0u64;
    loop {
        if current_len < TAG {
            return Err(corrupt());
        }
        let next_len = if current_len == CHUNK_SIZE + TAG { read_full(&mut reader, &mut next)? } else { 0 };
        let payload = Payload { msg: &current[..current_len], aad: aad.as_bytes() };
        if next_len == 0 {
            let plain = opener.decrypt_last(payload).map_err(|_| corrupt())?;
            writer.write_all(&plain).map_err(io_error)?;
            writer.flush().map_err(io_error)?;
            return Ok(written + plain.len() as u64);
        }
        let plain = opener.decrypt_next(payload).map_err(|_| corrupt())?;
        writer.write_all(&plain).map_err(io_error)?;
        written += plain.len() as u64;
        std::mem::swap(&mut current, &mut next);
        current_len = next_len;
    }
}

pub fn encrypt_bytes(key: &DataKey, aad: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(plaintext.len() + plaintext.len() / CHUNK_SIZE * TAG + 64);
    encrypt_stream(key, aad, plaintext, &mut out)?;
    Ok(out)
}

pub fn decrypt_bytes(key: &DataKey, aad: &str, sealed: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(sealed.len());
    decrypt_stream(key, aad, sealed, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn round_trips_at_every_chunk_boundary() {
        let key = DataKey::generate();
        for len in [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE, 3 * CHUNK_SIZE + 17] {
            let plain = sample(len);
            let sealed = encrypt_bytes(&key, "k", &plain).unwrap();
            assert_eq!(decrypt_bytes(&key, "k", &sealed).unwrap(), plain, "{len}");
            if len >= 64 {
                assert!(!sealed.windows(64).any(|w| w == &plain[..64]), "ciphertext shows plaintext");
            }
        }
    }

    #[test]
    fn tampering_truncation_reordering_and_moving_are_detected() {
        let key = DataKey::generate();
        let plain = sample(3 * CHUNK_SIZE + 5);
        let sealed = encrypt_bytes(&key, "owner/a.png", &plain).unwrap();
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(decrypt_bytes(&key, "owner/a.png", &flipped).is_err());
        let chunk = CHUNK_SIZE + TAG;
        let header = MAGIC.len() + PREFIX;
        let truncated = &sealed[..header + 2 * chunk];
        assert!(decrypt_bytes(&key, "owner/a.png", truncated).is_err(), "dropping the tail is detected");
        let mut swapped = sealed[..header].to_vec();
        swapped.extend_from_slice(&sealed[header + chunk..header + 2 * chunk]);
        swapped.extend_from_slice(&sealed[header..header + chunk]);
        swapped.extend_from_slice(&sealed[header + 2 * chunk..]);
        assert!(decrypt_bytes(&key, "owner/a.png", &swapped).is_err(), "reordering is detected");
        assert!(decrypt_bytes(&key, "owner/b.png", &sealed).is_err(), "bound to its object key");
        assert!(decrypt_bytes(&DataKey::generate(), "owner/a.png", &sealed).is_err());
        assert!(decrypt_bytes(&key, "owner/a.png", b"ATLB").is_err());
    }
}
