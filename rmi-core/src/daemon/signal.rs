//! Stop signals (shutdown, abort, a connection's end) that tasks wait on cheaply.
//!
//! Polling a [`Wait`] is an atomic load and a waker comparison. A cancellation token's wait
//! takes a lock on every poll, and a connection's request loop polled several of them per
//! request: about 4 % of a sequential call's instructions under callgrind.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use foldhash::HashMap;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;

/// A flag raised once, for good, that any number of tasks can wait for.
#[derive(Default)]
pub(super) struct Signal {
    raised: AtomicBool,
    waiters: Mutex<Waiters>,
}

#[derive(Default)]
struct Waiters {
    next: u64,
    wakers: HashMap<u64, Arc<AtomicWaker>>,
}

impl Signal {
    /// Raises the flag and wakes every task waiting for it.
    pub(super) fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        for waker in self.waiters.lock().wakers.values() {
            waker.wake();
        }
    }

    /// True once [`raise`](Self::raise) was called.
    pub(super) fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// A wait for the flag, which can be polled (or awaited by `&mut`) any number of times.
    pub(super) fn wait(self: &Arc<Self>) -> Wait {
        let waker = Arc::new(AtomicWaker::new());
        let mut waiters = self.waiters.lock();
        let key = waiters.next;
        waiters.next += 1;
        waiters.wakers.insert(key, waker.clone());
        drop(waiters);
        Wait {
            signal: self.clone(),
            key,
            waker,
        }
    }
}

/// One task's wait for a [`Signal`]; ready once the signal is raised, and from then on.
pub(super) struct Wait {
    signal: Arc<Signal>,
    key: u64,
    waker: Arc<AtomicWaker>,
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.is_raised() {
            return Poll::Ready(());
        }
        // Registered before the second look: a raise in between wakes this waker.
        self.waker.register(cx.waker());
        if self.signal.is_raised() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.signal.waiters.lock().wakers.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_raise_wakes_every_wait_and_later_waits_are_ready_at_once() {
        let signal = Arc::new(Signal::default());
        let waits: Vec<_> = (0..3)
            .map(|_| tokio::spawn(signal.wait()))
            .collect::<Vec<_>>();
        tokio::task::yield_now().await;
        assert!(!signal.is_raised());
        signal.raise();
        for wait in waits {
            tokio::time::timeout(std::time::Duration::from_secs(5), wait)
                .await
                .expect("woken")
                .expect("no panic");
        }
        assert!(signal.is_raised());
        signal.wait().await;
    }

    #[tokio::test]
    async fn a_wait_polled_many_times_is_woken_once_raised_and_dropped_waits_leave() {
        let signal = Arc::new(Signal::default());
        let mut wait = signal.wait();
        for _ in 0..3 {
            assert!(futures_util::poll!(&mut wait).is_pending());
        }
        let other = signal.wait();
        drop(other);
        assert_eq!(signal.waiters.lock().wakers.len(), 1);
        let waiter = tokio::spawn(wait);
        tokio::task::yield_now().await;
        signal.raise();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("no panic");
        assert!(signal.waiters.lock().wakers.is_empty());
    }
}
