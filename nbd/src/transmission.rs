//! Transmission phase, server side: requests in, replies out.
//!
//! [`decode_request`] frames the 28-byte request header; it does not touch
//! the payload of `NBD_CMD_WRITE`, which follows the header and which the
//! driver reads (or discards) itself once it knows what to do with the
//! request. [`validate_request`] then decides whether the request may run
//! and, if not, which NBD error to answer with.

use crate::consts::*;
use crate::handshake::{BlockSizes, DecodeError};
use crate::wire::{Reader, clamp_str, put_u16, put_u32, put_u64};

/// A request header, fields as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags (`NBD_CMD_FLAG_*`).
    pub flags: u16,
    /// Command type (`NBD_CMD_*`, possibly unknown).
    pub typ: u16,
    /// Opaque cookie (the spec's former "handle"), echoed in every reply.
    pub cookie: u64,
    /// Byte offset into the export.
    pub offset: u64,
    /// Byte length; for `NBD_CMD_WRITE`, also the length of the payload
    /// that follows the header.
    pub length: u32,
}

impl Request {
    /// Bytes of payload following this header on the wire.
    ///
    /// The driver must consume them whatever [`validate_request`] says,
    /// otherwise the next header is read from the middle of the data.
    pub fn payload_len(&self) -> u32 {
        if self.typ == NBD_CMD_WRITE { self.length } else { 0 }
    }
}

/// Decodes one request header (28 bytes); see [`Request::payload_len`].
///
/// A wrong magic is fatal: the stream has lost its framing.
pub fn decode_request(buf: &[u8]) -> Result<Option<(Request, usize)>, DecodeError> {
    let mut r = Reader::new(buf);
    let Some(magic) = r.u32() else {
        return Ok(None);
    };
    // Checked as soon as 4 bytes are in so garbage is refused without
    // waiting for a full header.
    if magic != REQUEST_MAGIC {
        return Err(DecodeError::BadMagic { expected: u64::from(REQUEST_MAGIC), found: u64::from(magic) });
    }
    let (Some(flags), Some(typ), Some(cookie), Some(offset), Some(length)) =
        (r.u16(), r.u16(), r.u64(), r.u64(), r.u32())
    else {
        return Ok(None);
    };
    let req = Request { flags, typ, cookie, offset, length };
    Ok(Some((req, REQUEST_HEADER_LEN)))
}

/// Commands this server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `NBD_CMD_READ`.
    Read,
    /// `NBD_CMD_WRITE`.
    Write,
    /// `NBD_CMD_DISC`: no reply; finish in-flight requests and close.
    Disc,
    /// `NBD_CMD_FLUSH`.
    Flush,
    /// `NBD_CMD_TRIM`.
    Trim,
    /// `NBD_CMD_WRITE_ZEROES`.
    WriteZeroes,
}

impl Command {
    /// Maps a wire type to a command this server implements.
    pub fn from_wire(typ: u16) -> Option<Command> {
        Some(match typ {
            NBD_CMD_READ => Command::Read,
            NBD_CMD_WRITE => Command::Write,
            NBD_CMD_DISC => Command::Disc,
            NBD_CMD_FLUSH => Command::Flush,
            NBD_CMD_TRIM => Command::Trim,
            NBD_CMD_WRITE_ZEROES => Command::WriteZeroes,
            _ => return None,
        })
    }

    /// Whether the command changes the export (refused with `EPERM` on a
    /// read-only export).
    pub fn writes(self) -> bool {
        matches!(self, Command::Write | Command::Trim | Command::WriteZeroes)
    }
}

/// What was negotiated for this export, i.e. what requests are held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportParams {
    /// Export size in bytes.
    pub size: u64,
    /// Transmission flags sent to the client.
    pub transmission_flags: u16,
    /// Block size constraints. When the client did not ask for
    /// `NBD_INFO_BLOCK_SIZE` the server should still enforce its maximum
    /// payload (the limit on what it will buffer) and can use a minimum of 1.
    pub block: BlockSizes,
    /// Whether structured replies were negotiated.
    pub structured: bool,
}

