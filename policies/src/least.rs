//! The load-driven policies: `least-queue-depth`, `least-blocks`, `service-time`.
//!
//! Every ready path is Active (digest 1.2, open point 7); each request goes to the path
//! that minimises a per-path figure, and paths with the same minimum take turns
//! ([`Rotor`]), so equal idle paths share the load instead of the lowest id taking it
//! all. Held paths count like any ready path: these policies prefer no path, so a held
//! path takes nothing "back".

use crate::{PathId, PathView, Policy, PolicyKind, PolicySpec, Request, Rotor, ready_ids};

/// `least-queue-depth` (Microsoft's "Least Queue Depth": "The path that has the fewest number of
/// requests queued is the one where the I/O is sent"; Microsoft limits it to MCS, we
/// offer it for MPIO too). Queue depth = [`PathView::in_flight`], the commands sent on
/// the path and not completed (digest 1.2, open point 4).
#[derive(Debug)]
pub(crate) struct LeastQueueDepth {
    spec: PolicySpec,
    rotor: Rotor,
}

impl LeastQueueDepth {
    pub(crate) fn new(spec: PolicySpec) -> Self {
        LeastQueueDepth { spec, rotor: Rotor::default() }
    }
}

impl Policy for LeastQueueDepth {
    fn kind(&self) -> PolicyKind {
        PolicyKind::LeastQueueDepth
    }

    fn select(&mut self, paths: &[PathView], _req: &Request) -> Option<PathId> {
        self.rotor.pick(paths, |p| p.ready, |p| p.in_flight)
    }

    fn active(&self, paths: &[PathView]) -> Vec<PathId> {
        ready_ids(paths)
    }

    fn respec(&mut self, spec: &PolicySpec) -> bool {
        // No parameters: only the same policy is taken.
        spec == &PolicySpec::LeastQueueDepth
    }

    fn spec(&self) -> &PolicySpec {
        &self.spec
    }
}

/// `least-blocks` (Windows MSDSM "Least Blocks", anchors 2.2): the path with the fewest
/// bytes in flight ([`PathView::bytes_in_flight`]), so a few large requests weigh as
/// much as many small ones. Without MSDSM's optional sequential-I/O cache.
#[derive(Debug)]
pub(crate) struct LeastBlocks {
    spec: PolicySpec,
    rotor: Rotor,
}

impl LeastBlocks {
    pub(crate) fn new(spec: PolicySpec) -> Self {
        LeastBlocks { spec, rotor: Rotor::default() }
    }
}

impl Policy for LeastBlocks {
    fn kind(&self) -> PolicyKind {
        PolicyKind::LeastBlocks
    }

    fn select(&mut self, paths: &[PathView], _req: &Request) -> Option<PathId> {
        self.rotor.pick(paths, |p| p.ready, |p| p.bytes_in_flight)
    }

    fn active(&self, paths: &[PathView]) -> Vec<PathId> {
        ready_ids(paths)
    }

    fn respec(&mut self, spec: &PolicySpec) -> bool {
        // No parameters: only the same policy is taken.
        spec == &PolicySpec::LeastBlocks
    }

    fn spec(&self) -> &PolicySpec {
        &self.spec
    }
}

/// `service-time` (dm-multipath's service-time selector, VMware's latency PSP; anchors
/// 1.3, 3.1): the path on which this request is expected to complete first.
///
/// Expected completion time, in nanoseconds:
///
/// ```text
/// latency_ns + (bytes_in_flight + req.bytes) * 1e9 / bytes_per_sec
/// ```
///
/// Why: a request on a path waits for the bytes already queued there and then its own
/// bytes to move at the path's throughput (dm service-time's
/// `(in_flight_bytes + incoming) / throughput`, with the measured throughput in place of
/// dm's configured relative one), plus the fixed cost of one command round trip, the
/// smoothed latency (which dm leaves out). So small requests go by latency (a near
/// path beats a far one) and large ones or deep queues by throughput (a fast path
/// beats a slow one), and a path that is slowing down sees its queue grow and loses
/// traffic before it is declared failed. Commands in flight overlap on a path, so
/// latency is counted once, not per command. Integer arithmetic in `u128`, saturated
/// to `u64`; no floating point.
///
/// A path whose figures are unknown yet (`latency_ns == 0` or `bytes_per_sec == 0`:
/// the core measures both from the same completions) is estimated as equal to the
/// best known path, so it ties with it and gets tried in turn until its figures come
/// in; were it estimated as 0 it would take all I/O, were it estimated as the worst it
/// might never be measured. When no path is known, all tie: round robin. Ties take
/// turns ([`Rotor`]).
#[derive(Debug)]
pub(crate) struct ServiceTime {
    spec: PolicySpec,
    rotor: Rotor,
}

impl ServiceTime {
    pub(crate) fn new(spec: PolicySpec) -> Self {
        ServiceTime { spec, rotor: Rotor::default() }
    }
}

/// The figures of a path are known.
fn known(p: &PathView) -> bool {
    p.latency_ns > 0 && p.bytes_per_sec > 0
}

