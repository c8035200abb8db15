//! NOP-Out and NOP-In (RFC 7143 sections 11.18 and 11.19).

use bytes::Bytes;

use super::{Bhs, Opcode, PduError};

/// NOP-Out (opcode 0x00): a ping from the initiator, or the answer to a
/// NOP-In that asked for one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NopOut {
    /// I bit. An answer to a NOP-In is always immediate.
    pub immediate: bool,
    /// LUN (echoed from the NOP-In when answering).
    pub lun: u64,
    /// Initiator Task Tag: a tag when a NOP-In answer is wanted, 0xffffffff
    /// when answering the target.
    pub itt: u32,
    /// Target Transfer Tag: the NOP-In's tag when answering it, else
    /// 0xffffffff.
    pub ttt: u32,
    /// CmdSN (not advanced by an immediate NOP-Out).
    pub cmdsn: u32,
    /// ExpStatSN.
    pub exp_statsn: u32,
    /// Ping data, echoed by the target.
    pub data: Bytes,
}

impl NopOut {
    pub(super) fn parse(b: &Bhs, data: Bytes) -> Result<Self, PduError> {
        Ok(NopOut {
            immediate: b.immediate(),
            lun: b.u64(8),
            itt: b.itt(),
            ttt: b.u32(20),
            cmdsn: b.u32(24),
            exp_statsn: b.u32(28),
            data,
        })
    }

    pub(super) fn to_bhs(&self) -> Bhs {
        let mut b = Bhs::new(Opcode::NOP_OUT);
        b.set_immediate(self.immediate);
        b.set_u8(1, 0x80);
        b.set_u64(8, self.lun);
        b.set_u32(16, self.itt);
        b.set_u32(20, self.ttt);
        b.set_u32(24, self.cmdsn);
        b.set_u32(28, self.exp_statsn);
        b
    }
}

/// NOP-In (opcode 0x20): the answer to our NOP-Out, or a ping from the
/// target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NopIn {
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag: ours when answering a NOP-Out, else 0xffffffff.
    pub itt: u32,
    /// Target Transfer Tag: not 0xffffffff when the target wants an answer.
    pub ttt: u32,
    /// StatSN (not advanced when ITT is 0xffffffff).
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
    /// Ping data.
    pub data: Bytes,
}

impl NopIn {
    pub(super) fn parse(b: &Bhs, data: Bytes) -> Result<Self, PduError> {
        let (itt, ttt) = (b.itt(), b.u32(20));
        // Section 11.19.1: a NOP-In is either a response (valid ITT, TTT
        // 0xffffffff) or a target ping (ITT 0xffffffff); never both tags.
        if itt != super::RESERVED_TAG && ttt != super::RESERVED_TAG {
            return Err(PduError::field(Opcode::NOP_IN, "TTT", "set on a response to a NOP-Out"));
        }
        Ok(NopIn { lun: b.u64(8), itt, ttt, statsn: b.u32(24), exp_cmdsn: b.u32(28), max_cmdsn: b.u32(32), data })
    }

    pub(super) fn to_bhs(&self) -> Bhs {
        let mut b = Bhs::new(Opcode::NOP_IN);
        b.set_u8(1, 0x80);
        b.set_u64(8, self.lun);
        b.set_u32(16, self.itt);
        b.set_u32(20, self.ttt);
        b.set_u32(24, self.statsn);
        b.set_u32(28, self.exp_cmdsn);
        b.set_u32(32, self.max_cmdsn);
        b
    }
}
