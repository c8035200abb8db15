//! Persistent reservations (SPC-4 "PERSISTENT RESERVE IN command",
//! "PERSISTENT RESERVE OUT command"): builders for both commands and
//! parsers for the READ KEYS, READ RESERVATION and REPORT CAPABILITIES
//! responses.
//!
//! Multipath needs these because a reservation key is registered per I_T
//! nexus: every path (session) to a reserved LU must register the same key
//! before it may be chosen ("register before use", DESIGN.md), otherwise
//! its writes fail with RESERVATION CONFLICT.

use crate::cdb::{Cdb, Command, DataDirection, Opcode};
use crate::codec::{Reader, bit};
use crate::error::{CdbError, ParseError};
use crate::macros::wire_enum;

wire_enum! {
    /// PERSISTENT RESERVE IN service action (byte 1 bits 4-0).
    pub struct PrInAction(u8);
    /// List registered keys.
    READ_KEYS = 0x00 => "READ KEYS";
    /// Show the current reservation.
    READ_RESERVATION = 0x01 => "READ RESERVATION";
    /// Which PR features the LU supports.
    REPORT_CAPABILITIES = 0x02 => "REPORT CAPABILITIES";
    /// Registrations with transport IDs (tgtd: not supported).
    READ_FULL_STATUS = 0x03 => "READ FULL STATUS";
}

wire_enum! {
    /// PERSISTENT RESERVE OUT service action (byte 1 bits 4-0).
    pub struct PrOutAction(u8);
    /// Register (or unregister with service action key 0) a key for this I_T nexus.
    REGISTER = 0x00 => "REGISTER";
    /// Take a reservation.
    RESERVE = 0x01 => "RESERVE";
    /// Release the reservation.
    RELEASE = 0x02 => "RELEASE";
    /// Remove every registration and the reservation.
    CLEAR = 0x03 => "CLEAR";
    /// Remove other registrations and take their reservation.
    PREEMPT = 0x04 => "PREEMPT";
    /// PREEMPT and abort the preempted nexuses' tasks.
    PREEMPT_AND_ABORT = 0x05 => "PREEMPT AND ABORT";
    /// Register regardless of the current key.
    REGISTER_AND_IGNORE_EXISTING_KEY = 0x06 => "REGISTER AND IGNORE EXISTING KEY";
    /// Move the reservation to another I_T nexus (needs a TransportID list).
    REGISTER_AND_MOVE = 0x07 => "REGISTER AND MOVE";
    /// Replace a lost reservation (SPC-4).
    REPLACE_LOST_RESERVATION = 0x08 => "REPLACE LOST RESERVATION";
}

wire_enum! {
    /// Persistent reservation TYPE (SPC-4 "Persistent reservation type
    /// codes"), 4 bits.
    pub struct PrType(u8);
    /// Write Exclusive.
    WRITE_EXCLUSIVE = 0x1 => "WRITE EXCLUSIVE";
    /// Exclusive Access.
    EXCLUSIVE_ACCESS = 0x3 => "EXCLUSIVE ACCESS";
    /// Write Exclusive - Registrants Only.
    WRITE_EXCLUSIVE_REGISTRANTS_ONLY = 0x5 => "WRITE EXCLUSIVE - REGISTRANTS ONLY";
    /// Exclusive Access - Registrants Only.
    EXCLUSIVE_ACCESS_REGISTRANTS_ONLY = 0x6 => "EXCLUSIVE ACCESS - REGISTRANTS ONLY";
    /// Write Exclusive - All Registrants.
    WRITE_EXCLUSIVE_ALL_REGISTRANTS = 0x7 => "WRITE EXCLUSIVE - ALL REGISTRANTS";
    /// Exclusive Access - All Registrants.
    EXCLUSIVE_ACCESS_ALL_REGISTRANTS = 0x8 => "EXCLUSIVE ACCESS - ALL REGISTRANTS";
}

/// PERSISTENT RESERVE IN: service action in byte 1, ALLOCATION LENGTH in
/// bytes 7-8.
pub fn persistent_reserve_in(action: PrInAction, alloc: u16) -> Command {
    let [a0, a1] = alloc.to_be_bytes();
    let op = Opcode::PERSISTENT_RESERVE_IN.0;
    let cdb = [op, action.0 & 0x1f, 0, 0, 0, 0, 0, a0, a1, 0];
    Command::new(Cdb::from_array(cdb), DataDirection::read(u32::from(alloc)))
}

