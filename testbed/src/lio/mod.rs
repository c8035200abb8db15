//! The Linux kernel's iSCSI target (LIO) in a test VM, configured through
//! configfs (no targetcli), as a typed builder in the style of
//! [`crate::tgtd`]: targets with TPGs, portals, LUs (fileio on tmpfs,
//! iblock on a loop device for LUs that grow, rd_mcp null), serials or none, write cache and FUA emulation, demo mode
//! or explicit ACLs, CHAP one-way and mutual, discovery CHAP, iSCSI
//! parameters, ALUA port groups; and fault levers at run time.
//!
//! ```no_run
//! use mpio_testbed::lio::{Lio, LunSpec, TargetSpec, TpgSpec};
//! use mpio_testbed::vm::VmSpec;
//!
//! let vm = VmSpec::new().nic(1).nic(1).boot()?;
//! let lio = Lio::builder()
//!     .target(TargetSpec::new("disk1").tpg(
//!         TpgSpec::new()
//!             .portal(vm.portal(0, 0, 3260))
//!             .portal(vm.portal(1, 0, 3260))
//!             .lun(LunSpec::fileio(64 << 20).no_serial())   // LIO's defaults: write cache off
//!             .max_connections(4)
//!             .error_recovery_level(2),
//!     ))
//!     .start(&vm)?;
//! let portals = lio.portals(1, 1);       // give these to mpio
//! let iqn = lio.iqn(1);                  // iqn.2026-11.test.mpio:disk1
//! lio.remove_portal(1, 1, portals[1])?;  // path 2 refuses connections
//! lio.add_portal(1, 1, portals[1])?;
//! # Ok::<(), mpio_testbed::Error>(())
//! ```
//!
//! Numbering: targets are 1, 2, ... in builder order (as tgtd's tids);
//! TPGs carry their tag (`tpgt_1`, 1, 2, ... in order); **LUNs start at 0**
//! as LIO's do (tgtd's LUN 0 is its controller LU, LIO has none).
//!
//! Sharing a VM: names of backstores and backing files are unique per VM
//! ([`crate::vm::Vm::unique`]); target names are the test's, so tests
//! that share a VM give their targets different names. Portals may be
//! shared (LIO serves several TPGs on one address:port), but a fault on a
//! portal (connection reset, blackhole) then hits every target on it: use
//! a port of your own for faults. Discovery CHAP is global to LIO.
//! Dropping a [`Lio`] removes everything it made.
//!
//! # What LIO (kernel 6.12) does, and how it differs from tgtd
//!
//! Seen here through `testbed/tests/vm.rs` with libiscsi and mpio's own
//! initiator, and through `tests/tests/lio`, which runs the scenarios
//! tgtd runs on the host (`mpio_tests::session`, `mpio_tests::mp`) against
//! LIO; the points marked *(tested)* are asserted there, so a different
//! kernel shows up in those tests first.
//!
//! * **LU identity** *(tested)*: with `wwn/vpd_unit_serial` set, VPD 0x83
//!   has an NAA designator and a T10 vendor ID designator `LIO-ORG
//!   FILEIO:<serial>`, and VPD 0x80 the serial. Without a serial (configfs
//!   sets none; targetcli does), VPD 0x80 is empty and the only LU
//!   designator is T10 `LIO-ORG` with an empty vendor-specific part: every
//!   such LU of every LIO looks the same. tgtd gives every LU a serial.
//!   0x83 also names the target (SCSI name string, association target
//!   device), the target port (`<iqn>,t,0x0001`), a relative target port
//!   and a target port group, for every LU.
//! * **Portals** *(tested)*: SendTargets answers with every portal of the
//!   TPG (`TargetAddress=a:p,1` each); tgtd only with the one asked.
//!   libiscsi's `iscsi-ls` prints one of them per target (the last) and
//!   lists LUNs through it. `rmdir np/<addr:port>` makes new connections
//!   to it fail at once (refused, not silent); `mkdir` listens again.
//! * **Login refusals** *(tested)*: an unknown target name is answered
//!   with status 0x0301 (service unavailable, a "retry later" class), not
//!   tgtd's 0x0203; so is a login to a disabled TPG. With CHAP required
//!   and none offered LIO closes the connection without a login response
//!   (tgtd answers, and the initiator can say CHAP is required); the same
//!   for a discovery session while discovery CHAP is enforced. A wrong
//!   secret gets 0x0201 (discovery too); an initiator outside the ACL
//!   gets 0x0202. One-way and mutual CHAP, and discovery CHAP, work as
//!   configured here; credentials written with `echo` keep their newline
//!   and then fail (hence `printf %s`, research notes).
//! * **Digests** *(tested)*: `HeaderDigest` and `DataDigest` default to
//!   `CRC32C,None`. A digest one side requires and the other does not
//!   offer is refused by LIO itself, in both directions, with a bare
//!   0x0200 (initiator error); only its kernel log names the key
//!   (`Proposer's value list "None" contains no valid values from
//!   Acceptor's value list "CRC32C"`). tgtd answers with its own value
//!   instead (so the initiator refuses, naming the key), and tgtd set to
//!   `CRC32C` still accepts an initiator that offers only `None`. CRC32C
//!   both ways carries transfers of 512 B to 3 MiB without a digest error.
//!   A Data-Out with a wrong data digest at ERL 0 closes the session
//!   ("Unable to recover from DataOUT CRC failure while ERL=0, closing
//!   session"; seen with a digest broken on purpose in mpio).
//! * **Data transfer** *(tested)*: 256 MiB in transfers of 512 B to 4 MiB,
//!   8 in flight, with `InitialR2T=No ImmediateData=Yes`, and 32 MiB with
//!   `InitialR2T=Yes ImmediateData=No MaxRecvDataSegmentLength=65536`,
//!   read back and compared with the backing file (about 21 s for the
//!   256 MiB under TCG here).
//! * **MC/S** *(tested)*: with `MaxConnections 4`, four connections over
//!   four portals form one session (`dynamic_sessions` lists the
//!   initiator once; its text ends in a NUL, which [`Lio::sessions`]
//!   drops). When one connection is reset, LIO honours the Logout that
//!   closes it (reason "close the connection" with the lost CID, sent on
//!   another connection, RFC 7143 section 11.14): the
//!   session lives on and is never reinstated, the tasks are sent again
//!   on the other connections. tgtd closes every connection of the
//!   session instead, so there the session is reinstated once. LIO
//!   delivers commands in CmdSN order: a CmdSN lost with the connection
//!   and never sent again holds every later command (seen as writes that
//!   time out and are aborted, LIO logging "ABORT_TASK: Found referenced
//!   iSCSI task_tag" for each; the ignored test
//!   `mcs_connection_reset_mid_io_loses_nothing` in `tests/tests/lio`).
//! * **Faults under I/O** *(tested)*: a connection reset (`ss -K`, RST) is
//!   seen at once; a blackhole (host iptables on the TAP) only by the
//!   NOP-Out keepalive (LIO answers NOP-Outs, so a silent link is the only
//!   cause), within what `mpio timers explain` says. A removed portal
//!   (`rmdir np/...`) keeps the sessions that came in through it (the
//!   tests reset them) and refuses new connections at once.
//! * **TPG disable** *(tested)*: LIO closes the session's connections
//!   without any asynchronous message (no Logout Request, no Drop
//!   Connection): an idle one with a FIN, one with commands in flight
//!   with a RST ("connection reset by peer"). A disabled TPG refuses
//!   logins with 0x0301 (the kernel logs "Unable to locate Target Portal
//!   Group"); enabled again, the initiator's reinstatement login works
//!   and a read that waited completes. This is LIO's "target offline":
//!   unlike tgtd's `state offline`, which drops commands silently and
//!   still answers NOP-Outs, it is seen at once. To exercise async
//!   messages, LIO's TPG disable is not the lever.
//! * **Task management** *(tested)*: LOGICAL UNIT RESET completes (then a
//!   UNIT ATTENTION); ABORT TASK SET is answered "function not supported"
//!   (5) and TARGET WARM RESET "function rejected" (255; the kernel logs
//!   "TMR Opcode TARGET_WARM_RESET authorization failed for Initiator
//!   Node", an ACL attribute decides). tgtd does ABORT TASK SET and
//!   answers "not supported" to TARGET WARM RESET. ABORT TASK of a
//!   command LIO holds is not tried: no lever here holds a command while
//!   leaving the abort's way open (tgtd's `state offline` does).
//! * **Write cache / FUA** *(tested)*: a fileio LU made through configfs has
//!   `emulate_write_cache = 0` and `emulate_fua_write = 1`; MODE SENSE then
//!   says WCE = 0 and DPOFUA = 0, and (research notes) a WRITE with FUA is
//!   rejected ("Got CDB: 0x8a with FUA bit set, but device does not
//!   advertise support for FUA write"; ILLEGAL REQUEST, INVALID FIELD IN
//!   CDB). With [`LunSpec::write_cache`] both WCE and DPOFUA are 1. tgtd
//!   accepts FUA always.
//! * **ALUA** *(tested)*: a LU exported through two TPGs in two port groups
//!   reports both in REPORT TARGET PORT GROUPS with their states; the
//!   default group (id 0) is not reported once it has no ports. Through a
//!   standby port TEST UNIT READY fails with NOT READY 04/0B, so
//!   libiscsi's tools (which send TEST UNIT READY after login) cannot log
//!   in there. After a state change the initiator's next command gets
//!   UNIT ATTENTION 2A/06 (LIO keeps a demo-mode ACL, and its pending UNIT
//!   ATTENTIONs, across sessions: `cache_dynamic_acls = 1`, as targetcli).
//! * The first commands of a new initiator on a freshly made target may get
//!   UNIT ATTENTION 3F/0E (REPORTED LUNS DATA HAS CHANGED); seen with
//!   `iscsi-ls`, not pinned by a test.
//! * **Block sizes**: `attrib/block_size` (512 or 4096) is written after
//!   `enable` and before the LU is linked into a TPG; READ CAPACITY
//!   reports it *(tested for rd_mcp)*.
//! * rd_mcp (`rd_nullio=1`) is part of target_core_mod: reads return zeros,
//!   writes are discarded; its size is `rd_pages` of 4 KiB.
//! * SPC-3 persistent reservations are on by default (`attrib/emulate_pr
//!   = 1`; the holder shows in `pr/res_holder`, see [`Lio::pr_holder`]).
//!   Every PERSISTENT RESERVE OUT REGISTER writes APTPL metadata under
//!   `/etc/target/pr` (also without APTPL) and fails with NOT READY,
//!   LOGICAL UNIT COMMUNICATION FAILURE (08/00) if the directory is
//!   missing; the builder makes it *(tested: the reservation scenario in
//!   `tests/tests/lio`)*.
//! * **ErrorRecoveryLevel** *(tested: `tests/tests/lio/proxy.rs`)*: the
//!   TPG parameter alone does nothing; at login LIO sets the session's
//!   value from the node ACL's `default_erl` (the TPG's `attrib/default_erl`
//!   in demo mode), so [`TpgSpec::error_recovery_level`] sets both. At ERL
//!   1 LIO answers a Data SNACK (RunLength 0) by sending the task's Data-In
//!   again from BegRun, the last with the status; it
//!   answers a Data-Out with a bad data digest with a Reject (data digest
//!   error) and then a recovery R2T for the data, and a command whose
//!   immediate data is bad with a Reject, waiting for the retry. At ERL 0
//!   it drops the connection for either.
//! * **Capacity changes** *(tested: `mpio/tests/guest/resize.rs`)*: an
//!   iblock LU ([`LunSpec::block_file`]) answers READ CAPACITY with its
//!   block device's size at that moment, so `truncate` + `losetup -c`
//!   ([`Lio::resize`]) grows it live; a fileio LU keeps the `fd_dev_size`
//!   it was made with. LIO sends no UNIT ATTENTION 2A/09 (CAPACITY DATA
//!   HAS CHANGED) when it grows: an initiator learns of it only by asking
//!   again (a rescan, or a new login).
//! * The kernel logs "Unable to load target_core_pscsi / _user" when LIO
//!   starts: it asks for backstore modules the guest does not have;
//!   harmless.

