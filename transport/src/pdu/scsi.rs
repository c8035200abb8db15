//! SCSI Command, SCSI Response, Data-Out, Data-In and R2T
//! (RFC 7143 sections 11.3 to 11.8).

use bytes::Bytes;

use super::{Bhs, Opcode, PduError, wire_enum};

wire_enum! {
    /// Task attribute of a SCSI command (RFC 7143 section 11.3.1, ATTR).
    pub struct TaskAttr(u8) {
        UNTAGGED = 0 => "Untagged",
        SIMPLE = 1 => "Simple",
        ORDERED = 2 => "Ordered",
        HEAD_OF_QUEUE = 3 => "Head of Queue",
        ACA = 4 => "ACA",
    }
}

/// A residual count reported by the target (RFC 7143 section 11.4.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Residual {
    /// The target transferred exactly the expected length.
    #[default]
    None,
    /// The target transferred this many bytes fewer than expected.
    Underflow(u32),
    /// The target wanted to transfer this many bytes more than expected.
    Overflow(u32),
}

impl Residual {
    /// Decodes the overflow/underflow bits and the count; both bits set is a
    /// protocol error ("Bits O and U ... are mutually exclusive").
    fn decode(opcode: Opcode, overflow: bool, underflow: bool, count: u32) -> Result<Residual, PduError> {
        match (overflow, underflow) {
            (false, false) => Ok(Residual::None),
            (true, false) => Ok(Residual::Overflow(count)),
            (false, true) => Ok(Residual::Underflow(count)),
            (true, true) => Err(PduError::field(opcode, "flags", "residual overflow and underflow both set")),
        }
    }

    /// (overflow bit, underflow bit, count) for encoding.
    fn bits(self) -> (bool, bool, u32) {
        match self {
            Residual::None => (false, false, 0),
            Residual::Overflow(n) => (true, false, n),
            Residual::Underflow(n) => (false, true, n),
        }
    }
}

/// SCSI Command (opcode 0x01).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScsiCommand {
    /// I bit: delivered for immediate execution, outside the CmdSN order.
    pub immediate: bool,
    /// F bit: no unsolicited Data-Out PDUs follow this command.
    pub final_pdu: bool,
    /// R bit: data is expected from the target.
    pub read: bool,
    /// W bit: data is sent to the target.
    pub write: bool,
    /// Task attribute.
    pub attr: TaskAttr,
    /// The 8-byte LUN field.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Expected Data Transfer Length (for bidirectional commands, the write
    /// part).
    pub expected_data_len: u32,
    /// CmdSN.
    pub cmdsn: u32,
    /// ExpStatSN.
    pub exp_statsn: u32,
    /// The first 16 bytes of the CDB, zero-padded.
    pub cdb: [u8; 16],
    /// CDB bytes beyond 16, carried in an Extended CDB AHS.
    pub ext_cdb: Bytes,
    /// Bidirectional Read Expected Data Transfer Length, from its AHS.
    pub bidi_read_len: Option<u32>,
    /// Immediate data.
    pub data: Bytes,
}

/// AHS types (RFC 7143 section 11.2.2.2).
const AHS_EXTENDED_CDB: u8 = 1;
const AHS_BIDI_READ_LEN: u8 = 2;

