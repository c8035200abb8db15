//! The async multipath device: what frontends (NBD, ublk) and the daemon
//! use. It owns one iSCSI session per path, claims each path by the
//! logical unit's identity before it may carry I/O, runs requests through
//! [`DeviceCore`], and drives the core's timers and actions (probes,
//! fences) in a background task.
//!
//! A request's life: the core picks a path; the command runs on that
//! path's session; the completion is classified (`dsm::classify`); the
//! core says done, retry, fail, or re-drive. A data-modifying request
//! caught on a failed path is re-driven only once the failed nexus
//! provably cannot execute it any more (its session reinstated, through
//! its own portal or another portal of the same portal group, or
//! DefaultTime2Wait + DefaultTime2Retain passed), so a stale copy can
//! never land after a newer write. Reads and flushes go again at once.
//!
//! A device's life, as the daemon drives it:
//!
//! - [`Device::start`] returns at once with every path connecting in the
//!   background; [`Device::wait_ready`] waits for the first usable path and
//!   names each path's reason on timeout; [`Device::open`] is both, and
//!   logs every session out when it fails. Requests made before the first
//!   claim wait as in an all-paths-down hold.
//! - A configuration reload adds paths ([`Device::add_path`]: login, claim,
//!   bring-up, then the least preferred role of the policy) and removes
//!   them ([`Device::remove_path`]: no new I/O, drain, logout), changes a
//!   path's role ([`Device::set_path_role`]) or the policy
//!   ([`Device::set_policy`]); refusals carry the seed's status codes
//!   ([`DeviceError::code`]).
//! - [`Device::events`] streams every state change (login failures
//!   included); [`Device::snapshot`] and [`Device::path_configs`] give what
//!   `mpio path list` and the metrics show.

use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use mpio_dsm::classify::{ErrorClass, classify};
use mpio_dsm::{Command, Lun, ScsiStatus, Sense, cdb};
use mpio_policies::{PathId, PathRole, PolicyError, PolicyRequest, PolicySpec, SwitchEvery};
use mpio_transport::login::LoginError;
use mpio_transport::name::IscsiName;
use mpio_transport::pdu::Isid;
use mpio_transport::text::OperationalOffer;
use mpio_transport::{
    Auth, ConnectionFailure, ConnectionSpec, ReadData, ScsiResult, SessionConfig, SessionEvent, SessionHandle,
    TaskError,
};
use tokio::sync::{Notify, broadcast, mpsc};
use tracing::{debug, info, warn};

use crate::claim::{ClaimRefusal, claim};
use crate::core::{
    Action, Completion, DeviceCore, DeviceSnapshot, Durability, FailureCause, Fence, IoError, IoErrorKind,
    PathSnapshot, PathStatus, Selection, Verdict,
};
use crate::durability::WriteCache;
use crate::event::DeviceEvent;
use crate::scsi::{LuAccess, request};
use crate::stats::Op;
use crate::timers::{HoldMode, TimerConfig};

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
    fn before_io<'a>(&'a self, path: &'a str, lu: &'a LuAccess) -> BoxFuture<'a, Result<(), String>>;
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
    /// [`ClaimRefusal::NoIdentity`]) the pin stands in for one, over the
    /// device's first path only: nothing could prove that a second path
    /// reaches the same LU.
    pub expect_identity: Option<String>,
    /// [`Device::open`] waits this long for a first usable path.
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
    fn session(&self, path: &PathConfig) -> SessionConfig {
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
    /// Not every path came up in time ([`Device::wait_all_ready`]).
    #[error("not every path of device {device} came up within {waited:?}: {}", reasons.join("; "))]
    NotAllReady {
        /// Device name.
        device: String,
        /// How long it waited.
        waited: Duration,
        /// Per path: state and reason.
        reasons: Vec<String>,
    },
    /// A path failed for good ([`Device::wait_all_ready`]): it will not
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
            DeviceError::Config(_) | DeviceError::NotAllReady { .. } | DeviceError::PathFailed { .. } => None,
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

/// What the device is: the logical unit behind every path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LuInfo {
    /// The identity paths are merged by (`naa.…`, `eui.…`, `iqn.…`,
    /// `t10.…` from VPD 0x83, or `serial.VENDOR:PRODUCT:SERIAL`; see
    /// `mpio_dsm::identity`), or the configured pin for a LU that reports
    /// none.
    pub identity: String,
    /// VPD 0x80 serial number, if the LU reports one.
    pub serial: Option<String>,
    /// Logical block size.
    pub block_len: u32,
    /// Number of blocks.
    pub blocks: u64,
    /// Physical block size.
    pub physical_block_len: u32,
    /// Largest transfer the LU takes, in bytes (VPD 0xB0), if it says.
    pub max_transfer: Option<u64>,
    /// UNMAP supported (VPD 0xB2 LBPU, and VPD 0xB0 does not say 0).
    pub unmap: bool,
    /// Most blocks one UNMAP may name (VPD 0xB0), if the LU says.
    pub max_unmap_blocks: Option<u32>,
    /// WRITE SAME(16) supported for zeroing.
    pub write_same: bool,
    /// Most blocks one WRITE SAME may cover (VPD 0xB0), if the LU says.
    pub max_write_same_blocks: Option<u64>,
    /// The LU is write-protected: the WP bit of the MODE SENSE header
    /// ([`LuAccess::write_protected`]); false when the LU refuses MODE
    /// SENSE. Read at every claim of a path (bring-up and every
    /// reconnection), so a change made on the target shows here once a
    /// path is claimed again. Until then writes to a newly protected LU
    /// fail with EROFS (DATA PROTECT 27/xx) all the same.
    pub write_protected: bool,
    /// The LU's write cache (WCE) and FUA support (DPOFUA), read at every
    /// claim as Linux's sd does: what FUA writes and flushes become
    /// ([`crate::durability`]).
    pub write_cache: WriteCache,
}

