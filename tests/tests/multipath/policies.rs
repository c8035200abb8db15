//! Each policy spreads I/O over the paths as it promises, switched at
//! runtime under a verifying writer (no request may fail across a switch).

use mpio_mpath::{EventKind, PolicyRequest};
use mpio_testbed::netfault::RateLimit;

use super::*;

fn request(policy: &str) -> PolicyRequest {
    PolicyRequest { policy: policy.into(), ..PolicyRequest::default() }
}

fn names(list: &[&str]) -> Option<Vec<String>> {
    Some(list.iter().map(|s| s.to_string()).collect())
}

/// Switches to `req` and returns the requests each path completed while
/// the writer did `n` more, counted once the requests routed by the
/// previous policy have drained.
async fn share_under(dev: &Device, writer: &Writer, req: &PolicyRequest, n: u64) -> Vec<u64> {
    timed_share_under(dev, writer, req, n).await.0
}

/// [`share_under`], and how long the `n` requests took.
async fn timed_share_under(dev: &Device, writer: &Writer, req: &PolicyRequest, n: u64) -> (Vec<u64>, Duration) {
    let mut events = dev.events();
    dev.set_policy(req).unwrap_or_else(|e| panic!("{}: {e}", req.policy));
    wait_device_event(&mut events, Duration::from_secs(2), "policy changed", |e| e.kind == EventKind::PolicyChanged)
        .await;
    // The writer has 8 requests in flight at most: 100 completions later,
    // none routed by the previous policy is left.
    writer.progress(100, Duration::from_secs(20)).await;
    let (before, t0) = (requests(dev), Instant::now());
    writer.progress(n, Duration::from_secs(60)).await;
    (delta(&before, &requests(dev)), t0.elapsed())
}

/// `share[i] / total` is within `lo..=hi`.
#[track_caller]
fn fraction_within(share: &[u64], i: usize, lo: f64, hi: f64, what: &str) {
    let total: u64 = share.iter().sum();
    let f = share[i] as f64 / total as f64;
    assert!(
        (lo..=hi).contains(&f),
        "{what}: p{} carried {:.2} of the requests, expected {lo}..={hi}: {share:?}",
        i + 1,
        f
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_policy_spreads_io_as_it_promises() {
    require_root!();
    let tgtd = four_portals(64 * MIB);
    let dev = open_all(device_config(&tgtd, 1, 4)).await;
    let writer = Writer::start(&dev, 0, 8 * MIB, 64 << 10, 8);
    writer.progress(100, Duration::from_secs(10)).await;

    // fail-over-only: the primary alone.
    let fo = PolicyRequest { primary: names(&["p2"]), ..request("fail-over-only") };
    let share = share_under(&dev, &writer, &fo, 400).await;
    assert_eq!(share[0] + share[2] + share[3], 0, "fail-over-only with primary p2: {share:?}");
    assert!(share[1] >= 400, "{share:?}");

    // round-robin, every I/O: each path a quarter.
    let share = share_under(&dev, &writer, &request("round-robin"), 800).await;
    for i in 0..4 {
        fraction_within(&share, i, 0.18, 0.32, "round-robin");
    }

    // round-robin-subset: the active set alone, evenly.
    let subset = PolicyRequest { active: names(&["p1", "p3"]), ..request("round-robin-subset") };
    let share = share_under(&dev, &writer, &subset, 400).await;
    assert_eq!(share[1] + share[3], 0, "round-robin-subset p1,p3: {share:?}");
    fraction_within(&share, 0, 0.35, 0.65, "round-robin-subset");

    // weighted: the lowest weight; equal lowest weights share round robin.
    let weights = [("p1", 5), ("p2", 1), ("p3", 1), ("p4", 9)];
    let weighted = PolicyRequest {
        weights: Some(weights.iter().map(|(n, w)| (n.to_string(), *w)).collect()),
        ..request("weighted")
    };
    let share = share_under(&dev, &writer, &weighted, 400).await;
    assert_eq!(share[0] + share[3], 0, "weighted, p2 and p3 lightest: {share:?}");
    fraction_within(&share, 1, 0.35, 0.65, "weighted");

    // The adaptive policies use every path when the paths are alike, and
    // none takes it all. Not an even share: on a loaded 2-core machine one
    // slow completion makes a path look slower than its queued peers, and
    // service-time rightly avoids it until its figures are forgotten (1 s
    // idle) and it is measured again (seen: [248, 273, 3, 281]). How they
    // spread by queue, bytes and latency is unit-tested without a clock
    // (`policies::least`, `simulate`).
    for policy in ["least-queue-depth", "least-blocks", "service-time"] {
        let share = share_under(&dev, &writer, &request(policy), 800).await;
        assert!(share.iter().all(|&n| n > 0), "{policy} left a path unused: {share:?}");
        for i in 0..4 {
            fraction_within(&share, i, 0.0, 0.7, policy);
        }
    }

    finish_verified(tgtd.backing_file(1, 1), &dev, writer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adaptive_policies_starve_a_slow_path_round_robin_does_not() {
    require_root!();
    let tgtd = four_portals(64 * MIB);
    let dev = open_all(device_config(&tgtd, 1, 4)).await;
    // p1 at 500 kB/s: ~7 writes of 64 KiB a second, against hundreds or
    // thousands on the other paths.
    let _slow = RateLimit::new(tgtd.portal(0), 500_000).unwrap();
    let writer = Writer::start(&dev, 0, 8 * MIB, 64 << 10, 8);
    writer.progress(50, Duration::from_secs(10)).await;

    // Round robin waits for the slow path at every fourth request: p1
    // carries a quarter, and sets the pace of all four.
    let (rr, rr_took) = timed_share_under(&dev, &writer, &request("round-robin"), 100).await;
    fraction_within(&rr, 0, 0.2, 0.3, "round-robin with a slow p1");
    let rate = |share: &[u64], took: Duration| share.iter().sum::<u64>() as f64 / took.as_secs_f64();
    let (rr_share, rr_rate) = (rr[0] as f64 / rr.iter().sum::<u64>() as f64, rate(&rr, rr_took));

    // The adaptive policies do not wait for it. Bounds relative to round
    // robin's, measured here, not to a throughput a loaded machine may not
    // reach: at least twice its rate (round robin is held at four times
    // p1's; the machine only needs to move eight times p1's ~7 writes a
    // second), and at most half its share on p1.
    for policy in ["least-queue-depth", "least-blocks", "service-time"] {
        let (share, took) = timed_share_under(&dev, &writer, &request(policy), 1000).await;
        let total: u64 = share.iter().sum();
        let p1 = share[0] as f64 / total as f64;
        eprintln!(
            "{policy}: {:.0} requests/s, p1 {p1:.3}; round robin {rr_rate:.0} requests/s, p1 {rr_share:.3}",
            rate(&share, took)
        );
        assert!(
            rate(&share, took) >= 2.0 * rr_rate,
            "{policy}: {:.0} requests/s, not twice round robin's {rr_rate:.0}: it waits for the slow path ({share:?})",
            rate(&share, took)
        );
        assert!(p1 <= rr_share / 2.0, "{policy}: p1 carried {p1:.3}, round robin gave it {rr_share:.3}: {share:?}");
    }
    let report = writer.finish().await;
    report.assert_no_errors();
    report.verify(&dev).await;
}
