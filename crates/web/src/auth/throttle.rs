//! Failed sign-in throttling, per account and per network.
//!
//! Every failed password or second-factor check is recorded under two
//! buckets: the account (by a hash of the normalized email, whether or not
//! an account has it, so throttling reveals nothing about which emails are
//! registered) and the truncated client IP. Before a check:
//! - an account with `account_per_hour` failures in the last hour is locked
//!   until the oldest of them leaves the window (NIST 800-63B's "no more
//!   than 100 consecutive failures");
//! - much earlier, after `FREE_FAILURES`, each further attempt must wait a
//!   delay that doubles up to `MAX_DELAY_SECS`;
//! - a network (IPv4 /24, IPv6 /48) with `ip_per_hour` failures is locked
//!   the same way.
//!
//! Refusals are `too_many_attempts` with a Retry-After and are not counted
//! as failures (they check nothing). A full sign-in clears the account's
//! record; so does a password reset.

use domain::ids::to_hex;
use domain::{Error, ErrorCode, Result};
use sha2::{Digest, Sha256};
use store::Store;

pub const WINDOW_MS: i64 = 3_600_000;
/// Failures allowed before delays start.
pub const FREE_FAILURES: usize = 5;
/// The longest delay between attempts (short enough that the hourly limit,
/// not the delay, is what finally locks a persistent guesser).
pub const MAX_DELAY_SECS: i64 = 30;

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub account_per_hour: u32,
    pub ip_per_hour: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { account_per_hour: 100, ip_per_hour: 500 }
    }
}

/// The account bucket of a (normalized) email.
pub fn account_bucket(email: &str) -> String {
    format!("acct:{}", to_hex(&Sha256::digest(email.as_bytes())))
}

pub fn ip_bucket(truncated_ip: &str) -> String {
    format!("ip:{truncated_ip}")
}

fn too_many(retry_after_ms: i64) -> Error {
    let secs = (retry_after_ms + 999) / 1000;
    Error::new(ErrorCode::TooManyAttempts, format!("too many failed attempts; try again in {secs} seconds"))
        .with_retry_after(secs.max(1) as u64)
}

/// The wait still required before another attempt, in ms (0 = go ahead),
/// given the failures of the last hour (oldest first).
fn wait_ms(failures: &[i64], limit: usize, delays: bool, now: i64) -> i64 {
    let n = failures.len();
    if limit > 0 && n >= limit {
        return (failures[n - limit] + WINDOW_MS - now).max(1);
    }
    if delays && n >= FREE_FAILURES {
        let exponent = (n - FREE_FAILURES).min(16) as u32;
        let delay_ms = (1i64 << exponent).min(MAX_DELAY_SECS) * 1000;
        let last = failures[n - 1];
        return (last + delay_ms - now).max(0);
    }
    0
}

/// Refuses the attempt with `too_many_attempts` if a bucket is locked or
/// delayed.
pub async fn check(store: &Store, policy: &Policy, account: &str, ip: Option<&str>, now: i64) -> Result<()> {
    let since = now - WINDOW_MS;
    let failures = store.auth_failures_since(account, since).await?;
    let mut wait = wait_ms(&failures, policy.account_per_hour as usize, true, now);
    if let Some(ip) = ip {
        let failures = store.auth_failures_since(&ip_bucket(ip), since).await?;
        wait = wait.max(wait_ms(&failures, policy.ip_per_hour as usize, false, now));
    }
    if wait > 0 {
        return Err(too_many(wait));
    }
    Ok(())
}

pub async fn record_failure(store: &Store, account: &str, ip: Option<&str>, now: i64) -> Result<()> {
    store.record_auth_failure(account, now).await?;
    if let Some(ip) = ip {
        store.record_auth_failure(&ip_bucket(ip), now).await?;
    }
    Ok(())
}

pub async fn clear(store: &Store, account: &str) -> Result<()> {
    store.clear_auth_failures(account).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_the_hourly_limit_locks() {
        let now = 10 * WINDOW_MS;
        assert_eq!(wait_ms(&[now - 1000; 4], 100, true, now), 0);
        // 5 failures: the 6th attempt waits 1 s after the last one.
        assert_eq!(wait_ms(&[now - 200; 5], 100, true, now), 800);
        assert_eq!(wait_ms(&[now - 200; 7], 100, true, now), 3800);
        assert_eq!(wait_ms(&[now - 200; 60], 100, true, now), 29_800);
        assert_eq!(wait_ms(&[now - 40_000; 60], 100, true, now), 0);
        // 100 in the hour: locked until the oldest leaves the window.
        let mut failures: Vec<i64> = (0..100).map(|i| now - 3_000_000 + i * 1000).collect();
        assert_eq!(wait_ms(&failures, 100, true, now), 600_000);
        failures.remove(0);
        assert_eq!(wait_ms(&failures, 100, false, now), 0, "no delays for network buckets");
    }
}
