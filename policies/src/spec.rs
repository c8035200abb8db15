//! Policy names and validated parameters.

use std::fmt;
use std::str::FromStr;

use crate::error::PolicyError;
use crate::fail_over::FailOverOnly;
use crate::least::{LeastBlocks, LeastQueueDepth, ServiceTime};
use crate::round_robin::RoundRobin;
use crate::subset::RoundRobinSubset;
use crate::validate::{PARAM_ACTIVE, PARAM_PRIMARY, PARAM_SWITCH, PARAM_WEIGHTS, PolicyRequest};
use crate::weighted::Weighted;
use crate::{PathId, Policy};

/// Which load-balance policy (the CLI names are [`PolicyKind::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// One primary carries all I/O; one standby takes over when it fails (seed 004 line 711).
    FailOverOnly,
    /// Every ready path in turn (seed 004 line 713).
    RoundRobin,
    /// Round robin over an active set; one standby when the whole set fails (seed 004 line 715).
    RoundRobinSubset,
    /// The usable path with the lowest weight (seed 004 line 717).
    Weighted,
    /// The path with the fewest commands in flight (seed 004 line 719, extended to MPIO).
    LeastQueueDepth,
    /// The path with the fewest bytes in flight (Windows MSDSM "Least Blocks").
    LeastBlocks,
    /// The path with the smallest expected completion time (dm-multipath service-time).
    ServiceTime,
}

impl PolicyKind {
    /// Every policy, in the order `mpio policy list` shows them.
    pub const ALL: [PolicyKind; 7] = [
        PolicyKind::FailOverOnly,
        PolicyKind::RoundRobin,
        PolicyKind::RoundRobinSubset,
        PolicyKind::Weighted,
        PolicyKind::LeastQueueDepth,
        PolicyKind::LeastBlocks,
        PolicyKind::ServiceTime,
    ];

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::FailOverOnly => "fail-over-only",
            PolicyKind::RoundRobin => "round-robin",
            PolicyKind::RoundRobinSubset => "round-robin-subset",
            PolicyKind::Weighted => "weighted",
            PolicyKind::LeastQueueDepth => "least-queue-depth",
            PolicyKind::LeastBlocks => "least-blocks",
            PolicyKind::ServiceTime => "service-time",
        }
    }

    /// The request parameter (`--weights`, `--active`, `--primary`, `--switch`) this
    /// policy takes, if any.
    pub fn parameter(self) -> Option<&'static str> {
        match self {
            PolicyKind::FailOverOnly => Some(PARAM_PRIMARY),
            PolicyKind::RoundRobin => Some(PARAM_SWITCH),
            PolicyKind::RoundRobinSubset => Some(PARAM_ACTIVE),
            PolicyKind::Weighted => Some(PARAM_WEIGHTS),
            PolicyKind::LeastQueueDepth | PolicyKind::LeastBlocks | PolicyKind::ServiceTime => None,
        }
    }

    /// The valid names, comma-separated (for error messages and help).
    pub fn names() -> String {
        PolicyKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PolicyKind {
    type Err = PolicyError;

    /// The CLI names, ASCII case-insensitive, surrounding blanks ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        PolicyKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(t))
            .ok_or_else(|| PolicyError::UnknownPolicy { name: s.to_owned() })
    }
}

/// When `round-robin` moves to the next path. The seed gives no granularity (digest
/// 1.2, open point 2); the default is every I/O (`Ios(1)`): dm-multipath's request
/// default `rr_min_io_rq = 1`, and what vendors tell VMware users to set instead of
/// `iops=1000`, which behaves like a single path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SwitchEvery {
    /// After this many requests on the current path (at least 1).
    Ios(u32),
    /// After at least this many bytes on the current path (at least 1). A request is
    /// never split: the path that starts a request carries all of it.
    Bytes(u64),
}

impl Default for SwitchEvery {
    fn default() -> Self {
        SwitchEvery::Ios(1)
    }
}

impl SwitchEvery {
    /// The threshold is zero (refused by validation; a built policy treats it as 1).
    pub fn is_zero(self) -> bool {
        matches!(self, SwitchEvery::Ios(0) | SwitchEvery::Bytes(0))
    }
}

impl fmt::Display for SwitchEvery {
    /// `1000ios` or `1048576bytes` (parsed back by `FromStr`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchEvery::Ios(n) => write!(f, "{n}ios"),
            SwitchEvery::Bytes(n) => write!(f, "{n}bytes"),
        }
    }
}

impl FromStr for SwitchEvery {
    type Err = PolicyError;

