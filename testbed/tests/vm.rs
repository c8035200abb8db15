//! Tests of the VM platform itself (`testbed::vm`, `testbed::lio`): a real
//! guest kernel under qemu, LIO inside it, libiscsi on the host, real
//! faults. Most share one VM ([`Shared`]); the ones that kill their guest
//! boot their own. They skip (pass, with a message) when not root or
//! without /dev/net/tun.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use mpio_testbed::cmd::{self, Outcome};
use mpio_testbed::libiscsi;
use mpio_testbed::lio::{AclSpec, AluaGroup, AluaState, Lio, LunSpec, TargetSpec, TpgSpec};
use mpio_testbed::tgtd::INITIATOR_IQN;
use mpio_testbed::vm::fault::{self, GuestBlackhole, LinkDown};
use mpio_testbed::vm::{Shared, Vm, VmSpec};
use mpio_testbed::wait::wait_for;
use mpio_testbed::{Error, netfault};

/// nic0 with two addresses (two portals behind one link), nic1, one inner
/// path, and the host's iscsi-inq as an initiator inside the guest.
static VM: Shared = Shared::new(|| VmSpec::new().nic(2).nic(1).inner_paths(1).host_program("iscsi-inq"));

const INQ: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

fn inq(url: &str) -> Outcome {
    libiscsi::inq(url, INQ).expect("run iscsi-inq")
}

fn evpd(portal: SocketAddr, iqn: &str, lun: u32, page: u8) -> Outcome {
    let url = libiscsi::url(portal, iqn, lun);
    let page = page.to_string(); // iscsi-inq parses the page code as decimal
    cmd::run(Command::new("iscsi-inq").args(["-i", INITIATOR_IQN, "-e", "1", "-c", &page, &url]), INQ).unwrap()
}

/// `(target, ["addr:port,tpgt", ...])` from a SendTargets=All through
/// mpio's initiator.
fn send_targets(portal: SocketAddr) -> Vec<(String, Vec<String>)> {
    use mpio_transport::{SessionConfig, SessionHandle};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let cfg = SessionConfig::discovery(INITIATOR_IQN.parse().unwrap(), portal.into());
        let s = SessionHandle::connect(cfg, INQ).await.unwrap();
        let found = s.send_targets().await.unwrap();
        let _ = s.logout().await;
        let mut out: Vec<(String, Vec<String>)> = found
            .targets
            .iter()
            .map(|t| {
                let mut a: Vec<String> =
                    t.addresses.iter().map(|a| format!("{},{}", a.portal(), a.tpgt().unwrap_or(0))).collect();
                a.sort();
                (t.name.to_string(), a)
            })
            .collect();
        out.sort();
        out
    })
}

/// iscsi-inq until it succeeds: the first command of a new initiator may
/// meet a UNIT ATTENTION, and a portal that just came back may still be
/// starting to listen.
fn wait_inq_ok(url: &str) -> Outcome {
    wait_for(&format!("iscsi-inq {url} to succeed"), WAIT, POLL, || {
        let out = inq(url);
        if out.success() { Ok(out) } else { Err(format!("{out:?}")) }
    })
    .unwrap()
}

#[test]
fn commands_report_exit_status_and_separate_output() {
    let Some(vm) = VM.get_or_skip() else { return };
    eprintln!("{} booted in {:.1?}", vm.name(), vm.boot_time());
    let out = vm.sh("echo out; echo err >&2; exit 3").run().unwrap();
    assert_eq!(out.status.and_then(|s| s.code()), Some(3), "{out:?}");
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("out\n", "err\n"));

    let missing = vm.command(["no-such-program"]).run().unwrap();
    assert_eq!(missing.status.and_then(|s| s.code()), Some(127), "{missing:?}");
    assert!(missing.stderr.contains("no-such-program"), "{missing:?}");

    let err = vm.sh("echo broken >&2; false").run_ok().unwrap_err().to_string();
    assert!(err.contains(&format!("[{}] sh -e -c", vm.name())) && err.contains("broken"), "{err}");

    // The guest's tools are the host's Debian ones, not busybox's.
    let tc = vm.command(["tc", "-V"]).run_ok().unwrap();
    assert!(tc.contains("iproute2"), "{tc}");
    assert!(vm.command(["uname", "-r"]).run_ok().unwrap().starts_with("6.12."));
}

