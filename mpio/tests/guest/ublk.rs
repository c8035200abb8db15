//! `frontend = "ublk"`: the guest kernel's `/dev/ublkbN` (ublk_drv) over
//! two paths to LIO. What the kernel's block device shows (size, logical
//! and physical block, write cache, FUA, discard) must be the LU's; ext4
//! on it must keep 64 MiB of files across a remount with the page cache
//! dropped; a reservation another host holds must refuse a write with
//! EBADE, as on a native disk; the daemon's stop must remove the block
//! devices.

use mpio_dsm::Lun;
use mpio_dsm::pr::PrType;
use mpio_tests::pr::{Holder, OTHER_INITIATOR, SharedLu};

use super::*;

const PORT: u16 = 3282;
/// Commands that move data through TCG (mkfs, 64 MiB of files).
const TOOL: Duration = Duration::from_secs(300);

/// `/sys/block/NAME/FILE` of block device `dev` (`/dev/ublkb0`).
fn sysfs(vm: &Vm, dev: &str, file: &str) -> String {
    let name = dev.trim_start_matches("/dev/");
    vm.command(["cat", &format!("/sys/block/{name}/{file}")]).run_ok().unwrap().trim().to_owned()
}

/// ext4 on `dev`: `mib` MiB of random files written from tmpfs, synced,
/// unmounted (which drops the files' pages), the device's own cache
/// dropped, mounted again and compared with the sources; `fsck -n` clean.
/// Returns sha256sum's report. Only this filesystem is synced and only
/// this device's cache dropped: a global `sync` or `drop_caches` would
/// reach the devices of the tests running beside this one in the VM (an
/// NBD device whose daemon was just killed, which then stays in use).
fn ext4_round_trip(vm: &Vm, dev: &str, tag: &str, mib: u64) -> String {
    let files = mib / 4;
    let script = format!(
        r#"set -e
src=/tmp/src-{tag}; mnt=/mnt/{tag}
mkdir -p $src $mnt
for i in $(seq 1 {files}); do dd if=/dev/urandom of=$src/f$i bs=1M count=4 status=none; done
(cd $src && sha256sum f* > /tmp/sums-{tag})
mkfs.ext4 -q -F {dev}
mount -t ext4 {dev} $mnt
cp $src/f* $mnt/
sync -f $mnt
umount $mnt
blockdev --flushbufs {dev}
mount -t ext4 {dev} $mnt
(cd $mnt && sha256sum -c /tmp/sums-{tag})
umount $mnt
fsck.ext4 -n -f {dev} >/dev/null
rm -r $src
"#
    );
    vm.sh(&script).timeout(TOOL).run_ok().unwrap_or_else(|e| panic!("ext4 on {dev}: {e}"))
}

