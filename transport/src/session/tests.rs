//! Deterministic tests of the session engine against a scripted target,
//! with a virtual clock. These prove the state machine; the tests against
//! tgtd prove the feature.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::*;
use crate::config::{ConnectionSpec, SessionConfig, SessionType};
use crate::login::LoginError;
use crate::pdu::frame::Framing;
use crate::pdu::*;
use crate::text::{DigestPref, KeyValue, decode_pairs, encode_pairs};

/// One connection's end at the target.
struct TargetConn {
    rx: BytesMut,
    tx: TxQueue,
    framing: Framing,
    statsn: u32,
}

/// A scripted target: logs in whoever asks (AuthMethod=None), answers
/// operational keys by echoing the offer, and leaves everything else to
/// the test.
struct Harness {
    s: Session<u32>,
    conns: Vec<TargetConn>,
    now: Instant,
    exp_cmdsn: u32,
    max_cmdsn_window: u32,
    tsih: u16,
    /// Extra keys the target declares in the operational response.
    declare: Vec<(String, String)>,
    digests: bool,
    /// Events seen by a helper but not yet by the test.
    backlog: Vec<Event<u32>>,
}

fn cfg(n_conns: usize) -> SessionConfig {
    let mut c = SessionConfig::new(
        "iqn.2026-11.test:init".parse().unwrap(),
        "iqn.2026-11.test:disk".parse().unwrap(),
        "127.0.0.1:3260".parse().unwrap(),
    );
    c.connections =
        (0..n_conns).map(|i| ConnectionSpec::to(format!("127.0.0.{}:3260", i + 1).parse().unwrap())).collect();
    c.timeouts.nop_interval = Some(Duration::from_secs(5));
    c.timeouts.nop_timeout = Duration::from_secs(5);
    c.timeouts.command = Duration::from_secs(30);
    c.timeouts.task_mgmt = Duration::from_secs(10);
    c.timeouts.recovery = Some(Duration::from_secs(60));
    c.timeouts.reconnect_min = Duration::from_secs(1);
    c
}

impl Harness {
    fn new(cfg: SessionConfig) -> Harness {
        let now = Instant::now();
        let n = cfg.connections.len();
        let s = Session::new(cfg, now).unwrap();
        Harness {
            s,
            conns: (0..n)
                .map(|_| TargetConn {
                    rx: BytesMut::new(),
                    tx: TxQueue::new(),
                    framing: Framing::default(),
                    statsn: 100,
                })
                .collect(),
            now,
            exp_cmdsn: 0,
            max_cmdsn_window: 32,
            tsih: 0x1234,
            declare: vec![("MaxRecvDataSegmentLength".into(), "8192".into())],
            digests: false,
            backlog: Vec::new(),
        }
    }

    fn events(&mut self) -> Vec<Event<u32>> {
        let mut v = std::mem::take(&mut self.backlog);
        v.extend(std::iter::from_fn(|| self.s.poll_event()));
        v
    }

    /// Takes what the initiator sent on `cid`.
    fn sent(&mut self, cid: u16) -> Vec<Pdu> {
        let bytes = self.s.tx(cid).unwrap().take_all();
        let c = &mut self.conns[cid as usize];
        c.rx.extend_from_slice(&bytes);
        let mut out = Vec::new();
        while let Some(raw) = frame::decode(&mut c.rx, &c.framing).unwrap() {
            out.push(Pdu::parse(raw).unwrap());
        }
        out
    }

    fn max_cmdsn(&self) -> u32 {
        self.exp_cmdsn.wrapping_add(self.max_cmdsn_window).wrapping_sub(1)
    }

    /// Sends `pdu` from the target on `cid` and feeds it to the session.
    fn reply(&mut self, cid: u16, pdu: Pdu) {
        let c = &mut self.conns[cid as usize];
        c.tx.push(&pdu.encode(), &c.framing);
        let mut bytes = c.tx.take_all();
        self.s.handle_bytes(cid, self.now, &mut bytes);
    }

    fn next_statsn(&mut self, cid: u16) -> u32 {
        let c = &mut self.conns[cid as usize];
        let sn = c.statsn;
        c.statsn = c.statsn.wrapping_add(1);
        sn
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now);
    }

    /// Expects a Connect for `cid` and reports the socket open.
    fn accept(&mut self, cid: u16) {
        let evs = self.events();
        let (mine, rest): (Vec<_>, Vec<_>) =
            evs.into_iter().partition(|e| matches!(e, Event::Connect { cid: c, .. } if *c == cid));
        assert!(!mine.is_empty(), "expected Connect for {cid}, got {rest:?}");
        self.backlog = rest;
        self.conns[cid as usize].framing = Framing::default();
        self.conns[cid as usize].rx.clear();
        self.s.handle_connected(cid, self.now);
    }

    /// Runs a whole login on `cid`; returns the TSIH the initiator sent.
    fn login(&mut self, cid: u16) -> u16 {
        self.accept(cid);
        let mut sent_tsih = None;
        loop {
            let pdus = self.sent(cid);
            assert_eq!(pdus.len(), 1, "one login request at a time: {pdus:?}");
            let Pdu::LoginRequest(req) = &pdus[0] else { panic!("expected a login request, got {pdus:?}") };
            sent_tsih.get_or_insert(req.tsih);
            self.exp_cmdsn = req.cmdsn;
            let pairs = decode_pairs(&req.data).unwrap();
            let (keys, next): (Vec<KeyValue>, Stage) = match req.csg {
                Stage::Security => (vec![KeyValue::new("AuthMethod", "None")], Stage::Operational),
                _ => (self.answer(&pairs), Stage::FullFeature),
            };
            let mut data = Vec::new();
            encode_pairs(&keys, &mut data);
            let statsn = self.next_statsn(cid);
            let fin = next == Stage::FullFeature;
            let rsp = LoginResponse {
                transit: true,
                continue_: false,
                csg: req.csg,
                nsg: next,
                version_max: 0,
                version_active: 0,
                isid: req.isid,
                tsih: if fin { self.tsih } else { 0 },
                itt: req.itt,
                statsn,
                exp_cmdsn: self.exp_cmdsn,
                max_cmdsn: self.max_cmdsn(),
                status: LoginStatus::SUCCESS,
                data: Bytes::from(data),
            };
            self.reply(cid, Pdu::LoginResponse(rsp));
            if fin {
                let c = &mut self.conns[cid as usize];
                c.framing.header_digest = self.digests;
                c.framing.data_digest = self.digests;
                c.framing.max_recv_data_segment_length = 1 << 24;
                return sent_tsih.unwrap();
            }
        }
    }

    /// Operational answers: echo offers (valid for every result function),
    /// pick the digest the test wants, add declarations.
    fn answer(&self, pairs: &[KeyValue]) -> Vec<KeyValue> {
        let mut out = Vec::new();
        for kv in pairs {
            match kv.key.as_str() {
                "HeaderDigest" | "DataDigest" => {
                    let v = if self.digests && kv.value.contains("CRC32C") { "CRC32C" } else { "None" };
                    out.push(KeyValue::new(&kv.key, v));
                }
                "MaxRecvDataSegmentLength" | "InitiatorName" | "TargetName" | "SessionType" | "InitiatorAlias" => {}
                _ => out.push(kv.clone()),
            }
        }
        for (k, v) in &self.declare {
            out.push(KeyValue::new(k, v));
        }
        out
    }

    fn up(cfg: SessionConfig) -> Harness {
        let mut h = Harness::new(cfg);
        h.s.start(h.now);
        assert_eq!(h.login(0), 0);
        let evs = h.events();
        assert!(
            evs.iter().any(|e| matches!(e, Event::State(SessionEvent::SessionUp { tsih: 0x1234, reinstated: false }))),
            "{evs:?}"
        );
        assert!(h.s.is_up());
        // Keep what the test may still look for (Connect of further CIDs).
        h.backlog = evs.into_iter().filter(|e| matches!(e, Event::Connect { .. })).collect();
        h
    }

    fn scsi_response(&mut self, cid: u16, itt: u32, status: u8, data: Bytes) {
        self.scsi_response_counting(cid, itt, status, data, 0);
    }

    /// A SCSI Response whose ExpDataSN says `exp_datasn` Data-In were sent.
    fn scsi_response_counting(&mut self, cid: u16, itt: u32, status: u8, data: Bytes, exp_datasn: u32) {
        let statsn = self.next_statsn(cid);
        let rsp = ScsiResponse {
            itt,
            response: 0,
            status,
            residual: Residual::None,
            bidi_read_residual: Residual::None,
            snack_tag: 0,
            statsn,
            exp_cmdsn: self.exp_cmdsn,
            max_cmdsn: self.max_cmdsn(),
            exp_datasn,
            data,
        };
        self.reply(cid, Pdu::ScsiResponse(rsp));
    }

    /// Takes the one SCSI command sent on `cid` and acknowledges its CmdSN.
    fn command(&mut self, cid: u16) -> ScsiCommand {
        let pdus = self.sent(cid);
        let cmds: Vec<ScsiCommand> = pdus
            .into_iter()
            .filter_map(|p| match p {
                Pdu::ScsiCommand(c) => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(cmds.len(), 1, "{cmds:?}");
        let c = cmds.into_iter().next().unwrap();
        self.exp_cmdsn = c.cmdsn.wrapping_add(1);
        c
    }

    fn done(&mut self) -> Vec<(u32, Result<Outcome, TaskError>)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::TaskDone { token, result } => Some((token, result)),
                _ => None,
            })
            .collect()
    }
}