impl LuInfo {
    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.blocks * u64::from(self.block_len)
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{} (serial {}, {} blocks of {} bytes, {}{})",
            self.identity,
            self.serial.as_deref().unwrap_or("none"),
            self.blocks,
            self.block_len,
            self.write_cache.describe(),
            if self.write_protected { ", write-protected" } else { "" }
        )
    }

    /// Same logical unit. tgtd can give two LUs the same NAA designator
    /// (its NAA is built from the hex digits of scsi_id), so the serial,
    /// size and block size must match too.
    pub(crate) fn same_lu(&self, other: &LuInfo) -> bool {
        self.identity == other.identity
            && self.serial == other.serial
            && self.block_len == other.block_len
            && self.blocks == other.blocks
    }
}

/// One command's share of a request's range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    /// Offset within the request.
    rel: u64,
    /// Byte offset on the device.
    at: u64,
    /// Bytes.
    len: u64,
    lba: u64,
    blocks: u32,
}

/// The I/O side of one path.
pub(crate) struct PathIo {
    /// As configured (`mpio path list` shows the portal and source).
    pub(crate) config: PathConfig,
    pub(crate) session: SessionHandle,
    pub(crate) session_config: SessionConfig,
    pub(crate) lu: LuAccess,
}

impl PathIo {
    /// Starts the path's session: it connects and logs in in the background,
    /// and keeps trying (except after a login refused for good). Returns its
    /// events from the very start, for [`watch_session`].
    fn spawn(
        template: &DeviceConfig,
        config: PathConfig,
    ) -> Result<(PathIo, broadcast::Receiver<SessionEvent>), DeviceError> {
        let session_config = template.session(&config);
        let (session, events) = SessionHandle::spawn_watched(session_config.clone())
            .map_err(|e| DeviceError::Config(format!("path {}: {e}", config.name)))?;
        let lu = LuAccess::new(session.clone(), template.lun);
        Ok((PathIo { config, session, session_config, lu }, events))
    }
}

pub(crate) struct Inner {
    pub(crate) name: String,
    /// What the sessions of paths are made from, also of paths added later
    /// (its `paths` list is not kept: the path table is `paths` below).
    pub(crate) template: DeviceConfig,
    core: Mutex<DeviceCore>,
    /// The I/O side of each path by id, `None` once removed. Read for every
    /// command, written only when paths are added or removed.
    paths: RwLock<Vec<Option<Arc<PathIo>>>>,
    pub(crate) info: Mutex<Option<LuInfo>>,
    /// Woken when paths become usable or fences clear.
    changed: Notify,
    /// Wakes the driver after a completion changed the core.
    kick: Notify,
    events: broadcast::Sender<(SystemTime, DeviceEvent)>,
    /// To the driver (session events of every path, claims, probes, fences).
    tx: mpsc::UnboundedSender<Msg>,
}

impl Inner {
    pub(crate) fn core(&self) -> MutexGuard<'_, DeviceCore> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn path_io(&self, id: PathId) -> Option<Arc<PathIo>> {
        self.paths.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned().flatten()
    }

    pub(crate) fn path_name(&self, id: PathId) -> String {
        self.core().path_name(id).unwrap_or("?").to_owned()
    }
}

/// The path may carry I/O.
fn usable(p: &PathSnapshot) -> bool {
    matches!(p.state, "active" | "standby")
}

/// Each path's last failure (or its state, when usable), for a wait that
/// gave up.
fn reasons(snap: &DeviceSnapshot) -> Vec<String> {
    snap.paths
        .iter()
        .map(|p| match &p.last_cause {
            _ if usable(p) => format!("{}: {}", p.name, p.state),
            Some(c) => format!("{}: {c}", p.name),
            None => format!("{}: still connecting", p.name),
        })
        .collect()
}

/// Counts a request as waiting (for a path or a fence) while it lives.
struct Waiting<'a>(&'a Inner);

impl<'a> Waiting<'a> {
    fn new(inner: &'a Inner) -> Waiting<'a> {
        inner.core().wait_started();
        Waiting(inner)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.core().wait_ended();
    }
}

/// The device's event stream, with the wall-clock time of each event.
pub type DeviceEvents = broadcast::Receiver<(SystemTime, DeviceEvent)>;

/// A multipath device. Cheap to clone. When the last clone is dropped,
/// the sessions log out.
#[derive(Clone)]
pub struct Device {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("name", &self.inner.name).finish_non_exhaustive()
    }
}

/// Messages from the helper tasks to the driver.
enum Msg {
    Session(PathId, SessionEvent),
    /// A claim's outcome; `Ok` carries the path's portal group.
    Claimed(PathId, bool, Result<Option<String>, ClaimRefusal>),
    Probed(PathId, Result<(), String>),
    Fenced(PathId, u64, Result<(), String>),
}