mod configfs;

use std::net::SocketAddr;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::tgtd::IQN_PREFIX;
use crate::vm::Vm;
use configfs::{Credentials, Plan, PlannedAcl, PlannedLun, PlannedTarget, PlannedTpg, Store, StoreKind};

pub use configfs::{BACKING_DIR, TARGET as CONFIGFS_ROOT};

/// ALUA access states (SPC-4 6.37, `alua_access_state` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AluaState {
    /// Active/optimized (0).
    ActiveOptimized,
    /// Active/non-optimized (1).
    ActiveNonOptimized,
    /// Standby (2): only a few commands (INQUIRY, REPORT TPGS, ...) succeed.
    Standby,
    /// Unavailable (3).
    Unavailable,
    /// Offline (0xe).
    Offline,
}

impl AluaState {
    fn code(self) -> u8 {
        match self {
            AluaState::ActiveOptimized => 0,
            AluaState::ActiveNonOptimized => 1,
            AluaState::Standby => 2,
            AluaState::Unavailable => 3,
            AluaState::Offline => 0xe,
        }
    }
}

/// An ALUA target port group of a LU: the TPG's LUN joins it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AluaGroup {
    name: String,
    id: u16,
    state: AluaState,
}

impl AluaGroup {
    /// Group `name` with target port group id `id` (1..) in `state`.
    pub fn new(name: &str, id: u16, state: AluaState) -> AluaGroup {
        AluaGroup { name: name.to_owned(), id, state }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Backing {
    /// A new backstore of this kind and size.
    New {
        kind: StoreKind,
        size: u64,
    },
    SameAs {
        target: usize,
        tag: u16,
        lun: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Serial {
    Auto,
    Given(String),
    None,
}

/// A logical unit of a TPG (LUN 0, 1, ... in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunSpec {
    backing: Backing,
    block_size: Option<u32>,
    serial: Serial,
    attribs: Vec<(String, String)>,
    alua: Option<AluaGroup>,
    dir: Option<String>,
}

impl LunSpec {
    fn with(backing: Backing) -> LunSpec {
        LunSpec { backing, block_size: None, serial: Serial::Auto, attribs: Vec::new(), alua: None, dir: None }
    }

    /// A fileio LU's backing file in `dir` (made if missing) instead of
    /// [`BACKING_DIR`]: e.g. a small tmpfs of the test's own, to fill up.
    pub fn backing_dir(mut self, dir: &str) -> LunSpec {
        self.dir = Some(dir.to_owned());
        self
    }

    /// A fileio LU on a sparse file of `size` bytes on the guest's tmpfs
    /// (in guest memory: mind the VM's memory size).
    pub fn fileio(size: u64) -> LunSpec {
        LunSpec::with(Backing::New { kind: StoreKind::Fileio, size })
    }

    /// An rd_mcp null LU of `size` bytes: reads return zeros, writes are
    /// dropped (benchmarks).
    pub fn null(size: u64) -> LunSpec {
        LunSpec::with(Backing::New { kind: StoreKind::Null, size })
    }

    /// An iblock LU on a loop device over a sparse file of `size` bytes on
    /// the guest's tmpfs: a block device whose size [`Lio::resize`] can
    /// change while it is exported (iblock reads the device's size at
    /// every READ CAPACITY; fileio on a file keeps the size it was made
    /// with).
    pub fn block_file(size: u64) -> LunSpec {
        LunSpec::with(Backing::New { kind: StoreKind::Loop, size })
    }

    /// The same LU (backstore) as LUN `lun` of TPG `tag` of target
    /// `target`, made earlier by the same builder: one identity through
    /// two TPGs or targets (give it an ALUA group of its own here).
    pub fn same_as(target: usize, tag: u16, lun: u32) -> LunSpec {
        LunSpec::with(Backing::SameAs { target, tag, lun })
    }

    /// Logical block size, 512 (default) or 4096.
    pub fn block_size(mut self, bytes: u32) -> LunSpec {
        self.block_size = Some(bytes);
        self
    }

    /// No `wwn/vpd_unit_serial` (what a bare configfs setup gives): the LU
    /// has no unique designator, see the module docs. By default the
    /// builder sets a serial unique on the host, `<vm name>-lu<n>`.
    pub fn no_serial(mut self) -> LunSpec {
        self.serial = Serial::None;
        self
    }

    /// This unit serial number (VPD 0x80; NAA in 0x83 derives from it).
    pub fn serial(mut self, serial: &str) -> LunSpec {
        self.serial = Serial::Given(serial.to_owned());
        self
    }

    /// `emulate_write_cache` (default 0: write-through, DPOFUA = 0). With
    /// `true`, WCE = 1 and, with FUA emulation on (LIO's default), DPOFUA = 1.
    pub fn write_cache(self, on: bool) -> LunSpec {
        self.attrib("emulate_write_cache", u8::from(on))
    }

    /// `emulate_fua_write` (LIO's default 1; only advertised with the write
    /// cache on).
    pub fn fua_write(self, on: bool) -> LunSpec {
        self.attrib("emulate_fua_write", u8::from(on))
    }

    /// UNMAP and WRITE SAME with UNMAP (`emulate_tpu`, `emulate_tpws`):
    /// fileio punches holes in its file.
    pub fn thin_provisioning(self) -> LunSpec {
        self.attrib("emulate_tpu", 1).attrib("emulate_tpws", 1)
    }

    /// Any device attribute (`attrib/<key>`), e.g. `is_nonrot`, `emulate_pr`.
    pub fn attrib(mut self, key: &str, value: impl ToString) -> LunSpec {
        self.attribs.push((key.to_owned(), value.to_string()));
        self
    }

    /// Puts this TPG's LUN into ALUA port group `group` of the LU.
    pub fn alua_group(mut self, group: AluaGroup) -> LunSpec {
        self.alua = Some(group);
        self
    }
}

/// An ACL entry: an initiator allowed in, with all LUNs of the TPG mapped
/// at their own numbers, optionally with its own CHAP credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclSpec {
    initiator: String,
    auth: Option<Credentials>,
}

impl AclSpec {
    /// Allows initiator `iqn`.
    pub fn new(iqn: &str) -> AclSpec {
        AclSpec { initiator: iqn.to_owned(), auth: None }
    }

    /// One-way CHAP for this initiator (the TPG then requires CHAP).
    pub fn chap(mut self, user: &str, secret: &str) -> AclSpec {
        self.auth = Some(credentials(user, secret, self.auth.and_then(|a| a.mutual)));
        self
    }

    /// Mutual CHAP: the target answers as `user`/`secret`; needs [`Self::chap`].
    pub fn mutual_chap(mut self, user: &str, secret: &str) -> AclSpec {
        let auth = self.auth.get_or_insert_with(|| credentials("", "", None));
        auth.mutual = Some((user.to_owned(), secret.to_owned()));
        self
    }
}

fn credentials(user: &str, secret: &str, mutual: Option<(String, String)>) -> Credentials {
    Credentials { user: user.to_owned(), secret: secret.to_owned(), mutual }
}

/// A target portal group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpgSpec {
    portals: Vec<SocketAddr>,
    luns: Vec<LunSpec>,
    acls: Vec<AclSpec>,
    auth: Option<Credentials>,
    params: Vec<(String, String)>,
    attribs: Vec<(String, String)>,
    enabled: bool,
}

impl Default for TpgSpec {
    fn default() -> TpgSpec {
        TpgSpec::new()
    }
}

impl TpgSpec {
    /// An enabled TPG in demo mode (`generate_node_acls = 1`: every
    /// initiator gets every LUN, writable), no CHAP, no portals yet.
    pub fn new() -> TpgSpec {
        TpgSpec {
            portals: Vec::new(),
            luns: Vec::new(),
            acls: Vec::new(),
            auth: None,
            params: Vec::new(),
            attribs: Vec::new(),
            enabled: true,
        }
    }

