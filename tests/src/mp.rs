//! Helpers for the multipath tests: a device over the portals of a
//! testbed tgtd, a writer that keeps verified writes going while faults
//! happen, and waits on device events.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use mpio_mpath::{Device, DeviceConfig, DeviceEvent, EventKind, PathConfig, TimerConfig};
use mpio_testbed::tgtd::Tgtd;
use mpio_transport::ConnectionSpec;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::{INITIATOR, assert_data, lun1, pattern};

/// Source address of path `i`: `127.0.10.(i+1)`. Distinct per path, so
/// the target's connection list (which shows only the initiator's
/// address) tells which path a connection belongs to.
pub fn path_source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 10, u8::try_from(i + 1).expect("fewer than 255 paths")))
}

/// Path `i` (named `p{i+1}`) through portal `portal` of `tgtd`.
pub fn path(tgtd: &Tgtd, i: usize, portal: usize) -> PathConfig {
    let mut conn = ConnectionSpec::to(tgtd.portal(portal).into());
    conn.source_addr = Some(path_source(i));
    PathConfig::new(format!("p{}", i + 1), conn)
}

/// Default timers, with a quicker probation so that tests of returning
/// paths take seconds, not tens of seconds.
pub fn test_timers() -> TimerConfig {
    TimerConfig { probation_interval: Duration::from_millis(250), ..TimerConfig::default() }
}

/// A device on LUN 1 of target `tid` with one path per portal (`n`
/// paths, p1 on portal 0, ...), round robin.
pub fn device_config(tgtd: &Tgtd, tid: u32, n: usize) -> DeviceConfig {
    let paths = (0..n).map(|i| path(tgtd, i, i)).collect();
    let mut cfg = DeviceConfig::new(
        "mp0",
        INITIATOR.parse().expect("valid initiator name"),
        tgtd.iqn(tid).parse().expect("valid target name"),
        lun1(),
        paths,
    );
    cfg.timers = test_timers();
    cfg.startup_timeout = Duration::from_secs(15);
    cfg
}

/// Opens the device and waits until every path carries I/O (or panics
/// with the states after `timeout`).
pub async fn open_all(cfg: DeviceConfig) -> Device {
    let n = cfg.paths.len();
    let dev = Device::open(cfg).await.expect("device opens");
    wait_ready(&dev, n, Duration::from_secs(15)).await;
    dev
}

/// Waits until `n` paths are active or standby.
pub async fn wait_ready(dev: &Device, n: usize, timeout: Duration) {
    wait_until(dev, timeout, &format!("{n} usable paths"), |d| usable(d) >= n).await;
}

/// Paths that are active or standby.
pub fn usable(dev: &Device) -> usize {
    dev.snapshot().paths.iter().filter(|p| p.state.is_ready()).count()
}

/// Path states by name, for assertion messages.
pub fn states(dev: &Device) -> Vec<(String, &'static str)> {
    dev.snapshot().paths.iter().map(|p| (p.name.clone(), p.state.name())).collect()
}

/// Polls `pred` on every device event (and every 50 ms) until it holds;
/// panics with the path states after `timeout`.
pub async fn wait_until(dev: &Device, timeout: Duration, what: &str, mut pred: impl FnMut(&Device) -> bool) {
    let mut rx = dev.events();
    let deadline = tokio::time::Instant::now() + timeout;
    while !pred(dev) {
        if tokio::time::Instant::now() >= deadline {
            panic!("no {what} within {timeout:?}: {:?}", states(dev));
        }
        // Events wake us at once; the poll covers changes without one
        // (counters).
        let _ = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await;
    }
}

/// Waits for the first device event `pred` accepts.
pub async fn wait_device_event(
    rx: &mut broadcast::Receiver<(SystemTime, DeviceEvent)>,
    timeout: Duration,
    what: &str,
    mut pred: impl FnMut(&DeviceEvent) -> bool,
) -> DeviceEvent {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok((_, ev))) if pred(&ev) => return ev,
            Ok(Ok((_, ev))) => seen.push(format!("{}: {}", ev.kind.name(), ev.reason)),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(e)) => panic!("event stream ended while waiting for {what}: {e}; seen {seen:?}"),
            Err(_) => panic!("no {what} within {timeout:?}; seen {seen:?}"),
        }
    }
}