/// Forwards a path's session events (subscribed to before the session
/// started) to the driver.
fn watch_session(id: PathId, mut sub: broadcast::Receiver<SessionEvent>, tx: mpsc::UnboundedSender<Msg>) {
    tokio::spawn(async move {
        loop {
            match sub.recv().await {
                Ok(ev) => {
                    if tx.send(Msg::Session(id, ev)).is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

impl Device {
    /// Starts the device and returns at once, with every path connecting in
    /// the background; only configuration errors are returned. Sessions keep
    /// retrying (backing off up to `reconnect_max`) until they log in,
    /// except after a login the target refuses for good (authentication,
    /// authorization, unknown target: seed event 70), which leaves the path
    /// failed with the reason.
    ///
    /// Until a path is claimed, [`Device::info`] is `None` and requests wait
    /// as in an all-paths-down hold, per the hold mode (counted from now):
    /// `fail` fails them at once, `queue` waits, a hold time fails them when
    /// it passes. Starting up is not counted as an outage
    /// ([`DeviceSnapshot::starting`]). [`Device::wait_ready`] waits for the
    /// first usable path. Must be called within a tokio runtime.
    pub fn start(cfg: DeviceConfig) -> Result<Device, DeviceError> {
        Device::start_watched(cfg).map(|(device, _)| device)
    }

    /// [`Device::start`], with a subscription to the device's events taken
    /// before any path starts: not even the first login failure is missed
    /// (a subscription taken after `start` races with them).
    pub fn start_watched(mut cfg: DeviceConfig) -> Result<(Device, DeviceEvents), DeviceError> {
        if cfg.paths.is_empty() {
            return Err(DeviceError::Config(format!("device {} has no path", cfg.name)));
        }
        let names: Vec<String> = cfg.paths.iter().map(|p| p.name.clone()).collect();
        if let Some(dup) = names.iter().enumerate().find(|(i, n)| names[..*i].contains(n)).map(|(_, n)| n) {
            return Err(DeviceError::DuplicatePath { device: cfg.name.clone(), path: dup.clone(), removing: false });
        }
        let problems: Vec<String> = cfg.timers.check().into_iter().filter(|p| p.fatal).map(|p| p.message).collect();
        if !problems.is_empty() {
            return Err(DeviceError::Config(format!("timers: {}", problems.join("; "))));
        }
        cfg.policy.check(&names)?;
        let configs = std::mem::take(&mut cfg.paths);
        let mut paths = Vec::with_capacity(configs.len());
        let mut watches = Vec::with_capacity(configs.len());
        for p in configs {
            let (io, events) = PathIo::spawn(&cfg, p)?;
            paths.push(Some(Arc::new(io)));
            watches.push(events);
        }
        let core = DeviceCore::new(cfg.timers.clone(), names, cfg.policy.clone(), Instant::now());
        let (events, first) = broadcast::channel(1024);
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            name: cfg.name.clone(),
            template: cfg,
            core: Mutex::new(core),
            paths: RwLock::new(paths),
            info: Mutex::new(None),
            changed: Notify::new(),
            kick: Notify::new(),
            events,
            tx,
        });
        for (id, events) in watches.into_iter().enumerate() {
            watch_session(id, events, inner.tx.clone());
        }
        tokio::spawn(drive(Arc::downgrade(&inner), rx));
        Ok((Device { inner }, first))
    }

    /// Waits until a path carries I/O. After `timeout`, or as soon as every
    /// path has failed for good (a login refused for a reason retrying cannot
    /// fix, a path to another logical unit), fails with each path's reason
    /// (its last login or claim failure, or "still connecting"); paths still
    /// retrying go on in the background.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), DeviceError> {
        let device = self.inner.name.clone();
        self.wait_paths(timeout, |snap, waited| {
            if snap.paths.iter().any(usable) {
                return Some(Ok(()));
            }
            let hopeless = snap.paths.iter().all(|p| p.status == PathStatus::Failed);
            (hopeless || waited.is_some()).then(|| {
                let waited = waited.unwrap_or_default();
                Err(DeviceError::NoPath { device: device.clone(), waited, reasons: reasons(snap) })
            })
        })
        .await
    }

    /// Waits until every path carries I/O (what `mpio perf` over several
    /// paths measures with). Fails at once when a path has failed for good
    /// (its claim refused, its login refused for good: it will not come up
    /// by itself), and after `timeout` with each path's state and reason.
    pub async fn wait_all_ready(&self, timeout: Duration) -> Result<(), DeviceError> {
        let device = self.inner.name.clone();
        self.wait_paths(timeout, |snap, waited| {
            if snap.paths.iter().all(usable) {
                return Some(Ok(()));
            }
            if let Some(p) = snap.paths.iter().find(|p| p.status == PathStatus::Failed) {
                let reason = p.last_cause.as_ref().map_or_else(|| "failed".into(), ToString::to_string);
                return Some(Err(DeviceError::PathFailed { device: device.clone(), path: p.name.clone(), reason }));
            }
            waited
                .map(|waited| Err(DeviceError::NotAllReady { device: device.clone(), waited, reasons: reasons(snap) }))
        })
        .await
    }

    /// Re-checks `done` after every change of the device until it answers;
    /// once `timeout` passed it is asked with the time waited and must.
    async fn wait_paths(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&DeviceSnapshot, Option<Duration>) -> Option<Result<(), DeviceError>>,
    ) -> Result<(), DeviceError> {
        let start = tokio::time::Instant::now();
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = done(&self.snapshot(), None) {
                return r;
            }
            if tokio::time::timeout_at(start + timeout, notified).await.is_err() {
                let waited = start.elapsed();
                return done(&self.snapshot(), Some(waited)).unwrap_or(Ok(()));
            }
        }
    }

    /// [`Device::start`], then [`Device::wait_ready`] for
    /// `startup_timeout`. On failure no session is left running.
    pub async fn open(cfg: DeviceConfig) -> Result<Device, DeviceError> {
        let timeout = cfg.startup_timeout;
        let device = Device::start(cfg)?;
        if let Err(e) = device.wait_ready(timeout).await {
            device.log_out_all().await;
            return Err(e);
        }
        Ok(device)
    }

    /// Logs every session out (at most a login timeout).
    async fn log_out_all(&self) {
        let sessions: Vec<SessionHandle> = {
            let paths = self.inner.paths.read().unwrap_or_else(|e| e.into_inner());
            paths.iter().flatten().map(|p| p.session.clone()).collect()
        };
        let mut all = tokio::task::JoinSet::new();
        for s in sessions {
            all.spawn(async move {
                let _ = s.logout().await;
            });
        }
        let _ = tokio::time::timeout(self.inner.template.timers.login_timeout, all.join_all()).await;
    }

    fn core(&self) -> MutexGuard<'_, DeviceCore> {
        self.inner.core()
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The logical unit (known once a path was claimed).
    pub fn info(&self) -> Option<LuInfo> {
        self.inner.info.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Path states, policy and counters.
    pub fn snapshot(&self) -> DeviceSnapshot {
        self.core().snapshot()
    }

    /// The configuration of every path in the device (removed ones are
    /// gone), in table order: the portal, source address or interface,
    /// target and portal group of each. Join with
    /// [`DeviceSnapshot::paths`] by name.
    pub fn path_configs(&self) -> Vec<PathConfig> {
        let paths = self.inner.paths.read().unwrap_or_else(|e| e.into_inner());
        paths.iter().flatten().map(|p| p.config.clone()).collect()
    }

    /// Subscribes to events (with wall-clock time), from now on.
    pub fn events(&self) -> DeviceEvents {
        self.inner.events.subscribe()
    }

    /// The session of a path (for diagnostics and tests).
    pub fn path_session(&self, name: &str) -> Option<SessionHandle> {
        let id = self.core().path_id(name)?;
        self.inner.path_io(id).map(|p| p.session.clone())
    }

    /// The id of a path an administrator may act on.
    fn path_id(&self, name: &str) -> Result<PathId, DeviceError> {
        let core = self.core();
        let (device, path) = (self.inner.name.clone(), name.to_owned());
        match core.path_id(name) {
            Some(id) if core.status(id) == Some(PathStatus::Removing) => {
                Err(DeviceError::PathRemoving { device, path })
            }
            Some(id) => Ok(id),
            None => Err(DeviceError::UnknownPath { device, path }),
        }
    }

    fn after_admin(&self) {
        self.inner.kick.notify_one();
        self.inner.changed.notify_waiters();
    }

    /// Changes the policy; refused changes leave the running one.
    pub fn set_policy(&self, req: &PolicyRequest) -> Result<(), DeviceError> {
        let r = self.core().set_policy(Instant::now(), req).map_err(DeviceError::Policy);
        self.after_admin();
        r
    }

    /// Gives a path another role in the running policy (`mpio path
    /// set-weight|set-active|set-standby`): a weight under `weighted`; under
    /// `fail-over-only` [`PathRole::Active`] makes it the primary (the old
    /// primary becomes the last standby); under `round-robin-subset` it
    /// joins or leaves the active set. Other combinations, and demoting the
    /// only preferred path, are refused with the seed's code and the fix
    /// ([`PolicySpec::with_role`]).
    pub fn set_path_role(&self, name: &str, role: PathRole) -> Result<(), DeviceError> {
        let id = self.path_id(name)?;
        let r = self.core().set_role(Instant::now(), id, role).map_err(DeviceError::Policy);
        self.after_admin();
        r
    }

    /// Adds a path at runtime (a configuration reload). It logs in, is
    /// claimed (identity check, bring-up steps) like any path, then the
    /// policy may use it, in the least preferred role
    /// ([`PolicySpec::with_path`]): round robin and the load-driven policies
    /// use it at once; under `fail-over-only` and `round-robin-subset` it is
    /// the last standby; under `weighted` its weight is `u32::MAX` (the
    /// lowest priority). Give it another role with
    /// [`Device::set_path_role`]; until then it takes no I/O from a
    /// configured path. Returns once the session is started, not logged in.
    /// A name in use (also by a path being removed) is refused.
    pub fn add_path(&self, path: PathConfig) -> Result<(), DeviceError> {
        let name = path.name.clone();
        let duplicate =
            |removing| DeviceError::DuplicatePath { device: self.inner.name.clone(), path: name.clone(), removing };
        let taken = {
            let core = self.core();
            core.path_id(&name).map(|id| core.status(id) == Some(PathStatus::Removing))
        };
        if let Some(removing) = taken {
            return Err(duplicate(removing));
        }
        let (io, events) = PathIo::spawn(&self.inner.template, path)?;
        let io = Arc::new(io);
        let Some(id) = self.core().add_path(Instant::now(), name.clone()) else {
            // Added by a concurrent call meanwhile; this session ends unused.
            return Err(duplicate(false));
        };
        {
            let mut paths = self.inner.paths.write().unwrap_or_else(|e| e.into_inner());
            if paths.len() <= id {
                paths.resize(id + 1, None);
            }
            if let Some(slot) = paths.get_mut(id) {
                *slot = Some(io.clone());
            }
        }
        watch_session(id, events, self.inner.tx.clone());
        self.after_admin();
        Ok(())
    }

    /// Removes a path at runtime, without I/O errors: it takes no new I/O at
    /// once, the commands it carries complete (or, if it fails meanwhile,
    /// are re-driven elsewhere, writes after its old nexus is fenced), then
    /// its session logs out and the path is gone; returns then. Refused for
    /// the device's last path (`ISDSC_CANT_REMOVE_LAST_CONNECTION`: remove
    /// the device instead), for the fail-over-only primary and for the only
    /// active path of round-robin-subset (`ISDSC_CANNOT_REMOVE_ACTIVE_CONNECTION`:
    /// make another path primary or active first). The health of the other
    /// paths is not checked: removing the only working path leaves the
    /// device in the all-paths-down hold.
    ///
    /// The drain and logout run in a task of their own: dropping the returned
    /// future does not stop them.
    pub async fn remove_path(&self, name: &str) -> Result<(), DeviceError> {
        let id = self.path_id(name)?;
        self.core().remove_path(Instant::now(), id)?;
        self.after_admin();
        let device = self.clone();
        let name = name.to_owned();
        // Bounded: the commands in flight end within the I/O timeouts, the
        // logout within a login timeout.
        let _ = tokio::spawn(async move { device.finish_removal(id, &name).await }).await;
        Ok(())
    }

    /// Waits for a path being removed to drain, logs its session out, and
    /// drops it.
    async fn finish_removal(&self, id: PathId, name: &str) {
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.core().in_flight(id) == 0 {
                break;
            }
            notified.await;
        }
        if let Some(io) = self.inner.path_io(id) {
            let logout = tokio::time::timeout(self.inner.template.timers.login_timeout, io.session.logout()).await;
            if !matches!(logout, Ok(Ok(()))) {
                warn!(device = %self.inner.name, path = name, "logout of a removed path failed; closing its session");
            }
        }
        self.core().path_removed(Instant::now(), id);
        if let Some(slot) = self.inner.paths.write().unwrap_or_else(|e| e.into_inner()).get_mut(id) {
            *slot = None;
        }
        self.after_admin();
    }

    /// Takes a path out of service (`mpio path fail`).
    pub fn disable_path(&self, name: &str) -> Result<(), DeviceError> {
        let id = self.path_id(name)?;
        self.core().disable(Instant::now(), id);
        self.after_admin();
        Ok(())
    }

    /// Puts a disabled path back (through probation).
    pub fn reinstate_path(&self, name: &str) -> Result<(), DeviceError> {
        let id = self.path_id(name)?;
        self.core().reinstate(Instant::now(), id);
        self.after_admin();
        Ok(())
    }

    /// Lets held paths take their I/O back now (`mpio failback`).
    pub fn failback_now(&self) {
        self.core().failback_now(Instant::now());
        self.after_admin();
    }

    /// Changes the all-paths-down hold at runtime.
    pub fn set_hold(&self, hold: HoldMode) {
        self.core().set_hold(hold);
        self.after_admin();
    }

    // ---- I/O -------------------------------------------------------------

    /// The logical unit, waiting for the first claim as requests wait for a
    /// path in an all-paths-down hold (the size and block size are needed to
    /// split a request into commands).
    async fn lu(&self) -> Result<LuInfo, IoError> {
        if let Some(lu) = self.info() {
            return Ok(lu);
        }
        let _waiting = Waiting::new(&self.inner);
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(lu) = self.info() {
                return Ok(lu);
            }
            let hold = self.core().hold(Instant::now());
            let until = hold?;
            self.inner.kick.notify_one();
            wait(notified, until).await;
        }
    }

    fn check_range(lu: &LuInfo, offset: u64, len: u64) -> Result<(), IoError> {
        let bl = u64::from(lu.block_len);
        if !offset.is_multiple_of(bl) || !len.is_multiple_of(bl) {
            return Err(Self::invalid(format!(
                "offset {offset} and length {len} must be multiples of the {bl}-byte block"
            )));
        }
        if offset.checked_add(len).is_none_or(|end| end > lu.capacity()) {
            return Err(Self::invalid(format!(
                "{len} bytes at {offset} go past the end of the device ({} bytes)",
                lu.capacity()
            )));
        }
        Ok(())
    }

    fn invalid(message: String) -> IoError {
        IoError { kind: IoErrorKind::Device, errno: 22, message }
    }

    /// Largest request the device sends as one command; longer ones are
    /// split.
    fn chunk(lu: &LuInfo) -> u64 {
        const DEFAULT_MAX: u64 = 8 << 20;
        let max = lu.max_transfer.unwrap_or(DEFAULT_MAX).clamp(u64::from(lu.block_len), DEFAULT_MAX);
        max - max % u64::from(lu.block_len)
    }

    /// Reads `len` bytes at `offset`.
    pub async fn read(&self, offset: u64, len: u64) -> Result<ReadData, IoError> {
        let lu = self.lu().await?;
        let mut out = ReadData::default();
        for p in Self::pieces(&lu, offset, len, Self::chunk(&lu))? {
            let cmd = cdb::read16(p.lba, p.blocks, lu.block_len, false).map_err(cdb_error)?;
            out.extend(self.run(Op::Read, p.len, &cmd, Bytes::new()).await?.data);
        }
        Ok(out)
    }

    /// Writes `data` at `offset`; `fua`: on stable media before it
    /// completes, by the means the LU has ([`crate::durability`]: the FUA
    /// bit where the LU takes it, a SYNCHRONIZE CACHE after the write on a
    /// write-back LU without it, nothing more on a write-through LU).
    pub async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<(), IoError> {
        let lu = self.lu().await?;
        let plan = lu.write_cache.write(fua);
        for p in Self::pieces(&lu, offset, data.len() as u64, Self::chunk(&lu))? {
            let cmd = cdb::write16(p.lba, p.blocks, lu.block_len, plan.fua_bit).map_err(cdb_error)?;
            let part = data.slice(p.rel as usize..(p.rel + p.len) as usize);
            self.run(Op::Write, p.len, &cmd, part).await?;
        }
        if plan.flush_after {
            debug!(device = %self.inner.name, offset, "FUA write on a write-back LU without DPOFUA: SYNCHRONIZE CACHE");
            self.core().durability_command(Durability::FuaFlush);
            self.synchronize_cache().await?;
        } else if plan.write_through {
            self.core().durability_command(Durability::WriteThrough);
        }
        Ok(())
    }

    /// Makes completed writes durable: SYNCHRONIZE CACHE of the whole LU,
    /// or nothing on a LU without a write cache, whose completed writes
    /// are durable already ([`crate::durability`]).
    pub async fn flush(&self) -> Result<(), IoError> {
        let lu = self.lu().await?;
        if !lu.write_cache.flush_needed() {
            self.core().durability_command(Durability::WriteThrough);
            return Ok(());
        }
        self.synchronize_cache().await
    }

    async fn synchronize_cache(&self) -> Result<(), IoError> {
        let cmd = cdb::synchronize_cache16(0, 0, false).map_err(cdb_error)?;
        self.run(Op::Flush, 0, &cmd, Bytes::new()).await.map(|_| ())
    }

    /// Deallocates a range (UNMAP), in commands the LU accepts.
    pub async fn discard(&self, offset: u64, len: u64) -> Result<(), IoError> {
        let lu = self.lu().await?;
        if !lu.unmap {
            return Err(IoError {
                kind: IoErrorKind::Device,
                errno: 95,
                message: "the logical unit does not support UNMAP".into(),
            });
        }
        let most = lu.max_unmap_blocks.map_or(Self::RANGE_OP_MAX, |b| u64::from(b) * u64::from(lu.block_len));
        for p in Self::pieces(&lu, offset, len, most)? {
            let desc = cdb::UnmapDescriptor { lba: p.lba, blocks: p.blocks };
            let (cmd, params) = cdb::unmap(&[desc], false).map_err(cdb_error)?;
            self.run(Op::Discard, p.len, &cmd, Bytes::from(params)).await?;
        }
        Ok(())
    }

    /// Writes zeroes to a range (WRITE SAME(16), or plain writes when the
    /// LU lacks it).
    pub async fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), IoError> {
        let lu = self.lu().await?;
        if !lu.write_same {
            let chunk = Self::chunk(&lu).min(1 << 20);
            let zeros = Bytes::from(vec![0u8; chunk as usize]);
            for p in Self::pieces(&lu, offset, len, chunk)? {
                self.write(p.at, zeros.slice(..p.len as usize), false).await?;
            }
            return Ok(());
        }
        let most = lu.max_write_same_blocks.map_or(Self::RANGE_OP_MAX, |b| b.saturating_mul(u64::from(lu.block_len)));
        let zero = Bytes::from(vec![0u8; lu.block_len as usize]);
        for p in Self::pieces(&lu, offset, len, most)? {
            let cmd =
                cdb::write_same16(p.lba, p.blocks, lu.block_len, cdb::WriteSameFlags::default()).map_err(cdb_error)?;
            self.run(Op::WriteZeroes, p.len, &cmd, zero.clone()).await?;
        }
        Ok(())
    }

    /// Largest range one UNMAP or WRITE SAME covers when the LU states no
    /// limit: the target works on it in one go, and it must finish well
    /// within the I/O timeout.
    const RANGE_OP_MAX: u64 = 256 << 20;

    /// `len` bytes at `offset`, checked once, in pieces of at most `most`
    /// bytes, whole blocks each (so every piece's block count fits a
    /// command). An empty range has no pieces.
    fn pieces(lu: &LuInfo, offset: u64, len: u64, most: u64) -> Result<impl Iterator<Item = Piece>, IoError> {
        Self::check_range(lu, offset, len)?;
        let bl = u64::from(lu.block_len);
        let most = (most - most % bl).clamp(bl, u64::from(u32::MAX) * bl);
        Ok((0..len.div_ceil(most)).map(move |i| {
            let rel = i * most;
            let n = most.min(len - rel);
            Piece { rel, at: offset + rel, len: n, lba: (offset + rel) / bl, blocks: (n / bl) as u32 }
        }))
    }

    /// Runs one command through the paths: hold, retry, re-drive.
    async fn run(&self, op: Op, bytes: u64, cmd: &Command, data: Bytes) -> Result<ScsiResult, IoError> {
        let inner = &self.inner;
        let mut attempt = 0u32;
        let mut fence: Option<Fence> = None;
        loop {
            if let Some(f) = fence.take() {
                self.wait_fence(f).await;
            }
            let notified = inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let selection = self.core().select(Instant::now(), op, bytes);
            let ticket = match selection {
                Selection::Path(t) => t,
                Selection::Hold(until) => {
                    let _waiting = Waiting::new(inner);
                    inner.kick.notify_one();
                    wait(notified, until).await;
                    continue;
                }
                Selection::Fail(e) => return Err(e),
            };
            let t0 = Instant::now();
            let result = match inner.path_io(ticket.path) {
                Some(path) => path.session.execute(request(inner.template.lun, cmd, data.clone())).await,
                // Cannot happen: a path's I/O side goes only once the path
                // left the policy and was drained. Should it, it is the
                // closed session it would be.
                None => Err(TaskError::SessionClosed),
            };
            let completion = classify_result(&result);
            let (verdict, draining) = {
                let mut core = self.core();
                let verdict = core.complete(Instant::now(), ticket, t0.elapsed(), completion, attempt);
                (verdict, core.status(ticket.path) == Some(PathStatus::Removing))
            };
            if draining {
                // remove_path waits for the path's last command.
                inner.changed.notify_waiters();
            }
            match verdict {
                Verdict::Done => {
                    return result.map_err(|e| IoError { kind: IoErrorKind::Device, errno: 5, message: e.to_string() });
                }
                Verdict::Redrive { fence: f } => {
                    inner.kick.notify_one();
                    fence = f;
                }
                Verdict::Retry(d) => {
                    attempt += 1;
                    if !d.is_zero() {
                        tokio::time::sleep(d).await;
                    }
                }
                Verdict::Fail(e) => return Err(e),
            }
        }
    }

    async fn wait_fence(&self, f: Fence) {
        let _waiting = Waiting::new(&self.inner);
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.core().fence_cleared(f) {
                return;
            }
            self.inner.kick.notify_one();
            // The fence timeout clears it at the latest; the bound here
            // only guards against a lost wake-up.
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }
}