    /// A portal (`np/<addr:port>`): a guest address, e.g. [`Vm::portal`].
    pub fn portal(mut self, addr: SocketAddr) -> TpgSpec {
        self.portals.push(addr);
        self
    }

    /// The next LU (LUN 0, 1, ...).
    pub fn lun(mut self, lun: LunSpec) -> TpgSpec {
        self.luns.push(lun);
        self
    }

    /// An explicit ACL; with any, demo mode is off and only the listed
    /// initiators get in.
    pub fn acl(mut self, acl: AclSpec) -> TpgSpec {
        self.acls.push(acl);
        self
    }

    /// Demo-mode CHAP (TPG `auth/`): every initiator must authenticate as
    /// `user`/`secret`. For explicit ACLs use [`AclSpec::chap`].
    pub fn chap(mut self, user: &str, secret: &str) -> TpgSpec {
        self.auth = Some(credentials(user, secret, self.auth.and_then(|a| a.mutual)));
        self
    }

    /// Demo-mode mutual CHAP: the target answers as `user`/`secret`.
    pub fn mutual_chap(mut self, user: &str, secret: &str) -> TpgSpec {
        let auth = self.auth.get_or_insert_with(|| credentials("", "", None));
        auth.mutual = Some((user.to_owned(), secret.to_owned()));
        self
    }

