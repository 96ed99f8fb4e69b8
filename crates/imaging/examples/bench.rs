//! The Atelier side of `bench/run` (not part of the test suite).
//!
//! `bench gen DIR`              writes the deterministic inputs:
//!                              in1024.png (1024x1024 RGB) and in4096.jpg (4096x4096, q90)
//! `bench run DIR RUNS`         times the three operations and prints one
//!                              tab-separated line per measurement:
//!                              `op  variant  median_ms  min_ms  output_bytes`
//!
//! Every timed run starts from the encoded bytes in memory and ends with the
//! result in memory (pixels for the upscale, encoded bytes otherwise), like
//! the Pillow and libvips side in bench/peers.py.

use std::time::Instant;

use imaging::{DecodeLimits, Rgba, RgbaImage};

fn scene(w: u32, h: u32) -> RgbaImage {
    // Photo-like content: smooth gradients, a soft sun, hills with edges, grain.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 56) as i32 - 128
    };
    RgbaImage::from_fn(w, h, |x, y| {
        let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
        let sky = (1.0 - v) * 180.0 + 40.0;
        let hills = ((u * 9.0).sin() * 0.05 + 0.6 + (u * 23.0).sin() * 0.02 < v) as i32 as f32;
        let sun = (-(((u - 0.7).powi(2) + (v - 0.3).powi(2)) * 60.0)).exp() * 120.0;
        let n = noise() as f32 * 0.15;
        let r = (sky * 0.9 + sun - hills * 120.0 + n).clamp(0.0, 255.0) as u8;
        let g = (sky * 0.7 + sun * 0.8 - hills * 60.0 + n + (u * 40.0).sin() * 10.0).clamp(0.0, 255.0) as u8;
        let b = (sky + sun * 0.3 - hills * 150.0 + n).clamp(0.0, 255.0) as u8;
        Rgba([r, g, b, 255])
    })
}

fn rgb_png(img: &RgbaImage) -> Vec<u8> {
    use image::ImageEncoder;
    let rgb: Vec<u8> = img.as_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(&rgb, img.width(), img.height(), image::ExtendedColorType::Rgb8).unwrap();
    out
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, f64, T) {
    let mut last = f(); // warm-up
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        last = f();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (ms[ms.len() / 2], ms[0], last)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(2).expect("usage: bench gen|run DIR [RUNS]"));
    match args[1].as_str() {
        "gen" => {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("in1024.png"), rgb_png(&scene(1024, 1024))).unwrap();
            let big = scene(4096, 4096);
            std::fs::write(dir.join("in4096.jpg"), imaging::encode_jpeg(&big, 90).unwrap().bytes).unwrap();
        }
        "run" => {
            let runs: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(9);
            let png = std::fs::read(dir.join("in1024.png")).unwrap();
            let jpg = std::fs::read(dir.join("in4096.jpg")).unwrap();
            let limits = DecodeLimits { max_bytes: 1 << 30, ..DecodeLimits::default() };
            let line = |op: &str, variant: &str, (median, min, bytes): (f64, f64, usize)| {
                println!("{op}\t{variant}\t{median:.1}\t{min:.1}\t{bytes}");
            };

            let (m, n, out) = time(runs, || {
                let img = imaging::decode(&png, &limits).unwrap().image;
                imaging::resize(&img, 4096, 4096).unwrap()
            });
            line("upscale", "lanczos3", (m, n, out.as_raw().len()));
            let (m, n, out) = time(runs, || {
                let img = imaging::decode(&png, &limits).unwrap().image;
                imaging::upscale(&img, 4096, 4096).unwrap()
            });
            line("upscale", "lanczos3+sharpen", (m, n, out.as_raw().len()));

            let (m, n, out) = time(runs, || imaging::thumbnail_from_bytes(&jpg, &limits, 384).unwrap());
            line("thumbnail", "shrink-on-load", (m, n, out.bytes.len()));
            let (m, n, out) = time(runs, || {
                let img = imaging::decode(&jpg, &limits).unwrap().image;
                imaging::thumbnail(&img, 384).unwrap()
            });
            line("thumbnail", "full-decode", (m, n, out.bytes.len()));

            let (m, n, out) = time(runs, || {
                let img = imaging::decode(&jpg, &limits).unwrap().image;
                imaging::encode_jpeg(&img, 85).unwrap()
            });
            line("recode", "q85", (m, n, out.bytes.len()));
        }
        other => panic!("unknown command {other}"),
    }
}
