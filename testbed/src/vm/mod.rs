//! Test VMs: a real Linux kernel (Debian's 6.12) under qemu, with the
//! kernel's own iSCSI target (LIO, see [`crate::lio`]), ublk_drv, nbd,
//! netem and iptables, driven from Rust tests step by step.
//!
//! ```no_run
//! use std::time::Duration;
//! use mpio_testbed::vm::VmSpec;
//!
//! let vm = VmSpec::new().nic(2).nic(1).host_program("fio").boot()?;
//! let out = vm.sh("uname -r; echo oops >&2; exit 3").run()?;
//! assert_eq!(out.status.and_then(|s| s.code()), Some(3));
//! assert_eq!(out.stderr, "oops\n");
//!
//! let fio = vm.command(["fio", "--name=x", "--filename=/dev/nbd0", "--rw=randwrite",
//!                        "--time_based", "--runtime=30"])
//!     .timeout(Duration::from_secs(120))
//!     .spawn()?;                                     // runs while we do other things
//! vm.sh("echo 1 > /proc/sys/vm/drop_caches").run_ok()?;
//! let done = fio.wait()?;                            // or fio.kill()
//!
//! vm.write_file("/tmp/data", b"\x00\x01binary")?;     // copy in and out, binary-safe
//! assert_eq!(vm.read_file("/tmp/data")?, b"\x00\x01binary");
//! let portal = vm.portal(1, 0, 3260);                 // nic1's first guest address, port 3260
//! # Ok::<(), mpio_testbed::Error>(())
//! ```
//!
//! # The API is blocking
//!
//! Every call blocks the calling thread (std threads inside, no async
//! runtime), and a [`Vm`] is `Sync`: threads of one test, or tests of one
//! binary through [`Shared`], use one VM at once. From a tokio test, call
//! it from `spawn_blocking` (or directly in a multi-threaded runtime where
//! blocking one worker for a command is acceptable).
//!
//! # How it works
//!
//! * **Image** ([`image`], [`kernel`], [`cache`]): Debian's
//!   `linux-image-6.12.*+deb12-amd64-unsigned` and an initramfs of the
//!   host's own Debian 12 programs, cached under `/var/cache/mpio-tests`
//!   (`$MPIO_TEST_CACHE`) and shared by every test process and checkout.
//! * **Boot** ([`qemu`]): `qemu-system-x86_64 -accel tcg,thread=single
//!   -cpu max` (nested KVM crashes on these machines; multi-threaded TCG
//!   in QEMU 7.2 panics guests that patch their text), busybox init, the modules loaded in
//!   dependency order, then the agent.
//! * **Control** ([`proto`], [`exec`]): a static, std-only
//!   guest agent on a virtio-serial port (independent of the guest network,
//!   so network faults never cut it) runs commands with separate stdout and
//!   stderr, several at once, and streams stdin in. Files are copied with
//!   `cat` through it.
//! * **Network** ([`net`]): a TAP NIC per link on a private subnet per VM
//!   slot, so host initiators (mpio, libiscsi) reach guest portals over real
//!   TCP and host-side iptables/tc/link-down are real faults; veth paths
//!   into a namespace for initiator and target both in the guest.
//! * **Binaries of this build** ([`Vm::install_binary`]): copied in after
//!   boot (the debug mpio, stripped of its debug info, is 12.5 MB and
//!   takes 1-2 s), not put into an image layer, which would be rebuilt and
//!   cached anew for every build; [`crate::daemon`] runs mpio's daemon
//!   in the guest.
//! * **Faults** ([`fault`]) in the guest: iptables DROP, netem, link down,
//!   TCP connection reset (`ss -K`), a frozen guest ([`Vm::freeze`]).
//!
//! # Deadlines and failures
//!
//! Booting past [`VmSpec::boot_timeout`], a guest that stops answering
//! (see [`exec`]), qemu exiting (a kernel panic with `panic=-1` and
//! `-no-reboot`): each is an [`Error::Vm`] with the end of the serial
//! console, and qemu is killed. A VM dropped while its test panics prints
//! its console. Every VM holds a slot ([`crate::slot`], kind `vm`): its
//! name `mpio-vm-<n>`, TAP names and subnets come from it, so VMs of
//! parallel tests never clash; see [`qemu`] for why no qemu outlives its
//! test.
//!
//! # Measured here (2 cores shared, TCG)
//!
//! See the README's VM section for boot time, copy throughput and the
//! time of the VM tests.

