//! Device events: every path state change and every decision the device
//! takes, with the time, the path and the reason. Where one of the seed's
//! event IDs names the same thing (the Microsoft iSCSI initiator's event log messages), it is
//! carried, so operators who know the Windows event log recognise it.

use std::time::Instant;

use mpio_policies::PathId;

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A path failed.
    PathFailed,
    /// A path's session logged in again.
    PathReconnected,
    /// A returning path started probation.
    ProbationStarted,
    /// A probation probe failed.
    ProbationProbeFailed,
    /// A path passed probation (or its first bring-up) and may carry I/O.
    PathReady,
    /// The set of paths carrying I/O changed because paths failed.
    Failover {
        /// Paths that carried I/O before.
        from: Vec<PathId>,
        /// Paths that carry it now.
        to: Vec<PathId>,
    },
    /// The set of paths carrying I/O changed because paths returned.
    Failback {
        /// Paths that carried I/O before.
        from: Vec<PathId>,
        /// Paths that carry it now.
        to: Vec<PathId>,
    },
    /// No path is usable: I/O is held (or failed, per the hold mode).
    /// Sent when the last usable path fails, I/O or not: the hold time
    /// counts from there (as Windows' PDORemovePeriod does).
    HoldStarted,
    /// The hold time passed with no path: held and new I/O fail with EIO.
    HoldExpired,
    /// A path is usable again after all were down.
    HoldEnded,
    /// An administrator disabled a path.
    PathDisabled,
    /// An administrator re-enabled a path.
    PathReinstated,
    /// The policy changed.
    PolicyChanged,
    /// A path reaches another logical unit than the device's: refused.
    ClaimRefused,
    /// The old nexus of a failed path can no longer run its commands:
    /// writes caught on it may go elsewhere.
    FenceCleared,
    /// A login attempt of a path failed: connect refused or timed out, the
    /// target refused the login (wrong CHAP secret, unknown target, ...).
    /// Reported once per new reason while the path keeps retrying. Seed
    /// event 1 (connect), 10 (login refused), 43 (login timeout), 59
    /// (connection closed during login), 38/40/41 (authentication setup).
    LoginFailed,
    /// The target refused a path's login [`crate::core::LOGIN_REFUSALS_REPEATED`]
    /// times in a row with the same reason: the path keeps retrying, but
    /// the target or the configuration must change first. Raised once per
    /// streak; the reason says what to check.
    LoginRefusedRepeatedly,
    /// A path was added at runtime; it connects and is claimed like any path.
    PathAdded,
    /// A path is being removed: it takes no new I/O and drains.
    PathRemoving,
    /// A removed path is drained and logged out.
    PathRemoved,
    /// The logical unit's capacity changed on the target (read by a
    /// rescan, a path's claim, or after UNIT ATTENTION 2A/09): requests
    /// are checked against the new size, and frontends show it where they
    /// can ([`crate::Device::rescan`]).
    CapacityChanged {
        /// Bytes before.
        old: u64,
        /// Bytes now.
        new: u64,
    },
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceEvent {
    /// When (the core's clock).
    pub at: Instant,
    /// The path, if the event is about one.
    pub path: Option<PathId>,
    /// Its name (also for a path removed since).
    pub path_name: Option<String>,
    /// What happened.
    pub kind: EventKind,
    /// Why, in words.
    pub reason: String,
    /// The seed's event ID for the same condition, where one exists.
    pub seed_event: Option<u32>,
}

impl EventKind {
    /// A stable lowercase name (logs, JSON, metrics labels).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::PathFailed => "path_failed",
            EventKind::PathReconnected => "path_reconnected",
            EventKind::ProbationStarted => "probation_started",
            EventKind::ProbationProbeFailed => "probation_probe_failed",
            EventKind::PathReady => "path_ready",
            EventKind::Failover { .. } => "failover",
            EventKind::Failback { .. } => "failback",
            EventKind::HoldStarted => "hold_started",
            EventKind::HoldExpired => "hold_expired",
            EventKind::HoldEnded => "hold_ended",
            EventKind::PathDisabled => "path_disabled",
            EventKind::PathReinstated => "path_reinstated",
            EventKind::PolicyChanged => "policy_changed",
            EventKind::ClaimRefused => "claim_refused",
            EventKind::FenceCleared => "fence_cleared",
            EventKind::LoginFailed => "login_failed",
            EventKind::LoginRefusedRepeatedly => "login_refused_repeatedly",
            EventKind::PathAdded => "path_added",
            EventKind::PathRemoving => "path_removing",
            EventKind::PathRemoved => "path_removed",
            EventKind::CapacityChanged { .. } => "capacity_changed",
        }
    }
}
