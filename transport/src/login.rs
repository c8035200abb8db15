//! The login phase of one connection (RFC 7143 sections 6.3 and 11.12),
//! as a sans-I/O state machine: security negotiation with CHAP or none,
//! then operational negotiation, then the full feature phase.
//!
//! ```text
//!            start()
//!               |
//!   ExpectSecurityResponse --AuthMethod=None, T--> ExpectOperationalResponse --T, NSG=FFP--> Done
//!               | AuthMethod=CHAP                         ^
//!               v                                         |
//!     ExpectChapChallenge --CHAP_N/R [+CHAP_I/C]--> ExpectChapResult
//! ```
//! Each state names what it waits for, as rustls' `Expect*` states do; a
//! failure is sticky (every later call returns the same error).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use crate::chap::{self, ChapConfig, ChapError, OurChallenge, Random};
use crate::config::{Auth, SessionType};
use crate::name::IscsiName;
use crate::pdu::{Isid, LoginRequest, LoginResponse, LoginStatus, Stage};
use crate::portal::{Portal, TargetAddress};
use crate::text::value::{decode_binary, encode_hex, parse_number};
use crate::text::{
    KeyValue, Negotiated, NegotiationError, NegotiationScope, Negotiator, OperationalOffer, TextAccumulator, TextError,
    decode_pairs, encode_pairs, split_segments,
};

/// During login the target accepts at most 8192 bytes per PDU (RFC 7143
/// section 13.12: the MaxRecvDataSegmentLength default applies until the
/// full feature phase).
const LOGIN_SEGMENT_MAX: usize = 8192;

/// A login that goes on for more exchanges than this is looping.
const MAX_EXCHANGES: u32 = 64;

/// What a login needs to know.
#[derive(Clone, Debug)]
pub struct LoginSetup {
    /// InitiatorName.
    pub initiator_name: IscsiName,
    /// InitiatorAlias, if any.
    pub initiator_alias: Option<String>,
    /// TargetName (normal sessions).
    pub target_name: Option<IscsiName>,
    /// The portal the login goes to (named in the advice of a refusal).
    pub portal: Portal,
    /// Normal or discovery.
    pub session_type: SessionType,
    /// ISID of the session.
    pub isid: Isid,
    /// 0 for a new session (or to reinstate one), the session's TSIH to add
    /// a connection.
    pub tsih: u16,
    /// Connection ID.
    pub cid: u16,
    /// CmdSN carried by the login requests (not advanced by them).
    pub cmdsn: u32,
    /// Initiator Task Tag of the login.
    pub itt: u32,
    /// Authentication.
    pub auth: Auth,
    /// Operational values we offer.
    pub offer: OperationalOffer,
    /// Where our mutual-CHAP challenge comes from.
    pub random: Arc<dyn Random>,
}

/// The result of a successful login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginOutcome {
    /// TSIH of the session.
    pub tsih: u16,
    /// Negotiated parameters.
    pub negotiated: Negotiated,
    /// StatSN expected next on this connection.
    pub exp_statsn: u32,
    /// ExpCmdSN from the final response.
    pub exp_cmdsn: u32,
    /// MaxCmdSN from the final response.
    pub max_cmdsn: u32,
    /// TargetPortalGroupTag the target declared (RFC 7143 section 13.9):
    /// connections and sessions through one portal group share state.
    pub tpgt: Option<u16>,
}

