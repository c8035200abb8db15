//! The negotiation state machine, byte for byte.

use super::*;
use crate::handshake::{BlockSizes, DecodeError};
use crate::negotiate::*;
use mpio_mpath::{Discard, Geometry, WriteCache};

const TRIM: Option<Discard> = Some(Discard { granularity: 512, alignment: 0, max_bytes: None });

const DISK: Geometry = Geometry {
    capacity: 64 << 20,
    logical_block: 512,
    physical_block: 4096,
    max_transfer: Some(1 << 20),
    read_only: false,
    discard: TRIM,
    write_zeroes: true,
    write_cache: WriteCache::ASSUMED,
    shared_flush: true,
    rotational: None,
};

/// Exports `disk` (described), `other`, and `cold` (no geometry yet).
struct Exports {
    names: Vec<&'static str>,
}

impl Exports {
    fn all() -> Exports {
        Exports { names: vec!["disk", "other", "cold"] }
    }
}

impl Catalog for Exports {
    type Export = &'static str;

    fn lookup(&self, name: &str) -> Result<(&'static str, ExportInfo), String> {
        let name = if name.is_empty() && self.names.len() == 1 { self.names[0] } else { name };
        let Some(&n) = self.names.iter().find(|n| **n == name) else {
            return Err(format!("no export named {name:?}"));
        };
        if n == "cold" {
            return Err("export \"cold\" is not available yet: no path".into());
        }
        let description = if n == "disk" { "the disk" } else { "" };
        Ok((n, ExportInfo { name: n.into(), description: description.into(), geometry: DISK }))
    }

    fn list(&self) -> Vec<(String, String)> {
        self.names
            .iter()
            .map(|n| (n.to_string(), if *n == "disk" { "the disk".into() } else { String::new() }))
            .collect()
    }
}

type Nego = Negotiation<&'static str>;

fn nego() -> Nego {
    Negotiation::new(NegotiationConfig::default())
}

/// Feeds `input`, returns what the server sent and the bytes it used.
fn feed(n: &mut Nego, input: &[u8]) -> (Vec<u8>, usize) {
    let used = n.handle_input(input, &Exports::all()).unwrap();
    let mut out = Vec::new();
    n.poll_transmit(&mut out);
    (out, used)
}

/// A negotiation past the greeting and client flags `flags`.
fn after_flags(flags: u32) -> Nego {
    let mut n = nego();
    let (greeting, _) = feed(&mut n, &[]);
    assert_eq!(greeting, hex("4e42444d41474943 49484156454f5054 0003"));
    let (out, used) = feed(&mut n, &flags.to_be_bytes());
    assert!(out.is_empty() && used == 4);
    n
}

