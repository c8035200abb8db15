//! The guest's initramfs: the host's own Debian 12 programs with their
//! shared libraries, busybox, the guest agent and the kernel modules,
//! assembled from cached layers.
//!
//! The initrd of a VM is several cpio archives back to back (the kernel
//! unpacks them in order):
//! 1. the **base** layer, cached by a key over its inputs: busybox-static
//!    (its applets as symlinks, except where a full program is present:
//!    iproute2's `ip`/`tc`/`ss` instead of busybox's, coreutils `dd`), the
//!    [`BASE_PROGRAMS`], iptables in its legacy flavour (`iptables` is
//!    `xtables-legacy-multi`, so only the small ip_tables modules are
//!    needed) with the xtables extensions it loads at run time, tc's netem
//!    distribution tables, the agent, the [`BASE_MODULES`] (decompressed,
//!    with a `modules.dep` of their own so the kernel's module autoloading
//!    through busybox `modprobe` works for them), `/etc` and the boot
//!    scripts;
//! 2. one cached layer per [`VmSpec::host_program`] (fio alone brings
//!    80 MB of libraries, so it is not in the base);
//! 3. the VM's own files, binaries and extra modules, not cached.
//!
//! Files are placed at their canonical host paths, and every symlink met
//! on the way (Debian's merged `/usr`: `/lib -> usr/lib`) is reproduced, so
//! programs find their loader and libraries where `ldd` said.
//!
//! [`VmSpec::host_program`]: super::VmSpec::host_program

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cmd;
use crate::error::{Error, Result};
use crate::vm::cache;
use crate::vm::cpio::{Archive, Source};
use crate::vm::kernel::{Kernel, Module};

/// Programs of the host in every guest, with their libraries: `sh` is
/// Debian's dash (busybox's ash runs its own applets in preference to
/// PATH, so `ip` in an ash script would be busybox's, not iproute2's);
/// the network and fault tools (iproute2's full `ip`, `tc` with netem, `ss -K`),
/// iptables, ext4 tools, `blkdiscard`, coreutils `dd` (`oflag=direct,dsync`).
pub const BASE_PROGRAMS: &[&str] = &[
    "sh",
    "dash",
    "ip",
    "tc",
    "ss",
    "xtables-legacy-multi",
    "iptables-legacy",
    "mke2fs",
    "mkfs.ext4",
    "e2fsck",
    "fsck.ext4",
    "blkdiscard",
    "dd",
];

/// Modules loaded in every guest at boot (with their dependencies): the
/// virtio NIC, LIO (configfs, target core, iSCSI target, fileio and
/// iblock backstores; rd_mcp is part of target_core_mod), crc32c (iSCSI
/// digests, ext4 metadata checksums), ext4, nbd, ublk_drv, loop, veth,
/// netem, iptables with the matches the faults use, and the socket
/// diagnostics `ss -K` needs.
pub const BASE_MODULES: &[&str] = &[
    "virtio_net",
    "configfs",
    "target_core_mod",
    "target_core_file",
    "target_core_iblock",
    "iscsi_target_mod",
    "crc32c_generic",
    "ext4",
    "nbd",
    "ublk_drv",
    "loop",
    "veth",
    "sch_netem",
    "ip_tables",
    "iptable_filter",
    "xt_tcpudp",
    "xt_comment",
    "xt_multiport",
    "ipt_REJECT",
    "inet_diag",
    "tcp_diag",
];

/// The xtables extensions `iptables` may load (dlopen, so `ldd` misses them).
const XTABLES_EXTENSIONS: &[&str] = &[
    "libxt_standard.so",
    "libxt_tcp.so",
    "libxt_udp.so",
    "libxt_comment.so",
    "libxt_multiport.so",
    "libipt_REJECT.so",
    "libipt_icmp.so",
];
const XTABLES_DIR: &str = "/usr/lib/x86_64-linux-gnu/xtables";
const TC_DIST_DIR: &str = "/usr/lib/x86_64-linux-gnu/tc";
const BUSYBOX: &str = "/bin/busybox";
const AGENT_PATH: &str = "/usr/sbin/mpio-vm-agent";
/// Where the boot script finds the modules to load, in order.
const MODULE_LISTS: [&str; 2] = ["/etc/mpio-vm/modules", "/etc/mpio-vm/modules.extra"];
/// Bumped when the layout below changes in a way the key cannot see.
const LAYOUT: &str = "mpio-vm layout 2";
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

