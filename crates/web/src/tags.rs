//! Operator tags: third-party analytics or advertising scripts the operator
//! configures (`[[tags]]`), each bound to a consent category. A tag is an
//! external `<script src>` (the CSP forbids inline script), written into a
//! page only when the visitor consented to its category, never for
//! analytics or advertising under Global Privacy Control, never for an
//! account whose processing is restricted. The CSP of that response, and
//! only that response, allows the tag's hosts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::consent::PrivacyCtx;
use crate::pages::esc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TagCategory {
    Analytics,
    /// Advertising and marketing (`ads` is accepted too).
    #[serde(alias = "ads")]
    Marketing,
    Preferences,
}

impl TagCategory {
    /// The consent-settings label of the category.
    pub fn label_key(self) -> &'static str {
        match self {
            TagCategory::Analytics => "legal.tag_category_analytics",
            TagCategory::Marketing => "legal.tag_category_marketing",
            TagCategory::Preferences => "legal.tag_category_preferences",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorTag {
    /// The third party as the policy names it ("Plausible Analytics").
    pub name: String,
    pub category: TagCategory,
    /// The script's https URL.
    pub src: String,
    /// Further origins the script talks to (beacons, pixels): allowed in
    /// `connect-src` and `img-src`.
    #[serde(default)]
    pub connect: Vec<String>,
    /// `data-*` attributes of the script element (`domain` → `data-domain`).
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// What it is for, as the policy says it.
    #[serde(default)]
    pub purpose: String,
    /// The third party's own privacy policy.
    #[serde(default)]
    pub policy_url: String,
}

/// The `https://host[:port]` origin of an https URL, or why it is not one.
fn https_origin(what: &str, raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw.trim()).map_err(|e| format!("{what} {raw:?}: {e}"))?;
    if url.scheme() != "https" || url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{what} {raw:?} must be an https URL without credentials"));
    }
    Ok(url.origin().ascii_serialization())
}

impl OperatorTag {
    /// Checked at start: a bad tag stops the server instead of breaking pages.
    pub fn validate(&self) -> Result<(), String> {
        let at = format!("tags {:?}", self.name);
        if self.name.trim().is_empty() || self.name.chars().any(char::is_control) {
            return Err("tags: every tag needs a printable name".into());
        }
        https_origin(&format!("{at}: src"), &self.src)?;
        for origin in &self.connect {
            https_origin(&format!("{at}: connect"), origin)?;
        }
        if !self.policy_url.is_empty() {
            https_origin(&format!("{at}: policy_url"), &self.policy_url)?;
        }
        if let Some(key) =
            self.data.keys().find(|k| k.is_empty() || !k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        {
            return Err(format!("{at}: data attribute names are lowercase letters, digits and '-', not {key:?}"));
        }
        Ok(())
    }

    /// Whether this visitor's choices let the tag load.
    fn allowed(&self, privacy: &PrivacyCtx) -> bool {
        let Some(choice) = privacy.choice else { return false };
        match self.category {
            TagCategory::Analytics => choice.analytics && !privacy.gpc,
            TagCategory::Marketing => choice.marketing && !privacy.gpc,
            TagCategory::Preferences => choice.preferences,
        }
    }

    fn script(&self) -> String {
        let data: String = self.data.iter().map(|(k, v)| format!(r#" data-{k}="{}""#, esc(v))).collect();
        format!(r#"<script async src="{}"{data}></script>"#, esc(self.src.trim()))
    }
}

/// The tags a page carries for this visitor, and the sources its CSP must
/// add for them. Set on the response by `pages::page`, read by
/// `security::headers`.
#[derive(Debug, Clone, Default)]
pub struct Injected {
    pub scripts: Vec<String>,
    pub connect: Vec<String>,
}

impl Injected {
    pub fn for_visitor(privacy: &PrivacyCtx) -> Injected {
        let mut out = Injected::default();
        for tag in privacy.tags.iter().filter(|t| t.allowed(privacy)) {
            if let Ok(origin) = https_origin("src", &tag.src) {
                out.scripts.push(origin);
            }
            out.connect.extend(tag.connect.iter().filter_map(|c| https_origin("connect", c).ok()));
        }
        out.scripts.sort();
        out.scripts.dedup();
        out.connect.sort();
        out.connect.dedup();
        out
    }

    /// The `<script>` elements for the page's head.
    pub fn elements(privacy: &PrivacyCtx) -> String {
        privacy.tags.iter().filter(|t| t.allowed(privacy)).map(OperatorTag::script).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.scripts.is_empty() && self.connect.is_empty()
    }
}
