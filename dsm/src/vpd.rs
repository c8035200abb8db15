//! Vital product data pages (SPC-4 "Vital product data parameters", SBC-3
//! "Vital product data parameters"): the pages mpio reads to identify a
//! logical unit and learn its limits.
//!
//! | page | name | used for |
//! |---|---|---|
//! | 00h | Supported VPD pages | which of the others to ask for |
//! | 80h | Unit serial number | a second identity check, messages |
//! | 83h | Device identification | LU identity: which paths lead to the same LU |
//! | B0h | Block limits | max transfer size, UNMAP / WRITE SAME limits |
//! | B2h | Logical block provisioning | thin provisioning, UNMAP / WRITE SAME support |
//!
//! Every page starts with the same 4-byte header: byte 0 peripheral
//! qualifier and device type, byte 1 PAGE CODE, bytes 2-3 PAGE LENGTH
//! (n - 3; SPC-3 called byte 2 reserved for some pages, which reads the
//! same). Each parser checks the page code, and that the buffer holds the
//! whole page; if it does not, the error is [`ParseError::Truncated`] and
//! [`ParseError::required_len`] says what allocation length to use.

use crate::codec::{Reader, ascii_text, bit, hex};
use crate::error::ParseError;
use crate::inquiry::{DeviceType, PeripheralQualifier};
use crate::macros::wire_enum;

wire_enum! {
    /// VPD page code (byte 2 of the INQUIRY CDB with EVPD set). The names
    /// cover every page SPC-5 ("Vital product data parameters", the table
    /// of VPD page codes) and SBC-4 define, with SBC-5's B9h; pages B0h-BFh
    /// are named as SBC defines them, since mpio serves direct-access LUs
    /// only (SSC and others give those codes other meanings).
    /// [`VpdPage::description`] also names the ranges (ASCII information,
    /// vendor specific).
    pub struct VpdPage(u8);
    /// Supported VPD pages (SPC-5).
    SUPPORTED_PAGES = 0x00 => "SUPPORTED VPD PAGES";
    /// Unit serial number (SPC-5).
    UNIT_SERIAL_NUMBER = 0x80 => "UNIT SERIAL NUMBER";
    /// Implemented operating definition (obsolete since SPC-3).
    IMPLEMENTED_OPERATING_DEFINITION = 0x81 => "IMPLEMENTED OPERATING DEFINITION (OBSOLETE)";
    /// ASCII implemented operating definition (obsolete since SPC-3).
    ASCII_IMPLEMENTED_OPERATING_DEFINITION = 0x82 => "ASCII IMPLEMENTED OPERATING DEFINITION (OBSOLETE)";
    /// Device identification (SPC-5).
    DEVICE_IDENTIFICATION = 0x83 => "DEVICE IDENTIFICATION";
    /// Software interface identification (SPC-5).
    SOFTWARE_INTERFACE_IDENTIFICATION = 0x84 => "SOFTWARE INTERFACE IDENTIFICATION";
    /// Management network addresses (SPC-5).
    MANAGEMENT_NETWORK_ADDRESSES = 0x85 => "MANAGEMENT NETWORK ADDRESSES";
    /// Extended INQUIRY data (SPC-5).
    EXTENDED_INQUIRY = 0x86 => "EXTENDED INQUIRY DATA";
    /// Mode page policy (SPC-5).
    MODE_PAGE_POLICY = 0x87 => "MODE PAGE POLICY";
    /// SCSI ports (SPC-5).
    SCSI_PORTS = 0x88 => "SCSI PORTS";
    /// ATA information (SAT, listed by SPC-5).
    ATA_INFORMATION = 0x89 => "ATA INFORMATION";
    /// Power condition (SPC-5).
    POWER_CONDITION = 0x8a => "POWER CONDITION";
    /// Device constituents (SPC-5).
    DEVICE_CONSTITUENTS = 0x8b => "DEVICE CONSTITUENTS";
    /// CFA profile information (SPC-5).
    CFA_PROFILE_INFORMATION = 0x8c => "CFA PROFILE INFORMATION";
    /// Power consumption (SPC-5).
    POWER_CONSUMPTION = 0x8d => "POWER CONSUMPTION";
    /// Third-party copy (SPC-5).
    THIRD_PARTY_COPY = 0x8f => "THIRD-PARTY COPY";
    /// Protocol specific logical unit information (SPC-5).
    PROTOCOL_SPECIFIC_LU_INFORMATION = 0x90 => "PROTOCOL SPECIFIC LOGICAL UNIT INFORMATION";
    /// Protocol specific port information (SPC-5).
    PROTOCOL_SPECIFIC_PORT_INFORMATION = 0x91 => "PROTOCOL SPECIFIC PORT INFORMATION";
    /// SCSI feature sets (SPC-5).
    SCSI_FEATURE_SETS = 0x92 => "SCSI FEATURE SETS";
    /// Block limits (SBC-4).
    BLOCK_LIMITS = 0xb0 => "BLOCK LIMITS";
    /// Block device characteristics (SBC-4).
    BLOCK_DEVICE_CHARACTERISTICS = 0xb1 => "BLOCK DEVICE CHARACTERISTICS";
    /// Logical block provisioning (SBC-4).
    LOGICAL_BLOCK_PROVISIONING = 0xb2 => "LOGICAL BLOCK PROVISIONING";
    /// Referrals (SBC-4; LIO lists it).
    REFERRALS = 0xb3 => "REFERRALS";
    /// Supported block lengths and protection types (SBC-4).
    SUPPORTED_BLOCK_LENGTHS = 0xb4 => "SUPPORTED BLOCK LENGTHS AND PROTECTION TYPES";
    /// Block device characteristics extension (SBC-4).
    BLOCK_DEVICE_CHARACTERISTICS_EXTENSION = 0xb5 => "BLOCK DEVICE CHARACTERISTICS EXTENSION";
    /// Zoned block device characteristics (SBC-4, defined by ZBC).
    ZONED_BLOCK_DEVICE_CHARACTERISTICS = 0xb6 => "ZONED BLOCK DEVICE CHARACTERISTICS";
    /// Block limits extension (SBC-4).
    BLOCK_LIMITS_EXTENSION = 0xb7 => "BLOCK LIMITS EXTENSION";
    /// Format presets (SBC-4).
    FORMAT_PRESETS = 0xb8 => "FORMAT PRESETS";
    /// Concurrent positioning ranges (SBC-5).
    CONCURRENT_POSITIONING_RANGES = 0xb9 => "CONCURRENT POSITIONING RANGES";
}