/// A Login Response refusing `req` with `status`, carrying `keys`.
fn refusal(req: &LoginRequest, status: LoginStatus, keys: &[(&str, &str)]) -> LoginResponse {
    let mut data = Vec::new();
    encode_pairs(&keys.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect::<Vec<_>>(), &mut data);
    LoginResponse {
        transit: false,
        continue_: false,
        csg: req.csg,
        nsg: req.csg,
        version_max: 0,
        version_active: 0,
        isid: req.isid,
        tsih: 0,
        itt: req.itt,
        statsn: 0,
        exp_cmdsn: req.cmdsn,
        max_cmdsn: req.cmdsn,
        status,
        data: Bytes::from(data),
    }
}

fn read10(lba: u32, blocks: u16) -> ScsiRequest {
    let l = lba.to_be_bytes();
    let b = blocks.to_be_bytes();
    ScsiRequest::new(1 << 48, &[0x28, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0]).read(u32::from(blocks) * 512)
}

fn write10(lba: u32, data: Bytes) -> ScsiRequest {
    let l = lba.to_be_bytes();
    let b = ((data.len() / 512) as u16).to_be_bytes();
    ScsiRequest::new(1 << 48, &[0x2a, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0]).write(data)
}

fn data_in(h: &mut Harness, itt: u32, datasn: u32, offset: u32, data: Bytes, status: Option<u8>) -> Pdu {
    let statsn = if status.is_some() { h.next_statsn(0) } else { h.conns[0].statsn };
    Pdu::DataIn(DataIn {
        final_pdu: status.is_some(),
        ack: false,
        status,
        residual: Residual::None,
        lun: 0,
        itt,
        ttt: RESERVED_TAG,
        statsn,
        exp_cmdsn: h.exp_cmdsn,
        max_cmdsn: h.max_cmdsn(),
        datasn,
        buffer_offset: offset,
        data,
    })
}

#[test]
fn login_negotiates_and_comes_up() {
    let mut c = cfg(1);
    c.offer.header_digest = DigestPref::PreferCrc32c;
    c.offer.data_digest = DigestPref::PreferCrc32c;
    let mut h = Harness::new(c);
    h.digests = true;
    h.declare = vec![("MaxRecvDataSegmentLength".into(), "65536".into()), ("TargetPortalGroupTag".into(), "1".into())];
    h.s.start(h.now);
    h.login(0);
    assert!(h.s.is_up());
    let p = h.s.connection_params(0).unwrap();
    assert_eq!(p.max_xmit_data_segment_length, 65536);
    assert_eq!(p.header_digest, crate::text::Digest::Crc32c);
    // The first full feature PDU carries digests: a NOP round trip works.
    h.s.nop(h.now, Bytes::from_static(b"ping"), 7);
    let pdus = h.sent(0);
    let Pdu::NopOut(n) = &pdus[0] else { panic!() };
    let statsn = h.next_statsn(0);
    let rsp = NopIn {
        lun: 0,
        itt: n.itt,
        ttt: RESERVED_TAG,
        statsn,
        exp_cmdsn: h.exp_cmdsn,
        max_cmdsn: h.max_cmdsn(),
        data: n.data.clone(),
    };
    h.reply(0, Pdu::NopIn(rsp));
    assert_eq!(h.done(), vec![(7, Ok(Outcome::Nop(Bytes::from_static(b"ping"))))]);
}

#[test]
fn read_with_phase_collapse() {
    let mut h = Harness::up(cfg(1));
    h.s.submit(h.now, read10(0, 8), ConnPick::Any, 1);
    let cmd = h.command(0);
    assert!(cmd.read && !cmd.write);
    assert_eq!(cmd.expected_data_len, 4096);
    let p = data_in(&mut h, cmd.itt, 0, 0, Bytes::from(vec![1u8; 2048]), None);
    h.reply(0, p);
    let p = data_in(&mut h, cmd.itt, 1, 2048, Bytes::from(vec![2u8; 2048]), Some(0));
    h.reply(0, p);
    let done = h.done();
    let (1, Ok(Outcome::Scsi(r))) = &done[0] else { panic!("{done:?}") };
    assert!(r.is_good());
    assert_eq!(r.data.len(), 4096);
    assert_eq!(r.data.chunks().len(), 2, "chunks are kept, not copied");
    let all = r.data.to_bytes();
    assert_eq!(&all[..2048], &[1u8; 2048][..]);
    assert_eq!(&all[2048..], &[2u8; 2048][..]);
    assert_eq!(h.s.connection_queue_depth(0), 0);
}

#[test]
fn read_then_response_with_sense() {
    let mut h = Harness::up(cfg(1));
    h.s.submit(h.now, read10(0, 1), ConnPick::Any, 1);
    let cmd = h.command(0);
    let sense = Bytes::from_static(&[0, 8, 0x70, 0, 0x06, 0, 0, 0, 0, 0]);
    h.scsi_response(0, cmd.itt, 2, sense);
    let done = h.done();
    let (1, Ok(Outcome::Scsi(r))) = &done[0] else { panic!("{done:?}") };
    assert_eq!(r.status, 2);
    assert_eq!(r.sense.as_deref(), Some(&[0x70, 0, 0x06, 0, 0, 0, 0, 0][..]));
}

#[test]
fn data_in_beyond_the_buffer_fails_the_connection() {
    let mut h = Harness::up(cfg(1));
    h.s.submit(h.now, read10(0, 1), ConnPick::Any, 1);
    let cmd = h.command(0);
    let p = data_in(&mut h, cmd.itt, 0, 0, Bytes::from(vec![0u8; 1024]), Some(0));
    h.reply(0, p);
    let evs = h.events();
    assert!(
        evs.iter().any(|e| matches!(e, Event::State(SessionEvent::ConnectionDown { cid: 0, reason: ConnectionFailure::Protocol(m) }) if m.contains("asked for 512"))),
        "{evs:?}"
    );
    assert!(!h.s.is_up());
}

