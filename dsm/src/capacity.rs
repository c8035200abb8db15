//! READ CAPACITY results (SBC-3 "READ CAPACITY (10) parameter data" and
//! "READ CAPACITY (16) parameter data").
//!
//! READ CAPACITY(10) returns a 32-bit last LBA; a value of FFFFFFFFh means
//! the LU is too large and READ CAPACITY(16) must be used. Only (16)
//! reports protection, provisioning (LBPME/LBPRZ) and the physical block
//! size. [`prefer_read_capacity16`] says which to send first.

use crate::codec::{Reader, bit};
use crate::error::ParseError;
use crate::inquiry::StandardInquiry;

/// READ CAPACITY(10) parameter data: bytes 0-3 RETURNED LOGICAL BLOCK
/// ADDRESS, bytes 4-7 LOGICAL BLOCK LENGTH IN BYTES.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReadCapacity10 {
    /// Last LBA (capacity in blocks - 1), or FFFFFFFFh for "too large".
    pub last_lba: u32,
    /// Logical block length in bytes.
    pub block_len: u32,
}

impl ReadCapacity10 {
    /// Parses the 8-byte READ CAPACITY(10) data (extra bytes are ignored).
    pub fn parse(buf: &[u8]) -> Result<ReadCapacity10, ParseError> {
        let mut r = Reader::new("READ CAPACITY(10) data", "data", buf);
        Ok(ReadCapacity10 {
            last_lba: r.u32("returned logical block address")?,
            block_len: r.u32("logical block length")?,
        })
    }

    /// True when the last LBA does not fit 32 bits (FFFFFFFFh): issue READ
    /// CAPACITY(16) (SBC-3, READ CAPACITY (10) command).
    pub fn needs_read_capacity16(&self) -> bool {
        self.last_lba == u32::MAX
    }

    /// The result as a [`Capacity`], or `None` when READ CAPACITY(16) is
    /// needed. Fields only (16) reports are zero/false.
    pub fn capacity(&self) -> Option<Capacity> {
        if self.needs_read_capacity16() {
            return None;
        }
        Some(Capacity {
            last_lba: u64::from(self.last_lba),
            block_len: self.block_len,
            p_type: 0,
            prot_en: false,
            p_i_exponent: 0,
            lbppbe: 0,
            lbpme: false,
            lbprz: false,
            lowest_aligned_lba: 0,
        })
    }
}

/// Capacity and format of a logical unit: READ CAPACITY(16) parameter data
/// (SBC-3), or a READ CAPACITY(10) result converted by
/// [`ReadCapacity10::capacity`].
///
/// Layout: bytes 0-7 RETURNED LOGICAL BLOCK ADDRESS, 8-11 LOGICAL BLOCK
/// LENGTH, 12 P_TYPE (bits 3-1) | PROT_EN (bit 0), 13 P_I_EXPONENT (bits
/// 7-4) | LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT (bits 3-0), 14-15
/// LBPME (bit 15) | LBPRZ (bit 14) | LOWEST ALIGNED LBA (bits 13-0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Capacity {
    /// Last LBA (block count - 1).
    pub last_lba: u64,
    /// Logical block length in bytes.
    pub block_len: u32,
    /// P_TYPE: protection type - 1 when `prot_en`.
    pub p_type: u8,
    /// PROT_EN: the medium is formatted with protection information.
    pub prot_en: bool,
    /// P_I_EXPONENT: protection information intervals per block (2^n).
    pub p_i_exponent: u8,
    /// LBPPBE: logical blocks per physical block, as a power of two.
    pub lbppbe: u8,
    /// LBPME: logical block provisioning (thin provisioning) enabled.
    pub lbpme: bool,
    /// LBPRZ: unmapped blocks read as zeros.
    pub lbprz: bool,
    /// LOWEST ALIGNED LOGICAL BLOCK ADDRESS (14 bits): the first LBA that
    /// starts a physical block.
    pub lowest_aligned_lba: u16,
}

