//! Configuration, layered: built-in defaults → `atelier.toml` → `ATELIER_*`
//! environment variables → command-line flags. Every key is documented in
//! `atelier.example.toml`; a test keeps that file and these defaults in step.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub storage: blobs::StorageConfig,
    pub limits: LimitsConfig,
    pub tasks: TasksConfig,
    pub engine: EngineConfig,
    pub accounts: AccountsConfig,
    pub auth: AuthConfig,
    pub mail: mailer::MailConfig,
    pub billing: billing::BillingConfig,
    pub imaging: ImagingConfig,
    pub privacy: privacy::PrivacyConfig,
    pub moderation: ModerationConfig,
    pub rate_limits: RateLimitsConfig,
    pub scheduling: SchedulingConfig,
    pub webhooks: WebhooksConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: String,
    pub https: bool,
    pub body_limit_bytes: u64,
    /// Base URL people reach Atelier at (links in mails, OAuth redirect
    /// URIs); empty: the address it listens on.
    pub public_url: String,
    /// Proxies (addresses or CIDR blocks) whose forwarding headers name the
    /// client; from anyone else those headers are ignored.
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub prompt_max_chars: u32,
    pub max_images_per_task: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TasksConfig {
    pub concurrency: u32,
    pub lease_seconds: u32,
    pub heartbeat_seconds: u32,
    pub max_attempts: u32,
    pub sweep_interval_seconds: u32,
    pub unsaved_retention_days: u32,
    pub shutdown_grace_seconds: u32,
}

/// Engines: the built-in one, and remote providers routed per model name.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    pub min_duration_ms: u64,
    /// Key of the pseudonym providers may get for an account (OpenAI's
    /// `user`); empty: none is sent. Better given as
    /// `ATELIER_ENGINE_END_USER_SECRET`.
    pub end_user_secret: String,
    /// `[[engine.providers]]`; none: the built-in engine serves every model.
    pub providers: Vec<engines::ProviderConfig>,
    /// `[engine.routes]`: model name (or `"*"`) → providers with weights.
    pub routes: std::collections::BTreeMap<String, Vec<engines::RouteTarget>>,
}

/// Hand-written so the pseudonym key never reaches a log.
impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("min_duration_ms", &self.min_duration_ms)
            .field("end_user_secret", &engines::Secret::new(self.end_user_secret.clone()))
            .field("providers", &self.providers)
            .field("routes", &self.routes)
            .finish()
    }
}

impl EngineConfig {
    pub fn end_user_secret(&self) -> Option<engines::Secret> {
        (!self.end_user_secret.is_empty()).then(|| engines::Secret::new(self.end_user_secret.clone()))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountsConfig {
    pub min_age: u32,
    pub session_days: u32,
    /// Failed sign-ins per account and hour before it is locked (growing
    /// delays start after 5).
    pub max_failed_sign_ins_per_hour: u32,
    /// Failed sign-ins per network (IPv4 /24, IPv6 /48) and hour.
    pub max_failed_sign_ins_per_network_per_hour: u32,
    pub password_reset_minutes: u32,
    pub email_verification_hours: u32,
    /// The first account to sign up on an instance without accounts becomes
    /// an admin (else: `atelier admin create-user --role admin`).
    pub first_sign_up_is_admin: bool,
}

/// Limits on images people upload, checked from the header before decoding.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagingConfig {
    pub max_upload_bytes: u64,
    pub max_width: u32,
    pub max_height: u32,
    pub max_pixels: u64,
    pub thumbnail_side: u32,
}

impl Default for ImagingConfig {
    fn default() -> Self {
        let d = imaging::DecodeLimits::default();
        ImagingConfig {
            max_upload_bytes: d.max_bytes,
            max_width: d.max_width,
            max_height: d.max_height,
            max_pixels: d.max_pixels,
            thumbnail_side: 384,
        }
    }
}

impl ImagingConfig {
    pub fn decode_limits(&self) -> imaging::DecodeLimits {
        imaging::DecodeLimits {
            max_bytes: self.max_upload_bytes,
            max_width: self.max_width,
            max_height: self.max_height,
            max_pixels: self.max_pixels,
        }
    }
}

/// Content rules (C40).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModerationConfig {
    /// A TOML rules file; empty: the built-in rules.
    pub rules_file: String,
    pub retain_review_prompts: bool,
    /// An OpenAI-compatible moderation API (base URL ending in /v1); empty: off.
    pub external_url: String,
    pub external_api_key: String,
    pub external_model: String,
    pub external_fail_open: bool,
    pub external_timeout_ms: u64,
}

