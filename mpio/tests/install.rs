//! scripts/install.sh: the binary, the unit and the configuration land
//! where systemd and the unit look, in a staged tree (DESTDIR), and the
//! unit passes `systemd-analyze verify` where systemd-analyze exists.
//! The unit has not run under a real systemd in these tests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn install(stage: &Path) -> std::process::Output {
    Command::new(repo().join("scripts/install.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_mpio")])
        .env("DESTDIR", stage)
        .output()
        .expect("run scripts/install.sh")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o7777
}

#[test]
fn install_puts_the_binary_unit_and_config_where_the_unit_looks() {
    let stage = tempfile::tempdir().unwrap();
    let root = stage.path();
    let o = install(root);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let unit_path = root.join("etc/systemd/system/mpio.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert_eq!(unit, std::fs::read_to_string(repo().join("dist/mpio.service")).unwrap());
    assert_eq!(mode(&unit_path), 0o644);
    // Every file the unit names is where the script put it.
    for line in unit.lines().filter(|l| l.starts_with("Exec")) {
        for word in line.split_once('=').unwrap().1.split_whitespace().filter(|w| w.starts_with("/usr/sbin/mpio")) {
            assert!(root.join(&word[1..]).exists(), "{line}: {word} was not installed");
        }
        if line.contains("/etc/mpio/mpio.toml") {
            assert!(root.join("etc/mpio/mpio.toml").exists(), "{line}");
        }
    }
    let bin = root.join("usr/sbin/mpio");
    assert_eq!(mode(&bin), 0o755);
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(env!("CARGO_BIN_EXE_mpio")).unwrap());
    let cfg = root.join("etc/mpio/mpio.toml");
    assert_eq!(std::fs::read(&cfg).unwrap(), std::fs::read(repo().join("mpio/mpio.example.toml")).unwrap());
    assert_eq!(mode(&root.join("etc/mpio/chap")), 0o700);
    // The installed configuration is one the unit's ExecStartPre accepts.
    let check = Command::new(&bin).args(["config", "check"]).arg(&cfg).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    // A second run keeps an edited configuration.
    std::fs::write(&cfg, "# edited\n").unwrap();
    let o = install(root);
    assert!(o.status.success());
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), "# edited\n");
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    // verify checks that each Exec command exists, so the unit's
    // /usr/sbin/mpio becomes the staged binary; nothing else changes.
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo().join("dist/mpio.service"))
        .unwrap()
        .replace("/usr/sbin/mpio", env!("CARGO_BIN_EXE_mpio"));
    let path = dir.path().join("mpio.service");
    std::fs::write(&path, unit).unwrap();
    let o = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    // A directive systemd cannot read is only a warning: none is allowed.
    assert!(o.status.success() && err.trim().is_empty(), "systemd-analyze verify:\n{err}");
}
