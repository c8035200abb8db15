//! [`Backend`] for the multipath device.
//!
//! Geometry comes from the logical unit (`Device::info`, known once a path
//! was claimed): logical block, physical block, VPD 0xB0 maximum transfer,
//! UNMAP support, and the MODE SENSE write-protect bit, which makes the
//! export read-only (`NBD_FLAG_READ_ONLY`: the server answers writes with
//! `EPERM` without sending them). Every request maps to one device call, which splits it
//! into commands the LU accepts and carries it over the paths (retries,
//! failover, all-paths-down hold).
//!
//! Errors keep the device's errno where NBD has one; everything else is
//! `EIO`, which every client understands.

use bytes::Bytes;
use mpio_mpath::{Device, IoError, IoErrorKind};
use mpio_transport::ReadData;

use crate::backend::{Backend, BackendError, Geometry, ReadBuffers, ZeroFlags};
use crate::consts::NbdError;

impl ReadBuffers for ReadData {
    fn buffers(&self) -> &[Bytes] {
        self.chunks()
    }
}

impl Backend for Device {
    type Data = ReadData;

    fn geometry(&self) -> Result<Geometry, String> {
        let lu = self.info().ok_or_else(|| {
            format!("device {} has no usable path yet (no logical unit claimed); try again later", self.name())
        })?;
        Ok(Geometry {
            size: lu.capacity(),
            block_len: lu.block_len,
            preferred_block_len: lu.physical_block_len,
            max_transfer: lu.max_transfer.map(|m| u32::try_from(m).unwrap_or(u32::MAX)),
            // The WP bit as of the last claim. A LU protected later
            // refuses writes with DATA PROTECT 27/xx, EROFS, which reaches
            // the client as EPERM all the same (see `to_nbd`).
            read_only: lu.write_protected,
            trim: lu.unmap,
            // WRITE SAME, or plain writes of zeroes when the LU lacks it.
            write_zeroes: true,
            // SYNCHRONIZE CACHE acts on the logical unit, whatever path
            // (and whichever NBD connection) carries it.
            multi_conn: true,
        })
    }

    async fn read(&self, offset: u64, len: u32) -> Result<ReadData, BackendError> {
        Device::read(self, offset, u64::from(len)).await.map_err(to_nbd)
    }

    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<(), BackendError> {
        Device::write(self, offset, data, fua).await.map_err(to_nbd)
    }

    async fn flush(&self) -> Result<(), BackendError> {
        Device::flush(self).await.map_err(to_nbd)
    }

    async fn trim(&self, offset: u64, len: u32, fua: bool) -> Result<(), BackendError> {
        self.discard(offset, u64::from(len)).await.map_err(to_nbd)?;
        if fua { Device::flush(self).await.map_err(to_nbd) } else { Ok(()) }
    }

    async fn write_zeroes(&self, offset: u64, len: u32, flags: ZeroFlags) -> Result<(), BackendError> {
        // The device always zeroes with allocation (WRITE SAME without the
        // UNMAP bit, or writes), which satisfies NO_HOLE and plain zeroing
        // alike.
        Device::write_zeroes(self, offset, u64::from(len)).await.map_err(to_nbd)?;
        if flags.fua { Device::flush(self).await.map_err(to_nbd) } else { Ok(()) }
    }
}

/// The NBD error for a device error.
///
/// The device's errno follows Linux's block layer; NBD allows only a few
/// values (`doc/proto.md`, "Error values"), so the rest become `EIO`:
/// - `EPERM`, `EACCES`, `EROFS` and `EBADE` (reservation conflict: this
///   initiator may not write) are `EPERM`;
/// - `ENOSPC`, `EDQUOT`, `EFBIG` (and a thin LU out of space) are
///   `ENOSPC`, as the spec asks;
/// - `EINVAL` stays; `EOPNOTSUPP` becomes `EINVAL`, the error for a
///   command the export does not support (the spec keeps `ENOTSUP` for
///   fast zeroes);
/// - a closing device is `ESHUTDOWN`, which tells the client to
///   disconnect;
/// - `ENOMEM` becomes `EIO` (the spec asks servers not to send it).
pub fn to_nbd(e: IoError) -> BackendError {
    const EPERM: i32 = 1;
    const EACCES: i32 = 13;
    const EFBIG: i32 = 27;
    const ENOSPC: i32 = 28;
    const EROFS: i32 = 30;
    const EINVAL: i32 = 22;
    const EBADE: i32 = 52;
    const EOVERFLOW: i32 = 75;
    const EOPNOTSUPP: i32 = 95;
    const ESHUTDOWN: i32 = 108;
    const EDQUOT: i32 = 122;
    let error = if e.kind == IoErrorKind::Closed {
        NbdError::Shutdown
    } else {
        match e.errno {
            EPERM | EACCES | EROFS | EBADE => NbdError::Perm,
            ENOSPC | EDQUOT | EFBIG => NbdError::NoSpc,
            EINVAL | EOPNOTSUPP => NbdError::Inval,
            EOVERFLOW => NbdError::Overflow,
            ESHUTDOWN => NbdError::Shutdown,
            _ => NbdError::Io,
        }
    };
    BackendError { error, message: e.message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: IoErrorKind, errno: i32) -> NbdError {
        to_nbd(IoError { kind, errno, message: "m".into() }).error
    }

    #[test]
    fn errno_mapping() {
        use IoErrorKind::*;
        let cases = [
            (Device, 1, NbdError::Perm),
            (Device, 52, NbdError::Perm),
            (Device, 30, NbdError::Perm),
            (Device, 28, NbdError::NoSpc),
            (Device, 122, NbdError::NoSpc),
            (Device, 22, NbdError::Inval),
            (Device, 95, NbdError::Inval),
            (Device, 5, NbdError::Io),
            (Device, 61, NbdError::Io),  // ENODATA: medium error
            (Device, 121, NbdError::Io), // EREMOTEIO
            (Device, 12, NbdError::Io),  // ENOMEM is not sent
            (NoPath, 5, NbdError::Io),
            (RetriesExhausted, 5, NbdError::Io),
            (Closed, 5, NbdError::Shutdown),
        ];
        for (kind, errno, want) in cases {
            assert_eq!(err(kind, errno), want, "{kind:?} errno {errno}");
        }
    }
}
