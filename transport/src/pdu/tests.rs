//! Round trips of every PDU and robustness against arbitrary bytes.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::frame::{self, Framing, TxQueue};
use super::*;

fn data() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn residual() -> impl Strategy<Value = Residual> {
    prop_oneof![
        Just(Residual::None),
        any::<u32>().prop_map(Residual::Underflow),
        any::<u32>().prop_map(Residual::Overflow),
    ]
}

fn stage() -> impl Strategy<Value = Stage> {
    prop_oneof![Just(Stage::Security), Just(Stage::Operational), Just(Stage::FullFeature)]
}

/// T and C are exclusive; NSG only means something with T.
fn login_flags() -> impl Strategy<Value = (bool, bool, Stage, Stage)> {
    (any::<bool>(), any::<bool>(), stage(), stage()).prop_map(|(t, c, csg, nsg)| {
        let c = c && !t;
        (t, c, csg, if t { nsg } else { csg })
    })
}

fn final_continue() -> impl Strategy<Value = (bool, bool)> {
    (any::<bool>(), any::<bool>()).prop_map(|(f, c)| (f, c && !f))
}

fn any_pdu() -> impl Strategy<Value = Pdu> {
    let nop_out = (any::<bool>(), any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>(), data())
        .prop_map(|(immediate, lun, itt, ttt, cmdsn, exp_statsn, data)| {
            Pdu::NopOut(NopOut { immediate, lun, itt, ttt, cmdsn, exp_statsn, data })
        });
    let scsi_cmd = (
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), 0u8..8),
        (any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
        (any::<[u8; 16]>(), prop::collection::vec(any::<u8>(), 0..48), prop::option::of(any::<u32>()), data()),
    )
        .prop_map(
            |(
                (immediate, final_pdu, read, write, attr),
                (lun, itt, edtl, cmdsn, exp_statsn),
                (cdb, ext, bidi, data),
            )| {
                Pdu::ScsiCommand(ScsiCommand {
                    immediate,
                    final_pdu,
                    read,
                    write,
                    attr: TaskAttr(attr),
                    lun,
                    itt,
                    expected_data_len: edtl,
                    cmdsn,
                    exp_statsn,
                    cdb,
                    ext_cdb: Bytes::from(ext),
                    bidi_read_len: bidi,
                    data,
                })
            },
        );
    let tmf_req = (
        any::<bool>(),
        0u8..0x80,
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(immediate, f, lun, itt, referenced_itt, cmdsn, exp_statsn, ref_cmdsn, exp_datasn)| {
            Pdu::TaskMgmtRequest(TaskMgmtRequest {
                immediate,
                function: TmfFunction(f),
                lun,
                itt,
                referenced_itt,
                cmdsn,
                exp_statsn,
                ref_cmdsn,
                exp_datasn,
            })
        });
    let login_req =
        (login_flags(), any::<(u8, u8)>(), any::<[u8; 6]>(), any::<u16>(), any::<(u32, u16, u32, u32)>(), data())
            .prop_map(
                |((transit, continue_, csg, nsg), (vmax, vmin), isid, tsih, (itt, cid, cmdsn, exp_statsn), data)| {
                    Pdu::LoginRequest(LoginRequest {
                        transit,
                        continue_,
                        csg,
                        nsg,
                        version_max: vmax,
                        version_min: vmin,
                        isid: Isid(isid),
                        tsih,
                        itt,
                        cid,
                        cmdsn,
                        exp_statsn,
                        data,
                    })
                },
            );
    let text_req = (any::<bool>(), final_continue(), any::<u64>(), any::<(u32, u32, u32, u32)>(), data()).prop_map(
        |(immediate, (final_pdu, continue_), lun, (itt, ttt, cmdsn, exp_statsn), data)| {
            Pdu::TextRequest(TextRequest { immediate, final_pdu, continue_, lun, itt, ttt, cmdsn, exp_statsn, data })
        },
    );
    let data_out = (any::<bool>(), any::<u64>(), any::<(u32, u32, u32, u32, u32)>(), data()).prop_map(
        |(final_pdu, lun, (itt, ttt, exp_statsn, datasn, buffer_offset), data)| {
            Pdu::DataOut(DataOut { final_pdu, lun, itt, ttt, exp_statsn, datasn, buffer_offset, data })
        },
    );
    let logout_req = (any::<bool>(), 0u8..0x80, any::<(u32, u16, u32, u32)>()).prop_map(
        |(immediate, reason, (itt, cid, cmdsn, exp_statsn))| {
            Pdu::LogoutRequest(LogoutRequest { immediate, reason: LogoutReason(reason), itt, cid, cmdsn, exp_statsn })
        },
    );
    let snack = (0u8..16, any::<u64>(), any::<(u32, u32, u32, u32, u32)>()).prop_map(
        |(kind, lun, (itt, ttt, exp_statsn, beg_run, run_length))| {
            Pdu::Snack(Snack { kind: SnackType(kind), lun, itt, ttt, exp_statsn, beg_run, run_length })
        },
    );
    let nop_in = (any::<u64>(), any::<bool>(), any::<u32>(), any::<(u32, u32, u32)>(), data()).prop_map(
        |(lun, response, tag, (statsn, exp_cmdsn, max_cmdsn), data)| {
            let (itt, ttt) = if response { (tag, RESERVED_TAG) } else { (RESERVED_TAG, tag) };
            Pdu::NopIn(NopIn { lun, itt, ttt, statsn, exp_cmdsn, max_cmdsn, data })
        },
    );
    let scsi_rsp =
        ((any::<u32>(), any::<u8>(), any::<u8>(), residual(), residual()), any::<(u32, u32, u32, u32, u32)>(), data())
            .prop_map(
                |(
                    (itt, response, status, residual, bidi),
                    (snack_tag, statsn, exp_cmdsn, max_cmdsn, exp_datasn),
                    data,
                )| {
                    Pdu::ScsiResponse(ScsiResponse {
                        itt,
                        response,
                        status,
                        residual,
                        bidi_read_residual: bidi,
                        snack_tag,
                        statsn,
                        exp_cmdsn,
                        max_cmdsn,
                        exp_datasn,
                        data,
                    })
                },
            );
    let tmf_rsp = (any::<u8>(), any::<(u32, u32, u32, u32)>()).prop_map(|(r, (itt, statsn, exp_cmdsn, max_cmdsn))| {
        Pdu::TaskMgmtResponse(TaskMgmtResponse { response: TmfResponse(r), itt, statsn, exp_cmdsn, max_cmdsn })
    });
    let login_rsp =
        (login_flags(), any::<(u8, u8)>(), any::<[u8; 6]>(), any::<u16>(), any::<(u32, u32, u32, u32, u16)>(), data())
            .prop_map(
                |(
                    (transit, continue_, csg, nsg),
                    (vmax, vact),
                    isid,
                    tsih,
                    (itt, statsn, exp_cmdsn, max_cmdsn, status),
                    data,
                )| {
                    Pdu::LoginResponse(LoginResponse {
                        transit,
                        continue_,
                        csg,
                        nsg,
                        version_max: vmax,
                        version_active: vact,
                        isid: Isid(isid),
                        tsih,
                        itt,
                        statsn,
                        exp_cmdsn,
                        max_cmdsn,
                        status: LoginStatus(status),
                        data,
                    })
                },
            );
    let text_rsp = (final_continue(), any::<u64>(), any::<(u32, u32, u32, u32, u32)>(), data()).prop_map(
        |((final_pdu, continue_), lun, (itt, ttt, statsn, exp_cmdsn, max_cmdsn), data)| {
            Pdu::TextResponse(TextResponse { final_pdu, continue_, lun, itt, ttt, statsn, exp_cmdsn, max_cmdsn, data })
        },
    );
    let data_in = (
        (any::<bool>(), any::<bool>(), prop::option::of(any::<u8>()), residual()),
        any::<u64>(),
        any::<(u32, u32, u32, u32, u32, u32, u32)>(),
        data(),
    )
        .prop_map(
            |((final_pdu, ack, status, residual), lun, (itt, ttt, statsn, exp_cmdsn, max_cmdsn, datasn, off), data)| {
                let final_pdu = final_pdu || status.is_some();
                let residual = if status.is_some() { residual } else { Residual::None };
                Pdu::DataIn(DataIn {
                    final_pdu,
                    ack,
                    status,
                    residual,
                    lun,
                    itt,
                    ttt,
                    statsn,
                    exp_cmdsn,
                    max_cmdsn,
                    datasn,
                    buffer_offset: off,
                    data,
                })
            },
        );
    let logout_rsp = (any::<u8>(), any::<(u32, u32, u32, u32, u16, u16)>()).prop_map(
        |(r, (itt, statsn, exp_cmdsn, max_cmdsn, time2wait, time2retain))| {
            Pdu::LogoutResponse(LogoutResponse {
                response: LogoutResponseCode(r),
                itt,
                statsn,
                exp_cmdsn,
                max_cmdsn,
                time2wait,
                time2retain,
            })
        },
    );
    let r2t = (any::<u64>(), any::<(u32, u32, u32, u32, u32, u32, u32)>(), 1u32..).prop_map(
        |(lun, (itt, ttt, statsn, exp_cmdsn, max_cmdsn, r2tsn, buffer_offset), desired_len)| {
            Pdu::R2t(R2t { lun, itt, ttt, statsn, exp_cmdsn, max_cmdsn, r2tsn, buffer_offset, desired_len })
        },
    );
    let async_msg = (any::<u64>(), any::<(u32, u32, u32)>(), any::<(u8, u8, u16, u16, u16)>(), data()).prop_map(
        |(lun, (statsn, exp_cmdsn, max_cmdsn), (event, vcode, parameter1, parameter2, parameter3), data)| {
            Pdu::AsyncMessage(AsyncMessage {
                lun,
                statsn,
                exp_cmdsn,
                max_cmdsn,
                event: AsyncEvent(event),
                vcode,
                parameter1,
                parameter2,
                parameter3,
                data,
            })
        },
    );
    let reject = (any::<u8>(), any::<(u32, u32, u32, u32)>(), data()).prop_map(
        |(reason, (statsn, exp_cmdsn, max_cmdsn, datasn), data)| {
            Pdu::Reject(Reject { reason: RejectReason(reason), statsn, exp_cmdsn, max_cmdsn, datasn, data })
        },
    );
    prop_oneof![
        nop_out, scsi_cmd, tmf_req, login_req, text_req, data_out, logout_req, snack, nop_in, scsi_rsp, tmf_rsp,
        login_rsp, text_rsp, data_in, logout_rsp, r2t, async_msg, reject,
    ]
}

