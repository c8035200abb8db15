//! Answers to the tasks that are not SCSI commands: NOP-In (our ping
//! answered, or the target's ping to answer), Task Management Response,
//! Text Response (continued while long), Logout Response, and Reject of
//! any request.

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::scheduling::push_pdu;
use super::task::{Kind, Owner};
use super::{ConnPick, ConnectionFailure, Outcome, Session, TaskError};
use crate::pdu::{
    LogoutReason, LogoutResponse, LogoutResponseCode, NopIn, NopOut, Opcode, Pdu, RESERVED_TAG, Reject, RejectReason,
    TaskMgmtResponse, TextResponse, TmfFunction, TmfResponse,
};
use crate::serial::Sn;
use crate::text::decode_pairs;

/// Most text a text exchange may return in total (SendTargets listing of
/// a large array).
const MAX_TEXT_RESPONSE: usize = 1 << 20;

impl<T> Session<T> {
    pub(super) fn on_nop_in(&mut self, cid: u16, now: Instant, n: NopIn) {
        let answered = n.itt != RESERVED_TAG;
        self.ack(cid, answered.then_some(n.statsn), n.exp_cmdsn, n.max_cmdsn);
        if answered {
            match self.tasks.remove(&n.itt) {
                Some(t) => self.finish(t, Ok(Outcome::Nop(n.data.clone()))),
                None => self.unknown_itt(cid, Opcode::NOP_IN, n.itt),
            }
        }
        if n.ttt != RESERVED_TAG {
            // The target pings us: answer at once, echoing its tag and data
            // (RFC 7143 section 11.18.1, immediate, CmdSN not advanced).
            let cmdsn = self.window.cmdsn.0;
            let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
            let reply = NopOut {
                immediate: true,
                lun: n.lun,
                itt: RESERVED_TAG,
                ttt: n.ttt,
                cmdsn,
                exp_statsn: c.exp_statsn.0,
                data: n.data,
            };
            push_pdu(c, &Pdu::NopOut(reply));
        }
        let _ = now;
    }

    pub(super) fn on_tmf_response(&mut self, cid: u16, now: Instant, r: TaskMgmtResponse) {
        self.ack(cid, Some(r.statsn), r.exp_cmdsn, r.max_cmdsn);
        let Some(task) = self.tasks.remove(&r.itt) else {
            return self.unknown_itt(cid, Opcode::TASK_MGMT_RESPONSE, r.itt);
        };
        let Kind::TaskMgmt { function, lun, referenced_itt, .. } = task.kind else {
            self.tasks.insert(r.itt, task);
            return self.protocol_error(cid, now, format!("Task Management Response for ITT {:#x}, not a TMF", r.itt));
        };
        let confirmed = r.response == TmfResponse::FUNCTION_COMPLETE
            || (function == TmfFunction::ABORT_TASK && r.response == TmfResponse::TASK_DOES_NOT_EXIST);
        if let Owner::TimeoutAbort { itt } = task.owner {
            let outstanding = self.tasks.contains_key(&itt);
            if r.response == TmfResponse::FUNCTION_COMPLETE {
                if let Some(t) = self.tasks.remove(&itt) {
                    let elapsed = t.sent_at.map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
                    self.finish(t, Err(TaskError::TimedOut(elapsed)));
                }
                return;
            }
            if outstanding {
                // Either the abort failed, or the target says the task does
                // not exist although it never answered it: it lost the
                // command (tgtd drops commands while offline). The state of
                // this nexus cannot be trusted: drop the connection, so the
                // session is reinstated and its tasks sent again (seed
                // section 3.5, "abort task, then session recovery").
                let msg = format!("timed-out command ITT {itt:#x}: ABORT TASK answered '{}'", r.response);
                return self.fail_connection(cid, now, ConnectionFailure::Protocol(msg));
            }
            return;
        }
        if confirmed {
            let tmf_cmdsn = Sn(task.cmdsn);
            let affected: Vec<u32> = self
                .tasks
                .iter()
                .filter(|(itt, t)| match function {
                    TmfFunction::ABORT_TASK => **itt == referenced_itt,
                    TmfFunction::ABORT_TASK_SET | TmfFunction::CLEAR_TASK_SET | TmfFunction::LOGICAL_UNIT_RESET => {
                        matches!(t.kind, Kind::Scsi(_)) && t.lun() == lun && Sn(t.cmdsn).lt(tmf_cmdsn)
                    }
                    TmfFunction::TARGET_WARM_RESET | TmfFunction::TARGET_COLD_RESET => matches!(t.kind, Kind::Scsi(_)),
                    _ => false,
                })
                .map(|(itt, _)| *itt)
                .collect();
            for itt in affected {
                if let Some(t) = self.tasks.remove(&itt) {
                    self.finish(t, Err(TaskError::Aborted));
                }
            }
            self.finish(task, Ok(Outcome::TaskMgmt));
        } else {
            self.finish(task, Err(TaskError::TaskMgmt(r.response)));
        }
    }

