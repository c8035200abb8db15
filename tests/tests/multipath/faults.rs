//! Faults under continuous verified writes: none may reach the caller.

use mpio_mpath::{DeviceEvent, EventKind, PathStatus};
use mpio_testbed::netfault::{Blackhole, RateLimit};
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

/// What `mpio timers explain` says of a silent path and of failover,
/// measured against a real blackhole: the primary of a fail-over-only
/// pair is blackholed under verified writes.
///
/// Lower bounds, which no load can break (timers never fire early): the
/// path is declared dead no sooner than `detect_silent` after the last
/// byte it received, and that byte came after `t0`, when the probe write
/// whose answer the test saw was sent. Upper bounds: the explained worst
/// case counts from the moment of the hole, which lies before `t_after`;
/// a loaded machine can exceed it only by running the timers late, so the
/// excess is bounded by the lateness a probe timer on the same runtime saw
/// in the same window (each of the two keepalive timers and the event's
/// hop to the device can be that late once). The order of events is
/// strict: failed, then failover, then the fence cleared, then writes
/// complete again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_path_is_detected_and_failed_over_as_timers_explain_says() {
    require_root!();
    let tgtd = four_portals(64 * MIB);
    let mut cfg = device_config(&tgtd, 1, 2);
    cfg.policy = mpio_mpath::PolicySpec::FailOverOnly { primary: 0, standby_order: vec![1] };
    let explained = cfg.timers.explain();
    let dev = open_all(cfg).await;
    let mut events = dev.events();
    let lateness = LatenessProbe::start();
    let mut hole = None;
    let (mut t0, mut t_after, mut ops_at_hole) = (Instant::now(), Instant::now(), 0);
    let report = under_load(&tgtd, &dev, || async {
        // All I/O goes to p1: the answer to this write reached p1 after t0.
        t0 = Instant::now();
        dev.write(0, pattern(0, 4096, 7), false).await.unwrap();
        hole = Some(Blackhole::new(tgtd.portal(0)).unwrap());
        t_after = Instant::now();
        ops_at_hole = dev.snapshot().paths[1].stats.requests.iter().sum::<u64>();
    })
    .await;
    let late = lateness.stop().await;
    drop(hole);
    let evs = drain(&mut events);
    let find = |what: &str, pred: &dyn Fn(&DeviceEvent) -> bool| {
        evs.iter().find(|e| pred(e)).unwrap_or_else(|| panic!("no {what}: {evs:?}")).clone()
    };
    let failed = find("p1 failed", &|e| e.kind == EventKind::PathFailed && e.path == Some(0));
    let failover = find("failover to p2", &|e| matches!(&e.kind, EventKind::Failover { to, .. } if to == &[1]));
    let fenced = find("p1's fence cleared", &|e| e.kind == EventKind::FenceCleared && e.path == Some(0));
    // The keepalive found it: not the command timeout of the writes caught
    // in the hole (io_timeout + abort), not the TCP stack.
    assert!(failed.reason.contains("nop_timeout"), "{}", failed.reason);
    let detect = failed.at.duration_since(t_after);
    eprintln!(
        "blackhole: p1 declared dead {:?} after the hole (explained: within {:?}; {:?} after t0), fence cleared \
         {:?} later (explained: at most {:?}), slowest request {:?}, timer lateness up to {late:?}",
        detect,
        explained.detect_silent,
        failed.at - t0,
        fenced.at - failed.at,
        explained.fence_login,
        report.max_latency,
    );
    assert!(
        failed.at >= t0 + explained.detect_silent,
        "declared dead {:?} after the last answer's request, sooner than the keepalive can tell ({:?})",
        failed.at - t0,
        explained.detect_silent
    );
    // Up to three late wake-ups (two keepalive timers, one hop), each at
    // most one timer tick (1 ms) later than the probe saw.
    let scheduling = (late + Duration::from_millis(1)) * 3;
    assert!(
        detect <= explained.detect_silent + scheduling,
        "declared dead {detect:?} after the hole: more than the explained {:?} plus the {scheduling:?} the \
         runtime ran late",
        explained.detect_silent
    );
    // Failover: reads move at detection, writes once the fence (a
    // reinstatement login through p2's portal, same portal group) says the
    // old nexus cannot run them; the explanation bounds that login.
    assert!(failed.at <= failover.at && failover.at <= fenced.at, "{evs:?}");
    assert!(
        fenced.at - failed.at <= explained.fence_login + scheduling,
        "fence cleared {:?} after detection: more than the explained {:?}",
        fenced.at - failed.at,
        explained.fence_login
    );
    // p2 carried the writes after the failover (it had none before).
    assert_eq!(ops_at_hole, 0, "p2 carried I/O before the failover");
    assert!(dev.snapshot().paths[1].stats.requests.iter().sum::<u64>() > 0, "p2 carried nothing after the failover");
    wait_ready(&dev, 2, Duration::from_secs(40)).await;
}

/// Measures how late timers fire on this runtime: a task sleeping 1 ms at
/// a time records its largest overshoot until stopped.
struct LatenessProbe {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Duration>,
}

impl LatenessProbe {
    fn start() -> LatenessProbe {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut worst = Duration::ZERO;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let due = Instant::now() + Duration::from_millis(1);
                    tokio::time::sleep_until(due.into()).await;
                    worst = worst.max(Instant::now().saturating_duration_since(due));
                }
                worst
            }
        });
        LatenessProbe { stop, task }
    }

    async fn stop(self) -> Duration {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("lateness probe")
    }
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
    require_root!();
    let tgtd = four_portals(64 * MIB);
    let dev = open_all(device_config(&tgtd, 1, 4)).await;
    let mut limit = None;
    under_load(&tgtd, &dev, || async {
        limit = Some(RateLimit::new(tgtd.portal(0), 2_000_000).unwrap());
    })
    .await;
    assert_eq!(usable(&dev), 4, "a slow path is not a failed path: {:?}", states(&dev));
}
