//! Load-balance policies for mpio multipath devices.
//!
//! Policies are pure: given a snapshot of the paths of a device (state, queue
//! depth, bytes in flight, latency, throughput) and a request, they choose a
//! path. They hold no clocks and do no I/O, so every rule of the Microsoft
//! iSCSI initiator's load balance policies (fail over only, round robin, round
//! robin with subset, weighted path, least queue depth) is a table-driven unit test next to the code.
//!
//! # Shape
//!
//! Modelled on quinn's pluggable congestion control: [`PolicySpec`] holds the
//! validated parameters (the "config"), [`PolicySpec::build`] makes one
//! [`Policy`] instance per device (the "factory"), and the instance keeps the
//! little state the rules need (a round-robin cursor, the sticky standby).
//! [`PolicyRequest::validate`] turns what a user typed (policy name, path
//! names) into a [`PolicySpec`] or a [`PolicyError`] carrying the Microsoft
//! iSCSI initiator's status code (`ISDSC_*`) of the same meaning.
//!
//! Paths come and go at runtime: [`PolicySpec::with_path`] gives an added path
//! the least preferred role, [`PolicySpec::without_path`] drops a removed one
//! (refusing the last path and the policy's only preferred path), and
//! [`PolicySpec::with_role`] turns `mpio path set-active|set-standby|set-weight`
//! into new parameters. Path ids stay stable, so a removed path leaves a hole in
//! the [`PathTable`] that validation skips. [`Policy::respec`] hands the new
//! parameters to the running instance without losing its cursors or sticky
//! standby.
//!
//! # The policies
//!
//! | CLI name | Model | Carries I/O ("Active") |
//! |---|---|---|
//! | `fail-over-only` | Microsoft "Fail Over Only" | the primary, or exactly one standby |
//! | `round-robin` | Microsoft "Round Robin" | every ready path, in turn |
//! | `round-robin-subset` | Microsoft "Round Robin with a subset of paths" | the configured active set, or one promoted standby |
//! | `weighted` | Microsoft "Weighted Path" | the usable path(s) with the lowest weight |
//! | `least-queue-depth` | Microsoft "Least Queue Depth" (MCS there; MPIO too here) | every ready path; fewest commands in flight wins |
//! | `least-blocks` | Windows MSDSM "Least Blocks" | every ready path; fewest bytes in flight wins |
//! | `service-time` | dm-multipath service-time, VMware latency | every ready path; smallest expected completion time wins |
//!
//! Common rules, proven by property tests: `select` never returns a path whose
//! view is not `ready`; it returns `Some` whenever some path is ready; the path
//! it returns is one of [`Policy::active`] for the same views; `active` is a
//! subset of the ready paths and is empty only when no path is ready.
//!
//! # Failback hold
//!
//! [`PathView::failback_held`] marks a path that came back from a failure
//! while failback is not allowed yet (manual, or delayed and the delay runs;
//! the Microsoft boot initiator does not fail back). Policies
//! with a preference (fail-over-only, round-robin-subset, weighted) do not let
//! such a path take I/O from a path that carries it; when nothing else is
//! ready they use it rather than hold the request. Policies without a
//! preference (round-robin, least-queue-depth, least-blocks, service-time)
//! treat a held path like any ready path: there is no preferred path to
//! protect, so nothing is "taken back". A core that wants a returning path
//! kept out of those policies for a while keeps it `ready == false` (probation).
//!
//! # State the core must know about
//!
//! `select` mutates per-device state: the round-robin cursors (and, for
//! `round-robin`, the I/O or byte count on the current path) and, for
//! fail-over-only and round-robin-subset, the sticky standby. `active` never
//! mutates. The sticky standby is committed by `select` and by
//! [`Policy::on_paths_changed`], which the core should call after every path
//! state change (before `active`), so that an idle device remembers which
//! standby took over.
//!
//! `select` does not allocate; it scans the views a few times (O(paths)): about
//! 10 ns per call with 4 paths, 45 ns for service-time (release build, this machine).
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

mod error;
mod fail_over;
mod least;
mod round_robin;
mod spec;
mod subset;
mod table;
mod validate;
mod weighted;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

pub use error::PolicyError;
pub use spec::{PathRole, PolicyKind, PolicySpec, SwitchEvery};
pub use table::PathTable;
pub use validate::PolicyRequest;

/// Index of a path in the device's path table, stable while the device lives: a path
/// removed at runtime leaves a hole and its id is not reused ([`PathTable`]).
pub type PathId = usize;

/// What the core tells the policy about one path, per call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathView {
    /// The path's index in the path table.
    pub id: PathId,
    /// Passed bring-up and probation, not failed or disabled: may carry I/O.
    pub ready: bool,
    /// Back from a failure, but failback is not allowed yet (failback = manual, or delayed
    /// and the delay runs): the path may carry I/O only where the policy has no
    /// preferred path; it must not take I/O back from a path that carries it now.
    pub failback_held: bool,
    /// SCSI commands in flight on the path (queue depth).
    pub in_flight: u32,
    /// Bytes of those commands.
    pub bytes_in_flight: u64,
    /// Smoothed completion latency in nanoseconds (0 = unknown yet).
    pub latency_ns: u64,
    /// Smoothed throughput in bytes per second (0 = unknown yet).
    pub bytes_per_sec: u64,
}