/// Waits for `notified`, at most until `until`.
async fn wait(notified: impl Future<Output = ()>, until: Option<Instant>) {
    match until {
        Some(t) => {
            let _ = tokio::time::timeout_at(tokio::time::Instant::from_std(t), notified).await;
        }
        None => notified.await,
    }
}

fn cdb_error(e: mpio_dsm::CdbError) -> IoError {
    IoError { kind: IoErrorKind::Device, errno: 22, message: e.to_string() }
}

/// Maps a command's outcome to what the core needs to decide.
fn classify_result(r: &Result<ScsiResult, TaskError>) -> Completion {
    match r {
        Ok(r) => {
            let sense = r.sense.as_deref().and_then(|s| Sense::parse(s).ok());
            match classify(ScsiStatus(r.status), sense.as_ref()) {
                ErrorClass::Success => Completion::Success,
                ErrorClass::PathFailure(f) => Completion::PathFailure {
                    cause: FailureCause::new("path_error", format!("{}: {}", f.as_str(), describe(r, &sense))),
                    may_still_execute: false,
                },
                ErrorClass::Retry(k) => Completion::Retry { immediate: k.immediate(), why: describe(r, &sense) },
                ErrorClass::Fatal(k) => Completion::Fatal { errno: k.errno(), why: describe(r, &sense) },
            }
        }
        Err(TaskError::ConnectionLost { reason, cleared }) => {
            Completion::PathFailure { cause: failure_cause(reason), may_still_execute: !cleared }
        }
        // The abort was confirmed: the target will not run it.
        Err(TaskError::TimedOut(d)) => Completion::PathFailure {
            cause: FailureCause::new("io_timeout", format!("command aborted after {d:?}")),
            may_still_execute: false,
        },
        // Terminated by a task management function (a LUN reset from
        // another nexus, or ours): not run; send it again.
        Err(TaskError::Aborted) => Completion::Retry { immediate: true, why: "command aborted by a reset".into() },
        Err(TaskError::TargetFailure(code)) => Completion::PathFailure {
            cause: FailureCause::new("target_failure", format!("iSCSI response {code:#04x}")),
            may_still_execute: false,
        },
        Err(TaskError::Rejected(reason)) => Completion::PathFailure {
            cause: FailureCause::new("rejected", reason.to_string()),
            may_still_execute: false,
        },
        Err(TaskError::SessionClosed | TaskError::SessionFailed(_)) => Completion::PathFailure {
            cause: FailureCause::new("connection", "session closed".to_string()),
            may_still_execute: true,
        },
        Err(e) => Completion::Fatal { errno: 5, why: e.to_string() },
    }
}

