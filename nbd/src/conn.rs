//! One client connection: the handshake, then the transmission phase.
//!
//! Everything of a connection runs in one task, so a request goes from the
//! socket to the backend and its reply back to the socket without a hop to
//! another thread (a cross-core wake-up costs more than the rest of a
//! 4 KiB request on a small VM). Concurrency comes from polling every
//! in-flight request's future in that task (`FuturesUnordered`):
//!
//! ```text
//!            ┌────────── loop (tokio::select!, biased) ───────────┐
//!  socket ──>│ read_buf ─> decode + validate ─> push future       │
//!            │                     └─ refused: error reply ──┐    │
//!            │ in-flight futures complete (any order) ─> reply queue ──> writev ──> socket
//!            └────────────────────────────────────────────────────┘
//! ```
//!
//! Completions are taken before writing, so replies that finish together
//! leave in one `writev`. Reading pauses while the connection's charge
//! (write payloads buffered, read data expected, replies unwritten) is
//! over the limit, or too many requests are in flight: a client that
//! floods requests or never reads its replies holds a bounded amount of
//! memory. A started backend call is always driven to its end, even when
//! the client is gone, so the device never sees a request vanish midway.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use mpio_throttle::{LogLimit, warn_limited};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::debug;

use mpio_mpath::{BlockDevice, IoError, ReadBuf, ZeroFlags};

use crate::consts::*;
use crate::errors::reply_error;
use crate::negotiate::{Agreed, Catalog, Negotiation, NegotiationConfig, Outcome};
use crate::outq::OutQueue;
use crate::reply::{Answer, queue_reply};
use crate::tracker::Guard;
use crate::transmission::{Command, ExportParams, Request, decode_request, validate_request};

/// A stream socket whose halves can be used at once from one task.
pub(crate) trait Socket: Send + 'static {
    /// The read half.
    type Read<'a>: AsyncRead + Unpin + Send
    where
        Self: 'a;
    /// The write half.
    type Write<'a>: AsyncWrite + Unpin + Send
    where
        Self: 'a;
    /// Both halves, borrowed.
    fn halves(&mut self) -> (Self::Read<'_>, Self::Write<'_>);
}

impl Socket for tokio::net::TcpStream {
    type Read<'a> = tokio::net::tcp::ReadHalf<'a>;
    type Write<'a> = tokio::net::tcp::WriteHalf<'a>;
    fn halves(&mut self) -> (Self::Read<'_>, Self::Write<'_>) {
        self.split()
    }
}

impl Socket for tokio::net::UnixStream {
    type Read<'a> = tokio::net::unix::ReadHalf<'a>;
    type Write<'a> = tokio::net::unix::WriteHalf<'a>;
    fn halves(&mut self) -> (Self::Read<'_>, Self::Write<'_>) {
        self.split()
    }
}

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) negotiation: NegotiationConfig,
    /// Bytes a connection may have in flight before reading pauses.
    pub(crate) max_in_flight: usize,
    /// Requests a connection may have in flight before reading pauses.
    pub(crate) max_requests: usize,
    /// Time a client has to finish the handshake.
    pub(crate) handshake_timeout: Duration,
}

/// An export picked by a client: what its connections need.
pub(crate) struct ExportHandle<B> {
    /// The backend.
    pub(crate) backend: Arc<B>,
    /// Becomes true when the export is removed.
    pub(crate) removed: watch::Receiver<bool>,
    /// Keeps the export's connection count up while the connection lives.
    pub(crate) _guard: Guard,
}

