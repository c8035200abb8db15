//! Initiator scenarios written once for every target fixture (tgtd on the
//! host, LIO in the test VM). Each takes the LU as the fixture offers it
//! ([`SharedLu`]: target name, portals, LUN) and, where it checks the
//! target's disk, where the target keeps the bytes ([`Backing`]). What
//! differs between targets stays with the test that knows the target: how
//! a connection is cut (a closure), what the target shows of its sessions,
//! and how it refuses (the scenario returns the refusal).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mpio_dsm::Lun;
use mpio_testbed::netfault::Blackhole;
use mpio_transport::chap::{ChapConfig, ChapCredentials, ChapError, Secret};
use mpio_transport::login::LoginError;
use mpio_transport::pdu::{LoginStatus, TmfFunction};
use mpio_transport::text::{Digest, DigestPref};
use mpio_transport::{
    Auth, ConnPick, ConnectionFailure, ConnectionSpec, SessionConfig, SessionError, SessionEvent, SessionHandle,
    TaskError,
};

use crate::pr::SharedLu;
use crate::{
    Backing, INITIATOR, assert_data, pattern, read_good_lun, read_lun, ready_lun, wait_event, write_good_lun, write_lun,
};

const MIB: usize = 1 << 20;
const CONNECT: Duration = Duration::from_secs(10);
/// Bound of a writer's phase: generous for TCG, short of a hang.
const WRITES: Duration = Duration::from_secs(60);

/// `fut`, or a panic naming `what` after `timeout`: a scenario that
/// stalls says where.
pub async fn within<T>(timeout: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(timeout, fut).await.unwrap_or_else(|_| panic!("no {what} within {timeout:?}"))
}

/// CHAP as the initiator `user`/`secret`, and, for mutual CHAP, the
/// target `(user, secret)` we expect.
pub fn chap(user: &str, secret: &str, target: Option<(&str, &str)>) -> Auth {
    let creds = |u: &str, s: &str| ChapCredentials::new(u, Secret::parse(s.as_bytes()).expect("secret")).expect("user");
    Auth::Chap(ChapConfig::new(creds(user, secret), target.map(|(u, s)| creds(u, s))).expect("CHAP config"))
}

/// The login failure inside a session error; panics on any other error.
pub fn login_error(e: SessionError) -> LoginError {
    match e {
        SessionError::Failed(ConnectionFailure::Login(l)) => l,
        other => panic!("expected a login failure, got {other:?}"),
    }
}

/// Writes `len` bytes of pattern `seed` at `offset` of `lun` and reads them
/// back through `s`.
pub async fn round_trip(s: &SessionHandle, lun: Lun, offset: u64, len: usize, seed: u64) {
    let data = pattern(offset, len, seed);
    within(WRITES, &format!("write of {len} bytes"), write_good_lun(s, lun, offset, data.clone())).await;
    let got = within(WRITES, &format!("read of {len} bytes"), read_good_lun(s, lun, offset, len)).await;
    assert_data(&got, &data, &format!("{len} bytes at {offset}"));
}

/// One-way CHAP as `user`/`secret` logs in and carries I/O; a wrong
/// secret is refused with 0x0201 and the fix, and not retried. Returns
/// what a login without CHAP gets, which targets answer differently.
pub async fn one_way_chap_and_its_failures(lu: &SharedLu, user: &str, secret: &str) -> LoginError {
    let mut cfg = lu.session_config(INITIATOR, 0);
    cfg.auth = chap(user, secret, None);
    let s = SessionHandle::connect(cfg.clone(), CONNECT).await.expect("CHAP login");
    ready_lun(&s, lu.lun).await;
    round_trip(&s, lu.lun, 0, 64 << 10, 0xc4a9).await;
    s.logout().await.expect("logout");

    // Wrong secret: a clear error, and no retry loop (seed event 70).
    cfg.auth = chap(user, "wrongsecret1", None);
    let e = login_error(SessionHandle::connect(cfg.clone(), CONNECT).await.unwrap_err());
    assert!(matches!(e, LoginError::Status { status: LoginStatus::AUTHENTICATION_FAILURE, .. }), "{e:?}");
    assert_eq!(e.to_string(), "authentication failure (0x0201): check the CHAP user and secret");
    assert!(!e.is_retryable());

    // The target requires CHAP and none is configured (seed event 40).
    cfg.auth = Auth::None;
    login_error(SessionHandle::connect(cfg, CONNECT).await.unwrap_err())
}

