//! mpio-vm-agent: the guest side of `mpio_testbed::vm`'s control channel.
//!
//! Started by busybox init in the test VM. Runs commands the host asks for
//! on the virtio-serial port `mpio.agent` (frames of `proto.rs`, shared
//! with the host), streams their output back and reports how they ended.
//! The channel does not use the guest network, so network faults never cut
//! it. When the host side closes (the test process ended or died), the
//! agent powers the guest off, so no VM outlives its test.
//!
//! `mpio-vm-agent sd-notify SOCKET PROGRAM ARGS...` is a second use of
//! the same binary, for daemons under test (`mpio_testbed::daemon`): see
//! [`sd_notify`].
//!
//! Std only, statically linked: the host compiles this file with `rustc`
//! on demand (see `vm::agent`), and cargo builds it too so that it stays
//! formatted and lint-clean. Signals, sync and power-off go through
//! busybox (the workspace forbids `unsafe`, and so FFI).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[allow(unreachable_pub, dead_code)]
#[path = "../src/vm/proto.rs"]
mod proto;

use proto::Frame;

const BUSYBOX: &str = "/bin/busybox";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long output that a command's orphaned children keep writing into
/// its pipes may delay its exit report (as `cmd::run` on the host).
const PIPE_LINGER: Duration = Duration::from_secs(2);

/// Frames to the host: one writer, whole frames at a time.
#[derive(Clone)]
struct Out(Arc<Mutex<File>>);

impl Out {
    fn send(&self, kind: u8, id: u32, payload: Vec<u8>) {
        let frame = Frame::new(kind, id, payload);
        let mut port = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = frame.write_to(&mut *port) {
            // The host is gone; the reader sees it too and powers off.
            eprintln!("mpio-vm-agent: write to the host failed: {e}");
        }
    }
}

/// A running command: where its stdin goes, and its pid for signals.
struct Running {
    pid: u32,
    stdin: Sender<Option<Vec<u8>>>,
}

type Table = Arc<Mutex<HashMap<u32, Running>>>;

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "sd-notify") {
        sd_notify(&args[2..]);
    }
    let path = wait_for_port();
    let port = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(port) => port,
        Err(e) => fatal(&format!("cannot open {}: {e}", path.display())),
    };
    let reader = port.try_clone().unwrap_or_else(|e| fatal(&format!("dup of the port: {e}")));
    let out = Out(Arc::new(Mutex::new(port)));
    // Blocks until the host is connected: before that, the port reads as
    // end of stream, which would look like the host going away.
    out.send(proto::HELLO, 0, option_env!("MPIO_VM_AGENT_BUILD").unwrap_or("cargo build").as_bytes().to_vec());
    eprintln!("mpio-vm-agent: connected on {}", path.display());

    let table: Table = Arc::default();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, reader);
    loop {
        match Frame::read_from(&mut reader) {
            Ok(Some(frame)) => dispatch(frame, &out, &table),
            Ok(None) => {
                eprintln!("mpio-vm-agent: the host closed the channel; powering off");
                power_off();
            }
            Err(e) => {
                eprintln!("mpio-vm-agent: bad data from the host ({e}); powering off");
                power_off();
            }
        }
    }
}

fn dispatch(frame: Frame, out: &Out, table: &Table) {
    let id = frame.id;
    match frame.kind {
        proto::EXEC => match proto::decode_strings(&frame.payload) {
            Some(argv) if !argv.is_empty() => start(id, argv, out, table),
            _ => out.send(proto::FAILED, id, b"malformed or empty argv".to_vec()),
        },
        proto::STDIN | proto::STDIN_EOF => {
            let data = (frame.kind == proto::STDIN).then_some(frame.payload);
            if let Some(running) = lock(table).get(&id) {
                let _ = running.stdin.send(data);
            }
        }
        proto::SIGNAL => {
            let pid = lock(table).get(&id).map(|r| r.pid);
            if let (Some(pid), Some(sig)) = (pid, frame.payload_i32()) {
                // The process group first (pipelines, `sh -c`), then the
                // process itself in case it left the group.
                let sig = format!("-{sig}");
                let _ = Command::new(BUSYBOX).args(["kill", &sig, "--", &format!("-{pid}"), &pid.to_string()]).status();
            }
        }
        proto::PING => out.send(proto::PONG, id, Vec::new()),
        proto::POWEROFF => power_off(),
        other => eprintln!("mpio-vm-agent: unknown frame kind {other} (id {id}) ignored"),
    }
}

fn lock(table: &Table) -> std::sync::MutexGuard<'_, HashMap<u32, Running>> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

