//! Safe decoding of untrusted bytes.
//!
//! Order of checks, cheapest first, nothing large allocated before the last:
//! byte length → magic bytes → our own header parse (dimensions; for JPEG a
//! walk of the marker structure that also proves the file is not truncated)
//! → side and pixel limits → the real decoder, whose header must agree with
//! ours, with `image::Limits` capping its allocations as a second fence.
//! A panic inside a decoder is caught and reported as `invalid_image`.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use domain::params::OutputFormat as Format;
use domain::Result;
use image::codecs::jpeg::JpegDecoder;
use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, RgbaImage};

use crate::{crc32, invalid_image, jpeg, too_large};

/// Default largest upload, in bytes (25 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 25 * 1024 * 1024;
/// Default pixel budget for decoding untrusted images (40 MP).
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;
/// Default longest side, either way.
pub const DEFAULT_MAX_SIDE: u32 = 16_384;

/// Limits applied when decoding untrusted bytes; from config (`[imaging]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    pub max_bytes: u64,
    pub max_width: u32,
    pub max_height: u32,
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_width: DEFAULT_MAX_SIDE,
            max_height: DEFAULT_MAX_SIDE,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

impl DecodeLimits {
    fn check(&self, width: u32, height: u32) -> Result<()> {
        if width > self.max_width || height > self.max_height {
            return Err(too_large(format!("image is {width}x{height}; the limit is {}x{}", self.max_width, self.max_height)));
        }
        if u64::from(width) * u64::from(height) > self.max_pixels {
            return Err(too_large(format!("image has {} pixels; the limit is {}", u64::from(width) * u64::from(height), self.max_pixels)));
        }
        Ok(())
    }

    /// The allocation cap handed to the decoders: the pixel budget at the
    /// widest intermediate format (16-bit RGBA) plus room for metadata.
    fn alloc_budget(&self) -> u64 {
        self.max_pixels.saturating_mul(8).saturating_add(16 << 20)
    }
}

/// What the header says, before any decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub format: Format,
    pub width: u32,
    pub height: u32,
}

/// A decoded image, upright (EXIF orientation applied), RGBA8, and nothing
/// else: metadata is not carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub image: RgbaImage,
    pub format: Format,
    /// The EXIF orientation that was applied (1 = none).
    pub orientation: u8,
}

/// The format from the magic bytes; the name and the claimed content type
/// are never consulted.
pub fn sniff(bytes: &[u8]) -> Result<Format> {
    if bytes.starts_with(&PNG_SIGNATURE) {
        Ok(Format::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Ok(Format::Jpeg)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Ok(Format::Webp)
    } else {
        Err(invalid_image("not a PNG, JPEG or WebP image"))
    }
}

/// Format and dimensions from the header, checked against `limits`.
pub fn probe(bytes: &[u8], limits: &DecodeLimits) -> Result<Probe> {
    if bytes.len() as u64 > limits.max_bytes {
        return Err(too_large(format!("image is {} bytes; the limit is {}", bytes.len(), limits.max_bytes)));
    }
    let format = sniff(bytes)?;
    let (width, height) = match format {
        Format::Png => png_dimensions(bytes)?,
        Format::Jpeg => jpeg::scan(bytes)?,
        Format::Webp => webp_dimensions(bytes)?,
    };
    limits.check(width, height)?;
    Ok(Probe { format, width, height })
}

/// Decodes PNG, JPEG or WebP bytes to upright RGBA8 within `limits`.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Decoded> {
    catch_unwind(AssertUnwindSafe(|| decode_unguarded(bytes, limits)))
        .unwrap_or_else(|_| Err(invalid_image("the image could not be decoded")))
}

/// [`decode`] without the panic guard, for the fuzz target: a panic there is
/// a finding.
#[doc(hidden)]
pub fn decode_unguarded(bytes: &[u8], limits: &DecodeLimits) -> Result<Decoded> {
    let probe = probe(bytes, limits)?;
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(limits.max_width.max(limits.max_height));
    image_limits.max_image_height = Some(limits.max_width.max(limits.max_height));
    image_limits.max_alloc = Some(limits.alloc_budget());
    let name = probe.format.as_str();
    let err = |e: ImageError| decode_error(name, e);
    let (img, orientation) = match probe.format {
        Format::Png => {
            finish(PngDecoder::with_limits(Cursor::new(bytes), image_limits.clone()).map_err(err)?, &probe, limits, image_limits)?
        }
        Format::Jpeg => finish(JpegDecoder::new(Cursor::new(bytes)).map_err(err)?, &probe, limits, image_limits)?,
        Format::Webp => finish(WebPDecoder::new(Cursor::new(bytes)).map_err(err)?, &probe, limits, image_limits)?,
    };
    Ok(Decoded { image: img, format: probe.format, orientation })
}

