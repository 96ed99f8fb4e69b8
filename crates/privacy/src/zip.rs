//! A streaming ZIP encoder: STORED entries (the images are already
//! compressed) with data descriptors, so nothing is seeked back to and an
//! entry's bytes can be handed over as they come. ZIP64 records are added
//! only when the archive needs them (more than 65 535 entries, or offsets
//! past 4 GiB); a single entry must stay under 4 GiB.
//!
//! The encoder appends bytes to a caller's buffer; the caller moves them on
//! (to the object store, in parts) whenever it likes.

use domain::{Error, Result};

const LOCAL_HEADER: u32 = 0x0403_4b50;
const DATA_DESCRIPTOR: u32 = 0x0807_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_OF_CENTRAL_DIR: u32 = 0x0605_4b50;
const ZIP64_END_OF_CENTRAL_DIR: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
/// Bit 3: sizes and CRC follow the data; bit 11: names are UTF-8.
const FLAGS: u16 = 0x0808;
const VERSION: u16 = 20;
const VERSION_ZIP64: u16 = 45;

struct Entry {
    name: String,
    crc: u32,
    size: u32,
    offset: u64,
}

struct Open {
    name: String,
    offset: u64,
    crc: Crc32,
    size: u64,
}

pub struct ZipEncoder {
    written: u64,
    entries: Vec<Entry>,
    open: Option<Open>,
    dos_time: u16,
    dos_date: u16,
}

impl ZipEncoder {
    /// Every entry is stamped with `now_ms` (UTC).
    pub fn new(now_ms: i64) -> ZipEncoder {
        let (dos_time, dos_date) = dos_datetime(now_ms);
        ZipEncoder { written: 0, entries: Vec::new(), open: None, dos_time, dos_date }
    }

    fn put(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(bytes);
        self.written += bytes.len() as u64;
    }

