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
    /// The waker of one wait, kept in the signal itself: most signals have one waiter at a
    /// time (a connection's request loop waiting for its writer's end), which then costs no
    /// allocation (two per connection, when every wait had its waker in the list).
    first: AtomicWaker,
    /// A wait holds `first`.
    first_taken: AtomicBool,
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
        self.first.wake();
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
        if !self.first_taken.swap(true, Ordering::AcqRel) {
            return Wait {
                signal: self.clone(),
                slot: Slot::First,
            };
        }
        let waker = Arc::new(AtomicWaker::new());
        let mut waiters = self.waiters.lock();
        let key = waiters.next;
        waiters.next += 1;
        waiters.wakers.insert(key, waker.clone());
        drop(waiters);
        Wait {
            signal: self.clone(),
            slot: Slot::Listed { key, waker },
        }
    }
}

/// One task's wait for a [`Signal`]; ready once the signal is raised, and from then on.
pub(super) struct Wait {
    signal: Arc<Signal>,
    slot: Slot,
}

/// Where a wait's waker is kept.
enum Slot {
    /// In the signal's `first`.
    First,
    /// In the signal's list, under `key`.
    Listed { key: u64, waker: Arc<AtomicWaker> },
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.is_raised() {
            return Poll::Ready(());
        }
        // Registered before the second look: a raise in between wakes this waker.
        match &self.slot {
            Slot::First => self.signal.first.register(cx.waker()),
            Slot::Listed { waker, .. } => waker.register(cx.waker()),
        }
        if self.signal.is_raised() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        match &self.slot {
            Slot::First => {
                // (A raise meanwhile wakes a waker nobody waits on any more: harmless.)
                self.signal.first.take();
                self.signal.first_taken.store(false, Ordering::Release);
            }
            Slot::Listed { key, .. } => {
                self.signal.waiters.lock().wakers.remove(key);
            }
        }
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
        // The first wait keeps its waker in the signal; the others in its list.
        let mut first = signal.wait();
        for _ in 0..3 {
            assert!(futures_util::poll!(&mut first).is_pending());
        }
        let other = signal.wait();
        assert_eq!(signal.waiters.lock().wakers.len(), 1);
        drop(other);
        assert!(signal.waiters.lock().wakers.is_empty());
        let listed = signal.wait();
        let waiters = [tokio::spawn(first), tokio::spawn(listed)];
        tokio::task::yield_now().await;
        signal.raise();
        for waiter in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
                .await
                .expect("woken")
                .expect("no panic");
        }
        assert!(signal.waiters.lock().wakers.is_empty());
        assert!(!signal.first_taken.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn the_first_slot_freed_by_a_dropped_wait_serves_the_next_one() {
        let signal = Arc::new(Signal::default());
        drop(signal.wait());
        let mut again = signal.wait();
        assert!(signal.waiters.lock().wakers.is_empty(), "the slot again");
        assert!(futures_util::poll!(&mut again).is_pending());
        let waiter = tokio::spawn(again);
        tokio::task::yield_now().await;
        signal.raise();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("no panic");
    }
}