fn describe(r: &ScsiResult, sense: &Option<Sense>) -> String {
    match sense {
        Some(s) => format!("{}: {s}", ScsiStatus(r.status)),
        None => ScsiStatus(r.status).to_string(),
    }
}

/// The Microsoft iSCSI initiator's event ID for a failed login attempt.
fn login_seed_event(f: &ConnectionFailure) -> Option<u32> {
    match f {
        ConnectionFailure::Connect { .. } => Some(1),
        ConnectionFailure::Login(e) => Some(match e {
            LoginError::Timeout(_) => 43,
            LoginError::Closed { .. } => 59,
            LoginError::AuthDowngrade(_) => 38,
            LoginError::ChapRequired => 40,
            LoginError::NoAuthMethod => 41,
            LoginError::Protocol(_) => 11,
            LoginError::RedirectLoop { .. } => 12,
            _ => 10,
        }),
        _ => None,
    }
}

fn failure_cause(f: &ConnectionFailure) -> FailureCause {
    let kind = match f {
        ConnectionFailure::NopTimeout(_) => "nop_timeout",
        ConnectionFailure::TaskMgmtTimeout(_) => "io_timeout",
        ConnectionFailure::Login(_) => "login",
        ConnectionFailure::Connect { .. } => "connect",
        ConnectionFailure::Protocol(_) => "protocol",
        _ => "connection",
    };
    FailureCause::new(kind, f.to_string())
}

