//! Tests of the fixtures themselves, against a real tgtd, real libiscsi
//! tools, real iptables and tc. They also pin down the tgtd behaviour the
//! fixture docs describe, so a different tgt version shows up here first.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use mpio_testbed::cmd::{ChildGuard, Outcome};
use mpio_testbed::netfault::{self, Blackhole, RateLimit};
use mpio_testbed::tgtd::{LunSpec, TargetSpec, TargetState, Tgtd};
use mpio_testbed::wait::wait_for;
use mpio_testbed::{libiscsi, require_root};

const INQ_TIMEOUT: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

fn one_disk(portals: u8) -> Tgtd {
    Tgtd::builder()
        .portals(portals)
        .target(TargetSpec::new("disk1").lun(LunSpec::file(16 << 20)))
        .start()
        .expect("start tgtd")
}

fn inq(url: &str) -> Outcome {
    libiscsi::inq(url, INQ_TIMEOUT).expect("run iscsi-inq")
}

fn assert_inq_ok(url: &str) {
    let out = inq(url);
    assert!(out.success(), "iscsi-inq {url} failed: {out:?}");
    assert!(out.stdout.contains("Vendor:IET"), "{}", out.stdout);
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Starts iscsi-perf (reads, queue depth 1) as `initiator` and returns it
/// with its session id once tgtd lists it.
fn perf_session(tgtd: &Tgtd, portal: usize, initiator: &str) -> (ChildGuard, u32) {
    let log = tgtd.dir().join(format!("perf-{portal}.log"));
    let args = ["-b", "8", "-m", "1", "-t", "600"];
    let perf = libiscsi::perf(&tgtd.url(portal, 1, 1), initiator, &args, &log).expect("iscsi-perf");
    let conns = tgtd
        .wait_connections(1, &format!("a connection of {initiator}"), WAIT, |c| {
            c.iter().any(|c| c.initiator == initiator)
        })
        .expect("iscsi-perf's session");
    let sid = conns.iter().find(|c| c.initiator == initiator).map(|c| c.sid);
    (perf, sid.expect("listed above"))
}

/// Reads done by session `sid` on LUN 1.
fn reads(tgtd: &Tgtd, sid: u32) -> u64 {
    let stats = tgtd.session_stats(1, sid).expect("session stats");
    stats.luns.iter().find(|l| l.lun == 1).map_or(0, |l| l.read_cmds)
}

/// Waits until session `sid` makes progress (`moving`) or none for 500 ms.
fn wait_reads(tgtd: &Tgtd, sid: u32, moving: bool) -> u64 {
    let mut last = None;
    let what = if moving { "reads to progress" } else { "reads to stop" };
    let interval = if moving { POLL } else { Duration::from_millis(500) };
    wait_for(what, WAIT, interval, || {
        let now = reads(tgtd, sid);
        let prev = last.replace(now);
        match prev {
            Some(p) if (p != now) == moving => Ok(now),
            _ => Err(format!("{prev:?} -> {now} reads")),
        }
    })
    .unwrap()
}

#[test]
fn parallel_fixtures_serve_their_luns_on_every_portal() {
    require_root!();
    let start = || {
        thread::spawn(|| {
            Tgtd::builder()
                .portals(2)
                .target(TargetSpec::new("disk1").lun(LunSpec::file(16 << 20).block_size(4096)).lun(LunSpec::null()))
                .start()
                .expect("start tgtd")
        })
    };
    let (a, b) = (start(), start());
    let fixtures = [a.join().unwrap(), b.join().unwrap()];
    assert_ne!(fixtures[0].control_port(), fixtures[1].control_port());
    assert_ne!(fixtures[0].port(), fixtures[1].port());

    for tgtd in &fixtures {
        let portals = tgtd.portals();
        assert_eq!(portals.len(), 2);
        assert_eq!(portals[1].ip().to_string(), "127.0.0.2");
        for (i, portal) in portals.iter().enumerate() {
            assert_inq_ok(&tgtd.url(i, 1, 1));
            assert_inq_ok(&tgtd.url(i, 1, 2));
            // SendTargets names only the portal that was asked.
            let ls = libiscsi::ls(*portal, INQ_TIMEOUT).unwrap();
            assert!(ls.success(), "{ls:?}");
            let expected = format!("Target:{} Portal:{portal},1", tgtd.iqn(1));
            assert!(ls.stdout.contains(&expected), "{}", ls.stdout);
            assert_eq!(ls.stdout.matches("Portal:").count(), 1, "{}", ls.stdout);
        }
        let shown = tgtd.show().unwrap();
        let luns = &shown[0].luns;
        assert_eq!((luns[1].block_size, luns[1].size_mb), (4096, 17));
        assert_eq!(luns[2].backing_type, "null");
        let file = tgtd.backing_file(1, 1);
        assert_eq!(luns[1].backing_path.as_deref(), file.to_str());
        assert_eq!(std::fs::metadata(file).unwrap().len(), 16 << 20);
    }
}

#[test]
fn libiscsi_session_is_listed_and_its_connection_can_be_deleted() {
    require_root!();
    let tgtd = one_disk(1);
    let initiator = "iqn.2026-11.test.mpio:perf";
    let (_perf, sid) = perf_session(&tgtd, 0, initiator);
    wait_reads(&tgtd, sid, true);

    let sessions = tgtd.sessions(1).unwrap();
    let session = sessions.iter().find(|s| s.sid == sid).unwrap();
    assert_eq!(session.initiator, initiator);
    assert_eq!(session.connections.len(), 1);
    let (cid, peer) = session.connections[0];
    assert!(peer.is_loopback(), "{peer}");
    let nexus = tgtd.show().unwrap()[0].nexuses.clone();
    assert!(nexus.iter().any(|n| n.sid == sid && n.initiator == initiator));

    tgtd.delete_connection(1, sid, cid).unwrap();
    // The session goes with its only connection; libiscsi logs in again.
    let conns = tgtd
        .wait_connections(1, "libiscsi to come back in a new session", WAIT, |c| {
            !c.is_empty() && c.iter().all(|c| c.sid != sid)
        })
        .unwrap();
    assert_eq!(conns[0].initiator, initiator);
}

#[test]
fn blackhole_silences_one_portal_until_dropped() {
    require_root!();
    let tgtd = one_disk(2);
    let (cut, other) = (tgtd.portal(1), tgtd.portal(0));
    let (_perf, sid) = perf_session(&tgtd, 1, "iqn.2026-11.test.mpio:perf-bh");
    wait_reads(&tgtd, sid, true);

    let guard = Blackhole::new(cut).unwrap();
    assert_eq!(netfault::blackhole_rules(cut).unwrap().len(), 3);
    assert!(netfault::blackhole_rules(other).unwrap().is_empty());
    // The established connection goes silent but stays up on both ends.
    wait_reads(&tgtd, sid, false);
    assert!(tgtd.connections(1).unwrap().iter().any(|c| c.sid == sid));
    // A new login to that portal hangs; the other portal still works.
    let out = libiscsi::inq(&tgtd.url(1, 1, 1), Duration::from_secs(5)).unwrap();
    assert!(out.timed_out(), "iscsi-inq should hang: {out:?}");
    assert_inq_ok(&tgtd.url(0, 1, 1));

    drop(guard);
    assert!(netfault::blackhole_rules(cut).unwrap().is_empty());
    assert_inq_ok(&tgtd.url(1, 1, 1));
    assert!(tgtd.stop().unwrap().success(), "tgtd needed SIGKILL");
}

#[test]
fn offline_target_drops_commands_and_ready_restores() {
    require_root!();
    let tgtd = one_disk(1);
    let (_perf, sid) = perf_session(&tgtd, 0, "iqn.2026-11.test.mpio:perf-off");
    wait_reads(&tgtd, sid, true);

    tgtd.set_state(1, TargetState::Offline).unwrap();
    assert_eq!(tgtd.show().unwrap()[0].state, "offline");
    let stuck = wait_reads(&tgtd, sid, false);
    // The session is still there; its commands are simply never answered.
    assert!(tgtd.connections(1).unwrap().iter().any(|c| c.sid == sid));
    // New logins are refused at once (Target Error), they do not hang.
    let out = inq(&tgtd.url(0, 1, 1));
    assert!(!out.success() && !out.timed_out(), "{out:?}");
    assert!(out.stderr.contains("Login"), "{}", out.stderr);

    tgtd.set_state(1, TargetState::Ready).unwrap();
    assert_inq_ok(&tgtd.url(0, 1, 1));
    // iscsi-perf's dropped command is lost for good: its session stays stuck.
    assert_eq!(reads(&tgtd, sid), stuck);
    assert!(tgtd.stop().unwrap().success(), "tgtd needed SIGKILL");
}

#[test]
fn lun_offline_is_shown() {
    require_root!();
    let tgtd = one_disk(1);
    tgtd.set_lun_online(1, 1, false).unwrap();
    assert!(!tgtd.show().unwrap()[0].luns[1].online);
    tgtd.set_lun_online(1, 1, true).unwrap();
    assert!(tgtd.show().unwrap()[0].luns[1].online);
}

#[test]
fn chap_one_way_and_mutual() {
    require_root!();
    let (user, secret) = ("inituser", "initsecret12");
    let (tuser, tsecret) = ("tgtuser", "tgtsecret123");
    let tgtd = Tgtd::builder()
        .target(TargetSpec::new("chap1").lun(LunSpec::file(1 << 20)).chap(user, secret))
        .target(TargetSpec::new("chap2").lun(LunSpec::file(1 << 20)).chap(user, secret).mutual_chap(tuser, tsecret))
        .start()
        .unwrap();
    let p = tgtd.portal(0);
    assert!(!inq(&tgtd.url(0, 1, 1)).success(), "login without CHAP");
    assert!(!inq(&libiscsi::chap_url(p, tgtd.iqn(1), 1, user, "wrongsecret12")).success());
    assert_inq_ok(&libiscsi::chap_url(p, tgtd.iqn(1), 1, user, secret));

    let mutual = |ts: &str| libiscsi::mutual_chap_url(p, tgtd.iqn(2), 1, (user, secret), (tuser, ts));
    assert_inq_ok(&mutual(tsecret));
    assert!(!inq(&mutual("wrongsecret1")).success(), "target proved a wrong secret");
    assert_eq!(tgtd.show().unwrap()[1].accounts, [user.to_owned(), format!("{tuser} (outgoing)")]);
}

#[test]
fn runtime_portals_and_params() {
    require_root!();
    let tgtd = one_disk(1);
    let extra = SocketAddr::new([127, 0, 0, 9].into(), tgtd.port());
    tgtd.add_portal(extra).unwrap();
    assert_inq_ok(&tgtd.url(1, 1, 1));
    tgtd.remove_portal(extra).unwrap();
    assert_eq!(tgtd.portals().len(), 1);
    let out = inq(&libiscsi::url(extra, tgtd.iqn(1), 1));
    assert!(!out.success() && !out.timed_out(), "{out:?}");

    tgtd.set_param(1, "MaxConnections", "4").unwrap();
    tgtd.set_param(1, "HeaderDigest", "CRC32C,None").unwrap();
    let params = tgtd.params(1).unwrap();
    assert_eq!(params["MaxConnections"], "4");
    assert!(tgtd.set_param(1, "NoSuchKey", "1").unwrap_err().to_string().contains("invalid request"));
}

/// Bytes per second a bulk TCP transfer to `addr` achieves in `dur`.
fn measure(listener: TcpListener, dur: Duration) -> f64 {
    let addr = listener.local_addr().unwrap();
    let reader = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n as u64,
            }
        }
    });
    let mut s = TcpStream::connect(addr).unwrap();
    let chunk = vec![0u8; 64 << 10];
    let start = Instant::now();
    while start.elapsed() < dur {
        s.write_all(&chunk).unwrap();
    }
    drop(s);
    let total = reader.join().unwrap();
    total as f64 / start.elapsed().as_secs_f64()
}

