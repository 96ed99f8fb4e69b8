//! The built-in procedural engine: an offline, deterministic painter of
//! layered scenes, read from the prompt.
//!
//! The prompt is read for colour words (the palette's hue), light and
//! time-of-day words (dawn, day, dusk, night: sky construction, sun or moon,
//! stars), weather (fog, snow, rain, storm, fireflies) and a lexicon of
//! subjects (`lexicon.rs`) that choose the composition: mountain, sea, lake
//! (with a rippled mirror reflection), forest, desert landscapes; a city
//! skyline with lit windows; space (nebula, planets, dense stars); abstract
//! geometry; flowers in the foreground; a portrait silhouette with rim light.
//! Palette styles (vivid, pastel, noir, sunset, ocean, forest) choose the
//! colours; filter styles (photographic … neon) are `imaging::styles`
//! operations applied to the rendered scene.
//!
//! Every choice comes from a SplitMix64 stream seeded by SHA-256 of the
//! request, so equal inputs give equal pixels (on the same build: `sin`/`exp`
//! come from the platform's libm).
//!
//! Cost: the smooth sky is evaluated on a grid every `SKY_STEP` pixels and
//! interpolated; everything sharp (silhouettes, stars, discs, shapes) is per
//! pixel but cheap, with per-column ridge tables and per-row buckets.

use domain::params::{is_filter_style, Background};
use domain::{Error, Result};
use imaging::RgbaImage;
use sha2::{Digest, Sha256};

use crate::lexicon::{self, Reading, Subject, Time};
use crate::{BoxFuture, Capabilities, EditRequest, Engine, EngineImage, GenerateRequest, Observer, PartialImage, VariationRequest};

/// Largest side the procedural engine renders.
pub const MAX_SIDE: u32 = 4096;
/// Most images per request.
pub const MAX_N: u32 = 16;
/// Most partial frames per image.
pub const MAX_PARTIAL_IMAGES: u32 = 3;

pub const MODEL: &str = "atelier-procedural-v1";
/// What the UI and `/v1/models` call it: it is not a neural model.
pub const LABEL: &str = "built-in procedural engine";
const SKY_STEP: usize = 4;

#[derive(Debug, Default, Clone, Copy)]
pub struct ProceduralEngine;

/// Everything one rendering needs.
#[derive(Clone)]
struct Job {
    prompt: String,
    style: String,
    seed: u64,
    width: u32,
    height: u32,
    background: Background,
    partial_images: u32,
    /// Extra seed material: the operation and, for variations, the source.
    salt: Vec<u8>,
    /// A palette taken from an image (variations).
    palette_source: Option<RgbaImage>,
    /// A colour the palette leans towards (edits: the kept area's mean).
    lean: Option<(Rgb, f32)>,
}

impl Engine for ProceduralEngine {
    fn name(&self) -> &str {
        "procedural"
    }

    fn model(&self) -> &str {
        MODEL
    }

    fn label(&self) -> &str {
        LABEL
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            edit: true,
            variation: true,
            max_partial_images: MAX_PARTIAL_IMAGES,
            transparent_background: true,
            max_side: MAX_SIDE,
            max_n: MAX_N,
        }
    }

    fn generate<'a>(&'a self, req: &'a GenerateRequest, observer: Observer) -> BoxFuture<'a, Result<Vec<EngineImage>>> {
        Box::pin(async move {
            validate(req.width, req.height, req.n, req.partial_images)?;
            domain::params::parse_style(&req.style)?;
            let job = Job {
                prompt: req.prompt.clone(),
                style: req.style.clone(),
                seed: req.seed,
                width: req.width,
                height: req.height,
                background: req.background,
                partial_images: req.partial_images,
                salt: Vec::new(),
                palette_source: None,
                lean: None,
            };
            run(job, req.n, observer, |_, img| Ok(img)).await
        })
    }

    fn edit<'a>(&'a self, req: &'a EditRequest, observer: Observer) -> BoxFuture<'a, Result<Vec<EngineImage>>> {
        Box::pin(async move {
            validate(req.width, req.height, req.n, req.partial_images)?;
            domain::params::parse_style(&req.style)?;
            let Some(first) = req.images.first() else {
                return Err(Error::invalid("an edit needs at least one image"));
            };
            if req.images.len() > 16 {
                return Err(Error::invalid("at most 16 images"));
            }
            let (w, h) = (req.width, req.height);
            let base = imaging::resize(first, w, h)?;
            let mask = match &req.mask {
                Some(m) => Some(imaging::resize_nearest(m, w, h)?),
                None => imaging::mask_from_alpha(&base),
            };
            // The fill leans towards the colours of what is kept and of the
            // reference images, so it belongs in the picture.
            let mut lean = mean_colour(&base, mask.as_ref());
            for reference in &req.images[1..] {
                let m = mean_colour(reference, None);
                lean = mix(lean, m, 0.25);
            }
            let job = Job {
                prompt: req.prompt.clone(),
                style: req.style.clone(),
                seed: req.seed,
                width: w,
                height: h,
                background: req.background,
                partial_images: req.partial_images,
                salt: b"edit".to_vec(),
                palette_source: None,
                lean: Some((lean, 0.3)),
            };
            let feather = (w.max(h) / 48).max(4);
            run(job, req.n, observer, move |_, fill| match &mask {
                Some(mask) => {
                    // Kept pixels are the original's, byte for byte; the seam
                    // is blended inside the painted area.
                    imaging::composite_masked(&base, &fill, mask, feather)
                }
                None => {
                    // Nothing marked: the whole picture is repainted, keeping
                    // a trace of the original's structure.
                    let mut out = fill;
                    for (o, b) in out.pixels_mut().zip(base.pixels()) {
                        for c in 0..3 {
                            o.0[c] = ((u16::from(o.0[c]) * 13 + u16::from(b.0[c]) * 7) / 20) as u8;
                        }
                    }
                    Ok(out)
                }
            })
            .await
        })
    }

    fn variation<'a>(&'a self, req: &'a VariationRequest, observer: Observer) -> BoxFuture<'a, Result<Vec<EngineImage>>> {
        Box::pin(async move {
            validate(req.width, req.height, req.n, req.partial_images)?;
            if req.image.width() == 0 || req.image.height() == 0 {
                return Err(Error::invalid("a variation needs an image"));
            }
            // 16x16 is all the palette needs and makes the fingerprint stable.
            let small = imaging::resize(&req.image, 16, 16)?;
            let job = Job {
                prompt: String::new(),
                style: "none".into(),
                seed: req.seed,
                width: req.width,
                height: req.height,
                background: Background::Auto,
                partial_images: req.partial_images,
                salt: [b"variation".as_slice(), small.as_raw()].concat(),
                palette_source: Some(small),
                lean: None,
            };
            run(job, req.n, observer, |_, img| Ok(img)).await
        })
    }
}

fn validate(width: u32, height: u32, n: u32, partial_images: u32) -> Result<()> {
    if !(1..=MAX_SIDE).contains(&width) || !(1..=MAX_SIDE).contains(&height) {
        return Err(Error::invalid(format!("width and height must be between 1 and {MAX_SIDE}")));
    }
    if !(1..=MAX_N).contains(&n) {
        return Err(Error::invalid(format!("n must be between 1 and {MAX_N}")));
    }
    if partial_images > MAX_PARTIAL_IMAGES {
        return Err(Error::invalid(format!("partial_images must be between 0 and {MAX_PARTIAL_IMAGES}")));
    }
    Ok(())
}

/// Renders `n` images on the blocking pool, one after another, reporting
/// progress and partial frames; `finish` turns each rendering into the output.
async fn run(
    job: Job,
    n: u32,
    observer: Observer,
    finish: impl Fn(u32, RgbaImage) -> Result<RgbaImage> + Send + Sync + Clone + 'static,
) -> Result<Vec<EngineImage>> {
    observer.progress(0);
    let mut images = Vec::with_capacity(n as usize);
    for index in 0..n {
        let (job, observer, finish) = (job.clone(), observer.clone(), finish.clone());
        let image = tokio::task::spawn_blocking(move || {
            let progress = |pct: u8| observer.progress(((index * 100 + u32::from(pct)) / n) as u8);
            let partial = |k: u32, img: RgbaImage| -> Result<()> {
                let image = finish(index, img)?;
                observer.partial(PartialImage { index, partial_index: k, image });
                Ok(())
            };
            let rendered = render(&job, index, &progress, &partial)?;
            finish(index, rendered)
        })
        .await
        .map_err(|e| Error::internal(format!("procedural render failed: {e}")))??;
        images.push(EngineImage { image });
    }
    observer.progress(100);
    Ok(images)
}

/// Mean colour of the pixels the mask keeps (alpha > 0), or of all pixels.
fn mean_colour(img: &RgbaImage, mask: Option<&RgbaImage>) -> Rgb {
    let mut sum = [0.0f64; 3];
    let mut count = 0.0f64;
    let step = ((img.width() as usize * img.height() as usize) / 65_536).max(1);
    for (i, p) in img.pixels().enumerate().step_by(step) {
        let keep = mask.map(|m| m.as_raw().get(i * 4 + 3).is_some_and(|&a| a > 0)).unwrap_or(true);
        if keep && p.0[3] > 0 {
            for c in 0..3 {
                sum[c] += f64::from(p.0[c]);
            }
            count += 1.0;
        }
    }
    if count == 0.0 {
        return [0.5; 3];
    }
    sum.map(|v| (v / count / 255.0) as f32)
}

