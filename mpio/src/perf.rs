//! `mpio perf`: a load generator on one logical unit, for benchmarks
//! against libiscsi's `iscsi-perf` and `qemu-img bench`. It reports I/O
//! rate, bandwidth, latency and the CPU time this process spent per I/O.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use mpio_dsm::{Lun, cdb};
use mpio_mpath::scsi::{LuAccess, request};
use mpio_transport::name::IscsiName;
use serde_json::json;

use crate::connect::ConnectArgs;
use crate::output;

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
    /// I/Os in flight.
    #[arg(long, default_value_t = 1)]
    pub(crate) qd: usize,
    /// Seconds to run (after a 1 s warm-up).
    #[arg(long, default_value_t = 5)]
    pub(crate) seconds: u64,
    /// Use at most this many bytes of the LU (default: all of it).
    #[arg(long, value_parser = parse_size)]
    pub(crate) size: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1024),
        Some('m') => (&s[..s.len() - 1], 1024 * 1024),
        Some('g') => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (&s[..], 1),
    };
    num.parse::<u64>().map(|n| n * mult).map_err(|_| format!("{s:?} is not a size (like 4k, 1m)"))
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

struct Counters {
    ios: AtomicU64,
    lat_ns: AtomicU64,
    lat_max_ns: AtomicU64,
    measuring: AtomicBool,
}

pub(crate) async fn run(args: PerfArgs) -> Result<()> {
    let lun = Lun::from_number(args.lun).with_context(|| format!("LUN {} cannot be addressed", args.lun))?;
    let session = args.conn.connect(Some(args.target.clone())).await?;
    let lu = LuAccess::new(session.clone(), lun);
    lu.test_unit_ready().await.context("the LU is not ready")?;
    let cap = lu.capacity().await?;
    let block = u64::from(cap.block_len);
    if args.bs == 0 || args.bs % block != 0 {
        bail!("--bs {} is not a multiple of the LU's {block}-byte blocks", args.bs);
    }
    let lu_bytes = cap.capacity_bytes().unwrap_or(0);
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
        lat_max_ns: AtomicU64::new(0),
        measuring: AtomicBool::new(false),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..args.qd {
        let session = session.clone();
        let counters = counters.clone();
        let stop = stop.clone();
        let payload = payload.clone();
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (w as u64 + 1);
        let mut seq = (w as u64 * slots / args.qd as u64) % slots;
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
                let cmd = if write {
                    cdb::write16(lba, blocks, block as u32, false)
                } else {
                    cdb::read16(lba, blocks, block as u32, false)
                };
                let Ok(cmd) = cmd else { return Err(anyhow::anyhow!("cannot build the CDB for LBA {lba}")) };
                let start = Instant::now();
                let r = session.execute(request(lun, &cmd, if write { payload.clone() } else { Bytes::new() })).await?;
                if r.status != 0 {
                    bail!("I/O failed with SCSI status {:#04x}", r.status);
                }
                if counters.measuring.load(Ordering::Relaxed) {
                    let ns = start.elapsed().as_nanos() as u64;
                    counters.ios.fetch_add(1, Ordering::Relaxed);
                    counters.lat_ns.fetch_add(ns, Ordering::Relaxed);
                    counters.lat_max_ns.fetch_max(ns, Ordering::Relaxed);
                }
            }
            Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    counters.measuring.store(true, Ordering::Relaxed);
    let (t0, cpu0) = (Instant::now(), cpu_time());
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    counters.measuring.store(false, Ordering::Relaxed);
    let (elapsed, cpu) = (t0.elapsed(), cpu_time() - cpu0);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.context("worker panicked")??;
    }
    let _ = session.logout().await;
    let ios = counters.ios.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64();
    let iops = ios as f64 / secs;
    let mbps = iops * args.bs as f64 / 1e6;
    let lat_avg_us = counters.lat_ns.load(Ordering::Relaxed) as f64 / ios.max(1) as f64 / 1e3;
    let lat_max_us = counters.lat_max_ns.load(Ordering::Relaxed) as f64 / 1e3;
    let cpu_us_per_io = cpu.as_secs_f64() * 1e6 / ios.max(1) as f64;
    if args.json {
        return output::json(&json!({
            "rw": format!("{:?}", args.rw).to_lowercase(), "bs": args.bs, "qd": args.qd,
            "seconds": secs, "ios": ios, "iops": iops, "mbps": mbps,
            "lat_avg_us": lat_avg_us, "lat_max_us": lat_max_us, "cpu_us_per_io": cpu_us_per_io,
        }));
    }
    println!(
        "{:?} bs={} qd={}: {iops:.0} IOPS, {mbps:.1} MB/s, latency avg {lat_avg_us:.1} us max {lat_max_us:.0} us, CPU {cpu_us_per_io:.2} us/IO",
        args.rw, args.bs, args.qd
    );
    Ok(())
}
