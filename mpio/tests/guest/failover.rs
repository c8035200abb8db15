//! Scenario 2 (issue 9): ext4 on `/dev/ublkbN` keeps being written while
//! path p2 fails, once per fault (connection reset, LIO portal removed,
//! blackhole, interface down), one daemon and LU throughout. Each time
//! the writer (files with fsync) gets no error, p2 comes back and
//! carries writes again; at the end every file has its checksum after a
//! remount with the device's cache dropped, and `fsck -n` is clean.

use std::collections::BTreeMap;

use mpio_testbed::vm::Awaited;

use super::events::Events;
use super::ublk_lu::{DEV, Fault, PATH_EVENT, TOOL, UblkLu, quick_return};
use super::*;
use mpio_testbed::files::{sums, writer_until};

const PORT: u16 = 3290;
const MNT: &str = "/mnt/guest-failover";
/// Files of 1 MiB: many small fsyncs, so writes are in flight whenever
/// the fault strikes; at most this many per fault (the LU's room).
const FILE_MIB: u64 = 1;
const MOST_FILES: usize = 40;

/// A silent path is seen by the NOP-Out keepalive (`nop_interval` +
/// `nop_timeout`); a path failed again soon is damped before probation:
/// short here, so four faults in a row on p2 take seconds, not minutes.
fn timers() -> String {
    quick_return("", "nop_interval = \"500ms\"\nnop_timeout = \"1s\"\n")
}

#[test]
fn ext4_on_ublk_survives_each_path_fault_and_the_path_carries_writes_again() {
    let Some(vm) = vm() else { return };
    let _turn = frontend_turn();
    let started = Instant::now();
    let lu = UblkLu::start(vm, "guest-failover", PORT, LunSpec::fileio(256 * MIB), &timers());
    let dev = &lu.dev;
    lu.sh(&format!("set -e; mkfs.ext4 -q -F {dev}; mkdir -p {MNT}; mount -t ext4 {dev} {MNT}"));
    struct Unmount(&'static Vm);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = self.0.sh(&format!("umount -l {MNT}")).run();
        }
    }
    let _unmount = Unmount(vm);
    let mut events = Events::follow(&lu.d, DEV);
    let mut written = BTreeMap::new();

    for fault in [Fault::Reset, Fault::PortalRemoved, Fault::Blackhole, Fault::LinkDown] {
        let t = Instant::now();
        let dir = format!("{MNT}/{fault:?}");
        let stop = format!("/tmp/stop-failover-{}", vm.unique());
        let writing = vm.sh(&writer_until(&dir, &stop, FILE_MIB, MOST_FILES)).timeout(TOOL).spawn().unwrap();
        let files_at_least = |n: usize| {
            let got = writing.wait_output(TOOL, |out, _| out.lines().count() >= n).unwrap();
            assert_eq!(got, Awaited::Matched, "{fault:?}: the writer stopped early: {:?}", writing.output());
        };
        files_at_least(1);

        let guard = lu.fail_path(1, fault);
        events.wait("path_failed", Some("p2"), PATH_EVENT);
        // Writes go on over p1 alone.
        let during = writing.output().0.lines().count();
        files_at_least(during + 1);
        guard.restore();
        lu.wait_all_paths();
        let back = lu.write_bytes("p2");
        // A whole file written after p2's return (round robin: some of it
        // over p2).
        let now = writing.output().0.lines().count();
        files_at_least(now + 2);
        let later = lu.write_bytes("p2");
        assert!(later > back, "{fault:?}: p2 carries writes again after its return: {back} -> {later}");

        vm.command(["touch", &stop]).run_ok().unwrap();
        let wrote = writing.wait().unwrap();
        assert!(wrote.success(), "{fault:?}: a write failed across the fault: {wrote:?}");
        written.extend(sums(&wrote.stdout));
        eprintln!("{fault:?}: {} files, {:.1?}", sums(&wrote.stdout).len(), t.elapsed());
    }

    // Remounted with nothing cached, every file has the checksum it was
    // written with, and the filesystem is clean.
    let list: String = written.iter().map(|(path, sum)| format!("{sum}  {path}\n")).collect();
    vm.write_file("/tmp/sums-failover", list.as_bytes()).unwrap();
    let report = lu.sh(&format!(
        "set -e; umount {MNT}; blockdev --flushbufs {dev}; fsck.ext4 -n -f {dev} >/dev/null\n\
         mount -t ext4 {dev} {MNT}; sha256sum -c /tmp/sums-failover; umount {MNT}"
    ));
    assert_eq!(report.matches(": OK").count(), written.len(), "{report}");
    eprintln!("the failover scenario took {:.1?}", started.elapsed());
}
