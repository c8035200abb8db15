//! Unit tests of the codec: byte-exact layouts from the spec, split
//! buffers, round trips, hostile input.

use crate::consts::*;
use crate::handshake::*;
use crate::transmission::*;
use proptest::prelude::*;

use super::*;

// ---- Encoders, byte-exact ----------------------------------------------------

#[test]
fn greeting_layout() {
    let mut out = Vec::new();
    encode_greeting(&mut out, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    let mut want = b"NBDMAGICIHAVEOPT".to_vec();
    want.extend_from_slice(&[0x00, 0x03]);
    assert_eq!(out, want);
    assert_eq!(out.len(), GREETING_LEN);
}

#[test]
fn rep_ack_layout() {
    let mut out = Vec::new();
    encode_rep_ack(&mut out, NBD_OPT_GO);
    assert_eq!(out, hex("0003e889045565a9 00000007 00000001 00000000"));
}

#[test]
fn rep_info_export_layout() {
    let mut out = Vec::new();
    let tf = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA;
    encode_rep_info_export(&mut out, NBD_OPT_GO, 0x1_0000_0000, tf);
    assert_eq!(out, hex("0003e889045565a9 00000007 00000003 0000000c 0000 0000000100000000 000d"));
}

#[test]
fn rep_info_block_size_layout() {
    let mut out = Vec::new();
    let sizes = BlockSizes { minimum: 512, preferred: 4096, maximum: 32 << 20 };
    encode_rep_info_block_size(&mut out, NBD_OPT_INFO, sizes);
    assert_eq!(out, hex("0003e889045565a9 00000006 00000003 0000000e 0003 00000200 00001000 02000000"));
}

#[test]
fn rep_info_name_and_description_layout() {
    let mut out = Vec::new();
    encode_rep_info_name(&mut out, NBD_OPT_GO, "vol");
    assert_eq!(out, hex("0003e889045565a9 00000007 00000003 00000005 0001 766f6c"));
    out.clear();
    encode_rep_info_description(&mut out, NBD_OPT_GO, "d");
    assert_eq!(out, hex("0003e889045565a9 00000007 00000003 00000003 0002 64"));
}

#[test]
fn rep_server_layout() {
    let mut out = Vec::new();
    encode_rep_server(&mut out, "ab", "x");
    assert_eq!(out, hex("0003e889045565a9 00000003 00000002 00000007 00000002 6162 78"));
}

#[test]
fn rep_error_layout_and_clamp() {
    let mut out = Vec::new();
    encode_rep_error(&mut out, NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, "no");
    assert_eq!(out, hex("0003e889045565a9 00000007 80000006 00000002 6e6f"));
    // Messages are clamped to 4096 bytes, on a character boundary.
    out.clear();
    let long = "é".repeat(3000); // 6000 bytes
    encode_rep_error(&mut out, NBD_OPT_GO, NBD_REP_ERR_INVALID, &long);
    let len = u32::from_be_bytes(out[16..20].try_into().unwrap()) as usize;
    assert_eq!(len, 4096);
    assert_eq!(out.len(), 20 + 4096);
    assert!(std::str::from_utf8(&out[20..]).is_ok());
}

#[test]
fn export_name_reply_layout() {
    let mut out = Vec::new();
    encode_export_name_reply(&mut out, 1 << 30, NBD_FLAG_HAS_FLAGS, false);
    assert_eq!(out.len(), 8 + 2 + 124);
    assert_eq!(out[..10], hex("0000000040000000 0001")[..]);
    assert!(out[10..].iter().all(|&b| b == 0));
    out.clear();
    encode_export_name_reply(&mut out, 1 << 30, NBD_FLAG_HAS_FLAGS, true);
    assert_eq!(out, hex("0000000040000000 0001"));
}

#[test]
fn simple_reply_layout() {
    let mut out = Vec::new();
    encode_simple_reply(&mut out, Some(NbdError::Inval), 0x0102_0304_0506_0708);
    assert_eq!(out, hex("67446698 00000016 0102030405060708"));
    out.clear();
    encode_simple_reply(&mut out, None, 7);
    assert_eq!(out, hex("67446698 00000000 0000000000000007"));
    assert_eq!(out.len(), SIMPLE_REPLY_LEN);
}

#[test]
fn structured_none_layout() {
    let mut out = Vec::new();
    encode_none_done(&mut out, 9);
    assert_eq!(out, hex("668e33ef 0001 0000 0000000000000009 00000000"));
    assert_eq!(out.len(), STRUCTURED_HEADER_LEN);
}

#[test]
fn offset_data_header_layout_and_limits() {
    let mut out = Vec::new();
    encode_offset_data_header(&mut out, true, 5, 4096, 512).unwrap();
    assert_eq!(out, hex("668e33ef 0001 0001 0000000000000005 00000208 0000000000001000"));
    assert_eq!(encode_offset_data_header(&mut out, false, 5, 0, 0), Err(ChunkTooLarge { data_len: 0 }));
    assert_eq!(
        encode_offset_data_header(&mut out, false, 5, 0, u32::MAX - 7),
        Err(ChunkTooLarge { data_len: u32::MAX - 7 })
    );
    out.clear();
    encode_offset_data_header(&mut out, false, 5, 0, u32::MAX - 8).unwrap();
    assert_eq!(out[16..20], u32::MAX.to_be_bytes());
}

#[test]
fn offset_hole_layout() {
    let mut out = Vec::new();
    encode_offset_hole(&mut out, false, 1, 8, 16);
    assert_eq!(out, hex("668e33ef 0000 0002 0000000000000001 0000000c 0000000000000008 00000010"));
}

#[test]
fn error_chunks_layout() {
    let mut out = Vec::new();
    encode_error_chunk(&mut out, true, 3, NbdError::Io, "bad");
    assert_eq!(out, hex("668e33ef 0001 8001 0000000000000003 00000009 00000005 0003 626164"));
    out.clear();
    encode_error_offset_chunk(&mut out, false, 3, NbdError::Io, "", 1024);
    assert_eq!(out, hex("668e33ef 0000 8002 0000000000000003 0000000e 00000005 0000 0000000000000400"));
}

#[test]
fn error_values_match_spec() {
    let got: Vec<u32> = [
        NbdError::Perm,
        NbdError::Io,
        NbdError::NoMem,
        NbdError::Inval,
        NbdError::NoSpc,
        NbdError::Overflow,
        NbdError::NotSup,
        NbdError::Shutdown,
    ]
    .iter()
    .map(|e| e.code())
    .collect();
    assert_eq!(got, [1, 5, 12, 22, 28, 75, 95, 108]);
}

// ---- Handshake decoders ------------------------------------------------------

#[test]
fn client_flags() {
    let offered = NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES;
    assert_eq!(decode_client_flags(&[0, 0, 0], offered), Ok(None));
    let (f, n) = decode_client_flags(&[0, 0, 0, 3, 0xff], offered).unwrap().unwrap();
    assert_eq!(n, 4);
    assert!(f.fixed_newstyle && f.no_zeroes);
    // NO_ZEROES not offered: the client may not set it.
    assert!(matches!(
        decode_client_flags(&[0, 0, 0, 3], NBD_FLAG_FIXED_NEWSTYLE),
        Err(DecodeError::BadClientFlags { flags: 3, .. })
    ));
    // Unknown bit.
    assert!(decode_client_flags(&[0x80, 0, 0, 1], offered).is_err());
    // Plain (non-fixed) newstyle client is accepted; the driver decides.
    let (f, _) = decode_client_flags(&[0; 4], offered).unwrap().unwrap();
    assert!(!f.fixed_newstyle && !f.no_zeroes);
}

#[test]
fn option_every_split_point() {
    let payload = info_payload(b"export", &[NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME]);
    let mut wire = option_bytes(NBD_OPT_GO, &payload);
    let full = wire.len();
    for cut in 0..full {
        assert_eq!(decode_option(&wire[..cut], DEFAULT_MAX_OPTION_LEN), Ok(None), "cut at {cut}");
    }
    // Trailing bytes (the next option) are left alone.
    wire.extend_from_slice(b"IHAV");
    let (opt, used) = decode_option(&wire, DEFAULT_MAX_OPTION_LEN).unwrap().unwrap();
    assert_eq!(used, full);
    assert_eq!(opt.code, NBD_OPT_GO);
    let ClientOption::Go(info) = parse_option(opt).unwrap() else {
        panic!("not GO");
    };
    assert_eq!(info.name, "export");
    assert_eq!(info.requests, [NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME]);
    assert!(info.wants(NBD_INFO_NAME) && !info.wants(NBD_INFO_DESCRIPTION));
}

#[test]
fn oversized_option_refused_from_header_alone() {
    // Only the 16-byte header: the payload never needs to arrive.
    let mut hdr = IHAVEOPT.to_be_bytes().to_vec();
    hdr.extend_from_slice(&NBD_OPT_GO.to_be_bytes());
    hdr.extend_from_slice(&(DEFAULT_MAX_OPTION_LEN + 1).to_be_bytes());
    assert_eq!(
        decode_option(&hdr, DEFAULT_MAX_OPTION_LEN),
        Err(DecodeError::OptionTooLong {
            option: NBD_OPT_GO,
            len: DEFAULT_MAX_OPTION_LEN + 1,
            max: DEFAULT_MAX_OPTION_LEN
        })
    );
    // Exactly the limit is fine (needs its payload).
    hdr[12..16].copy_from_slice(&DEFAULT_MAX_OPTION_LEN.to_be_bytes());
    assert_eq!(decode_option(&hdr, DEFAULT_MAX_OPTION_LEN), Ok(None));
}

#[test]
fn option_bad_magic_refused() {
    let mut wire = option_bytes(NBD_OPT_LIST, &[]);
    wire[0] ^= 1;
    assert!(matches!(
        decode_option(&wire, DEFAULT_MAX_OPTION_LEN),
        Err(DecodeError::BadMagic { expected: IHAVEOPT, .. })
    ));
}

fn opt(code: u32, data: &[u8]) -> Result<ClientOption<'_>, OptionPayloadError> {
    parse_option(RawOption { code, data })
}