    /// `<n>` or `<n>ios` / `<n>io` (I/Os); `<n>bytes` / `<n>b`, `<n>k` / `<n>kib`,
    /// `<n>m` / `<n>mib`, `<n>g` / `<n>gib` (bytes, binary multiples). Case-insensitive.
    /// Zero parses; validation refuses it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let bad = || PolicyError::InvalidSwitch { given: s.to_owned() };
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult: u64 = match unit.trim() {
            "" | "io" | "ios" => return u32::try_from(n).map(SwitchEvery::Ios).map_err(|_| bad()),
            "b" | "byte" | "bytes" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            _ => return Err(bad()),
        };
        n.checked_mul(mult).map(SwitchEvery::Bytes).ok_or_else(bad)
    }
}

/// The validated parameters of a policy (what `mpio policy show` prints and what the
/// device persists, seed 004 line 370 "maintaining the settings during a reboot").
/// Path ids index the device's path table. Build one with [`PolicyRequest::validate`]
/// (from names) or directly (from a config file; then [`PolicySpec::check`] it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PolicySpec {
    /// `fail-over-only`: `primary` carries all I/O; on its failure the first ready
    /// standby in `standby_order` takes over and keeps the I/O while it is ready.
    FailOverOnly {
        /// The preferred path.
        primary: PathId,
        /// The other paths, in the order they are promoted (validation: table order).
        standby_order: Vec<PathId>,
    },
    /// `round-robin`: every ready path in turn.
    RoundRobin {
        /// When to move to the next path.
        switch: SwitchEvery,
    },
    /// `round-robin-subset`: round robin over `active`; one standby when none is usable.
    RoundRobinSubset {
        /// The active set, in rotation order (at least one path).
        active: Vec<PathId>,
        /// The other paths, in the order they are promoted (validation: table order).
        standby_order: Vec<PathId>,
    },
    /// `weighted`: the usable path with the lowest weight.
    Weighted {
        /// Weight of each path, indexed by `PathId`; lower is preferred. A path without
        /// an entry (added later) counts as `u32::MAX`.
        weights: Vec<u32>,
    },
    /// `least-queue-depth`: fewest commands in flight.
    LeastQueueDepth,
    /// `least-blocks`: fewest bytes in flight.
    LeastBlocks,
    /// `service-time`: smallest expected completion time.
    ServiceTime,
}

impl Default for PolicySpec {
    /// `round-robin`, switching every I/O (the seed's default for active/active arrays).
    fn default() -> Self {
        PolicySpec::RoundRobin { switch: SwitchEvery::default() }
    }
}

impl PolicySpec {
    /// Which policy.
    pub fn kind(&self) -> PolicyKind {
        match self {
            PolicySpec::FailOverOnly { .. } => PolicyKind::FailOverOnly,
            PolicySpec::RoundRobin { .. } => PolicyKind::RoundRobin,
            PolicySpec::RoundRobinSubset { .. } => PolicyKind::RoundRobinSubset,
            PolicySpec::Weighted { .. } => PolicyKind::Weighted,
            PolicySpec::LeastQueueDepth => PolicyKind::LeastQueueDepth,
            PolicySpec::LeastBlocks => PolicyKind::LeastBlocks,
            PolicySpec::ServiceTime => PolicyKind::ServiceTime,
        }
    }

    /// A fresh policy instance (cursors at the start, no standby promoted). Never
    /// fails: an unchecked spec is tolerated (ids out of range are ignored, a zero
    /// switch threshold acts as 1, every ready path is still reachable).
    pub fn build(&self) -> Box<dyn Policy> {
        match self {
            PolicySpec::FailOverOnly { .. } => Box::new(FailOverOnly::new(self.clone())),
            PolicySpec::RoundRobin { .. } => Box::new(RoundRobin::new(self.clone())),
            PolicySpec::RoundRobinSubset { .. } => Box::new(RoundRobinSubset::new(self.clone())),
            PolicySpec::Weighted { .. } => Box::new(Weighted::new(self.clone())),
            PolicySpec::LeastQueueDepth => Box::new(LeastQueueDepth::new(self.clone())),
            PolicySpec::LeastBlocks => Box::new(LeastBlocks::new(self.clone())),
            PolicySpec::ServiceTime => Box::new(ServiceTime::new(self.clone())),
        }
    }

