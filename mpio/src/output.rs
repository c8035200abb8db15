//! Human tables and JSON, and the writes every command's output goes
//! through.
//!
//! Rust ignores SIGPIPE, so `println!` panics when the reader has gone
//! (`mpio status | head -1`: exit 101). Restoring SIGPIPE is no answer:
//! the same process writes to iSCSI and control sockets, where a closed
//! peer must be an error, not a silent death. So output is written here:
//! a reader that stopped reading ends the command quietly with success (as
//! ripgrep does), and a stderr that cannot be written is ignored.

use std::fmt;
use std::io::Write;

use anyhow::Result;
use serde::Serialize;

/// Writes to stdout (`outln!` / `out!`).
pub(crate) fn write_out(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        write_err(format_args!("mpio: cannot write the output: {e}\n"));
        std::process::exit(1);
    }
}

/// Writes to stderr (`errln!`), ignoring a stderr that is gone.
pub(crate) fn write_err(args: fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// Prints rows as aligned columns; the first row is the header.
pub(crate) fn table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        outln!("{}", line.trim_end());
    }
}

/// Prints key/value lines, aligned.
pub(crate) fn fields(pairs: &[(&str, String)]) {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        outln!("{k:<w$}  {v}");
    }
}

/// Prints a value as pretty JSON.
pub(crate) fn json<T: Serialize>(value: &T) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