    /// An iSCSI parameter (`param/<key>`): `MaxConnections`,
    /// `ErrorRecoveryLevel`, `HeaderDigest`, `DataDigest`, `InitialR2T`,
    /// `ImmediateData`, `MaxRecvDataSegmentLength`, `MaxBurstLength`,
    /// `FirstBurstLength`, `DefaultTime2Wait`, `DefaultTime2Retain`, ...
    pub fn param(mut self, key: &str, value: impl ToString) -> TpgSpec {
        self.params.push((key.to_owned(), value.to_string()));
        self
    }

    /// `MaxConnections` (MC/S; LIO enforces it).
    pub fn max_connections(self, n: u32) -> TpgSpec {
        self.param("MaxConnections", n)
    }

    /// `ErrorRecoveryLevel` (0..=2): the parameter, and the node ACLs'
    /// `default_erl` (`attrib/default_erl` of the TPG for demo mode, of each
    /// ACL otherwise), without which LIO answers 0 whatever the parameter
    /// says: at login it sets the session's value from the ACL's.
    pub fn error_recovery_level(self, n: u8) -> TpgSpec {
        self.param("ErrorRecoveryLevel", n).attrib("default_erl", n)
    }

    /// Both digests: `"CRC32C"` (required), `"CRC32C,None"`, `"None"`.
    pub fn digests(self, value: &str) -> TpgSpec {
        self.param("HeaderDigest", value).param("DataDigest", value)
    }

