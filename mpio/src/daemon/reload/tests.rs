use std::path::Path;

use super::*;
use crate::config::tests::BASE;

fn load(text: &str) -> Config {
    config::parse(Path::new("t.toml"), text, &|_| None).expect("valid configuration")
}

/// The changes from `old` (running as loaded) to `new`.
fn changes(old: &str, new: &str) -> Result<Vec<String>, String> {
    let old = load(old);
    plan(&old, &old.devices, &load(new)).map(|v| v.iter().map(ToString::to_string).collect())
}

#[test]
fn an_unchanged_file_changes_nothing() {
    assert_eq!(changes(BASE, BASE).unwrap(), Vec::<String>::new());
}

#[test]
fn paths_are_added_before_the_policy_and_removed_after_it() {
    let new = BASE
        .replace("name = \"p2\"\nportal = \"127.0.0.2\"", "name = \"p3\"\nportal = \"127.0.0.3\"\nrole = \"primary\"")
        .replace("lun = 1", "lun = 1\npolicy = \"fail-over-only\"");
    assert_eq!(
        changes(BASE, &new).unwrap(),
        ["device d0: path p3 added (127.0.0.3:3260)", "device d0: policy fail-over-only", "device d0: path p2 removed"]
    );
}

#[test]
fn a_weighted_policy_waits_for_the_final_path_set() {
    let new = BASE
        .replace("lun = 1", "lun = 1\npolicy = \"weighted\"")
        .replace("portal = \"127.0.0.1:3260\"", "portal = \"127.0.0.1:3260\"\nweight = 1")
        .replace("name = \"p2\"\nportal = \"127.0.0.2\"", "name = \"p3\"\nportal = \"127.0.0.3\"\nweight = 5");
    assert_eq!(
        changes(BASE, &new).unwrap(),
        ["device d0: path p3 added (127.0.0.3:3260)", "device d0: path p2 removed", "device d0: policy weighted"]
    );
}

#[test]
fn devices_come_and_go_and_the_hold_changes_live() {
    let second = "\n[[device]]\nname = \"d1\"\ntarget = \"san\"\nlun = 2\n[[device.path]]\nname = \"q1\"\nportal = \"127.0.0.1\"\n";
    assert_eq!(changes(BASE, &format!("{BASE}{second}")).unwrap(), ["device d1 added (1 paths)"]);
    assert_eq!(changes(&format!("{BASE}{second}"), BASE).unwrap(), ["device d1 removed"]);
    let held = BASE.replace("lun = 1", "lun = 1\nhold = \"queue\"");
    assert_eq!(changes(BASE, &held).unwrap(), ["device d0: hold queue"]);
}

#[test]
fn what_cannot_change_live_is_refused_with_the_way_to_do_it() {
    let e = changes(BASE, &BASE.replace("lun = 1", "lun = 3")).unwrap_err();
    assert!(e.contains("new name"), "{e}");
    let e = changes(BASE, &BASE.replace("127.0.0.2", "127.0.0.9")).unwrap_err();
    assert!(e.contains("path p2") && e.contains("new name"), "{e}");
    let e = changes(BASE, &format!("{BASE}\n[device.timers]\nio_timeout = \"20s\"\n")).unwrap_err();
    assert!(e.contains("timers"), "{e}");
    let e = changes(BASE, &format!("{BASE}\n[metrics]\nlisten = \"127.0.0.1:9999\"\n")).unwrap_err();
    assert!(e.contains("restart"), "{e}");
}
