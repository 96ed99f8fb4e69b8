//! Mask compositing for edits. The convention is OpenAI's: where the mask is
//! fully transparent (alpha 0) the image is regenerated; everywhere else the
//! original pixels are kept exactly.

use domain::{Error, Result};
use image::RgbaImage;

use crate::ops::resize_nearest;

/// True when some pixel has alpha 0.
pub fn has_transparency(img: &RgbaImage) -> bool {
    img.as_raw().chunks_exact(4).any(|p| p[3] == 0)
}

/// An image with transparent areas is its own mask (as in OpenAI's edits
/// without a mask); `None` when the image is fully opaque.
pub fn mask_from_alpha(img: &RgbaImage) -> Option<RgbaImage> {
    has_transparency(img).then(|| img.clone())
}

/// Pixels where `mask` has alpha 0 take `fill`, blended with the original
/// over the `feather` pixels nearest the mask's edge (inside the masked area)
/// so the seam does not show; every other pixel is the original, unchanged.
/// `fill` must have the original's size; the mask is resized (nearest) to it.
pub fn composite_masked(original: &RgbaImage, fill: &RgbaImage, mask: &RgbaImage, feather: u32) -> Result<RgbaImage> {
    let (w, h) = original.dimensions();
    if fill.dimensions() != (w, h) {
        return Err(Error::internal("fill and original differ in size"));
    }
    let resized;
    let mask = if mask.dimensions() == (w, h) {
        mask
    } else {
        resized = resize_nearest(mask, w, h)?;
        &resized
    };
    let weights = seam_weights(mask, feather);
    let mut out = original.clone();
    for ((o, f), &wt) in out.pixels_mut().zip(fill.pixels()).zip(&weights) {
        if wt == 0 {
            continue;
        }
        if wt >= 256 {
            *o = *f;
            continue;
        }
        for c in 0..4 {
            let (a, b) = (i32::from(o.0[c]), i32::from(f.0[c]));
            o.0[c] = (a + (((b - a) * i32::from(wt)) >> 8)) as u8;
        }
    }
    Ok(out)
}

/// Per pixel, how much of the fill shows, in 1/256ths: 0 outside the masked
/// area; inside it, rising with the (chamfer 3-4) distance to the nearest
/// kept pixel until 256 at `feather` pixels.
fn seam_weights(mask: &RgbaImage, feather: u32) -> Vec<u16> {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    const FAR: u32 = u32::MAX / 2;
    let mut d: Vec<u32> = mask.pixels().map(|p| if p.0[3] == 0 { FAR } else { 0 }).collect();
    // Two-pass chamfer distance transform, in thirds of a pixel.
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if d[i] == 0 {
                continue;
            }
            let mut best = d[i];
            if x > 0 {
                best = best.min(d[i - 1] + 3);
            }
            if y > 0 {
                best = best.min(d[i - w] + 3);
                if x > 0 {
                    best = best.min(d[i - w - 1] + 4);
                }
                if x + 1 < w {
                    best = best.min(d[i - w + 1] + 4);
                }
            }
            d[i] = best;
        }
    }
    for y in (0..h).rev() {
        for x in (0..w).rev() {
            let i = y * w + x;
            if d[i] == 0 {
                continue;
            }
            let mut best = d[i];
            if x + 1 < w {
                best = best.min(d[i + 1] + 3);
            }
            if y + 1 < h {
                best = best.min(d[i + w] + 3);
                if x + 1 < w {
                    best = best.min(d[i + w + 1] + 4);
                }
                if x > 0 {
                    best = best.min(d[i + w - 1] + 4);
                }
            }
            d[i] = best;
        }
    }
    let span = feather.max(1) * 3;
    d.into_iter()
        .map(|v| {
            if v == 0 {
                0
            } else if v >= span {
                256
            } else {
                ((v * 256) / span).max(1) as u16
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    #[test]
    fn only_transparent_mask_pixels_change_and_the_seam_is_gradual() {
        let original = RgbaImage::from_pixel(64, 32, Rgba([10, 20, 30, 255]));
        let fill = RgbaImage::from_pixel(64, 32, Rgba([250, 240, 230, 255]));
        // Right half masked.
        let mask = RgbaImage::from_fn(64, 32, |x, _| Rgba([0, 0, 0, if x >= 32 { 0 } else { 255 }]));
        let out = composite_masked(&original, &fill, &mask, 8).unwrap();
        for (x, y, p) in out.enumerate_pixels() {
            if x < 32 {
                assert_eq!(*p, *original.get_pixel(x, y));
            }
        }
        assert_eq!(*out.get_pixel(63, 5), *fill.get_pixel(63, 5), "deep inside: all fill");
        let (a, b) = (out.get_pixel(32, 5).0[0], out.get_pixel(36, 5).0[0]);
        assert!(a > 10 && a < b && b < 250, "seam ramps: {a} {b}");
        // A fully transparent mask replaces everything.
        let all = RgbaImage::from_pixel(8, 8, Rgba([0, 0, 0, 0]));
        let out = composite_masked(
            &RgbaImage::from_pixel(8, 8, Rgba([1, 1, 1, 255])),
            &RgbaImage::from_pixel(8, 8, Rgba([9, 9, 9, 255])),
            &all,
            4,
        )
        .unwrap();
        assert!(out.pixels().all(|p| p.0 == [9, 9, 9, 255]));
    }
}
