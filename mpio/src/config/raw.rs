//! The configuration file as written: every table refuses keys it does
//! not know, and values that are checked after parsing keep their place in
//! the file so an error can name the line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    /// Our iSCSI name; default from /etc/iscsi/initiatorname.iscsi.
    pub(super) initiator: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) daemon: Daemon,
    #[serde(default)]
    pub(super) metrics: Metrics,
    #[serde(default)]
    pub(super) nbd: Nbd,
    /// Timers of every device (a device's own `[device.timers]` overrides
    /// keys of it).
    pub(super) timers: Option<Spanned<toml::Table>>,
    #[serde(default, rename = "target")]
    pub(super) targets: Vec<Spanned<Target>>,
    #[serde(default, rename = "device")]
    pub(super) devices: Vec<Spanned<Device>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Daemon {
    pub(super) control_socket: Option<Spanned<String>>,
    pub(super) log: Option<Spanned<String>>,
    pub(super) ready_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Metrics {
    pub(super) enabled: Option<bool>,
    pub(super) listen: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Nbd {
    pub(super) socket: Option<Spanned<String>>,
    pub(super) listen: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Target {
    pub(super) name: Spanned<String>,
    pub(super) iqn: Spanned<String>,
    pub(super) header_digest: Option<Spanned<String>>,
    pub(super) data_digest: Option<Spanned<String>>,
    pub(super) max_recv_data_segment_length: Option<u32>,
    pub(super) first_burst_length: Option<u32>,
    pub(super) max_burst_length: Option<u32>,
    pub(super) error_recovery_level: Option<Spanned<u8>>,
    pub(super) chap: Option<Spanned<Chap>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Chap {
    pub(super) user: String,
    pub(super) secret_file: Option<String>,
    pub(super) secret_env: Option<String>,
    pub(super) target_user: Option<String>,
    pub(super) target_secret_file: Option<String>,
    pub(super) target_secret_env: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Device {
    pub(super) name: Spanned<String>,
    pub(super) target: Spanned<String>,
    pub(super) lun: Spanned<u64>,
    pub(super) identity: Option<Spanned<String>>,
    pub(super) policy: Option<Spanned<String>>,
    pub(super) switch: Option<Spanned<String>>,
    pub(super) failback: Option<Spanned<String>>,
    pub(super) hold: Option<Spanned<String>>,
    /// A name, or a list of names (read by `Cx::frontend`).
    pub(super) frontend: Option<Spanned<toml::Value>>,
    pub(super) ublk_queues: Option<Spanned<u64>>,
    pub(super) ublk_depth: Option<Spanned<u64>>,
    pub(super) timers: Option<Spanned<toml::Table>>,
    #[serde(default, rename = "path")]
    pub(super) paths: Vec<Spanned<Path>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Path {
    pub(super) name: Spanned<String>,
    pub(super) portal: Spanned<String>,
    pub(super) source: Option<Spanned<String>>,
    pub(super) interface: Option<String>,
    pub(super) target: Option<Spanned<String>>,
    pub(super) group: Option<String>,
    pub(super) weight: Option<u32>,
    pub(super) role: Option<Spanned<String>>,
}

/// Timer tables merged key by key (device over global).
pub(super) fn merge(global: Option<&toml::Table>, local: Option<&toml::Table>) -> toml::Table {
    let mut out: BTreeMap<String, toml::Value> = BTreeMap::new();
    for t in [global, local].into_iter().flatten() {
        for (k, v) in t {
            out.insert(k.clone(), v.clone());
        }
    }
    out.into_iter().collect()
}
