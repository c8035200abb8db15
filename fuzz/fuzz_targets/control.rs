//! The control socket as the daemon reads it (capped lines, then the
//! versioned JSON request decoder) and the CLI's decoder of answers, on
//! arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mpio::fuzzing::control(data));
