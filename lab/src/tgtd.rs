//! A private tgtd (Debian `tgt` 1.0.85) per test: its own control port,
//! portals, targets, backing files and log, stopped by pid when dropped.
//!
//! ```no_run
//! use mpio_lab::tgtd::{LunSpec, TargetSpec, Tgtd};
//! let tgtd = Tgtd::builder()
//!     .portals(2) // 127.0.0.1:P and 127.0.0.2:P, P free on both
//!     .target(TargetSpec::new("disk1").lun(LunSpec::file(64 << 20)).max_connections(4))
//!     .start()?;
//! let url = tgtd.url(1, 1, 1); // iscsi://127.0.0.2:P/iqn.2026-11.test.mpio:disk1/1
//! let image = tgtd.backing_file(1, 1); // read it to check what the initiator wrote
//! # Ok::<(), mpio_lab::Error>(())
//! ```
//!
//! # Isolation
//!
//! Each fixture runs `tgtd -f -C N --iscsi portal=127.0.0.1:P` where the
//! control port `N` (a unix socket `/var/run/tgtd/socket.N`) is a slot of
//! [`CONTROL_PORTS`] locked for the fixture's lifetime (see [`crate::slot`]),
//! and `P` is an ephemeral port found free on every portal address by binding
//! to it. The slot file records tgtd's pid, so a tgtd orphaned by a killed
//! test process is killed by the next fixture that takes its slot. tgtd
//! itself refuses an `N` that another tgtd holds ("another tgtd is using
//! /var/run/tgtd/socket.N.lock"); the fixture then moves on to the next `N`.
//! If `P` was taken between probing and binding, tgtd keeps running
//! *without that portal* (it only logs "failed to create/bind to portal"),
//! so the fixture checks `--mode portal --op show` and retries with a new
//! port. Runtime `--mode portal --op new` does fail (`invalid request`) when
//! the address is in use.
//!
//! Stopping: tgtd ignores SIGTERM. Drop sets every target offline and
//! force-deletes it (`--mode target --op delete --force`, which closes the
//! sessions; it fails with "this logical unit is still active" while a
//! command is being executed, hence offline first and a retry), then
//! `--mode system --op delete` (tgtd exits; `invalid request` while targets
//! exist), then SIGKILL if tgtd is still alive after 10 s, and reaps it. If
//! the test is panicking, the tgtd log is printed.
//!
//! # What tgtd 1.0.85 shows and does (verified on this host, 2026-11)
//!
//! * **Sessions and connections**: `--mode conn --op show --tid T` lists
//!   every connection of every session of the target:
//!   `Session: <sid>` / `Connection: <cid>` / `Initiator: <name>` /
//!   `IP Address: <initiator's address>` (parsed into [`ConnectionInfo`]).
//!   `--sid` does not filter it. `--mode target --op show` has an
//!   `I_T nexus: <sid>` entry per session, but it shows only the connection
//!   that created the session (a text frozen at login), so MC/S connections
//!   are only visible with `--mode conn`. **The ISID is never shown**, nor
//!   the portal a connection came in on. `--mode session --op show` is not
//!   implemented (`invalid request`); `--mode session --op stat --tid T
//!   --sid S` gives per-LU and per-connection counters ([`SessionStats`]).
//! * **The sid is the TSIH**, allocated from one counter for the whole tgtd
//!   (all targets). tgtd writes it into the Login Response in host byte
//!   order, so an initiator on x86 sees TSIH `0x0600` for `Session: 6`. It
//!   compares it the same way, so echoing the received TSIH works.
//! * **Portals**: one tgtd serves several portals on different 127/8
//!   addresses with the same port (all in TPG 1). SendTargets answers with
//!   only the portal the discovery session came in on
//!   (`TargetAddress=127.0.0.2:P,1`), never the others.
//! * **`state offline`**: SCSI commands are dropped silently: never answered,
//!   not even after `state ready`; they are still counted in `cmd_pdus`.
//!   NOP-Out is answered (NOP-In), ABORT TASK for a dropped command is
//!   answered with "task does not exist" (response 1), Logout is answered
//!   (response 0) and the connection then closes. A *new* login to an
//!   offline target fails with status class 3 detail 0 (Target Error), so a
//!   libiscsi tool fails at once instead of hanging. After `ready`, new
//!   commands on the old session are answered again.
//! * **`--mode conn --op delete`** closes the TCP connection at once with a
//!   FIN (the initiator reads EOF, no RST); the session goes away with its
//!   last connection. libiscsi then logs in again (a new sid).
//! * **Session reinstatement**: a login with the same initiator name and
//!   ISID and TSIH 0 is accepted as a new session (new sid); tgtd closes every
//!   connection of the old session first (FIN).
//! * **LU `online=0`**: TEST UNIT READY gets
//!   NOT READY (sense 04/01); READ still succeeds.
//! * Null backing store (`--bstype null`): always 1 TiB (1099512 MB),
//!   nothing is stored. `--blocksize` works for file and null LUs. `Size:`
//!   in `--op show` is in decimal MB (16 MiB shows as 17 MB).
//! * LUN 0 of every target is tgt's controller LUN; LUNs made here start at 1.

