//! Delivers the mail outbox: over SMTP (lettre) when a relay is configured,
//! otherwise as RFC 5322 `.eml` files in the data directory.
//!
//! Credentials and message bodies are never logged: log lines carry only the
//! outbox id, the kind of message and the outcome.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use domain::{Error, ErrorCode, Result};
use lettre::message::header::{ContentType, HeaderName, HeaderValue, MIME_VERSION_1_0};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use store::{Mail, Store};

/// Default `From` when none is configured.
pub const DEFAULT_FROM: &str = "Atelier <no-reply@localhost>";
/// Default SMTP submission port.
pub const DEFAULT_SMTP_PORT: u16 = 587;
/// Attempts after which a message is given up (`status = failed`).
pub const MAX_ATTEMPTS: i64 = 8;
/// First retry delay; doubled on every further failed attempt.
pub const BASE_BACKOFF_MS: i64 = 60_000;
/// Longest retry delay.
pub const MAX_BACKOFF_MS: i64 = 6 * 60 * 60 * 1000;
/// Messages fetched per store query in [`Mailer::deliver_due`].
const BATCH: i64 = 100;
/// SMTP command (and connect) timeout.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The `[mail]` section of the configuration. Every field has a default, so
/// an empty section (or none) means "write `.eml` files, no SMTP".
#[derive(Clone, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    /// `From` of every message, e.g. `Atelier <no-reply@example.com>`.
    pub from: String,
    /// SMTP relay host; empty = no SMTP, messages are written as files.
    pub smtp_host: String,
    pub smtp_port: u16,
    /// Empty = no authentication.
    pub smtp_username: String,
    pub smtp_password: String,
    /// `starttls` (default), `tls` (implicit TLS, port 465) or `none`
    /// (plain text; trusted local relays only).
    pub smtp_tls: String,
    /// How often the outbox is delivered, in seconds.
    pub send_interval_seconds: u32,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            from: DEFAULT_FROM.to_string(),
            smtp_host: String::new(),
            smtp_port: DEFAULT_SMTP_PORT,
            smtp_username: String::new(),
            smtp_password: String::new(),
            smtp_tls: "starttls".to_string(),
            send_interval_seconds: 10,
        }
    }
}

/// Hand-written so the password can never reach a log through `{:?}`.
impl fmt::Debug for MailConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailConfig")
            .field("from", &self.from)
            .field("smtp_host", &self.smtp_host)
            .field("smtp_port", &self.smtp_port)
            .field("smtp_username", &self.smtp_username)
            .field("smtp_password", &if self.smtp_password.is_empty() { "" } else { "<redacted>" })
            .field("smtp_tls", &self.smtp_tls)
            .field("send_interval_seconds", &self.send_interval_seconds)
            .finish()
    }
}

pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// Directory that receives one `{created_at}-{id}.eml` file per message.
    Dir(PathBuf),
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Smtp(_) => f.write_str("Smtp"),
            Transport::Dir(dir) => f.debug_tuple("Dir").field(dir).finish(),
        }
    }
}

#[derive(Debug)]
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
}

/// Why one delivery failed; decides retry and whether the round goes on.
enum Failure {
    /// The message itself is unusable (bad address): never retried.
    Invalid(Error),
    /// The server answered with an error: retried with backoff.
    Rejected(Error),
    /// The server could not be reached: retried with backoff, and the rest
    /// of the round waits for the next one instead of burning attempts.
    Unreachable(Error),
}

impl Failure {
    fn into_error(self) -> Error {
        match self {
            Failure::Invalid(e) | Failure::Rejected(e) | Failure::Unreachable(e) => e,
        }
    }
}

/// Delay before the next attempt after `attempts` earlier failed attempts
/// (0 for the first failure): 1 min, 2 min, 4 min, … capped at 6 h.
pub fn backoff_ms(attempts: i64) -> i64 {
    let shift = attempts.clamp(0, 30) as u32;
    BASE_BACKOFF_MS.saturating_mul(1i64 << shift).min(MAX_BACKOFF_MS)
}

