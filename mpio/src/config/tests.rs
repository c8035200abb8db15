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
    assert_eq!((d.name.as_str(), d.line, d.frontend), ("d0", 8, Frontend::Nbd));
    assert_eq!(d.policy.policy, "round-robin");
    assert_eq!(d.timers, TimerConfig::default());
    assert_eq!(d.paths[1].source, Some("127.0.10.2".parse().unwrap()));
    assert_eq!(d.paths[1].portal.to_string(), "127.0.0.2:3260");
    let dc = d.device_config(&c.initiator);
    assert_eq!(dc.paths.len(), 2);
    assert_eq!(dc.lun, Lun::from_number(1).unwrap());
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
    let e = refused(&BASE.replace("lun = 1", "lun = 1\nfrontend = \"ublk\""));
    assert!(e.message.contains("frontend = \"nbd\""), "{e}");
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
