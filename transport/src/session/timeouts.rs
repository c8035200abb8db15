//! What happens when a timer of [`super::timer`] fires, run in order by
//! [`Session::handle_timeout`]: reconnects, login deadlines, the
//! keepalive NOP-Out and its answer, the pause of an async logout, and
//! task deadlines (ABORT TASK for an expired command). The recovery
//! timer's handler lives with the rest of recovery ([`super::recovery`]).

use std::time::Instant;

use bytes::Bytes;
use tracing::{debug, trace, warn};

use super::conn::Phase;
use super::scheduling::push_pdu;
use super::task::{Kind, Owner, Task};
use super::timer::{ConnTimer, SessionTimer};
use super::{ConnPick, ConnectionFailure, Event, Outcome, Session, TaskError};
use crate::login::LoginError;
use crate::pdu::{LogoutReason, NopOut, Pdu, RESERVED_TAG, TmfFunction};

impl<T> Session<T> {
    /// Runs the timers that are due: connection timers first (a dead
    /// connection parks its tasks before their own timers are looked at),
    /// then the session's. A call when nothing is due does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut fired = false;
        for i in 0..self.conns.len() {
            let cid = i as u16;
            for timer in ConnTimer::ALL {
                if self.conns.get_mut(i).is_some_and(|c| c.timers.take_expired(timer, now)) {
                    trace!(cid, ?timer, "timeout");
                    fired = true;
                    self.on_conn_timer(cid, timer, now);
                }
            }
        }
        for timer in SessionTimer::ALL {
            if self.timers.take_expired(timer, now) {
                trace!(?timer, "timeout");
                fired = true;
                match timer {
                    SessionTimer::Command | SessionTimer::TaskMgmt | SessionTimer::Logout => {
                        self.on_task_timer(timer, now);
                    }
                    SessionTimer::Recovery => self.on_recovery_timer(now),
                }
            }
        }
        if fired {
            self.pump(now);
        }
    }

    pub(super) fn on_conn_timer(&mut self, cid: u16, timer: ConnTimer, now: Instant) {
        let t = &self.cfg.timeouts;
        let (nop_interval, nop_timeout, login) = (t.nop_interval, t.nop_timeout, t.login);
        let wait_for_leader = timer == ConnTimer::Reconnect && self.leading_login_elsewhere(cid, true);
        let reconnect_min = t.reconnect_min;
        let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
        match (timer, &c.phase) {
            (ConnTimer::Reconnect, Phase::Down) if wait_for_leader => {
                // Another connection is bringing the session back: join it
                // once it is up, instead of reinstating it again.
                c.timers.set(ConnTimer::Reconnect, now + reconnect_min);
            }
            (ConnTimer::Reconnect, Phase::Down) => {
                c.enter(Phase::Connecting);
                debug!(cid, portal = %c.portal, "reconnecting");
                self.events.push_back(Event::Connect { cid, portal: c.portal.clone() });
            }
            (ConnTimer::Login, Phase::LoggingIn { .. }) => self.login_failed(cid, now, LoginError::Timeout(login)),
            (ConnTimer::AsyncLogoutPause, Phase::Up) => self.begin_async_logout(cid, now),
            (ConnTimer::NopResponse, Phase::Up) => {
                let Some((itt, sent)) = c.ping else { return };
                if c.last_rx > sent {
                    // Traffic arrived after the ping: the link is alive even
                    // if this answer is late. Look at the idle time now.
                    c.ping = None;
                    self.tasks.remove(&itt);
                    c.timers.set(ConnTimer::NopInterval, now);
                    self.on_conn_timer(cid, ConnTimer::NopInterval, now);
                } else {
                    self.fail_connection(cid, now, ConnectionFailure::NopTimeout(nop_timeout));
                }
            }
            (ConnTimer::NopInterval, Phase::Up) => {
                let Some(iv) = nop_interval else { return };
                if c.ping.is_some() {
                    return;
                }
                if c.last_rx + iv <= now {
                    self.send_keepalive(cid, now);
                } else {
                    c.timers.set(ConnTimer::NopInterval, c.last_rx + iv);
                }
            }
            // A timer of a phase the connection has left (entering a phase
            // stops them; this only guards the table's invariant).
            _ => {}
        }
    }

    pub(super) fn send_keepalive(&mut self, cid: u16, now: Instant) {
        let itt = self.alloc_itt();
        let cmdsn = self.window.cmdsn.0;
        let nop_timeout = self.cfg.timeouts.nop_timeout;
        let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
        let ping = NopOut {
            immediate: true,
            lun: 0,
            itt,
            ttt: RESERVED_TAG,
            cmdsn,
            exp_statsn: c.exp_statsn.0,
            data: Bytes::new(),
        };
        push_pdu(c, &Pdu::NopOut(ping));
        c.ping = Some((itt, now));
        c.timers.stop(ConnTimer::NopInterval);
        c.timers.set(ConnTimer::NopResponse, now + nop_timeout);
        let mut t = Task::new(Owner::Keepalive, Kind::Nop { data: Bytes::new() }, ConnPick::Cid(cid));
        t.itt = itt;
        t.cid = cid;
        t.sent_at = Some(now);
        self.tasks.insert(itt, t);
        trace!(cid, "keepalive NOP-Out sent");
    }

    /// Handles the tasks of `timer`'s class whose deadline passed, and
    /// re-arms it for the earliest one left.
    pub(super) fn on_task_timer(&mut self, timer: SessionTimer, now: Instant) {
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for (itt, t) in &self.tasks {
            match t.deadline {
                _ if t.kind.timer() != timer => {}
                Some(d) if d <= now => expired.push(*itt),
                Some(d) => next = Some(next.map_or(d, |n| n.min(d))),
                None => {}
            }
        }
        if let Some(d) = next {
            self.timers.set_earliest(timer, d);
        }
        for itt in expired {
            let Some(task) = self.tasks.get_mut(&itt) else { continue };
            task.deadline = None;
            let cid = task.cid;
            match &mut task.kind {
                Kind::Scsi(s) => {
                    if s.aborting {
                        continue;
                    }
                    s.aborting = true;
                    self.stats.timeouts += 1;
                    warn!(cid, itt, opcode = format_args!("{:#04x}", s.req.opcode()), "command timed out; aborting it");
                    let kind = Kind::TaskMgmt {
                        function: TmfFunction::ABORT_TASK,
                        lun: s.req.lun,
                        referenced_itt: itt,
                        ref_cmdsn: task.cmdsn,
                    };
                    self.urgent.push_back(Task::new(Owner::TimeoutAbort { itt }, kind, ConnPick::Cid(cid)));
                }
                Kind::TaskMgmt { .. } => {
                    let timeout = self.cfg.timeouts.task_mgmt;
                    self.fail_connection(cid, now, ConnectionFailure::TaskMgmtTimeout(timeout));
                }
                Kind::Logout { reason, .. } => {
                    // Seed event 44: close the connection anyway.
                    let reason = *reason;
                    if let Some(t) = self.tasks.remove(&itt) {
                        warn!(cid, "no answer to Logout; closing anyway");
                        match t.owner {
                            Owner::User(_) if reason == LogoutReason::CLOSE_SESSION => {
                                self.finish(t, Ok(Outcome::LoggedOut));
                                self.close_all(TaskError::SessionClosed);
                            }
                            Owner::CleanupLogout { .. } => self.fail_connection(
                                cid,
                                now,
                                ConnectionFailure::Protocol("no answer to Logout".into()),
                            ),
                            _ => {
                                let wait = self.cfg.timeouts.reconnect_min;
                                self.finish(t, Ok(Outcome::LoggedOut));
                                self.close_connection(cid, now, wait, "logout not answered");
                            }
                        }
                    }
                }
                Kind::Text { .. } | Kind::Nop { .. } => {
                    let timeout = self.cfg.timeouts.command;
                    if let Some(t) = self.tasks.remove(&itt) {
                        self.finish(t, Err(TaskError::TimedOut(timeout)));
                    }
                }
            }
        }
    }
}