/// Checks a request against the negotiated export and returns the command
/// to run, or the error to reply with.
///
/// The rules, in the order applied (the spec leaves the choice among several
/// applicable errors open; this order reports the most basic problem first):
///
/// 1. unknown command type (or one not advertised: `FLUSH` without
///    `SEND_FLUSH`, `TRIM` without `SEND_TRIM`, `WRITE_ZEROES` without
///    `SEND_WRITE_ZEROES`) → `EINVAL`;
/// 2. unknown flag, or a flag not documented for the command → `EINVAL`.
///    `FUA` is accepted on every command once `SEND_FUA` is advertised (the
///    spec says the server MUST accept it, "even by ignoring the bit"), and
///    is `EINVAL` without it; `NO_HOLE` is for `WRITE_ZEROES` only; `DF` for
///    `READ` only and needs `SEND_DF`; `FAST_ZERO` and `REQ_ONE` belong to
///    features this server does not advertise;
/// 3. write, trim or write-zeroes on a read-only export → `EPERM`;
/// 4. `FLUSH` or `DISC` with nonzero offset or length → `EINVAL` (for
///    `DISC` the driver has no reply to send and just disconnects);
/// 5. offset or length not a multiple of the minimum block size → `EINVAL`;
/// 6. `READ` or `WRITE` longer than the maximum payload → `EINVAL` (the
///    spec allows `EOVERFLOW` as a hint, but `EINVAL` is what every client
///    understands). `TRIM` and `WRITE_ZEROES` carry no payload and are not
///    held to the maximum;
/// 7. range past the end of the export (including `offset + length`
///    overflowing) → `ENOSPC` for `WRITE` and `WRITE_ZEROES` (the spec: a
///    write beyond the size SHOULD get `ENOSPC`), `EINVAL` otherwise.
///
/// A zero length is accepted as a no-op for the data commands.
pub fn validate_request(req: &Request, p: &ExportParams) -> Result<Command, NbdError> {
    let tf = p.transmission_flags;
    let cmd = Command::from_wire(req.typ).ok_or(NbdError::Inval)?;
    let advertised = match cmd {
        Command::Flush => tf & NBD_FLAG_SEND_FLUSH != 0,
        Command::Trim => tf & NBD_FLAG_SEND_TRIM != 0,
        Command::WriteZeroes => tf & NBD_FLAG_SEND_WRITE_ZEROES != 0,
        Command::Read | Command::Write | Command::Disc => true,
    };
    if !advertised {
        return Err(NbdError::Inval);
    }

    let mut allowed: u16 = 0;
    if tf & NBD_FLAG_SEND_FUA != 0 {
        allowed |= NBD_CMD_FLAG_FUA;
    }
    match cmd {
        Command::WriteZeroes => allowed |= NBD_CMD_FLAG_NO_HOLE,
        Command::Read if tf & NBD_FLAG_SEND_DF != 0 && p.structured => allowed |= NBD_CMD_FLAG_DF,
        _ => {}
    }
    if req.flags & !allowed != 0 {
        return Err(NbdError::Inval);
    }

    if cmd.writes() && tf & NBD_FLAG_READ_ONLY != 0 {
        return Err(NbdError::Perm);
    }

    if matches!(cmd, Command::Flush | Command::Disc) {
        return if req.offset == 0 && req.length == 0 { Ok(cmd) } else { Err(NbdError::Inval) };
    }

    let min = u64::from(p.block.minimum.max(1));
    if !req.offset.is_multiple_of(min) || u64::from(req.length) % min != 0 {
        return Err(NbdError::Inval);
    }

    if matches!(cmd, Command::Read | Command::Write) && req.length > p.block.maximum {
        return Err(NbdError::Inval);
    }

    let in_bounds = req.offset.checked_add(u64::from(req.length)).is_some_and(|end| end <= p.size);
    if !in_bounds {
        return Err(match cmd {
            Command::Write | Command::WriteZeroes => NbdError::NoSpc,
            _ => NbdError::Inval,
        });
    }
    Ok(cmd)
}

// ---- Replies ---------------------------------------------------------------

/// Appends a simple reply header: magic, error, cookie.
///
/// For a successful `NBD_CMD_READ` without structured replies, the `length`
/// bytes of data follow; the driver writes them after this header. On
/// error nothing follows.
pub fn encode_simple_reply(out: &mut Vec<u8>, error: Option<NbdError>, cookie: u64) {
    put_u32(out, SIMPLE_REPLY_MAGIC);
    put_u32(out, error.map_or(0, NbdError::code));
    put_u64(out, cookie);
}

