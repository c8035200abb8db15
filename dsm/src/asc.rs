//! Additional sense code and qualifier (ASC/ASCQ) with the texts of SPC-4
//! Annex D ("ASC and ASCQ assignments", t10.org asc-num.txt) that matter to
//! a block initiator and a multipath layer.
//!
//! The table is deliberately partial: not-ready and ALUA states (04/xx),
//! medium and transport errors, CDB/parameter errors, the unit attentions a
//! multipath initiator must act on (29/xx resets and nexus loss, 2A/xx
//! parameter, reservation and capacity changes, 3F/xx inquiry and LUN
//! inventory changes), resource shortages, and the codes RFC 7143 section
//! 11.4.7.2 assigns to iSCSI errors. Anything else prints as hex.

use core::fmt;

/// An ASC/ASCQ pair (sense bytes 12-13 in fixed format, 2-3 in descriptor
/// format). Kept as two raw bytes so unknown codes survive.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AscAscq {
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
}

macro_rules! asc_table {
    ($( $(#[$m:meta])* $name:ident = ($asc:literal, $ascq:literal) => $text:literal; )*) => {
        impl AscAscq {
            $( $(#[$m])* #[doc = concat!("`", stringify!($asc), "/", stringify!($ascq), "` ", $text)]
               pub const $name: AscAscq = AscAscq { asc: $asc, ascq: $ascq }; )*
        }
        /// (asc, ascq, text), sorted by (asc, ascq) for binary search.
        const TABLE: &[(u8, u8, &str)] = &[ $( ($asc, $ascq, $text), )* ];
    };
}

asc_table! {
    NO_ADDITIONAL_SENSE_INFORMATION = (0x00, 0x00) => "NO ADDITIONAL SENSE INFORMATION";
    OPERATION_IN_PROGRESS = (0x00, 0x16) => "OPERATION IN PROGRESS";
    PERIPHERAL_DEVICE_WRITE_FAULT = (0x03, 0x00) => "PERIPHERAL DEVICE WRITE FAULT";
    LU_NOT_READY_CAUSE_NOT_REPORTABLE = (0x04, 0x00) => "LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE";
    LU_BECOMING_READY = (0x04, 0x01) => "LOGICAL UNIT IS IN PROCESS OF BECOMING READY";
    LU_NOT_READY_INITIALIZING_COMMAND_REQUIRED = (0x04, 0x02) => "LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED";
    LU_NOT_READY_MANUAL_INTERVENTION_REQUIRED = (0x04, 0x03) => "LOGICAL UNIT NOT READY, MANUAL INTERVENTION REQUIRED";
    LU_NOT_READY_FORMAT_IN_PROGRESS = (0x04, 0x04) => "LOGICAL UNIT NOT READY, FORMAT IN PROGRESS";
    LU_NOT_READY_REBUILD_IN_PROGRESS = (0x04, 0x05) => "LOGICAL UNIT NOT READY, REBUILD IN PROGRESS";
    LU_NOT_READY_RECALCULATION_IN_PROGRESS = (0x04, 0x06) => "LOGICAL UNIT NOT READY, RECALCULATION IN PROGRESS";
    LU_NOT_READY_OPERATION_IN_PROGRESS = (0x04, 0x07) => "LOGICAL UNIT NOT READY, OPERATION IN PROGRESS";
    LU_NOT_READY_LONG_WRITE_IN_PROGRESS = (0x04, 0x08) => "LOGICAL UNIT NOT READY, LONG WRITE IN PROGRESS";
    LU_NOT_READY_SELF_TEST_IN_PROGRESS = (0x04, 0x09) => "LOGICAL UNIT NOT READY, SELF-TEST IN PROGRESS";
    /// ALUA: the target port group is changing state; retry.
    LU_NOT_ACCESSIBLE_ALUA_TRANSITION = (0x04, 0x0a) => "LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION";
    /// ALUA: this path is standby; use another.
    LU_NOT_ACCESSIBLE_TARGET_PORT_STANDBY = (0x04, 0x0b) => "LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE";
    /// ALUA: this path is unavailable; use another.
    LU_NOT_ACCESSIBLE_TARGET_PORT_UNAVAILABLE = (0x04, 0x0c) => "LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN UNAVAILABLE STATE";
    LU_NOT_READY_STRUCTURE_CHECK_REQUIRED = (0x04, 0x0d) => "LOGICAL UNIT NOT READY, STRUCTURE CHECK REQUIRED";
    LU_NOT_READY_AUXILIARY_MEMORY_NOT_ACCESSIBLE = (0x04, 0x10) => "LOGICAL UNIT NOT READY, AUXILIARY MEMORY NOT ACCESSIBLE";
    LU_NOT_READY_NOTIFY_REQUIRED = (0x04, 0x11) => "LOGICAL UNIT NOT READY, NOTIFY (ENABLE SPINUP) REQUIRED";
    LU_NOT_READY_OFFLINE = (0x04, 0x12) => "LOGICAL UNIT NOT READY, OFFLINE";
    LU_NOT_READY_SPACE_ALLOCATION_IN_PROGRESS = (0x04, 0x14) => "LOGICAL UNIT NOT READY, SPACE ALLOCATION IN PROGRESS";
    LU_NOT_READY_SANITIZE_IN_PROGRESS = (0x04, 0x1b) => "LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS";
    LU_DOES_NOT_RESPOND_TO_SELECTION = (0x05, 0x00) => "LOGICAL UNIT DOES NOT RESPOND TO SELECTION";
    LU_COMMUNICATION_FAILURE = (0x08, 0x00) => "LOGICAL UNIT COMMUNICATION FAILURE";
    LU_COMMUNICATION_TIMEOUT = (0x08, 0x01) => "LOGICAL UNIT COMMUNICATION TIME-OUT";
    LU_COMMUNICATION_PARITY_ERROR = (0x08, 0x02) => "LOGICAL UNIT COMMUNICATION PARITY ERROR";
    WRITE_ERROR = (0x0c, 0x00) => "WRITE ERROR";
    WRITE_ERROR_AUTO_REALLOCATION_FAILED = (0x0c, 0x02) => "WRITE ERROR - AUTO REALLOCATION FAILED";
    WRITE_ERROR_RECOMMEND_REASSIGNMENT = (0x0c, 0x03) => "WRITE ERROR - RECOMMEND REASSIGNMENT";
    /// iSCSI (RFC 7143 11.4.7.2): unexpected unsolicited data.
    WRITE_ERROR_UNEXPECTED_UNSOLICITED_DATA = (0x0c, 0x0c) => "WRITE ERROR - UNEXPECTED UNSOLICITED DATA";
    /// iSCSI (RFC 7143 11.4.7.2): incorrect amount of data.
    WRITE_ERROR_NOT_ENOUGH_UNSOLICITED_DATA = (0x0c, 0x0d) => "WRITE ERROR - NOT ENOUGH UNSOLICITED DATA";
    LOGICAL_BLOCK_GUARD_CHECK_FAILED = (0x10, 0x01) => "LOGICAL BLOCK GUARD CHECK FAILED";
    LOGICAL_BLOCK_APPLICATION_TAG_CHECK_FAILED = (0x10, 0x02) => "LOGICAL BLOCK APPLICATION TAG CHECK FAILED";
    LOGICAL_BLOCK_REFERENCE_TAG_CHECK_FAILED = (0x10, 0x03) => "LOGICAL BLOCK REFERENCE TAG CHECK FAILED";
    UNRECOVERED_READ_ERROR = (0x11, 0x00) => "UNRECOVERED READ ERROR";
    READ_RETRIES_EXHAUSTED = (0x11, 0x01) => "READ RETRIES EXHAUSTED";
    UNRECOVERED_READ_ERROR_AUTO_REALLOCATE_FAILED = (0x11, 0x04) => "UNRECOVERED READ ERROR - AUTO REALLOCATE FAILED";
    /// iSCSI (RFC 7143 11.4.7.2): SNACK rejected.
    READ_ERROR_FAILED_RETRANSMISSION_REQUEST = (0x11, 0x13) => "READ ERROR - FAILED RETRANSMISSION REQUEST";
    RECORD_NOT_FOUND = (0x14, 0x01) => "RECORD NOT FOUND";
    PARAMETER_LIST_LENGTH_ERROR = (0x1a, 0x00) => "PARAMETER LIST LENGTH ERROR";
    MISCOMPARE_DURING_VERIFY_OPERATION = (0x1d, 0x00) => "MISCOMPARE DURING VERIFY OPERATION";
    INVALID_COMMAND_OPERATION_CODE = (0x20, 0x00) => "INVALID COMMAND OPERATION CODE";
    ACCESS_DENIED_NO_ACCESS_RIGHTS = (0x20, 0x02) => "ACCESS DENIED - NO ACCESS RIGHTS";
    LBA_OUT_OF_RANGE = (0x21, 0x00) => "LOGICAL BLOCK ADDRESS OUT OF RANGE";
    INVALID_FIELD_IN_CDB = (0x24, 0x00) => "INVALID FIELD IN CDB";
    LU_NOT_SUPPORTED = (0x25, 0x00) => "LOGICAL UNIT NOT SUPPORTED";
    INVALID_FIELD_IN_PARAMETER_LIST = (0x26, 0x00) => "INVALID FIELD IN PARAMETER LIST";
    PARAMETER_NOT_SUPPORTED = (0x26, 0x01) => "PARAMETER NOT SUPPORTED";
    PARAMETER_VALUE_INVALID = (0x26, 0x02) => "PARAMETER VALUE INVALID";
    WRITE_PROTECTED = (0x27, 0x00) => "WRITE PROTECTED";
    HARDWARE_WRITE_PROTECTED = (0x27, 0x01) => "HARDWARE WRITE PROTECTED";
    LU_SOFTWARE_WRITE_PROTECTED = (0x27, 0x02) => "LOGICAL UNIT SOFTWARE WRITE PROTECTED";
    /// Thin provisioning: the pool is out of space.
    SPACE_ALLOCATION_FAILED_WRITE_PROTECT = (0x27, 0x07) => "SPACE ALLOCATION FAILED WRITE PROTECT";
    NOT_READY_TO_READY_CHANGE = (0x28, 0x00) => "NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED";
    POWER_ON_RESET_OR_BUS_DEVICE_RESET = (0x29, 0x00) => "POWER ON, RESET, OR BUS DEVICE RESET OCCURRED";
    POWER_ON_OCCURRED = (0x29, 0x01) => "POWER ON OCCURRED";
    SCSI_BUS_RESET_OCCURRED = (0x29, 0x02) => "SCSI BUS RESET OCCURRED";
    BUS_DEVICE_RESET_FUNCTION_OCCURRED = (0x29, 0x03) => "BUS DEVICE RESET FUNCTION OCCURRED";
    DEVICE_INTERNAL_RESET = (0x29, 0x04) => "DEVICE INTERNAL RESET";
    TRANSCEIVER_MODE_CHANGED_TO_SINGLE_ENDED = (0x29, 0x05) => "TRANSCEIVER MODE CHANGED TO SINGLE-ENDED";
    TRANSCEIVER_MODE_CHANGED_TO_LVD = (0x29, 0x06) => "TRANSCEIVER MODE CHANGED TO LVD";
    I_T_NEXUS_LOSS_OCCURRED = (0x29, 0x07) => "I_T NEXUS LOSS OCCURRED";
    PARAMETERS_CHANGED = (0x2a, 0x00) => "PARAMETERS CHANGED";
    MODE_PARAMETERS_CHANGED = (0x2a, 0x01) => "MODE PARAMETERS CHANGED";
    LOG_PARAMETERS_CHANGED = (0x2a, 0x02) => "LOG PARAMETERS CHANGED";
    RESERVATIONS_PREEMPTED = (0x2a, 0x03) => "RESERVATIONS PREEMPTED";
    RESERVATIONS_RELEASED = (0x2a, 0x04) => "RESERVATIONS RELEASED";
    REGISTRATIONS_PREEMPTED = (0x2a, 0x05) => "REGISTRATIONS PREEMPTED";
    ASYMMETRIC_ACCESS_STATE_CHANGED = (0x2a, 0x06) => "ASYMMETRIC ACCESS STATE CHANGED";
    IMPLICIT_ASYMMETRIC_ACCESS_STATE_TRANSITION_FAILED = (0x2a, 0x07) => "IMPLICIT ASYMMETRIC ACCESS STATE TRANSITION FAILED";
    PRIORITY_CHANGED = (0x2a, 0x08) => "PRIORITY CHANGED";
    CAPACITY_DATA_HAS_CHANGED = (0x2a, 0x09) => "CAPACITY DATA HAS CHANGED";
    COMMAND_SEQUENCE_ERROR = (0x2c, 0x00) => "COMMAND SEQUENCE ERROR";
    PREVIOUS_RESERVATION_CONFLICT_STATUS = (0x2c, 0x09) => "PREVIOUS RESERVATION CONFLICT STATUS";
    COMMANDS_CLEARED_BY_ANOTHER_INITIATOR = (0x2f, 0x00) => "COMMANDS CLEARED BY ANOTHER INITIATOR";
    COMMANDS_CLEARED_BY_POWER_LOSS_NOTIFICATION = (0x2f, 0x01) => "COMMANDS CLEARED BY POWER LOSS NOTIFICATION";
    COMMANDS_CLEARED_BY_DEVICE_SERVER = (0x2f, 0x02) => "COMMANDS CLEARED BY DEVICE SERVER";
    MEDIUM_FORMAT_CORRUPTED = (0x31, 0x00) => "MEDIUM FORMAT CORRUPTED";
    THIN_PROVISIONING_SOFT_THRESHOLD_REACHED = (0x38, 0x07) => "THIN PROVISIONING SOFT THRESHOLD REACHED";
    MEDIUM_NOT_PRESENT = (0x3a, 0x00) => "MEDIUM NOT PRESENT";
    LOGICAL_UNIT_FAILURE = (0x3e, 0x01) => "LOGICAL UNIT FAILURE";
    TIMEOUT_ON_LOGICAL_UNIT = (0x3e, 0x02) => "TIMEOUT ON LOGICAL UNIT";
    LOGICAL_UNIT_FAILED_SELF_TEST = (0x3e, 0x03) => "LOGICAL UNIT FAILED SELF-TEST";
    TARGET_OPERATING_CONDITIONS_HAVE_CHANGED = (0x3f, 0x00) => "TARGET OPERATING CONDITIONS HAVE CHANGED";
    MICROCODE_HAS_BEEN_CHANGED = (0x3f, 0x01) => "MICROCODE HAS BEEN CHANGED";
    CHANGED_OPERATING_DEFINITION = (0x3f, 0x02) => "CHANGED OPERATING DEFINITION";
    INQUIRY_DATA_HAS_CHANGED = (0x3f, 0x03) => "INQUIRY DATA HAS CHANGED";
    DEVICE_IDENTIFIER_CHANGED = (0x3f, 0x05) => "DEVICE IDENTIFIER CHANGED";
    REPORTED_LUNS_DATA_HAS_CHANGED = (0x3f, 0x0e) => "REPORTED LUNS DATA HAS CHANGED";
    INTERNAL_TARGET_FAILURE = (0x44, 0x00) => "INTERNAL TARGET FAILURE";
    SCSI_PARITY_ERROR = (0x47, 0x00) => "SCSI PARITY ERROR";
    /// iSCSI (RFC 7143 11.4.7.2): data digest error.
    DATA_PHASE_CRC_ERROR_DETECTED = (0x47, 0x01) => "DATA PHASE CRC ERROR DETECTED";
    INFORMATION_UNIT_IUCRC_ERROR_DETECTED = (0x47, 0x03) => "INFORMATION UNIT iuCRC ERROR DETECTED";
    /// iSCSI (RFC 7143 11.4.7.2): protocol service CRC error.
    PROTOCOL_SERVICE_CRC_ERROR = (0x47, 0x05) => "PROTOCOL SERVICE CRC ERROR";
    /// iSCSI: a target event (e.g. session reinstatement) cleared commands.
    SOME_COMMANDS_CLEARED_BY_ISCSI_PROTOCOL_EVENT = (0x47, 0x7f) => "SOME COMMANDS CLEARED BY ISCSI PROTOCOL EVENT";
    INVALID_MESSAGE_ERROR = (0x49, 0x00) => "INVALID MESSAGE ERROR";
    DATA_PHASE_ERROR = (0x4b, 0x00) => "DATA PHASE ERROR";
    INVALID_TARGET_PORT_TRANSFER_TAG_RECEIVED = (0x4b, 0x01) => "INVALID TARGET PORT TRANSFER TAG RECEIVED";
    TOO_MUCH_WRITE_DATA = (0x4b, 0x02) => "TOO MUCH WRITE DATA";
    ACK_NAK_TIMEOUT = (0x4b, 0x03) => "ACK/NAK TIMEOUT";
    NAK_RECEIVED = (0x4b, 0x04) => "NAK RECEIVED";
    DATA_OFFSET_ERROR = (0x4b, 0x05) => "DATA OFFSET ERROR";
    INITIATOR_RESPONSE_TIMEOUT = (0x4b, 0x06) => "INITIATOR RESPONSE TIMEOUT";
    LOGICAL_UNIT_FAILED_SELF_CONFIGURATION = (0x4c, 0x00) => "LOGICAL UNIT FAILED SELF-CONFIGURATION";
    OVERLAPPED_COMMANDS_ATTEMPTED = (0x4e, 0x00) => "OVERLAPPED COMMANDS ATTEMPTED";
    INSUFFICIENT_RESERVATION_RESOURCES = (0x55, 0x02) => "INSUFFICIENT RESERVATION RESOURCES";
    INSUFFICIENT_RESOURCES = (0x55, 0x03) => "INSUFFICIENT RESOURCES";
    INSUFFICIENT_REGISTRATION_RESOURCES = (0x55, 0x04) => "INSUFFICIENT REGISTRATION RESOURCES";
    FAILURE_PREDICTION_THRESHOLD_EXCEEDED = (0x5d, 0x00) => "FAILURE PREDICTION THRESHOLD EXCEEDED";
    LOW_POWER_CONDITION_ON = (0x5e, 0x00) => "LOW POWER CONDITION ON";
}

impl AscAscq {
    /// An ASC/ASCQ pair.
    pub const fn new(asc: u8, ascq: u8) -> AscAscq {
        AscAscq { asc, ascq }
    }

    /// The SPC-4 text for this code, if the table here has it. Two ranges
    /// are recognised by ASC alone (SPC-4 Annex D lists them with "NN"):
    /// 40/NN and 4D/NN.
    pub fn description(self) -> Option<&'static str> {
        if let Ok(i) = TABLE.binary_search_by_key(&(self.asc, self.ascq), |&(a, q, _)| (a, q)) {
            return TABLE.get(i).map(|&(_, _, t)| t);
        }
        match self.asc {
            0x40 if self.ascq >= 0x80 => Some("DIAGNOSTIC FAILURE ON COMPONENT NN (80H-FFH)"),
            0x4d => Some("TAGGED OVERLAPPED COMMANDS (NN = TASK TAG)"),
            _ => None,
        }
    }

    /// True for the ranges SPC-4 reserves for vendors: ASC 80h-FFh, or
    /// ASCQ 80h-FFh with a standard ASC.
    pub const fn is_vendor_specific(self) -> bool {
        self.asc >= 0x80 || self.ascq >= 0x80
    }
}

impl fmt::Display for AscAscq {
    /// `TEXT (AA/QQ)`, or `ASC/ASCQ AA/QQ` (marked vendor specific where
    /// SPC-4 says so) when the table has no text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.description() {
            Some(t) => write!(f, "{t} ({:02X}/{:02X})", self.asc, self.ascq),
            None if self.is_vendor_specific() => {
                write!(f, "ASC/ASCQ {:02X}/{:02X} (VENDOR SPECIFIC)", self.asc, self.ascq)
            }
            None => write!(f, "ASC/ASCQ {:02X}/{:02X}", self.asc, self.ascq),
        }
    }
}

