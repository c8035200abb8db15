//! Configuration reload (SIGHUP, `mpio reload`): the file is read and
//! checked as at start; if anything in it cannot change on a running
//! daemon nothing is applied and the answer says what and how; otherwise
//! the differences with the running devices are applied without stopping
//! I/O: devices added or removed, paths added (they log in, are claimed
//! and checked before they carry I/O) or removed (drained first), the
//! policy, the hold.
//!
//! What changed is judged against what runs, not against the previous
//! file, so a reload after a partly failed one finishes the job. Changes
//! made with the CLI (`mpio policy set`, ...) stay until the file changes
//! the same setting or the daemon restarts.

use mpio_mpath::{HoldMode, PolicyRequest};
use std::sync::Arc;

use super::Daemon;
use super::notify::notify;
use crate::config::{self, Config, DeviceSpec, PathSpec};
use crate::control::proto::ReloadView;

/// One thing to do to the running daemon.
#[derive(Debug, Clone, PartialEq)]
enum Change {
    AddDevice(Box<DeviceSpec>),
    RemoveDevice(String),
    AddPath { device: String, path: PathSpec },
    RemovePath { device: String, path: String },
    Policy { device: String, request: PolicyRequest },
    Hold { device: String, hold: HoldMode },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::AddDevice(s) => write!(f, "device {} added ({} paths)", s.name, s.paths.len()),
            Change::RemoveDevice(n) => write!(f, "device {n} removed"),
            Change::AddPath { device, path } => {
                write!(f, "device {device}: path {} added ({})", path.name, path.portal)
            }
            Change::RemovePath { device, path } => write!(f, "device {device}: path {path} removed"),
            Change::Policy { device, request } => write!(f, "device {device}: policy {}", request.policy),
            Change::Hold { device, hold } => write!(f, "device {device}: hold {hold}"),
        }
    }
}

/// Reloads the file; the running configuration stays on any refusal.
pub(super) async fn reload(d: &Arc<Daemon>) -> Result<ReloadView, String> {
    let _one_at_a_time = d.reloading.lock().await;
    notify("RELOADING=1");
    let r = apply(d).await;
    notify("READY=1");
    match &r {
        Ok(v) if v.changes.is_empty() => d.event("", "config_reloaded", "configuration reloaded: nothing changed"),
        Ok(v) => d.event("", "config_reloaded", &format!("configuration reloaded: {}", v.changes.join("; "))),
        Err(e) => d.event("", "config_reload_refused", e),
    }
    r
}

async fn apply(d: &Arc<Daemon>) -> Result<ReloadView, String> {
    let file = d.config().file.clone();
    let new = config::load(&file).map_err(|e| e.to_string())?;
    let running: Vec<DeviceSpec> = d.devices().values().map(|m| m.spec.clone()).collect();
    let changes = plan(&d.config(), &running, &new)?;
    let mut done = Vec::new();
    for change in changes {
        let line = change.to_string();
        if let Err(e) = execute(d, change).await {
            return Err(if done.is_empty() {
                format!("{line}: {e}")
            } else {
                format!("{line}: {e} (applied before it: {}; reload again once fixed)", done.join("; "))
            });
        }
        done.push(line);
    }
    if new.log != d.config().log && !d.log_pinned {
        d.log.set(&new.log)?;
        done.push(format!("log {}", new.log));
    }
    *d.config() = new;
    Ok(ReloadView { changes: done })
}

/// What to do to make the running devices match `new`, or why it cannot
/// be done without a restart. Pure, so every rule is unit-tested.
fn plan(old: &Config, running: &[DeviceSpec], new: &Config) -> Result<Vec<Change>, String> {
    let restart =
        |what: &str| Err(format!("{what} changed: it applies when the daemon starts (systemctl restart mpio)"));
    if old.initiator != new.initiator {
        return restart("initiator");
    }
    if old.control_socket != new.control_socket {
        return restart("[daemon] control_socket");
    }
    if old.metrics != new.metrics {
        return restart("[metrics]");
    }
    if old.nbd != new.nbd {
        return restart("[nbd]");
    }
    let mut changes = Vec::new();
    for cur in running {
        if !new.devices.iter().any(|n| n.name == cur.name) {
            changes.push(Change::RemoveDevice(cur.name.clone()));
        }
    }
    for next in &new.devices {
        let Some(cur) = running.iter().find(|c| c.name == next.name) else {
            changes.push(Change::AddDevice(Box::new(next.clone())));
            continue;
        };
        device_changes(cur, next, &mut changes)?;
    }
    // Paths are added first, so a policy naming new paths applies; the
    // policy changes before paths are removed, so a removed primary or
    // active path no longer has that role when it goes. Weights name every
    // path exactly once, so a weighted policy waits for the final set.
    changes.sort_by_key(|c| match c {
        Change::AddDevice(_) | Change::AddPath { .. } => 0,
        Change::Policy { request, .. } if request.policy == "weighted" => 3,
        Change::Policy { .. } | Change::Hold { .. } => 1,
        Change::RemovePath { .. } | Change::RemoveDevice(_) => 2,
    });
    Ok(changes)
}

