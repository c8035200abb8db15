//! The VM, LIO, and the four stacks on one LU.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mpio_testbed::daemon::{GUEST_MPIO, GuestDaemon, config};
use mpio_testbed::lio::{Lio, LunSpec, TargetSpec, TpgSpec};
use mpio_testbed::vm::{Background, Vm, VmSpec};

use crate::Options;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const MIB: u64 = 1 << 20;
const PORT: u16 = 3260;
const PORTALS: [&str; 2] = ["127.0.0.1", "127.0.0.2"];
const NULL_SIZE: u64 = 1024 * MIB;
/// In guest memory (tmpfs), pre-filled so that reads find pages.
const FILEIO_SIZE: u64 = 256 * MIB;
/// rublk's device number (mpio's daemon takes the first free one, 0).
const RUBLK_ID: u32 = 7;
const NBD: &str = "/dev/nbd0";
const KERNEL_INITIATOR: &str = "iqn.2026-11.org.mpio:bench-kernel";
const MPIO_INITIATOR: &str = "iqn.2026-11.org.mpio:bench-mpio";
/// Setup steps that move data or log in (TCG is slow).
const STEP: Duration = Duration::from_secs(180);

/// The LU under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lu {
    /// rd_mcp with `rd_nullio=1`: the target does no work per byte.
    Null,
    /// fileio on the guest's tmpfs.
    Fileio,
}

impl Lu {
    fn lun(self) -> u32 {
        match self {
            Lu::Null => 0,
            Lu::Fileio => 1,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Lu::Null => "rd_mcp null",
            Lu::Fileio => "fileio on tmpfs",
        }
    }

    /// Bytes fio may address.
    fn size(self) -> u64 {
        match self {
            Lu::Null => NULL_SIZE,
            Lu::Fileio => FILEIO_SIZE,
        }
    }
}

/// A block device under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Ublk,
    Nbd,
    Kernel,
    Rublk,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [Kind::Ublk, Kind::Nbd, Kind::Kernel, Kind::Rublk];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Ublk => "ublk",
            Kind::Nbd => "nbd",
            Kind::Kernel => "kernel",
            Kind::Rublk => "rublk-null",
        }
    }
}

/// One stack: its block device and the process that serves it, if any.
#[derive(Debug, Clone)]
pub(crate) struct Stack {
    pub(crate) kind: Kind,
    pub(crate) device: String,
    pub(crate) server_pid: Option<u32>,
}

/// The stacks of one LU, and what keeps them up.
pub(crate) struct Stacks<'vm> {
    pub(crate) list: Vec<Stack>,
    /// Bytes fio addresses on each.
    pub(crate) size: u64,
    daemon: GuestDaemon<'vm>,
}

/// A booted VM with LIO and the kernel initiator logged in.
pub(crate) struct Bench<'vm> {
    pub(crate) vm: &'vm Vm,
    lio: Lio<'vm>,
    /// `iscsid -f`, killed with the VM.
    _iscsid: Background<'vm>,
    /// rublk, at its host path (a host program keeps its path).
    rublk: String,
    queues: u16,
    depth: u16,
}

/// Boots the VM with every program the stacks need.
pub(crate) fn boot(o: &Options) -> Result<Vm> {
    let vm = VmSpec::new()
        .memory_mib(2048)
        .cpus(2)
        .host_program("fio")
        .host_program("nbd-client")
        .host_program("iscsiadm")
        .host_program("iscsid")
        .host_program("dmsetup")
        .host_program(&o.rublk)
        .module("iscsi_tcp")
        .module("sd_mod")
        .module("dm_multipath")
        .module("dm_round_robin")
        .boot()?;
    eprintln!("{} booted in {:.1?}", vm.name(), vm.boot_time());
    vm.install_binary(Path::new(&o.mpio), GUEST_MPIO)?;
    Ok(vm)
}

