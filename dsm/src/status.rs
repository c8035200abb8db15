//! SCSI status (SAM-5 "Status codes"): the byte the iSCSI SCSI Response PDU
//! carries in its Status field (RFC 7143 section 11.4.2) when the iSCSI
//! Response field is "Command Completed at Target".

use crate::macros::wire_enum;

wire_enum! {
    /// SCSI status code (SAM-5, table "Status codes"). Unknown and obsolete
    /// values are kept as they are; `Debug`/`Display` print them in hex.
    pub struct ScsiStatus(u8);
    /// The command completed successfully.
    GOOD = 0x00 => "GOOD";
    /// Sense data describes an error or exception; see [`crate::Sense`].
    CHECK_CONDITION = 0x02 => "CHECK CONDITION";
    /// PRE-FETCH: the requested blocks will fit the cache.
    CONDITION_MET = 0x04 => "CONDITION MET";
    /// The logical unit is busy; retry later. Not a path failure.
    BUSY = 0x08 => "BUSY";
    /// Obsolete (linked commands, SAM-2).
    INTERMEDIATE = 0x10 => "INTERMEDIATE";
    /// Obsolete (linked commands, SAM-2).
    INTERMEDIATE_CONDITION_MET = 0x14 => "INTERMEDIATE-CONDITION MET";
    /// Another I_T nexus holds a conflicting reservation. Retrying on
    /// another path of the same initiator does not help.
    RESERVATION_CONFLICT = 0x18 => "RESERVATION CONFLICT";
    /// Obsolete (SAM-2).
    COMMAND_TERMINATED = 0x22 => "COMMAND TERMINATED";
    /// The task set (queue) is full; retry when a command completes.
    TASK_SET_FULL = 0x28 => "TASK SET FULL";
    /// An auto contingent allegiance condition is active (NACA).
    ACA_ACTIVE = 0x30 => "ACA ACTIVE";
    /// The command was aborted by another I_T nexus (TAS = 1).
    TASK_ABORTED = 0x40 => "TASK ABORTED";
}

impl ScsiStatus {
    /// True for GOOD and CONDITION MET, the two statuses that mean the
    /// command did what was asked.
    pub const fn is_success(self) -> bool {
        matches!(self.0, 0x00 | 0x04)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_hex() {
        assert_eq!(ScsiStatus::CHECK_CONDITION.to_string(), "CHECK CONDITION");
        assert_eq!(format!("{:?}", ScsiStatus::CHECK_CONDITION), "CHECK_CONDITION");
        assert_eq!(format!("{:?}", ScsiStatus(0x18)), "RESERVATION_CONFLICT");
        assert_eq!(ScsiStatus(0x1c).to_string(), "0x1c");
        assert_eq!(format!("{:?}", ScsiStatus(0x1c)), "ScsiStatus(0x1c)");
        assert_eq!(ScsiStatus::from(0x28), ScsiStatus::TASK_SET_FULL);
        assert_eq!(u8::from(ScsiStatus::TASK_ABORTED), 0x40);
        assert!(ScsiStatus::GOOD.is_success());
        assert!(!ScsiStatus::BUSY.is_success());
    }
}
