//! The device at runtime: started before its target is reachable, paths
//! added and removed under verified writes, login failures reported.

use mpio_mpath::{EventKind, PathStatus};
use mpio_testbed::tgtd::TargetState;
use mpio_transport::Auth;
use mpio_transport::chap::{ChapConfig, ChapCredentials, Secret};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_added_and_removed_under_load_without_errors() {
    require_root!();
    let tgtd = four_portals(64 * MIB);
    let dev = open_all(device_config(&tgtd, 1, 2)).await;
    let mut events = dev.events();
    let report = under_load(tgtd.backing_file(1, 1), &dev, || async {
        // p3 through the third portal: logs in, is claimed, joins the rotation.
        dev.add_path(path(&tgtd, 2, 2)).unwrap();
        wait_until(&dev, Duration::from_secs(15), "p3 carrying I/O", |d| {
            d.snapshot().paths.iter().any(|p| p.name == "p3" && p.state == "active" && p.stats.total_requests() > 0)
        })
        .await;
        // p1 leaves while the writes go on: it drains and logs out.
        tokio::time::timeout(Duration::from_secs(20), dev.remove_path("p1"))
            .await
            .unwrap_or_else(|_| panic!("p1 not removed within 20 s: {:?}", dev.snapshot().paths))
            .unwrap();
        assert!(dev.snapshot().paths.iter().all(|p| p.name != "p1"), "{:?}", states(&dev));
        tgtd.wait_connections(1, "p1 logged out", Duration::from_secs(5), |c| {
            c.iter().all(|c| c.address != path_source(0))
        })
        .unwrap();
    })
    .await;
    assert!(report.ops > 400);
    let snap = dev.snapshot();
    let names: Vec<(usize, &str, &str)> = snap.paths.iter().map(|p| (p.id, p.name.as_str(), p.state.name())).collect();
    assert_eq!(names, [(1, "p2", "active"), (2, "p3", "active")], "ids stay");
    let configs: Vec<String> = dev.path_configs().iter().map(|c| c.connection.portal.to_string()).collect();
    assert_eq!(configs, [tgtd.portal(1).to_string(), tgtd.portal(2).to_string()]);
    // The events tell the story, and no path failed on the way.
    let evs = drain(&mut events);
    let story: Vec<(&str, &str)> = evs
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::PathAdded | EventKind::PathReady | EventKind::PathRemoving | EventKind::PathRemoved
            )
        })
        .map(|e| (e.kind.name(), e.path_name.as_deref().unwrap_or("-")))
        .collect();
    assert_eq!(
        story,
        [("path_added", "p3"), ("path_ready", "p3"), ("path_removing", "p1"), ("path_removed", "p1")],
        "{evs:?}"
    );
    assert!(!evs.iter().any(|e| matches!(e.kind, EventKind::PathFailed | EventKind::Failover { .. })), "{evs:?}");

    // Refusals, with the seed's codes; the device keeps working.
    let e = dev.add_path(path(&tgtd, 2, 3)).unwrap_err();
    assert_eq!(e.code(), Some(0xEFFF_0057), "{e}");
    let e = dev.remove_path("p1").await.unwrap_err();
    assert_eq!(e.code(), Some(0xEFFF_0059), "{e}");
    dev.remove_path("p2").await.unwrap();
    let e = dev.remove_path("p3").await.unwrap_err();
    assert_eq!(e.symbol(), Some("ISDSC_CANT_REMOVE_LAST_CONNECTION"), "{e}");
    assert!(e.to_string().contains("remove the device instead"), "{e}");
    dev.write(0, pattern(0, 4096, 9), false).await.unwrap();
    mpio_tests::assert_data(&dev.read(0, 4096).await.unwrap().to_bytes(), &pattern(0, 4096, 9), "after");
}