#[test]
fn a_command_past_its_deadline_is_killed_and_reported_as_a_timeout() {
    let Some(vm) = VM.get_or_skip() else { return };
    let timeout = Duration::from_millis(1500);
    let out = vm.sh("echo started; sleep 1001 | sleep 1002").timeout(timeout).run().unwrap();
    assert!(out.timed_out(), "{out:?}");
    assert!(out.elapsed >= timeout, "{out:?}");
    assert_eq!(out.stdout, "started\n", "output before the kill is kept");
    // The whole process group is gone, not just the shell.
    let left = vm.sh("ps | grep -c '[s]leep 100[12]' || true").run_ok().unwrap();
    assert_eq!(left.trim(), "0", "still running: {}", vm.sh("ps").run_ok().unwrap());
    let err = vm.command(["sleep", "1003"]).timeout(timeout).run_ok().unwrap_err();
    assert!(matches!(err, Error::CommandTimeout { .. }), "{err}");
}

#[test]
fn background_commands_run_while_others_do() {
    let Some(vm) = VM.get_or_skip() else { return };
    let flag = format!("/tmp/go-{}", vm.unique());
    // It can only finish if another command runs while it waits.
    let waiter = vm.sh(&format!("while [ ! -e {flag} ]; do sleep 0.05; done; echo released")).spawn().unwrap();
    let sleeper = vm.command(["sleep", "1004"]).spawn().unwrap();
    assert!(waiter.pid().unwrap() > 1);
    vm.command(["touch", &flag]).run_ok().unwrap();
    let done = waiter.wait_timeout(WAIT).unwrap();
    assert!(done.success() && done.stdout == "released\n", "{done:?}");

    let killed = sleeper.kill().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(killed.status.and_then(|s| s.signal()), Some(9), "{killed:?}");
}

#[test]
fn files_copy_in_and_out_unchanged() {
    let Some(vm) = VM.get_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let host_in = dir.path().join("in.bin");
    let mut data = vec![0u8; 24 << 20];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in data.chunks_mut(8) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
    }
    data[..4].copy_from_slice(b"\0\n\r\xff"); // bytes a text channel would mangle
    std::fs::write(&host_in, &data).unwrap();
    let host_sum = cmd::run_ok(Command::new("sha256sum").arg(&host_in), INQ).unwrap();

    let t = Instant::now();
    vm.copy_in(&host_in, "/tmp/copy/in.bin").unwrap();
    let copy_in = t.elapsed();
    let guest_sum = vm.command(["sha256sum", "/tmp/copy/in.bin"]).run_ok().unwrap();
    assert_eq!(guest_sum.split_whitespace().next(), host_sum.split_whitespace().next());

    let host_out = dir.path().join("out.bin");
    let t = Instant::now();
    vm.copy_out("/tmp/copy/in.bin", &host_out).unwrap();
    let copy_out = t.elapsed();
    assert!(std::fs::read(&host_out).unwrap() == data, "copied out bytes differ");
    let mb = data.len() as f64 / 1e6;
    eprintln!(
        "copy of {mb:.0} MB: in {:.1} MB/s, out {:.1} MB/s",
        mb / copy_in.as_secs_f64(),
        mb / copy_out.as_secs_f64()
    );
    vm.command(["rm", "-r", "/tmp/copy"]).run_ok().unwrap();
}

