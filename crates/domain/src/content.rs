//! Content rules (C40): categories of terms and regular expressions, each
//! with an action (block or send to review), and an allow-list of phrases
//! that are taken out of a prompt before matching, to keep well-known
//! innocent phrases from tripping a rule.

use regex::{Regex, RegexBuilder};
use serde::Deserialize;

use crate::{Error, Result};

/// The rules (TOML) the server uses when the operator names no file.
pub const BUILT_IN_RULES: &str = r#"
# Phrases removed from a prompt before any rule is checked.
allow = ["breast cancer", "sex education", "sexual health", "child safety", "shot glass"]

[[category]]
name = "sexual_minors"
action = "block"
terms = ["child pornography", "csam", "loli", "lolicon", "shotacon"]
patterns = [
    '\b(child|children|kid|kids|minor|minors|underage|preteen|preteens|toddler|schoolgirl|schoolboy)\b.{0,60}\b(nude|naked|nsfw|sex|sexual|porn|pornographic|erotic)\b',
    '\b(nude|naked|nsfw|sex|sexual|porn|pornographic|erotic)\b.{0,60}\b(child|children|kid|kids|minor|minors|underage|preteen|preteens|toddler)\b',
]

[[category]]
name = "non_consensual_imagery"
action = "block"
terms = ["revenge porn", "deepnude", "undress her", "undress him"]
patterns = ['\b(nude|naked)\b.{0,40}\b(of my|of our) (ex|coworker|colleague|classmate|neighbou?r|boss|teacher)\b']

[[category]]
name = "graphic_violence"
action = "review"
terms = ["gore", "beheading", "dismembered", "disembowel"]

[[category]]
name = "self_harm"
action = "review"
terms = ["self-harm", "self harm", "suicide"]
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Block,
    Review,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Block => "block",
            RuleAction::Review => "review",
        }
    }
}

/// A rules file as written (TOML on disk, parsed by the caller).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSpec {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default, rename = "category")]
    pub categories: Vec<CategorySpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategorySpec {
    pub name: String,
    pub action: RuleAction,
    #[serde(default)]
    pub terms: Vec<String>,
    #[serde(default)]
    pub patterns: Vec<String>,
}

/// What a prompt matched first: a blocking rule wins over a review rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    pub category: String,
    /// `category/term/N` or `category/pattern/N` (N counts from 0 in the file).
    pub rule_id: String,
    pub action: RuleAction,
}

#[derive(Debug, Clone)]
struct Category {
    name: String,
    action: RuleAction,
    /// Normalized, each padded with spaces so it matches whole words only.
    terms: Vec<String>,
    patterns: Vec<Regex>,
}

#[derive(Debug, Clone)]
pub struct ContentRules {
    allow: Vec<String>,
    categories: Vec<Category>,
}

/// Lower case, every run of non-alphanumerics (except `-`) one space, padded
/// with a space at each end: `" a-b c "`.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push(' ');
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() || c == '-' {
            out.push(c);
        } else if !out.ends_with(' ') {
            out.push(' ');
        }
    }
    if !out.ends_with(' ') {
        out.push(' ');
    }
    out
}