#[test]
fn option_payloads() {
    assert_eq!(opt(NBD_OPT_EXPORT_NAME, b""), Ok(ClientOption::ExportName("")));
    assert_eq!(opt(NBD_OPT_EXPORT_NAME, b"a"), Ok(ClientOption::ExportName("a")));
    assert_eq!(opt(NBD_OPT_ABORT, b"junk"), Ok(ClientOption::Abort));
    assert_eq!(opt(NBD_OPT_LIST, b""), Ok(ClientOption::List));
    assert_eq!(opt(NBD_OPT_STARTTLS, b""), Ok(ClientOption::StartTls));
    assert_eq!(opt(NBD_OPT_STRUCTURED_REPLY, b""), Ok(ClientOption::StructuredReply));
    assert_eq!(opt(99, b"x"), Ok(ClientOption::Unknown(99)));
    for code in [NBD_OPT_LIST, NBD_OPT_STARTTLS, NBD_OPT_STRUCTURED_REPLY] {
        let e = opt(code, b"x").unwrap_err();
        assert_eq!(e.reply_type(), NBD_REP_ERR_INVALID);
    }
    let info = info_payload(b"", &[]);
    assert_eq!(opt(NBD_OPT_INFO, &info), Ok(ClientOption::Info(InfoRequest { name: "", requests: vec![] })));
}

