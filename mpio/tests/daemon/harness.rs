//! A daemon under test: its configuration, its process, readiness through
//! a real sd_notify socket, and the CLI pointed at its control socket.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use mpio_testbed::cmd::Outcome;
use mpio_testbed::tgtd::Tgtd;

pub(crate) const INIT: &str = "iqn.2026-11.test.mpio:initiator-d";

/// A `[[device]]` over portals `portals` of `tgtd` (target 1, LUN 1),
/// path `p{i+1}` on portal `i` from source address 127.0.20.(i+1).
pub(crate) fn device_toml(tgtd: &Tgtd, name: &str, portals: &[usize], extra: &str) -> String {
    let mut s = format!("\n[[device]]\nname = \"{name}\"\ntarget = \"san\"\nlun = 1\n{extra}\n");
    for &i in portals {
        s.push_str(&path_toml(tgtd, i));
    }
    s
}

/// One `[[device.path]]` table: `p{i+1}` through portal `i`.
pub(crate) fn path_toml(tgtd: &Tgtd, i: usize) -> String {
    format!(
        "\n[[device.path]]\nname = \"p{}\"\nportal = \"{}\"\nsource = \"127.0.20.{}\"\n",
        i + 1,
        tgtd.portal(i),
        i + 1
    )
}

/// The file around devices: sockets in `dir`, quick timers.
pub(crate) fn config_toml(dir: &Path, tgtd: &Tgtd, devices: &str) -> String {
    config_for(dir, tgtd.iqn(1), devices)
}

/// A file whose device `d0` has paths `p1` and `p2` to a port where
/// nothing listens: they keep connecting, and the daemon reports ready
/// after 1 s. Enough for what needs no SAN (hostile input, reload rules).
pub(crate) fn offline_config(dir: &Path, extra: &str) -> String {
    let device = format!(
        "\n[[device]]\nname = \"d0\"\ntarget = \"san\"\nlun = 1\n{extra}\n\
         [[device.path]]\nname = \"p1\"\nportal = \"127.0.0.1:1\"\n\
         [[device.path]]\nname = \"p2\"\nportal = \"127.0.0.2:1\"\n"
    );
    config_for(dir, "iqn.2026-11.test.mpio:offline", &device)
        .replace("ready_timeout = \"10s\"", "ready_timeout = \"1s\"")
}

fn config_for(dir: &Path, iqn: &str, devices: &str) -> String {
    format!(
        r#"initiator = "{INIT}"

[daemon]
control_socket = "{dir}/mpio.sock"
log = "info"
ready_timeout = "10s"

[metrics]
enabled = false

[nbd]
socket = "{dir}/nbd.sock"

[timers]
probation_interval = "250ms"

[[target]]
name = "san"
iqn = "{iqn}"
{devices}"#,
        dir = dir.display(),
    )
}

/// A running `mpio daemon`.
pub(crate) struct Daemon {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
    child: Option<Child>,
    notify: UnixDatagram,
    /// The STATUS= of the READY=1 message.
    pub(crate) ready_status: String,
}

impl Daemon {
    /// Writes `config` (a function of the state directory) and starts the
    /// daemon; returns once it told the notify socket it is ready.
    pub(crate) fn start(config: impl FnOnce(&Path) -> String) -> Daemon {
        Daemon::start_with(None, config)
    }

    /// [`Daemon::start`] with soft and hard limits of `nofile` open files.
    pub(crate) fn start_limited(nofile: u64, config: impl FnOnce(&Path) -> String) -> Daemon {
        Daemon::start_with(Some(nofile), config)
    }

