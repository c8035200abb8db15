//! `mpio timers explain`: what a timer configuration means in seconds of
//! stall, and whether it can work at all.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use mpio_mpath::TimerConfig;
use serde_json::json;

use crate::output;

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
    /// Configuration file whose `[timers]` table is explained.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print JSON (seconds as numbers).
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(cmd: TimersCommand) -> Result<()> {
    let TimersCommand::Explain(args) = cmd;
    let timers = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            TimerConfig::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => TimerConfig::default(),
    };
    let problems = timers.check();
    let fatal: Vec<&str> = problems.iter().filter(|p| p.fatal).map(|p| p.message.as_str()).collect();
    if args.json {
        let e = timers.explain();
        let secs = |d: Duration| d.as_secs_f64();
        output::json(&json!({
            "detect_silent_path_s": secs(e.detect_silent),
            "detect_hung_path_s": secs(e.detect_hung),
            "fence_login_max_s": secs(e.fence_login),
            "fence_timeout_s": secs(e.fence_timeout),
            "all_paths_down_hold_s": e.hold.map(secs),
            "path_return_s": secs(e.path_return),
            "problems": problems.iter().map(|p| json!({"fatal": p.fatal, "message": p.message})).collect::<Vec<_>>(),
        }))?;
    } else {
        print!("{}", timers.report());
        for p in &problems {
            eprintln!("{}: {}", if p.fatal { "error" } else { "warning" }, p.message);
        }
    }
    if !fatal.is_empty() {
        bail!("the timers cannot work: {}", fatal.join("; "));
    }
    Ok(())
}
