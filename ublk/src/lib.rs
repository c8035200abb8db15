//! ublk frontend: serves a [`BlockDevice`] (a multipath device) as the
//! kernel block device `/dev/ublkbN`, through the Linux ublk driver
//! (`ublk_drv`, Linux 6.0 and later) and the `libublk` crate.
//!
//! - [`UblkExport`]: adds the device, serves it, and removes it on
//!   [`UblkExport::stop`]; a machine without the driver gets
//!   [`StartError::NoDriver`], which names the fix. Devices are made with
//!   user recovery: when the daemon dies (`kill -9`, a crash) the kernel
//!   keeps the device and holds its I/O, and the next daemon takes it over
//!   with [`UblkExport::reattach`] (same `/dev/ublkbN`, nothing mounted on
//!   it notices more than a pause).
//! - [`existing`]: the devices the driver has, by number, with the mpio
//!   device each serves (its name), state and server: what a restarted
//!   daemon reattaches, and what an operator lists and removes.
//! - [`params`]: the device's parameters from the [`Geometry`]:
//!   capacity, logical and physical block, largest transfer, discard and
//!   write-zeroes limits, volatile write cache + FUA, read-only,
//!   rotational.
//! - [`request`]: what an I/O descriptor asks for, and the `-errno` each
//!   error of the block contract completes with (the block status Linux
//!   itself uses for the condition).
//!
//! # The request path, and why
//!
//! The constraints: libublk serves each hardware queue on a thread of its
//! own, which alone may issue that queue's `io_uring` commands (the
//! driver checks; `UBLK_F_PER_IO_DAEMON` relaxes it only from 6.16) and
//! which sleeps in `io_uring_enter`; the multipath device (iSCSI sessions,
//! sockets, timers) runs on tokio; and handing work to a thread on the
//! other core costs 35-40 µs on the machines this runs on, so every
//! hand-off is paid in latency.
//!
//! The choice, correct first: each queue thread runs libublk's executor
//! with one task per tag. A tag's task reads its descriptor, spawns the
//! request on the tokio runtime (the [`BlockDevice`] future, `Send` and
//! `'static` with the device cloned in) and awaits its result on a tokio
//! oneshot, which needs no runtime on the awaiting side; then it commits
//! the result and fetches the next request in one command. The oneshot's
//! waker only schedules the task: the thread is asleep in the kernel, so
//! the tokio side also writes an eventfd that the queue's own ring polls
//! (`kick`); its completion wakes the thread, which then runs every
//! task that was woken. The alternative of a channel of completions
//! drained by the queue thread behind the same eventfd would save the
//! oneshot and a task wake per request but duplicate, by hand, the
//! per-tag bookkeeping the tasks already give; the cost that matters, the
//! two cross-thread hops per request (queue thread to a tokio worker and
//! back), is the same in both. Removing those hops means running the
//! requests' sessions on the queue threads themselves (per-queue lanes);
//! measure first.
//!
//! Data is copied, in copy mode (the driver's default): for a write the
//! kernel fills the tag's buffer and the task copies it into the
//! [`Bytes`](bytes::Bytes) the device sends; for a read the device's
//! buffers are copied into the tag's buffer before the commit.
//! `UBLK_F_USER_COPY` (6.5) would let the tokio side move the data itself
//! with `pread`/`pwrite` on `/dev/ublkcN`; later.
//!
//! # Daemon restart
//!
//! Every device is added with `UBLK_F_USER_RECOVERY` and
//! `UBLK_F_USER_RECOVERY_REISSUE` (both in the driver since 6.0): when
//! the daemon dies the 6.12 driver quiesces the device (its I/O waits,
//! the requests the daemon had taken are queued again, `/dev/ublkbN` and
//! what is mounted on it stay) instead of removing it. The next daemon
//! finds it in [`existing`] by the record libublk keeps in
//! `/run/ublksrvd/<id>.json` (the device's name and the daemon's control
//! socket), checks that the LU still has its capacity and logical block,
//! and takes it over ([`UblkExport::reattach`]: `START_USER_RECOVERY`,
//! new queues, `END_USER_RECOVERY`). A normal stop still removes the
//! device. Proven in the VM by `mpio/tests/guest/restart.rs`.
//!
//! # Not yet
//!
//! Capacity changes (`UBLK_U_CMD_UPDATE_SIZE`), user copy. A device that
//! the driver refuses to start (or to end the recovery of) after its
//! queues were set up is left to the kernel (libublk then cannot stop its
//! queue threads); a reattach whose queues cannot be set up waits in
//! `END_USER_RECOVERY` (seen when the recovery was not started first).
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod existing;
mod export;
mod kick;
pub mod params;
mod queue;
pub mod request;

pub use existing::Existing;
pub use export::{CONTROL, StartError, UblkConfig, UblkExport};
pub use mpio_mpath::{BlockDevice, Geometry};