fn chap(secret: &str) -> Auth {
    let me = ChapCredentials::new("inituser", Secret::parse(secret.as_bytes()).unwrap()).unwrap();
    Auth::Chap(ChapConfig::new(me, None).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_started_before_its_target_is_reachable_becomes_ready_when_it_is() {
    require_root!();
    let tgtd = Tgtd::builder()
        .portals(2)
        .target(TargetSpec::new("late").lun(LunSpec::file(16 * MIB)).chap("inituser", "initsecret12"))
        .start()
        .unwrap();

    // A wrong CHAP secret is refused for good: the open gives up at once with
    // the reason, and leaves no session behind.
    let mut cfg = device_config(&tgtd, 1, 2);
    cfg.auth = chap("wrongsecret1");
    let t0 = Instant::now();
    let e = Device::open(cfg.clone()).await.unwrap_err();
    // At once: not after waiting out the startup timeout for a path that
    // keeps being refused.
    assert!(t0.elapsed() < cfg.startup_timeout, "gave up after {:?}", t0.elapsed());
    let msg = e.to_string();
    assert!(msg.contains("p1: login") && msg.contains("check the CHAP user and secret"), "{msg}");
    assert_eq!(e.code(), Some(0xEFFF_0047));
    tgtd.wait_connections(1, "no session left", Duration::from_secs(5), |c| c.is_empty()).unwrap();
    // Seen as events: a login failure (seed event 10), then the path fails.
    let (dev, mut events) = Device::start_watched(cfg.clone()).unwrap();
    let ev = wait_device_event(&mut events, Duration::from_secs(10), "a login failure", |e| {
        e.kind == EventKind::LoginFailed
    })
    .await;
    assert_eq!(ev.seed_event, Some(10));
    assert!(ev.reason.contains("authentication failure"), "{}", ev.reason);
    drop(dev);

    // The target unreachable: start returns at once, I/O waits for it.
    let portals = tgtd.portals();
    for p in &portals {
        tgtd.remove_portal(*p).unwrap();
    }
    cfg.auth = chap("initsecret12");
    cfg.timers.reconnect_max = Duration::from_secs(1);
    // `start_watched` is not async: it cannot wait for the target, and
    // returns before anything is known of the LU.
    let (dev, mut events) = Device::start_watched(cfg).unwrap();
    assert!(dev.info().is_none());
    let write = tokio::spawn({
        let dev = dev.clone();
        async move { dev.write(1 << 20, pattern(1 << 20, 64 << 10, 3), false).await }
    });
    // Each path reports its reason once (seed event 1: could not connect).
    let mut refused = Vec::new();
    while refused.len() < 2 {
        let ev = wait_device_event(&mut events, Duration::from_secs(10), "connect refused on both paths", |e| {
            e.kind == EventKind::LoginFailed && !refused.contains(&e.path)
        })
        .await;
        assert_eq!(ev.seed_event, Some(1), "{}", ev.reason);
        assert!(ev.reason.contains("refused"), "{}", ev.reason);
        refused.push(ev.path);
    }
    let e = dev.wait_ready(Duration::from_millis(500)).await.unwrap_err().to_string();
    assert!(e.contains("p1: connect") && e.contains("p2: connect"), "{e}");
    let snap = dev.snapshot();
    assert!(snap.starting && snap.waiting >= 1, "the write waits: {snap:?}");
    assert!(snap.paths.iter().all(|p| p.status == PathStatus::Connecting && p.stats.login_failures >= 1));
    assert!(!write.is_finished());

    // The target comes up: the device becomes ready and the write completes.
    for p in &portals {
        tgtd.add_portal(*p).unwrap();
    }
    dev.wait_ready(Duration::from_secs(15)).await.unwrap();
    write.await.unwrap().expect("the held write completes once a path is claimed");
    assert!(dev.info().is_some());
    mpio_tests::assert_data(
        &dev.read(1 << 20, 64 << 10).await.unwrap().to_bytes(),
        &pattern(1 << 20, 64 << 10, 3),
        "the held write",
    );
    wait_ready(&dev, 2, Duration::from_secs(15)).await;
    let snap = dev.snapshot();
    assert!(!snap.starting && snap.waiting == 0);
    assert_eq!(snap.all_paths_down_total(Instant::now()), Duration::ZERO, "starting up is no outage");
}

/// A target that refuses every login the same way (tgtd answers a login to
/// an offline target with Target Error, 0x0300, which is worth a retry,
/// as LIO answers an unknown target name with 0x0301): the path keeps
/// retrying, reports the reason once, then once that it keeps repeating,
/// and counts the streak; a login ends it (the scenario is
/// `mp::refused_again_and_again_is_reported_once`; `tests/tests/lio` runs
/// it with LIO's answer to an unknown name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_refused_again_and_again_is_reported_as_repeating_once() {
    require_root!();
    let tgtd = four_portals(16 * MIB);
    tgtd.set_state(1, TargetState::Offline).unwrap();
    let dev = refused_again_and_again_is_reported_once(device_config(&tgtd, 1, 1), "0x0300", None).await;
    tgtd.set_state(1, TargetState::Ready).unwrap();
    dev.wait_ready(Duration::from_secs(10)).await.unwrap();
    assert_eq!(dev.snapshot().paths[0].stats.login_refusals_in_a_row, 0);
}
