//! The one timer model of a multipath device: every timeout and interval
//! that decides how fast a dead path is found, how fast I/O moves, how
//! long it is held, and how a path comes back. `mpio timers explain`
//! prints what a configuration means in the worst case and refuses the
//! combinations that cannot work.
//!
//! Durations in TOML are written `"1s"`, `"500ms"`, `"2m"` (or a bare
//! number of seconds).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// When a path that came back may take I/O back from the path that
/// replaced it (Microsoft's Fail Over Only fails back; its boot initiator
/// does not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailbackMode {
    /// As soon as it passed probation (the seed's normal initiator).
    Immediate,
    /// Only when an administrator says so (`mpio failback`; the seed's
    /// boot initiator).
    Manual,
    /// This long after it passed probation.
    Delayed(Duration),
}

impl fmt::Display for FailbackMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailbackMode::Immediate => f.write_str("immediate"),
            FailbackMode::Manual => f.write_str("manual"),
            FailbackMode::Delayed(d) => write!(f, "delayed:{}", d.as_secs()),
        }
    }
}

impl std::str::FromStr for FailbackMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "immediate" => Ok(FailbackMode::Immediate),
            "manual" => Ok(FailbackMode::Manual),
            _ => match s.strip_prefix("delayed:") {
                Some(d) => parse_duration(d).map(FailbackMode::Delayed),
                None => Err(format!("failback {s:?}: use immediate, manual or delayed:<seconds>")),
            },
        }
    }
}

/// What happens to I/O while no path is usable (Microsoft MPIO's
/// PDORemovePeriod). The device itself is never removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldMode {
    /// Hold up to this long after the last path went, then fail with EIO
    /// (held and new requests) until a path returns.
    For(Duration),
    /// Hold for ever (root disks; dm-multipath's queue_if_no_path).
    Queue,
    /// Fail at once.
    Fail,
}

impl fmt::Display for HoldMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HoldMode::For(d) => write!(f, "{}s", d.as_secs_f64()),
            HoldMode::Queue => f.write_str("queue"),
            HoldMode::Fail => f.write_str("fail"),
        }
    }
}

impl std::str::FromStr for HoldMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "queue" => Ok(HoldMode::Queue),
            "fail" => Ok(HoldMode::Fail),
            d => parse_duration(d).map(HoldMode::For).map_err(|e| match d.starts_with(|c: char| c.is_ascii_digit()) {
                // A number that is not a usable duration: say why.
                true => format!("hold {e}"),
                false => format!("hold {s:?}: use queue, fail, or a duration like 20s"),
            }),
        }
    }
}

/// The longest duration any timer takes: a year. Anything longer is a
/// typing mistake, and would overflow on the way: `Duration::from_secs_f64`
/// panics past `u64::MAX` seconds, and `Instant + Duration` panics past the
/// clock's range. A hold without end is `hold = "queue"`.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses `"1s"`, `"500ms"`, `"2m"`, `"1.5s"`, `"1h"` or a bare number of
/// seconds, from 0 to [`MAX_DURATION`]. Every other input is an error that
/// says what to write, never a panic.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    // The unit is the trailing run of letters ("1e3s": 1e3 seconds).
    let num = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = match s.get(num.len()..) {
        Some("") | None => "s",
        Some(u) => u,
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: write a number and a unit, like 1s, 500ms, 2m or 1h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}: use ms, s, m or h")),
    };
    duration_from_secs(secs, s)
}

