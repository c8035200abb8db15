//! ublk frontend: exposes a multipath device as `/dev/ublkbN`.
//!
//! Built in the ublk issue; this crate only fixes the layout.
#![warn(missing_docs)]
