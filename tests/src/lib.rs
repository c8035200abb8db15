//! Helpers shared by the end-to-end tests in `tests/tests/`: sessions to a
//! testbed target, data patterns that reveal misplaced or stale blocks,
//! where a target keeps a LU's bytes ([`Backing`]), and scenarios written
//! once for every target fixture (tgtd on the host, LIO in the test VM):
//! [`session`] for the initiator, [`mp`] for the multipath device, [`pr`]
//! for reservations, [`proxied`] through the fault-injecting proxy.
#![warn(missing_docs)]

pub mod mp;
pub mod nbd;
pub mod pr;
pub mod proxied;
pub mod session;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use mpio_dsm::{Lun, cdb};
use mpio_mpath::scsi::{LuAccess, request};
use mpio_testbed::tgtd::Tgtd;
use mpio_testbed::vm::Vm;
use mpio_transport::{ConnectionSpec, ScsiRequest, SessionConfig};

/// The initiator name the tests log in with.
pub const INITIATOR: &str = "iqn.2026-11.test.mpio:initiator";

/// A session configuration to target `tid` of `tgtd` through portal
/// `portal`, with timers short enough for tests.
pub fn session_config(tgtd: &Tgtd, tid: u32, portal: usize) -> SessionConfig {
    let mut cfg = SessionConfig::new(
        INITIATOR.parse().expect("valid initiator name"),
        tgtd.iqn(tid).parse().expect("valid target name"),
        tgtd.portal(portal).into(),
    );
    cfg.timeouts.connect = Duration::from_secs(5);
    cfg.timeouts.login = Duration::from_secs(5);
    cfg
}

/// The same configuration with one connection per listed portal (MCS).
pub fn mcs_config(tgtd: &Tgtd, tid: u32, portals: &[usize]) -> SessionConfig {
    let mut cfg = session_config(tgtd, tid, portals[0]);
    cfg.connections = portals.iter().map(|p| ConnectionSpec::to(tgtd.portal(*p).into())).collect();
    cfg
}

/// LUN 1, where the testbed puts the first disk (LUN 0 is tgtd's
/// controller).
pub fn lun1() -> Lun {
    Lun::from_number(1).expect("LUN 1")
}

/// `len` bytes whose every 8-byte word holds its absolute byte offset
/// xored with `seed`: any block read from the wrong place, or a stale
/// version of it, shows up in a comparison.
pub fn pattern(offset: u64, len: usize, seed: u64) -> Bytes {
    let mut v = Vec::with_capacity(len);
    let mut at = offset;
    while v.len() < len {
        v.extend_from_slice(&(at ^ seed).to_le_bytes());
        at += 8;
    }
    v.truncate(len);
    Bytes::from(v)
}

/// A WRITE(16) of `data` at byte `offset` of LUN 1 (512-byte blocks).
pub fn write_at(offset: u64, data: Bytes) -> ScsiRequest {
    write_lun(lun1(), offset, data)
}

/// A READ(16) of `len` bytes at byte `offset` of LUN 1 (512-byte blocks).
pub fn read_at(offset: u64, len: usize) -> ScsiRequest {
    read_lun(lun1(), offset, len)
}

/// A WRITE(16) of `data` at byte `offset` of `lun` (512-byte blocks).
pub fn write_lun(lun: Lun, offset: u64, data: Bytes) -> ScsiRequest {
    let cmd = cdb::write16(offset / 512, (data.len() / 512) as u32, 512, false).expect("WRITE(16)");
    request(lun, &cmd, data)
}

/// A READ(16) of `len` bytes at byte `offset` of `lun` (512-byte blocks).
pub fn read_lun(lun: Lun, offset: u64, len: usize) -> ScsiRequest {
    let cmd = cdb::read16(offset / 512, (len / 512) as u32, 512, false).expect("READ(16)");
    request(lun, &cmd, Bytes::new())
}

/// Clears the UNIT ATTENTION a new nexus gets on LUN 1, so tests can count
/// on GOOD.
pub async fn ready(session: &mpio_transport::SessionHandle) {
    ready_lun(session, lun1()).await;
}

/// The same for `lun`.
pub async fn ready_lun(session: &mpio_transport::SessionHandle, lun: Lun) {
    LuAccess::new(session.clone(), lun).test_unit_ready().await.expect("TEST UNIT READY");
}

/// Waits for the first event that `pred` accepts; panics with what was
/// seen instead after `timeout`.
pub async fn wait_event(
    rx: &mut tokio::sync::broadcast::Receiver<mpio_transport::SessionEvent>,
    timeout: Duration,
    what: &str,
    mut pred: impl FnMut(&mpio_transport::SessionEvent) -> bool,
) -> mpio_transport::SessionEvent {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(ev)) if pred(&ev) => return ev,
            Ok(Ok(ev)) => seen.push(format!("{ev:?}")),
            Ok(Err(e)) => panic!("event stream ended while waiting for {what}: {e}; seen {seen:?}"),
            Err(_) => panic!("no {what} within {timeout:?}; seen {seen:?}"),
        }
    }
}

