//! The daemon's configuration file (`/etc/mpio/mpio.toml`, annotated
//! example in `mpio/mpio.example.toml`).
//!
//! Loading checks everything that can be checked without the network:
//! unknown keys, values, references between tables (a device's target, a
//! path's role under its policy), the policy through the same validation as
//! `mpio policy set` (with the seed's status codes), the timers through the
//! timer model, and the CHAP secrets (files readable, long enough). Every
//! refusal names the file, the line and the fix. Secrets are read here and
//! never printed.

mod raw;
mod ublk_queues;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mpio_dsm::Lun;
use mpio_mpath::timers::parse_duration;
use mpio_mpath::{DeviceConfig, FailbackMode, HoldMode, PathConfig, PolicyRequest, SwitchEvery, TimerConfig};
use mpio_transport::chap::{ChapConfig, ChapCredentials, Secret};
use mpio_transport::name::IscsiName;
use mpio_transport::portal::Portal;
use mpio_transport::text::{DigestPref, OperationalOffer};
use mpio_transport::{Auth, ConnectionSpec};
use serde::Deserialize;
use toml::Spanned;
pub(crate) use ublk_queues::UblkQueues;

/// The file the daemon reads without `--config`.
pub(crate) const DEFAULT_FILE: &str = "/etc/mpio/mpio.toml";
/// Where the daemon listens for the CLI by default.
pub(crate) const DEFAULT_CONTROL_SOCKET: &str = "/run/mpio/mpio.sock";
/// Default NBD unix socket.
pub(crate) const DEFAULT_NBD_SOCKET: &str = "/run/mpio/nbd.sock";

/// A refused configuration: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub(crate) struct ConfigError {
    pub(crate) file: PathBuf,
    pub(crate) line: Option<usize>,
    pub(crate) message: String,
}

/// The daemon's settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    /// The file it came from.
    pub(crate) file: PathBuf,
    pub(crate) initiator: IscsiName,
    pub(crate) control_socket: PathBuf,
    /// Log filter (as `--log`).
    pub(crate) log: String,
    /// How long the daemon waits for its devices before it reports ready
    /// anyway (they keep connecting in the background).
    pub(crate) ready_timeout: Duration,
    /// Prometheus listener, if enabled.
    pub(crate) metrics: Option<SocketAddr>,
    pub(crate) nbd: NbdListen,
    pub(crate) devices: Vec<DeviceSpec>,
}

/// Where NBD clients connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NbdListen {
    pub(crate) socket: Option<PathBuf>,
    pub(crate) tcp: Option<SocketAddr>,
}

/// How a device is presented: an NBD export, a kernel block device, both
/// (`frontend = ["ublk", "nbd"]`), or neither (`"none"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frontend {
    /// An NBD export named after the device.
    pub(crate) nbd: bool,
    /// A kernel block device, `/dev/ublkbN` (the ublk driver).
    pub(crate) ublk: bool,
}

impl Frontend {
    pub(crate) const NBD: Frontend = Frontend { nbd: true, ublk: false };
    /// Not presented (metrics and control only).
    pub(crate) const NONE: Frontend = Frontend { nbd: false, ublk: false };

    /// The frontends' names as the file writes them, block device first.
    pub(crate) fn names(self) -> Vec<&'static str> {
        [(self.ublk, "ublk"), (self.nbd, "nbd")].into_iter().filter_map(|(on, n)| on.then_some(n)).collect()
    }
}

/// A path's role in its device's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// fail-over-only: the path that carries the I/O.
    Primary,
    /// round-robin-subset: in the active set.
    Active,
    /// Waits until it is needed.
    Standby,
}

/// One configured path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathSpec {
    pub(crate) name: String,
    pub(crate) portal: Portal,
    pub(crate) source: Option<IpAddr>,
    pub(crate) interface: Option<String>,
    pub(crate) target: Option<IscsiName>,
    pub(crate) group: Option<String>,
    pub(crate) weight: Option<u32>,
    pub(crate) role: Option<Role>,
}

