//! Log output, and the filter the daemon changes at runtime
//! (`mpio log level`).

use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The installed filter.
pub(crate) struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

impl LogControl {
    /// Installs the global subscriber (stderr) with `filter`.
    pub(crate) fn init(filter: &str) -> LogControl {
        let f =
            EnvFilter::try_new(filter).map(|f| quiet_libraries(f, filter)).unwrap_or_else(|_| EnvFilter::new("warn"));
        let (layer, handle) = reload::Layer::new(f);
        tracing_subscriber::registry()
            .with(layer)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            // Only a test process installs it twice; the first one stays.
            .try_init()
            .ok();
        LogControl { handle, current: Mutex::new(filter.to_owned()) }
    }

    /// Replaces the filter; a filter that does not parse changes nothing.
    pub(crate) fn set(&self, filter: &str) -> Result<(), String> {
        let f = parse_filter(filter)?;
        self.handle.reload(f).map_err(|e| format!("cannot change the log filter: {e}"))?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = filter.to_owned();
        Ok(())
    }

    /// The filter in force.
    pub(crate) fn current(&self) -> String {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// A log filter: comma-separated `LEVEL`, `MODULE` or `MODULE=LEVEL`.
/// Stricter than `EnvFilter`, which takes any word it cannot read as a
/// module name (`log = "-5s"` would silently log nothing of ours).
pub(crate) fn parse_filter(filter: &str) -> Result<EnvFilter, String> {
    let fix = "use error, warn, info, debug or trace, or module=level pairs like info,mpio_transport=debug";
    let is_module = |m: &str| {
        m.split("::").all(|part| {
            part.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    for d in filter.split(',').map(str::trim) {
        let ok = match d.split_once('=') {
            _ if LEVELS.contains(&d.to_ascii_lowercase().as_str()) => true,
            Some((module, level)) => is_module(module) && LEVELS.contains(&level.to_ascii_lowercase().as_str()),
            None => is_module(d),
        };
        if !ok {
            return Err(format!("log filter {filter:?}: {d:?} is neither a level nor module=level; {fix}"));
        }
    }
    let f = EnvFilter::try_new(filter).map_err(|e| format!("log filter {filter:?}: {e}; {fix}"))?;
    Ok(quiet_libraries(f, filter))
}

/// libublk logs at info level each time a control handle opens a device
/// (every `mpio ublk list`, every reattach): noise beside our own events
/// at info. Under a filter more verbose than warn it logs only warnings
/// and errors, unless the filter names it.
fn quiet_libraries(f: EnvFilter, text: &str) -> EnvFilter {
    let verbose = f.max_level_hint().is_none_or(|l| l > tracing_subscriber::filter::LevelFilter::WARN);
    match ("libublk=warn".parse(), verbose && !text.contains("libublk")) {
        (Ok(quiet), true) => f.add_directive(quiet),
        _ => f,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_levels_and_module_levels() {
        for ok in ["info", "WARN", "info,mpio_transport=debug", "mpio_mpath::core=trace", "mpio_nbd", "off"] {
            parse_filter(ok).unwrap_or_else(|e| panic!("{ok:?} refused: {e}"));
        }
        for bad in ["-5s", "", "info,", "5", "info=loud", "mpio transport=debug", "=info", "a::=info"] {
            let e = parse_filter(bad).err().unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(e.contains("use error, warn"), "{e}");
        }
    }

    #[test]
    fn libublk_says_only_warnings_unless_named() {
        let shown = |filter: &str| parse_filter(filter).unwrap().to_string();
        assert!(shown("info").contains("libublk=warn"), "{}", shown("info"));
        assert!(shown("debug,mpio_nbd=trace").contains("libublk=warn"));
        assert!(!shown("off").contains("libublk"), "off stays off");
        assert!(!shown("error").contains("libublk"));
        assert!(shown("info,libublk=debug").contains("libublk=debug"));
        assert!(!shown("info,libublk=debug").contains("libublk=warn"));
    }
}
