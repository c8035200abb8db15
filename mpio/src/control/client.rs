//! The CLI's side of the control socket.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;

use super::line::{self, LineError, MAX_ANSWER};
use super::proto::{Envelope, EventView, Request, Response, VERSION};

/// A connection to the daemon.
pub(crate) struct Client {
    socket: PathBuf,
    read: BufReader<OwnedReadHalf>,
    write: tokio::net::unix::OwnedWriteHalf,
}

impl Client {
    /// Connects, or says why not and what to check.
    pub(crate) async fn connect(socket: &Path) -> Result<Client> {
        let stream = UnixStream::connect(socket).await.map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    "is the daemon running? (systemctl status mpio, or mpio daemon --config FILE); another socket: --socket PATH or MPIO_SOCKET"
                }
                std::io::ErrorKind::PermissionDenied => "the control socket is root-only: run mpio as root",
                _ => "check --socket",
            };
            anyhow!("cannot reach the mpio daemon at {}: {e}; {hint}", socket.display())
        })?;
        let (read, write) = stream.into_split();
        Ok(Client { socket: socket.to_path_buf(), read: BufReader::new(read), write })
    }

    async fn send(&mut self, request: &Request) -> Result<()> {
        let env = Envelope { version: VERSION, request: serde_json::to_value(request)? };
        let mut line = serde_json::to_vec(&env)?;
        line.push(b'\n');
        self.write.write_all(&line).await.with_context(|| format!("writing to {}", self.socket.display()))
    }

    async fn next(&mut self) -> Result<Option<Response>> {
        let line = match line::read_line(&mut self.read, MAX_ANSWER).await {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(None),
            Err(LineError::Io(e)) => return Err(e).with_context(|| format!("reading from {}", self.socket.display())),
            Err(e) => bail!(
                "the daemon's answer on {} is {e}: use the mpio binary that matches the daemon",
                self.socket.display()
            ),
        };
        decode_answer(&line).map(Some)
    }

    /// Sends a request and decodes its answer.
    pub(crate) async fn call<T: DeserializeOwned>(&mut self, request: &Request) -> Result<T> {
        self.send(request).await?;
        let resp = self.next().await?.ok_or_else(|| anyhow!("the daemon closed the connection without answering"))?;
        // A change answers `null` (no `ok` on the wire).
        serde_json::from_value(resp.ok.unwrap_or_default()).context("unexpected answer from the daemon")
    }

    /// Sends an event request and calls `each` for every event until the
    /// daemon ends the stream (or the caller's future is dropped).
    pub(crate) async fn events(
        &mut self,
        request: &Request,
        mut each: impl FnMut(EventView) -> Result<()>,
    ) -> Result<()> {
        self.send(request).await?;
        while let Some(resp) = self.next().await? {
            match resp.event {
                Some(ev) => each(ev)?,
                // A plain answer ends the history when not following.
                None => return Ok(()),
            }
        }
        Ok(())
    }
}

/// One answer line as the CLI takes it: a refusal becomes the error.
pub(crate) fn decode_answer(line: &str) -> Result<Response> {
    let resp: Response = serde_json::from_str(line).map_err(|e| {
        anyhow!("the daemon's answer is not of control protocol {VERSION} ({e}): use the mpio binary that matches the daemon")
    })?;
    if resp.version != VERSION {
        bail!(
            "this mpio speaks control protocol {VERSION}, the daemon speaks {}: use the mpio binary of the daemon's version",
            resp.version
        );
    }
    if let Some(f) = resp.error {
        match f.code {
            Some(code) => bail!("{} ({code})", f.message),
            None => bail!("{}", f.message),
        }
    }
    Ok(resp)
}
