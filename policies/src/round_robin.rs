//! `round-robin` (Microsoft's "Round Robin").
//!
//! "All paths are active paths and they will be used for sending I/O in a round robin
//! fashion." Every ready path takes turns, held ones too: there is no preferred path
//! whose I/O a held path could take back. The turn moves to the next ready path in
//! table order after [`SwitchEvery`] I/Os or bytes on the current one (the seed gives no
//! granularity; default every I/O), or at once when the current path is not ready.

use crate::{PathId, PathView, Policy, PolicyKind, PolicySpec, Request, SwitchEvery, cyclic, ready_ids, view};

#[derive(Debug)]
pub(crate) struct RoundRobin {
    spec: PolicySpec,
    switch: SwitchEvery,
    /// The path whose turn it is.
    current: Option<PathId>,
    /// I/Os or bytes placed on `current` in this turn.
    used: u64,
}

impl RoundRobin {
    pub(crate) fn new(spec: PolicySpec) -> Self {
        let switch = match &spec {
            PolicySpec::RoundRobin { switch } => *switch,
            _ => SwitchEvery::default(),
        };
        RoundRobin { spec, switch, current: None, used: 0 }
    }
}

impl Policy for RoundRobin {
    fn kind(&self) -> PolicyKind {
        PolicyKind::RoundRobin
    }

    fn select(&mut self, paths: &[PathView], req: &Request) -> Option<PathId> {
        let (limit, amount) = match self.switch {
            SwitchEvery::Ios(n) => (u64::from(n.max(1)), 1),
            SwitchEvery::Bytes(n) => (n.max(1), req.bytes),
        };
        if let Some(c) = self.current
            && self.used < limit
            && view(paths, c).is_some_and(|p| p.ready)
        {
            self.used = self.used.saturating_add(amount);
            return Some(c);
        }
        // Next ready path after the current one, in table order.
        let start = match self.current {
            Some(c) => paths.iter().position(|p| p.id == c).map_or(0, |pos| pos.wrapping_add(1)),
            None => 0,
        };
        let (_, next) = cyclic(paths, start).find(|(_, p)| p.ready)?;
        self.current = Some(next.id);
        self.used = amount;
        Some(next.id)
    }

    fn active(&self, paths: &[PathView]) -> Vec<PathId> {
        ready_ids(paths)
    }

    fn respec(&mut self, spec: &PolicySpec) -> bool {
        let PolicySpec::RoundRobin { switch } = spec else { return false };
        self.switch = *switch;
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

    fn rr(switch: SwitchEvery) -> PolicySpec {
        PolicySpec::RoundRobin { switch }
    }

    const ALL4: &[PathId] = &[P1, P2, P3, P4];

    /// Seed acceptance A1-A3 at policy level: all paths in turn, a failed one leaves the
    /// rotation, a returning one (held or not) rejoins it.
    #[test]
    fn every_ready_path_in_turn() {
        run(
            &rr(SwitchEvery::Ios(1)),
            &[
                ("RRRR", Some(P1), ALL4),
                ("RRRR", Some(P2), ALL4),
                ("RRRR", Some(P3), ALL4),
                ("RRRR", Some(P4), ALL4),
                ("RRRR", Some(P1), ALL4),
                ("R-RR", Some(P3), &[P1, P3, P4]),
                ("R-RR", Some(P4), &[P1, P3, P4]),
                ("R-RR", Some(P1), &[P1, P3, P4]),
                ("RHRR", Some(P2), ALL4),
                ("RHRR", Some(P3), ALL4),
                ("----", None, &[]),
                ("---R", Some(P4), &[P4]),
                ("---R", Some(P4), &[P4]),
                ("R--R", Some(P1), &[P1, P4]),
            ],
        );
    }

    #[test]
    fn switch_every_n_ios() {
        let mut p = rr(SwitchEvery::Ios(3)).build();
        let v = views("RRR");
        let picks: Vec<_> = (0..10).map(|_| p.select(&v, &READ).unwrap()).collect();
        assert_eq!(picks, [P1, P1, P1, P2, P2, P2, P3, P3, P3, P1]);
        // The current path fails mid-turn: move on at once, with a fresh count.
        let v = views("-RR");
        let picks: Vec<_> = (0..4).map(|_| p.select(&v, &READ).unwrap()).collect();
        assert_eq!(picks, [P2, P2, P2, P3]);
    }

    #[test]
    fn switch_every_n_bytes() {
        let mut p = rr(SwitchEvery::Bytes(8192)).build();
        let v = views("RR");
        let sizes = [4096, 4096, 4096, 1 << 20, 512, 0, 8192, 4096];
        let picks: Vec<_> = sizes.iter().map(|&bytes| p.select(&v, &Request { bytes, write: true }).unwrap()).collect();
        // 8 KiB per turn; a large request is not split; zero-byte commands do not count.
        assert_eq!(picks, [P1, P1, P2, P2, P1, P1, P1, P2]);
    }

    /// 1000 requests over 4 equal paths: exactly 250 each.
    #[test]
    fn exact_split() {
        let mut p = rr(SwitchEvery::Ios(1)).build();
        assert_eq!(spread(&mut *p, &views("RRRR"), &READ, 1000), [250; 4]);
        let mut p = rr(SwitchEvery::Ios(10)).build();
        assert_eq!(spread(&mut *p, &views("RRRR"), &READ, 1000), [250; 4]);
        let mut p = rr(SwitchEvery::Bytes(64 << 10)).build();
        assert_eq!(spread(&mut *p, &views("RRRR"), &READ, 1024), [256; 4]);
    }

    /// An unchecked zero threshold acts as 1.
    #[test]
    fn zero_switch_is_one() {
        let mut p = rr(SwitchEvery::Ios(0)).build();
        assert_eq!(spread(&mut *p, &views("RR"), &READ, 10), [5, 5]);
        let mut p = rr(SwitchEvery::Bytes(0)).build();
        assert_eq!(spread(&mut *p, &views("RR"), &READ, 10), [5, 5]);
    }
}
