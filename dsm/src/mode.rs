//! MODE SENSE data (SPC-5 "Mode parameters"): the mode parameter header
//! and the mode pages after it, for what mpio needs to know about a disk:
//!
//! - WP, the logical unit is write-protected, and DPOFUA, it accepts the
//!   FUA bit (SBC-4 "Mode parameter header", the DEVICE-SPECIFIC
//!   PARAMETER of a direct-access device);
//! - WCE and RCD of the Caching mode page 08h (SBC-4 "Caching mode page"):
//!   whether the LU has a volatile write cache, which decides whether
//!   writes need SYNCHRONIZE CACHE (or FUA) to be durable.
//!
//! This is what Linux's sd reads at every revalidate:
//! `sd_read_write_protect_flag` (MODE SENSE for page 3Fh, header only)
//! and `sd_read_cache_type` (MODE SENSE for page 08h: the header's DPOFUA
//! and the page's WCE).
//!
//! | MODE SENSE | header | DEVICE-SPECIFIC PARAMETER | BLOCK DESCRIPTOR LENGTH | MODE DATA LENGTH counts |
//! |---|---|---|---|---|
//! | (6) | 4 bytes | byte 2 | byte 3 | bytes after byte 0 |
//! | (10) | 8 bytes | byte 3 | bytes 6-7 (LONGLBA in byte 4 bit 0) | bytes after byte 1 |
//!
//! For a direct-access device the DEVICE-SPECIFIC PARAMETER holds WP (bit
//! 7) and DPOFUA (bit 4, the LU accepts FUA and DPO).
//!
//! After the header come the block descriptors, then the mode pages. A
//! page starts with PS (byte 0 bit 7), SPF (bit 6) and the PAGE CODE
//! (bits 5-0); a page_0 format page (SPF 0) has PAGE LENGTH in byte 1 and
//! its parameters from byte 2, a sub_page format page (SPF 1) has the
//! SUBPAGE CODE in byte 1, PAGE LENGTH in bytes 2-3 and parameters from
//! byte 4.

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

/// Which MODE SENSE a buffer answers: the header differs in size and in
/// what MODE DATA LENGTH counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModeSenseKind {
    /// MODE SENSE(6): 4-byte header, MODE DATA LENGTH one byte.
    Six,
    /// MODE SENSE(10): 8-byte header, MODE DATA LENGTH two bytes.
    Ten,
}

impl ModeSenseKind {
    /// Bytes of the mode parameter header.
    pub fn header_len(self) -> usize {
        match self {
            ModeSenseKind::Six => 4,
            ModeSenseKind::Ten => 8,
        }
    }

    /// Bytes of the MODE DATA LENGTH field, which it does not count.
    fn length_field_len(self) -> usize {
        match self {
            ModeSenseKind::Six => 1,
            ModeSenseKind::Ten => 2,
        }
    }

    fn what(self) -> &'static str {
        match self {
            ModeSenseKind::Six => "MODE SENSE(6) data",
            ModeSenseKind::Ten => "MODE SENSE(10) data",
        }
    }
}

/// One mode page as received, its own header included (so offsets match
/// the SPC and SBC tables: WCE is "byte 2" of the Caching mode page).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModePage {
    /// PAGE CODE (byte 0 bits 5-0).
    pub code: u8,
    /// SUBPAGE CODE (byte 1 of a sub_page format page; 0 otherwise).
    pub subpage: u8,
    /// PS (byte 0 bit 7): the page can be saved.
    pub saveable: bool,
    /// The whole page, header included.
    pub bytes: Vec<u8>,
}

/// The answer to MODE SENSE: the header and every mode page in it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModeSense {
    /// The mode parameter header.
    pub header: ModeParameterHeader,
    /// The mode pages, in the order received.
    pub pages: Vec<ModePage>,
}

