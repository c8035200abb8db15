//! The ublk devices the driver already has, whoever made them: what a
//! restarted daemon reattaches ([`UblkExport::reattach`]), and what `mpio
//! ublk list` shows and `mpio ublk remove` removes.
//!
//! The driver numbers its devices (`/sys/class/ublk-char/ublkcN`) and
//! answers `GET_DEV_INFO` (state, server pid, flags, queues) and
//! `GET_PARAMS` (capacity, blocks) for each; it keeps no name. The name
//! is in the JSON record libublk writes for every device it starts,
//! `/run/ublksrvd/<id>.json`, where [`UblkExport`] puts
//! `{"mpio":{"device":NAME}}` as the target data. `/run` is a tmpfs, and
//! so are the driver's devices: both last until reboot, neither beyond.
//!
//! What the 6.12 driver does when a server dies (`drivers/block/ublk_drv.c`):
//! a device made with `UBLK_F_USER_RECOVERY` is quiesced (its I/O waits
//! in the kernel, state `QUIESCED`) as soon as the server's `io_uring`
//! commands are cancelled at its exit, or from the request timeout if
//! the server held every tag; with `UBLK_F_USER_RECOVERY_REISSUE` the
//! requests the dead server had taken are queued again rather than
//! failed. A device without the flag is stopped (`DEAD`): it has no block
//! device any more and can only be removed.
//!
//! [`UblkExport`]: crate::UblkExport
//! [`UblkExport::reattach`]: crate::UblkExport::reattach

use libublk::UblkError;
use libublk::ctrl::UblkCtrl;
use libublk::sys;

use crate::export::describe;

/// Where the driver lists its devices.
const CHAR_CLASS: &str = "/sys/class/ublk-char";

/// What the driver says a device is doing (`ublksrv_ctrl_dev_info.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevState {
    /// Added but not started, or stopped: no block device.
    Dead,
    /// Served.
    Live,
    /// Its server is gone; its I/O waits for the next one.
    Quiesced,
    /// Its server is gone; its I/O fails until the next one (Linux 6.13+,
    /// `UBLK_F_USER_RECOVERY_FAIL_IO`; mpio does not ask for it).
    FailIo,
    /// A state this build does not know.
    Other(u16),
}

impl DevState {
    fn from_raw(s: u16) -> DevState {
        match u32::from(s) {
            sys::UBLK_S_DEV_DEAD => DevState::Dead,
            sys::UBLK_S_DEV_LIVE => DevState::Live,
            sys::UBLK_S_DEV_QUIESCED => DevState::Quiesced,
            // UBLK_S_DEV_FAIL_IO, newer than the 6.12 headers.
            3 => DevState::FailIo,
            _ => DevState::Other(s),
        }
    }
}

impl std::fmt::Display for DevState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DevState::Dead => f.write_str("dead"),
            DevState::Live => f.write_str("live"),
            DevState::Quiesced => f.write_str("quiesced"),
            DevState::FailIo => f.write_str("fail-io"),
            DevState::Other(s) => write!(f, "state {s}"),
        }
    }
}

/// One device the driver has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// `/dev/ublkb<id>`, `/dev/ublkc<id>`.
    pub id: u32,
    /// The mpio device it serves, from its JSON record; `None` for a
    /// device another program made or whose record is gone.
    pub name: Option<String>,
    /// The daemon that served it (its control socket), from the same
    /// record.
    pub owner: Option<String>,
    /// What the driver says it is doing.
    pub state: DevState,
    /// The server that started it (or last reattached it); for a device
    /// never started, the process that added it.
    pub pid: i32,
    /// That process still runs.
    pub server_alive: bool,
    /// Made with `UBLK_F_USER_RECOVERY`: a new server can take it over.
    pub recoverable: bool,
    /// Hardware queues, their depth and the per-tag buffer, as the driver
    /// keeps them: a server taking the device over must use these.
    pub queues: u16,
    /// Requests in flight per queue.
    pub depth: u16,
    /// Bytes of I/O buffer per tag.
    pub buffer_bytes: u32,
    /// Bytes, once the device has parameters.
    pub capacity: Option<u64>,
    /// The logical block, once the device has parameters.
    pub logical_block: Option<u32>,
}

impl Existing {
    /// `/dev/ublkb<id>`.
    pub fn path(&self) -> String {
        format!("/dev/ublkb{}", self.id)
    }

    /// Nobody serves it: its server is gone.
    pub fn orphaned(&self) -> bool {
        !self.server_alive
    }

    /// A new server can take it over: made for recovery, its server gone,
    /// and quiesced (or about to be: the driver quiesces a device as its
    /// server's exit completes).
    pub fn reattachable(&self) -> bool {
        self.recoverable && self.orphaned() && matches!(self.state, DevState::Quiesced | DevState::Live)
    }
}

