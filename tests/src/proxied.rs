//! Scenarios through the fault-injecting proxy (`mpio_testbed::proxy`),
//! written once for every target fixture: each takes the LU as the
//! fixture offers it ([`SharedLu`]), puts a proxy in front of its first
//! portal and logs mpio's initiator in through it. The proxy frames PDUs
//! as the login negotiated them (its PDU counts match the initiator's),
//! and each fault does on the wire what it says: a flipped byte is a
//! digest error with digests and the changed byte without them, a dropped
//! Data-In, a truncated PDU and a reset end the connection and the
//! session sends the command again on the reinstated session (ERL 0), a
//! delay delays, a blackhole holds and then delivers. Every scenario
//! reads its data back after the fault (issue 10, section 4).

use std::time::{Duration, Instant};

use bytes::Bytes;
use mpio_testbed::proxy::{Action, Digests, Direction, Fault, Flow, Proxy, opcode};
use mpio_transport::text::DigestPref;
use mpio_transport::{ConnectionFailure, SessionEvent, SessionHandle};
use tokio::sync::broadcast::Receiver;

use crate::pr::SharedLu;
use crate::session::within;
use crate::{INITIATOR, assert_data, pattern, read_good_lun, ready_lun, wait_event, write_good_lun};

const CONNECT: Duration = Duration::from_secs(10);
const RECOVERY: Duration = Duration::from_secs(30);
const FIRED: Duration = Duration::from_secs(30);
/// Bound of one command: a proxy that lost its framing forwards nothing,
/// and the scenario then fails here instead of hanging.
const COMMAND: Duration = Duration::from_secs(60);

/// A session to `lu` through a proxy to its first portal, offering
/// `header` and `data` digests, with no NOP-Outs (the scenarios count and
/// hold PDUs).
struct Proxied {
    proxy: Proxy,
    s: SessionHandle,
    ev: Receiver<SessionEvent>,
    lu: SharedLu,
}

impl Proxied {
    async fn new(lu: &SharedLu, header: DigestPref, data: DigestPref) -> Proxied {
        Proxied::at_erl(lu, header, data, 0).await
    }

    /// The same, offering ErrorRecoveryLevel `erl`.
    async fn at_erl(lu: &SharedLu, header: DigestPref, data: DigestPref, erl: u8) -> Proxied {
        let proxy = Proxy::start(lu.portals[0]).expect("proxy");
        let mut through = lu.clone();
        through.portals = vec![proxy.addr()];
        let mut cfg = through.session_config(INITIATOR, 0);
        cfg.timeouts.nop_interval = None;
        cfg.offer.header_digest = header;
        cfg.offer.data_digest = data;
        cfg.offer.error_recovery_level = erl;
        let (s, ev) = SessionHandle::spawn_watched(cfg).expect("session config");
        s.wait_up(CONNECT).await.expect("session up through the proxy");
        within(COMMAND, "LU ready", ready_lun(&s, lu.lun)).await;
        Proxied { proxy, s, ev, lu: lu.clone() }
    }

    async fn write(&self, offset: u64, data: Bytes) {
        within(COMMAND, &format!("write at {offset}"), write_good_lun(&self.s, self.lu.lun, offset, data)).await;
    }

    async fn read(&self, offset: u64, len: usize) -> Bytes {
        within(COMMAND, &format!("read at {offset}"), read_good_lun(&self.s, self.lu.lun, offset, len)).await
    }

    /// A read run while the scenario works the proxy.
    fn spawn_read(&self, offset: u64, len: usize) -> tokio::task::JoinHandle<Bytes> {
        let (s, lun) = (self.s.clone(), self.lu.lun);
        tokio::spawn(async move { within(COMMAND, "read", read_good_lun(&s, lun, offset, len)).await })
    }

    /// A write run while the scenario works the proxy.
    fn spawn_write(&self, offset: u64, data: Bytes) -> tokio::task::JoinHandle<()> {
        let (s, lun) = (self.s.clone(), self.lu.lun);
        tokio::spawn(async move { within(COMMAND, "write", write_good_lun(&s, lun, offset, data)).await })
    }

