//! Framing of PDUs on a byte stream: lengths, padding and CRC32C digests
//! (RFC 7143 sections 11.2 and 13.1).
//!
//! ```text
//!  +-----------+------------+---------------+--------------------+--------------+
//!  | BHS (48)  | AHS (4*n)  | HeaderDigest? | data + pad to 4    | DataDigest?  |
//!  +-----------+------------+---------------+--------------------+--------------+
//! ```
//! Digests are CRC32C, sent least significant byte first (the RFC 3720
//! appendix B.4 test vectors in the tests below pin this). The data digest
//! covers the data and its padding and is present only when there is data.
//! Digests start after the final Login Response (section 13.1).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{BHS_LEN, Bhs, Opcode, RawPdu};

/// Length of a CRC32C digest on the wire.
pub const DIGEST_LEN: usize = 4;

/// The framing in force on one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framing {
    /// HeaderDigest=CRC32C.
    pub header_digest: bool,
    /// DataDigest=CRC32C.
    pub data_digest: bool,
    /// The largest data segment we accept: the MaxRecvDataSegmentLength we
    /// declared. Checked before any buffer is grown for the data.
    pub max_recv_data_segment_length: u32,
}

impl Default for Framing {
    /// The framing of the login phase: no digests, and the RFC default of
    /// 8192 bytes for data segments (section 13.12).
    fn default() -> Self {
        Framing { header_digest: false, data_digest: false, max_recv_data_segment_length: 8192 }
    }
}

/// Why a byte stream could not be framed. All are fatal for the connection
/// at ErrorRecoveryLevel 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header digest did not match (seed event 22).
    #[error("header digest error on {opcode}: computed {computed:#010x}, received {received:#010x}")]
    HeaderDigest {
        /// Opcode as received (it may be the corrupted byte).
        opcode: Opcode,
        /// CRC32C we computed.
        computed: u32,
        /// CRC32C in the PDU.
        received: u32,
    },
    /// The data digest did not match (seed event 25). The PDU has been
    /// taken off the stream (its header was sound), so at
    /// ErrorRecoveryLevel 1 the connection can go on and ask for it again.
    #[error("data digest error on {opcode} ITT {itt:#x}: computed {computed:#010x}, received {received:#010x}")]
    DataDigest {
        /// The PDU's header.
        bhs: Bhs,
        /// Opcode.
        opcode: Opcode,
        /// Initiator Task Tag.
        itt: u32,
        /// CRC32C we computed.
        computed: u32,
        /// CRC32C in the PDU.
        received: u32,
    },
    /// The data segment is longer than we declared we accept (seed event 21).
    #[error("{opcode}: data segment of {len} bytes exceeds our MaxRecvDataSegmentLength {max}")]
    DataSegmentTooLong {
        /// Opcode.
        opcode: Opcode,
        /// Length announced by the PDU.
        len: usize,
        /// Our MaxRecvDataSegmentLength.
        max: u32,
    },
}

/// Takes one PDU off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed; in that case `buf` has
/// been reserved for the whole PDU so the next read can complete it.
/// The data segment of the result shares `buf`'s memory (no copy).
pub fn decode(buf: &mut BytesMut, framing: &Framing) -> Result<Option<RawPdu>, FrameError> {
    let Some(head) = buf.get(..BHS_LEN) else {
        buf.reserve(BHS_LEN);
        return Ok(None);
    };
    let mut bhs = [0u8; BHS_LEN];
    bhs.copy_from_slice(head);
    let bhs = Bhs(bhs);
    let ahs_len = bhs.total_ahs_len();
    let header_len = BHS_LEN + ahs_len + if framing.header_digest { DIGEST_LEN } else { 0 };
    let Some(header) = buf.get(..header_len) else {
        buf.reserve(header_len - buf.len());
        return Ok(None);
    };
    // Check the header digest before trusting any length in the header.
    if framing.header_digest {
        let (covered, digest) = header.split_at(BHS_LEN + ahs_len);
        let computed = crc32c::crc32c(covered);
        let received = read_digest(digest);
        if computed != received {
            return Err(FrameError::HeaderDigest { opcode: bhs.opcode(), computed, received });
        }
    }
    let data_len = bhs.data_segment_len();
    if data_len > framing.max_recv_data_segment_length as usize {
        return Err(FrameError::DataSegmentTooLong {
            opcode: bhs.opcode(),
            len: data_len,
            max: framing.max_recv_data_segment_length,
        });
    }
    let padded = data_len.next_multiple_of(4);
    let data_digest = framing.data_digest && data_len > 0;
    let total = header_len + padded + if data_digest { DIGEST_LEN } else { 0 };
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(total);
    if data_digest {
        let covered = frame.get(header_len..header_len + padded).unwrap_or_default();
        let computed = crc32c::crc32c(covered);
        let received = read_digest(frame.get(header_len + padded..).unwrap_or_default());
        if computed != received {
            return Err(FrameError::DataDigest { bhs, opcode: bhs.opcode(), itt: bhs.itt(), computed, received });
        }
    }
    frame.truncate(header_len + data_len);
    let mut frame = frame.freeze();
    let ahs = frame.slice(BHS_LEN..BHS_LEN + ahs_len);
    frame.advance(header_len);
    Ok(Some(RawPdu { bhs, ahs, data: frame }))
}

