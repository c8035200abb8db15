//! Builds the guest agent (`testbed/agent/main.rs`) for the guest: a
//! static, std-only binary compiled with `rustc` into the cache, keyed by
//! a hash of its sources and of the compiler's version.
//!
//! Why not a cargo-built binary: test crates other than testbed cannot
//! name testbed's binaries (`CARGO_BIN_EXE_*` exists only in the defining
//! package), target directories differ between checkouts, and the guest
//! needs a static binary (no glibc of the host's version needed in the
//! guest, `-C target-feature=+crt-static`). The sources are compiled into
//! this library, so the agent always matches the host side of the
//! protocol. cargo builds the same file as the `mpio-vm-agent` binary,
//! which keeps it under fmt and clippy.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cmd;
use crate::error::{Error, Result};
use crate::vm::cache;

const MAIN: &str = include_str!("../../agent/main.rs");
const PROTO: &str = include_str!("proto.rs");
const COMPILE_TIMEOUT: Duration = Duration::from_secs(600);

/// The agent binary, compiled on first use.
pub(crate) fn binary() -> Result<PathBuf> {
    let rustc = rustc();
    let version = cmd::run_ok(Command::new(&rustc).arg("-V"), Duration::from_secs(60))?;
    let key = cache::key(&[MAIN.as_bytes(), PROTO.as_bytes(), version.as_bytes()]);
    let dir = cache::get_or_build(&format!("agent/{key}"), |tmp| {
        let src = tmp.join("src");
        let write = |rel: &str, text: &str| {
            let path = src.join(rel);
            fs::create_dir_all(path.parent().expect("relative path with a parent"))
                .and_then(|()| fs::write(&path, text))
                .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
        };
        // The layout main.rs's `#[path = "../src/vm/proto.rs"]` expects.
        write("agent/main.rs", MAIN)?;
        write("src/vm/proto.rs", PROTO)?;
        cmd::run_ok(
            Command::new(&rustc)
                .args(["--edition", "2024", "--crate-name", "mpio_vm_agent", "--crate-type", "bin"])
                .args(["-C", "opt-level=2", "-C", "target-feature=+crt-static", "-C", "strip=symbols"])
                .args(["-C", "panic=abort", "-o"])
                .arg(tmp.join("mpio-vm-agent"))
                .arg(src.join("agent/main.rs"))
                .env("MPIO_VM_AGENT_BUILD", &key),
            COMPILE_TIMEOUT,
        )?;
        fs::remove_dir_all(&src).map_err(|e| Error::io("cannot remove the agent sources", e))
    })?;
    Ok(dir.join("mpio-vm-agent"))
}

/// The build key the agent reports in its hello (`MPIO_VM_AGENT_BUILD`).
pub(crate) fn build_of(binary: &Path) -> String {
    binary.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// `$RUSTC`, else the `rustc` next to the `cargo` that runs the tests
/// (`$CARGO`; rustup puts both in `~/.cargo/bin`, which `sudo` drops from
/// PATH), else `rustc` from PATH.
fn rustc() -> PathBuf {
    if let Some(r) = std::env::var_os("RUSTC").filter(|r| !r.is_empty()) {
        return PathBuf::from(r);
    }
    if let Some(cargo) = std::env::var_os("CARGO").map(PathBuf::from) {
        let sibling = cargo.with_file_name("rustc");
        if sibling.exists() {
            return sibling;
        }
    }
    PathBuf::from("rustc")
}
