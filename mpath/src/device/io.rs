//! Requests at byte offsets: checked against the LU, split into commands
//! it accepts, and run over the paths through the core (path choice,
//! retries, holds, write fences).

use std::time::{Duration, Instant};

use bytes::Bytes;
use mpio_dsm::{Command, cdb};
use mpio_transport::{ScsiResult, TaskError};
use tracing::debug;

use super::completion::{classify_result, reports_capacity_change};
use super::{Device, LuInfo, Waiting};
use crate::block::{Errno, Geometry, IoError, ReadBuf, ZeroFlags};
use crate::core::{Durability, Fence, PathStatus, Selection, Verdict};
use crate::scsi::request;
use crate::stats::Op;

/// One command's share of a request's range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    /// Offset within the request.
    rel: u64,
    /// Byte offset on the device.
    at: u64,
    /// Bytes.
    len: u64,
    lba: u64,
    blocks: u32,
}

impl Device {
    // ---- I/O -------------------------------------------------------------

    /// The logical unit, waiting for the first claim as requests wait for a
    /// path in an all-paths-down hold (the size and block size are needed to
    /// split a request into commands).
    async fn lu(&self) -> Result<LuInfo, IoError> {
        if let Some(lu) = self.info() {
            return Ok(lu);
        }
        let _waiting = Waiting::new(&self.inner);
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(lu) = self.info() {
                return Ok(lu);
            }
            let hold = self.core().hold(Instant::now());
            let until = hold?;
            self.inner.kick.notify_one();
            wait(notified, until).await;
        }
    }

    fn check_range(lu: &LuInfo, offset: u64, len: u64) -> Result<(), IoError> {
        let bl = u64::from(lu.block_len);
        if !offset.is_multiple_of(bl) || !len.is_multiple_of(bl) {
            return Err(Self::invalid(format!(
                "offset {offset} and length {len} must be multiples of the {bl}-byte block"
            )));
        }
        if offset.checked_add(len).is_none_or(|end| end > lu.capacity()) {
            return Err(Self::invalid(format!(
                "{len} bytes at {offset} go past the end of the device ({} bytes)",
                lu.capacity()
            )));
        }
        Ok(())
    }

    fn invalid(message: String) -> IoError {
        IoError::device(Errno::Invalid, message)
    }

    /// Largest request the device sends as one command; longer ones are
    /// split.
    fn chunk(lu: &LuInfo) -> u64 {
        const DEFAULT_MAX: u64 = 8 << 20;
        let max = lu.max_transfer.unwrap_or(DEFAULT_MAX).clamp(u64::from(lu.block_len), DEFAULT_MAX);
        max - max % u64::from(lu.block_len)
    }

    /// The device's geometry, once a path was claimed (the LU is known).
    pub fn geometry(&self) -> Result<Geometry, String> {
        let lu = self.info().ok_or_else(|| {
            format!("device {} has no usable path yet (no logical unit claimed); try again later", self.name())
        })?;
        Ok(lu.geometry())
    }

    /// Reads `len` bytes at `offset`: the buffers as the paths received
    /// them.
    pub async fn read(&self, offset: u64, len: u64) -> Result<ReadBuf, IoError> {
        let lu = self.lu().await?;
        let mut out = ReadBuf::new();
        for p in Self::pieces(&lu, offset, len, Self::chunk(&lu))? {
            let cmd = cdb::read16(p.lba, p.blocks, lu.block_len, false).map_err(cdb_error)?;
            for chunk in self.run(Op::Read, p.len, &cmd, Bytes::new()).await?.data.chunks() {
                out.push(chunk.clone());
            }
        }
        Ok(out)
    }

    /// Writes `data` at `offset`; `fua`: on stable media before it
    /// completes, by the means the LU has ([`crate::durability`]: the FUA
    /// bit where the LU takes it, a SYNCHRONIZE CACHE after the write on a
    /// write-back LU without it, nothing more on a write-through LU).
    pub async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<(), IoError> {
        let lu = self.lu().await?;
        let plan = lu.write_cache.write(fua);
        for p in Self::pieces(&lu, offset, data.len() as u64, Self::chunk(&lu))? {
            let cmd = cdb::write16(p.lba, p.blocks, lu.block_len, plan.fua_bit).map_err(cdb_error)?;
            let part = data.slice(p.rel as usize..(p.rel + p.len) as usize);
            self.run(Op::Write, p.len, &cmd, part).await?;
        }
        if plan.flush_after {
            debug!(device = %self.inner.name, offset, "FUA write on a write-back LU without DPOFUA: SYNCHRONIZE CACHE");
            self.core().durability_command(Durability::FuaFlush);
            self.synchronize_cache().await?;
        } else if plan.write_through {
            self.core().durability_command(Durability::WriteThrough);
        }
        Ok(())
    }

    /// Makes completed writes durable: SYNCHRONIZE CACHE of the whole LU,
    /// or nothing on a LU without a write cache, whose completed writes
    /// are durable already ([`crate::durability`]).
    pub async fn flush(&self) -> Result<(), IoError> {
        let lu = self.lu().await?;
        if !lu.write_cache.flush_needed() {
            self.core().durability_command(Durability::WriteThrough);
            return Ok(());
        }
        self.synchronize_cache().await
    }

    async fn synchronize_cache(&self) -> Result<(), IoError> {
        let cmd = cdb::synchronize_cache16(0, 0, false).map_err(cdb_error)?;
        self.run(Op::Flush, 0, &cmd, Bytes::new()).await.map(|_| ())
    }

    /// Deallocates a range (UNMAP), in commands the LU accepts; `fua`:
    /// durable before it completes (a flush after it, where the LU caches).
    pub async fn discard(&self, offset: u64, len: u64, fua: bool) -> Result<(), IoError> {
        let lu = self.lu().await?;
        if !lu.unmap {
            return Err(IoError::device(Errno::NotSupported, "the logical unit does not support UNMAP"));
        }
        let most = lu.max_unmap_blocks.map_or(Self::RANGE_OP_MAX, |b| u64::from(b) * u64::from(lu.block_len));
        for p in Self::pieces(&lu, offset, len, most)? {
            let desc = cdb::UnmapDescriptor { lba: p.lba, blocks: p.blocks };
            let (cmd, params) = cdb::unmap(&[desc], false).map_err(cdb_error)?;
            self.run(Op::Discard, p.len, &cmd, Bytes::from(params)).await?;
        }
        if fua { self.flush().await } else { Ok(()) }
    }

    /// Writes zeroes to a range (WRITE SAME(16), or plain writes when the
    /// LU lacks it). Both keep the range allocated, which satisfies
    /// [`ZeroFlags::no_hole`] and plain zeroing alike; with
    /// [`ZeroFlags::fua`], durable before it completes.
    pub async fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags) -> Result<(), IoError> {
        self.zero(offset, len).await?;
        if flags.fua { self.flush().await } else { Ok(()) }
    }

    async fn zero(&self, offset: u64, len: u64) -> Result<(), IoError> {
        let lu = self.lu().await?;
        if !lu.write_same {
            let chunk = Self::chunk(&lu).min(1 << 20);
            let zeros = Bytes::from(vec![0u8; chunk as usize]);
            for p in Self::pieces(&lu, offset, len, chunk)? {
                self.write(p.at, zeros.slice(..p.len as usize), false).await?;
            }
            return Ok(());
        }
        let most = lu.max_write_same_blocks.map_or(Self::RANGE_OP_MAX, |b| b.saturating_mul(u64::from(lu.block_len)));
        let zero = Bytes::from(vec![0u8; lu.block_len as usize]);
        for p in Self::pieces(&lu, offset, len, most)? {
            let cmd =
                cdb::write_same16(p.lba, p.blocks, lu.block_len, cdb::WriteSameFlags::default()).map_err(cdb_error)?;
            self.run(Op::WriteZeroes, p.len, &cmd, zero.clone()).await?;
        }
        Ok(())
    }

    /// Largest range one UNMAP or WRITE SAME covers when the LU states no
    /// limit: the target works on it in one go, and it must finish well
    /// within the I/O timeout.
    const RANGE_OP_MAX: u64 = 256 << 20;

    /// `len` bytes at `offset`, checked once, in pieces of at most `most`
    /// bytes, whole blocks each (so every piece's block count fits a
    /// command). An empty range has no pieces.
    fn pieces(lu: &LuInfo, offset: u64, len: u64, most: u64) -> Result<impl Iterator<Item = Piece>, IoError> {
        Self::check_range(lu, offset, len)?;
        let bl = u64::from(lu.block_len);
        let most = (most - most % bl).clamp(bl, u64::from(u32::MAX) * bl);
        Ok((0..len.div_ceil(most)).map(move |i| {
            let rel = i * most;
            let n = most.min(len - rel);
            Piece { rel, at: offset + rel, len: n, lba: (offset + rel) / bl, blocks: (n / bl) as u32 }
        }))
    }

    /// Runs one command through the paths: hold, retry, re-drive.
    async fn run(&self, op: Op, bytes: u64, cmd: &Command, data: Bytes) -> Result<ScsiResult, IoError> {
        let inner = &self.inner;
        let mut attempt = 0u32;
        let mut fence: Option<Fence> = None;
        loop {
            if let Some(f) = fence.take() {
                self.wait_fence(f).await;
            }
            let notified = inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let selection = self.core().select(Instant::now(), op, bytes);
            let ticket = match selection {
                Selection::Path(t) => t,
                Selection::Hold(until) => {
                    let _waiting = Waiting::new(inner);
                    inner.kick.notify_one();
                    wait(notified, until).await;
                    continue;
                }
                Selection::Fence(f) => {
                    fence = Some(f);
                    continue;
                }
                Selection::Fail(e) => return Err(e),
            };
            let t0 = Instant::now();
            let result = match inner.path_io(ticket.path) {
                Some(path) => path.session.execute(request(inner.template.lun, cmd, data.clone())).await,
                // Cannot happen: a path's I/O side goes only once the path
                // left the policy and was drained. Should it, it is the
                // closed session it would be.
                None => Err(TaskError::SessionClosed),
            };
            let completion = classify_result(&result);
            if reports_capacity_change(&result) {
                self.capacity_may_have_changed();
            }
            let (verdict, draining) = {
                let mut core = self.core();
                let verdict = core.complete(Instant::now(), ticket, t0.elapsed(), completion, attempt);
                (verdict, core.status(ticket.path) == Some(PathStatus::Removing) || core.is_closing())
            };
            if draining {
                // remove_path and shutdown wait for the path's last command.
                inner.changed.notify_waiters();
            }
            match verdict {
                Verdict::Done => {
                    return result.map_err(|e| IoError::device(Errno::Io, e.to_string()));
                }
                Verdict::Redrive { fence: f } => {
                    inner.kick.notify_one();
                    fence = f;
                }
                Verdict::Retry(d) => {
                    attempt += 1;
                    if !d.is_zero() {
                        tokio::time::sleep(d).await;
                    }
                }
                Verdict::Fail(e) => return Err(e),
            }
        }
    }

    async fn wait_fence(&self, f: Fence) {
        let _waiting = Waiting::new(&self.inner);
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.core().fence_cleared(f) {
                return;
            }
            self.inner.kick.notify_one();
            // The fence timeout clears it at the latest; the bound here
            // only guards against a lost wake-up.
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }
}

