//! The control socket: root-only (mode 0600, and the peer's uid checked),
//! one JSON request per line (see `control::proto`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use mpio_throttle::{AcceptBackoff, LogLimit, warn_limited};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::debug;

use super::Daemon;
use super::handler::{self, Answer};
use crate::control::line::{self, LineError, MAX_REQUEST};
use crate::control::proto::{Envelope, Failure, Request, Response, VERSION};

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

/// Clients refused for their uid (the socket's mode keeps them out
/// already; this is the second lock).
static REFUSED: LogLimit = LogLimit::per_second(1);

/// Accepts connections until the task is aborted.
pub(super) async fn serve(listener: UnixListener, daemon: Arc<Daemon>) {
    // Root, or the user the daemon runs as (tests, unprivileged setups).
    let own_uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
    // Out of file descriptors, accept fails at once until one is freed:
    // a pause, not a spin (which wrote a WARN line per failure, 1 GB in
    // 16 s).
    let mut backoff = AcceptBackoff::new("control socket");
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => {
                backoff.accepted();
                s
            }
            Err(e) => {
                backoff.failed(&e).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(c) if c.uid() == 0 || c.uid() == own_uid => {}
            other => {
                warn_limited!(
                    REFUSED,
                    "control socket: refused a client that is neither root nor uid {own_uid}: {other:?}"
                );
                continue;
            }
        }
        tokio::spawn(connection(stream, daemon.clone()));
    }
}

async fn connection(stream: UnixStream, daemon: Arc<Daemon>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let line = match line::read_line(&mut read, MAX_REQUEST).await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(LineError::Io(e)) => {
                debug!("control socket: {e}");
                return;
            }
            // The stream is out of step: say why, then close it.
            Err(e) => {
                let why = format!(
                    "{e}: a control request is one JSON line of at most {MAX_REQUEST} bytes; use the mpio CLI of the daemon's version"
                );
                send(&mut write, failure(Failure::new(why))).await;
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
                _ = line::read_line(&mut read, MAX_REQUEST) => false,
            },
        };
        if !ok {
            return;
        }
    }
}

/// One request line as the daemon takes it: a refusal says what is wrong.
pub(crate) fn decode(line: &str) -> Result<Request, Failure> {
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    const OPS: &[&str] = &[
        "status",
        "device-list",
        "device-show",
        "path-list",
        "path-fail",
        "path-reinstate",
        "path-set-active",
        "path-set-standby",
        "path-set-weight",
        "policy-show",
        "policy-set",
        "failback",
        "hold",
        "events",
        "reload",
        "log-level",
        "explode",
    ];

    /// Any JSON value, nested a little.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            proptest::num::f64::NORMAL.prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[a-z_]{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A request of a known (or unknown) op with fields of any type.
    fn request() -> impl Strategy<Value = Value> {
        let fields = proptest::collection::btree_map(
            proptest::sample::select(&["device", "path", "weight", "policy", "mode", "last", "follow", "level"][..]),
            any_json(),
            0..5,
        );
        (proptest::sample::select(OPS), fields).prop_map(|(op, fields)| {
            let mut m: serde_json::Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            m.insert("op".into(), op.into());
            Value::Object(m)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        /// Random lines, random JSON, and envelopes of random requests:
        /// decoded or refused with a message, never a panic.
        #[test]
        fn no_line_panics_the_decoder(line in "\\PC{0,80}", value in any_json(), req in request(), version in any::<u32>()) {
            let _ = decode(&line);
            let _ = decode(&value.to_string());
            let env = json!({"version": if version % 2 == 0 { u64::from(VERSION) } else { u64::from(version) }, "request": req});
            if let Err(f) = decode(&env.to_string()) {
                prop_assert!(!f.message.is_empty());
            }
        }
    }
}
