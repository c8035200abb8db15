//! The LU's capacity after it changed on the target. A LU grown (or
//! shrunk) on the target keeps its identity and serial, so the device
//! follows it rather than refusing its paths: the LU record
//! ([`super::LuInfo::blocks`]) takes the newest READ CAPACITY, requests are
//! checked against it, and a [`EventKind::CapacityChanged`] event tells the
//! frontends (an NBD client that connects from then on sees the new size;
//! ublk resizes `/dev/ublkbN` where the kernel can).
//!
//! The capacity is read again
//! - on request ([`Device::rescan`], `mpio device rescan`): what an
//!   administrator runs after resizing the LU, as with `iscsiadm -R` and
//!   `multipathd resize map`;
//! - after a command ended in UNIT ATTENTION 2A/09 (CAPACITY DATA HAS
//!   CHANGED), in the background ([`Device::capacity_may_have_changed`]);
//! - at every claim of a path (its login or reconnection).
//!
//! A changed logical block size is not followed: every offset on the
//! device would mean another place on the LU. The rescan refuses it and
//! names the fix.
//!
//! [`EventKind::CapacityChanged`]: crate::event::EventKind::CapacityChanged

use std::sync::atomic::Ordering;
use std::time::Instant;

use mpio_policies::PathId;
use tracing::{info, warn};

use super::{Device, DeviceError, Inner};

/// What a rescan read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rescan {
    /// The path it was read through.
    pub path: String,
    /// Bytes before.
    pub old: u64,
    /// Bytes now (the same when nothing changed).
    pub new: u64,
}

impl Device {
    /// Reads the LU's capacity (READ CAPACITY) through a usable path and,
    /// when it changed, makes it the device's (with a
    /// [`CapacityChanged`](crate::event::EventKind::CapacityChanged) event).
    /// Fails when no path is usable, when the command fails, and when the
    /// LU's logical block size changed.
    pub async fn rescan(&self) -> Result<Rescan, DeviceError> {
        let inner = &self.inner;
        let device = inner.name.clone();
        let _one = inner.rescanning.lock().await;
        let usable = {
            let core = inner.core();
            core.snapshot().paths.iter().find(|p| p.state.is_ready()).and_then(|p| core.path_id(&p.name))
        };
        let Some((id, io)) = usable.and_then(|id| Some((id, inner.path_io(id)?))) else {
            return Err(DeviceError::Rescan {
                device,
                reason: "no path carries I/O; the capacity is read again when a path is claimed".into(),
            });
        };
        let path = io.config.name.clone();
        let read = io
            .lu
            .capacity()
            .await
            .map_err(|e| DeviceError::Rescan { device: device.clone(), reason: format!("{path}: {e}") })?;
        let (block, blocks) = (read.block_len, read.blocks().unwrap_or(0));
        let old = {
            let mut info = inner.info.lock().unwrap_or_else(|e| e.into_inner());
            let Some(lu) = info.as_mut() else {
                return Err(DeviceError::Rescan { device, reason: "no path was claimed yet".into() });
            };
            if lu.block_len != block {
                return Err(DeviceError::Rescan {
                    device,
                    reason: format!(
                        "{path}: the logical block changed from {} to {block} bytes, which the device cannot follow \
                         (every offset would mean another place on the LU): remove the device and add it again",
                        lu.block_len
                    ),
                });
            }
            let old = lu.capacity();
            lu.blocks = blocks;
            old
        };
        let new = inner.capacity_read(id, old);
        Ok(Rescan { path, old, new })
    }

    /// A command ended in UNIT ATTENTION 2A/09: reads the capacity again
    /// in the background (one rescan at a time; the attention comes once
    /// per nexus, so several paths may report the same change).
    pub(crate) fn capacity_may_have_changed(&self) {
        if self.inner.rescan_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let device = self.clone();
        self.inner.home.spawn(async move {
            let r = device.rescan().await;
            device.inner.rescan_pending.store(false, Ordering::Release);
            match r {
                Ok(r) if r.old == r.new => {
                    info!(device = %device.name(), "CAPACITY DATA HAS CHANGED, but the capacity is still {} bytes", r.new);
                }
                Ok(_) => {}
                Err(e) => warn!(device = %device.name(), "CAPACITY DATA HAS CHANGED, and reading it failed: {e}"),
            }
        });
    }
}

impl Inner {
    /// The LU record was updated by a reading through `path`, from `old`
    /// bytes: raises the event when the size changed. Returns the size now.
    pub(crate) fn capacity_read(&self, path: PathId, old: u64) -> u64 {
        let new = self.info.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(old, |lu| lu.capacity());
        if new != old {
            self.core().capacity_changed(Instant::now(), path, old, new);
            // The driver publishes the core's events.
            self.kick.notify_one();
        }
        new
    }
}
