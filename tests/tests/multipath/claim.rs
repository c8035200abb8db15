//! Only paths to the device's logical unit that pass bring-up carry I/O.

use mpio_mpath::scsi::LuAccess;
use mpio_mpath::{BoxFuture, BringUp, BringUpRefused, CauseKind, DeviceError};
use mpio_testbed::tgtd::TargetState;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_to_another_logical_unit_or_failing_bring_up_are_refused() {
    require_root!();
    let tgtd = Tgtd::builder()
        .portals(3)
        .target(TargetSpec::new("lu-a").lun(LunSpec::file(16 * MIB)))
        .target(TargetSpec::new("lu-b").lun(LunSpec::file(16 * MIB)))
        .start()
        .unwrap();

    #[derive(Debug)]
    struct RefuseP2(std::sync::Mutex<Vec<String>>);
    impl BringUp for RefuseP2 {
        fn before_io<'a>(&'a self, path: &'a str, lu: &'a LuAccess) -> BoxFuture<'a, Result<(), BringUpRefused>> {
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
        s.paths[0].state == "active" && s.paths[1].last_cause.as_ref().is_some_and(|c| c.kind == CauseKind::Claim)
    })
    .await;
    tgtd.set_state(2, TargetState::Ready).unwrap();
    wait_until(&dev, Duration::from_secs(10), "p3 refused", |d| {
        d.snapshot().paths[2].last_cause.as_ref().is_some_and(|c| c.kind == CauseKind::Claim)
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

/// A path whose claim is refused for good does not keep a wait for every
/// path (what `mpio perf` over several paths does) until its timeout: the
/// wait fails at once, naming the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_refused_for_good_fails_a_wait_for_every_path_at_once() {
    require_root!();
    let tgtd = Tgtd::builder()
        .portals(2)
        .target(TargetSpec::new("lu-a").lun(LunSpec::file(16 * MIB)))
        .target(TargetSpec::new("lu-b").lun(LunSpec::file(16 * MIB)))
        .start()
        .unwrap();
    let mut cfg = device_config(&tgtd, 1, 2);
    cfg.paths[1].target = Some(tgtd.iqn(2).parse().unwrap());
    let dev = Device::open(cfg).await.unwrap();
    // Far longer than the claim takes: a wait that runs into it reports
    // NotAllReady instead.
    let timeout = Duration::from_secs(60);
    let e = dev.wait_all_ready(timeout).await.unwrap_err();
    let DeviceError::PathFailed { path, reason, .. } = &e else { panic!("not failed at once: {e}") };
    assert!(reason.starts_with("claim: ") && reason.contains("not the device's logical unit"), "{e}");
    let refused = dev.snapshot().paths.iter().find(|p| &p.name == path).map(|p| p.state.name());
    assert_eq!(refused, Some("failed"));
}
