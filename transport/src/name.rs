//! iSCSI names (RFC 7143 section 4.2.7, RFC 3722).
//!
//! An [`IscsiName`] is validated and normalised once, when parsed, so two
//! names that denote the same node compare equal as strings.
//!
//! Simplification of stringprep (RFC 3722): we accept ASCII names only and
//! fold upper case to lower case. Non-ASCII names, which RFC 3722 would map
//! (NFKC, case folding, prohibited output tables), are refused with
//! [`NameError::NonAscii`] rather than normalised wrongly. RFC 7143 section
//! 4.2.7.2 lists what this leaves: "For those using only ASCII characters
//! (U+0000 to U+007F), the following characters are allowed: - ASCII dash
//! character ('-' = U+002d) - ASCII dot character ('.' = U+002e) - ASCII
//! colon character (':' = U+003a) - ASCII lower-case characters ('a'..'z' =
//! U+0061..U+007a) - ASCII digit characters ('0'..'9' = U+0030..U+0039)"
//! and "In addition, any upper-case characters input via a user interface
//! MUST be mapped to their lower-case equivalents."
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

use std::fmt;
use std::str::FromStr;

/// A valid iSCSI name, in lower case.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IscsiName(String);

/// The three name formats (RFC 7143 sections 4.2.7.4-4.2.7.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NameType {
    /// `iqn.yyyy-mm.reversed.domain[:anything]`.
    Iqn,
    /// `eui.` + 16 hex digits (IEEE EUI-64).
    Eui,
    /// `naa.` + 16 or 32 hex digits (T11 NAA).
    Naa,
}

impl IscsiName {
    /// RFC 7143 section 4.2.7.2: "The UTF-8 encoding of the name is not
    /// larger than 223 bytes."
    pub const MAX_LEN: usize = 223;

    /// Validates and normalises (lower-cases) a name.
    pub fn parse(input: &str) -> Result<IscsiName, NameError> {
        let shown = || shorten(input);
        if input.is_empty() {
            return Err(NameError::Empty);
        }
        if input.len() > IscsiName::MAX_LEN {
            return Err(NameError::TooLong { name: shown(), len: input.len() });
        }
        let mut name = String::with_capacity(input.len());
        for (position, ch) in input.char_indices() {
            if !ch.is_ascii() {
                return Err(NameError::NonAscii { name: shown(), ch, position });
            }
            let ch = ch.to_ascii_lowercase();
            if !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '-' | '.' | ':')) {
                return Err(NameError::InvalidChar { name: shown(), ch, position });
            }
            name.push(ch);
        }
        if let Some(rest) = name.strip_prefix("iqn.") {
            check_iqn(rest).map_err(|reason| NameError::InvalidIqn { name: shown(), reason })?;
        } else if let Some(rest) = name.strip_prefix("eui.") {
            // RFC 7143 section 4.2.7.5: "The format is "eui." followed by an
            // EUI-64 identifier (16 ASCII-encoded hexadecimal digits)."
            if !(rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_hexdigit())) {
                return Err(NameError::InvalidHex { name: shown(), prefix: "eui.", expected: "16" });
            }
        } else if let Some(rest) = name.strip_prefix("naa.") {
            // RFC 7143 section 4.2.7.6: "The format is "naa." followed by an
            // NAA identifier represented in ASCII-encoded hexadecimal
            // digits." NAA identifiers are 64 or 128 bits.
            if !((rest.len() == 16 || rest.len() == 32) && rest.bytes().all(|b| b.is_ascii_hexdigit())) {
                return Err(NameError::InvalidHex { name: shown(), prefix: "naa.", expected: "16 or 32" });
            }
        } else {
            return Err(NameError::UnknownType { name: shown() });
        }
        Ok(IscsiName(name))
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Which of the three formats this name uses.
    pub fn name_type(&self) -> NameType {
        if self.0.starts_with("iqn.") {
            NameType::Iqn
        } else if self.0.starts_with("eui.") {
            NameType::Eui
        } else {
            NameType::Naa
        }
    }

    /// The name as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Checks what follows `iqn.`: `yyyy-mm.reversed.domain[:anything]`.
