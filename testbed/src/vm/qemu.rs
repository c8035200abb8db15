//! The qemu process of a VM: its command line, a supervisor thread that
//! owns the child, and the QMP monitor (freeze/thaw).
//!
//! No qemu outlives its test process: qemu runs under
//! `setpriv --pdeathsig KILL`, so the kernel kills it when the thread that
//! started it dies, which is the supervisor thread, alive until qemu
//! exits or the process ends (also for a VM in a `static` that is never
//! dropped, and for a test killed with SIGKILL). On top of that the agent
//! powers the guest off when the channel closes, [`super::Vm`]'s Drop
//! kills qemu, and the slot file records qemu's pid for the next VM in
//! that slot to kill a leftover ([`crate::slot::Slot::kill_orphan`]).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd;
use crate::error::{Error, Result};

/// The qemu binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// What to start.
#[derive(Debug, Clone)]
pub(crate) struct QemuConfig {
    pub(crate) name: String,
    pub(crate) memory_mib: u32,
    pub(crate) cpus: u32,
    pub(crate) kernel: PathBuf,
    pub(crate) initrd: PathBuf,
    pub(crate) append: String,
    pub(crate) console: PathBuf,
    pub(crate) agent_socket: PathBuf,
    pub(crate) qmp_socket: PathBuf,
    /// `(tap name, mac)` per NIC.
    pub(crate) nics: Vec<(String, String)>,
    pub(crate) log: PathBuf,
}

impl QemuConfig {
    /// The command line. TCG: nested KVM dies here ("KVM internal error.
    /// Suberror: 1" with every -cpu model tried); `-cpu max` gives the
    /// guest every feature TCG emulates (CRC32C instructions, ...).
    ///
    /// Single-threaded TCG (`thread=single`: the vCPUs take turns on one
    /// host thread). Multi-threaded TCG in Debian 12's QEMU 7.2 races when
    /// one vCPU patches kernel text another is translating (fixed in 8.1,
    /// "accel/tcg: Always lock pages before translation"): a guest that
    /// flips a static key under network load runs the int3 of the patch
    /// after it is gone and panics ("Oops: int3" in inet_ehashfn, in CI
    /// runs now and then). One thread costs the guest its parallelism, not
    /// its correctness.
    pub(crate) fn command(&self) -> Command {
        let mut c = Command::new("setpriv");
        c.args(["--pdeathsig", "KILL", "--", QEMU]);
        c.args(["-name", &self.name, "-accel", "tcg,thread=single", "-cpu", "max"]);
        // qboot instead of SeaBIOS: the firmware's part of a TCG boot
        // drops from about 5 s to 2 s here.
        c.args(["-bios", "qboot.rom"]);
        c.args(["-m", &self.memory_mib.to_string(), "-smp", &self.cpus.to_string()]);
        c.args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]);
        c.arg("-kernel").arg(&self.kernel).arg("-initrd").arg(&self.initrd).args(["-append", &self.append]);
        c.arg("-chardev").arg(format!("file,id=con,path={}", self.console.display())).args(["-serial", "chardev:con"]);
        c.args(["-device", "virtio-serial-pci"]);
        c.arg("-chardev").arg(format!("socket,id=agent,path={},server=on,wait=off", self.agent_socket.display()));
        c.args(["-device", &format!("virtserialport,chardev=agent,name={}", super::proto::PORT_NAME)]);
        c.arg("-qmp").arg(format!("unix:{},server=on,wait=off", self.qmp_socket.display()));
        for (i, (tap, mac)) in self.nics.iter().enumerate() {
            c.args(["-netdev", &format!("tap,id=n{i},ifname={tap},script=no,downscript=no")]);
            c.args(["-device", &format!("virtio-net-pci,netdev=n{i},mac={mac}")]);
        }
        c
    }
}

/// A running (or exited) qemu, owned by its supervisor thread.
#[derive(Debug)]
pub(crate) struct Qemu {
    pid: u32,
    command: String,
    shared: Arc<(Mutex<Supervised>, Condvar)>,
    qmp: PathBuf,
}

#[derive(Debug, Default)]
struct Supervised {
    kill: bool,
    exited: Option<ExitStatus>,
}