/// Serves one connection to the end. `stop` becomes true when the server
/// shuts down.
pub(crate) async fn serve<S, C, B>(
    mut sock: S,
    peer: &str,
    catalog: &C,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    S: Socket,
    C: Catalog<Export = ExportHandle<B>>,
    B: BlockDevice,
{
    let (mut rd, mut wr) = sock.halves();
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let Some(agreed) = handshake(&mut rd, &mut wr, &mut rbuf, peer, catalog, limits, &mut stop).await else {
        return;
    };
    debug!(peer, export = agreed.name, params = ?agreed.params, "transmission begins");
    let Agreed { export, name, params } = agreed;
    let ExportHandle { backend, mut removed, _guard } = export;
    let stop = async move {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = removed.wait_for(|r| *r) => {}
        }
    };
    let conn = Conn { peer, export: &name, params, limits };
    conn.transmission(&mut rd, &mut wr, &*backend, rbuf, stop).await;
}

const READ_CHUNK: usize = 64 * 1024;

// A client that breaks the protocol, or a device that fails every request,
// repeats the same line as fast as it can: a few a second reach the log
// (mpio_throttle), the next one written counts those left out.
static HANDSHAKE_TIMEOUT: LogLimit = LogLimit::per_second(5);
static HANDSHAKE_REFUSED: LogLimit = LogLimit::per_second(5);
static PROTOCOL_BROKEN: LogLimit = LogLimit::per_second(5);
static REQUEST_FAILED: LogLimit = LogLimit::per_second(5);

async fn handshake<R, W, C, E>(
    rd: &mut R,
    wr: &mut W,
    rbuf: &mut BytesMut,
    peer: &str,
    catalog: &C,
    limits: Limits,
    stop: &mut watch::Receiver<bool>,
) -> Option<Agreed<E>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    C: Catalog<Export = E>,
{
    let mut nego = Negotiation::new(limits.negotiation);
    let mut out = Vec::new();
    // The whole handshake, replies included: a client that never reads
    // them must not hold the connection past it.
    let mut deadline = tokio::time::Instant::now() + limits.handshake_timeout;
    let timed_out = || {
        warn_limited!(HANDSHAKE_TIMEOUT, peer, "handshake not finished within {:?}: closing", limits.handshake_timeout);
    };
    let mut stopping = false;
    loop {
        nego.poll_transmit(&mut out);
        if !out.is_empty() {
            match tokio::time::timeout_at(deadline, wr.write_all(&out)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    debug!(peer, "handshake: write failed: {e}");
                    return None;
                }
                Err(_) => {
                    timed_out();
                    return None;
                }
            }
            out.clear();
        }
        match nego.outcome() {
            Some(Outcome::Go(agreed)) => return Some(agreed),
            Some(Outcome::Abort) => {
                debug!(peer, "client aborted the handshake");
                return None;
            }
            None => {}
        }
        rbuf.reserve(4096);
        tokio::select! {
            r = rd.read_buf(rbuf) => match r {
                Ok(0) => {
                    debug!(peer, "client closed during the handshake");
                    return None;
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(peer, "handshake: read failed: {e}");
                    return None;
                }
            },
            () = tokio::time::sleep_until(deadline) => {
                timed_out();
                return None;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                // Further options get NBD_REP_ERR_SHUTDOWN; a client that
                // does not take the hint is closed shortly.
                stopping = true;
                nego.shutdown();
                deadline = deadline.min(tokio::time::Instant::now() + Duration::from_secs(2));
                continue;
            }
        }
        match nego.handle_input(rbuf, catalog) {
            Ok(n) => rbuf.advance(n),
            Err(e) => {
                nego.poll_transmit(&mut out);
                let _ = tokio::time::timeout_at(deadline, wr.write_all(&out)).await;
                warn_limited!(HANDSHAKE_REFUSED, peer, "handshake refused, closing: {e}");
                return None;
            }
        }
    }
}

/// Bytes charged for a request besides its payload: reply headers and
/// bookkeeping, so even empty requests count against the limit.
const REQUEST_OVERHEAD: usize = 64;

/// What a finished request's future yields.
struct Finished {
    req: Request,
    answer: Answer,
    charge: usize,
}

