//! The multipath device against a real tgtd with several portals (issue
//! 3): claiming by identity, each policy's I/O distribution, faults under
//! continuous verified writes (connection reset, portal removed, target
//! offline, blackhole, slowed path), failback modes, a flapping path, the
//! all-paths-down hold, the stale-write fence, and a reservation held by
//! another initiator.

use std::future::Future;
use std::time::{Duration, Instant};

use mpio_mpath::Device;
use mpio_testbed::require_root;
use mpio_testbed::tgtd::{LunSpec, TargetSpec, Tgtd};
use mpio_tests::mp::*;
use mpio_tests::pattern;

mod api;
mod claim;
mod durability;
mod failback;
mod faults;
mod fence;
mod hold;
mod policies;
mod reservation;
mod runtime;

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
    finish_verified(tgtd, dev, writer).await
}

/// Stops the writer and checks: no error reached the caller, and every
/// acknowledged write reads back through the device and from the
/// target's disk (LUN 1 of target 1).
async fn finish_verified(tgtd: &Tgtd, dev: &Device, writer: Writer) -> WriterReport {
    let report = writer.finish().await;
    report.assert_no_errors();
    report.verify(dev).await;
    dev.flush().await.unwrap();
    report.verify_file(tgtd.backing_file(1, 1));
    report
}
