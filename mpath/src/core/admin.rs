//! What an administrator changes: the policy, a path's role, disabling
//! and reinstating paths, failback, the hold, paths added and removed.

use std::time::Instant;

use mpio_policies::{PathId, PathRole, PolicyError, PolicyRequest, PolicySpec};

use super::{DeviceCore, Durability, LOGIN_REFUSALS_REPEATED, PathState, PathStatus, Table};
use crate::event::EventKind;
use crate::failure::CauseKind;
pub(super) use crate::failure::FailureCause;
use crate::timers::HoldMode;

impl DeviceCore {
    // ---- administration --------------------------------------------------

    /// Changes the policy (validated against the path names).
    pub fn set_policy(&mut self, now: Instant, req: &PolicyRequest) -> Result<(), PolicyError> {
        let spec = req.validate(&Table(&self.paths), Some(self.policy.spec()))?;
        self.policy = spec.build();
        self.active.clear();
        self.event(now, None, EventKind::PolicyChanged, format!("policy {}", spec.kind().name()), None);
        self.update_active(now, false);
        Ok(())
    }

    /// Disables a path (`mpio path fail`): it carries no new I/O until
    /// reinstated; what it carries completes.
    pub fn disable(&mut self, now: Instant, path: PathId) {
        let Some(p) = self.paths.get_mut(path).filter(|p| p.live()) else { return };
        if p.status == PathStatus::Disabled {
            return;
        }
        p.status = PathStatus::Disabled;
        p.since = now;
        p.set_probe(None);
        p.release_failback();
        *p.stats.failures.entry(CauseKind::Admin).or_insert(0) += 1;
        let name = p.name.clone();
        self.event(now, Some(path), EventKind::PathDisabled, format!("{name}: disabled by an administrator"), None);
        self.update_active(now, true);
    }

    /// Re-enables a disabled path: probation when its session is up.
    pub fn reinstate(&mut self, now: Instant, path: PathId) {
        let Some(p) = self.paths.get_mut(path) else { return };
        if p.status != PathStatus::Disabled {
            return;
        }
        p.since = now;
        if p.session_up {
            p.status = PathStatus::Probation { passed: 0 };
            p.set_probe(Some(now));
        } else {
            p.status = PathStatus::Reconnecting;
        }
        let name = p.name.clone();
        self.event(now, Some(path), EventKind::PathReinstated, format!("{name}: re-enabled by an administrator"), None);
    }

    /// Lets every held path take I/O back now (`mpio failback`).
    pub fn failback_now(&mut self, now: Instant) {
        for p in &mut self.paths {
            p.release_failback();
        }
        self.update_active(now, false);
    }

    /// Changes the all-paths-down hold.
    pub fn set_hold(&mut self, hold: HoldMode) {
        self.timers.hold = hold;
        self.hold_expired = false;
        self.rearm_hold();
    }

    /// Gives a path another role in the running policy (`mpio path
    /// set-active|set-standby|set-weight`, see [`PolicySpec::with_role`]).
    /// A refused change leaves the running policy. The policy keeps its
    /// state (the standby that carries I/O stays), so I/O moves only when the
    /// new role says it must.
    pub fn set_role(&mut self, now: Instant, path: PathId, role: PathRole) -> Result<(), PolicyError> {
        let spec = self.policy.spec().with_role(&Table(&self.paths), path, role)?;
        if &spec == self.policy.spec() {
            return Ok(());
        }
        self.respec(&spec);
        let name = self.path_name(path).unwrap_or_default().to_owned();
        let why = format!("{name}: {role}; policy {}", spec.describe(&Table(&self.paths)));
        self.event(now, Some(path), EventKind::PolicyChanged, why, None);
        // An administrator's move, neither a failover nor a failback.
        self.active.clear();
        self.update_active(now, false);
        Ok(())
    }

    /// Adds a path (connecting, like every path at start) and returns its
    /// id, or `None` when the name is taken by a path of the device or one
    /// being removed. It takes the least preferred role of the policy
    /// ([`PolicySpec::with_path`]) and carries I/O once its session is up
    /// and claimed.
    pub fn add_path(&mut self, now: Instant, name: String) -> Option<PathId> {
        if self.path_id(&name).is_some() {
            return None;
        }
        let id = self.paths.len();
        self.paths.push(PathState::new(name.clone(), now));
        let spec = self.policy.spec().with_path(id);
        self.respec(&spec);
        let role = spec.role(id).map_or_else(String::new, |r| format!(" as {r}"));
        self.event(now, Some(id), EventKind::PathAdded, format!("{name}: added{role}, connecting"), None);
        Some(id)
    }

