//! A device's ublk frontend: `/dev/ublkbN`, added once the device knows
//! its LU (the first claimed path gives the geometry; the daemon starts
//! without waiting for the SAN) and removed when the device stops.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use mpio_mpath::Device;
use mpio_ublk::{UblkConfig, UblkExport};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::warn;

use super::Daemon;
use crate::config::UblkQueues;

/// Where the block device is.
enum State {
    /// The device has no LU yet.
    Waiting,
    Up(UblkExport),
    /// The driver or the geometry refused it; the reason.
    Failed(String),
    Stopped,
}

/// The ublk frontend of one device.
pub(crate) struct UblkFrontend {
    state: Arc<Mutex<State>>,
    /// Changed once the state leaves Waiting.
    settled: watch::Receiver<()>,
    cancel: Arc<Notify>,
    task: JoinHandle<()>,
}

impl UblkFrontend {
    /// Adds `/dev/ublkbN` for `device` as soon as it knows its LU, with
    /// the configured `queues`.
    pub(crate) fn start(daemon: Weak<Daemon>, device: Device, queues: UblkQueues) -> UblkFrontend {
        let state = Arc::new(Mutex::new(State::Waiting));
        let cancel = Arc::new(Notify::new());
        let (settle, settled) = watch::channel(());
        let task = tokio::spawn(create(daemon, device, queues, state.clone(), settle, cancel.clone()));
        UblkFrontend { state, settled, cancel, task }
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
                    State::Waiting => {}
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

    /// Why there is no block device, when there is none.
    pub(crate) fn problem(&self) -> Option<String> {
        match &*lock(&self.state) {
            State::Waiting => Some("ublk: waiting for the LU (no path claimed yet)".into()),
            State::Failed(e) => Some(format!("ublk: {e}")),
            State::Up(_) | State::Stopped => None,
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

/// Waits for the device's geometry, then adds the block device.
async fn create(
    daemon: Weak<Daemon>,
    device: Device,
    queues: UblkQueues,
    state: Arc<Mutex<State>>,
    settle: watch::Sender<()>,
    cancel: Arc<Notify>,
) {
    tokio::select! {
        _ = cancel.notified() => return,
        known = known_geometry(&device) => if !known { return },
    }
    let name = device.name().to_owned();
    let result = UblkExport::start(Arc::new(device), queues.apply(UblkConfig::new(name.clone()))).await;
    let (kind, reason) = match &result {
        Ok(e) => ("ublk_created", e.path().display().to_string()),
        Err(e) => ("ublk_failed", e.to_string()),
    };
    if let Err(e) = &result {
        warn!(device = name, "ublk: {e}");
    }
    if let Some(d) = daemon.upgrade() {
        d.event(&name, kind, &reason);
    }
    *lock(&state) = match result {
        Ok(e) => State::Up(e),
        Err(e) => State::Failed(e.to_string()),
    };
    settle.send_replace(());
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
