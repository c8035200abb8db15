//! Policy names and validated parameters.

use std::fmt;
use std::str::FromStr;

use crate::error::PolicyError;
use crate::fail_over::FailOverOnly;
use crate::least::{LeastBlocks, LeastQueueDepth, ServiceTime};
use crate::round_robin::RoundRobin;
use crate::subset::RoundRobinSubset;
use crate::table::{PathTable, is_live, known, label, live};
use crate::validate::{PARAM_ACTIVE, PARAM_PATH, PARAM_PRIMARY, PARAM_SWITCH, PARAM_WEIGHTS, PolicyRequest};
use crate::weighted::Weighted;
use crate::{PathId, Policy};

/// Which load-balance policy (the CLI names are [`PolicyKind::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// One primary carries all I/O; one standby takes over when it fails (Microsoft's "Fail Over Only").
    FailOverOnly,
    /// Every ready path in turn (Microsoft's "Round Robin").
    RoundRobin,
    /// Round robin over an active set; one standby when the whole set fails (Microsoft's "Round Robin with a subset of paths").
    RoundRobinSubset,
    /// The usable path with the lowest weight (Microsoft's "Weighted Path").
    Weighted,
    /// The path with the fewest commands in flight (Microsoft's "Least Queue Depth", there MCS only, here MPIO too).
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
/// device persists, as Microsoft's initiator is "maintaining the settings during a reboot").
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
    /// path table, with the same rules and errors as [`PolicyRequest::validate`]: ids
    /// live and named once, every live path in exactly one list, one weight per id
    /// (holes included), a non-empty active set, a non-zero switch threshold.
    pub fn check<T: PathTable + ?Sized>(&self, paths: &T) -> Result<(), PolicyError> {
        let n = paths.slots();
        let in_range = |param: &'static str, ids: &[PathId]| -> Result<(), PolicyError> {
            match ids.iter().find(|&&id| !is_live(paths, id)) {
                Some(&id) => Err(PolicyError::InvalidPath { param, name: label(paths, id), known: known(paths) }),
                None => Ok(()),
            }
        };
        let partition = |param: &'static str, first: &[PathId], rest: &[PathId]| -> Result<(), PolicyError> {
            in_range(param, first)?;
            in_range(param, rest)?;
            let mut seen = vec![false; n];
            for &id in first.iter().chain(rest) {
                match seen.get_mut(id) {
                    Some(s) if *s => return Err(PolicyError::DuplicatePath { param, name: label(paths, id) }),
                    Some(s) => *s = true,
                    None => {}
                }
            }
            let missing: Vec<String> =
                live(paths).filter(|&id| !seen.get(id).copied().unwrap_or(false)).map(|id| label(paths, id)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(PolicyError::PathCountMismatch {
                    param,
                    given: first.len() + rest.len(),
                    expected: live(paths).count(),
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
            PolicySpec::Weighted { weights } if weights.len() != n => {
                let covered = live(paths).filter(|&id| id < weights.len()).count();
                Err(PolicyError::PathCountMismatch {
                    param: PARAM_WEIGHTS,
                    given: covered + weights.len().saturating_sub(n),
                    expected: live(paths).count(),
                    missing: live(paths)
                        .filter(|&id| id >= weights.len())
                        .map(|id| label(paths, id))
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
            _ => Ok(()),
        }
    }

    /// The request that validates back to this spec (for persisting by path names,
    /// which survive a change of path-table order). Ids without a name are written
    /// as `#<id>`, which validation refuses; the weights of holes are left out.
    pub fn to_request<T: PathTable + ?Sized>(&self, paths: &T) -> PolicyRequest {
        let name = |id: &PathId| label(paths, *id);
        let mut req = PolicyRequest { policy: self.kind().name().to_owned(), ..PolicyRequest::default() };
        match self {
            PolicySpec::FailOverOnly { primary, .. } => req.primary = Some(vec![name(primary)]),
            PolicySpec::RoundRobin { switch } => req.switch = Some(*switch),
            PolicySpec::RoundRobinSubset { active, .. } => req.active = Some(active.iter().map(name).collect()),
            PolicySpec::Weighted { weights } => {
                let live = weights.iter().enumerate().filter(|(id, _)| is_live(paths, *id));
                req.weights = Some(live.map(|(id, w)| (name(&id), *w)).collect());
            }
            PolicySpec::LeastQueueDepth | PolicySpec::LeastBlocks | PolicySpec::ServiceTime => {}
        }
        req
    }

    /// One line for `mpio policy show` and the metrics' policy info, with path names,
    /// e.g. `fail-over-only primary=p1 standby=p2,p3` or `weighted weights=p1:10,p2:20`.
    pub fn describe<T: PathTable + ?Sized>(&self, paths: &T) -> String {
        let name = |id: &PathId| label(paths, *id);
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
                let live = weights.iter().enumerate().filter(|(id, _)| is_live(paths, *id));
                let w: Vec<String> = live.map(|(id, w)| format!("{}:{w}", name(&id))).collect();
                format!("{kind} weights={}", w.join(","))
            }
            PolicySpec::LeastQueueDepth | PolicySpec::LeastBlocks | PolicySpec::ServiceTime => kind.to_owned(),
        }
    }

    // ---- runtime changes of the path table and of path roles ----------------

    /// The spec once path `id` (a new slot at the end of the table) is added: it takes
    /// the least preferred role, so it never takes I/O from a configured path before
    /// its role is set ([`PolicySpec::with_role`]):
    /// - `fail-over-only`, `round-robin-subset`: the last standby;
    /// - `weighted`: weight `u32::MAX` (the lowest priority);
    /// - the others name no paths: the path joins as soon as it is ready.
    pub fn with_path(&self, id: PathId) -> PolicySpec {
        let mut spec = self.clone();
        match &mut spec {
            PolicySpec::FailOverOnly { standby_order, .. } | PolicySpec::RoundRobinSubset { standby_order, .. } => {
                if !standby_order.contains(&id) {
                    standby_order.push(id);
                }
            }
            PolicySpec::Weighted { weights } => {
                if weights.len() <= id {
                    weights.resize(id + 1, u32::MAX);
                }
                if let Some(w) = weights.get_mut(id) {
                    *w = u32::MAX;
                }
            }
            PolicySpec::RoundRobin { .. }
            | PolicySpec::LeastQueueDepth
            | PolicySpec::LeastBlocks
            | PolicySpec::ServiceTime => {}
        }
        spec
    }

    /// The spec once live path `id` of `paths` (the table before the removal) is
    /// removed. Refused when it is the last live path
    /// (`ISDSC_CANT_REMOVE_LAST_CONNECTION`), or when the policy would lose its
    /// preferred path: the primary of `fail-over-only`, the only active path of
    /// `round-robin-subset` (`ISDSC_CANNOT_REMOVE_ACTIVE_CONNECTION`; the message names
    /// the fix, making another path primary or active first). Nothing is promoted
    /// behind the administrator's back. A weighted spec keeps the hole's weight,
    /// which nothing reads.
    pub fn without_path<T: PathTable + ?Sized>(&self, paths: &T, id: PathId) -> Result<PolicySpec, PolicyError> {
        let name = paths.name(id).ok_or_else(|| PolicyError::InvalidPath {
            param: PARAM_PATH,
            name: label(paths, id),
            known: known(paths),
        })?;
        if live(paths).all(|other| other == id) {
            return Err(PolicyError::LastPath { name: name.to_owned() });
        }
        let preferred = || PolicyError::PreferredPath { name: name.to_owned(), policy: self.kind(), removing: true };
        let mut spec = self.clone();
        match &mut spec {
            PolicySpec::FailOverOnly { primary, .. } if *primary == id => return Err(preferred()),
            PolicySpec::RoundRobinSubset { active, .. } if active.iter().all(|&a| a == id) => return Err(preferred()),
            PolicySpec::FailOverOnly { standby_order, .. } => standby_order.retain(|&s| s != id),
            PolicySpec::RoundRobinSubset { active, standby_order } => {
                active.retain(|&a| a != id);
                standby_order.retain(|&s| s != id);
            }
            PolicySpec::RoundRobin { .. }
            | PolicySpec::Weighted { .. }
            | PolicySpec::LeastQueueDepth
            | PolicySpec::LeastBlocks
            | PolicySpec::ServiceTime => {}
        }
        Ok(spec)
    }

    /// The spec with live path `id` given another role (`mpio path set-weight`,
    /// `set-active`, `set-standby`):
    /// - [`PathRole::Weight`], `weighted` only: the path's weight.
    /// - [`PathRole::Active`], `fail-over-only`: the path becomes the primary, the old
    ///   primary the last standby. `round-robin-subset`: the path joins the active set,
    ///   last in the rotation.
    /// - [`PathRole::Standby`], `fail-over-only`: nothing to do for a standby; the primary
    ///   is refused (`ISDSC_NO_PRIMARY_PATH_SPECIFIED`: make another path primary
    ///   instead). `round-robin-subset`: the path leaves the active set and becomes the
    ///   last standby; refused for the only active path.
    ///
    /// Any other combination is refused with `ISDSC_INVALID_PARAMETER`, naming the
    /// policies that take the role.
    pub fn with_role<T: PathTable + ?Sized>(
        &self,
        paths: &T,
        id: PathId,
        role: PathRole,
    ) -> Result<PolicySpec, PolicyError> {
        let name = paths.name(id).ok_or_else(|| PolicyError::InvalidPath {
            param: PARAM_PATH,
            name: label(paths, id),
            known: known(paths),
        })?;
        let demote = || PolicyError::PreferredPath { name: name.to_owned(), policy: self.kind(), removing: false };
        let names = |ids: &mut dyn Iterator<Item = PathId>| ids.map(|i| label(paths, i)).collect::<Vec<_>>();
        let request = |r: PolicyRequest| r.validate(paths, Some(self));
        let base = PolicyRequest { policy: self.kind().name().to_owned(), ..PolicyRequest::default() };
        match (self, role) {
            (PolicySpec::Weighted { weights }, PathRole::Weight(w)) => {
                let mut weights = weights.clone();
                if weights.len() < paths.slots() {
                    weights.resize(paths.slots(), u32::MAX);
                }
                if let Some(slot) = weights.get_mut(id) {
                    *slot = w;
                }
                Ok(PolicySpec::Weighted { weights })
            }
            (PolicySpec::FailOverOnly { .. }, PathRole::Active) => {
                request(PolicyRequest { primary: Some(vec![name.to_owned()]), ..base })
            }
            (PolicySpec::FailOverOnly { primary, .. }, PathRole::Standby) if *primary == id => Err(demote()),
            (PolicySpec::FailOverOnly { .. }, PathRole::Standby) => Ok(self.clone()),
            (PolicySpec::RoundRobinSubset { active, .. }, PathRole::Active) if active.contains(&id) => Ok(self.clone()),
            (PolicySpec::RoundRobinSubset { active, .. }, PathRole::Active) => {
                let set = names(&mut active.iter().copied().chain([id]));
                request(PolicyRequest { active: Some(set), ..base })
            }
            (PolicySpec::RoundRobinSubset { active, .. }, PathRole::Standby) if !active.contains(&id) => {
                Ok(self.clone())
            }
            (PolicySpec::RoundRobinSubset { active, .. }, PathRole::Standby) => {
                let set = names(&mut active.iter().copied().filter(|&a| a != id));
                if set.is_empty() {
                    return Err(demote());
                }
                request(PolicyRequest { active: Some(set), ..base })
            }
            (_, role) => Err(PolicyError::RoleNotTaken { role, policy: self.kind() }),
        }
    }

    /// What this spec configures for path `id`: the primary or an active path
    /// ([`PathRole::Active`]), a standby, or a weight; `None` for the policies that
    /// name no paths (every ready path carries I/O). For `mpio path list`.
    pub fn role(&self, id: PathId) -> Option<PathRole> {
        match self {
            PolicySpec::FailOverOnly { primary, .. } if *primary == id => Some(PathRole::Active),
            PolicySpec::RoundRobinSubset { active, .. } if active.contains(&id) => Some(PathRole::Active),
            PolicySpec::FailOverOnly { .. } | PolicySpec::RoundRobinSubset { .. } => Some(PathRole::Standby),
            PolicySpec::Weighted { weights } => Some(PathRole::Weight(weights.get(id).copied().unwrap_or(u32::MAX))),
            PolicySpec::RoundRobin { .. }
            | PolicySpec::LeastQueueDepth
            | PolicySpec::LeastBlocks
            | PolicySpec::ServiceTime => None,
        }
    }
}

/// A path's configured part in a policy (`mpio path set-active`, `set-standby`,
/// `set-weight`), see [`PolicySpec::with_role`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathRole {
    /// `fail-over-only`: the primary; `round-robin-subset`: in the active set.
    Active,
    /// `fail-over-only`, `round-robin-subset`: a standby.
    Standby,
    /// `weighted`: this weight (lower is preferred).
    Weight(u32),
}

