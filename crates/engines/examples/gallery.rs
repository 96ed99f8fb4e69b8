//! Renders a contact sheet of the procedural engine, for eyeballing changes:
//! `cargo run -p engines --release --example gallery -- /tmp/gallery [prompt]`
//! Without a prompt: one row per subject of the lexicon; with one: one row
//! per style. Each row shows two seeds.

use std::time::Instant;

use engines::{Engine, GenerateRequest, Observer, ProceduralEngine};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "gallery".into()));
    let rows: Vec<(String, String)> = match args.next() {
        Some(prompt) => domain::params::STYLES.iter().map(|s| (prompt.clone(), s.to_string())).collect(),
        None => [
            ("snowy mountains at dawn", "none"),
            ("a lighthouse by the sea at sunset", "none"),
            ("a misty lake among mountains, morning", "none"),
            ("pine forest with fireflies at night", "none"),
            ("golden desert dunes at noon", "none"),
            ("a neon city skyline at night in the rain", "none"),
            ("a purple nebula with planets in deep space", "none"),
            ("abstract geometric shapes in red and blue", "none"),
            ("portrait of a wanderer at dusk", "none"),
            ("a meadow of red flowers on a sunny day", "none"),
            ("a stormy sea", "cinematic"),
            ("a quiet valley", "watercolor"),
        ]
        .iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect(),
    };
    std::fs::create_dir_all(&dir).unwrap();
    let (tw, th) = (384, 256);
    let mut sheet = imaging::RgbaImage::new(tw * 2, th * rows.len() as u32);
    for (row, (prompt, style)) in rows.iter().enumerate() {
        for seed in 1..=2u64 {
            let req = GenerateRequest {
                prompt: prompt.clone(),
                width: 1536,
                height: 1024,
                style: style.clone(),
                seed,
                n: 1,
                ..Default::default()
            };
            let start = Instant::now();
            let out = ProceduralEngine.generate(&req, Observer::silent()).await.unwrap();
            let rendered = start.elapsed();
            let png = imaging::encode_png(&out[0].image).unwrap();
            let path = dir.join(format!("{row:02}-{style}-{seed}.png"));
            std::fs::write(&path, &png.bytes).unwrap();
            let thumb = imaging::resize(&out[0].image, tw, th).unwrap();
            for (x, y, p) in thumb.enumerate_pixels() {
                sheet.put_pixel(x + tw * (seed as u32 - 1), y + th * row as u32, *p);
            }
            println!("{prompt:?} [{style}] seed {seed}: {rendered:?}, {} KiB", png.bytes.len() / 1024);
        }
    }
    std::fs::write(dir.join("sheet.png"), imaging::encode_png(&sheet).unwrap().bytes).unwrap();
}
