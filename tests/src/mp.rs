//! Helpers for the multipath tests: a device over the portals of a
//! testbed tgtd, a writer that keeps verified writes going while faults
//! happen, waits on device events, and the scenarios every target fixture
//! runs (tgtd on the host, LIO in the test VM): a fault under verified
//! writes ([`under_load`]), a blackholed primary against what `mpio timers
//! explain` says, a login refused again and again.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use mpio_mpath::{Device, DeviceConfig, DeviceEvent, EventKind, PathConfig, PolicySpec, TimerConfig};
use mpio_testbed::netfault::Blackhole;
use mpio_testbed::tgtd::Tgtd;
use mpio_transport::ConnectionSpec;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::{Backing, INITIATOR, assert_data, lun1, pattern};

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

    /// Compares the target's disk with what was acknowledged (one read of
    /// the span written: a guest's file costs a command per read).
    pub fn verify_backing(&self, disk: &(impl Backing + ?Sized)) {
        let (Some(&first), Some(&last)) = (self.expected.keys().next(), self.expected.keys().next_back()) else {
            return;
        };
        let span = disk.read(first, (last - first) as usize + self.chunk);
        for (&offset, &seed) in &self.expected {
            let at = (offset - first) as usize;
            let on_disk = &span[at..at + self.chunk];
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

/// Runs the writer (8 MiB from offset 0 in 64 KiB writes, 8 at a time)
/// through `fault`, then checks: no error reached the caller, I/O kept
/// flowing, and every acknowledged write reads back through the device
/// and from the target's disk.
pub async fn under_load<F, Fut>(disk: &(impl Backing + ?Sized), dev: &Device, fault: F) -> WriterReport
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let writer = Writer::start(dev, 0, 8 << 20, 64 << 10, 8);
    writer.progress(200, Duration::from_secs(10)).await;
    fault().await;
    writer.progress(200, Duration::from_secs(30)).await;
    finish_verified(disk, dev, writer).await
}

/// Stops the writer and checks: no error reached the caller, and every
/// acknowledged write reads back through the device and from the
/// target's disk.
pub async fn finish_verified(disk: &(impl Backing + ?Sized), dev: &Device, writer: Writer) -> WriterReport {
    let report = writer.finish().await;
    report.assert_no_errors();
    report.verify(dev).await;
    dev.flush().await.expect("flush");
    report.verify_backing(disk);
    report
}

/// What `mpio timers explain` says of a silent path and of failover,
/// measured against a real blackhole: the primary (path 0, at `portal`)
/// of a fail-over-only pair made of `cfg`'s first two paths is
/// blackholed (host iptables, both directions) under verified writes.
///
/// Lower bounds, which no load can break (timers never fire early): the
/// path is declared dead no sooner than `detect_silent` after the last
/// byte it received, and that byte came after `t0`, when the probe write
/// whose answer the test saw was sent. Upper bounds: the explained worst
/// case counts from the moment of the hole, which lies before `t_after`;
/// a loaded machine can exceed it only by running the timers late, so the
/// excess is bounded by the lateness a probe timer on the same runtime saw
/// in the same window (each of the two keepalive timers and the event's
/// hop to the device can be that late once). The order of events is
/// strict: failed, then failover, then the fence cleared, then writes
/// complete again.
pub async fn blackholed_primary_fails_over_as_timers_explain(
    mut cfg: DeviceConfig,
    portal: SocketAddr,
    disk: &(impl Backing + ?Sized),
) {
    cfg.paths.truncate(2);
    cfg.policy = PolicySpec::FailOverOnly { primary: 0, standby_order: vec![1] };
    let explained = cfg.timers.explain();
    let dev = open_all(cfg).await;
    let mut events = dev.events();
    let lateness = LatenessProbe::start();
    let mut hole = None;
    let (mut t0, mut t_after, mut ops_at_hole) = (Instant::now(), Instant::now(), 0);
    let report = under_load(disk, &dev, || async {
        // All I/O goes to p1: the answer to this write reached p1 after t0.
        t0 = Instant::now();
        dev.write(0, pattern(0, 4096, 7), false).await.unwrap();
        hole = Some(Blackhole::new(portal).expect("blackhole"));
        t_after = Instant::now();
        ops_at_hole = dev.snapshot().paths[1].stats.requests.iter().sum::<u64>();
    })
    .await;
    let late = lateness.stop().await;
    drop(hole);
    let evs = drain(&mut events);
    let find = |what: &str, pred: &dyn Fn(&DeviceEvent) -> bool| {
        evs.iter().find(|e| pred(e)).unwrap_or_else(|| panic!("no {what}: {evs:?}")).clone()
    };
    let failed = find("p1 failed", &|e| e.kind == EventKind::PathFailed && e.path == Some(0));
    let failover = find("failover to p2", &|e| matches!(&e.kind, EventKind::Failover { to, .. } if to == &[1]));
    let fenced = find("p1's fence cleared", &|e| e.kind == EventKind::FenceCleared && e.path == Some(0));
    // The keepalive found it: not the command timeout of the writes caught
    // in the hole (io_timeout + abort), not the TCP stack.
    assert!(failed.reason.contains("nop_timeout"), "{}", failed.reason);
    let detect = failed.at.duration_since(t_after);
    eprintln!(
        "blackhole: p1 declared dead {:?} after the hole (explained: within {:?}; {:?} after t0), fence cleared \
         {:?} later (explained: at most {:?}), slowest request {:?}, timer lateness up to {late:?}",
        detect,
        explained.detect_silent,
        failed.at - t0,
        fenced.at - failed.at,
        explained.fence_login,
        report.max_latency,
    );
    assert!(
        failed.at >= t0 + explained.detect_silent,
        "declared dead {:?} after the last answer's request, sooner than the keepalive can tell ({:?})",
        failed.at - t0,
        explained.detect_silent
    );
    // Up to three late wake-ups (two keepalive timers, one hop), each at
    // most one timer tick (1 ms) later than the probe saw.
    let scheduling = (late + Duration::from_millis(1)) * 3;
    assert!(
        detect <= explained.detect_silent + scheduling,
        "declared dead {detect:?} after the hole: more than the explained {:?} plus the {scheduling:?} the \
         runtime ran late",
        explained.detect_silent
    );
    // Failover: reads move at detection, writes once the fence (a
    // reinstatement login through p2's portal, same portal group) says the
    // old nexus cannot run them; the explanation bounds that login.
    assert!(failed.at <= failover.at && failover.at <= fenced.at, "{evs:?}");
    assert!(
        fenced.at - failed.at <= explained.fence_login + scheduling,
        "fence cleared {:?} after detection: more than the explained {:?}",
        fenced.at - failed.at,
        explained.fence_login
    );
    // p2 carried the writes after the failover (it had none before).
    assert_eq!(ops_at_hole, 0, "p2 carried I/O before the failover");
    assert!(dev.snapshot().paths[1].stats.requests.iter().sum::<u64>() > 0, "p2 carried nothing after the failover");
    wait_ready(&dev, 2, Duration::from_secs(40)).await;
}

/// Measures how late timers fire on this runtime: a task sleeping 1 ms at
/// a time records its largest overshoot until stopped.
struct LatenessProbe {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Duration>,
}

impl LatenessProbe {
    fn start() -> LatenessProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut worst = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    let due = Instant::now() + Duration::from_millis(1);
                    tokio::time::sleep_until(due.into()).await;
                    worst = worst.max(Instant::now().saturating_duration_since(due));
                }
                worst
            }
        });
        LatenessProbe { stop, task }
    }

    async fn stop(self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("lateness probe")
    }
}