/// Appends a structured reply chunk header.
pub fn encode_chunk_header(out: &mut Vec<u8>, flags: u16, typ: u16, cookie: u64, len: u32) {
    put_u32(out, STRUCTURED_REPLY_MAGIC);
    put_u16(out, flags);
    put_u16(out, typ);
    put_u64(out, cookie);
    put_u32(out, len);
}

/// A chunk payload does not fit the 32-bit length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("chunk of {data_len} data bytes does not fit a structured reply (max 2^32 - 9)")]
pub struct ChunkTooLarge {
    /// The data length asked for.
    pub data_len: u32,
}

/// Appends the header and offset of an `NBD_REPLY_TYPE_OFFSET_DATA` chunk;
/// the driver writes `data_len` bytes of data after it.
///
/// The chunk length counts the 8-byte offset too, so `data_len` above
/// `u32::MAX - 8` cannot be expressed (the spec: such reads must be split);
/// and it must be at least 1 (the spec: at least 9 including the offset).
pub fn encode_offset_data_header(
    out: &mut Vec<u8>,
    done: bool,
    cookie: u64,
    offset: u64,
    data_len: u32,
) -> Result<(), ChunkTooLarge> {
    let len = data_len.checked_add(8).filter(|_| data_len > 0).ok_or(ChunkTooLarge { data_len })?;
    let flags = if done { NBD_REPLY_FLAG_DONE } else { 0 };
    encode_chunk_header(out, flags, NBD_REPLY_TYPE_OFFSET_DATA, cookie, len);
    put_u64(out, offset);
    Ok(())
}

/// Appends an `NBD_REPLY_TYPE_OFFSET_HOLE` chunk (`hole_size` bytes of
/// zeroes at `offset`; the spec requires a nonzero size, which the caller
/// guarantees).
pub fn encode_offset_hole(out: &mut Vec<u8>, done: bool, cookie: u64, offset: u64, hole_size: u32) {
    let flags = if done { NBD_REPLY_FLAG_DONE } else { 0 };
    encode_chunk_header(out, flags, NBD_REPLY_TYPE_OFFSET_HOLE, cookie, 12);
    put_u64(out, offset);
    put_u32(out, hole_size);
}

/// Appends the final `NBD_REPLY_TYPE_NONE` chunk (always `DONE`, no payload).
pub fn encode_none_done(out: &mut Vec<u8>, cookie: u64) {
    encode_chunk_header(out, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, cookie, 0);
}

/// Appends an `NBD_REPLY_TYPE_ERROR` chunk: error, 16-bit message length,
/// message. The message is clamped to 4096 bytes (the spec's string cap,
/// well inside the 16-bit field).
pub fn encode_error_chunk(out: &mut Vec<u8>, done: bool, cookie: u64, error: NbdError, message: &str) {
    let msg = clamp_str(message, MAX_STRING_LEN);
    let flags = if done { NBD_REPLY_FLAG_DONE } else { 0 };
    encode_chunk_header(out, flags, NBD_REPLY_TYPE_ERROR, cookie, 6 + msg.len() as u32);
    put_u32(out, error.code());
    put_u16(out, msg.len() as u16);
    out.extend_from_slice(msg.as_bytes());
}

/// Appends an `NBD_REPLY_TYPE_ERROR_OFFSET` chunk: as the error chunk, then
/// the offset (within the request) where the failure happened, so the
/// client can keep the data before it.
pub fn encode_error_offset_chunk(
    out: &mut Vec<u8>,
    done: bool,
    cookie: u64,
    error: NbdError,
    message: &str,
    offset: u64,
) {
    let msg = clamp_str(message, MAX_STRING_LEN);
    let flags = if done { NBD_REPLY_FLAG_DONE } else { 0 };
    let len = 14 + msg.len() as u32;
    encode_chunk_header(out, flags, NBD_REPLY_TYPE_ERROR_OFFSET, cookie, len);
    put_u32(out, error.code());
    put_u16(out, msg.len() as u16);
    out.extend_from_slice(msg.as_bytes());
    put_u64(out, offset);
}