fn finish<D: ImageDecoder>(mut decoder: D, probe: &Probe, limits: &DecodeLimits, image_limits: image::Limits) -> Result<(RgbaImage, u8)> {
    let name = probe.format.as_str();
    if decoder.dimensions() != (probe.width, probe.height) {
        return Err(invalid_image(format!("invalid {name}: inconsistent header")));
    }
    decoder.set_limits(image_limits).map_err(|e| decode_error(name, e))?;
    // Unreadable EXIF is not a reason to refuse the picture.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let (w, h) = match orientation {
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH => {
            (probe.height, probe.width)
        }
        _ => (probe.width, probe.height),
    };
    limits.check(w, h)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(name, e))?;
    img.apply_orientation(orientation);
    Ok((img.into_rgba8(), exif_number(orientation)))
}

fn exif_number(o: Orientation) -> u8 {
    match o {
        Orientation::NoTransforms => 1,
        Orientation::FlipHorizontal => 2,
        Orientation::Rotate180 => 3,
        Orientation::FlipVertical => 4,
        Orientation::Rotate90FlipH => 5,
        Orientation::Rotate90 => 6,
        Orientation::Rotate270FlipH => 7,
        Orientation::Rotate270 => 8,
    }
}

fn decode_error(format: &str, e: ImageError) -> domain::Error {
    match e {
        ImageError::Limits(l) => too_large(format!("{format} exceeds the decoding limits: {l}")),
        other => invalid_image(format!("invalid {format}: {other}")),
    }
}

/// Decodes for a picture whose long side will be `target_long`: a JPEG is
/// decoded at 1/2, 1/4 or 1/8 scale in the DCT domain when its long side
/// still stays at least `target_long` (what `vips thumbnail` calls
/// shrink-on-load); other formats decode in full.
pub fn decode_scaled(bytes: &[u8], limits: &DecodeLimits, target_long: u32) -> Result<Decoded> {
    let probe = probe(bytes, limits)?;
    if probe.format != Format::Jpeg || probe.width.max(probe.height) < target_long.saturating_mul(2) {
        return decode(bytes, limits);
    }
    catch_unwind(AssertUnwindSafe(|| decode_jpeg_scaled(bytes, &probe, limits, target_long)))
        .unwrap_or_else(|_| Err(invalid_image("the image could not be decoded")))
}

/// [`decode_scaled`] without the panic guard, for the fuzz target.
#[doc(hidden)]
pub fn decode_scaled_unguarded(bytes: &[u8], limits: &DecodeLimits, target_long: u32) -> Result<Decoded> {
    let probe = probe(bytes, limits)?;
    if probe.format != Format::Jpeg || probe.width.max(probe.height) < target_long.saturating_mul(2) {
        return decode_unguarded(bytes, limits);
    }
    decode_jpeg_scaled(bytes, &probe, limits, target_long)
}

