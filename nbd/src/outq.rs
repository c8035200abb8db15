//! Replies waiting for the socket, written with vectored writes.
//!
//! A reply is a short header (kept inline, no allocation) followed, for a
//! read, by the data buffers exactly as the backend returned them: the
//! driver hands the socket one `writev` covering many replies and their
//! data, and nothing is copied on the way. Each reply carries the
//! in-flight charge of its request, released when its last byte is
//! written, so the memory a client can pin by not reading its replies is
//! bounded together with the data it sends.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::Bytes;

/// Longest header kept inline: a structured `OFFSET_DATA` chunk header
/// with its offset (28 bytes) fits.
const INLINE: usize = 32;

enum Piece {
    Inline { buf: [u8; INLINE], len: u8 },
    Shared(Bytes),
}

impl Piece {
    fn as_slice(&self) -> &[u8] {
        match self {
            Piece::Inline { buf, len } => buf.get(..usize::from(*len)).unwrap_or_default(),
            Piece::Shared(b) => b,
        }
    }
}

struct Segment {
    bytes: Piece,
    /// Charge released once this segment is fully written.
    release: usize,
}

/// The output queue of one connection.
#[derive(Default)]
pub(crate) struct OutQueue {
    segs: VecDeque<Segment>,
    /// Bytes of the front segment already written.
    front_done: usize,
}

impl OutQueue {
    /// Queues a copy of `bytes` (a header, or a whole small reply).
    pub(crate) fn push_copy(&mut self, bytes: &[u8]) {
        let seg = match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE => {
                let mut buf = [0u8; INLINE];
                if let Some(dst) = buf.get_mut(..bytes.len()) {
                    dst.copy_from_slice(bytes);
                }
                Piece::Inline { buf, len }
            }
            _ => Piece::Shared(Bytes::copy_from_slice(bytes)),
        };
        self.push(seg);
    }

    /// Queues a shared buffer (read data) without copying it.
    pub(crate) fn push_shared(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.push(Piece::Shared(bytes));
        }
    }

    fn push(&mut self, bytes: Piece) {
        self.segs.push_back(Segment { bytes, release: 0 });
    }

    /// Ends a reply: `charge` is released once everything queued so far
    /// is written.
    pub(crate) fn end_reply(&mut self, charge: usize) {
        if let Some(last) = self.segs.back_mut() {
            last.release += charge;
        }
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// Fills `out` with the unwritten bytes, in order; returns how many
    /// slices were filled.
    pub(crate) fn io_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, (seg, slot)) in self.segs.iter().zip(out.iter_mut()).enumerate() {
            let s = seg.bytes.as_slice();
            let s = if i == 0 { s.get(self.front_done..).unwrap_or_default() } else { s };
            *slot = IoSlice::new(s);
            n += 1;
        }
        n
    }

    /// Records that `written` bytes went out; returns the charge released.
    pub(crate) fn advance(&mut self, mut written: usize) -> usize {
        let mut released = 0;
        while let Some(front) = self.segs.front() {
            let left = front.bytes.as_slice().len() - self.front_done;
            if written < left {
                self.front_done += written;
                break;
            }
            written -= left;
            released += front.release;
            self.front_done = 0;
            self.segs.pop_front();
        }
        released
    }

    /// Drops everything (the peer is gone); returns the charge released.
    pub(crate) fn clear(&mut self) -> usize {
        self.front_done = 0;
        self.segs.drain(..).map(|s| s.release).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather(q: &OutQueue) -> Vec<u8> {
        let mut iov = [IoSlice::new(&[]); 16];
        let n = q.io_slices(&mut iov);
        iov[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn partial_writes_release_charges_at_reply_ends() {
        let mut q = OutQueue::default();
        q.push_copy(b"head1");
        let data = Bytes::from_static(b"0123456789");
        q.push_shared(data.clone());
        q.end_reply(100);
        q.push_copy(&[7u8; 40]); // longer than inline
        q.push_shared(Bytes::new()); // empty data adds nothing
        q.end_reply(5);
        assert_eq!(gather(&q), [b"head1".as_slice(), b"0123456789", &[7u8; 40]].concat());
        // The data buffer is the one given, not a copy.
        let mut iov = [IoSlice::new(&[]); 4];
        assert_eq!(q.io_slices(&mut iov), 3);
        assert_eq!(iov[1].as_ptr(), data.as_ptr());

        assert_eq!(q.advance(3), 0);
        assert_eq!(gather(&q)[..2], *b"d1");
        assert_eq!(q.advance(2 + 9), 0, "one data byte still unwritten");
        assert_eq!(q.advance(1), 100, "first reply done");
        assert_eq!(q.advance(39), 0);
        assert_eq!(q.advance(1), 5);
        assert!(q.is_empty());
    }

    #[test]
    fn slices_limited_by_the_array_and_clear_releases_all() {
        let mut q = OutQueue::default();
        for i in 0..10u8 {
            q.push_copy(&[i; 3]);
            q.end_reply(1);
        }
        let mut iov = [IoSlice::new(&[]); 4];
        assert_eq!(q.io_slices(&mut iov), 4);
        assert_eq!(q.advance(4), 1);
        assert_eq!(gather(&q)[..2], [1, 1]);
        assert_eq!(q.clear(), 9);
        assert!(q.is_empty());
        assert_eq!(q.io_slices(&mut [IoSlice::new(&[])]), 0);
    }
}
