//! PDU boundaries in one direction of an iSCSI connection, and the digests
//! the connection's login negotiated (sans-I/O: bytes in, whole PDUs out).
//!
//! A PDU on the wire (RFC 7143 section 11.2): the 48-byte BHS, the AHS
//! (`TotalAHSLength` 4-byte words, BHS byte 4), a header digest if
//! negotiated, the data segment (`DataSegmentLength`, bytes 5-7) padded to
//! 4 bytes, and a data digest if negotiated and the segment is not empty.
//! Login PDUs never carry digests; from the PDU after the final Login
//! Response (T bit, NSG full feature phase, status class 0) both
//! directions carry the digests negotiated. Both directions of a
//! connection share one [`Negotiation`], because the initiator's first
//! full-feature PDU follows the target's final Login Response, which the
//! proxy forwards (and observes) first.

/// Length of the Basic Header Segment.
pub(crate) const BHS_LEN: usize = 48;
const DIGEST_LEN: usize = 4;
const OP_LOGIN_REQUEST: u8 = 0x03;
const OP_LOGIN_RESPONSE: u8 = 0x23;
const FULL_FEATURE_PHASE: u8 = 3;

/// Digests on a connection's PDUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digests {
    /// CRC32C after the header.
    pub header: bool,
    /// CRC32C after a non-empty data segment.
    pub data: bool,
}

/// One PDU as it was on the wire, digests and padding included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) bytes: Vec<u8>,
    /// BHS and AHS (what a header digest covers).
    pub(crate) header_len: usize,
    /// Where the data segment starts, and its length (without padding).
    pub(crate) data_at: usize,
    pub(crate) data_len: usize,
}

impl Frame {
    /// The opcode (BHS byte 0 without the I bit).
    pub(crate) fn opcode(&self) -> u8 {
        self.bytes[0] & 0x3f
    }

    fn data(&self) -> &[u8] {
        &self.bytes[self.data_at..self.data_at + self.data_len]
    }
}

/// Splits one direction's bytes into PDUs.
#[derive(Debug, Default)]
pub(crate) struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    /// Bytes read from the socket.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole PDU, framed with `digests`; `None` until its last
    /// byte has arrived.
    pub(crate) fn next(&mut self, digests: Digests) -> Option<Frame> {
        let bhs = self.buf.get(..BHS_LEN)?;
        let header_len = BHS_LEN + usize::from(bhs[4]) * 4;
        let data_len = usize::from(bhs[5]) << 16 | usize::from(bhs[6]) << 8 | usize::from(bhs[7]);
        let data_at = header_len + if digests.header { DIGEST_LEN } else { 0 };
        let data_digest = if digests.data && data_len > 0 { DIGEST_LEN } else { 0 };
        let len = data_at + data_len.next_multiple_of(4) + data_digest;
        if self.buf.len() < len {
            return None;
        }
        let rest = self.buf.split_off(len);
        let bytes = std::mem::replace(&mut self.buf, rest);
        Some(Frame { bytes, header_len, data_at, data_len })
    }
}

/// What a connection's login has settled so far.
#[derive(Debug, Default)]
pub(crate) struct Negotiation {
    /// Answers seen for HeaderDigest and DataDigest.
    answered: Digests,
    /// Set by the final Login Response: the digests every later PDU has.
    full_feature: Option<Digests>,
}

impl Negotiation {
    /// The digests of the next PDU.
    pub(crate) fn digests(&self) -> Digests {
        self.full_feature.unwrap_or_default()
    }

