//! `weighted` (Microsoft's "Weighted Path").
//!
//! "Each path is assigned a weight and I/O will be sent on the path with the lowest
//! weight. If the path with the lowest weight fails then the path with the next lowest
//! weight will be used." The seed says nothing of ties or of failback; ours:
//! - All I/O goes to the usable (ready, not held) path with the lowest weight. A path
//!   with a lower weight that comes back takes the I/O again (failback), unless the
//!   core holds it (manual or delayed failback).
//! - Paths with the same lowest weight share the I/O in round robin, every I/O, so
//!   equal weights mean "balance over these" rather than "fail over in id order" (for
//!   an explicit order, give distinct weights).
//! - Held paths are used only when no unheld path is ready; then the same rules apply
//!   among them.
//! - A path without a weight (added after the policy was set) weighs `u32::MAX`.
//! - "Active" (digest 1.2, open point 7) = the paths sharing the lowest weight.

use crate::{PathId, PathView, Policy, PolicyKind, PolicySpec, Request, Rotor};

#[derive(Debug)]
pub(crate) struct Weighted {
    spec: PolicySpec,
    weights: Vec<u32>,
    rotor: Rotor,
}

impl Weighted {
    pub(crate) fn new(spec: PolicySpec) -> Self {
        let weights = match &spec {
            PolicySpec::Weighted { weights } => weights.clone(),
            _ => Vec::new(),
        };
        Weighted { spec, weights, rotor: Rotor::default() }
    }

    fn weight(&self, p: &PathView) -> u32 {
        self.weights.get(p.id).copied().unwrap_or(u32::MAX)
    }
}

/// The paths that may be chosen: the usable ones, or the held ones if none is usable.
fn eligible(paths: &[PathView]) -> impl Fn(&PathView) -> bool {
    let any_usable = paths.iter().any(PathView::usable);
    move |p: &PathView| if any_usable { p.usable() } else { p.ready }
}

impl Policy for Weighted {
    fn kind(&self) -> PolicyKind {
        PolicyKind::Weighted
    }

    fn select(&mut self, paths: &[PathView], _req: &Request) -> Option<PathId> {
        let weights = &self.weights;
        let key = |p: &PathView| weights.get(p.id).copied().unwrap_or(u32::MAX);
        self.rotor.pick(paths, eligible(paths), key)
    }

    fn active(&self, paths: &[PathView]) -> Vec<PathId> {
        Rotor::all_min(paths, eligible(paths), |p| self.weight(p))
    }

    fn respec(&mut self, spec: &PolicySpec) -> bool {
        let PolicySpec::Weighted { weights } = spec else { return false };
        self.weights = weights.clone();
        self.spec = spec.clone();
        true
    }

    fn spec(&self) -> &PolicySpec {
        &self.spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn weighted(w: &[u32]) -> PolicySpec {
        PolicySpec::Weighted { weights: w.to_vec() }
    }

    /// Seed acceptance A7: P1=10, P2=20, P3=30.
    #[test]
    fn a7_lowest_weight_wins() {
        run(
            &weighted(&[10, 20, 30]),
            &[
                ("RRR", Some(P1), &[P1]),
                ("RRR", Some(P1), &[P1]),
                ("-RR", Some(P2), &[P2]),
                ("--R", Some(P3), &[P3]),
                // Restore P1: back to P1 (default failback immediate).
                ("R-R", Some(P1), &[P1]),
                ("RRR", Some(P1), &[P1]),
                ("---", None, &[]),
            ],
        );
    }

    #[test]
    fn held_path_waits_for_failback() {
        run(
            &weighted(&[10, 20, 30]),
            &[
                ("-RR", Some(P2), &[P2]),
                // P1 back, held: P2 keeps the I/O.
                ("HRR", Some(P2), &[P2]),
                ("H-R", Some(P3), &[P3]),
                // Only held paths ready: the lowest weight among them.
                ("H-H", Some(P1), &[P1]),
                ("--H", Some(P3), &[P3]),
                ("RRR", Some(P1), &[P1]),
            ],
        );
    }

    /// Equal lowest weights share the I/O in round robin (A7's "documented tie-break").
    #[test]
    fn equal_weights_round_robin() {
        run(
            &weighted(&[5, 1, 1, 5]),
            &[
                ("RRRR", Some(P2), &[P2, P3]),
                ("RRRR", Some(P3), &[P2, P3]),
                ("RRRR", Some(P2), &[P2, P3]),
                ("R-RR", Some(P3), &[P3]),
                ("R--R", Some(P4), &[P1, P4]),
                ("R--R", Some(P1), &[P1, P4]),
                ("R--R", Some(P4), &[P1, P4]),
            ],
        );
        let mut p = weighted(&[7, 7, 7, 7]).build();
        assert_eq!(spread(&mut *p, &views("RRRR"), &READ, 1000), [250; 4]);
    }

    /// Paths without a weight come last.
    #[test]
    fn unweighted_paths_last() {
        run(&weighted(&[3, 2]), &[("RRR", Some(P2), &[P2]), ("--R", Some(P3), &[P3]), ("R-R", Some(P1), &[P1])]);
    }
}
