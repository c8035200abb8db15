//! Configuration of a session: who we are, whom we talk to, over which
//! connections, with which timers.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::chap::{ChapConfig, OsRandom, Random};
use crate::name::IscsiName;
use crate::pdu::Isid;
use crate::portal::Portal;
use crate::text::OperationalOffer;

/// The kind of session (RFC 7143 section 13.21, SessionType).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionType {
    /// A normal session to one target, for SCSI commands.
    Normal,
    /// A discovery session: only SendTargets text requests.
    Discovery,
}

/// Authentication for the login's security stage.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Auth {
    /// AuthMethod=None.
    #[default]
    None,
    /// CHAP, one-way or mutual (RFC 7143 section 12.1.3).
    Chap(ChapConfig),
}

/// Where one connection of the session goes, and from where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionSpec {
    /// Target portal: host (IP or DNS name, resolved at every connect) and port.
    pub portal: Portal,
    /// Bind the socket to this local address before connecting.
    pub source_addr: Option<IpAddr>,
    /// Bind the socket to this network interface (SO_BINDTODEVICE).
    pub interface: Option<String>,
}

impl ConnectionSpec {
    /// A connection to `portal` with no source binding.
    pub fn to(portal: Portal) -> ConnectionSpec {
        ConnectionSpec { portal, source_addr: None, interface: None }
    }
}

/// The timers of a session. One table, so `mpio timers explain` can read
/// it and every rule is in one place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect (seed TCPConnectTime, 15 s).
    pub connect: Duration,
    /// The whole login of one connection (open-iscsi login_timeout, 15 s).
    pub login: Duration,
    /// Waiting for a Logout Response (seed TCPDisconnectTime, 15 s).
    pub logout: Duration,
    /// Send a NOP-Out after this long without receiving anything; `None`
    /// disables the keepalive. Default 5 s (open-iscsi noop_out_interval).
    pub nop_interval: Option<Duration>,
    /// A NOP-Out unanswered, with nothing else received, for this long
    /// declares the connection dead (seed event 48). Default 5 s.
    pub nop_timeout: Duration,
    /// Default per-command timeout; on expiry the task is aborted with
    /// ABORT TASK. Default 30 s (the Linux sd default).
    pub command: Duration,
    /// An ABORT TASK (or other task management request) unanswered for
    /// this long declares the connection dead. Default 15 s (open-iscsi
    /// abort_timeout).
    pub task_mgmt: Duration,
    /// How long commands caught by a connection failure wait for the
    /// session to recover before they fail; `None` waits forever (for a
    /// root disk), zero fails them at once (for multipath, which re-drives
    /// them elsewhere). Default 120 s (open-iscsi replacement_timeout).
    pub recovery: Option<Duration>,
    /// First delay before reconnecting; the target's DefaultTime2Wait is
    /// used when it is longer. Default 1 s (seed DelayBetweenReconnect).
    pub reconnect_min: Duration,
    /// Cap of the exponential reconnect backoff. Default 30 s.
    pub reconnect_max: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(15),
            login: Duration::from_secs(15),
            logout: Duration::from_secs(15),
            nop_interval: Some(Duration::from_secs(5)),
            nop_timeout: Duration::from_secs(5),
            command: Duration::from_secs(30),
            task_mgmt: Duration::from_secs(15),
            recovery: Some(Duration::from_secs(120)),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
        }
    }
}

/// Everything a session needs.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Our iSCSI name.
    pub initiator_name: IscsiName,
    /// Optional InitiatorAlias.
    pub initiator_alias: Option<String>,
    /// The target's name; `None` for discovery sessions.
    pub target_name: Option<IscsiName>,
    /// Normal or discovery.
    pub session_type: SessionType,
    /// Our ISID: stable per configured path, so a reconnect reinstates the
    /// old session instead of leaking one on the target.
    pub isid: Isid,
    /// Authentication.
    pub auth: Auth,
    /// Operational parameters we offer.
    pub offer: OperationalOffer,
    /// The connections: index = CID. More than one makes an MCS session.
    pub connections: Vec<ConnectionSpec>,
    /// Timers.
    pub timeouts: Timeouts,
    /// Reconnect after failures (ErrorRecoveryLevel 0 session and
    /// connection reinstatement). Off for one-shot diagnostic sessions.
    pub reconnect: bool,
    /// Most commands in flight at once (seed MaxPendingRequests, 255);
    /// further ones wait in the session's queue.
    pub max_pending: usize,
    /// Most login redirections followed in a row before giving up.
    pub max_redirects: u32,
    /// Where the random bytes of our mutual-CHAP challenges come from:
    /// the OS ([`OsRandom`], the default); tests pass a
    /// [`crate::chap::DeterministicRandom`].
    pub random: Arc<dyn Random>,
}

impl SessionConfig {
    /// A normal session to `target` through one portal, with defaults.
    pub fn new(initiator_name: IscsiName, target_name: IscsiName, portal: Portal) -> Self {
        SessionConfig {
            initiator_name,
            initiator_alias: None,
            target_name: Some(target_name),
            session_type: SessionType::Normal,
            isid: Isid::random_format(0),
            auth: Auth::None,
            offer: OperationalOffer::default(),
            connections: vec![ConnectionSpec::to(portal)],
            timeouts: Timeouts::default(),
            reconnect: true,
            max_pending: 255,
            max_redirects: 5,
            random: Arc::new(OsRandom),
        }
    }

    /// A discovery session through one portal.
    pub fn discovery(initiator_name: IscsiName, portal: Portal) -> Self {
        let mut cfg = SessionConfig::new(initiator_name.clone(), initiator_name, portal);
        cfg.target_name = None;
        cfg.session_type = SessionType::Discovery;
        cfg.reconnect = false;
        cfg
    }
}
