//! Credits for money: plans and packs from configuration, the price table,
//! Stripe and Creem hosted checkout, and their webhooks (verified on the raw
//! body, parsed into [`store::BillingEvent`]s the store applies exactly once).
//! Nothing here knows HTTP serving; the web crate routes to it.

pub mod creem;
pub mod stripe;

use std::collections::BTreeMap;
use std::time::Duration;

use domain::{Error, ErrorCode, Result};
use serde::{Deserialize, Serialize};
use store::Store;

/// `[billing]` in `atelier.toml`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    /// Off: tasks are free and the billing pages say so.
    pub enabled: bool,
    /// ISO currency of pack and plan prices (lower case, as Stripe wants it).
    pub currency: String,
    /// Credits every new account gets, once.
    pub signup_grant: i64,
    /// Days those credits last; 0 = they never expire.
    pub signup_grant_days: u32,
    /// A notice is mailed once when the balance drops below this.
    pub low_balance_threshold: i64,
    /// Stripe secret API key (`sk_…`); empty = Stripe is not offered.
    pub stripe_secret_key: String,
    /// Webhook signing secrets (`whsec_…`), comma-separated during rotation.
    pub stripe_webhook_secret: String,
    pub stripe_api_base: String,
    /// Webhooks older than this (by their signed timestamp) are refused.
    pub stripe_tolerance_seconds: i64,
    /// Creem API key; empty = Creem is not offered.
    pub creem_api_key: String,
    pub creem_webhook_secret: String,
    pub creem_api_base: String,
    pub prices: PriceTable,
    pub packs: Vec<Pack>,
    pub plans: Vec<Plan>,
}

/// Hand-written so keys and secrets never reach a log through `{:?}`.
impl std::fmt::Debug for BillingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingConfig")
            .field("enabled", &self.enabled)
            .field("currency", &self.currency)
            .field("stripe", &!self.stripe_secret_key.is_empty())
            .field("creem", &!self.creem_api_key.is_empty())
            .field("packs", &self.packs)
            .field("plans", &self.plans)
            .finish_non_exhaustive()
    }
}

/// Credits per image: by size (optionally per model), times the quality's
/// factor, times the number of images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PriceTable {
    /// `WIDTHxHEIGHT` → credits per image. Every size the API accepts must
    /// be listed: an unlisted size is refused, never priced 0.
    pub sizes: BTreeMap<String, i64>,
    /// Quality → multiplier.
    pub qualities: BTreeMap<String, i64>,
    /// Model → size → credits, overriding `sizes` for that model.
    pub models: BTreeMap<String, BTreeMap<String, i64>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pack {
    pub id: String,
    pub name: String,
    pub credits: i64,
    /// Price in minor units of `currency` (cents).
    pub price_minor: i64,
    /// Days the credits last; 0 = never expire.
    #[serde(default)]
    pub valid_days: u32,
    /// A Stripe Price id; empty = priced inline from `price_minor`.
    #[serde(default)]
    pub stripe_price: String,
    /// The Creem product id; empty = not sold through Creem.
    #[serde(default)]
    pub creem_product: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub id: String,
    pub name: String,
    /// Credits granted each paid month; they expire at the period's end.
    pub monthly_credits: i64,
    pub price_minor: i64,
    #[serde(default)]
    pub stripe_price: String,
    #[serde(default)]
    pub creem_product: String,
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            enabled: false,
            currency: "usd".into(),
            signup_grant: 20,
            signup_grant_days: 30,
            low_balance_threshold: 5,
            stripe_secret_key: String::new(),
            stripe_webhook_secret: String::new(),
            stripe_api_base: "https://api.stripe.com".into(),
            stripe_tolerance_seconds: 300,
            creem_api_key: String::new(),
            creem_webhook_secret: String::new(),
            creem_api_base: "https://api.creem.io".into(),
            prices: PriceTable::default(),
            packs: vec![
                Pack {
                    id: "starter".into(),
                    name: "Starter".into(),
                    credits: 100,
                    price_minor: 500,
                    valid_days: 365,
                    stripe_price: String::new(),
                    creem_product: String::new(),
                },
                Pack {
                    id: "studio".into(),
                    name: "Studio".into(),
                    credits: 500,
                    price_minor: 2000,
                    valid_days: 0,
                    stripe_price: String::new(),
                    creem_product: String::new(),
                },
            ],
            plans: vec![Plan {
                id: "pro".into(),
                name: "Pro".into(),
                monthly_credits: 300,
                price_minor: 1200,
                stripe_price: String::new(),
                creem_product: String::new(),
            }],
        }
    }
}

