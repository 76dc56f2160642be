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

/// The blocking runtime, started on first use; an error where it cannot start (a process out
/// of file descriptors or threads), tried again at the next use.
fn runtime() -> Result<&'static tokio::runtime::Runtime, Error> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    // (tokio's signal driver panics, where the rest returns an error, when the descriptors
    // run out as it starts: "failed to create UnixStream".)
    let built = std::panic::catch_unwind(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rmi-blocking")
            .enable_all()
            .build()
    })
    .unwrap_or_else(|_| Err(std::io::Error::other("tokio panicked starting its drivers")))
    .map_err(|e| Error::io("starting rmi's blocking runtime", e))?;
    // Another thread's, started meanwhile, is the one: this one goes, without blocking.
    if let Err(extra) = RUNTIME.set(built) {
        extra.shutdown_background();
    }
    Ok(RUNTIME.get().expect("just set"))
}

/// Runs `future` to completion on the blocking runtime.
///
/// # Panics
///
/// When called from async code, on a thread that drives a runtime's tasks (use the async
/// proxy there): tokio refuses to block it ("Cannot start a runtime from within a runtime"),
/// before the future is polled. A thread that only has a runtime's handle entered, such as a
/// `spawn_blocking` thread, may block. Also when the runtime cannot start (no file
/// descriptors or threads left): [`try_block_on`] makes that an error.
pub fn block_on<F: Future>(future: F) -> F::Output {
    runtime()
        .expect("rmi: could not start the blocking runtime")
        .block_on(future)
}

/// [`block_on`] for a future with rmi's `Result`: a runtime that cannot start (no file
/// descriptors or threads left) is its `Err` ([`Error::Io`]), not a panic. The generated
/// `{Trait}BlockingProxy` calls through this.
pub fn try_block_on<T, F: Future<Output = Result<T, Error>>>(future: F) -> Result<T, Error> {
    runtime()?.block_on(future)
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
        let stream = self.stream.as_mut()?;
        match runtime() {
            Ok(runtime) => runtime.block_on(stream.next()),
            Err(e) => Some(Err(e)),
        }
    }
}

impl<T> Drop for Iter<T> {
    fn drop(&mut self) {
        // Closing an unfinished stream spawns a task: do it with the runtime entered (there is
        // one: the stream came through it).
        let _guard = runtime().ok().map(|runtime| runtime.enter());
        drop(self.stream.take());
    }
}
