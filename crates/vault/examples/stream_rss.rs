//! Encrypts and decrypts a large file through the chunked AEAD stream and
//! reports throughput and peak memory: the streaming claim of the vault,
//! measured. Usage: stream_rss [MEGABYTES] [WORK_DIR]

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::time::Instant;

use sha2::{Digest, Sha256};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn digest(path: &std::path::Path) -> Vec<u8> {
    let mut hasher = Sha256::new();
    let mut file = BufReader::new(File::open(path).unwrap());
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return hasher.finalize().to_vec();
        }
        hasher.update(&buf[..n]);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let megabytes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| std::env::temp_dir().display().to_string()));
    let (plain, sealed, opened) = (dir.join("stream-plain.bin"), dir.join("stream-sealed.bin"), dir.join("stream-opened.bin"));

    // Deterministic, incompressible-looking content written in 1 MiB steps.
    let mut out = BufWriter::new(File::create(&plain).unwrap());
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..megabytes {
        for b in block.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        out.write_all(&block).unwrap();
    }
    out.flush().unwrap();
    drop(block);
    let before = peak_rss_kib();

    let key = vault::DataKey::generate();
    let started = Instant::now();
    vault::encrypt_stream(
        &key,
        "bench/object",
        BufReader::new(File::open(&plain).unwrap()),
        BufWriter::new(File::create(&sealed).unwrap()),
    )
    .unwrap();
    let encrypt_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    vault::decrypt_stream(
        &key,
        "bench/object",
        BufReader::new(File::open(&sealed).unwrap()),
        BufWriter::new(File::create(&opened).unwrap()),
    )
    .unwrap();
    let decrypt_s = started.elapsed().as_secs_f64();
    let peak = peak_rss_kib();
    assert_eq!(digest(&plain), digest(&opened), "round trip");
    let size = std::fs::metadata(&plain).unwrap().len() as f64 / (1 << 20) as f64;
    println!(
        "| {size:.0} MiB | {:.0} MiB/s | {:.0} MiB/s | {:.1} MiB | {:.1} MiB |",
        size / encrypt_s,
        size / decrypt_s,
        before as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    for f in [plain, sealed, opened] {
        let _ = std::fs::remove_file(f);
    }
}
