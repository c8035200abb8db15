//! A queue thread: one task per tag on libublk's per-thread executor,
//! each handing its requests to the tokio runtime and committing the
//! result (see the crate docs for why).

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use libublk::helpers::IoBuf;
use libublk::io::{UblkDev, UblkQueue};
use libublk::{BufDesc, UblkError};
use mpio_mpath::{BlockDevice, Errno, IoError, ReadBuf};
use tokio::runtime::Handle;
use tracing::{debug, warn};

use crate::kick::Kick;
use crate::request::{Request, completion};

/// What every queue thread of one device shares.
pub(crate) struct Shared<D> {
    pub(crate) device: Arc<D>,
    pub(crate) runtime: Handle,
    /// The device's name, for logs.
    pub(crate) name: String,
}

impl<D> Clone for Shared<D> {
    fn clone(&self) -> Self {
        Shared { device: self.device.clone(), runtime: self.runtime.clone(), name: self.name.clone() }
    }
}

/// Serves queue `qid` until the device stops (libublk's `q_fn`).
pub(crate) fn serve<D: BlockDevice>(qid: u16, dev: &UblkDev, shared: &Shared<D>) {
    let queue = match UblkQueue::new(qid, dev) {
        Ok(q) => Rc::new(q),
        Err(e) => {
            warn!(device = shared.name, qid, "ublk: queue setup failed: {e}");
            return;
        }
    };
    let kick = match Kick::new() {
        Ok(k) => Arc::new(k),
        Err(e) => {
            warn!(device = shared.name, qid, "ublk: no eventfd for the queue: {e}");
            return;
        }
    };
    let exe = smol::LocalExecutor::new();
    let tags: Vec<_> = (0..dev.dev_info.queue_depth)
        .map(|tag| {
            let (q, kick, shared) = (queue.clone(), kick.clone(), shared.clone());
            exe.spawn(async move { serve_tag(&q, tag, &shared, &kick).await })
        })
        .collect();
    let waker = {
        let kick = kick.clone();
        exe.spawn(async move { kick.serve().await })
    };
    let run = exe.run(async {
        let tick = || while exe.try_tick() {};
        // Done when every tag has seen the queue go down; the eventfd's
        // task never ends by itself.
        let done = || tags.iter().all(|t| t.is_finished());
        libublk::wait_and_handle_io_events(&queue, None, tick, done).await
    });
    if let Err(e) = smol::block_on(run) {
        warn!(device = shared.name, qid, "ublk: queue stopped: {e}");
    }
    drop(waker);
    debug!(device = shared.name, qid, "ublk: queue done");
}

/// One tag: fetch a request, serve it, commit its result and fetch the
/// next, until the queue goes down.
async fn serve_tag<D: BlockDevice>(q: &UblkQueue<'_>, tag: u16, shared: &Shared<D>, kick: &Arc<Kick>) {
    let mut buf = IoBuf::<u8>::new(q.dev.dev_info.max_io_buf_bytes as usize);
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
            Ok(req) => match handle(req, buf.as_mut_slice(), shared, kick).await {
                Ok(()) => req.done(),
                Err(errno) => completion(errno),
            },
            Err(errno) => {
                warn!(device = shared.name, op_flags, start, sectors, "ublk: a request the device cannot take");
                completion(errno)
            }
        };
        next = q.submit_io_commit_cmd(tag, BufDesc::Slice(buf.as_slice()), res).await;
    }
}

/// Runs one request on the device; a read's data lands in `buf`.
async fn handle<D: BlockDevice>(
    req: Request,
    buf: &mut [u8],
    shared: &Shared<D>,
    kick: &Arc<Kick>,
) -> Result<(), Errno> {
    let dev = shared.device.clone();
    match req {
        Request::Read { offset, len } => {
            let data = on_runtime(shared, kick, async move { dev.read(offset, u64::from(len)).await }).await?;
            copy_read(&data, buf.get_mut(..len as usize).ok_or(Errno::Invalid)?)
        }
        Request::Write { offset, len, fua } => {
            // Copy mode: the kernel put the data in the tag's buffer,
            // which is ours again once the request completes.
            let data = Bytes::copy_from_slice(buf.get(..len as usize).ok_or(Errno::Invalid)?);
            on_runtime(shared, kick, async move { dev.write(offset, data, fua).await }).await
        }
        Request::Flush => on_runtime(shared, kick, async move { dev.flush().await }).await,
        Request::Discard { offset, len, fua } => {
            on_runtime(shared, kick, async move { dev.discard(offset, len, fua).await }).await
        }
        Request::WriteZeroes { offset, len, flags } => {
            on_runtime(shared, kick, async move { dev.write_zeroes(offset, len, flags).await }).await
        }
        Request::Unsupported(op) => {
            debug!(device = shared.name, op, "ublk: operation not supported");
            Err(Errno::NotSupported)
        }
    }
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

/// Runs `fut` on the tokio runtime and waits for its result on this
/// queue thread: the result comes back on a oneshot (runtime-agnostic),
/// then [`Kick::notify`] wakes the thread.
async fn on_runtime<D, T>(
    shared: &Shared<D>,
    kick: &Arc<Kick>,
    fut: impl Future<Output = Result<T, IoError>> + Send + 'static,
) -> Result<T, Errno>
where
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let kick = kick.clone();
    shared.runtime.spawn(async move {
        let _ = tx.send(fut.await);
        kick.notify();
    });
    match rx.await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            debug!(device = shared.name, errno = %e.errno, "ublk: {e}");
            Err(e.errno)
        }
        // The runtime is shutting down: the task was dropped.
        Err(_) => Err(Errno::Shutdown),
    }
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
