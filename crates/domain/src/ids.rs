/// A new time-ordered id (UUIDv7, hyphenated lowercase text), used for every row.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// True when `s` looks like an id we issued. Anything else is answered with
/// `not_found` before it reaches the database.
pub fn is_valid_id(s: &str) -> bool {
    uuid::Uuid::try_parse(s).is_ok() && s.len() == 36
}

/// Lowercase hex of `bytes` (digests, token hashes).
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
