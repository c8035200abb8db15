//! What each control request does.

use std::sync::Arc;
use std::time::Duration;

use mpio_mpath::{Device, DeviceError, HoldMode, PathRole, PolicyRequest, SwitchEvery};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

use super::{Daemon, reload, server, views};
use crate::control::proto::{
    EventView, Failure, PathView, PolicyChange, Request, RescanView, Response, StatusView, VERSION,
};

/// A request's outcome.
pub(super) enum Answer {
    /// One response.
    Done(Result<Value, Failure>),
    /// Past events, then (when following) the live feed, of one device
    /// or of all.
    Events(Vec<EventView>, Option<broadcast::Receiver<EventView>>, Option<String>),
}

fn ok<T: Serialize>(v: T) -> Result<Value, Failure> {
    serde_json::to_value(v).map_err(|e| Failure::new(format!("cannot encode the answer: {e}")))
}

fn done<T: Serialize>(r: Result<T, String>) -> Answer {
    Answer::Done(r.map_err(Failure::new).and_then(ok))
}

pub(super) async fn handle(d: &Arc<Daemon>, req: Request) -> Answer {
    match req {
        Request::Status => done(Ok(status(d))),
        Request::DeviceList => {
            done(Ok(d.devices().values().map(|m| views::summary(m, &m.device.snapshot())).collect::<Vec<_>>()))
        }
        Request::DeviceShow { device } => {
            let mut view = managed(d, &device, views::device);
            if let (Ok(v), Ok(dev)) = (&mut view, d.device(&device)) {
                with_sessions(&dev, &mut v.paths).await;
            }
            done(view)
        }
        Request::DeviceWait { device, all_paths, timeout_ms } => {
            Answer::Done(wait_device(d, &device, all_paths, Duration::from_millis(timeout_ms)).await)
        }
        Request::DeviceRescan { device } => Answer::Done(rescan(d, &device).await),
        Request::PathList { device } => {
            if let Some(name) = &device
                && let Err(e) = d.device(name)
            {
                return Answer::Done(Err(Failure::new(e)));
            }
            let devices: Vec<_> = d
                .devices()
                .values()
                .filter(|m| device.as_ref().is_none_or(|n| *n == m.spec.name))
                .map(|m| (m.device.clone(), views::paths(m, &m.device.snapshot())))
                .collect();
            let mut list = Vec::new();
            for (dev, mut paths) in devices {
                with_sessions(&dev, &mut paths).await;
                list.extend(paths);
            }
            done(Ok(list))
        }
        Request::PathFail { device, path } => admin(d, &device, |dev| dev.disable_path(&path)),
        Request::PathReinstate { device, path } => admin(d, &device, |dev| dev.reinstate_path(&path)),
        Request::PathSetActive { device, path } => admin(d, &device, |dev| dev.set_path_role(&path, PathRole::Active)),
        Request::PathSetStandby { device, path } => {
            admin(d, &device, |dev| dev.set_path_role(&path, PathRole::Standby))
        }
        Request::PathSetWeight { device, path, weight } => {
            admin(d, &device, |dev| dev.set_path_role(&path, PathRole::Weight(weight)))
        }
        Request::PolicyShow { device } => done(d.device(&device).map(|dev| views::policy(&device, &dev))),
        Request::PolicySet { device, policy } => Answer::Done(set_policy(d, &device, policy)),
        Request::Failback { device } => done(d.device(&device).map(|dev| dev.failback_now())),
        Request::Hold { device, mode } => done(d.device(&device).and_then(|dev| {
            let hold: HoldMode = mode.parse()?;
            dev.set_hold(hold);
            Ok(())
        })),
        Request::Events { device, last, follow } => {
            if let Some(name) = &device
                && let Err(e) = d.device(name)
            {
                return Answer::Done(Err(Failure::new(e)));
            }
            let (history, feed) = d.journal.history(device.as_deref(), last);
            let feed = follow.then_some(feed);
            Answer::Events(history, feed, device)
        }
        Request::Reload { force } => Answer::Done(reload::reload(d, force).await.map_err(Failure::new).and_then(ok)),
        Request::LogLevel { level } => done(match level {
            None => Ok(d.log.current()),
            Some(l) => d.log.set(&l).map(|()| l),
        }),
        #[cfg(feature = "ublk")]
        Request::UblkList => done(Ok(super::ublk::list(d.ublk_claims()).await)),
        #[cfg(feature = "ublk")]
        Request::UblkRemove { id } => done(super::ublk::remove(d.ublk_claims(), id).await),
        #[cfg(not(feature = "ublk"))]
        Request::UblkList | Request::UblkRemove { .. } => {
            done::<()>(Err("this mpio was built without the ublk frontend (cargo feature \"ublk\")".into()))
        }
    }
}

/// How long a path listing waits for a session to describe itself (it
/// answers between two socket reads; a listing must not hang on one).
const SESSION_VIEW_WAIT: Duration = Duration::from_secs(1);

/// Fills in each path's ISID and TSIH from its session.
async fn with_sessions(dev: &Device, paths: &mut [PathView]) {
    for p in paths {
        if let Ok(Some(s)) = tokio::time::timeout(SESSION_VIEW_WAIT, dev.session_view(&p.name)).await {
            p.isid = Some(s.isid);
            p.tsih = (s.tsih != 0).then_some(s.tsih);
        }
    }
}

