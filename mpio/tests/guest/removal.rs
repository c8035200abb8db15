//! Scenario 8 (issue 9): a device whose block device is in use is not
//! removed. `/dev/ublkbN` with ext4 mounted: a reload whose file drops the
//! device (and changes the log level) is refused naming the mount, and
//! changes nothing; the filesystem keeps working (files written, remounted,
//! read back); a process holding the device open is named by pid; once
//! nothing holds it the same reload removes it and the block device goes;
//! added again and held open, `mpio reload --force` removes it anyway.
//! The device is served both ways at once (`frontend = ["ublk", "nbd"]`),
//! which `device show`, `status` and the metrics name; and the daemon that
//! serves it has its memory locked and a mount namespace of its own.

use mpio_testbed::vm::Awaited;

use super::ublk_lu::{PATH_EVENT, TOOL};
use super::*;
use mpio_testbed::files::{sums, writer};

const PORT: u16 = 3296;
const MNT: &str = "/mnt/guest-removal";
const DEV: &str = "d0";

/// The daemon's configuration: metrics on (a free port), log `log`, and
/// the device unless `with_device` is false.
fn daemon_config(vm: &Vm, dir: &str, iqn: &str, portals: &[SocketAddr], log: &str, with_device: bool) -> String {
    let devices = if with_device { device(vm, DEV, 0, "[\"ublk\", \"nbd\"]", "", portals) } else { String::new() };
    config(dir, iqn, &devices)
        .replace("[metrics]\nenabled = false", "[metrics]\nlisten = \"127.0.0.1:0\"")
        .replace("log = \"info\"", &format!("log = \"{log}\""))
}

/// The `VmLck:` of process `pid`, in kB.
fn locked_kib(vm: &Vm, pid: u32) -> u64 {
    let status = vm.command(["cat", &format!("/proc/{pid}/status")]).run_ok().unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix("VmLck:")).unwrap_or_else(|| panic!("{status}"));
    line.trim().trim_end_matches("kB").trim().parse().unwrap()
}

