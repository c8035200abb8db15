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
