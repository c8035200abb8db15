//! The 48-byte Basic Header Segment and its common fields (RFC 7143
//! section 11.2.1).

use super::Opcode;

/// Length of the Basic Header Segment.
pub const BHS_LEN: usize = 48;

/// A Basic Header Segment.
///
/// Field accessors take byte offsets that are constants of the PDU layouts
/// in this module, all inside the 48 bytes; they are not reachable with
/// offsets from the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Bhs(pub [u8; BHS_LEN]);

impl std::fmt::Debug for Bhs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bhs({:?} ", self.opcode())?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

#[allow(clippy::indexing_slicing)] // constant offsets inside the 48-byte array, see the type doc
impl Bhs {
    /// A zeroed BHS with the given opcode.
    pub fn new(opcode: Opcode) -> Bhs {
        let mut b = Bhs([0; BHS_LEN]);
        b.0[0] = opcode.0 & 0x3f;
        b
    }

    /// The opcode (byte 0, low 6 bits).
    pub fn opcode(&self) -> Opcode {
        Opcode(self.0[0] & 0x3f)
    }

    /// The I bit: an immediate command (byte 0, bit 6).
    pub fn immediate(&self) -> bool {
        self.0[0] & 0x40 != 0
    }

    /// Sets the I bit.
    pub fn set_immediate(&mut self, on: bool) {
        self.set_bit(0, 0x40, on);
    }

    /// TotalAHSLength in bytes (the field counts 4-byte words).
    pub fn total_ahs_len(&self) -> usize {
        usize::from(self.0[4]) * 4
    }

    /// DataSegmentLength in bytes, without padding.
    pub fn data_segment_len(&self) -> usize {
        (usize::from(self.0[5]) << 16) | (usize::from(self.0[6]) << 8) | usize::from(self.0[7])
    }

    /// Writes TotalAHSLength and DataSegmentLength. The encoders keep the
    /// AHS a multiple of 4 bytes below 1 KiB and data below 16 MiB (the
    /// largest MaxRecvDataSegmentLength the RFC allows), so the fields fit.
    pub(crate) fn set_lengths(&mut self, ahs: usize, data: usize) {
        debug_assert!(ahs.is_multiple_of(4) && ahs / 4 <= 0xff && data <= 0xff_ffff);
        self.0[4] = (ahs / 4) as u8;
        self.0[5] = (data >> 16) as u8;
        self.0[6] = (data >> 8) as u8;
        self.0[7] = data as u8;
    }

    /// The Initiator Task Tag (bytes 16-19).
    pub fn itt(&self) -> u32 {
        self.u32(16)
    }

    pub(crate) fn u8(&self, off: usize) -> u8 {
        self.0[off]
    }

    pub(crate) fn set_u8(&mut self, off: usize, v: u8) {
        self.0[off] = v;
    }

    pub(crate) fn bit(&self, off: usize, mask: u8) -> bool {
        self.0[off] & mask != 0
    }

    pub(crate) fn set_bit(&mut self, off: usize, mask: u8, on: bool) {
        if on {
            self.0[off] |= mask;
        } else {
            self.0[off] &= !mask;
        }
    }

    pub(crate) fn u16(&self, off: usize) -> u16 {
        u16::from_be_bytes([self.0[off], self.0[off + 1]])
    }

    pub(crate) fn set_u16(&mut self, off: usize, v: u16) {
        self.0[off..off + 2].copy_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn u32(&self, off: usize) -> u32 {
        u32::from_be_bytes([self.0[off], self.0[off + 1], self.0[off + 2], self.0[off + 3]])
    }

    pub(crate) fn set_u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn u64(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[off..off + 8]);
        u64::from_be_bytes(b)
    }

    pub(crate) fn set_u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn bytes<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut b = [0u8; N];
        b.copy_from_slice(&self.0[off..off + N]);
        b
    }

    pub(crate) fn set_bytes(&mut self, off: usize, v: &[u8]) {
        self.0[off..off + v.len()].copy_from_slice(v);
    }
}