    /// A TPG attribute (`attrib/<key>`): `login_timeout`,
    /// `default_cmdsn_depth`, `tpg_enabled_sendtargets`, ...
    pub fn attrib(mut self, key: &str, value: impl ToString) -> TpgSpec {
        self.attribs.push((key.to_owned(), value.to_string()));
        self
    }

    /// Leaves the TPG disabled (enable it with [`Lio::set_enabled`]).
    pub fn disabled(mut self) -> TpgSpec {
        self.enabled = false;
        self
    }
}

/// A target (an IQN) with its TPGs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    iqn: String,
    tpgs: Vec<TpgSpec>,
}

impl TargetSpec {
    /// A target named `name`: an IQN as is if it starts with `iqn.`,
    /// otherwise [`IQN_PREFIX`] + `name` (as [`crate::tgtd::TargetSpec`]).
    pub fn new(name: &str) -> TargetSpec {
        let iqn = if name.starts_with("iqn.") { name.to_owned() } else { format!("{IQN_PREFIX}{name}") };
        TargetSpec { iqn, tpgs: Vec::new() }
    }

    /// Adds the next TPG (tags 1, 2, ...).
    pub fn tpg(mut self, tpg: TpgSpec) -> TargetSpec {
        self.tpgs.push(tpg);
        self
    }
}

