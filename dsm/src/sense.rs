//! Sense data (SPC-4 "Sense data"): what a target returns with CHECK
//! CONDITION to say what went wrong.
//!
//! Two formats exist: fixed (response codes 70h current / 71h deferred,
//! SPC-4 "Fixed format sense data") and descriptor (72h / 73h, SPC-4
//! "Descriptor format sense data"). Both are parsed into one [`Sense`].
//!
//! The parser is lenient about length on purpose: the sense key and
//! ASC/ASCQ drive error handling (retry, fail over, or fail the I/O), and a
//! target that announces more sense bytes than it sends, or a broken
//! descriptor, must not cost us the key. Such data parses with
//! [`Sense::truncated`] set and the missing fields absent. Only data too
//! short to hold a sense key, or with an unknown response code, is an
//! error.

use core::fmt;

use crate::asc::AscAscq;
use crate::codec::{Reader, bit};
use crate::error::ParseError;
use crate::macros::wire_enum;

wire_enum! {
    /// Sense key (SPC-4 "Sense key descriptions"): the coarse class of the
    /// error, 4 bits.
    pub struct SenseKey(u8);
    /// No error to report (maybe a progress indication or filemark).
    NO_SENSE = 0x0 => "NO SENSE";
    /// The command succeeded after recovery by the target.
    RECOVERED_ERROR = 0x1 => "RECOVERED ERROR";
    /// The LU cannot be accessed now (becoming ready, offline, ALUA state).
    NOT_READY = 0x2 => "NOT READY";
    /// Unrecovered media error; other paths lead to the same medium.
    MEDIUM_ERROR = 0x3 => "MEDIUM ERROR";
    /// Non-recoverable hardware failure in the target.
    HARDWARE_ERROR = 0x4 => "HARDWARE ERROR";
    /// The command or its parameters were invalid; retrying won't help.
    ILLEGAL_REQUEST = 0x5 => "ILLEGAL REQUEST";
    /// Something changed (reset, reservations, capacity, LUN inventory);
    /// the command was not executed and may be retried.
    UNIT_ATTENTION = 0x6 => "UNIT ATTENTION";
    /// Write protected or access denied.
    DATA_PROTECT = 0x7 => "DATA PROTECT";
    /// Blank or end-of-data on write-once/sequential media.
    BLANK_CHECK = 0x8 => "BLANK CHECK";
    /// Vendor specific.
    VENDOR_SPECIFIC = 0x9 => "VENDOR SPECIFIC";
    /// EXTENDED COPY / COPY aborted.
    COPY_ABORTED = 0xa => "COPY ABORTED";
    /// The target aborted the command (often transport errors: digest,
    /// data phase); retry, possibly on another path.
    ABORTED_COMMAND = 0xb => "ABORTED COMMAND";
    /// Volume overflow (sequential devices).
    VOLUME_OVERFLOW = 0xd => "VOLUME OVERFLOW";
    /// Source data did not match (VERIFY, COMPARE AND WRITE).
    MISCOMPARE = 0xe => "MISCOMPARE";
    /// A command completed with information to report.
    COMPLETED = 0xf => "COMPLETED";
}

/// Which of the two sense data layouts a [`Sense`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SenseFormat {
    /// Response code 70h/71h.
    Fixed,
    /// Response code 72h/73h.
    Descriptor,
}

/// The sense-key specific field (SPC-4 "Sense key specific field"), 3
/// bytes whose meaning depends on the sense key. Present only when its
/// SKSV bit is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SenseKeySpecific {
    /// ILLEGAL REQUEST: which byte (and bit) of the CDB or parameter list
    /// was wrong.
    FieldPointer {
        /// C/D: true if the error is in the CDB, false if in the parameter
        /// data.
        in_cdb: bool,
        /// Bit within the byte (BPV set), or `None`.
        bit: Option<u8>,
        /// Byte offset of the field in error.
        byte: u16,
    },
    /// RECOVERED, MEDIUM or HARDWARE ERROR: retries the target made.
    ActualRetryCount(u16),
    /// NO SENSE or NOT READY: progress of the operation in progress, as
    /// a fraction of 65536.
    Progress(u16),
    /// COPY ABORTED: where in the parameter list the copy failed.
    SegmentPointer {
        /// SD: the pointer is relative to a segment descriptor.
        segment_descriptor: bool,
        /// Bit within the byte (BPV set), or `None`.
        bit: Option<u8>,
        /// Byte offset.
        byte: u16,
    },
    /// UNIT ATTENTION: the unit attention queue overflowed (more unit
    /// attentions were lost).
    UnitAttentionQueueOverflow(bool),
    /// Another sense key: the three bytes as received.
    Other([u8; 3]),
}