pub mod agent;
pub mod cache;
mod channel;
pub mod cpio;
pub mod exec;
pub mod fault;
pub mod image;
pub mod kernel;
pub mod net;
pub mod proto;
pub mod qemu;
mod spec;

pub use exec::{Awaited, Background, GuestCommand};
pub use net::{INNER_NETNS, InnerPath, Nic};
pub use spec::VmSpec;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::slot::{self, Slot};
use crate::vm::channel::Channel;
use crate::vm::kernel::Kernel;
use crate::vm::qemu::{QEMU, Qemu, QemuConfig};

/// Slots of VMs on this host (names, TAP devices, subnets).
pub const SLOTS: std::ops::RangeInclusive<u32> = 1..=200;

/// Set to `0` to skip the VM tests ([`skip_reason`]).
pub const VM_TESTS_ENV: &str = "MPIO_VM_TESTS";

const SLOT_KIND: &str = "vm";
const TEMP_PREFIX: &str = "mpio-vm-";
/// Lines of the console in error messages.
const CONSOLE_TAIL: usize = 60;
/// Copies move at least this fast (a generous floor: measured tens of
/// MB/s); their deadline grows with their size.
const COPY_FLOOR_BYTES_PER_SEC: u64 = 256 << 10;

/// What [`prepare`] made ready.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The kernel version (`6.12.117+deb12-amd64`).
    pub kernel: String,
    /// The agent binary in the cache.
    pub agent: std::path::PathBuf,
    /// The base initramfs layer in the cache.
    pub base: std::path::PathBuf,
}

/// Fetches the kernel and builds the agent and the base initramfs into
/// the cache, so that the first boot of a test does not (the test command
/// runs this first, through `mpio-vm prepare`).
pub fn prepare() -> Result<Prepared> {
    let kernel = Kernel::get()?;
    let agent = agent::binary()?;
    let base = image::base_layer(kernel, &agent)?;
    Ok(Prepared { kernel: kernel.version().to_owned(), agent, base })
}