/// Every device the driver has, in id order. Devices that go away while
/// they are read are left out; the driver missing is an empty list.
pub fn list() -> Vec<Existing> {
    let Ok(entries) = std::fs::read_dir(CHAR_CLASS) else { return Vec::new() };
    let mut ids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix("ublkc")).and_then(|n| n.parse().ok()))
        .collect();
    ids.sort_unstable();
    ids.into_iter().filter_map(|id| find(id).ok()).collect()
}

/// Device `id`, or why it cannot be read (`No such device` when there is
/// none).
pub fn find(id: u32) -> Result<Existing, String> {
    let ctrl = open(id)?;
    let info = ctrl.dev_info();
    let record = ctrl.get_target_data_from_json().unwrap_or_default();
    let field = |key: &str| record.get("mpio")?.get(key)?.as_str().map(str::to_owned);
    let mut p = sys::ublk_params::default();
    let params = ctrl.get_params(&mut p).is_ok() && p.types & sys::UBLK_PARAM_TYPE_BASIC != 0;
    Ok(Existing {
        id,
        name: field("device"),
        owner: field("daemon"),
        state: DevState::from_raw(info.state),
        pid: info.ublksrv_pid,
        server_alive: alive(info.ublksrv_pid),
        recoverable: info.flags & u64::from(sys::UBLK_F_USER_RECOVERY) != 0,
        queues: info.nr_hw_queues,
        depth: info.queue_depth,
        buffer_bytes: info.max_io_buf_bytes,
        capacity: params.then_some(p.basic.dev_sectors * 512),
        logical_block: params.then(|| 1u32.checked_shl(u32::from(p.basic.logical_bs_shift)).unwrap_or(0)),
    })
}

/// Removes device `id`: its block device goes, and I/O still waiting in
/// it fails. Returns without waiting for a filesystem still mounted on it
/// (DEL_DEV_ASYNC, Linux 6.9; older kernels wait): the unmount the
/// operator does next would otherwise be what the removal waits for.
pub fn remove(id: u32) -> Result<(), String> {
    let ctrl = open(id)?;
    ctrl.del_dev_async().or_else(|_| ctrl.del_dev()).map(drop).map_err(|e| describe(&e))
}

/// A control handle on device `id` (it reads the device's info and its
/// JSON record).
fn open(id: u32) -> Result<UblkCtrl, String> {
    let id = i32::try_from(id).map_err(|_| format!("no ublk device {id}"))?;
    // libublk prints "device reload json failed" for a device without a
    // record (one another program made): seen only for such devices.
    UblkCtrl::new_simple(id).map_err(|e| match e {
        UblkError::OtherError(c) | UblkError::UringIOError(c) if c == -libc::ENODEV => {
            format!("no ublk device {id}")
        }
        e => describe(&e),
    })
}

/// Process `pid` runs (a pid of another user's process counts).
fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // No signal: only whether the process exists.
    !matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orphan() -> Existing {
        Existing {
            id: 0,
            name: Some("d0".into()),
            owner: Some("/run/mpio/mpio.sock".into()),
            state: DevState::Quiesced,
            pid: -1,
            server_alive: false,
            recoverable: true,
            queues: 1,
            depth: 64,
            buffer_bytes: 512 << 10,
            capacity: Some(1 << 30),
            logical_block: Some(512),
        }
    }

    #[test]
    fn only_a_recoverable_device_whose_server_is_gone_is_reattached() {
        assert!(orphan().reattachable());
        assert!(Existing { state: DevState::Live, ..orphan() }.reattachable(), "quiescing as its server exits");
        assert!(!Existing { server_alive: true, state: DevState::Live, ..orphan() }.reattachable());
        assert!(!Existing { recoverable: false, ..orphan() }.reattachable());
        assert!(!Existing { state: DevState::Dead, ..orphan() }.reattachable());
        assert!(!Existing { state: DevState::FailIo, ..orphan() }.reattachable(), "not asked for");
        assert_eq!(orphan().path(), "/dev/ublkb0");
    }

    #[test]
    fn states_read_as_the_driver_names_them() {
        let names: Vec<String> = [0, 1, 2, 3, 9].map(|s| DevState::from_raw(s).to_string()).to_vec();
        assert_eq!(names, ["dead", "live", "quiesced", "fail-io", "state 9"]);
    }

    #[test]
    fn this_process_is_alive_and_no_pid_is_not() {
        assert!(alive(std::process::id() as i32));
        assert!(!alive(-1) && !alive(0));
    }
}
