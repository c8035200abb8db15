//! `mpio daemon` inside the test VM (`mpio_testbed::daemon`): initiator,
//! multipath device and frontend in the guest, LIO next to them, the two
//! joined by veth paths between network namespaces, so the faults between
//! them are real and the guest's kernel uses the frontend. One VM for the
//! whole binary ([`Shared`]), with this build's mpio installed once; each
//! test has its own target name and port, so a fault on one test's portal
//! touches no other. Frontend scenarios (NBD, ublk) are modules
//! of this binary and share its VM and [`config`]. The tests skip (pass,
//! with a message) where VMs cannot run ([`mpio_testbed::vm::skip_reason`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mpio_testbed::daemon::{GUEST_MPIO, GuestDaemon, config};
use mpio_testbed::lio::{Lio, LunSpec, TargetSpec, TpgSpec};
use mpio_testbed::vm::{Shared, Vm, VmSpec};

mod all_paths_down;
mod demo;
mod discard;
mod error_classes;
mod events;
mod failover;
mod fio;
mod harness;
mod nbd;
mod removal;
mod resize;
mod restart;
mod stale_write;
mod ublk;
mod ublk_lu;

/// Two inner paths (veth, initiator side in the `ini` namespace where the
/// daemon runs); the guest kernel's NBD client (package nbd-client); nic0
/// for an initiator on the host (the ublk test's other host holding a
/// reservation); fio (the ublk device under a flapping path); memory for
/// the LUs, files and page cache of the NBD and ublk tests running at once.
static VM: Shared =
    Shared::new(|| VmSpec::new().memory_mib(1536).nic(1).inner_paths(2).host_program("nbd-client").host_program("fio"));

/// Frontend scenarios (a filesystem's worth of I/O each) take turns: run
/// at once in the 2-vCPU TCG guest, the load stretched the NBD device's
/// teardown after the daemon's SIGKILL past the reconnect (`nbd0 already
/// in use`, seen with the ublk scenario beside it).
static FRONTEND_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits for this test's turn among the frontend scenarios.
fn frontend_turn() -> std::sync::MutexGuard<'static, ()> {
    FRONTEND_TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// The mpio binary of this build, installed in [`VM`] once.
static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();

const MIB: u64 = 1 << 20;
const INITIATOR: &str = "iqn.2026-11.test.mpio:guest";

/// The shared VM with mpio installed, or `None` (printed) where VMs
/// cannot run.
fn vm() -> Option<&'static Vm> {
    let vm = VM.get_or_skip()?;
    let installed = INSTALLED.get_or_init(|| {
        let t = Instant::now();
        let r = vm.install_binary(Path::new(env!("CARGO_BIN_EXE_mpio")), GUEST_MPIO).map_err(|e| e.to_string());
        eprintln!("{} booted in {:.1?}; mpio installed in {:.1?}", vm.name(), vm.boot_time(), t.elapsed());
        r
    });
    if let Err(e) = installed {
        panic!("installing mpio in the VM: {e}");
    }
    Some(vm)
}

/// Portal `port` on each inner path (LIO's side, the guest's root namespace).
fn inner_portals(vm: &Vm, port: u16) -> [SocketAddr; 2] {
    [0, 1].map(|i| SocketAddr::new(vm.inner_path(i).target_addr.into(), port))
}

/// A target `name` with one TPG on both inner paths at `port` and `lun`.
fn one_lu<'vm>(vm: &'vm Vm, name: &str, port: u16, lun: LunSpec) -> Lio<'vm> {
    let [a, b] = inner_portals(vm, port);
    Lio::builder()
        .target(TargetSpec::new(name).tpg(TpgSpec::new().portal(a).portal(b).lun(lun)))
        .start(vm)
        .expect("LIO starts")
}

/// A daemon configuration: control and NBD sockets in `dir`, metrics off,
/// quick probation, target `lio` = `iqn`, and `devices` (see [`device`]).
fn config(dir: &str, iqn: &str, devices: &str) -> String {
    format!(
        "{}\n[timers]\nprobation_interval = \"250ms\"\n{}{devices}",
        config::head(dir, INITIATOR, "info", "30s"),
        config::target("lio", iqn, "")
    )
}

/// A `[[device]]` `name` on LUN `lun` of target `lio` (see
/// [`config::device`]).
fn device(vm: &Vm, name: &str, lun: u32, frontend: &str, extra: &str, portals: &[SocketAddr]) -> String {
    config::device(vm, name, "lio", lun, frontend, extra, portals)
}

/// A daemon in the initiator namespace with `config(dir)`.
fn start_daemon(vm: &'static Vm, config: impl FnOnce(&str) -> String) -> GuestDaemon<'static> {
    GuestDaemon::builder(vm).in_initiator_netns().start(config).unwrap_or_else(|e| panic!("{e}"))
}

/// Field `field` of path `path` of device `dev` in `mpio path list DEV --json`.
fn path_field(d: &GuestDaemon<'_>, dev: &str, path: &str, field: &str) -> serde_json::Value {
    let list = d.json(&["path", "list", dev]).unwrap_or_else(|e| panic!("{e}"));
    let p = list.as_array().and_then(|a| a.iter().find(|p| p["name"] == path)).cloned();
    p.unwrap_or_else(|| panic!("no path {path} in {list}"))[field].clone()
}

/// Prints the end of the guest's kernel log if the test panics while this
/// lives (the shared VM's console is never printed on a drop).
struct KernelLogOnPanic(&'static Vm);

impl Drop for KernelLogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.0.sh("dmesg | tail -40").run().map(|o| o.stdout).unwrap_or_else(|e| e.to_string());
            eprintln!("--- the guest's kernel log, last lines:\n{log}");
        }
    }
}
