//! The tokio driver of a [`Session`]: owns the sockets and the clock, and
//! nothing else. One task per session runs `Driver::poll_drive`, the
//! shape of quinn's `ConnectionDriver`: take commands, read sockets, run
//! timers, deliver events, write sockets, re-arm the timer, repeat while
//! anything moved.
//!
//! Callers talk to it through a cloneable [`SessionHandle`]. Completions
//! go back on per-request oneshot channels; when the caller runs on the
//! same tokio worker (or a current-thread runtime) the whole round trip
//! stays on one thread, which matters here: waking another core costs
//! 35-40 µs on these machines.

mod connect;

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::debug;

use crate::config::SessionConfig;
use crate::pdu::{Isid, TmfFunction};
use crate::session::{
    ConfigError, ConnPick, ConnStats, ConnectionFailure, Event, Outcome, ScsiRequest, ScsiResult, Session,
    SessionEvent, SessionState, SessionStats, TaskError, TaskId,
};
use crate::text::{ConnectionParams, KeyValue, SessionParams};

/// Read at most this much from one socket before looking at the others.
const READ_BUDGET: usize = 1 << 20;
/// Receive buffer reserve per read.
const READ_CHUNK: usize = 256 * 1024;
/// Most iovecs per vectored write.
const MAX_IOV: usize = 64;

type Reply = oneshot::Sender<Result<Outcome, TaskError>>;

enum Command {
    Scsi { req: ScsiRequest, pick: ConnPick, reply: Reply, id: oneshot::Sender<TaskId> },
    Text { pairs: Vec<KeyValue>, reply: Reply },
    Nop { reply: Reply },
    TaskMgmt { function: TmfFunction, lun: u64, reply: Reply },
    Abort { id: TaskId, reply: Reply },
    Logout { reply: Reply },
    Snapshot { reply: oneshot::Sender<SessionSnapshot> },
}

/// What the session looks like now.
#[derive(Clone, Debug)]
pub struct SessionSnapshot {
    /// State.
    pub state: SessionState,
    /// ISID: with the initiator name, the initiator port the target sees
    /// (the same ISID after a restart reinstates the session).
    pub isid: Isid,
    /// TSIH.
    pub tsih: u16,
    /// Negotiated session parameters.
    pub params: SessionParams,
    /// Counters.
    pub stats: SessionStats,
    /// One entry per configured connection.
    pub connections: Vec<ConnectionSnapshot>,
}

/// One connection.
#[derive(Clone, Debug)]
pub struct ConnectionSnapshot {
    /// CID.
    pub cid: u16,
    /// Portal in use.
    pub portal: String,
    /// Full feature phase.
    pub up: bool,
    /// Our address of the TCP connection (the real source, which a source address or interface binding chose).
    pub local_addr: Option<SocketAddr>,
    /// The target's address.
    pub peer_addr: Option<SocketAddr>,
    /// Negotiated parameters when up.
    pub params: Option<ConnectionParams>,
    /// TargetPortalGroupTag of the portal it logged in to.
    pub tpgt: Option<u16>,
    /// SCSI commands in flight.
    pub queue_depth: usize,
    /// Counters.
    pub stats: ConnStats,
}

/// Coarse status for waiters.
#[derive(Clone, Debug, Default)]
struct Status {
    up: bool,
    closed: bool,
    last_failure: Option<ConnectionFailure>,
    failures: u64,
    permanent: bool,
}

/// Errors of the handle itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The session could not be brought up.
    #[error("{0}")]
    Failed(ConnectionFailure),
    /// It did not come up in time.
    #[error("session did not come up within {0:?}")]
    Timeout(Duration),
    /// The driver is gone.
    #[error("session driver stopped")]
    Stopped,
}

/// A handle on a running session. Cheap to clone; when the last clone is
/// dropped the session logs out and its driver ends.
#[derive(Clone, Debug)]
pub struct SessionHandle {
    cmds: mpsc::UnboundedSender<Command>,
    events: broadcast::Sender<SessionEvent>,
    status: watch::Receiver<Status>,
}

impl SessionHandle {
    /// Starts a session on the current tokio runtime. It connects and logs
    /// in in the background; see [`SessionHandle::wait_up`].
    pub fn spawn(cfg: SessionConfig) -> Result<SessionHandle, SessionError> {
        SessionHandle::spawn_watched(cfg).map(|(handle, _)| handle)
    }

