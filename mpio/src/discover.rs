//! `mpio discover`: SendTargets on a discovery session.

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use crate::connect::ConnectArgs;
use crate::output;

/// Lists the targets a portal offers.
#[derive(Args, Debug)]
pub(crate) struct DiscoverArgs {
    #[command(flatten)]
    pub(crate) conn: ConnectArgs,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Serialize)]
struct Target {
    target: String,
    portals: Vec<Portal>,
}

#[derive(Serialize)]
struct Portal {
    address: String,
    tpgt: Option<u16>,
}

pub(crate) async fn run(args: DiscoverArgs) -> Result<()> {
    let session = args.conn.connect(None).await?;
    let result = session.send_targets().await.context("SendTargets failed")?;
    // Best effort: the answer is what matters.
    let _ = session.logout().await;
    for w in &result.warnings {
        errln!("warning: {w}");
    }
    let targets: Vec<Target> = result
        .targets
        .iter()
        .map(|t| Target {
            target: t.name.to_string(),
            portals: t.addresses.iter().map(|a| Portal { address: a.portal().to_string(), tpgt: a.tpgt() }).collect(),
        })
        .collect();
    if args.json {
        return output::json(&targets);
    }
    if targets.is_empty() {
        outln!(
            "no targets: the portal answered but lists none for initiator {}; check the target's ACL",
            session_initiator(&args.conn)
        );
        return Ok(());
    }
    let mut rows = vec![vec!["TARGET".to_string(), "PORTAL".into(), "TPGT".into()]];
    for t in &targets {
        if t.portals.is_empty() {
            rows.push(vec![t.target.clone(), args.conn.portal.to_string(), "-".into()]);
        }
        for p in &t.portals {
            rows.push(vec![t.target.clone(), p.address.clone(), p.tpgt.map_or("-".into(), |g| g.to_string())]);
        }
    }
    output::table(&rows);
    Ok(())
}

fn session_initiator(conn: &ConnectArgs) -> String {
    conn.initiator
        .clone()
        .or_else(|| crate::connect::default_initiator_name().ok())
        .map_or_else(|| "(unknown)".into(), |n| n.to_string())
}
