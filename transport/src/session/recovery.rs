//! Connection failure and recovery at ErrorRecoveryLevel 0. A failing
//! connection parks the tasks it carried, schedules its reconnect, and
//! moves the session to recovery when it was the last one up. Parked
//! tasks are sent again once the target has provably terminated them (the
//! failed connection logged out through another one, the same CID logged
//! in again, or the session reinstated: RFC 7143 sections 6.3.4-6.3.5), or
//! fail when the recovery timeout runs out first.

use std::time::{Duration, Instant};

use tracing::warn;

use super::conn::{Conn, Phase};
use super::task::{Kind, Owner, Task};
use super::timer::{ConnTimer, SessionTimer};
use super::{ConnPick, ConnectionFailure, Event, Outcome, ReadData, Session, SessionEvent, SessionState, TaskError};
use crate::pdu::frame::TxQueue;
use crate::pdu::{LogoutReason, RESERVED_TAG};

impl<T> Session<T> {
    /// A connection ends: login failed, connect failed, or it failed in
    /// the full feature phase. Schedules its reconnect and, when it was the
    /// last one, moves the session to recovery (or to failure).
    pub(super) fn connection_down(&mut self, cid: u16, now: Instant, reason: ConnectionFailure, retryable: bool) {
        let others_up = self.conns.iter().any(|c| c.cid != cid && c.is_up());
        let reconnect = self.cfg.reconnect && retryable && self.state != SessionState::Closed;
        let time2wait = Duration::from_secs(self.params.default_time2wait.into());
        let (min, max) = (self.cfg.timeouts.reconnect_min, self.cfg.timeouts.reconnect_max);
        let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
        c.enter(Phase::Down);
        if reconnect {
            c.timers.set(ConnTimer::Reconnect, now + c.backoff.max(time2wait));
            c.backoff = (c.backoff * 2).clamp(min, max);
        }
        self.events.push_back(Event::Close { cid, flush: false });
        self.events.push_back(Event::State(SessionEvent::ConnectionDown { cid, reason: reason.clone() }));
        if others_up {
            return;
        }
        if !reconnect && matches!(self.state, SessionState::Up | SessionState::Recovering | SessionState::Starting) {
            // Nothing will bring the session back by itself.
            self.state = SessionState::Failed;
            let msg = reason.to_string();
            self.fail_everything(|cleared| {
                if cleared {
                    TaskError::SessionFailed(msg.clone())
                } else {
                    TaskError::ConnectionLost { reason: reason.clone(), cleared: false }
                }
            });
            self.events.push_back(Event::State(SessionEvent::SessionDown { reason, permanent: true }));
        } else if self.state == SessionState::Up {
            self.state = SessionState::Recovering;
            self.down_since = Some(now);
            self.events.push_back(Event::State(SessionEvent::SessionDown { reason, permanent: false }));
            self.apply_zero_recovery();
            self.arm_recovery();
        }
    }

    /// A connection in the full feature phase failed.
    pub(super) fn fail_connection(&mut self, cid: u16, now: Instant, reason: ConnectionFailure) {
        let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
        if !c.is_up() {
            return;
        }
        warn!(cid, portal = %c.portal, %reason, "iSCSI connection failed");
        c.stats.failures += 1;
        c.ping = None;
        c.tx = TxQueue::new();
        c.in_flight = 0;
        c.backoff = self.cfg.timeouts.reconnect_min;
        // Park what this connection carried.
        let itts: Vec<u32> = self.tasks.iter().filter(|(_, t)| t.cid == cid).map(|(i, _)| *i).collect();
        for itt in itts {
            let Some(mut t) = self.tasks.remove(&itt) else { continue };
            match t.owner {
                Owner::User(_) => match t.kind {
                    Kind::Logout { reason: LogoutReason::CLOSE_SESSION, .. } => {
                        // The session is going away anyway.
                        self.complete(t, Ok(Outcome::LoggedOut));
                    }
                    _ => {
                        t.parked = Some((now, cid, reason.clone()));
                        self.parked.push(t);
                    }
                },
                // Internal tasks die with the connection; a cleanup logout
                // sent here leaves its tasks parked for reinstatement.
                Owner::Keepalive
                | Owner::TimeoutAbort { .. }
                | Owner::CleanupLogout { .. }
                | Owner::AsyncLogout
                | Owner::Renegotiate => {}
            }
        }
        let others_up = self.conns.iter().any(|c| c.cid != cid && c.is_up());
        if others_up && self.state == SessionState::Up {
            // Log the failed connection out through another one so the
            // target terminates its tasks now (RFC 7143 section 11.14.1,
            // reason "close the connection").
            let t = Task::new(
                Owner::CleanupLogout { cid },
                Kind::Logout { reason: LogoutReason::CLOSE_CONNECTION, cid },
                ConnPick::Any,
            );
            self.urgent.push_back(t);
        }
        if self.state == SessionState::LoggingOut {
            self.close_all(TaskError::SessionClosed);
            return;
        }
        self.connection_down(cid, now, reason, true);
        self.apply_zero_recovery();
        self.arm_recovery();
        self.pump(now);
    }