    fn start_with(nofile: Option<u64>, config: impl FnOnce(&Path) -> String) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("mpio.toml");
        std::fs::write(&path, config(dir.path())).expect("write config");
        let notify_path = dir.path().join("notify");
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        notify.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let mut d = Daemon { dir, config: path, child: None, notify, ready_status: String::new() };
        d.spawn(nofile);
        d
    }

    /// Starts the daemon on this state directory and configuration (again,
    /// after [`Daemon::kill`]: the stale sockets of the killed one are still
    /// there) and waits for its READY=1. Its log goes on in the same file.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        self.spawn(None);
    }

    fn spawn(&mut self, nofile: Option<u64>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .expect("log file");
        let mut cmd = match nofile {
            None => Command::new(env!("CARGO_BIN_EXE_mpio")),
            Some(n) => {
                // The hard limit too: the daemon raises its soft limit to
                // the hard one.
                let mut c = Command::new("bash");
                c.args([
                    "-c",
                    &format!("ulimit -Sn {n} && ulimit -Hn {n} && exec \"$0\" \"$@\""),
                    env!("CARGO_BIN_EXE_mpio"),
                ]);
                c
            }
        };
        let child = cmd
            .args(["daemon", "--config"])
            .arg(&self.config)
            .env("NOTIFY_SOCKET", self.dir.path().join("notify"))
            .env_remove("MPIO_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mpio daemon");
        self.child = Some(child);
        let msg = self.next_notify();
        assert!(msg.starts_with("READY=1"), "first notification: {msg:?}\n{}", self.log());
        self.ready_status = msg.lines().find_map(|l| l.strip_prefix("STATUS=")).unwrap_or_default().to_owned();
    }

    /// The next sd_notify message (waits up to 60 s).
    pub(crate) fn next_notify(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self.notify.recv(&mut buf).unwrap_or_else(|e| panic!("no sd_notify message: {e}\n{}", self.log()));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.path().join("mpio.sock")
    }

    pub(crate) fn nbd_socket(&self) -> PathBuf {
        self.dir.path().join("nbd.sock")
    }

    /// The NBD URI of `device`'s export.
    pub(crate) fn export_uri(&self, device: &str) -> String {
        format!("nbd+unix:///{device}?socket={}", self.nbd_socket().display())
    }

    /// The daemon's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Runs the CLI against this daemon.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mpio"))
            .args(args)
            .env("MPIO_SOCKET", self.socket())
            .output()
            .expect("run mpio")
    }

    /// Runs the CLI and expects success; returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(o.status.success(), "mpio {args:?} failed: {}\n{}", text(&o.stderr), self.log());
        text(&o.stdout)
    }

    /// Runs the CLI with `--json` and parses the answer.
    pub(crate) fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// Runs the CLI and expects one line of error; returns it.
    pub(crate) fn fails(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "mpio {args:?} should fail: {}", text(&o.stdout));
        assert_eq!(err.lines().count(), 1, "one line of error, got {err:?}");
        err.trim_end().to_owned()
    }

    /// `mpio events --follow` running in the background, subscribed: it
    /// is asked for the last past event too, and that line has arrived
    /// (the daemon subscribes a follower before it sends the history).
    pub(crate) fn follow(&self, args: &[&str]) -> Follower {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mpio"))
            .args(["events", "--follow", "--last", "1"])
            .args(args)
            .env("MPIO_SOCKET", self.socket())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn mpio events --follow");
        let lines = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let follower = Follower { child, lines: rx };
        follower.lines.recv_timeout(Duration::from_secs(30)).expect("the last past event");
        follower
    }

    /// SIGTERM, and the exit status.
    pub(crate) fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .expect("SIGTERM");
        child.wait().expect("wait for the daemon")
    }

    /// SIGKILL, as a crash or the OOM killer would: no logout, no cleanup.
    pub(crate) fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("wait for the daemon");
    }

    /// The daemon's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Open file descriptors of the daemon.
    pub(crate) fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(Iterator::count).unwrap_or(0)
    }

    /// A `/proc/PID/status` value in kB (`VmRSS`, `VmHWM`).
    pub(crate) fn status_kb(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or(0)
    }

    /// SIGHUP.
    pub(crate) fn hangup(&self) {
        let pid = self.child.as_ref().expect("running").id();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP)
            .expect("SIGHUP");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A background `mpio events --follow`.
pub(crate) struct Follower {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Follower {
    /// Reads event lines until one contains every word of `want` (30 s at
    /// most); returns it.
    pub(crate) fn until(&mut self, want: &[&str]) -> String {
        let mut seen = String::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("no event with {want:?} ({e}); saw:\n{seen}"));
            if want.iter().all(|w| line.contains(w)) {
                return line;
            }
            seen.push_str(&line);
            seen.push('\n');
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `qemu-io -f raw -c CMD ...` on `uri`, killed if it takes more than two
/// minutes (a hung export must fail the test, not hang it). qemu-io reports
/// a failed command in its output, not always in its exit status.
pub(crate) fn qemu_io(uri: &str, cmds: &[String]) -> Outcome {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    mpio_testbed::cmd::run(c.arg(uri), Duration::from_secs(120)).expect("qemu-io (package qemu-utils)")
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
