//! Login Request and Login Response (RFC 7143 sections 11.12 and 11.13).

use bytes::Bytes;

use super::{Bhs, Opcode, PduError, wire_enum};

/// A login stage (CSG/NSG, RFC 7143 section 11.12.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// 0: SecurityNegotiation.
    Security,
    /// 1: LoginOperationalNegotiation.
    Operational,
    /// 3: FullFeaturePhase.
    FullFeature,
}

impl Stage {
    fn decode(opcode: Opcode, field: &'static str, v: u8) -> Result<Stage, PduError> {
        match v {
            0 => Ok(Stage::Security),
            1 => Ok(Stage::Operational),
            3 => Ok(Stage::FullFeature),
            _ => Err(PduError::field(opcode, field, "stage 2 is reserved")),
        }
    }

    fn code(self) -> u8 {
        match self {
            Stage::Security => 0,
            Stage::Operational => 1,
            Stage::FullFeature => 3,
        }
    }
}

/// The Initiator Session ID (RFC 7143 section 11.12.5): with the initiator
/// name it names the initiator port, so each path of a multipath device
/// needs its own, and reusing one with TSIH 0 reinstates the session.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Isid(pub [u8; 6]);

impl Isid {
    /// An ISID of the "Random" type (T = 0b10, section 11.12.5): the
    /// qualifier bits come from `seed`, which callers derive from what
    /// identifies a configured path, so a reconnect reuses it and
    /// reinstates rather than leaks sessions.
    pub fn random_format(seed: u64) -> Isid {
        let s = seed.to_be_bytes();
        // T=10b, A is reserved (0) for the random format; B and C carry the
        // random part, D the qualifier.
        Isid([0x80, s[2], s[3], s[4], s[5], s[6] ^ s[7] ^ s[1] ^ s[0]])
    }

    /// The ISID of a configured path, derived from what names it (initiator,
    /// target, portal, path name): the same path gets the same ISID after a
    /// daemon restart, so its new login reinstates the old session on the
    /// target instead of leaving it behind; different paths get different
    /// ISIDs, so they are different I_T nexuses (MPIO). FNV-1a: stable
    /// across builds and platforms, which `std`'s hasher is not.
    pub fn for_path(identity: &str) -> Isid {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in identity.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Isid::random_format(h)
    }
}

impl std::fmt::Debug for Isid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Isid({self})")
    }
}

impl std::fmt::Display for Isid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

wire_enum! {
    /// Status-Class and Status-Detail of a Login Response, as one 16-bit
    /// value (RFC 7143 section 11.13.5).
    pub struct LoginStatus(u16) {
        SUCCESS = 0x0000 => "success",
        TARGET_MOVED_TEMPORARILY = 0x0101 => "target moved temporarily",
        TARGET_MOVED_PERMANENTLY = 0x0102 => "target moved permanently",
        INITIATOR_ERROR = 0x0200 => "initiator error",
        AUTHENTICATION_FAILURE = 0x0201 => "authentication failure",
        AUTHORIZATION_FAILURE = 0x0202 => "authorization failure",
        NOT_FOUND = 0x0203 => "target not found",
        TARGET_REMOVED = 0x0204 => "target removed",
        UNSUPPORTED_VERSION = 0x0205 => "unsupported version",
        TOO_MANY_CONNECTIONS = 0x0206 => "too many connections",
        MISSING_PARAMETER = 0x0207 => "missing parameter",
        CANT_INCLUDE_IN_SESSION = 0x0208 => "cannot include in session",
        SESSION_TYPE_NOT_SUPPORTED = 0x0209 => "session type not supported",
        SESSION_DOES_NOT_EXIST = 0x020a => "session does not exist",
        INVALID_DURING_LOGIN = 0x020b => "invalid request during login",
        TARGET_ERROR = 0x0300 => "target error",
        SERVICE_UNAVAILABLE = 0x0301 => "service unavailable",
        OUT_OF_RESOURCES = 0x0302 => "out of resources",
    }
}

impl LoginStatus {
    /// The Status-Class: 0 success, 1 redirection, 2 initiator error,
    /// 3 target error.
    pub fn class(self) -> u8 {
        (self.0 >> 8) as u8
    }
}

/// Login Request (opcode 0x03; always immediate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRequest {
    /// T bit: the initiator is ready to move to `nsg`.
    pub transit: bool,
    /// C bit: the text continues in the next PDU.
    pub continue_: bool,
    /// Current stage.
    pub csg: Stage,
    /// Next stage (meaningful with `transit`).
    pub nsg: Stage,
    /// Version-max.
    pub version_max: u8,
    /// Version-min.
    pub version_min: u8,
    /// ISID.
    pub isid: Isid,
    /// TSIH: 0 for a new session, the session's TSIH to add a connection.
    pub tsih: u16,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Connection ID.
    pub cid: u16,
    /// CmdSN.
    pub cmdsn: u32,
    /// ExpStatSN.
    pub exp_statsn: u32,
    /// Text key=value pairs.
    pub data: Bytes,
}

