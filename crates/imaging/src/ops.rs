//! Resizing, upscaling, sharpening and thumbnails.

use domain::{Error, Result};
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbaImage;
use rayon::prelude::*;

use crate::decode::{decode_scaled, DecodeLimits};
use crate::encode::{encode_png, encode_webp, Encoded};

/// WebP quality of gallery thumbnails.
pub const THUMBNAIL_QUALITY: u8 = 80;

/// True when every pixel has alpha 255.
pub fn is_opaque(img: &RgbaImage) -> bool {
    img.as_raw().chunks_exact(4).all(|p| p[3] == 255)
}

fn resize_alg(img: &RgbaImage, width: u32, height: u32, alg: ResizeAlg) -> Result<RgbaImage> {
    if width == 0 || height == 0 || img.width() == 0 || img.height() == 0 {
        return Err(Error::invalid("cannot resize to or from an empty image"));
    }
    if img.dimensions() == (width, height) {
        return Ok(img.clone());
    }
    let src =
        ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x4).map_err(|e| Error::internal(format!("resize: {e}")))?;
    let mut dst = Image::new(width, height, PixelType::U8x4);
    // Opaque images skip the alpha multiply/divide (it would change nothing).
    // fast_image_resize premultiplies itself: never hand it premultiplied pixels.
    let options = ResizeOptions::new().resize_alg(alg).use_alpha(!is_opaque(img));
    Resizer::new().resize(&src, &mut dst, &options).map_err(|e| Error::internal(format!("resize: {e}")))?;
    RgbaImage::from_raw(width, height, dst.into_vec()).ok_or_else(|| Error::internal("resize: buffer size"))
}

/// Lanczos3 resize to exactly `width` x `height`, alpha-correct.
pub fn resize(img: &RgbaImage, width: u32, height: u32) -> Result<RgbaImage> {
    resize_alg(img, width, height, ResizeAlg::Convolution(FilterType::Lanczos3))
}

/// Nearest-neighbour resize: hard pixel edges (pixel art, masks).
pub fn resize_nearest(img: &RgbaImage, width: u32, height: u32) -> Result<RgbaImage> {
    resize_alg(img, width, height, ResizeAlg::Nearest)
}

/// Unsharp mask with a 3x3 binomial blur: `out = in + amount * (in - blur)`
/// on the colour channels; alpha is left alone. Rows run in parallel.
pub fn sharpen(img: &RgbaImage, amount: f32) -> RgbaImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w < 3 || h < 3 || amount <= 0.0 {
        return img.clone();
    }
    let src = img.as_raw();
    let stride = w * 4;
    // Fixed point: amount in 1/256ths.
    let k = (amount * 256.0).round() as i32;
    let mut out = vec![0u8; src.len()];
    // Written as straight slice arithmetic so it vectorizes; the border
    // columns and alpha are copied unchanged.
    out.par_chunks_mut(stride).enumerate().for_each_init(
        || vec![0u16; stride],
        |v, (y, row)| {
            let up = &src[y.saturating_sub(1) * stride..][..stride];
            let mid = &src[y * stride..][..stride];
            let down = &src[(y + 1).min(h - 1) * stride..][..stride];
            // Vertical [1 2 1] pass (x4 scale).
            for (((o, &a), &b), &c) in v.iter_mut().zip(up).zip(mid).zip(down) {
                *o = u16::from(a) + 2 * u16::from(b) + u16::from(c);
            }
            row.copy_from_slice(mid);
            let n = stride - 8;
            let (left, centre, right) = (&v[..n], &v[4..4 + n], &v[8..]);
            for ((o, &m), ((&l, &c), &r)) in row[4..4 + n].iter_mut().zip(&mid[4..4 + n]).zip(left.iter().zip(centre).zip(right)) {
                let blur16 = i32::from(l) + 2 * i32::from(c) + i32::from(r); // x16
                let m = i32::from(m);
                *o = (m + ((((m << 4) - blur16) * k) >> 12)).clamp(0, 255) as u8;
            }
            for x in 1..w - 1 {
                row[x * 4 + 3] = mid[x * 4 + 3];
            }
        },
    );
    RgbaImage::from_raw(w as u32, h as u32, out).expect("same size")
}

/// The "4K upscale": Lanczos3 to `width` x `height` then a light sharpening
/// pass to restore edge contrast the interpolation softens.
pub fn upscale(img: &RgbaImage, width: u32, height: u32) -> Result<RgbaImage> {
    let resized = resize(img, width, height)?;
    Ok(sharpen(&resized, 0.35))
}

/// The size a thumbnail of `(width, height)` gets: the longer side at most
/// `max_side`, aspect ratio kept, never upscaled. The shorter side is rounded
/// to nearest (min 1 px), so 1536x1024 at 256 gives 256x171.
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

/// Gallery thumbnail: WebP at [`THUMBNAIL_QUALITY`], long side `max_side`.
pub fn thumbnail(img: &RgbaImage, max_side: u32) -> Result<Encoded> {
    let (w, h) = thumbnail_size(img.dimensions(), max_side)?;
    encode_webp(&resize(img, w, h)?, THUMBNAIL_QUALITY)
}

/// A PNG thumbnail (lossless), for callers that need exact pixels.
pub fn thumbnail_png(img: &RgbaImage, max_side: u32) -> Result<Encoded> {
    let (w, h) = thumbnail_size(img.dimensions(), max_side)?;
    encode_png(&resize(img, w, h)?)
}

/// A WebP thumbnail straight from encoded bytes; JPEGs are decoded at a
/// reduced DCT scale when that still leaves enough pixels.
pub fn thumbnail_from_bytes(bytes: &[u8], limits: &DecodeLimits, max_side: u32) -> Result<Encoded> {
    let decoded = decode_scaled(bytes, limits, max_side)?;
    // The scaled decode can only shrink; compute the target from the original
    // aspect ratio as seen after orientation.
    thumbnail(&decoded.image, max_side)
}