impl PathSpec {
    /// What the multipath device takes.
    pub(crate) fn path_config(&self) -> PathConfig {
        let mut connection = ConnectionSpec::to(self.portal.clone());
        connection.source_addr = self.source;
        connection.interface = self.interface.clone();
        let mut p = PathConfig::new(self.name.clone(), connection);
        p.target = self.target.clone();
        p.group = self.group.clone();
        p
    }
}

/// One configured device.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeviceSpec {
    pub(crate) name: String,
    /// Line of its `[[device]]` table.
    pub(crate) line: usize,
    pub(crate) target: IscsiName,
    /// LUN number (checked: it has a SAM LUN encoding).
    pub(crate) lun: u64,
    pub(crate) auth: Auth,
    pub(crate) offer: OperationalOffer,
    pub(crate) identity: Option<String>,
    /// The policy with paths by name, validated against the paths.
    pub(crate) policy: PolicyRequest,
    pub(crate) timers: TimerConfig,
    pub(crate) frontend: Frontend,
    /// `ublk_queues`, `ublk_depth` (frontend = "ublk" only).
    pub(crate) ublk: UblkQueues,
    pub(crate) paths: Vec<PathSpec>,
}

impl DeviceSpec {
    /// The names of its paths, in table order.
    pub(crate) fn path_names(&self) -> Vec<String> {
        self.paths.iter().map(|p| p.name.clone()).collect()
    }

    /// What the multipath device takes.
    pub(crate) fn device_config(&self, initiator: &IscsiName) -> DeviceConfig {
        let paths = self.paths.iter().map(PathSpec::path_config).collect();
        let lun = Lun::from_number(self.lun).expect("the LUN was checked when the file was loaded");
        let mut cfg = DeviceConfig::new(self.name.clone(), initiator.clone(), self.target.clone(), lun, paths);
        cfg.auth = self.auth.clone();
        cfg.offer = self.offer.clone();
        cfg.policy = self
            .policy
            .validate(&self.path_names(), None)
            .expect("the policy was validated against these paths when the file was loaded");
        cfg.timers = self.timers.clone();
        cfg.expect_identity = self.identity.clone();
        cfg
    }

    /// Everything but the paths and the policy: what a reload cannot
    /// change on a running device.
    pub(crate) fn fixed_part(&self) -> impl PartialEq + '_ {
        (&self.target, self.lun, &self.auth, &self.offer, &self.identity, self.frontend, self.ublk)
    }
}

/// Reads and checks a configuration file.
pub(crate) fn load(file: &Path) -> Result<Config, ConfigError> {
    parse(file, &read(file)?, &|var| std::env::var_os(var))
}

/// The timers each device of a file would run with: `[timers]` under the
/// device's own `[device.timers]`, `hold` and `failback`. Unlike [`load`],
/// timers that cannot work are returned, so that `mpio timers explain`
/// can show what they add up to; nothing but the timers is checked.
pub(crate) fn effective_timers(file: &Path) -> Result<EffectiveTimers, ConfigError> {
    let text = read(file)?;
    let cx = Cx { file, text: &text, env: &|_| None };
    let raw = cx.raw()?;
    let global = cx.timer_table(None, raw.timers.as_ref())?;
    let devices = raw
        .devices
        .iter()
        .map(|d| Ok((d.get_ref().name.get_ref().clone(), cx.device_timers(d.get_ref(), raw.timers.as_ref())?)))
        .collect::<Result<_, ConfigError>>()?;
    Ok(EffectiveTimers { global, devices })
}

/// What [`effective_timers`] finds.
#[derive(Debug)]
pub(crate) struct EffectiveTimers {
    /// `[timers]` over the defaults: what a device without its own gets.
    pub(crate) global: TimerConfig,
    /// Each device's, by name, in file order.
    pub(crate) devices: Vec<(String, TimerConfig)>,
}

