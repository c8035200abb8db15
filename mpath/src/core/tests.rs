//! The device core with a virtual clock: hold, probation, damping,
//! fences, retries, verification, administration. Policy semantics are
//! proven in the policies crate; here round robin is enough except where
//! a test says otherwise.

use std::time::{Duration, Instant};

use mpio_policies::{PathRole, PolicyRequest, PolicySpec, SwitchEvery};

use super::*;
use crate::block::{Errno, IoError, IoErrorKind};
use crate::failure::{CauseKind, FenceFailed, ProbeFailed};
use crate::stats::Op;
use crate::timers::{FailbackMode, HoldMode};

const S: Duration = Duration::from_secs(1);

struct T {
    c: DeviceCore,
    now: Instant,
}

fn rr() -> PolicySpec {
    PolicySpec::RoundRobin { switch: SwitchEvery::Ios(1) }
}

impl T {
    fn new(n: usize, timers: TimerConfig) -> T {
        T::with_policy(n, timers, rr())
    }

    fn with_policy(n: usize, timers: TimerConfig, policy: PolicySpec) -> T {
        let now = Instant::now();
        let names = (0..n).map(|i| format!("p{i}")).collect();
        T { c: DeviceCore::new(timers, names, policy, now), now }
    }

    /// Claims every path.
    fn all_up(mut self) -> T {
        for p in 0..self.c.path_names().len() {
            self.c.session_up(self.now, p, false);
        }
        self.events();
        self
    }

    /// The path of the next request, completed at once.
    fn serve(&mut self) -> PathId {
        let t = self.pick(Op::Read);
        self.done(t, Op::Read, Completion::Success);
        t.path
    }

    /// A path's connection resets, its session logs in again at once.
    fn bounce(&mut self, path: PathId) {
        self.c.session_down(self.now, path, FailureCause::new(CauseKind::Connection, "reset"), false);
        self.c.session_up(self.now, path, true);
    }

    fn active(&self) -> Vec<&'static str> {
        self.c.snapshot().paths.iter().map(|p| p.state.name()).collect()
    }

    /// All paths logged in and claimed.
    fn up(n: usize) -> T {
        let mut t = T::new(n, TimerConfig::default());
        for p in 0..n {
            t.c.session_up(t.now, p, false);
        }
        t.events();
        t
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.c.handle_timeout(self.now);
    }

    fn events(&mut self) -> Vec<DeviceEvent> {
        std::iter::from_fn(|| self.c.poll_event()).collect()
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.c.poll_action()).collect()
    }

    fn pick(&mut self, op: Op) -> Ticket {
        match self.c.select(self.now, op, 4096) {
            Selection::Path(t) => t,
            other => panic!("expected a path, got {other:?}"),
        }
    }

    fn done(&mut self, t: Ticket, op: Op, c: Completion) -> Verdict {
        self.c.complete(self.now, Ticket { op, ..t }, Duration::from_micros(100), c, 0)
    }

    fn lost(&mut self, t: Ticket, op: Op) -> Verdict {
        self.done(
            t,
            op,
            Completion::PathFailure {
                cause: FailureCause::new(CauseKind::Connection, "reset"),
                may_still_execute: true,
            },
        )
    }

    /// Runs probes until the path is ready again (answering each Ok).
    fn pass_probation(&mut self, path: PathId) {
        for _ in 0..100 {
            if self.c.status(path) == Some(PathStatus::Ready) {
                return;
            }
            let next = self.c.poll_timeout().expect("a probe is scheduled");
            self.now = self.now.max(next);
            self.c.handle_timeout(self.now);
            for a in self.actions() {
                if let Action::Probe(p) = a {
                    self.c.probe_done(self.now, p, Ok(()));
                }
            }
        }
        panic!("path {path} never passed probation");
    }
}

/// The fence epoch of a path's first failure (the one before is its
/// predecessor's, which the first login clears).
const FIRST_FAILURE: u64 = FenceState::PREDECESSOR + 1;

/// A request sent on `path` after `failures` of its failures.
fn sent(path: PathId, failures: u64) -> Ticket {
    Ticket { path, epoch: FenceState::PREDECESSOR + failures, op: Op::Write, bytes: 4096 }
}

fn kinds(evs: &[DeviceEvent]) -> Vec<&'static str> {
    evs.iter().map(|e| e.kind.name()).collect()
}

#[test]
fn requests_are_held_until_the_first_path_is_claimed() {
    let mut t = T::new(2, TimerConfig::default());
    assert_eq!(t.c.select(t.now, Op::Read, 512), Selection::Hold(Some(t.now + 20 * S)));
    // Starting up is not an outage: no hold event until a path was seen.
    assert!(t.events().is_empty());
    t.c.session_up(t.now, 1, false);
    assert_eq!(kinds(&t.events()), vec!["path_ready"]);
    assert_eq!(t.pick(Op::Read).path, 1);
    assert_eq!(t.c.snapshot().paths[1].state, "active");
    assert_eq!(t.c.snapshot().paths[0].state, "connecting");
}

#[test]
fn round_robin_spreads_and_counts_in_flight() {
    let mut t = T::up(2);
    let a = t.pick(Op::Read);
    let b = t.pick(Op::Write);
    assert_ne!(a.path, b.path);
    let s = t.c.snapshot();
    assert_eq!((s.paths[0].in_flight, s.paths[1].in_flight), (1, 1));
    assert_eq!(t.done(a, Op::Read, Completion::Success), Verdict::Done);
    assert_eq!(t.done(b, Op::Write, Completion::Success), Verdict::Done);
    let s = t.c.snapshot();
    assert_eq!(s.paths[0].in_flight + s.paths[1].in_flight, 0);
    assert_eq!(s.paths[a.path].stats.requests_of(Op::Read), 1);
    assert_eq!(s.paths[b.path].stats.bytes_of(Op::Write), 4096);
}

