//! The one error type of the lab and of the test bed built on it.

use std::io;
use std::time::Duration;

use crate::wait::WaitError;

/// Result with the fixture library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a fixture can fail with. Every variant carries enough context
/// (command line, stderr, log) to understand a failing test without rerunning it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A program the fixture needs is not installed.
    #[error(
        "`{program}` not found: install the Debian package `{package}` \
         (scripts/install-test-deps.sh installs all test dependencies)"
    )]
    MissingTool {
        /// The program that could not be started.
        program: String,
        /// The Debian package that provides it.
        package: &'static str,
    },

    /// An external command exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}{stdout}")]
    Command {
        /// The command line, shell-quoted for copy and paste.
        command: String,
        /// How it ended (`exit status: 22`, ...).
        status: String,
        /// Its standard output (prefixed with a separator when not empty).
        stdout: String,
        /// Its standard error, trimmed.
        stderr: String,
    },

    /// An external command did not finish in time and was killed.
    #[error("`{command}` did not finish within {timeout:?} and was killed")]
    CommandTimeout {
        /// The command line.
        command: String,
        /// The deadline it missed.
        timeout: Duration,
    },

    /// An I/O operation of the fixture itself failed.
    #[error("{context}: {source}")]
    Io {
        /// What the fixture was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Output of an external tool did not have the expected format.
    #[error("cannot parse {what}: {detail}\n--- text ---\n{text}")]
    Parse {
        /// Which output (e.g. `tgtadm --mode conn --op show`).
        what: String,
        /// What was wrong.
        detail: String,
        /// The whole text that was parsed.
        text: String,
    },

    /// tgtd did not come up.
    #[error("tgtd did not start: {reason}\n--- tgtd log ---\n{log}")]
    TgtdStart {
        /// Why the fixture gave up.
        reason: String,
        /// tgtd's stdout and stderr.
        log: String,
    },

    /// A test VM of the test bed (`mpio-testbed`'s `vm`) did not boot,
    /// died, or hung (and was killed).
    #[error("{vm}: {what}\n--- console of {vm} (last lines) ---\n{console}--- end of console ---")]
    Vm {
        /// The VM's name (`mpio-vm-3`).
        vm: String,
        /// What happened.
        what: String,
        /// The end of its serial console (kernel messages, boot script).
        console: String,
    },

    /// Waiting for external state timed out.
    #[error(transparent)]
    Wait(#[from] WaitError),

    /// The host is not in a state the fixture can work with (e.g. `lo`
    /// already has a root qdisc that is not ours).
    #[error("{0}")]
    Environment(String),
}

impl Error {
    /// Wraps an [`io::Error`] with what the fixture was doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// A parse error over `text`.
    pub fn parse(what: &str, detail: impl Into<String>, text: &str) -> Self {
        Error::Parse { what: what.to_owned(), detail: detail.into(), text: text.to_owned() }
    }
}
