//! Asynchronous Message (RFC 7143 section 11.9).

use bytes::Bytes;

use super::{Bhs, Opcode, PduError, wire_enum};

wire_enum! {
    /// AsyncEvent codes (RFC 7143 section 11.9.1).
    pub struct AsyncEvent(u8) {
        SCSI_EVENT = 0 => "SCSI asynchronous event",
        LOGOUT_REQUEST = 1 => "target requests logout",
        DROP_CONNECTION = 2 => "target will drop the connection",
        DROP_ALL_CONNECTIONS = 3 => "target will drop all connections of the session",
        RENEGOTIATE = 4 => "target requests parameter negotiation",
        VENDOR = 255 => "vendor-specific event",
    }
}

/// Asynchronous Message (opcode 0x32).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsyncMessage {
    /// LUN (for SCSI events).
    pub lun: u64,
    /// StatSN.
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
    /// The event.
    pub event: AsyncEvent,
    /// AsyncVCode (vendor code).
    pub vcode: u8,
    /// Parameter1: the CID for DROP_CONNECTION.
    pub parameter1: u16,
    /// Parameter2: Time2Wait for the drop events.
    pub parameter2: u16,
    /// Parameter3: Time2Retain for the drop events, or the seconds the
    /// target waits for a logout.
    pub parameter3: u16,
    /// Sense data (with SenseLength) and iSCSI event data.
    pub data: Bytes,
}

impl AsyncMessage {
    pub(super) fn parse(b: &Bhs, data: Bytes) -> Result<Self, PduError> {
        Ok(AsyncMessage {
            lun: b.u64(8),
            statsn: b.u32(24),
            exp_cmdsn: b.u32(28),
            max_cmdsn: b.u32(32),
            event: AsyncEvent(b.u8(36)),
            vcode: b.u8(37),
            parameter1: b.u16(38),
            parameter2: b.u16(40),
            parameter3: b.u16(42),
            data,
        })
    }

    pub(super) fn to_bhs(&self) -> Bhs {
        let mut b = Bhs::new(Opcode::ASYNC_MESSAGE);
        b.set_u8(1, 0x80);
        b.set_u64(8, self.lun);
        b.set_u32(16, super::RESERVED_TAG);
        b.set_u32(24, self.statsn);
        b.set_u32(28, self.exp_cmdsn);
        b.set_u32(32, self.max_cmdsn);
        b.set_u8(36, self.event.0);
        b.set_u8(37, self.vcode);
        b.set_u16(38, self.parameter1);
        b.set_u16(40, self.parameter2);
        b.set_u16(42, self.parameter3);
        b
    }
}