impl ContentRules {
    /// Checks and compiles a rules file: category names are snake_case and
    /// unique, every pattern compiles, no category is empty.
    pub fn compile(spec: &RulesSpec) -> Result<ContentRules> {
        let mut categories: Vec<Category> = Vec::with_capacity(spec.categories.len());
        for c in &spec.categories {
            if c.name.is_empty() || !c.name.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_') {
                return Err(Error::invalid(format!("content rule category {:?} must be snake_case", c.name)));
            }
            if categories.iter().any(|k| k.name == c.name) {
                return Err(Error::invalid(format!("content rule category {} appears twice", c.name)));
            }
            if c.terms.is_empty() && c.patterns.is_empty() {
                return Err(Error::invalid(format!("content rule category {} has no terms or patterns", c.name)));
            }
            let terms = c.terms.iter().map(|t| normalize(t)).filter(|t| !t.trim().is_empty()).collect();
            let mut patterns = Vec::with_capacity(c.patterns.len());
            for p in &c.patterns {
                let re = RegexBuilder::new(p)
                    .case_insensitive(true)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| Error::invalid(format!("content rule pattern {p:?} of {}: {e}", c.name)))?;
                patterns.push(re);
            }
            categories.push(Category { name: c.name.clone(), action: c.action, terms, patterns });
        }
        let allow = spec.allow.iter().map(|a| normalize(a)).filter(|a| !a.trim().is_empty()).collect();
        Ok(ContentRules { allow, categories })
    }

    /// The first rule the text breaks, checking blocking categories first.
    pub fn check(&self, text: &str) -> Option<RuleMatch> {
        let mut normalized = normalize(text);
        for phrase in &self.allow {
            while let Some(at) = normalized.find(phrase.as_str()) {
                normalized.replace_range(at..at + phrase.len(), " ");
            }
        }
        let ordered = self
            .categories
            .iter()
            .filter(|c| c.action == RuleAction::Block)
            .chain(self.categories.iter().filter(|c| c.action == RuleAction::Review));
        for c in ordered {
            let hit =
                |kind: &str, i: usize| RuleMatch { category: c.name.clone(), rule_id: format!("{}/{kind}/{i}", c.name), action: c.action };
            if let Some(i) = c.terms.iter().position(|t| normalized.contains(t.as_str())) {
                return Some(hit("term", i));
            }
            if let Some(i) = c.patterns.iter().position(|p| p.is_match(&normalized)) {
                return Some(hit("pattern", i));
            }
        }
        None
    }

    pub fn categories(&self) -> impl Iterator<Item = (&str, RuleAction)> {
        self.categories.iter().map(|c| (c.name.as_str(), c.action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], cats: &[(&str, RuleAction, &[&str], &[&str])]) -> ContentRules {
        let spec = RulesSpec {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            categories: cats
                .iter()
                .map(|(name, action, terms, patterns)| CategorySpec {
                    name: name.to_string(),
                    action: *action,
                    terms: terms.iter().map(|s| s.to_string()).collect(),
                    patterns: patterns.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
        };
        ContentRules::compile(&spec).unwrap()
    }

    #[test]
    fn c40_terms_match_whole_words_patterns_match_and_block_wins() {
        let r = rules(
            &["grand theft auto"],
            &[
                ("violence", RuleAction::Review, &["gore"], &[]),
                ("theft", RuleAction::Block, &["theft"], &[r"\bsteal(ing)?\b.{0,20}\bcar"]),
            ],
        );
        assert_eq!(r.check("a gorge at dawn"), None, "terms match whole words only");
        let m = r.check("GORE, everywhere").unwrap();
        assert_eq!((m.category.as_str(), m.rule_id.as_str(), m.action), ("violence", "violence/term/0", RuleAction::Review));
        let m = r.check("gore and theft").unwrap();
        assert_eq!(m.action, RuleAction::Block, "a blocking rule wins over a review rule");
        assert_eq!(r.check("Stealing a red car").unwrap().rule_id, "theft/pattern/0");
        assert_eq!(r.check("box art for Grand Theft Auto"), None, "the allow-list removes the phrase first");
        assert!(r.check("grand theft auto and a theft").is_some(), "only the allowed phrase is removed");
    }

    #[test]
    fn c40_bad_rules_are_refused() {
        let bad = |name: &str, terms: &[&str], patterns: &[&str]| {
            let spec = RulesSpec {
                allow: vec![],
                categories: vec![CategorySpec {
                    name: name.into(),
                    action: RuleAction::Block,
                    terms: terms.iter().map(|s| s.to_string()).collect(),
                    patterns: patterns.iter().map(|s| s.to_string()).collect(),
                }],
            };
            ContentRules::compile(&spec).is_err()
        };
        assert!(bad("Bad Name", &["x"], &[]));
        assert!(bad("empty", &[], &[]));
        assert!(bad("broken", &[], &["(unclosed"]));
        assert!(!bad("fine", &["x"], &[]));
    }
}
