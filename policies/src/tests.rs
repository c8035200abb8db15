//! Properties every policy keeps, for arbitrary (even unchecked) specs, path views and
//! request sequences; and validation properties.

use proptest::prelude::*;

use crate::{PathId, PathRole, PathView, PolicyKind, PolicyRequest, PolicySpec, Request, SwitchEvery};

const MAX_PATHS: usize = 6;

/// Figures with the edge values over-represented (0 = unknown, u64::MAX).
fn figure() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(u64::MAX), 1u64..10_000_000, any::<u64>()]
}

fn path_view(id: PathId) -> impl Strategy<Value = PathView> {
    (
        any::<bool>(),
        prop::bool::weighted(0.3),
        prop_oneof![Just(0u32), 0u32..8, any::<u32>()],
        figure(),
        figure(),
        figure(),
    )
        .prop_map(move |(ready, failback_held, in_flight, bytes_in_flight, latency_ns, bytes_per_sec)| PathView {
            id,
            ready,
            failback_held,
            in_flight,
            bytes_in_flight,
            latency_ns,
            bytes_per_sec,
        })
}

fn views(n: usize) -> impl Strategy<Value = Vec<PathView>> {
    (0..n).map(path_view).collect::<Vec<_>>()
}

/// Ids, some out of range, some repeated: specs are not always checked.
fn ids() -> impl Strategy<Value = Vec<PathId>> {
    prop::collection::vec(0..MAX_PATHS + 2, 0..MAX_PATHS + 2)
}

fn spec() -> impl Strategy<Value = PolicySpec> {
    prop_oneof![
        (0..MAX_PATHS + 2, ids())
            .prop_map(|(primary, standby_order)| PolicySpec::FailOverOnly { primary, standby_order }),
        prop_oneof![(0u32..4).prop_map(SwitchEvery::Ios), (0u64..20_000).prop_map(SwitchEvery::Bytes)]
            .prop_map(|switch| PolicySpec::RoundRobin { switch }),
        (ids(), ids()).prop_map(|(active, standby_order)| PolicySpec::RoundRobinSubset { active, standby_order }),
        prop::collection::vec(prop_oneof![0u32..4, Just(u32::MAX)], 0..MAX_PATHS + 2)
            .prop_map(|weights| PolicySpec::Weighted { weights }),
        Just(PolicySpec::LeastQueueDepth),
        Just(PolicySpec::LeastBlocks),
        Just(PolicySpec::ServiceTime),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Select(Request),
    Changed,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (prop_oneof![Just(0u64), 1u64..(1 << 20), any::<u64>()], any::<bool>())
            .prop_map(|(bytes, write)| Op::Select(Request { bytes, write })),
        1 => Just(Op::Changed),
    ]
}

