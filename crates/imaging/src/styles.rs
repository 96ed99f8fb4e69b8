//! Style presets as image operations. The built-in engine applies the
//! filter styles (`domain::params::FILTER_STYLES`) after rendering, and the
//! restyle action applies any style but `none` to an existing image. Every
//! operation is deterministic: the same image, style and seed give the same
//! pixels. Alpha is kept as it was (except `pixel_art`, which quantizes it).

use domain::params::STYLES;
use domain::{Error, Result};
use image::RgbaImage;
use rayon::prelude::*;

use crate::ops::{resize, resize_nearest, sharpen};

type Rgb = [f32; 3];

/// Applies `style` to `img`. `seed` varies the paper and grain textures.
pub fn apply(style: &str, img: &RgbaImage, seed: u64) -> Result<RgbaImage> {
    if !STYLES.contains(&style) {
        return Err(Error::invalid(format!("style must be one of {}", STYLES.join(", "))));
    }
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::invalid("cannot restyle an empty image"));
    }
    let out = match style {
        "none" => img.clone(),
        "vivid" => per_pixel(img, |c, _, _| contrast(saturate(c, 1.35), 1.08)),
        "pastel" => per_pixel(img, |c, _, _| mix(saturate(c, 0.55), [1.0; 3], 0.28)),
        "noir" => {
            let grain = Grain(seed);
            per_pixel(img, move |c, x, y| {
                let l = contrast_1(luma(c), 1.3) + (grain.at(x, y) - 0.5) * 0.05;
                [l; 3]
            })
        }
        "sunset" => per_pixel(img, |c, _, _| tint(c, [0.85, 0.72, 1.0], [1.14, 0.94, 0.74])),
        "ocean" => per_pixel(img, |c, _, _| tint(c, [0.72, 0.95, 1.15], [0.9, 1.04, 1.1])),
        "forest" => per_pixel(img, |c, _, _| tint(c, [0.8, 1.0, 0.78], [1.02, 1.08, 0.84])),
        "photographic" => {
            let (w, h) = img.dimensions();
            let graded = per_pixel(img, move |c, x, y| vignette(saturate(contrast(c, 1.12), 1.08), x, y, w, h, 0.15));
            sharpen(&graded, 0.4)
        }
        "cinematic" => cinematic(img),
        "anime" => anime(img),
        "watercolor" => watercolor(img, seed),
        "oil_painting" => oil_painting(img),
        "sketch" => sketch(img, seed),
        "pixel_art" => pixel_art(img)?,
        "neon" => neon(img),
        _ => unreachable!("checked against STYLES"),
    };
    Ok(out)
}

// ---------------------------------------------------------------- helpers

fn luma(c: Rgb) -> f32 {
    0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]
}

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

fn saturate(c: Rgb, s: f32) -> Rgb {
    let l = luma(c);
    c.map(|v| l + (v - l) * s)
}

fn contrast_1(v: f32, k: f32) -> f32 {
    0.5 + (v - 0.5) * k
}