/// Panics unless `actual == expected`, naming the first differing byte
/// instead of printing megabytes.
#[track_caller]
pub fn assert_data(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let first = actual.iter().zip(expected).position(|(a, b)| a != b).unwrap_or(actual.len().min(expected.len()));
    let show = |d: &[u8]| d.iter().skip(first).take(16).map(|b| format!("{b:02x}")).collect::<String>();
    panic!(
        "{what}: {} bytes read, {} expected; first difference at byte {first}: {} vs {}",
        actual.len(),
        expected.len(),
        show(actual),
        show(expected)
    );
}

/// Writes `data` at byte `offset` of LUN 1 and expects GOOD, retrying the
/// UNIT ATTENTIONs a new or reinstated nexus reports (as every SCSI
/// initiator does; `mpath::scsi::LuAccess::run`).
pub async fn write_good(s: &mpio_transport::SessionHandle, offset: u64, data: Bytes) {
    write_good_lun(s, lun1(), offset, data).await;
}

/// The same on `lun`.
pub async fn write_good_lun(s: &mpio_transport::SessionHandle, lun: Lun, offset: u64, data: Bytes) {
    let cmd = cdb::write16(offset / 512, (data.len() / 512) as u32, 512, false).expect("WRITE(16)");
    let r = LuAccess::new(s.clone(), lun).run("WRITE(16)", &cmd, data).await;
    r.unwrap_or_else(|e| panic!("write at {offset}: {e}"));
}

/// Reads `len` bytes at byte `offset` of LUN 1, expecting GOOD (UNIT
/// ATTENTIONs retried).
pub async fn read_good(s: &mpio_transport::SessionHandle, offset: u64, len: usize) -> Bytes {
    read_good_lun(s, lun1(), offset, len).await
}

/// The same on `lun`.
pub async fn read_good_lun(s: &mpio_transport::SessionHandle, lun: Lun, offset: u64, len: usize) -> Bytes {
    let cmd = cdb::read16(offset / 512, (len / 512) as u32, 512, false).expect("READ(16)");
    let r = LuAccess::new(s.clone(), lun).run("READ(16)", &cmd, Bytes::new()).await;
    r.unwrap_or_else(|e| panic!("read at {offset}: {e}")).data.to_bytes()
}

/// Where a target keeps a LU's bytes. Tests read them there to check what
/// acknowledged writes left on the target, not only what the initiator
/// reads back (which a cache or a misdirected read could fake).
pub trait Backing: Sync {
    /// `len` bytes at byte `offset` of the LU as the target stores them.
    fn read(&self, offset: u64, len: usize) -> Vec<u8>;
}

/// A backing file on this host (tgtd's).
impl Backing for Path {
    fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        let file = std::fs::File::open(self).unwrap_or_else(|e| panic!("{}: {e}", self.display()));
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, offset).unwrap_or_else(|e| panic!("{}: {e}", self.display()));
        buf
    }
}

/// A backing file in a test VM (a LIO fileio LU's), read with `dd`
/// through the guest agent.
#[derive(Debug)]
pub struct GuestFile<'vm> {
    /// The guest.
    pub vm: &'vm Vm,
    /// The file's path in the guest.
    pub path: String,
}

impl<'vm> GuestFile<'vm> {
    /// The backing file of LUN `lun` of TPG `tag` of `target` of `lio`
    /// (a fileio LU).
    pub fn lio(lio: &mpio_testbed::lio::Lio<'vm>, target: usize, tag: u16, lun: u32) -> GuestFile<'vm> {
        let path = lio.backing_file(target, tag, lun).expect("a fileio LU has a backing file");
        GuestFile { vm: lio.vm(), path }
    }
}

impl Backing for GuestFile<'_> {
    fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        let argv = [
            "dd".to_owned(),
            format!("if={}", self.path),
            "bs=1M".to_owned(),
            "iflag=skip_bytes,count_bytes".to_owned(),
            format!("skip={offset}"),
            format!("count={len}"),
            "status=none".to_owned(),
        ];
        let data = self.vm.command(argv).timeout(Duration::from_secs(300)).run_ok_bytes();
        let data = data.unwrap_or_else(|e| panic!("reading {} in the guest: {e}", self.path));
        assert_eq!(data.len(), len, "{} is shorter than {} bytes from {offset}", self.path, len);
        data
    }
}
