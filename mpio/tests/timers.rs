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

/// Each device is explained with the timers it runs with: its own
/// `[device.timers]`, `hold` and `failback` over `[timers]`.
#[test]
fn each_device_is_explained_with_its_own_timers() {
    let f = config(
        r#"
initiator = "iqn.2026-11.org.mpio:test"
[timers]
nop_interval = "2s"
hold = "30s"

[[target]]
name = "san"
iqn = "iqn.2026-11.org.mpio:t1"

[[device]]
name = "fast"
target = "san"
lun = 1
hold = "queue"
[device.timers]
nop_interval = "1s"
[[device.path]]
name = "p1"
portal = "127.0.0.1"

[[device]]
name = "plain"
target = "san"
lun = 2
[[device.path]]
name = "p1"
portal = "127.0.0.1"

[[device]]
name = "bad"
target = "san"
lun = 3
[device.timers]
io_timeout = "2s"
[[device.path]]
name = "p1"
portal = "127.0.0.1"
"#,
    );
    let o = explain(&["--config", arg(&f), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let dev = |name: &str| v["devices"].as_array().unwrap().iter().find(|d| d["device"] == name).unwrap().clone();
    // nop_timeout is the default 1 s everywhere.
    assert_eq!(v["detect_silent_path_s"].as_f64(), Some(3.0), "{v}");
    assert_eq!(v["all_paths_down_hold_s"].as_f64(), Some(30.0), "{v}");
    assert_eq!(dev("fast")["detect_silent_path_s"].as_f64(), Some(2.0), "{v}");
    assert_eq!(dev("fast")["all_paths_down_hold_s"], serde_json::Value::Null, "held until a path returns: {v}");
    assert_eq!(dev("plain")["detect_silent_path_s"].as_f64(), Some(3.0), "{v}");
    assert_eq!(dev("plain")["all_paths_down_hold_s"].as_f64(), Some(30.0), "{v}");
    // Only the device whose timers cannot work fails the command, by name.
    assert_eq!(dev("bad")["problems"][0]["fatal"], true, "{v}");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("device bad: nop_interval + nop_timeout"), "{err}");
    assert!(!err.contains("device fast:") && !err.contains("device plain:"), "{err}");
    let text = String::from_utf8_lossy(&explain(&["--config", arg(&f)]).stdout).into_owned();
    let fast = &text[text.find("device fast:").unwrap()..text.find("device plain:").unwrap()];
    assert!(fast.contains("held until a path returns"), "{text}");
}
