//! `mpio daemon`: runs the configured multipath devices, their NBD
//! exports, the control socket and the Prometheus endpoint until SIGTERM;
//! SIGHUP (or `mpio reload`) applies configuration changes.
//!
//! Start-up never waits for the SAN: every device starts connecting at
//! once and the daemon tells systemd it is ready when every device has a
//! usable path, or after `ready_timeout` (devices still down keep trying
//! in the background, and `mpio status` shows them as `starting`/`down`).

mod handler;
mod in_use;
#[cfg(feature = "ublk")]
mod isolate;
mod journal;
mod notify;
mod reload;
pub(crate) mod server;
#[cfg(feature = "ublk")]
mod ublk;
mod views;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use clap::Args;
use mpio_mpath::Device;
use mpio_nbd::{ExportConfig, ListenSpec, Server, ServerConfig};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{self, Config, DeviceSpec, NbdListen};
use crate::logging::LogControl;
use journal::Journal;
use notify::notify;

/// `mpio daemon`.
#[derive(Args, Debug)]
pub(crate) struct DaemonArgs {
    /// Configuration file.
    #[arg(long, short, default_value = config::DEFAULT_FILE)]
    config: PathBuf,
}

/// A running device.
pub(crate) struct Managed {
    pub(crate) spec: DeviceSpec,
    pub(crate) device: Device,
    /// Its NBD export name, if exported.
    pub(crate) export: Option<String>,
    /// Its block device, with the ublk frontend (taken when it stops).
    #[cfg(feature = "ublk")]
    ublk: Option<ublk::UblkFrontend>,
    /// The runtime a ublk device's sessions run on (`mpio_ublk::Lane`),
    /// kept until the device has stopped: dropping it drops the sessions.
    #[cfg(feature = "ublk")]
    _lane: Option<mpio_ublk::Lane>,
    /// Copies the device's events into the journal.
    events: JoinHandle<()>,
}

/// A block device taking its LU's size: what was done (`Ok`), why it
/// could not be (`Err`), or `None` when there was nothing to do.
pub(crate) type Resizing = std::pin::Pin<Box<dyn Future<Output = Option<Result<String, String>>> + Send>>;

impl Managed {
    /// Its block device (`/dev/ublkbN`), once there is one.
    pub(crate) fn block_device(&self) -> Option<String> {
        #[cfg(feature = "ublk")]
        if let Some(u) = &self.ublk {
            return u.path();
        }
        None
    }

    /// The size its block device shows, once there is one.
    pub(crate) fn block_device_bytes(&self) -> Option<u64> {
        #[cfg(feature = "ublk")]
        if let Some(u) = &self.ublk {
            return u.capacity();
        }
        None
    }

    /// Gives its block device the LU's size now; what was done (`None`:
    /// no block device, or it has the size already).
    pub(crate) fn follow_capacity(&self) -> Resizing {
        #[cfg(feature = "ublk")]
        if let Some(u) = &self.ublk {
            return Box::pin(u.follow_capacity(self.device.clone()));
        }
        Box::pin(std::future::ready(None))
    }

    /// The device and its frontends, for a metrics scrape.
    fn served(&self) -> mpio_metrics::Served {
        let frontend = |kind: &str, block_device: Option<String>| mpio_metrics::Frontend {
            kind: kind.into(),
            block_device: block_device.unwrap_or_default(),
        };
        let mut frontends = Vec::new();
        if self.spec.frontend.ublk {
            frontends.push(frontend("ublk", self.block_device()));
        }
        if self.export.is_some() {
            // The client picks its /dev/nbdN: the daemon cannot name it.
            frontends.push(frontend("nbd", None));
        }
        mpio_metrics::Served { device: self.device.clone(), frontends }
    }

    /// Resolves once its block device is there (at once without one), or
    /// with why it will not be.
    pub(crate) fn frontend_ready(&self) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        #[cfg(feature = "ublk")]
        if let Some(u) = &self.ublk {
            return Box::pin(u.ready());
        }
        Box::pin(std::future::ready(Ok(())))
    }

    /// Why a block device it should have is not there.
    pub(crate) fn frontend_problem(&self) -> Option<String> {
        #[cfg(feature = "ublk")]
        if let Some(u) = &self.ublk {
            return u.problem();
        }
        None
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.events.abort();
    }
}

