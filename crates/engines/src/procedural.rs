//! The built-in procedural engine: an offline, deterministic landscape painter.
//!
//! A scene is a sky (multi-stop gradient, warped by sines, with soft clouds,
//! light ribbons and a sun/moon halo), optional stars, a sun disc, three or
//! four layered silhouettes (ridged mountains, hills, waves or a tree line)
//! fading into valley haze, floating bokeh lights and a vignette. Every choice
//! comes from a SplitMix64 stream seeded by SHA-256 of the request, so equal
//! inputs give equal pixels (on the same build: `sin`/`exp` come from the
//! platform's libm).
//!
//! Cost: the smooth sky is evaluated on a grid every `SKY_STEP` pixels and
//! interpolated; everything sharp (silhouettes, stars, discs) is per pixel
//! but cheap, with per-column ridge tables.

use domain::{Error, Result};
use imaging::RgbaImage;
use sha2::{Digest, Sha256};

use crate::{BoxFuture, Engine, EngineImage, GenerateRequest, ProgressFn};

/// Largest side the procedural engine renders.
pub const MAX_SIDE: u32 = 4096;
/// Most images per request.
pub const MAX_N: u32 = 16;

const MODEL: &str = "atelier-procedural-v0";
const SKY_STEP: usize = 4;

#[derive(Debug, Default, Clone, Copy)]
pub struct ProceduralEngine;

impl Engine for ProceduralEngine {
    fn name(&self) -> &str {
        "procedural"
    }

    fn model(&self) -> &str {
        MODEL
    }

    fn generate<'a>(&'a self, req: &'a GenerateRequest, progress: ProgressFn) -> BoxFuture<'a, Result<Vec<EngineImage>>> {
        Box::pin(async move {
            validate(req)?;
            progress(0);
            let mut images = Vec::with_capacity(req.n as usize);
            for index in 0..req.n {
                let (req, progress) = (req.clone(), progress.clone());
                let image = tokio::task::spawn_blocking(move || {
                    let n = req.n;
                    render(&req, index, &|pct: u8| progress(((index * 100 + u32::from(pct)) / n) as u8))
                })
                .await
                .map_err(|e| Error::internal(format!("procedural render failed: {e}")))?;
                images.push(EngineImage { image });
            }
            Ok(images)
        })
    }
}

fn validate(req: &GenerateRequest) -> Result<()> {
    if !(1..=MAX_SIDE).contains(&req.width) || !(1..=MAX_SIDE).contains(&req.height) {
        return Err(Error::invalid(format!("width and height must be between 1 and {MAX_SIDE}")));
    }
    if !(1..=MAX_N).contains(&req.n) {
        return Err(Error::invalid(format!("n must be between 1 and {MAX_N}")));
    }
    domain::params::parse_style(&req.style)?;
    Ok(())
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

/// The scene seed. `n` is deliberately not an input: image `i` is the same
/// whether 1 or 4 images were asked for.
fn scene_seed(req: &GenerateRequest, index: u32) -> u64 {
    hash64(&[
        MODEL.as_bytes(),
        req.prompt.as_bytes(),
        &req.seed.to_le_bytes(),
        &req.width.to_le_bytes(),
        &req.height.to_le_bytes(),
        req.style.as_bytes(),
        &index.to_le_bytes(),
    ])
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
    fn for_style(style: &str, prompt: &str, rng: &mut Rng) -> Palette {
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
            // "none": the colours follow the prompt alone, so one prompt keeps
            // its palette across seeds while the composition changes.
            _ => {
                let mut p = Rng(hash64(&[b"palette", prompt.as_bytes()]));
                let h = p.range(0.0, 360.0);
                let step = p.range(15.0, 45.0) * if p.chance(0.5) { 1.0 } else { -1.0 };
                let sat = p.range(0.45, 0.9);
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
                    terrain: [Terrain::Mountains, Terrain::Hills, Terrain::Waves, Terrain::Forest][(p.next_u64() % 4) as usize],
                }
            }
        }
    }

    fn sky_at(&self, t: f32) -> Rgb {
        let t = t.clamp(0.0, 1.0) * 3.0;
        let i = (t as usize).min(2);
        let f = t - i as f32;
        mix(self.sky[i], self.sky[i + 1], f * f * (3.0 - 2.0 * f))
    }
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

