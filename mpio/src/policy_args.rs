//! The policy options shared by every command that chooses a policy
//! (`mpio perf`, `mpio policy set`): one parser, so the
//! same words mean the same thing everywhere.

use clap::Args;
use mpio_mpath::{PolicyRequest, SwitchEvery};

use crate::control::proto::PolicyChange;

/// A load-balance policy and its parameters.
#[derive(Args, Debug, Default, Clone)]
pub(crate) struct PolicyArgs {
    /// Load-balance policy: fail-over-only, round-robin (default),
    /// round-robin-subset, weighted, least-queue-depth, least-blocks,
    /// service-time.
    #[arg(long, value_name = "NAME")]
    pub(crate) policy: Option<String>,
    #[command(flatten)]
    pub(crate) params: PolicyParams,
}

/// A policy's parameters (`mpio policy set DEV POLICY` takes the policy
/// as an argument, `mpio perf` as `--policy`).
#[derive(Args, Debug, Default, Clone)]
pub(crate) struct PolicyParams {
    /// fail-over-only: the path that carries the I/O (the others are
    /// standbys, promoted in path order).
    #[arg(long, value_name = "PATH", value_delimiter = ',')]
    pub(crate) primary: Vec<String>,
    /// round-robin-subset: the paths that share the I/O, in rotation order.
    #[arg(long, value_name = "PATH,...", value_delimiter = ',')]
    pub(crate) active: Vec<String>,
    /// weighted: a weight for every path, lower preferred (p1=1,p2=5).
    #[arg(long, value_name = "PATH=W,...", value_delimiter = ',', value_parser = parse_weight)]
    pub(crate) weights: Vec<(String, u32)>,
    /// round-robin: move to the next path every N I/Os (`1000`) or bytes
    /// (`1m`).
    #[arg(long, value_name = "N")]
    pub(crate) switch: Option<SwitchEvery>,
}

fn parse_weight(s: &str) -> Result<(String, u32), String> {
    let (path, w) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected PATH=WEIGHT, like p1=1"))?;
    let w = w.trim().parse().map_err(|_| format!("{s:?}: the weight must be a whole number, like p1=1"))?;
    Ok((path.trim().to_owned(), w))
}

impl PolicyArgs {
    /// The request to validate against a device's paths, if a policy was
    /// named.
    pub(crate) fn request(&self) -> Option<PolicyRequest> {
        self.policy.as_ref().map(|policy| self.params.request(policy))
    }
}

impl PolicyParams {
    /// `policy` with these parameters.
    pub(crate) fn request(&self, policy: &str) -> PolicyRequest {
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        PolicyRequest {
            policy: policy.to_owned(),
            primary: list(&self.primary),
            active: list(&self.active),
            weights: (!self.weights.is_empty()).then(|| self.weights.clone()),
            switch: self.switch,
        }
    }

    /// The same, as the control protocol carries it.
    pub(crate) fn change(&self, policy: &str) -> PolicyChange {
        let r = self.request(policy);
        PolicyChange {
            policy: r.policy,
            primary: r.primary,
            active: r.active,
            weights: r.weights,
            switch: r.switch.map(|s| s.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        p: PolicyArgs,
    }

    fn parse(args: &[&str]) -> Result<PolicyRequest, String> {
        let cli = Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        let names = ["p1", "p2", "p3"].map(String::from);
        let req = cli.p.request().ok_or("no policy")?;
        req.validate(&names[..], None).map_err(|e| e.to_string())?;
        Ok(req)
    }

    #[test]
    fn every_parameter_reaches_the_request() {
        let r = parse(&["--policy", "fail-over-only", "--primary", "p2"]).unwrap();
        assert_eq!(r.primary, Some(vec!["p2".to_string()]));
        let r = parse(&["--policy", "round-robin-subset", "--active", "p1,p3"]).unwrap();
        assert_eq!(r.active, Some(vec!["p1".to_string(), "p3".to_string()]));
        let r = parse(&["--policy", "weighted", "--weights", "p1=1,p2=5,p3=5"]).unwrap();
        assert_eq!(r.weights.unwrap()[1], ("p2".to_string(), 5));
        let r = parse(&["--policy", "round-robin", "--switch", "1m"]).unwrap();
        assert_eq!(r.switch, Some(SwitchEvery::Bytes(1 << 20)));
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse(&["--policy", "weighted", "--weights", "p1:1"]).unwrap_err();
        assert!(e.contains("expected PATH=WEIGHT"), "{e}");
        let e = parse(&["--policy", "fail-over-only"]).unwrap_err();
        assert!(e.contains("--primary"), "{e}");
        let e = parse(&["--policy", "fail-over-only", "--primary", "p1,p2"]).unwrap_err();
        assert!(e.to_lowercase().contains("primary"), "{e}");
        let e = parse(&["--policy", "least-queue-depth", "--primary", "p1"]).unwrap_err();
        assert!(e.contains("--primary"), "{e}");
    }
}
