//! Streamed results: lazy items, early close, linger after a disconnect, a cap per connection.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rmi::{Daemon, Error, RemoteStream, Serializer};

use crate::support::eventually;

#[rmi::remote]
pub(crate) trait Numbers {
    /// 1, 2, … `n`, produced one at a time as they are asked for.
    async fn count(&self, n: u32) -> RemoteStream<u32>;
    /// How many items the server has produced so far.
    async fn produced(&self) -> u32;
}

#[derive(Default)]
struct NumbersObject {
    produced: Arc<AtomicU32>,
}

impl Numbers for NumbersObject {
    async fn count(&self, n: u32) -> RemoteStream<u32> {
        let produced = self.produced.clone();
        RemoteStream::new(futures_util::stream::iter(1..=n).map(move |i| {
            produced.fetch_add(1, Ordering::SeqCst);
            i
        }))
    }

    async fn produced(&self) -> u32 {
        self.produced.load(Ordering::SeqCst)
    }
}

async fn serve(builder: rmi::DaemonBuilder) -> (Daemon, rmi::Uri) {
    let daemon = builder.bind("127.0.0.1:0").await.unwrap();
    let uri = daemon
        .register(NumbersServer::new(NumbersObject::default()))
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    (daemon, uri)
}

#[tokio::test]
async fn items_arrive_lazily_and_the_stream_ends() {
    for serializer in [Serializer::Bincode, Serializer::MsgPack] {
        let (daemon, uri) = serve(Daemon::builder()).await;
        let proxy: NumbersProxy = NumbersProxy::builder(&uri)
            .unwrap()
            .serializer(serializer)
            .connect()
            .await
            .unwrap();
        let mut items = proxy.count(1000).await.unwrap();
        assert_eq!(
            proxy.produced().await.unwrap(),
            0,
            "nothing produced before the first poll"
        );
        let first: Vec<u32> = (&mut items).take(3).map(Result::unwrap).collect().await;
        assert_eq!(first, [1, 2, 3]);
        assert_eq!(
            proxy.produced().await.unwrap(),
            3,
            "only what was asked for was produced"
        );
        drop(items);
        eventually("stream closed on the server", || daemon.open_streams() == 0).await;

        let all: Vec<u32> = proxy
            .count(50)
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(all, (1..=50).collect::<Vec<_>>());
        assert_eq!(daemon.open_streams(), 0, "an exhausted stream is gone");
        daemon.shutdown();
    }
}

#[tokio::test]
async fn a_stream_outlives_its_connection_only_for_the_linger_period() {
    let (daemon, uri) = serve(Daemon::builder().stream_linger(Duration::from_millis(300))).await;
    let proxy = NumbersProxy::connect(&uri).await.unwrap();
    let mut items = proxy.count(10).await.unwrap();
    assert_eq!(items.next().await.unwrap().unwrap(), 1);
    proxy.proxy().close();
    // Still there right after the disconnect (a reconnecting caller could go on)...
    assert_eq!(daemon.open_streams(), 1);
    // ...and gone after the linger period.
    eventually("lingering stream dropped", || daemon.open_streams() == 0).await;
    std::mem::forget(items); // its close_stream would go to a daemon that already dropped it
    daemon.shutdown();
}

#[tokio::test]
async fn a_reconnected_caller_picks_up_a_lingering_stream() {
    let (daemon, uri) = serve(Daemon::builder().stream_linger(Duration::from_secs(30))).await;
    let proxy = NumbersProxy::connect(&uri).await.unwrap();
    let mut items = proxy.count(5).await.unwrap();
    assert_eq!(items.next().await.unwrap().unwrap(), 1);
    proxy.proxy().close();
    // The next poll redials and continues where it was.
    let rest: Vec<u32> = items.map(Result::unwrap).collect().await;
    assert_eq!(rest, [2, 3, 4, 5]);
    daemon.shutdown();
}

#[tokio::test]
async fn open_streams_are_capped_per_connection_and_closed_by_shutdown() {
    let (daemon, uri) = serve(Daemon::builder().max_streams_per_connection(2)).await;
    let proxy = NumbersProxy::connect(&uri).await.unwrap();
    let a = proxy.count(3).await.unwrap();
    let b = proxy.count(3).await.unwrap();
    let err = proxy.count(3).await.unwrap_err();
    assert!(
        matches!(&err, Error::Remote(e) if e.message.contains("max_streams_per_connection = 2")),
        "{err}"
    );
    // Another connection has its own allowance.
    let other = NumbersProxy::connect(&uri).await.unwrap();
    let c = other.count(3).await.unwrap();
    assert_eq!(daemon.open_streams(), 3);
    daemon.shutdown();
    eventually("shutdown closed the streams", || daemon.open_streams() == 0).await;
    drop((a, b, c));
}

#[test]
fn a_blocking_caller_iterates_a_streamed_result() {
    // A daemon on its own runtime thread; this test itself is plain synchronous code.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let (daemon, uri) = serve(Daemon::builder()).await;
            tx.send(uri).unwrap();
            std::future::pending::<()>().await;
            drop(daemon);
        });
    });
    let uri = rx.recv().unwrap();
    let numbers = NumbersBlockingProxy::connect(&uri).unwrap();
    let items: Vec<u32> = numbers.count(5).unwrap().map(Result::unwrap).collect();
    assert_eq!(items, [1, 2, 3, 4, 5]);
    let mut partial = numbers.count(100).unwrap();
    assert_eq!(partial.next().unwrap().unwrap(), 1);
    drop(partial); // closes the stream on the server
    assert_eq!(numbers.produced().unwrap(), 6);
}

#[tokio::test]
async fn lingering_streams_count_against_the_daemon_wide_cap() {
    let (daemon, uri) = serve(Daemon::builder().max_streams(3)).await;
    let first = NumbersProxy::connect(&uri).await.unwrap();
    let a = first.count(5).await.unwrap();
    let b = first.count(5).await.unwrap();
    first.proxy().close(); // its two streams linger
    let second = NumbersProxy::connect(&uri).await.unwrap();
    let c = second.count(5).await.unwrap();
    let err = second.count(5).await.unwrap_err();
    assert!(
        matches!(&err, Error::Remote(e) if e.message.contains("max_streams = 3")),
        "{err}"
    );
    std::mem::forget((a, b)); // their connection is gone; the daemon drops them after the linger
    drop(c);
    daemon.shutdown();
}
