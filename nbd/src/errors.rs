//! The NBD error a client gets for a block device's error.
//!
//! The device's [`Errno`] follows Linux's block layer, one per error
//! class; NBD allows only a few values (`doc/proto.md`, "Error values"),
//! so the rest become `EIO`, which every client understands. The match is
//! exhaustive: a new errno of the device cannot go unmapped.

use mpio_mpath::{Errno, IoError};

use crate::consts::NbdError;

/// The NBD error for an errno of the device:
/// - `EROFS` (a write-protected LU; the server answers writes to an export
///   advertised read-only with `EPERM` without sending them, and a LU
///   protected after the claim refuses them with DATA PROTECT) and
///   `EBADE` (reservation conflict: this initiator may not write) are
///   `EPERM`;
/// - `ENOSPC` (a thin LU out of space) stays, as the spec asks;
/// - `EINVAL` stays; `EOPNOTSUPP` becomes `EINVAL`, the error for a
///   command the export does not support (the spec keeps `ENOTSUP` for
///   fast zeroes);
/// - a closing device is `ESHUTDOWN`, which tells the client to
///   disconnect;
/// - everything else (medium, protection information, the target's own
///   failure, no path) is `EIO`.
pub fn nbd_error(errno: Errno) -> NbdError {
    match errno {
        Errno::ReadOnly | Errno::ReservationConflict => NbdError::Perm,
        Errno::NoSpace => NbdError::NoSpc,
        Errno::Invalid | Errno::NotSupported => NbdError::Inval,
        Errno::Shutdown => NbdError::Shutdown,
        Errno::Io | Errno::Medium | Errno::Protection | Errno::Target => NbdError::Io,
    }
}

/// What a failed request's reply carries: the NBD error and the message
/// (for structured-reply error chunks and logs).
pub(crate) fn reply_error(e: IoError) -> (NbdError, String) {
    (nbd_error(e.errno), e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        let got: Vec<(Errno, NbdError)> = Errno::ALL.iter().map(|&e| (e, nbd_error(e))).collect();
        assert_eq!(
            got,
            [
                (Errno::Io, NbdError::Io),
                (Errno::Invalid, NbdError::Inval),
                (Errno::NotSupported, NbdError::Inval),
                (Errno::ReservationConflict, NbdError::Perm),
                (Errno::Medium, NbdError::Io),
                (Errno::NoSpace, NbdError::NoSpc),
                (Errno::ReadOnly, NbdError::Perm),
                (Errno::Protection, NbdError::Io),
                (Errno::Target, NbdError::Io),
                (Errno::Shutdown, NbdError::Shutdown),
            ]
        );
    }
}
