//! A daemon killed with SIGKILL while writes are in flight, on a host
//! whose last packets never reach the target (as when it crashes or loses
//! power): the restarted daemon takes over its stale sockets, reinstates
//! the target's sessions under the same ISIDs, and every write that was
//! acknowledged before the kill is on the LU.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mpio_testbed::netfault::{Blackhole, RateLimit};
use mpio_testbed::require_root;
use mpio_testbed::tgtd::{LunSpec, TargetSpec, Tgtd};

use crate::harness::{Daemon, config_toml, device_toml, qemu_io};

const MIB: u64 = 1 << 20;
/// The in-flight writer's transfers, each with its own pattern byte.
const CHUNK: u64 = 256 << 10;
const CHUNKS: u64 = 96;
/// Where the in-flight writer starts (the first 8 MiB are written and
/// acknowledged before it).
const REGION: u64 = 8 * MIB;
/// Each path's rate while the in-flight writer runs: its 24 MiB need at
/// least 12 s however fast the machine is, so the kill, a few steps after
/// its eighth write, comes while it writes.
const CRAWL: u64 = 1 << 20;

/// Each path's (name, ISID, TSIH) as `mpio path list --json` shows them.
fn nexuses(d: &Daemon) -> Vec<(String, String, u64)> {
    let paths = d.json(&["path", "list", "d0"]);
    paths
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| {
            let name = p["name"].as_str().unwrap_or_default().to_owned();
            let isid = p["isid"].as_str().unwrap_or_else(|| panic!("path without an ISID: {p}")).to_owned();
            let tsih = p["tsih"].as_u64().unwrap_or_else(|| panic!("path without a TSIH: {p}"));
            (name, isid, tsih)
        })
        .collect()
}

/// The local ends of this host's established TCP connections to `portal`.
fn connections_to(portal: SocketAddr) -> Vec<SocketAddr> {
    let out = mpio_testbed::cmd::run_ok(
        Command::new("ss").args(["-Htn", "state", "established", "dst", &portal.to_string()]),
        Duration::from_secs(10),
    )
    .expect("ss (package iproute2)");
    out.lines().filter_map(|l| l.split_whitespace().nth(2)?.parse().ok()).collect()
}

fn pattern(chunk: u64) -> u64 {
    chunk % 250 + 1
}

#[test]
fn a_killed_daemon_restarts_reinstates_its_sessions_and_keeps_every_acknowledged_write() {
    require_root!();
    let t = Tgtd::builder().portals(2).target(TargetSpec::new("restart").lun(LunSpec::file(32 * MIB))).start().unwrap();
    let mut d = Daemon::start(|dir| config_toml(dir, &t, &device_toml(&t, "d0", &[0, 1], "")));
    d.json(&["device", "wait", "d0", "--all-paths"]);
    let before = nexuses(&d);
    let sids_before: Vec<u32> = t.sessions(1).unwrap().iter().map(|s| s.sid).collect();
    assert_eq!(sids_before.len(), 2, "one session per path");

    let first = qemu_io(&d.export_uri("d0"), &[format!("write -P 0xa5 0 {REGION}")]);
    assert!(first.success() && first.stdout.contains("wrote"), "{first:?}");

    // Writes in flight at the kill: one qemu-io command per chunk, each
    // reported ("wrote N/N bytes at offset X") once it is acknowledged.
    let crawl: Vec<RateLimit> = (0..2).map(|i| RateLimit::new(t.portal(i), CRAWL).expect("rate limit")).collect();
    let mut writer = Command::new("stdbuf");
    writer.args(["-oL", "qemu-io", "-f", "raw"]);
    for i in 0..CHUNKS {
        writer.args(["-c", &format!("write -P {} {} {CHUNK}", pattern(i), REGION + i * CHUNK)]);
    }
    let mut writer =
        writer.arg(d.export_uri("d0")).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("qemu-io");
    let (tx, lines) = mpsc::channel();
    let stdout = writer.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut output = Vec::new();
    while output.iter().filter(|l: &&String| l.starts_with("wrote")).count() < 8 {
        output.push(lines.recv_timeout(Duration::from_secs(60)).expect("the writer acknowledges writes"));
    }

    // The host goes silent, then dies: the target never hears that its
    // connections closed, so its sessions (and their tasks) live on.
    let holes: Vec<Blackhole> = (0..2)
        .flat_map(|i| connections_to(t.portal(i)))
        .map(|local| Blackhole::new(local).expect("blackhole"))
        .collect();
    assert_eq!(holes.len(), 2, "one connection per path");
    d.kill();
    let _ = writer.wait();
    output.extend(lines.iter());
    let acknowledged: Vec<u64> = output
        .iter()
        .filter_map(|l| l.strip_prefix("wrote ")?.rsplit(' ').next()?.parse::<u64>().ok())
        .map(|offset| (offset - REGION) / CHUNK)
        .collect();
    assert!(acknowledged.len() >= 8 && acknowledged.len() < CHUNKS as usize, "killed mid-run: {output:?}");
    let sids: Vec<u32> = t.sessions(1).unwrap().iter().map(|s| s.sid).collect();
    assert_eq!(sids, sids_before, "the target still holds the dead host's sessions");

    let start = Instant::now();
    d.restart();
    d.json(&["device", "wait", "d0", "--all-paths"]);
    eprintln!(
        "{} writes acknowledged before the kill; restart to every path ready: {:?}",
        acknowledged.len(),
        start.elapsed()
    );
    let after = nexuses(&d);
    let isids = |n: &[(String, String, u64)]| n.iter().map(|(p, i, _)| (p.clone(), i.clone())).collect::<Vec<_>>();
    assert_eq!(isids(&after), isids(&before), "each path logs in with its ISID again");
    // Reinstated: the target replaced each old session (closed it at the
    // login with the same ISID), it did not keep both.
    let now = t
        .wait_connections(1, "two sessions, neither of the dead host", Duration::from_secs(30), |c| {
            c.len() == 2 && c.iter().all(|x| !sids_before.contains(&x.sid))
        })
        .unwrap();
    assert_eq!(now.len(), 2, "{now:?}");
    drop(holes);
    drop(crawl);

    // Every acknowledged write is there, through the new daemon.
    let mut check = vec![format!("read -P 0xa5 0 {REGION}")];
    check.extend(acknowledged.iter().map(|&i| format!("read -P {} {} {CHUNK}", pattern(i), REGION + i * CHUNK)));
    let o = qemu_io(&d.export_uri("d0"), &check);
    assert!(o.success() && !o.stdout.contains("verification failed"), "{}\n{}", o.stdout, d.log());
    assert_eq!(o.stdout.matches("read ").count(), check.len(), "every read ran: {}", o.stdout);
    assert!(d.stop().success());
}
