use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode, Result};

/// Output sizes the platform accepts. Every one is priced and rendered.
pub const SIZES: &[(u32, u32)] = &[(1024, 1024), (1536, 1024), (1024, 1536), (512, 512), (256, 256)];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSize {
    pub width: u32,
    pub height: u32,
}

impl ImageSize {
    /// Parses `WIDTHxHEIGHT` (or `auto`, which is 1024x1024) against [`SIZES`].
    pub fn parse(s: &str) -> Result<Self> {
        if s == "auto" {
            return Ok(ImageSize { width: 1024, height: 1024 });
        }
        let parsed = s
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
            .filter(|wh| SIZES.contains(wh));
        match parsed {
            Some((width, height)) => Ok(ImageSize { width, height }),
            None => Err(Error::new(
                ErrorCode::InvalidInput,
                format!("size must be one of auto, {}", SIZES.iter().map(|(w, h)| format!("{w}x{h}")).collect::<Vec<_>>().join(", ")),
            )),
        }
    }

    pub fn label(&self) -> String {
        format!("{}x{}", self.width, self.height)
    }
}

/// Style presets of the built-in engine; the names are stable API values.
pub const STYLES: &[&str] = &["none", "vivid", "pastel", "noir", "sunset", "ocean", "forest"];

pub fn parse_style(s: &str) -> Result<String> {
    if STYLES.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(Error::invalid(format!("style must be one of {}", STYLES.join(", "))))
    }
}

/// What a generate task asks for, kept as JSON in `tasks.params`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateParams {
    pub size: ImageSize,
    pub style: String,
    pub n: u32,
    pub seed: u64,
}

/// Limits that come from config with safe defaults.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub prompt_max_chars: usize,
    pub max_n: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { prompt_max_chars: 4000, max_n: 4 }
    }
}

/// Checks a prompt: non-empty after trimming, within the character limit,
/// and free of control characters other than newlines and tabs.
pub fn validate_prompt(prompt: &str, limits: &Limits) -> Result<String> {
    let trimmed = prompt.trim();
    if trimmed.is_empty() {
        return Err(Error::invalid("prompt must not be empty"));
    }
    let chars = trimmed.chars().count();
    if chars > limits.prompt_max_chars {
        return Err(Error::new(
            ErrorCode::PromptTooLong,
            format!("prompt has {chars} characters; the limit is {}", limits.prompt_max_chars),
        ));
    }
    if trimmed.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
        return Err(Error::invalid("prompt contains control characters"));
    }
    Ok(trimmed.to_string())
}

pub fn validate_n(n: u32, limits: &Limits) -> Result<u32> {
    if n == 0 || n > limits.max_n {
        return Err(Error::invalid(format!("n must be between 1 and {}", limits.max_n)));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_only_from_the_list() {
        assert_eq!(ImageSize::parse("1536x1024").unwrap(), ImageSize { width: 1536, height: 1024 });
        assert_eq!(ImageSize::parse("auto").unwrap().label(), "1024x1024");
        for bad in ["1000x1000", "x", "1024", "-1x5", "99999999999x1"] {
            assert_eq!(ImageSize::parse(bad).unwrap_err().code, ErrorCode::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn prompts_are_bounded() {
        let limits = Limits { prompt_max_chars: 5, max_n: 4 };
        assert_eq!(validate_prompt("  cat ", &limits).unwrap(), "cat");
        assert_eq!(validate_prompt("   ", &limits).unwrap_err().code, ErrorCode::InvalidInput);
        assert_eq!(validate_prompt("猫猫猫猫猫猫", &limits).unwrap_err().code, ErrorCode::PromptTooLong);
        assert_eq!(validate_prompt("a\u{0}b", &limits).unwrap_err().code, ErrorCode::InvalidInput);
        assert!(validate_n(0, &limits).is_err() && validate_n(5, &limits).is_err() && validate_n(4, &limits).is_ok());
    }
}
