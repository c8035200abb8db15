//! Standard INQUIRY data (SPC-4 "Standard INQUIRY data"): what the logical
//! unit is (device type), what it claims to support (version, TPGS for
//! ALUA, PROTECT, CmdQue, MultiP) and who made it.

use crate::codec::{Reader, ascii_text, bit};
use crate::error::ParseError;
use crate::macros::wire_enum;

wire_enum! {
    /// PERIPHERAL QUALIFIER, byte 0 bits 7-5 (SPC-4 "Peripheral qualifier").
    pub struct PeripheralQualifier(u8);
    /// A device of the indicated type is connected to this LU.
    CONNECTED = 0 => "CONNECTED";
    /// The LU can support a device of this type, but none is connected now.
    NOT_CONNECTED = 1 => "NOT CONNECTED";
    /// No device can be supported at this LUN (tgtd answers 7Fh for a LUN
    /// it does not have).
    NOT_SUPPORTED = 3 => "NOT SUPPORTED";
}

wire_enum! {
    /// PERIPHERAL DEVICE TYPE, byte 0 bits 4-0 (SPC-4 "Peripheral device
    /// type"). mpio only claims `DIRECT_ACCESS` (and maybe
    /// `SIMPLIFIED_DIRECT_ACCESS`) LUs.
    pub struct DeviceType(u8);
    /// Direct access block device (SBC-3): a disk.
    DIRECT_ACCESS = 0x00 => "DIRECT ACCESS BLOCK DEVICE";
    /// Sequential access (tape).
    SEQUENTIAL_ACCESS = 0x01 => "SEQUENTIAL ACCESS DEVICE";
    /// Printer (obsolete).
    PRINTER = 0x02 => "PRINTER DEVICE";
    /// Processor device.
    PROCESSOR = 0x03 => "PROCESSOR DEVICE";
    /// Write-once device.
    WRITE_ONCE = 0x04 => "WRITE-ONCE DEVICE";
    /// CD/DVD device (MMC).
    CD_DVD = 0x05 => "CD/DVD DEVICE";
    /// Optical memory device.
    OPTICAL_MEMORY = 0x07 => "OPTICAL MEMORY DEVICE";
    /// Media changer.
    MEDIA_CHANGER = 0x08 => "MEDIA CHANGER DEVICE";
    /// Storage array controller (SCC-2); tgtd's LUN 0 is one.
    STORAGE_ARRAY_CONTROLLER = 0x0c => "STORAGE ARRAY CONTROLLER DEVICE";
    /// Enclosure services device (SES).
    ENCLOSURE_SERVICES = 0x0d => "ENCLOSURE SERVICES DEVICE";
    /// Simplified direct access device (RBC).
    SIMPLIFIED_DIRECT_ACCESS = 0x0e => "SIMPLIFIED DIRECT-ACCESS DEVICE";
    /// Optical card reader/writer.
    OPTICAL_CARD = 0x0f => "OPTICAL CARD READER/WRITER DEVICE";
    /// Object-based storage device (OSD).
    OBJECT_STORAGE = 0x11 => "OBJECT-BASED STORAGE DEVICE";
    /// Automation/drive interface.
    AUTOMATION_DRIVE_INTERFACE = 0x12 => "AUTOMATION/DRIVE INTERFACE";
    /// Host managed zoned block device (ZBC).
    HOST_MANAGED_ZONED = 0x14 => "HOST MANAGED ZONED BLOCK DEVICE";
    /// Well known logical unit.
    WELL_KNOWN_LU = 0x1e => "WELL KNOWN LOGICAL UNIT";
    /// Unknown or no device type.
    UNKNOWN = 0x1f => "UNKNOWN OR NO DEVICE TYPE";
}

wire_enum! {
    /// TPGS, byte 5 bits 5-4 (SPC-4 "Target port group support"): whether
    /// the LU uses asymmetric logical unit access (ALUA).
    pub struct Tpgs(u8);
    /// No ALUA.
    NOT_SUPPORTED = 0 => "NOT SUPPORTED";
    /// Implicit ALUA only (the target changes states itself).
    IMPLICIT = 1 => "IMPLICIT";
    /// Explicit ALUA only (SET TARGET PORT GROUPS).
    EXPLICIT = 2 => "EXPLICIT";
    /// Both implicit and explicit.
    IMPLICIT_AND_EXPLICIT = 3 => "IMPLICIT AND EXPLICIT";
}

impl Tpgs {
    /// True if the LU supports ALUA in any form (then REPORT TARGET PORT
    /// GROUPS is available).
    pub const fn supported(self) -> bool {
        self.0 != 0
    }
}

