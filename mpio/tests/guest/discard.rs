//! Scenario 7 (issue 9): `blkdiscard` on `/dev/ublkbN` reaches the LU as
//! UNMAP: LIO's fileio punches holes in its backing file, whose allocated
//! blocks (`du` in the guest) drop by exactly what was discarded.

use super::ublk_lu::UblkLu;
use super::*;

const PORT: u16 = 3293;

#[test]
fn blkdiscard_on_ublk_frees_the_thin_lus_blocks() {
    let Some(vm) = vm() else { return };
    let _turn = frontend_turn();
    let lu = UblkLu::start(vm, "guest-discard", PORT, LunSpec::fileio(64 * MIB).thin_provisioning(), "");
    let dev = &lu.dev;
    let file = lu.lio.backing_file(1, 1, 0).unwrap();
    let allocated_kib = || -> u64 {
        let out = lu.sh(&format!("du -k {file}"));
        out.split_whitespace().next().and_then(|k| k.parse().ok()).unwrap_or_else(|| panic!("du: {out:?}"))
    };
    let empty = allocated_kib();
    lu.sh(&format!("dd if=/dev/urandom of={dev} bs=1M count=32 oflag=direct status=none"));
    let full = allocated_kib();
    assert!(full >= empty + 32 * 1024, "32 MiB written: {empty} -> {full} KiB allocated");

    // 8 MiB in the middle of what was written, then the whole device.
    lu.sh(&format!("blkdiscard --offset {} --length {} {dev}", 8 * MIB, 8 * MIB));
    assert_eq!(allocated_kib(), full - 8 * 1024, "8 MiB discarded: 8 MiB of blocks freed");
    lu.sh(&format!("blkdiscard {dev}"));
    assert!(allocated_kib() <= empty, "the whole device discarded: every block freed");
}
