//! Command descriptor blocks: the [`Cdb`] value type, the data-transfer
//! description a transport needs ([`DataDirection`]), and builders for the
//! commands mpio issues.
//!
//! Layouts follow SPC-4 (primary commands) and SBC-3 (block commands); all
//! multi-byte fields are big-endian (SPC-4 "Bit and byte ordering"). Every
//! builder validates its inputs against the width of the field that will
//! carry them and returns [`CdbError`] instead of truncating: a silently
//! truncated LBA or block count would address the wrong blocks.
//!
//! The CONTROL byte (last byte of every CDB) is always 0: no NACA, no
//! linked commands (SAM-5 "CONTROL byte").

use core::fmt;

use crate::error::CdbError;
use crate::macros::wire_enum;
use crate::vpd::VpdPage;

wire_enum! {
    /// SCSI operation code, byte 0 of every CDB (SPC-4 "Operation codes",
    /// SBC-3 "Commands for direct access block devices"). Only the codes
    /// mpio builds or is likely to log are named.
    pub struct Opcode(u8);
    /// TEST UNIT READY (SPC-4).
    TEST_UNIT_READY = 0x00 => "TEST UNIT READY";
    /// REQUEST SENSE (SPC-4).
    REQUEST_SENSE = 0x03 => "REQUEST SENSE";
    /// INQUIRY (SPC-4).
    INQUIRY = 0x12 => "INQUIRY";
    /// RESERVE(6), legacy SPC-2 reservations.
    RESERVE_6 = 0x16 => "RESERVE(6)";
    /// RELEASE(6), legacy SPC-2 reservations.
    RELEASE_6 = 0x17 => "RELEASE(6)";
    /// MODE SENSE(6) (SPC-4).
    MODE_SENSE_6 = 0x1a => "MODE SENSE(6)";
    /// START STOP UNIT (SBC-3).
    START_STOP_UNIT = 0x1b => "START STOP UNIT";
    /// READ CAPACITY(10) (SBC-3).
    READ_CAPACITY_10 = 0x25 => "READ CAPACITY(10)";
    /// READ(10) (SBC-3).
    READ_10 = 0x28 => "READ(10)";
    /// WRITE(10) (SBC-3).
    WRITE_10 = 0x2a => "WRITE(10)";
    /// VERIFY(10) (SBC-3).
    VERIFY_10 = 0x2f => "VERIFY(10)";
    /// SYNCHRONIZE CACHE(10) (SBC-3).
    SYNCHRONIZE_CACHE_10 = 0x35 => "SYNCHRONIZE CACHE(10)";
    /// WRITE SAME(10) (SBC-3).
    WRITE_SAME_10 = 0x41 => "WRITE SAME(10)";
    /// UNMAP (SBC-3).
    UNMAP = 0x42 => "UNMAP";
    /// MODE SENSE(10) (SPC-4).
    MODE_SENSE_10 = 0x5a => "MODE SENSE(10)";
    /// PERSISTENT RESERVE IN (SPC-4).
    PERSISTENT_RESERVE_IN = 0x5e => "PERSISTENT RESERVE IN";
    /// PERSISTENT RESERVE OUT (SPC-4).
    PERSISTENT_RESERVE_OUT = 0x5f => "PERSISTENT RESERVE OUT";
    /// READ(16) (SBC-3).
    READ_16 = 0x88 => "READ(16)";
    /// COMPARE AND WRITE (SBC-3).
    COMPARE_AND_WRITE = 0x89 => "COMPARE AND WRITE";
    /// WRITE(16) (SBC-3).
    WRITE_16 = 0x8a => "WRITE(16)";
    /// VERIFY(16) (SBC-3).
    VERIFY_16 = 0x8f => "VERIFY(16)";
    /// SYNCHRONIZE CACHE(16) (SBC-3).
    SYNCHRONIZE_CACHE_16 = 0x91 => "SYNCHRONIZE CACHE(16)";
    /// WRITE SAME(16) (SBC-3).
    WRITE_SAME_16 = 0x93 => "WRITE SAME(16)";
    /// SERVICE ACTION IN(16); service action 10h is READ CAPACITY(16).
    SERVICE_ACTION_IN_16 = 0x9e => "SERVICE ACTION IN(16)";
    /// REPORT LUNS (SPC-4).
    REPORT_LUNS = 0xa0 => "REPORT LUNS";
    /// MAINTENANCE IN; service action 0Ah is REPORT TARGET PORT GROUPS.
    MAINTENANCE_IN = 0xa3 => "MAINTENANCE IN";
}

/// Service action of SERVICE ACTION IN(16) that selects READ CAPACITY(16)
/// (SBC-3, READ CAPACITY (16) command).
pub const SA_READ_CAPACITY_16: u8 = 0x10;

/// A CDB of 1 to 16 bytes, stored inline so it is `Copy`.
///
/// Sixteen bytes is the size of the CDB field in the iSCSI SCSI Command
/// PDU (RFC 7143 section 11.3.5); longer (variable-length, 7Fh) CDBs need an
/// AHS and are not built here. Bytes past `len` are always zero, so
/// [`Cdb::padded`] is ready to copy into the PDU.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cdb {
    bytes: [u8; 16],
    len: u8,
}

impl Cdb {
    /// The longest CDB this type holds.
    pub const MAX_LEN: usize = 16;

