//! `round-robin-subset` (Microsoft's "Round Robin with a subset of paths"; for MCS its Active/Standby connections).
//!
//! "A set of paths are configured as active and a set of paths are configured as
//! standby. I/O is sent in a round robin fashion over the active paths. If all of the
//! active paths fail then one of the standby paths is used. If any of the formerly
//! active paths become available again then the formerly active paths are used and the
//! standby path that was activated becomes a standby path again."
//!
//! Rules (ours where the seed says "one of"):
//! 1. Round robin, every I/O, over the usable (ready, not held) paths of the active set,
//!    in the configured active order. Any promoted path goes back to standby at once.
//! 2. When no active path is usable, exactly one path carries I/O (the "promoted" one):
//!    the promoted path keeps it while it is ready (sticky; so with manual failback a
//!    held active path does not take I/O back from it).
//! 3. When the promoted path fails (or none is promoted yet), the first ready one of:
//!    the held active paths in active order (like fail-over-only's held primary: nothing
//!    carries I/O, and they are the preferred paths), then the standbys in
//!    `standby_order`, then any path the spec does not name, in table order.

use crate::{PathId, PathView, Policy, PolicyKind, PolicySpec, Request, is_ready, is_usable};

#[derive(Debug)]
pub(crate) struct RoundRobinSubset {
    spec: PolicySpec,
    set: Vec<PathId>,
    order: Vec<PathId>,
    /// Position in `set` where the next round-robin scan starts.
    next: usize,
    /// The path carrying I/O while no active path is usable (rule 2).
    promoted: Option<PathId>,
}

/// Who carries I/O for some views.
enum Carrier {
    /// The usable active paths, in turn.
    ActiveSet,
    /// This one path.
    One(PathId),
    /// No path is ready.
    Nobody,
}

impl RoundRobinSubset {
    pub(crate) fn new(spec: PolicySpec) -> Self {
        let (set, order) = match &spec {
            PolicySpec::RoundRobinSubset { active, standby_order } => (active.clone(), standby_order.clone()),
            _ => (Vec::new(), Vec::new()),
        };
        RoundRobinSubset { spec, set, order, next: 0, promoted: None }
    }

    fn decide(&self, paths: &[PathView]) -> Carrier {
        if self.set.iter().any(|&id| is_usable(paths, id)) {
            return Carrier::ActiveSet;
        }
        if let Some(p) = self.promoted.filter(|&p| is_ready(paths, p)) {
            return Carrier::One(p);
        }
        self.set
            .iter()
            .chain(&self.order)
            .copied()
            .find(|&id| is_ready(paths, id))
            .or_else(|| paths.iter().find(|p| p.ready).map(|p| p.id))
            .map_or(Carrier::Nobody, Carrier::One)
    }
}

impl Policy for RoundRobinSubset {
    fn kind(&self) -> PolicyKind {
        PolicyKind::RoundRobinSubset
    }

    fn select(&mut self, paths: &[PathView], _req: &Request) -> Option<PathId> {
        match self.decide(paths) {
            Carrier::ActiveSet => {
                self.promoted = None;
                let len = self.set.len();
                let s = self.next.checked_rem(len).unwrap_or(0);
                let set = self.set.iter().enumerate();
                let (pos, &id) = set.clone().skip(s).chain(set.take(s)).find(|&(_, &id)| is_usable(paths, id))?;
                self.next = pos.wrapping_add(1);
                Some(id)
            }
            Carrier::One(id) => {
                self.promoted = Some(id);
                Some(id)
            }
            Carrier::Nobody => None,
        }
    }

    fn active(&self, paths: &[PathView]) -> Vec<PathId> {
        match self.decide(paths) {
            Carrier::ActiveSet => {
                let mut ids: Vec<PathId> = self.set.iter().copied().filter(|&id| is_usable(paths, id)).collect();
                ids.sort_unstable();
                ids.dedup();
                ids
            }
            Carrier::One(id) => vec![id],
            Carrier::Nobody => Vec::new(),
        }
    }

    fn respec(&mut self, spec: &PolicySpec) -> bool {
        let PolicySpec::RoundRobinSubset { active, standby_order } = spec else { return false };
        self.set = active.clone();
        self.order = standby_order.clone();
        self.spec = spec.clone();
        true
    }

    fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    fn on_paths_changed(&mut self, paths: &[PathView]) {
        match self.decide(paths) {
            Carrier::ActiveSet => self.promoted = None,
            Carrier::One(id) => self.promoted = Some(id),
            Carrier::Nobody => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn subset(active: &[PathId], standby_order: &[PathId]) -> PolicySpec {
        PolicySpec::RoundRobinSubset { active: active.to_vec(), standby_order: standby_order.to_vec() }
    }

    /// Seed acceptance A6: P1, P2 active, P3, P4 standby.
    #[test]
    fn a6_subset() {
        run(
            &subset(&[P1, P2], &[P3, P4]),
            &[
                // I/O alternates between P1 and P2 only.
                ("RRRR", Some(P1), &[P1, P2]),
                ("RRRR", Some(P2), &[P1, P2]),
                ("RRRR", Some(P1), &[P1, P2]),
                ("RRRR", Some(P2), &[P1, P2]),
                // Fail P1: only P2.
                ("-RRR", Some(P2), &[P2]),
                ("-RRR", Some(P2), &[P2]),
                // Fail P2: exactly one standby, P3.
                ("--RR", Some(P3), &[P3]),
                ("--RR", Some(P3), &[P3]),
                // Fail P3: P4.
                ("---R", Some(P4), &[P4]),
                // P3 returns: P4 keeps the I/O (one standby at a time, sticky).
                ("--RR", Some(P4), &[P4]),
                // Restore P1: I/O on P1, the promoted standby returns to standby.
                ("R-RR", Some(P1), &[P1]),
                ("R-RR", Some(P1), &[P1]),
                ("RRRR", Some(P2), &[P1, P2]),
                ("RRRR", Some(P1), &[P1, P2]),
                // The set fails again: promotion starts over from the first standby.
                ("--RR", Some(P3), &[P3]),
            ],
        );
    }

    /// A6 with manual failback: a returning active path is held and does not take the
    /// I/O back from the promoted standby until the hold is cleared.
    #[test]
    fn a6_failback_manual() {
        run(
            &subset(&[P1, P2], &[P3, P4]),
            &[
                ("RRRR", Some(P1), &[P1, P2]),
                ("--RR", Some(P3), &[P3]),
                ("H-RR", Some(P3), &[P3]),
                ("HHRR", Some(P3), &[P3]),
                // The promoted standby fails: the held active paths come first.
                ("HH-R", Some(P1), &[P1]),
                ("HHRR", Some(P1), &[P1]),
                // Hold cleared on P2 only: the set is usable again (P2 alone).
                ("HRRR", Some(P2), &[P2]),
                ("HRRR", Some(P2), &[P2]),
                ("RRRR", Some(P1), &[P1, P2]),
            ],
        );
    }

    #[test]
    fn rotation_follows_the_configured_active_order() {
        run(
            &subset(&[P3, P1, P2], &[P4]),
            &[
                ("RRRR", Some(P3), &[P1, P2, P3]),
                ("RRRR", Some(P1), &[P1, P2, P3]),
                ("RRRR", Some(P2), &[P1, P2, P3]),
                ("RRRR", Some(P3), &[P1, P2, P3]),
                ("RR-R", Some(P1), &[P1, P2]),
                ("RR-R", Some(P2), &[P1, P2]),
                ("RR-R", Some(P1), &[P1, P2]),
                ("---R", Some(P4), &[P4]),
                ("----", None, &[]),
            ],
        );
    }

    #[test]
    fn held_standby_is_promoted_in_order() {
        run(&subset(&[P1], &[P2, P3]), &[("-HR", Some(P2), &[P2]), ("-RR", Some(P2), &[P2]), ("R-R", Some(P1), &[P1])]);
    }

    #[test]
    fn idle_promotion_is_committed() {
        let mut p = subset(&[P1, P2], &[P3, P4]).build();
        p.on_paths_changed(&views("--R-"));
        p.on_paths_changed(&views("--RR"));
        assert_eq!(p.active(&views("--RR")), vec![P3]);
        p.on_paths_changed(&views("---R"));
        p.on_paths_changed(&views("--RR"));
        assert_eq!(p.active(&views("--RR")), vec![P4]);
        assert_eq!(p.select(&views("--RR"), &READ), Some(P4));
    }

    /// 1000 requests over a 2-path active set: exactly 500 each, none on the standbys.
    #[test]
    fn exact_split_over_the_set() {
        let mut p = subset(&[P1, P2], &[P3, P4]).build();
        assert_eq!(spread(&mut *p, &views("RRRR"), &READ, 1000), [500, 500, 0, 0]);
    }
}