#[test]
fn lio_serves_the_host_luns_with_and_without_serials() {
    let Some(vm) = VM.get_or_skip() else { return };
    let (a, b) = (vm.portal(0, 0, 3260), vm.portal(1, 0, 3260));
    let inner = SocketAddr::new(vm.inner_path(0).target_addr.into(), 3260);
    let lio = Lio::builder()
        .target(
            TargetSpec::new("harness-luns").tpg(
                TpgSpec::new()
                    .portal(a)
                    .portal(b)
                    .portal(inner)
                    .lun(LunSpec::fileio(32 << 20).serial("harness-serial-0"))
                    .lun(LunSpec::fileio(32 << 20).no_serial())
                    .lun(LunSpec::null(64 << 20).block_size(4096)),
            ),
        )
        .start(vm)
        .unwrap();
    let iqn = lio.iqn(1);
    assert_eq!(lio.portals(1, 1), [a, b, inner]);
    wait_inq_ok(&libiscsi::url(a, &iqn, 0));

    // SendTargets names every portal of the TPG (tgtd names only the one asked).
    let found = {
        let _turn = DISCOVERY.lock().unwrap_or_else(|e| e.into_inner());
        send_targets(a).into_iter().find(|(name, _)| *name == iqn)
    };
    assert_eq!(found, Some((iqn.clone(), vec![format!("{a},1"), format!("{b},1"), format!("{inner},1")])));

    let serial = evpd(b, &iqn, 0, 0x80);
    assert!(serial.stdout.contains("Unit Serial Number:[harness-serial-0]"), "{serial:?}");
    let ids = evpd(b, &iqn, 0, 0x83);
    assert!(ids.stdout.contains("Designator Type:(3) NAA"), "{ids:?}");
    assert!(ids.stdout.contains("[LIO-ORG FILEIO:harness-serial-0]"), "{ids:?}");

    // Without a serial: an empty 0x80 and only "LIO-ORG" as the LU's name.
    let serial = evpd(a, &iqn, 1, 0x80);
    assert!(serial.stdout.contains("Unit Serial Number:[]"), "{serial:?}");
    let ids = evpd(a, &iqn, 1, 0x83);
    assert!(ids.success() && !ids.stdout.contains("NAA"), "{ids:?}");
    assert!(ids.stdout.contains("Designator:[LIO-ORG ]"), "{ids:?}");

    let cap =
        cmd::run(Command::new("iscsi-readcapacity16").args(["-i", INITIATOR_IQN, &libiscsi::url(a, &iqn, 2)]), INQ)
            .unwrap();
    assert!(cap.stdout.contains("LOGICAL BLOCK LENGTH IN BYTES:4096"), "{cap:?}");
    assert!(cap.stdout.contains(&format!("RETURNED LOGICAL BLOCK ADDRESS:{}", (64 << 20) / 4096 - 1)), "{cap:?}");

    // An initiator inside the guest, over the inner path; cut by its link.
    let url = libiscsi::url(inner, &iqn, 0);
    let guest_inq =
        |timeout| vm.command(["iscsi-inq", "-i", INITIATOR_IQN, &url]).in_initiator_netns().timeout(timeout).run();
    let ok = guest_inq(INQ).unwrap();
    assert!(ok.success() && ok.stdout.contains("LIO-ORG"), "{ok:?}");
    let down = LinkDown::initiator(vm, &vm.inner_path(0).initiator_if).unwrap();
    let cut = guest_inq(Duration::from_secs(5)).unwrap();
    assert!(!cut.success(), "reached the target with its link down: {cut:?}");
    down.restore().unwrap();
    wait_for("the inner path to carry iscsi-inq again", WAIT, POLL, || {
        let out = guest_inq(INQ).map_err(|e| e.to_string())?;
        if out.success() { Ok(()) } else { Err(format!("{out:?}")) }
    })
    .unwrap();
    lio.stop().unwrap();
}

/// A target on its own port for one fault test, and its LUN 0 URL per portal.
fn fault_target<'vm>(vm: &'vm Vm, name: &str, port: u16) -> (Lio<'vm>, Vec<String>) {
    let portals = [vm.portal(0, 1, port), vm.portal(1, 0, port)];
    let lio = Lio::builder()
        .target(
            TargetSpec::new(name)
                .tpg(TpgSpec::new().portal(portals[0]).portal(portals[1]).lun(LunSpec::fileio(16 << 20))),
        )
        .start(vm)
        .unwrap();
    let urls: Vec<String> = portals.iter().map(|p| libiscsi::url(*p, &lio.iqn(1), 0)).collect();
    for url in &urls {
        wait_inq_ok(url);
    }
    (lio, urls)
}

#[test]
fn a_connection_reset_cuts_an_established_session() {
    let Some(vm) = VM.get_or_skip() else { return };
    let (_lio, urls) = fault_target(vm, "harness-reset", 3262);
    let portal = vm.portal(0, 1, 3262);
    let log = tempfile::NamedTempFile::new().unwrap();
    let _perf = libiscsi::perf(&urls[0], INITIATOR_IQN, &["-b", "8", "-m", "1", "-t", "600"], log.path()).unwrap();
    let first = wait_for("iscsi-perf's connection in the guest", WAIT, POLL, || match fault::established(vm, portal) {
        Ok(p) if p.len() == 1 => Ok(p[0]),
        other => Err(format!("{other:?}")),
    })
    .unwrap();

    assert_eq!(fault::reset_connections(vm, portal).unwrap(), 1);
    // libiscsi notices the reset and logs in again from another port.
    let second = wait_for("a new connection after the reset", WAIT, POLL, || match fault::established(vm, portal) {
        Ok(p) if p.len() == 1 && p[0] != first => Ok(p[0]),
        other => Err(format!("{other:?}")),
    })
    .unwrap();
    assert_ne!(first.port(), second.port());
    assert_eq!(fault::reset_connections(vm, vm.portal(1, 0, 3262)).unwrap(), 0, "the other portal had none");
}