// ---------------------------------------------------------------- randomness

/// First 8 bytes of SHA-256 over length-prefixed parts (no ambiguity between
/// e.g. prompt "ab"+style "c" and "a"+"bc").
fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f32()
    }
    fn chance(&mut self, p: f32) -> bool {
        self.f32() < p
    }
    fn phase(&mut self) -> f32 {
        self.range(0.0, std::f32::consts::TAU)
    }
}

/// Hash of a lattice point, in [0, 1).
fn lattice(seed: u64, i: i64) -> f32 {
    Rng(seed ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)).f32()
}

/// Smooth 1-D value noise in [0, 1).
fn value_noise(seed: u64, x: f32) -> f32 {
    let i = x.floor();
    let f = x - i;
    let f = f * f * (3.0 - 2.0 * f);
    let i = i as i64;
    lerp(lattice(seed, i), lattice(seed, i + 1), f)
}

/// Fractal noise in about [0, 1]; `ridged` folds each octave into sharp crests.
fn fbm(seed: u64, x: f32, octaves: u32, ridged: bool) -> f32 {
    let (mut sum, mut amp, mut freq, mut norm) = (0.0, 0.5, 1.0, 0.0);
    for o in 0..octaves {
        let mut n = value_noise(seed.wrapping_add(u64::from(o) * 0x1000_0001), x * freq);
        if ridged {
            n = 1.0 - (2.0 * n - 1.0).abs();
            n *= n;
        }
        sum += n * amp;
        norm += amp;
        amp *= 0.5;
        freq *= 2.03;
    }
    sum / norm
}

// ---------------------------------------------------------------- colour

type Rgb = [f32; 3];

fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [lerp(a[0], b[0], t), lerp(a[1], b[1], t), lerp(a[2], b[2], t)]
}