#[test]
fn write_with_immediate_data_and_r2t() {
    let mut h = Harness::up(cfg(1));
    // Echoed offer: ImmediateData=Yes, InitialR2T=No, FirstBurstLength 64 KiB; target MRDSL 8192.
    let data: Bytes = (0..200_000u32).map(|i| i as u8).collect::<Vec<u8>>().into();
    let data = data.slice(..196_608);
    h.s.submit(h.now, write10(0, data.clone()), ConnPick::Any, 1);
    let pdus = h.sent(0);
    let Pdu::ScsiCommand(cmd) = &pdus[0] else { panic!() };
    h.exp_cmdsn = cmd.cmdsn + 1;
    assert!(cmd.write && !cmd.final_pdu);
    assert_eq!(cmd.data.len(), 8192);
    assert_eq!(cmd.expected_data_len, 196_608);
    // Unsolicited Data-Out continue up to FirstBurstLength.
    let outs: Vec<&DataOut> = pdus[1..].iter().map(|p| if let Pdu::DataOut(d) = p { d } else { panic!() }).collect();
    assert_eq!(outs.len(), 7);
    assert!(outs.iter().all(|d| d.ttt == RESERVED_TAG));
    assert!(outs.last().unwrap().final_pdu);
    assert_eq!(outs.last().unwrap().buffer_offset + 8192, 65536);
    // One R2T for the rest, within MaxBurstLength.
    let statsn = h.conns[0].statsn;
    let r2t = R2t {
        lun: 0,
        itt: cmd.itt,
        ttt: 0x55,
        statsn,
        exp_cmdsn: h.exp_cmdsn,
        max_cmdsn: h.max_cmdsn(),
        r2tsn: 0,
        buffer_offset: 65536,
        desired_len: 131_072,
    };
    h.reply(0, Pdu::R2t(r2t));
    let pdus = h.sent(0);
    assert_eq!(pdus.len(), 16);
    let mut expect = 65536;
    for (i, p) in pdus.iter().enumerate() {
        let Pdu::DataOut(d) = p else { panic!() };
        assert_eq!((d.ttt, d.datasn, d.buffer_offset), (0x55, i as u32, expect));
        assert_eq!(d.final_pdu, i == 15);
        assert_eq!(d.data, data.slice(expect as usize..expect as usize + 8192));
        expect += 8192;
    }
    h.scsi_response(0, cmd.itt, 0, Bytes::new());
    assert!(matches!(&h.done()[..], [(1, Ok(Outcome::Scsi(r)))] if r.is_good()));
}

#[test]
fn r2t_beyond_the_write_fails_the_connection() {
    let mut h = Harness::up(cfg(1));
    h.s.submit(h.now, write10(0, Bytes::from(vec![0u8; 512])), ConnPick::Any, 1);
    let cmd = h.command(0);
    let r2t = R2t {
        lun: 0,
        itt: cmd.itt,
        ttt: 1,
        statsn: 0,
        exp_cmdsn: h.exp_cmdsn,
        max_cmdsn: h.max_cmdsn(),
        r2tsn: 0,
        buffer_offset: 0,
        desired_len: 4096,
    };
    h.reply(0, Pdu::R2t(r2t));
    assert!(!h.s.is_up());
}

#[test]
fn cmdsn_window_holds_commands() {
    let mut h = Harness::new(cfg(1));
    h.max_cmdsn_window = 2;
    h.s.start(h.now);
    h.login(0);
    h.events();
    for i in 0..4 {
        h.s.submit(h.now, read10(i, 1), ConnPick::Any, i);
    }
    let first: Vec<u32> =
        h.sent(0).iter().map(|p| if let Pdu::ScsiCommand(c) = p { c.cmdsn } else { panic!() }).collect();
    assert_eq!(first.len(), 2, "only MaxCmdSN - ExpCmdSN + 1 commands may go");
    assert_eq!(first[1], first[0] + 1);
    // An unsolicited NOP-In opens the window.
    h.exp_cmdsn = first[1] + 1;
    let nop = NopIn {
        lun: 0,
        itt: RESERVED_TAG,
        ttt: RESERVED_TAG,
        statsn: h.conns[0].statsn,
        exp_cmdsn: h.exp_cmdsn,
        max_cmdsn: h.max_cmdsn(),
        data: Bytes::new(),
    };
    h.reply(0, Pdu::NopIn(nop));
    let next: Vec<u32> =
        h.sent(0).iter().map(|p| if let Pdu::ScsiCommand(c) = p { c.cmdsn } else { panic!() }).collect();
    assert_eq!(next, vec![first[1] + 1, first[1] + 2]);
}

#[test]
fn answers_target_ping() {
    let mut h = Harness::up(cfg(1));
    let nop = NopIn {
        lun: 5,
        itt: RESERVED_TAG,
        ttt: 0xabcd,
        statsn: h.conns[0].statsn,
        exp_cmdsn: h.exp_cmdsn,
        max_cmdsn: h.max_cmdsn(),
        data: Bytes::from_static(b"xy"),
    };
    h.reply(0, Pdu::NopIn(nop));
    let pdus = h.sent(0);
    let [Pdu::NopOut(out)] = &pdus[..] else { panic!("{pdus:?}") };
    assert!(out.immediate);
    assert_eq!((out.itt, out.ttt, out.lun), (RESERVED_TAG, 0xabcd, 5));
    assert_eq!(out.data, Bytes::from_static(b"xy"));
}

#[test]
fn keepalive_detects_a_silent_connection_and_reconnects() {
    let mut h = Harness::up(cfg(1));
    h.s.submit(h.now, read10(0, 1), ConnPick::Any, 1);
    let cmd = h.command(0);
    // 5 s of silence: a NOP-Out ping goes out.
    h.advance(Duration::from_secs(5));
    let pdus = h.sent(0);
    assert!(matches!(&pdus[..], [Pdu::NopOut(n)] if n.itt != RESERVED_TAG && n.immediate), "{pdus:?}");
    // Unanswered for nop_timeout: the connection is declared dead.
    h.advance(Duration::from_secs(5));
    let evs = h.events();
    assert!(evs.iter().any(|e| matches!(
        e,
        Event::State(SessionEvent::ConnectionDown { cid: 0, reason: ConnectionFailure::NopTimeout(_) })
    )));
    assert!(evs.iter().any(|e| matches!(e, Event::State(SessionEvent::SessionDown { permanent: false, .. }))));
    assert!(evs.iter().any(|e| matches!(e, Event::Close { cid: 0, .. })));
    // The read is parked, not failed.
    assert!(h.done().is_empty());
    // DefaultTime2Wait (2 s) later the session reconnects and reinstates.
    h.advance(Duration::from_secs(2));
    h.login(0);
    let evs = h.events();
    assert!(evs.iter().any(|e| matches!(e, Event::State(SessionEvent::SessionUp { reinstated: true, .. }))), "{evs:?}");
    // The parked read is sent again on the new session.
    let again = h.command(0);
    assert_eq!(again.cdb, cmd.cdb);
    h.scsi_response(0, again.itt, 0, Bytes::new());
    assert!(matches!(&h.done()[..], [(1, Ok(Outcome::Scsi(_)))]));
    assert_eq!(h.s.stats().retries, 1);
}

#[test]
fn traffic_after_a_ping_keeps_the_connection() {
    let mut h = Harness::up(cfg(1));
    h.advance(Duration::from_secs(5));
    let _ping = h.sent(0);
    h.advance(Duration::from_secs(3));
    let nop = NopIn {
        lun: 0,
        itt: RESERVED_TAG,
        ttt: RESERVED_TAG,
        statsn: h.conns[0].statsn,
        exp_cmdsn: h.exp_cmdsn,
        max_cmdsn: h.max_cmdsn(),
        data: Bytes::new(),
    };
    h.reply(0, Pdu::NopIn(nop));
    h.advance(Duration::from_secs(2));
    assert!(h.s.is_up());
}

#[test]
fn recovery_timeout_fails_parked_tasks() {
    let mut c = cfg(1);
    c.timeouts.recovery = Some(Duration::from_secs(3));
    let mut h = Harness::up(c);
    h.s.submit(h.now, read10(0, 1), ConnPick::Any, 1);
    h.command(0);
    h.s.handle_closed(0, h.now, "reset".into());
    h.advance(Duration::from_secs(2));
    assert!(h.done().is_empty());
    h.advance(Duration::from_secs(1));
    let done = h.done();
    assert!(matches!(&done[..], [(1, Err(TaskError::ConnectionLost { cleared: false, .. }))]), "{done:?}");
}