#[test]
fn a_read_on_a_failed_path_goes_again_at_once_and_a_write_waits_for_the_fence() {
    let mut t = T::up(2);
    t.c.set_group(0, Some("g".into()));
    t.c.set_group(1, Some("g".into()));
    // Round robin: one of the next two requests goes to path 0.
    let a = t.pick(Op::Read);
    let b = t.pick(Op::Read);
    let r = if a.path == 0 { a } else { b };
    assert_eq!(r.path, 0);
    assert_eq!(t.lost(r, Op::Read), Verdict::Redrive { fence: None });
    // The session still looks up: probation, until its down event says
    // otherwise; that event is the same incident, not a second failure.
    assert_eq!(t.c.status(0), Some(PathStatus::Probation { passed: 0 }));
    t.c.session_down(t.now, 0, FailureCause::new(CauseKind::Connection, "reset"), false);
    assert_eq!(t.c.status(0), Some(PathStatus::Reconnecting));
    let evs = t.events();
    assert_eq!(kinds(&evs).iter().filter(|k| **k == "path_failed").count(), 1);
    assert!(evs.iter().any(|e| e.seed_event == Some(20)));
    assert_eq!(t.c.snapshot().paths[0].stats.failures.values().sum::<u64>(), 1, "one incident");
    // The fence goes through the other path of the same portal group.
    assert_eq!(t.actions(), vec![Action::Fence { path: 0, epoch: FIRST_FAILURE, via: vec![1] }]);
    // A write sent on path 0 before the failure waits for that fence.
    let fence = Fence { path: 0, epoch: FIRST_FAILURE };
    let write_ticket = sent(0, 0);
    assert_eq!(t.lost(write_ticket, Op::Write), Verdict::Redrive { fence: Some(fence) });
    assert!(!t.c.fence_cleared(fence));
    t.c.fence_done(t.now, 0, FIRST_FAILURE, Ok(()));
    assert!(t.c.fence_cleared(fence));
    assert!(kinds(&t.events()).contains(&"fence_cleared"));
    // Re-driven requests land on path 1.
    assert_eq!(t.pick(Op::Write).path, 1);
}

#[test]
fn without_a_healthy_portal_in_the_group_the_fence_times_out() {
    let mut t = T::up(2);
    t.c.set_group(0, Some("a".into()));
    t.c.set_group(1, Some("b".into()));
    let w = sent(0, 0);
    assert!(matches!(t.lost(w, Op::Write), Verdict::Redrive { fence: Some(_) }));
    assert!(t.actions().is_empty(), "another portal group cannot fence path 0");
    let fence = Fence { path: 0, epoch: FIRST_FAILURE };
    t.advance(21 * S);
    assert!(!t.c.fence_cleared(fence));
    t.advance(S);
    assert!(t.c.fence_cleared(fence), "DefaultTime2Wait + DefaultTime2Retain passed");
}

#[test]
fn a_failed_fence_is_tried_again_and_a_returning_portal_is_used() {
    let mut t = T::up(3);
    for p in 0..3 {
        t.c.set_group(p, Some("g".into()));
    }
    t.lost(sent(0, 0), Op::Write);
    assert_eq!(t.actions(), vec![Action::Fence { path: 0, epoch: FIRST_FAILURE, via: vec![1, 2] }]);
    t.c.fence_done(t.now, 0, FIRST_FAILURE, Err(FenceFailed("login timed out".into())));
    assert!(t.actions().is_empty());
    t.advance(S);
    assert!(
        t.actions().contains(&Action::Fence { path: 0, epoch: FIRST_FAILURE, via: vec![1, 2] }),
        "tried again after 1 s"
    );

    // No healthy portal in the group: the fence waits for one to return.
    let mut t = T::up(2);
    t.c.set_group(0, Some("g".into()));
    t.c.set_group(1, Some("g".into()));
    t.c.session_down(t.now, 1, FailureCause::new(CauseKind::Connection, "reset"), false);
    t.lost(sent(0, 0), Op::Write);
    t.actions();
    t.c.session_up(t.now, 1, false);
    t.pass_probation(1);
    assert!(t.actions().contains(&Action::Fence { path: 0, epoch: FIRST_FAILURE, via: vec![1] }));
}

#[test]
fn reinstatement_of_the_path_clears_its_fence() {
    let mut t = T::up(2);
    let fence = Fence { path: 0, epoch: FIRST_FAILURE };
    t.lost(sent(0, 0), Op::Write);
    t.c.session_down(t.now, 0, FailureCause::new(CauseKind::Connection, "reset"), false);
    assert!(!t.c.fence_cleared(fence));
    t.advance(2 * S);
    t.c.session_up(t.now, 0, true);
    assert!(t.c.fence_cleared(fence));
    assert_eq!(t.c.status(0), Some(PathStatus::Probation { passed: 0 }));
}

#[test]
fn a_confirmed_abort_needs_no_fence() {
    let mut t = T::up(2);
    let v = t.done(
        sent(0, 0),
        Op::Write,
        Completion::PathFailure { cause: FailureCause::new(CauseKind::IoTimeout, "aborted"), may_still_execute: false },
    );
    assert_eq!(v, Verdict::Redrive { fence: None });
    // The session is still up: probation starts without a reconnect.
    assert_eq!(t.c.status(0), Some(PathStatus::Probation { passed: 0 }));
}

#[test]
fn probation_takes_three_clean_probes() {
    let mut t = T::up(2);
    t.c.session_down(t.now, 0, FailureCause::new(CauseKind::Connection, "reset"), false);
    t.events();
    t.advance(2 * S);
    t.c.session_up(t.now, 0, true);
    assert_eq!(kinds(&t.events()), vec!["fence_cleared", "path_reconnected", "probation_started"]);
    for i in 0..3 {
        t.c.handle_timeout(t.now);
        assert_eq!(t.actions(), vec![Action::Probe(0)], "probe {i}");
        // Never chosen during probation.
        for _ in 0..4 {
            let k = t.pick(Op::Read);
            assert_eq!(k.path, 1);
            t.done(k, Op::Read, Completion::Success);
        }
        t.c.probe_done(t.now, 0, Ok(()));
        t.now += S;
    }
    assert_eq!(t.c.status(0), Some(PathStatus::Ready));
    assert!(kinds(&t.events()).contains(&"path_ready"));
}