    /// Closes a connection we logged out, and reconnects after `wait`.
    pub(super) fn close_connection(&mut self, cid: u16, now: Instant, wait: Duration, why: &str) {
        let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
        c.enter(Phase::Down);
        if self.cfg.reconnect {
            c.timers.set(ConnTimer::Reconnect, now + wait.max(self.cfg.timeouts.reconnect_min));
        }
        c.ping = None;
        c.in_flight = 0;
        self.events.push_back(Event::Close { cid, flush: true });
        self.events.push_back(Event::State(SessionEvent::ConnectionDown {
            cid,
            reason: ConnectionFailure::TargetRequest(why.to_string()),
        }));
        if !self.conns.iter().any(Conn::is_up) && self.state == SessionState::Up {
            self.state = SessionState::Recovering;
            self.down_since = Some(now);
            self.events.push_back(Event::State(SessionEvent::SessionDown {
                reason: ConnectionFailure::TargetRequest(why.to_string()),
                permanent: !self.cfg.reconnect,
            }));
            self.arm_recovery();
        }
    }

    /// The target's Time2Wait (an Async Message's Parameter2) holds off
    /// the reconnect that a connection failure scheduled.
    pub(super) fn delay_reconnect(&mut self, cid: u16, now: Instant, time2wait: u16) {
        if let Some(c) = self.conns.get_mut(usize::from(cid))
            && c.reconnect_planned()
        {
            c.timers.set_latest(ConnTimer::Reconnect, now + Duration::from_secs(time2wait.into()));
        }
    }

    /// Sends the user tasks on `cid` again: the target terminated them.
    pub(super) fn requeue_tasks_of(&mut self, cid: u16, now: Instant) {
        let itts: Vec<u32> = self.tasks.iter().filter(|(_, t)| t.cid == cid).map(|(i, _)| *i).collect();
        for itt in itts {
            if let Some(mut t) = self.tasks.remove(&itt)
                && matches!(t.owner, Owner::User(_))
            {
                t.parked = Some((now, cid, ConnectionFailure::LoggedOut));
                self.parked.push(t);
            }
        }
        self.release_parked(now, |p| p == cid);
    }

    /// Sends parked tasks whose connection `pred` says is cleaned up again.
    pub(super) fn release_parked(&mut self, now: Instant, pred: impl Fn(u16) -> bool) {
        let (release, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|t| t.parked.as_ref().is_some_and(|(_, c, _)| pred(*c)));
        self.parked = keep;
        for mut t in release.into_iter().rev() {
            t.parked = None;
            t.itt = RESERVED_TAG;
            t.deadline = None;
            if let Kind::Scsi(s) = &mut t.kind {
                s.data = ReadData::default();
                s.next_datasn = 0;
                s.next_r2tsn = 0;
                s.aborting = false;
                s.snacked = false;
            }
            if let Kind::Text { acc, ttt, .. } = &mut t.kind {
                acc.clear();
                *ttt = RESERVED_TAG;
            }
            if let ConnPick::Cid(_) = t.pick
                && !matches!(t.kind, Kind::Scsi(_))
            {
                t.pick = ConnPick::Any;
            }
            self.stats.retries += 1;
            if t.kind.is_immediate() {
                self.urgent.push_front(t);
            } else {
                self.queue.push_front((t, now));
            }
        }
        self.arm_recovery();
    }

