//! Fixed-newstyle negotiation, server side.
//!
//! The sequence is: server sends [`encode_greeting`]; client sends 32 bits
//! of flags ([`decode_client_flags`]); then the client sends options
//! ([`decode_option`], then [`parse_option`] on the payload) and the server
//! answers each with option replies (the `encode_rep_*` functions) until the
//! client ends haggling with `NBD_OPT_GO` (after `NBD_REP_INFO`s and
//! `NBD_REP_ACK`) or `NBD_OPT_EXPORT_NAME` (answered by
//! [`encode_export_name_reply`], which has no way to say no).
//!
//! Framing errors ([`DecodeError`]) end the connection; payload errors
//! ([`OptionPayloadError`]) are answered with the option error reply they
//! name, and negotiation goes on.

use crate::consts::*;
use crate::wire::{Reader, clamp_str, put_u16, put_u32, put_u64};

/// An error after which the byte stream cannot be trusted any more.
///
/// The driver's answer is a hard disconnect: there is no way to resynchronise
/// a stream whose framing is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A message did not start with the magic the protocol requires there.
    #[error("bad magic {found:#x}, expected {expected:#x}")]
    BadMagic {
        /// What was expected.
        expected: u64,
        /// What arrived.
        found: u64,
    },
    /// The client set a flag the server does not know or did not offer; the
    /// spec says the server MUST drop the connection.
    #[error("client flags {flags:#x} not acceptable (offered handshake flags {offered:#x})")]
    BadClientFlags {
        /// Flags the client sent.
        flags: u32,
        /// Handshake flags the server had offered.
        offered: u16,
    },
    /// An option announced a payload longer than the server accepts. Refused
    /// from the header alone, before anything is allocated or read; the
    /// driver may instead answer `NBD_REP_ERR_TOO_BIG` and skip `len` bytes
    /// if it is willing to drain them.
    #[error("option {option} announces {len} bytes, limit {max}")]
    OptionTooLong {
        /// Option code.
        option: u32,
        /// Announced payload length.
        len: u32,
        /// The limit in force.
        max: u32,
    },
}

/// Why an option payload is unacceptable, and which error reply to send.
///
/// The message ([`std::fmt::Display`]) is meant to go into the error reply
/// so a human can see why the server refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionPayloadError {
    /// The payload does not have the layout the option requires.
    #[error("malformed {what}")]
    Malformed {
        /// What was malformed.
        what: &'static str,
    },
    /// A string is longer than the spec's 4096-byte cap.
    #[error("{what} longer than {MAX_STRING_LEN} bytes")]
    StringTooLong {
        /// Which string.
        what: &'static str,
    },
    /// A string is not UTF-8 or contains NUL, which the spec forbids.
    #[error("{what} is not a NUL-free UTF-8 string")]
    BadString {
        /// Which string.
        what: &'static str,
    },
}

impl OptionPayloadError {
    /// The option reply type to answer with.
    pub fn reply_type(&self) -> u32 {
        match self {
            OptionPayloadError::StringTooLong { .. } => NBD_REP_ERR_TOO_BIG,
            OptionPayloadError::Malformed { .. } | OptionPayloadError::BadString { .. } => NBD_REP_ERR_INVALID,
        }
    }
}

/// Default cap on option payloads.
///
/// No option this server understands needs more than a 4096-byte name plus a
/// short info list; 64 KiB leaves room for clients that send long
/// `NBD_OPT_GO` info lists while bounding what an unauthenticated peer can
/// make the server buffer.
pub const DEFAULT_MAX_OPTION_LEN: u32 = 64 * 1024;

/// Appends the fixed-newstyle greeting: `NBDMAGIC`, `IHAVEOPT`, handshake flags.
pub fn encode_greeting(out: &mut Vec<u8>, handshake_flags: u16) {
    put_u64(out, NBDMAGIC);
    put_u64(out, IHAVEOPT);
    put_u16(out, handshake_flags);
}

/// What the client's flags mean for the rest of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFlags {
    /// Raw flags as sent.
    pub raw: u32,
    /// The client speaks fixed newstyle (may send options other than
    /// `NBD_OPT_EXPORT_NAME` and understands option replies).
    pub fixed_newstyle: bool,
    /// The 124 zero bytes after `NBD_OPT_EXPORT_NAME`'s reply are omitted.
    pub no_zeroes: bool,
}