impl VpdPage {
    /// What the page is: its name, or the range SPC-5 puts it in (01h-7Fh
    /// ASCII information, C0h-FFh vendor specific); `None` for codes
    /// the standards reserve.
    pub fn description(self) -> Option<&'static str> {
        self.name().or(match self.0 {
            0x01..=0x7f => Some("ASCII INFORMATION"),
            0xc0..=0xff => Some("VENDOR SPECIFIC"),
            _ => None,
        })
    }
}

/// The allocation length that returns the whole VPD page whose first
/// bytes are `header` (PAGE LENGTH + 4), or `None` if fewer than 4 bytes
/// were received.
pub fn required_len(header: &[u8]) -> Option<usize> {
    let [_, _, hi, lo] = *header.get(..4)? else {
        return None;
    };
    Some(usize::from(u16::from_be_bytes([hi, lo])).saturating_add(4))
}

/// The common VPD header, checked: right page code, whole page present.
/// Returns the qualifier, device type and the page (header included, so
/// offsets match the SPC/SBC tables; bytes past PAGE LENGTH dropped).
fn page<'a>(
    buf: &'a [u8],
    want: VpdPage,
    what: &'static str,
) -> Result<(PeripheralQualifier, DeviceType, &'a [u8]), ParseError> {
    let mut r = Reader::new(what, "page", buf);
    let b0 = r.u8("peripheral device type")?;
    let code = r.u8("page code")?;
    if code != want.0 {
        return Err(ParseError::WrongPage { what, found: code });
    }
    let len = usize::from(r.u16("page length")?);
    let need = len.saturating_add(4);
    let Some(whole) = buf.get(..need) else {
        return Err(ParseError::Truncated { what, need, have: buf.len() });
    };
    Ok((PeripheralQualifier(b0 >> 5), DeviceType(b0 & 0x1f), whole))
}

/// Whether any of the `len` bits of `bytes` from bit `from` (0 = the most
/// significant bit of the first byte) is set; bits past the end read as 0.
fn any_bit(bytes: &[u8], from: usize, len: usize) -> bool {
    (from..from.saturating_add(len)).any(|i| bytes.get(i / 8).is_some_and(|b| (b >> (7 - i % 8)) & 1 == 1))
}

/// A big-endian field at `offset` of `page`, or 0 when the page is too
/// short to hold it (older revisions define shorter pages).
fn field<const N: usize>(page: &[u8], offset: usize) -> u64 {
    let Some(bytes) = offset.checked_add(N).and_then(|end| page.get(offset..end)) else {
        return 0;
    };
    bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// Supported VPD pages (SPC-4 "Supported VPD pages VPD page"): the page
/// codes the LU answers, in ascending order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SupportedPages {
    /// Peripheral qualifier from byte 0.
    pub qualifier: PeripheralQualifier,
    /// Device type from byte 0.
    pub device_type: DeviceType,
    /// The supported page codes.
    pub pages: Vec<VpdPage>,
}

impl SupportedPages {
    /// Parses VPD page 00h.
    pub fn parse(buf: &[u8]) -> Result<SupportedPages, ParseError> {
        let (qualifier, device_type, p) = page(buf, VpdPage::SUPPORTED_PAGES, "VPD page 0x00")?;
        let pages = p.get(4..).unwrap_or(&[]).iter().map(|b| VpdPage(*b)).collect();
        Ok(SupportedPages { qualifier, device_type, pages })
    }

    /// True if `page` is listed.
    pub fn supports(&self, page: VpdPage) -> bool {
        self.pages.contains(&page)
    }
}

/// Unit serial number (SPC-4 "Unit Serial Number VPD page"): PRODUCT SERIAL
/// NUMBER, ASCII, right-aligned (tgtd pads with leading spaces).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct UnitSerialNumber {
    /// Peripheral qualifier from byte 0.
    pub qualifier: PeripheralQualifier,
    /// Device type from byte 0.
    pub device_type: DeviceType,
    /// The serial number with padding trimmed at both ends; empty if the
    /// target reports none (all spaces).
    pub serial: String,
    /// The field as received.
    pub raw: Vec<u8>,
}

impl UnitSerialNumber {
    /// Parses VPD page 80h.
    pub fn parse(buf: &[u8]) -> Result<UnitSerialNumber, ParseError> {
        let (qualifier, device_type, p) = page(buf, VpdPage::UNIT_SERIAL_NUMBER, "VPD page 0x80")?;
        let raw = p.get(4..).unwrap_or(&[]);
        Ok(UnitSerialNumber { qualifier, device_type, serial: ascii_text(raw, true), raw: raw.to_vec() })
    }
}

wire_enum! {
    /// CODE SET of a designator (SPC-4 "Code set"), byte 0 bits 3-0.
    pub struct CodeSet(u8);
    /// Binary values.
    BINARY = 1 => "BINARY";
    /// Printable ASCII.
    ASCII = 2 => "ASCII";
    /// UTF-8.
    UTF8 = 3 => "UTF-8";
}

wire_enum! {
    /// ASSOCIATION of a designator (SPC-4 "Association"), byte 1 bits 5-4:
    /// what the designator names.
    pub struct Association(u8);
    /// The logical unit itself: the identity that is the same through
    /// every path.
    LOGICAL_UNIT = 0 => "LOGICAL UNIT";
    /// The target port the INQUIRY came through (differs per path).
    TARGET_PORT = 1 => "TARGET PORT";
    /// The SCSI target device containing the LU.
    TARGET_DEVICE = 2 => "TARGET DEVICE";
}

