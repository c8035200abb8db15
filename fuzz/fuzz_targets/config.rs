//! The daemon's configuration loader (`mpio config check`, start, reload)
//! on arbitrary text: every refusal is an error, never a panic; what it
//! accepts becomes device configurations and timer reports without one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mpio::fuzzing::config(data));
