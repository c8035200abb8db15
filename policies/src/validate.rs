//! From what a user typed (policy name, path names) to a [`PolicySpec`].

use crate::PathId;
use crate::error::PolicyError;
use crate::spec::{PolicyKind, PolicySpec, SwitchEvery};
use crate::table::{PathTable, is_live, known, live};

pub(crate) const PARAM_WEIGHTS: &str = "--weights";
pub(crate) const PARAM_ACTIVE: &str = "--active";
pub(crate) const PARAM_PRIMARY: &str = "--primary";
pub(crate) const PARAM_SWITCH: &str = "--switch";
/// A path named by a runtime change (`mpio path remove|set-*`).
pub(crate) const PARAM_PATH: &str = "path";

/// A policy change as requested by `mpio policy set` or the control API, with paths
/// by name. [`PolicyRequest::validate`] turns it into a [`PolicySpec`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyRequest {
    /// The policy's CLI name ([`PolicyKind::name`]).
    pub policy: String,
    /// `weighted`: a weight for every path (lower is preferred).
    pub weights: Option<Vec<(String, u32)>>,
    /// `round-robin-subset`: the active set, in rotation order.
    pub active: Option<Vec<String>>,
    /// `fail-over-only`: the primary (exactly one; a list so that naming several can
    /// be refused with the seed's code).
    pub primary: Option<Vec<String>>,
    /// `round-robin`: when to move to the next path.
    pub switch: Option<SwitchEvery>,
}