#[test]
fn portal_removal_and_tpg_disable_refuse_logins() {
    let Some(vm) = VM.get_or_skip() else { return };
    let (lio, urls) = fault_target(vm, "harness-portal", 3263);
    let portal = vm.portal(1, 0, 3263);
    lio.remove_portal(1, 1, portal).unwrap();
    assert_eq!(lio.portals(1, 1), [vm.portal(0, 1, 3263)]);
    let refused = inq(&urls[1]);
    assert!(!refused.success() && !refused.timed_out(), "a removed portal refuses at once: {refused:?}");
    assert!(inq(&urls[0]).success(), "the other portal still serves");
    lio.add_portal(1, 1, portal).unwrap();
    wait_inq_ok(&urls[1]);

    lio.set_enabled(1, 1, false).unwrap();
    let disabled = inq(&urls[0]);
    assert!(!disabled.success(), "a disabled TPG let iscsi-inq in: {disabled:?}");
    lio.set_enabled(1, 1, true).unwrap();
    wait_inq_ok(&urls[0]);
}

#[test]
fn blackholes_and_links_down_silence_a_portal() {
    let Some(vm) = VM.get_or_skip() else { return };
    let (_lio, urls) = fault_target(vm, "harness-silence", 3264);
    let short = Duration::from_secs(4);
    let inq_short = |url: &str| libiscsi::inq(url, short).unwrap();

    {
        let _hole = GuestBlackhole::new(vm, vm.portal(1, 0, 3264)).unwrap();
        let silent = inq_short(&urls[1]);
        assert!(silent.timed_out(), "a blackholed portal answered: {silent:?}");
        assert!(inq(&urls[0]).success(), "the other portal still serves");
    }
    wait_inq_ok(&urls[1]);

    {
        // The host's own iptables guard on the TAP traffic: it silences an
        // established connection in both directions (the guest's packets
        // arrive through INPUT, not OUTPUT as on loopback).
        let log = tempfile::NamedTempFile::new().unwrap();
        let _perf = libiscsi::perf(&urls[1], INITIATOR_IQN, &["-b", "8", "-m", "4", "-t", "600"], log.path()).unwrap();
        let portal = vm.portal(1, 0, 3264);
        wait_for("iscsi-perf's connection", WAIT, POLL, || match fault::established(vm, portal) {
            Ok(p) if !p.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        })
        .unwrap();
        let hole = netfault::Blackhole::new(portal).unwrap();
        wait_for("the guest's packets to be dropped on the host", WAIT, POLL, || match hole.dropped_packets() {
            Ok((to, from)) if to > 0 && from > 0 => Ok(()),
            other => Err(format!("{other:?}")),
        })
        .unwrap();
        assert!(inq_short(&urls[1]).timed_out());
    }
    wait_inq_ok(&urls[1]);

    {
        let _down = LinkDown::host(vm, 1).unwrap();
        let cut = inq_short(&urls[1]);
        assert!(!cut.success(), "reached nic1 with its host end down: {cut:?}");
        assert!(inq(&urls[0]).success(), "nic0 is another link");
    }
    wait_inq_ok(&urls[1]);

    {
        let _down = LinkDown::guest(vm, &vm.nic(1).guest_if).unwrap();
        assert!(!inq_short(&urls[1]).success());
    }
    wait_inq_ok(&urls[1]);
}

#[test]
fn a_dead_guest_is_reported_with_its_console() {
    if let Some(why) = mpio_testbed::vm::skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let vm = VmSpec::new().boot().unwrap();
    let err = vm.sh("echo c > /proc/sysrq-trigger").run().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Vm { .. }), "{text}");
    assert!(text.contains("Kernel panic") || text.contains("sysrq: Trigger a crash"), "no panic in:\n{text}");
    assert!(!vm.is_alive());
    let again = vm.command(["true"]).run().unwrap_err();
    assert!(matches!(again, Error::Vm { .. }), "{again}");
}