/// Mutual CHAP logs in and carries I/O; a target that proves another
/// secret than the one we expect is refused by us, with the fix.
pub async fn mutual_chap_and_a_target_with_the_wrong_secret(
    lu: &SharedLu,
    initiator: (&str, &str),
    target: (&str, &str),
) {
    let mut cfg = lu.session_config(INITIATOR, 0);
    cfg.auth = chap(initiator.0, initiator.1, Some(target));
    let s = SessionHandle::connect(cfg.clone(), CONNECT).await.expect("mutual CHAP login");
    ready_lun(&s, lu.lun).await;
    round_trip(&s, lu.lun, 0, 64 << 10, 0x3a7).await;
    s.logout().await.expect("logout");

    cfg.auth = chap(initiator.0, initiator.1, Some((target.0, "not-the-secret")));
    let e = login_error(SessionHandle::connect(cfg, CONNECT).await.unwrap_err());
    assert_eq!(e, LoginError::Chap(ChapError::TargetAuthFailed));
    assert!(e.to_string().contains("check the target CHAP secret"), "{e}");
}

/// What a target answered to the task management functions it need not
/// implement (SAM-5 makes only ABORT TASK and LOGICAL UNIT RESET
/// mandatory).
#[derive(Debug, PartialEq)]
pub struct OptionalTmfs {
    /// ABORT TASK SET.
    pub abort_task_set: Result<(), TaskError>,
    /// TARGET WARM RESET.
    pub target_warm_reset: Result<(), TaskError>,
}

/// LOGICAL UNIT RESET on `lun` completes, and the LU stays usable (after
/// the UNIT ATTENTION a reset causes), whatever the target answers to the
/// optional functions, which reach the caller as they are (returned).
pub async fn task_management_keeps_the_session(s: &SessionHandle, lun: Lun) -> OptionalTmfs {
    ready_lun(s, lun).await;
    let raw = lun.as_u64_be();
    s.task_mgmt(TmfFunction::LOGICAL_UNIT_RESET, raw).await.expect("LOGICAL UNIT RESET");
    let abort_task_set = s.task_mgmt(TmfFunction::ABORT_TASK_SET, raw).await;
    let target_warm_reset = s.task_mgmt(TmfFunction::TARGET_WARM_RESET, raw).await;
    round_trip(s, lun, 0, 4096, 77).await;
    assert!(s.is_up());
    OptionalTmfs { abort_task_set, target_warm_reset }
}

/// Offers `header` and `data` digests, expects `negotiated` for both, and
/// writes and reads back transfers of many sizes through them, without a
/// digest error.
pub async fn digests_carry_every_size(lu: &SharedLu, header: DigestPref, data: DigestPref, negotiated: Digest) {
    let mut cfg = lu.session_config(INITIATOR, 0);
    cfg.offer.header_digest = header;
    cfg.offer.data_digest = data;
    let s = SessionHandle::connect(cfg, CONNECT).await.expect("login with digests");
    ready_lun(&s, lu.lun).await;
    let snap = s.snapshot().await.expect("snapshot");
    let p = snap.connections[0].params.clone().expect("negotiated parameters");
    assert_eq!((p.header_digest, p.data_digest), (negotiated, negotiated), "offered {header:?}/{data:?}");
    let mut offset = 0u64;
    for len in [512usize, 4096, 8192, 65536, 262144, MIB, 3 * MIB] {
        round_trip(&s, lu.lun, offset, len, 7).await;
        offset += len as u64;
    }
    assert_eq!(s.snapshot().await.expect("snapshot").connections[0].stats.digest_errors, 0);
    s.logout().await.expect("logout");
}