const INITTAB: &str = "\
::sysinit:/etc/init.d/rcS
::once:/usr/sbin/mpio-vm-agent
";

/// Mounts, loads the modules in order, brings up `lo`. Everything else
/// (addresses, namespaces, LIO) is done by the host through the agent.
const RCS: &str = r#"#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
echo /sbin/modprobe > /proc/sys/kernel/modprobe
t0=$(cut -d' ' -f1 /proc/uptime)
for list in /etc/mpio-vm/modules /etc/mpio-vm/modules.extra; do
    [ -f "$list" ] || continue
    while read -r m; do
        insmod "$m" || echo "mpio-vm: insmod $m failed"
    done < "$list"
done
grep -q ' /sys/kernel/config ' /proc/mounts || mount -t configfs configfs /sys/kernel/config
ip link set lo up
echo "mpio-vm: ready at $(cut -d' ' -f1 /proc/uptime) s (modules loaded from $t0 s)"
"#;

/// Everything that goes into one VM's initrd.
#[derive(Debug, Clone, Default)]
pub(crate) struct Contents {
    /// Host programs in layers of their own (`fio`, `iscsi-inq`).
    pub(crate) programs: Vec<String>,
    /// Modules beyond [`BASE_MODULES`].
    pub(crate) modules: Vec<String>,
    /// `(guest path, source, mode)`.
    pub(crate) files: Vec<(String, Source, u32)>,
    /// `(host path, guest path)`: binaries with their libraries.
    pub(crate) binaries: Vec<(PathBuf, String)>,
}