/// The fields of the basic PERSISTENT RESERVE OUT parameter list (SPC-4
/// "Basic PERSISTENT RESERVE OUT parameter list"). SPEC_I_PT and its
/// TransportID list are not supported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PrOutParameters {
    /// RESERVATION KEY (bytes 0-7): the key this I_T nexus is registered
    /// with (0 when registering the first time).
    pub reservation_key: u64,
    /// SERVICE ACTION RESERVATION KEY (bytes 8-15): the new key for
    /// REGISTER, the key to preempt for PREEMPT.
    pub service_action_key: u64,
    /// ALL_TG_PT (byte 20 bit 2): register through every target port.
    pub all_tg_pt: bool,
    /// APTPL (byte 20 bit 0): keep the state across target power loss.
    pub aptpl: bool,
}

/// Length of the basic PERSISTENT RESERVE OUT parameter list.
pub const PR_OUT_PARAMETER_LIST_LEN: usize = 24;

/// PERSISTENT RESERVE OUT with the basic 24-byte parameter list: service
/// action in byte 1, SCOPE (0 = LU, bits 7-4) and TYPE (bits 3-0) in byte
/// 2, PARAMETER LIST LENGTH in bytes 5-8. `pr_type` matters for RESERVE,
/// RELEASE, PREEMPT and PREEMPT AND ABORT and is sent as given otherwise.
/// REGISTER AND MOVE is refused (it needs a TransportID list).
pub fn persistent_reserve_out(
    action: PrOutAction,
    pr_type: PrType,
    params: &PrOutParameters,
) -> Result<(Command, [u8; PR_OUT_PARAMETER_LIST_LEN]), CdbError> {
    if action == PrOutAction::REGISTER_AND_MOVE || action.0 > 0x1f {
        return Err(CdbError::InvalidValue {
            command: "PERSISTENT RESERVE OUT",
            field: "service action",
            value: u64::from(action.0),
            problem: "is not supported with the basic parameter list",
        });
    }
    if pr_type.0 > 0x0f {
        return Err(CdbError::FieldOverflow {
            command: "PERSISTENT RESERVE OUT",
            field: "type",
            value: u64::from(pr_type.0),
            max: 0x0f,
        });
    }
    let op = Opcode::PERSISTENT_RESERVE_OUT.0;
    let len = PR_OUT_PARAMETER_LIST_LEN as u8;
    let cdb = [op, action.0, pr_type.0, 0, 0, 0, 0, 0, len, 0];
    let [k0, k1, k2, k3, k4, k5, k6, k7] = params.reservation_key.to_be_bytes();
    let [s0, s1, s2, s3, s4, s5, s6, s7] = params.service_action_key.to_be_bytes();
    let flags = (u8::from(params.all_tg_pt) << 2) | u8::from(params.aptpl);
    let list = [k0, k1, k2, k3, k4, k5, k6, k7, s0, s1, s2, s3, s4, s5, s6, s7, 0, 0, 0, 0, flags, 0, 0, 0];
    Ok((Command::new(Cdb::from_array(cdb), DataDirection::write(u32::from(len))), list))
}

/// Reads the 8-byte PRGENERATION + ADDITIONAL LENGTH header shared by READ
/// KEYS and READ RESERVATION, checking that the buffer holds what follows.
fn pr_in_header<'a>(what: &'static str, buf: &'a [u8]) -> Result<(u32, Reader<'a>), ParseError> {
    let mut r = Reader::new(what, "data", buf);
    let generation = r.u32("PRgeneration")?;
    let add = r.u32("additional length")?;
    let len = usize::try_from(add).unwrap_or(usize::MAX);
    if r.left() < len {
        return Err(ParseError::Truncated { what, need: len.saturating_add(8), have: buf.len() });
    }
    Ok((generation, r.sub(len, "additional length")?))
}

/// READ KEYS parameter data: PRGENERATION, then one 8-byte key per
/// registered I_T nexus.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PrKeys {
    /// PRGENERATION: bumped by every successful PR OUT except RESERVE and RELEASE.
    pub generation: u32,
    /// Registered keys, one per registered I_T nexus (so a key appears
    /// once per registered path).
    pub keys: Vec<u64>,
}

impl PrKeys {
    /// Parses READ KEYS data.
    pub fn parse(buf: &[u8]) -> Result<PrKeys, ParseError> {
        const WHAT: &str = "PERSISTENT RESERVE IN READ KEYS data";
        let (generation, mut r) = pr_in_header(WHAT, buf)?;
        if r.left() % 8 != 0 {
            return Err(ParseError::Invalid {
                what: WHAT,
                field: "additional length",
                value: r.left() as u64,
                problem: "is not a multiple of 8",
            });
        }
        let mut keys = Vec::with_capacity(r.left() / 8);
        while !r.is_empty() {
            keys.push(r.u64("reservation key")?);
        }
        Ok(PrKeys { generation, keys })
    }
}

