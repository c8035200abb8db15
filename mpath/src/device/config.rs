//! What a device is made of: its paths, its timers and policy, the
//! bring-up steps a path passes before I/O, and why a device refuses a
//! configuration or a change ([`DeviceError`]).

use std::sync::Arc;
use std::time::Duration;

use mpio_dsm::Lun;
use mpio_policies::{PolicyError, PolicySpec, SwitchEvery};
use mpio_transport::name::IscsiName;
use mpio_transport::pdu::Isid;
use mpio_transport::text::OperationalOffer;
use mpio_transport::{Auth, ConnectionSpec, SessionConfig};

use crate::failure::BringUpRefused;
use crate::scsi::LuAccess;
use crate::timers::TimerConfig;

/// One path of a device (MPIO: one session).
#[derive(Clone, Debug)]
pub struct PathConfig {
    /// Name, unique in the device (`p1`, `san-a-eth1`, ...).
    pub name: String,
    /// Portal and optional source address or interface.
    pub connection: ConnectionSpec,
    /// The target this path logs in to, when not the device's: arrays that
    /// expose one target per controller port reach one LU through several
    /// target names. The LU identity check applies as for any path.
    pub target: Option<IscsiName>,
    /// Portal group for fencing: paths of one group reach the same nexus
    /// state (RFC 7143: a target portal group). Default: the target name
    /// and the TargetPortalGroupTag the target declares at login.
    pub group: Option<String>,
}

impl PathConfig {
    /// A path named `name` through `connection`, to the device's target,
    /// in the portal group the target declares.
    pub fn new(name: impl Into<String>, connection: ConnectionSpec) -> PathConfig {
        PathConfig { name: name.into(), connection, target: None, group: None }
    }
}

/// A step a path must pass after its identity check and before it may
/// carry I/O, at every login of the path (a new session has a new I_T
/// nexus): persistent reservation key registration goes here. A failure
/// keeps the path out, with the step's message.
pub trait BringUp: Send + Sync + std::fmt::Debug + 'static {
    /// Runs the step on `path` (its name) through `lu`.
    fn before_io<'a>(&'a self, path: &'a str, lu: &'a LuAccess) -> BoxFuture<'a, Result<(), BringUpRefused>>;
}

/// The future a [`BringUp`] step returns.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A multipath device.
#[derive(Clone, Debug)]
pub struct DeviceConfig {
    /// Device name.
    pub name: String,
    /// Our iSCSI name.
    pub initiator: IscsiName,
    /// The target.
    pub target: IscsiName,
    /// The logical unit.
    pub lun: Lun,
    /// Authentication for every path.
    pub auth: Auth,
    /// Operational values offered on every path.
    pub offer: OperationalOffer,
    /// The paths.
    pub paths: Vec<PathConfig>,
    /// Load balancing.
    pub policy: PolicySpec,
    /// Timers.
    pub timers: TimerConfig,
    /// Refuse paths (and the device) unless the LU has this identity
    /// (`naa.…`, as `mpio scsi inquiry --vpd 0x83` prints it). For a LU
    /// that reports no identity at all (which is otherwise refused, see
    /// [`ClaimRefusal::NoIdentity`](crate::ClaimRefusal::NoIdentity)) the pin stands in for one, over the
    /// device's first path only: nothing could prove that a second path
    /// reaches the same LU.
    pub expect_identity: Option<String>,
    /// [`Device::open`](crate::Device::open) waits this long for a first usable path.
    pub startup_timeout: Duration,
    /// Bring-up steps, in order, after the identity check of each login.
    pub bring_up: Vec<Arc<dyn BringUp>>,
}

impl DeviceConfig {
    /// A device over `paths` with round robin and default timers.
    pub fn new(
        name: impl Into<String>,
        initiator: IscsiName,
        target: IscsiName,
        lun: Lun,
        paths: Vec<PathConfig>,
    ) -> Self {
        DeviceConfig {
            name: name.into(),
            initiator,
            target,
            lun,
            auth: Auth::None,
            offer: OperationalOffer::default(),
            paths,
            policy: PolicySpec::RoundRobin { switch: SwitchEvery::Ios(1) },
            timers: TimerConfig::default(),
            expect_identity: None,
            startup_timeout: Duration::from_secs(30),
            bring_up: Vec::new(),
        }
    }

