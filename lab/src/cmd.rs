//! Running external programs: with a deadline, with readable errors, and
//! (for long-running ones) killed and reaped when their guard drops.
//!
//! Every external call of the fixtures goes through [`run`] so that a hung
//! tool (a libiscsi client stuck on a black-holed connection ignores SIGTERM)
//! cannot hang a test: at the deadline the child gets SIGKILL. A program that
//! is not installed becomes [`Error::MissingTool`] naming its Debian package.

use std::fmt::Write as _;
use std::io::{self, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Debian packages of the programs the fixtures and tests run.
const PACKAGES: &[(&str, &str)] = &[
    ("tgtd", "tgt"),
    ("tgtadm", "tgt"),
    ("iscsi-ls", "libiscsi-bin"),
    ("iscsi-inq", "libiscsi-bin"),
    ("iscsi-perf", "libiscsi-bin"),
    ("iscsi-readcapacity16", "libiscsi-bin"),
    ("iscsi-test-cu", "libiscsi-bin"),
    ("iptables", "iptables"),
    ("iptables-legacy", "iptables"),
    ("iptables-nft", "iptables"),
    ("tc", "iproute2"),
    ("ip", "iproute2"),
    ("qemu-img", "qemu-utils"),
    ("qemu-io", "qemu-utils"),
    ("qemu-nbd", "qemu-utils"),
    ("timeout", "coreutils"),
    ("nbdinfo", "libnbd-bin"),
    ("nbdcopy", "libnbd-bin"),
    ("nbdfuse", "libnbd-bin"),
    ("nbd-client", "nbd-client"),
    ("fio", "fio"),
    ("mkfs.ext4", "e2fsprogs"),
    ("fsck.ext4", "e2fsprogs"),
    ("losetup", "mount"),
    ("mount", "mount"),
    ("umount", "mount"),
    ("ss", "iproute2"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("setpriv", "util-linux"),
    ("blkdiscard", "util-linux"),
    ("busybox", "busybox-static"),
    ("xz", "xz-utils"),
    ("depmod", "kmod"),
    ("dpkg", "dpkg"),
    ("apt-get", "apt"),
    ("apt-cache", "apt"),
    ("ldd", "libc-bin"),
    ("xtables-legacy-multi", "iptables"),
    ("iptables-legacy", "iptables"),
    ("mke2fs", "e2fsprogs"),
    ("e2fsck", "e2fsprogs"),
    ("dd", "coreutils"),
    ("sha256sum", "coreutils"),
    ("rustc", "the Rust toolchain (rustup)"),
];

/// The Debian package that ships `program` ("?" if unknown).
pub fn package_for(program: &str) -> &'static str {
    let name = Path::new(program).file_name().and_then(|n| n.to_str()).unwrap_or(program);
    PACKAGES.iter().find(|(p, _)| *p == name).map_or("?", |(_, pkg)| pkg)
}

/// `cmd` as a shell-like string for messages.
pub fn describe(cmd: &Command) -> String {
    describe_words(std::iter::once(cmd.get_program()).chain(cmd.get_args()))
}

/// Words of a command line (`argv`) as a shell-like string for messages.
pub fn describe_words<W: AsRef<std::ffi::OsStr>>(words: impl IntoIterator<Item = W>) -> String {
    let mut s = String::new();
    for (i, word) in words.into_iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let word = word.as_ref().to_string_lossy();
        if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c)) {
            s.push_str(&word);
        } else {
            let _ = write!(s, "'{}'", word.replace('\'', r"'\''"));
        }
    }
    s
}

/// Spawns `cmd`, mapping "not found" to [`Error::MissingTool`].
pub fn spawn(cmd: &mut Command) -> Result<Child> {
    cmd.spawn().map_err(|e| spawn_error(cmd, e))
}

fn spawn_error(cmd: &Command, e: io::Error) -> Error {
    let program = cmd.get_program().to_string_lossy().into_owned();
    if e.kind() == io::ErrorKind::NotFound {
        let package = package_for(&program);
        Error::MissingTool { program, package }
    } else {
        Error::io(format!("cannot start `{}`", describe(cmd)), e)
    }
}

/// How a command run by [`run`] ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The command line.
    pub command: String,
    /// Exit status; `None` when the deadline passed and the child was killed.
    pub status: Option<ExitStatus>,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
    /// Wall time until exit (or until the kill).
    pub elapsed: Duration,
}

impl Outcome {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Whether the command was killed at its deadline.
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// `Ok(self)` if the command succeeded, otherwise an error with its
    /// stderr and stdout.
    pub fn check(self, timeout: Duration) -> Result<Outcome> {
        match self.status {
            Some(s) if s.success() => Ok(self),
            Some(s) => Err(Error::Command {
                command: self.command,
                status: s.to_string(),
                stderr: self.stderr.trim().to_owned(),
                stdout: if self.stdout.trim().is_empty() {
                    String::new()
                } else {
                    format!("\n--- stdout ---\n{}", self.stdout.trim_end())
                },
            }),
            None => Err(Error::CommandTimeout { command: self.command, timeout }),
        }
    }
}

