//! What one scrape reads of a device: the multipath core's snapshot and
//! the snapshot of each path's iSCSI session, taken together.

use std::time::{Duration, Instant};

use mpio_mpath::{Device, DeviceSnapshot, SessionView};
use tracing::debug;

/// A session driver busy for longer than this (it answers between two
/// socket reads, so in microseconds) leaves its families without samples
/// for this scrape rather than holding the scrape, and the others, back.
const SESSION_ANSWER: Duration = Duration::from_secs(1);

/// One device as a scrape sees it.
#[derive(Clone, Debug)]
pub struct DeviceView {
    /// The device's name (label `device`).
    pub name: String,
    /// Paths, policy and counters.
    pub snapshot: DeviceSnapshot,
    /// The session of each path, in the order of `snapshot.paths`; `None`
    /// when it did not answer (its driver stopped, or it was busy).
    pub sessions: Vec<Option<SessionView>>,
    /// When the snapshot was taken: the length of a hold still running is
    /// measured up to here.
    pub at: Instant,
    /// How the device is presented (none for a bare device).
    pub frontends: Vec<Frontend>,
}

/// One way a device is presented (family `mpio_device_frontend_info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontend {
    /// `ublk`, `nbd` (label `frontend`).
    pub kind: String,
    /// The kernel block device (`/dev/ublkb0`), empty while there is none
    /// or where the server does not know it (an NBD client picks its own
    /// `/dev/nbdN`) (label `block_device`).
    pub block_device: String,
}

/// A device as the daemon hands it to a scrape: the device, and how it is
/// presented.
#[derive(Clone, Debug)]
pub struct Served {
    /// The multipath device.
    pub device: Device,
    /// Its frontends.
    pub frontends: Vec<Frontend>,
}

impl From<Device> for Served {
    fn from(device: Device) -> Served {
        Served { device, frontends: Vec::new() }
    }
}

impl DeviceView {
    /// Reads `device`. The core is locked only while its snapshot is
    /// copied; each session answers from its own driver task, so the I/O
    /// path is never blocked by a scrape.
    pub async fn gather(device: &Device) -> DeviceView {
        let snapshot = device.snapshot();
        let at = Instant::now();
        let mut sessions = Vec::with_capacity(snapshot.paths.len());
        for path in &snapshot.paths {
            sessions.push(session(device, &path.name).await);
        }
        DeviceView { name: device.name().to_string(), snapshot, sessions, at, frontends: Vec::new() }
    }
}

async fn session(device: &Device, path: &str) -> Option<SessionView> {
    match tokio::time::timeout(SESSION_ANSWER, device.session_view(path)).await {
        Ok(Some(s)) => Some(s),
        Ok(None) => {
            debug!(device = device.name(), path, "no session snapshot: no such path, or its session driver stopped");
            None
        }
        Err(_) => {
            debug!(device = device.name(), path, "no session snapshot within {SESSION_ANSWER:?}");
            None
        }
    }
}
