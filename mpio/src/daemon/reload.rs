//! Configuration reload (SIGHUP, `mpio reload`): the file is read and
//! checked as at start; if anything in it cannot change on a running
//! daemon nothing is applied and the answer says what and how; otherwise
//! the differences with the running devices are applied without stopping
//! I/O: devices added or removed, paths added (they log in, are claimed
//! and checked before they carry I/O) or removed (drained first), the
//! policy, the hold, the log filter. Like the daemon's start, the answer
//! waits until each added device has a usable path, or `ready_timeout`
//! (then it names the ones still connecting, with each path's reason):
//! "added" means a client that connects next is served.
//!
//! A reload is all or nothing. Before anything changes, every change is
//! rehearsed on each running device's policy and path table
//! ([`rehearse`]): a removal the running policy refuses (the primary an
//! administrator chose with `mpio path set-active`, the last path) refuses
//! the whole reload. A step that still fails while applying (a session that
//! cannot be made for an added path, an administrator's change racing the
//! reload) undoes the steps before it, newest first ([`Undo`]): added
//! devices and paths are removed, the policy, hold and log filter set
//! back, removed paths added again (they log in anew). The answer names the
//! failed step and what was undone, and, if an undo failed too, what stays
//! changed. Devices are removed last, once nothing can fail any more, so a
//! removed device never has to come back.
//!
//! A device in use (its block device mounted, swap, open, under
//! device-mapper: [`in_use`]; clients connected to its NBD export) is
//! not removed: the reload is refused before anything changes, naming
//! the holders, and the device keeps running. The refusal covers the
//! whole reload, not only the removal: an
//! administrator who edited several things expects them to apply
//! together, and one that applied half would leave the file describing
//! neither the old nor the new state. `mpio reload --force` removes it
//! anyway. The check is repeated just before the device goes (something
//! may have mounted it meanwhile); refused then, the steps before are
//! undone as for any failed step.
//!
//! What changed is judged against what runs, not against the previous
//! file. Changes made with the CLI (`mpio policy set`, ...) stay until the
//! file changes the same setting or the daemon restarts.

use std::path::PathBuf;
use std::sync::Arc;

use mpio_mpath::{DeviceSnapshot, HoldMode, PathStatus, PolicyRequest, PolicySpec};

use super::notify::notify;
use super::{Daemon, in_use};
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
    Log(String),
}

/// How to take back one applied change.
enum Undo {
    /// A device was added: remove it.
    RemoveDevice(String),
    /// A path was added: remove it.
    RemovePath { device: String, path: String },
    /// A path was removed: add it again.
    AddPath { device: String, path: PathSpec },
    /// The policy changed: set the one that ran (by path names).
    Policy { device: String, request: PolicyRequest, configured: PolicyRequest },
    /// The hold changed: set the one that ran.
    Hold { device: String, hold: HoldMode },
    /// The log filter changed.
    Log(String),
    /// Nothing to undo (a removed device: the last kind of step).
    Nothing,
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
            Change::Log(filter) => write!(f, "log {filter}"),
        }
    }
}

/// Reloads the file; the running configuration stays on any refusal.
/// `force` removes devices that are in use.
pub(super) async fn reload(d: &Arc<Daemon>, force: bool) -> Result<ReloadView, String> {
    let _one_at_a_time = d.reloading.lock().await;
    notify("RELOADING=1");
    let r = apply(d, force).await;
    notify("READY=1");
    match &r {
        Ok(v) if v.changes.is_empty() => d.event("", "config_reloaded", "configuration reloaded: nothing changed"),
        Ok(v) => d.event("", "config_reloaded", &format!("configuration reloaded: {}", v.changes.join("; "))),
        Err(e) => d.event("", "config_reload_refused", e),
    }
    r
}

