//! `mpio perf` exits non-zero when any request failed, over one session
//! and over a multipath device, with one line that says why: a
//! write-protected LU, and a reservation held by another initiator.

use std::process::{Command, Output};

use mpio_dsm::pr::PrType;
use mpio_testbed::require_root;
use mpio_testbed::tgtd::{LunSpec, TargetSpec, Tgtd};
use mpio_tests::pr::{Holder, OTHER_INITIATOR, SharedLu};

const INIT: &str = "iqn.2026-11.test.mpio:perf";

fn perf(tgtd: &Tgtd, lun: &str, paths: usize, rw: &str) -> Output {
    let portal = tgtd.portal(0).to_string();
    let mut args = vec!["perf", "-p", &portal, "-i", INIT, "-t", tgtd.iqn(1), "-l", lun];
    let others: Vec<String> = (1..paths).map(|i| tgtd.portal(i).to_string()).collect();
    for p in &others {
        args.extend(["--path", p.as_str()]);
    }
    args.extend(["--rw", rw, "--bs", "4k", "--qd", "4", "--seconds", "1", "--size", "1m"]);
    Command::new(env!("CARGO_BIN_EXE_mpio")).args(&args).output().expect("run mpio")
}

/// Expects exit status 1 and a last stderr line with every one of `words`.
#[track_caller]
fn fails_with(o: &Output, words: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stdout: {}\nstderr: {err}", String::from_utf8_lossy(&o.stdout));
    let last = err.lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("mpio: ") && words.iter().all(|w| last.contains(w)), "{err}");
    last
}

#[track_caller]
fn succeeds(o: &Output) {
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

#[test]
fn perf_fails_when_its_requests_fail() {
    require_root!();
    let tgtd = Tgtd::builder()
        .portals(2)
        .target(TargetSpec::new("perf").lun(LunSpec::file(4 << 20)).lun(LunSpec::file(4 << 20).param("readonly=1")))
        .start()
        .unwrap();

    // A write-protected LU: every write fails, over one session and over
    // two paths; reads work.
    fails_with(&perf(&tgtd, "2", 1, "randwrite"), &["WRITE(16)", "DATA PROTECT", "WRITE PROTECTED"]);
    let line = fails_with(
        &perf(&tgtd, "2", 2, "randwrite"),
        &["requests failed", "WRITE PROTECTED", "the LU is write-protected"],
    );
    assert!(line.contains("(0 completed"), "{line}");
    succeeds(&perf(&tgtd, "2", 2, "randread"));

    // Another initiator holds WRITE EXCLUSIVE on LU 1.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lu = SharedLu::tgtd(&tgtd, 1, 1);
    let holder = rt.block_on(Holder::reserve(&lu, OTHER_INITIATOR, 0x5eed, PrType::WRITE_EXCLUSIVE));
    fails_with(&perf(&tgtd, "1", 1, "randwrite"), &["RESERVATION CONFLICT"]);
    fails_with(
        &perf(&tgtd, "1", 2, "randwrite"),
        &["requests failed", "RESERVATION CONFLICT", "another initiator holds"],
    );
    succeeds(&perf(&tgtd, "1", 2, "randread"));
    rt.block_on(holder.release());
    succeeds(&perf(&tgtd, "1", 2, "randwrite"));
}