fn contrast(c: Rgb, k: f32) -> Rgb {
    c.map(|v| contrast_1(v, k))
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Multiplies by a tint that moves from `shadows` to `highlights` with luma.
fn tint(c: Rgb, shadows: Rgb, highlights: Rgb) -> Rgb {
    let t = mix(shadows, highlights, luma(c).clamp(0.0, 1.0));
    [c[0] * t[0], c[1] * t[1], c[2] * t[2]]
}

fn vignette(c: Rgb, x: u32, y: u32, w: u32, h: u32, strength: f32) -> Rgb {
    let dx = (x as f32 + 0.5) / w as f32 * 2.0 - 1.0;
    let dy = (y as f32 + 0.5) / h as f32 * 2.0 - 1.0;
    let r2 = (dx * dx + dy * dy) * 0.5;
    let v = 1.0 - strength * r2 * r2;
    c.map(|ch| ch * v)
}

/// Deterministic per-pixel noise in [0, 1).
#[derive(Clone, Copy)]
struct Grain(u64);

impl Grain {
    fn at(self, x: u32, y: u32) -> f32 {
        let mut z = self.0 ^ (u64::from(x) << 32 | u64::from(y)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn to_rgb(img: &RgbaImage) -> Vec<Rgb> {
    img.pixels().map(|p| [p.0[0], p.0[1], p.0[2]].map(|v| f32::from(v) / 255.0)).collect()
}

fn from_rgb(src: &RgbaImage, px: &[Rgb]) -> RgbaImage {
    let mut out = src.clone();
    for (o, c) in out.pixels_mut().zip(px) {
        for i in 0..3 {
            o.0[i] = (c[i].clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
        }
    }
    out
}

fn per_pixel(img: &RgbaImage, f: impl Fn(Rgb, u32, u32) -> Rgb + Sync) -> RgbaImage {
    let w = img.width() as usize;
    let mut out = img.clone();
    out.as_mut().par_chunks_mut(w * 4).enumerate().for_each(|(y, row)| {
        for (x, p) in row.chunks_exact_mut(4).enumerate() {
            let c = f([p[0], p[1], p[2]].map(|v| f32::from(v) / 255.0), x as u32, y as u32);
            for i in 0..3 {
                p[i] = (c[i].clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
            }
        }
    });
    out
}

/// Box blur of radius `r` on a plane of `T` (separable running sums).
fn box_blur<T: Copy + Default + std::ops::Add<Output = T> + std::ops::Sub<Output = T> + Scale + Send + Sync>(
    src: &[T],
    w: usize,
    h: usize,
    r: usize,
) -> Vec<T> {
    if r == 0 {
        return src.to_vec();
    }
    let norm = 1.0 / (2 * r + 1) as f32;
    let mut tmp = vec![T::default(); src.len()];
    tmp.par_chunks_mut(w).zip(src.par_chunks(w)).for_each(|(out, row)| blur_line(row, out, r, norm, 1));
    // Vertical pass on columns via a transpose-free strided walk.
    let mut out = vec![T::default(); src.len()];
    let cols: Vec<Vec<T>> = (0..w)
        .into_par_iter()
        .map(|x| {
            let col: Vec<T> = (0..h).map(|y| tmp[y * w + x]).collect();
            let mut res = vec![T::default(); h];
            blur_line(&col, &mut res, r, norm, 1);
            res
        })
        .collect();
    for (x, col) in cols.into_iter().enumerate() {
        for (y, v) in col.into_iter().enumerate() {
            out[y * w + x] = v;
        }
    }
    out
}

trait Scale {
    fn scale(self, k: f32) -> Self;
}
impl Scale for f32 {
    fn scale(self, k: f32) -> f32 {
        self * k
    }
}
#[derive(Clone, Copy, Default)]
struct V3(Rgb);
impl std::ops::Add for V3 {
    type Output = V3;
    fn add(self, o: V3) -> V3 {
        V3([self.0[0] + o.0[0], self.0[1] + o.0[1], self.0[2] + o.0[2]])
    }
}
impl std::ops::Sub for V3 {
    type Output = V3;
    fn sub(self, o: V3) -> V3 {
        V3([self.0[0] - o.0[0], self.0[1] - o.0[1], self.0[2] - o.0[2]])
    }
}
impl Scale for V3 {
    fn scale(self, k: f32) -> V3 {
        V3(self.0.map(|v| v * k))
    }
}

fn blur_line<T: Copy + Default + std::ops::Add<Output = T> + std::ops::Sub<Output = T> + Scale>(
    src: &[T],
    out: &mut [T],
    r: usize,
    norm: f32,
    _stride: usize,
) {
    let n = src.len();
    let at = |i: isize| src[i.clamp(0, n as isize - 1) as usize];
    let mut sum = T::default();
    for i in -(r as isize)..=(r as isize) {
        sum = sum + at(i);
    }
    for (x, o) in out.iter_mut().enumerate() {
        *o = sum.scale(norm);
        let x = x as isize;
        sum = sum + at(x + r as isize + 1) - at(x - r as isize);
    }
}

fn blur_rgb(px: &[Rgb], w: usize, h: usize, r: usize, passes: usize) -> Vec<Rgb> {
    let mut v: Vec<V3> = px.iter().map(|&c| V3(c)).collect();
    for _ in 0..passes {
        v = box_blur(&v, w, h, r);
    }
    v.into_iter().map(|c| c.0).collect()
}

fn blur_plane(p: &[f32], w: usize, h: usize, r: usize, passes: usize) -> Vec<f32> {
    let mut v = p.to_vec();
    for _ in 0..passes {
        v = box_blur(&v, w, h, r);
    }
    v
}

/// Sobel gradient magnitude of a plane (about 0..4 for a 0..1 plane).
fn sobel(p: &[f32], w: usize, h: usize) -> Vec<f32> {
    let at = |x: isize, y: isize| p[(y.clamp(0, h as isize - 1) as usize) * w + x.clamp(0, w as isize - 1) as usize];
    let mut out = vec![0.0; p.len()];
    out.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let y = y as isize;
        for (x, o) in row.iter_mut().enumerate() {
            let x = x as isize;
            let gx = at(x + 1, y - 1) + 2.0 * at(x + 1, y) + at(x + 1, y + 1) - at(x - 1, y - 1) - 2.0 * at(x - 1, y) - at(x - 1, y + 1);
            let gy = at(x - 1, y + 1) + 2.0 * at(x, y + 1) + at(x + 1, y + 1) - at(x - 1, y - 1) - 2.0 * at(x, y - 1) - at(x + 1, y - 1);
            *o = (gx * gx + gy * gy).sqrt();
        }
    });
    out
}

/// Filter radius that keeps the look similar across resolutions (1 at 512 px).
fn radius(img: &RgbaImage, base: f32) -> usize {
    let long = img.width().max(img.height()) as f32;
    ((base * long / 1024.0).round() as usize).max(1)
}

// ---------------------------------------------------------------- styles

fn cinematic(img: &RgbaImage) -> RgbaImage {
    let (w, h) = img.dimensions();
    // Letterbox to 2.39:1 when the picture is taller than that.
    let content_h = (w as f32 / 2.39).min(h as f32);
    let bar = ((h as f32 - content_h) / 2.0).floor() as u32;
    per_pixel(img, move |c, x, y| {
        if y < bar || y >= h - bar {
            return [0.0; 3];
        }
        let l = luma(c);
        let teal = [-0.06, 0.02, 0.08];
        let orange = [0.09, 0.03, -0.07];
        let shadow = (0.5 - l).max(0.0) * 1.4;
        let high = (l - 0.5).max(0.0) * 1.4;
        let graded = [0, 1, 2].map(|i| c[i] + teal[i] * shadow + orange[i] * high);
        vignette(contrast(saturate(graded, 0.92), 1.12), x, y, w, h, 0.3)
    })
}

fn anime(img: &RgbaImage) -> RgbaImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let base = blur_rgb(&to_rgb(img), w, h, radius(img, 2.0), 2);
    let lum: Vec<f32> = base.iter().map(|&c| luma(c)).collect();
    let edges = sobel(&lum, w, h);
    let px: Vec<Rgb> = base
        .par_iter()
        .zip(lum.par_iter().zip(edges.par_iter()))
        .map(|(&c, (&l, &e))| {
            // Cel shading: luma in four bands, hue kept.
            let band = ((l * 4.0).floor().min(3.0) + 0.6) / 4.0;
            let k = if l > 1e-3 { band / l } else { 0.0 };
            let cel = saturate(c.map(|v| v * k), 1.3);
            let line = smoothstep(0.18, 0.45, e);
            mix(cel, [0.07, 0.05, 0.1], line * 0.9)
        })
        .collect();
    from_rgb(img, &px)
}

fn watercolor(img: &RgbaImage, seed: u64) -> RgbaImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let base = blur_rgb(&to_rgb(img), w, h, radius(img, 3.0), 2);
    let lum: Vec<f32> = base.iter().map(|&c| luma(c)).collect();
    let edges = sobel(&lum, w, h);
    // Paper: blurred grain at two scales.
    let g = Grain(seed ^ 0x5741_5445);
    let grain: Vec<f32> = (0..w * h).map(|i| g.at((i % w) as u32, (i / w) as u32)).collect();
    let fine = blur_plane(&grain, w, h, 1, 1);
    let coarse = blur_plane(&grain, w, h, radius(img, 6.0), 2);
    let px: Vec<Rgb> = (0..w * h)
        .into_par_iter()
        .map(|i| {
            // Washes: a few tonal steps, lifted towards white paper.
            let c = base[i].map(|v| ((v * 7.0).round() / 7.0) * 0.6 + v * 0.4);
            let c = mix(saturate(c, 0.9), [1.0, 0.99, 0.96], 0.14);
            let wet_edge = 1.0 - 0.35 * smoothstep(0.04, 0.3, edges[i]);
            let paper = 0.9 + 0.06 * (fine[i] - 0.5) * 4.0 + 0.1 * (coarse[i] - 0.5) * 8.0;
            c.map(|v| v * wet_edge * paper.clamp(0.8, 1.05))
        })
        .collect();
    from_rgb(img, &px)
}

/// Kuwahara filter: each pixel takes the mean colour of the least varied of
/// its four quadrants, which flattens texture into brush-like patches while
/// keeping edges. Runs in strips so memory stays bounded on 4K images.
fn oil_painting(img: &RgbaImage) -> RgbaImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let r = radius(img, 4.0);
    let px = to_rgb(img);
    const STRIP: usize = 128;
    let strips: Vec<(usize, Vec<Rgb>)> = (0..h.div_ceil(STRIP))
        .into_par_iter()
        .map(|s| {
            let (y0, y1) = (s * STRIP, ((s + 1) * STRIP).min(h));
            (y0, kuwahara_strip(&px, w, h, y0, y1, r))
        })
        .collect();
    let mut out = vec![[0.0; 3]; w * h];
    for (y0, rows) in strips {
        out[y0 * w..y0 * w + rows.len()].copy_from_slice(&rows);
    }
    let painted = from_rgb(img, &out);
    let painted = per_pixel(&painted, |c, _, _| saturate(c, 1.15));
    sharpen(&painted, 0.5)
}

fn kuwahara_strip(px: &[Rgb], w: usize, h: usize, y0: usize, y1: usize, r: usize) -> Vec<Rgb> {
    // Summed-area tables over rows [top, bottom) with clamped borders.
    let top = y0 as isize - r as isize;
    let rows = (y1 - y0) + 2 * r;
    let cols = w + 2 * r;
    let sw = cols + 1;
    let mut sat = vec![[0.0f64; 5]; (rows + 1) * sw];
    for j in 0..rows {
        let y = (top + j as isize).clamp(0, h as isize - 1) as usize;
        let mut run = [0.0f64; 5];
        for i in 0..cols {
            let x = (i as isize - r as isize).clamp(0, w as isize - 1) as usize;
            let c = px[y * w + x];
            let l = f64::from(luma(c));
            let v = [f64::from(c[0]), f64::from(c[1]), f64::from(c[2]), l, l * l];
            for k in 0..5 {
                run[k] += v[k];
            }
            let above = sat[j * sw + i + 1];
            let cell = &mut sat[(j + 1) * sw + i + 1];
            for k in 0..5 {
                cell[k] = above[k] + run[k];
            }
        }
    }
    let area = ((r + 1) * (r + 1)) as f64;
    let rect = |x0: usize, y0: usize| -> [f64; 5] {
        let (x1, y1) = (x0 + r + 1, y0 + r + 1);
        let mut s = [0.0; 5];
        for k in 0..5 {
            s[k] = sat[y1 * sw + x1][k] - sat[y0 * sw + x1][k] - sat[y1 * sw + x0][k] + sat[y0 * sw + x0][k];
        }
        s
    };
    let mut out = Vec::with_capacity((y1 - y0) * w);
    for y in y0..y1 {
        let sy = y - y0 + r; // row of this pixel in strip coordinates
        for x in 0..w {
            let sx = x + r;
            let mut best = (f64::MAX, [0.0f32; 3]);
            for (qx, qy) in [(sx - r, sy - r), (sx, sy - r), (sx - r, sy), (sx, sy)] {
                let s = rect(qx, qy);
                let mean = s[3] / area;
                let var = s[4] / area - mean * mean;
                if var < best.0 {
                    best = (var, [(s[0] / area) as f32, (s[1] / area) as f32, (s[2] / area) as f32]);
                }
            }
            out.push(best.1);
        }
    }
    out
}

fn sketch(img: &RgbaImage, seed: u64) -> RgbaImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let gray: Vec<f32> = to_rgb(img).into_iter().map(luma).collect();
    let inv: Vec<f32> = gray.iter().map(|g| 1.0 - g).collect();
    let blurred = blur_plane(&inv, w, h, radius(img, 5.0), 3);
    let g = Grain(seed ^ 0x534B_4554);
    let px: Vec<Rgb> = (0..w * h)
        .into_par_iter()
        .map(|i| {
            // Colour dodge of the grey by its blurred negative: flat areas go
            // white, edges stay as pencil strokes.
            let dodge = (gray[i] / (1.0 - blurred[i]).max(1e-3)).min(1.0);
            let v = dodge.powf(2.2) * (0.96 + 0.04 * g.at((i % w) as u32, (i / w) as u32));
            [v, v * 0.985, v * 0.95]
        })
        .collect();
    from_rgb(img, &px)
}

