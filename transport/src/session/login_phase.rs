//! Bringing a connection up: the driver reports the TCP connection open
//! (or failed), the login state machine ([`crate::login`]) runs over it,
//! and its outcome makes the connection usable (and the session, for the
//! leading connection), follows a redirection, or schedules a retry.

use std::time::Instant;

use tracing::{debug, info, warn};

use super::conn::Phase;
use super::scheduling::push_pdu;
use super::timer::ConnTimer;
use super::window::Window;
use super::{ConnectionFailure, Event, Session, SessionEvent, SessionState};
use crate::login::{Login, LoginError, LoginOutcome, LoginProgress, LoginSetup};
use crate::pdu::{LoginResponse, Pdu};

impl<T> Session<T> {
    /// The TCP connection for `cid` is open: the login starts.
    pub fn handle_connected(&mut self, cid: u16, now: Instant) {
        let leading = !self.conns.iter().any(|c| c.cid != cid && c.is_up());
        if leading
            && self.leading_login_elsewhere(cid, false)
            && let Some(c) = self.conns.get_mut(usize::from(cid))
            && matches!(c.phase, Phase::Connecting)
        {
            // Another connection is logging in to lead the session: this
            // one joins it once it is up (see `leading_login_elsewhere`).
            debug!(cid, "another connection leads the session's login; connecting again later");
            c.enter(Phase::Down);
            c.timers.set(ConnTimer::Reconnect, now + self.cfg.timeouts.reconnect_min);
            self.events.push_back(Event::Close { cid, flush: false });
            return;
        }
        if !leading && self.params.max_connections <= 1 {
            // The leading login negotiated MaxConnections=1 (RFC 7143: MaxConnections bounds the connections of the session).
            self.login_failed(cid, now, LoginError::McsNotSupported);
            return;
        }
        let Some(portal) = self.conn(cid).map(|c| c.portal.clone()) else { return };
        let itt = self.alloc_itt();
        let setup = LoginSetup {
            initiator_name: self.cfg.initiator_name.clone(),
            initiator_alias: self.cfg.initiator_alias.clone(),
            target_name: self.cfg.target_name.clone(),
            portal,
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

    /// True when no connection is up and another one than `cid` is
    /// logging in as the session's leading connection (or, with
    /// `connecting`, opening its TCP connection to do so). A leading
    /// login carries TSIH 0 and so reinstates the session (RFC 7143
    /// section 6.3.5): two at once would each reinstate the session the
    /// other just made, over and over, so only one may try at a time and
    /// the others join the session it makes.
    pub(super) fn leading_login_elsewhere(&self, cid: u16, connecting: bool) -> bool {
        !self.conns.iter().any(|c| c.is_up())
            && self.conns.iter().any(|c| {
                c.cid != cid
                    && match c.phase {
                        Phase::LoggingIn { leading, .. } => leading,
                        Phase::Connecting => connecting,
                        _ => false,
                    }
            })
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

    pub(super) fn on_login_response(&mut self, cid: u16, now: Instant, rsp: LoginResponse) {
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

    pub(super) fn login_done(&mut self, cid: u16, now: Instant, outcome: LoginOutcome) {
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

    pub(super) fn login_failed(&mut self, cid: u16, now: Instant, e: LoginError) {
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
}
