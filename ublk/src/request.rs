//! What a ublk I/O descriptor asks for, in the block contract's terms,
//! and what a request completes with.
//!
//! The driver fills `struct ublksrv_io_desc` per tag: the operation in
//! bits 0-7 of `op_flags`, the request's `REQ_*` flags above it
//! (`ublk_req_build_flags`: FUA, NOUNMAP, ...), the start and length in
//! 512-byte sectors whatever the logical block. A result is a byte count
//! for reads and writes (the driver completes that much and re-queues
//! the rest, and a read of 0 bytes is an error), 0 for the others, or a
//! negative errno, which `ublk_complete_rq` turns into a block status
//! with `errno_to_blk_status`.

use libublk::sys;
use mpio_mpath::{Errno, ZeroFlags};

/// One request, offsets and lengths in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `UBLK_IO_OP_READ`.
    Read {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u32,
    },
    /// `UBLK_IO_OP_WRITE`; `fua` from `REQ_FUA`.
    Write {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u32,
        /// Durable before it completes.
        fua: bool,
    },
    /// `UBLK_IO_OP_FLUSH` (a preflush; its data, if any, came as a
    /// separate write).
    Flush,
    /// `UBLK_IO_OP_DISCARD`.
    Discard {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u64,
        /// Durable before it completes.
        fua: bool,
    },
    /// `UBLK_IO_OP_WRITE_ZEROES`; `no_hole` from `REQ_NOUNMAP`.
    WriteZeroes {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u64,
        /// FUA and no-hole.
        flags: ZeroFlags,
    },
    /// An operation this device does not advertise (write same, zoned
    /// operations): completed with `EOPNOTSUPP`.
    Unsupported(u32),
}

impl Request {
    /// Decodes a descriptor's fields; `buffer` is the tag's buffer, which a
    /// read or write must fit (the driver never sends more than the
    /// `max_sectors` it was given; a descriptor that does is refused
    /// rather than trusted).
    pub fn decode(op_flags: u32, start_sector: u64, nr_sectors: u32, buffer: usize) -> Result<Request, Errno> {
        let op = op_flags & 0xff;
        let fua = op_flags & sys::UBLK_IO_F_FUA != 0;
        // A flush has no range: the driver passes whatever the request
        // holds (all ones, seen on 6.12), so it is not read.
        let offset = || start_sector.checked_mul(512).ok_or(Errno::Invalid);
        let len = u64::from(nr_sectors) * 512;
        let data_len = || u32::try_from(len).ok().filter(|&l| l as usize <= buffer).ok_or(Errno::Invalid);
        Ok(match op {
            sys::UBLK_IO_OP_READ => Request::Read { offset: offset()?, len: data_len()? },
            sys::UBLK_IO_OP_WRITE => Request::Write { offset: offset()?, len: data_len()?, fua },
            sys::UBLK_IO_OP_FLUSH => Request::Flush,
            sys::UBLK_IO_OP_DISCARD => Request::Discard { offset: offset()?, len, fua },
            sys::UBLK_IO_OP_WRITE_ZEROES => Request::WriteZeroes {
                offset: offset()?,
                len,
                flags: ZeroFlags { fua, no_hole: op_flags & sys::UBLK_IO_F_NOUNMAP != 0 },
            },
            other => Request::Unsupported(other),
        })
    }

    /// The result of a successful request: the bytes moved for a read or
    /// write, 0 for the rest.
    pub fn done(&self) -> i32 {
        match *self {
            // At most the tag's buffer, itself a u32 the driver bounds
            // far below i32::MAX.
            Request::Read { len, .. } | Request::Write { len, .. } => i32::try_from(len).unwrap_or(i32::MAX),
            _ => 0,
        }
    }
}

