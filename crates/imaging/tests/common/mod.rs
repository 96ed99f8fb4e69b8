//! Test images built from scratch, deterministically.
#![allow(dead_code)]

use imaging::{Rgba, RgbaImage};

pub fn sample(w: u32, h: u32) -> RgbaImage {
    RgbaImage::from_fn(w, h, |x, y| Rgba([(x * 7) as u8, (y * 13) as u8, ((x ^ y) * 3) as u8, (x + y) as u8]))
}

pub fn opaque(w: u32, h: u32) -> RgbaImage {
    RgbaImage::from_fn(w, h, |x, y| {
        let v = ((x as f32 * 0.11).sin() * 60.0 + (y as f32 * 0.07).cos() * 60.0 + 128.0) as u8;
        Rgba([v, (x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 255])
    })
}

pub fn crc32(data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(data);
    c.sum()
}

/// A tiny valid PNG with its IHDR patched to claim `w`x`h`, CRC recomputed.
pub fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut bytes = imaging::encode_png(&sample(2, 2)).unwrap().bytes;
    bytes[16..20].copy_from_slice(&w.to_be_bytes());
    bytes[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A real PNG of `w`x`h` 8-bit greyscale zeros whose IDAT is streamed
/// through zlib row by row: a few hundred KiB that inflate to `w*h` bytes.
pub fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    use std::io::Write;
    let mut out = vec![137, 80, 78, 71, 13, 10, 26, 10];
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit greyscale
    chunk(&mut out, b"IHDR", &ihdr);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let row = vec![0u8; w as usize + 1];
    for _ in 0..h {
        z.write_all(&row).unwrap();
    }
    let idat = z.finish().unwrap();
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A TIFF/EXIF block: camera make and model, the given orientation, and a
/// GPS position (48°51'30"N 2°17'40"E).
pub fn exif_tiff(orientation: u16) -> Vec<u8> {
    let mut t = Vec::new();
    let u16le = |t: &mut Vec<u8>, v: u16| t.extend_from_slice(&v.to_le_bytes());
    let u32le = |t: &mut Vec<u8>, v: u32| t.extend_from_slice(&v.to_le_bytes());
    t.extend_from_slice(b"II*\0");
    u32le(&mut t, 8);
    // IFD0 at 8: 4 entries → ends at 8 + 2 + 48 + 4 = 62.
    u16le(&mut t, 4);
    let entry = |t: &mut Vec<u8>, tag: u16, typ: u16, count: u32, value: u32| {
        t.extend_from_slice(&tag.to_le_bytes());
        t.extend_from_slice(&typ.to_le_bytes());
        t.extend_from_slice(&count.to_le_bytes());
        t.extend_from_slice(&value.to_le_bytes());
    };
    entry(&mut t, 0x010F, 2, 6, 62); // Make
    entry(&mut t, 0x0110, 2, 7, 68); // Model
    entry(&mut t, 0x0112, 3, 1, u32::from(orientation)); // Orientation
    entry(&mut t, 0x8825, 4, 1, 76); // GPS IFD
    u32le(&mut t, 0);
    t.extend_from_slice(b"Canon\0");
    t.extend_from_slice(b"EOS R5\0");
    t.push(0);
    assert_eq!(t.len(), 76);
    u16le(&mut t, 4);
    entry(&mut t, 0x0001, 2, 2, u32::from_le_bytes(*b"N\0\0\0"));
    entry(&mut t, 0x0002, 5, 3, 130);
    entry(&mut t, 0x0003, 2, 2, u32::from_le_bytes(*b"E\0\0\0"));
    entry(&mut t, 0x0004, 5, 3, 154);
    u32le(&mut t, 0);
    assert_eq!(t.len(), 130);
    for (num, den) in [(48, 1), (51, 1), (30, 1), (2, 1), (17, 1), (40, 1)] {
        u32le(&mut t, num);
        u32le(&mut t, den);
    }
    t
}

/// `jpeg` with an APP1 Exif segment inserted after its APP0 (JFIF) segment.
pub fn with_exif(jpeg: &[u8], tiff: &[u8]) -> Vec<u8> {
    assert_eq!(&jpeg[..4], &[0xFF, 0xD8, 0xFF, 0xE0]);
    let app0_len = usize::from(u16::from_be_bytes([jpeg[4], jpeg[5]]));
    let at = 4 + app0_len;
    let mut out = jpeg[..at].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(tiff);
    out.extend_from_slice(&jpeg[at..]);
    out
}

/// Left half red, right half blue: shows which way a rotation went.
pub fn two_halves(w: u32, h: u32) -> RgbaImage {
    RgbaImage::from_fn(w, h, |x, _| if x < w / 2 { Rgba([220, 20, 20, 255]) } else { Rgba([20, 20, 220, 255]) })
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