/// A path count, then a sequence of (views, operation) with that many paths.
fn scenario() -> impl Strategy<Value = (PolicySpec, Vec<(Vec<PathView>, Op)>)> {
    (spec(), 0..=MAX_PATHS).prop_flat_map(|(spec, n)| (Just(spec), prop::collection::vec((views(n), op()), 1..40)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_policy_keeps_the_common_rules((spec, steps) in scenario()) {
        let mut p = spec.build();
        prop_assert_eq!(p.kind(), spec.kind());
        prop_assert_eq!(p.spec(), &spec);
        for (v, op) in steps {
            let any_ready = v.iter().any(|p| p.ready);
            let active = p.active(&v);
            // active() is a pure function of the state: asking again gives the same.
            prop_assert_eq!(&p.active(&v), &active);
            // active ⊆ ready, no duplicates, empty iff nothing is ready.
            for id in &active {
                prop_assert!(v[*id].ready, "active {} is not ready: {:?}", id, v);
            }
            let mut dedup = active.clone();
            dedup.sort_unstable();
            dedup.dedup();
            prop_assert_eq!(dedup.len(), active.len());
            prop_assert_eq!(active.is_empty(), !any_ready);
            match op {
                Op::Select(req) => {
                    let got = p.select(&v, &req);
                    // Some iff some path is ready; always a ready path, one of the active.
                    prop_assert_eq!(got.is_some(), any_ready);
                    if let Some(id) = got {
                        prop_assert!(v[id].ready);
                        prop_assert!(active.contains(&id), "{} not in active {:?}", id, active);
                    }
                    check_preference(&spec, &v, got)?;
                }
                Op::Changed => {
                    // Committing the choice does not change it.
                    p.on_paths_changed(&v);
                    prop_assert_eq!(p.active(&v), active);
                }
            }
        }
    }

    /// Validation never panics, and whatever it accepts is a consistent spec that
    /// persists by names (`to_request` + `validate` gives it back).
    #[test]
    fn validate_accepts_only_consistent_specs(
        n in 0..=MAX_PATHS,
        policy in prop_oneof![
            prop::sample::select(PolicyKind::ALL.to_vec()).prop_map(|k| k.name().to_owned()),
            "[a-z-]{0,20}",
        ],
        primary in prop::option::of(prop::collection::vec("p[0-7]|[0-7]|x", 0..3)),
        active in prop::option::of(prop::collection::vec("p[0-7]|[0-7]", 0..5)),
        weights in prop::option::of(prop::collection::vec(("p[0-7]|[0-7]", any::<u32>()), 0..8)),
        switch in prop::option::of(prop_oneof![(0u32..3).prop_map(SwitchEvery::Ios), (0u64..3).prop_map(SwitchEvery::Bytes)]),
        current in prop::option::of(spec()),
    ) {
        let names: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
        let req = PolicyRequest { policy, primary, active, weights, switch };
        match req.validate(&names, current.as_ref()) {
            Ok(spec) => {
                prop_assert_eq!(spec.check(&names), Ok(()));
                prop_assert_eq!(spec.to_request(&names).validate(&names, Some(&spec)), Ok(spec.clone()));
            }
            Err(e) => {
                prop_assert!((0xEFFF_0055..=0xEFFF_005B).contains(&e.code()));
                prop_assert!(e.symbol().starts_with("ISDSC_"));
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}

/// The preference rules of the policies that have a preferred path.
fn check_preference(spec: &PolicySpec, v: &[PathView], got: Option<PathId>) -> Result<(), TestCaseError> {
    let usable = |id: &PathId| v.get(*id).is_some_and(PathView::usable);
    match spec {
        PolicySpec::FailOverOnly { primary, .. } if usable(primary) => prop_assert_eq!(got, Some(*primary)),
        PolicySpec::RoundRobinSubset { active, .. } if active.iter().any(usable) => {
            prop_assert!(got.is_some_and(|id| active.contains(&id) && usable(&id)), "{:?} with {:?}", got, v);
        }
        PolicySpec::Weighted { weights } if v.iter().any(PathView::usable) => {
            let w = |id: PathId| weights.get(id).copied().unwrap_or(u32::MAX);
            let min = v.iter().filter(|p| p.usable()).map(|p| w(p.id)).min();
            prop_assert!(got.is_some_and(|id| usable(&id) && Some(w(id)) == min), "{:?} with {:?}", got, v);
        }
        _ => {}
    }
    Ok(())
}

/// FOO and subset: at most one path is active unless the subset's active set is usable.
#[test]
fn one_standby_at_a_time() {
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(&(spec(), views(4)), |(spec, v)| {
            let p = spec.build();
            let active = p.active(&v);
            match &spec {
                PolicySpec::FailOverOnly { .. } => prop_assert!(active.len() <= 1),
                PolicySpec::RoundRobinSubset { active: set, .. }
                    if !set.iter().any(|id| v.get(*id).is_some_and(PathView::usable)) =>
                {
                    prop_assert!(active.len() <= 1)
                }
                _ => {}
            }
            Ok(())
        })
        .unwrap();
}

/// A runtime change of the path table or of a role.
#[derive(Clone, Debug)]
enum Change {
    Add,
    Remove(PathId),
    Role(PathId, PathRole),
}

fn change() -> impl Strategy<Value = Change> {
    let id = 0..MAX_PATHS + 2;
    prop_oneof![
        Just(Change::Add),
        id.clone().prop_map(Change::Remove),
        (id, prop_oneof![Just(PathRole::Active), Just(PathRole::Standby), any::<u32>().prop_map(PathRole::Weight)])
            .prop_map(|(id, role)| Change::Role(id, role)),
    ]
}

proptest! {
    /// Starting from any valid spec, paths added, removed and given roles keep the spec
    /// consistent with the table (holes included); refusals carry seed codes and leave
    /// the spec as it was; the last path is never removed.
    #[test]
    fn runtime_changes_keep_specs_consistent(
        n in 1..=MAX_PATHS,
        kind in prop::sample::select(PolicyKind::ALL.to_vec()),
        changes in prop::collection::vec(change(), 1..20),
    ) {
        let mut table: Vec<Option<String>> = (0..n).map(|i| Some(format!("p{i}"))).collect();
        let mut spec = PolicySpec::RoundRobin { switch: SwitchEvery::Ios(1) };
        let first = table.first().cloned().flatten().unwrap_or_default();
        let req = PolicyRequest {
            policy: kind.name().to_owned(),
            primary: (kind == PolicyKind::FailOverOnly).then(|| vec![first.clone()]),
            active: (kind == PolicyKind::RoundRobinSubset).then(|| vec![first.clone()]),
            ..PolicyRequest::default()
        };
        spec = req.validate(&table, Some(&spec)).expect("a valid start");
        for c in changes {
            let before = spec.clone();
            let result = match c {
                Change::Add => {
                    table.push(Some(format!("p{}", table.len())));
                    Ok(spec.with_path(table.len() - 1))
                }
                Change::Remove(id) => spec.without_path(&table, id).inspect(|_| {
                    if let Some(slot) = table.get_mut(id) {
                        *slot = None;
                    }
                }),
                Change::Role(id, role) => spec.with_role(&table, id, role),
            };
            match result {
                Ok(s) => spec = s,
                Err(e) => {
                    prop_assert!(e.symbol().starts_with("ISDSC_"), "{e}");
                    prop_assert_eq!(&spec, &before);
                }
            }
            prop_assert_eq!(spec.check(&table), Ok(()), "{:?} with {:?}", spec, table);
            prop_assert!(table.iter().any(Option::is_some));
            prop_assert_eq!(spec.kind(), kind);
        }
    }
}
