//! The tour of `/dev/ublkbN` inside a VM (`./scripts/demo.sh --vm`, the
//! `mpio-vm-demo` binary): for a newcomer whose own kernel has no ublk
//! driver. In a VM booted with Debian's kernel ([`crate::vm`]): LIO with
//! one logical unit behind two portals, each on a path of its own (veth
//! pairs between network namespaces, so a path's failure is a real one),
//! `mpio daemon` serving the LU as `/dev/ublkbN`, ext4 on it with known
//! files, a path's link taken down while files are written, the daemon
//! killed and started again while files are written, and every file
//! checked after a remount and `fsck -n`.
//!
//! [`run`] narrates on `out` what it does and shows what mpio prints;
//! `mpio/tests/guest/demo.rs` runs it in the shared test VM and checks
//! the narration, so the demo's claims are tested.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::daemon::{self, GUEST_MPIO, GuestDaemon};
use crate::error::{Error, Result};
use crate::files;
use crate::lio::{Lio, LunSpec, TargetSpec, TpgSpec};
use crate::vm::fault::LinkDown;
use crate::vm::{Awaited, Background, Vm};

/// The device's name in the daemon.
pub const DEVICE: &str = "demo0";

/// Each file the tour writes, in MiB.
const FILE_MIB: u64 = 4;

/// Guest commands that move data through TCG, and path events: a hang
/// guard, not an expectation.
const SLOW: Duration = Duration::from_secs(300);

/// What the tour sets up.
#[derive(Debug, Clone)]
pub struct TourOptions {
    /// LIO's port on both portals.
    pub port: u16,
    /// The LU's size.
    pub lu_mib: u64,
    /// Files written before the fault, 4 MiB each.
    pub files: usize,
}

impl Default for TourOptions {
    fn default() -> TourOptions {
        TourOptions { port: 3260, lu_mib: 256, files: 8 }
    }
}

