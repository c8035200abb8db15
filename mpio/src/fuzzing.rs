//! Entry points of the fuzz targets (`fuzz/fuzz_targets/config.rs`,
//! `control.rs`): the parsers of the daemon's input fed arbitrary bytes,
//! and what the daemon does next with what they accept. None may panic.

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::config;
use crate::control::client::decode_answer;
use crate::control::line::{MAX_REQUEST, read_line};
use crate::daemon::server::decode;

/// The configuration loader, as `mpio config check` and a reload run it
/// (with no environment: CHAP secrets from variables are missing); for an
/// accepted file, what the daemon derives from it.
pub fn config(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let Ok(cfg) = config::parse(Path::new("fuzz.toml"), text, &|_| None) else { return };
    for d in &cfg.devices {
        let _ = d.device_config(&cfg.initiator);
        let _ = d.timers.check();
        let _ = d.timers.report();
    }
}

/// The control socket's line reader and request decoder, as the daemon
/// reads a client; then the CLI's answer decoder on the same lines.
pub fn control(bytes: &[u8]) {
    let mut input = bytes;
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        // Reading from a slice never waits.
        let Poll::Ready(Ok(Some(line))) = pin!(read_line(&mut input, MAX_REQUEST)).poll(&mut cx) else { return };
        let _ = decode(&line);
        let _ = decode_answer(&line);
    }
}
