//! The daemon's event journal: the last events of every device for
//! `mpio events`, a live feed for `mpio events --follow`, and a log line
//! for each (journald keeps them across restarts).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::control::proto::EventView;

/// How many events `mpio events` can show.
const KEEP: usize = 2000;

/// Recent events and their subscribers.
pub(crate) struct Journal {
    recent: Mutex<VecDeque<EventView>>,
    feed: broadcast::Sender<EventView>,
}

impl Journal {
    pub(crate) fn new() -> Journal {
        Journal { recent: Mutex::new(VecDeque::with_capacity(KEEP)), feed: broadcast::channel(1024).0 }
    }

    /// Records an event, logs it and tells the followers.
    pub(crate) fn record(
        &self,
        at: SystemTime,
        device: &str,
        path: Option<&str>,
        kind: &str,
        reason: &str,
        seed_event: Option<u32>,
    ) {
        let ev = EventView {
            time: humantime::format_rfc3339_millis(at).to_string(),
            device: device.to_owned(),
            path: path.map(str::to_owned),
            kind: kind.to_owned(),
            reason: reason.to_owned(),
            seed_event,
        };
        if is_trouble(kind) {
            warn!(device, path, kind, seed_event, "{reason}");
        } else {
            info!(device, path, kind, seed_event, "{reason}");
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == KEEP {
            recent.pop_front();
        }
        recent.push_back(ev.clone());
        // Sent under the lock, so a follower that subscribed under it sees
        // every event exactly once: in the history or in the feed.
        let _ = self.feed.send(ev);
    }

    /// The last `last` events (of `device`, if given), oldest first, and a
    /// subscription to the ones after them.
    pub(crate) fn history(
        &self,
        device: Option<&str>,
        last: usize,
    ) -> (Vec<EventView>, broadcast::Receiver<EventView>) {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<EventView> =
            recent.iter().rev().filter(|e| device.is_none_or(|d| e.device == d)).take(last).cloned().collect();
        out.reverse();
        (out, self.feed.subscribe())
    }
}

/// Events an operator must look at.
fn is_trouble(kind: &str) -> bool {
    matches!(
        kind,
        "path_failed"
            | "failover"
            | "hold_started"
            | "hold_expired"
            | "claim_refused"
            | "login_failed"
            | "login_refused_repeatedly"
            | "probation_probe_failed"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_bounded_and_filtered_and_the_feed_continues_it() {
        let j = Journal::new();
        for i in 0..KEEP + 5 {
            j.record(
                SystemTime::UNIX_EPOCH,
                if i % 2 == 0 { "a" } else { "b" },
                None,
                "path_ready",
                &i.to_string(),
                None,
            );
        }
        let (all, _) = j.history(None, usize::MAX);
        assert_eq!(all.len(), KEEP);
        assert_eq!(all.last().unwrap().reason, (KEEP + 4).to_string());
        let (b, mut feed) = j.history(Some("b"), 3);
        assert_eq!(b.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(), ["1999", "2001", "2003"]);
        assert_eq!(b[0].time, "1970-01-01T00:00:00.000Z");
        j.record(SystemTime::UNIX_EPOCH, "b", Some("p1"), "path_failed", "gone", Some(20));
        assert_eq!(feed.try_recv().unwrap().path.as_deref(), Some("p1"));
    }
}