#[test]
fn a_failed_probe_restarts_probation_later() {
    let mut t = T::up(1);
    t.c.session_down(t.now, 0, FailureCause::new(CauseKind::Connection, "reset"), false);
    t.c.session_up(t.now, 0, true);
    t.c.handle_timeout(t.now);
    assert_eq!(t.actions(), vec![Action::Probe(0)]);
    t.c.probe_done(t.now, 0, Err(ProbeFailed("NOT READY".into())));
    assert!(kinds(&t.events()).contains(&"probation_probe_failed"));
    assert_eq!(t.c.status(0), Some(PathStatus::Probation { passed: 0 }));
    // Second failure within the window: the next probe waits damping_base.
    let next = t.c.poll_timeout().unwrap();
    assert_eq!(next - t.now, 2 * S);
}

#[test]
fn a_flapping_path_is_damped() {
    let mut t = T::up(2);
    let mut ready_events = 0;
    let mut failovers_before = t.c.snapshot().counters.failovers;
    // The path's session drops every 2 s and comes back 1 s later.
    for cycle in 0..30 {
        t.c.session_down(t.now, 0, FailureCause::new(CauseKind::Connection, "flap"), false);
        t.advance(S);
        t.c.session_up(t.now, 0, true);
        let deadline = t.now + S;
        while let Some(at) = t.c.poll_timeout().filter(|at| *at <= deadline) {
            t.now = at;
            t.c.handle_timeout(t.now);
            for a in t.actions() {
                if let Action::Probe(p) = a {
                    t.c.probe_done(t.now, p, Ok(()));
                }
            }
        }
        t.now = deadline;
        ready_events += t.events().iter().filter(|e| e.kind == EventKind::PathReady).count();
        let _ = cycle;
    }
    // 3 probes take 2 s after the first; with damping the path never
    // carries I/O while it flaps.
    assert_eq!(ready_events, 0, "a path that flaps every 2 s never rejoins");
    failovers_before = t.c.snapshot().counters.failovers - failovers_before;
    assert!(failovers_before <= 1, "failovers: {failovers_before}");
    // Calm again: after the damping wait and probation it returns.
    t.pass_probation(0);
    assert_eq!(t.c.status(0), Some(PathStatus::Ready));
}

#[test]
fn hold_then_eio_then_recovery() {
    let mut t = T::up(1);
    t.c.session_down(t.now, 0, FailureCause::new(CauseKind::Connection, "reset"), false);
    let t0 = t.now;
    assert_eq!(t.c.select(t.now, Op::Read, 512), Selection::Hold(Some(t0 + 20 * S)));
    t.advance(19 * S);
    assert!(matches!(t.c.select(t.now, Op::Read, 512), Selection::Hold(_)));
    t.advance(S);
    assert!(kinds(&t.events()).contains(&"hold_expired"));
    let Selection::Fail(e) = t.c.select(t.now, Op::Read, 512) else { panic!() };
    assert_eq!((e.kind, e.errno), (IoErrorKind::NoPath, Errno::Io));
    // A path returns: I/O works again, and the episode is counted.
    t.c.session_up(t.now, 0, true);
    t.pass_probation(0);
    assert_eq!(t.pick(Op::Read).path, 0);
    assert!(t.c.snapshot().counters.all_paths_down >= 20 * S);
    assert_eq!(t.c.snapshot().counters.hold_failures, 1);
}

#[test]
fn the_hold_runs_from_the_last_path_failing_not_from_the_next_request() {
    let mut t = T::up(2);
    for p in [0, 1] {
        t.c.session_down(t.now, p, FailureCause::new(CauseKind::Connection, "reset"), false);
    }
    assert_eq!(kinds(&t.events()).iter().filter(|k| **k == "hold_started").count(), 1);
    // No request during the outage: the hold still runs out on time.
    t.advance(20 * S);
    assert!(kinds(&t.events()).contains(&"hold_expired"));
    t.advance(5 * S);
    let Selection::Fail(e) = t.c.select(t.now, Op::Write, 512) else { panic!("a late request waited a new hold") };
    assert_eq!(e.errno, Errno::Io);
    assert!(t.c.snapshot().all_paths_down_since.is_some());
}

#[test]
fn hold_modes_switch_at_runtime() {
    let mut t = T::up(1);
    t.c.session_down(t.now, 0, FailureCause::new(CauseKind::Connection, "reset"), false);
    t.c.set_hold(HoldMode::Queue);
    t.advance(3600 * S);
    assert_eq!(t.c.select(t.now, Op::Read, 512), Selection::Hold(None));
    t.c.set_hold(HoldMode::Fail);
    assert!(matches!(t.c.select(t.now, Op::Read, 512), Selection::Fail(_)));
}

#[test]
fn transient_conditions_are_retried_then_failed() {
    let mut t = T::up(1);
    let k = t.pick(Op::Read);
    let ua = Completion::Retry { immediate: true, why: "UNIT ATTENTION".into() };
    assert_eq!(t.c.complete(t.now, k, S, ua.clone(), 0), Verdict::Retry(Duration::ZERO));
    let k = t.pick(Op::Read);
    let busy = Completion::Retry { immediate: false, why: "BUSY".into() };
    assert_eq!(t.c.complete(t.now, k, S, busy.clone(), 2), Verdict::Retry(S));
    let k = t.pick(Op::Read);
    let Verdict::Fail(e) = t.c.complete(t.now, k, S, busy, 3) else { panic!() };
    assert_eq!(e.kind, IoErrorKind::RetriesExhausted);
    assert!(e.message.contains("BUSY") && e.message.contains("3 retries"), "{e}");
    assert_eq!(t.c.snapshot().paths[0].stats.errors, 1, "the exhausted retry is an error for the caller");
    // Retries never fail the path.
    assert_eq!(t.c.status(0), Some(PathStatus::Ready));
}