    /// A CDB from raw bytes (for raw pass-through, e.g. a CLI `scsi raw`).
    /// Errors if `bytes` is empty or longer than 16.
    pub fn from_bytes(bytes: &[u8]) -> Result<Cdb, CdbError> {
        let len = u8::try_from(bytes.len()).ok().filter(|l| (1..=16).contains(l)).ok_or(CdbError::InvalidValue {
            command: "CDB",
            field: "length",
            value: bytes.len() as u64,
            problem: "is not between 1 and 16 bytes",
        })?;
        let mut out = [0u8; 16];
        for (d, s) in out.iter_mut().zip(bytes) {
            *d = *s;
        }
        Ok(Cdb { bytes: out, len })
    }

    /// A CDB from a fixed-size array; `N <= 16` is checked at compile time.
    pub(crate) fn from_array<const N: usize>(a: [u8; N]) -> Cdb {
        const { assert!(N >= 1 && N <= 16) };
        let mut bytes = [0u8; 16];
        for (d, s) in bytes.iter_mut().zip(a) {
            *d = s;
        }
        Cdb {
            bytes,
            // Cannot fail: N <= 16.
            len: u8::try_from(N).unwrap_or(16),
        }
    }

    /// The CDB's bytes (6, 10, 12 or 16 for the builders here).
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&self.bytes)
    }

    /// The CDB zero-padded to 16 bytes, as the iSCSI BHS carries it.
    pub fn padded(&self) -> [u8; 16] {
        self.bytes
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Always false: a CDB holds at least an operation code. (Present
    /// because a `len` without `is_empty` surprises readers and clippy.)
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The operation code (byte 0).
    pub fn opcode(&self) -> Opcode {
        let [op, ..] = self.bytes;
        Opcode(op)
    }

    /// The service action (byte 1, bits 4-0) for the operation codes that
    /// carry one (SERVICE ACTION IN(16), MAINTENANCE IN, PERSISTENT RESERVE
    /// IN/OUT); `None` for the others.
    pub fn service_action(&self) -> Option<u8> {
        let [_, b1, ..] = self.bytes;
        match self.opcode() {
            Opcode::SERVICE_ACTION_IN_16
            | Opcode::MAINTENANCE_IN
            | Opcode::PERSISTENT_RESERVE_IN
            | Opcode::PERSISTENT_RESERVE_OUT => Some(b1 & 0x1f),
            _ => None,
        }
    }
}

impl fmt::Debug for Cdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cdb({:?}", self.opcode())?;
        for b in self.as_bytes() {
            write!(f, " {b:02x}")?;
        }
        f.write_str(")")
    }
}

/// Direction and expected length of the data phase, as the transport needs
/// them for the R/W bits and Expected Data Transfer Length of the iSCSI
/// SCSI Command PDU (RFC 7143 section 11.3.1, 11.3.4).
///
/// Builders return [`DataDirection::None`] whenever the length would be 0,
/// so `Read`/`Write` always carry a non-zero length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataDirection {
    /// No data phase.
    None,
    /// Data-In: the target sends up to `len` bytes.
    Read {
        /// Expected (maximum) bytes from the target.
        len: u32,
    },
    /// Data-Out: the initiator sends exactly `len` bytes.
    Write {
        /// Bytes the initiator sends.
        len: u32,
    },
}

impl DataDirection {
    /// Read of `len` bytes, or `None` when `len` is 0.
    pub const fn read(len: u32) -> DataDirection {
        if len == 0 { DataDirection::None } else { DataDirection::Read { len } }
    }

    /// Write of `len` bytes, or `None` when `len` is 0.
    pub const fn write(len: u32) -> DataDirection {
        if len == 0 { DataDirection::None } else { DataDirection::Write { len } }
    }

    /// The Expected Data Transfer Length: 0 for `None`.
    pub const fn expected_len(&self) -> u32 {
        match *self {
            DataDirection::None => 0,
            DataDirection::Read { len } | DataDirection::Write { len } => len,
        }
    }
}

/// A CDB with the data phase it expects: everything a transport needs to
/// issue the command (plus the Data-Out payload for writes, which the
/// caller owns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Command {
    /// The CDB.
    pub cdb: Cdb,
    /// The expected data phase.
    pub data: DataDirection,
}

impl Command {
    /// A command from parts (for raw pass-through).
    pub const fn new(cdb: Cdb, data: DataDirection) -> Command {
        Command { cdb, data }
    }
}

wire_enum! {
    /// SELECT REPORT field of REPORT LUNS (SPC-4, REPORT LUNS command).
    pub struct ReportLunsSelect(u8);
    /// Logical units with LUNs other than well-known LUNs.
    DEFAULT = 0x00 => "DEFAULT";
    /// Well-known logical units only.
    WELL_KNOWN = 0x01 => "WELL KNOWN";
    /// All logical units, well-known ones included.
    ALL = 0x02 => "ALL";
}

/// FUA bit in byte 1 of READ/WRITE(10/16) (SBC-3): force unit access; for
/// writes the data reaches non-volatile media before GOOD status.
const FUA: u8 = 0x08;

/// `blocks * block_len` as an iSCSI Expected Data Transfer Length.
fn transfer_len(command: &'static str, blocks: u32, block_len: u32) -> Result<u32, CdbError> {
    if block_len == 0 {
        return Err(CdbError::InvalidValue { command, field: "block length", value: 0, problem: "must be non-zero" });
    }
    blocks.checked_mul(block_len).ok_or(CdbError::TransferTooLong { command, blocks, block_len })
}