impl PathView {
    /// Ready and not held back from failback: may carry I/O under every policy.
    pub fn usable(&self) -> bool {
        self.ready && !self.failback_held
    }
}

/// The request being placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Bytes the request moves (0 for commands without data).
    pub bytes: u64,
    /// The request modifies data. No policy uses it yet; it is there so that one can
    /// (e.g. to keep writes on one path) without an interface change.
    pub write: bool,
}

/// A policy instance (one per device). `select` is called for every request; paths are
/// given in path-table order; it returns a path whose view has `ready == true`, or None
/// when no path is ready (the core then holds the request).
///
/// Paths are looked up by [`PathView::id`]; `paths[i].id == i` is the fast case but
/// not required. Paths the spec does not name (added after the policy was set) are
/// used last: standbys after the configured ones, the highest weight.
pub trait Policy: Send + std::fmt::Debug {
    /// Which policy this is.
    fn kind(&self) -> PolicyKind;
    /// The path for this request: a ready path, or None when no path is ready.
    /// Mutates the round-robin cursors and the sticky standby.
    fn select(&mut self, paths: &[PathView], req: &Request) -> Option<PathId>;
    /// The ready paths that carry I/O under this policy right now ("Active" in
    /// `mpio path list`); the other ready paths are "Standby". Must not change state.
    /// The path `select` would return for the same views is always in it.
    fn active(&self, paths: &[PathView]) -> Vec<PathId>;
    /// The parameters as given (for `mpio policy show` and the metrics' policy info).
    fn spec(&self) -> &PolicySpec;
    /// Path states changed (a failure, a return, a hold cleared): commit the choice
    /// `active` reports without placing a request, so a standby that took over on an
    /// idle device stays sticky. Call it before `active` after each change; calling it
    /// more often is harmless. Does not move round-robin cursors. Default: nothing.
    fn on_paths_changed(&mut self, paths: &[PathView]) {
        let _ = paths;
    }
    /// Takes new parameters of the same policy (a path added or removed, a path's role
    /// or weight changed) and keeps the cursors and the sticky standby, so such a
    /// change moves no I/O that the new parameters do not move. Returns false, and
    /// changes nothing, when `spec` is another policy: build a new instance then.
    fn respec(&mut self, spec: &PolicySpec) -> bool;
}

/// The view of path `id`: `paths[id]` when the table is in order, else a search.
fn view(paths: &[PathView], id: PathId) -> Option<&PathView> {
    match paths.get(id) {
        Some(p) if p.id == id => Some(p),
        _ => paths.iter().find(|p| p.id == id),
    }
}

/// Path `id` is ready.
fn is_ready(paths: &[PathView], id: PathId) -> bool {
    view(paths, id).is_some_and(|p| p.ready)
}

/// Path `id` is ready and not held.
fn is_usable(paths: &[PathView], id: PathId) -> bool {
    view(paths, id).is_some_and(PathView::usable)
}

/// The paths in cyclic order starting at position `start` (modulo the length).
fn cyclic(paths: &[PathView], start: usize) -> impl Iterator<Item = (usize, &PathView)> {
    let s = start.checked_rem(paths.len()).unwrap_or(0);
    paths.iter().enumerate().skip(s).chain(paths.iter().enumerate().take(s))
}

/// Round robin among the paths that minimise a key: remembers where to start the
/// next scan, so equal paths take turns instead of the lowest id always winning.
#[derive(Clone, Copy, Debug, Default)]
struct Rotor {
    /// Position in the path slice where the next scan starts.
    next: usize,
}

impl Rotor {
    /// The first path at or after the cursor (cyclically) that is `eligible` and has the
    /// minimum `key` among the eligible ones; advances the cursor past it.
    fn pick<K: Ord + Copy>(
        &mut self,
        paths: &[PathView],
        eligible: impl Fn(&PathView) -> bool,
        key: impl Fn(&PathView) -> K,
    ) -> Option<PathId> {
        let min = paths.iter().filter(|p| eligible(p)).map(&key).min()?;
        let (pos, p) = cyclic(paths, self.next).find(|(_, p)| eligible(p) && key(p) == min)?;
        self.next = pos.wrapping_add(1);
        Some(p.id)
    }

    /// All eligible paths with the minimum key, in table order (for `active`).
    fn all_min<K: Ord + Copy>(
        paths: &[PathView],
        eligible: impl Fn(&PathView) -> bool,
        key: impl Fn(&PathView) -> K,
    ) -> Vec<PathId> {
        let Some(min) = paths.iter().filter(|p| eligible(p)).map(&key).min() else {
            return Vec::new();
        };
        paths.iter().filter(|p| eligible(p) && key(p) == min).map(|p| p.id).collect()
    }
}

/// The ready paths, in table order.
fn ready_ids(paths: &[PathView]) -> Vec<PathId> {
    paths.iter().filter(|p| p.ready).map(|p| p.id).collect()
}
