//! What happens to a path: failures (with damping and fences), logins,
//! claims, probes and fence results.

use std::time::{Duration, Instant};

use mpio_policies::PathId;

use super::{Action, DeviceCore, FENCE_RETRY, Held, PathState, PathStatus, PathTimer};
use crate::event::EventKind;
pub(super) use crate::failure::FailureCause;
use crate::failure::{CauseKind, FenceFailed, ProbeFailed};
use crate::timers::{FailbackMode, TimerConfig};

impl DeviceCore {
    // ---- path events -----------------------------------------------------

    /// The path stops carrying I/O. `session_down`: it waits for its
    /// session to come back; otherwise probation starts (after damping).
    ///
    /// A path an administrator took out (disabled, being removed) keeps its
    /// status: it still counts the failure and gets its old nexus fenced
    /// (what it carried may be re-driven), but it does not come back by
    /// itself.
    pub(super) fn fail_path(&mut self, now: Instant, id: PathId, cause: FailureCause, session_down: bool) {
        let window = self.timers.damping_window;
        let fence_timeout = self.timers.fence_timeout;
        let Some(p) = self.paths.get_mut(id) else { return };
        let was_usable = matches!(p.status, PathStatus::Ready | PathStatus::Probation { .. });
        let out = p.out_by_admin();
        if was_usable || out || p.status == PathStatus::Connecting {
            p.fence.epoch += 1;
            p.timers.set(PathTimer::FenceDeadline, now + fence_timeout);
            p.fence.out = false;
        }
        *p.stats.failures.entry(cause.kind).or_insert(0) += 1;
        while p.probation.recent_failures.front().is_some_and(|t| now.saturating_duration_since(*t) > window) {
            p.probation.recent_failures.pop_front();
        }
        p.probation.recent_failures.push_back(now);
        p.release_failback();
        p.probation.probe_out = false;
        p.last_cause = Some(cause.clone());
        if out {
            self.request_fence(id);
            return;
        }
        p.since = now;
        let seed = cause.kind.seed_event();
        p.session_may_follow = !session_down;
        let mut probation = None;
        if session_down {
            p.status = PathStatus::Reconnecting;
            p.set_probe(None);
        } else {
            p.status = PathStatus::Probation { passed: 0 };
            let delay =
                Self::damping(&self.timers, p.probation.recent_failures.len()).max(self.timers.probation_interval);
            p.set_probe(Some(now + delay));
            probation = Some(delay);
        }
        let name = p.name.clone();
        if was_usable {
            self.event(now, Some(id), EventKind::PathFailed, format!("{name}: {cause}"), seed);
            self.request_fence(id);
        }
        if let Some(delay) = probation {
            // The session is still up: the path is probed back in.
            let why = format!("{name}: probes start in {delay:?}");
            self.event(now, Some(id), EventKind::ProbationStarted, why, None);
        }
        self.update_active(now, true);
    }

    /// Damping delay for a path that failed `n` times within the window.
    pub(super) fn damping(t: &TimerConfig, n: usize) -> Duration {
        if n <= 1 {
            return Duration::ZERO;
        }
        let shift = (n - 2).min(16) as u32;
        (t.damping_base * 2u32.pow(shift)).min(t.damping_max)
    }

    pub(super) fn request_fence(&mut self, id: PathId) {
        let Some(p) = self.paths.get(id) else { return };
        if p.fence.cleared >= p.fence.epoch || p.fence.out {
            return;
        }
        let group = p.group.clone();
        let epoch = p.fence.epoch;
        let via: Vec<PathId> = self
            .paths
            .iter()
            .enumerate()
            .filter(|(i, q)| *i != id && q.usable() && q.group.is_some() && q.group == group)
            .map(|(i, _)| i)
            .collect();
        if via.is_empty() {
            return;
        }
        if let Some(p) = self.paths.get_mut(id) {
            p.fence.out = true;
        }
        self.actions.push_back(Action::Fence { path: id, epoch, via });
    }

    /// Sets the portal group of a path (target name and TPGT), learnt at
    /// login: fences go through portals of the same group only.
    pub fn set_group(&mut self, path: PathId, group: Option<String>) {
        if let Some(p) = self.paths.get_mut(path) {
            p.group = group;
        }
    }

