//! Test fixtures for mpio's end-to-end tests: real targets, real faults.
#![warn(missing_docs)]