    pub(super) fn on_text_response(&mut self, cid: u16, now: Instant, r: TextResponse) {
        self.ack(cid, Some(r.statsn), r.exp_cmdsn, r.max_cmdsn);
        let Some(mut task) = self.tasks.remove(&r.itt) else {
            return self.unknown_itt(cid, Opcode::TEXT_RESPONSE, r.itt);
        };
        let Kind::Text { acc, ttt, .. } = &mut task.kind else {
            self.tasks.insert(r.itt, task);
            return self.protocol_error(cid, now, format!("Text Response for ITT {:#x}, not a text request", r.itt));
        };
        if acc.len() + r.data.len() > MAX_TEXT_RESPONSE {
            return self.finish(task, Err(TaskError::Invalid(format!("text response over {MAX_TEXT_RESPONSE} bytes"))));
        }
        acc.extend_from_slice(&r.data);
        if r.final_pdu {
            let text = std::mem::take(acc);
            let result = match (&task.owner, decode_pairs(&text)) {
                (Owner::Renegotiate, Ok(pairs)) if !pairs.is_empty() => {
                    // Renegotiation in the full feature phase is not
                    // supported: log the connection out and back in.
                    self.begin_async_logout(cid, now);
                    Ok(Outcome::Text(pairs))
                }
                (_, Ok(pairs)) => Ok(Outcome::Text(pairs)),
                (_, Err(e)) => Err(TaskError::Invalid(format!("malformed text response: {e}"))),
            };
            self.complete(task, result);
        } else {
            // More to come: ask for it with the target's TTT and the same
            // ITT (RFC 7143 section 11.10.4).
            *ttt = r.ttt;
            task.pick = ConnPick::Cid(cid);
            self.queue.push_front((task, now));
        }
    }

    pub(super) fn on_logout_response(&mut self, cid: u16, now: Instant, r: LogoutResponse) {
        self.ack(cid, Some(r.statsn), r.exp_cmdsn, r.max_cmdsn);
        let Some(task) = self.tasks.remove(&r.itt) else {
            return self.unknown_itt(cid, Opcode::LOGOUT_RESPONSE, r.itt);
        };
        let Kind::Logout { reason, cid: out_cid } = task.kind else {
            self.tasks.insert(r.itt, task);
            return self.protocol_error(cid, now, format!("Logout Response for ITT {:#x}, not a logout", r.itt));
        };
        let ok = r.response == LogoutResponseCode::SUCCESS || r.response == LogoutResponseCode::CID_NOT_FOUND;
        match task.owner {
            Owner::CleanupLogout { cid: failed } => {
                if ok {
                    debug!(failed, "failed connection logged out; its tasks are terminated");
                    self.release_parked(now, |p| p == failed);
                } else {
                    warn!(failed, response = %r.response, "logout of a failed connection refused; waiting for reinstatement");
                }
            }
            Owner::AsyncLogout => {
                // The target asked for it; log in again after Time2Wait.
                self.requeue_tasks_of(out_cid, now);
                self.close_connection(
                    out_cid,
                    now,
                    Duration::from_secs(r.time2wait.into()),
                    "logged out on the target's request",
                );
            }
            _ if reason == LogoutReason::CLOSE_SESSION => {
                info!(tsih = self.tsih, "iSCSI session logged out");
                self.finish(task, Ok(Outcome::LoggedOut));
                self.close_all(TaskError::SessionClosed);
            }
            _ => {
                self.finish(
                    task,
                    if ok { Ok(Outcome::LoggedOut) } else { Err(TaskError::Invalid(r.response.to_string())) },
                );
            }
        }
    }

    pub(super) fn on_reject(&mut self, cid: u16, now: Instant, r: Reject) {
        self.ack(cid, Some(r.statsn), r.exp_cmdsn, r.max_cmdsn);
        let Some(hdr) = r.rejected_header() else {
            return self.protocol_error(cid, now, format!("Reject ({}) without the rejected header", r.reason));
        };
        warn!(cid, reason = %r.reason, opcode = %hdr.opcode(), itt = hdr.itt(), "target rejected a PDU");
        if r.reason == RejectReason::DATA_DIGEST_ERROR && self.recover_rejected_data(cid, &hdr) {
            return;
        }
        match hdr.opcode() {
            Opcode::SCSI_COMMAND
            | Opcode::TASK_MGMT_REQUEST
            | Opcode::TEXT_REQUEST
            | Opcode::NOP_OUT
            | Opcode::LOGOUT_REQUEST => {
                if let Some(t) = self.tasks.remove(&hdr.itt()) {
                    match t.owner {
                        Owner::TimeoutAbort { .. } => self.fail_connection(
                            cid,
                            now,
                            ConnectionFailure::Protocol("target rejected ABORT TASK for a timed-out command".into()),
                        ),
                        _ => self.finish(t, Err(TaskError::Rejected(r.reason))),
                    }
                }
            }
            other => self.protocol_error(cid, now, format!("target rejected a {other}: {}", r.reason)),
        }
    }
}