/// Why a login failed. `Display` names the failure and the likely fix in
/// one line, and says nothing about retrying: whether a login is tried
/// again is the caller's business (a one-shot command does not, the
/// daemon does for [`LoginError::is_retryable`] failures).
///
/// Like every error of this crate, the message includes its cause's text,
/// so `source()` does not return that cause again: printing the chain
/// shows each cause once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The target answered with a non-success status (seed event 10).
    #[error("{} ({:#06x}): {}", status, status.0, status_fix(*status, *chap_configured, *adding_connection, target.as_ref(), portal))]
    Status {
        /// Status-Class and Status-Detail.
        status: LoginStatus,
        /// Whether we had CHAP configured (changes the advice).
        chap_configured: bool,
        /// Whether this was a further connection of an existing session.
        adding_connection: bool,
        /// The TargetName asked for (none in a discovery session).
        target: Option<IscsiName>,
        /// The portal that refused.
        portal: Portal,
    },
    /// The target redirected us (status 0x0101/0x0102); the session
    /// follows it.
    #[error("target moved {} to {}", if *permanent { "permanently" } else { "temporarily" }, address.portal())]
    Redirect {
        /// Where to log in now.
        address: TargetAddress,
        /// Moved permanently (update the configuration).
        permanent: bool,
    },
    /// CHAP is configured but the target offered AuthMethod=None: refusing
    /// a login without authentication (seed event 38).
    #[error(
        "target did not accept CHAP (it answered AuthMethod={0}): refusing to log in without authentication; enable CHAP on the target"
    )]
    AuthDowngrade(String),
    /// The target requires authentication and none is configured (seed
    /// event 40).
    #[error("target requires CHAP authentication: {CONFIGURE_CHAP}")]
    ChapRequired,
    /// The target sent no AuthMethod in the security stage (seed event 41).
    #[error("target did not answer AuthMethod during security negotiation")]
    NoAuthMethod,
    /// A CHAP exchange failure.
    #[error("CHAP: {0}")]
    Chap(ChapError),
    /// Operational negotiation failed.
    #[error(transparent)]
    Negotiation(#[from] NegotiationError),
    /// Malformed text in a login response.
    #[error("malformed login text: {0}")]
    Text(TextError),
    /// An invalid login response (seed event 11).
    #[error("invalid login response: {0}")]
    Protocol(String),
    /// The target did not answer in time (seed event 43).
    #[error("target did not answer the login within {0:?}")]
    Timeout(std::time::Duration),
    /// The target closed the connection during login without a status
    /// (seed event 59). LIO does so when it requires CHAP and the login
    /// offers none; the advice names the likely causes, without claiming
    /// to know.
    #[error("target closed the connection during login without a status: {}", closed_causes(*in_security, *chap_configured))]
    Closed {
        /// The login was still in its security stage (authentication).
        in_security: bool,
        /// Whether we had CHAP configured (changes the advice).
        chap_configured: bool,
    },
    /// The target kept redirecting (seed event 12).
    #[error(
        "target redirected the login {count} times in a row, last to {last}: check the target's redirection settings"
    )]
    RedirectLoop {
        /// Redirections followed.
        count: u32,
        /// The last address.
        last: String,
    },
    /// Adding a connection to a session whose target negotiated
    /// MaxConnections=1.
    #[error("target does not support MCS (MaxConnections=1): use MPIO (one session per path) instead")]
    McsNotSupported,
}

impl From<ChapError> for LoginError {
    fn from(e: ChapError) -> LoginError {
        LoginError::Chap(e)
    }
}

impl From<TextError> for LoginError {
    fn from(e: TextError) -> LoginError {
        LoginError::Text(e)
    }
}

impl LoginError {
    /// Whether trying again later can succeed. Authentication, authorization
    /// and configuration problems are not retried automatically (seed event
    /// 70): they need an administrator.
    pub fn is_retryable(&self) -> bool {
        match self {
            LoginError::Status { status, adding_connection, .. } => match *status {
                LoginStatus::TOO_MANY_CONNECTIONS => !*adding_connection,
                s => s.class() == 3 || s == LoginStatus::SESSION_DOES_NOT_EXIST,
            },
            LoginError::Redirect { .. } | LoginError::Timeout(_) | LoginError::Closed { .. } => true,
            LoginError::Protocol(_) => true,
            _ => false,
        }
    }
}

/// How to configure CHAP, for the advice.
const CONFIGURE_CHAP: &str =
    "configure a CHAP user and secret (--chap-user and --chap-secret-file, or user and secret_file in [target.chap])";

