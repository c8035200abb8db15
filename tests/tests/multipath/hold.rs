//! All paths down: requests are held, released when a path returns, and
//! failed with EIO once the hold time has passed, after the hold-expired
//! event. Asserted from the device's events, its waiting count and the
//! order of what happened, never from how long the test slept.

use mpio_mpath::{DeviceEvent, EventKind, HoldMode};

use super::*;

const LEN: usize = 64 << 10;

/// The first event of `kind` among `events`.
fn first<'a>(events: &'a [DeviceEvent], kind: &EventKind) -> Option<&'a DeviceEvent> {
    events.iter().find(|e| std::mem::discriminant(&e.kind) == std::mem::discriminant(kind))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_held_while_every_path_is_down_then_released_or_failed_after_the_hold() {
    require_root!();
    let tgtd = Tgtd::builder().portals(2).target(TargetSpec::new("hold").lun(LunSpec::file(16 * MIB))).start().unwrap();
    let mut cfg = device_config(&tgtd, 1, 2);
    // Long enough that the first outage cannot outlast it however slow
    // the machine: the test ends that outage itself.
    cfg.timers.hold = HoldMode::For(Duration::from_secs(120));
    cfg.timers.reconnect_max = Duration::from_secs(1);
    let dev = open_all(cfg).await;
    let mut events = dev.events();
    let portals = tgtd.portals();
    let all_down = || async {
        for p in &portals {
            tgtd.remove_portal(*p).unwrap();
        }
        reset_path(&tgtd, 1, 0).await;
        reset_path(&tgtd, 1, 1).await;
        wait_until(&dev, Duration::from_secs(15), "every path down", |d| usable(d) == 0).await;
    };
    let restore = || {
        for p in &portals {
            tgtd.add_portal(*p).unwrap();
        }
    };
    let write = |seed: u64| {
        let dev = dev.clone();
        tokio::spawn(async move {
            let r = dev.write(0, pattern(0, LEN, seed), false).await;
            (r, Instant::now())
        })
    };

    // 1. An outage the hold covers: the write waits for a path, and
    // completes once one is back, without an error.
    // The hold starts with the last path's failure, before any request.
    all_down().await;
    let started =
        wait_device_event(&mut events, Duration::from_secs(5), "hold started", |e| e.kind == EventKind::HoldStarted)
            .await;
    let w = write(1);
    wait_until(&dev, Duration::from_secs(15), "the write held", |d| d.snapshot().waiting == 1).await;
    assert!(!w.is_finished(), "the write completed with every path down");
    let restored = Instant::now();
    restore();
    let (r, done) = w.await.unwrap();
    r.expect("no error when a path returns within the hold");
    // The device's driver starts the released write before it publishes
    // the step's events, so on a loaded machine the write can complete
    // first: wait for the event, and compare its time (the core's clock).
    let mut seen = drain(&mut events);
    if first(&seen, &EventKind::HoldEnded).is_none() {
        seen.push(
            wait_device_event(&mut events, Duration::from_secs(10), "hold ended", |e| e.kind == EventKind::HoldEnded)
                .await,
        );
    }
    let ended = first(&seen, &EventKind::HoldEnded).expect("hold ended event");
    assert!(first(&seen, &EventKind::HoldExpired).is_none(), "the hold expired: {seen:?}");
    // Held from the hold's start until after the path returned.
    assert!(started.at < restored && restored <= ended.at && ended.at <= done, "{started:?} {ended:?}");
    assert_eq!(dev.snapshot().waiting, 0);
    assert_eq!(dev.snapshot().counters.hold_failures, 0);
    wait_ready(&dev, 2, Duration::from_secs(15)).await;

    // 2. An outage longer than the hold (now 2 s): the held write fails
    // with EIO after the hold-expired event, which comes at least the hold
    // time after the hold started; requests that come later fail too.
    let hold = Duration::from_secs(2);
    dev.set_hold(HoldMode::For(hold));
    all_down().await;
    let started =
        wait_device_event(&mut events, Duration::from_secs(5), "hold started", |e| e.kind == EventKind::HoldStarted)
            .await;
    // Sent after the hold started, perhaps (on a slow machine) after it
    // expired: it fails either way, not before the expiry.
    let w = write(2);
    let expired =
        wait_device_event(&mut events, Duration::from_secs(60), "hold expired", |e| e.kind == EventKind::HoldExpired)
            .await;
    let (r, failed_at) = w.await.unwrap();
    let e = r.expect_err("the hold ran out");
    assert_eq!(e.errno, mpio_mpath::Errno::Io, "{e}");
    assert!(e.message.contains("hold time"), "{e}");
    assert!(expired.at.duration_since(started.at) >= hold, "expired {:?} after it started", expired.at - started.at);
    assert!(expired.at <= failed_at, "the write failed before the hold expired");
    let e = dev.write(0, pattern(0, LEN, 3), false).await.expect_err("a new request after the hold expired");
    assert_eq!(e.errno, mpio_mpath::Errno::Io, "{e}");
    let c = dev.snapshot().counters;
    assert_eq!((c.hold_expirations, c.hold_failures), (1, 2), "{c:?}");

    // 3. A path returns: the hold ends, I/O works again, and the data is
    // the first write's (the failed ones never reached the target).
    restore();
    wait_device_event(&mut events, Duration::from_secs(30), "hold ended", |e| e.kind == EventKind::HoldEnded).await;
    let got = dev.read(0, LEN as u64).await.unwrap();
    mpio_tests::assert_data(&got.to_bytes(), &pattern(0, LEN, 1), "data after the outages");
    dev.write(0, pattern(0, LEN, 4), false).await.unwrap();
    dev.flush().await.unwrap();
    let disk = std::fs::read(tgtd.backing_file(1, 1)).unwrap();
    mpio_tests::assert_data(&disk[..LEN], &pattern(0, LEN, 4), "backing file");
}
