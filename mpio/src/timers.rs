//! `mpio timers explain`: what a timer configuration means in seconds of
//! stall, and whether it can work at all.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use mpio_mpath::TimerConfig;
use serde_json::json;

use crate::{config, output};

/// Timer model.
#[derive(Subcommand, Debug)]
pub(crate) enum TimersCommand {
    /// Worst-case detection, failover and hold times of a configuration
    /// (the defaults without --config); refuses combinations that cannot
    /// work.
    Explain(ExplainArgs),
}

#[derive(Args, Debug)]
pub(crate) struct ExplainArgs {
    /// Configuration file: each device's timers are explained (its
    /// `[device.timers]`, `hold` and `failback` over `[timers]`), or
    /// `[timers]` when it has no device.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print JSON (seconds as numbers).
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(cmd: TimersCommand) -> Result<()> {
    let TimersCommand::Explain(args) = cmd;
    // Each device runs with its own timers ([device.timers], hold and
    // failback over [timers]); without devices, [timers] is what one gets.
    let (global, devices) = match &args.config {
        Some(path) => {
            let t = config::effective_timers(path)?;
            (t.global, t.devices)
        }
        None => (TimerConfig::default(), Vec::new()),
    };
    let explained: Vec<(Option<&str>, &TimerConfig)> = match devices.is_empty() {
        true => vec![(None, &global)],
        false => devices.iter().map(|(n, t)| (Some(n.as_str()), t)).collect(),
    };
    let mut fatal: Vec<String> = Vec::new();
    for (name, timers) in &explained {
        let prefix = name.map(|n| format!("device {n}: ")).unwrap_or_default();
        fatal.extend(timers.check().into_iter().filter(|p| p.fatal).map(|p| format!("{prefix}{}", p.message)));
    }
    if args.json {
        let mut v = figures(&global);
        if !devices.is_empty() {
            v["devices"] = devices
                .iter()
                .map(|(n, t)| {
                    let mut d = figures(t);
                    d["device"] = json!(n);
                    d
                })
                .collect();
        }
        output::json(&v)?;
    } else {
        for (name, timers) in &explained {
            if let Some(n) = name {
                outln!("device {n}:");
            }
            out!("{}", timers.report());
            for p in timers.check() {
                let prefix = name.map(|n| format!("device {n}: ")).unwrap_or_default();
                errln!("{}: {prefix}{}", if p.fatal { "error" } else { "warning" }, p.message);
            }
        }
    }
    if !fatal.is_empty() {
        bail!("the timers cannot work: {}", fatal.join("; "));
    }
    Ok(())
}

/// The worst-case figures of `timers` and its problems, seconds as numbers.
fn figures(timers: &TimerConfig) -> serde_json::Value {
    let e = timers.explain();
    let secs = |d: Duration| d.as_secs_f64();
    json!({
        "detect_silent_path_s": secs(e.detect_silent),
        "detect_hung_path_s": secs(e.detect_hung),
        "fence_login_max_s": secs(e.fence_login),
        "fence_timeout_s": secs(e.fence_timeout),
        "all_paths_down_hold_s": e.hold.map(secs),
        "path_return_s": secs(e.path_return),
        "problems": timers.check().iter().map(|p| json!({"fatal": p.fatal, "message": p.message})).collect::<Vec<_>>(),
    })
}
