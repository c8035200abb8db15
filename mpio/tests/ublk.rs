//! `/dev/ublkbN` for real: the mpio daemon inside the test VM (Debian's
//! 6.12 kernel, ublk_drv), its devices over two paths each to LIO in the
//! same guest (the initiator in its own network namespace, over veth:
//! `testbed::vm::net`), `frontend = "ublk"`. What the kernel's block
//! device shows (size, logical and physical block, write cache, FUA,
//! discard) must be the LU's; ext4 on it must keep 64 MiB of files across
//! a remount with the page cache dropped; a reservation another host
//! holds must refuse a write with EBADE, as on a native disk; the daemon's
//! stop must remove the block devices. Skips (passes, with a message) where VMs cannot run
//! (`mpio_testbed::vm::skip_reason`).

use std::net::SocketAddr;
use std::time::Duration;

use mpio_dsm::Lun;
use mpio_dsm::pr::PrType;
use mpio_testbed::lio::{Lio, LunSpec, TargetSpec, TpgSpec};
use mpio_testbed::vm::{Background, INNER_NETNS, Shared, Vm, VmSpec};
use mpio_tests::pr::{Holder, OTHER_INITIATOR, SharedLu};
use serde_json::Value;

/// Two inner paths for the daemon; nic0 for the host's own initiator (the
/// other host holding a reservation); the mpio binary of this build with
/// its libraries.
static VM: Shared = Shared::new(|| {
    VmSpec::new().memory_mib(1536).nic(1).inner_paths(2).binary(env!("CARGO_BIN_EXE_mpio"), "/usr/sbin/mpio")
});

const MIB: u64 = 1 << 20;
const CONFIG: &str = "/etc/mpio/ublk.toml";
const SOCKET: &str = "/run/mpio/ublk.sock";
/// Commands that move data through TCG (mkfs, 64 MiB of files).
const TOOL: Duration = Duration::from_secs(300);

/// The daemon running in the guest's initiator namespace; killed when
/// dropped, its log printed if the test panics meanwhile.
struct GuestDaemon<'vm> {
    vm: &'vm Vm,
    process: Option<Background<'vm>>,
}

impl<'vm> GuestDaemon<'vm> {
    fn start(vm: &'vm Vm, config: &str) -> GuestDaemon<'vm> {
        vm.sh("mkdir -p /etc/mpio /run/mpio").run_ok().unwrap();
        vm.write_file(CONFIG, config.as_bytes()).unwrap();
        let process = vm
            .command(["mpio", "daemon", "--config", CONFIG])
            .netns(INNER_NETNS)
            .timeout(Duration::from_secs(900))
            .spawn()
            .unwrap();
        // Stopgap until the guest daemon harness (testbed) awaits the
        // daemon's READY=1: the guest has no tool to receive it, so the
        // control socket is looked for instead, with a deadline.
        vm.sh(&format!("until [ -S {SOCKET} ]; do sleep 0.05; done"))
            .timeout(Duration::from_secs(60))
            .run_ok()
            .unwrap_or_else(|e| panic!("the daemon's control socket: {e}\n{:?}", process.output()));
        GuestDaemon { vm, process: Some(process) }
    }

    /// `mpio ARGS` against this daemon, which must succeed.
    fn cli(&self, args: &[&str]) -> String {
        let mut argv = vec!["mpio", "--socket", SOCKET];
        argv.extend_from_slice(args);
        self.vm.command(argv).timeout(Duration::from_secs(180)).run_ok().unwrap_or_else(|e| panic!("{e}"))
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        serde_json::from_str(&self.cli(&args)).unwrap()
    }

    /// SIGTERM, and the daemon's exit status and log.
    fn stop(mut self) -> mpio_testbed::cmd::Outcome {
        let p = self.process.take().unwrap();
        p.signal(15).unwrap();
        p.wait_timeout(Duration::from_secs(120)).unwrap()
    }
}

impl Drop for GuestDaemon<'_> {
    fn drop(&mut self) {
        if let Some(p) = &self.process
            && std::thread::panicking()
        {
            let (out, err) = p.output();
            let dmesg = self.vm.sh("dmesg | tail -30").run().map(|o| o.stdout).unwrap_or_default();
            eprintln!("--- the guest daemon's output:\n{out}{err}\n--- the guest's kernel log:\n{dmesg}");
        }
    }
}

