//! The control protocol: one JSON object per line over the daemon's unix
//! socket. The client sends `{"version":N,"request":{"op":...}}`; the
//! daemon answers `{"version":N,"ok":...}` or `{"version":N,"error":...}`,
//! or, for a followed event stream, one `{"version":N,"event":...}` per
//! event until the client hangs up. A request of another version is
//! refused with both versions named, so a CLI that does not match its
//! daemon says so instead of misreading answers.

use serde::{Deserialize, Serialize};

/// Version of this protocol. Bump it on any incompatible change.
pub(crate) const VERSION: u32 = 1;

/// What the client sends.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct Envelope {
    pub(crate) version: u32,
    pub(crate) request: serde_json::Value,
}

/// One request.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub(crate) enum Request {
    /// Daemon and device summary.
    Status,
    /// Every device.
    DeviceList,
    /// One device in detail.
    DeviceShow { device: String },
    /// Waits until a path of the device carries I/O, or (`all_paths`)
    /// every path; fails after `timeout_ms` with each path's reason.
    DeviceWait { device: String, all_paths: bool, timeout_ms: u64 },
    /// Read the LU's capacity again (after it was resized on the target)
    /// and give the block device the new size where the kernel can.
    DeviceRescan { device: String },
    /// Paths of one device or of all.
    PathList { device: Option<String> },
    /// Take a path out of service.
    PathFail { device: String, path: String },
    /// Put a path back (through probation).
    PathReinstate { device: String, path: String },
    /// Make a path carry I/O (fail-over-only: primary; subset: active).
    PathSetActive { device: String, path: String },
    /// Make a path a standby.
    PathSetStandby { device: String, path: String },
    /// Change one path's weight (weighted).
    PathSetWeight { device: String, path: String, weight: u32 },
    /// The running policy.
    PolicyShow { device: String },
    /// Change the policy.
    PolicySet { device: String, policy: PolicyChange },
    /// Let held paths take their I/O back now.
    Failback { device: String },
    /// Change the all-paths-down hold (`queue`, `fail`, a duration).
    Hold { device: String, mode: String },
    /// Recent events, and with `follow` new ones as they happen.
    Events { device: Option<String>, last: usize, follow: bool },
    /// Re-read the configuration file and apply the changes; `force`
    /// removes devices whose block device is in use (mounted, open).
    Reload {
        #[serde(default)]
        force: bool,
    },
    /// Show (`None`) or change the log filter.
    LogLevel { level: Option<String> },
    /// The ublk devices the kernel's driver has, this daemon's or not.
    UblkList,
    /// Remove ublk device `id`, which nobody serves (refused for one
    /// this daemon or another live process serves).
    UblkRemove { id: u32 },
}

/// A policy and its parameters, paths by name (as `mpio policy set`
/// takes them).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyChange {
    pub(crate) policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) primary: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) active: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) weights: Option<Vec<(String, u32)>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) switch: Option<String>,
}

/// What the daemon answers.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct Response {
    pub(crate) version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ok: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) event: Option<EventView>,
}

/// A refused request.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// What is wrong and what to do.
    pub(crate) message: String,
    /// The seed's status code, where one applies (`0xEFFF0059`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) code: Option<String>,
}

impl Failure {
    pub(crate) fn new(message: impl Into<String>) -> Failure {
        Failure { message: message.into(), code: None }
    }
}

/// `mpio status`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct StatusView {
    pub(crate) version: String,
    pub(crate) protocol: u32,
    pub(crate) pid: u32,
    pub(crate) uptime_s: f64,
    pub(crate) config: String,
    /// Every device has a usable path.
    pub(crate) ready: bool,
    pub(crate) metrics: Option<String>,
    pub(crate) nbd: Vec<String>,
    pub(crate) devices: Vec<DeviceSummary>,
}

/// One line of `mpio device list`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct DeviceSummary {
    pub(crate) name: String,
    /// `optimal` (every path usable), `degraded`, `down` (none), or
    /// `starting` (no path claimed yet).
    pub(crate) state: String,
    pub(crate) policy: String,
    pub(crate) paths_usable: usize,
    pub(crate) paths_total: usize,
    pub(crate) identity: Option<String>,
    pub(crate) capacity_bytes: Option<u64>,
    /// How it is presented, as the file writes it (`ublk`, `nbd`; empty
    /// for `none`).
    #[serde(default)]
    pub(crate) frontends: Vec<String>,
    /// NBD export name, when exported.
    pub(crate) export: Option<String>,
    /// The kernel block device (`/dev/ublkbN`), when there is one.
    #[serde(default)]
    pub(crate) block_device: Option<String>,
    /// The size the block device shows (it may lag the LU's after the LU
    /// was resized: `frontend_problem` then says why).
    #[serde(default)]
    pub(crate) block_device_bytes: Option<u64>,
    /// Why a block device the device should have is not there (waiting
    /// for the LU, refused by the driver), or does not have the LU's size.
    #[serde(default)]
    pub(crate) frontend_problem: Option<String>,
}

