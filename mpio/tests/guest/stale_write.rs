//! A write the killed daemon left on the wire never lands after a newer
//! one (issue 9, daemon restart). The daemon sends write A on path p1,
//! whose link delays everything by seconds, and is killed with A still on
//! its way to LIO, in the dead process's socket and netem's queue. The
//! kernel hands A to the restarted daemon again, the application then
//! writes B to the same block, and only after that does the old A reach
//! LIO, on the old session, which LIO still runs. Unless the new daemon
//! holds writes until p1's predecessor is fenced (p1's login reinstates
//! its ISID, or the fence timeout passes: mpath's core), B goes out on p2
//! at once and the old A lands over it. The block must read B.

use mpio_testbed::vm::INNER_NETNS;
use mpio_testbed::vm::fault::{self, Netem};
use mpio_testbed::wait::wait_until;

use super::ublk_lu::{DEV, PATH_EVENT, TOOL, UblkLu};
use super::*;

const PORT: u16 = 3298;

/// p1's one-way delay: longer than the restarted daemon takes to serve
/// the device again over p2 and write A and B, even under TCG.
const SLOW: &str = "delay 8s";

/// Timers that keep p1 up while it is slow (NOP-Outs, the write's own
/// timeout).
const DEVICE: &str = "[device.timers]\nnop_timeout = \"30s\"\nio_timeout = \"60s\"\n";

fn write(lu: &UblkLu, which: &str) -> String {
    format!("dd if=/tmp/stale-{which} of={} bs=4k count=1 oflag=direct conv=notrunc status=none", lu.dev)
}

/// Polls `done` (every 100 ms) until it holds; panics with `what` after
/// [`PATH_EVENT`]. What it waits for has no event: a command in flight, a
/// TCP state.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    wait_until(what, PATH_EVENT, Duration::from_millis(100), || done().then_some(())).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_write_the_killed_daemon_left_on_the_wire_never_lands_after_a_newer_one() {
    let Some(vm) = vm() else { return };
    let _turn = frontend_turn();
    let started = Instant::now();
    let mut lu = UblkLu::start(vm, "guest-stale", PORT, LunSpec::fileio(16 * MIB), DEVICE);
    lu.sh("head -c 4096 /dev/urandom > /tmp/stale-a; head -c 4096 /dev/urandom > /tmp/stale-b");
    // Writes on p1 (the restarted daemon reads the file again: round robin,
    // over p2 while p1 cannot log in).
    let set = lu.d.json(&["policy", "set", DEV, "fail-over-only", "--primary", "p1"]).unwrap();
    assert_eq!(set["policy"], "fail-over-only", "{set}");
    let p1 = lu.portals[0];
    let old = fault::established(vm, p1).unwrap();
    assert_eq!(old.len(), 1, "one connection on p1: {old:?}");

    // A goes out on p1, slowed; the daemon dies with it on the wire.
    let slow = Netem::in_netns(vm, Some(INNER_NETNS), &vm.inner_path(0).initiator_if, SLOW).unwrap();
    let a = vm.sh(&write(&lu, "a")).timeout(TOOL).spawn().unwrap();
    until("write A in flight on p1", || path_field(&lu.d, DEV, "p1", "in_flight").as_u64() == Some(1));
    lu.d.kill().unwrap();
    lu.d.restart().unwrap_or_else(|e| panic!("{e}"));

    // The kernel reissues A to the new daemon; then B.
    let a = a.wait().unwrap();
    assert!(a.success(), "write A across the restart: {a:?}");
    lu.sh(&write(&lu, "b"));

    // The old A has reached LIO and LIO is done with it: the old
    // connection's end (the FIN behind A) has come and LIO closed it.
    let peer = old[0];
    until("the killed daemon's p1 connection ends at LIO", || {
        let cmd = ["ss", "-H", "-tn", "state", "established", "state", "close-wait", "src", &p1.to_string()];
        let open = vm.command(cmd).run_ok().unwrap();
        !open.contains(&peer.to_string())
    });
    drop(slow);
    let got = vm
        .sh(&format!(
            "dd if={} bs=4k count=1 iflag=direct status=none > /tmp/stale-got\n\
             if cmp -s /tmp/stale-got /tmp/stale-b; then echo B; elif cmp -s /tmp/stale-got /tmp/stale-a; then echo A; \
             else echo neither; fi",
            lu.dev
        ))
        .run_ok()
        .unwrap();
    assert_eq!(got.trim(), "B", "the block must read B; A is the killed daemon's write landing after it");
    eprintln!("the stale-write scenario took {:.1?}", started.elapsed());
}