/// `secs` seconds (`shown` as the user wrote them) as a duration within
/// [`MAX_DURATION`].
fn duration_from_secs(secs: f64, shown: &str) -> Result<Duration, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{shown:?} is not a duration: write a positive number, like 1s, 500ms or 2m"));
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!(
            "{shown:?} is longer than a year (8760h): write a shorter duration (a hold without end is hold = \"queue\")"
        )),
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(f64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(n) => duration_from_secs(n, &n.to_string()).map_err(serde::de::Error::custom),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

fn from_str<'de, D: Deserializer<'de>, T: std::str::FromStr<Err = String>>(d: D) -> Result<T, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// Every timer of a multipath device and its paths.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimerConfig {
    /// NOP-Out after this long without receiving anything on a connection.
    #[serde(deserialize_with = "duration")]
    pub nop_interval: Duration,
    /// An unanswered NOP-Out, with nothing else received, fails the
    /// connection after this long (seed event 48).
    #[serde(deserialize_with = "duration")]
    pub nop_timeout: Duration,
    /// A command older than this is aborted and its path failed: the
    /// in-flight age watchdog (seed SRBTimeoutDelta's role).
    #[serde(deserialize_with = "duration")]
    pub io_timeout: Duration,
    /// A task management request (the abort) unanswered for this long
    /// fails the connection (seed event 49).
    #[serde(deserialize_with = "duration")]
    pub abort_timeout: Duration,
    /// TCP connect to a portal.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// One login.
    #[serde(deserialize_with = "duration")]
    pub login_timeout: Duration,
    /// First reconnect delay (the target's DefaultTime2Wait when longer).
    #[serde(deserialize_with = "duration")]
    pub reconnect_min: Duration,
    /// Cap of the reconnect back-off.
    #[serde(deserialize_with = "duration")]
    pub reconnect_max: Duration,
    /// Periodic TEST UNIT READY on every path, standby included (seed
    /// PathVerifyEnabled, default off).
    pub path_verify: bool,
    /// Period of that verification (seed PathVerificationPeriod, 30 s).
    #[serde(deserialize_with = "duration")]
    pub path_verify_period: Duration,
    /// Clean TEST UNIT READY probes a returning path must pass.
    pub probation_probes: u32,
    /// Between probation probes.
    #[serde(deserialize_with = "duration")]
    pub probation_interval: Duration,
    /// Marginal-path damping: a path that failed again within
    /// `damping_window` waits `damping_base`, doubled per further failure,
    /// capped at `damping_max`, before its probation starts.
    #[serde(deserialize_with = "duration")]
    pub damping_base: Duration,
    /// Cap of the damping wait.
    #[serde(deserialize_with = "duration")]
    pub damping_max: Duration,
    /// How far back failures count for damping.
    #[serde(deserialize_with = "duration")]
    pub damping_window: Duration,
    /// Failback mode.
    #[serde(deserialize_with = "from_str")]
    pub failback: FailbackMode,
    /// All-paths-down hold.
    #[serde(deserialize_with = "from_str")]
    pub hold: HoldMode,
    /// Retries of a transient condition (seed RetryCount, 3).
    pub retry_count: u32,
    /// Wait before such a retry (seed RetryInterval, 1 s); a UNIT ATTENTION
    /// is retried at once.
    #[serde(deserialize_with = "duration")]
    pub retry_interval: Duration,
    /// How long a write caught on a failed path waits, at most, for proof
    /// that the old path cannot execute it any more, before it is re-issued
    /// anyway. RFC 7143 section 6.6: after DefaultTime2Wait +
    /// DefaultTime2Retain the target has discarded the failed connection's
    /// tasks. Normally a reinstatement through a healthy portal proves it
    /// within milliseconds. At a start it also bounds how long writes wait
    /// for a path that cannot log in (what a previous daemon left on its
    /// ISID may still land).
    #[serde(deserialize_with = "duration")]
    pub fence_timeout: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            nop_interval: Duration::from_secs(1),
            nop_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(10),
            abort_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            login_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            path_verify: false,
            path_verify_period: Duration::from_secs(30),
            probation_probes: 3,
            probation_interval: Duration::from_secs(1),
            damping_base: Duration::from_secs(2),
            damping_max: Duration::from_secs(120),
            damping_window: Duration::from_secs(60),
            failback: FailbackMode::Immediate,
            hold: HoldMode::For(Duration::from_secs(20)),
            retry_count: 3,
            retry_interval: Duration::from_secs(1),
            fence_timeout: Duration::from_secs(22),
        }
    }
}