impl ScsiCommand {
    pub(super) fn parse(b: &Bhs, ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        const OP: Opcode = Opcode::SCSI_COMMAND;
        let mut ext_cdb = Bytes::new();
        let mut bidi_read_len = None;
        let mut rest = ahs;
        while !rest.is_empty() {
            let (len, ty) = match rest {
                [l0, l1, ty, ..] => (usize::from(u16::from_be_bytes([*l0, *l1])), *ty),
                _ => return Err(PduError::BadAhs { opcode: OP, reason: format!("{} trailing bytes", rest.len()) }),
            };
            // AHSLength counts the bytes after the type byte, without padding.
            let padded = (3 + len).div_ceil(4) * 4;
            let (this, next) = rest.split_at_checked(padded).ok_or_else(|| PduError::BadAhs {
                opcode: OP,
                reason: format!("AHS of {len} bytes overruns TotalAHSLength"),
            })?;
            let body = this.get(3..3 + len).unwrap_or_default();
            match ty {
                AHS_EXTENDED_CDB => {
                    // The first byte of the body is reserved; the CDB continues after it.
                    let cdb = body.get(1..).unwrap_or_default();
                    if cdb.is_empty() {
                        return Err(PduError::BadAhs { opcode: OP, reason: "empty Extended CDB AHS".into() });
                    }
                    ext_cdb = Bytes::copy_from_slice(cdb);
                }
                AHS_BIDI_READ_LEN => match body {
                    [_, a, b, c, d] => bidi_read_len = Some(u32::from_be_bytes([*a, *b, *c, *d])),
                    _ => {
                        return Err(PduError::BadAhs {
                            opcode: OP,
                            reason: format!("Bidirectional Read Length AHS of {len} bytes (expected 5)"),
                        });
                    }
                },
                other => {
                    return Err(PduError::BadAhs { opcode: OP, reason: format!("unknown AHS type {other}") });
                }
            }
            rest = next;
        }
        Ok(ScsiCommand {
            immediate: b.immediate(),
            final_pdu: b.bit(1, 0x80),
            read: b.bit(1, 0x40),
            write: b.bit(1, 0x20),
            attr: TaskAttr(b.u8(1) & 0x07),
            lun: b.u64(8),
            itt: b.itt(),
            expected_data_len: b.u32(20),
            cmdsn: b.u32(24),
            exp_statsn: b.u32(28),
            cdb: b.bytes(32),
            ext_cdb,
            bidi_read_len,
            data,
        })
    }

    pub(super) fn to_bhs_ahs(&self) -> (Bhs, Bytes) {
        let mut b = Bhs::new(Opcode::SCSI_COMMAND);
        b.set_immediate(self.immediate);
        b.set_u8(1, self.attr.0 & 0x07);
        b.set_bit(1, 0x80, self.final_pdu);
        b.set_bit(1, 0x40, self.read);
        b.set_bit(1, 0x20, self.write);
        b.set_u64(8, self.lun);
        b.set_u32(16, self.itt);
        b.set_u32(20, self.expected_data_len);
        b.set_u32(24, self.cmdsn);
        b.set_u32(28, self.exp_statsn);
        b.set_bytes(32, &self.cdb);
        let mut ahs = Vec::new();
        if !self.ext_cdb.is_empty() {
            push_ahs(&mut ahs, AHS_EXTENDED_CDB, &self.ext_cdb);
        }
        if let Some(len) = self.bidi_read_len {
            push_ahs(&mut ahs, AHS_BIDI_READ_LEN, &len.to_be_bytes());
        }
        (b, Bytes::from(ahs))
    }
}

/// Appends one AHS: AHSLength (body + the reserved byte), type, reserved
/// byte, body, padding to 4 bytes.
fn push_ahs(out: &mut Vec<u8>, ty: u8, body: &[u8]) {
    let len = body.len() + 1;
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.push(ty);
    out.push(0);
    out.extend_from_slice(body);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// SCSI Response (opcode 0x21).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScsiResponse {
    /// Initiator Task Tag.
    pub itt: u32,
    /// iSCSI service response: 0x00 command completed at target, 0x01
    /// target failure, 0x80-0xff vendor specific.
    pub response: u8,
    /// SCSI status, valid when `response` is 0.
    pub status: u8,
    /// Residual of the (write, or only) data transfer.
    pub residual: Residual,
    /// Residual of the read part of a bidirectional command.
    pub bidi_read_residual: Residual,
    /// SNACK Tag.
    pub snack_tag: u32,
    /// StatSN.
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
    /// ExpDataSN: number of Data-In (or R2T) PDUs the target sent.
    pub exp_datasn: u32,
    /// Sense data (with its 2-byte SenseLength prefix) and response data.
    pub data: Bytes,
}

