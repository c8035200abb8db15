//! The block contract every frontend serves: what an NBD export, a ublk
//! queue or a test backend asks of a block device, and nothing of iSCSI.
//!
//! - [`Geometry`]: what the device looks like (capacity, logical and
//!   physical block, largest transfer, discard limits, write zeroes,
//!   read-only, write cache and FUA, rotational), derived once from the
//!   logical unit ([`crate::LuInfo::geometry`]);
//! - [`BlockDevice`]: the requests (read, write, flush, discard, write
//!   zeroes), with byte offsets and lengths; [`crate::Device`] implements
//!   it, splitting each request into commands the LU accepts and carrying
//!   them over the paths (retries, failover, all-paths-down hold);
//! - [`IoError`]: why a request failed, with one [`Errno`] per error class
//!   (`mpio_dsm::classify`): a frontend maps that errno to its protocol
//!   (NBD's error values; a ublk completion's `-errno`) and nothing else;
//! - [`ReadBuf`]: what a read returns, the buffers as the transport
//!   received them (no copy into one buffer), owned by the device.
//!
//! Durability: a completed FUA write, flush, or FUA discard / write zeroes
//! is durable whatever the LU's cache ([`crate::durability`]);
//! [`Geometry::write_cache`] tells a frontend that can say so (ublk's
//! volatile write cache attribute) whether flushes do anything.
//!
//! Calls may run concurrently, from any thread and any tokio runtime; the
//! futures are `Send`, and `'static` once the device is cloned into them
//! (`Device` is a cheap handle): a ublk queue thread awaits them in place,
//! on the runtime the device runs on or on one of its own.

use std::future::Future;

use bytes::Bytes;
pub use mpio_dsm::Errno;

use crate::durability::WriteCache;

/// What a block device looks like to its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Size in bytes (a multiple of `logical_block`).
    pub capacity: u64,
    /// Logical block: the unit of addressing; requests must be aligned to
    /// it.
    pub logical_block: u32,
    /// Physical block: writes smaller than it cost a read-modify-write
    /// in the device (at least `logical_block`).
    pub physical_block: u32,
    /// Largest transfer the device takes in one command, if it states
    /// one. Larger requests are split by the device, so this is advice
    /// for what a frontend advertises.
    pub max_transfer: Option<u32>,
    /// Writes are refused (the LU is write-protected, EROFS).
    pub read_only: bool,
    /// Deallocation is supported, within these limits.
    pub discard: Option<Discard>,
    /// Zeroing without a data payload is supported (the device may
    /// emulate it with writes of zeroes).
    pub write_zeroes: bool,
    /// The LU's write cache and FUA support, which decide what FUA and
    /// flush cost (they are always offered).
    pub write_cache: WriteCache,
    /// A flush covers writes completed through any submitter (every
    /// connection or queue reaches one LU, whose cache flush is LU-wide):
    /// NBD's `CAN_MULTI_CONN`.
    pub shared_flush: bool,
    /// Whether the medium rotates, when the LU says (VPD B1h).
    pub rotational: Option<bool>,
}

/// Discard limits, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discard {
    /// The granularity the LU deallocates in (OPTIMAL UNMAP GRANULARITY,
    /// at least one logical block).
    pub granularity: u32,
    /// Where the first whole granule starts (UNMAP GRANULARITY ALIGNMENT).
    pub alignment: u32,
    /// Most bytes one UNMAP may cover, if the LU says; the device splits
    /// larger requests.
    pub max_bytes: Option<u64>,
}

/// Flags of a write-zeroes request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZeroFlags {
    /// Durable before it completes.
    pub fua: bool,
    /// The range must stay allocated (NBD's `NO_HOLE`, the block layer's
    /// `REQ_NOUNMAP`); without it the device may deallocate as long as the
    /// range reads back as zeroes.
    pub no_hole: bool,
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct IoError {
    /// What went wrong, for logs and metrics.
    pub kind: IoErrorKind,
    /// What the frontend completes the request with.
    pub errno: Errno,
    /// One line for the operator.
    pub message: String,
}

impl IoError {
    /// The logical unit's (or the request's) own error.
    pub fn device(errno: Errno, message: impl Into<String>) -> IoError {
        IoError { kind: IoErrorKind::Device, errno, message: message.into() }
    }
}

/// The classes of [`IoError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoErrorKind {
    /// No usable path within the hold time (or hold mode "fail").
    NoPath,
    /// The logical unit's own error (medium, illegal request,
    /// reservation conflict, ...), or a request it cannot take.
    Device,
    /// A transient condition lasted beyond RetryCount.
    RetriesExhausted,
    /// The device is closing ([`crate::Device::shutdown`]).
    Closed,
}

