//! Durability follows the logical unit, as in Linux: sd reads the LU's
//! write cache (WCE, Caching mode page) and FUA support (DPOFUA, mode
//! parameter header) at every revalidate (`sd_read_cache_type`) and tells
//! the block layer (`blk_queue_write_cache`), which then decides what a
//! flush or a FUA write becomes. The device does the same with what it
//! reads at every claim of a path:
//!
//! | LU | FUA write | flush |
//! |---|---|---|
//! | write-through (WCE 0) | plain WRITE: already durable when it completes | nothing sent: completes at once |
//! | write-back (WCE 1), DPOFUA 1 | WRITE with FUA | SYNCHRONIZE CACHE |
//! | write-back (WCE 1), DPOFUA 0 | WRITE, then SYNCHRONIZE CACHE before it completes | SYNCHRONIZE CACHE |
//!
//! The FUA bit is never sent to a LU whose DPOFUA is 0: SBC-4 lets such a
//! LU reject it, and LIO does ("device does not advertise support for FUA
//! write": ILLEGAL REQUEST 24/00), which made every durable write fail.
//! A flush to a write-through LU is not sent, as sd sends none
//! (`sd_setup_flush_cmnd` is never reached: the block layer completes a
//! flush to a queue without a write cache at once). A LU that refuses
//! MODE SENSE, or answers without the Caching mode page, is taken as sd
//! takes it: write-through, no FUA ("Assuming drive cache: write
//! through"). A write-protected LU has no cache to flush (sd: "No cache
//! flush allowed for write protected devices").
//!
//! Frontends keep offering FUA and flush to their clients with these
//! semantics: a completed FUA write, or a completed flush, is durable.

use mpio_dsm::{CachingPage, ModeParameterHeader};

/// How the LU caches writes: what the device needs to know to make a
/// write durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct WriteCache {
    /// WCE: the LU may complete a write before it is on the medium, so
    /// durability needs SYNCHRONIZE CACHE or FUA.
    pub enabled: bool,
    /// DPOFUA: the LU accepts the FUA bit.
    pub fua: bool,
}

impl WriteCache {
    /// What a LU that refuses MODE SENSE is taken for: write-through,
    /// without FUA (Linux sd's default).
    pub const ASSUMED: WriteCache = WriteCache { enabled: false, fua: false };

    /// The LU's write cache from a MODE SENSE answer for the Caching mode
    /// page (see [`crate::scsi::LuAccess::caching`]); `None` for the page
    /// when the answer lacks it. As Linux's sd: no page means the
    /// defaults (FUA included), and a write-protected LU has no write
    /// cache.
    pub fn from_mode_sense(header: &ModeParameterHeader, page: Option<&CachingPage>) -> WriteCache {
        match page {
            None => WriteCache::ASSUMED,
            Some(p) => WriteCache { enabled: p.write_cache && !header.write_protected(), fua: header.dpofua() },
        }
    }

    /// The commands a write becomes; `fua`: the caller asks for it to be
    /// durable when it completes.
    pub fn write(self, fua: bool) -> WritePlan {
        match (fua, self.enabled, self.fua) {
            (false, _, _) => WritePlan::PLAIN,
            // Without a write cache every completed write is durable.
            (true, false, _) => WritePlan { fua_bit: false, flush_after: false, write_through: true },
            (true, true, true) => WritePlan { fua_bit: true, flush_after: false, write_through: false },
            (true, true, false) => WritePlan { fua_bit: false, flush_after: true, write_through: false },
        }
    }

    /// Whether a flush sends SYNCHRONIZE CACHE: only a LU with a write
    /// cache has something to flush.
    pub fn flush_needed(self) -> bool {
        self.enabled
    }

    /// For logs and status: `write-back, FUA`, `write-back without FUA
    /// (FUA writes are followed by SYNCHRONIZE CACHE)`, `write-through`.
    pub fn describe(self) -> &'static str {
        match (self.enabled, self.fua) {
            (false, _) => "write-through",
            (true, true) => "write-back, FUA",
            (true, false) => "write-back without FUA (FUA writes are followed by SYNCHRONIZE CACHE)",
        }
    }
}

/// What one write becomes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WritePlan {
    /// Set the FUA bit in each WRITE.
    pub fua_bit: bool,
    /// Send SYNCHRONIZE CACHE once the writes completed, before the
    /// request completes (FUA emulated on a write-back LU without DPOFUA).
    pub flush_after: bool,
    /// FUA was asked for and nothing is needed for it: the LU writes
    /// through (counted, so a test can see the decision).
    pub write_through: bool,
}

impl WritePlan {
    /// A write with no durability asked for.
    pub const PLAIN: WritePlan = WritePlan { fua_bit: false, flush_after: false, write_through: false };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(device_specific: u8) -> ModeParameterHeader {
        ModeParameterHeader::parse6(&[3, 0, device_specific, 0]).unwrap()
    }

    #[test]
    fn every_cache_mode_and_request() {
        // (WCE, DPOFUA, FUA asked) -> (FUA bit, flush after, write-through), flush sent.
        let cases = [
            ((false, false, false), (false, false, false), false),
            ((false, false, true), (false, false, true), false),
            ((false, true, false), (false, false, false), false),
            // A write-through LU that accepts FUA: nothing to make durable
            // (the block layer drops FUA without a write cache).
            ((false, true, true), (false, false, true), false),
            ((true, false, false), (false, false, false), true),
            ((true, false, true), (false, true, false), true),
            ((true, true, false), (false, false, false), true),
            ((true, true, true), (true, false, false), true),
        ];
        for ((enabled, fua, asked), (fua_bit, flush_after, write_through), flush) in cases {
            let c = WriteCache { enabled, fua };
            assert_eq!(
                c.write(asked),
                WritePlan { fua_bit, flush_after, write_through },
                "WCE {enabled} DPOFUA {fua}, FUA asked {asked}"
            );
            assert_eq!(c.flush_needed(), flush, "flush, WCE {enabled} DPOFUA {fua}");
            // The FUA bit only ever goes to a LU that says it takes it.
            assert!(!c.write(asked).fua_bit || fua);
        }
    }

    #[test]
    fn read_as_linux_sd_reads_it() {
        let wce = CachingPage { write_cache: true, read_cache_disabled: false };
        let wt = CachingPage { write_cache: false, read_cache_disabled: false };
        assert_eq!(WriteCache::from_mode_sense(&header(0x10), Some(&wce)), WriteCache { enabled: true, fua: true });
        assert_eq!(WriteCache::from_mode_sense(&header(0x00), Some(&wce)), WriteCache { enabled: true, fua: false });
        assert_eq!(WriteCache::from_mode_sense(&header(0x00), Some(&wt)), WriteCache { enabled: false, fua: false });
        // No caching page: defaults, DPOFUA in the header notwithstanding.
        assert_eq!(WriteCache::from_mode_sense(&header(0x10), None), WriteCache::ASSUMED);
        // Write-protected: nothing to flush.
        assert_eq!(WriteCache::from_mode_sense(&header(0x90), Some(&wce)), WriteCache { enabled: false, fua: true });
    }
}
