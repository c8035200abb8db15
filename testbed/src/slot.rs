//! Numbered resource slots shared by all test processes on the host.
//!
//! A slot is a lock file `/tmp/mpio-testbed/<kind>-<n>.lock` held with
//! `flock(LOCK_EX)` for as long as the owner uses resource `n` (a tgtd control
//! port, a tc class, the iptables rules of one [`Blackhole`]). flock locks
//! belong to an open file description, so they exclude both other processes
//! and other threads of the same test binary, and the kernel drops them when
//! the owner dies, even by SIGKILL. A resource whose slot is *not* held is
//! therefore a leftover of a dead test and may be cleaned up by anyone.
//!
//! [`Blackhole`]: crate::netfault::Blackhole

use std::fs::{self, File, OpenOptions};
use std::ops::RangeInclusive;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

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
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

fn lock_path(kind: &str, n: u32) -> PathBuf {
    PathBuf::from(LOCK_DIR).join(format!("{kind}-{n}.lock"))
}

fn open(path: &PathBuf) -> Result<File> {
    fs::create_dir_all(LOCK_DIR).map_err(|e| Error::io(format!("cannot create {LOCK_DIR}"), e))?;
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
    let path = PathBuf::from(LOCK_DIR).join(format!("{name}.lock"));
    Flock::lock(open(&path)?, FlockArg::LockExclusive)
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
