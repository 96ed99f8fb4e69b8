//! Encoders. Pixels in, bytes out: no watermark, no metadata (C10, C11).

use domain::params::{Output, OutputFormat as Format};
use domain::{Error, Result};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ImageEncoder, RgbaImage};

use crate::ops::is_opaque;

/// An encoded image ready to store or serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

impl Encoded {
    pub fn format(&self) -> Format {
        Format::from_content_type(self.content_type).unwrap_or(Format::Png)
    }
}

fn check_size(img: &RgbaImage) -> Result<(u32, u32)> {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::invalid("cannot encode an empty image"));
    }
    Ok((w, h))
}

/// Encodes as `output` asks: PNG losslessly, JPEG and WebP with
/// `output.compression` as the quality (0–100, 100 = best).
pub fn encode(img: &RgbaImage, output: &Output) -> Result<Encoded> {
    match output.format {
        Format::Png => encode_png(img),
        Format::Jpeg => encode_jpeg(img, output.compression),
        Format::Webp => encode_webp(img, output.compression),
    }
}

/// Lossless PNG: decoding gives back exactly these pixels.
pub fn encode_png(img: &RgbaImage) -> Result<Encoded> {
    let (width, height) = check_size(img)?;
    // Large images (upscales) use the fast deflate: several times quicker
    // for a few percent more bytes.
    let compression = if u64::from(width) * u64::from(height) > 4_200_000 { CompressionType::Fast } else { CompressionType::Default };
    let mut bytes = Vec::with_capacity(img.as_raw().len() / 4);
    PngEncoder::new_with_quality(&mut bytes, compression, FilterType::Adaptive)
        .write_image(img.as_raw(), width, height, image::ExtendedColorType::Rgba8)
        .map_err(|e| Error::internal(format!("png encoding failed: {e}")))?;
    Ok(Encoded { bytes, content_type: Format::Png.content_type(), width, height })
}

/// Composites onto `background` where the image is not opaque.
pub fn flatten(img: &RgbaImage, background: [u8; 3]) -> RgbaImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        let a = u32::from(p.0[3]);
        if a == 255 {
            continue;
        }
        for c in 0..3 {
            p.0[c] = ((u32::from(p.0[c]) * a + u32::from(background[c]) * (255 - a) + 127) / 255) as u8;
        }
        p.0[3] = 255;
    }
    out
}

/// Baseline JPEG (4:2:0 below quality 90, 4:4:4 from 90). JPEG has no alpha:
/// transparent areas are flattened onto white.
pub fn encode_jpeg(img: &RgbaImage, quality: u8) -> Result<Encoded> {
    let (width, height) = check_size(img)?;
    let (w16, h16) = match (u16::try_from(width), u16::try_from(height)) {
        (Ok(w), Ok(h)) if w < u16::MAX && h < u16::MAX => (w, h),
        _ => return Err(Error::invalid("JPEG sides are limited to 65534 pixels")),
    };
    let flat;
    let src = if is_opaque(img) {
        img
    } else {
        flat = flatten(img, [255, 255, 255]);
        &flat
    };
    let mut bytes = Vec::with_capacity((width as usize * height as usize) / 4);
    let encoder = jpeg_encoder::Encoder::new(&mut bytes, quality.clamp(1, 100));
    encoder
        .encode(src.as_raw(), w16, h16, jpeg_encoder::ColorType::Rgba)
        .map_err(|e| Error::internal(format!("jpeg encoding failed: {e}")))?;
    Ok(Encoded { bytes, content_type: Format::Jpeg.content_type(), width, height })
}

/// Lossy WebP (libwebp) at `quality`; alpha is kept (and omitted from the
/// file when the image is opaque).
pub fn encode_webp(img: &RgbaImage, quality: u8) -> Result<Encoded> {
    let (width, height) = check_size(img)?;
    if width > 16_383 || height > 16_383 {
        return Err(Error::invalid("WebP sides are limited to 16383 pixels"));
    }
    let mut config = webp::WebPConfig::new().map_err(|_| Error::internal("webp configuration failed"))?;
    config.lossless = 0;
    config.quality = f32::from(quality.min(100));
    config.method = 4;
    let memory = webp::Encoder::from_rgba(img.as_raw(), width, height)
        .encode_advanced(&config)
        .map_err(|e| Error::internal(format!("webp encoding failed: {e:?}")))?;
    Ok(Encoded { bytes: memory.to_vec(), content_type: Format::Webp.content_type(), width, height })
}