/// `lba + blocks` must not pass `limit` (2^64 for 16-byte CDBs, 2^32 for
/// 10-byte ones), and `lba` must fit its field.
fn check_range(command: &'static str, lba: u64, blocks: u64, limit: u128) -> Result<(), CdbError> {
    if u128::from(lba) >= limit {
        return Err(CdbError::FieldOverflow {
            command,
            field: "LBA",
            value: lba,
            max: u64::try_from(limit.saturating_sub(1)).unwrap_or(u64::MAX),
        });
    }
    if u128::from(lba).saturating_add(u128::from(blocks)) > limit {
        return Err(CdbError::LbaOverflow { command, lba, blocks });
    }
    Ok(())
}

/// TEST UNIT READY (SPC-4): six zero bytes, no data. The path-verification
/// command: GOOD means the LU is reachable and ready through this nexus.
pub fn test_unit_ready() -> Command {
    Command::new(Cdb::from_array([0u8; 6]), DataDirection::None)
}

/// REQUEST SENSE (SPC-4): byte 1 bit 0 DESC asks for descriptor-format
/// sense, byte 4 is the allocation length (SPC-4 recommends 252).
pub fn request_sense(alloc: u8, descriptor: bool) -> Command {
    let cdb = [Opcode::REQUEST_SENSE.0, u8::from(descriptor), 0, 0, alloc, 0];
    Command::new(Cdb::from_array(cdb), DataDirection::read(u32::from(alloc)))
}

/// Standard INQUIRY (SPC-4): EVPD 0, page code 0, allocation length in
/// bytes 3-4. SPC-2 and older devices read only byte 4; sg3_utils
/// recommends 36 for the first INQUIRY to an unknown device.
pub fn inquiry(alloc: u16) -> Command {
    let [a0, a1] = alloc.to_be_bytes();
    let cdb = [Opcode::INQUIRY.0, 0, 0, a0, a1, 0];
    Command::new(Cdb::from_array(cdb), DataDirection::read(u32::from(alloc)))
}

/// INQUIRY for a vital product data page (SPC-4): EVPD (byte 1 bit 0) set,
/// page code in byte 2, allocation length in bytes 3-4.
pub fn inquiry_vpd(page: VpdPage, alloc: u16) -> Command {
    let [a0, a1] = alloc.to_be_bytes();
    let cdb = [Opcode::INQUIRY.0, 0x01, page.0, a0, a1, 0];
    Command::new(Cdb::from_array(cdb), DataDirection::read(u32::from(alloc)))
}

/// PAGE CODE that asks MODE SENSE for every mode page (SPC-4, "Mode page
/// codes"); with a small allocation length only the header comes back.
pub const MODE_PAGE_ALL: u8 = 0x3f;

/// The 6-bit PAGE CODE field of MODE SENSE, byte 2 bits 5-0; PC (bits 7-6)
/// stays 00b, current values.
fn mode_page_code(command: &'static str, page: u8) -> Result<u8, CdbError> {
    if page > MODE_PAGE_ALL {
        return Err(CdbError::FieldOverflow {
            command,
            field: "page code",
            value: u64::from(page),
            max: u64::from(MODE_PAGE_ALL),
        });
    }
    Ok(page)
}

/// MODE SENSE(6) (SPC-4): DBD 0, page code in byte 2 (current values),
/// subpage in byte 3, allocation length in byte 4. The answer starts with
/// the 4-byte header [`crate::mode::ModeParameterHeader::parse6`] reads.
pub fn mode_sense6(page: u8, subpage: u8, alloc: u8) -> Result<Command, CdbError> {
    let page = mode_page_code("MODE SENSE(6)", page)?;
    let cdb = [Opcode::MODE_SENSE_6.0, 0, page, subpage, alloc, 0];
    Ok(Command::new(Cdb::from_array(cdb), DataDirection::read(u32::from(alloc))))
}

/// MODE SENSE(10) (SPC-4): LLBAA and DBD 0, page code in byte 2 (current
/// values), subpage in byte 3, allocation length in bytes 7-8. The answer
/// starts with the 8-byte header
/// [`crate::mode::ModeParameterHeader::parse10`] reads.
pub fn mode_sense10(page: u8, subpage: u8, alloc: u16) -> Result<Command, CdbError> {
    let page = mode_page_code("MODE SENSE(10)", page)?;
    let [a0, a1] = alloc.to_be_bytes();
    let cdb = [Opcode::MODE_SENSE_10.0, 0, page, subpage, 0, 0, 0, a0, a1, 0];
    Ok(Command::new(Cdb::from_array(cdb), DataDirection::read(u32::from(alloc))))
}

/// READ CAPACITY(10) (SBC-3): ten bytes, PMI and LBA (obsolete) zero;
/// returns 8 bytes.
pub fn read_capacity10() -> Command {
    let mut cdb = [0u8; 10];
    let [op, ..] = &mut cdb;
    *op = Opcode::READ_CAPACITY_10.0;
    Command::new(Cdb::from_array(cdb), DataDirection::read(8))
}

