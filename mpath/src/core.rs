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

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mpio_policies::{PathId, PathRole, PathTable, PathView, Policy, PolicyError, PolicyRequest, PolicySpec, Request};

use crate::event::{DeviceEvent, EventKind};
use crate::stats::{Op, PathStats};
use crate::timers::{FailbackMode, HoldMode, TimerConfig};

/// Wait before a failed fence login is tried again.
const FENCE_RETRY: Duration = Duration::from_secs(1);

/// A login the target refuses this many times in a row with the same
/// reason raises one [`EventKind::LoginRefusedRepeatedly`]: retrying will
/// not fix it, the target or the configuration must change.
pub const LOGIN_REFUSALS_REPEATED: u32 = 3;

/// Why a path failed; `kind` is the metrics label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureCause {
    /// A short stable label, one of [`FailureCause::KINDS`].
    pub kind: &'static str,
    /// Details.
    pub detail: String,
}

impl FailureCause {
    /// Every `kind` the device reports, so that metrics can show each at
    /// zero before it first happens (a counter that appears at 1 hides
    /// its first increase from `rate()`): the session's connection
    /// failed (`connection`, `connect`, `login`, `protocol`,
    /// `nop_timeout`), a command on the path timed out (`io_timeout`),
    /// failed with a path error (`path_error`), or was answered with an
    /// iSCSI failure or reject (`target_failure`, `rejected`); a probe
    /// in probation or a verification of a ready path failed (`probe`,
    /// `verify`); the identity check or a bring-up step refused the path
    /// (`claim`); an administrator disabled it (`admin`).
    pub const KINDS: [&'static str; 13] = [
        "connection",
        "connect",
        "login",
        "protocol",
        "nop_timeout",
        "io_timeout",
        "path_error",
        "target_failure",
        "rejected",
        "probe",
        "verify",
        "claim",
        "admin",
    ];

    /// A cause.
    pub fn new(kind: &'static str, detail: impl Into<String>) -> FailureCause {
        FailureCause { kind, detail: detail.into() }
    }
}

impl std::fmt::Display for FailureCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

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

/// A request's attempt on a path, from [`DeviceCore::select`] to
/// [`DeviceCore::complete`].
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
        /// Error number for the caller.
        errno: i32,
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

/// An error returned to the device's user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct IoError {
    /// What went wrong.
    pub kind: IoErrorKind,
    /// errno for the frontend (EIO, EBADE, ...).
    pub errno: i32,
    /// One line for the operator.
    pub message: String,
}

/// The classes of [`IoError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoErrorKind {
    /// No usable path within the hold time (or hold mode "fail").
    NoPath,
    /// The logical unit's own error (medium, illegal request,
    /// reservation conflict, ...).
    Device,
    /// A transient condition lasted beyond RetryCount.
    RetriesExhausted,
    /// The device is closing.
    Closed,
}

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send TEST UNIT READY on the path and report with
    /// [`DeviceCore::probe_done`] (probation, or verification of a ready
    /// path).
    Probe(PathId),
    /// Prove that failure `epoch` of `path` can no longer run commands
    /// (reinstate its session through one of `via`, healthy paths of the
    /// same portal group) and report with [`DeviceCore::fence_done`].
    Fence {
        /// The failed path.
        path: PathId,
        /// Its failure number.
        epoch: u64,
        /// Paths whose portals can reach the failed path's nexus.
        via: Vec<PathId>,
    },
}

/// When a path may take I/O back (failback hold).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    Manual,
    Until(Instant),
}

#[derive(Debug)]
struct PathState {
    name: String,
    status: PathStatus,
    /// Removed for good: a tombstone that only keeps the fence bookkeeping.
    removed: bool,
    /// The last login failure reported as an event (a path retrying a dead
    /// portal reports each new reason once, not every attempt).
    login_reported: Option<String>,
    session_up: bool,
    /// The path failed on a completion while its session still looked up:
    /// the session's own down event, if it follows, is the same incident
    /// (counted once for damping, fenced once).
    session_may_follow: bool,
    /// Portal group the path's nexus belongs to (target name + TPGT): a
    /// reinstatement through any portal of it reaches the same nexus.
    group: Option<String>,
    held: Option<Held>,
    in_flight: u32,
    bytes_in_flight: u64,
    latency_ns: u64,
    bytes_per_sec: u64,
    /// Last completion that updated the figures above.
    figures_at: Option<Instant>,
    /// Next probe (probation) or verification.
    next_probe: Option<Instant>,
    probe_out: bool,
    recent_failures: VecDeque<Instant>,
    /// Failures so far (the fence epochs).
    epoch: u64,
    /// Failures up to this one are fenced.
    cleared: u64,
    fence_deadline: Option<Instant>,
    fence_out: bool,
    /// A failed fence login is tried again then.
    fence_retry: Option<Instant>,
    last_cause: Option<FailureCause>,
    since: Instant,
    stats: PathStats,
}

impl PathState {
    fn new(name: String, now: Instant) -> PathState {
        PathState {
            name,
            status: PathStatus::Connecting,
            removed: false,
            login_reported: None,
            session_up: false,
            session_may_follow: false,
            group: None,
            held: None,
            in_flight: 0,
            bytes_in_flight: 0,
            latency_ns: 0,
            bytes_per_sec: 0,
            figures_at: None,
            next_probe: None,
            probe_out: false,
            recent_failures: VecDeque::new(),
            epoch: 0,
            cleared: 0,
            fence_deadline: None,
            fence_out: false,
            fence_retry: None,
            last_cause: None,
            since: now,
            stats: PathStats::default(),
        }
    }