fn decode_jpeg_scaled(bytes: &[u8], probe: &Probe, limits: &DecodeLimits, target_long: u32) -> Result<Decoded> {
    let bad = |e: jpeg_decoder::Error| invalid_image(format!("invalid jpeg: {e}"));
    let mut d = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    d.set_max_decoding_buffer_size(usize::try_from(limits.alloc_budget()).unwrap_or(usize::MAX));
    d.read_info().map_err(bad)?;
    let info = d.info().ok_or_else(|| invalid_image("invalid jpeg: no frame"))?;
    if (u32::from(info.width), u32::from(info.height)) != (probe.width, probe.height) {
        return Err(invalid_image("invalid jpeg: inconsistent header"));
    }
    // The decoder picks the smallest DCT scale whose output is at least the
    // requested size, so the long side stays >= target_long.
    let scale = (probe.width.max(probe.height) / target_long.max(1)).clamp(1, 8);
    let want = |side: u32| u16::try_from(side.div_ceil(scale)).unwrap_or(u16::MAX);
    let (w, h) = d.scale(want(probe.width), want(probe.height)).map_err(bad)?;
    let pixels = d.decode().map_err(bad)?;
    let info = d.info().ok_or_else(|| invalid_image("invalid jpeg: no frame"))?;
    let (w, h) = (u32::from(w), u32::from(h));
    let n = (w as usize) * (h as usize);
    let mut rgba = Vec::with_capacity(n * 4);
    match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 if pixels.len() == n * 3 => {
            for p in pixels.chunks_exact(3) {
                rgba.extend_from_slice(&[p[0], p[1], p[2], 255]);
            }
        }
        jpeg_decoder::PixelFormat::L8 if pixels.len() == n => {
            for &l in &pixels {
                rgba.extend_from_slice(&[l, l, l, 255]);
            }
        }
        jpeg_decoder::PixelFormat::L16 if pixels.len() == n * 2 => {
            for p in pixels.chunks_exact(2) {
                rgba.extend_from_slice(&[p[0], p[0], p[0], 255]);
            }
        }
        jpeg_decoder::PixelFormat::CMYK32 if pixels.len() == n * 4 => {
            // Adobe CMYK JPEGs are stored inverted; this is the usual naive conversion.
            for p in pixels.chunks_exact(4) {
                let k = u16::from(p[3]);
                let c = |v: u8| ((u16::from(v) * k + 127) / 255) as u8;
                rgba.extend_from_slice(&[c(p[0]), c(p[1]), c(p[2]), 255]);
            }
        }
        _ => return Err(invalid_image("invalid jpeg: unexpected pixel data")),
    }
    let img = RgbaImage::from_raw(w, h, rgba).ok_or_else(|| invalid_image("invalid jpeg: unexpected pixel data"))?;
    let orientation = d.exif_data().and_then(Orientation::from_exif_chunk).unwrap_or(Orientation::NoTransforms);
    let mut dynamic = DynamicImage::ImageRgba8(img);
    dynamic.apply_orientation(orientation);
    Ok(Decoded { image: dynamic.into_rgba8(), format: Format::Jpeg, orientation: exif_number(orientation) })
}

/// Decodes a PNG with [`DecodeLimits::default`].
pub fn decode_png(bytes: &[u8]) -> Result<RgbaImage> {
    decode_png_with(bytes, &DecodeLimits::default())
}

/// Decodes bytes that must be a PNG.
pub fn decode_png_with(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbaImage> {
    if sniff(bytes)? != Format::Png {
        return Err(invalid_image("not a png image"));
    }
    Ok(decode(bytes, limits)?.image)
}

const PNG_SIGNATURE: [u8; 8] = [137, 80, 78, 71, 13, 10, 26, 10];

/// Width and height from the IHDR chunk, validated (signature, chunk type,
/// CRC, non-zero sides) without decoding anything else.
pub fn png_dimensions(bytes: &[u8]) -> Result<(u32, u32)> {
    // signature(8) + length(4) + "IHDR"(4) + data(13) + crc(4)
    if bytes.len() < 33 || bytes[..8] != PNG_SIGNATURE {
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

/// Canvas size of a WebP file from its first chunk (VP8, VP8L or VP8X); the
/// RIFF length must fit in the bytes we have.
fn webp_dimensions(bytes: &[u8]) -> Result<(u32, u32)> {
    let bad = |m: &str| invalid_image(format!("invalid webp: {m}"));
    if bytes.len() < 30 {
        return Err(bad("too short"));
    }
    let riff_len = u64::from(u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]));
    if riff_len + 8 > bytes.len() as u64 {
        return Err(bad("truncated"));
    }
    let chunk = &bytes[12..16];
    let data = &bytes[20..];
    let (w, h) = match chunk {
        b"VP8X" => {
            let w = 1 + u32::from_le_bytes([data[4], data[5], data[6], 0]);
            let h = 1 + u32::from_le_bytes([data[7], data[8], data[9], 0]);
            (w, h)
        }
        b"VP8L" => {
            if data[0] != 0x2F {
                return Err(bad("bad lossless signature"));
            }
            let bits = u32::from_le_bytes([data[1], data[2], data[3], data[4]]);
            ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
        }
        b"VP8 " => {
            if data[3..6] != [0x9D, 0x01, 0x2A] {
                return Err(bad("bad lossy start code"));
            }
            let w = u32::from(u16::from_le_bytes([data[6], data[7]]) & 0x3FFF);
            let h = u32::from(u16::from_le_bytes([data[8], data[9]]) & 0x3FFF);
            (w, h)
        }
        _ => return Err(bad("unknown first chunk")),
    };
    if w == 0 || h == 0 {
        return Err(bad("zero dimension"));
    }
    Ok((w, h))
}
