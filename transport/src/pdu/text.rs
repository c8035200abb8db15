//! Text Request and Text Response (RFC 7143 sections 11.10 and 11.11).

use bytes::Bytes;

use super::{Bhs, Opcode, PduError};

/// Text Request (opcode 0x04).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextRequest {
    /// I bit.
    pub immediate: bool,
    /// F bit: the last PDU of the request.
    pub final_pdu: bool,
    /// C bit: the text continues in the next PDU.
    pub continue_: bool,
    /// LUN (reserved unless a key needs it).
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag: 0xffffffff to start, the target's tag to
    /// continue a multi-PDU response.
    pub ttt: u32,
    /// CmdSN.
    pub cmdsn: u32,
    /// ExpStatSN.
    pub exp_statsn: u32,
    /// Text key=value pairs.
    pub data: Bytes,
}

impl TextRequest {
    pub(super) fn parse(b: &Bhs, data: Bytes) -> Result<Self, PduError> {
        let (final_pdu, continue_) = flags(Opcode::TEXT_REQUEST, b)?;
        Ok(TextRequest {
            immediate: b.immediate(),
            final_pdu,
            continue_,
            lun: b.u64(8),
            itt: b.itt(),
            ttt: b.u32(20),
            cmdsn: b.u32(24),
            exp_statsn: b.u32(28),
            data,
        })
    }

    pub(super) fn to_bhs(&self) -> Bhs {
        let mut b = Bhs::new(Opcode::TEXT_REQUEST);
        b.set_immediate(self.immediate);
        b.set_bit(1, 0x80, self.final_pdu);
        b.set_bit(1, 0x40, self.continue_);
        b.set_u64(8, self.lun);
        b.set_u32(16, self.itt);
        b.set_u32(20, self.ttt);
        b.set_u32(24, self.cmdsn);
        b.set_u32(28, self.exp_statsn);
        b
    }
}

/// Text Response (opcode 0x24).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextResponse {
    /// F bit: the last PDU of the response.
    pub final_pdu: bool,
    /// C bit: the text continues in the next PDU.
    pub continue_: bool,
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag, echoed.
    pub itt: u32,
    /// Target Transfer Tag: not 0xffffffff while more of the response
    /// waits for the initiator to ask for it.
    pub ttt: u32,
    /// StatSN.
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
    /// Text key=value pairs.
    pub data: Bytes,
}

impl TextResponse {
    pub(super) fn parse(b: &Bhs, data: Bytes) -> Result<Self, PduError> {
        let (final_pdu, continue_) = flags(Opcode::TEXT_RESPONSE, b)?;
        Ok(TextResponse {
            final_pdu,
            continue_,
            lun: b.u64(8),
            itt: b.itt(),
            ttt: b.u32(20),
            statsn: b.u32(24),
            exp_cmdsn: b.u32(28),
            max_cmdsn: b.u32(32),
            data,
        })
    }

    pub(super) fn to_bhs(&self) -> Bhs {
        let mut b = Bhs::new(Opcode::TEXT_RESPONSE);
        b.set_bit(1, 0x80, self.final_pdu);
        b.set_bit(1, 0x40, self.continue_);
        b.set_u64(8, self.lun);
        b.set_u32(16, self.itt);
        b.set_u32(20, self.ttt);
        b.set_u32(24, self.statsn);
        b.set_u32(28, self.exp_cmdsn);
        b.set_u32(32, self.max_cmdsn);
        b
    }
}

/// Decodes F and C; section 11.10.2: "If the F bit is set to 1, the C bit
/// MUST be set to 0".
fn flags(op: Opcode, b: &Bhs) -> Result<(bool, bool), PduError> {
    let (f, c) = (b.bit(1, 0x80), b.bit(1, 0x40));
    if f && c {
        return Err(PduError::field(op, "flags", "F and C bits both set"));
    }
    Ok((f, c))
}