/// The background driver: session events, claims, probes, fences, timers.
async fn drive(weak: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        // Run the core's actions and publish its events.
        let (actions, events, timeout) = {
            let mut core = inner.core.lock().unwrap_or_else(|e| e.into_inner());
            let actions: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
            let events: Vec<DeviceEvent> = std::iter::from_fn(|| core.poll_event()).collect();
            (actions, events, core.poll_timeout())
        };
        for a in actions {
            start_action(&inner, a);
        }
        if !events.is_empty() {
            let now_i = Instant::now();
            let now_s = SystemTime::now();
            for e in events {
                let path = e.path_name.as_deref().unwrap_or("-");
                info!(device = %inner.name, path, event = e.kind.name(), reason = %e.reason, "device event");
                let at = now_s.checked_sub(now_i.saturating_duration_since(e.at)).unwrap_or(now_s);
                let _ = inner.events.send((at, e));
            }
            inner.changed.notify_waiters();
        }
        let sleep = async {
            match timeout {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        let kick = inner.kick.notified();
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = sleep => None,
            _ = kick => None,
        };
        let now = Instant::now();
        match msg {
            Some(m) => handle_msg(&inner, now, m),
            None => {
                inner.core.lock().unwrap_or_else(|e| e.into_inner()).handle_timeout(now);
            }
        }
        // Commands waiting on fences or paths re-check after every change.
        inner.changed.notify_waiters();
        drop(inner);
    }
}