impl Default for PriceTable {
    fn default() -> Self {
        let sizes = [("256x256", 1), ("512x512", 1), ("1024x1024", 2), ("1536x1024", 3), ("1024x1536", 3)];
        PriceTable {
            sizes: sizes.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            qualities: [("standard".to_string(), 1), ("hd".to_string(), 2)].into_iter().collect(),
            models: BTreeMap::new(),
        }
    }
}

/// Something for sale, resolved from the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Product<'a> {
    Pack(&'a Pack),
    Plan(&'a Plan),
}

impl Product<'_> {
    /// `pack:<id>` or `plan:<id>`: what metadata and payment rows carry.
    pub fn key(&self) -> String {
        match self {
            Product::Pack(p) => format!("pack:{}", p.id),
            Product::Plan(p) => format!("plan:{}", p.id),
        }
    }
    pub fn name(&self) -> &str {
        match self {
            Product::Pack(p) => &p.name,
            Product::Plan(p) => &p.name,
        }
    }
    pub fn price_minor(&self) -> i64 {
        match self {
            Product::Pack(p) => p.price_minor,
            Product::Plan(p) => p.price_minor,
        }
    }
    pub fn credits(&self) -> i64 {
        match self {
            Product::Pack(p) => p.credits,
            Product::Plan(p) => p.monthly_credits,
        }
    }
    fn stripe_price(&self) -> &str {
        match self {
            Product::Pack(p) => &p.stripe_price,
            Product::Plan(p) => &p.stripe_price,
        }
    }
    pub fn creem_product(&self) -> &str {
        match self {
            Product::Pack(p) => &p.creem_product,
            Product::Plan(p) => &p.creem_product,
        }
    }
}

impl BillingConfig {
    /// Refuses a configuration that would misprice or mis-sell.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (size, credits) in &self.prices.sizes {
            if *credits <= 0 {
                return Err(format!("billing.prices.sizes.{size} must be at least 1 credit"));
            }
        }
        for (q, f) in &self.prices.qualities {
            if *f <= 0 {
                return Err(format!("billing.prices.qualities.{q} must be at least 1"));
            }
        }
        for (model, sizes) in &self.prices.models {
            if sizes.values().any(|c| *c <= 0) {
                return Err(format!("billing.prices.models.{model}: every size must cost at least 1 credit"));
            }
        }
        let mut ids = std::collections::HashSet::new();
        for p in &self.packs {
            if p.credits <= 0 || p.price_minor <= 0 || !ids.insert(format!("pack:{}", p.id)) {
                return Err(format!("billing.packs: pack {:?} needs a unique id, credits and a price", p.id));
            }
        }
        for p in &self.plans {
            if p.monthly_credits <= 0 || p.price_minor <= 0 || !ids.insert(format!("plan:{}", p.id)) {
                return Err(format!("billing.plans: plan {:?} needs a unique id, credits and a price", p.id));
            }
        }
        if self.signup_grant < 0 || self.low_balance_threshold < 0 {
            return Err("billing.signup_grant and billing.low_balance_threshold must not be negative".into());
        }
        Ok(())
    }

    pub fn stripe_enabled(&self) -> bool {
        self.enabled && !self.stripe_secret_key.is_empty()
    }

    pub fn creem_enabled(&self) -> bool {
        self.enabled && !self.creem_api_key.is_empty()
    }

    /// Resolves `pack:<id>` / `plan:<id>`.
    pub fn product(&self, key: &str) -> Option<Product<'_>> {
        let (kind, id) = key.split_once(':')?;
        match kind {
            "pack" => self.packs.iter().find(|p| p.id == id).map(Product::Pack),
            "plan" => self.plans.iter().find(|p| p.id == id).map(Product::Plan),
            _ => None,
        }
    }

    /// The product sold under a provider's own id (events without our metadata).
    pub fn product_by_provider_id(&self, provider: &str, id: &str) -> Option<Product<'_>> {
        if id.is_empty() {
            return None;
        }
        let packs = self.packs.iter().map(Product::Pack);
        let plans = self.plans.iter().map(Product::Plan);
        packs.chain(plans).find(|p| match provider {
            "stripe" => p.stripe_price() == id,
            "creem" => p.creem_product() == id,
            _ => false,
        })
    }

    /// Credits for `n` images of `size` at `quality` from `model`. A size
    /// or quality missing from the table is refused, never priced 0.
    pub fn price(&self, model: &str, size: &str, quality: &str, n: u32) -> Result<i64> {
        let per_image = self
            .prices
            .models
            .get(model)
            .and_then(|sizes| sizes.get(size))
            .or_else(|| self.prices.sizes.get(size))
            .copied()
            .ok_or_else(|| Error::invalid(format!("size {size} has no price")))?;
        let factor =
            self.prices.qualities.get(quality).copied().ok_or_else(|| Error::invalid(format!("quality {quality} has no price")))?;
        let cost = per_image.saturating_mul(factor).saturating_mul(i64::from(n.max(1)));
        if cost <= 0 {
            return Err(Error::internal("a request was priced at zero"));
        }
        Ok(cost)
    }

    pub fn stripe_webhook_secrets(&self) -> Vec<&str> {
        self.stripe_webhook_secret.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
    }

    /// When the sign-up grant of an account created at `created_at` expires.
    pub fn signup_expiry(&self, created_at: i64) -> Option<i64> {
        (self.signup_grant_days > 0).then(|| created_at + i64::from(self.signup_grant_days) * 86_400_000)
    }
}

