//! The wire format between the host and the guest agent, on the
//! virtio-serial port `mpio.agent`. Std only: the agent includes this file
//! too (`testbed/agent/main.rs`), so host and guest cannot disagree.
//!
//! A frame is `len: u32 LE`, then `len` bytes: `kind: u8`, `id: u32 LE`
//! and the payload. `id` names one guest command for its whole life (the
//! host picks it); frames of several commands interleave freely.
//!
//! | kind | direction | payload |
//! |---|---|---|
//! | [`EXEC`] | host to agent | argv ([`encode_strings`]) |
//! | [`STDIN`] / [`STDIN_EOF`] | host to agent | bytes for the command's stdin / none (closes it) |
//! | [`SIGNAL`] | host to agent | signal number, i32 LE: to the command's process group |
//! | [`PING`] / [`PONG`] | either | none: is the agent alive? |
//! | [`POWEROFF`] | host to agent | none: sync and power off now |
//! | [`HELLO`] | agent to host | agent version text; sent once the host is connected |
//! | [`STARTED`] | agent to host | the command's pid, u32 LE |
//! | [`STDOUT`] / [`STDERR`] | agent to host | output bytes |
//! | [`EXITED`] | agent to host | raw wait status, i32 LE (after all its output) |
//! | [`FAILED`] | agent to host | why the command could not be started (text) |

use std::io::{self, Read, Write};

/// Host to agent: run a command (payload: argv).
pub const EXEC: u8 = 1;
/// Host to agent: bytes for a command's stdin.
pub const STDIN: u8 = 2;
/// Host to agent: close a command's stdin.
pub const STDIN_EOF: u8 = 3;
/// Host to agent: send a signal to a command's process group.
pub const SIGNAL: u8 = 4;
/// Either way: liveness probe, answered with [`PONG`] and the same id.
pub const PING: u8 = 5;
/// Host to agent: sync the filesystems and power the guest off.
pub const POWEROFF: u8 = 6;
/// Agent to host: the agent is up (payload: its version).
pub const HELLO: u8 = 64;
/// Agent to host: a command started (payload: pid).
pub const STARTED: u8 = 65;
/// Agent to host: a command's standard output.
pub const STDOUT: u8 = 66;
/// Agent to host: a command's standard error.
pub const STDERR: u8 = 67;
/// Agent to host: a command exited (payload: raw wait status).
pub const EXITED: u8 = 68;
/// Agent to host: a command could not be started (payload: reason).
pub const FAILED: u8 = 69;
/// Answer to [`PING`].
pub const PONG: u8 = 70;

/// Largest payload of one frame; longer data is sent in several frames.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Name of the virtio-serial port (`-device virtserialport,name=...`).
pub const PORT_NAME: &str = "mpio.agent";

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the frame is ([`EXEC`], [`STDOUT`], ...).
    pub kind: u8,
    /// The command it belongs to (0 for [`HELLO`]).
    pub id: u32,
    /// Kind-specific bytes.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame of `kind` for command `id`.
    pub fn new(kind: u8, id: u32, payload: Vec<u8>) -> Frame {
        Frame { kind, id, payload }
    }

    /// The wire bytes of this frame.
    pub fn encode(&self) -> Vec<u8> {
        let len = u32::try_from(5 + self.payload.len()).expect("payload bounded by MAX_PAYLOAD");
        let mut out = Vec::with_capacity(4 + len as usize);
        out.extend_from_slice(&len.to_le_bytes());
        out.push(self.kind);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Writes the frame in one `write_all` (callers serialise writers).
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.encode())?;
        w.flush()
    }

    /// Reads one frame; `Ok(None)` at end of stream on a frame boundary.
    pub fn read_from(r: &mut impl Read) -> io::Result<Option<Frame>> {
        let mut len = [0u8; 4];
        if !read_exact_or_eof(r, &mut len)? {
            return Ok(None);
        }
        let len = u32::from_le_bytes(len) as usize;
        if !(5..=5 + MAX_PAYLOAD).contains(&len) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame length {len} out of range")));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        let id = u32::from_le_bytes([body[1], body[2], body[3], body[4]]);
        Ok(Some(Frame { kind: body[0], id, payload: body.split_off(5) }))
    }

    /// The payload as an i32 (signal, wait status), if it is 4 bytes.
    pub fn payload_i32(&self) -> Option<i32> {
        Some(i32::from_le_bytes(self.payload.as_slice().try_into().ok()?))
    }
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` if the stream ended before
/// the first byte.
fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// `count: u32 LE`, then each string as `len: u32 LE` + bytes.
pub fn encode_strings<S: AsRef<[u8]>>(strings: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    for s in strings {
        let s = s.as_ref();
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    }
    out
}

/// The inverse of [`encode_strings`]; `None` if `bytes` is malformed.
pub fn decode_strings(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut rest = bytes;
    let mut take = |n: usize| {
        let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
        rest = tail;
        Some(head)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        out.push(take(len)?.to_vec());
    }
    rest.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let frames = [Frame::new(EXEC, 7, encode_strings(&["sh", "-c", "echo hi"])), Frame::new(PING, 0, Vec::new())];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut r = wire.as_slice();
        for f in &frames {
            assert_eq!(Frame::read_from(&mut r).unwrap().as_ref(), Some(f));
        }
        assert_eq!(Frame::read_from(&mut r).unwrap(), None);
        let argv = decode_strings(&frames[0].payload).unwrap();
        assert_eq!(argv, [b"sh".to_vec(), b"-c".to_vec(), b"echo hi".to_vec()]);
    }

    #[test]
    fn truncated_and_oversized_frames_are_errors() {
        let wire = Frame::new(STDOUT, 1, vec![1, 2, 3]).encode();
        assert!(Frame::read_from(&mut &wire[..wire.len() - 1]).is_err());
        let huge = ((MAX_PAYLOAD + 6) as u32).to_le_bytes();
        assert!(Frame::read_from(&mut &huge[..]).is_err());
        assert_eq!(decode_strings(&[1, 0, 0, 0, 9, 0, 0, 0, b'x']), None);
        assert_eq!(decode_strings(&encode_strings(&["a"])[..]).unwrap(), [b"a".to_vec()]);
    }
}
