//! Value encodings of text keys (RFC 7143 section 6.1).
//!
//! The helpers here know nothing about keys; callers wrap a [`ValueError`]
//! with the key name so the user sees which pair was wrong.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

use std::fmt;

/// The reserved constants a responder may answer instead of a value.
///
/// RFC 7143 section 6.2: "The constants "None", "Reject", "Irrelevant", and
/// "NotUnderstood" are reserved and MUST ONLY be used as described here."
/// (`None` is an ordinary list value, so it is not part of this enum.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpecialValue {
    /// The responder does not know the key.
    NotUnderstood,
    /// The key has no meaning in this context (e.g. session keys in a
    /// discovery session).
    Irrelevant,
    /// The responder refuses the offered value; the key keeps its current
    /// (default) value.
    Reject,
}

impl SpecialValue {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SpecialValue::NotUnderstood => "NotUnderstood",
            SpecialValue::Irrelevant => "Irrelevant",
            SpecialValue::Reject => "Reject",
        }
    }

    /// Recognises a reserved constant; values are case sensitive
    /// (RFC 7143 section 6.1).
    pub fn parse(value: &str) -> Option<SpecialValue> {
        match value {
            "NotUnderstood" => Some(SpecialValue::NotUnderstood),
            "Irrelevant" => Some(SpecialValue::Irrelevant),
            "Reject" => Some(SpecialValue::Reject),
            _ => None,
        }
    }
}

impl fmt::Display for SpecialValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that does not follow the encoding its key requires.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The value is empty where a number, boolean or binary string is needed.
    #[error("the value is empty")]
    Empty,
    /// Not a decimal, `0x` hex or `0b` base64 constant.
    #[error("not a number (expected a decimal, 0x-hex or 0b-base64 constant)")]
    NotANumber,
    /// A numerical value must be below 2**64 (RFC 7143 section 6.1).
    #[error("the number does not fit in 64 bits")]
    Overflow,
    /// A `0x` constant with no digits or a non-hex digit.
    #[error("invalid hex constant")]
    BadHex,
    /// A `0b` constant with no digits, a character outside the base64
    /// alphabet, or misplaced padding.
    #[error("invalid base64 constant")]
    BadBase64,
    /// A binary value must be encoded as `0x` hex or `0b` base64.
    #[error("a binary value must start with 0x or 0b")]
    NotBinary,
    /// Booleans are exactly `Yes` or `No`.
    #[error("not a boolean (expected Yes or No)")]
    NotBoolean,
}

/// Parses a number: a decimal constant, a `0x`/`0X` hex constant or a
/// `0b`/`0B` base64 constant.
///
/// RFC 7143 section 6.1: "numerical-value: An unsigned integer always less
/// than 2**64 encoded as a decimal-constant or a hex-constant." Base64 is
/// accepted as well because regular-binary-values (e.g.
/// TargetPortalGroupTag) may use it, and accepting it costs nothing. Leading
/// zeros in decimals are tolerated although the RFC discourages them.
pub fn parse_number(value: &str) -> Result<u64, ValueError> {
    if value.is_empty() {
        return Err(ValueError::Empty);
    }
    if let Some(hex) = value.strip_prefix("0x").or_else(|| value.strip_prefix("0X")) {
        return parse_hex_u64(hex);
    }
    if let Some(b64) = value.strip_prefix("0b").or_else(|| value.strip_prefix("0B")) {
        let bytes = decode_base64(b64)?;
        let mut n: u64 = 0;
        for b in bytes {
            if n >> 56 != 0 {
                return Err(ValueError::Overflow);
            }
            n = (n << 8) | u64::from(b);
        }
        return Ok(n);
    }
    let mut n: u64 = 0;
    for c in value.bytes() {
        if !c.is_ascii_digit() {
            return Err(ValueError::NotANumber);
        }
        n = n.checked_mul(10).and_then(|n| n.checked_add(u64::from(c - b'0'))).ok_or(ValueError::Overflow)?;
    }
    Ok(n)
}