    /// Learns from a PDU that passed. A value without a comma is an
    /// answer (a list is an offer); the last answer for a key wins, as the
    /// key is negotiated once.
    pub(crate) fn observe(&mut self, frame: &Frame) {
        let op = frame.opcode();
        if self.full_feature.is_some() || (op != OP_LOGIN_REQUEST && op != OP_LOGIN_RESPONSE) {
            return;
        }
        for pair in frame.data().split(|b| *b == 0) {
            let Some(eq) = pair.iter().position(|b| *b == b'=') else { continue };
            let (key, value) = (&pair[..eq], &pair[eq + 1..]);
            if value.contains(&b',') {
                continue;
            }
            let on = value == b"CRC32C";
            match key {
                b"HeaderDigest" => self.answered.header = on,
                b"DataDigest" => self.answered.data = on,
                _ => {}
            }
        }
        let flags = frame.bytes[1];
        let (transit, next_stage, status_class) = (flags & 0x80 != 0, flags & 0x03, frame.bytes[36]);
        if op == OP_LOGIN_RESPONSE && transit && next_stage == FULL_FEATURE_PHASE && status_class == 0 {
            self.full_feature = Some(self.answered);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PDU with `op`, BHS byte 1 `flags`, `ahs_words` of AHS and `data`,
    /// framed with `d` (digest bytes are 0xdd: the framer only counts them).
    fn pdu(op: u8, flags: u8, ahs_words: u8, data: &[u8], d: Digests) -> Vec<u8> {
        let mut v = vec![0u8; BHS_LEN];
        v[0] = op;
        v[1] = flags;
        v[4] = ahs_words;
        v[5..8].copy_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        v.extend(std::iter::repeat_n(0xaa, usize::from(ahs_words) * 4));
        if d.header {
            v.extend([0xdd; 4]);
        }
        v.extend_from_slice(data);
        v.resize(v.len().next_multiple_of(4), 0);
        if d.data && !data.is_empty() {
            v.extend([0xdd; 4]);
        }
        v
    }

    const BOTH: Digests = Digests { header: true, data: true };

    #[test]
    fn pdus_are_cut_at_their_boundaries_whatever_the_reads() {
        let a = pdu(0x25, 0x80, 0, b"hello", BOTH);
        let b = pdu(0x21, 0x80, 2, b"", BOTH);
        let c = pdu(0x25, 0x80, 0, &[7u8; 4096], BOTH);
        let wire: Vec<u8> = [a.clone(), b.clone(), c.clone()].concat();
        for chunk in [1, 3, 47, 48, 49, 1000, wire.len()] {
            let mut f = Framer::default();
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                f.push(piece);
                while let Some(frame) = f.next(BOTH) {
                    out.push(frame);
                }
            }
            let got: Vec<_> = out.iter().map(|f| f.bytes.clone()).collect();
            assert_eq!(got, vec![a.clone(), b.clone(), c.clone()], "reads of {chunk}");
            assert_eq!((out[0].data_at, out[0].data_len), (BHS_LEN + 4, 5));
            assert_eq!((out[1].header_len, out[1].data_len), (BHS_LEN + 8, 0));
            assert_eq!(out[2].data(), &[7u8; 4096][..]);
        }
    }

    #[test]
    fn digests_start_after_the_final_login_response_with_the_answered_values() {
        let mut n = Negotiation::default();
        let offer =
            pdu(OP_LOGIN_REQUEST, 0x87, 0, b"HeaderDigest=CRC32C,None\0DataDigest=CRC32C,None\0", Digests::default());
        let mut f = Framer::default();
        f.push(&offer);
        n.observe(&f.next(n.digests()).unwrap());
        assert_eq!(n.digests(), Digests::default(), "an offer settles nothing");
        // The target answers, but in a response that does not end the login
        // (no T bit): still no digests.
        let answer = pdu(OP_LOGIN_RESPONSE, 0x07, 0, b"HeaderDigest=CRC32C\0DataDigest=None\0", Digests::default());
        f.push(&answer);
        n.observe(&f.next(n.digests()).unwrap());
        assert_eq!(n.digests(), Digests::default());
        let last = pdu(OP_LOGIN_RESPONSE, 0x87, 0, b"", Digests::default());
        f.push(&last);
        n.observe(&f.next(n.digests()).unwrap());
        let want = Digests { header: true, data: false };
        assert_eq!(n.digests(), want);
        // And the next PDU is framed with them.
        let data_in = pdu(0x25, 0x80, 0, b"abcd", want);
        f.push(&data_in);
        assert_eq!(f.next(n.digests()).unwrap().bytes, data_in);
    }

    #[test]
    fn a_refused_login_or_a_security_stage_transit_turns_on_no_digests() {
        let mut n = Negotiation::default();
        let mut refused = pdu(OP_LOGIN_RESPONSE, 0x87, 0, b"HeaderDigest=CRC32C\0", Digests::default());
        refused[36] = 2; // initiator error
        n.observe(&Framer::default().next_of(&refused));
        assert_eq!(n.full_feature, None);
        // T bit, CSG security, NSG operational (0x81): not the end yet.
        n.observe(&Framer::default().next_of(&pdu(OP_LOGIN_RESPONSE, 0x81, 0, b"", Digests::default())));
        assert_eq!(n.full_feature, None);
    }

    impl Framer {
        fn next_of(&mut self, bytes: &[u8]) -> Frame {
            self.push(bytes);
            self.next(Digests::default()).unwrap()
        }
    }
}
