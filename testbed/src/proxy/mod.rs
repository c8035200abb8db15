//! A fault-injecting TCP proxy between an initiator and an iSCSI target,
//! controlled from the test: each direction passes, is delayed, or is
//! blackholed; every connection can be reset; and a fault armed for the
//! Nth PDU of a kind corrupts a byte of its header or data segment, drops
//! it, or cuts the connection in the middle of it. It sees PDU boundaries
//! (it follows each connection's login to know its digests: see
//! `framer`), so digest errors, lost Data-In and truncated PDUs are
//! reproducible against real targets (tgtd on the host, LIO in a VM), which
//! never make them on their own.
//!
//! ```no_run
//! use mpio_testbed::proxy::{opcode, Action, Direction, Fault, Flow, Proxy};
//! # fn f(target_portal: std::net::SocketAddr) -> mpio_testbed::Result<()> {
//! let proxy = Proxy::start(target_portal)?;
//! let portal = proxy.addr(); // give this to the initiator
//! // The second Data-In from now gets byte 100 of its data flipped.
//! proxy.arm(Fault::nth(2, Direction::ToInitiator, Some(opcode::DATA_IN), Action::CorruptData(100)));
//! proxy.wait_fired(1, std::time::Duration::from_secs(30))?;
//! proxy.set_flow(Direction::ToInitiator, Flow::Blackhole); // responses held back
//! proxy.set_flow(Direction::ToInitiator, Flow::Pass);      // and released, none lost
//! proxy.reset();                                           // RST to both sides
//! # Ok(()) }
//! ```
//!
//! What the faults are, on the wire:
//! * [`Flow::Blackhole`] holds what arrives in that direction and sends
//!   it, in order, once the flow is set back: as TCP retransmits after a
//!   real blackhole, nothing is lost. The proxy keeps reading and
//!   acknowledging, so the sender sees no back pressure (a real blackhole
//!   would fill its send buffer); the connection stays up, and only the
//!   initiator's own timers (NOP-Out, command timeout) notice.
//! * [`Flow::Delay`] sends each PDU that long after it arrived.
//! * [`Proxy::reset`] and [`Action::Truncate`] end the connection with a
//!   TCP RST to both sides (`SO_LINGER` 0), as `ss -K` does to one.
//! * [`Action::CorruptHeader`] / [`Action::CorruptData`] flip every bit of
//!   one byte (XOR 0xff) after the digests were computed, so a receiver
//!   with digests sees a digest error and one without sees the changed byte.
//!
//! Each connection is two threads per direction (a reader that frames and
//! applies faults, a writer that releases); the proxy is a test tool, not
//! a fast path. Dropping the [`Proxy`] resets every connection it carries.

mod framer;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use framer::Digests;
use framer::{Frame, Framer, Negotiation};

use crate::error::{Error, Result};
use crate::wait::WaitError;

/// Opcodes (BHS byte 0 without the I bit) a fault can be aimed at.
pub mod opcode {
    /// NOP-Out (initiator).
    pub const NOP_OUT: u8 = 0x00;
    /// SCSI Command (initiator).
    pub const SCSI_COMMAND: u8 = 0x01;
    /// SCSI Data-Out (initiator).
    pub const DATA_OUT: u8 = 0x05;
    /// NOP-In (target).
    pub const NOP_IN: u8 = 0x20;
    /// SCSI Response (target).
    pub const SCSI_RESPONSE: u8 = 0x21;
    /// SCSI Data-In (target).
    pub const DATA_IN: u8 = 0x25;
    /// Ready To Transfer (target).
    pub const R2T: u8 = 0x31;
}

/// A direction of every connection through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Initiator to target.
    ToTarget,
    /// Target to initiator.
    ToInitiator,
}

impl Direction {
    fn index(self) -> usize {
        self as usize
    }
}

/// How a direction's PDUs go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// At once.
    Pass,
    /// Each PDU this long after it arrived.
    Delay(Duration),
    /// Held until the flow is set to something else.
    Blackhole,
}

/// What a fault does to the PDU it fires on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Flip byte N of the header (BHS and AHS; 0 is the opcode).
    CorruptHeader(usize),
    /// Flip byte N of the data segment (only PDUs with more than N bytes
    /// of data count).
    CorruptData(usize),
    /// The PDU never arrives; the connection goes on.
    Drop,
    /// Only the first N bytes arrive, then both sides get a RST (only
    /// PDUs longer than N count).
    Truncate(usize),
}

/// A fault for the Nth PDU (from when it is armed) that goes in
/// `direction` with `opcode` (any opcode if `None`) and that `action`
/// applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Which PDU: 1 is the first that matches.
    pub nth: u32,
    /// The direction it travels.
    pub direction: Direction,
    /// Its opcode, or any.
    pub opcode: Option<u8>,
    /// What happens to it.
    pub action: Action,
}