#[test]
fn device_errors_go_to_the_caller_without_failover() {
    let mut t = T::up(2);
    let k = t.pick(Op::Write);
    let v = t.done(
        k,
        Op::Write,
        Completion::Fatal { errno: Errno::ReservationConflict, why: "RESERVATION CONFLICT".into() },
    );
    assert_eq!(
        v,
        Verdict::Fail(IoError {
            kind: IoErrorKind::Device,
            errno: Errno::ReservationConflict,
            message: "RESERVATION CONFLICT".into()
        })
    );
    assert!(t.c.snapshot().paths.iter().all(|p| p.status == PathStatus::Ready));
    assert_eq!(t.c.snapshot().counters.failovers, 0);
    // Counted as an error of the path that carried it, not as a failure
    // or a retry.
    let stats = &t.c.snapshot().paths[k.path].stats;
    assert_eq!((stats.errors, stats.retries, stats.redriven), (1, 0, 0));
    assert!(stats.failures.is_empty(), "{:?}", stats.failures);
}

#[test]
fn disabled_paths_carry_nothing_until_reinstated() {
    let mut t = T::up(2);
    t.c.disable(t.now, 1);
    for _ in 0..4 {
        let k = t.pick(Op::Read);
        assert_eq!(k.path, 0);
        t.done(k, Op::Read, Completion::Success);
    }
    assert_eq!(t.c.snapshot().paths[1].state, "disabled");
    t.c.reinstate(t.now, 1);
    assert_eq!(t.c.status(1), Some(PathStatus::Probation { passed: 0 }));
    t.pass_probation(1);
    let evs = t.events();
    assert!(kinds(&evs).contains(&"path_disabled") && kinds(&evs).contains(&"path_reinstated"));
}

#[test]
fn path_verification_probes_ready_paths() {
    let timers = TimerConfig { path_verify: true, path_verify_period: 30 * S, ..Default::default() };
    let mut t = T::new(2, timers);
    t.c.session_up(t.now, 0, false);
    t.c.session_up(t.now, 1, false);
    t.advance(29 * S);
    assert!(t.actions().is_empty());
    t.advance(S);
    assert_eq!(t.actions(), vec![Action::Probe(0), Action::Probe(1)]);
    t.c.probe_done(t.now, 0, Ok(()));
    t.c.probe_done(t.now, 1, Err(ProbeFailed("TEST UNIT READY: no answer".into())));
    assert_eq!(t.c.status(1), Some(PathStatus::Probation { passed: 0 }));
    assert_eq!(t.c.snapshot().paths[1].last_cause.as_ref().unwrap().kind, CauseKind::Verify);
    // Every state change is an event: failed, then probation (the session
    // is still up).
    let evs = t.events();
    let p1: Vec<_> = evs.iter().filter(|e| e.path == Some(1)).map(|e| e.kind.name()).collect();
    assert_eq!(p1[p1.len() - 2..], ["path_failed", "probation_started"], "{evs:?}");
    // The next verification of path 0 is a period later.
    t.advance(29 * S);
    assert!(!t.actions().contains(&Action::Probe(0)));
}

#[test]
fn failover_is_counted_once_per_change() {
    let mut t = T::up(3);
    t.c.session_down(t.now, 2, FailureCause::new(CauseKind::NopTimeout, "no answer"), false);
    let evs = t.events();
    assert!(
        evs.iter().any(|e| matches!(&e.kind, EventKind::Failover { from, to } if from.len() == 3 && to.len() == 2))
    );
    assert!(evs.iter().any(|e| e.seed_event == Some(48)));
    assert_eq!(t.c.snapshot().counters.failovers, 1);
    // A repeated report of the same failure changes nothing.
    t.c.session_down(t.now, 2, FailureCause::new(CauseKind::NopTimeout, "no answer"), false);
    assert_eq!(t.c.snapshot().counters.failovers, 1);
}

fn fail_over_only(timers: TimerConfig) -> T {
    let policy = PolicySpec::FailOverOnly { primary: 0, standby_order: vec![2, 1] };
    T::with_policy(3, timers, policy).all_up()
}

#[test]
fn fail_over_only_promotes_one_standby_in_order_and_fails_back_immediately() {
    let mut t = fail_over_only(TimerConfig::default());
    assert_eq!(t.active(), vec!["active", "standby", "standby"]);
    assert!((0..5).all(|_| t.serve() == 0));
    t.c.session_down(t.now, 0, FailureCause::new(CauseKind::Connection, "reset"), false);
    // The configured order says p2 before p1.
    assert!((0..5).all(|_| t.serve() == 2));
    assert_eq!(t.active(), vec!["reconnecting", "standby", "active"]);
    let evs = t.events();
    assert!(evs.iter().any(|e| matches!(&e.kind, EventKind::Failover { from, to } if from == &[0] && to == &[2])));
    t.c.session_up(t.now, 0, true);
    assert_eq!(t.serve(), 2, "not during probation");
    t.pass_probation(0);
    let evs = t.events();
    assert!(evs.iter().any(|e| matches!(&e.kind, EventKind::Failback { from, to } if from == &[2] && to == &[0])));
    assert_eq!(t.serve(), 0);
    assert_eq!(t.c.snapshot().counters.failbacks, 1);
}

#[test]
fn manual_failback_waits_for_the_administrator() {
    let mut t = fail_over_only(TimerConfig { failback: FailbackMode::Manual, ..TimerConfig::default() });
    t.bounce(0);
    t.pass_probation(0);
    assert!(t.c.snapshot().paths[0].failback_held);
    assert!((0..5).all(|_| t.serve() == 2), "the standby keeps the I/O");
    assert_eq!(t.active(), vec!["standby", "standby", "active"]);
    // The held primary is still better than nothing.
    t.c.session_down(t.now, 2, FailureCause::new(CauseKind::Connection, "reset"), false);
    assert_eq!(t.serve(), 0);
    t.bounce(2);
    t.pass_probation(2);
    t.c.failback_now(t.now);
    assert_eq!(t.serve(), 0);
    assert!(!t.c.snapshot().paths[0].failback_held);
}

