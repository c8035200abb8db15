//! Logical unit numbers (SAM-5 "Logical unit numbers") and REPORT LUNS
//! parameter data (SPC-4 "REPORT LUNS parameter data format").
//!
//! A LUN on the wire is 8 bytes: up to four 2-byte addressing levels. Byte
//! 0 bits 7-6 of a level select the ADDRESS METHOD:
//!
//! | bits | method | encodes |
//! |---|---|---|
//! | 00b | peripheral device | bus id (bits 5-0) + 8-bit LUN in byte 1 |
//! | 01b | flat space | 14-bit LUN |
//! | 10b | logical unit | target, bus, 5-bit LUN |
//! | 11b | extended | well-known LUs (C1h = REPORT LUNS W-LUN), long LUNs |
//!
//! mpio encodes a number the way Linux and libiscsi do (peripheral below
//! 256, flat space below 16384). When addressing a LUN the target reported,
//! send its 8 bytes back unchanged ([`Lun::from_bytes`]): targets may use
//! any method, and LUN 5 as peripheral (`0005...`) and as flat space
//! (`4005...`) are different byte strings.

use core::fmt;

use crate::codec::Reader;
use crate::error::ParseError;

/// The largest LUN single-level flat space addressing can carry.
pub const MAX_FLAT_LUN: u16 = 0x3fff;

/// A LUN number that cannot be encoded in a single level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("LUN {0} is above {MAX_FLAT_LUN}, the largest single-level flat space LUN")]
pub struct LunTooLarge(pub u64);

/// An 8-byte SAM LUN, as in the iSCSI BHS LUN field (RFC 7143 section
/// 11.3.2) and REPORT LUNS entries.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lun([u8; 8]);

impl Lun {
    /// LUN 0 (peripheral device addressing, all zero).
    pub const ZERO: Lun = Lun([0; 8]);

    /// The REPORT LUNS well-known logical unit (SPC-4 "Well known logical
    /// units"): extended addressing, C101h.
    pub const REPORT_LUNS_WELL_KNOWN: Lun = Lun([0xc1, 0x01, 0, 0, 0, 0, 0, 0]);

    /// Encodes a LUN number: peripheral device addressing (bus 0) below
    /// 256, flat space addressing below 16384. Larger numbers need
    /// multi-level or extended addressing, which mpio does not invent:
    /// use the bytes the target reports.
    pub fn from_number(n: u64) -> Result<Lun, LunTooLarge> {
        let mut b = [0u8; 8];
        if let Ok(small) = u8::try_from(n) {
            let [_, b1, ..] = &mut b;
            *b1 = small;
            return Ok(Lun(b));
        }
        let flat = u16::try_from(n).ok().filter(|v| *v <= MAX_FLAT_LUN).ok_or(LunTooLarge(n))?;
        let [hi, lo] = flat.to_be_bytes();
        let [b0, b1, ..] = &mut b;
        *b0 = 0x40 | hi;
        *b1 = lo;
        Ok(Lun(b))
    }

    /// A LUN from its 8 wire bytes (any addressing method).
    pub const fn from_bytes(bytes: [u8; 8]) -> Lun {
        Lun(bytes)
    }

    /// The 8 wire bytes.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0
    }

    /// A LUN from the 8 bytes read as a big-endian u64.
    pub const fn from_u64_be(v: u64) -> Lun {
        Lun(v.to_be_bytes())
    }

    /// The 8 bytes as a big-endian u64 (handy for logging and maps).
    pub const fn as_u64_be(self) -> u64 {
        u64::from_be_bytes(self.0)
    }

    /// ADDRESS METHOD of the first level (byte 0 bits 7-6).
    pub const fn address_method(self) -> u8 {
        self.0[0] >> 6
    }

    /// The LUN number, for single-level peripheral (bus 0) or flat space
    /// addressing; `None` for other methods, non-zero bus identifiers or
    /// multi-level LUNs.
    pub fn number(self) -> Option<u16> {
        let [b0, b1, rest @ ..] = self.0;
        if rest.iter().any(|b| *b != 0) {
            return None;
        }
        match b0 >> 6 {
            0 if b0 == 0 => Some(u16::from(b1)),
            1 => Some(u16::from_be_bytes([b0 & 0x3f, b1])),
            _ => None,
        }
    }

    /// True for well-known logical units (extended addressing, C1h).
    pub const fn is_well_known(self) -> bool {
        self.0[0] == 0xc1
    }
}

impl fmt::Display for Lun {
    /// The number when [`Lun::number`] decodes it, else the 16 hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.number() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "{:016x}", self.as_u64_be()),
        }
    }
}

impl fmt::Debug for Lun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lun({self})")
    }
}

/// REPORT LUNS parameter data: bytes 0-3 LUN LIST LENGTH (n - 7), 4-7
/// reserved, then 8 bytes per LUN.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ReportLuns {
    /// The LUNs in the order reported.
    pub luns: Vec<Lun>,
}

impl ReportLuns {
    /// The allocation length that returns the whole list whose first bytes
    /// are `header` (LUN LIST LENGTH + 8), or `None` with fewer than 4 bytes.
    pub fn required_len(header: &[u8]) -> Option<usize> {
        let [a, b, c, d] = *header.get(..4)? else {
            return None;
        };
        usize::try_from(u32::from_be_bytes([a, b, c, d])).ok()?.checked_add(8)
    }

