//! The identity of a logical unit: the key under which the multipath
//! layer merges the paths that reach it. Two different LUs must never
//! share one, so it is unique by construction:
//!
//! 1. the best designator of the LU itself in VPD page 83h
//!    ([`DeviceIdentification::lu_designator`]): NAA, then EUI-64, then a
//!    SCSI name string, then a T10 vendor ID designator, each only when it
//!    actually names something ([`crate::Designator::identity`]: not all
//!    zeroes, not blank; a T10 vendor ID designator only with a
//!    vendor-specific part, since LIO reports the bare `LIO-ORG` for every
//!    LU without a unit serial);
//! 2. otherwise the unit serial number (VPD page 80h) together with the
//!    T10 vendor and product identification of standard INQUIRY (a serial
//!    is unique only within a vendor's product): `serial.VENDOR:PRODUCT:SERIAL`;
//! 3. otherwise none: the LU cannot be told apart from another, and the
//!    multipath layer must not merge its paths with any other.
//!
//! The texts of the kinds cannot collide: each has its own prefix (`naa.`,
//! `eui.`, `iqn.` for designators and SCSI name strings, `t10.`,
//! `serial.`), the hex of binary designators is fixed in length by its
//! type, and text fields are escaped so that different fields give
//! different text (bytes outside printable ASCII and the backslash as
//! `\xNN`; in the serial form also the `:` that separates the fields). A
//! SCSI name string `naa.…` or `eui.…` gives the same text as the binary
//! designator of the same value: SPC-4 makes them the same name.

use crate::inquiry::StandardInquiry;
use crate::vpd::{DeviceIdentification, LuIdentity, UnitSerialNumber};

/// The LU's identity from what it reports (see the module docs); `None`
/// when nothing it reports names it.
pub fn lu_identity(
    page83: Option<&DeviceIdentification>,
    serial: Option<&UnitSerialNumber>,
    inquiry: &StandardInquiry,
) -> Option<LuIdentity> {
    if let Some(id) = page83.and_then(DeviceIdentification::lu_identity) {
        return Some(id);
    }
    serial_identity(&inquiry.vendor, &inquiry.product, &serial?.serial)
}