wire_enum! {
    /// DESIGNATOR TYPE (SPC-4 "Designator type"), byte 1 bits 3-0.
    pub struct DesignatorType(u8);
    /// Vendor specific.
    VENDOR_SPECIFIC = 0x0 => "VENDOR SPECIFIC";
    /// T10 vendor ID based: 8-byte T10 vendor id + vendor specific.
    T10_VENDOR_ID = 0x1 => "T10 VENDOR ID";
    /// EUI-64 based (8, 12 or 16 bytes).
    EUI64 = 0x2 => "EUI-64";
    /// NAA (8 or 16 bytes; the NAA field is the high nibble).
    NAA = 0x3 => "NAA";
    /// Relative target port identifier.
    RELATIVE_TARGET_PORT = 0x4 => "RELATIVE TARGET PORT";
    /// Target port group (ALUA).
    TARGET_PORT_GROUP = 0x5 => "TARGET PORT GROUP";
    /// Logical unit group.
    LOGICAL_UNIT_GROUP = 0x6 => "LOGICAL UNIT GROUP";
    /// MD5 logical unit identifier.
    MD5_LOGICAL_UNIT = 0x7 => "MD5 LOGICAL UNIT IDENTIFIER";
    /// SCSI name string (UTF-8, "iqn." / "naa." / "eui." prefixed).
    SCSI_NAME_STRING = 0x8 => "SCSI NAME STRING";
    /// Protocol specific port identifier.
    PROTOCOL_SPECIFIC_PORT = 0x9 => "PROTOCOL SPECIFIC PORT IDENTIFIER";
    /// UUID (SPC-5).
    UUID = 0xa => "UUID";
}

wire_enum! {
    /// PROTOCOL IDENTIFIER (SPC-4 "Protocol identifier values"), byte 0
    /// bits 7-4 of a designator; meaningful only when PIV is set and the
    /// association is target port or target device.
    pub struct ProtocolId(u8);
    /// Fibre Channel (FCP).
    FCP = 0x0 => "FCP";
    /// Parallel SCSI (SPI).
    SPI = 0x1 => "SPI";
    /// SSA.
    SSA = 0x2 => "SSA";
    /// IEEE 1394 (SBP).
    SBP = 0x3 => "SBP";
    /// SCSI RDMA (SRP).
    SRP = 0x4 => "SRP";
    /// iSCSI.
    ISCSI = 0x5 => "iSCSI";
    /// SAS.
    SAS = 0x6 => "SAS";
    /// Automation/drive interface (ADT).
    ADT = 0x7 => "ADT";
    /// ATA/ATAPI.
    ATA = 0x8 => "ATA";
    /// USB attached SCSI (UAS).
    UAS = 0x9 => "UAS";
    /// SCSI over PCI Express (SOP).
    SOP = 0xa => "SOP";
    /// No specific protocol.
    NONE = 0xf => "NONE";
}

/// One designation descriptor (SPC-4 "Designation descriptor"): byte 0
/// PROTOCOL IDENTIFIER | CODE SET, byte 1 PIV | ASSOCIATION | DESIGNATOR
/// TYPE, byte 3 DESIGNATOR LENGTH, then the designator.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Designator {
    /// PROTOCOL IDENTIFIER as received; see [`Designator::protocol`].
    pub protocol_identifier: ProtocolId,
    /// CODE SET.
    pub code_set: CodeSet,
    /// PIV: the protocol identifier is valid.
    pub piv: bool,
    /// ASSOCIATION.
    pub association: Association,
    /// DESIGNATOR TYPE.
    pub designator_type: DesignatorType,
    /// The designator bytes.
    pub value: Vec<u8>,
}

/// A logical unit's identity as a stable text (`naa.<hex>`, `eui.<hex>`,
/// the SCSI name string itself, or `t10.<vendor id text>`), comparable
/// across paths and printable in messages. Built by
/// [`DeviceIdentification::lu_identity`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LuIdentity(String);