#[test]
fn removing_a_mounted_or_open_ublk_device_is_refused_naming_its_holders() {
    let Some(vm) = vm() else { return };
    let _turn = frontend_turn();
    let _log = KernelLogOnPanic(vm);
    let lio = one_lu(vm, "guest-removal", PORT, LunSpec::fileio(64 * MIB));
    let portals = inner_portals(vm, PORT);
    let iqn = lio.iqn(1);
    let d = start_daemon(vm, |dir| daemon_config(vm, dir, &iqn, &portals, "info", true));
    d.wait_device(DEV, true, PATH_EVENT).unwrap_or_else(|e| panic!("{e}"));
    let sh = |script: &str| vm.sh(script).timeout(TOOL).run_ok().unwrap_or_else(|e| panic!("{e}"));

    // Both frontends, named by device show, status and the metrics.
    let v = d.json(&["device", "show", DEV]).unwrap();
    let dev = v["block_device"].as_str().unwrap_or_else(|| panic!("no block device: {v}")).to_owned();
    assert!(dev.starts_with("/dev/ublkb"), "{v}");
    assert_eq!(v["frontends"], serde_json::json!(["ublk", "nbd"]), "{v}");
    assert_eq!(v["export"].as_str(), Some(d.export_uri(DEV).as_str()), "{v}");
    let shown = d.ok(&["device", "show", DEV]).unwrap();
    assert!(shown.contains("ublk, nbd") && shown.contains(&dev), "{shown}");
    let status = d.json(&["status"]).unwrap();
    assert_eq!(status["devices"][0]["block_device"].as_str(), Some(dev.as_str()), "{status}");
    let url = status["metrics"].as_str().unwrap_or_else(|| panic!("no metrics: {status}")).to_owned();
    let metrics = d.command(["wget", "-qO-", &url]).run_ok().unwrap();
    for sample in [
        format!(r#"mpio_device_frontend_info{{frontend="ublk",block_device="{dev}",device="{DEV}"}} 1"#),
        format!(r#"mpio_device_frontend_info{{frontend="nbd",block_device="",device="{DEV}"}} 1"#),
    ] {
        assert!(metrics.lines().any(|l| l == sample), "no {sample} in:\n{metrics}");
    }

    // Memory locked; a mount namespace of its own: not init's, and not
    // the one `ip netns exec` gave the wrapper that started it.
    let pid = d.pid().unwrap();
    assert!(locked_kib(vm, pid) > 0, "the daemon serving {dev} has locked memory");
    let ns = |pid: &str| sh(&format!("readlink /proc/{pid}/ns/mnt")).trim().to_owned();
    let parent = sh(&format!("awk '/^PPid:/ {{print $2}}' /proc/{pid}/status")).trim().to_owned();
    let (own, of_parent, of_init) = (ns(&pid.to_string()), ns(&parent), ns("1"));
    assert!(own != of_parent && own != of_init, "daemon {own}, its parent {of_parent}, init {of_init}");

    // ext4 mounted, with known files.
    let files = format!("{MNT}/files");
    sh(&format!("set -e; mkfs.ext4 -q -F {dev}; mkdir -p {MNT}; mount -t ext4 {dev} {MNT}"));
    struct Unmount(&'static Vm);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = self.0.sh(&format!("umount {MNT} 2>/dev/null")).run();
        }
    }
    let _unmount = Unmount(vm);
    let mut written = sums(&sh(&writer(&files, 1, 4, 4)));

    // A file without the device (and another log level): refused whole.
    let drop_device = daemon_config(vm, d.dir(), &iqn, &portals, "debug", false);
    vm.write_file(d.config_path(), drop_device.as_bytes()).unwrap();
    let refused = d.cli(&["reload"]).unwrap();
    assert!(!refused.success(), "{refused:?}");
    let e = refused.stderr;
    assert!(e.contains("reload refused, nothing changed") && e.contains(&format!("device {DEV} is in use")), "{e}");
    assert!(e.contains(&format!("{dev} mounted on {MNT}")), "the refusal names the mount: {e}");
    assert!(e.contains("unmount") && e.contains("mpio reload --force"), "the refusal says the ways out: {e}");
    assert_eq!(d.ok(&["log", "level"]).unwrap().trim(), "log level: info", "the log level did not change either");
    assert_eq!(d.json(&["device", "show", DEV]).unwrap()["block_device"].as_str(), Some(dev.as_str()));

    // The device still works: more files, a remount, every file read back.
    written.extend(sums(&sh(&writer(&files, 5, 2, 4))));
    sh(&format!("set -e; umount {MNT}; mount -t ext4 {dev} {MNT}"));
    let check: String = written.iter().map(|(path, sum)| format!("{sum}  {path}\n")).collect();
    let report = vm.sh("sha256sum -c").stdin(check).timeout(TOOL).run_ok().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.matches(": OK").count(), 6, "{report}");
    sh(&format!("umount {MNT}"));

    // Open by a process: named by pid and name.
    let holder = vm.sh(&format!("exec 3<{dev}; echo $$; exec sleep 3600")).timeout(TOOL).spawn().unwrap();
    let got = holder.wait_output(PATH_EVENT, |out, _| out.ends_with('\n')).unwrap();
    assert_eq!(got, Awaited::Matched, "{:?}", holder.output());
    let holder_pid: u32 = holder.output().0.trim().parse().unwrap();
    let refused = d.cli(&["reload"]).unwrap();
    assert!(!refused.success(), "{refused:?}");
    assert!(refused.stderr.contains(&format!("{dev} open by pid {holder_pid} (sleep)")), "{}", refused.stderr);
    assert!(!refused.stderr.contains("mounted on"), "unmounted: {}", refused.stderr);
    holder.kill().unwrap();

    // Nothing holds it: the same file applies, and the block device goes.
    let out = d.ok(&["reload"]).unwrap();
    assert!(out.contains(&format!("device {DEV} removed")) && out.contains("log debug"), "{out}");
    let name = dev.trim_start_matches("/dev/");
    sh(&format!("test ! -e /sys/block/{name} && test ! -e {dev}"));
    assert_eq!(d.json(&["device", "list"]).unwrap(), serde_json::json!([]));

    // Forced: the device added again, held open, and removed with --force
    // while the holder still has it. The reload answers at once (the
    // driver's asynchronous delete), not when the holder lets go.
    vm.write_file(d.config_path(), daemon_config(vm, d.dir(), &iqn, &portals, "debug", true).as_bytes()).unwrap();
    assert!(d.ok(&["reload"]).unwrap().contains(&format!("device {DEV} added")));
    d.wait_device(DEV, true, PATH_EVENT).unwrap_or_else(|e| panic!("{e}"));
    let dev = d.json(&["device", "show", DEV]).unwrap()["block_device"].as_str().unwrap().to_owned();
    let name = dev.trim_start_matches("/dev/").to_owned();
    let holder = vm.sh(&format!("exec 3<{dev}; echo $$; exec sleep 3600")).timeout(TOOL).spawn().unwrap();
    assert_eq!(holder.wait_output(PATH_EVENT, |out, _| out.ends_with('\n')).unwrap(), Awaited::Matched);
    vm.write_file(d.config_path(), drop_device.as_bytes()).unwrap();
    let socket = d.socket();
    let out = d.command([GUEST_MPIO, "--socket", &socket, "reload", "--force"]).timeout(TOOL).run().unwrap();
    assert!(out.success() && out.stdout.contains(&format!("device {DEV} removed")), "{out:?}");
    let still = holder.wait_output(Duration::ZERO, |_, _| false).unwrap();
    assert_eq!(still, Awaited::Deadline, "the holder still runs, its device gone under it");
    sh(&format!("while [ -e /sys/block/{name} ]; do sleep 0.1; done"));
    assert_eq!(d.json(&["device", "list"]).unwrap(), serde_json::json!([]));
    holder.kill().unwrap();
}