impl SenseKeySpecific {
    /// Decodes the 3-byte field for `key`; `None` when SKSV (byte 0 bit 7)
    /// is clear.
    pub fn decode(key: SenseKey, b: [u8; 3]) -> Option<SenseKeySpecific> {
        let [b0, b1, b2] = b;
        if !bit(b0, 7) {
            return None;
        }
        let value = u16::from_be_bytes([b1, b2]);
        let bit_ptr = if bit(b0, 3) { Some(b0 & 0x07) } else { None };
        Some(match key {
            SenseKey::ILLEGAL_REQUEST => {
                SenseKeySpecific::FieldPointer { in_cdb: bit(b0, 6), bit: bit_ptr, byte: value }
            }
            SenseKey::RECOVERED_ERROR | SenseKey::MEDIUM_ERROR | SenseKey::HARDWARE_ERROR => {
                SenseKeySpecific::ActualRetryCount(value)
            }
            SenseKey::NO_SENSE | SenseKey::NOT_READY => SenseKeySpecific::Progress(value),
            SenseKey::COPY_ABORTED => {
                SenseKeySpecific::SegmentPointer { segment_descriptor: bit(b0, 5), bit: bit_ptr, byte: value }
            }
            SenseKey::UNIT_ATTENTION => SenseKeySpecific::UnitAttentionQueueOverflow(bit(b0, 0)),
            _ => SenseKeySpecific::Other(b),
        })
    }
}

/// One descriptor of descriptor-format sense data, as received (SPC-4
/// "Sense data descriptor format"): the type byte and the bytes after the
/// 2-byte header. The well-known ones are also decoded into [`Sense`]'s
/// fields.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SenseDescriptor {
    /// DESCRIPTOR TYPE (00h information, 01h command-specific, 02h sense
    /// key specific, 03h FRU, 04h stream commands, 05h block commands, ...).
    pub kind: u8,
    /// The descriptor's bytes after TYPE and ADDITIONAL LENGTH.
    pub data: Vec<u8>,
}

/// Parsed sense data.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Sense {
    /// Fixed or descriptor layout.
    pub format: SenseFormat,
    /// Deferred error (71h/73h): it belongs to an earlier command, e.g. a
    /// cached write that failed later; the current command did not fail
    /// for this reason.
    pub deferred: bool,
    /// Sense key.
    pub key: SenseKey,
    /// Additional sense code (0 when not received).
    pub asc: u8,
    /// Additional sense code qualifier (0 when not received).
    pub ascq: u8,
    /// INFORMATION (e.g. the first LBA in error), when valid: fixed format
    /// VALID bit, or an information descriptor with VALID set.
    pub information: Option<u64>,
    /// COMMAND-SPECIFIC INFORMATION: present in fixed format when received
    /// and non-zero; in descriptor format when the descriptor is present.
    pub command_specific: Option<u64>,
    /// The sense-key specific field, when SKSV is set.
    pub sense_key_specific: Option<SenseKeySpecific>,
    /// FIELD REPLACEABLE UNIT CODE, when non-zero.
    pub fru: Option<u8>,
    /// FILEMARK (fixed format, or stream commands descriptor).
    pub filemark: bool,
    /// EOM (fixed format, or stream commands descriptor).
    pub eom: bool,
    /// ILI: incorrect length indicator (fixed format, or stream/block
    /// commands descriptor).
    pub ili: bool,
    /// SDAT_OVFL: the target had more sense data than fit.
    pub sdat_ovfl: bool,
    /// The data ended before the ADDITIONAL SENSE LENGTH said, or inside a
    /// descriptor; fields that lay beyond are absent.
    pub truncated: bool,
    /// All descriptors of descriptor-format sense (empty for fixed format).
    pub descriptors: Vec<SenseDescriptor>,
}

const WHAT: &str = "sense data";

fn byte_at(d: &[u8], i: usize) -> Option<u8> {
    d.get(i).copied()
}