fn screen(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [0, 1, 2].map(|i| 1.0 - (1.0 - a[i]) * (1.0 - b[i] * t))
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// HSL to RGB; hue in degrees (any value), s and l in [0, 1].
fn hsl(h: f32, s: f32, l: f32) -> Rgb {
    let h = h.rem_euclid(360.0) / 60.0;
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    [r + m, g + m, b + m]
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Terrain {
    Mountains,
    Hills,
    Waves,
    Forest,
}

struct Palette {
    /// Sky stops from the zenith to the horizon.
    sky: [Rgb; 4],
    /// Sun or moon, halo, bokeh.
    glow: Rgb,
    /// Light ribbons and cloud highlights.
    accent: Rgb,
    land_far: Rgb,
    land_near: Rgb,
    night: bool,
    bokeh: bool,
    terrain: Terrain,
}

impl Palette {
    fn for_style(style: &str, prompt: &str, reading: &Reading, rng: &mut Rng) -> Palette {
        let j = |rng: &mut Rng, h: f32, d: f32| h + rng.range(-d, d);
        match style {
            "vivid" => {
                // A cool zenith reads as sky whichever way the hues turn.
                let h = rng.range(190.0, 330.0);
                let dir = if rng.chance(0.5) { 1.0 } else { -1.0 };
                Palette {
                    sky: [
                        hsl(h, 0.85, 0.2),
                        hsl(h + dir * 35.0, 0.9, 0.42),
                        hsl(h + dir * 70.0, 0.95, 0.56),
                        hsl(h + dir * 100.0, 1.0, 0.68),
                    ],
                    glow: hsl(h + dir * 120.0, 1.0, 0.8),
                    accent: hsl(h - dir * 60.0, 1.0, 0.62),
                    land_far: hsl(h + dir * 20.0, 0.6, 0.34),
                    land_near: hsl(h - dir * 10.0, 0.75, 0.1),
                    night: rng.chance(0.3),
                    bokeh: true,
                    terrain: if rng.chance(0.6) { Terrain::Mountains } else { Terrain::Hills },
                }
            }
            "pastel" => {
                let h = rng.range(0.0, 360.0);
                Palette {
                    sky: [hsl(h, 0.5, 0.72), hsl(h + 25.0, 0.55, 0.8), hsl(h + 50.0, 0.6, 0.86), hsl(h + 70.0, 0.7, 0.9)],
                    glow: hsl(h + 180.0, 0.8, 0.95),
                    accent: hsl(h + 140.0, 0.6, 0.86),
                    land_far: hsl(h + 10.0, 0.3, 0.76),
                    land_near: hsl(h - 25.0, 0.35, 0.58),
                    night: false,
                    bokeh: true,
                    terrain: if rng.chance(0.7) { Terrain::Hills } else { Terrain::Mountains },
                }
            }
            "noir" => Palette {
                sky: [hsl(0.0, 0.0, 0.03), hsl(0.0, 0.0, 0.12), hsl(0.0, 0.0, 0.34), hsl(0.0, 0.0, 0.6)],
                glow: hsl(0.0, 0.0, 0.97),
                accent: hsl(0.0, 0.0, 0.75),
                land_far: hsl(0.0, 0.0, 0.24),
                land_near: hsl(0.0, 0.0, 0.02),
                night: true,
                bokeh: rng.chance(0.3),
                terrain: if rng.chance(0.6) { Terrain::Mountains } else { Terrain::Forest },
            },
            "sunset" => Palette {
                sky: [
                    hsl(j(rng, 255.0, 15.0), 0.55, 0.16),
                    hsl(j(rng, 310.0, 15.0), 0.5, 0.38),
                    hsl(j(rng, 18.0, 8.0), 0.85, 0.58),
                    hsl(j(rng, 42.0, 6.0), 0.95, 0.72),
                ],
                glow: hsl(j(rng, 45.0, 8.0), 1.0, 0.86),
                accent: hsl(j(rng, 335.0, 15.0), 0.75, 0.66),
                land_far: hsl(j(rng, 285.0, 15.0), 0.3, 0.32),
                land_near: hsl(j(rng, 270.0, 15.0), 0.4, 0.08),
                night: rng.chance(0.5),
                bokeh: rng.chance(0.4),
                terrain: if rng.chance(0.6) { Terrain::Mountains } else { Terrain::Hills },
            },
            "ocean" => Palette {
                sky: [
                    hsl(j(rng, 222.0, 8.0), 0.65, 0.12),
                    hsl(j(rng, 208.0, 8.0), 0.6, 0.3),
                    hsl(j(rng, 192.0, 8.0), 0.55, 0.5),
                    hsl(j(rng, 178.0, 8.0), 0.5, 0.72),
                ],
                glow: hsl(j(rng, 50.0, 10.0), 0.5, 0.92),
                accent: hsl(j(rng, 165.0, 15.0), 0.7, 0.62),
                land_far: hsl(j(rng, 200.0, 10.0), 0.5, 0.38),
                land_near: hsl(j(rng, 215.0, 10.0), 0.65, 0.1),
                night: true,
                bokeh: rng.chance(0.3),
                terrain: Terrain::Waves,
            },
            "forest" => Palette {
                sky: [
                    hsl(j(rng, 195.0, 10.0), 0.35, 0.55),
                    hsl(j(rng, 160.0, 10.0), 0.25, 0.68),
                    hsl(j(rng, 85.0, 10.0), 0.3, 0.78),
                    hsl(j(rng, 55.0, 8.0), 0.5, 0.86),
                ],
                glow: hsl(j(rng, 50.0, 8.0), 0.9, 0.92),
                accent: hsl(j(rng, 120.0, 20.0), 0.4, 0.84),
                land_far: hsl(j(rng, 150.0, 10.0), 0.2, 0.48),
                land_near: hsl(j(rng, 140.0, 10.0), 0.45, 0.09),
                night: false,
                bokeh: rng.chance(0.5),
                terrain: Terrain::Forest,
            },
            // "none" and the filter styles: the colours follow the prompt alone
            // (colour and time words, else a hash), so one prompt keeps its
            // palette across seeds while the composition changes.
            _ => Palette::from_prompt(prompt, reading),
        }
    }

    /// A palette from the prompt: colour words set the hue, time words the
    /// light; subjects pick the land colours and the terrain.
    fn from_prompt(prompt: &str, reading: &Reading) -> Palette {
        let mut p = Rng(hash64(&[b"palette", prompt.as_bytes()]));
        let hashed_hue = p.range(0.0, 360.0);
        let s = if reading.muted && reading.hue.is_none() {
            0.25
        } else if reading.muted {
            0.6
        } else {
            1.0
        };
        let terrain = terrain_for(reading, &mut p);
        let desert = reading.has(Subject::Desert);
        match reading.time {
            Some(Time::Night) => {
                let hz = reading.hue.unwrap_or(226.0 + p.range(-15.0, 15.0));
                Palette {
                    sky: [hsl(hz, 0.6 * s, 0.04), hsl(hz, 0.55 * s, 0.09), hsl(hz + 8.0, 0.5 * s, 0.17), hsl(hz + 20.0, 0.45 * s, 0.3)],
                    glow: hsl(48.0, 0.35, 0.92),
                    accent: hsl(hz - 40.0, 0.6 * s, 0.55),
                    land_far: hsl(hz, 0.3 * s, 0.15),
                    land_near: hsl(hz, 0.35 * s, 0.035),
                    night: true,
                    bokeh: p.chance(0.5),
                    terrain,
                }
            }
            Some(Time::Day) => {
                let hz = reading.hue.unwrap_or(208.0 + p.range(-8.0, 8.0));
                let (far, near) = match (terrain, desert) {
                    (_, true) => (hsl(34.0, 0.55, 0.64), hsl(24.0, 0.55, 0.38)),
                    (Terrain::Forest, _) => (hsl(135.0, 0.35, 0.42), hsl(140.0, 0.5, 0.13)),
                    (Terrain::Mountains, _) => (hsl(215.0, 0.22, 0.55), hsl(150.0, 0.3, 0.2)),
                    (Terrain::Waves, _) => (hsl(198.0, 0.6, 0.45), hsl(212.0, 0.7, 0.2)),
                    (Terrain::Hills, _) => (hsl(100.0, 0.4, 0.5), hsl(112.0, 0.5, 0.22)),
                };
                Palette {
                    sky: [
                        hsl(hz, 0.62 * s, 0.4),
                        hsl(hz - 4.0, 0.58 * s, 0.53),
                        hsl(hz - 10.0, 0.5 * s, 0.68),
                        hsl(hz - 20.0, 0.4 * s, 0.86),
                    ],
                    glow: hsl(50.0, 0.9, 0.95),
                    accent: hsl(hz, 0.25 * s, 0.96),
                    land_far: far,
                    land_near: near,
                    night: false,
                    bokeh: false,
                    terrain,
                }
            }
            Some(t @ (Time::Dawn | Time::Dusk)) => {
                let lift = if t == Time::Dawn { 0.07 } else { 0.0 };
                let hz = reading.hue.unwrap_or(if t == Time::Dawn { 340.0 } else { 14.0 } + p.range(-8.0, 8.0));
                Palette {
                    sky: [
                        hsl(250.0 + p.range(-12.0, 12.0), 0.45 * s, 0.17 + lift),
                        hsl(300.0 + p.range(-15.0, 15.0), 0.45 * s, 0.36 + lift),
                        hsl(hz, 0.8 * s, 0.58 + lift),
                        hsl(hz + 30.0, 0.95 * s, 0.72 + lift),
                    ],
                    glow: hsl(45.0, 1.0, 0.86),
                    accent: hsl(hz - 30.0, 0.7 * s, 0.66),
                    land_far: hsl(280.0, 0.3 * s, 0.3 + lift),
                    land_near: hsl(265.0, 0.4 * s, 0.08),
                    night: t == Time::Dusk && p.chance(0.4),
                    bokeh: p.chance(0.4),
                    terrain,
                }
            }
            None => {
                let h = reading.hue.unwrap_or(hashed_hue);
                let step = p.range(15.0, 45.0) * if p.chance(0.5) { 1.0 } else { -1.0 };
                let sat = p.range(0.45, 0.9) * s;
                let (lo, hi) = if p.chance(0.35) { (0.1, 0.62) } else { (0.3, 0.85) };
                let l = |k: f32| lerp(lo, hi, k);
                Palette {
                    sky: [
                        hsl(h, sat, l(0.0)),
                        hsl(h + step, sat, l(0.4)),
                        hsl(h + 2.0 * step, sat, l(0.75)),
                        hsl(h + 3.0 * step, sat, l(1.0)),
                    ],
                    glow: hsl(h + 3.0 * step + 20.0, 0.9, 0.9),
                    accent: hsl(h + 180.0, sat, 0.65),
                    land_far: hsl(h - step, sat * 0.5, lerp(lo, hi, 0.55)),
                    land_near: hsl(h - 2.0 * step, sat * 0.7, lo * 0.6),
                    night: lo < 0.2,
                    bokeh: p.chance(0.5),
                    terrain,
                }
            }
        }
    }

    /// A palette taken from a 16x16 reduction of an image: sky stops from the
    /// upper bands, land from the lower ones, glow from the brightest pixel,
    /// accent from the most saturated one. The terrain family comes from the
    /// image's fingerprint, so every variation of one image shares it.
    fn from_image(small: &RgbaImage) -> Palette {
        let px = |x: u32, y: u32| -> Rgb {
            let p = small.get_pixel(x.min(small.width() - 1), y.min(small.height() - 1)).0;
            [p[0], p[1], p[2]].map(|v| f32::from(v) / 255.0)
        };
        let band = |y0: u32, y1: u32| -> Rgb {
            let mut sum = [0.0; 3];
            let mut n = 0.0;
            for y in y0..y1 {
                for x in 0..16 {
                    let c = px(x, y);
                    sum = [sum[0] + c[0], sum[1] + c[1], sum[2] + c[2]];
                    n += 1.0;
                }
            }
            sum.map(|v| v / n)
        };
        let luma = |c: Rgb| 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
        let sat = |c: Rgb| c[0].max(c[1]).max(c[2]) - c[0].min(c[1]).min(c[2]);
        let (mut glow, mut accent) = (px(0, 0), px(0, 0));
        for y in 0..16 {
            for x in 0..16 {
                let c = px(x, y);
                if luma(c) > luma(glow) {
                    glow = c;
                }
                if sat(c) > sat(accent) {
                    accent = c;
                }
            }
        }
        let sky = [band(0, 2), band(2, 5), band(5, 8), band(8, 10)];
        let mut f = Rng(hash64(&[b"variation-family", small.as_raw()]));
        Palette {
            sky,
            glow: mix(glow, [1.0; 3], 0.3),
            accent,
            land_far: band(10, 13),
            land_near: band(13, 16),
            night: luma(sky[0]) < 0.18,
            bokeh: f.chance(0.5),
            terrain: [Terrain::Mountains, Terrain::Hills, Terrain::Waves, Terrain::Forest][(f.next_u64() % 4) as usize],
        }
    }

    /// Leans every colour towards `c` by `t`.
    fn lean(&mut self, c: Rgb, t: f32) {
        for s in &mut self.sky {
            *s = mix(*s, c, t);
        }
        for s in [&mut self.glow, &mut self.accent, &mut self.land_far, &mut self.land_near] {
            *s = mix(*s, c, t);
        }
    }

    fn sky_at(&self, t: f32) -> Rgb {
        let t = t.clamp(0.0, 1.0) * 3.0;
        let i = (t as usize).min(2);
        let f = t - i as f32;
        mix(self.sky[i], self.sky[i + 1], f * f * (3.0 - 2.0 * f))
    }
}

fn terrain_for(reading: &Reading, p: &mut Rng) -> Terrain {
    for s in &reading.subjects {
        match s {
            Subject::Mountains | Subject::Lake => return Terrain::Mountains,
            Subject::Sea => return Terrain::Waves,
            Subject::Forest => return Terrain::Forest,
            Subject::Desert | Subject::Flowers => return Terrain::Hills,
            _ => {}
        }
    }
    [Terrain::Mountains, Terrain::Hills, Terrain::Waves, Terrain::Forest][(p.next_u64() % 4) as usize]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Composition {
    Landscape,
    Lake,
    City,
    Space,
    Abstract,
}

/// The first subject that decides the layout wins.
fn composition_for(reading: &Reading) -> Composition {
    for s in &reading.subjects {
        match s {
            Subject::Space => return Composition::Space,
            Subject::Abstract => return Composition::Abstract,
            Subject::City => return Composition::City,
            Subject::Lake => return Composition::Lake,
            Subject::Portrait => {}
            _ => return Composition::Landscape,
        }
    }
    Composition::Landscape
}

// ---------------------------------------------------------------- scene

struct Ribbon {
    base: f32,
    amp: [f32; 2],
    freq: [f32; 2],
    phase: [f32; 3],
    thick: f32,
    shimmer: f32,
    strength: f32,
}

#[derive(Clone, Copy, PartialEq)]
enum LayerKind {
    Land,
    Water,
    /// Buildings; lit windows on a grid of `cell` pixels.
    City {
        seed: u64,
        cell: (f32, f32),
        lit: f32,
    },
}

struct Layer {
    kind: LayerKind,
    /// Ridge line per column, in pixels from the top.
    ridge: Vec<f32>,
    /// `1/sqrt(1+slope²)`: turns a vertical distance into a distance to the
    /// ridge line, for anti-aliasing steep edges.
    edge: Vec<f32>,
    color: Rgb,
    haze: f32,
    /// Valley fog thickens from `fog_top` down over `fog_px` pixels; it is
    /// horizontal, not parallel to the ridge, or every peak grows a streak.
    fog_top: f32,
    fog_px: f32,
}

struct Star {
    x: f32,
    y: f32,
    brightness: f32,
    r2: f32,
}

#[derive(Clone, Copy)]
struct Disc {
    x: f32,
    y: f32,
    r: f32,
    alpha: f32,
    color: Rgb,
}

/// A head-and-shoulders silhouette, lit from the sun's side.
struct Figure {
    cx: f32,
    head: (f32, f32),
    neck: (f32, f32, f32),
    shoulders: (f32, f32, f32, f32),
    color: Rgb,
    rim: Rgb,
    light_side: f32,
}

impl Figure {
    /// Signed distance in pixels (negative inside): an oval head, a neck,
    /// and shoulders as a tall rounded box running off the bottom edge.
    fn sdf(&self, x: f32, y: f32) -> f32 {
        let (hy, hr) = self.head;
        let dx = x - self.cx;
        let head = ((dx / (0.8 * hr)).powi(2) + ((y - hy) / hr).powi(2)).sqrt().mul_add(0.8 * hr, -0.8 * hr);
        let (ny0, ny1, nw) = self.neck;
        let neck = (dx.abs() - nw).max((y - (ny0 + ny1) / 2.0).abs() - (ny1 - ny0) / 2.0);
        let (top, half_w, bottom, corner) = self.shoulders;
        let (cy, half_h) = ((top + bottom) / 2.0, (bottom - top) / 2.0);
        let (qx, qy) = (dx.abs() - (half_w - corner), (y - cy).abs() - (half_h - corner));
        let shoulders = (qx.max(0.0).powi(2) + qy.max(0.0).powi(2)).sqrt() + qx.max(qy).min(0.0) - corner;
        head.min(neck).min(shoulders)
    }
    fn top(&self) -> f32 {
        self.head.0 - self.head.1 * 1.1 - 2.0
    }
    fn half_width(&self) -> f32 {
        self.shoulders.1 + 2.0
    }
}

#[derive(Clone, Copy)]
enum ShapeKind {
    Circle,
    Ring(f32),
    Band(f32, f32),
}

/// Abstract compositions: flat shapes laid over the gradient.
struct Shape {
    kind: ShapeKind,
    cx: f32,
    cy: f32,
    r: f32,
    color: Rgb,
    alpha: f32,
}

impl Shape {
    fn sdf(&self, x: f32, y: f32) -> f32 {
        let (dx, dy) = (x - self.cx, y - self.cy);
        match self.kind {
            ShapeKind::Circle => (dx * dx + dy * dy).sqrt() - self.r,
            ShapeKind::Ring(t) => ((dx * dx + dy * dy).sqrt() - self.r).abs() - t,
            ShapeKind::Band(angle, t) => (dx * angle.sin() - dy * angle.cos()).abs() - t,
        }
    }
}

struct Planet {
    x: f32,
    y: f32,
    r: f32,
    color: Rgb,
    band: Rgb,
    band_freq: f32,
    /// Ring tilt (y squash) and radii as multiples of r.
    ring: Option<(f32, f32, f32)>,
}

struct Streak {
    x: f32,
    y: f32,
    len: f32,
}

struct Scene {
    w: usize,
    h: usize,
    pal: Palette,
    transparent: bool,
    /// Horizon as a fraction of the height.
    horizon: f32,
    warp: [f32; 4],
    cloud: [f32; 8],
    cloud_amount: f32,
    storm: bool,
    nebula: Option<[f32; 6]>,
    ribbons: Vec<Ribbon>,
    /// Sun/moon centre and radius in height units, x from the image centre.
    sun: (f32, f32, f32),
    sun_disc: bool,
    layers: Vec<Layer>,
    /// Lakes: rows below this mirror the rows above it.
    waterline: Option<usize>,
    /// Star indices per pixel row they touch.
    star_rows: Vec<Vec<usize>>,
    stars: Vec<Star>,
    planets: Vec<Planet>,
    shapes: Vec<Shape>,
    figure: Option<Figure>,
    /// Flowers (drawn over), per row.
    blooms: Vec<Disc>,
    bloom_rows: Vec<Vec<usize>>,
    /// Snowflakes (over) and fireflies (screen), per row.
    flakes: Vec<Disc>,
    flake_rows: Vec<Vec<usize>>,
    fireflies: Vec<Disc>,
    rain: Vec<Streak>,
    bokeh: Vec<Disc>,
    fog: f32,
    vignette: f32,
}

/// Rows a disc touches, as buckets of indices.
fn bucket(discs: &[Disc], h: usize) -> Vec<Vec<usize>> {
    let mut rows = vec![Vec::new(); h];
    for (i, d) in discs.iter().enumerate() {
        let lo = (d.y - d.r - 1.0).max(0.0) as usize;
        let hi = ((d.y + d.r + 2.0).max(0.0) as usize).min(h);
        for r in rows.iter_mut().take(hi).skip(lo) {
            r.push(i);
        }
    }
    rows
}

impl Scene {
    fn new(w: usize, h: usize, mut pal: Palette, reading: &Reading, transparent: bool, rng: &mut Rng) -> Scene {
        let (wf, hf) = (w as f32, h as f32);
        let aspect = wf / hf;
        let comp = composition_for(reading);
        let horizon = match comp {
            Composition::Lake => rng.range(0.45, 0.55),
            Composition::City => rng.range(0.62, 0.72),
            _ => rng.range(0.55, 0.7),
        };
        let warp = [rng.phase(), rng.phase(), rng.phase(), rng.range(0.6, 1.4)];
        let cloud = [0; 8].map(|_| rng.phase());
        let mut cloud_amount = rng.range(0.2, 0.7);
        let storm = reading.storm;
        if storm || reading.rain {
            cloud_amount = 0.95;
            for s in &mut pal.sky {
                *s = mix(*s, [0.18, 0.19, 0.22], 0.55);
            }
            pal.glow = mix(pal.glow, [0.6; 3], 0.5);
        }
        if comp == Composition::Space {
            pal.night = true;
            pal.sky = [0.05, 0.1, 0.16, 0.24].map(|k| pal.sky[0].map(|c| c * k + 0.004));
        }
        let nebula = (comp == Composition::Space).then(|| [0; 6].map(|_| rng.phase()));
        let ribbon_count = if comp == Composition::Space { 0 } else { rng.range(1.0, 3.99) as usize };
        let ribbons = (0..ribbon_count)
            .map(|_| Ribbon {
                base: rng.range(0.1, horizon - 0.15),
                amp: [rng.range(0.03, 0.1), rng.range(0.01, 0.04)],
                freq: [rng.range(1.5, 4.0), rng.range(5.0, 9.0)],
                phase: [rng.phase(), rng.phase(), rng.phase()],
                thick: rng.range(0.015, 0.05),
                shimmer: rng.range(8.0, 20.0),
                strength: rng.range(0.15, 0.4),
            })
            .collect();
        let sun = (rng.range(-0.32, 0.32) * aspect, horizon - rng.range(0.06, 0.3), rng.range(0.035, 0.08));
        let sun_disc = rng.chance(0.75) && !storm && comp != Composition::Space;

        let layers: Vec<Layer> = match comp {
            Composition::Landscape => {
                let count = if rng.chance(0.5) { 3 } else { 4 };
                (0..count).map(|k| Self::layer(&pal, reading, k, count, horizon, 0.62, w, h, rng)).collect()
            }
            Composition::Lake => {
                let count = if rng.chance(0.5) { 2 } else { 3 };
                (0..count).map(|k| Self::layer(&pal, reading, k, count, horizon, 0.0, w, h, rng)).collect()
            }
            Composition::City => {
                let mut v = vec![Self::layer(&pal, reading, 0, 3, horizon - 0.05, 0.62, w, h, rng)];
                v.push(Self::city(&pal, 0.4, horizon + 0.04, w, h, rng));
                v.push(Self::city(&pal, 1.0, horizon + 0.2, w, h, rng));
                v
            }
            Composition::Space | Composition::Abstract => Vec::new(),
        };
        let waterline = (comp == Composition::Lake).then(|| ((horizon * hf) as usize + 1).min(h));

        let mut stars = Vec::new();
        if pal.night && !transparent {
            let density = if comp == Composition::Space { rng.range(500.0, 900.0) } else { rng.range(2500.0, 6000.0) };
            let n = (wf * hf / density) as usize;
            let top = if comp == Composition::Space { 1.0 } else { horizon };
            for _ in 0..n {
                let y = rng.range(0.0, top) * hf;
                let fade = if comp == Composition::Space { 1.0 } else { 1.0 - smoothstep(0.2, 0.9, y / (horizon * hf)) };
                let b = rng.f32();
                stars.push(Star { x: rng.range(0.0, wf), y, brightness: fade * (0.25 + 0.75 * b * b * b), r2: rng.range(0.3, 0.5 + b) });
            }
        }
        let mut star_rows = vec![Vec::new(); h];
        for (i, s) in stars.iter().enumerate() {
            let row = s.y as usize;
            for stars_here in &mut star_rows[row.saturating_sub(1)..(row + 2).min(h)] {
                stars_here.push(i);
            }
        }

        let mut planets = Vec::new();
        if comp == Composition::Space {
            for k in 0..rng.range(1.0, 3.99) as usize {
                let r = if k == 0 { rng.range(0.14, 0.3) } else { rng.range(0.03, 0.08) } * hf;
                let hue = reading.hue.unwrap_or(rng.range(0.0, 360.0)) + rng.range(-40.0, 40.0);
                planets.push(Planet {
                    x: rng.range(0.1, 0.9) * wf,
                    y: rng.range(0.2, 0.85) * hf,
                    r,
                    color: hsl(hue, rng.range(0.3, 0.7), rng.range(0.4, 0.6)),
                    band: hsl(hue + rng.range(-30.0, 30.0), rng.range(0.3, 0.6), rng.range(0.3, 0.7)),
                    band_freq: rng.range(4.0, 14.0),
                    ring: rng.chance(0.45).then(|| (rng.range(0.2, 0.4), rng.range(1.3, 1.5), rng.range(1.8, 2.3))),
                });
            }
        }

        let mut shapes = Vec::new();
        if comp == Composition::Abstract {
            let colors = [pal.accent, pal.glow, pal.land_far, pal.land_near, pal.sky[1]];
            for _ in 0..rng.range(5.0, 11.0) as usize {
                let kind = match rng.next_u64() % 3 {
                    0 => ShapeKind::Circle,
                    1 => ShapeKind::Ring(rng.range(0.01, 0.04) * hf),
                    _ => ShapeKind::Band(rng.range(0.0, std::f32::consts::PI), rng.range(0.01, 0.06) * hf),
                };
                shapes.push(Shape {
                    kind,
                    cx: rng.range(0.0, wf),
                    cy: rng.range(0.0, hf),
                    r: rng.range(0.06, 0.3) * hf,
                    color: colors[(rng.next_u64() % colors.len() as u64) as usize],
                    alpha: rng.range(0.7, 1.0),
                });
            }
        }

        let figure = reading.has(Subject::Portrait).then(|| {
            let hr = rng.range(0.085, 0.12) * hf;
            let cx = rng.range(0.38, 0.62) * wf;
            let hy = rng.range(0.5, 0.6) * hf;
            let shoulder_top = hy + hr * 1.3;
            let half_w = rng.range(2.4, 3.0) * hr;
            Figure {
                cx,
                head: (hy, hr),
                neck: (hy, shoulder_top + hr * 0.5, hr * 0.4),
                shoulders: (shoulder_top, half_w, hf + hr * 2.0, hr * rng.range(1.5, 1.9)),
                color: mix(pal.land_near, [0.0; 3], 0.5),
                rim: pal.glow,
                light_side: if sun.0 * hf + wf / 2.0 >= cx { 1.0 } else { -1.0 },
            }
        });

        let mut blooms = Vec::new();
        if reading.has(Subject::Flowers) {
            if let Some(near) = layers.last() {
                let n = ((wf * hf) / 2600.0).min(3000.0) as usize;
                let petal_hue = reading.hue.unwrap_or(rng.range(0.0, 360.0));
                for _ in 0..n {
                    let x = rng.range(0.0, wf);
                    let ground = near.ridge[(x as usize).min(w - 1)];
                    let t = rng.f32();
                    let y = ground + 3.0 + t * t * (hf - ground);
                    let depth = ((y - ground) / (hf - ground).max(1.0)).clamp(0.0, 1.0);
                    let r = (0.003 + 0.014 * depth) * hf;
                    let color = match rng.next_u64() % 4 {
                        0 => pal.glow,
                        1 => pal.accent,
                        _ => hsl(petal_hue + rng.range(-25.0, 25.0), rng.range(0.6, 0.95), rng.range(0.5, 0.7)),
                    };
                    for k in 0..5 {
                        let a = k as f32 / 5.0 * std::f32::consts::TAU + rng.range(0.0, 0.4);
                        blooms.push(Disc { x: x + a.cos() * r * 0.9, y: y + a.sin() * r * 0.6, r: r * 0.75, alpha: 0.95, color });
                    }
                    blooms.push(Disc { x, y, r: r * 0.45, alpha: 1.0, color: hsl(48.0, 0.9, 0.55) });
                }
            }
        }
        let bloom_rows = bucket(&blooms, h);

        let scale = hf / 1024.0;
        let mut flakes = Vec::new();
        if reading.snow && !transparent {
            for _ in 0..((wf * hf) / 1800.0) as usize {
                let big = rng.f32();
                flakes.push(Disc {
                    x: rng.range(0.0, wf),
                    y: rng.range(0.0, hf),
                    r: (0.8 + 2.6 * big * big) * scale.max(0.4),
                    alpha: rng.range(0.5, 0.95),
                    color: [0.97, 0.98, 1.0],
                });
            }
        }
        let flake_rows = bucket(&flakes, h);
        let mut fireflies = Vec::new();
        if reading.fireflies && !transparent {
            for _ in 0..rng.range(30.0, 80.0) as usize {
                fireflies.push(Disc {
                    x: rng.range(0.0, wf),
                    y: rng.range(horizon * 0.9, 1.0) * hf,
                    r: rng.range(1.5, 4.5) * scale.max(0.5),
                    alpha: rng.range(0.5, 1.0),
                    color: hsl(rng.range(45.0, 70.0), 1.0, 0.7),
                });
            }
        }
        let mut rain = Vec::new();
        if reading.rain && !transparent {
            for _ in 0..((wf * hf) / 900.0) as usize {
                rain.push(Streak { x: rng.range(-0.2 * hf, wf), y: rng.range(-0.05, 1.0) * hf, len: rng.range(0.02, 0.06) * hf });
            }
        }

        let mut bokeh = Vec::new();
        if pal.bokeh && !transparent && comp != Composition::Abstract {
            for _ in 0..rng.range(8.0, 24.0) as usize {
                let r = rng.range(0.006, 0.04) * hf;
                bokeh.push(Disc {
                    x: rng.range(0.0, wf),
                    y: rng.range(0.05, 0.95) * hf,
                    r,
                    alpha: rng.range(0.05, 0.2),
                    color: if rng.chance(0.6) { pal.glow } else { pal.accent },
                });
            }
        }

        Scene {
            w,
            h,
            pal,
            transparent,
            horizon,
            warp,
            cloud,
            cloud_amount,
            storm,
            nebula,
            ribbons,
            sun,
            sun_disc,
            layers,
            waterline,
            star_rows,
            stars,
            planets,
            shapes,
            figure,
            blooms,
            bloom_rows,
            flakes,
            flake_rows,
            fireflies,
            rain,
            bokeh,
            fog: if reading.fog { 0.55 } else { 0.0 },
            vignette: rng.range(0.2, 0.4),
        }
    }

    /// Silhouette `k` of `count`, far (0) to near; `spread` is how far down
    /// the near layers stand (0 = all on the horizon, as behind a lake).
    #[allow(clippy::too_many_arguments)]
    fn layer(
        pal: &Palette,
        reading: &Reading,
        k: usize,
        count: usize,
        horizon: f32,
        spread: f32,
        w: usize,
        h: usize,
        rng: &mut Rng,
    ) -> Layer {
        let hf = h as f32;
        let depth = k as f32 / (count - 1).max(1) as f32; // 0 far .. 1 near
        let base = (horizon + depth * (1.0 - horizon) * spread) * hf;
        let seed = rng.next_u64();
        let scale = rng.range(2.0, 4.0) * (1.0 + depth); // features per image height
        let phase = rng.phase();
        let desert = reading.has(Subject::Desert);
        let (amp, ridged) = match pal.terrain {
            Terrain::Mountains => (lerp(0.24, 0.07, depth), depth < 0.7),
            Terrain::Hills if desert => (lerp(0.07, 0.04, depth), false),
            Terrain::Hills => (lerp(0.12, 0.06, depth), false),
            Terrain::Waves => (lerp(0.035, 0.06, depth), false),
            Terrain::Forest => (lerp(0.1, 0.05, depth), false),
        };
        let amp = amp * rng.range(0.8, 1.2) * hf;
        let mut ridge: Vec<f32> = (0..w)
            .map(|x| {
                let u = x as f32 / hf;
                let shape = match pal.terrain {
                    Terrain::Waves => {
                        // Trochoid-like: sharp crests, round troughs, swelling amplitude.
                        let crest = 1.0 - (u * scale * 2.5 + phase).sin().abs();
                        0.6 * crest * crest.sqrt() + 0.4 * fbm(seed, u * scale, 3, false)
                    }
                    Terrain::Hills if desert => {
                        // Dunes: long smooth swells with a sharper lee side.
                        let s = (u * scale * 1.2 + phase).sin();
                        0.5 + 0.35 * s * s.abs().sqrt() + 0.15 * fbm(seed, u * scale, 2, false)
                    }
                    _ => fbm(seed, u * scale, 5, ridged),
                };
                base - amp * shape
            })
            .collect();

        if pal.terrain == Terrain::Forest && depth > 0.0 {
            // A tree line: overlapping triangles standing on the hills.
            let mut x = rng.range(0.0, 0.01) * hf;
            while x < w as f32 {
                let th = rng.range(0.03, 0.07) * hf * (0.5 + depth);
                let half = (th * rng.range(0.18, 0.3)).max(0.5);
                let foot = ridge[(x as usize).min(w - 1)] + th * 0.1;
                let (lo, hi) = ((x - half).max(0.0) as usize, ((x + half) as usize + 1).min(w));
                for (c, r) in ridge.iter_mut().enumerate().take(hi).skip(lo) {
                    let top = foot - th * (1.0 - (c as f32 + 0.5 - x).abs() / half);
                    if top < *r {
                        *r = top;
                    }
                }
                x += half * rng.range(0.9, 2.4);
            }
        }

        let edge = (0..w)
            .map(|x| {
                let slope = (ridge[(x + 1).min(w - 1)] - ridge[x.saturating_sub(1)]) / 2.0;
                1.0 / (1.0 + slope * slope).sqrt()
            })
            .collect();
        let mut color = mix(pal.land_far, pal.land_near, depth);
        if reading.snow && depth < 0.99 {
            color = mix(color, [0.9, 0.92, 0.96], 0.45 * (1.0 - depth));
        }
        let haze = lerp(0.75, 0.12, depth) + if reading.fog { 0.2 } else { 0.0 };
        Layer {
            kind: if pal.terrain == Terrain::Waves { LayerKind::Water } else { LayerKind::Land },
            ridge,
            edge,
            color,
            // Far layers melt into the horizon colour; the nearest stays crisp.
            haze: haze.min(0.95),
            fog_top: base - amp * 0.45,
            fog_px: rng.range(0.06, 0.16) * hf,
        }
    }

    /// A skyline standing on `base` (fraction of the height); `depth` 0 far .. 1 near.
    fn city(pal: &Palette, depth: f32, base: f32, w: usize, h: usize, rng: &mut Rng) -> Layer {
        let hf = h as f32;
        let base = base.min(1.0) * hf;
        let mut ridge = vec![base; w];
        let mut x = 0.0f32;
        while x < w as f32 {
            let bw = rng.range(0.03, 0.09) * hf * (0.6 + 0.6 * depth);
            let bh = rng.range(0.08, 0.36) * hf * (1.1 - 0.3 * depth);
            let (lo, hi) = (x.max(0.0) as usize, ((x + bw) as usize).min(w));
            for r in ridge.iter_mut().take(hi).skip(lo) {
                *r = r.min(base - bh);
            }
            if rng.chance(0.18) {
                // A spire.
                let sw = (bw * 0.12).max(1.0);
                let sx = x + bw / 2.0 - sw / 2.0;
                let (lo, hi) = (sx.max(0.0) as usize, ((sx + sw) as usize + 1).min(w));
                for r in ridge.iter_mut().take(hi).skip(lo) {
                    *r = r.min(base - bh * rng.range(1.15, 1.35));
                }
            }
            x += bw + rng.range(0.0, 0.012) * hf;
        }
        Layer {
            kind: LayerKind::City {
                seed: rng.next_u64(),
                cell: ((0.011 + 0.006 * depth) * hf, (0.016 + 0.008 * depth) * hf),
                lit: if pal.night { 0.45 } else { 0.12 },
            },
            // Walls are vertical: anti-alias the roofs only.
            edge: vec![1.0; w],
            ridge,
            color: mix(pal.land_far, pal.land_near, depth),
            haze: lerp(0.55, 0.05, depth),
            fog_top: base,
            fog_px: 0.1 * hf,
        }
    }

    /// Sky colour at a point in height units (x from the image centre).
    fn sky(&self, px: f32, py: f32) -> Rgb {
        let [p0, p1, p2, k] = self.warp;
        let warp = 0.07 * (px * 1.7 * k + p0).sin() * (py * 2.3 + p1).sin() + 0.03 * (px * 4.1 + py * 2.9 + p2).sin();
        let t = py / self.horizon + warp;
        let mut c = self.pal.sky_at(t);

        if let Some(q) = &self.nebula {
            // Gas clouds: folded sines at two scales, in the accent and glow colours.
            let a = (px * 2.1 + 1.7 * (py * 3.3 + q[0]).sin() + q[1]).sin() * (py * 2.7 + 1.3 * (px * 1.9 + q[2]).sin() + q[3]).sin();
            let b = (px * 5.3 + py * 4.1 + 2.0 * (px * 2.9 - py * 3.7 + q[4]).sin() + q[5]).sin();
            let d = smoothstep(0.05, 1.0, 0.75 * a + 0.25 * b);
            c = screen(c, self.pal.accent, d * 0.6);
            c = screen(c, self.pal.glow, smoothstep(0.5, 1.0, a * b) * 0.35);
            return c;
        }

        // Soft, horizontally stretched clouds.
        let q = &self.cloud;
        let n1 = (px * 3.1 + 2.0 * (py * 7.3 + q[0]).sin() + q[1]).sin() * (py * 11.0 + 1.5 * (px * 2.3 + q[2]).sin() + q[3]).sin();
        let n2 = (px * 6.7 + 1.3 * (py * 13.0 + q[4]).sin() + q[5]).sin() * (py * 17.0 + px * 1.1 + q[6]).sin();
        let d =
            smoothstep(0.2, 1.0, 0.7 * n1 + 0.3 * n2 + 0.2 * (px * 0.9 + q[7]).sin()) * self.cloud_amount * (1.0 - smoothstep(0.7, 1.0, t));
        let cloud_col = if self.storm { [0.12, 0.13, 0.15] } else { mix(self.pal.sky[3], self.pal.accent, 0.35) };
        c = mix(c, cloud_col, d * if self.storm { 0.8 } else { 0.55 });

        for r in &self.ribbons {
            let yc = r.base + r.amp[0] * (px * r.freq[0] + r.phase[0]).sin() + r.amp[1] * (px * r.freq[1] + r.phase[1]).sin();
            let e = (py - yc) / r.thick;
            let i = (-e * e).exp() * (0.6 + 0.4 * (px * r.shimmer + r.phase[2]).sin()) * r.strength;
            c = screen(c, self.pal.accent, i);
        }

        let (sx, sy, sr) = self.sun;
        let d2 = (px - sx) * (px - sx) + (py - sy) * (py - sy);
        let halo = 0.55 * (-d2 / (18.0 * sr * sr)).exp() + 0.35 * (-d2 / (3.4 * sr * sr)).exp();
        screen(c, self.pal.glow, halo * if self.storm { 0.3 } else { 1.0 })
    }

    /// The sky sampled every `SKY_STEP` pixels (one extra sample past each
    /// edge); black when the background is transparent.
    fn sky_grid(&self) -> (usize, Vec<Rgb>) {
        let gw = self.w / SKY_STEP + 2;
        let gh = self.h / SKY_STEP + 2;
        if self.transparent {
            return (gw, vec![[0.0; 3]; gw * gh]);
        }
        let hf = self.h as f32;
        let cx = self.w as f32 / 2.0;
        let mut grid = Vec::with_capacity(gw * gh);
        for j in 0..gh {
            let py = (j * SKY_STEP) as f32 / hf;
            for i in 0..gw {
                grid.push(self.sky(((i * SKY_STEP) as f32 - cx) / hf, py));
            }
        }
        (gw, grid)
    }

    /// Shades row `y` into `row` (premultiplied colour) and `alpha`, up to
    /// `stage`: 0 sky, 1 far silhouettes, 2 everything solid, 3 final
    /// (particles, fog, vignette).
    fn shade_row(&self, y: usize, (gw, grid): &(usize, Vec<Rgb>), row: &mut [Rgb], alpha: &mut [f32], stage: u8) {
        let (w, hf) = (self.w, self.h as f32);
        let yc = y as f32 + 0.5;

        // Sky: bilinear from the grid.
        let (j, fy) = (y / SKY_STEP, (y % SKY_STEP) as f32 / SKY_STEP as f32);
        let (top, bottom) = (&grid[j * gw..(j + 1) * gw], &grid[(j + 1) * gw..(j + 2) * gw]);
        for (x, px) in row.iter_mut().enumerate() {
            let (i, fx) = (x / SKY_STEP, (x % SKY_STEP) as f32 / SKY_STEP as f32);
            let a = mix(top[i], top[i + 1], fx);
            let b = mix(bottom[i], bottom[i + 1], fx);
            *px = mix(a, b, fy);
        }
        alpha.fill(if self.transparent { 0.0 } else { 1.0 });

        if !self.transparent {
            for &i in &self.star_rows[y] {
                let s = &self.stars[i];
                let x0 = s.x as usize;
                let lo = x0.saturating_sub(1);
                for (x, px) in row.iter_mut().enumerate().take(x0 + 2).skip(lo) {
                    let (dx, dy) = (x as f32 + 0.5 - s.x, yc - s.y);
                    let v = s.brightness * (-(dx * dx + dy * dy) / s.r2).exp();
                    *px = screen(*px, [1.0, 1.0, 1.0], v);
                }
            }
            if self.sun_disc {
                let (sx, sy, sr) = self.sun;
                let (sx, sy, sr) = (sx * hf + w as f32 / 2.0, sy * hf, sr * hf);
                disc(row, yc, sx, sy, sr, 0.95, self.pal.glow, 1.0);
            }
        }

        for p in &self.planets {
            self.planet_row(p, y, row, alpha);
        }
        if stage >= 2 {
            for s in &self.shapes {
                over_sdf(row, alpha, 0, w, |x| s.sdf(x as f32 + 0.5, yc), s.color, s.alpha);
            }
        }

        let layer_limit = if stage == 0 {
            0
        } else if stage == 1 {
            self.layers.len().div_ceil(2)
        } else {
            self.layers.len()
        };
        let horizon_col = self.pal.sky[3];
        for layer in &self.layers[..layer_limit] {
            for (x, px) in row.iter_mut().enumerate() {
                let below = yc - layer.ridge[x];
                let cover = (below * layer.edge[x] + 0.5).clamp(0.0, 1.0);
                if cover <= 0.0 {
                    continue;
                }
                // Crisp top fading into valley haze further down.
                let fog = layer.haze * (0.3 + 0.7 * smoothstep(layer.fog_top, layer.fog_top + layer.fog_px, yc));
                let mut c = mix(layer.color, horizon_col, fog);
                if below < 6.0 {
                    c = mix(c, self.pal.glow, 0.12 * (1.0 - below.max(0.0) / 6.0));
                }
                match layer.kind {
                    LayerKind::City { seed, cell, lit } if below > 3.0 => {
                        let (gx, gy) = ((x as f32 / cell.0).floor(), (yc / cell.1).floor());
                        let (fx, fy) = (x as f32 / cell.0 - gx, yc / cell.1 - gy);
                        if (0.28..0.72).contains(&fx) && (0.3..0.72).contains(&fy) {
                            let r = lattice(seed ^ (gy as i64 as u64).wrapping_mul(0x9E37_79B9), gx as i64);
                            if r < lit {
                                let warm = mix(self.pal.glow, hsl(40.0, 0.9, 0.7), 0.6);
                                c = mix(
                                    c,
                                    mix(warm, self.pal.accent, (r / lit * 3.0).fract() * 0.4),
                                    if self.pal.night { 0.95 } else { 0.45 },
                                );
                            } else {
                                c = mix(c, [0.0; 3], 0.25);
                            }
                        }
                    }
                    LayerKind::Water if !self.transparent => {
                        // Sun glitter on the water, strongest below the sun.
                        let (sx, _, _) = self.sun;
                        let sxp = sx * hf + w as f32 / 2.0;
                        let spread = (yc - self.horizon * hf).max(1.0) * 0.35 + 0.02 * hf;
                        let col = (-((x as f32 - sxp) / spread).powi(2)).exp();
                        let sparkle = lattice(0x5EA ^ (y as u64).wrapping_mul(0x2545_F491_4F6C_DD1D), x as i64 / 2);
                        if sparkle > 0.97 - 0.25 * col {
                            c = screen(c, self.pal.glow, 0.7 * col + 0.1);
                        }
                    }
                    _ => {}
                }
                *px = mix(*px, c, cover);
                alpha[x] += (1.0 - alpha[x]) * cover;
            }
        }

        if stage >= 2 {
            if let Some(f) = &self.figure {
                if yc >= f.top() {
                    let hw = f.half_width();
                    let (lo, hi) = ((f.cx - hw).max(0.0) as usize, ((f.cx + hw) as usize + 1).min(w));
                    for x in lo..hi {
                        let d = f.sdf(x as f32 + 0.5, yc);
                        let cover = (0.5 - d).clamp(0.0, 1.0);
                        if cover <= 0.0 {
                            continue;
                        }
                        // Rim light on the sun's side, a few pixels deep.
                        let side = (((x as f32 - f.cx) * f.light_side) / f.head.1 + 0.4).clamp(0.0, 1.0);
                        let rim = (1.0 - (-d) / (0.05 * f.head.1 + 2.0)).clamp(0.0, 1.0) * side;
                        let c = mix(f.color, f.rim, rim * 0.85);
                        row[x] = mix(row[x], c, cover);
                        alpha[x] += (1.0 - alpha[x]) * cover;
                    }
                }
            }
            for &i in &self.bloom_rows[y] {
                let d = self.blooms[i];
                over_sdf(
                    row,
                    alpha,
                    (d.x - d.r - 1.0).max(0.0) as usize,
                    ((d.x + d.r + 2.0).max(0.0) as usize).min(w),
                    |x| {
                        let (dx, dy) = (x as f32 + 0.5 - d.x, yc - d.y);
                        (dx * dx + dy * dy).sqrt() - d.r
                    },
                    d.color,
                    d.alpha,
                );
            }
        }

        if stage >= 3 {
            for &i in &self.flake_rows[y] {
                let d = self.flakes[i];
                over_sdf(
                    row,
                    alpha,
                    (d.x - d.r - 1.0).max(0.0) as usize,
                    ((d.x + d.r + 2.0).max(0.0) as usize).min(w),
                    |x| {
                        let (dx, dy) = (x as f32 + 0.5 - d.x, yc - d.y);
                        (dx * dx + dy * dy).sqrt() - d.r
                    },
                    d.color,
                    d.alpha,
                );
            }
            for s in &self.rain {
                if yc >= s.y && yc < s.y + s.len {
                    let x = s.x + (yc - s.y) * 0.25;
                    if x >= 0.0 && (x as usize) < w {
                        let px = &mut row[x as usize];
                        *px = mix(*px, [0.75, 0.8, 0.88], 0.3);
                    }
                }
            }
            for d in &self.fireflies {
                disc(row, yc, d.x, d.y, d.r * 2.5, d.alpha * 0.35, d.color, 0.0);
                disc(row, yc, d.x, d.y, d.r, d.alpha, d.color, 0.6);
            }
            for d in &self.bokeh {
                disc(row, yc, d.x, d.y, d.r, d.alpha, d.color, 0.55);
            }
            if self.fog > 0.0 && !self.transparent {
                // A bank of fog lying on the horizon.
                let t = (yc / hf - self.horizon) / 0.18;
                let f = self.fog * (-t * t).exp();
                for px in row.iter_mut() {
                    *px = mix(*px, mix(self.pal.sky[3], [0.85; 3], 0.5), f);
                }
            }
            // Vignette.
            let dy = (yc / hf - 0.5) * 2.0;
            for (x, px) in row.iter_mut().enumerate() {
                let dx = ((x as f32 + 0.5) / w as f32 - 0.5) * 2.0;
                let r2 = (dx * dx + dy * dy) * 0.5;
                let v = 1.0 - self.vignette * r2 * r2;
                *px = px.map(|c| c * v);
            }
        }
    }

    fn planet_row(&self, p: &Planet, y: usize, row: &mut [Rgb], alpha: &mut [f32]) {
        let yc = y as f32 + 0.5;
        let w = self.w;
        let reach = p.ring.map(|r| r.2).unwrap_or(1.0) * p.r + 2.0;
        if (yc - p.y).abs() > reach {
            return;
        }
        let (lo, hi) = ((p.x - reach).max(0.0) as usize, ((p.x + reach) as usize + 1).min(w));
        // Light from the upper left, a little towards the viewer.
        let light = [-0.55f32, -0.45, 0.7];
        for x in lo..hi {
            let (dx, dy) = ((x as f32 + 0.5 - p.x) / p.r, (yc - p.y) / p.r);
            let d2 = dx * dx + dy * dy;
            let mut body = None;
            if d2 < 1.0 + 2.0 / p.r {
                let nz = (1.0 - d2).max(0.0).sqrt();
                let lambert = (dx * light[0] + dy * light[1] + nz * light[2]).max(0.0);
                let bands = 0.5 + 0.5 * (dy * p.band_freq + (dx * 3.0).sin() * 0.3).sin();
                let base = mix(p.color, p.band, bands * 0.6);
                let c = base.map(|v| v * (0.08 + 0.92 * lambert));
                let cover = ((1.0 - d2.sqrt()) * p.r + 0.5).clamp(0.0, 1.0);
                body = Some((c, cover, nz));
            }
            if let Some((tilt, inner, outer)) = p.ring {
                let ry = dy / tilt;
                let rr = (dx * dx + ry * ry).sqrt();
                if (inner..outer).contains(&rr) {
                    let band = 0.6 + 0.4 * (rr * 40.0).sin();
                    let ring = mix(p.band, [0.95, 0.92, 0.85], 0.4).map(|v| v * band);
                    // The far half of the ring (above the centre line) passes behind the planet.
                    let ring_in_front = dy >= 0.0;
                    if ring_in_front {
                        if let Some((c, cover, _)) = body {
                            row[x] = mix(row[x], c, cover);
                            alpha[x] += (1.0 - alpha[x]) * cover;
                        }
                    }
                    row[x] = mix(row[x], ring, 0.75);
                    alpha[x] += (1.0 - alpha[x]) * 0.75;
                    if !ring_in_front {
                        if let Some((c, cover, _)) = body {
                            row[x] = mix(row[x], c, cover);
                            alpha[x] += (1.0 - alpha[x]) * cover;
                        }
                    }
                    continue;
                }
            }
            if let Some((c, cover, _)) = body {
                row[x] = mix(row[x], c, cover);
                alpha[x] += (1.0 - alpha[x]) * cover;
            }
        }
    }
}

/// Draws a shape given by a signed distance (pixels, negative inside) over
/// columns `lo..hi`, anti-aliased, with opacity `a`.
fn over_sdf(row: &mut [Rgb], alpha: &mut [f32], lo: usize, hi: usize, sdf: impl Fn(usize) -> f32, color: Rgb, a: f32) {
    for x in lo..hi.min(row.len()) {
        let cover = (0.5 - sdf(x)).clamp(0.0, 1.0) * a;
        if cover > 0.0 {
            row[x] = mix(row[x], color, cover);
            alpha[x] += (1.0 - alpha[x]) * cover;
        }
    }
}

/// A soft disc screened onto one row; `soft` is the inner fraction of the
/// radius that is fully opaque.
#[allow(clippy::too_many_arguments)]
fn disc(row: &mut [Rgb], yc: f32, cx: f32, cy: f32, r: f32, alpha: f32, color: Rgb, soft: f32) {
    let dy = yc - cy;
    if dy.abs() >= r + 1.0 {
        return;
    }
    let half = ((r + 1.0) * (r + 1.0) - dy * dy).sqrt();
    let (lo, hi) = ((cx - half).max(0.0) as usize, ((cx + half) as usize + 1).min(row.len()));
    let feather = (r * (1.0 - soft)).max(1.0);
    for (x, px) in row.iter_mut().enumerate().take(hi).skip(lo) {
        let dx = x as f32 + 0.5 - cx;
        let d = (dx * dx + dy * dy).sqrt();
        let a = alpha * (1.0 - smoothstep(r - feather, r, d));
        if a > 0.0 {
            *px = screen(*px, color, a);
        }
    }
}

/// The scene seed. `n` is deliberately not an input: image `i` is the same
/// whether 1 or 4 images were asked for. Filter styles share the scene of
/// `none`, so "anime" is the natural picture, drawn as anime.
fn scene_seed(job: &Job, index: u32) -> u64 {
    let scene_style = if is_filter_style(&job.style) { "none" } else { job.style.as_str() };
    hash64(&[
        MODEL.as_bytes(),
        job.prompt.as_bytes(),
        &job.seed.to_le_bytes(),
        &job.width.to_le_bytes(),
        &job.height.to_le_bytes(),
        scene_style.as_bytes(),
        &index.to_le_bytes(),
        &job.salt,
    ])
}

/// One full pass over the rows at `stage`.
fn paint(scene: &Scene, grid: &(usize, Vec<Rgb>), stage: u8, progress: &dyn Fn(u8)) -> RgbaImage {
    let (w, h) = (scene.w, scene.h);
    let mut img = RgbaImage::new(w as u32, h as u32);
    let mut row = vec![[0.0f32; 3]; w];
    let mut alpha = vec![1.0f32; w];
    let quarter = h.div_ceil(4);
    for y in 0..h {
        if let Some(wl) = scene.waterline.filter(|&wl| y >= wl && 2 * wl > y + 1) {
            // The lake: a rippled, darkened mirror of the rows above.
            let src_y = 2 * wl - y - 1;
            let depth = (y - wl) as f32 / (h - wl).max(1) as f32;
            let amp = 1.0 + depth * 0.012 * h as f32;
            let (above, here) = img.split_at_mut(y * w * 4);
            let src = &above[src_y * w * 4..(src_y + 1) * w * 4];
            let dst = &mut here[..w * 4];
            let tint = mix(scene.pal.sky[1], scene.pal.land_near, 0.5);
            for x in 0..w {
                let ripple = ((y as f32 * 0.9).sin() * 0.6 + (y as f32 * 0.23 + x as f32 * 0.01).sin() * 0.4) * amp;
                let sx = (x as f32 + ripple).clamp(0.0, (w - 1) as f32) as usize;
                for c in 0..3 {
                    let v = f32::from(src[sx * 4 + c]) / 255.0;
                    let v = lerp(v * 0.82, tint[c], 0.18 + 0.2 * depth);
                    dst[x * 4 + c] = (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
                }
                dst[x * 4 + 3] = src[sx * 4 + 3];
            }
        } else {
            scene.shade_row(y, grid, &mut row, &mut alpha, stage);
            let out = &mut img.as_mut()[y * w * 4..(y + 1) * w * 4];
            for ((o, c), &a) in out.chunks_exact_mut(4).zip(&row).zip(&alpha) {
                // Colours are premultiplied by coverage over a black sky when
                // the background is transparent.
                let (c, a) = if scene.transparent && a > 0.0 {
                    (c.map(|v| v / a), a)
                } else if scene.transparent {
                    ([0.0; 3], 0.0)
                } else {
                    (*c, 1.0)
                };
                o[0] = (c[0].clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
                o[1] = (c[1].clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
                o[2] = (c[2].clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
                o[3] = (a.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
            }
        }
        if (y + 1) % quarter == 0 || y + 1 == h {
            progress(((y + 1) * 100 / h) as u8);
        }
    }
    img
}

/// Renders image `index` of `job`: `partial_images` preview passes (sky;
/// far silhouettes; everything solid), each handed to `partial`, then the
/// final pass; filter styles are applied to every frame.
fn render(job: &Job, index: u32, progress: &dyn Fn(u8), partial: &dyn Fn(u32, RgbaImage) -> Result<()>) -> Result<RgbaImage> {
    let (w, h) = (job.width as usize, job.height as usize);
    let reading = lexicon::read(&job.prompt);
    let mut rng = Rng(scene_seed(job, index));
    let mut pal = match &job.palette_source {
        Some(small) => Palette::from_image(small),
        None => Palette::for_style(&job.style, &job.prompt, &reading, &mut rng),
    };
    if let Some((c, t)) = job.lean {
        pal.lean(c, t);
    }
    let transparent = job.background == Background::Transparent;
    let scene = Scene::new(w, h, pal, &reading, transparent, &mut rng);
    let grid = scene.sky_grid();
    let filter = |img: RgbaImage| -> Result<RgbaImage> {
        if is_filter_style(&job.style) {
            imaging::styles::apply(&job.style, &img, job.seed)
        } else {
            Ok(img)
        }
    };

    let passes = job.partial_images + 1;
    let stages: Vec<u8> = [0u8, 1, 2][(3 - job.partial_images as usize)..].to_vec();
    for (k, &stage) in stages.iter().enumerate() {
        let pass = k as u32;
        let frame = paint(&scene, &grid, stage, &|p| progress(((pass * 100 + u32::from(p)) / passes).min(99) as u8));
        partial(pass, filter(frame)?)?;
    }
    let last = passes - 1;
    let img = paint(&scene, &grid, 3, &|p| progress(((last * 100 + u32::from(p)) / passes) as u8));
    filter(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(prompt: &str, style: &str, w: u32, h: u32, seed: u64) -> Job {
        Job {
            prompt: prompt.into(),
            style: style.into(),
            seed,
            width: w,
            height: h,
            background: Background::Auto,
            partial_images: 0,
            salt: Vec::new(),
            palette_source: None,
            lean: None,
        }
    }

    #[test]
    fn hsl_primaries() {
        let close = |a: Rgb, b: Rgb| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        assert!(close(hsl(0.0, 1.0, 0.5), [1.0, 0.0, 0.0]));
        assert!(close(hsl(120.0, 1.0, 0.5), [0.0, 1.0, 0.0]));
        assert!(close(hsl(-120.0, 1.0, 0.5), [0.0, 0.0, 1.0]));
        assert!(close(hsl(33.0, 0.0, 0.25), [0.25, 0.25, 0.25]));
    }

    #[test]
    fn seed_inputs_are_length_prefixed_and_all_count() {
        let j = job("ab", "none", 64, 64, 1);
        let base = scene_seed(&j, 0);
        assert_ne!(base, scene_seed(&j, 1));
        for other in [
            Job { prompt: "abc".into(), ..j.clone() },
            Job { seed: 2, ..j.clone() },
            Job { width: 65, ..j.clone() },
            Job { height: 65, ..j.clone() },
            Job { style: "noir".into(), ..j.clone() },
            Job { salt: b"edit".to_vec(), ..j.clone() },
        ] {
            assert_ne!(base, scene_seed(&other, 0));
        }
        // A filter style draws the scene of "none".
        assert_eq!(base, scene_seed(&Job { style: "anime".into(), ..j.clone() }, 0));
    }

    #[test]
    fn tiny_sizes_render_in_every_composition() {
        for prompt in ["x", "city at night", "space nebula", "abstract shapes", "a portrait", "lake at dawn", "flowers in snow and rain"] {
            for (w, h) in [(1, 1), (1, 7), (7, 1), (3, 5)] {
                let img = render(&job(prompt, "forest", w, h, 9), 0, &|_| {}, &|_, _| Ok(())).unwrap();
                assert_eq!(img.dimensions(), (w, h), "{prompt}");
            }
        }
    }
}