/// SendTargets=All through `portal` with `auth`: `(target, ["addr:port,tpgt",
/// ...])`, sorted. A SCSI command on the discovery session is refused
/// locally, not sent.
pub async fn send_targets(portal: SocketAddr, auth: Auth) -> Result<Vec<(String, Vec<String>)>, SessionError> {
    let mut cfg = SessionConfig::discovery(INITIATOR.parse().expect("initiator name"), portal.into());
    cfg.auth = auth;
    let s = SessionHandle::connect(cfg, CONNECT).await?;
    let found = s.send_targets().await.expect("SendTargets");
    assert!(found.warnings.is_empty(), "{:?}", found.warnings);
    let e = s.execute(read_lun(Lun::from_number(0).expect("LUN 0"), 0, 512)).await.unwrap_err();
    assert!(matches!(e, TaskError::Invalid(_)), "{e:?}");
    s.logout().await.expect("logout");
    let mut out: Vec<(String, Vec<String>)> = found
        .targets
        .iter()
        .map(|t| {
            let mut a: Vec<String> =
                t.addresses.iter().map(|a| format!("{},{}", a.portal(), a.tpgt().unwrap_or(0))).collect();
            a.sort();
            (t.name.to_string(), a)
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Writes `total` bytes of `lun` in transfers cycling through `sizes`,
/// `depth` at a time, then reads everything back (through the initiator
/// and from the target's disk) and compares.
pub async fn write_verify(
    s: &SessionHandle,
    lun: Lun,
    disk: &(impl Backing + ?Sized),
    total: usize,
    sizes: &[usize],
    depth: usize,
    seed: u64,
) {
    let mut plan = Vec::new();
    let (mut off, mut i) = (0usize, 0usize);
    while off < total {
        let len = sizes[i % sizes.len()].min(total - off);
        plan.push((off as u64, len));
        off += len;
        i += 1;
    }
    // `depth` commands in flight at a time, each its own task.
    for chunk in plan.chunks(depth) {
        let writes: Vec<_> = chunk
            .iter()
            .map(|&(o, l)| {
                let s = s.clone();
                tokio::spawn(async move { s.execute(write_lun(lun, o, pattern(o, l, seed))).await })
            })
            .collect();
        for w in writes {
            let r = w.await.expect("write task").expect("write");
            assert!(r.is_good(), "{r:?}");
        }
    }
    for chunk in plan.chunks(depth) {
        let reads: Vec<_> = chunk
            .iter()
            .map(|&(o, l)| {
                let s = s.clone();
                tokio::spawn(async move { (o, l, s.execute(read_lun(lun, o, l)).await) })
            })
            .collect();
        for r in reads {
            let (o, l, r) = r.await.expect("read task");
            assert_data(&r.expect("read").data.to_bytes(), &pattern(o, l, seed), &format!("{l} bytes at {o}"));
        }
    }
    assert_data(&disk.read(0, total), &pattern(0, total, seed), "the backing file");
}

/// An MCS session of `cfg` (one connection per portal, up to the target's
/// MaxConnections): every connection comes up, each carries writes that
/// the next one reads back, and they lead to different portals. Returns
/// the session, still logged in, for the test to look at the target.
pub async fn mcs_connection_per_portal(cfg: SessionConfig, lun: Lun) -> SessionHandle {
    let n = cfg.connections.len() as u16;
    // Subscribed before the session starts: connection 1 can be up before
    // `spawn` returns.
    let (s, mut ev) = SessionHandle::spawn_watched(cfg).expect("session config");
    s.wait_up(CONNECT).await.expect("session up");
    let mut up: Vec<u16> = vec![0];
    while up.len() < usize::from(n) {
        let e = wait_event(
            &mut ev,
            CONNECT,
            "every connection up",
            |e| matches!(e, SessionEvent::ConnectionUp { cid } if !up.contains(cid)),
        )
        .await;
        let SessionEvent::ConnectionUp { cid } = e else { unreachable!() };
        up.push(cid);
    }
    ready_lun(&s, lun).await;
    // Write through each connection, read back through the next.
    for w in 0..n {
        let r = (w + 1) % n;
        let off = u64::from(w) * 4 * MIB as u64;
        let data = pattern(off, 2 * MIB, 11);
        let wr = within(CONNECT, "write", s.execute_on(write_lun(lun, off, data.clone()), ConnPick::Cid(w))).await;
        let wr = wr.expect("write");
        assert!(wr.is_good(), "{wr:?}");
        let rd = within(CONNECT, "read", s.execute_on(read_lun(lun, off, 2 * MIB), ConnPick::Cid(r))).await;
        let rd = rd.expect("read");
        assert_data(&rd.data.to_bytes(), &data, &format!("written on connection {w}, read on {r}"));
    }
    let snap = s.snapshot().await.expect("snapshot");
    let mut peers = Vec::new();
    for c in &snap.connections {
        assert!(c.up, "connection {} down", c.cid);
        assert!(c.stats.data_bytes_received >= 2 * MIB as u64, "connection {} carried reads: {:?}", c.cid, c.stats);
        peers.push(c.peer_addr);
    }
    peers.sort();
    peers.dedup();
    assert_eq!(peers.len(), usize::from(n), "one portal per connection: {peers:?}");
    s
}

/// A writer of `count` blocks of 256 KiB of `lun` (pattern `seed`),
/// `depth` in flight, on any connection; `progress` counts the completed
/// ones. Every write must complete GOOD (UNIT ATTENTIONs retried).
fn spawn_writer(
    s: &SessionHandle,
    lun: Lun,
    count: u64,
    depth: usize,
    seed: u64,
    progress: tokio::sync::watch::Sender<u64>,
) -> tokio::task::JoinHandle<()> {
    let s = s.clone();
    tokio::spawn(async move {
        let mut pending = std::collections::VecDeque::new();
        for i in 0..count {
            let off = i * 256 * 1024;
            let s = s.clone();
            pending.push_back(tokio::spawn(async move {
                write_good_lun(&s, lun, off, pattern(off, 256 * 1024, seed)).await
            }));
            if pending.len() == depth
                && let Some(p) = pending.pop_front()
            {
                p.await.expect("write task");
                progress.send_modify(|n| *n += 1);
            }
        }
        for p in pending {
            p.await.expect("write task");
            progress.send_modify(|n| *n += 1);
        }
    })
}

/// Checks that the first `blocks` blocks of 256 KiB hold pattern `seed`,
/// through the session and on the target's disk.
async fn verify_blocks(s: &SessionHandle, lun: Lun, disk: &(impl Backing + ?Sized), blocks: u64, seed: u64) {
    for i in 0..blocks {
        let off = i * 256 * 1024;
        let got = within(CONNECT, "read back", read_good_lun(s, lun, off, 256 * 1024)).await;
        assert_data(&got, &pattern(off, 256 * 1024, seed), &format!("block at {off}"));
    }
    let len = (blocks * 256 * 1024) as usize;
    assert_data(&disk.read(0, len), &pattern(0, len, seed), "the backing file");
}

/// The session of `cfg` (one connection) is cut by `cut` while 8 writes
/// of 256 KiB are in flight: it is reinstated once, the writes caught by
/// the cut are sent again, and all 48 MiB read back as written, through
/// the session and from the target's disk. Returns the session.
pub async fn connection_reset_mid_io<F, Fut>(
    cfg: SessionConfig,
    lun: Lun,
    disk: &(impl Backing + ?Sized),
    cut: F,
) -> SessionHandle
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    const BLOCKS: u64 = 192;
    let (s, mut ev) = SessionHandle::spawn_watched(cfg).expect("session config");
    s.wait_up(CONNECT).await.expect("session up");
    ready_lun(&s, lun).await;
    let (progress, mut completed) = tokio::sync::watch::channel(0u64);
    let writer = spawn_writer(&s, lun, BLOCKS, 8, 42, progress);
    // Cut the connection once writes are flowing (16 done), while the
    // writer still has most of its writes to go.
    within(WRITES, "16 writes done", completed.wait_for(|n| *n >= 16)).await.expect("writer");
    cut().await;
    let at_cut = *completed.borrow();
    assert!(at_cut < BLOCKS, "the writer had finished before the cut ({at_cut} writes done)");
    wait_event(&mut ev, Duration::from_secs(10), "session down", |e| matches!(e, SessionEvent::SessionDown { .. }))
        .await;
    let up = wait_event(&mut ev, Duration::from_secs(30), "session reinstated", |e| {
        matches!(e, SessionEvent::SessionUp { .. })
    })
    .await;
    assert!(matches!(up, SessionEvent::SessionUp { reinstated: true, .. }), "{up:?}");
    within(WRITES, "every write done", writer).await.expect("writer");
    let snap = s.snapshot().await.expect("snapshot");
    assert_eq!(snap.stats.reinstatements, 1);
    // The cut caught writes in flight: the session parked them and sent
    // them again on the reinstated session.
    assert!(snap.stats.retries >= 1, "no write was in flight at the cut: {:?}", snap.stats);
    verify_blocks(&s, lun, disk, BLOCKS, 42).await;
    s
}

/// An MCS session of `cfg` (three or more connections) loses connection 1
/// to `cut` while writes flow on all of them: every write completes GOOD,
/// the ones the cut caught are sent again, the session is reinstated at
/// most once, every connection comes back, and the data is intact through
/// the session and on the target's disk. Returns the session.
pub async fn mcs_connection_cut_mid_io<F, Fut>(
    mut cfg: SessionConfig,
    lun: Lun,
    disk: &(impl Backing + ?Sized),
    cut: F,
) -> SessionHandle
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    const BLOCKS: u64 = 192;
    // A write that is never sent again fails after this instead of
    // waiting for ever.
    cfg.timeouts.recovery = Some(Duration::from_secs(30));
    let n = cfg.connections.len();
    let (s, mut ev) = SessionHandle::spawn_watched(cfg).expect("session config");
    s.wait_up(CONNECT).await.expect("session up");
    all_connections_up(&s, n, CONNECT).await;
    ready_lun(&s, lun).await;
    let (progress, mut completed) = tokio::sync::watch::channel(0u64);
    let writer = spawn_writer(&s, lun, BLOCKS, 12, 0x3c5, progress);
    within(WRITES, "16 writes done", completed.wait_for(|n| *n >= 16)).await.expect("writer");
    cut().await;
    let at_cut = *completed.borrow();
    assert!(at_cut < BLOCKS, "the writer had finished before the cut");
    wait_event(&mut ev, Duration::from_secs(10), "connection 1 down", |e| {
        matches!(e, SessionEvent::ConnectionDown { cid: 1, .. })
    })
    .await;
    // Every write completes GOOD (`write_good_lun` panics otherwise).
    within(WRITES, "every write done", writer).await.expect("writer");
    let snap = s.snapshot().await.expect("snapshot");
    // The writes the cut caught were sent again. The session is
    // reinstated at most once: a target that closes every connection when
    // the logout that cleans up connection 1 arrives on another (tgtd)
    // has the session reinstated once; one that honours the logout's CID
    // keeps it.
    assert!(snap.stats.retries >= 1, "no write was in flight on the cut connection: {:?}", snap.stats);
    assert!(snap.stats.reinstatements <= 1, "the session was reinstated over and over: {:?}", snap.stats);
    all_connections_up(&s, n, Duration::from_secs(30)).await;
    verify_blocks(&s, lun, disk, BLOCKS, 0x3c5).await;
    s
}

/// Waits until the session has `n` connections, all up.
pub async fn all_connections_up(s: &SessionHandle, n: usize, timeout: Duration) {
    let mut ev = s.events();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let snap = s.snapshot().await.expect("snapshot");
        if snap.connections.len() == n && snap.connections.iter().all(|c| c.up) {
            return;
        }
        let states: Vec<_> = snap.connections.iter().map(|c| (c.cid, c.up)).collect();
        assert!(tokio::time::Instant::now() < deadline, "not {n} connections up within {timeout:?}: {states:?}");
        // A session event wakes us at once; the timeout re-checks.
        let _ = tokio::time::timeout(Duration::from_millis(100), ev.recv()).await;
    }
}

