//! Turning a request's result into reply bytes on the output queue.
//!
//! Simple replies unless structured replies were negotiated. With
//! structured replies, a read is answered with one `OFFSET_DATA` chunk
//! flagged `DONE` (the data is all in hand before the header goes out, so
//! no error can follow it), an empty read with `NONE`, and every error
//! with an `ERROR` chunk carrying the message; other successes keep the
//! 16-byte simple reply, which the spec allows for replies without data.

use mpio_mpath::ReadBuf;

use crate::consts::{NBD_CMD_READ, NbdError};
use crate::outq::OutQueue;
use crate::transmission::{
    Request, encode_error_chunk, encode_none_done, encode_offset_data_header, encode_simple_reply,
};

/// How a request ended.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Success without data (everything but a read, and a read of
    /// zero bytes).
    Done,
    /// A read's data.
    Data(ReadBuf),
    /// Failure: the error and a message for structured replies and logs.
    Failed(NbdError, String),
}

/// Queues the reply to `req`; `charge` is released when it is written.
pub(crate) fn queue_reply(
    q: &mut OutQueue,
    scratch: &mut Vec<u8>,
    structured: bool,
    req: &Request,
    answer: Answer,
    charge: usize,
) {
    scratch.clear();
    let answer = match answer {
        Answer::Data(d) => {
            let got = d.len();
            // A backend returning the wrong amount would desynchronise a
            // simple-reply stream; refuse it as an I/O error instead.
            if u32::try_from(got).ok() == Some(req.length) {
                Answer::Data(d)
            } else {
                Answer::Failed(NbdError::Io, format!("the device returned {got} bytes for a read of {}", req.length))
            }
        }
        other => other,
    };
    match answer {
        // A structured read reply is never simple, even an empty one.
        Answer::Done if structured && req.typ == NBD_CMD_READ => encode_none_done(scratch, req.cookie),
        Answer::Done => encode_simple_reply(scratch, None, req.cookie),
        Answer::Failed(e, msg) if structured => encode_error_chunk(scratch, true, req.cookie, e, &msg),
        Answer::Failed(e, _) => encode_simple_reply(scratch, Some(e), req.cookie),
        Answer::Data(d) => {
            if !structured {
                encode_simple_reply(scratch, None, req.cookie);
            } else if req.length == 0 {
                encode_none_done(scratch, req.cookie);
            } else if encode_offset_data_header(scratch, true, req.cookie, req.offset, req.length).is_err() {
                // Only a zero or near-4-GiB length fails, and neither gets
                // here (lengths are checked against the maximum payload).
                scratch.clear();
                encode_error_chunk(scratch, true, req.cookie, NbdError::Overflow, "read too long for one chunk");
                q.push_copy(scratch);
                q.end_reply(charge);
                return;
            }
            q.push_copy(scratch);
            for b in d.chunks() {
                q.push_shared(b.clone());
            }
            q.end_reply(charge);
            return;
        }
    }
    q.push_copy(scratch);
    q.end_reply(charge);
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;

    use bytes::Bytes;

    use super::*;
    use crate::consts::*;
    use crate::tests::hex;

    fn wire(q: &OutQueue) -> Vec<u8> {
        let mut iov = [IoSlice::new(&[]); 16];
        let n = q.io_slices(&mut iov);
        iov[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    fn read_req(length: u32) -> Request {
        Request { flags: 0, typ: NBD_CMD_READ, cookie: 0x0a0b, offset: 0x200, length }
    }

    fn reply(structured: bool, req: &Request, answer: Answer) -> (Vec<u8>, usize) {
        let mut q = OutQueue::default();
        queue_reply(&mut q, &mut Vec::new(), structured, req, answer, 77);
        let bytes = wire(&q);
        let released = q.advance(bytes.len());
        (bytes, released)
    }

    #[test]
    fn simple_read_is_header_then_the_buffers() {
        let data = vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")];
        let (w, released) = reply(false, &read_req(4), Answer::Data(data.into()));
        assert_eq!(w, hex("67446698 00000000 0000000000000a0b 61626364"));
        assert_eq!(released, 77);
    }

    #[test]
    fn structured_read_is_one_done_data_chunk() {
        let (w, _) = reply(true, &read_req(2), Answer::Data(vec![Bytes::from_static(b"xy")].into()));
        assert_eq!(w, hex("668e33ef 0001 0001 0000000000000a0b 0000000a 0000000000000200 7879"));
        let (w, _) = reply(true, &read_req(0), Answer::Data(vec![].into()));
        assert_eq!(w, hex("668e33ef 0001 0000 0000000000000a0b 00000000"));
        // A zero-length read answered without calling the backend.
        let (w, _) = reply(true, &read_req(0), Answer::Done);
        assert_eq!(w, hex("668e33ef 0001 0000 0000000000000a0b 00000000"));
        let (w, _) = reply(false, &read_req(0), Answer::Done);
        assert_eq!(w, hex("67446698 00000000 0000000000000a0b"));
    }

    #[test]
    fn errors_simple_or_with_message() {
        let (w, _) = reply(false, &read_req(512), Answer::Failed(NbdError::Io, "gone".into()));
        assert_eq!(w, hex("67446698 00000005 0000000000000a0b"));
        let (w, released) = reply(true, &read_req(512), Answer::Failed(NbdError::Inval, "no".into()));
        assert_eq!(w, hex("668e33ef 0001 8001 0000000000000a0b 00000008 00000016 0002 6e6f"));
        assert_eq!(released, 77);
    }

    #[test]
    fn non_read_success_is_a_simple_reply_even_when_structured() {
        let w = Request { typ: NBD_CMD_WRITE, ..read_req(512) };
        assert_eq!(reply(true, &w, Answer::Done).0, hex("67446698 00000000 0000000000000a0b"));
    }

    #[test]
    fn short_read_from_the_backend_is_an_error_not_a_short_payload() {
        let (w, _) = reply(false, &read_req(4), Answer::Data(vec![Bytes::from_static(b"abc")].into()));
        assert_eq!(w, hex("67446698 00000005 0000000000000a0b"));
    }
}
