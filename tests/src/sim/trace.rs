//! The trace hash: FNV-1a over the time and `Debug` text of every event the
//! simulator processes. Two runs of one seed must give the same hash.

use std::fmt::{self, Write};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

pub struct TraceHash {
    hash: u64,
}

impl TraceHash {
    pub fn new() -> TraceHash {
        TraceHash { hash: FNV_OFFSET }
    }

    pub fn item(&mut self, now_ms: u64, item: &impl fmt::Debug) {
        // Writing to this hasher cannot fail.
        let _ = write!(self, "{now_ms}:{item:?};");
    }

    pub fn finish(&self) -> u64 {
        self.hash
    }
}

impl Default for TraceHash {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for TraceHash {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(FNV_PRIME);
        }
        Ok(())
    }
}