fn parse_hex_u64(hex: &str) -> Result<u64, ValueError> {
    if hex.is_empty() {
        return Err(ValueError::BadHex);
    }
    let mut n: u64 = 0;
    for c in hex.bytes() {
        let d = hex_digit(c).ok_or(ValueError::BadHex)?;
        if n >> 60 != 0 {
            return Err(ValueError::Overflow);
        }
        n = (n << 4) | u64::from(d);
    }
    Ok(n)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Formats a number the way we send it: decimal, no leading zeros.
pub fn format_number(n: u64) -> String {
    n.to_string()
}

/// Parses a boolean-value: exactly `Yes` or `No` (RFC 7143 section 6.1:
/// "boolean-value: The string "Yes" or "No"", and keys and values are case
/// sensitive).
pub fn parse_bool(value: &str) -> Result<bool, ValueError> {
    match value {
        "Yes" => Ok(true),
        "No" => Ok(false),
        "" => Err(ValueError::Empty),
        _ => Err(ValueError::NotBoolean),
    }
}

/// The wire spelling of a boolean.
pub fn format_bool(b: bool) -> &'static str {
    if b { "Yes" } else { "No" }
}

/// Splits a list-of-values at its commas (RFC 7143 section 6.1:
/// "list-of-values: A sequence of text-values separated by a comma").
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',')
}

