//! One connection of a session: its phase, framing, StatSN and keepalive.

use std::time::{Duration, Instant};

use crate::config::ConnectionSpec;
use crate::login::Login;
use crate::pdu::frame::{Framing, TxQueue};
use crate::portal::Portal;
use crate::serial::Sn;
use crate::text::{ConnectionParams, Digest};

use super::timer::{ConnTimer, ConnTimers};

/// Where a connection is in its life (RFC 7143 section 8.1.3, the
/// initiator's connection states, folded to what an ERL 0 initiator
/// needs):
///
/// ```text
///   Idle --start--> Connecting --TCP up--> LoggingIn --final response--> Up
///                       ^                      |                          |
///                       |  Reconnect timer     | failure                  | failure / logout
///                       +------------------- Down <-----------------------+
/// ```
///
/// Each phase owns its timers ([`ConnTimer`]); entering a phase
/// ([`Conn::enter`]) stops the previous phase's.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Not started yet (further MCS connections wait for the session).
    Idle,
    /// The driver is opening the TCP connection.
    Connecting,
    /// Login in progress (until the `Login` timer).
    LoggingIn { login: Box<Login>, leading: bool },
    /// Full feature phase.
    Up,
    /// Failed or closed; reconnects when the `Reconnect` timer is armed
    /// and fires.
    Down,
}

/// Counters of one connection, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// PDUs sent.
    pub pdus_sent: u64,
    /// PDUs received.
    pub pdus_received: u64,
    /// Bytes queued for sending (headers, data, digests).
    pub bytes_sent: u64,
    /// Data-segment bytes received.
    pub data_bytes_received: u64,
    /// Header or data digest mismatches. Each fails the connection, but a
    /// Data-In's at ErrorRecoveryLevel 1 or 2, which a Data SNACK recovers.
    pub digest_errors: u64,
    /// Data SNACKs sent to have Data-In sent again after a data digest
    /// error (ERL 1 and 2).
    pub data_snacks: u64,
    /// PDUs skipped after a header digest error, their length proven by
    /// the next header (ERL 1 and 2); what they carried is recovered as a
    /// lost PDU is.
    pub header_digest_skips: u64,
    /// Status SNACKs sent for StatSNs that never arrived (ERL 1 and 2).
    pub status_snacks: u64,
    /// Data-Out the target rejected for a data digest error and asked for
    /// again (ERL 1 and 2).
    pub data_out_rejects: u64,
    /// Commands sent again because the target rejected their immediate
    /// data's digest (ERL 1 and 2).
    pub command_retries: u64,
    /// PDUs for a task we do not know (late answers after an abort; seed
    /// event 27), discarded.
    pub unknown_itt: u64,
    /// StatSN out of sequence (seed event 42), resynchronised.
    pub statsn_gaps: u64,
    /// Successful logins of this connection.
    pub logins: u64,
    /// Failed login attempts (connect failures included).
    pub login_failures: u64,
    /// Times this connection failed after being up.
    pub failures: u64,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) cid: u16,
    pub(crate) spec: ConnectionSpec,
    /// Portal to connect to: the configured one, or a redirection.
    pub(crate) portal: Portal,
    pub(crate) redirects: u32,
    pub(crate) phase: Phase,
    pub(crate) params: ConnectionParams,
    pub(crate) framing: Framing,
    pub(crate) exp_statsn: Sn,
    /// StatSNs received past a hole at `exp_statsn` that a Status SNACK
    /// asked for (ERL 1; see `data_recovery`).
    pub(crate) statsn_ahead: std::collections::BTreeSet<u32>,
    pub(crate) tx: TxQueue,
    pub(crate) last_rx: Instant,
    /// Keepalive NOP-Out in flight: (ITT, sent at).
    pub(crate) ping: Option<(u32, Instant)>,
    /// The deadlines of this connection. The `NopInterval` timer moves only
    /// when reached (not on every PDU received), so the driver's timer is
    /// not re-armed on every PDU.
    pub(crate) timers: ConnTimers,
    /// SCSI commands with allegiance to this connection (the queue depth
    /// that policies and metrics see).
    pub(crate) in_flight: usize,
    /// Next reconnect delay.
    pub(crate) backoff: Duration,
    /// Our Logout for this connection is out; no new tasks.
    pub(crate) logout_sent: bool,
    pub(crate) stats: ConnStats,
    /// TargetPortalGroupTag of the portal this connection logged in to.
    pub(crate) tpgt: Option<u16>,
}

impl Conn {
    pub(crate) fn new(cid: u16, spec: ConnectionSpec, now: Instant, backoff: Duration) -> Conn {
        Conn {
            cid,
            portal: spec.portal.clone(),
            spec,
            redirects: 0,
            phase: Phase::Idle,
            params: ConnectionParams::default(),
            framing: Framing::default(),
            exp_statsn: Sn(0),
            statsn_ahead: std::collections::BTreeSet::new(),
            tx: TxQueue::new(),
            last_rx: now,
            ping: None,
            timers: ConnTimers::default(),
            in_flight: 0,
            backoff,
            logout_sent: false,
            stats: ConnStats::default(),
            tpgt: None,
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        matches!(self.phase, Phase::Up)
    }

    /// Usable for new tasks.
    pub(crate) fn accepts_tasks(&self) -> bool {
        self.is_up() && !self.draining() && !self.logout_sent
    }

    /// The target asked for a logout: no new tasks; log out once empty or
    /// when the `AsyncLogoutPause` timer fires.
    pub(crate) fn draining(&self) -> bool {
        self.timers.get(ConnTimer::AsyncLogoutPause).is_some()
    }

    /// Enters `phase`, stopping the timers of the phase it leaves.
    pub(crate) fn enter(&mut self, phase: Phase) {
        self.timers.clear();
        self.phase = phase;
    }

    /// A reconnect is scheduled.
    pub(crate) fn reconnect_planned(&self) -> bool {
        matches!(self.phase, Phase::Down) && self.timers.get(ConnTimer::Reconnect).is_some()
    }

    /// Resets the per-TCP-connection state for a new login.
    pub(crate) fn reset_for_login(&mut self, now: Instant) {
        self.framing = Framing::default();
        self.params = ConnectionParams::default();
        self.tx = TxQueue::new();
        self.exp_statsn = Sn(0);
        self.statsn_ahead.clear();
        self.last_rx = now;
        self.ping = None;
        self.in_flight = 0;
        self.logout_sent = false;
    }

    /// Switches to the negotiated framing at the end of login (digests
    /// start with the first full feature phase PDU, RFC 7143 section 13.1)
    /// and starts the keepalive, if there is one.
    pub(crate) fn enter_full_feature(
        &mut self,
        params: ConnectionParams,
        exp_statsn: u32,
        now: Instant,
        nop_interval: Option<Duration>,
    ) {
        self.framing = Framing {
            header_digest: params.header_digest == Digest::Crc32c,
            data_digest: params.data_digest == Digest::Crc32c,
            max_recv_data_segment_length: params.max_recv_data_segment_length,
        };
        self.params = params;
        self.exp_statsn = Sn(exp_statsn);
        self.statsn_ahead.clear();
        self.last_rx = now;
        self.enter(Phase::Up);
        if let Some(iv) = nop_interval {
            self.timers.set(ConnTimer::NopInterval, now + iv);
        }
        self.redirects = 0;
    }
}
