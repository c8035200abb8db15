//! Per-path counters and latency histogram, for `mpio path list` and the
//! Prometheus metrics.

use std::collections::BTreeMap;
use std::time::Duration;

/// The kinds of request the device serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// READ.
    Read,
    /// WRITE (with or without FUA).
    Write,
    /// SYNCHRONIZE CACHE.
    Flush,
    /// UNMAP.
    Discard,
    /// WRITE SAME.
    WriteZeroes,
    /// Anything else (probes, pass-through).
    Other,
}

impl Op {
    /// Every op, for metrics that must list them all.
    pub const ALL: [Op; 6] = [Op::Read, Op::Write, Op::Flush, Op::Discard, Op::WriteZeroes, Op::Other];

    /// Label value.
    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
            Op::Discard => "discard",
            Op::WriteZeroes => "write_zeroes",
            Op::Other => "other",
        }
    }

    /// Changes the medium: a copy of it still queued on a dead path could
    /// overwrite newer data, so its re-drive waits for the fence.
    pub fn modifies_data(self) -> bool {
        matches!(self, Op::Write | Op::Discard | Op::WriteZeroes | Op::Other)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds of the latency buckets, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    10_000_000,
];

/// Counters of one path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathStats {
    /// Completed requests by op.
    pub requests: [u64; 6],
    /// Bytes of completed requests by op.
    pub bytes: [u64; 6],
    /// Latency histogram: counts per bucket of [`LATENCY_BUCKETS_US`], the
    /// last entry counts what is above them.
    pub latency_buckets: [u64; 17],
    /// Sum of latencies, microseconds.
    pub latency_sum_us: u64,
    /// Failures by cause.
    pub failures: BTreeMap<&'static str, u64>,
    /// Requests that failed here and went to another path.
    pub redriven: u64,
    /// Transient-condition retries.
    pub retries: u64,
    /// Requests that ended here with an error for the caller, without
    /// failover: the LU's own answer (RESERVATION CONFLICT, medium error,
    /// write protected, ...) or a transient condition still there after
    /// the last retry.
    pub errors: u64,
    /// Login attempts that failed (connect or login refused), each retry
    /// counted; the path's failures by cause count incidents instead.
    pub login_failures: u64,
    /// Login attempts in a row that failed with the same reason as the
    /// last one reported (1 for a new reason, 0 once logged in).
    pub login_refusals_in_a_row: u32,
}

impl PathStats {
    pub(crate) fn record(&mut self, op: Op, bytes: u64, latency: Duration) {
        let i = op.index();
        if let (Some(r), Some(b)) = (self.requests.get_mut(i), self.bytes.get_mut(i)) {
            *r += 1;
            *b += bytes;
        }
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        let bucket = LATENCY_BUCKETS_US.iter().position(|b| us <= *b).unwrap_or(LATENCY_BUCKETS_US.len());
        if let Some(c) = self.latency_buckets.get_mut(bucket) {
            *c += 1;
        }
        self.latency_sum_us += us;
    }

    /// Requests of one op.
    pub fn requests_of(&self, op: Op) -> u64 {
        self.requests.get(op.index()).copied().unwrap_or(0)
    }

    /// Bytes of one op.
    pub fn bytes_of(&self, op: Op) -> u64 {
        self.bytes.get(op.index()).copied().unwrap_or(0)
    }

    /// All completed requests.
    pub fn total_requests(&self) -> u64 {
        self.requests.iter().sum()
    }
}