/// Writes the initrd of a VM to `out`; returns its size in bytes.
pub(crate) fn build_initrd(kernel: &Kernel, agent: &Path, contents: &Contents, out: &Path) -> Result<u64> {
    let mut layers = vec![base_layer(kernel, agent)?];
    for program in &contents.programs {
        layers.push(program_layer(program)?);
    }
    let base_modules = kernel.resolve(BASE_MODULES)?;
    let extra = extra_archive(kernel, &base_modules, contents)?;

    let file = File::create(out).map_err(|e| Error::io(format!("cannot create {}", out.display()), e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let context = |e| Error::io(format!("cannot write {}", out.display()), e);
    for layer in &layers {
        let mut f = File::open(layer).map_err(|e| Error::io(format!("cannot open {}", layer.display()), e))?;
        std::io::copy(&mut f, &mut w).map_err(context)?;
    }
    extra.write_to(&mut w).map_err(context)?;
    w.flush().map_err(context)?;
    Ok(fs::metadata(out).map_err(context)?.len())
}

/// The cached base layer for `kernel` and `agent`.
pub(crate) fn base_layer(kernel: &Kernel, agent: &Path) -> Result<PathBuf> {
    let mut a = Archive::new();
    // /etc/target: LIO's db_root (persistent reservations with APTPL).
    for dir in ["/proc", "/sys", "/dev", "/run", "/root", "/mnt", "/etc/mpio-vm", "/etc/init.d", "/etc/target"] {
        a.dir(dir, 0o755);
    }
    a.dir("/tmp", 0o1777);
    for link in ["/bin", "/sbin", "/lib", "/lib64"] {
        add_host_path(&mut a, Path::new(link))?;
    }
    add_host_path(&mut a, Path::new(BUSYBOX))?;
    a.symlink("/init", BUSYBOX);
    a.file(AGENT_PATH, Source::Host(agent.to_owned()), 0o755);
    for program in BASE_PROGRAMS {
        add_program(&mut a, &find_program(program)?)?;
    }
    a.symlink("/usr/sbin/iptables", "xtables-legacy-multi");
    for ext in XTABLES_EXTENSIONS {
        add_host_path(&mut a, &Path::new(XTABLES_DIR).join(ext))?;
    }
    if let Ok(dists) = fs::read_dir(TC_DIST_DIR) {
        for d in dists.flatten() {
            add_host_path(&mut a, &d.path())?;
        }
    }
    add_busybox_applets(&mut a)?;
    let text = |s: &str| Source::Bytes(s.as_bytes().to_vec());
    a.file("/etc/inittab", text(INITTAB), 0o644)
        .file("/etc/init.d/rcS", text(RCS), 0o755)
        .file("/etc/passwd", text("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
        .file("/etc/group", text("root:x:0:\n"), 0o644)
        .file("/etc/hosts", text("127.0.0.1 localhost mpio-vm\n"), 0o644);
    if Path::new("/etc/mke2fs.conf").exists() {
        add_host_path(&mut a, Path::new("/etc/mke2fs.conf"))?;
    }
    let modules = kernel.resolve(BASE_MODULES)?;

    let mut key_parts: Vec<Vec<u8>> = vec![LAYOUT.into(), kernel.version().into(), INITTAB.into(), RCS.into()];
    key_parts.extend(modules.iter().map(|m| m.file.clone().into_bytes()));
    key_parts.extend(a.paths().map(|p| p.as_bytes().to_vec()));
    key_parts.extend(host_stamps(&a)?.into_iter().map(String::into_bytes));
    let key = cache::key(&key_parts.iter().map(Vec::as_slice).collect::<Vec<_>>());

    cache::get_or_build(&format!("initramfs/base-{key}.cpio"), |tmp| {
        add_modules(&mut a, kernel, &modules, MODULE_LISTS[0], &modules)?;
        write_archive(&a, tmp)
    })
}

/// The cached layer of one host program (`fio`, `iscsi-inq`, a path).
fn program_layer(program: &str) -> Result<PathBuf> {
    let mut a = Archive::new();
    add_program(&mut a, &find_program(program)?)?;
    let mut parts: Vec<String> = vec![LAYOUT.into()];
    parts.extend(host_stamps(&a)?);
    let key = cache::key(&parts.iter().map(String::as_bytes).collect::<Vec<_>>());
    let name: String =
        program.rsplit('/').next().unwrap_or(program).chars().filter(char::is_ascii_alphanumeric).collect();
    cache::get_or_build(&format!("initramfs/program-{name}-{key}.cpio"), |tmp| write_archive(&a, tmp))
}

/// The VM's own files, binaries and the modules beyond the base ones.
fn extra_archive(kernel: &Kernel, base: &[Module], contents: &Contents) -> Result<Archive> {
    let mut a = Archive::new();
    for (guest, source, mode) in &contents.files {
        a.file(guest, source.clone(), *mode);
    }
    for (host, guest) in &contents.binaries {
        a.file(guest, Source::Host(host.clone()), 0o755);
        for lib in shared_libraries(host)? {
            add_host_path(&mut a, &lib)?;
        }
    }
    let names: Vec<&str> = contents.modules.iter().map(String::as_str).collect();
    let extra: Vec<Module> = kernel.resolve(&names)?.into_iter().filter(|m| !base.contains(m)).collect();
    if !extra.is_empty() {
        let all: Vec<Module> = base.iter().chain(&extra).cloned().collect();
        add_modules(&mut a, kernel, &extra, MODULE_LISTS[1], &all)?;
    }
    Ok(a)
}

/// Adds `modules` (decompressed), the list file naming them in load
/// order, and a `modules.dep` (+ `modules.alias`) covering `all`, the
/// modules this guest has, for the kernel's autoloading through modprobe.
fn add_modules(a: &mut Archive, kernel: &Kernel, modules: &[Module], list: &str, all: &[Module]) -> Result<()> {
    let guest_dir = format!("/usr/lib/modules/{}", kernel.version());
    let plain = |file: &str| file.strip_suffix(".xz").unwrap_or(file).to_owned();
    let mut order = String::new();
    for m in modules {
        let src = kernel.modules_dir().join(&m.file);
        let bytes = strip_signature(cmd::run_ok_bytes(Command::new("xz").arg("-dc").arg(&src), TOOL_TIMEOUT)?);
        let dest = format!("{guest_dir}/{}", plain(&m.file));
        a.file(&dest, Source::Bytes(bytes), 0o644);
        order.push_str(&dest);
        order.push('\n');
    }
    a.file(list, Source::Bytes(order.into_bytes()), 0o644);

    let files: BTreeSet<String> = all.iter().map(|m| m.file.clone()).collect();
    let read = |name: &str| {
        let path = kernel.modules_dir().join(name);
        fs::read_to_string(&path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))
    };
    let mut dep = String::new();
    for line in read("modules.dep")?.lines() {
        if line.split_once(':').is_some_and(|(f, _)| files.contains(f)) {
            dep.push_str(&line.replace(".ko.xz", ".ko"));
            dep.push('\n');
        }
    }
    let names: BTreeSet<&str> = all.iter().map(|m| m.name.as_str()).collect();
    let mut alias = String::new();
    for line in read("modules.alias")?.lines() {
        if line.rsplit(' ').next().is_some_and(|m| names.contains(m.replace('-', "_").as_str())) {
            alias.push_str(line);
            alias.push('\n');
        }
    }
    a.file(&format!("{guest_dir}/modules.dep"), Source::Bytes(dep.into_bytes()), 0o644);
    a.file(&format!("{guest_dir}/modules.alias"), Source::Bytes(alias.into_bytes()), 0o644);
    Ok(())
}

/// A module without its appended signature: checking it (SHA-256 over
/// the module, an RSA verification) is most of `insmod`'s time under TCG,
/// and the kernel does not enforce signatures (`module.sig_enforce=0`); it
/// only notes the taint once. The layout (Linux `module_signature.h`):
/// module, signature, 12 bytes of `struct module_signature` ending in the
/// signature's length (big-endian u32), then the magic string.
fn strip_signature(mut ko: Vec<u8>) -> Vec<u8> {
    const MAGIC: &[u8] = b"~Module signature appended~\n";
    let Some(info_end) = ko.len().checked_sub(MAGIC.len()).filter(|_| ko.ends_with(MAGIC)) else {
        return ko;
    };
    let Some(info) = info_end.checked_sub(12).map(|start| &ko[start..info_end]) else {
        return ko;
    };
    let sig_len = u32::from_be_bytes([info[8], info[9], info[10], info[11]]) as usize;
    if let Some(end) = (info_end - 12).checked_sub(sig_len) {
        ko.truncate(end);
    }
    ko
}

fn write_archive(a: &Archive, path: &Path) -> Result<()> {
    let file = File::create(path).map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    a.write_to(&mut w)
        .and_then(|()| w.flush())
        .map_err(|e| Error::io(format!("cannot write the initramfs layer {}", path.display()), e))
}

/// Stamps of every host file the archive reads, for the cache key.
fn host_stamps(a: &Archive) -> Result<Vec<String>> {
    a.host_sources().map(cache::file_stamp).collect()
}

/// `name` on the host: a path as is, else the first match in the
/// system directories (as root's PATH would find it).
pub(crate) fn find_program(name: &str) -> Result<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if p.exists() { Ok(p) } else { Err(missing(name)) };
    }
    ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .ok_or_else(|| missing(name))
}

fn missing(program: &str) -> Error {
    Error::MissingTool { program: format!("{program} (for the VM image)"), package: cmd::package_for(program) }
}

/// A program with its loader and shared libraries.
fn add_program(a: &mut Archive, path: &Path) -> Result<()> {
    add_host_path(a, path)?;
    for lib in shared_libraries(path)? {
        add_host_path(a, &lib)?;
    }
    Ok(())
}

/// The libraries `ldd` lists for `binary` (none for a static one).
pub(crate) fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = cmd::run(Command::new("ldd").arg(binary), TOOL_TIMEOUT)?;
    if !out.success() {
        let text = format!("{}{}", out.stdout, out.stderr);
        if text.contains("not a dynamic executable") || text.contains("statically linked") {
            return Ok(Vec::new());
        }
        return Err(out.check(TOOL_TIMEOUT).unwrap_err());
    }
    parse_ldd(&out.stdout).map_err(|detail| Error::parse("ldd output", detail, &out.stdout))
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and the loader
/// line `/lib64/ld-linux-x86-64.so.2 (0x...)`; `linux-vdso.so.1` has no file.
fn parse_ldd(text: &str) -> std::result::Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next().unwrap_or_default(),
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if line.contains("not found") {
            return Err(format!("a library is missing: {line}"));
        }
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Adds host `path` at the same place in the guest: every symlink on the
/// way as a symlink, then the file (or directory) it ends at.
pub(crate) fn add_host_path(a: &mut Archive, path: &Path) -> Result<()> {
    add_host_path_depth(a, path, 0)
}

fn add_host_path_depth(a: &mut Archive, path: &Path, depth: u32) -> Result<()> {
    if depth > 40 {
        return Err(Error::Environment(format!("{}: too many levels of symbolic links", path.display())));
    }
    let comps: Vec<Component<'_>> = path.components().collect();
    let mut prefix = PathBuf::from("/");
    for (i, comp) in comps.iter().enumerate().skip(1) {
        prefix.push(comp);
        let meta =
            fs::symlink_metadata(&prefix).map_err(|e| Error::io(format!("cannot stat {}", prefix.display()), e))?;
        let guest = prefix.to_string_lossy().into_owned();
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&prefix).map_err(|e| Error::io(format!("readlink {}", prefix.display()), e))?;
            a.symlink(&guest, &target.to_string_lossy());
            let base = prefix.parent().unwrap_or(Path::new("/")).join(&target);
            let rest: PathBuf = comps[i + 1..].iter().collect();
            return add_host_path_depth(a, &lexical(&base.join(rest)), depth + 1);
        }
        if i + 1 == comps.len() {
            if meta.is_dir() {
                a.dir(&guest, meta.permissions().mode() & 0o7777);
            } else {
                a.file(&guest, Source::Host(prefix.clone()), meta.permissions().mode() & 0o7777);
            }
        }
    }
    Ok(())
}