/// Runs the tour in `vm` (two inner paths, mpio installed at
/// [`crate::daemon::GUEST_MPIO`]), narrating on `out`.
pub fn run(vm: &Vm, o: &TourOptions, out: &mut dyn Write) -> Result<()> {
    let started = Instant::now();
    let mut t = Tour { vm, out };
    let portals: Vec<SocketAddr> =
        vm.inner_paths().iter().map(|p| SocketAddr::new(IpAddr::V4(p.target_addr), o.port)).collect();
    if portals.len() < 2 {
        return Err(Error::Environment("the tour needs a VM with two inner paths".into()));
    }

    t.step(1, "The SAN: the Linux kernel's own iSCSI target (LIO), one LU behind two portals")?;
    let mut tpg = TpgSpec::new();
    for p in &portals {
        tpg = tpg.portal(*p);
    }
    let lio = Lio::builder().target(TargetSpec::new("demo").tpg(tpg.lun(LunSpec::fileio(o.lu_mib << 20)))).start(vm)?;
    let iqn = lio.iqn(1);
    t.say(&format!("target {iqn}, a {} MiB fileio LU, portals {} and {}", o.lu_mib, portals[0], portals[1]))?;

    t.step(2, "The daemon: mpio daemon, one device over both paths, round robin, served as /dev/ublkbN")?;
    let mut d = GuestDaemon::builder(vm).in_initiator_netns().start(|dir| config(vm, dir, &iqn, &portals))?;
    t.say(&format!("config: {}", d.config_path()))?;
    d.wait_device(DEVICE, true, SLOW)?;
    t.show("mpio status", &d.ok(&["status"])?)?;
    t.show(&format!("mpio path list {DEVICE}"), &d.ok(&["path", "list", DEVICE])?)?;
    let dev = d.json(&["device", "show", DEVICE])?["block_device"]
        .as_str()
        .ok_or_else(|| Error::Environment("the device shows no block device".into()))?
        .to_owned();
    let name = dev.trim_start_matches("/dev/");
    let geometry = t.sh(&format!(
        "echo \"$(( $(cat /sys/block/{name}/size) / 2048 )) MiB, logical block $(cat \
         /sys/block/{name}/queue/logical_block_size), write cache: $(cat /sys/block/{name}/queue/write_cache)\""
    ))?;
    t.say(&format!("{dev}: {}", geometry.trim()))?;

    t.step(3, &format!("A filesystem on {dev}: ext4, {} files of 4 MiB, each with its checksum", o.files))?;
    let mnt = "/mnt/mpio-demo";
    t.sh(&format!("mkfs.ext4 -q -F {dev} && mkdir -p {mnt} && mount {dev} {mnt}"))?;
    let mut sums = t.sh(&files::writer(mnt, 1, o.files, FILE_MIB))?;
    t.show(&format!("mount | grep {dev}"), &t.sh(&format!("mount | grep {dev}"))?)?;

    t.step(4, "A path fails while files are written: p1's link goes down")?;
    let mut events = d.command([GUEST_MPIO, "--socket", &d.socket(), "events", "--follow", "--device", DEVICE]);
    events = events.timeout(Duration::from_secs(3600));
    let feed = events.spawn()?;
    let writing = vm.sh(&files::writer(mnt, o.files + 1, o.files, FILE_MIB)).timeout(SLOW).spawn()?;
    let link = LinkDown::initiator(vm, &vm.inner_path(0).initiator_if)?;
    t.say(&format!("ip link set {} down (the initiator's end of p1)", vm.inner_path(0).initiator_if))?;
    await_line(&feed, "path_failed", "p1")?;
    let written = writing.wait_timeout(SLOW)?;
    if !written.success() {
        return Err(Error::Environment(format!("a write failed while p1 was down: {}", written.stderr.trim())));
    }
    sums.push_str(&written.stdout);
    t.say(&format!("{} more files written while p1 was down, without an error", o.files))?;
    t.show(&format!("mpio path list {DEVICE}"), &d.ok(&["path", "list", DEVICE])?)?;
    link.restore()?;
    t.say("link up again: p1 reconnects, passes probation and carries I/O again")?;
    await_line(&feed, "path_ready", "p1")?;
    d.wait_device(DEVICE, true, SLOW)?;
    let (seen, _) = feed.output();
    t.show(&format!("mpio events --follow --device {DEVICE}"), &seen)?;
    drop(feed);

    t.step(5, "The daemon is killed (kill -9) while files are written, and started again")?;
    let writing = vm.sh(&files::writer(mnt, 2 * o.files + 1, o.files, FILE_MIB)).timeout(SLOW).spawn()?;
    if writing.wait_output(SLOW, |out, _| !out.is_empty())? != Awaited::Matched {
        return Err(Error::Environment(format!("the writer wrote nothing: {:?}", writing.output())));
    }
    let old_pid = d.pid().unwrap_or_default();
    d.kill()?;
    t.sh(&format!("test -e /sys/block/{name}"))?;
    t.say(&format!("kill -9 {old_pid}: no daemon now; {dev} stays, its I/O waits in the kernel (ublk user recovery)"))?;
    d.restart()?;
    let socket = d.socket();
    let argv = [GUEST_MPIO, "--socket", &socket, "events", "--follow", "--last", "100000", "--device", DEVICE];
    let feed = d.command(argv).timeout(Duration::from_secs(3600)).spawn()?;
    await_line(&feed, "ublk_reattached", "-")?;
    let written = writing.wait_timeout(SLOW)?;
    if !written.success() {
        return Err(Error::Environment(format!("a write failed across the restart: {}", written.stderr.trim())));
    }
    sums.push_str(&written.stdout);
    t.say(&format!(
        "mpio daemon again (pid {}): it found {dev} and took it over; the writer paused and wrote its {} files \
         without an error",
        d.pid().unwrap_or_default(),
        o.files
    ))?;
    let (seen, _) = feed.output();
    let ublk_events: String = seen.lines().filter(|l| l.contains(" ublk_")).map(|l| format!("{l}\n")).collect();
    t.show(&format!("mpio events --device {DEVICE} | grep ublk_"), &ublk_events)?;
    drop(feed);

    t.step(6, "Every file checked: unmount, fsck -n, mount again with the page cache dropped, sha256sum -c")?;
    vm.write_file("/tmp/mpio-demo.sums", sums.as_bytes())?;
    // Also the copy `ip netns exec` made for the restarted daemon's
    // wrapper (the VM's mounts do not propagate): a real unmount, so the
    // mount below reads the disk again.
    vm.unmount_everywhere(mnt)?;
    t.sh(&format!("fsck.ext4 -n -f {dev} >/dev/null && echo 3 > /proc/sys/vm/drop_caches"))?;
    t.say("fsck.ext4 -n: clean")?;
    let check = t.sh(&format!("mount {dev} {mnt} && sha256sum -c /tmp/mpio-demo.sums; umount {mnt}"))?;
    let ok = check.matches(": OK").count();
    t.say(&format!("{ok} of {} files read back identical", 3 * o.files))?;
    if ok != 3 * o.files {
        return Err(Error::Environment(format!("files differ after the fault:\n{check}")));
    }
    t.show(&format!("mpio device show {DEVICE}"), &d.ok(&["device", "show", DEVICE])?)?;

    t.step(7, "What to try next")?;
    for line in [
        "on a machine whose kernel has ublk_drv (Linux 6.0+, modprobe ublk_drv): frontend = \"ublk\" in a [[device]]",
        "  of /etc/mpio/mpio.toml (mpio/mpio.example.toml explains every key), then mpio daemon",
        "./scripts/demo.sh: policies, failover, metrics and the NBD export against tgtd on this machine",
        "target/debug/mpio-vm run 'SCRIPT': a shell script in a fresh VM of this kind (Debian's kernel, LIO)",
    ] {
        t.say(line)?;
    }
    drop(d);
    drop(lio);
    t.say(&format!("the tour took {:.0?}", started.elapsed()))?;
    Ok(())
}

