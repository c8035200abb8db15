//! mpio against the Linux kernel's own iSCSI target (LIO) in a test VM
//! (`testbed::vm`, `testbed::lio`). The scenarios tgtd runs on the host,
//! run here against LIO: the initiator's (`mpio_tests::session`: CHAP,
//! digests, discovery, the 256 MiB verified transfer, MCS, faults
//! mid-I/O) in [`session`], the multipath device's failover under
//! verified writes (`mpio_tests::mp`) in [`failover`], reservations in
//! [`reservation`], the fault proxy's scenarios in [`proxy`]. And what only LIO shows: its default fileio LU (write
//! cache off, no DPOFUA) under ext4 through our NBD export and the guest
//! kernel's NBD client, across a path failure; LUs without a unit serial,
//! which all look alike; its refusal of an unknown target name; its TPG
//! disable. One VM for the whole binary ([`Shared`]); each test has its
//! own targets and port, so a fault on one test's portal touches no
//! other. The tests skip (pass, with a message) where VMs cannot run
//! ([`mpio_testbed::vm::skip_reason`]).

use std::net::SocketAddr;
use std::time::Duration;

use mpio_testbed::lio::{Lio, LunSpec, TargetSpec, TpgSpec};
use mpio_testbed::vm::{Shared, Vm, VmSpec};

mod claim;
mod durability;
mod failover;
mod login;
mod proxy;
mod reservation;
mod session;

/// nic0 and nic1 carry the iSCSI paths (a fault on one link leaves the
/// other), with two guest addresses each for the four portals of MCS;
/// nic2 carries NBD from the guest's kernel client to our export on the
/// host, so no path fault touches it. `nbd-client` (package nbd-client)
/// sets up /dev/nbdN in the guest. 1.5 GiB: the LUs live in the guest's
/// tmpfs (256 MiB for the largest transfer).
static VM: Shared = Shared::new(|| VmSpec::new().memory_mib(1536).nic(2).nic(2).nic(1).host_program("nbd-client"));

const MIB: u64 = 1 << 20;

/// Portal `port` on each of the two path links.
fn two_portals(vm: &Vm, port: u16) -> [SocketAddr; 2] {
    [vm.portal(0, 0, port), vm.portal(1, 0, port)]
}

/// Four portals at `port`: both addresses of both path links, in the
/// order nic0, nic1, nic0, nic1 (so the first two are on different links).
fn four_portals(vm: &Vm, port: u16) -> [SocketAddr; 4] {
    [vm.portal(0, 0, port), vm.portal(1, 0, port), vm.portal(0, 1, port), vm.portal(1, 1, port)]
}

/// A target `name` with one TPG on both path links at `port` and `lun`.
fn one_lu<'vm>(vm: &'vm Vm, name: &str, port: u16, lun: LunSpec) -> Lio<'vm> {
    let [a, b] = two_portals(vm, port);
    Lio::builder()
        .target(TargetSpec::new(name).tpg(TpgSpec::new().portal(a).portal(b).lun(lun)))
        .start(vm)
        .expect("LIO starts")
}

/// Runs `script` in the guest off the async runtime (guest commands block,
/// and the ones that do I/O through our device need the runtime's workers
/// free to serve it); panics with its output unless it exits 0.
async fn guest(vm: &'static Vm, script: &str, timeout: Duration) -> String {
    let script = script.to_owned();
    tokio::task::spawn_blocking(move || vm.sh(&script).timeout(timeout).run_ok())
        .await
        .expect("guest command task")
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`guest`], returning the outcome whatever the exit status.
async fn guest_outcome(vm: &'static Vm, script: &str, timeout: Duration) -> mpio_testbed::cmd::Outcome {
    let script = script.to_owned();
    tokio::task::spawn_blocking(move || vm.sh(&script).timeout(timeout).run())
        .await
        .expect("guest command task")
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Prints the end of the guest's kernel log (where LIO says why it
/// refused something) if the test panics while this lives: the shared VM
/// outlives every test, so its console is never printed on a drop.
struct KernelLogOnPanic(&'static Vm);

impl Drop for KernelLogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.0.sh("dmesg | tail -40").run().map(|o| o.stdout).unwrap_or_else(|e| e.to_string());
            eprintln!("--- the guest's kernel log, last lines:\n{log}");
        }
    }
}
