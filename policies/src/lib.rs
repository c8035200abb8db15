//! Load-balance policies for mpio multipath devices.
//!
//! Policies are pure: given a snapshot of the paths of a device (state,
//! weight, queue depth, bytes in flight, latency) and a request, they choose
//! a path. They hold no clocks and do no I/O, so every rule of the seeds
//! (fail over only, round robin, round robin with subset, weighted path,
//! least queue depth) is a table-driven unit test.
//!
//! Built in the multipath-device issue; this crate only fixes the layout.
#![warn(missing_docs)]
