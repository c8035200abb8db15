//! iSCSI PDUs (RFC 7143 section 11): typed headers, parsing and encoding.
//!
//! A PDU on the wire is a 48-byte Basic Header Segment (BHS), optional
//! Additional Header Segments (AHS), an optional header digest, a data
//! segment padded to 4 bytes, and an optional data digest. [`frame`] deals
//! with the framing and digests and yields a [`RawPdu`]; [`Pdu::parse`] turns
//! that into a typed PDU and [`Pdu::encode`] goes the other way.
//!
//! Every PDU an initiator sends or receives can be both parsed and encoded,
//! so the scripted target of the unit tests and the fuzzers use the same
//! code as the initiator. Reserved fields are written as zero and ignored on
//! receipt (RFC 7143 section 11.2: "Any compliant receiver MUST ignore any
//! bit not defined and all reserved fields unless specified otherwise").
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

mod async_msg;
mod bhs;
pub mod frame;
mod login;
mod logout;
mod nop;
mod reject;
mod scsi;
mod snack;
mod text;
mod tmf;

pub use async_msg::{AsyncEvent, AsyncMessage};
pub use bhs::{BHS_LEN, Bhs};
pub use login::{Isid, LoginRequest, LoginResponse, LoginStatus, Stage};
pub use logout::{LogoutReason, LogoutRequest, LogoutResponse, LogoutResponseCode};
pub use nop::{NopIn, NopOut};
pub use reject::{Reject, RejectReason};
pub use scsi::{DataIn, DataOut, R2t, Residual, ScsiCommand, ScsiResponse, TaskAttr};
pub use snack::{Snack, SnackType};
pub use text::{TextRequest, TextResponse};
pub use tmf::{TaskMgmtRequest, TaskMgmtResponse, TmfFunction, TmfResponse};

use bytes::Bytes;