/// Builder of a [`Lio`]; see [`Lio::builder`].
#[derive(Debug, Clone, Default)]
pub struct LioBuilder {
    targets: Vec<TargetSpec>,
    discovery: Option<Credentials>,
}

impl LioBuilder {
    /// Adds a target (1, 2, ...).
    pub fn target(mut self, target: TargetSpec) -> LioBuilder {
        self.targets.push(target);
        self
    }

    /// Discovery CHAP (`discovery_auth/`, global to the guest's LIO):
    /// SendTargets sessions must authenticate as `user`/`secret`.
    pub fn discovery_chap(mut self, user: &str, secret: &str) -> LioBuilder {
        self.discovery = Some(credentials(user, secret, self.discovery.and_then(|d| d.mutual)));
        self
    }

    /// Mutual discovery CHAP; needs [`Self::discovery_chap`].
    pub fn discovery_mutual_chap(mut self, user: &str, secret: &str) -> LioBuilder {
        let d = self.discovery.get_or_insert_with(|| credentials("", "", None));
        d.mutual = Some((user.to_owned(), secret.to_owned()));
        self
    }

    /// Creates everything in the guest, in one script.
    pub fn start(self, vm: &Vm) -> Result<Lio<'_>> {
        let plan = self.plan(vm)?;
        let lio = Lio { vm, plan: Mutex::new(plan), stopped: false };
        let script = configfs::create_script(&lio.plan());
        if let Err(e) = lio.run_script(&script) {
            drop(lio); // removes what was made
            return Err(e);
        }
        Ok(lio)
    }

    fn plan(&self, vm: &Vm) -> Result<Plan> {
        let mut plan = Plan { discovery: self.discovery.clone(), ..Plan::default() };
        let bad = |what: String| Error::Environment(format!("Lio::builder(): {what}"));
        for (ti, t) in self.targets.iter().enumerate() {
            let mut tpgs: Vec<PlannedTpg> = Vec::new();
            for (tag, tpg) in (1u16..).zip(&t.tpgs) {
                let mut luns = Vec::new();
                for (lun, spec) in (0u32..).zip(&tpg.luns) {
                    let store = match &spec.backing {
                        Backing::SameAs { target, tag: of_tag, lun: of_lun } => {
                            let earlier = if *target == ti + 1 {
                                tpgs.iter().find(|p| p.tag == *of_tag)
                            } else {
                                plan.targets
                                    .get(target.wrapping_sub(1))
                                    .and_then(|p| p.tpgs.iter().find(|p| p.tag == *of_tag))
                            };
                            earlier.and_then(|p| p.luns.iter().find(|l| l.lun == *of_lun)).map(|l| l.store).ok_or_else(
                                || bad(format!("LunSpec::same_as({target}, {of_tag}, {of_lun}): no such earlier LUN")),
                            )?
                        }
                        &Backing::New { kind, size } => {
                            let n = vm.unique();
                            let hba = match kind {
                                StoreKind::Fileio => format!("fileio_{n}"),
                                StoreKind::Loop => format!("iblock_{n}"),
                                StoreKind::Null => format!("rd_mcp_{n}"),
                            };
                            let serial = match &spec.serial {
                                Serial::Auto => Some(format!("{}-lu{n}", vm.name())),
                                Serial::Given(s) => Some(s.clone()),
                                Serial::None => None,
                            };
                            if let Some(bs) = spec.block_size.filter(|b| ![512, 4096].contains(b)) {
                                return Err(bad(format!("block size {bs}: LIO takes 512 or 4096 here")));
                            }
                            plan.stores.push(Store {
                                hba,
                                kind,
                                dir: spec.dir.clone().unwrap_or_else(|| BACKING_DIR.to_owned()),
                                size,
                                block_size: spec.block_size,
                                serial,
                                attribs: spec.attribs.clone(),
                                alua_groups: Vec::new(),
                            });
                            plan.stores.len() - 1
                        }
                    };
                    let alua = spec.alua.as_ref().map(|g| {
                        let groups = &mut plan.stores[store].alua_groups;
                        if !groups.iter().any(|(n, _)| *n == g.name) {
                            groups.push((g.name.clone(), g.id));
                        }
                        (g.name.clone(), g.state.code())
                    });
                    luns.push(PlannedLun { lun, store, alua });
                }
                tpgs.push(PlannedTpg {
                    tag,
                    portals: tpg.portals.clone(),
                    luns,
                    acls: tpg
                        .acls
                        .iter()
                        .map(|a| PlannedAcl { initiator: a.initiator.clone(), auth: a.auth.clone() })
                        .collect(),
                    auth: tpg.auth.clone(),
                    params: tpg.params.clone(),
                    attribs: tpg.attribs.clone(),
                    enabled: tpg.enabled,
                });
            }
            plan.targets.push(PlannedTarget { iqn: t.iqn.clone(), tpgs });
        }
        Ok(plan)
    }
}