/// Why the VM tests cannot run on this machine, if they cannot: not root
/// (TAP devices, qemu's tun access), no `/dev/net/tun`, or
/// `MPIO_VM_TESTS=0`. Tests print it and return (they pass, skipped).
pub fn skip_reason() -> Option<String> {
    if std::env::var(VM_TESTS_ENV).is_ok_and(|v| v == "0") {
        return Some(format!("{VM_TESTS_ENV}=0"));
    }
    if !nix::unistd::geteuid().is_root() {
        return Some("VM tests need root (TAP devices); run `sudo -E cargo test`".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("VM tests need /dev/net/tun (modprobe tun)".into());
    }
    None
}

/// A booted VM. Dropping it kills qemu (after printing the console if the
/// thread is panicking); [`Vm::power_off`] shuts it down cleanly.
#[derive(Debug)]
pub struct Vm {
    name: String,
    chan: Arc<Channel>,
    qemu: Qemu,
    nics: Vec<Nic>,
    inner: Vec<InnerPath>,
    boot_time: Duration,
    hang_grace: Duration,
    console_path: std::path::PathBuf,
    qemu_log: std::path::PathBuf,
    counter: AtomicU32,
    slot: Mutex<Slot>,
    dir: tempfile::TempDir,
}

impl Vm {
    /// Boots a VM: builds (or finds in the cache) the kernel, agent and
    /// initramfs, starts qemu, waits for the agent, and sets up the NICs
    /// and inner paths. Fails with the console if the guest does not come
    /// up within the spec's boot deadline.
    pub fn boot(spec: VmSpec) -> Result<Vm> {
        spec.validate()?;
        let kernel = Kernel::get()?;
        let agent = agent::binary()?;
        let mut slot = slot::acquire(SLOT_KIND, SLOTS, &[])?;
        slot.kill_orphan(QEMU, TEMP_PREFIX)?;
        let n = slot.number();
        let name = format!("mpio-vm-{n}");
        let dir = tempfile::Builder::new()
            .prefix(&format!("{TEMP_PREFIX}{n}-"))
            .tempdir()
            .map_err(|e| Error::io("cannot create the VM's temp dir", e))?;
        let initrd = dir.path().join("initrd");
        image::build_initrd(kernel, &agent, &spec.contents, &initrd)?;

        let nics = net::plan_nics(n, &spec.nics);
        let inner = net::plan_inner(spec.inner_paths);
        let mut append = vec!["console=ttyS0", "quiet", "panic=-1", "mitigations=off", "rdinit=/init"];
        append.extend(spec.kernel_args.iter().map(String::as_str));
        let config = QemuConfig {
            name: name.clone(),
            memory_mib: spec.memory_mib,
            cpus: spec.cpus,
            kernel: kernel.vmlinuz(),
            initrd,
            append: append.join(" "),
            console: dir.path().join("console.log"),
            agent_socket: dir.path().join("agent.sock"),
            qmp_socket: dir.path().join("qmp.sock"),
            nics: nics.iter().map(|n| (n.tap.clone(), n.mac.clone())).collect(),
            log: dir.path().join("qemu.log"),
        };
        let started = Instant::now();
        let qemu = Qemu::start(&config)?;
        slot.record_owner(QEMU, qemu.pid(), &["-name", &name], dir.path())?;
        let deadline = started + spec.boot_timeout;
        let chan = match connect(&config, &qemu, &nics, deadline, spec.hang_grace) {
            Ok(chan) => chan,
            Err(what) => {
                qemu.kill(Duration::from_secs(10));
                slot.clear_owner();
                return Err(Error::Vm { vm: name, what, console: tail(&config.console, &config.log) });
            }
        };
        let mut vm = Vm {
            name,
            chan,
            qemu,
            nics,
            inner,
            boot_time: Duration::ZERO,
            hang_grace: spec.hang_grace,
            console_path: config.console.clone(),
            qemu_log: config.log.clone(),
            counter: AtomicU32::new(0),
            slot: Mutex::new(slot),
            dir,
        };
        let build = agent::build_of(&agent);
        match vm.chan.wait_hello(deadline) {
            Ok(hello) if hello == build => {}
            Ok(hello) => return Err(vm.failed(&format!("the guest runs agent build {hello:?}, expected {build:?}"))),
            Err(Some(why)) => return Err(vm.failed(&why)),
            Err(None) => {
                return Err(vm.failed(&format!("no hello from the guest agent within {:?}", spec.boot_timeout)));
            }
        }
        vm.boot_time = started.elapsed();
        vm.sh(&net::guest_setup_script(&vm.nics, &vm.inner)).run_ok()?;
        Ok(vm)
    }

    /// `mpio-vm-<slot>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// From starting qemu to the agent's hello.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// qemu's pid on the host.
    pub fn qemu_pid(&self) -> u32 {
        self.qemu.pid()
    }

    /// The hang grace of the spec.
    pub fn hang_grace(&self) -> Duration {
        self.hang_grace
    }

    /// A command to run in the guest (`argv[0]` is looked up in the
    /// guest's PATH).
    pub fn command<I, S>(&self, argv: I) -> GuestCommand<'_>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        GuestCommand::new(self, argv.into_iter().map(|s| s.as_ref().to_owned()).collect())
    }

    /// `sh -e -c script` in the guest (busybox ash; `set -e`: the first
    /// failing command fails the script).
    pub fn sh(&self, script: &str) -> GuestCommand<'_> {
        self.command(["sh", "-e", "-c", script])
    }

    /// Unmounts `point` in every mount namespace of the guest that has it
    /// (the root one and, say, the copy `ip netns exec` made for a daemon
    /// started while it was mounted): the guest's mounts do not propagate,
    /// so a copy left behind keeps the filesystem alive, and its unmount
    /// at the last holder's exit may write to a device nobody serves.
    pub fn unmount_everywhere(&self, point: &str) -> Result<()> {
        let script = format!(
            "for p in /proc/[0-9]*; do if grep -qs ' {point} ' $p/mounts; then nsenter -t ${{p#/proc/}} -m umount \
             {point} 2>/dev/null || true; fi; done; ! grep -qs ' {point} ' /proc/[0-9]*/mounts"
        );
        self.command(["sh", "-c", &script]).run_ok().map(drop)
    }

    /// Writes `data` to `guest_path` (parent directories created), through
    /// the agent: binary-safe, no size limit but memory.
    pub fn write_file(&self, guest_path: &str, data: &[u8]) -> Result<()> {
        self.command(["sh", "-e", "-c", "mkdir -p \"$(dirname \"$1\")\"; cat > \"$1\"", "sh", guest_path])
            .stdin(data)
            .timeout(copy_timeout(data.len()))
            .run_ok()
            .map(drop)
    }

    /// The contents of `guest_path`.
    pub fn read_file(&self, guest_path: &str) -> Result<Vec<u8>> {
        let size = self.command(["stat", "-c", "%s", guest_path]).run_ok()?;
        let size: usize = size.trim().parse().unwrap_or(0);
        self.command(["cat", guest_path]).timeout(copy_timeout(size)).run_ok_bytes()
    }

    /// Copies host file `host` to `guest_path` (keeping its permission bits).
    pub fn copy_in(&self, host: &Path, guest_path: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let data = fs::read(host).map_err(|e| Error::io(format!("cannot read {}", host.display()), e))?;
        let mode = fs::metadata(host).map_err(|e| Error::io(format!("cannot stat {}", host.display()), e))?;
        self.write_file(guest_path, &data)?;
        let mode = format!("{:o}", mode.permissions().mode() & 0o7777);
        self.command(["chmod", &mode, guest_path]).run_ok().map(drop)
    }

    /// Installs host binary `host` at `guest_path` (mode 0755) with the
    /// shared libraries (`ldd`) the guest does not have yet, at their host
    /// paths: for a binary that changes with every build (the mpio of this
    /// test run), where a cached image layer ([`VmSpec::host_program`])
    /// would be rebuilt each time. Its debug info is left behind
    /// (`objcopy --strip-debug` on a temporary copy: the debug build of
    /// mpio is 130 MB with it, about a fifth without), which the guest
    /// does not need for backtraces with function names.
    pub fn install_binary(&self, host: &Path, guest_path: &str) -> Result<()> {
        let tmp = tempfile::NamedTempFile::new_in(self.dir.path())
            .map_err(|e| Error::io("cannot create a temp file for the stripped binary", e))?;
        crate::cmd::run_ok(
            std::process::Command::new("objcopy").arg("--strip-debug").arg(host).arg(tmp.path()),
            Duration::from_secs(120),
        )?;
        let data = fs::read(tmp.path()).map_err(|e| Error::io("cannot read the stripped binary", e))?;
        self.write_file(guest_path, &data)?;
        self.command(["chmod", "0755", guest_path]).run_ok()?;
        let libs: Vec<String> =
            image::shared_libraries(host)?.iter().map(|l| l.to_string_lossy().into_owned()).collect();
        let mut check =
            vec!["sh".to_owned(), "-c".into(), "for f; do [ -e \"$f\" ] || echo \"$f\"; done".into(), "sh".into()];
        check.extend(libs);
        let missing = self.command(check).run_ok()?;
        for lib in missing.lines().filter(|l| !l.is_empty()) {
            let real = fs::canonicalize(lib).map_err(|e| Error::io(format!("cannot resolve {lib}"), e))?;
            self.copy_in(&real, lib)?;
        }
        Ok(())
    }

    /// Copies guest file `guest_path` to host file `host`.
    pub fn copy_out(&self, guest_path: &str, host: &Path) -> Result<()> {
        let data = self.read_file(guest_path)?;
        fs::write(host, data).map_err(|e| Error::io(format!("cannot write {}", host.display()), e))
    }

    /// The NICs, in spec order.
    pub fn nics(&self) -> &[Nic] {
        &self.nics
    }

    /// NIC `i` (panics if the spec has none such: a test bug).
    pub fn nic(&self, i: usize) -> &Nic {
        self.nics.get(i).unwrap_or_else(|| panic!("{} has {} NICs, not {}", self.name, self.nics.len(), i + 1))
    }

    /// Guest address `addr` of NIC `nic`.
    pub fn addr(&self, nic: usize, addr: usize) -> Ipv4Addr {
        let n = self.nic(nic);
        *n.guest_addrs.get(addr).unwrap_or_else(|| panic!("{} has {} addresses", n.guest_if, n.guest_addrs.len()))
    }

    /// `addr(nic, addr):port`, a portal address for a host initiator.
    pub fn portal(&self, nic: usize, addr: usize, port: u16) -> SocketAddr {
        SocketAddr::new(self.addr(nic, addr).into(), port)
    }

    /// The inner paths (see [`net`]).
    pub fn inner_paths(&self) -> &[InnerPath] {
        &self.inner
    }

    /// Inner path `i` (panics if the spec has none such).
    pub fn inner_path(&self, i: usize) -> &InnerPath {
        self.inner.get(i).unwrap_or_else(|| panic!("{} has {} inner paths", self.name, self.inner.len()))
    }

    /// A number unique in this VM (1, 2, ...), for names of objects that
    /// tests sharing the VM create (LIO backstores, files).
    pub fn unique(&self) -> u32 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The whole serial console so far (kernel messages at warning level
    /// and above, the boot script, the agent's own messages).
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.console_path).unwrap_or_default()).into_owned()
    }

    /// The last `lines` lines of the console.
    pub fn console_tail(&self, lines: usize) -> String {
        last_lines(&self.console(), lines)
    }

    /// The VM's temp dir on the host (console log, qemu log, sockets).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the guest's CPUs (QMP `stop`): to its peers the target host
    /// hangs (TCP goes silent, nothing is reset), and its agent stops
    /// answering. [`Vm::thaw`] resumes it.
    pub fn freeze(&self) -> Result<()> {
        self.qemu.qmp("stop")
    }

    /// Resumes a frozen guest (QMP `cont`).
    pub fn thaw(&self) -> Result<()> {
        self.qemu.qmp("cont")
    }

    /// Whether the guest is still up (qemu runs and the channel is open).
    pub fn is_alive(&self) -> bool {
        self.qemu.exited().is_none() && self.chan.closed().is_none()
    }

    /// Syncs and powers the guest off, waits for qemu to exit (killing it
    /// after the hang grace), and returns qemu's exit status.
    pub fn power_off(self) -> Result<std::process::ExitStatus> {
        let _ = self.chan.power_off();
        let status = self.qemu.wait(Instant::now() + self.hang_grace).or_else(|| self.qemu.kill(self.hang_grace));
        self.chan.close("powered off".into());
        status.ok_or_else(|| Error::Environment(format!("qemu of {} (pid {}) did not die", self.name, self.qemu.pid())))
    }

    pub(crate) fn chan(&self) -> &Channel {
        &self.chan
    }

    /// The error for a VM that failed: kills qemu (if it still runs) and
    /// returns [`Error::Vm`] with what happened, how qemu ended and the
    /// console.
    pub(crate) fn failed(&self, what: &str) -> Error {
        let status = self.qemu.exited().or_else(|| self.qemu.kill(Duration::from_secs(10)));
        self.chan.close(what.to_owned());
        let ended = status.map_or("qemu did not die after SIGKILL".to_owned(), |s| format!("qemu {s}"));
        Error::Vm {
            vm: self.name.clone(),
            what: format!("{what} ({ended})"),
            console: tail(&self.console_path, &self.qemu_log),
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- console of {} ({}) ---\n{}--- end of console ---",
                self.name,
                self.console_path.display(),
                self.console_tail(200)
            );
        }
        self.chan.close("the Vm was dropped".into());
        if self.qemu.kill(Duration::from_secs(10)).is_some() {
            self.slot.lock().unwrap_or_else(|e| e.into_inner()).clear_owner();
        }
    }
}

