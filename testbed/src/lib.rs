//! A local SAN for mpio's demo and end-to-end tests: real targets, real
//! faults.
//!
//! The end-to-end tests in `tests/` and `mpio demo` use these to talk to
//! real peers instead of mocks (DESIGN.md, "Real peers for testing"):
//!
//! * [`tgtd::Tgtd`]: a private tgtd with its own control port, portals on
//!   `127.0.0.1..n`, targets and LUs (file-backed or null), CHAP, and
//!   runtime fault levers (delete a connection, target offline, LU not
//!   ready, remove a portal). Its module docs list what tgtd does in each
//!   case, as verified on the dev machine.
//! * [`netfault::Blackhole`] and [`netfault::RateLimit`]: iptables and tc
//!   guards for one `address:port`, undone on Drop.
//! * [`wait::wait_until`] / [`wait::wait_for`]: poll external state with a
//!   deadline; never sleep a fixed time.
//! * [`cmd`]: run tools with a deadline (SIGKILL), [`cmd::ChildGuard`] for
//!   background processes; [`libiscsi`] wraps `iscsi-inq`, `iscsi-ls`,
//!   `iscsi-perf` as a reference initiator.
//!
//! ```no_run
//! use std::time::Duration;
//! use mpio_testbed::{libiscsi, netfault::Blackhole, require_root};
//! use mpio_testbed::tgtd::{LunSpec, TargetSpec, Tgtd};
//!
//! require_root();
//! let tgtd = Tgtd::builder()
//!     .portals(2)
//!     .target(TargetSpec::new("disk1").lun(LunSpec::file(16 << 20)))
//!     .start()?;
//! {
//!     let _cut = Blackhole::new(tgtd.portal(1))?; // path 2 goes silent
//!     // ... exercise failover to portal 0 ...
//! } // rules removed here, even if the test panicked
//! assert!(libiscsi::inq(&tgtd.url(1, 1, 1), Duration::from_secs(10))?.success());
//! # Ok::<(), mpio_testbed::Error>(())
//! ```
//!
//! # Running
//!
//! The tests need root (tgtd, iptables, tc) and the packages of
//! `scripts/install-test-deps.sh`: `cargo test -p mpio-testbed` as root, or
//! `sudo -E cargo test -p mpio-testbed`.
//!
//! # Parallelism
//!
//! Tests run in parallel, as threads of one binary and as several binaries.
//! Every fixture owns its resources: a tgtd control port and TCP port, a
//! temp dir, iptables rules and a tc class that match only its own
//! `address:port`. Host-wide numbers are handed out through lock files in
//! `/tmp/mpio-testbed` ([`slot`]) that the kernel releases when a process
//! dies, which also lets the next fixture clean up after a killed test.

#![warn(missing_docs)]

pub mod cmd;
pub mod error;
pub mod libiscsi;
pub mod lio;
pub mod netfault;
pub mod slot;
pub mod tgtd;
pub mod vm;
pub mod wait;

pub use error::{Error, Result};

/// Panics with instructions unless the process runs as root (effective uid
/// 0). Call it first in every test that starts a fixture.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "this test needs root: it starts tgtd and changes iptables/tc rules. \
             Run `sudo -E cargo test -p mpio-testbed` (after scripts/install-test-deps.sh)."
        );
    }
}
