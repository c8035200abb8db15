//! Device-specific module: the SCSI knowledge mpio needs to use a logical
//! unit — "just enough SCSI".
//!
//! Pure builders and parsers, no I/O and no dependency on other mpio
//! crates. The iSCSI transport carries the bytes; this crate says what they
//! mean. Used by the transport (CDBs, sense), the multipath layer (LU
//! identity for claiming paths, sense for error classes), the CLI (`mpio
//! scsi inquiry|readcap|report-luns|tur`) and the NBD/ublk frontends
//! (READ/WRITE/SYNCHRONIZE CACHE/UNMAP/WRITE SAME).
//!
//! # What is here
//!
//! | module | content | standard |
//! |---|---|---|
//! | [`cdb`] | [`Cdb`], [`Command`], [`DataDirection`], builders for TEST UNIT READY, REQUEST SENSE, INQUIRY (+VPD), READ CAPACITY(10/16), MODE SENSE(6/10), REPORT LUNS, READ/WRITE(10/16), SYNCHRONIZE CACHE(16), WRITE SAME(16), UNMAP | SPC-4, SBC-3 |
//! | [`status`] | [`ScsiStatus`] | SAM-5 |
//! | [`sense`], [`asc`] | [`Sense`] (fixed and descriptor format), [`SenseKey`], [`AscAscq`] with texts | SPC-4 |
//! | [`inquiry`] | [`StandardInquiry`] | SPC-4 |
//! | [`vpd`] | VPD pages 00h, 80h, 83h (+ [`LuIdentity`]), B0h, B1h, B2h | SPC-4, SBC-4 |
//! | [`identity`] | the LU identity paths are merged by, unique by construction (designator, else unit serial + vendor + product, else none) | SPC-4 |
//! | [`mode`] | [`ModeSense`]: [`ModeParameterHeader`] (WP, DPOFUA), mode pages, [`CachingPage`] (WCE) | SPC-5, SBC-4 |
//! | [`capacity`] | [`ReadCapacity10`], [`Capacity`] (READ CAPACITY(16)) | SBC-3 |
//! | [`lun`] | [`Lun`], [`ReportLuns`] | SAM-5, SPC-4 |
//! | [`pr`] | PERSISTENT RESERVE IN/OUT builders, READ KEYS / READ RESERVATION / REPORT CAPABILITIES | SPC-4 |
//! | [`mod@classify`] | what a completion means for multipath: success, path failure (re-drive elsewhere), bounded retry, or an error for the caller with its block-layer errno | SAM-5, SPC-4 |
//!
//! # What is not
//!
//! - No I/O, no timers, no retries: callers send the [`Command`]s and feed
//!   the answers back.
//! - No retry loop: [`classify()`] says what a completion means; counting
//!   retries and choosing paths is the multipath layer's job.
//! - No ALUA (REPORT TARGET PORT GROUPS), MODE SELECT, mode pages other
//!   than Caching (others are split out, not parsed), protection information, COMPARE AND
//!   WRITE, EXTENDED COPY, variable-length (32-byte) CDBs, or READ FULL
//!   STATUS parsing.
//!
//! # Example
//!
//! ```
//! use mpio_dsm::{DeviceIdentification, Sense, cdb, vpd::VpdPage};
//!
//! // Ask for the device identification page...
//! let cmd = cdb::inquiry_vpd(VpdPage::DEVICE_IDENTIFICATION, 255);
//! assert_eq!(cmd.cdb.as_bytes(), [0x12, 0x01, 0x83, 0x00, 0xff, 0x00]);
//! // ...the transport sends it and hands back the Data-In bytes:
//! let page = [
//!     0x00, 0x83, 0x00, 0x0c, // direct access, page 83h, 12 bytes
//!     0x01, 0x03, 0x00, 0x08, // binary, LU, NAA, 8 bytes
//!     0x50, 0x01, 0x40, 0x50, 0x00, 0x00, 0x00, 0x01,
//! ];
//! let id = DeviceIdentification::parse(&page)?.lu_identity();
//! assert_eq!(id.unwrap().as_str(), "naa.5001405000000001");
//!
//! // A CHECK CONDITION's data segment: SenseLength, then sense data.
//! let seg = [0, 18, 0x70, 0, 0x02, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x04, 0x02, 0, 0, 0, 0];
//! let sense = Sense::from_iscsi_segment(&seg)?.unwrap();
//! assert_eq!(
//!     sense.to_string(),
//!     "NOT READY (02): LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED (04/02)"
//! );
//! # Ok::<(), mpio_dsm::ParseError>(())
//! ```
//!
//! # Rules
//!
//! - Parsers never panic on input: every read goes through a bounds-checked
//!   reader and fails with a [`ParseError`] naming the structure and field.
//!   Responses cut short by a small allocation length fail with
//!   [`ParseError::Truncated`], whose [`ParseError::required_len`] is the
//!   allocation length to retry with (sense data and standard INQUIRY are
//!   lenient instead; see their docs).
//! - Builders never truncate: a value too wide for its field is a
//!   [`CdbError`].
//! - Wire code points are newtypes with named constants (rustls style), so
//!   unknown values survive and print in hex.
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

mod codec;
mod macros;

pub mod asc;
pub mod capacity;
pub mod cdb;
pub mod classify;
pub mod error;
pub mod identity;
pub mod inquiry;
pub mod lun;
pub mod mode;
pub mod pr;
pub mod sense;
pub mod status;
pub mod vpd;

pub use asc::AscAscq;
pub use capacity::{Capacity, ReadCapacity10, prefer_read_capacity16};
pub use cdb::{Cdb, Command, DataDirection, Opcode, ReportLunsSelect, UnmapDescriptor, WriteSameFlags};
pub use classify::{Errno, ErrorClass, FatalKind, PathFault, RetryKind, classify, is_data_modifying};
pub use error::{CdbError, ParseError};
pub use inquiry::{DeviceType, PeripheralQualifier, StandardInquiry, Tpgs};
pub use lun::{Lun, LunTooLarge, ReportLuns};
pub use mode::{CachingPage, ModePage, ModeParameterHeader, ModeSense, ModeSenseKind};
pub use pr::{PrCapabilities, PrInAction, PrKeys, PrOutAction, PrOutParameters, PrReservation, PrType};
pub use sense::{Sense, SenseFormat, SenseKey, SenseKeySpecific};
pub use status::ScsiStatus;
pub use vpd::{
    Association, BlockDeviceCharacteristics, BlockLimits, CodeSet, Designator, DesignatorType, DeviceIdentification,
    LogicalBlockProvisioning, LuIdentity, ProtocolId, ProvisioningType, SupportedPages, UnitSerialNumber, VpdPage,
};

#[cfg(test)]
mod testutil {
    /// Bytes from a hex string (test vectors).
    pub(crate) fn hex(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2), "odd hex length");
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }
}
