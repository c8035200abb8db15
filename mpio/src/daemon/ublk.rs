//! A device's ublk frontend: `/dev/ublkbN`, added once the device knows
//! its LU (the first claimed path gives the geometry; the daemon starts
//! without waiting for the SAN) and removed when the device stops.
//!
//! A device the previous daemon left (killed, crashed: the kernel holds
//! its I/O) is taken over instead of adding another: same name, same
//! daemon (control socket), its server gone. Events: `ublk_recovering`
//! when it is found, `ublk_reattached` once it serves again,
//! `ublk_created` for a new device, `ublk_failed` with the reason.
//!
//! When the LU is resized on the target (the device's `capacity_changed`
//! event: `mpio device rescan`, UNIT ATTENTION 2A/09, a path's claim), the
//! block device is given the new size where the kernel can
//! (`ublk_resized`); where it cannot (Linux before 6.16) it keeps its size,
//! `ublk_resize_failed` says why and what to do, and `mpio device show`
//! keeps saying so until the sizes agree again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use mpio_mpath::Device;
use mpio_mpath::event::EventKind;
use mpio_ublk::{Existing, Lane, UblkConfig, UblkExport};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::Daemon;
use crate::config::UblkQueues;
use crate::control::proto::UblkDeviceView;

/// Where the block device is.
enum State {
    /// The device has no LU yet.
    Waiting,
    /// The device has no LU yet; then it takes over this device, left by
    /// the previous daemon.
    Reattaching(u32),
    Up(UblkExport),
    /// The driver or the geometry refused it; the reason.
    Failed(String),
    Stopped,
}

/// What follows the LU's size: the frontend's state, why the block
/// device's size is not the LU's (when it is not), and where events go.
struct Sizing {
    name: String,
    daemon: Weak<Daemon>,
    state: Arc<Mutex<State>>,
    problem: Mutex<Option<String>>,
}

impl Sizing {
    fn event(&self, kind: &str, reason: &str) {
        if let Some(d) = self.daemon.upgrade() {
            d.event(&self.name, kind, reason);
        }
    }

    /// Gives the block device the LU's size when they differ. Returns what
    /// was done (`None`: no block device, or nothing to do); a refusal is
    /// raised as an event once per reason and kept for `device show`.
    async fn follow(&self, device: &Device) -> Option<Result<String, String>> {
        let want = device.geometry().ok()?.capacity;
        let (have, path, resize) = match &*lock(&self.state) {
            State::Up(e) => (e.capacity(), e.path().display().to_string(), e.resize(want)),
            _ => return None,
        };
        if have == want {
            *lock_problem(&self.problem) = None;
            return None;
        }
        match resize.await {
            Ok(()) => {
                let done = format!("{path} resized from {have} to {want} bytes");
                info!(device = self.name, "ublk: {done}");
                *lock_problem(&self.problem) = None;
                self.event("ublk_resized", &done);
                Some(Ok(done))
            }
            Err(e) => {
                let why = e.to_string();
                let new = lock_problem(&self.problem).replace(why.clone()).as_ref() != Some(&why);
                if new {
                    warn!(device = self.name, "ublk: {why}");
                    self.event("ublk_resize_failed", &why);
                }
                Some(Err(why))
            }
        }
    }
}

fn lock_problem(p: &Mutex<Option<String>>) -> MutexGuard<'_, Option<String>> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// The ublk frontend of one device.
pub(crate) struct UblkFrontend {
    state: Arc<Mutex<State>>,
    sizing: Arc<Sizing>,
    /// Changed once the state leaves Waiting.
    settled: watch::Receiver<()>,
    cancel: Arc<Notify>,
    task: JoinHandle<()>,
}

impl UblkFrontend {
    /// Adds `/dev/ublkbN` for `device` (or takes over the one the
    /// previous daemon left) as soon as it knows its LU, with the
    /// configured `queues`, its first queue driving the `lane` the
    /// device's sessions run on; `owner` names the daemon (its control socket)
    /// in the device's record.
    pub(crate) fn start(
        daemon: Weak<Daemon>,
        device: Device,
        lane: Option<Lane>,
        queues: UblkQueues,
        owner: String,
    ) -> UblkFrontend {
        let state = Arc::new(Mutex::new(State::Waiting));
        let cancel = Arc::new(Notify::new());
        let (settle, settled) = watch::channel(());
        let config = UblkConfig { owner, ..queues.apply(UblkConfig::new(device.name())) };
        let sizing =
            Arc::new(Sizing { name: config.name.clone(), daemon, state: state.clone(), problem: Mutex::new(None) });
        let task = tokio::spawn(serve(sizing.clone(), device, lane, config, settle, cancel.clone()));
        UblkFrontend { state, sizing, settled, cancel, task }
    }

