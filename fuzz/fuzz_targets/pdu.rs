//! The PDU decoder: framing (lengths, padding, digests), the boundary
//! check after a header digest error, and every opcode's parser. Whatever decodes must re-encode to bytes that decode the same.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mpio_transport::pdu::frame::{self, Framing, TxQueue};
use mpio_transport::pdu::Pdu;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let framing = Framing {
        header_digest: flags & 1 != 0,
        data_digest: flags & 2 != 0,
        max_recv_data_segment_length: 1 << 16,
    };
    let mut buf = BytesMut::from(rest);
    // ERL 1's resynchronisation after a bad header: never past the bytes.
    if let Ok(Some(len)) = frame::boundary_after_bad_header(&buf, &framing) {
        assert!(len < buf.len(), "a proven boundary has a header after it");
    }
    while let Ok(Some(raw)) = frame::decode(&mut buf, &framing) {
        let Ok(pdu) = Pdu::parse(raw) else { continue };
        let mut q = TxQueue::new();
        q.push(&pdu.encode(), &framing);
        let mut wire = q.take_all();
        let again = frame::decode(&mut wire, &framing).expect("re-encoded PDU frames").expect("whole");
        assert_eq!(Pdu::parse(again).expect("re-encoded PDU parses"), pdu);
    }
});