async fn execute<B: BlockDevice>(backend: &B, req: Request, cmd: Command, payload: Bytes, charge: usize) -> Finished {
    let fua = req.flags & NBD_CMD_FLAG_FUA != 0;
    let (offset, len) = (req.offset, u64::from(req.length));
    let result: Result<Option<ReadBuf>, IoError> = match cmd {
        // Empty ranges are no-ops the backend never sees (the spec leaves
        // them unspecified; the reply must still come).
        Command::Read | Command::Write | Command::Trim | Command::WriteZeroes if req.length == 0 => {
            return Finished { req, answer: Answer::Done, charge };
        }
        Command::Read => backend.read(offset, len).await.map(Some),
        Command::Write => backend.write(offset, payload, fua).await.map(|()| None),
        Command::Flush => backend.flush().await.map(|()| None),
        Command::Trim => backend.discard(offset, len, fua).await.map(|()| None),
        Command::WriteZeroes => {
            let flags = ZeroFlags { fua, no_hole: req.flags & NBD_CMD_FLAG_NO_HOLE != 0 };
            backend.write_zeroes(offset, len, flags).await.map(|()| None)
        }
        // Handled by the reader; never executed.
        Command::Disc => Ok(None),
    };
    let answer = match result {
        Ok(Some(d)) => Answer::Data(d),
        Ok(None) => Answer::Done,
        Err(e) => {
            let (error, message) = reply_error(e);
            Answer::Failed(error, message)
        }
    };
    Finished { req, answer, charge }
}

/// The transmission phase of one connection.
struct Conn<'a> {
    peer: &'a str,
    export: &'a str,
    params: ExportParams,
    limits: Limits,
}

/// The next thing the buffered input holds.
enum Item {
    /// A request to run, with its payload and charge.
    Run(Request, Command, Bytes, usize),
    /// A request refused before it ran.
    Refuse(Request, NbdError, String),
    /// Not enough bytes yet.
    NeedMore,
    /// `NBD_CMD_DISC`: read nothing more.
    Disc,
    /// The stream broke the protocol: read nothing more.
    Fatal(String),
}

/// The payload of a refused `NBD_CMD_WRITE` still being discarded, and
/// the error to answer once it is.
struct Skip {
    left: usize,
    req: Request,
    error: NbdError,
    message: String,
}

/// Largest payload of a refused write that is read and discarded to keep
/// the stream in sync; beyond it the connection is closed. The spec
/// (size constraints): payloads up to 32 MiB "SHOULD NOT be considered a
/// denial of service attack".
const DRAIN_LIMIT: u32 = 32 << 20;

enum Event {
    Finished(Finished),
    Wrote(std::io::Result<usize>),
    Read(std::io::Result<usize>),
    Stop,
}