    /// Gives the block device the LU's size now (after `mpio device
    /// rescan`), as it does by itself on every capacity change; what was
    /// done, `None` when there was nothing to do.
    pub(crate) fn follow_capacity(
        &self,
        device: Device,
    ) -> impl Future<Output = Option<Result<String, String>>> + Send + 'static {
        let sizing = self.sizing.clone();
        async move { sizing.follow(&device).await }
    }

    /// The size the block device shows, once it is up.
    pub(crate) fn capacity(&self) -> Option<u64> {
        match &*lock(&self.state) {
            State::Up(e) => Some(e.capacity()),
            _ => None,
        }
    }

    /// Resolves once the block device is there, or with why it will not
    /// be.
    pub(crate) fn ready(&self) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let state = self.state.clone();
        let mut settled = self.settled.clone();
        async move {
            loop {
                // Marked seen before the look, so a change after it wakes us.
                settled.borrow_and_update();
                match &*lock(&state) {
                    State::Up(_) => return Ok(()),
                    State::Failed(e) => return Err(format!("ublk: {e}")),
                    State::Stopped => return Err("the device is stopping".into()),
                    State::Waiting | State::Reattaching(_) => {}
                }
                if settled.changed().await.is_err() {
                    return Err("the device is stopping".into());
                }
            }
        }
    }

    /// The block device's path once it is up.
    pub(crate) fn path(&self) -> Option<String> {
        match &*lock(&self.state) {
            State::Up(e) => Some(e.path().display().to_string()),
            _ => None,
        }
    }

    /// The driver's number of the block device it serves or is taking
    /// over.
    pub(crate) fn claimed_id(&self) -> Option<u32> {
        match &*lock(&self.state) {
            State::Up(e) => Some(e.id()),
            State::Reattaching(id) => Some(*id),
            _ => None,
        }
    }

    /// Why there is no block device, when there is none.
    pub(crate) fn problem(&self) -> Option<String> {
        match &*lock(&self.state) {
            State::Waiting => Some("ublk: waiting for the LU (no path claimed yet)".into()),
            State::Reattaching(id) => {
                Some(format!("ublk: /dev/ublkb{id}, left by the previous daemon, is reattached once the LU is known"))
            }
            State::Failed(e) => Some(format!("ublk: {e}")),
            State::Up(_) => lock_problem(&self.sizing.problem).as_ref().map(|p| format!("ublk: {p}")),
            State::Stopped => None,
        }
    }

    /// Removes the block device (requests in flight finish first).
    pub(crate) async fn stop(self) {
        // A permit: the creating task sees it even if it is not waiting
        // yet. Once it is starting the device it finishes that first.
        self.cancel.notify_one();
        let _ = self.task.await;
        let state = std::mem::replace(&mut *lock(&self.state), State::Stopped);
        if let State::Up(export) = state {
            export.stop().await;
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes the block device ([`create`]), then gives it the LU's size on
/// every capacity change until the frontend stops.
async fn serve(
    sizing: Arc<Sizing>,
    device: Device,
    lane: Option<Lane>,
    config: UblkConfig,
    settle: watch::Sender<()>,
    cancel: Arc<Notify>,
) {
    // Subscribed before the device is made: a change meanwhile is seen.
    let mut events = device.events();
    if !create(&sizing, device.clone(), lane, config, settle, &cancel).await {
        return;
    }
    loop {
        // The LU may have been resized while the device was made, or
        // before the previous daemon's device was taken over.
        sizing.follow(&device).await;
        loop {
            tokio::select! {
                _ = cancel.notified() => return,
                event = events.recv() => match event {
                    Ok((_, e)) if matches!(e.kind, EventKind::CapacityChanged { .. }) => break,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }
}

/// Finds the device the previous daemon left, waits for the LU's
/// geometry, then takes that device over or adds a new one. False when
/// it was cancelled or failed.
async fn create(
    sizing: &Sizing,
    device: Device,
    lane: Option<Lane>,
    config: UblkConfig,
    settle: watch::Sender<()>,
    cancel: &Notify,
) -> bool {
    let (name, state) = (config.name.clone(), &sizing.state);
    let event = |kind: &str, reason: &str| sizing.event(kind, reason);
    let left = {
        let (name, owner) = (config.name.clone(), config.owner.clone());
        tokio::task::spawn_blocking(move || left_behind(&name, &owner)).await.ok().flatten()
    };
    if let Some(e) = &left {
        *lock(state) = State::Reattaching(e.id);
        let reason = format!(
            "{} ({}, its server pid {} gone): I/O waits in the kernel; reattached once the LU is known",
            e.path(),
            e.state,
            e.pid
        );
        info!(device = name, "ublk: {reason}");
        event("ublk_recovering", &reason);
    }
    tokio::select! {
        _ = cancel.notified() => return false,
        known = known_geometry(&device) => if !known { return false },
    }
    let device = Arc::new(device);
    let result = match &left {
        Some(e) => UblkExport::reattach(device, config, lane, e).await,
        None => UblkExport::start(device, config, lane).await,
    };
    let (kind, reason) = match (&result, &left) {
        (Ok(e), Some(_)) => ("ublk_reattached", e.path().display().to_string()),
        (Ok(e), None) => ("ublk_created", e.path().display().to_string()),
        (Err(e), _) => ("ublk_failed", e.to_string()),
    };
    if let Err(e) = &result {
        warn!(device = name, "ublk: {e}");
    }
    event(kind, &reason);
    let up = result.is_ok();
    *lock(state) = match result {
        Ok(e) => State::Up(e),
        Err(e) => State::Failed(e.to_string()),
    };
    settle.send_replace(());
    up
}

/// The device that this daemon (`owner`, its control socket) served as
/// `name` before it was killed, if one waits to be taken over (the lowest
/// number if there were several). Others left for the name are logged:
/// only `mpio ublk remove` takes them away.
fn left_behind(name: &str, owner: &str) -> Option<Existing> {
    let mine: Vec<Existing> = mpio_ublk::existing::list()
        .into_iter()
        .filter(|e| e.orphaned() && e.name.as_deref() == Some(name) && e.owner.as_deref() == Some(owner))
        .collect();
    let (take, leave): (Vec<Existing>, Vec<Existing>) = mine.into_iter().partition(Existing::reattachable);
    for e in &leave {
        warn!(
            device = name,
            "ublk: {} ({}, left by pid {}) cannot be taken over; `mpio ublk remove {}` removes it",
            e.path(),
            e.state,
            e.pid,
            e.id
        );
    }
    take.into_iter().next()
}

/// Returns once the device knows its LU (true), or false when the device
/// is gone first.
async fn known_geometry(device: &Device) -> bool {
    // Subscribed before the check: a claim between the two is not missed.
    let mut events = device.events();
    loop {
        if device.geometry().is_ok() {
            return true;
        }
        match events.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return false,
        }
    }
}

/// `mpio ublk list`: every device the driver has; `claims` maps the ones
/// this daemon serves or is taking over to its device's name.
pub(crate) async fn list(claims: BTreeMap<u32, String>) -> Vec<UblkDeviceView> {
    let found = tokio::task::spawn_blocking(mpio_ublk::existing::list).await.unwrap_or_default();
    found.into_iter().map(|e| view(e, &claims)).collect()
}

/// `mpio ublk remove ID`: removes a device nobody serves; the answer is
/// what it was.
pub(crate) async fn remove(claims: BTreeMap<u32, String>, id: u32) -> Result<UblkDeviceView, String> {
    if let Some(name) = claims.get(&id) {
        return Err(format!(
            "/dev/ublkb{id} is device {name}'s block device, served by this daemon: remove {name} from the \
             configuration and reload, or stop the daemon (either removes it)"
        ));
    }
    let found = tokio::task::spawn_blocking(move || mpio_ublk::existing::find(id))
        .await
        .map_err(|e| format!("reading /dev/ublkb{id}: {e}"))??;
    if found.server_alive {
        return Err(format!(
            "/dev/ublkb{id} is served by process {} ({}): stop that process, which removes it or leaves it to remove",
            found.pid,
            found.name.as_deref().map_or_else(|| "not an mpio device".to_owned(), |n| format!("mpio device {n}"))
        ));
    }
    tokio::task::spawn_blocking(move || mpio_ublk::existing::remove(id))
        .await
        .map_err(|e| format!("removing /dev/ublkb{id}: {e}"))?
        .map_err(|e| format!("removing /dev/ublkb{id}: {e}"))?;
    info!(id, name = found.name, "ublk: removed /dev/ublkb{id}, which nobody served");
    Ok(view(found, &claims))
}

fn view(e: Existing, claims: &BTreeMap<u32, String>) -> UblkDeviceView {
    UblkDeviceView {
        id: e.id,
        block_device: e.path(),
        claimed_by: claims.get(&e.id).cloned(),
        name: e.name,
        daemon: e.owner,
        state: e.state.to_string(),
        pid: e.pid,
        server_alive: e.server_alive,
        recoverable: e.recoverable,
        capacity_bytes: e.capacity,
        logical_block: e.logical_block,
    }
}