fn framing() -> impl Strategy<Value = Framing> {
    (any::<bool>(), any::<bool>()).prop_map(|(h, d)| Framing {
        header_digest: h,
        data_digest: d,
        max_recv_data_segment_length: 1 << 16,
    })
}

proptest! {
    #[test]
    fn every_pdu_round_trips(pdu in any_pdu(), framing in framing()) {
        let raw = pdu.encode();
        prop_assert_eq!(raw.bhs.opcode(), pdu.opcode());
        let mut q = TxQueue::new();
        q.push(&raw, &framing);
        let mut wire = q.take_all();
        let decoded = frame::decode(&mut wire, &framing).unwrap().unwrap();
        prop_assert!(wire.is_empty());
        prop_assert_eq!(Pdu::parse(decoded).unwrap(), pdu);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400), framing in framing()) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(raw)) = frame::decode(&mut buf, &framing) {
            let _ = Pdu::parse(raw);
        }
    }

    #[test]
    fn a_boundary_after_a_bad_header_is_never_past_the_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400), framing in framing()) {
        if let Ok(Some(len)) = frame::boundary_after_bad_header(&BytesMut::from(&bytes[..]), &framing) {
            prop_assert!(len + BHS_LEN + 4 <= bytes.len());
        }
    }

    #[test]
    fn arbitrary_headers_never_panic(bhs in any::<[u8; 48]>(), ahs in prop::collection::vec(any::<u8>(), 0..64), data in data()) {
        let ahs_len = ahs.len() / 4 * 4;
        let _ = Pdu::parse(RawPdu { bhs: Bhs(bhs), ahs: Bytes::copy_from_slice(&ahs[..ahs_len]), data });
    }
}