/// The advice for each status (RFC 7143 section 11.13.5; the status codes
/// of the Windows initiator's event log and HP's troubleshooting guide).
fn status_fix(
    status: LoginStatus,
    chap_configured: bool,
    adding: bool,
    target: Option<&IscsiName>,
    portal: &Portal,
) -> String {
    let discover = format!("mpio discover --portal {portal} lists the targets there");
    let name = |t: Option<&IscsiName>| t.map_or_else(|| "the target".to_string(), |t| format!("target named {t}"));
    match status {
        LoginStatus::AUTHENTICATION_FAILURE if chap_configured => "check the CHAP user and secret".into(),
        LoginStatus::AUTHENTICATION_FAILURE => format!("the target requires authentication: {CONFIGURE_CHAP}"),
        LoginStatus::AUTHORIZATION_FAILURE => {
            "the target's ACL does not allow this initiator name: add it on the target".into()
        }
        LoginStatus::NOT_FOUND => {
            format!("this portal has no {}: check the name ({discover})", name(target))
        }
        LoginStatus::TARGET_REMOVED => "the target was removed from this portal: check the target configuration".into(),
        LoginStatus::UNSUPPORTED_VERSION => "the target does not speak iSCSI version 0 (RFC 7143)".into(),
        LoginStatus::TOO_MANY_CONNECTIONS if adding => {
            "target does not support MCS (MaxConnections=1): use MPIO".into()
        }
        LoginStatus::TOO_MANY_CONNECTIONS => "the target has no room for another connection: try again later".into(),
        LoginStatus::MISSING_PARAMETER => {
            "the target wants a login key we did not send: check the target's requirements".into()
        }
        LoginStatus::CANT_INCLUDE_IN_SESSION => {
            "target cannot add this connection to the session (MCS refused): use MPIO".into()
        }
        LoginStatus::SESSION_TYPE_NOT_SUPPORTED => {
            "the target does not allow this session type (normal or discovery)".into()
        }
        LoginStatus::SESSION_DOES_NOT_EXIST => {
            "the session this connection was to join is gone on the target: the session must log in anew".into()
        }
        LoginStatus::INVALID_DURING_LOGIN => "the target refused a request during login".into(),
        // RFC 7143 makes 0x0301 a transient target condition, but LIO
        // answers it to a TargetName it does not know, and to one without
        // an enabled portal group on this portal: the likely cause is a
        // mistyped name.
        LoginStatus::SERVICE_UNAVAILABLE if target.is_some() => format!(
            "the target does not serve this login; most likely this portal has no {} (LIO's answer to an unknown name): check the name ({discover})",
            name(target)
        ),
        LoginStatus::SERVICE_UNAVAILABLE | LoginStatus::OUT_OF_RESOURCES | LoginStatus::TARGET_ERROR => {
            "the target cannot serve the login now: check the target's state and log".into()
        }
        _ => "the target refused the login".into(),
    }
}

/// The likely causes of a login the target ended without a status.
fn closed_causes(in_security: bool, chap_configured: bool) -> String {
    match (in_security, chap_configured) {
        (true, false) => format!(
            "the target may require CHAP ({CONFIGURE_CHAP}), or its ACL may not allow this initiator name (add it on the target)"
        ),
        (true, true) => "the CHAP user or secret may be wrong, or the target's ACL may not allow this initiator name (add it on the target)".into(),
        (false, _) => "the target refused the negotiated parameters or failed: check the target's log".into(),
    }
}

/// What the login waits for.
#[derive(Debug)]
enum State {
    /// The first security-stage request is out.
    ExpectSecurityResponse,
    /// CHAP_A is out; waiting for CHAP_A/CHAP_I/CHAP_C.
    ExpectChapChallenge { chap: ChapConfig },
    /// CHAP_N/CHAP_R are out; waiting for the verdict (and the target's
    /// CHAP_N/CHAP_R with mutual CHAP).
    ExpectChapResult { chap: ChapConfig, ours: Option<OurChallenge>, verified: bool },
    /// Operational keys are out.
    ExpectOperationalResponse { negotiator: Box<Negotiator> },
    /// Logged in.
    Done,
}

/// Progress after a response.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginProgress {
    /// Send what [`Login::poll_request`] returns and wait for the next
    /// response.
    Continue,
    /// The connection is in the full feature phase.
    Done(LoginOutcome),
}

