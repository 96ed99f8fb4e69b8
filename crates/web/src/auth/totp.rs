//! TOTP second factor (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits),
//! its enrolment QR code and one-time recovery codes.
//!
//! HMAC-SHA1 comes from `ring`, already in the tree for TLS: the whole
//! algorithm is the dozen lines of `code_at`, so no TOTP crate is needed.

use domain::ids::to_hex;
use rand::RngCore;
use ring::hmac;
use sha2::{Digest, Sha256};

pub const STEP_MS: i64 = 30_000;
pub const DIGITS: u32 = 6;
/// Codes of the previous and next step are accepted too (clock drift).
pub const SKEW_STEPS: i64 = 1;
pub const RECOVERY_CODES: usize = 10;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(BASE32[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(BASE32[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes base32 (case-insensitive; spaces and padding ignored).
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let v = BASE32.iter().position(|&b| b as char == c.to_ascii_uppercase())? as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    Some(out)
}

/// A new 160-bit secret (RFC 4226's recommended length), base32.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut bytes);
    base32_encode(&bytes)
}

pub fn step_of(now_ms: i64) -> i64 {
    now_ms.div_euclid(STEP_MS)
}

/// The code for one time step (RFC 4226 dynamic truncation).
pub fn code_at(secret: &[u8], step: i64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = hmac::sign(&key, &(step as u64).to_be_bytes());
    let mac = mac.as_ref();
    let offset = (mac[mac.len() - 1] & 0x0f) as usize;
    let binary = u32::from_be_bytes([mac[offset] & 0x7f, mac[offset + 1], mac[offset + 2], mac[offset + 3]]);
    format!("{:0width$}", binary % 10u32.pow(DIGITS), width = DIGITS as usize)
}

/// The step `code` is valid for around `now_ms`, if any. Compared in
/// constant time per candidate.
pub fn verify(secret_b32: &str, code: &str, now_ms: i64) -> Option<i64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != DIGITS as usize || !code.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let secret = base32_decode(secret_b32)?;
    let now = step_of(now_ms);
    let mut found = None;
    for step in (now - SKEW_STEPS)..=(now + SKEW_STEPS) {
        if crate::context::tokens_match(&code_at(&secret, step), &code) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// Does `input` look like a TOTP code (rather than a recovery code)?
pub fn looks_like_totp(input: &str) -> bool {
    let digits: String = input.chars().filter(|c| !c.is_whitespace()).collect();
    digits.len() == DIGITS as usize && digits.chars().all(|c| c.is_ascii_digit())
}

/// `otpauth://` URI for authenticator apps.
pub fn provisioning_uri(issuer: &str, account: &str, secret_b32: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20");
    format!(
        "otpauth://totp/{}:{}?secret={secret_b32}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={}",
        enc(issuer),
        enc(account),
        enc(issuer),
        STEP_MS / 1000
    )
}

/// The URI as an inline SVG QR code (no script, no external image).
pub fn qr_svg(uri: &str) -> String {
    match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .dark_color(qrcode::render::svg::Color("#000000"))
            .light_color(qrcode::render::svg::Color("#ffffff"))
            .build()
            .split_once("<svg")
            .map(|(_, rest)| format!("<svg role=\"img\"{rest}"))
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Ten one-time recovery codes, 80 bits each, shown once as `xxxx-xxxx-xxxx-xxxx`.
pub fn new_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 10];
            rand::thread_rng().fill_bytes(&mut bytes);
            let raw = base32_encode(&bytes).to_ascii_lowercase();
            raw.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect::<Vec<_>>().join("-")
        })
        .collect()
}

/// The stored form of a recovery code: normalized (case, dashes, spaces)
/// then hashed. 80 random bits need no slow hash.
pub fn recovery_code_hash(code: &str) -> String {
    let normalized: String = code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect();
    to_hex(&Sha256::digest(normalized.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_test_vectors() {
        // RFC 6238 appendix B, SHA1 column, last 6 digits of the 8-digit codes.
        let secret = b"12345678901234567890";
        for (t, code) in
            [(59i64, "287082"), (1_111_111_109, "081804"), (1_111_111_111, "050471"), (1_234_567_890, "005924"), (2_000_000_000, "279037")]
        {
            assert_eq!(code_at(secret, t / 30), code, "t={t}");
        }
    }

    #[test]
    fn base32_round_trips_and_verify_accepts_one_step_of_drift() {
        let secret = new_secret();
        assert_eq!(secret.len(), 32);
        let bytes = base32_decode(&secret).unwrap();
        assert_eq!(bytes.len(), 20);
        assert_eq!(base32_encode(&bytes), secret);
        assert_eq!(base32_decode("GEZDGNBV GY3TQOJQ").unwrap(), b"1234567890");
        let now = 1_700_000_000_000;
        let code = code_at(&bytes, step_of(now) - 1);
        assert_eq!(verify(&secret, &code, now), Some(step_of(now) - 1));
        assert_eq!(verify(&secret, &code_at(&bytes, step_of(now) + 2), now), None);
        assert_eq!(verify(&secret, "12345", now), None);
        assert_eq!(verify(&secret, "abcdef", now), None);
    }

    #[test]
    fn recovery_codes_are_distinct_and_hash_the_same_however_typed() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), 10);
        assert_eq!(codes[0].len(), 19);
        assert_ne!(codes[0], codes[1]);
        assert_eq!(recovery_code_hash(&codes[0]), recovery_code_hash(&codes[0].to_uppercase().replace('-', " ")));
        assert!(!looks_like_totp(&codes[0]) && looks_like_totp("123 456"));
    }

    #[test]
    fn enrolment_uri_and_qr_code() {
        let uri = provisioning_uri("Atelier", "ana@example.org", "JBSWY3DPEHPK3PXP");
        assert_eq!(
            uri,
            "otpauth://totp/Atelier:ana%40example.org?secret=JBSWY3DPEHPK3PXP&issuer=Atelier&algorithm=SHA1&digits=6&period=30"
        );
        let svg = qr_svg(&uri);
        assert!(svg.starts_with("<svg role=\"img\"") && svg.ends_with("</svg>"), "{}", &svg[..svg.len().min(200)]);
        assert!(!svg.contains("<script"));
    }
}