/// `serial.VENDOR:PRODUCT:SERIAL` from the trimmed, escaped INQUIRY and
/// VPD 80h texts (as [`StandardInquiry`] and [`UnitSerialNumber`] give
/// them); `None` for a blank serial, which names nothing.
pub fn serial_identity(vendor: &str, product: &str, serial: &str) -> Option<LuIdentity> {
    if serial.is_empty() {
        return None;
    }
    // The parsers escape every backslash, so `\x3a` here can only come
    // from a colon: the three fields are recovered from the text.
    let field = |s: &str| s.replace(':', "\\x3a");
    Some(LuIdentity::new(format!("serial.{}:{}:{}", field(vendor), field(product), field(serial))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::hex;
    use proptest::prelude::*;

    /// VPD page 83h with these designators (code set byte, association +
    /// type byte, value).
    fn page83(ds: &[(u8, u8, Vec<u8>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (cs, at, v) in ds {
            body.extend([*cs, *at, 0, v.len() as u8]);
            body.extend(v);
        }
        let mut p = vec![0, 0x83];
        p.extend((body.len() as u16).to_be_bytes());
        p.extend(body);
        p
    }

    fn inquiry(vendor: &str, product: &str) -> StandardInquiry {
        let mut b = vec![0, 0, 6, 2, 31, 0, 0, 2];
        b.extend(format!("{vendor:<8}").bytes().take(8));
        b.extend(format!("{product:<16}").bytes().take(16));
        b.extend(*b"0001");
        StandardInquiry::parse(&b).unwrap()
    }

    fn serial(s: &str) -> UnitSerialNumber {
        let mut b = vec![0, 0x80, 0, s.len() as u8];
        b.extend(s.bytes());
        UnitSerialNumber::parse(&b).unwrap()
    }

    /// LIO without a unit serial (target_core_spc.c, `spc_emulate_evpd_83`):
    /// the bare vendor, then port designators only.
    fn lio_no_serial() -> DeviceIdentification {
        let mut name = b"iqn.2003-01.org.linux-iscsi.vm:lio,t,0x0001".to_vec();
        name.resize(44, 0);
        let p = page83(&[
            (0x02, 0x01, b"LIO-ORG \0".to_vec()),
            (0x51, 0x94, hex("00000001")),
            (0x51, 0x95, hex("00000000")),
            (0x01, 0x06, hex("00000000")),
            (0x53, 0x98, name),
        ]);
        DeviceIdentification::parse(&p).unwrap()
    }

    #[test]
    fn an_lu_without_designator_or_serial_has_no_identity() {
        let lio = lio_no_serial();
        assert_eq!(lio.lu_identity(), None);
        let inq = inquiry("LIO-ORG", "FILEIO");
        assert_eq!(lu_identity(Some(&lio), None, &inq), None);
        // LIO's empty VPD 80h.
        let empty = UnitSerialNumber::parse(&[0, 0x80, 0, 0]).unwrap();
        assert_eq!(lu_identity(Some(&lio), Some(&empty), &inq), None);
        assert_eq!(lu_identity(None, Some(&serial("    ")), &inq), None);
    }

    #[test]
    fn the_unit_serial_names_an_lu_without_designators() {
        let lio = lio_no_serial();
        let id = lu_identity(Some(&lio), Some(&serial("beaf11")), &inquiry("LIO-ORG", "FILEIO")).unwrap();
        assert_eq!(id.as_str(), "serial.LIO-ORG:FILEIO:beaf11");
        // Fields are told apart even when they hold the separator.
        let a = serial_identity("A:B", "C", "D").unwrap();
        let b = serial_identity("A", "B:C", "D").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str(), "serial.A\\x3aB:C:D");
        // A designator wins over the serial.
        let naa = page83(&[(1, 0x03, hex("6001405a2b3c4d5e6f70811223344556"))]);
        let d = DeviceIdentification::parse(&naa).unwrap();
        let id = lu_identity(Some(&d), Some(&serial("beaf11")), &inquiry("LIO-ORG", "FILEIO")).unwrap();
        assert_eq!(id.as_str(), "naa.6001405a2b3c4d5e6f70811223344556");
    }

    #[test]
    fn identifiers_that_name_nothing_are_skipped() {
        let pick = |ds: &[(u8, u8, Vec<u8>)]| DeviceIdentification::parse(&page83(ds)).unwrap().lu_identity();
        // NAA 6 of LIO's company with an all-zero vendor-specific part
        // (a serial without hex digits), NAA 5 with only a company id,
        // NAA 3 zero, EUI-64 with only a company id.
        assert_eq!(pick(&[(1, 0x03, hex("60014050000000000000000000000000"))]), None);
        assert_eq!(pick(&[(1, 0x03, hex("5001405000000000"))]), None);
        assert_eq!(pick(&[(1, 0x03, hex("3000000000000000"))]), None);
        assert_eq!(pick(&[(1, 0x02, hex("0011220000000000"))]), None);
        // NAA 2: vendor-specific A alone names it.
        assert_eq!(pick(&[(1, 0x03, hex("2001000000000000"))]).unwrap().as_str(), "naa.2001000000000000");
        // SCSI name strings: only the SPC-4 formats, and not the bare prefix.
        assert_eq!(pick(&[(3, 0x08, b"iqn.\0\0\0\0".to_vec())]), None);
        assert_eq!(pick(&[(3, 0x08, b"lio disk\0\0\0\0".to_vec())]), None);
        assert_eq!(pick(&[(3, 0x08, b"t10.LIO-ORG x\0\0\0".to_vec())]), None);
        // T10: the vendor alone, padded with spaces or NULs.
        assert_eq!(pick(&[(2, 0x01, b"LIO-ORG ".to_vec())]), None);
        assert_eq!(pick(&[(2, 0x01, b"LIO-ORG    \0\0".to_vec())]), None);
        assert_eq!(pick(&[(2, 0x01, b"LIO".to_vec())]), None);
        assert_eq!(pick(&[(2, 0x01, b"LIO-ORG fileio0:abc\0".to_vec())]).unwrap().as_str(), "t10.LIO-ORG fileio0:abc");
    }

    /// One designator the generator draws: the kinds that may name a LU,
    /// of the LU or of a target port, well formed or not.
    fn designator() -> impl Strategy<Value = (u8, u8, Vec<u8>)> {
        let assoc = prop::sample::select(vec![0x00u8, 0x10, 0x20]);
        let naa = (prop::sample::select(vec![2u8, 3, 5, 6, 1]), prop::collection::vec(any::<u8>(), 15)).prop_map(
            |(n, mut rest)| {
                let len = if n == 6 { 15 } else { 7 };
                rest.truncate(len);
                if rest.iter().all(|b| *b == 0) || rest[0] & 1 == 0 {
                    // Often an identifier that names nothing.
                    rest.iter_mut().for_each(|b| *b = 0);
                }
                let mut v = vec![n << 4];
                v.extend(rest);
                (1u8, 0x03u8, v)
            },
        );
        let eui =
            (prop::sample::select(vec![8usize, 12, 16]), prop::collection::vec(0u8..3, 16)).prop_map(|(len, mut v)| {
                v.truncate(len);
                (1u8, 0x02u8, v)
            });
        let name = "[a-z0-9.:-]{0,12}".prop_map(|s| {
            let mut v = format!("iqn.{s}").into_bytes();
            v.resize(v.len().div_ceil(4) * 4 + 4, 0);
            (3u8, 0x08u8, v)
        });
        let t10 = "[ A-Z0-9:\\\\-]{0,8}".prop_map(|s| (2u8, 0x01u8, format!("LIO-ORG {s}").into_bytes()));
        (assoc, prop_oneof![naa, eui, name, t10]).prop_map(|(a, (cs, t, v))| (cs, a | t, v))
    }

    /// The serial (VPD 80h text) and INQUIRY vendor/product the generator
    /// draws.
    fn serial_fields() -> impl Strategy<Value = (String, String, String)> {
        ("[A-Z:-]{0,3}", "[A-Z:]{0,3}", "[ a-z0-9:\\\\]{0,6}")
    }

    /// What names the LU in a set: the designator chosen, or the serial
    /// fields; this is what must differ for identities to differ.
    fn named_by(d: &DeviceIdentification, s: &UnitSerialNumber, i: &StandardInquiry) -> Option<String> {
        match d.lu_designator() {
            Some(x) => {
                // Trailing padding is not part of a name (SPC-4: NUL or
                // space padded).
                let end = x.value.iter().rposition(|b| *b != 0 && *b != b' ').map_or(0, |e| e + 1);
                Some(format!("{:?} {:?}", x.designator_type, &x.value[..end]))
            }
            None => (!s.serial.is_empty()).then(|| format!("{:?} {:?} {:?}", i.vendor, i.product, s.serial)),
        }
    }

    /// The oracle for "the designator names something", written from the
    /// SPC-4 formats with masks rather than bit ranges: the identifying
    /// part is not all zeroes or blank.
    fn names_something(d: &crate::Designator) -> bool {
        use crate::DesignatorType as T;
        let v = &d.value;
        let word = |at: usize| v.get(at..at + 8).map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()));
        match (d.designator_type, d.naa()) {
            (T::NAA, Some(2)) => word(0) & 0x0fff_0000_00ff_ffff != 0,
            (T::NAA, Some(3)) => word(0) & 0x0fff_ffff_ffff_ffff != 0,
            (T::NAA, Some(5)) => word(0) & 0x0000_000f_ffff_ffff != 0,
            (T::NAA, Some(6)) => word(0) & 0x0000_000f_ffff_ffff != 0 || word(8) != 0,
            (T::EUI64, _) => v.iter().skip(3).any(|b| *b != 0),
            (T::SCSI_NAME_STRING, _) => v.iter().skip(4).any(|b| *b != 0),
            (T::T10_VENDOR_ID, _) => v.iter().skip(8).any(|b| *b != 0 && *b != b' '),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn identities_are_unique_by_construction(
            a in prop::collection::vec(designator(), 0..5), sa in serial_fields(),
            b in prop::collection::vec(designator(), 0..5), sb in serial_fields(),
        ) {
            let parse = |ds: &[(u8, u8, Vec<u8>)], (v, p, s): &(String, String, String)| {
                (DeviceIdentification::parse(&page83(ds)).unwrap(), serial(s), inquiry(v, p))
            };
            let (da, ua, ia) = parse(&a, &sa);
            let (db, ub, ib) = parse(&b, &sb);
            let ida = lu_identity(Some(&da), Some(&ua), &ia);
            let idb = lu_identity(Some(&db), Some(&ub), &ib);
            // Deterministic.
            prop_assert_eq!(&ida, &lu_identity(Some(&da), Some(&ua), &ia));
            // Some identity exactly when something names the LU, never an
            // empty one, never from a designator that names nothing.
            prop_assert_eq!(ida.is_some(), named_by(&da, &ua, &ia).is_some());
            if let Some(id) = &ida {
                let body = id.as_str().split_once('.').map_or("", |(_, b)| b);
                prop_assert!(!body.is_empty(), "{}", id);
                if let Some(x) = da.lu_designator() {
                    prop_assert_eq!(x.identity(), Some(id.clone()));
                    prop_assert!(names_something(x), "{} from {:?}", id, x);
                }
            }
            // Different names, different identities.
            if ida.is_some() && ida == idb {
                prop_assert_eq!(named_by(&da, &ua, &ia), named_by(&db, &ub, &ib));
            }
            // Two serials of different vendors, or products, never meet.
            if ua.serial == ub.serial && !ua.serial.is_empty() && (&ia.vendor, &ia.product) != (&ib.vendor, &ib.product) {
                prop_assert_ne!(serial_identity(&ia.vendor, &ia.product, &ua.serial), serial_identity(&ib.vendor, &ib.product, &ub.serial));
            }
        }
    }
}
