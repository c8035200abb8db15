//! A queue thread: one future per tag, polled with the queue's ring by
//! a current-thread tokio runtime on this thread: the device's lane for
//! the first queue (its sessions then run here too), a runtime of the
//! queue's own for the others (see the crate docs for why).

use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use libublk::helpers::IoBuf;
use libublk::io::{UblkDev, UblkQueue, with_task_io_ring, with_task_io_ring_mut};
use libublk::uring_async::{ublk_reap_io_events_with_update_queue, ublk_wake_task};
use libublk::{BufDesc, UblkError};
use mpio_mpath::{BlockDevice, Errno, IoError, ReadBuf};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::lane::Lane;
use crate::request::{Request, completion};

/// What every queue thread of one device shares.
pub(crate) struct Shared<D> {
    pub(crate) device: Arc<D>,
    /// The runtime the device's sessions run on, if it has one to lend.
    pub(crate) lane: Option<Lane>,
    /// The device's name, for logs.
    pub(crate) name: String,
}

impl<D> Clone for Shared<D> {
    fn clone(&self) -> Self {
        Shared { device: self.device.clone(), lane: self.lane.clone(), name: self.name.clone() }
    }
}

/// Serves queue `qid` until the device stops (libublk's `q_fn`).
pub(crate) fn serve<D: BlockDevice>(qid: u16, dev: &UblkDev, shared: &Shared<D>) {
    let queue = match UblkQueue::new(qid, dev) {
        Ok(q) => q,
        Err(e) => {
            warn!(device = shared.name, qid, "ublk: queue setup failed: {e}");
            return;
        }
    };
    let served = serve_queue(&queue, shared);
    let result = match &shared.lane {
        // The first queue on the lane: a request and the commands it
        // becomes never leave this thread.
        Some(lane) if qid == 0 => lane.drive(served),
        _ => match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(served),
            Err(e) => Err(UblkError::IOError(e)),
        },
    };
    if let Err(e) = result {
        warn!(device = shared.name, qid, "ublk: queue stopped: {e}");
    }
    debug!(device = shared.name, qid, "ublk: queue done");
}

/// Serves every tag of the queue, and the ring they share, until every
/// tag has seen the queue go down.
async fn serve_queue<D: BlockDevice>(q: &UblkQueue<'_>, shared: &Shared<D>) -> Result<(), UblkError> {
    let ring = poll_ring().map_err(UblkError::IOError)?;
    // A tag queued a command for the ring.
    let queued = Notify::new();
    let mut tags: FuturesUnordered<_> =
        (0..q.dev.dev_info.queue_depth).map(|tag| serve_tag(q, tag, shared, &queued)).collect();
    let all_done = async { while tags.next().await.is_some() {} };
    tokio::select! {
        () = all_done => Ok(()),
        r = pump(q, &ring, &queued) => r,
    }
}

/// Submits what the tags queued and hands each completion to its tag,
/// forever. One `io_uring_enter` per batch the tags queued before the
/// runtime came back here; the wait for completions is the runtime's
/// (`epoll`, beside the sessions' sockets).
async fn pump(q: &UblkQueue<'_>, ring: &AsyncFd<OwnedFd>, queued: &Notify) -> Result<(), UblkError> {
    loop {
        with_task_io_ring_mut(|r| {
            if r.submission().is_empty() {
                return Ok(0);
            }
            r.submit()
        })
        .map_err(UblkError::IOError)?;
        ublk_reap_io_events_with_update_queue(q, false, None, |cqe| ublk_wake_task(cqe.user_data(), cqe))?;
        tokio::select! {
            ready = ring.readable() => {
                // Cleared before the reap at the top of the loop: a
                // completion posted after this sets it again.
                ready.map_err(UblkError::IOError)?.clear_ready();
            }
            () = queued.notified() => {}
        }
    }
}

/// The queue's ring (this thread's, libublk's) as the runtime polls it:
/// readable when it has completions. A duplicate of its descriptor, so
/// the registration owns what it polls; `with_interest` is deprecated for
/// descriptors that can close under it, which an `OwnedFd` cannot (the
/// one constructor without `unsafe`, which this workspace forbids).
fn poll_ring() -> std::io::Result<AsyncFd<OwnedFd>> {
    let fd = with_task_io_ring(|r| r.as_fd().try_clone_to_owned())?;
    #[allow(deprecated)]
    AsyncFd::with_interest(fd, Interest::READABLE)
}