impl fmt::Debug for AscAscq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AscAscq({:02X}/{:02X})", self.asc, self.ascq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for w in TABLE.windows(2) {
            assert!((w[0].0, w[0].1) < (w[1].0, w[1].1), "{:?} !< {:?}", w[0], w[1]);
        }
    }

    #[test]
    fn brief_codes_all_have_text() {
        // The codes the multipath layer must be able to name.
        let mut want = vec![(0x0c, 0), (0x11, 0), (0x20, 0), (0x21, 0), (0x24, 0), (0x25, 0)];
        want.extend((0..=0x0c).map(|q| (0x04, q)));
        want.extend([(0x27, 0), (0x28, 0), (0x3a, 0), (0x3f, 0x03), (0x3f, 0x0e)]);
        want.extend((0..=7).map(|q| (0x29, q)));
        want.extend((1..=7).map(|q| (0x2a, q)));
        want.extend([(0x2a, 0x09), (0x44, 0), (0x47, 0), (0x4b, 0), (0x55, 0x03)]);
        for (a, q) in want {
            assert!(AscAscq::new(a, q).description().is_some(), "{a:02x}/{q:02x}");
        }
    }

    #[test]
    fn display() {
        assert_eq!(
            AscAscq::LU_NOT_READY_INITIALIZING_COMMAND_REQUIRED.to_string(),
            "LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED (04/02)"
        );
        assert_eq!(AscAscq::new(0x5a, 0x07).to_string(), "ASC/ASCQ 5A/07");
        assert_eq!(AscAscq::new(0x80, 0x01).to_string(), "ASC/ASCQ 80/01 (VENDOR SPECIFIC)");
        assert_eq!(AscAscq::new(0x04, 0x81).to_string(), "ASC/ASCQ 04/81 (VENDOR SPECIFIC)");
        assert_eq!(format!("{:?}", AscAscq::RESERVATIONS_PREEMPTED), "AscAscq(2A/03)");
        // RFC 7143 11.4.7.2 assigns 0C/0C and 0C/0D to iSCSI's data errors.
        assert_eq!(AscAscq::WRITE_ERROR_UNEXPECTED_UNSOLICITED_DATA, AscAscq::new(0x0c, 0x0c));
        assert_eq!(AscAscq::WRITE_ERROR_NOT_ENOUGH_UNSOLICITED_DATA, AscAscq::new(0x0c, 0x0d));
        assert!(AscAscq::new(0x4d, 0x17).description().is_some());
        assert!(AscAscq::new(0x40, 0x81).description().is_some());
        assert!(AscAscq::new(0x40, 0x01).description().is_none());
    }
}