impl PolicyRequest {
    /// Validates the request against the device's path table (names by path id, see
    /// [`PathTable`]: removed paths are skipped) and the running policy, and returns
    /// the spec to build. Checks, in this order: the policy name; parameters the
    /// policy does not take; each list in order (a name the device does not have, a
    /// path named twice); then paths `--weights` leaves out; then the counts (one
    /// primary, a non-empty active set, a non-zero switch).
    ///
    /// A path is named by its name; a decimal number that is no path's name is taken as
    /// a path id (the Microsoft initiator's "PathId").
    ///
    /// Missing parameters (Microsoft's initiator gives no defaults; ours):
    /// - `fail-over-only` without `--primary`: keeps the running primary when the
    ///   running policy is fail-over-only, else refused with
    ///   `ISDSC_NO_PRIMARY_PATH_SPECIFIED`.
    /// - `round-robin` without `--switch`: keeps the running threshold when the running
    ///   policy is round-robin, else every I/O (`Ios(1)`).
    /// - `round-robin-subset` without `--active`: keeps the running active set when the
    ///   running policy is round-robin-subset, else refused with
    ///   `ISDSC_NO_PRIMARY_PATH_SPECIFIED` (an empty `--active` is refused the same way).
    /// - `weighted` without `--weights`: keeps the running weights when the running
    ///   policy is weighted (paths added since get `u32::MAX`, the least preferred),
    ///   else all weights equal (1), which is round robin over all usable paths.
    ///
    /// The standby order of `fail-over-only` and `round-robin-subset` (the request cannot
    /// give one) is the running policy's order when it is the same policy, without the
    /// paths that are now primary/active, followed by the paths it lacks in table order
    /// (a demoted primary goes last); otherwise path-table order (digest 1.2: "configured
    /// order, then lowest path id"). A config file can give any order by building the
    /// [`PolicySpec`] directly.
    pub fn validate<T: PathTable + ?Sized>(
        &self,
        paths: &T,
        current: Option<&PolicySpec>,
    ) -> Result<PolicySpec, PolicyError> {
        let kind: PolicyKind = self.policy.parse()?;
        self.refuse_foreign(kind)?;
        match kind {
            PolicyKind::FailOverOnly => {
                let running = match current {
                    Some(PolicySpec::FailOverOnly { primary, standby_order }) => Some((*primary, standby_order)),
                    _ => None,
                };
                let primary = match (&self.primary, running) {
                    (Some(names), _) => match resolve_all(PARAM_PRIMARY, names, paths)?.as_slice() {
                        [] => return Err(PolicyError::NoPrimary),
                        [one] => *one,
                        _ => return Err(PolicyError::MultiplePrimaries { names: names.clone() }),
                    },
                    (None, Some((primary, _))) if is_live(paths, primary) => primary,
                    (None, _) => return Err(PolicyError::NoPrimary),
                };
                let standby_order = standby_order(paths, &[primary], running.map(|(_, order)| order.as_slice()));
                Ok(PolicySpec::FailOverOnly { primary, standby_order })
            }
            PolicyKind::RoundRobin => {
                let switch = match (self.switch, current) {
                    (Some(s), _) => s,
                    (None, Some(PolicySpec::RoundRobin { switch })) => *switch,
                    (None, _) => SwitchEvery::default(),
                };
                if switch.is_zero() {
                    return Err(PolicyError::ZeroSwitch { switch });
                }
                Ok(PolicySpec::RoundRobin { switch })
            }
            PolicyKind::RoundRobinSubset => {
                let running = match current {
                    Some(PolicySpec::RoundRobinSubset { active, standby_order }) => Some((active, standby_order)),
                    _ => None,
                };
                let active = match (&self.active, running) {
                    (Some(names), _) => resolve_all(PARAM_ACTIVE, names, paths)?,
                    (None, Some((active, _))) => distinct(paths, active.iter().copied()),
                    (None, None) => Vec::new(),
                };
                if active.is_empty() {
                    return Err(PolicyError::EmptyActiveSet);
                }
                let standby_order = standby_order(paths, &active, running.map(|(_, order)| order.as_slice()));
                Ok(PolicySpec::RoundRobinSubset { active, standby_order })
            }
            PolicyKind::Weighted => {
                let n = paths.slots();
                let weights = match (&self.weights, current) {
                    (Some(given), _) => {
                        let names: Vec<String> = given.iter().map(|(name, _)| name.clone()).collect();
                        let ids = resolve_all(PARAM_WEIGHTS, &names, paths)?;
                        let missing: Vec<&str> =
                            live(paths).filter(|id| !ids.contains(id)).filter_map(|id| paths.name(id)).collect();
                        if !missing.is_empty() {
                            return Err(PolicyError::PathCountMismatch {
                                param: PARAM_WEIGHTS,
                                given: ids.len(),
                                expected: ids.len() + missing.len(),
                                missing: missing.join(", "),
                            });
                        }
                        // Holes (removed paths) weigh nothing anyone reads.
                        let mut weights = vec![u32::MAX; n];
                        for (&id, (_, w)) in ids.iter().zip(given) {
                            if let Some(slot) = weights.get_mut(id) {
                                *slot = *w;
                            }
                        }
                        weights
                    }
                    (None, Some(PolicySpec::Weighted { weights })) => {
                        let mut weights = weights.clone();
                        weights.resize(n, u32::MAX);
                        weights
                    }
                    (None, _) => vec![1; n],
                };
                Ok(PolicySpec::Weighted { weights })
            }
            PolicyKind::LeastQueueDepth => Ok(PolicySpec::LeastQueueDepth),
            PolicyKind::LeastBlocks => Ok(PolicySpec::LeastBlocks),
            PolicyKind::ServiceTime => Ok(PolicySpec::ServiceTime),
        }
    }

    /// Refuses a parameter that `kind` does not take, saying which policy takes it.
    fn refuse_foreign(&self, kind: PolicyKind) -> Result<(), PolicyError> {
        let given = [
            (self.primary.is_some(), PARAM_PRIMARY, PolicyKind::FailOverOnly),
            (self.switch.is_some(), PARAM_SWITCH, PolicyKind::RoundRobin),
            (self.active.is_some(), PARAM_ACTIVE, PolicyKind::RoundRobinSubset),
            (self.weights.is_some(), PARAM_WEIGHTS, PolicyKind::Weighted),
        ];
        match given.into_iter().find(|&(present, _, takes)| present && takes != kind) {
            Some((_, param, takes)) => Err(PolicyError::ParameterNotTaken { param, policy: kind, takes }),
            None => Ok(()),
        }
    }
}

/// The standby order: the running one (`current`) without the `excluded` paths,
/// followed by the live paths it lacks in table order.
fn standby_order<T: PathTable + ?Sized>(paths: &T, excluded: &[PathId], current: Option<&[PathId]>) -> Vec<PathId> {
    let all = current.unwrap_or_default().iter().copied().chain(live(paths));
    distinct(paths, all.filter(|id| !excluded.contains(id)))
}