impl LoginRequest {
    pub(super) fn parse(b: &Bhs, data: Bytes) -> Result<Self, PduError> {
        const OP: Opcode = Opcode::LOGIN_REQUEST;
        let (transit, continue_, csg, nsg) = stages(OP, b)?;
        Ok(LoginRequest {
            transit,
            continue_,
            csg,
            nsg,
            version_max: b.u8(2),
            version_min: b.u8(3),
            isid: Isid(b.bytes(8)),
            tsih: b.u16(14),
            itt: b.itt(),
            cid: b.u16(20),
            cmdsn: b.u32(24),
            exp_statsn: b.u32(28),
            data,
        })
    }

    pub(super) fn to_bhs(&self) -> Bhs {
        let mut b = Bhs::new(Opcode::LOGIN_REQUEST);
        b.set_immediate(true);
        set_stages(&mut b, self.transit, self.continue_, self.csg, self.nsg);
        b.set_u8(2, self.version_max);
        b.set_u8(3, self.version_min);
        b.set_bytes(8, &self.isid.0);
        b.set_u16(14, self.tsih);
        b.set_u32(16, self.itt);
        b.set_u16(20, self.cid);
        b.set_u32(24, self.cmdsn);
        b.set_u32(28, self.exp_statsn);
        b
    }
}

/// Login Response (opcode 0x23).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginResponse {
    /// T bit: the target moves to `nsg`.
    pub transit: bool,
    /// C bit: the text continues in the next PDU.
    pub continue_: bool,
    /// Current stage.
    pub csg: Stage,
    /// Next stage.
    pub nsg: Stage,
    /// Version-max.
    pub version_max: u8,
    /// Version-active.
    pub version_active: u8,
    /// ISID, echoed.
    pub isid: Isid,
    /// TSIH assigned by the target (in the final response).
    pub tsih: u16,
    /// Initiator Task Tag, echoed.
    pub itt: u32,
    /// StatSN.
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
    /// Status-Class and Status-Detail.
    pub status: LoginStatus,
    /// Text key=value pairs.
    pub data: Bytes,
}

impl LoginResponse {
    pub(super) fn parse(b: &Bhs, data: Bytes) -> Result<Self, PduError> {
        const OP: Opcode = Opcode::LOGIN_RESPONSE;
        let (transit, continue_, csg, nsg) = stages(OP, b)?;
        Ok(LoginResponse {
            transit,
            continue_,
            csg,
            nsg,
            version_max: b.u8(2),
            version_active: b.u8(3),
            isid: Isid(b.bytes(8)),
            tsih: b.u16(14),
            itt: b.itt(),
            statsn: b.u32(24),
            exp_cmdsn: b.u32(28),
            max_cmdsn: b.u32(32),
            status: LoginStatus(b.u16(36)),
            data,
        })
    }

    pub(super) fn to_bhs(&self) -> Bhs {
        let mut b = Bhs::new(Opcode::LOGIN_RESPONSE);
        set_stages(&mut b, self.transit, self.continue_, self.csg, self.nsg);
        b.set_u8(2, self.version_max);
        b.set_u8(3, self.version_active);
        b.set_bytes(8, &self.isid.0);
        b.set_u16(14, self.tsih);
        b.set_u32(16, self.itt);
        b.set_u32(24, self.statsn);
        b.set_u32(28, self.exp_cmdsn);
        b.set_u32(32, self.max_cmdsn);
        b.set_u16(36, self.status.0);
        b
    }
}

/// Decodes T, C, CSG and NSG from byte 1.
fn stages(op: Opcode, b: &Bhs) -> Result<(bool, bool, Stage, Stage), PduError> {
    let flags = b.u8(1);
    let transit = flags & 0x80 != 0;
    let continue_ = flags & 0x40 != 0;
    // Section 11.12.2: "If the T bit is set to 1, the C bit must be set to 0".
    if transit && continue_ {
        return Err(PduError::field(op, "flags", "T and C bits both set"));
    }
    let csg = Stage::decode(op, "CSG", (flags >> 2) & 0x03)?;
    // NSG is reserved unless T is set; a reserved value there is ignored.
    let nsg = if transit { Stage::decode(op, "NSG", flags & 0x03)? } else { csg };
    Ok((transit, continue_, csg, nsg))
}

fn set_stages(b: &mut Bhs, transit: bool, continue_: bool, csg: Stage, nsg: Stage) {
    let mut flags = csg.code() << 2;
    if transit {
        flags |= 0x80 | nsg.code();
    }
    if continue_ {
        flags |= 0x40;
    }
    b.set_u8(1, flags);
}
