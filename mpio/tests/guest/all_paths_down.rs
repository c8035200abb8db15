//! Scenario 4 (issue 9): every path of a ublk device down. Shorter than
//! the hold: the application's writes wait and succeed. Longer: they
//! fail with EIO (the I/O-error class as Linux gives it, "Input/output
//! error"), held ones and new ones, the block device stays, and new I/O
//! succeeds once a path is back. With `hold = "queue"`: writes wait for
//! as long as the paths are away. The hold is changed between the
//! outages with `mpio hold`, as an operator would; each write's data is
//! read back afterwards.

use mpio_testbed::vm::Awaited;

use super::events::Events;
use super::ublk_lu::{DEV, Fault, PATH_EVENT, PathFault, TOOL, UblkLu, quick_return};
use super::*;

const PORT: u16 = 3291;

/// Each write: 1 MiB of known bytes at its own MiB of the device.
const SRC: &str = "/tmp/src-all-paths-down";

fn write_at(lu: &UblkLu, mib: u64) -> String {
    format!("dd if={SRC} of={} bs=64k seek={} oflag=direct conv=notrunc status=none", lu.dev, mib * 16)
}

/// The MiB at `mib` is [`SRC`].
fn assert_written(lu: &UblkLu, mib: u64) {
    lu.sh(&format!("dd if={} bs=64k skip={} count=16 iflag=direct status=none | cmp - {SRC}", lu.dev, mib * 16));
}

/// Both paths away: their portals removed (connections reset, reconnects
/// refused), so the outage lasts exactly until [`restore`]; the hold
/// starts with the second path's failure.
fn all_down<'a>(lu: &'a UblkLu, events: &mut Events) -> [PathFault<'a>; 2] {
    let faults = [0, 1].map(|i| lu.fail_path(i, Fault::PortalRemoved));
    events.wait("hold_started", None, PATH_EVENT);
    faults
}

fn restore(lu: &UblkLu, events: &mut Events, faults: [PathFault<'_>; 2]) {
    for f in faults {
        f.restore();
    }
    events.wait("hold_ended", None, PATH_EVENT);
    lu.wait_all_paths();
}

/// A hold the first outage cannot outlast (the paths come back within
/// seconds of their portals' return); quick returns; little damping of
/// paths that fail again and again.
fn timers() -> String {
    quick_return("hold = \"90s\"\n", "")
}

#[test]
fn all_paths_down_holds_then_fails_with_eio_and_queue_holds_for_ever() {
    let Some(vm) = vm() else { return };
    let _turn = frontend_turn();
    let started = Instant::now();
    let lu = UblkLu::start(vm, "guest-all-down", PORT, LunSpec::fileio(32 * MIB), &timers());
    lu.sh(&format!("dd if=/dev/urandom of={SRC} bs=1M count=1 status=none"));
    let mut events = Events::follow(&lu.d, DEV);

    // Shorter than the hold: the write waits for a path and succeeds.
    let faults = all_down(&lu, &mut events);
    let held = vm.sh(&write_at(&lu, 1)).timeout(TOOL).spawn().unwrap();
    restore(&lu, &mut events, faults);
    let done = held.wait().unwrap();
    assert!(done.success(), "a write held through a short outage failed: {done:?}");
    assert_written(&lu, 1);

    // Longer than the hold: EIO for the held write and for new ones; the
    // block device stays; after a path's return, I/O works again.
    lu.d.ok(&["hold", DEV, "2s"]).unwrap();
    let faults = all_down(&lu, &mut events);
    let held = vm.sh(&write_at(&lu, 2)).timeout(TOOL).spawn().unwrap();
    events.wait("hold_expired", None, PATH_EVENT);
    let failed = held.wait().unwrap();
    let late = vm.sh(&write_at(&lu, 3)).timeout(TOOL).run().unwrap();
    for (what, out) in [("held", &failed), ("new", &late)] {
        assert!(!out.success() && out.stderr.contains("Input/output error"), "{what} write after the hold: {out:?}");
    }
    let name = lu.dev.trim_start_matches("/dev/");
    lu.sh(&format!("test -b {} && test -e /sys/block/{name}", lu.dev));
    restore(&lu, &mut events, faults);
    lu.sh(&write_at(&lu, 3));
    assert_written(&lu, 3);

    // hold = queue: a write waits however long the paths are away (here
    // five times the hold that failed above), then succeeds.
    lu.d.ok(&["hold", DEV, "queue"]).unwrap();
    let faults = all_down(&lu, &mut events);
    let queued = vm.sh(&write_at(&lu, 4)).timeout(TOOL).spawn().unwrap();
    let waited = queued.wait_output(Duration::from_secs(10), |_, _| false).unwrap();
    assert_eq!(waited, Awaited::Deadline, "the queued write ended while no path was there: {:?}", queued.output());
    restore(&lu, &mut events, faults);
    let done = queued.wait().unwrap();
    assert!(done.success(), "a queued write failed: {done:?}");
    assert_written(&lu, 4);
    eprintln!("the all-paths-down scenario took {:.1?}", started.elapsed());
}
