//! Overlapping writes across a failover: a write caught on a dead path is
//! re-driven elsewhere, and its stale copy must never land after a newer
//! write to the same blocks. Two mechanisms stop the stale copy, and each
//! test here leaves only one of them standing:
//!
//! * the **fence**: before the write goes out again, p1's session is
//!   reinstated through p2's portal (same portal group), so the target
//!   closes the old connection and drops whatever still arrives on it. The
//!   first test queues the stale copy in the network (a rate limit slowed
//!   to a crawl), past the reach of anything the initiator does to its own
//!   socket: only the fence stands between it and the data.
//! * the **reset**: a failed connection is closed with a TCP reset, so its
//!   unsent segments are discarded instead of retransmitted once the
//!   network heals. The second test blackholes p1 (the segments stay in
//!   our socket) and puts p1 and p2 in different portal groups, so no fence
//!   can run (the write is re-driven when fence_timeout passes), and
//!   removes p1 before the blackhole lifts, so no reconnect reinstates the
//!   old session either: only the reset stands between the stale copy and
//!   the data.
//!
//! Writes are 4 KiB, sent whole with the command as immediate data, so a
//! stale copy needs nothing more from the target to execute.

use std::process::Command;

use mpio_mpath::{EventKind, PathRole, PolicySpec};
use mpio_testbed::netfault::{Blackhole, RateLimit};
use mpio_tests::assert_data;

use super::*;

const CHUNK: usize = 4 << 10;
const CHUNKS: u64 = 8;

/// Writes generation `seed` to every chunk at once, expecting success.
async fn write_all(dev: &Device, seed: u64) {
    let writes: Vec<_> = (0..CHUNKS)
        .map(|i| {
            let dev = dev.clone();
            let at = i * CHUNK as u64;
            tokio::spawn(async move { dev.write(at, pattern(at, CHUNK, seed), false).await })
        })
        .collect();
    for w in writes {
        w.await.unwrap().unwrap_or_else(|e| panic!("write of generation {seed}: {e}"));
    }
}

/// Every chunk holds generation `seed`, through the device and on the
/// target's disk.
async fn verify(tgtd: &Tgtd, dev: &Device, seed: u64) {
    dev.flush().await.unwrap();
    let disk = std::fs::read(tgtd.backing_file(1, 1)).unwrap();
    for i in 0..CHUNKS {
        let at = i * CHUNK as u64;
        let want = pattern(at, CHUNK, seed);
        let got = dev.read(at, CHUNK as u64).await.unwrap();
        assert_data(&got.to_bytes(), &want, &format!("chunk {i} through the device"));
        assert_data(&disk[at as usize..at as usize + CHUNK], &want, &format!("chunk {i} on the target's disk"));
    }
}

