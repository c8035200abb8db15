//! The host side of the agent channel: one unix socket to qemu's
//! virtio-serial chardev, one reader thread that files every frame under
//! its command, and waiters that sleep on a condition variable until their
//! command has news or its deadline passes.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufReader};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::vm::proto::{self, Frame};

/// What the host knows about one guest command.
#[derive(Debug, Default)]
pub(crate) struct CmdState {
    pub(crate) pid: Option<u32>,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    /// Raw wait status once it exited.
    pub(crate) status: Option<i32>,
    /// Why it could not be started.
    pub(crate) failed: Option<String>,
}

impl CmdState {
    fn finished(&self) -> bool {
        self.status.is_some() || self.failed.is_some()
    }
}

#[derive(Debug, Default)]
struct State {
    next_id: u32,
    cmds: HashMap<u32, CmdState>,
    pongs: HashSet<u32>,
    hello: Option<String>,
    /// Why the channel is gone (qemu exited, the socket broke, ...).
    closed: Option<String>,
}

/// A connected channel; shared by every thread that uses the VM.
#[derive(Debug)]
pub(crate) struct Channel {
    writer: Mutex<UnixStream>,
    state: Mutex<State>,
    changed: Condvar,
}

/// How waiting for a command ended.
#[derive(Debug)]
pub(crate) enum Waited {
    /// It exited (or could not start); its state is removed from the table.
    Done(CmdState),
    /// The deadline passed first.
    Deadline,
    /// The channel is gone.
    Closed(String),
}

/// How watching a command's output ended ([`Channel::watch`]).
#[derive(Debug)]
pub(crate) enum Watched {
    /// The predicate held.
    Matched,
    /// The command ended (or is not in the table) without it holding.
    Ended,
    /// The deadline passed first.
    Deadline,
    /// The channel is gone.
    Closed(String),
}