impl<'vm> Bench<'vm> {
    /// LIO with both LUs on both portals, the fileio LU filled, and the
    /// kernel initiator logged in through both portals with a
    /// dm-multipath device per LU.
    pub(crate) fn start(vm: &'vm Vm, o: &Options) -> Result<Bench<'vm>> {
        let mut tpg = TpgSpec::new()
            // As bench/nbd.sh tunes tgtd: large PDUs and bursts, unsolicited data.
            .param("MaxRecvDataSegmentLength", 262144)
            .param("MaxXmitDataSegmentLength", 262144)
            .param("MaxBurstLength", 1048576)
            .param("FirstBurstLength", 262144)
            .param("InitialR2T", "No")
            .lun(LunSpec::null(NULL_SIZE))
            .lun(LunSpec::fileio(FILEIO_SIZE));
        for p in portals() {
            tpg = tpg.portal(p);
        }
        let lio = Lio::builder().target(TargetSpec::new("bench").tpg(tpg)).start(vm)?;
        let file = lio.backing_file(1, 1, Lu::Fileio.lun()).ok_or("the fileio LU has no backing file")?;
        vm.sh(&format!("dd if=/dev/zero of={file} bs=1M count={} conv=notrunc status=none", FILEIO_SIZE / MIB))
            .timeout(STEP)
            .run_ok()?;
        let iscsid = kernel_initiator(vm, &lio.iqn(1))?;
        Ok(Bench { vm, lio, _iscsid: iscsid, rublk: o.rublk.clone(), queues: o.queues, depth: o.depth })
    }

    /// What the run is, for the first lines of the report.
    pub(crate) fn banner(&self) -> String {
        let fio = self.vm.command(["fio", "--version"]).run_ok().unwrap_or_default();
        let kernel = self.vm.command(["uname", "-r"]).run_ok().unwrap_or_default();
        format!(
            "# mpio-vm-bench: {} (TCG, 2 vCPUs), kernel {}, {}; LIO target {} on {} and {} (port {PORT});\n\
             # ublk: mpio ublk_queues = {q}, ublk_depth = {d}; rublk null -q {q} -d {d}",
            self.vm.name(),
            kernel.trim(),
            fio.trim(),
            self.lio.iqn(1),
            PORTALS[0],
            PORTALS[1],
            q = self.queues,
            d = self.depth,
        )
    }

    /// The stacks on `lu`: a fresh mpio daemon (a ublk and an NBD device
    /// on the LU), nbd-client, rublk, and the kernel's dm device.
    pub(crate) fn stacks(&self, lu: Lu) -> Result<Stacks<'vm>> {
        let vm = self.vm;
        let config = |dir: &str| mpio_config(vm, dir, &self.lio.iqn(1), lu.lun(), self.queues, self.depth);
        let daemon = GuestDaemon::builder(vm).start(config)?;
        for dev in ["u", "n"] {
            daemon.wait_device(dev, true, Duration::from_secs(120))?;
        }
        let shown = daemon.json(&["device", "show", "u"])?;
        let ublk = shown["block_device"].as_str().ok_or_else(|| format!("device u has no block device: {shown}"))?;
        let pid = daemon.pid().ok_or("the daemon does not run")?;
        // The configured queues reached the driver (else the comparison
        // with rublk's would be of unlike devices). The hardware queue's
        // tags, not nr_requests: a one-queue device gets mq-deadline,
        // whose nr_requests is twice the depth, until it is set to none
        // below.
        let name = ublk.trim_start_matches("/dev/");
        let got = vm.sh(&format!("ls /sys/block/{name}/mq | wc -l; cat /sys/block/{name}/mq/0/nr_tags")).run_ok()?;
        let want = format!("{}\n{}\n", self.queues, self.depth);
        if got.split_whitespace().ne(want.split_whitespace()) {
            return Err(format!("{ublk}: queues and depth {got:?}, configured {want:?}").into());
        }
        vm.sh(&format!("nbd-client -N n -u {} {NBD}", daemon.nbd_socket())).timeout(STEP).run_ok()?;
        vm.command([
            self.rublk.as_str(),
            "add",
            "null",
            "-n",
            &RUBLK_ID.to_string(),
            "-q",
            &self.queues.to_string(),
            "-d",
            &self.depth.to_string(),
        ])
        .timeout(STEP)
        .run_ok()?;
        let rublk_pid: u32 =
            vm.command(["pidof", "rublk"]).run_ok()?.split_whitespace().next().unwrap_or("").parse()?;
        let list = vec![
            Stack { kind: Kind::Ublk, device: ublk.to_owned(), server_pid: Some(pid) },
            Stack { kind: Kind::Nbd, device: NBD.into(), server_pid: Some(pid) },
            Stack { kind: Kind::Kernel, device: format!("/dev/mapper/{}", dm_name(lu)), server_pid: None },
            Stack { kind: Kind::Rublk, device: format!("/dev/ublkb{RUBLK_ID}"), server_pid: Some(rublk_pid) },
        ];
        // The schedulers ublk and nbd get by default differ from sd's:
        // none everywhere, so that no stack pays for one the others skip.
        let mut script = String::from("set -e\n");
        for s in &list {
            script.push_str(&format!(
                "b=$(basename $(readlink -f {0})); f=/sys/block/$b/queue/scheduler; \
                 [ ! -w $f ] || echo none > $f || echo \"$b keeps its scheduler\" >&2\n",
                s.device
            ));
        }
        script.push_str("for f in /sys/block/sd*/queue/scheduler; do echo none > $f; done\n");
        vm.sh(&script).run_ok()?;
        Ok(Stacks { list, size: lu.size(), daemon })
    }

