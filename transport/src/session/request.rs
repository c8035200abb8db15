//! What callers hand to a session and what they get back.

use bytes::{Buf, Bytes};

use crate::pdu::{Residual, TaskAttr};

/// A SCSI command to execute on a logical unit.
#[derive(Clone, Debug)]
pub struct ScsiRequest {
    /// The 8-byte LUN field, as the SAM LUN structure in big-endian order.
    pub lun: u64,
    pub(crate) cdb: [u8; 16],
    pub(crate) ext_cdb: Bytes,
    /// Data to write; its length is the command's Expected Data Transfer
    /// Length for the write direction.
    pub data_out: Bytes,
    /// Bytes expected from the target.
    pub read_len: u32,
    /// Task attribute (SIMPLE unless the caller needs ordering).
    pub attr: TaskAttr,
    /// Deadline for this command instead of the session's default; the
    /// task is aborted when it passes.
    pub timeout: Option<std::time::Duration>,
}

impl ScsiRequest {
    /// A command without data transfer. `cdb` is 1 to 260 bytes; bytes
    /// beyond 16 travel in an Extended CDB AHS.
    pub fn new(lun: u64, cdb: &[u8]) -> ScsiRequest {
        let mut inline = [0u8; 16];
        let n = cdb.len().min(16);
        inline[..n].copy_from_slice(&cdb[..n]);
        let ext_cdb = if cdb.len() > 16 { Bytes::copy_from_slice(&cdb[16..]) } else { Bytes::new() };
        ScsiRequest {
            lun,
            cdb: inline,
            ext_cdb,
            data_out: Bytes::new(),
            read_len: 0,
            attr: TaskAttr::SIMPLE,
            timeout: None,
        }
    }

    /// Expects `len` bytes from the target.
    pub fn read(mut self, len: u32) -> ScsiRequest {
        self.read_len = len;
        self
    }

    /// Sends `data` to the target. The buffer is shared, never copied:
    /// Data-Out PDUs carry slices of it.
    pub fn write(mut self, data: Bytes) -> ScsiRequest {
        self.data_out = data;
        self
    }

    /// Overrides the session's command timeout for this command.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> ScsiRequest {
        self.timeout = Some(timeout);
        self
    }

    /// The CDB's operation code (for logs and errors).
    pub fn opcode(&self) -> u8 {
        self.cdb[0]
    }
}

/// Data received from the target, as the Data-In PDUs delivered it: each
/// chunk is a slice of the receive buffer, so nothing was copied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadData {
    chunks: Vec<Bytes>,
    len: usize,
}

impl ReadData {
    pub(crate) fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push(chunk);
        }
    }

    /// Appends another read's chunks (a request split in several commands).
    pub fn extend(&mut self, other: ReadData) {
        self.len += other.len;
        self.chunks.extend(other.chunks);
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no data arrived.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks in order.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// One contiguous buffer (copies unless there is a single chunk).
    pub fn to_bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut v = Vec::with_capacity(self.len);
                for c in many {
                    v.extend_from_slice(c);
                }
                Bytes::from(v)
            }
        }
    }

    /// Copies the data into `out`, which must be at least `len()` long;
    /// returns the bytes copied.
    pub fn copy_to(&self, out: &mut [u8]) -> usize {
        let mut at = 0;
        for c in &self.chunks {
            let n = c.len().min(out.len() - at);
            out[at..at + n].copy_from_slice(&c[..n]);
            at += n;
            if at == out.len() {
                break;
            }
        }
        at
    }

    /// A reader over the chunks.
    pub fn reader(&self) -> impl Buf + '_ {
        ChunkReader { chunks: &self.chunks, first: 0, off: 0 }
    }
}

struct ChunkReader<'a> {
    chunks: &'a [Bytes],
    first: usize,
    off: usize,
}

impl Buf for ChunkReader<'_> {
    fn remaining(&self) -> usize {
        self.chunks.iter().skip(self.first).map(Bytes::len).sum::<usize>() - self.off
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.get(self.first).map(|c| &c[self.off..]).unwrap_or_default()
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(c) = self.chunks.get(self.first) else { return };
            let left = c.len() - self.off;
            if cnt < left {
                self.off += cnt;
                return;
            }
            cnt -= left;
            self.first += 1;
            self.off = 0;
        }
    }
}

/// The outcome of a SCSI command that the target completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScsiResult {
    /// SCSI status (GOOD = 0, CHECK CONDITION = 2, ...).
    pub status: u8,
    /// Sense data, without the iSCSI SenseLength prefix.
    pub sense: Option<Bytes>,
    /// Data read.
    pub data: ReadData,
    /// Residual reported by the target.
    pub residual: Residual,
}

impl ScsiResult {
    /// True for GOOD status.
    pub fn is_good(&self) -> bool {
        self.status == 0
    }
}
