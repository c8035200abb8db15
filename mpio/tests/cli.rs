//! The `mpio` diagnostics CLI against a real tgtd (and LIO in a test VM
//! where it answers differently): output, JSON, CHAP
//! secrets from files and the environment, and one-line errors.

use std::process::{Command, Output};

use mpio_testbed::lio::{Lio, LunSpec as LioLun, TargetSpec as LioTarget, TpgSpec};
use mpio_testbed::require_root;
use mpio_testbed::tgtd::{LunSpec, TargetSpec, Tgtd};
use mpio_testbed::vm::{Shared, VmSpec};
use serde_json::json;

const INIT: &str = "iqn.2026-11.test.mpio:cli";

fn mpio(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpio"));
    c.args(args).env_remove("MPIO_CHAP_SECRET").env_remove("MPIO_CHAP_TARGET_SECRET");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run mpio")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects success; returns stdout.
fn ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let o = mpio(args, env);
    assert!(o.status.success(), "mpio {args:?} failed: {}", stderr(&o));
    stdout(&o)
}

/// Runs and expects failure with exactly one line on stderr; returns it.
fn fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let o = mpio(args, env);
    assert_eq!(o.status.code(), Some(1), "mpio {args:?} should fail: {}", stdout(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line of error, got {err:?}");
    err.trim_end().to_string()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn discovery_and_scsi_diagnostics() {
    require_root!();
    let tgtd = Tgtd::builder().target(TargetSpec::new("cli").lun(LunSpec::file(32 << 20))).start().unwrap();
    let portal = tgtd.portal(0).to_string();
    let p = portal.as_str();
    let iqn = tgtd.iqn(1);

    let out = ok(&["discover", "-p", p, "-i", INIT], &[]);
    assert!(out.contains(iqn) && out.contains(p), "{out}");
    let j = json(&ok(&["discover", "-p", p, "-i", INIT, "--json"], &[]));
    assert_eq!(j[0]["target"], iqn);
    assert_eq!(j[0]["portals"][0]["address"], portal);

    let lu = ["-p", p, "-i", INIT, "-t", iqn, "-l", "1"];
    let run = |cmd: &[&str], extra: &[&str]| -> String {
        let mut a: Vec<&str> = cmd.to_vec();
        a.extend_from_slice(&lu);
        a.extend_from_slice(extra);
        ok(&a, &[])
    };
    let inq = run(&["scsi", "inquiry"], &[]);
    assert!(inq.contains("IET") && inq.contains("VIRTUAL-DISK"), "{inq}");
    let id = json(&run(&["scsi", "inquiry"], &["--vpd", "0x83", "--json"]));
    assert!(id["lu_identity"].as_str().unwrap().starts_with("naa."), "{id}");
    let cap = json(&run(&["scsi", "readcap"], &["--json"]));
    assert_eq!(cap["capacity_bytes"], 32 << 20);
    assert_eq!(cap["block_size"], 512);
    let luns = json(&run(&["scsi", "report-luns"], &["--json"]));
    let numbers: Vec<u64> = luns.as_array().unwrap().iter().map(|l| l["lun"].as_u64().unwrap()).collect();
    assert_eq!(numbers, vec![0, 1]);
    assert_eq!(run(&["scsi", "tur"], &[]).trim(), "ready");
    // Every page tgtd lists has a name (in the text and in JSON), and the
    // list holds the pages mpio reads.
    let supported = json(&run(&["scsi", "inquiry"], &["--vpd", "0x00", "--json"]));
    let pages = supported["pages"].as_array().unwrap();
    let codes: Vec<&str> = pages.iter().map(|p| p["code"].as_str().unwrap()).collect();
    assert!(["0x00", "0x80", "0x83", "0xb0"].iter().all(|c| codes.contains(c)), "{supported}");
    for p in pages {
        assert!(p["name"].as_str().is_some_and(|n| !n.is_empty()), "page without a name: {p}");
    }
    let text = run(&["scsi", "inquiry"], &["--vpd", "0x00"]);
    assert_eq!(text.lines().count(), pages.len(), "{text}");
    for line in text.lines() {
        let (code, name) = line.split_once(' ').unwrap_or((line, ""));
        assert!(codes.contains(&code) && !name.is_empty() && name != "(reserved)", "{line:?}");
    }
    // tgtd's LU: a write cache, and the FUA bit taken.
    let mode = json(&run(&["scsi", "mode-sense"], &["--json"]));
    assert_eq!(
        (&mode["write_cache"], &mode["dpofua"], &mode["write_protected"]),
        (&json!(true), &json!(true), &json!(false))
    );
    assert_eq!(mode["mpio"]["fua_write"], "WRITE with FUA", "{mode}");
    let mode = run(&["scsi", "mode-sense"], &[]);
    assert!(mode.contains("write-back, FUA"), "{mode}");
    let serial = run(&["scsi", "inquiry"], &["--vpd", "128"]);
    assert!(!serial.trim().is_empty());

    let perf = json(&run(&["perf"], &["--rw", "randread", "--bs", "4k", "--qd", "4", "--seconds", "1", "--json"]));
    assert!(perf["iops"].as_f64().unwrap() > 100.0, "{perf}");

    // Errors: one line, the failure and the fix.
    let e = fails(&["scsi", "tur", "-p", p, "-i", INIT, "-t", "iqn.2026-11.test.mpio:nosuch", "-l", "1"], &[]);
    assert_eq!(
        e,
        format!(
            "mpio: login failed: target not found (0x0203): this portal has no target named iqn.2026-11.test.mpio:nosuch: check the name (mpio discover --portal {p} lists the targets there)"
        )
    );
    let e = fails(&["scsi", "tur", "-p", p, "-i", INIT, "-t", iqn, "-l", "7"], &[]);
    assert!(e.contains("LOGICAL UNIT NOT SUPPORTED") && e.contains("mpio scsi report-luns"), "{e}");
    let e = fails(&["discover", "-p", "127.0.0.1:1", "-i", INIT], &[]);
    assert!(e.starts_with("mpio: cannot connect to 127.0.0.1:1") && e.contains("check that the target runs"), "{e}");
    // A malformed portal is a usage error (exit 2, clap's message).
    let o = mpio(&["discover", "-p", "not a portal", "-i", INIT], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--portal"), "{}", stderr(&o));
}

#[test]
fn chap_secrets_come_from_files_or_the_environment() {
    require_root!();
    let tgtd = Tgtd::builder()
        .target(
            TargetSpec::new("clichap")
                .lun(LunSpec::file(4 << 20))
                .chap("inituser", "init-secret-123")
                .mutual_chap("tgtuser", "tgt-secret-4567"),
        )
        .start()
        .unwrap();
    let portal = tgtd.portal(0).to_string();
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours");
    let theirs = dir.path().join("theirs");
    std::fs::write(&ours, "init-secret-123\n").unwrap();
    std::fs::write(&theirs, "tgt-secret-4567").unwrap();
    // A secret file others can read is refused, as ssh refuses an open key.
    let open = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap()
    };
    open(&ours, 0o644);
    let o = mpio(
        &["scsi", "tur", "-p", &tgtd.portal(0).to_string(), "-i", INIT, "-t", tgtd.iqn(1), "-l", "1"]
            .into_iter()
            .chain(["--chap-user", "inituser", "--chap-secret-file", ours.to_str().unwrap()])
            .collect::<Vec<_>>(),
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&format!("run chmod 600 {}", ours.display())), "{}", stderr(&o));
    open(&ours, 0o600);
    open(&theirs, 0o600);
    let (ours, theirs) = (ours.to_str().unwrap(), theirs.to_str().unwrap());
    let base =
        ["scsi", "tur", "-p", portal.as_str(), "-i", INIT, "-t", tgtd.iqn(1), "-l", "1", "--chap-user", "inituser"];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        base.iter().chain(extra).copied().collect()
    }

    // Mutual CHAP with both secrets in files.
    let out = ok(
        &with(
            &base,
            &["--chap-secret-file", ours, "--chap-target-user", "tgtuser", "--chap-target-secret-file", theirs],
        ),
        &[],
    );
    assert_eq!(out.trim(), "ready");
    // The same from the environment.
    let env = [("MPIO_CHAP_SECRET", "init-secret-123"), ("MPIO_CHAP_TARGET_SECRET", "tgt-secret-4567")];
    assert_eq!(ok(&with(&base, &["--chap-target-user", "tgtuser"]), &env).trim(), "ready");

    // A wrong secret: the seed's one-line message, and the secret nowhere.
    let o = mpio(&with(&base, &[]), &[("MPIO_CHAP_SECRET", "wrong-secret-99")]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim_end(),
        "mpio: login failed: authentication failure (0x0201): check the CHAP user and secret"
    );
    for out in [stdout(&o), stderr(&o)] {
        assert!(!out.contains("wrong-secret-99") && !out.contains("init-secret"), "secret leaked: {out}");
    }
    // With full debug logging too.
    let o = mpio(&with(&base, &["--log", "trace", "--chap-target-user", "tgtuser"]), &env);
    assert!(o.status.success(), "{}", stderr(&o));
    for out in [stdout(&o), stderr(&o)] {
        assert!(!out.contains("init-secret-123") && !out.contains("tgt-secret-4567"), "secret leaked in logs");
    }
    // The target's secret is wrong: mutual authentication fails.
    let e = fails(
        &with(&base, &["--chap-target-user", "tgtuser"]),
        &[("MPIO_CHAP_SECRET", "init-secret-123"), ("MPIO_CHAP_TARGET_SECRET", "not-the-target-secret")],
    );
    assert!(e.contains("target failed mutual CHAP authentication"), "{e}");
    // A secret below 12 bytes is refused before any login.
    let e = fails(&with(&base, &[]), &[("MPIO_CHAP_SECRET", "short")]);
    assert!(e.contains("at least 12 are required"), "{e}");
    // No secret at all: the fix names the options.
    let e = fails(&with(&base, &[]), &[]);
    assert!(e.contains("--chap-secret-file") && e.contains("MPIO_CHAP_SECRET"), "{e}");
    // No CHAP configured for a target that wants it: tgtd says so.
    let e = assert_missing_chap_is_explained(&portal, tgtd.iqn(1));
    assert!(e.contains("target requires CHAP authentication"), "{e}");
}