fn array_at<const N: usize>(d: &[u8], i: usize) -> Option<[u8; N]> {
    d.get(i..i.checked_add(N)?).and_then(|s| <[u8; N]>::try_from(s).ok())
}

impl Sense {
    /// Current, fixed-format sense with only key and ASC/ASCQ set (for
    /// tests and for synthesising errors above the transport).
    pub fn new(key: SenseKey, asc: u8, ascq: u8) -> Sense {
        Sense {
            format: SenseFormat::Fixed,
            deferred: false,
            key,
            asc,
            ascq,
            information: None,
            command_specific: None,
            sense_key_specific: None,
            fru: None,
            filemark: false,
            eom: false,
            ili: false,
            sdat_ovfl: false,
            truncated: false,
            descriptors: Vec::new(),
        }
    }

    /// Parses sense data in fixed or descriptor format.
    ///
    /// Errors only when the data is too short to hold a sense key or the
    /// response code is not 70h-73h (7Fh, vendor-specific format, is not
    /// understood).
    pub fn parse(buf: &[u8]) -> Result<Sense, ParseError> {
        let mut r = Reader::new(WHAT, WHAT, buf);
        let b0 = r.u8("response code")?;
        match b0 & 0x7f {
            0x70 | 0x71 => Self::parse_fixed(buf, b0 & 0x7f == 0x71),
            0x72 | 0x73 => Self::parse_descriptor(buf, b0 & 0x7f == 0x73),
            code => Err(ParseError::Invalid {
                what: WHAT,
                field: "response code",
                value: u64::from(code),
                problem: "is not 70h-73h (fixed or descriptor format)",
            }),
        }
    }

    /// The part of `buf` the ADDITIONAL SENSE LENGTH (byte 7) covers, and
    /// whether `buf` was shorter than that (or than the 8-byte header).
    fn announced(buf: &[u8]) -> (&[u8], bool) {
        match byte_at(buf, 7) {
            Some(add) => {
                let want = 8usize.saturating_add(usize::from(add));
                let have = buf.len().min(want);
                (buf.get(..have).unwrap_or(buf), buf.len() < want)
            }
            None => (buf, true),
        }
    }

    /// Fixed format (SPC-4 "Fixed format sense data"):
    /// byte 0 VALID | RESPONSE CODE, 2 FILEMARK EOM ILI SDAT_OVFL KEY,
    /// 3-6 INFORMATION, 7 ADDITIONAL SENSE LENGTH, 8-11 COMMAND-SPECIFIC,
    /// 12 ASC, 13 ASCQ, 14 FRU, 15-17 SKSV + sense key specific.
    fn parse_fixed(buf: &[u8], deferred: bool) -> Result<Sense, ParseError> {
        let mut r = Reader::new(WHAT, WHAT, buf);
        let b0 = r.u8("response code")?;
        r.skip(1, "obsolete byte 1")?;
        let b2 = r.u8("sense key")?;
        let (d, truncated) = Self::announced(buf);
        let key = SenseKey(b2 & 0x0f);
        let information = match array_at::<4>(d, 3) {
            Some(i) if bit(b0, 7) => Some(u64::from(u32::from_be_bytes(i))),
            _ => None,
        };
        let command_specific = array_at::<4>(d, 8).map(u32::from_be_bytes).filter(|v| *v != 0).map(u64::from);
        Ok(Sense {
            format: SenseFormat::Fixed,
            deferred,
            key,
            asc: byte_at(d, 12).unwrap_or(0),
            ascq: byte_at(d, 13).unwrap_or(0),
            information,
            command_specific,
            sense_key_specific: array_at::<3>(d, 15).and_then(|b| SenseKeySpecific::decode(key, b)),
            fru: byte_at(d, 14).filter(|f| *f != 0),
            filemark: bit(b2, 7),
            eom: bit(b2, 6),
            ili: bit(b2, 5),
            sdat_ovfl: bit(b2, 4),
            truncated,
            descriptors: Vec::new(),
        })
    }

