//! The session engine: one iSCSI session with one or more connections
//! (MCS), as a sans-I/O state machine in the shape of quinn-proto's
//! `Connection`.
//!
//! Four kinds of method:
//! - getters (`is_up`, `params`, `stats`, ...);
//! - `handle_*` for input: bytes from a socket, a connect that succeeded or
//!   failed, a closed socket, and `handle_timeout(now)`;
//! - commands from the application: [`Session::submit`] and friends;
//! - `poll_*` for output: [`Session::tx`] holds the bytes to write for a
//!   connection, [`Session::poll_timeout`] the next deadline,
//!   [`Session::poll_event`] completions and requests to the driver.
//!
//! Nothing here reads a clock, draws randomness or touches a socket:
//! every input carries `now`, CHAP challenges come from the configured
//! [`crate::chap::Random`], and the timers are data (`timer.rs`: one table
//! for the session, one per connection; [`Session::poll_timeout`] is their
//! earliest deadline). The tokio driver in [`crate::driver`] is a thin
//! loop around it.
//!
//! The session runs at ErrorRecoveryLevel 0. When a connection fails, the
//! tasks it carried are *parked*: the target may still execute them until
//! it has provably terminated them, which happens when another connection
//! logs the failed one out, when the same CID logs in again (connection
//! reinstatement, RFC 7143 section 6.3.4) or when the session is reinstated
//! (a login with the same ISID and TSIH 0, section 6.3.5). Parked tasks are
//! then sent again; if that takes longer than the recovery timeout they
//! fail, and the error says whether the target may still execute them.

mod conn;
mod event;
mod request;
mod task;
mod timer;
mod window;

#[cfg(test)]
mod tests;

pub use conn::ConnStats;
pub use event::{ConnectionFailure, Event, Outcome, SessionEvent, TaskError};
pub use request::{ReadData, ScsiRequest, ScsiResult};
pub use task::ConnPick;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tracing::{debug, info, trace, warn};

use self::conn::{Conn, Phase};
use self::task::{Burst, Kind, Owner, ScsiTask, Task};
use self::timer::{ConnTimer, SessionTimer, SessionTimers};
use self::window::Window;
use crate::config::{SessionConfig, SessionType};
use crate::login::{Login, LoginError, LoginOutcome, LoginProgress, LoginSetup};
use crate::pdu::frame::{self, TxQueue};
use crate::pdu::{
    AsyncEvent, AsyncMessage, DataIn, LogoutReason, LogoutResponse, LogoutResponseCode, NopIn, NopOut, Opcode, Pdu,
    R2t, RESERVED_TAG, Reject, ScsiResponse, TaskMgmtRequest, TaskMgmtResponse, TextRequest, TextResponse, TmfFunction,
    TmfResponse,
};
use crate::serial::Sn;
use crate::text::{KeyValue, SessionParams, decode_pairs, encode_pairs};

/// Most text a text exchange may return in total (SendTargets listing of
/// a large array).
const MAX_TEXT_RESPONSE: usize = 1 << 20;

/// Seed AsyncLogoutPauseTimeout (004 lines 4302-4306): how long a
/// connection the target asked to log out keeps draining.
const ASYNC_LOGOUT_PAUSE: Duration = Duration::from_secs(10);

/// A handle on a submitted task, for [`Session::abort`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TaskId(u64);

/// Where the session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Not logged in yet.
    Starting,
    /// At least one connection is in the full feature phase.
    Up,
    /// No connection is up; reconnecting.
    Recovering,
    /// A session logout is under way.
    LoggingOut,
    /// Logged out.
    Closed,
    /// Failed for good: it needs an administrator (or reconnect is off).
    Failed,
}

/// Counters of a session, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Session logins (the first one and reinstatements).
    pub logins: u64,
    /// Session reinstatements.
    pub reinstatements: u64,
    /// Tasks aborted because they timed out.
    pub timeouts: u64,
    /// Tasks sent again after a connection failure.
    pub retries: u64,
}

