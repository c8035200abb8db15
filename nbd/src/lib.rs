//! NBD server frontend: exposes a multipath device as an NBD export.
//!
//! Built in the operations issue; this crate only fixes the layout.
#![warn(missing_docs)]