/// One tag: fetch a request, serve it, commit its result and fetch the
/// next, until the queue goes down.
async fn serve_tag<D: BlockDevice>(q: &UblkQueue<'_>, tag: u16, shared: &Shared<D>, queued: &Notify) {
    let mut buf = IoBuf::<u8>::new(q.dev.dev_info.max_io_buf_bytes as usize);
    // The command is put in the ring when its future is first polled,
    // before the pump runs again (one thread): the permit is in time.
    queued.notify_one();
    let mut next = q.submit_io_prep_cmd(tag, BufDesc::Slice(buf.as_slice()), 0, Some(&buf)).await;
    loop {
        match next {
            Ok(_) => {}
            Err(UblkError::QueueIsDown) => return,
            Err(e) => {
                warn!(device = shared.name, tag, "ublk: fetching a request failed: {e}");
                return;
            }
        }
        let iod = q.get_iod(tag);
        let (op_flags, start, sectors) = (iod.op_flags, iod.start_sector, iod.nr_sectors);
        let res = match Request::decode(op_flags, start, sectors, buf.len()) {
            Ok(req) => match handle(req, buf.as_mut_slice(), shared).await {
                Ok(()) => req.done(),
                Err(errno) => completion(errno),
            },
            Err(errno) => {
                warn!(device = shared.name, op_flags, start, sectors, "ublk: a request the device cannot take");
                completion(errno)
            }
        };
        queued.notify_one();
        next = q.submit_io_commit_cmd(tag, BufDesc::Slice(buf.as_slice()), res).await;
    }
}

/// Runs one request on the device; a read's data lands in `buf`.
async fn handle<D: BlockDevice>(req: Request, buf: &mut [u8], shared: &Shared<D>) -> Result<(), Errno> {
    let dev = &shared.device;
    let name = &shared.name;
    match req {
        Request::Read { offset, len } => {
            let data = outcome(name, dev.read(offset, u64::from(len))).await?;
            copy_read(&data, buf.get_mut(..len as usize).ok_or(Errno::Invalid)?)
        }
        Request::Write { offset, len, fua } => {
            // Copy mode: the kernel put the data in the tag's buffer,
            // which is ours again once the request completes.
            let data = Bytes::copy_from_slice(buf.get(..len as usize).ok_or(Errno::Invalid)?);
            outcome(name, dev.write(offset, data, fua)).await
        }
        Request::Flush => outcome(name, dev.flush()).await,
        Request::Discard { offset, len, fua } => outcome(name, dev.discard(offset, len, fua)).await,
        Request::WriteZeroes { offset, len, flags } => outcome(name, dev.write_zeroes(offset, len, flags)).await,
        Request::Unsupported(op) => {
            debug!(device = name, op, "ublk: operation not supported");
            Err(Errno::NotSupported)
        }
    }
}

/// A device call's result, its error logged (at debug: the device logs
/// what an operator must see) and reduced to its errno.
async fn outcome<T>(name: &str, call: impl Future<Output = Result<T, IoError>>) -> Result<T, Errno> {
    call.await.map_err(|e| {
        debug!(device = name, errno = %e.errno, "ublk: {e}");
        e.errno
    })
}

/// Copies a read's buffers into the tag's buffer; a read that returned
/// another length than asked is the device's bug, reported as EIO rather
/// than completed with stale bytes.
fn copy_read(data: &ReadBuf, out: &mut [u8]) -> Result<(), Errno> {
    if data.len() != out.len() {
        warn!(got = data.len(), asked = out.len(), "ublk: a read returned the wrong length");
        return Err(Errno::Io);
    }
    let mut at = 0;
    for chunk in data.chunks() {
        let end = at + chunk.len();
        out.get_mut(at..end).ok_or(Errno::Io)?.copy_from_slice(chunk);
        at = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_copied_piece_by_piece_and_checked() {
        let data = ReadBuf::from(vec![Bytes::from_static(b"abc"), Bytes::from_static(b"defg")]);
        let mut out = [0u8; 7];
        copy_read(&data, &mut out).unwrap();
        assert_eq!(&out, b"abcdefg");
        assert_eq!(copy_read(&data, &mut [0u8; 8]), Err(Errno::Io));
        assert_eq!(copy_read(&data, &mut [0u8; 6]), Err(Errno::Io));
    }
}