#[test]
fn delayed_failback_waits_its_delay_after_probation() {
    let mut t = fail_over_only(TimerConfig { failback: FailbackMode::Delayed(10 * S), ..TimerConfig::default() });
    t.bounce(0);
    t.pass_probation(0);
    let ready_at = t.now;
    assert_eq!(t.serve(), 2);
    t.advance(9 * S);
    assert_eq!(t.serve(), 2);
    assert_eq!(t.c.poll_timeout(), Some(ready_at + 10 * S), "the delay is a timer");
    t.now = ready_at + 10 * S;
    t.c.handle_timeout(t.now);
    assert_eq!(t.serve(), 0);
    assert!(kinds(&t.events()).contains(&"failback"));
}

#[test]
fn round_robin_subset_promotes_one_standby_only_when_every_active_path_is_down() {
    let policy = PolicySpec::RoundRobinSubset { active: vec![0, 1], standby_order: vec![2, 3] };
    let mut t = T::with_policy(4, TimerConfig::default(), policy).all_up();
    let mut seen: Vec<PathId> = (0..8).map(|_| t.serve()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, vec![0, 1]);
    t.c.session_down(t.now, 0, FailureCause::new(CauseKind::Connection, "reset"), false);
    assert!((0..4).all(|_| t.serve() == 1), "one active path left: no standby yet");
    t.c.session_down(t.now, 1, FailureCause::new(CauseKind::Connection, "reset"), false);
    assert!((0..4).all(|_| t.serve() == 2), "exactly one standby, the first in order");
    t.c.session_down(t.now, 2, FailureCause::new(CauseKind::Connection, "reset"), false);
    assert!((0..4).all(|_| t.serve() == 3), "the next one only when it fails too");
    t.c.session_up(t.now, 1, true);
    t.pass_probation(1);
    assert!((0..4).all(|_| t.serve() == 1), "an active path returns: the standby steps back");
    assert_eq!(t.active(), vec!["reconnecting", "active", "reconnecting", "standby"]);
}

#[test]
fn weighted_uses_the_lowest_weight_then_the_next() {
    let policy = PolicySpec::Weighted { weights: vec![5, 1, 1, 9] };
    let mut t = T::with_policy(4, TimerConfig::default(), policy).all_up();
    let mut seen: Vec<PathId> = (0..8).map(|_| t.serve()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, vec![1, 2], "equal lowest weights share in turn");
    t.c.session_down(t.now, 1, FailureCause::new(CauseKind::Connection, "reset"), false);
    t.c.session_down(t.now, 2, FailureCause::new(CauseKind::Connection, "reset"), false);
    assert!((0..4).all(|_| t.serve() == 0), "then the next lowest weight");
}

#[test]
fn a_policy_change_is_validated_and_takes_effect_at_once() {
    let mut t = T::up(3);
    let req = PolicyRequest { policy: "fail-over-only".into(), primary: Some(vec!["p1".into()]), ..Default::default() };
    t.c.set_policy(t.now, &req).unwrap();
    assert!((0..4).all(|_| t.serve() == 1));
    assert!(kinds(&t.events()).contains(&"policy_changed"));
    let bad = PolicyRequest {
        policy: "fail-over-only".into(),
        primary: Some(vec!["p1".into(), "p2".into()]),
        ..Default::default()
    };
    let e = t.c.set_policy(t.now, &bad).unwrap_err();
    assert_eq!(e.code(), 0xEFFF_005A);
    assert!((0..4).all(|_| t.serve() == 1), "a refused change leaves the running policy");
}

#[test]
fn a_path_whose_login_is_refused_for_good_says_so() {
    let mut t = T::up(1);
    let mut t2 = T::new(2, TimerConfig::default());
    t2.c.session_up(t2.now, 0, false);
    t2.events();
    // Path 1 never logged in; its login is refused for good.
    let cause = FailureCause::new(CauseKind::Login, "authorization failure (0x0202)");
    t2.c.session_down(t2.now, 1, cause.clone(), true);
    assert_eq!(t2.c.status(1), Some(PathStatus::Failed));
    let evs = t2.events();
    assert_eq!(kinds(&evs), ["path_failed"]);
    assert!(evs[0].reason.contains("authorization failure") && evs[0].reason.contains("not retried"), "{evs:?}");
    // A working path that loses its session for good: one event, not two.
    t.c.session_down(t.now, 0, cause, true);
    assert_eq!(kinds(&t.events()).iter().filter(|k| **k == "path_failed").count(), 1);
    assert_eq!(t.c.status(0), Some(PathStatus::Failed));
}

#[test]
fn a_path_measured_slow_once_is_measured_again_after_a_second_idle() {
    let mut t = T::with_policy(2, TimerConfig::default(), PolicySpec::ServiceTime).all_up();
    // Path 1's first completion was slow (a busy moment), path 0's fast.
    let a = t.pick(Op::Read);
    let b = t.pick(Op::Read);
    let (fast, slow) = if a.path == 0 { (a, b) } else { (b, a) };
    assert_eq!((fast.path, slow.path), (0, 1));
    t.c.complete(t.now, fast, Duration::from_micros(100), Completion::Success, 0);
    t.c.complete(t.now, slow, Duration::from_millis(50), Completion::Success, 0);
    // Service time now avoids path 1, however long it is idle...
    for _ in 0..20 {
        t.now += Duration::from_millis(10);
        let tk = t.pick(Op::Read);
        assert_eq!(tk.path, 0);
        t.c.complete(t.now, tk, Duration::from_micros(100), Completion::Success, 0);
    }
    // ...until its figures are a second old: then it is tried again.
    t.now += Duration::from_millis(900);
    let picks: Vec<PathId> = (0..2)
        .map(|_| {
            let tk = t.pick(Op::Read);
            t.c.complete(t.now, tk, Duration::from_micros(100), Completion::Success, 0);
            tk.path
        })
        .collect();
    assert!(picks.contains(&1), "path 1 was not re-measured: {picks:?}");
    // Re-measured fast, it shares the load again.
    let picks: Vec<PathId> = (0..4).map(|_| t.pick(Op::Read).path).collect();
    assert!(picks.contains(&0) && picks.contains(&1), "{picks:?}");
}