impl Default for ModerationConfig {
    fn default() -> Self {
        ModerationConfig {
            rules_file: String::new(),
            retain_review_prompts: false,
            external_url: String::new(),
            external_api_key: String::new(),
            external_model: "omni-moderation-latest".into(),
            external_fail_open: false,
            external_timeout_ms: 5000,
        }
    }
}

/// Hand-written so the API key never reaches a log through `{:?}`.
impl std::fmt::Debug for ModerationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModerationConfig")
            .field("rules_file", &self.rules_file)
            .field("external_url", &self.external_url)
            .field("external_fail_open", &self.external_fail_open)
            .finish_non_exhaustive()
    }
}

/// Token buckets (C18): each `*_per_*` is a bucket size refilled evenly
/// over its class's window; 0 turns that bucket off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    pub enabled: bool,
    pub sign_in_per_ip: u32,
    pub sign_in_window_seconds: u32,
    pub sign_up_per_ip: u32,
    pub sign_up_window_seconds: u32,
    pub submit_per_ip: u32,
    pub submit_per_account: u32,
    pub submit_per_key: u32,
    pub submit_window_seconds: u32,
    pub api_per_ip: u32,
    pub api_per_account: u32,
    pub api_per_key: u32,
    pub api_window_seconds: u32,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        let d = web::RateLimits::default();
        RateLimitsConfig {
            enabled: d.enabled,
            sign_in_per_ip: d.sign_in.per_ip,
            sign_in_window_seconds: d.sign_in.window_secs,
            sign_up_per_ip: d.sign_up.per_ip,
            sign_up_window_seconds: d.sign_up.window_secs,
            submit_per_ip: d.submit.per_ip,
            submit_per_account: d.submit.per_account,
            submit_per_key: d.submit.per_key,
            submit_window_seconds: d.submit.window_secs,
            api_per_ip: d.api.per_ip,
            api_per_account: d.api.per_account,
            api_per_key: d.api.per_key,
            api_window_seconds: d.api.window_secs,
        }
    }
}

impl RateLimitsConfig {
    pub fn web(&self) -> web::RateLimits {
        let limit =
            |per_ip, per_account, per_key, window_secs: u32| web::Limit { per_ip, per_account, per_key, window_secs: window_secs.max(1) };
        web::RateLimits {
            enabled: self.enabled,
            sign_in: limit(self.sign_in_per_ip, 0, 0, self.sign_in_window_seconds),
            sign_up: limit(self.sign_up_per_ip, 0, 0, self.sign_up_window_seconds),
            submit: limit(self.submit_per_ip, self.submit_per_account, self.submit_per_key, self.submit_window_seconds),
            api: limit(self.api_per_ip, self.api_per_account, self.api_per_key, self.api_window_seconds),
        }
    }
}

/// Completion webhooks: where they may be sent and how they are retried.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Development only: endpoints on loopback addresses, over plain http too.
    pub dev_allow_loopback: bool,
    /// Endpoints on private, link-local and other internal addresses (https).
    pub allow_private_targets: bool,
    /// Failed attempts in a row after which an endpoint is disabled.
    pub max_consecutive_failures: u32,
    /// How long an event is retried (with exponential backoff).
    pub retry_hours: u32,
    pub timeout_seconds: u32,
    pub max_endpoints_per_account: u32,
    /// How often due deliveries are looked for.
    pub deliver_interval_seconds: u32,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        let d = web::hooks::HookConfig::default();
        WebhooksConfig {
            dev_allow_loopback: d.allow_loopback,
            allow_private_targets: d.allow_private,
            max_consecutive_failures: d.max_failures as u32,
            retry_hours: (d.retry_window_ms / 3_600_000) as u32,
            timeout_seconds: (d.timeout_ms / 1000) as u32,
            max_endpoints_per_account: d.max_endpoints as u32,
            deliver_interval_seconds: 5,
        }
    }
}