impl Conn<'_> {
    async fn transmission<R, W, B>(
        &self,
        rd: &mut R,
        wr: &mut W,
        backend: &B,
        mut rbuf: BytesMut,
        stop: impl Future<Output = ()>,
    ) where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
        B: BlockDevice,
    {
        let peer = self.peer;
        let mut stop = std::pin::pin!(stop);
        let mut inflight = FuturesUnordered::new();
        let mut outq = OutQueue::default();
        let mut scratch = Vec::with_capacity(64);
        let mut charged = 0usize;
        let mut skip: Option<Skip> = None;
        // More requests may come.
        let mut open = true;
        // The server or the export is stopping.
        let mut stopping = false;
        // The socket failed: replies are dropped, in-flight requests still
        // run to their end.
        let mut dead = false;
        loop {
            while open && charged < self.limits.max_in_flight && inflight.len() < self.limits.max_requests {
                match self.next_item(&mut rbuf, &mut skip) {
                    Item::Run(req, cmd, payload, charge) => {
                        charged += charge;
                        inflight.push(execute(backend, req, cmd, payload, charge));
                    }
                    Item::Refuse(req, error, message) => {
                        debug!(peer, export = self.export, ?req, ?error, "request refused: {message}");
                        charged += REQUEST_OVERHEAD;
                        let answer = Answer::Failed(error, message);
                        queue_reply(&mut outq, &mut scratch, self.params.structured, &req, answer, REQUEST_OVERHEAD);
                    }
                    Item::NeedMore => break,
                    Item::Disc => {
                        debug!(peer, export = self.export, "client disconnects (NBD_CMD_DISC)");
                        open = false;
                    }
                    Item::Fatal(why) => {
                        warn_limited!(PROTOCOL_BROKEN, peer, export = self.export, "closing the connection: {why}");
                        open = false;
                    }
                }
            }
            if !open && inflight.is_empty() && (outq.is_empty() || dead) {
                break;
            }
            let can_read = open && charged < self.limits.max_in_flight && inflight.len() < self.limits.max_requests;
            if can_read && rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
                rbuf.reserve(READ_CHUNK);
            }
            let mut iov = [IoSlice::new(&[]); 64];
            let niov = if dead { 0 } else { outq.io_slices(&mut iov) };
            let event = tokio::select! {
                biased;
                Some(f) = inflight.next(), if !inflight.is_empty() => Event::Finished(f),
                r = wr.write_vectored(iov.get(..niov).unwrap_or_default()), if niov > 0 => Event::Wrote(r),
                r = rd.read_buf(&mut rbuf), if can_read => Event::Read(r),
                () = stop.as_mut(), if !stopping => Event::Stop,
            };
            match event {
                Event::Finished(f) => {
                    if let Answer::Failed(error, message) = &f.answer {
                        warn_limited!(
                            REQUEST_FAILED,
                            peer,
                            export = self.export,
                            req = ?f.req,
                            ?error,
                            "request failed: {message}"
                        );
                    }
                    if dead {
                        charged -= f.charge;
                    } else {
                        queue_reply(&mut outq, &mut scratch, self.params.structured, &f.req, f.answer, f.charge);
                    }
                }
                Event::Wrote(Ok(n)) if n > 0 => charged -= outq.advance(n),
                Event::Wrote(r) => {
                    debug!(peer, export = self.export, "write to the client failed: {r:?}");
                    dead = true;
                    open = false;
                    charged -= outq.clear();
                }
                Event::Read(Ok(0)) => {
                    if !rbuf.is_empty() || skip.is_some() {
                        debug!(peer, export = self.export, "client closed in the middle of a request");
                    }
                    open = false;
                }
                Event::Read(Ok(_)) => {}
                Event::Read(Err(e)) => {
                    debug!(peer, export = self.export, "read from the client failed: {e}");
                    open = false;
                }
                Event::Stop => {
                    debug!(peer, export = self.export, "stopping: finishing {} requests in flight", inflight.len());
                    stopping = true;
                    open = false;
                }
            }
        }
        if !dead {
            let _ = wr.shutdown().await;
        }
    }

    /// Takes the next request from the buffered input, if complete.
    fn next_item(&self, rbuf: &mut BytesMut, skip: &mut Option<Skip>) -> Item {
        if let Some(s) = skip {
            let n = s.left.min(rbuf.len());
            rbuf.advance(n);
            s.left -= n;
            if s.left > 0 {
                return Item::NeedMore;
            }
            return match skip.take() {
                Some(s) => Item::Refuse(s.req, s.error, s.message),
                None => Item::NeedMore,
            };
        }
        let (req, header_len) = match decode_request(rbuf) {
            Ok(Some(r)) => r,
            Ok(None) => return Item::NeedMore,
            Err(e) => return Item::Fatal(e.to_string()),
        };
        if req.typ == NBD_CMD_DISC {
            rbuf.advance(header_len);
            return Item::Disc;
        }
        let payload_len = req.payload_len();
        let checked = validate_request(&req, &self.params);
        let Ok(payload) = usize::try_from(payload_len) else {
            return Item::Fatal(format!("write payload of {payload_len} bytes"));
        };
        match checked {
            Ok(cmd) => {
                let total = header_len + payload;
                if rbuf.len() < total {
                    rbuf.reserve(total - rbuf.len());
                    return Item::NeedMore;
                }
                rbuf.advance(header_len);
                let data = rbuf.split_to(payload).freeze();
                let charge = REQUEST_OVERHEAD + if cmd == Command::Read { req.length as usize } else { payload };
                Item::Run(req, cmd, data, charge)
            }
            Err(error) => {
                let message = refusal_message(&req, error, &self.params);
                rbuf.advance(header_len);
                if payload == 0 {
                    return Item::Refuse(req, error, message);
                }
                if payload_len > DRAIN_LIMIT {
                    return Item::Fatal(format!(
                        "refused write carries {payload_len} bytes, more than will be drained"
                    ));
                }
                *skip = Some(Skip { left: payload, req, error, message });
                self.next_item(rbuf, skip)
            }
        }
    }
}

