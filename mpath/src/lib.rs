//! The multipath device: one logical unit reached over many paths.
//!
//! - [`block`]: the block contract the frontends (NBD, ublk) serve:
//!   geometry, requests, one errno per error class, read buffers;
//! - [`core`]: the device as a sans-I/O state machine (path table with
//!   stable ids, path states, policy, hold, probation, failback, damping,
//!   write fence);
//! - [`device`]: the async device the frontends and the daemon use: start
//!   without waiting, I/O (read, write, flush, discard, write zeroes), the
//!   path bring-up, paths added and removed at runtime, per-path roles;
//! - [`durability`]: what FUA writes and flushes become on the LU (its
//!   write cache and FUA support, as Linux's sd reads them);
//! - [`failure`]: why a path failed ([`CauseKind`], the metric labels),
//!   what failed probes, fences and bring-up steps report;
//! - [`event`]: what the device reports (path states, failovers, holds,
//!   login failures, paths added and removed), with the seed's event IDs;
//! - [`stats`]: per-path counters and latency histogram for the metrics;
//! - [`timers`]: the one timer model and `mpio timers explain`;
//! - [`scsi`]: SCSI commands on one LU through one session;
//! - [`session_view`]: read-only views of each path's session (state,
//!   counters, negotiated parameters) for status and metrics.
#![warn(missing_docs)]

pub mod block;
mod claim;
pub mod core;
pub mod device;
pub mod durability;
pub mod event;
pub mod failure;
pub mod scsi;
pub mod session_view;
pub mod stats;
pub mod timers;

pub use crate::block::{BlockDevice, Discard, Errno, Geometry, IoError, IoErrorKind, ReadBuf, ZeroFlags};
pub use crate::core::{DeviceCore, DeviceCounters, DeviceSnapshot, Durability, PathPhase, PathSnapshot, PathStatus};
pub use claim::ClaimRefusal;
pub use device::{BoxFuture, BringUp, Device, DeviceConfig, DeviceError, DeviceEvents, LuInfo, PathConfig, Rescan};
pub use durability::{WriteCache, WritePlan};
pub use event::{DeviceEvent, EventKind};
pub use failure::{BringUpRefused, CauseKind, FailureCause, FenceFailed, ProbeFailed};
// The policy types are part of the device's API (config and runtime
// changes), so users of the device need not name the policies crate.
pub use mpio_policies::{PathId, PathRole, PathTable, PolicyError, PolicyKind, PolicyRequest, PolicySpec, SwitchEvery};
pub use session_view::{SessionPhase, SessionView};
pub use stats::{Op, PathStats};
pub use timers::{FailbackMode, HoldMode, TimerConfig};
