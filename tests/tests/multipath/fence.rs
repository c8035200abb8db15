//! Overlapping writes across a failover: a write caught on a dead path is
//! re-driven only once the old nexus can no longer execute it, so a newer
//! write to the same blocks is never overwritten by the old one.
//!
//! Two mechanisms keep the caught write from landing late here: the dead
//! connection is closed with a reset (its unsent segments are dropped, not
//! retransmitted once the network heals), and the fence reinstates p1's
//! session through p2's portal before the write goes out again (the target
//! closes the old connection and terminates its tasks). The test checks the
//! outcome both guarantee, on the device and on the target's disk.

use mpio_mpath::{EventKind, PolicySpec};
use mpio_testbed::netfault::Blackhole;
use mpio_tests::assert_data;

use super::*;

const CHUNK: usize = 64 << 10;
const CHUNKS: u64 = 8;

async fn write_all(dev: &Device, seed: u64) -> Vec<Duration> {
    let writes = (0..CHUNKS).map(|i| {
        let dev = dev.clone();
        let at = i * CHUNK as u64;
        tokio::spawn(async move {
            let t0 = Instant::now();
            dev.write(at, pattern(at, CHUNK, seed), false).await.map(|()| t0.elapsed())
        })
    });
    let mut took = Vec::new();
    for w in writes.collect::<Vec<_>>() {
        took.push(w.await.unwrap().unwrap_or_else(|e| panic!("write of generation {seed}: {e}")));
    }
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_caught_on_a_dead_path_never_lands_after_a_newer_one() {
    require_root();
    let tgtd =
        Tgtd::builder().portals(2).target(TargetSpec::new("fence").lun(LunSpec::file(16 * MIB))).start().unwrap();
    let mut cfg = device_config(&tgtd, 1, 2);
    cfg.policy = PolicySpec::FailOverOnly { primary: 0, standby_order: vec![1] };
    let dev = open_all(cfg).await;
    let mut events = dev.events();
    write_all(&dev, 1).await;

    // Generation 2 goes to p1 and is stuck there: its PDUs sit in p1's
    // socket, retransmitted into the blackhole.
    let hole = Blackhole::new(tgtd.portal(0)).unwrap();
    let p2_before = requests(&dev)[1];
    let took = write_all(&dev, 2).await;
    let fenced = wait_device_event(&mut events, Duration::from_secs(1), "p1 fenced", |e| {
        e.kind == EventKind::FenceCleared && e.path == Some(0)
    })
    .await;
    assert!(fenced.reason.contains("reinstated"), "{}", fenced.reason);
    assert!(
        took.iter().all(|t| *t >= Duration::from_secs(1)),
        "generation 2 was not caught on p1 (it completed in {took:?})"
    );
    assert!(requests(&dev)[1] - p2_before >= CHUNKS, "generation 2 was re-driven on p2");

    // Generation 3 overwrites it through p2.
    write_all(&dev, 3).await;

    // The blackhole lifts: whatever of generation 2 was still queued for
    // p1's old connection could now reach the target, if anything kept it.
    drop(hole);
    wait_device_event(
        &mut events,
        Duration::from_secs(30),
        "p1 back",
        |e| matches!(&e.kind, EventKind::Failback { to, .. } if to == &[0]),
    )
    .await;
    // The target has only p1's new connection and p2's.
    tgtd.wait_connections(1, "one connection per path", Duration::from_secs(5), |c| c.len() == 2).unwrap();
    dev.flush().await.unwrap();
    let disk = std::fs::read(tgtd.backing_file(1, 1)).unwrap();
    for i in 0..CHUNKS {
        let at = i * CHUNK as u64;
        let want = pattern(at, CHUNK, 3);
        let got = dev.read(at, CHUNK as u64).await.unwrap();
        assert_data(&got.to_bytes(), &want, &format!("chunk {i} through p1"));
        assert_data(&disk[at as usize..at as usize + CHUNK], &want, &format!("chunk {i} on the target's disk"));
    }
}
