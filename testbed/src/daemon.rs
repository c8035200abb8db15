//! `mpio daemon` inside a test VM ([`GuestDaemon`]): the initiator, the
//! multipath device and its frontend (NBD export, ublk device, ...) all in
//! the guest, next to LIO, so that faults between initiator and target are
//! real (veth paths into a namespace, see [`crate::vm::net`]) and the
//! guest's kernel uses the frontend for real (`nbd-client`, `/dev/ublkbN`).
//!
//! The API knows nothing of frontends: the test writes the daemon's whole
//! configuration (`frontend = "nbd"` or `"ublk"` in its `[[device]]`
//! tables) and uses what the daemon serves through the guest's own tools.
//!
//! ```no_run
//! use std::path::Path;
//! use std::time::Duration;
//! use mpio_testbed::daemon::{GUEST_MPIO, GuestDaemon};
//! use mpio_testbed::vm::VmSpec;
//!
//! let vm = VmSpec::new().inner_paths(2).host_program("nbd-client").boot()?;
//! vm.install_binary(Path::new("target/debug/mpio"), GUEST_MPIO)?; // once per VM
//! // ... LIO on vm.inner_path(0).target_addr and vm.inner_path(1).target_addr ...
//! let mut d = GuestDaemon::builder(&vm)
//!     .in_initiator_netns()                  // the initiator's side of the veth paths
//!     .start(|dir| format!("[daemon]\ncontrol_socket = \"{dir}/mpio.sock\"\n..."))?;
//! d.wait_device("d0", true, Duration::from_secs(60))?;      // every path up
//! let paths = d.json(&["path", "list", "d0"])?;            // the CLI, in the guest
//! vm.sh(&format!("nbd-client -N d0 -u {} /dev/nbd0", d.nbd_socket())).run_ok()?;
//! d.kill()?;                                              // SIGKILL, as a crash
//! d.restart()?;                                           // same config, same dir
//! # Ok::<(), mpio_testbed::Error>(())
//! ```
//!
//! # Lifecycle
//!
//! * **Start**: [`GuestDaemonBuilder::start`] writes the configuration to
//!   `<dir>/mpio.toml` (`dir` is a fresh directory under [`STATE_ROOT`],
//!   given to the closure that writes the file: put the control and NBD
//!   sockets there), and runs `mpio daemon --config` under the agent's
//!   `sd-notify` wrapper (`testbed/agent/main.rs`), which plays systemd's
//!   part of `Type=notify`: `start` returns when the daemon sends
//!   `READY=1`, which mpio sends once every device has a usable path or
//!   after its `ready_timeout`; it fails at once (with the log) if the
//!   daemon exits first. No polling and no sleeps: the host waits on the
//!   wrapper's output as it arrives.
//! * **Readiness of paths**: [`GuestDaemon::wait_device`] runs `mpio
//!   device wait DEV [--all-paths]` in the guest (one usable path, or
//!   every path; on failure the daemon says why each path is not up).
//! * **CLI**: [`GuestDaemon::cli`], [`GuestDaemon::ok`],
//!   [`GuestDaemon::json`] run `mpio --socket <dir>/mpio.sock ...` in the
//!   guest.
//! * **Crash and restart**: [`GuestDaemon::kill`] sends SIGKILL to the
//!   daemon (no logout, stale sockets left behind, as after a crash or
//!   the OOM killer); [`GuestDaemon::restart`] starts it again on the same
//!   configuration and directory; [`GuestDaemon::stop`] is SIGTERM (the
//!   daemon logs out) and returns how it exited.
//! * **Log**: the daemon's stderr of every run so far is
//!   [`GuestDaemon::log`]; errors of this module carry its last lines, and
//!   a `GuestDaemon` dropped while its test panics prints it. Dropping it
//!   stops the daemon (SIGTERM, then SIGKILL) and removes its directory.
//!
//! Its configuration files: [`config`] (the head with the sockets, the
//! target and device tables with a path per portal).
//!
//! The daemon runs as root in the guest's root mount namespace unless
//! [`GuestDaemonBuilder::netns`] puts it in a network namespace (`ip netns
//! exec`, which also gives it a mount namespace of its own with a
//! private `/sys`; `/dev`, `/run` and `/tmp` are the guest's).