/// A persistent reservation as READ RESERVATION reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reservation {
    /// The holder's reservation key (0 for the all-registrants types).
    pub key: u64,
    /// SCOPE (0 = logical unit).
    pub scope: u8,
    /// TYPE.
    pub pr_type: PrType,
}

/// READ RESERVATION parameter data: PRGENERATION and, if the LU is
/// reserved (ADDITIONAL LENGTH 16), the reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PrReservation {
    /// PRGENERATION.
    pub generation: u32,
    /// The reservation, or `None` when the LU is not reserved.
    pub reservation: Option<Reservation>,
}

impl PrReservation {
    /// Parses READ RESERVATION data: bytes 8-15 RESERVATION KEY, 16-19
    /// obsolete, 20 reserved, 21 SCOPE | TYPE, 22-23 obsolete.
    pub fn parse(buf: &[u8]) -> Result<PrReservation, ParseError> {
        const WHAT: &str = "PERSISTENT RESERVE IN READ RESERVATION data";
        let (generation, mut r) = pr_in_header(WHAT, buf)?;
        if r.is_empty() {
            return Ok(PrReservation { generation, reservation: None });
        }
        let key = r.u64("reservation key")?;
        r.skip(5, "obsolete")?;
        let st = r.u8("scope and type")?;
        Ok(PrReservation {
            generation,
            reservation: Some(Reservation { key, scope: st >> 4, pr_type: PrType(st & 0x0f) }),
        })
    }
}

/// REPORT CAPABILITIES parameter data (SPC-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PrCapabilities {
    /// CRH (byte 2 bit 4): compatible reservation handling.
    pub crh: bool,
    /// SIP_C (byte 2 bit 3): SPEC_I_PT supported.
    pub sip_c: bool,
    /// ATP_C (byte 2 bit 2): ALL_TG_PT supported.
    pub atp_c: bool,
    /// PTPL_C (byte 2 bit 0): APTPL supported.
    pub ptpl_c: bool,
    /// TMV (byte 3 bit 7): `type_mask` is valid.
    pub tmv: bool,
    /// ALLOW COMMANDS (byte 3 bits 6-4).
    pub allow_commands: u8,
    /// PTPL_A (byte 3 bit 0): persist through power loss is active.
    pub ptpl_a: bool,
    /// PERSISTENT RESERVATION TYPE MASK (bytes 4-5), raw.
    pub type_mask: u16,
}

impl PrCapabilities {
    /// Parses REPORT CAPABILITIES data (at least 6 bytes).
    pub fn parse(buf: &[u8]) -> Result<PrCapabilities, ParseError> {
        let mut r = Reader::new("PERSISTENT RESERVE IN REPORT CAPABILITIES data", "data", buf);
        r.skip(2, "length")?;
        let b2 = r.u8("capabilities")?;
        let b3 = r.u8("TMV")?;
        let type_mask = r.u16("persistent reservation type mask")?;
        Ok(PrCapabilities {
            crh: bit(b2, 4),
            sip_c: bit(b2, 3),
            atp_c: bit(b2, 2),
            ptpl_c: bit(b2, 0),
            tmv: bit(b3, 7),
            allow_commands: (b3 >> 4) & 0x07,
            ptpl_a: bit(b3, 0),
            type_mask,
        })
    }