/// Decodes a binary value given as a `0x` hex or `0b` base64 constant (used
/// by CHAP_C and CHAP_R).
///
/// RFC 7143 section 6.1: hex constants "have an implied length of 4 bits for
/// each hexadecimal digit", so an odd number of digits is read as if a
/// leading `0` were present.
pub fn decode_binary(value: &str) -> Result<Vec<u8>, ValueError> {
    if value.is_empty() {
        return Err(ValueError::Empty);
    }
    if let Some(hex) = value.strip_prefix("0x").or_else(|| value.strip_prefix("0X")) {
        return decode_hex(hex);
    }
    if let Some(b64) = value.strip_prefix("0b").or_else(|| value.strip_prefix("0B")) {
        return decode_base64(b64);
    }
    Err(ValueError::NotBinary)
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, ValueError> {
    if hex.is_empty() {
        return Err(ValueError::BadHex);
    }
    let mut out = Vec::with_capacity(hex.len().div_ceil(2));
    let mut digits = hex.bytes();
    if hex.len() % 2 == 1 {
        let first = digits.next().and_then(hex_digit).ok_or(ValueError::BadHex)?;
        out.push(first);
    }
    while let Some(hi) = digits.next() {
        let hi = hex_digit(hi).ok_or(ValueError::BadHex)?;
        let lo = digits.next().and_then(hex_digit).ok_or(ValueError::BadHex)?;
        out.push((hi << 4) | lo);
    }
    Ok(out)
}

/// Encodes bytes as a `0x` hex constant (lower-case digits).
pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for &b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            // `nibble` < 16, so the lookup cannot miss; the fallback keeps the
            // code panic-free.
            s.push(char::from(DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0')));
        }
    }
    s
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_digit(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes the digits of a base64 constant (RFC 4648 alphabet, as RFC 7143
/// section 6.1 requires). Padding is optional but, when present, must close
/// the string.
fn decode_base64(b64: &str) -> Result<Vec<u8>, ValueError> {
    let data = b64.trim_end_matches('=');
    let padding = b64.len() - data.len();
    if data.is_empty() || padding > 2 {
        return Err(ValueError::BadBase64);
    }
    // One leftover digit carries only 6 bits: not a whole byte.
    if data.len() % 4 == 1 || (padding > 0 && !(data.len() + padding).is_multiple_of(4)) {
        return Err(ValueError::BadBase64);
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in data.bytes() {
        let d = base64_digit(c).ok_or(ValueError::BadBase64)?;
        acc = (acc << 6) | u32::from(d);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Ok(out)
}

/// Encodes bytes as a `0b` base64 constant with padding.
pub fn encode_base64(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len().div_ceil(3) * 4);
    s.push_str("0b");
    let digit = |i: u32| char::from(BASE64.get((i & 0x3f) as usize).copied().unwrap_or(b'A'));
    for chunk in bytes.chunks(3) {
        let mut buf = [0u8; 3];
        for (dst, src) in buf.iter_mut().zip(chunk) {
            *dst = *src;
        }
        let n = (u32::from(buf[0]) << 16) | (u32::from(buf[1]) << 8) | u32::from(buf[2]);
        s.push(digit(n >> 18));
        s.push(digit(n >> 12));
        s.push(if chunk.len() > 1 { digit(n >> 6) } else { '=' });
        s.push(if chunk.len() > 2 { digit(n) } else { '=' });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn numbers_rfc7143_6_1() {
        let cases: &[(&str, Result<u64, ValueError>)] = &[
            ("0", Ok(0)),
            ("262144", Ok(262_144)),
            ("0x40000", Ok(262_144)),
            ("0X3fFf", Ok(0x3fff)),
            ("0bAAE=", Ok(1)),
            ("0bAQAB", Ok(0x01_00_01)),
            ("18446744073709551615", Ok(u64::MAX)),
            ("18446744073709551616", Err(ValueError::Overflow)),
            ("0xffffffffffffffff", Ok(u64::MAX)),
            ("0x1ffffffffffffffff", Err(ValueError::Overflow)),
            ("", Err(ValueError::Empty)),
            ("0x", Err(ValueError::BadHex)),
            ("0xg", Err(ValueError::BadHex)),
            ("12a", Err(ValueError::NotANumber)),
            ("+5", Err(ValueError::NotANumber)),
            ("-1", Err(ValueError::NotANumber)),
            (" 1", Err(ValueError::NotANumber)),
            ("0b", Err(ValueError::BadBase64)),
            ("0b!!!!", Err(ValueError::BadBase64)),
        ];
        for (input, want) in cases {
            assert_eq!(&parse_number(input), want, "input {input:?}");
        }
    }

    #[test]
    fn booleans_are_case_sensitive_rfc7143_6_1() {
        assert_eq!(parse_bool("Yes"), Ok(true));
        assert_eq!(parse_bool("No"), Ok(false));
        assert_eq!(parse_bool("yes"), Err(ValueError::NotBoolean));
        assert_eq!(parse_bool("NO"), Err(ValueError::NotBoolean));
        assert_eq!(parse_bool(""), Err(ValueError::Empty));
        assert_eq!(format_bool(true), "Yes");
        assert_eq!(format_bool(false), "No");
    }

    #[test]
    fn special_values_rfc7143_6_2() {
        for sv in [SpecialValue::NotUnderstood, SpecialValue::Irrelevant, SpecialValue::Reject] {
            assert_eq!(SpecialValue::parse(sv.as_str()), Some(sv));
        }
        assert_eq!(SpecialValue::parse("reject"), None);
        assert_eq!(SpecialValue::parse("None"), None);
    }

    #[test]
    fn lists_rfc7143_6_1() {
        assert_eq!(split_list("CRC32C,None").collect::<Vec<_>>(), ["CRC32C", "None"]);
        assert_eq!(split_list("None").collect::<Vec<_>>(), ["None"]);
    }

    #[test]
    fn binary_values_rfc7143_6_1() {
        assert_eq!(decode_binary("0x0102ff"), Ok(vec![1, 2, 0xff]));
        // Odd digit count: 4 bits per digit, leading nibble.
        assert_eq!(decode_binary("0xabc"), Ok(vec![0x0a, 0xbc]));
        assert_eq!(decode_binary("0bAQID"), Ok(vec![1, 2, 3]));
        assert_eq!(decode_binary("0bAQI="), Ok(vec![1, 2]));
        assert_eq!(decode_binary("0bAQI"), Ok(vec![1, 2]));
        assert_eq!(decode_binary("0bAQ=="), Ok(vec![1]));
        assert_eq!(decode_binary("0bA"), Err(ValueError::BadBase64));
        assert_eq!(decode_binary("0bAQ="), Err(ValueError::BadBase64));
        assert_eq!(decode_binary("0bA=Q="), Err(ValueError::BadBase64));
        assert_eq!(decode_binary("1234"), Err(ValueError::NotBinary));
        assert_eq!(decode_binary(""), Err(ValueError::Empty));
        assert_eq!(encode_hex(&[0, 0xab, 0x10]), "0x00ab10");
        assert_eq!(encode_base64(&[1, 2, 3, 4]), "0bAQIDBA==");
    }

    proptest! {
        #[test]
        fn hex_and_base64_round_trip(bytes in proptest::collection::vec(any::<u8>(), 1..100)) {
            prop_assert_eq!(decode_binary(&encode_hex(&bytes)), Ok(bytes.clone()));
            prop_assert_eq!(decode_binary(&encode_base64(&bytes)), Ok(bytes));
        }

        #[test]
        fn numbers_round_trip(n in any::<u64>()) {
            prop_assert_eq!(parse_number(&format_number(n)), Ok(n));
            prop_assert_eq!(parse_number(&format!("0x{n:x}")), Ok(n));
        }

        #[test]
        fn value_parsers_never_panic(s in ".{0,40}") {
            let _ = parse_number(&s);
            let _ = decode_binary(&s);
            let _ = parse_bool(&s);
        }
    }
}