mod show;

pub use show::{ConnStats, ConnectionInfo, LunStats, LunStatus, NexusInfo, SessionInfo, SessionStats, TargetStatus};

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::cmd;
use crate::error::{Error, Result};
use crate::slot::{self, Slot};
use crate::wait::{wait_for, wait_until};

/// Prefix of the IQNs made by [`TargetSpec::new`].
pub const IQN_PREFIX: &str = "iqn.2026-11.test.mpio:";

/// Initiator name the tests use with libiscsi tools.
pub const INITIATOR_IQN: &str = "iqn.2026-11.test.mpio:init";

/// `iscsi://<portal>/<iqn>/<lun>`: a LU's URL for libiscsi tools.
pub fn iscsi_url(portal: SocketAddr, iqn: &str, lun: u32) -> String {
    format!("iscsi://{portal}/{iqn}/{lun}")
}

/// tgtd control ports (`-C N`) the fixtures use; one slot each.
pub const CONTROL_PORTS: RangeInclusive<u32> = 7000..=7255;

/// Deadline of one `tgtadm` call.
pub const TGTADM_TIMEOUT: Duration = Duration::from_secs(30);

const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 8;
const SLOT_KIND: &str = "tgtd";
const TEMP_PREFIX: &str = "mpio-tgtd-";

/// The backing store of a LU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// A sparse file of this many bytes in the fixture's temp dir.
    File {
        /// Size in bytes.
        size: u64,
    },
    /// `--bstype null`: 1 TiB, nothing is stored.
    Null,
    /// The backing file of an earlier LU: a second controller's view of
    /// one LU (give both the same `scsi_id` and `scsi_sn` so that they
    /// report one identity).
    SameAs {
        /// Target of that LU.
        tid: u32,
        /// Its LUN.
        lun: u32,
    },
}

/// A logical unit to create; LUN numbers are given in order from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunSpec {
    backing: Backing,
    block_size: Option<u32>,
    params: Vec<String>,
}

impl LunSpec {
    /// A LU backed by a sparse file of `size` bytes.
    pub fn file(size: u64) -> LunSpec {
        LunSpec { backing: Backing::File { size }, block_size: None, params: Vec::new() }
    }

    /// A `--bstype null` LU (for benchmarks: no storage cost).
    pub fn null() -> LunSpec {
        LunSpec { backing: Backing::Null, block_size: None, params: Vec::new() }
    }

    /// A LU on the backing file of LU `lun` of target `tid`, made earlier
    /// by the same builder (see [`Backing::SameAs`]).
    pub fn same_as(tid: u32, lun: u32) -> LunSpec {
        LunSpec { backing: Backing::SameAs { tid, lun }, block_size: None, params: Vec::new() }
    }

    /// Logical block size (`--blocksize`, default 512).
    pub fn block_size(mut self, bytes: u32) -> LunSpec {
        self.block_size = Some(bytes);
        self
    }

    /// A LU parameter set after creation with `--params`, e.g.
    /// `thin_provisioning=1`, `scsi_id=ID`, `scsi_sn=SN`, `online=0`,
    /// `readonly=1` (write-protected: the WP bit in MODE SENSE, writes
    /// refused with DATA PROTECT 27/00; [`Tgtd::lun_params`] changes it at
    /// run time, without a UNIT ATTENTION).
    pub fn param(mut self, key_value: &str) -> LunSpec {
        self.params.push(key_value.to_owned());
        self
    }
}

/// A target to create; target ids are given in order from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    iqn: String,
    luns: Vec<LunSpec>,
    params: Vec<(String, String)>,
    initiator_names: Vec<String>,
    incoming: Vec<(String, String)>,
    outgoing: Option<(String, String)>,
}

