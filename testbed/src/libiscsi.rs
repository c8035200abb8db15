//! libiscsi's command-line tools (Debian `libiscsi-bin` 1.19) as a
//! reference initiator: URLs and calls with deadlines.
//!
//! The tools have no DataDigest and no MC/S, log in with a random ISID, and
//! reconnect (new session) when the target closes their connection. A tool
//! stuck on a black-holed connection ignores SIGTERM, which is why [`run`]
//! kills with SIGKILL at the deadline.
//!
//! [`run`]: crate::cmd::run

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cmd::{self, ChildGuard, Outcome};
use crate::error::Result;
use crate::tgtd::INITIATOR_IQN;

pub use crate::tgtd::iscsi_url as url;

/// URL with one-way CHAP credentials: `iscsi://user%secret@portal/iqn/lun`.
pub fn chap_url(portal: SocketAddr, iqn: &str, lun: u32, user: &str, secret: &str) -> String {
    format!("iscsi://{user}%{secret}@{portal}/{iqn}/{lun}")
}

/// URL with mutual CHAP: [`chap_url`] plus the credentials the target must
/// prove (`?target_user=..&target_password=..`).
pub fn mutual_chap_url(
    portal: SocketAddr,
    iqn: &str,
    lun: u32,
    (user, secret): (&str, &str),
    (target_user, target_secret): (&str, &str),
) -> String {
    format!("{}?target_user={target_user}&target_password={target_secret}", chap_url(portal, iqn, lun, user, secret))
}

/// `iscsi-inq -i INITIATOR_IQN <url>` (standard INQUIRY); the outcome has
/// `status: None` if it was killed at `timeout`.
pub fn inq(url: &str, timeout: Duration) -> Result<Outcome> {
    cmd::run(Command::new("iscsi-inq").args(["-i", INITIATOR_IQN, url]), timeout)
}

/// `iscsi-ls -i INITIATOR_IQN -s iscsi://<portal>`: SendTargets discovery
/// plus a login to each target to list its LUNs.
pub fn ls(portal: SocketAddr, timeout: Duration) -> Result<Outcome> {
    let url = format!("iscsi://{portal}");
    cmd::run(Command::new("iscsi-ls").args(["-i", INITIATOR_IQN, "-s", &url]), timeout)
}

/// Starts `iscsi-perf -i <initiator> <args> <url>` in the background
/// (output to `log`); it runs until the guard drops (SIGKILL). Typical
/// `args`: `["-b", "8", "-m", "4", "-t", "600"]` (blocks per I/O, queue
/// depth, seconds).
pub fn perf(url: &str, initiator: &str, args: &[&str], log: &Path) -> Result<ChildGuard> {
    ChildGuard::spawn_logged(Command::new("iscsi-perf").args(["-i", initiator]).args(args).arg(url), log)
}
