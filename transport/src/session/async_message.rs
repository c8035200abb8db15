//! What the target asks for in Async Messages (RFC 7143 section 11.9):
//! the logout of a connection (drained first), dropping one or all
//! connections, renegotiation, and SCSI asynchronous events for the
//! application.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::info;

use super::task::{Kind, Owner, Task};
use super::timer::ConnTimer;
use super::{ConnPick, ConnectionFailure, Event, Session, SessionEvent};
use crate::pdu::{AsyncEvent, AsyncMessage, LogoutReason, RESERVED_TAG};

/// The longest a connection the target asked to log out keeps draining
/// before it logs out with tasks left (the AsyncLogoutPauseTimeout of the
/// Windows initiator, 10 s; RFC 7143 section 11.9.1 lets the target give
/// its own deadline in Parameter3).
const ASYNC_LOGOUT_PAUSE: Duration = Duration::from_secs(10);

impl<T> Session<T> {
    pub(super) fn on_async(&mut self, cid: u16, now: Instant, a: AsyncMessage) {
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

    pub(super) fn maybe_async_logout(&mut self, cid: u16, now: Instant) {
        if self.conn(cid).is_some_and(|c| c.draining() && c.in_flight == 0) {
            self.begin_async_logout(cid, now);
        }
    }

    /// Logs connection `cid` out (the target asked for it, or it cannot
    /// renegotiate). Tasks still on it are terminated by the logout and
    /// sent again elsewhere.
    pub(super) fn begin_async_logout(&mut self, cid: u16, now: Instant) {
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
}
