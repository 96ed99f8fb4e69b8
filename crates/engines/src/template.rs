//! Request templates with placeholders (ComfyUI workflows, Replicate inputs).
//! A string that is exactly `"{{name}}"` becomes the value itself (a number
//! stays a number); `{{name}}` inside a longer string is replaced by the
//! value's text. Known names: see [`PLACEHOLDERS`].

use domain::{Error, Result};
use serde_json::Value;

pub const PLACEHOLDERS: &[&str] = &["prompt", "seed", "width", "height", "n", "image", "mask"];

/// The placeholders every template gets; `seed` already reduced to what the
/// provider accepts.
pub fn vars(prompt: &str, seed: u64, width: u32, height: u32, n: u32) -> Vec<(&'static str, Value)> {
    vec![
        ("prompt", Value::from(prompt)),
        ("seed", Value::from(seed)),
        ("width", Value::from(width)),
        ("height", Value::from(height)),
        ("n", Value::from(n)),
    ]
}

/// Fills `template`; `vars` are `(name, value)` pairs.
pub fn fill(template: &Value, vars: &[(&str, Value)]) -> Value {
    match template {
        Value::String(s) => fill_str(s, vars),
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, vars)).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), fill(v, vars))).collect()),
        other => other.clone(),
    }
}

fn fill_str(s: &str, vars: &[(&str, Value)]) -> Value {
    if let Some(name) = s.strip_prefix("{{").and_then(|r| r.strip_suffix("}}")) {
        if let Some((_, v)) = vars.iter().find(|(n, _)| *n == name) {
            return v.clone();
        }
    }
    let mut out = s.to_string();
    for (name, value) in vars {
        let text = match value {
            Value::String(t) => t.clone(),
            other => other.to_string(),
        };
        out = out.replace(&format!("{{{{{name}}}}}"), &text);
    }
    Value::String(out)
}

/// Refuses a template that names an unknown placeholder (a typo would
/// otherwise reach the provider literally) or lacks a required one.
pub fn check(what: &str, template: &Value, required: &[&str]) -> Result<()> {
    let mut found = Vec::new();
    collect(template, &mut found);
    if let Some(bad) = found.iter().find(|n| !PLACEHOLDERS.contains(&n.as_str())) {
        return Err(Error::invalid(format!("{what}: unknown placeholder {{{{{bad}}}}} (known: {})", PLACEHOLDERS.join(", "))));
    }
    if let Some(missing) = required.iter().find(|r| !found.iter().any(|f| f == *r)) {
        return Err(Error::invalid(format!("{what}: the template needs a {{{{{missing}}}}} placeholder")));
    }
    Ok(())
}

fn collect(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(start) = rest.find("{{") {
                let Some(len) = rest[start + 2..].find("}}") else { break };
                out.push(rest[start + 2..start + 2 + len].to_string());
                rest = &rest[start + 2 + len + 2..];
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
        Value::Object(map) => map.values().for_each(|i| collect(i, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn whole_placeholders_keep_their_type_and_inner_ones_become_text() {
        let t = json!({"3": {"inputs": {"seed": "{{seed}}", "text": "photo of {{prompt}}, {{width}}px", "keep": 7}}});
        let out = fill(&t, &[("seed", json!(42)), ("prompt", json!("a \"fox\"")), ("width", json!(512))]);
        assert_eq!(out, json!({"3": {"inputs": {"seed": 42, "text": "photo of a \"fox\", 512px", "keep": 7}}}));
    }

    #[test]
    fn unknown_or_missing_placeholders_are_refused() {
        assert!(check("w", &json!({"a": "{{promt}}"}), &[]).unwrap_err().message.contains("promt"));
        assert!(check("w", &json!({"a": "{{seed}}"}), &["prompt"]).unwrap_err().message.contains("prompt"));
        assert!(check("w", &json!({"a": "{{prompt}} {{seed}}"}), &["prompt"]).is_ok());
    }
}