impl TargetSpec {
    /// A target named `name`: an IQN as is if it starts with `iqn.`,
    /// otherwise [`IQN_PREFIX`] + `name`. Without [`Self::initiator_name`]
    /// it accepts every initiator (`bind --initiator-address ALL`).
    pub fn new(name: &str) -> TargetSpec {
        let iqn = if name.starts_with("iqn.") { name.to_owned() } else { format!("{IQN_PREFIX}{name}") };
        TargetSpec {
            iqn,
            luns: Vec::new(),
            params: Vec::new(),
            initiator_names: Vec::new(),
            incoming: Vec::new(),
            outgoing: None,
        }
    }

    /// Adds the next LU (LUN 1, 2, ...).
    pub fn lun(mut self, lun: LunSpec) -> TargetSpec {
        self.luns.push(lun);
        self
    }

    /// Sets a target parameter (`--op update --name K --value V`). tgtd
    /// knows: `MaxConnections`, `HeaderDigest`, `DataDigest` (`None`,
    /// `CRC32C`, `CRC32C,None`), `MaxRecvDataSegmentLength`,
    /// `MaxXmitDataSegmentLength`, `FirstBurstLength`, `MaxBurstLength`,
    /// `InitialR2T`, `ImmediateData`, `MaxOutstandingR2T`,
    /// `DefaultTime2Wait`, `DefaultTime2Retain`, `ErrorRecoveryLevel`,
    /// `DataPDUInOrder`, `DataSequenceInOrder`, `MaxQueueCmd`, and
    /// `nop_interval` / `nop_count` (target-sent NOP-In pings, 0 = off).
    pub fn param(mut self, key: &str, value: impl ToString) -> TargetSpec {
        self.params.push((key.to_owned(), value.to_string()));
        self
    }

    /// `MaxConnections` (MC/S). tgtd's default is 1 and it does not enforce
    /// it: a second connection is accepted anyway.
    pub fn max_connections(self, n: u32) -> TargetSpec {
        self.param("MaxConnections", n)
    }

    /// Sets both `HeaderDigest` and `DataDigest`, e.g. `"CRC32C"` (required)
    /// or `"CRC32C,None"` (either).
    pub fn digests(self, value: &str) -> TargetSpec {
        self.param("HeaderDigest", value).param("DataDigest", value)
    }

    /// Accepts only this initiator name (`bind --initiator-name`), instead
    /// of every initiator. May be given several times.
    pub fn initiator_name(mut self, name: &str) -> TargetSpec {
        self.initiator_names.push(name.to_owned());
        self
    }

    /// One-way CHAP: the initiator must authenticate as `user`/`secret`
    /// (tgt wants secrets of 12 or more characters for most initiators).
    pub fn chap(mut self, user: &str, secret: &str) -> TargetSpec {
        self.incoming.push((user.to_owned(), secret.to_owned()));
        self
    }

    /// Mutual CHAP: the target answers the initiator's challenge as
    /// `user`/`secret` (`account bind --outgoing`). Needs [`Self::chap`] too.
    pub fn mutual_chap(mut self, user: &str, secret: &str) -> TargetSpec {
        self.outgoing = Some((user.to_owned(), secret.to_owned()));
        self
    }
}

/// Builder of a [`Tgtd`]; see [`Tgtd::builder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TgtdBuilder {
    portals: u8,
    targets: Vec<TargetSpec>,
}

impl TgtdBuilder {
    /// Number of portals (default 1): `127.0.0.1:P` .. `127.0.0.n:P`, one
    /// port `P` on every address. At most 254.
    pub fn portals(mut self, n: u8) -> TgtdBuilder {
        self.portals = n;
        self
    }

    /// Adds a target (tid 1, 2, ...).
    pub fn target(mut self, target: TargetSpec) -> TgtdBuilder {
        self.targets.push(target);
        self
    }

