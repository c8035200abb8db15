use std::ffi::OsString;

use super::*;

/// A valid file with one device of two paths; other tests edit it.
pub(crate) const BASE: &str = r#"
initiator = "iqn.2026-11.org.mpio:test"

[[target]]
name = "san"
iqn = "iqn.2026-11.org.mpio:t1"

[[device]]
name = "d0"
target = "san"
lun = 1

[[device.path]]
name = "p1"
portal = "127.0.0.1:3260"

[[device.path]]
name = "p2"
portal = "127.0.0.2"
source = "127.0.10.2"
"#;

fn no_env(_: &str) -> Option<OsString> {
    None
}

fn check(text: &str) -> Result<Config, ConfigError> {
    parse(Path::new("mpio.toml"), text, &no_env)
}

/// The error for `text`, which must be refused.
fn refused(text: &str) -> ConfigError {
    check(text).expect_err("the configuration must be refused")
}

#[test]
fn a_minimal_file_gets_the_defaults() {
    let c = check(BASE).unwrap();
    assert_eq!(c.control_socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));
    assert_eq!(c.metrics, Some(mpio_metrics::DEFAULT_LISTEN));
    assert_eq!(c.nbd.socket, Some(PathBuf::from(DEFAULT_NBD_SOCKET)));
    assert_eq!(c.nbd.tcp, None);
    let d = &c.devices[0];
    assert_eq!((d.name.as_str(), d.line, d.frontend), ("d0", 8, Frontend::NBD));
    assert_eq!(d.policy.policy, "round-robin");
    assert_eq!(d.timers, TimerConfig::default());
    assert_eq!(d.paths[1].source, Some("127.0.10.2".parse().unwrap()));
    assert_eq!(d.paths[1].portal.to_string(), "127.0.0.2:3260");
    let dc = d.device_config(&c.initiator);
    assert_eq!(dc.paths.len(), 2);
    assert_eq!(dc.lun, Lun::from_number(1).unwrap());
}

#[test]
fn frontends() {
    let frontend =
        |f: &str| check(&BASE.replace("lun = 1", &format!("lun = 1\nfrontend = {f}"))).map(|c| c.devices[0].frontend);
    assert_eq!(frontend("\"nbd\"").unwrap(), Frontend::NBD);
    assert_eq!(frontend("\"none\"").unwrap(), Frontend::NONE);
    assert_eq!(frontend("[\"nbd\"]").unwrap(), Frontend::NBD);
    match frontend("\"ublk\"") {
        Ok(f) => assert!(cfg!(feature = "ublk") && f == Frontend { nbd: false, ublk: true }),
        Err(e) => assert!(!cfg!(feature = "ublk") && e.message.contains("cargo feature \"ublk\""), "{e}"),
    }
    // Both at once, in either order.
    for both in ["[\"ublk\", \"nbd\"]", "[\"nbd\", \"ublk\"]"] {
        match frontend(both) {
            Ok(f) => {
                assert!(cfg!(feature = "ublk") && f == Frontend { nbd: true, ublk: true }, "{both}");
                assert_eq!(f.names(), ["ublk", "nbd"]);
            }
            Err(e) => assert!(!cfg!(feature = "ublk") && e.message.contains("cargo feature"), "{e}"),
        }
    }
    let refused = |f: &str, why: &str| {
        let e = frontend(f).expect_err(f);
        assert!(e.message.contains(why) && e.message.contains("[\"ublk\", \"nbd\"]"), "{f}: {e}");
        assert_eq!(e.line, Some(12), "{f}: the error points at the frontend line: {e}");
    };
    refused("[\"nbd\", \"nbd\"]", "listed twice");
    refused("[\"none\", \"nbd\"]", "cannot be listed with others");
    refused("[]", "frontend = []");
    refused("[1]", "a list of names");
    refused("3", "frontend = 3");
    refused("\"x\"", "frontend \"x\"");
}

