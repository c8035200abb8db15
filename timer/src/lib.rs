//! Timers as data, in the shape of quinn-proto's `TimerTable`: an enum of
//! the timers a sans-I/O state machine has, and a table of their
//! deadlines. The machine's `poll_timeout` is [`TimerTable::next`] (over
//! its tables), and its `handle_timeout(now)` takes each expired timer
//! with [`TimerTable::take_expired`] and handles it, in the order of the
//! enum: what is polled and what is handled are the same deadlines, so
//! they cannot disagree, and a call when nothing is due does nothing.
//!
//! Used by the iSCSI session (per connection and per session) and by the
//! multipath device (per path and per device).
#![warn(missing_docs)]

use std::marker::PhantomData;
use std::time::Instant;

/// A timer enum that indexes a [`TimerTable`]: each variant a distinct
/// index below the table's `N`.
pub trait TimerKind: Copy {
    /// The timer's slot.
    fn index(self) -> usize;
}

/// The deadline of each timer of kind `T`; `N` is the number of kinds.
#[derive(Clone, Copy, Debug)]
pub struct TimerTable<T, const N: usize> {
    at: [Option<Instant>; N],
    kind: PhantomData<T>,
}

impl<T: TimerKind, const N: usize> Default for TimerTable<T, N> {
    fn default() -> Self {
        TimerTable { at: [None; N], kind: PhantomData }
    }
}

impl<T: TimerKind, const N: usize> TimerTable<T, N> {
    /// Arms `timer` at `at`, replacing its deadline.
    pub fn set(&mut self, timer: T, at: Instant) {
        if let Some(slot) = self.at.get_mut(timer.index()) {
            *slot = Some(at);
        }
    }

    /// Arms `timer` at `at` unless it is armed earlier already.
    pub fn set_earliest(&mut self, timer: T, at: Instant) {
        if let Some(slot) = self.at.get_mut(timer.index()) {
            *slot = Some(slot.map_or(at, |d| d.min(at)));
        }
    }

    /// Arms `timer` at `at` unless it is armed later already.
    pub fn set_latest(&mut self, timer: T, at: Instant) {
        if let Some(slot) = self.at.get_mut(timer.index()) {
            *slot = Some(slot.map_or(at, |d| d.max(at)));
        }
    }

    /// The deadline of `timer`, if armed.
    pub fn get(&self, timer: T) -> Option<Instant> {
        self.at.get(timer.index()).copied().flatten()
    }

    /// Disarms `timer`.
    pub fn stop(&mut self, timer: T) {
        if let Some(slot) = self.at.get_mut(timer.index()) {
            *slot = None;
        }
    }

    /// Disarms every timer.
    pub fn clear(&mut self) {
        self.at = [None; N];
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// Disarms `timer` and returns true when it is due at `now`.
    pub fn take_expired(&mut self, timer: T, now: Instant) -> bool {
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

    #[derive(Clone, Copy)]
    enum T2 {
        A = 0,
        B = 1,
    }

    impl TimerKind for T2 {
        fn index(self) -> usize {
            self as usize
        }
    }

    #[test]
    fn the_table_holds_one_deadline_per_timer() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut t = TimerTable::<T2, 2>::default();
        assert_eq!(t.next(), None);
        t.set(T2::B, t0 + 5 * s);
        t.set(T2::A, t0 + 3 * s);
        assert_eq!(t.next(), Some(t0 + 3 * s));
        t.set_earliest(T2::A, t0 + 4 * s);
        assert_eq!(t.get(T2::A), Some(t0 + 3 * s));
        t.set_latest(T2::A, t0 + 4 * s);
        assert_eq!(t.get(T2::A), Some(t0 + 4 * s));
        assert!(!t.take_expired(T2::A, t0 + 3 * s), "not due yet");
        assert!(t.take_expired(T2::A, t0 + 4 * s));
        assert!(!t.take_expired(T2::A, t0 + 4 * s), "handled once");
        assert_eq!(t.next(), Some(t0 + 5 * s));
        t.clear();
        assert_eq!(t.next(), None);
    }
}
