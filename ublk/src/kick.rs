//! Waking a queue thread from a tokio thread: an eventfd polled in the
//! queue's own io_uring.
//!
//! A queue thread sleeps in `io_uring_enter` waiting for CQEs. When a
//! tokio task completes a request it sends the result on a oneshot, whose
//! waker schedules the tag's task in the queue's executor, but nothing
//! makes the sleeping thread look: its executor is only ticked after a
//! CQE. [`Kick::notify`] writes the eventfd, on which the queue keeps a
//! `POLL_ADD` ([`Kick::serve`]); its CQE wakes the thread, which then runs
//! every task that was scheduled. A poll rather than a read: a read would
//! leave the kernel a pointer into a buffer that could be gone when the
//! ring is torn down with the read still pending.
//!
//! Writes are coalesced: only the completion that finds no kick pending
//! writes (one syscall per wake-up, not per completion). That loses none:
//! a completion schedules its task before it looks at `pending`, and the
//! queue clears `pending` before it runs the tasks scheduled so far, so a
//! completion that saw `pending` set has its task run in that same pass.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use io_uring::{opcode, types};
use libublk::UblkUringData;
use libublk::uring_async::ublk_submit_sqe_async;
use nix::sys::eventfd::{EfdFlags, EventFd};
use tracing::warn;

/// One queue's wake-up: shared by its thread and the tokio tasks that
/// complete its requests.
#[derive(Debug)]
pub(crate) struct Kick {
    fd: EventFd,
    /// A write is on its way or not yet seen by the queue.
    pending: AtomicBool,
}

impl Kick {
    pub(crate) fn new() -> std::io::Result<Kick> {
        let fd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Kick { fd, pending: AtomicBool::new(false) })
    }

    /// Wakes the queue thread (after the caller has sent its result).
    pub(crate) fn notify(&self) {
        if !self.pending.swap(true, Ordering::AcqRel)
            && let Err(e) = self.fd.write(1)
        {
            // EAGAIN only when the counter is at its maximum: the queue
            // has a wake-up coming anyway.
            if e != nix::errno::Errno::EAGAIN {
                warn!("ublk: cannot wake a queue thread: {e}");
            }
        }
    }

    /// The queue thread's side, a task of its executor: waits for the
    /// eventfd in the queue's ring, forever (the task is dropped with the
    /// executor when the queue stops).
    pub(crate) async fn serve(&self) {
        let fd = types::Fd(self.fd.as_raw_fd());
        loop {
            let poll = opcode::PollAdd::new(fd, libc::POLLIN as u32).build();
            // The Target bit: this is our own operation, not one of the
            // driver's I/O commands (libublk counts those).
            match ublk_submit_sqe_async(poll, UblkUringData::Target as u64).await {
                Ok(res) if res >= 0 => {}
                Ok(res) => {
                    warn!("ublk: polling the queue's eventfd failed: {}", std::io::Error::from_raw_os_error(-res));
                    return;
                }
                Err(e) => {
                    warn!("ublk: polling the queue's eventfd failed: {e}");
                    return;
                }
            }
            // Reset the counter, then let completions write again; the
            // tasks they scheduled run after this task yields.
            let _ = self.fd.read();
            self.pending.store(false, Ordering::Release);
        }
    }
}