    /// [`SessionHandle::spawn`], with a subscription to the session's events
    /// taken before it starts: not even the first connect or login failure
    /// is missed (a subscription taken after `spawn` races with them).
    pub fn spawn_watched(
        cfg: SessionConfig,
    ) -> Result<(SessionHandle, broadcast::Receiver<SessionEvent>), SessionError> {
        let session = Session::new(cfg, Instant::now())?;
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let (events, first) = broadcast::channel(256);
        let (status_tx, status) = watch::channel(Status::default());
        let driver = Driver::new(session, cmd_rx, events.clone(), status_tx);
        tokio::spawn(driver.run());
        Ok((SessionHandle { cmds, events, status }, first))
    }

    /// Starts a session and waits until it is logged in. Fails with the
    /// first login or connect failure: for one-shot use (the CLI), where
    /// an administrator wants the reason now rather than retries.
    pub async fn connect(cfg: SessionConfig, timeout: Duration) -> Result<SessionHandle, SessionError> {
        let h = SessionHandle::spawn(cfg)?;
        h.wait_up(timeout).await?;
        Ok(h)
    }

    /// Waits until the session is up, or until a connection attempt
    /// fails, or for `timeout`.
    pub async fn wait_up(&self, timeout: Duration) -> Result<(), SessionError> {
        let mut status = self.status.clone();
        let start_failures = status.borrow().failures;
        let wait = status.wait_for(|s| s.up || s.failures > start_failures || s.permanent || s.closed);
        match tokio::time::timeout(timeout, wait).await {
            Err(_) => Err(SessionError::Timeout(timeout)),
            Ok(Err(_)) => Err(SessionError::Stopped),
            Ok(Ok(s)) if s.up => Ok(()),
            Ok(Ok(s)) => Err(s.last_failure.clone().map_or(SessionError::Stopped, SessionError::Failed)),
        }
    }

    /// True when the session is logged in.
    pub fn is_up(&self) -> bool {
        self.status.borrow().up
    }

    /// Subscribes to state changes.
    pub fn events(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    async fn call(&self, make: impl FnOnce(Reply) -> Command) -> Result<Outcome, TaskError> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(make(tx)).map_err(|_| TaskError::SessionClosed)?;
        rx.await.map_err(|_| TaskError::SessionClosed)?
    }

    /// Executes a SCSI command on any connection.
    pub async fn execute(&self, req: ScsiRequest) -> Result<ScsiResult, TaskError> {
        self.execute_on(req, ConnPick::Any).await
    }