    /// Fails the parked tasks, and the tasks queued while no connection is
    /// up, that waited the whole recovery timeout.
    pub(super) fn on_recovery_timer(&mut self, now: Instant) {
        let Some(rec) = self.cfg.timeouts.recovery else { return };
        let (expired, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|t| t.parked.as_ref().is_some_and(|(at, ..)| *at + rec <= now));
        self.parked = keep;
        for t in expired {
            let reason = t.parked.as_ref().map_or(ConnectionFailure::LoggedOut, |(_, _, r)| r.clone());
            self.complete(t, Err(TaskError::ConnectionLost { reason, cleared: false }));
        }
        if !self.is_up()
            && let Some(down) = self.down_since
        {
            while let Some((_, queued)) = self.queue.front() {
                if (*queued).max(down) + rec > now {
                    break;
                }
                let Some((t, _)) = self.queue.pop_front() else { break };
                self.complete(
                    t,
                    Err(TaskError::ConnectionLost {
                        reason: ConnectionFailure::Closed("no connection to the target".into()),
                        cleared: true,
                    }),
                );
            }
        }
        self.arm_recovery();
    }

    /// Arms the recovery timer for the earliest task that waits for
    /// recovery: a parked one, or, while no connection is up, the first
    /// queued one (the queue's waits only grow from front to back while
    /// down: new tasks go to its back). Called wherever such a wait starts
    /// or ends.
    pub(super) fn arm_recovery(&mut self) {
        self.timers.stop(SessionTimer::Recovery);
        let Some(rec) = self.cfg.timeouts.recovery else { return };
        let parked = self.parked.iter().filter_map(|p| p.parked.as_ref().map(|(at, ..)| *at + rec)).min();
        let queued = match (self.is_up(), self.down_since, self.queue.front()) {
            (false, Some(down), Some((_, first))) => Some((*first).max(down) + rec),
            _ => None,
        };
        if let Some(d) = parked.into_iter().chain(queued).min() {
            self.timers.set(SessionTimer::Recovery, d);
        }
    }

    /// With a zero recovery timeout, parked tasks fail at once (multipath
    /// re-drives them on another path).
    pub(super) fn apply_zero_recovery(&mut self) {
        if self.cfg.timeouts.recovery == Some(Duration::ZERO) {
            for t in std::mem::take(&mut self.parked) {
                let reason = t.parked.as_ref().map_or(ConnectionFailure::LoggedOut, |(_, _, r)| r.clone());
                self.complete(t, Err(TaskError::ConnectionLost { reason, cleared: false }));
            }
            if !self.is_up() {
                while let Some((t, _)) = self.queue.pop_front() {
                    let reason = ConnectionFailure::Closed("no connection to the target".into());
                    self.complete(t, Err(TaskError::ConnectionLost { reason, cleared: true }));
                }
            }
        }
    }

    pub(super) fn fail_unsent(&mut self, err: impl Fn() -> TaskError) {
        while let Some((t, _)) = self.queue.pop_front() {
            self.complete(t, Err(err()));
        }
    }

    /// Fails every task; `err(cleared)` builds the error.
    pub(super) fn fail_everything(&mut self, err: impl Fn(bool) -> TaskError) {
        let sent: Vec<Task<T>> = self.tasks.drain().map(|(_, t)| t).collect();
        for t in sent {
            self.complete(t, Err(err(false)));
        }
        for t in std::mem::take(&mut self.parked) {
            self.complete(t, Err(err(false)));
        }
        while let Some((t, _)) = self.queue.pop_front() {
            self.complete(t, Err(err(true)));
        }
        while let Some(t) = self.urgent.pop_front() {
            self.complete(t, Err(err(true)));
        }
        // Nothing is left for the session's timers to watch.
        self.timers.clear();
    }

    /// The session is over: every connection closes, every task fails.
    pub(super) fn close_all(&mut self, err: TaskError) {
        self.state = SessionState::Closed;
        for c in &mut self.conns {
            let closed = matches!(c.phase, Phase::Idle) || (matches!(c.phase, Phase::Down) && !c.reconnect_planned());
            if !closed {
                self.events.push_back(Event::Close { cid: c.cid, flush: true });
            }
            c.enter(Phase::Down);
            c.in_flight = 0;
            c.ping = None;
        }
        self.fail_everything(|_| err.clone());
    }
}