impl PathRole {
    /// The policies that take this role.
    pub fn policies(self) -> &'static [PolicyKind] {
        match self {
            PathRole::Active | PathRole::Standby => &[PolicyKind::FailOverOnly, PolicyKind::RoundRobinSubset],
            PathRole::Weight(_) => &[PolicyKind::Weighted],
        }
    }
}

impl fmt::Display for PathRole {
    /// `active`, `standby`, `weight 10`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathRole::Active => f.write_str("active"),
            PathRole::Standby => f.write_str("standby"),
            PathRole::Weight(w) => write!(f, "weight {w}"),
        }
    }
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

/// Paths added, removed and given roles at runtime.
#[cfg(test)]
mod runtime_tests {
    use super::*;
    use crate::testutil::*;

    /// p1..p4, with the ids in `removed` as holes.
    fn table(removed: &[PathId]) -> Vec<Option<String>> {
        (0..4).map(|id| (!removed.contains(&id)).then(|| format!("p{}", id + 1))).collect()
    }

    fn fo() -> PolicySpec {
        PolicySpec::FailOverOnly { primary: P1, standby_order: vec![P3, P2, P4] }
    }

    fn subset() -> PolicySpec {
        PolicySpec::RoundRobinSubset { active: vec![P1, P2], standby_order: vec![P3, P4] }
    }