#[test]
fn rate_limit_limits_only_its_address_and_port() {
    require_root!();
    let limited = TcpListener::bind("127.0.0.7:0").unwrap();
    let free = TcpListener::bind("127.0.0.7:0").unwrap();
    let limit = 4_000_000;
    let addr = limited.local_addr().unwrap();
    let guard = RateLimit::new(addr, limit).unwrap();
    let class = guard.class_id();
    assert!(netfault::tc_root_installed().unwrap());
    assert_eq!(netfault::rate_limit_filters(addr).unwrap(), 2);

    let rate = measure(limited, Duration::from_millis(1500));
    assert!((0.6..1.4).contains(&(rate / limit as f64)), "limited to {limit} B/s, measured {rate:.0} B/s");
    let unlimited = measure(free, Duration::from_millis(300));
    assert!(unlimited > 10.0 * limit as f64, "other port: {unlimited:.0} B/s");

    assert!(netfault::tc_classes().unwrap().contains(&class));
    drop(guard);
    assert_eq!(netfault::rate_limit_filters(addr).unwrap(), 0);
}

#[test]
fn drop_leaves_no_process_and_no_rules() {
    require_root!();
    let tgtd = one_disk(2);
    let pid = tgtd.pid();
    let portal = tgtd.portal(1);
    let bh = Blackhole::new(portal).unwrap();
    let rl = RateLimit::new(tgtd.portal(0), 1 << 20).unwrap();
    assert_eq!(netfault::rate_limit_filters(tgtd.portal(0)).unwrap(), 2);
    drop((bh, rl));
    assert!(netfault::blackhole_rules(portal).unwrap().is_empty());
    // (Not the class id: another test process may reuse it at once.)
    assert_eq!(netfault::rate_limit_filters(tgtd.portal(0)).unwrap(), 0);

    let (_perf, _sid) = perf_session(&tgtd, 0, "iqn.2026-11.test.mpio:perf-drop");
    let status = tgtd.stop().unwrap();
    // Clean exit through `--mode system --op delete`, no SIGKILL needed.
    assert!(status.success(), "{status}");
    assert!(!process_exists(pid), "tgtd pid {pid} still exists");

    // Drop without stop(): the same, and also when a test panics.
    let tgtd = one_disk(1);
    let pid = tgtd.pid();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _owned = tgtd;
        panic!("test failure inside a fixture's scope");
    }));
    assert!(panicked.is_err());
    assert!(!process_exists(pid), "tgtd pid {pid} still exists");
}
