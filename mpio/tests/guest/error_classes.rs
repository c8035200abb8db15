//! Error classes of `mpio_dsm::classify` that LIO can be made to
//! produce, as the application on `/dev/ublkbN` sees them (the errno
//! Linux's own SCSI disk gives for the same answer). Reservation
//! conflict (EBADE) is in [`super::ublk`], the I/O error of no path
//! (EIO) in [`super::all_paths_down`].

use super::ublk_lu::UblkLu;
use super::*;

const PORT: u16 = 3294;

/// A fileio LU larger than the small tmpfs that holds its backing file:
/// a write past what the tmpfs can hold makes LIO's write fail with
/// ENOSPC.
#[test]
#[ignore = "finding: LIO's fileio on a full tmpfs makes the application see EIO, not ENOSPC (dd: Input/output error after 4 s with hold 2s); which sense LIO sends is not yet read"]
fn a_full_backing_store_reaches_the_application_as_enospc() {
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
    let lu = UblkLu::start(vm, "guest-enospc", PORT, lun, "hold = \"2s\"");
    let out = vm.sh(&format!("dd if=/dev/urandom of={} bs=1M count=8 oflag=direct status=none", lu.dev)).run().unwrap();
    let events = lu.d.ok(&["events", "--device", "d0"]).unwrap();
    assert!(!out.success() && out.stderr.contains("No space left on device"), "{out:?}\n{events}");
}
