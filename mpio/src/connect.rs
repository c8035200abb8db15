//! The options every one-shot command shares (where, who, how securely)
//! and the session they build.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use mpio_transport::chap::{ChapConfig, ChapCredentials, Secret};
use mpio_transport::name::IscsiName;
use mpio_transport::pdu::Isid;
use mpio_transport::portal::Portal;
use mpio_transport::text::DigestPref;
use mpio_transport::{Auth, SessionConfig, SessionError, SessionHandle};

/// Digest choice on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum DigestArg {
    /// No digest.
    None,
    /// CRC32C, required: the login fails if the target refuses it.
    Crc32c,
    /// Offer CRC32C,None and take what the target picks.
    Prefer,
}

impl DigestArg {
    pub(crate) fn pref(self) -> DigestPref {
        match self {
            DigestArg::None => DigestPref::None,
            DigestArg::Crc32c => DigestPref::Crc32c,
            DigestArg::Prefer => DigestPref::PreferCrc32c,
        }
    }
}

/// How to reach and log in to a portal.
#[derive(Args, Debug, Clone)]
pub(crate) struct ConnectArgs {
    /// Target portal: HOST or HOST:PORT (IPv6 in brackets; default port 3260).
    #[arg(long, short = 'p')]
    pub(crate) portal: Portal,
    /// Our iSCSI name. Default: InitiatorName from /etc/iscsi/initiatorname.iscsi,
    /// else one derived from the host name.
    #[arg(long, short = 'i')]
    pub(crate) initiator: Option<IscsiName>,
    /// HeaderDigest.
    #[arg(long, value_enum, default_value = "none")]
    pub(crate) header_digest: DigestArg,
    /// DataDigest.
    #[arg(long, value_enum, default_value = "none")]
    pub(crate) data_digest: DigestArg,
    /// CHAP user name we log in as (one-way CHAP). The secret comes from
    /// --chap-secret-file or MPIO_CHAP_SECRET, never from the command line.
    #[arg(long)]
    pub(crate) chap_user: Option<String>,
    /// File holding our CHAP secret (text, or 0x followed by hex digits).
    #[arg(long)]
    pub(crate) chap_secret_file: Option<PathBuf>,
    /// The target's CHAP user name, for mutual CHAP. Its secret comes from
    /// --chap-target-secret-file or MPIO_CHAP_TARGET_SECRET.
    #[arg(long)]
    pub(crate) chap_target_user: Option<String>,
    /// File holding the target's CHAP secret (mutual CHAP).
    #[arg(long)]
    pub(crate) chap_target_secret_file: Option<PathBuf>,
    /// Seconds to wait for connect and login (1 to 3600).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) login_timeout: u64,
    /// MaxRecvDataSegmentLength we declare (bytes; default 65536).
    #[arg(long)]
    pub(crate) max_recv_data_segment_length: Option<u32>,
    /// FirstBurstLength we offer (bytes; default 65536).
    #[arg(long)]
    pub(crate) first_burst_length: Option<u32>,
    /// MaxBurstLength we offer (bytes; default 262144).
    #[arg(long)]
    pub(crate) max_burst_length: Option<u32>,
}

/// Reads a secret from a file, or from an environment variable.
fn secret(file: Option<&PathBuf>, env: &str, what: &str, flag: &str) -> Result<Secret> {
    let bytes = match (file, std::env::var_os(env)) {
        (Some(path), _) => crate::secret_file::read(path).map_err(|e| anyhow::anyhow!("{what}: {e}"))?,
        (None, Some(v)) => v.into_encoded_bytes(),
        (None, None) => bail!("{what} missing: give it with {flag} FILE or the {env} environment variable"),
    };
    Secret::parse(&bytes).with_context(|| format!("bad {what}"))
}

impl ConnectArgs {
    /// The authentication the options ask for.
    fn auth(&self) -> Result<Auth> {
        let Some(user) = &self.chap_user else {
            if self.chap_target_user.is_some() {
                bail!("--chap-target-user needs --chap-user: mutual CHAP authenticates both sides");
            }
            return Ok(Auth::None);
        };
        let s = secret(self.chap_secret_file.as_ref(), "MPIO_CHAP_SECRET", "CHAP secret", "--chap-secret-file")?;
        let initiator = ChapCredentials::new(user.clone(), s)?;
        let target = match &self.chap_target_user {
            Some(tu) => {
                let s = secret(
                    self.chap_target_secret_file.as_ref(),
                    "MPIO_CHAP_TARGET_SECRET",
                    "target CHAP secret",
                    "--chap-target-secret-file",
                )?;
                Some(ChapCredentials::new(tu.clone(), s)?)
            }
            None => None,
        };
        Ok(Auth::Chap(ChapConfig::new(initiator, target)?))
    }

    /// A session configuration for `target` (a discovery session when
    /// `None`). One-shot sessions do not reconnect and use a random ISID,
    /// so they never reinstate a daemon's session.
    pub(crate) fn session_config(&self, target: Option<IscsiName>) -> Result<SessionConfig> {
        let initiator = match &self.initiator {
            Some(i) => i.clone(),
            None => default_initiator_name()?,
        };
        let mut cfg = match target {
            Some(t) => SessionConfig::new(initiator, t, self.portal.clone()),
            None => SessionConfig::discovery(initiator, self.portal.clone()),
        };
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).context("the system random source failed")?;
        cfg.isid = Isid::random_format(u64::from_ne_bytes(seed));
        cfg.auth = self.auth()?;
        cfg.offer.header_digest = self.header_digest.pref();
        cfg.offer.data_digest = self.data_digest.pref();
        let o = &mut cfg.offer;
        o.max_recv_data_segment_length = self.max_recv_data_segment_length.unwrap_or(o.max_recv_data_segment_length);
        o.first_burst_length = self.first_burst_length.unwrap_or(o.first_burst_length);
        o.max_burst_length = self.max_burst_length.unwrap_or(o.max_burst_length);
        o.validate().context("invalid negotiation options")?;
        cfg.reconnect = false;
        cfg.timeouts.login = Duration::from_secs(self.login_timeout);
        cfg.timeouts.connect = Duration::from_secs(self.login_timeout);
        Ok(cfg)
    }

    /// Connects and logs in, or fails with one line that says why and what
    /// to do.
    pub(crate) async fn connect(&self, target: Option<IscsiName>) -> Result<SessionHandle> {
        let cfg = self.session_config(target)?;
        // Connect and login each have their own timeout inside; this one
        // only bounds the whole.
        let limit = Duration::from_secs(self.login_timeout * 2 + 5);
        SessionHandle::connect(cfg, limit).await.map_err(|e| match e {
            SessionError::Failed(f) => anyhow::anyhow!("{}", crate::advice::connection_failure(&f)),
            other => anyhow::anyhow!(other),
        })
    }
}

/// The initiator name an administrator already configured for open-iscsi,
/// or one made from the host name.
pub(crate) fn default_initiator_name() -> Result<IscsiName> {
    if let Ok(text) = std::fs::read_to_string("/etc/iscsi/initiatorname.iscsi") {
        for line in text.lines() {
            if let Some(name) = line.trim().strip_prefix("InitiatorName=") {
                return IscsiName::parse(name.trim())
                    .with_context(|| "invalid InitiatorName in /etc/iscsi/initiatorname.iscsi");
            }
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
    // Seed rule (17.H12): characters an iSCSI name cannot hold become '-'.
    let host: String = host
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c.to_ascii_lowercase() } else { '-' })
        .collect();
    IscsiName::parse(&format!("iqn.2026-11.org.mpio:{host}"))
        .context("cannot derive an initiator name: use --initiator")
}