impl Capacity {
    /// Parses READ CAPACITY(16) parameter data. At least the first 12
    /// bytes (LBA and block length) are required; SBC-3 defines 32, and
    /// bytes 12-15, if missing, read as zero.
    pub fn parse_read_capacity16(buf: &[u8]) -> Result<Capacity, ParseError> {
        let mut r = Reader::new("READ CAPACITY(16) data", "data", buf);
        let last_lba = r.u64("returned logical block address")?;
        let block_len = r.u32("logical block length")?;
        let b12 = r.u8("protection type").unwrap_or(0);
        let b13 = r.u8("logical blocks per physical block exponent").unwrap_or(0);
        let w14 = r.u16("lowest aligned logical block address").unwrap_or(0);
        let [b14, _] = w14.to_be_bytes();
        Ok(Capacity {
            last_lba,
            block_len,
            p_type: (b12 >> 1) & 0x07,
            prot_en: bit(b12, 0),
            p_i_exponent: b13 >> 4,
            lbppbe: b13 & 0x0f,
            lbpme: bit(b14, 7),
            lbprz: bit(b14, 6),
            lowest_aligned_lba: w14 & 0x3fff,
        })
    }

    /// Number of logical blocks (`last_lba + 1`), `None` on overflow.
    pub fn blocks(&self) -> Option<u64> {
        self.last_lba.checked_add(1)
    }

    /// Capacity in bytes, `None` if it does not fit u64.
    pub fn capacity_bytes(&self) -> Option<u64> {
        self.blocks()?.checked_mul(u64::from(self.block_len))
    }

    /// Physical block length in bytes (`block_len << lbppbe`), `None` on
    /// overflow.
    pub fn physical_block_len(&self) -> Option<u32> {
        1u32.checked_shl(u32::from(self.lbppbe))?.checked_mul(self.block_len)
    }

    /// Protection type 1-3 (SBC-3 "Protection types"), or `None` when
    /// protection is not enabled.
    pub fn protection_type(&self) -> Option<u8> {
        self.prot_en.then_some(self.p_type.saturating_add(1))
    }
}

