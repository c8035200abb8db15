//! The NBD server's negotiation state machine fed arbitrary client bytes
//! in arbitrary pieces, then whatever follows a successful GO through the
//! request decoder and validator, as the connection driver does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpio_mpath::{Discard, Geometry, WriteCache};
use mpio_nbd::negotiate::{Catalog, ExportInfo, Negotiation, NegotiationConfig, Outcome};
use mpio_nbd::transmission::{decode_request, validate_request};

struct One;

impl Catalog for One {
    type Export = ();

    fn lookup(&self, name: &str) -> Result<((), ExportInfo), String> {
        let geometry = Geometry {
            capacity: 1 << 20,
            logical_block: 512,
            physical_block: 4096,
            max_transfer: Some(1 << 16),
            read_only: name == "ro",
            discard: Some(Discard { granularity: 512, alignment: 0, max_bytes: None }),
            write_zeroes: true,
            write_cache: WriteCache::ASSUMED,
            shared_flush: true,
            rotational: None,
        };
        match name {
            "" | "disk" | "ro" => Ok(((), ExportInfo { name: name.into(), description: "d".into(), geometry })),
            _ => Err(format!("no export {name:?}")),
        }
    }

    fn list(&self) -> Vec<(String, String)> {
        vec![("disk".into(), "d".into()), ("ro".into(), String::new())]
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    let mut nego: Negotiation<()> = Negotiation::new(NegotiationConfig::default());
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut params = None;
    let mut chunks = rest.chunks(step);
    for chunk in chunks.by_ref() {
        buf.extend_from_slice(chunk);
        match nego.handle_input(&buf, &One) {
            Ok(n) => {
                assert!(n <= buf.len());
                buf.drain(..n);
            }
            Err(_) => return,
        }
        nego.poll_transmit(&mut out);
        match nego.outcome() {
            Some(Outcome::Go(agreed)) => {
                params = Some(agreed.params);
                break;
            }
            Some(Outcome::Abort) => return,
            None => {}
        }
    }
    let Some(params) = params else { return };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
    }
    let mut at = 0;
    while let Ok(Some((req, n))) = decode_request(&buf[at..]) {
        if let Ok(_cmd) = validate_request(&req, &params) {
            let end = req.offset.checked_add(u64::from(req.length)).expect("accepted ranges do not overflow");
            assert!(end <= params.size);
        }
        at += n + req.payload_len() as usize;
        if at > buf.len() {
            break;
        }
    }
});
