//! Input from a connection's socket: bytes framed into PDUs and sent to
//! the handler of their family ([`super::login_phase`] for Login
//! Responses, [`super::scsi_data`], [`super::task_replies`],
//! [`super::async_message`]), and the end of the socket. The CmdSN window
//! and StatSN carried by every PDU are taken here. A PDU that breaks the
//! protocol fails its connection.

use std::time::Instant;

use bytes::{Buf, BytesMut};
use tracing::{debug, trace, warn};

use super::conn::Phase;
use super::{ConnectionFailure, Session};
use crate::login::LoginError;
use crate::pdu::frame;
use crate::pdu::{Opcode, Pdu};
use crate::serial::Sn;

impl<T> Session<T> {
    /// The socket of `cid` was closed by the peer or failed.
    pub fn handle_closed(&mut self, cid: u16, now: Instant, reason: String) {
        let Some(c) = self.conns.get(usize::from(cid)) else { return };
        match &c.phase {
            Phase::LoggingIn { login, .. } => {
                let e = login.connection_closed();
                self.login_failed(cid, now, e)
            }
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
                Err(frame::FrameError::HeaderDigest { .. })
                    if matches!(c.phase, Phase::Up) && self.params.error_recovery_level >= 1 =>
                {
                    // ERL 1 (see `data_recovery`): skip the PDU where the
                    // next header proves its length.
                    match frame::boundary_after_bad_header(buf, &c.framing) {
                        Ok(None) => return,
                        Ok(Some(len)) => {
                            buf.advance(len);
                            c.stats.digest_errors += 1;
                            c.stats.header_digest_skips += 1;
                            warn!(cid, len, "header digest error: PDU skipped, its length proven by the next header");
                            continue;
                        }
                        Err(()) => {
                            c.stats.digest_errors += 1;
                            buf.clear();
                            let msg = "header digest error, and no sound header after it: the PDU boundary is lost";
                            self.protocol_error(cid, now, msg.into());
                            return;
                        }
                    }
                }
                Err(e) => {
                    if matches!(e, frame::FrameError::HeaderDigest { .. } | frame::FrameError::DataDigest { .. }) {
                        c.stats.digest_errors += 1;
                    }
                    if let frame::FrameError::DataDigest { bhs, .. } = &e
                        && matches!(c.phase, Phase::Up)
                        && self.recover_data_in(cid, bhs)
                    {
                        continue;
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

    pub(super) fn handle_pdu(&mut self, cid: u16, now: Instant, pdu: Pdu) {
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
    pub(super) fn ack(&mut self, cid: u16, statsn: Option<u32>, exp_cmdsn: u32, max_cmdsn: u32) {
        self.window.update(exp_cmdsn, max_cmdsn);
        let Some(statsn) = statsn else { return };
        if self.recovers_within_commands() {
            return self.ack_status_erl1(cid, Sn(statsn));
        }
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

    pub(super) fn protocol_error(&mut self, cid: u16, now: Instant, msg: String) {
        let phase_login = matches!(self.conn(cid).map(|c| &c.phase), Some(Phase::LoggingIn { .. }));
        if phase_login {
            self.login_failed(cid, now, LoginError::Protocol(msg));
        } else {
            self.fail_connection(cid, now, ConnectionFailure::Protocol(msg));
        }
    }

    pub(super) fn unknown_itt(&mut self, cid: u16, opcode: Opcode, itt: u32) {
        // Seed event 27: late answers after a timeout cleanup, or a bogus
        // tag. Discarded.
        debug!(cid, %opcode, itt, "PDU for an unknown task discarded");
        if let Some(c) = self.conns.get_mut(usize::from(cid)) {
            c.stats.unknown_itt += 1;
        }
    }
}
