//! The multipath device as a sans-I/O state machine: the path table and
//! path states, the policy, the all-paths-down hold, probation, failback,
//! damping of flapping paths and the write fence. No sockets and no
//! clock: every input carries `now`, and what must be done (probe a path,
//! fence one) comes out of [`DeviceCore::poll_action`]. The async
//! [`crate::Device`] drives it; the tests drive it with a virtual clock.
//!
//! Path states (what `mpio path list` shows):
//!
//! ```text
//!  add_path / new
//!      v
//!  connecting --claimed--> ready (active | standby, per the policy)
//!      ^                     |  \
//!      |              failure|   `--admin--> disabled --reinstate--> probation
//!      |                     v
//!      |   session down -> reconnecting --session up--> probation --N probes--> ready
//!      |                                        ^   (waits first when the
//!      `-- (a path whose session stays up       |    path keeps failing)
//!           goes straight to probation) --------'
//!
//!  any state --remove_path--> removing --drained, logged out (path_removed)--> gone
//! ```
//!
//! # Path ids
//!
//! A [`PathId`] is the path's position in the table and never changes: policies,
//! tickets, fences and events name paths by id. A removed path leaves its slot as a
//! tombstone: it keeps its fence bookkeeping (a write caught on it may still wait for
//! its old nexus to be fenced) but has no name, no snapshot entry and no view, and
//! policy validation treats it as a hole ([`mpio_policies::PathTable`]). Ids are not
//! reused, so the table grows by one slot per path ever added.
//!
//! # Before the first path is claimed
//!
//! A new device has no usable path. Requests wait as in an all-paths-down hold
//! (per the hold mode, counted from the device's creation: `fail` fails them at
//! once, `queue` waits, a hold time fails them when it passes), but starting up is
//! not an outage: no hold event, and the time is not counted as all paths down
//! ([`DeviceSnapshot::starting`]).
//!
//! # Parts
//!
//! Split by what each part owns, as quinn-proto splits its connection:
//! `path` (one path's state: load, probation, fence, failback hold, its
//! timers), `timer` (the timer tables, `poll_timeout`, `handle_timeout`),
//! `data_path` (path choice, the hold, completions), `path_events`
//! (failures, logins, claims, probes, fences), `admin` (policy, roles,
//! paths added and removed), `request` and `snapshot` (the types the
//! driver and status see).

mod admin;
mod data_path;
mod path;
mod path_events;
mod request;
mod snapshot;
mod timer;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mpio_policies::{PathId, PathView, Policy, PolicySpec};

use crate::event::{DeviceEvent, EventKind};
pub use crate::failure::FailureCause;
use crate::timers::TimerConfig;

use path::{FenceState, Held, PathState, Table};
pub use request::{Action, Completion, Fence, Selection, Ticket, Verdict};
pub use snapshot::{DeviceCounters, DeviceSnapshot, Durability, PathPhase, PathSnapshot};
use timer::{DeviceTimers, PathTimer, PathTimers};

/// Wait before a failed fence login is tried again.
const FENCE_RETRY: Duration = Duration::from_secs(1);

/// A login the target refuses this many times in a row with the same
/// reason raises one [`EventKind::LoginRefusedRepeatedly`]: retrying will
/// not fix it, the target or the configuration must change.
pub const LOGIN_REFUSALS_REPEATED: u32 = 3;

/// The state of a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathStatus {
    /// Not logged in yet since the device started.
    Connecting,
    /// Back after a failure: passed `passed` probes so far.
    Probation {
        /// Clean probes passed.
        passed: u32,
    },
    /// May carry I/O.
    Ready,
    /// The session is down; the transport reconnects.
    Reconnecting,
    /// Failed and not coming back by itself (identity mismatch, login
    /// refused for good).
    Failed,
    /// Disabled by an administrator.
    Disabled,
    /// Being removed: takes no new I/O; what it carries completes, then its
    /// session logs out and the path is gone.
    Removing,
}