async fn apply(d: &Arc<Daemon>, force: bool) -> Result<ReloadView, String> {
    let file = d.config().file.clone();
    let new = config::load(&file).map_err(|e| format!("reload refused, nothing changed: {e}"))?;
    let running: Vec<DeviceSpec> = d.devices().values().map(|m| m.spec.clone()).collect();
    let mut changes = plan(&d.config(), &running, &new).map_err(|e| format!("reload refused, nothing changed: {e}"))?;
    if new.log != d.config().log && !d.log_pinned {
        changes.insert(0, Change::Log(new.log.clone()));
    }
    let snapshots: Vec<(String, DeviceSnapshot)> =
        d.devices().values().map(|m| (m.spec.name.clone(), m.device.snapshot())).collect();
    rehearse(&snapshots, &changes).map_err(|e| format!("reload refused, nothing changed: {e}"))?;
    if !force {
        for c in &changes {
            if let Change::RemoveDevice(name) = c {
                busy(d, name).await.map_err(|e| format!("reload refused, nothing changed: {e}"))?;
            }
        }
    }
    let added: Vec<String> =
        changes.iter().filter_map(|c| if let Change::AddDevice(s) = c { Some(s.name.clone()) } else { None }).collect();
    let ready_timeout = new.ready_timeout;
    let mut done = apply_changes(d, changes, force).await?;
    *d.config() = new;
    done.extend(await_added(d, added, ready_timeout).await);
    Ok(ReloadView { changes: done })
}

/// Waits, as the daemon's start does, until each added device has a usable
/// path or `timeout` passes, so that a reload that answers "added" means
/// the device serves. One that is not ready yet stays added and keeps
/// connecting; the answer says so with each path's reason.
async fn await_added(d: &Arc<Daemon>, added: Vec<String>, timeout: std::time::Duration) -> Vec<String> {
    let devices: Vec<_> = {
        let all = d.devices();
        added.iter().filter_map(|n| all.get(n).map(|m| m.device.clone())).collect()
    };
    let mut waits = tokio::task::JoinSet::new();
    for dev in devices {
        waits.spawn(async move {
            let name = dev.name().to_owned();
            dev.wait_ready(timeout).await.err().map(|e| {
                format!("device {name}: not usable yet ({e}); it keeps connecting: mpio device show {name} says why")
            })
        });
    }
    let mut not_ready: Vec<String> = waits.join_all().await.into_iter().flatten().collect();
    not_ready.sort();
    not_ready
}

/// Applies `changes` in order, or none of them: a failed step undoes the
/// ones before it. Returns what was done, one line each.
async fn apply_changes(d: &Arc<Daemon>, changes: Vec<Change>, force: bool) -> Result<Vec<String>, String> {
    let mut undo: Vec<(String, Undo)> = Vec::new();
    for change in changes {
        let line = change.to_string();
        match execute(d, change, force).await {
            Ok(u) => undo.push((line, u)),
            Err(e) => return Err(roll_back(d, &line, &e, undo).await),
        }
    }
    Ok(undo.into_iter().map(|(line, _)| line).collect())
}

/// Undoes the applied steps, newest first, after `failed` failed with
/// `why`; returns the answer: what failed, what was undone, and what could
/// not be.
async fn roll_back(d: &Arc<Daemon>, failed: &str, why: &str, applied: Vec<(String, Undo)>) -> String {
    if applied.is_empty() {
        return format!("reload failed, nothing changed: {failed}: {why}");
    }
    let mut undone = Vec::new();
    let mut stuck = Vec::new();
    for (line, u) in applied.into_iter().rev() {
        match undo(d, u).await {
            Ok(()) => undone.push(line),
            Err(e) => stuck.push(format!("{line} (cannot undo: {e})")),
        }
    }
    if stuck.is_empty() {
        format!(
            "reload failed and was rolled back: {failed}: {why}; undone: {}; the running configuration is the one before the reload",
            undone.join("; ")
        )
    } else {
        format!(
            "reload failed: {failed}: {why}; undone: {}; STILL CHANGED: {}; fix the file and reload again, or restart the daemon",
            if undone.is_empty() { "nothing".to_string() } else { undone.join("; ") },
            stuck.join("; ")
        )
    }
}

