//! A device served as `/dev/ublkbN`: added, started, stopped, removed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use libublk::ctrl::{UblkCtrl, UblkCtrlBuilder};
use libublk::io::UblkDev;
use libublk::{UblkError, UblkFlags};
use mpio_mpath::BlockDevice;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::existing::Existing;
use crate::lane::Lane;
use crate::params::{self, ParamError};
use crate::queue::{self, Shared};

/// The driver's control node; it exists once `ublk_drv` is loaded.
pub const CONTROL: &str = "/dev/ublk-control";

/// How a device is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UblkConfig {
    /// The multipath device's name (logs, the driver's JSON record).
    pub name: String,
    /// Hardware queues, each served by a thread of its own.
    pub queues: u16,
    /// Requests in flight per queue.
    pub depth: u16,
    /// The largest request, in bytes: each tag has a buffer this large.
    pub buffer_bytes: u32,
    /// Who serves it (the daemon's control socket), kept in the device's
    /// record beside the name: a restarted daemon takes over only the
    /// devices its predecessor served, not those of another daemon on the
    /// same machine.
    pub owner: String,
}

impl UblkConfig {
    /// One queue (the one that drives the device's lane: further queues
    /// add threads whose requests cross to it, measured slower in
    /// `bench/ublk.sh`), 64 requests deep, 512 KiB requests.
    pub fn new(name: impl Into<String>) -> UblkConfig {
        UblkConfig { name: name.into(), queues: 1, depth: 64, buffer_bytes: 512 << 10, owner: String::new() }
    }
}

/// Why a device could not be served as `/dev/ublkbN`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// No ublk driver in this kernel.
    #[error(
        "{CONTROL} is missing: load the ublk driver with `modprobe ublk_drv` (Linux 6.0 or later, built with \
         CONFIG_BLK_DEV_UBLK), or serve the device over NBD (frontend = \"nbd\")"
    )]
    NoDriver,
    /// The device does not know its LU yet.
    #[error("the device cannot be served yet: {0}")]
    NotReady(String),
    /// A geometry ublk cannot express.
    #[error(transparent)]
    Params(#[from] ParamError),
    /// The driver refused a command.
    #[error("the ublk driver refused {what}: {detail}")]
    Driver {
        /// The step (`adding the device`, `starting the device`).
        what: &'static str,
        /// Why, with a hint where there is one.
        detail: String,
    },
    /// The device left by a previous daemon does not fit the LU (the
    /// configuration now points the name at another LU, or the LU shrank
    /// or changed its block while no daemon ran).
    #[error(
        "/dev/ublkb{id}, left by the previous daemon for this device, has {device_bytes} bytes in \
         {device_block}-byte blocks but the LU has {lu_bytes} bytes in {lu_block}-byte blocks: not reattached. \
         `mpio ublk remove {id}` removes it (I/O still waiting in it then fails); the daemon's next start makes \
         a new one"
    )]
    Mismatch {
        /// The driver's device number.
        id: u32,
        /// The device's size.
        device_bytes: u64,
        /// The device's logical block.
        device_block: u32,
        /// The LU's size.
        lu_bytes: u64,
        /// The LU's logical block.
        lu_block: u32,
    },
    /// No thread for the device.
    #[error("cannot start the ublk control thread: {0}")]
    Thread(std::io::Error),
    /// The control thread ended before it reported.
    #[error("the ublk control thread ended before the device started (see the log)")]
    Gone,
}

/// Why `/dev/ublkbN` did not take the LU's new size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResizeError {
    /// The driver has no `UBLK_U_CMD_UPDATE_SIZE` (before Linux 6.16).
    #[error(
        "{path} keeps {bytes} bytes: this kernel's ublk driver cannot resize a device in use \
         (UBLK_U_CMD_UPDATE_SIZE came with Linux 6.16). It shows the new size once it is made again: unmount it, \
         then restart the daemon (a clean stop removes the device), or remove the device from the configuration, \
         reload, and add it back"
    )]
    Unsupported {
        /// `/dev/ublkbN`.
        path: String,
        /// The size it keeps.
        bytes: u64,
    },
    /// The driver refused the new size.
    #[error("the ublk driver refused to resize {path} to {bytes} bytes: {detail}")]
    Driver {
        /// `/dev/ublkbN`.
        path: String,
        /// The size asked for.
        bytes: u64,
        /// Why.
        detail: String,
    },
}