    fn usable(&self) -> bool {
        self.status == PathStatus::Ready
    }

    /// Part of the device for the policy and the administrator: neither gone
    /// nor on its way out.
    fn live(&self) -> bool {
        !self.removed && self.status != PathStatus::Removing
    }

    /// Out of service by an administrator's decision: keeps its status
    /// through failures of its session.
    fn out_by_admin(&self) -> bool {
        matches!(self.status, PathStatus::Disabled | PathStatus::Removing)
    }

    /// What the policy sees of this path.
    fn view(&self, id: PathId) -> PathView {
        PathView {
            id,
            ready: self.usable(),
            failback_held: self.held.is_some(),
            in_flight: self.in_flight,
            bytes_in_flight: self.bytes_in_flight,
            latency_ns: self.latency_ns,
            bytes_per_sec: self.bytes_per_sec,
        }
    }
}

/// The table as policy validation sees it: paths being removed and gone
/// are holes.
struct Table<'a>(&'a [PathState]);

impl PathTable for Table<'_> {
    fn slots(&self) -> usize {
        self.0.len()
    }

    fn name(&self, id: PathId) -> Option<&str> {
        self.0.get(id).filter(|p| p.live()).map(|p| p.name.as_str())
    }
}

/// What a path looks like, for status and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathSnapshot {
    /// The path's id (events and policy specs name paths by id).
    pub id: PathId,
    /// Path name.
    pub name: String,
    /// State.
    pub status: PathStatus,
    /// One of [`PathSnapshot::STATES`].
    pub state: &'static str,
    /// What the policy's parameters give this path (primary/active,
    /// standby, a weight); `None` under the policies that name no paths.
    pub role: Option<PathRole>,
    /// Waiting for failback (manual or delayed).
    pub failback_held: bool,
    /// Commands in flight.
    pub in_flight: u32,
    /// Their bytes.
    pub bytes_in_flight: u64,
    /// Smoothed latency, nanoseconds.
    pub latency_ns: u64,
    /// Last failure cause.
    pub last_cause: Option<FailureCause>,
    /// Since when in this state.
    pub since: Instant,
    /// Counters.
    pub stats: PathStats,
}

impl PathSnapshot {
    /// The values of [`PathSnapshot::state`]: `active` and `standby` are
    /// ready (the policy uses the first, keeps the second in reserve).
    pub const STATES: [&'static str; 8] =
        ["active", "standby", "probation", "reconnecting", "failed", "disabled", "connecting", "removing"];
}

/// Device-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    /// Failovers (the paths carrying I/O changed because paths failed).
    pub failovers: u64,
    /// Failbacks.
    pub failbacks: u64,
    /// Time with no usable path, completed episodes (see
    /// [`DeviceSnapshot::all_paths_down_total`] for the running total).
    pub all_paths_down: Duration,
    /// Requests failed because no path was usable.
    pub hold_failures: u64,
    /// All-paths-down holds that ran out (each one a `hold_expired` event).
    pub hold_expirations: u64,
    /// SYNCHRONIZE CACHE commands sent to make a FUA write durable on a
    /// write-back LU that does not take the FUA bit
    /// ([`crate::durability`]).
    pub fua_flushes: u64,
    /// FUA writes and flushes that needed no command because the LU writes
    /// through (no write cache).
    pub write_through: u64,
}

/// What a durability decision cost, for [`DeviceCounters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// A SYNCHRONIZE CACHE after a FUA write (no DPOFUA).
    FuaFlush,
    /// Nothing sent: the LU writes through.
    WriteThrough,
}

/// The whole device, for status and metrics.
#[derive(Clone, Debug)]
pub struct DeviceSnapshot {
    /// The policy's parameters.
    pub policy: PolicySpec,
    /// The hold mode.
    pub hold: HoldMode,
    /// The failback mode.
    pub failback: FailbackMode,
    /// The policy with path names (`mpio policy show`).
    pub policy_description: String,
    /// No usable path since.
    pub all_paths_down_since: Option<Instant>,
    /// No path has been usable yet since the device started: requests wait
    /// (per the hold mode), but this is not counted as all paths down.
    pub starting: bool,
    /// Requests waiting now for a usable path (a hold, or no path claimed
    /// yet) or for a write fence.
    pub waiting: u64,
    /// The paths in table order (removed paths are gone; ids stay).
    pub paths: Vec<PathSnapshot>,
    /// Counters.
    pub counters: DeviceCounters,
}

impl DeviceSnapshot {
    /// Time with no usable path, the running period included (a counter for
    /// the metrics). Starting up does not count.
    pub fn all_paths_down_total(&self, now: Instant) -> Duration {
        let ongoing = match self.all_paths_down_since {
            Some(since) if !self.starting => now.saturating_duration_since(since),
            _ => Duration::ZERO,
        };
        self.counters.all_paths_down + ongoing
    }

