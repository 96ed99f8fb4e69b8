mod common;

use common::*;
use domain::params::{Background, Output, OutputFormat};
use domain::ErrorCode;
use imaging::{decode, encode, DecodeLimits, Format, Rgba, RgbaImage};

fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

#[test]
fn c10_png_output_decodes_to_exactly_the_pixels_it_was_given() {
    // Nothing is added on the way (no watermark, no colour change), with or
    // without transparency.
    let img = sample(37, 23);
    let enc = imaging::encode_png(&img).unwrap();
    assert_eq!((enc.content_type, enc.width, enc.height), ("image/png", 37, 23));
    assert_eq!(imaging::png_dimensions(&enc.bytes).unwrap(), (37, 23));
    assert_eq!(imaging::decode_png(&enc.bytes).unwrap(), img);
    let d = decode(&enc.bytes, &limits()).unwrap();
    assert_eq!((d.format, d.orientation), (Format::Png, 1));
    assert_eq!(d.image, img);
}

#[test]
fn format_comes_from_magic_bytes_only() {
    let img = opaque(40, 30);
    for (format, bytes) in [
        (Format::Png, imaging::encode_png(&img).unwrap().bytes),
        (Format::Jpeg, imaging::encode_jpeg(&img, 85).unwrap().bytes),
        (Format::Webp, imaging::encode_webp(&img, 80).unwrap().bytes),
    ] {
        assert_eq!(imaging::sniff(&bytes).unwrap(), format);
        let p = imaging::probe(&bytes, &limits()).unwrap();
        assert_eq!((p.format, p.width, p.height), (format, 40, 30));
        let d = decode(&bytes, &limits()).unwrap();
        assert_eq!(d.image.dimensions(), (40, 30), "{format:?}");
    }
    // A GIF, a BMP and plain text are refused whatever they are called.
    for bad in [&b"GIF89a\x01\x00\x01\x00"[..], b"BM\x00\x00\x00\x00", b"<svg xmlns='http://www.w3.org/2000/svg'/>"] {
        assert_eq!(imaging::sniff(bad).unwrap_err().code, ErrorCode::InvalidImage);
    }
}

#[test]
fn lossy_encoders_honour_the_quality() {
    let img = opaque(256, 192);
    for format in [OutputFormat::Jpeg, OutputFormat::Webp] {
        let lo = encode(&img, &Output::new(format, Some(20), Background::Auto).unwrap()).unwrap();
        let hi = encode(&img, &Output::new(format, Some(95), Background::Auto).unwrap()).unwrap();
        assert_eq!(lo.content_type, format.content_type());
        assert!(lo.bytes.len() < hi.bytes.len(), "{format:?}: q20 {} >= q95 {}", lo.bytes.len(), hi.bytes.len());
        // Decodes to the right size and close to the source at high quality.
        let back = decode(&hi.bytes, &limits()).unwrap().image;
        assert_eq!(back.dimensions(), (256, 192));
        let err: u64 = back.pixels().zip(img.pixels()).map(|(a, b)| u64::from(a.0[1].abs_diff(b.0[1]))).sum();
        assert!(err / (256 * 192) < 6, "{format:?} mean error {}", err / (256 * 192));
    }
}

#[test]
fn webp_keeps_transparency_and_jpeg_flattens_it_onto_white() {
    let img = RgbaImage::from_fn(64, 64, |x, _| if x < 32 { Rgba([200, 10, 10, 255]) } else { Rgba([0, 0, 0, 0]) });
    let webp = decode(&imaging::encode_webp(&img, 90).unwrap().bytes, &limits()).unwrap().image;
    assert_eq!(webp.get_pixel(60, 10).0[3], 0, "transparent stays transparent");
    assert_eq!(webp.get_pixel(4, 10).0[3], 255);
    let png = decode(&imaging::encode_png(&img).unwrap().bytes, &limits()).unwrap().image;
    assert_eq!(png, img);
    let jpeg = decode(&imaging::encode_jpeg(&img, 90).unwrap().bytes, &limits()).unwrap().image;
    let p = jpeg.get_pixel(60, 10).0;
    assert!(p[0] > 240 && p[1] > 240 && p[2] > 240 && p[3] == 255, "{p:?}");
}

#[test]
fn c11_upload_with_gps_exif_and_orientation_6_is_stored_upright_without_metadata() {
    // 64 wide, 32 high; orientation 6 means "rotate 90° clockwise to view".
    let jpeg = imaging::encode_jpeg(&two_halves(64, 32), 95).unwrap().bytes;
    let upload = with_exif(&jpeg, &exif_tiff(6));
    assert!(contains(&upload, b"Exif") && contains(&upload, b"Canon") && contains(&upload, b"EOS R5"));

    let clean = imaging::sanitize_upload(&upload, &limits()).unwrap();
    assert_eq!(clean.orientation, 6);
    assert_eq!((clean.encoded.width, clean.encoded.height), (32, 64), "rotated to upright");
    let stored = &clean.encoded.bytes;
    for marker in [&b"Exif"[..], b"Canon", b"EOS R5", b"II*\0", b"MM\0*", b"http://ns.adobe.com/xap", b"ICC_PROFILE"] {
        assert!(!contains(stored, marker), "stored bytes still contain {:?}", String::from_utf8_lossy(marker));
    }
    // No APP1 (EXIF/XMP), APP2 (ICC) or APP13 (IPTC) segment at all.
    let mut pos = 2;
    while pos + 4 <= stored.len() && stored[pos] == 0xFF && stored[pos + 1] != 0xDA {
        assert!(!matches!(stored[pos + 1], 0xE1 | 0xE2 | 0xED), "metadata segment {:#x}", stored[pos + 1]);
        pos += 2 + usize::from(u16::from_be_bytes([stored[pos + 2], stored[pos + 3]]));
    }
    // Upright: the left (red) half of the sensor image is now on top.
    let back = decode(stored, &limits()).unwrap();
    assert_eq!(back.orientation, 1, "nothing left to rotate");
    assert_eq!(back.image.dimensions(), (32, 64));
    let top = back.image.get_pixel(16, 8).0;
    let bottom = back.image.get_pixel(16, 56).0;
    assert!(top[0] > 150 && top[2] < 100, "top should be red: {top:?}");
    assert!(bottom[2] > 150 && bottom[0] < 100, "bottom should be blue: {bottom:?}");

    // PNG uploads come back as exact pixels, with no ancillary chunks.
    let png = imaging::encode_png(&sample(20, 10)).unwrap().bytes;
    let clean = imaging::sanitize_upload(&png, &limits()).unwrap();
    assert_eq!(imaging::decode_png(&clean.encoded.bytes).unwrap(), sample(20, 10));
    assert!(!contains(&clean.encoded.bytes, b"eXIf") && !contains(&clean.encoded.bytes, b"iTXt"));
}

