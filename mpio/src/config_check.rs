//! `mpio config check FILE`: everything the daemon would refuse, without
//! starting anything or touching the network.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use crate::config;
use crate::output;

/// `mpio config`.
#[derive(Subcommand, Debug)]
pub(crate) enum ConfigCommand {
    /// Check a configuration file: keys, values, references, policies,
    /// timers, CHAP secret files. Exits non-zero with file:line: problem.
    Check {
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(cmd: ConfigCommand) -> Result<()> {
    let ConfigCommand::Check { file, json } = cmd;
    let c = config::load(&file)?;
    let mut warnings: Vec<String> = c
        .devices
        .iter()
        .flat_map(|d| d.timers.check().into_iter().map(move |p| format!("device {}: {}", d.name, p.message)))
        .collect();
    if c.devices.is_empty() {
        warnings.push("no [[device]]: the daemon would export nothing until a reload adds one".into());
    }
    if json {
        return output::json(&json!({
            "file": file.display().to_string(),
            "ok": true,
            "initiator": c.initiator.to_string(),
            "devices": c.devices.iter().map(|d| json!({
                "name": d.name,
                "target": d.target.to_string(),
                "lun": d.lun,
                "policy": d.policy.policy,
                "paths": d.path_names(),
            })).collect::<Vec<_>>(),
            "warnings": warnings,
        }));
    }
    outln!("{}: ok", file.display());
    output::fields(&[
        ("initiator", c.initiator.to_string()),
        ("control socket", c.control_socket.display().to_string()),
        ("metrics", c.metrics.map_or("off".into(), |a| format!("http://{a}/metrics"))),
    ]);
    for d in &c.devices {
        outln!(
            "device {} (line {}): {} lun {}, {}, paths {}",
            d.name,
            d.line,
            d.target,
            d.lun,
            d.policy.policy,
            d.path_names().join(", ")
        );
    }
    for w in &warnings {
        errln!("warning: {w}");
    }
    Ok(())
}
