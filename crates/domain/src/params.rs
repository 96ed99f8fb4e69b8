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
        let parsed =
            s.split_once('x').and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?))).filter(|wh| SIZES.contains(wh));
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

/// Style presets; the names are stable API values. The first seven choose the
/// built-in engine's palette; the rest ([`FILTER_STYLES`]) are image
/// operations (`imaging::styles`). Every style except `none` can restyle an
/// existing image, and every style is passed to remote providers as a hint.
pub const STYLES: &[&str] = &[
    "none",
    "vivid",
    "pastel",
    "noir",
    "sunset",
    "ocean",
    "forest",
    "photographic",
    "cinematic",
    "anime",
    "watercolor",
    "oil_painting",
    "sketch",
    "pixel_art",
    "neon",
];

/// The styles that are image filters applied after rendering.
pub const FILTER_STYLES: &[&str] = &["photographic", "cinematic", "anime", "watercolor", "oil_painting", "sketch", "pixel_art", "neon"];

pub fn is_filter_style(style: &str) -> bool {
    FILTER_STYLES.contains(&style)
}

pub fn parse_style(s: &str) -> Result<String> {
    if STYLES.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(Error::invalid(format!("style must be one of {}", STYLES.join(", "))))
    }
}

/// Encoded file format of an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Png,
    Jpeg,
    Webp,
}

impl OutputFormat {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "png" => Ok(OutputFormat::Png),
            "jpeg" | "jpg" => Ok(OutputFormat::Jpeg),
            "webp" => Ok(OutputFormat::Webp),
            _ => Err(Error::invalid("output_format must be one of png, jpeg, webp")),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Png => "png",
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Webp => "webp",
        }
    }
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Png => "image/png",
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Webp => "image/webp",
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Png => "png",
            OutputFormat::Jpeg => "jpg",
            OutputFormat::Webp => "webp",
        }
    }
    pub fn from_content_type(ct: &str) -> Option<Self> {
        [OutputFormat::Png, OutputFormat::Jpeg, OutputFormat::Webp].into_iter().find(|f| f.content_type() == ct)
    }
}

/// Background of generated images. `transparent` needs PNG or WebP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Background {
    #[default]
    Auto,
    Transparent,
    Opaque,
}

impl Background {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Background::Auto),
            "transparent" => Ok(Background::Transparent),
            "opaque" => Ok(Background::Opaque),
            _ => Err(Error::invalid("background must be one of auto, transparent, opaque")),
        }
    }
}

/// How outputs are encoded: format, `compression` (the JPEG/WebP quality,
/// 0–100, 100 = best; ignored for PNG, which is lossless) and background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Output {
    pub format: OutputFormat,
    pub compression: u8,
    pub background: Background,
}

impl Default for Output {
    fn default() -> Self {
        Output { format: OutputFormat::Png, compression: 100, background: Background::Auto }
    }
}

impl Output {
    /// Validates the combination: compression within 0–100, and a
    /// transparent background only with a format that has alpha.
    pub fn new(format: OutputFormat, compression: Option<u32>, background: Background) -> Result<Self> {
        let compression = compression.unwrap_or(100);
        if compression > 100 {
            return Err(Error::invalid("output_compression must be between 0 and 100"));
        }
        if background == Background::Transparent && format == OutputFormat::Jpeg {
            return Err(Error::invalid("a transparent background needs output_format png or webp"));
        }
        Ok(Output { format, compression: compression as u8, background })
    }
}

/// What a generate task asks for, kept as JSON in `tasks.params`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateParams {
    pub size: ImageSize,
    pub style: String,
    pub n: u32,
    pub seed: u64,
    #[serde(default)]
    pub output: Output,
    /// Preview frames to stream per image before the final one (0–3).
    #[serde(default)]
    pub partial_images: u32,
    /// The price-list quality it was charged at (absent: `standard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<String>,
}