#[test]
fn ublk_queues_and_depth_are_checked_and_default_to_the_frontends() {
    let ublk = |extra: &str| BASE.replace("lun = 1", &format!("lun = 1\nfrontend = \"ublk\"\n{extra}"));
    if !cfg!(feature = "ublk") {
        return; // frontend = "ublk" is refused (see `frontends`)
    }
    assert_eq!(check(&ublk("")).unwrap().devices[0].ublk, UblkQueues::default());
    let set = check(&ublk("ublk_queues = 2\nublk_depth = 128")).unwrap().devices[0].ublk;
    assert_eq!(set, UblkQueues { queues: Some(2), depth: Some(128) });
    #[cfg(feature = "ublk")]
    {
        let machine = mpio_ublk::UblkConfig::new("d0");
        let c = set.apply(machine.clone());
        assert_eq!((c.queues, c.depth, c.buffer_bytes), (2, 128, machine.buffer_bytes));
        assert_eq!(UblkQueues::default().apply(machine.clone()), machine, "unset: sized to the machine");
    }
    for (extra, says) in [
        ("ublk_queues = 0", "ublk_queues = 0: use 1 to 4096"),
        ("ublk_queues = 4097", "ublk_queues = 4097: use 1 to 4096"),
        ("ublk_depth = 0", "ublk_depth = 0: use 1 to 4096"),
        ("ublk_depth = 70000", "ublk_depth = 70000: use 1 to 4096"),
        ("ublk_depth = -1", "whole number"),
    ] {
        let e = refused(&ublk(extra));
        assert!(e.message.contains(says), "{says:?} not in: {e}");
        assert_eq!(e.line, Some(13), "the line of the key: {e}");
    }
    let e = refused(&BASE.replace("lun = 1", "lun = 1\nublk_depth = 32"));
    assert!(e.message.contains("frontend = \"ublk\" only"), "{e}");
}

#[test]
fn the_shipped_example_is_valid() {
    let text = include_str!("../../mpio.example.toml");
    let c = check(text).unwrap();
    assert_eq!(c.devices.len(), 1);
    assert_eq!(c.devices[0].timers.io_timeout, Duration::from_secs(10));
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let e = refused(&BASE.replace("lun = 1", "lun = 1\npolcy = \"weighted\""));
    assert_eq!(e.line, Some(12), "{e}");
    assert!(e.message.contains("polcy"), "{e}");
    assert!(e.to_string().starts_with("mpio.toml:12: "), "{e}");
    let e = refused(&format!("{BASE}\n[timers]\nnop_intervall = \"1s\"\n"));
    assert!(e.message.contains("nop_intervall") && e.message.contains("nop_interval"), "{e}");
}

#[test]
fn bad_values_name_the_fix() {
    let e = refused(&BASE.replace("127.0.0.2\"", "127.0.0.2:99999\""));
    assert_eq!(e.line, Some(19), "{e}");
    assert!(e.message.contains("HOST:PORT"), "{e}");
    let e = refused(&BASE.replace("127.0.10.2", "eth1"));
    assert!(e.message.contains("interface = "), "{e}");
    let e = refused(&BASE.replace("target = \"san\"", "target = \"sab\""));
    assert!(e.message.contains("defined targets: san"), "{e}");
    let e = refused(&format!("{BASE}\n[device.timers]\nnop_interval = \"20s\"\n"));
    assert!(e.message.contains("timers cannot work"), "{e}");
    let e = refused(&BASE.replace("lun = 1", "lun = 1\nhold = \"sometimes\""));
    assert!(e.message.contains("queue, fail"), "{e}");
}