impl LuIdentity {
    /// An identity from its text form (e.g. from configuration).
    pub fn new(text: impl Into<String>) -> LuIdentity {
        LuIdentity(text.into())
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl core::fmt::Display for LuIdentity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<LuIdentity> for String {
    fn from(id: LuIdentity) -> String {
        id.0
    }
}

impl Designator {
    fn read(r: &mut Reader<'_>) -> Result<Designator, ParseError> {
        let b0 = r.u8("designator code set")?;
        let b1 = r.u8("designator type")?;
        r.skip(1, "designator reserved byte")?;
        let len = r.u8("designator length")?;
        let mut v = r.sub(usize::from(len), "designator length")?;
        Ok(Designator {
            protocol_identifier: ProtocolId(b0 >> 4),
            code_set: CodeSet(b0 & 0x0f),
            piv: bit(b1, 7),
            association: Association((b1 >> 4) & 0x03),
            designator_type: DesignatorType(b1 & 0x0f),
            value: v.rest().to_vec(),
        })
    }

    /// The protocol, when SPC-4 says the field means something: PIV set
    /// and association target port or target device.
    pub fn protocol(&self) -> Option<ProtocolId> {
        let port_or_device = matches!(self.association, Association::TARGET_PORT | Association::TARGET_DEVICE);
        (self.piv && port_or_device).then_some(self.protocol_identifier)
    }

    /// For an NAA designator, the NAA field (high nibble of byte 0):
    /// 2 IEEE extended, 3 locally assigned, 5 IEEE registered, 6 IEEE
    /// registered extended.
    pub fn naa(&self) -> Option<u8> {
        if self.designator_type != DesignatorType::NAA {
            return None;
        }
        self.value.first().map(|b| b >> 4)
    }

    /// For RELATIVE TARGET PORT and TARGET PORT GROUP designators, the
    /// 16-bit identifier in bytes 2-3 of the value.
    pub fn port_identifier(&self) -> Option<u16> {
        match (self.designator_type, self.value.as_slice()) {
            (DesignatorType::RELATIVE_TARGET_PORT | DesignatorType::TARGET_PORT_GROUP, [_, _, hi, lo]) => {
                Some(u16::from_be_bytes([*hi, *lo]))
            }
            _ => None,
        }
    }

    /// The identity text of this designator, if it is of a type usable as
    /// an identity, well formed (code set and length as SPC-4 requires for
    /// its type) and names something (an identifier that is all zeroes or
    /// blank names nothing, and every LU of such a target would share it):
    /// - NAA, binary, 8 bytes (NAA 2, 3, 5) or 16 bytes (NAA 6), with a
    ///   vendor-specific (or locally administered) part that is not all
    ///   zeroes: `naa.` + lower-case hex;
    /// - EUI-64, binary, 8/12/16 bytes, not zero past the company id:
    ///   `eui.` + lower-case hex;
    /// - SCSI name string, UTF-8, NUL-terminated/padded, in one of the
    ///   formats SPC-4 allows (`iqn.`, `eui.`, `naa.`, with something after
    ///   the prefix): the string;
    /// - T10 vendor ID, ASCII (or UTF-8): the 8-byte T10 VENDOR
    ///   IDENTIFICATION then a VENDOR SPECIFIC IDENTIFIER that is not
    ///   blank: `t10.` + the text with trailing spaces/NULs cut, inner
    ///   spaces kept (`t10.IET     00010001`). The vendor alone names no
    ///   LU: LIO reports only `LIO-ORG` for every LU without a unit serial.
    ///
    /// The association is not checked here; see
    /// [`DeviceIdentification::lu_designator`].
    pub fn identity(&self) -> Option<LuIdentity> {
        let v = self.value.as_slice();
        let text = match self.designator_type {
            DesignatorType::NAA => {
                // The bits that identify (SPC-4 "NAA designator
                // formats"), as (first bit, bits) from the most
                // significant: NAA 2 vendor-specific A and B around the
                // company id, NAA 3 the locally administered value, NAA 5
                // the vendor-specific id, NAA 6 that and its extension.
                let (ok_len, parts): (usize, &[(usize, usize)]) = match self.naa()? {
                    2 => (8, &[(4, 12), (40, 24)]),
                    3 => (8, &[(4, 60)]),
                    5 => (8, &[(28, 36)]),
                    6 => (16, &[(28, 100)]),
                    _ => return None,
                };
                if self.code_set != CodeSet::BINARY || v.len() != ok_len {
                    return None;
                }
                if !parts.iter().any(|(from, len)| any_bit(v, *from, *len)) {
                    return None;
                }
                format!("naa.{}", hex(v))
            }
            DesignatorType::EUI64 => {
                // IEEE company id (24 bits), then what identifies.
                if self.code_set != CodeSet::BINARY
                    || !matches!(v.len(), 8 | 12 | 16)
                    || !any_bit(v, 24, v.len() * 8 - 24)
                {
                    return None;
                }
                format!("eui.{}", hex(v))
            }
            DesignatorType::SCSI_NAME_STRING => {
                if self.code_set != CodeSet::UTF8 {
                    return None;
                }
                let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
                let s = core::str::from_utf8(v.get(..end)?).ok()?;
                let named = ["iqn.", "eui.", "naa."].iter().any(|p| s.len() > p.len() && s.starts_with(p));
                if !named || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return None;
                }
                s.to_owned()
            }
            DesignatorType::T10_VENDOR_ID => {
                if !matches!(self.code_set, CodeSet::ASCII | CodeSet::UTF8) {
                    return None;
                }
                let vendor_specific = v.get(8..)?;
                if ascii_text(vendor_specific, true).is_empty() {
                    return None;
                }
                format!("t10.{}", ascii_text(v, false))
            }
            _ => return None,
        };
        Some(LuIdentity(text))
    }

    /// Preference for LU identity, higher is better: NAA 6 > NAA 5 >
    /// NAA 2 > NAA 3 > EUI-64 > SCSI name string > T10 vendor ID. NAA
    /// first because it is globally unique by construction (IEEE company
    /// id) and binary, so it has a single text form; NAA 3 (locally
    /// assigned) is the weakest NAA. T10 vendor IDs are often vendor +
    /// serial text that need not be unique.
    fn rank(&self) -> Option<u8> {
        match self.designator_type {
            DesignatorType::NAA => match self.naa()? {
                6 => Some(8),
                5 => Some(7),
                2 => Some(6),
                3 => Some(5),
                _ => None,
            },
            DesignatorType::EUI64 => Some(4),
            DesignatorType::SCSI_NAME_STRING => Some(3),
            DesignatorType::T10_VENDOR_ID => Some(2),
            _ => None,
        }
    }
}

/// Device identification (SPC-4 "Device Identification VPD page"): a list
/// of designators naming the LU, the target port and the target device.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct DeviceIdentification {
    /// Peripheral qualifier from byte 0.
    pub qualifier: PeripheralQualifier,
    /// Device type from byte 0.
    pub device_type: DeviceType,
    /// The designators in page order.
    pub designators: Vec<Designator>,
}

impl DeviceIdentification {
    /// Parses VPD page 83h. A designator whose length runs past the page
    /// is an error (the page is corrupt, not merely cut by the allocation
    /// length, which is reported as `Truncated` first).
    pub fn parse(buf: &[u8]) -> Result<DeviceIdentification, ParseError> {
        const WHAT: &str = "VPD page 0x83";
        let (qualifier, device_type, p) = page(buf, VpdPage::DEVICE_IDENTIFICATION, WHAT)?;
        let mut r = Reader::new(WHAT, "page", p.get(4..).unwrap_or(&[]));
        let mut designators = Vec::new();
        while !r.is_empty() {
            designators.push(Designator::read(&mut r)?);
        }
        Ok(DeviceIdentification { qualifier, device_type, designators })
    }

    /// The best designator of the logical unit itself (association 0)
    /// that yields a well-formed identity, by the order NAA (6 > 5 > 2 >
    /// 3) > EUI-64 > SCSI name string > T10 vendor ID; the first in page
    /// order wins a tie. Target port and target device designators are
    /// never chosen: they differ per path or name more than the LU.
    pub fn lu_designator(&self) -> Option<&Designator> {
        let mut best: Option<(&Designator, u8)> = None;
        for d in &self.designators {
            if d.association != Association::LOGICAL_UNIT || d.identity().is_none() {
                continue;
            }
            let Some(rank) = d.rank() else { continue };
            if best.is_none_or(|(_, r)| rank > r) {
                best = Some((d, rank));
            }
        }
        best.map(|(d, _)| d)
    }

    /// The identity text of [`DeviceIdentification::lu_designator`]: the
    /// key under which the multipath layer groups paths.
    pub fn lu_identity(&self) -> Option<LuIdentity> {
        self.lu_designator().and_then(Designator::identity)
    }

    /// The relative target port identifier of the port this page came
    /// through, if reported.
    pub fn relative_target_port(&self) -> Option<u16> {
        self.port_designator(DesignatorType::RELATIVE_TARGET_PORT)
    }

    /// The target port group (ALUA) of the port this page came through, if
    /// reported.
    pub fn target_port_group(&self) -> Option<u16> {
        self.port_designator(DesignatorType::TARGET_PORT_GROUP)
    }

