//! Text key=value data of Login and Text PDUs (RFC 7143 sections 6 and 13).
//!
//! - [`codec`]: the wire format (`key=value\0` repeated), the accumulation of
//!   a logical text data segment that spans several PDUs (C bit), and the
//!   split of an outgoing one into PDU-sized chunks.
//! - [`value`]: the value encodings of RFC 7143 section 6.1 (numbers in
//!   decimal, hex and base64, binary strings, booleans, lists, and the
//!   reserved constants `NotUnderstood`, `Irrelevant`, `Reject`).
//! - [`keys`]: the operational keys, what we offer and what was negotiated.
//! - [`negotiate`]: the initiator side of operational parameter negotiation.
//!
//! Everything here is sans-I/O: bytes and pairs in, pairs and bytes out.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod codec;
pub mod keys;
pub mod negotiate;
pub mod value;

pub use codec::{
    KeyValue, TextAccumulator, TextError, TextSegment, TextSegments, decode_pairs, encode_pair, encode_pairs,
    split_segments,
};
pub use keys::{
    ConnectionParams, Digest, DigestPref, Negotiated, NegotiationScope, OperationalOffer, SessionParams,
    TargetDeclarations,
};
pub use negotiate::{NegotiationError, Negotiator};
pub use value::{SpecialValue, ValueError};
