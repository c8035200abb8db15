//! Login state machine tests: each exchange scripted byte for byte.

use bytes::Bytes;

use super::*;
use crate::chap::{ChapCredentials, DeterministicRandom, Secret};
use crate::pdu::Isid;
use crate::text::{KeyValue, decode_pairs, encode_pairs};

fn setup(auth: Auth) -> LoginSetup {
    LoginSetup {
        initiator_name: "iqn.2026-11.test:init".parse().unwrap(),
        initiator_alias: None,
        target_name: Some("iqn.2026-11.test:disk".parse().unwrap()),
        portal: "192.0.2.7:3260".parse().unwrap(),
        session_type: SessionType::Normal,
        isid: Isid([0x80, 1, 2, 3, 4, 5]),
        tsih: 0,
        cid: 0,
        cmdsn: 1,
        itt: 9,
        auth,
        offer: OperationalOffer::default(),
        random: Arc::new(DeterministicRandom::new(CHALLENGE_SEED)),
    }
}

/// The seed of the logins' challenges.
const CHALLENGE_SEED: u64 = 3;

/// The first challenge a login set up by [`setup`] draws.
fn our_challenge() -> OurChallenge {
    OurChallenge::generate(&DeterministicRandom::new(CHALLENGE_SEED)).unwrap()
}

fn chap(mutual: bool) -> Auth {
    let i = ChapCredentials::new("inituser", Secret::parse(b"initsecret12").unwrap()).unwrap();
    let t = mutual.then(|| ChapCredentials::new("tgtuser", Secret::parse(b"tgtsecret123").unwrap()).unwrap());
    Auth::Chap(ChapConfig::new(i, t).unwrap())
}

fn pairs(req: &LoginRequest) -> Vec<KeyValue> {
    decode_pairs(&req.data).unwrap()
}

fn value<'a>(p: &'a [KeyValue], k: &str) -> Option<&'a str> {
    p.iter().find(|kv| kv.key == k).map(|kv| kv.value.as_str())
}

struct Rsp {
    statsn: u32,
}

impl Rsp {
    fn make(&mut self, req: &LoginRequest, transit: bool, nsg: Stage, keys: &[(&str, &str)]) -> LoginResponse {
        let kv: Vec<KeyValue> = keys.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect();
        let mut data = Vec::new();
        encode_pairs(&kv, &mut data);
        let statsn = self.statsn;
        self.statsn += 1;
        LoginResponse {
            transit,
            continue_: false,
            csg: req.csg,
            nsg: if transit { nsg } else { req.csg },
            version_max: 0,
            version_active: 0,
            isid: req.isid,
            tsih: if nsg == Stage::FullFeature && transit { 0x42 } else { 0 },
            itt: req.itt,
            statsn,
            exp_cmdsn: 1,
            max_cmdsn: 64,
            status: LoginStatus::SUCCESS,
            data: Bytes::from(data),
        }
    }

    fn status(&mut self, req: &LoginRequest, status: LoginStatus, keys: &[(&str, &str)]) -> LoginResponse {
        let mut r = self.make(req, false, req.csg, keys);
        r.status = status;
        r
    }
}

/// Answers an operational request by echoing the offer.
fn echo(req: &LoginRequest) -> Vec<(String, String)> {
    pairs(req)
        .into_iter()
        .filter(|kv| kv.key != "MaxRecvDataSegmentLength")
        .map(|kv| (kv.key, kv.value))
        .chain([("MaxRecvDataSegmentLength".to_string(), "65536".to_string())])
        .collect()
}