fn config(iqn: &str, portals: &[SocketAddr]) -> String {
    let paths = |d: &str| {
        portals
            .iter()
            .enumerate()
            .map(|(i, p)| format!("[[device.path]]\nname = \"{d}p{i}\"\nportal = \"{p}\"\n"))
            .collect::<String>()
    };
    format!(
        r#"initiator = "iqn.2026-12.org.mpio:ublk-test"

[daemon]
control_socket = "{SOCKET}"

[metrics]
enabled = false

[nbd]
socket = ""

[[target]]
name = "lio"
iqn = "{iqn}"

[[device]]
name = "d512"
target = "lio"
lun = 0
policy = "round-robin"
frontend = "ublk"
{}
[[device]]
name = "d4k"
target = "lio"
lun = 1
policy = "round-robin"
frontend = "ublk"
{}"#,
        paths("d512"),
        paths("d4k")
    )
}

/// `/sys/block/NAME/FILE` of block device `dev` (`/dev/ublkb0`).
fn sysfs(vm: &Vm, dev: &str, file: &str) -> String {
    let name = dev.trim_start_matches("/dev/");
    vm.command(["cat", &format!("/sys/block/{name}/{file}")]).run_ok().unwrap().trim().to_owned()
}

/// ext4 on `dev`: `mib` MiB of random files written from tmpfs, synced,
/// unmounted, the page cache dropped, mounted again and compared with
/// the sources; `fsck -n` clean. Returns sha256sum's report.
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
sync
umount $mnt
echo 3 > /proc/sys/vm/drop_caches
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
    let Some(vm) = VM.get_or_skip() else { return };
    let portals: Vec<SocketAddr> =
        vm.inner_paths().iter().map(|p| SocketAddr::new(p.target_addr.into(), 3260)).collect();
    let host_portal = vm.portal(0, 0, 3260);
    let lio = Lio::builder()
        .target(
            TargetSpec::new("ublk").tpg(
                portals
                    .iter()
                    .chain([&host_portal])
                    .fold(TpgSpec::new(), |t, p| t.portal(*p))
                    // LIO's default fileio LU: write-through, 512-byte blocks.
                    .lun(LunSpec::fileio(128 * MIB))
                    // Write-back with FUA, 4096-byte blocks, UNMAP.
                    .lun(LunSpec::fileio(64 * MIB).block_size(4096).write_cache(true).thin_provisioning()),
            ),
        )
        .start(vm)
        .unwrap();
    let daemon = GuestDaemon::start(vm, &config(&lio.iqn(1), &portals));

    // `device wait` returns once every path is up and the block device is there.
    for d in ["d512", "d4k"] {
        daemon.cli(&["device", "wait", d, "--all-paths", "--timeout", "120s"]);
    }
    let block = |d: &str| -> String {
        let v = daemon.json(&["device", "show", d]);
        v["block_device"].as_str().unwrap_or_else(|| panic!("{d} has no block device: {v}")).to_owned()
    };
    let (b512, b4k) = (block("d512"), block("d4k"));
    assert_ne!(b512, b4k);
    assert!(b512.starts_with("/dev/ublkb") && b4k.starts_with("/dev/ublkb"), "{b512} {b4k}");
    let listed = daemon.json(&["device", "list"]);
    let listed: Vec<&str> = listed.as_array().unwrap().iter().filter_map(|d| d["block_device"].as_str()).collect();
    assert_eq!(listed.len(), 2, "device list names both block devices: {listed:?}");
    let events = daemon.cli(&["events", "--device", "d512"]);
    assert!(events.contains("ublk_created") && events.contains(&b512), "{events}");
    let status = daemon.cli(&["status"]);
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
    let paths = daemon.json(&["path", "list", "d512"]);
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
    let lu = SharedLu { target: lio.iqn(1), portals: vec![host_portal], lun: Lun::from_number(0).unwrap() };
    let holder = rt.block_on(Holder::reserve(&lu, OTHER_INITIATOR, 0x7e57, PrType::WRITE_EXCLUSIVE));
    let write = vm.sh(&format!("dd if=/dev/zero of={b512} bs=4096 count=1 oflag=direct conv=notrunc")).run().unwrap();
    let read = vm.sh(&format!("dd if={b512} of=/dev/null bs=4096 count=1 iflag=direct")).run().unwrap();
    rt.block_on(holder.release());
    assert!(!write.success() && write.stderr.contains("Invalid exchange"), "{write:?}");
    assert!(read.success(), "{read:?}");

    // Stopping the daemon removes the block devices.
    let out = daemon.stop();
    assert!(out.success(), "the daemon stops cleanly: {out:?}");
    for dev in [&b512, &b4k] {
        let name = dev.trim_start_matches("/dev/");
        let gone = vm.sh(&format!("test ! -e /sys/block/{name}")).run().unwrap();
        assert!(gone.success(), "{dev} is removed at stop");
    }
    lio.stop().unwrap();
}