/// The sans-I/O device.
#[derive(Debug)]
pub struct DeviceCore {
    timers: TimerConfig,
    paths: Vec<PathState>,
    policy: Box<dyn Policy>,
    views: Vec<PathView>,
    active: Vec<PathId>,
    /// Since when no path is usable (from creation until the first claim).
    all_down_since: Option<Instant>,
    /// No path was usable yet since the device was created.
    starting: bool,
    hold_expired: bool,
    /// The device's own timers (the paths have theirs).
    device_timers: DeviceTimers,
    /// The device is shutting down: new requests fail with ESHUTDOWN.
    closing: bool,
    /// Requests waiting for a path or a fence ([`DeviceCore::wait_started`]).
    waiting: u64,
    events: VecDeque<DeviceEvent>,
    actions: VecDeque<Action>,
    counters: DeviceCounters,
}

impl DeviceCore {
    /// A device with these paths (all connecting) and policy.
    pub fn new(timers: TimerConfig, names: Vec<String>, policy: PolicySpec, now: Instant) -> DeviceCore {
        let paths = names
            .into_iter()
            .map(|name| PathState::new(name, now).with_predecessor(now, timers.fence_timeout))
            .collect();
        let mut core = DeviceCore {
            timers,
            paths,
            policy: policy.build(),
            views: Vec::new(),
            active: Vec::new(),
            all_down_since: Some(now),
            starting: true,
            hold_expired: false,
            device_timers: DeviceTimers::default(),
            closing: false,
            waiting: 0,
            events: VecDeque::new(),
            actions: VecDeque::new(),
            counters: DeviceCounters::default(),
        };
        core.rearm_hold();
        core
    }

    // ---- getters -------------------------------------------------------

    /// The names of the paths in the device (not those being removed), in
    /// table order.
    pub fn path_names(&self) -> Vec<String> {
        self.paths.iter().filter(|p| p.live()).map(|p| p.name.clone()).collect()
    }

    /// The name of the device's first path: the first in the table that
    /// is still in the device (not removed, not being removed).
    pub fn first_path(&self) -> Option<String> {
        self.paths.iter().find(|p| p.live()).map(|p| p.name.clone())
    }

    /// The path with this name, including one being removed.
    pub fn path_id(&self, name: &str) -> Option<PathId> {
        self.paths.iter().position(|p| !p.removed && p.name == name)
    }

    /// The name of a path, also after its removal (events name removed paths).
    pub fn path_name(&self, path: PathId) -> Option<&str> {
        self.paths.get(path).map(|p| p.name.as_str())
    }

    /// A path's status (`None` once removed).
    pub fn status(&self, path: PathId) -> Option<PathStatus> {
        self.paths.get(path).filter(|p| !p.removed).map(|p| p.status)
    }

    /// Commands in flight on a path (a path being removed is drained when
    /// this is 0).
    pub fn in_flight(&self, path: PathId) -> u32 {
        self.paths.get(path).map_or(0, |p| p.load.in_flight)
    }

    /// The timers.
    pub fn timers(&self) -> &TimerConfig {
        &self.timers
    }

    /// True when failure `fence.epoch` of `fence.path` can no longer run
    /// commands.
    pub fn fence_cleared(&self, fence: Fence) -> bool {
        self.paths.get(fence.path).is_none_or(|p| p.fence.cleared >= fence.epoch)
    }

    /// A path whose predecessor (what a previous daemon left with its
    /// ISID) may still execute commands: writes wait for its fence.
    fn unfenced_predecessor(&self) -> Option<Fence> {
        let path = self.paths.iter().position(|p| p.fence.predecessor && p.fence.cleared < FenceState::PREDECESSOR)?;
        Some(Fence { path, epoch: FenceState::PREDECESSOR })
    }

    // ---- output ----------------------------------------------------------

    /// The next event.
    pub fn poll_event(&mut self) -> Option<DeviceEvent> {
        self.events.pop_front()
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn event(
        &mut self,
        at: Instant,
        path: Option<PathId>,
        kind: EventKind,
        reason: impl Into<String>,
        seed: Option<u32>,
    ) {
        let path_name = path.and_then(|p| self.path_name(p)).map(str::to_owned);
        self.events.push_back(DeviceEvent { at, path, path_name, kind, reason: reason.into(), seed_event: seed });
    }
}

#[cfg(test)]
mod tests;