impl Mailer {
    /// SMTP when `cfg.smtp_host` is set, otherwise `.eml` files in `mail_dir`.
    /// Fails with `invalid_input` on a bad `from` or `smtp_tls`.
    pub fn new(cfg: &MailConfig, mail_dir: PathBuf) -> Result<Mailer> {
        let from_str = if cfg.from.trim().is_empty() { DEFAULT_FROM } else { cfg.from.trim() };
        let from: Mailbox = from_str.parse().map_err(|e| Error::invalid(format!("mail.from is not a valid address: {e}")))?;

        let host = cfg.smtp_host.trim();
        let transport = if host.is_empty() {
            Transport::Dir(mail_dir)
        } else {
            let port = if cfg.smtp_port == 0 { DEFAULT_SMTP_PORT } else { cfg.smtp_port };
            let tls = match cfg.smtp_tls.trim().to_ascii_lowercase().as_str() {
                "" | "starttls" => Tls::Required(tls_parameters(host)?),
                "tls" => Tls::Wrapper(tls_parameters(host)?),
                "none" => Tls::None,
                _ => {
                    return Err(Error::invalid(format!("mail.smtp_tls must be \"starttls\", \"tls\" or \"none\", not {:?}", cfg.smtp_tls)))
                }
            };
            let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).port(port).tls(tls).timeout(Some(SMTP_TIMEOUT));
            if !cfg.smtp_username.is_empty() {
                builder = builder.credentials(Credentials::new(cfg.smtp_username.clone(), cfg.smtp_password.clone()));
            }
            Transport::Smtp(builder.build())
        };
        Ok(Mailer { transport, from })
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Delivers one message. Bad recipient → `invalid_input`; transport
    /// failure → `unavailable`.
    pub async fn deliver(&self, mail: &Mail) -> Result<()> {
        self.try_deliver(mail).await.map_err(Failure::into_error)
    }

    async fn try_deliver(&self, mail: &Mail) -> std::result::Result<(), Failure> {
        let message = self.build_message(mail).map_err(Failure::Invalid)?;
        match &self.transport {
            Transport::Smtp(smtp) => smtp.send(message).await.map(|_| ()).map_err(|e| {
                let err = Error::new(ErrorCode::Unavailable, format!("SMTP delivery failed: {e}"));
                if e.is_transient() || e.is_permanent() {
                    Failure::Rejected(err)
                } else {
                    Failure::Unreachable(err)
                }
            }),
            Transport::Dir(dir) => {
                let name = eml_file_name(mail).map_err(Failure::Invalid)?;
                write_atomically(dir.clone(), name, message.formatted()).await.map_err(Failure::Unreachable)
            }
        }
    }

    fn build_message(&self, mail: &Mail) -> Result<Message> {
        let to: Mailbox = mail.to_addr.trim().parse().map_err(|_| Error::invalid("invalid recipient address"))?;
        // Stable per outbox row, so a retried message keeps its Message-ID.
        let message_id = format!("<{}@{}>", mail.id, self.from.email.domain());
        let mut builder = Message::builder();
        // Marketing mail: one-click unsubscribe (RFC 8058), which mail
        // clients show as an "Unsubscribe" button that POSTs to the link.
        if let Some(url) = mail.unsubscribe_url.as_deref() {
            if url.contains(['\r', '\n', '<', '>']) {
                return Err(Error::invalid("unsubscribe link is not usable in a header"));
            }
            builder = builder
                .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("List-Unsubscribe"), format!("<{url}>")))
                .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("List-Unsubscribe-Post"), "List-Unsubscribe=One-Click".into()));
        }
        builder
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .message_id(Some(message_id))
            .date_now()
            .header(MIME_VERSION_1_0)
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body_text.clone())
            .map_err(|e| Error::invalid(format!("cannot build message: {e}")))
    }

    /// Delivers every due pending message. Sent → `sent`; bad address →
    /// `failed` at once; any other failure → retried with exponential
    /// backoff, `failed` after [`MAX_ATTEMPTS`]. When the SMTP server cannot
    /// be reached the round stops early (the rest stays due). Returns the
    /// number of messages sent; errors only when the store fails.
    pub async fn deliver_due(&self, store: &Store) -> Result<usize> {
        let mut sent = 0usize;
        let mut seen = std::collections::HashSet::new();
        loop {
            let batch = store.due_mail(store::now_ms(), BATCH).await?;
            let full = batch.len() as i64 == BATCH;
            let mut progressed = false;
            for mail in batch {
                if !seen.insert(mail.id.clone()) {
                    continue;
                }
                progressed = true;
                match self.try_deliver(&mail).await {
                    Ok(()) => {
                        store.mark_mail_sent(&mail.id).await?;
                        tracing::info!(id = %mail.id, kind = %mail.kind, outcome = "sent", "mail delivered");
                        sent += 1;
                    }
                    Err(Failure::Invalid(e)) => {
                        store.mark_mail_failed(&mail.id, &e.message, None).await?;
                        tracing::warn!(id = %mail.id, kind = %mail.kind, outcome = "failed", code = %e.code, "mail rejected, not retried");
                    }
                    Err(failure) => {
                        let unreachable = matches!(failure, Failure::Unreachable(_));
                        let e = failure.into_error();
                        let attempts = mail.attempts + 1;
                        let next = (attempts < MAX_ATTEMPTS).then(|| store::now_ms() + backoff_ms(mail.attempts));
                        store.mark_mail_failed(&mail.id, &e.message, next).await?;
                        let outcome = if next.is_some() { "retry" } else { "failed" };
                        tracing::warn!(id = %mail.id, kind = %mail.kind, outcome, attempts, code = %e.code, "mail delivery failed");
                        if unreachable {
                            return Ok(sent);
                        }
                    }
                }
            }
            if !full || !progressed {
                return Ok(sent);
            }
        }
    }
}

