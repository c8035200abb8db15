//! The mode parameter header MODE SENSE returns first (SPC-4 "Mode
//! parameter list"), for the one bit mpio needs from it: WP, the logical
//! unit is write-protected (SBC-3 "Mode parameter header", the
//! DEVICE-SPECIFIC PARAMETER of a direct-access device).
//!
//! This is what Linux's sd reads at every revalidate
//! (`sd_read_write_protect_flag`): MODE SENSE for page 3Fh with a small
//! allocation length, of which only the header is used. Mode pages
//! themselves are not parsed.
//!
//! | MODE SENSE | header | DEVICE-SPECIFIC PARAMETER | BLOCK DESCRIPTOR LENGTH |
//! |---|---|---|---|
//! | (6) | 4 bytes | byte 2 | byte 3 |
//! | (10) | 8 bytes | byte 3 | bytes 6-7 (LONGLBA in byte 4 bit 0) |
//!
//! For a direct-access device the DEVICE-SPECIFIC PARAMETER holds WP (bit
//! 7) and DPOFUA (bit 4, the LU accepts FUA and DPO).

use crate::codec::{Reader, bit};
use crate::error::ParseError;

/// The mode parameter header of MODE SENSE(6) or (10) data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModeParameterHeader {
    /// MODE DATA LENGTH: bytes that follow this field in the full answer
    /// (the target reports it whatever the allocation length was).
    pub mode_data_len: u16,
    /// MEDIUM TYPE (00h for direct-access devices).
    pub medium_type: u8,
    /// DEVICE-SPECIFIC PARAMETER, whole.
    pub device_specific: u8,
    /// LONGLBA: the block descriptors are 16 bytes long (MODE SENSE(10)
    /// only; false for (6)).
    pub long_lba: bool,
    /// BLOCK DESCRIPTOR LENGTH in bytes.
    pub block_descriptor_len: u16,
}

impl ModeParameterHeader {
    /// The 4-byte header of MODE SENSE(6) data; extra bytes (block
    /// descriptors, pages) are ignored.
    pub fn parse6(buf: &[u8]) -> Result<ModeParameterHeader, ParseError> {
        let mut r = Reader::new("MODE SENSE(6) header", "data", buf);
        Ok(ModeParameterHeader {
            mode_data_len: u16::from(r.u8("mode data length")?),
            medium_type: r.u8("medium type")?,
            device_specific: r.u8("device-specific parameter")?,
            long_lba: false,
            block_descriptor_len: u16::from(r.u8("block descriptor length")?),
        })
    }

    /// The 8-byte header of MODE SENSE(10) data; extra bytes are ignored.
    pub fn parse10(buf: &[u8]) -> Result<ModeParameterHeader, ParseError> {
        let mut r = Reader::new("MODE SENSE(10) header", "data", buf);
        let mode_data_len = r.u16("mode data length")?;
        let medium_type = r.u8("medium type")?;
        let device_specific = r.u8("device-specific parameter")?;
        let long_lba = bit(r.u8("LONGLBA")?, 0);
        r.u8("reserved")?;
        let block_descriptor_len = r.u16("block descriptor length")?;
        Ok(ModeParameterHeader { mode_data_len, medium_type, device_specific, long_lba, block_descriptor_len })
    }

    /// WP (DEVICE-SPECIFIC PARAMETER bit 7, SBC-3): the medium is
    /// write-protected; writes fail with DATA PROTECT 27/xx.
    pub fn write_protected(&self) -> bool {
        bit(self.device_specific, 7)
    }

    /// DPOFUA (bit 4, SBC-3): the LU supports the DPO and FUA bits.
    pub fn dpofua(&self) -> bool {
        bit(self.device_specific, 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::hex;

    #[test]
    fn mode_sense6_header() {
        // A write-protected LU, MODE SENSE(6) page 3Fh: WP and DPOFUA, one
        // 8-byte block descriptor.
        let h = ModeParameterHeader::parse6(&hex("4b009008")).unwrap();
        assert_eq!(
            h,
            ModeParameterHeader {
                mode_data_len: 0x4b,
                medium_type: 0,
                device_specific: 0x90,
                long_lba: false,
                block_descriptor_len: 8
            }
        );
        assert!(h.write_protected() && h.dpofua());
        // Writable, with the block descriptor and pages after the header.
        let h = ModeParameterHeader::parse6(&hex("4b00100800000000000002000801")).unwrap();
        assert!(!h.write_protected() && h.dpofua());
    }

    #[test]
    fn mode_sense10_header() {
        let h = ModeParameterHeader::parse10(&hex("005a008001000010")).unwrap();
        assert_eq!(
            h,
            ModeParameterHeader {
                mode_data_len: 0x5a,
                medium_type: 0,
                device_specific: 0x80,
                long_lba: true,
                block_descriptor_len: 16
            }
        );
        assert!(h.write_protected() && !h.dpofua());
        assert!(!ModeParameterHeader::parse10(&hex("0006000000000000")).unwrap().write_protected());
    }

    #[test]
    fn short_headers_are_errors() {
        // The (6) header read as (10) data, and truncated answers.
        assert!(matches!(
            ModeParameterHeader::parse10(&hex("4b009008")),
            Err(ParseError::Short { field: "LONGLBA", .. })
        ));
        assert!(matches!(
            ModeParameterHeader::parse6(&hex("4b00")),
            Err(ParseError::Short { field: "device-specific parameter", .. })
        ));
        assert!(ModeParameterHeader::parse6(&[]).is_err());
        assert!(ModeParameterHeader::parse10(&hex("005a0080010000")).is_err());
    }
}
