//! Helpers for the NBD tests: an in-memory backend (for driver tests that
//! need to hold, fail or count requests), a raw protocol client (for
//! exact replies and misbehaviour no real client produces), and runners
//! of the real clients.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use mpio_mpath::{BlockDevice, Discard, Errno, Geometry, IoError, ReadBuf, WriteCache, ZeroFlags};
use mpio_nbd::consts::*;
use mpio_nbd::transmission::Request;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;

// ---- In-memory backend ------------------------------------------------------

/// A RAM disk that records what it was asked, can hold requests at one
/// offset until released, and can fail requests at one offset.
#[derive(Debug)]
pub struct MemBackend {
    data: Mutex<Vec<u8>>,
    geometry: Mutex<Result<Geometry, String>>,
    /// Requests touching this offset wait for a permit of `gate`.
    held: Mutex<Option<u64>>,
    gate: Semaphore,
    fail: Mutex<Option<(u64, Errno)>>,
    log: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl MemBackend {
    /// `size` bytes of zeroes, 512-byte blocks, trim supported.
    pub fn new(size: u64) -> MemBackend {
        let geometry = Geometry {
            capacity: size,
            logical_block: 512,
            physical_block: 4096,
            max_transfer: None,
            read_only: false,
            discard: Some(Discard { granularity: 512, alignment: 0, max_bytes: None }),
            write_zeroes: true,
            write_cache: WriteCache::ASSUMED,
            shared_flush: true,
            rotational: None,
        };
        MemBackend {
            data: Mutex::new(vec![0; size as usize]),
            geometry: Mutex::new(Ok(geometry)),
            held: Mutex::new(None),
            gate: Semaphore::new(0),
            fail: Mutex::new(None),
            log: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    /// Replaces the geometry (or makes the export unavailable).
    pub fn set_geometry(&self, g: Result<Geometry, String>) {
        *self.geometry.lock().unwrap() = g;
    }

    /// Holds requests at `offset` until [`MemBackend::release`].
    pub fn hold(&self, offset: u64) {
        *self.held.lock().unwrap() = Some(offset);
    }

    /// Lets `n` held requests go.
    pub fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }

    /// Fails requests at `offset` with `error`.
    pub fn fail_at(&self, offset: u64, error: Errno) {
        *self.fail.lock().unwrap() = Some((offset, error));
    }

    /// Operations seen, as `op offset+len [flags]`.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Most requests that were in the backend at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Requests in the backend now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// A copy of the bytes.
    pub fn contents(&self, offset: u64, len: usize) -> Vec<u8> {
        self.data.lock().unwrap()[offset as usize..offset as usize + len].to_vec()
    }

    async fn enter(&self, entry: String, offset: u64) -> Result<InFlight<'_>, IoError> {
        self.log.lock().unwrap().push(entry);
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(n, Ordering::SeqCst);
        let guard = InFlight(&self.in_flight);
        let held = *self.held.lock().unwrap();
        if held == Some(offset) {
            self.gate.acquire().await.expect("gate open").forget();
        }
        if let Some((at, error)) = *self.fail.lock().unwrap()
            && at == offset
        {
            return Err(IoError::device(error, format!("injected failure at {at}")));
        }
        Ok(guard)
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl BlockDevice for MemBackend {
    fn geometry(&self) -> Result<Geometry, String> {
        self.geometry.lock().unwrap().clone()
    }

    async fn read(&self, offset: u64, len: u64) -> Result<ReadBuf, IoError> {
        let _g = self.enter(format!("read {offset}+{len}"), offset).await?;
        let data = self.data.lock().unwrap();
        let (a, b) = (offset as usize, offset as usize + len as usize);
        // Two buffers, as a read over two iSCSI PDUs would give.
        let mid = a + (len as usize / 2);
        Ok(ReadBuf::from(vec![Bytes::copy_from_slice(&data[a..mid]), Bytes::copy_from_slice(&data[mid..b])]))
    }

    async fn write(&self, offset: u64, payload: Bytes, fua: bool) -> Result<(), IoError> {
        let _g =
            self.enter(format!("write {offset}+{}{}", payload.len(), if fua { " fua" } else { "" }), offset).await?;
        let at = offset as usize;
        self.data.lock().unwrap()[at..at + payload.len()].copy_from_slice(&payload);
        Ok(())
    }

    async fn flush(&self) -> Result<(), IoError> {
        let _g = self.enter("flush".into(), u64::MAX).await?;
        Ok(())
    }

    async fn discard(&self, offset: u64, len: u64, fua: bool) -> Result<(), IoError> {
        let _g = self.enter(format!("trim {offset}+{len}{}", if fua { " fua" } else { "" }), offset).await?;
        let at = offset as usize;
        self.data.lock().unwrap()[at..at + len as usize].fill(0);
        Ok(())
    }

    async fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags) -> Result<(), IoError> {
        let f = format!("{}{}", if flags.fua { " fua" } else { "" }, if flags.no_hole { " no_hole" } else { "" });
        let _g = self.enter(format!("zero {offset}+{len}{f}"), offset).await?;
        let at = offset as usize;
        self.data.lock().unwrap()[at..at + len as usize].fill(0);
        Ok(())
    }
}

// ---- Raw client ---------------------------------------------------------------

/// What `NBD_OPT_GO` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Export {
    /// Size in bytes.
    pub size: u64,
    /// Transmission flags.
    pub flags: u16,
    /// (minimum, preferred, maximum) if sent.
    pub block: Option<(u32, u32, u32)>,
}

/// One reply in the transmission phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The request's cookie.
    pub cookie: u64,
    /// 0 or an NBD error.
    pub error: u32,
    /// Read data.
    pub data: Vec<u8>,
    /// The message of a structured error chunk.
    pub message: String,
}

