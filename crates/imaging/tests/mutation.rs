//! A bounded, deterministic fuzz run on the stable toolchain: valid PNG,
//! JPEG and WebP files mutated thousands of times (bit flips, interesting
//! bytes, truncation, splices) through every decode path. Nothing may panic
//! (a panic hook counts even the ones the decoder guard catches), and every
//! refusal must carry `invalid_image` or `image_too_large`.
//! `ATELIER_FUZZ_ITERS` sets the iterations per seed file (default 4000).
//! The coverage-guided target is `fuzz/fuzz_targets/decode.rs` (cargo fuzz).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use domain::ErrorCode;
use imaging::DecodeLimits;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            break;
        }
        let i = rng.below(b.len());
        match rng.below(7) {
            0 => b[i] ^= 1 << rng.below(8),
            1 => b[i] = [0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE][rng.below(6)],
            2 => b.truncate(i.max(1)),
            3 => {
                // Overwrite a 4-byte field (lengths, sizes) with an extreme value.
                let v: u32 = [0, 1, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x0000_FFFF, 0x3FFF][rng.below(6)];
                for (k, byte) in v.to_be_bytes().iter().enumerate() {
                    if i + k < b.len() {
                        b[i + k] = *byte;
                    }
                }
            }
            4 => {
                // Duplicate a slice somewhere else.
                let len = rng.below(64).min(b.len() - i);
                let chunk = b[i..i + len].to_vec();
                let at = rng.below(b.len());
                b.splice(at..at, chunk);
            }
            5 => {
                let len = rng.below(32).min(b.len() - i);
                b.drain(i..i + len);
            }
            _ => {
                let at = rng.below(b.len());
                let extra: Vec<u8> = (0..rng.below(16)).map(|_| rng.next() as u8).collect();
                b.splice(at..at, extra);
            }
        }
    }
    b
}

#[test]
fn mutated_images_never_panic_and_fail_with_image_codes() {
    let panics = Arc::new(AtomicUsize::new(0));
    let counter = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counter.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let img = opaque(48, 40);
    let alpha = sample(33, 17);
    let jpeg = imaging::encode_jpeg(&img, 80).unwrap().bytes;
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("png", imaging::encode_png(&img).unwrap().bytes),
        ("png-alpha", imaging::encode_png(&alpha).unwrap().bytes),
        ("jpeg", jpeg.clone()),
        ("jpeg-444-exif", with_exif(&imaging::encode_jpeg(&img, 95).unwrap().bytes, &exif_tiff(6))),
        ("webp-lossy", imaging::encode_webp(&alpha, 70).unwrap().bytes),
        ("webp-opaque", imaging::encode_webp(&img, 70).unwrap().bytes),
    ];
    let iters: usize = std::env::var("ATELIER_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(4000);
    let limits = DecodeLimits { max_pixels: 4_000_000, ..DecodeLimits::default() };
    let mut rng = Rng(0x00A7_E11E);
    let (mut ok, mut refused) = (0usize, 0usize);
    for (name, seed) in &seeds {
        for i in 0..iters {
            let input = mutate(seed, &mut rng);
            for result in [
                imaging::decode(&input, &limits).map(|d| d.image.dimensions()),
                // The DCT-scaled JPEG path (another decoder) and the thumbnail encoder.
                imaging::decode_scaled(&input, &limits, 8).map(|d| d.image.dimensions()),
            ] {
                match result {
                    Ok(_) => ok += 1,
                    Err(e) => {
                        refused += 1;
                        assert!(
                            matches!(e.code, ErrorCode::InvalidImage | ErrorCode::ImageTooLarge),
                            "{name} #{i}: unexpected code {}: {}",
                            e.code,
                            e.message
                        );
                    }
                }
            }
            assert_eq!(panics.load(Ordering::SeqCst), 0, "{name} mutation #{i} panicked");
        }
    }
    let _ = std::panic::take_hook();
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}: the mutations should produce both");
    eprintln!("{} inputs: {ok} decoded, {refused} refused, 0 panics", seeds.len() * iters * 2);
}