fn start(id: u32, argv: Vec<Vec<u8>>, out: &Out, table: &Table) {
    use std::os::unix::ffi::OsStrExt;
    let os = |b: &Vec<u8>| std::ffi::OsStr::from_bytes(b).to_owned();
    let mut cmd = Command::new(os(&argv[0]));
    cmd.args(argv[1..].iter().map(os))
        .env("PATH", PATH)
        .env("HOME", "/root")
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let msg = format!("cannot run {}: {e}", String::from_utf8_lossy(&argv[0]));
            return out.send(proto::FAILED, id, msg.into_bytes());
        }
    };
    let pid = child.id();
    let (stdin_tx, stdin_rx) = mpsc::channel();
    lock(table).insert(id, Running { pid, stdin: stdin_tx });
    out.send(proto::STARTED, id, pid.to_le_bytes().to_vec());

    if let Some(stdin) = child.stdin.take() {
        thread::spawn(move || feed(stdin, stdin_rx));
    }
    let (done_tx, done_rx) = mpsc::channel();
    let pumps = [
        child.stdout.take().map(|p| pump(p, proto::STDOUT, id, out.clone(), done_tx.clone())),
        child.stderr.take().map(|p| pump(p, proto::STDERR, id, out.clone(), done_tx)),
    ];
    let (out, table) = (out.clone(), table.clone());
    thread::spawn(move || {
        let status = match child.wait() {
            Ok(status) => status.into_raw(),
            Err(e) => {
                eprintln!("mpio-vm-agent: wait for pid {pid}: {e}");
                255 << 8
            }
        };
        lock(&table).remove(&id);
        for _ in pumps.iter().flatten() {
            if done_rx.recv_timeout(PIPE_LINGER).is_err() {
                break;
            }
        }
        // Output the pumps still send after this is dropped by the host.
        out.send(proto::EXITED, id, status.to_le_bytes().to_vec());
    });
}

/// `sd-notify SOCKET PROGRAM ARGS...`: runs PROGRAM as systemd runs a
/// `Type=notify` service, as far as readiness goes (busybox has no
/// service manager): binds the datagram socket SOCKET (replacing a stale
/// one) before PROGRAM starts, so no notification is lost, and starts
/// PROGRAM with `NOTIFY_SOCKET=SOCKET`, stdin from /dev/null and its
/// stdout joined to our stderr. Our stdout carries one line per fact, for
/// the host to wait on: `pid N`, `notify MESSAGE` (the message's lines
/// joined by spaces: `notify READY=1 STATUS=...`), and `exit STATUS` when
/// PROGRAM ends; then we exit with its exit code, or 128 + the signal that
/// killed it (as a shell reports it). Signals for PROGRAM go to its pid;
/// one to our process group reaches both.
fn sd_notify(args: &[OsString]) -> ! {
    let [socket, program, rest @ ..] = args else {
        eprintln!("usage: mpio-vm-agent sd-notify SOCKET PROGRAM [ARGS...]");
        std::process::exit(2);
    };
    let _ = fs::remove_file(socket);
    let listener = UnixDatagram::bind(socket).unwrap_or_else(|e| {
        eprintln!("mpio-vm-agent sd-notify: cannot bind {}: {e}", socket.to_string_lossy());
        std::process::exit(125);
    });
    let mut child = Command::new(program)
        .args(rest)
        .env("NOTIFY_SOCKET", socket)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .spawn()
        .unwrap_or_else(|e| {
            eprintln!("mpio-vm-agent sd-notify: cannot run {}: {e}", program.to_string_lossy());
            std::process::exit(127);
        });
    // Rust's stdout is line-buffered: every line leaves at once.
    println!("pid {}", child.id());
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = listener.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]);
            println!("notify {}", msg.trim_end().replace('\n', " "));
        }
    });
    let status = child.wait().unwrap_or_else(|e| {
        eprintln!("mpio-vm-agent sd-notify: wait: {e}");
        std::process::exit(125);
    });
    println!("exit {status}");
    std::process::exit(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Copies frames of the host into the command's stdin until EOF.
fn feed(mut stdin: std::process::ChildStdin, rx: Receiver<Option<Vec<u8>>>) {
    while let Ok(Some(data)) = rx.recv() {
        if stdin.write_all(&data).is_err() {
            break; // the command closed its stdin; drop the rest
        }
    }
}

/// Forwards a pipe to the host as frames of `kind`; says when it is done.
fn pump(mut pipe: impl Read + Send + 'static, kind: u8, id: u32, out: Out, done: Sender<()>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.send(kind, id, buf[..n].to_vec()),
            }
        }
        let _ = done.send(());
    })
}

/// The `/dev/vportNpM` whose name is [`proto::PORT_NAME`]; waits for
/// devtmpfs to create it.
fn wait_for_port() -> PathBuf {
    for _ in 0..3000 {
        if let Ok(entries) = fs::read_dir("/sys/class/virtio-ports") {
            for entry in entries.flatten() {
                let name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
                let dev = PathBuf::from("/dev").join(entry.file_name());
                if name.trim() == proto::PORT_NAME && dev.exists() {
                    return dev;
                }
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
    fatal("no virtio-serial port named mpio.agent after 30 s (qemu -device virtserialport,name=mpio.agent?)")
}

fn fatal(msg: &str) -> ! {
    eprintln!("mpio-vm-agent: {msg}; powering off");
    power_off()
}

fn power_off() -> ! {
    let _ = Command::new(BUSYBOX).arg("sync").status();
    loop {
        let _ = Command::new(BUSYBOX).args(["poweroff", "-f"]).status();
        thread::sleep(Duration::from_secs(1));
    }
}