#[test]
fn a_hung_guest_is_killed_at_the_deadline() {
    if let Some(why) = mpio_testbed::vm::skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let vm = VmSpec::new().hang_grace(Duration::from_secs(3)).boot().unwrap();
    vm.freeze().unwrap();
    vm.thaw().unwrap();
    assert_eq!(vm.command(["echo", "thawed"]).run_ok().unwrap(), "thawed\n");

    vm.freeze().unwrap();
    let err = vm.command(["true"]).timeout(Duration::from_secs(1)).run().unwrap_err();
    assert!(matches!(err, Error::Vm { .. }), "{err}");
    assert!(err.to_string().contains("hung"), "{err}");
    assert!(!vm.is_alive(), "qemu still runs");
}

/// The child half of `no_qemu_outlives_a_killed_test`: boots a VM, says
/// qemu's pid, and dies by SIGKILL (no unwinding, no Drop).
#[test]
fn orphan_child() {
    if std::env::var("MPIO_VM_ORPHAN_CHILD").is_err() {
        return; // only as the child of the test below
    }
    let vm = VmSpec::new().boot().unwrap();
    println!("QEMU_PID={}", vm.qemu_pid());
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
}

#[test]
fn no_qemu_outlives_a_killed_test() {
    if let Some(why) = mpio_testbed::vm::skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let child = cmd::run(
        Command::new(exe)
            .args(["--exact", "orphan_child", "--nocapture", "--test-threads", "1"])
            .env("MPIO_VM_ORPHAN_CHILD", "1"),
        Duration::from_secs(300),
    )
    .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(child.status.and_then(|s| s.signal()), Some(9), "{child:?}");
    let pid: u32 = child
        .stdout
        .lines()
        .find_map(|l| l.split("QEMU_PID=").nth(1))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no QEMU_PID in {child:?}"));
    wait_for("the killed test's qemu to die", WAIT, POLL, || {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains("qemu"));
        if alive { Err(format!("qemu pid {pid} alive")) } else { Ok(()) }
    })
    .unwrap();
}

/// Discovery CHAP is global to LIO: the tests that discover take turns.
static DISCOVERY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A login through mpio's initiator: `Ok` or the error's text.
fn login(portal: SocketAddr, target: &str, initiator: &str) -> Result<(), String> {
    use mpio_transport::{SessionConfig, SessionHandle};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let cfg = SessionConfig::new(initiator.parse().unwrap(), target.parse().unwrap(), portal.into());
        let s = SessionHandle::connect(cfg, INQ).await.map_err(|e| e.to_string())?;
        let _ = s.logout().await;
        Ok(())
    })
}

