//! Pixel work for uploads, outputs, thumbnails and the built-in engine.
//!
//! - [`decode`]: PNG, JPEG and WebP only, chosen by magic bytes; limits on
//!   bytes, sides and pixels checked from the header before any pixel buffer
//!   is allocated; the EXIF orientation applied. Decoding keeps pixels only,
//!   so no metadata (EXIF, XMP, GPS, ICC) survives a decode → encode (C11).
//! - [`encode`]: PNG (lossless), JPEG and lossy WebP with a quality; nothing
//!   is ever drawn onto the pixels (C10).
//! - [`resize`] / [`upscale`]: Lanczos3 through `fast_image_resize` (SIMD,
//!   alpha-correct), the upscale adds a light sharpening pass.
//! - [`thumbnail`]: WebP, long side `max_side`, never upscaled.
//! - [`styles`]: the style presets as image operations.
//! - [`composite_masked`]: mask compositing for edits.
//!
//! Other crates use [`RgbaImage`] from here so they need not depend on `image`.

mod decode;
mod encode;
mod jpeg;
mod mask;
mod ops;
pub mod styles;
mod upload;

pub use decode::{
    decode, decode_png, decode_png_with, decode_scaled, decode_scaled_unguarded, decode_unguarded, png_dimensions, probe, sniff,
    DecodeLimits, Decoded, Probe, DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE,
};
pub use domain::params::OutputFormat as Format;
pub use encode::{encode, encode_jpeg, encode_png, encode_webp, flatten, Encoded};
pub use image::{Rgba, RgbaImage};
pub use mask::{composite_masked, has_transparency, mask_from_alpha};
pub use ops::{
    is_opaque, resize, resize_nearest, sharpen, thumbnail, thumbnail_from_bytes, thumbnail_png, thumbnail_size, upscale, THUMBNAIL_QUALITY,
};
pub use upload::{sanitize_upload, Sanitized, UPLOAD_JPEG_QUALITY};

pub const PNG_CONTENT_TYPE: &str = "image/png";
pub const JPEG_CONTENT_TYPE: &str = "image/jpeg";
pub const WEBP_CONTENT_TYPE: &str = "image/webp";

use domain::{Error, ErrorCode};

pub(crate) fn invalid_image(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::InvalidImage, message)
}

pub(crate) fn too_large(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::ImageTooLarge, message)
}

/// CRC-32 (ISO-HDLC, as PNG uses); only ever run over a few bytes here.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