#[test]
fn policy_errors_carry_the_seed_codes() {
    let e = refused(&BASE.replace("lun = 1", "lun = 1\npolicy = \"fail-over-only\""));
    assert!(e.message.contains("0xEFFF005B"), "{e}");
    let text = BASE
        .replace("lun = 1", "lun = 1\npolicy = \"fail-over-only\"")
        .replace("portal = \"127.0.0.1:3260\"", "portal = \"127.0.0.1:3260\"\nrole = \"primary\"");
    let c = check(&text).unwrap();
    assert_eq!(c.devices[0].policy.primary, Some(vec!["p1".to_string()]));
    let e = refused(&text.replace("source = ", "role = \"primary\"\nsource = "));
    assert!(e.message.contains("0xEFFF005A"), "{e}");
    let e = refused(
        &BASE
            .replace("lun = 1", "lun = 1\npolicy = \"weighted\"")
            .replace("portal = \"127.0.0.1:3260\"", "portal = \"127.0.0.1:3260\"\nweight = 1"),
    );
    assert!(e.message.contains("0xEFFF0058") && e.message.contains("p2"), "{e}");
    let e = refused(&BASE.replace("name = \"p2\"", "name = \"p1\""));
    assert!(e.message.contains("0xEFFF0057"), "{e}");
    let e = refused(&BASE.replace("lun = 1", "lun = 1\npolicy = \"fastest\""));
    assert!(e.message.contains("0xEFFF0055"), "{e}");
}

#[test]
fn chap_secrets_come_from_files_or_the_environment_and_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("s");
    std::fs::write(&secret, "0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let chap = |body: &str| {
        BASE.replace(
            "iqn = \"iqn.2026-11.org.mpio:t1\"",
            &format!("iqn = \"iqn.2026-11.org.mpio:t1\"\n[target.chap]\n{body}"),
        )
    };
    let c = check(&chap(&format!("user = \"u\"\nsecret_file = \"{}\"", secret.display()))).unwrap();
    assert!(matches!(c.devices[0].auth, Auth::Chap(_)));
    let env = |v: &str| (v == "SECRET").then(|| OsString::from("fedcba9876543210"));
    let c = parse(Path::new("f"), &chap("user = \"u\"\nsecret_env = \"SECRET\""), &env).unwrap();
    assert!(matches!(c.devices[0].auth, Auth::Chap(_)));
    let e = refused(&chap("user = \"u\"\nsecret_env = \"SECRET\""));
    assert!(e.message.contains("SECRET is not set"), "{e}");
    let e = refused(&chap("user = \"u\""));
    assert!(e.message.contains("secret_file"), "{e}");
    std::fs::write(&secret, "short").unwrap();
    let e = refused(&chap(&format!("user = \"u\"\nsecret_file = \"{}\"", secret.display())));
    assert!(e.message.contains("at least 12"), "{e}");
    assert!(!e.to_string().contains("short"), "a secret must never be printed: {e}");
}

#[test]
fn device_timers_override_the_global_ones_key_by_key() {
    let text = format!("{BASE}\n[device.timers]\nio_timeout = \"20s\"\n");
    let text = text.replace("[[target]]", "[timers]\nnop_interval = \"2s\"\n\n[[target]]");
    let c = check(&text).unwrap();
    let t = &c.devices[0].timers;
    assert_eq!((t.nop_interval, t.io_timeout), (Duration::from_secs(2), Duration::from_secs(20)));
}

#[test]
fn negotiation_sizes_are_offered_and_checked() {
    let text = BASE.replace(
        "iqn = \"iqn.2026-11.org.mpio:t1\"",
        "iqn = \"iqn.2026-11.org.mpio:t1\"\nmax_burst_length = 1048576\nfirst_burst_length = 262144",
    );
    let c = check(&text).unwrap();
    assert_eq!((c.devices[0].offer.max_burst_length, c.devices[0].offer.first_burst_length), (1 << 20, 1 << 18));
    let e = refused(&text.replace("1048576", "100"));
    assert!(e.message.contains("MaxBurstLength"), "{e}");
}

