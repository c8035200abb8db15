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

/// The running device as its core reports it: `names`, under `policy`.
fn running(names: &[&str], policy: &str, primary: Option<&str>) -> (String, DeviceSnapshot) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let now = std::time::Instant::now();
    let mut core = mpio_mpath::DeviceCore::new(
        mpio_mpath::TimerConfig::default(),
        names.clone(),
        PolicySpec::RoundRobin { switch: mpio_mpath::SwitchEvery::Ios(1) },
        now,
    );
    let req = PolicyRequest {
        policy: policy.into(),
        primary: primary.map(|p| vec![p.to_string()]),
        ..PolicyRequest::default()
    };
    core.set_policy(now, &req).expect("a valid running policy");
    ("d0".into(), core.snapshot())
}

/// The planned changes from `old` to `new`, rehearsed on `device`.
fn rehearsed(old: &str, new: &str, device: (String, DeviceSnapshot)) -> Result<Vec<String>, String> {
    let old = load(old);
    let changes = plan(&old, &old.devices, &load(new))?;
    rehearse(&[device], &changes)?;
    Ok(changes.iter().map(ToString::to_string).collect())
}

#[test]
fn a_removal_the_running_policy_refuses_refuses_the_whole_reload() {
    // The file says fail-over-only with p1 primary; an administrator made
    // p2 the primary (mpio path set-active d0 p2). A file that removes p2
    // and adds p3 would fail at the removal, after p3 was added: the
    // rehearsal refuses it before anything changes.
    let file = BASE
        .replace("lun = 1", "lun = 1\npolicy = \"fail-over-only\"")
        .replace("portal = \"127.0.0.1:3260\"", "portal = \"127.0.0.1:3260\"\nrole = \"primary\"");
    let next = file.replace("name = \"p2\"\nportal = \"127.0.0.2\"", "name = \"p3\"\nportal = \"127.0.0.3\"");
    let e = rehearsed(&file, &next, running(&["p1", "p2"], "fail-over-only", Some("p2"))).unwrap_err();
    assert!(e.contains("path p2 removed") && e.contains("0xEFFF"), "{e}");
    // As the file has it (p1 primary), the same reload goes through.
    let ok = rehearsed(&file, &next, running(&["p1", "p2"], "fail-over-only", Some("p1"))).unwrap();
    assert_eq!(ok, ["device d0: path p3 added (127.0.0.3:3260)", "device d0: path p2 removed"]);
}

#[test]
fn the_rehearsal_plays_additions_before_the_policy_that_names_them() {
    let next = BASE
        .replace("name = \"p2\"\nportal = \"127.0.0.2\"", "name = \"p3\"\nportal = \"127.0.0.3\"\nrole = \"primary\"")
        .replace("lun = 1", "lun = 1\npolicy = \"fail-over-only\"");
    let ok = rehearsed(BASE, &next, running(&["p1", "p2"], "round-robin", None)).unwrap();
    assert_eq!(
        ok,
        ["device d0: path p3 added (127.0.0.3:3260)", "device d0: policy fail-over-only", "device d0: path p2 removed"]
    );
}

#[test]
fn devices_are_removed_after_every_other_change() {
    let second = "\n[[device]]\nname = \"d1\"\ntarget = \"san\"\nlun = 2\n[[device.path]]\nname = \"q1\"\nportal = \"127.0.0.1\"\n";
    let old = format!("{BASE}{second}");
    let new = BASE.replace("lun = 1", "lun = 1\nhold = \"queue\"");
    assert_eq!(changes(&old, &new).unwrap(), ["device d0: hold queue", "device d1 removed"]);
}

/// A daemon running `text` (its paths lead nowhere: they keep connecting,
/// which is all a change of the path table and the policy needs).
fn daemon(text: &str) -> Arc<Daemon> {
    let cfg = load(&text.replace("127.0.0.1:3260", "127.0.0.1:1").replace("\"127.0.0.2\"", "\"127.0.0.2:1\""));
    let log = Arc::new(crate::logging::LogControl::init("off"));
    let d = Daemon::new(cfg.clone(), log, true, None, None);
    for spec in cfg.devices {
        let name = spec.name.clone();
        let m = d.start_device(spec).unwrap();
        d.devices().insert(name, m);
    }
    d
}

fn path_names(d: &Daemon) -> (Vec<String>, Vec<String>) {
    let devices = d.devices();
    let m = &devices["d0"];
    (m.device.snapshot().paths.iter().map(|p| p.name.clone()).collect(), m.spec.path_names())
}

#[tokio::test]
async fn a_step_that_fails_while_applying_rolls_back_the_steps_before_it() {
    let d = daemon(BASE);
    let p3 = load(&BASE.replace("name = \"p2\"", "name = \"p3\"")).devices[0].paths[1].clone();
    let weights = PolicyRequest {
        policy: "weighted".into(),
        weights: Some(vec![("p1".into(), 1), ("p2".into(), 1)]),
        ..PolicyRequest::default()
    };
    // The weights leave out the added p3: the device refuses the policy
    // after p3 was added and the hold changed (the rehearsal would have
    // caught it; here the failure comes while applying).
    let changes = vec![
        Change::AddPath { device: "d0".into(), path: p3 },
        Change::Hold { device: "d0".into(), hold: HoldMode::Queue },
        Change::Policy { device: "d0".into(), request: weights },
    ];
    let e = apply_changes(&d, changes, false).await.unwrap_err();
    assert!(e.contains("rolled back") && e.contains("device d0: policy weighted:"), "{e}");
    assert!(e.contains("undone: device d0: hold queue; device d0: path p3 added"), "{e}");
    assert_eq!(path_names(&d), (vec!["p1".into(), "p2".into()], vec!["p1".into(), "p2".into()]));
    let m = &d.devices()["d0"];
    assert_eq!(m.device.snapshot().hold, mpio_mpath::TimerConfig::default().hold);
    assert_eq!(m.spec.timers.hold, mpio_mpath::TimerConfig::default().hold);
    assert_eq!(m.device.snapshot().policy.kind().name(), "round-robin");
}