fn handle_msg(inner: &Arc<Inner>, now: Instant, msg: Msg) {
    let core = || inner.core();
    match msg {
        Msg::Session(id, SessionEvent::SessionUp { reinstated, .. }) => {
            // Claim before use: identity (and the bring-up hook) first.
            let inner = inner.clone();
            tokio::spawn(async move {
                let r = claim(&inner, id).await;
                let _ = inner.tx.send(Msg::Claimed(id, reinstated, r));
            });
        }
        Msg::Session(id, SessionEvent::SessionDown { reason, permanent }) => {
            core().session_down(now, id, failure_cause(&reason), permanent);
        }
        Msg::Session(
            id,
            SessionEvent::ConnectionDown {
                reason: reason @ (ConnectionFailure::Connect { .. } | ConnectionFailure::Login(_)),
                ..
            },
        ) => {
            core().login_failed(now, id, failure_cause(&reason), login_seed_event(&reason));
        }
        Msg::Session(..) => {}
        Msg::Claimed(id, reinstated, Ok(group)) => {
            let mut c = core();
            c.set_group(id, group);
            c.session_up(now, id, reinstated);
        }
        Msg::Claimed(id, _, Err(reason)) => {
            warn!(device = %inner.name, path = %inner.path_name(id), %reason, "path refused");
            core().refuse(now, id, reason.to_string());
            if let Some(p) = inner.path_io(id) {
                // A path to another LU must not keep a nexus open.
                let s = p.session.clone();
                tokio::spawn(async move {
                    let _ = s.logout().await;
                });
            }
        }
        Msg::Probed(id, r) => core().probe_done(now, id, r),
        Msg::Fenced(id, epoch, r) => core().fence_done(now, id, epoch, r),
    }
}