/// After a header digest error on the PDU at the front of `buf`: the
/// length of that PDU if the header right after it proves it (its own
/// digest matches), `Ok(None)` until that header has arrived, and `Err`
/// when it does not match (the stream cannot be framed again). The lengths
/// in a header that failed its digest may be the corrupted bytes; a header
/// digest that matches at exactly that boundary is what makes skipping
/// the PDU safe (a false match is a 2^-32 chance). Only with header
/// digests on.
#[allow(clippy::result_unit_err)]
pub fn boundary_after_bad_header(buf: &BytesMut, framing: &Framing) -> Result<Option<usize>, ()> {
    if !framing.header_digest {
        return Err(());
    }
    let header = |at: usize| -> Option<Bhs> {
        let mut b = [0u8; BHS_LEN];
        b.copy_from_slice(buf.get(at..at + BHS_LEN)?);
        Some(Bhs(b))
    };
    let Some(bad) = header(0) else { return Ok(None) };
    let (ahs_len, data_len) = (bad.total_ahs_len(), bad.data_segment_len());
    if data_len > framing.max_recv_data_segment_length as usize {
        return Err(());
    }
    let data_digest = if framing.data_digest && data_len > 0 { DIGEST_LEN } else { 0 };
    let len = BHS_LEN + ahs_len + DIGEST_LEN + data_len.next_multiple_of(4) + data_digest;
    let Some(next) = header(len) else { return Ok(None) };
    let next_header = BHS_LEN + next.total_ahs_len();
    let Some(covered) = buf.get(len..len + next_header) else { return Ok(None) };
    let Some(digest) = buf.get(len + next_header..len + next_header + DIGEST_LEN) else { return Ok(None) };
    if crc32c::crc32c(covered) == read_digest(digest) { Ok(Some(len)) } else { Err(()) }
}

fn read_digest(b: &[u8]) -> u32 {
    match b {
        [a, b, c, d, ..] => u32::from_le_bytes([*a, *b, *c, *d]),
        _ => 0,
    }
}

/// Data segments up to this size are copied next to their header instead of
/// being sent as a separate iovec: below it a copy is cheaper than the
/// extra vector element.
const COALESCE_MAX: usize = 512;

/// Outgoing bytes of one connection, as a queue of shared chunks ready for
/// vectored writes. Payloads are referenced, not copied; headers, padding
/// and digests are built in a scratch buffer that is split off per PDU.
#[derive(Debug, Default)]
pub struct TxQueue {
    chunks: VecDeque<Bytes>,
    scratch: BytesMut,
    len: usize,
}

impl TxQueue {
    /// An empty queue.
    pub fn new() -> TxQueue {
        TxQueue::default()
    }