#[test]
fn info_payload_length_checks() {
    let good = info_payload(b"disk", &[3]);
    assert!(parse_info_request(&good).is_ok());
    // Every truncation is malformed, never a panic.
    for cut in 0..good.len() {
        let e = parse_info_request(&good[..cut]).unwrap_err();
        assert_eq!(e.reply_type(), NBD_REP_ERR_INVALID, "cut {cut}");
    }
    // Trailing byte.
    let mut long = good.clone();
    long.push(0);
    assert!(parse_info_request(&long).is_err());
    // Name length pointing past the payload.
    let mut lie = good.clone();
    lie[..4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(parse_info_request(&lie), Err(OptionPayloadError::Malformed { .. })));
    // Name over 4096 bytes.
    let big = info_payload(&[b'a'; MAX_STRING_LEN + 1], &[]);
    let e = parse_info_request(&big).unwrap_err();
    assert_eq!(e.reply_type(), NBD_REP_ERR_TOO_BIG);
    assert!(parse_info_request(&info_payload(&[b'a'; MAX_STRING_LEN], &[])).is_ok());
    // NUL and invalid UTF-8.
    assert!(matches!(parse_info_request(&info_payload(b"a\0b", &[])), Err(OptionPayloadError::BadString { .. })));
    assert!(matches!(parse_info_request(&info_payload(&[0xff], &[])), Err(OptionPayloadError::BadString { .. })));
}

// ---- Requests ------------------------------------------------------------------

const REQ: Request = Request {
    flags: NBD_CMD_FLAG_FUA,
    typ: NBD_CMD_WRITE,
    cookie: 0xdead_beef_0000_0001,
    offset: 0x1000,
    length: 0x200,
};

#[test]
fn request_layout_and_every_split_point() {
    let wire = request_bytes(&REQ);
    assert_eq!(wire, hex("25609513 0001 0001 deadbeef00000001 0000000000001000 00000200"));
    for cut in 0..wire.len() {
        assert_eq!(decode_request(&wire[..cut]), Ok(None), "cut {cut}");
    }
    let mut two = wire.clone();
    two.extend_from_slice(&wire);
    let (r, n) = decode_request(&two).unwrap().unwrap();
    assert_eq!((r, n), (REQ, REQUEST_HEADER_LEN));
    assert_eq!(r.payload_len(), 0x200);
    let (r2, _) = decode_request(&two[n..]).unwrap().unwrap();
    assert_eq!(r2, REQ);
}

