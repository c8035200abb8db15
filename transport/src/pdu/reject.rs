//! Reject (RFC 7143 section 11.17).

use bytes::Bytes;

use super::{BHS_LEN, Bhs, Opcode, PduError, wire_enum};

wire_enum! {
    /// Why the target rejected a PDU (RFC 7143 section 11.17.1).
    pub struct RejectReason(u8) {
        DATA_DIGEST_ERROR = 0x02 => "data digest error",
        SNACK_REJECT = 0x03 => "SNACK reject",
        PROTOCOL_ERROR = 0x04 => "protocol error",
        COMMAND_NOT_SUPPORTED = 0x05 => "command not supported",
        IMMEDIATE_COMMAND_REJECT = 0x06 => "immediate command reject: too many immediate commands",
        TASK_IN_PROGRESS = 0x07 => "task in progress",
        INVALID_DATA_ACK = 0x08 => "invalid data ack",
        INVALID_PDU_FIELD = 0x09 => "invalid PDU field",
        LONG_OPERATION_REJECT = 0x0a => "long operation reject: out of resources",
        NEGOTIATION_RESET = 0x0b => "deprecated: negotiation reset",
        WAITING_FOR_LOGOUT = 0x0c => "waiting for logout",
    }
}

/// Reject (opcode 0x3f). The data segment holds the header of the
/// rejected PDU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    /// Why.
    pub reason: RejectReason,
    /// StatSN.
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
    /// DataSN or R2TSN, for rejected SNACKs.
    pub datasn: u32,
    /// The rejected PDU's header.
    pub data: Bytes,
}

impl Reject {
    pub(super) fn parse(b: &Bhs, data: Bytes) -> Result<Self, PduError> {
        Ok(Reject {
            reason: RejectReason(b.u8(2)),
            statsn: b.u32(24),
            exp_cmdsn: b.u32(28),
            max_cmdsn: b.u32(32),
            datasn: b.u32(36),
            data,
        })
    }

    pub(super) fn to_bhs(&self) -> Bhs {
        let mut b = Bhs::new(Opcode::REJECT);
        b.set_u8(1, 0x80);
        b.set_u8(2, self.reason.0);
        b.set_u32(16, super::RESERVED_TAG);
        b.set_u32(24, self.statsn);
        b.set_u32(28, self.exp_cmdsn);
        b.set_u32(32, self.max_cmdsn);
        b.set_u32(36, self.datasn);
        b
    }

    /// The header of the rejected PDU, when the target included a whole one.
    pub fn rejected_header(&self) -> Option<Bhs> {
        let bytes: [u8; BHS_LEN] = self.data.get(..BHS_LEN)?.try_into().ok()?;
        Some(Bhs(bytes))
    }
}