///
/// RFC 7143 section 4.2.7.4: "A date code, in yyyy-mm format. ... All four
/// digits in the year must be present. Both digits of the month must be
/// present, with January == "01" and December == "12". The dash must be
/// included." followed by "A dot "."" and "The reversed domain name of the
/// naming authority", then "An optional, colon (:) prefixed, string".
fn check_iqn(rest: &str) -> Result<(), IqnError> {
    let bytes = rest.as_bytes();
    let date = bytes.get(..7).ok_or(IqnError::Date)?;
    let date_ok = date.iter().enumerate().all(|(i, b)| if i == 4 { *b == b'-' } else { b.is_ascii_digit() });
    if !date_ok {
        return Err(IqnError::Date);
    }
    let month = rest.get(5..7).and_then(|m| m.parse::<u8>().ok()).unwrap_or(0);
    if !(1..=12).contains(&month) {
        return Err(IqnError::Month);
    }
    let Some(after_date) = rest.get(7..) else {
        return Err(IqnError::Date);
    };
    let Some(authority) = after_date.strip_prefix('.') else {
        return Err(IqnError::MissingDot);
    };
    let domain = authority.split_once(':').map_or(authority, |(d, _)| d);
    if domain.is_empty() {
        return Err(IqnError::NoDomain);
    }
    for label in domain.split('.') {
        // Host name labels (RFC 1123): letters, digits and inner hyphens.
        if label.is_empty() || label.len() > 63 || label.starts_with('-') || label.ends_with('-') {
            return Err(IqnError::Domain(label.to_owned()));
        }
    }
    Ok(())
}

/// What is wrong with an `iqn.` name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IqnError {
    /// The date is not `yyyy-mm`.
    #[error("the date after \"iqn.\" must be yyyy-mm")]
    Date,
    /// The month is not 01..12.
    #[error("the month of the date must be 01 to 12")]
    Month,
    /// No dot between the date and the domain.
    #[error("a dot must follow the date")]
    MissingDot,
    /// Nothing after the date.
    #[error("the reversed domain name of the naming authority is missing")]
    NoDomain,
    /// A bad domain label.
    #[error("domain label {0:?} is empty, longer than 63 characters, or starts or ends with '-'")]
    Domain(String),
}

impl fmt::Display for IscsiName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for IscsiName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IscsiName::parse(s)
    }
}

impl AsRef<str> for IscsiName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for IscsiName {
    type Error = NameError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        IscsiName::parse(s)
    }
}

/// An invalid iSCSI name. Every variant carries the name (shortened to 256
/// bytes) so messages can be logged as they are.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The empty string.
    #[error("the iSCSI name is empty")]
    Empty,
    /// Over 223 bytes.
    #[error("iSCSI name {name:?} is {len} bytes long; at most 223 are allowed (RFC 7143 section 4.2.7.2)")]
    TooLong {
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A character outside a-z, 0-9, '-', '.', ':' (after case folding).
    #[error(
        "iSCSI name {name:?} has {ch:?} at byte {position}; only a-z, 0-9, '-', '.' and ':' are allowed \
         (RFC 7143 section 4.2.7.2)"
    )]
    InvalidChar {
        /// The name.
        name: String,
        /// The character.
        ch: char,
        /// Its byte position.
        position: usize,
    },
    /// A non-ASCII character (see the module documentation).
    #[error(
        "iSCSI name {name:?} has the non-ASCII character {ch:?} at byte {position}; mpio accepts ASCII names \
         only (RFC 3722 stringprep is not implemented)"
    )]
    NonAscii {
        /// The name.
        name: String,
        /// The character.
        ch: char,
        /// Its byte position.
        position: usize,
    },
    /// Not `iqn.`, `eui.` or `naa.`.
    #[error("iSCSI name {name:?} must start with \"iqn.\", \"eui.\" or \"naa.\" (RFC 7143 section 4.2.7.3)")]
    UnknownType {
        /// The name.
        name: String,
    },
    /// A malformed `iqn.` name.
    #[error("iSCSI name {name:?}: {reason} (RFC 7143 section 4.2.7.4)")]
    InvalidIqn {
        /// The name.
        name: String,
        /// What is wrong.
        reason: IqnError,
    },
    /// `eui.`/`naa.` not followed by the right number of hex digits.
    #[error("iSCSI name {name:?}: {prefix} must be followed by {expected} hexadecimal digits")]
    InvalidHex {
        /// The name.
        name: String,
        /// `eui.` or `naa.`.
        prefix: &'static str,
        /// How many digits.
        expected: &'static str,
    },
}