/// Parsed standard INQUIRY data.
///
/// Short responses are accepted (the first INQUIRY to an unknown device is
/// often 36 bytes, and old devices return less): only the first 5 bytes are
/// required. The data considered is the shorter of what was received and
/// what ADDITIONAL LENGTH announces; a field that does not lie entirely
/// inside it is reported empty/false/absent. [`StandardInquiry::full_len`]
/// says how much the target had, to re-issue with a larger allocation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct StandardInquiry {
    /// Byte 0 bits 7-5.
    pub qualifier: PeripheralQualifier,
    /// Byte 0 bits 4-0.
    pub device_type: DeviceType,
    /// RMB, byte 1 bit 7: removable medium.
    pub removable: bool,
    /// VERSION, byte 2: the SPC standard claimed (3 = SPC, 4 = SPC-2, 5 =
    /// SPC-3, 6 = SPC-4, 7 = SPC-5; 0 = none claimed).
    pub version: u8,
    /// NORMACA, byte 3 bit 5: supports NACA=1 in the CONTROL byte.
    pub normaca: bool,
    /// HISUP, byte 3 bit 4: hierarchical LUN addressing (REPORT LUNS
    /// entries may have several levels).
    pub hisup: bool,
    /// RESPONSE DATA FORMAT, byte 3 bits 3-0 (2 for SPC-2 and later).
    pub response_data_format: u8,
    /// ADDITIONAL LENGTH, byte 4 (n - 4).
    pub additional_length: u8,
    /// SCCS, byte 5 bit 7: embedded storage array controller.
    pub sccs: bool,
    /// ACC, byte 5 bit 6: access controls coordinator.
    pub acc: bool,
    /// TPGS, byte 5 bits 5-4: ALUA support.
    pub tpgs: Tpgs,
    /// 3PC, byte 5 bit 3: third-party copy (EXTENDED COPY).
    pub third_party_copy: bool,
    /// PROTECT, byte 5 bit 0: protection information supported.
    pub protect: bool,
    /// ENCSERV, byte 6 bit 6: embedded enclosure services.
    pub encserv: bool,
    /// MULTIP, byte 6 bit 4: the device has several ports (a hint that
    /// more than one target port leads to this LU).
    pub multip: bool,
    /// CMDQUE, byte 7 bit 1: command queuing (more than one outstanding
    /// command per I_T nexus).
    pub cmdque: bool,
    /// T10 VENDOR IDENTIFICATION, bytes 8-15, trimmed.
    pub vendor: String,
    /// PRODUCT IDENTIFICATION, bytes 16-31, trimmed.
    pub product: String,
    /// PRODUCT REVISION LEVEL, bytes 32-35, trimmed.
    pub revision: String,
    /// VERSION DESCRIPTORS, bytes 58-73: the non-zero ones, in order
    /// (e.g. 0960h iSCSI, 04C0h SBC-3, 0300h SPC-3).
    pub version_descriptors: Vec<u16>,
}

const WHAT: &str = "standard INQUIRY data";

impl StandardInquiry {
    /// Parses standard INQUIRY data (the response to [`crate::cdb::inquiry`]).
    pub fn parse(buf: &[u8]) -> Result<StandardInquiry, ParseError> {
        let mut r = Reader::new(WHAT, "data", buf);
        let b0 = r.u8("peripheral device type")?;
        let b1 = r.u8("RMB")?;
        let version = r.u8("version")?;
        let b3 = r.u8("response data format")?;
        let additional_length = r.u8("additional length")?;
        let full = 5usize.saturating_add(usize::from(additional_length));
        let d = buf.get(..buf.len().min(full)).unwrap_or(buf);
        let byte = |i: usize| d.get(i).copied().unwrap_or(0);
        let text = |from: usize, to: usize| d.get(from..to).map(|s| ascii_text(s, true)).unwrap_or_default();
        let (b5, b6, b7) = (byte(5), byte(6), byte(7));
        let version_descriptors = d
            .get(58..74.min(d.len()))
            .unwrap_or(&[])
            .chunks_exact(2)
            .filter_map(|c| <[u8; 2]>::try_from(c).ok())
            .map(u16::from_be_bytes)
            .filter(|v| *v != 0)
            .collect();
        Ok(StandardInquiry {
            qualifier: PeripheralQualifier(b0 >> 5),
            device_type: DeviceType(b0 & 0x1f),
            removable: bit(b1, 7),
            version,
            normaca: bit(b3, 5),
            hisup: bit(b3, 4),
            response_data_format: b3 & 0x0f,
            additional_length,
            sccs: bit(b5, 7),
            acc: bit(b5, 6),
            tpgs: Tpgs((b5 >> 4) & 0x03),
            third_party_copy: bit(b5, 3),
            protect: bit(b5, 0),
            encserv: bit(b6, 6),
            multip: bit(b6, 4),
            cmdque: bit(b7, 1),
            vendor: text(8, 16),
            product: text(16, 32),
            revision: text(32, 36),
            version_descriptors,
        })
    }

    /// Total length of the INQUIRY data the target holds (ADDITIONAL
    /// LENGTH + 5): the allocation length that returns all of it.
    pub fn full_len(&self) -> usize {
        usize::from(self.additional_length).saturating_add(5)
    }