    /// Descriptor format (SPC-4 "Descriptor format sense data"): byte 0
    /// RESPONSE CODE, 1 KEY, 2 ASC, 3 ASCQ, 4 SDAT_OVFL, 7 ADDITIONAL SENSE
    /// LENGTH, then descriptors of TYPE, ADDITIONAL LENGTH, data.
    fn parse_descriptor(buf: &[u8], deferred: bool) -> Result<Sense, ParseError> {
        let mut r = Reader::new(WHAT, WHAT, buf);
        r.skip(1, "response code")?;
        let key = SenseKey(r.u8("sense key")? & 0x0f);
        let (d, mut truncated) = Self::announced(buf);
        let mut s = Sense::new(key, byte_at(d, 2).unwrap_or(0), byte_at(d, 3).unwrap_or(0));
        s.format = SenseFormat::Descriptor;
        s.deferred = deferred;
        s.sdat_ovfl = byte_at(d, 4).is_some_and(|b| bit(b, 7));
        let mut r = Reader::new(WHAT, "sense data", d.get(8..).unwrap_or(&[]));
        while !r.is_empty() {
            let (Ok(kind), Ok(len)) = (r.u8("descriptor type"), r.u8("additional length")) else {
                truncated = true;
                break;
            };
            let Ok(mut body) = r.sub(usize::from(len), "descriptor additional length") else {
                truncated = true;
                break;
            };
            let data = body.rest();
            s.apply_descriptor(kind, data);
            s.descriptors.push(SenseDescriptor { kind, data: data.to_vec() });
        }
        s.truncated = truncated;
        Ok(s)
    }

    /// Folds a well-known descriptor into the summary fields. Descriptors
    /// whose length is not what SPC-4 defines are left only in
    /// `descriptors`.
    fn apply_descriptor(&mut self, kind: u8, data: &[u8]) {
        match (kind, data.len()) {
            // Information: VALID in byte 2 bit 7 (data[0]), value in bytes 4-11.
            (0x00, 10) if byte_at(data, 0).is_some_and(|b| bit(b, 7)) => {
                self.information = array_at::<8>(data, 2).map(u64::from_be_bytes);
            }
            // Command-specific information, bytes 4-11.
            (0x01, 10) => self.command_specific = array_at::<8>(data, 2).map(u64::from_be_bytes),
            // Sense key specific, bytes 4-6.
            (0x02, 6) => {
                self.sense_key_specific = array_at::<3>(data, 2).and_then(|b| SenseKeySpecific::decode(self.key, b));
            }
            // Field replaceable unit, byte 3.
            (0x03, 2) => self.fru = byte_at(data, 1).filter(|f| *f != 0),
            // Stream commands: FILEMARK, EOM, ILI in byte 3.
            (0x04, 2) => {
                let b = byte_at(data, 1).unwrap_or(0);
                self.filemark = bit(b, 7);
                self.eom = bit(b, 6);
                self.ili = bit(b, 5);
            }
            // Block commands: ILI in byte 3.
            (0x05, 2) => self.ili = byte_at(data, 1).is_some_and(|b| bit(b, 5)),
            _ => {}
        }
    }

    /// Sense data from the data segment of an iSCSI SCSI Response PDU
    /// (RFC 7143 section 11.4.7): a 2-byte SenseLength, the sense data,
    /// then possibly response data, which is ignored.
    ///
    /// `Ok(None)` when the segment is empty or SenseLength is 0 (a GOOD
    /// status carries no sense). A SenseLength larger than the segment is
    /// an error: it is an iSCSI framing fault, not a short sense buffer.
    pub fn from_iscsi_segment(segment: &[u8]) -> Result<Option<Sense>, ParseError> {
        if segment.is_empty() {
            return Ok(None);
        }
        let mut r = Reader::new("iSCSI sense segment", "data segment", segment);
        let len = r.u16("SenseLength")?;
        if len == 0 {
            return Ok(None);
        }
        let mut sense = r.sub(usize::from(len), "SenseLength")?;
        Sense::parse(sense.rest()).map(Some)
    }

    /// ASC and ASCQ as one value.
    pub fn asc_ascq(&self) -> AscAscq {
        AscAscq::new(self.asc, self.ascq)
    }

    /// True if the ASC/ASCQ equals `code`.
    pub fn is(&self, code: AscAscq) -> bool {
        self.asc_ascq() == code
    }
}