/// The daemon's configuration: device [`DEVICE`] on LUN 0 of `iqn`,
/// round robin over a path per portal.
fn config(vm: &Vm, dir: &str, iqn: &str, portals: &[SocketAddr]) -> String {
    let device = "policy = \"round-robin\"\n\n[device.timers]\nreconnect_max = \"1s\"";
    format!(
        "{}{}{}",
        daemon::config::head(dir, "iqn.2026-12.org.mpio:demo", "info", "60s"),
        daemon::config::target("san", iqn, ""),
        daemon::config::device(vm, DEVICE, "san", 0, "ublk", device, portals)
    )
}

/// Waits for the event `kind` of `path` on an `mpio events --follow` feed.
fn await_line(feed: &Background<'_>, kind: &str, path: &str) -> Result<()> {
    let is = |l: &str| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(2) == Some(&path) && f.get(3) == Some(&kind)
    };
    match feed.wait_output(SLOW, |out, _| out.lines().any(is))? {
        Awaited::Matched => Ok(()),
        _ => Err(Error::Environment(format!("no event {kind} of {path} within {SLOW:?}: {}", feed.output().0))),
    }
}

fn narrating(source: std::io::Error) -> Error {
    Error::Io { context: "writing the tour's narration".into(), source }
}

struct Tour<'a> {
    vm: &'a Vm,
    out: &'a mut dyn Write,
}

impl Tour<'_> {
    fn step(&mut self, n: u32, title: &str) -> Result<()> {
        writeln!(self.out, "\n== {n}. {title}").map_err(narrating)
    }

    fn say(&mut self, line: &str) -> Result<()> {
        writeln!(self.out, "   {line}").map_err(narrating)
    }

    /// `what` and its output, indented.
    fn show(&mut self, what: &str, output: &str) -> Result<()> {
        writeln!(self.out, "   $ {what}").map_err(narrating)?;
        for l in output.lines() {
            writeln!(self.out, "     {l}").map_err(narrating)?;
        }
        Ok(())
    }

    /// A guest script that must succeed; its stdout.
    fn sh(&self, script: &str) -> Result<String> {
        self.vm.sh(script).timeout(SLOW).run_ok()
    }
}
