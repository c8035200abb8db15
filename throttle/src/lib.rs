//! Throttles for a daemon under hostile or broken input, shared by every
//! listener of mpio (the NBD server, the control socket, `/metrics`):
//!
//! - [`LogLimit`] and [`warn_limited!`]: a log line that repeats (a
//!   malformed NBD client every millisecond, an accept that fails while the
//!   file descriptors are exhausted) is written a few times a second at
//!   most, and the next one written says how many were left out. Without
//!   it one local client filled the disk with about 1 GB of WARN lines in
//!   16 s.
//! - [`AcceptBackoff`]: an accept loop that runs out of file descriptors
//!   (or memory) waits, 10 ms doubling to 1 s, instead of retrying at once:
//!   `accept` fails again at once while nothing is freed, so a loop without
//!   a pause spins a core and starves the connections that could free them.
#![warn(missing_docs)]

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets at most `per_second` lines of one kind through each second.
///
/// One per call site, usually a `static`:
///
/// ```
/// use mpio_throttle::{LogLimit, warn_limited};
/// static MALFORMED: LogLimit = LogLimit::per_second(5);
/// # let peer = "unix";
/// warn_limited!(MALFORMED, peer, "closing the connection: bad magic");
/// ```
#[derive(Debug)]
pub struct LogLimit {
    per_second: u32,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Option<Instant>,
    written: u32,
    left_out: u64,
}

impl LogLimit {
    /// A limit of `per_second` lines (at least one).
    pub const fn per_second(per_second: u32) -> LogLimit {
        LogLimit {
            per_second: if per_second == 0 { 1 } else { per_second },
            state: Mutex::new(Window { started: None, written: 0, left_out: 0 }),
        }
    }

    /// Whether a line may be written now: `Some(n)` with the number of lines
    /// left out since the last one written, or `None` to leave this one out.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if w.started.is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1)) {
            w.started = Some(now);
            w.written = 0;
        }
        if w.written < self.per_second {
            w.written += 1;
            Some(std::mem::take(&mut w.left_out))
        } else {
            w.left_out += 1;
            None
        }
    }
}

/// `tracing::warn!` through a [`LogLimit`]: the same arguments after the
/// limit; a line written after some were left out carries
/// `left_out = N`.
#[macro_export]
macro_rules! warn_limited {
    ($limit:expr, $($arg:tt)+) => {
        if let Some(left_out) = $limit.allow() {
            if left_out > 0 {
                ::tracing::warn!(left_out, $($arg)+);
            } else {
                ::tracing::warn!($($arg)+);
            }
        }
    };
}

/// What an accept loop does after `accept` failed.
///
/// ```no_run
/// # async fn serve(listener: tokio::net::TcpListener) {
/// let mut backoff = mpio_throttle::AcceptBackoff::new("metrics");
/// loop {
///     match listener.accept().await {
///         Ok((stream, _)) => { backoff.accepted(); /* serve it */ }
///         Err(e) => backoff.failed(&e).await,
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct AcceptBackoff {
    what: &'static str,
    delay: Duration,
    log: LogLimit,
}

/// First pause after a failed accept.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// Longest pause: a freed descriptor is taken within a second.
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

impl AcceptBackoff {
    /// For the listener named `what` in its log lines.
    pub fn new(what: &'static str) -> AcceptBackoff {
        AcceptBackoff { what, delay: FIRST_PAUSE, log: LogLimit::per_second(1) }
    }

    /// A connection was accepted: the next failure pauses briefly again.
    pub fn accepted(&mut self) {
        self.delay = FIRST_PAUSE;
    }

    /// How long to wait after `e` before accepting again: nothing for a
    /// connection that failed before it was accepted (the next one is
    /// unaffected), else the current pause, which doubles up to 1 s.
    pub fn pause(&mut self, e: &io::Error) -> Duration {
        match e.kind() {
            io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted => {
                Duration::ZERO
            }
            // EMFILE, ENFILE, ENOBUFS, ENOMEM and whatever else: accepting
            // again at once fails the same way.
            _ => {
                let d = self.delay;
                self.delay = (self.delay * 2).min(LONGEST_PAUSE);
                d
            }
        }
    }

    /// Logs `e` (once a second at most) and waits [`AcceptBackoff::pause`].
    pub async fn failed(&mut self, e: &io::Error) {
        let pause = self.pause(e);
        let what = self.what;
        warn_limited!(
            self.log,
            "{what}: accept failed: {e}; accepting again in {pause:?} (out of file descriptors? raise LimitNOFILE)"
        );
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_lets_through_its_lines_per_second_and_counts_the_rest() {
        let l = LogLimit::per_second(3);
        let t0 = Instant::now();
        let got: Vec<Option<u64>> = (0..10).map(|_| l.allow_at(t0)).collect();
        assert_eq!(got, [Some(0), Some(0), Some(0), None, None, None, None, None, None, None]);
        // The next second's first line says how many were left out.
        assert_eq!(l.allow_at(t0 + Duration::from_millis(1000)), Some(7));
        assert_eq!(l.allow_at(t0 + Duration::from_millis(1001)), Some(0));
    }

    #[test]
    fn out_of_descriptors_backs_off_and_a_lost_connection_does_not() {
        let mut b = AcceptBackoff::new("test");
        let emfile = io::Error::from_raw_os_error(24);
        let pauses: Vec<Duration> = (0..9).map(|_| b.pause(&emfile)).collect();
        assert_eq!(pauses[0], FIRST_PAUSE);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]), "{pauses:?}");
        assert_eq!(pauses[8], LONGEST_PAUSE);
        assert_eq!(b.pause(&io::Error::from(io::ErrorKind::ConnectionAborted)), Duration::ZERO);
        b.accepted();
        assert_eq!(b.pause(&emfile), FIRST_PAUSE);
    }
}
