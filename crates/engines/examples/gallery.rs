//! Renders a few procedural images to a directory, for eyeballing changes:
//! `cargo run -p engines --release --example gallery -- /tmp/gallery [prompt]`

use std::sync::Arc;
use std::time::Instant;

use engines::{Engine, GenerateRequest, ProceduralEngine};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "gallery".into()));
    let prompt = args.next().unwrap_or_else(|| "a quiet valley at dawn".into());
    std::fs::create_dir_all(&dir).unwrap();
    // A contact sheet: one row per style, one column per seed.
    let (tw, th) = (384, 256);
    let styles = domain::params::STYLES;
    let mut sheet = imaging::RgbaImage::new(tw * 2, th * styles.len() as u32);
    for (row, style) in styles.iter().enumerate() {
        for seed in 1..=2u64 {
            let req = GenerateRequest { prompt: prompt.clone(), width: 1536, height: 1024, style: style.to_string(), seed, n: 1 };
            let start = Instant::now();
            let out = ProceduralEngine.generate(&req, Arc::new(|_| {})).await.unwrap();
            let rendered = start.elapsed();
            let png = imaging::encode_png(&out[0].image).unwrap();
            let path = dir.join(format!("{style}-{seed}.png"));
            std::fs::write(&path, &png.bytes).unwrap();
            let thumb = imaging::decode_png(&imaging::thumbnail_png(&out[0].image, tw).unwrap().bytes).unwrap();
            for (x, y, p) in thumb.enumerate_pixels() {
                sheet.put_pixel(x + tw * (seed as u32 - 1), y + th * row as u32, *p);
            }
            println!("{} rendered in {rendered:?}, {} KiB", path.display(), png.bytes.len() / 1024);
        }
    }
    std::fs::write(dir.join("sheet.png"), imaging::encode_png(&sheet).unwrap().bytes).unwrap();
}