    /// The path with this id, if it is still in the device.
    pub fn path(&self, id: PathId) -> Option<&PathSnapshot> {
        self.paths.iter().find(|p| p.id == id)
    }
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
    /// Requests waiting for a path or a fence ([`DeviceCore::wait_started`]).
    waiting: u64,
    events: VecDeque<DeviceEvent>,
    actions: VecDeque<Action>,
    counters: DeviceCounters,
}

/// EWMA weight of a new sample: 1/8.
/// How long latency and throughput figures of an idle path stay valid.
const FIGURES_TTL: Duration = Duration::from_secs(1);

fn ewma(old: u64, new: u64) -> u64 {
    if old == 0 { new } else { old - old / 8 + new / 8 }
}

impl DeviceCore {
    /// A device with these paths (all connecting) and policy.
    pub fn new(timers: TimerConfig, names: Vec<String>, policy: PolicySpec, now: Instant) -> DeviceCore {
        let paths = names.into_iter().map(|name| PathState::new(name, now)).collect();
        DeviceCore {
            timers,
            paths,
            policy: policy.build(),
            views: Vec::new(),
            active: Vec::new(),
            all_down_since: Some(now),
            starting: true,
            hold_expired: false,
            waiting: 0,
            events: VecDeque::new(),
            actions: VecDeque::new(),
            counters: DeviceCounters::default(),
        }
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
        self.paths.get(path).map_or(0, |p| p.in_flight)
    }

    /// The timers.
    pub fn timers(&self) -> &TimerConfig {
        &self.timers
    }

    /// True when failure `fence.epoch` of `fence.path` can no longer run
    /// commands.
    pub fn fence_cleared(&self, fence: Fence) -> bool {
        self.paths.get(fence.path).is_none_or(|p| p.cleared >= fence.epoch)
    }

    /// Status and counters.
    pub fn snapshot(&self) -> DeviceSnapshot {
        let views = self.build_views();
        let active = self.policy.active(&views);
        let spec = self.policy.spec();
        DeviceSnapshot {
            policy: spec.clone(),
            policy_description: spec.describe(&Table(&self.paths)),
            hold: self.timers.hold,
            failback: self.timers.failback,
            all_paths_down_since: self.all_down_since,
            starting: self.starting,
            waiting: self.waiting,
            paths: self
                .paths
                .iter()
                .enumerate()
                .filter(|(_, p)| !p.removed)
                .map(|(i, p)| PathSnapshot {
                    id: i,
                    name: p.name.clone(),
                    status: p.status,
                    role: if p.live() { spec.role(i) } else { None },
                    state: match p.status {
                        PathStatus::Ready if active.contains(&i) => "active",
                        PathStatus::Ready => "standby",
                        PathStatus::Probation { .. } => "probation",
                        PathStatus::Reconnecting => "reconnecting",
                        PathStatus::Failed => "failed",
                        PathStatus::Disabled => "disabled",
                        PathStatus::Connecting => "connecting",
                        PathStatus::Removing => "removing",
                    },
                    failback_held: p.held.is_some(),
                    in_flight: p.in_flight,
                    bytes_in_flight: p.bytes_in_flight,
                    latency_ns: p.latency_ns,
                    last_cause: p.last_cause.clone(),
                    since: p.since,
                    stats: p.stats.clone(),
                })
                .collect(),
            counters: self.counters,
        }
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

    /// When [`DeviceCore::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for p in &self.paths {
            if !p.probe_out {
                consider(p.next_probe);
            }
            if let Some(Held::Until(t)) = p.held {
                consider(Some(t));
            }
            if p.cleared < p.epoch {
                consider(p.fence_deadline);
                consider(p.fence_retry);
            }
        }
        if let (Some(since), HoldMode::For(d), false) = (self.all_down_since, self.timers.hold, self.hold_expired) {
            consider(Some(since + d));
        }
        next
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

    // ---- data path -------------------------------------------------------

    fn build_views(&self) -> Vec<PathView> {
        self.paths.iter().enumerate().filter(|(_, p)| !p.removed).map(|(id, p)| p.view(id)).collect()
    }

    /// Refreshes the reused view buffer. Figures of a path that has been
    /// idle for [`FIGURES_TTL`] are forgotten: a path measured slow once
    /// (a burst, a busy moment of the target) is not avoided forever by
    /// the policies that use figures, it is tried again and re-measured.
    fn refresh_views(&mut self, now: Instant) {
        self.views.clear();
        for (id, p) in self.paths.iter_mut().enumerate().filter(|(_, p)| !p.removed) {
            if p.in_flight == 0 && p.figures_at.is_some_and(|t| now.saturating_duration_since(t) > FIGURES_TTL) {
                p.latency_ns = 0;
                p.bytes_per_sec = 0;
                p.figures_at = None;
            }
            self.views.push(p.view(id));
        }
    }

    /// Chooses a path for a request of `bytes` (`write`: it modifies data).
    pub fn select(&mut self, now: Instant, op: Op, bytes: u64) -> Selection {
        self.refresh_views(now);
        let req = Request { bytes, write: op.modifies_data() };
        if let Some(id) = self.policy.select(&self.views, &req)
            && let Some(p) = self.paths.get_mut(id)
            && p.usable()
        {
            p.in_flight += 1;
            p.bytes_in_flight += bytes;
            let epoch = p.epoch;
            return Selection::Path(Ticket { path: id, epoch, op, bytes });
        }
        match self.hold(now) {
            Ok(until) => Selection::Hold(until),
            Err(e) => Selection::Fail(e),
        }
    }

