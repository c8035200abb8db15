//! Logout Request and Logout Response (RFC 7143 sections 11.14 and 11.15).

use super::{Bhs, Opcode, PduError, wire_enum};

wire_enum! {
    /// Why the initiator logs out (RFC 7143 section 11.14.1).
    pub struct LogoutReason(u8) {
        CLOSE_SESSION = 0 => "close the session",
        CLOSE_CONNECTION = 1 => "close the connection",
        REMOVE_FOR_RECOVERY = 2 => "remove the connection for recovery",
    }
}

wire_enum! {
    /// Outcome of a logout (RFC 7143 section 11.15.1).
    pub struct LogoutResponseCode(u8) {
        SUCCESS = 0 => "connection or session closed successfully",
        CID_NOT_FOUND = 1 => "CID not found",
        RECOVERY_NOT_SUPPORTED = 2 => "connection recovery is not supported",
        CLEANUP_FAILED = 3 => "cleanup failed for various reasons",
    }
}

/// Logout Request (opcode 0x06).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoutRequest {
    /// I bit.
    pub immediate: bool,
    /// Reason code.
    pub reason: LogoutReason,
    /// Initiator Task Tag.
    pub itt: u32,
    /// The connection to close (reasons 1 and 2).
    pub cid: u16,
    /// CmdSN.
    pub cmdsn: u32,
    /// ExpStatSN.
    pub exp_statsn: u32,
}

impl LogoutRequest {
    pub(super) fn parse(b: &Bhs) -> Result<Self, PduError> {
        Ok(LogoutRequest {
            immediate: b.immediate(),
            reason: LogoutReason(b.u8(1) & 0x7f),
            itt: b.itt(),
            cid: b.u16(20),
            cmdsn: b.u32(24),
            exp_statsn: b.u32(28),
        })
    }

    pub(super) fn to_bhs(&self) -> Bhs {
        let mut b = Bhs::new(Opcode::LOGOUT_REQUEST);
        b.set_immediate(self.immediate);
        b.set_u8(1, 0x80 | (self.reason.0 & 0x7f));
        b.set_u32(16, self.itt);
        b.set_u16(20, self.cid);
        b.set_u32(24, self.cmdsn);
        b.set_u32(28, self.exp_statsn);
        b
    }
}

/// Logout Response (opcode 0x26).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoutResponse {
    /// Outcome.
    pub response: LogoutResponseCode,
    /// Initiator Task Tag.
    pub itt: u32,
    /// StatSN.
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
    /// Time2Wait: seconds before a reconnect may be tried.
    pub time2wait: u16,
    /// Time2Retain: seconds the target keeps the connection's state.
    pub time2retain: u16,
}

impl LogoutResponse {
    pub(super) fn parse(b: &Bhs) -> Result<Self, PduError> {
        Ok(LogoutResponse {
            response: LogoutResponseCode(b.u8(2)),
            itt: b.itt(),
            statsn: b.u32(24),
            exp_cmdsn: b.u32(28),
            max_cmdsn: b.u32(32),
            time2wait: b.u16(40),
            time2retain: b.u16(42),
        })
    }

    pub(super) fn to_bhs(&self) -> Bhs {
        let mut b = Bhs::new(Opcode::LOGOUT_RESPONSE);
        b.set_u8(1, 0x80);
        b.set_u8(2, self.response.0);
        b.set_u32(16, self.itt);
        b.set_u32(24, self.statsn);
        b.set_u32(28, self.exp_cmdsn);
        b.set_u32(32, self.max_cmdsn);
        b.set_u16(40, self.time2wait);
        b.set_u16(42, self.time2retain);
        b
    }
}
