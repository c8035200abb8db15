//! One-line failure messages that name the problem and the fix.

use mpio_dsm::classify::errno;
use mpio_dsm::{ScsiStatus, Sense, SenseKey};
use mpio_mpath::IoError;
use mpio_mpath::scsi::ScsiError;
use mpio_transport::ConnectionFailure;

/// A connection failure as an administrator wants to read it.
pub(crate) fn connection_failure(f: &ConnectionFailure) -> String {
    match f {
        ConnectionFailure::Connect { portal, reason } => {
            format!("cannot connect to {portal}: {reason}: check that the target runs and listens on that portal")
        }
        ConnectionFailure::Closed(reason) => {
            format!("the target closed the connection ({reason}): check the target's log")
        }
        other => other.to_string(),
    }
}

/// The error chain as one line, with the fix for the SCSI conditions an
/// operator runs into most.
pub(crate) fn error_line(e: &anyhow::Error) -> String {
    let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
    let mut line = chain.join(": ");
    let sense = e.chain().find_map(|c| c.downcast_ref::<ScsiError>()).and_then(ScsiError::sense);
    if let Some(hint) = sense.and_then(scsi_hint) {
        line.push_str(": ");
        line.push_str(hint);
    }
    if let Some(ScsiError::Status { status, .. }) = e.chain().find_map(|c| c.downcast_ref::<ScsiError>())
        && *status == ScsiStatus::RESERVATION_CONFLICT
    {
        line.push_str(": ");
        line.push_str(RESERVATION_CONFLICT);
    }
    line
}

const RESERVATION_CONFLICT: &str = "another initiator holds a persistent reservation on this LU";
const WRITE_PROTECTED: &str = "the LU is write-protected";

/// A multipath device's error with the same fixes, chosen by its errno
/// (the device has classified the SCSI answer already).
pub(crate) fn io_error(e: &IoError) -> String {
    let hint = match e.errno {
        errno::EBADE => Some(RESERVATION_CONFLICT),
        errno::EROFS => Some(WRITE_PROTECTED),
        _ => None,
    };
    match hint {
        Some(h) => format!("{e}: {h}"),
        None => e.to_string(),
    }
}

fn scsi_hint(sense: &Sense) -> Option<&'static str> {
    let asc = sense.asc;
    Some(match (sense.key, asc) {
        (SenseKey::ILLEGAL_REQUEST, 0x25) => "no such LUN: mpio scsi report-luns lists them",
        (SenseKey::NOT_READY, 0x04) => "the LU is not ready: check that it is online on the target",
        (SenseKey::NOT_READY, 0x3a) => "no medium: the target has no backing store for this LU",
        (SenseKey::DATA_PROTECT, _) => WRITE_PROTECTED,
        (SenseKey::ILLEGAL_REQUEST, 0x20) => "the target does not support this command",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use mpio_transport::TaskError;

    use super::*;

    #[test]
    fn the_error_line_holds_each_cause_once() {
        let lost =
            TaskError::ConnectionLost { reason: ConnectionFailure::Closed("reset by peer".into()), cleared: false };
        let e = anyhow::Error::from(ScsiError::Transport { op: "INQUIRY", error: lost });
        let line = error_line(&e);
        assert_eq!(
            line,
            "INQUIRY: connection lost (connection closed: reset by peer); the target may still execute the task"
        );
        let e = e.context("cannot read the LU's identity");
        assert_eq!(error_line(&e).matches("connection lost").count(), 1, "{}", error_line(&e));
    }
}