    /// Starts tgtd, waits until its control socket answers, and creates the
    /// portals, targets, LUs, ACLs, parameters and accounts.
    pub fn start(self) -> Result<Tgtd> {
        if self.portals == 0 || self.portals == 255 {
            return Err(Error::Environment(format!("Tgtd::builder().portals({}): need 1..=254", self.portals)));
        }
        let dir = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempdir()
            .map_err(|e| Error::io("cannot create a temp dir for tgtd", e))?;
        let log_path = dir.path().join("tgtd.log");
        let addrs: Vec<Ipv4Addr> = (1..=self.portals).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();

        // Slots of control ports another tgtd holds; kept locked (so that
        // `acquire` skips them) until we are done.
        let mut foreign = Vec::new();
        let mut reason = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut slot = slot::acquire(SLOT_KIND, CONTROL_PORTS, &[])?;
            slot.kill_orphan("tgtd", TEMP_PREFIX)?;
            let n = slot.number();
            let port = free_port(&addrs)?;
            let first = SocketAddr::new(addrs[0].into(), port);
            let mut child = spawn_tgtd(n, first, &log_path)?;
            slot.record_owner("tgtd", child.id(), &["-C", &n.to_string()], dir.path())?;

            if let Err(exit) = wait_ready(&mut child, n) {
                let log = read_log(&log_path);
                if exit.is_some() && log.contains("another tgtd is using") {
                    slot.clear_owner();
                    foreign.push(slot);
                    continue;
                }
                let _ = child.kill();
                let _ = child.wait();
                slot.clear_owner();
                let reason = match exit {
                    Some(status) => format!("tgtd -C {n} exited: {status}"),
                    None => format!("control socket {n} did not answer within {START_TIMEOUT:?}"),
                };
                return Err(Error::TgtdStart { reason, log });
            }
            if let Err(e) = add_portals(n, first, &addrs[1..]) {
                // The port was taken between probing and binding: no
                // targets exist yet, so SIGKILL is a clean stop.
                reason = e.to_string();
                let _ = child.kill();
                let _ = child.wait();
                slot.clear_owner();
                continue;
            }
            let mut tgtd = Tgtd {
                pid: child.id(),
                child: Some(child),
                control_port: n,
                port,
                portals: Mutex::new(addrs.iter().map(|a| SocketAddr::new((*a).into(), port)).collect()),
                targets: Vec::new(),
                log_path,
                dir,
                slot,
            };
            tgtd.targets = tgtd.create_targets(&self.targets)?;
            return Ok(tgtd);
        }
        Err(Error::TgtdStart {
            reason: format!("gave up after {START_ATTEMPTS} attempts; last: {reason}"),
            log: read_log(&log_path),
        })
    }
}

/// A LU made by the fixture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunInfo {
    /// LUN number (1, 2, ...).
    pub lun: u32,
    /// How it is backed.
    pub backing: Backing,
    /// Backing file, for [`Backing::File`].
    pub path: Option<PathBuf>,
    /// Logical block size in bytes.
    pub block_size: u32,
}

/// A target made by the fixture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    /// Target id (1, 2, ...).
    pub tid: u32,
    /// Target IQN.
    pub iqn: String,
    /// Its LUs (LUN 0, the controller, not included).
    pub luns: Vec<LunInfo>,
}

/// Target state set with `--name state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    /// Normal operation.
    Ready,
    /// SCSI commands are dropped without an answer; new logins fail.
    Offline,
}

/// A running tgtd owned by one test; see the [module docs](self).
///
/// All methods take `&self`, so a fixture can be shared between threads
/// (e.g. in an `Arc`).
#[derive(Debug)]
pub struct Tgtd {
    child: Option<Child>,
    pid: u32,
    control_port: u32,
    port: u16,
    portals: Mutex<Vec<SocketAddr>>,
    targets: Vec<TargetInfo>,
    log_path: PathBuf,
    // Dropped after `Drop::drop` stopped tgtd, in this order.
    dir: tempfile::TempDir,
    slot: Slot,
}

impl Tgtd {
    /// A builder with one portal and no targets.
    pub fn builder() -> TgtdBuilder {
        TgtdBuilder { portals: 1, targets: Vec::new() }
    }

    /// tgtd's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The control port `N` (`tgtadm -C N`).
    pub fn control_port(&self) -> u32 {
        self.control_port
    }

