//! How a command ended, as the core needs it: the SCSI outcome classified
//! ([`mpio_dsm::classify`]), or the transport's failure turned into the
//! path's failure cause with whether the failed nexus may still execute
//! the command (which decides the write fence).

use mpio_dsm::classify::{ErrorClass, RetryKind, classify};
use mpio_dsm::{ScsiStatus, Sense};
use mpio_transport::login::LoginError;
use mpio_transport::{ConnectionFailure, ScsiResult, TaskError};

use crate::block::Errno;
use crate::core::{Completion, FailureCause};
use crate::failure::CauseKind;

/// Maps a command's outcome to what the core needs to decide.
pub(super) fn classify_result(r: &Result<ScsiResult, TaskError>) -> Completion {
    match r {
        Ok(r) => {
            let sense = r.sense.as_deref().and_then(|s| Sense::parse(s).ok());
            match classify(ScsiStatus(r.status), sense.as_ref()) {
                ErrorClass::Success => Completion::Success,
                ErrorClass::PathFailure(f) => Completion::PathFailure {
                    cause: FailureCause::new(CauseKind::PathError, format!("{}: {}", f.as_str(), describe(r, &sense))),
                    may_still_execute: false,
                },
                ErrorClass::Retry(k) => Completion::Retry { immediate: k.immediate(), why: describe(r, &sense) },
                ErrorClass::Fatal(k) => Completion::Fatal { errno: k.errno(), why: describe(r, &sense) },
            }
        }
        Err(TaskError::ConnectionLost { reason, cleared }) => {
            Completion::PathFailure { cause: failure_cause(reason), may_still_execute: !cleared }
        }
        // The abort was confirmed: the target will not run it.
        Err(TaskError::TimedOut(d)) => Completion::PathFailure {
            cause: FailureCause::new(CauseKind::IoTimeout, format!("command aborted after {d:?}")),
            may_still_execute: false,
        },
        // Terminated by a task management function (a LUN reset from
        // another nexus, or ours): not run; send it again.
        Err(TaskError::Aborted) => Completion::Retry { immediate: true, why: "command aborted by a reset".into() },
        Err(TaskError::TargetFailure(code)) => Completion::PathFailure {
            cause: FailureCause::new(CauseKind::TargetFailure, format!("iSCSI response {code:#04x}")),
            may_still_execute: false,
        },
        Err(TaskError::Rejected(reason)) => Completion::PathFailure {
            cause: FailureCause::new(CauseKind::Rejected, reason.to_string()),
            may_still_execute: false,
        },
        Err(TaskError::SessionClosed | TaskError::SessionFailed(_)) => Completion::PathFailure {
            cause: FailureCause::new(CauseKind::Connection, "session closed"),
            may_still_execute: true,
        },
        Err(e) => Completion::Fatal { errno: Errno::Io, why: e.to_string() },
    }
}

/// The command ended in UNIT ATTENTION 2A/09 (CAPACITY DATA HAS
/// CHANGED): the LU's capacity is to be read again (it is retried all the
/// same, as every unit attention is).
pub(super) fn reports_capacity_change(r: &Result<ScsiResult, TaskError>) -> bool {
    let Ok(r) = r else { return false };
    let Some(sense) = r.sense.as_deref().and_then(|s| Sense::parse(s).ok()) else { return false };
    classify(ScsiStatus(r.status), Some(&sense)) == ErrorClass::Retry(RetryKind::CapacityChanged)
}

pub(super) fn describe(r: &ScsiResult, sense: &Option<Sense>) -> String {
    match sense {
        Some(s) => format!("{}: {s}", ScsiStatus(r.status)),
        None => ScsiStatus(r.status).to_string(),
    }
}

/// The Microsoft iSCSI initiator's event ID for a failed login attempt.
pub(super) fn login_seed_event(f: &ConnectionFailure) -> Option<u32> {
    match f {
        ConnectionFailure::Connect { .. } => Some(1),
        ConnectionFailure::Login(e) => Some(match e {
            LoginError::Timeout(_) => 43,
            LoginError::Closed { .. } => 59,
            LoginError::AuthDowngrade(_) => 38,
            LoginError::ChapRequired => 40,
            LoginError::NoAuthMethod => 41,
            LoginError::Protocol(_) => 11,
            LoginError::RedirectLoop { .. } => 12,
            _ => 10,
        }),
        _ => None,
    }
}