impl ModeSense {
    /// Parses a whole MODE SENSE answer of `kind`. Data shorter than its
    /// MODE DATA LENGTH says is [`ParseError::Truncated`], whose
    /// [`ParseError::required_len`] is the allocation length that returns
    /// all of it (Linux's sd asks for the header first, then for that
    /// length: `sd_read_cache_type`). Bytes past MODE DATA LENGTH are
    /// ignored; a page that runs past it is an error.
    pub fn parse(kind: ModeSenseKind, buf: &[u8]) -> Result<ModeSense, ParseError> {
        let header = match kind {
            ModeSenseKind::Six => ModeParameterHeader::parse6(buf)?,
            ModeSenseKind::Ten => ModeParameterHeader::parse10(buf)?,
        };
        let what = kind.what();
        let need = usize::from(header.mode_data_len).saturating_add(kind.length_field_len());
        let Some(whole) = buf.get(..need) else {
            return Err(ParseError::Truncated { what, need, have: buf.len() });
        };
        let mut r = Reader::new(what, "mode data", whole);
        r.skip(kind.header_len(), "mode parameter header")?;
        let mut descriptors = r.sub(usize::from(header.block_descriptor_len), "block descriptor length")?;
        descriptors.rest();
        let mut pages = Vec::new();
        while !r.is_empty() {
            pages.push(ModePage::read(&mut r)?);
        }
        Ok(ModeSense { header, pages })
    }

    /// The page with this code and subpage, if the answer has it.
    pub fn page(&self, code: u8, subpage: u8) -> Option<&ModePage> {
        self.pages.iter().find(|p| p.code == code && p.subpage == subpage)
    }

    /// The Caching mode page, parsed, if the answer has it.
    pub fn caching(&self) -> Option<Result<CachingPage, ParseError>> {
        self.page(CachingPage::CODE, 0).map(CachingPage::parse)
    }
}

impl ModePage {
    fn read(r: &mut Reader<'_>) -> Result<ModePage, ParseError> {
        let b0 = r.u8("page code")?;
        let spf = bit(b0, 6);
        let mut bytes = vec![b0];
        let (subpage, len) = if spf {
            let subpage = r.u8("subpage code")?;
            let len = r.u16("page length")?;
            bytes.push(subpage);
            bytes.extend_from_slice(&len.to_be_bytes());
            (subpage, usize::from(len))
        } else {
            let len = r.u8("page length")?;
            bytes.push(len);
            (0, usize::from(len))
        };
        bytes.extend_from_slice(r.sub(len, "page length")?.rest());
        Ok(ModePage { code: b0 & 0x3f, subpage, saveable: bit(b0, 7), bytes })
    }
}

/// The Caching mode page (SBC-4 "Caching mode page", page code 08h): of
/// its fields, the two that say how the LU caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CachingPage {
    /// WCE (byte 2 bit 2): the LU has a write cache and may complete a
    /// write before the data is on the medium; SYNCHRONIZE CACHE or FUA
    /// makes it durable. Without it every completed write is durable
    /// (write-through).
    pub write_cache: bool,
    /// RCD (byte 2 bit 0): the read cache is disabled.
    pub read_cache_disabled: bool,
}

impl CachingPage {
    /// Its PAGE CODE.
    pub const CODE: u8 = 0x08;

