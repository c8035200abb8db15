//! The commands that talk to a running daemon: status, device, path,
//! policy, failback, hold, events, reload, log, ublk. Human tables by default,
//! `--json` for scripts (the daemon's answer as it is).

use std::path::Path;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::control::client::Client;
use crate::control::proto::{
    DeviceSummary, DeviceView, EventView, PathView, PolicyView, ReloadView, Request, RescanView, StatusView,
    UblkDeviceView,
};
use crate::output;
use crate::policy_args::PolicyParams;

/// Output format of a command.
#[derive(Args, Debug, Clone, Copy)]
pub(crate) struct Output {
    /// Print JSON (the daemon's answer as it is).
    #[arg(long, global = true)]
    json: bool,
}

/// The commands for a running daemon.
#[derive(Subcommand, Debug)]
pub(crate) enum AdminCommand {
    /// The daemon and its devices at a glance.
    Status(Output),
    /// Multipath devices.
    Device {
        #[command(subcommand)]
        cmd: DeviceCommand,
        #[command(flatten)]
        out: Output,
    },
    /// Paths of the devices.
    Path {
        #[command(subcommand)]
        cmd: PathCommand,
        #[command(flatten)]
        out: Output,
    },
    /// Load-balance policies.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCommand,
        #[command(flatten)]
        out: Output,
    },
    /// Let paths held back (failback manual or delayed) take their I/O now.
    Failback {
        device: String,
        #[command(flatten)]
        out: Output,
    },
    /// What I/O does while no path is usable: queue (for ever), fail (at
    /// once), or a time to hold it (20s) before failing it.
    Hold {
        device: String,
        mode: String,
        #[command(flatten)]
        out: Output,
    },
    /// Path and device events (failures, failovers, failbacks, holds).
    Events(EventsArgs),
    /// Re-read the configuration file and apply what changed.
    Reload(ReloadArgs),
    /// The daemon's logging.
    Log {
        #[command(subcommand)]
        cmd: LogCommand,
        #[command(flatten)]
        out: Output,
    },
    /// The kernel's ublk devices (/dev/ublkbN), including those a killed
    /// daemon left behind.
    Ublk {
        #[command(subcommand)]
        cmd: UblkCommand,
        #[command(flatten)]
        out: Output,
    },
}

/// `mpio ublk`.
#[derive(Subcommand, Debug)]
pub(crate) enum UblkCommand {
    /// Every ublk device the driver has: number, the mpio device it
    /// serves, state, its server's pid, and which device of this daemon
    /// serves it (a device nobody serves holds its I/O until a daemon
    /// takes it over or it is removed).
    List,
    /// Remove ublk device ID, which nobody serves (I/O waiting in it
    /// fails). Refused for a device this daemon or another live process
    /// serves.
    Remove { id: u32 },
}

/// `mpio device`.
#[derive(Subcommand, Debug)]
pub(crate) enum DeviceCommand {
    /// Every device: state, policy, usable paths.
    List,
    /// One device: identity, capacity, hold, counters and its paths.
    Show { device: String },
    /// Wait until the device has a usable path (what the daemon's
    /// readiness means), or with --all-paths until every path carries I/O
    /// (scripts that must not start degraded); with frontend = "ublk",
    /// also until its block device is there. Exits 1 after the timeout,
    /// or at once when a path failed for good or the block device was
    /// refused, with the reason.
    Wait {
        device: String,
        /// Wait for every path, not just one.
        #[arg(long)]
        all_paths: bool,
        /// How long to wait (30s, 2m).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Read the LU's capacity again after resizing it on the target (as
    /// `iscsiadm -R` and `multipathd resize map` do): the device takes the
    /// new size, NBD clients see it from their next connection, and
    /// /dev/ublkbN is resized where the kernel can (Linux 6.16).
    Rescan { device: String },
}

/// `mpio path`.
#[derive(Subcommand, Debug)]
pub(crate) enum PathCommand {
    /// Paths of one device, or of every device.
    List { device: Option<String> },
    /// Take a path out of service: no new I/O (what it carries completes).
    Fail { device: String, path: String },
    /// Put a path back in service (after probation).
    Reinstate { device: String, path: String },
    /// fail-over-only: make the path primary; round-robin-subset: add it to
    /// the active set.
    SetActive { device: String, path: String },
    /// round-robin-subset: take the path out of the active set.
    SetStandby { device: String, path: String },
    /// weighted: change the path's weight (lower is preferred).
    SetWeight { device: String, path: String, weight: u32 },
}

/// `mpio policy`.
#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCommand {
    /// The running policy and its parameters.
    Show { device: String },
    /// Change the policy at runtime (I/O continues; a refused change
    /// leaves the running policy).
    Set {
        device: String,
        /// fail-over-only, round-robin, round-robin-subset, weighted,
        /// least-queue-depth, least-blocks, service-time.
        policy: String,
        #[command(flatten)]
        params: PolicyParams,
    },
}