    /// Queues one PDU with the digests of `framing`.
    pub fn push(&mut self, pdu: &RawPdu, framing: &Framing) {
        let data_len = pdu.data.len();
        let pad = data_len.next_multiple_of(4) - data_len;
        self.scratch.reserve(BHS_LEN + pdu.ahs.len() + 2 * DIGEST_LEN + COALESCE_MAX + 3);
        let start = self.scratch.len();
        self.scratch.put_slice(&pdu.bhs.0);
        self.scratch.put_slice(&pdu.ahs);
        if framing.header_digest {
            let digest = crc32c::crc32c(self.scratch.get(start..).unwrap_or_default());
            self.scratch.put_u32_le(digest);
        }
        let data_digest = framing.data_digest && data_len > 0;
        let mut crc = 0;
        if data_digest {
            crc = crc32c::crc32c(&pdu.data);
        }
        if data_len <= COALESCE_MAX {
            self.scratch.put_slice(&pdu.data);
        } else {
            self.flush_scratch();
            self.push_chunk(pdu.data.clone());
        }
        self.scratch.put_bytes(0, pad);
        if data_digest {
            crc = crc32c::crc32c_append(crc, [0u8; 3].get(..pad).unwrap_or_default());
            self.scratch.put_u32_le(crc);
        }
        self.flush_scratch();
    }

    fn flush_scratch(&mut self) {
        if !self.scratch.is_empty() {
            let chunk = self.scratch.split().freeze();
            self.push_chunk(chunk);
        }
    }

    fn push_chunk(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills `out` with the first chunks, for a vectored write; returns how
    /// many were filled.
    pub fn io_slices<'a>(&'a self, out: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, chunk) in out.iter_mut().zip(self.chunks.iter()) {
            *slot = std::io::IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    /// The chunks in order (for tests and in-memory transports).
    pub fn chunks(&self) -> impl Iterator<Item = &Bytes> {
        self.chunks.iter()
    }

    /// Drops `n` written bytes from the front.
    pub fn advance(&mut self, mut n: usize) {
        self.len = self.len.saturating_sub(n);
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else { return };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.chunks.pop_front();
        }
    }