fn tls_parameters(host: &str) -> Result<TlsParameters> {
    TlsParameters::new(host.to_string()).map_err(|e| Error::invalid(format!("mail.smtp_host cannot be used for TLS: {e}")))
}

/// `{created_at}-{id}.eml`; refuses ids that could escape the directory.
fn eml_file_name(mail: &Mail) -> Result<String> {
    if mail.id.is_empty() || !mail.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(Error::invalid("outbox id is not usable as a file name"));
    }
    Ok(format!("{}-{}.eml", mail.created_at, mail.id))
}

/// Writes `dir/name` via a hidden temp file and a rename, so readers never
/// see half a message. Files are private to the owner (mail may carry
/// account links).
async fn write_atomically(dir: PathBuf, name: String, bytes: Vec<u8>) -> Result<()> {
    tokio::task::spawn_blocking(move || write_atomically_blocking(&dir, &name, &bytes))
        .await
        .map_err(|e| Error::internal(format!("mail writer task failed: {e}")))?
        .map_err(|e| Error::new(ErrorCode::Unavailable, format!("cannot write mail file: {e}")))
}

fn write_atomically_blocking(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, dir.join(name))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Delivers due mail now and then every `interval` until `shutdown` becomes
/// true (or its sender is dropped). Errors are logged, never raised.
pub async fn run(mailer: Arc<Mailer>, store: Store, mut shutdown: tokio::sync::watch::Receiver<bool>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        tokio::select! {
            _ = ticker.tick() => {
                match mailer.deliver_due(&store).await {
                    Ok(0) => {}
                    Ok(sent) => tracing::debug!(sent, "mail round done"),
                    Err(e) => tracing::error!(code = %e.code, error = %e.message, "mail round failed"),
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    tracing::debug!("mailer stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_minute_and_caps_at_six_hours() {
        assert_eq!(backoff_ms(0), 60_000);
        assert_eq!(backoff_ms(1), 120_000);
        assert_eq!(backoff_ms(3), 480_000);
        assert_eq!(backoff_ms(9), MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(1000), MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(-1), 60_000);
    }

    #[test]
    fn config_defaults_and_debug_hides_the_password() {
        let cfg = MailConfig { smtp_password: "hunter2".into(), ..MailConfig::default() };
        assert_eq!(cfg.from, DEFAULT_FROM);
        assert_eq!(cfg.smtp_port, 587);
        assert_eq!(cfg.smtp_tls, "starttls");
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn new_picks_the_transport_and_rejects_bad_settings() {
        let dir = PathBuf::from("/tmp/unused");
        let m = Mailer::new(&MailConfig::default(), dir.clone()).unwrap();
        assert!(matches!(m.transport(), Transport::Dir(d) if *d == dir));
        for tls in ["starttls", "tls", "none", ""] {
            let cfg = MailConfig { smtp_host: "smtp.example.com".into(), smtp_tls: tls.into(), ..MailConfig::default() };
            assert!(matches!(Mailer::new(&cfg, dir.clone()).unwrap().transport(), Transport::Smtp(_)), "{tls}");
        }
        let cfg = MailConfig { smtp_host: "smtp.example.com".into(), smtp_tls: "ssl3".into(), ..MailConfig::default() };
        assert_eq!(Mailer::new(&cfg, dir.clone()).unwrap_err().code, ErrorCode::InvalidInput);
        let cfg = MailConfig { from: "not an address".into(), ..MailConfig::default() };
        assert_eq!(Mailer::new(&cfg, dir).unwrap_err().code, ErrorCode::InvalidInput);
    }
}