#[test]
fn lio_enforces_chap_acls_and_discovery_auth() {
    let Some(vm) = VM.get_or_skip() else { return };
    let portal = vm.portal(0, 1, 3265);
    let allowed = "iqn.2026-11.test.mpio:allowed";
    let lio = Lio::builder()
        .target(
            TargetSpec::new("harness-chap").tpg(
                TpgSpec::new()
                    .portal(portal)
                    .lun(LunSpec::fileio(8 << 20))
                    .chap("mpio-user", "initiator-secret")
                    .mutual_chap("mpio-target", "target-secret-1"),
            ),
        )
        .target(
            TargetSpec::new("harness-acl")
                .tpg(TpgSpec::new().portal(portal).lun(LunSpec::fileio(8 << 20)).acl(AclSpec::new(allowed))),
        )
        .start(vm)
        .unwrap();
    let (chap, acl) = (lio.iqn(1), lio.iqn(2));

    let plain = inq(&libiscsi::url(portal, &chap, 0));
    assert!(!plain.success(), "CHAP was not required: {plain:?}");
    let one_way = libiscsi::chap_url(portal, &chap, 0, "mpio-user", "initiator-secret");
    let ok = wait_inq_ok(&one_way);
    assert!(ok.stdout.contains("LIO-ORG"), "{ok:?}");
    let wrong = inq(&libiscsi::chap_url(portal, &chap, 0, "mpio-user", "initiator-secreT"));
    assert!(!wrong.success(), "a wrong secret got in: {wrong:?}");
    let mutual = |target_secret| {
        libiscsi::mutual_chap_url(portal, &chap, 0, ("mpio-user", "initiator-secret"), ("mpio-target", target_secret))
    };
    assert!(inq(&mutual("target-secret-1")).success());
    assert!(!inq(&mutual("target-secret-2")).success(), "a target with the wrong mutual secret was accepted");

    let acl_inq = |initiator: &str| {
        cmd::run(Command::new("iscsi-inq").args(["-i", initiator, &libiscsi::url(portal, &acl, 0)]), INQ).unwrap()
    };
    assert!(!acl_inq(INITIATOR_IQN).success(), "an initiator outside the ACL got in");
    assert!(acl_inq(allowed).success());

    // How LIO refuses, as mpio's initiator reports it.
    let unknown = login(portal, "iqn.2026-11.test.mpio:no-such-target", INITIATOR_IQN).unwrap_err();
    assert!(unknown.contains("(0x0301)"), "unknown target name: {unknown}");
    let no_chap = login(portal, &chap, INITIATOR_IQN).unwrap_err();
    assert!(no_chap.contains("closed the connection during login"), "CHAP required, none offered: {no_chap}");
    let not_in_acl = login(portal, &acl, INITIATOR_IQN).unwrap_err();
    assert!(not_in_acl.contains("(0x0202)"), "initiator not in the ACL: {not_in_acl}");
    assert!(login(portal, &acl, allowed).is_ok());

    let _turn = DISCOVERY.lock().unwrap_or_else(|e| e.into_inner());
    let ls = |url: String| cmd::run(Command::new("iscsi-ls").args(["-i", INITIATOR_IQN, &url]), INQ).unwrap();
    assert!(ls(format!("iscsi://{portal}")).success(), "discovery without auth");
    let auth = Lio::builder().discovery_chap("disc-user", "discovery-secret").start(vm).unwrap();
    let refused = ls(format!("iscsi://{portal}"));
    assert!(!refused.success(), "discovery without CHAP got in: {refused:?}");
    let found = ls(format!("iscsi://disc-user%discovery-secret@{portal}"));
    assert!(found.success() && found.stdout.contains(&chap), "{found:?}");
    drop(auth);
    assert!(ls(format!("iscsi://{portal}")).success(), "discovery auth was not switched off again");
}

#[test]
fn lio_tpg_disable_closes_the_connection_without_an_async_message() {
    let Some(vm) = VM.get_or_skip() else { return };
    use mpio_transport::{SessionConfig, SessionHandle};
    let (lio, _urls) = fault_target(vm, "harness-disable", 3266);
    let portal = vm.portal(0, 1, 3266);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let events = rt.block_on(async {
        let mut cfg = SessionConfig::new(INITIATOR_IQN.parse().unwrap(), lio.iqn(1).parse().unwrap(), portal.into());
        cfg.reconnect = false;
        let s = SessionHandle::connect(cfg, INQ).await.unwrap();
        let mut rx = s.events();
        lio.set_enabled(1, 1, false).unwrap();
        let mut seen = Vec::new();
        while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
            let down = matches!(e, mpio_transport::SessionEvent::SessionDown { .. });
            seen.push(format!("{e:?}"));
            if down {
                break;
            }
        }
        seen
    });
    // LIO sends no asynchronous message (no Logout Request, no Drop
    // Connection): it closes the connection. mpio's initiator logs every
    // async message it receives and reports Drop Connection as a target
    // request; it saw neither, only the close.
    assert_eq!(
        events,
        [
            "ConnectionDown { cid: 0, reason: Closed(\"closed by the target\") }",
            "SessionDown { reason: Closed(\"closed by the target\"), permanent: true }",
        ],
    );
    lio.set_enabled(1, 1, true).unwrap();
}

/// Runs CDBs on LUN `lun` (< 256) through one session of mpio's
/// initiator: `(status, sense, data)` each.
fn scsi(portal: SocketAddr, iqn: &str, lun: u64, cdbs: &[(&[u8], u32)]) -> Vec<(u8, Vec<u8>, Vec<u8>)> {
    use mpio_transport::{ScsiRequest, SessionConfig, SessionHandle};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let cfg = SessionConfig::new(INITIATOR_IQN.parse().unwrap(), iqn.parse().unwrap(), portal.into());
        let s = SessionHandle::connect(cfg, INQ).await.unwrap();
        let mut out = Vec::new();
        for (cdb, len) in cdbs {
            let mut req = ScsiRequest::new(lun << 48, cdb);
            if *len > 0 {
                req = req.read(*len);
            }
            let r = s.execute(req).await.unwrap();
            out.push((r.status, r.sense.map(|b| b.to_vec()).unwrap_or_default(), r.data.to_bytes().to_vec()));
        }
        let _ = s.logout().await;
        out
    })
}

