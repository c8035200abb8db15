//! Sending tasks: the connection each one goes on, when the CmdSN window
//! and `max_pending` let it go, its tag and CmdSN, and its PDUs queued on
//! the connection; then the end of a task (its connection slot released,
//! its owner told).

use std::time::Instant;

use bytes::Bytes;
use tracing::trace;

use super::conn::Conn;
use super::task::{self, Burst, Kind, Owner, ScsiTask, Task};
use super::timer::ConnTimer;
use super::{ConnPick, Event, Outcome, Session, SessionState, TaskError};
use crate::pdu::{LogoutReason, NopOut, Pdu, RESERVED_TAG, TaskMgmtRequest, TextRequest, TmfFunction};
use crate::text::SessionParams;

impl<T> Session<T> {
    pub(super) fn alloc_itt(&mut self) -> u32 {
        loop {
            let itt = self.next_itt;
            self.next_itt = self.next_itt.wrapping_add(1);
            if itt != RESERVED_TAG && !self.tasks.contains_key(&itt) {
                return itt;
            }
        }
    }

    /// Sends what can be sent now.
    pub(super) fn pump(&mut self, now: Instant) {
        if !matches!(self.state, SessionState::Up | SessionState::LoggingOut) {
            return;
        }
        let drained: Vec<u16> = self.conns.iter().filter(|c| c.draining() && c.in_flight == 0).map(|c| c.cid).collect();
        for cid in drained {
            self.begin_async_logout(cid, now);
        }
        let mut i = 0;
        while i < self.urgent.len() {
            let pick = self.urgent.get(i).map(|t| t.pick);
            let is_session_logout = self
                .urgent
                .get(i)
                .is_some_and(|t| matches!(t.kind, Kind::Logout { reason: LogoutReason::CLOSE_SESSION, .. }));
            if is_session_logout && self.user_tasks_in_flight() > 0 {
                i += 1;
                continue;
            }
            match pick.and_then(|p| self.pick_conn(p, true)) {
                Some(cid) => {
                    if let Some(t) = self.urgent.remove(i) {
                        self.send(t, cid, now);
                    }
                }
                None => i += 1,
            }
        }
        if self.state != SessionState::Up {
            return;
        }
        let mut i = 0;
        while i < self.queue.len() && self.window.is_open() && self.tasks.len() < self.cfg.max_pending {
            let Some(pick) = self.queue.get(i).map(|(t, _)| t.pick) else { break };
            match self.pick_conn(pick, false) {
                Some(cid) => {
                    if let Some((t, _)) = self.queue.remove(i) {
                        self.send(t, cid, now);
                    }
                }
                None => i += 1,
            }
        }
    }

    pub(super) fn user_tasks_in_flight(&self) -> usize {
        self.tasks
            .values()
            .filter(|t| matches!(t.owner, Owner::User(_)) && !matches!(t.kind, Kind::Logout { .. }))
            .count()
    }

    pub(super) fn pick_conn(&self, pick: ConnPick, urgent: bool) -> Option<u16> {
        let usable = |c: &Conn| if urgent { c.is_up() } else { c.accepts_tasks() };
        match pick {
            ConnPick::Cid(cid) => self.conn(cid).filter(|c| usable(c)).map(|c| c.cid),
            ConnPick::Any => {
                self.conns.iter().filter(|c| usable(c)).min_by_key(|c| (c.in_flight, c.cid)).map(|c| c.cid)
            }
        }
    }