/// A login in progress.
#[derive(Debug)]
pub struct Login {
    setup: LoginSetup,
    state: Result<State, LoginError>,
    /// Requests waiting to be sent (more than one only when our text needs
    /// several PDUs).
    outgoing: VecDeque<LoginRequest>,
    /// Text of a response that continues in the next PDU (C bit).
    incoming: TextAccumulator,
    /// StatSN expected next; unknown until the first response.
    exp_statsn: Option<u32>,
    /// The stage our requests are in.
    csg: Stage,
    exchanges: u32,
    /// TargetPortalGroupTag, whichever stage declared it (targets send it
    /// in their first response, in the security stage).
    tpgt: Option<u16>,
}

impl Login {
    /// Starts a login; the first request is ready in [`Login::poll_request`].
    pub fn new(setup: LoginSetup) -> Login {
        let mut login = Login {
            setup,
            state: Ok(State::ExpectSecurityResponse),
            outgoing: VecDeque::new(),
            incoming: TextAccumulator::new(),
            exp_statsn: None,
            csg: Stage::Security,
            exchanges: 0,
            tpgt: None,
        };
        login.start();
        login
    }

    fn adding_connection(&self) -> bool {
        self.setup.tsih != 0
    }

    fn chap_configured(&self) -> bool {
        matches!(self.setup.auth, Auth::Chap(_))
    }

    /// The first request: who we are and how we authenticate.
    fn start(&mut self) {
        let s = &self.setup;
        let mut keys = vec![KeyValue::new("InitiatorName", s.initiator_name.as_str())];
        if let Some(alias) = &s.initiator_alias {
            keys.push(KeyValue::new("InitiatorAlias", alias.clone()));
        }
        // SessionType is leading-only (RFC 7143 section 13.21); TargetName
        // goes in the first request of every connection of a normal
        // session (section 13.4).
        if s.tsih == 0 {
            let st = match s.session_type {
                SessionType::Normal => "Normal",
                SessionType::Discovery => "Discovery",
            };
            keys.push(KeyValue::new("SessionType", st));
        }
        if let (SessionType::Normal, Some(t)) = (s.session_type, &s.target_name) {
            keys.push(KeyValue::new("TargetName", t.as_str()));
        }
        // Offer only what is configured: offering "CHAP,None" would let a
        // target (or a man in the middle) pick None (the seeds' downgrade rule).
        let (method, transit) = match &s.auth {
            Auth::None => ("None", true),
            Auth::Chap(_) => ("CHAP", false),
        };
        keys.push(KeyValue::new("AuthMethod", method));
        self.queue(&keys, transit, Stage::Operational);
    }

    /// Queues `keys` as one logical text segment in as many PDUs as needed.
    fn queue(&mut self, keys: &[KeyValue], transit: bool, nsg: Stage) {
        let mut text = Vec::new();
        encode_pairs(keys, &mut text);
        let segments: Vec<_> = split_segments(&text, LOGIN_SEGMENT_MAX).collect();
        for seg in segments {
            let req = LoginRequest {
                transit: transit && !seg.more,
                continue_: seg.more,
                csg: self.csg,
                nsg: if transit && !seg.more { nsg } else { self.csg },
                version_max: 0,
                version_min: 0,
                isid: self.setup.isid,
                tsih: self.setup.tsih,
                itt: self.setup.itt,
                cid: self.setup.cid,
                cmdsn: self.setup.cmdsn,
                exp_statsn: 0,
                data: Bytes::copy_from_slice(seg.data),
            };
            self.outgoing.push_back(req);
        }
    }

    /// The next request to send, if one is due. ExpStatSN is filled in
    /// from the responses seen so far.
    pub fn poll_request(&mut self) -> Option<LoginRequest> {
        let mut req = self.outgoing.pop_front()?;
        req.exp_statsn = self.exp_statsn.unwrap_or(0);
        Some(req)
    }

    /// Feeds one Login Response.
    pub fn handle_response(&mut self, rsp: LoginResponse) -> Result<LoginProgress, LoginError> {
        let state = std::mem::replace(&mut self.state, Ok(State::Done))?;
        match self.step(state, rsp) {
            Ok((state, progress)) => {
                self.state = Ok(state);
                Ok(progress)
            }
            Err(e) => {
                self.state = Err(e.clone());
                Err(e)
            }
        }
    }