fn by_name(t: &T, name: &str) -> PathSnapshot {
    t.c.snapshot().paths.into_iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no path {name}"))
}

#[test]
fn paths_are_added_and_removed_with_stable_ids() {
    let mut t = T::up(3);
    // Added: connecting, not used until its session is up and claimed.
    let id = t.c.add_path(t.now, "p3".into()).unwrap();
    assert_eq!(id, 3);
    assert_eq!(t.c.add_path(t.now, "p3".into()), None, "a taken name");
    assert_eq!(kinds(&t.events()), ["path_added"]);
    assert_eq!(by_name(&t, "p3").state, "connecting");
    assert!((0..6).all(|_| t.serve() != 3));
    t.c.session_up(t.now, 3, false);
    let mut seen: Vec<PathId> = (0..8).map(|_| t.serve()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, [0, 1, 2, 3], "round robin uses it at once");

    // Removed while a request is out on it: no new I/O, the request completes.
    let out = loop {
        let k = t.pick(Op::Write);
        if k.path == 1 {
            break k;
        }
        t.done(k, Op::Write, Completion::Success);
    };
    t.events();
    t.c.remove_path(t.now, 1).unwrap();
    assert_eq!(by_name(&t, "p1").state, "removing");
    assert_eq!(t.c.in_flight(1), 1);
    assert!((0..8).all(|_| t.serve() != 1));
    assert_eq!(t.done(out, Op::Write, Completion::Success), Verdict::Done);
    assert_eq!(t.c.in_flight(1), 0);
    t.c.path_removed(t.now, 1);
    let evs = t.events();
    assert_eq!(kinds(&evs), ["path_removing", "path_removed"]);
    assert!(evs.iter().all(|e| e.path == Some(1) && e.path_name.as_deref() == Some("p1")));
    assert_eq!(t.c.snapshot().counters.failovers + t.c.snapshot().counters.failbacks, 0, "neither");

    // Gone: the others keep their ids; the name is free; the id is not reused.
    let snap = t.c.snapshot();
    let ids: Vec<(PathId, &str)> = snap.paths.iter().map(|p| (p.id, p.name.as_str())).collect();
    assert_eq!(ids, [(0, "p0"), (2, "p2"), (3, "p3")]);
    assert_eq!(t.c.status(1), None);
    assert_eq!(t.c.path_id("p1"), None);
    assert_eq!(t.c.path_names(), ["p0", "p2", "p3"]);
    assert_eq!(t.c.add_path(t.now, "p1".into()), Some(4));

    // Policy validation skips the hole: weights for the live paths only.
    let weights = |v: &[&str]| PolicyRequest {
        policy: "weighted".into(),
        weights: Some(v.iter().map(|n| (n.to_string(), 1)).collect()),
        ..Default::default()
    };
    t.c.set_policy(t.now, &weights(&["p0", "p2", "p3", "p1"])).unwrap();
    let e = t.c.set_policy(t.now, &weights(&["p0", "p2", "p3"])).unwrap_err();
    assert_eq!(e.code(), 0xEFFF_0058, "{e}");
    assert!(e.to_string().contains("missing: p1"), "{e}");
    assert_eq!(t.c.snapshot().policy_description, "weighted weights=p0:1,p2:1,p3:1,p1:1");
}

#[test]
fn removals_that_would_break_the_device_or_the_policy_are_refused() {
    let mut t = T::up(1);
    let e = t.c.remove_path(t.now, 0).unwrap_err();
    assert_eq!((e.code(), e.symbol()), (0xEFFF_003D, "ISDSC_CANT_REMOVE_LAST_CONNECTION"));
    assert_eq!(t.c.status(0), Some(PathStatus::Ready));
    let mut t = fail_over_only(TimerConfig::default());
    let e = t.c.remove_path(t.now, 0).unwrap_err();
    assert_eq!(e.code(), 0xEFFF_0065);
    assert!(e.to_string().contains("set-active"), "{e}");
    assert!((0..4).all(|_| t.serve() == 0), "nothing changed");
    // The fix the message names: another primary first, then the removal.
    t.c.set_role(t.now, 2, PathRole::Active).unwrap();
    t.c.remove_path(t.now, 0).unwrap();
    assert!((0..4).all(|_| t.serve() == 2));
    assert_eq!(t.c.snapshot().policy_description, "fail-over-only primary=p2 standby=p1");
}

/// A path taken out by an administrator keeps its state when its session
/// fails: what it carried is re-driven (writes after the fence), and it does
/// not come back through probation by itself.
#[test]
fn disabled_and_removing_paths_stay_out_when_they_fail() {
    for remove in [false, true] {
        let mut t = T::up(2);
        t.c.set_group(0, Some("g".into()));
        t.c.set_group(1, Some("g".into()));
        let w = loop {
            let k = t.pick(Op::Write);
            if k.path == 0 {
                break k;
            }
            t.done(k, Op::Write, Completion::Success);
        };
        if remove {
            t.c.remove_path(t.now, 0).unwrap();
        } else {
            t.c.disable(t.now, 0);
        }
        let want = if remove { PathStatus::Removing } else { PathStatus::Disabled };
        t.actions();
        assert_eq!(t.lost(w, Op::Write), Verdict::Redrive { fence: Some(Fence { path: 0, epoch: FIRST_FAILURE }) });
        assert_eq!(t.actions(), vec![Action::Fence { path: 0, epoch: FIRST_FAILURE, via: vec![1] }], "remove {remove}");
        t.c.session_down(t.now, 0, FailureCause::new(CauseKind::Connection, "reset"), false);
        t.c.session_up(t.now, 0, true);
        assert!(t.c.fence_cleared(Fence { path: 0, epoch: FIRST_FAILURE }), "reinstatement clears it");
        t.advance(60 * S);
        assert_eq!(t.c.status(0), Some(want), "remove {remove}");
        assert!((0..4).all(|_| t.serve() == 1));
    }
}

