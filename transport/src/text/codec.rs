//! The key=value wire format of Login and Text PDU data segments
//! (RFC 7143 section 6.1).
//!
//! A logical text data segment is `key=value\0` repeated. It may span several
//! PDUs: every PDU but the last has the C (continue) bit set, and a pair may
//! be cut anywhere. [`TextAccumulator`] glues the pieces back together (with a
//! size cap, so a hostile target cannot make us allocate without bound) and
//! [`split_segments`] cuts an outgoing one into PDU-sized pieces.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

use std::collections::HashSet;
use std::fmt;

/// One key=value pair.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyValue {
    /// The key name: whatever precedes the first `=`.
    pub key: String,
    /// The value: whatever follows the first `=` up to the NUL delimiter.
    pub value: String,
}

impl KeyValue {
    /// Builds a pair.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
        KeyValue { key: key.into(), value: value.into() }
    }
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}={:?}", self.key, self.value)
    }
}

/// RFC 7143 section 6.1: a standard-label "must not exceed 63 characters".
pub const MAX_KEY_LEN: usize = 63;

/// RFC 7143 section 6.1: "If not otherwise specified, the maximum length of a
/// simple-value (not its encoded representation) is 255 bytes, not including
/// the delimiter (comma or zero byte)."
pub const MAX_SIMPLE_VALUE_LEN: usize = 255;

/// Our cap for the values the RFC lets grow past 255 bytes (large binary
/// values such as CHAP_C and CHAP_R, lists, extension keys). RFC 7143 section
/// 6.1: "Any iSCSI target or initiator MUST support receiving at least 8192
/// bytes of key=value data in a negotiation sequence."
pub const MAX_VALUE_LEN: usize = 8192;

/// Keys whose values are large binary strings (authentication exchanges,
/// RFC 7143 section 12): only the general [`MAX_VALUE_LEN`] cap applies.
const LARGE_BINARY_KEYS: &[&str] = &[
    "CHAP_C",
    "CHAP_R",
    "KRB_AP_REQ",
    "KRB_AP_REP",
    "SRP_s",
    "SRP_A",
    "SRP_B",
    "SRP_M",
    "SRP_HM",
    "SPKM_REQ",
    "SPKM_ERROR",
    "SPKM_REP_TI",
    "SPKM_REP_IT",
];

/// Keys whose value is a list-of-values: each element is a simple value of
/// at most 255 bytes, the whole list is capped at [`MAX_VALUE_LEN`].
const LIST_KEYS: &[&str] =
    &["AuthMethod", "HeaderDigest", "DataDigest", "CHAP_A", "TaskReporting", "X#NodeArchitecture", "SRP_GROUP"];

/// Standard keys with a simple value: 255 bytes at most.
const SIMPLE_KEYS: &[&str] = &[
    "CHAP_I",
    "CHAP_N",
    "MaxConnections",
    "SendTargets",
    "TargetName",
    "InitiatorName",
    "TargetAlias",
    "InitiatorAlias",
    "TargetAddress",
    "TargetPortalGroupTag",
    "InitialR2T",
    "ImmediateData",
    "MaxRecvDataSegmentLength",
    "MaxBurstLength",
    "FirstBurstLength",
    "DefaultTime2Wait",
    "DefaultTime2Retain",
    "MaxOutstandingR2T",
    "DataPDUInOrder",
    "DataSequenceInOrder",
    "ErrorRecoveryLevel",
    "SessionType",
    "iSCSIProtocolLevel",
    "OFMarker",
    "IFMarker",
    "OFMarkInt",
    "IFMarkInt",
    "SRP_U",
    "TargetAuth",
];

/// How long a value may be, for a given key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueLimit {
    /// A simple value: at most this many bytes.
    Simple(usize),
    /// A list: each element at most `element` bytes, the whole at most `total`.
    List {
        /// Limit of one comma-separated element.
        element: usize,
        /// Limit of the whole value.
        total: usize,
    },
}

