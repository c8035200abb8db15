//! Device-specific module: the SCSI knowledge mpio needs to use a logical unit.
#![warn(missing_docs)]
