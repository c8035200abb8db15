//! Whether a block device the daemon serves (`/dev/ublkbN`) is in use,
//! and by whom: a device is not removed under a filesystem or a process
//! (the kernel would let it go, and they would get I/O errors), unless the
//! administrator forces it.
//!
//! The holders are looked for where Linux keeps them, for the device and
//! each of its partitions:
//! - mounted: `/proc/PID/mountinfo` of every mount namespace there is (one
//!   process read per namespace, by `/proc/PID/ns/mnt`), matched by the
//!   device number, so a mount in a container or in a service's private
//!   namespace is found as well as the administrator's;
//! - swap: `/proc/swaps`;
//! - open: `/proc/PID/fd/*` on a node under `/dev` that is this block
//!   device (by device number, whatever the node's name), with the
//!   process's pid and name;
//! - stacked: `/sys/block/NAME/holders` (device-mapper, md, bcache);
//! - and last an exclusive open (`O_EXCL`, as mount and swapon claim a
//!   device), which the kernel refuses with EBUSY while anything holds the
//!   device exclusively: a claim none of the above explains (a kernel user
//!   in a namespace we cannot read) still counts.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// One thing that holds a block device.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Holder {
    /// A filesystem on it (or on `node`, a partition) is mounted on `on`,
    /// in the mount namespace of process `pid` (`comm`).
    Mounted { node: String, on: String, pid: u32, comm: String },
    /// It is swap space.
    Swap { node: String },
    /// Process `pid` (`comm`) has it open.
    Open { node: String, pid: u32, comm: String },
    /// Another block device is built on it (`dm-0`, `md0`; `name` is the
    /// device-mapper name when there is one).
    Stacked { node: String, by: String, name: Option<String> },
    /// The kernel refuses an exclusive open and nothing above says why.
    Claimed { node: String },
    /// Clients of the device's NBD export (`nbd-client`, qemu) are
    /// connected: removing the export disconnects them mid-use.
    NbdClients { export: String, clients: usize },
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Mounted { node, on, pid, comm } => {
                write!(f, "{node} mounted on {on} (mount namespace of pid {pid} {comm})")
            }
            Holder::Swap { node } => write!(f, "{node} is swap space"),
            Holder::Open { node, pid, comm } => write!(f, "{node} open by pid {pid} ({comm})"),
            Holder::Stacked { node, by, name: Some(n) } => write!(f, "{node} held by {by} ({n})"),
            Holder::Stacked { node, by, name: None } => write!(f, "{node} held by {by}"),
            Holder::Claimed { node } => write!(f, "{node} is claimed exclusively (the kernel says busy)"),
            Holder::NbdClients { export, clients } => {
                write!(f, "NBD export {export} has {clients} client(s) connected")
            }
        }
    }
}

/// Who holds block device `dev` (`/dev/ublkb0`) or one of its partitions;
/// empty when nothing does (or `dev` is gone).
pub(crate) fn holders(dev: &Path) -> Vec<Holder> {
    holders_under(Path::new("/proc"), Path::new("/sys/block"), dev)
}

/// The refusal for removing `device` while `holders` hold its block
/// device: who, and the ways out.
pub(crate) fn refusal(device: &str, holders: &[Holder]) -> String {
    let list: Vec<String> = holders.iter().map(ToString::to_string).collect();
    format!(
        "device {device} is in use: {}; unmount it, stop or close what has it open (or swapoff, dmsetup remove, \
         disconnect the NBD clients: nbd-client -d /dev/nbdN), then reload again; \
         or `mpio reload --force` to remove it anyway (its users get I/O errors)",
        list.join("; ")
    )
}

/// A block device node: its name in /sys/block and its number.
struct Node {
    /// `ublkb0`, `ublkb0p1`.
    name: String,
    /// `259:0`, as mountinfo writes it.
    number: String,
    rdev: u64,
}

fn holders_under(proc: &Path, sys_block: &Path, dev: &Path) -> Vec<Holder> {
    let Some(name) = dev.file_name().and_then(|n| n.to_str()) else { return Vec::new() };
    let Some(disk) = node(&sys_block.join(name), name) else { return Vec::new() };
    let mut nodes = partitions(&sys_block.join(name));
    nodes.insert(0, disk);
    let mut found = BTreeSet::new();
    let processes = processes(proc);
    mounted(proc, &processes, &nodes, &mut found);
    swap(proc, &nodes, &mut found);
    open(proc, &processes, &nodes, &mut found);
    for n in &nodes {
        stacked(sys_block, &sys_block.join(name), n, &mut found);
    }
    if found.is_empty() && claimed(dev) {
        found.insert(Holder::Claimed { node: dev.display().to_string() });
    }
    found.into_iter().collect()
}