fn device_changes(cur: &DeviceSpec, next: &DeviceSpec, changes: &mut Vec<Change>) -> Result<(), String> {
    let name = &next.name;
    if cur.fixed_part() != next.fixed_part() {
        return Err(format!(
            "device {name}: its target, LUN, CHAP, digests, identity or frontend changed: that needs a new device: \
             give it a new name (the old one is removed, the new one added), or restart the daemon"
        ));
    }
    let mut timers = next.timers.clone();
    timers.hold = cur.timers.hold;
    if timers != cur.timers {
        return Err(format!(
            "device {name}: timers other than hold changed: they apply when the device starts: \
             give the device a new name, or restart the daemon"
        ));
    }
    let connection =
        |p: &PathSpec| (p.portal.clone(), p.source, p.interface.clone(), p.target.clone(), p.group.clone());
    for p in &next.paths {
        match cur.paths.iter().find(|c| c.name == p.name) {
            None => changes.push(Change::AddPath { device: name.clone(), path: p.clone() }),
            Some(c) if connection(c) != connection(p) => {
                return Err(format!(
                    "device {name}: path {} changed where it connects: a path is not moved in place; \
                     give it a new name (the new path is added and checked, then the old one drained and removed)",
                    p.name
                ));
            }
            Some(_) => {}
        }
    }
    for c in &cur.paths {
        if !next.paths.iter().any(|p| p.name == c.name) {
            changes.push(Change::RemovePath { device: name.clone(), path: c.name.clone() });
        }
    }
    if cur.policy != next.policy {
        changes.push(Change::Policy { device: name.clone(), request: next.policy.clone() });
    }
    if cur.timers.hold != next.timers.hold {
        changes.push(Change::Hold { device: name.clone(), hold: next.timers.hold });
    }
    Ok(())
}

async fn execute(d: &Arc<Daemon>, change: Change) -> Result<(), String> {
    match change {
        Change::AddDevice(spec) => {
            let name = spec.name.clone();
            let m = d.start_device(*spec)?;
            d.devices().insert(name.clone(), m);
            d.event(&name, "device_added", &format!("device {name} added by a configuration reload"));
        }
        Change::RemoveDevice(name) => {
            let m = d.devices().remove(&name);
            if let Some(m) = m {
                d.stop_device(m).await;
            }
            d.event(&name, "device_removed", &format!("device {name} removed by a configuration reload"));
        }
        Change::AddPath { device, path } => {
            let dev = d.device(&device)?;
            dev.add_path(path.path_config()).map_err(|e| e.to_string())?;
            update_spec(d, &device, |s| s.paths.push(path));
        }
        Change::RemovePath { device, path } => {
            let dev = d.device(&device)?;
            dev.remove_path(&path).await.map_err(|e| e.to_string())?;
            update_spec(d, &device, |s| s.paths.retain(|p| p.name != path));
        }
        Change::Policy { device, request } => {
            let dev = d.device(&device)?;
            dev.set_policy(&request).map_err(|e| e.to_string())?;
            update_spec(d, &device, |s| s.policy = request);
        }
        Change::Hold { device, hold } => {
            d.device(&device)?.set_hold(hold);
            update_spec(d, &device, |s| s.timers.hold = hold);
        }
    }
    Ok(())
}

fn update_spec(d: &Daemon, device: &str, f: impl FnOnce(&mut DeviceSpec)) {
    if let Some(m) = d.devices().get_mut(device) {
        f(&mut m.spec);
    }
}

#[cfg(test)]
mod tests;
