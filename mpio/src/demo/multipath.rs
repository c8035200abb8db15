//! The demo's multipath step: every portal claimed into one device, I/O
//! spread over them, and one path cut on the target while verified writes
//! run: the events as they happen, and no error for the writer.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use mpio_dsm::Lun;
use mpio_lab::tgtd::Tgtd;
use mpio_mpath::{Device, DeviceConfig, EventKind, PathConfig};
use mpio_transport::ConnectionSpec;
use mpio_transport::portal::Portal;

use crate::connect::default_initiator_name;
use crate::output;

const CHUNK: usize = 64 << 10;
const WRITERS: u64 = 8;

/// Path `i`'s source address: 127.0.10.(i+1), so that the target's
/// connection list tells the paths apart (it shows only our address).
fn source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 10, u8::try_from(i + 1).unwrap_or(u8::MAX)))
}

pub(super) async fn tour(tgtd: &Tgtd, portals: &[Portal], identity: &str) -> Result<()> {
    let paths = portals
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut c = ConnectionSpec::to(p.clone());
            c.source_addr = Some(source(i));
            PathConfig::new(format!("p{}", i + 1), c)
        })
        .collect();
    let mut cfg = DeviceConfig::new(
        "demo0",
        default_initiator_name()?,
        tgtd.iqn(1).parse().context("target name")?,
        Lun::from_number(1)?,
        paths,
    );
    // A quicker probation than the default, so the cut path is seen
    // returning within the demo.
    cfg.timers.probation_interval = Duration::from_millis(250);
    cfg.expect_identity = (!identity.is_empty()).then(|| identity.to_owned());
    let dev = Device::open(cfg).await?;
    wait(&dev, Duration::from_secs(15), |d| d.snapshot().paths.iter().all(|p| p.state == "active")).await?;
    outln!("{} paths claimed into device demo0 (round robin): every one reaches {identity}", portals.len());

    let before = dev.snapshot();
    let region = 16u64 << 20;
    let writer = Writer::start(&dev, region);
    wait(&dev, Duration::from_secs(10), |_| writer.ops() >= 400).await?;
    print_paths(&dev, &before, portals);

    outln!("\nCutting p2's connection on the target while the writes go on:");
    outln!("$ tgtadm -C {} --lld iscsi --mode conn --op delete --tid 1 --sid S --cid C", tgtd.control_port());
    let mut events = dev.events();
    let conn = tgtd.connections(1)?.into_iter().find(|c| c.address == source(1)).context("p2 has no connection")?;
    let t0 = Instant::now();
    tgtd.delete_connection(1, conn.sid, conn.cid)?;
    // Until p2 carries I/O again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, ev) = tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("p2 did not return within 30 s")?
            .context("device events ended")?;
        outln!("  +{:>6.3} s  {:<18} {}", t0.elapsed().as_secs_f64(), ev.kind.name(), ev.reason);
        if ev.kind == EventKind::PathReady && ev.path == Some(1) {
            break;
        }
    }
    let back = dev.snapshot();
    let ops = writer.ops();
    wait(&dev, Duration::from_secs(10), |_| writer.ops() >= ops + 400).await?;
    outln!("p2 carries I/O again:");
    print_paths(&dev, &back, portals);
    let report = writer.finish(&dev).await;
    outln!(
        "{} requests while writing, {} errors, slowest {:.1} ms; {} chunks read back: {}",
        report.ops,
        report.errors.len(),
        report.max_latency.as_secs_f64() * 1e3,
        report.verified,
        if report.errors.is_empty() { "all identical" } else { "FAILED" }
    );
    if let Some(e) = report.errors.first() {
        bail!("the multipath device returned an error while a path was cut: {e}");
    }
    Ok(())
}

async fn wait(dev: &Device, timeout: Duration, mut pred: impl FnMut(&Device) -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut events = dev.events();
    while !pred(dev) {
        if Instant::now() >= deadline {
            let states: Vec<_> = dev.snapshot().paths.iter().map(|p| format!("{} {}", p.name, p.state)).collect();
            bail!("the device is not ready after {timeout:?}: {}", states.join(", "));
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), events.recv()).await;
    }
    Ok(())
}

