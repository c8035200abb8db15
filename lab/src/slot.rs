//! Numbered resource slots shared by all test processes on the host.
//!
//! A slot is a lock file `/tmp/mpio-testbed/<kind>-<n>.lock` held with
//! `flock(LOCK_EX)` for as long as the owner uses resource `n` (a tgtd control
//! port, a tc class, the iptables rules of one blackhole of the test bed). flock locks
//! belong to an open file description, so they exclude both other processes
//! and other threads of the same test binary, and the kernel drops them when
//! the owner dies, even by SIGKILL. A resource whose slot is *not* held is
//! therefore a leftover of a dead test and may be cleaned up by anyone.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::wait::wait_until;

/// Directory of the lock files.
pub const LOCK_DIR: &str = "/tmp/mpio-testbed";

/// A held slot; dropping it releases the lock (the file stays).
#[derive(Debug)]
pub struct Slot {
    n: u32,
    path: PathBuf,
    file: Flock<File>,
}

impl Slot {
    /// The slot number.
    pub fn number(&self) -> u32 {
        self.n
    }

    /// The lock file, which the owner may use to record state (e.g. a pid).
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the process that uses this slot's resource: line 1
    /// `<program> <pid> <tag...>`, line 2 its temp dir; see
    /// [`Slot::kill_orphan`]. `tag` is a run of words of the process's
    /// command line that identify it as this slot's (`-C 7001`).
    pub fn record_owner(&mut self, program: &str, pid: u32, tag: &[&str], dir: &Path) -> Result<()> {
        let file = &mut *self.file;
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{program} {pid} {}\n{}\n", tag.join(" "), dir.display()))
            .map_err(|e| Error::io(format!("cannot record the {program} pid in {}", self.path.display()), e))
    }

    /// Forgets the record of [`Slot::record_owner`] once the process is gone.
    pub fn clear_owner(&mut self) {
        let _ = self.file.set_len(0);
    }

    /// Kills a process left behind by a test process that died while
    /// holding this slot: the recorded pid, if its command line still
    /// starts with `program` and has the recorded tag (pids are reused)
    /// and it is not a zombie. Then removes the recorded temp dir if its
    /// name starts with `temp_prefix` and it is in the temp dir, and
    /// clears the record.
    pub fn kill_orphan(&mut self, program: &str, temp_prefix: &str) -> Result<()> {
        let mut text = String::new();
        let _ = self.file.rewind();
        let _ = self.file.read_to_string(&mut text);
        let mut lines = text.lines();
        let mut words = lines.next().unwrap_or_default().split_whitespace();
        if words.next() != Some(program) {
            self.clear_owner();
            return Ok(());
        }
        let Some(pid) = words.next().and_then(|p| p.parse::<i32>().ok()) else {
            self.clear_owner();
            return Ok(());
        };
        let tag: Vec<&str> = words.collect();
        let is_ours = |pid: i32| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            // A zombie (its parent died too and nobody reaps it) holds nothing.
            let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
                .unwrap_or(true);
            !zombie
                && args.first().is_some_and(|a| a.ends_with(program.as_bytes()))
                && (tag.is_empty()
                    || args.windows(tag.len()).any(|w| w.iter().zip(&tag).all(|(a, t)| *a == t.as_bytes())))
        };
        if !is_ours(pid) {
            self.clear_owner();
            return Ok(());
        }
        eprintln!("killing {program} pid {pid} ({}) left behind by a dead test process", tag.join(" "));
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        wait_until(
            &format!("orphaned {program} pid {pid} to die"),
            Duration::from_secs(10),
            Duration::from_millis(10),
            || (!is_ours(pid)).then_some(()),
        )?;
        // Its owner is dead, so is the fixture: remove its temp dir if it is
        // one the fixture made.
        if let Some(dir) = lines.next().map(Path::new) {
            let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with(temp_prefix) && dir.starts_with(std::env::temp_dir()) && dir.is_dir() {
                let _ = fs::remove_dir_all(dir);
            }
        }
        self.clear_owner();
        Ok(())
    }
}

fn lock_path(kind: &str, n: u32) -> PathBuf {
    PathBuf::from(LOCK_DIR).join(format!("{kind}-{n}.lock"))
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(format!("cannot open lock file {}", path.display()), e))
}

/// Tries to lock slot `n` of `kind` without blocking; `Ok(None)` if someone
/// holds it.
pub fn try_acquire(kind: &str, n: u32) -> Result<Option<Slot>> {
    fs::create_dir_all(LOCK_DIR).map_err(|e| Error::io(format!("cannot create {LOCK_DIR}"), e))?;
    let path = lock_path(kind, n);
    match Flock::lock(open(&path)?, FlockArg::LockExclusiveNonblock) {
        Ok(file) => Ok(Some(Slot { n, path, file })),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(Error::io(format!("flock {}", path.display()), std::io::Error::from(e))),
    }
}

/// Locks the first free slot of `kind` in `range`, skipping the numbers in
/// `skip`.
pub fn acquire(kind: &str, range: RangeInclusive<u32>, skip: &[u32]) -> Result<Slot> {
    for n in range.clone() {
        if skip.contains(&n) {
            continue;
        }
        if let Some(slot) = try_acquire(kind, n)? {
            return Ok(slot);
        }
    }
    Err(Error::Environment(format!(
        "all {kind} slots {range:?} are taken (lock files in {LOCK_DIR}); \
         too many tests in parallel or leftover processes"
    )))
}

/// Whether slot `n` of `kind` is held by a live owner right now.
pub fn is_held(kind: &str, n: u32) -> Result<bool> {
    Ok(try_acquire(kind, n)?.is_none())
}

/// Blocks until the host-wide lock `name` is ours (for short critical
/// sections such as "create the tc root qdisc if missing").
pub fn lock_global(name: &str) -> Result<Flock<File>> {
    fs::create_dir_all(LOCK_DIR).map_err(|e| Error::io(format!("cannot create {LOCK_DIR}"), e))?;
    lock_file(&PathBuf::from(LOCK_DIR).join(format!("{name}.lock")))
}

/// Blocks until the lock file `path` (created if missing; its directory
/// must exist) is ours, e.g. to build a cache entry only once.
pub fn lock_file(path: &Path) -> Result<Flock<File>> {
    Flock::lock(open(path)?, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io(format!("flock {}", path.display()), std::io::Error::from(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_slot_is_skipped_and_freed_on_drop() {
        let kind = format!("selftest{}", std::process::id());
        let a = acquire(&kind, 1..=3, &[]).unwrap();
        assert_eq!(a.number(), 1);
        let b = acquire(&kind, 1..=3, &[2]).unwrap();
        assert_eq!(b.number(), 3);
        assert!(is_held(&kind, 1).unwrap());
        assert!(acquire(&kind, 1..=1, &[]).is_err());
        drop(a);
        assert!(!is_held(&kind, 1).unwrap());
        for n in 1..=3 {
            let _ = fs::remove_file(lock_path(&kind, n));
        }
    }
}
