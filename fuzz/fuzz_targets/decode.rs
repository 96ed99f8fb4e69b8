//! Every decode path of untrusted bytes: the full decoder (PNG, JPEG, WebP
//! by magic bytes, with EXIF orientation), the DCT-scaled JPEG decoder used
//! for thumbnails, and the encoders on whatever decoded. A panic, an abort
//! or an allocation over libFuzzer's `-rss_limit_mb` is a finding.
#![no_main]

use imaging::DecodeLimits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits { max_bytes: 8 << 20, max_width: 4096, max_height: 4096, max_pixels: 4_000_000 };
    if let Ok(decoded) = imaging::decode_unguarded(data, &limits) {
        let img = &decoded.image;
        assert!(u64::from(img.width()) * u64::from(img.height()) <= limits.max_pixels);
        let _ = imaging::thumbnail(img, 32);
    }
    let _ = imaging::decode_scaled_unguarded(data, &limits, 16);
});
