//! `mpio perf`: a load generator on one logical unit, for benchmarks
//! against libiscsi's `iscsi-perf` and `qemu-img bench`. It reports I/O
//! rate, bandwidth, latency, the longest gap without a completion and the
//! CPU time this process spent per I/O.
//!
//! By default the load runs over one session. With `--path` (more
//! portals) or `--policy`, it runs over a multipath device
//! ([`mpio_mpath::Device`], default timers) instead and also reports
//! per-path counts and the device's events ([`device`]). `--at` runs a
//! command at a given second of the measurement, to inject a fault while
//! the load runs (`bench/multipath.sh`).

mod device;

use std::os::fd::AsFd;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use mpio_dsm::{Lun, ScsiStatus, Sense, cdb};
use mpio_mpath::scsi::{LuAccess, ScsiError, request};
use mpio_mpath::{Device, IoError};
use mpio_transport::name::IscsiName;
use mpio_transport::{ScsiResult, SessionHandle};
use serde_json::json;

pub(crate) use self::device::MultipathArgs;
use crate::connect::ConnectArgs;
use crate::{advice, output};

/// Largest I/O `--bs` takes (a READ(16)/WRITE(16) of it is split by the
/// session's burst sizes anyway).
const MAX_BS: u64 = 64 << 20;

/// The access pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Pattern {
    /// Sequential reads.
    Read,
    /// Random reads.
    Randread,
    /// Sequential writes.
    Write,
    /// Random writes.
    Randwrite,
}

/// Load generator options.
#[derive(Args, Debug)]
pub(crate) struct PerfArgs {
    #[command(flatten)]
    pub(crate) conn: ConnectArgs,
    /// Target name.
    #[arg(long, short = 't')]
    pub(crate) target: IscsiName,
    /// Logical unit number.
    #[arg(long, short = 'l', default_value_t = 0)]
    pub(crate) lun: u64,
    /// Access pattern.
    #[arg(long, value_enum, default_value = "randread")]
    pub(crate) rw: Pattern,
    /// Bytes per I/O (suffixes k, m).
    #[arg(long, default_value = "4k", value_parser = parse_size)]
    pub(crate) bs: u64,
    /// I/Os in flight (1 to 4096).
    #[arg(long, default_value_t = 1, value_parser = parse_qd)]
    pub(crate) qd: usize,
    /// Seconds to run (after a 1 s warm-up; at most a day).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub(crate) seconds: u64,
    /// Use at most this many bytes of the LU (default: all of it).
    #[arg(long, value_parser = parse_size)]
    pub(crate) size: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) multipath: MultipathArgs,
    /// Run a shell command (`sh -c`) this many seconds into the
    /// measurement, e.g. to inject a fault; repeatable. Its output goes to
    /// stderr; the report says when it ran and how it exited, and perf
    /// exits non-zero if it failed.
    #[arg(long, value_name = "SECS:COMMAND", value_parser = parse_at)]
    pub(crate) at: Vec<At>,
}

/// A command to run at a given second of the measurement.
#[derive(Clone, Debug)]
pub(crate) struct At {
    pub(crate) after: Duration,
    pub(crate) command: String,
}

fn parse_at(s: &str) -> Result<At, String> {
    let (secs, command) = s.split_once(':').ok_or_else(|| format!("{s:?}: expected SECS:COMMAND"))?;
    let after = mpio_mpath::timers::parse_duration(secs)?;
    if command.trim().is_empty() {
        return Err(format!("{s:?}: the command is empty"));
    }
    Ok(At { after, command: command.to_owned() })
}

fn parse_qd(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=4096).contains(&n) => Ok(n),
        _ => Err(format!("{s:?}: give a queue depth from 1 to 4096")),
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1024),
        Some('m') => (&s[..s.len() - 1], 1024 * 1024),
        Some('g') => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (&s[..], 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size: write bytes or k, m, g, like 4k or 1m"))
}

/// CPU time (user + system) of this process, from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name in parentheses; utime and stime are the
    // 14th and 15th fields, in clock ticks (100 per second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    // The first field after it is the state (field 3).
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    Duration::from_millis(ticks * 10)
}

/// What the load runs on.
enum Target {
    Session { session: SessionHandle, lun: Lun },
    Device(Device),
}