impl fmt::Display for Sense {
    /// `NOT READY (02): LOGICAL UNIT NOT READY, INITIALIZING COMMAND
    /// REQUIRED (04/02)`, with ` [deferred]` appended for deferred errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.key.name().unwrap_or("RESERVED SENSE KEY");
        write!(f, "{name} ({:02X}): {}", self.key.0, self.asc_ascq())?;
        if self.deferred {
            f.write_str(" [deferred]")?;
        }
        Ok(())
    }
}

/// Descriptor-format sense in the SPC-4 layout: 72h, key 3 (MEDIUM
/// ERROR), 11/00, additional length 36: information descriptor (VALID, LBA
/// 0x1_0000_0000), command specific, sense key specific (retry count 7),
/// block commands (ILI). Shared by the parser's and the classifier's tests.
#[cfg(test)]
pub(crate) const DESCRIPTOR_MEDIUM_ERROR: [u8; 44] = [
    0x72, 0x03, 0x11, 0x00, 0, 0, 0, 36, //
    0x00, 0x0a, 0x80, 0, 0, 0, 0, 1, 0, 0, 0, 0, //
    0x01, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, //
    0x02, 0x06, 0, 0, 0x80, 0, 7, 0, //
    0x05, 0x02, 0, 0x20,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::hex;
    use proptest::prelude::*;

    // Captured from tgtd 1.0.85 (Debian tgt 1:1.0.85-1+deb12u1) over iSCSI,
    // sense bytes after the SenseLength prefix.
    const TGTD_UA_POWER_ON: &str = "700006000000000a00000000290000000000"; // first TUR of a nexus
    const TGTD_NOT_READY: &str = "700002000000000a00000000040100000000"; // LU online=0
    const TGTD_BAD_OPCODE: &str = "700005000000000a00000000200000000000"; // READ CAPACITY to LUN 0
    const TGTD_LBA_RANGE: &str = "700005000000000a00000000210000000000"; // READ(16) past end
    const TGTD_BAD_LUN: &str = "700005000000000a00000000250000000000"; // TUR to LUN 5
    const TGTD_PREEMPTED: &str = "700006000000000a000000002a0300000000"; // after PR OUT PREEMPT

    #[test]
    fn tgtd_fixed_sense() {
        let s = Sense::parse(&hex(TGTD_UA_POWER_ON)).unwrap();
        assert_eq!(s.format, SenseFormat::Fixed);
        assert!(!s.deferred && !s.truncated);
        assert_eq!(s.key, SenseKey::UNIT_ATTENTION);
        assert!(s.is(AscAscq::POWER_ON_RESET_OR_BUS_DEVICE_RESET));
        assert_eq!(s.information, None);
        assert_eq!(s.command_specific, None);
        assert_eq!(s.sense_key_specific, None);
        assert_eq!(s.to_string(), "UNIT ATTENTION (06): POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (29/00)");

        let s = Sense::parse(&hex(TGTD_NOT_READY)).unwrap();
        assert_eq!(s.key, SenseKey::NOT_READY);
        assert_eq!(s.to_string(), "NOT READY (02): LOGICAL UNIT IS IN PROCESS OF BECOMING READY (04/01)");
        let codes = [
            (TGTD_BAD_OPCODE, AscAscq::INVALID_COMMAND_OPERATION_CODE),
            (TGTD_LBA_RANGE, AscAscq::LBA_OUT_OF_RANGE),
            (TGTD_BAD_LUN, AscAscq::LU_NOT_SUPPORTED),
        ];
        for (h, code) in codes {
            let s = Sense::parse(&hex(h)).unwrap();
            assert_eq!(s.key, SenseKey::ILLEGAL_REQUEST);
            assert!(s.is(code), "{s}");
        }
        let s = Sense::parse(&hex(TGTD_PREEMPTED)).unwrap();
        assert_eq!(s.to_string(), "UNIT ATTENTION (06): RESERVATIONS PREEMPTED (2A/03)");
    }

    #[test]
    fn iscsi_segment() {
        let mut seg = vec![0, 18];
        seg.extend(hex(TGTD_NOT_READY));
        seg.extend([0, 0]); // padding / response data after the sense
        let s = Sense::from_iscsi_segment(&seg).unwrap().unwrap();
        assert!(s.is(AscAscq::LU_BECOMING_READY));
        assert_eq!(Sense::from_iscsi_segment(&[]).unwrap(), None);
        assert_eq!(Sense::from_iscsi_segment(&[0, 0]).unwrap(), None);
        assert_eq!(
            Sense::from_iscsi_segment(&[0]).unwrap_err().to_string(),
            "iSCSI sense segment: SenseLength needs 2 bytes, 1 left"
        );
        assert_eq!(
            Sense::from_iscsi_segment(&[0, 40, 0x70, 0, 6]).unwrap_err().to_string(),
            "iSCSI sense segment: SenseLength 40 exceeds data segment (3 bytes left)"
        );
    }

    #[test]
    fn fixed_with_all_fields() {
        // Deferred MEDIUM ERROR with VALID information (LBA 0x12345678),
        // command-specific info, FRU 0x42 and an actual retry count of 3.
        let b = [0xf1, 0, 0x23, 0x12, 0x34, 0x56, 0x78, 10, 0, 0, 0, 9, 0x11, 0x00, 0x42, 0x80, 0, 3];
        let s = Sense::parse(&b).unwrap();
        assert!(s.deferred);
        assert_eq!(s.key, SenseKey::MEDIUM_ERROR);
        assert!(s.ili && !s.eom && !s.filemark);
        assert_eq!(s.information, Some(0x1234_5678));
        assert_eq!(s.command_specific, Some(9));
        assert_eq!(s.fru, Some(0x42));
        assert_eq!(s.sense_key_specific, Some(SenseKeySpecific::ActualRetryCount(3)));
        assert_eq!(s.to_string(), "MEDIUM ERROR (03): UNRECOVERED READ ERROR (11/00) [deferred]");
    }

    #[test]
    fn fixed_field_pointer() {
        // ILLEGAL REQUEST 24/00, field pointer: CDB byte 2, bit 4 (BPV).
        let b = [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0xcc, 0, 2];
        let s = Sense::parse(&b).unwrap();
        assert_eq!(s.sense_key_specific, Some(SenseKeySpecific::FieldPointer { in_cdb: true, bit: Some(4), byte: 2 }));
    }

    #[test]
    fn short_fixed_sense_keeps_the_key() {
        // Additional sense length says 10, only 14 bytes arrive: ASC/ASCQ
        // are there, FRU and sense-key specific are not.
        let b = hex("700006000000000a0000000029070000")[..14].to_vec();
        let s = Sense::parse(&b).unwrap();
        assert!(s.truncated);
        assert!(s.is(AscAscq::I_T_NEXUS_LOSS_OCCURRED));
        assert_eq!(s.sense_key_specific, None);
        // Only 3 bytes: key only.
        let s = Sense::parse(&[0x70, 0, 2]).unwrap();
        assert_eq!((s.key, s.asc, s.ascq, s.truncated), (SenseKey::NOT_READY, 0, 0, true));
        // An additional sense length of 6 (SCSI-2 style, 14 bytes) is complete.
        let s = Sense::parse(&[0x70, 0, 5, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0x20, 0]).unwrap();
        assert!(!s.truncated);
        assert!(s.is(AscAscq::INVALID_COMMAND_OPERATION_CODE));
    }

    #[test]
    fn descriptor_format() {
        let s = Sense::parse(&DESCRIPTOR_MEDIUM_ERROR).unwrap();
        assert_eq!(s.format, SenseFormat::Descriptor);
        assert!(!s.truncated);
        assert_eq!(s.key, SenseKey::MEDIUM_ERROR);
        assert!(s.is(AscAscq::UNRECOVERED_READ_ERROR));
        assert_eq!(s.information, Some(0x1_0000_0000));
        assert_eq!(s.command_specific, Some(5));
        assert_eq!(s.sense_key_specific, Some(SenseKeySpecific::ActualRetryCount(7)));
        assert!(s.ili);
        assert_eq!(s.descriptors.len(), 4);
        assert_eq!(s.descriptors[3], SenseDescriptor { kind: 5, data: vec![0, 0x20] });
    }

    #[test]
    fn descriptor_format_broken_descriptor_keeps_header() {
        // Deferred NOT READY 04/0A with a descriptor claiming 40 bytes.
        let b = [0x73, 0x02, 0x04, 0x0a, 0, 0, 0, 6, 0x00, 40, 0x80, 0, 0, 0];
        let s = Sense::parse(&b).unwrap();
        assert!(s.deferred && s.truncated);
        assert!(s.is(AscAscq::LU_NOT_ACCESSIBLE_ALUA_TRANSITION));
        assert_eq!(s.information, None);
        assert!(s.descriptors.is_empty());
        // Information descriptor with VALID clear is not reported.
        let b = [0x72, 0x05, 0x24, 0, 0, 0, 0, 12, 0x00, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        let s = Sense::parse(&b).unwrap();
        assert_eq!(s.information, None);
        assert_eq!(s.descriptors.len(), 1);
        // Header only.
        let s = Sense::parse(&[0x72, 0x06]).unwrap();
        assert_eq!(s.key, SenseKey::UNIT_ATTENTION);
        assert!(s.truncated);
    }

    #[test]
    fn errors() {
        assert_eq!(Sense::parse(&[]).unwrap_err().to_string(), "sense data: response code needs 1 bytes, 0 left");
        assert_eq!(
            Sense::parse(&[0x7f, 0, 0]).unwrap_err().to_string(),
            "sense data: response code 0x7f is not 70h-73h (fixed or descriptor format)"
        );
        assert!(Sense::parse(&[0x70, 0]).is_err());
        assert!(Sense::parse(&[0x72]).is_err());
    }

    #[test]
    fn sense_key_names() {
        assert_eq!(SenseKey::NOT_READY.to_string(), "NOT READY");
        assert_eq!(format!("{:?}", SenseKey::COMPLETED), "COMPLETED");
        assert_eq!(format!("{:?}", SenseKey(0xc)), "SenseKey(0x0c)");
        let s = Sense::new(SenseKey(0xc), 0, 0);
        assert_eq!(s.to_string(), "RESERVED SENSE KEY (0C): NO ADDITIONAL SENSE INFORMATION (00/00)");
    }

    /// Test-only encoder (fixed or descriptor format) for round trips.
    fn encode(s: &Sense) -> Vec<u8> {
        let code = match (s.format, s.deferred) {
            (SenseFormat::Fixed, false) => 0x70,
            (SenseFormat::Fixed, true) => 0x71,
            (SenseFormat::Descriptor, false) => 0x72,
            (SenseFormat::Descriptor, true) => 0x73,
        };
        match s.format {
            SenseFormat::Fixed => {
                let mut b = vec![0u8; 18];
                let info = s.information.map(|i| i as u32);
                b[0] = code | if info.is_some() { 0x80 } else { 0 };
                b[2] = s.key.0;
                b[3..7].copy_from_slice(&info.unwrap_or(0).to_be_bytes());
                b[7] = 10;
                b[8..12].copy_from_slice(&(s.command_specific.unwrap_or(0) as u32).to_be_bytes());
                b[12] = s.asc;
                b[13] = s.ascq;
                b
            }
            SenseFormat::Descriptor => {
                let mut b = vec![code, s.key.0, s.asc, s.ascq, 0, 0, 0, 0];
                if let Some(i) = s.information {
                    b.extend([0, 10, 0x80, 0]);
                    b.extend(i.to_be_bytes());
                }
                if let Some(c) = s.command_specific {
                    b.extend([1, 10, 0, 0]);
                    b.extend(c.to_be_bytes());
                }
                b[7] = (b.len() - 8) as u8;
                b
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Sense::parse(&b);
            let _ = Sense::from_iscsi_segment(&b);
            if let Ok(s) = Sense::parse(&b) {
                let _ = s.to_string();
            }
        }

        #[test]
        fn sense_like_bytes_never_panic(code in 0x70u8..=0x73, rest in proptest::collection::vec(any::<u8>(), 2..64)) {
            let mut b = vec![code];
            b.extend(rest);
            let s = Sense::parse(&b).unwrap();
            let _ = s.to_string();
        }

        #[test]
        fn round_trip(descriptor: bool, deferred: bool, key in 0u8..16, asc: u8, ascq: u8,
                      info: Option<u32>, cmd in proptest::option::of(1u32..)) {
            let mut s = Sense::new(SenseKey(key), asc, ascq);
            s.format = if descriptor { SenseFormat::Descriptor } else { SenseFormat::Fixed };
            s.deferred = deferred;
            s.information = info.map(u64::from);
            s.command_specific = cmd.map(u64::from);
            let mut p = Sense::parse(&encode(&s)).unwrap();
            p.descriptors.clear();
            prop_assert_eq!(p, s);
        }
    }
}
