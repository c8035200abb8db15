//! What the device is: the logical unit behind every path, as the claim
//! read it, and the block geometry frontends show of it.

use crate::block::{Discard, Geometry};
use crate::durability::WriteCache;

/// What the device is: the logical unit behind every path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LuInfo {
    /// The identity paths are merged by (`naa.…`, `eui.…`, `iqn.…`,
    /// `t10.…` from VPD 0x83, or `serial.VENDOR:PRODUCT:SERIAL`; see
    /// `mpio_dsm::identity`), or the configured pin for a LU that reports
    /// none.
    pub identity: String,
    /// VPD 0x80 serial number, if the LU reports one.
    pub serial: Option<String>,
    /// Logical block size.
    pub block_len: u32,
    /// Number of blocks.
    pub blocks: u64,
    /// Physical block size.
    pub physical_block_len: u32,
    /// Largest transfer the LU takes, in bytes (VPD 0xB0), if it says.
    pub max_transfer: Option<u64>,
    /// UNMAP supported (VPD 0xB2 LBPU, and VPD 0xB0 does not say 0).
    pub unmap: bool,
    /// Most blocks one UNMAP may name (VPD 0xB0), if the LU says.
    pub max_unmap_blocks: Option<u32>,
    /// OPTIMAL UNMAP GRANULARITY in blocks (VPD 0xB0), 0 when not reported.
    pub unmap_granularity: u32,
    /// UNMAP GRANULARITY ALIGNMENT in blocks (VPD 0xB0), if reported.
    pub unmap_alignment: Option<u32>,
    /// WRITE SAME(16) supported for zeroing.
    pub write_same: bool,
    /// Most blocks one WRITE SAME may cover (VPD 0xB0), if the LU says.
    pub max_write_same_blocks: Option<u64>,
    /// The LU is write-protected: the WP bit of the MODE SENSE header
    /// ([`LuAccess::write_protected`](crate::scsi::LuAccess::write_protected)); false when the LU refuses MODE
    /// SENSE. Read at every claim of a path (bring-up and every
    /// reconnection), so a change made on the target shows here once a
    /// path is claimed again. Until then writes to a newly protected LU
    /// fail with EROFS (DATA PROTECT 27/xx) all the same.
    pub write_protected: bool,
    /// The LU's write cache (WCE) and FUA support (DPOFUA), read at every
    /// claim as Linux's sd does: what FUA writes and flushes become
    /// ([`crate::durability`]).
    pub write_cache: WriteCache,
    /// Whether the medium rotates (VPD 0xB1), if the LU says.
    pub rotational: Option<bool>,
}

impl LuInfo {
    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.blocks * u64::from(self.block_len)
    }

    /// What a frontend shows of this LU: the one place the block
    /// contract's [`Geometry`] is derived.
    pub fn geometry(&self) -> Geometry {
        let block = u64::from(self.block_len);
        let bytes = |blocks: u64| u32::try_from(blocks.saturating_mul(block)).unwrap_or(u32::MAX);
        Geometry {
            capacity: self.capacity(),
            logical_block: self.block_len,
            physical_block: self.physical_block_len.max(self.block_len),
            max_transfer: self.max_transfer.map(|m| u32::try_from(m).unwrap_or(u32::MAX)),
            read_only: self.write_protected,
            discard: self.unmap.then(|| Discard {
                granularity: bytes(u64::from(self.unmap_granularity)).max(self.block_len),
                alignment: self.unmap_alignment.map_or(0, |a| bytes(u64::from(a))),
                max_bytes: self.max_unmap_blocks.map(|b| u64::from(b) * block),
            }),
            // WRITE SAME, or plain writes of zeroes when the LU lacks it.
            write_zeroes: true,
            write_cache: self.write_cache,
            // SYNCHRONIZE CACHE acts on the logical unit, whatever path
            // carries it.
            shared_flush: true,
            rotational: self.rotational,
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{} (serial {}, {} blocks of {} bytes, {}{})",
            self.identity,
            self.serial.as_deref().unwrap_or("none"),
            self.blocks,
            self.block_len,
            self.write_cache.describe(),
            if self.write_protected { ", write-protected" } else { "" }
        )
    }

    /// Same logical unit. tgtd can give two LUs the same NAA designator
    /// (its NAA is built from the hex digits of scsi_id), so the serial and
    /// block size must match too. The size may differ when the LU has a
    /// serial: it was resized on the target, and the newer reading is its
    /// size. Without a serial the size is all that tells apart two LUs
    /// that one designator (or a pin) names, so it must match.
    pub(crate) fn same_lu(&self, other: &LuInfo) -> bool {
        self.identity == other.identity
            && self.serial == other.serial
            && self.block_len == other.block_len
            && (self.blocks == other.blocks || self.serial.is_some())
    }
}
