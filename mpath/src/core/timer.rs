//! The core's timers as data ([`mpio_timer::TimerTable`]): one table per
//! path and one for the device. [`DeviceCore::poll_timeout`] is their
//! earliest deadline and [`DeviceCore::handle_timeout`] runs the expired
//! ones, so what is polled and what is handled cannot disagree.

use std::time::Instant;

use mpio_policies::PathId;

use super::{Action, DeviceCore};
use crate::event::EventKind;
use crate::timers::HoldMode;
use mpio_timer::{TimerKind, TimerTable};

/// The timers of one path, in the order [`DeviceCore::handle_timeout`]
/// runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PathTimer {
    /// The next probe (probation) or verification (a ready path) is due.
    Probe = 0,
    /// A delayed failback hold ends: the path may take I/O back.
    Failback = 1,
    /// A failed fence login is tried again.
    FenceRetry = 2,
    /// DefaultTime2Wait + DefaultTime2Retain have passed since the path
    /// failed: the target has discarded the old nexus's tasks, the failure
    /// is fenced without a login.
    FenceDeadline = 3,
}

impl PathTimer {
    pub(super) const ALL: [PathTimer; 4] =
        [PathTimer::Probe, PathTimer::Failback, PathTimer::FenceRetry, PathTimer::FenceDeadline];
}

impl TimerKind for PathTimer {
    fn index(self) -> usize {
        self as usize
    }
}

/// The device-wide timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DeviceTimer {
    /// The all-paths-down hold time runs out (hold mode with a limit).
    HoldExpiry = 0,
}

impl TimerKind for DeviceTimer {
    fn index(self) -> usize {
        self as usize
    }
}

pub(super) type PathTimers = TimerTable<PathTimer, { PathTimer::ALL.len() }>;
pub(super) type DeviceTimers = TimerTable<DeviceTimer, 1>;

impl DeviceCore {
    /// When [`DeviceCore::handle_timeout`] must run next: the earliest
    /// deadline of the timer tables, which are what it runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.paths.iter().filter_map(|p| p.timers.next()).chain(self.device_timers.next()).min()
    }

    // ---- timers ----------------------------------------------------------

    /// Runs the timers that are due, each once.
    pub fn handle_timeout(&mut self, now: Instant) {
        for id in 0..self.paths.len() {
            for timer in PathTimer::ALL {
                let Some(p) = self.paths.get_mut(id) else { continue };
                if p.timers.take_expired(timer, now) {
                    self.on_path_timer(now, id, timer);
                }
            }
        }
        if self.device_timers.take_expired(DeviceTimer::HoldExpiry, now) {
            self.expire_hold(now);
        }
    }

    pub(super) fn on_path_timer(&mut self, now: Instant, id: PathId, timer: PathTimer) {
        let Some(p) = self.paths.get_mut(id) else { return };
        match timer {
            // With a probe still out, its answer arms the next one.
            PathTimer::Probe if p.probation.probe_out => {}
            PathTimer::Probe => {
                p.probation.probe_out = true;
                self.actions.push_back(Action::Probe(id));
            }
            PathTimer::Failback => {
                p.release_failback();
                self.update_active(now, false);
            }
            PathTimer::FenceRetry => self.request_fence(id),
            PathTimer::FenceDeadline => {
                let epoch = p.fence.epoch;
                p.fenced(epoch);
                let name = p.name.clone();
                self.event(
                    now,
                    Some(id),
                    EventKind::FenceCleared,
                    format!(
                        "{name}: DefaultTime2Wait + DefaultTime2Retain passed; the target has discarded the old tasks"
                    ),
                    None,
                );
            }
        }
    }

    /// Arms the hold-expiry timer when a hold with a limit is running and
    /// has not expired, and disarms it otherwise: called at every change
    /// of those.
    pub(super) fn rearm_hold(&mut self) {
        match (self.all_down_since, self.timers.hold, self.hold_expired) {
            (Some(since), HoldMode::For(d), false) => self.device_timers.set(DeviceTimer::HoldExpiry, since + d),
            _ => self.device_timers.stop(DeviceTimer::HoldExpiry),
        }
    }
}