struct Layer {
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

struct Disc {
    x: f32,
    y: f32,
    r: f32,
    alpha: f32,
    color: Rgb,
}

struct Scene {
    w: usize,
    h: usize,
    pal: Palette,
    /// Horizon as a fraction of the height.
    horizon: f32,
    warp: [f32; 4],
    cloud: [f32; 8],
    cloud_amount: f32,
    ribbons: Vec<Ribbon>,
    /// Sun/moon centre and radius in height units, x from the image centre.
    sun: (f32, f32, f32),
    sun_disc: bool,
    layers: Vec<Layer>,
    /// Star indices per pixel row they touch.
    star_rows: Vec<Vec<usize>>,
    stars: Vec<Star>,
    bokeh: Vec<Disc>,
    vignette: f32,
}

impl Scene {
    fn new(w: usize, h: usize, pal: Palette, rng: &mut Rng) -> Scene {
        let (wf, hf) = (w as f32, h as f32);
        let aspect = wf / hf;
        let horizon = rng.range(0.55, 0.7);
        let warp = [rng.phase(), rng.phase(), rng.phase(), rng.range(0.6, 1.4)];
        let cloud = [0; 8].map(|_| rng.phase());
        let cloud_amount = rng.range(0.2, 0.7);
        let ribbons = (0..rng.range(1.0, 3.99) as usize)
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
        let sun_disc = rng.chance(0.75);

        let count = if rng.chance(0.5) { 3 } else { 4 };
        let layers = (0..count).map(|k| Self::layer(&pal, k, count, horizon, w, h, rng)).collect();

        let mut stars = Vec::new();
        if pal.night {
            let n = (wf * hf / rng.range(2500.0, 6000.0)) as usize;
            for _ in 0..n {
                let y = rng.range(0.0, horizon) * hf;
                let fade = 1.0 - smoothstep(0.2, 0.9, y / (horizon * hf));
                let b = rng.f32();
                stars.push(Star {
                    x: rng.range(0.0, wf),
                    y,
                    brightness: fade * (0.25 + 0.75 * b * b * b),
                    r2: rng.range(0.3, 0.5 + b),
                });
            }
        }
        let mut star_rows = vec![Vec::new(); h];
        for (i, s) in stars.iter().enumerate() {
            let row = s.y as usize;
            for stars_here in &mut star_rows[row.saturating_sub(1)..(row + 2).min(h)] {
                stars_here.push(i);
            }
        }

        let mut bokeh = Vec::new();
        if pal.bokeh {
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
            horizon,
            warp,
            cloud,
            cloud_amount,
            ribbons,
            sun,
            sun_disc,
            layers,
            star_rows,
            stars,
            bokeh,
            vignette: rng.range(0.2, 0.4),
        }
    }

