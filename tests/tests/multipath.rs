//! The multipath device against a real tgtd with four portals: claiming
//! by identity, the policies' I/O distribution, faults under continuous
//! verified writes (connection reset, portal removed, target offline,
//! blackhole, slowed path), failback modes, a flapping path, the
//! all-paths-down hold, and the stale-write fence. Issue 3.

use std::time::{Duration, Instant};

use mpio_mpath::scsi::LuAccess;
use mpio_mpath::{BoxFuture, BringUp, Device, EventKind, HoldMode, PathStatus};
use mpio_testbed::netfault::{Blackhole, RateLimit};
use mpio_testbed::require_root;
use mpio_testbed::tgtd::{LunSpec, TargetSpec, TargetState, Tgtd};
use mpio_tests::mp::*;
use mpio_tests::pattern;

const MIB: u64 = 1 << 20;

fn four_portals(size: u64) -> Tgtd {
    Tgtd::builder().portals(4).target(TargetSpec::new("mp").lun(LunSpec::file(size))).start().unwrap()
}

/// Runs the writer through `fault`, then checks: no error reached the
/// caller, I/O kept flowing, and every acknowledged write reads back
/// through the device and from the target's disk.
async fn under_load<F, Fut>(tgtd: &Tgtd, dev: &Device, fault: F) -> WriterReport
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let writer = Writer::start(dev, 0, 8 * MIB, 64 << 10, 8);
    writer.progress(200, Duration::from_secs(10)).await;
    fault().await;
    writer.progress(200, Duration::from_secs(30)).await;
    let report = writer.finish().await;
    report.assert_no_errors();
    report.verify(dev).await;
    dev.flush().await.unwrap();
    report.verify_file(tgtd.backing_file(1, 1));
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_fails_over_without_errors_and_the_path_returns() {
    require_root();
    let tgtd = four_portals(64 * MIB);
    let dev = open_all(device_config(&tgtd, 1, 4)).await;
    let mut events = dev.events();
    let report = under_load(&tgtd, &dev, || async {
        reset_path(&tgtd, 1, 0).await;
        let ev = wait_device_event(&mut events, Duration::from_secs(5), "p1 failed", |e| {
            e.kind == EventKind::PathFailed && e.path == Some(0)
        })
        .await;
        assert!(ev.reason.contains("connection"), "{}", ev.reason);
        assert_eq!(ev.seed_event, Some(20), "seed event 20: connection to the target lost");
    })
    .await;
    // p1 logs in again, passes probation and carries I/O again.
    wait_ready(&dev, 4, Duration::from_secs(20)).await;
    let evs = drain(&mut events);
    let kinds: Vec<_> = evs.iter().filter(|e| e.path == Some(0)).map(|e| e.kind.name()).collect();
    assert!(kinds.contains(&"probation_started") && kinds.contains(&"path_ready"), "{kinds:?}");
    assert!(report.max_latency < Duration::from_secs(3), "a reset stalled I/O for {:?}", report.max_latency);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_portal_keeps_its_path_out_until_it_returns() {
    require_root();
    let tgtd = four_portals(64 * MIB);
    let dev = open_all(device_config(&tgtd, 1, 4)).await;
    let portal = tgtd.portal(1);
    under_load(&tgtd, &dev, || async {
        tgtd.remove_portal(portal).unwrap();
        // Sessions that came in through a removed portal live on in tgtd:
        // drop p2's, as a controller port going away would.
        reset_path(&tgtd, 1, 1).await;
        wait_until(&dev, Duration::from_secs(5), "p2 out", |d| {
            matches!(d.snapshot().paths[1].status, PathStatus::Reconnecting)
        })
        .await;
    })
    .await;
    // Logins to the removed portal keep failing; the path stays out.
    let snap = dev.snapshot();
    assert_eq!(snap.paths[1].state, "reconnecting", "{:?}", states(&dev));
    tgtd.add_portal(portal).unwrap();
    wait_ready(&dev, 4, Duration::from_secs(40)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_path_is_detected_by_nop_within_three_seconds() {
    require_root();
    let tgtd = four_portals(64 * MIB);
    let dev = open_all(device_config(&tgtd, 1, 4)).await;
    let mut events = dev.events();
    let mut hole = None;
    let report = under_load(&tgtd, &dev, || async {
        let t0 = Instant::now();
        hole = Some(Blackhole::new(tgtd.portal(2)).unwrap());
        let ev = wait_device_event(&mut events, Duration::from_secs(10), "p3 failed", |e| {
            e.kind == EventKind::PathFailed && e.path == Some(2)
        })
        .await;
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(3), "blackhole detected after {took:?}: {}", ev.reason);
        assert!(ev.reason.contains("nop_timeout"), "{}", ev.reason);
    })
    .await;
    assert!(report.max_latency < Duration::from_secs(4), "a blackhole stalled I/O for {:?}", report.max_latency);
    drop(hole);
    wait_ready(&dev, 4, Duration::from_secs(40)).await;
}

/// Two targets on one backing file, with one identity: two controllers
/// of one array. Paths p1, p2 go to the first, p3, p4 to the second.
fn dual_controller() -> Tgtd {
    let id = |l: LunSpec| l.param("scsi_id=mpio-dual-0001").param("scsi_sn=DUAL0001");
    Tgtd::builder()
        .portals(4)
        .target(TargetSpec::new("ctrl-a").lun(id(LunSpec::file(64 * MIB))))
        .target(TargetSpec::new("ctrl-b").lun(id(LunSpec::same_as(1, 1))))
        .start()
        .unwrap()
}

fn dual_controller_config(tgtd: &Tgtd) -> mpio_mpath::DeviceConfig {
    let mut cfg = device_config(tgtd, 1, 4);
    for p in &mut cfg.paths[2..] {
        p.target = Some(tgtd.iqn(2).parse().unwrap());
    }
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_drops_commands_fails_over_to_the_other_controller() {
    require_root();
    let tgtd = dual_controller();
    let mut cfg = dual_controller_config(&tgtd);
    // tgtd answers NOP-Outs while it drops commands: only the in-flight
    // watchdog can tell. Shorter than the default so the test is quick.
    cfg.timers.io_timeout = Duration::from_secs(4);
    cfg.timers.abort_timeout = Duration::from_secs(2);
    let dev = open_all(cfg).await;
    let mut events = dev.events();
    under_load(&tgtd, &dev, || async {
        tgtd.set_state(1, TargetState::Offline).unwrap();
        // Commands are dropped (the in-flight watchdog fails the path);
        // unsolicited Data-Out for a dropped write makes tgtd close the
        // connection. Either way both paths to ctrl-a fail.
        let mut failed = Vec::new();
        while failed.len() < 2 {
            let ev = wait_device_event(&mut events, Duration::from_secs(10), "ctrl-a paths failed", |e| {
                e.kind == EventKind::PathFailed && matches!(e.path, Some(0 | 1)) && !failed.contains(&e.path)
            })
            .await;
            failed.push(ev.path);
        }
    })
    .await;
    tgtd.set_state(1, TargetState::Ready).unwrap();
    wait_ready(&dev, 4, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowed_path_causes_no_errors() {
    require_root();
    let tgtd = four_portals(64 * MIB);
    let dev = open_all(device_config(&tgtd, 1, 4)).await;
    let mut limit = None;
    under_load(&tgtd, &dev, || async {
        limit = Some(RateLimit::new(tgtd.portal(0), 2_000_000).unwrap());
    })
    .await;
    assert_eq!(usable(&dev), 4, "a slow path is not a failed path: {:?}", states(&dev));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_to_another_logical_unit_or_failing_bring_up_are_refused() {
    require_root();
    let tgtd = Tgtd::builder()
        .portals(3)
        .target(TargetSpec::new("lu-a").lun(LunSpec::file(16 * MIB)))
        .target(TargetSpec::new("lu-b").lun(LunSpec::file(16 * MIB)))
        .start()
        .unwrap();

    #[derive(Debug)]
    struct RefuseP2(std::sync::Mutex<Vec<String>>);
    impl BringUp for RefuseP2 {
        fn before_io<'a>(&'a self, path: &'a str, lu: &'a LuAccess) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async move {
                // The step can talk to the LU on this path's nexus.
                lu.test_unit_ready().await.map_err(|e| e.to_string())?;
                self.0.lock().unwrap().push(path.to_owned());
                if path == "p2" { Err("no reservation key".into()) } else { Ok(()) }
            })
        }
    }
    let hook = std::sync::Arc::new(RefuseP2(Default::default()));
    let mut cfg = device_config(&tgtd, 1, 3);
    cfg.paths[2].target = Some(tgtd.iqn(2).parse().unwrap());
    cfg.bring_up = vec![hook.clone()];
    // The first path to log in defines the device's LU (no identity is
    // configured): keep lu-b refusing logins until p1 has claimed lu-a.
    tgtd.set_state(2, TargetState::Offline).unwrap();
    let dev = Device::open(cfg.clone()).await.unwrap();
    wait_until(&dev, Duration::from_secs(10), "p1 active, p2 refused", |d| {
        let s = d.snapshot();
        s.paths[0].state == "active" && s.paths[1].last_cause.as_ref().is_some_and(|c| c.kind == "claim")
    })
    .await;
    tgtd.set_state(2, TargetState::Ready).unwrap();
    wait_until(&dev, Duration::from_secs(10), "p3 refused", |d| {
        d.snapshot().paths[2].last_cause.as_ref().is_some_and(|c| c.kind == "claim")
    })
    .await;
    let snap = dev.snapshot();
    assert_eq!(snap.paths[0].state, "active");
    assert_eq!(snap.paths[1].state, "failed");
    assert_eq!(snap.paths[2].state, "failed");
    let p2 = snap.paths[1].last_cause.clone().unwrap().detail;
    assert!(p2.contains("bring-up step") && p2.contains("no reservation key"), "{p2}");
    let p3 = snap.paths[2].last_cause.clone().unwrap().detail;
    let lu = dev.info().unwrap();
    assert!(p3.contains("not the device's logical unit") && p3.contains(&lu.identity), "{p3}");
    assert_eq!(p3.matches("naa.").count(), 2, "both identities are named: {p3}");
    let mut called = hook.0.lock().unwrap().clone();
    called.sort();
    assert_eq!(called, vec!["p1", "p2"], "the hook runs after the identity check only");
    // The refused paths do not keep a session open on the target.
    tgtd.wait_connections(2, "p3 logged out", Duration::from_secs(5), |c| c.is_empty()).unwrap();
    dev.write(0, pattern(0, 4096, 7), false).await.unwrap();
    drop(dev);

    // A configured identity that no path has: the device does not open.
    cfg.bring_up.clear();
    cfg.expect_identity = Some("naa.60000000000000000000000000000001".into());
    cfg.startup_timeout = Duration::from_secs(3);
    let e = Device::open(cfg).await.unwrap_err().to_string();
    assert!(e.contains("configured for naa.60000000000000000000000000000001"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_paths_down_shorter_than_the_hold_is_invisible_longer_fails_then_recovers() {
    require_root();
    let tgtd = Tgtd::builder().portals(2).target(TargetSpec::new("hold").lun(LunSpec::file(16 * MIB))).start().unwrap();
    let mut cfg = device_config(&tgtd, 1, 2);
    cfg.timers.hold = HoldMode::For(Duration::from_secs(5));
    cfg.timers.reconnect_max = Duration::from_secs(1);
    let dev = open_all(cfg).await;
    let portals = tgtd.portals();
    let all_down = || async {
        for p in &portals {
            tgtd.remove_portal(*p).unwrap();
        }
        reset_path(&tgtd, 1, 0).await;
        reset_path(&tgtd, 1, 1).await;
        wait_until(&dev, Duration::from_secs(5), "every path down", |d| usable(d) == 0).await;
    };
    let restore = || {
        for p in &portals {
            tgtd.add_portal(*p).unwrap();
        }
    };

    // Down for 2 s: the write waits and succeeds.
    all_down().await;
    let t0 = Instant::now();
    let w = tokio::spawn({
        let dev = dev.clone();
        async move { dev.write(0, pattern(0, 64 << 10, 1), false).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!w.is_finished(), "the write waits for a path");
    restore();
    w.await.unwrap().expect("no error when the outage is shorter than the hold");
    assert!(t0.elapsed() >= Duration::from_secs(2));
    wait_ready(&dev, 2, Duration::from_secs(15)).await;

    // Down for longer than the hold: EIO once it expires, not before.
    all_down().await;
    let t0 = Instant::now();
    let e = dev.write(0, pattern(0, 64 << 10, 2), false).await.unwrap_err();
    let waited = t0.elapsed();
    assert_eq!(e.errno, 5, "{e}");
    assert!(waited >= Duration::from_millis(4500) && waited < Duration::from_secs(8), "failed after {waited:?}: {e}");
    assert!(dev.snapshot().counters.hold_failures >= 1);
    // A path returns: I/O works again, and the data is the first write's
    // (the failed one never reached the target).
    restore();
    wait_ready(&dev, 1, Duration::from_secs(15)).await;
    let got = dev.read(0, 64 << 10).await.unwrap();
    mpio_tests::assert_data(&got.to_bytes(), &pattern(0, 64 << 10, 1), "data after the outages");
    dev.write(0, pattern(0, 64 << 10, 3), false).await.unwrap();
}
