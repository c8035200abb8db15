//! One path's state in the core, by what it owns: its load (for the
//! policies), its probation (probes and damping), its write fence, its
//! failback hold and its timers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mpio_policies::{PathId, PathTable, PathView};

use super::{PathStatus, PathTimer, PathTimers};
pub(super) use crate::failure::FailureCause;
use crate::stats::PathStats;

/// When a path may take I/O back (failback hold).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Held {
    /// When an administrator says (`mpio failback`).
    Manual,
    /// When [`PathTimer::Failback`] fires.
    Delayed,
}

/// What a path carries now and how fast it went, for the policies.
#[derive(Debug, Default)]
pub(super) struct Load {
    pub(super) in_flight: u32,
    pub(super) bytes_in_flight: u64,
    pub(super) latency_ns: u64,
    pub(super) bytes_per_sec: u64,
    /// Last completion that updated the figures above.
    pub(super) figures_at: Option<Instant>,
}

/// How a path comes back: its probes and the failures that damp them.
#[derive(Debug, Default)]
pub(super) struct Probation {
    /// A probe is out ([`Action::Probe`] until [`DeviceCore::probe_done`]).
    pub(super) probe_out: bool,
    /// Failures within the damping window.
    pub(super) recent_failures: VecDeque<Instant>,
}

/// The write fence of a path: which of its failures may still run
/// commands on the old nexus.
///
/// Epoch 1 is the path's predecessor: the nexus a previous daemon (killed,
/// crashed, restarted by systemd) may have left with the same ISID, whose
/// last commands can still be on their way to the target, in a dead
/// process's socket or on the wire. Until it is fenced (this path's first
/// login reinstates the ISID, a fence login through a portal of its group
/// does, or the fence timeout passes) no write goes on any path: a stale
/// copy landing after a newer write would undo it.
#[derive(Debug, Default)]
pub(super) struct FenceState {
    /// Failures so far (the fence epochs), the predecessor included.
    pub(super) epoch: u64,
    /// Failures up to this one are fenced.
    pub(super) cleared: u64,
    /// A fence login is out ([`Action::Fence`] until
    /// [`DeviceCore::fence_done`]).
    pub(super) out: bool,
    /// The path came with the device's start, so epoch
    /// [`FenceState::PREDECESSOR`] is a previous daemon's nexus; a path
    /// added to a running device has none (its ISID was logged out, if
    /// this daemon ever used it).
    pub(super) predecessor: bool,
}

impl FenceState {
    /// The predecessor's epoch.
    pub(super) const PREDECESSOR: u64 = 1;
}

#[derive(Debug)]
pub(super) struct PathState {
    pub(super) name: String,
    pub(super) status: PathStatus,
    /// Removed for good: a tombstone that only keeps the fence bookkeeping.
    pub(super) removed: bool,
    /// The last login failure reported as an event (a path retrying a dead
    /// portal reports each new reason once, not every attempt).
    pub(super) login_reported: Option<String>,
    pub(super) session_up: bool,
    /// The path failed on a completion while its session still looked up:
    /// the session's own down event, if it follows, is the same incident
    /// (counted once for damping, fenced once).
    pub(super) session_may_follow: bool,
    /// Portal group the path's nexus belongs to (target name + TPGT): a
    /// reinstatement through any portal of it reaches the same nexus.
    pub(super) group: Option<String>,
    pub(super) load: Load,
    pub(super) probation: Probation,
    pub(super) fence: FenceState,
    /// The failback hold: when the path, ready again, may take I/O back.
    pub(super) held: Option<Held>,
    pub(super) timers: PathTimers,
    pub(super) last_cause: Option<FailureCause>,
    pub(super) since: Instant,
    pub(super) stats: PathStats,
}

impl PathState {
    /// A new path, with nothing to fence.
    pub(super) fn new(name: String, now: Instant) -> PathState {
        PathState {
            name,
            status: PathStatus::Connecting,
            removed: false,
            login_reported: None,
            session_up: false,
            session_may_follow: false,
            group: None,
            load: Load::default(),
            probation: Probation::default(),
            fence: FenceState::default(),
            held: None,
            timers: PathTimers::default(),
            last_cause: None,
            since: now,
            stats: PathStats::default(),
        }
    }

    /// A path of a starting device: what a previous daemon may have left
    /// on its ISID is to be fenced, by `fence_timeout` at the latest (the
    /// target has discarded it by then).
    pub(super) fn with_predecessor(mut self, now: Instant, fence_timeout: Duration) -> PathState {
        self.fence.epoch = FenceState::PREDECESSOR;
        self.fence.predecessor = true;
        self.timers.set(PathTimer::FenceDeadline, now + fence_timeout);
        self
    }

    /// Arms the next probe, or none.
    pub(super) fn set_probe(&mut self, at: Option<Instant>) {
        match at {
            Some(at) => self.timers.set(PathTimer::Probe, at),
            None => self.timers.stop(PathTimer::Probe),
        }
    }

    /// Ends a failback hold.
    pub(super) fn release_failback(&mut self) {
        self.held = None;
        self.timers.stop(PathTimer::Failback);
    }

    /// Failures up to `epoch` can no longer run commands; with every
    /// failure fenced, no fence timer is left.
    pub(super) fn fenced(&mut self, epoch: u64) {
        self.fence.cleared = self.fence.cleared.max(epoch);
        if self.fence.cleared >= self.fence.epoch {
            self.timers.stop(PathTimer::FenceRetry);
            self.timers.stop(PathTimer::FenceDeadline);
        }
    }

    pub(super) fn usable(&self) -> bool {
        self.status == PathStatus::Ready
    }

    /// Part of the device for the policy and the administrator: neither gone
    /// nor on its way out.
    pub(super) fn live(&self) -> bool {
        !self.removed && self.status != PathStatus::Removing
    }

    /// Out of service by an administrator's decision: keeps its status
    /// through failures of its session.
    pub(super) fn out_by_admin(&self) -> bool {
        matches!(self.status, PathStatus::Disabled | PathStatus::Removing)
    }

    /// What the policy sees of this path.
    pub(super) fn view(&self, id: PathId) -> PathView {
        PathView {
            id,
            ready: self.usable(),
            failback_held: self.held.is_some(),
            in_flight: self.load.in_flight,
            bytes_in_flight: self.load.bytes_in_flight,
            latency_ns: self.load.latency_ns,
            bytes_per_sec: self.load.bytes_per_sec,
        }
    }
}

/// The table as policy validation sees it: paths being removed and gone
/// are holes.
pub(super) struct Table<'a>(pub(super) &'a [PathState]);

impl PathTable for Table<'_> {
    fn slots(&self) -> usize {
        self.0.len()
    }

    fn name(&self, id: PathId) -> Option<&str> {
        self.0.get(id).filter(|p| p.live()).map(|p| p.name.as_str())
    }
}