/// Runs `cmd` to completion with stdin from /dev/null and stdout/stderr
/// captured. At `timeout` the child is killed with SIGKILL and the outcome
/// has `status: None`; that is not an error here (tests use it to show
/// that something hangs). See [`run_ok`] for "must succeed".
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Outcome> {
    run_raw(cmd, timeout).map(RawOutcome::into_outcome_lossy)
}

/// Runs `cmd` like [`run`] and returns its stdout; fails (with its stderr
/// in the error) if it exits non-zero or misses `timeout`.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<String> {
    Ok(run(cmd, timeout)?.check(timeout)?.stdout)
}

/// Runs `cmd` like [`run_ok`] and returns its stdout as bytes, unaltered
/// (binary output such as `xz -dc`).
pub fn run_ok_bytes(cmd: &mut Command, timeout: Duration) -> Result<Vec<u8>> {
    let mut raw = run_raw(cmd, timeout)?;
    let stdout = std::mem::take(&mut raw.stdout);
    raw.into_outcome_lossy().check(timeout)?;
    Ok(stdout)
}

/// [`Outcome`] with the output as bytes: what a host command and a guest
/// command (the test bed's `vm::exec`) both produce before their output
/// becomes text.
pub struct RawOutcome {
    /// The command line, for messages.
    pub command: String,
    /// Exit status; `None` when it was killed at its deadline.
    pub status: Option<ExitStatus>,
    /// Standard output as produced.
    pub stdout: Vec<u8>,
    /// Standard error as produced.
    pub stderr: Vec<u8>,
    /// Wall time until it ended (or was killed).
    pub elapsed: Duration,
}

impl RawOutcome {
    /// The outcome with its output as text (invalid UTF-8 replaced).
    pub fn into_outcome_lossy(self) -> Outcome {
        Outcome {
            command: self.command,
            status: self.status,
            stdout: String::from_utf8_lossy(&self.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&self.stderr).into_owned(),
            elapsed: self.elapsed,
        }
    }
}

fn run_raw(cmd: &mut Command, timeout: Duration) -> Result<RawOutcome> {
    let command = describe(cmd);
    let start = Instant::now();
    let mut child = spawn(cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()))?;
    let stdout = child.stdout.take().map(reader);
    let stderr = child.stderr.take().map(reader);

    let deadline = start + timeout;
    let mut pause = Duration::from_micros(500);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => return Err(Error::io(format!("waiting for `{command}`"), e)),
        }
        let now = Instant::now();
        if now >= deadline {
            // SIGKILL, not SIGTERM: stuck libiscsi clients ignore SIGTERM.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    // A grandchild that inherited the pipes could keep them open forever;
    // do not wait for it long.
    let collect = |rx: Option<mpsc::Receiver<Vec<u8>>>| {
        rx.and_then(|rx| rx.recv_timeout(Duration::from_secs(2)).ok()).unwrap_or_default()
    };
    Ok(RawOutcome { command, status, stdout: collect(stdout), stderr: collect(stderr), elapsed })
}

fn reader(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// A child process that is killed (SIGKILL) and reaped when the guard drops,
/// also when the test panics: the "process registry" of the fixtures, one
/// guard per process. Use it for long-running clients such as `iscsi-perf`.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    command: String,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin from /dev/null and stdout + stderr appended to
    /// `log` (created if missing).
    pub fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<ChildGuard> {
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| Error::io(format!("cannot open log {}", log.display()), e))
        };
        let child = spawn(cmd.stdin(Stdio::null()).stdout(open()?).stderr(open()?))?;
        Ok(ChildGuard { child, command: describe(cmd) })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line it was started with.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Exit status if it has exited (reaps it), `None` while it runs.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_wait().map_err(|e| Error::io(format!("waiting for `{}`", self.command), e))
    }

    /// Kills it with SIGKILL (if still running) and reaps it.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        let _ = self.child.kill();
        self.child.wait().map_err(|e| Error::io(format!("reaping `{}`", self.command), e))
    }

    /// The underlying [`Child`], e.g. to wait for it with a deadline.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_quotes_only_when_needed() {
        let mut cmd = Command::new("tgtadm");
        cmd.args(["--mode", "target", "a b", "it's", ""]);
        assert_eq!(describe(&cmd), r"tgtadm --mode target 'a b' 'it'\''s' ''");
    }

    #[test]
    fn missing_program_names_its_package() {
        let err = run(&mut Command::new("iscsi-no-such-tool"), Duration::from_secs(1));
        assert!(matches!(err, Err(Error::MissingTool { .. })));
        assert_eq!(package_for("/usr/sbin/tgtadm"), "tgt");
    }

    #[test]
    fn deadline_kills_the_child() {
        let out = run(Command::new("sleep").arg("10"), Duration::from_millis(100)).unwrap();
        assert!(out.timed_out());
        assert!(out.elapsed < Duration::from_secs(5), "{:?}", out.elapsed);
        assert!(matches!(out.check(Duration::from_millis(100)), Err(Error::CommandTimeout { .. })));
    }

    #[test]
    fn failure_carries_stderr() {
        let err = run_ok(Command::new("sh").args(["-c", "echo oops >&2; exit 3"]), Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("oops"), "{err}");
    }
}
