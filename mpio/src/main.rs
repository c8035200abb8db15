//! `mpio`: the daemon and its command-line interface.

fn main() {
    println!("mpio {}", env!("CARGO_PKG_VERSION"));
}