    /// Takes everything queued as one contiguous buffer (for tests and
    /// in-memory transports; the socket driver uses vectored writes).
    pub fn take_all(&mut self) -> BytesMut {
        let mut out = BytesMut::with_capacity(self.len);
        for c in self.chunks.drain(..) {
            out.put_slice(&c);
        }
        self.len = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::{NopOut, Pdu, RESERVED_TAG};

    /// RFC 3720 appendix B.4 test vectors for CRC32C.
    #[test]
    fn crc32c_rfc3720_vectors() {
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c::crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c::crc32c(&inc), 0x46dd_794e);
        let dec: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(crc32c::crc32c(&dec), 0x113f_db5c);
        // Appendix B.4's iSCSI Read(10) command PDU.
        let read10: [u8; 48] = [
            0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(crc32c::crc32c(&read10), 0xd9963a56);
    }

    fn nop(data: &'static [u8]) -> RawPdu {
        Pdu::NopOut(NopOut {
            immediate: true,
            lun: 0,
            itt: 7,
            ttt: RESERVED_TAG,
            cmdsn: 1,
            exp_statsn: 2,
            data: Bytes::from_static(data),
        })
        .encode()
    }

    fn all_framings() -> Vec<Framing> {
        let mut v = Vec::new();
        for h in [false, true] {
            for d in [false, true] {
                v.push(Framing { header_digest: h, data_digest: d, max_recv_data_segment_length: 1 << 20 });
            }
        }
        v
    }

    #[test]
    fn digest_is_sent_little_endian() {
        let f = Framing { header_digest: true, data_digest: false, max_recv_data_segment_length: 8192 };
        let raw = nop(b"");
        let mut q = TxQueue::new();
        q.push(&raw, &f);
        let wire = q.take_all();
        let expect = crc32c::crc32c(&raw.bhs.0).to_le_bytes();
        assert_eq!(&wire[48..52], &expect);
    }

    #[test]
    fn round_trip_byte_by_byte() {
        for f in all_framings() {
            for data in [&b""[..], b"a", b"abcd", b"hello world"] {
                let raw = nop(Box::leak(data.to_vec().into_boxed_slice()));
                let mut q = TxQueue::new();
                q.push(&raw, &f);
                q.push(&raw, &f);
                let wire = q.take_all();
                let mut buf = BytesMut::new();
                let mut got = Vec::new();
                for b in wire.iter() {
                    buf.put_u8(*b);
                    while let Some(p) = decode(&mut buf, &f).unwrap() {
                        got.push(p);
                    }
                }
                assert_eq!(got, vec![raw.clone(), raw.clone()], "{f:?} {data:?}");
                assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn large_payload_is_not_copied() {
        let f = Framing { header_digest: true, data_digest: true, max_recv_data_segment_length: 1 << 20 };
        let payload = Bytes::from(vec![0x5a; 4096]);
        let mut raw = nop(b"");
        raw.data = payload.clone();
        raw.bhs.set_lengths(0, 4096);
        let mut q = TxQueue::new();
        q.push(&raw, &f);
        let chunks: Vec<&Bytes> = q.chunks().collect();
        assert_eq!(chunks.len(), 3, "header, payload, digest");
        assert_eq!(chunks[1].as_ptr(), payload.as_ptr());
        let mut wire = q.take_all();
        assert_eq!(decode(&mut wire, &f).unwrap().unwrap().data, payload);
    }

    #[test]
    fn corrupted_digests_are_detected() {
        let f = Framing { header_digest: true, data_digest: true, max_recv_data_segment_length: 8192 };
        let mut q = TxQueue::new();
        q.push(&nop(b"data"), &f);
        let wire = q.take_all();
        for (i, want_header) in [(3usize, true), (49, true), (52, false), (57, false)] {
            let mut bad = BytesMut::from(&wire[..]);
            bad[i] ^= 0x01;
            let err = decode(&mut bad, &f).unwrap_err();
            assert_eq!(matches!(err, FrameError::HeaderDigest { .. }), want_header, "byte {i}: {err}");
        }
    }

    #[test]
    fn oversized_segment_is_refused_before_buffering() {
        let f = Framing::default();
        let mut raw = nop(b"");
        raw.bhs.set_lengths(0, 9000);
        let mut buf = BytesMut::from(&raw.bhs.0[..]);
        let err = decode(&mut buf, &f).unwrap_err();
        assert!(matches!(err, FrameError::DataSegmentTooLong { len: 9000, max: 8192, .. }), "{err}");
        assert!(buf.capacity() < 9000);
    }

    #[test]
    fn advance_across_chunks() {
        let f = Framing::default();
        let mut raw = nop(b"");
        raw.data = Bytes::from(vec![1; 1000]);
        raw.bhs.set_lengths(0, 1000);
        let mut q = TxQueue::new();
        q.push(&raw, &f);
        let total = q.len();
        assert_eq!(total, 48 + 1000);
        q.advance(10);
        q.advance(100);
        assert_eq!(q.len(), total - 110);
        let rest = q.take_all();
        assert_eq!(rest.len(), total - 110);
    }

    #[test]
    fn a_bad_header_is_skipped_only_where_the_next_header_proves_its_length() {
        let framing = Framing { header_digest: true, data_digest: true, max_recv_data_segment_length: 8192 };
        let mut q = TxQueue::new();
        q.push(&nop(b"first pdu data"), &framing);
        let first = q.len();
        q.push(&nop(b"second"), &framing);
        let wire = q.take_all();
        // The ITT of the first header is hit: its lengths still hold.
        let mut bad = BytesMut::from(&wire[..]);
        bad[17] ^= 0xff;
        assert!(matches!(decode(&mut bad.clone(), &framing), Err(FrameError::HeaderDigest { .. })));
        assert_eq!(boundary_after_bad_header(&bad, &framing), Ok(Some(first)));
        // Until the next header has arrived, nothing is decided.
        for cut in [BHS_LEN, first, first + BHS_LEN, first + BHS_LEN + 3] {
            assert_eq!(boundary_after_bad_header(&BytesMut::from(&bad[..cut]), &framing), Ok(None), "{cut} bytes");
        }
        // Its data length is hit: the bytes where the next header would be
        // do not carry a matching digest.
        let mut lost = BytesMut::from(&wire[..]);
        lost.extend_from_slice(&[0u8; 2048]); // whatever follows, enough to decide
        lost[7] ^= 0x04;
        assert_eq!(boundary_after_bad_header(&lost, &framing), Err(()));
        // Without header digests there is nothing to prove it with.
        let plain = Framing { header_digest: false, ..framing };
        assert_eq!(boundary_after_bad_header(&bad, &plain), Err(()));
    }
}
