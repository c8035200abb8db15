//! Unit tests: the codec and the negotiation state machine, byte for
//! byte. The connection driver is tested over sockets in the tests crate
//! (`tests/tests/nbd/`), with an in-memory backend and with the
//! multipath device, by real clients and a raw one.

use crate::consts::*;
use crate::transmission::Request;

mod codec;
mod negotiate;

pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Client-side encoding of an option, for tests only.
pub(crate) fn option_bytes(code: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&IHAVEOPT.to_be_bytes());
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// Client-side encoding of a GO/INFO payload, for tests only.
pub(crate) fn info_payload(name: &[u8], reqs: &[u16]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(name.len() as u32).to_be_bytes());
    v.extend_from_slice(name);
    v.extend_from_slice(&(reqs.len() as u16).to_be_bytes());
    for r in reqs {
        v.extend_from_slice(&r.to_be_bytes());
    }
    v
}

/// Client-side encoding of a request header, for tests only.
pub(crate) fn request_bytes(r: &Request) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
    v.extend_from_slice(&r.flags.to_be_bytes());
    v.extend_from_slice(&r.typ.to_be_bytes());
    v.extend_from_slice(&r.cookie.to_be_bytes());
    v.extend_from_slice(&r.offset.to_be_bytes());
    v.extend_from_slice(&r.length.to_be_bytes());
    v
}