/// What the target's side of the fence needs: DefaultTime2Wait +
/// DefaultTime2Retain as we offer them (RFC defaults 2 + 20 s).
const TARGET_CLEANUP: Duration = Duration::from_secs(22);

/// A combination that cannot work, or a risky one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimerProblem {
    /// Refused (true) or only warned about.
    pub fatal: bool,
    /// What is wrong and what to change.
    pub message: String,
}

/// Worst cases a configuration implies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// A silent path (blackhole, cable pulled without link-down) is
    /// declared dead after at most this long, with or without I/O. Reads
    /// caught on it continue elsewhere at that moment.
    pub detect_silent: Duration,
    /// A path whose target stops answering commands but keeps answering
    /// NOP-Outs (a hung LU) is failed after at most this long.
    pub detect_hung: Duration,
    /// A write caught on a dead path also waits for the fence: a
    /// reinstatement login through a healthy portal of the path's portal
    /// group (milliseconds when one answers), bounded by this.
    pub fence_login: Duration,
    /// With no healthy portal in the group, the write waits this long.
    pub fence_timeout: Duration,
    /// With no path left, I/O is held this long (None: for ever).
    pub hold: Option<Duration>,
    /// A path that comes back carries I/O again after at least this long
    /// (reconnect delay + probation), longer when it keeps failing.
    pub path_return: Duration,
}

