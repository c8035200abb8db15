//! Numbers of the NBD protocol, named as in the spec (`doc/proto.md`).
//!
//! Kept as plain integer constants rather than enums because most of them are
//! bit flags or open-ended code spaces where the peer may send values this
//! server does not know: the decoders keep the raw value and the caller
//! decides (for instance an unknown option gets `NBD_REP_ERR_UNSUP`, not a
//! decode failure).

// ---- Magics -------------------------------------------------------------

/// `NBDMAGIC`, first 8 bytes the server sends (also the oldstyle `INIT_PASSWD`).
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: second magic of the newstyle greeting and prefix of every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Prefix of every option reply (fixed newstyle).
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// `NBD_REQUEST_MAGIC`, prefix of every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// `NBD_SIMPLE_REPLY_MAGIC`.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// `NBD_STRUCTURED_REPLY_MAGIC`.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

// ---- Handshake flags (server, 16 bits) ----------------------------------

/// `NBD_FLAG_FIXED_NEWSTYLE`.
pub const NBD_FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// `NBD_FLAG_NO_ZEROES`: the server may skip the 124 zero bytes.
pub const NBD_FLAG_NO_ZEROES: u16 = 1 << 1;

// ---- Client flags (32 bits) ----------------------------------------------

/// `NBD_FLAG_C_FIXED_NEWSTYLE`.
pub const NBD_FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// `NBD_FLAG_C_NO_ZEROES`.
pub const NBD_FLAG_C_NO_ZEROES: u32 = 1 << 1;

// ---- Transmission flags (16 bits) ----------------------------------------

/// `NBD_FLAG_HAS_FLAGS`: MUST always be set.
pub const NBD_FLAG_HAS_FLAGS: u16 = 1 << 0;
/// `NBD_FLAG_READ_ONLY`.
pub const NBD_FLAG_READ_ONLY: u16 = 1 << 1;
/// `NBD_FLAG_SEND_FLUSH`.
pub const NBD_FLAG_SEND_FLUSH: u16 = 1 << 2;
/// `NBD_FLAG_SEND_FUA`.
pub const NBD_FLAG_SEND_FUA: u16 = 1 << 3;
/// `NBD_FLAG_ROTATIONAL`.
pub const NBD_FLAG_ROTATIONAL: u16 = 1 << 4;
/// `NBD_FLAG_SEND_TRIM`.
pub const NBD_FLAG_SEND_TRIM: u16 = 1 << 5;
/// `NBD_FLAG_SEND_WRITE_ZEROES`.
pub const NBD_FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// `NBD_FLAG_SEND_DF`: only with structured replies negotiated.
pub const NBD_FLAG_SEND_DF: u16 = 1 << 7;
/// `NBD_FLAG_CAN_MULTI_CONN`.
pub const NBD_FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
/// `NBD_FLAG_SEND_RESIZE`.
pub const NBD_FLAG_SEND_RESIZE: u16 = 1 << 9;
/// `NBD_FLAG_SEND_CACHE`.
pub const NBD_FLAG_SEND_CACHE: u16 = 1 << 10;
/// `NBD_FLAG_SEND_FAST_ZERO`.
pub const NBD_FLAG_SEND_FAST_ZERO: u16 = 1 << 11;

// ---- Option codes ----------------------------------------------------------

/// `NBD_OPT_EXPORT_NAME`: pick an export and enter transmission; cannot fail politely.
pub const NBD_OPT_EXPORT_NAME: u32 = 1;
/// `NBD_OPT_ABORT`.
pub const NBD_OPT_ABORT: u32 = 2;
/// `NBD_OPT_LIST`.
pub const NBD_OPT_LIST: u32 = 3;
/// `NBD_OPT_STARTTLS`.
pub const NBD_OPT_STARTTLS: u32 = 5;
/// `NBD_OPT_INFO`.
pub const NBD_OPT_INFO: u32 = 6;
/// `NBD_OPT_GO`.
pub const NBD_OPT_GO: u32 = 7;
/// `NBD_OPT_STRUCTURED_REPLY`.
pub const NBD_OPT_STRUCTURED_REPLY: u32 = 8;
/// `NBD_OPT_LIST_META_CONTEXT` (not supported by this server).
pub const NBD_OPT_LIST_META_CONTEXT: u32 = 9;
/// `NBD_OPT_SET_META_CONTEXT` (not supported by this server).
pub const NBD_OPT_SET_META_CONTEXT: u32 = 10;
/// `NBD_OPT_EXTENDED_HEADERS` (not supported by this server).
pub const NBD_OPT_EXTENDED_HEADERS: u32 = 11;