/// A LIO configuration in a VM; removed on Drop.
#[derive(Debug)]
pub struct Lio<'vm> {
    vm: &'vm Vm,
    plan: Mutex<Plan>,
    stopped: bool,
}

impl<'vm> Lio<'vm> {
    /// A builder with no targets.
    pub fn builder() -> LioBuilder {
        LioBuilder::default()
    }

    /// The VM it runs in.
    pub fn vm(&self) -> &'vm Vm {
        self.vm
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run_script(&self, script: &str) -> Result<()> {
        self.vm.command(["sh", "-e"]).stdin(script).run_ok().map(drop)
    }

    fn tpg(&self, target: usize, tag: u16) -> Result<(String, PlannedTpg)> {
        let plan = self.plan();
        let t = plan.targets.get(target.wrapping_sub(1));
        let tpg = t.and_then(|t| t.tpgs.iter().find(|p| p.tag == tag));
        match (t, tpg) {
            (Some(t), Some(tpg)) => Ok((t.iqn.clone(), tpg.clone())),
            _ => Err(Error::Environment(format!("LIO has no target {target} with TPG {tag}"))),
        }
    }

    /// IQN of target `target` (1-based). Panics if there is none (a test bug).
    pub fn iqn(&self, target: usize) -> String {
        let plan = self.plan();
        plan.targets.get(target.wrapping_sub(1)).map(|t| t.iqn.clone()).unwrap_or_else(|| panic!("no target {target}"))
    }

    /// The portals TPG `tag` of `target` listens on now.
    pub fn portals(&self, target: usize, tag: u16) -> Vec<SocketAddr> {
        self.tpg(target, tag).map(|(_, t)| t.portals).unwrap_or_default()
    }

    /// The guest path of the backing file of a fileio or block_file LUN.
    pub fn backing_file(&self, target: usize, tag: u16, lun: u32) -> Option<String> {
        let (_, tpg) = self.tpg(target, tag).ok()?;
        let store = tpg.luns.iter().find(|l| l.lun == lun)?.store;
        self.plan().stores[store].file()
    }

    /// Grows or shrinks the LU of a LUN made with [`LunSpec::block_file`]
    /// to `bytes` while it is exported: READ CAPACITY answers the new size
    /// at once. LIO raises no UNIT ATTENTION for it (CAPACITY DATA HAS
    /// CHANGED is only sent by backstores that pass SCSI through), so an
    /// initiator learns of it when it asks.
    pub fn resize(&self, target: usize, tag: u16, lun: u32, bytes: u64) -> Result<()> {
        let (_, tpg) = self.tpg(target, tag)?;
        let l = tpg.luns.iter().find(|l| l.lun == lun).ok_or_else(|| Error::Environment(format!("no LUN {lun}")))?;
        let script = configfs::resize_script(&self.plan().stores[l.store], bytes).ok_or_else(|| {
            Error::Environment(format!("LUN {lun} of TPG {tag} is not a LunSpec::block_file LU: it cannot be resized"))
        })?;
        self.run_script(&script)?;
        self.plan().stores[l.store].size = bytes;
        Ok(())
    }

    /// The unit serial of a LUN (`None`: made with [`LunSpec::no_serial`]).
    pub fn serial(&self, target: usize, tag: u16, lun: u32) -> Option<String> {
        let (_, tpg) = self.tpg(target, tag).ok()?;
        let store = tpg.luns.iter().find(|l| l.lun == lun)?.store;
        self.plan().stores[store].serial.clone()
    }

    /// The configfs directory of TPG `tag` of `target` (to read or poke
    /// what the builder does not cover).
    pub fn tpg_dir(&self, target: usize, tag: u16) -> Result<String> {
        self.tpg(target, tag).map(|(iqn, t)| configfs::tpg_dir(&iqn, t.tag))
    }