/// `mpio device rescan`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct RescanView {
    pub(crate) device: String,
    /// The path the capacity was read through.
    pub(crate) path: String,
    pub(crate) old_bytes: u64,
    pub(crate) new_bytes: u64,
    /// The block device and the size it shows now.
    pub(crate) block_device: Option<String>,
    pub(crate) block_device_bytes: Option<u64>,
    /// What happened to the block device's size (resized, or why not).
    pub(crate) block_device_note: Option<String>,
    /// The NBD export, whose clients see the new size from their next
    /// connection on.
    pub(crate) export: Option<String>,
}

/// `mpio device show`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct DeviceView {
    #[serde(flatten)]
    pub(crate) summary: DeviceSummary,
    pub(crate) target: String,
    pub(crate) lun: u64,
    pub(crate) serial: Option<String>,
    pub(crate) block_size: Option<u32>,
    /// How the LU caches writes, as the device reads it at every claim
    /// (`write-through`, `write-back, FUA`, ...).
    #[serde(default)]
    pub(crate) write_cache: Option<String>,
    pub(crate) hold: String,
    pub(crate) failback: String,
    pub(crate) all_paths_down_since_s: Option<f64>,
    pub(crate) failovers: u64,
    pub(crate) failbacks: u64,
    pub(crate) all_paths_down_s: f64,
    pub(crate) hold_failures: u64,
    pub(crate) paths: Vec<PathView>,
}

/// One line of `mpio path list`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct PathView {
    pub(crate) device: String,
    pub(crate) name: String,
    /// active, standby, probation, reconnecting, failed, disabled,
    /// connecting.
    pub(crate) state: String,
    pub(crate) portal: String,
    pub(crate) source: Option<String>,
    /// In the running policy: primary, active, standby, or the weight.
    pub(crate) role: Option<String>,
    pub(crate) weight: Option<u32>,
    pub(crate) in_flight: u32,
    pub(crate) reads: u64,
    pub(crate) writes: u64,
    pub(crate) read_bytes: u64,
    pub(crate) write_bytes: u64,
    pub(crate) latency_us: f64,
    pub(crate) failures: u64,
    pub(crate) last_failure: Option<String>,
    /// Seconds in this state.
    pub(crate) since_s: f64,
    /// The session's ISID (hex) and the TSIH the target gave it: how the
    /// target names this I_T nexus. The ISID stays across daemon
    /// restarts, so a restarted daemon reinstates its sessions.
    #[serde(default)]
    pub(crate) isid: Option<String>,
    #[serde(default)]
    pub(crate) tsih: Option<u16>,
}

/// `mpio policy show`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct PolicyView {
    pub(crate) device: String,
    pub(crate) policy: String,
    /// The parameters, paths by name.
    pub(crate) primary: Option<String>,
    pub(crate) standby_order: Option<Vec<String>>,
    pub(crate) active: Option<Vec<String>>,
    pub(crate) weights: Option<Vec<(String, u32)>>,
    pub(crate) switch: Option<String>,
    /// The paths carrying I/O now.
    pub(crate) carrying_io: Vec<String>,
}

/// One event.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventView {
    /// RFC 3339, UTC, milliseconds.
    pub(crate) time: String,
    pub(crate) device: String,
    pub(crate) path: Option<String>,
    /// `EventKind::name` (path_failed, failover, ...), or daemon events
    /// (config_reloaded, device_added, device_removed; ublk_created,
    /// ublk_recovering, ublk_reattached, ublk_failed for a device's
    /// `/dev/ublkbN`).
    pub(crate) kind: String,
    pub(crate) reason: String,
    /// The seed's event ID for the same condition.
    pub(crate) seed_event: Option<u32>,
}

/// One line of `mpio ublk list`: a device of the kernel's ublk driver.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct UblkDeviceView {
    /// The driver's number: `/dev/ublkb<id>`.
    pub(crate) id: u32,
    pub(crate) block_device: String,
    /// The mpio device it serves (its record in /run/ublksrvd), if mpio
    /// made it.
    pub(crate) name: Option<String>,
    /// The control socket of the daemon that made it.
    pub(crate) daemon: Option<String>,
    /// live, quiesced (its server gone, I/O waiting), dead, fail-io.
    pub(crate) state: String,
    /// Its server's pid, and whether that process runs.
    pub(crate) pid: i32,
    pub(crate) server_alive: bool,
    /// A new server can take it over (made with user recovery).
    pub(crate) recoverable: bool,
    pub(crate) capacity_bytes: Option<u64>,
    pub(crate) logical_block: Option<u32>,
    /// The device of this daemon that serves it or is taking it over.
    pub(crate) claimed_by: Option<String>,
}

/// The answer to `reload`.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub(crate) struct ReloadView {
    /// What changed, one line each; empty when nothing did.
    pub(crate) changes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_their_wire_form() {
        let r = Request::PathSetWeight { device: "d0".into(), path: "p2".into(), weight: 5 };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"op":"path-set-weight","device":"d0","path":"p2","weight":5}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        let bad = serde_json::from_str::<Request>(r#"{"op":"explode"}"#).unwrap_err();
        assert!(bad.to_string().contains("explode"), "{bad}");
    }
}