    /// What a request that finds no usable path does now, per the hold
    /// mode: wait, until the instant if the hold has a limit (`Ok`), or
    /// fail. Also what a request does before any path was claimed, when the
    /// device cannot even split it into commands yet.
    pub fn hold(&mut self, now: Instant) -> Result<Option<Instant>, IoError> {
        self.note_all_down(now);
        match self.timers.hold {
            HoldMode::Fail => Err(self.no_path("no usable path and the hold mode is fail")),
            HoldMode::Queue => Ok(None),
            HoldMode::For(d) => {
                let deadline = self.all_down_since.unwrap_or(now) + d;
                if now >= deadline {
                    self.expire_hold(now);
                    Err(self.no_path(&format!("no usable path for {:?} (the hold time)", d)))
                } else {
                    Ok(Some(deadline))
                }
            }
        }
    }

    fn no_path(&mut self, why: &str) -> IoError {
        self.counters.hold_failures += 1;
        IoError { kind: IoErrorKind::NoPath, errno: 5, message: why.to_string() }
    }

    fn note_all_down(&mut self, now: Instant) {
        if self.all_down_since.is_none() {
            self.all_down_since = Some(now);
            self.hold_expired = false;
            let how = match self.timers.hold {
                HoldMode::For(d) => format!("I/O is held up to {d:?}"),
                HoldMode::Queue => "I/O is held until a path returns".into(),
                HoldMode::Fail => "I/O fails until a path returns".into(),
            };
            self.event(now, None, EventKind::HoldStarted, format!("no usable path: {how}"), None);
        }
    }

    fn expire_hold(&mut self, now: Instant) {
        if !self.hold_expired {
            self.hold_expired = true;
            self.counters.hold_expirations += 1;
            self.event(now, None, EventKind::HoldExpired, "hold time passed with no path: I/O fails with EIO", None);
        }
    }

    /// Reports how a request sent with `ticket` ended.
    pub fn complete(
        &mut self,
        now: Instant,
        ticket: Ticket,
        latency: Duration,
        completion: Completion,
        attempt: u32,
    ) -> Verdict {
        let Ticket { op, bytes, .. } = ticket;
        let Some(p) = self.paths.get_mut(ticket.path) else { return Verdict::Redrive { fence: None } };
        p.in_flight = p.in_flight.saturating_sub(1);
        p.bytes_in_flight = p.bytes_in_flight.saturating_sub(bytes);
        match completion {
            Completion::Success => {
                let ns = latency.as_nanos().min(u128::from(u64::MAX)) as u64;
                p.latency_ns = ewma(p.latency_ns, ns);
                p.figures_at = Some(now);
                if ns > 0 && bytes > 0 {
                    p.bytes_per_sec =
                        ewma(p.bytes_per_sec, (u128::from(bytes) * 1_000_000_000 / u128::from(ns)) as u64);
                }
                p.stats.record(op, bytes, latency);
                Verdict::Done
            }
            Completion::PathFailure { cause, may_still_execute } => {
                p.stats.redriven += 1;
                if p.epoch == ticket.epoch {
                    // The first news of this failure: fail the path now.
                    // The session may still be up (an abort confirmed, a
                    // path-level sense): then probation starts at once.
                    let session_up = p.session_up;
                    self.fail_path(now, ticket.path, cause, !session_up);
                }
                let fence = (may_still_execute && op.modifies_data())
                    .then_some(Fence { path: ticket.path, epoch: ticket.epoch + 1 })
                    .filter(|f| !self.fence_cleared(*f));
                Verdict::Redrive { fence }
            }
            Completion::Retry { immediate, why } => {
                p.stats.retries += 1;
                if attempt >= self.timers.retry_count {
                    p.stats.errors += 1;
                    return Verdict::Fail(IoError {
                        kind: IoErrorKind::RetriesExhausted,
                        errno: 5,
                        message: format!("{why}: still failing after {} retries", self.timers.retry_count),
                    });
                }
                Verdict::Retry(if immediate { Duration::ZERO } else { self.timers.retry_interval })
            }
            Completion::Fatal { errno, why } => {
                p.stats.errors += 1;
                Verdict::Fail(IoError { kind: IoErrorKind::Device, errno, message: why })
            }
        }
    }

    // ---- path events -----------------------------------------------------