impl WebhooksConfig {
    pub fn web(&self) -> web::hooks::HookConfig {
        web::hooks::HookConfig {
            allow_loopback: self.dev_allow_loopback,
            allow_private: self.allow_private_targets,
            max_failures: i64::from(self.max_consecutive_failures.max(1)),
            retry_window_ms: i64::from(self.retry_hours) * 3_600_000,
            timeout_ms: u64::from(self.timeout_seconds.max(1)) * 1000,
            max_endpoints: self.max_endpoints_per_account as usize,
            ..web::hooks::HookConfig::default()
        }
    }
}

/// How workers share the queue between accounts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulingConfig {
    /// Tasks one account may have running at once; 0: no limit.
    pub max_running_per_account: u32,
}

impl Default for SchedulingConfig {
    fn default() -> Self {
        SchedulingConfig { max_running_per_account: 4 }
    }
}

impl SchedulingConfig {
    pub fn store(&self) -> store::Scheduling {
        store::Scheduling { max_running_per_account: i64::from(self.max_running_per_account) }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub json: bool,
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            storage: blobs::StorageConfig::default(),
            limits: LimitsConfig::default(),
            tasks: TasksConfig::default(),
            engine: EngineConfig::default(),
            accounts: AccountsConfig::default(),
            auth: AuthConfig::default(),
            mail: mailer::MailConfig::default(),
            billing: billing::BillingConfig::default(),
            imaging: ImagingConfig::default(),
            privacy: privacy::PrivacyConfig::default(),
            moderation: ModerationConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            scheduling: SchedulingConfig::default(),
            webhooks: WebhooksConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8080".into(),
            https: false,
            body_limit_bytes: 1 << 20,
            public_url: String::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig { url: String::new(), max_connections: 10 }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = domain::params::Limits::default();
        LimitsConfig { prompt_max_chars: d.prompt_max_chars as u32, max_images_per_task: d.max_n }
    }
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            concurrency: 2,
            lease_seconds: 30,
            heartbeat_seconds: 5,
            max_attempts: 3,
            sweep_interval_seconds: 15,
            unsaved_retention_days: 30,
            shutdown_grace_seconds: 30,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { min_duration_ms: 0, end_user_secret: String::new(), providers: Vec::new(), routes: Default::default() }
    }
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            min_age: domain::account::MIN_AGE,
            session_days: 30,
            max_failed_sign_ins_per_hour: 100,
            max_failed_sign_ins_per_network_per_hour: 500,
            password_reset_minutes: 30,
            email_verification_hours: 48,
            first_sign_up_is_admin: false,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { json: false, level: "info".into() }
    }
}

/// External sign-in providers. A provider is on when its client id is set.
/// Secrets are better given as environment variables, e.g.
/// `ATELIER_AUTH_GOOGLE_CLIENT_SECRET`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub google_client_id: String,
    pub google_client_secret: String,
    pub github_client_id: String,
    pub github_client_secret: String,
    pub github_authorize_url: String,
    pub github_token_url: String,
    pub github_api_url: String,
    /// Any OpenID Connect provider, by issuer (`[[auth.oidc]]` tables).
    pub oidc: Vec<OidcProviderConfig>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// URL slug: the callback is `<public_url>/auth/<name>/callback`.
    pub name: String,
    /// Button text ("Continue with …"); the name when empty.
    #[serde(default)]
    pub label: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            google_client_id: String::new(),
            google_client_secret: String::new(),
            github_client_id: String::new(),
            github_client_secret: String::new(),
            github_authorize_url: "https://github.com/login/oauth/authorize".into(),
            github_token_url: "https://github.com/login/oauth/access_token".into(),
            github_api_url: "https://api.github.com".into(),
            oidc: Vec::new(),
        }
    }
}

/// Hand-written so client secrets never reach a log through `{:?}`.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.oidc.iter().map(|o| o.name.as_str()).collect();
        f.debug_struct("AuthConfig")
            .field("google_client_id", &self.google_client_id)
            .field("github_client_id", &self.github_client_id)
            .field("github_api_url", &self.github_api_url)
            .field("oidc", &names)
            .finish_non_exhaustive()
    }
}