fn shorten(s: &str) -> String {
    let mut end = s.len().min(256);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn valid_names_rfc7143_4_2_7() {
        let cases = [
            ("iqn.2001-04.com.example:storage:diskarrays-sn-a8675309", NameType::Iqn),
            ("iqn.2001-04.com.example", NameType::Iqn),
            ("iqn.2003-01.org.linux-iscsi.host.x8664:sn.abcdef", NameType::Iqn),
            ("iqn.1991-05.com.microsoft:host-1.example.com", NameType::Iqn),
            ("iqn.2004-10.com.ubuntu:01:6d1e7d7f2a", NameType::Iqn),
            ("iqn.2024-12.localdomain:x", NameType::Iqn),
            ("iqn.2020-01.com.example:", NameType::Iqn),
            ("eui.02004567a425678d", NameType::Eui),
            ("naa.52004567ba64678d", NameType::Naa),
            ("naa.62004567ba64678d0123456789abcdef", NameType::Naa),
        ];
        for (s, t) in cases {
            let n = IscsiName::parse(s).unwrap();
            assert_eq!(n.as_str(), s);
            assert_eq!(n.name_type(), t);
            assert_eq!(n.to_string(), s);
            assert_eq!(s.parse::<IscsiName>().unwrap(), n);
        }
    }

    #[test]
    fn upper_case_is_folded_rfc7143_4_2_7_2() {
        let n = IscsiName::parse("IQN.2024-01.Com.Example:Host1").unwrap();
        assert_eq!(n.as_str(), "iqn.2024-01.com.example:host1");
        assert_eq!(IscsiName::parse("eui.02004567A425678D").unwrap().as_str(), "eui.02004567a425678d");
        assert_eq!(IscsiName::parse("NAA.52004567BA64678D").unwrap().as_str(), "naa.52004567ba64678d");
    }

    #[test]
    fn length_limit_223_bytes_rfc7143_4_2_7_2() {
        let prefix = "iqn.2024-01.com.example:";
        let exact = format!("{prefix}{}", "a".repeat(223 - prefix.len()));
        assert_eq!(exact.len(), 223);
        assert!(IscsiName::parse(&exact).is_ok());
        let over = format!("{exact}b");
        assert_eq!(over.len(), 224);
        assert!(matches!(IscsiName::parse(&over), Err(NameError::TooLong { len: 224, .. })));
    }

    #[test]
    fn invalid_characters_are_named_with_their_position_rfc7143_4_2_7_2() {
        let cases = [
            ("iqn.2024-01.com.example:host_1", '_', 28),
            ("iqn.2024-01.com.example:host 1", ' ', 28),
            ("iqn.2024-01.com.example:a/b", '/', 25),
            ("iqn.2024-01.com.example:a\u{0}", '\u{0}', 25),
        ];
        for (s, ch, position) in cases {
            let e = IscsiName::parse(s).unwrap_err();
            assert_eq!(e, NameError::InvalidChar { name: s.to_owned(), ch, position }, "{s}");
            assert!(e.to_string().contains(&format!("{ch:?} at byte {position}")), "{e}");
        }
        assert!(matches!(
            IscsiName::parse("iqn.2024-01.com.example:café"),
            Err(NameError::NonAscii { ch: 'é', position: 27, .. })
        ));
    }

    #[test]
    fn malformed_names_rfc7143_4_2_7_3_to_6() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("iqn", "must start with"),
            ("iscsi.2024-01.com.example", "must start with"),
            ("iqn.", "yyyy-mm"),
            ("iqn.24-01.com.example", "yyyy-mm"),
            ("iqn.2024-1.com.example", "yyyy-mm"),
            ("iqn.2024.01.com.example", "yyyy-mm"),
            ("iqn.2024-13.com.example", "01 to 12"),
            ("iqn.2024-00.com.example", "01 to 12"),
            ("iqn.2024-01", "dot must follow"),
            ("iqn.2024-01com.example", "dot must follow"),
            ("iqn.2024-01.", "missing"),
            ("iqn.2024-01.:x", "missing"),
            ("iqn.2024-01.com..example", "domain label"),
            ("iqn.2024-01.-com.example", "domain label"),
            ("iqn.2024-01.com.example.:x", "domain label"),
            ("eui.02004567a425678", "16 hexadecimal"),
            ("eui.02004567a425678d0", "16 hexadecimal"),
            ("eui.02004567a425678g", "16 hexadecimal"),
            ("naa.52004567ba64678d01", "16 or 32"),
            ("naa.", "16 or 32"),
        ];
        for (s, msg) in cases {
            let e = IscsiName::parse(s).unwrap_err();
            assert!(e.to_string().contains(msg), "{s}: {e}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,300}") {
            let _ = IscsiName::parse(&s);
        }

        #[test]
        fn parse_is_idempotent(s in "[iI][qQ][nN]\\.[0-9]{4}-(0[1-9]|1[0-2])\\.[a-zA-Z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,3}(:[a-zA-Z0-9.:-]{0,40})?") {
            let n = IscsiName::parse(&s).unwrap();
            prop_assert_eq!(IscsiName::parse(n.as_str()).unwrap(), n.clone());
            prop_assert_eq!(n.as_str(), s.to_ascii_lowercase());
        }
    }
}