fn read(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        line: None,
        message: format!(
            "cannot read the configuration: {e}; check the path (the daemon reads {} unless given --config FILE)",
            DEFAULT_FILE
        ),
    })
}

/// Checks a configuration text; `env` looks up environment variables
/// (CHAP secrets may come from them).
pub(crate) fn parse(
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Config, ConfigError> {
    let cx = Cx { file, text, env };
    cx.build(cx.raw()?)
}

/// A TOML or serde message with the fix for its kind appended (the
/// messages name the problem but not what to write instead).
fn with_toml_fix(message: &str) -> String {
    let fix = if message.starts_with("unknown field") {
        "remove the key or correct its spelling"
    } else if message.starts_with("missing field") {
        "add the key to this table"
    } else if message.starts_with("duplicate key") {
        "keep one of the two"
    } else if message.contains("expected a string") {
        "quote the value, like key = \"value\""
    } else if message.contains("expected a boolean") {
        "write true or false"
    } else if message.contains("expected u64") || message.contains("expected u32") {
        "write a whole number from 0, without quotes"
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        "write a value of the type mpio.example.toml shows for this key"
    } else {
        "fix the TOML syntax on this line: key = \"value\", [table] or [[array-of-tables]], as in mpio.example.toml"
    };
    format!("{message}; {fix}")
}

/// What a check needs to say where a problem is.
struct Cx<'a> {
    file: &'a Path,
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<std::ffi::OsString>,
}