/// The live ids among `ids`, each once, in their first order.
fn distinct<T: PathTable + ?Sized>(paths: &T, ids: impl Iterator<Item = PathId>) -> Vec<PathId> {
    let mut out: Vec<PathId> = Vec::new();
    for id in ids {
        if is_live(paths, id) && !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// The id of the live path called `name`: its name, else a decimal path id.
pub(crate) fn resolve<T: PathTable + ?Sized>(
    param: &'static str,
    name: &str,
    paths: &T,
) -> Result<PathId, PolicyError> {
    let t = name.trim();
    live(paths)
        .find(|&id| paths.name(id) == Some(t))
        .or_else(|| t.parse::<PathId>().ok().filter(|&id| is_live(paths, id)))
        .ok_or_else(|| PolicyError::InvalidPath { param, name: name.to_owned(), known: known(paths) })
}

/// The ids of `names`, in order; refuses unknown names, then names given twice.
fn resolve_all<T: PathTable + ?Sized>(
    param: &'static str,
    names: &[String],
    paths: &T,
) -> Result<Vec<PathId>, PolicyError> {
    let mut ids = Vec::with_capacity(names.len());
    for name in names {
        let id = resolve(param, name, paths)?;
        if ids.contains(&id) {
            return Err(PolicyError::DuplicatePath { param, name: name.clone() });
        }
        ids.push(id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("p{i}")).collect()
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn req(policy: &str) -> PolicyRequest {
        PolicyRequest { policy: policy.to_owned(), ..PolicyRequest::default() }
    }

    fn weights(v: &[(&str, u32)]) -> PolicyRequest {
        PolicyRequest { weights: Some(v.iter().map(|(n, w)| (n.to_string(), *w)).collect()), ..req("weighted") }
    }

    fn primary(v: &[&str]) -> PolicyRequest {
        PolicyRequest { primary: Some(strs(v)), ..req("fail-over-only") }
    }

    fn active(v: &[&str]) -> PolicyRequest {
        PolicyRequest { active: Some(strs(v)), ..req("round-robin-subset") }
    }

    /// Seed acceptance A10 and the rest: every refusal with its code and symbol, and
    /// a message that names the problem and the fix.
    #[test]
    fn refusals_carry_seed_codes() {
        let fo = PolicySpec::FailOverOnly { primary: 1, standby_order: vec![0, 2] };
        // (request, running policy, code, symbol, words the message must contain)
        type Row<'a> = (PolicyRequest, Option<&'a PolicySpec>, u32, &'static str, &'static [&'static str]);
        let table: Vec<Row<'_>> = vec![
            (req("bogus"), None, 0xEFFF_0055, "ISDSC_INVALID_LOAD_BALANCE_POLICY", &["bogus", "least-queue-depth"]),
            (req(""), None, 0xEFFF_0055, "ISDSC_INVALID_LOAD_BALANCE_POLICY", &["use one of"]),
            (
                weights(&[("p1", 1), ("p1", 2), ("p3", 3)]),
                None,
                0xEFFF_0057,
                "ISDSC_DUPLICATE_PATH_SPECIFIED",
                &["p1", "--weights"],
            ),
            (
                weights(&[("p1", 1), ("0", 2), ("p3", 3)]),
                None,
                0xEFFF_0057,
                "ISDSC_DUPLICATE_PATH_SPECIFIED",
                &["\"0\""],
            ),
            (active(&["p2", "p2"]), None, 0xEFFF_0057, "ISDSC_DUPLICATE_PATH_SPECIFIED", &["--active"]),
            (primary(&["p2", "p2"]), None, 0xEFFF_0057, "ISDSC_DUPLICATE_PATH_SPECIFIED", &["--primary"]),
            (
                weights(&[("p1", 1), ("p3", 3)]),
                None,
                0xEFFF_0058,
                "ISDSC_PATH_COUNT_MISMATCH",
                &["2 of", "3", "missing: p2"],
            ),
            (weights(&[]), None, 0xEFFF_0058, "ISDSC_PATH_COUNT_MISMATCH", &["missing: p1, p2, p3"]),
            (
                weights(&[("p1", 1), ("p2", 2), ("p9", 3)]),
                None,
                0xEFFF_0059,
                "ISDSC_INVALID_PATH_ID",
                &["p9", "p1, p2, p3"],
            ),
            (weights(&[("p1", 1), ("p2", 2), ("3", 3)]), None, 0xEFFF_0059, "ISDSC_INVALID_PATH_ID", &["\"3\""]),
            (active(&["p1", "nope"]), None, 0xEFFF_0059, "ISDSC_INVALID_PATH_ID", &["nope"]),
            (primary(&["x"]), None, 0xEFFF_0059, "ISDSC_INVALID_PATH_ID", &["x"]),
            (
                primary(&["p1", "p2"]),
                None,
                0xEFFF_005A,
                "ISDSC_MULTIPLE_PRIMARY_PATHS_SPECIFIED",
                &["2 given", "p1, p2", "--primary"],
            ),
            (req("fail-over-only"), None, 0xEFFF_005B, "ISDSC_NO_PRIMARY_PATH_SPECIFIED", &["--primary <path>"]),
            (primary(&[]), Some(&fo), 0xEFFF_005B, "ISDSC_NO_PRIMARY_PATH_SPECIFIED", &["--primary"]),
            (
                req("fail-over-only"),
                Some(&PolicySpec::RoundRobin { switch: SwitchEvery::Ios(1) }),
                0xEFFF_005B,
                "ISDSC_NO_PRIMARY_PATH_SPECIFIED",
                &["needs a primary"],
            ),
            (req("round-robin-subset"), None, 0xEFFF_005B, "ISDSC_NO_PRIMARY_PATH_SPECIFIED", &["--active"]),
            (active(&[]), None, 0xEFFF_005B, "ISDSC_NO_PRIMARY_PATH_SPECIFIED", &["at least one active"]),
            (
                PolicyRequest { switch: Some(SwitchEvery::Ios(0)), ..req("round-robin") },
                None,
                0xEFFF_0056,
                "ISDSC_INVALID_PARAMETER",
                &["--switch", "at least 1"],
            ),
            (
                PolicyRequest { switch: Some(SwitchEvery::Bytes(0)), ..req("round-robin") },
                None,
                0xEFFF_0056,
                "ISDSC_INVALID_PARAMETER",
                &["0bytes"],
            ),
            (
                PolicyRequest { weights: Some(vec![("p1".into(), 1)]), ..req("round-robin") },
                None,
                0xEFFF_0056,
                "ISDSC_INVALID_PARAMETER",
                &["--weights is not a parameter of round-robin", "use weighted, which takes it"],
            ),
            (
                PolicyRequest { switch: Some(SwitchEvery::Ios(4)), ..req("round-robin-subset") },
                None,
                0xEFFF_0056,
                "ISDSC_INVALID_PARAMETER",
                &["--switch", "use round-robin, which takes it"],
            ),
            (
                PolicyRequest { active: Some(strs(&["p1"])), ..req("least-queue-depth") },
                None,
                0xEFFF_0056,
                "ISDSC_INVALID_PARAMETER",
                &["--active", "least-queue-depth", "round-robin-subset"],
            ),
            (
                PolicyRequest { primary: Some(strs(&["p1"])), ..req("weighted") },
                None,
                0xEFFF_0056,
                "ISDSC_INVALID_PARAMETER",
                &["--primary", "fail-over-only"],
            ),
        ];
        let names = names(3);
        for (r, current, code, symbol, words) in table {
            let e = r.validate(&names, current).expect_err(&format!("{r:?} must be refused"));
            assert_eq!((e.code(), e.symbol()), (code, symbol), "{r:?}: {e}");
            let msg = e.to_string();
            for w in words {
                assert!(msg.contains(w), "{r:?}: {msg:?} lacks {w:?}");
            }
        }
    }

    #[test]
    fn accepted_requests_and_defaults() {
        let names = names(3);
        let fo = PolicySpec::FailOverOnly { primary: 1, standby_order: vec![2, 0] };
        let rr4 = PolicySpec::RoundRobin { switch: SwitchEvery::Ios(4) };
        let sub = PolicySpec::RoundRobinSubset { active: vec![2], standby_order: vec![0, 1] };
        let w = PolicySpec::Weighted { weights: vec![5, 6] };
        let table: Vec<(PolicyRequest, Option<&PolicySpec>, PolicySpec)> = vec![
            (primary(&["p2"]), None, PolicySpec::FailOverOnly { primary: 1, standby_order: vec![0, 2] }),
            // A new primary: the running standby order without it, the old primary last.
            (primary(&[" p3 "]), Some(&fo), PolicySpec::FailOverOnly { primary: 2, standby_order: vec![0, 1] }),
            (primary(&["p1"]), Some(&fo), PolicySpec::FailOverOnly { primary: 0, standby_order: vec![2, 1] }),
            (primary(&["p2"]), Some(&fo), fo.clone()),
            (primary(&["0"]), None, PolicySpec::FailOverOnly { primary: 0, standby_order: vec![1, 2] }),
            // Keeps the running primary and its configured standby order.
            (req("fail-over-only"), Some(&fo), fo.clone()),
            (req("Round-Robin"), None, PolicySpec::RoundRobin { switch: SwitchEvery::Ios(1) }),
            (req("round-robin"), Some(&rr4), rr4.clone()),
            (req("round-robin"), Some(&fo), PolicySpec::RoundRobin { switch: SwitchEvery::Ios(1) }),
            (
                PolicyRequest { switch: Some(SwitchEvery::Bytes(1 << 20)), ..req("round-robin") },
                Some(&rr4),
                PolicySpec::RoundRobin { switch: SwitchEvery::Bytes(1 << 20) },
            ),
            (active(&["p2", "p1"]), None, PolicySpec::RoundRobinSubset { active: vec![1, 0], standby_order: vec![2] }),
            (
                active(&["p1", "p2", "p3"]),
                None,
                PolicySpec::RoundRobinSubset { active: vec![0, 1, 2], standby_order: vec![] },
            ),
            (req("round-robin-subset"), Some(&sub), sub.clone()),
            (active(&["p2"]), Some(&sub), PolicySpec::RoundRobinSubset { active: vec![1], standby_order: vec![0, 2] }),
            (
                active(&["p2", "p3"]),
                Some(&sub),
                PolicySpec::RoundRobinSubset { active: vec![1, 2], standby_order: vec![0] },
            ),
            (weights(&[("p3", 30), ("p1", 10), ("p2", 20)]), None, PolicySpec::Weighted { weights: vec![10, 20, 30] }),
            (
                weights(&[("p1", 0), ("p2", 0), ("p3", u32::MAX)]),
                Some(&w),
                PolicySpec::Weighted { weights: vec![0, 0, u32::MAX] },
            ),
            (req("weighted"), None, PolicySpec::Weighted { weights: vec![1, 1, 1] }),
            (req("weighted"), Some(&w), PolicySpec::Weighted { weights: vec![5, 6, u32::MAX] }),
            (req("least-queue-depth"), Some(&w), PolicySpec::LeastQueueDepth),
            (req("least-blocks"), None, PolicySpec::LeastBlocks),
            (req("service-time"), None, PolicySpec::ServiceTime),
        ];
        for (r, current, want) in table {
            let got = r.validate(&names, current).unwrap_or_else(|e| panic!("{r:?}: {e}"));
            assert_eq!(got, want, "{r:?}");
            assert_eq!(got.check(&names), Ok(()), "{got:?}");
        }
    }

    /// A name wins over an id: a path called "2" is that path, not path id 2.
    #[test]
    fn names_before_ids() {
        let names = strs(&["a", "2", "b"]);
        assert_eq!(
            primary(&["2"]).validate(&names, None),
            Ok(PolicySpec::FailOverOnly { primary: 1, standby_order: vec![0, 2] })
        );
        assert_eq!(
            primary(&["0"]).validate(&names, None),
            Ok(PolicySpec::FailOverOnly { primary: 0, standby_order: vec![1, 2] })
        );
    }

    /// Persisting by names: every valid spec survives `to_request` + `validate`.
    #[test]
    fn to_request_round_trips() {
        let names = names(4);
        for spec in [
            PolicySpec::FailOverOnly { primary: 2, standby_order: vec![0, 1, 3] },
            PolicySpec::RoundRobin { switch: SwitchEvery::Bytes(65536) },
            PolicySpec::RoundRobinSubset { active: vec![3, 1], standby_order: vec![0, 2] },
            PolicySpec::Weighted { weights: vec![4, 3, 2, 1] },
            PolicySpec::LeastQueueDepth,
            PolicySpec::LeastBlocks,
            PolicySpec::ServiceTime,
        ] {
            assert_eq!(spec.to_request(&names).validate(&names, Some(&spec)), Ok(spec.clone()));
        }
    }
}
