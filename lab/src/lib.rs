//! A local SAN on this machine: private tgtd instances with their own
//! control port, portals on `127.0.0.1..n`, targets and LUs, CHAP, and
//! runtime levers (delete a connection, target offline, remove a portal).
//!
//! Two users, deliberately: `mpio demo` builds its SAN with [`tgtd::Tgtd`],
//! and the test bed (`mpio-testbed`: network faults, the LIO VMs, libiscsi
//! as a reference initiator) builds on the same fixtures for the
//! end-to-end tests. Nothing here fakes a peer: every target is a real
//! tgtd process.
//!
//! * [`tgtd::Tgtd`]: one tgtd and its configuration; its module docs list
//!   what tgtd does in each case, as verified on the dev machine.
//! * [`wait::wait_until`] / [`wait::wait_for`]: poll external state with a
//!   deadline; never sleep a fixed time.
//! * [`cmd`]: run tools with a deadline (SIGKILL), [`cmd::ChildGuard`] for
//!   background processes.
//! * [`slot`]: host-wide numbered resources (control ports, tc classes)
//!   handed out through lock files that the kernel releases when a process
//!   dies, so fixtures of parallel tests never collide and a killed test's
//!   leftovers are cleaned up by the next one.

#![warn(missing_docs)]

pub mod cmd;
pub mod error;
pub mod slot;
pub mod tgtd;
pub mod wait;

pub use error::{Error, Result};
