//! What the core shows of itself, for status and metrics.

use std::time::{Duration, Instant};

use mpio_policies::{PathId, PathRole, PolicySpec};

use super::{DeviceCore, PathStatus, Table};
pub(super) use crate::failure::FailureCause;
use crate::stats::PathStats;
use crate::timers::{FailbackMode, HoldMode};

/// What a path looks like, for status and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathSnapshot {
    /// The path's id (events and policy specs name paths by id).
    pub id: PathId,
    /// Path name.
    pub name: String,
    /// State.
    pub status: PathStatus,
    /// What the path does now, as status, CLI and metrics name it.
    pub state: PathPhase,
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

/// A path's state as operators see it: its [`PathStatus`], with a ready
/// path split by whether the policy gives it I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathPhase {
    /// Ready, and the policy sends it I/O.
    Active,
    /// Ready, kept in reserve by the policy.
    Standby,
    /// Back after a failure, passing probes before it carries I/O.
    Probation,
    /// Its session is down; the transport reconnects.
    Reconnecting,
    /// Failed and not coming back by itself.
    Failed,
    /// Disabled by an administrator.
    Disabled,
    /// Not logged in yet since the device started.
    Connecting,
    /// Being removed.
    Removing,
}

impl PathPhase {
    /// Every phase, for metrics that export one series per phase.
    pub const ALL: [PathPhase; 8] = [
        PathPhase::Active,
        PathPhase::Standby,
        PathPhase::Probation,
        PathPhase::Reconnecting,
        PathPhase::Failed,
        PathPhase::Disabled,
        PathPhase::Connecting,
        PathPhase::Removing,
    ];

    /// The name status, the CLI and the `state` metric label use.
    pub fn name(self) -> &'static str {
        match self {
            PathPhase::Active => "active",
            PathPhase::Standby => "standby",
            PathPhase::Probation => "probation",
            PathPhase::Reconnecting => "reconnecting",
            PathPhase::Failed => "failed",
            PathPhase::Disabled => "disabled",
            PathPhase::Connecting => "connecting",
            PathPhase::Removing => "removing",
        }
    }

    /// Ready: active or standby.
    pub fn is_ready(self) -> bool {
        matches!(self, PathPhase::Active | PathPhase::Standby)
    }

    fn of(status: PathStatus, active: bool) -> PathPhase {
        match status {
            PathStatus::Ready if active => PathPhase::Active,
            PathStatus::Ready => PathPhase::Standby,
            PathStatus::Probation { .. } => PathPhase::Probation,
            PathStatus::Reconnecting => PathPhase::Reconnecting,
            PathStatus::Failed => PathPhase::Failed,
            PathStatus::Disabled => PathPhase::Disabled,
            PathStatus::Connecting => PathPhase::Connecting,
            PathStatus::Removing => PathPhase::Removing,
        }
    }
}

impl std::fmt::Display for PathPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Compares with the name, so tests and tools can say `state == "active"`.
impl PartialEq<&str> for PathPhase {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
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

impl DeviceCore {
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
                    state: PathPhase::of(p.status, active.contains(&i)),
                    failback_held: p.held.is_some(),
                    in_flight: p.load.in_flight,
                    bytes_in_flight: p.load.bytes_in_flight,
                    latency_ns: p.load.latency_ns,
                    last_cause: p.last_cause.clone(),
                    since: p.since,
                    stats: p.stats.clone(),
                })
                .collect(),
            counters: self.counters,
        }
    }
}
