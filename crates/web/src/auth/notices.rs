//! Service and security notices (C24): one message per event into the
//! outbox, in the recipient's language, from the `mail.<kind>` texts of the
//! locale files. Placeholders are `{name}`, `{link}`, `{provider}`, … .

use domain::Result;
use store::{NewMail, Store, User};

use crate::i18n::I18n;
use crate::AppState;

/// Queues `mail.<kind>` for `to`, rendered in `locale`.
pub async fn send_to(
    state: &AppState,
    user_id: Option<&str>,
    to: &str,
    locale: Option<&str>,
    kind: &str,
    vars: &[(&str, &str)],
) -> Result<()> {
    queue_to(&state.store, user_id, to, locale, kind, vars).await
}

/// [`send_to`] for work that runs without the web state (background delivery).
pub async fn queue_to(
    store: &Store,
    user_id: Option<&str>,
    to: &str,
    locale: Option<&str>,
    kind: &str,
    vars: &[(&str, &str)],
) -> Result<()> {
    let lang = I18n::global().lang(locale.unwrap_or("en"));
    let fill = |text: String| vars.iter().fold(text, |text, (k, v)| text.replace(&format!("{{{k}}}"), v));
    store
        .enqueue_mail(NewMail {
            user_id: user_id.map(str::to_string),
            kind: kind.to_string(),
            to_addr: to.to_string(),
            subject: fill(lang.t(&format!("mail.{kind}.subject"))),
            body_text: fill(lang.t(&format!("mail.{kind}.body"))),
        })
        .await?;
    tracing::info!(user = user_id.unwrap_or("-"), kind, "notice queued");
    Ok(())
}

/// Queues `mail.<kind>` for the account's address, with `{name}` filled.
pub async fn send(state: &AppState, user: &User, kind: &str, vars: &[(&str, &str)]) -> Result<()> {
    let mut all = vec![("name", user.name.as_str())];
    all.extend_from_slice(vars);
    send_to(state, Some(&user.id), &user.email, user.locale.as_deref(), kind, &all).await
}

/// Like [`send`], for notices that must not fail the action they report
/// (the action is done; a lost notice is logged).
pub async fn send_quietly(state: &AppState, user: &User, kind: &str, vars: &[(&str, &str)]) {
    if let Err(e) = send(state, user, kind, vars).await {
        tracing::error!(user = %user.id, kind, error = %e, "notice not queued");
    }
}

/// An absolute link for mails, from the configured public URL, never from
/// the request's Host header (which a client controls).
pub fn link(state: &AppState, path_and_query: &str) -> String {
    format!("{}{path_and_query}", state.config.public_url.trim_end_matches('/'))
}
