//! All paths down: requests wait for the hold, then fail with EIO.

use mpio_mpath::HoldMode;

use super::*;

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
