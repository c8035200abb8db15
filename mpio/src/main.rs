//! The `mpio` binary: everything is in the library (`src/lib.rs`).

use std::process::ExitCode;

/// jemalloc keeps freed memory mapped for reuse (its decay is seconds).
/// glibc's malloc hands the 256 KiB receive buffers of large reads back to
/// the kernel and faults them in again for the next read, which costs more
/// CPU than the iSCSI work itself at 1 MiB transfers.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    mpio::run()
}