#[test]
fn request_bad_magic_refused_early() {
    // The magic is judged as soon as its 4 bytes are in.
    assert!(matches!(decode_request(&hex("67446698")), Err(DecodeError::BadMagic { .. })));
    assert_eq!(decode_request(&hex("256095")), Ok(None));
}

const PARAMS: ExportParams = ExportParams {
    size: 1 << 20,
    transmission_flags: NBD_FLAG_HAS_FLAGS
        | NBD_FLAG_SEND_FLUSH
        | NBD_FLAG_SEND_FUA
        | NBD_FLAG_SEND_TRIM
        | NBD_FLAG_SEND_WRITE_ZEROES
        | NBD_FLAG_SEND_DF,
    block: BlockSizes { minimum: 512, preferred: 4096, maximum: 64 * 1024 },
    structured: true,
};

fn req(typ: u16, flags: u16, offset: u64, length: u32) -> Request {
    Request { flags, typ, cookie: 1, offset, length }
}

#[test]
fn validate_table() {
    use NbdError::*;
    let size = PARAMS.size;
    let max = PARAMS.block.maximum;
    let cases: &[(Request, Result<Command, NbdError>)] = &[
        (req(NBD_CMD_READ, 0, 0, 512), Ok(Command::Read)),
        (req(NBD_CMD_READ, NBD_CMD_FLAG_FUA, 0, 512), Ok(Command::Read)),
        (req(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 512), Ok(Command::Read)),
        (req(NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, size - 512, 512), Ok(Command::Write)),
        (req(NBD_CMD_WRITE, 0, 0, 0), Ok(Command::Write)),
        (req(NBD_CMD_FLUSH, 0, 0, 0), Ok(Command::Flush)),
        (req(NBD_CMD_DISC, 0, 0, 0), Ok(Command::Disc)),
        (req(NBD_CMD_TRIM, 0, 0, size as u32), Ok(Command::Trim)),
        (req(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE, 0, size as u32), Ok(Command::WriteZeroes)),
        // Unknown / unsupported commands.
        (req(NBD_CMD_CACHE, 0, 0, 512), Err(Inval)),
        (req(NBD_CMD_BLOCK_STATUS, 0, 0, 512), Err(Inval)),
        (req(0xffff, 0, 0, 512), Err(Inval)),
        // Flags not documented for the command, or unknown.
        (req(NBD_CMD_WRITE, NBD_CMD_FLAG_DF, 0, 512), Err(Inval)),
        (req(NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE, 0, 512), Err(Inval)),
        (req(NBD_CMD_READ, NBD_CMD_FLAG_REQ_ONE, 0, 512), Err(Inval)),
        (req(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_FAST_ZERO, 0, 512), Err(Inval)),
        (req(NBD_CMD_READ, 0x8000, 0, 512), Err(Inval)),
        // FLUSH/DISC carry no range.
        (req(NBD_CMD_FLUSH, 0, 512, 0), Err(Inval)),
        (req(NBD_CMD_DISC, 0, 0, 512), Err(Inval)),
        // Alignment to the minimum block size.
        (req(NBD_CMD_READ, 0, 1, 512), Err(Inval)),
        (req(NBD_CMD_WRITE, 0, 0, 511), Err(Inval)),
        // Over the maximum payload.
        (req(NBD_CMD_READ, 0, 0, max + 512), Err(Inval)),
        (req(NBD_CMD_WRITE, 0, 0, max + 512), Err(Inval)),
        // Past the end: ENOSPC for writes, EINVAL otherwise.
        (req(NBD_CMD_READ, 0, size, 512), Err(Inval)),
        (req(NBD_CMD_WRITE, 0, size, 512), Err(NoSpc)),
        (req(NBD_CMD_WRITE_ZEROES, 0, size - 512, 1024), Err(NoSpc)),
        (req(NBD_CMD_TRIM, 0, size - 512, 1024), Err(Inval)),
        (req(NBD_CMD_READ, 0, u64::MAX - 511, 512), Err(Inval)),
        (req(NBD_CMD_WRITE, 0, u64::MAX - 511, 512), Err(NoSpc)),
    ];
    for (r, want) in cases {
        assert_eq!(validate_request(r, &PARAMS), *want, "{r:?}");
    }
}