/// Decodes the client's 32-bit flags, checked against what the server
/// offered in its greeting.
///
/// Unknown flags, or `NBD_FLAG_C_NO_ZEROES` when the server did not offer
/// `NBD_FLAG_NO_ZEROES`, are refused: the spec requires the server to drop
/// the connection then.
pub fn decode_client_flags(buf: &[u8], offered: u16) -> Result<Option<(ClientFlags, usize)>, DecodeError> {
    let Some(raw) = Reader::new(buf).u32() else {
        return Ok(None);
    };
    let mut allowed = NBD_FLAG_C_FIXED_NEWSTYLE;
    if offered & NBD_FLAG_NO_ZEROES != 0 {
        allowed |= NBD_FLAG_C_NO_ZEROES;
    }
    if raw & !allowed != 0 {
        return Err(DecodeError::BadClientFlags { flags: raw, offered });
    }
    let flags = ClientFlags {
        raw,
        fixed_newstyle: raw & NBD_FLAG_C_FIXED_NEWSTYLE != 0,
        no_zeroes: raw & NBD_FLAG_C_NO_ZEROES != 0,
    };
    Ok(Some((flags, 4)))
}

/// One option as framed on the wire; the payload borrows the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawOption<'a> {
    /// Option code (`NBD_OPT_*`, possibly unknown).
    pub code: u32,
    /// Payload, exactly as long as the header said.
    pub data: &'a [u8],
}

/// Decodes one option (header and payload).
///
/// The length is checked against `max_len` as soon as the 16-byte header is
/// there, so an oversized option is refused without waiting for (or
/// buffering) its payload.
pub fn decode_option(buf: &[u8], max_len: u32) -> Result<Option<(RawOption<'_>, usize)>, DecodeError> {
    let mut r = Reader::new(buf);
    let (Some(magic), Some(code), Some(len)) = (r.u64(), r.u32(), r.u32()) else {
        return Ok(None);
    };
    if magic != IHAVEOPT {
        return Err(DecodeError::BadMagic { expected: IHAVEOPT, found: magic });
    }
    if len > max_len {
        return Err(DecodeError::OptionTooLong { option: code, len, max: max_len });
    }
    // u32 fits usize on every platform this runs on (64-bit Linux); a failed
    // conversion would be an oversized option anyway.
    let Ok(n) = usize::try_from(len) else {
        return Err(DecodeError::OptionTooLong { option: code, len, max: max_len });
    };
    let Some(data) = r.bytes(n) else {
        return Ok(None);
    };
    Ok(Some((RawOption { code, data }, OPTION_HEADER_LEN + n)))
}

/// The payload of `NBD_OPT_INFO` / `NBD_OPT_GO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest<'a> {
    /// Export name (empty = default export).
    pub name: &'a str,
    /// Info types the client asked for (`NBD_INFO_*`, possibly unknown,
    /// possibly repeated). The server always sends `NBD_INFO_EXPORT`
    /// whatever this says.
    pub requests: Vec<u16>,
}

impl InfoRequest<'_> {
    /// Whether the client asked for info type `ty`.
    pub fn wants(&self, ty: u16) -> bool {
        self.requests.contains(&ty)
    }
}