#[test]
fn zero_recovery_fails_at_once() {
    let mut c = cfg(1);
    c.timeouts.recovery = Some(Duration::ZERO);
    let mut h = Harness::up(c);
    h.s.submit(h.now, read10(0, 1), ConnPick::Any, 1);
    h.command(0);
    h.s.handle_closed(0, h.now, "reset".into());
    assert!(matches!(&h.done()[..], [(1, Err(TaskError::ConnectionLost { cleared: false, .. }))]));
    // And new commands while down fail too.
    h.s.submit(h.now, read10(0, 1), ConnPick::Any, 2);
    h.advance(Duration::from_millis(1));
    assert!(matches!(&h.done()[..], [(2, Err(TaskError::ConnectionLost { cleared: true, .. }))]));
}

#[test]
fn timed_out_command_is_aborted() {
    let mut h = Harness::up(cfg(1));
    h.s.submit(h.now, read10(9, 1), ConnPick::Any, 1);
    let cmd = h.command(0);
    // Keep the link alive so only the command times out.
    let mut tmf = None;
    for _ in 0..7 {
        h.advance(Duration::from_secs(5));
        for p in h.sent(0) {
            match p {
                Pdu::NopOut(n) if n.itt != RESERVED_TAG => {
                    let statsn = h.next_statsn(0);
                    let rsp = NopIn {
                        lun: 0,
                        itt: n.itt,
                        ttt: RESERVED_TAG,
                        statsn,
                        exp_cmdsn: h.exp_cmdsn,
                        max_cmdsn: h.max_cmdsn(),
                        data: Bytes::new(),
                    };
                    h.reply(0, Pdu::NopIn(rsp));
                }
                Pdu::TaskMgmtRequest(t) => tmf = Some(t),
                other => panic!("{other:?}"),
            }
        }
        if tmf.is_some() {
            break;
        }
    }
    let tmf = tmf.expect("ABORT TASK after the command timeout");
    assert_eq!(tmf.function, TmfFunction::ABORT_TASK);
    assert_eq!((tmf.referenced_itt, tmf.ref_cmdsn, tmf.lun), (cmd.itt, cmd.cmdsn, cmd.lun));
    let statsn = h.next_statsn(0);
    let rsp = TaskMgmtResponse {
        response: TmfResponse::FUNCTION_COMPLETE,
        itt: tmf.itt,
        statsn,
        exp_cmdsn: h.exp_cmdsn,
        max_cmdsn: h.max_cmdsn(),
    };
    h.reply(0, Pdu::TaskMgmtResponse(rsp));
    let done = h.done();
    assert!(matches!(&done[..], [(1, Err(TaskError::TimedOut(d)))] if *d >= Duration::from_secs(30)), "{done:?}");
    assert!(h.s.is_up());
    assert_eq!(h.s.stats().timeouts, 1);
}

#[test]
fn unanswered_abort_kills_the_connection() {
    let mut c = cfg(1);
    c.timeouts.nop_interval = None;
    c.timeouts.command = Duration::from_secs(2);
    c.timeouts.task_mgmt = Duration::from_secs(3);
    let mut h = Harness::up(c);
    h.s.submit(h.now, read10(0, 1), ConnPick::Any, 1);
    h.command(0);
    h.advance(Duration::from_secs(2));
    assert!(h.sent(0).iter().any(|p| matches!(p, Pdu::TaskMgmtRequest(_))));
    h.advance(Duration::from_secs(3));
    let evs = h.events();
    assert!(
        evs.iter().any(|e| matches!(
            e,
            Event::State(SessionEvent::ConnectionDown { reason: ConnectionFailure::TaskMgmtTimeout(_), .. })
        )),
        "{evs:?}"
    );
}

#[test]
fn lun_reset_terminates_the_lun_s_tasks() {
    let mut h = Harness::up(cfg(1));
    h.s.submit(h.now, read10(0, 1), ConnPick::Any, 1);
    h.s.submit(h.now, read10(1, 1), ConnPick::Any, 2);
    h.sent(0);
    h.s.task_mgmt(h.now, TmfFunction::LOGICAL_UNIT_RESET, 1 << 48, 3);
    let pdus = h.sent(0);
    let [Pdu::TaskMgmtRequest(t)] = &pdus[..] else { panic!("{pdus:?}") };
    let statsn = h.next_statsn(0);
    let rsp = TaskMgmtResponse {
        response: TmfResponse::FUNCTION_COMPLETE,
        itt: t.itt,
        statsn,
        exp_cmdsn: h.exp_cmdsn,
        max_cmdsn: h.max_cmdsn(),
    };
    h.reply(0, Pdu::TaskMgmtResponse(rsp));
    let mut done = h.done();
    done.sort_by_key(|d| d.0);
    assert!(matches!(
        &done[..],
        [(1, Err(TaskError::Aborted)), (2, Err(TaskError::Aborted)), (3, Ok(Outcome::TaskMgmt))]
    ));
}

#[test]
fn rejected_command_fails_the_task() {
    let mut h = Harness::up(cfg(1));
    h.s.submit(h.now, read10(0, 1), ConnPick::Any, 1);
    let pdus = h.sent(0);
    let raw = pdus[0].encode();
    let statsn = h.next_statsn(0);
    let rej = Reject {
        reason: RejectReason::COMMAND_NOT_SUPPORTED,
        statsn,
        exp_cmdsn: h.exp_cmdsn,
        max_cmdsn: h.max_cmdsn(),
        datasn: 0,
        data: Bytes::copy_from_slice(&raw.bhs.0),
    };
    h.reply(0, Pdu::Reject(rej));
    assert!(matches!(&h.done()[..], [(1, Err(TaskError::Rejected(RejectReason::COMMAND_NOT_SUPPORTED)))]));
    assert!(h.s.is_up());
}

#[test]
fn unknown_itt_is_discarded_and_counted() {
    let mut h = Harness::up(cfg(1));
    h.scsi_response(0, 0x999, 0, Bytes::new());
    assert!(h.s.is_up());
    assert_eq!(h.s.connection_stats(0).unwrap().unknown_itt, 1);
}

#[test]
fn long_text_response_is_continued() {
    let mut c = cfg(1);
    c.session_type = SessionType::Discovery;
    c.target_name = None;
    let mut h = Harness::up(c);
    h.s.text_request(h.now, &[KeyValue::new("SendTargets", "All")], 1);
    let pdus = h.sent(0);
    let [Pdu::TextRequest(req)] = &pdus[..] else { panic!() };
    assert_eq!(&req.data[..], b"SendTargets=All\0");
    h.exp_cmdsn = req.cmdsn + 1;
    // First part, cut inside a pair.
    let statsn = h.next_statsn(0);
    h.reply(
        0,
        Pdu::TextResponse(TextResponse {
            final_pdu: false,
            continue_: true,
            lun: 0,
            itt: req.itt,
            ttt: 0x77,
            statsn,
            exp_cmdsn: h.exp_cmdsn,
            max_cmdsn: h.max_cmdsn(),
            data: Bytes::from_static(b"TargetName=iqn.2026-11.test:a\0TargetAdd"),
        }),
    );
    let pdus = h.sent(0);
    let [Pdu::TextRequest(cont)] = &pdus[..] else { panic!("{pdus:?}") };
    assert_eq!((cont.itt, cont.ttt), (req.itt, 0x77));
    assert!(cont.data.is_empty());
    h.exp_cmdsn = cont.cmdsn + 1;
    let statsn = h.next_statsn(0);
    h.reply(
        0,
        Pdu::TextResponse(TextResponse {
            final_pdu: true,
            continue_: false,
            lun: 0,
            itt: req.itt,
            ttt: RESERVED_TAG,
            statsn,
            exp_cmdsn: h.exp_cmdsn,
            max_cmdsn: h.max_cmdsn(),
            data: Bytes::from_static(b"ress=127.0.0.1:3260,1\0"),
        }),
    );
    let done = h.done();
    let [(1, Ok(Outcome::Text(pairs)))] = &done[..] else { panic!("{done:?}") };
    assert_eq!(pairs[1], KeyValue::new("TargetAddress", "127.0.0.1:3260,1"));
}

#[test]
fn scsi_on_a_discovery_session_is_refused() {
    let mut c = cfg(1);
    c.session_type = SessionType::Discovery;
    c.target_name = None;
    let mut h = Harness::up(c);
    h.s.submit(h.now, read10(0, 1), ConnPick::Any, 1);
    assert!(matches!(&h.done()[..], [(1, Err(TaskError::Invalid(_)))]));
}

