//! Errors: one enum for parsing what a target sent, one for building CDBs.
//!
//! Parse errors name the structure (`what`, e.g. "VPD page 0x83") and the
//! field, so a log line says which byte of which response was wrong without
//! a hex dump. Builder errors name the command and the field that would
//! overflow: a builder never truncates a value to fit (a truncated LBA or
//! length would silently address the wrong blocks).

/// A response from a target could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The data ends inside a fixed-size field.
    #[error("{what}: {field} needs {need} bytes, {left} left")]
    Short {
        /// The structure being parsed.
        what: &'static str,
        /// The field that did not fit.
        field: &'static str,
        /// Bytes the field needs.
        need: usize,
        /// Bytes that were left.
        left: usize,
    },
    /// A length field inside the data claims more bytes than its container
    /// holds (for example a designator longer than the rest of its page).
    #[error("{what}: {field} {len} exceeds {within} ({left} bytes left)")]
    LengthOverrun {
        /// The structure being parsed.
        what: &'static str,
        /// The length field, e.g. "designator length".
        field: &'static str,
        /// The length it claims.
        len: usize,
        /// The container it must fit in, e.g. "page".
        within: &'static str,
        /// Bytes left in the container.
        left: usize,
    },
    /// The data is shorter than its own header says. Usually the allocation
    /// length of the command was too small: re-issue it with at least
    /// `need` (see [`ParseError::required_len`]).
    #[error("{what}: header says {need} bytes, {have} received (allocation length too small?)")]
    Truncated {
        /// The structure being parsed.
        what: &'static str,
        /// Total length the header announces.
        need: usize,
        /// Bytes received.
        have: usize,
    },
    /// A VPD page carries another page code than the one asked for.
    #[error("{what}: page code is {found:#04x}")]
    WrongPage {
        /// The page expected, e.g. "VPD page 0x83".
        what: &'static str,
        /// The page code found in byte 1.
        found: u8,
    },
    /// A field holds a value the format does not allow.
    #[error("{what}: {field} {value:#x} {problem}")]
    Invalid {
        /// The structure being parsed.
        what: &'static str,
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl ParseError {
    /// For [`ParseError::Truncated`], the allocation length that would have
    /// returned the whole structure; `None` for every other error.
    pub fn required_len(&self) -> Option<usize> {
        match self {
            ParseError::Truncated { need, .. } => Some(*need),
            _ => None,
        }
    }
}

/// A CDB builder was given a value its fields cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CdbError {
    /// A value is larger than its CDB field.
    #[error("{command}: {field} {value} exceeds the field maximum {max}")]
    FieldOverflow {
        /// The command being built.
        command: &'static str,
        /// The field.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The largest value the field holds.
        max: u64,
    },
    /// `blocks * block_len` does not fit iSCSI's 32-bit Expected Data
    /// Transfer Length (RFC 7143 section 11.3.4).
    #[error("{command}: {blocks} blocks of {block_len} bytes exceed a 32-bit transfer length")]
    TransferTooLong {
        /// The command being built.
        command: &'static str,
        /// Blocks requested.
        blocks: u32,
        /// Logical block length in bytes.
        block_len: u32,
    },
    /// The range `lba .. lba + blocks` passes the end of the 64-bit LBA space.
    #[error("{command}: LBA {lba} + {blocks} blocks passes the end of the LBA space")]
    LbaOverflow {
        /// The command being built.
        command: &'static str,
        /// First LBA.
        lba: u64,
        /// Blocks requested.
        blocks: u64,
    },
    /// A value fits its field but has a meaning the builder refuses.
    #[error("{command}: {field} {value} {problem}")]
    InvalidValue {
        /// The command being built.
        command: &'static str,
        /// The field.
        field: &'static str,
        /// The value given.
        value: u64,
        /// Why it is refused.
        problem: &'static str,
    },
}