    /// Waits for the connection to go down for a reason `what` names, and
    /// for the session to be reinstated.
    async fn down_and_reinstated(&mut self, what: &str) -> ConnectionFailure {
        let down =
            wait_event(&mut self.ev, RECOVERY, "connection down", |e| matches!(e, SessionEvent::ConnectionDown { .. }))
                .await;
        let SessionEvent::ConnectionDown { reason, .. } = down else { unreachable!() };
        assert!(reason.to_string().contains(what), "connection down for {reason}, expected {what:?}");
        let up =
            wait_event(&mut self.ev, RECOVERY, "session reinstated", |e| matches!(e, SessionEvent::SessionUp { .. }))
                .await;
        assert!(matches!(up, SessionEvent::SessionUp { reinstated: true, .. }), "{up:?}");
        reason
    }

    /// Panics if a connection went down since the session came up.
    fn no_connection_lost(&mut self) {
        while let Ok(e) = self.ev.try_recv() {
            assert!(!matches!(e, SessionEvent::ConnectionDown { .. } | SessionEvent::SessionDown { .. }), "{e:?}");
        }
        assert_eq!(self.proxy.accepted(), 1, "a reconnection");
    }

    async fn logout(self) {
        within(COMMAND, "logout", self.s.logout()).await.expect("logout");
    }
}

/// Offering `offer` for both digests, the proxy frames with `want`: after
/// transfers of 512 B to 3 MiB, its PDU counts in each direction equal
/// the initiator's (a PDU framed with a wrong length would be counted as
/// several, or merged), login included.
pub async fn pdus_are_framed_with_the_digests_the_login_negotiated(lu: &SharedLu, offer: DigestPref, want: Digests) {
    let p = Proxied::new(lu, offer, offer).await;
    assert_eq!(p.proxy.digests(), vec![want], "offered {offer:?}");
    let mut offset = 0;
    for len in [512usize, 8192, 65536, 1 << 20, 3 << 20] {
        let data = pattern(offset, len, 3);
        p.write(offset, data.clone()).await;
        assert_data(&p.read(offset, len).await, &data, &format!("{len} bytes through the proxy"));
        offset += len as u64;
    }
    let stats = p.s.snapshot().await.expect("snapshot").connections[0].stats;
    assert_eq!(p.proxy.pdus(Direction::ToInitiator), stats.pdus_received, "offered {offer:?}");
    assert_eq!(p.proxy.pdus(Direction::ToTarget), stats.pdus_sent, "offered {offer:?}");
    assert_eq!(stats.digest_errors, 0);
    p.logout().await;
}

/// The second Data-In of a read gets a data byte flipped under data
/// digests: a data digest error, and the read is sent again.
pub async fn a_data_in_corrupted_under_data_digests_is_a_digest_error_and_the_read_is_sent_again(lu: &SharedLu) {
    let mut p = Proxied::new(lu, DigestPref::None, DigestPref::Crc32c).await;
    let data = pattern(0, 256 << 10, 11);
    p.write(0, data.clone()).await;
    // The second Data-In of the read: the first has already landed.
    p.proxy.arm(Fault::nth(2, Direction::ToInitiator, Some(opcode::DATA_IN), Action::CorruptData(100)));
    let read = p.spawn_read(0, data.len());
    p.down_and_reinstated("data digest error on SCSI Data-In").await;
    p.proxy.wait_fired(1, FIRED).expect("the fault fired");
    assert_data(&read.await.expect("read"), &data, "read sent again after the digest error");
    p.logout().await;
}