#[test]
fn mcs_second_connection_joins_with_the_tsih() {
    let mut h = Harness::up(cfg(2));
    assert_eq!(h.login(1), 0x1234, "an added connection carries the session's TSIH");
    assert!(h.events().iter().any(|e| matches!(e, Event::State(SessionEvent::ConnectionUp { cid: 1 }))));
    // Commands spread by queue depth over both connections.
    h.s.submit(h.now, read10(0, 1), ConnPick::Any, 1);
    h.s.submit(h.now, read10(1, 1), ConnPick::Any, 2);
    let a = h.sent(0);
    let b = h.sent(1);
    assert_eq!((a.len(), b.len()), (1, 1));
    // A chosen connection is honoured.
    h.s.submit(h.now, read10(2, 1), ConnPick::Cid(1), 3);
    assert!(h.sent(0).is_empty());
    assert_eq!(h.sent(1).len(), 1);
}

#[test]
fn mcs_failed_connection_is_logged_out_and_its_tasks_resent() {
    let mut h = Harness::up(cfg(2));
    h.login(1);
    h.events();
    h.s.submit(h.now, read10(7, 1), ConnPick::Cid(1), 1);
    let lost = h.command(1);
    h.s.handle_closed(1, h.now, "reset by peer".into());
    let evs = h.events();
    assert!(evs.iter().any(|e| matches!(e, Event::State(SessionEvent::ConnectionDown { cid: 1, .. }))));
    assert!(
        !evs.iter().any(|e| matches!(e, Event::State(SessionEvent::SessionDown { .. }))),
        "the session survives: {evs:?}"
    );
    // The failed CID is logged out through connection 0.
    let pdus = h.sent(0);
    let [Pdu::LogoutRequest(lo)] = &pdus[..] else { panic!("{pdus:?}") };
    assert_eq!((lo.reason, lo.cid), (LogoutReason::CLOSE_CONNECTION, 1));
    let statsn = h.next_statsn(0);
    let rsp = LogoutResponse {
        response: LogoutResponseCode::SUCCESS,
        itt: lo.itt,
        statsn,
        exp_cmdsn: h.exp_cmdsn,
        max_cmdsn: h.max_cmdsn(),
        time2wait: 0,
        time2retain: 0,
    };
    h.reply(0, Pdu::LogoutResponse(rsp));
    // Now that the target terminated it, the read goes out again. It was
    // pinned to CID 1, which is down, so it waits for CID 1 to return.
    assert!(h.sent(0).is_empty());
    h.advance(Duration::from_secs(2));
    h.login(1);
    let again = h.command(1);
    assert_eq!(again.cdb, lost.cdb);
}

#[test]
fn async_logout_request_drains_and_relogs() {
    let mut h = Harness::up(cfg(1));
    let statsn = h.next_statsn(0);
    let msg = AsyncMessage {
        lun: 0,
        statsn,
        exp_cmdsn: h.exp_cmdsn,
        max_cmdsn: h.max_cmdsn(),
        event: AsyncEvent::LOGOUT_REQUEST,
        vcode: 0,
        parameter1: 0,
        parameter2: 0,
        parameter3: 20,
        data: Bytes::new(),
    };
    h.reply(0, Pdu::AsyncMessage(msg));
    let pdus = h.sent(0);
    let [Pdu::LogoutRequest(lo)] = &pdus[..] else { panic!("{pdus:?}") };
    assert_eq!(lo.reason, LogoutReason::CLOSE_CONNECTION);
    // Commands submitted meanwhile wait.
    h.s.submit(h.now, read10(0, 1), ConnPick::Any, 1);
    assert!(h.sent(0).is_empty());
    let statsn = h.next_statsn(0);
    let rsp = LogoutResponse {
        response: LogoutResponseCode::SUCCESS,
        itt: lo.itt,
        statsn,
        exp_cmdsn: h.exp_cmdsn,
        max_cmdsn: h.max_cmdsn(),
        time2wait: 2,
        time2retain: 0,
    };
    h.reply(0, Pdu::LogoutResponse(rsp));
    h.advance(Duration::from_secs(2));
    h.login(0);
    let cmd = h.command(0);
    h.scsi_response(0, cmd.itt, 0, Bytes::new());
    assert!(matches!(&h.done()[..], [(1, Ok(_))]));
}

#[test]
fn logout_waits_for_commands_in_flight() {
    let mut h = Harness::up(cfg(1));
    h.s.submit(h.now, read10(0, 1), ConnPick::Any, 1);
    let cmd = h.command(0);
    h.s.logout(h.now, 2);
    assert!(h.sent(0).is_empty(), "logout waits for the read");
    h.scsi_response(0, cmd.itt, 0, Bytes::new());
    let pdus = h.sent(0);
    let [Pdu::LogoutRequest(lo)] = &pdus[..] else { panic!("{pdus:?}") };
    assert_eq!(lo.reason, LogoutReason::CLOSE_SESSION);
    let statsn = h.next_statsn(0);
    let rsp = LogoutResponse {
        response: LogoutResponseCode::SUCCESS,
        itt: lo.itt,
        statsn,
        exp_cmdsn: h.exp_cmdsn,
        max_cmdsn: h.max_cmdsn(),
        time2wait: 0,
        time2retain: 0,
    };
    h.reply(0, Pdu::LogoutResponse(rsp));
    let done = h.done();
    assert!(matches!(&done[..], [(1, Ok(_)), (2, Ok(Outcome::LoggedOut))]), "{done:?}");
    assert_eq!(h.s.state(), SessionState::Closed);
    h.s.submit(h.now, read10(0, 1), ConnPick::Any, 3);
    assert!(matches!(&h.done()[..], [(3, Err(TaskError::SessionClosed))]));
}

#[test]
fn login_redirect_reconnects_elsewhere() {
    let mut h = Harness::new(cfg(1));
    h.s.start(h.now);
    h.accept(0);
    let pdus = h.sent(0);
    let Pdu::LoginRequest(req) = &pdus[0] else { panic!() };
    let rsp = refusal(req, LoginStatus::TARGET_MOVED_TEMPORARILY, &[("TargetAddress", "127.0.0.9:3261,1")]);
    h.reply(0, Pdu::LoginResponse(rsp));
    let evs = h.events();
    assert!(evs.iter().any(|e| matches!(e, Event::Close { cid: 0, .. })));
    assert!(
        evs.iter().any(|e| matches!(e, Event::Connect { cid: 0, portal } if portal.to_string() == "127.0.0.9:3261")),
        "{evs:?}"
    );
}

#[test]
fn permanent_login_failure_fails_waiting_commands() {
    let mut h = Harness::new(cfg(1));
    h.s.start(h.now);
    h.s.submit(h.now, read10(0, 1), ConnPick::Any, 1);
    h.accept(0);
    let pdus = h.sent(0);
    let Pdu::LoginRequest(req) = &pdus[0] else { panic!() };
    let rsp = refusal(req, LoginStatus::AUTHORIZATION_FAILURE, &[]);
    h.reply(0, Pdu::LoginResponse(rsp));
    let evs = h.events();
    assert!(
        evs.iter().any(|e| matches!(e, Event::State(SessionEvent::SessionDown { permanent: true, .. }))),
        "{evs:?}"
    );
    assert!(evs.iter().any(
        |e| matches!(e, Event::TaskDone { token: 1, result: Err(TaskError::SessionFailed(m)) } if m.contains("ACL"))
    ));
    assert_eq!(h.s.state(), SessionState::Failed);
    assert_eq!(h.s.poll_timeout(), None, "no retry for an authorization failure");
}

#[test]
fn connect_failures_back_off() {
    let mut h = Harness::new(cfg(1));
    h.s.start(h.now);
    let mut gaps = Vec::new();
    for _ in 0..6 {
        let evs = h.events();
        assert!(evs.iter().any(|e| matches!(e, Event::Connect { .. })), "{evs:?}");
        h.s.handle_connect_failed(0, h.now, "refused".into());
        let next = h.s.poll_timeout().unwrap();
        gaps.push(next - h.now);
        h.now = next;
        h.s.handle_timeout(h.now);
    }
    let secs: Vec<u64> = gaps.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, vec![2, 2, 4, 8, 16, 30], "DefaultTime2Wait floor, doubling, capped");
}