#[test]
fn ext4_on_ublk_block_devices_over_two_paths_to_lio() {
    let Some(vm) = vm() else { return };
    let _turn = frontend_turn();
    let _log = KernelLogOnPanic(vm);
    let portals = inner_portals(vm, PORT);
    // The host's own initiator, the other host holding a reservation.
    let host_portal = vm.portal(0, 0, PORT);
    let lio = Lio::builder()
        .target(
            TargetSpec::new("guest-ublk").tpg(
                TpgSpec::new()
                    .portal(portals[0])
                    .portal(portals[1])
                    .portal(host_portal)
                    // LIO's default fileio LU: write-through, 512-byte blocks.
                    .lun(LunSpec::fileio(128 * MIB))
                    // Write-back with FUA, 4096-byte blocks, UNMAP.
                    .lun(LunSpec::fileio(64 * MIB).block_size(4096).write_cache(true).thin_provisioning()),
            ),
        )
        .start(vm)
        .unwrap();
    let iqn = lio.iqn(1);
    let mut d = start_daemon(vm, |dir| {
        let devices = device(vm, "d512", 0, "ublk", "", &portals) + &device(vm, "d4k", 1, "ublk", "", &portals);
        config(dir, &iqn, &devices)
    });

    // `device wait` returns once every path is up and the block device is there.
    for name in ["d512", "d4k"] {
        d.wait_device(name, true, Duration::from_secs(120)).unwrap();
    }
    let block = |name: &str| -> String {
        let v = d.json(&["device", "show", name]).unwrap();
        v["block_device"].as_str().unwrap_or_else(|| panic!("{name} has no block device: {v}")).to_owned()
    };
    let (b512, b4k) = (block("d512"), block("d4k"));
    assert_ne!(b512, b4k);
    assert!(b512.starts_with("/dev/ublkb") && b4k.starts_with("/dev/ublkb"), "{b512} {b4k}");
    let listed = d.json(&["device", "list"]).unwrap();
    let listed: Vec<&str> = listed.as_array().unwrap().iter().filter_map(|v| v["block_device"].as_str()).collect();
    assert_eq!(listed.len(), 2, "device list names both block devices: {listed:?}");
    let events = d.ok(&["events", "--device", "d512"]).unwrap();
    assert!(events.contains("ublk_created") && events.contains(&b512), "{events}");
    let status = d.ok(&["status"]).unwrap();
    assert!(status.contains(&b512) && status.contains(&b4k), "{status}");

    // What the kernel made of the parameters.
    let got = |dev: &str| {
        ["size", "queue/logical_block_size", "queue/physical_block_size", "queue/write_cache", "queue/fua"]
            .map(|f| sysfs(vm, dev, f))
    };
    assert_eq!(
        got(&b512),
        [(128 * MIB / 512).to_string(), "512".into(), "512".into(), "write through".into(), "0".into()]
    );
    assert_eq!(
        got(&b4k),
        [(64 * MIB / 512).to_string(), "4096".into(), "4096".into(), "write back".into(), "1".into()]
    );
    assert_eq!(sysfs(vm, &b512, "queue/discard_max_bytes"), "0", "the LU without UNMAP gets no discard");
    let discard: u64 = sysfs(vm, &b4k, "queue/discard_max_bytes").parse().unwrap();
    assert!(discard > 0, "the thin LU's discard reaches the block device");

    // ext4, through both paths of the 512-byte LU.
    let report = ext4_round_trip(vm, &b512, "d512", 64);
    assert_eq!(report.matches(": OK").count(), 16, "{report}");
    let paths = d.json(&["path", "list", "d512"]).unwrap();
    let written: Vec<u64> = paths.as_array().unwrap().iter().map(|p| p["write_bytes"].as_u64().unwrap()).collect();
    assert!(written.iter().sum::<u64>() >= 64 * MIB, "the files went through the device: {written:?}");
    assert!(written.iter().all(|&w| w > 0), "round robin: both paths carried writes: {written:?}");
    // And on the 4096-byte one.
    let report = ext4_round_trip(vm, &b4k, "d4k", 16);
    assert_eq!(report.matches(": OK").count(), 4, "{report}");

    // Error classes: another host's Write Exclusive reservation refuses
    // our writes with RESERVATION CONFLICT, which the application sees as
    // EBADE ("Invalid exchange"), as from a native disk; reads pass.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lu = SharedLu { target: iqn.clone(), portals: vec![host_portal], lun: Lun::from_number(0).unwrap() };
    let holder = rt.block_on(Holder::reserve(&lu, OTHER_INITIATOR, 0x7e57, PrType::WRITE_EXCLUSIVE));
    let write = vm.sh(&format!("dd if=/dev/zero of={b512} bs=4096 count=1 oflag=direct conv=notrunc")).run().unwrap();
    let read = vm.sh(&format!("dd if={b512} of=/dev/null bs=4096 count=1 iflag=direct")).run().unwrap();
    rt.block_on(holder.release());
    assert!(!write.success() && write.stderr.contains("Invalid exchange"), "{write:?}");
    assert!(read.success(), "{read:?}");

    // Stopping the daemon removes the block devices.
    let out = d.stop().unwrap();
    assert!(out.success(), "the daemon stops cleanly: {out:?}");
    for dev in [&b512, &b4k] {
        let name = dev.trim_start_matches("/dev/");
        let gone = vm.sh(&format!("test ! -e /sys/block/{name}")).run().unwrap();
        assert!(gone.success(), "{dev} is removed at stop");
    }
    lio.stop().unwrap();
}
