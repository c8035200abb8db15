//! The initiator side of iSCSI (RFC 7143) for mpio.
//!
//! Protocol logic lives in sans-I/O state machines: the PDU codec
//! ([`pdu`]), text key negotiation ([`text`]), login with CHAP ([`login`],
//! [`chap`]) and the session with its connections ([`session`]). A thin
//! tokio driver ([`driver`]) owns the sockets and the clock.
#![warn(missing_docs)]

pub mod chap;
pub mod config;
pub mod discovery;
pub mod driver;
pub mod login;
pub mod name;
pub mod pdu;
pub mod portal;
pub mod serial;
pub mod session;
pub mod text;

pub use config::{Auth, ConnectionSpec, SessionConfig, SessionType, Timeouts};
pub use driver::{SessionError, SessionHandle, SessionSnapshot};
pub use session::{ConnPick, ConnectionFailure, Outcome, ReadData, ScsiRequest, ScsiResult, SessionEvent, TaskError};