impl ScsiResponse {
    pub(super) fn parse(b: &Bhs, data: Bytes) -> Result<Self, PduError> {
        const OP: Opcode = Opcode::SCSI_RESPONSE;
        Ok(ScsiResponse {
            itt: b.itt(),
            response: b.u8(2),
            status: b.u8(3),
            bidi_read_residual: Residual::decode(OP, b.bit(1, 0x10), b.bit(1, 0x08), b.u32(40))?,
            residual: Residual::decode(OP, b.bit(1, 0x04), b.bit(1, 0x02), b.u32(44))?,
            snack_tag: b.u32(20),
            statsn: b.u32(24),
            exp_cmdsn: b.u32(28),
            max_cmdsn: b.u32(32),
            exp_datasn: b.u32(36),
            data,
        })
    }

    pub(super) fn to_bhs(&self) -> Bhs {
        let mut b = Bhs::new(Opcode::SCSI_RESPONSE);
        b.set_u8(1, 0x80);
        let (bo, bu, bcount) = self.bidi_read_residual.bits();
        let (o, u, count) = self.residual.bits();
        b.set_bit(1, 0x10, bo);
        b.set_bit(1, 0x08, bu);
        b.set_bit(1, 0x04, o);
        b.set_bit(1, 0x02, u);
        b.set_u8(2, self.response);
        b.set_u8(3, self.status);
        b.set_u32(16, self.itt);
        b.set_u32(20, self.snack_tag);
        b.set_u32(24, self.statsn);
        b.set_u32(28, self.exp_cmdsn);
        b.set_u32(32, self.max_cmdsn);
        b.set_u32(36, self.exp_datasn);
        b.set_u32(40, bcount);
        b.set_u32(44, count);
        b
    }

    /// The sense data without its SenseLength prefix, if any (RFC 7143
    /// section 11.4.7.2).
    pub fn sense(&self) -> Option<Bytes> {
        let len = match self.data.get(..2) {
            Some([a, b]) => usize::from(u16::from_be_bytes([*a, *b])),
            _ => return None,
        };
        if len == 0 {
            return None;
        }
        // A SenseLength beyond the segment is clamped: the target is wrong,
        // but what sense data there is still helps the operator.
        let end = (2 + len).min(self.data.len());
        Some(self.data.slice(2..end))
    }
}

/// SCSI Data-Out (opcode 0x05).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataOut {
    /// F bit: the last PDU of this sequence (unsolicited burst or R2T).
    pub final_pdu: bool,
    /// LUN (copied from the command for solicited data).
    pub lun: u64,
    /// Initiator Task Tag of the command.
    pub itt: u32,
    /// Target Transfer Tag from the R2T, or 0xffffffff for unsolicited data.
    pub ttt: u32,
    /// ExpStatSN.
    pub exp_statsn: u32,
    /// DataSN within the sequence.
    pub datasn: u32,
    /// Offset of this data in the command's buffer.
    pub buffer_offset: u32,
    /// The data.
    pub data: Bytes,
}

impl DataOut {
    pub(super) fn parse(b: &Bhs, data: Bytes) -> Result<Self, PduError> {
        Ok(DataOut {
            final_pdu: b.bit(1, 0x80),
            lun: b.u64(8),
            itt: b.itt(),
            ttt: b.u32(20),
            exp_statsn: b.u32(28),
            datasn: b.u32(36),
            buffer_offset: b.u32(40),
            data,
        })
    }

    pub(super) fn to_bhs(&self) -> Bhs {
        let mut b = Bhs::new(Opcode::DATA_OUT);
        b.set_bit(1, 0x80, self.final_pdu);
        b.set_u64(8, self.lun);
        b.set_u32(16, self.itt);
        b.set_u32(20, self.ttt);
        b.set_u32(28, self.exp_statsn);
        b.set_u32(36, self.datasn);
        b.set_u32(40, self.buffer_offset);
        b
    }
}

/// SCSI Data-In (opcode 0x25).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataIn {
    /// F bit: the last PDU of the sequence.
    pub final_pdu: bool,
    /// A bit: the target asks for a DataACK SNACK (ERL > 0).
    pub ack: bool,
    /// S bit with the SCSI status: the command's status comes in this PDU
    /// ("phase collapse"), no SCSI Response follows.
    pub status: Option<u8>,
    /// Residual, valid with the status.
    pub residual: Residual,
    /// LUN (valid when `ack` is set).
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag (valid when `ack` is set).
    pub ttt: u32,
    /// StatSN, valid with the status.
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
    /// DataSN.
    pub datasn: u32,
    /// Offset of this data in the command's buffer.
    pub buffer_offset: u32,
    /// The data.
    pub data: Bytes,
}