/// Seconds from `t0` to `t`, negative when `t` is earlier.
fn rel(t: Instant, t0: Instant) -> f64 {
    match t.checked_duration_since(t0) {
        Some(d) => d.as_secs_f64(),
        None => -t0.duration_since(t).as_secs_f64(),
    }
}

/// The slowest request and the longest time without any completion,
/// during the measurement.
#[derive(Clone, Copy, Debug)]
struct Stalls {
    /// The last completion (or the start of the measurement).
    last: Instant,
    /// Longest gap between completions and where it began.
    gap: Duration,
    gap_from: Instant,
    /// Slowest request and when it was issued.
    lat_max: Duration,
    lat_max_from: Instant,
}

impl Stalls {
    fn new(t0: Instant) -> Stalls {
        Stalls { last: t0, gap: Duration::ZERO, gap_from: t0, lat_max: Duration::ZERO, lat_max_from: t0 }
    }

    fn completed(&mut self, start: Instant, now: Instant) {
        let gap = now.saturating_duration_since(self.last);
        if gap > self.gap {
            (self.gap, self.gap_from) = (gap, self.last);
        }
        self.last = self.last.max(now);
        let lat = now.saturating_duration_since(start);
        if lat > self.lat_max {
            (self.lat_max, self.lat_max_from) = (lat, start);
        }
    }
}

/// Stalls over the whole measurement, and since the first `--at` command
/// started (the fault), which leaves out the noise before it.
#[derive(Clone, Copy, Debug)]
struct Tracking {
    all: Stalls,
    /// When the first `--at` command started, and the stalls since.
    since_at: Option<(Instant, Stalls)>,
}

impl Tracking {
    fn completed(&mut self, start: Instant, now: Instant) {
        self.all.completed(start, now);
        if let Some((_, s)) = &mut self.since_at {
            s.completed(start, now);
        }
    }

    /// The first `--at` command starts now; a silence already running
    /// counts from its beginning.
    fn at_started(&mut self, now: Instant) {
        if self.since_at.is_none() {
            self.since_at = Some((now, Stalls { last: self.all.last, ..Stalls::new(now) }));
        }
    }
}

struct Counters {
    ios: AtomicU64,
    lat_ns: AtomicU64,
    measuring: AtomicBool,
    stalls: Mutex<Option<Tracking>>,
    /// Requests the device failed (multipath mode), and the first message.
    errors: AtomicU64,
    first_error: Mutex<Option<IoError>>,
}

impl Counters {
    fn stalls(&self) -> std::sync::MutexGuard<'_, Option<Tracking>> {
        self.stalls.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What an `--at` command did.
struct AtReport {
    at: At,
    ran_at: f64,
    took: f64,
    status: Result<i32, String>,
}

async fn run_at(at: At, t0: Instant, counters: Arc<Counters>) -> AtReport {
    tokio::time::sleep_until(tokio::time::Instant::from_std(t0 + at.after)).await;
    let start = Instant::now();
    if let Some(t) = counters.stalls().as_mut() {
        t.at_started(start);
    }
    let stdout = std::io::stderr().as_fd().try_clone_to_owned().map(Stdio::from).unwrap_or_else(|_| Stdio::null());
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&at.command)
        .stdin(Stdio::null())
        .stdout(stdout)
        .kill_on_drop(true)
        .status()
        .await;
    let status = match status {
        Ok(s) => s.code().ok_or_else(|| format!("killed by {s}")),
        Err(e) => Err(format!("cannot run sh: {e}")),
    };
    AtReport { ran_at: rel(start, t0), took: start.elapsed().as_secs_f64(), at, status }
}

