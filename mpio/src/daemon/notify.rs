//! systemd's readiness protocol (sd_notify): a datagram to
//! `$NOTIFY_SOCKET` for `Type=notify` units. Without the variable (not
//! started by systemd) every call does nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use tracing::debug;

/// Sends one state message (`READY=1`, `STATUS=...`, `RELOADING=1`,
/// `STOPPING=1`).
pub(crate) fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        notify_to(&path, state);
    }
}

fn notify_to(path: &std::ffi::OsStr, state: &str) {
    let bytes = path.as_encoded_bytes();
    // '@' names a socket in the abstract namespace.
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(std::path::Path::new(path)),
    };
    // Never wait: a notify socket nobody reads (its queue holds only a few
    // datagrams) must not stop the daemon; a state message is dropped.
    let sent = addr.and_then(|addr| {
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        sock.send_to_addr(state.as_bytes(), &addr)
    });
    if let Err(e) = sent {
        debug!("sd_notify {state:?}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1\nSTATUS=2 devices ready");
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=2 devices ready");
    }

    #[test]
    fn a_socket_nobody_reads_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        // Far more than the socket's queue holds, on a thread: a send that
        // blocks would hang it, and the bound below says so instead of
        // hanging the test run. 60 s is no margin on the work (microseconds).
        let (done, finished) = std::sync::mpsc::channel();
        let sender = path.clone();
        std::thread::spawn(move || {
            for _ in 0..1000 {
                notify_to(sender.as_os_str(), "RELOADING=1");
            }
            let _ = done.send(());
        });
        finished.recv_timeout(std::time::Duration::from_secs(60)).expect("notify blocked on a full socket");
        // The queue filled up, and what did not fit was dropped.
        sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let mut queued = 0;
        while let Ok(n) = sock.recv(&mut buf) {
            assert_eq!(&buf[..n], b"RELOADING=1");
            queued += 1;
        }
        assert!((1..1000).contains(&queued), "{queued} of 1000 messages queued");
    }
}
