//! A writer of initramfs archives (cpio "newc", the format the kernel
//! unpacks; Linux Documentation/driver-api/early-userspace/buffer-format).
//!
//! The kernel accepts several archives concatenated in one initrd, later
//! ones adding to what earlier ones made; the VM's initrd is a cached base
//! archive followed by the extra files of one VM ([`super::image`]).
//! Entries are written in path order, so every directory precedes its
//! contents; missing parent directories are added.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file on the host, read when the archive is written.
    Host(PathBuf),
    /// Bytes in memory.
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir { mode: u32 },
    File { source: Source, mode: u32 },
    Symlink { target: String },
}

/// An archive being assembled; paths are absolute guest paths.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Archive {
        Archive::default()
    }

    /// A directory (permission bits `mode`, e.g. `0o755`).
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Archive {
        self.entries.insert(normalize(path), Entry::Dir { mode });
        self
    }

    /// A regular file (permission bits `mode`); replaces an earlier entry
    /// of that path.
    pub fn file(&mut self, path: &str, source: Source, mode: u32) -> &mut Archive {
        self.entries.insert(normalize(path), Entry::File { source, mode });
        self
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Archive {
        self.entries.insert(normalize(path), Entry::Symlink { target: target.to_owned() });
        self
    }

    /// Whether `path` has an entry.
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(&normalize(path))
    }

    /// Every path with an entry, in archive order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The host files the archive will read, in archive order.
    pub fn host_sources(&self) -> impl Iterator<Item = &Path> {
        self.entries.values().filter_map(|e| match e {
            Entry::File { source: Source::Host(p), .. } => Some(p.as_path()),
            _ => None,
        })
    }

    /// Writes the archive (with its trailer) to `out`.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let mut all = self.entries.clone();
        for path in self.entries.keys() {
            let mut parent = Path::new(path).parent();
            while let Some(p) = parent.filter(|p| *p != Path::new("/")) {
                all.entry(p.to_string_lossy().into_owned()).or_insert(Entry::Dir { mode: 0o755 });
                parent = p.parent();
            }
        }
        let mut w = Writer { out, ino: 1 };
        for (path, entry) in &all {
            let name = path.trim_start_matches('/');
            match entry {
                Entry::Dir { mode } => w.entry(name, 0o040000 | mode, 2, &[])?,
                Entry::Symlink { target } => w.entry(name, 0o120000 | 0o777, 1, target.as_bytes())?,
                Entry::File { source: Source::Bytes(b), mode } => w.entry(name, 0o100000 | mode, 1, b)?,
                Entry::File { source: Source::Host(p), mode } => w.host_file(name, 0o100000 | mode, p)?,
            }
        }
        w.entry("TRAILER!!!", 0, 1, &[])
    }
}

fn normalize(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.starts_with('/') { trimmed.to_owned() } else { format!("/{trimmed}") }
}

struct Writer<'a, W: Write> {
    out: &'a mut W,
    ino: u32,
}

impl<W: Write> Writer<'_, W> {
    fn header(&mut self, name: &str, mode: u32, nlink: u32, size: u64) -> io::Result<()> {
        let size = u32::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: newc files are < 4 GiB")))?;
        let name_size = name.len() as u32 + 1;
        let fields = [self.ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, name_size, 0];
        self.ino += 1;
        let mut head = String::from("070701");
        for f in fields {
            head.push_str(&format!("{f:08x}"));
        }
        self.out.write_all(head.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + u64::from(name_size))
    }

    fn pad(&mut self, written: u64) -> io::Result<()> {
        let pad = (4 - written % 4) % 4;
        self.out.write_all(&[0; 3][..pad as usize])
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, data: &[u8]) -> io::Result<()> {
        self.header(name, mode, nlink, data.len() as u64)?;
        self.out.write_all(data)?;
        self.pad(data.len() as u64)
    }

    fn host_file(&mut self, name: &str, mode: u32, path: &Path) -> io::Result<()> {
        let context = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let mut file = File::open(path).map_err(context)?;
        let size = file.metadata().map_err(context)?.len();
        self.header(name, mode, 1, size)?;
        let copied = io::copy(&mut file, self.out).map_err(context)?;
        if copied != size {
            return Err(context(io::Error::other(format!("changed size while archived ({size} -> {copied})"))));
        }
        self.pad(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, mode, data) of every entry, parsed back.
    fn parse(mut bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let field =
            |h: &[u8], i: usize| u32::from_str_radix(std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap(), 16);
        loop {
            assert_eq!(&bytes[..6], b"070701");
            let (mode, size, name_size) =
                (field(bytes, 1).unwrap(), field(bytes, 6).unwrap(), field(bytes, 11).unwrap());
            let name = String::from_utf8(bytes[110..110 + name_size as usize - 1].to_vec()).unwrap();
            let data_at = (110 + name_size as usize).div_ceil(4) * 4;
            let data = bytes[data_at..data_at + size as usize].to_vec();
            bytes = &bytes[(data_at + size as usize).div_ceil(4) * 4..];
            if name == "TRAILER!!!" {
                assert!(bytes.is_empty());
                return out;
            }
            out.push((name, mode, data));
        }
    }

    #[test]
    fn entries_come_after_their_parent_directories_and_are_padded() {
        let mut a = Archive::new();
        a.file("/usr/bin/tool", Source::Bytes(b"abcde".to_vec()), 0o755).symlink("/bin", "usr/bin").dir("/tmp", 0o1777);
        let mut bytes = Vec::new();
        a.write_to(&mut bytes).unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let entries = parse(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["bin", "tmp", "usr", "usr/bin", "usr/bin/tool"]);
        assert_eq!(entries[0], ("bin".into(), 0o120777, b"usr/bin".to_vec()));
        assert_eq!(entries[1].1, 0o041777);
        assert_eq!(entries[4], ("usr/bin/tool".into(), 0o100755, b"abcde".to_vec()));
    }
}
