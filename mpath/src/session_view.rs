//! Read-only views of a path's iSCSI session, for status and metrics:
//! its state, counters and negotiated parameters, copied out of the
//! session's driver ([`crate::Device::session_view`]). Nothing above the
//! device holds the session itself, so nothing above it can log it out,
//! send on it or keep it alive: the device owns its sessions, and
//! [`crate::Device::shutdown`] ends them.

use std::net::SocketAddr;

use mpio_transport::driver::ConnectionSnapshot;
use mpio_transport::session::SessionState;
use mpio_transport::text::Digest;
use mpio_transport::{SessionSnapshot, text};

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionPhase {
    /// Not logged in yet.
    Starting,
    /// A connection is in the full feature phase.
    Up,
    /// No connection is up; reconnecting.
    Recovering,
    /// Logging out.
    LoggingOut,
    /// Logged out.
    Closed,
    /// Failed for good (a login refused for good).
    Failed,
}

/// One path's session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    /// Where it is.
    pub phase: SessionPhase,
    /// ISID (hex): the initiator port's session identifier, the same for
    /// a path across daemon restarts.
    pub isid: String,
    /// TSIH the target gave it (0 before the first login).
    pub tsih: u16,
    /// Session logins (the first one and each reinstatement).
    pub logins: u64,
    /// Logins that replaced a failed session of the same path.
    pub reinstatements: u64,
    /// Commands aborted because they outlived the I/O timeout.
    pub command_timeouts: u64,
    /// Commands sent again after one of its connections failed.
    pub command_retries: u64,
    /// What the login negotiated for the session.
    pub negotiated: SessionParams,
    /// Each configured connection.
    pub connections: Vec<ConnectionView>,
}

/// Session-wide operational values negotiated at login (RFC 7143 section
/// 13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionParams {
    /// MaxConnections.
    pub max_connections: u16,
    /// InitialR2T.
    pub initial_r2t: bool,
    /// ImmediateData.
    pub immediate_data: bool,
    /// MaxBurstLength, bytes.
    pub max_burst_length: u32,
    /// FirstBurstLength, bytes.
    pub first_burst_length: u32,
    /// DefaultTime2Wait, seconds.
    pub default_time2wait: u16,
    /// DefaultTime2Retain, seconds.
    pub default_time2retain: u16,
    /// ErrorRecoveryLevel.
    pub error_recovery_level: u8,
}

/// One connection of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionView {
    /// CID.
    pub cid: u16,
    /// The portal it uses (after a redirection, the one redirected to).
    pub portal: String,
    /// In the full feature phase.
    pub up: bool,
    /// Our address of the TCP connection.
    pub local_addr: Option<SocketAddr>,
    /// The target's.
    pub peer_addr: Option<SocketAddr>,
    /// TargetPortalGroupTag of the portal it logged in to.
    pub tpgt: Option<u16>,
    /// SCSI commands in flight on it.
    pub queue_depth: usize,
    /// What its login negotiated, when up.
    pub negotiated: Option<ConnectionParams>,
    /// Its counters.
    pub counters: ConnectionCounters,
}

/// Per-connection operational values negotiated at login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionParams {
    /// CRC32C header digests.
    pub header_digest: bool,
    /// CRC32C data digests.
    pub data_digest: bool,
    /// The largest data segment the target may send us.
    pub max_recv_data_segment_length: u32,
    /// The largest data segment we may send the target.
    pub max_xmit_data_segment_length: u32,
}

/// Counters of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionCounters {
    /// PDUs sent.
    pub pdus_sent: u64,
    /// PDUs received.
    pub pdus_received: u64,
    /// Bytes sent (headers, data, digests).
    pub bytes_sent: u64,
    /// Data-segment bytes received.
    pub data_bytes_received: u64,
    /// Header or data digest mismatches.
    pub digest_errors: u64,
    /// PDUs skipped after a header digest error, their length proven by
    /// the next header (ErrorRecoveryLevel 1).
    pub header_digest_skips: u64,
    /// Data SNACKs that asked for Data-In again after a data digest error
    /// or a gap (ErrorRecoveryLevel 1).
    pub data_snacks: u64,
    /// Status SNACKs for statuses that never arrived (ErrorRecoveryLevel
    /// 1).
    pub status_snacks: u64,
    /// Data-Out the target rejected for its digest and asked for again
    /// (ErrorRecoveryLevel 1).
    pub data_out_rejects: u64,
    /// Commands sent again after the target rejected their immediate
    /// data's digest (ErrorRecoveryLevel 1).
    pub command_retries: u64,
    /// PDUs for a task the initiator does not know (late answers after an
    /// abort).
    pub unknown_itt: u64,
    /// StatSN out of sequence.
    pub statsn_gaps: u64,
    /// Successful logins.
    pub logins: u64,
    /// Failed login attempts (connect failures included).
    pub login_failures: u64,
    /// Times it failed after being up.
    pub failures: u64,
}

impl From<&SessionSnapshot> for SessionView {
    fn from(s: &SessionSnapshot) -> SessionView {
        let p = &s.params;
        SessionView {
            phase: match s.state {
                SessionState::Starting => SessionPhase::Starting,
                SessionState::Up => SessionPhase::Up,
                SessionState::Recovering => SessionPhase::Recovering,
                SessionState::LoggingOut => SessionPhase::LoggingOut,
                SessionState::Closed => SessionPhase::Closed,
                SessionState::Failed => SessionPhase::Failed,
            },
            isid: s.isid.to_string(),
            tsih: s.tsih,
            logins: s.stats.logins,
            reinstatements: s.stats.reinstatements,
            command_timeouts: s.stats.timeouts,
            command_retries: s.stats.retries,
            negotiated: SessionParams {
                max_connections: p.max_connections,
                initial_r2t: p.initial_r2t,
                immediate_data: p.immediate_data,
                max_burst_length: p.max_burst_length,
                first_burst_length: p.first_burst_length,
                default_time2wait: p.default_time2wait,
                default_time2retain: p.default_time2retain,
                error_recovery_level: p.error_recovery_level,
            },
            connections: s.connections.iter().map(ConnectionView::from).collect(),
        }
    }
}

impl From<&ConnectionSnapshot> for ConnectionView {
    fn from(c: &ConnectionSnapshot) -> ConnectionView {
        let s = &c.stats;
        ConnectionView {
            cid: c.cid,
            portal: c.portal.clone(),
            up: c.up,
            local_addr: c.local_addr,
            peer_addr: c.peer_addr,
            tpgt: c.tpgt,
            queue_depth: c.queue_depth,
            negotiated: c.params.as_ref().map(|p: &text::ConnectionParams| ConnectionParams {
                header_digest: p.header_digest == Digest::Crc32c,
                data_digest: p.data_digest == Digest::Crc32c,
                max_recv_data_segment_length: p.max_recv_data_segment_length,
                max_xmit_data_segment_length: p.max_xmit_data_segment_length,
            }),
            counters: ConnectionCounters {
                pdus_sent: s.pdus_sent,
                pdus_received: s.pdus_received,
                bytes_sent: s.bytes_sent,
                data_bytes_received: s.data_bytes_received,
                digest_errors: s.digest_errors,
                header_digest_skips: s.header_digest_skips,
                data_snacks: s.data_snacks,
                status_snacks: s.status_snacks,
                data_out_rejects: s.data_out_rejects,
                command_retries: s.command_retries,
                unknown_itt: s.unknown_itt,
                statsn_gaps: s.statsn_gaps,
                logins: s.logins,
                login_failures: s.login_failures,
                failures: s.failures,
            },
        }
    }
}
