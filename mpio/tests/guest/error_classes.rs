//! Error classes of `mpio_dsm::classify` that LIO can be made to
//! produce, as the application on `/dev/ublkbN` sees them (the errno
//! Linux's own SCSI disk gives for the same answer). Reservation
//! conflict (EBADE) is in [`super::ublk`], the I/O error of no path
//! (EIO) in [`super::all_paths_down`].
//!
//! No space (ENOSPC, DATA PROTECT 27/07 SPACE ALLOCATION FAILED) cannot
//! be had from LIO: its fileio backend answers every failed write of its
//! backing file, ENOSPC included, with NOT READY 08/00 LOGICAL UNIT
//! COMMUNICATION FAILURE (`TCM_LOGICAL_UNIT_COMMUNICATION_FAILURE` in
//! target_core_file.c), and tgtd has no thin provisioning to run out of.
//! That class is covered by the unit tests of `mpio_dsm::classify` and
//! `mpio_ublk::request` only.

use super::ublk_lu::{DEV, UblkLu};
use super::*;

const PORT: u16 = 3294;

/// A fileio LU larger than the small tmpfs that holds its backing file:
/// a write past what the tmpfs holds fails in LIO's backend. Every path
/// gives the same answer, so it is the LU's error, not a path's: the
/// application gets EIO (what sd gives for 08/00) after the retries, no
/// path fails, no hold starts, and what was written before reads back.
#[test]
fn a_failing_backing_store_is_an_eio_of_the_lu_and_no_path_fails() {
    let Some(vm) = vm() else { return };
    let _turn = frontend_turn();
    let dir = format!("/tmp/full-{}", vm.unique());
    vm.sh(&format!("mkdir -p {dir} && mount -t tmpfs -o size=4m tmpfs {dir}")).run_ok().unwrap();
    struct Unmount(&'static Vm, String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = self.0.sh(&format!("umount {0} && rmdir {0}", self.1)).run();
        }
    }
    let _unmount = Unmount(vm, dir.clone());
    let lun = LunSpec::fileio(16 * MIB).backing_dir(&dir);
    let lu = UblkLu::start(vm, "guest-full-store", PORT, lun, "hold = \"2s\"");
    let src = "/tmp/src-full-store";
    lu.sh(&format!("dd if=/dev/urandom of={src} bs=1M count=1 status=none"));
    lu.sh(&format!("dd if={src} of={} bs=1M oflag=direct status=none", lu.dev));
    let out = vm
        .sh(&format!("dd if=/dev/urandom of={} bs=1M seek=1 count=8 oflag=direct status=none", lu.dev))
        .run()
        .unwrap();
    let events = lu.d.ok(&["events", "--device", DEV]).unwrap();
    assert!(!out.success() && out.stderr.contains("Input/output error"), "{out:?}\n{events}");
    for kind in ["path_failed", "hold_started", "failover"] {
        assert!(!events.lines().any(|l| l.split_whitespace().nth(3) == Some(kind)), "{kind} on an LU error:\n{events}");
    }
    lu.sh(&format!("dd if={} bs=1M count=1 iflag=direct status=none | cmp - {src}", lu.dev));
}
