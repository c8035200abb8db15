//! The control socket: the protocol (shared by the daemon and the CLI)
//! and the CLI's client.

pub(crate) mod client;
pub(crate) mod line;
pub(crate) mod proto;