    fn port_designator(&self, t: DesignatorType) -> Option<u16> {
        self.designators
            .iter()
            .filter(|d| d.association == Association::TARGET_PORT && d.designator_type == t)
            .find_map(Designator::port_identifier)
    }
}

/// Block limits (SBC-3 "Block Limits VPD page"). Counts are in logical
/// blocks. For most fields 0 means "no limit reported"; fields a short
/// (older) page does not include read as 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct BlockLimits {
    /// WSNZ (byte 4 bit 0): WRITE SAME with 0 blocks is refused.
    pub wsnz: bool,
    /// MAXIMUM COMPARE AND WRITE LENGTH (byte 5); 0 = not supported.
    pub max_compare_and_write_len: u8,
    /// OPTIMAL TRANSFER LENGTH GRANULARITY (bytes 6-7).
    pub optimal_transfer_granularity: u16,
    /// MAXIMUM TRANSFER LENGTH (bytes 8-11).
    pub max_transfer_len: u32,
    /// OPTIMAL TRANSFER LENGTH (bytes 12-15).
    pub optimal_transfer_len: u32,
    /// MAXIMUM PREFETCH LENGTH (bytes 16-19).
    pub max_prefetch_len: u32,
    /// MAXIMUM UNMAP LBA COUNT (bytes 20-23); FFFFFFFFh = no limit,
    /// 0 = UNMAP not supported.
    pub max_unmap_lba_count: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT (bytes 24-27); FFFFFFFFh = no
    /// limit, 0 = UNMAP not supported.
    pub max_unmap_descriptor_count: u32,
    /// OPTIMAL UNMAP GRANULARITY (bytes 28-31).
    pub optimal_unmap_granularity: u32,
    /// UNMAP GRANULARITY ALIGNMENT (bytes 32-35 bits 30-0), when UGAVALID
    /// (byte 32 bit 7) is set.
    pub unmap_granularity_alignment: Option<u32>,
    /// MAXIMUM WRITE SAME LENGTH (bytes 36-43).
    pub max_write_same_len: u64,
}

impl BlockLimits {
    /// Parses VPD page B0h.
    pub fn parse(buf: &[u8]) -> Result<BlockLimits, ParseError> {
        let (_, _, p) = page(buf, VpdPage::BLOCK_LIMITS, "VPD page 0xb0")?;
        let u32_at = |o| u32::try_from(field::<4>(p, o)).unwrap_or(0);
        let uga = u32_at(32);
        Ok(BlockLimits {
            wsnz: (field::<1>(p, 4) & 1) == 1,
            max_compare_and_write_len: u8::try_from(field::<1>(p, 5)).unwrap_or(0),
            optimal_transfer_granularity: u16::try_from(field::<2>(p, 6)).unwrap_or(0),
            max_transfer_len: u32_at(8),
            optimal_transfer_len: u32_at(12),
            max_prefetch_len: u32_at(16),
            max_unmap_lba_count: u32_at(20),
            max_unmap_descriptor_count: u32_at(24),
            optimal_unmap_granularity: u32_at(28),
            unmap_granularity_alignment: (uga & 0x8000_0000 != 0).then_some(uga & 0x7fff_ffff),
            max_write_same_len: field::<8>(p, 36),
        })
    }

    /// MAXIMUM TRANSFER LENGTH, or `None` when the target reports no limit.
    pub fn max_transfer_blocks(&self) -> Option<u32> {
        (self.max_transfer_len != 0).then_some(self.max_transfer_len)
    }

    /// OPTIMAL TRANSFER LENGTH, or `None` when not reported.
    pub fn optimal_transfer_blocks(&self) -> Option<u32> {
        (self.optimal_transfer_len != 0).then_some(self.optimal_transfer_len)
    }

    /// MAXIMUM WRITE SAME LENGTH, or `None` when the target reports no limit.
    pub fn max_write_same_blocks(&self) -> Option<u64> {
        (self.max_write_same_len != 0).then_some(self.max_write_same_len)
    }
}

wire_enum! {
    /// PROVISIONING TYPE (SBC-3 "Logical Block Provisioning VPD page",
    /// byte 6 bits 2-0).
    pub struct ProvisioningType(u8);
    /// Fully provisioned (or not reported).
    FULL = 0 => "FULLY PROVISIONED";
    /// Resource provisioned.
    RESOURCE = 1 => "RESOURCE PROVISIONED";
    /// Thin provisioned.
    THIN = 2 => "THIN PROVISIONED";
}

/// Logical block provisioning (SBC-3 "Logical Block Provisioning VPD
/// page"): whether and how the LU can deallocate blocks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct LogicalBlockProvisioning {
    /// THRESHOLD EXPONENT (byte 4).
    pub threshold_exponent: u8,
    /// LBPU (byte 5 bit 7): UNMAP supported.
    pub lbpu: bool,
    /// LBPWS (byte 5 bit 6): WRITE SAME(16) with UNMAP supported.
    pub lbpws: bool,
    /// LBPWS10 (byte 5 bit 5): WRITE SAME(10) with UNMAP supported.
    pub lbpws10: bool,
    /// LBPRZ (byte 5 bits 4-2, SBC-4; SBC-3 defines only bit 2, which is
    /// bit 0 here): 0 = unmapped blocks read as anything, 1 = read as
    /// zeros, 2 = read as the provisioning initialization pattern.
    pub lbprz: u8,
    /// ANC_SUP (byte 5 bit 1): ANCHOR supported.
    pub anc_sup: bool,
    /// DP (byte 5 bit 0): a provisioning group descriptor follows.
    pub dp: bool,
    /// MINIMUM PERCENTAGE (byte 6 bits 7-3, SBC-4).
    pub minimum_percentage: u8,
    /// PROVISIONING TYPE (byte 6 bits 2-0).
    pub provisioning_type: ProvisioningType,
    /// THRESHOLD PERCENTAGE (byte 7, SBC-4).
    pub threshold_percentage: u8,
    /// The provisioning group descriptor (a designator, bytes 8-n), when
    /// DP is set and it is present.
    pub provisioning_group: Option<Designator>,
}