    /// The path's session logged in and the path reaches the device's
    /// logical unit (identity checked by the driver). `reinstated`: the
    /// login replaced an earlier session of this path.
    ///
    /// Every session login (TSIH 0, the path's ISID) reinstates, at the
    /// target, whatever session had that ISID, and the target ends the old
    /// session's commands before it answers: this daemon's earlier session
    /// (`reinstated`) or the one a previous daemon left (the first login,
    /// which fences the predecessor). Either way nothing old can land any
    /// more.
    pub fn session_up(&mut self, now: Instant, path: PathId, reinstated: bool) {
        let Some(p) = self.paths.get_mut(path) else { return };
        p.session_up = true;
        p.session_may_follow = false;
        p.login_reported = None;
        p.stats.login_refusals_in_a_row = 0;
        if p.fence.cleared < p.fence.epoch {
            let epoch = p.fence.epoch;
            p.fenced(epoch);
            // The first login's fence is routine: no event for it.
            if reinstated {
                let name = p.name.clone();
                self.event(now, Some(path), EventKind::FenceCleared, format!("{name}: session reinstated"), None);
            }
        }
        let Some(p) = self.paths.get_mut(path) else { return };
        match p.status {
            PathStatus::Connecting => {
                // The first bring-up was the verification.
                p.status = PathStatus::Ready;
                p.since = now;
                p.set_probe(self.timers.path_verify.then(|| now + self.timers.path_verify_period));
                let name = p.name.clone();
                self.event(now, Some(path), EventKind::PathReady, format!("{name}: logged in and claimed"), None);
                self.path_became_ready(now);
            }
            PathStatus::Reconnecting | PathStatus::Failed => {
                let delay = Self::damping(&self.timers, p.probation.recent_failures.len());
                p.status = PathStatus::Probation { passed: 0 };
                p.since = now;
                p.set_probe(Some(now + delay));
                p.probation.probe_out = false;
                let name = p.name.clone();
                self.event(now, Some(path), EventKind::PathReconnected, format!("{name}: logged in again"), Some(34));
                let why = if delay.is_zero() {
                    format!("{name}: {} probes before it carries I/O", self.timers.probation_probes)
                } else {
                    format!("{name}: failed repeatedly, probation starts in {delay:?}")
                };
                self.event(now, Some(path), EventKind::ProbationStarted, why, None);
            }
            PathStatus::Ready | PathStatus::Probation { .. } | PathStatus::Disabled | PathStatus::Removing => {}
        }
    }

    /// The path's session lost its last connection.
    pub fn session_down(&mut self, now: Instant, path: PathId, cause: FailureCause, permanent: bool) {
        let Some(p) = self.paths.get_mut(path) else { return };
        p.session_up = false;
        let status = p.status;
        match status {
            PathStatus::Probation { passed: 0 } if p.session_may_follow => {
                p.session_may_follow = false;
                p.status = PathStatus::Reconnecting;
                p.set_probe(None);
                p.probation.probe_out = false;
                p.last_cause = Some(cause);
            }
            PathStatus::Ready | PathStatus::Probation { .. } | PathStatus::Connecting => {
                self.fail_path(now, path, cause, true);
            }
            PathStatus::Disabled | PathStatus::Removing | PathStatus::Reconnecting => p.last_cause = Some(cause),
            // Failed for good (a refused claim, a login refused for good):
            // that reason stays what the path reports, not the session
            // closing after it.
            PathStatus::Failed => {}
        }
        if let Some(p) = self.paths.get_mut(path)
            && permanent
            && matches!(p.status, PathStatus::Reconnecting | PathStatus::Probation { .. } | PathStatus::Connecting)
        {
            p.status = PathStatus::Failed;
            p.since = now;
            if matches!(status, PathStatus::Ready | PathStatus::Probation { .. }) {
                // fail_path reported this incident already.
                return;
            }
            let why = format!(
                "{}: {}; not retried until reinstated",
                p.name,
                p.last_cause.as_ref().map_or_else(|| "failed".to_string(), ToString::to_string)
            );
            self.event(now, Some(path), EventKind::PathFailed, why, None);
        }
    }

    /// The path reaches another logical unit (or its bring-up hook
    /// failed): it stays out.
    pub fn refuse(&mut self, now: Instant, path: PathId, reason: String) {
        let Some(p) = self.paths.get_mut(path).filter(|p| p.live()) else { return };
        p.status = PathStatus::Failed;
        p.since = now;
        *p.stats.failures.entry(CauseKind::Claim).or_insert(0) += 1;
        p.last_cause = Some(FailureCause::new(CauseKind::Claim, reason.clone()));
        self.event(now, Some(path), EventKind::ClaimRefused, reason, None);
        self.update_active(now, true);
    }