/// A session. `T` is the caller's token returned with each completion.
pub struct Session<T> {
    cfg: SessionConfig,
    state: SessionState,
    tsih: u16,
    logged_in_once: bool,
    params: SessionParams,
    window: Window,
    conns: Vec<Conn>,
    /// Tasks sent and not finished, by ITT.
    tasks: HashMap<u32, Task<T>>,
    /// Non-immediate tasks waiting for the window, a connection or room.
    queue: VecDeque<(Task<T>, Instant)>,
    /// Immediate tasks waiting for a connection.
    urgent: VecDeque<Task<T>>,
    /// Tasks caught by a connection failure, waiting for the target to
    /// terminate them.
    parked: Vec<Task<T>>,
    next_itt: u32,
    next_id: u64,
    /// The session's deadlines; each connection has its own.
    timers: SessionTimers,
    down_since: Option<Instant>,
    events: VecDeque<Event<T>>,
    stats: SessionStats,
}

impl<T> std::fmt::Debug for Session<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("state", &self.state)
            .field("tsih", &self.tsih)
            .field("tasks", &self.tasks.len())
            .field("queued", &self.queue.len())
            .field("parked", &self.parked.len())
            .finish_non_exhaustive()
    }
}

/// A configuration the session cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No connection configured.
    #[error("a session needs at least one connection (portal)")]
    NoConnection,
    /// A normal session without a target name.
    #[error("a normal session needs a target name")]
    NoTargetName,
    /// Too many connections for CIDs.
    #[error("too many connections ({0}); at most 65535")]
    TooManyConnections(usize),
    /// An operational value out of range.
    #[error("{0}")]
    Offer(String),
}

impl<T> Session<T> {
    /// A session that has not started. Call [`Session::start`].
    pub fn new(mut cfg: SessionConfig, now: Instant) -> Result<Session<T>, ConfigError> {
        if cfg.connections.is_empty() {
            return Err(ConfigError::NoConnection);
        }
        if cfg.session_type == SessionType::Normal && cfg.target_name.is_none() {
            return Err(ConfigError::NoTargetName);
        }
        if cfg.connections.len() > usize::from(u16::MAX) {
            return Err(ConfigError::TooManyConnections(cfg.connections.len()));
        }
        // An MCS session must be allowed as many connections as configured.
        let n = cfg.connections.len() as u16;
        cfg.offer.max_connections = cfg.offer.max_connections.max(n);
        cfg.offer.validate().map_err(|e| ConfigError::Offer(e.to_string()))?;
        let backoff = cfg.timeouts.reconnect_min;
        let conns = cfg
            .connections
            .iter()
            .enumerate()
            .map(|(i, spec)| Conn::new(i as u16, spec.clone(), now, backoff))
            .collect();
        Ok(Session {
            cfg,
            state: SessionState::Starting,
            tsih: 0,
            logged_in_once: false,
            params: SessionParams::default(),
            window: Window::new(1, 1, 0),
            conns,
            tasks: HashMap::new(),
            queue: VecDeque::new(),
            urgent: VecDeque::new(),
            parked: Vec::new(),
            next_itt: 1,
            next_id: 1,
            timers: SessionTimers::default(),
            down_since: Some(now),
            events: VecDeque::new(),
            stats: SessionStats::default(),
        })
    }

    // ---- getters -------------------------------------------------------

    /// The session's state.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// True when commands can be sent.
    pub fn is_up(&self) -> bool {
        self.state == SessionState::Up
    }

    /// The negotiated session-wide parameters (RFC defaults before login).
    pub fn params(&self) -> &SessionParams {
        &self.params
    }