impl Channel {
    /// Wraps a connected socket and starts the reader. Writes that block
    /// longer than `write_timeout` (a guest that stopped reading) break the
    /// channel.
    pub(crate) fn start(stream: UnixStream, write_timeout: Duration) -> io::Result<Arc<Channel>> {
        stream.set_write_timeout(Some(write_timeout))?;
        let reader = stream.try_clone()?;
        let chan = Arc::new(Channel { writer: Mutex::new(stream), state: Mutex::default(), changed: Condvar::new() });
        let c = Arc::clone(&chan);
        thread::Builder::new().name("vm-channel".into()).spawn(move || c.read_loop(reader))?;
        Ok(chan)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_loop(&self, stream: UnixStream) {
        let mut r = BufReader::with_capacity(1 << 20, stream);
        let why = loop {
            let frame = match Frame::read_from(&mut r) {
                Ok(Some(frame)) => frame,
                Ok(None) => break "the agent channel closed (qemu exited or the guest powered off)".to_owned(),
                Err(e) => break format!("reading the agent channel failed: {e}"),
            };
            let mut st = self.state();
            let id = frame.id;
            match frame.kind {
                proto::HELLO => st.hello = Some(String::from_utf8_lossy(&frame.payload).into_owned()),
                proto::PONG => {
                    st.pongs.insert(id);
                }
                kind => {
                    // Frames of a command nobody waits for any more are dropped.
                    let Some(cmd) = st.cmds.get_mut(&id) else { continue };
                    match kind {
                        proto::STARTED => cmd.pid = frame.payload.try_into().ok().map(u32::from_le_bytes),
                        proto::STDOUT => cmd.stdout.extend_from_slice(&frame.payload),
                        proto::STDERR => cmd.stderr.extend_from_slice(&frame.payload),
                        proto::EXITED => cmd.status = Some(frame.payload_i32().unwrap_or(255 << 8)),
                        proto::FAILED => cmd.failed = Some(String::from_utf8_lossy(&frame.payload).into_owned()),
                        _ => {}
                    }
                }
            }
            drop(st);
            self.changed.notify_all();
        };
        self.close(why);
    }

    /// Marks the channel as gone (first reason wins) and wakes everyone.
    pub(crate) fn close(&self, why: String) {
        self.state().closed.get_or_insert(why);
        self.changed.notify_all();
    }

    /// Why the channel is gone, if it is.
    pub(crate) fn closed(&self) -> Option<String> {
        self.state().closed.clone()
    }

    fn send(&self, frame: &Frame) -> Result<(), String> {
        if let Some(why) = self.closed() {
            return Err(why);
        }
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        frame.write_to(&mut *w).map_err(|e| {
            // A partial frame would desynchronise the stream: it is over.
            let why = format!("writing to the agent failed ({e}): the guest stopped reading");
            self.close(why.clone());
            why
        })
    }

    /// Waits for the agent's hello until `deadline`.
    pub(crate) fn wait_hello(&self, deadline: Instant) -> Result<String, Option<String>> {
        let mut st = self.state();
        loop {
            if let Some(hello) = st.hello.clone() {
                return Ok(hello);
            }
            if let Some(why) = st.closed.clone() {
                return Err(Some(why));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(None);
            }
            st = self.changed.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Starts `argv` in the guest, feeds it `stdin` (then EOF unless
    /// `keep_stdin`), and returns its id.
    pub(crate) fn exec(&self, argv: &[String], stdin: &[u8], keep_stdin: bool) -> Result<u32, String> {
        let id = {
            let mut st = self.state();
            st.next_id = st.next_id.wrapping_add(1).max(1);
            let id = st.next_id;
            st.cmds.insert(id, CmdState::default());
            id
        };
        let result = self.send(&Frame::new(proto::EXEC, id, proto::encode_strings(argv))).and_then(|()| {
            for chunk in stdin.chunks(proto::MAX_PAYLOAD) {
                self.send(&Frame::new(proto::STDIN, id, chunk.to_vec()))?;
            }
            if keep_stdin { Ok(()) } else { self.send(&Frame::new(proto::STDIN_EOF, id, Vec::new())) }
        });
        match result {
            Ok(()) => Ok(id),
            Err(why) => {
                self.forget(id);
                Err(why)
            }
        }
    }

    /// Sends signal `sig` to command `id`'s process group.
    pub(crate) fn signal(&self, id: u32, sig: i32) -> Result<(), String> {
        self.send(&Frame::new(proto::SIGNAL, id, sig.to_le_bytes().to_vec()))
    }

    /// Asks the agent to power off (no answer comes).
    pub(crate) fn power_off(&self) -> Result<(), String> {
        self.send(&Frame::new(proto::POWEROFF, 0, Vec::new()))
    }

    /// Whether the agent answers a ping before `deadline`.
    pub(crate) fn ping(&self, deadline: Instant) -> bool {
        let id = {
            let mut st = self.state();
            st.next_id = st.next_id.wrapping_add(1).max(1);
            st.next_id
        };
        if self.send(&Frame::new(proto::PING, id, Vec::new())).is_err() {
            return false;
        }
        let mut st = self.state();
        loop {
            if st.pongs.remove(&id) {
                return true;
            }
            let now = Instant::now();
            if st.closed.is_some() || now >= deadline {
                return false;
            }
            st = self.changed.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Waits until command `id` ends or `deadline` passes.
    pub(crate) fn wait(&self, id: u32, deadline: Instant) -> Waited {
        let mut st = self.state();
        loop {
            if st.cmds.get(&id).is_none_or(CmdState::finished) {
                return Waited::Done(st.cmds.remove(&id).unwrap_or_default());
            }
            if let Some(why) = st.closed.clone() {
                return Waited::Closed(why);
            }
            let now = Instant::now();
            if now >= deadline {
                return Waited::Deadline;
            }
            st = self.changed.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Waits until the output of command `id` so far satisfies `pred(stdout,
    /// stderr)`, it ends, or `deadline` passes; the command stays in the
    /// table either way (for [`Channel::wait`]). `pred` runs on every frame
    /// that arrives meanwhile.
    pub(crate) fn watch(&self, id: u32, deadline: Instant, mut pred: impl FnMut(&[u8], &[u8]) -> bool) -> Watched {
        let mut st = self.state();
        loop {
            match st.cmds.get(&id) {
                Some(c) if pred(&c.stdout, &c.stderr) => return Watched::Matched,
                Some(c) if !c.finished() => {}
                _ => return Watched::Ended,
            }
            if let Some(why) = st.closed.clone() {
                return Watched::Closed(why);
            }
            let now = Instant::now();
            if now >= deadline {
                return Watched::Deadline;
            }
            st = self.changed.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// `(pid, stdout, stderr)` of a running command so far.
    pub(crate) fn peek(&self, id: u32) -> Option<(Option<u32>, Vec<u8>, Vec<u8>)> {
        self.state().cmds.get(&id).map(|c| (c.pid, c.stdout.clone(), c.stderr.clone()))
    }

    /// Stops tracking command `id` (later frames of it are dropped).
    pub(crate) fn forget(&self, id: u32) {
        self.state().cmds.remove(&id);
    }
}