/// A byte-level NBD client, for exact replies and for misbehaving on
/// purpose. Every read is bounded by a timeout so a server that does not
/// answer fails the test instead of hanging it.
pub struct RawClient<S> {
    s: S,
    /// Length of each outstanding read, by cookie (simple replies carry no
    /// length).
    reads: HashMap<u64, u32>,
    structured: bool,
}

/// How long a reply may take.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

impl RawClient<tokio::net::UnixStream> {
    /// Connects to a unix socket.
    pub async fn unix(path: &Path) -> Self {
        let s = tokio::net::UnixStream::connect(path).await.unwrap_or_else(|e| panic!("connect {path:?}: {e}"));
        RawClient { s, reads: HashMap::new(), structured: false }
    }
}

impl RawClient<tokio::net::TcpStream> {
    /// Connects over TCP.
    pub async fn tcp(addr: std::net::SocketAddr) -> Self {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        RawClient { s, reads: HashMap::new(), structured: false }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        tokio::time::timeout(REPLY_TIMEOUT, self.s.read_exact(&mut v))
            .await
            .expect("reply within the timeout")
            .expect("server sent the bytes");
        v
    }

    async fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.read_exact(2).await.try_into().unwrap())
    }

    async fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.read_exact(4).await.try_into().unwrap())
    }

    async fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.read_exact(8).await.try_into().unwrap())
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("send");
    }

    /// Reads the greeting and checks it.
    pub async fn read_greeting(&mut self) {
        assert_eq!(self.u64().await, NBDMAGIC);
        assert_eq!(self.u64().await, IHAVEOPT);
        assert_eq!(self.u16().await, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    }

    /// Reads the greeting and sends fixed-newstyle + no-zeroes flags.
    pub async fn greet(&mut self) {
        self.read_greeting().await;
        self.send_raw(&(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES).to_be_bytes()).await;
    }

    /// Sends an option and collects its replies up to the final one:
    /// (reply type, data) each.
    pub async fn option(&mut self, code: u32, data: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut msg = IHAVEOPT.to_be_bytes().to_vec();
        msg.extend_from_slice(&code.to_be_bytes());
        msg.extend_from_slice(&(data.len() as u32).to_be_bytes());
        msg.extend_from_slice(data);
        self.send_raw(&msg).await;
        let mut out = Vec::new();
        loop {
            assert_eq!(self.u64().await, OPTION_REPLY_MAGIC);
            assert_eq!(self.u32().await, code);
            let typ = self.u32().await;
            let len = self.u32().await as usize;
            let d = self.read_exact(len).await;
            out.push((typ, d));
            if typ == NBD_REP_ACK || typ & NBD_REP_FLAG_ERROR != 0 {
                return out;
            }
        }
    }

    /// `NBD_OPT_STRUCTURED_REPLY`, expecting ACK.
    pub async fn structured(&mut self) {
        let r = self.option(NBD_OPT_STRUCTURED_REPLY, &[]).await;
        assert_eq!(r, vec![(NBD_REP_ACK, vec![])]);
        self.structured = true;
    }

    /// `NBD_OPT_GO` (asking for block sizes): the export, or the error
    /// reply's type and message.
    pub async fn go(&mut self, name: &str) -> Result<Export, (u32, String)> {
        let mut data = (name.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&1u16.to_be_bytes());
        data.extend_from_slice(&NBD_INFO_BLOCK_SIZE.to_be_bytes());
        let replies = self.option(NBD_OPT_GO, &data).await;
        let (last, last_data) = replies.last().cloned().expect("a final reply");
        if last != NBD_REP_ACK {
            return Err((last, String::from_utf8_lossy(&last_data).into_owned()));
        }
        let mut export = Export { size: 0, flags: 0, block: None };
        for (typ, d) in &replies {
            if *typ != NBD_REP_INFO {
                continue;
            }
            let word = |at: usize| u32::from_be_bytes(d[at..at + 4].try_into().unwrap());
            match u16::from_be_bytes([d[0], d[1]]) {
                NBD_INFO_EXPORT => {
                    export.size = u64::from_be_bytes(d[2..10].try_into().unwrap());
                    export.flags = u16::from_be_bytes([d[10], d[11]]);
                }
                NBD_INFO_BLOCK_SIZE => export.block = Some((word(2), word(6), word(10))),
                _ => {}
            }
        }
        Ok(export)
    }

    /// Greets and picks `name`, panicking on refusal.
    pub async fn open(&mut self, name: &str, structured: bool) -> Export {
        self.greet().await;
        if structured {
            self.structured().await;
        }
        self.go(name).await.unwrap_or_else(|e| panic!("GO {name:?} refused: {e:?}"))
    }

    /// Sends a request (and its payload).
    pub async fn send(&mut self, req: Request, payload: &[u8]) {
        if req.typ == NBD_CMD_READ {
            self.reads.insert(req.cookie, req.length);
        }
        let mut msg = Vec::with_capacity(28 + payload.len());
        msg.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        msg.extend_from_slice(&req.flags.to_be_bytes());
        msg.extend_from_slice(&req.typ.to_be_bytes());
        msg.extend_from_slice(&req.cookie.to_be_bytes());
        msg.extend_from_slice(&req.offset.to_be_bytes());
        msg.extend_from_slice(&req.length.to_be_bytes());
        msg.extend_from_slice(payload);
        self.send_raw(&msg).await;
    }

    /// Receives the next reply (all chunks of a structured one).
    pub async fn recv(&mut self) -> Reply {
        match self.u32().await {
            SIMPLE_REPLY_MAGIC => {
                let error = self.u32().await;
                let cookie = self.u64().await;
                let len = self.reads.remove(&cookie).unwrap_or(0);
                let data = if error == 0 { self.read_exact(len as usize).await } else { Vec::new() };
                Reply { cookie, error, data, message: String::new() }
            }
            STRUCTURED_REPLY_MAGIC => {
                assert!(self.structured, "structured reply without negotiation");
                let mut reply = Reply { cookie: 0, error: 0, data: Vec::new(), message: String::new() };
                let mut first = true;
                loop {
                    if !first {
                        assert_eq!(self.u32().await, STRUCTURED_REPLY_MAGIC);
                    }
                    first = false;
                    let flags = self.u16().await;
                    let typ = self.u16().await;
                    reply.cookie = self.u64().await;
                    let len = self.u32().await as usize;
                    let body = self.read_exact(len).await;
                    match typ {
                        NBD_REPLY_TYPE_OFFSET_DATA => reply.data.extend_from_slice(&body[8..]),
                        NBD_REPLY_TYPE_NONE => {}
                        NBD_REPLY_TYPE_ERROR => {
                            reply.error = u32::from_be_bytes(body[..4].try_into().unwrap());
                            reply.message = String::from_utf8_lossy(&body[6..]).into_owned();
                        }
                        other => panic!("unexpected chunk type {other:#x}"),
                    }
                    if flags & NBD_REPLY_FLAG_DONE != 0 {
                        self.reads.remove(&reply.cookie);
                        return reply;
                    }
                }
            }
            magic => panic!("bad reply magic {magic:#x}"),
        }
    }

    /// A request and its reply.
    pub async fn call(&mut self, req: Request, payload: &[u8]) -> Reply {
        self.send(req, payload).await;
        let r = self.recv().await;
        assert_eq!(r.cookie, req.cookie, "reply to another request");
        r
    }

    /// Expects the server to close the connection (EOF or reset, with no
    /// further bytes), within the reply timeout.
    pub async fn expect_closed(&mut self) {
        let mut b = [0u8; 64];
        match tokio::time::timeout(REPLY_TIMEOUT, self.s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("expected the server to close; got {n} more bytes: {:02x?}", &b[..n]),
            Err(_) => panic!("the server did not close the connection within {REPLY_TIMEOUT:?}"),
        }
    }
}

/// A request with cookie `cookie`.
pub fn request(typ: u16, flags: u16, cookie: u64, offset: u64, length: u32) -> Request {
    Request { flags, typ, cookie, offset, length }
}

// ---- Real clients -------------------------------------------------------------

/// Runs a program to completion (asynchronously, so the server in the
/// same runtime keeps serving), panicking with its output on failure or
/// after `timeout`. Returns stdout.
pub async fn run(program: &str, args: &[&str], timeout: Duration) -> String {
    let out = run_status(program, args, timeout).await;
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a program to completion and returns its output, whatever the exit
/// status.
pub async fn run_status(program: &str, args: &[&str], timeout: Duration) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(true).stdin(std::process::Stdio::null());
    let child = cmd.output();
    match tokio::time::timeout(timeout, child).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!(
            "cannot run {program}: {e} (install it: scripts/install-test-deps.sh, package {})",
            mpio_testbed::cmd::package_for(program)
        ),
        Err(_) => panic!("{program} {args:?} did not finish within {timeout:?}"),
    }
}