/// A device served as `/dev/ublkbN` until [`UblkExport::stop`].
pub struct UblkExport {
    ctrl: Arc<UblkCtrl>,
    id: u32,
    path: PathBuf,
    /// The size the block device shows, in bytes.
    capacity: Arc<AtomicU64>,
    /// Runs libublk's `run_target`: returns once the queues are down.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for UblkExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UblkExport").field("id", &self.id).field("path", &self.path).finish_non_exhaustive()
    }
}

type Started = Result<Arc<UblkCtrl>, StartError>;

impl UblkExport {
    /// Adds a ublk device with `device`'s geometry and serves it; returns
    /// once `/dev/ublkbN` is live. With the `lane` the device runs on, its
    /// first queue thread drives that lane while it serves (see
    /// [`Lane`]); without, every queue polls the device from a runtime of
    /// its own, and each request crosses to the device's runtime and back.
    pub async fn start<D: BlockDevice>(
        device: Arc<D>,
        config: UblkConfig,
        lane: Option<Lane>,
    ) -> Result<UblkExport, StartError> {
        UblkExport::serve(device, config, lane, Mode::Add, None).await
    }

    /// Takes over `existing`, a device a previous server left (see
    /// [`Existing::reattachable`]), and serves it with `device`; returns
    /// once it is live again: the I/O that waited in the kernel then
    /// reaches `device`. Refused when the LU's logical block is another,
    /// or the LU is smaller than the device. A device smaller than the LU
    /// (it grew while no daemon ran) keeps its size: [`UblkExport::resize`]
    /// may grow it. The device keeps its own queues, depth and buffers
    /// (`config`'s are for a new device).
    pub async fn reattach<D: BlockDevice>(
        device: Arc<D>,
        config: UblkConfig,
        lane: Option<Lane>,
        existing: &Existing,
    ) -> Result<UblkExport, StartError> {
        let geometry = device.geometry().map_err(StartError::NotReady)?;
        let capacity = fits(existing, geometry.capacity, geometry.logical_block)?;
        let config = UblkConfig {
            queues: existing.queues,
            depth: existing.depth,
            buffer_bytes: existing.buffer_bytes,
            ..config
        };
        UblkExport::serve(device, config, lane, Mode::Reattach(existing.id), Some(capacity)).await
    }