impl Cx<'_> {
    fn line(&self, at: usize) -> usize {
        self.text.get(..at).map_or(1, |t| t.matches('\n').count() + 1)
    }

    fn err(&self, at: Option<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError { file: self.file.to_path_buf(), line: at.map(|a| self.line(a)), message: message.into() }
    }

    fn at<T>(&self, v: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        self.err(Some(v.span().start), message)
    }

    /// The file as written: refused when empty or when TOML or a table's
    /// keys refuse it.
    fn raw(&self) -> Result<raw::File, ConfigError> {
        // A file without a single key is a truncated or wrong file, not a
        // daemon that should start with the defaults and no device.
        if self.text.lines().map(str::trim).all(|l| l.is_empty() || l.starts_with('#')) {
            return Err(self.err(
                None,
                "the file is empty (nothing but blank lines and comments); write the initiator, [[target]] and \
                 [[device]] tables, starting from mpio.example.toml in the mpio sources",
            ));
        }
        let raw: raw::File =
            toml::from_str(self.text).map_err(|e| self.err(e.span().map(|s| s.start), with_toml_fix(e.message())))?;
        Ok(raw)
    }

    fn build(&self, raw: raw::File) -> Result<Config, ConfigError> {
        let initiator = match &raw.initiator {
            Some(i) => IscsiName::parse(i.get_ref()).map_err(|e| {
                self.at(i, format!("initiator {:?}: {e}; write it like iqn.2026-11.com.example:host1", i.get_ref()))
            })?,
            None => crate::connect::default_initiator_name()
                .map_err(|e| self.err(None, format!("{e:#}: set initiator = \"iqn....\" at the top of the file")))?,
        };
        let control_socket = match &raw.daemon.control_socket {
            Some(s) => self.socket_path(s, "[daemon] control_socket", DEFAULT_CONTROL_SOCKET, "")?,
            None => DEFAULT_CONTROL_SOCKET.into(),
        };
        let log = match &raw.daemon.log {
            Some(l) => {
                crate::logging::parse_filter(l.get_ref()).map_err(|e| self.at(l, e))?;
                l.get_ref().clone()
            }
            None => "info".into(),
        };
        let ready_timeout = match &raw.daemon.ready_timeout {
            Some(d) => parse_duration(d.get_ref()).map_err(|e| self.at(d, format!("ready_timeout: {e}")))?,
            None => Duration::from_secs(30),
        };
        let metrics = match (raw.metrics.enabled, &raw.metrics.listen) {
            (Some(false), _) => None,
            (_, Some(l)) => Some(self.socket_addr(l, "metrics listen")?),
            // Loopback only by default: the metrics name the SAN.
            (_, None) => Some(mpio_metrics::DEFAULT_LISTEN),
        };
        let nbd = NbdListen {
            socket: match &raw.nbd.socket {
                Some(s) if s.get_ref().is_empty() => None,
                Some(s) => Some(self.socket_path(s, "[nbd] socket", DEFAULT_NBD_SOCKET, " (or \"\" for none)")?),
                None => Some(DEFAULT_NBD_SOCKET.into()),
            },
            tcp: raw.nbd.listen.as_ref().map(|l| self.socket_addr(l, "nbd listen")).transpose()?,
        };
        if let Some(t) = &raw.timers {
            self.refuse_unworkable(&self.timer_table(None, Some(t))?, t.span().start, "[timers]")?;
        }
        let targets = self.targets(&raw.targets)?;
        let mut devices: Vec<DeviceSpec> = Vec::new();
        for d in &raw.devices {
            let spec = self.device(d, &targets, raw.timers.as_ref())?;
            if devices.iter().any(|o| o.name == spec.name) {
                return Err(self.at(
                    &d.get_ref().name,
                    format!("device {:?} is defined twice; give each device its own name", spec.name),
                ));
            }
            devices.push(spec);
        }
        Ok(Config {
            file: self.file.to_path_buf(),
            initiator,
            control_socket,
            log,
            ready_timeout,
            metrics,
            nbd,
            devices,
        })
    }

    /// A unix socket's path: absolute, because the daemon (started by
    /// systemd in /) and the CLI (anywhere) would resolve a relative one in
    /// different directories and never meet.
    fn socket_path(&self, v: &Spanned<String>, key: &str, example: &str, or: &str) -> Result<PathBuf, ConfigError> {
        let p = v.get_ref();
        let problem = match p.trim() {
            "" => "is empty".to_string(),
            _ if !Path::new(p).is_absolute() => {
                "is a relative path, which the daemon and the CLI would resolve in different directories".to_string()
            }
            _ => return Ok(p.into()),
        };
        Err(self.at(v, format!("{key} {p:?} {problem}; give an absolute path, like {example}{or}")))
    }

    fn socket_addr(&self, v: &Spanned<String>, what: &str) -> Result<SocketAddr, ConfigError> {
        v.get_ref().parse().map_err(|_| {
            self.at(v, format!("{what} {:?} is not an address and port; write it like 127.0.0.1:9464", v.get_ref()))
        })
    }

    /// `table` merged key by key over `global` and parsed; whether the
    /// result can work is [`Cx::refuse_unworkable`]'s business.
    fn timer_table(
        &self,
        table: Option<&Spanned<toml::Table>>,
        global: Option<&Spanned<toml::Table>>,
    ) -> Result<TimerConfig, ConfigError> {
        let what = if table.is_some() { "[device.timers]" } else { "[timers]" };
        let merged = raw::merge(global.map(Spanned::get_ref), table.map(Spanned::get_ref));
        TimerConfig::deserialize(toml::Value::Table(merged)).map_err(|e| {
            self.err(table.or(global).map(|t| t.span().start), format!("{what}: {}", with_toml_fix(e.message())))
        })
    }

    /// A device's timers: its `[device.timers]` over `[timers]`, then its
    /// `hold` and `failback`.
    fn device_timers(
        &self,
        d: &raw::Device,
        global: Option<&Spanned<toml::Table>>,
    ) -> Result<TimerConfig, ConfigError> {
        let name = d.name.get_ref();
        let mut timers = self.timer_table(d.timers.as_ref(), global).map_err(|mut e| {
            e.message = format!("device {name} {}", e.message);
            e
        })?;
        if let Some(f) = &d.failback {
            timers.failback =
                f.get_ref().parse::<FailbackMode>().map_err(|e| self.at(f, format!("device {name}: {e}")))?;
        }
        if let Some(h) = &d.hold {
            timers.hold = h.get_ref().parse::<HoldMode>().map_err(|e| self.at(h, format!("device {name}: {e}")))?;
        }
        Ok(timers)
    }

    fn refuse_unworkable(&self, timers: &TimerConfig, at: usize, what: &str) -> Result<(), ConfigError> {
        let fatal: Vec<String> = timers.check().into_iter().filter(|p| p.fatal).map(|p| p.message).collect();
        if fatal.is_empty() {
            return Ok(());
        }
        Err(self.err(
            Some(at),
            format!(
                "{what}: the timers cannot work: {}; `mpio timers explain --config FILE` shows what they add up to",
                fatal.join("; ")
            ),
        ))
    }

    fn targets(&self, raw: &[Spanned<raw::Target>]) -> Result<Vec<(String, TargetSpec)>, ConfigError> {
        let mut out: Vec<(String, TargetSpec)> = Vec::new();
        for t in raw {
            let t = t.get_ref();
            let name = t.name.get_ref().clone();
            if out.iter().any(|(n, _)| *n == name) {
                return Err(
                    self.at(&t.name, format!("target {name:?} is defined twice; give each target its own name"))
                );
            }
            let iqn = IscsiName::parse(t.iqn.get_ref()).map_err(|e| {
                self.at(
                    &t.iqn,
                    format!(
                        "target {name}: iqn {:?}: {e}; write the name the target reports (`mpio discover`), \
                             like iqn.2026-11.com.example:storage",
                        t.iqn.get_ref()
                    ),
                )
            })?;
            let mut offer = OperationalOffer::default();
            offer.header_digest = self.digest(t.header_digest.as_ref())?;
            offer.data_digest = self.digest(t.data_digest.as_ref())?;
            offer.max_recv_data_segment_length =
                t.max_recv_data_segment_length.unwrap_or(offer.max_recv_data_segment_length);
            offer.first_burst_length = t.first_burst_length.unwrap_or(offer.first_burst_length);
            offer.max_burst_length = t.max_burst_length.unwrap_or(offer.max_burst_length);
            offer.error_recovery_level = self.error_recovery_level(t.error_recovery_level.as_ref(), &name)?;
            offer.validate().map_err(|e| {
                self.at(
                    &t.name,
                    format!("target {name}: {e}; give a value in that range, or remove the key for the default"),
                )
            })?;
            let auth = match &t.chap {
                None => Auth::None,
                Some(c) => self.chap(c, &name)?,
            };
            out.push((name, TargetSpec { iqn, offer, auth }));
        }
        Ok(out)
    }

    /// The ErrorRecoveryLevel offered: 1 unless set. Level 1 recovers
    /// within a command (a Data-In asked for again after a data digest
    /// error, a rejected Data-Out or command sent again) and needs nothing
    /// from the target it does not offer itself; the target's answer (the
    /// lower of both) is what the session uses, 0 for most targets. Level 2
    /// (connection recovery within an MCS session) is not built yet.
    fn error_recovery_level(&self, v: Option<&Spanned<u8>>, target: &str) -> Result<u8, ConfigError> {
        match v.map(|v| (v, *v.get_ref())) {
            None => Ok(1),
            Some((_, n @ (0 | 1))) => Ok(n),
            Some((v, 2)) => Err(self.at(
                v,
                format!(
                    "target {target}: error_recovery_level 2 (connection recovery) is not supported yet; \
                     use 1 (recovery within a command) or 0"
                ),
            )),
            Some((v, n)) => Err(self.at(
                v,
                format!("target {target}: error_recovery_level {n} does not exist (RFC 7143 section 13.20: 0, 1 or 2); use 1 or 0"),
            )),
        }
    }

    fn digest(&self, v: Option<&Spanned<String>>) -> Result<DigestPref, ConfigError> {
        match v.map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "none")) => Ok(DigestPref::None),
            Some((_, "crc32c")) => Ok(DigestPref::Crc32c),
            Some((_, "prefer")) => Ok(DigestPref::PreferCrc32c),
            Some((v, other)) => Err(self.at(
                v,
                format!("digest {other:?}: use none, crc32c (required) or prefer (CRC32C if the target agrees)"),
            )),
        }
    }

    fn chap(&self, c: &Spanned<raw::Chap>, target: &str) -> Result<Auth, ConfigError> {
        let raw = c.get_ref();
        let read = |file: &Option<String>, env: &Option<String>, what: &str| -> Result<Secret, ConfigError> {
            let bytes = match (file, env) {
                (Some(_), Some(_)) => {
                    return Err(self.at(
                        c,
                        format!("target {target}: give the {what} as a file or an environment variable, not both"),
                    ));
                }
                (Some(f), None) => {
                    if !Path::new(f).is_absolute() {
                        return Err(self.at(
                            c,
                            format!(
                                "target {target}: the {what} file {f:?} is a relative path, which the daemon and \
                                 `mpio config check` would resolve in different directories; give an absolute path, \
                                 like /etc/mpio/chap/{target}.secret"
                            ),
                        ));
                    }
                    crate::secret_file::read(Path::new(f))
                        .map_err(|e| self.at(c, format!("target {target}: {what}: {e}")))?
                }
                (None, Some(var)) => (self.env)(var)
                    .ok_or_else(|| {
                        self.at(
                            c,
                            format!(
                                "target {target}: the {what} variable {var} is not set in the daemon's environment; set it \
                                 in the service (EnvironmentFile= in mpio.service), or use a secret file"
                            ),
                        )
                    })?
                    .into_encoded_bytes(),
                (None, None) => {
                    return Err(self.at(
                        c,
                        format!("target {target}: the {what} is missing: set {}_file = \"/etc/mpio/...\" or {}_env = \"VAR\"",
                            if what.contains("target") { "target_secret" } else { "secret" },
                            if what.contains("target") { "target_secret" } else { "secret" }),
                    ));
                }
            };
            Secret::parse(&bytes).map_err(|e| self.at(c, format!("target {target}: {what}: {e}")))
        };
        let secret = read(&raw.secret_file, &raw.secret_env, "CHAP secret")?;
        let initiator = ChapCredentials::new(raw.user.clone(), secret)
            .map_err(|e| self.at(c, format!("target {target}: CHAP user: {e}")))?;
        let mutual = match &raw.target_user {
            Some(user) => {
                let secret = read(&raw.target_secret_file, &raw.target_secret_env, "target CHAP secret")?;
                Some(
                    ChapCredentials::new(user.clone(), secret)
                        .map_err(|e| self.at(c, format!("target {target}: CHAP target user: {e}")))?,
                )
            }
            None if raw.target_secret_file.is_some() || raw.target_secret_env.is_some() => {
                return Err(self.at(
                    c,
                    format!("target {target}: a target secret without target_user: set target_user for mutual CHAP"),
                ));
            }
            None => None,
        };
        ChapConfig::new(initiator, mutual).map(Auth::Chap).map_err(|e| self.at(c, format!("target {target}: {e}")))
    }

    fn device(
        &self,
        d: &Spanned<raw::Device>,
        targets: &[(String, TargetSpec)],
        global_timers: Option<&Spanned<toml::Table>>,
    ) -> Result<DeviceSpec, ConfigError> {
        let line = self.line(d.span().start);
        let d = d.get_ref();
        let name = d.name.get_ref().clone();
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '/' || c.is_control()) {
            return Err(self.at(&d.name, format!("device name {name:?}: use letters, digits, '-', '_' or '.'")));
        }
        let known: Vec<&str> = targets.iter().map(|(n, _)| n.as_str()).collect();
        let target = targets.iter().find(|(n, _)| n == d.target.get_ref()).map(|(_, t)| t).ok_or_else(|| {
            self.at(
                &d.target,
                format!(
                    "device {name}: no [[target]] named {:?}; defined targets: {}; use one of them, or add a \
                     [[target]] with that name",
                    d.target.get_ref(),
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
            )
        })?;
        let lun = *d.lun.get_ref();
        Lun::from_number(lun).map_err(|e| {
            self.at(
                &d.lun,
                format!("device {name}: lun {lun}: {e}; use the LUN the target reports (`mpio scsi report-luns`)"),
            )
        })?;
        let timers = self.device_timers(d, global_timers)?;
        let at = d.timers.as_ref().map_or(d.name.span().start, |t| t.span().start);
        self.refuse_unworkable(&timers, at, &format!("device {name} [device.timers]"))?;
        let frontend = match &d.frontend {
            None => Frontend::NBD,
            Some(f) => self.frontend(f, &name)?,
        };
        let ublk = self.ublk_queues(d, &name, frontend)?;
        if d.paths.is_empty() {
            return Err(self.err(
                Some(d.name.span().start),
                format!("device {name} has no path: add a [[device.path]] table with name and portal"),
            ));
        }
        let mut paths: Vec<PathSpec> = Vec::new();
        for p in &d.paths {
            let spec = self.path(p, &name)?;
            if paths.iter().any(|o| o.name == spec.name) {
                return Err(self.at(
                    &p.get_ref().name,
                    format!("device {name}: path {:?} is defined twice (0xEFFF0057 ISDSC_DUPLICATE_PATH_SPECIFIED); give each path its own name", spec.name),
                ));
            }
            paths.push(spec);
        }
        let policy = self.policy(d, &name, &paths)?;
        Ok(DeviceSpec {
            name,
            line,
            target: target.iqn.clone(),
            lun,
            auth: target.auth.clone(),
            offer: target.offer.clone(),
            identity: d.identity.as_ref().map(|i| i.get_ref().clone()),
            policy,
            timers,
            frontend,
            ublk,
            paths,
        })
    }

    /// `frontend = "nbd"`, `"ublk"`, `"none"`, or a list of `"nbd"` and
    /// `"ublk"` (each at most once) to serve the device both ways at once.
    fn frontend(&self, f: &Spanned<toml::Value>, device: &str) -> Result<Frontend, ConfigError> {
        let use_ = "use \"nbd\", \"ublk\", \"none\", or both as a list: [\"ublk\", \"nbd\"]";
        let names: Vec<&str> = match f.get_ref() {
            toml::Value::String(s) if s == "none" => return Ok(Frontend::NONE),
            toml::Value::String(s) => vec![s.as_str()],
            toml::Value::Array(list) if !list.is_empty() => {
                let names: Option<Vec<&str>> = list.iter().map(toml::Value::as_str).collect();
                names.ok_or_else(|| self.at(f, format!("device {device}: frontend: a list of names; {use_}")))?
            }
            _ => return Err(self.at(f, format!("device {device}: frontend = {}: {use_}", f.get_ref()))),
        };
        let mut out = Frontend::NONE;
        for n in names {
            let slot = match n {
                "nbd" => &mut out.nbd,
                "ublk" if cfg!(feature = "ublk") => &mut out.ublk,
                "ublk" => {
                    return Err(self.at(
                        f,
                        format!(
                            "device {device}: this mpio was built without the ublk frontend (cargo feature \"ublk\"); \
                             rebuild with it, or use frontend = \"nbd\""
                        ),
                    ));
                }
                "none" => {
                    return Err(
                        self.at(f, format!("device {device}: frontend \"none\" cannot be listed with others: {use_}"))
                    );
                }
                other => return Err(self.at(f, format!("device {device}: frontend {other:?}: {use_}"))),
            };
            if std::mem::replace(slot, true) {
                return Err(self.at(f, format!("device {device}: frontend {n:?} is listed twice: {use_}")));
            }
        }
        Ok(out)
    }

    fn path(&self, p: &Spanned<raw::Path>, device: &str) -> Result<PathSpec, ConfigError> {
        let p = p.get_ref();
        let name = p.name.get_ref().clone();
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == ',' || c == '=' || c.is_control()) {
            return Err(
                self.at(&p.name, format!("device {device}: path name {name:?}: use letters, digits, '-', '_' or '.'"))
            );
        }
        let portal: Portal = p.portal.get_ref().parse().map_err(|e| {
            self.at(
                &p.portal,
                format!("device {device} path {name}: portal {:?}: {e}; write HOST or HOST:PORT", p.portal.get_ref()),
            )
        })?;
        let source = p
            .source
            .as_ref()
            .map(|s| {
                s.get_ref().parse::<IpAddr>().map_err(|_| {
                    self.at(s, format!("device {device} path {name}: source {:?} is not an IP address; give the local address to connect from, or for an interface write interface = \"eth1\"", s.get_ref()))
                })
            })
            .transpose()?;
        let target = p
            .target
            .as_ref()
            .map(|t| {
                IscsiName::parse(t.get_ref()).map_err(|e| {
                    self.at(
                        t,
                        format!(
                            "device {device} path {name}: target: {e}; write the name the target reports \
                                 (`mpio discover`), like iqn.2026-11.com.example:storage"
                        ),
                    )
                })
            })
            .transpose()?;
        let role =
            p.role
                .as_ref()
                .map(|r| match r.get_ref().as_str() {
                    "primary" => Ok(Role::Primary),
                    "active" => Ok(Role::Active),
                    "standby" => Ok(Role::Standby),
                    other => Err(self
                        .at(r, format!("device {device} path {name}: role {other:?}: use primary, active or standby"))),
                })
                .transpose()?;
        Ok(PathSpec {
            name,
            portal,
            source,
            interface: p.interface.clone(),
            target,
            group: p.group.clone(),
            weight: p.weight,
            role,
        })
    }

    /// The policy as a request, from the device's `policy` and `switch`
    /// and the paths' roles and weights, validated as `mpio policy set`
    /// validates it.
    fn policy(&self, d: &raw::Device, device: &str, paths: &[PathSpec]) -> Result<PolicyRequest, ConfigError> {
        let policy = d.policy.as_ref().map_or("round-robin".to_string(), |p| p.get_ref().clone());
        let with_role = |role: Role| -> Option<Vec<String>> {
            let v: Vec<String> = paths.iter().filter(|p| p.role == Some(role)).map(|p| p.name.clone()).collect();
            (!v.is_empty()).then_some(v)
        };
        let weights: Vec<(String, u32)> = paths.iter().filter_map(|p| p.weight.map(|w| (p.name.clone(), w))).collect();
        let switch = d
            .switch
            .as_ref()
            .map(|s| {
                s.get_ref().parse::<SwitchEvery>().map_err(|e| self.at(s, format!("device {device}: switch: {e}")))
            })
            .transpose()?;
        let req = PolicyRequest {
            policy,
            primary: with_role(Role::Primary),
            active: with_role(Role::Active),
            weights: (!weights.is_empty()).then_some(weights),
            switch,
        };
        let at = d.policy.as_ref().map_or(d.name.span().start, |p| p.span().start);
        req.validate(&paths.iter().map(|p| p.name.clone()).collect::<Vec<_>>(), None).map_err(|e| {
            self.err(
                Some(at),
                format!(
                    "device {device}: policy {}: {} (0x{:08X} {}); in this file, write a path's role = \"primary\" / \"active\" and weight = N for --primary, --active and --weights",
                    req.policy,
                    e,
                    e.code(),
                    e.symbol()
                ),
            )
        })?;
        Ok(req)
    }
}

/// A `[[target]]` table, resolved.
struct TargetSpec {
    iqn: IscsiName,
    offer: OperationalOffer,
    auth: Auth,
}

#[cfg(test)]
pub(crate) mod tests;