#[test]
fn extended_cdb_uses_an_ahs() {
    let cdb32: Vec<u8> = (0..32).collect();
    let mut cdb = [0u8; 16];
    cdb.copy_from_slice(&cdb32[..16]);
    let cmd = ScsiCommand {
        immediate: false,
        final_pdu: true,
        read: true,
        write: false,
        attr: TaskAttr::SIMPLE,
        lun: 1 << 48,
        itt: 1,
        expected_data_len: 512,
        cmdsn: 1,
        exp_statsn: 1,
        cdb,
        ext_cdb: Bytes::copy_from_slice(&cdb32[16..]),
        bidi_read_len: None,
        data: Bytes::new(),
    };
    let raw = Pdu::ScsiCommand(cmd.clone()).encode();
    // 16 extra CDB bytes + reserved byte = AHSLength 17, padded to 20, plus 4 header bytes...
    assert_eq!(&raw.ahs[..4], &[0, 17, 1, 0]);
    assert_eq!(raw.ahs.len(), 20);
    assert_eq!(raw.bhs.total_ahs_len(), 20);
    assert_eq!(Pdu::parse(raw).unwrap(), Pdu::ScsiCommand(cmd));
}

#[test]
fn malformed_pdus_are_errors() {
    // Data-In with S but not F.
    let mut b = Bhs::new(Opcode::DATA_IN);
    b.set_u8(1, 0x01);
    let e = Pdu::parse(RawPdu { bhs: b, ahs: Bytes::new(), data: Bytes::new() }).unwrap_err();
    assert!(e.to_string().contains("S bit set without the F bit"), "{e}");
    // SCSI Response with both residual bits.
    let mut b = Bhs::new(Opcode::SCSI_RESPONSE);
    b.set_u8(1, 0x86);
    assert!(Pdu::parse(RawPdu { bhs: b, ahs: Bytes::new(), data: Bytes::new() }).is_err());
    // R2T asking for 0 bytes.
    let b = Bhs::new(Opcode::R2T);
    assert!(Pdu::parse(RawPdu { bhs: b, ahs: Bytes::new(), data: Bytes::new() }).is_err());
    // Unknown opcode.
    let b = Bhs::new(Opcode(0x3e));
    assert_eq!(
        Pdu::parse(RawPdu { bhs: b, ahs: Bytes::new(), data: Bytes::new() }),
        Err(PduError::UnknownOpcode(0x3e))
    );
    // Login response in the reserved stage 2.
    let mut b = Bhs::new(Opcode::LOGIN_RESPONSE);
    b.set_u8(1, 0x08);
    assert!(Pdu::parse(RawPdu { bhs: b, ahs: Bytes::new(), data: Bytes::new() }).is_err());
    // Logout response carrying data.
    let b = Bhs::new(Opcode::LOGOUT_RESPONSE);
    assert!(Pdu::parse(RawPdu { bhs: b, ahs: Bytes::new(), data: Bytes::from_static(b"x") }).is_err());
    // An AHS that overruns.
    let b = Bhs::new(Opcode::SCSI_COMMAND);
    assert!(Pdu::parse(RawPdu { bhs: b, ahs: Bytes::from_static(&[0, 40, 1, 0]), data: Bytes::new() }).is_err());
}

