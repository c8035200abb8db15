//! What `status`, `device`, `path` and `policy` show: the control
//! protocol's views built from a device's snapshot and its configuration.

use std::time::Instant;

use mpio_mpath::{Device, DeviceSnapshot, Op, PathRole, PathSnapshot, PolicySpec};

use super::Managed;
use crate::control::proto::{DeviceSummary, DeviceView, PathView, PolicyView};

/// Paths that can take I/O now.
fn usable(p: &PathSnapshot) -> bool {
    p.state.is_ready()
}

pub(super) fn summary(m: &Managed, snap: &DeviceSnapshot) -> DeviceSummary {
    let info = m.device.info();
    let usable_paths = snap.paths.iter().filter(|p| usable(p)).count();
    let state = match (&info, usable_paths) {
        (None, _) => "starting",
        (Some(_), 0) => "down",
        (Some(_), n) if n == snap.paths.len() => "optimal",
        _ => "degraded",
    };
    DeviceSummary {
        name: m.spec.name.clone(),
        state: state.into(),
        policy: snap.policy.kind().name().into(),
        paths_usable: usable_paths,
        paths_total: snap.paths.len(),
        identity: info.as_ref().map(|i| i.identity.clone()),
        capacity_bytes: info.as_ref().map(|i| i.capacity()),
        frontends: m.spec.frontend.names().into_iter().map(String::from).collect(),
        export: m.export.clone(),
        block_device: m.block_device(),
        block_device_bytes: m.block_device_bytes(),
        frontend_problem: m.frontend_problem(),
    }
}

pub(super) fn device(m: &Managed) -> DeviceView {
    let snap = m.device.snapshot();
    let info = m.device.info();
    let now = Instant::now();
    DeviceView {
        summary: summary(m, &snap),
        target: m.spec.target.to_string(),
        lun: m.spec.lun,
        serial: info.as_ref().and_then(|i| i.serial.clone()),
        block_size: info.as_ref().map(|i| i.block_len),
        write_cache: info.as_ref().map(|i| i.write_cache.describe().to_owned()),
        hold: snap.hold.to_string(),
        failback: snap.failback.to_string(),
        all_paths_down_since_s: snap.all_paths_down_since.map(|s| now.saturating_duration_since(s).as_secs_f64()),
        failovers: snap.counters.failovers,
        failbacks: snap.counters.failbacks,
        all_paths_down_s: snap.counters.all_paths_down.as_secs_f64(),
        hold_failures: snap.counters.hold_failures,
        paths: paths(m, &snap),
    }
}

pub(super) fn paths(m: &Managed, snap: &DeviceSnapshot) -> Vec<PathView> {
    let now = Instant::now();
    snap.paths
        .iter()
        .map(|p| {
            let spec = m.spec.paths.iter().find(|s| s.name == p.name);
            let (role, weight) = role(&snap.policy, p.role);
            PathView {
                device: m.spec.name.clone(),
                name: p.name.clone(),
                state: p.state.name().into(),
                portal: spec.map_or_else(String::new, |s| s.portal.to_string()),
                source: spec.and_then(|s| s.source.map(|a| a.to_string()).or_else(|| s.interface.clone())),
                role,
                weight,
                in_flight: p.in_flight,
                reads: p.stats.requests_of(Op::Read),
                writes: p.stats.requests_of(Op::Write),
                read_bytes: p.stats.bytes_of(Op::Read),
                write_bytes: p.stats.bytes_of(Op::Write),
                latency_us: p.latency_ns as f64 / 1000.0,
                failures: p.stats.failures.values().sum(),
                last_failure: p.last_cause.as_ref().map(ToString::to_string),
                since_s: now.saturating_duration_since(p.since).as_secs_f64(),
                isid: None,
                tsih: None,
            }
        })
        .collect()
}

/// A path's part in the running policy, as `mpio path list` shows it.
fn role(policy: &PolicySpec, role: Option<PathRole>) -> (Option<String>, Option<u32>) {
    match (role, policy) {
        (Some(PathRole::Active), PolicySpec::FailOverOnly { .. }) => (Some("primary".into()), None),
        (Some(PathRole::Active), _) => (Some("active".into()), None),
        (Some(PathRole::Standby), _) => (Some("standby".into()), None),
        (Some(PathRole::Weight(w)), _) => (None, Some(w)),
        (None, _) => (None, None),
    }
}

pub(super) fn policy(name: &str, device: &Device) -> PolicyView {
    let snap = device.snapshot();
    // Specs name paths by id; removed paths leave holes in the ids.
    let name_of =
        |id: &usize| snap.paths.iter().find(|p| p.id == *id).map_or_else(|| format!("#{id}"), |p| p.name.clone());
    let mut v = PolicyView {
        device: name.to_owned(),
        policy: snap.policy.kind().name().into(),
        primary: None,
        standby_order: None,
        active: None,
        weights: None,
        switch: None,
        carrying_io: snap.paths.iter().filter(|p| p.state == "active").map(|p| p.name.clone()).collect(),
    };
    match &snap.policy {
        PolicySpec::FailOverOnly { primary, standby_order } => {
            v.primary = Some(name_of(primary));
            v.standby_order = Some(standby_order.iter().map(name_of).collect());
        }
        PolicySpec::RoundRobinSubset { active, standby_order } => {
            v.active = Some(active.iter().map(name_of).collect());
            v.standby_order = Some(standby_order.iter().map(name_of).collect());
        }
        PolicySpec::Weighted { weights } => {
            v.weights = Some(
                snap.paths.iter().map(|p| (p.name.clone(), weights.get(p.id).copied().unwrap_or(u32::MAX))).collect(),
            );
        }
        PolicySpec::RoundRobin { switch } => v.switch = Some(switch.to_string()),
        _ => {}
    }
    v
}