impl LogicalBlockProvisioning {
    /// Parses VPD page B2h. The page must hold at least bytes 4-7.
    pub fn parse(buf: &[u8]) -> Result<LogicalBlockProvisioning, ParseError> {
        const WHAT: &str = "VPD page 0xb2";
        let (_, _, p) = page(buf, VpdPage::LOGICAL_BLOCK_PROVISIONING, WHAT)?;
        let mut r = Reader::new(WHAT, "page", p.get(4..).unwrap_or(&[]));
        let threshold_exponent = r.u8("threshold exponent")?;
        let b5 = r.u8("LBPU")?;
        let b6 = r.u8("provisioning type")?;
        let threshold_percentage = r.u8("threshold percentage")?;
        let dp = bit(b5, 0);
        let provisioning_group = if dp && !r.is_empty() { Some(Designator::read(&mut r)?) } else { None };
        Ok(LogicalBlockProvisioning {
            threshold_exponent,
            lbpu: bit(b5, 7),
            lbpws: bit(b5, 6),
            lbpws10: bit(b5, 5),
            lbprz: (b5 >> 2) & 0x07,
            anc_sup: bit(b5, 1),
            dp,
            minimum_percentage: b6 >> 3,
            provisioning_type: ProvisioningType(b6 & 0x07),
            threshold_percentage,
            provisioning_group,
        })
    }