pub(super) fn failure_cause(f: &ConnectionFailure) -> FailureCause {
    let kind = match f {
        ConnectionFailure::NopTimeout(_) => CauseKind::NopTimeout,
        ConnectionFailure::TaskMgmtTimeout(_) => CauseKind::IoTimeout,
        ConnectionFailure::Login(_) => CauseKind::Login,
        ConnectionFailure::Connect { .. } => CauseKind::Connect,
        ConnectionFailure::Protocol(_) => CauseKind::Protocol,
        _ => CauseKind::Connection,
    };
    FailureCause::new(kind, f.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use mpio_transport::pdu::{RejectReason, Residual};

    use super::*;

    fn answered(status: u8, sense: Option<(u8, u8, u8)>) -> Result<ScsiResult, TaskError> {
        // Fixed-format sense (SPC-4): key in byte 2, ASC/ASCQ in 12-13.
        let sense = sense
            .map(|(key, asc, ascq)| Bytes::from(vec![0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0]));
        Ok(ScsiResult { status, sense, data: Default::default(), residual: Residual::None })
    }

    /// The cause and the write fence decision of a path failure.
    fn path_failure(r: &Result<ScsiResult, TaskError>) -> (CauseKind, bool) {
        match classify_result(r) {
            Completion::PathFailure { cause, may_still_execute } => (cause.kind, may_still_execute),
            other => panic!("not a path failure: {other:?}"),
        }
    }

    fn lost(reason: ConnectionFailure, cleared: bool) -> Result<ScsiResult, TaskError> {
        Err(TaskError::ConnectionLost { reason, cleared })
    }

    #[test]
    fn may_still_execute_decides_the_write_fence() {
        // The connection died with the task unanswered: the old nexus may
        // still run it, so a write waits for the fence.
        let reset = ConnectionFailure::Closed("reset by peer".into());
        assert_eq!(path_failure(&lost(reset.clone(), false)), (CauseKind::Connection, true));
        // The target terminated it (the session was reinstated, or the
        // connection's tasks were cleared): no fence.
        assert_eq!(path_failure(&lost(reset, true)), (CauseKind::Connection, false));
        // The failure's kind follows the connection's.
        let nop = ConnectionFailure::NopTimeout(Duration::from_secs(5));
        assert_eq!(path_failure(&lost(nop, false)), (CauseKind::NopTimeout, true));
        let tmf = ConnectionFailure::TaskMgmtTimeout(Duration::from_secs(5));
        assert_eq!(path_failure(&lost(tmf, false)), (CauseKind::IoTimeout, true));
        let protocol = ConnectionFailure::Protocol("bad PDU".into());
        assert_eq!(path_failure(&lost(protocol, false)), (CauseKind::Protocol, true));
        // A session that closed or failed under the command: nothing says
        // the target dropped it.
        assert_eq!(path_failure(&Err(TaskError::SessionClosed)), (CauseKind::Connection, true));
        assert_eq!(path_failure(&Err(TaskError::SessionFailed("gone".into()))), (CauseKind::Connection, true));
        // Answered, or confirmed aborted: the target will not run it.
        assert_eq!(path_failure(&Err(TaskError::TimedOut(Duration::from_secs(30)))), (CauseKind::IoTimeout, false));
        assert_eq!(path_failure(&Err(TaskError::TargetFailure(0x01))), (CauseKind::TargetFailure, false));
        assert_eq!(path_failure(&Err(TaskError::Rejected(RejectReason::PROTOCOL_ERROR))), (CauseKind::Rejected, false));
        // NOT READY 04/0B (ALUA standby): the path, not the LU.
        assert_eq!(path_failure(&answered(2, Some((0x02, 0x04, 0x0b)))), (CauseKind::PathError, false));
    }

    #[test]
    fn answers_of_the_lu_are_not_path_failures() {
        assert_eq!(classify_result(&answered(0, None)), Completion::Success);
        // RESERVATION CONFLICT goes to the caller.
        let Completion::Fatal { errno, why } = classify_result(&answered(0x18, None)) else { panic!() };
        assert_eq!(errno, Errno::ReservationConflict, "{why}");
        // UNIT ATTENTION 29/00 (power on, reset): retried at once.
        let Completion::Retry { immediate, .. } = classify_result(&answered(2, Some((0x06, 0x29, 0x00)))) else {
            panic!()
        };
        assert!(immediate);
        // UNIT ATTENTION 2A/09: retried at once, and the capacity read
        // again; other attentions are not capacity changes.
        let resized = answered(2, Some((0x06, 0x2a, 0x09)));
        assert!(matches!(classify_result(&resized), Completion::Retry { immediate: true, .. }));
        assert!(reports_capacity_change(&resized));
        assert!(!reports_capacity_change(&answered(2, Some((0x06, 0x29, 0x00)))));
        assert!(!reports_capacity_change(&answered(2, Some((0x06, 0x2a, 0x03)))));
        assert!(!reports_capacity_change(&answered(0, None)));
        // Terminated by a task management function: sent again at once.
        assert!(matches!(classify_result(&Err(TaskError::Aborted)), Completion::Retry { immediate: true, .. }));
        // An invalid request never left: EIO, no failover.
        let Completion::Fatal { errno, .. } = classify_result(&Err(TaskError::Invalid("too long".into()))) else {
            panic!()
        };
        assert_eq!(errno, Errno::Io);
    }
}