    fn step(&mut self, state: State, rsp: LoginResponse) -> Result<(State, LoginProgress), LoginError> {
        self.exchanges += 1;
        if self.exchanges > MAX_EXCHANGES {
            return Err(LoginError::Protocol(format!("login did not finish after {MAX_EXCHANGES} exchanges")));
        }
        self.check_header(&rsp)?;
        if rsp.status != LoginStatus::SUCCESS {
            return Err(self.status_error(&rsp));
        }
        self.incoming.push(&rsp.data)?;
        if rsp.continue_ {
            // RFC 7143 section 6.2: answer a response with C=1 with an empty
            // request so the target sends the rest.
            self.queue(&[], false, self.csg);
            return Ok((state, LoginProgress::Continue));
        }
        if !self.outgoing.is_empty() {
            // We are still sending a long text; the target acknowledged a piece.
            return Ok((state, LoginProgress::Continue));
        }
        let text = self.incoming.take();
        let pairs = decode_pairs(&text)?;
        if tracing::enabled!(tracing::Level::TRACE) {
            // CHAP values are not secrets, but keep the log free of them.
            let shown: Vec<String> = pairs
                .iter()
                .map(|kv| if kv.key.starts_with("CHAP_") { format!("{}=...", kv.key) } else { format!("{kv:?}") })
                .collect();
            tracing::trace!(cid = self.setup.cid, keys = ?shown, "login response keys");
        }
        if let Some(tag) = find(&pairs, "TargetPortalGroupTag").and_then(|v| parse_number(v).ok()) {
            self.tpgt = u16::try_from(tag).ok();
        }
        match state {
            State::ExpectSecurityResponse => self.on_security(&rsp, &pairs),
            State::ExpectChapChallenge { chap } => self.on_chap_challenge(chap, &pairs),
            State::ExpectChapResult { chap, ours, verified } => self.on_chap_result(&rsp, &pairs, chap, ours, verified),
            State::ExpectOperationalResponse { negotiator } => self.on_operational(&rsp, &pairs, negotiator),
            State::Done => Err(LoginError::Protocol("login response after the login finished".into())),
        }
    }

    /// Checks that hold for every response. A response that refuses the
    /// login is judged by its status alone: targets do not always echo the
    /// ISID or a sensible StatSN in it (tgtd sends ISID 0 with 0x0203).
    fn check_header(&mut self, rsp: &LoginResponse) -> Result<(), LoginError> {
        if rsp.itt != self.setup.itt {
            return Err(LoginError::Protocol(format!("ITT {:#x}, expected {:#x}", rsp.itt, self.setup.itt)));
        }
        if rsp.status != LoginStatus::SUCCESS {
            return Ok(());
        }
        if rsp.isid != self.setup.isid {
            return Err(LoginError::Protocol(format!("ISID {} does not match ours ({})", rsp.isid, self.setup.isid)));
        }
        if rsp.version_active != 0 {
            return Err(self.refused(LoginStatus::UNSUPPORTED_VERSION));
        }
        // "the StatSN ... in the first Login Response ... sets the initial
        // value" (section 11.13.4); later ones must follow in order.
        match self.exp_statsn {
            Some(exp) if rsp.statsn != exp => {
                return Err(LoginError::Protocol(format!("StatSN {} out of order (expected {exp})", rsp.statsn)));
            }
            _ => self.exp_statsn = Some(rsp.statsn.wrapping_add(1)),
        }
        if rsp.csg != self.csg {
            return Err(LoginError::Protocol(format!("response in stage {:?}, we are in {:?}", rsp.csg, self.csg)));
        }
        Ok(())
    }

    fn status_error(&mut self, rsp: &LoginResponse) -> LoginError {
        if rsp.status.class() == 1 {
            // The redirect carries TargetAddress (section 11.13.5).
            let address = decode_pairs(&rsp.data)
                .ok()
                .and_then(|p| p.into_iter().find(|kv| kv.key == "TargetAddress"))
                .map(|kv| kv.value);
            if let Some(address) = address {
                return match address.parse::<TargetAddress>() {
                    Ok(address) => {
                        LoginError::Redirect { address, permanent: rsp.status == LoginStatus::TARGET_MOVED_PERMANENTLY }
                    }
                    Err(e) => LoginError::Protocol(format!("invalid redirect address {address:?}: {e}")),
                };
            }
            // seed event 12: invalid data for a redirect.
            return LoginError::Protocol(format!("{} without a TargetAddress", rsp.status));
        }
        if rsp.status == LoginStatus::TOO_MANY_CONNECTIONS && self.adding_connection() {
            return LoginError::McsNotSupported;
        }
        if rsp.status == LoginStatus::AUTHENTICATION_FAILURE && !self.chap_configured() {
            return LoginError::ChapRequired;
        }
        self.refused(rsp.status)
    }

