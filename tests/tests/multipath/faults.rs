//! Faults under continuous verified writes: none may reach the caller.

use mpio_mpath::{EventKind, PathStatus};
use mpio_testbed::netfault::RateLimit;
use mpio_testbed::tgtd::TargetState;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_fails_over_without_errors_and_the_path_returns() {
    require_root!();
    let tgtd = four_portals(64 * MIB);
    let cfg = device_config(&tgtd, 1, 4);
    let explained = cfg.timers.explain();
    let dev = open_all(cfg).await;
    let mut events = dev.events();
    let report = under_load(tgtd.backing_file(1, 1), &dev, || async {
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
    // A reset is seen at once; a write caught on p1 waits for the fence, a
    // reinstatement login through another portal of the group, which the
    // login timeouts bound. (Milliseconds in practice: not a margin a
    // loaded machine can miss.)
    assert!(
        report.max_latency < explained.fence_login,
        "a reset stalled I/O for {:?}, longer than the explained fence login ({:?})",
        report.max_latency,
        explained.fence_login
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_portal_keeps_its_path_out_until_it_returns() {
    require_root!();
    let tgtd = four_portals(64 * MIB);
    let dev = open_all(device_config(&tgtd, 1, 4)).await;
    let portal = tgtd.portal(1);
    under_load(tgtd.backing_file(1, 1), &dev, || async {
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

/// What `mpio timers explain` says of a silent path and of failover,
/// measured against a real blackhole (`mpio_tests::mp`; LIO runs it too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_path_is_detected_and_failed_over_as_timers_explain_says() {
    require_root!();
    let tgtd = four_portals(64 * MIB);
    let cfg = device_config(&tgtd, 1, 2);
    blackholed_primary_fails_over_as_timers_explain(cfg, tgtd.portal(0), tgtd.backing_file(1, 1)).await;
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
    require_root!();
    let tgtd = dual_controller();
    let mut cfg = dual_controller_config(&tgtd);
    // tgtd answers NOP-Outs while it drops commands: only the in-flight
    // watchdog can tell. Shorter than the default so the test is quick.
    cfg.timers.io_timeout = Duration::from_secs(4);
    cfg.timers.abort_timeout = Duration::from_secs(2);
    let dev = open_all(cfg).await;
    let mut events = dev.events();
    under_load(tgtd.backing_file(1, 1), &dev, || async {
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
    require_root!();
    let tgtd = four_portals(64 * MIB);
    let dev = open_all(device_config(&tgtd, 1, 4)).await;
    let mut limit = None;
    under_load(tgtd.backing_file(1, 1), &dev, || async {
        limit = Some(RateLimit::new(tgtd.portal(0), 2_000_000).unwrap());
    })
    .await;
    assert_eq!(usable(&dev), 4, "a slow path is not a failed path: {:?}", states(&dev));
}
