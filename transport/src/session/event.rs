//! What a session reports: task completions, connection and session state
//! changes, and requests to its driver.

use std::time::Duration;

use bytes::Bytes;

use super::request::ScsiResult;
use crate::login::LoginError;
use crate::pdu::{RejectReason, TmfResponse};
use crate::portal::Portal;
use crate::text::KeyValue;

/// Why a task did not complete with a SCSI status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The connection carrying the task failed and the session did not
    /// recover within the recovery timeout. `cleared` tells whether the
    /// target has provably terminated the task (the connection was logged
    /// out, or the session reinstated): only then can a write be re-issued
    /// elsewhere without risk of the old one landing later.
    #[error("connection lost ({reason}); the target {}", if *cleared { "has terminated the task" } else { "may still execute the task" })]
    ConnectionLost {
        /// Why the connection failed.
        reason: ConnectionFailure,
        /// The task is known to be terminated at the target.
        cleared: bool,
    },
    /// The task timed out and was aborted with ABORT TASK, which the
    /// target confirmed: it will not execute it any more.
    #[error("command timed out after {0:?} and was aborted")]
    TimedOut(Duration),
    /// Aborted on request, or by a LUN reset / ABORT TASK SET; the target
    /// confirmed.
    #[error("command aborted")]
    Aborted,
    /// iSCSI service response "target failure" (RFC 7143 section 11.4.3).
    #[error("target failure (iSCSI response {0:#04x})")]
    TargetFailure(u8),
    /// The target rejected the PDU (RFC 7143 section 11.17).
    #[error("target rejected the command: {0}")]
    Rejected(RejectReason),
    /// A task management function answered other than "function complete".
    #[error("task management function failed: {0}")]
    TaskMgmt(TmfResponse),
    /// The session was closed (logout) or is closing.
    #[error("session is closed")]
    SessionClosed,
    /// The session failed for good (for example authentication failure on
    /// reconnect) and will not recover without an administrator.
    #[error("session failed: {0}")]
    SessionFailed(String),
    /// The request cannot be sent in this session (for example a SCSI
    /// command on a discovery session, or a write larger than allowed).
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// The successful outcome of a task, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A SCSI command completed with a status.
    Scsi(ScsiResult),
    /// A task management function completed ("function complete").
    TaskMgmt,
    /// A text exchange completed: the key=value pairs of the whole response.
    Text(Vec<KeyValue>),
    /// A NOP-Out was answered; the echoed data.
    Nop(Bytes),
    /// Logout completed.
    LoggedOut,
}

/// Why a connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionFailure {
    /// The TCP connection closed or errored (seed event 20).
    #[error("connection closed: {0}")]
    Closed(String),
    /// Could not connect.
    #[error("connect to {portal} failed: {reason}")]
    Connect {
        /// The portal.
        portal: Portal,
        /// The OS error.
        reason: String,
    },
    /// Login failed.
    #[error("login failed: {0}")]
    Login(LoginError),
    /// No answer to a NOP-Out within the timeout (seed event 48).
    #[error("no answer to NOP-Out within {0:?}")]
    NopTimeout(Duration),
    /// No answer to a task management request (seed event 49).
    #[error("no answer to a task management request within {0:?}")]
    TaskMgmtTimeout(Duration),
    /// A PDU broke the protocol (seed events 21-28, 42, 60).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The target asked us to log out, or will drop the connection
    /// (Async Message, seed event 32).
    #[error("target requested: {0}")]
    TargetRequest(String),
    /// Closed by logout or by the application.
    #[error("logged out")]
    LoggedOut,
}

/// Events, in the order they happened. Poll them with
/// [`super::Session::poll_event`] after every input.
#[derive(Debug)]
pub enum Event<T> {
    /// A task finished.
    TaskDone {
        /// The caller's token given at submission.
        token: T,
        /// The outcome.
        result: Result<Outcome, TaskError>,
    },
    /// The driver must open a TCP connection for `cid` to `portal` and
    /// then call [`super::Session::handle_connected`] (or
    /// [`super::Session::handle_connect_failed`]).
    Connect {
        /// The connection.
        cid: u16,
        /// Where to connect (may differ from the configured portal after a
        /// login redirection).
        portal: Portal,
    },
    /// The driver must close the socket of `cid` (after writing what is
    /// queued, when `flush` is set).
    Close {
        /// The connection.
        cid: u16,
        /// Write out queued bytes first (a Logout Response was received or
        /// a final PDU is queued).
        flush: bool,
    },
    /// A state change for observers.
    State(SessionEvent),
}

/// A state change of a session, for observers (the multipath layer,
/// metrics, logs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// Connection `cid` reached the full feature phase.
    ConnectionUp {
        /// The connection.
        cid: u16,
    },
    /// Connection `cid` failed.
    ConnectionDown {
        /// The connection.
        cid: u16,
        /// Why.
        reason: ConnectionFailure,
    },
    /// The session is logged in (first time or after reinstatement).
    SessionUp {
        /// TSIH assigned by the target.
        tsih: u16,
        /// True when this login reinstated an earlier session: every task
        /// of the old session is terminated at the target.
        reinstated: bool,
    },
    /// The session has no usable connection. `permanent` when it will not
    /// retry by itself (login refused for a reason retrying cannot fix, or
    /// reconnect disabled).
    SessionDown {
        /// Why the last connection went.
        reason: ConnectionFailure,
        /// No automatic recovery.
        permanent: bool,
    },
    /// A SCSI asynchronous event (AsyncEvent 0): sense data for a LUN,
    /// such as a capacity change.
    ScsiAsyncEvent {
        /// The LUN field.
        lun: u64,
        /// Sense data, without the SenseLength prefix.
        sense: Bytes,
    },
}
