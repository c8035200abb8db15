//! NBD server frontend: exposes a multipath device as an NBD export.
//!
//! The export driver (socket handling, dispatch to the multipath device) is
//! built in the operations issue. What is here now is the protocol codec,
//! written sans-I/O so that every byte layout and every refusal of hostile
//! input is a plain unit test:
//!
//! - [`consts`]: the numbers of the protocol (magics, flags, option codes,
//!   reply types, commands, errors), named as in the NBD spec
//!   (`doc/proto.md` of github.com/NetworkBlockDevice/nbd).
//! - [`handshake`]: the fixed-newstyle negotiation, server side: greeting
//!   and option reply encoders, client flags and option decoders, and the
//!   parsing of option payloads (`NBD_OPT_GO`/`NBD_OPT_INFO` and friends).
//! - [`transmission`]: request header decoder, simple and structured reply
//!   encoders, and [`transmission::validate_request`], which picks the NBD
//!   error a malformed or out-of-range request must be answered with.
//!
//! # Decoding contract
//!
//! Decoders take whatever bytes the socket has delivered so far and return
//! `Ok(None)` when they need more, `Ok(Some((message, consumed)))` when a
//! message is complete, and a typed error when the bytes can never become a
//! valid message. They never panic and never allocate more than the length
//! limits they are given, so a driver can feed them partial reads straight
//! from a buffer filled by `read_buf`.
//!
//! Only the 32-bit (compact) request headers are handled; the extended
//! headers extension (`NBD_OPT_EXTENDED_HEADERS`) is not negotiated, so it is
//! never in use.
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod consts;
pub mod handshake;
pub mod transmission;
mod wire;

#[cfg(test)]
mod tests;