/// An edit: the first source image is edited where the mask (or, without
/// one, the image's own alpha) is fully transparent; further sources are
/// references. `size` absent = the first source's size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditParams {
    pub sources: Vec<String>,
    #[serde(default)]
    pub mask: Option<String>,
    #[serde(default)]
    pub size: Option<ImageSize>,
    pub style: String,
    pub n: u32,
    pub seed: u64,
    #[serde(default)]
    pub output: Output,
    /// Preview frames to stream per image before the final one (0–3).
    #[serde(default)]
    pub partial_images: u32,
}

/// New images in the palette and composition family of a source image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariationParams {
    pub source: String,
    #[serde(default)]
    pub size: Option<ImageSize>,
    pub n: u32,
    pub seed: u64,
    #[serde(default)]
    pub output: Output,
}

/// Upscaling factors accepted by the upscale action.
pub const UPSCALE_FACTORS: &[u32] = &[2, 4];
/// The long side an upscale never exceeds ("4K").
pub const UPSCALE_MAX_SIDE: u32 = 4096;

/// An upscale of a source image by `factor`, capped at [`UPSCALE_MAX_SIDE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpscaleParams {
    pub source: String,
    pub factor: u32,
    #[serde(default)]
    pub output: Output,
}

/// A source image redrawn in a style (any of [`STYLES`] except `none`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestyleParams {
    pub source: String,
    pub style: String,
    #[serde(default)]
    pub output: Output,
}

pub fn parse_upscale_factor(factor: u32) -> Result<u32> {
    if UPSCALE_FACTORS.contains(&factor) {
        Ok(factor)
    } else {
        Err(Error::invalid("factor must be 2 or 4"))
    }
}

/// The size an upscale by `factor` produces: `factor` times the source,
/// scaled down (aspect kept) so the long side is at most [`UPSCALE_MAX_SIDE`].
/// A source already at the cap cannot be upscaled.
pub fn upscale_size((width, height): (u32, u32), factor: u32) -> Result<(u32, u32)> {
    let factor = parse_upscale_factor(factor)?;
    let long = width.max(height);
    if width == 0 || height == 0 {
        return Err(Error::invalid("empty image"));
    }
    if long >= UPSCALE_MAX_SIDE {
        return Err(Error::invalid(format!("the image is already {UPSCALE_MAX_SIDE} pixels on its long side")));
    }
    let target_long = (u64::from(long) * u64::from(factor)).min(u64::from(UPSCALE_MAX_SIDE));
    let scale = |side: u32| ((u64::from(side) * target_long + u64::from(long) / 2) / u64::from(long)).max(1) as u32;
    Ok((scale(width), scale(height)))
}

pub fn parse_restyle_style(s: &str) -> Result<String> {
    let style = parse_style(s)?;
    if style == "none" {
        return Err(Error::invalid("choose a style to restyle with"));
    }
    Ok(style)
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
    fn upscale_sizes_are_capped_at_4k() {
        assert_eq!(upscale_size((1024, 1024), 4).unwrap(), (4096, 4096));
        assert_eq!(upscale_size((1536, 1024), 4).unwrap(), (4096, 2731));
        assert_eq!(upscale_size((1536, 1024), 2).unwrap(), (3072, 2048));
        assert_eq!(upscale_size((512, 512), 2).unwrap(), (1024, 1024));
        assert!(upscale_size((4096, 100), 2).is_err());
        assert!(upscale_size((100, 100), 3).is_err());
    }

    #[test]
    fn output_options_are_checked() {
        assert!(Output::new(OutputFormat::Jpeg, Some(101), Background::Auto).is_err());
        assert!(Output::new(OutputFormat::Jpeg, None, Background::Transparent).is_err());
        assert_eq!(Output::new(OutputFormat::Webp, Some(50), Background::Transparent).unwrap().compression, 50);
        // Rows written before `output` existed still parse.
        let p: GenerateParams = serde_json::from_str(r#"{"size":{"width":256,"height":256},"style":"none","n":1,"seed":3}"#).unwrap();
        assert_eq!(p.output, Output::default());
        assert_eq!(OutputFormat::parse("jpg").unwrap(), OutputFormat::Jpeg);
        assert!(STYLES.iter().filter(|s| is_filter_style(s)).count() >= 8);
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
