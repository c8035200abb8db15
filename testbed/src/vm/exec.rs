//! Commands in the guest: [`GuestCommand`] (run to completion with a
//! deadline) and [`Background`] (running while the test does other
//! things).
//!
//! The outcome is a [`cmd::Outcome`], as for host commands: exit status,
//! stdout and stderr apart, elapsed time, and `status: None` when the
//! deadline passed and the command was killed. Commands run in their own
//! process group; a kill (deadline, [`Background::kill`]) goes to the whole
//! group, so `sh -c 'a | b'` dies as a whole.
//!
//! At a deadline the agent sends SIGKILL and the host waits up to the
//! VM's hang grace for the exit. A process that does not die (stuck in the
//! kernel, `D` state, e.g. on a block device whose paths are all down) is
//! reported as timed out and left running, with a note in its stderr. If
//! the agent itself no longer answers, the guest is hung: qemu is killed
//! and the error carries the console log.

use std::time::{Duration, Instant};

use crate::cmd::{self, Outcome, RawOutcome};
use crate::error::{Error, Result};
use crate::vm::Vm;
use crate::vm::channel::{CmdState, Waited, Watched};
use crate::vm::net::INNER_NETNS;

/// Deadline of a [`GuestCommand`] unless set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

const SIGKILL: i32 = 9;

/// A command to run in the guest; made by [`Vm::command`] or [`Vm::sh`].
#[derive(Debug, Clone)]
#[must_use = "a GuestCommand does nothing until run() or spawn()"]
pub struct GuestCommand<'vm> {
    vm: &'vm Vm,
    argv: Vec<String>,
    stdin: Vec<u8>,
    timeout: Duration,
    netns: Option<String>,
}

impl<'vm> GuestCommand<'vm> {
    pub(crate) fn new(vm: &'vm Vm, argv: Vec<String>) -> GuestCommand<'vm> {
        GuestCommand { vm, argv, stdin: Vec::new(), timeout: DEFAULT_TIMEOUT, netns: None }
    }

    /// Bytes for its stdin (then end of file; default: empty).
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> GuestCommand<'vm> {
        self.stdin = data.into();
        self
    }

    /// Its deadline (default [`DEFAULT_TIMEOUT`]); for [`Self::spawn`],
    /// the default of [`Background::wait`].
    pub fn timeout(mut self, timeout: Duration) -> GuestCommand<'vm> {
        self.timeout = timeout;
        self
    }

    /// Runs it in network namespace `name` (`ip netns exec`).
    pub fn netns(mut self, name: &str) -> GuestCommand<'vm> {
        self.netns = Some(name.to_owned());
        self
    }

    /// Runs it in [`INNER_NETNS`], the initiator side of the inner paths.
    pub fn in_initiator_netns(self) -> GuestCommand<'vm> {
        self.netns(INNER_NETNS)
    }

    fn full_argv(&self) -> Vec<String> {
        match &self.netns {
            Some(ns) => ["ip", "netns", "exec", ns].iter().map(|s| s.to_string()).chain(self.argv.clone()).collect(),
            None => self.argv.clone(),
        }
    }

    /// The command line as messages show it: `[mpio-vm-3] sh -c '...'`.
    pub fn describe(&self) -> String {
        format!("[{}] {}", self.vm.name(), cmd::describe_words(self.full_argv()))
    }

    /// Runs it to completion. `Ok` with `status: None` if it was killed at
    /// its deadline; `Err` only if the VM failed (died, hung).
    pub fn run(&self) -> Result<Outcome> {
        let raw = self.run_raw()?;
        Ok(raw.into_outcome_lossy())
    }

    /// Runs it and returns its stdout; fails (with stderr, stdout and the
    /// command line) if it exits non-zero or misses its deadline.
    pub fn run_ok(&self) -> Result<String> {
        self.run()?.check(self.timeout).map(|o| o.stdout)
    }

    /// Like [`Self::run_ok`], with stdout as bytes, unaltered.
    pub fn run_ok_bytes(&self) -> Result<Vec<u8>> {
        let mut raw = self.run_raw()?;
        let stdout = std::mem::take(&mut raw.stdout);
        raw.into_outcome_lossy().check(self.timeout)?;
        Ok(stdout)
    }

    fn run_raw(&self) -> Result<RawOutcome> {
        let start = Instant::now();
        let id = self.vm.chan().exec(&self.full_argv(), &self.stdin, false).map_err(|why| self.vm.failed(&why))?;
        finish(self.vm, id, self.describe(), start, start + self.timeout)
    }

    /// Starts it and returns at once; see [`Background`].
    pub fn spawn(&self) -> Result<Background<'vm>> {
        let start = Instant::now();
        let id = self.vm.chan().exec(&self.full_argv(), &self.stdin, false).map_err(|why| self.vm.failed(&why))?;
        Ok(Background { vm: self.vm, id, command: self.describe(), start, timeout: self.timeout, done: false })
    }
}

