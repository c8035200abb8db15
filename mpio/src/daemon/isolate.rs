//! What a daemon that serves a block device (`/dev/ublkbN`) does to itself
//! so that the device cannot deadlock on it:
//!
//! - **Memory locked** (`mlockall(MCL_CURRENT | MCL_FUTURE)`): once its
//!   device holds swap or the root filesystem, a page of the daemon that
//!   was swapped out (or a text page dropped from the page cache) can only
//!   come back through the device, which waits for the daemon. Only done
//!   when it cannot fail later: with `RLIMIT_MEMLOCK` infinite or
//!   `CAP_IPC_LOCK`; under a finite limit every allocation past it would
//!   fail (`MCL_FUTURE` locks new mappings too), so the daemon warns and
//!   says how instead (`LimitMEMLOCK=infinity`, which dist/mpio.service
//!   sets). Everything mapped is resident from then on, the request
//!   buffers included (queues x depth x 512 KiB per device).
//! - **A mount namespace of its own** (`unshare(CLONE_NEWNS)`, then `/`
//!   made a recursive slave): whatever the daemon's threads do with paths
//!   happens in a mount table that is a copy, never the host's, and one it
//!   could later trim. Slave, not private: unmounts (and mounts) on the
//!   host still propagate into the copy. A private copy would keep every
//!   filesystem mounted when the daemon started, so that an administrator's
//!   `umount` would return but the daemon's copy would hold the
//!   filesystem, and its disk busy, until the daemon exits; worst of all a
//!   filesystem on the daemon's own device mounted before a restart. Slave
//!   also keeps the daemon's own mounts (it makes none today) from
//!   reaching the host. The namespace is made at start, while the daemon
//!   is a single thread (`unshare` moves only the calling thread); a
//!   daemon that gets its first ublk device by a reload locks its memory
//!   then and gets the namespace at its next start. Filesystems on ublk
//!   devices are detached from the copy at once (see
//!   [`detach_ublk_mounts`] for why).

use std::sync::Once;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::mman::{MlockAllFlags, mlockall};
use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
use tracing::{info, warn};

/// `CAP_IPC_LOCK`'s bit in the capability sets (linux/capability.h).
const CAP_IPC_LOCK: u32 = 14;

/// Locks the daemon's memory, once per process (later calls do nothing).
pub(crate) fn lock_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let limit = getrlimit(Resource::RLIMIT_MEMLOCK).ok().map(|(soft, _)| soft);
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        if let Err(why) = may_lock(limit, has_capability(&status, CAP_IPC_LOCK)) {
            warn!("{why}");
            return;
        }
        match mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE) {
            Ok(()) => info!("memory locked (mlockall): the daemon is never paged out while it serves a block device"),
            Err(e) => warn!(
                "cannot lock the daemon's memory (mlockall: {e}); a daemon paged out while its block device \
                 holds swap or the root filesystem deadlocks: run it with LimitMEMLOCK=infinity"
            ),
        }
    });
}

/// Whether `mlockall(MCL_FUTURE)` can be done safely: the soft
/// `RLIMIT_MEMLOCK` (`None`: unknown) is infinite, or the process has
/// `CAP_IPC_LOCK` (no limit applies then). Otherwise, the warning.
fn may_lock(limit: Option<u64>, cap_ipc_lock: bool) -> Result<(), String> {
    if cap_ipc_lock || limit == Some(RLIM_INFINITY) {
        return Ok(());
    }
    let limit = limit.map_or_else(|| "unknown".to_owned(), |l| format!("{} KiB", l / 1024));
    Err(format!(
        "the daemon's memory is not locked: RLIMIT_MEMLOCK is {limit} and it has no CAP_IPC_LOCK, and under a \
         finite limit its allocations would fail once the limit is reached; a daemon paged out while its block \
         device holds swap or the root filesystem deadlocks: set LimitMEMLOCK=infinity in its systemd unit \
         (dist/mpio.service does), or `ulimit -l unlimited` before `mpio daemon`"
    ))
}

/// Whether `status` (`/proc/self/status`) has capability `cap` in its
/// effective set (`CapEff:`, hexadecimal).
fn has_capability(status: &str, cap: u32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|set| set & (1 << cap) != 0)
}

/// Moves the daemon into a mount namespace of its own, `/` a recursive
/// slave of the host's. Must run while the process has one thread.
pub(crate) fn own_mount_namespace() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let threads = status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse::<u32>().ok());
    if threads != Some(1) {
        // unshare would move this thread only, leaving the others behind.
        warn!("the daemon keeps the host's mount namespace: it already runs {threads:?} threads");
        return;
    }
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNS) {
        warn!(
            "the daemon keeps the host's mount namespace: unshare(CLONE_NEWNS): {e} \
             (it needs CAP_SYS_ADMIN, as serving a ublk device does)"
        );
        return;
    }
    match mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>) {
        Ok(()) => info!("mount namespace of its own (/ a recursive slave of the host's)"),
        // Private then, as unshare left it: still not the host's table.
        Err(e) => warn!(
            "own mount namespace, but / cannot be made a slave of the host's ({e}): host unmounts do not reach it"
        ),
    }
    detach_ublk_mounts();
}