/// Waits as `mpio device wait` asks; answers the device's summary.
async fn wait_device(d: &Daemon, name: &str, all_paths: bool, timeout: Duration) -> Result<Value, Failure> {
    let dev = d.device(name).map_err(Failure::new)?;
    let start = tokio::time::Instant::now();
    let waited = if all_paths { dev.wait_all_ready(timeout).await } else { dev.wait_ready(timeout).await };
    waited.map_err(|e| device_failure(&e))?;
    // Usable also means its block device is there, with frontend = "ublk"
    // (what a script mounts next).
    let frontend = managed(d, name, |m| m.frontend_ready()).map_err(Failure::new)?;
    match tokio::time::timeout_at(start + timeout, frontend).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Failure::new(format!("device {name}: {e}"))),
        Err(_) => {
            return Err(Failure::new(format!(
                "device {name}: its paths are up but its block device is not there after {}; \
                 see `mpio events --device {name}`",
                humantime::format_duration(timeout)
            )));
        }
    }
    // Reload may have removed the device while it was waited for.
    managed(d, name, |m| views::summary(m, &m.device.snapshot())).map_err(Failure::new).and_then(ok)
}

/// `mpio device rescan`: the LU's capacity read again, and the block
/// device given it (the device's own follower does the same on the
/// event; doing it here lets the answer say what happened).
async fn rescan(d: &Daemon, name: &str) -> Result<Value, Failure> {
    let dev = d.device(name).map_err(Failure::new)?;
    let r = dev.rescan().await.map_err(|e| device_failure(&e))?;
    let follow = managed(d, name, |m| m.follow_capacity()).map_err(Failure::new)?;
    let note = follow.await.map(|r| r.unwrap_or_else(|e| e));
    let view = managed(d, name, |m| RescanView {
        device: name.to_owned(),
        path: r.path.clone(),
        old_bytes: r.old,
        new_bytes: r.new,
        block_device: m.block_device(),
        block_device_bytes: m.block_device_bytes(),
        // Nothing done now: the follower may have acted on the event first.
        block_device_note: note.or_else(|| m.frontend_problem()),
        export: m.export.clone(),
    })
    .map_err(Failure::new)?;
    ok(view)
}

fn managed<T>(d: &Daemon, name: &str, f: impl FnOnce(&super::Managed) -> T) -> Result<T, String> {
    let found = d.devices().get(name).map(f);
    found.ok_or_else(|| d.unknown_device(name))
}

/// Runs an administrative change; a refusal carries the seed's code.
fn admin(d: &Daemon, name: &str, f: impl FnOnce(&Device) -> Result<(), DeviceError>) -> Answer {
    let r = d.device(name).map_err(Failure::new).and_then(|dev| f(&dev).map_err(|e| device_failure(&e)));
    Answer::Done(r.and_then(|()| ok(())))
}

fn device_failure(e: &DeviceError) -> Failure {
    Failure { message: e.to_string(), code: e.code().map(|c| format!("0x{c:08X} {}", e.symbol().unwrap_or_default())) }
}

fn status(d: &Daemon) -> StatusView {
    let cfg = d.config();
    let devices: Vec<_> = d.devices().values().map(|m| views::summary(m, &m.device.snapshot())).collect();
    StatusView {
        version: env!("CARGO_PKG_VERSION").into(),
        protocol: VERSION,
        pid: std::process::id(),
        uptime_s: d.started.elapsed().as_secs_f64(),
        config: cfg.file.display().to_string(),
        ready: devices.iter().all(|s| s.paths_usable > 0),
        metrics: d.metrics_addr.map(|a| format!("http://{a}/metrics")),
        nbd: d.nbd.as_ref().map(|s| s.local_addrs().iter().map(ToString::to_string).collect()).unwrap_or_default(),
        devices,
    }
}

fn set_policy(d: &Daemon, device: &str, change: PolicyChange) -> Result<Value, Failure> {
    let dev = d.device(device).map_err(Failure::new)?;
    let switch = change
        .switch
        .as_deref()
        .map(str::parse::<SwitchEvery>)
        .transpose()
        .map_err(|e| Failure { message: e.to_string(), code: Some("0xEFFF0056".into()) })?;
    let req = PolicyRequest {
        policy: change.policy,
        primary: change.primary,
        active: change.active,
        weights: change.weights,
        switch,
    };
    dev.set_policy(&req).map_err(|e| device_failure(&e))?;
    ok(views::policy(device, &dev))
}

/// Writes the history, then (when following) every new event of
/// `device` (or of all) until the client hangs up. Returns false when the
/// client is gone.
pub(super) async fn stream_events(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    history: Vec<EventView>,
    feed: Option<broadcast::Receiver<EventView>>,
    device: Option<String>,
) -> bool {
    let event = |ev| Response { version: VERSION, ok: None, error: None, event: Some(ev) };
    for ev in history {
        if !server::send(write, event(ev)).await {
            return false;
        }
    }
    let Some(mut feed) = feed else {
        return server::send(write, server::success(Value::Null)).await;
    };
    loop {
        let ev = match feed.recv().await {
            Ok(ev) if device.as_ref().is_some_and(|d| *d != ev.device) => continue,
            Ok(ev) => ev,
            Err(broadcast::error::RecvError::Lagged(n)) => EventView {
                time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                device: String::new(),
                path: None,
                kind: "events_lost".into(),
                reason: format!("{n} events were skipped: this client reads too slowly"),
                seed_event: None,
            },
            Err(broadcast::error::RecvError::Closed) => return false,
        };
        if !server::send(write, event(ev)).await {
            return false;
        }
    }
}