impl TimerConfig {
    /// Parses the `[timers]` table of a configuration file.
    pub fn from_toml(text: &str) -> Result<TimerConfig, String> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            timers: TimerConfig,
        }
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        Ok(file.timers)
    }

    /// Worst-case figures.
    pub fn explain(&self) -> Explanation {
        Explanation {
            detect_silent: self.nop_interval + self.nop_timeout,
            detect_hung: self.io_timeout + self.abort_timeout,
            fence_login: self.connect_timeout + self.login_timeout,
            fence_timeout: self.fence_timeout,
            hold: match self.hold {
                HoldMode::For(d) => Some(d),
                HoldMode::Queue => None,
                HoldMode::Fail => Some(Duration::ZERO),
            },
            path_return: self.reconnect_min + self.probation_interval * self.probation_probes,
        }
    }

    /// Problems of this configuration; any `fatal` one refuses it.
    pub fn check(&self) -> Vec<TimerProblem> {
        let mut p = Vec::new();
        let mut fatal = |m: String| p.push(TimerProblem { fatal: true, message: m });
        for (name, d) in [
            ("nop_interval", self.nop_interval),
            ("nop_timeout", self.nop_timeout),
            ("io_timeout", self.io_timeout),
            ("abort_timeout", self.abort_timeout),
            ("connect_timeout", self.connect_timeout),
            ("login_timeout", self.login_timeout),
            ("probation_interval", self.probation_interval),
        ] {
            if d.is_zero() {
                fatal(format!("{name} is 0: give it a positive duration, like 5s"));
            }
        }
        if self.reconnect_max < self.reconnect_min {
            fatal(format!(
                "reconnect_max ({:?}) is shorter than reconnect_min ({:?}): raise reconnect_max",
                self.reconnect_max, self.reconnect_min
            ));
        }
        if self.damping_max < self.damping_base {
            fatal(format!(
                "damping_max ({:?}) is shorter than damping_base ({:?}): raise damping_max",
                self.damping_max, self.damping_base
            ));
        }
        if self.fence_timeout < TARGET_CLEANUP {
            fatal(format!(
                "fence_timeout ({:?}) is shorter than DefaultTime2Wait + DefaultTime2Retain ({TARGET_CLEANUP:?}): a write \
                 re-issued earlier could be overwritten later by its stale copy on the dead path; use at least 22s",
                self.fence_timeout
            ));
        }
        if self.path_verify && self.path_verify_period < self.io_timeout {
            fatal(format!(
                "path_verify_period ({:?}) is shorter than io_timeout ({:?}): a probe could still run when the next \
                 one starts; make the period at least io_timeout",
                self.path_verify_period, self.io_timeout
            ));
        }
        if self.nop_interval + self.nop_timeout >= self.io_timeout {
            fatal(format!(
                "nop_interval + nop_timeout ({:?}) is not shorter than io_timeout ({:?}): commands would be aborted on \
                 a path before its keepalive can tell a dead link; shorten the keepalive or lengthen io_timeout",
                self.nop_interval + self.nop_timeout,
                self.io_timeout
            ));
        }
        let e = self.explain();
        if let HoldMode::For(h) = self.hold
            && h < e.path_return
        {
            p.push(TimerProblem {
                fatal: false,
                message: format!(
                    "hold ({h:?}) is shorter than the quickest return of a path ({:?}): any outage of every path, \
                     however short, fails I/O",
                    e.path_return
                ),
            });
        }
        if self.retry_count > 0 && self.retry_interval * self.retry_count > self.io_timeout {
            p.push(TimerProblem {
                fatal: false,
                message: format!(
                    "retries ({} x {:?}) outlast io_timeout ({:?}): a busy LU can hold a request longer than a dead path",
                    self.retry_count, self.retry_interval, self.io_timeout
                ),
            });
        }
        p
    }

    /// The text `mpio timers explain` prints.
    pub fn report(&self) -> String {
        let e = self.explain();
        let s = |d: Duration| format!("{:.1} s", d.as_secs_f64());
        let mut out = String::new();
        out.push_str(&format!(
            "dead path, silent (blackhole, pulled cable):  detected within {}  (NOP-Out after {} idle + {} unanswered)\n",
            s(e.detect_silent),
            s(self.nop_interval),
            s(self.nop_timeout)
        ));
        out.push_str(&format!(
            "dead path, hung target (commands dropped):    detected within {}  (io_timeout {} + abort {})\n",
            s(e.detect_hung),
            s(self.io_timeout),
            s(self.abort_timeout)
        ));
        out.push_str(&format!(
            "fail over:                                    reads at detection; writes after the fence too: a \
             reinstatement login through a healthy portal of the path's group (milliseconds; at most {}, {} when \
             the group has no other portal)\n",
            s(e.fence_login),
            s(e.fence_timeout)
        ));
        out.push_str(&format!(
            "start (a restarted daemon):                   reads at the first path; writes once every path has \
             logged in (its login replaces what a previous daemon left), at most {} for one that cannot\n",
            s(e.fence_timeout)
        ));
        out.push_str(&match e.hold {
            None => "all paths down:                               I/O held until a path returns (queue)\n".to_string(),
            Some(d) if d.is_zero() => "all paths down:                               I/O fails at once\n".to_string(),
            Some(d) => format!(
                "all paths down:                               I/O held {}, then EIO until a path returns\n",
                s(d)
            ),
        });
        out.push_str(&format!(
            "path returns:                                 after {} at least (reconnect {} + {} probes every {}), failback {}\n",
            s(e.path_return),
            s(self.reconnect_min),
            self.probation_probes,
            s(self.probation_interval),
            self.failback
        ));
        out.push_str(&format!(
            "flapping path:                                waits {} doubling to {} before probation, for failures within {}\n",
            s(self.damping_base),
            s(self.damping_max),
            s(self.damping_window)
        ));
        out.push_str(&format!(
            "transient errors (BUSY, NOT READY, ...):      {} retries {} apart; UNIT ATTENTION retried at once\n",
            self.retry_count,
            s(self.retry_interval)
        ));
        out.push_str(&format!(
            "path verification:                            {}\n",
            if self.path_verify {
                format!("TEST UNIT READY every {} on every path", s(self.path_verify_period))
            } else {
                "off (NOP-Out keepalive only)".to_string()
            }
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_meet_the_three_second_goal() {
        let t = TimerConfig::default();
        assert!(t.check().iter().all(|p| !p.fatal), "{:?}", t.check());
        let e = t.explain();
        assert_eq!(e.detect_silent, Duration::from_secs(2));
        assert!(e.detect_silent < Duration::from_secs(3));
        assert_eq!(e.hold, Some(Duration::from_secs(20)));
        assert_eq!(e.path_return, Duration::from_secs(4));
    }

    #[test]
    fn impossible_combinations_are_refused() {
        let bad = |t: TimerConfig, want: &str| {
            let p = t.check();
            assert!(p.iter().any(|p| p.fatal && p.message.contains(want)), "{want}: {p:?}");
        };
        bad(TimerConfig { nop_timeout: Duration::ZERO, ..Default::default() }, "nop_timeout is 0");
        bad(TimerConfig { reconnect_max: Duration::from_millis(10), ..Default::default() }, "reconnect_max");
        bad(TimerConfig { fence_timeout: Duration::from_secs(5), ..Default::default() }, "stale copy");
        bad(
            TimerConfig { path_verify: true, path_verify_period: Duration::from_secs(2), ..Default::default() },
            "probe",
        );
        bad(
            TimerConfig {
                nop_interval: Duration::from_secs(8),
                nop_timeout: Duration::from_secs(5),
                ..Default::default()
            },
            "keepalive",
        );
        let warn = TimerConfig { hold: HoldMode::For(Duration::from_secs(1)), ..Default::default() };
        assert!(warn.check().iter().any(|p| !p.fatal && p.message.contains("shorter than the quickest return")));
    }

    #[test]
    fn toml_with_units_and_modes() {
        let t = TimerConfig::from_toml(
            "[timers]\nnop_interval = \"500ms\"\nnop_timeout = 1\nhold = \"queue\"\nfailback = \"delayed:30\"\n",
        )
        .unwrap();
        assert_eq!(t.nop_interval, Duration::from_millis(500));
        assert_eq!(t.nop_timeout, Duration::from_secs(1));
        assert_eq!(t.hold, HoldMode::Queue);
        assert_eq!(t.failback, FailbackMode::Delayed(Duration::from_secs(30)));
        assert_eq!(t.explain().hold, None);
        let e = TimerConfig::from_toml("[timers]\nnop_intervall = \"1s\"\n").unwrap_err();
        assert!(e.contains("nop_intervall") && e.contains("line 2"), "{e}");
        let e = TimerConfig::from_toml("[timers]\nhold = \"forever\"\n").unwrap_err();
        assert!(e.contains("queue, fail, or a duration"), "{e}");
        assert_eq!(TimerConfig::from_toml("").unwrap(), TimerConfig::default());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("3 fortnights").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_duration("8760h").unwrap(), MAX_DURATION);
    }

    /// Finite durations too large for a `Duration` (or for the clock) are
    /// refused, not a panic: `hold = "18446744073709551616s"` took a
    /// reloading daemon down.
    #[test]
    fn durations_too_long_are_refused_with_the_fix() {
        for s in ["18446744073709551616s", "99999999999999999999s", "1e300", "1e300ms", "8761h", "1e20h", "NaN", "inf"]
        {
            let e = parse_duration(s).unwrap_err();
            assert!(e.contains("a year") || e.contains("not a duration"), "{s}: {e}");
        }
        for text in [
            "[timers]\nhold = \"18446744073709551616s\"\n",
            "[timers]\nprobation_interval = \"99999999999999999999s\"\n",
            "[timers]\nio_timeout = 1e300\n",
            "[timers]\nnop_timeout = -1\n",
            "[timers]\nfailback = \"delayed:1e300\"\n",
        ] {
            let e = TimerConfig::from_toml(text).unwrap_err();
            assert!(e.contains("a year") || e.contains("not a duration"), "{text}: {e}");
        }
        assert!("1e300s".parse::<HoldMode>().is_err());
    }

    proptest::proptest! {
        /// No text and no number is a panic.
        #[test]
        fn parse_duration_never_panics(s in "\\PC{0,24}", n in proptest::num::f64::ANY) {
            let _ = parse_duration(&s);
            let _ = parse_duration(&n.to_string());
            let _ = parse_duration(&format!("{n}ms"));
            let _ = TimerConfig::from_toml(&format!("[timers]\nhold = {n:?}\nio_timeout = {n:?}\n"));
            if let Ok(d) = parse_duration(&s) {
                proptest::prop_assert!(d <= MAX_DURATION);
            }
        }
    }
}
