//! Credits in the web app: the price of a request at submit, the Billing
//! page (balance, ledger history, packs and plans, checkout, subscription),
//! Admin › Credits (adjustments with a reason, audited; accounts in debt),
//! and the JSON API for the same.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use billing::creem::CreemClient;
use billing::stripe::StripeClient;
use billing::{format_money, BillingConfig, CheckoutRequest, Product};
use domain::Error;
use serde::Deserialize;
use serde_json::json;
use store::{Balance, LedgerEntry, NewMail, Page, User};

use crate::admin::{staff, AdminUser};
use crate::api::{checked_id, JsonBody, PageQuery, QueryParams};
use crate::context::{ApiUser, Ctx};
use crate::error::ApiResult;
use crate::i18n::{I18n, Lang};
use crate::pages::{check_csrf, error_box, esc, page, signed_in, status_of, FormBody};
use crate::AppState;

fn config(state: &AppState) -> &BillingConfig {
    &state.config.billing
}

/// The credits a generate request costs (0 with billing off). Also gives a
/// first-seen account its sign-up credits and expires its overdue lots, so
/// the hold that follows sees the true balance.
pub async fn price_of(state: &AppState, user: &User, size: &str, n: u32) -> Result<i64, Error> {
    price_with(state, user, &state.config.model, size, "standard", n).await
}

/// [`price_of`] for a chosen model and price-list quality.
pub async fn price_with(state: &AppState, user: &User, model: &str, size: &str, quality: &str, n: u32) -> Result<i64, Error> {
    let config = config(state);
    if !config.enabled {
        return Ok(0);
    }
    let cost = config.price(model, size, quality, n)?;
    billing::ensure_signup_grant(&state.store, config, user).await?;
    state.store.expire_credits(Some(&user.id)).await?;
    Ok(cost)
}

/// After a charged submit: the low-balance notice, once per crossing (C17).
/// Best effort: the task is queued whatever happens here.
pub async fn after_charge(state: &AppState, user: &User) {
    let config = config(state);
    if !config.enabled {
        return;
    }
    let lang = user_lang(user);
    let threshold = config.low_balance_threshold;
    let mail = NewMail {
        user_id: Some(user.id.clone()),
        kind: "low_balance".into(),
        to_addr: user.email.clone(),
        subject: lang.t("mail.low_balance.subject"),
        body_text: lang
            .t("mail.low_balance.body")
            .replace("{name}", &user.name)
            .replace("{threshold}", &threshold.to_string())
            .replace("{url}", &format!("{}/billing", state.config.public_url.trim_end_matches('/'))),
    };
    if let Err(e) = state.store.notify_low_balance(&user.id, threshold, mail).await {
        tracing::warn!(error = %e, "low-balance notice not queued");
    }
}

fn user_lang(user: &User) -> &'static Lang {
    I18n::global().lang(user.locale.as_deref().unwrap_or("en"))
}

/// The purchase receipt (C17), in the buyer's language.
pub fn receipt_mail(state: &AppState, user: &User, payment: &store::NewPayment, credits: i64, expires_at: Option<i64>) -> NewMail {
    let lang = user_lang(user);
    let name = config(state).product(&payment.product).map(|p| p.name().to_string()).unwrap_or_else(|| payment.product.clone());
    let expiry = match expires_at {
        Some(at) => lang.t("billing.expires_on").replace("{date}", &lang.date(at)),
        None => lang.t("billing.never_expires"),
    };
    NewMail {
        user_id: Some(user.id.clone()),
        kind: "receipt".into(),
        to_addr: user.email.clone(),
        subject: lang.t("mail.receipt.subject"),
        body_text: lang
            .t("mail.receipt.body")
            .replace("{name}", &user.name)
            .replace("{product}", &name)
            .replace("{credits}", &credits.to_string())
            .replace("{amount}", &format_money(payment.amount_minor, &payment.currency))
            .replace("{expiry}", &expiry)
            .replace("{reference}", &payment.reference)
            .replace("{url}", &format!("{}/billing", state.config.public_url.trim_end_matches('/'))),
    }
}

