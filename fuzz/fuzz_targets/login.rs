//! The login state machine (with mutual CHAP) fed a sequence of arbitrary
//! Login Responses.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

use mpio_transport::chap::{ChapConfig, ChapCredentials, DeterministicRandom, Secret};
use mpio_transport::config::{Auth, SessionType};
use mpio_transport::login::{Login, LoginSetup};
use mpio_transport::pdu::frame::{self, Framing};
use mpio_transport::pdu::{Isid, Pdu};
use mpio_transport::text::OperationalOffer;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let auth = if sel & 1 == 0 {
        Auth::None
    } else {
        let i = ChapCredentials::new("i", Secret::parse(b"initiator-secret").unwrap()).unwrap();
        let t = ChapCredentials::new("t", Secret::parse(b"target-secret-1").unwrap()).unwrap();
        Auth::Chap(ChapConfig::new(i, (sel & 2 != 0).then_some(t)).unwrap())
    };
    let setup = LoginSetup {
        initiator_name: "iqn.2026-11.test:init".parse().unwrap(),
        initiator_alias: None,
        target_name: Some("iqn.2026-11.test:disk".parse().unwrap()),
        portal: "127.0.0.1:3260".parse().unwrap(),
        session_type: if sel & 4 == 0 { SessionType::Normal } else { SessionType::Discovery },
        isid: Isid([0x80, 0, 0, 0, 0, 1]),
        tsih: if sel & 8 == 0 { 0 } else { 7 },
        cid: 0,
        cmdsn: 1,
        itt: 1,
        auth,
        offer: OperationalOffer::default(),
        random: Arc::new(DeterministicRandom::new(1)),
    };
    let mut login = Login::new(setup);
    let mut buf = BytesMut::from(rest);
    while let Ok(Some(raw)) = frame::decode(&mut buf, &Framing::default()) {
        let _ = login.poll_request();
        if let Ok(Pdu::LoginResponse(r)) = Pdu::parse(raw) {
            if login.handle_response(r).is_err() {
                return;
            }
        }
    }
});