#[test]
fn abort_of_a_lost_command_drops_the_connection() {
    let mut c = cfg(1);
    c.timeouts.nop_interval = None;
    c.timeouts.command = Duration::from_secs(2);
    let mut h = Harness::up(c);
    h.s.submit(h.now, read10(0, 1), ConnPick::Any, 1);
    h.command(0);
    h.advance(Duration::from_secs(2));
    let pdus = h.sent(0);
    let [Pdu::TaskMgmtRequest(t)] = &pdus[..] else { panic!("{pdus:?}") };
    // tgtd while offline: the command was dropped, so the abort finds nothing.
    let statsn = h.next_statsn(0);
    let rsp = TaskMgmtResponse {
        response: TmfResponse::TASK_DOES_NOT_EXIST,
        itt: t.itt,
        statsn,
        exp_cmdsn: h.exp_cmdsn,
        max_cmdsn: h.max_cmdsn(),
    };
    h.reply(0, Pdu::TaskMgmtResponse(rsp));
    let evs = h.events();
    assert!(
        evs.iter().any(|e| matches!(e, Event::State(SessionEvent::ConnectionDown { reason: ConnectionFailure::Protocol(m), .. }) if m.contains("task does not exist"))),
        "{evs:?}"
    );
    // The read waits for the reinstated session and is sent again.
    h.advance(Duration::from_secs(2));
    h.login(0);
    let again = h.command(0);
    h.scsi_response(0, again.itt, 0, Bytes::new());
    assert!(matches!(&h.done()[..], [(1, Ok(_))]));
}

#[test]
fn poll_timeout_is_the_earliest_timer_and_an_early_call_does_nothing() {
    let mut h = Harness::up(cfg(1));
    h.s.submit(h.now, read10(0, 1), ConnPick::Any, 1);
    h.command(0);
    h.events();
    // The keepalive (5 s) comes before the command timeout (30 s).
    assert_eq!(h.s.poll_timeout(), Some(h.now + Duration::from_secs(5)));
    let before = h.s.poll_timeout();
    h.s.handle_timeout(h.now + Duration::from_secs(4));
    assert!(h.events().is_empty());
    assert!(h.sent(0).is_empty());
    assert_eq!(h.s.poll_timeout(), before, "a call before any deadline changes nothing");
}

#[test]
fn a_login_without_answer_times_out() {
    let mut c = cfg(1);
    c.timeouts.login = Duration::from_secs(7);
    let mut h = Harness::new(c);
    h.s.start(h.now);
    h.accept(0);
    assert!(matches!(&h.sent(0)[..], [Pdu::LoginRequest(_)]));
    assert_eq!(h.s.poll_timeout(), Some(h.now + Duration::from_secs(7)));
    h.advance(Duration::from_secs(7));
    let evs = h.events();
    assert!(
        evs.iter().any(|e| matches!(
            e,
            Event::State(SessionEvent::ConnectionDown {
                cid: 0,
                reason: ConnectionFailure::Login(LoginError::Timeout(d))
            }) if *d == Duration::from_secs(7)
        )),
        "{evs:?}"
    );
}

#[test]
fn async_logout_pause_logs_out_with_tasks_left() {
    let mut h = Harness::up(cfg(1));
    h.s.submit(h.now, read10(0, 1), ConnPick::Any, 1);
    h.command(0);
    let statsn = h.next_statsn(0);
    let msg = AsyncMessage {
        lun: 0,
        statsn,
        exp_cmdsn: h.exp_cmdsn,
        max_cmdsn: h.max_cmdsn(),
        event: AsyncEvent::LOGOUT_REQUEST,
        vcode: 0,
        parameter1: 0,
        parameter2: 0,
        parameter3: 4,
        data: Bytes::new(),
    };
    h.reply(0, Pdu::AsyncMessage(msg));
    // The read is in flight: the connection drains for half the target's
    // deadline before logging out anyway.
    assert!(h.sent(0).is_empty());
    h.advance(Duration::from_secs(1));
    assert!(h.sent(0).is_empty());
    h.advance(Duration::from_secs(1));
    let pdus = h.sent(0);
    assert!(matches!(&pdus[..], [Pdu::LogoutRequest(lo)] if lo.reason == LogoutReason::CLOSE_CONNECTION), "{pdus:?}");
}

#[test]
fn a_target_that_closes_during_login_is_reported_with_the_likely_causes() {
    let mut h = Harness::new(cfg(1));
    h.s.start(h.now);
    h.accept(0);
    h.sent(0);
    h.s.handle_closed(0, h.now, "closed by the target".into());
    let evs = h.events();
    assert!(
        evs.iter().any(|e| matches!(
            e,
            Event::State(SessionEvent::ConnectionDown {
                cid: 0,
                reason: ConnectionFailure::Login(LoginError::Closed { in_security: true, chap_configured: false })
            })
        )),
        "{evs:?}"
    );
}

#[test]
fn after_every_connection_failed_one_leads_the_reinstatement_and_the_others_join_it() {
    let mut h = Harness::up(cfg(3));
    h.login(1);
    h.login(2);
    h.events();
    for cid in 0..3 {
        h.s.handle_closed(cid, h.now, "reset by peer".into());
    }
    h.events();
    // Every reconnect timer runs out at once (DefaultTime2Wait): one
    // connection logs in with TSIH 0; two would reinstate each other.
    h.advance(Duration::from_secs(2));
    let connects: Vec<u16> =
        h.events().iter().filter_map(|e| if let Event::Connect { cid, .. } = e { Some(*cid) } else { None }).collect();
    assert_eq!(connects, vec![0], "only one connection tries to bring the session back");
    h.backlog = vec![Event::Connect { cid: 0, portal: "127.0.0.1:3260".parse().unwrap() }];
    assert_eq!(h.login(0), 0, "the leading login reinstates the session");
    // The others join the session it made.
    h.advance(Duration::from_secs(1));
    assert_eq!(h.login(1), 0x1234);
    assert_eq!(h.login(2), 0x1234);
    assert_eq!(h.s.stats().reinstatements, 1);
    assert!((0..3).all(|cid| h.s.connection_up(cid)));
}

#[test]
fn a_connection_that_opens_while_another_leads_the_login_waits_for_it() {
    let mut h = Harness::up(cfg(3));
    h.login(1);
    h.login(2);
    h.events();
    // 1 and 2 fail and reconnect while 0 is up; then 0 fails too.
    h.s.handle_closed(1, h.now, "reset by peer".into());
    h.s.handle_closed(2, h.now, "reset by peer".into());
    h.advance(Duration::from_secs(2));
    h.s.handle_closed(0, h.now, "reset by peer".into());
    // 1's TCP connection opens first: with no connection up it leads.
    h.accept(1);
    let pdus = h.sent(1);
    assert!(matches!(&pdus[..], [Pdu::LoginRequest(r)] if r.tsih == 0), "{pdus:?}");
    // 2's opens while 1 logs in: it must not start a second leading login.
    h.s.handle_connected(2, h.now);
    assert!(h.s.tx(2).unwrap().is_empty(), "no second leading login");
    let evs = h.events();
    assert!(evs.iter().any(|e| matches!(e, Event::Close { cid: 2, flush: false })), "{evs:?}");
}

/// A session at ErrorRecoveryLevel `erl` with both digests, up on CID 0.
fn up_with_digests(erl: u8) -> Harness {
    let mut c = cfg(1);
    c.offer.header_digest = DigestPref::PreferCrc32c;
    c.offer.data_digest = DigestPref::PreferCrc32c;
    c.offer.error_recovery_level = erl;
    let mut h = Harness::new(c);
    h.digests = true;
    h.s.start(h.now);
    h.login(0);
    assert!(h.s.is_up());
    assert_eq!(h.s.params().error_recovery_level, erl);
    h.events();
    h
}