/// The value limit for `key`: 255 bytes for standard simple keys, 255 per
/// element for list keys, [`MAX_VALUE_LEN`] for large binary values and for
/// keys we do not know (private `X-` and public `X#` extensions, future
/// keys), which we answer NotUnderstood anyway.
pub fn value_limit(key: &str) -> ValueLimit {
    if LIST_KEYS.contains(&key) {
        ValueLimit::List { element: MAX_SIMPLE_VALUE_LEN, total: MAX_VALUE_LEN }
    } else if SIMPLE_KEYS.contains(&key) && !LARGE_BINARY_KEYS.contains(&key) {
        ValueLimit::Simple(MAX_SIMPLE_VALUE_LEN)
    } else {
        // Large binary values, unknown keys, private `X-` and public `X#`
        // extensions.
        ValueLimit::Simple(MAX_VALUE_LEN)
    }
}

/// Whether `key` may appear more than once in one logical text data segment.
///
/// RFC 7143 section 6.3: "Neither the initiator nor the target should attempt
/// to declare or negotiate a parameter more than once during login except
/// for responses to specific keys that explicitly allow repeated key
/// declarations (e.g., TargetAddress)." A SendTargets response (RFC 7143
/// appendix C) also lists one TargetName per target.
pub fn key_may_repeat(key: &str) -> bool {
    matches!(key, "TargetAddress" | "TargetName")
}

/// RFC 7143 section 6.1: "standard-label: A string of one or more characters
/// that consist of letters, digits, dot, minus, plus, commercial at, or
/// underscore." `#` is accepted only in the `X#` prefix of public extension
/// keys (RFC 7143 section 13.22 and 13.26, e.g. `X#NodeArchitecture`).
fn check_key(key: &str) -> Result<(), TextError> {
    if key.is_empty() {
        return Err(TextError::EmptyKey);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(TextError::KeyTooLong { key: truncate(key, MAX_KEY_LEN), len: key.len() });
    }
    for (position, ch) in key.char_indices() {
        let ok = ch.is_ascii_alphanumeric()
            || matches!(ch, '.' | '-' | '+' | '@' | '_')
            || (ch == '#' && position == 1 && key.starts_with('X'));
        if !ok {
            return Err(TextError::InvalidKeyChar { key: key.to_owned(), ch, position });
        }
    }
    Ok(())
}

fn check_value(key: &str, value: &str) -> Result<(), TextError> {
    match value_limit(key) {
        ValueLimit::Simple(limit) => {
            if value.len() > limit {
                return Err(TextError::ValueTooLong { key: key.to_owned(), len: value.len(), limit });
            }
        }
        ValueLimit::List { element, total } => {
            if value.len() > total {
                return Err(TextError::ValueTooLong { key: key.to_owned(), len: value.len(), limit: total });
            }
            if let Some(long) = value.split(',').find(|e| e.len() > element) {
                return Err(TextError::ValueTooLong { key: key.to_owned(), len: long.len(), limit: element });
            }
        }
    }
    Ok(())
}

