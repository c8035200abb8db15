//! The guest kernel: Debian 12's newest `linux-image-6.12.*+deb12-amd64-unsigned`,
//! fetched with apt and unpacked into the cache once per version.
//!
//! Debian 12's own 6.1 kernel would do for LIO, but 6.12 (from
//! bookworm's backports of the 6.12 LTS line, in the main archive as
//! `linux-image-6.12.*+deb12`) has every module the tests need as `=m`:
//! ublk_drv, nbd, LIO (target_core_*, iscsi_target_mod), sch_netem,
//! iptables, veth, ext4, dm-multipath and iscsi_tcp. The cache entry
//! `kernel/<version>/` holds `vmlinuz`, `config` and `lib/modules/<version>/`
//! with the `.ko.xz` files and a `modules.dep` made by `depmod -b`.
//!
//! `apt-get update` runs only when apt knows no such package or the
//! download fails (stale lists). Offline, the newest cached kernel is used.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::cmd;
use crate::error::{Error, Result};
use crate::vm::cache;

/// The kernel line: `linux-image-<SERIES>.<patch>+deb12-amd64-unsigned`.
pub const SERIES: &str = "6.12";

const APT_TIMEOUT: Duration = Duration::from_secs(600);
const UNPACK_TIMEOUT: Duration = Duration::from_secs(300);

/// An unpacked kernel in the cache.
#[derive(Debug, Clone)]
pub struct Kernel {
    version: String,
    root: PathBuf,
    /// Module name (underscores) to its file, relative to the modules dir.
    files: BTreeMap<String, String>,
    /// File to the files it depends on (modules.dep).
    deps: BTreeMap<String, Vec<String>>,
    builtin: BTreeSet<String>,
}

/// One module to load, with its dependencies before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Its name, with underscores (`dm_multipath`).
    pub name: String,
    /// Its file relative to the modules dir (`kernel/drivers/md/dm-multipath.ko.xz`).
    pub file: String,
}

impl Kernel {
    /// The kernel of this test process: fetched and unpacked on first use
    /// (then cached on disk for every later process).
    pub fn get() -> Result<&'static Kernel> {
        static KERNEL: OnceLock<std::result::Result<Kernel, String>> = OnceLock::new();
        KERNEL
            .get_or_init(|| Kernel::ensure().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::Environment(format!("cannot provide the VM kernel: {e}")))
    }

    /// Finds or fetches the newest kernel of [`SERIES`] and loads its
    /// module index.
    pub fn ensure() -> Result<Kernel> {
        let mut newest = newest_known()?;
        if newest.is_none() {
            apt_update()?;
            newest = newest_known()?;
        }
        let root = match newest {
            Some(version) => match fetch(&version) {
                Ok(root) => root,
                Err(first) => {
                    // Lists older than the archive: the .deb is gone.
                    eprintln!("fetching kernel {version} failed ({first}); apt-get update and retry");
                    match apt_update().and_then(|()| newest_known()) {
                        Ok(Some(v)) => fetch(&v)?,
                        _ => newest_cached().ok_or(first)?,
                    }
                }
            },
            None => newest_cached().ok_or_else(|| {
                Error::Environment(format!(
                    "apt knows no linux-image-{SERIES}.*+deb12-amd64-unsigned and none is cached in {}: \
                     check /etc/apt/sources.list (Debian 12 main and bookworm-updates/security)",
                    cache::dir().display()
                ))
            })?,
        };
        Kernel::load(&root)
    }

    fn load(root: &Path) -> Result<Kernel> {
        let version = root.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let modules = root.join("lib/modules").join(&version);
        let read = |name: &str| {
            let path = modules.join(name);
            fs::read_to_string(&path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))
        };
        let (dep_text, builtin_text) = (read("modules.dep")?, read("modules.builtin")?);
        let mut files = BTreeMap::new();
        let mut deps = BTreeMap::new();
        for line in dep_text.lines() {
            let Some((file, rest)) = line.split_once(':') else { continue };
            files.insert(module_name(file), file.to_owned());
            deps.insert(file.to_owned(), rest.split_whitespace().map(str::to_owned).collect());
        }
        let builtin = builtin_text.lines().map(module_name).collect();
        Ok(Kernel { version, root: root.to_owned(), files, deps, builtin })
    }

    /// `6.12.117+deb12-amd64`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The kernel image.
    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join("vmlinuz")
    }

    /// `lib/modules/<version>` of the unpacked package.
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.version)
    }

    /// The modules to load for `names` (`-` and `_` alike), dependencies
    /// first, each once; built-in ones are left out. Fails naming a module
    /// this kernel does not have.
    pub fn resolve(&self, names: &[&str]) -> Result<Vec<Module>> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for name in names {
            let name = module_name(name);
            if self.builtin.contains(&name) {
                continue;
            }
            let file = self.files.get(&name).ok_or_else(|| {
                Error::Environment(format!(
                    "kernel {} has no module {name} (neither built in nor in modules.dep)",
                    self.version
                ))
            })?;
            self.visit(file, &mut seen, &mut order);
        }
        Ok(order.into_iter().map(|file: String| Module { name: module_name(&file), file }).collect())
    }

    /// Depth-first: every dependency's own dependencies come before it.
    fn visit(&self, file: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(file.to_owned()) {
            return;
        }
        for dep in self.deps.get(file).into_iter().flatten() {
            self.visit(dep, seen, order);
        }
        order.push(file.to_owned());
    }
}

/// `kernel/drivers/md/dm-multipath.ko.xz` -> `dm_multipath`.
fn module_name(file: &str) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

fn package(version: &str) -> String {
    format!("linux-image-{version}-unsigned")
}