fn finish_operational(login: &mut Login, r: &mut Rsp) -> LoginOutcome {
    let req = login.poll_request().unwrap();
    assert_eq!(req.csg, Stage::Operational);
    assert!(req.transit && req.nsg == Stage::FullFeature);
    let keys = echo(&req);
    let keys: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    match login.handle_response(r.make(&req, true, Stage::FullFeature, &keys)).unwrap() {
        LoginProgress::Done(o) => o,
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_auth_login() {
    let mut login = Login::new(setup(Auth::None));
    let req = login.poll_request().unwrap();
    assert!(login.poll_request().is_none());
    assert_eq!((req.csg, req.transit, req.nsg, req.tsih, req.itt), (Stage::Security, true, Stage::Operational, 0, 9));
    let p = pairs(&req);
    assert_eq!(value(&p, "InitiatorName"), Some("iqn.2026-11.test:init"));
    assert_eq!(value(&p, "TargetName"), Some("iqn.2026-11.test:disk"));
    assert_eq!(value(&p, "SessionType"), Some("Normal"));
    assert_eq!(value(&p, "AuthMethod"), Some("None"));
    let mut r = Rsp { statsn: 10 };
    assert_eq!(
        login.handle_response(r.make(&req, true, Stage::Operational, &[("AuthMethod", "None")])).unwrap(),
        LoginProgress::Continue
    );
    let out = finish_operational(&mut login, &mut r);
    assert_eq!(out.tsih, 0x42);
    assert_eq!(out.exp_statsn, 12);
    assert_eq!(out.negotiated.connection.max_xmit_data_segment_length, 65536);
    assert!(out.negotiated.session.immediate_data);
    assert!(!out.negotiated.session.initial_r2t);
}

#[test]
fn one_way_chap() {
    let mut login = Login::new(setup(chap(false)));
    let req = login.poll_request().unwrap();
    assert!(!req.transit, "no transit before authentication");
    assert_eq!(value(&pairs(&req), "AuthMethod"), Some("CHAP"), "only CHAP is offered: no downgrade");
    let mut r = Rsp { statsn: 1 };
    login.handle_response(r.make(&req, false, Stage::Security, &[("AuthMethod", "CHAP")])).unwrap();
    let req = login.poll_request().unwrap();
    assert_eq!(value(&pairs(&req), "CHAP_A"), Some("5"));
    let challenge: Vec<u8> = (0..16).collect();
    let c_hex = encode_hex(&challenge);
    login
        .handle_response(r.make(&req, false, Stage::Security, &[("CHAP_A", "5"), ("CHAP_I", "7"), ("CHAP_C", &c_hex)]))
        .unwrap();
    let req = login.poll_request().unwrap();
    let p = pairs(&req);
    assert_eq!(value(&p, "CHAP_N"), Some("inituser"));
    // MD5(7 || "initsecret12" || 0..16), computed independently with Python's hashlib.
    assert_eq!(value(&p, "CHAP_R"), Some("0xd1a3306f18652c9f89073cfba6ed6103"));
    assert_eq!(value(&p, "CHAP_C"), None, "one-way CHAP sends no challenge");
    assert!(req.transit && req.nsg == Stage::Operational);
    login.handle_response(r.make(&req, true, Stage::Operational, &[])).unwrap();
    finish_operational(&mut login, &mut r);
}

#[test]
fn mutual_chap_verifies_the_target() {
    for good in [true, false] {
        let mut login = Login::new(setup(chap(true)));
        let ours = our_challenge();
        let mut r = Rsp { statsn: 1 };
        let req = login.poll_request().unwrap();
        login.handle_response(r.make(&req, false, Stage::Security, &[("AuthMethod", "CHAP")])).unwrap();
        let req = login.poll_request().unwrap();
        login
            .handle_response(r.make(
                &req,
                false,
                Stage::Security,
                &[("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", "0x0102")],
            ))
            .unwrap();
        let req = login.poll_request().unwrap();
        let p = pairs(&req);
        assert_eq!(value(&p, "CHAP_I"), Some(ours.id().to_string().as_str()));
        assert_eq!(value(&p, "CHAP_C"), Some(encode_hex(ours.challenge()).as_str()));
        let secret = if good { "tgtsecret123" } else { "wrongsecret1" };
        let resp = chap::response(ours.id(), &Secret::parse(secret.as_bytes()).unwrap(), ours.challenge());
        let resp = encode_hex(&resp);
        let result =
            login.handle_response(r.make(&req, true, Stage::Operational, &[("CHAP_N", "tgtuser"), ("CHAP_R", &resp)]));
        if good {
            assert_eq!(result.unwrap(), LoginProgress::Continue);
        } else {
            let e = result.unwrap_err();
            assert_eq!(e, LoginError::Chap(ChapError::TargetAuthFailed));
            assert!(e.to_string().contains("check the target CHAP secret"), "{e}");
            // Sticky: the login cannot continue.
            assert!(login.handle_response(r.make(&req, true, Stage::Operational, &[])).is_err());
        }
    }
}

#[test]
fn reflected_challenge_is_refused() {
    let mut login = Login::new(setup(chap(true)));
    let mut r = Rsp { statsn: 1 };
    let req = login.poll_request().unwrap();
    login.handle_response(r.make(&req, false, Stage::Security, &[("AuthMethod", "CHAP")])).unwrap();
    let req = login.poll_request().unwrap();
    let ours = encode_hex(our_challenge().challenge());
    let e = login
        .handle_response(r.make(&req, false, Stage::Security, &[("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", &ours)]))
        .unwrap_err();
    assert_eq!(e, LoginError::Chap(ChapError::ReflectedChallenge));
}

#[test]
fn chap_downgrade_is_refused() {
    let mut login = Login::new(setup(chap(false)));
    let mut r = Rsp { statsn: 1 };
    let req = login.poll_request().unwrap();
    let e = login.handle_response(r.make(&req, true, Stage::Operational, &[("AuthMethod", "None")])).unwrap_err();
    assert!(matches!(e, LoginError::AuthDowngrade(ref m) if m == "None"));
    assert!(!e.is_retryable());
}

#[test]
fn chap_required_but_not_configured() {
    let mut login = Login::new(setup(Auth::None));
    let mut r = Rsp { statsn: 1 };
    let req = login.poll_request().unwrap();
    let e = login.handle_response(r.status(&req, LoginStatus::AUTHENTICATION_FAILURE, &[])).unwrap_err();
    assert_eq!(e, LoginError::ChapRequired);
    assert!(e.to_string().contains("configure a CHAP user and secret"), "{e}");
    let mut login = Login::new(setup(Auth::None));
    let req = login.poll_request().unwrap();
    let e = login.handle_response(r.make(&req, false, Stage::Security, &[("AuthMethod", "Reject")])).unwrap_err();
    assert_eq!(e, LoginError::ChapRequired);
}

#[test]
fn wrong_secret_message() {
    let mut login = Login::new(setup(chap(false)));
    let mut r = Rsp { statsn: 1 };
    let req = login.poll_request().unwrap();
    let e = login.handle_response(r.status(&req, LoginStatus::AUTHENTICATION_FAILURE, &[])).unwrap_err();
    assert_eq!(e.to_string(), "authentication failure (0x0201): check the CHAP user and secret");
    assert!(!e.is_retryable());
}

#[test]
fn unsupported_chap_algorithm_and_bad_values() {
    for (keys, want) in [
        (vec![("CHAP_A", "7"), ("CHAP_I", "1"), ("CHAP_C", "0x01")], "CHAP_A=7"),
        (vec![("CHAP_A", "5"), ("CHAP_I", "300"), ("CHAP_C", "0x01")], "CHAP_I"),
        (vec![("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", "zz")], "CHAP_C"),
    ] {
        let mut login = Login::new(setup(chap(false)));
        let mut r = Rsp { statsn: 1 };
        let req = login.poll_request().unwrap();
        login.handle_response(r.make(&req, false, Stage::Security, &[("AuthMethod", "CHAP")])).unwrap();
        let req = login.poll_request().unwrap();
        let e = login.handle_response(r.make(&req, false, Stage::Security, &keys)).unwrap_err();
        assert!(e.to_string().contains(want), "{e} should mention {want}");
    }
    // A challenge over 1024 bytes (seed event 33).
    let mut login = Login::new(setup(chap(false)));
    let mut r = Rsp { statsn: 1 };
    let req = login.poll_request().unwrap();
    login.handle_response(r.make(&req, false, Stage::Security, &[("AuthMethod", "CHAP")])).unwrap();
    let req = login.poll_request().unwrap();
    let big = encode_hex(&[1u8; 1025]);
    let e = login
        .handle_response(r.make(&req, false, Stage::Security, &[("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", &big)]))
        .unwrap_err();
    assert_eq!(e, LoginError::Chap(ChapError::ChallengeTooLong(1025)));
}

#[test]
fn statuses_map_to_advice() {
    let cases = [
        (LoginStatus::AUTHORIZATION_FAILURE, "ACL"),
        (LoginStatus::NOT_FOUND, "check the name"),
        (LoginStatus::TARGET_REMOVED, "removed"),
        (LoginStatus::UNSUPPORTED_VERSION, "version"),
        (LoginStatus::OUT_OF_RESOURCES, "check the target's state"),
        (LoginStatus::SERVICE_UNAVAILABLE, "mpio discover --portal 192.0.2.7:3260"),
        (LoginStatus::MISSING_PARAMETER, "login key"),
    ];
    for (status, want) in cases {
        let mut login = Login::new(setup(Auth::None));
        let mut r = Rsp { statsn: 1 };
        let req = login.poll_request().unwrap();
        let e = login.handle_response(r.status(&req, status, &[])).unwrap_err();
        assert!(e.to_string().contains(want), "{status:?}: {e}");
        assert_eq!(e.is_retryable(), status.class() == 3, "{status:?}");
    }
}

#[test]
fn too_many_connections_on_an_added_connection_means_no_mcs() {
    let mut s = setup(Auth::None);
    s.tsih = 0x42;
    s.cid = 1;
    let mut login = Login::new(s);
    let mut r = Rsp { statsn: 1 };
    let req = login.poll_request().unwrap();
    assert_eq!(value(&pairs(&req), "SessionType"), None, "SessionType is leading-only");
    let e = login.handle_response(r.status(&req, LoginStatus::TOO_MANY_CONNECTIONS, &[])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "target does not support MCS (MaxConnections=1): use MPIO (one session per path) instead"
    );
}

#[test]
fn redirect_carries_the_address() {
    let mut login = Login::new(setup(Auth::None));
    let mut r = Rsp { statsn: 1 };
    let req = login.poll_request().unwrap();
    let e = login
        .handle_response(r.status(
            &req,
            LoginStatus::TARGET_MOVED_PERMANENTLY,
            &[("TargetAddress", "[fe80::1]:3261,2")],
        ))
        .unwrap_err();
    assert_eq!(e, LoginError::Redirect { address: "[fe80::1]:3261,2".parse().unwrap(), permanent: true });
    let mut login = Login::new(setup(Auth::None));
    let req = login.poll_request().unwrap();
    let e = login.handle_response(r.status(&req, LoginStatus::TARGET_MOVED_TEMPORARILY, &[])).unwrap_err();
    assert!(matches!(e, LoginError::Protocol(_)), "a redirect without an address is invalid");
}

#[test]
fn continued_response_is_reassembled() {
    let mut login = Login::new(setup(Auth::None));
    let mut r = Rsp { statsn: 1 };
    let req = login.poll_request().unwrap();
    login.handle_response(r.make(&req, true, Stage::Operational, &[("AuthMethod", "None")])).unwrap();
    let req = login.poll_request().unwrap();
    let keys = echo(&req);
    let mut text = Vec::new();
    encode_pairs(&keys.iter().map(|(k, v)| KeyValue::new(k, v)).collect::<Vec<_>>(), &mut text);
    let (a, b) = text.split_at(text.len() / 2);
    let mut first = r.make(&req, false, Stage::Operational, &[]);
    first.continue_ = true;
    first.data = Bytes::copy_from_slice(a);
    assert_eq!(login.handle_response(first).unwrap(), LoginProgress::Continue);
    let empty = login.poll_request().unwrap();
    assert!(empty.data.is_empty() && !empty.transit && !empty.continue_);
    let mut second = r.make(&empty, true, Stage::FullFeature, &[]);
    second.data = Bytes::copy_from_slice(b);
    assert!(matches!(login.handle_response(second).unwrap(), LoginProgress::Done(_)));
}

#[test]
fn mismatched_header_fields_are_protocol_errors() {
    let mut login = Login::new(setup(Auth::None));
    let mut r = Rsp { statsn: 1 };
    let req = login.poll_request().unwrap();
    let mut rsp = r.make(&req, true, Stage::Operational, &[("AuthMethod", "None")]);
    rsp.itt = 1234;
    assert!(matches!(login.handle_response(rsp).unwrap_err(), LoginError::Protocol(_)));
    let mut login = Login::new(setup(Auth::None));
    let req = login.poll_request().unwrap();
    let mut rsp = r.make(&req, true, Stage::Operational, &[("AuthMethod", "None")]);
    rsp.isid = Isid([0; 6]);
    assert!(matches!(login.handle_response(rsp).unwrap_err(), LoginError::Protocol(_)));
    // A refusal is judged by its status, whatever the ISID (tgtd sends 0).
    let mut login = Login::new(setup(Auth::None));
    let req = login.poll_request().unwrap();
    let mut rsp = r.status(&req, LoginStatus::NOT_FOUND, &[]);
    rsp.isid = Isid([0; 6]);
    let e = login.handle_response(rsp).unwrap_err();
    assert!(matches!(e, LoginError::Status { status: LoginStatus::NOT_FOUND, .. }), "{e}");
    let mut login = Login::new(setup(Auth::None));
    let req = login.poll_request().unwrap();
    assert_eq!(
        login.handle_response(r.make(&req, true, Stage::Operational, &[])).unwrap_err(),
        LoginError::NoAuthMethod
    );
}

/// The refusal `status` of a login set up by [`setup`] with `auth`.
fn refused_with(auth: Auth, session_type: SessionType, status: LoginStatus) -> LoginError {
    let mut s = setup(auth);
    s.session_type = session_type;
    let mut login = Login::new(s);
    let mut r = Rsp { statsn: 1 };
    let req = login.poll_request().unwrap();
    login.handle_response(r.status(&req, status, &[])).unwrap_err()
}

#[test]
fn an_unknown_target_name_is_named_with_the_way_to_list_the_right_ones() {
    // tgtd answers 0x0203; LIO answers 0x0301, which RFC 7143 calls a
    // transient target error, to a name it does not know.
    for (status, code) in [(LoginStatus::NOT_FOUND, "0x0203"), (LoginStatus::SERVICE_UNAVAILABLE, "0x0301")] {
        let e = refused_with(Auth::None, SessionType::Normal, status).to_string();
        assert!(e.contains(code), "{e}");
        assert!(e.contains("no target named iqn.2026-11.test:disk"), "names the target asked for: {e}");
        assert!(e.contains("mpio discover --portal 192.0.2.7:3260"), "says how to list the right names: {e}");
    }
    let e = refused_with(Auth::None, SessionType::Normal, LoginStatus::SERVICE_UNAVAILABLE).to_string();
    assert!(e.contains("most likely"), "0x0301 can mean other things, so the advice says it is a guess: {e}");
    // A discovery session asks for no target name: no name to suspect.
    let e = refused_with(Auth::None, SessionType::Discovery, LoginStatus::SERVICE_UNAVAILABLE).to_string();
    assert!(!e.contains("mpio discover"), "{e}");
}

#[test]
fn no_refusal_promises_a_retry_and_each_is_one_line() {
    // Whether a login is tried again is the caller's decision (a one-shot
    // command does not retry), so no message may promise it.
    for code in 0..=0x0400u16 {
        let status = LoginStatus(code);
        if status == LoginStatus::SUCCESS || status.class() == 1 {
            continue;
        }
        for auth in [Auth::None, chap(false)] {
            let e = refused_with(auth, SessionType::Normal, status).to_string();
            assert!(!e.contains("retried") && !e.contains("will be"), "{status:?}: {e}");
            assert!(!e.contains('\n'), "{status:?}: {e}");
        }
    }
}

#[test]
fn a_connection_closed_without_status_names_the_likely_causes() {
    // LIO closes the connection when it requires CHAP and none is offered.
    let login = Login::new(setup(Auth::None));
    let e = login.connection_closed();
    assert_eq!(e, LoginError::Closed { in_security: true, chap_configured: false });
    let m = e.to_string();
    assert!(m.contains("without a status"), "{m}");
    assert!(m.contains("may require CHAP") && m.contains("--chap-user and --chap-secret-file"), "{m}");
    assert!(m.contains("ACL may not allow this initiator name"), "{m}");
    assert!(e.is_retryable());
    // With CHAP configured, the credentials are the suspects.
    let m = Login::new(setup(chap(false))).connection_closed().to_string();
    assert!(m.contains("CHAP user or secret may be wrong") && m.contains("ACL"), "{m}");
    // Past authentication, neither is.
    let mut login = Login::new(setup(Auth::None));
    let mut r = Rsp { statsn: 1 };
    let req = login.poll_request().unwrap();
    login.handle_response(r.make(&req, true, Stage::Operational, &[("AuthMethod", "None")])).unwrap();
    let m = login.connection_closed().to_string();
    assert!(!m.contains("CHAP") && m.contains("check the target's log"), "{m}");
}

#[test]
fn error_messages_hold_their_cause_once() {
    fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut out = Vec::new();
        let mut next = Some(e);
        while let Some(e) = next {
            out.push(e.to_string());
            next = e.source();
        }
        out
    }
    let errors: Vec<LoginError> = vec![
        ChapError::TargetAuthFailed.into(),
        TextError::EmptyKey.into(),
        Login::new(setup(Auth::None)).connection_closed(),
    ];
    for e in errors {
        let c = chain(&e);
        assert_eq!(c.len(), 1, "the message already holds the cause; source() must not repeat it: {c:?}");
    }
}