/// Decodes a complete logical text data segment into its pairs.
///
/// RFC 7143 section 6.1: "Every key=value pair, including the last or only
/// pair in a LTDS, MUST be followed by one null (0x00) delimiter." We are
/// lenient where nothing is ambiguous: trailing NUL padding (some targets
/// count the 4-byte padding in DataSegmentLength), empty pairs, and a last
/// pair without its NUL are accepted.
///
/// Rejected: a pair without `=`, an empty key, a key with characters outside
/// the standard-label set or longer than 63 bytes, a value over its
/// [`value_limit`], non-UTF-8 text, and a key given twice unless
/// [`key_may_repeat`].
pub fn decode_pairs(data: &[u8]) -> Result<Vec<KeyValue>, TextError> {
    let mut pairs = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut offset = 0usize;
    for raw in data.split(|&b| b == 0) {
        let start = offset;
        offset += raw.len() + 1;
        if raw.is_empty() {
            continue;
        }
        let Some(eq) = raw.iter().position(|&b| b == b'=') else {
            return Err(TextError::MissingEquals { offset: start, text: lossy_prefix(raw) });
        };
        let (key_bytes, rest) = raw.split_at(eq);
        let value_bytes = rest.get(1..).unwrap_or_default();
        // A key is ASCII when valid; a non-UTF-8 key is reported as an invalid
        // character rather than as a UTF-8 problem of an unnamed pair.
        let key = match std::str::from_utf8(key_bytes) {
            Ok(k) => k,
            Err(_) => {
                let lossy = String::from_utf8_lossy(key_bytes);
                let (position, ch) =
                    lossy.char_indices().find(|&(_, c)| c == char::REPLACEMENT_CHARACTER).unwrap_or((0, '?'));
                return Err(TextError::InvalidKeyChar { key: truncate(&lossy, MAX_KEY_LEN), ch, position });
            }
        };
        check_key(key)?;
        let value = std::str::from_utf8(value_bytes)
            .map_err(|e| TextError::NotUtf8 { key: key.to_owned(), offset: start + eq + 1 + e.valid_up_to() })?;
        check_value(key, value)?;
        if !seen.insert(key) && !key_may_repeat(key) {
            return Err(TextError::DuplicateKey { key: key.to_owned() });
        }
        pairs.push(KeyValue::new(key, value));
    }
    Ok(pairs)
}

/// Appends one `key=value\0` to `out`.
///
/// No check is made: we only encode pairs we built ourselves.
pub fn encode_pair(out: &mut Vec<u8>, key: &str, value: &str) {
    out.reserve(key.len() + value.len() + 2);
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value.as_bytes());
    out.push(0);
}

/// Appends every pair to `out` as `key=value\0`.
pub fn encode_pairs(pairs: &[KeyValue], out: &mut Vec<u8>) {
    for p in pairs {
        encode_pair(out, &p.key, &p.value);
    }
}

/// Collects the data segments of a multi-PDU Login or Text exchange.
///
/// RFC 7143 section 6.1: "Data segments in a series of PDUs that have the C
/// bit set to 1 and end with a PDU that has the C bit set to 0, or that
/// include a single PDU that has the C bit set to 0, have to be considered as
/// forming a single logical-text-data-segment (LTDS)." Push every segment,
/// and [`take`](Self::take) the whole once a PDU with C=0 arrived.
#[derive(Debug, Clone)]
pub struct TextAccumulator {
    buf: Vec<u8>,
    limit: usize,
}

impl TextAccumulator {
    /// Default cap: 64 KiB. RFC 7143 section 6.1 asks for at least 8192
    /// bytes, and for "at least 64 kilobytes" when authentication methods
    /// with very long items are in use.
    pub const DEFAULT_LIMIT: usize = 64 * 1024;

    /// An empty accumulator with the default cap.
    pub fn new() -> TextAccumulator {
        TextAccumulator::with_limit(TextAccumulator::DEFAULT_LIMIT)
    }

    /// An empty accumulator that refuses more than `limit` bytes in total.
    pub fn with_limit(limit: usize) -> TextAccumulator {
        TextAccumulator { buf: Vec::new(), limit }
    }

    /// Appends one PDU's data segment. Fails, without keeping anything of
    /// `segment`, when the total would exceed the cap.
    pub fn push(&mut self, segment: &[u8]) -> Result<(), TextError> {
        let total = self.buf.len().saturating_add(segment.len());
        if total > self.limit {
            return Err(TextError::TooLarge { len: total, limit: self.limit });
        }
        self.buf.extend_from_slice(segment);
        Ok(())
    }