    /// Result of a probe sent for [`Action::Probe`].
    pub fn probe_done(&mut self, now: Instant, path: PathId, result: Result<(), ProbeFailed>) {
        let probes = self.timers.probation_probes;
        let interval = self.timers.probation_interval;
        let verify = self.timers.path_verify.then_some(self.timers.path_verify_period);
        let failback = self.timers.failback;
        let Some(p) = self.paths.get_mut(path) else { return };
        p.probation.probe_out = false;
        match (p.status, result) {
            (PathStatus::Probation { passed }, Ok(())) => {
                let passed = passed + 1;
                if passed >= probes {
                    p.status = PathStatus::Ready;
                    p.since = now;
                    p.set_probe(verify.map(|v| now + v));
                    p.held = match failback {
                        FailbackMode::Immediate => None,
                        FailbackMode::Manual => Some(Held::Manual),
                        FailbackMode::Delayed(d) => {
                            p.timers.set(PathTimer::Failback, now + d);
                            Some(Held::Delayed)
                        }
                    };
                    let name = p.name.clone();
                    let how = match failback {
                        FailbackMode::Immediate => String::new(),
                        FailbackMode::Manual => "; failback waits for an administrator".into(),
                        FailbackMode::Delayed(d) => format!("; failback in {d:?}"),
                    };
                    self.event(
                        now,
                        Some(path),
                        EventKind::PathReady,
                        format!("{name}: passed {probes} probes{how}"),
                        None,
                    );
                    self.path_became_ready(now);
                } else {
                    p.status = PathStatus::Probation { passed };
                    p.set_probe(Some(now + interval));
                }
            }
            (PathStatus::Probation { .. }, Err(e)) => {
                let name = p.name.clone();
                self.event(now, Some(path), EventKind::ProbationProbeFailed, format!("{name}: {e}"), None);
                // Counts as a failure: the next probation waits longer.
                self.fail_path(now, path, FailureCause::new(CauseKind::Probe, e.0), false);
            }
            (PathStatus::Ready, Ok(())) => p.set_probe(verify.map(|v| now + v)),
            (PathStatus::Ready, Err(e)) => self.fail_path(now, path, FailureCause::new(CauseKind::Verify, e.0), false),
            _ => {}
        }
    }

    /// Result of an [`Action::Fence`]: `Ok` when failure `epoch` of `path`
    /// is proven unable to run commands.
    pub fn fence_done(&mut self, now: Instant, path: PathId, epoch: u64, result: Result<(), FenceFailed>) {
        let Some(p) = self.paths.get_mut(path) else { return };
        p.fence.out = false;
        match result {
            Ok(()) if p.fence.cleared < epoch => {
                p.fenced(epoch);
                let name = p.name.clone();
                self.event(now, Some(path), EventKind::FenceCleared, format!("{name}: old nexus reinstated"), None);
            }
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(path = %p.name, error = %e, "fence login failed; trying again in {FENCE_RETRY:?}");
                p.timers.set(PathTimer::FenceRetry, now + FENCE_RETRY);
            }
        }
    }

    pub(super) fn path_became_ready(&mut self, now: Instant) {
        // A fence that found no healthy portal of its group may find one now.
        for id in 0..self.paths.len() {
            if self.paths.get(id).is_some_and(|p| {
                p.fence.cleared < p.fence.epoch && !p.fence.out && p.timers.get(PathTimer::FenceRetry).is_none()
            }) {
                self.request_fence(id);
            }
        }
        if self.starting {
            // Requests made before the first path came up were held from
            // the device's creation; that was no outage.
            self.starting = false;
            self.all_down_since = None;
            self.rearm_hold();
        } else if let Some(since) = self.all_down_since.take() {
            self.counters.all_paths_down += now.saturating_duration_since(since);
            self.hold_expired = false;
            self.rearm_hold();
            self.event(now, None, EventKind::HoldEnded, "a path is usable again", None);
        }
        self.update_active(now, false);
    }

    /// Records a change of the paths carrying I/O: a failover when paths
    /// failed, a failback when a returning path took I/O from one that
    /// still works. A path merely joining (round robin) is neither.
    pub(super) fn update_active(&mut self, now: Instant, failure: bool) {
        // The outage starts when the last usable path goes, not at the
        // next request (Windows' PDORemovePeriod and dm-multipath's
        // no_path_retry count from there too): an idle device's hold runs
        // out as a busy one's does, so a request coming late into a long
        // outage fails at once instead of waiting a whole hold more, and
        // the all-paths-down time and event tell the truth without I/O.
        if !self.starting && !self.closing && !self.paths.iter().any(PathState::usable) {
            self.note_all_down(now);
        }
        self.refresh_views(now);
        // An idle device must still remember which standby took over.
        self.policy.on_paths_changed(&self.views);
        let active = self.policy.active(&self.views);
        if active == self.active {
            return;
        }
        let from = std::mem::replace(&mut self.active, active.clone());
        if from.is_empty() {
            return;
        }
        if failure {
            self.counters.failovers += 1;
            self.event(now, None, EventKind::Failover { from, to: active }, "paths failed", None);
        } else if from.iter().any(|p| !active.contains(p) && self.paths.get(*p).is_some_and(PathState::usable)) {
            self.counters.failbacks += 1;
            self.event(now, None, EventKind::Failback { from, to: active }, "preferred paths returned", None);
        }
    }
}
