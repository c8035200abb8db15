//! The control socket: root-only (mode 0600, and the peer's uid checked),
//! one JSON request per line (see `control::proto`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

use super::Daemon;
use super::handler::{self, Answer};
use crate::control::proto::{Envelope, Failure, Request, Response, VERSION};

/// Longest request line: requests are small; a longer line is not ours.
/// (Only root or the daemon's own user can connect, so this is about
/// mistakes, not attacks.)
const MAX_LINE: usize = 64 * 1024;

/// Binds the socket. Refuses to take over the socket of a daemon that
/// still answers; removes a stale one.
pub(super) fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another mpio daemon answers on {}: stop it first, or give this one another control_socket in [daemon]",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on the control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} root-only", path.display()))?;
    Ok(listener)
}

/// Accepts connections until the task is aborted.
pub(super) async fn serve(listener: UnixListener, daemon: Arc<Daemon>) {
    // Root, or the user the daemon runs as (tests, unprivileged setups).
    let own_uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!("control socket: accept: {e}");
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(c) if c.uid() == 0 || c.uid() == own_uid => {}
            other => {
                warn!("control socket: refused a client that is neither root nor uid {own_uid}: {other:?}");
                continue;
            }
        }
        tokio::spawn(connection(stream, daemon.clone()));
    }
}

async fn connection(stream: UnixStream, daemon: Arc<Daemon>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                debug!("control socket: {e}");
                return;
            }
        };
        let answer = match decode(&line) {
            Ok(req) => handler::handle(&daemon, req).await,
            Err(f) => Answer::Done(Err(f)),
        };
        let ok = match answer {
            Answer::Done(r) => send(&mut write, r.map_or_else(failure, success)).await,
            // Until the client hangs up (a follower sends nothing more).
            Answer::Events(history, feed, device) => tokio::select! {
                ok = handler::stream_events(&mut write, history, feed, device) => ok,
                _ = lines.next_line() => false,
            },
        };
        if !ok {
            return;
        }
    }
}

fn decode(line: &str) -> Result<Request, Failure> {
    if line.len() > MAX_LINE {
        return Err(Failure::new(format!("request longer than {MAX_LINE} bytes")));
    }
    let env: Envelope = serde_json::from_str(line)
        .map_err(|e| Failure::new(format!("not a control request ({e}): use the mpio CLI of the daemon's version")))?;
    if env.version != VERSION {
        return Err(Failure::new(format!(
            "the CLI speaks control protocol {}, this daemon speaks {VERSION}: use the mpio binary of the daemon's version (mpio --version)",
            env.version
        )));
    }
    serde_json::from_value(env.request).map_err(|e| Failure::new(format!("bad request: {e}")))
}

pub(super) fn success(value: serde_json::Value) -> Response {
    Response { version: VERSION, ok: Some(value), error: None, event: None }
}

fn failure(f: Failure) -> Response {
    Response { version: VERSION, ok: None, error: Some(f), event: None }
}

/// Writes one response line; false when the client is gone.
pub(super) async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, resp: Response) -> bool {
    let mut line = serde_json::to_vec(&resp).unwrap_or_default();
    line.push(b'\n');
    write.write_all(&line).await.is_ok()
}