    /// Starts removing a path: it takes no new I/O at once and leaves the
    /// policy ([`PolicySpec::without_path`]: the last path, the fail-over
    /// primary and the only active path of a subset are refused, with the
    /// fix). What it carries completes (or is re-driven elsewhere as after a
    /// failure); the driver then logs its session out and reports
    /// [`DeviceCore::path_removed`].
    pub fn remove_path(&mut self, now: Instant, path: PathId) -> Result<(), PolicyError> {
        let spec = self.policy.spec().without_path(&Table(&self.paths), path)?;
        let Some(p) = self.paths.get_mut(path) else { return Ok(()) };
        p.status = PathStatus::Removing;
        p.since = now;
        p.set_probe(None);
        p.probation.probe_out = false;
        p.release_failback();
        let why =
            format!("{}: takes no new I/O; removed once its {} commands in flight are done", p.name, p.load.in_flight);
        self.respec(&spec);
        self.event(now, Some(path), EventKind::PathRemoving, why, None);
        self.update_active(now, false);
        Ok(())
    }

    /// A path being removed is drained and its session logged out: it is
    /// gone (its id is not reused).
    pub fn path_removed(&mut self, now: Instant, path: PathId) {
        let Some(p) = self.paths.get_mut(path).filter(|p| p.status == PathStatus::Removing && !p.removed) else {
            return;
        };
        p.removed = true;
        p.since = now;
        let name = p.name.clone();
        self.event(now, Some(path), EventKind::PathRemoved, format!("{name}: removed"), None);
    }

    /// A login attempt of the path failed (connect refused or timed out, the
    /// target refused the login). The session retries by itself unless the
    /// failure is permanent ([`DeviceCore::session_down`] follows then). The
    /// cause becomes the path's last cause (what `wait_ready` reports), each
    /// attempt is counted, and each new reason is an event; repeats of the
    /// same reason are not, so a dead portal does not flood the event stream.
    pub fn login_failed(&mut self, now: Instant, path: PathId, cause: FailureCause, seed_event: Option<u32>) {
        let Some(p) = self.paths.get_mut(path).filter(|p| p.live()) else { return };
        p.stats.login_failures += 1;
        if p.status != PathStatus::Ready {
            p.last_cause = Some(cause.clone());
        }
        let reason = cause.to_string();
        if p.login_reported.as_deref() == Some(reason.as_str()) {
            p.stats.login_refusals_in_a_row = p.stats.login_refusals_in_a_row.saturating_add(1);
            let n = p.stats.login_refusals_in_a_row;
            // A target that answers every attempt the same way (an
            // unknown target name, an ACL, a portal group without this
            // target) will not change its mind: say so once, with what the
            // refusal says to check. A dead portal (connect) is no refusal.
            if n == LOGIN_REFUSALS_REPEATED && cause.kind == CauseKind::Login {
                let why = format!(
                    "{}: the target refused {n} logins in a row the same way; the path keeps retrying with backoff, but that will not help until the target or the configuration changes: {cause}",
                    p.name
                );
                self.event(now, Some(path), EventKind::LoginRefusedRepeatedly, why, seed_event);
            }
            return;
        }
        p.login_reported = Some(reason);
        p.stats.login_refusals_in_a_row = 1;
        let why = format!("{}: {cause}", p.name);
        self.event(now, Some(path), EventKind::LoginFailed, why, seed_event);
    }

    /// The LU's capacity changed from `old` to `new` bytes, as read
    /// through `path` (the device's LU record holds the new size): an event
    /// for the journal and for the frontends, which show the new size where
    /// they can.
    pub fn capacity_changed(&mut self, now: Instant, path: PathId, old: u64, new: u64) {
        let name = self.path_name(path).unwrap_or("?").to_owned();
        let how = if new > old { "grew" } else { "shrank" };
        let why = format!("the logical unit {how} from {old} to {new} bytes (read through {name})");
        self.event(now, Some(path), EventKind::CapacityChanged { old, new }, why, None);
    }

    /// Counts what making a write durable took (see [`Durability`]).
    pub fn durability_command(&mut self, what: Durability) {
        match what {
            Durability::FuaFlush => self.counters.fua_flushes += 1,
            Durability::WriteThrough => self.counters.write_through += 1,
        }
    }

    /// A request starts waiting for a usable path or for a fence (counted in
    /// [`DeviceSnapshot::waiting`](crate::DeviceSnapshot::waiting) until [`DeviceCore::wait_ended`]).
    pub fn wait_started(&mut self) {
        self.waiting += 1;
    }

    /// A request stopped waiting.
    pub fn wait_ended(&mut self) {
        self.waiting = self.waiting.saturating_sub(1);
    }

    /// New parameters of the same policy, keeping its state.
    pub(super) fn respec(&mut self, spec: &PolicySpec) {
        if !self.policy.respec(spec) {
            self.policy = spec.build();
        }
    }
}