fn print_paths(dev: &Device, before: &mpio_mpath::DeviceSnapshot, portals: &[Portal]) {
    let now = dev.snapshot();
    let mut rows = vec![vec![
        "PATH".to_string(),
        "PORTAL".into(),
        "STATE".into(),
        "REQUESTS".into(),
        "MB".into(),
        "AVG LATENCY".into(),
    ]];
    for (i, (p, b)) in now.paths.iter().zip(&before.paths).enumerate() {
        let n = p.stats.total_requests() - b.stats.total_requests();
        let bytes: u64 = p.stats.bytes.iter().sum::<u64>() - b.stats.bytes.iter().sum::<u64>();
        let us = (p.stats.latency_sum_us - b.stats.latency_sum_us) / n.max(1);
        rows.push(vec![
            p.name.clone(),
            portals.get(i).map_or("-".into(), ToString::to_string),
            p.state.to_string(),
            n.to_string(),
            format!("{:.1}", bytes as f64 / 1e6),
            format!("{us} us"),
        ]);
    }
    output::table(&rows);
}

/// What one writer task saw: requests, errors, the slowest request, and
/// the seed of the last acknowledged write per chunk.
#[derive(Default)]
struct Seen {
    ops: u64,
    errors: Vec<String>,
    max_latency: Duration,
    last: BTreeMap<u64, u64>,
}

/// What the writer saw.
struct Report {
    ops: u64,
    errors: Vec<String>,
    max_latency: Duration,
    verified: usize,
}

/// Verified writes of distinct 64 KiB chunks, each with a new pattern per
/// write, so a lost or misplaced write shows when read back.
struct Writer {
    stop: Arc<AtomicBool>,
    ops: Arc<std::sync::atomic::AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Seen>>,
}

fn pattern(offset: u64, seed: u64) -> Bytes {
    let mut x = offset ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..CHUNK / 8)
        .flat_map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            x.to_le_bytes()
        })
        .collect::<Vec<u8>>()
        .into()
}

impl Writer {
    fn start(dev: &Device, region: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let chunks = region / CHUNK as u64;
        let tasks = (0..WRITERS)
            .map(|w| {
                let (dev, stop, ops) = (dev.clone(), stop.clone(), ops.clone());
                tokio::spawn(async move {
                    let mine: Vec<u64> = (w..chunks).step_by(WRITERS as usize).map(|c| c * CHUNK as u64).collect();
                    let mut seen = Seen::default();
                    let mut seed = w << 32;
                    while !stop.load(Ordering::Relaxed) {
                        for &at in &mine {
                            seed += 1;
                            let t = Instant::now();
                            match dev.write(at, pattern(at, seed), false).await {
                                Ok(()) => {
                                    seen.last.insert(at, seed);
                                }
                                Err(e) => seen.errors.push(format!("write at {at}: {e}")),
                            }
                            seen.max_latency = seen.max_latency.max(t.elapsed());
                            seen.ops += 1;
                            ops.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    seen
                })
            })
            .collect();
        Writer { stop, ops, tasks }
    }

    fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    async fn finish(self, dev: &Device) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut r = Report { ops: 0, errors: Vec::new(), max_latency: Duration::ZERO, verified: 0 };
        let mut expected = BTreeMap::new();
        for t in self.tasks {
            match t.await {
                Ok(seen) => {
                    r.ops += seen.ops;
                    r.errors.extend(seen.errors);
                    r.max_latency = r.max_latency.max(seen.max_latency);
                    expected.extend(seen.last);
                }
                Err(e) => r.errors.push(format!("writer: {e}")),
            }
        }
        for (&at, &seed) in &expected {
            match dev.read(at, CHUNK as u64).await {
                Ok(d) if d.to_bytes() == pattern(at, seed) => r.verified += 1,
                Ok(_) => r.errors.push(format!("chunk at {at}: not the data last written")),
                Err(e) => r.errors.push(format!("read at {at}: {e}")),
            }
        }
        r
    }
}