    /// Executes a SCSI command on the chosen connection.
    pub async fn execute_on(&self, req: ScsiRequest, pick: ConnPick) -> Result<ScsiResult, TaskError> {
        let (id, _) = oneshot::channel();
        match self.call(|reply| Command::Scsi { req, pick, reply, id }).await? {
            Outcome::Scsi(r) => Ok(r),
            other => Err(TaskError::Invalid(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Submits a SCSI command and returns its id (for [`SessionHandle::abort`])
    /// and a receiver for its outcome.
    pub async fn submit(
        &self,
        req: ScsiRequest,
        pick: ConnPick,
    ) -> Result<(TaskId, oneshot::Receiver<Result<Outcome, TaskError>>), TaskError> {
        let (reply, rx) = oneshot::channel();
        let (id_tx, id_rx) = oneshot::channel();
        self.cmds.send(Command::Scsi { req, pick, reply, id: id_tx }).map_err(|_| TaskError::SessionClosed)?;
        let id = id_rx.await.map_err(|_| TaskError::SessionClosed)?;
        Ok((id, rx))
    }

    /// Sends a Text Request and returns the response's pairs.
    pub async fn text(&self, pairs: Vec<KeyValue>) -> Result<Vec<KeyValue>, TaskError> {
        match self.call(|reply| Command::Text { pairs, reply }).await? {
            Outcome::Text(p) => Ok(p),
            other => Err(TaskError::Invalid(format!("unexpected outcome {other:?}"))),
        }
    }

    /// SendTargets=All on a discovery session (RFC 7143 appendix C): the
    /// targets and their portals.
    pub async fn send_targets(&self) -> Result<crate::discovery::SendTargetsResult, TaskError> {
        let pairs = self.text(vec![crate::discovery::SendTargetsRequest::All.to_pair()]).await?;
        Ok(crate::discovery::parse_send_targets(&pairs))
    }

    /// Pings the target with a NOP-Out.
    pub async fn nop(&self) -> Result<(), TaskError> {
        self.call(|reply| Command::Nop { reply }).await.map(|_| ())
    }

    /// Sends a task management function (not ABORT TASK; see `abort`).
    pub async fn task_mgmt(&self, function: TmfFunction, lun: u64) -> Result<(), TaskError> {
        self.call(|reply| Command::TaskMgmt { function, lun, reply }).await.map(|_| ())
    }

    /// Aborts a task submitted with [`SessionHandle::submit`].
    pub async fn abort(&self, id: TaskId) -> Result<(), TaskError> {
        self.call(|reply| Command::Abort { id, reply }).await.map(|_| ())
    }

    /// Logs the session out after the commands in flight finish.
    pub async fn logout(&self) -> Result<(), TaskError> {
        self.call(|reply| Command::Logout { reply }).await.map(|_| ())
    }

    /// The session's state, parameters and counters.
    pub async fn snapshot(&self) -> Result<SessionSnapshot, SessionError> {
        let (reply, rx) = oneshot::channel();
        self.cmds.send(Command::Snapshot { reply }).map_err(|_| SessionError::Stopped)?;
        rx.await.map_err(|_| SessionError::Stopped)
    }
}

type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

/// One socket.
struct ConnIo {
    stream: TcpStream,
    rbuf: BytesMut,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
}

/// How a socket is closed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Close {
    /// FIN after what is queued (logout).
    Graceful,
    /// RST, discarding what is queued (a failed connection).
    Abort,
}

/// Per configured connection.
enum Slot {
    Idle,
    Connecting(ConnectFuture),
    Open(ConnIo),
}

struct Driver {
    session: Session<Reply>,
    slots: Vec<Slot>,
    cmds: mpsc::UnboundedReceiver<Command>,
    cmds_closed: bool,
    events: broadcast::Sender<SessionEvent>,
    status: watch::Sender<Status>,
    timer: Pin<Box<tokio::time::Sleep>>,
    timer_deadline: Option<Instant>,
    logout_sent: bool,
}

impl Driver {
    fn new(
        session: Session<Reply>,
        cmds: mpsc::UnboundedReceiver<Command>,
        events: broadcast::Sender<SessionEvent>,
        status: watch::Sender<Status>,
    ) -> Driver {
        let slots = (0..session.connection_count()).map(|_| Slot::Idle).collect();
        Driver {
            session,
            slots,
            cmds,
            cmds_closed: false,
            events,
            status,
            timer: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            timer_deadline: None,
            logout_sent: false,
        }
    }

    async fn run(mut self) {
        self.session.start(Instant::now());
        std::future::poll_fn(|cx| self.poll_drive(cx)).await;
        debug!("session driver finished");
    }

    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut progress = false;
            progress |= self.poll_commands(cx);
            progress |= self.poll_connects(cx);
            progress |= self.poll_reads(cx);
            let now = Instant::now();
            if self.timer_deadline.is_some_and(|d| d <= now) {
                self.timer_deadline = None;
                self.session.handle_timeout(now);
                progress = true;
            }
            progress |= self.drain_events();
            progress |= self.poll_writes(cx);
            if self.is_finished() {
                return Poll::Ready(());
            }
            // Re-arm the one timer only when the deadline changed (quinn's
            // drive_timer): resetting a Sleep is not free.
            let next = self.session.poll_timeout();
            if next != self.timer_deadline {
                self.timer_deadline = next;
                if let Some(d) = next {
                    self.timer.as_mut().reset(tokio::time::Instant::from_std(d));
                }
            }
            if self.timer_deadline.is_some() && self.timer.as_mut().poll(cx).is_ready() {
                // Checked against the clock at the top of the loop.
                progress = true;
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    fn is_finished(&mut self) -> bool {
        if !self.cmds_closed {
            return false;
        }
        match self.session.state() {
            SessionState::Closed | SessionState::Failed => true,
            SessionState::Up => {
                if !self.logout_sent {
                    // The last handle is gone: log out politely.
                    self.logout_sent = true;
                    let (reply, _) = oneshot::channel();
                    self.session.logout(Instant::now(), reply);
                }
                false
            }
            SessionState::LoggingOut => false,
            // Nobody waits for a session that is still trying to connect.
            SessionState::Starting | SessionState::Recovering => true,
        }
    }

    fn poll_commands(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while !self.cmds_closed {
            match self.cmds.poll_recv(cx) {
                Poll::Ready(Some(cmd)) => {
                    progress = true;
                    let now = Instant::now();
                    match cmd {
                        Command::Scsi { req, pick, reply, id } => {
                            let task = self.session.submit(now, req, pick, reply);
                            let _ = id.send(task);
                        }
                        Command::Text { pairs, reply } => {
                            self.session.text_request(now, &pairs, reply);
                        }
                        Command::Nop { reply } => {
                            self.session.nop(now, Bytes::new(), reply);
                        }
                        Command::TaskMgmt { function, lun, reply } => {
                            self.session.task_mgmt(now, function, lun, reply);
                        }
                        Command::Abort { id, reply } => {
                            self.session.abort(now, id, reply);
                        }
                        Command::Logout { reply } => self.session.logout(now, reply),
                        Command::Snapshot { reply } => {
                            let _ = reply.send(self.snapshot());
                        }
                    }
                }
                Poll::Ready(None) => {
                    self.cmds_closed = true;
                    progress = true;
                }
                Poll::Pending => break,
            }
        }
        progress
    }

    fn poll_connects(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let cid = i as u16;
            let Slot::Connecting(fut) = slot else { continue };
            let Poll::Ready(res) = fut.as_mut().poll(cx) else { continue };
            progress = true;
            let now = Instant::now();
            match res {
                Ok(stream) => {
                    let local = stream.local_addr().ok();
                    let peer = stream.peer_addr().ok();
                    *slot = Slot::Open(ConnIo { stream, rbuf: BytesMut::with_capacity(READ_CHUNK), local, peer });
                    self.session.handle_connected(cid, now);
                }
                Err(e) => {
                    *slot = Slot::Idle;
                    self.session.handle_connect_failed(cid, now, e.to_string());
                }
            }
        }
        progress
    }

    fn poll_reads(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        for i in 0..self.slots.len() {
            let cid = i as u16;
            let mut budget = READ_BUDGET;
            while let Some(Slot::Open(io)) = self.slots.get_mut(i) {
                match io.stream.poll_read_ready(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Err(e)) => {
                        self.lost(i, e.to_string());
                        progress = true;
                        break;
                    }
                    Poll::Ready(Ok(())) => {}
                }
                if io.rbuf.capacity() - io.rbuf.len() < 4096 {
                    io.rbuf.reserve(READ_CHUNK);
                }
                match io.stream.try_read_buf(&mut io.rbuf) {
                    Ok(0) => {
                        self.lost(i, "closed by the target".into());
                        progress = true;
                        break;
                    }
                    Ok(n) => {
                        progress = true;
                        let mut rbuf = std::mem::take(&mut io.rbuf);
                        self.session.handle_bytes(cid, Instant::now(), &mut rbuf);
                        if let Some(Slot::Open(io)) = self.slots.get_mut(i) {
                            io.rbuf = rbuf;
                        }
                        budget = budget.saturating_sub(n);
                        if budget == 0 {
                            cx.waker().wake_by_ref();
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => {
                        self.lost(i, e.to_string());
                        progress = true;
                        break;
                    }
                }
            }
        }
        progress
    }

    fn poll_writes(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        for i in 0..self.slots.len() {
            let cid = i as u16;
            while let Some(Slot::Open(io)) = self.slots.get_mut(i) {
                let Some(tx) = self.session.tx(cid) else { break };
                if tx.is_empty() {
                    break;
                }
                let res = match io.stream.poll_write_ready(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Ready(Ok(())) => {
                        let mut slices = [IoSlice::new(&[]); MAX_IOV];
                        let n = tx.io_slices(&mut slices);
                        let written = io.stream.try_write_vectored(slices.get(..n).unwrap_or_default());
                        if let Ok(w) = written {
                            tx.advance(w);
                        }
                        written.map(|_| ())
                    }
                };
                match res {
                    Ok(()) => progress = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => {
                        self.lost(i, e.to_string());
                        progress = true;
                        break;
                    }
                }
            }
        }
        progress
    }

    /// The socket of slot `i` failed or was closed by the peer.
    fn lost(&mut self, i: usize, reason: String) {
        self.close_slot(i, Close::Abort);
        self.session.handle_closed(i as u16, Instant::now(), reason);
    }

    fn close_slot(&mut self, i: usize, how: Close) {
        let Some(slot) = self.slots.get_mut(i) else { return };
        if let (Slot::Open(io), Close::Abort) = (&*slot, how) {
            // A failed connection is reset, not closed: with a graceful
            // close the kernel would keep retransmitting what is queued
            // (an orphaned socket), and a write the multipath layer has
            // since re-issued elsewhere could reach the target late, once
            // a blackhole lifts, and overwrite newer data.
            let _ = socket2::SockRef::from(&io.stream).set_linger(Some(Duration::ZERO));
        }
        *slot = Slot::Idle;
    }

    fn drain_events(&mut self) -> bool {
        let mut progress = false;
        while let Some(ev) = self.session.poll_event() {
            progress = true;
            match ev {
                Event::TaskDone { token, result } => {
                    let _ = token.send(result);
                }
                Event::Connect { cid, portal } => {
                    let spec = self.session.connection_spec(cid);
                    let timeout = self.session.config().timeouts.connect;
                    if let (Some(slot), Some(spec)) = (self.slots.get_mut(usize::from(cid)), spec) {
                        let fut = async move { connect::connect(&portal, &spec, timeout).await };
                        *slot = Slot::Connecting(Box::pin(fut));
                    }
                }
                Event::Close { cid, flush } => {
                    if let Some(Slot::Open(io)) = self.slots.get_mut(usize::from(cid)) {
                        if flush && let Some(tx) = self.session.tx(cid) {
                            // Best effort: the final PDUs may still fit the
                            // socket buffer.
                            let mut slices = [IoSlice::new(&[]); MAX_IOV];
                            let n = tx.io_slices(&mut slices);
                            let _ = io.stream.try_write_vectored(slices.get(..n).unwrap_or_default());
                        }
                        self.close_slot(usize::from(cid), if flush { Close::Graceful } else { Close::Abort });
                    }
                }
                Event::State(ev) => {
                    // Published before the status changes: a receiver
                    // subscribed after `wait_up` returned must not see the
                    // SessionUp (or ConnectionUp) that it waited for.
                    // No subscribers is fine.
                    let _ = self.events.send(ev.clone());
                    match &ev {
                        SessionEvent::ConnectionDown { reason, .. } => self.status.send_modify(|s| {
                            s.failures += 1;
                            s.last_failure = Some(reason.clone());
                        }),
                        SessionEvent::SessionUp { .. } => self.status.send_modify(|s| s.up = true),
                        SessionEvent::SessionDown { reason, permanent } => self.status.send_modify(|s| {
                            s.up = false;
                            s.permanent = *permanent;
                            s.last_failure = Some(reason.clone());
                        }),
                        SessionEvent::ConnectionUp { .. } | SessionEvent::ScsiAsyncEvent { .. } => {}
                    }
                }
            }
        }
        let closed = self.session.state() == SessionState::Closed;
        if closed && !self.status.borrow().closed {
            self.status.send_modify(|s| {
                s.closed = true;
                s.up = false;
            });
        }
        progress
    }

    fn snapshot(&self) -> SessionSnapshot {
        let s = &self.session;
        SessionSnapshot {
            state: s.state(),
            isid: s.config().isid,
            tsih: s.tsih(),
            params: s.params().clone(),
            stats: s.stats(),
            connections: (0..s.connection_count())
                .map(|i| {
                    let cid = i as u16;
                    let io = match self.slots.get(i) {
                        Some(Slot::Open(io)) => Some(io),
                        _ => None,
                    };
                    ConnectionSnapshot {
                        cid,
                        portal: s.connection_portal(cid).map(ToString::to_string).unwrap_or_default(),
                        up: s.connection_up(cid),
                        local_addr: io.and_then(|io| io.local),
                        peer_addr: io.and_then(|io| io.peer),
                        params: s.connection_params(cid).cloned(),
                        tpgt: s.connection_tpgt(cid),
                        queue_depth: s.connection_queue_depth(cid),
                        stats: s.connection_stats(cid).unwrap_or_default(),
                    }
                })
                .collect(),
        }
    }
}
