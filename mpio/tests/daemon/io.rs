//! I/O through the daemon's NBD export with real clients: policy changes
//! and path administration under a verifying load, metrics that count
//! exactly what was done, and CHAP secrets that never show.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use mpio_testbed::netfault::RateLimit;
use mpio_testbed::require_root;
use mpio_testbed::tgtd::{LunSpec, TargetSpec, Tgtd};

use crate::harness::{self, Daemon, config_toml, device_toml};

const MIB: u64 = 1 << 20;

/// GET /metrics of the daemon (its address from `mpio status`).
fn scrape(d: &Daemon) -> String {
    let url = d.json(&["status"])["metrics"].as_str().expect("metrics enabled").to_owned();
    let addr = url.trim_start_matches("http://").trim_end_matches("/metrics");
    let mut s = TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read /metrics");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// Sum of a counter's samples whose labels contain every `labels` pair.
fn sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn with_metrics(config: String) -> String {
    config.replace("[metrics]\nenabled = false", "[metrics]\nlisten = \"127.0.0.1:0\"")
}

/// Each portal's rate under a paced [`Verifier`]: fio's 48 MiB of writes
/// and 48 MiB of verifying reads over at most three paths take at least
/// 4 s however fast the machine is, time for several passes of changes.
const PACE: u64 = 8 << 20;

/// fio writing 48 MiB at random through the export of `d0`, every block
/// verified after it was written.
struct Verifier {
    child: std::process::Child,
    report: std::path::PathBuf,
}

impl Verifier {
    /// Starts fio with every portal of `t` paced (see [`PACE`]), so that
    /// it is still writing while a test changes the device under it.
    fn start_paced(d: &Daemon, t: &Tgtd) -> (Verifier, Vec<RateLimit>) {
        let limits = t.portals().iter().map(|&p| RateLimit::new(p, PACE).expect("rate limit")).collect();
        let report = d.dir.path().join("fio.json");
        let child = Command::new("fio")
            .args([
                "--name=verify",
                "--ioengine=nbd",
                &format!("--uri={}", d.export_uri("d0")),
                "--rw=randwrite",
                "--bs=4k",
                "--iodepth=16",
                "--size=48M",
                "--verify=crc32c",
                "--verify_fatal=1",
                "--verify_state_save=0",
                "--output-format=json",
                &format!("--output={}", report.display()),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("fio (package fio)");
        (Verifier { child, report }, limits)
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for fio and checks that it wrote and verified everything
    /// without one error.
    fn finish(mut self, d: &Daemon) {
        assert!(self.child.wait().unwrap().success(), "fio failed: an I/O error or a verify mismatch\n{}", d.log());
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&self.report).unwrap()).unwrap();
        assert_eq!(v["jobs"][0]["error"], 0);
        assert_eq!(v["jobs"][0]["write"]["io_bytes"].as_u64(), Some(48 * MIB));
        assert!(v["jobs"][0]["read"]["io_bytes"].as_u64().unwrap() >= 48 * MIB, "every block verified");
    }
}

#[test]
fn policy_changes_and_path_administration_under_load_lose_nothing() {
    require_root!();
    let t = Tgtd::builder().portals(3).target(TargetSpec::new("io").lun(LunSpec::file(64 * MIB))).start().unwrap();
    let d = Daemon::start(|dir| config_toml(dir, &t, &device_toml(&t, "d0", &[0, 1, 2], "")));
    let (mut fio, _pace) = Verifier::start_paced(&d, &t);
    // Each change with the policy that runs after it.
    let changes: [(&[&str], &str); 8] = [
        (&["policy", "set", "d0", "fail-over-only", "--primary", "p2"], "fail-over-only"),
        (&["path", "set-active", "d0", "p3"], "fail-over-only"),
        (&["policy", "set", "d0", "round-robin-subset", "--active", "p1,p3"], "round-robin-subset"),
        (&["policy", "set", "d0", "weighted", "--weights", "p1=5,p2=1,p3=5"], "weighted"),
        (&["path", "set-weight", "d0", "p1", "1"], "weighted"),
        (&["policy", "set", "d0", "least-queue-depth"], "least-queue-depth"),
        (&["policy", "set", "d0", "service-time"], "service-time"),
        (&["policy", "set", "d0", "round-robin", "--switch", "64k"], "round-robin"),
    ];
    // Passes over every change during which writes completed: the changes
    // happened under load, not before it or after it.
    let mut passes_under_io = 0;
    while fio.running() {
        let before = writes(&d);
        for (args, policy) in changes {
            d.ok(args);
            assert_eq!(d.json(&["device", "show", "d0"])["policy"], *policy, "after mpio {args:?}");
        }
        d.ok(&["path", "fail", "d0", "p1"]);
        assert_eq!(path_state(&d, "p1"), "disabled");
        d.ok(&["path", "reinstate", "d0", "p1"]);
        if writes(&d) > before && fio.running() {
            passes_under_io += 1;
        }
    }
    fio.finish(&d);
    assert!(passes_under_io >= 2, "only {passes_under_io} passes of changes ran while writes completed");
}

/// Writes the device has completed, over all paths.
fn writes(d: &Daemon) -> u64 {
    d.json(&["device", "show", "d0"])["paths"].as_array().unwrap().iter().map(|p| p["writes"].as_u64().unwrap()).sum()
}

fn path_state(d: &Daemon, path: &str) -> String {
    let v = d.json(&["device", "show", "d0"]);
    let p = v["paths"].as_array().unwrap().iter().find(|p| p["name"] == path).unwrap().clone();
    p["state"].as_str().unwrap().to_owned()
}

#[test]
fn reloads_that_add_and_remove_paths_under_load_lose_nothing() {
    require_root!();
    let t = Tgtd::builder().portals(3).target(TargetSpec::new("rl").lun(LunSpec::file(64 * MIB))).start().unwrap();
    let d = Daemon::start(|dir| config_toml(dir, &t, &device_toml(&t, "d0", &[0, 1], "")));
    let a = std::fs::read_to_string(&d.config).unwrap();
    // p1 out, p3 in, another policy; and back.
    let b = a
        .replace(&harness::path_toml(&t, 0), &harness::path_toml(&t, 2))
        .replace("lun = 1", "lun = 1\npolicy = \"least-queue-depth\"");
    let (mut fio, _pace) = Verifier::start_paced(&d, &t);
    // Round trips (to b and back) during which writes completed, each
    // leaving the paths the file names.
    let mut trips_under_io = 0;
    while fio.running() {
        let before = writes(&d);
        for (text, paths) in [(&b, ["p2", "p3"]), (&a, ["p1", "p2"])] {
            std::fs::write(&d.config, text).unwrap();
            let out = d.ok(&["reload"]);
            assert!(out.contains("added") && out.contains("removed"), "{out}");
            let v = d.json(&["device", "show", "d0"]);
            let mut now: Vec<&str> =
                v["paths"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
            now.sort_unstable();
            assert_eq!(now, paths, "{out}");
        }
        if writes(&d) > before && fio.running() {
            trips_under_io += 1;
        }
    }
    fio.finish(&d);
    assert!(trips_under_io >= 2, "only {trips_under_io} reload round trips ran while writes completed");
    let events = d.ok(&["events", "--device", "d0", "--last", "1000"]);
    assert!(!events.contains("path_failed"), "a reload must not fail a path:\n{events}");
}

#[test]
fn the_export_serves_clients_and_metrics_count_what_they_did() {
    require_root!();
    let t = Tgtd::builder().portals(2).target(TargetSpec::new("m").lun(LunSpec::file(32 * MIB))).start().unwrap();
    let d = Daemon::start(|dir| with_metrics(config_toml(dir, &t, &device_toml(&t, "d0", &[0, 1], ""))));
    let uri = d.export_uri("d0");
    assert_eq!(d.json(&["device", "list"])[0]["export"], uri.as_str());

    let info = mpio_testbed::cmd::run_ok(Command::new("nbdinfo").args(["--json", &uri]), Duration::from_secs(60))
        .expect("nbdinfo (libnbd-bin)");
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["exports"][0]["export-size"], 32 * MIB);

    let before = scrape(&d);
    let writes: Vec<String> = (0..32).map(|i| format!("write -P 0x5a {} 4k", i * 4096)).collect();
    let mut cmds = writes.clone();
    cmds.push("read -P 0x5a 0 128k".into());
    let o = harness::qemu_io(&uri, &cmds);
    assert!(o.success() && !o.stdout.contains("Pattern verification failed"), "{o:?}");
    let after = scrape(&d);
    let delta = |name: &str, labels: &[&str]| sum(&after, name, labels) - sum(&before, name, labels);
    assert_eq!(delta("mpio_path_requests_total", &["device=\"d0\"", "op=\"write\""]), 32.0);
    assert_eq!(delta("mpio_path_bytes_total", &["device=\"d0\"", "op=\"write\""]), 32.0 * 4096.0);
    assert_eq!(
        delta("mpio_path_latency_seconds_count", &["device=\"d0\""]),
        delta("mpio_path_requests_total", &["device=\"d0\""])
    );
    assert_eq!(sum(&after, "mpio_path_up", &["device=\"d0\""]), 2.0);

    d.ok(&["path", "fail", "d0", "p2"]);
    let m = scrape(&d);
    assert_eq!(sum(&m, "mpio_path_up", &["path=\"p2\""]), 0.0);
    assert_eq!(sum(&m, "mpio_path_state", &["path=\"p2\"", "state=\"disabled\""]), 1.0);
    assert_eq!(sum(&m, "mpio_device_failovers_total", &["device=\"d0\""]), 1.0);
}

#[test]
fn metric_families_exist_before_any_login() {
    require_root!();
    let t = Tgtd::builder().portals(1).target(TargetSpec::new("z").lun(LunSpec::file(8 * MIB))).start().unwrap();
    let d = Daemon::start(|dir| {
        with_metrics(config_toml(
            dir,
            &t,
            "\n[[device]]\nname = \"dead\"\ntarget = \"san\"\nlun = 1\n[[device.path]]\nname = \"p1\"\nportal = \"127.0.0.1:1\"\n",
        ))
        .replace("ready_timeout = \"10s\"", "ready_timeout = \"1s\"")
    });
    let m = scrape(&d);
    for family in
        ["mpio_path_up", "mpio_path_requests_total", "mpio_device_failovers_total", "mpio_session_logins_total"]
    {
        assert!(
            m.lines().any(|l| l.starts_with(family) && l.contains("device=\"dead\"") && l.ends_with(" 0")),
            "{family} at zero:\n{m}"
        );
    }
}

#[test]
fn chap_secrets_never_show_and_a_wrong_one_is_an_event_with_the_fix() {
    require_root!();
    const SECRET: &str = "s3cr3t-daemon-chap";
    let t = Tgtd::builder()
        .portals(1)
        .target(TargetSpec::new("chap").lun(LunSpec::file(8 * MIB)).chap("host1", SECRET))
        .start()
        .unwrap();
    let chap = |secret_file: &std::path::Path| {
        format!("\n[target.chap]\nuser = \"host1\"\nsecret_file = \"{}\"\n", secret_file.display())
    };
    let d = Daemon::start(|dir| {
        let secret = dir.join("chap.secret");
        std::fs::write(&secret, SECRET).unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        config_toml(dir, &t, &device_toml(&t, "d0", &[0], ""))
            .replace(&format!("iqn = \"{}\"\n", t.iqn(1)), &format!("iqn = \"{}\"\n{}", t.iqn(1), chap(&secret)))
            .replace("log = \"info\"", "log = \"trace\"")
    });
    assert_eq!(d.ready_status, "1 devices ready");
    let everything =
        [d.log(), d.ok(&["status", "--json"]), d.ok(&["device", "show", "d0", "--json"]), d.ok(&["events"])];
    for text in everything {
        assert!(!text.contains(SECRET), "the CHAP secret leaked:\n{text}");
    }

    // The wrong secret: the path never comes up, and says why.
    drop(d);
    let d = Daemon::start(|dir| {
        std::fs::write(dir.join("wrong.secret"), "not-the-secret-at-all").unwrap();
        std::fs::set_permissions(dir.join("wrong.secret"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        config_toml(dir, &t, &device_toml(&t, "d0", &[0], ""))
            .replace(
                &format!("iqn = \"{}\"\n", t.iqn(1)),
                &format!("iqn = \"{}\"\n{}", t.iqn(1), chap(&dir.join("wrong.secret"))),
            )
            .replace("ready_timeout = \"10s\"", "ready_timeout = \"2s\"")
    });
    let events = d.ok(&["events", "--device", "d0"]);
    assert!(events.contains("login_failed") && events.contains("CHAP"), "{events}");
    assert!(!events.contains("not-the-secret-at-all") && !d.log().contains("not-the-secret-at-all"));
}