/// Sense key, ASC, ASCQ of fixed-format sense data.
fn sense_code(sense: &[u8]) -> (u8, u8, u8) {
    (sense.get(2).map_or(0, |b| b & 0x0f), sense.get(12).copied().unwrap_or(0), sense.get(13).copied().unwrap_or(0))
}

const TUR: &[u8] = &[0; 6];
/// REPORT TARGET PORT GROUPS (SPC-4 6.36), 1 KiB.
const RTPG: &[u8] = &[0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0];
/// MODE SENSE(6), no block descriptors, caching page (SBC-4 6.5.5).
const CACHING: &[u8] = &[0x1a, 0x08, 0x08, 0, 255, 0];

#[test]
fn lio_alua_states_and_the_write_cache_knob_show_to_an_initiator() {
    let Some(vm) = VM.get_or_skip() else { return };
    let (a, b) = (vm.portal(0, 1, 3267), vm.portal(1, 0, 3267));
    let lio = Lio::builder()
        .target(
            TargetSpec::new("harness-alua")
                .tpg(
                    TpgSpec::new()
                        .portal(a)
                        .lun(LunSpec::fileio(8 << 20).alua_group(AluaGroup::new(
                            "fast",
                            10,
                            AluaState::ActiveOptimized,
                        )))
                        .lun(LunSpec::fileio(8 << 20).write_cache(true)),
                )
                .tpg(TpgSpec::new().portal(b).lun(LunSpec::same_as(1, 1, 0).alua_group(AluaGroup::new(
                    "slow",
                    20,
                    AluaState::Standby,
                )))),
        )
        .start(vm)
        .unwrap();
    let iqn = lio.iqn(1);
    wait_inq_ok(&libiscsi::url(a, &iqn, 0));
    // (libiscsi's tools cannot log in to b: they send TEST UNIT READY
    // after login, which a standby port fails.)

    // One LU through two TPGs: RTPG names both groups and their states.
    let parse = |r: &(u8, Vec<u8>, Vec<u8>)| {
        assert_eq!(r.0, 0, "RTPG: {r:?}");
        let mut groups = Vec::new();
        let mut d = &r.2[4..];
        while d.len() >= 8 {
            let id = u16::from_be_bytes([d[2], d[3]]);
            groups.push((id, d[0] & 0x0f));
            d = &d[8 + 4 * usize::from(d[7])..];
        }
        groups.sort();
        groups
    };
    // (The default group, id 0, has no ports left and is not reported.)
    let r = scsi(a, &iqn, 0, &[(RTPG, 1024)]);
    assert_eq!(parse(&r[0]), [(10, 0), (20, 2)], "fast active/optimized, slow standby");
    let tur = scsi(b, &iqn, 0, &[(TUR, 0), (TUR, 0)]);
    let last = tur.last().unwrap();
    assert_eq!((last.0, sense_code(&last.1)), (2, (2, 0x04, 0x0b)), "standby: NOT READY 04/0B: {tur:?}");

    lio.set_alua_state(1, 2, 0, AluaState::ActiveOptimized).unwrap();
    // The initiator's next command learns of it (LIO keeps the demo-mode
    // ACL, and its pending UNIT ATTENTION, across sessions): ASYMMETRIC
    // ACCESS STATE CHANGED (2A/06).
    let r = scsi(b, &iqn, 0, &[(RTPG, 1024), (RTPG, 1024)]);
    assert_eq!((r[0].0, sense_code(&r[0].1)), (2, (6, 0x2a, 0x06)), "{r:?}");
    assert_eq!(parse(&r[1]), [(10, 0), (20, 0)]);
    let tur = scsi(b, &iqn, 0, &[(TUR, 0), (TUR, 0)]);
    assert_eq!(tur.last().unwrap().0, 0, "{tur:?}");

    // LIO's fileio default: write-through, and so no DPOFUA; with the
    // write cache on both WCE and DPOFUA are set.
    let flags = |lun| {
        let r = scsi(a, &iqn, lun, &[(CACHING, 255), (CACHING, 255)]).pop().unwrap();
        assert_eq!(r.0, 0, "MODE SENSE: {r:?}");
        (r.2[2] & 0x10 != 0, r.2[4 + 2] & 0x04 != 0) // (DPOFUA, WCE)
    };
    assert_eq!(flags(0), (false, false));
    assert_eq!(flags(1), (true, true));
}