/// A write's SCSI Response gets its ITT changed under header digests: a
/// header digest error, and the write is sent again.
pub async fn a_header_corrupted_under_header_digests_is_a_digest_error_and_the_write_is_sent_again(lu: &SharedLu) {
    let mut p = Proxied::new(lu, DigestPref::Crc32c, DigestPref::None).await;
    // Byte 17 is in the ITT (bytes 16-19).
    p.proxy.arm(Fault::nth(1, Direction::ToInitiator, Some(opcode::SCSI_RESPONSE), Action::CorruptHeader(17)));
    let data = pattern(1 << 20, 64 << 10, 12);
    let write = p.spawn_write(1 << 20, data.clone());
    p.down_and_reinstated("header digest error on SCSI Response").await;
    write.await.expect("write sent again after the digest error");
    assert_data(&p.read(1 << 20, data.len()).await, &data, "the write");
    p.logout().await;
}

/// The harness itself: without digests nothing catches the flip, and the
/// read returns the byte changed exactly where the fault was aimed. A
/// verified transfer through a faulty proxy does fail.
pub async fn without_digests_the_flipped_byte_reaches_the_reader_where_it_was_aimed(lu: &SharedLu) {
    let p = Proxied::new(lu, DigestPref::None, DigestPref::None).await;
    let data = pattern(0, 64 << 10, 13);
    p.write(0, data.clone()).await;
    p.proxy.arm(Fault::nth(1, Direction::ToInitiator, Some(opcode::DATA_IN), Action::CorruptData(1000)));
    let got = p.read(0, data.len()).await;
    let differ: Vec<usize> = (0..data.len()).filter(|i| got[*i] != data[*i]).collect();
    assert_eq!(differ, vec![1000], "the bytes that differ");
    assert_eq!(got[1000], data[1000] ^ 0xff);
    assert_eq!(p.proxy.fired().len(), 1);
    // Only the wire was changed: the LU has what was written.
    assert_data(&p.read(0, data.len()).await, &data, "read again");
    p.logout().await;
}

/// The second Data-In of a read never arrives: the DataSN gap fails the
/// connection, and the read is sent again.
pub async fn a_lost_data_in_fails_the_connection_and_the_read_is_sent_again(lu: &SharedLu) {
    let mut p = Proxied::new(lu, DigestPref::None, DigestPref::None).await;
    let data = pattern(0, 256 << 10, 14);
    p.write(0, data.clone()).await;
    p.proxy.arm(Fault::nth(2, Direction::ToInitiator, Some(opcode::DATA_IN), Action::Drop));
    let read = p.spawn_read(0, data.len());
    p.down_and_reinstated("DataSN").await;
    p.proxy.wait_fired(1, FIRED).expect("the fault fired");
    assert_data(&read.await.expect("read"), &data, "read sent again after the lost Data-In");
    p.logout().await;
}

/// A write's command PDU stops in the middle of its BHS and both sides get
/// a RST: the write is sent again on a new connection.
pub async fn a_truncated_pdu_resets_the_connection_and_the_write_is_sent_again(lu: &SharedLu) {
    let mut p = Proxied::new(lu, DigestPref::None, DigestPref::None).await;
    p.proxy.arm(Fault::nth(1, Direction::ToTarget, Some(opcode::SCSI_COMMAND), Action::Truncate(30)));
    let data = pattern(2 << 20, 128 << 10, 15);
    let write = p.spawn_write(2 << 20, data.clone());
    p.down_and_reinstated("reset").await;
    write.await.expect("write sent again after the reset");
    assert_data(&p.read(2 << 20, data.len()).await, &data, "the write");
    assert_eq!(p.proxy.accepted(), 2, "one reconnection");
    p.logout().await;
}

/// [`Proxy::reset`] sends a RST (not a FIN: "closed by the target"), and
/// the session is reinstated.
pub async fn reset_sends_a_rst_and_the_session_is_reinstated(lu: &SharedLu) {
    let mut p = Proxied::new(lu, DigestPref::None, DigestPref::None).await;
    let data = pattern(0, 64 << 10, 16);
    p.write(0, data.clone()).await;
    p.proxy.reset();
    p.down_and_reinstated("reset").await;
    assert_data(&p.read(0, data.len()).await, &data, "read after the reset");
    p.logout().await;
}

