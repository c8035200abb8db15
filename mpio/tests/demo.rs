//! The README's main command runs through on a fresh local SAN.

use std::process::Command;

use mpio_testbed::require_root;

#[test]
fn demo_tours_a_local_san() {
    require_root();
    let o = Command::new(env!("CARGO_BIN_EXE_mpio"))
        .args(["demo", "--no-wait", "--portals", "2", "--size-mib", "32"])
        .output()
        .expect("run mpio demo");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "demo failed:\n{out}\n{}", String::from_utf8_lossy(&o.stderr));
    for want in [
        "== 1. Discovery",
        "read 8388608 back: identical",
        "the target sees one session with 2 connections",
        "2 paths claimed into device demo0 (round robin): every one reaches naa.",
        "path_failed        p2: connection",
        "path_ready         p2: passed 3 probes",
        " 0 errors, ",
        "read back: all identical",
        "IOPS",
        "What to try next",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}
