//! A LU grown on the target while mpio serves it as `/dev/ublkbN` and as
//! an NBD export. LIO raises no UNIT ATTENTION for a resize (see
//! `mpio_testbed::lio::Lio::resize`), so the daemon learns of it in the
//! two ways left: `mpio device rescan` (an operator's command after
//! growing a LUN), and a path that logs in again and is claimed with the
//! new size (the serial still matches: the same LU, grown; without a
//! serial a different size would be a different LU).
//!
//! What follows the size: the device's capacity (`device show`), the NBD
//! export from a client's next connection, and `/dev/ublkbN` where the
//! ublk driver can resize a live device (UBLK_U_CMD_UPDATE_SIZE, Linux
//! 6.16); on the VM's 6.12 kernel it keeps its size and the daemon says
//! why. Whichever happened, the kernel's own view of the block device
//! must match what the daemon reports. Data written before the resize
//! and past the old end reads back.

use mpio_testbed::vm::fault;

use super::*;

const PORT: u16 = 3299;
const NBD: &str = "/dev/nbd1";
const TOOL: Duration = Duration::from_secs(300);

fn sh(vm: &Vm, script: &str) -> String {
    vm.sh(script).timeout(TOOL).run_ok().unwrap_or_else(|e| panic!("{e}"))
}

/// `blockdev --getsize64 dev`.
fn kernel_size(vm: &Vm, dev: &str) -> u64 {
    let out = sh(vm, &format!("blockdev --getsize64 {dev}"));
    out.trim().parse().unwrap_or_else(|_| panic!("blockdev --getsize64 {dev}: {out:?}"))
}

/// The sha256 of `len` MiB of `dev` from MiB `at`, read past the page cache.
fn sum(vm: &Vm, dev: &str, at: u64, len: u64) -> String {
    let out = sh(vm, &format!("dd if={dev} bs=1M skip={at} count={len} iflag=direct status=none | sha256sum"));
    out.split_whitespace().next().unwrap_or_default().to_owned()
}

#[test]
fn a_lu_grown_on_the_target_is_followed_by_rescan_and_by_a_path_claimed_again() {
    let Some(vm) = vm() else { return };
    let _turn = frontend_turn();
    let _log = KernelLogOnPanic(vm);
    let lio = one_lu(vm, "guest-resize", PORT, LunSpec::block_file(32 * MIB));
    let portals = inner_portals(vm, PORT);
    let iqn = lio.iqn(1);
    let frontends = r#"["ublk", "nbd"]"#;
    let d = start_daemon(vm, |dir| {
        config(dir, &iqn, &device(vm, "d0", 0, frontends, "policy = \"round-robin\"", &portals))
    });
    let show = d.wait_device("d0", true, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(show["capacity_bytes"], 32 * MIB, "{show}");
    let ublk = show["block_device"].as_str().unwrap_or_else(|| panic!("no block device: {show}")).to_owned();
    assert_eq!(kernel_size(vm, &ublk), 32 * MIB);
    let connect = format!("nbd-client -N d0 -u {} {NBD}", d.nbd_socket());
    struct Detach(&'static Vm);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = self.0.sh(&format!("nbd-client -d {NBD}")).run();
        }
    }
    let _detach = Detach(vm);

    // Known data in the last 4 MiB of the old size.
    sh(vm, &format!("dd if=/dev/urandom of={ublk} bs=1M seek=28 count=4 oflag=direct status=none"));
    let tail = sum(vm, &ublk, 28, 4);

    // Grown to 48 MiB; the operator asks for a rescan.
    lio.resize(1, 1, 0, 48 * MIB).unwrap();
    let r = d.json(&["device", "rescan", "d0"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((r["old_bytes"].as_u64(), r["new_bytes"].as_u64()), (Some(32 * MIB), Some(48 * MIB)), "{r}");
    let show = d.json(&["device", "show", "d0"]).unwrap();
    assert_eq!(show["capacity_bytes"], 48 * MIB, "the device follows the LU: {show}");
    // The block device has the size the daemon says it has: the new one
    // where the driver resized it, otherwise the old one and the reason.
    let shown = show["block_device_bytes"].as_u64().unwrap_or_else(|| panic!("no block device size: {show}"));
    assert_eq!(kernel_size(vm, &ublk), shown, "{show}");
    let events = d.ok(&["events", "--device", "d0"]).unwrap();
    assert!(events.lines().any(|l| l.contains("capacity_changed")), "{events}");
    if shown == 32 * MIB {
        let problem = show["frontend_problem"].as_str().unwrap_or_default();
        assert!(problem.contains("6.16"), "why /dev/ublkbN kept its size: {show}");
        let note = r["block_device_note"].as_str().unwrap_or_else(|| panic!("rescan gives no reason: {r}"));
        assert!(note.contains("UBLK_U_CMD_UPDATE_SIZE") && problem.ends_with(note), "{r}\n{show}");
        assert!(events.lines().any(|l| l.contains("ublk_resize_failed")), "{events}");
    } else {
        assert_eq!(shown, 48 * MIB, "{show}");
        assert!(events.lines().any(|l| l.contains("ublk_resized")), "{events}");
    }

    // A new NBD connection sees 48 MiB: write past the old end, read back.
    sh(vm, &connect);
    assert_eq!(kernel_size(vm, NBD), 48 * MIB, "the NBD export's size after the rescan");
    sh(vm, &format!("dd if=/dev/urandom of={NBD} bs=1M seek=40 count=4 oflag=direct status=none"));
    let beyond = sum(vm, NBD, 40, 4);
    assert_eq!(sum(vm, NBD, 28, 4), tail, "the data at the old end, through NBD");
    sh(vm, &format!("nbd-client -d {NBD}"));

    // Grown again, with no rescan: p1's connection is reset, and its new
    // session is claimed with 64 MiB: the same LU (its serial), grown.
    lio.resize(1, 1, 0, 64 * MIB).unwrap();
    let cut = fault::reset_connections(vm, portals[0]).unwrap();
    assert_eq!(cut, 1, "p1's connection");
    let back = d.wait_device("d0", true, Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back["capacity_bytes"], 64 * MIB, "p1 claimed again with the new size: {back}");
    assert_eq!(back["paths_usable"], 2, "{back}");
    let events = d.ok(&["events", "--device", "d0"]).unwrap();
    assert_eq!(events.lines().filter(|l| l.contains("capacity_changed")).count(), 2, "{events}");

    // Everything written reads back, through both frontends.
    assert_eq!(sum(vm, &ublk, 28, 4), tail, "the data at the old end, through ublk");
    sh(vm, &connect);
    assert_eq!(kernel_size(vm, NBD), 64 * MIB);
    assert_eq!(sum(vm, NBD, 28, 4), tail, "the data at the old end, through NBD");
    assert_eq!(sum(vm, NBD, 40, 4), beyond, "the data past the old end, through NBD");
    sh(vm, &format!("nbd-client -d {NBD}"));
}
