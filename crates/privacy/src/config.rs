//! The privacy settings of a deployment: retention windows, grace periods and
//! the contacts the published policy names. The policy page renders from
//! these same values (C42), so what it says is what the sweeps do.

use serde::{Deserialize, Serialize};

/// The longest grace an operator may set between a deletion request and the
/// purge: the policy promises deletion within a month.
pub const MAX_DELETION_GRACE_DAYS: u32 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Days between an account deletion request and its purge (capped at 30).
    pub deletion_grace_days: u32,
    /// Days raw analytics events are kept before being folded into daily
    /// aggregates and deleted.
    pub analytics_raw_days: u32,
    /// Days request log rows (truncated IPs) are kept.
    pub request_log_days: u32,
    /// Days a finished data export stays downloadable.
    pub export_days: u32,
    /// Minutes between two retention sweeps in `serve` and `atelier worker`.
    pub sweep_interval_minutes: u32,
    /// Who runs this deployment, as the policy names them.
    pub operator_name: String,
    pub operator_contact: String,
    /// Data protection officer; empty: the operator contact.
    pub dpo_contact: String,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            deletion_grace_days: 7,
            analytics_raw_days: 30,
            request_log_days: 30,
            export_days: 7,
            sweep_interval_minutes: 60,
            operator_name: "The operator of this Atelier deployment".into(),
            operator_contact: "privacy@localhost".into(),
            dpo_contact: String::new(),
        }
    }
}

impl PrivacyConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.deletion_grace_days > MAX_DELETION_GRACE_DAYS {
            return Err(format!("privacy.deletion_grace_days may be at most {MAX_DELETION_GRACE_DAYS}"));
        }
        Ok(())
    }

    pub fn deletion_grace_ms(&self) -> i64 {
        i64::from(self.deletion_grace_days.min(MAX_DELETION_GRACE_DAYS)) * 86_400_000
    }
}