#[test]
fn error_recovery_level_1_is_offered_unless_set_and_2_is_refused_with_the_reason() {
    let c = check(BASE).unwrap();
    assert_eq!(c.devices[0].offer.error_recovery_level, 1);
    let set = |v: &str| {
        BASE.replace(
            "iqn = \"iqn.2026-11.org.mpio:t1\"",
            &format!("iqn = \"iqn.2026-11.org.mpio:t1\"\nerror_recovery_level = {v}"),
        )
    };
    assert_eq!(check(&set("0")).unwrap().devices[0].offer.error_recovery_level, 0);
    let e = refused(&set("2"));
    assert!(e.message.contains("connection recovery") && e.message.contains("use 1"), "{e}");
    let e = refused(&set("7"));
    assert!(e.message.contains("does not exist"), "{e}");
    let e = refused(&set("-1"));
    assert!(e.message.contains("invalid value"), "{e}");
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    const KEYS: &[&str] = &[
        "initiator",
        "control_socket",
        "log",
        "ready_timeout",
        "enabled",
        "listen",
        "socket",
        "name",
        "iqn",
        "header_digest",
        "data_digest",
        "max_recv_data_segment_length",
        "first_burst_length",
        "max_burst_length",
        "error_recovery_level",
        "user",
        "secret_file",
        "secret_env",
        "target_user",
        "target_secret_file",
        "target_secret_env",
        "target",
        "lun",
        "identity",
        "policy",
        "switch",
        "failback",
        "hold",
        "frontend",
        "ublk_queues",
        "ublk_depth",
        "portal",
        "source",
        "interface",
        "group",
        "weight",
        "role",
        "nop_interval",
        "nop_timeout",
        "io_timeout",
        "abort_timeout",
        "connect_timeout",
        "login_timeout",
        "reconnect_min",
        "reconnect_max",
        "path_verify",
        "path_verify_period",
        "probation_probes",
        "probation_interval",
        "damping_base",
        "damping_max",
        "damping_window",
        "retry_count",
        "retry_interval",
        "fence_timeout",
    ];
    const TABLES: &[&str] = &[
        "[daemon]",
        "[metrics]",
        "[nbd]",
        "[timers]",
        "[[target]]",
        "[target.chap]",
        "[[device]]",
        "[device.timers]",
        "[[device.path]]",
    ];

    /// A TOML value of any type, the troublesome ones included.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,12}".prop_map(|s| format!("{s:?}")),
            any::<i64>().prop_map(|n| n.to_string()),
            proptest::num::f64::ANY.prop_map(|n| format!("{n:?}")),
            Just("1e300".to_string()),
            Just("\"18446744073709551616s\"".to_string()),
            Just("\"-5s\"".to_string()),
            Just("\"\"".to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            Just("[]".to_string()),
            Just("{}".to_string()),
            Just("\"san\"".to_string()),
            Just("\"p1\"".to_string()),
            Just("\"127.0.0.1:3260\"".to_string()),
            Just("\"iqn.2026-11.org.mpio:t1\"".to_string()),
            Just("\"fail-over-only\"".to_string()),
            Just("\"weighted\"".to_string()),
            Just("\"primary\"".to_string()),
            Just("\"queue\"".to_string()),
            Just("\"delayed:1e300\"".to_string()),
        ]
    }

    fn line() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => (proptest::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k} = {v}")),
            1 => proptest::sample::select(TABLES).prop_map(str::to_owned),
            1 => "\\PC{0,20}",
        ]
    }

    /// An edit of a valid file.
    #[derive(Debug, Clone)]
    pub(super) enum Edit {
        Delete(usize),
        Duplicate(usize),
        Value(usize, String),
        Insert(usize, String),
        Swap(usize, usize),
    }

    pub(super) fn edits() -> impl Strategy<Value = Vec<Edit>> {
        let edit = prop_oneof![
            any::<usize>().prop_map(Edit::Delete),
            any::<usize>().prop_map(Edit::Duplicate),
            (any::<usize>(), value()).prop_map(|(i, v)| Edit::Value(i, v)),
            (any::<usize>(), line()).prop_map(|(i, l)| Edit::Insert(i, l)),
            (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Edit::Swap(i, j)),
        ];
        proptest::collection::vec(edit, 1..4)
    }

    pub(super) fn apply(text: &str, edits: &[Edit]) -> String {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        for e in edits {
            let n = lines.len().max(1);
            match e {
                Edit::Delete(i) if !lines.is_empty() => {
                    lines.remove(i % n);
                }
                Edit::Duplicate(i) if !lines.is_empty() => {
                    let l = lines[i % n].clone();
                    lines.insert(i % n, l);
                }
                Edit::Value(i, v) if !lines.is_empty() => {
                    let l = &mut lines[i % n];
                    if let Some((k, _)) = l.split_once(" = ") {
                        *l = format!("{k} = {v}");
                    }
                }
                Edit::Insert(i, l) => lines.insert(i % (lines.len() + 1), l.clone()),
                Edit::Swap(i, j) if !lines.is_empty() => lines.swap(i % n, j % n),
                _ => {}
            }
        }
        lines.join("\n")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Random TOML-ish files: accepted or refused, never a panic.
        #[test]
        fn toml_ish_text(lines in proptest::collection::vec(line(), 0..24)) {
            let _ = check(&lines.join("\n"));
        }

        /// The valid files with lines deleted, duplicated, swapped,
        /// inserted or given other values.
        #[test]
        fn mutated_valid_files(edits in edits(), example in any::<bool>()) {
            let base = if example { include_str!("../../mpio.example.toml") } else { BASE };
            let _ = check(&apply(base, &edits));
        }

        /// Arbitrary bytes as far as they are text.
        #[test]
        fn arbitrary_text(text in "\\PC{0,200}") {
            let _ = check(&text);
        }
    }
}