    /// The path stops carrying I/O. `session_down`: it waits for its
    /// session to come back; otherwise probation starts (after damping).
    ///
    /// A path an administrator took out (disabled, being removed) keeps its
    /// status: it still counts the failure and gets its old nexus fenced
    /// (what it carried may be re-driven), but it does not come back by
    /// itself.
    fn fail_path(&mut self, now: Instant, id: PathId, cause: FailureCause, session_down: bool) {
        let window = self.timers.damping_window;
        let fence_timeout = self.timers.fence_timeout;
        let Some(p) = self.paths.get_mut(id) else { return };
        let was_usable = matches!(p.status, PathStatus::Ready | PathStatus::Probation { .. });
        let out = p.out_by_admin();
        if was_usable || out || p.status == PathStatus::Connecting {
            p.epoch += 1;
            p.fence_deadline = Some(now + fence_timeout);
            p.fence_out = false;
        }
        *p.stats.failures.entry(cause.kind).or_insert(0) += 1;
        while p.recent_failures.front().is_some_and(|t| now.saturating_duration_since(*t) > window) {
            p.recent_failures.pop_front();
        }
        p.recent_failures.push_back(now);
        p.held = None;
        p.probe_out = false;
        p.last_cause = Some(cause.clone());
        if out {
            self.request_fence(id);
            return;
        }
        p.since = now;
        let seed = match cause.kind {
            "connection" => Some(20),
            "nop_timeout" => Some(48),
            "io_timeout" => Some(9),
            "login" => Some(10),
            _ => None,
        };
        p.session_may_follow = !session_down;
        let mut probation = None;
        if session_down {
            p.status = PathStatus::Reconnecting;
            p.next_probe = None;
        } else {
            p.status = PathStatus::Probation { passed: 0 };
            let delay = Self::damping(&self.timers, p.recent_failures.len()).max(self.timers.probation_interval);
            p.next_probe = Some(now + delay);
            probation = Some(delay);
        }
        let name = p.name.clone();
        if was_usable {
            self.event(now, Some(id), EventKind::PathFailed, format!("{name}: {cause}"), seed);
            self.request_fence(id);
        }
        if let Some(delay) = probation {
            // The session is still up: the path is probed back in.
            let why = format!("{name}: probes start in {delay:?}");
            self.event(now, Some(id), EventKind::ProbationStarted, why, None);
        }
        self.update_active(now, true);
    }

    /// Damping delay for a path that failed `n` times within the window.
    fn damping(t: &TimerConfig, n: usize) -> Duration {
        if n <= 1 {
            return Duration::ZERO;
        }
        let shift = (n - 2).min(16) as u32;
        (t.damping_base * 2u32.pow(shift)).min(t.damping_max)
    }

    fn request_fence(&mut self, id: PathId) {
        let Some(p) = self.paths.get(id) else { return };
        if p.cleared >= p.epoch || p.fence_out {
            return;
        }
        let group = p.group.clone();
        let epoch = p.epoch;
        let via: Vec<PathId> = self
            .paths
            .iter()
            .enumerate()
            .filter(|(i, q)| *i != id && q.usable() && q.group.is_some() && q.group == group)
            .map(|(i, _)| i)
            .collect();
        if via.is_empty() {
            return;
        }
        if let Some(p) = self.paths.get_mut(id) {
            p.fence_out = true;
        }
        self.actions.push_back(Action::Fence { path: id, epoch, via });
    }

    /// Sets the portal group of a path (target name and TPGT), learnt at
    /// login: fences go through portals of the same group only.
    pub fn set_group(&mut self, path: PathId, group: Option<String>) {
        if let Some(p) = self.paths.get_mut(path) {
            p.group = group;
        }
    }

    /// The path's session logged in and the path reaches the device's
    /// logical unit (identity checked by the driver). `reinstated`: the
    /// login replaced an earlier session of this path, so every command of
    /// the old one is terminated at the target.
    pub fn session_up(&mut self, now: Instant, path: PathId, reinstated: bool) {
        let Some(p) = self.paths.get_mut(path) else { return };
        p.session_up = true;
        p.session_may_follow = false;
        p.login_reported = None;
        p.stats.login_refusals_in_a_row = 0;
        if reinstated && p.cleared < p.epoch {
            p.cleared = p.epoch;
            let name = p.name.clone();
            self.event(now, Some(path), EventKind::FenceCleared, format!("{name}: session reinstated"), None);
        }
        let Some(p) = self.paths.get_mut(path) else { return };
        match p.status {
            PathStatus::Connecting => {
                // The first bring-up was the verification.
                p.status = PathStatus::Ready;
                p.since = now;
                p.next_probe = self.timers.path_verify.then(|| now + self.timers.path_verify_period);
                let name = p.name.clone();
                self.event(now, Some(path), EventKind::PathReady, format!("{name}: logged in and claimed"), None);
                self.path_became_ready(now);
            }
            PathStatus::Reconnecting | PathStatus::Failed => {
                let delay = Self::damping(&self.timers, p.recent_failures.len());
                p.status = PathStatus::Probation { passed: 0 };
                p.since = now;
                p.next_probe = Some(now + delay);
                p.probe_out = false;
                let name = p.name.clone();
                self.event(now, Some(path), EventKind::PathReconnected, format!("{name}: logged in again"), Some(34));
                let why = if delay.is_zero() {
                    format!("{name}: {} probes before it carries I/O", self.timers.probation_probes)
                } else {
                    format!("{name}: failed repeatedly, probation starts in {delay:?}")
                };
                self.event(now, Some(path), EventKind::ProbationStarted, why, None);
            }
            PathStatus::Ready | PathStatus::Probation { .. } | PathStatus::Disabled | PathStatus::Removing => {}
        }
    }

