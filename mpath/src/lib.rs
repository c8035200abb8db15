//! The multipath device: one logical unit reached over many paths.
//!
//! Owns the path table and path states, dispatches requests through a
//! policy, re-drives the requests of a failed path, holds I/O while all
//! paths are down, runs verification timers and emits events. The device
//! itself arrives with the multipath-device issue; [`scsi`] is the
//! per-path SCSI access that path bring-up and the diagnostics CLI share.
#![warn(missing_docs)]

pub mod scsi;
