//! The fault-injecting proxy (`mpio_testbed::proxy`) between mpio's
//! initiator and a real tgtd: it frames PDUs as the login negotiated them
//! (its PDU counts match the initiator's), and each fault does on the wire
//! what it says: a flipped byte is a digest error with digests and the
//! changed byte without them, a dropped Data-In, a truncated PDU and a
//! reset end the connection and the session sends the command again on
//! the reinstated session (ERL 0), a delay delays, a blackhole holds and
//! then delivers. Every test reads its data back after the fault (issue
//! 10, section 4).

use std::time::{Duration, Instant};

use bytes::Bytes;
use mpio_testbed::proxy::{Action, Digests, Direction, Fault, Flow, Proxy, opcode};
use mpio_testbed::require_root;
use mpio_testbed::tgtd::{LunSpec, TargetSpec, Tgtd};
use mpio_tests::session::within;
use mpio_tests::*;
use mpio_transport::text::DigestPref;
use mpio_transport::{ConnectionFailure, SessionConfig, SessionEvent, SessionHandle};
use tokio::sync::broadcast::Receiver;

const CONNECT: Duration = Duration::from_secs(10);
const RECOVERY: Duration = Duration::from_secs(30);
const FIRED: Duration = Duration::from_secs(30);
/// Bound of one command: a proxy that lost its framing forwards nothing,
/// and the test then fails here instead of hanging.
const COMMAND: Duration = Duration::from_secs(60);

async fn write(s: &SessionHandle, offset: u64, data: Bytes) {
    within(COMMAND, &format!("write at {offset}"), write_good(s, offset, data)).await;
}

async fn read(s: &SessionHandle, offset: u64, len: usize) -> Bytes {
    within(COMMAND, &format!("read at {offset}"), read_good(s, offset, len)).await
}

/// A tgtd with one 16 MiB LU, its digests `digests` ("None", "CRC32C"),
/// and a proxy to its portal.
fn target(digests: &str) -> (Tgtd, Proxy) {
    let tgtd = Tgtd::builder()
        .target(TargetSpec::new("proxied").lun(LunSpec::file(16 << 20)).digests(digests))
        .start()
        .expect("tgtd");
    let proxy = Proxy::start(tgtd.portal(0)).expect("proxy");
    (tgtd, proxy)
}

/// A session through the proxy offering `header` and `data` digests, with
/// no NOP-Outs (the tests count and hold PDUs).
async fn session(
    tgtd: &Tgtd,
    proxy: &Proxy,
    header: DigestPref,
    data: DigestPref,
) -> (SessionHandle, Receiver<SessionEvent>) {
    let mut cfg = SessionConfig::new(
        INITIATOR.parse().expect("initiator name"),
        tgtd.iqn(1).parse().expect("target name"),
        proxy.addr().into(),
    );
    cfg.timeouts.connect = Duration::from_secs(5);
    cfg.timeouts.login = Duration::from_secs(5);
    cfg.timeouts.nop_interval = None;
    cfg.offer.header_digest = header;
    cfg.offer.data_digest = data;
    let (s, ev) = SessionHandle::spawn_watched(cfg).expect("session config");
    s.wait_up(CONNECT).await.expect("session up through the proxy");
    within(COMMAND, "LU ready", ready(&s)).await;
    (s, ev)
}

/// Waits for the connection to go down for a reason `what` names, and for
/// the session to be reinstated.
async fn down_and_reinstated(ev: &mut Receiver<SessionEvent>, what: &str) -> ConnectionFailure {
    let down = wait_event(ev, RECOVERY, "connection down", |e| matches!(e, SessionEvent::ConnectionDown { .. })).await;
    let SessionEvent::ConnectionDown { reason, .. } = down else { unreachable!() };
    assert!(reason.to_string().contains(what), "connection down for {reason}, expected {what:?}");
    let up = wait_event(ev, RECOVERY, "session reinstated", |e| matches!(e, SessionEvent::SessionUp { .. })).await;
    assert!(matches!(up, SessionEvent::SessionUp { reinstated: true, .. }), "{up:?}");
    reason
}

