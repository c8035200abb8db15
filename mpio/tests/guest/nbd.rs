//! ext4 through the guest daemon's NBD export and the guest kernel's NBD
//! client (`nbd-client` on the daemon's unix socket; no network between
//! them, so no path fault touches it), over two paths to LIO's fileio LU:
//! files written with fsync while one path's connection is reset, the path
//! back and carrying writes again, `e2fsck -n` clean, every checksum
//! matching after a remount; then the daemon killed with SIGKILL and
//! started again, and the same files read back through the new export.
//!
//! NBD cannot keep a block device across a daemon restart (the kernel's
//! NBD device dies with its connection; ublk's user recovery is what keeps
//! one): the test unmounts before the kill, and after the restart connects
//! `nbd-client` again and mounts again. Seen when tried with ext4 mounted
//! and `nbd-client -persist -nonetlink`: at the kill the kernel logs
//! "Receive control failed", shuts the sockets down and ext4 aborts its
//! journal; nbd-client exits instead of reconnecting, and the restarted
//! daemon's export is of no help to the dead device.

use mpio_testbed::vm::Awaited;
use mpio_testbed::vm::fault;

use super::*;
use mpio_testbed::files::{sums, writer};

const PORT: u16 = 3280;
const NBD: &str = "/dev/nbd0";
const MNT: &str = "/mnt/guest-nbd";
const FILES: usize = 16;
const FILE_MIB: u64 = 4;
const TOOL: Duration = Duration::from_secs(300);

fn sh(vm: &Vm, script: &str) -> String {
    vm.sh(script).timeout(TOOL).run_ok().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn ext4_on_the_guest_daemons_nbd_export_survives_a_reset_path_and_a_killed_daemon() {
    let Some(vm) = vm() else { return };
    let _turn = frontend_turn();
    let started = Instant::now();
    let _log = KernelLogOnPanic(vm);
    let lio = one_lu(vm, "guest-nbd", PORT, LunSpec::fileio(160 * MIB));
    let portals = inner_portals(vm, PORT);
    let iqn = lio.iqn(1);
    let mut d =
        start_daemon(vm, |dir| config(dir, &iqn, &device(vm, "d0", 0, "nbd", "policy = \"round-robin\"", &portals)));
    assert_eq!(d.ready_status(), "1 devices ready");
    let w = d.wait_device("d0", true, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((w["state"].as_str(), w["paths_usable"].as_u64()), (Some("optimal"), Some(2)), "{w}");

    // The guest's kernel on our export; whatever happens below, it lets go.
    let connect = format!("nbd-client -N d0 -u {} {NBD}", d.nbd_socket());
    sh(vm, &connect);
    struct Detach(&'static Vm);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = self.0.sh(&format!("umount -l {MNT} 2>/dev/null; nbd-client -d {NBD}")).run();
        }
    }
    let _detach = Detach(vm);
    sh(vm, &format!("set -e; mkfs.ext4 -q -F {NBD}; mkdir -p {MNT}; mount -t ext4 {NBD} {MNT}"));

    // Path p2's connection is reset while the files are written (after
    // the first quarter): no write fails, the path comes back.
    let writing = vm.sh(&writer(MNT, 0, FILES, FILE_MIB)).timeout(TOOL).spawn().unwrap();
    let progress = writing.wait_output(TOOL, |out, _| out.lines().count() >= FILES / 4).unwrap();
    assert_eq!(progress, Awaited::Matched, "the writer's first files: {:?}", writing.output());
    let cut = fault::reset_connections(vm, portals[1]).unwrap();
    assert_eq!(cut, 1, "p2's connection, reset while files were being written");
    let wrote = writing.wait().unwrap();
    assert!(wrote.success(), "a write failed across the reset: {wrote:?}");
    let written = sums(&wrote.stdout);
    assert_eq!(written.len(), FILES, "{wrote:?}");

    let events = d.ok(&["events", "--device", "d0"]).unwrap();
    assert!(events.lines().any(|l| l.contains("p2") && l.contains("path_failed")), "the reset failed p2:\n{events}");
    let back = d.wait_device("d0", true, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back["state"], "optimal", "p2 came back: {back}");
    let before = path_field(&d, "d0", "p2", "writes").as_u64().unwrap();
    let more = sh(vm, &format!("{}sync\n", writer(MNT, FILES, 1, FILE_MIB)));
    let after = path_field(&d, "d0", "p2", "writes").as_u64().unwrap();
    assert!(after > before, "p2 carries writes again after its return: {before} -> {after}");
    let mut written = written;
    written.extend(sums(&more));

    // Unmounted, the filesystem is clean; mounted again (nothing cached),
    // every file has the checksum it was written with.
    sh(vm, &format!("set -e; sync; umount {MNT}; e2fsck -f -n {NBD}"));
    let read_back = |vm: &Vm| sums(&sh(vm, &format!("set -e; mount -t ext4 {NBD} {MNT}; sha256sum {MNT}/f*")));
    assert_eq!(read_back(vm), written, "checksums after a remount");
    sh(vm, &format!("umount {MNT}"));

    // SIGKILL: the export dies with the daemon, and with it the kernel's
    // NBD device; the restarted daemon (same ISIDs: LIO reinstates the
    // sessions) serves the same data on a new connection.
    let isids = |d: &GuestDaemon<'_>| ["p1", "p2"].map(|p| path_field(d, "d0", p, "isid"));
    let isids_before = isids(&d);
    d.kill().unwrap();
    sh(vm, &format!("nbd-client -d {NBD}"));
    d.restart().unwrap_or_else(|e| panic!("{e}"));
    d.wait_device("d0", true, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(isids(&d), isids_before, "the restarted daemon logs in with the same ISIDs");
    sh(vm, &connect);
    assert_eq!(read_back(vm), written, "checksums after the daemon's restart");
    sh(vm, &format!("set -e; umount {MNT}; e2fsck -f -n {NBD}; nbd-client -d {NBD}"));
    eprintln!("the NBD scenario took {:.1?}", started.elapsed());
    assert!(d.stop().unwrap().success(), "{}", d.log());
}