/// READ CAPACITY(16) (SBC-3): SERVICE ACTION IN(16) with service action
/// 10h, allocation length in bytes 10-13. 32 returns every field.
pub fn read_capacity16(alloc: u32) -> Command {
    let [a0, a1, a2, a3] = alloc.to_be_bytes();
    let cdb = [Opcode::SERVICE_ACTION_IN_16.0, SA_READ_CAPACITY_16, 0, 0, 0, 0, 0, 0, 0, 0, a0, a1, a2, a3, 0, 0];
    Command::new(Cdb::from_array(cdb), DataDirection::read(alloc))
}

/// REPORT LUNS (SPC-4): SELECT REPORT in byte 2, allocation length in bytes
/// 6-9. SPC-3 made an allocation length below 16 an error and SPC-4 says it
/// "should be at least 16"; tgtd answers ILLEGAL REQUEST 24/00 to 8. The
/// builder refuses it.
pub fn report_luns(select: ReportLunsSelect, alloc: u32) -> Result<Command, CdbError> {
    if alloc < 16 {
        return Err(CdbError::InvalidValue {
            command: "REPORT LUNS",
            field: "allocation length",
            value: u64::from(alloc),
            problem: "is below the minimum of 16",
        });
    }
    let [a0, a1, a2, a3] = alloc.to_be_bytes();
    let cdb = [Opcode::REPORT_LUNS.0, 0, select.0, 0, 0, 0, a0, a1, a2, a3, 0, 0];
    Ok(Command::new(Cdb::from_array(cdb), DataDirection::read(alloc)))
}

fn rw10(
    op: Opcode,
    command: &'static str,
    lba: u64,
    blocks: u32,
    block_len: u32,
    fua: bool,
) -> Result<[u8; 10], CdbError> {
    let n = u16::try_from(blocks).map_err(|_| CdbError::FieldOverflow {
        command,
        field: "transfer length",
        value: u64::from(blocks),
        max: u64::from(u16::MAX),
    })?;
    check_range(command, lba, u64::from(blocks), 1u128 << 32)?;
    let l = u32::try_from(lba).map_err(|_| CdbError::FieldOverflow {
        command,
        field: "LBA",
        value: lba,
        max: u64::from(u32::MAX),
    })?;
    // Validated for the error, used by the caller for the data phase.
    transfer_len(command, blocks, block_len)?;
    let [l0, l1, l2, l3] = l.to_be_bytes();
    let [n0, n1] = n.to_be_bytes();
    let flags = if fua { FUA } else { 0 };
    Ok([op.0, flags, l0, l1, l2, l3, 0, n0, n1, 0])
}

/// READ(10) (SBC-3): LBA (32-bit) in bytes 2-5, TRANSFER LENGTH (16-bit,
/// in blocks) in bytes 7-8, FUA in byte 1 bit 3. For LUs below 2 TiB at
/// 512-byte blocks; errors if `lba` or `lba + blocks` passes 2^32 or
/// `blocks` passes 65535.
pub fn read10(lba: u64, blocks: u32, block_len: u32, fua: bool) -> Result<Command, CdbError> {
    let cdb = rw10(Opcode::READ_10, "READ(10)", lba, blocks, block_len, fua)?;
    let len = transfer_len("READ(10)", blocks, block_len)?;
    Ok(Command::new(Cdb::from_array(cdb), DataDirection::read(len)))
}

/// WRITE(10) (SBC-3): layout as [`read10`]; the caller sends
/// `blocks * block_len` bytes.
pub fn write10(lba: u64, blocks: u32, block_len: u32, fua: bool) -> Result<Command, CdbError> {
    let cdb = rw10(Opcode::WRITE_10, "WRITE(10)", lba, blocks, block_len, fua)?;
    let len = transfer_len("WRITE(10)", blocks, block_len)?;
    Ok(Command::new(Cdb::from_array(cdb), DataDirection::write(len)))
}

/// Shared layout of the 16-byte block commands (READ/WRITE/SYNCHRONIZE
/// CACHE/WRITE SAME(16), SBC-3): flags in byte 1, LBA in bytes 2-9, block
/// count in bytes 10-13, group number 0 in byte 14, control in byte 15.
fn lba16(op: Opcode, flags: u8, lba: u64, blocks: u32) -> Cdb {
    let [l0, l1, l2, l3, l4, l5, l6, l7] = lba.to_be_bytes();
    let [n0, n1, n2, n3] = blocks.to_be_bytes();
    Cdb::from_array([op.0, flags, l0, l1, l2, l3, l4, l5, l6, l7, n0, n1, n2, n3, 0, 0])
}

/// READ(16) (SBC-3): LBA (64-bit) in bytes 2-9, TRANSFER LENGTH (32-bit,
/// in blocks) in bytes 10-13, FUA in byte 1 bit 3. Errors if
/// `blocks * block_len` does not fit 32 bits or the range passes 2^64.
pub fn read16(lba: u64, blocks: u32, block_len: u32, fua: bool) -> Result<Command, CdbError> {
    check_range("READ(16)", lba, u64::from(blocks), 1u128 << 64)?;
    let len = transfer_len("READ(16)", blocks, block_len)?;
    let flags = if fua { FUA } else { 0 };
    Ok(Command::new(lba16(Opcode::READ_16, flags, lba, blocks), DataDirection::read(len)))
}

/// WRITE(16) (SBC-3): layout as [`read16`]; the caller sends
/// `blocks * block_len` bytes.
pub fn write16(lba: u64, blocks: u32, block_len: u32, fua: bool) -> Result<Command, CdbError> {
    check_range("WRITE(16)", lba, u64::from(blocks), 1u128 << 64)?;
    let len = transfer_len("WRITE(16)", blocks, block_len)?;
    let flags = if fua { FUA } else { 0 };
    Ok(Command::new(lba16(Opcode::WRITE_16, flags, lba, blocks), DataDirection::write(len)))
}

