//! A device's events as they happen (`mpio events --follow`), awaited
//! instead of slept for: a fault's effect is the event it causes.

use mpio_testbed::daemon::GUEST_MPIO;
use mpio_testbed::vm::{Awaited, Background};

use super::*;

/// `mpio events --follow` of one device, from the moment it was made.
pub(crate) struct Events {
    feed: Background<'static>,
    /// Lines of the feed already matched or before its start.
    seen: usize,
}

impl Events {
    /// Follows `device`'s events. Returns once the daemon has sent the
    /// history (the last past event): the feed is subscribed then, so no
    /// later event is missed.
    pub(crate) fn follow(d: &GuestDaemon<'static>, device: &str) -> Events {
        let feed = feed(d, device, 1);
        let got = feed.wait_output(Duration::from_secs(60), |out, _| out.lines().count() >= 1).unwrap();
        assert_eq!(got, Awaited::Matched, "mpio events --follow {device}: {:?}", feed.output());
        Events { feed, seen: 1 }
    }

    /// Follows `device`'s events from the daemon's start: its whole
    /// history first, so an event that came before this call is still
    /// seen (a restarted daemon's first events).
    pub(crate) fn since_start(d: &GuestDaemon<'static>, device: &str) -> Events {
        Events { feed: feed(d, device, 100_000), seen: 0 }
    }

    /// Waits up to `within` for the next event `kind` (of path `path`, if
    /// given) after the last one awaited, and returns its line.
    pub(crate) fn wait(&mut self, kind: &str, path: Option<&str>, within: Duration) -> String {
        // time device path kind reason...
        let is = |l: &str| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(3) == Some(&kind) && path.is_none_or(|p| f.get(2) == Some(&p))
        };
        let seen = self.seen;
        let found = |out: &str| out.lines().enumerate().skip(seen).find(|(_, l)| is(l)).map(|(i, l)| (i, l.to_owned()));
        let got = self.feed.wait_output(within, |out, _| found(out).is_some()).unwrap();
        let (out, _) = self.feed.output();
        match (got, found(&out)) {
            (Awaited::Matched, Some((i, line))) => {
                self.seen = i + 1;
                line
            }
            _ => panic!("no event {kind} (path {path:?}) within {within:?} ({got:?}); the events so far:\n{out}"),
        }
    }
}

/// `mpio events --follow --last LAST --device DEVICE`, running.
fn feed(d: &GuestDaemon<'static>, device: &str, last: usize) -> Background<'static> {
    let (socket, last) = (d.socket(), last.to_string());
    let argv = [GUEST_MPIO, "--socket", &socket, "events", "--follow", "--last", &last, "--device", device];
    d.command(argv).timeout(Duration::from_secs(3600)).spawn().unwrap()
}
