//! Scenario 3 (issue 9): the daemon is killed (SIGKILL) while ext4 on
//! its `/dev/ublkbN` is mounted and written, and `mpio daemon` is started
//! again with the same configuration. The kernel keeps the device and
//! holds its I/O while no daemon runs (user recovery); the new daemon
//! finds the device by name and takes it over (`ublk_reattached`), the
//! same `/dev/ublkbN`; the writer (files with fsync) sees a pause, not an
//! error; every checksum matches after a remount and `fsck -n` is clean.
//!
//! Then what nobody reattaches: the daemon killed again and started with
//! its device pointed at another LU (another size). The device left
//! behind is refused, the error naming both sizes; `mpio ublk list`
//! shows it as served by nobody, and `mpio ublk remove` removes it. A
//! device the daemon serves is refused to `mpio ublk remove`.

use std::collections::BTreeMap;

use mpio_testbed::vm::Awaited;

use super::events::Events;
use super::ublk_lu::{DEV, PATH_EVENT, TOOL, UblkLu};
use super::*;
use mpio_testbed::files::{sums, writer_until};

const PORT: u16 = 3295;
const MNT: &str = "/mnt/guest-restart";
/// Many small fsyncs: writes are in flight when the daemon dies.
const FILE_MIB: u64 = 1;
const MOST_FILES: usize = 120;
/// LUN 0 carries the filesystem; LUN 1, smaller, is where the second
/// configuration points the device.
const LU_MIB: u64 = 256;
const OTHER_LU_MIB: u64 = 64;

/// `mpio ublk list --json`'s entry for device `id`.
fn ublk_entry(d: &GuestDaemon<'_>, id: &str) -> serde_json::Value {
    let list = d.json(&["ublk", "list"]).unwrap_or_else(|e| panic!("{e}"));
    let found = list.as_array().and_then(|a| a.iter().find(|u| u["id"].as_u64() == id.parse().ok())).cloned();
    found.unwrap_or_else(|| panic!("no ublk device {id} in {list}"))
}