/// SYNCHRONIZE CACHE(16) (SBC-3): IMMED in byte 1 bit 1 (return before the
/// flush completes), LBA in bytes 2-9, NUMBER OF LOGICAL BLOCKS in bytes
/// 10-13 where 0 means "from `lba` to the end of the LU" (so `(0, 0)`
/// flushes everything). No data.
///
/// IMMED is optional in SBC-3: tgtd 1.0.85 rejects it with ILLEGAL REQUEST
/// 24/00 (for SYNCHRONIZE CACHE(10) too), so a flush for an NBD/ublk FLUSH
/// should use `immed = false`.
pub fn synchronize_cache16(lba: u64, blocks: u32, immed: bool) -> Result<Command, CdbError> {
    check_range("SYNCHRONIZE CACHE(16)", lba, u64::from(blocks), 1u128 << 64)?;
    let flags = if immed { 0x02 } else { 0 };
    Ok(Command::new(lba16(Opcode::SYNCHRONIZE_CACHE_16, flags, lba, blocks), DataDirection::None))
}

/// Flags of WRITE SAME(16), byte 1 (SBC-3; NDOB from SBC-4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WriteSameFlags {
    /// UNMAP (bit 3): deallocate the blocks if the LU is thin provisioned
    /// (VPD 0xB2 LBPWS) instead of writing them.
    pub unmap: bool,
    /// NDOB (bit 0, SBC-4): no data-out buffer; the target writes zeros.
    /// Then no Data-Out phase is sent.
    pub ndob: bool,
    /// ANCHOR (bit 4): anchor rather than deallocate (with `unmap`).
    pub anchor: bool,
}

/// WRITE SAME(16) (SBC-3): one block of data (or none with NDOB) written to
/// `blocks` blocks from `lba`. A block count of 0 means "to the end of the
/// LU" in SBC-3 when the target's WSNZ bit is 0; the builder refuses it,
/// since no caller here means that and a zero from an arithmetic slip
/// would wipe the LU.
pub fn write_same16(lba: u64, blocks: u32, block_len: u32, flags: WriteSameFlags) -> Result<Command, CdbError> {
    const NAME: &str = "WRITE SAME(16)";
    if blocks == 0 {
        return Err(CdbError::InvalidValue {
            command: NAME,
            field: "number of logical blocks",
            value: 0,
            problem: "would mean 'to the end of the LU'; refused",
        });
    }
    check_range(NAME, lba, u64::from(blocks), 1u128 << 64)?;
    let len = transfer_len(NAME, 1, block_len)?;
    let mut b1 = 0u8;
    if flags.anchor {
        b1 |= 0x10;
    }
    if flags.unmap {
        b1 |= 0x08;
    }
    if flags.ndob {
        b1 |= 0x01;
    }
    let data = if flags.ndob { DataDirection::None } else { DataDirection::write(len) };
    Ok(Command::new(lba16(Opcode::WRITE_SAME_16, b1, lba, blocks), data))
}

/// One UNMAP block descriptor (SBC-3, UNMAP block descriptor): 16 bytes,
/// LBA (bytes 0-7), NUMBER OF LOGICAL BLOCKS (bytes 8-11), reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnmapDescriptor {
    /// First LBA to unmap.
    pub lba: u64,
    /// Number of blocks (0 is allowed and unmaps nothing).
    pub blocks: u32,
}

/// Most descriptors one UNMAP can carry: the parameter list length is 16
/// bits, 8 header bytes + 16 per descriptor.
pub const UNMAP_MAX_DESCRIPTORS: usize = (u16::MAX as usize - 8) / 16;

/// UNMAP (SBC-3): the CDB and its parameter list. The CDB has ANCHOR in
/// byte 1 bit 0 and PARAMETER LIST LENGTH in bytes 7-8; the list is an
/// 8-byte header (UNMAP DATA LENGTH = n - 2, UNMAP BLOCK DESCRIPTOR DATA
/// LENGTH = 16 * count) followed by the descriptors. The caller should
/// also respect the target's limits in VPD 0xB0 (maximum unmap LBA count
/// and block descriptor count).
pub fn unmap(descriptors: &[UnmapDescriptor], anchor: bool) -> Result<(Command, Vec<u8>), CdbError> {
    let params = unmap_parameter_list(descriptors)?;
    let plen = u16::try_from(params.len()).map_err(|_| CdbError::FieldOverflow {
        command: "UNMAP",
        field: "parameter list length",
        value: params.len() as u64,
        max: u64::from(u16::MAX),
    })?;
    let [p0, p1] = plen.to_be_bytes();
    let cdb = [Opcode::UNMAP.0, u8::from(anchor), 0, 0, 0, 0, 0, p0, p1, 0];
    Ok((Command::new(Cdb::from_array(cdb), DataDirection::write(u32::from(plen))), params))
}