    /// The TCP port shared by the portals made by the builder.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Current portals (builder portals plus [`Self::add_portal`] minus
    /// [`Self::remove_portal`]).
    pub fn portals(&self) -> Vec<SocketAddr> {
        self.portals.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Portal `index` of [`Self::portals`]; panics if there is none.
    pub fn portal(&self, index: usize) -> SocketAddr {
        let portals = self.portals();
        *portals.get(index).unwrap_or_else(|| panic!("tgtd has {} portals, no #{index}", portals.len()))
    }

    /// The targets made by the builder.
    pub fn targets(&self) -> &[TargetInfo] {
        &self.targets
    }

    /// Target `tid` made by the builder; panics if there is none.
    pub fn target(&self, tid: u32) -> &TargetInfo {
        self.targets
            .iter()
            .find(|t| t.tid == tid)
            .unwrap_or_else(|| panic!("the fixture made no target with tid {tid}"))
    }

    /// IQN of target `tid`.
    pub fn iqn(&self, tid: u32) -> &str {
        &self.target(tid).iqn
    }

    /// Backing file of `tid`/`lun`, to check data written through an
    /// initiator; panics if that LU is not file-backed.
    pub fn backing_file(&self, tid: u32, lun: u32) -> &Path {
        self.target(tid)
            .luns
            .iter()
            .find(|l| l.lun == lun)
            .and_then(|l| l.path.as_deref())
            .unwrap_or_else(|| panic!("tid {tid} has no file-backed LUN {lun}"))
    }

    /// `iscsi://<portal>/<iqn>/<lun>` for libiscsi tools.
    pub fn url(&self, portal_index: usize, tid: u32, lun: u32) -> String {
        iscsi_url(self.portal(portal_index), self.iqn(tid), lun)
    }

    /// The fixture's temp dir (backing files, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of tgtd's stdout+stderr log.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// tgtd's log so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    /// Runs `tgtadm -C N --lld iscsi <args>` and returns its stdout; errors
    /// carry the command line and tgtadm's stderr.
    pub fn tgtadm(&self, args: &[&str]) -> Result<String> {
        tgtadm(self.control_port, args, TGTADM_TIMEOUT)
    }

    /// Adds a portal (`--mode portal --op new`); fails if the address is in
    /// use. Any 127/8 address works on `lo`.
    pub fn add_portal(&self, addr: SocketAddr) -> Result<()> {
        self.tgtadm(&["--mode", "portal", "--op", "new", "--param", &format!("portal={addr}")])?;
        self.portals.lock().unwrap_or_else(|e| e.into_inner()).push(addr);
        Ok(())
    }

    /// Removes a portal: its listener closes, new logins fail; sessions that
    /// came in through it keep working.
    pub fn remove_portal(&self, addr: SocketAddr) -> Result<()> {
        self.tgtadm(&["--mode", "portal", "--op", "delete", "--param", &format!("portal={addr}")])?;
        self.portals.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| *p != addr);
        Ok(())
    }

    /// Portals as tgtd lists them: `("127.0.0.1:3260", tpgt)`.
    pub fn portal_list(&self) -> Result<Vec<(String, u32)>> {
        show::parse_portals(&self.tgtadm(&["--mode", "portal", "--op", "show"])?)
    }

    /// Creates a CHAP account (accounts are per tgtd, bound per target).
    pub fn add_account(&self, user: &str, secret: &str) -> Result<()> {
        self.tgtadm(&["--mode", "account", "--op", "new", "--user", user, "--password", secret]).map(drop)
    }

    /// Deletes a CHAP account.
    pub fn delete_account(&self, user: &str) -> Result<()> {
        self.tgtadm(&["--mode", "account", "--op", "delete", "--user", user]).map(drop)
    }

    /// Binds an account to target `tid`: incoming (the initiator
    /// authenticates) or, with `outgoing`, the target's own name for mutual
    /// CHAP.
    pub fn bind_account(&self, tid: u32, user: &str, outgoing: bool) -> Result<()> {
        self.account_op("bind", tid, user, outgoing)
    }

    /// Undoes [`Self::bind_account`].
    pub fn unbind_account(&self, tid: u32, user: &str, outgoing: bool) -> Result<()> {
        self.account_op("unbind", tid, user, outgoing)
    }

    fn account_op(&self, op: &str, tid: u32, user: &str, outgoing: bool) -> Result<()> {
        let tid = tid.to_string();
        let mut args = vec!["--mode", "account", "--op", op, "--tid", &tid, "--user", user];
        if outgoing {
            args.push("--outgoing");
        }
        self.tgtadm(&args).map(drop)
    }

    /// Sets a target parameter (see [`TargetSpec::param`]); it applies to
    /// sessions that log in afterwards.
    pub fn set_param(&self, tid: u32, key: &str, value: &str) -> Result<()> {
        self.tgtadm(&["--mode", "target", "--op", "update", "--tid", &tid.to_string(), "--name", key, "--value", value])
            .map(drop)
    }

