//! The data path: choosing a path for a request, the all-paths-down hold,
//! and what a completion means (done, retry, fail, re-drive behind a
//! fence).

use std::time::{Duration, Instant};

use mpio_policies::{PathView, Request};

use super::{Completion, DeviceCore, Fence, Selection, Ticket, Verdict};
use crate::block::{Errno, IoError, IoErrorKind};
use crate::event::EventKind;
use crate::stats::Op;
use crate::timers::HoldMode;

/// EWMA weight of a new sample: 1/8.
/// How long latency and throughput figures of an idle path stay valid.
const FIGURES_TTL: Duration = Duration::from_secs(1);

fn ewma(old: u64, new: u64) -> u64 {
    if old == 0 { new } else { old - old / 8 + new / 8 }
}

impl DeviceCore {
    // ---- data path -------------------------------------------------------

    pub(super) fn build_views(&self) -> Vec<PathView> {
        self.paths.iter().enumerate().filter(|(_, p)| !p.removed).map(|(id, p)| p.view(id)).collect()
    }

    /// Refreshes the reused view buffer. Figures of a path that has been
    /// idle for [`FIGURES_TTL`] are forgotten: a path measured slow once
    /// (a burst, a busy moment of the target) is not avoided forever by
    /// the policies that use figures, it is tried again and re-measured.
    pub(super) fn refresh_views(&mut self, now: Instant) {
        self.views.clear();
        for (id, p) in self.paths.iter_mut().enumerate().filter(|(_, p)| !p.removed) {
            if p.load.in_flight == 0
                && p.load.figures_at.is_some_and(|t| now.saturating_duration_since(t) > FIGURES_TTL)
            {
                p.load.latency_ns = 0;
                p.load.bytes_per_sec = 0;
                p.load.figures_at = None;
            }
            self.views.push(p.view(id));
        }
    }

    /// Chooses a path for a request of `bytes` (`write`: it modifies data).
    /// A write waits ([`Selection::Fence`]) while any path's predecessor,
    /// the nexus a previous daemon may have left with that path's ISID, is
    /// not fenced: a write it had sent could still land after this one.
    pub fn select(&mut self, now: Instant, op: Op, bytes: u64) -> Selection {
        if self.closing {
            return Selection::Fail(Self::closed());
        }
        if op.modifies_data()
            && let Some(f) = self.unfenced_predecessor()
        {
            return Selection::Fence(f);
        }
        self.refresh_views(now);
        let req = Request { bytes, write: op.modifies_data() };
        if let Some(id) = self.policy.select(&self.views, &req)
            && let Some(p) = self.paths.get_mut(id)
            && p.usable()
        {
            p.load.in_flight += 1;
            p.load.bytes_in_flight += bytes;
            let epoch = p.fence.epoch;
            return Selection::Path(Ticket { path: id, epoch, op, bytes });
        }
        match self.hold(now) {
            Ok(until) => Selection::Hold(until),
            Err(e) => Selection::Fail(e),
        }
    }

    /// What a request that finds no usable path does now, per the hold
    /// mode: wait, until the instant if the hold has a limit (`Ok`), or
    /// fail. Also what a request does before any path was claimed, when the
    /// device cannot even split it into commands yet.
    pub fn hold(&mut self, now: Instant) -> Result<Option<Instant>, IoError> {
        if self.closing {
            return Err(Self::closed());
        }
        self.note_all_down(now);
        match self.timers.hold {
            HoldMode::Fail => Err(self.no_path("no usable path and the hold mode is fail")),
            HoldMode::Queue => Ok(None),
            HoldMode::For(d) => {
                let deadline = self.all_down_since.unwrap_or(now) + d;
                if now >= deadline {
                    self.expire_hold(now);
                    Err(self.no_path(&format!("no usable path for {:?} (the hold time)", d)))
                } else {
                    Ok(Some(deadline))
                }
            }
        }
    }

    /// The device shuts down ([`crate::Device::shutdown`]): requests not
    /// yet on a path, and every later one, fail with ESHUTDOWN; those on a
    /// path complete.
    pub fn close(&mut self) {
        self.closing = true;
    }