/// The session of `cfg`, with its one connection to `portal`, is
/// blackholed there (host iptables, both
/// directions) while a read is caught in the hole: the NOP-Out keepalive
/// declares it dead, not before it could have, and once the hole is gone
/// the session is reinstated and the read completes with the data written
/// before.
pub async fn blackholed_connection_is_detected_by_nop_out(mut cfg: SessionConfig, lun: Lun, portal: SocketAddr) {
    let (interval, timeout) = (Duration::from_secs(1), Duration::from_secs(1));
    cfg.timeouts.nop_interval = Some(interval);
    cfg.timeouts.nop_timeout = timeout;
    cfg.timeouts.connect = Duration::from_secs(2);
    cfg.connections = vec![ConnectionSpec::to(portal.into())];
    let (s, mut ev) = SessionHandle::spawn_watched(cfg).expect("session config");
    s.wait_up(CONNECT).await.expect("session up");
    ready_lun(&s, lun).await;
    let data = pattern(0, 8192, 5);
    // The last byte the session receives before the hole is the answer to
    // this write, so it arrives after `t0`.
    let t0 = Instant::now();
    let r = s.execute(write_lun(lun, 0, data.clone())).await.expect("write");
    assert!(r.is_good(), "{r:?}");
    let hole = Blackhole::new(portal).expect("blackhole");
    // A read caught in the hole.
    let read = {
        let s = s.clone();
        tokio::spawn(async move { read_good_lun(&s, lun, 0, 8192).await })
    };
    let down = wait_event(&mut ev, Duration::from_secs(30), "connection declared dead", |e| {
        matches!(e, SessionEvent::ConnectionDown { .. })
    })
    .await;
    let took = t0.elapsed();
    let SessionEvent::ConnectionDown { reason, .. } = down else { unreachable!() };
    // The keepalive found it: not the TCP stack (dropped packets raise no
    // error for minutes), not the command timeout of the read caught in
    // the hole (that would end in an unanswered ABORT TASK; the read is
    // still waiting, and completes below).
    assert_eq!(reason, ConnectionFailure::NopTimeout(timeout));
    // And not before it could have: a NOP-Out goes out after `interval`
    // without anything received, and the connection is declared dead
    // `timeout` after that. Load only delays both.
    assert!(took >= interval + timeout, "dead after {took:?}, before the keepalive could tell");
    drop(hole);
    // The path comes back: reinstatement, and the read completes.
    let r = tokio::time::timeout(Duration::from_secs(30), read).await.expect("read finished").expect("read task");
    assert_data(&r, &data, "read after recovery");
    s.logout().await.expect("logout");
}
