//! What flows between the core and its driver for one request: the
//! path chosen ([`Ticket`], [`Selection`]), how it ended ([`Completion`]),
//! what happens next ([`Verdict`], [`Fence`]), and what the driver must do
//! for the paths ([`Action`]).

use std::time::{Duration, Instant};

use mpio_policies::PathId;

use crate::block::{Errno, IoError};
pub(super) use crate::failure::FailureCause;
use crate::stats::Op;

/// A request's attempt on a path, from [`DeviceCore::select`](crate::DeviceCore::select) to
/// [`DeviceCore::complete`](crate::DeviceCore::complete).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The path.
    pub path: PathId,
    /// The path's failure count when the request was sent: if this path
    /// fails while the request is out, the request may still be executed
    /// by the old nexus until failure number `epoch + 1` is fenced.
    pub epoch: u64,
    /// What the request does.
    pub op: Op,
    /// Its length.
    pub bytes: u64,
}

/// What to do with a request now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Send it on this path.
    Path(Ticket),
    /// No path is usable: wait for a change, at most until the instant
    /// (`None`: no limit).
    Hold(Option<Instant>),
    /// A write: wait until this fence is cleared (a path's predecessor,
    /// see [`DeviceCore::select`](super::DeviceCore::select)), then select again.
    Fence(Fence),
    /// Fail it.
    Fail(IoError),
}

/// How a request ended on its path, as classified by the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Done (GOOD status).
    Success,
    /// The path is at fault. `may_still_execute`: the old nexus has not
    /// provably terminated the command.
    PathFailure {
        /// Why.
        cause: FailureCause,
        /// The command may still be executed by the failed path.
        may_still_execute: bool,
    },
    /// A transient condition of the LU.
    Retry {
        /// Retry at once (UNIT ATTENTION) rather than after RetryInterval.
        immediate: bool,
        /// Why.
        why: String,
    },
    /// The device's own answer: returned to the caller.
    Fatal {
        /// What the caller gets.
        errno: Errno,
        /// Why.
        why: String,
    },
}

/// What the device does after a completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Complete the request successfully.
    Done,
    /// Send it again (on whatever path is selected then); first wait until
    /// `fence` is cleared when set.
    Redrive {
        /// The failed path's failure that must be fenced first.
        fence: Option<Fence>,
    },
    /// Send it again after this delay.
    Retry(Duration),
    /// Fail it.
    Fail(IoError),
}

/// A failure of a path that a data-modifying request must wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The path.
    pub path: PathId,
    /// The failure number to be cleared.
    pub epoch: u64,
}

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send TEST UNIT READY on the path and report with
    /// [`DeviceCore::probe_done`](crate::DeviceCore::probe_done) (probation, or verification of a ready
    /// path).
    Probe(PathId),
    /// Prove that failure `epoch` of `path` can no longer run commands
    /// (reinstate its session through one of `via`, healthy paths of the
    /// same portal group) and report with [`DeviceCore::fence_done`](crate::DeviceCore::fence_done).
    Fence {
        /// The failed path.
        path: PathId,
        /// Its failure number.
        epoch: u64,
        /// Paths whose portals can reach the failed path's nexus.
        via: Vec<PathId>,
    },
}