fn start_action(inner: &Arc<Inner>, action: Action) {
    let tx = inner.tx.clone();
    match action {
        Action::Probe(id) => {
            let Some(p) = inner.path_io(id) else { return };
            let lu = p.lu.clone();
            tokio::spawn(async move {
                let r = lu.test_unit_ready().await.map_err(|e| e.to_string());
                let _ = tx.send(Msg::Probed(id, r));
            });
        }
        Action::Fence { path, epoch, via } => {
            let Some(p) = inner.path_io(path) else { return };
            let portals: Vec<_> =
                via.iter().filter_map(|v| inner.path_io(*v)).map(|v| v.session_config.connections.clone()).collect();
            let cfg = p.session_config.clone();
            let name = inner.path_name(path);
            tokio::spawn(async move {
                let r = fence(cfg, portals).await;
                if let Err(e) = &r {
                    warn!(path = %name, error = %e, "fence through a healthy portal failed");
                }
                let _ = tx.send(Msg::Fenced(path, epoch, r));
            });
        }
    }
}

/// Reinstates the failed path's session (its ISID) through a healthy
/// portal of the same portal group: the target then terminates every
/// command of the old session (RFC 7143 section 6.3.5). Logs out at once.
async fn fence(mut cfg: SessionConfig, portals: Vec<Vec<ConnectionSpec>>) -> Result<(), String> {
    cfg.reconnect = false;
    let timeout = cfg.timeouts.login + cfg.timeouts.connect;
    let mut last = String::from("no portal");
    for conns in portals {
        cfg.connections = conns;
        match SessionHandle::connect(cfg.clone(), timeout).await {
            Ok(s) => {
                let _ = s.logout().await;
                return Ok(());
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lu() -> LuInfo {
        LuInfo {
            identity: "naa.6000000000000001".into(),
            serial: None,
            block_len: 512,
            blocks: 1 << 20,
            physical_block_len: 4096,
            max_transfer: None,
            unmap: true,
            max_unmap_blocks: Some(100),
            write_same: true,
            max_write_same_blocks: None,
            write_protected: false,
            write_cache: WriteCache::ASSUMED,
        }
    }

    /// (device offset, length) of each piece.
    fn pieces(lu: &LuInfo, offset: u64, len: u64, most: u64) -> Result<Vec<(u64, u64)>, IoError> {
        Ok(Device::pieces(lu, offset, len, most)?.map(|p| (p.at, p.len)).collect())
    }

    #[test]
    fn ranges_split_into_whole_block_pieces_within_the_limit() {
        let lu = lu();
        let p = pieces(&lu, 4096, 250 * 512, 100 * 512).unwrap();
        assert_eq!(p, vec![(4096, 51200), (55296, 51200), (106496, 25600)]);
        // A limit below one block still moves one block per piece; one
        // that is not a whole number of blocks is rounded down.
        assert_eq!(pieces(&lu, 0, 1024, 100).unwrap(), vec![(0, 512), (512, 512)]);
        assert_eq!(pieces(&lu, 0, 1536, 1000).unwrap(), vec![(0, 512), (512, 512), (1024, 512)]);
        assert!(pieces(&lu, 0, 0, 512).unwrap().is_empty());
        // Bounds are checked for the whole range, before any piece.
        assert_eq!(pieces(&lu, lu.capacity() - 512, 1024, 512).unwrap_err().errno, 22);
        assert_eq!(pieces(&lu, 1, 512, 512).unwrap_err().errno, 22);
    }
}