    /// True if unmapped blocks read back as zeros (LBPRZ = 1), so UNMAP
    /// can implement "write zeroes".
    pub fn unmapped_reads_zero(&self) -> bool {
        self.lbprz == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::hex;
    use proptest::prelude::*;

    // Captured from tgtd 1.0.85 (INQUIRY EVPD, allocation length 256):
    // LUN 1 is a 256 MiB disk, LUN 2 a 3 GiB disk with thin_provisioning=1,
    // LUN 3 has --params scsi_id=MYID123,scsi_sn=SN999.
    const TGTD_VPD00: &str = "00000006008083b0b1b2";
    const TGTD_VPD80_LUN1: &str = "00800024202020202020202020202020202020202020202020202020202020202020626561663131";
    const TGTD_VPD80_LUN3: &str = "0080002420202020202020202020202020202020202020202020202020202020202020534e393939";
    const TGTD_VPD83_LUN1: &str = "00830048020100244945542020202020303030313030303100000000000000000000000000000000000000000103000830000001000000010103001060000000000000000e00000000010001";
    const TGTD_VPD83_LUN3: &str = "00830048020100244d5949443132330000000000000000000000000000000000000000000000000000000000010300083000000100000003010300106000000000000000000000000000d123";
    const TGTD_VPDB0_LUN1: &str = "00b0003c008000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";
    const TGTD_VPDB0_LUN2: &str = "00b0003c00800000000000000000000000000000ffffffffffffffff000000000000000000000000000000000000000000000000000000000000000000000000";
    const TGTD_VPDB2_LUN1: &str = "00b2000400000000";
    const TGTD_VPDB2_LUN2: &str = "00b2000400e40200";

    #[test]
    fn tgtd_supported_pages() {
        let s = SupportedPages::parse(&hex(TGTD_VPD00)).unwrap();
        assert_eq!(s.device_type, DeviceType::DIRECT_ACCESS);
        assert_eq!(s.pages, [0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2].map(VpdPage).to_vec());
        assert!(s.supports(VpdPage::LOGICAL_BLOCK_PROVISIONING));
        assert!(!s.supports(VpdPage::EXTENDED_INQUIRY));
    }

    #[test]
    fn every_page_the_standards_define_has_a_description() {
        // SPC-5's table of VPD page codes and SBC-4's (with SBC-5's B9h):
        // everything but the reserved codes 8Eh, 93h-AFh and BAh-BFh.
        let reserved = |c: u8| c == 0x8e || (0x93..=0xaf).contains(&c) || (0xba..=0xbf).contains(&c);
        for code in 0..=u8::MAX {
            let p = VpdPage(code);
            assert_eq!(p.description().is_none(), reserved(code), "page {code:#04x}: {:?}", p.description());
        }
        // A name of its own for each single page, not only its range.
        for code in (0x80..=0x92).chain(0xb0..=0xb9).filter(|c| *c != 0x8e) {
            assert!(VpdPage(code).name().is_some(), "page {code:#04x} has no name");
        }
        assert_eq!(VpdPage::REFERRALS.to_string(), "REFERRALS");
        assert_eq!(VpdPage(0x05).description(), Some("ASCII INFORMATION"));
        assert_eq!(VpdPage(0xc1).description(), Some("VENDOR SPECIFIC"));
    }

    #[test]
    fn tgtd_serial() {
        let s = UnitSerialNumber::parse(&hex(TGTD_VPD80_LUN1)).unwrap();
        assert_eq!(s.serial, "beaf11");
        assert_eq!(s.raw.len(), 36);
        assert_eq!(UnitSerialNumber::parse(&hex(TGTD_VPD80_LUN3)).unwrap().serial, "SN999");
    }

    #[test]
    fn tgtd_device_identification() {
        let d = DeviceIdentification::parse(&hex(TGTD_VPD83_LUN1)).unwrap();
        assert_eq!(d.designators.len(), 3);
        let t10 = &d.designators[0];
        assert_eq!(t10.designator_type, DesignatorType::T10_VENDOR_ID);
        assert_eq!(t10.code_set, CodeSet::ASCII);
        assert_eq!(t10.association, Association::LOGICAL_UNIT);
        assert!(!t10.piv);
        assert_eq!(t10.protocol(), None);
        assert_eq!(t10.value.len(), 36); // "IET     00010001" + 20 NULs
        assert_eq!(t10.identity().unwrap().as_str(), "t10.IET     00010001");
        let naa3 = &d.designators[1];
        assert_eq!(naa3.naa(), Some(3));
        assert_eq!(naa3.identity().unwrap().as_str(), "naa.3000000100000001");
        let naa6 = &d.designators[2];
        assert_eq!(naa6.naa(), Some(6));
        assert_eq!(naa6.code_set, CodeSet::BINARY);
        assert_eq!(d.lu_designator(), Some(naa6));
        assert_eq!(d.lu_identity().unwrap().to_string(), "naa.60000000000000000e00000000010001");
        assert_eq!(d.relative_target_port(), None);
        assert_eq!(d.target_port_group(), None);

        let d = DeviceIdentification::parse(&hex(TGTD_VPD83_LUN3)).unwrap();
        // tgtd puts a configured scsi_id where the T10 VENDOR
        // IDENTIFICATION goes and leaves the vendor-specific part blank:
        // no identity from it.
        assert_eq!(&d.designators[0].value[..8], b"MYID123\0");
        assert_eq!(d.designators[0].identity(), None);
        assert_eq!(d.lu_identity().unwrap().as_str(), "naa.6000000000000000000000000000d123");
    }

    #[test]
    fn tgtd_naa_collides_for_similar_scsi_ids() {
        // tgtd derives its NAA 6 designator from the hex digits of scsi_id:
        // LUN 2 with scsi_id=XYID123 and LUN 3 with scsi_id=MYID123 report
        // the same NAA, so the LU identity alone would merge two different
        // LUs. The T10 designator (no identity: see above) and the serial
        // number (VPD 80h) differ; the multipath device compares the serial.
        const TGTD_VPD83_XYID123: &str = "0083004802010024585949443132330000000000000000000000000000000000000000000000000000000000010300083000000100000002010300106000000000000000000000000000d123";
        let a = DeviceIdentification::parse(&hex(TGTD_VPD83_XYID123)).unwrap();
        let b = DeviceIdentification::parse(&hex(TGTD_VPD83_LUN3)).unwrap();
        assert_eq!(a.lu_identity(), b.lu_identity());
        assert_ne!(a.designators[0].value, b.designators[0].value);
        assert_ne!(a.designators[1].identity(), b.designators[1].identity());
    }

    #[test]
    fn tgtd_short_allocation_is_truncated() {
        // INQUIRY EVPD 83h with allocation length 8: tgtd sends 8 bytes.
        let e = DeviceIdentification::parse(&hex("0083004802010024")).unwrap_err();
        assert_eq!(e.required_len(), Some(76));
        assert_eq!(e.to_string(), "VPD page 0x83: header says 76 bytes, 8 received (allocation length too small?)");
        assert_eq!(required_len(&hex("0083004802010024")), Some(76));
        assert_eq!(required_len(&[0, 0x83, 0]), None);
    }

    #[test]
    fn tgtd_block_limits_and_provisioning() {
        let b = BlockLimits::parse(&hex(TGTD_VPDB0_LUN1)).unwrap();
        assert_eq!(b.max_compare_and_write_len, 0x80);
        assert_eq!(b.max_transfer_blocks(), None);
        assert_eq!(b.max_unmap_lba_count, 0);
        assert_eq!(b.unmap_granularity_alignment, None);
        assert_eq!(b.max_write_same_blocks(), None);
        let b = BlockLimits::parse(&hex(TGTD_VPDB0_LUN2)).unwrap();
        assert_eq!(b.max_unmap_lba_count, u32::MAX);
        assert_eq!(b.max_unmap_descriptor_count, u32::MAX);

        let p = LogicalBlockProvisioning::parse(&hex(TGTD_VPDB2_LUN1)).unwrap();
        assert!(!p.lbpu && !p.lbpws && !p.dp);
        assert_eq!(p.provisioning_type, ProvisioningType::FULL);
        let p = LogicalBlockProvisioning::parse(&hex(TGTD_VPDB2_LUN2)).unwrap();
        assert!(p.lbpu && p.lbpws && p.lbpws10 && !p.anc_sup && !p.dp);
        assert_eq!(p.lbprz, 1);
        assert!(p.unmapped_reads_zero());
        assert_eq!(p.provisioning_type, ProvisioningType::THIN);
        assert_eq!(p.threshold_exponent, 0);
        assert_eq!(p.provisioning_group, None);
    }

    #[test]
    fn block_limits_all_fields() {
        let mut b = vec![0x00, 0xb0, 0x00, 0x3c];
        b.extend([1, 2, 0, 8]); // WSNZ, MCAWL 2, granularity 8
        b.extend(2048u32.to_be_bytes());
        b.extend(256u32.to_be_bytes());
        b.extend(0u32.to_be_bytes());
        b.extend(0x40_0000u32.to_be_bytes());
        b.extend(64u32.to_be_bytes());
        b.extend(8u32.to_be_bytes());
        b.extend((0x8000_0000u32 | 3).to_be_bytes());
        b.extend(0x1_0000_0000u64.to_be_bytes());
        b.resize(64, 0);
        let l = BlockLimits::parse(&b).unwrap();
        assert!(l.wsnz);
        assert_eq!(l.max_compare_and_write_len, 2);
        assert_eq!(l.optimal_transfer_granularity, 8);
        assert_eq!(l.max_transfer_blocks(), Some(2048));
        assert_eq!(l.optimal_transfer_blocks(), Some(256));
        assert_eq!(l.max_unmap_lba_count, 0x40_0000);
        assert_eq!(l.max_unmap_descriptor_count, 64);
        assert_eq!(l.optimal_unmap_granularity, 8);
        assert_eq!(l.unmap_granularity_alignment, Some(3));
        assert_eq!(l.max_write_same_blocks(), Some(0x1_0000_0000));
        // An SBC-2 length page (0Ch): later fields are 0.
        let mut short = b[..16].to_vec();
        short[3] = 0x0c;
        let l = BlockLimits::parse(&short).unwrap();
        assert_eq!(l.optimal_transfer_blocks(), Some(256));
        assert_eq!(l.max_unmap_lba_count, 0);
    }

    fn desig(code_set: u8, assoc_type: u8, value: &[u8]) -> Vec<u8> {
        let mut d = vec![code_set, assoc_type, 0, value.len() as u8];
        d.extend_from_slice(value);
        d
    }

    fn page83(ds: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = ds.concat();
        let mut p = vec![0, 0x83];
        p.extend((body.len() as u16).to_be_bytes());
        p.extend(body);
        p
    }

    #[test]
    fn lu_designator_preference() {
        let lio_naa6 = hex("6001405a2b3c4d5e6f70811223344556");
        let naa5 = hex("5000c50012345678");
        let naa2 = hex("2000001122334455");
        let eui = hex("0011223344556677");
        let t10 = desig(2, 0x01, b"LIO-ORG disk0   ");
        let name = desig(3, 0x08, b"iqn.2003-01.org.x:lu\0\0\0\0");
        let port_naa6 = desig(1, 0x13, &lio_naa6); // association target port
        let rtp = desig(0x51, 0x94, &[0, 0, 0, 1]); // PIV, iSCSI, target port
        let tpg = desig(1, 0x15, &[0, 0, 0, 7]);

        let d = DeviceIdentification::parse(&page83(&[
            t10.clone(),
            name.clone(),
            desig(1, 0x02, &eui),
            desig(1, 0x03, &naa2),
            desig(1, 0x03, &naa5),
            port_naa6.clone(),
            desig(1, 0x03, &lio_naa6),
            rtp.clone(),
            tpg.clone(),
        ]))
        .unwrap();
        assert_eq!(d.lu_identity().unwrap().as_str(), "naa.6001405a2b3c4d5e6f70811223344556");
        assert_eq!(d.relative_target_port(), Some(1));
        assert_eq!(d.target_port_group(), Some(7));
        assert_eq!(d.designators[7].protocol(), Some(ProtocolId::ISCSI));

        let pick = |ds: &[Vec<u8>]| DeviceIdentification::parse(&page83(ds)).unwrap().lu_identity().map(String::from);
        assert_eq!(pick(&[desig(1, 0x03, &naa2), desig(1, 0x03, &naa5)]).unwrap(), "naa.5000c50012345678");
        assert_eq!(
            pick(&[desig(1, 0x03, &hex("3000000100000001")), desig(1, 0x03, &naa2)]).unwrap(),
            "naa.2000001122334455"
        );
        assert_eq!(pick(&[t10.clone(), name.clone(), desig(1, 0x02, &eui)]).unwrap(), "eui.0011223344556677");
        assert_eq!(pick(&[t10.clone(), name.clone()]).unwrap(), "iqn.2003-01.org.x:lu");
        assert_eq!(pick(std::slice::from_ref(&t10)).unwrap(), "t10.LIO-ORG disk0");
        // Only port designators: no LU identity.
        assert_eq!(pick(&[port_naa6, rtp, tpg]), None);
        // Malformed ones are skipped: NAA 6 of 8 bytes, EUI-64 as ASCII,
        // SCSI name string as binary, empty T10 id.
        assert_eq!(
            pick(&[
                desig(1, 0x03, &hex("6001405a2b3c4d5e")),
                desig(2, 0x02, &eui),
                desig(1, 0x08, b"iqn.x"),
                desig(2, 0x01, b"        "),
                t10,
            ])
            .unwrap(),
            "t10.LIO-ORG disk0"
        );
    }

    #[test]
    fn page_errors() {
        assert_eq!(
            DeviceIdentification::parse(&hex(TGTD_VPDB2_LUN2)).unwrap_err().to_string(),
            "VPD page 0x83: page code is 0xb2"
        );
        // Designator length 40 with 12 bytes left in the page.
        let mut p = vec![0, 0x83, 0, 16, 1, 3, 0, 40];
        p.extend([0; 12]);
        assert_eq!(
            DeviceIdentification::parse(&p).unwrap_err().to_string(),
            "VPD page 0x83: designator length 40 exceeds page (12 bytes left)"
        );
        // A designator header cut by the page end.
        let p = [0, 0x83, 0, 2, 1, 3];
        assert!(DeviceIdentification::parse(&p).is_err());
        // B2 with a page length below 4.
        assert_eq!(
            LogicalBlockProvisioning::parse(&[0, 0xb2, 0, 2, 0, 0]).unwrap_err().to_string(),
            "VPD page 0xb2: provisioning type needs 1 bytes, 0 left"
        );
        assert!(SupportedPages::parse(&[0, 0]).is_err());
    }

    #[test]
    fn provisioning_group_descriptor() {
        let mut p = vec![0, 0xb2, 0, 0];
        p.extend([7, 0x87, 0x09, 50]); // exp 7, LBPU LBPRZ=1 ANC_SUP DP, min% 1, resource, 50%
        p.extend(desig(1, 0x03, &hex("5000c50012345678")));
        p[3] = (p.len() - 4) as u8;
        let l = LogicalBlockProvisioning::parse(&p).unwrap();
        assert!(l.lbpu && l.anc_sup && l.dp && !l.lbpws);
        assert_eq!(l.lbprz, 1);
        assert_eq!(l.minimum_percentage, 1);
        assert_eq!(l.provisioning_type, ProvisioningType::RESOURCE);
        assert_eq!(l.threshold_percentage, 50);
        assert_eq!(l.provisioning_group.unwrap().naa(), Some(5));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = required_len(&b);
            let _ = SupportedPages::parse(&b);
            let _ = UnitSerialNumber::parse(&b);
            if let Ok(d) = DeviceIdentification::parse(&b) {
                let _ = d.lu_identity();
                let _ = d.relative_target_port();
            }
            let _ = BlockLimits::parse(&b);
            let _ = LogicalBlockProvisioning::parse(&b);
        }

        #[test]
        fn well_headed_pages_never_panic(page in prop::sample::select(vec![0u8, 0x80, 0x83, 0xb0, 0xb2]),
                                         body in proptest::collection::vec(any::<u8>(), 0..120)) {
            let mut b = vec![0, page];
            b.extend((body.len() as u16).to_be_bytes());
            b.extend(&body);
            let _ = SupportedPages::parse(&b);
            let _ = UnitSerialNumber::parse(&b);
            if let Ok(d) = DeviceIdentification::parse(&b) {
                for x in &d.designators { let _ = x.identity(); }
                let _ = d.lu_identity();
            }
            let _ = BlockLimits::parse(&b);
            let _ = LogicalBlockProvisioning::parse(&b);
        }

        #[test]
        fn designator_round_trip(ds in proptest::collection::vec((0u8..=255, 0u8..=255, proptest::collection::vec(any::<u8>(), 0..40)), 0..8)) {
            let encoded: Vec<Vec<u8>> = ds.iter().map(|(a, b, v)| desig(*a, *b & 0xbf, v)).collect();
            let d = DeviceIdentification::parse(&page83(&encoded)).unwrap();
            prop_assert_eq!(d.designators.len(), ds.len());
            for (got, (a, b, v)) in d.designators.iter().zip(&ds) {
                prop_assert_eq!(got.code_set.0, a & 0x0f);
                prop_assert_eq!(got.protocol_identifier.0, a >> 4);
                prop_assert_eq!(got.piv, b & 0x80 != 0);
                prop_assert_eq!(got.association.0, (b >> 4) & 3);
                prop_assert_eq!(got.designator_type.0, b & 0x0f);
                prop_assert_eq!(&got.value, v);
            }
        }
    }
}