/// A delay delays each PDU; a blackhole holds a read's answer, delivers it
/// when lifted, and loses no connection.
pub async fn a_delay_delays_each_pdu_and_a_blackhole_holds_them_until_it_is_lifted(lu: &SharedLu) {
    let mut p = Proxied::new(lu, DigestPref::None, DigestPref::None).await;
    let data = pattern(0, 64 << 10, 17);
    p.write(0, data.clone()).await;

    let delay = Duration::from_millis(300);
    p.proxy.set_flow(Direction::ToTarget, Flow::Delay(delay));
    let t0 = Instant::now();
    assert_data(&p.read(0, data.len()).await, &data, "delayed read");
    // A lower bound only: load can make it longer, never shorter.
    assert!(t0.elapsed() >= delay, "the read took {:?}, less than the delay", t0.elapsed());
    p.proxy.set_flow(Direction::ToTarget, Flow::Pass);

    p.proxy.set_flow(Direction::ToInitiator, Flow::Blackhole);
    let mut read = p.spawn_read(0, data.len());
    let held = tokio::time::timeout(Duration::from_millis(500), &mut read).await;
    assert!(held.is_err(), "the read completed through a blackhole");
    p.proxy.set_flow(Direction::ToInitiator, Flow::Pass);
    assert_data(&read.await.expect("read"), &data, "read released from the blackhole");
    // Held, not lost: the connection never went down.
    p.no_connection_lost();
    p.logout().await;
}

/// At ErrorRecoveryLevel 1 (the target must allow it), a Data-In with a
/// flipped data byte is asked for again with a Data SNACK: the read gets
/// the right data, the connection stays, and the counters say what
/// happened. Both a Data-In in the middle of the read and its last, which
/// carries the status, are corrupted in turn.
pub async fn at_erl_1_a_data_in_with_a_bad_digest_is_asked_for_again_on_the_same_connection(lu: &SharedLu) {
    let mut p = Proxied::at_erl(lu, DigestPref::None, DigestPref::Crc32c, 1).await;
    let snap = p.s.snapshot().await.expect("snapshot");
    assert_eq!(snap.params.error_recovery_level, 1, "negotiated ERL: {:?}", snap.params);
    // 256 KiB in Data-In of our MaxRecvDataSegmentLength (64 KiB): four,
    // the fourth with the status.
    let data = pattern(0, 256 << 10, 18);
    p.write(0, data.clone()).await;
    for (n, nth) in [(1, 2), (2, 4)] {
        p.proxy.arm(Fault::nth(nth, Direction::ToInitiator, Some(opcode::DATA_IN), Action::CorruptData(7)));
        assert_data(&p.read(0, data.len()).await, &data, &format!("read with Data-In {nth} corrupted"));
        p.proxy.wait_fired(n, FIRED).expect("the fault fired");
        let stats = p.s.snapshot().await.expect("snapshot").connections[0].stats;
        assert_eq!((stats.digest_errors, stats.data_snacks), (n as u64, n as u64), "after Data-In {nth}");
    }
    p.no_connection_lost();
    p.logout().await;
}

/// At ErrorRecoveryLevel 1, a Data-Out with a flipped data byte is dropped
/// by the target, which asks for that data again with a recovery R2T: the
/// write completes GOOD on the same connection and reads back whole.
pub async fn at_erl_1_a_data_out_with_a_bad_digest_is_sent_again_for_the_target_s_recovery_r2t(lu: &SharedLu) {
    let mut p = Proxied::at_erl(lu, DigestPref::None, DigestPref::Crc32c, 1).await;
    let data = pattern(4 << 20, 256 << 10, 19);
    p.proxy.arm(Fault::nth(1, Direction::ToTarget, Some(opcode::DATA_OUT), Action::CorruptData(9)));
    p.write(4 << 20, data.clone()).await;
    p.proxy.wait_fired(1, FIRED).expect("the fault fired");
    assert_data(&p.read(4 << 20, data.len()).await, &data, "the write");
    // And a command whose immediate data (the first burst) was bad is
    // retried: the target never took it.
    p.proxy.arm(Fault::nth(1, Direction::ToTarget, Some(opcode::SCSI_COMMAND), Action::CorruptData(3)));
    let again = pattern(5 << 20, 32 << 10, 20);
    p.write(5 << 20, again.clone()).await;
    p.proxy.wait_fired(2, FIRED).expect("the fault fired");
    assert_data(&p.read(5 << 20, again.len()).await, &again, "the retried write");
    let stats = p.s.snapshot().await.expect("snapshot").connections[0].stats;
    assert_eq!((stats.data_out_rejects, stats.command_retries), (1, 1));
    p.no_connection_lost();
    p.logout().await;
}

