//! Text key=value decoding, and operational negotiation fed whatever a
//! hostile target answers, over several rounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpio_transport::discovery::parse_send_targets;
use mpio_transport::text::{NegotiationScope, Negotiator, OperationalOffer, decode_pairs};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let scope = match sel % 3 {
        0 => NegotiationScope::LeadingConnection,
        1 => NegotiationScope::AddedConnection,
        _ => NegotiationScope::Discovery,
    };
    let Ok(mut n) = Negotiator::new(&OperationalOffer::default(), scope) else { return };
    let _ = n.next_request();
    for round in rest.split(|b| *b == 0xff) {
        let Ok(pairs) = decode_pairs(round) else { continue };
        let _ = parse_send_targets(&pairs);
        if n.handle_response(&pairs).is_err() {
            return;
        }
        let _ = n.next_request();
    }
    let _ = n.finish();
});