/// A command running in the guest (a long fio, a fault loop, a daemon).
/// Dropping it kills it (SIGKILL to its process group) without waiting.
#[derive(Debug)]
#[must_use = "dropping a Background kills the command"]
pub struct Background<'vm> {
    vm: &'vm Vm,
    id: u32,
    command: String,
    start: Instant,
    timeout: Duration,
    done: bool,
}

impl Background<'_> {
    /// The command line.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Its pid in the guest (waits for the agent to report it).
    pub fn pid(&self) -> Result<u32> {
        let deadline = Instant::now() + self.vm.hang_grace();
        loop {
            match self.vm.chan().peek(self.id) {
                Some((Some(pid), ..)) => return Ok(pid),
                Some(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Some(_) => return Err(self.vm.failed("the agent did not report the pid of a command it started")),
                None => {
                    return Err(Error::Environment(format!("`{}` already ended (no pid to give)", self.command)));
                }
            }
        }
    }

    /// Its stdout and stderr so far (lossy UTF-8).
    pub fn output(&self) -> (String, String) {
        let (_, out, err) = self.vm.chan().peek(self.id).unwrap_or_default();
        (String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned())
    }

    /// Waits, without polling, until its output so far satisfies
    /// `pred(stdout, stderr)` (lossy UTF-8; called again as output
    /// arrives), it ends, or `timeout` passes. The command keeps running
    /// in every case: this is how a test waits for a daemon's readiness
    /// line or a writer's progress.
    pub fn wait_output(&self, timeout: Duration, mut pred: impl FnMut(&str, &str) -> bool) -> Result<Awaited> {
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match self.vm.chan().watch(self.id, Instant::now() + timeout, |out, err| pred(&lossy(out), &lossy(err))) {
            Watched::Matched => Ok(Awaited::Matched),
            Watched::Ended => Ok(Awaited::Ended),
            Watched::Deadline => Ok(Awaited::Deadline),
            Watched::Closed(why) => Err(self.vm.failed(&why)),
        }
    }

    /// Sends `signal` (a number: 15 TERM, 9 KILL, 19 STOP, 18 CONT) to its
    /// process group.
    pub fn signal(&self, signal: i32) -> Result<()> {
        self.vm.chan().signal(self.id, signal).map_err(|why| self.vm.failed(&why))
    }

    /// Waits until it ends, up to the timeout it was given (see
    /// [`GuestCommand::timeout`]); killed then, with `status: None`.
    pub fn wait(self) -> Result<Outcome> {
        let timeout = self.timeout;
        self.wait_timeout(timeout)
    }

    /// Waits until it ends, at most `timeout` from now; killed then, with
    /// `status: None`.
    pub fn wait_timeout(mut self, timeout: Duration) -> Result<Outcome> {
        self.done = true;
        finish(self.vm, self.id, self.command.clone(), self.start, Instant::now() + timeout)
            .map(RawOutcome::into_outcome_lossy)
    }

    /// Kills it (SIGKILL to its process group) and returns how it ended
    /// (normally: killed by signal 9; or its exit status if it had ended).
    pub fn kill(mut self) -> Result<Outcome> {
        self.done = true;
        let _ = self.vm.chan().signal(self.id, SIGKILL);
        let deadline = Instant::now() + self.vm.hang_grace();
        match self.vm.chan().wait(self.id, deadline) {
            Waited::Done(state) => Ok(raw(self.command.clone(), state, self.start.elapsed()).into_outcome_lossy()),
            Waited::Closed(why) => Err(self.vm.failed(&why)),
            Waited::Deadline => {
                stuck_or_hung(self.vm, self.id, self.command.clone(), Vec::new(), Vec::new(), self.start)
                    .map(RawOutcome::into_outcome_lossy)
            }
        }
    }
}