    /// The session of one path: its own ISID, derived from what names the
    /// path, so a restarted daemon reinstates rather than leaks sessions.
    pub(super) fn session(&self, path: &PathConfig) -> SessionConfig {
        let target = path.target.clone().unwrap_or_else(|| self.target.clone());
        let mut cfg = SessionConfig::new(self.initiator.clone(), target, path.connection.portal.clone());
        cfg.connections = vec![path.connection.clone()];
        cfg.isid = Isid::for_path(&format!("{} {} {} {}", self.initiator, self.target, self.name, path.name));
        cfg.auth = self.auth.clone();
        cfg.offer = self.offer.clone();
        let t = &self.timers;
        cfg.timeouts.connect = t.connect_timeout;
        cfg.timeouts.login = t.login_timeout;
        cfg.timeouts.nop_interval = Some(t.nop_interval);
        cfg.timeouts.nop_timeout = t.nop_timeout;
        cfg.timeouts.command = t.io_timeout;
        cfg.timeouts.task_mgmt = t.abort_timeout;
        cfg.timeouts.reconnect_min = t.reconnect_min;
        cfg.timeouts.reconnect_max = t.reconnect_max;
        // The device re-drives what a failed path carried; the session
        // must not hold it.
        cfg.timeouts.recovery = Some(Duration::ZERO);
        cfg.reconnect = true;
        cfg
    }
}

/// Why a device could not start or open, or a command was refused. Where the
/// seed has a status code of the same meaning, [`DeviceError::code`] gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The configuration is unusable.
    #[error("device configuration: {0}")]
    Config(String),
    /// No path came up in time; why each failed.
    #[error("no path of device {device} came up within {waited:?}: {}", reasons.join("; "))]
    NoPath {
        /// Device name.
        device: String,
        /// How long it waited.
        waited: Duration,
        /// Per path.
        reasons: Vec<String>,
    },
    /// No such path.
    #[error("device {device} has no path named {path:?}")]
    UnknownPath {
        /// Device.
        device: String,
        /// The name given.
        path: String,
    },
    /// The path is being removed: nothing more can be done with it.
    #[error("path {path:?} of device {device} is being removed")]
    PathRemoving {
        /// Device.
        device: String,
        /// The path.
        path: String,
    },
    /// Not every path came up in time ([`Device::wait_all_ready`](crate::Device::wait_all_ready)).
    #[error("not every path of device {device} came up within {waited:?}: {}", reasons.join("; "))]
    NotAllReady {
        /// Device name.
        device: String,
        /// How long it waited.
        waited: Duration,
        /// Per path: state and reason.
        reasons: Vec<String>,
    },
    /// A path failed for good ([`Device::wait_all_ready`](crate::Device::wait_all_ready)): it will not
    /// come up by itself.
    #[error("path {path} of device {device} failed and will not come up by itself: {reason}")]
    PathFailed {
        /// Device name.
        device: String,
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A path name is used twice (in the configuration, or by a path added
    /// at runtime).
    #[error(
        "path name {path:?} is taken in device {device}{}: give each path its own name (ISDSC_DUPLICATE_PATH_SPECIFIED)",
        if *removing { " by a path being removed; wait for its removal" } else { "" }
    )]
    DuplicatePath {
        /// Device.
        device: String,
        /// The name.
        path: String,
        /// Taken by a path that is being removed.
        removing: bool,
    },
    /// A policy change, a path's role change or a removal was refused.
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// The capacity could not be read again ([`Device::rescan`](crate::Device::rescan)).
    #[error("device {device}: rescan: {reason}")]
    Rescan {
        /// Device.
        device: String,
        /// Why, and what to do.
        reason: String,
    },
}

impl DeviceError {
    /// The seed status code (`ISDSC_*` of the Microsoft iSCSI initiator) of the same
    /// meaning, if there is one.
    pub fn code(&self) -> Option<u32> {
        self.status().map(|s| s.0)
    }

    /// The seed's symbolic name of [`DeviceError::code`].
    pub fn symbol(&self) -> Option<&'static str> {
        self.status().map(|s| s.1)
    }

    fn status(&self) -> Option<(u32, &'static str)> {
        match self {
            DeviceError::Config(_)
            | DeviceError::NotAllReady { .. }
            | DeviceError::PathFailed { .. }
            | DeviceError::Rescan { .. } => None,
            // The seed's startup wait for persistent logins (ISDSC_PERSISTENT_LOGIN_TIMEOUT).
            DeviceError::NoPath { .. } => Some((0xEFFF_0047, "ISDSC_PERSISTENT_LOGIN_TIMEOUT")),
            DeviceError::UnknownPath { .. } | DeviceError::PathRemoving { .. } => {
                Some((0xEFFF_0059, "ISDSC_INVALID_PATH_ID"))
            }
            DeviceError::DuplicatePath { .. } => Some((0xEFFF_0057, "ISDSC_DUPLICATE_PATH_SPECIFIED")),
            DeviceError::Policy(e) => Some((e.code(), e.symbol())),
        }
    }
}
