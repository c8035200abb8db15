//! `mpio timers explain`: the defaults meet the 3 s detection goal; a
//! configuration that cannot work is refused with the rule it breaks.

use std::process::{Command, Output};

fn explain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mpio")).args(["timers", "explain"]).args(args).output().expect("run mpio")
}

/// A config file, removed when dropped.
fn config(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().expect("temp file");
    std::io::Write::write_all(&mut f, text.as_bytes()).expect("write config");
    f
}

fn arg(f: &tempfile::NamedTempFile) -> &str {
    f.path().to_str().expect("utf-8 temp path")
}

#[test]
fn the_defaults_detect_a_silent_path_within_three_seconds() {
    let o = explain(&["--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert!(v["detect_silent_path_s"].as_f64().unwrap() < 3.0, "{v}");
    assert_eq!(v["all_paths_down_hold_s"].as_f64(), Some(20.0), "{v}");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
    let o = explain(&[]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("dead path, silent") && text.contains("I/O held 20.0 s, then EIO"), "{text}");
}

#[test]
fn a_configuration_that_cannot_work_is_refused() {
    let f = config("[timers]\nnop_interval = \"10s\"\nnop_timeout = \"10s\"\nhold = \"queue\"\n");
    let o = explain(&["--config", arg(&f)]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is not shorter than io_timeout") && err.contains("shorten the keepalive"), "{err}");
    // The report is still printed, so the operator sees the consequences.
    assert!(String::from_utf8_lossy(&o.stdout).contains("held until a path returns"));

    let f = config("[timers]\nnop_intervall = \"1s\"\n");
    let o = explain(&["--config", arg(&f)]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(arg(&f)) && err.contains("nop_intervall"), "{err}");

    // A warning does not refuse.
    let f = config("[timers]\nhold = \"1s\"\n");
    let o = explain(&["--config", arg(&f)]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: hold (1s) is shorter"));
}