impl AuthConfig {
    /// The configured providers, checked: a client id needs its secret,
    /// names are URL slugs and unique.
    pub fn providers(&self) -> Result<Vec<web::Provider>, String> {
        let both = |what: &str, id: &str, secret: &str| -> Result<bool, String> {
            match (id.is_empty(), secret.is_empty()) {
                (true, true) => Ok(false),
                (false, false) => Ok(true),
                _ => Err(format!("auth: {what} needs both a client id and a client secret")),
            }
        };
        let mut out = Vec::new();
        if both("google", &self.google_client_id, &self.google_client_secret)? {
            out.push(web::Provider::google(&self.google_client_id, &self.google_client_secret));
        }
        if both("github", &self.github_client_id, &self.github_client_secret)? {
            out.push(web::Provider::github(
                &self.github_client_id,
                &self.github_client_secret,
                &self.github_authorize_url,
                &self.github_token_url,
                &self.github_api_url,
            ));
        }
        for o in &self.oidc {
            if !web::auth::providers::valid_name(&o.name) || matches!(o.name.as_str(), "google" | "github" | "link") {
                return Err(format!("auth.oidc: name {:?} must be 1-32 of a-z, 0-9 and -, and not google, github or link", o.name));
            }
            if out.iter().any(|p: &web::Provider| p.name == o.name) {
                return Err(format!("auth.oidc: name {:?} is used twice", o.name));
            }
            if !(o.issuer.starts_with("https://") || o.issuer.starts_with("http://")) {
                return Err(format!("auth.oidc {}: issuer must be an http(s) URL", o.name));
            }
            if !both(&format!("oidc {}", o.name), &o.client_id, &o.client_secret)? {
                return Err(format!("auth.oidc {}: client_id and client_secret are required", o.name));
            }
            let label = if o.label.is_empty() { &o.name } else { &o.label };
            out.push(web::Provider::oidc(&o.name, label, &o.issuer, &o.client_id, &o.client_secret));
        }
        Ok(out)
    }
}

impl Config {
    /// Sign-in settings for the web layer.
    pub fn web_auth(&self) -> Result<web::AuthConfig, String> {
        let a = &self.accounts;
        if !(1..=30).contains(&a.password_reset_minutes) {
            return Err("accounts.password_reset_minutes must be between 1 and 30".into());
        }
        let mut auth = web::AuthConfig { providers: self.auth.providers()?, ..web::AuthConfig::default() };
        auth.throttle.account_per_hour = a.max_failed_sign_ins_per_hour.max(1);
        auth.throttle.ip_per_hour = a.max_failed_sign_ins_per_network_per_hour.max(1);
        auth.password_reset_ms = i64::from(a.password_reset_minutes) * 60_000;
        auth.email_verification_ms = i64::from(a.email_verification_hours.max(1)) * 3_600_000;
        Ok(auth)
    }

    /// Content rules from `moderation.rules_file` (or the built-in ones) and
    /// the external endpoint, checked at start.
    pub fn web_moderation(&self) -> Result<web::ModerationConfig, String> {
        let m = &self.moderation;
        let rules = if m.rules_file.is_empty() {
            web::built_in_rules()
        } else {
            let text = std::fs::read_to_string(&m.rules_file).map_err(|e| format!("moderation.rules_file {}: {e}", m.rules_file))?;
            web::parse_rules(&text).map_err(|e| format!("moderation.rules_file {}: {}", m.rules_file, e.message))?
        };
        let external = match m.external_url.trim() {
            "" => None,
            url if url.starts_with("https://") || url.starts_with("http://") => Some(web::ExternalModeration {
                url: url.to_string(),
                api_key: Some(m.external_api_key.clone()).filter(|k| !k.is_empty()),
                model: m.external_model.clone(),
                fail_open: m.external_fail_open,
                timeout: std::time::Duration::from_millis(m.external_timeout_ms.max(100)),
            }),
            _ => return Err("moderation.external_url must be an http(s) URL".into()),
        };
        Ok(web::ModerationConfig { rules: std::sync::Arc::new(rules), external, retain_review_prompts: m.retain_review_prompts })
    }