    /// Serves the device with the LU's geometry, but `capacity` bytes when
    /// given (a reattached device keeps its size: the driver's parameters
    /// must say what its disk is).
    async fn serve<D: BlockDevice>(
        device: Arc<D>,
        config: UblkConfig,
        lane: Option<Lane>,
        mode: Mode,
        capacity: Option<u64>,
    ) -> Result<UblkExport, StartError> {
        if !Path::new(CONTROL).exists() {
            return Err(StartError::NoDriver);
        }
        let mut geometry = device.geometry().map_err(StartError::NotReady)?;
        geometry.capacity = capacity.unwrap_or(geometry.capacity);
        let params = params::for_geometry(&geometry, config.buffer_bytes)?;
        let shared = Shared { device, lane, name: config.name.clone() };
        let (tx, rx) = oneshot::channel::<Started>();
        let thread = std::thread::Builder::new()
            .name(format!("ublk-{}", config.name))
            .spawn(move || control(config, mode, params, shared, tx))
            .map_err(StartError::Thread)?;
        match rx.await {
            Ok(Ok(ctrl)) => {
                let info = ctrl.dev_info();
                let path = PathBuf::from(ctrl.get_bdev_path());
                let how = match mode {
                    Mode::Add => "ublk device started",
                    Mode::Reattach(_) => "ublk device reattached",
                };
                info!(device = %path.display(), queues = info.nr_hw_queues, depth = info.queue_depth, "{how}");
                let capacity = Arc::new(AtomicU64::new(geometry.capacity));
                Ok(UblkExport { ctrl, id: info.dev_id, path, capacity, thread: Some(thread) })
            }
            // The thread is left to finish by itself: a device the driver
            // would not start may keep it waiting (see the crate docs).
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StartError::Gone),
        }
    }

    /// The driver's device number: `/dev/ublkb<id>`, `/dev/ublkc<id>`.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The block device, `/dev/ublkbN`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The size the block device shows, in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity.load(Ordering::Acquire)
    }

    /// Whether the driver can resize a live device (`UBLK_F_UPDATE_SIZE`,
    /// Linux 6.16).
    pub fn can_resize(&self) -> bool {
        self.ctrl.get_driver_features().is_some_and(|f| f & u64::from(libublk::sys::UBLK_F_UPDATE_SIZE) != 0)
    }

    /// Gives the block device `bytes` (a whole number of its logical
    /// blocks): what the LU has after it was resized on the target. The
    /// kernel sees the new size at once; a filesystem on it grows only when
    /// told (`resize2fs`). A shrink is the caller's to allow: what lies
    /// beyond the new end is gone for whoever uses the device. Refused,
    /// saying what to do instead, by a driver without the command.
    pub fn resize(&self, bytes: u64) -> impl Future<Output = Result<(), ResizeError>> + Send + 'static {
        let (ctrl, capacity, can) = (self.ctrl.clone(), self.capacity.clone(), self.can_resize());
        let path = self.path.display().to_string();
        async move {
            if capacity.load(Ordering::Acquire) == bytes {
                return Ok(());
            }
            if !can {
                return Err(ResizeError::Unsupported { path, bytes: capacity.load(Ordering::Acquire) });
            }
            let done = tokio::task::spawn_blocking(move || control_ring().and_then(|()| ctrl.update_size(bytes)))
                .await
                .map_err(|e| UblkError::OtherError(if e.is_panic() { -libc::EIO } else { -libc::ECANCELED }))
                .and_then(|r| r);
            match done {
                Ok(r) if r >= 0 => {
                    capacity.store(bytes, Ordering::Release);
                    info!(device = %path, bytes, "ublk device resized");
                    Ok(())
                }
                Ok(r) => Err(ResizeError::Driver { path, bytes, detail: describe(&UblkError::OtherError(r)) }),
                Err(e) => Err(ResizeError::Driver { path, bytes, detail: describe(&e) }),
            }
        }
    }

    /// Stops the device (requests in flight finish first: the kernel
    /// waits for them) and removes it.
    pub async fn stop(mut self) {
        let ctrl = self.ctrl.clone();
        let thread = self.thread.take();
        let path = self.path.clone();
        let stopped = tokio::task::spawn_blocking(move || {
            // libublk sends control commands on a ring of the calling
            // thread's own, made by its constructor on the control thread
            // only: without one here it panics. (Unseen while the device
            // died with the daemon's exit anyway; with user recovery it
            // would stay, quiesced, after a clean stop.)
            if let Err(e) = control_ring().and_then(|()| ctrl.kill_dev()) {
                warn!(device = %path.display(), "ublk: stopping the device: {}", describe(&e));
            }
            if let Some(t) = thread
                && t.join().is_err()
            {
                warn!(device = %path.display(), "ublk: the control thread panicked");
            }
        })
        .await;
        if stopped.is_err() {
            warn!(device = %self.path.display(), "ublk: the stop task failed");
        }
        info!(device = %self.path.display(), "ublk device removed");
    }
}

/// What the control thread does with the driver.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// A new device.
    Add,
    /// Device `id`, left by a previous server.
    Reattach(u32),
}

/// Asked of the driver for every new device: its I/O waits in the kernel
/// when the daemon dies (the device and what is mounted on it stay), and
/// the requests the dead daemon had taken are sent again to the next one
/// instead of failing. Both are safe for a multipath device: its requests
/// are block reads and writes, which may be done twice.
const RECOVERY: u64 = (libublk::sys::UBLK_F_USER_RECOVERY | libublk::sys::UBLK_F_USER_RECOVERY_REISSUE) as u64;