    /// Stops listening on `portal` (`rmdir np/...`): new connections to it
    /// are refused; established ones are not touched.
    pub fn remove_portal(&self, target: usize, tag: u16, portal: SocketAddr) -> Result<()> {
        let (iqn, _) = self.tpg(target, tag)?;
        self.vm.command(["rmdir", &configfs::np_dir(&iqn, tag, portal)]).run_ok()?;
        self.edit_tpg(target, tag, |t| t.portals.retain(|p| *p != portal));
        Ok(())
    }

    /// Listens on `portal` (again) (`mkdir np/...`).
    pub fn add_portal(&self, target: usize, tag: u16, portal: SocketAddr) -> Result<()> {
        let (iqn, _) = self.tpg(target, tag)?;
        self.vm.command(["mkdir", &configfs::np_dir(&iqn, tag, portal)]).run_ok()?;
        self.edit_tpg(target, tag, |t| t.portals.push(portal));
        Ok(())
    }

    fn edit_tpg(&self, target: usize, tag: u16, f: impl FnOnce(&mut PlannedTpg)) {
        let mut plan = self.plan();
        if let Some(t) = plan.targets.get_mut(target - 1).and_then(|t| t.tpgs.iter_mut().find(|p| p.tag == tag)) {
            f(t);
        }
    }

    /// Enables or disables TPG `tag` (`enable`). Disabling closes its
    /// sessions and refuses new logins.
    pub fn set_enabled(&self, target: usize, tag: u16, enabled: bool) -> Result<()> {
        let dir = self.tpg_dir(target, tag)?;
        self.vm.sh(&format!("printf %s {} > {}/enable", u8::from(enabled), configfs::quote(&dir))).run_ok().map(drop)
    }

    /// Sets the access state of the ALUA group that LUN `lun` of TPG `tag`
    /// belongs to.
    pub fn set_alua_state(&self, target: usize, tag: u16, lun: u32, state: AluaState) -> Result<()> {
        let (_, tpg) = self.tpg(target, tag)?;
        let l = tpg.luns.iter().find(|l| l.lun == lun).ok_or_else(|| Error::Environment(format!("no LUN {lun}")))?;
        let Some((group, _)) = &l.alua else {
            return Err(Error::Environment(format!("LUN {lun} of TPG {tag} has no ALUA group")));
        };
        let dir = self.plan().stores[l.store].dir();
        let path = configfs::quote(&format!("{dir}/alua/{group}/alua_access_state"));
        self.vm.sh(&format!("printf %s {} > {path}", state.code())).run_ok().map(drop)
    }

    /// Initiator names with a session on TPG `tag` in demo mode
    /// (`dynamic_sessions`, one name a line, the text ending in a NUL).
    pub fn sessions(&self, target: usize, tag: u16) -> Result<Vec<String>> {
        let dir = self.tpg_dir(target, tag)?;
        let text = self.vm.command(["cat", &format!("{dir}/dynamic_sessions")]).run_ok()?;
        Ok(parse_sessions(&text))
    }

    /// `pr/res_holder` of a LUN's device: "No SPC-3 Reservation holder", or
    /// the holder's description.
    pub fn pr_holder(&self, target: usize, tag: u16, lun: u32) -> Result<String> {
        let (_, tpg) = self.tpg(target, tag)?;
        let l = tpg.luns.iter().find(|l| l.lun == lun).ok_or_else(|| Error::Environment(format!("no LUN {lun}")))?;
        let dir = self.plan().stores[l.store].dir();
        Ok(self.vm.command(["cat", &format!("{dir}/pr/res_holder")]).run_ok()?.trim().to_owned())
    }

    /// Removes everything now, reporting errors (Drop only prints them).
    pub fn stop(mut self) -> Result<()> {
        self.stopped = true;
        self.teardown()
    }

    fn teardown(&self) -> Result<()> {
        self.run_script(&configfs::teardown_script(&self.plan()))
    }
}

impl Drop for Lio<'_> {
    fn drop(&mut self) {
        if self.stopped || !self.vm.is_alive() {
            return;
        }
        if let Err(e) = self.teardown() {
            eprintln!("warning: removing the LIO configuration: {e}");
        }
    }
}

fn parse_sessions(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim_matches(|c: char| c == '\0' || c.is_whitespace()))
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_sessions_end_in_a_nul() {
        // As LIO 6.12 prints it (seen with `cat`): the names, then a NUL.
        let text = "iqn.2026-11.test.mpio:initiator\n\0";
        assert_eq!(parse_sessions(text), ["iqn.2026-11.test.mpio:initiator"]);
        assert!(parse_sessions("\0").is_empty());
    }
}