/// `mpio log`.
#[derive(Subcommand, Debug)]
pub(crate) enum LogCommand {
    /// Show or change the daemon's log filter (error, warn, info, debug,
    /// trace, or module=level).
    Level { level: Option<String> },
}

/// `mpio events`.
#[derive(Args, Debug)]
pub(crate) struct EventsArgs {
    /// Only this device's events.
    #[arg(long)]
    device: Option<String>,
    /// How many past events to show.
    #[arg(long, default_value_t = 50)]
    last: usize,
    /// Keep printing new events as they happen (Ctrl-C stops).
    #[arg(long, short)]
    follow: bool,
    #[command(flatten)]
    out: Output,
}

/// `mpio reload`.
#[derive(Args, Debug)]
pub(crate) struct ReloadArgs {
    /// Remove the devices the file drops even while their block device is
    /// in use (mounted, open): their users get I/O errors. Without it such
    /// a reload is refused and changes nothing.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    out: Output,
}

/// Sends the command to the daemon at `socket` and prints the answer.
pub(crate) async fn run(cmd: AdminCommand, socket: &Path) -> Result<()> {
    let mut c = Client::connect(socket).await?;
    match cmd {
        AdminCommand::Status(out) => show::<StatusView>(&mut c, out, Request::Status, print_status).await,
        AdminCommand::Device { cmd: DeviceCommand::List, out } => {
            show::<Vec<DeviceSummary>>(&mut c, out, Request::DeviceList, |v| print_devices(&v)).await
        }
        AdminCommand::Device { cmd: DeviceCommand::Show { device }, out } => {
            show::<DeviceView>(&mut c, out, Request::DeviceShow { device }, print_device).await
        }
        AdminCommand::Device { cmd: DeviceCommand::Wait { device, all_paths, timeout }, out } => {
            let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            let req = Request::DeviceWait { device, all_paths, timeout_ms };
            show::<DeviceSummary>(&mut c, out, req, |s| {
                outln!("{}: {} ({} of {} paths usable)", s.name, s.state, s.paths_usable, s.paths_total);
            })
            .await
        }
        AdminCommand::Device { cmd: DeviceCommand::Rescan { device }, out } => {
            show::<RescanView>(&mut c, out, Request::DeviceRescan { device }, print_rescan).await
        }
        AdminCommand::Path { cmd: PathCommand::List { device }, out } => {
            show::<Vec<PathView>>(&mut c, out, Request::PathList { device }, |v| print_paths(&v)).await
        }
        AdminCommand::Path { cmd, out } => {
            let (req, what) = path_request(cmd);
            done(&mut c, out, req, &what).await
        }
        AdminCommand::Policy { cmd: PolicyCommand::Show { device }, out } => {
            show::<PolicyView>(&mut c, out, Request::PolicyShow { device }, print_policy).await
        }
        AdminCommand::Policy { cmd: PolicyCommand::Set { device, policy, params }, out } => {
            let req = Request::PolicySet { device, policy: params.change(&policy) };
            show::<PolicyView>(&mut c, out, req, print_policy).await
        }
        AdminCommand::Failback { device, out } => {
            let what = format!("{device}: paths held back from failback may take their I/O now");
            done(&mut c, out, Request::Failback { device }, &what).await
        }
        AdminCommand::Hold { device, mode, out } => {
            let what = format!("{device}: all-paths-down hold is now {mode}");
            done(&mut c, out, Request::Hold { device, mode }, &what).await
        }
        AdminCommand::Events(a) => {
            let req = Request::Events { device: a.device, last: a.last, follow: a.follow };
            let json = a.out.json;
            c.events(&req, |ev| {
                if json {
                    outln!("{}", serde_json::to_string(&ev)?);
                } else {
                    outln!("{}", event_line(&ev));
                }
                Ok(())
            })
            .await
        }
        AdminCommand::Reload(ReloadArgs { force, out }) => {
            show::<ReloadView>(&mut c, out, Request::Reload { force }, |v| {
                if v.changes.is_empty() {
                    outln!("configuration reloaded: nothing changed");
                }
                for line in &v.changes {
                    outln!("{line}");
                }
            })
            .await
        }
        AdminCommand::Log { cmd: LogCommand::Level { level }, out } => {
            show::<String>(&mut c, out, Request::LogLevel { level }, |l| outln!("log level: {l}")).await
        }
        AdminCommand::Ublk { cmd: UblkCommand::List, out } => {
            show::<Vec<UblkDeviceView>>(&mut c, out, Request::UblkList, |v| print_ublk(&v)).await
        }
        AdminCommand::Ublk { cmd: UblkCommand::Remove { id }, out } => {
            show::<UblkDeviceView>(&mut c, out, Request::UblkRemove { id }, |v| {
                outln!("{} removed ({})", v.block_device, opt(&v.name));
            })
            .await
        }
    }
}