    /// Starts an entry; the previous one must be finished.
    pub fn start(&mut self, name: &str, out: &mut Vec<u8>) -> Result<()> {
        if self.open.is_some() {
            return Err(Error::internal("zip entry started before the previous one ended"));
        }
        if name.is_empty() || name.len() > usize::from(u16::MAX) || name.starts_with('/') || name.split('/').any(|s| s == "..") {
            return Err(Error::internal("bad zip entry name"));
        }
        let offset = self.written;
        let mut header = Vec::with_capacity(30 + name.len());
        header.extend_from_slice(&LOCAL_HEADER.to_le_bytes());
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&FLAGS.to_le_bytes());
        header.extend_from_slice(&0u16.to_le_bytes()); // stored
        header.extend_from_slice(&self.dos_time.to_le_bytes());
        header.extend_from_slice(&self.dos_date.to_le_bytes());
        header.extend_from_slice(&[0; 12]); // CRC and sizes: in the data descriptor
        header.extend_from_slice(&(name.len() as u16).to_le_bytes());
        header.extend_from_slice(&0u16.to_le_bytes());
        header.extend_from_slice(name.as_bytes());
        self.put(out, &header);
        self.open = Some(Open { name: name.to_string(), offset, crc: Crc32::new(), size: 0 });
        Ok(())
    }

    /// Appends bytes to the open entry.
    pub fn data(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let open = self.open.as_mut().ok_or_else(|| Error::internal("zip data outside an entry"))?;
        open.crc.update(bytes);
        open.size += bytes.len() as u64;
        if open.size > u64::from(u32::MAX - 1) {
            return Err(Error::internal("a zip entry would exceed 4 GiB"));
        }
        self.put(out, bytes);
        Ok(())
    }

    pub fn end(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let open = self.open.take().ok_or_else(|| Error::internal("no zip entry to end"))?;
        let entry = Entry { name: open.name, crc: open.crc.finish(), size: open.size as u32, offset: open.offset };
        let mut descriptor = Vec::with_capacity(16);
        descriptor.extend_from_slice(&DATA_DESCRIPTOR.to_le_bytes());
        descriptor.extend_from_slice(&entry.crc.to_le_bytes());
        descriptor.extend_from_slice(&entry.size.to_le_bytes());
        descriptor.extend_from_slice(&entry.size.to_le_bytes());
        self.put(out, &descriptor);
        self.entries.push(entry);
        Ok(())
    }

    /// A whole entry at once.
    pub fn file(&mut self, name: &str, bytes: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.start(name, out)?;
        self.data(bytes, out)?;
        self.end(out)
    }

    /// Writes the central directory; returns the archive's total size.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<u64> {
        if self.open.is_some() {
            return Err(Error::internal("zip finished with an entry open"));
        }
        let directory_offset = self.written;
        let entries = std::mem::take(&mut self.entries);
        for entry in &entries {
            let far = entry.offset >= u64::from(u32::MAX);
            let version = if far { VERSION_ZIP64 } else { VERSION };
            let mut header = Vec::with_capacity(46 + entry.name.len() + 12);
            header.extend_from_slice(&CENTRAL_HEADER.to_le_bytes());
            header.extend_from_slice(&version.to_le_bytes()); // made by (MS-DOS attributes)
            header.extend_from_slice(&version.to_le_bytes());
            header.extend_from_slice(&FLAGS.to_le_bytes());
            header.extend_from_slice(&0u16.to_le_bytes());
            header.extend_from_slice(&self.dos_time.to_le_bytes());
            header.extend_from_slice(&self.dos_date.to_le_bytes());
            header.extend_from_slice(&entry.crc.to_le_bytes());
            header.extend_from_slice(&entry.size.to_le_bytes());
            header.extend_from_slice(&entry.size.to_le_bytes());
            header.extend_from_slice(&(entry.name.len() as u16).to_le_bytes());
            header.extend_from_slice(&(if far { 12u16 } else { 0 }).to_le_bytes());
            header.extend_from_slice(&[0; 10]); // comment length, disk, internal and external attributes
            header.extend_from_slice(&(if far { u32::MAX } else { entry.offset as u32 }).to_le_bytes());
            header.extend_from_slice(entry.name.as_bytes());
            if far {
                // ZIP64 extended information: only the offset overflows.
                header.extend_from_slice(&1u16.to_le_bytes());
                header.extend_from_slice(&8u16.to_le_bytes());
                header.extend_from_slice(&entry.offset.to_le_bytes());
            }
            self.put(out, &header);
        }
        let count = entries.len() as u64;
        let directory_size = self.written - directory_offset;
        let zip64 = count >= u64::from(u16::MAX) || directory_offset >= u64::from(u32::MAX) || directory_size >= u64::from(u32::MAX);
        let mut end = Vec::with_capacity(98);
        if zip64 {
            let record_offset = self.written;
            end.extend_from_slice(&ZIP64_END_OF_CENTRAL_DIR.to_le_bytes());
            end.extend_from_slice(&44u64.to_le_bytes());
            end.extend_from_slice(&VERSION_ZIP64.to_le_bytes());
            end.extend_from_slice(&VERSION_ZIP64.to_le_bytes());
            end.extend_from_slice(&[0; 8]); // this disk, the directory's disk
            end.extend_from_slice(&count.to_le_bytes());
            end.extend_from_slice(&count.to_le_bytes());
            end.extend_from_slice(&directory_size.to_le_bytes());
            end.extend_from_slice(&directory_offset.to_le_bytes());
            end.extend_from_slice(&ZIP64_LOCATOR.to_le_bytes());
            end.extend_from_slice(&0u32.to_le_bytes());
            end.extend_from_slice(&record_offset.to_le_bytes());
            end.extend_from_slice(&1u32.to_le_bytes());
        }
        let short = |v: u64| if zip64 { u16::MAX } else { v as u16 };
        let long = |v: u64| if zip64 { u32::MAX } else { v as u32 };
        end.extend_from_slice(&END_OF_CENTRAL_DIR.to_le_bytes());
        end.extend_from_slice(&[0; 4]);
        end.extend_from_slice(&short(count).to_le_bytes());
        end.extend_from_slice(&short(count).to_le_bytes());
        end.extend_from_slice(&long(directory_size).to_le_bytes());
        end.extend_from_slice(&long(directory_offset).to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        self.put(out, &end);
        Ok(self.written)
    }
}