    /// Reads the page's byte 2. The page is 20 bytes in SBC-4 (18 in its
    /// PAGE LENGTH); only the first three are needed, as Linux's sd reads
    /// them (`sd_read_cache_type`: "We're only interested in the first
    /// three bytes").
    pub fn parse(page: &ModePage) -> Result<CachingPage, ParseError> {
        let mut r = Reader::new("caching mode page", "page", &page.bytes);
        r.skip(2, "page code and length")?;
        let b2 = r.u8("WCE")?;
        Ok(CachingPage { write_cache: bit(b2, 2), read_cache_disabled: bit(b2, 0) })
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

    /// LIO's answer to MODE SENSE(10) for page 08h (target_core_spc.c,
    /// `spc_emulate_modesense`) on a 16 MiB fileio LU of 512-byte blocks:
    /// header, one 8-byte block descriptor, the 20-byte Caching mode page.
    /// `wce_fua`: the LU's write cache and FUA emulation on
    /// (`emulate_write_cache`, `emulate_fua_write`), as a fileio LU made
    /// through configfs does not have them.
    fn lio_page8(wce_fua: bool) -> Vec<u8> {
        let mut b = hex("0022000000000008");
        if wce_fua {
            b[3] = 0x10;
        }
        b.extend(hex("0000800000000200"));
        let mut page = vec![0u8; 20];
        page[0] = 0x08;
        page[1] = 0x12;
        page[2] = if wce_fua { 0x04 } else { 0 };
        page[12] = 0x20;
        b.extend(page);
        b
    }

    #[test]
    fn lio_caching_page() {
        let m = ModeSense::parse(ModeSenseKind::Ten, &lio_page8(false)).unwrap();
        assert_eq!(m.header.block_descriptor_len, 8);
        assert!(!m.header.dpofua() && !m.header.write_protected());
        assert_eq!(m.pages.len(), 1);
        assert_eq!((m.pages[0].code, m.pages[0].subpage, m.pages[0].bytes.len()), (8, 0, 20));
        assert_eq!(m.caching(), Some(Ok(CachingPage { write_cache: false, read_cache_disabled: false })));
        let m = ModeSense::parse(ModeSenseKind::Ten, &lio_page8(true)).unwrap();
        assert!(m.header.dpofua());
        assert_eq!(m.caching(), Some(Ok(CachingPage { write_cache: true, read_cache_disabled: false })));
        // Only the header asked for (allocation length 8), as sd asks first:
        // the length to ask for next.
        let e = ModeSense::parse(ModeSenseKind::Ten, &lio_page8(true)[..8]).unwrap_err();
        assert_eq!(e.required_len(), Some(36));
        // Bytes past MODE DATA LENGTH are ignored.
        let mut long = lio_page8(false);
        long.extend([0xff; 10]);
        assert_eq!(ModeSense::parse(ModeSenseKind::Ten, &long).unwrap().pages.len(), 1);
    }

    #[test]
    fn pages_are_walked_past_others_and_subpages() {
        // MODE SENSE(6), no block descriptor: the Control page 0Ah, a
        // sub_page format page 0Ah/01h, then Caching with WCE and RCD.
        let mut b = vec![0, 0, 0x10, 0];
        b.extend([0x0a, 0x0a]);
        b.extend([0; 10]);
        b.extend([0x4a, 0x01, 0x00, 0x02, 0xaa, 0xbb]);
        b.extend([0x88, 0x12, 0x05]);
        b.extend([0; 17]);
        b[0] = (b.len() - 1) as u8;
        let m = ModeSense::parse(ModeSenseKind::Six, &b).unwrap();
        let codes: Vec<(u8, u8)> = m.pages.iter().map(|p| (p.code, p.subpage)).collect();
        assert_eq!(codes, [(0x0a, 0), (0x0a, 1), (0x08, 0)]);
        assert_eq!(m.page(0x0a, 1).unwrap().bytes, [0x4a, 0x01, 0x00, 0x02, 0xaa, 0xbb]);
        assert!(m.page(0x08, 0).unwrap().saveable);
        assert_eq!(m.caching(), Some(Ok(CachingPage { write_cache: true, read_cache_disabled: true })));
        assert!(m.header.dpofua());
        // No caching page in the answer.
        assert_eq!(ModeSense::parse(ModeSenseKind::Six, &hex("03001000")).unwrap().caching(), None);
    }

    #[test]
    fn broken_mode_data_is_an_error() {
        // A page longer than the mode data.
        let e = ModeSense::parse(ModeSenseKind::Six, &hex("05000000081200")).unwrap_err();
        assert!(matches!(e, ParseError::LengthOverrun { field: "page length", .. }), "{e}");
        // Block descriptors longer than the mode data.
        let e = ModeSense::parse(ModeSenseKind::Six, &hex("0500000800000000")).unwrap_err();
        assert!(matches!(e, ParseError::LengthOverrun { field: "block descriptor length", .. }), "{e}");
        // A caching page cut before byte 2.
        let e = ModeSense::parse(ModeSenseKind::Six, &hex("050000000800")).unwrap().caching().unwrap().unwrap_err();
        assert!(matches!(e, ParseError::Short { field: "WCE", .. }), "{e}");
        // A page header cut by the end of the mode data.
        assert!(ModeSense::parse(ModeSenseKind::Ten, &hex("0007000000000000480a")).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_mode_data_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            for kind in [ModeSenseKind::Six, ModeSenseKind::Ten] {
                if let Ok(m) = ModeSense::parse(kind, &b) {
                    let _ = m.caching();
                }
            }
        }
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
