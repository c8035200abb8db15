//! A device served as `/dev/ublkbN`: added, started, stopped, removed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use libublk::ctrl::{UblkCtrl, UblkCtrlBuilder};
use libublk::io::UblkDev;
use libublk::{UblkError, UblkFlags};
use mpio_mpath::BlockDevice;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

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
}

impl UblkConfig {
    /// One queue per CPU (at most 4: each holds `depth` buffers), 64
    /// requests deep, 512 KiB requests.
    pub fn new(name: impl Into<String>) -> UblkConfig {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        UblkConfig { name: name.into(), queues: cpus.clamp(1, 4) as u16, depth: 64, buffer_bytes: 512 << 10 }
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
    /// No thread for the device.
    #[error("cannot start the ublk control thread: {0}")]
    Thread(std::io::Error),
    /// The control thread ended before it reported.
    #[error("the ublk control thread ended before the device started (see the log)")]
    Gone,
}

/// A device served as `/dev/ublkbN` until [`UblkExport::stop`].
pub struct UblkExport {
    ctrl: Arc<UblkCtrl>,
    id: u32,
    path: PathBuf,
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
    /// once `/dev/ublkbN` is live. Requests run on the current tokio
    /// runtime.
    pub async fn start<D: BlockDevice>(device: Arc<D>, config: UblkConfig) -> Result<UblkExport, StartError> {
        if !Path::new(CONTROL).exists() {
            return Err(StartError::NoDriver);
        }
        let geometry = device.geometry().map_err(StartError::NotReady)?;
        let params = params::for_geometry(&geometry, config.buffer_bytes)?;
        let shared = Shared { device, runtime: Handle::current(), name: config.name.clone() };
        let (tx, rx) = oneshot::channel::<Started>();
        let thread = std::thread::Builder::new()
            .name(format!("ublk-{}", config.name))
            .spawn(move || control(config, params, shared, tx))
            .map_err(StartError::Thread)?;
        match rx.await {
            Ok(Ok(ctrl)) => {
                let info = ctrl.dev_info();
                let path = PathBuf::from(ctrl.get_bdev_path());
                info!(device = %path.display(), queues = info.nr_hw_queues, depth = info.queue_depth, "ublk device started");
                Ok(UblkExport { ctrl, id: info.dev_id, path, thread: Some(thread) })
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

    /// Stops the device (requests in flight finish first: the kernel
    /// waits for them) and removes it.
    pub async fn stop(mut self) {
        let ctrl = self.ctrl.clone();
        let thread = self.thread.take();
        let path = self.path.clone();
        let stopped = tokio::task::spawn_blocking(move || {
            // libublk sends control commands through a ring of the calling
            // thread's own, made only on the thread that added the device:
            // without one here kill_dev panics and the device stays.
            if let Err(e) = control_ring() {
                warn!(device = %path.display(), "ublk: stopping the device: {}", describe(&e));
            } else if let Err(e) = ctrl.kill_dev() {
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

/// Gives this thread the control ring libublk's commands need (once).
fn control_ring() -> Result<(), UblkError> {
    libublk::ublk_init_ctrl_task_ring(|ring| {
        if ring.is_none() {
            *ring = Some(io_uring::IoUring::builder().build(16).map_err(UblkError::IOError)?);
        }
        Ok(())
    })
}

/// The control thread: adds the device, runs its queues until it stops,
/// removes it.
fn control<D: BlockDevice>(
    config: UblkConfig,
    params: libublk::sys::ublk_params,
    shared: Shared<D>,
    tx: oneshot::Sender<Started>,
) {
    let ctrl = UblkCtrlBuilder::default()
        .name("mpio")
        .id(-1)
        .nr_queues(config.queues)
        .depth(config.depth)
        .io_buf_bytes(config.buffer_bytes)
        .dev_flags(UblkFlags::UBLK_DEV_F_ADD_DEV)
        .build();
    let ctrl = match ctrl {
        Ok(c) => Arc::new(c),
        Err(e) => {
            let _ = tx.send(Err(StartError::Driver { what: "adding the device", detail: describe(&e) }));
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
    let name = config.name.clone();
    let depth = u32::from(config.depth);
    let init = move |dev: &mut UblkDev| {
        dev.tgt.dev_size = params.basic.dev_sectors * 512;
        dev.tgt.params = params;
        // Every tag's command plus the eventfd's poll in flight at once.
        let ring = u16::try_from((depth + 1).next_power_of_two()).unwrap_or(u16::MAX);
        dev.tgt.sq_depth = ring;
        dev.tgt.cq_depth = ring;
        dev.set_target_json(serde_json::json!({ "mpio": { "device": name } }));
        Ok(())
    };
    let started = {
        let (report, ctrl) = (report.clone(), ctrl.clone());
        move |_: &UblkCtrl| send(&report, Ok(ctrl))
    };
    let serve = move |qid: u16, dev: &UblkDev| queue::serve(qid, dev, &shared);
    if let Err(e) = ctrl.run_target(init, serve, started) {
        send(&report, Err(StartError::Driver { what: "starting the device", detail: describe(&e) }));
    }
    if let Err(e) = ctrl.del_dev() {
        debug!(device = config.name, "ublk: removing the device: {}", describe(&e));
    }
}

/// A libublk error as a sentence: its errno's text where it carries one
/// (libublk's own messages say only "other failure"), with a hint for
/// missing privileges.
fn describe(e: &UblkError) -> String {
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
        assert!((1..=4).contains(&c.queues) && c.depth == 64 && c.buffer_bytes == 512 << 10);
    }
}