/// How [`Background::wait_output`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaited {
    /// The output matched.
    Matched,
    /// The command ended first (its outcome is still there for
    /// [`Background::wait`]).
    Ended,
    /// The timeout passed first; the command still runs.
    Deadline,
}

impl Drop for Background<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.vm.chan().signal(self.id, SIGKILL);
            self.vm.chan().forget(self.id);
        }
    }
}

fn raw(command: String, state: CmdState, elapsed: Duration) -> RawOutcome {
    use std::os::unix::process::ExitStatusExt;
    let mut stderr = state.stderr;
    let status = match (state.status, state.failed) {
        (Some(raw), _) => raw,
        (None, Some(why)) => {
            // As a shell reports a command it cannot run.
            stderr.extend_from_slice(format!("mpio-vm-agent: {why}\n").as_bytes());
            127 << 8
        }
        (None, None) => 255 << 8,
    };
    RawOutcome {
        command,
        status: Some(std::process::ExitStatus::from_raw(status)),
        stdout: state.stdout,
        stderr,
        elapsed,
    }
}

/// Waits for command `id` until `deadline`; past it, kills it and reports
/// a timeout (see the module docs).
fn finish(vm: &Vm, id: u32, command: String, start: Instant, deadline: Instant) -> Result<RawOutcome> {
    match vm.chan().wait(id, deadline) {
        Waited::Done(state) => return Ok(raw(command, state, start.elapsed())),
        Waited::Closed(why) => return Err(vm.failed(&why)),
        Waited::Deadline => {}
    }
    let elapsed = start.elapsed();
    vm.chan().signal(id, SIGKILL).map_err(|why| vm.failed(&why))?;
    match vm.chan().wait(id, Instant::now() + vm.hang_grace()) {
        Waited::Done(state) => {
            Ok(RawOutcome { command, status: None, stdout: state.stdout, stderr: state.stderr, elapsed })
        }
        Waited::Closed(why) => Err(vm.failed(&why)),
        Waited::Deadline => {
            let (_, out, err) = vm.chan().peek(id).unwrap_or_default();
            stuck_or_hung(vm, id, command, out, err, start)
        }
    }
}

/// A command that outlived SIGKILL by the hang grace: stuck in the
/// kernel if the agent still answers, else the guest is hung.
fn stuck_or_hung(
    vm: &Vm,
    id: u32,
    command: String,
    stdout: Vec<u8>,
    mut stderr: Vec<u8>,
    start: Instant,
) -> Result<RawOutcome> {
    vm.chan().forget(id);
    if !vm.chan().ping(Instant::now() + vm.hang_grace()) {
        return Err(vm.failed(&format!(
            "`{command}` did not end after SIGKILL and the agent stopped answering within {:?}: the guest is hung",
            vm.hang_grace()
        )));
    }
    stderr.extend_from_slice(
        format!(
            "\n(mpio-vm: still running {:?} after SIGKILL: stuck in the kernel (D state?); left running)\n",
            vm.hang_grace()
        )
        .as_bytes(),
    );
    Ok(RawOutcome { command, status: None, stdout, stderr, elapsed: start.elapsed() })
}
