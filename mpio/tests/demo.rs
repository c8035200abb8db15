//! The README's main command runs through on a fresh local SAN.

use std::process::Command;

use mpio_testbed::require_root;

#[test]
fn demo_tours_a_local_san() {
    require_root!();
    let o = Command::new(env!("CARGO_BIN_EXE_mpio"))
        // Metrics on a port of its own: a developer's demo may be running.
        .args(["demo", "--no-wait", "--portals", "2", "--size-mib", "32", "--metrics", "127.0.0.1:19464"])
        .output()
        .expect("run mpio demo");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "demo failed:\n{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(!std::path::Path::new("/run/mpio-demo").exists(), "the demo removes its state directory");
    assert!(!std::path::Path::new("/run/mpio/mpio.sock").exists(), "the daemon removed its control socket");
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
        "== 7. The daemon: demo0",
        "daemon ready: READY=1",
        "optimal",
        "nbd+unix:///demo0?socket=/run/mpio/nbd.sock",
        "wrote 1048576/1048576 bytes at offset 1048576",
        "read 1048576/1048576 bytes at offset 1048576",
        "mpio_path_requests_total{device=\"demo0\",path=\"p2\",op=\"write\"}",
        "What to try next",
        "policy set demo0 fail-over-only --primary p2",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}