    /// True when a disk is attached at this LUN: qualifier CONNECTED and
    /// device type DIRECT ACCESS. The multipath layer claims only these.
    pub fn is_connected_disk(&self) -> bool {
        self.qualifier == PeripheralQualifier::CONNECTED && self.device_type == DeviceType::DIRECT_ACCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::hex;
    use proptest::prelude::*;

    // tgtd 1.0.85, INQUIRY allocation length 255, LUN 1 (disk) and LUN 0
    // (controller) and LUN 5 (absent).
    const TGTD_LUN1: &str = "000005123d00000249455420202020205649525455414c2d4449534b20202020303030310000000000000000000000000000000000000000000004c0096003000000";
    const TGTD_LUN0: &str = "0c0005123d0000024945542020202020436f6e74726f6c6c6572202020202020303030310000000000000000000000000000000000000000000004c0096001fb0000";
    const TGTD_LUN5: &str = "7f0005123d0000024945542020202020436f6e74726f6c6c6572202020202020303030310000000000000000000000000000000000000000000004c0096001fb0000";

    #[test]
    fn tgtd_disk() {
        let i = StandardInquiry::parse(&hex(TGTD_LUN1)).unwrap();
        assert_eq!(i.qualifier, PeripheralQualifier::CONNECTED);
        assert_eq!(i.device_type, DeviceType::DIRECT_ACCESS);
        assert!(i.is_connected_disk());
        assert!(!i.removable);
        assert_eq!(i.version, 5);
        assert!(i.hisup && !i.normaca);
        assert_eq!(i.response_data_format, 2);
        assert_eq!(i.additional_length, 0x3d);
        assert_eq!(i.full_len(), 66);
        assert_eq!(i.tpgs, Tpgs::NOT_SUPPORTED);
        assert!(!i.protect && !i.third_party_copy && !i.multip && !i.sccs);
        assert!(i.cmdque);
        assert_eq!(i.vendor, "IET");
        assert_eq!(i.product, "VIRTUAL-DISK");
        assert_eq!(i.revision, "0001");
        assert_eq!(i.version_descriptors, vec![0x04c0, 0x0960, 0x0300]);
    }

    #[test]
    fn tgtd_controller_and_absent_lun() {
        let i = StandardInquiry::parse(&hex(TGTD_LUN0)).unwrap();
        assert_eq!(i.device_type, DeviceType::STORAGE_ARRAY_CONTROLLER);
        assert_eq!(i.product, "Controller");
        assert!(!i.is_connected_disk());
        let i = StandardInquiry::parse(&hex(TGTD_LUN5)).unwrap();
        assert_eq!(i.qualifier, PeripheralQualifier::NOT_SUPPORTED);
        assert_eq!(i.device_type, DeviceType::UNKNOWN);
        assert!(!i.is_connected_disk());
    }

    #[test]
    fn short_responses() {
        // 36-byte INQUIRY, as tgtd returns it: strings complete, no
        // version descriptors, full_len says 66.
        let b = hex(TGTD_LUN1);
        let i = StandardInquiry::parse(&b[..36]).unwrap();
        assert_eq!((i.vendor.as_str(), i.product.as_str(), i.revision.as_str()), ("IET", "VIRTUAL-DISK", "0001"));
        assert!(i.version_descriptors.is_empty());
        assert_eq!(i.full_len(), 66);
        // Cut inside PRODUCT: the partial field is reported empty.
        let i = StandardInquiry::parse(&b[..20]).unwrap();
        assert_eq!(i.vendor, "IET");
        assert_eq!(i.product, "");
        assert!(i.cmdque);
        // Additional length 3 on a longer buffer: bytes past 8 are ignored.
        let mut s = b.clone();
        s[4] = 3;
        let i = StandardInquiry::parse(&s).unwrap();
        assert_eq!(i.vendor, "");
        assert!(i.cmdque);
        // Five bytes are the minimum.
        assert!(StandardInquiry::parse(&b[..5]).is_ok());
        assert_eq!(
            StandardInquiry::parse(&b[..4]).unwrap_err().to_string(),
            "standard INQUIRY data: additional length needs 1 bytes, 0 left"
        );
    }

    #[test]
    fn flag_bits() {
        let mut b = hex(TGTD_LUN1);
        b[0] = 0x20; // qualifier 1
        b[1] = 0x80;
        b[3] = 0x32;
        b[5] = 0xf9; // SCCS ACC TPGS=3 3PC PROTECT
        b[6] = 0x50; // ENCSERV MULTIP
        b[7] = 0x00;
        let i = StandardInquiry::parse(&b).unwrap();
        assert_eq!(i.qualifier, PeripheralQualifier::NOT_CONNECTED);
        assert!(i.removable && i.normaca && i.hisup);
        assert!(i.sccs && i.acc && i.third_party_copy && i.protect);
        assert_eq!(i.tpgs, Tpgs::IMPLICIT_AND_EXPLICIT);
        assert!(i.tpgs.supported());
        assert!(i.encserv && i.multip && !i.cmdque);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(i) = StandardInquiry::parse(&b) {
                prop_assert!(b.len() >= 5);
                prop_assert!(i.version_descriptors.len() <= 8);
            }
        }
    }
}