    pub fn trusted_proxies(&self) -> Result<Vec<web::Cidr>, String> {
        self.server.trusted_proxies.iter().map(|p| web::Cidr::parse(p).map_err(|e| format!("server.trusted_proxies: {e}"))).collect()
    }

    /// The base URL in mails and OAuth redirects: `server.public_url`, or
    /// the address the server listens on.
    pub fn public_url(&self, listening: std::net::SocketAddr) -> String {
        match self.server.public_url.trim_end_matches('/') {
            "" => format!("http://{listening}"),
            url => url.to_string(),
        }
    }
}

/// Overrides given on the command line (the last layer).
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub data_dir: Option<PathBuf>,
    pub bind: Option<String>,
    pub database_url: Option<String>,
    pub json_logs: bool,
}

impl Config {
    /// Builds the layered configuration. `file` is read if given (it must
    /// exist then) or if `atelier.toml` exists in the working directory.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>, flags: &Flags) -> Result<Config, String> {
        let mut tree = toml::Value::try_from(Config::default()).map_err(|e| e.to_string())?;
        let default_file = Path::new("atelier.toml");
        let path = file.or_else(|| default_file.exists().then_some(default_file));
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let layer: toml::Value = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            merge(&mut tree, layer);
        }
        for (name, value) in env {
            apply_env(&mut tree, &name, &value)?;
        }
        let mut config: Config = tree.try_into().map_err(|e: toml::de::Error| format!("configuration: {e}"))?;
        if let Some(d) = &flags.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(b) = &flags.bind {
            config.server.bind = b.clone();
        }
        if let Some(u) = &flags.database_url {
            config.database.url = u.clone();
        }
        config.log.json |= flags.json_logs;
        Ok(config)
    }

    /// The database URL; SQLite inside the data dir unless one is given.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("atelier.db").display())
        } else {
            self.database.url.clone()
        }
    }
}

