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
//! The same holds across a daemon's restart: what a previous daemon left
//! on a path's ISID (commands in a dead process's socket, on the wire)
//! is that path's predecessor, and writes wait until every path's
//! predecessor is fenced (its first login reinstates the ISID), or the
//! fence timeout passes.
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
//!
//! Its parts: [`config`] (paths, timers, bring-up steps, refusals), [`lu`]
//! (the LU and its geometry), `capacity` (following a LU resized on the
//! target), `io` (requests split into commands and run
//! over the paths), `completion` (a command's outcome classified, and
//! whether a failed nexus may still execute it), `driver` (session events,
//! claims, probes, fences, timers).

mod capacity;
mod completion;
pub mod config;
mod driver;
mod io;
pub mod lu;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use mpio_policies::{PathId, PathRole, PolicyRequest};
use mpio_transport::{SessionConfig, SessionEvent, SessionHandle};
use tokio::sync::{Notify, broadcast, mpsc};
use tracing::warn;

use crate::core::{DeviceCore, DeviceSnapshot, PathSnapshot, PathStatus};
use crate::event::DeviceEvent;
use crate::scsi::LuAccess;
use crate::session_view::SessionView;
use crate::timers::HoldMode;

pub use capacity::Rescan;
pub use config::{BoxFuture, BringUp, DeviceConfig, DeviceError, PathConfig};
use driver::{Msg, drive, watch_session};
pub use lu::LuInfo;

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
    /// The runtime the device started on: its driver and every path's
    /// session run there, also of paths added from another runtime (a
    /// frontend may drive it from its own thread, as ublk's lane does).
    home: tokio::runtime::Handle,
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
    /// Held by a rescan: one reads the capacity at a time.
    rescanning: tokio::sync::Mutex<()>,
    /// A background rescan (after UNIT ATTENTION 2A/09) is under way.
    rescan_pending: AtomicBool,
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
    p.state.is_ready()
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
    /// first usable path. Must be called within a tokio runtime: the
    /// device's driver and sessions run on it for good, also those of paths
    /// added later from elsewhere (a current-thread runtime that a frontend
    /// drives from its own thread keeps a request on that thread).
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
            home: tokio::runtime::Handle::current(),
            template: cfg,
            core: Mutex::new(core),
            paths: RwLock::new(paths),
            info: Mutex::new(None),
            changed: Notify::new(),
            kick: Notify::new(),
            events,
            tx,
            rescanning: tokio::sync::Mutex::new(()),
            rescan_pending: AtomicBool::new(false),
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
            let limit = device.inner.template.timers.login_timeout;
            device.shutdown(limit).await;
            return Err(e);
        }
        Ok(device)
    }

    /// Shuts the device down, within `limit`: requests not yet on a path
    /// (and every later one) fail with ESHUTDOWN, the commands on the
    /// paths complete, then every session logs out. Returns whether all of
    /// it finished in time; what did not is left to the sessions' drop
    /// (their connections close). The device stays usable for status.
    pub async fn shutdown(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        self.core().close();
        self.after_admin();
        let drained = loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.core().in_flight_total() == 0 {
                break true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break false;
            }
        };
        let sessions: Vec<SessionHandle> = {
            let paths = self.inner.paths.read().unwrap_or_else(|e| e.into_inner());
            paths.iter().flatten().map(|p| p.session.clone()).filter(SessionHandle::is_up).collect()
        };
        let mut logouts = tokio::task::JoinSet::new();
        for s in sessions {
            logouts.spawn(async move { s.logout().await.is_ok() });
        }
        let logged_out = tokio::time::timeout_at(deadline, logouts.join_all()).await;
        let done = drained && logged_out.is_ok();
        if !done {
            warn!(device = %self.inner.name, "shutdown: not every command completed or session logged out within {limit:?}");
        }
        done
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

    /// What path `name`'s session looks like now: state, counters,
    /// negotiated parameters. `None` when there is no such path or its
    /// session's driver has stopped. The session answers from its own
    /// task, between two socket reads; a caller that must not wait puts a
    /// timeout around this.
    pub async fn session_view(&self, name: &str) -> Option<SessionView> {
        let id = self.core().path_id(name)?;
        let session = self.inner.path_io(id)?.session.clone();
        session.snapshot().await.ok().map(|s| SessionView::from(&s))
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
    /// ([`PolicySpec::with_role`](crate::PolicySpec::with_role)).
    pub fn set_path_role(&self, name: &str, role: PathRole) -> Result<(), DeviceError> {
        let id = self.path_id(name)?;
        let r = self.core().set_role(Instant::now(), id, role).map_err(DeviceError::Policy);
        self.after_admin();
        r
    }

    /// Adds a path at runtime (a configuration reload). It logs in, is
    /// claimed (identity check, bring-up steps) like any path, then the
    /// policy may use it, in the least preferred role
    /// ([`PolicySpec::with_path`](crate::PolicySpec::with_path)): round robin and the load-driven policies
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
        let _home = self.inner.home.enter();
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
}