/// Waits for `notified`, at most until `until`.
pub(super) async fn wait(notified: impl Future<Output = ()>, until: Option<Instant>) {
    match until {
        Some(t) => {
            let _ = tokio::time::timeout_at(tokio::time::Instant::from_std(t), notified).await;
        }
        None => notified.await,
    }
}

pub(super) fn cdb_error(e: mpio_dsm::CdbError) -> IoError {
    IoError::device(Errno::Invalid, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durability::WriteCache;

    fn lu() -> LuInfo {
        LuInfo {
            identity: "naa.6000000000000001".into(),
            serial: None,
            block_len: 512,
            blocks: 1 << 20,
            physical_block_len: 4096,
            max_transfer: None,
            unmap: true,
            max_unmap_blocks: Some(100),
            write_same: true,
            max_write_same_blocks: None,
            write_protected: false,
            write_cache: WriteCache::ASSUMED,
            unmap_granularity: 0,
            unmap_alignment: None,
            rotational: None,
        }
    }

    /// (device offset, length) of each piece.
    fn pieces(lu: &LuInfo, offset: u64, len: u64, most: u64) -> Result<Vec<(u64, u64)>, IoError> {
        Ok(Device::pieces(lu, offset, len, most)?.map(|p| (p.at, p.len)).collect())
    }

    #[test]
    fn ranges_split_into_whole_block_pieces_within_the_limit() {
        let lu = lu();
        let p = pieces(&lu, 4096, 250 * 512, 100 * 512).unwrap();
        assert_eq!(p, vec![(4096, 51200), (55296, 51200), (106496, 25600)]);
        // A limit below one block still moves one block per piece; one
        // that is not a whole number of blocks is rounded down.
        assert_eq!(pieces(&lu, 0, 1024, 100).unwrap(), vec![(0, 512), (512, 512)]);
        assert_eq!(pieces(&lu, 0, 1536, 1000).unwrap(), vec![(0, 512), (512, 512), (1024, 512)]);
        assert!(pieces(&lu, 0, 0, 512).unwrap().is_empty());
        // Bounds are checked for the whole range, before any piece.
        assert_eq!(pieces(&lu, lu.capacity() - 512, 1024, 512).unwrap_err().errno, Errno::Invalid);
        assert_eq!(pieces(&lu, 1, 512, 512).unwrap_err().errno, Errno::Invalid);
    }
}
