//! `mpio`: the daemon and the command-line interface. The binary
//! (`src/main.rs`) only calls [`run`]; the library exists so that the fuzz
//! targets (`fuzz/`) reach the parsers of the daemon's input: the
//! configuration file and the control protocol ([`fuzzing`]).

/// `println!` through [`output::write_out`] (no panic on a closed pipe).
macro_rules! outln {
    () => { $crate::output::write_out(format_args!("\n")) };
    ($($t:tt)*) => { $crate::output::write_out(format_args!("{}\n", format_args!($($t)*))) };
}
/// `print!` through [`output::write_out`].
macro_rules! out {
    ($($t:tt)*) => { $crate::output::write_out(format_args!($($t)*)) };
}
/// `eprintln!` through [`output::write_err`].
macro_rules! errln {
    ($($t:tt)*) => { $crate::output::write_err(format_args!("{}\n", format_args!($($t)*))) };
}

mod admin;
mod advice;
mod config;
mod config_check;
mod connect;
mod control;
mod daemon;
mod demo;
mod discover;
mod logging;
mod output;
mod perf;
mod policy_args;
mod scsi;
mod secret_file;
mod timers;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mpio: a userspace multipath block layer over iSCSI.
#[derive(Parser, Debug)]
#[command(name = "mpio", version, about)]
struct Cli {
    /// Log level filter (error, warn, info, debug, trace, or per module,
    /// e.g. mpio_transport=debug). Also MPIO_LOG. Default: error; for the
    /// daemon, the configuration file's.
    #[arg(long, global = true, env = "MPIO_LOG")]
    log: Option<String>,
    /// The daemon's control socket (commands for a running daemon).
    #[arg(long, global = true, env = "MPIO_SOCKET", default_value = config::DEFAULT_CONTROL_SOCKET)]
    socket: std::path::PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the targets a portal offers (SendTargets).
    Discover(discover::DiscoverArgs),
    /// SCSI diagnostics on one logical unit.
    #[command(subcommand)]
    Scsi(scsi::ScsiCommand),
    /// Load generator on one logical unit (for benchmarks).
    Perf(perf::PerfArgs),
    /// Start a local SAN (tgtd, several portals) and tour what mpio does.
    Demo(demo::DemoArgs),
    /// The timer model: detection, failover and hold times.
    #[command(subcommand)]
    Timers(timers::TimersCommand),
    /// Run the multipath daemon (devices, NBD exports, control socket,
    /// metrics) from a configuration file.
    Daemon(daemon::DaemonArgs),
    /// Configuration files.
    #[command(subcommand)]
    Config(config_check::ConfigCommand),
    #[command(flatten)]
    Admin(admin::AdminCommand),
}

/// The `mpio` command: parses the command line, runs the command, and
/// returns its exit status.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let log = std::sync::Arc::new(logging::LogControl::init(cli.log.as_deref().unwrap_or("error")));
    // One thread: a request and its completion stay on the core that
    // issued them (a cross-core wake-up costs 35-40 us on these machines).
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            errln!("mpio: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Discover(a) => discover::run(a).await,
            Command::Scsi(c) => scsi::run(c).await,
            Command::Perf(a) => perf::run(a).await,
            Command::Demo(a) => demo::run(a).await,
            Command::Timers(c) => timers::run(c),
            Command::Daemon(a) => daemon::run(a, log, cli.log.is_some()).await,
            Command::Config(c) => config_check::run(c),
            Command::Admin(c) => admin::run(c, &cli.socket).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes, outermost first.
            errln!("mpio: {}", advice::error_line(&e));
            ExitCode::FAILURE
        }
    }
}

#[doc(hidden)]
pub mod fuzzing;
