//! Uploads: decoded with limits, turned upright, re-encoded from pixels only.

use domain::params::OutputFormat as Format;
use domain::{Error, Result};
use image::RgbaImage;

use crate::decode::{decode, DecodeLimits};
use crate::encode::{encode_jpeg, encode_png, Encoded};

/// JPEG quality uploads are re-encoded at (4:4:4 from 90 up).
pub const UPLOAD_JPEG_QUALITY: u8 = 95;

/// An upload ready to store: `encoded` holds no metadata at all (no EXIF,
/// GPS, camera fields, XMP or ICC: C11) and is upright, and `image` is its
/// decoded pixels.
#[derive(Debug, Clone)]
pub struct Sanitized {
    pub encoded: Encoded,
    pub image: RgbaImage,
    pub source_format: Format,
    /// The EXIF orientation that was applied (1 = none).
    pub orientation: u8,
}

/// Decodes untrusted upload bytes within `limits` and re-encodes the pixels:
/// a JPEG stays a JPEG (quality 95); PNG and WebP become lossless PNG, so
/// their pixels survive exactly.
pub fn sanitize_upload(bytes: &[u8], limits: &DecodeLimits) -> Result<Sanitized> {
    let decoded = decode(bytes, limits)?;
    let encoded = match decoded.format {
        Format::Jpeg => encode_jpeg(&decoded.image, UPLOAD_JPEG_QUALITY)?,
        Format::Png | Format::Webp => encode_png(&decoded.image)?,
    };
    if encoded.bytes.is_empty() {
        return Err(Error::internal("empty encoding"));
    }
    Ok(Sanitized { encoded, image: decoded.image, source_format: decoded.format, orientation: decoded.orientation })
}