    #[test]
    fn an_added_path_takes_the_least_preferred_role() {
        let names: Vec<String> = (1..=5).map(|i| format!("p{i}")).collect();
        let table = [
            (fo(), PolicySpec::FailOverOnly { primary: P1, standby_order: vec![P3, P2, P4, 4] }),
            (subset(), PolicySpec::RoundRobinSubset { active: vec![P1, P2], standby_order: vec![P3, P4, 4] }),
            (
                PolicySpec::Weighted { weights: vec![1, 2, 3, 4] },
                PolicySpec::Weighted { weights: vec![1, 2, 3, 4, u32::MAX] },
            ),
            (
                PolicySpec::RoundRobin { switch: SwitchEvery::Ios(3) },
                PolicySpec::RoundRobin { switch: SwitchEvery::Ios(3) },
            ),
            (PolicySpec::LeastQueueDepth, PolicySpec::LeastQueueDepth),
        ];
        for (spec, want) in table {
            let got = spec.with_path(4);
            assert_eq!(got, want);
            assert_eq!(got.check(&names), Ok(()), "{got:?}");
        }
    }

    #[test]
    fn removal_keeps_the_others_and_refuses_the_preferred_and_the_last_path() {
        let all = table(&[]);
        assert_eq!(
            fo().without_path(&all, P3),
            Ok(PolicySpec::FailOverOnly { primary: P1, standby_order: vec![P2, P4] })
        );
        assert_eq!(
            subset().without_path(&all, P1),
            Ok(PolicySpec::RoundRobinSubset { active: vec![P2], standby_order: vec![P3, P4] })
        );
        let w = PolicySpec::Weighted { weights: vec![1, 2, 3, 4] };
        assert_eq!(w.without_path(&all, P2), Ok(w.clone()), "the hole's weight is never read");
        // (spec, table, path, code, words the message must contain)
        type Row = (PolicySpec, Vec<Option<String>>, PathId, u32, &'static [&'static str]);
        let refusals: Vec<Row> = vec![
            (fo(), all.clone(), P1, 0xEFFF_0065, &["remove", "\"p1\"", "primary path of fail-over-only", "set-active"]),
            (
                PolicySpec::RoundRobinSubset { active: vec![P2], standby_order: vec![P1, P3, P4] },
                all.clone(),
                P2,
                0xEFFF_0065,
                &["only active path of round-robin-subset", "make another path active"],
            ),
            (PolicySpec::LeastBlocks, table(&[P1, P2, P3]), P4, 0xEFFF_003D, &["last path", "remove the device"]),
            (PolicySpec::LeastBlocks, table(&[P2]), P2, 0xEFFF_0059, &["#1", "p1, p3, p4"]),
        ];
        for (spec, t, id, code, words) in refusals {
            let e = spec.without_path(&t, id).expect_err("refused");
            assert_eq!(e.code(), code, "{e}");
            let msg = e.to_string();
            assert!(words.iter().all(|w| msg.contains(w)), "{msg:?} lacks one of {words:?}");
        }
    }

    /// After a removal the hole is skipped everywhere: names, counts, descriptions.
    #[test]
    fn holes_are_skipped_by_validation_and_descriptions() {
        let t = table(&[P2]);
        let weights = |v: &[(&str, u32)]| PolicyRequest {
            policy: "weighted".into(),
            weights: Some(v.iter().map(|(n, w)| (n.to_string(), *w)).collect()),
            ..PolicyRequest::default()
        };
        // Only the live paths need a weight.
        let spec = weights(&[("p1", 1), ("p3", 3), ("p4", 4)]).validate(&t, None).unwrap();
        assert_eq!(spec.check(&t), Ok(()));
        assert_eq!(spec.describe(&t), "weighted weights=p1:1,p3:3,p4:4");
        assert_eq!(spec.to_request(&t).validate(&t, Some(&spec)), Ok(spec.clone()));
        let e = weights(&[("p1", 1), ("p3", 3)]).validate(&t, None).unwrap_err();
        assert_eq!(e.code(), 0xEFFF_0058);
        assert!(e.to_string().contains("2 of the device's 3 paths (missing: p4)"), "{e}");
        // The removed path is unknown by name and by id.
        for gone in ["p2", "1"] {
            let e = weights(&[("p1", 1), (gone, 2), ("p3", 3), ("p4", 4)]).validate(&t, None).unwrap_err();
            assert_eq!(e.code(), 0xEFFF_0059, "{gone}: {e}");
            assert!(e.to_string().contains("use one of its paths: p1, p3, p4"), "{e}");
        }
        // Standby orders are built over the live paths only.
        let req =
            PolicyRequest { policy: "fail-over-only".into(), primary: Some(vec!["p4".into()]), ..Default::default() };
        let spec = req.validate(&t, None).unwrap();
        assert_eq!(spec, PolicySpec::FailOverOnly { primary: P4, standby_order: vec![P1, P3] });
        assert_eq!(spec.check(&t), Ok(()));
        assert_eq!(spec.describe(&t), "fail-over-only primary=p4 standby=p1,p3");
        // A spec still naming the hole is refused.
        let stale = PolicySpec::FailOverOnly { primary: P4, standby_order: vec![P1, P2, P3] };
        assert_eq!(stale.check(&t).map_err(|e| e.code()), Err(0xEFFF_0059));
    }

    #[test]
    fn roles_change_within_the_running_policy() {
        let all = table(&[]);
        let fo = fo();
        // set-active under fail-over-only: the new primary, the old one last.
        assert_eq!(
            fo.with_role(&all, P2, PathRole::Active),
            Ok(PolicySpec::FailOverOnly { primary: P2, standby_order: vec![P3, P4, P1] })
        );
        assert_eq!(fo.with_role(&all, P1, PathRole::Active), Ok(fo.clone()));
        assert_eq!(fo.with_role(&all, P3, PathRole::Standby), Ok(fo.clone()));
        let e = fo.with_role(&all, P1, PathRole::Standby).unwrap_err();
        assert_eq!(e.code(), 0xEFFF_005B);
        assert!(e.to_string().contains("make a standby of path \"p1\": it is the primary path"), "{e}");
        // round-robin-subset: join or leave the active set.
        let sub = subset();
        assert_eq!(
            sub.with_role(&all, P4, PathRole::Active),
            Ok(PolicySpec::RoundRobinSubset { active: vec![P1, P2, P4], standby_order: vec![P3] })
        );
        assert_eq!(
            sub.with_role(&all, P1, PathRole::Standby),
            Ok(PolicySpec::RoundRobinSubset { active: vec![P2], standby_order: vec![P3, P4, P1] })
        );
        assert_eq!(sub.with_role(&all, P3, PathRole::Standby), Ok(sub.clone()));
        let only = PolicySpec::RoundRobinSubset { active: vec![P2], standby_order: vec![P1, P3, P4] };
        assert_eq!(only.with_role(&all, P2, PathRole::Standby).map_err(|e| e.code()), Err(0xEFFF_005B));
        // weighted: the path's weight; a table grown since gets a slot.
        let w = PolicySpec::Weighted { weights: vec![1, 2, 3] };
        assert_eq!(
            w.with_role(&all, P2, PathRole::Weight(9)),
            Ok(PolicySpec::Weighted { weights: vec![1, 9, 3, u32::MAX] })
        );
        // Roles the policy does not have: the policies that take them are named.
        let refusals: &[(PolicySpec, PathRole, &str)] = &[
            (
                PolicySpec::RoundRobin { switch: SwitchEvery::Ios(1) },
                PathRole::Weight(5),
                "round-robin has no per-path weight; weighted takes it",
            ),
            (fo.clone(), PathRole::Weight(5), "fail-over-only has no per-path weight"),
            (
                w.clone(),
                PathRole::Active,
                "weighted has no per-path active/standby role; fail-over-only and round-robin-subset take it",
            ),
            (PolicySpec::ServiceTime, PathRole::Standby, "service-time has no per-path active/standby role"),
        ];
        for (spec, role, words) in refusals {
            let e = spec.with_role(&all, P1, *role).unwrap_err();
            assert_eq!(e.code(), 0xEFFF_0056);
            assert!(e.to_string().contains(words), "{e}");
        }
        // A removed path has no role to change.
        assert_eq!(fo.with_role(&table(&[P2]), P2, PathRole::Active).map_err(|e| e.code()), Err(0xEFFF_0059));
    }

    #[test]
    fn roles_are_reported() {
        let fo = fo();
        assert_eq!((fo.role(P1), fo.role(P2)), (Some(PathRole::Active), Some(PathRole::Standby)));
        assert_eq!(subset().role(P2), Some(PathRole::Active));
        assert_eq!(PolicySpec::Weighted { weights: vec![7] }.role(P1), Some(PathRole::Weight(7)));
        assert_eq!(PolicySpec::Weighted { weights: vec![7] }.role(P2), Some(PathRole::Weight(u32::MAX)));
        assert_eq!(PolicySpec::LeastQueueDepth.role(P1), None);
        assert_eq!(PathRole::Weight(3).to_string(), "weight 3");
    }

    /// New parameters keep the instance's state: a standby that took over keeps the
    /// I/O when a path is added, where a fresh instance would elect again.
    #[test]
    fn respec_keeps_the_sticky_standby() {
        let mut p = fo().build();
        // The primary and the first standby (p3) are down: p2 takes over.
        assert_eq!(p.select(&views("-R-R"), &READ), Some(P2));
        // p3 returns: p2 keeps the I/O (sticky).
        assert_eq!(p.select(&views("-RRR"), &READ), Some(P2));
        let grown = fo().with_path(4);
        assert!(p.respec(&grown));
        assert_eq!(p.spec(), &grown);
        assert_eq!(p.select(&views("-RRRR"), &READ), Some(P2));
        assert_eq!(grown.build().select(&views("-RRRR"), &READ), Some(P3), "a fresh instance elects again");
        // Another policy is refused, and changes nothing.
        assert!(!p.respec(&PolicySpec::LeastBlocks));
        assert_eq!(p.spec(), &grown);
        let mut lqd = PolicySpec::LeastQueueDepth.build();
        assert!(lqd.respec(&PolicySpec::LeastQueueDepth) && !lqd.respec(&PolicySpec::ServiceTime));
    }
}
