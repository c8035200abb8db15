//! The guest daemon harness itself: what must fail does fail, and says why.

use mpio_testbed::vm::Awaited;

use super::*;

const PORT: u16 = 3281;

#[test]
fn a_device_whose_path_leads_nowhere_is_reported_with_the_paths_reason() {
    let Some(vm) = vm() else { return };
    let lio = one_lu(vm, "guest-harness", PORT, LunSpec::null(16 * MIB));
    let [good, _] = inner_portals(vm, PORT);
    // p2's portal is the right address on a port where nothing listens.
    let wrong = SocketAddr::new(vm.inner_path(1).target_addr.into(), PORT + 100);
    let iqn = lio.iqn(1);
    let d = start_daemon(vm, |dir| {
        config(dir, &iqn, &device(vm, "d0", 0, "none", "", &[good, wrong]))
            .replace("ready_timeout = \"30s\"", "ready_timeout = \"1s\"")
    });
    // Ready is one usable path per device: p1 is enough.
    assert_eq!(d.ready_status(), "1 devices ready");
    let e = d.wait_device("d0", true, Duration::from_secs(2)).unwrap_err().to_string();
    assert!(e.contains("p2") && e.contains("refused"), "{e}");
    assert!(e.contains("mpio daemon log"), "the error carries the daemon's log: {e}");
    let one = d.wait_device("d0", false, Duration::from_secs(30)).unwrap();
    assert_eq!(one["state"], "degraded", "{one}");
}

#[test]
fn a_daemon_that_cannot_start_fails_start_with_its_log() {
    let Some(vm) = vm() else { return };
    let e = GuestDaemon::builder(vm)
        .in_initiator_netns()
        .start(|dir| config(dir, "iqn.2026-11.test.mpio:nothing", "\n[[device]]\nname = \"d0\"\nbogus = 1\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("exited before it was ready") && e.contains("bogus"), "{e}");
}

#[test]
fn output_is_awaited_as_it_arrives_and_a_deadline_or_an_end_is_told_apart() {
    let Some(vm) = vm() else { return };
    let flag = format!("/tmp/go-{}", vm.unique());
    let cmd = vm.sh(&format!("echo first; while [ ! -e {flag} ]; do sleep 0.05; done; echo second")).spawn().unwrap();
    let has = |word: &'static str| move |out: &str, _: &str| out.lines().any(|l| l == word);
    assert_eq!(cmd.wait_output(Duration::from_secs(60), has("first")).unwrap(), Awaited::Matched);
    // "second" cannot come before the flag exists.
    assert_eq!(cmd.wait_output(Duration::from_millis(500), has("second")).unwrap(), Awaited::Deadline);
    vm.command(["touch", &flag]).run_ok().unwrap();
    assert_eq!(cmd.wait_output(Duration::from_secs(60), has("second")).unwrap(), Awaited::Matched);
    assert_eq!(cmd.wait_output(Duration::from_secs(60), has("third")).unwrap(), Awaited::Ended);
    let done = cmd.wait().unwrap();
    assert_eq!(done.stdout, "first\nsecond\n", "{done:?}");
}