/// Data a read returned: buffers in order, as they arrived (a read over
/// several PDUs or commands keeps its pieces), so a frontend writes them
/// out with one vectored write and no copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBuf {
    chunks: Vec<Bytes>,
    len: usize,
}

impl ReadBuf {
    /// No data yet.
    pub fn new() -> ReadBuf {
        ReadBuf::default()
    }

    /// Appends a buffer (empty ones are dropped).
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push(chunk);
        }
    }

    /// The buffers, in order; their lengths add up to [`ReadBuf::len`].
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One contiguous buffer (copies unless there is one chunk).
    pub fn to_bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut v = Vec::with_capacity(self.len);
                many.iter().for_each(|c| v.extend_from_slice(c));
                Bytes::from(v)
            }
        }
    }
}

impl From<Bytes> for ReadBuf {
    fn from(b: Bytes) -> ReadBuf {
        let mut r = ReadBuf::new();
        r.push(b);
        r
    }
}

impl From<Vec<Bytes>> for ReadBuf {
    fn from(chunks: Vec<Bytes>) -> ReadBuf {
        let mut r = ReadBuf::new();
        chunks.into_iter().for_each(|c| r.push(c));
        r
    }
}

/// A block device a frontend serves. Offsets and lengths are in bytes,
/// aligned to [`Geometry::logical_block`] and inside the device (a
/// frontend checks them against the geometry it advertised; the device
/// checks again, with EINVAL). A future once started should be driven to
/// completion: the device needs no cancellation safety from its callers,
/// and a write dropped halfway may have reached the LU in part.
pub trait BlockDevice: Send + Sync + 'static {
    /// The geometry now, or why the device cannot serve yet (no path
    /// claimed: the LU is unknown).
    fn geometry(&self) -> Result<Geometry, String>;

    /// Reads `len` bytes at `offset`.
    fn read(&self, offset: u64, len: u64) -> impl Future<Output = Result<ReadBuf, IoError>> + Send;

    /// Writes `data` at `offset`; with `fua`, durable before it completes.
    fn write(&self, offset: u64, data: Bytes, fua: bool) -> impl Future<Output = Result<(), IoError>> + Send;

    /// Makes every completed write durable.
    fn flush(&self) -> impl Future<Output = Result<(), IoError>> + Send;

    /// Deallocates `len` bytes at `offset` (only when [`Geometry::discard`]
    /// says it can; EOPNOTSUPP otherwise); with `fua`, durably.
    fn discard(&self, offset: u64, len: u64, fua: bool) -> impl Future<Output = Result<(), IoError>> + Send;

    /// Zeroes `len` bytes at `offset`.
    fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags)
    -> impl Future<Output = Result<(), IoError>> + Send;
}

impl BlockDevice for crate::Device {
    fn geometry(&self) -> Result<Geometry, String> {
        crate::Device::geometry(self)
    }

    fn read(&self, offset: u64, len: u64) -> impl Future<Output = Result<ReadBuf, IoError>> + Send {
        crate::Device::read(self, offset, len)
    }

    fn write(&self, offset: u64, data: Bytes, fua: bool) -> impl Future<Output = Result<(), IoError>> + Send {
        crate::Device::write(self, offset, data, fua)
    }

    fn flush(&self) -> impl Future<Output = Result<(), IoError>> + Send {
        crate::Device::flush(self)
    }

    fn discard(&self, offset: u64, len: u64, fua: bool) -> impl Future<Output = Result<(), IoError>> + Send {
        crate::Device::discard(self, offset, len, fua)
    }

    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        flags: ZeroFlags,
    ) -> impl Future<Output = Result<(), IoError>> + Send {
        crate::Device::write_zeroes(self, offset, len, flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_buffers_keep_their_pieces() {
        let mut r = ReadBuf::from(vec![Bytes::from_static(b"ab"), Bytes::new(), Bytes::from_static(b"cde")]);
        assert_eq!((r.len(), r.chunks().len()), (5, 2));
        r.push(Bytes::from_static(b"f"));
        assert_eq!(r.to_bytes(), Bytes::from_static(b"abcdef"));
        assert!(ReadBuf::new().is_empty() && ReadBuf::new().to_bytes().is_empty());
        let one = Bytes::from_static(b"xyz");
        assert_eq!(ReadBuf::from(one.clone()).to_bytes().as_ptr(), one.as_ptr(), "one chunk is not copied");
    }
}