/// Detaches, in the daemon's copy of the mount table, every filesystem
/// on a ublk block device (a restarted daemon's own device, mounted
/// before it started). The daemon never needs them, and where the host's
/// `/` is not a shared mount (no systemd: an initramfs, a container) the
/// administrator's later unmount would not reach the copy: the copy would
/// keep the filesystem alive, and at the daemon's exit its unmount would
/// write to the device and wait for the next daemon, so the exit would
/// never end. A detach in a slave does not propagate to the host.
fn detach_ublk_mounts() {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for point in ublk_mounts(&table) {
        match umount2(point.as_str(), MntFlags::MNT_DETACH) {
            Ok(()) => info!(mount = point, "detached from the daemon's mount namespace: a filesystem on a ublk device"),
            Err(e) => warn!(mount = point, "cannot detach a ublk device's filesystem from the daemon's namespace: {e}"),
        }
    }
}

/// The mount points of `mountinfo` (`/proc/self/mountinfo`) whose source
/// is a ublk block device (`/dev/ublkbN`), last mounted first (children
/// before parents); never `/`.
fn ublk_mounts(mountinfo: &str) -> Vec<String> {
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| {
            // ID PARENT MAJ:MIN ROOT POINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPER
            let (left, right) = l.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let source = right.split(' ').nth(1)?;
            let ublk = source.strip_prefix("/dev/ublkb").is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()));
            (ublk && point != "/").then(|| unescape(point))
        })
        .collect();
    points.reverse();
    points
}

/// A mountinfo field with its octal escapes (`\040` for a space) decoded.
fn unescape(field: &str) -> String {
    let mut out = Vec::with_capacity(field.len());
    let mut rest = field.as_bytes();
    while let Some((&c, tail)) = rest.split_first() {
        let code = tail
            .get(..3)
            .filter(|d| c == b'\\' && d.iter().all(|d| (b'0'..=b'7').contains(d)))
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match code {
            Some(byte) => {
                out.push(byte);
                rest = tail.get(3..).unwrap_or_default();
            }
            None => {
                out.push(c);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_locked_only_where_the_lock_cannot_fail_later() {
        assert_eq!(may_lock(Some(RLIM_INFINITY), false), Ok(()));
        assert_eq!(may_lock(Some(8 << 20), true), Ok(()), "CAP_IPC_LOCK: no limit applies");
        let e = may_lock(Some(8 << 20), false).unwrap_err();
        assert!(e.contains("RLIMIT_MEMLOCK is 8192 KiB") && e.contains("LimitMEMLOCK=infinity"), "{e}");
        assert!(may_lock(None, false).unwrap_err().contains("is unknown"));
    }

    #[test]
    fn the_filesystems_on_ublk_devices_are_found_children_first_and_never_root() {
        let table = "\
22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/ublkb0 rw
30 22 0:26 / /run rw shared:5 - tmpfs tmpfs rw
41 22 259:1 / /mnt/data\\040disk rw,relatime - ext4 /dev/ublkb1 rw
42 41 259:3 / /mnt/data\\040disk/inner rw - xfs /dev/ublkb12 rw
43 22 8:1 / /boot rw - ext4 /dev/sda1 rw
44 22 8:2 / /mnt/x rw - ext4 /dev/ublkbad rw
";
        assert_eq!(ublk_mounts(table), ["/mnt/data disk/inner", "/mnt/data disk"]);
        assert_eq!(unescape("a\\011b\\134c\\9"), "a\tb\\c\\9");
    }

    #[test]
    fn capabilities_are_read_from_the_effective_set() {
        let status =
            |eff: &str| format!("Name:\tmpio\nCapInh:\t0000000000000000\nCapEff:\t{eff}\nCapBnd:\t000001ffffffffff\n");
        assert!(has_capability(&status("000001ffffffffff"), CAP_IPC_LOCK), "root");
        assert!(has_capability(&status("0000000000004000"), CAP_IPC_LOCK), "CAP_IPC_LOCK alone");
        assert!(!has_capability(&status("0000000000003fff"), CAP_IPC_LOCK), "the bits below it");
        assert!(!has_capability("Name:\tmpio\n", CAP_IPC_LOCK), "no CapEff line");
    }

    /// The lock itself, in a child process (a test must not lock the
    /// test runner): VmLck is above zero after it, where it is allowed.
    #[test]
    fn a_locked_process_shows_locked_memory() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let limit = getrlimit(Resource::RLIMIT_MEMLOCK).ok().map(|(soft, _)| soft);
        if may_lock(limit, has_capability(&status, CAP_IPC_LOCK)).is_err() {
            eprintln!("skipped: this process may not lock its memory");
            return;
        }
        // A shell that locks itself cannot be had without a helper binary;
        // this test binary's own child is: re-run this test as the child.
        if std::env::var_os("MPIO_LOCK_CHILD").is_some() {
            lock_memory();
            let after = std::fs::read_to_string("/proc/self/status").unwrap();
            let kib: u64 = after
                .lines()
                .find_map(|l| l.strip_prefix("VmLck:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap();
            assert!(kib > 0, "VmLck {kib} kB after lock_memory");
            return;
        }
        let me = std::env::current_exe().unwrap();
        let out = std::process::Command::new(me)
            .args(["--exact", "daemon::isolate::tests::a_locked_process_shows_locked_memory", "--test-threads=1"])
            .env("MPIO_LOCK_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("1 passed"), "{text}{}", String::from_utf8_lossy(&out.stderr));
    }
}