#[test]
fn an_added_path_takes_the_least_preferred_role_until_given_another() {
    let mut t = fail_over_only(TimerConfig::default());
    let id = t.c.add_path(t.now, "p3".into()).unwrap();
    t.c.session_up(t.now, id, false);
    assert_eq!(by_name(&t, "p3").role, Some(PathRole::Standby));
    t.c.session_down(t.now, 0, FailureCause::new(CauseKind::Connection, "reset"), false);
    assert!((0..4).all(|_| t.serve() == 2), "the configured standbys come first");
    t.events();
    // set-active: the new primary takes the I/O; an administrator's move is
    // neither a failover nor a failback.
    let before = t.c.snapshot().counters;
    t.c.set_role(t.now, id, PathRole::Active).unwrap();
    assert!((0..4).all(|_| t.serve() == id));
    assert_eq!(t.c.snapshot().counters, before);
    let evs = t.events();
    assert_eq!(kinds(&evs), ["policy_changed"]);
    assert!(evs[0].reason.contains("primary=p3"), "{evs:?}");
    assert_eq!(by_name(&t, "p0").role, Some(PathRole::Standby));
    // Roles the policy does not have are refused, naming the policy that takes them.
    let e = t.c.set_role(t.now, 1, PathRole::Weight(3)).unwrap_err();
    assert!(e.to_string().contains("weighted takes it"), "{e}");

    // weighted: the new path weighs u32::MAX until given a weight.
    let policy = PolicySpec::Weighted { weights: vec![5, 5] };
    let mut t = T::with_policy(2, TimerConfig::default(), policy).all_up();
    let id = t.c.add_path(t.now, "p2".into()).unwrap();
    t.c.session_up(t.now, id, false);
    assert_eq!(by_name(&t, "p2").role, Some(PathRole::Weight(u32::MAX)));
    assert!((0..6).all(|_| t.serve() != id));
    t.c.set_role(t.now, id, PathRole::Weight(1)).unwrap();
    assert!((0..6).all(|_| t.serve() == id));
}

#[test]
fn login_failures_are_reported_once_per_reason_and_counted() {
    let mut t = T::new(1, TimerConfig::default());
    let refused = FailureCause::new(CauseKind::Connect, "connect to 127.0.0.1:3260 failed: connection refused");
    for _ in 0..5 {
        t.c.login_failed(t.now, 0, refused.clone(), Some(1));
    }
    let auth = FailureCause::new(CauseKind::Login, "authentication failure (0x0201): check the CHAP user and secret");
    t.c.login_failed(t.now, 0, auth.clone(), Some(10));
    let evs = t.events();
    assert_eq!(kinds(&evs), ["login_failed", "login_failed"]);
    assert_eq!((evs[0].seed_event, evs[1].seed_event), (Some(1), Some(10)));
    assert!(evs[1].reason.contains("CHAP"), "{evs:?}");
    let p = &t.c.snapshot().paths[0];
    assert_eq!((p.stats.login_failures, p.last_cause.clone()), (6, Some(auth)));
    assert_eq!(p.state, "connecting");
    // Logged in: the next failure of the same kind is news again.
    t.c.session_up(t.now, 0, false);
    t.c.session_down(t.now, 0, FailureCause::new(CauseKind::Connection, "reset"), false);
    t.events();
    t.c.login_failed(t.now, 0, refused, Some(1));
    assert_eq!(kinds(&t.events()), ["login_failed"]);
}

#[test]
fn a_login_refused_the_same_way_again_and_again_raises_one_event_with_the_fix() {
    let mut t = T::new(1, TimerConfig::default());
    let unknown = FailureCause::new(
        CauseKind::Login,
        "service unavailable (0x0301): the target may not know this target name: check it (mpio discover lists them)",
    );
    let streak = |t: &T| t.c.snapshot().paths[0].stats.login_refusals_in_a_row;
    for n in 1..=10 {
        t.c.login_failed(t.now, 0, unknown.clone(), Some(10));
        assert_eq!(streak(&t), n);
    }
    let evs = t.events();
    assert_eq!(kinds(&evs), ["login_failed", "login_refused_repeatedly"]);
    let again = &evs[1].reason;
    assert!(again.contains("3 logins in a row") && again.contains("mpio discover"), "{again}");
    assert_eq!(evs[1].seed_event, Some(10));
    // Another reason starts a new streak, with its own first event.
    let auth = FailureCause::new(CauseKind::Login, "authentication failure (0x0201): check the CHAP user and secret");
    t.c.login_failed(t.now, 0, auth.clone(), Some(10));
    assert_eq!(streak(&t), 1);
    for _ in 0..LOGIN_REFUSALS_REPEATED {
        t.c.login_failed(t.now, 0, auth.clone(), Some(10));
    }
    assert_eq!(kinds(&t.events()), ["login_failed", "login_refused_repeatedly"]);
    // A dead portal is no refusal: reported once, not as repeated.
    let mut t = T::new(1, TimerConfig::default());
    for _ in 0..10 {
        t.c.login_failed(t.now, 0, FailureCause::new(CauseKind::Connect, "connection refused"), Some(1));
    }
    assert_eq!(kinds(&t.events()), ["login_failed"]);
    assert_eq!(streak(&t), 10);
    // A login ends the streak.
    t.c.session_up(t.now, 0, false);
    assert_eq!(streak(&t), 0);
}

