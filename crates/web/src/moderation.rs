//! The content check every prompt and upload passes before anything is
//! stored or charged (C40): the operator's rules first, then, if
//! configured, an OpenAI-compatible `/v1/moderations` endpoint. A refusal is
//! `content_policy_violation` naming the category and leaves a moderation
//! event (rule id, prompt hash, time; the text only with review retention).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use domain::content::{ContentRules, RuleAction, RulesSpec, BUILT_IN_RULES};
use domain::ids::to_hex;
use domain::{Error, ErrorCode, Result};
use serde_json::json;
use sha2::{Digest, Sha256};
use store::{NewModerationEvent, User};

use crate::AppState;

#[derive(Clone)]
pub struct ModerationConfig {
    pub rules: Arc<ContentRules>,
    pub external: Option<ExternalModeration>,
    /// Keep the text of prompts sent to review, for moderators to read.
    /// Off: events hold only the hash.
    pub retain_review_prompts: bool,
}

impl Default for ModerationConfig {
    fn default() -> Self {
        ModerationConfig { rules: Arc::new(built_in_rules()), external: None, retain_review_prompts: false }
    }
}

impl std::fmt::Debug for ModerationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModerationConfig")
            .field("categories", &self.rules.categories().collect::<Vec<_>>())
            .field("external", &self.external)
            .field("retain_review_prompts", &self.retain_review_prompts)
            .finish()
    }
}

/// A provider's moderation endpoint (OpenAI's, or any server speaking it).
#[derive(Clone)]
pub struct ExternalModeration {
    /// Base URL up to and including `/v1`; `/moderations` is appended.
    pub url: String,
    pub api_key: Option<String>,
    pub model: String,
    /// When the endpoint cannot answer: `true` lets the request through,
    /// `false` refuses it with `unavailable`.
    pub fail_open: bool,
    pub timeout: Duration,
}

impl std::fmt::Debug for ExternalModeration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("ExternalModeration")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("fail_open", &self.fail_open)
            .field("timeout", &self.timeout)
            .finish()
    }
}

pub fn built_in_rules() -> ContentRules {
    parse_rules(BUILT_IN_RULES).expect("the built-in content rules are valid")
}

/// Parses and compiles a rules file (TOML).
pub fn parse_rules(text: &str) -> Result<ContentRules> {
    let spec: RulesSpec = toml::from_str(text).map_err(|e| Error::invalid(format!("content rules: {e}")))?;
    ContentRules::compile(&spec)
}

fn refused(category: &str) -> Error {
    Error::new(ErrorCode::ContentPolicyViolation, format!("refused by the content rules (category: {category})"))
}

/// Checks a prompt. A blocking match refuses it; a review match lets it
/// through and queues it for moderators.
pub async fn screen_prompt(state: &AppState, user: &User, prompt: &str) -> Result<()> {
    let config = &state.config.moderation;
    let hash = to_hex(&Sha256::digest(prompt.as_bytes()));
    if let Some(hit) = config.rules.check(prompt) {
        let keep_text = hit.action == RuleAction::Review && config.retain_review_prompts;
        record(state, user, "prompt", &hit.category, &hit.rule_id, hit.action, &hash, keep_text.then_some(prompt)).await?;
        if hit.action == RuleAction::Block {
            return Err(refused(&hit.category));
        }
    }
    if let Some(external) = &config.external {
        if let Some(category) = ask(external, json!(prompt)).await? {
            record(state, user, "prompt", &category, &format!("external/{category}"), RuleAction::Block, &hash, None).await?;
            return Err(refused(&category));
        }
    }
    Ok(())
}

/// Checks an upload (already stripped of its metadata) through the
/// external endpoint; the rules file has no say over pixels.
pub async fn screen_upload(state: &AppState, user: &User, bytes: &[u8], content_type: &str) -> Result<()> {
    let Some(external) = &state.config.moderation.external else { return Ok(()) };
    let data_url = format!("data:{content_type};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes));
    let input = json!([{ "type": "image_url", "image_url": { "url": data_url } }]);
    if let Some(category) = ask(external, input).await? {
        let hash = to_hex(&Sha256::digest(bytes));
        record(state, user, "upload", &category, &format!("external/{category}"), RuleAction::Block, &hash, None).await?;
        return Err(refused(&category));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn record(
    state: &AppState,
    user: &User,
    surface: &str,
    category: &str,
    rule_id: &str,
    action: RuleAction,
    hash: &str,
    prompt: Option<&str>,
) -> Result<()> {
    let event = state
        .store
        .record_moderation_event(NewModerationEvent {
            user_id: user.id.clone(),
            surface: surface.into(),
            category: category.into(),
            rule_id: rule_id.into(),
            action: action.as_str().into(),
            prompt_hash: hash.into(),
            prompt: prompt.map(str::to_string),
        })
        .await?;
    tracing::info!(user = %user.id, event = %event.id, rule = rule_id, action = action.as_str(), "content rule matched");
    Ok(())
}

/// The flagged category, if the endpoint flags the input; endpoint
/// failures follow the fail-open / fail-closed setting.
async fn ask(external: &ExternalModeration, input: serde_json::Value) -> Result<Option<String>> {
    match call(external, input).await {
        Ok(flagged) => Ok(flagged),
        Err(e) if external.fail_open => {
            tracing::warn!(error = %e, "moderation endpoint failed; letting the request through (fail-open)");
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(error = %e, "moderation endpoint failed; refusing the request (fail-closed)");
            Err(Error::new(ErrorCode::Unavailable, "content moderation is unavailable; try again later"))
        }
    }
}

async fn call(external: &ExternalModeration, input: serde_json::Value) -> std::result::Result<Option<String>, String> {
    let client = reqwest::Client::builder()
        .timeout(external.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = client
        .post(format!("{}/moderations", external.url.trim_end_matches('/')))
        .json(&json!({ "model": external.model, "input": input }));
    if let Some(key) = &external.api_key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    let results = body["results"].as_array().ok_or("no results in the moderation response")?;
    for result in results {
        if result["flagged"].as_bool() == Some(true) {
            let category = result["categories"]
                .as_object()
                .and_then(|c| c.iter().find(|(_, v)| v.as_bool() == Some(true)).map(|(k, _)| k.clone()))
                .unwrap_or_else(|| "flagged".into());
            return Ok(Some(category));
        }
    }
    Ok(None)
}