/// Versions (`6.12.117+deb12-amd64`) apt knows, newest first.
fn known_versions(apt_cache_output: &str) -> Vec<String> {
    let prefix = format!("linux-image-{SERIES}.");
    let mut found: Vec<(u32, String)> = apt_cache_output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|pkg| {
            let patch = pkg.strip_prefix(&prefix)?.strip_suffix("+deb12-amd64-unsigned")?;
            let n = patch.parse::<u32>().ok()?;
            Some((n, format!("{SERIES}.{n}+deb12-amd64")))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, v)| v).collect()
}

fn newest_known() -> Result<Option<String>> {
    let pattern = format!("^linux-image-{}\\.[0-9]+\\+deb12-amd64-unsigned$", SERIES.replace('.', "\\."));
    let out = cmd::run_ok(Command::new("apt-cache").args(["search", "--names-only", &pattern]), APT_TIMEOUT)?;
    Ok(known_versions(&out).into_iter().next())
}

fn apt_update() -> Result<()> {
    eprintln!("apt-get update (to find linux-image-{SERIES}.*+deb12-amd64-unsigned)");
    cmd::run_ok(Command::new("apt-get").args(["update", "-q"]), APT_TIMEOUT).map(drop)
}

fn newest_cached() -> Option<PathBuf> {
    let entries = fs::read_dir(cache::dir().join("kernel")).ok()?;
    let mut names: Vec<String> = entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
    names.retain(|n| !n.contains(".lock") && !n.contains(".tmp"));
    let listing: String = names.iter().map(|v| format!("linux-image-{v}-unsigned\n")).collect();
    known_versions(&listing).into_iter().next().map(|v| cache::dir().join("kernel").join(v))
}

/// `kernel/<version>` in the cache, downloaded and unpacked if missing.
fn fetch(version: &str) -> Result<PathBuf> {
    cache::get_or_build(&format!("kernel/{version}"), |tmp| {
        let t = Instant::now();
        let dl = tmp.join("download");
        fs::create_dir_all(&dl).map_err(|e| Error::io(format!("cannot create {}", dl.display()), e))?;
        eprintln!("downloading {} into the VM cache {}", package(version), cache::dir().display());
        cmd::run_ok(Command::new("apt-get").args(["download", "-q", &package(version)]).current_dir(&dl), APT_TIMEOUT)?;
        let deb = fs::read_dir(&dl)
            .map_err(|e| Error::io("cannot list the download dir", e))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .ok_or_else(|| Error::Environment(format!("apt-get download {} left no .deb", package(version))))?;
        let unpacked = tmp.join("unpacked");
        cmd::run_ok(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked), UNPACK_TIMEOUT)?;
        // Merged /usr or not, depending on how the package was built.
        let modules = ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|d| unpacked.join(d).join(version))
            .find(|p| p.is_dir())
            .ok_or_else(|| Error::Environment(format!("{} has no lib/modules/{version}", deb.display())))?;
        let boot = unpacked.join("boot");
        let mv = |from: PathBuf, to: PathBuf| {
            fs::rename(&from, &to)
                .map_err(|e| Error::io(format!("cannot move {} to {}", from.display(), to.display()), e))
        };
        let dest_modules = tmp.join("lib/modules");
        fs::create_dir_all(&dest_modules).map_err(|e| Error::io("cannot create lib/modules", e))?;
        mv(modules, dest_modules.join(version))?;
        mv(boot.join(format!("vmlinuz-{version}")), tmp.join("vmlinuz"))?;
        mv(boot.join(format!("config-{version}")), tmp.join("config"))?;
        cmd::run_ok(Command::new("depmod").arg("-b").arg(tmp).arg(version), UNPACK_TIMEOUT)?;
        let _ = fs::remove_dir_all(&dl);
        let _ = fs::remove_dir_all(&unpacked);
        eprintln!("kernel {version} unpacked in {:.1?}", t.elapsed());
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_version_is_chosen_numerically() {
        let listing = "\
linux-image-6.12.9+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
linux-image-6.12.117+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
linux-image-6.12.117+deb12-cloud-amd64-unsigned - Linux 6.12 for x86-64 cloud
linux-image-6.12.113+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
";
        assert_eq!(known_versions(listing), ["6.12.117+deb12-amd64", "6.12.113+deb12-amd64", "6.12.9+deb12-amd64"]);
        assert_eq!(module_name("kernel/drivers/md/dm-multipath.ko.xz"), "dm_multipath");
        assert_eq!(module_name("iscsi-target-mod"), "iscsi_target_mod");
    }

    #[test]
    fn dependencies_come_first_and_once() {
        let file = |n: &str| format!("kernel/{n}.ko.xz");
        let mut k = Kernel {
            version: "v".into(),
            root: PathBuf::new(),
            files: BTreeMap::new(),
            deps: BTreeMap::new(),
            builtin: ["virtio_console".to_owned()].into(),
        };
        // modules.dep lists every (also indirect) dependency of a module.
        for (m, d) in [
            ("iscsi_target_mod", &["target_core_mod", "scsi_common", "configfs"][..]),
            ("target_core_mod", &["scsi_common", "configfs"]),
            ("target_core_file", &["target_core_mod", "scsi_common", "configfs"]),
            ("scsi_common", &[]),
            ("configfs", &[]),
        ] {
            k.files.insert(m.into(), file(m));
            k.deps.insert(file(m), d.iter().map(|d| file(d)).collect());
        }
        let names: Vec<String> = k
            .resolve(&["iscsi-target-mod", "target_core_file", "virtio_console"])
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["scsi_common", "configfs", "target_core_mod", "iscsi_target_mod", "target_core_file"]);
        assert!(k.resolve(&["no_such"]).unwrap_err().to_string().contains("no module no_such"));
    }
}