/// A two-path fail-over-only device, p1 primary, with generation 1
/// written through p1.
async fn primary_p1(tgtd: &Tgtd, groups: Option<[&str; 2]>) -> Device {
    let mut cfg = device_config(tgtd, 1, 2);
    cfg.policy = PolicySpec::FailOverOnly { primary: 0, standby_order: vec![1] };
    if let Some(groups) = groups {
        for (p, g) in cfg.paths.iter_mut().zip(groups) {
            p.group = Some(g.to_owned());
        }
    }
    let dev = open_all(cfg).await;
    write_all(&dev, 1).await;
    dev
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_write_still_in_the_network_is_stopped_by_the_fence() {
    require_root!();
    let tgtd =
        Tgtd::builder().portals(2).target(TargetSpec::new("fence").lun(LunSpec::file(16 * MIB))).start().unwrap();
    let dev = primary_p1(&tgtd, None).await;
    let mut events = dev.events();

    // p1's traffic crawls (1 KB/s): generation 2 leaves p1's socket into
    // the queue of the rate limit, and the NOP-Outs behind it time out.
    let mut crawl = RateLimit::new(tgtd.portal(0), 1000).unwrap();
    let p1_redriven = dev.snapshot().paths[0].stats.redriven;
    write_all(&dev, 2).await;
    let seen = drain(&mut events);
    let failed = seen.iter().position(|e| e.kind == EventKind::PathFailed && e.path == Some(0));
    let fenced = seen.iter().position(|e| e.kind == EventKind::FenceCleared && e.path == Some(0));
    let (Some(failed), Some(fenced)) = (failed, fenced) else { panic!("p1 failed and fenced: {seen:?}") };
    assert!(failed < fenced && seen[fenced].reason.contains("reinstated"), "{seen:?}");
    assert!(
        dev.snapshot().paths[0].stats.redriven - p1_redriven >= CHUNKS,
        "generation 2 was caught on p1 and re-driven"
    );
    assert!(crawl.backlog_packets().unwrap() > 0, "generation 2 is not queued in the network");

    // Generation 3 overwrites it through p2.
    write_all(&dev, 3).await;

    // The network recovers: what was queued for p1's old connection
    // reaches the target now, in order, before p1's new login (queued
    // behind it).
    crawl.set_rate(1 << 30).unwrap();
    poll_until(Duration::from_secs(60), "the queue drained", || crawl.backlog_packets().is_ok_and(|n| n == 0)).await;
    wait_device_event(
        &mut events,
        Duration::from_secs(60),
        "p1 back",
        |e| matches!(&e.kind, EventKind::Failback { to, .. } if to == &[0]),
    )
    .await;
    tgtd.wait_connections(1, "one connection per path", Duration::from_secs(10), |c| c.len() == 2).unwrap();
    verify(&tgtd, &dev, 3).await;
}

/// Polls external state (tc, ss) every 50 ms until `done`.
async fn poll_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "no {what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Our sockets from p1's source address to `portal` that still hold data
/// to send (`ss` Send-Q), other than connections being opened.
fn unsent_from_p1(portal: std::net::SocketAddr) -> Vec<String> {
    let out = Command::new("ss")
        .args(["-tnH", "state", "all", "dst", &portal.to_string(), "src", &path_source(0).to_string()])
        .output()
        .expect("run ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 3 && f[0] != "SYN-SENT" && f[2] != "0"
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_write_left_in_the_dead_socket_is_dropped_by_the_reset() {
    require_root!();
    let tgtd =
        Tgtd::builder().portals(2).target(TargetSpec::new("reset").lun(LunSpec::file(16 * MIB))).start().unwrap();
    // Different portal groups: no fence can go through p2.
    let dev = primary_p1(&tgtd, Some(["group-a", "group-b"])).await;
    let mut events = dev.events();

    // Generation 2 is stuck in p1's socket, retransmitted into the
    // blackhole, until p1 fails and the fence times out.
    let hole = Blackhole::new(tgtd.portal(0)).unwrap();
    write_all(&dev, 2).await;
    let seen = drain(&mut events);
    let cleared = seen.iter().find(|e| e.kind == EventKind::FenceCleared && e.path == Some(0));
    assert!(cleared.is_some_and(|e| e.reason.contains("DefaultTime2Wait")), "the fence timed out: {seen:?}");

    // Generation 3 overwrites it through p2. p1 goes away for good, so no
    // login of p1 reinstates (and so cleans up) its old session.
    write_all(&dev, 3).await;
    dev.set_path_role("p2", PathRole::Active).unwrap();
    dev.remove_path("p1").await.unwrap();
    drop(hole);
    // Nothing of the old connection is left on this host to deliver the
    // stale copy; if something were, it is given the time to do so (its
    // retransmission backs off to tens of seconds) and the target the time
    // to act on it (it closes the connection after the FIN behind it).
    let left = unsent_from_p1(tgtd.portal(0));
    if !left.is_empty() {
        poll_until(Duration::from_secs(180), "the old socket drained", || unsent_from_p1(tgtd.portal(0)).is_empty())
            .await;
        tgtd.wait_connections(1, "p1's old connection closed", Duration::from_secs(30), |c| {
            c.iter().all(|c| c.address != path_source(0))
        })
        .unwrap();
    }
    verify(&tgtd, &dev, 3).await;
    assert!(left.is_empty(), "p1's dead connection kept data to send: {left:?}");
}