impl Harness {
    /// Sends `pdu` from the target on `cid` with the first byte of its data
    /// segment flipped after the digests were computed.
    fn reply_with_bad_data(&mut self, cid: u16, pdu: Pdu) {
        let c = &mut self.conns[cid as usize];
        c.tx.push(&pdu.encode(), &c.framing);
        let mut bytes = c.tx.take_all();
        let at = BHS_LEN + if c.framing.header_digest { 4 } else { 0 };
        bytes[at] ^= 0xff;
        self.s.handle_bytes(cid, self.now, &mut bytes);
    }

    fn snacks(&mut self, cid: u16) -> Vec<Snack> {
        self.sent(cid)
            .into_iter()
            .filter_map(|p| match p {
                Pdu::Snack(s) => Some(s),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn at_erl_1_a_data_in_with_a_bad_data_digest_is_asked_for_again_with_a_data_snack() {
    let mut h = up_with_digests(1);
    h.s.submit(h.now, read10(0, 12), ConnPick::Any, 1);
    let cmd = h.command(0);
    let part = |n: u8| Bytes::from(vec![n; 2048]);
    let p = data_in(&mut h, cmd.itt, 0, 0, part(1), None);
    h.reply(0, p);
    let p = data_in(&mut h, cmd.itt, 1, 2048, part(2), None);
    h.reply_with_bad_data(0, p);
    let snacks = h.snacks(0);
    assert_eq!(snacks.len(), 1, "{snacks:?}");
    let s = &snacks[0];
    assert_eq!((s.kind, s.itt, s.beg_run, s.run_length), (SnackType::DATA_R2T, cmd.itt, 1, 0));
    // DataSN 2 and the status were on the wire before the SNACK: dropped,
    // as the target sends them again after DataSN 1.
    let statsn = h.conns[0].statsn;
    let p = data_in(&mut h, cmd.itt, 2, 4096, part(3), Some(0));
    h.reply(0, p);
    assert!(h.done().is_empty(), "completed with a hole in its data");
    h.conns[0].statsn = statsn;
    let p = data_in(&mut h, cmd.itt, 1, 2048, part(2), None);
    h.reply(0, p);
    let p = data_in(&mut h, cmd.itt, 2, 4096, part(3), Some(0));
    h.reply(0, p);
    let done = h.done();
    let (1, Ok(Outcome::Scsi(r))) = &done[0] else { panic!("{done:?}") };
    assert!(r.is_good());
    assert_eq!(r.data.to_bytes(), [part(1), part(2), part(3)].concat());
    assert!(h.s.is_up(), "the connection stays");
    let stats = h.s.connection_stats(0).unwrap();
    assert_eq!((stats.digest_errors, stats.data_snacks, stats.statsn_gaps), (1, 1, 0));
}

#[test]
fn at_erl_1_a_retransmission_that_comes_bad_again_is_asked_for_again() {
    let mut h = up_with_digests(1);
    h.s.submit(h.now, read10(0, 4), ConnPick::Any, 1);
    let cmd = h.command(0);
    let statsn = h.conns[0].statsn;
    let p = data_in(&mut h, cmd.itt, 0, 0, Bytes::from(vec![5u8; 2048]), Some(0));
    h.reply_with_bad_data(0, p.clone());
    h.reply_with_bad_data(0, p);
    let snacks = h.snacks(0);
    assert_eq!(snacks.iter().map(|s| s.beg_run).collect::<Vec<_>>(), vec![0, 0]);
    h.conns[0].statsn = statsn;
    let p = data_in(&mut h, cmd.itt, 0, 0, Bytes::from(vec![5u8; 2048]), Some(0));
    h.reply(0, p);
    let done = h.done();
    let (1, Ok(Outcome::Scsi(r))) = &done[0] else { panic!("{done:?}") };
    assert_eq!(r.data.to_bytes(), vec![5u8; 2048]);
}

#[test]
fn at_erl_0_a_bad_data_digest_fails_the_connection() {
    let mut h = up_with_digests(0);
    h.s.submit(h.now, read10(0, 4), ConnPick::Any, 1);
    let cmd = h.command(0);
    let p = data_in(&mut h, cmd.itt, 0, 0, Bytes::from(vec![5u8; 2048]), Some(0));
    h.reply_with_bad_data(0, p);
    assert!(h.snacks(0).is_empty());
    let evs = h.events();
    assert!(
        evs.iter().any(|e| matches!(e, Event::State(SessionEvent::ConnectionDown { reason: ConnectionFailure::Protocol(m), .. }) if m.contains("data digest error"))),
        "{evs:?}"
    );
}

#[test]
fn at_erl_1_a_scsi_response_while_data_is_asked_for_again_fails_the_connection() {
    let mut h = up_with_digests(1);
    h.s.submit(h.now, read10(0, 8), ConnPick::Any, 1);
    let cmd = h.command(0);
    let p = data_in(&mut h, cmd.itt, 0, 0, Bytes::from(vec![5u8; 2048]), None);
    h.reply_with_bad_data(0, p);
    h.scsi_response(0, cmd.itt, 0, Bytes::new());
    let evs = h.events();
    assert!(!evs.iter().any(|e| matches!(e, Event::TaskDone { .. })), "completed without its data: {evs:?}");
    assert!(
        evs.iter().any(|e| matches!(e, Event::State(SessionEvent::ConnectionDown { reason: ConnectionFailure::Protocol(m), .. }) if m.contains("asked for again"))),
        "{evs:?}"
    );
}

#[test]
fn at_erl_1_a_data_in_asking_for_acknowledgement_gets_a_data_ack() {
    let mut h = up_with_digests(1);
    h.s.submit(h.now, read10(0, 8), ConnPick::Any, 1);
    let cmd = h.command(0);
    let Pdu::DataIn(mut d) = data_in(&mut h, cmd.itt, 0, 0, Bytes::from(vec![5u8; 2048]), None) else { panic!() };
    d.ack = true;
    d.ttt = 0x77;
    h.reply(0, Pdu::DataIn(d));
    let snacks = h.snacks(0);
    assert_eq!(snacks.len(), 1, "{snacks:?}");
    let s = &snacks[0];
    assert_eq!((s.kind, s.itt, s.ttt, s.beg_run), (SnackType::DATA_ACK, RESERVED_TAG, 0x77, 1));
}

/// A Reject for `pdu` with `reason`, from the target on CID 0.
fn reject(h: &mut Harness, pdu: &Pdu, reason: RejectReason) -> Pdu {
    let statsn = h.next_statsn(0);
    Pdu::Reject(Reject {
        reason,
        statsn,
        exp_cmdsn: h.exp_cmdsn,
        max_cmdsn: h.max_cmdsn(),
        datasn: 0,
        data: Bytes::copy_from_slice(&pdu.encode().bhs.0),
    })
}

#[test]
fn at_erl_1_a_command_rejected_for_its_immediate_data_digest_is_retried_with_its_itt_and_cmdsn() {
    let mut h = up_with_digests(1);
    h.s.submit(h.now, write10(0, Bytes::from(vec![9u8; 1024])), ConnPick::Any, 1);
    let first = h.sent(0);
    let Pdu::ScsiCommand(cmd) = &first[0] else { panic!("{first:?}") };
    assert_eq!(cmd.data.len(), 1024, "immediate data");
    let rej = reject(&mut h, &first[0], RejectReason::DATA_DIGEST_ERROR);
    h.reply(0, rej);
    let again = h.sent(0);
    let Pdu::ScsiCommand(retry) = &again[0] else { panic!("{again:?}") };
    assert_eq!(again.len(), 1);
    // The same command (ITT, CmdSN, data); only ExpStatSN moved on, past
    // the Reject's StatSN.
    assert_eq!(ScsiCommand { exp_statsn: cmd.exp_statsn, ..retry.clone() }, *cmd);
    assert_eq!(retry.exp_statsn, cmd.exp_statsn.wrapping_add(1));
    assert!(h.done().is_empty());
    h.scsi_response(0, cmd.itt, 0, Bytes::new());
    assert!(matches!(&h.done()[..], [(1, Ok(Outcome::Scsi(r)))] if r.is_good()));
    assert_eq!(h.s.connection_stats(0).unwrap().command_retries, 1);
}

/// A session at `erl` whose write's Data-Out the target rejects for its
/// data digest.
fn data_out_rejected_for_its_digest(erl: u8) -> Harness {
    let mut h = up_with_digests(erl);
    h.s.submit(h.now, write10(0, Bytes::from(vec![9u8; 1024])), ConnPick::Any, 1);
    let cmd = h.command(0);
    let out = Pdu::DataOut(DataOut {
        final_pdu: true,
        lun: 0,
        itt: cmd.itt,
        ttt: 5,
        exp_statsn: 0,
        datasn: 0,
        buffer_offset: 0,
        data: Bytes::from(vec![9u8; 512]),
    });
    let rej = reject(&mut h, &out, RejectReason::DATA_DIGEST_ERROR);
    h.reply(0, rej);
    h
}

#[test]
fn at_erl_1_a_data_out_rejected_for_its_digest_waits_for_the_recovery_r2t() {
    let mut h = data_out_rejected_for_its_digest(1);
    assert!(h.s.is_up() && h.done().is_empty(), "the task waits");
    assert_eq!(h.s.connection_stats(0).unwrap().data_out_rejects, 1);
}

#[test]
fn at_erl_0_a_data_out_rejected_for_its_digest_fails_the_connection() {
    let h = data_out_rejected_for_its_digest(0);
    assert!(!h.s.is_up());
}

#[test]
fn at_erl_1_a_data_in_past_a_gap_asks_for_the_missing_ones() {
    let mut h = up_with_digests(1);
    h.s.submit(h.now, read10(0, 8), ConnPick::Any, 1);
    let cmd = h.command(0);
    let part = |n: u8| Bytes::from(vec![n; 2048]);
    // DataSN 0 never arrives; DataSN 1 (with the status) does.
    let statsn = h.conns[0].statsn;
    let p = data_in(&mut h, cmd.itt, 1, 2048, part(2), Some(0));
    h.reply(0, p);
    let snacks = h.snacks(0);
    assert_eq!(snacks.iter().map(|s| (s.itt, s.beg_run, s.run_length)).collect::<Vec<_>>(), vec![(cmd.itt, 0, 0)]);
    assert!(h.done().is_empty());
    h.conns[0].statsn = statsn;
    let p = data_in(&mut h, cmd.itt, 0, 0, part(1), None);
    h.reply(0, p);
    let p = data_in(&mut h, cmd.itt, 1, 2048, part(2), Some(0));
    h.reply(0, p);
    let done = h.done();
    let (1, Ok(Outcome::Scsi(r))) = &done[0] else { panic!("{done:?}") };
    assert_eq!(r.data.to_bytes(), [part(1), part(2)].concat());
    assert!(h.s.is_up());
}

#[test]
fn at_erl_1_a_data_in_with_a_bad_header_is_skipped_and_asked_for_again() {
    let mut h = up_with_digests(1);
    h.s.submit(h.now, read10(0, 12), ConnPick::Any, 1);
    let cmd = h.command(0);
    let part = |n: u8| Bytes::from(vec![n; 2048]);
    let mut wire = BytesMut::new();
    for (sn, status) in [(0u32, None), (1, None), (2, Some(0))] {
        let p = data_in(&mut h, cmd.itt, sn, sn * 2048, part(sn as u8), status);
        let c = &mut h.conns[0];
        c.tx.push(&p.encode(), &c.framing);
        wire.extend_from_slice(&c.tx.take_all());
    }
    // DataSN 1's header is hit (its TTT, byte 20 of the second PDU).
    let one = BHS_LEN + 4 + 2048 + 4;
    wire[one + 20] ^= 0xff;
    h.s.handle_bytes(0, h.now, &mut wire);
    assert!(h.s.is_up(), "the connection stays");
    let snacks = h.snacks(0);
    assert_eq!(snacks.iter().map(|s| s.beg_run).collect::<Vec<_>>(), vec![1]);
    let stats = h.s.connection_stats(0).unwrap();
    assert_eq!((stats.digest_errors, stats.header_digest_skips, stats.data_snacks), (1, 1, 1));
    assert!(h.done().is_empty());
}

#[test]
fn at_erl_0_a_bad_header_fails_the_connection() {
    let mut h = up_with_digests(0);
    h.s.submit(h.now, read10(0, 4), ConnPick::Any, 1);
    let cmd = h.command(0);
    let p = data_in(&mut h, cmd.itt, 0, 0, Bytes::from(vec![5u8; 2048]), Some(0));
    let c = &mut h.conns[0];
    c.tx.push(&p.encode(), &c.framing);
    let mut wire = c.tx.take_all();
    wire[20] ^= 0xff;
    h.s.handle_bytes(0, h.now, &mut wire);
    assert!(!h.s.is_up());
}

#[test]
fn a_response_counting_more_data_in_than_arrived_fails_the_connection_rather_than_a_short_read() {
    let mut h = Harness::up(cfg(1));
    h.s.submit(h.now, read10(0, 8), ConnPick::Any, 1);
    let cmd = h.command(0);
    let p = data_in(&mut h, cmd.itt, 0, 0, Bytes::from(vec![1u8; 2048]), None);
    h.reply(0, p);
    // DataSN 1 is lost; the response says two were sent.
    h.scsi_response_counting(0, cmd.itt, 0, Bytes::new(), 2);
    let evs = h.events();
    assert!(!evs.iter().any(|e| matches!(e, Event::TaskDone { .. })), "completed short: {evs:?}");
    assert!(
        evs.iter().any(|e| matches!(e, Event::State(SessionEvent::ConnectionDown { reason: ConnectionFailure::Protocol(m), .. }) if m.contains("counts 2 Data-In, 1 arrived"))),
        "{evs:?}"
    );
}

#[test]
fn a_response_counting_every_data_in_that_arrived_completes_the_read() {
    let mut h = Harness::up(cfg(1));
    h.s.submit(h.now, read10(0, 4), ConnPick::Any, 1);
    let cmd = h.command(0);
    let p = data_in(&mut h, cmd.itt, 0, 0, Bytes::from(vec![1u8; 2048]), None);
    h.reply(0, p);
    h.scsi_response_counting(0, cmd.itt, 0, Bytes::new(), 1);
    assert!(matches!(&h.done()[..], [(1, Ok(Outcome::Scsi(r)))] if r.data.len() == 2048));
}

#[test]
fn at_erl_1_a_status_that_never_arrived_is_asked_for_with_a_status_snack() {
    let mut h = up_with_digests(1);
    h.s.submit(h.now, write10(0, Bytes::from(vec![9u8; 512])), ConnPick::Any, 1);
    let first = h.command(0);
    h.s.submit(h.now, write10(8, Bytes::from(vec![8u8; 512])), ConnPick::Any, 2);
    let second = h.command(0);
    // The first write's response is lost on the way (StatSN s); the
    // second's (s + 1) arrives.
    let lost = h.next_statsn(0);
    h.scsi_response(0, second.itt, 0, Bytes::new());
    assert!(matches!(&h.done()[..], [(2, Ok(_))]));
    let snacks = h.snacks(0);
    assert_eq!(snacks.len(), 1, "{snacks:?}");
    let s = &snacks[0];
    assert_eq!((s.kind, s.itt, s.beg_run, s.run_length), (SnackType::STATUS, RESERVED_TAG, lost, 1));
    assert_eq!(s.exp_statsn, lost, "ExpStatSN stays at the hole");
    // The target sends it again with its StatSN.
    let keep = h.conns[0].statsn;
    h.conns[0].statsn = lost;
    h.scsi_response(0, first.itt, 0, Bytes::new());
    h.conns[0].statsn = keep;
    assert!(matches!(&h.done()[..], [(1, Ok(_))]));
    // The hole is filled: ExpStatSN is past both.
    h.s.nop(h.now, Bytes::new(), 3);
    let pdus = h.sent(0);
    let Pdu::NopOut(n) = &pdus[0] else { panic!("{pdus:?}") };
    assert_eq!(n.exp_statsn, lost.wrapping_add(2));
    let stats = h.s.connection_stats(0).unwrap();
    assert_eq!((stats.status_snacks, stats.statsn_gaps), (1, 1));
    assert!(h.s.is_up());
}
