//! The multipath device: one logical unit reached over many paths.
//!
//! Owns the path table and path states, dispatches requests through a
//! policy, re-drives the requests of a failed path, holds I/O while all
//! paths are down, runs verification timers and emits events.
//!
//! Built in the multipath-device issue; this crate only fixes the layout.
#![warn(missing_docs)]
