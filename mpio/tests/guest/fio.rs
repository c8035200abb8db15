//! Scenario 6 (issue 9): fio on the raw `/dev/ublkbN` (io_uring, direct
//! I/O, queue depth 32, 4 jobs, crc32c verify) while path p2 flaps and
//! the policy is changed with `mpio policy set`: not one error, every
//! block verified.
//!
//! fio runs in rounds (each writes its jobs' regions, then reads and
//! verifies all of them) until the test is done flapping: the rounds
//! span the whole sequence however slow the machine is, and no round is
//! cut short by a signal.

use mpio_testbed::vm::Awaited;

use super::events::Events;
use super::ublk_lu::{DEV, Fault, PATH_EVENT, TOOL, UblkLu, quick_return};
use super::*;

const PORT: u16 = 3292;
const JOBS: u64 = 4;
/// Each job's own region of the device.
const JOB_MIB: u64 = 8;

fn fio_rounds(dev: &str, stop: &str) -> String {
    format!(
        "set -e\nwhile [ ! -e {stop} ]; do\n\
         fio --name=flap --filename={dev} --ioengine=io_uring --direct=1 --iodepth=32 --numjobs={JOBS} \
         --rw=randwrite --bs=4k --size={JOB_MIB}M --offset_increment={JOB_MIB}M \
         --verify=crc32c --verify_fatal=1 --group_reporting\n\
         echo round done\ndone\n"
    )
}

/// `mpio policy set DEV ARGS...`, and that it took.
fn set_policy(lu: &UblkLu, args: &[&str]) {
    let mut argv = vec!["policy", "set", DEV];
    argv.extend_from_slice(args);
    let set = lu.d.json(&argv).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set["policy"], args[0], "{set}");
}

/// Faults in a row on one path.
fn timers() -> String {
    quick_return("", "")
}

#[test]
fn fio_verifies_every_block_on_ublk_while_a_path_flaps_and_the_policy_changes() {
    let Some(vm) = vm() else { return };
    let _turn = frontend_turn();
    let started = Instant::now();
    let lu = UblkLu::start(vm, "guest-fio", PORT, LunSpec::fileio(JOBS * JOB_MIB * MIB), &timers());
    let mut events = Events::follow(&lu.d, DEV);
    let stop = format!("/tmp/stop-fio-{}", vm.unique());
    let fio = vm.sh(&fio_rounds(&lu.dev, &stop)).timeout(TOOL).spawn().unwrap();
    let still_running = |when: &str| {
        let now = fio.wait_output(Duration::ZERO, |_, _| false).unwrap();
        assert_eq!(now, Awaited::Deadline, "fio stopped {when}: {:?}", fio.output());
    };
    let rounds_at_least = |n: usize| {
        let got = fio.wait_output(TOOL, |out, _| out.matches("round done").count() >= n).unwrap();
        assert_eq!(got, Awaited::Matched, "fio's round {n}: {:?}", fio.output());
    };
    // The flaps start as the second round does.
    rounds_at_least(1);

    for policy in [&["least-queue-depth"][..], &["weighted", "--weights", "p1=1,p2=3"], &["round-robin"]] {
        set_policy(&lu, policy);
        lu.fail_path(1, Fault::Reset).restore();
        events.wait("path_failed", Some("p2"), PATH_EVENT);
        lu.wait_all_paths();
        still_running(&format!("during the flaps (policy {policy:?})"));
    }
    // A whole round after p2's return: it carried some of its writes.
    let before = lu.write_bytes("p2");
    let now = fio.output().0.matches("round done").count();
    rounds_at_least(now + 2);
    let after = lu.write_bytes("p2");
    assert!(after > before, "p2 carries fio's writes after the last flap: {before} -> {after}");

    vm.command(["touch", &stop]).run_ok().unwrap();
    let done = fio.wait().unwrap();
    let rounds = done.stdout.matches("round done").count();
    assert!(done.success() && rounds >= 1, "fio: {done:?}");
    assert_eq!(done.stdout.matches("err= 0").count(), rounds, "every round without an error: {}", done.stdout);
    eprintln!("the fio scenario took {:.1?} ({rounds} rounds of fio)", started.elapsed());
}
