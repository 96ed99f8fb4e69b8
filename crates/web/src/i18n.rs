//! User-facing strings come from translation files embedded in the binary:
//! `locales/{en,zh-Hans,zh-Hant,fr}.toml`, flat `"key" = "text"` tables
//! (dotted keys allowed). English is the reference set; every locale must
//! carry every key (a test enforces it).

use std::collections::BTreeMap;
use std::sync::OnceLock;

pub const LOCALES: &[(&str, &str)] = &[
    ("en", include_str!("../locales/en.toml")),
    ("zh-Hans", include_str!("../locales/zh-Hans.toml")),
    ("zh-Hant", include_str!("../locales/zh-Hant.toml")),
    ("fr", include_str!("../locales/fr.toml")),
];

pub struct Lang {
    pub code: &'static str,
    strings: BTreeMap<String, String>,
}

impl Lang {
    /// The text for `key`; a missing key shows the key itself (and fails the
    /// completeness test) rather than an empty string.
    pub fn t(&self, key: &str) -> String {
        self.strings.get(key).cloned().unwrap_or_else(|| key.to_string())
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.strings.keys()
    }

    /// An integer with this language's digit grouping (`1,234`, `1 234`).
    pub fn number(&self, n: i64) -> String {
        let digits = n.unsigned_abs().to_string();
        let separator = self.t("format.thousands");
        let mut out = String::with_capacity(digits.len() + 8);
        if n < 0 {
            out.push('-');
        }
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push_str(&separator);
            }
            out.push(c);
        }
        out
    }

    /// A credit movement: always signed.
    pub fn signed(&self, n: i64) -> String {
        if n > 0 {
            format!("+{}", self.number(n))
        } else {
            self.number(n)
        }
    }

    fn fill_date(&self, pattern: &str, ms: i64) -> String {
        let secs = ms.div_euclid(1000);
        let (y, m, d) = domain::time::civil_from_days(secs.div_euclid(86_400));
        let rem = secs.rem_euclid(86_400);
        let months = self.t("format.months");
        let month = months.split_whitespace().nth(m as usize - 1).unwrap_or("");
        pattern
            .replace("{y}", &y.to_string())
            .replace("{m}", &m.to_string())
            .replace("{mon}", month)
            .replace("{d}", &d.to_string())
            .replace("{H}", &format!("{:02}", rem / 3600))
            .replace("{M}", &format!("{:02}", rem % 3600 / 60))
    }

    /// Date and time (UTC) as this language writes them, as text.
    pub fn datetime(&self, ms: i64) -> String {
        self.fill_date(&self.t("format.datetime"), ms)
    }

    /// A date (UTC) as this language writes it, as text.
    pub fn date(&self, ms: i64) -> String {
        self.fill_date(&self.t("format.date"), ms)
    }

    /// A `<time>` element: the UTC text, which `ui.js` turns into the
    /// reader's time zone.
    pub fn time_html(&self, ms: i64) -> String {
        format!(r#"<time datetime="{}">{}</time>"#, rfc3339(ms), crate::pages::esc(&self.datetime(ms)))
    }
}

/// `2026-11-18T09:46:40Z`: an instant for machines (HTML `datetime`).
pub fn rfc3339(ms: i64) -> String {
    format!("{}Z", domain::time::format_utc(ms).replacen(' ', "T", 1))
}

pub struct I18n {
    langs: Vec<Lang>,
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            toml::Value::String(s) => {
                out.insert(key, s.clone());
            }
            other => {
                out.insert(key, other.to_string());
            }
        }
    }
}

