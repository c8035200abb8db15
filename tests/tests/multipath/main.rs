//! The multipath device against a real tgtd with several portals (issue
//! 3): claiming by identity, each policy's I/O distribution, faults under
//! continuous verified writes (connection reset, portal removed, target
//! offline, blackhole, slowed path), failback modes, a flapping path, the
//! all-paths-down hold, the stale-write fence, and a reservation held by
//! another initiator.

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