/// Whether to send READ CAPACITY(16) before (10), as Linux sd does: yes
/// when the LU claims SPC-3 or later (VERSION >= 5) or supports protection
/// information (PROTECT), since only (16) reports those fields; otherwise
/// send (10) and fall back to (16) when
/// [`ReadCapacity10::needs_read_capacity16`].
pub fn prefer_read_capacity16(inquiry: &StandardInquiry) -> bool {
    inquiry.version >= 5 || inquiry.protect
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::hex;
    use proptest::prelude::*;

    // tgtd 1.0.85: LUN 1 = 256 MiB at 512 B, LUN 2 = 3 GiB thin, LUN 3 =
    // 64 MiB with --blocksize 4096.
    const TGTD_RC10_LUN1: &str = "0007ffff00000200";
    const TGTD_RC16_LUN1: &str = "000000000007ffff000002000003000000000000000000000000000000000000";
    const TGTD_RC16_LUN2: &str = "00000000005fffff000002000003c00000000000000000000000000000000000";
    const TGTD_RC10_LUN3: &str = "00003fff00001000";
    const TGTD_RC16_LUN3: &str = "0000000000003fff000010000000000000000000000000000000000000000000";

    #[test]
    fn tgtd_capacities() {
        let c10 = ReadCapacity10::parse(&hex(TGTD_RC10_LUN1)).unwrap();
        assert!(!c10.needs_read_capacity16());
        let c = c10.capacity().unwrap();
        assert_eq!(c.capacity_bytes(), Some(256 << 20));

        let c = Capacity::parse_read_capacity16(&hex(TGTD_RC16_LUN1)).unwrap();
        assert_eq!(c.last_lba, 0x7ffff);
        assert_eq!(c.block_len, 512);
        assert_eq!(c.capacity_bytes(), Some(256 << 20));
        // tgtd reports 8 logical per physical block for 512-byte LUs.
        assert_eq!(c.lbppbe, 3);
        assert_eq!(c.physical_block_len(), Some(4096));
        assert!(!c.prot_en && !c.lbpme && !c.lbprz);
        assert_eq!(c.protection_type(), None);

        let c = Capacity::parse_read_capacity16(&hex(TGTD_RC16_LUN2)).unwrap();
        assert_eq!(c.capacity_bytes(), Some(3 << 30));
        assert!(c.lbpme && c.lbprz);

        let c10 = ReadCapacity10::parse(&hex(TGTD_RC10_LUN3)).unwrap();
        let c16 = Capacity::parse_read_capacity16(&hex(TGTD_RC16_LUN3)).unwrap();
        assert_eq!(c10.capacity(), Some(c16));
        assert_eq!(c16.block_len, 4096);
        assert_eq!(c16.physical_block_len(), Some(4096));
        assert_eq!(c16.capacity_bytes(), Some(64 << 20));
    }

    #[test]
    fn fallback_and_fields() {
        let c10 = ReadCapacity10::parse(&hex("ffffffff00000200")).unwrap();
        assert!(c10.needs_read_capacity16());
        assert_eq!(c10.capacity(), None);

        let mut b = hex("00000002540be3ff00001000");
        b.extend([0x05, 0x21, 0xc0 | 0x3f, 0xff]);
        let c = Capacity::parse_read_capacity16(&b).unwrap();
        assert_eq!(c.blocks(), Some(10_000_000_000));
        assert_eq!(c.capacity_bytes(), Some(10_000_000_000 * 4096));
        assert_eq!((c.p_type, c.prot_en, c.protection_type()), (2, true, Some(3)));
        assert_eq!((c.p_i_exponent, c.lbppbe), (2, 1));
        assert_eq!(c.physical_block_len(), Some(8192));
        assert!(c.lbpme && c.lbprz);
        assert_eq!(c.lowest_aligned_lba, 0x3fff);

        let c = Capacity::parse_read_capacity16(&hex("ffffffffffffffff00000200")).unwrap();
        assert_eq!(c.blocks(), None);
        assert_eq!(c.capacity_bytes(), None);
        let c = Capacity::parse_read_capacity16(&hex("0000ffffffffffff00000200")).unwrap();
        assert_eq!(c.capacity_bytes(), Some(1 << 57));
        let c = Capacity::parse_read_capacity16(&hex("00ffffffffffffff00001000")).unwrap();
        assert_eq!(c.capacity_bytes(), None); // 2^56 * 4096 = 2^68
    }

    #[test]
    fn errors() {
        assert_eq!(
            ReadCapacity10::parse(&[0; 7]).unwrap_err().to_string(),
            "READ CAPACITY(10) data: logical block length needs 4 bytes, 3 left"
        );
        assert!(Capacity::parse_read_capacity16(&[0; 11]).is_err());
        assert!(Capacity::parse_read_capacity16(&[0; 12]).is_ok());
    }

    #[test]
    fn rc16_preference() {
        let tgtd = hex(
            "000005123d00000249455420202020205649525455414c2d4449534b20202020303030310000000000000000000000000000000000000000000004c0096003000000",
        );
        let mut inq = StandardInquiry::parse(&tgtd).unwrap();
        assert!(prefer_read_capacity16(&inq));
        inq.version = 4;
        assert!(!prefer_read_capacity16(&inq));
        inq.protect = true;
        assert!(prefer_read_capacity16(&inq));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(c) = ReadCapacity10::parse(&b) {
                let _ = c.capacity().map(|c| c.capacity_bytes());
            }
            if let Ok(c) = Capacity::parse_read_capacity16(&b) {
                let _ = (c.capacity_bytes(), c.physical_block_len(), c.protection_type());
            }
        }

        #[test]
        fn capacity_bytes_is_exact(last_lba: u64, block_len: u32) {
            let mut b = last_lba.to_be_bytes().to_vec();
            b.extend(block_len.to_be_bytes());
            let c = Capacity::parse_read_capacity16(&b).unwrap();
            let exact = (u128::from(last_lba) + 1) * u128::from(block_len);
            prop_assert_eq!(c.capacity_bytes().map(u128::from), u64::try_from(exact).ok().map(u128::from));
        }
    }
}