/// The (negative) errno a request that failed with `errno` completes
/// with: the one `errno_to_blk_status` (`blk_errors[]` in
/// `block/blk-core.c`) maps to the block status Linux's own SCSI disk
/// uses for the same condition (see `mpio_dsm::classify`), so an
/// application, a filesystem or a dm-multipath stacked on `/dev/ublkbN`
/// sees what a native disk would give it:
///
/// | device errno | completion | block status |
/// |---|---|---|
/// | EBADE (reservation conflict) | -EBADE | `BLK_STS_RESV_CONFLICT` |
/// | ENODATA (medium error) | -ENODATA | `BLK_STS_MEDIUM` |
/// | ENOSPC (thin LU out of space) | -ENOSPC | `BLK_STS_NOSPC` |
/// | EOPNOTSUPP (not supported) | -EOPNOTSUPP | `BLK_STS_NOTSUPP` |
/// | EILSEQ (protection information) | -EILSEQ | `BLK_STS_PROTECTION` |
/// | EREMOTEIO (target failure), EROFS (write protected) | -EREMOTEIO | `BLK_STS_TARGET` |
/// | EINVAL (a request the device cannot take) | -EINVAL | `BLK_STS_INVAL` (6.12 logs it as "invalid error"; tables before it lack it: `BLK_STS_IOERR`) |
/// | EIO, ESHUTDOWN | -EIO | `BLK_STS_IOERR` |
///
/// EROFS has no entry in the table (it would become `BLK_STS_IOERR`, a
/// path error for a dm-multipath above): Linux's sd reports a
/// write-protected LU as `BLK_STS_TARGET`, and so does this. ESHUTDOWN
/// (the device closing) has none either and is said as EIO outright.
pub fn completion(errno: Errno) -> i32 {
    let reported = match errno {
        Errno::ReadOnly | Errno::Target => Errno::Target,
        Errno::Io | Errno::Shutdown => Errno::Io,
        e @ (Errno::Invalid
        | Errno::NotSupported
        | Errno::ReservationConflict
        | Errno::Medium
        | Errno::NoSpace
        | Errno::Protection) => e,
    };
    -reported.code()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUF: usize = 512 << 10;

    #[test]
    fn descriptors_decode() {
        let fua = sys::UBLK_IO_F_FUA;
        let cases = [
            ((sys::UBLK_IO_OP_READ, 8, 16), Request::Read { offset: 4096, len: 8192 }),
            ((sys::UBLK_IO_OP_WRITE, 0, 8), Request::Write { offset: 0, len: 4096, fua: false }),
            ((sys::UBLK_IO_OP_WRITE | fua, 1, 1), Request::Write { offset: 512, len: 512, fua: true }),
            ((sys::UBLK_IO_OP_FLUSH, 0, 0), Request::Flush),
            // What 6.12 sends for a flush: start all ones.
            ((sys::UBLK_IO_OP_FLUSH, u64::MAX, 0), Request::Flush),
            ((sys::UBLK_IO_OP_DISCARD, 2048, 1 << 21), Request::Discard { offset: 1 << 20, len: 1 << 30, fua: false }),
            (
                (sys::UBLK_IO_OP_WRITE_ZEROES | sys::UBLK_IO_F_NOUNMAP, 8, 8),
                Request::WriteZeroes { offset: 4096, len: 4096, flags: ZeroFlags { fua: false, no_hole: true } },
            ),
            ((sys::UBLK_IO_OP_WRITE_SAME, 0, 8), Request::Unsupported(sys::UBLK_IO_OP_WRITE_SAME)),
            ((sys::UBLK_IO_OP_ZONE_APPEND, 0, 8), Request::Unsupported(sys::UBLK_IO_OP_ZONE_APPEND)),
        ];
        for ((op, start, n), want) in cases {
            assert_eq!(Request::decode(op, start, n, BUF), Ok(want), "op {op:#x}");
        }
        // Data larger than the tag's buffer, or an offset past u64: refused.
        assert_eq!(Request::decode(sys::UBLK_IO_OP_READ, 0, 1025, BUF), Err(Errno::Invalid));
        assert_eq!(Request::decode(sys::UBLK_IO_OP_WRITE, 0, u32::MAX, BUF), Err(Errno::Invalid));
        assert_eq!(Request::decode(sys::UBLK_IO_OP_READ, u64::MAX, 1, BUF), Err(Errno::Invalid));
        // Discards are not held to the buffer.
        assert!(Request::decode(sys::UBLK_IO_OP_DISCARD, 0, u32::MAX, BUF).is_ok());
    }

    #[test]
    fn results() {
        assert_eq!(Request::Read { offset: 0, len: 4096 }.done(), 4096);
        assert_eq!(Request::Write { offset: 0, len: 512, fua: true }.done(), 512);
        assert_eq!(Request::Flush.done(), 0);
        assert_eq!(Request::Discard { offset: 0, len: 1 << 40, fua: false }.done(), 0);
    }

    #[test]
    fn errnos_reach_the_block_layer_as_linux_maps_them() {
        let got: Vec<(Errno, i32)> = Errno::ALL.iter().map(|&e| (e, completion(e))).collect();
        assert_eq!(
            got,
            [
                (Errno::Io, -libc::EIO),
                (Errno::Invalid, -libc::EINVAL),
                (Errno::NotSupported, -libc::EOPNOTSUPP),
                (Errno::ReservationConflict, -libc::EBADE),
                (Errno::Medium, -libc::ENODATA),
                (Errno::NoSpace, -libc::ENOSPC),
                (Errno::ReadOnly, -libc::EREMOTEIO),
                (Errno::Protection, -libc::EILSEQ),
                (Errno::Target, -libc::EREMOTEIO),
                (Errno::Shutdown, -libc::EIO),
            ]
        );
    }
}