// ---- Option reply types ----------------------------------------------------

/// `NBD_REP_ACK`.
pub const NBD_REP_ACK: u32 = 1;
/// `NBD_REP_SERVER`: one export in an `NBD_OPT_LIST` answer.
pub const NBD_REP_SERVER: u32 = 2;
/// `NBD_REP_INFO`.
pub const NBD_REP_INFO: u32 = 3;
/// `NBD_REP_META_CONTEXT`.
pub const NBD_REP_META_CONTEXT: u32 = 4;
/// Bit 31 marks every error reply type.
pub const NBD_REP_FLAG_ERROR: u32 = 1 << 31;
/// `NBD_REP_ERR_UNSUP`: option unknown to this server.
pub const NBD_REP_ERR_UNSUP: u32 = NBD_REP_FLAG_ERROR | 1;
/// `NBD_REP_ERR_POLICY`.
pub const NBD_REP_ERR_POLICY: u32 = NBD_REP_FLAG_ERROR | 2;
/// `NBD_REP_ERR_INVALID`: option known but syntactically invalid.
pub const NBD_REP_ERR_INVALID: u32 = NBD_REP_FLAG_ERROR | 3;
/// `NBD_REP_ERR_PLATFORM`.
pub const NBD_REP_ERR_PLATFORM: u32 = NBD_REP_FLAG_ERROR | 4;
/// `NBD_REP_ERR_TLS_REQD`.
pub const NBD_REP_ERR_TLS_REQD: u32 = NBD_REP_FLAG_ERROR | 5;
/// `NBD_REP_ERR_UNKNOWN`: no such export.
pub const NBD_REP_ERR_UNKNOWN: u32 = NBD_REP_FLAG_ERROR | 6;
/// `NBD_REP_ERR_SHUTDOWN`.
pub const NBD_REP_ERR_SHUTDOWN: u32 = NBD_REP_FLAG_ERROR | 7;
/// `NBD_REP_ERR_BLOCK_SIZE_REQD`.
pub const NBD_REP_ERR_BLOCK_SIZE_REQD: u32 = NBD_REP_FLAG_ERROR | 8;
/// `NBD_REP_ERR_TOO_BIG`: request or reply too large to process.
pub const NBD_REP_ERR_TOO_BIG: u32 = NBD_REP_FLAG_ERROR | 9;

// ---- Info types (NBD_OPT_INFO / NBD_OPT_GO) ---------------------------------

/// `NBD_INFO_EXPORT`: size and transmission flags; always sent on success.
pub const NBD_INFO_EXPORT: u16 = 0;
/// `NBD_INFO_NAME`.
pub const NBD_INFO_NAME: u16 = 1;
/// `NBD_INFO_DESCRIPTION`.
pub const NBD_INFO_DESCRIPTION: u16 = 2;
/// `NBD_INFO_BLOCK_SIZE`: minimum, preferred, maximum payload.
pub const NBD_INFO_BLOCK_SIZE: u16 = 3;

// ---- Commands ------------------------------------------------------------

/// `NBD_CMD_READ`.
pub const NBD_CMD_READ: u16 = 0;
/// `NBD_CMD_WRITE`: the header is followed by `length` bytes of payload.
pub const NBD_CMD_WRITE: u16 = 1;
/// `NBD_CMD_DISC`: no reply.
pub const NBD_CMD_DISC: u16 = 2;
/// `NBD_CMD_FLUSH`.
pub const NBD_CMD_FLUSH: u16 = 3;
/// `NBD_CMD_TRIM`.
pub const NBD_CMD_TRIM: u16 = 4;
/// `NBD_CMD_CACHE` (not supported by this server).
pub const NBD_CMD_CACHE: u16 = 5;
/// `NBD_CMD_WRITE_ZEROES`.
pub const NBD_CMD_WRITE_ZEROES: u16 = 6;
/// `NBD_CMD_BLOCK_STATUS` (not supported by this server).
pub const NBD_CMD_BLOCK_STATUS: u16 = 7;

