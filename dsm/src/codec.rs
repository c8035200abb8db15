//! A bounds-checked byte reader (after rustls' `msgs::codec::Reader`) and
//! text helpers shared by the parsers.
//!
//! Every read returns a [`ParseError`] instead of panicking, so a parser is
//! a straight sequence of `r.u8("field")?` calls and cannot index out of
//! bounds. The reader carries the name of the structure (`what`) and of the
//! container it reads (`within`) so errors can say "VPD page 0x83:
//! designator length 40 exceeds page (12 bytes left)".

use core::fmt::Write as _;

use crate::error::ParseError;

/// Cursor over a borrowed byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
    within: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`; `what` names the structure, `within` the
    /// container in length-overrun errors ("page", "sense data", ...).
    pub(crate) fn new(what: &'static str, within: &'static str, buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0, what, within }
    }

    /// Bytes not yet read.
    pub(crate) fn left(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// True when every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.left() == 0
    }

    fn remaining(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    /// The next `n` bytes, or a `Short` error naming `field`.
    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ParseError> {
        let rest = self.remaining();
        match rest.get(..n) {
            Some(s) => {
                self.pos = self.pos.saturating_add(n);
                Ok(s)
            }
            None => Err(ParseError::Short { what: self.what, field, need: n, left: rest.len() }),
        }
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ParseError> {
        let s = self.take(N, field)?;
        <[u8; N]>::try_from(s).map_err(|_| ParseError::Short { what: self.what, field, need: N, left: s.len() })
    }

    /// One byte.
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, ParseError> {
        let [b] = self.array::<1>(field)?;
        Ok(b)
    }

    /// Big-endian u16 (SCSI fields are big-endian, SPC-4 section 3.5).
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, ParseError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    /// Big-endian u32.
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, ParseError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// Big-endian u64.
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, ParseError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// Skip `n` bytes (reserved or obsolete fields).
    pub(crate) fn skip(&mut self, n: usize, field: &'static str) -> Result<(), ParseError> {
        self.take(n, field).map(|_| ())
    }

    /// Everything not yet read.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let r = self.remaining();
        self.pos = self.buf.len();
        r
    }

    /// A sub-reader over the next `len` bytes, where `len` came from a
    /// length field named `field`. Errors with `LengthOverrun` if the
    /// container has fewer bytes left.
    pub(crate) fn sub(&mut self, len: usize, field: &'static str) -> Result<Reader<'a>, ParseError> {
        let left = self.left();
        if len > left {
            return Err(ParseError::LengthOverrun { what: self.what, field, len, within: self.within, left });
        }
        let bytes = self.take(len, field)?;
        Ok(Reader::new(self.what, self.within, bytes))
    }
}

/// Whether bit `n` (0 = least significant) of `b` is set.
pub(crate) const fn bit(b: u8, n: u32) -> bool {
    (b >> n) & 1 == 1
}

/// SCSI ASCII text (SPC-4 section 4.4.1: printable 20h-7Eh, padded with
/// spaces) as a Rust string: trailing spaces and NULs are cut (some
/// targets, tgtd among them, pad with NULs), leading ones too when
/// `trim_leading` (the unit serial number is right-aligned, SPC-4 7.8.15).
/// Bytes outside 20h-7Eh, and the backslash itself, are written `\xNN`, so
/// the text is unambiguous (two different trimmed fields never give the
/// same text) and safe to print or use as a key.
pub(crate) fn ascii_text(bytes: &[u8], trim_leading: bool) -> String {
    let pad = |b: &u8| *b == b' ' || *b == 0;
    let end = bytes.iter().rposition(|b| !pad(b)).map_or(0, |i| i.saturating_add(1));
    let body = bytes.get(..end).unwrap_or(&[]);
    let start = if trim_leading { body.iter().position(|b| !pad(b)).unwrap_or(body.len()) } else { 0 };
    let body = body.get(start..).unwrap_or(&[]);
    let mut s = String::with_capacity(body.len());
    for &b in body {
        if (0x20..=0x7e).contains(&b) && b != b'\\' {
            s.push(char::from(b));
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

/// Lower-case hex of `bytes`, no separators.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reads_big_endian_and_reports_short() {
        let mut r = Reader::new("test data", "data", &[1, 2, 3, 4, 5, 6]);
        assert_eq!(r.u8("a").unwrap(), 1);
        assert_eq!(r.u16("b").unwrap(), 0x0203);
        assert_eq!(r.left(), 3);
        let e = r.u32("c").unwrap_err();
        assert_eq!(e.to_string(), "test data: c needs 4 bytes, 3 left");
        // A failed read consumes nothing.
        assert_eq!(r.u32("c").unwrap_err(), e);
        assert_eq!(r.rest(), &[4, 5, 6]);
        assert!(r.is_empty());
    }

    #[test]
    fn sub_reader_names_the_length_field() {
        let mut r = Reader::new("VPD page 0x83", "page", &[0; 12]);
        let e = r.sub(40, "designator length").unwrap_err();
        assert_eq!(e.to_string(), "VPD page 0x83: designator length 40 exceeds page (12 bytes left)");
        let mut s = r.sub(4, "x").unwrap();
        assert_eq!(s.left(), 4);
        assert_eq!(s.u32("y").unwrap(), 0);
        assert_eq!(r.left(), 8);
    }

    #[test]
    fn ascii_text_trims_and_escapes() {
        assert_eq!(ascii_text(b"IET     ", false), "IET");
        assert_eq!(ascii_text(b"IET     00010001\0\0\0", false), "IET     00010001");
        assert_eq!(ascii_text(b"      beaf11", true), "beaf11");
        assert_eq!(ascii_text(b"      beaf11", false), "      beaf11");
        assert_eq!(ascii_text(b"a\x01b\xff ", false), "a\\x01b\\xff");
        // A backslash is escaped too, so the escapes are unambiguous.
        assert_eq!(ascii_text(b"a\\x01b", false), "a\\x5cx01b");
        assert_eq!(ascii_text(b"    ", true), "");
        assert_eq!(ascii_text(b"", true), "");
    }
}