/// The UNMAP parameter list alone (see [`unmap`]).
pub fn unmap_parameter_list(descriptors: &[UnmapDescriptor]) -> Result<Vec<u8>, CdbError> {
    const NAME: &str = "UNMAP";
    if descriptors.len() > UNMAP_MAX_DESCRIPTORS {
        return Err(CdbError::FieldOverflow {
            command: NAME,
            field: "block descriptor count",
            value: descriptors.len() as u64,
            max: UNMAP_MAX_DESCRIPTORS as u64,
        });
    }
    for d in descriptors {
        check_range(NAME, d.lba, u64::from(d.blocks), 1u128 << 64)?;
    }
    // Both fit u16: count <= UNMAP_MAX_DESCRIPTORS.
    let desc_len = descriptors.len().saturating_mul(16);
    let desc_len16 = u16::try_from(desc_len).unwrap_or(u16::MAX);
    let data_len16 = u16::try_from(desc_len.saturating_add(6)).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(desc_len.saturating_add(8));
    out.extend_from_slice(&data_len16.to_be_bytes());
    out.extend_from_slice(&desc_len16.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    for d in descriptors {
        out.extend_from_slice(&d.lba.to_be_bytes());
        out.extend_from_slice(&d.blocks.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Decoders written from the SBC-3/SPC-4 CDB tables, independent of the
    // builders, so a round trip checks field placement.
    fn be(b: &[u8]) -> u64 {
        b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
    }

    #[test]
    fn known_answer_cdbs() {
        // Byte strings as sent by libiscsi/the research probe to tgtd.
        assert_eq!(test_unit_ready().cdb.as_bytes(), &[0u8; 6]);
        assert_eq!(test_unit_ready().data, DataDirection::None);
        assert_eq!(inquiry(255).cdb.as_bytes(), &[0x12, 0, 0, 0, 0xff, 0]);
        assert_eq!(inquiry_vpd(VpdPage::DEVICE_IDENTIFICATION, 256).cdb.as_bytes(), &[0x12, 1, 0x83, 0x01, 0x00, 0]);
        assert_eq!(read_capacity16(32).cdb.as_bytes(), &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]);
        assert_eq!(read_capacity10().cdb.as_bytes(), &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(read_capacity10().data, DataDirection::Read { len: 8 });
        assert_eq!(
            report_luns(ReportLunsSelect::DEFAULT, 256).unwrap().cdb.as_bytes(),
            &[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
        );
        assert_eq!(read10(100, 8, 512, false).unwrap().cdb.as_bytes(), &[0x28, 0, 0, 0, 0, 100, 0, 0, 8, 0]);
        assert_eq!(write10(200, 1, 512, true).unwrap().cdb.as_bytes(), &[0x2a, 0x08, 0, 0, 0, 200, 0, 0, 1, 0]);
        assert_eq!(request_sense(252, true).cdb.as_bytes(), &[0x03, 1, 0, 0, 252, 0]);
        // What Linux sd sends for the write-protect flag (page 3Fh).
        assert_eq!(mode_sense6(MODE_PAGE_ALL, 0, 4).unwrap().cdb.as_bytes(), &[0x1a, 0, 0x3f, 0, 4, 0]);
        assert_eq!(mode_sense6(MODE_PAGE_ALL, 0, 4).unwrap().data, DataDirection::Read { len: 4 });
        let m = mode_sense10(MODE_PAGE_ALL, 0xff, 8).unwrap();
        assert_eq!(m.cdb.as_bytes(), &[0x5a, 0, 0x3f, 0xff, 0, 0, 0, 0, 8, 0]);
        assert_eq!(m.data, DataDirection::Read { len: 8 });
        assert_eq!(mode_sense10(0x08, 0, 0x1234).unwrap().cdb.as_bytes(), &[0x5a, 0, 0x08, 0, 0, 0, 0, 0x12, 0x34, 0]);
        assert!(matches!(mode_sense6(0x40, 0, 4), Err(CdbError::FieldOverflow { field: "page code", .. })));
        assert!(matches!(mode_sense10(0xff, 0, 8), Err(CdbError::FieldOverflow { field: "page code", .. })));
        let c = read16(0x0102_0304_0506_0708, 0x10, 4096, true).unwrap();
        assert_eq!(c.cdb.as_bytes(), &[0x88, 0x08, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0x10, 0, 0]);
        assert_eq!(c.data, DataDirection::Read { len: 0x10000 });
        assert_eq!(c.cdb.padded(), {
            let mut p = [0u8; 16];
            p.copy_from_slice(c.cdb.as_bytes());
            p
        });
        let s = synchronize_cache16(0, 0, true).unwrap();
        assert_eq!(s.cdb.as_bytes(), &[0x91, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let w = write_same16(8, 16, 512, WriteSameFlags { unmap: true, ndob: false, anchor: false }).unwrap();
        assert_eq!(w.cdb.as_bytes(), &[0x93, 0x08, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 16, 0, 0]);
        assert_eq!(w.data, DataDirection::Write { len: 512 });
        let (u, p) = unmap(&[UnmapDescriptor { lba: 0x20, blocks: 8 }], false).unwrap();
        assert_eq!(u.cdb.as_bytes(), &[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]);
        assert_eq!(
            p,
            [
                0, 22, 0, 16, 0, 0, 0, 0, //
                0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 8, 0, 0, 0, 0
            ]
        );
        assert_eq!(u.data, DataDirection::Write { len: 24 });
    }

    #[test]
    fn debug_names_the_opcode() {
        assert_eq!(format!("{:?}", test_unit_ready().cdb), "Cdb(TEST_UNIT_READY 00 00 00 00 00 00)");
        assert_eq!(format!("{:?}", Cdb::from_bytes(&[0xc0, 1]).unwrap()), "Cdb(Opcode(0xc0) c0 01)");
        assert_eq!(Opcode::READ_16.to_string(), "READ(16)");
        assert_eq!(read_capacity16(32).cdb.service_action(), Some(0x10));
        assert_eq!(read16(0, 1, 512, false).unwrap().cdb.service_action(), None);
    }

    #[test]
    fn builders_refuse_overflow() {
        assert_eq!(
            read10(1 << 32, 1, 512, false).unwrap_err().to_string(),
            "READ(10): LBA 4294967296 exceeds the field maximum 4294967295"
        );
        assert!(matches!(read10(u64::from(u32::MAX), 2, 512, false), Err(CdbError::LbaOverflow { .. })));
        assert!(read10(u64::from(u32::MAX), 1, 512, false).is_ok());
        assert_eq!(
            write10(0, 65536, 512, false).unwrap_err().to_string(),
            "WRITE(10): transfer length 65536 exceeds the field maximum 65535"
        );
        assert_eq!(
            read16(0, 1 << 23, 512, false).unwrap_err().to_string(),
            "READ(16): 8388608 blocks of 512 bytes exceed a 32-bit transfer length"
        );
        assert!(read16(u64::MAX, 1, 512, false).is_ok());
        assert!(matches!(read16(u64::MAX, 2, 512, false), Err(CdbError::LbaOverflow { .. })));
        assert!(matches!(read16(0, 1, 0, false), Err(CdbError::InvalidValue { .. })));
        assert!(report_luns(ReportLunsSelect::ALL, 15).is_err());
        assert!(write_same16(0, 0, 512, WriteSameFlags::default()).is_err());
        let many = vec![UnmapDescriptor { lba: 0, blocks: 1 }; UNMAP_MAX_DESCRIPTORS + 1];
        assert!(unmap(&many, false).is_err());
        let max = vec![UnmapDescriptor { lba: 0, blocks: 1 }; UNMAP_MAX_DESCRIPTORS];
        let (c, p) = unmap(&max, false).unwrap();
        assert_eq!(c.data.expected_len() as usize, p.len());
        assert!(p.len() <= usize::from(u16::MAX));
        assert!(Cdb::from_bytes(&[]).is_err());
        assert!(Cdb::from_bytes(&[0; 17]).is_err());
    }

    #[test]
    fn zero_length_transfers_have_no_data_phase() {
        assert_eq!(read16(5, 0, 512, false).unwrap().data, DataDirection::None);
        assert_eq!(inquiry(0).data, DataDirection::None);
        assert_eq!(
            write_same16(0, 1, 512, WriteSameFlags { ndob: true, ..Default::default() }).unwrap().data,
            DataDirection::None
        );
    }

    proptest! {
        #[test]
        fn rw16_round_trip(lba: u64, blocks: u32, shift in 9u32..=16, fua: bool, write: bool) {
            let block_len = 1u32 << shift;
            let r = if write { write16(lba, blocks, block_len, fua) } else { read16(lba, blocks, block_len, fua) };
            let fits_range = u128::from(lba) + u128::from(blocks) <= 1u128 << 64;
            let fits_len = u64::from(blocks) * u64::from(block_len) <= u64::from(u32::MAX);
            prop_assert_eq!(r.is_ok(), fits_range && fits_len);
            if let Ok(c) = r {
                let b = c.cdb.as_bytes();
                prop_assert_eq!(b.len(), 16);
                prop_assert_eq!(b[0], if write { 0x8a } else { 0x88 });
                prop_assert_eq!(b[1] & 0x08 != 0, fua);
                prop_assert_eq!(b[1] & !0x08, 0);
                prop_assert_eq!(be(&b[2..10]), lba);
                prop_assert_eq!(be(&b[10..14]), u64::from(blocks));
                prop_assert_eq!(&b[14..], &[0, 0]);
                let len = blocks * block_len;
                let want = if len == 0 { DataDirection::None } else if write { DataDirection::Write { len } } else { DataDirection::Read { len } };
                prop_assert_eq!(c.data, want);
            }
        }

        #[test]
        fn rw10_round_trip(lba in 0u64..(1 << 33), blocks in 0u32..70000, fua: bool, write: bool) {
            let r = if write { write10(lba, blocks, 512, fua) } else { read10(lba, blocks, 512, fua) };
            let ok = blocks <= 0xffff && lba + u64::from(blocks) <= 1 << 32 && lba < 1 << 32;
            prop_assert_eq!(r.is_ok(), ok);
            if let Ok(c) = r {
                let b = c.cdb.as_bytes();
                prop_assert_eq!(b.len(), 10);
                prop_assert_eq!(b[0], if write { 0x2a } else { 0x28 });
                prop_assert_eq!(b[1], if fua { 0x08 } else { 0 });
                prop_assert_eq!(be(&b[2..6]), lba);
                prop_assert_eq!(b[6], 0);
                prop_assert_eq!(be(&b[7..9]), u64::from(blocks));
                prop_assert_eq!(b[9], 0);
                prop_assert_eq!(c.data.expected_len(), blocks * 512);
            }
        }

        #[test]
        fn sync_cache_round_trip(lba: u64, blocks: u32, immed: bool) {
            let r = synchronize_cache16(lba, blocks, immed);
            prop_assert_eq!(r.is_ok(), u128::from(lba) + u128::from(blocks) <= 1u128 << 64);
            if let Ok(c) = r {
                let b = c.cdb.as_bytes();
                prop_assert_eq!(b[0], 0x91);
                prop_assert_eq!(b[1], if immed { 2 } else { 0 });
                prop_assert_eq!(be(&b[2..10]), lba);
                prop_assert_eq!(be(&b[10..14]), u64::from(blocks));
                prop_assert_eq!(c.data, DataDirection::None);
            }
        }

        #[test]
        fn write_same_round_trip(lba: u64, blocks: u32, unmap: bool, ndob: bool, anchor: bool, block_len in 1u32..=65536) {
            let r = write_same16(lba, blocks, block_len, WriteSameFlags { unmap, ndob, anchor });
            prop_assert_eq!(r.is_ok(), blocks != 0 && u128::from(lba) + u128::from(blocks) <= 1u128 << 64);
            if let Ok(c) = r {
                let b = c.cdb.as_bytes();
                prop_assert_eq!(b[0], 0x93);
                prop_assert_eq!(b[1] & 0x08 != 0, unmap);
                prop_assert_eq!(b[1] & 0x01 != 0, ndob);
                prop_assert_eq!(b[1] & 0x10 != 0, anchor);
                prop_assert_eq!(b[1] & 0xe6, 0);
                prop_assert_eq!(be(&b[2..10]), lba);
                prop_assert_eq!(be(&b[10..14]), u64::from(blocks));
                prop_assert_eq!(c.data, if ndob { DataDirection::None } else { DataDirection::Write { len: block_len } });
            }
        }

        #[test]
        fn unmap_round_trip(descs in proptest::collection::vec((any::<u64>(), any::<u32>()), 0..40), anchor: bool) {
            let ds: Vec<_> = descs.iter().map(|&(lba, blocks)| UnmapDescriptor { lba, blocks }).collect();
            let ok = ds.iter().all(|d| u128::from(d.lba) + u128::from(d.blocks) <= 1u128 << 64);
            let r = unmap(&ds, anchor);
            prop_assert_eq!(r.is_ok(), ok);
            if let Ok((c, p)) = r {
                let b = c.cdb.as_bytes();
                prop_assert_eq!(b[0], 0x42);
                prop_assert_eq!(b[1], u8::from(anchor));
                prop_assert_eq!(be(&b[7..9]) as usize, p.len());
                prop_assert_eq!(c.data.expected_len() as usize, p.len());
                prop_assert_eq!(be(&p[0..2]) as usize, p.len() - 2);
                prop_assert_eq!(be(&p[2..4]) as usize, 16 * ds.len());
                for (i, d) in ds.iter().enumerate() {
                    let e = &p[8 + 16 * i..8 + 16 * (i + 1)];
                    prop_assert_eq!(be(&e[0..8]), d.lba);
                    prop_assert_eq!(be(&e[8..12]), u64::from(d.blocks));
                    prop_assert_eq!(&e[12..], &[0, 0, 0, 0]);
                }
            }
        }

        #[test]
        fn inquiry_round_trip(page: u8, alloc: u16, evpd: bool) {
            let c = if evpd { inquiry_vpd(VpdPage(page), alloc) } else { inquiry(alloc) };
            let b = c.cdb.as_bytes();
            prop_assert_eq!(b.len(), 6);
            prop_assert_eq!(b[0], 0x12);
            prop_assert_eq!(b[1], u8::from(evpd));
            prop_assert_eq!(b[2], if evpd { page } else { 0 });
            prop_assert_eq!(be(&b[3..5]), u64::from(alloc));
            prop_assert_eq!(c.data.expected_len(), u32::from(alloc));
        }

        #[test]
        fn small_commands_round_trip(alloc8: u8, alloc32: u32, desc: bool, select: u8) {
            let rs = request_sense(alloc8, desc);
            let b = rs.cdb.as_bytes();
            prop_assert_eq!(b, &[0x03, u8::from(desc), 0, 0, alloc8, 0][..]);
            prop_assert_eq!(rs.data.expected_len(), u32::from(alloc8));

            let rc = read_capacity16(alloc32);
            let b = rc.cdb.as_bytes();
            prop_assert_eq!((b[0], b[1]), (0x9e, 0x10));
            prop_assert_eq!(be(&b[10..14]), u64::from(alloc32));
            prop_assert_eq!(rc.data.expected_len(), alloc32);

            let rl = report_luns(ReportLunsSelect(select), alloc32);
            prop_assert_eq!(rl.is_ok(), alloc32 >= 16);
            if let Ok(rl) = rl {
                let b = rl.cdb.as_bytes();
                prop_assert_eq!(b.len(), 12);
                prop_assert_eq!((b[0], b[2]), (0xa0, select));
                prop_assert_eq!(be(&b[6..10]), u64::from(alloc32));
                prop_assert_eq!(rl.data, DataDirection::Read { len: alloc32 });
            }
        }

        #[test]
        fn cdb_from_bytes_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            let r = Cdb::from_bytes(&bytes);
            prop_assert_eq!(r.is_ok(), (1..=16).contains(&bytes.len()));
            if let Ok(c) = r {
                prop_assert_eq!(c.as_bytes(), &bytes[..]);
                prop_assert_eq!(&c.padded()[..bytes.len()], &bytes[..]);
                prop_assert!(c.padded()[bytes.len()..].iter().all(|&b| b == 0));
            }
        }
    }
}