fn path_request(cmd: PathCommand) -> (Request, String) {
    match cmd {
        PathCommand::List { .. } => unreachable!("listed separately"),
        PathCommand::Fail { device, path } => {
            (Request::PathFail { device: device.clone(), path: path.clone() }, format!("{device}/{path}: disabled"))
        }
        PathCommand::Reinstate { device, path } => (
            Request::PathReinstate { device: device.clone(), path: path.clone() },
            format!("{device}/{path}: reinstated (it carries I/O again after probation)"),
        ),
        PathCommand::SetActive { device, path } => {
            (Request::PathSetActive { device: device.clone(), path: path.clone() }, format!("{device}/{path}: active"))
        }
        PathCommand::SetStandby { device, path } => (
            Request::PathSetStandby { device: device.clone(), path: path.clone() },
            format!("{device}/{path}: standby"),
        ),
        PathCommand::SetWeight { device, path, weight } => (
            Request::PathSetWeight { device: device.clone(), path: path.clone(), weight },
            format!("{device}/{path}: weight {weight}"),
        ),
    }
}

/// Asks, then prints the answer as JSON or with `print`.
async fn show<T: DeserializeOwned + Serialize>(
    c: &mut Client,
    out: Output,
    req: Request,
    print: impl FnOnce(T),
) -> Result<()> {
    let v: T = c.call(&req).await?;
    if out.json {
        return output::json(&v);
    }
    print(v);
    Ok(())
}

/// Asks for a change and confirms it.
async fn done(c: &mut Client, out: Output, req: Request, what: &str) -> Result<()> {
    let v: serde_json::Value = c.call(&req).await?;
    if out.json {
        return output::json(&serde_json::json!({"ok": true, "result": v}));
    }
    outln!("{what}");
    Ok(())
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), ToString::to_string)
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

fn print_status(s: StatusView) {
    output::fields(&[
        ("daemon", format!("mpio {} (pid {}, up {:.0} s, protocol {})", s.version, s.pid, s.uptime_s, s.protocol)),
        ("config", s.config.clone()),
        ("ready", if s.ready { "yes".into() } else { "no: a device has no usable path".into() }),
        ("metrics", opt(&s.metrics)),
        ("nbd", if s.nbd.is_empty() { "-".into() } else { s.nbd.join(", ") }),
    ]);
    outln!();
    print_devices(&s.devices);
}

fn print_devices(list: &[DeviceSummary]) {
    let mut rows =
        vec![["DEVICE", "STATE", "POLICY", "PATHS", "SIZE", "EXPORT", "BLOCK", "IDENTITY"].map(String::from).to_vec()];
    for d in list {
        rows.push(vec![
            d.name.clone(),
            d.state.clone(),
            d.policy.clone(),
            format!("{}/{}", d.paths_usable, d.paths_total),
            d.capacity_bytes.map_or_else(|| "-".into(), size),
            opt(&d.export),
            opt(&d.block_device),
            opt(&d.identity),
        ]);
    }
    output::table(&rows);
}

/// The block device and its size, with why its size is not the LU's; or
/// why there is none.
fn block_device(s: &DeviceSummary) -> String {
    match (&s.block_device, s.block_device_bytes, &s.frontend_problem) {
        (Some(dev), Some(bytes), None) => format!("{dev} ({})", size(bytes)),
        (Some(dev), Some(bytes), Some(p)) => format!("{dev} ({}): {p}", size(bytes)),
        (Some(dev), None, _) => dev.clone(),
        (None, _, p) => p.clone().unwrap_or_else(|| "-".into()),
    }
}

fn print_rescan(r: RescanView) {
    if r.old_bytes == r.new_bytes {
        outln!("{}: capacity unchanged, {} (read through {})", r.device, size(r.new_bytes), r.path);
    } else {
        outln!("{}: capacity {} -> {} (read through {})", r.device, size(r.old_bytes), size(r.new_bytes), r.path);
    }
    if let (Some(dev), Some(bytes)) = (&r.block_device, r.block_device_bytes) {
        outln!("{dev}: {}", size(bytes));
    }
    if let Some(note) = &r.block_device_note {
        outln!("{note}");
    }
    if let Some(export) = &r.export {
        outln!("NBD export {export}: clients see {} from their next connection", size(r.new_bytes));
    }
}

