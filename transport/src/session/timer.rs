//! Timers as data, in the shape of quinn-proto's `TimerTable`: an enum of
//! the timers a state machine has and a table of their deadlines.
//! `Session::poll_timeout` is the earliest deadline of the session's table
//! and of every connection's; `Session::handle_timeout(now)` stops each
//! expired timer and handles it, in the order of the enum, so a call when
//! nothing is due does nothing.
//!
//! A timer whose deadline is the earliest of many things (the task
//! timers, the recovery timer) is armed at the earliest of them and, when
//! it fires, handles what is due and re-arms for the rest: it may fire
//! early (and then does nothing), never late.

use std::marker::PhantomData;
use std::time::Instant;

/// The timers of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnTimer {
    /// Down: when to connect again, the later of our reconnect backoff and
    /// the target's Time2Wait (DefaultTime2Wait after a failure, RFC 7143
    /// section 13.15; the Time2Wait of a Logout Response or an Async
    /// Message, sections 11.15.2 and 11.9.1).
    Reconnect = 0,
    /// Logging in: the whole login must finish by then (`Timeouts::login`).
    Login = 1,
    /// Up, draining after the target asked for a logout: log out by then
    /// even with tasks left (AsyncLogoutPause; RFC 7143 section 11.9.1,
    /// AsyncEvent 1, Parameter3).
    AsyncLogoutPause = 2,
    /// Up, keepalive NOP-Out in flight: without anything received by then
    /// the connection is dead (`Timeouts::nop_timeout`).
    NopResponse = 3,
    /// Up, no keepalive in flight: when to look at the idle time again and
    /// send a NOP-Out if nothing arrived for `Timeouts::nop_interval`.
    NopInterval = 4,
}

impl ConnTimer {
    /// Every connection timer, in the order `handle_timeout` runs them.
    pub(crate) const ALL: [ConnTimer; 5] = [
        ConnTimer::Reconnect,
        ConnTimer::Login,
        ConnTimer::AsyncLogoutPause,
        ConnTimer::NopResponse,
        ConnTimer::NopInterval,
    ];
}

/// The timers of the session, over all its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SessionTimer {
    /// The earliest deadline of the SCSI commands and text requests in
    /// flight (`Timeouts::command`, or the request's own): an expired
    /// command is aborted with ABORT TASK.
    Command = 0,
    /// The earliest deadline of the task management requests in flight
    /// (`Timeouts::task_mgmt`): an unanswered one kills its connection.
    TaskMgmt = 1,
    /// The earliest deadline of the Logout Requests in flight
    /// (`Timeouts::logout`): the connection closes anyway.
    Logout = 2,
    /// The earliest time a task parked by a connection failure, or queued
    /// while no connection is up, has waited `Timeouts::recovery`: it
    /// fails.
    Recovery = 3,
}

impl SessionTimer {
    /// Every session timer, in the order `handle_timeout` runs them.
    pub(crate) const ALL: [SessionTimer; 4] =
        [SessionTimer::Command, SessionTimer::TaskMgmt, SessionTimer::Logout, SessionTimer::Recovery];
}

/// A timer kind that indexes a [`TimerTable`].
pub(crate) trait TimerKind: Copy {
    fn index(self) -> usize;
}

impl TimerKind for ConnTimer {
    fn index(self) -> usize {
        self as usize
    }
}

impl TimerKind for SessionTimer {
    fn index(self) -> usize {
        self as usize
    }
}

/// The deadline of each timer of kind `T`; `N` is the number of kinds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TimerTable<T, const N: usize> {
    at: [Option<Instant>; N],
    kind: PhantomData<T>,
}

/// The timers of one connection.
pub(crate) type ConnTimers = TimerTable<ConnTimer, { ConnTimer::ALL.len() }>;
/// The timers of the session.
pub(crate) type SessionTimers = TimerTable<SessionTimer, { SessionTimer::ALL.len() }>;

impl<T: TimerKind, const N: usize> Default for TimerTable<T, N> {
    fn default() -> Self {
        TimerTable { at: [None; N], kind: PhantomData }
    }
}

impl<T: TimerKind, const N: usize> TimerTable<T, N> {
    /// Arms `timer` at `at`, replacing its deadline.
    pub(crate) fn set(&mut self, timer: T, at: Instant) {
        if let Some(slot) = self.at.get_mut(timer.index()) {
            *slot = Some(at);
        }
    }

    /// Arms `timer` at `at` unless it is armed earlier already.
    pub(crate) fn set_earliest(&mut self, timer: T, at: Instant) {
        if let Some(slot) = self.at.get_mut(timer.index()) {
            *slot = Some(slot.map_or(at, |d| d.min(at)));
        }
    }

    /// Arms `timer` at `at` unless it is armed later already.
    pub(crate) fn set_latest(&mut self, timer: T, at: Instant) {
        if let Some(slot) = self.at.get_mut(timer.index()) {
            *slot = Some(slot.map_or(at, |d| d.max(at)));
        }
    }

    /// The deadline of `timer`, if armed.
    pub(crate) fn get(&self, timer: T) -> Option<Instant> {
        self.at.get(timer.index()).copied().flatten()
    }

    /// Disarms `timer`.
    pub(crate) fn stop(&mut self, timer: T) {
        if let Some(slot) = self.at.get_mut(timer.index()) {
            *slot = None;
        }
    }

    /// Disarms every timer.
    pub(crate) fn clear(&mut self) {
        self.at = [None; N];
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// Disarms `timer` and returns true when it is due at `now`.
    pub(crate) fn take_expired(&mut self, timer: T, now: Instant) -> bool {
        let due = self.get(timer).is_some_and(|d| d <= now);
        if due {
            self.stop(timer);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_table_holds_one_deadline_per_timer() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut t = ConnTimers::default();
        assert_eq!(t.next(), None);
        t.set(ConnTimer::NopInterval, t0 + 5 * s);
        t.set(ConnTimer::Login, t0 + 3 * s);
        assert_eq!(t.next(), Some(t0 + 3 * s));
        t.set_earliest(ConnTimer::Login, t0 + 4 * s);
        assert_eq!(t.get(ConnTimer::Login), Some(t0 + 3 * s));
        t.set_latest(ConnTimer::Login, t0 + 4 * s);
        assert_eq!(t.get(ConnTimer::Login), Some(t0 + 4 * s));
        assert!(!t.take_expired(ConnTimer::Login, t0 + 3 * s), "not due yet");
        assert!(t.take_expired(ConnTimer::Login, t0 + 4 * s));
        assert!(!t.take_expired(ConnTimer::Login, t0 + 4 * s), "handled once");
        assert_eq!(t.next(), Some(t0 + 5 * s));
        t.clear();
        assert_eq!(t.next(), None);
    }
}
