//! The VM tests' cache outside the checkout: the kernel, the compiled
//! guest agent and initramfs layers, shared by every test process and
//! every clone of the repository on the host.
//!
//! `$MPIO_TEST_CACHE`, else `/var/cache/mpio-tests`. An entry is built at
//! most once at a time: the builder holds `<entry>.lock` (flock, released by
//! the kernel if it dies), builds into `<entry>.tmp` and renames it into
//! place, so nobody ever sees a half-written entry, and a builder killed
//! midway leaves only a `.tmp` that the next one removes. Entries carry a
//! content key in their name (kernel version, hash of the inputs); ones
//! unused for [`PRUNE_AFTER`] are removed when a new sibling is built.

use std::collections::hash_map::DefaultHasher;
use std::fs::{self, File};
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::slot;

/// Environment variable naming the cache directory.
pub const CACHE_ENV: &str = "MPIO_TEST_CACHE";

/// The cache directory when [`CACHE_ENV`] is not set.
pub const DEFAULT_CACHE: &str = "/var/cache/mpio-tests";

/// Entries not used for this long are removed when a sibling is built.
pub const PRUNE_AFTER: Duration = Duration::from_secs(14 * 24 * 3600);

/// The cache directory (not created).
pub fn dir() -> PathBuf {
    std::env::var_os(CACHE_ENV).filter(|v| !v.is_empty()).map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from)
}

/// `dir()/rel`, built first by `build(tmp)` if it does not exist. `build`
/// creates `tmp` (a file or a directory) or fails; on success it is
/// renamed to the entry, on failure removed.
pub fn get_or_build(rel: &str, build: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    get_or_build_in(&dir(), rel, build)
}

fn get_or_build_in(cache: &Path, rel: &str, build: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let entry = cache.join(rel);
    if entry.exists() {
        touch(&entry);
        return Ok(entry);
    }
    let parent = entry.parent().expect("cache entries live in the cache dir");
    fs::create_dir_all(parent)
        .map_err(|e| Error::io(format!("cannot create the cache dir {}", parent.display()), e))?;
    let _lock = slot::lock_file(&with_suffix(&entry, ".lock"))?;
    if entry.exists() {
        return Ok(entry); // built by another process while we waited
    }
    let tmp = with_suffix(&entry, ".tmp");
    remove(&tmp);
    if let Err(e) = build(&tmp) {
        remove(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &entry).map_err(|e| Error::io(format!("cannot rename {} into place", tmp.display()), e))?;
    prune_siblings(&entry);
    Ok(entry)
}

/// A short stable hex key for the inputs of a cache entry (not a
/// cryptographic hash: it only tells inputs apart).
pub fn key(parts: &[&[u8]]) -> String {
    let mut h = DefaultHasher::new();
    for p in parts {
        h.write_usize(p.len());
        h.write(p);
    }
    format!("{:016x}", h.finish())
}

/// What identifies a host file's content for [`key`] without reading it:
/// path, size, modification time and inode.
pub fn file_stamp(path: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?;
    Ok(format!("{}:{}:{}.{}:{}", path.display(), m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn remove(path: &Path) {
    let _ = fs::remove_dir_all(path).or_else(|_| fs::remove_file(path));
}

/// Marks an entry as used (its mtime), for [`prune_siblings`].
fn touch(path: &Path) {
    if let Ok(f) = File::open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Removes entries next to `entry` that were not used for [`PRUNE_AFTER`]
/// (never lock files, whose holders may be waiting).
fn prune_siblings(entry: &Path) {
    let Some(parent) = entry.parent() else { return };
    let Ok(siblings) = fs::read_dir(parent) else { return };
    let now = SystemTime::now();
    for sibling in siblings.flatten() {
        let path = sibling.path();
        let name = sibling.file_name().to_string_lossy().into_owned();
        if path == entry || name.ends_with(".lock") || name.ends_with(".tmp") {
            continue;
        }
        let old = sibling
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > PRUNE_AFTER);
        if old {
            eprintln!("removing cache entry {} (unused for {} days)", path.display(), PRUNE_AFTER.as_secs() / 86400);
            remove(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_built_once_and_a_failed_build_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let entry = root.path().join("things/a");
        let build_calls = std::cell::Cell::new(0);
        let build = |tmp: &Path| {
            build_calls.set(build_calls.get() + 1);
            fs::write(tmp, b"x").map_err(|e| Error::io("write", e))
        };
        let got = get_or_build_in(root.path(), "things/a", build).unwrap();
        assert_eq!(got, entry);
        get_or_build_in(root.path(), "things/a", build).unwrap();
        assert_eq!(build_calls.get(), 1);
        let failed = get_or_build_in(root.path(), "things/b", |tmp| {
            fs::write(tmp, b"half").unwrap();
            Err(Error::Environment("no".into()))
        });
        assert!(failed.is_err());
        assert!(!root.path().join("things/b").exists());
        assert!(!root.path().join("things/b.tmp").exists());
        assert_ne!(key(&[b"ab", b"c"]), key(&[b"a", b"bc"]));
    }
}