    /// Target parameters (`--mode target --op show --tid T`).
    pub fn params(&self, tid: u32) -> Result<BTreeMap<String, String>> {
        let text = self.tgtadm(&["--mode", "target", "--op", "show", "--tid", &tid.to_string()])?;
        show::parse_params("tgtadm --mode target --op show --tid", &text)
    }

    /// Sets the target state. While [`TargetState::Offline`], SCSI commands
    /// are silently dropped (for good) and new logins fail; see the module
    /// docs.
    pub fn set_state(&self, tid: u32, state: TargetState) -> Result<()> {
        let value = match state {
            TargetState::Ready => "ready",
            TargetState::Offline => "offline",
        };
        self.set_param(tid, "state", value)
    }

    /// Sets a LU online or offline (`--params online=1|0`): offline, TEST
    /// UNIT READY reports NOT READY.
    pub fn set_lun_online(&self, tid: u32, lun: u32, online: bool) -> Result<()> {
        self.lun_params(tid, lun, if online { "online=1" } else { "online=0" })
    }

    /// `--mode logicalunit --op update --params <params>` (comma-separated
    /// `key=value`).
    pub fn lun_params(&self, tid: u32, lun: u32, params: &str) -> Result<()> {
        self.tgtadm(&[
            "--mode",
            "logicalunit",
            "--op",
            "update",
            "--tid",
            &tid.to_string(),
            "--lun",
            &lun.to_string(),
            "--params",
            params,
        ])
        .map(drop)
    }

    /// Every target as `--mode target --op show` describes it.
    pub fn show(&self) -> Result<Vec<TargetStatus>> {
        show::parse_targets(&self.tgtadm(&["--mode", "target", "--op", "show"])?)
    }

    /// Every connection of target `tid` (`--mode conn --op show`), sorted by
    /// sid and cid.
    pub fn connections(&self, tid: u32) -> Result<Vec<ConnectionInfo>> {
        show::parse_connections(&self.tgtadm(&["--mode", "conn", "--op", "show", "--tid", &tid.to_string()])?)
    }

    /// Sessions of target `tid` with their connections, sorted by sid.
    pub fn sessions(&self, tid: u32) -> Result<Vec<SessionInfo>> {
        Ok(show::group_sessions(&self.connections(tid)?))
    }