    /// A refusal with `status`, with what its advice needs.
    fn refused(&self, status: LoginStatus) -> LoginError {
        LoginError::Status {
            status,
            chap_configured: self.chap_configured(),
            adding_connection: self.adding_connection(),
            target: match self.setup.session_type {
                SessionType::Normal => self.setup.target_name.clone(),
                SessionType::Discovery => None,
            },
            portal: self.setup.portal.clone(),
        }
    }

    /// The error for a connection the target closed before the login
    /// finished.
    pub fn connection_closed(&self) -> LoginError {
        LoginError::Closed { in_security: self.csg == Stage::Security, chap_configured: self.chap_configured() }
    }

    fn on_security(&mut self, rsp: &LoginResponse, pairs: &[KeyValue]) -> Result<(State, LoginProgress), LoginError> {
        let method = find(pairs, "AuthMethod").ok_or(LoginError::NoAuthMethod)?;
        match (&self.setup.auth, method) {
            (Auth::Chap(chap), "CHAP") => {
                let chap = chap.clone();
                self.queue(&[KeyValue::new("CHAP_A", "5")], false, Stage::Security);
                Ok((State::ExpectChapChallenge { chap }, LoginProgress::Continue))
            }
            (Auth::Chap(_), other) => Err(LoginError::AuthDowngrade(other.to_string())),
            (Auth::None, "None") => self.after_security(rsp),
            (Auth::None, _) => Err(LoginError::ChapRequired),
        }
    }

    fn on_chap_challenge(
        &mut self,
        chap: ChapConfig,
        pairs: &[KeyValue],
    ) -> Result<(State, LoginProgress), LoginError> {
        let alg = find(pairs, "CHAP_A").ok_or(ChapError::InvalidKey { key: "CHAP_A", reason: "missing" })?;
        if alg != "5" {
            return Err(ChapError::UnsupportedAlgorithm(alg.to_string()).into());
        }
        let id = find(pairs, "CHAP_I").ok_or(ChapError::InvalidKey { key: "CHAP_I", reason: "missing" })?;
        let id = parse_number(id)
            .ok()
            .and_then(|n| u8::try_from(n).ok())
            .ok_or(ChapError::InvalidKey { key: "CHAP_I", reason: "not a number from 0 to 255" })?;
        let challenge = find(pairs, "CHAP_C").ok_or(ChapError::InvalidKey { key: "CHAP_C", reason: "missing" })?;
        let challenge = decode_binary(challenge)
            .map_err(|_| ChapError::InvalidKey { key: "CHAP_C", reason: "not hex or base64" })?;
        if challenge.len() > chap::MAX_CHALLENGE_LEN {
            return Err(ChapError::ChallengeTooLong(challenge.len()).into());
        }
        if challenge.is_empty() {
            return Err(ChapError::InvalidKey { key: "CHAP_C", reason: "empty" }.into());
        }
        let response = chap::response(id, &chap.initiator.secret, &challenge);
        let mut keys =
            vec![KeyValue::new("CHAP_N", chap.initiator.user.clone()), KeyValue::new("CHAP_R", encode_hex(&response))];
        let ours = match &chap.target {
            Some(_) => {
                let ours = OurChallenge::generate(&*self.setup.random)?;
                // A target that sends our own challenge wants us to compute
                // a response it can replay (RFC 7143 section 12.1.3).
                if ours.challenge() == challenge.as_slice() {
                    return Err(ChapError::ReflectedChallenge.into());
                }
                keys.push(KeyValue::new("CHAP_I", ours.id().to_string()));
                keys.push(KeyValue::new("CHAP_C", encode_hex(ours.challenge())));
                Some(ours)
            }
            None => None,
        };
        self.queue(&keys, true, Stage::Operational);
        Ok((State::ExpectChapResult { chap, ours, verified: false }, LoginProgress::Continue))
    }

