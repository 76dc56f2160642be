//! Blocking calls for synchronous programs, as `reqwest::blocking` offers.
//!
//! `#[remote]` generates `{Trait}BlockingProxy`, whose methods block the calling thread. They
//! run on one process-wide tokio runtime (two worker threads, started on first use), which also
//! keeps every blocking proxy's connection served between calls. Do not use them from inside
//! async code: that would block a thread that drives tasks, so tokio panics instead (as with
//! reqwest). Threads meant for blocking work are fine: `tokio::task::spawn_blocking`,
//! `tokio::task::block_in_place`, or any thread of your own.

use std::future::Future;
use std::sync::OnceLock;

use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::stream::ItemStream;
use crate::error::Error;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rmi-blocking")
            .enable_all()
            .build()
            .expect("rmi: could not start the blocking runtime")
    })
}

/// Runs `future` to completion on the blocking runtime.
///
/// # Panics
///
/// When called from async code, on a thread that drives a runtime's tasks (use the async
/// proxy there): tokio refuses to block it ("Cannot start a runtime from within a runtime"),
/// before the future is polled. A thread that only has a runtime's handle entered, such as a
/// `spawn_blocking` thread, may block.
pub fn block_on<F: Future>(future: F) -> F::Output {
    runtime().block_on(future)
}

/// A streamed result as a blocking iterator.
#[derive(Debug)]
pub struct Iter<T> {
    /// Always `Some` until dropped.
    stream: Option<ItemStream<T>>,
}

impl<T> Iter<T> {
    /// Wraps a stream.
    pub fn new(stream: ItemStream<T>) -> Self {
        Iter {
            stream: Some(stream),
        }
    }
}

impl<T: DeserializeOwned + Send + 'static> Iterator for Iter<T> {
    type Item = Result<T, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        block_on(self.stream.as_mut()?.next())
    }
}

impl<T> Drop for Iter<T> {
    fn drop(&mut self) {
        // Closing an unfinished stream spawns a task: do it with the runtime entered.
        let _guard = runtime().enter();
        drop(self.stream.take());
    }
}