/// Resolves `.` and `..` without touching the filesystem (the caller
/// resolved symlinks in the parts before).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// A symlink to busybox for each applet, where no full program of that
/// name is in the archive.
fn add_busybox_applets(a: &mut Archive) -> Result<()> {
    let list = cmd::run_ok(Command::new(BUSYBOX).arg("--list-full"), TOOL_TIMEOUT)?;
    let taken: BTreeSet<String> =
        a.paths().filter(|p| p.contains("bin/")).filter_map(|p| p.rsplit('/').next().map(str::to_owned)).collect();
    let busybox = fs::canonicalize(BUSYBOX).map_err(|e| Error::io(format!("cannot resolve {BUSYBOX}"), e))?;
    for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (dir, name) = applet.rsplit_once('/').unwrap_or(("bin", applet));
        if taken.contains(name) {
            continue;
        }
        // `bin/ash` lives in /usr/bin on a merged-/usr host.
        let dir = fs::canonicalize(Path::new("/").join(dir)).unwrap_or_else(|_| Path::new("/usr").join(dir));
        let path = dir.join(name).to_string_lossy().into_owned();
        if !a.contains(&path) {
            a.symlink(&path, &busybox.to_string_lossy());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_give_library_paths() {
        let text = "\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f52)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f52ded6e000)
";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(
            libs,
            [PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"), PathBuf::from("/lib64/ld-linux-x86-64.so.2")]
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err().contains("libfoo"));
        assert_eq!(lexical(Path::new("/usr/lib64/../lib/x/./y")), PathBuf::from("/usr/lib/x/y"));
    }

    #[test]
    fn module_signatures_are_cut_off() {
        let mut ko = b"\x7fELF-module-bytes".to_vec();
        let plain = ko.clone();
        ko.extend_from_slice(&[0xAA; 5]); // the signature
        ko.extend_from_slice(&[1, 4, 2, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
        ko.extend_from_slice(b"~Module signature appended~\n");
        assert_eq!(strip_signature(ko), plain);
        assert_eq!(strip_signature(plain.clone()), plain);
    }

    #[test]
    fn host_symlinks_on_the_way_are_reproduced() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("usr/lib");
        fs::create_dir_all(&real).unwrap();
        fs::write(real.join("libx.so"), b"x").unwrap();
        std::os::unix::fs::symlink("usr/lib", dir.path().join("lib")).unwrap();
        std::os::unix::fs::symlink("libx.so", real.join("libx.so.1")).unwrap();
        let mut a = Archive::new();
        add_host_path(&mut a, &dir.path().join("lib/libx.so.1")).unwrap();
        let root = dir.path().to_string_lossy().into_owned();
        let paths: Vec<String> = a.paths().map(|p| p.replacen(&root, "", 1)).collect();
        assert_eq!(paths, ["/lib", "/usr/lib/libx.so", "/usr/lib/libx.so.1"]);
    }
}
