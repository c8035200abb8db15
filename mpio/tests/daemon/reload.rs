//! Reload against tgtd: devices added and removed while another runs, and
//! a new hold in effect on a running device, seen in what its I/O does.

use mpio_testbed::require_root;
use mpio_testbed::tgtd::{LunSpec, TargetSpec, Tgtd};

use crate::harness::{self, Daemon, config_toml, device_toml};

/// `qemu-io -c CMD` on the NBD export of `device`; its output, and whether
/// the command succeeded (qemu-io reports a failed read in its output).
fn qemu_io(d: &Daemon, device: &str, cmd: &str) -> (String, bool) {
    qemu_io_uri(&d.export_uri(device), cmd)
}

fn qemu_io_uri(uri: &str, cmd: &str) -> (String, bool) {
    let o = harness::qemu_io(uri, &[cmd.to_owned()]);
    let out = format!("{}{}", o.stdout, o.stderr);
    let ok = o.success() && !out.contains("failed");
    (out, ok)
}

/// An NBD client that stays connected: qemu-io reading commands from a
/// pipe, one at a time.
struct Client {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Client {
    /// Connected once its first read succeeded.
    fn connect(uri: &str) -> Client {
        use std::process::{Command, Stdio};
        let mut child = Command::new("qemu-io")
            .args(["-f", "raw", uri])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-io (package qemu-utils)");
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut c = Client { child, out };
        assert!(c.read(), "qemu-io could not read through {uri}");
        c
    }

    /// Reads 4 KiB at 0; whether it succeeded. qemu-io answers each
    /// command with a line; one that has lost its server fails the read or
    /// exits (end of its output).
    fn read(&mut self) -> bool {
        use std::io::{BufRead, Write};
        let Some(stdin) = self.child.stdin.as_mut() else { return false };
        if stdin.write_all(b"read 0 4k\n").and_then(|()| stdin.flush()).is_err() {
            return false;
        }
        let mut line = String::new();
        loop {
            line.clear();
            match self.out.read_line(&mut line) {
                Ok(0) | Err(_) => return false,
                Ok(_) if line.contains("read 4096/4096 bytes") => return true,
                Ok(_) if line.contains("failed") || line.contains("rror") => return false,
                Ok(_) => {}
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn reload_adds_and_removes_devices_and_a_new_hold_takes_effect() {
    require_root!();
    let t = Tgtd::builder()
        .portals(1)
        .target(TargetSpec::new("rd").lun(LunSpec::file(16 << 20)).lun(LunSpec::file(16 << 20)))
        .start()
        .unwrap();
    let d0 = |hold: &str| device_toml(&t, "d0", &[0], &format!("hold = \"{hold}\""));
    let d1 = device_toml(&t, "d1", &[0], "").replace("lun = 1", "lun = 2");
    let d = Daemon::start(|dir| config_toml(dir, &t, &d0("queue")));
    let (out, ok) = qemu_io(&d, "d0", "write -P 0x5a 0 64k");
    assert!(ok, "{out}");

    // d1 added, d0's hold from queue to 1 s: one reload.
    let base = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, base.replace(&d0("queue"), &format!("{}{d1}", d0("1s")))).unwrap();
    let out = d.ok(&["reload"]);
    assert!(out.contains("device d1 added (1 paths)") && out.contains("hold"), "{out}");
    // d1 is a device of its own: its export reads and writes its LU.
    let (out, ok) = qemu_io(&d, "d1", "write -P 0xa5 0 64k");
    assert!(ok, "{out}");
    let (out, ok) = qemu_io(&d, "d1", "read -P 0xa5 0 64k");
    assert!(ok, "d1 reads what was written to it: {out}");
    let (out, ok) = qemu_io(&d, "d0", "read -P 0x5a 0 64k");
    assert!(ok, "d0 still reads its own data: {out}");

    // The new hold: with every path of d0 down, a read is held for 1 s and
    // then fails. Under the old hold (queue) it would wait for a path, and
    // hold_expired would never come.
    let mut events = d.follow(&["--device", "d0"]);
    d.ok(&["path", "fail", "d0", "p1"]);
    let read = std::thread::spawn({
        let uri = format!("nbd+unix:///d0?socket={}", d.nbd_socket().display());
        move || qemu_io_uri(&uri, "read 0 4k")
    });
    // Awaited as events (30 s each at most), so a hold that never ends
    // fails the test instead of hanging it.
    events.until(&["hold_started"]);
    events.until(&["hold_expired"]);
    let (out, ok) = read.join().unwrap();
    assert!(!ok, "a read with every path down and a 1 s hold must fail: {out}");
    d.ok(&["path", "reinstate", "d0", "p1"]);
    d.ok(&["device", "wait", "d0"]);

    // d0 removed: refused while a client is connected to its export,
    // naming it; forced, its export is gone (the client is disconnected),
    // d1 is untouched.
    let mut client = Client::connect(&d.export_uri("d0"));
    let now = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, now.replace(&d0("1s"), "")).unwrap();
    let e = d.fails(&["reload"]);
    assert!(e.contains("NBD export d0 has 1 client(s) connected") && e.contains("nothing changed"), "{e}");
    d.ok(&["device", "show", "d0"]);
    let out = d.ok(&["reload", "--force"]);
    assert!(out.contains("device d0 removed"), "{out}");
    assert!(!client.read(), "the removed export's client must be disconnected");
    let e = d.fails(&["device", "show", "d0"]);
    assert!(e.contains("d0"), "{e}");
    let (out, ok) = qemu_io(&d, "d0", "read 0 4k");
    assert!(!ok, "the removed device's export must be gone: {out}");
    let (out, ok) = qemu_io(&d, "d1", "read -P 0xa5 0 64k");
    assert!(ok, "{out}");

    // A reload answers once an added device serves, or after ready_timeout
    // with why not: nothing listens on port 1, so this one keeps trying.
    let now = std::fs::read_to_string(&d.config).unwrap();
    let dead = "\n[[device]]\nname = \"dead\"\ntarget = \"san\"\nlun = 1\n[[device.path]]\nname = \"p1\"\nportal = \"127.0.0.1:1\"\n";
    std::fs::write(&d.config, now.replace("ready_timeout = \"10s\"", "ready_timeout = \"1s\"") + dead).unwrap();
    let out = d.ok(&["reload"]);
    assert!(out.contains("device dead added") && out.contains("device dead: not usable yet"), "{out}");
    assert!(out.contains("p1") && (out.contains("refused") || out.contains("connect")), "the path's reason: {out}");
}
