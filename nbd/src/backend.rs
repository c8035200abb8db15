//! The boundary between the NBD server and the block device it exports.
//!
//! The server knows nothing of iSCSI or paths: it asks a [`Backend`] for
//! its [`Geometry`] when a client picks the export, and runs each request
//! as one call. `mpio_mpath::Device` implements it (see [`crate::mpath`]);
//! the ublk frontend uses the same device calls.
//!
//! Every call gets ranges the server has already checked: inside the
//! export, aligned to [`Geometry::block_len`], no longer than the
//! negotiated maximum for reads and writes. A backend can still refuse
//! (a device that shrank, a write-protected LU) with a [`BackendError`]
//! carrying the NBD error the client gets.

use std::future::Future;

use bytes::Bytes;

use crate::consts::NbdError;

/// What an export looks like to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Size in bytes (a multiple of `block_len`).
    pub size: u64,
    /// Logical block: the smallest unit of addressing. Advertised as the
    /// minimum block size; requests not aligned to it are refused with
    /// `EINVAL`. A power of two, at most 64 KiB (the NBD limit).
    pub block_len: u32,
    /// Physical block (or optimal granularity): advertised as the
    /// preferred block size, the size below which writes cost a
    /// read-modify-write in the device.
    pub preferred_block_len: u32,
    /// Largest transfer the device takes in one command, if it states one;
    /// the advertised maximum payload is this, capped by the server's own
    /// limit.
    pub max_transfer: Option<u32>,
    /// Writes are refused (`NBD_FLAG_READ_ONLY`, `EPERM`).
    pub read_only: bool,
    /// Deallocation is supported (`NBD_FLAG_SEND_TRIM`).
    pub trim: bool,
    /// Zeroing without a data payload is supported
    /// (`NBD_FLAG_SEND_WRITE_ZEROES`); the backend may emulate it.
    pub write_zeroes: bool,
    /// A flush on any connection covers writes completed on every
    /// connection (`NBD_FLAG_CAN_MULTI_CONN`): true when all connections
    /// reach one device whose cache flush is global.
    pub multi_conn: bool,
}

/// Why a backend call failed, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({error:?})")]
pub struct BackendError {
    /// The NBD error sent in the reply.
    pub error: NbdError,
    /// One line for logs and for structured-reply error chunks.
    pub message: String,
}

impl BackendError {
    /// An error with a message.
    pub fn new(error: NbdError, message: impl Into<String>) -> BackendError {
        BackendError { error, message: message.into() }
    }
}

/// Flags of a zeroing request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZeroFlags {
    /// Persist before completing (`NBD_CMD_FLAG_FUA`).
    pub fua: bool,
    /// The range must stay allocated (`NBD_CMD_FLAG_NO_HOLE`); without it
    /// the backend may deallocate as long as the range reads back as
    /// zeroes.
    pub no_hole: bool,
}

/// Data a read returned, as a list of buffers.
///
/// The server writes the buffers to the socket with one vectored write
/// behind the reply header, so data received from the target in several
/// PDUs reaches the client without being copied into one buffer first.
pub trait ReadBuffers: Send + 'static {
    /// The buffers, in order; their lengths add up to the bytes read.
    fn buffers(&self) -> &[Bytes];
}

impl ReadBuffers for Bytes {
    fn buffers(&self) -> &[Bytes] {
        std::slice::from_ref(self)
    }
}

impl ReadBuffers for Vec<Bytes> {
    fn buffers(&self) -> &[Bytes] {
        self
    }
}

/// A block device the server can export.
///
/// Calls may run concurrently (many requests in flight on a connection and
/// several connections per export). The futures must be `Send`: each
/// connection runs on the tokio runtime. A future once started is driven
/// to completion by the server, even when the client goes away, so a
/// backend needs no cancellation safety.
pub trait Backend: Send + Sync + 'static {
    /// What [`Backend::read`] returns.
    type Data: ReadBuffers;

    /// The export's geometry now, or why it cannot be used yet (the
    /// message goes to the client in an `NBD_REP_ERR_UNKNOWN` reply).
    fn geometry(&self) -> Result<Geometry, String>;

    /// Reads `len` bytes at `offset`.
    fn read(&self, offset: u64, len: u32) -> impl Future<Output = Result<Self::Data, BackendError>> + Send;

    /// Writes `data` at `offset`; with `fua`, on stable media before it
    /// completes.
    fn write(&self, offset: u64, data: Bytes, fua: bool) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Makes every completed write durable.
    fn flush(&self) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Deallocates `len` bytes at `offset` (only called when
    /// [`Geometry::trim`] is set); with `fua`, durably.
    fn trim(&self, offset: u64, len: u32, fua: bool) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Zeroes `len` bytes at `offset` (only called when
    /// [`Geometry::write_zeroes`] is set).
    fn write_zeroes(
        &self,
        offset: u64,
        len: u32,
        flags: ZeroFlags,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
}