fn pixel_art(img: &RgbaImage) -> Result<RgbaImage> {
    let (w, h) = img.dimensions();
    let long = w.max(h);
    let block = (long / 112).max(2);
    let (sw, sh) = ((w / block).max(1), (h / block).max(1));
    let mut small = resize(img, sw, sh)?;
    for p in small.pixels_mut() {
        let c = saturate([p.0[0], p.0[1], p.0[2]].map(|v| f32::from(v) / 255.0), 1.2);
        for i in 0..3 {
            // Five levels per channel: a 125-colour palette.
            p.0[i] = ((c[i].clamp(0.0, 1.0) * 4.0).round() * 63.75) as u8;
        }
        p.0[3] = if p.0[3] < 128 { 0 } else { 255 };
    }
    resize_nearest(&small, w, h)
}

fn neon(img: &RgbaImage) -> RgbaImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let base = blur_rgb(&to_rgb(img), w, h, 1, 1);
    let lum: Vec<f32> = base.iter().map(|&c| luma(c)).collect();
    let edges = sobel(&lum, w, h);
    // Edge colour: the picture's own hue pushed to full saturation.
    let lines: Vec<Rgb> = base
        .par_iter()
        .zip(edges.par_iter())
        .map(|(&c, &e)| {
            let s = saturate(c, 3.0).map(|v| v.clamp(0.0, 1.0));
            let m = s[0].max(s[1]).max(s[2]).max(0.2);
            let hue = s.map(|v| (v / m) * 0.8 + 0.2);
            hue.map(|v| v * smoothstep(0.08, 0.5, e))
        })
        .collect();
    let glow = blur_rgb(&lines, w, h, radius(img, 5.0), 2);
    let px: Vec<Rgb> =
        (0..w * h).into_par_iter().map(|i| [0, 1, 2].map(|k| base[i][k] * 0.16 + lines[i][k] * 1.1 + glow[i][k] * 1.8)).collect();
    from_rgb(img, &px)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    fn sample(w: u32, h: u32) -> RgbaImage {
        RgbaImage::from_fn(w, h, |x, y| {
            let inside = (x as i32 - 40).pow(2) + (y as i32 - 30).pow(2) < 400;
            if inside {
                Rgba([220, 60, 40, 255])
            } else {
                Rgba([(x * 2) as u8, (y * 3) as u8, 150, 255])
            }
        })
    }

    #[test]
    fn every_style_keeps_the_size_and_changes_pixels_deterministically() {
        let img = sample(96, 64);
        let mut results = Vec::new();
        for style in STYLES {
            let a = apply(style, &img, 7).unwrap();
            assert_eq!(a.dimensions(), (96, 64), "{style}");
            assert_eq!(a, apply(style, &img, 7).unwrap(), "{style} is deterministic");
            if *style == "none" {
                assert_eq!(a, img);
            } else {
                assert_ne!(a, img, "{style} changed nothing");
            }
            results.push(a);
        }
        for i in 0..results.len() {
            for j in i + 1..results.len() {
                assert_ne!(results[i], results[j], "{} == {}", STYLES[i], STYLES[j]);
            }
        }
        assert!(apply("sepia", &img, 1).is_err());
    }

    #[test]
    fn tiny_images_survive_every_style() {
        for (w, h) in [(1, 1), (2, 7), (5, 1)] {
            let img = RgbaImage::from_pixel(w, h, Rgba([10, 200, 30, 255]));
            for style in STYLES {
                assert_eq!(apply(style, &img, 1).unwrap().dimensions(), (w, h), "{style} {w}x{h}");
            }
        }
    }

    #[test]
    fn blur_of_a_flat_plane_is_flat() {
        let p = vec![0.5f32; 30 * 20];
        assert!(blur_plane(&p, 30, 20, 3, 2).iter().all(|v| (v - 0.5).abs() < 1e-5));
    }
}