/// Plays `changes` on each device's running policy and path table without
/// touching the device: every refusal the policy would give while applying
/// (a removed path that is the running primary, a policy naming a path that
/// is gone) is found here, before anything changes. Pure.
fn rehearse(devices: &[(String, DeviceSnapshot)], changes: &[Change]) -> Result<(), String> {
    for (name, snap) in devices {
        let mut table = table_of(snap);
        let mut spec: PolicySpec = snap.policy.clone();
        for change in changes {
            let refused = |e: mpio_mpath::PolicyError| format!("{change}: {e} (0x{:08X} {})", e.code(), e.symbol());
            match change {
                Change::AddPath { device, path } if device == name => {
                    table.push(Some(path.name.clone()));
                    spec = spec.with_path(table.len() - 1);
                }
                Change::RemovePath { device, path } if device == name => {
                    let Some(id) = table.iter().position(|n| n.as_deref() == Some(path.as_str())) else {
                        return Err(format!("{change}: the device has no such path now"));
                    };
                    spec = spec.without_path(&table, id).map_err(refused)?;
                    if let Some(slot) = table.get_mut(id) {
                        *slot = None;
                    }
                }
                Change::Policy { device, request } if device == name => {
                    spec = request.validate(&table, Some(&spec)).map_err(refused)?;
                }
                _ => {}
            }
        }
    }
    Ok(())
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
    // Devices go last: nothing after them can fail, so a removed device
    // (its exports closed, its sessions logged out) never has to come back.
    changes.sort_by_key(|c| match c {
        Change::Log(_) | Change::AddDevice(_) | Change::AddPath { .. } => 0,
        Change::Policy { request, .. } if request.policy == "weighted" => 3,
        Change::Policy { .. } | Change::Hold { .. } => 1,
        Change::RemovePath { .. } => 2,
        Change::RemoveDevice(_) => 4,
    });
    Ok(changes)
}

