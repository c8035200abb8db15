//! Waiting for external state with a bounded deadline instead of sleeping.
//!
//! A test that needs "tgtd shows two connections" or "the initiator has
//! failed over" polls a condition with [`wait_until`] (or [`wait_for`], which
//! also remembers why the condition was not met yet). The deadline is an upper
//! bound for a broken system, not the expected duration: a healthy run returns
//! as soon as the condition holds, so generous timeouts cost nothing.
//!
//! ```no_run
//! use std::time::Duration;
//! use mpio_lab::wait::wait_until;
//! # fn connections() -> usize { 2 }
//! let n = wait_until("tgtd to show 2 connections", Duration::from_secs(10),
//!                    Duration::from_millis(50), || {
//!     let n = connections();
//!     (n == 2).then_some(n)
//! })?;
//! # Ok::<(), mpio_lab::wait::WaitError>(())
//! ```

use std::fmt;
use std::thread;
use std::time::{Duration, Instant};

/// A condition was not met before its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitError {
    /// What was awaited, as given by the caller.
    pub what: String,
    /// The deadline that passed.
    pub timeout: Duration,
    /// How often the condition was checked.
    pub attempts: u32,
    /// The last reason the condition gave for not being met ([`wait_for`]
    /// only).
    pub last: Option<String>,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out after {:?} ({} checks) waiting for {}", self.timeout, self.attempts, self.what)?;
        if let Some(last) = &self.last {
            write!(f, "; last seen: {last}")?;
        }
        Ok(())
    }
}

impl std::error::Error for WaitError {}

/// Calls `check` every `poll_interval` until it returns `Some`, and returns
/// that value; fails with a [`WaitError`] naming `what` once `timeout` has
/// passed. `check` runs at least once, and once more at the deadline.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    poll_interval: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, WaitError> {
    wait_for(what, timeout, poll_interval, || check().ok_or(NotYet))
}

/// Like [`wait_until`], but `check` says why the condition does not hold
/// yet (`Err(reason)`); the last reason is part of the timeout error, e.g.
/// "timed out after 10s waiting for 2 connections; last seen: 1 connection".
pub fn wait_for<T, E: fmt::Display>(
    what: &str,
    timeout: Duration,
    poll_interval: Duration,
    mut check: impl FnMut() -> Result<T, E>,
) -> Result<T, WaitError> {
    let deadline = Instant::now() + timeout;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let last = match check() {
            Ok(value) => return Ok(value),
            Err(reason) => reason.to_string(),
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitError {
                what: what.to_owned(),
                timeout,
                attempts,
                last: (!last.is_empty()).then_some(last),
            });
        }
        thread::sleep(poll_interval.min(deadline - now));
    }
}

/// The "reason" of [`wait_until`]'s conditions, which give none.
struct NotYet;

impl fmt::Display for NotYet {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_the_condition_holds() {
        let mut n = 0;
        let got = wait_until("n to reach 3", Duration::from_secs(5), Duration::ZERO, || {
            n += 1;
            (n == 3).then_some(n * 10)
        });
        assert_eq!(got, Ok(30));
    }

    #[test]
    fn timeout_names_what_was_awaited_and_the_last_reason() {
        let err = wait_for("2 connections", Duration::from_millis(30), Duration::from_millis(10), || {
            Err::<(), _>("1 connection")
        })
        .unwrap_err();
        assert!(err.attempts >= 2, "{err}");
        let text = err.to_string();
        assert!(text.contains("waiting for 2 connections"), "{text}");
        assert!(text.ends_with("last seen: 1 connection"), "{text}");
    }

    #[test]
    fn wait_until_has_no_last_reason() {
        let err = wait_until("never", Duration::ZERO, Duration::ZERO, || None::<()>).unwrap_err();
        assert_eq!(err.last, None);
        assert_eq!(err.attempts, 1);
    }
}