/// The reserved tag value: "0xffffffff is reserved" for ITTs, and marks a
/// TTT that asks for no answer (RFC 7143 sections 11.1.4, 11.18, 11.19).
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// Defines a wire enum as a newtype over its integer, with named constants.
///
/// Unknown values survive a parse/encode round trip (a target may send a
/// code this version does not know) and `Debug` prints the name when there
/// is one, as rustls' `enum_builder!` does.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident($repr:ty) {
            $( $(#[$cmeta:meta])* $const:ident = $value:expr => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        $vis struct $name(pub $repr);

        #[allow(missing_docs)]
        impl $name {
            $( $(#[$cmeta])* pub const $const: $name = $name($value); )*

            /// The name of this value, if it is one this version knows.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some($text), )*
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}({:#x})", stringify!($name), self.0),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Debug::fmt(self, f)
            }
        }
    };
}
pub(crate) use wire_enum;

wire_enum! {
    /// The opcode in byte 0 of the BHS (RFC 7143 section 11.1.1).
    pub struct Opcode(u8) {
        NOP_OUT = 0x00 => "NOP-Out",
        SCSI_COMMAND = 0x01 => "SCSI Command",
        TASK_MGMT_REQUEST = 0x02 => "Task Management Function Request",
        LOGIN_REQUEST = 0x03 => "Login Request",
        TEXT_REQUEST = 0x04 => "Text Request",
        DATA_OUT = 0x05 => "SCSI Data-Out",
        LOGOUT_REQUEST = 0x06 => "Logout Request",
        SNACK = 0x10 => "SNACK Request",
        NOP_IN = 0x20 => "NOP-In",
        SCSI_RESPONSE = 0x21 => "SCSI Response",
        TASK_MGMT_RESPONSE = 0x22 => "Task Management Function Response",
        LOGIN_RESPONSE = 0x23 => "Login Response",
        TEXT_RESPONSE = 0x24 => "Text Response",
        DATA_IN = 0x25 => "SCSI Data-In",
        LOGOUT_RESPONSE = 0x26 => "Logout Response",
        R2T = 0x31 => "Ready To Transfer",
        ASYNC_MESSAGE = 0x32 => "Asynchronous Message",
        REJECT = 0x3f => "Reject",
    }
}

/// One PDU as framed on the wire: its BHS, AHS bytes and data segment
/// (padding and digests already checked and removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawPdu {
    /// The Basic Header Segment.
    pub bhs: Bhs,
    /// The Additional Header Segments, `TotalAHSLength * 4` bytes.
    pub ahs: Bytes,
    /// The data segment without padding.
    pub data: Bytes,
}

/// A parsed PDU of any opcode.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // the variants are named after the PDUs they hold
pub enum Pdu {
    NopOut(NopOut),
    ScsiCommand(ScsiCommand),
    TaskMgmtRequest(TaskMgmtRequest),
    LoginRequest(LoginRequest),
    TextRequest(TextRequest),
    DataOut(DataOut),
    LogoutRequest(LogoutRequest),
    Snack(Snack),
    NopIn(NopIn),
    ScsiResponse(ScsiResponse),
    TaskMgmtResponse(TaskMgmtResponse),
    LoginResponse(LoginResponse),
    TextResponse(TextResponse),
    DataIn(DataIn),
    LogoutResponse(LogoutResponse),
    R2t(R2t),
    AsyncMessage(AsyncMessage),
    Reject(Reject),
}

/// Why a PDU could not be parsed. The connection that received it cannot be
/// trusted any more: the caller drops it (RFC 7143 section 7.8, "protocol
/// error"), or answers with a Reject where the RFC allows that.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PduError {
    /// The opcode is not one of RFC 7143's.
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    /// A field holds a value the RFC forbids.
    #[error("{opcode}: invalid {field}: {reason}")]
    InvalidField {
        /// The PDU's opcode.
        opcode: Opcode,
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The AHS list is malformed.
    #[error("{opcode}: malformed AHS: {reason}")]
    BadAhs {
        /// The PDU's opcode.
        opcode: Opcode,
        /// What is wrong with it.
        reason: String,
    },
}

impl PduError {
    pub(crate) fn field(opcode: Opcode, field: &'static str, reason: impl Into<String>) -> Self {
        PduError::InvalidField { opcode, field, reason: reason.into() }
    }
}

impl Pdu {
    /// Parses a framed PDU into its typed form.
    pub fn parse(raw: RawPdu) -> Result<Pdu, PduError> {
        let RawPdu { bhs, ahs, data } = raw;
        Ok(match bhs.opcode() {
            Opcode::NOP_OUT => Pdu::NopOut(NopOut::parse(&bhs, data)?),
            Opcode::SCSI_COMMAND => Pdu::ScsiCommand(ScsiCommand::parse(&bhs, &ahs, data)?),
            Opcode::TASK_MGMT_REQUEST => {
                no_data(Opcode::TASK_MGMT_REQUEST, &data)?;
                Pdu::TaskMgmtRequest(TaskMgmtRequest::parse(&bhs)?)
            }
            Opcode::LOGIN_REQUEST => Pdu::LoginRequest(LoginRequest::parse(&bhs, data)?),
            Opcode::TEXT_REQUEST => Pdu::TextRequest(TextRequest::parse(&bhs, data)?),
            Opcode::DATA_OUT => Pdu::DataOut(DataOut::parse(&bhs, data)?),
            Opcode::LOGOUT_REQUEST => {
                no_data(Opcode::LOGOUT_REQUEST, &data)?;
                Pdu::LogoutRequest(LogoutRequest::parse(&bhs)?)
            }
            Opcode::SNACK => {
                no_data(Opcode::SNACK, &data)?;
                Pdu::Snack(Snack::parse(&bhs)?)
            }
            Opcode::NOP_IN => Pdu::NopIn(NopIn::parse(&bhs, data)?),
            Opcode::SCSI_RESPONSE => Pdu::ScsiResponse(ScsiResponse::parse(&bhs, data)?),
            Opcode::TASK_MGMT_RESPONSE => {
                no_data(Opcode::TASK_MGMT_RESPONSE, &data)?;
                Pdu::TaskMgmtResponse(TaskMgmtResponse::parse(&bhs)?)
            }
            Opcode::LOGIN_RESPONSE => Pdu::LoginResponse(LoginResponse::parse(&bhs, data)?),
            Opcode::TEXT_RESPONSE => Pdu::TextResponse(TextResponse::parse(&bhs, data)?),
            Opcode::DATA_IN => Pdu::DataIn(DataIn::parse(&bhs, data)?),
            Opcode::LOGOUT_RESPONSE => {
                no_data(Opcode::LOGOUT_RESPONSE, &data)?;
                Pdu::LogoutResponse(LogoutResponse::parse(&bhs)?)
            }
            Opcode::R2T => {
                no_data(Opcode::R2T, &data)?;
                Pdu::R2t(R2t::parse(&bhs)?)
            }
            Opcode::ASYNC_MESSAGE => Pdu::AsyncMessage(AsyncMessage::parse(&bhs, data)?),
            Opcode::REJECT => Pdu::Reject(Reject::parse(&bhs, data)?),
            other => return Err(PduError::UnknownOpcode(other.0)),
        })
    }

    /// Encodes this PDU into its framed parts. The data segment is shared,
    /// not copied.
    pub fn encode(&self) -> RawPdu {
        let (bhs, ahs, data) = match self {
            Pdu::NopOut(p) => (p.to_bhs(), Bytes::new(), p.data.clone()),
            Pdu::ScsiCommand(p) => {
                let (bhs, ahs) = p.to_bhs_ahs();
                (bhs, ahs, p.data.clone())
            }
            Pdu::TaskMgmtRequest(p) => (p.to_bhs(), Bytes::new(), Bytes::new()),
            Pdu::LoginRequest(p) => (p.to_bhs(), Bytes::new(), p.data.clone()),
            Pdu::TextRequest(p) => (p.to_bhs(), Bytes::new(), p.data.clone()),
            Pdu::DataOut(p) => (p.to_bhs(), Bytes::new(), p.data.clone()),
            Pdu::LogoutRequest(p) => (p.to_bhs(), Bytes::new(), Bytes::new()),
            Pdu::Snack(p) => (p.to_bhs(), Bytes::new(), Bytes::new()),
            Pdu::NopIn(p) => (p.to_bhs(), Bytes::new(), p.data.clone()),
            Pdu::ScsiResponse(p) => (p.to_bhs(), Bytes::new(), p.data.clone()),
            Pdu::TaskMgmtResponse(p) => (p.to_bhs(), Bytes::new(), Bytes::new()),
            Pdu::LoginResponse(p) => (p.to_bhs(), Bytes::new(), p.data.clone()),
            Pdu::TextResponse(p) => (p.to_bhs(), Bytes::new(), p.data.clone()),
            Pdu::DataIn(p) => (p.to_bhs(), Bytes::new(), p.data.clone()),
            Pdu::LogoutResponse(p) => (p.to_bhs(), Bytes::new(), Bytes::new()),
            Pdu::R2t(p) => (p.to_bhs(), Bytes::new(), Bytes::new()),
            Pdu::AsyncMessage(p) => (p.to_bhs(), Bytes::new(), p.data.clone()),
            Pdu::Reject(p) => (p.to_bhs(), Bytes::new(), p.data.clone()),
        };
        let mut bhs = bhs;
        bhs.set_lengths(ahs.len(), data.len());
        RawPdu { bhs, ahs, data }
    }

    /// The opcode of this PDU.
    pub fn opcode(&self) -> Opcode {
        match self {
            Pdu::NopOut(_) => Opcode::NOP_OUT,
            Pdu::ScsiCommand(_) => Opcode::SCSI_COMMAND,
            Pdu::TaskMgmtRequest(_) => Opcode::TASK_MGMT_REQUEST,
            Pdu::LoginRequest(_) => Opcode::LOGIN_REQUEST,
            Pdu::TextRequest(_) => Opcode::TEXT_REQUEST,
            Pdu::DataOut(_) => Opcode::DATA_OUT,
            Pdu::LogoutRequest(_) => Opcode::LOGOUT_REQUEST,
            Pdu::Snack(_) => Opcode::SNACK,
            Pdu::NopIn(_) => Opcode::NOP_IN,
            Pdu::ScsiResponse(_) => Opcode::SCSI_RESPONSE,
            Pdu::TaskMgmtResponse(_) => Opcode::TASK_MGMT_RESPONSE,
            Pdu::LoginResponse(_) => Opcode::LOGIN_RESPONSE,
            Pdu::TextResponse(_) => Opcode::TEXT_RESPONSE,
            Pdu::DataIn(_) => Opcode::DATA_IN,
            Pdu::LogoutResponse(_) => Opcode::LOGOUT_RESPONSE,
            Pdu::R2t(_) => Opcode::R2T,
            Pdu::AsyncMessage(_) => Opcode::ASYNC_MESSAGE,
            Pdu::Reject(_) => Opcode::REJECT,
        }
    }
}

/// Fails unless a PDU that may not carry data has an empty data segment.
fn no_data(opcode: Opcode, data: &Bytes) -> Result<(), PduError> {
    if data.is_empty() {
        Ok(())
    } else {
        Err(PduError::field(opcode, "DataSegmentLength", format!("{} bytes on a PDU without data", data.len())))
    }
}

#[cfg(test)]
mod tests;
