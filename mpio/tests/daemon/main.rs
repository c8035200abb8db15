//! `mpio daemon` against a real tgtd: readiness, the control socket and
//! every CLI command, events, reload, and shutdown.

mod harness;
mod hostile;
mod io;
mod reload;
mod restart;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;

use harness::{Daemon, config_toml, device_toml, path_toml};
use mpio_testbed::require_root;
use mpio_testbed::tgtd::{LunSpec, TargetSpec, Tgtd};

fn tgtd(portals: u8) -> Tgtd {
    Tgtd::builder().portals(portals).target(TargetSpec::new("daemon").lun(LunSpec::file(64 << 20))).start().unwrap()
}

#[test]
fn the_cli_drives_a_running_daemon() {
    require_root!();
    let t = tgtd(3);
    let mut d = Daemon::start(|dir| config_toml(dir, &t, &device_toml(&t, "d0", &[0, 1, 2], "")));
    assert_eq!(d.ready_status, "1 devices ready");
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the control socket is root-only");
    // Ready is one usable path per device; the others may still be logging in.
    let w = d.json(&["device", "wait", "d0", "--all-paths"]);
    assert_eq!((w["state"].as_str(), w["paths_usable"].as_u64()), (Some("optimal"), Some(3)), "{w}");

    let s = d.json(&["status"]);
    assert_eq!(s["ready"], true);
    assert_eq!(s["devices"][0]["state"], "optimal");
    assert_eq!(s["devices"][0]["paths_usable"], 3);
    let human = d.ok(&["status"]);
    assert!(human.contains("d0") && human.contains("optimal") && human.contains("3/3"), "{human}");

    let paths = d.json(&["path", "list", "d0"]);
    let states: Vec<&str> = paths.as_array().unwrap().iter().map(|p| p["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["active", "active", "active"]);
    assert_eq!(paths[1]["portal"], t.portal(1).to_string());
    assert_eq!(paths[1]["source"], "127.0.20.2");

    // Policies: set, show, and refusals with the seed's codes.
    let p = d.json(&["policy", "set", "d0", "fail-over-only", "--primary", "p2"]);
    assert_eq!((p["policy"].as_str(), p["primary"].as_str()), (Some("fail-over-only"), Some("p2")));
    assert_eq!(p["carrying_io"], serde_json::json!(["p2"]));
    let e = d.fails(&["policy", "set", "d0", "weighted", "--weights", "p1=1"]);
    assert!(e.contains("0xEFFF0058") && e.contains("p2"), "{e}");
    let e = d.fails(&["policy", "set", "d0", "fail-over-only", "--primary", "p9"]);
    assert!(e.contains("0xEFFF0059"), "{e}");
    let e = d.fails(&["policy", "set", "d0", "fail-over-only", "--primary", "p1,p3"]);
    assert!(e.contains("0xEFFF005A"), "{e}");
    let e = d.fails(&["policy", "set", "d0", "fastest"]);
    assert!(e.contains("0xEFFF0055"), "{e}");
    assert_eq!(d.json(&["policy", "show", "d0"])["primary"], "p2", "a refused change leaves the running policy");

    // Path administration, seen in the event stream as it happens.
    let mut follow = d.follow(&["--device", "d0"]);
    d.ok(&["path", "fail", "d0", "p2"]);
    follow.until(&["p2", "path_disabled"]);
    let line = follow.until(&["failover"]);
    assert!(line.contains("d0"), "{line}");
    let paths = d.json(&["path", "list", "d0"]);
    assert_eq!(paths[1]["state"], "disabled");
    d.ok(&["path", "reinstate", "d0", "p2"]);
    follow.until(&["p2", "path_ready"]);
    let e = d.fails(&["path", "fail", "d0", "p9"]);
    assert!(e.contains("p9"), "{e}");
    let e = d.fails(&["device", "show", "nope"]);
    assert!(e.contains("no device named \"nope\"") && e.contains("d0"), "{e}");

    d.ok(&["hold", "d0", "queue"]);
    assert_eq!(d.json(&["device", "show", "d0"])["hold"], "queue");
    let e = d.fails(&["hold", "d0", "sometimes"]);
    assert!(e.contains("queue, fail"), "{e}");

    let events = d.ok(&["events", "--device", "d0"]);
    assert!(events.contains("path_disabled") && events.contains("path_reinstated"), "{events}");
    assert_eq!(d.ok(&["log", "level", "debug"]).trim(), "log level: debug");
    assert_eq!(d.ok(&["log", "level"]).trim(), "log level: debug");
    assert!(d.fails(&["log", "level", "loud=="]).contains("log filter"));

    assert!(d.stop().success(), "{}", d.log());
    assert!(!d.socket().exists(), "the control socket is removed on exit");
    let sessions = t.tgtadm(&["--op", "show", "--mode", "target"]).unwrap();
    assert!(!sessions.contains(&format!("Initiator: {}", harness::INIT)), "every session logged out:\n{sessions}");
}

#[test]
fn a_cli_of_another_protocol_version_is_told_so() {
    require_root!();
    let t = tgtd(1);
    let d = Daemon::start(|dir| config_toml(dir, &t, &device_toml(&t, "d0", &[0], "")));
    let mut s = UnixStream::connect(d.socket()).unwrap();
    s.write_all(b"{\"version\":99,\"request\":{\"op\":\"status\"}}\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("protocol 99") && msg.contains("daemon speaks 1"), "{msg}");
    let e = d.fails(&["--socket", "/nonexistent/mpio.sock", "status"]);
    assert!(e.contains("is the daemon running"), "{e}");
}

#[test]
fn reload_adds_and_removes_paths_and_refuses_what_it_cannot_apply() {
    require_root!();
    let t = tgtd(3);
    let mut d = Daemon::start(|dir| config_toml(dir, &t, &device_toml(&t, "d0", &[0, 1], "")));
    let text = std::fs::read_to_string(&d.config).unwrap();

    // p3 added, p1 removed, policy changed: one reload.
    let next = text
        .replace(&path_toml(&t, 0), &path_toml(&t, 2))
        .replace("lun = 1", "lun = 1\npolicy = \"least-queue-depth\"");
    std::fs::write(&d.config, &next).unwrap();
    let out = d.ok(&["reload"]);
    assert!(
        out.contains("path p3 added") && out.contains("path p1 removed") && out.contains("policy least-queue-depth"),
        "{out}"
    );
    let paths = d.json(&["path", "list", "d0"]);
    let names: Vec<&str> = paths.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["p2", "p3"]);
    assert_eq!(d.ok(&["reload"]).trim(), "configuration reloaded: nothing changed");

    // A broken file changes nothing and says where it is broken.
    std::fs::write(&d.config, next.replace("lun = 1", "lun = 1\nbogus = 1")).unwrap();
    let e = d.fails(&["reload"]);
    assert!(e.contains("mpio.toml:") && e.contains("bogus"), "{e}");
    std::fs::write(&d.config, next.replace(&t.portal(2).to_string(), &t.portal(0).to_string())).unwrap();
    let e = d.fails(&["reload"]);
    assert!(e.contains("path p3") && e.contains("new name"), "{e}");
    assert_eq!(d.json(&["device", "show", "d0"])["paths_usable"], 2);

    // SIGHUP does the same as `mpio reload`; the event says what changed.
    let mut follow = d.follow(&[]);
    std::fs::write(&d.config, next.replace("least-queue-depth", "round-robin")).unwrap();
    d.hangup();
    let line = follow.until(&["config_reloaded"]);
    assert!(line.contains("policy round-robin"), "{line}");
    assert!(d.stop().success());
}

#[test]
fn readiness_is_bounded_when_a_device_cannot_come_up() {
    require_root!();
    let t = tgtd(1);
    let d = Daemon::start(|dir| {
        // Nothing listens on port 1: the device keeps trying.
        config_toml(dir, &t, "\n[[device]]\nname = \"dead\"\ntarget = \"san\"\nlun = 1\n[[device.path]]\nname = \"p1\"\nportal = \"127.0.0.1:1\"\n")
            .replace("ready_timeout = \"10s\"", "ready_timeout = \"1s\"")
    });
    assert_eq!(d.ready_status, "waiting for dead");
    let s = d.json(&["status"]);
    assert_eq!(s["ready"], false);
    assert_eq!(s["devices"][0]["state"], "starting");
    let dev = d.json(&["device", "show", "dead"]);
    let why = dev["paths"][0]["last_failure"].as_str().unwrap_or_default();
    assert!(why.contains("refused") || why.contains("connect"), "{dev}");
    // A script waiting for it gets the timeout and the path's reason.
    let e = d.fails(&["device", "wait", "dead", "--timeout", "1s"]);
    assert!(e.contains("p1") && (e.contains("refused") || e.contains("connect")), "{e}");
    let e = d.fails(&["device", "wait", "nope"]);
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn config_check_names_file_line_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_mpio"))
        .args(["config", "check", concat!(env!("CARGO_MANIFEST_DIR"), "/mpio.example.toml")])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", harness::text(&ok.stderr));
    assert!(harness::text(&ok.stdout).contains("device data0"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "initiator = \"iqn.2026-11.x:y\"\n[daemon]\nlogg = \"info\"\n").unwrap();
    let o =
        std::process::Command::new(env!("CARGO_BIN_EXE_mpio")).args(["config", "check"]).arg(&bad).output().unwrap();
    let err = harness::text(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("bad.toml:3:") && err.contains("logg"), "{err}");
}