pub(crate) async fn run(args: PerfArgs) -> Result<()> {
    let lun = Lun::from_number(args.lun).with_context(|| format!("LUN {} cannot be addressed", args.lun))?;
    if let Some(a) = args.at.iter().find(|a| a.after >= Duration::from_secs(args.seconds)) {
        bail!("--at {}:{}: the measurement lasts only {} s", a.after.as_secs_f64(), a.command, args.seconds);
    }
    let (target, block, lu_bytes) = if args.multipath.enabled() {
        let dev = device::open(&args, lun).await?;
        let info = dev.info().context("the device has no claimed path")?;
        (Target::Device(dev), u64::from(info.block_len), info.capacity())
    } else {
        let session = args.conn.connect(Some(args.target.clone())).await?;
        let lu = LuAccess::new(session.clone(), lun);
        lu.test_unit_ready().await.context("the LU is not ready")?;
        let cap = lu.capacity().await?;
        (Target::Session { session, lun }, u64::from(cap.block_len), cap.capacity_bytes().unwrap_or(0))
    };
    let target = Arc::new(target);
    if args.bs > MAX_BS {
        bail!("--bs {} is larger than {} MiB: give a smaller I/O size", args.bs, MAX_BS >> 20);
    }
    if args.bs == 0 || !args.bs.is_multiple_of(block) {
        bail!("--bs {} is not a multiple of the LU's {block}-byte blocks", args.bs);
    }
    let span = args.size.unwrap_or(lu_bytes).min(lu_bytes);
    let slots = span / args.bs;
    if slots == 0 {
        bail!("the LU ({lu_bytes} bytes) is smaller than one I/O of {} bytes", args.bs);
    }
    let blocks = (args.bs / block) as u32;
    let write = matches!(args.rw, Pattern::Write | Pattern::Randwrite);
    let random = matches!(args.rw, Pattern::Randread | Pattern::Randwrite);
    let payload = Bytes::from(vec![0x5au8; args.bs as usize]);
    let counters = Arc::new(Counters {
        ios: AtomicU64::new(0),
        lat_ns: AtomicU64::new(0),
        measuring: AtomicBool::new(false),
        stalls: Mutex::new(None),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..args.qd {
        let target = target.clone();
        let counters = counters.clone();
        let stop = stop.clone();
        let payload = payload.clone();
        let bs = args.bs;
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (w as u64 + 1);
        let mut seq = ((w as u128 * u128::from(slots) / args.qd as u128) as u64) % slots;
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let slot = if random {
                    // xorshift64: cheap and good enough to spread LBAs.
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state % slots
                } else {
                    seq = (seq + 1) % slots;
                    seq
                };
                let lba = slot * u64::from(blocks);
                let start = Instant::now();
                match &*target {
                    Target::Session { session, lun } => {
                        let cmd = if write {
                            cdb::write16(lba, blocks, block as u32, false)
                        } else {
                            cdb::read16(lba, blocks, block as u32, false)
                        };
                        let Ok(cmd) = cmd else { return Err(anyhow::anyhow!("cannot build the CDB for LBA {lba}")) };
                        let r = session
                            .execute(request(*lun, &cmd, if write { payload.clone() } else { Bytes::new() }))
                            .await?;
                        if !ScsiStatus(r.status).is_success() {
                            let op = if write { "WRITE(16)" } else { "READ(16)" };
                            return Err(status_error(op, &r).into());
                        }
                    }
                    Target::Device(dev) => {
                        let offset = lba * block;
                        let r = if write {
                            dev.write(offset, payload.clone(), false).await
                        } else {
                            dev.read(offset, bs).await.map(drop)
                        };
                        // A benchmark under faults counts what the device
                        // failed instead of stopping at the first one.
                        if let Err(e) = r {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                            counters.first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                if counters.measuring.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    let ns = now.duration_since(start).as_nanos() as u64;
                    counters.ios.fetch_add(1, Ordering::Relaxed);
                    counters.lat_ns.fetch_add(ns, Ordering::Relaxed);
                    if let Some(s) = counters.stalls().as_mut() {
                        s.completed(start, now);
                    }
                }
            }
            Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = match &*target {
        Target::Device(dev) => Some(dev.snapshot()),
        Target::Session { .. } => None,
    };
    let events = match &*target {
        Target::Device(dev) => Some(device::EventLog::start(dev)),
        Target::Session { .. } => None,
    };
    let (t0, cpu0) = (Instant::now(), cpu_time());
    *counters.stalls() = Some(Tracking { all: Stalls::new(t0), since_at: None });
    counters.measuring.store(true, Ordering::Relaxed);
    let at_tasks: Vec<_> = args.at.iter().map(|a| tokio::spawn(run_at(a.clone(), t0, counters.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    counters.measuring.store(false, Ordering::Relaxed);
    let (end, cpu) = (Instant::now(), cpu_time() - cpu0);
    let elapsed = end.duration_since(t0);
    let after = match &*target {
        Target::Device(dev) => Some(dev.snapshot()),
        Target::Session { .. } => None,
    };
    let mut tracking = counters.stalls().take().unwrap_or(Tracking { all: Stalls::new(t0), since_at: None });
    // A stall that lasts until the end of the measurement counts too.
    tracking.completed(end, end);
    let stalls = tracking.all;
    stop.store(true, Ordering::Relaxed);
    let mut ats = Vec::new();
    for t in at_tasks {
        // The commands had the rest of the measurement; 30 s more at most.
        match tokio::time::timeout(Duration::from_secs(30), t).await {
            Ok(r) => ats.push(r.context("--at task panicked")?),
            Err(_) => bail!("an --at command still runs 30 s after the measurement"),
        }
    }
    for w in workers {
        w.await.context("worker panicked")??;
    }
    match &*target {
        Target::Session { session, .. } => {
            let _ = session.logout().await;
        }
        Target::Device(_) => {}
    }
    let ios = counters.ios.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64();
    let iops = ios as f64 / secs;
    let mbps = iops * args.bs as f64 / 1e6;
    let lat_avg_us = counters.lat_ns.load(Ordering::Relaxed) as f64 / ios.max(1) as f64 / 1e3;
    let lat_max_us = stalls.lat_max.as_secs_f64() * 1e6;
    let lat_max_at_s = rel(stalls.lat_max_from, t0);
    let max_gap_us = stalls.gap.as_secs_f64() * 1e6;
    let max_gap_at_s = rel(stalls.gap_from, t0);
    // Times relative to the start of the measurement, like the others.
    let since_at_json = tracking.since_at.map(|(from, s)| {
        json!({
            "from_s": rel(from, t0),
            "lat_max_us": s.lat_max.as_secs_f64() * 1e6, "lat_max_at_s": rel(s.lat_max_from, t0),
            "max_gap_us": s.gap.as_secs_f64() * 1e6, "max_gap_at_s": rel(s.gap_from, t0),
        })
    });
    let cpu_us_per_io = cpu.as_secs_f64() * 1e6 / ios.max(1) as f64;
    let errors = counters.errors.load(Ordering::Relaxed);
    let first_error = counters.first_error.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(advice::io_error);
    let events = events.map(|e| e.finish(t0)).unwrap_or_default();
    let failed_at: Vec<String> = ats
        .iter()
        .filter_map(|a| match &a.status {
            Ok(0) => None,
            Ok(code) => Some(format!("--at command {:?} exited with status {code}", a.at.command)),
            Err(e) => Some(format!("--at command {:?}: {e}", a.at.command)),
        })
        .collect();
    if args.json {
        let mut out = json!({
            "rw": format!("{:?}", args.rw).to_lowercase(), "bs": args.bs, "qd": args.qd,
            "seconds": secs, "ios": ios, "iops": iops, "mbps": mbps,
            "lat_avg_us": lat_avg_us, "lat_max_us": lat_max_us, "cpu_us_per_io": cpu_us_per_io,
            "lat_max_at_s": lat_max_at_s, "max_gap_us": max_gap_us, "max_gap_at_s": max_gap_at_s,
            "since_at": since_at_json,
            "at": ats.iter().map(|a| json!({
                "after_s": a.at.after.as_secs_f64(), "command": a.at.command, "ran_at_s": a.ran_at,
                "took_s": a.took, "status": a.status.as_ref().ok(), "error": a.status.as_ref().err(),
            })).collect::<Vec<_>>(),
        });
        if let (Some(b), Some(a), Some(obj)) = (&before, &after, out.as_object_mut()) {
            obj.insert("errors".into(), json!(errors));
            obj.insert("first_error".into(), json!(first_error));
            obj.insert("policy".into(), json!(a.policy.kind().name()));
            obj.insert("paths".into(), device::paths_json(&args, b, a));
            obj.insert("events".into(), device::events_json(&events));
        }
        output::json(&out)?;
    } else {
        outln!(
            "{:?} bs={} qd={}: {iops:.0} IOPS, {mbps:.1} MB/s, latency avg {lat_avg_us:.1} us max {lat_max_us:.0} us, CPU {cpu_us_per_io:.2} us/IO",
            args.rw,
            args.bs,
            args.qd
        );
        outln!(
            "slowest request issued at {lat_max_at_s:.3} s; longest gap without a completion {:.1} ms from {max_gap_at_s:.3} s",
            max_gap_us / 1e3
        );
        if let Some((from, s)) = &tracking.since_at {
            outln!(
                "since the first --at command ({:.3} s): slowest request {:.1} ms issued at {:.3} s; longest gap {:.1} ms from {:.3} s",
                rel(*from, t0),
                s.lat_max.as_secs_f64() * 1e3,
                rel(s.lat_max_from, t0),
                s.gap.as_secs_f64() * 1e3,
                rel(s.gap_from, t0),
            );
        }
        for a in &ats {
            let how = match &a.status {
                Ok(code) => format!("exit {code}"),
                Err(e) => e.clone(),
            };
            outln!("at {:.3} s ({:.3} s, {how}): {}", a.ran_at, a.took, a.at.command);
        }
        if let (Some(b), Some(a)) = (&before, &after) {
            outln!(
                "policy {}; {errors} requests failed{}",
                a.policy.kind().name(),
                match &first_error {
                    Some(e) => format!(", first: {e}"),
                    None => String::new(),
                }
            );
            device::print_paths(&args, b, a);
            device::print_events(&events);
        }
    }
    let mut failed = failed_at;
    if errors > 0 {
        // A benchmark whose requests failed measured nothing useful: say
        // so in the exit status, whatever the rate of the rest.
        failed.push(format!(
            "{errors} requests failed ({ios} completed during the measurement), first: {}",
            first_error.as_deref().unwrap_or("(none kept)")
        ));
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

/// The error of a command that completed with another status than GOOD:
/// the status, and the sense data of a CHECK CONDITION.
fn status_error(op: &'static str, r: &ScsiResult) -> ScsiError {
    match ScsiStatus(r.status) {
        ScsiStatus::CHECK_CONDITION => {
            ScsiError::CheckCondition { op, sense: r.sense.as_deref().and_then(|s| Sense::parse(s).ok()) }
        }
        status => ScsiError::Status { op, status },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_takes_seconds_and_a_command() {
        let a = parse_at("4:tgtadm --op delete --mode conn --tid 1 --sid 2 --cid 0").unwrap();
        assert_eq!(a.after, Duration::from_secs(4));
        assert_eq!(a.command, "tgtadm --op delete --mode conn --tid 1 --sid 2 --cid 0");
        let a = parse_at("1.5:sh -c 'a:b'").unwrap();
        assert_eq!((a.after, a.command.as_str()), (Duration::from_millis(1500), "sh -c 'a:b'"));
        for bad in ["4", ":cmd", "x:cmd", "-1:cmd", "3:", "3:  ", "1e300:cmd", "18446744073709551616:cmd"] {
            assert!(parse_at(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes_and_queue_depths_that_do_not_fit_are_refused() {
        assert_eq!(parse_size("4k"), Ok(4096));
        assert!(parse_size("99999999999999999g").is_err());
        assert!(parse_size("18446744073709551616").is_err());
        assert!(parse_qd("0").is_err() && parse_qd("4097").is_err() && parse_qd("99999999999999999999").is_err());
        assert_eq!(parse_qd("32"), Ok(32));
    }

    #[test]
    fn stalls_are_the_slowest_request_and_the_longest_silence() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut s = Stalls::new(t0);
        s.completed(ms(0), ms(5));
        s.completed(ms(1), ms(6));
        // Issued at 2 ms, back at 2006 ms: nothing else completed between.
        s.completed(ms(2), ms(2006));
        s.completed(ms(2006), ms(2007));
        s.completed(ms(3000), ms(3001));
        assert_eq!((s.lat_max, s.lat_max_from), (Duration::from_millis(2004), ms(2)));
        assert_eq!((s.gap, s.gap_from), (Duration::from_millis(2000), ms(6)));
        // Silence until the end of the measurement counts.
        s.completed(ms(6000), ms(6000));
        assert_eq!((s.gap, s.gap_from), (Duration::from_millis(2999), ms(3001)));
    }

    #[test]
    fn since_at_leaves_out_what_came_before_but_not_a_running_silence() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut t = Tracking { all: Stalls::new(t0), since_at: None };
        t.completed(ms(0), ms(900));
        t.completed(ms(1000), ms(1010));
        t.at_started(ms(1050));
        t.at_started(ms(2000)); // only the first counts
        t.completed(ms(1040), ms(1100));
        t.completed(ms(1100), ms(1105));
        assert_eq!(t.all.lat_max, Duration::from_millis(900));
        let (from, s) = t.since_at.unwrap();
        assert_eq!(from, ms(1050));
        assert_eq!((s.lat_max, s.lat_max_from), (Duration::from_millis(60), ms(1040)));
        assert_eq!((s.gap, s.gap_from), (Duration::from_millis(90), ms(1010)));
    }
}
