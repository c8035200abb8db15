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
//! driver checks; `UBLK_F_PER_IO_DAEMON` relaxes it only from 6.16);
//! the multipath device (iSCSI sessions,
//! sockets, timers) runs on tokio; and handing work to a thread on the
//! other core costs 35-40 µs on the machines this runs on, so every
//! hand-off is paid in latency.
//!
//! The choice: lanes. A device served as `/dev/ublkbN` runs on a
//! [`Lane`], a current-thread tokio runtime of its own (its sessions,
//! driver and timers), and the device's first queue thread drives that
//! runtime for as long as it serves: it polls the queue's ring and the
//! iSCSI sockets in one `epoll`, and a request goes from the kernel to the
//! target and back without leaving the thread. Each tag is a future (no
//! task, no allocation per request) that fetches a request, awaits the
//! device's future in place, and commits the result with the next fetch;
//! a pump future submits what the tags queued (one `io_uring_enter` per
//! batch) and hands the ring's completions to their tags. Further queues
//! poll the device from a current-thread runtime of their own, so their
//! requests cross to the lane and back as an NBD connection's do: for a
//! device whose paths are TCP sessions on one lane, one queue is the
//! default (more queues add threads, not parallelism at the target).
//!
//! Before it: every queue thread ran libublk's executor and handed each
//! request to the daemon's multi-thread runtime, with the result brought
//! back through a oneshot and an eventfd polled in the ring. That is two
//! cross-thread wake-ups per request (35-40 µs each on the machines this
//! runs on), and measured in the VM (`bench/ublk.sh`) the NBD path was
//! faster: 0.62× at 4 KiB QD1, 0.46× at QD32. With lanes, in one run
//! (rd_mcp null LU, ublk/NBD): 1.05× at 4 KiB QD1, 1.26× at QD32, 1.19×
//! and 1.45× at 1 MiB read and write with one queue; two queues gave
//! 0.99×, 1.21×, 1.02×, 1.18×, hence one by default.
//!
//! Data is copied, in copy mode (the driver's default): for a write the
//! kernel fills the tag's buffer and the tag copies it into the
//! [`Bytes`](bytes::Bytes) the device sends; for a read the device's
//! buffers are copied into the tag's buffer before the commit.
//! `UBLK_F_USER_COPY` (6.5) would let the device move the data itself
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
//! # Capacity changes
//!
//! When the LU is resized on the target, [`UblkExport::resize`] gives
//! `/dev/ublkbN` its new size with `UBLK_U_CMD_UPDATE_SIZE`, which the
//! driver has from Linux 6.16 (`UBLK_F_UPDATE_SIZE` among its features).
//! 6.12's driver has no way to resize a started device: the device keeps
//! its size and the refusal says how to get the new one (make the device
//! again). A device reattached after its LU grew keeps its size too.
//!
//! # Not yet
//!
//! User copy. A device that
//! the driver refuses to start (or to end the recovery of) after its
//! queues were set up is left to the kernel (libublk then cannot stop its
//! queue threads); a reattach whose queues cannot be set up waits in
//! `END_USER_RECOVERY` (seen when the recovery was not started first).
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod existing;
mod export;
mod lane;
pub mod params;
mod queue;
pub mod request;

pub use existing::Existing;
pub use export::{CONTROL, ResizeError, StartError, UblkConfig, UblkExport};
pub use lane::Lane;
pub use mpio_mpath::{BlockDevice, Geometry};