use std::time::Duration;

pub mod config;

use crate::cmd::Outcome;
use crate::error::{Error, Result};
use crate::vm::exec::Awaited;
use crate::vm::{Background, GuestCommand, INNER_NETNS, Vm};

/// Where tests install the mpio binary in the guest ([`Vm::install_binary`]).
pub const GUEST_MPIO: &str = "/usr/local/bin/mpio";

/// Parent of the daemons' directories in the guest (tmpfs).
pub const STATE_ROOT: &str = "/run/mpio-test";

/// The agent inside the guest, which also wraps daemons (`sd-notify`).
const AGENT: &str = "/usr/sbin/mpio-vm-agent";

/// Lines of the daemon's log in error messages.
const LOG_TAIL: usize = 40;

/// Deadline of one CLI command in the guest.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// Builder of a [`GuestDaemon`]; see [`GuestDaemon::builder`].
#[derive(Debug, Clone)]
pub struct GuestDaemonBuilder<'vm> {
    vm: &'vm Vm,
    binary: String,
    netns: Option<String>,
    ready_timeout: Duration,
}

impl<'vm> GuestDaemonBuilder<'vm> {
    /// The mpio binary in the guest (default [`GUEST_MPIO`]).
    pub fn binary(mut self, guest_path: &str) -> GuestDaemonBuilder<'vm> {
        self.binary = guest_path.to_owned();
        self
    }

    /// Runs the daemon (and its CLI) in network namespace `name`.
    pub fn netns(mut self, name: &str) -> GuestDaemonBuilder<'vm> {
        self.netns = Some(name.to_owned());
        self
    }

    /// Runs it in [`INNER_NETNS`], the initiator side of the inner paths.
    pub fn in_initiator_netns(self) -> GuestDaemonBuilder<'vm> {
        self.netns(INNER_NETNS)
    }

    /// How long [`Self::start`] and [`GuestDaemon::restart`] wait for
    /// `READY=1` (default 120 s; give the daemon's own `ready_timeout` less).
    pub fn ready_timeout(mut self, timeout: Duration) -> GuestDaemonBuilder<'vm> {
        self.ready_timeout = timeout;
        self
    }

    /// Makes the daemon's directory, writes `config(dir)` to
    /// `<dir>/mpio.toml`, starts the daemon and waits for its `READY=1`.
    pub fn start(self, config: impl FnOnce(&str) -> String) -> Result<GuestDaemon<'vm>> {
        let dir = format!("{STATE_ROOT}/d{}", self.vm.unique());
        let text = config(&dir);
        let mut d = GuestDaemon {
            vm: self.vm,
            binary: self.binary,
            netns: self.netns,
            ready_timeout: self.ready_timeout,
            config: format!("{dir}/mpio.toml"),
            dir,
            running: None,
            ready_status: String::new(),
            past_log: String::new(),
        };
        d.vm.command(["mkdir", "-p", "-m", "0700", &d.dir]).run_ok()?;
        d.vm.write_file(&d.config, text.as_bytes())?;
        d.spawn()?;
        Ok(d)
    }
}

/// A running (or killed) `mpio daemon` in a VM; see the module docs.
#[derive(Debug)]
pub struct GuestDaemon<'vm> {
    vm: &'vm Vm,
    binary: String,
    netns: Option<String>,
    ready_timeout: Duration,
    dir: String,
    config: String,
    running: Option<Running<'vm>>,
    ready_status: String,
    /// stderr of the runs before this one.
    past_log: String,
}

#[derive(Debug)]
struct Running<'vm> {
    wrapper: Background<'vm>,
    pid: u32,
}

impl<'vm> GuestDaemon<'vm> {
    /// A builder for a daemon in `vm`.
    pub fn builder(vm: &'vm Vm) -> GuestDaemonBuilder<'vm> {
        GuestDaemonBuilder { vm, binary: GUEST_MPIO.to_owned(), netns: None, ready_timeout: Duration::from_secs(120) }
    }

    /// The VM it runs in.
    pub fn vm(&self) -> &'vm Vm {
        self.vm
    }

