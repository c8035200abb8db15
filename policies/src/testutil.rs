//! Test helpers: path states written as strings, step tables.

use crate::{PathId, PathView, Policy, PolicySpec, Request};

/// Seed-style path names: P1 is path id 0.
pub(crate) const P1: PathId = 0;
pub(crate) const P2: PathId = 1;
pub(crate) const P3: PathId = 2;
pub(crate) const P4: PathId = 3;

/// One view per character: `R` ready, `H` ready but failback held, `-` not ready
/// (failed, connecting, disabled). Blanks are ignored. Idle, figures unknown.
pub(crate) fn views(s: &str) -> Vec<PathView> {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .enumerate()
        .map(|(id, c)| PathView {
            id,
            ready: matches!(c, 'R' | 'H'),
            failback_held: c == 'H',
            in_flight: 0,
            bytes_in_flight: 0,
            latency_ns: 0,
            bytes_per_sec: 0,
        })
        .collect()
}

/// A 4 KiB read.
pub(crate) const READ: Request = Request { bytes: 4096, write: false };

/// A step of a table: the path states, the path `select` must return, and the
/// paths `active` must report (checked before the request is placed).
pub(crate) type Step = (&'static str, Option<PathId>, &'static [PathId]);

/// Runs a step table against a fresh instance of `spec`. Each step also checks the
/// rules every policy keeps: the chosen path is ready and is one of the active paths.
pub(crate) fn run(spec: &PolicySpec, steps: &[Step]) {
    let mut p = spec.build();
    run_on(&mut *p, steps);
}

/// Runs a step table against an existing instance.
pub(crate) fn run_on(p: &mut dyn Policy, steps: &[Step]) {
    for (i, (state, pick, active)) in steps.iter().enumerate() {
        let v = views(state);
        assert_eq!(p.active(&v), *active, "step {i} ({state}): active");
        let got = p.select(&v, &READ);
        assert_eq!(got, *pick, "step {i} ({state}): select");
        if let Some(id) = got {
            assert!(v[id].ready && active.contains(&id), "step {i} ({state}): {id} not ready/active");
        }
    }
}

/// How many of `n` requests each path gets when the views do not change.
pub(crate) fn spread(p: &mut dyn Policy, v: &[PathView], req: &Request, n: usize) -> Vec<usize> {
    let mut counts = vec![0; v.len()];
    for _ in 0..n {
        let id = p.select(v, req).expect("a ready path");
        counts[id] += 1;
    }
    counts
}

/// Four ready, idle paths with the same figures.
pub(crate) fn equal4() -> Vec<PathView> {
    views("RRRR").into_iter().map(|p| PathView { latency_ns: 500_000, bytes_per_sec: 100 << 20, ..p }).collect()
}