#[test]
fn a_refused_login_says_what_is_likely() {
    require_root!();
    let tgtd = Tgtd::builder().target(TargetSpec::new("clirefuse").lun(LunSpec::file(4 << 20))).start().unwrap();
    // tgtd answers an unknown target name with 0x0203 (target not found).
    assert_unknown_target_is_explained(&tgtd.portal(0).to_string(), "0x0203");
}

/// A one-shot login to a target name the portal does not serve: one line
/// that names the likely cause (an unknown or mistyped name) and how to
/// list the right ones, and no promise of a retry the command will not
/// make. tgtd answers 0x0203; LIO answers 0x0301 ("service unavailable"):
/// call this with a LIO portal and "0x0301" to check that answer.
fn assert_unknown_target_is_explained(portal: &str, status: &str) {
    let wrong = "iqn.2026-11.test.mpio:no-such-target";
    let e = fails(&["scsi", "inquiry", "-p", portal, "-i", INIT, "-t", wrong], &[]);
    assert!(e.starts_with("mpio: login failed: "), "{e}");
    assert!(e.contains(status), "{e}");
    assert!(e.contains(&format!("no target named {wrong}")), "names the name asked for: {e}");
    assert!(e.contains(&format!("mpio discover --portal {portal}")), "says how to list the names: {e}");
    assert!(!e.contains("retr"), "a one-shot command does not retry, so it must not say so: {e}");
}

