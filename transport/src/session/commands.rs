//! Commands from the application: start the session, submit SCSI
//! commands, text requests, NOP pings, task management functions, aborts
//! and the logout. Each becomes a task that [`super::scheduling`] sends
//! when a connection and the CmdSN window allow.

use std::time::Instant;

use bytes::Bytes;

use super::conn::Phase;
use super::event::Event;
use super::task::{Kind, Owner, ScsiTask, Task};
use super::{ConnPick, Outcome, ReadData, ScsiRequest, Session, SessionState, TaskError, TaskId};
use crate::config::SessionType;
use crate::pdu::{LogoutReason, RESERVED_TAG, TmfFunction};
use crate::text::{KeyValue, encode_pairs};

impl<T> Session<T> {
    /// Starts the session: asks the driver to connect the leading
    /// connection.
    pub fn start(&mut self, now: Instant) {
        if self.state == SessionState::Starting
            && let Some(c) = self.conns.first_mut()
            && matches!(c.phase, Phase::Idle)
        {
            let _ = now;
            c.enter(Phase::Connecting);
            self.events.push_back(Event::Connect { cid: 0, portal: c.portal.clone() });
        }
    }

    /// Submits a SCSI command. Its completion comes as
    /// [`Event::TaskDone`] with `token`.
    pub fn submit(&mut self, now: Instant, req: ScsiRequest, pick: ConnPick, token: T) -> TaskId {
        let kind = Kind::Scsi(ScsiTask {
            req,
            data: ReadData::default(),
            next_datasn: 0,
            next_r2tsn: 0,
            aborting: false,
            snacked: false,
        });
        self.enqueue(now, Task::new(Owner::User(token), kind, pick))
    }

    /// Sends a Text Request with `pairs` (for example `SendTargets=All`)
    /// and returns the whole response, however many PDUs it takes.
    pub fn text_request(&mut self, now: Instant, pairs: &[KeyValue], token: T) -> TaskId {
        let mut buf = Vec::new();
        encode_pairs(pairs, &mut buf);
        let kind = Kind::Text { request: Bytes::from(buf), acc: Vec::new(), ttt: RESERVED_TAG };
        self.enqueue(now, Task::new(Owner::User(token), kind, ConnPick::Any))
    }

    /// Sends a NOP-Out ping and completes when the NOP-In answers.
    pub fn nop(&mut self, now: Instant, data: Bytes, token: T) -> TaskId {
        self.enqueue(now, Task::new(Owner::User(token), Kind::Nop { data }, ConnPick::Any))
    }

    /// Sends a task management function for `lun` (ABORT TASK SET, LOGICAL
    /// UNIT RESET, TARGET WARM RESET, ...). Tasks it terminates complete
    /// with [`TaskError::Aborted`]. For ABORT TASK use [`Session::abort`].
    pub fn task_mgmt(&mut self, now: Instant, function: TmfFunction, lun: u64, token: T) -> TaskId {
        let kind = Kind::TaskMgmt { function, lun, referenced_itt: RESERVED_TAG, ref_cmdsn: 0 };
        self.enqueue(now, Task::new(Owner::User(token), kind, ConnPick::Any))
    }

    /// Aborts task `id` with ABORT TASK; `token` completes when the target
    /// answered. A task not sent yet is dropped at once.
    pub fn abort(&mut self, now: Instant, id: TaskId, token: T) -> TaskId {
        let tmf_id = self.new_id();
        if let Some(pos) = self.queue.iter().position(|(t, _)| t.id == id) {
            if let Some((t, _)) = self.queue.remove(pos) {
                self.complete(t, Err(TaskError::Aborted));
            }
            self.events.push_back(Event::TaskDone { token, result: Ok(Outcome::TaskMgmt) });
            return tmf_id;
        }
        if self.parked.iter().any(|t| t.id == id) {
            let err = TaskError::Invalid("the task waits for connection recovery and cannot be aborted now".into());
            self.events.push_back(Event::TaskDone { token, result: Err(err) });
            return tmf_id;
        }
        let Some(target) = self.tasks.values().find(|t| t.id == id) else {
            // Finished already: the same answer the target would give.
            self.events.push_back(Event::TaskDone { token, result: Ok(Outcome::TaskMgmt) });
            return tmf_id;
        };
        let kind = Kind::TaskMgmt {
            function: TmfFunction::ABORT_TASK,
            lun: target.lun(),
            referenced_itt: target.itt,
            ref_cmdsn: target.cmdsn,
        };
        let pick = ConnPick::Cid(target.cid);
        let mut t = Task::new(Owner::User(token), kind, pick);
        t.id = tmf_id;
        self.urgent.push_back(t);
        self.pump(now);
        tmf_id
    }

    /// Logs the session out once the tasks in flight have finished; tasks
    /// not sent yet fail with [`TaskError::SessionClosed`].
    pub fn logout(&mut self, now: Instant, token: T) {
        match self.state {
            SessionState::Up => {
                self.state = SessionState::LoggingOut;
                self.fail_unsent(|| TaskError::SessionClosed);
                let t = Task::new(
                    Owner::User(token),
                    Kind::Logout { reason: LogoutReason::CLOSE_SESSION, cid: 0 },
                    ConnPick::Any,
                );
                self.urgent.push_back(t);
                self.pump(now);
            }
            _ => {
                self.close_all(TaskError::SessionClosed);
                self.events.push_back(Event::TaskDone { token, result: Ok(Outcome::LoggedOut) });
            }
        }
    }

    pub(super) fn new_id(&mut self) -> TaskId {
        let id = TaskId(self.next_id);
        self.next_id += 1;
        id
    }

    pub(super) fn enqueue(&mut self, now: Instant, mut task: Task<T>) -> TaskId {
        let id = self.new_id();
        task.id = id;
        match self.state {
            SessionState::Closed | SessionState::LoggingOut => {
                self.complete(task, Err(TaskError::SessionClosed));
            }
            SessionState::Failed => {
                self.complete(task, Err(TaskError::SessionFailed("the session failed and does not reconnect".into())));
            }
            _ if self.cfg.session_type == SessionType::Discovery && matches!(task.kind, Kind::Scsi(_)) => {
                self.complete(task, Err(TaskError::Invalid("SCSI commands need a normal session".into())));
            }
            _ if task.kind.is_immediate() => {
                self.urgent.push_back(task);
                self.pump(now);
            }
            _ => {
                self.queue.push_back((task, now));
                if !self.is_up() {
                    self.arm_recovery();
                }
                self.pump(now);
            }
        }
        id
    }
}
