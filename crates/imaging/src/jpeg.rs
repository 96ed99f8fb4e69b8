//! A walk over a JPEG's marker structure: the frame size, and proof that the
//! file reaches its end-of-image marker. Lenient decoders fill a truncated
//! JPEG with grey and call it a success; we refuse it instead.

use domain::Result;

use crate::invalid_image;

/// Dimensions from the first frame header (SOFn); errors unless every
/// segment fits in the bytes and an EOI marker ends the image. Bytes after
/// EOI (some cameras append data) are ignored.
pub fn scan(bytes: &[u8]) -> Result<(u32, u32)> {
    let truncated = || invalid_image("invalid jpeg: truncated");
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return Err(invalid_image("not a jpeg image"));
    }
    let mut pos = 2;
    let mut dims: Option<(u32, u32)> = None;
    loop {
        if pos >= bytes.len() {
            return Err(truncated());
        }
        if bytes[pos] != 0xFF {
            return Err(invalid_image("invalid jpeg: expected a marker"));
        }
        while pos < bytes.len() && bytes[pos] == 0xFF {
            pos += 1;
        }
        let Some(&marker) = bytes.get(pos) else { return Err(truncated()) };
        pos += 1;
        match marker {
            0xD9 => return dims.ok_or_else(|| invalid_image("invalid jpeg: no frame header")),
            0x01 | 0xD0..=0xD7 => continue,
            0xD8 | 0x00 => return Err(invalid_image("invalid jpeg: unexpected marker")),
            _ => {}
        }
        if pos + 2 > bytes.len() {
            return Err(truncated());
        }
        let len = usize::from(u16::from_be_bytes([bytes[pos], bytes[pos + 1]]));
        if len < 2 {
            return Err(invalid_image("invalid jpeg: bad segment length"));
        }
        let end = pos + len;
        if end > bytes.len() {
            return Err(truncated());
        }
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof && dims.is_none() {
            if len < 8 {
                return Err(invalid_image("invalid jpeg: short frame header"));
            }
            let h = u32::from(u16::from_be_bytes([bytes[pos + 3], bytes[pos + 4]]));
            let w = u32::from(u16::from_be_bytes([bytes[pos + 5], bytes[pos + 6]]));
            if w == 0 || h == 0 {
                return Err(invalid_image("invalid jpeg: zero dimension"));
            }
            dims = Some((w, h));
        }
        pos = end;
        if marker == 0xDA {
            if dims.is_none() {
                return Err(invalid_image("invalid jpeg: scan before frame header"));
            }
            // Entropy-coded data: 0xFF is stuffed as FF 00; RSTn markers and
            // fill bytes may appear; any other marker ends the scan.
            loop {
                let Some(i) = bytes[pos..].iter().position(|&b| b == 0xFF) else { return Err(truncated()) };
                let i = pos + i;
                let Some(&next) = bytes.get(i + 1) else { return Err(truncated()) };
                if next == 0x00 || (0xD0..=0xD7).contains(&next) || next == 0xFF {
                    pos = i + 1;
                    if next != 0xFF {
                        pos += 1;
                    }
                    continue;
                }
                pos = i;
                break;
            }
        }
    }
}
