//! Counting live connections, to wait until they are all gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// A count of [`Guard`]s alive, with a wait for zero.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tracker {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    live: AtomicUsize,
    idle: Notify,
}

/// Counts as one in its [`Tracker`] until dropped.
#[derive(Debug)]
pub(crate) struct Guard {
    inner: Arc<Inner>,
}

impl Tracker {
    /// A new guard.
    pub(crate) fn guard(&self) -> Guard {
        self.inner.live.fetch_add(1, Ordering::AcqRel);
        Guard { inner: self.inner.clone() }
    }

    /// Guards alive now.
    pub(crate) fn live(&self) -> usize {
        self.inner.live.load(Ordering::Acquire)
    }

    /// Resolves once no guard is alive.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.live() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.inner.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_the_last_guard() {
        let t = Tracker::default();
        t.idle().await;
        let a = t.guard();
        let b = t.guard();
        assert_eq!(t.live(), 2);
        let waiter = tokio::spawn({
            let t = t.clone();
            async move { t.idle().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }
}