    /// Waits until the connections of `tid` satisfy `pred`, e.g.
    /// `|c| c.len() == 2`, and returns them. `what` names the condition
    /// in the timeout error, which also shows the last list seen.
    pub fn wait_connections(
        &self,
        tid: u32,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&[ConnectionInfo]) -> bool,
    ) -> Result<Vec<ConnectionInfo>> {
        let what = format!("tgtd -C {} tid {tid}: {what}", self.control_port);
        Ok(wait_for(&what, timeout, Duration::from_millis(20), || match self.connections(tid) {
            Ok(c) if pred(&c) => Ok(c),
            Ok(c) => Err(format!("{c:?}")),
            Err(e) => Err(e.to_string()),
        })?)
    }

    /// Closes one connection from the target side
    /// (`--mode conn --op delete`): FIN at once, see the module docs.
    pub fn delete_connection(&self, tid: u32, sid: u32, cid: u32) -> Result<()> {
        self.tgtadm(&[
            "--mode",
            "conn",
            "--op",
            "delete",
            "--tid",
            &tid.to_string(),
            "--sid",
            &sid.to_string(),
            "--cid",
            &cid.to_string(),
        ])
        .map(drop)
    }

    /// Counters of session `sid` (`--mode session --op stat`): per LU
    /// (commands and bytes done) and per connection (PDUs and octets), e.g.
    /// to check how a policy spread I/O over paths.
    pub fn session_stats(&self, tid: u32, sid: u32) -> Result<SessionStats> {
        show::parse_session_stats(&self.tgtadm(&[
            "--mode",
            "session",
            "--op",
            "stat",
            "--tid",
            &tid.to_string(),
            "--sid",
            &sid.to_string(),
        ])?)
    }

    /// Stops tgtd now (as Drop does) and returns how it ended: exit status
    /// 0 after a clean `--mode system --op delete`, or the SIGKILL status.
    pub fn stop(mut self) -> Result<ExitStatus> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(Error::Environment("tgtd already stopped".into()));
        };
        let wait = |child: &mut Child| {
            child.try_wait().map_err(|e| Error::io(format!("waiting for tgtd pid {}", self.pid), e))
        };
        if let Some(status) = wait(&mut child)? {
            return Ok(status);
        }
        // Best effort: any failure here ends in SIGKILL below.
        let short = Duration::from_secs(10);
        let mut tids: Vec<u32> = self.targets.iter().map(|t| t.tid).collect();
        if let Ok(shown) = self.show() {
            tids.extend(shown.iter().map(|t| t.tid));
        }
        tids.sort_unstable();
        tids.dedup();
        for tid in tids {
            let tid = tid.to_string();
            // `delete --force` fails ("this logical unit is still active")
            // while commands run; offline stops new ones from starting.
            let offline = ["--mode", "target", "--op", "update", "--tid", &tid];
            let offline = [&offline[..], &["--name", "state", "--value", "offline"]].concat();
            let _ = tgtadm(self.control_port, &offline, short);
            let delete = ["--mode", "target", "--op", "delete", "--force", "--tid", &tid];
            let _ = wait_for("target delete", short, Duration::from_millis(20), || {
                tgtadm(self.control_port, &delete, short)
            });
        }
        let _ = tgtadm(self.control_port, &["--mode", "system", "--op", "delete"], short);
        let exited =
            wait_until("tgtd to exit", STOP_TIMEOUT, Duration::from_millis(10), || wait(&mut child).ok().flatten());
        let status = match exited {
            Ok(status) => status,
            Err(_) => {
                let _ = child.kill();
                child.wait().map_err(|e| Error::io(format!("reaping tgtd pid {}", self.pid), e))?
            }
        };
        self.slot.clear_owner();
        Ok(status)
    }

    fn create_targets(&self, specs: &[TargetSpec]) -> Result<Vec<TargetInfo>> {
        let mut accounts: Vec<&str> = Vec::new();
        let mut out = Vec::new();
        for (tid, spec) in (1u32..).zip(specs) {
            let t = tid.to_string();
            self.tgtadm(&["--mode", "target", "--op", "new", "--tid", &t, "--targetname", &spec.iqn])?;
            let mut luns = Vec::new();
            for (lun, l) in (1u32..).zip(&spec.luns) {
                luns.push(self.create_lun(tid, lun, l, &out)?);
            }
            for (key, value) in &spec.params {
                self.set_param(tid, key, value)?;
            }
            if spec.initiator_names.is_empty() {
                self.tgtadm(&["--mode", "target", "--op", "bind", "--tid", &t, "--initiator-address", "ALL"])?;
            }
            for name in &spec.initiator_names {
                self.tgtadm(&["--mode", "target", "--op", "bind", "--tid", &t, "--initiator-name", name])?;
            }
            let chap = spec.incoming.iter().map(|a| (a, false));
            for ((user, secret), outgoing) in chap.chain(spec.outgoing.iter().map(|a| (a, true))) {
                if !accounts.contains(&user.as_str()) {
                    self.add_account(user, secret)?;
                    accounts.push(user);
                }
                self.bind_account(tid, user, outgoing)?;
            }
            out.push(TargetInfo { tid, iqn: spec.iqn.clone(), luns });
        }
        Ok(out)
    }

    fn create_lun(&self, tid: u32, lun: u32, spec: &LunSpec, earlier: &[TargetInfo]) -> Result<LunInfo> {
        let (t, l) = (tid.to_string(), lun.to_string());
        let mut args = vec!["--mode", "logicalunit", "--op", "new", "--tid", &t, "--lun", &l];
        let path = match spec.backing {
            Backing::File { size } => {
                let path = self.dir().join(format!("tid{tid}-lun{lun}.img"));
                File::create(&path)
                    .and_then(|f| f.set_len(size))
                    .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
                Some(path)
            }
            Backing::Null => None,
            Backing::SameAs { tid: of_tid, lun: of_lun } => {
                let found =
                    earlier.iter().find(|t| t.tid == of_tid).and_then(|t| t.luns.iter().find(|l| l.lun == of_lun));
                let path = found.and_then(|l| l.path.clone()).ok_or_else(|| {
                    Error::Environment(format!(
                        "LunSpec::same_as({of_tid}, {of_lun}): no file-backed LU {of_lun} of an earlier target {of_tid}"
                    ))
                })?;
                Some(path)
            }
        };
        let path_arg = path.as_ref().map(|p| p.display().to_string());
        match &path_arg {
            Some(p) => args.extend(["--backing-store", p.as_str()]),
            None => args.extend(["--bstype", "null", "--backing-store", "/dev/null"]),
        }
        let bs = spec.block_size.map(|b| b.to_string());
        if let Some(bs) = &bs {
            args.extend(["--blocksize", bs.as_str()]);
        }
        self.tgtadm(&args)?;
        if !spec.params.is_empty() {
            self.lun_params(tid, lun, &spec.params.join(","))?;
        }
        Ok(LunInfo { lun, backing: spec.backing.clone(), path, block_size: spec.block_size.unwrap_or(512) })
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        let result = self.shutdown();
        if std::thread::panicking() || result.is_err() {
            eprintln!(
                "--- tgtd -C {} (pid {}) log {} ---\n{}--- end of tgtd log ---",
                self.control_port,
                self.pid,
                self.log_path.display(),
                self.log()
            );
        }
        if let Err(e) = result {
            eprintln!("warning: stopping tgtd -C {}: {e}", self.control_port);
        }
    }
}