/// Every event until now, without waiting.
pub fn drain(rx: &mut broadcast::Receiver<(SystemTime, DeviceEvent)>) -> Vec<DeviceEvent> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok((_, ev)) => out.push(ev),
            Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => return out,
        }
    }
}

/// Counts failovers and failbacks among `events`.
pub fn switches(events: &[DeviceEvent]) -> usize {
    events.iter().filter(|e| matches!(e.kind, EventKind::Failover { .. } | EventKind::Failback { .. })).count()
}

/// Completed requests per path, in path order.
pub fn requests(dev: &Device) -> Vec<u64> {
    dev.snapshot().paths.iter().map(|p| p.stats.total_requests()).collect()
}

/// `after - before`, per path.
pub fn delta(before: &[u64], after: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

/// The target's (sid, cid) of path `i`'s connection, found by its source
/// address.
pub fn path_connection(tgtd: &Tgtd, tid: u32, i: usize) -> Option<(u32, u32)> {
    let src = path_source(i);
    tgtd.connections(tid).expect("tgtadm conn show").into_iter().find(|c| c.address == src).map(|c| (c.sid, c.cid))
}

/// Resets path `i`'s connection from the target side (tgtadm conn
/// delete), waiting for it to exist first.
pub async fn reset_path(tgtd: &Tgtd, tid: u32, i: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some((sid, cid)) = path_connection(tgtd, tid, i) {
            tgtd.delete_connection(tid, sid, cid).expect("tgtadm conn delete");
            return;
        }
        assert!(Instant::now() < deadline, "path {i} has no connection on the target");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the writer saw.
#[derive(Debug, Default)]
pub struct WriterReport {
    /// Writes and reads that completed.
    pub ops: u64,
    /// Errors returned to the caller (each one a failure of the device's
    /// promise while a good path exists).
    pub errors: Vec<String>,
    /// The slowest single request: the longest stall a user saw.
    pub max_latency: Duration,
    /// Expected content: seed of the last acknowledged write per chunk
    /// offset.
    expected: BTreeMap<u64, u64>,
    chunk: usize,
}

impl WriterReport {
    /// Reads every chunk written back through the device and compares it.
    pub async fn verify(&self, dev: &Device) {
        for (&offset, &seed) in &self.expected {
            let got =
                dev.read(offset, self.chunk as u64).await.unwrap_or_else(|e| panic!("read back at {offset}: {e}"));
            assert_data(&got.to_bytes(), &pattern(offset, self.chunk, seed), &format!("chunk at {offset}"));
        }
    }

    /// Compares the target's backing file with what was acknowledged.
    pub fn verify_file(&self, path: &Path) {
        let disk = std::fs::read(path).expect("backing file");
        for (&offset, &seed) in &self.expected {
            let at = offset as usize;
            let on_disk = disk.get(at..at + self.chunk).expect("chunk inside the file");
            assert_data(on_disk, &pattern(offset, self.chunk, seed), &format!("backing file at {offset}"));
        }
    }

    /// Panics with the errors, if any.
    #[track_caller]
    pub fn assert_no_errors(&self) {
        assert!(
            self.errors.is_empty(),
            "{} errors reached the caller, first: {:?}",
            self.errors.len(),
            self.errors.first()
        );
        assert!(self.ops > 0, "the writer did nothing");
    }
}

/// Keeps `workers` tasks writing (and reading back) distinct chunks of a
/// region until stopped. Each chunk gets a new pattern per write, so a
/// stale write landing late, or a read from the wrong place, shows.
pub struct Writer {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<WriterReport>>,
}

impl Writer {
    /// Starts writing `len` bytes from `offset` in `chunk`-byte requests.
    pub fn start(dev: &Device, offset: u64, len: u64, chunk: usize, workers: usize) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let chunks = len / chunk as u64;
        let tasks = (0..workers as u64)
            .map(|w| {
                let (dev, stop, ops) = (dev.clone(), stop.clone(), ops.clone());
                let mine: Vec<u64> = (w..chunks).step_by(workers).map(|c| offset + c * chunk as u64).collect();
                tokio::spawn(async move { work(dev, stop, ops, mine, chunk, w).await })
            })
            .collect();
        Writer { stop, ops, tasks }
    }

    /// Completed requests so far.
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// Waits until `n` more requests complete: I/O is flowing.
    pub async fn progress(&self, n: u64, timeout: Duration) {
        let target = self.ops() + n;
        let deadline = Instant::now() + timeout;
        while self.ops() < target {
            assert!(Instant::now() < deadline, "I/O stalled: fewer than {n} requests in {timeout:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops and collects the report.
    pub async fn finish(self) -> WriterReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = WriterReport::default();
        for t in self.tasks {
            let r = t.await.expect("writer task");
            all.ops += r.ops;
            all.errors.extend(r.errors);
            all.max_latency = all.max_latency.max(r.max_latency);
            all.expected.extend(r.expected);
            all.chunk = r.chunk;
        }
        all
    }
}

async fn work(
    dev: Device,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    mine: Vec<u64>,
    chunk: usize,
    w: u64,
) -> WriterReport {
    let mut r = WriterReport { chunk, ..WriterReport::default() };
    let mut generation = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for &offset in &mine {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            generation += 1;
            let seed = (generation << 24) | (w << 16) | 0x5eed;
            let t0 = Instant::now();
            match dev.write(offset, pattern(offset, chunk, seed), false).await {
                Ok(()) => {
                    r.expected.insert(offset, seed);
                }
                Err(e) => {
                    // The chunk may hold either version now.
                    r.expected.remove(&offset);
                    r.errors.push(format!("write at {offset}: {e}"));
                }
            }
            r.max_latency = r.max_latency.max(t0.elapsed());
            r.ops += 1;
            ops.fetch_add(1, Ordering::Relaxed);
            // Every fourth write, read one back.
            if generation.is_multiple_of(4)
                && let Some(&want) = r.expected.get(&offset)
            {
                let t0 = Instant::now();
                match dev.read(offset, chunk as u64).await {
                    Ok(d) if d.to_bytes() == pattern(offset, chunk, want) => {}
                    Ok(_) => r.errors.push(format!("read at {offset}: not the data last written")),
                    Err(e) => r.errors.push(format!("read at {offset}: {e}")),
                }
                r.max_latency = r.max_latency.max(t0.elapsed());
                r.ops += 1;
                ops.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    r
}

/// A path whose every login is refused the same way: it keeps retrying,
/// reports the refusal once (`login_failed`, naming `status`), then once
/// that it keeps repeating (`login_refused_repeatedly`, naming `status`
/// and, if given, `hint`, the fix), and afterwards only counts the streak.
/// Returns the device (still retrying) for the caller to repair the
/// target and see the path log in. Written for any target: tgtd offline
/// (0x0300), LIO asked for an unknown name (0x0301).
pub async fn refused_again_and_again_is_reported_once(
    mut cfg: DeviceConfig,
    status: &str,
    hint: Option<&str>,
) -> Device {
    cfg.timers.reconnect_min = Duration::from_millis(100);
    cfg.timers.reconnect_max = Duration::from_millis(200);
    let (dev, mut events) = Device::start_watched(cfg).expect("device starts");
    let first = wait_device_event(&mut events, Duration::from_secs(10), "a login failure", |e| {
        e.kind == EventKind::LoginFailed
    })
    .await;
    assert!(first.reason.contains(status), "{}", first.reason);
    let again = wait_device_event(&mut events, Duration::from_secs(10), "the refusal reported as repeating", |e| {
        e.kind == EventKind::LoginRefusedRepeatedly
    })
    .await;
    assert!(again.reason.contains("3 logins in a row") && again.reason.contains(status), "{}", again.reason);
    if let Some(hint) = hint {
        assert!(again.reason.contains(hint), "the event says what to check: {}", again.reason);
    }
    // Further identical refusals raise nothing more, and are counted.
    wait_until(&dev, Duration::from_secs(10), "6 refusals in a row", |d| {
        d.snapshot().paths[0].stats.login_refusals_in_a_row >= 6
    })
    .await;
    let more: Vec<_> = drain(&mut events).into_iter().filter(|e| e.kind.name().starts_with("login")).collect();
    assert!(more.is_empty(), "{more:?}");
    dev
}