    /// Returns the collected text and empties the accumulator.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Bytes collected so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was collected since the last [`take`](Self::take).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

impl Default for TextAccumulator {
    fn default() -> Self {
        TextAccumulator::new()
    }
}

/// One PDU's share of an outgoing logical text data segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextSegment<'a> {
    /// The bytes for this PDU's data segment.
    pub data: &'a [u8],
    /// More text follows: set the C bit (and clear F/T, RFC 7143 section 6.2:
    /// a PDU "that has the C bit set to 1 MUST NOT have the F/T bit set to 1").
    pub more: bool,
}

/// Iterator returned by [`split_segments`].
#[derive(Clone, Debug)]
pub struct TextSegments<'a> {
    rest: &'a [u8],
    max: usize,
    done: bool,
}

/// Cuts `data` into chunks of at most `max_len` bytes, the peer's
/// MaxRecvDataSegmentLength (8192 during login, RFC 7143 section 13.12).
///
/// Empty `data` yields one empty segment, since a Login or Text Request is
/// sent even with nothing to say. A `max_len` of 0 is treated as 1.
pub fn split_segments(data: &[u8], max_len: usize) -> TextSegments<'_> {
    TextSegments { rest: data, max: max_len.max(1), done: false }
}

impl<'a> Iterator for TextSegments<'a> {
    type Item = TextSegment<'a>;

    fn next(&mut self) -> Option<TextSegment<'a>> {
        if self.done {
            return None;
        }
        let n = self.max.min(self.rest.len());
        let (data, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        let more = !rest.is_empty();
        self.done = !more;
        Some(TextSegment { data, more })
    }
}

/// A malformed text data segment.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TextError {
    /// A pair has no `=` (RFC 7143 section 6.1: "A key-name is whatever
    /// precedes the first "=" in the key=value pair").
    #[error("text pair {text:?} at byte {offset} has no '=' (expected key=value)")]
    MissingEquals {
        /// Byte offset of the pair in the data.
        offset: usize,
        /// The start of the pair, lossily decoded.
        text: String,
    },
    /// `=value` with nothing before the `=`.
    #[error("text pair with an empty key")]
    EmptyKey,
    /// A key character outside letters, digits and `. - + @ _`.
    #[error(
        "key {key:?} has character {ch:?} at position {position}, outside the RFC 7143 key-name set (a-z A-Z 0-9 . - + @ _)"
    )]
    InvalidKeyChar {
        /// The offending key.
        key: String,
        /// The character.
        ch: char,
        /// Its byte position in the key.
        position: usize,
    },
    /// A key longer than 63 bytes.
    #[error("key {key:?}… is {len} bytes long; RFC 7143 section 6.1 allows at most 63")]
    KeyTooLong {
        /// The first 63 bytes of the key.
        key: String,
        /// Its length.
        len: usize,
    },
    /// A value longer than its key allows.
    #[error("value of {key} is {len} bytes long; at most {limit} are allowed (RFC 7143 section 6.1)")]
    ValueTooLong {
        /// The key.
        key: String,
        /// The value (or list element) length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The value is not UTF-8 (RFC 7143 section 6.1: key=value pairs are
    /// "encoded in UTF-8 Unicode").
    #[error("value of {key} is not valid UTF-8 (bad byte at offset {offset})")]
    NotUtf8 {
        /// The key.
        key: String,
        /// Offset of the first bad byte in the data.
        offset: usize,
    },
    /// A key given twice where the RFC forbids it.
    #[error("key {key} appears twice; RFC 7143 section 6.3 forbids declaring or negotiating a key more than once")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// More text than the accumulator accepts.
    #[error("text data of {len} bytes exceeds the limit of {limit} bytes; the target sent too much key=value data")]
    TooLarge {
        /// Total length that was attempted.
        len: usize,
        /// The cap.
        limit: usize,
    },
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_owned()
}

