//! The demo's last step: `mpio daemon` over the local SAN, as an
//! administrator runs it: a configuration file, a round-robin device over
//! every portal, its NBD export, the control socket at its default place
//! (so `mpio status` in another terminal just works) and /metrics.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mpio_lab::tgtd::Tgtd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};

use crate::config::{DEFAULT_CONTROL_SOCKET, DEFAULT_NBD_SOCKET};

/// Where the demo keeps its configuration, log and notify socket.
const STATE: &str = "/run/mpio-demo";
/// The device's name (and NBD export name).
pub(super) const DEVICE: &str = "demo0";

/// A daemon started by the demo; stopped (SIGTERM, then waited for) when
/// dropped through [`RunningDaemon::stop`].
pub(super) struct RunningDaemon {
    child: Child,
    pub(super) config: PathBuf,
    pub(super) log: PathBuf,
    pub(super) metrics: String,
}

/// The configuration the demo writes.
fn config(tgtd: &Tgtd, metrics: &str) -> String {
    let mut s = format!(
        r#"# Written by `mpio demo`: one round-robin device over every portal of the local SAN.
initiator = "{initiator}"

[daemon]
control_socket = "{DEFAULT_CONTROL_SOCKET}"
log = "info"
ready_timeout = "20s"

[metrics]
listen = "{metrics}"

[nbd]
socket = "{DEFAULT_NBD_SOCKET}"

[timers]
probation_interval = "250ms"

[[target]]
name = "local-san"
iqn = "{iqn}"

[[device]]
name = "{DEVICE}"
target = "local-san"
lun = 1
policy = "round-robin"
frontend = "nbd"
"#,
        initiator = crate::connect::default_initiator_name().map(|n| n.to_string()).unwrap_or_default(),
        iqn = tgtd.iqn(1),
    );
    for (i, p) in tgtd.portals().iter().enumerate() {
        s.push_str(&format!("\n[[device.path]]\nname = \"p{}\"\nportal = \"{p}\"\n", i + 1));
    }
    s
}

/// Writes the configuration and starts `mpio daemon`; returns once it
/// reported ready (sd_notify, as systemd would see it).
pub(super) async fn start(tgtd: &Tgtd, metrics: &str) -> Result<RunningDaemon> {
    let dir = Path::new(STATE);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {STATE}"))?;
    let config_path = dir.join("mpio.toml");
    std::fs::write(&config_path, config(tgtd, metrics))
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let notify_path = dir.join("notify");
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path).context("cannot create the readiness socket")?;
    let log = dir.join("daemon.log");
    let log_file = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let child = Command::new(std::env::current_exe().context("cannot find the mpio executable")?)
        .args(["daemon", "--config"])
        .arg(&config_path)
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("MPIO_LOG")
        .stdout(Stdio::null())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start mpio daemon")?;
    let mut d = RunningDaemon { child, config: config_path, log, metrics: format!("http://{metrics}/metrics") };
    let mut buf = [0u8; 1024];
    tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(60), notify.recv(&mut buf)) => {
            let n = r.context("the daemon did not report ready within 60 s")??;
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            outln!("daemon ready: {}", msg.replace('\n', ", "));
        }
        status = d.child.wait() => {
            let log = std::fs::read_to_string(&d.log).unwrap_or_default();
            bail!("mpio daemon exited ({}) before it was ready:\n{log}", status?);
        }
    }
    Ok(d)
}

impl RunningDaemon {
    /// SIGTERM (the daemon drains its exports and logs out), then waits.
    pub(super) async fn stop(mut self) -> Result<()> {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        let _ = std::fs::remove_dir_all(STATE);
        match status {
            Ok(Ok(s)) if s.success() => Ok(()),
            Ok(Ok(s)) => bail!("mpio daemon exited with {s}; its log: {}", self.log.display()),
            _ => bail!("mpio daemon did not stop within 30 s"),
        }
    }

    /// Waits for the daemon to exit on its own.
    pub(super) async fn exited(&mut self) -> Result<()> {
        let status = self.child.wait().await?;
        let _ = std::fs::remove_dir_all(STATE);
        if !status.success() {
            bail!("mpio daemon exited with {status}");
        }
        Ok(())
    }
}

/// Runs `mpio ARGS` against the demo's daemon, its output shown.
pub(super) async fn show(args: &[&str]) -> Result<()> {
    let status = Command::new(std::env::current_exe()?).args(args).status().await?;
    if !status.success() {
        bail!("mpio {} failed", args.join(" "));
    }
    Ok(())
}

/// Writes 1 MiB through the NBD export with qemu-io (from qemu-utils) and
/// reads it back with a pattern check.
pub(super) async fn nbd_round_trip(uri: &str) -> Result<()> {
    let run = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0xa5 1M 1M", "-c", "read -P 0xa5 1M 1M", uri])
        .kill_on_drop(true)
        .output();
    // A stuck export ends the demo with an error instead of hanging it.
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .with_context(|| format!("qemu-io through {uri} did not finish within 60 s"))?
        .context("cannot run qemu-io (package qemu-utils)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    out!("{text}");
    if !out.status.success() || text.contains("Pattern verification failed") {
        bail!("qemu-io through {uri} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The request counters of /metrics.
pub(super) async fn metrics_excerpt(url: &str) -> Result<Vec<String>> {
    let addr = url.trim_start_matches("http://").trim_end_matches("/metrics");
    let mut s = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("cannot reach {url}"))?;
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body
        .lines()
        .filter(|l| {
            l.starts_with("mpio_path_requests_total{") && (l.contains("op=\"write\"") || l.contains("op=\"read\""))
        })
        .map(str::to_owned)
        .collect())
}