// ---- Command flags ---------------------------------------------------------

/// `NBD_CMD_FLAG_FUA`.
pub const NBD_CMD_FLAG_FUA: u16 = 1 << 0;
/// `NBD_CMD_FLAG_NO_HOLE`: `NBD_CMD_WRITE_ZEROES` only.
pub const NBD_CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// `NBD_CMD_FLAG_DF`: `NBD_CMD_READ` only, with `NBD_FLAG_SEND_DF`.
pub const NBD_CMD_FLAG_DF: u16 = 1 << 2;
/// `NBD_CMD_FLAG_REQ_ONE`: `NBD_CMD_BLOCK_STATUS` only.
pub const NBD_CMD_FLAG_REQ_ONE: u16 = 1 << 3;
/// `NBD_CMD_FLAG_FAST_ZERO`: `NBD_CMD_WRITE_ZEROES` only, with `NBD_FLAG_SEND_FAST_ZERO`.
pub const NBD_CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

// ---- Error values -------------------------------------------------------------

/// The error values a reply may carry.
///
/// The spec restricts the error field to this set (values borrowed from
/// Linux errno so that old clients still understand them); an enum makes it
/// impossible to leak a host errno that is not in the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum NbdError {
    /// `EPERM`: write or trim on a read-only export.
    Perm = 1,
    /// `EIO`.
    Io = 5,
    /// `ENOMEM` (the spec asks servers to avoid it).
    NoMem = 12,
    /// `EINVAL`: unknown command or flag, bad alignment, read past the end.
    Inval = 22,
    /// `ENOSPC`: write past the end of the export.
    NoSpc = 28,
    /// `EOVERFLOW`: request too large (a hint; `EINVAL` is the old answer).
    Overflow = 75,
    /// `ENOTSUP`: e.g. `NBD_CMD_FLAG_FAST_ZERO` cannot be honoured fast.
    NotSup = 95,
    /// `ESHUTDOWN`: the server is shutting down; the client must disconnect.
    Shutdown = 108,
}

impl NbdError {
    /// The value on the wire.
    pub const fn code(self) -> u32 {
        self as u32
    }
}

// ---- Structured replies ------------------------------------------------------

/// `NBD_REPLY_FLAG_DONE`: last chunk of a structured reply.
pub const NBD_REPLY_FLAG_DONE: u16 = 1 << 0;
/// `NBD_REPLY_TYPE_NONE`: empty final chunk.
pub const NBD_REPLY_TYPE_NONE: u16 = 0;
/// `NBD_REPLY_TYPE_OFFSET_DATA`: offset then data.
pub const NBD_REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// `NBD_REPLY_TYPE_OFFSET_HOLE`: offset then hole size.
pub const NBD_REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// `NBD_REPLY_TYPE_BLOCK_STATUS`.
pub const NBD_REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// `NBD_REPLY_TYPE_ERROR`: error, message length, message.
pub const NBD_REPLY_TYPE_ERROR: u16 = (1 << 15) | 1;
/// `NBD_REPLY_TYPE_ERROR_OFFSET`: as `ERROR`, then the failing offset.
pub const NBD_REPLY_TYPE_ERROR_OFFSET: u16 = (1 << 15) | 2;

// ---- Sizes -------------------------------------------------------------------

/// Length of the newstyle greeting (`NBDMAGIC`, `IHAVEOPT`, handshake flags).
pub const GREETING_LEN: usize = 18;
/// Length of an option header (`IHAVEOPT`, option, length).
pub const OPTION_HEADER_LEN: usize = 16;
/// Length of a compact request header.
pub const REQUEST_HEADER_LEN: usize = 28;
/// Length of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Length of a structured reply chunk header.
pub const STRUCTURED_HEADER_LEN: usize = 20;
/// Zero padding after the `NBD_OPT_EXPORT_NAME` reply, unless `NO_ZEROES`.
pub const EXPORT_NAME_PAD_LEN: usize = 124;
/// Longest string (export name, message) the spec allows.
pub const MAX_STRING_LEN: usize = 4096;
/// Largest read the spec requires a server to answer unfragmented with `DF`.
pub const DF_MIN_GUARANTEE: u32 = 65_536;