    /// The path's session lost its last connection.
    pub fn session_down(&mut self, now: Instant, path: PathId, cause: FailureCause, permanent: bool) {
        let Some(p) = self.paths.get_mut(path) else { return };
        p.session_up = false;
        let status = p.status;
        match status {
            PathStatus::Probation { passed: 0 } if p.session_may_follow => {
                p.session_may_follow = false;
                p.status = PathStatus::Reconnecting;
                p.next_probe = None;
                p.probe_out = false;
                p.last_cause = Some(cause);
            }
            PathStatus::Ready | PathStatus::Probation { .. } | PathStatus::Connecting => {
                self.fail_path(now, path, cause, true);
            }
            PathStatus::Disabled | PathStatus::Removing | PathStatus::Reconnecting => p.last_cause = Some(cause),
            // Failed for good (a refused claim, a login refused for good):
            // that reason stays what the path reports, not the session
            // closing after it.
            PathStatus::Failed => {}
        }
        if let Some(p) = self.paths.get_mut(path)
            && permanent
            && matches!(p.status, PathStatus::Reconnecting | PathStatus::Probation { .. } | PathStatus::Connecting)
        {
            p.status = PathStatus::Failed;
            p.since = now;
            if matches!(status, PathStatus::Ready | PathStatus::Probation { .. }) {
                // fail_path reported this incident already.
                return;
            }
            let why = format!(
                "{}: {}; not retried until reinstated",
                p.name,
                p.last_cause.as_ref().map_or_else(|| "failed".to_string(), ToString::to_string)
            );
            self.event(now, Some(path), EventKind::PathFailed, why, None);
        }
    }

    /// The path reaches another logical unit (or its bring-up hook
    /// failed): it stays out.
    pub fn refuse(&mut self, now: Instant, path: PathId, reason: String) {
        let Some(p) = self.paths.get_mut(path).filter(|p| p.live()) else { return };
        p.status = PathStatus::Failed;
        p.since = now;
        *p.stats.failures.entry("claim").or_insert(0) += 1;
        p.last_cause = Some(FailureCause::new("claim", reason.clone()));
        self.event(now, Some(path), EventKind::ClaimRefused, reason, None);
        self.update_active(now, true);
    }

    /// Result of a probe sent for [`Action::Probe`].
    pub fn probe_done(&mut self, now: Instant, path: PathId, result: Result<(), String>) {
        let probes = self.timers.probation_probes;
        let interval = self.timers.probation_interval;
        let verify = self.timers.path_verify.then_some(self.timers.path_verify_period);
        let failback = self.timers.failback;
        let Some(p) = self.paths.get_mut(path) else { return };
        p.probe_out = false;
        match (p.status, result) {
            (PathStatus::Probation { passed }, Ok(())) => {
                let passed = passed + 1;
                if passed >= probes {
                    p.status = PathStatus::Ready;
                    p.since = now;
                    p.next_probe = verify.map(|v| now + v);
                    p.held = match failback {
                        FailbackMode::Immediate => None,
                        FailbackMode::Manual => Some(Held::Manual),
                        FailbackMode::Delayed(d) => Some(Held::Until(now + d)),
                    };
                    let name = p.name.clone();
                    let how = match failback {
                        FailbackMode::Immediate => String::new(),
                        FailbackMode::Manual => "; failback waits for an administrator".into(),
                        FailbackMode::Delayed(d) => format!("; failback in {d:?}"),
                    };
                    self.event(
                        now,
                        Some(path),
                        EventKind::PathReady,
                        format!("{name}: passed {probes} probes{how}"),
                        None,
                    );
                    self.path_became_ready(now);
                } else {
                    p.status = PathStatus::Probation { passed };
                    p.next_probe = Some(now + interval);
                }
            }
            (PathStatus::Probation { .. }, Err(e)) => {
                let name = p.name.clone();
                self.event(now, Some(path), EventKind::ProbationProbeFailed, format!("{name}: {e}"), None);
                // Counts as a failure: the next probation waits longer.
                self.fail_path(now, path, FailureCause::new("probe", e), false);
            }
            (PathStatus::Ready, Ok(())) => p.next_probe = verify.map(|v| now + v),
            (PathStatus::Ready, Err(e)) => self.fail_path(now, path, FailureCause::new("verify", e), false),
            _ => {}
        }
    }

