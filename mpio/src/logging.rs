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
        let (layer, handle) = reload::Layer::new(EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("warn")));
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
        let f = EnvFilter::try_new(filter)
            .map_err(|e| format!("log filter {filter:?}: {e}; use error, warn, info, debug, trace or module=level"))?;
        self.handle.reload(f).map_err(|e| format!("cannot change the log filter: {e}"))?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = filter.to_owned();
        Ok(())
    }

    /// The filter in force.
    pub(crate) fn current(&self) -> String {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