impl I18n {
    pub fn global() -> &'static I18n {
        static I18N: OnceLock<I18n> = OnceLock::new();
        I18N.get_or_init(|| I18n {
            langs: LOCALES
                .iter()
                .map(|(code, text)| {
                    let table: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("locale {code} is not valid TOML: {e}"));
                    let mut strings = BTreeMap::new();
                    flatten("", &table, &mut strings);
                    Lang { code, strings }
                })
                .collect(),
        })
    }

    pub fn langs(&self) -> &[Lang] {
        &self.langs
    }

    /// The language for a stored preference, falling back to English.
    pub fn lang(&self, code: &str) -> &Lang {
        self.find(code).unwrap_or(&self.langs[0])
    }

    fn find(&self, code: &str) -> Option<&Lang> {
        self.langs.iter().find(|l| l.code.eq_ignore_ascii_case(code))
    }

    /// Picks from an `Accept-Language` header by quality, mapping Chinese
    /// regional tags to the Simplified or Traditional script.
    pub fn negotiate(&self, accept_language: &str) -> &Lang {
        let mut ranges: Vec<(f32, usize, &str)> = accept_language
            .split(',')
            .enumerate()
            .filter_map(|(i, part)| {
                let mut pieces = part.trim().split(';');
                let tag = pieces.next()?.trim();
                let q = pieces.find_map(|p| p.trim().strip_prefix("q=")).map_or(Some(1.0), |q| q.parse::<f32>().ok())?;
                (!tag.is_empty() && q > 0.0).then_some((q, i, tag))
            })
            .collect();
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        ranges.iter().find_map(|(_, _, tag)| self.match_tag(tag)).unwrap_or(&self.langs[0])
    }

    fn match_tag(&self, tag: &str) -> Option<&Lang> {
        let tag = tag.to_ascii_lowercase();
        let code = if tag.starts_with("zh") {
            if ["hant", "tw", "hk", "mo"].iter().any(|t| tag.split(['-', '_']).skip(1).any(|p| p == *t)) {
                "zh-Hant"
            } else {
                "zh-Hans"
            }
        } else {
            tag.split(['-', '_']).next().unwrap_or("")
        };
        self.find(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_locale_has_every_key_and_no_empty_text() {
        let i18n = I18n::global();
        let reference: Vec<&String> = i18n.langs()[0].keys().collect();
        assert!(reference.len() > 50, "English has {} keys", reference.len());
        for lang in i18n.langs() {
            let keys: Vec<&String> = lang.keys().collect();
            let missing: Vec<_> = reference.iter().filter(|k| !keys.contains(k)).collect();
            let extra: Vec<_> = keys.iter().filter(|k| !reference.contains(k)).collect();
            assert!(missing.is_empty() && extra.is_empty(), "{}: missing {missing:?}, extra {extra:?}", lang.code);
            for key in &keys {
                // A digit group separator may be a space; nothing else may be blank.
                let text = lang.t(key);
                let blank = if key.as_str() == "format.thousands" { text.is_empty() } else { text.trim().is_empty() };
                assert!(!blank, "{}: {key} is empty", lang.code);
            }
        }
    }

    #[test]
    fn every_error_code_has_a_message_in_every_locale() {
        for lang in I18n::global().langs() {
            for code in domain::ErrorCode::ALL {
                assert_ne!(lang.t(&code.message_key()), code.message_key(), "{} lacks {}", lang.code, code.message_key());
            }
        }
    }

    #[test]
    fn accept_language_negotiation() {
        let i = I18n::global();
        assert_eq!(i.negotiate("fr-CA,fr;q=0.9,en;q=0.8").code, "fr");
        assert_eq!(i.negotiate("zh-TW,zh;q=0.9").code, "zh-Hant");
        assert_eq!(i.negotiate("zh-Hant-HK").code, "zh-Hant");
        assert_eq!(i.negotiate("zh-CN").code, "zh-Hans");
        assert_eq!(i.negotiate("de-DE,en;q=0.5,fr;q=0.7").code, "fr");
        assert_eq!(i.negotiate("").code, "en");
        assert_eq!(i.negotiate("xx;q=abc, ;;;").code, "en");
        assert_eq!(i.lang("nope").code, "en");
    }
}