    /// Checks a spec built directly (e.g. read from a config file) against the device's
    /// path names, with the same rules and errors as [`PolicyRequest::validate`]: ids in
    /// range and named once, every path in exactly one list, one weight per path, a
    /// non-empty active set, a non-zero switch threshold.
    pub fn check(&self, path_names: &[String]) -> Result<(), PolicyError> {
        let n = path_names.len();
        let name = |id: PathId| path_names.get(id).cloned().unwrap_or_else(|| format!("#{id}"));
        let in_range = |param: &'static str, ids: &[PathId]| -> Result<(), PolicyError> {
            match ids.iter().find(|&&id| id >= n) {
                Some(&id) => Err(PolicyError::InvalidPath { param, name: name(id), known: known(path_names) }),
                None => Ok(()),
            }
        };
        let partition = |param: &'static str, first: &[PathId], rest: &[PathId]| -> Result<(), PolicyError> {
            in_range(param, first)?;
            in_range(param, rest)?;
            let mut seen = vec![false; n];
            for &id in first.iter().chain(rest) {
                match seen.get_mut(id) {
                    Some(s) if *s => return Err(PolicyError::DuplicatePath { param, name: name(id) }),
                    Some(s) => *s = true,
                    None => {}
                }
            }
            let missing: Vec<String> = seen.iter().enumerate().filter(|(_, s)| !**s).map(|(id, _)| name(id)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(PolicyError::PathCountMismatch {
                    param,
                    given: first.len() + rest.len(),
                    expected: n,
                    missing: missing.join(", "),
                })
            }
        };
        match self {
            PolicySpec::FailOverOnly { primary, standby_order } => {
                partition(PARAM_PRIMARY, std::slice::from_ref(primary), standby_order)
            }
            PolicySpec::RoundRobin { switch } if switch.is_zero() => Err(PolicyError::ZeroSwitch { switch: *switch }),
            PolicySpec::RoundRobinSubset { active, .. } if active.is_empty() => Err(PolicyError::EmptyActiveSet),
            PolicySpec::RoundRobinSubset { active, standby_order } => partition(PARAM_ACTIVE, active, standby_order),
            PolicySpec::Weighted { weights } if weights.len() != n => Err(PolicyError::PathCountMismatch {
                param: PARAM_WEIGHTS,
                given: weights.len(),
                expected: n,
                missing: path_names.iter().skip(weights.len()).cloned().collect::<Vec<_>>().join(", "),
            }),
            _ => Ok(()),
        }
    }

    /// The request that validates back to this spec (for persisting by path names,
    /// which survive a change of path-table order). Ids without a name are written
    /// as `#<id>`, which validation refuses.
    pub fn to_request(&self, path_names: &[String]) -> PolicyRequest {
        let name = |id: &PathId| path_names.get(*id).cloned().unwrap_or_else(|| format!("#{id}"));
        let mut req = PolicyRequest { policy: self.kind().name().to_owned(), ..PolicyRequest::default() };
        match self {
            PolicySpec::FailOverOnly { primary, .. } => req.primary = Some(vec![name(primary)]),
            PolicySpec::RoundRobin { switch } => req.switch = Some(*switch),
            PolicySpec::RoundRobinSubset { active, .. } => req.active = Some(active.iter().map(name).collect()),
            PolicySpec::Weighted { weights } => {
                req.weights = Some(weights.iter().enumerate().map(|(id, w)| (name(&id), *w)).collect());
            }
            PolicySpec::LeastQueueDepth | PolicySpec::LeastBlocks | PolicySpec::ServiceTime => {}
        }
        req
    }

    /// One line for `mpio policy show` and the metrics' policy info, with path names,
    /// e.g. `fail-over-only primary=p1 standby=p2,p3` or `weighted weights=p1:10,p2:20`.
    pub fn describe(&self, path_names: &[String]) -> String {
        let name = |id: &PathId| path_names.get(*id).cloned().unwrap_or_else(|| format!("#{id}"));
        let list = |ids: &[PathId]| ids.iter().map(name).collect::<Vec<_>>().join(",");
        let kind = self.kind().name();
        match self {
            PolicySpec::FailOverOnly { primary, standby_order } => {
                format!("{kind} primary={} standby={}", name(primary), list(standby_order))
            }
            PolicySpec::RoundRobin { switch } => format!("{kind} switch={switch}"),
            PolicySpec::RoundRobinSubset { active, standby_order } => {
                format!("{kind} active={} standby={}", list(active), list(standby_order))
            }
            PolicySpec::Weighted { weights } => {
                let w: Vec<String> = weights.iter().enumerate().map(|(id, w)| format!("{}:{w}", name(&id))).collect();
                format!("{kind} weights={}", w.join(","))
            }
            PolicySpec::LeastQueueDepth | PolicySpec::LeastBlocks | PolicySpec::ServiceTime => kind.to_owned(),
        }
    }
}

