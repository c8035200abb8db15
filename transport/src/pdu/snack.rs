//! SNACK Request (RFC 7143 section 11.16). Only used at ErrorRecoveryLevel
//! 1 and above; the codec is here so ERL 2 can build on it.

use super::{Bhs, Opcode, PduError, wire_enum};

wire_enum! {
    /// SNACK type (RFC 7143 section 11.16.1).
    pub struct SnackType(u8) {
        DATA_R2T = 0 => "Data/R2T SNACK",
        STATUS = 1 => "Status SNACK",
        DATA_ACK = 2 => "DataACK",
        R_DATA = 3 => "R-Data SNACK",
    }
}

/// SNACK Request (opcode 0x10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snack {
    /// Type.
    pub kind: SnackType,
    /// LUN (DataACK).
    pub lun: u64,
    /// Initiator Task Tag (0xffffffff for Status SNACK).
    pub itt: u32,
    /// Target Transfer Tag (DataACK) or SNACK Tag (R-Data).
    pub ttt: u32,
    /// ExpStatSN.
    pub exp_statsn: u32,
    /// First DataSN, R2TSN or StatSN not received.
    pub beg_run: u32,
    /// Number of PDUs asked for (0 = all from `beg_run`).
    pub run_length: u32,
}

impl Snack {
    pub(super) fn parse(b: &Bhs) -> Result<Self, PduError> {
        Ok(Snack {
            kind: SnackType(b.u8(1) & 0x0f),
            lun: b.u64(8),
            itt: b.itt(),
            ttt: b.u32(20),
            exp_statsn: b.u32(28),
            beg_run: b.u32(40),
            run_length: b.u32(44),
        })
    }

    pub(super) fn to_bhs(&self) -> Bhs {
        let mut b = Bhs::new(Opcode::SNACK);
        b.set_u8(1, 0x80 | (self.kind.0 & 0x0f));
        b.set_u64(8, self.lun);
        b.set_u32(16, self.itt);
        b.set_u32(20, self.ttt);
        b.set_u32(28, self.exp_statsn);
        b.set_u32(40, self.beg_run);
        b.set_u32(44, self.run_length);
        b
    }
}