#[test]
fn waiting_requests_hold_expirations_and_down_time_are_reported() {
    let timers = TimerConfig { hold: HoldMode::For(5 * S), ..TimerConfig::default() };
    let mut t = T::new(1, timers);
    // Starting: requests wait from the device's creation, but that is no outage.
    assert_eq!(t.c.hold(t.now), Ok(Some(t.now + 5 * S)));
    t.c.wait_started();
    t.c.wait_started();
    let snap = t.c.snapshot();
    assert!(snap.starting);
    assert_eq!(snap.waiting, 2);
    assert_eq!(snap.all_paths_down_total(t.now + 3 * S), Duration::ZERO);
    t.c.wait_ended();
    t.c.wait_ended();
    t.c.session_up(t.now, 0, false);
    let start = t.now;
    t.c.session_down(t.now, 0, FailureCause::new(CauseKind::Connection, "reset"), false);
    assert!(matches!(t.c.select(t.now, Op::Read, 512), Selection::Hold(_)));
    t.advance(5 * S);
    t.advance(5 * S);
    let snap = t.c.snapshot();
    assert!(!snap.starting);
    assert_eq!(snap.counters.hold_expirations, 1, "once per outage");
    assert_eq!(snap.counters.all_paths_down, Duration::ZERO, "not over yet");
    assert_eq!(snap.all_paths_down_total(t.now), t.now - start, "the running outage counts");
    // A fail-mode device fails at once, also before its first path.
    let mut t = T::new(1, TimerConfig { hold: HoldMode::Fail, ..TimerConfig::default() });
    assert_eq!(t.c.hold(t.now).map_err(|e| e.kind), Err(IoErrorKind::NoPath));
}

#[test]
fn a_refused_path_keeps_its_reason_when_its_session_closes() {
    let mut t = T::new(2, TimerConfig::default()).all_up();
    t.c.refuse(t.now, 1, "path p1 reaches another LU: refused".into());
    // The driver logs the refused path out; its session's end is no news.
    t.c.session_down(t.now, 1, FailureCause::new(CauseKind::Connection, "session closed"), false);
    let p = &t.c.snapshot().paths[1];
    assert_eq!((p.state.name(), p.last_cause.as_ref().map(|c| c.kind)), ("failed", Some(CauseKind::Claim)));
}

/// What `poll_timeout` returns is what `handle_timeout` runs: handling at
/// the polled instant consumes that deadline (no timer polled but never
/// handled, which would wake the driver in a loop), through a failure
/// with a fence login that fails, is retried and is overtaken by a
/// reinstatement, probation, a delayed failback and an expiring hold.
#[test]
fn every_polled_deadline_is_handled() {
    let timers =
        TimerConfig { failback: FailbackMode::Delayed(3 * S), hold: HoldMode::For(5 * S), ..TimerConfig::default() };
    let mut t = T::new(2, timers).all_up();
    t.c.set_group(0, Some("g".into()));
    t.c.set_group(1, Some("g".into()));
    let drain = |t: &mut T, until: Instant| {
        while let Some(next) = t.c.poll_timeout().filter(|n| *n <= until) {
            t.now = t.now.max(next);
            t.c.handle_timeout(t.now);
            assert!(t.c.poll_timeout().is_none_or(|after| after > next), "the deadline {next:?} is still polled");
            for a in t.actions() {
                match a {
                    Action::Probe(p) => t.c.probe_done(t.now, p, Ok(())),
                    Action::Fence { path, epoch, .. } => {
                        t.c.fence_done(t.now, path, epoch, Err(FenceFailed("login timed out".into())))
                    }
                }
            }
        }
    };
    t.lost(sent(0, 0), Op::Write);
    let until = t.now + 3 * S;
    drain(&mut t, until);
    // A fence retry is pending when the session comes back reinstated.
    t.c.session_down(t.now, 0, FailureCause::new(CauseKind::Connection, "reset"), false);
    t.c.session_up(t.now, 0, true);
    let until = t.now + 60 * S;
    drain(&mut t, until);
    assert!(t.c.fence_cleared(Fence { path: 0, epoch: FIRST_FAILURE }));
    // All paths down: the hold expires once.
    for p in 0..2 {
        t.c.session_down(t.now, p, FailureCause::new(CauseKind::Connection, "reset"), false);
    }
    let _ = t.c.select(t.now, Op::Read, 512);
    let until = t.now + 60 * S;
    drain(&mut t, until);
    assert_eq!(kinds(&t.events()).iter().filter(|k| **k == "hold_expired").count(), 1);
    assert_eq!(t.c.poll_timeout(), None, "nothing left to run");
}

#[test]
fn writes_wait_until_every_paths_predecessor_is_fenced() {
    // A restarted daemon: path 0 logs in, path 1 cannot yet. What the
    // previous daemon left on path 1's ISID may still land: writes wait,
    // reads go.
    let mut t = T::new(2, TimerConfig::default());
    t.c.session_up(t.now, 0, false);
    let predecessor = Fence { path: 1, epoch: FenceState::PREDECESSOR };
    assert_eq!(t.c.select(t.now, Op::Write, 4096), Selection::Fence(predecessor));
    assert_eq!(t.pick(Op::Read).path, 0);
    // Its first login reinstates its ISID at the target: fenced.
    t.c.session_up(t.now, 1, false);
    assert!(t.c.fence_cleared(predecessor));
    assert!(matches!(t.c.select(t.now, Op::Write, 4096), Selection::Path(_)));
    assert!(!kinds(&t.events()).contains(&"fence_cleared"), "a first login's fence is routine");

    // A path that never logs in: its portal group is unknown, so no fence
    // login can stand in; the fence timeout clears it.
    let mut t = T::new(2, TimerConfig::default());
    t.c.session_up(t.now, 0, false);
    t.c.set_group(0, Some("g".into()));
    assert!(t.actions().is_empty());
    t.advance(21 * S);
    assert!(matches!(t.c.select(t.now, Op::Write, 4096), Selection::Fence(_)));
    t.advance(S);
    assert_eq!(t.pick(Op::Write).path, 0);
    assert!(kinds(&t.events()).contains(&"fence_cleared"));
}

#[test]
fn a_path_added_to_a_running_device_holds_no_writes() {
    let mut t = T::up(1);
    let added = t.c.add_path(t.now, "p9".into()).unwrap();
    assert_eq!(t.c.status(added), Some(PathStatus::Connecting));
    assert_eq!(t.pick(Op::Write).path, 0, "it has no predecessor to fence");
    // Failing before its first login fences nothing device-wide either.
    t.c.session_down(t.now, added, FailureCause::new(CauseKind::Connection, "refused"), false);
    assert_eq!(t.pick(Op::Write).path, 0);
}
