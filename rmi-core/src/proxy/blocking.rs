//! Blocking calls for synchronous programs, as `reqwest::blocking` offers.
//!
//! `#[remote]` generates `{Trait}BlockingProxy`, whose methods block the calling thread. They
//! run on one process-wide tokio runtime (two worker threads, started on first use), which also
//! keeps every blocking proxy's connection served between calls. Do not use them from inside
//! an async runtime: that would block one of its threads, so it panics instead, as reqwest does.

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
/// When called from inside an async runtime (use the async proxy there).
pub fn block_on<F: Future>(future: F) -> F::Output {
    if tokio::runtime::Handle::try_current().is_ok() {
        panic!("rmi::blocking called from inside an async runtime; use the async proxy instead");
    }
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