#[test]
fn orientation_is_applied_for_every_exif_value() {
    let jpeg = imaging::encode_jpeg(&two_halves(64, 32), 95).unwrap().bytes;
    for o in 1..=8u16 {
        let d = decode(&with_exif(&jpeg, &exif_tiff(o)), &limits()).unwrap();
        assert_eq!(d.orientation as u16, o);
        let expect = if o >= 5 { (32, 64) } else { (64, 32) };
        assert_eq!(d.image.dimensions(), expect, "orientation {o}");
    }
}

#[test]
fn resize_and_upscale_give_the_asked_sizes_and_respect_alpha() {
    let img = sample(100, 60);
    assert_eq!(imaging::resize(&img, 33, 20).unwrap().dimensions(), (33, 20));
    assert_eq!(imaging::upscale(&opaque(64, 48), 256, 192).unwrap().dimensions(), (256, 192));
    // Fully transparent pixels carry no colour into their neighbours.
    let holes = RgbaImage::from_fn(32, 32, |x, _| if x % 2 == 0 { Rgba([255, 0, 0, 255]) } else { Rgba([0, 255, 0, 0]) });
    let small = imaging::resize(&holes, 16, 16).unwrap();
    assert!(small.pixels().all(|p| p.0[1] < 8), "green leaked from transparent pixels");
    // An opaque image stays opaque through the upscale.
    assert!(imaging::is_opaque(&imaging::upscale(&opaque(50, 50), 200, 200).unwrap()));
}

#[test]
fn sharpening_adds_edge_contrast_and_leaves_flat_areas() {
    let img = RgbaImage::from_fn(20, 20, |x, _| if x < 10 { Rgba([100, 100, 100, 255]) } else { Rgba([150, 150, 150, 255]) });
    let s = imaging::sharpen(&img, 0.5);
    assert_eq!(s.get_pixel(2, 5), img.get_pixel(2, 5));
    assert!(s.get_pixel(9, 5).0[0] < 100 && s.get_pixel(10, 5).0[0] > 150);
}

#[test]
fn thumbnails_are_webp_with_the_long_side_capped() {
    let t = imaging::thumbnail(&opaque(1536, 1024), 384).unwrap();
    assert_eq!((t.content_type, t.width, t.height), ("image/webp", 384, 256));
    assert_eq!(decode(&t.bytes, &limits()).unwrap().image.dimensions(), (384, 256));
    assert_eq!(imaging::thumbnail_size((1024, 1536), 256).unwrap(), (171, 256));
    assert_eq!(imaging::thumbnail_size((4000, 1), 256).unwrap(), (256, 1));
    // Never upscaled.
    let small = imaging::thumbnail(&opaque(100, 50), 384).unwrap();
    assert_eq!((small.width, small.height), (100, 50));
    // From JPEG bytes through the reduced-scale decode: same size, similar look.
    let big = opaque(2048, 1536);
    let jpeg = imaging::encode_jpeg(&big, 90).unwrap().bytes;
    let fast = imaging::thumbnail_from_bytes(&jpeg, &limits(), 384).unwrap();
    assert_eq!((fast.width, fast.height), (384, 288));
    let a = decode(&fast.bytes, &limits()).unwrap().image;
    let b = imaging::resize(&big, 384, 288).unwrap();
    let err: u64 = a.pixels().zip(b.pixels()).map(|(x, y)| u64::from(x.0[0].abs_diff(y.0[0]))).sum();
    assert!(err / (384 * 288) < 8, "mean error {}", err / (384 * 288));
    // The scaled path applies EXIF orientation too.
    let rotated = with_exif(&imaging::encode_jpeg(&two_halves(2048, 1024), 90).unwrap().bytes, &exif_tiff(6));
    let t = imaging::thumbnail_from_bytes(&rotated, &limits(), 384).unwrap();
    assert_eq!((t.width, t.height), (192, 384));
}

#[test]
fn limits_are_configurable_and_checked_from_the_header() {
    let png = imaging::encode_png(&sample(30, 20)).unwrap().bytes;
    let tight = |f: fn(&mut DecodeLimits)| {
        let mut l = limits();
        f(&mut l);
        l
    };
    for l in [tight(|l| l.max_bytes = 10), tight(|l| l.max_width = 29), tight(|l| l.max_height = 19), tight(|l| l.max_pixels = 599)] {
        assert_eq!(decode(&png, &l).unwrap_err().code, ErrorCode::ImageTooLarge, "{l:?}");
    }
    assert!(decode(&png, &tight(|l| l.max_pixels = 600)).is_ok());
}