/// Epoch milliseconds → MS-DOS (time, date), two-second resolution.
fn dos_datetime(ms: i64) -> (u16, u16) {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = domain::time::civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    // DOS dates start in 1980 and end in 2107.
    let year = (y.clamp(1980, 2107) - 1980) as u16;
    let time = ((rem / 3600) as u16) << 11 | ((rem % 3600 / 60) as u16) << 5 | ((rem % 60) / 2) as u16;
    (time, year << 9 | (m as u16) << 5 | d as u16)
}

/// CRC-32 (IEEE 802.3, reflected), as ZIP wants it.
struct Crc32(u32);

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

impl Crc32 {
    fn new() -> Crc32 {
        Crc32(0xFFFF_FFFF)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = CRC_TABLE[((self.0 ^ u32::from(b)) & 0xFF) as usize] ^ (self.0 >> 8);
        }
    }

    fn finish(&self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crc(bytes: &[u8]) -> u32 {
        let mut c = Crc32::new();
        c.update(bytes);
        c.finish()
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc(b""), 0);
    }

    #[test]
    fn dos_time_of_a_known_instant() {
        // 2026-11-18 11:06:40 UTC
        let (time, date) = dos_datetime(1_795_000_000_123);
        assert_eq!((time >> 11, (time >> 5) & 63, (time & 31) * 2), (11, 6, 40));
        assert_eq!(((date >> 9) + 1980, (date >> 5) & 15, date & 31), (2026, 11, 18));
    }

    /// Python's zipfile reads the archive back and checks every CRC.
    fn python_reads(archive: &[u8], expected: &[(String, Vec<u8>)]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zip");
        std::fs::write(&path, archive).unwrap();
        let script = "import sys, zipfile, json\n\
z = zipfile.ZipFile(sys.argv[1])\n\
assert z.testzip() is None\n\
print(json.dumps([[i.filename, i.file_size, i.compress_type] for i in z.infolist()]))";
        let out = std::process::Command::new("python3").arg("-c").arg(script).arg(&path).output().expect("python3 runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let listed: Vec<(String, usize, u32)> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(listed.len(), expected.len());
        for ((name, size, method), (want_name, want_bytes)) in listed.iter().zip(expected) {
            assert_eq!((name, *size, *method), (want_name, want_bytes.len(), 0));
        }
    }

    #[test]
    fn a_streamed_archive_reads_back_with_an_independent_reader() {
        let mut out = Vec::new();
        let mut zip = ZipEncoder::new(1_795_000_000_000);
        let files = vec![
            ("README.txt".to_string(), b"hello".to_vec()),
            ("images/é.png".to_string(), (0..70_000u32).map(|i| (i % 251) as u8).collect()),
            ("empty.json".to_string(), Vec::new()),
        ];
        zip.file(&files[0].0, &files[0].1, &mut out).unwrap();
        zip.start(&files[1].0, &mut out).unwrap();
        for chunk in files[1].1.chunks(4096) {
            zip.data(chunk, &mut out).unwrap();
        }
        zip.end(&mut out).unwrap();
        zip.file(&files[2].0, &files[2].1, &mut out).unwrap();
        let size = zip.finish(&mut out).unwrap();
        assert_eq!(size, out.len() as u64);
        python_reads(&out, &files);
    }

    #[test]
    fn more_than_65535_entries_get_zip64_end_records() {
        let mut out = Vec::new();
        let mut zip = ZipEncoder::new(0);
        let files: Vec<(String, Vec<u8>)> = (0..65_600).map(|i| (format!("f/{i}"), vec![i as u8])).collect();
        for (name, bytes) in &files {
            zip.file(name, bytes, &mut out).unwrap();
        }
        zip.finish(&mut out).unwrap();
        python_reads(&out, &files);
    }

    #[test]
    fn misuse_is_an_error_not_a_broken_archive() {
        let mut out = Vec::new();
        let mut zip = ZipEncoder::new(0);
        assert!(zip.data(b"x", &mut out).is_err());
        assert!(zip.start("../escape", &mut out).is_err());
        zip.start("a", &mut out).unwrap();
        assert!(zip.start("b", &mut out).is_err());
        assert!(zip.finish(&mut out).is_err());
    }
}