    /// Whether [`DeviceCore::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Commands in flight on every path.
    pub fn in_flight_total(&self) -> u64 {
        self.paths.iter().map(|p| u64::from(p.load.in_flight)).sum()
    }

    pub(super) fn closed() -> IoError {
        IoError { kind: IoErrorKind::Closed, errno: Errno::Shutdown, message: "the device is shutting down".into() }
    }

    pub(super) fn no_path(&mut self, why: &str) -> IoError {
        self.counters.hold_failures += 1;
        IoError { kind: IoErrorKind::NoPath, errno: Errno::Io, message: why.to_string() }
    }

    pub(super) fn note_all_down(&mut self, now: Instant) {
        if self.all_down_since.is_none() {
            self.all_down_since = Some(now);
            self.hold_expired = false;
            self.rearm_hold();
            let how = match self.timers.hold {
                HoldMode::For(d) => format!("I/O is held up to {d:?}"),
                HoldMode::Queue => "I/O is held until a path returns".into(),
                HoldMode::Fail => "I/O fails until a path returns".into(),
            };
            self.event(now, None, EventKind::HoldStarted, format!("no usable path: {how}"), None);
        }
    }

    pub(super) fn expire_hold(&mut self, now: Instant) {
        if !self.hold_expired {
            self.hold_expired = true;
            self.rearm_hold();
            self.counters.hold_expirations += 1;
            self.event(now, None, EventKind::HoldExpired, "hold time passed with no path: I/O fails with EIO", None);
        }
    }

    /// Reports how a request sent with `ticket` ended.
    pub fn complete(
        &mut self,
        now: Instant,
        ticket: Ticket,
        latency: Duration,
        completion: Completion,
        attempt: u32,
    ) -> Verdict {
        let Ticket { op, bytes, .. } = ticket;
        let Some(p) = self.paths.get_mut(ticket.path) else { return Verdict::Redrive { fence: None } };
        p.load.in_flight = p.load.in_flight.saturating_sub(1);
        p.load.bytes_in_flight = p.load.bytes_in_flight.saturating_sub(bytes);
        match completion {
            Completion::Success => {
                let ns = latency.as_nanos().min(u128::from(u64::MAX)) as u64;
                p.load.latency_ns = ewma(p.load.latency_ns, ns);
                p.load.figures_at = Some(now);
                if ns > 0 && bytes > 0 {
                    p.load.bytes_per_sec =
                        ewma(p.load.bytes_per_sec, (u128::from(bytes) * 1_000_000_000 / u128::from(ns)) as u64);
                }
                p.stats.record(op, bytes, latency);
                Verdict::Done
            }
            Completion::PathFailure { cause, may_still_execute } => {
                p.stats.redriven += 1;
                if p.fence.epoch == ticket.epoch {
                    // The first news of this failure: fail the path now.
                    // The session may still be up (an abort confirmed, a
                    // path-level sense): then probation starts at once.
                    let session_up = p.session_up;
                    self.fail_path(now, ticket.path, cause, !session_up);
                }
                let fence = (may_still_execute && op.modifies_data())
                    .then_some(Fence { path: ticket.path, epoch: ticket.epoch + 1 })
                    .filter(|f| !self.fence_cleared(*f));
                Verdict::Redrive { fence }
            }
            Completion::Retry { immediate, why } => {
                p.stats.retries += 1;
                if attempt >= self.timers.retry_count {
                    p.stats.errors += 1;
                    return Verdict::Fail(IoError {
                        kind: IoErrorKind::RetriesExhausted,
                        errno: Errno::Io,
                        message: format!("{why}: still failing after {} retries", self.timers.retry_count),
                    });
                }
                Verdict::Retry(if immediate { Duration::ZERO } else { self.timers.retry_interval })
            }
            Completion::Fatal { errno, why } => {
                p.stats.errors += 1;
                Verdict::Fail(IoError { kind: IoErrorKind::Device, errno, message: why })
            }
        }
    }
}