fn reply_hdr(option: u32, typ: u32, len: u32) -> Vec<u8> {
    let mut v = hex("0003e889045565a9");
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&typ.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

/// Splits option replies into (option, type, data).
fn replies(mut v: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
    let mut out = Vec::new();
    while !v.is_empty() {
        assert_eq!(v[..8], hex("0003e889045565a9")[..]);
        let word = |at: usize| u32::from_be_bytes(v[at..at + 4].try_into().unwrap());
        let len = word(16) as usize;
        out.push((word(8), word(12), v[20..20 + len].to_vec()));
        v = &v[20 + len..];
    }
    out
}

fn error_reply(option: u32, typ: u32, msg: &str) -> Vec<u8> {
    let mut v = reply_hdr(option, typ, msg.len() as u32);
    v.extend_from_slice(msg.as_bytes());
    v
}

/// Flags of DISK without structured replies: HAS_FLAGS, SEND_FLUSH,
/// SEND_FUA, SEND_TRIM, SEND_WRITE_ZEROES, CAN_MULTI_CONN.
const DISK_FLAGS: u16 = 0x016d;

#[test]
fn go_with_every_info_request() {
    let mut n = after_flags(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    let mut input =
        option_bytes(NBD_OPT_GO, &info_payload(b"disk", &[NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME, NBD_INFO_DESCRIPTION]));
    let go_len = input.len();
    // The first request of the transmission phase, already sent: not consumed.
    input.extend_from_slice(&hex("25609513"));
    let (out, used) = feed(&mut n, &input);
    assert_eq!(used, go_len);
    let want = [
        hex("0003e889045565a9 00000007 00000003 0000000c 0000 0000000004000000 016d"),
        hex("0003e889045565a9 00000007 00000003 0000000e 0003 00000200 00001000 00100000"),
        hex("0003e889045565a9 00000007 00000003 00000006 0001 6469736b"),
        hex("0003e889045565a9 00000007 00000003 0000000a 0002 746865206469736b"),
        hex("0003e889045565a9 00000007 00000001 00000000"),
    ]
    .concat();
    assert_eq!(out, want);
    assert!(n.is_done());
    let Some(Outcome::Go(agreed)) = n.outcome() else { panic!("no GO outcome") };
    assert_eq!(agreed.export, "disk");
    assert_eq!(agreed.name, "disk");
    assert_eq!(agreed.params.size, 64 << 20);
    assert_eq!(agreed.params.transmission_flags, DISK_FLAGS);
    assert!(!agreed.params.structured);
    // The client asked for the constraints: held to the advertised ones.
    assert_eq!(agreed.params.block, BlockSizes { minimum: 512, preferred: 4096, maximum: 1 << 20 });
    // Nothing more is consumed once done.
    assert_eq!(feed(&mut n, &hex("25609513")), (vec![], 0));
}

#[test]
fn go_without_block_size_request_still_advertises_but_allows_the_default_maximum() {
    let mut n = after_flags(NBD_FLAG_C_FIXED_NEWSTYLE);
    let (out, _) = feed(&mut n, &option_bytes(NBD_OPT_GO, &info_payload(b"disk", &[])));
    let want = [
        hex("0003e889045565a9 00000007 00000003 0000000c 0000 0000000004000000 016d"),
        hex("0003e889045565a9 00000007 00000003 0000000e 0003 00000200 00001000 00100000"),
        hex("0003e889045565a9 00000007 00000001 00000000"),
    ]
    .concat();
    assert_eq!(out, want, "no NAME or DESCRIPTION unasked");
    let Some(Outcome::Go(agreed)) = n.outcome() else { panic!() };
    assert_eq!(agreed.params.block, BlockSizes { minimum: 512, preferred: 4096, maximum: 32 << 20 });
}

#[test]
fn structured_replies_then_info_then_go() {
    let mut n = after_flags(NBD_FLAG_C_FIXED_NEWSTYLE);
    let (out, _) = feed(&mut n, &option_bytes(NBD_OPT_STRUCTURED_REPLY, &[]));
    assert_eq!(out, reply_hdr(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, 0));
    // INFO: same replies as GO would give (DF added with structured
    // replies), and negotiation goes on.
    let (info, _) = feed(&mut n, &option_bytes(NBD_OPT_INFO, &info_payload(b"disk", &[NBD_INFO_BLOCK_SIZE])));
    assert_eq!(&info[..32], &hex("0003e889045565a9 00000006 00000003 0000000c 0000 0000000004000000 01ed")[..]);
    assert!(!n.is_done() && n.outcome().is_none());
    let (go, _) = feed(&mut n, &option_bytes(NBD_OPT_GO, &info_payload(b"disk", &[NBD_INFO_BLOCK_SIZE])));
    // The same information, the option code aside.
    let strip = |v: &[u8]| replies(v).into_iter().map(|(_, t, d)| (t, d)).collect::<Vec<_>>();
    assert!(replies(&info).iter().all(|r| r.0 == NBD_OPT_INFO));
    assert!(replies(&go).iter().all(|r| r.0 == NBD_OPT_GO));
    assert_eq!(strip(&info), strip(&go));
    let Some(Outcome::Go(agreed)) = n.outcome() else { panic!() };
    assert!(agreed.params.structured);
    assert_eq!(agreed.params.transmission_flags, DISK_FLAGS | NBD_FLAG_SEND_DF);
}

#[test]
fn list_names_every_export() {
    let mut n = after_flags(NBD_FLAG_C_FIXED_NEWSTYLE);
    let (out, _) = feed(&mut n, &option_bytes(NBD_OPT_LIST, &[]));
    let want = [
        hex("0003e889045565a9 00000003 00000002 00000010 00000004 6469736b 746865206469736b"),
        hex("0003e889045565a9 00000003 00000002 00000009 00000005 6f74686572"),
        hex("0003e889045565a9 00000003 00000002 00000008 00000004 636f6c64"),
        hex("0003e889045565a9 00000003 00000001 00000000"),
    ]
    .concat();
    assert_eq!(out, want);
    // LIST with data is invalid; negotiation goes on.
    let (out, _) = feed(&mut n, &option_bytes(NBD_OPT_LIST, b"x"));
    assert_eq!(out[..20], reply_hdr(NBD_OPT_LIST, NBD_REP_ERR_INVALID, (out.len() - 20) as u32)[..]);
    assert!(!n.is_done());
}

#[test]
fn unsupported_options_get_err_unsup_and_negotiation_goes_on() {
    let mut n = after_flags(NBD_FLAG_C_FIXED_NEWSTYLE);
    for (code, msg) in [
        (NBD_OPT_STARTTLS, "this server does not support TLS"),
        (NBD_OPT_LIST_META_CONTEXT, "option 9 is not supported"),
        (NBD_OPT_SET_META_CONTEXT, "option 10 is not supported"),
        (NBD_OPT_EXTENDED_HEADERS, "option 11 is not supported"),
        (0x1234_5678, "option 305419896 is not supported"),
    ] {
        let data: &[u8] = if code == NBD_OPT_STARTTLS { &[] } else { b"whatever" };
        let (out, _) = feed(&mut n, &option_bytes(code, data));
        assert_eq!(out, error_reply(code, NBD_REP_ERR_UNSUP, msg), "option {code}");
    }
    let (_, _) = feed(&mut n, &option_bytes(NBD_OPT_GO, &info_payload(b"disk", &[])));
    assert!(n.is_done());
}

#[test]
fn unknown_and_unavailable_exports_are_refused_politely() {
    let mut n = after_flags(NBD_FLAG_C_FIXED_NEWSTYLE);
    let (out, _) = feed(&mut n, &option_bytes(NBD_OPT_GO, &info_payload(b"nope", &[])));
    assert_eq!(out, error_reply(NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, "no export named \"nope\""));
    let (out, _) = feed(&mut n, &option_bytes(NBD_OPT_INFO, &info_payload(b"cold", &[])));
    assert_eq!(out, error_reply(NBD_OPT_INFO, NBD_REP_ERR_UNKNOWN, "export \"cold\" is not available yet: no path"));
    // The default export is ambiguous with three exports.
    let (out, _) = feed(&mut n, &option_bytes(NBD_OPT_GO, &info_payload(b"", &[])));
    assert_eq!(out[..16], reply_hdr(NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, 0)[..16]);
    // A malformed GO payload: invalid, negotiation goes on.
    let (out, _) = feed(&mut n, &option_bytes(NBD_OPT_GO, &hex("00000009 6469736b")));
    assert_eq!(out, error_reply(NBD_OPT_GO, NBD_REP_ERR_INVALID, "malformed NBD_OPT_INFO/GO payload"));
    assert!(!n.is_done());
    feed(&mut n, &option_bytes(NBD_OPT_GO, &info_payload(b"other", &[])));
    let Some(Outcome::Go(agreed)) = n.outcome() else { panic!() };
    assert_eq!(agreed.export, "other");
}

#[test]
fn export_name_replies_with_or_without_zeroes() {
    let mut n = after_flags(NBD_FLAG_C_FIXED_NEWSTYLE);
    let (out, _) = feed(&mut n, &option_bytes(NBD_OPT_EXPORT_NAME, b"disk"));
    let mut want = hex("0000000004000000 016d");
    want.resize(10 + 124, 0);
    assert_eq!(out, want);
    let Some(Outcome::Go(agreed)) = n.outcome() else { panic!() };
    // No constraints were agreed: the default maximum payload.
    assert_eq!(agreed.params.block.maximum, 32 << 20);

    let mut n = after_flags(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    let (out, _) = feed(&mut n, &option_bytes(NBD_OPT_EXPORT_NAME, b"disk"));
    assert_eq!(out, hex("0000000004000000 016d"));
}

#[test]
fn export_name_cannot_fail_politely() {
    for name in [&b"nope"[..], b"cold", b"a\0b"] {
        let mut n = after_flags(NBD_FLAG_C_FIXED_NEWSTYLE);
        let e = n.handle_input(&option_bytes(NBD_OPT_EXPORT_NAME, name), &Exports::all()).unwrap_err();
        assert!(matches!(e, NegotiationError::ExportNameRefused { .. }), "{e}");
        let mut out = Vec::new();
        n.poll_transmit(&mut out);
        assert!(out.is_empty(), "nothing is sent: the connection is closed");
    }
}

#[test]
fn plain_newstyle_client_may_only_send_export_name() {
    let mut n = after_flags(0);
    let e = n.handle_input(&option_bytes(NBD_OPT_LIST, &[]), &Exports::all()).unwrap_err();
    assert_eq!(e, NegotiationError::NotFixedNewstyle { option: NBD_OPT_LIST });
    let mut n = after_flags(0);
    let (out, _) = feed(&mut n, &option_bytes(NBD_OPT_EXPORT_NAME, b"disk"));
    assert_eq!(out.len(), 10 + 124);
    assert!(n.is_done());
}

#[test]
fn abort_is_acknowledged() {
    let mut n = after_flags(NBD_FLAG_C_FIXED_NEWSTYLE);
    let (out, _) = feed(&mut n, &option_bytes(NBD_OPT_ABORT, b"ignored"));
    assert_eq!(out, reply_hdr(NBD_OPT_ABORT, NBD_REP_ACK, 0));
    assert_eq!(n.outcome(), Some(Outcome::Abort));
}

#[test]
fn framing_errors_are_fatal_and_sticky() {
    let mut n = nego();
    let e = n.handle_input(&hex("00000004"), &Exports::all()).unwrap_err();
    assert!(matches!(e, NegotiationError::Decode(DecodeError::BadClientFlags { flags: 4, .. })));
    // Sticky: the same error whatever comes next.
    assert_eq!(n.handle_input(&hex("00000001"), &Exports::all()), Err(e));

    let mut n = after_flags(NBD_FLAG_C_FIXED_NEWSTYLE);
    let mut bad = option_bytes(NBD_OPT_LIST, &[]);
    bad[0] = b'X';
    assert!(matches!(
        n.handle_input(&bad, &Exports::all()),
        Err(NegotiationError::Decode(DecodeError::BadMagic { .. }))
    ));

    let mut n = after_flags(NBD_FLAG_C_FIXED_NEWSTYLE);
    let mut huge = IHAVEOPT.to_be_bytes().to_vec();
    huge.extend_from_slice(&hex("00000007 7fffffff"));
    assert!(matches!(
        n.handle_input(&huge, &Exports::all()),
        Err(NegotiationError::Decode(DecodeError::OptionTooLong { len: 0x7fff_ffff, .. }))
    ));
}

#[test]
fn shutting_down_refuses_options_but_acknowledges_abort() {
    let mut n = after_flags(NBD_FLAG_C_FIXED_NEWSTYLE);
    n.shutdown();
    let (out, _) = feed(&mut n, &option_bytes(NBD_OPT_GO, &info_payload(b"disk", &[])));
    assert_eq!(out, error_reply(NBD_OPT_GO, NBD_REP_ERR_SHUTDOWN, "the server is shutting down"));
    assert!(!n.is_done());
    let (out, _) = feed(&mut n, &option_bytes(NBD_OPT_ABORT, &[]));
    assert_eq!(out, reply_hdr(NBD_OPT_ABORT, NBD_REP_ACK, 0));
}

#[test]
fn byte_at_a_time_gives_the_same_conversation() {
    let mut script = NBD_FLAG_C_FIXED_NEWSTYLE.to_be_bytes().to_vec();
    script.extend(option_bytes(NBD_OPT_STRUCTURED_REPLY, &[]));
    script.extend(option_bytes(NBD_OPT_LIST, &[]));
    script.extend(option_bytes(NBD_OPT_GO, &info_payload(b"disk", &[NBD_INFO_NAME])));

    let mut whole = nego();
    let (all_out, used) = feed(&mut whole, &script);
    assert_eq!(used, script.len());

    let mut slow = nego();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for b in &script {
        buf.push(*b);
        let used = slow.handle_input(&buf, &Exports::all()).unwrap();
        buf.drain(..used);
        slow.poll_transmit(&mut out);
    }
    assert!(buf.is_empty());
    assert_eq!(out, all_out);
    assert_eq!(slow.outcome(), whole.outcome());
}

#[test]
fn transmission_flags_follow_the_geometry() {
    let bare = Geometry { discard: None, write_zeroes: false, shared_flush: false, ..DISK };
    let base = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA;
    assert_eq!(transmission_flags(&bare, false), base);
    assert_eq!(transmission_flags(&Geometry { discard: TRIM, ..bare }, false), base | NBD_FLAG_SEND_TRIM);
    assert_eq!(transmission_flags(&Geometry { read_only: true, ..bare }, false), base | NBD_FLAG_READ_ONLY);
    assert_eq!(transmission_flags(&Geometry { shared_flush: true, ..bare }, false), base | NBD_FLAG_CAN_MULTI_CONN);
    assert_eq!(transmission_flags(&Geometry { write_zeroes: true, ..bare }, false), base | NBD_FLAG_SEND_WRITE_ZEROES);
    assert_eq!(transmission_flags(&bare, true), base | NBD_FLAG_SEND_DF);
}

#[test]
fn block_sizes_from_the_geometry() {
    let cap = DEFAULT_MAX_PAYLOAD;
    let sizes = |g: Geometry| advertised_block_sizes(&g, cap);
    let bs = |minimum, preferred, maximum| Ok(BlockSizes { minimum, preferred, maximum });
    assert_eq!(sizes(DISK), bs(512, 4096, 1 << 20));
    // 4 KiB LU; no stated limit: the server's cap.
    assert_eq!(
        sizes(Geometry { logical_block: 4096, physical_block: 4096, max_transfer: None, ..DISK }),
        bs(4096, 4096, cap)
    );
    // Physical below 512 is raised (the spec: preferred >= 512); a limit
    // under the preferred size is raised to it; one over the cap is capped;
    // a limit that is not a block multiple is rounded down.
    assert_eq!(sizes(Geometry { physical_block: 512, max_transfer: Some(100), ..DISK }), bs(512, 512, 512));
    assert_eq!(sizes(Geometry { max_transfer: Some(u32::MAX), ..DISK }), bs(512, 4096, cap));
    assert_eq!(sizes(Geometry { max_transfer: Some(1_000_000), ..DISK }), bs(512, 4096, 999_936));
    // Geometries NBD cannot express.
    assert!(sizes(Geometry { logical_block: 520, ..DISK }).unwrap_err().contains("520-byte"));
    assert!(sizes(Geometry { logical_block: 1 << 17, ..DISK }).is_err());
    assert!(sizes(Geometry { capacity: 1000, ..DISK }).unwrap_err().contains("not a multiple"));
}

proptest::proptest! {
    /// Arbitrary bytes after valid client flags, in arbitrary pieces: never
    /// a panic, never more consumed than given, and every reply is a
    /// well-formed option reply to the option asked.
    #[test]
    fn arbitrary_options_never_panic(
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        step in 1usize..64,
        code in 0u32..16,
    ) {
        let mut n = after_flags(NBD_FLAG_C_FIXED_NEWSTYLE);
        // Half of the inputs start with a valid option header, so the
        // payload parsers are reached.
        let mut input = if code % 2 == 0 { option_bytes(code / 2, &body) } else { body.clone() };
        input.extend_from_slice(&body);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for chunk in input.chunks(step) {
            buf.extend_from_slice(chunk);
            match n.handle_input(&buf, &Exports::all()) {
                Ok(used) => {
                    proptest::prop_assert!(used <= buf.len());
                    buf.drain(..used);
                }
                Err(_) => break,
            }
            n.poll_transmit(&mut out);
            if n.is_done() {
                break;
            }
        }
        if !n.is_done() {
            // Splits (and checks magic and lengths of) every reply.
            replies(&out);
        }
    }
}