    fn on_chap_result(
        &mut self,
        rsp: &LoginResponse,
        pairs: &[KeyValue],
        chap: ChapConfig,
        ours: Option<OurChallenge>,
        mut verified: bool,
    ) -> Result<(State, LoginProgress), LoginError> {
        if let (Some(expected), Some(ours)) = (&chap.target, &ours)
            && !verified
        {
            let name = find(pairs, "CHAP_N").ok_or(ChapError::TargetAuthFailed)?;
            let resp = find(pairs, "CHAP_R").ok_or(ChapError::TargetAuthFailed)?;
            let resp = decode_binary(resp)
                .map_err(|_| ChapError::InvalidKey { key: "CHAP_R", reason: "not hex or base64" })?;
            ours.verify(expected, name, &resp)?;
            verified = true;
        }
        if rsp.transit {
            return self.after_security(rsp);
        }
        // The target stays in the security stage: ask again to move on.
        self.queue(&[], true, Stage::Operational);
        Ok((State::ExpectChapResult { chap, ours, verified }, LoginProgress::Continue))
    }

    /// The security stage is over: start operational negotiation.
    fn after_security(&mut self, rsp: &LoginResponse) -> Result<(State, LoginProgress), LoginError> {
        if !rsp.transit {
            self.queue(&[], true, Stage::Operational);
            return Ok((State::ExpectSecurityResponse, LoginProgress::Continue));
        }
        if rsp.nsg == Stage::FullFeature {
            // Section 6.3: a target may skip the operational stage when the
            // initiator asked for it; we always ask for it, so this is a
            // target fault.
            return Err(LoginError::Protocol("target skipped operational negotiation".into()));
        }
        self.csg = Stage::Operational;
        let scope = match (self.setup.session_type, self.adding_connection()) {
            (SessionType::Discovery, _) => NegotiationScope::Discovery,
            (SessionType::Normal, false) => NegotiationScope::LeadingConnection,
            (SessionType::Normal, true) => NegotiationScope::AddedConnection,
        };
        let mut negotiator = Box::new(Negotiator::new(&self.setup.offer, scope)?);
        let keys = negotiator.next_request();
        self.queue(&keys, true, Stage::FullFeature);
        Ok((State::ExpectOperationalResponse { negotiator }, LoginProgress::Continue))
    }

    fn on_operational(
        &mut self,
        rsp: &LoginResponse,
        pairs: &[KeyValue],
        mut negotiator: Box<Negotiator>,
    ) -> Result<(State, LoginProgress), LoginError> {
        negotiator.handle_response(pairs)?;
        if rsp.transit && rsp.nsg == Stage::FullFeature {
            let negotiated = negotiator.finish()?;
            // The final response assigns the TSIH (section 11.13.3); a
            // further connection must keep the session's.
            if rsp.tsih == 0 || (self.adding_connection() && rsp.tsih != self.setup.tsih) {
                return Err(LoginError::Protocol(format!(
                    "final response carries TSIH {:#x} (ours {:#x})",
                    rsp.tsih, self.setup.tsih
                )));
            }
            let tpgt = self.tpgt.or(negotiated.target.target_portal_group_tag);
            return Ok((
                State::Done,
                LoginProgress::Done(LoginOutcome {
                    tsih: rsp.tsih,
                    negotiated,
                    exp_statsn: rsp.statsn.wrapping_add(1),
                    exp_cmdsn: rsp.exp_cmdsn,
                    max_cmdsn: rsp.max_cmdsn,
                    tpgt,
                }),
            ));
        }
        let keys = negotiator.next_request();
        self.queue(&keys, true, Stage::FullFeature);
        Ok((State::ExpectOperationalResponse { negotiator }, LoginProgress::Continue))
    }
}

fn find<'a>(pairs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    pairs.iter().find(|kv| kv.key == key).map(|kv| kv.value.as_str())
}

#[cfg(test)]
mod tests;