/// At ErrorRecoveryLevel 1 with both digests: a Data-In whose header is
/// hit is skipped (the next header proves where it ended), and one that
/// never arrives is noticed by the DataSN gap after it; both are asked for
/// again with a Data SNACK, on the same connection, and the read is whole.
pub async fn at_erl_1_a_data_in_with_a_bad_header_or_lost_is_asked_for_again(lu: &SharedLu) {
    let mut p = Proxied::at_erl(lu, DigestPref::Crc32c, DigestPref::Crc32c, 1).await;
    let data = pattern(8 << 20, 256 << 10, 21);
    p.write(8 << 20, data.clone()).await;
    // Byte 20 is in the TTT: a header digest error that leaves the
    // lengths intact.
    p.proxy.arm(Fault::nth(2, Direction::ToInitiator, Some(opcode::DATA_IN), Action::CorruptHeader(20)));
    assert_data(&p.read(8 << 20, data.len()).await, &data, "read with a Data-In header corrupted");
    p.proxy.wait_fired(1, FIRED).expect("the fault fired");
    let stats = p.s.snapshot().await.expect("snapshot").connections[0].stats;
    assert_eq!((stats.digest_errors, stats.header_digest_skips, stats.data_snacks), (1, 1, 1));
    p.proxy.arm(Fault::nth(3, Direction::ToInitiator, Some(opcode::DATA_IN), Action::Drop));
    assert_data(&p.read(8 << 20, data.len()).await, &data, "read with a Data-In lost");
    p.proxy.wait_fired(2, FIRED).expect("the fault fired");
    let stats = p.s.snapshot().await.expect("snapshot").connections[0].stats;
    assert_eq!((stats.digest_errors, stats.data_snacks), (1, 2));
    p.no_connection_lost();
    p.logout().await;
}

/// At ErrorRecoveryLevel 1, a write's SCSI Response that never arrives is
/// noticed by the StatSN gap the next status shows and asked for with a
/// Status SNACK: both writes complete GOOD on the same connection.
pub async fn at_erl_1_a_lost_status_is_asked_for_with_a_status_snack(lu: &SharedLu) {
    let mut p = Proxied::at_erl(lu, DigestPref::None, DigestPref::None, 1).await;
    let (a, b) = (pattern(12 << 20, 64 << 10, 22), pattern(13 << 20, 64 << 10, 23));
    p.proxy.arm(Fault::nth(1, Direction::ToInitiator, Some(opcode::SCSI_RESPONSE), Action::Drop));
    let first = p.spawn_write(12 << 20, a.clone());
    p.proxy.wait_fired(1, FIRED).expect("the first write's status dropped");
    // The second write's status reveals the hole.
    p.write(13 << 20, b.clone()).await;
    first.await.expect("the first write completes once its status is sent again");
    assert_data(&p.read(12 << 20, a.len()).await, &a, "the first write");
    assert_data(&p.read(13 << 20, b.len()).await, &b, "the second write");
    let stats = p.s.snapshot().await.expect("snapshot").connections[0].stats;
    assert_eq!(stats.status_snacks, 1);
    p.no_connection_lost();
    p.logout().await;
}