/// A one-shot login without CHAP to `target`, which requires it: the line
/// names CHAP as the cause and the options that configure it. tgtd says
/// so in its answer; LIO closes the connection without a status, and the
/// line then names CHAP as a likely cause and the ACL as the other (call
/// this with a LIO portal and check the returned line for "ACL").
fn assert_missing_chap_is_explained(portal: &str, target: &str) -> String {
    let e = fails(&["scsi", "tur", "-p", portal, "-i", INIT, "-t", target, "-l", "1"], &[]);
    assert!(e.starts_with("mpio: login failed: "), "{e}");
    assert!(e.contains("CHAP") && e.contains("--chap-user and --chap-secret-file"), "{e}");
    assert!(!e.contains("retr"), "{e}");
    e
}

#[test]
fn digests_are_negotiated_as_asked_and_a_refusal_fails() {
    require_root!();
    let tgtd = Tgtd::builder()
        .target(TargetSpec::new("clidigest").lun(LunSpec::file(4 << 20)).digests("CRC32C"))
        .target(TargetSpec::new("clinodigest").lun(LunSpec::file(4 << 20)).digests("None"))
        .start()
        .unwrap();
    let portal = tgtd.portal(0).to_string();
    let tur = |tid: u32, header: &'static str, data: &'static str, json: bool| {
        let mut a = vec!["scsi", "tur", "-p", portal.as_str(), "-i", INIT, "-t", tgtd.iqn(tid), "-l", "1"];
        a.extend(["--header-digest", header, "--data-digest", data]);
        if json {
            a.push("--json");
        }
        a.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    fn args(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let login = |tid, header, data| {
        let v = tur(tid, header, data, true);
        let j = json(&ok(&args(&v), &[]));
        assert_eq!(j["ready"], true, "{j}");
        (
            j["login"]["header_digest"].as_str().unwrap().to_owned(),
            j["login"]["data_digest"].as_str().unwrap().to_owned(),
        )
    };

    // Required on a target that requires them: CRC32C both ways.
    assert_eq!(ok(&args(&tur(1, "crc32c", "crc32c", false)), &[]).trim(), "ready");
    assert_eq!(login(1, "crc32c", "crc32c"), ("CRC32C".into(), "CRC32C".into()));
    // Preferred: CRC32C where the target agrees, None where it refuses.
    assert_eq!(login(1, "prefer", "prefer"), ("CRC32C".into(), "CRC32C".into()));
    assert_eq!(login(2, "prefer", "prefer"), ("None".into(), "None".into()));
    assert_eq!(login(2, "none", "none"), ("None".into(), "None".into()));
    // Required where the target refuses (it offers only None): the login
    // fails, naming the key, instead of running unprotected.
    let e = fails(&args(&tur(2, "crc32c", "none", false)), &[]);
    assert!(e.contains("HeaderDigest"), "{e}");
    let e = fails(&args(&tur(2, "none", "crc32c", false)), &[]);
    assert!(e.contains("DataDigest"), "{e}");
    // (tgtd configured with HeaderDigest=CRC32C still accepts an initiator
    // that offers only None: it cannot show a target that requires them.)
}

/// One VM with LIO for the CLI tests below ([`mpio_testbed::vm`]; they
/// skip where VMs cannot run).
static LIO_VM: Shared = Shared::new(|| VmSpec::new().nic(1));

/// The CLI against LIO, which refuses differently from tgtd: an unknown
/// target name gets 0x0301, a login without CHAP where CHAP is required
/// is closed without a status; and discovery CHAP through `mpio
/// discover` (one test: discovery CHAP is global to the VM's LIO).
#[test]
fn lio_refusals_and_discovery_chap_are_explained() {
    let Some(vm) = LIO_VM.get_or_skip() else { return };
    let portal = vm.portal(0, 0, 3260);
    let p = portal.to_string();
    let lio = Lio::builder()
        .target(LioTarget::new("cli-open").tpg(TpgSpec::new().portal(portal).lun(LioLun::fileio(4 << 20))))
        .target(
            LioTarget::new("cli-chap")
                .tpg(TpgSpec::new().portal(portal).lun(LioLun::fileio(4 << 20)).chap("cli-user", "cli-secret-1234")),
        )
        .start(vm)
        .unwrap();
    assert_unknown_target_is_explained(&p, "0x0301");
    let e = assert_missing_chap_is_explained(&p, &lio.iqn(2));
    assert!(e.contains("closed the connection") && e.contains("ACL"), "names both likely causes: {e}");

    // Discovery CHAP: the right secret lists the targets, a wrong one
    // fails with the fix, and no secret shows anywhere.
    let _auth = Lio::builder().discovery_chap("disc-user", "disc-secret-5678").start(vm).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (right, wrong) = (dir.path().join("right"), dir.path().join("wrong"));
    for (file, secret) in [(&right, "disc-secret-5678\n"), (&wrong, "not-the-disc-secret")] {
        std::fs::write(file, secret).unwrap();
        // Private, or mpio refuses the file before it logs in.
        std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    let discover = |file: &std::path::Path| {
        mpio(
            &[
                "discover",
                "-p",
                &p,
                "-i",
                INIT,
                "--chap-user",
                "disc-user",
                "--chap-secret-file",
                file.to_str().unwrap(),
            ],
            &[],
        )
    };
    let o = discover(&right);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(&lio.iqn(1)) && out.contains(&lio.iqn(2)), "{out}");
    let o = discover(&wrong);
    assert_eq!(o.status.code(), Some(1), "a wrong discovery secret: {}", stdout(&o));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.starts_with("mpio: login failed: ") && e.contains("CHAP"), "{e}");
    let o2 = mpio(&["discover", "-p", &p, "-i", INIT], &[]);
    assert_eq!(o2.status.code(), Some(1), "discovery without CHAP got in: {}", stdout(&o2));
    for out in [stdout(&o), e.clone(), stdout(&o2), stderr(&o2)] {
        assert!(!out.contains("disc-secret-5678") && !out.contains("not-the-disc-secret"), "secret leaked: {out}");
    }
}

/// Runs `mpio args` with stdout (or stderr) a pipe whose reader is already
/// gone, so the first write fails with EPIPE whatever the timing.
fn to_closed_pipe(args: &[&str], stderr_too: bool) -> Output {
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    drop(reader);
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpio"));
    c.args(args).stdout(writer.try_clone().expect("dup"));
    if stderr_too {
        c.stderr(writer);
    }
    c.output().expect("run mpio")
}

#[test]
fn a_reader_that_went_away_ends_the_output_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mpio.toml");
    std::fs::write(&cfg, "initiator = \"iqn.2026-11.org.mpio:x\"\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    for args in [&["timers", "explain"][..], &["timers", "explain", "--json"], &["config", "check", cfg]] {
        let o = to_closed_pipe(args, false);
        assert_eq!(o.status.code(), Some(0), "mpio {args:?} | head: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
    // An error with stderr gone too: the exit status still says so.
    let o = to_closed_pipe(&["config", "check", "/nonexistent.toml"], true);
    assert_eq!(o.status.code(), Some(1));
}
