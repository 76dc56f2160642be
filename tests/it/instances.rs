//! Instance modes: single, session (per connection) and percall, and one call at a time.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use rmi::{Daemon, Registration};

use crate::support::eventually;

#[rmi::remote]
pub(crate) trait Counter {
    /// Adds one to this instance's count and returns it.
    async fn incr(&self) -> u32;
    /// Which instance answered.
    async fn instance(&self) -> usize;
    /// Holds the call for a moment; returns the most calls seen inside at once.
    async fn overlap(&self) -> usize;
}

#[derive(Default)]
struct Stats {
    made: AtomicUsize,
    dropped: AtomicUsize,
}

struct CounterObject {
    id: usize,
    count: AtomicU32,
    inside: AtomicUsize,
    most: AtomicUsize,
    stats: Arc<Stats>,
}

impl CounterObject {
    fn new(stats: &Arc<Stats>) -> Self {
        let id = stats.made.fetch_add(1, Ordering::SeqCst) + 1;
        CounterObject {
            id,
            count: AtomicU32::new(0),
            inside: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            stats: stats.clone(),
        }
    }
}

impl Drop for CounterObject {
    fn drop(&mut self) {
        self.stats.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl Counter for CounterObject {
    async fn incr(&self) -> u32 {
        self.count.fetch_add(1, Ordering::SeqCst) + 1
    }

    async fn instance(&self) -> usize {
        self.id
    }

    async fn overlap(&self) -> usize {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.inside.fetch_sub(1, Ordering::SeqCst);
        self.most.load(Ordering::SeqCst)
    }
}

async fn serve(reg: Registration) -> (Daemon, rmi::Uri) {
    let daemon = Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon.register_entry(reg).unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    (daemon, uri)
}

#[tokio::test]
async fn session_instances_live_as_long_as_their_connection() {
    let stats = Arc::new(Stats::default());
    let factory_stats = stats.clone();
    let (daemon, uri) = serve(Registration::session(move || {
        CounterServer::new(CounterObject::new(&factory_stats))
    }))
    .await;
    assert_eq!(
        stats.made.load(Ordering::SeqCst),
        0,
        "no instance before the first call"
    );

    let a = CounterProxy::connect(&uri).await.unwrap();
    let b = CounterProxy::connect(&uri).await.unwrap();
    assert_eq!(
        (a.incr().await.unwrap(), a.incr().await.unwrap()),
        (1, 2),
        "one instance per connection"
    );
    assert_eq!(
        b.incr().await.unwrap(),
        1,
        "another connection, another instance"
    );
    assert_ne!(a.instance().await.unwrap(), b.instance().await.unwrap());
    // Clones share the connection, so they share the session instance.
    assert_eq!(a.clone().incr().await.unwrap(), 3);
    assert_eq!(stats.made.load(Ordering::SeqCst), 2);

    // Closing a connection drops its instance, and only its.
    a.proxy().close();
    eventually("session instance dropped", || {
        stats.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(b.incr().await.unwrap(), 2);

    // Shutting the daemon down drops the rest.
    daemon.shutdown();
    eventually("all session instances dropped", || {
        stats.dropped.load(Ordering::SeqCst) == 2
    })
    .await;
}

#[tokio::test]
async fn percall_instances_are_fresh_for_every_call() {
    let stats = Arc::new(Stats::default());
    let factory_stats = stats.clone();
    let (daemon, uri) = serve(Registration::percall(move || {
        CounterServer::new(CounterObject::new(&factory_stats))
    }))
    .await;
    let p = CounterProxy::connect(&uri).await.unwrap();
    for _ in 0..3 {
        assert_eq!(p.incr().await.unwrap(), 1);
    }
    assert_eq!(stats.made.load(Ordering::SeqCst), 3);
    eventually("percall instances dropped", || {
        stats.dropped.load(Ordering::SeqCst) == 3
    })
    .await;
    // The handshake's metadata came from the type, without making an instance.
    assert_eq!(
        p.proxy().metadata().await.unwrap().methods,
        ["incr", "instance", "overlap"]
    );
    daemon.shutdown();
}

#[tokio::test]
async fn a_single_instance_is_shared_by_every_client() {
    let stats = Arc::new(Stats::default());
    let (daemon, uri) = serve(Registration::instance(CounterServer::new(
        CounterObject::new(&stats),
    )))
    .await;
    let a = CounterProxy::connect(&uri).await.unwrap();
    let b = CounterProxy::connect(&uri).await.unwrap();
    assert_eq!(a.incr().await.unwrap(), 1);
    assert_eq!(b.incr().await.unwrap(), 2);
    daemon.shutdown();
}

#[tokio::test]
async fn one_at_a_time_serializes_an_instances_calls() {
    let stats = Arc::new(Stats::default());
    let (daemon, uri) = serve(
        Registration::instance(CounterServer::new(CounterObject::new(&stats))).one_at_a_time(),
    )
    .await;
    let p = CounterProxy::connect(&uri).await.unwrap();
    let most = join_all((0..6).map(|_| p.overlap())).await;
    assert!(
        most.into_iter().all(|m| m.unwrap() == 1),
        "calls overlapped"
    );
    daemon.shutdown();

    // Without the opt-in the same calls run together.
    let (daemon, uri) = serve(Registration::instance(CounterServer::new(
        CounterObject::new(&stats),
    )))
    .await;
    let p = CounterProxy::connect(&uri).await.unwrap();
    let most = join_all((0..6).map(|_| p.overlap())).await;
    assert!(
        most.into_iter().map(|m| m.unwrap()).max().unwrap() > 1,
        "calls never overlapped"
    );
    daemon.shutdown();
}

#[tokio::test]
async fn a_panicking_instance_factory_is_an_error_for_that_caller() {
    let (daemon, uri) = serve(Registration::session(|| -> CounterServer<CounterObject> {
        panic!("no instance today")
    }))
    .await;
    let p = CounterProxy::connect(&uri).await.unwrap();
    let err = p.incr().await.unwrap_err();
    assert!(
        matches!(&err, rmi::Error::Panicked(e) if e.message.contains("no instance today")),
        "{err}"
    );
    // The connection and the daemon carry on.
    assert!(p.proxy().ping().await.is_ok());
    daemon.shutdown();
}
