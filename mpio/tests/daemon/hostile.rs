//! The daemon under hostile input, with no SAN behind it (its device's
//! paths lead nowhere): a flood of connections to the metrics port, its
//! file descriptors exhausted, an endless control line, durations too
//! long for the clock, and a reload the running policy refuses. It stays
//! up, answers `mpio status`, and keeps its log small.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::harness::{Daemon, offline_config};

fn with_metrics(config: String) -> String {
    config.replace("[metrics]\nenabled = false", "[metrics]\nlisten = \"127.0.0.1:0\"")
}

/// Lines of the daemon's log that contain `word`.
fn log_lines(d: &Daemon, word: &str) -> usize {
    d.log().lines().filter(|l| l.contains(word)).count()
}

/// Waits (30 s at most) until the daemon's log has a line with `word`.
fn await_log(d: &Daemon, word: &str) {
    let t0 = Instant::now();
    while log_lines(d, word) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(30), "no {word:?} in the log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_flood_of_metrics_connections_holds_a_bounded_number_of_descriptors() {
    let d = Daemon::start(|dir| with_metrics(offline_config(dir, "")));
    let url = d.json(&["status"])["metrics"].as_str().unwrap().to_owned();
    let addr = url.trim_start_matches("http://").trim_end_matches("/metrics").to_owned();
    let before = d.open_fds();
    // Far more than the 16 it serves at once (and within the kernel's
    // listen backlog of 128, past which connects themselves stall); each
    // sends nothing.
    let hogs: Vec<TcpStream> = (0..120).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    // `mpio status` answers while they are held: the control socket and
    // the daemon still have descriptors.
    let s = d.json(&["status"]);
    assert_eq!(s["devices"][0]["name"], "d0");
    let held = d.open_fds();
    assert!(held <= before + 16 + 4, "{held} descriptors open with {} clients (before: {before})", hogs.len());
    drop(hogs);
    // A scrape is served once the hogs are gone.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(d.log().lines().count() < 100, "the log grew:\n{}", d.log());
}

#[test]
fn out_of_descriptors_the_accept_loops_back_off_and_the_log_stays_small() {
    let mut d = Daemon::start_limited(64, |dir| offline_config(dir, ""));
    // Every NBD client takes a descriptor of the daemon until the 64 are
    // gone; after that accept fails (EMFILE) on every listener.
    let nbd = d.nbd_socket();
    let mut hogs: Vec<UnixStream> = Vec::new();
    while hogs.len() < 100 {
        hogs.push(UnixStream::connect(&nbd).unwrap());
    }
    await_log(&d, "accept failed");
    let lines_then = log_lines(&d, "accept failed");
    let t0 = Instant::now();
    // A CLI waits meanwhile (its connection is in the backlog).
    let socket = d.socket();
    let status = std::thread::spawn(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mpio"))
            .args(["status", "--json"])
            .env("MPIO_SOCKET", socket)
            .output()
    });
    std::thread::sleep(Duration::from_secs(2));
    let lines = log_lines(&d, "accept failed") - lines_then;
    let secs = t0.elapsed().as_secs_f64();
    // One line a second per listener (NBD, control socket) at most, and a
    // spare; a loop without a pause wrote thousands.
    assert!((lines as f64) <= 2.0 * (secs + 1.0) + 2.0, "{lines} accept failures logged in {secs:.1} s:\n{}", d.log());
    drop(hogs);
    let out = status.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "mpio status after the descriptors came back: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.stop().success(), "{}", d.log());
}

#[test]
fn an_endless_control_line_is_cut_off_and_costs_no_memory() {
    let d = Daemon::start(|dir| offline_config(dir, ""));
    let rss = d.status_kb("VmRSS");
    let mut s = UnixStream::connect(d.socket()).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..50 {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("longer than 65536 bytes") && msg.contains("mpio CLI"), "{msg}");
    writer.join().unwrap();
    let grown = d.status_kb("VmRSS").saturating_sub(rss);
    assert!(grown < 16 << 10, "the daemon grew by {grown} kB reading a 50 MB line");
    assert_eq!(d.json(&["status"])["devices"][0]["name"], "d0");
}

#[test]
fn durations_too_long_for_the_clock_are_refused_and_the_daemon_stays() {
    let d = Daemon::start(|dir| offline_config(dir, ""));
    let e = d.fails(&["hold", "d0", "99999999999999999999s"]);
    assert!(e.contains("longer than a year"), "{e}");
    let good = std::fs::read_to_string(&d.config).unwrap();
    for bad in ["hold = \"18446744073709551616s\"", "hold = \"1e300\""] {
        std::fs::write(&d.config, good.replace("lun = 1", &format!("lun = 1\n{bad}"))).unwrap();
        let e = d.fails(&["reload"]);
        assert!(e.contains("mpio.toml:") && e.contains("longer than a year") && e.contains("nothing changed"), "{e}");
        let o = d.cli(&["config", "check", d.config.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "config check must refuse it, not panic");
    }
    std::fs::write(
        &d.config,
        good.replace("probation_interval = \"250ms\"", "probation_interval = \"99999999999999999999s\""),
    )
    .unwrap();
    let mut follow = d.follow(&[]);
    d.hangup();
    let line = follow.until(&["config_reload_refused"]);
    assert!(line.contains("probation_interval") || line.contains("longer than a year"), "{line}");
    assert_eq!(d.json(&["device", "show", "d0"])["hold"], "20s", "the running hold stays");
}

#[test]
fn a_reload_the_running_policy_refuses_changes_nothing() {
    let d = Daemon::start(|dir| {
        offline_config(dir, "policy = \"fail-over-only\"")
            .replace("portal = \"127.0.0.1:1\"", "portal = \"127.0.0.1:1\"\nrole = \"primary\"")
    });
    // An administrator makes p2 the primary; the file removes p2 and adds
    // p3. The removal would be refused after p3 was added: the whole
    // reload is refused before anything changes.
    d.ok(&["path", "set-active", "d0", "p2"]);
    let text = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        text.replace("name = \"p2\"\nportal = \"127.0.0.2:1\"", "name = \"p3\"\nportal = \"127.0.0.3:1\""),
    )
    .unwrap();
    let e = d.fails(&["reload"]);
    assert!(e.contains("nothing changed") && e.contains("path p2 removed") && e.contains("0xEFFF"), "{e}");
    let paths = d.json(&["path", "list", "d0"]);
    let names: Vec<&str> = paths.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["p1", "p2"]);
    assert_eq!(d.json(&["policy", "show", "d0"])["primary"], "p2");
    let events = d.ok(&["events", "--device", "d0", "--last", "100"]);
    assert!(!events.contains("path_added"), "{events}");
}