/// One line under the generate form: what each size costs.
pub fn price_note(ctx: &Ctx, state: &AppState) -> String {
    let config = config(state);
    if !config.enabled {
        return String::new();
    }
    let sizes: Vec<String> = domain::params::SIZES
        .iter()
        .filter_map(|(w, h)| {
            let size = format!("{w}x{h}");
            config
                .price(&state.config.model, &size, "standard", 1)
                .ok()
                .map(|c| format!(r#"<span data-size="{size}" data-credits="{c}">{size}: {c}</span>"#))
        })
        .collect();
    format!(
        r#"<p class="price" id="price-note">{} {} · <a href="/billing">{}</a></p>"#,
        esc(&ctx.lang.t("billing.price_per_image")),
        sizes.join(" · "),
        esc(&ctx.lang.t("billing.see_balance"))
    )
}

fn kind_label(lang: &Lang, entry: &LedgerEntry) -> String {
    lang.t(&format!("billing.kind.{}", entry.kind))
}

fn product_label(config: &BillingConfig, key: &str) -> String {
    config.product(key).map(|p| p.name().to_string()).unwrap_or_else(|| key.to_string())
}

#[derive(Debug, Default, Deserialize)]
pub struct BillingQuery {
    pub before: Option<String>,
    pub checkout: Option<String>,
}

async fn billing_body(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    before: Option<&str>,
    notice: Option<String>,
    error: Option<&Error>,
    awaiting_payment: bool,
) -> Result<String, Error> {
    let config = config(state);
    let t = |k: &str| esc(&ctx.lang.t(k));
    if !config.enabled {
        return Ok(format!(r#"<section class="card narrow"><h1>{}</h1><p>{}</p></section>"#, t("billing.title"), t("billing.disabled")));
    }
    billing::ensure_signup_grant(&state.store, config, user).await?;
    state.store.expire_credits(Some(&user.id)).await?;
    let balance = state.store.balance(&user.id).await?;
    let ledger = state.store.ledger_entries(&user.id, before, 20).await?;
    let subscriptions = state.store.subscriptions_of_user(&user.id).await?;
    let payments = state.store.payments_of_user(&user.id).await?;
    let csrf = esc(&ctx.csrf);
    // Back from a checkout: the page shows the credits when the webhook lands.
    let watch = if awaiting_payment {
        format!(r#" data-watch-balance="{}" data-l-arrived="{}""#, balance.available, t("billing.live.arrived"))
    } else {
        String::new()
    };

    let debt = if balance.debt > 0 {
        format!(
            r#"<p class="error" role="alert" data-code="account_in_debt">{}</p>"#,
            esc(&ctx.lang.t("billing.debt_notice").replace("{debt}", &ctx.lang.number(balance.debt)))
        )
    } else {
        String::new()
    };
    let buttons = |key: &str, creem_product: &str| {
        let mut out = String::new();
        let mut button = |provider: &str, label: &str| {
            out.push_str(&format!(
                r#"<form method="post" action="/billing/checkout" class="inline"><input type="hidden" name="_csrf" value="{csrf}"><input type="hidden" name="product" value="{}"><input type="hidden" name="provider" value="{provider}"><button>{}</button></form> "#,
                esc(key),
                t(label)
            ));
        };
        if config.stripe_enabled() {
            button("stripe", "billing.pay_stripe");
        }
        if config.creem_enabled() && !creem_product.is_empty() {
            button("creem", "billing.pay_creem");
        }
        if out.is_empty() {
            out = format!("<small>{}</small>", t("billing.no_provider"));
        }
        out
    };
    let active_plan = subscriptions.iter().find(|s| matches!(s.status.as_str(), "active" | "trialing" | "past_due"));
    let packs: String = config
        .packs
        .iter()
        .map(|p| {
            let validity = if p.valid_days > 0 { ctx.lang.t("billing.valid_days").replace("{days}", &ctx.lang.number(p.valid_days.into())) } else { ctx.lang.t("billing.never_expires") };
            format!(
                r#"<li class="offer" data-product="pack:{id}"><strong>{name}</strong> — {credits} · {price} <small>{validity}</small><br>{buttons}</li>"#,
                id = esc(&p.id),
                name = esc(&p.name),
                credits = esc(&ctx.lang.t("billing.credits_n").replace("{n}", &ctx.lang.number(p.credits))),
                price = esc(&format_money(p.price_minor, &config.currency)),
                validity = esc(&validity),
                buttons = buttons(&format!("pack:{}", p.id), &p.creem_product),
            )
        })
        .collect();
    let plans: String = config
        .plans
        .iter()
        .map(|p| {
            let action = if active_plan.is_some() { String::new() } else { buttons(&format!("plan:{}", p.id), &p.creem_product) };
            format!(
                r#"<li class="offer" data-product="plan:{id}"><strong>{name}</strong> — {credits} · {price}<br>{action}</li>"#,
                id = esc(&p.id),
                name = esc(&p.name),
                credits = esc(&ctx.lang.t("billing.credits_per_month").replace("{n}", &ctx.lang.number(p.monthly_credits))),
                price = esc(&ctx.lang.t("billing.per_month").replace("{price}", &format_money(p.price_minor, &config.currency))),
            )
        })
        .collect();
    let subscription = match active_plan.or(subscriptions.first()) {
        Some(s) => {
            let period = s
                .current_period_end
                .map(|e| format!(" · {}", esc(&ctx.lang.t("billing.renews_on").replace("{date}", &ctx.lang.date(e)))))
                .unwrap_or_default();
            let portal = if s.provider == "stripe" && s.customer_id.is_some() && config.stripe_enabled() {
                format!(
                    r#" <form method="post" action="/billing/portal" class="inline"><input type="hidden" name="_csrf" value="{csrf}"><button class="secondary">{}</button></form>"#,
                    t("billing.manage")
                )
            } else {
                String::new()
            };
            format!(
                r#"<p class="subscription" data-status="{status}">{plan} — {status_t}{period}{portal}</p>"#,
                plan = esc(&product_label(config, &format!("plan:{}", s.plan))),
                status = esc(&s.status),
                status_t = esc(&ctx.lang.t(&format!("billing.sub_status.{}", s.status))),
            )
        }
        None => format!("<p>{}</p>", t("billing.no_subscription")),
    };
    let rows: String = ledger
        .items
        .iter()
        .map(|e| {
            let detail = match e.kind.as_str() {
                "adjustment" => esc(&e.reason),
                "grant" if e.reason == "signup" => esc(&ctx.lang.t("billing.signup_grant")),
                "grant" => esc(&product_label(config, &e.reason)),
                _ => String::new(),
            };
            format!(
                r#"<tr data-kind="{kind}"><td>{at}</td><td>{label}</td><td class="num">{amount}</td><td>{detail}</td></tr>"#,
                kind = esc(&e.kind),
                at = ctx.lang.time_html(e.created_at),
                label = esc(&kind_label(ctx.lang, e)),
                amount = ctx.lang.signed(e.amount),
            )
        })
        .collect();
    let more = ledger
        .next_cursor
        .map(|c| {
            format!(r#"<p class="pager"><a class="button secondary" href="/billing?before={}">{}</a></p>"#, esc(&c), t("gallery.older"))
        })
        .unwrap_or_default();
    let payment_rows: String = payments
        .iter()
        .map(|p| {
            format!(
                r#"<tr><td>{}</td><td>{}</td><td class="num">{}</td><td>{}</td></tr>"#,
                ctx.lang.time_html(p.created_at),
                esc(&product_label(config, &p.product)),
                esc(&format_money(p.amount_minor, &p.currency)),
                esc(&ctx.lang.t(&format!("billing.payment_status.{}", p.status))),
            )
        })
        .collect();
    Ok(format!(
        r#"<section class="card"><h1>{title}</h1>{notice}{error}{debt}
<dl class="balance"{watch}><dt>{available_t}</dt><dd id="balance-available">{available}</dd><dt>{held_t}</dt><dd id="balance-held">{held}</dd><dt>{debt_t}</dt><dd id="balance-debt">{debt_n}</dd></dl>
<h2>{subscription_t}</h2>{subscription}
<h2>{plans_t}</h2><ul class="offers">{plans}</ul>
<h2>{packs_t}</h2><ul class="offers">{packs}</ul>
<h2>{history_t}</h2><div class="table-wrap"><table class="ledger"><thead><tr><th>{date_t}</th><th>{what_t}</th><th>{credits_t}</th><th></th></tr></thead><tbody>{rows}</tbody></table></div>{more}
<h2>{payments_t}</h2><div class="table-wrap"><table class="payments"><tbody>{payment_rows}</tbody></table></div>
</section>"#,
        title = t("billing.title"),
        notice = notice.map(|n| format!(r#"<p class="notice" role="status">{}</p>"#, esc(&n))).unwrap_or_default(),
        error = error.map(|e| error_box(ctx.lang, e)).unwrap_or_default(),
        available_t = t("billing.available"),
        available = ctx.lang.number(balance.available),
        held_t = t("billing.held"),
        held = ctx.lang.number(balance.held),
        debt_t = t("billing.debt"),
        debt_n = ctx.lang.number(balance.debt),
        subscription_t = t("billing.subscription"),
        plans_t = t("billing.plans"),
        packs_t = t("billing.packs"),
        history_t = t("billing.history"),
        date_t = t("billing.date"),
        what_t = t("billing.what"),
        credits_t = t("billing.credits"),
        payments_t = t("billing.payments"),
    ))
}

pub async fn billing_page(State(state): State<AppState>, ctx: Ctx, QueryParams(q): QueryParams<BillingQuery>) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    let before = q.before.as_deref().filter(|b| !b.is_empty()).map(checked_id).transpose()?;
    let notice = match q.checkout.as_deref() {
        Some("success") => Some(ctx.lang.t("billing.checkout_success")),
        Some("cancel") => Some(ctx.lang.t("billing.checkout_cancel")),
        _ => None,
    };
    let body = billing_body(&state, &ctx, user, before, notice, None, q.checkout.as_deref() == Some("success")).await?;
    Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("billing.title"), &body))
}

/// Starts a hosted checkout and returns where to send the buyer.
pub async fn start_checkout(state: &AppState, user: &User, product: &str, provider: &str) -> Result<billing::stripe::Checkout, Error> {
    let config = config(state);
    if !config.enabled {
        return Err(Error::not_found());
    }
    let product = config.product(product).ok_or_else(|| Error::invalid("unknown product"))?;
    let base = state.config.public_url.trim_end_matches('/');
    let customer_id =
        state.store.subscriptions_of_user(&user.id).await?.into_iter().find(|s| s.provider == provider).and_then(|s| s.customer_id);
    let request = CheckoutRequest {
        user_id: &user.id,
        product,
        success_url: format!("{base}/billing?checkout=success"),
        cancel_url: format!("{base}/billing?checkout=cancel"),
        customer_id,
    };
    if matches!(request.product, Product::Plan(_)) {
        let subs = state.store.subscriptions_of_user(&user.id).await?;
        if subs.iter().any(|s| matches!(s.status.as_str(), "active" | "trialing" | "past_due")) {
            return Err(Error::invalid("this account already has an active subscription"));
        }
    }
    let checkout = match provider {
        "stripe" if config.stripe_enabled() => StripeClient::new(config).create_checkout(&request, &config.currency).await?,
        "creem" if config.creem_enabled() => CreemClient::new(config).create_checkout(&request).await?,
        _ => return Err(Error::invalid("this payment provider is not available")),
    };
    tracing::info!(provider, product = %request.product.key(), "checkout started");
    Ok(checkout)
}

#[derive(Debug, Default, Deserialize)]
pub struct CheckoutForm {
    #[serde(default)]
    pub product: String,
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub _csrf: String,
}

pub async fn checkout_form(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<CheckoutForm>) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        start_checkout(&state, user, &form.product, &form.provider).await
    };
    match attempt.await {
        Ok(checkout) => Ok(Redirect::to(&checkout.url).into_response()),
        Err(e) => {
            let body = billing_body(&state, &ctx, user, None, None, Some(&e), false).await?;
            Ok(page(&ctx, status_of(&e), &ctx.lang.t("billing.title"), &body))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub _csrf: String,
}

/// Stripe's customer portal, for the account's own Stripe customer.
pub async fn portal_form(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<CsrfForm>) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    check_csrf(&ctx, &form._csrf)?;
    let config = config(&state);
    let customer = state
        .store
        .subscriptions_of_user(&user.id)
        .await?
        .into_iter()
        .find(|s| s.provider == "stripe")
        .and_then(|s| s.customer_id)
        .filter(|_| config.stripe_enabled())
        .ok_or_else(Error::not_found)?;
    let url =
        StripeClient::new(config).create_portal(&customer, &format!("{}/billing", state.config.public_url.trim_end_matches('/'))).await?;
    Ok(Redirect::to(&url).into_response())
}

// ---------------------------------------------------------------- JSON API

fn balance_json(b: &Balance) -> serde_json::Value {
    json!({ "available": b.available, "held": b.held, "debt": b.debt })
}

pub async fn api_billing(State(state): State<AppState>, api: ApiUser) -> ApiResult<Json<serde_json::Value>> {
    let config = config(&state);
    if config.enabled {
        billing::ensure_signup_grant(&state.store, config, &api.user).await?;
        state.store.expire_credits(Some(&api.user.id)).await?;
    }
    let balance = state.store.balance(&api.user.id).await?;
    let subscriptions = state.store.subscriptions_of_user(&api.user.id).await?;
    Ok(Json(json!({
        "enabled": config.enabled,
        "currency": config.currency,
        "balance": balance_json(&balance),
        "low_balance_threshold": config.low_balance_threshold,
        "prices": config.prices,
        "packs": config.packs.iter().map(|p| json!({"product": format!("pack:{}", p.id), "name": p.name, "credits": p.credits, "price_minor": p.price_minor, "valid_days": p.valid_days})).collect::<Vec<_>>(),
        "plans": config.plans.iter().map(|p| json!({"product": format!("plan:{}", p.id), "name": p.name, "monthly_credits": p.monthly_credits, "price_minor": p.price_minor})).collect::<Vec<_>>(),
        "providers": { "stripe": config.stripe_enabled(), "creem": config.creem_enabled() },
        "subscriptions": subscriptions.iter().map(|s| json!({"provider": s.provider, "plan": s.plan, "status": s.status, "current_period_end": s.current_period_end})).collect::<Vec<_>>(),
    })))
}

pub async fn api_ledger(
    State(state): State<AppState>,
    api: ApiUser,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<Page<LedgerEntry>>> {
    let (before, limit) = query.checked()?;
    Ok(Json(state.store.ledger_entries(&api.user.id, before, limit).await?))
}

pub async fn api_payments(State(state): State<AppState>, api: ApiUser) -> ApiResult<Json<serde_json::Value>> {
    let payments = state.store.payments_of_user(&api.user.id).await?;
    Ok(Json(json!({ "items": payments.iter().map(|p| json!({
        "provider": p.provider, "product": p.product, "credits": p.credits, "credits_refunded": p.credits_refunded,
        "amount_minor": p.amount_minor, "currency": p.currency, "status": p.status, "created_at": p.created_at,
    })).collect::<Vec<_>>() })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    pub product: String,
    pub provider: String,
}

pub async fn api_checkout(
    State(state): State<AppState>,
    api: ApiUser,
    JsonBody(body): JsonBody<CheckoutBody>,
) -> ApiResult<Json<serde_json::Value>> {
    let checkout = start_checkout(&state, &api.user, &body.product, &body.provider).await?;
    Ok(Json(json!({ "id": checkout.id, "url": checkout.url })))
}

// ---------------------------------------------------------------- admin

/// Applies an admin's adjustment and records it in the audit trail (C34).
async fn adjust(
    state: &AppState,
    admin: &User,
    ctx_ip: Option<std::net::IpAddr>,
    account: &str,
    amount: i64,
    reason: &str,
) -> Result<(User, Balance), Error> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 200 {
        return Err(Error::invalid("a reason of 1 to 200 characters is required"));
    }
    if amount == 0 || amount.abs() > 1_000_000 {
        return Err(Error::invalid("the amount must be a non-zero number of credits up to 1000000"));
    }
    let account = account.trim();
    let target = if domain::ids::is_valid_id(account) {
        state.store.user_by_id(account).await?
    } else {
        state.store.user_by_email(&account.to_lowercase()).await?
    };
    let target = target.ok_or_else(Error::not_found)?;
    let balance = state.store.adjust_credits(&target.id, amount, reason).await?;
    let detail = format!("{amount:+}: {reason}");
    let ip = ctx_ip.map(crate::auth::truncate_ip);
    state
        .store
        .audit(store::AuditEntry {
            actor_id: Some(&admin.id),
            action: "credits_adjusted",
            target_id: Some(&target.id),
            ip: ip.as_deref(),
            detail: Some(&detail),
        })
        .await?;
    Ok((target, balance))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustBody {
    pub amount: i64,
    pub reason: String,
}

pub async fn api_admin_adjust(
    State(state): State<AppState>,
    ctx: Ctx,
    api: AdminUser,
    Path(account): Path<String>,
    JsonBody(body): JsonBody<AdjustBody>,
) -> ApiResult<Json<serde_json::Value>> {
    let (target, balance) = adjust(&state, &api.user, ctx.ip, checked_id(&account)?, body.amount, &body.reason).await?;
    Ok(Json(json!({ "account": target.id, "balance": balance_json(&balance) })))
}

pub async fn api_admin_debts(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Json<serde_json::Value>> {
    let debts = state.store.accounts_in_debt(200).await?;
    Ok(Json(json!({ "items": debts.iter().map(|b| json!({"account": b.user_id, "debt": b.debt})).collect::<Vec<_>>() })))
}

async fn admin_body(state: &AppState, ctx: &Ctx, notice: Option<String>, error: Option<&Error>) -> Result<String, Error> {
    let t = |k: &str| esc(&ctx.lang.t(k));
    let debts = state.store.accounts_in_debt(200).await?;
    let mut rows = String::new();
    for b in &debts {
        let email = state.store.user_by_id(&b.user_id).await?.map(|u| u.email).unwrap_or_default();
        rows.push_str(&format!(
            r#"<tr><td>{}</td><td><code>{}</code></td><td class="num">{}</td></tr>"#,
            esc(&email),
            esc(&b.user_id),
            b.debt
        ));
    }
    if rows.is_empty() {
        rows = format!(r#"<tr><td colspan="3">{}</td></tr>"#, t("admin_credits.no_debts"));
    }
    Ok(format!(
        r#"<section class="card"><h1>{title}</h1>{notice}{error}
<form method="post" action="/admin/credits" class="stack">
<input type="hidden" name="_csrf" value="{csrf}">
<label>{account_l}<input name="account" required maxlength="320"></label>
<label>{amount_l}<input name="amount" type="number" required step="1"></label>
<label>{reason_l}<input name="reason" required maxlength="200"></label>
<button>{submit}</button>
</form>
<h2>{debts_t}</h2><div class="table-wrap"><table class="debts"><tbody>{rows}</tbody></table></div></section>"#,
        title = t("admin_credits.title"),
        notice = notice.map(|n| format!(r#"<p class="notice" role="status">{}</p>"#, esc(&n))).unwrap_or_default(),
        error = error.map(|e| error_box(ctx.lang, e)).unwrap_or_default(),
        csrf = esc(&ctx.csrf),
        account_l = t("admin_credits.account"),
        amount_l = t("admin_credits.amount"),
        reason_l = t("admin_credits.reason"),
        submit = t("admin_credits.submit"),
        debts_t = t("admin_credits.debts"),
    ))
}

pub async fn admin_page(State(state): State<AppState>, ctx: Ctx) -> ApiResult<Response> {
    if let Err(not_found) = staff(&ctx, true).await {
        return Ok(not_found);
    }
    let body = admin_body(&state, &ctx, None, None).await?;
    Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("admin_credits.title"), &body))
}

#[derive(Debug, Default, Deserialize)]
pub struct AdjustForm {
    #[serde(default)]
    pub account: String,
    #[serde(default)]
    pub amount: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub _csrf: String,
}

pub async fn admin_adjust_form(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<AdjustForm>) -> ApiResult<Response> {
    let user = match staff(&ctx, true).await {
        Ok(user) => user,
        Err(not_found) => return Ok(not_found),
    };
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        let amount: i64 = form.amount.trim().parse().map_err(|_| Error::invalid("the amount must be a whole number"))?;
        adjust(&state, user, ctx.ip, &form.account, amount, &form.reason).await
    };
    match attempt.await {
        Ok((target, balance)) => {
            let notice = ctx
                .lang
                .t("admin_credits.done")
                .replace("{email}", &target.email)
                .replace("{available}", &balance.available.to_string())
                .replace("{debt}", &balance.debt.to_string());
            let body = admin_body(&state, &ctx, Some(notice), None).await?;
            Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("admin_credits.title"), &body))
        }
        Err(e) => {
            let body = admin_body(&state, &ctx, None, Some(&e)).await?;
            Ok(page(&ctx, status_of(&e), &ctx.lang.t("admin_credits.title"), &body))
        }
    }
}
