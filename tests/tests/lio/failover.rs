//! The multipath device's failover under verified writes against LIO, as
//! against tgtd in `tests/tests/multipath/faults.rs` (`mpio_tests::mp`):
//! a path's connection reset, its portal blackholed (timed against what
//! `mpio timers explain` says), its portal removed, its TPG disabled
//! (LIO's "target offline"). No error may reach the caller; every
//! acknowledged write reads back through the device and from the guest's
//! backing file; the path returns once the fault is gone.

use mpio_mpath::{EventKind, PathStatus};
use mpio_testbed::vm::fault;
use mpio_tests::GuestFile;
use mpio_tests::mp::{
    blackholed_primary_fails_over_as_timers_explain, open_all, states, under_load, wait_device_event, wait_ready,
    wait_until,
};
use mpio_tests::pr::SharedLu;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_fails_over_without_errors_and_the_path_returns() {
    let Some(vm) = VM.get_or_skip() else { return };
    let _log = KernelLogOnPanic(vm);
    let lio = one_lu(vm, "mp-reset", 3283, LunSpec::fileio(16 * MIB));
    let lu = SharedLu::lio(&lio, 1, 1, 0);
    let dev = open_all(lu.device_config()).await;
    let mut events = dev.events();
    under_load(&GuestFile::lio(&lio, 1, 1, 0), &dev, || async {
        assert_eq!(fault::reset_connections(vm, lu.portals[0]).unwrap(), 1, "p1's connection");
        let ev = wait_device_event(&mut events, Duration::from_secs(10), "p1 failed", |e| {
            e.kind == EventKind::PathFailed && e.path == Some(0)
        })
        .await;
        assert_eq!(ev.seed_event, Some(20), "seed event 20: connection to the target lost: {}", ev.reason);
    })
    .await;
    wait_ready(&dev, 2, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_path_is_detected_and_failed_over_as_timers_explain_says() {
    let Some(vm) = VM.get_or_skip() else { return };
    let _log = KernelLogOnPanic(vm);
    let lio = one_lu(vm, "mp-blackhole", 3284, LunSpec::fileio(16 * MIB));
    let lu = SharedLu::lio(&lio, 1, 1, 0);
    blackholed_primary_fails_over_as_timers_explain(lu.device_config(), lu.portals[0], &GuestFile::lio(&lio, 1, 1, 0))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_portal_keeps_its_path_out_until_it_returns() {
    let Some(vm) = VM.get_or_skip() else { return };
    let _log = KernelLogOnPanic(vm);
    let lio = one_lu(vm, "mp-portal", 3285, LunSpec::fileio(16 * MIB));
    let lu = SharedLu::lio(&lio, 1, 1, 0);
    let dev = open_all(lu.device_config()).await;
    let portal = lu.portals[1];
    under_load(&GuestFile::lio(&lio, 1, 1, 0), &dev, || async {
        // LIO keeps the sessions that came in through a removed portal:
        // p2's is reset, as a controller port going away would.
        lio.remove_portal(1, 1, portal).unwrap();
        assert_eq!(fault::reset_connections(vm, portal).unwrap(), 1, "p2's connection");
        wait_until(&dev, Duration::from_secs(10), "p2 out", |d| {
            matches!(d.snapshot().paths[1].status, PathStatus::Reconnecting)
        })
        .await;
    })
    .await;
    // Connections to the removed portal are refused; the path stays out.
    assert_eq!(dev.snapshot().paths[1].state, "reconnecting", "{:?}", states(&dev));
    lio.add_portal(1, 1, portal).unwrap();
    wait_ready(&dev, 2, Duration::from_secs(40)).await;
}

/// One LU behind two TPGs (two controllers of one array): p1 through TPG
/// 1, p2 through TPG 2. TPG 1 disabled under load closes p1's session
/// and refuses its logins; p2 carries the writes; p1 returns once TPG 1
/// is enabled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_tpg_fails_over_to_the_other_tpg() {
    let Some(vm) = VM.get_or_skip() else { return };
    let _log = KernelLogOnPanic(vm);
    let [a, b] = two_portals(vm, 3286);
    let lio = Lio::builder()
        .target(
            TargetSpec::new("mp-tpg")
                .tpg(TpgSpec::new().portal(a).lun(LunSpec::fileio(16 * MIB)))
                .tpg(TpgSpec::new().portal(b).lun(LunSpec::same_as(1, 1, 0))),
        )
        .start(vm)
        .unwrap();
    let mut lu = SharedLu::lio(&lio, 1, 1, 0);
    lu.portals = vec![a, b];
    let dev = open_all(lu.device_config()).await;
    let mut events = dev.events();
    let report = under_load(&GuestFile::lio(&lio, 1, 1, 0), &dev, || async {
        lio.set_enabled(1, 1, false).unwrap();
        let ev = wait_device_event(&mut events, Duration::from_secs(10), "p1 failed", |e| {
            e.kind == EventKind::PathFailed && e.path == Some(0)
        })
        .await;
        eprintln!("LIO's TPG disabled: {}", ev.reason);
    })
    .await;
    let snap = dev.snapshot();
    assert_ne!(snap.paths[0].state, "active", "p1 logged in to a disabled TPG: {:?}", states(&dev));
    assert!(report.ops > 0);
    lio.set_enabled(1, 1, true).unwrap();
    wait_ready(&dev, 2, Duration::from_secs(40)).await;
}
