//! `mpio perf` over a multipath device: the paths, the policy, per-path
//! counts and the device's events during the measurement.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use mpio_dsm::Lun;
use mpio_mpath::{Device, DeviceConfig, DeviceSnapshot, Op, PathConfig};
use mpio_transport::ConnectionSpec;
use mpio_transport::portal::Portal;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::{PerfArgs, rel};
use crate::policy_args::PolicyArgs;

/// Multipath options of `mpio perf`.
#[derive(Args, Debug, Default)]
pub(crate) struct MultipathArgs {
    /// Another path to the LU (repeatable). With any --path or --policy,
    /// perf drives a multipath device with the device's default timers,
    /// whose paths are p1 = --portal and p2, p3, ... = each --path.
    #[arg(long = "path", value_name = "PORTAL")]
    pub(crate) paths: Vec<Portal>,
    /// The device's load-balance policy (default round-robin).
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
}

impl MultipathArgs {
    /// Run over a multipath device rather than one session.
    pub(crate) fn enabled(&self) -> bool {
        !self.paths.is_empty() || self.policy.policy.is_some()
    }
}

/// The device's portals, in path order.
fn portals(args: &PerfArgs) -> Vec<Portal> {
    std::iter::once(args.conn.portal.clone()).chain(args.multipath.paths.iter().cloned()).collect()
}

/// Opens the device over every path and waits until all of them carry
/// I/O, so the measurement starts with the full set.
pub(super) async fn open(args: &PerfArgs, lun: Lun) -> Result<Device> {
    // The login options (initiator, CHAP, digests, negotiation) are the
    // single-session ones.
    let session = args.conn.session_config(Some(args.target.clone()))?;
    let paths: Vec<PathConfig> = portals(args)
        .into_iter()
        .enumerate()
        .map(|(i, p)| PathConfig::new(format!("p{}", i + 1), ConnectionSpec::to(p)))
        .collect();
    let names: Vec<String> = paths.iter().map(|p| p.name.clone()).collect();
    let mut cfg = DeviceConfig::new("perf", session.initiator_name, args.target.clone(), lun, paths);
    cfg.auth = session.auth;
    cfg.offer = session.offer;
    if let Some(req) = args.multipath.policy.request() {
        cfg.policy = req.validate(&names, None).with_context(|| format!("--policy {}", req.policy))?;
    }
    let wait = Duration::from_secs(args.conn.login_timeout * 2 + 5);
    cfg.startup_timeout = wait;
    let dev = Device::open(cfg).await.context("the multipath device did not open")?;
    // A path refused for good (another LU, a login refused for good)
    // fails this at once rather than after `wait`.
    dev.wait_all_ready(wait).await.context("the multipath device did not come up on every path")?;
    Ok(dev)
}

/// One device event.
pub(super) struct Event {
    at: Instant,
    path: Option<String>,
    kind: &'static str,
    reason: String,
}

/// Collects the device's events from now on.
pub(super) struct EventLog {
    events: Arc<Mutex<Vec<Event>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventLog {
    pub(super) fn start(dev: &Device) -> EventLog {
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut rx = dev.events();
        let sink = events.clone();
        let task = tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok((_, e)) => sink.lock().unwrap_or_else(|e| e.into_inner()).push(Event {
                        at: e.at,
                        path: e.path_name,
                        kind: e.kind.name(),
                        reason: e.reason,
                    }),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        EventLog { events, task }
    }

    /// The events so far, with their times relative to `t0`.
    pub(super) fn finish(self, t0: Instant) -> Vec<(f64, Event)> {
        self.task.abort();
        let events = std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()));
        events.into_iter().map(|e| (rel(e.at, t0), e)).collect()
    }
}

/// Per-path counts during the measurement (`after - before`).
struct PathDelta {
    name: String,
    portal: String,
    state: &'static str,
    requests: u64,
    read_bytes: u64,
    write_bytes: u64,
    redriven: u64,
    retries: u64,
    errors: u64,
    failures: Vec<(&'static str, u64)>,
}

fn deltas(args: &PerfArgs, before: &DeviceSnapshot, after: &DeviceSnapshot) -> Vec<PathDelta> {
    let portals = portals(args);
    after
        .paths
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let b = before.paths.get(i).map(|p| p.stats.clone()).unwrap_or_default();
            let s = &a.stats;
            PathDelta {
                name: a.name.clone(),
                portal: portals.get(i).map_or_else(String::new, ToString::to_string),
                state: a.state.name(),
                requests: s.total_requests() - b.total_requests(),
                read_bytes: s.bytes_of(Op::Read) - b.bytes_of(Op::Read),
                write_bytes: s.bytes_of(Op::Write) - b.bytes_of(Op::Write),
                redriven: s.redriven - b.redriven,
                retries: s.retries - b.retries,
                errors: s.errors - b.errors,
                failures: s
                    .failures
                    .iter()
                    .map(|(k, n)| (k.label(), n - b.failures.get(k).copied().unwrap_or(0)))
                    .filter(|(_, n)| *n > 0)
                    .collect(),
            }
        })
        .collect()
}

pub(super) fn paths_json(args: &PerfArgs, before: &DeviceSnapshot, after: &DeviceSnapshot) -> Value {
    deltas(args, before, after)
        .into_iter()
        .map(|d| {
            json!({
                "name": d.name, "portal": d.portal, "state": d.state, "requests": d.requests,
                "read_bytes": d.read_bytes, "write_bytes": d.write_bytes, "bytes": d.read_bytes + d.write_bytes,
                "redriven": d.redriven, "retries": d.retries, "errors": d.errors,
                "failures": d.failures.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
            })
        })
        .collect()
}

pub(super) fn events_json(events: &[(f64, Event)]) -> Value {
    events.iter().map(|(at, e)| json!({"at_s": at, "path": e.path, "event": e.kind, "reason": e.reason})).collect()
}

pub(super) fn print_paths(args: &PerfArgs, before: &DeviceSnapshot, after: &DeviceSnapshot) {
    let mut rows = vec![
        ["path", "portal", "state", "requests", "MB", "redriven", "retries", "errors", "failures"]
            .map(String::from)
            .to_vec(),
    ];
    for d in deltas(args, before, after) {
        let failures: Vec<String> = d.failures.iter().map(|(k, n)| format!("{k}={n}")).collect();
        rows.push(vec![
            d.name,
            d.portal,
            d.state.to_owned(),
            d.requests.to_string(),
            format!("{:.1}", (d.read_bytes + d.write_bytes) as f64 / 1e6),
            d.redriven.to_string(),
            d.retries.to_string(),
            d.errors.to_string(),
            failures.join(" "),
        ]);
    }
    crate::output::table(&rows);
}

pub(super) fn print_events(events: &[(f64, Event)]) {
    for (at, e) in events {
        outln!("{at:>8.3} s  {:<4} {:<22} {}", e.path.as_deref().unwrap_or("-"), e.kind, e.reason);
    }
}