/// Formats minor units for people: `5.00 USD`.
pub fn format_money(minor: i64, currency: &str) -> String {
    let zero_decimal = ["jpy", "krw", "vnd", "clp", "isk", "ugx", "xaf", "xof"];
    if zero_decimal.contains(&currency.to_ascii_lowercase().as_str()) {
        format!("{minor} {}", currency.to_ascii_uppercase())
    } else {
        format!("{}.{:02} {}", minor / 100, (minor % 100).abs(), currency.to_ascii_uppercase())
    }
}

/// Gives an account its sign-up credits the first time billing sees it
/// (whatever way it signed up); at most once per account.
pub async fn ensure_signup_grant(store: &Store, config: &BillingConfig, user: &store::User) -> Result<()> {
    if !config.enabled || config.signup_grant <= 0 {
        return Ok(());
    }
    store
        .grant_credits(store::NewGrant {
            user_id: user.id.clone(),
            amount: config.signup_grant,
            source: "signup".into(),
            key: format!("signup:{}", user.id),
            reason: "signup".into(),
            expires_at: config.signup_expiry(user.created_at),
        })
        .await?;
    Ok(())
}

/// Expires credits past their date, every `every`, until shutdown.
pub async fn run_sweeper(store: Store, every: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        // One node sweeps at a time; the others skip this round.
        match store.exclusively("credit_expiry", store.expire_credits(None)).await {
            Ok(None) => {}
            Ok(Some(n)) => {
                metrics::sweep_done("credit_expiry", &[("credits_expired", n.max(0) as u64)]);
                if n > 0 {
                    tracing::info!(credits = n, "expired credits");
                }
            }
            Err(e) => tracing::warn!(error = %e, "credit expiry sweep failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// The fields of a webhook event we keep (C15): only those we use, with
/// any card-like digit run replaced, as compact JSON.
pub fn summary(fields: &[(&str, Option<String>)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> =
        fields.iter().filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), serde_json::Value::String(redact_card_numbers(v))))).collect();
    serde_json::Value::Object(map).to_string()
}

