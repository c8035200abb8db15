//! `fail-over-only` (Microsoft's "Fail Over Only").
//!
//! "No load balancing is performed. There is a single active path and the rest of the
//! paths are standby paths. The active path is used for sending all I/O. If the active
//! path fails then one of the standby paths is used. When the formally active path is
//! reconnected it will become active and the standby path that was activated would
//! return to standby." Microsoft's boot initiator does not fail back;
//! here that is the core's failback setting, seen as [`PathView::failback_held`].
//!
//! Rules (ours where the seed says "one of"):
//! 1. The primary carries all I/O when it is ready and not held.
//! 2. Otherwise the path that carries I/O now (the "current" one) keeps it while it is
//!    ready: no re-election when another standby comes back, nor when the primary comes
//!    back held (manual failback: the admin moves I/O back by clearing the hold).
//! 3. Otherwise (current failed, or none yet) exactly one path is elected: the first
//!    ready one of the primary (it is held if we get here), then the standbys in
//!    `standby_order`, then any path the spec does not name, in table order.

use crate::{PathId, PathView, Policy, PolicyKind, PolicySpec, Request, is_ready, is_usable};

#[derive(Debug)]
pub(crate) struct FailOverOnly {
    spec: PolicySpec,
    primary: PathId,
    order: Vec<PathId>,
    /// The path that carries I/O now (rule 2).
    current: Option<PathId>,
}

impl FailOverOnly {
    pub(crate) fn new(spec: PolicySpec) -> Self {
        let (primary, order) = match &spec {
            PolicySpec::FailOverOnly { primary, standby_order } => (*primary, standby_order.clone()),
            _ => (0, Vec::new()),
        };
        FailOverOnly { spec, primary, order, current: None }
    }

    /// The one path that carries I/O for these views (rules 1-3).
    fn decide(&self, paths: &[PathView]) -> Option<PathId> {
        if is_usable(paths, self.primary) {
            return Some(self.primary);
        }
        if let Some(c) = self.current.filter(|&c| is_ready(paths, c)) {
            return Some(c);
        }
        std::iter::once(self.primary)
            .chain(self.order.iter().copied())
            .find(|&id| is_ready(paths, id))
            .or_else(|| paths.iter().find(|p| p.ready).map(|p| p.id))
    }
}

impl Policy for FailOverOnly {
    fn kind(&self) -> PolicyKind {
        PolicyKind::FailOverOnly
    }

    fn select(&mut self, paths: &[PathView], _req: &Request) -> Option<PathId> {
        let id = self.decide(paths)?;
        self.current = Some(id);
        Some(id)
    }

    fn active(&self, paths: &[PathView]) -> Vec<PathId> {
        self.decide(paths).into_iter().collect()
    }

    fn respec(&mut self, spec: &PolicySpec) -> bool {
        let PolicySpec::FailOverOnly { primary, standby_order } = spec else { return false };
        self.primary = *primary;
        self.order = standby_order.clone();
        self.spec = spec.clone();
        true
    }

    fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    fn on_paths_changed(&mut self, paths: &[PathView]) {
        // With no path ready, keep the last one: it is sticky again if it is the first back.
        if let Some(id) = self.decide(paths) {
            self.current = Some(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn fo(primary: PathId, standby_order: &[PathId]) -> PolicySpec {
        PolicySpec::FailOverOnly { primary, standby_order: standby_order.to_vec() }
    }

    /// Seed acceptance A4 (failback immediate: the core never holds P1).
    #[test]
    fn a4_failback_immediate() {
        run(
            &fo(P1, &[P2, P3]),
            &[
                ("RRR", Some(P1), &[P1]),
                ("RRR", Some(P1), &[P1]),
                // Fail P1: exactly one standby, the first in order; P3 stays standby.
                ("-RR", Some(P2), &[P2]),
                ("-RR", Some(P2), &[P2]),
                // Restore P1: P1 active again, P2 back to standby.
                ("RRR", Some(P1), &[P1]),
            ],
        );
    }

    /// Seed acceptance A5 (failback manual: the returning primary is held).
    #[test]
    fn a5_failback_manual() {
        run(
            &fo(P1, &[P2, P3]),
            &[
                ("RRR", Some(P1), &[P1]),
                ("-RR", Some(P2), &[P2]),
                // P1 restored but held: P1 is Standby, P2 keeps the I/O.
                ("HRR", Some(P2), &[P2]),
                ("HRR", Some(P2), &[P2]),
                // `path set-primary P1` / `policy failback-now`: the core clears the hold.
                ("RRR", Some(P1), &[P1]),
                ("RRR", Some(P1), &[P1]),
            ],
        );
    }

    #[test]
    fn standby_is_sticky() {
        run(
            &fo(P1, &[P2, P3, P4]),
            &[
                ("RRRR", Some(P1), &[P1]),
                ("--RR", Some(P3), &[P3]),
                // P2 comes back (even unheld): no re-election, P3 keeps the I/O.
                ("-RRR", Some(P3), &[P3]),
                // P3 fails: the first ready in order.
                ("-R-R", Some(P2), &[P2]),
                ("-RRR", Some(P2), &[P2]),
                // Held primary while its standby works: the standby keeps the I/O.
                ("HRRR", Some(P2), &[P2]),
                // The standby fails: the held primary comes first (nothing carries I/O).
                ("H-RR", Some(P1), &[P1]),
                // And keeps it when P2 returns, even while still held.
                ("HRRR", Some(P1), &[P1]),
                ("RRRR", Some(P1), &[P1]),
            ],
        );
    }

    #[test]
    fn configured_order_and_unnamed_paths() {
        run(
            &fo(P2, &[P4, P1]),
            &[
                ("RRRR", Some(P2), &[P2]),
                ("R-RR", Some(P4), &[P4]),
                ("R-R-", Some(P1), &[P1]),
                // P3 is named nowhere (added after the policy was set): used last.
                ("--R-", Some(P3), &[P3]),
                ("----", None, &[]),
                // Back from all-down: the first to return is elected; the primary, unheld, wins.
                ("---R", Some(P4), &[P4]),
                ("-R-R", Some(P2), &[P2]),
            ],
        );
    }

    #[test]
    fn held_standbys_are_still_standbys() {
        run(
            &fo(P1, &[P2, P3]),
            &[("-HR", Some(P2), &[P2]), ("-HR", Some(P2), &[P2]), ("--H", Some(P3), &[P3]), ("-RH", Some(P3), &[P3])],
        );
    }

    /// An idle device: nothing is placed while P1 fails and returns held; the core calls
    /// `on_paths_changed` on each change, so P2 stays the one that took over.
    #[test]
    fn idle_takeover_is_committed() {
        let mut p = fo(P1, &[P2, P3]).build();
        assert_eq!(p.select(&views("RRR"), &READ), Some(P1));
        p.on_paths_changed(&views("-RR"));
        assert_eq!(p.active(&views("-RR")), vec![P2]);
        p.on_paths_changed(&views("HRR"));
        assert_eq!(p.active(&views("HRR")), vec![P2]);
        assert_eq!(p.select(&views("HRR"), &READ), Some(P2));
    }
}