fn merge(base: &mut toml::Value, layer: toml::Value) {
    match (base, layer) {
        (toml::Value::Table(base), toml::Value::Table(layer)) => {
            for (k, v) in layer {
                match base.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, layer) => *base = layer,
    }
}

/// `ATELIER_<SECTION>_<KEY>` (or `ATELIER_DATA_DIR` for top-level keys), and
/// the conventional `DATABASE_URL`. The value is parsed as the key's type.
fn apply_env(tree: &mut toml::Value, name: &str, value: &str) -> Result<(), String> {
    if name == "DATABASE_URL" {
        return apply_env(tree, "ATELIER_DATABASE_URL", value);
    }
    let Some(rest) = name.strip_prefix("ATELIER_") else { return Ok(()) };
    let Some(root) = tree.as_table_mut() else { return Ok(()) };
    for (key, slot) in root.iter_mut() {
        let target = match slot {
            toml::Value::Table(section) => {
                let prefix = format!("{}_", key.to_ascii_uppercase());
                let Some(field) = rest.strip_prefix(&prefix) else { continue };
                section.iter_mut().find(|(k, _)| k.to_ascii_uppercase() == field).map(|(_, v)| v)
            }
            leaf if key.to_ascii_uppercase() == rest => Some(leaf),
            _ => None,
        };
        if let Some(target) = target {
            *target = parse_like(target, value).map_err(|e| format!("{name}: {e}"))?;
            return Ok(());
        }
    }
    Ok(())
}

fn parse_like(current: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    Ok(match current {
        toml::Value::Integer(_) => toml::Value::Integer(raw.trim().parse().map_err(|_| format!("expected a whole number, got {raw:?}"))?),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return Err(format!("expected true or false, got {raw:?}")),
        }),
        _ => toml::Value::String(raw.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("atelier.toml");
        std::fs::write(&file, "data_dir = \"/srv/a\"\n[server]\nbind = \"0.0.0.0:9000\"\n[tasks]\nconcurrency = 8\nlease_seconds = 60\n")
            .unwrap();
        let flags = Flags { bind: Some("127.0.0.1:7000".into()), ..Flags::default() };
        let config = Config::load(
            Some(&file),
            env(&[("ATELIER_TASKS_CONCURRENCY", "4"), ("ATELIER_LOG_JSON", "true"), ("DATABASE_URL", "postgres://x/y"), ("HOME", "/root")]),
            &flags,
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/srv/a"));
        assert_eq!(config.tasks.lease_seconds, 60, "file over default");
        assert_eq!(config.tasks.concurrency, 4, "env over file");
        assert_eq!(config.server.bind, "127.0.0.1:7000", "flag over file");
        assert!(config.log.json);
        assert_eq!(config.database_url(), "postgres://x/y");
        assert_eq!(config.tasks.heartbeat_seconds, 5, "untouched default");
    }

    #[test]
    fn bad_values_are_reported_not_ignored() {
        assert!(Config::load(None, env(&[("ATELIER_TASKS_CONCURRENCY", "many")]), &Flags::default())
            .unwrap_err()
            .contains("ATELIER_TASKS_CONCURRENCY"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.toml");
        std::fs::write(&file, "[server]\nbindd = \"typo\"\n").unwrap();
        assert!(Config::load(Some(&file), env(&[]), &Flags::default()).unwrap_err().contains("bindd"));
    }

    #[test]
    fn example_file_documents_every_key_with_its_default() {
        let example: toml::Value = toml::from_str(include_str!("../../../atelier.example.toml")).unwrap();
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        assert_eq!(example, defaults, "atelier.example.toml must list every key with its default value");
    }

    #[test]
    fn sign_in_providers_come_from_the_auth_section_and_are_checked() {
        let config = Config::load(
            None,
            env(&[("ATELIER_AUTH_GITHUB_CLIENT_ID", "gh"), ("ATELIER_AUTH_GITHUB_CLIENT_SECRET", "s3cret")]),
            &Flags::default(),
        )
        .unwrap();
        let providers = config.auth.providers().unwrap();
        assert_eq!(providers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["github"]);
        assert!(!format!("{config:?}").contains("s3cret"), "secrets stay out of logs");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("atelier.toml");
        std::fs::write(&file, "[[auth.oidc]]\nname = \"corp\"\nlabel = \"Corp SSO\"\nissuer = \"https://sso.example.com\"\nclient_id = \"a\"\nclient_secret = \"b\"\n").unwrap();
        let config = Config::load(Some(&file), env(&[]), &Flags::default()).unwrap();
        let web = config.web_auth().unwrap();
        assert_eq!((web.providers[0].key(), web.providers[0].label.as_str()), ("oidc:corp".to_string(), "Corp SSO"));
        assert_eq!((web.throttle.account_per_hour, web.password_reset_ms), (100, 30 * 60_000));
        std::fs::write(&file, "[[auth.oidc]]\nname = \"google\"\nissuer = \"https://x\"\nclient_id = \"a\"\nclient_secret = \"b\"\n")
            .unwrap();
        assert!(Config::load(Some(&file), env(&[]), &Flags::default()).unwrap().web_auth().is_err());
        let half = Config::load(None, env(&[("ATELIER_AUTH_GOOGLE_CLIENT_ID", "id-only")]), &Flags::default()).unwrap();
        assert!(half.web_auth().unwrap_err().contains("google"));
        let long = Config::load(None, env(&[("ATELIER_ACCOUNTS_PASSWORD_RESET_MINUTES", "60")]), &Flags::default()).unwrap();
        assert!(long.web_auth().is_err(), "reset links last at most 30 minutes");
        let at: std::net::SocketAddr = "127.0.0.1:4321".parse().unwrap();
        assert_eq!(config.public_url(at), "http://127.0.0.1:4321");
        let set = Config::load(None, env(&[("ATELIER_SERVER_PUBLIC_URL", "https://atelier.example.com/")]), &Flags::default()).unwrap();
        assert_eq!(set.public_url(at), "https://atelier.example.com");
    }

    #[test]
    fn c40_content_rules_proxies_and_limits_come_from_config_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.toml");
        std::fs::write(&rules, "[[category]]\nname = \"local\"\naction = \"block\"\nterms = [\"zorblax\"]\n").unwrap();
        let file = dir.path().join("atelier.toml");
        let text = format!(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n[moderation]\nrules_file = {:?}\nexternal_url = \"http://127.0.0.1:9/v1\"\nexternal_api_key = \"sk-secret\"\n[rate_limits]\nsign_in_per_ip = 3\n",
            rules.display().to_string()
        );
        std::fs::write(&file, text).unwrap();
        let config = Config::load(Some(&file), env(&[]), &Flags::default()).unwrap();
        let moderation = config.web_moderation().unwrap();
        assert_eq!(moderation.rules.check("a zorblax").unwrap().category, "local");
        assert!(moderation.rules.check("gore").is_none(), "the file replaces the built-in rules");
        assert!(!moderation.external.as_ref().unwrap().fail_open, "fail-closed by default");
        assert!(!format!("{config:?} {moderation:?}").contains("sk-secret"), "the key stays out of logs");
        let proxies = config.trusted_proxies().unwrap();
        assert!(proxies[0].contains("10.9.8.7".parse().unwrap()) && proxies[1].contains("::1".parse().unwrap()));
        assert_eq!((config.rate_limits.web().sign_in.per_ip, config.rate_limits.web().sign_in.window_secs), (3, 60));
        assert_eq!(Config::default().web_moderation().unwrap().rules.check("gore").unwrap().category, "graphic_violence");

        std::fs::write(&rules, "[[category]]\nname = \"bad\"\naction = \"block\"\npatterns = [\"(\"]\n").unwrap();
        assert!(config.web_moderation().unwrap_err().contains("rules.toml"));
        std::fs::write(&file, "[server]\ntrusted_proxies = [\"proxy.internal\"]\n").unwrap();
        assert!(Config::load(Some(&file), env(&[]), &Flags::default()).unwrap().trusted_proxies().is_err());
    }

    #[test]
    fn sqlite_in_the_data_dir_by_default() {
        let config = Config::load(None, env(&[("ATELIER_DATA_DIR", "/tmp/at")]), &Flags::default()).unwrap();
        assert_eq!(config.database_url(), "sqlite:///tmp/at/atelier.db");
    }

    #[test]
    fn c12_providers_and_routes_load_and_build_a_router_with_secrets_kept_out_of_logs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("atelier.toml");
        std::fs::write(
            &file,
            r#"
[[engine.providers]]
name = "openai"
kind = "openai"
model = "gpt-image-1"
api_key = "sk-file-secret"
max_concurrency = 2
timeout_ms = 90000
costs = [{ size = "1024x1024", quality = "high", credits = 17 }, { credits = 4 }]

[[engine.providers]]
name = "replicate"
kind = "replicate"
model = "black-forest-labs/flux-schnell"
api_key_env = "REPLICATE_API_TOKEN"
input = { prompt = "{{prompt}}", seed = "{{seed}}", aspect_ratio = "1:1" }

[[engine.providers]]
name = "builtin"
kind = "procedural"

[engine.routes]
"gpt-image-1" = [{ provider = "openai", weight = 3 }, { provider = "replicate" }]
"*" = [{ provider = "builtin" }]
"#,
        )
        .unwrap();
        let config = Config::load(Some(&file), env(&[("ATELIER_ENGINE_END_USER_SECRET", "tag-secret")]), &Flags::default()).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk-file-secret") && !shown.contains("tag-secret"), "{shown}");
        assert!(config.engine.end_user_secret().is_some());
        let builtin: std::sync::Arc<dyn engines::Engine> = std::sync::Arc::new(engines::ProceduralEngine);
        let env_var = |k: &str| (k == "REPLICATE_API_TOKEN").then(|| "r8-env".to_string());
        let router = engines::build_router(&config.engine.providers, &config.engine.routes, builtin, &env_var).unwrap();
        assert_eq!(router.route("gpt-image-1"), ["openai", "replicate"]);
        assert_eq!(router.route("dall-e-3"), ["builtin"]);
        assert_eq!(router.models(), ["gpt-image-1"]);
        assert_eq!(router.cost("openai", "gpt-image-1", "1024x1024", "high"), Some(17));
        assert_eq!(router.cost("openai", "gpt-image-1", "1536x1024", "low"), Some(4));
        assert_eq!(router.cost("replicate", "gpt-image-1", "1024x1024", "high"), None);
        assert_eq!(router.health().iter().map(|h| h.state).collect::<Vec<_>>(), ["closed"; 3]);
    }
}
