//! What a VM is made of: [`VmSpec`].

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::vm::Vm;
use crate::vm::cpio::Source;
use crate::vm::image::Contents;
use crate::vm::net::{MAX_ADDRESSES, MAX_NICS};

/// A VM to boot: memory, CPUs, NICs, inner paths, what goes into its
/// initramfs beyond the base image, and its deadlines.
///
/// ```no_run
/// use std::time::Duration;
/// use mpio_testbed::vm::VmSpec;
/// let vm = VmSpec::new()
///     .nic(2)                      // nic0: two guest addresses (two portals, one link)
///     .nic(1)                      // nic1: a second link
///     .host_program("fio")         // the host's fio with its libraries
///     .binary("target/debug/mpio", "/usr/bin/mpio")
///     .module("dm_multipath")      // beyond vm::image::BASE_MODULES
///     .boot()?;
/// # Ok::<(), mpio_testbed::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub(crate) memory_mib: u32,
    pub(crate) cpus: u32,
    pub(crate) nics: Vec<u8>,
    pub(crate) inner_paths: u8,
    pub(crate) contents: Contents,
    pub(crate) boot_timeout: Duration,
    pub(crate) hang_grace: Duration,
    pub(crate) kernel_args: Vec<String>,
}

impl Default for VmSpec {
    fn default() -> VmSpec {
        VmSpec::new()
    }
}

impl VmSpec {
    /// 1 GiB, 2 CPUs, no NICs, the base image; boot deadline 180 s, hang
    /// grace 30 s.
    pub fn new() -> VmSpec {
        VmSpec {
            memory_mib: 1024,
            cpus: 2,
            nics: Vec::new(),
            inner_paths: 0,
            contents: Contents::default(),
            boot_timeout: Duration::from_secs(180),
            hang_grace: Duration::from_secs(30),
            kernel_args: Vec::new(),
        }
    }

    /// Guest memory in MiB (the initramfs lives in it, and tmpfs files).
    pub fn memory_mib(mut self, mib: u32) -> VmSpec {
        self.memory_mib = mib;
        self
    }

    /// Virtual CPUs (TCG runs one host thread per vCPU).
    pub fn cpus(mut self, n: u32) -> VmSpec {
        self.cpus = n;
        self
    }

    /// Adds a NIC (a TAP device to the host) with `addresses` guest
    /// addresses on it (see [`super::net`]).
    pub fn nic(mut self, addresses: u8) -> VmSpec {
        self.nics.push(addresses);
        self
    }

    /// Builds `n` veth paths between the guest's root namespace (target
    /// side) and [`super::net::INNER_NETNS`] (initiator side).
    pub fn inner_paths(mut self, n: u8) -> VmSpec {
        self.inner_paths = n;
        self
    }

    /// A kernel module beyond [`super::image::BASE_MODULES`], loaded at
    /// boot after its dependencies (`dm_multipath`, `iscsi_tcp`, `sd_mod`).
    pub fn module(mut self, name: &str) -> VmSpec {
        self.contents.modules.push(name.to_owned());
        self
    }

    /// A host program (a name looked up in the system directories, or a
    /// path) with its shared libraries, at the same path in the guest, in
    /// a cached layer of its own: `fio`, `iscsi-inq`.
    pub fn host_program(mut self, name: &str) -> VmSpec {
        self.contents.programs.push(name.to_owned());
        self
    }

    /// A binary (e.g. the mpio binary of this build) at `guest_path`, with
    /// its shared libraries (`ldd`); read at boot, not cached.
    pub fn binary(mut self, host_path: impl Into<PathBuf>, guest_path: &str) -> VmSpec {
        self.contents.binaries.push((host_path.into(), guest_path.to_owned()));
        self
    }

    /// A host file at `guest_path` (mode 0644, or 0755 if the host file is
    /// executable by its owner).
    pub fn file(mut self, host_path: impl Into<PathBuf>, guest_path: &str) -> VmSpec {
        let host: PathBuf = host_path.into();
        let executable = std::fs::metadata(&host).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.permissions().mode() & 0o100 != 0
        });
        self.contents.files.push((guest_path.to_owned(), Source::Host(host), if executable { 0o755 } else { 0o644 }));
        self
    }

    /// A file with these bytes at `guest_path`.
    pub fn bytes(mut self, guest_path: &str, data: impl Into<Vec<u8>>, mode: u32) -> VmSpec {
        self.contents.files.push((guest_path.to_owned(), Source::Bytes(data.into()), mode));
        self
    }

    /// A word for the kernel command line (`loglevel=7`, ...).
    pub fn kernel_arg(mut self, arg: &str) -> VmSpec {
        self.kernel_args.push(arg.to_owned());
        self
    }

    /// Upper bound from starting qemu to the agent's hello (default 180 s;
    /// a healthy boot takes about 5 s). The VM is killed when it passes.
    pub fn boot_timeout(mut self, timeout: Duration) -> VmSpec {
        self.boot_timeout = timeout;
        self
    }

    /// How long the agent may take to confirm a kill or answer a ping, and
    /// a write to it may block, before the guest counts as hung and is
    /// killed (default 30 s).
    pub fn hang_grace(mut self, grace: Duration) -> VmSpec {
        self.hang_grace = grace;
        self
    }

    /// Boots the VM; see [`Vm::boot`].
    pub fn boot(self) -> Result<Vm> {
        Vm::boot(self)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Environment(format!("VmSpec: {what}")));
        if self.nics.len() > MAX_NICS {
            return bad(format!("{} NICs, at most {MAX_NICS}", self.nics.len()));
        }
        if let Some(n) = self.nics.iter().find(|n| **n == 0 || **n > MAX_ADDRESSES) {
            return bad(format!("a NIC with {n} addresses, need 1..={MAX_ADDRESSES}"));
        }
        if self.memory_mib < 256 || self.cpus == 0 {
            return bad(format!("{} MiB and {} CPUs, need at least 256 MiB and 1 CPU", self.memory_mib, self.cpus));
        }
        if self.inner_paths > 64 {
            return bad(format!("{} inner paths, at most 64", self.inner_paths));
        }
        Ok(())
    }
}
