//! The connection driver with an in-memory backend and a raw client: what
//! the server does with concurrent, refused, hostile and interrupted
//! requests, byte-exact replies included.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use mpio_mpath::{BlockDevice, Geometry};
use mpio_nbd::consts::*;
use mpio_nbd::{NbdError, ServerError};
use mpio_tests::nbd::*;
use mpio_tests::pattern;

use super::*;

async fn mem(size: u64) -> (Listening<MemBackend>, Arc<MemBackend>) {
    let l = Listening::start(|_| {}).await;
    let b = Arc::new(MemBackend::new(size));
    l.add("mem", b.clone());
    (l, b)
}

fn read(cookie: u64, offset: u64, len: u32) -> mpio_nbd::transmission::Request {
    request(NBD_CMD_READ, 0, cookie, offset, len)
}

fn write(cookie: u64, offset: u64, len: u32) -> mpio_nbd::transmission::Request {
    request(NBD_CMD_WRITE, 0, cookie, offset, len)
}

/// Waits until `cond` holds (checked every 5 ms), or panics naming `what`.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_out_of_order() {
    let (l, b) = mem(MIB).await;
    let mut c = RawClient::unix(&l.socket()).await;
    let e = c.open("mem", false).await;
    assert_eq!(e.size, MIB);
    assert_eq!(e.block, Some((512, 4096, 32 << 20)));

    // 64 writes in flight at once, then every block read back.
    let data = pattern(0, 256 << 10, 1);
    for i in 0..64u64 {
        let at = i * 4096;
        c.send(write(i, at, 4096), &data[at as usize..at as usize + 4096]).await;
    }
    let mut seen: Vec<u64> = Vec::new();
    for _ in 0..64 {
        let r = c.recv().await;
        assert_eq!(r.error, 0);
        seen.push(r.cookie);
    }
    seen.sort();
    assert_eq!(seen, (0..64).collect::<Vec<_>>());
    assert_eq!(b.contents(0, 256 << 10), data.to_vec());

    // A read held in the backend does not hold up the ones behind it.
    b.hold(0);
    c.send(read(100, 0, 4096), &[]).await;
    until("the held read reaches the backend", || b.in_flight() == 1).await;
    c.send(read(101, 4096, 8192), &[]).await;
    let r = c.recv().await;
    assert_eq!((r.cookie, r.error), (101, 0));
    assert_eq!(r.data, data[4096..12288].to_vec());
    b.release(1);
    let r = c.recv().await;
    assert_eq!((r.cookie, r.error), (100, 0));
    assert_eq!(r.data, data[..4096].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_flags_reach_the_backend() {
    let (l, b) = mem(MIB).await;
    let mut c = RawClient::tcp(l.tcp()).await;
    let e = c.open("", true).await; // the only export is the default one
    let want = NBD_FLAG_HAS_FLAGS
        | NBD_FLAG_SEND_FLUSH
        | NBD_FLAG_SEND_FUA
        | NBD_FLAG_SEND_TRIM
        | NBD_FLAG_SEND_WRITE_ZEROES
        | NBD_FLAG_CAN_MULTI_CONN
        | NBD_FLAG_SEND_DF;
    assert_eq!(e.flags, want);
    let data = pattern(8192, 4096, 2);
    assert_eq!(c.call(request(NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 1, 8192, 4096), &data).await.error, 0);
    assert_eq!(c.call(request(NBD_CMD_FLUSH, 0, 2, 0, 0), &[]).await.error, 0);
    assert_eq!(c.call(request(NBD_CMD_TRIM, 0, 3, 0, 4096), &[]).await.error, 0);
    assert_eq!(c.call(request(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE, 4, 4096, 512), &[]).await.error, 0);
    assert_eq!(c.call(request(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_FUA, 5, 0, 512), &[]).await.error, 0);
    // Zero-length requests are answered without reaching the backend; an
    // empty structured read is a NONE chunk.
    let r = c.call(read(6, 0, 0), &[]).await;
    assert_eq!((r.error, r.data.len()), (0, 0));
    assert_eq!(c.call(write(7, 0, 0), &[]).await.error, 0);
    // DF is accepted on reads with structured replies.
    let r = c.call(request(NBD_CMD_READ, NBD_CMD_FLAG_DF, 8, 8192, 4096), &[]).await;
    assert_eq!(r.data, data.to_vec());
    assert_eq!(
        b.log(),
        ["write 8192+4096 fua", "flush", "trim 0+4096", "zero 4096+512 no_hole", "zero 0+512 fua", "read 8192+4096"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_get_the_spec_errors_and_the_connection_goes_on() {
    let (l, b) = mem(MIB).await;
    b.fail_at(512 * 7, mpio_mpath::Errno::Io);
    for structured in [false, true] {
        let mut c = RawClient::unix(&l.socket()).await;
        c.open("mem", structured).await;
        let past = MIB;
        let cases: Vec<(mpio_nbd::transmission::Request, Vec<u8>, NbdError, &str)> = vec![
            (read(1, 100, 512), vec![], NbdError::Inval, "multiples of 512"),
            (read(2, 0, 500), vec![], NbdError::Inval, "multiples of 512"),
            (read(3, past, 512), vec![], NbdError::Inval, "within the"),
            (write(4, past - 512, 1024), vec![9; 1024], NbdError::NoSpc, "past the end"),
            (write(5, 3, 512), vec![9; 512], NbdError::Inval, "multiples"),
            (read(6, 0, (32 << 20) + 512), vec![], NbdError::Inval, "at most 33554432"),
            (request(99, 0, 7, 0, 0), vec![], NbdError::Inval, "not supported"),
            (request(NBD_CMD_CACHE, 0, 8, 0, 512), vec![], NbdError::Inval, "not supported"),
            (request(NBD_CMD_READ, 0x8000, 9, 0, 512), vec![], NbdError::Inval, "flags must be"),
            (request(NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE, 10, 0, 512), vec![1; 512], NbdError::Inval, "flags"),
            (request(NBD_CMD_FLUSH, 0, 11, 512, 0), vec![], NbdError::Inval, "Flush"),
            (request(NBD_CMD_WRITE_ZEROES, 0, 12, past, 512), vec![], NbdError::NoSpc, "past the end"),
            (read(13, 512 * 7, 512), vec![], NbdError::Io, "injected failure"),
        ];
        for (req, payload, error, msg) in cases {
            let r = c.call(req, &payload).await;
            assert_eq!(r.error, error.code(), "{req:?}");
            assert!(r.data.is_empty(), "no data with an error");
            if structured {
                assert!(r.message.contains(msg), "{req:?}: message {:?} lacks {msg:?}", r.message);
            }
        }
        // Still in sync: the refused writes' payloads were skipped.
        let r = c.call(read(20, 0, 512), &[]).await;
        assert_eq!((r.error, r.data.len()), (0, 512));
    }
    assert!(b.log().iter().all(|op| op == "read 0+512" || op == "read 3584+512"), "{:?}", b.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_the_connection_not_the_server() {
    let (l, b) = mem(MIB).await;
    // Bad request magic, after a request in flight: its reply still comes.
    let mut c = RawClient::unix(&l.socket()).await;
    c.open("mem", false).await;
    b.hold(0);
    c.send(read(1, 0, 512), &[]).await;
    until("read in the backend", || b.in_flight() == 1).await;
    c.send_raw(b"GARBAGE GARBAGE GARBAGE GARBAGE!").await;
    b.release(1);
    let r = c.recv().await;
    assert_eq!((r.cookie, r.error), (1, 0));
    c.expect_closed().await;

    // A refused write too large to drain.
    let mut c = RawClient::unix(&l.socket()).await;
    c.open("mem", false).await;
    c.send(write(2, 0, 1 << 30), &[]).await;
    c.expect_closed().await;

    // Bad client flags; an oversized option; a non-fixed client's option.
    let mut c = RawClient::unix(&l.socket()).await;
    c.read_greeting().await;
    c.send_raw(&0x8000_0000u32.to_be_bytes()).await;
    c.expect_closed().await;
    let mut c = RawClient::unix(&l.socket()).await;
    c.greet().await;
    let mut huge = IHAVEOPT.to_be_bytes().to_vec();
    huge.extend_from_slice(&NBD_OPT_GO.to_be_bytes());
    huge.extend_from_slice(&(16u32 << 20).to_be_bytes());
    c.send_raw(&huge).await;
    c.expect_closed().await;
    let mut c = RawClient::unix(&l.socket()).await;
    c.read_greeting().await;
    c.send_raw(&0u32.to_be_bytes()).await;
    let mut list = IHAVEOPT.to_be_bytes().to_vec();
    list.extend_from_slice(&NBD_OPT_LIST.to_be_bytes());
    list.extend_from_slice(&0u32.to_be_bytes());
    c.send_raw(&list).await;
    c.expect_closed().await;

    // NBD_OPT_EXPORT_NAME of an unknown export: closed (no error reply exists).
    let mut c = RawClient::unix(&l.socket()).await;
    c.greet().await;
    let mut opt = IHAVEOPT.to_be_bytes().to_vec();
    opt.extend_from_slice(&NBD_OPT_EXPORT_NAME.to_be_bytes());
    opt.extend_from_slice(&4u32.to_be_bytes());
    opt.extend_from_slice(b"nope");
    c.send_raw(&opt).await;
    c.expect_closed().await;

    // The server still serves the next client (offset 0 is still held).
    let mut c = RawClient::unix(&l.socket()).await;
    c.open("mem", false).await;
    assert_eq!(c.call(read(3, 4096, 512), &[]).await.error, 0);
    until("closed connections are gone", || l.server.connections() == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_unknown_exports_and_unavailable_ones() {
    let (l, b) = mem(MIB).await;
    let other = Arc::new(MemBackend::new(2 * MIB));
    other.set_geometry(Err("no path claimed yet".into()));
    l.server
        .add_export(ExportConfig { description: "second".into(), ..ExportConfig::new("cold") }, other.clone())
        .unwrap();
    let mut c = RawClient::unix(&l.socket()).await;
    c.greet().await;
    let list = c.option(NBD_OPT_LIST, &[]).await;
    let names: Vec<Vec<u8>> = list.iter().filter(|(t, _)| *t == NBD_REP_SERVER).map(|(_, d)| d[4..].to_vec()).collect();
    assert_eq!(names, [b"coldsecond".to_vec(), b"mem".to_vec()]);
    assert_eq!(c.option(NBD_OPT_STARTTLS, &[]).await[0].0, NBD_REP_ERR_UNSUP);
    assert_eq!(c.option(NBD_OPT_EXTENDED_HEADERS, &[]).await[0].0, NBD_REP_ERR_UNSUP);
    let (typ, msg) = c.go("").await.unwrap_err();
    assert_eq!(typ, NBD_REP_ERR_UNKNOWN);
    assert!(msg.contains("name one of cold, mem"), "{msg}");
    let (typ, msg) = c.go("nope").await.unwrap_err();
    assert!(typ == NBD_REP_ERR_UNKNOWN && msg.contains("no export named \"nope\""), "{msg}");
    let (typ, msg) = c.go("cold").await.unwrap_err();
    assert_eq!(typ, NBD_REP_ERR_UNKNOWN);
    assert!(msg.contains("not available yet: no path claimed yet"), "{msg}");
    // Once the device has a geometry, the same connection gets it.
    other.set_geometry(Ok(Geometry { read_only: true, discard: None, ..BlockDevice::geometry(&*b).unwrap() }));
    let e = c.go("cold").await.unwrap();
    assert_eq!(e.flags & (NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_TRIM), NBD_FLAG_READ_ONLY);
    let r = c.call(write(1, 0, 512), &[0; 512]).await;
    assert_eq!(r.error, NbdError::Perm.code());
    assert!(other.log().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_export_config() {
    let l = Listening::start(|_| {}).await;
    let b = Arc::new(MemBackend::new(MIB));
    l.server.add_export(ExportConfig { read_only: true, ..ExportConfig::new("ro") }, b.clone()).unwrap();
    let mut c = RawClient::unix(&l.socket()).await;
    let e = c.open("ro", false).await;
    assert_ne!(e.flags & NBD_FLAG_READ_ONLY, 0);
    for req in [write(1, 0, 512), request(NBD_CMD_TRIM, 0, 2, 0, 512), request(NBD_CMD_WRITE_ZEROES, 0, 3, 0, 512)] {
        let payload = vec![0; req.length as usize * usize::from(req.typ == NBD_CMD_WRITE)];
        assert_eq!(c.call(req, &payload).await.error, NbdError::Perm.code(), "{req:?}");
    }
    assert_eq!(c.call(read(4, 0, 512), &[]).await.error, 0);
    assert_eq!(c.call(request(NBD_CMD_FLUSH, 0, 5, 0, 0), &[]).await.error, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_replies_holds_bounded_memory() {
    // 1 MiB in flight per connection, requests of 64 KiB held in the
    // backend: at most 1 MiB / 64 KiB + 1 reach it before reading pauses.
    let l = Listening::start(|c| {
        c.max_payload = 1 << 20;
        c.max_in_flight = 1 << 20;
    })
    .await;
    let b = Arc::new(MemBackend::new(16 * MIB));
    l.add("mem", b.clone());
    b.hold(0);
    let mut c = RawClient::unix(&l.socket()).await;
    c.open("mem", false).await;
    let chunk = vec![5u8; 64 << 10];
    let sender = tokio::spawn(async move {
        for i in 0..128u64 {
            c.send(write(i, 0, 64 << 10), &chunk).await;
        }
        c
    });
    until("writes reach the backend", || b.in_flight() >= 16).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(b.max_in_flight() <= 17, "{} writes in flight with a 1 MiB limit", b.max_in_flight());
    assert!(!sender.is_finished(), "8 MiB went into the server while 1 MiB was allowed");
    b.release(1000);
    let mut c = sender.await.unwrap();
    for _ in 0..128 {
        assert_eq!(c.recv().await.error, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disc_finishes_what_is_in_flight_then_closes() {
    let (l, b) = mem(MIB).await;
    let mut c = RawClient::unix(&l.socket()).await;
    c.open("mem", false).await;
    b.hold(4096);
    c.send(write(1, 4096, 512), &[3; 512]).await;
    until("write in the backend", || b.in_flight() == 1).await;
    c.send(request(NBD_CMD_DISC, 0, 2, 0, 0), &[]).await;
    b.release(1);
    let r = c.recv().await;
    assert_eq!((r.cookie, r.error), (1, 0));
    c.expect_closed().await;
    assert_eq!(b.contents(4096, 512), vec![3; 512]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_finishes_in_flight_requests() {
    let (l, b) = mem(MIB).await;
    let mut c = RawClient::unix(&l.socket()).await;
    c.open("mem", true).await;
    let mut negotiating = RawClient::unix(&l.socket()).await;
    negotiating.greet().await;
    b.hold(0);
    c.send(write(1, 0, 512), &[7; 512]).await;
    until("write in the backend", || b.in_flight() == 1).await;
    let server = Arc::new(l);
    let stopping = tokio::spawn({
        let s = server.clone();
        async move { s.server.shutdown().await }
    });
    // Listeners close, and the socket file goes away.
    until("the socket file is removed", || !server.socket().exists()).await;
    assert!(tokio::net::TcpStream::connect(server.tcp()).await.is_err(), "TCP still accepts");
    // A client still negotiating is told the server is going.
    let r = negotiating.option(NBD_OPT_LIST, &[]).await;
    assert_eq!(r.last().unwrap().0, NBD_REP_ERR_SHUTDOWN);
    assert!(!stopping.is_finished(), "shutdown waits for the write in flight");
    b.release(1);
    let r = c.recv().await;
    assert_eq!((r.cookie, r.error), (1, 0));
    c.expect_closed().await;
    negotiating.option(NBD_OPT_ABORT, &[]).await;
    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("shutdown completes").unwrap();
    assert_eq!(b.contents(0, 512), vec![7; 512]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_export_closes_only_its_connections() {
    let (l, b) = mem(MIB).await;
    let keep = Arc::new(MemBackend::new(MIB));
    l.add("keep", keep.clone());
    let mut gone = RawClient::unix(&l.socket()).await;
    gone.open("mem", false).await;
    let mut kept = RawClient::tcp(l.tcp()).await;
    kept.open("keep", false).await;
    b.hold(0);
    gone.send(read(1, 0, 512), &[]).await;
    until("read in the backend", || b.in_flight() == 1).await;
    let server = Arc::new(l);
    let removing = tokio::spawn({
        let s = server.clone();
        async move { s.server.remove_export("mem").await }
    });
    until("the export is gone from the table", || server.server.exports() == ["keep"]).await;
    assert!(!removing.is_finished());
    b.release(1);
    assert_eq!(gone.recv().await.error, 0);
    gone.expect_closed().await;
    assert!(removing.await.unwrap());
    assert!(!server.server.remove_export("mem").await, "already removed");
    assert_eq!(kept.call(read(2, 0, 512), &[]).await.error, 0);
    let mut late = RawClient::unix(&server.socket()).await;
    late.greet().await;
    assert_eq!(late.go("mem").await.unwrap_err().0, NBD_REP_ERR_UNKNOWN);
    // The name can be used again.
    server.add("mem", Arc::new(MemBackend::new(MIB)));
    late.go("mem").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_permissions_and_stale_files() {
    let l: Listening<MemBackend> = Listening::start(|c| c.handshake_timeout = Duration::from_millis(300)).await;
    let mode = std::fs::metadata(l.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A live socket is not taken over.
    let again: Result<Server<MemBackend>, _> =
        Server::bind(ServerConfig::new(vec![ListenSpec::unix(l.socket())])).await;
    assert!(matches!(again, Err(ServerError::SocketInUse { .. })), "{again:?}");
    // A client that never finishes the handshake is closed.
    let mut idle = RawClient::unix(&l.socket()).await;
    idle.read_greeting().await;
    idle.expect_closed().await;
    // Duplicate and empty export names are refused.
    l.add("x", Arc::new(MemBackend::new(MIB)));
    assert!(l.server.add_export(ExportConfig::new("x"), Arc::new(MemBackend::new(MIB))).is_err());
    assert!(l.server.add_export(ExportConfig::new(""), Arc::new(MemBackend::new(MIB))).is_err());
    // A stale socket file (its server gone without cleaning up) is replaced,
    // with the mode asked for; a regular file is not touched.
    let path = l.socket();
    let stale = std::os::unix::net::UnixListener::bind(l.dir.path().join("stale.sock")).unwrap();
    drop(stale);
    let spec = ListenSpec::Unix { path: l.dir.path().join("stale.sock"), mode: 0o660, owner: None };
    let s2: Server<MemBackend> = Server::bind(ServerConfig::new(vec![spec])).await.expect("stale socket replaced");
    let mode = std::fs::metadata(l.dir.path().join("stale.sock")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    drop(s2);
    std::fs::write(l.dir.path().join("file"), b"x").unwrap();
    let r: Result<Server<MemBackend>, _> =
        Server::bind(ServerConfig::new(vec![ListenSpec::unix(l.dir.path().join("file"))])).await;
    assert!(matches!(r, Err(ServerError::NotASocket { .. })), "{r:?}");
    assert!(path.exists());
    // A failed bind leaves no socket file of the addresses bound before it.
    let taken = ListenSpec::Tcp(l.tcp());
    let first = l.dir.path().join("first.sock");
    let r: Result<Server<MemBackend>, _> = Server::bind(ServerConfig::new(vec![ListenSpec::unix(&first), taken])).await;
    assert!(matches!(r, Err(ServerError::Listen { .. })), "{r:?}");
    assert!(!first.exists(), "socket file left behind");
}