/// A read of `len` bytes at `offset`, run while the test works the proxy.
fn spawn_read(s: &SessionHandle, offset: u64, len: usize) -> tokio::task::JoinHandle<Bytes> {
    let s = s.clone();
    tokio::spawn(async move { read(&s, offset, len).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdus_are_framed_with_the_digests_the_login_negotiated() {
    require_root!();
    for (digests, offer, want) in [
        ("CRC32C", DigestPref::Crc32c, Digests { header: true, data: true }),
        ("None", DigestPref::None, Digests::default()),
    ] {
        let (tgtd, proxy) = target(digests);
        let (s, _ev) = session(&tgtd, &proxy, offer, offer).await;
        assert_eq!(proxy.digests(), vec![want], "target digests {digests}");
        let mut offset = 0;
        for len in [512usize, 8192, 65536, 1 << 20, 3 << 20] {
            let data = pattern(offset, len, 3);
            write(&s, offset, data.clone()).await;
            assert_data(&read(&s, offset, len).await, &data, &format!("{len} bytes through the proxy"));
            offset += len as u64;
        }
        // Every PDU counted once, login included: a PDU framed with a
        // wrong length would be counted as several, or merged.
        let stats = s.snapshot().await.expect("snapshot").connections[0].stats;
        assert_eq!(proxy.pdus(Direction::ToInitiator), stats.pdus_received, "target digests {digests}");
        assert_eq!(proxy.pdus(Direction::ToTarget), stats.pdus_sent, "target digests {digests}");
        assert_eq!(stats.digest_errors, 0);
        within(COMMAND, "logout", s.logout()).await.expect("logout");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_in_corrupted_under_data_digests_is_a_digest_error_and_the_read_is_sent_again() {
    require_root!();
    let (tgtd, proxy) = target("CRC32C");
    let (s, mut ev) = session(&tgtd, &proxy, DigestPref::None, DigestPref::Crc32c).await;
    let data = pattern(0, 256 << 10, 11);
    write(&s, 0, data.clone()).await;
    // The second Data-In of the read: the first has already landed.
    proxy.arm(Fault::nth(2, Direction::ToInitiator, Some(opcode::DATA_IN), Action::CorruptData(100)));
    let read = spawn_read(&s, 0, data.len());
    down_and_reinstated(&mut ev, "data digest error on SCSI Data-In").await;
    proxy.wait_fired(1, FIRED).expect("the fault fired");
    assert_data(&read.await.expect("read"), &data, "read sent again after the digest error");
    within(COMMAND, "logout", s.logout()).await.expect("logout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_corrupted_under_header_digests_is_a_digest_error_and_the_write_is_sent_again() {
    require_root!();
    let (tgtd, proxy) = target("CRC32C");
    let (s, mut ev) = session(&tgtd, &proxy, DigestPref::Crc32c, DigestPref::None).await;
    // The write's SCSI Response gets its ITT (bytes 16-19) changed.
    proxy.arm(Fault::nth(1, Direction::ToInitiator, Some(opcode::SCSI_RESPONSE), Action::CorruptHeader(17)));
    let data = pattern(1 << 20, 64 << 10, 12);
    let write = {
        let (s, data) = (s.clone(), data.clone());
        tokio::spawn(async move { write(&s, 1 << 20, data).await })
    };
    down_and_reinstated(&mut ev, "header digest error on SCSI Response").await;
    write.await.expect("write sent again after the digest error");
    assert_data(&read(&s, 1 << 20, data.len()).await, &data, "the write");
    within(COMMAND, "logout", s.logout()).await.expect("logout");
}

/// The harness itself: without digests nothing catches the flip, and the
/// read returns the byte changed exactly where the fault was aimed. A
/// verified transfer through a faulty proxy does fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_digests_the_flipped_byte_reaches_the_reader_where_it_was_aimed() {
    require_root!();
    let (tgtd, proxy) = target("None");
    let (s, _ev) = session(&tgtd, &proxy, DigestPref::None, DigestPref::None).await;
    let data = pattern(0, 64 << 10, 13);
    write(&s, 0, data.clone()).await;
    proxy.arm(Fault::nth(1, Direction::ToInitiator, Some(opcode::DATA_IN), Action::CorruptData(1000)));
    let got = read(&s, 0, data.len()).await;
    let differ: Vec<usize> = (0..data.len()).filter(|i| got[*i] != data[*i]).collect();
    assert_eq!(differ, vec![1000], "the bytes that differ");
    assert_eq!(got[1000], data[1000] ^ 0xff);
    assert_eq!(proxy.fired().len(), 1);
    // Only the wire was changed: the LU has what was written.
    assert_data(&read(&s, 0, data.len()).await, &data, "read again");
    within(COMMAND, "logout", s.logout()).await.expect("logout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_data_in_fails_the_connection_and_the_read_is_sent_again() {
    require_root!();
    let (tgtd, proxy) = target("None");
    let (s, mut ev) = session(&tgtd, &proxy, DigestPref::None, DigestPref::None).await;
    let data = pattern(0, 256 << 10, 14);
    write(&s, 0, data.clone()).await;
    proxy.arm(Fault::nth(2, Direction::ToInitiator, Some(opcode::DATA_IN), Action::Drop));
    let read = spawn_read(&s, 0, data.len());
    down_and_reinstated(&mut ev, "DataSN").await;
    proxy.wait_fired(1, FIRED).expect("the fault fired");
    assert_data(&read.await.expect("read"), &data, "read sent again after the lost Data-In");
    within(COMMAND, "logout", s.logout()).await.expect("logout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_pdu_resets_the_connection_and_the_write_is_sent_again() {
    require_root!();
    let (tgtd, proxy) = target("None");
    let (s, mut ev) = session(&tgtd, &proxy, DigestPref::None, DigestPref::None).await;
    // The write's command PDU stops in the middle of its BHS.
    proxy.arm(Fault::nth(1, Direction::ToTarget, Some(opcode::SCSI_COMMAND), Action::Truncate(30)));
    let data = pattern(2 << 20, 128 << 10, 15);
    let write = {
        let (s, data) = (s.clone(), data.clone());
        tokio::spawn(async move { write(&s, 2 << 20, data).await })
    };
    down_and_reinstated(&mut ev, "reset").await;
    write.await.expect("write sent again after the reset");
    assert_data(&read(&s, 2 << 20, data.len()).await, &data, "the write");
    assert_eq!(proxy.accepted(), 2, "one reconnection");
    within(COMMAND, "logout", s.logout()).await.expect("logout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_sends_a_rst_and_the_session_is_reinstated() {
    require_root!();
    let (tgtd, proxy) = target("None");
    let (s, mut ev) = session(&tgtd, &proxy, DigestPref::None, DigestPref::None).await;
    let data = pattern(0, 64 << 10, 16);
    write(&s, 0, data.clone()).await;
    proxy.reset();
    // A RST, not a FIN ("closed by the target").
    down_and_reinstated(&mut ev, "reset").await;
    assert_data(&read(&s, 0, data.len()).await, &data, "read after the reset");
    within(COMMAND, "logout", s.logout()).await.expect("logout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_delays_each_pdu_and_a_blackhole_holds_them_until_it_is_lifted() {
    require_root!();
    let (tgtd, proxy) = target("None");
    let (s, mut ev) = session(&tgtd, &proxy, DigestPref::None, DigestPref::None).await;
    let data = pattern(0, 64 << 10, 17);
    write(&s, 0, data.clone()).await;

    let delay = Duration::from_millis(300);
    proxy.set_flow(Direction::ToTarget, Flow::Delay(delay));
    let t0 = Instant::now();
    assert_data(&read(&s, 0, data.len()).await, &data, "delayed read");
    // A lower bound only: load can make it longer, never shorter.
    assert!(t0.elapsed() >= delay, "the read took {:?}, less than the delay", t0.elapsed());
    proxy.set_flow(Direction::ToTarget, Flow::Pass);

    proxy.set_flow(Direction::ToInitiator, Flow::Blackhole);
    let mut read = spawn_read(&s, 0, data.len());
    let held = tokio::time::timeout(Duration::from_millis(500), &mut read).await;
    assert!(held.is_err(), "the read completed through a blackhole");
    proxy.set_flow(Direction::ToInitiator, Flow::Pass);
    assert_data(&read.await.expect("read"), &data, "read released from the blackhole");
    // Held, not lost: the connection never went down.
    while let Ok(e) = ev.try_recv() {
        assert!(!matches!(e, SessionEvent::ConnectionDown { .. } | SessionEvent::SessionDown { .. }), "{e:?}");
    }
    assert_eq!(proxy.accepted(), 1);
    within(COMMAND, "logout", s.logout()).await.expect("logout");
}
