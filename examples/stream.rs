//! Streamed results, like Pyro's iterator/generator results: a method returns
//! `RemoteStream<u64>`, and the caller gets an `ItemStream<u64>` that fetches one item per
//! poll. Nothing is produced before it is asked for, and dropping the stream early closes it
//! on the server.
//!
//! Run with `cargo run --example stream`; it listens on 127.0.0.1 and exits 0.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use rmi::RemoteStream;

/// Fibonacci numbers, streamed.
#[rmi::remote]
pub trait Fibonacci {
    /// The Fibonacci numbers 0, 1, 1, 2, 3, …, made one at a time as the caller asks, until
    /// the next sum would overflow a `u64` (93 numbers).
    async fn numbers(&self) -> RemoteStream<u64>;
    /// How many numbers the server has made so far.
    async fn produced(&self) -> u64;
}

#[derive(Default)]
struct FibonacciMaker {
    produced: Arc<AtomicU64>,
}

impl Fibonacci for FibonacciMaker {
    async fn numbers(&self) -> RemoteStream<u64> {
        let produced = self.produced.clone();
        // A lazy iterator: each `next` runs when the caller asks for the next item.
        let pairs = std::iter::successors(Some((0u64, 1u64)), |&(a, b)| {
            a.checked_add(b).map(|c| (b, c))
        });
        RemoteStream::iter(pairs.map(move |(a, _)| {
            produced.fetch_add(1, Ordering::SeqCst);
            a
        }))
    }

    async fn produced(&self) -> u64 {
        self.produced.load(Ordering::SeqCst)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await?;
    let uri = daemon.register(FibonacciServer::new(FibonacciMaker::default()))?;
    let server = tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let fib = FibonacciProxy::connect(&uri).await?;

    // The call returns a stream at once; the server has made nothing yet.
    let mut numbers = fib.numbers().await?;
    println!(
        "stream {} opened; numbers made so far: {}",
        numbers.id(),
        fib.produced().await?
    );
    println!("open streams in the daemon: {}", daemon.open_streams());

    // Pull items one at a time, and stop early.
    let mut first = Vec::new();
    while let Some(item) = numbers.next().await {
        let n = item?;
        first.push(n);
        if n > 50 {
            break;
        }
    }
    println!("first numbers, until one passed 50: {first:?}");
    println!(
        "numbers made so far: {} (only what was asked for)",
        fib.produced().await?
    );

    // Dropping the unfinished stream tells the daemon to close it (a oneway call).
    drop(numbers);
    for _ in 0..200 {
        if daemon.open_streams() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "dropped the stream; open streams in the daemon: {}",
        daemon.open_streams()
    );

    // A stream read to the end closes by itself.
    let all: Vec<u64> = fib.numbers().await?.try_collect().await?;
    println!(
        "a full stream: {} numbers, the last {}",
        all.len(),
        all.last().copied().unwrap_or_default()
    );
    println!("open streams in the daemon: {}", daemon.open_streams());

    daemon.shutdown();
    server.await.expect("daemon task")?;
    Ok(())
}
