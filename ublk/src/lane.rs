//! A device's lane: the single-threaded tokio runtime its sessions, its
//! driver and its timers run on, which the device's first ublk queue
//! thread drives while it serves the device.
//!
//! Why: a ublk queue must issue its commands from one thread of its own,
//! and the device's sockets are polled by whatever drives their runtime.
//! If that is another thread, every request crosses threads twice (to the
//! session's socket and back), and each crossing costs a wake-up of the
//! other core (35-40 µs here). On the lane the queue thread polls the
//! ublk ring and the iSCSI sockets in one `epoll`: a request is read from
//! the kernel, sent, answered and committed without leaving the thread.
//!
//! The device needs its runtime before the block device exists (its
//! paths log in and claim the LU, which gives the geometry the ublk
//! device is made with), and after it is gone (the logouts), so the lane
//! has a thread of its own that drives the runtime whenever no queue
//! does. [`Lane::drive`] lends the runtime to the calling thread for as
//! long as a future runs: the lane thread leaves its `block_on`, hands
//! the runtime over, and takes it back when the future is done. A current-
//! thread runtime may be driven by any thread, one at a time; its tasks
//! and its I/O and timer drivers go with it.
//!
//! Everything a device spawns lands on the lane when the device is
//! started inside it ([`Lane::handle`]`.enter()`): the multipath device
//! keeps the runtime it started on for the sessions of paths added later.

use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::Notify;
use tracing::debug;

/// A device's runtime and the thread that drives it when no queue does.
/// Cheap to clone; the lane ends when the last clone is dropped (its
/// tasks are dropped with it: stop the device first).
#[derive(Clone)]
pub struct Lane {
    handle: Handle,
    _owner: Arc<Owner>,
    sync: Arc<Sync>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").finish_non_exhaustive()
    }
}

/// Closes the lane when the last [`Lane`] goes.
struct Owner(Arc<Sync>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.changed.notify_all();
        self.0.wanted.notify_one();
    }
}

/// What the lane thread and a borrower share.
#[derive(Default)]
struct Sync {
    state: Mutex<State>,
    /// The state changed (for the threads outside the runtime).
    changed: Condvar,
    /// A borrower wants the runtime (wakes the lane thread's `block_on`).
    wanted: Notify,
}

#[derive(Default)]
struct State {
    wanted: bool,
    /// The runtime, lent and not yet taken.
    lent: Option<Arc<Runtime>>,
    /// The borrower is done with it.
    returned: bool,
    closed: bool,
}

impl Sync {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(guard).unwrap_or_else(|e| e.into_inner())
    }
}

impl Lane {
    /// A lane for device `name`, its thread driving it.
    pub fn new(name: &str) -> std::io::Result<Lane> {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let sync = Arc::new(Sync::default());
        let ours = sync.clone();
        std::thread::Builder::new().name(format!("lane-{name}")).spawn(move || run(Arc::new(runtime), &ours))?;
        Ok(Lane { handle, _owner: Arc::new(Owner(sync.clone())), sync })
    }

    /// The runtime's handle: spawn on it, or enter it to start a device
    /// on it.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `fut` to completion on this thread, which drives the lane's
    /// runtime (its tasks, sockets, timers) meanwhile. Not from inside a
    /// runtime (this blocks). One borrower at a time: another one waits
    /// until the first is done. (The lane is open: `self` keeps it.)
    pub fn drive<F: Future>(&self, fut: F) -> F::Output {
        let runtime = {
            let mut state = self.sync.lock();
            loop {
                if let Some(rt) = state.lent.take() {
                    break rt;
                }
                state.wanted = true;
                self.sync.wanted.notify_one();
                state = self.sync.wait(state);
            }
        };
        let out = runtime.block_on(fut);
        // Dropped here, outside the runtime, if the lane ended meanwhile.
        drop(runtime);
        self.sync.lock().returned = true;
        self.sync.changed.notify_all();
        out
    }
}

/// The lane thread: drives the runtime until a borrower wants it, lends
/// it, waits for it back; drops it (and every task on it) once closed.
fn run(runtime: Arc<Runtime>, sync: &Sync) {
    loop {
        runtime.block_on(async {
            loop {
                // Taken before the look: a request made after it wakes us.
                let wanted = sync.wanted.notified();
                {
                    let state = sync.lock();
                    if state.wanted || state.closed {
                        return;
                    }
                }
                wanted.await;
            }
        });
        let mut state = sync.lock();
        if state.closed {
            break;
        }
        state.wanted = false;
        state.returned = false;
        state.lent = Some(runtime.clone());
        sync.changed.notify_all();
        while !state.returned && !state.closed {
            state = sync.wait(state);
        }
        if state.closed {
            // Lent and never taken: not left in `sync` to be dropped
            // by whoever drops it last (perhaps inside a runtime).
            let never_taken = state.lent.take();
            drop(state);
            drop(never_taken);
            break;
        }
    }
    debug!("lane: closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrower_drives_the_lanes_tasks_and_gives_the_runtime_back() {
        let lane = Lane::new("t").unwrap();
        // A task of the lane, fed from outside.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        lane.handle().spawn(async move {
            while let Some(v) = rx.recv().await {
                let _ = done_tx.send((v, std::thread::current().name().map(str::to_owned)));
            }
        });
        // Driven by the lane thread.
        tx.send(1).unwrap();
        assert_eq!(done_rx.recv().unwrap(), (1, Some("lane-t".into())));
        // Driven by the borrower: the task runs on this thread, a timer
        // of the runtime fires.
        let me = std::thread::current().name().map(str::to_owned);
        let got = lane.drive(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            tx.send(2).unwrap();
            tokio::task::yield_now().await;
            done_rx.recv().unwrap()
        });
        assert_eq!(got, (2, me));
        // Back on the lane thread.
        tx.send(3).unwrap();
        assert_eq!(done_rx.recv().unwrap(), (3, Some("lane-t".into())));
        // Twice in a row.
        assert_eq!(lane.drive(async { 7 }), 7);
        // Closed: the lane thread drops the runtime and its tasks (the
        // task's sender goes with it). The deadline is for a hang only.
        drop(lane);
        let gone = done_rx.recv_timeout(std::time::Duration::from_secs(60));
        assert_eq!(gone, Err(std::sync::mpsc::RecvTimeoutError::Disconnected));
    }
}