fn print_device(d: DeviceView) {
    let s = &d.summary;
    output::fields(&[
        ("device", s.name.clone()),
        ("state", format!("{} ({} of {} paths usable)", s.state, s.paths_usable, s.paths_total)),
        ("target", format!("{} lun {}", d.target, d.lun)),
        ("identity", opt(&s.identity)),
        ("serial", opt(&d.serial)),
        (
            "size",
            s.capacity_bytes
                .map_or_else(|| "-".into(), |b| format!("{} ({} byte blocks)", size(b), opt(&d.block_size))),
        ),
        ("write cache", opt(&d.write_cache)),
        ("policy", s.policy.clone()),
        ("failback", d.failback.clone()),
        ("hold", d.hold.clone()),
        ("frontend", if s.frontends.is_empty() { "none".into() } else { s.frontends.join(", ") }),
        ("export", opt(&s.export)),
        ("block device", block_device(s)),
        ("failovers", d.failovers.to_string()),
        ("failbacks", d.failbacks.to_string()),
        (
            "all paths down",
            match d.all_paths_down_since_s {
                Some(s) => format!("now, for {s:.1} s ({:.1} s in total)", d.all_paths_down_s),
                None => format!("{:.1} s in total", d.all_paths_down_s),
            },
        ),
        ("failed on hold", d.hold_failures.to_string()),
    ]);
    outln!();
    print_paths(&d.paths);
}

fn print_paths(list: &[PathView]) {
    let mut rows = vec![
        [
            "DEVICE",
            "PATH",
            "STATE",
            "ROLE",
            "PORTAL",
            "SOURCE",
            "QD",
            "READS",
            "WRITES",
            "LAT(us)",
            "FAILS",
            "LAST FAILURE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for p in list {
        rows.push(vec![
            p.device.clone(),
            p.name.clone(),
            format!("{} {:.0}s", p.state, p.since_s),
            match (&p.role, p.weight) {
                (Some(r), _) => r.clone(),
                (None, Some(w)) => format!("weight {w}"),
                (None, None) => "-".into(),
            },
            p.portal.clone(),
            opt(&p.source),
            p.in_flight.to_string(),
            p.reads.to_string(),
            p.writes.to_string(),
            format!("{:.0}", p.latency_us),
            p.failures.to_string(),
            opt(&p.last_failure),
        ]);
    }
    output::table(&rows);
}

fn print_ublk(list: &[UblkDeviceView]) {
    let mut rows = vec![["ID", "BLOCK", "NAME", "STATE", "SERVER", "SIZE", "SERVED BY"].map(String::from).to_vec()];
    for u in list {
        rows.push(vec![
            u.id.to_string(),
            u.block_device.clone(),
            opt(&u.name),
            u.state.clone(),
            format!("{} ({})", u.pid, if u.server_alive { "running" } else { "gone" }),
            u.capacity_bytes.map_or_else(|| "-".into(), size),
            u.claimed_by.clone().unwrap_or_else(|| if u.server_alive { "another process" } else { "nobody" }.into()),
        ]);
    }
    output::table(&rows);
}

fn print_policy(p: PolicyView) {
    let mut f = vec![("device", p.device.clone()), ("policy", p.policy.clone())];
    if let Some(x) = &p.primary {
        f.push(("primary", x.clone()));
    }
    if let Some(x) = &p.active {
        f.push(("active", x.join(", ")));
    }
    if let Some(x) = &p.standby_order {
        f.push(("standby order", x.join(", ")));
    }
    if let Some(x) = &p.weights {
        f.push(("weights", x.iter().map(|(n, w)| format!("{n}={w}")).collect::<Vec<_>>().join(", ")));
    }
    if let Some(x) = &p.switch {
        f.push(("switch every", x.clone()));
    }
    f.push(("carrying I/O", if p.carrying_io.is_empty() { "none".into() } else { p.carrying_io.join(", ") }));
    output::fields(&f);
}

fn event_line(e: &EventView) -> String {
    // Daemon events (reloads) belong to no device.
    let device = if e.device.is_empty() { "-" } else { e.device.as_str() };
    let mut line = format!("{} {:<10} {:<6} {:<22} {}", e.time, device, opt(&e.path), e.kind, e.reason);
    if let Some(id) = e.seed_event {
        line.push_str(&format!(" [event {id}]"));
    }
    line
}