#[test]
fn validate_depends_on_negotiation() {
    // Nothing optional advertised, simple replies.
    let bare = ExportParams { transmission_flags: NBD_FLAG_HAS_FLAGS, structured: false, ..PARAMS };
    for (r, want) in [
        (req(NBD_CMD_FLUSH, 0, 0, 0), NbdError::Inval),
        (req(NBD_CMD_TRIM, 0, 0, 512), NbdError::Inval),
        (req(NBD_CMD_WRITE_ZEROES, 0, 0, 512), NbdError::Inval),
        (req(NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 0, 512), NbdError::Inval),
        (req(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 512), NbdError::Inval),
    ] {
        assert_eq!(validate_request(&r, &bare), Err(want), "{r:?}");
    }
    // SEND_DF without structured replies is not honoured either.
    let df_no_sr = ExportParams { structured: false, ..PARAMS };
    assert_eq!(validate_request(&req(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 512), &df_no_sr), Err(NbdError::Inval));
    // Read-only: EPERM for every command that writes, reads still fine.
    let ro = ExportParams { transmission_flags: PARAMS.transmission_flags | NBD_FLAG_READ_ONLY, ..PARAMS };
    for typ in [NBD_CMD_WRITE, NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES] {
        assert_eq!(validate_request(&req(typ, 0, 0, 512), &ro), Err(NbdError::Perm));
    }
    assert_eq!(validate_request(&req(NBD_CMD_READ, 0, 0, 512), &ro), Ok(Command::Read));
    // Minimum block size 0 is treated as 1 (no alignment), not a division by zero.
    let byte = ExportParams { block: BlockSizes { minimum: 0, preferred: 1, maximum: 4096 }, ..PARAMS };
    assert_eq!(validate_request(&req(NBD_CMD_READ, 0, 3, 5), &byte), Ok(Command::Read));
}

// ---- Properties ----------------------------------------------------------------

proptest! {
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), offered in any::<u16>(), max in 0u32..1024) {
        let _ = decode_client_flags(&bytes, offered);
        let _ = decode_request(&bytes);
        let _ = parse_info_request(&bytes);
        if let Ok(Some((o, n))) = decode_option(&bytes, max) {
            prop_assert!(n <= bytes.len());
            prop_assert!(o.data.len() as u32 <= max);
        }
        for code in 0..16 {
            let _ = parse_option(RawOption { code, data: &bytes });
        }
    }

    #[test]
    fn decoders_never_panic_behind_valid_magic(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut o = IHAVEOPT.to_be_bytes().to_vec();
        o.extend_from_slice(&tail);
        if let Ok(Some((opt, _))) = decode_option(&o, DEFAULT_MAX_OPTION_LEN) {
            let _ = parse_option(opt);
        }
        let mut r = REQUEST_MAGIC.to_be_bytes().to_vec();
        r.extend_from_slice(&tail);
        let _ = decode_request(&r);
    }

    #[test]
    fn request_round_trip(flags in any::<u16>(), typ in any::<u16>(), cookie in any::<u64>(), offset in any::<u64>(), length in any::<u32>()) {
        let r = Request { flags, typ, cookie, offset, length };
        let wire = request_bytes(&r);
        prop_assert_eq!(decode_request(&wire), Ok(Some((r, REQUEST_HEADER_LEN))));
    }

    #[test]
    fn info_round_trip(name in "[a-z0-9/:._-]{0,64}", reqs in proptest::collection::vec(any::<u16>(), 0..32)) {
        let payload = info_payload(name.as_bytes(), &reqs);
        let wire = option_bytes(NBD_OPT_GO, &payload);
        let (o, n) = decode_option(&wire, DEFAULT_MAX_OPTION_LEN).unwrap().unwrap();
        prop_assert_eq!(n, wire.len());
        let parsed = parse_option(o).unwrap();
        prop_assert_eq!(parsed, ClientOption::Go(InfoRequest { name: &name, requests: reqs }));
    }

    #[test]
    fn accepted_requests_are_in_bounds(flags in any::<u16>(), typ in 0u16..8, offset in any::<u64>(), length in any::<u32>(), size in any::<u64>()) {
        let p = ExportParams { size, ..PARAMS };
        let r = Request { flags, typ, cookie: 0, offset, length };
        if let Ok(cmd) = validate_request(&r, &p) {
            let end = offset.checked_add(u64::from(length));
            prop_assert!(end.is_some_and(|e| e <= size));
            prop_assert_eq!(offset % 512, 0);
            prop_assert_eq!(length % 512, 0);
            if matches!(cmd, Command::Read | Command::Write) {
                prop_assert!(length <= p.block.maximum);
            }
        }
    }
}
