//! Token buckets in integer arithmetic, shared by the in-memory limiter of a
//! single node and the database one that several nodes share.

/// A bucket's level in token·milliseconds of window: one token is
/// `window_ms` units and the bucket gains `size` units a millisecond, so the
/// arithmetic stays in integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub level: i64,
    pub at_ms: i64,
}

impl Bucket {
    pub fn full(size: u32, window_secs: u32, now_ms: i64) -> Bucket {
        Bucket { level: i64::from(size) * token(window_secs), at_ms: now_ms }
    }

    fn level_at(&self, size: u32, window_secs: u32, now_ms: i64) -> i64 {
        let size = i64::from(size);
        (self.level + (now_ms - self.at_ms).max(0) * size).min(size * token(window_secs))
    }

    pub fn is_full_at(&self, size: u32, window_secs: u32, now_ms: i64) -> bool {
        self.level_at(size, window_secs, now_ms) >= i64::from(size) * token(window_secs)
    }

    /// Takes a token: the bucket afterwards, and either `Ok` or the seconds
    /// until a token is there.
    pub fn take(self, size: u32, window_secs: u32, now_ms: i64) -> (Bucket, Result<(), u64>) {
        let (level, token, size) = (self.level_at(size, window_secs, now_ms), token(window_secs), i64::from(size).max(1));
        let at_ms = now_ms.max(self.at_ms);
        if level >= token {
            (Bucket { level: level - token, at_ms }, Ok(()))
        } else {
            let wait_ms = (token - level + size - 1) / size;
            (Bucket { level, at_ms }, Err(((wait_ms + 999) / 1000).max(1) as u64))
        }
    }
}

fn token(window_secs: u32) -> i64 {
    i64::from(window_secs.max(1)) * 1000
}
