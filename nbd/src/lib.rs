//! NBD server frontend: exports multipath devices (or any
//! [`mpio_mpath::BlockDevice`]) to
//! NBD clients (qemu, libnbd's nbdinfo/nbdcopy/nbdfuse, fio, the kernel's
//! nbd client) over unix sockets and TCP.
//!
//! The protocol is written sans-I/O, so every byte layout, every
//! negotiation step and every refusal of hostile input is a plain unit
//! test; a thin tokio layer owns the sockets:
//!
//! - [`consts`]: the numbers of the protocol, named as in the NBD spec
//!   (`doc/proto.md` of github.com/NetworkBlockDevice/nbd).
//! - [`handshake`]: encoders and decoders of the fixed-newstyle
//!   negotiation (greeting, client flags, options, option replies).
//! - [`negotiate`]: the negotiation as a state machine
//!   ([`negotiate::Negotiation`]): options `GO`, `INFO`, `LIST`, `ABORT`,
//!   `EXPORT_NAME`, `STRUCTURED_REPLY`; the transmission flags and block
//!   size constraints an export gets.
//! - [`transmission`]: request decoder, reply encoders, and
//!   [`transmission::validate_request`], which picks the NBD error for a
//!   malformed or out-of-range request.
//! - [`errors`]: the NBD error a client gets for each errno of the
//!   block contract (`mpio_mpath::block`, which the server runs requests
//!   on and `mpio_mpath::Device` implements).
//! - [`server`]: [`Server`]: listeners, exports added and removed at
//!   runtime, graceful shutdown.
//!
//! # Serving
//!
//! Each connection is one task: requests are decoded, checked, and run
//! concurrently on the backend (many in flight, replies in completion
//! order, simple or structured as negotiated); replies are gathered into
//! vectored writes, read data straight from the buffers the device
//! returned. What a connection may hold in flight is bounded (bytes and
//! requests), so a client cannot exhaust the server's memory. A client
//! breaking the protocol is closed with a warning; a request the export
//! cannot take gets the error the spec names (`EINVAL`, `ENOSPC`,
//! `EPERM`, ...).
//!
//! Requests must be aligned to the export's logical block (the advertised
//! minimum block size); unaligned ones are refused with `EINVAL` (see
//! [`negotiate`] for why there is no read-modify-write).
//!
//! # Decoding contract
//!
//! Decoders take whatever bytes the socket has delivered so far and return
//! `Ok(None)` when they need more, `Ok(Some((message, consumed)))` when a
//! message is complete, and a typed error when the bytes can never become a
//! valid message. They never panic and never allocate more than the length
//! limits they are given.
//!
//! Only the 32-bit (compact) request headers are handled; the extended
//! headers extension (`NBD_OPT_EXTENDED_HEADERS`) is not negotiated, so it is
//! never in use. TLS is not offered: use a unix socket (mode 0600 by
//! default) or loopback TCP.
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod consts;
pub mod errors;
pub mod handshake;
pub mod negotiate;
pub mod server;
pub mod transmission;

mod conn;
mod outq;
mod reply;
mod tracker;
mod wire;

pub use consts::NbdError;
pub use server::{DEFAULT_PORT, ExportConfig, ListenAddr, ListenSpec, Server, ServerConfig, ServerError};

#[cfg(test)]
mod tests;