impl Fault {
    /// The fault on the `nth` matching PDU.
    pub fn nth(nth: u32, direction: Direction, opcode: Option<u8>, action: Action) -> Fault {
        Fault { nth, direction, opcode, action }
    }

    fn applies(&self, direction: Direction, frame: &Frame) -> bool {
        let fits = match self.action {
            Action::CorruptHeader(i) => i < frame.header_len,
            Action::CorruptData(i) => i < frame.data_len,
            Action::Drop => true,
            Action::Truncate(n) => n < frame.bytes.len(),
        };
        self.direction == direction && self.opcode.is_none_or(|op| op == frame.opcode()) && fits
    }
}

/// The proxy; dropping it resets every connection it carries.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
    /// A flow changed, a fault fired, a connection was aborted or the
    /// proxy stops.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    stop: bool,
    flow: [Option<Flow>; 2],
    armed: Vec<(Fault, u32)>,
    fired: Vec<Fault>,
    conns: Vec<Weak<Conn>>,
    accepted: usize,
    pdus: [u64; 2],
}

/// One proxied connection: the initiator's socket, the target's, and the
/// digests its login settled.
struct Conn {
    initiator: TcpStream,
    target: TcpStream,
    negotiation: Mutex<Negotiation>,
    aborted: AtomicBool,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection
    /// to `upstream` (a target's portal).
    pub fn start(upstream: SocketAddr) -> Result<Proxy> {
        Proxy::start_on("127.0.0.1:0".parse().expect("an address"), upstream)
    }

    /// Listens on `listen` (port 0: a free one).
    pub fn start_on(listen: SocketAddr, upstream: SocketAddr) -> Result<Proxy> {
        let env = |what: &str, e: std::io::Error| Error::Environment(format!("proxy to {upstream}: {what}: {e}"));
        let listener = TcpListener::bind(listen).map_err(|e| env("bind", e))?;
        let addr = listener.local_addr().map_err(|e| env("local address", e))?;
        let shared = Arc::new(Shared { upstream, state: Mutex::default(), changed: Condvar::new() });
        let accept = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("proxy-accept".into())
                .spawn(move || accept_loop(&listener, &shared))
                .map_err(|e| env("thread", e))?
        };
        Ok(Proxy { addr, shared, accept: Some(accept) })
    }

    /// Where initiators connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How PDUs in `direction` go through from now on (PDUs already
    /// delayed keep their time; held ones go once it is not a blackhole).
    pub fn set_flow(&self, direction: Direction, flow: Flow) {
        self.shared.lock().flow[direction.index()] = Some(flow);
        self.shared.changed.notify_all();
    }

    /// Arms a fault. Faults are checked in the order they were armed;
    /// one PDU fires at most one, and counts for every other that matches.
    pub fn arm(&self, fault: Fault) {
        self.shared.lock().armed.push((fault, 0));
    }

    /// The faults that fired, in order.
    pub fn fired(&self) -> Vec<Fault> {
        self.shared.lock().fired.clone()
    }

    /// Waits until `n` faults have fired.
    pub fn wait_fired(&self, n: usize, timeout: Duration) -> Result<()> {
        let state = self.shared.lock();
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |s| s.fired.len() < n)
            .unwrap_or_else(|e| e.into_inner());
        if state.fired.len() < n {
            let armed: Vec<_> = state.armed.iter().map(|(f, seen)| format!("{f:?} (seen {seen})")).collect();
            return Err(Error::Wait(WaitError {
                what: format!("{n} faults fired in the proxy to {}", self.shared.upstream),
                timeout,
                attempts: 1,
                last: Some(format!("{} fired; still armed: {armed:?}", state.fired.len())),
            }));
        }
        Ok(())
    }

    /// Ends every connection with a RST to both sides.
    pub fn reset(&self) {
        for conn in self.shared.live() {
            conn.abort(&self.shared);
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.lock().accepted
    }

    /// The digests of each live connection (what its login negotiated; none
    /// while it logs in).
    pub fn digests(&self) -> Vec<Digests> {
        self.shared.live().iter().map(|c| c.negotiation.lock().unwrap_or_else(|e| e.into_inner()).digests()).collect()
    }

    /// PDUs seen going in `direction`.
    pub fn pdus(&self, direction: Direction) -> u64 {
        self.shared.lock().pdus[direction.index()]
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        // Wakes the blocking accept, which then sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        self.reset();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self) -> Vec<Arc<Conn>> {
        let mut state = self.lock();
        state.conns.retain(|c| c.strong_count() > 0);
        state.conns.iter().filter_map(Weak::upgrade).collect()
    }

    /// Counts a PDU, fires the fault it is due for, and says when it may
    /// leave.
    fn on_pdu(&self, direction: Direction, frame: &Frame) -> (Option<Action>, Instant) {
        let mut state = self.lock();
        state.pdus[direction.index()] += 1;
        let mut fired = None;
        state.armed.retain_mut(|(fault, seen)| {
            if !fault.applies(direction, frame) {
                return true;
            }
            *seen += 1;
            if fired.is_some() || *seen < fault.nth {
                return true;
            }
            fired = Some(*fault);
            false
        });
        if let Some(f) = fired {
            state.fired.push(f);
            self.changed.notify_all();
        }
        let at = match state.flow[direction.index()] {
            Some(Flow::Delay(d)) => Instant::now() + d,
            _ => Instant::now(),
        };
        (fired.map(|f| f.action), at)
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.lock().stop {
            return;
        }
        let Ok(initiator) = client else { continue };
        // A target that does not answer is the initiator's connect
        // failure: its connection is closed at once.
        let Ok(target) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5)) else { continue };
        let _ = (initiator.set_nodelay(true), target.set_nodelay(true));
        let conn = Arc::new(Conn { initiator, target, negotiation: Mutex::default(), aborted: AtomicBool::new(false) });
        {
            let mut state = shared.lock();
            state.accepted += 1;
            state.conns.push(Arc::downgrade(&conn));
        }
        for direction in [Direction::ToTarget, Direction::ToInitiator] {
            let (tx, rx) = channel();
            let (c, s) = (conn.clone(), shared.clone());
            let _ =
                std::thread::Builder::new().name("proxy-read".into()).spawn(move || read_loop(&c, direction, &s, &tx));
            let (c, s) = (conn.clone(), shared.clone());
            let _ = std::thread::Builder::new()
                .name("proxy-write".into())
                .spawn(move || write_loop(&c, direction, &s, &rx));
        }
    }
}