/// The control thread: adds (or takes over) the device, runs its queues
/// until it stops, removes it.
fn control<D: BlockDevice>(
    config: UblkConfig,
    mode: Mode,
    params: libublk::sys::ublk_params,
    shared: Shared<D>,
    tx: oneshot::Sender<Started>,
) {
    let ctrl = match build(&config, mode) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    // Taken by whichever comes first: the device started, or failed.
    let report = Arc::new(Mutex::new(Some(tx)));
    let send = |report: &Mutex<Option<oneshot::Sender<Started>>>, r: Started| {
        if let Some(tx) = report.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(r);
        }
    };
    let record = serde_json::json!({ "mpio": { "device": config.name, "daemon": config.owner } });
    let depth = u32::from(config.depth);
    let init = move |dev: &mut UblkDev| {
        dev.tgt.dev_size = params.basic.dev_sectors * 512;
        dev.tgt.params = params;
        // Every tag's command in flight at once.
        let ring = u16::try_from(depth.next_power_of_two()).unwrap_or(u16::MAX);
        dev.tgt.sq_depth = ring;
        dev.tgt.cq_depth = ring;
        dev.set_target_json(record);
        Ok(())
    };
    let started = {
        let (report, ctrl) = (report.clone(), ctrl.clone());
        move |_: &UblkCtrl| send(&report, Ok(ctrl))
    };
    let serve = move |qid: u16, dev: &UblkDev| queue::serve(qid, dev, &shared);
    if let Err(e) = ctrl.run_target(init, serve, started) {
        let what = match mode {
            Mode::Add => "starting the device",
            Mode::Reattach(_) => "ending the device's recovery",
        };
        send(&report, Err(StartError::Driver { what, detail: describe(&e) }));
        // A device that was not taken over still holds what is mounted
        // on it: it is the operator's to remove (`mpio ublk remove`).
        if let Mode::Reattach(_) = mode {
            return;
        }
    }
    // Without waiting for the device's last opener (DEL_DEV_ASYNC, Linux
    // 6.9): a forced removal under a mounted filesystem must not hang the
    // reload until the administrator unmounts. Older kernels refuse the
    // command, and get the delete that waits.
    if let Err(e) = ctrl.del_dev_async().or_else(|_| ctrl.del_dev()) {
        debug!(device = config.name, "ublk: removing the device: {}", describe(&e));
    }
}

/// The control handle: a new device added with [`RECOVERY`], or an
/// existing one whose recovery has begun (the driver then takes new
/// queues for it; libublk ends the recovery, in place of starting the
/// device, once they are up).
fn build(config: &UblkConfig, mode: Mode) -> Result<UblkCtrl, StartError> {
    let builder = UblkCtrlBuilder::default()
        .name("mpio")
        .nr_queues(config.queues)
        .depth(config.depth)
        .io_buf_bytes(config.buffer_bytes);
    match mode {
        Mode::Add => {
            let ctrl = builder
                .id(-1)
                .ctrl_flags(RECOVERY)
                .dev_flags(UblkFlags::UBLK_DEV_F_ADD_DEV)
                .build()
                .map_err(|e| StartError::Driver { what: "adding the device", detail: describe(&e) })?;
            // The driver drops the flags it does not know.
            if ctrl.dev_info().flags & RECOVERY != RECOVERY {
                warn!(device = config.name, "ublk: this kernel cannot keep the device across a daemon restart");
            }
            Ok(ctrl)
        }
        Mode::Reattach(id) => {
            let taking = |e: &UblkError| StartError::Driver { what: "taking the device over", detail: describe(e) };
            let ctrl = builder
                .id(i32::try_from(id).unwrap_or(i32::MAX))
                .dev_flags(UblkFlags::UBLK_DEV_F_RECOVER_DEV)
                .build()
                .map_err(|e| taking(&e))?;
            // libublk retries while the driver answers EBUSY (the previous
            // server's exit not finished, the device not yet quiesced)
            // for 30 s, then returns it.
            match ctrl.start_user_recover() {
                Ok(r) if r >= 0 => Ok(ctrl),
                Ok(r) => Err(taking(&UblkError::OtherError(r))),
                Err(e) => Err(taking(&e)),
            }
        }
    }
}