/// An option with its payload parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOption<'a> {
    /// `NBD_OPT_EXPORT_NAME` with the name.
    ExportName(&'a str),
    /// `NBD_OPT_ABORT` (any payload is ignored).
    Abort,
    /// `NBD_OPT_LIST`.
    List,
    /// `NBD_OPT_STARTTLS`.
    StartTls,
    /// `NBD_OPT_INFO`.
    Info(InfoRequest<'a>),
    /// `NBD_OPT_GO`.
    Go(InfoRequest<'a>),
    /// `NBD_OPT_STRUCTURED_REPLY`.
    StructuredReply,
    /// Anything else: answer `NBD_REP_ERR_UNSUP`.
    Unknown(u32),
}

/// Parses the payload of an option the server knows.
///
/// Options whose payload must be empty (`LIST`, `STARTTLS`,
/// `STRUCTURED_REPLY`) are refused with `NBD_REP_ERR_INVALID` otherwise, as
/// the spec's own example of an invalid option is an `NBD_OPT_LIST` with
/// data.
pub fn parse_option(opt: RawOption<'_>) -> Result<ClientOption<'_>, OptionPayloadError> {
    let empty = |what, v| {
        if opt.data.is_empty() { Ok(v) } else { Err(OptionPayloadError::Malformed { what }) }
    };
    match opt.code {
        NBD_OPT_EXPORT_NAME => parse_string(opt.data, "export name").map(ClientOption::ExportName),
        NBD_OPT_ABORT => Ok(ClientOption::Abort),
        NBD_OPT_LIST => empty("NBD_OPT_LIST (payload must be empty)", ClientOption::List),
        NBD_OPT_STARTTLS => empty("NBD_OPT_STARTTLS (payload must be empty)", ClientOption::StartTls),
        NBD_OPT_STRUCTURED_REPLY => {
            empty("NBD_OPT_STRUCTURED_REPLY (payload must be empty)", ClientOption::StructuredReply)
        }
        NBD_OPT_INFO => parse_info_request(opt.data).map(ClientOption::Info),
        NBD_OPT_GO => parse_info_request(opt.data).map(ClientOption::Go),
        other => Ok(ClientOption::Unknown(other)),
    }
}

/// Parses the `NBD_OPT_INFO` / `NBD_OPT_GO` payload:
/// 32-bit name length, name, 16-bit request count, that many 16-bit types.
///
/// Every length is checked against what is actually there, and the payload
/// must end exactly after the last info type: trailing bytes mean client and
/// server disagree on the layout, which is worth an error rather than a
/// guess.
pub fn parse_info_request(data: &[u8]) -> Result<InfoRequest<'_>, OptionPayloadError> {
    const WHAT: &str = "NBD_OPT_INFO/GO payload";
    let bad = || OptionPayloadError::Malformed { what: WHAT };
    let mut r = Reader::new(data);
    let name_len = r.u32().ok_or_else(bad)?;
    let name_len = usize::try_from(name_len).map_err(|_| bad())?;
    // Checked before the length limit so that a name length pointing past
    // the payload is reported as malformed, not as too long.
    let name = r.bytes(name_len).ok_or_else(bad)?;
    let name = parse_string(name, "export name")?;
    let count = r.u16().ok_or_else(bad)?;
    if r.remaining() != usize::from(count) * 2 {
        return Err(bad());
    }
    let mut requests = Vec::with_capacity(usize::from(count));
    while let Some(ty) = r.u16() {
        requests.push(ty);
    }
    Ok(InfoRequest { name, requests })
}

/// A protocol string: at most 4096 bytes of UTF-8 without NUL.
fn parse_string<'a>(b: &'a [u8], what: &'static str) -> Result<&'a str, OptionPayloadError> {
    if b.len() > MAX_STRING_LEN {
        return Err(OptionPayloadError::StringTooLong { what });
    }
    let s = std::str::from_utf8(b).map_err(|_| OptionPayloadError::BadString { what })?;
    if s.contains('\0') {
        return Err(OptionPayloadError::BadString { what });
    }
    Ok(s)
}

// ---- Option replies ------------------------------------------------------

/// Appends an option reply: magic, option, reply type, length, data.
///
/// `data` is server-built and short (the callers below clamp strings), so a
/// length beyond `u32` is impossible in practice; it is clamped rather than
/// made an error path.
pub fn encode_option_reply(out: &mut Vec<u8>, option: u32, reply_type: u32, data: &[u8]) {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    put_u64(out, OPTION_REPLY_MAGIC);
    put_u32(out, option);
    put_u32(out, reply_type);
    put_u32(out, len);
    out.extend(data.iter().take(len as usize));
}

/// Appends `NBD_REP_ACK` for `option`.
pub fn encode_rep_ack(out: &mut Vec<u8>, option: u32) {
    encode_option_reply(out, option, NBD_REP_ACK, &[]);
}

/// Appends an error reply (`reply_type` should have bit 31 set) with a
/// human-readable message, clamped to the spec's 4096 bytes.
pub fn encode_rep_error(out: &mut Vec<u8>, option: u32, reply_type: u32, message: &str) {
    let msg = clamp_str(message, MAX_STRING_LEN);
    encode_option_reply(out, option, reply_type, msg.as_bytes());
}

/// Appends one `NBD_REP_SERVER` (an `NBD_OPT_LIST` entry): name length,
/// name, then an optional description for humans.
pub fn encode_rep_server(out: &mut Vec<u8>, name: &str, description: &str) {
    let name = clamp_str(name, MAX_STRING_LEN);
    let desc = clamp_str(description, MAX_STRING_LEN);
    let mut data = Vec::with_capacity(4 + name.len() + desc.len());
    put_u32(&mut data, name.len() as u32);
    data.extend_from_slice(name.as_bytes());
    data.extend_from_slice(desc.as_bytes());
    encode_option_reply(out, NBD_OPT_LIST, NBD_REP_SERVER, &data);
}

/// Appends `NBD_REP_INFO` / `NBD_INFO_EXPORT`: export size and
/// transmission flags. `option` is `NBD_OPT_INFO` or `NBD_OPT_GO`.
pub fn encode_rep_info_export(out: &mut Vec<u8>, option: u32, size: u64, transmission_flags: u16) {
    let mut data = Vec::with_capacity(12);
    put_u16(&mut data, NBD_INFO_EXPORT);
    put_u64(&mut data, size);
    put_u16(&mut data, transmission_flags);
    encode_option_reply(out, option, NBD_REP_INFO, &data);
}

/// Appends `NBD_REP_INFO` / `NBD_INFO_NAME` (the canonical export name).
pub fn encode_rep_info_name(out: &mut Vec<u8>, option: u32, name: &str) {
    encode_info_string(out, option, NBD_INFO_NAME, name);
}

/// Appends `NBD_REP_INFO` / `NBD_INFO_DESCRIPTION`.
pub fn encode_rep_info_description(out: &mut Vec<u8>, option: u32, description: &str) {
    encode_info_string(out, option, NBD_INFO_DESCRIPTION, description);
}

fn encode_info_string(out: &mut Vec<u8>, option: u32, ty: u16, s: &str) {
    let s = clamp_str(s, MAX_STRING_LEN);
    let mut data = Vec::with_capacity(2 + s.len());
    put_u16(&mut data, ty);
    data.extend_from_slice(s.as_bytes());
    encode_option_reply(out, option, NBD_REP_INFO, &data);
}

/// Block size constraints advertised with `NBD_INFO_BLOCK_SIZE` and
/// enforced by [`crate::transmission::validate_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizes {
    /// Minimum block size: offsets and lengths must be multiples (power of
    /// two, 1 to 64 KiB).
    pub minimum: u32,
    /// Preferred block size (power of two, at least `minimum`).
    pub preferred: u32,
    /// Maximum payload of a read or write (multiple of `minimum`).
    pub maximum: u32,
}

/// Appends `NBD_REP_INFO` / `NBD_INFO_BLOCK_SIZE`.
pub fn encode_rep_info_block_size(out: &mut Vec<u8>, option: u32, sizes: BlockSizes) {
    let mut data = Vec::with_capacity(14);
    put_u16(&mut data, NBD_INFO_BLOCK_SIZE);
    put_u32(&mut data, sizes.minimum);
    put_u32(&mut data, sizes.preferred);
    put_u32(&mut data, sizes.maximum);
    encode_option_reply(out, option, NBD_REP_INFO, &data);
}

/// Appends the reply to `NBD_OPT_EXPORT_NAME`: size, transmission flags,
/// and 124 zero bytes unless the client negotiated `NBD_FLAG_C_NO_ZEROES`.
pub fn encode_export_name_reply(out: &mut Vec<u8>, size: u64, transmission_flags: u16, no_zeroes: bool) {
    put_u64(out, size);
    put_u16(out, transmission_flags);
    if !no_zeroes {
        out.resize(out.len() + EXPORT_NAME_PAD_LEN, 0);
    }
}