    /// Result of an [`Action::Fence`]: `Ok` when failure `epoch` of `path`
    /// is proven unable to run commands.
    pub fn fence_done(&mut self, now: Instant, path: PathId, epoch: u64, result: Result<(), String>) {
        let Some(p) = self.paths.get_mut(path) else { return };
        p.fence_out = false;
        match result {
            Ok(()) if p.cleared < epoch => {
                p.cleared = epoch;
                let name = p.name.clone();
                self.event(now, Some(path), EventKind::FenceCleared, format!("{name}: old nexus reinstated"), None);
            }
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(path = %p.name, error = %e, "fence login failed; trying again in {FENCE_RETRY:?}");
                p.fence_retry = Some(now + FENCE_RETRY);
            }
        }
    }

    fn path_became_ready(&mut self, now: Instant) {
        // A fence that found no healthy portal of its group may find one now.
        for id in 0..self.paths.len() {
            if self.paths.get(id).is_some_and(|p| p.cleared < p.epoch && !p.fence_out && p.fence_retry.is_none()) {
                self.request_fence(id);
            }
        }
        if self.starting {
            // Requests made before the first path came up were held from
            // the device's creation; that was no outage.
            self.starting = false;
            self.all_down_since = None;
        } else if let Some(since) = self.all_down_since.take() {
            self.counters.all_paths_down += now.saturating_duration_since(since);
            self.hold_expired = false;
            self.event(now, None, EventKind::HoldEnded, "a path is usable again", None);
        }
        self.update_active(now, false);
    }

    /// Records a change of the paths carrying I/O: a failover when paths
    /// failed, a failback when a returning path took I/O from one that
    /// still works. A path merely joining (round robin) is neither.
    fn update_active(&mut self, now: Instant, failure: bool) {
        self.refresh_views(now);
        // An idle device must still remember which standby took over.
        self.policy.on_paths_changed(&self.views);
        let active = self.policy.active(&self.views);
        if active == self.active {
            return;
        }
        let from = std::mem::replace(&mut self.active, active.clone());
        if from.is_empty() {
            return;
        }
        if failure {
            self.counters.failovers += 1;
            self.event(now, None, EventKind::Failover { from, to: active }, "paths failed", None);
        } else if from.iter().any(|p| !active.contains(p) && self.paths.get(*p).is_some_and(PathState::usable)) {
            self.counters.failbacks += 1;
            self.event(now, None, EventKind::Failback { from, to: active }, "preferred paths returned", None);
        }
    }

    // ---- timers ----------------------------------------------------------

    /// Runs what is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        for id in 0..self.paths.len() {
            let Some(p) = self.paths.get_mut(id) else { continue };
            if !p.probe_out && p.next_probe.is_some_and(|t| t <= now) {
                p.probe_out = true;
                p.next_probe = None;
                self.actions.push_back(Action::Probe(id));
            }
            let Some(p) = self.paths.get_mut(id) else { continue };
            if let Some(Held::Until(t)) = p.held
                && t <= now
            {
                p.held = None;
                self.update_active(now, false);
            }
            let Some(p) = self.paths.get_mut(id) else { continue };
            if p.fence_retry.is_some_and(|t| t <= now) {
                p.fence_retry = None;
                self.request_fence(id);
            }
            let Some(p) = self.paths.get_mut(id) else { continue };
            if p.cleared < p.epoch && p.fence_deadline.is_some_and(|t| t <= now) {
                p.cleared = p.epoch;
                let name = p.name.clone();
                self.event(
                    now,
                    Some(id),
                    EventKind::FenceCleared,
                    format!(
                        "{name}: DefaultTime2Wait + DefaultTime2Retain passed; the target has discarded the old tasks"
                    ),
                    None,
                );
            }
        }
        if let (Some(since), HoldMode::For(d)) = (self.all_down_since, self.timers.hold)
            && since + d <= now
        {
            self.expire_hold(now);
        }
    }

    // ---- administration --------------------------------------------------

    /// Changes the policy (validated against the path names).
    pub fn set_policy(&mut self, now: Instant, req: &PolicyRequest) -> Result<(), PolicyError> {
        let spec = req.validate(&Table(&self.paths), Some(self.policy.spec()))?;
        self.policy = spec.build();
        self.active.clear();
        self.event(now, None, EventKind::PolicyChanged, format!("policy {}", spec.kind().name()), None);
        self.update_active(now, false);
        Ok(())
    }

    /// Disables a path (`mpio path fail`): it carries no new I/O until
    /// reinstated; what it carries completes.
    pub fn disable(&mut self, now: Instant, path: PathId) {
        let Some(p) = self.paths.get_mut(path).filter(|p| p.live()) else { return };
        if p.status == PathStatus::Disabled {
            return;
        }
        p.status = PathStatus::Disabled;
        p.since = now;
        p.next_probe = None;
        p.held = None;
        *p.stats.failures.entry("admin").or_insert(0) += 1;
        let name = p.name.clone();
        self.event(now, Some(path), EventKind::PathDisabled, format!("{name}: disabled by an administrator"), None);
        self.update_active(now, true);
    }

    /// Re-enables a disabled path: probation when its session is up.
    pub fn reinstate(&mut self, now: Instant, path: PathId) {
        let Some(p) = self.paths.get_mut(path) else { return };
        if p.status != PathStatus::Disabled {
            return;
        }
        p.since = now;
        if p.session_up {
            p.status = PathStatus::Probation { passed: 0 };
            p.next_probe = Some(now);
        } else {
            p.status = PathStatus::Reconnecting;
        }
        let name = p.name.clone();
        self.event(now, Some(path), EventKind::PathReinstated, format!("{name}: re-enabled by an administrator"), None);
    }

    /// Lets every held path take I/O back now (`mpio failback`).
    pub fn failback_now(&mut self, now: Instant) {
        for p in &mut self.paths {
            p.held = None;
        }
        self.update_active(now, false);
    }

    /// Changes the all-paths-down hold.
    pub fn set_hold(&mut self, hold: HoldMode) {
        self.timers.hold = hold;
        self.hold_expired = false;
    }

    /// Gives a path another role in the running policy (`mpio path
    /// set-active|set-standby|set-weight`, see [`PolicySpec::with_role`]).
    /// A refused change leaves the running policy. The policy keeps its
    /// state (the standby that carries I/O stays), so I/O moves only when the
    /// new role says it must.
    pub fn set_role(&mut self, now: Instant, path: PathId, role: PathRole) -> Result<(), PolicyError> {
        let spec = self.policy.spec().with_role(&Table(&self.paths), path, role)?;
        if &spec == self.policy.spec() {
            return Ok(());
        }
        self.respec(&spec);
        let name = self.path_name(path).unwrap_or_default().to_owned();
        let why = format!("{name}: {role}; policy {}", spec.describe(&Table(&self.paths)));
        self.event(now, Some(path), EventKind::PolicyChanged, why, None);
        // An administrator's move, neither a failover nor a failback.
        self.active.clear();
        self.update_active(now, false);
        Ok(())
    }

    /// Adds a path (connecting, like every path at start) and returns its
    /// id, or `None` when the name is taken by a path of the device or one
    /// being removed. It takes the least preferred role of the policy
    /// ([`PolicySpec::with_path`]) and carries I/O once its session is up
    /// and claimed.
    pub fn add_path(&mut self, now: Instant, name: String) -> Option<PathId> {
        if self.path_id(&name).is_some() {
            return None;
        }
        let id = self.paths.len();
        self.paths.push(PathState::new(name.clone(), now));
        let spec = self.policy.spec().with_path(id);
        self.respec(&spec);
        let role = spec.role(id).map_or_else(String::new, |r| format!(" as {r}"));
        self.event(now, Some(id), EventKind::PathAdded, format!("{name}: added{role}, connecting"), None);
        Some(id)
    }

    /// Starts removing a path: it takes no new I/O at once and leaves the
    /// policy ([`PolicySpec::without_path`]: the last path, the fail-over
    /// primary and the only active path of a subset are refused, with the
    /// fix). What it carries completes (or is re-driven elsewhere as after a
    /// failure); the driver then logs its session out and reports
    /// [`DeviceCore::path_removed`].
    pub fn remove_path(&mut self, now: Instant, path: PathId) -> Result<(), PolicyError> {
        let spec = self.policy.spec().without_path(&Table(&self.paths), path)?;
        let Some(p) = self.paths.get_mut(path) else { return Ok(()) };
        p.status = PathStatus::Removing;
        p.since = now;
        p.next_probe = None;
        p.probe_out = false;
        p.held = None;
        let why = format!("{}: takes no new I/O; removed once its {} commands in flight are done", p.name, p.in_flight);
        self.respec(&spec);
        self.event(now, Some(path), EventKind::PathRemoving, why, None);
        self.update_active(now, false);
        Ok(())
    }

    /// A path being removed is drained and its session logged out: it is
    /// gone (its id is not reused).
    pub fn path_removed(&mut self, now: Instant, path: PathId) {
        let Some(p) = self.paths.get_mut(path).filter(|p| p.status == PathStatus::Removing && !p.removed) else {
            return;
        };
        p.removed = true;
        p.since = now;
        let name = p.name.clone();
        self.event(now, Some(path), EventKind::PathRemoved, format!("{name}: removed"), None);
    }

    /// A login attempt of the path failed (connect refused or timed out, the
    /// target refused the login). The session retries by itself unless the
    /// failure is permanent ([`DeviceCore::session_down`] follows then). The
    /// cause becomes the path's last cause (what `wait_ready` reports), each
    /// attempt is counted, and each new reason is an event; repeats of the
    /// same reason are not, so a dead portal does not flood the event stream.
    pub fn login_failed(&mut self, now: Instant, path: PathId, cause: FailureCause, seed_event: Option<u32>) {
        let Some(p) = self.paths.get_mut(path).filter(|p| p.live()) else { return };
        p.stats.login_failures += 1;
        if p.status != PathStatus::Ready {
            p.last_cause = Some(cause.clone());
        }
        let reason = cause.to_string();
        if p.login_reported.as_deref() == Some(reason.as_str()) {
            p.stats.login_refusals_in_a_row = p.stats.login_refusals_in_a_row.saturating_add(1);
            let n = p.stats.login_refusals_in_a_row;
            // A target that answers every attempt the same way (an
            // unknown target name, an ACL, a portal group without this
            // target) will not change its mind: say so once, with what the
            // refusal says to check. A dead portal (connect) is no refusal.
            if n == LOGIN_REFUSALS_REPEATED && cause.kind == "login" {
                let why = format!(
                    "{}: the target refused {n} logins in a row the same way; the path keeps retrying with backoff, but that will not help until the target or the configuration changes: {cause}",
                    p.name
                );
                self.event(now, Some(path), EventKind::LoginRefusedRepeatedly, why, seed_event);
            }
            return;
        }
        p.login_reported = Some(reason);
        p.stats.login_refusals_in_a_row = 1;
        let why = format!("{}: {cause}", p.name);
        self.event(now, Some(path), EventKind::LoginFailed, why, seed_event);
    }

    /// Counts what making a write durable took (see [`Durability`]).
    pub fn durability_command(&mut self, what: Durability) {
        match what {
            Durability::FuaFlush => self.counters.fua_flushes += 1,
            Durability::WriteThrough => self.counters.write_through += 1,
        }
    }

    /// A request starts waiting for a usable path or for a fence (counted in
    /// [`DeviceSnapshot::waiting`] until [`DeviceCore::wait_ended`]).
    pub fn wait_started(&mut self) {
        self.waiting += 1;
    }

    /// A request stopped waiting.
    pub fn wait_ended(&mut self) {
        self.waiting = self.waiting.saturating_sub(1);
    }

    /// New parameters of the same policy, keeping its state.
    fn respec(&mut self, spec: &PolicySpec) {
        if !self.policy.respec(spec) {
            self.policy = spec.build();
        }
    }
}

#[cfg(test)]
mod tests;
