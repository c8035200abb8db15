//! The tour of `./scripts/demo.sh --vm` (`mpio_testbed::tour`) in the
//! shared VM: every step's claim checked from what it prints.

use mpio_testbed::tour::{self, TourOptions};

use super::*;

const PORT: u16 = 3297;

#[test]
fn the_vm_demo_tours_a_ublk_device_through_a_path_failure_and_a_daemon_restart() {
    let Some(vm) = vm() else { return };
    let _turn = frontend_turn();
    let mut out = Vec::new();
    let toured = tour::run(vm, &TourOptions { port: PORT, lu_mib: 64, files: 3 }, &mut out);
    let out = String::from_utf8_lossy(&out);
    if let Err(e) = toured {
        panic!("the tour failed: {e}\n--- its narration ---\n{out}");
    }
    for want in [
        "== 1. The SAN",
        "== 2. The daemon",
        "$ mpio status",
        "/dev/ublkb",
        "64 MiB, logical block 512",
        "== 4. A path fails",
        "3 more files written while p1 was down, without an error",
        "fsck.ext4 -n: clean",
        "== 5. The daemon is killed",
        "took it over; the writer paused and wrote its 3 files without an error",
        "9 of 9 files read back identical",
        "== 7. What to try next",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // The events as shown: `time device path kind reason`.
    let events = out.split("$ mpio events").nth(1).unwrap_or_default();
    for kind in ["ublk_recovering", "ublk_reattached"] {
        assert!(out.lines().any(|l| l.split_whitespace().nth(3) == Some(kind)), "no {kind} shown:\n{out}");
    }
    for kind in ["path_failed", "path_ready"] {
        let seen = events.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(2) == Some(&"p1") && f.get(3) == Some(&kind)
        });
        assert!(seen, "no {kind} of p1 in the events shown:\n{out}");
    }
}