#[test]
fn ext4_on_ublk_survives_a_killed_daemon_and_a_device_nobody_reattaches_is_removed() {
    let Some(vm) = vm() else { return };
    let _turn = frontend_turn();
    let started = Instant::now();
    let [a, b] = inner_portals(vm, PORT);
    let lio = Lio::builder()
        .target(
            TargetSpec::new("guest-restart").tpg(
                TpgSpec::new()
                    .portal(a)
                    .portal(b)
                    .lun(LunSpec::fileio(LU_MIB * MIB))
                    .lun(LunSpec::fileio(OTHER_LU_MIB * MIB)),
            ),
        )
        .start(vm)
        .expect("LIO starts");
    let mut lu = UblkLu::serve(vm, lio, PORT, "policy = \"round-robin\"");
    let dev = lu.dev.clone();
    let id = dev.trim_start_matches("/dev/ublkb").to_owned();
    lu.sh(&format!("set -e; mkfs.ext4 -q -F {dev}; mkdir -p {MNT}; mount -t ext4 {dev} {MNT}"));
    struct Unmount(&'static Vm);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = self.0.sh(&format!("umount -l {MNT}")).run();
        }
    }
    let unmount = Unmount(vm);

    // The writer, from before the kill until after the new daemon serves.
    let stop = format!("/tmp/stop-restart-{}", vm.unique());
    let writing = vm.sh(&writer_until(MNT, &stop, FILE_MIB, MOST_FILES)).timeout(TOOL).spawn().unwrap();
    let files_at_least = |n: usize| {
        let got = writing.wait_output(TOOL, |out, _| out.lines().count() >= n).unwrap();
        assert_eq!(got, Awaited::Matched, "the writer stopped early: {:?}", writing.output());
    };
    files_at_least(3);

    let t = Instant::now();
    lu.d.kill().unwrap();
    let before = writing.output().0.lines().count();
    // No daemon: the device stays, its I/O held by the kernel.
    let name = dev.trim_start_matches("/dev/");
    vm.sh(&format!("test -e /sys/block/{name}")).run_ok().unwrap_or_else(|e| panic!("{dev} went with the daemon: {e}"));
    lu.d.restart().unwrap_or_else(|e| panic!("{e}"));
    let mut events = Events::since_start(&lu.d, DEV);
    let found = events.wait("ublk_recovering", None, PATH_EVENT);
    assert!(found.contains(&dev), "the new daemon finds the device it served: {found}");
    let back = events.wait("ublk_reattached", None, PATH_EVENT);
    assert!(back.contains(&dev), "{back}");
    eprintln!("killed and reattached in {:.1?}; {before} files before the kill", t.elapsed());
    // Its mount namespace, copied while the filesystem was mounted, does
    // not hold it: the daemon detached it at start.
    let pid = lu.d.pid().unwrap().to_string();
    let theirs = vm.command(["nsenter", "-t", &pid, "-m", "cat", "/proc/self/mounts"]).run_ok().unwrap();
    assert!(!theirs.contains(&format!(" {MNT} ")), "the new daemon's namespace holds {MNT}:\n{theirs}");
    let shown = lu.d.json(&["device", "show", DEV]).unwrap();
    assert_eq!(shown["block_device"].as_str(), Some(dev.as_str()), "the same block device: {shown}");

    // The writer goes on: two more files after the reattach.
    files_at_least(before + 2);
    let entry = ublk_entry(&lu.d, &id);
    assert_eq!(
        (entry["state"].as_str(), entry["claimed_by"].as_str(), entry["name"].as_str()),
        (Some("live"), Some(DEV), Some(DEV)),
        "{entry}"
    );
    assert_eq!(entry["pid"].as_u64(), lu.d.pid().map(u64::from), "served by the new daemon: {entry}");
    let refused = lu.d.cli(&["ublk", "remove", &id]).unwrap();
    assert!(!refused.success() && refused.stderr.contains("served by this daemon"), "{refused:?}");

    vm.command(["touch", &stop]).run_ok().unwrap();
    let wrote = writing.wait().unwrap();
    assert!(wrote.success(), "a write failed across the daemon's restart: {wrote:?}");
    let written: BTreeMap<String, String> = sums(&wrote.stdout);
    assert!(written.len() > before, "files written after the restart: {} of {}", written.len() - before, written.len());

    // Remounted with nothing cached, every file has the checksum it was
    // written with, and the filesystem is clean.
    let list: String = written.iter().map(|(path, sum)| format!("{sum}  {path}\n")).collect();
    vm.write_file("/tmp/sums-restart", list.as_bytes()).unwrap();
    // Unmounted for real first: the daemon detached its copy of the mount
    // (asserted above), but the harness's `ip netns exec` made one more
    // for the daemon's wrapper at the restart, and the guest's mounts do
    // not propagate. Left there, it would keep the filesystem alive (no
    // real remount below), and the wrapper's exit after the next kill
    // would unmount it, write to the quiesced device and never end (seen
    // in CI).
    vm.unmount_everywhere(MNT).unwrap();
    let report = lu.sh(&format!(
        "set -e; blockdev --flushbufs {dev}; fsck.ext4 -n -f {dev} >/dev/null\n\
         mount -t ext4 {dev} {MNT}; sha256sum -c /tmp/sums-restart; umount {MNT}"
    ));
    assert_eq!(report.matches(": OK").count(), written.len(), "{report}");
    drop(unmount);

    // Killed again, and started with the device on the other LU: the
    // device left behind has the first LU's size and is not reattached.
    lu.d.kill().unwrap();
    let (dir, iqn) = (lu.d.dir().to_owned(), lu.lio.iqn(1));
    let other = config(&dir, &iqn, &device(vm, DEV, 1, "ublk", "", &lu.portals));
    vm.write_file(lu.d.config_path(), other.as_bytes()).unwrap();
    lu.d.restart().unwrap_or_else(|e| panic!("{e}"));
    let mut events = Events::since_start(&lu.d, DEV);
    let refused = events.wait("ublk_failed", None, PATH_EVENT);
    let (sizes, other_size) = ((LU_MIB * MIB).to_string(), (OTHER_LU_MIB * MIB).to_string());
    assert!(
        refused.contains(&format!("{sizes} bytes")) && refused.contains(&format!("{other_size} bytes")),
        "{refused}"
    );
    let entry = ublk_entry(&lu.d, &id);
    assert_eq!(
        (entry["state"].as_str(), entry["server_alive"].as_bool(), entry["claimed_by"].as_str()),
        (Some("quiesced"), Some(false), None),
        "the device nobody serves: {entry}"
    );
    let removed = lu.d.ok(&["ublk", "remove", &id]).unwrap();
    assert!(removed.contains(&dev), "{removed}");
    vm.sh(&format!("test ! -e /sys/class/ublk-char/ublkc{id} && test ! -e /sys/block/{name}"))
        .run_ok()
        .unwrap_or_else(|e| panic!("{dev} is still there after mpio ublk remove: {e}"));
    // libublk's complaint about a device without its record: never for
    // the daemon's own devices.
    assert!(!lu.d.log().contains("reload json failed"), "{}", lu.d.log());
    let out = lu.d.stop().unwrap();
    assert!(out.success(), "the daemon stops cleanly: {out:?}");
    eprintln!("the restart scenario took {:.1?}", started.elapsed());
}