/// The node described by sysfs directory `dir` (its `dev` file).
fn node(dir: &Path, name: &str) -> Option<Node> {
    let number = fs::read_to_string(dir.join("dev")).ok()?.trim().to_owned();
    let (major, minor) = number.split_once(':')?;
    let rdev = makedev(major.parse().ok()?, minor.parse().ok()?);
    Some(Node { name: name.to_owned(), number, rdev })
}

/// The partitions of the disk at sysfs directory `disk`.
fn partitions(disk: &Path) -> Vec<Node> {
    let Ok(entries) = fs::read_dir(disk) else { return Vec::new() };
    let mut parts: Vec<Node> = entries
        .flatten()
        .filter(|e| e.path().join("partition").exists())
        .filter_map(|e| node(&e.path(), e.file_name().to_str()?))
        .collect();
    parts.sort_by(|a, b| a.name.cmp(&b.name));
    parts
}

/// Linux's encoding of a device number (`makedev(3)`, as `st_rdev` holds
/// it).
fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32) | ((major & 0xfff) << 8) | ((minor & 0xffff_ff00) << 12) | (minor & 0xff)
}

/// Every process: pid and name (`comm`).
fn processes(proc: &Path) -> Vec<(u32, String)> {
    let Ok(entries) = fs::read_dir(proc) else { return Vec::new() };
    let mut list: Vec<(u32, String)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .map(|pid| {
            let comm = fs::read_to_string(proc.join(pid.to_string()).join("comm")).unwrap_or_default();
            (pid, comm.trim().to_owned())
        })
        .collect();
    // pid 1 first: a mount in the init namespace is named by init.
    list.sort();
    list
}

/// Mounts of `nodes`, one mountinfo read per mount namespace. A mount
/// seen again at the same place in a later namespace is the same mount
/// propagated there (the daemon's own namespace receives the host's): it
/// is named once, by the first namespace (init's, where it is one).
fn mounted(proc: &Path, processes: &[(u32, String)], nodes: &[Node], found: &mut BTreeSet<Holder>) {
    let mut namespaces = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (pid, comm) in processes {
        let dir = proc.join(pid.to_string());
        // A process that exited meanwhile, or a kernel thread without one.
        let Ok(ns) = fs::read_link(dir.join("ns/mnt")) else { continue };
        if !namespaces.insert(ns) {
            continue;
        }
        let Ok(info) = fs::read_to_string(dir.join("mountinfo")) else { continue };
        for (number, on) in info.lines().filter_map(mount_of) {
            if let Some(n) = nodes.iter().find(|n| n.number == number)
                && seen.insert((n.number.clone(), on.clone()))
            {
                let node = format!("/dev/{}", n.name);
                found.insert(Holder::Mounted { node, on, pid: *pid, comm: comm.clone() });
            }
        }
    }
}

/// The device number and mount point of a mountinfo line
/// (`36 35 259:0 / /mnt rw,relatime shared:1 - ext4 /dev/ublkb0 rw`).
fn mount_of(line: &str) -> Option<(&str, String)> {
    let mut f = line.split(' ');
    let number = f.nth(2)?;
    let on = f.nth(1)?;
    Some((number, unescape(on)))
}