    /// Takes the stacks of one LU down (the kernel's stay for the next).
    pub(crate) fn release(&self, stacks: Stacks<'vm>) -> Result<()> {
        let Stacks { daemon, .. } = stacks;
        self.vm.command(["nbd-client", "-d", NBD]).run_ok()?;
        self.vm.command([self.rublk.as_str(), "del", "-n", &RUBLK_ID.to_string()]).timeout(STEP).run_ok()?;
        let mut daemon = daemon;
        let out = daemon.stop()?;
        if !out.success() {
            return Err(format!("the daemon did not stop cleanly: {out:?}").into());
        }
        Ok(())
    }

    /// Logs the kernel initiator out and removes LIO's configuration.
    pub(crate) fn finish(self) -> Result<()> {
        for lu in [Lu::Null, Lu::Fileio] {
            self.vm.command(["dmsetup", "remove", "--noudevsync", dm_name(lu)]).run_ok()?;
        }
        self.vm.command(["iscsiadm", "-m", "node", "--logoutall=all"]).timeout(STEP).run_ok()?;
        self.lio.stop()?;
        Ok(())
    }
}

fn portals() -> [SocketAddr; 2] {
    PORTALS.map(|a| SocketAddr::new(a.parse().expect("a literal address"), PORT))
}

fn dm_name(lu: Lu) -> &'static str {
    match lu {
        Lu::Null => "kernel-null",
        Lu::Fileio => "kernel-fileio",
    }
}

/// The daemon's configuration: device `u` (ublk) and `n` (NBD) on `lun`,
/// each over both portals, round robin, offering what open-iscsi offers
/// (256 KiB segments and first burst, 1 MiB bursts: LIO then takes the
/// smaller of both sides, the same for both initiators).
fn mpio_config(vm: &Vm, dir: &str, iqn: &str, lun: u32, queues: u16, depth: u16) -> String {
    let negotiated = "max_recv_data_segment_length = 262144\nfirst_burst_length = 262144\nmax_burst_length = 1048576\n";
    let mut s = config::head(dir, MPIO_INITIATOR, "warn", "60s") + &config::target("lio", iqn, negotiated);
    for (name, frontend) in [("u", "ublk"), ("n", "nbd")] {
        let mut extra = "policy = \"round-robin\"".to_string();
        if frontend == "ublk" {
            extra.push_str(&format!("\nublk_queues = {queues}\nublk_depth = {depth}"));
        }
        s.push_str(&config::device(vm, name, "lio", lun, frontend, &extra, &portals()));
    }
    s
}

/// Starts `iscsid`, logs in to `iqn` through both portals, and builds a
/// dm-multipath device per LU over its two SCSI disks.
fn kernel_initiator<'vm>(vm: &'vm Vm, iqn: &str) -> Result<Background<'vm>> {
    vm.sh(&format!(
        "mkdir -p /etc/iscsi /run/lock/iscsi /var/lib/iscsi\n\
         echo InitiatorName={KERNEL_INITIATOR} > /etc/iscsi/initiatorname.iscsi\n\
         touch /etc/iscsi/iscsid.conf"
    ))
    .run_ok()?;
    let iscsid = vm.command(["iscsid", "-f"]).timeout(Duration::from_secs(24 * 3600)).spawn()?;
    // iscsiadm retries its connection to iscsid for a while by itself.
    let mut script = String::from("set -e\n");
    for p in portals() {
        script.push_str(&format!("iscsiadm -m discovery -t sendtargets -p {p} >/dev/null\n"));
        script.push_str(&format!("iscsiadm -m node -T {iqn} -p {p} --login >/dev/null\n"));
    }
    // Synchronous: the SCSI disks exist when it returns.
    script.push_str("iscsiadm -m session --rescan >/dev/null\n");
    vm.sh(&script).timeout(STEP).run_ok().map_err(|e| format!("open-iscsi: {e}\niscsid: {:?}", iscsid.output()))?;
    for lu in [Lu::Null, Lu::Fileio] {
        let disks =
            vm.sh(&format!("cd /sys/bus/scsi/devices; for d in *:*:*:{}; do ls $d/block; done", lu.lun())).run_ok()?;
        let disks: Vec<&str> = disks.split_whitespace().collect();
        if disks.len() != 2 {
            return Err(format!("LUN {}: expected a SCSI disk per portal, found {disks:?}", lu.lun()).into());
        }
        let dev = |d: &str| -> Result<String> {
            Ok(vm.command(["cat", &format!("/sys/block/{d}/dev")]).run_ok()?.trim().to_owned())
        };
        let (a, b) = (dev(disks[0])?, dev(disks[1])?);
        let sectors = vm.command(["cat", &format!("/sys/block/{}/size", disks[0])]).run_ok()?;
        let sectors = sectors.trim();
        // One priority group, round robin, each path for one request in turn.
        let table = format!("0 {sectors} multipath 0 0 1 1 round-robin 0 2 1 {a} 1 {b} 1");
        vm.command(["dmsetup", "create", "--noudevsync", dm_name(lu), "--table", &table]).run_ok()?;
        vm.command(["dmsetup", "mknodes", dm_name(lu)]).run_ok()?;
    }
    Ok(iscsid)
}