/// The expected completion time of `bytes` more on a path whose figures are known.
fn expected_ns(p: &PathView, bytes: u64) -> u64 {
    let queued = u128::from(p.bytes_in_flight) + u128::from(bytes);
    let transfer = (queued * 1_000_000_000).checked_div(u128::from(p.bytes_per_sec)).unwrap_or(0);
    u64::try_from(transfer + u128::from(p.latency_ns)).unwrap_or(u64::MAX)
}

/// The estimate for each path given one request: known paths by [`expected_ns`],
/// unknown ones as the best known path.
struct Estimate {
    bytes: u64,
    best_known: u64,
}

impl Estimate {
    fn new(paths: &[PathView], bytes: u64) -> Self {
        let best_known = paths.iter().filter(|p| p.ready && known(p)).map(|p| expected_ns(p, bytes)).min();
        Estimate { bytes, best_known: best_known.unwrap_or(0) }
    }

    fn of(&self, p: &PathView) -> u64 {
        if known(p) { expected_ns(p, self.bytes) } else { self.best_known }
    }
}

impl Policy for ServiceTime {
    fn kind(&self) -> PolicyKind {
        PolicyKind::ServiceTime
    }

    fn select(&mut self, paths: &[PathView], req: &Request) -> Option<PathId> {
        let est = Estimate::new(paths, req.bytes);
        self.rotor.pick(paths, |p| p.ready, |p| est.of(p))
    }

    fn active(&self, paths: &[PathView]) -> Vec<PathId> {
        ready_ids(paths)
    }

    fn respec(&mut self, spec: &PolicySpec) -> bool {
        // No parameters: only the same policy is taken.
        spec == &PolicySpec::ServiceTime
    }

