//! `ublk_queues` and `ublk_depth` of a `[[device]]` with `frontend =
//! "ublk"`: how many hardware queues `/dev/ublkbN` gets (one thread
//! each) and how many requests each holds at once. Unset, the frontend's
//! defaults (`mpio_ublk::UblkConfig::new`: one queue, the one that drives
//! the device's lane, 64 deep).

use toml::Spanned;

use super::{Cx, Frontend, raw};
use crate::config::ConfigError;

/// The ublk driver's limits (`UBLK_MAX_NR_QUEUES`,
/// `UBLK_MAX_QUEUE_DEPTH` in `include/uapi/linux/ublk_cmd.h`).
const MAX_QUEUES: u64 = 4096;
const MAX_DEPTH: u64 = 4096;

/// A device's ublk queues as configured; `None`: the frontend's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(not(feature = "ublk"), allow(dead_code))]
pub(crate) struct UblkQueues {
    pub(crate) queues: Option<u16>,
    pub(crate) depth: Option<u16>,
}

#[cfg(feature = "ublk")]
impl UblkQueues {
    /// `config` with what the file sets.
    pub(crate) fn apply(self, mut config: mpio_ublk::UblkConfig) -> mpio_ublk::UblkConfig {
        config.queues = self.queues.unwrap_or(config.queues);
        config.depth = self.depth.unwrap_or(config.depth);
        config
    }
}

impl Cx<'_> {
    /// The device's `ublk_queues` and `ublk_depth`, checked against the
    /// driver's limits; refused on a device that is not a ublk device.
    pub(super) fn ublk_queues(
        &self,
        d: &raw::Device,
        device: &str,
        frontend: Frontend,
    ) -> Result<UblkQueues, ConfigError> {
        let key = |v: &Option<Spanned<u64>>, name: &str, max: u64, what: &str| -> Result<Option<u16>, ConfigError> {
            let Some(v) = v else { return Ok(None) };
            if !frontend.ublk {
                return Err(self.at(
                    v,
                    format!(
                        "device {device}: {name} applies to frontend = \"ublk\" only: remove it, or set the frontend"
                    ),
                ));
            }
            match u16::try_from(*v.get_ref()) {
                Ok(n) if n >= 1 && u64::from(n) <= max => Ok(Some(n)),
                _ => Err(self.at(v, format!("device {device}: {name} = {}: use 1 to {max} ({what})", v.get_ref()))),
            }
        };
        Ok(UblkQueues {
            queues: key(&d.ublk_queues, "ublk_queues", MAX_QUEUES, "hardware queues, one thread each; unset, one")?,
            depth: key(
                &d.ublk_depth,
                "ublk_depth",
                MAX_DEPTH,
                "requests in flight per queue, each with a 512 KiB buffer; unset, 64",
            )?,
        })
    }
}
