//! The test bed of mpio's end-to-end tests: real targets, real faults.
//! Test-only; the product (`mpio demo`) uses only the lab it builds on.
//!
//! The end-to-end tests in `tests/` use these to talk to real peers
//! instead of mocks (docs/DESIGN.md, "Real peers for testing"):
//!
//! * the lab's fixtures, re-exported ([`tgtd`], [`cmd`], [`wait`],
//!   [`slot`]): private tgtd instances and the helpers around them (see
//!   the `mpio-lab` crate).
//! * [`netfault::Blackhole`] and [`netfault::RateLimit`]: iptables and tc
//!   guards for one `address:port`, undone on Drop.
//! * [`proxy::Proxy`]: a TCP proxy that sees iSCSI PDUs, for faults
//!   no target makes by itself (a corrupted digest, a lost Data-In, a
//!   truncated PDU) and for delays, holds and resets of one connection.
//! * [`lio`] and [`vm`]: the Linux kernel's target in a qemu VM.
//! * [`daemon`]: `mpio daemon` inside such a VM, next to LIO, driven
//!   through its CLI in the guest.
//! * [`files`]: guest scripts writing files of known checksums, and
//!   their `sha256sum` lines parsed.
//! * [`tour`]: the newcomer's tour of `/dev/ublkbN` in such a VM
//!   (`./scripts/demo.sh --vm`).
//! * [`libiscsi`] wraps `iscsi-inq`, `iscsi-ls`, `iscsi-perf` as a
//!   reference initiator.
//!
//! ```no_run
//! use std::time::Duration;
//! use mpio_testbed::{libiscsi, netfault::Blackhole, require_root};
//! use mpio_testbed::tgtd::{LunSpec, TargetSpec, Tgtd};
//!
//! fn a_test() {
//!     require_root!();
//!     let tgtd = Tgtd::builder()
//!         .portals(2)
//!         .target(TargetSpec::new("disk1").lun(LunSpec::file(16 << 20)))
//!         .start()
//!         .unwrap();
//!     {
//!         let _cut = Blackhole::new(tgtd.portal(1)).unwrap(); // path 2 goes silent
//!         // ... exercise failover to portal 0 ...
//!     } // rules removed here, even if the test panicked
//!     assert!(libiscsi::inq(&tgtd.url(1, 1, 1), Duration::from_secs(10)).unwrap().success());
//! }
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

pub mod daemon;
pub mod files;
pub mod libiscsi;
pub mod lio;
pub mod netfault;
pub mod proxy;
pub mod tour;
pub mod vm;

pub use mpio_lab::{Error, Result, cmd, error, slot, tgtd, wait};

/// Whether the process runs as root (effective uid 0), which the tests
/// with tgtd, iptables, tc or the kernel's NBD client need.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// First in every test that starts a fixture: unless the process runs as
/// root, prints why the test is skipped and how to run it, and returns
/// from the test (which then passes, skipped).
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            eprintln!(
                "skipped: this test needs root (it starts tgtd and changes iptables/tc rules); run `sudo -E cargo \
                 test` after scripts/install-test-deps.sh"
            );
            return;
        }
    };
}