    /// Silhouette `k` of `count`, far (0) to near.
    fn layer(pal: &Palette, k: usize, count: usize, horizon: f32, w: usize, h: usize, rng: &mut Rng) -> Layer {
        let hf = h as f32;
        let depth = k as f32 / (count - 1) as f32; // 0 far .. 1 near
        let base = (horizon + depth * (1.0 - horizon) * 0.62) * hf;
        let seed = rng.next_u64();
        let scale = rng.range(2.0, 4.0) * (1.0 + depth); // features per image height
        let phase = rng.phase();
        let (amp, ridged) = match pal.terrain {
            Terrain::Mountains => (lerp(0.24, 0.07, depth), depth < 0.7),
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
        Layer {
            ridge,
            edge,
            color: mix(pal.land_far, pal.land_near, depth),
            // Far layers melt into the horizon colour; the nearest stays crisp.
            haze: lerp(0.75, 0.12, depth),
            fog_top: base - amp * 0.45,
            fog_px: rng.range(0.06, 0.16) * hf,
        }
    }

    /// Sky colour at a point in height units (x from the image centre).
    fn sky(&self, px: f32, py: f32) -> Rgb {
        let [p0, p1, p2, k] = self.warp;
        let warp = 0.07 * (px * 1.7 * k + p0).sin() * (py * 2.3 + p1).sin() + 0.03 * (px * 4.1 + py * 2.9 + p2).sin();
        let t = py / self.horizon + warp;
        let mut c = self.pal.sky_at(t);

        // Soft, horizontally stretched clouds.
        let q = &self.cloud;
        let n1 = (px * 3.1 + 2.0 * (py * 7.3 + q[0]).sin() + q[1]).sin() * (py * 11.0 + 1.5 * (px * 2.3 + q[2]).sin() + q[3]).sin();
        let n2 = (px * 6.7 + 1.3 * (py * 13.0 + q[4]).sin() + q[5]).sin() * (py * 17.0 + px * 1.1 + q[6]).sin();
        let d = smoothstep(0.2, 1.0, 0.7 * n1 + 0.3 * n2 + 0.2 * (px * 0.9 + q[7]).sin())
            * self.cloud_amount
            * (1.0 - smoothstep(0.7, 1.0, t));
        c = mix(c, mix(self.pal.sky[3], self.pal.accent, 0.35), d * 0.55);

        for r in &self.ribbons {
            let yc = r.base + r.amp[0] * (px * r.freq[0] + r.phase[0]).sin() + r.amp[1] * (px * r.freq[1] + r.phase[1]).sin();
            let e = (py - yc) / r.thick;
            let i = (-e * e).exp() * (0.6 + 0.4 * (px * r.shimmer + r.phase[2]).sin()) * r.strength;
            c = screen(c, self.pal.accent, i);
        }

        let (sx, sy, sr) = self.sun;
        let d2 = (px - sx) * (px - sx) + (py - sy) * (py - sy);
        let halo = 0.55 * (-d2 / (18.0 * sr * sr)).exp() + 0.35 * (-d2 / (3.4 * sr * sr)).exp();
        screen(c, self.pal.glow, halo)
    }

    /// The sky sampled every `SKY_STEP` pixels (one extra sample past each edge).
    fn sky_grid(&self) -> (usize, Vec<Rgb>) {
        let gw = self.w / SKY_STEP + 2;
        let gh = self.h / SKY_STEP + 2;
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

    fn shade_row(&self, y: usize, (gw, grid): &(usize, Vec<Rgb>), row: &mut [Rgb]) {
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

        for &i in &self.star_rows[y] {
            let s = &self.stars[i];
            let x0 = s.x as usize;
            let lo = x0.saturating_sub(1);
            for (x, px) in row.iter_mut().enumerate().take(x0 + 2).skip(lo) {
                let (dx, dy) = (x as f32 + 0.5 - s.x, yc - s.y);
                let v = s.brightness * (-(dx * dx + dy * dy) / s.r2).exp();
                *px = screen(*px, [1.0, 1.0, 0.95], v);
            }
        }

        if self.sun_disc {
            let (sx, sy, sr) = self.sun;
            let (sx, sy, sr) = (sx * hf + w as f32 / 2.0, sy * hf, sr * hf);
            disc(row, yc, sx, sy, sr, 0.95, self.pal.glow, 1.0);
        }

        let horizon_col = self.pal.sky[3];
        for layer in &self.layers {
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
                *px = mix(*px, c, cover);
            }
        }

        for d in &self.bokeh {
            disc(row, yc, d.x, d.y, d.r, d.alpha, d.color, 0.55);
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

fn render(req: &GenerateRequest, index: u32, progress: &dyn Fn(u8)) -> RgbaImage {
    let (w, h) = (req.width as usize, req.height as usize);
    let mut rng = Rng(scene_seed(req, index));
    let pal = Palette::for_style(&req.style, &req.prompt, &mut rng);
    let scene = Scene::new(w, h, pal, &mut rng);
    let grid = scene.sky_grid();

    let mut img = RgbaImage::new(req.width, req.height);
    let mut row = vec![[0.0f32; 3]; w];
    let quarter = h.div_ceil(4);
    for (y, out) in img.chunks_exact_mut(w * 4).enumerate() {
        scene.shade_row(y, &grid, &mut row);
        for (o, c) in out.chunks_exact_mut(4).zip(&row) {
            o[0] = (c[0].clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
            o[1] = (c[1].clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
            o[2] = (c[2].clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
            o[3] = 255;
        }
        if (y + 1) % quarter == 0 || y + 1 == h {
            progress(((y + 1) * 100 / h) as u8);
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let req = GenerateRequest { prompt: "ab".into(), width: 64, height: 64, style: "none".into(), seed: 1, n: 1 };
        let base = scene_seed(&req, 0);
        assert_ne!(base, scene_seed(&req, 1));
        for other in [
            GenerateRequest { prompt: "abc".into(), ..req.clone() },
            GenerateRequest { seed: 2, ..req.clone() },
            GenerateRequest { width: 65, ..req.clone() },
            GenerateRequest { height: 65, ..req.clone() },
            GenerateRequest { style: "noir".into(), ..req.clone() },
        ] {
            assert_ne!(base, scene_seed(&other, 0), "{other:?}");
        }
        assert_eq!(base, scene_seed(&GenerateRequest { n: 4, ..req.clone() }, 0));
    }

    #[test]
    fn tiny_sizes_render() {
        for (w, h) in [(1, 1), (1, 7), (7, 1), (3, 5)] {
            let req = GenerateRequest { prompt: "x".into(), width: w, height: h, style: "forest".into(), seed: 9, n: 1 };
            assert_eq!(render(&req, 0, &|_| {}).dimensions(), (w, h));
        }
    }
}