    fn spec(&self) -> &PolicySpec {
        &self.spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    const MIB: u64 = 1 << 20;

    fn load(state: &str, in_flight: &[u32], bytes: &[u64]) -> Vec<PathView> {
        views(state)
            .into_iter()
            .map(|p| PathView {
                in_flight: in_flight.get(p.id).copied().unwrap_or(0),
                bytes_in_flight: bytes.get(p.id).copied().unwrap_or(0),
                ..p
            })
            .collect()
    }

    fn figures(state: &str, latency_ns: &[u64], bytes_per_sec: &[u64], bytes: &[u64]) -> Vec<PathView> {
        views(state)
            .into_iter()
            .map(|p| PathView {
                latency_ns: latency_ns.get(p.id).copied().unwrap_or(0),
                bytes_per_sec: bytes_per_sec.get(p.id).copied().unwrap_or(0),
                bytes_in_flight: bytes.get(p.id).copied().unwrap_or(0),
                ..p
            })
            .collect()
    }

    /// (views, request bytes, expected path); one instance per table, so ties rotate.
    fn table(spec: PolicySpec, steps: &[(Vec<PathView>, u64, Option<PathId>)]) {
        let mut p = spec.build();
        for (i, (v, bytes, want)) in steps.iter().enumerate() {
            let active = p.active(v);
            assert_eq!(active, ready_ids(v), "step {i}: every ready path is active");
            assert_eq!(p.select(v, &Request { bytes: *bytes, write: false }), *want, "step {i}");
        }
    }

    #[test]
    fn lqd_fewest_in_flight() {
        table(
            PolicySpec::LeastQueueDepth,
            &[
                (load("RRR", &[3, 1, 2], &[]), 4096, Some(P2)),
                (load("RRR", &[3, 4, 2], &[0, 0, 1 << 30]), 4096, Some(P3)),
                (load("R-R", &[3, 0, 4], &[]), 4096, Some(P1)),
                // A held path is an ordinary path here.
                (load("RRH", &[3, 2, 1], &[]), 4096, Some(P3)),
                // Ties take turns, not always the lowest id.
                (load("RRR", &[1, 1, 5], &[]), 4096, Some(P1)),
                (load("RRR", &[1, 1, 5], &[]), 4096, Some(P2)),
                (load("RRR", &[1, 1, 5], &[]), 4096, Some(P1)),
                (load("---", &[0, 0, 0], &[]), 4096, None),
            ],
        );
    }

    #[test]
    fn lb_fewest_bytes_in_flight() {
        table(
            PolicySpec::LeastBlocks,
            &[
                // One 1 MiB request outweighs eight 4 KiB ones.
                (load("RR", &[1, 8], &[MIB, 32 << 10]), 4096, Some(P2)),
                (load("RR", &[1, 8], &[4096, 32 << 10]), 4096, Some(P1)),
                (load("-R", &[0, 8], &[0, 32 << 10]), 4096, Some(P2)),
                (load("RR", &[2, 2], &[8192, 8192]), 4096, Some(P1)),
                (load("RR", &[2, 2], &[8192, 8192]), 4096, Some(P2)),
                (load("RR", &[2, 2], &[8192, 8192]), 4096, Some(P1)),
            ],
        );
    }

    #[test]
    fn service_time_expected_completion() {
        let fast = 1000 * MIB; // ~1 GB/s
        let slow = 100 * MIB;
        table(
            PolicySpec::ServiceTime,
            &[
                // Same throughput: the lower latency wins.
                (figures("RR", &[2_000_000, 500_000], &[fast, fast], &[]), 4096, Some(P2)),
                // Small request: a near slow path (0.1 ms + 40 us) beats a far fast one (1 ms + 4 us).
                (figures("RR", &[1_000_000, 100_000], &[fast, slow], &[]), 4096, Some(P2)),
                // Large request: the fast path wins despite its latency (1 ms + 16 ms vs 0.1 ms + 160 ms).
                (figures("RR", &[1_000_000, 100_000], &[fast, slow], &[]), 16 * MIB, Some(P1)),
                // A deep queue on the near path sends small requests to the far one.
                (figures("RR", &[1_000_000, 100_000], &[fast, slow], &[0, 10 * MIB]), 4096, Some(P1)),
                // Unknown figures (a new path) tie with the best known one: tried in turn.
                (figures("RRR", &[3_000_000, 1_000_000, 0], &[fast, fast, 0], &[]), 4096, Some(P2)),
                (figures("RRR", &[3_000_000, 1_000_000, 0], &[fast, fast, 0], &[]), 4096, Some(P3)),
                (figures("RRR", &[3_000_000, 1_000_000, 0], &[fast, fast, 0], &[]), 4096, Some(P2)),
                // Latency known but throughput not yet: still unknown, so it ties with
                // P1 (were its latency used, it would win every time).
                (figures("RR", &[5_000_000, 1_000_000], &[fast, 0], &[]), 4096, Some(P1)),
                (figures("RR", &[5_000_000, 1_000_000], &[fast, 0], &[]), 4096, Some(P2)),
                // A failed path with the best figures is not chosen.
                (figures("-R", &[1, 9_000_000], &[u64::MAX, 1], &[]), u64::MAX, Some(P2)),
                (figures("--", &[1, 1], &[1, 1], &[]), 4096, None),
            ],
        );
    }

    #[test]
    fn service_time_extremes_do_not_overflow() {
        let v = figures("RR", &[u64::MAX, 1], &[1, u64::MAX], &[u64::MAX, u64::MAX]);
        assert_eq!(expected_ns(&v[0], u64::MAX), u64::MAX);
        let mut p = PolicySpec::ServiceTime.build();
        assert_eq!(p.select(&v, &Request { bytes: u64::MAX, write: true }), Some(P2));
    }

    /// 1000 requests over 4 equal idle paths: the ties spread exactly.
    #[test]
    fn ties_spread_evenly() {
        for spec in [PolicySpec::LeastQueueDepth, PolicySpec::LeastBlocks, PolicySpec::ServiceTime] {
            let mut p = spec.build();
            assert_eq!(spread(&mut *p, &equal4(), &READ, 1000), [250; 4], "{spec:?}");
            let mut p = spec.build();
            assert_eq!(spread(&mut *p, &views("RRRR"), &READ, 1000), [250; 4], "{spec:?} (figures unknown)");
        }
    }

    /// A small queueing model: each tick the core places `arrivals` requests with the
    /// policy (counting them in flight) and each path completes up to its rate. Returns
    /// the requests each path got. Figures: latency grows with the queue (as an EWMA of
    /// completion latency would), throughput is the path's rate.
    fn simulate(spec: &PolicySpec, rate: &[u32], base_latency_ns: &[u64], ticks: usize, arrivals: usize) -> Vec<usize> {
        let mut p = spec.build();
        let mut v = equal4();
        v.truncate(rate.len());
        let mut got = vec![0; rate.len()];
        let req = Request { bytes: 64 << 10, write: false };
        for _ in 0..ticks {
            for _ in 0..arrivals {
                let id = p.select(&v, &req).unwrap();
                got[id] += 1;
                v[id].in_flight += 1;
                v[id].bytes_in_flight += req.bytes;
            }
            for (i, path) in v.iter_mut().enumerate() {
                let done = path.in_flight.min(rate[i]);
                path.in_flight -= done;
                path.bytes_in_flight -= u64::from(done) * req.bytes;
                // Per tick of 1 ms: rate requests of 64 KiB.
                path.bytes_per_sec = u64::from(rate[i]) * req.bytes * 1000;
                path.latency_ns = base_latency_ns[i] + u64::from(path.in_flight) * 1_000_000 / u64::from(rate[i]);
            }
        }
        got
    }

    /// Seed acceptance A8 at policy level: 2 paths, P2 slow (50 ms of delay ≈ a tenth of
    /// the rate), deep queue: P1 gets most of the I/O; equal paths split evenly.
    #[test]
    fn a8_steer_away_from_a_slow_path() {
        for spec in [PolicySpec::LeastQueueDepth, PolicySpec::LeastBlocks, PolicySpec::ServiceTime] {
            let got = simulate(&spec, &[10, 1], &[100_000, 50_000_000], 1000, 10);
            assert!(got[P1] > 5 * got[P2], "{spec:?}: {got:?}");
            let got = simulate(&spec, &[10, 10], &[100_000, 100_000], 1000, 10);
            let (a, b) = (got[P1] as f64, got[P2] as f64);
            assert!((a - b).abs() / (a + b) < 0.05, "{spec:?}: {got:?}");
        }
    }
}