fn device_changes(cur: &DeviceSpec, next: &DeviceSpec, changes: &mut Vec<Change>) -> Result<(), String> {
    let name = &next.name;
    if cur.fixed_part() != next.fixed_part() {
        return Err(format!(
            "device {name}: its target, LUN, CHAP, digests, identity, frontend or ublk queues changed: that needs a new device: \
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

/// Refuses the removal of device `name` while it is in use (its block
/// device held, clients on its NBD export); the refusal names the holders.
async fn busy(d: &Daemon, name: &str) -> Result<(), String> {
    let (dev, exported) = match d.devices().get(name) {
        Some(m) => (m.block_device(), m.export.is_some()),
        None => return Ok(()),
    };
    let mut holders = match dev {
        // Off the runtime's thread: it reads every process's descriptors.
        Some(dev) => tokio::task::spawn_blocking(move || in_use::holders(&PathBuf::from(dev)))
            .await
            .map_err(|e| format!("cannot tell whether its block device is in use ({e}); reload again"))?,
        None => Vec::new(),
    };
    let clients = d.nbd.as_ref().filter(|_| exported).map_or(0, |s| s.clients(name));
    if clients > 0 {
        holders.push(in_use::Holder::NbdClients { export: name.to_owned(), clients });
    }
    if holders.is_empty() { Ok(()) } else { Err(in_use::refusal(name, &holders)) }
}

/// Applies one change (`force`: a device is removed even while in use);
/// returns how to take it back.
async fn execute(d: &Arc<Daemon>, change: Change, force: bool) -> Result<Undo, String> {
    Ok(match change {
        Change::AddDevice(spec) => {
            let name = spec.name.clone();
            let m = d.start_device(*spec)?;
            d.devices().insert(name.clone(), m);
            d.event(&name, "device_added", &format!("device {name} added by a configuration reload"));
            Undo::RemoveDevice(name)
        }
        Change::RemoveDevice(name) => {
            if !force {
                busy(d, &name).await?;
            }
            let m = d.devices().remove(&name);
            if let Some(m) = m {
                d.stop_device(m).await;
            }
            d.event(&name, "device_removed", &format!("device {name} removed by a configuration reload"));
            Undo::Nothing
        }
        Change::AddPath { device, path } => {
            let dev = d.device(&device)?;
            dev.add_path(path.path_config()).map_err(|e| e.to_string())?;
            let name = path.name.clone();
            update_spec(d, &device, |s| s.paths.push(path));
            Undo::RemovePath { device, path: name }
        }
        Change::RemovePath { device, path } => {
            let dev = d.device(&device)?;
            let spec = spec_of(d, &device, |s| s.paths.iter().find(|p| p.name == path).cloned()).flatten();
            dev.remove_path(&path).await.map_err(|e| e.to_string())?;
            update_spec(d, &device, |s| s.paths.retain(|p| p.name != path));
            match spec {
                Some(path) => Undo::AddPath { device, path },
                None => Undo::Nothing,
            }
        }
        Change::Policy { device, request } => {
            let dev = d.device(&device)?;
            let before = spec_of(d, &device, |s| s.policy.clone()).unwrap_or_default();
            let snap = dev.snapshot();
            let running = snap.policy.to_request(&table_of(&snap));
            dev.set_policy(&request).map_err(|e| e.to_string())?;
            update_spec(d, &device, |s| s.policy = request);
            Undo::Policy { device, request: running, configured: before }
        }
        Change::Hold { device, hold } => {
            let dev = d.device(&device)?;
            let before = dev.snapshot().hold;
            dev.set_hold(hold);
            update_spec(d, &device, |s| s.timers.hold = hold);
            Undo::Hold { device, hold: before }
        }
        Change::Log(filter) => {
            let before = d.log.current();
            d.log.set(&filter)?;
            Undo::Log(before)
        }
    })
}

/// Takes back one applied change.
async fn undo(d: &Arc<Daemon>, u: Undo) -> Result<(), String> {
    match u {
        Undo::RemoveDevice(name) => {
            let m = d.devices().remove(&name);
            if let Some(m) = m {
                d.stop_device(m).await;
            }
            d.event(
                &name,
                "device_removed",
                &format!("device {name} removed: the reload that added it was rolled back"),
            );
        }
        Undo::RemovePath { device, path } => {
            d.device(&device)?.remove_path(&path).await.map_err(|e| e.to_string())?;
            update_spec(d, &device, |s| s.paths.retain(|p| p.name != path));
        }
        Undo::AddPath { device, path } => {
            d.device(&device)?.add_path(path.path_config()).map_err(|e| e.to_string())?;
            update_spec(d, &device, |s| s.paths.push(path));
        }
        Undo::Policy { device, request, configured } => {
            d.device(&device)?.set_policy(&request).map_err(|e| e.to_string())?;
            update_spec(d, &device, |s| s.policy = configured);
        }
        Undo::Hold { device, hold } => {
            d.device(&device)?.set_hold(hold);
            update_spec(d, &device, |s| s.timers.hold = hold);
        }
        Undo::Log(filter) => d.log.set(&filter)?,
        Undo::Nothing => {}
    }
    Ok(())
}

/// A device's path table by id (holes for removed paths), as its policy
/// names paths.
fn table_of(snap: &DeviceSnapshot) -> Vec<Option<String>> {
    let slots = snap.paths.iter().map(|p| p.id + 1).max().unwrap_or(0);
    let mut table = vec![None; slots];
    for p in &snap.paths {
        if p.status != PathStatus::Removing
            && let Some(slot) = table.get_mut(p.id)
        {
            *slot = Some(p.name.clone());
        }
    }
    table
}

fn spec_of<T>(d: &Daemon, device: &str, f: impl FnOnce(&DeviceSpec) -> T) -> Option<T> {
    d.devices().get(device).map(|m| f(&m.spec))
}

fn update_spec(d: &Daemon, device: &str, f: impl FnOnce(&mut DeviceSpec)) {
    if let Some(m) = d.devices().get_mut(device) {
        f(&mut m.spec);
    }
}

#[cfg(test)]
mod tests;
