//! Task Management Function Request and Response (RFC 7143 sections 11.5
//! and 11.6).

use super::{Bhs, Opcode, PduError, wire_enum};

wire_enum! {
    /// Task management function (RFC 7143 section 11.5.1, RFC 7144).
    pub struct TmfFunction(u8) {
        ABORT_TASK = 1 => "ABORT TASK",
        ABORT_TASK_SET = 2 => "ABORT TASK SET",
        CLEAR_ACA = 3 => "CLEAR ACA",
        CLEAR_TASK_SET = 4 => "CLEAR TASK SET",
        LOGICAL_UNIT_RESET = 5 => "LOGICAL UNIT RESET",
        TARGET_WARM_RESET = 6 => "TARGET WARM RESET",
        TARGET_COLD_RESET = 7 => "TARGET COLD RESET",
        TASK_REASSIGN = 8 => "TASK REASSIGN",
        QUERY_TASK = 9 => "QUERY TASK",
        QUERY_TASK_SET = 10 => "QUERY TASK SET",
        I_T_NEXUS_RESET = 11 => "I_T NEXUS RESET",
        QUERY_ASYNC_EVENT = 12 => "QUERY ASYNCHRONOUS EVENT",
    }
}

wire_enum! {
    /// Task management response (RFC 7143 section 11.6.1).
    pub struct TmfResponse(u8) {
        FUNCTION_COMPLETE = 0 => "function complete",
        TASK_DOES_NOT_EXIST = 1 => "task does not exist",
        LUN_DOES_NOT_EXIST = 2 => "LUN does not exist",
        TASK_STILL_ALLEGIANT = 3 => "task still allegiant",
        REASSIGNMENT_NOT_SUPPORTED = 4 => "task allegiance reassignment not supported",
        NOT_SUPPORTED = 5 => "task management function not supported",
        AUTHORIZATION_FAILED = 6 => "function authorization failed",
        REJECTED = 255 => "function rejected",
    }
}

/// Task Management Function Request (opcode 0x02).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskMgmtRequest {
    /// I bit (TMFs are normally immediate).
    pub immediate: bool,
    /// The function.
    pub function: TmfFunction,
    /// LUN the function applies to.
    pub lun: u64,
    /// Initiator Task Tag of this request.
    pub itt: u32,
    /// Referenced Task Tag: the ITT of the task to abort, else 0xffffffff.
    pub referenced_itt: u32,
    /// CmdSN.
    pub cmdsn: u32,
    /// ExpStatSN.
    pub exp_statsn: u32,
    /// RefCmdSN: the CmdSN of the referenced task (ABORT TASK), or of this
    /// request.
    pub ref_cmdsn: u32,
    /// ExpDataSN (for TASK REASSIGN).
    pub exp_datasn: u32,
}

impl TaskMgmtRequest {
    pub(super) fn parse(b: &Bhs) -> Result<Self, PduError> {
        Ok(TaskMgmtRequest {
            immediate: b.immediate(),
            function: TmfFunction(b.u8(1) & 0x7f),
            lun: b.u64(8),
            itt: b.itt(),
            referenced_itt: b.u32(20),
            cmdsn: b.u32(24),
            exp_statsn: b.u32(28),
            ref_cmdsn: b.u32(32),
            exp_datasn: b.u32(36),
        })
    }

    pub(super) fn to_bhs(&self) -> Bhs {
        let mut b = Bhs::new(Opcode::TASK_MGMT_REQUEST);
        b.set_immediate(self.immediate);
        b.set_u8(1, 0x80 | (self.function.0 & 0x7f));
        b.set_u64(8, self.lun);
        b.set_u32(16, self.itt);
        b.set_u32(20, self.referenced_itt);
        b.set_u32(24, self.cmdsn);
        b.set_u32(28, self.exp_statsn);
        b.set_u32(32, self.ref_cmdsn);
        b.set_u32(36, self.exp_datasn);
        b
    }
}

/// Task Management Function Response (opcode 0x22).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskMgmtResponse {
    /// The outcome.
    pub response: TmfResponse,
    /// Initiator Task Tag of the request.
    pub itt: u32,
    /// StatSN.
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
}

impl TaskMgmtResponse {
    pub(super) fn parse(b: &Bhs) -> Result<Self, PduError> {
        Ok(TaskMgmtResponse {
            response: TmfResponse(b.u8(2)),
            itt: b.itt(),
            statsn: b.u32(24),
            exp_cmdsn: b.u32(28),
            max_cmdsn: b.u32(32),
        })
    }

    pub(super) fn to_bhs(&self) -> Bhs {
        let mut b = Bhs::new(Opcode::TASK_MGMT_RESPONSE);
        b.set_u8(1, 0x80);
        b.set_u8(2, self.response.0);
        b.set_u32(16, self.itt);
        b.set_u32(24, self.statsn);
        b.set_u32(28, self.exp_cmdsn);
        b.set_u32(32, self.max_cmdsn);
        b
    }
}
