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
//! [`crate::chap::Random`], and the timers are data (one table for the
//! session, one per connection; [`Session::poll_timeout`] is their
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
//!
//! The files, by the state they own or the input they handle:
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the `Session` type, its getters and its outputs |
//! | `commands.rs` | commands from the application |
//! | `login_phase.rs` | a connection's TCP connect and login |
//! | `receive.rs` | bytes to PDUs, dispatch, CmdSN window and StatSN |
//! | `scsi_data.rs` | Data-In, R2T and SCSI Response |
//! | `task_replies.rs` | NOP-In, TMF, Text and Logout Responses, Reject |
//! | `async_message.rs` | the target's Async Messages |
//! | `scheduling.rs` | which task goes where and when; its PDUs |
//! | `recovery.rs` | connection failure, parked tasks, reinstatement |
//! | `timer.rs` | the timer enums and their tables |
//! | `timeouts.rs` | `handle_timeout` and what each timer does |
//! | `conn.rs`, `task.rs`, `window.rs` | one connection, one task, the CmdSN window |
//! | `event.rs`, `request.rs` | what the session reports and takes |

mod async_message;
mod commands;
mod conn;
mod data_recovery;
mod event;
mod login_phase;
mod receive;
mod recovery;
mod request;
mod scheduling;
mod scsi_data;
mod task;
mod task_replies;
mod timeouts;
mod timer;
mod window;

#[cfg(test)]
mod tests;

pub use conn::ConnStats;
pub use event::{ConnectionFailure, Event, Outcome, SessionEvent, TaskError};
pub use request::{ReadData, ScsiRequest, ScsiResult};
pub use task::ConnPick;

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use self::conn::Conn;
use self::task::Task;
use self::timer::SessionTimers;
use self::window::Window;
use crate::config::{SessionConfig, SessionType};
use crate::pdu::frame::TxQueue;
use crate::text::SessionParams;

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
}