impl Qemu {
    /// Starts qemu from a supervisor thread (see the module docs).
    pub(crate) fn start(config: &QemuConfig) -> Result<Qemu> {
        let mut command = config.command();
        let text = cmd::describe(&command);
        let log = std::fs::File::create(&config.log)
            .map_err(|e| Error::io(format!("cannot create {}", config.log.display()), e))?;
        let log2 = log.try_clone().map_err(|e| Error::io("cannot dup the qemu log", e))?;
        command.stdin(Stdio::null()).stdout(log).stderr(log2);
        let shared = Arc::new((Mutex::new(Supervised::default()), Condvar::new()));
        let (tx, rx) = mpsc::channel();
        let sup = Arc::clone(&shared);
        thread::Builder::new()
            .name(format!("{}-qemu", config.name))
            .spawn(move || supervise(command, tx, &sup))
            .map_err(|e| Error::io("cannot start the qemu supervisor thread", e))?;
        let pid = rx.recv().map_err(|_| Error::Environment("the qemu supervisor thread died".into()))??;
        Ok(Qemu { pid, command: text, shared, qmp: config.qmp_socket.clone() })
    }

    /// qemu's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The command line, for messages.
    pub(crate) fn command(&self) -> &str {
        &self.command
    }

    /// How qemu exited, if it has.
    pub(crate) fn exited(&self) -> Option<ExitStatus> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner()).exited
    }

    /// Kills qemu (SIGKILL) and waits until it is reaped (bounded by
    /// `timeout`: a process in the kernel may take a moment to die).
    pub(crate) fn kill(&self, timeout: Duration) -> Option<ExitStatus> {
        let (lock, cond) = &*self.shared;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        s.kill = true;
        cond.notify_all();
        self.wait_locked(s, Instant::now() + timeout)
    }

    /// Waits until qemu exits by itself, until `deadline`.
    pub(crate) fn wait(&self, deadline: Instant) -> Option<ExitStatus> {
        let s = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
        self.wait_locked(s, deadline)
    }

    fn wait_locked(&self, mut s: std::sync::MutexGuard<'_, Supervised>, deadline: Instant) -> Option<ExitStatus> {
        let cond = &self.shared.1;
        loop {
            if s.exited.is_some() {
                return s.exited;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            s = cond.wait_timeout(s, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Pauses (`stop`) or resumes (`cont`) the guest's CPUs through QMP.
    pub(crate) fn qmp(&self, command: &str) -> Result<()> {
        qmp_execute(&self.qmp, command)
    }
}

/// The supervisor: spawns qemu (so that qemu's parent-death signal is tied
/// to this thread), reports the pid, then reaps qemu, killing it when asked.
fn supervise(mut command: Command, tx: mpsc::Sender<Result<u32>>, shared: &(Mutex<Supervised>, Condvar)) {
    let mut child = match cmd::spawn(&mut command) {
        Ok(child) => child,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    let _ = tx.send(Ok(child.id()));
    let (lock, cond) = shared;
    let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if s.kill {
            let _ = child.kill();
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                s.exited = Some(status);
                cond.notify_all();
                return;
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("warning: waiting for qemu pid {}: {e}", child.id());
            }
        }
        // Woken by a kill request; otherwise look again soon (qemu's exit
        // is not an event this thread can sleep on together with the
        // condition variable).
        s = cond.wait_timeout(s, Duration::from_millis(20)).unwrap_or_else(|e| e.into_inner()).0;
    }
}

/// Runs one QMP command (`stop`, `cont`) and checks it returned.
fn qmp_execute(socket: &Path, command: &str) -> Result<()> {
    let context = |e| Error::io(format!("QMP {command} on {}", socket.display()), e);
    let stream = UnixStream::connect(socket).map_err(context)?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(context)?;
    let mut w = stream.try_clone().map_err(context)?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).map_err(context)?; // the greeting
    for cmd in ["qmp_capabilities", command] {
        writeln!(w, "{{\"execute\":\"{cmd}\"}}").map_err(context)?;
        loop {
            line.clear();
            if r.read_line(&mut line).map_err(context)? == 0 {
                return Err(Error::Environment(format!("QMP {cmd}: qemu closed the monitor")));
            }
            if line.contains("\"return\"") {
                break;
            }
            if line.contains("\"error\"") {
                return Err(Error::Environment(format!("QMP {cmd} failed: {}", line.trim())));
            }
            // An event; read on.
        }
    }
    Ok(())
}