/// What a reader hands its writer: bytes, when they may leave, and
/// whether the connection is reset after them.
struct Outgoing {
    bytes: Vec<u8>,
    at: Instant,
    reset_after: bool,
}

impl Conn {
    fn source(&self, direction: Direction) -> &TcpStream {
        match direction {
            Direction::ToTarget => &self.initiator,
            Direction::ToInitiator => &self.target,
        }
    }

    fn sink(&self, direction: Direction) -> &TcpStream {
        match direction {
            Direction::ToTarget => &self.target,
            Direction::ToInitiator => &self.initiator,
        }
    }

    /// RST to both sides: with `SO_LINGER` 0, the close of the last
    /// reference sends one. Shutting the read sides wakes the readers,
    /// whose exit (and their writers') drops those references; nothing is
    /// sent before (a write shutdown would send a FIN first).
    fn abort(&self, shared: &Shared) {
        self.aborted.store(true, Ordering::SeqCst);
        for s in [&self.initiator, &self.target] {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            let _ = s.shutdown(Shutdown::Read);
        }
        shared.changed.notify_all();
    }
}

fn read_loop(conn: &Conn, direction: Direction, shared: &Shared, tx: &Sender<Outgoing>) {
    let mut framer = Framer::default();
    let mut buf = vec![0u8; 64 << 10];
    let mut src = conn.source(direction);
    while let Ok(n @ 1..) = src.read(&mut buf) {
        framer.push(&buf[..n]);
        loop {
            let digests = conn.negotiation.lock().unwrap_or_else(|e| e.into_inner()).digests();
            let Some(mut frame) = framer.next(digests) else { break };
            conn.negotiation.lock().unwrap_or_else(|e| e.into_inner()).observe(&frame);
            let (action, at) = shared.on_pdu(direction, &frame);
            let mut reset_after = false;
            match action {
                None => {}
                Some(Action::CorruptHeader(i)) => frame.bytes[i] ^= 0xff,
                Some(Action::CorruptData(i)) => frame.bytes[frame.data_at + i] ^= 0xff,
                Some(Action::Drop) => continue,
                Some(Action::Truncate(n)) => {
                    frame.bytes.truncate(n);
                    reset_after = true;
                }
            }
            if tx.send(Outgoing { bytes: frame.bytes, at, reset_after }).is_err() {
                return;
            }
        }
    }
}

fn write_loop(conn: &Conn, direction: Direction, shared: &Shared, rx: &Receiver<Outgoing>) {
    let mut sink = conn.sink(direction);
    for send in rx {
        let mut state = shared.lock();
        loop {
            if conn.aborted.load(Ordering::SeqCst) || state.stop {
                return;
            }
            let held = state.flow[direction.index()] == Some(Flow::Blackhole);
            let now = Instant::now();
            if !held && now >= send.at {
                break;
            }
            state = if held {
                shared.changed.wait(state).unwrap_or_else(|e| e.into_inner())
            } else {
                shared.changed.wait_timeout(state, send.at - now).unwrap_or_else(|e| e.into_inner()).0
            };
        }
        drop(state);
        if sink.write_all(&send.bytes).is_err() || send.reset_after {
            return conn.abort(shared);
        }
    }
    // The source closed: so does the sink, unless the connection was reset.
    if !conn.aborted.load(Ordering::SeqCst) {
        let _ = sink.shutdown(Shutdown::Write);
    }
}