    /// Assigns tag and CmdSN and queues the task's PDUs on `cid`.
    pub(super) fn send(&mut self, mut task: Task<T>, cid: u16, now: Instant) {
        if task.itt == RESERVED_TAG {
            task.itt = self.alloc_itt();
        }
        let immediate = task.kind.is_immediate();
        let cmdsn = if immediate { self.window.cmdsn.0 } else { self.window.take() };
        let timeout = task.timeout(self.cfg.timeouts.command, self.cfg.timeouts.task_mgmt, self.cfg.timeouts.logout);
        let params = self.params.clone();
        let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
        let exp_statsn = c.exp_statsn.0;
        let itt = task.itt;
        match &task.kind {
            Kind::Scsi(s) => push_command(c, &params, s, itt, cmdsn),
            Kind::TaskMgmt { function, lun, referenced_itt, ref_cmdsn } => {
                let req = TaskMgmtRequest {
                    immediate: true,
                    function: *function,
                    lun: *lun,
                    itt,
                    referenced_itt: *referenced_itt,
                    cmdsn,
                    exp_statsn,
                    ref_cmdsn: if *function == TmfFunction::ABORT_TASK { *ref_cmdsn } else { cmdsn },
                    exp_datasn: 0,
                };
                push_pdu(c, &Pdu::TaskMgmtRequest(req));
            }
            Kind::Text { request, ttt, .. } => {
                let data = if *ttt == RESERVED_TAG { request.clone() } else { Bytes::new() };
                let req = TextRequest {
                    immediate: false,
                    final_pdu: true,
                    continue_: false,
                    lun: 0,
                    itt,
                    ttt: *ttt,
                    cmdsn,
                    exp_statsn,
                    data,
                };
                push_pdu(c, &Pdu::TextRequest(req));
            }
            Kind::Nop { data } => {
                let req =
                    NopOut { immediate: true, lun: 0, itt, ttt: RESERVED_TAG, cmdsn, exp_statsn, data: data.clone() };
                push_pdu(c, &Pdu::NopOut(req));
            }
            Kind::Logout { reason, cid: out_cid } => {
                let req = crate::pdu::LogoutRequest {
                    immediate: true,
                    reason: *reason,
                    itt,
                    cid: *out_cid,
                    cmdsn,
                    exp_statsn,
                };
                push_pdu(c, &Pdu::LogoutRequest(req));
            }
        }
        if matches!(task.kind, Kind::Scsi(_)) {
            c.in_flight += 1;
        }
        task.cid = cid;
        task.cmdsn = cmdsn;
        task.sent_at = Some(now);
        task.deadline = timeout.map(|d| now + d);
        if let Some(d) = task.deadline {
            self.timers.set_earliest(task.kind.timer(), d);
        }
        self.tasks.insert(itt, task);
    }

    /// A sent task is over: release its connection slot and report it.
    pub(super) fn finish(&mut self, task: Task<T>, result: Result<Outcome, TaskError>) {
        if let Some(c) = self.conns.get_mut(usize::from(task.cid)) {
            if matches!(task.kind, Kind::Scsi(_)) {
                c.in_flight = c.in_flight.saturating_sub(1);
            }
            if c.ping.is_some_and(|(itt, _)| itt == task.itt) {
                // The keepalive was answered: back to watching idle time.
                c.ping = None;
                if let Some(iv) = self.cfg.timeouts.nop_interval {
                    c.timers.stop(ConnTimer::NopResponse);
                    c.timers.set(ConnTimer::NopInterval, c.last_rx + iv);
                }
            }
        }
        self.complete(task, result);
    }

    /// Reports a task to its owner.
    pub(super) fn complete(&mut self, task: Task<T>, result: Result<Outcome, TaskError>) {
        if let Owner::User(token) = task.owner {
            self.events.push_back(Event::TaskDone { token, result });
        }
    }
}

/// Queues a SCSI command's PDUs (the command, its immediate and
/// unsolicited data) on `c`: when first sent, and when retried with the
/// same ITT and CmdSN.
pub(super) fn push_command(c: &mut Conn, params: &SessionParams, s: &ScsiTask, itt: u32, cmdsn: u32) {
    let (exp_statsn, burst) = (c.exp_statsn.0, Burst::new(params, &c.params));
    task::command_pdus(s, itt, cmdsn, exp_statsn, burst, |p| push_pdu(c, &p));
}

/// Encodes `pdu` into the connection's transmit queue.
pub(super) fn push_pdu(c: &mut Conn, pdu: &Pdu) {
    let raw = pdu.encode();
    let before = c.tx.len();
    c.tx.push(&raw, &c.framing);
    c.stats.pdus_sent += 1;
    c.stats.bytes_sent += (c.tx.len() - before) as u64;
    trace!(cid = c.cid, pdu = ?pdu.opcode(), "queued");
}
