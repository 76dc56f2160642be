//! Batched calls, after Pyro's `batchedcalls` example: several calls to one object go in one
//! request, run in order on the server, and come back together. Execution stops at the first
//! call that fails; the calls after it are reported as not executed.
//!
//! Run with `cargo run --example batch`; it listens on 127.0.0.1 and exits 0. The division by
//! zero panics on the server on purpose (only a failed call stops a batch: an `Err` returned
//! by a method is a value); a panic hook keeps its report to one line on stderr.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// A calculator that counts the calls it runs.
#[rmi::remote]
pub trait Calculator {
    /// `a + b`.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// `a * b`.
    async fn multiply(&self, a: i64, b: i64) -> i64;
    /// `a / b`; panics when `b` is 0, which fails the call (and stops a batch).
    async fn divide(&self, a: i64, b: i64) -> i64;
    /// The square root, or an application error for a negative number. An `Err` here is a
    /// value, not a failed call: it does not stop a batch.
    async fn sqrt(&self, x: f64) -> Result<f64, String>;
    /// How many calls have run.
    async fn calls(&self) -> u32;
}

#[derive(Default)]
struct Calc {
    calls: AtomicU32,
}

impl Calc {
    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        self.count();
        a + b
    }

    async fn multiply(&self, a: i64, b: i64) -> i64 {
        self.count();
        a * b
    }

    async fn divide(&self, a: i64, b: i64) -> i64 {
        self.count();
        a / b
    }

    async fn sqrt(&self, x: f64) -> Result<f64, String> {
        self.count();
        if x < 0.0 {
            return Err(format!("no real square root of {x}"));
        }
        Ok(x.sqrt())
    }

    async fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The daemon turns the panic into an error reply; this only shortens Rust's report of it.
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or(payload.downcast_ref::<String>().map(String::as_str));
        eprintln!(
            "[server] a method panicked: {}",
            message.unwrap_or("(no message)")
        );
    }));
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await?;
    let uri = daemon.register(CalculatorServer::new(Calc::default()))?;
    let server = tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let calc = CalculatorProxy::connect(&uri).await?;

    // Queue calls: each gives a typed slot for its result. Nothing is sent yet.
    let mut batch = calc.batch();
    let sum = batch.add(7, 5);
    let product = batch.multiply(6, 7);
    let root = batch.sqrt(-1.0);
    let quotient = batch.divide(1, 0);
    let never = batch.add(1, 1);
    println!("sending 5 calls in one batch");
    let results = batch.send().await?;

    println!("calls executed: {} of 5", results.executed());
    println!("add(7, 5)      -> {:?}", results.get(&sum));
    println!("multiply(6, 7) -> {:?}", results.get(&product));
    println!(
        "sqrt(-1.0)     -> {:?} (an application error is a value; the batch went on)",
        results.get(&root)
    );
    match results.get(&quotient) {
        Ok(q) => println!("divide(1, 0)   -> {q}"),
        Err(e) => println!("divide(1, 0)   -> failed: {e}"),
    }
    match results.get(&never) {
        Ok(n) => println!("add(1, 1)      -> {n}"),
        Err(e) => println!("add(1, 1)      -> {e}"),
    }
    println!("the server ran {} calls", calc.calls().await?);

    // What batching saves: one round trip instead of many.
    let started = Instant::now();
    for i in 0..200 {
        calc.add(i, i).await?;
    }
    let one_by_one = started.elapsed();
    let started = Instant::now();
    let mut batch = calc.batch();
    let slots: Vec<_> = (0..200).map(|i| batch.add(i, i)).collect();
    let results = batch.send().await?;
    let total: i64 = slots
        .iter()
        .map(|slot| results.get(slot))
        .sum::<Result<i64, _>>()?;
    println!(
        "200 calls one by one: {one_by_one:?}; in one batch: {:?} (sum {total})",
        started.elapsed()
    );

    daemon.shutdown();
    server.await.expect("daemon task")?;
    Ok(())
}