#[test]
fn sense_is_taken_from_the_response_segment() {
    let mut rsp = ScsiResponse {
        itt: 1,
        response: 0,
        status: 2,
        residual: Residual::None,
        bidi_read_residual: Residual::None,
        snack_tag: 0,
        statsn: 0,
        exp_cmdsn: 0,
        max_cmdsn: 0,
        exp_datasn: 0,
        data: Bytes::from_static(&[0, 3, 0x70, 0, 6]),
    };
    assert_eq!(rsp.sense().unwrap(), Bytes::from_static(&[0x70, 0, 6]));
    rsp.data = Bytes::from_static(&[0, 0]);
    assert_eq!(rsp.sense(), None);
    rsp.data = Bytes::from_static(&[0, 9, 0x70]);
    assert_eq!(rsp.sense().unwrap(), Bytes::from_static(&[0x70]));
}

#[test]
fn names_print_for_known_codes() {
    assert_eq!(format!("{:?}", LoginStatus::AUTHENTICATION_FAILURE), "authentication failure");
    assert_eq!(format!("{:?}", LoginStatus(0x0299)), "LoginStatus(0x299)");
    assert_eq!(LoginStatus::TARGET_MOVED_PERMANENTLY.class(), 1);
}

#[test]
fn path_isids_are_stable_and_distinct() {
    let a = Isid::for_path("iqn.2026-11.test:init iqn.2026-11.test:disk 127.0.0.1:3260 path0");
    assert_eq!(a, Isid::for_path("iqn.2026-11.test:init iqn.2026-11.test:disk 127.0.0.1:3260 path0"));
    let b = Isid::for_path("iqn.2026-11.test:init iqn.2026-11.test:disk 127.0.0.2:3260 path1");
    assert_ne!(a, b);
    // The "Random" ISID type (T = 10b, RFC 7143 section 11.12.5).
    assert_eq!(a.0[0] & 0xc0, 0x80);
    assert_eq!(b.0[0] & 0xc0, 0x80);
    // A pinned value: changing the derivation would make every configured
    // path leak its session on the target after an upgrade.
    assert_eq!(Isid::for_path("x").to_string(), "80f54c8602dc");
}
