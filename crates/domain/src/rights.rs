//! Data subject requests (C36–C38): their kinds, where they came from, and
//! the one path their status may take.

use crate::{Error, Result};

/// The legal answer time: one month, counted as 30 days from receipt.
pub const RIGHTS_DUE_MS: i64 = 30 * 86_400_000;

/// What a person may ask for (GDPR Art. 15–21 and consent withdrawal).
pub const RIGHTS_KINDS: &[&str] =
    &["access", "rectification", "erasure", "restriction", "objection", "portability", "withdraw_consent", "other"];

/// Filed by the account from the privacy center, or logged by an admin for
/// a request received by mail.
pub const CHANNELS: &[&str] = &["dashboard", "email"];

pub const STATUSES: &[&str] = &["received", "in_progress", "completed", "denied"];

pub const DETAILS_MAX_CHARS: usize = 2000;

pub fn check_kind(kind: &str) -> Result<&'static str> {
    RIGHTS_KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .ok_or_else(|| Error::invalid(format!("kind must be one of {}", RIGHTS_KINDS.join(", "))))
}

/// Trims and bounds the free text of a request (may be empty).
pub fn normalize_details(details: &str) -> Result<String> {
    let details = details.trim();
    if details.chars().count() > DETAILS_MAX_CHARS {
        return Err(Error::invalid(format!("details may be at most {DETAILS_MAX_CHARS} characters")));
    }
    Ok(details.to_string())
}

/// received → in_progress → completed | denied; a request may also be
/// denied on receipt (manifestly unfounded). Closed requests stay closed.
/// A denial must say why.
pub fn check_transition(from: &str, to: &str, reason: Option<&str>) -> Result<()> {
    let allowed = matches!((from, to), ("received", "in_progress") | ("received" | "in_progress", "denied") | ("in_progress", "completed"));
    if !allowed {
        return Err(Error::invalid(format!("a request cannot go from {from} to {to}")));
    }
    if to == "denied" && reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(Error::invalid("a denial needs a reason"));
    }
    Ok(())
}

/// Still waiting for an answer.
pub fn is_open(status: &str) -> bool {
    matches!(status, "received" | "in_progress")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c38_status_moves_forward_only_and_a_denial_needs_a_reason() {
        assert!(check_transition("received", "in_progress", None).is_ok());
        assert!(check_transition("in_progress", "completed", None).is_ok());
        assert!(check_transition("in_progress", "denied", Some("identity not confirmed")).is_ok());
        assert!(check_transition("received", "denied", Some("unfounded")).is_ok());
        assert!(check_transition("received", "completed", None).is_err(), "work starts before completion");
        assert!(check_transition("in_progress", "denied", Some("  ")).is_err());
        assert!(check_transition("completed", "in_progress", None).is_err());
        assert!(check_transition("denied", "received", None).is_err());
        assert!(check_transition("received", "received", None).is_err());
    }

    #[test]
    fn kinds_and_details_are_checked() {
        assert_eq!(check_kind("withdraw_consent").unwrap(), "withdraw_consent");
        assert!(check_kind("everything").is_err());
        assert_eq!(normalize_details("  fix my name  ").unwrap(), "fix my name");
        assert!(normalize_details(&"x".repeat(DETAILS_MAX_CHARS + 1)).is_err());
    }
}