/// `text` with every card-like digit run replaced by `[redacted]`.
pub fn redact_card_numbers(text: &str) -> String {
    if !store::contains_card_number(text) {
        return text.to_string();
    }
    // Drop every digit run of 13 or more digits (with separators).
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let mut j = i;
            let mut digits = 0;
            while j < chars.len()
                && (chars[j].is_ascii_digit()
                    || ((chars[j] == ' ' || chars[j] == '-') && j + 1 < chars.len() && chars[j + 1].is_ascii_digit()))
            {
                digits += usize::from(chars[j].is_ascii_digit());
                j += 1;
            }
            if digits >= 13 {
                out.push_str("[redacted]");
            } else {
                out.extend(&chars[i..j]);
            }
            i = j;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// RFC 3339 (`2024-10-12T11:58:33.097Z`, or with an offset) → epoch ms.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() < 19 {
        return None;
    }
    let num = |a: usize, b: usize| s.get(a..b)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (num(0, 4)?, num(5, 7)?, num(8, 10)?, num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let mut rest = &s[19..];
    let mut ms = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).collect();
        ms = format!("{:0<3}", &digits[..digits.len().min(3)]).parse().ok()?;
        rest = &frac[digits.len()..];
    }
    let offset_min = match rest {
        "Z" | "z" | "" => 0,
        o if o.len() == 6 => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 60 + o[4..6].parse::<i64>().ok()?)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + se - offset_min * 60) * 1000) + ms)
}

/// An error from a payment provider's API (never its secret).
pub(crate) fn provider_error(provider: &str, detail: impl std::fmt::Display) -> Error {
    tracing::warn!(provider, error = %detail, "payment provider call failed");
    Error::new(ErrorCode::Unavailable, format!("{provider} is not reachable right now; please try again"))
}

/// Compares two byte strings in constant time.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn hmac_sha256_hex(key: &[u8], parts: &[&[u8]]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a checkout needs to know about the buyer and where to return.
#[derive(Debug, Clone)]
pub struct CheckoutRequest<'a> {
    pub user_id: &'a str,
    pub product: Product<'a>,
    pub success_url: String,
    pub cancel_url: String,
    /// A provider customer id from an earlier purchase, reused.
    pub customer_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c13_every_accepted_size_and_quality_has_a_nonzero_price() {
        let config = BillingConfig::default();
        config.validate().unwrap();
        for (w, h) in domain::params::SIZES {
            for quality in config.prices.qualities.keys() {
                for n in 1..=4 {
                    let cost = config.price("any-model", &format!("{w}x{h}"), quality, n).unwrap();
                    assert!(cost >= i64::from(n), "{w}x{h} {quality} ×{n} priced {cost}");
                }
            }
        }
        assert!(config.price("m", "4096x4096", "standard", 1).is_err(), "unlisted sizes are refused, not free");
        assert!(config.price("m", "1024x1024", "ultra", 1).is_err());
        let mut overridden = config.clone();
        overridden.prices.models.insert("gpt-image-2".into(), [("1024x1024".to_string(), 8)].into_iter().collect());
        assert_eq!(overridden.price("gpt-image-2", "1024x1024", "hd", 2).unwrap(), 32);
        assert_eq!(overridden.price("gpt-image-2", "512x512", "standard", 1).unwrap(), 1);
        let mut zero = config.clone();
        zero.prices.sizes.insert("512x512".into(), 0);
        assert!(zero.validate().is_err(), "a zero price is a configuration error");
    }

    #[test]
    fn catalog_and_money() {
        let config = BillingConfig::default();
        assert_eq!(config.product("pack:starter").unwrap().credits(), 100);
        assert_eq!(config.product("plan:pro").unwrap().key(), "plan:pro");
        assert!(config.product("pack:nope").is_none());
        assert_eq!(format_money(500, "usd"), "5.00 USD");
        assert_eq!(format_money(500, "jpy"), "500 JPY");
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-10-12T11:58:33.097Z"), Some(1_728_734_313_097));
        assert_eq!(parse_rfc3339("2000-02-29T01:00:00+01:00"), Some(951_782_400_000));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn c15_summaries_never_keep_a_card_number() {
        let s = summary(&[("id", Some("evt_1".into())), ("note", Some("card 4242 4242 4242 4242 thanks".into())), ("none", None)]);
        assert!(!store::contains_card_number(&s), "{s}");
        assert!(s.contains("[redacted]") && s.contains("evt_1") && !s.contains("none"), "{s}");
    }
}
