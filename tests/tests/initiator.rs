//! The iSCSI initiator against a real tgtd: logins and authentication,
//! digests, discovery, several sessions, MCS, large verified transfers,
//! and faults (connection reset, target offline, blackhole). Issue 2,
//! section 5. The scenarios LIO runs too are in `mpio_tests::session`
//! (and `tests/tests/lio/session.rs`); what stays here is tgtd's.

use std::time::{Duration, Instant};

use mpio_testbed::require_root;
use mpio_testbed::tgtd::{ConnectionInfo, LunSpec, TargetSpec, TargetState, Tgtd};
use mpio_tests::pr::SharedLu;
use mpio_tests::session::{self, login_error};
use mpio_tests::*;
use mpio_transport::login::LoginError;
use mpio_transport::pdu::{Isid, TmfResponse};
use mpio_transport::text::{Digest, DigestPref};
use mpio_transport::{Auth, ConnPick, ConnectionSpec, SessionEvent, SessionHandle, TaskError};

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_without_authentication_io_and_logout() {
    require_root!();
    let tgtd = Tgtd::builder().target(TargetSpec::new("plain").lun(LunSpec::file(16 << 20))).start().unwrap();
    let s = SessionHandle::connect(session_config(&tgtd, 1, 0), Duration::from_secs(10)).await.unwrap();
    ready(&s).await;
    let data = pattern(0, 64 << 10, 1);
    assert!(s.execute(write_at(0, data.clone())).await.unwrap().is_good());
    let r = s.execute(read_at(0, 64 << 10)).await.unwrap();
    assert_data(&r.data.to_bytes(), &data, "read after recovery");
    let snap = s.snapshot().await.unwrap();
    let c = &snap.connections[0];
    assert!(c.up && snap.tsih != 0);
    assert_eq!(c.peer_addr, Some(tgtd.portal(0)));
    assert_eq!(c.tpgt, Some(1), "the portal group tag tgtd declares in its first login response");
    assert_eq!(c.local_addr.unwrap().ip(), tgtd.portal(0).ip(), "the real source address is reported");
    assert_eq!(tgtd.sessions(1).unwrap().len(), 1);
    s.logout().await.unwrap();
    tgtd.wait_connections(1, "no connection after logout", Duration::from_secs(5), |c| c.is_empty()).unwrap();
    // The data is on the target's disk, where it belongs.
    let on_disk = std::fs::read(tgtd.backing_file(1, 1)).unwrap();
    assert_eq!(&on_disk[..64 << 10], &data[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_chap_and_its_failures() {
    require_root!();
    let tgtd = Tgtd::builder()
        .target(TargetSpec::new("chap").lun(LunSpec::file(4 << 20)).chap("inituser", "initsecret12"))
        .start()
        .unwrap();
    let lu = SharedLu::tgtd(&tgtd, 1, 1);
    let e = session::one_way_chap_and_its_failures(&lu, "inituser", "initsecret12").await;
    // tgtd answers a login without CHAP with CHAP's absence named.
    assert_eq!(e, LoginError::ChapRequired);
    assert!(e.to_string().contains("target requires CHAP authentication"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_chap_and_a_target_with_the_wrong_secret() {
    require_root!();
    let tgtd = Tgtd::builder()
        .target(
            TargetSpec::new("mutual")
                .lun(LunSpec::file(4 << 20))
                .chap("inituser", "initsecret12")
                .mutual_chap("tgtuser", "tgtsecret123"),
        )
        .start()
        .unwrap();
    let lu = SharedLu::tgtd(&tgtd, 1, 1);
    session::mutual_chap_and_a_target_with_the_wrong_secret(
        &lu,
        ("inituser", "initsecret12"),
        ("tgtuser", "tgtsecret123"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_data_digests() {
    require_root!();
    let tgtd = Tgtd::builder()
        .target(TargetSpec::new("digests").lun(LunSpec::file(16 << 20)).digests("CRC32C"))
        .target(TargetSpec::new("nodigests").lun(LunSpec::file(16 << 20)).digests("None"))
        .start()
        .unwrap();
    let lu = SharedLu::tgtd(&tgtd, 1, 1);
    session::digests_carry_every_size(&lu, DigestPref::Crc32c, DigestPref::Crc32c, Digest::Crc32c).await;
    session::digests_carry_every_size(&lu, DigestPref::PreferCrc32c, DigestPref::PreferCrc32c, Digest::Crc32c).await;
    let plain = SharedLu::tgtd(&tgtd, 2, 1);
    session::digests_carry_every_size(&plain, DigestPref::PreferCrc32c, DigestPref::PreferCrc32c, Digest::None).await;
    // tgtd configured with CRC32C accepts an initiator that offers only
    // None (LIO refuses it).
    session::digests_carry_every_size(&lu, DigestPref::None, DigestPref::None, Digest::None).await;

    // Required digests against a target that has none: a clear refusal.
    let mut cfg = session_config(&tgtd, 2, 0);
    cfg.offer.header_digest = DigestPref::Crc32c;
    let e = login_error(SessionHandle::connect(cfg, Duration::from_secs(10)).await.unwrap_err());
    assert!(e.to_string().contains("HeaderDigest"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_every_target() {
    require_root!();
    let tgtd = Tgtd::builder()
        .portals(2)
        .target(TargetSpec::new("alpha").lun(LunSpec::file(1 << 20)))
        .target(TargetSpec::new("beta").lun(LunSpec::file(1 << 20)))
        .start()
        .unwrap();
    let found = session::send_targets(tgtd.portal(1), Auth::None).await.unwrap();
    // tgtd lists only the portal that was asked (ecosystem.md 5.1).
    let only_asked = vec![format!("{},1", tgtd.portal(1))];
    assert_eq!(found, [(tgtd.iqn(1).to_string(), only_asked.clone()), (tgtd.iqn(2).to_string(), only_asked)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_from_one_initiator() {
    require_root!();
    let tgtd =
        Tgtd::builder().portals(2).target(TargetSpec::new("shared").lun(LunSpec::file(8 << 20))).start().unwrap();
    let mut a = session_config(&tgtd, 1, 0);
    a.isid = Isid::random_format(1);
    let mut b = session_config(&tgtd, 1, 1);
    b.isid = Isid::random_format(2);
    let sa = SessionHandle::connect(a, Duration::from_secs(10)).await.unwrap();
    let sb = SessionHandle::connect(b, Duration::from_secs(10)).await.unwrap();
    ready(&sa).await;
    ready(&sb).await;
    assert_eq!(tgtd.sessions(1).unwrap().len(), 2, "two I_T nexuses");
    // What one writes, the other reads: the same logical unit.
    let data = pattern(MIB as u64, MIB, 3);
    assert!(sa.execute(write_at(MIB as u64, data.clone())).await.unwrap().is_good());
    assert_data(
        &sb.execute(read_at(MIB as u64, MIB)).await.unwrap().data.to_bytes(),
        &data,
        "read by the other session",
    );
    sa.logout().await.unwrap();
    sb.logout().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcs_session_with_a_connection_per_portal() {
    require_root!();
    let tgtd = Tgtd::builder()
        .portals(2)
        .target(TargetSpec::new("mcs").lun(LunSpec::file(16 << 20)).max_connections(2))
        .start()
        .unwrap();
    let s = session::mcs_connection_per_portal(mcs_config(&tgtd, 1, &[0, 1]), lun1()).await;
    let sessions = tgtd.sessions(1).unwrap();
    assert_eq!(sessions.len(), 1, "one session: {sessions:?}");
    assert_eq!(sessions[0].connections.len(), 2, "with two connections: {sessions:?}");
    s.logout().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_without_mcs_is_told_to_use_mpio() {
    require_root!();
    // tgtd's default MaxConnections is 1.
    let tgtd =
        Tgtd::builder().portals(2).target(TargetSpec::new("single").lun(LunSpec::file(1 << 20))).start().unwrap();
    // Subscribed before the session starts: the second connection's
    // refusal can come before `spawn` returns.
    let (s, mut ev) = SessionHandle::spawn_watched(mcs_config(&tgtd, 1, &[0, 1])).unwrap();
    s.wait_up(Duration::from_secs(10)).await.unwrap();
    let down = wait_event(&mut ev, Duration::from_secs(10), "connection 1 refused", |e| {
        matches!(e, SessionEvent::ConnectionDown { cid: 1, .. })
    })
    .await;
    let SessionEvent::ConnectionDown { reason, .. } = down else { unreachable!() };
    assert_eq!(
        reason.to_string(),
        "login failed: target does not support MCS (MaxConnections=1): use MPIO (one session per path) instead"
    );
    // The session goes on with its first connection.
    ready(&s).await;
    s.logout().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarter_gibibyte_verified_in_every_transfer_size() {
    require_root!();
    const SIZES: [usize; 9] = [512, 4096, 8192, 65536, 65536 + 512, 262144, MIB, 3 * MIB + 512, 4 * MIB];
    // Immediate data + unsolicited Data-Out up to FirstBurstLength, then
    // R2Ts split by MaxBurstLength (256 KiB), Data-Out split by the
    // target's MaxRecvDataSegmentLength (8 KiB).
    let tgtd = Tgtd::builder()
        .target(TargetSpec::new("bulk").lun(LunSpec::file(256 << 20)).param("InitialR2T", "No"))
        .start()
        .unwrap();
    let s = SessionHandle::connect(session_config(&tgtd, 1, 0), Duration::from_secs(10)).await.unwrap();
    ready(&s).await;
    let p = s.snapshot().await.unwrap().params;
    assert!(!p.initial_r2t && p.immediate_data);
    session::write_verify(&s, lun1(), tgtd.backing_file(1, 1), 256 << 20, &SIZES, 8, 0x5eed).await;
    s.logout().await.unwrap();
    drop(tgtd);

    // Without immediate or unsolicited data: everything through R2T.
    let tgtd = Tgtd::builder()
        .target(
            TargetSpec::new("r2t")
                .lun(LunSpec::file(32 << 20))
                .param("InitialR2T", "Yes")
                .param("ImmediateData", "No")
                .param("MaxRecvDataSegmentLength", "65536"),
        )
        .start()
        .unwrap();
    let s = SessionHandle::connect(session_config(&tgtd, 1, 0), Duration::from_secs(10)).await.unwrap();
    ready(&s).await;
    let p = s.snapshot().await.unwrap().params;
    assert!(p.initial_r2t && !p.immediate_data);
    session::write_verify(&s, lun1(), tgtd.backing_file(1, 1), 32 << 20, &SIZES, 4, 0xfeed).await;
    s.logout().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_reset_mid_io_reinstates_and_loses_nothing() {
    require_root!();
    let tgtd = Tgtd::builder().target(TargetSpec::new("reset").lun(LunSpec::file(64 << 20))).start().unwrap();
    let s = session::connection_reset_mid_io(session_config(&tgtd, 1, 0), lun1(), tgtd.backing_file(1, 1), || async {
        let conns = tgtd.wait_connections(1, "one connection", Duration::from_secs(5), |c| c.len() == 1).unwrap();
        tgtd.delete_connection(1, conns[0].sid, conns[0].cid).unwrap();
    })
    .await;
    s.logout().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_target_command_times_out_and_the_connection_is_dropped() {
    require_root!();
    let tgtd = Tgtd::builder().target(TargetSpec::new("offline").lun(LunSpec::file(4 << 20))).start().unwrap();
    let mut cfg = session_config(&tgtd, 1, 0);
    cfg.timeouts.command = Duration::from_secs(2);
    cfg.timeouts.task_mgmt = Duration::from_secs(2);
    cfg.timeouts.nop_interval = Some(Duration::from_secs(1));
    cfg.timeouts.nop_timeout = Duration::from_secs(1);
    let s = SessionHandle::spawn(cfg).unwrap();
    let mut ev = s.events();
    s.wait_up(Duration::from_secs(10)).await.unwrap();
    ready(&s).await;
    let data = pattern(0, 4096, 9);
    assert!(s.execute(write_at(0, data.clone())).await.unwrap().is_good());
    // tgtd now drops commands silently (but still answers NOP-Outs).
    tgtd.set_state(1, TargetState::Offline).unwrap();
    let t0 = Instant::now();
    let read = {
        let s = s.clone();
        tokio::spawn(async move { read_good(&s, 0, 4096).await })
    };
    let down = wait_event(&mut ev, Duration::from_secs(10), "connection dropped", |e| {
        matches!(e, SessionEvent::ConnectionDown { .. })
    })
    .await;
    let took = t0.elapsed();
    // Detected through the command timeout and its ABORT TASK (tgtd still
    // answers NOP-Outs, so the keepalive cannot see it), hence not before
    // the command timeout: a load that delays anything only adds to it.
    let SessionEvent::ConnectionDown { reason, .. } = down else { unreachable!() };
    assert!(reason.to_string().contains("ABORT TASK"), "{reason}");
    assert!(took >= Duration::from_secs(2), "not before the command timeout: {took:?}");
    // When the target is back, the session is reinstated and the read is
    // answered, with the data written before.
    tgtd.set_state(1, TargetState::Ready).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(30), read).await.expect("read finished").unwrap();
    assert_data(&r, &data, "read after recovery");
    s.logout().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_connection_is_detected_by_nop_out() {
    require_root!();
    let tgtd = Tgtd::builder().target(TargetSpec::new("blackhole").lun(LunSpec::file(4 << 20))).start().unwrap();
    session::blackholed_connection_is_detected_by_nop_out(session_config(&tgtd, 1, 0), lun1(), tgtd.portal(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_address_and_interface_binding() {
    require_root!();
    let tgtd = Tgtd::builder().target(TargetSpec::new("bind").lun(LunSpec::file(1 << 20))).start().unwrap();
    let mut cfg = session_config(&tgtd, 1, 0);
    cfg.connections[0].source_addr = Some("127.0.0.9".parse().unwrap());
    cfg.connections[0].interface = Some("lo".into());
    let s = SessionHandle::connect(cfg.clone(), Duration::from_secs(10)).await.unwrap();
    let conns = tgtd.connections(1).unwrap();
    assert_eq!(conns[0].address.to_string(), "127.0.0.9", "the target sees our bound source address");
    let snap = s.snapshot().await.unwrap();
    assert_eq!(snap.connections[0].local_addr.unwrap().ip().to_string(), "127.0.0.9");
    s.logout().await.unwrap();

    cfg.connections[0] =
        ConnectionSpec { interface: Some("nosuchif0".into()), ..ConnectionSpec::to(tgtd.portal(0).into()) };
    let e = SessionHandle::connect(cfg, Duration::from_secs(10)).await.unwrap_err();
    assert!(e.to_string().contains("cannot bind to interface nosuchif0"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_and_dns_name_portals() {
    require_root!();
    let tgtd = Tgtd::builder().target(TargetSpec::new("names").lun(LunSpec::file(4 << 20))).start().unwrap();
    let port = tgtd.port();
    // A DNS name, resolved when the connection opens.
    let mut portals = vec![(format!("localhost:{port}"), "127.0.0.1".parse::<std::net::IpAddr>().unwrap())];
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        tgtd.add_portal(format!("[::1]:{port}").parse().unwrap()).unwrap();
        portals.push((format!("[::1]:{port}"), "::1".parse().unwrap()));
    } else {
        eprintln!("SKIPPED the IPv6 part: this host has no ::1 on lo (ip -6 addr show lo)");
    }
    for (i, (portal, ip)) in portals.iter().enumerate() {
        let mut cfg = session_config(&tgtd, 1, 0);
        cfg.connections[0].portal = portal.parse().unwrap();
        let s = SessionHandle::connect(cfg, Duration::from_secs(10)).await.unwrap();
        ready(&s).await;
        let snap = s.snapshot().await.unwrap();
        assert_eq!(snap.connections[0].portal, *portal, "the portal as configured");
        assert_eq!(snap.connections[0].peer_addr.map(|a| a.ip()), Some(*ip), "{portal}");
        let off = i as u64 * MIB as u64;
        let data = pattern(off, MIB, 0x6a);
        write_good(&s, off, data.clone()).await;
        assert_data(&read_good(&s, off, MIB).await, &data, portal);
        s.logout().await.unwrap();
        let disk = std::fs::read(tgtd.backing_file(1, 1)).unwrap();
        assert_data(&disk[off as usize..off as usize + MIB], &data, &format!("backing file, written via {portal}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_redirection_is_followed() {
    require_root!();
    // Two daemons with the same target: the first redirects every login to
    // the second (tgtd redirects unconditionally once configured).
    let target = || TargetSpec::new("moved").lun(LunSpec::file(1 << 20));
    // tgtd ignores a redirection to the address the login came in on, so
    // the new home is on another address (its second portal).
    let new_home = Tgtd::builder().portals(2).target(target()).start().unwrap();
    let old_home = Tgtd::builder().portals(2).target(target()).start().unwrap();
    let to = new_home.portal(1);
    old_home.set_param(1, "RedirectAddress", &to.ip().to_string()).unwrap();
    old_home.set_param(1, "RedirectPort", &to.port().to_string()).unwrap();
    old_home.set_param(1, "RedirectReason", "Temporary").unwrap();
    let s = SessionHandle::connect(session_config(&old_home, 1, 0), Duration::from_secs(10)).await.unwrap();
    let snap = s.snapshot().await.unwrap();
    assert_eq!(snap.connections[0].peer_addr, Some(to), "logged in where the redirect pointed");
    assert_eq!(snap.connections[0].portal, to.to_string());
    assert_eq!(new_home.sessions(1).unwrap().len(), 1);
    assert!(old_home.sessions(1).unwrap().is_empty());
    s.logout().await.unwrap();

    // A target that redirects to itself: a loop, refused with a clear message.
    let me = old_home.portal(1);
    old_home.set_param(1, "RedirectAddress", &me.ip().to_string()).unwrap();
    old_home.set_param(1, "RedirectPort", &me.port().to_string()).unwrap();
    let e = login_error(
        SessionHandle::connect(session_config(&old_home, 1, 0), Duration::from_secs(10)).await.unwrap_err(),
    );
    assert!(matches!(e, LoginError::RedirectLoop { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_management_against_the_target() {
    require_root!();
    let tgtd = Tgtd::builder().target(TargetSpec::new("tmf").lun(LunSpec::file(4 << 20))).start().unwrap();
    let mut cfg = session_config(&tgtd, 1, 0);
    cfg.timeouts.command = Duration::from_secs(30);
    let s = SessionHandle::connect(cfg, Duration::from_secs(10)).await.unwrap();
    ready(&s).await;
    // tgtd implements ABORT TASK SET, not TARGET WARM RESET (LIO: the
    // other way round).
    let answers = session::task_management_keeps_the_session(&s, lun1()).await;
    let expected = session::OptionalTmfs {
        abort_task_set: Ok(()),
        target_warm_reset: Err(TaskError::TaskMgmt(TmfResponse::NOT_SUPPORTED)),
    };
    assert_eq!(answers, expected);
    let data = pattern(0, 4096, 77);
    // A command the target holds forever (offline drops it) is aborted on
    // request: the caller gets Aborted, the session stays up.
    tgtd.set_state(1, TargetState::Offline).unwrap();
    let (id, done) = s.submit(read_at(0, 4096), ConnPick::Any).await.unwrap();
    s.abort(id).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), done).await.expect("aborted in time").unwrap();
    assert!(matches!(r, Err(TaskError::Aborted)), "{r:?}");
    tgtd.set_state(1, TargetState::Ready).unwrap();
    assert!(s.is_up());
    assert_data(&read_good(&s, 0, 4096).await, &data, "read after the abort");
    s.logout().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcs_connection_cut_mid_io_resends_its_tasks_and_loses_nothing() {
    require_root!();
    let tgtd = Tgtd::builder()
        .portals(3)
        .target(TargetSpec::new("mcscut").lun(LunSpec::file(64 << 20)).max_connections(3))
        .start()
        .unwrap();
    let whole = |c: &[ConnectionInfo]| c.len() == 3 && c.iter().all(|x| x.sid == c[0].sid);
    let cfg = mcs_config(&tgtd, 1, &[0, 1, 2]);
    let s = session::mcs_connection_cut_mid_io(cfg, lun1(), tgtd.backing_file(1, 1), || async {
        let before =
            tgtd.wait_connections(1, "three connections in one session", Duration::from_secs(10), whole).unwrap();
        // Cut connection 1 from the target side while writes flow on all
        // three. tgtd answers the Logout that cleans it up (sent on
        // another connection, RFC 7143 section 11.14) by closing the
        // connection it came on, so every connection goes and the session
        // is reinstated, once.
        tgtd.delete_connection(1, before[0].sid, 1).unwrap();
    })
    .await;
    tgtd.wait_connections(1, "three connections in one session again", Duration::from_secs(30), whole).unwrap();
    s.logout().await.unwrap();
}