/// The path names for error messages.
pub(crate) fn known(path_names: &[String]) -> String {
    if path_names.is_empty() { "(none)".to_owned() } else { path_names.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for k in PolicyKind::ALL {
            assert_eq!(k.name().parse::<PolicyKind>().unwrap(), k);
            assert_eq!(k.to_string(), k.name());
            assert_eq!(k.name().to_uppercase().parse::<PolicyKind>().unwrap(), k);
        }
        let e = "round_robin".parse::<PolicyKind>().unwrap_err();
        assert_eq!(e.code(), 0xEFFF_0055);
        assert!(e.to_string().contains("fail-over-only, round-robin, round-robin-subset"), "{e}");
    }

    #[test]
    fn switch_parses() {
        let table: &[(&str, Option<SwitchEvery>)] = &[
            ("1", Some(SwitchEvery::Ios(1))),
            ("1000ios", Some(SwitchEvery::Ios(1000))),
            ("16 IO", Some(SwitchEvery::Ios(16))),
            ("4096b", Some(SwitchEvery::Bytes(4096))),
            ("4096bytes", Some(SwitchEvery::Bytes(4096))),
            ("64k", Some(SwitchEvery::Bytes(65536))),
            ("10MiB", Some(SwitchEvery::Bytes(10 << 20))),
            ("1g", Some(SwitchEvery::Bytes(1 << 30))),
            ("0", Some(SwitchEvery::Ios(0))),
            ("", None),
            ("ios", None),
            ("12x", None),
            ("-1", None),
            ("5000000000", None),
            ("99999999999999999999g", None),
        ];
        for (s, want) in table {
            let got = s.parse::<SwitchEvery>();
            match want {
                Some(w) => assert_eq!(got.as_ref().ok(), Some(w), "{s}"),
                None => assert_eq!(got.map_err(|e| e.code()), Err(0xEFFF_0056), "{s}"),
            }
        }
        for s in [SwitchEvery::Ios(7), SwitchEvery::Bytes(12345)] {
            assert_eq!(s.to_string().parse::<SwitchEvery>().unwrap(), s);
        }
    }

    #[test]
    fn describe_names_paths() {
        let names: Vec<String> = ["p1", "p2", "p3"].iter().map(|s| s.to_string()).collect();
        let table = [
            (
                PolicySpec::FailOverOnly { primary: 1, standby_order: vec![0, 2] },
                "fail-over-only primary=p2 standby=p1,p3",
            ),
            (PolicySpec::RoundRobin { switch: SwitchEvery::Bytes(4096) }, "round-robin switch=4096bytes"),
            (
                PolicySpec::RoundRobinSubset { active: vec![0, 1], standby_order: vec![2] },
                "round-robin-subset active=p1,p2 standby=p3",
            ),
            (PolicySpec::Weighted { weights: vec![10, 20, 30] }, "weighted weights=p1:10,p2:20,p3:30"),
            (PolicySpec::ServiceTime, "service-time"),
        ];
        for (spec, want) in table {
            assert_eq!(spec.describe(&names), want);
        }
    }

    #[test]
    fn check_refuses_inconsistent_specs() {
        let names: Vec<String> = ["p1", "p2", "p3"].iter().map(|s| s.to_string()).collect();
        let table: &[(PolicySpec, Option<u32>)] = &[
            (PolicySpec::FailOverOnly { primary: 0, standby_order: vec![1, 2] }, None),
            (PolicySpec::FailOverOnly { primary: 0, standby_order: vec![2, 1] }, None),
            (PolicySpec::FailOverOnly { primary: 3, standby_order: vec![1, 2] }, Some(0xEFFF_0059)),
            (PolicySpec::FailOverOnly { primary: 0, standby_order: vec![0, 1, 2] }, Some(0xEFFF_0057)),
            (PolicySpec::FailOverOnly { primary: 0, standby_order: vec![1] }, Some(0xEFFF_0058)),
            (PolicySpec::RoundRobin { switch: SwitchEvery::Ios(0) }, Some(0xEFFF_0056)),
            (PolicySpec::RoundRobin { switch: SwitchEvery::Bytes(0) }, Some(0xEFFF_0056)),
            (PolicySpec::RoundRobinSubset { active: vec![], standby_order: vec![0, 1, 2] }, Some(0xEFFF_005B)),
            (PolicySpec::RoundRobinSubset { active: vec![1], standby_order: vec![0, 1, 2] }, Some(0xEFFF_0057)),
            (PolicySpec::RoundRobinSubset { active: vec![1, 0], standby_order: vec![2] }, None),
            (PolicySpec::Weighted { weights: vec![1, 2] }, Some(0xEFFF_0058)),
            (PolicySpec::Weighted { weights: vec![1, 2, 3] }, None),
            (PolicySpec::LeastBlocks, None),
        ];
        for (spec, want) in table {
            assert_eq!(spec.check(&names).map_err(|e| e.code()).err(), *want, "{spec:?}");
        }
    }
}
