//! The initiator side of iSCSI (RFC 7143) for mpio.
//!
//! Protocol logic lives in sans-I/O state machines (PDU codec, text key
//! negotiation, login with CHAP, the session with its connections); a thin
//! tokio driver owns the sockets and the clocks.
#![warn(missing_docs)]

pub mod discovery;
pub mod name;
pub mod portal;
pub mod text;