/// Whether a refusal says what to do: a clause that starts with one of the
/// verbs the messages use for their fix.
fn names_a_fix(message: &str) -> bool {
    const VERBS: &[&str] = &[
        "use ", "write ", "set ", "add ", "give ", "remove ", "quote ", "run ", "keep ", "make ", "raise ", "shorten ",
        "fix ", "check ", "name ",
    ];
    [": ", "; ", ", ", "(", "or "].iter().any(|sep| VERBS.iter().any(|v| message.contains(&format!("{sep}{v}"))))
}

/// One refusal per check the loader makes that a mutated file rarely
/// reaches; the mutation corpus below covers the rest.
#[test]
fn every_refusal_names_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let open_secret = dir.path().join("open.secret");
    std::fs::write(&open_secret, "0123456789abcdef").unwrap();
    let chap = |body: &str| {
        BASE.replace(
            "iqn = \"iqn.2026-11.org.mpio:t1\"",
            &format!("iqn = \"iqn.2026-11.org.mpio:t1\"\n[target.chap]\n{body}"),
        )
    };
    let lun = |extra: &str| BASE.replace("lun = 1", &format!("lun = 1\n{extra}"));
    let table = |name: &str, body: &str| BASE.replace("[[target]]", &format!("[{name}]\n{body}\n\n[[target]]"));
    let daemon = |body: &str| table("daemon", body);
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "empty"),
        ("# only a comment\n\n".into(), "empty"),
        (daemon("control_socket = \"\""), "absolute path"),
        (daemon("control_socket = \"mpio.sock\""), "relative"),
        (table("nbd", "socket = \"run/nbd.sock\""), "relative"),
        (daemon("log = \"-5s\""), "log filter"),
        (daemon("ready_timeout = \"-5s\""), "positive"),
        (lun("hold = \"-5s\""), "use queue, fail"),
        (lun("hold = \"18446744073709551616s\""), "year"),
        (format!("{BASE}\n[device.timers]\nio_timeout = \"-1s\"\n"), "positive"),
        (format!("{BASE}\n[device.timers]\nio_timeout = \"0s\"\n"), "positive"),
        (format!("{BASE}\n[device.timers]\nfence_timeout = \"5s\"\n"), "22s"),
        (format!("{BASE}\n[device.timers]\nreconnect_max = \"1ms\"\n"), "reconnect_max"),
        (chap(&format!("user = \"u\"\nsecret_file = \"{}\"", open_secret.display())), "chmod 600"),
        (chap("user = \"u\"\nsecret_file = \"rel.secret\""), "relative"),
        (chap("user = \"u\"\nsecret_file = \"/nonexistent/s\""), "check the path"),
        (chap("user = \"u\"\nsecret_file = \"/x\"\nsecret_env = \"X\""), "not both"),
        (chap("user = \"u\"\nsecret_env = \"X\"\ntarget_secret_env = \"X\""), "not set"),
        (chap("user = \"u\""), "secret_file"),
        (BASE.replace("name = \"d0\"", "name = \"d 0\""), "letters"),
        (BASE.replace("name = \"p1\"", "name = \"p,1\""), "letters"),
        (BASE.replace("name = \"p2\"", "name = \"p1\""), "0xEFFF0057"),
        (
            format!(
                "{BASE}\n[[device]]\nname = \"d0\"\ntarget = \"san\"\nlun = 2\n[[device.path]]\nname = \"p\"\nportal = \"h\"\n"
            ),
            "twice",
        ),
        (format!("{BASE}\n[[device]]\nname = \"d1\"\ntarget = \"san\"\nlun = 2\n"), "no path"),
        (BASE.replace("lun = 1", "lun = 99999999999999"), "lun"),
        (lun("frontend = \"x\""), "use \"nbd\", \"ublk\", \"none\""),
        (lun("ublk_queues = 2"), "frontend = \"ublk\" only"),
        (lun("policy = \"fail-over-only\""), "0xEFFF005B"),
        (lun("policy = \"fastest\""), "0xEFFF0055"),
        (lun("switch = \"often\""), "switch"),
        (lun("failback = \"sometimes\""), "failback"),
        (BASE.replace("iqn = \"iqn.2026-11.org.mpio:t1\"", "iqn = \"t1\""), "iqn"),
        (
            BASE.replace(
                "iqn = \"iqn.2026-11.org.mpio:t1\"",
                "iqn = \"iqn.2026-11.org.mpio:t1\"\nheader_digest = \"md5\"",
            ),
            "digest",
        ),
        (
            BASE.replace(
                "iqn = \"iqn.2026-11.org.mpio:t1\"",
                "iqn = \"iqn.2026-11.org.mpio:t1\"\nmax_burst_length = 1",
            ),
            "MaxBurstLength",
        ),
        (format!("{BASE}\n[[target]]\nname = \"san\"\niqn = \"iqn.2026-11.org.mpio:t2\"\n"), "twice"),
        (BASE.replace("initiator = \"iqn.2026-11.org.mpio:test\"", "initiator = \"host\""), "initiator"),
        (table("metrics", "listen = \"9464\""), "address and port"),
        (BASE.replace("source = \"127.0.10.2\"", "role = \"boss\""), "role"),
        (BASE.replace("lun = 1", "lun = \"1\""), "whole number"),
        (BASE.replace("lun = 1", "lun = -1"), "whole number"),
        (BASE.replace("lun = 1", ""), "missing field"),
        (format!("{BASE}\n[metrics]\nenabled = \"yes\""), "true or false"),
        (BASE.replace("[[device]]", "[[device]"), "syntax"),
    ];
    for (text, says) in cases {
        let e = refused(&text);
        assert!(e.message.contains(says), "{says:?} not in: {e}");
        assert!(names_a_fix(&e.message), "no fix in: {e}");
    }
}

/// Every refusal of 3000 mutated valid files names a fix (the audit found
/// 63 of 225 without one).
#[test]
fn every_refusal_of_a_mutated_file_names_a_fix() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let mut refusals = 0;
    for i in 0..3000 {
        let edits = never_panics::edits().new_tree(&mut runner).unwrap().current();
        let base = if i % 2 == 0 { include_str!("../../mpio.example.toml") } else { BASE };
        if let Err(e) = check(&never_panics::apply(base, &edits)) {
            refusals += 1;
            assert!(names_a_fix(&e.message), "no fix in: {e}");
        }
    }
    assert!(
        refusals > 1000,
        "only {refusals} of 3000 mutated files were refused: the mutations do not reach the checks"
    );
}