/// This thread's ring for libublk's control commands (see
/// [`UblkExport::stop`]).
fn control_ring() -> Result<(), UblkError> {
    libublk::ublk_init_ctrl_task_ring(|ring| {
        if ring.is_none() {
            *ring = Some(io_uring::IoUring::builder().build(16).map_err(UblkError::IOError)?);
        }
        Ok(())
    })
}

/// A device left by a previous server may be reattached only with the
/// LU's logical block and a size the LU still has: anything else would
/// shift or cut what a filesystem on it reads. A LU that grew meanwhile
/// is fine (the device shows its start). Returns the device's size.
fn fits(existing: &Existing, lu_bytes: u64, lu_block: u32) -> Result<u64, StartError> {
    let (device_bytes, device_block) = (existing.capacity.unwrap_or(0), existing.logical_block.unwrap_or(0));
    if device_block == lu_block && device_bytes != 0 && device_bytes <= lu_bytes {
        return Ok(device_bytes);
    }
    Err(StartError::Mismatch { id: existing.id, device_bytes, device_block, lu_bytes, lu_block })
}

/// A libublk error as a sentence: its errno's text where it carries one
/// (libublk's own messages say only "other failure"), with a hint for
/// missing privileges.
pub(crate) fn describe(e: &UblkError) -> String {
    let errno = match e {
        UblkError::OtherError(c) | UblkError::UringIOError(c) => Some(c.abs()),
        UblkError::IOError(io) => io.raw_os_error(),
        _ => None,
    };
    match errno {
        Some(libc::EPERM | libc::EACCES) => {
            format!("{}: ublk devices need root (CAP_SYS_ADMIN)", std::io::Error::from_raw_os_error(libc::EPERM))
        }
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_to_do() {
        let e = StartError::NoDriver.to_string();
        assert!(e.contains("modprobe ublk_drv") && e.contains("CONFIG_BLK_DEV_UBLK") && e.contains("6.0"), "{e}");
        assert_eq!(describe(&UblkError::OtherError(-libc::EINVAL)), "Invalid argument (os error 22)");
        assert!(describe(&UblkError::OtherError(-libc::EPERM)).contains("need root"));
        let c = UblkConfig::new("d0");
        assert!(c.queues == 1 && c.depth == 64 && c.buffer_bytes == 512 << 10);
    }

    #[test]
    fn a_device_left_behind_is_reattached_only_with_the_lus_block_and_within_its_size() {
        let left = Existing {
            id: 3,
            name: Some("d0".into()),
            owner: Some("/run/mpio/mpio.sock".into()),
            state: crate::existing::DevState::Quiesced,
            pid: -1,
            server_alive: false,
            recoverable: true,
            queues: 2,
            depth: 64,
            buffer_bytes: 512 << 10,
            capacity: Some(256 << 20),
            logical_block: Some(512),
        };
        assert_eq!(fits(&left, 256 << 20, 512).unwrap(), 256 << 20);
        // The LU grew while no daemon ran: the device keeps its size.
        assert_eq!(fits(&left, 512 << 20, 512).unwrap(), 256 << 20);
        // It shrank: what lies past its end would be cut off.
        let e = fits(&left, 64 << 20, 512).unwrap_err().to_string();
        assert!(
            e.contains("268435456 bytes in 512-byte blocks") && e.contains("67108864 bytes in 512-byte blocks"),
            "{e}"
        );
        assert!(e.contains("/dev/ublkb3") && e.contains("mpio ublk remove 3"), "{e}");
        assert!(fits(&left, 256 << 20, 4096).is_err(), "another logical block");
        let no_params = Existing { capacity: None, logical_block: None, ..left };
        assert!(fits(&no_params, 256 << 20, 512).is_err());
    }
}