/// A mountinfo path: space, tab, newline and backslash are written in
/// octal (`\040`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal =
            b.get(i + 1..i + 4).and_then(|o| std::str::from_utf8(o).ok()).and_then(|o| u8::from_str_radix(o, 8).ok());
        match (b[i], octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `nodes` in use as swap (`/proc/swaps` names them by path).
fn swap(proc: &Path, nodes: &[Node], found: &mut BTreeSet<Holder>) {
    let Ok(swaps) = fs::read_to_string(proc.join("swaps")) else { return };
    for file in swaps.lines().skip(1).filter_map(|l| l.split_whitespace().next()) {
        if let Some(n) = fs::metadata(unescape(file)).ok().and_then(|m| nodes.iter().find(|n| is_node(&m, n))) {
            found.insert(Holder::Swap { node: format!("/dev/{}", n.name) });
        }
    }
}

/// Processes with one of `nodes` open.
fn open(proc: &Path, processes: &[(u32, String)], nodes: &[Node], found: &mut BTreeSet<Holder>) {
    for (pid, comm) in processes {
        let Ok(fds) = fs::read_dir(proc.join(pid.to_string()).join("fd")) else { continue };
        for fd in fds.flatten() {
            // Only descriptors on a node under /dev are followed (stat on
            // a file of a hung NFS or FUSE mount would hang the check);
            // the node is matched by number, whatever its name there.
            if !fs::read_link(fd.path()).is_ok_and(|l| l.starts_with("/dev/")) {
                continue;
            }
            let Ok(m) = fs::metadata(fd.path()) else { continue };
            if let Some(n) = nodes.iter().find(|n| is_node(&m, n)) {
                found.insert(Holder::Open { node: format!("/dev/{}", n.name), pid: *pid, comm: comm.clone() });
            }
        }
    }
}

fn is_node(m: &fs::Metadata, n: &Node) -> bool {
    m.file_type().is_block_device() && m.rdev() == n.rdev
}

/// Block devices built on node `n` (its sysfs `holders` directory; a
/// partition's is under the disk's directory `disk`).
fn stacked(sys_block: &Path, disk: &Path, n: &Node, found: &mut BTreeSet<Holder>) {
    let dir = if disk.file_name().and_then(|f| f.to_str()) == Some(n.name.as_str()) {
        disk.to_path_buf()
    } else {
        disk.join(&n.name)
    };
    let Ok(entries) = fs::read_dir(dir.join("holders")) else { return };
    for e in entries.flatten() {
        let by = e.file_name().to_string_lossy().into_owned();
        let name = fs::read_to_string(sys_block.join(&by).join("dm/name")).ok().map(|s| s.trim().to_owned());
        found.insert(Holder::Stacked { node: format!("/dev/{}", n.name), by, name });
    }
}

/// Whether the kernel refuses an exclusive open of `dev` (EBUSY): it is
/// mounted, swap, or claimed by another exclusive opener.
fn claimed(dev: &Path) -> bool {
    let r = fs::OpenOptions::new().read(true).custom_flags(libc::O_EXCL | libc::O_CLOEXEC).open(dev);
    // The descriptor closes here: the claim lasts only while it is open.
    matches!(r, Err(e) if e.raw_os_error() == Some(libc::EBUSY))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A fake /proc and /sys/block under a temporary directory.
    struct Fake {
        root: PathBuf,
    }

    impl Fake {
        fn new(tag: &str) -> Fake {
            let root = std::env::temp_dir().join(format!("mpio-in-use-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap();
            Fake { root }
        }

        fn write(&self, rel: &str, text: &str) {
            let p = self.root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }

        fn process(&self, pid: u32, comm: &str, ns: &str, mountinfo: &str) {
            self.write(&format!("proc/{pid}/comm"), &format!("{comm}\n"));
            self.write(&format!("proc/{pid}/mountinfo"), mountinfo);
            fs::create_dir_all(self.root.join(format!("proc/{pid}/ns"))).unwrap();
            std::os::unix::fs::symlink(format!("mnt:[{ns}]"), self.root.join(format!("proc/{pid}/ns/mnt"))).unwrap();
        }

        fn holders(&self) -> Vec<Holder> {
            self.holders_of("/dev/ublkb7")
        }

        fn holders_of(&self, dev: &str) -> Vec<Holder> {
            holders_under(&self.root.join("proc"), &self.root.join("sys/block"), Path::new(dev))
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    const ROOT_MOUNTS: &str = "22 1 0:21 / / rw - rootfs rootfs rw\n";

    #[test]
    fn a_mount_is_found_in_every_namespace_once_by_device_number() {
        let f = Fake::new("mounts");
        f.write("sys/block/ublkb7/dev", "259:7\n");
        f.write("sys/block/ublkb7/ublkb7p1/dev", "259:8\n");
        f.write("sys/block/ublkb7/ublkb7p1/partition", "1\n");
        // The administrator's mount (a path with a space), in init's namespace.
        f.process(1, "init", "1", &format!("{ROOT_MOUNTS}40 22 259:7 / /mnt/my\\040data rw - ext4 /dev/ublkb7 rw\n"));
        // Another process of the same namespace: not read again.
        f.process(7, "sh", "1", "garbage that would not parse\n");
        // The daemon's namespace, a slave of init's: the same mount, propagated.
        f.process(9, "mpio", "3", &format!("{ROOT_MOUNTS}60 22 259:7 / /mnt/my\\040data rw - ext4 /dev/ublkb7 rw\n"));
        // A container's namespace mounts the partition; another device too.
        f.process(
            50,
            "nginx",
            "2",
            &format!("{ROOT_MOUNTS}41 22 259:8 / /srv rw - xfs /dev/ublkb7p1 rw\n42 22 259:70 / /x rw - ext4 /dev/ublkb70 rw\n"),
        );
        let got: Vec<String> = f.holders().iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "/dev/ublkb7 mounted on /mnt/my data (mount namespace of pid 1 init)",
                "/dev/ublkb7p1 mounted on /srv (mount namespace of pid 50 nginx)",
            ]
        );
    }

    #[test]
    fn a_stacked_device_is_named_with_its_mapper_name() {
        let f = Fake::new("stacked");
        f.write("sys/block/ublkb7/dev", "259:7\n");
        f.write("sys/block/ublkb7/holders/dm-0", "");
        f.write("sys/block/dm-0/dm/name", "vg-root\n");
        f.process(1, "init", "1", ROOT_MOUNTS);
        assert_eq!(
            f.holders(),
            [Holder::Stacked { node: "/dev/ublkb7".into(), by: "dm-0".into(), name: Some("vg-root".into()) }]
        );
    }

    #[test]
    fn a_process_with_the_node_open_and_swap_on_it_are_named_and_other_descriptors_are_not() {
        // A real block node is needed for the descriptor's target (the fake
        // /proc links to it); loop devices are there on most machines.
        let Some(dev) = ["/dev/loop7", "/dev/loop0"].into_iter().find(|d| {
            fs::metadata(d)
                .is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == makedev(7, d[9..].parse().unwrap()))
        }) else {
            eprintln!("skipped: no /dev/loop7 or /dev/loop0 here");
            return;
        };
        let f = Fake::new("open");
        let name = &dev[5..];
        f.write(&format!("sys/block/{name}/dev"), &format!("7:{}\n", &dev[9..]));
        f.process(1, "init", "1", ROOT_MOUNTS);
        f.process(42, "sleep", "1", ROOT_MOUNTS);
        fs::create_dir_all(f.root.join("proc/42/fd")).unwrap();
        std::os::unix::fs::symlink(dev, f.root.join("proc/42/fd/3")).unwrap();
        // A file and a dangling link: no holders.
        std::os::unix::fs::symlink("/etc/hostname", f.root.join("proc/42/fd/4")).unwrap();
        std::os::unix::fs::symlink("/dev/nonexistent", f.root.join("proc/42/fd/5")).unwrap();
        assert_eq!(f.holders_of(dev), [Holder::Open { node: dev.into(), pid: 42, comm: "sleep".into() }]);
        // Swap on it too (/proc/swaps names the node by path).
        f.write("proc/swaps", &format!("Filename\tType\tSize\tUsed\tPriority\n{dev}  partition\t1024\t0\t-2\n"));
        let swap = Holder::Swap { node: dev.into() };
        assert!(f.holders_of(dev).contains(&swap), "{:?}", f.holders_of(dev));
    }

    #[test]
    fn a_device_nobody_holds_or_that_is_gone_has_no_holders() {
        let f = Fake::new("free");
        f.process(1, "init", "1", ROOT_MOUNTS);
        assert_eq!(f.holders(), [], "no such device");
        f.write("sys/block/ublkb7/dev", "259:7\n");
        // /dev/ublkb7 does not exist on this machine: the exclusive open
        // fails with ENOENT, which is no claim.
        assert_eq!(f.holders(), []);
    }

    #[test]
    fn device_numbers_encode_as_st_rdev() {
        // /dev/loop0 is 7:0, a ublk disk 259:N, dm 253:N; large ones too.
        assert_eq!(makedev(7, 0), 0x700);
        assert_eq!(makedev(259, 3), 0x10303);
        assert_eq!(makedev(4096, 256), (1 << 44) | (1 << 20));
    }

    #[test]
    fn the_refusal_names_every_holder_and_the_ways_out() {
        let h = [
            Holder::Mounted { node: "/dev/ublkb0".into(), on: "/mnt".into(), pid: 1, comm: "init".into() },
            Holder::Open { node: "/dev/ublkb0".into(), pid: 42, comm: "sleep".into() },
        ];
        let r = refusal("d0", &h);
        assert!(r.starts_with("device d0 is in use: /dev/ublkb0 mounted on /mnt (mount namespace of pid 1 init); /dev/ublkb0 open by pid 42 (sleep); unmount it"), "{r}");
        assert!(r.contains("mpio reload --force"), "{r}");
    }
}