fn tgtadm(control_port: u32, args: &[&str], timeout: Duration) -> Result<String> {
    cmd::run_ok(
        Command::new("tgtadm").arg("-C").arg(control_port.to_string()).args(["--lld", "iscsi"]).args(args),
        timeout,
    )
}

fn spawn_tgtd(control_port: u32, portal: SocketAddr, log: &Path) -> Result<Child> {
    let file = File::create(log).map_err(|e| Error::io(format!("cannot create {}", log.display()), e))?;
    let file2 = file.try_clone().map_err(|e| Error::io("cannot dup the log fd", e))?;
    cmd::spawn(
        Command::new("tgtd")
            .arg("-f")
            .arg("-C")
            .arg(control_port.to_string())
            .arg("--iscsi")
            .arg(format!("portal={portal}"))
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file2),
    )
}

/// Waits until `tgtadm -C N` answers. `Err(Some(status))` if tgtd exited,
/// `Err(None)` on timeout (tgtd is still running then).
fn wait_ready(child: &mut Child, control_port: u32) -> Result<(), Option<ExitStatus>> {
    let what = format!("tgtd -C {control_port} to answer tgtadm");
    let ready = wait_for(&what, START_TIMEOUT, Duration::from_millis(10), || {
        if let Ok(Some(status)) = child.try_wait() {
            return Ok(Err(status));
        }
        let probe = tgtadm(control_port, &["--mode", "system", "--op", "show"], Duration::from_secs(5));
        probe.map(|_| Ok(()))
    });
    match ready {
        Ok(Ok(())) => Ok(()),
        Ok(Err(status)) => Err(Some(status)),
        Err(_) => match child.try_wait() {
            Ok(Some(status)) => Err(Some(status)),
            _ => Err(None),
        },
    }
}

/// Checks that tgtd listens on `first` (it only logs a failed bind of its
/// start-up portal) and adds a portal on each of `more` with the same port.
fn add_portals(control_port: u32, first: SocketAddr, more: &[Ipv4Addr]) -> Result<()> {
    let text = tgtadm(control_port, &["--mode", "portal", "--op", "show"], TGTADM_TIMEOUT)?;
    if !show::parse_portals(&text)?.iter().any(|(p, _)| *p == first.to_string()) {
        return Err(Error::Environment(format!("tgtd could not bind its portal {first} (port taken meanwhile)")));
    }
    for ip in more {
        let portal = format!("portal={}", SocketAddr::new((*ip).into(), first.port()));
        tgtadm(control_port, &["--mode", "portal", "--op", "new", "--param", &portal], TGTADM_TIMEOUT)?;
    }
    Ok(())
}

/// A port that is free on every address in `addrs`.
fn free_port(addrs: &[Ipv4Addr]) -> Result<u16> {
    for _ in 0..50 {
        let probe =
            TcpListener::bind((addrs[0], 0)).map_err(|e| Error::io(format!("cannot bind {}:0", addrs[0]), e))?;
        let port = probe.local_addr().map_err(|e| Error::io("getsockname", e))?.port();
        if addrs[1..].iter().all(|a| TcpListener::bind((*a, port)).is_ok()) {
            return Ok(port);
        }
    }
    Err(Error::Environment(format!("found no TCP port free on all of {addrs:?}")))
}

fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("(cannot read {}: {e})\n", path.display()))
}