impl DataIn {
    pub(super) fn parse(b: &Bhs, data: Bytes) -> Result<Self, PduError> {
        const OP: Opcode = Opcode::DATA_IN;
        let final_pdu = b.bit(1, 0x80);
        let has_status = b.bit(1, 0x01);
        // RFC 7143 section 11.7.2: "If the S bit is set to 1, the F bit MUST
        // also be set to 1."
        if has_status && !final_pdu {
            return Err(PduError::field(OP, "flags", "S bit set without the F bit"));
        }
        // The O/U bits and the residual count "are valid only when S is set"
        // (section 11.7.5); otherwise they are ignored.
        let residual =
            if has_status { Residual::decode(OP, b.bit(1, 0x04), b.bit(1, 0x02), b.u32(44))? } else { Residual::None };
        Ok(DataIn {
            final_pdu,
            ack: b.bit(1, 0x40),
            status: has_status.then(|| b.u8(3)),
            residual,
            lun: b.u64(8),
            itt: b.itt(),
            ttt: b.u32(20),
            statsn: b.u32(24),
            exp_cmdsn: b.u32(28),
            max_cmdsn: b.u32(32),
            datasn: b.u32(36),
            buffer_offset: b.u32(40),
            data,
        })
    }

    pub(super) fn to_bhs(&self) -> Bhs {
        let mut b = Bhs::new(Opcode::DATA_IN);
        b.set_bit(1, 0x80, self.final_pdu);
        b.set_bit(1, 0x40, self.ack);
        if let Some(status) = self.status {
            b.set_bit(1, 0x01, true);
            b.set_u8(3, status);
            let (o, u, count) = self.residual.bits();
            b.set_bit(1, 0x04, o);
            b.set_bit(1, 0x02, u);
            b.set_u32(44, count);
        }
        b.set_u64(8, self.lun);
        b.set_u32(16, self.itt);
        b.set_u32(20, self.ttt);
        b.set_u32(24, self.statsn);
        b.set_u32(28, self.exp_cmdsn);
        b.set_u32(32, self.max_cmdsn);
        b.set_u32(36, self.datasn);
        b.set_u32(40, self.buffer_offset);
        b
    }
}

/// Ready To Transfer (opcode 0x31).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct R2t {
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag of the command.
    pub itt: u32,
    /// Target Transfer Tag to copy into the Data-Out PDUs.
    pub ttt: u32,
    /// StatSN (not advanced by an R2T).
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
    /// R2TSN.
    pub r2tsn: u32,
    /// Offset in the command's buffer of the data asked for.
    pub buffer_offset: u32,
    /// Desired Data Transfer Length.
    pub desired_len: u32,
}

impl R2t {
    pub(super) fn parse(b: &Bhs) -> Result<Self, PduError> {
        let desired_len = b.u32(44);
        // RFC 7143 section 11.8.4: "The Desired Data Transfer Length MUST NOT
        // be 0".
        if desired_len == 0 {
            return Err(PduError::field(Opcode::R2T, "Desired Data Transfer Length", "is 0"));
        }
        Ok(R2t {
            lun: b.u64(8),
            itt: b.itt(),
            ttt: b.u32(20),
            statsn: b.u32(24),
            exp_cmdsn: b.u32(28),
            max_cmdsn: b.u32(32),
            r2tsn: b.u32(36),
            buffer_offset: b.u32(40),
            desired_len,
        })
    }

    pub(super) fn to_bhs(&self) -> Bhs {
        let mut b = Bhs::new(Opcode::R2T);
        b.set_u8(1, 0x80);
        b.set_u64(8, self.lun);
        b.set_u32(16, self.itt);
        b.set_u32(20, self.ttt);
        b.set_u32(24, self.statsn);
        b.set_u32(28, self.exp_cmdsn);
        b.set_u32(32, self.max_cmdsn);
        b.set_u32(36, self.r2tsn);
        b.set_u32(40, self.buffer_offset);
        b.set_u32(44, self.desired_len);
        b
    }
}
