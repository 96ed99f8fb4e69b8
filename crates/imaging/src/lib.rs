//! Pixel work: PNG encode/decode with a size guard, thumbnails.
//!
//! Other crates use [`RgbaImage`] from here so they need not depend on `image`.

use std::io::Cursor;

use domain::{Error, ErrorCode, Result};
use image::codecs::png::{CompressionType, FilterType, PngDecoder, PngEncoder};
use image::{DynamicImage, ImageDecoder, ImageEncoder};

pub use image::RgbaImage;

pub const PNG_CONTENT_TYPE: &str = "image/png";

/// Default pixel budget for decoding untrusted images.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// Limits applied when decoding untrusted bytes. Issue 5 extends this
/// (byte limits, per-side limits) and feeds it from config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_pixels: DEFAULT_MAX_PIXELS }
    }
}

/// An encoded image ready to store or serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

fn invalid_image(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::InvalidImage, message)
}

pub fn encode_png(img: &RgbaImage) -> Result<Encoded> {
    let (width, height) = img.dimensions();
    if width == 0 || height == 0 {
        return Err(Error::invalid("cannot encode an empty image"));
    }
    // Rough guess: smooth generated images compress well.
    let mut bytes = Vec::with_capacity(img.as_raw().len() / 4);
    PngEncoder::new_with_quality(&mut bytes, CompressionType::Default, FilterType::Adaptive)
        .write_image(img.as_raw(), width, height, image::ExtendedColorType::Rgba8)
        .map_err(|e| Error::internal(format!("png encoding failed: {e}")))?;
    Ok(Encoded { bytes, content_type: PNG_CONTENT_TYPE, width, height })
}

/// Decodes a PNG with [`DecodeLimits::default`].
pub fn decode_png(bytes: &[u8]) -> Result<RgbaImage> {
    decode_png_with(bytes, &DecodeLimits::default())
}