/// Why a request was refused, for humans (structured-reply error chunks
/// and logs).
fn refusal_message(req: &Request, error: NbdError, p: &ExportParams) -> String {
    let what = match Command::from_wire(req.typ) {
        Some(c) => format!("{c:?}"),
        None => format!("command {}", req.typ),
    };
    match error {
        NbdError::Perm => format!("{what}: the export is read-only"),
        NbdError::NoSpc => {
            format!("{what} of {} bytes at {} goes past the end ({} bytes)", req.length, req.offset, p.size)
        }
        _ if Command::from_wire(req.typ).is_none() => format!("{what} is not supported"),
        _ => format!(
            "{what} (flags {:#x}) of {} bytes at {} refused: flags must be ones the export advertised, \
             offset and length multiples of {} and within the {}-byte export, reads and writes at most {} bytes",
            req.flags, req.length, req.offset, p.block.minimum, p.size, p.block.maximum
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::negotiate::ExportInfo;
    use crate::tests::option_bytes;

    /// Many exports with long descriptions: every NBD_OPT_LIST answer is
    /// large.
    struct Many;

    impl Catalog for Many {
        type Export = ExportHandle<mpio_mpath::Device>;

        fn lookup(&self, name: &str) -> Result<(Self::Export, ExportInfo), String> {
            Err(format!("no export {name:?}"))
        }

        fn list(&self) -> Vec<(String, String)> {
            (0..64).map(|i| (format!("export{i}"), "d".repeat(1000))).collect()
        }
    }

    /// A client that sends options and never reads the answers must be
    /// closed at the handshake deadline: the answers fill the socket, and
    /// the server's writes were outside the deadline.
    #[tokio::test]
    async fn a_client_that_never_reads_is_closed_at_the_handshake_deadline() {
        let (server, client) = std::os::unix::net::UnixStream::pair().unwrap();
        for s in [&server, &client] {
            let s = socket2::SockRef::from(s);
            s.set_send_buffer_size(4096).unwrap();
            s.set_recv_buffer_size(4096).unwrap();
            s.set_nonblocking(true).unwrap();
        }
        let server = tokio::net::UnixStream::from_std(server).unwrap();
        let mut client = tokio::net::UnixStream::from_std(client).unwrap();
        let limits = Limits {
            negotiation: NegotiationConfig::default(),
            max_in_flight: 64 << 20,
            max_requests: 256,
            handshake_timeout: Duration::from_millis(300),
        };
        let (_stop, stop) = watch::channel(false);
        let t0 = Instant::now();
        let served = tokio::spawn(async move { serve(server, "test", &Many, limits, stop).await });
        let mut hello = (NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES).to_be_bytes().to_vec();
        for _ in 0..64 {
            hello.extend(option_bytes(NBD_OPT_LIST, &[]));
        }
        // Sent, never read: 64 answers of 64 KiB each cannot fit.
        let _ = client.write_all(&hello).await;
        tokio::time::timeout(Duration::from_secs(30), served)
            .await
            .expect("the connection must end at the handshake deadline")
            .unwrap();
        assert!(t0.elapsed() >= limits.handshake_timeout);
    }
}