/// The daemon's state, shared by the control socket, signals and metrics.
pub(crate) struct Daemon {
    config: Mutex<Config>,
    devices: Mutex<BTreeMap<String, Managed>>,
    journal: Journal,
    log: Arc<LogControl>,
    /// `log` was given on the command line: the file's does not apply.
    log_pinned: bool,
    started: Instant,
    /// The NBD server, when `[nbd]` has a listener.
    nbd: Option<Server<Device>>,
    /// Where /metrics is served (the bound address: port 0 in the file
    /// becomes the real port).
    metrics_addr: Option<std::net::SocketAddr>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

impl Daemon {
    /// A daemon without devices yet.
    fn new(
        cfg: Config,
        log: Arc<LogControl>,
        log_pinned: bool,
        nbd: Option<Server<Device>>,
        metrics_addr: Option<std::net::SocketAddr>,
    ) -> Arc<Daemon> {
        Arc::new(Daemon {
            config: Mutex::new(cfg),
            devices: Mutex::new(BTreeMap::new()),
            journal: Journal::new(),
            log,
            log_pinned,
            started: Instant::now(),
            nbd,
            metrics_addr,
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    fn devices(&self) -> MutexGuard<'_, BTreeMap<String, Managed>> {
        self.devices.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn config(&self) -> MutexGuard<'_, Config> {
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A device by name, or the error the CLI shows.
    fn device(&self, name: &str) -> Result<Device, String> {
        // The guard must be gone before unknown_device locks again.
        let found = self.devices().get(name).map(|m| m.device.clone());
        found.ok_or_else(|| self.unknown_device(name))
    }

    /// The error for a device name the daemon does not have.
    fn unknown_device(&self, name: &str) -> String {
        let known: Vec<String> = self.devices().keys().cloned().collect();
        format!(
            "no device named {name:?}; devices: {}",
            if known.is_empty() { "none".into() } else { known.join(", ") }
        )
    }

    /// Starts a configured device (it connects in the background) and
    /// exports it.
    fn start_device(self: &Arc<Self>, spec: DeviceSpec) -> Result<Managed, String> {
        let initiator = self.config().initiator.clone();
        // A block device's sessions run on a lane of their own, which its
        // first queue thread drives: no request crosses threads.
        #[cfg(feature = "ublk")]
        let lane = match spec.frontend.ublk {
            true => Some(
                mpio_ublk::Lane::new(&spec.name).map_err(|e| format!("device {}: no thread for it: {e}", spec.name))?,
            ),
            false => None,
        };
        let device = {
            #[cfg(feature = "ublk")]
            let _on_lane = lane.as_ref().map(|l| l.handle().enter());
            Device::start(spec.device_config(&initiator)).map_err(|e| format!("device {}: {e}", spec.name))?
        };
        let events = tokio::spawn(forward_events(Arc::downgrade(self), device.clone()));
        let export = match (&self.nbd, spec.frontend.nbd) {
            (Some(server), true) => {
                server
                    .add_export(ExportConfig::new(spec.name.clone()), Arc::new(device.clone()))
                    .map_err(|e| format!("device {}: NBD export: {e}", spec.name))?;
                server.local_addrs().first().map(|a| a.uri(&spec.name))
            }
            _ => None,
        };
        #[cfg(feature = "ublk")]
        let ublk = spec.frontend.ublk.then(|| {
            isolate::lock_memory();
            let owner = self.config().control_socket.display().to_string();
            ublk::UblkFrontend::start(Arc::downgrade(self), device.clone(), lane.clone(), spec.ublk, owner)
        });
        info!(device = spec.name, paths = spec.paths.len(), export, "device started");
        Ok(Managed {
            spec,
            device,
            export,
            #[cfg(feature = "ublk")]
            ublk,
            #[cfg(feature = "ublk")]
            _lane: lane,
            events,
        })
    }

    /// Stops a device: its export or block device first (in-flight
    /// requests finish), then its sessions log out.
    async fn stop_device(&self, #[allow(unused_mut)] mut m: Managed) {
        if let (Some(server), Some(_)) = (&self.nbd, &m.export) {
            server.remove_export(&m.spec.name).await;
        }
        // The kernel waits for the block device's requests in flight
        // before it lets the device go; one held for a path that does not
        // come back is failed by the shutdown below, after a grace.
        #[cfg(feature = "ublk")]
        let ublk = m.ublk.take().map(|u| tokio::spawn(u.stop()));
        #[cfg(feature = "ublk")]
        let ublk = match ublk {
            Some(mut stopping) => {
                let done = tokio::time::timeout(Duration::from_secs(5), &mut stopping).await.is_ok();
                (!done).then_some(stopping)
            }
            None => None,
        };
        // A target that does not answer must not keep the daemon from
        // stopping.
        m.device.shutdown(Duration::from_secs(5)).await;
        #[cfg(feature = "ublk")]
        if let Some(stopping) = ublk {
            let _ = stopping.await;
        }
    }

    /// The ublk devices this daemon serves or is taking over, by the
    /// driver's number, with the name of the device each belongs to.
    #[cfg(feature = "ublk")]
    fn ublk_claims(&self) -> BTreeMap<u32, String> {
        self.devices().values().filter_map(|m| Some((m.ublk.as_ref()?.claimed_id()?, m.spec.name.clone()))).collect()
    }

    /// Records a daemon-level event.
    fn event(&self, device: &str, kind: &str, reason: &str) {
        self.journal.record(SystemTime::now(), device, None, kind, reason, None);
    }
}

/// Copies one device's events into the journal, with path names.
async fn forward_events(daemon: std::sync::Weak<Daemon>, device: Device) {
    let mut rx = device.events();
    loop {
        let (at, ev) = match rx.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                let Some(d) = daemon.upgrade() else { return };
                d.event(
                    device.name(),
                    "events_lost",
                    &format!("{n} events were not recorded (the journal fell behind)"),
                );
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(d) = daemon.upgrade() else { return };
        d.journal.record(at, device.name(), ev.path_name.as_deref(), ev.kind.name(), &ev.reason, ev.seed_event);
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub(crate) async fn run(args: DaemonArgs, log: Arc<LogControl>, log_pinned: bool) -> Result<()> {
    let cfg = config::load(&args.config)?;
    if !log_pinned {
        log.set(&cfg.log).map_err(anyhow::Error::msg)?;
    }
    // First: the process is still one thread.
    #[cfg(feature = "ublk")]
    if cfg.devices.iter().any(|d| d.frontend.ublk) {
        isolate::own_mount_namespace();
    }
    raise_fd_limit();
    let control = server::bind(&cfg.control_socket)?;
    let metrics = match cfg.metrics {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot serve metrics on {addr}: set another [metrics] listen, or enabled = false")
        })?),
        None => None,
    };
    let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());
    let nbd = nbd_server(&cfg.nbd).await?;
    let ready_timeout = cfg.ready_timeout;
    let specs = cfg.devices.clone();
    let daemon = Daemon::new(cfg, log, log_pinned, nbd, metrics_addr);
    for spec in specs {
        let name = spec.name.clone();
        let m = daemon.start_device(spec).map_err(anyhow::Error::msg)?;
        daemon.devices().insert(name, m);
    }
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let server = tokio::spawn(server::serve(control, daemon.clone()));
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(listener) = metrics {
        let weak = Arc::downgrade(&daemon);
        let devices = move || -> Vec<mpio_metrics::Served> {
            weak.upgrade().map(|d| d.devices().values().map(Managed::served).collect()).unwrap_or_default()
        };
        info!("metrics on http://{}/metrics", listener.local_addr()?);
        tokio::spawn(async move {
            if let Err(e) = mpio_metrics::serve(listener, devices, async {
                let _ = metrics_stopped.await;
            })
            .await
            {
                warn!("metrics endpoint stopped: {e}");
            }
        });
    }
    tokio::spawn(announce_ready(daemon.clone(), ready_timeout));
    loop {
        tokio::select! {
            _ = hup.recv() => {
                info!("SIGHUP: reloading the configuration");
                // The answer says what happened to the running configuration.
                if let Err(e) = reload::reload(&daemon, false).await {
                    warn!("{e}");
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    notify("STOPPING=1");
    info!("stopping");
    server.abort();
    let _ = stop_metrics.send(());
    let socket = daemon.config().control_socket.clone();
    let _ = std::fs::remove_file(socket);
    if let Some(server) = &daemon.nbd {
        // Clients' requests in flight finish before the devices go.
        server.shutdown().await;
    }
    let devices: Vec<Managed> = std::mem::take(&mut *daemon.devices()).into_values().collect();
    for m in devices {
        daemon.stop_device(m).await;
    }
    Ok(())
}

/// Raises the soft limit of open files to the hard one: every path holds a
/// socket, every NBD and metrics client one more, and the soft limit is
/// 1024 by default (systemd's hard limit is 524288). The daemon's
/// listeners bound what clients can hold and back off when it is reached.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => info!("open files: soft limit raised from {soft} to {hard}"),
            Err(e) => warn!("open files: cannot raise the soft limit {soft} to {hard}: {e}"),
        },
        Ok((soft, _)) => info!("open files: limit {soft}"),
        Err(e) => warn!("open files: cannot read the limit: {e}"),
    }
}

/// The NBD listeners of `[nbd]`, if any.
async fn nbd_server(cfg: &NbdListen) -> Result<Option<Server<Device>>> {
    let mut listen: Vec<ListenSpec> = cfg.socket.iter().map(ListenSpec::unix).collect();
    listen.extend(cfg.tcp.map(ListenSpec::Tcp));
    if listen.is_empty() {
        return Ok(None);
    }
    let server = Server::bind(ServerConfig::new(listen))
        .await
        .context("cannot start the NBD server: change [nbd] socket / listen, or stop what uses them")?;
    for a in server.local_addrs() {
        info!("NBD exports on {a}");
    }
    Ok(Some(server))
}

/// Tells systemd the daemon is ready once every device is, or after
/// `timeout`.
async fn announce_ready(daemon: Arc<Daemon>, timeout: Duration) {
    let mut waits = tokio::task::JoinSet::new();
    for m in daemon.devices().values() {
        let device = m.device.clone();
        waits.spawn(async move { device.wait_ready(timeout).await.err().map(|_| device.name().to_owned()) });
    }
    let n = waits.len();
    let mut down = Vec::new();
    while let Some(r) = waits.join_next().await {
        if let Ok(Some(name)) = r {
            down.push(name);
        }
    }
    if down.is_empty() {
        info!(devices = n, "ready: every device has a usable path");
        notify(&format!("READY=1\nSTATUS={n} devices ready"));
    } else {
        down.sort();
        warn!(
            "ready after {timeout:?} without a usable path on {}; they keep connecting in the background (mpio device show NAME says why)",
            down.join(", ")
        );
        notify(&format!("READY=1\nSTATUS=waiting for {}", down.join(", ")));
    }
}