    /// Its directory in the guest.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// Its configuration file in the guest (rewrite it and run `mpio
    /// reload` to change it).
    pub fn config_path(&self) -> &str {
        &self.config
    }

    /// `<dir>/mpio.sock`: where the configuration must put the control
    /// socket for the CLI methods to reach it.
    pub fn socket(&self) -> String {
        format!("{}/mpio.sock", self.dir)
    }

    /// `<dir>/nbd.sock`: a conventional place for the NBD socket.
    pub fn nbd_socket(&self) -> String {
        format!("{}/nbd.sock", self.dir)
    }

    /// The NBD URI of `device`'s export on [`Self::nbd_socket`].
    pub fn export_uri(&self, device: &str) -> String {
        format!("nbd+unix:///{device}?socket={}", self.nbd_socket())
    }

    /// The `STATUS=` of the last `READY=1` (`1 devices ready`, `waiting
    /// for d0`).
    pub fn ready_status(&self) -> &str {
        &self.ready_status
    }

    /// The daemon's pid in the guest, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.pid)
    }

    /// Its stderr (the log) over every run so far.
    pub fn log(&self) -> String {
        let mut log = self.past_log.clone();
        if let Some(r) = &self.running {
            log.push_str(&r.wrapper.output().1);
        }
        log
    }

    /// A guest command in the daemon's namespace.
    pub fn command<I, S>(&self, argv: I) -> GuestCommand<'vm>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let cmd = self.vm.command(argv);
        match &self.netns {
            Some(ns) => cmd.netns(ns),
            None => cmd,
        }
    }

    /// `mpio --socket <dir>/mpio.sock ARGS` in the guest, whatever its
    /// exit status.
    pub fn cli(&self, args: &[&str]) -> Result<Outcome> {
        self.cli_command(args).run()
    }

    fn cli_command(&self, args: &[&str]) -> GuestCommand<'vm> {
        let socket = self.socket();
        let mut argv = vec![self.binary.as_str(), "--socket", &socket];
        argv.extend_from_slice(args);
        self.command(argv).timeout(CLI_TIMEOUT)
    }

    /// The CLI, which must succeed; its stdout. The error carries the end
    /// of the daemon's log.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        self.cli(args)?.check(CLI_TIMEOUT).map(|o| o.stdout).map_err(|e| self.with_log(e))
    }

    /// The CLI with `--json`, parsed.
    pub fn json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a)?;
        serde_json::from_str(&out)
            .map_err(|e| Error::parse(&format!("the JSON of `mpio {}`", a.join(" ")), e.to_string(), &out))
    }

    /// `mpio device wait DEVICE [--all-paths] --timeout T --json`: until
    /// one path (`all_paths`: every path) of `device` carries I/O; its
    /// answer (`state`, `paths_usable`, ...). Fails with each path's
    /// reason and the log.
    pub fn wait_device(&self, device: &str, all_paths: bool, timeout: Duration) -> Result<serde_json::Value> {
        let t = format!("{}ms", timeout.as_millis());
        let mut args = vec!["device", "wait", device, "--timeout", &t];
        if all_paths {
            args.push("--all-paths");
        }
        args.push("--json");
        let out = self.cli_command(&args).timeout(timeout + CLI_TIMEOUT).run()?;
        let out = out.check(timeout + CLI_TIMEOUT).map_err(|e| self.with_log(e))?;
        serde_json::from_str(&out.stdout)
            .map_err(|e| Error::parse(&format!("the JSON of `mpio device wait {device}`"), e.to_string(), &out.stdout))
    }

    /// SIGKILL to the daemon, as a crash or the OOM killer would: no
    /// logout, its sockets (control, NBD) left behind. Returns once it is
    /// gone.
    pub fn kill(&mut self) -> Result<()> {
        self.signal_and_reap("KILL").map(drop)
    }

    /// SIGTERM to the daemon (it logs out and removes its sockets); how it
    /// exited (the wrapper's `exit ...` line and exit code).
    pub fn stop(&mut self) -> Result<Outcome> {
        self.signal_and_reap("TERM")
    }

    /// Starts the daemon again on the same configuration and directory
    /// (after [`Self::kill`] or [`Self::stop`]) and waits for `READY=1`.
    pub fn restart(&mut self) -> Result<()> {
        if self.running.is_some() {
            return Err(Error::Environment(
                "GuestDaemon::restart: the daemon still runs (kill or stop it first)".into(),
            ));
        }
        self.spawn()
    }

    fn spawn(&mut self) -> Result<()> {
        let notify = format!("{}/notify", self.dir);
        let argv =
            [AGENT, "sd-notify", notify.as_str(), self.binary.as_str(), "daemon", "--config", self.config.as_str()];
        let wrapper = self.command(argv).timeout(Duration::from_secs(24 * 3600)).spawn()?;
        let ready = |l: &&str| l.starts_with("notify ") && l.contains("READY=1");
        let awaited = wrapper.wait_output(self.ready_timeout, |out, _| out.lines().any(|l| ready(&l)))?;
        let (out, err) = wrapper.output();
        let pid = out.lines().find_map(|l| l.strip_prefix("pid ")?.trim().parse().ok());
        match (awaited, pid) {
            (Awaited::Matched, Some(pid)) => {
                self.ready_status = out
                    .lines()
                    .rev()
                    .find(ready)
                    .and_then(|l| l.split_once("STATUS=").map(|(_, s)| s.trim().to_owned()))
                    .unwrap_or_default();
                self.running = Some(Running { wrapper, pid });
                Ok(())
            }
            (Awaited::Deadline, _) => {
                let e = Error::Environment(format!(
                    "the daemon in {} sent no READY=1 within {:?} ({})",
                    self.vm.name(),
                    self.ready_timeout,
                    out.trim().replace('\n', "; ")
                ));
                self.past_log.push_str(&err);
                drop(wrapper); // killed
                Err(self.with_log(e))
            }
            _ => {
                let outcome = wrapper.wait_timeout(self.vm.hang_grace())?;
                self.past_log.push_str(&outcome.stderr);
                Err(self.with_log(Error::Environment(format!(
                    "the daemon in {} exited before it was ready: {}",
                    self.vm.name(),
                    outcome.stdout.trim().replace('\n', "; ")
                ))))
            }
        }
    }

    fn signal_and_reap(&mut self, signal: &str) -> Result<Outcome> {
        let Some(Running { wrapper, pid }) = self.running.take() else {
            return Err(Error::Environment("GuestDaemon: the daemon does not run".into()));
        };
        self.vm.command(["kill", &format!("-{signal}"), &pid.to_string()]).run_ok()?;
        let outcome = wrapper.wait_timeout(self.vm.hang_grace() + CLI_TIMEOUT)?;
        self.past_log.push_str(&outcome.stderr);
        self.past_log.push_str(&format!(
            "--- mpio-vm: SIG{signal} to the daemon (pid {pid}): {} ---\n",
            outcome.stdout.trim().replace('\n', "; ")
        ));
        if outcome.timed_out() {
            return Err(
                self.with_log(Error::Environment(format!("the daemon (pid {pid}) did not exit after SIG{signal}")))
            );
        }
        Ok(outcome)
    }

    /// `e` with the end of the daemon's log.
    fn with_log(&self, e: Error) -> Error {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
        Error::Environment(format!(
            "{e}\n--- mpio daemon log in {} ({}), last lines ---\n{tail}\n--- end of log ---",
            self.vm.name(),
            self.dir
        ))
    }
}

impl Drop for GuestDaemon<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- mpio daemon log in {} ({}) ---\n{}--- end of log ---", self.vm.name(), self.dir, self.log());
        }
        if !self.vm.is_alive() {
            return;
        }
        if self.running.is_some() && self.stop().is_err() {
            let _ = self.kill();
        }
        let _ = self.vm.command(["rm", "-rf", &self.dir]).run();
    }
}