    /// Parses REPORT LUNS data. A list longer than the buffer is
    /// [`ParseError::Truncated`]: re-issue with
    /// [`ParseError::required_len`].
    pub fn parse(buf: &[u8]) -> Result<ReportLuns, ParseError> {
        const WHAT: &str = "REPORT LUNS data";
        let mut r = Reader::new(WHAT, "data", buf);
        let list_len = r.u32("LUN list length")?;
        r.skip(4, "reserved")?;
        if list_len % 8 != 0 {
            return Err(ParseError::Invalid {
                what: WHAT,
                field: "LUN list length",
                value: u64::from(list_len),
                problem: "is not a multiple of 8",
            });
        }
        let len = usize::try_from(list_len).unwrap_or(usize::MAX);
        if r.left() < len {
            return Err(ParseError::Truncated { what: WHAT, need: len.saturating_add(8), have: buf.len() });
        }
        let mut list = r.sub(len, "LUN list length")?;
        let mut luns = Vec::with_capacity(len / 8);
        while !list.is_empty() {
            luns.push(Lun(list.array("LUN")?));
        }
        Ok(ReportLuns { luns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::hex;
    use proptest::prelude::*;

    #[test]
    fn encode_numbers() {
        assert_eq!(Lun::from_number(0).unwrap(), Lun::ZERO);
        assert_eq!(Lun::from_number(1).unwrap().to_bytes(), [0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Lun::from_number(255).unwrap().to_bytes(), [0, 255, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Lun::from_number(256).unwrap().to_bytes(), [0x41, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Lun::from_number(16383).unwrap().as_u64_be(), 0x7fff_0000_0000_0000);
        assert_eq!(
            Lun::from_number(16384).unwrap_err().to_string(),
            "LUN 16384 is above 16383, the largest single-level flat space LUN"
        );
        assert!(Lun::from_number(u64::MAX).is_err());
    }

    #[test]
    fn decode_numbers() {
        assert_eq!(Lun::from_u64_be(0x4005_0000_0000_0000).number(), Some(5));
        assert_eq!(Lun::from_u64_be(0x0105_0000_0000_0000).number(), None); // bus 1
        assert_eq!(Lun::from_u64_be(0x0001_0001_0000_0000).number(), None); // two levels
        assert_eq!(Lun::REPORT_LUNS_WELL_KNOWN.number(), None);
        assert!(Lun::REPORT_LUNS_WELL_KNOWN.is_well_known());
        assert_eq!(Lun::REPORT_LUNS_WELL_KNOWN.address_method(), 3);
        assert_eq!(Lun::from_u64_be(0x4005_0000_0000_0000).to_string(), "5");
        assert_eq!(format!("{:?}", Lun::REPORT_LUNS_WELL_KNOWN), "Lun(c101000000000000)");
    }

    #[test]
    fn tgtd_report_luns() {
        // tgtd 1.0.85, REPORT LUNS to LUN 0 with allocation length 256:
        // controller LUN 0 and disks 1, 2 in peripheral device addressing.
        let r = ReportLuns::parse(&hex("0000001800000000000000000000000000010000000000000002000000000000")).unwrap();
        let n: Vec<_> = r.luns.iter().map(|l| l.number()).collect();
        assert_eq!(n, [Some(0), Some(1), Some(2)]);
        assert_eq!(r.luns[1], Lun::from_number(1).unwrap());
        // The same with allocation length 16 (4 LUNs configured by then).
        let e = ReportLuns::parse(&hex("00000020000000000000000000000000")).unwrap_err();
        assert_eq!(e.required_len(), Some(40));
        assert_eq!(ReportLuns::required_len(&hex("00000020")), Some(40));
    }

    #[test]
    fn report_luns_errors() {
        assert!(ReportLuns::parse(&[0, 0, 0]).is_err());
        assert_eq!(
            ReportLuns::parse(&hex("0000000c00000000")).unwrap_err().to_string(),
            "REPORT LUNS data: LUN list length 0xc is not a multiple of 8"
        );
        assert_eq!(ReportLuns::parse(&hex("0000000000000000")).unwrap().luns, vec![]);
        // Trailing bytes past the list (a larger allocation) are ignored.
        let r = ReportLuns::parse(&hex("000000080000000000010000000000000000")).unwrap();
        assert_eq!(r.luns.len(), 1);
    }

    proptest! {
        #[test]
        fn number_round_trip(n in 0u64..=16383) {
            let l = Lun::from_number(n).unwrap();
            prop_assert_eq!(l.number().map(u64::from), Some(n));
            prop_assert_eq!(Lun::from_u64_be(l.as_u64_be()), l);
            prop_assert_eq!(Lun::from_bytes(l.to_bytes()), l);
            prop_assert_eq!(l.address_method(), if n < 256 { 0 } else { 1 });
        }

        #[test]
        fn report_luns_round_trip(ls in proptest::collection::vec(any::<u64>(), 0..50), extra in 0usize..16) {
            let mut b = ((ls.len() * 8) as u32).to_be_bytes().to_vec();
            b.extend([0; 4]);
            for l in &ls { b.extend(l.to_be_bytes()); }
            b.extend(vec![0; extra]);
            let r = ReportLuns::parse(&b).unwrap();
            let got: Vec<u64> = r.luns.iter().map(|l| l.as_u64_be()).collect();
            prop_assert_eq!(got, ls);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ReportLuns::required_len(&b);
            if let Ok(r) = ReportLuns::parse(&b) {
                for l in r.luns { let _ = (l.number(), l.to_string()); }
            }
        }
    }
}