/// Decodes a PNG to RGBA8. The pixel budget is checked against the header
/// before any pixel buffer is allocated.
pub fn decode_png_with(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbaImage> {
    let (w, h) = png_dimensions(bytes)?;
    if u64::from(w) * u64::from(h) > limits.max_pixels {
        return Err(invalid_image("image too large"));
    }
    // image's default Limits cap allocations at 512 MiB (16-bit RGBA at the pixel cap fits).
    let decoder = PngDecoder::with_limits(Cursor::new(bytes), image::Limits::default()).map_err(|e| invalid_image(format!("invalid png: {e}")))?;
    if decoder.dimensions() != (w, h) {
        return Err(invalid_image("invalid png: inconsistent header"));
    }
    let img = DynamicImage::from_decoder(decoder).map_err(|e| invalid_image(format!("invalid png: {e}")))?;
    Ok(img.into_rgba8())
}

/// Width and height from the IHDR chunk, validated (signature, chunk type,
/// CRC, non-zero sides) without decoding anything else.
pub fn png_dimensions(bytes: &[u8]) -> Result<(u32, u32)> {
    const SIGNATURE: [u8; 8] = [137, 80, 78, 71, 13, 10, 26, 10];
    // signature(8) + length(4) + "IHDR"(4) + data(13) + crc(4)
    if bytes.len() < 33 || bytes[..8] != SIGNATURE {
        return Err(invalid_image("not a png image"));
    }
    if bytes[8..12] != [0, 0, 0, 13] || &bytes[12..16] != b"IHDR" {
        return Err(invalid_image("invalid png: missing IHDR"));
    }
    let crc = u32::from_be_bytes([bytes[29], bytes[30], bytes[31], bytes[32]]);
    if crc32(&bytes[12..29]) != crc {
        return Err(invalid_image("invalid png: bad IHDR checksum"));
    }
    let w = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    let h = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
    // The PNG spec caps sides at 2^31 - 1.
    if w == 0 || h == 0 || w > i32::MAX as u32 || h > i32::MAX as u32 {
        return Err(invalid_image("invalid png: bad dimensions"));
    }
    Ok((w, h))
}

/// Thumbnail whose longer side is at most `max_side`, aspect ratio kept,
/// never upscaled. The shorter side is rounded to nearest (min 1 px), so
/// 1536x1024 at 256 gives 256x171.
pub fn thumbnail_png(img: &RgbaImage, max_side: u32) -> Result<Encoded> {
    let (w, h) = thumbnail_size(img.dimensions(), max_side)?;
    if (w, h) == img.dimensions() {
        return encode_png(img);
    }
    encode_png(&image::imageops::thumbnail(img, w, h))
}

/// The size [`thumbnail_png`] produces for an image of `(width, height)`.
pub fn thumbnail_size((width, height): (u32, u32), max_side: u32) -> Result<(u32, u32)> {
    if max_side == 0 || width == 0 || height == 0 {
        return Err(Error::invalid("thumbnail of an empty image or to size 0"));
    }
    let long = width.max(height);
    if long <= max_side {
        return Ok((width, height));
    }
    let scale = |side: u32| -> u32 {
        let (side, long, max) = (u64::from(side), u64::from(long), u64::from(max_side));
        ((side * max + long / 2) / long).max(1) as u32
    };
    Ok((scale(width), scale(height)))
}

/// CRC-32 (ISO-HDLC, as PNG uses); only ever run over a few bytes here.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(w: u32, h: u32) -> RgbaImage {
        RgbaImage::from_fn(w, h, |x, y| image::Rgba([(x * 7) as u8, (y * 13) as u8, ((x ^ y) * 3) as u8, (x + y) as u8]))
    }

    /// A tiny valid PNG with its IHDR patched to claim `w`x`h`, CRC recomputed.
    fn png_claiming(w: u32, h: u32) -> Vec<u8> {
        let mut bytes = encode_png(&sample(2, 2)).unwrap().bytes;
        bytes[16..20].copy_from_slice(&w.to_be_bytes());
        bytes[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn crc32_matches_known_vector() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn encode_decode_round_trip_is_pixel_identical() {
        let img = sample(37, 23);
        let enc = encode_png(&img).unwrap();
        assert_eq!((enc.content_type, enc.width, enc.height), ("image/png", 37, 23));
        assert_eq!(png_dimensions(&enc.bytes).unwrap(), (37, 23));
        assert_eq!(decode_png(&enc.bytes).unwrap(), img);
    }

    #[test]
    fn thumbnail_keeps_aspect_ratio_and_rounds_to_nearest() {
        let t = thumbnail_png(&sample(1536, 1024), 256).unwrap();
        assert_eq!((t.width, t.height), (256, 171));
        assert_eq!(png_dimensions(&t.bytes).unwrap(), (256, 171));
        assert_eq!(thumbnail_size((1024, 1536), 256).unwrap(), (171, 256));
        assert_eq!(thumbnail_size((1024, 1024), 256).unwrap(), (256, 256));
        assert_eq!(thumbnail_size((4000, 1), 256).unwrap(), (256, 1));
    }

    #[test]
    fn thumbnail_never_upscales() {
        let img = sample(100, 50);
        let t = thumbnail_png(&img, 256).unwrap();
        assert_eq!((t.width, t.height), (100, 50));
        assert_eq!(decode_png(&t.bytes).unwrap(), img);
    }

    #[test]
    fn garbage_is_invalid_image() {
        for bad in [&b""[..], b"hello world", &[137, 80, 78, 71, 13, 10, 26, 10, 0, 0]] {
            assert_eq!(decode_png(bad).unwrap_err().code, ErrorCode::InvalidImage);
            assert_eq!(png_dimensions(bad).unwrap_err().code, ErrorCode::InvalidImage);
        }
        // Valid header, corrupted body.
        let mut bytes = encode_png(&sample(16, 16)).unwrap().bytes;
        let n = bytes.len();
        bytes[n - 30..n - 12].fill(0xAB);
        assert_eq!(decode_png(&bytes).unwrap_err().code, ErrorCode::InvalidImage);
        // Truncated.
        let bytes = encode_png(&sample(16, 16)).unwrap().bytes;
        assert_eq!(decode_png(&bytes[..bytes.len() / 2]).unwrap_err().code, ErrorCode::InvalidImage);
    }

    #[test]
    fn bad_ihdr_checksum_is_invalid_image() {
        let mut bytes = png_claiming(3, 3);
        bytes[32] ^= 1;
        assert_eq!(png_dimensions(&bytes).unwrap_err().code, ErrorCode::InvalidImage);
    }

    #[test]
    fn huge_header_is_refused_before_decoding() {
        let bytes = png_claiming(100_000, 100_000);
        assert_eq!(png_dimensions(&bytes).unwrap(), (100_000, 100_000));
        let err = decode_png(&bytes).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (ErrorCode::InvalidImage, "image too large"));
        // Just over the budget is refused too; the limit is configurable.
        let tight = DecodeLimits { max_pixels: 3 };
        assert_eq!(decode_png_with(&png_claiming(2, 2), &tight).unwrap_err().message, "image too large");
    }
}
