//! Hostile files: each is refused with its code, and a counting allocator
//! proves the decoder never allocated anywhere near the size the file claims.
//! One test function on purpose: the allocator counts the whole process.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use domain::ErrorCode;
use imaging::{decode, DecodeLimits};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size > layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::SeqCst) + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::SeqCst);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the peak memory it added, in bytes.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let out = f();
    (out, PEAK.load(Ordering::SeqCst).saturating_sub(base))
}

const MIB: usize = 1 << 20;

#[test]
fn hostile_files_are_refused_with_their_code_and_small_memory() {
    let limits = DecodeLimits::default();
    // The counter does count: a real 1500x1500 decode needs its 9 MB.
    let real = imaging::encode_png(&opaque(1500, 1500)).unwrap().bytes;
    let (ok, peak) = peak_during(|| decode(&real, &limits));
    assert!(ok.is_ok() && peak >= 9_000_000, "peak {peak}");

    let refuse = |name: &str, bytes: &[u8], code: ErrorCode, claimed: u64| {
        let (result, peak) = peak_during(|| decode(bytes, &limits));
        let err = result.expect_err(name);
        assert_eq!(err.code, code, "{name}: {err}");
        assert!(peak < 16 * MIB, "{name}: {peak} bytes allocated (claims {claimed})");
        // The same through the thumbnail path.
        let (result, peak) = peak_during(|| imaging::thumbnail_from_bytes(bytes, &limits, 384));
        assert_eq!(result.expect_err(name).code, code, "{name} (thumbnail)");
        assert!(peak < 16 * MIB, "{name} (thumbnail): {peak} bytes");
    };

    // 1. A PNG whose header claims 100000 x 100000 (40 GB as RGBA).
    refuse("huge header png", &png_claiming(100_000, 100_000), ErrorCode::ImageTooLarge, 40_000_000_000);

    // 2. A decompression bomb: real zlib data that inflates to 8000 x 8000
    //    (64 MP, 256 MB as RGBA) from a file of well under a megabyte.
    let bomb = png_bomb(8000, 8000);
    assert!(bomb.len() < MIB, "bomb is {} bytes", bomb.len());
    refuse("decompression bomb png", &bomb, ErrorCode::ImageTooLarge, 256_000_000);

    // 3. A truncated JPEG, cut anywhere after the header: never a grey-filled "success".
    let jpeg = imaging::encode_jpeg(&opaque(640, 480), 90).unwrap().bytes;
    for cut in [jpeg.len() / 3, jpeg.len() / 2, jpeg.len() - 2, jpeg.len() - 1] {
        refuse("truncated jpeg", &jpeg[..cut], ErrorCode::InvalidImage, 640 * 480 * 4);
    }

    // 4. A text file named .png (the name is never consulted anyway).
    refuse("text.png", b"this is not an image, whatever its name says\n", ErrorCode::InvalidImage, 0);

    // 5. A JPEG whose frame header claims 65000 x 65000.
    let mut lying = jpeg.clone();
    let sof = lying.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    lying[sof + 5..sof + 7].copy_from_slice(&65000u16.to_be_bytes());
    lying[sof + 7..sof + 9].copy_from_slice(&65000u16.to_be_bytes());
    refuse("jpeg claiming 65000^2", &lying, ErrorCode::ImageTooLarge, 65000 * 65000 * 4);

    // 6. A lossless WebP header claiming 16384 x 16384 (1 GiB as RGBA).
    let mut webp = b"RIFF\0\0\0\0WEBPVP8L".to_vec();
    webp.extend_from_slice(&[5, 0, 0, 0, 0x2F]);
    webp.extend_from_slice(&(0x3FFFu32 | (0x3FFF << 14)).to_le_bytes());
    webp.extend_from_slice(&[0; 16]);
    let riff_len = (webp.len() - 8) as u32;
    webp[4..8].copy_from_slice(&riff_len.to_le_bytes());
    refuse("webp claiming 16384^2", &webp, ErrorCode::ImageTooLarge, 16384 * 16384 * 4);

    // 7. A PNG that lies the other way: the header is within limits but the
    //    data is far too short for it. The decoder may allocate the (limited)
    //    claimed size, and then reports the lie.
    let mut short = png_claiming(1000, 1000);
    short.truncate(short.len() - 12); // drop IEND as well
    let err = decode(&short, &limits).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidImage, "{err}");

    // 8. A truncated WebP (RIFF length says more than there is).
    let webp = imaging::encode_webp(&opaque(64, 64), 80).unwrap().bytes;
    refuse("truncated webp", &webp[..webp.len() - 10], ErrorCode::InvalidImage, 64 * 64 * 4);
}