    /// Whether reservation type `t` is supported; `None` when TMV is clear
    /// (the mask means nothing) or `t` has no bit in the mask.
    pub fn supports(&self, t: PrType) -> Option<bool> {
        if !self.tmv {
            return None;
        }
        // Byte 4: WR_EX_AR 7, EX_AC_RO 6, WR_EX_RO 5, EX_AC 3, WR_EX 1;
        // byte 5: EX_AC_AR 0.
        let bit = match t {
            PrType::WRITE_EXCLUSIVE_ALL_REGISTRANTS => 15,
            PrType::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY => 14,
            PrType::WRITE_EXCLUSIVE_REGISTRANTS_ONLY => 13,
            PrType::EXCLUSIVE_ACCESS => 11,
            PrType::WRITE_EXCLUSIVE => 9,
            PrType::EXCLUSIVE_ACCESS_ALL_REGISTRANTS => 0,
            _ => return None,
        };
        Some((self.type_mask >> bit) & 1 == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::hex;
    use proptest::prelude::*;

    #[test]
    fn builders_match_the_probe() {
        // Bytes the research probe (iscsi_probe.py) sends to tgtd.
        let c = persistent_reserve_in(PrInAction::READ_KEYS, 512);
        assert_eq!(c.cdb.as_bytes(), hex("5e000000000000020000").as_slice());
        assert_eq!(c.data, DataDirection::Read { len: 512 });
        let p = PrOutParameters { reservation_key: 0xaaaa, ..Default::default() };
        let (c, l) = persistent_reserve_out(PrOutAction::RESERVE, PrType::WRITE_EXCLUSIVE, &p).unwrap();
        assert_eq!(c.cdb.as_bytes(), hex("5f010100000000001800").as_slice());
        assert_eq!(c.data, DataDirection::Write { len: 24 });
        assert_eq!(l.as_slice(), hex("000000000000aaaa00000000000000000000000000000000").as_slice());
        assert_eq!(&l[..8], &0xaaaau64.to_be_bytes());
        assert_eq!(&l[8..], &[0u8; 16]);
        let p = PrOutParameters { reservation_key: 1, service_action_key: 2, all_tg_pt: true, aptpl: true };
        let (_, l) = persistent_reserve_out(PrOutAction::REGISTER, PrType(0), &p).unwrap();
        assert_eq!(&l[8..16], &2u64.to_be_bytes());
        assert_eq!(l[20], 0x05);
        assert!(persistent_reserve_out(PrOutAction::REGISTER_AND_MOVE, PrType(0), &p).is_err());
        assert!(persistent_reserve_out(PrOutAction::RESERVE, PrType(0x10), &p).is_err());
    }

    #[test]
    fn tgtd_responses() {
        // tgtd 1.0.85 after sessions A and B registered 0xaaaa and 0xbbbb and
        // A reserved Write Exclusive.
        let k = PrKeys::parse(&hex("0000000200000010000000000000aaaa000000000000bbbb")).unwrap();
        assert_eq!((k.generation, k.keys), (2, vec![0xaaaa, 0xbbbb]));
        let r = PrReservation::parse(&hex("0000000200000010000000000000aaaa0000000000010000")).unwrap();
        assert_eq!(r.reservation, Some(Reservation { key: 0xaaaa, scope: 0, pr_type: PrType::WRITE_EXCLUSIVE }));
        // No registrations / no reservation.
        let k = PrKeys::parse(&hex("0000000000000000")).unwrap();
        assert!(k.keys.is_empty());
        assert_eq!(PrReservation::parse(&hex("0000000000000000")).unwrap().reservation, None);
        // REPORT CAPABILITIES: no SIP_C/ATP_C/PTPL_C, TMV, all six types.
        let c = PrCapabilities::parse(&hex("00080080ea010000")).unwrap();
        assert!(!c.sip_c && !c.atp_c && !c.ptpl_c && c.tmv);
        for t in [1, 3, 5, 6, 7, 8] {
            assert_eq!(c.supports(PrType(t)), Some(true), "{t}");
        }
        assert_eq!(c.supports(PrType(2)), None);
    }

    #[test]
    fn truncated_keys() {
        let e = PrKeys::parse(&hex("0000000200000010000000000000aaaa")).unwrap_err();
        assert_eq!(e.required_len(), Some(24));
        assert!(PrKeys::parse(&hex("000000020000000c000000000000aaaa00000000")).is_err());
    }

    proptest! {
        #[test]
        fn pr_out_round_trip(sa in 0u8..=8, t in 0u8..16, key: u64, sakey: u64, all: bool, aptpl: bool) {
            let p = PrOutParameters { reservation_key: key, service_action_key: sakey, all_tg_pt: all, aptpl };
            let r = persistent_reserve_out(PrOutAction(sa), PrType(t), &p);
            prop_assert_eq!(r.is_ok(), sa != 7);
            if let Ok((c, l)) = r {
                let b = c.cdb.as_bytes();
                prop_assert_eq!((b[0], b[1], b[2]), (0x5f, sa, t));
                prop_assert_eq!(u32::from_be_bytes([b[5], b[6], b[7], b[8]]), 24);
                prop_assert_eq!(u64::from_be_bytes(l[0..8].try_into().unwrap()), key);
                prop_assert_eq!(u64::from_be_bytes(l[8..16].try_into().unwrap()), sakey);
                prop_assert_eq!(l[20], (u8::from(all) << 2) | u8::from(aptpl));
            }
        }

        #[test]
        fn pr_in_round_trip(sa in 0u8..4, alloc: u16) {
            let c = persistent_reserve_in(PrInAction(sa), alloc);
            let b = c.cdb.as_bytes();
            prop_assert_eq!((b[0], b[1]), (0x5e, sa));
            prop_assert_eq!(u16::from_be_bytes([b[7], b[8]]), alloc);
            prop_assert_eq!(c.data.expected_len(), u32::from(alloc));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = PrKeys::parse(&b);
            let _ = PrReservation::parse(&b);
            if let Ok(c) = PrCapabilities::parse(&b) {
                let _ = c.supports(PrType::WRITE_EXCLUSIVE);
            }
        }
    }
}
