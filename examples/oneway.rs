//! Oneway calls, after Pyro's `oneway` example: the server starts a job that takes a while, and
//! the client goes on at once instead of waiting for a reply that will never come.
//!
//! A method marked `#[rmi(oneway)]` returns `()`; its proxy method returns as soon as the
//! request is written. The object's metadata lists it as oneway, as Pyro's does.
//!
//! Run with `cargo run --example oneway`; it listens on 127.0.0.1 and exits 0.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A server that does slow work in the background.
#[rmi::remote]
pub trait Worker {
    /// Starts a job of `millis` milliseconds (oneway: the caller does not wait for it).
    #[rmi(oneway)]
    async fn start_work(&self, millis: u64);
    /// How many jobs have finished.
    async fn finished(&self) -> u32;
}

#[derive(Default)]
struct SlowWorker {
    finished: AtomicU32,
}

impl Worker for SlowWorker {
    async fn start_work(&self, millis: u64) {
        println!("server: starting a job of {millis} ms");
        tokio::time::sleep(Duration::from_millis(millis)).await;
        self.finished.fetch_add(1, Ordering::SeqCst);
        println!("server: job done");
    }

    async fn finished(&self) -> u32 {
        self.finished.load(Ordering::SeqCst)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await?;
    let uri = daemon.register(WorkerServer::new(SlowWorker::default()))?;
    let server = tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let worker = WorkerProxy::connect(&uri).await?;

    // The handshake brought the object's metadata: methods, and which of them are oneway.
    let meta = worker.proxy().metadata().await?;
    println!("methods: {:?}, oneway: {:?}", meta.methods, meta.oneway);

    let started = Instant::now();
    worker.start_work(1_500).await?;
    println!(
        "client: start_work returned after {:?}; the job runs on the server",
        started.elapsed()
    );

    // The same connection keeps serving other calls while the job runs.
    loop {
        let finished = worker.finished().await?;
        println!(
            "client: doing other things at {:>4} ms; jobs finished: {finished}",
            started.elapsed().as_millis()
        );
        if finished == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }

    daemon.shutdown();
    server.await.expect("daemon task")?;
    Ok(())
}