/// Connects to the agent socket (qemu creates it at start), and configures
/// the host ends of the NICs once qemu made them. `Err` says why not.
fn connect(
    config: &QemuConfig,
    qemu: &Qemu,
    nics: &[Nic],
    deadline: Instant,
    hang_grace: Duration,
) -> std::result::Result<Arc<Channel>, String> {
    let qemu_ended = |status: std::process::ExitStatus| {
        let log = fs::read_to_string(&config.log).unwrap_or_default();
        format!("qemu exited during start-up ({status}): {}\ncommand: {}", log.trim(), qemu.command())
    };
    let stream = loop {
        if let Some(status) = qemu.exited() {
            return Err(qemu_ended(status));
        }
        match UnixStream::connect(&config.agent_socket) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("cannot connect to {}: {e}", config.agent_socket.display())),
        }
    };
    for nic in nics {
        let sys = Path::new("/sys/class/net").join(&nic.tap);
        while !sys.exists() {
            if let Some(status) = qemu.exited() {
                return Err(qemu_ended(status));
            }
            if Instant::now() >= deadline {
                return Err(format!("qemu did not create the TAP device {} before the boot deadline", nic.tap));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        net::configure_host(nic).map_err(|e| e.to_string())?;
    }
    Channel::start(stream, hang_grace).map_err(|e| format!("cannot start the channel reader: {e}"))
}

fn copy_timeout(bytes: usize) -> Duration {
    exec::DEFAULT_TIMEOUT + Duration::from_secs(bytes as u64 / COPY_FLOOR_BYTES_PER_SEC)
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
    out.push('\n');
    out
}

/// The end of the console, and qemu's own log if it has anything.
fn tail(console: &Path, qemu_log: &Path) -> String {
    let text = String::from_utf8_lossy(&fs::read(console).unwrap_or_default()).into_owned();
    let mut out = last_lines(&text, CONSOLE_TAIL);
    let log = fs::read_to_string(qemu_log).unwrap_or_default();
    if !log.trim().is_empty() {
        out.push_str(&format!("--- qemu's stderr ---\n{}\n", log.trim_end()));
    }
    out
}

/// One VM shared by the tests of a test binary, booted by the first test
/// that asks for it (tests run as threads of one process). A boot failure
/// is reported to every test. The VM is never dropped: qemu dies with the
/// process ([`qemu`]).
///
/// ```no_run
/// use mpio_testbed::vm::{Shared, VmSpec};
/// static VM: Shared = Shared::new(|| VmSpec::new().nic(2).nic(1));
///
/// #[test]
/// fn something() {
///     let Some(vm) = VM.get_or_skip() else { return };
///     vm.sh("true").run_ok().unwrap();
/// }
/// ```
pub struct Shared {
    spec: fn() -> VmSpec,
    vm: OnceLock<std::result::Result<Vm, String>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("vm", &self.vm).finish_non_exhaustive()
    }
}

impl Shared {
    /// A VM of `spec`, booted on first use.
    pub const fn new(spec: fn() -> VmSpec) -> Shared {
        Shared { spec, vm: OnceLock::new() }
    }

    /// The VM, booted now if needed; `Err` with the boot error.
    pub fn get(&self) -> std::result::Result<&Vm, String> {
        self.vm.get_or_init(|| (self.spec)().boot().map_err(|e| e.to_string())).as_ref().map_err(String::clone)
    }

    /// `None` (after printing why) when [`skip_reason`] says the VM tests
    /// cannot run here; otherwise the VM, panicking if it did not boot.
    pub fn get_or_skip(&self) -> Option<&Vm> {
        if let Some(why) = skip_reason() {
            eprintln!("skipping a VM test: {why}");
            return None;
        }
        Some(self.get().unwrap_or_else(|e| panic!("the shared test VM did not boot: {e}")))
    }
}