fn lossy_prefix(raw: &[u8]) -> String {
    let head = raw.get(..raw.len().min(64)).unwrap_or_default();
    String::from_utf8_lossy(head).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue::new(k, v)
    }

    #[test]
    fn decodes_pairs_rfc7143_6_1() {
        let data = b"HeaderDigest=None\0MaxRecvDataSegmentLength=8192\0TargetAlias=\0";
        assert_eq!(
            decode_pairs(data).unwrap(),
            vec![kv("HeaderDigest", "None"), kv("MaxRecvDataSegmentLength", "8192"), kv("TargetAlias", "")]
        );
    }

    #[test]
    fn value_is_everything_after_the_first_equals_rfc7143_6_1() {
        assert_eq!(decode_pairs(b"X-a=b=c\0").unwrap(), vec![kv("X-a", "b=c")]);
    }

    #[test]
    fn tolerates_padding_and_missing_last_nul() {
        assert_eq!(decode_pairs(b"A=1\0\0\0\0").unwrap(), vec![kv("A", "1")]);
        assert_eq!(decode_pairs(b"A=1\0\0B=2").unwrap(), vec![kv("A", "1"), kv("B", "2")]);
        assert_eq!(decode_pairs(b"").unwrap(), vec![]);
        assert_eq!(decode_pairs(b"\0\0").unwrap(), vec![]);
    }

    #[test]
    fn rejects_malformed_pairs_rfc7143_6_1() {
        let long_key = "K".repeat(64);
        let ok_key = "K".repeat(63);
        let cases: Vec<(Vec<u8>, Option<TextError>)> = vec![
            (b"NoEquals\0".to_vec(), Some(TextError::MissingEquals { offset: 0, text: "NoEquals".into() })),
            (b"A=1\0=x\0".to_vec(), Some(TextError::EmptyKey)),
            (b"Bad Key=1\0".to_vec(), Some(TextError::InvalidKeyChar { key: "Bad Key".into(), ch: ' ', position: 3 })),
            (b"Bad/=1\0".to_vec(), Some(TextError::InvalidKeyChar { key: "Bad/".into(), ch: '/', position: 3 })),
            (b"Y#x=1\0".to_vec(), Some(TextError::InvalidKeyChar { key: "Y#x".into(), ch: '#', position: 1 })),
            (b"X#NodeArchitecture=a\0".to_vec(), None),
            (b"X-com.example_key+@=1\0".to_vec(), None),
            (format!("{long_key}=1\0").into_bytes(), Some(TextError::KeyTooLong { key: ok_key.clone(), len: 64 })),
            (format!("{ok_key}=1\0").into_bytes(), None),
            (b"TargetAlias=\xff\xfe\0".to_vec(), Some(TextError::NotUtf8 { key: "TargetAlias".into(), offset: 12 })),
            (b"A=1\0A=2\0".to_vec(), Some(TextError::DuplicateKey { key: "A".into() })),
            (b"TargetName=a\0TargetName=b\0TargetAddress=x\0TargetAddress=y\0".to_vec(), None),
        ];
        for (data, want) in cases {
            let got = decode_pairs(&data);
            match want {
                None => assert!(got.is_ok(), "{:?}: {got:?}", String::from_utf8_lossy(&data)),
                Some(e) => assert_eq!(got, Err(e), "{:?}", String::from_utf8_lossy(&data)),
            }
        }
    }

    #[test]
    fn value_limits_per_key_rfc7143_6_1() {
        let v255 = "a".repeat(255);
        let v256 = "a".repeat(256);
        let ok = |k: &str, v: &str| decode_pairs(format!("{k}={v}\0").as_bytes()).is_ok();
        // Standard simple values: 255 bytes.
        assert!(ok("TargetAlias", &v255));
        assert!(!ok("TargetAlias", &v256));
        assert!(!ok("TargetAddress", &v256));
        // Large binary values (CHAP): the general cap.
        let challenge = format!("0x{}", "ab".repeat(1024));
        assert!(ok("CHAP_C", &challenge));
        assert!(ok("CHAP_R", &challenge));
        assert!(!ok("CHAP_C", &"a".repeat(MAX_VALUE_LEN + 1)));
        // Lists: 255 per element.
        assert!(ok("AuthMethod", &format!("{v255},{v255},None")));
        assert!(!ok("AuthMethod", &format!("{v256},None")));
        // Extension keys: the general cap.
        assert!(ok("X-com.example.big", &"a".repeat(MAX_VALUE_LEN)));
        assert!(!ok("X-com.example.big", &"a".repeat(MAX_VALUE_LEN + 1)));
        assert_eq!(
            decode_pairs(format!("MaxBurstLength={v256}\0").as_bytes()),
            Err(TextError::ValueTooLong { key: "MaxBurstLength".into(), len: 256, limit: 255 })
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = decode_pairs(b"ImmediateData=Yes\0ImmediateData=No\0").unwrap_err();
        assert!(e.to_string().contains("ImmediateData"), "{e}");
    }

    #[test]
    fn encodes_pairs() {
        let mut out = Vec::new();
        encode_pairs(&[kv("A", "1"), kv("B", "")], &mut out);
        encode_pair(&mut out, "C", "x,y");
        assert_eq!(out, b"A=1\0B=\0C=x,y\0");
    }

    #[test]
    fn accumulator_joins_pairs_split_across_pdus_rfc7143_6_1() {
        let mut acc = TextAccumulator::new();
        acc.push(b"HeaderDig").unwrap();
        acc.push(b"est=None\0DataDigest=No").unwrap();
        acc.push(b"ne\0").unwrap();
        assert_eq!(acc.len(), 34);
        let data = acc.take();
        assert!(acc.is_empty());
        assert_eq!(decode_pairs(&data).unwrap(), vec![kv("HeaderDigest", "None"), kv("DataDigest", "None")]);
    }

    #[test]
    fn accumulator_caps_total_size() {
        let mut acc = TextAccumulator::with_limit(10);
        acc.push(b"12345").unwrap();
        assert_eq!(acc.push(b"123456"), Err(TextError::TooLarge { len: 11, limit: 10 }));
        // The refused segment was not kept.
        assert_eq!(acc.len(), 5);
        acc.push(b"12345").unwrap();
        assert!(matches!(
            TextAccumulator::default().push(&vec![0; 64 * 1024 + 1]),
            Err(TextError::TooLarge { limit: 65536, .. })
        ));
    }

    #[test]
    fn splits_for_the_peer_mrdsl_rfc7143_6_2() {
        let data = [1u8; 20];
        let segs: Vec<_> = split_segments(&data, 8).collect();
        assert_eq!(segs.len(), 3);
        assert_eq!(segs.iter().map(|s| (s.data.len(), s.more)).collect::<Vec<_>>(), [(8, true), (8, true), (4, false)]);
        let exact: Vec<_> = split_segments(&data, 20).collect();
        assert_eq!(exact, [TextSegment { data: &data, more: false }]);
        let empty: Vec<_> = split_segments(&[], 8192).collect();
        assert_eq!(empty, [TextSegment { data: &[], more: false }]);
        assert_eq!(split_segments(&data, 0).count(), 20);
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        "[A-Z][A-Za-z0-9.+@_-]{0,30}"
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(pairs in proptest::collection::btree_map(key_strategy(), "[^\u{0}]{0,60}", 0..20)) {
            let pairs: Vec<KeyValue> = pairs.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
            let mut out = Vec::new();
            encode_pairs(&pairs, &mut out);
            prop_assert_eq!(decode_pairs(&out).unwrap(), pairs);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_pairs(&data);
        }

        #[test]
        fn split_then_accumulate_is_identity(data in proptest::collection::vec(any::<u8>(), 0..2000), max in 1usize..600) {
            let mut acc = TextAccumulator::new();
            let segs: Vec<_> = split_segments(&data, max).collect();
            for (i, s) in segs.iter().enumerate() {
                prop_assert!(s.data.len() <= max);
                prop_assert_eq!(s.more, i + 1 < segs.len());
                acc.push(s.data).unwrap();
            }
            prop_assert_eq!(acc.take(), data);
        }
    }
}