    /// The TSIH the target assigned (0 before login).
    pub fn tsih(&self) -> u16 {
        self.tsih
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// Number of configured connections (CIDs are `0..n`).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// True when connection `cid` is in the full feature phase.
    pub fn connection_up(&self, cid: u16) -> bool {
        self.conn(cid).is_some_and(Conn::is_up)
    }

    /// Negotiated parameters of connection `cid`.
    pub fn connection_params(&self, cid: u16) -> Option<&crate::text::ConnectionParams> {
        self.conn(cid).filter(|c| c.is_up()).map(|c| &c.params)
    }

    /// Tasks in flight on connection `cid`.
    pub fn connection_queue_depth(&self, cid: u16) -> usize {
        self.conn(cid).map_or(0, |c| c.in_flight)
    }

    /// Counters of connection `cid`.
    pub fn connection_stats(&self, cid: u16) -> Option<ConnStats> {
        self.conn(cid).map(|c| c.stats)
    }

    /// The TargetPortalGroupTag connection `cid` logged in through.
    pub fn connection_tpgt(&self, cid: u16) -> Option<u16> {
        self.conn(cid).and_then(|c| c.tpgt)
    }

    /// The portal connection `cid` uses now (after redirections).
    pub fn connection_portal(&self, cid: u16) -> Option<&crate::portal::Portal> {
        self.conn(cid).map(|c| &c.portal)
    }

    /// The configuration of connection `cid`, with its current portal.
    pub fn connection_spec(&self, cid: u16) -> Option<crate::config::ConnectionSpec> {
        self.conn(cid).map(|c| crate::config::ConnectionSpec { portal: c.portal.clone(), ..c.spec.clone() })
    }

    /// Session counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Tasks in flight, queued and parked.
    pub fn outstanding(&self) -> usize {
        self.tasks.len() + self.queue.len() + self.urgent.len() + self.parked.len()
    }

    fn conn(&self, cid: u16) -> Option<&Conn> {
        self.conns.get(usize::from(cid))
    }

    // ---- commands --------------------------------------------------------

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
        let kind =
            Kind::Scsi(ScsiTask { req, data: ReadData::default(), next_datasn: 0, next_r2tsn: 0, aborting: false });
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

    fn new_id(&mut self) -> TaskId {
        let id = TaskId(self.next_id);
        self.next_id += 1;
        id
    }

    fn enqueue(&mut self, now: Instant, mut task: Task<T>) -> TaskId {
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

    // ---- output ----------------------------------------------------------

    /// The bytes waiting to be written on connection `cid`.
    pub fn tx(&mut self, cid: u16) -> Option<&mut TxQueue> {
        self.conns.get_mut(usize::from(cid)).map(|c| &mut c.tx)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event<T>> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next: the earliest
    /// deadline of the session's timers and of its connections'.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns.iter().filter_map(|c| c.timers.next()).chain(self.timers.next()).min()
    }

    // ---- input: driver ---------------------------------------------------

    /// The TCP connection for `cid` is open: the login starts.
    pub fn handle_connected(&mut self, cid: u16, now: Instant) {
        let leading = !self.conns.iter().any(|c| c.cid != cid && c.is_up());
        if !leading && self.params.max_connections <= 1 {
            // The leading login negotiated MaxConnections=1 (seed 13.2).
            self.login_failed(cid, now, LoginError::McsNotSupported);
            return;
        }
        let itt = self.alloc_itt();
        let setup = LoginSetup {
            initiator_name: self.cfg.initiator_name.clone(),
            initiator_alias: self.cfg.initiator_alias.clone(),
            target_name: self.cfg.target_name.clone(),
            session_type: self.cfg.session_type,
            isid: self.cfg.isid,
            tsih: if leading { 0 } else { self.tsih },
            cid,
            cmdsn: self.window.cmdsn.0,
            itt,
            auth: self.cfg.auth.clone(),
            offer: self.cfg.offer.clone(),
            random: self.cfg.random.clone(),
        };
        let login_timeout = self.cfg.timeouts.login;
        let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
        if !matches!(c.phase, Phase::Connecting) {
            return;
        }
        c.reset_for_login(now);
        let mut login = Box::new(Login::new(setup));
        while let Some(req) = login.poll_request() {
            push_pdu(c, &Pdu::LoginRequest(req));
        }
        debug!(cid, portal = %c.portal, leading, "iSCSI login started");
        c.enter(Phase::LoggingIn { login, leading });
        c.timers.set(ConnTimer::Login, now + login_timeout);
    }

    /// Opening the TCP connection for `cid` failed.
    pub fn handle_connect_failed(&mut self, cid: u16, now: Instant, reason: String) {
        let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
        if !matches!(c.phase, Phase::Connecting) {
            return;
        }
        c.stats.login_failures += 1;
        let portal = c.portal.clone();
        warn!(cid, %portal, %reason, "connect failed");
        self.connection_down(cid, now, ConnectionFailure::Connect { portal, reason }, true);
    }

    /// The socket of `cid` was closed by the peer or failed.
    pub fn handle_closed(&mut self, cid: u16, now: Instant, reason: String) {
        let Some(c) = self.conns.get(usize::from(cid)) else { return };
        match c.phase {
            Phase::LoggingIn { .. } => self.login_failed(cid, now, LoginError::Closed),
            Phase::Up => self.fail_connection(cid, now, ConnectionFailure::Closed(reason)),
            _ => {}
        }
    }

    /// Bytes arrived on `cid`. Complete PDUs are taken off the front of
    /// `buf`; a partial one stays for the next call.
    pub fn handle_bytes(&mut self, cid: u16, now: Instant, buf: &mut BytesMut) {
        loop {
            let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
            if !matches!(c.phase, Phase::LoggingIn { .. } | Phase::Up) {
                buf.clear();
                return;
            }
            let raw = match frame::decode(buf, &c.framing) {
                Ok(Some(raw)) => raw,
                Ok(None) => return,
                Err(e) => {
                    if matches!(e, frame::FrameError::HeaderDigest { .. } | frame::FrameError::DataDigest { .. }) {
                        c.stats.digest_errors += 1;
                    }
                    buf.clear();
                    self.protocol_error(cid, now, e.to_string());
                    return;
                }
            };
            c.stats.pdus_received += 1;
            c.stats.data_bytes_received += raw.data.len() as u64;
            c.last_rx = now;
            let pdu = match Pdu::parse(raw) {
                Ok(p) => p,
                Err(e) => {
                    buf.clear();
                    self.protocol_error(cid, now, e.to_string());
                    return;
                }
            };
            trace!(cid, pdu = ?pdu.opcode(), "received");
            self.handle_pdu(cid, now, pdu);
        }
    }

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

    // ---- PDU dispatch ----------------------------------------------------

    fn handle_pdu(&mut self, cid: u16, now: Instant, pdu: Pdu) {
        let logging_in = matches!(self.conns.get(usize::from(cid)).map(|c| &c.phase), Some(Phase::LoggingIn { .. }));
        if logging_in {
            match pdu {
                Pdu::LoginResponse(rsp) => self.on_login_response(cid, now, rsp),
                other => self.login_failed(cid, now, LoginError::Protocol(format!("{} during login", other.opcode()))),
            }
            return;
        }
        match pdu {
            Pdu::ScsiResponse(r) => self.on_scsi_response(cid, now, r),
            Pdu::DataIn(d) => self.on_data_in(cid, now, d),
            Pdu::R2t(r) => self.on_r2t(cid, now, r),
            Pdu::NopIn(n) => self.on_nop_in(cid, now, n),
            Pdu::TaskMgmtResponse(r) => self.on_tmf_response(cid, now, r),
            Pdu::TextResponse(r) => self.on_text_response(cid, now, r),
            Pdu::LogoutResponse(r) => self.on_logout_response(cid, now, r),
            Pdu::AsyncMessage(a) => self.on_async(cid, now, a),
            Pdu::Reject(r) => self.on_reject(cid, now, r),
            other => self.protocol_error(cid, now, format!("unexpected {} from the target", other.opcode())),
        }
        self.pump(now);
    }

    /// Applies ExpCmdSN/MaxCmdSN and, for PDUs that carry a status, StatSN.
    fn ack(&mut self, cid: u16, statsn: Option<u32>, exp_cmdsn: u32, max_cmdsn: u32) {
        self.window.update(exp_cmdsn, max_cmdsn);
        let Some(statsn) = statsn else { return };
        let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
        let sn = Sn(statsn);
        if sn != c.exp_statsn {
            // Seed event 42. A gap at ERL 0 cannot be repaired; the
            // affected task times out. Resynchronise so acknowledgements
            // stay right.
            c.stats.statsn_gaps += 1;
            debug!(cid, statsn, expected = c.exp_statsn.0, "StatSN out of sequence");
        }
        if sn.le(c.exp_statsn) && sn != c.exp_statsn {
            return;
        }
        c.exp_statsn = sn.next();
    }

    fn on_login_response(&mut self, cid: u16, now: Instant, rsp: crate::pdu::LoginResponse) {
        let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
        let Phase::LoggingIn { login, .. } = &mut c.phase else { return };
        match login.handle_response(rsp) {
            Ok(LoginProgress::Continue) => {
                let reqs: Vec<_> = std::iter::from_fn(|| login.poll_request()).collect();
                for req in reqs {
                    push_pdu(c, &Pdu::LoginRequest(req));
                }
            }
            Ok(LoginProgress::Done(outcome)) => self.login_done(cid, now, outcome),
            Err(e) => self.login_failed(cid, now, e),
        }
    }

    fn login_done(&mut self, cid: u16, now: Instant, outcome: LoginOutcome) {
        let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
        let Phase::LoggingIn { leading, .. } = c.phase else { return };
        c.enter_full_feature(
            outcome.negotiated.connection.clone(),
            outcome.exp_statsn,
            now,
            self.cfg.timeouts.nop_interval,
        );
        c.tpgt = outcome.tpgt;
        c.stats.logins += 1;
        c.backoff = self.cfg.timeouts.reconnect_min;
        info!(
            cid,
            portal = %c.portal,
            tsih = outcome.tsih,
            header_digest = ?c.params.header_digest,
            data_digest = ?c.params.data_digest,
            max_xmit = c.params.max_xmit_data_segment_length,
            "iSCSI connection in full feature phase"
        );
        if leading {
            let reinstated = self.logged_in_once;
            self.logged_in_once = true;
            self.tsih = outcome.tsih;
            self.params = outcome.negotiated.session.clone();
            self.window = Window::new(self.window.cmdsn.0, outcome.exp_cmdsn, outcome.max_cmdsn);
            self.state = SessionState::Up;
            self.down_since = None;
            self.stats.logins += 1;
            if reinstated {
                self.stats.reinstatements += 1;
            }
            self.events.push_back(Event::State(SessionEvent::SessionUp { tsih: outcome.tsih, reinstated }));
            // A new session (same ISID, TSIH 0) made the target terminate
            // every task of the old one (RFC 7143 section 6.3.5).
            self.release_parked(now, |_| true);
            // Bring up the further connections of an MCS session.
            for c in &mut self.conns {
                if matches!(c.phase, Phase::Idle) {
                    c.enter(Phase::Connecting);
                    self.events.push_back(Event::Connect { cid: c.cid, portal: c.portal.clone() });
                }
            }
        } else {
            self.window.update(outcome.exp_cmdsn, outcome.max_cmdsn);
            // Connection reinstatement terminated the old connection's tasks.
            self.release_parked(now, |p| p == cid);
        }
        self.events.push_back(Event::State(SessionEvent::ConnectionUp { cid }));
        self.pump(now);
    }

    fn login_failed(&mut self, cid: u16, now: Instant, e: LoginError) {
        let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
        c.stats.login_failures += 1;
        if let LoginError::Redirect { address, permanent } = &e
            && c.redirects < self.cfg.max_redirects
        {
            c.redirects += 1;
            let portal = address.portal().clone();
            info!(cid, from = %c.portal, to = %portal, permanent, "login redirected");
            if *permanent {
                c.spec.portal = portal.clone();
            }
            c.portal = portal.clone();
            c.enter(Phase::Connecting);
            self.events.push_back(Event::Close { cid, flush: false });
            self.events.push_back(Event::Connect { cid, portal });
            return;
        }
        let e = match e {
            LoginError::Redirect { address, .. } => {
                LoginError::RedirectLoop { count: c.redirects, last: address.portal().to_string() }
            }
            e => e,
        };
        warn!(cid, portal = %c.portal, error = %e, "iSCSI login failed");
        let retry = e.is_retryable();
        self.connection_down(cid, now, ConnectionFailure::Login(e), retry);
    }

    /// A connection ends: login failed, connect failed, or it failed in
    /// the full feature phase. Schedules its reconnect and, when it was the
    /// last one, moves the session to recovery (or to failure).
    fn connection_down(&mut self, cid: u16, now: Instant, reason: ConnectionFailure, retryable: bool) {
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
    fn fail_connection(&mut self, cid: u16, now: Instant, reason: ConnectionFailure) {
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

    fn protocol_error(&mut self, cid: u16, now: Instant, msg: String) {
        let phase_login = matches!(self.conn(cid).map(|c| &c.phase), Some(Phase::LoggingIn { .. }));
        if phase_login {
            self.login_failed(cid, now, LoginError::Protocol(msg));
        } else {
            self.fail_connection(cid, now, ConnectionFailure::Protocol(msg));
        }
    }

    // ---- responses -------------------------------------------------------

    fn unknown_itt(&mut self, cid: u16, opcode: Opcode, itt: u32) {
        // Seed event 27: late answers after a timeout cleanup, or a bogus
        // tag. Discarded.
        debug!(cid, %opcode, itt, "PDU for an unknown task discarded");
        if let Some(c) = self.conns.get_mut(usize::from(cid)) {
            c.stats.unknown_itt += 1;
        }
    }

    fn on_scsi_response(&mut self, cid: u16, now: Instant, r: ScsiResponse) {
        self.ack(cid, Some(r.statsn), r.exp_cmdsn, r.max_cmdsn);
        let Some(task) = self.tasks.remove(&r.itt) else { return self.unknown_itt(cid, Opcode::SCSI_RESPONSE, r.itt) };
        if task.cid != cid || !matches!(task.kind, Kind::Scsi(_)) {
            self.tasks.insert(r.itt, task);
            return self.protocol_error(
                cid,
                now,
                format!("SCSI Response for ITT {:#x} on the wrong connection or task", r.itt),
            );
        }
        let mut task = task;
        let Kind::Scsi(s) = &mut task.kind else { return };
        let result = if r.response != 0 {
            Err(TaskError::TargetFailure(r.response))
        } else {
            Ok(Outcome::Scsi(ScsiResult {
                status: r.status,
                sense: r.sense(),
                data: std::mem::take(&mut s.data),
                residual: r.residual,
            }))
        };
        self.finish(task, result);
    }

    fn on_data_in(&mut self, cid: u16, now: Instant, d: DataIn) {
        self.ack(cid, d.status.map(|_| d.statsn), d.exp_cmdsn, d.max_cmdsn);
        let Some(task) = self.tasks.get_mut(&d.itt) else { return self.unknown_itt(cid, Opcode::DATA_IN, d.itt) };
        let (Kind::Scsi(s), true) = (&mut task.kind, task.cid == cid) else {
            return self.protocol_error(
                cid,
                now,
                format!("Data-In for ITT {:#x}, which is not a read on this connection", d.itt),
            );
        };
        let expected = s.req.read_len as usize;
        // DataPDUInOrder=Yes and DataSequenceInOrder=Yes (we require both):
        // data arrives in order, without gaps (RFC 7143 section 13.19-20).
        if d.buffer_offset as usize != s.data.len() || d.datasn != s.next_datasn {
            let msg = format!(
                "Data-In out of order for ITT {:#x}: offset {} DataSN {} (expected {} and {})",
                d.itt,
                d.buffer_offset,
                d.datasn,
                s.data.len(),
                s.next_datasn
            );
            return self.protocol_error(cid, now, msg);
        }
        if s.data.len() + d.data.len() > expected {
            // Seed event 26: never let a target write past the buffer.
            let msg = format!(
                "target sent {} bytes for ITT {:#x}, which asked for {expected}",
                s.data.len() + d.data.len(),
                d.itt
            );
            return self.protocol_error(cid, now, msg);
        }
        s.next_datasn = s.next_datasn.wrapping_add(1);
        s.data.push(d.data);
        if let Some(status) = d.status {
            let Some(mut task) = self.tasks.remove(&d.itt) else { return };
            let Kind::Scsi(s) = &mut task.kind else { return };
            let result = Outcome::Scsi(ScsiResult {
                status,
                sense: None,
                data: std::mem::take(&mut s.data),
                residual: d.residual,
            });
            self.finish(task, Ok(result));
        }
    }

    fn on_r2t(&mut self, cid: u16, now: Instant, r: R2t) {
        self.ack(cid, None, r.exp_cmdsn, r.max_cmdsn);
        let Some(task) = self.tasks.get_mut(&r.itt) else { return self.unknown_itt(cid, Opcode::R2T, r.itt) };
        let max_burst = self.params.max_burst_length;
        let (Kind::Scsi(s), true) = (&mut task.kind, task.cid == cid) else {
            return self.protocol_error(
                cid,
                now,
                format!("R2T for ITT {:#x}, which is not a write on this connection", r.itt),
            );
        };
        let write_len = s.req.data_out.len() as u64;
        if u64::from(r.buffer_offset) + u64::from(r.desired_len) > write_len || r.desired_len > max_burst {
            let msg = format!(
                "invalid R2T for ITT {:#x}: offset {} length {} (write of {write_len} bytes, MaxBurstLength {max_burst})",
                r.itt, r.buffer_offset, r.desired_len
            );
            // Seed event 28.
            return self.protocol_error(cid, now, msg);
        }
        s.next_r2tsn = r.r2tsn.wrapping_add(1);
        let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
        let exp_statsn = c.exp_statsn.0;
        let max_xmit = c.params.max_xmit_data_segment_length.max(512);
        let mut pdus = Vec::new();
        task::data_out_pdus(&s.req, r.itt, r.ttt, r.buffer_offset, r.desired_len, exp_statsn, max_xmit, &mut |p| {
            pdus.push(p)
        });
        for p in &pdus {
            push_pdu(c, p);
        }
    }

    fn on_nop_in(&mut self, cid: u16, now: Instant, n: NopIn) {
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

    fn on_tmf_response(&mut self, cid: u16, now: Instant, r: TaskMgmtResponse) {
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

    fn on_text_response(&mut self, cid: u16, now: Instant, r: TextResponse) {
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

    fn on_logout_response(&mut self, cid: u16, now: Instant, r: LogoutResponse) {
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

    fn on_async(&mut self, cid: u16, now: Instant, a: AsyncMessage) {
        self.ack(cid, Some(a.statsn), a.exp_cmdsn, a.max_cmdsn);
        info!(cid, event = %a.event, p1 = a.parameter1, p2 = a.parameter2, p3 = a.parameter3, "asynchronous message");
        match a.event {
            AsyncEvent::SCSI_EVENT => {
                let sense = match a.data.get(..2) {
                    Some([h, l]) => {
                        let len = usize::from(u16::from_be_bytes([*h, *l]));
                        a.data.slice(2..(2 + len).min(a.data.len()))
                    }
                    _ => Bytes::new(),
                };
                self.events.push_back(Event::State(SessionEvent::ScsiAsyncEvent { lun: a.lun, sense }));
            }
            AsyncEvent::LOGOUT_REQUEST => {
                // Seed event 32: stop sending on this connection, let it
                // drain, then log out (at the latest when the target's
                // deadline, Parameter3, or our pause runs out).
                let wait = Duration::from_secs(a.parameter3.into()).min(ASYNC_LOGOUT_PAUSE);
                if let Some(c) = self.conns.get_mut(usize::from(cid))
                    && c.is_up()
                {
                    c.timers.set(ConnTimer::AsyncLogoutPause, now + wait.max(Duration::from_millis(1)) / 2);
                }
                self.maybe_async_logout(cid, now);
            }
            AsyncEvent::DROP_CONNECTION => {
                let target_cid = a.parameter1;
                self.fail_connection(
                    target_cid,
                    now,
                    ConnectionFailure::TargetRequest(format!("target drops connection {target_cid}")),
                );
                self.delay_reconnect(target_cid, now, a.parameter2);
            }
            AsyncEvent::DROP_ALL_CONNECTIONS => {
                let cids: Vec<u16> = self.conns.iter().filter(|c| c.is_up()).map(|c| c.cid).collect();
                for c in cids {
                    self.fail_connection(
                        c,
                        now,
                        ConnectionFailure::TargetRequest("target drops all connections".into()),
                    );
                    self.delay_reconnect(c, now, a.parameter2);
                }
            }
            AsyncEvent::RENEGOTIATE => {
                // Answer with an empty Text Request on this connection
                // (RFC 7143 section 11.9.1, AsyncEvent 4).
                let kind = Kind::Text { request: Bytes::new(), acc: Vec::new(), ttt: RESERVED_TAG };
                let t = Task::new(Owner::Renegotiate, kind, ConnPick::Cid(cid));
                self.queue.push_front((t, now));
            }
            _ => {}
        }
    }

    fn on_reject(&mut self, cid: u16, now: Instant, r: Reject) {
        self.ack(cid, Some(r.statsn), r.exp_cmdsn, r.max_cmdsn);
        let Some(hdr) = r.rejected_header() else {
            return self.protocol_error(cid, now, format!("Reject ({}) without the rejected header", r.reason));
        };
        warn!(cid, reason = %r.reason, opcode = %hdr.opcode(), itt = hdr.itt(), "target rejected a PDU");
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

    // ---- timers ----------------------------------------------------------

    fn on_conn_timer(&mut self, cid: u16, timer: ConnTimer, now: Instant) {
        let t = &self.cfg.timeouts;
        let (nop_interval, nop_timeout, login) = (t.nop_interval, t.nop_timeout, t.login);
        let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
        match (timer, &c.phase) {
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

    fn send_keepalive(&mut self, cid: u16, now: Instant) {
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
    fn on_task_timer(&mut self, timer: SessionTimer, now: Instant) {
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

    /// Fails the parked tasks, and the tasks queued while no connection is
    /// up, that waited the whole recovery timeout.
    fn on_recovery_timer(&mut self, now: Instant) {
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
    fn arm_recovery(&mut self) {
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

    /// The target's Time2Wait (an Async Message's Parameter2) holds off
    /// the reconnect that a connection failure scheduled.
    fn delay_reconnect(&mut self, cid: u16, now: Instant, time2wait: u16) {
        if let Some(c) = self.conns.get_mut(usize::from(cid))
            && c.reconnect_planned()
        {
            c.timers.set_latest(ConnTimer::Reconnect, now + Duration::from_secs(time2wait.into()));
        }
    }

    // ---- async logout ----------------------------------------------------

    fn maybe_async_logout(&mut self, cid: u16, now: Instant) {
        if self.conn(cid).is_some_and(|c| c.draining() && c.in_flight == 0) {
            self.begin_async_logout(cid, now);
        }
    }

    /// Logs connection `cid` out (the target asked for it, or it cannot
    /// renegotiate). Tasks still on it are terminated by the logout and
    /// sent again elsewhere.
    fn begin_async_logout(&mut self, cid: u16, now: Instant) {
        let _ = now;
        let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
        if c.logout_sent || !c.is_up() {
            return;
        }
        c.logout_sent = true;
        c.timers.stop(ConnTimer::AsyncLogoutPause);
        let t = Task::new(
            Owner::AsyncLogout,
            Kind::Logout { reason: LogoutReason::CLOSE_CONNECTION, cid },
            ConnPick::Cid(cid),
        );
        self.urgent.push_back(t);
    }

    /// Sends the user tasks on `cid` again: the target terminated them.
    fn requeue_tasks_of(&mut self, cid: u16, now: Instant) {
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

    /// Closes a connection we logged out, and reconnects after `wait`.
    fn close_connection(&mut self, cid: u16, now: Instant, wait: Duration, why: &str) {
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

    // ---- task bookkeeping ------------------------------------------------

    fn alloc_itt(&mut self) -> u32 {
        loop {
            let itt = self.next_itt;
            self.next_itt = self.next_itt.wrapping_add(1);
            if itt != RESERVED_TAG && !self.tasks.contains_key(&itt) {
                return itt;
            }
        }
    }

    /// Sends what can be sent now.
    fn pump(&mut self, now: Instant) {
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

    fn user_tasks_in_flight(&self) -> usize {
        self.tasks
            .values()
            .filter(|t| matches!(t.owner, Owner::User(_)) && !matches!(t.kind, Kind::Logout { .. }))
            .count()
    }

    fn pick_conn(&self, pick: ConnPick, urgent: bool) -> Option<u16> {
        let usable = |c: &Conn| if urgent { c.is_up() } else { c.accepts_tasks() };
        match pick {
            ConnPick::Cid(cid) => self.conn(cid).filter(|c| usable(c)).map(|c| c.cid),
            ConnPick::Any => {
                self.conns.iter().filter(|c| usable(c)).min_by_key(|c| (c.in_flight, c.cid)).map(|c| c.cid)
            }
        }
    }

    /// Assigns tag and CmdSN and queues the task's PDUs on `cid`.
    fn send(&mut self, mut task: Task<T>, cid: u16, now: Instant) {
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
            Kind::Scsi(s) => {
                let burst = Burst::new(&params, &c.params);
                task::command_pdus(s, itt, cmdsn, exp_statsn, burst, |p| push_pdu(c, &p));
            }
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
    fn finish(&mut self, task: Task<T>, result: Result<Outcome, TaskError>) {
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
    fn complete(&mut self, task: Task<T>, result: Result<Outcome, TaskError>) {
        if let Owner::User(token) = task.owner {
            self.events.push_back(Event::TaskDone { token, result });
        }
    }

    /// Sends parked tasks whose connection `pred` says is cleaned up again.
    fn release_parked(&mut self, now: Instant, pred: impl Fn(u16) -> bool) {
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

    /// With a zero recovery timeout, parked tasks fail at once (multipath
    /// re-drives them on another path).
    fn apply_zero_recovery(&mut self) {
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

    fn fail_unsent(&mut self, err: impl Fn() -> TaskError) {
        while let Some((t, _)) = self.queue.pop_front() {
            self.complete(t, Err(err()));
        }
    }

    /// Fails every task; `err(cleared)` builds the error.
    fn fail_everything(&mut self, err: impl Fn(bool) -> TaskError) {
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
    fn close_all(&mut self, err: TaskError) {
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

/// Encodes `pdu` into the connection's transmit queue.
fn push_pdu(c: &mut Conn, pdu: &Pdu) {
    let raw = pdu.encode();
    let before = c.tx.len();
    c.tx.push(&raw, &c.framing);
    c.stats.pdus_sent += 1;
    c.stats.bytes_sent += (c.tx.len() - before) as u64;
    trace!(cid = c.cid, pdu = ?pdu.opcode(), "queued");
}
