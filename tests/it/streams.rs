//! Streamed results: lazy items, early close, linger after a disconnect, a cap per connection.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rmi::{Daemon, Error, RemoteStream, Serializer};

use crate::support::eventually;

#[rmi::remote]
pub(crate) trait Numbers {
    /// 1, 2, … `n`, produced one at a time as they are asked for.
    async fn count(&self, n: u32) -> RemoteStream<u32>;
    /// How many items the server has produced so far.
    async fn produced(&self) -> u32;
    /// 1, 2, …, panicking when asked for item `at`.
    async fn panics_at(&self, at: u32) -> RemoteStream<u32>;
    /// Three items of `sizes[i]` bytes each.
    async fn sized(&self, sizes: Vec<u32>) -> RemoteStream<Vec<u8>>;
    /// Items of `sizes[i]` bytes, each setting a reply annotation of 1 KiB as it is produced.
    async fn annotated(&self, sizes: Vec<u32>) -> RemoteStream<Vec<u8>>;
    /// What the test sends on its channel, read with a blocking `recv` (`RemoteStream::blocking`).
    async fn waiting(&self) -> RemoteStream<u32>;
    /// Items taken from the shared work queue (`RemoteStream::blocking`), counted as taken.
    async fn taking(&self) -> RemoteStream<u32>;
}

#[derive(Default)]
pub(crate) struct NumbersObject {
    /// The receiving end `waiting` streams from, once.
    waiting: std::sync::Mutex<Option<std::sync::mpsc::Receiver<u32>>>,
    /// The work queue `taking` streams from, and how many items were taken off it.
    work: Arc<std::sync::Mutex<Option<std::sync::mpsc::Receiver<u32>>>>,
    taken: Arc<AtomicU32>,
    produced: Arc<AtomicU32>,
    /// Counts the instances dropped (session instances go with their connection).
    dropped: Option<Arc<AtomicUsize>>,
}

impl Drop for NumbersObject {
    fn drop(&mut self) {
        if let Some(dropped) = &self.dropped {
            dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Numbers for NumbersObject {
    async fn panics_at(&self, at: u32) -> RemoteStream<u32> {
        RemoteStream::new(futures_util::stream::iter(1..).map(move |i| {
            assert!(i != at, "item {i} is cursed");
            i
        }))
    }

    async fn sized(&self, sizes: Vec<u32>) -> RemoteStream<Vec<u8>> {
        RemoteStream::iter(sizes.into_iter().map(|n| vec![1u8; n as usize]))
    }

    async fn taking(&self) -> RemoteStream<u32> {
        let (work, taken) = (self.work.clone(), self.taken.clone());
        RemoteStream::blocking(std::iter::from_fn(move || {
            let item = work.lock().unwrap().as_ref()?.recv().ok()?;
            taken.fetch_add(1, Ordering::SeqCst);
            Some(item)
        }))
    }

    async fn waiting(&self) -> RemoteStream<u32> {
        let received = self
            .waiting
            .lock()
            .unwrap()
            .take()
            .expect("one waiting stream");
        RemoteStream::blocking(received)
    }

    async fn annotated(&self, sizes: Vec<u32>) -> RemoteStream<Vec<u8>> {
        RemoteStream::iter(sizes.into_iter().map(|n| {
            let ctx = rmi::CallContext::current().expect("produced within the read");
            ctx.set_response_annotation(*b"NOTE", vec![b'n'; 1024]);
            vec![1u8; n as usize]
        }))
    }

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
    serve_object(builder, NumbersObject::default()).await
}

/// [`serve`] with `object`.
async fn serve_object(builder: rmi::DaemonBuilder, object: NumbersObject) -> (Daemon, rmi::Uri) {
    let daemon = builder.bind("127.0.0.1:0").await.unwrap();
    let uri = daemon.register(NumbersServer::new(object)).unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    (daemon, uri)
}

/// [`serve`] with a session instance per connection; the counter tells how many were dropped.
/// The daemon drops a connection's session instance only after that connection's streams
/// have started to linger, so a dropped instance shows the daemon has seen the disconnect.
async fn serve_sessions(builder: rmi::DaemonBuilder) -> (Daemon, rmi::Uri, Arc<AtomicUsize>) {
    let daemon = builder.bind("127.0.0.1:0").await.unwrap();
    let dropped = Arc::new(AtomicUsize::new(0));
    let uri = daemon
        .register_entry(rmi::Registration::session({
            let dropped = dropped.clone();
            move || {
                NumbersServer::new(NumbersObject {
                    waiting: std::sync::Mutex::default(),
                    work: Arc::default(),
                    taken: Arc::default(),
                    produced: Arc::default(),
                    dropped: Some(dropped.clone()),
                })
            }
        }))
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    (daemon, uri, dropped)
}

/// The open streams `Pyro.Daemon` reports (its `info` line), over the wire.
async fn streams_reported(daemon_object: &rmi::Proxy) -> usize {
    let info: String = daemon_object.call("info", &[(); 0]).await.unwrap();
    info.strip_suffix(" open streams")
        .and_then(|rest| rest.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no stream count in Pyro.Daemon's info: {info:?}"))
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
        // Its id in the daemon: the one Pyro's get_next_stream_item takes, its own.
        let other = proxy.count(1).await.unwrap();
        assert!(!items.id().is_empty() && items.id() != other.id());
        drop(other);
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
    // Far from 0 and from the 30 s default, so neither can pass for it.
    const LINGER: Duration = Duration::from_millis(2_000);
    let (daemon, uri, dropped) = serve_sessions(Daemon::builder().stream_linger(LINGER)).await;
    let daemon_object = rmi::Proxy::builder(daemon.uri_for("Pyro.Daemon"))
        .connect::<rmi::Proxy>()
        .await
        .unwrap();
    let proxy = NumbersProxy::connect(&uri).await.unwrap();
    let mut items = proxy.count(10).await.unwrap();
    assert_eq!(items.next().await.unwrap().unwrap(), 1);
    assert_eq!(streams_reported(&daemon_object).await, 1);
    let closed = Instant::now();
    proxy.proxy().close();
    eventually("the daemon saw the disconnect", || {
        dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    let seen = Instant::now();
    // Still there a while after the daemon saw the disconnect (a zero linger would have
    // dropped it at once), so a reconnecting caller could go on...
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lingering = streams_reported(&daemon_object).await;
    let checked_after = closed.elapsed();
    assert!(
        checked_after < LINGER,
        "cannot observe the linger: checking took {checked_after:?}, longer than the linger"
    );
    assert_eq!(
        lingering, 1,
        "the stream was dropped {checked_after:?} after its connection closed, before the {LINGER:?} linger"
    );
    assert_eq!(daemon.open_streams(), 1);
    // ...and gone after the linger period: not before it, and long before the 30 s default.
    loop {
        if streams_reported(&daemon_object).await == 0 {
            break;
        }
        assert!(
            seen.elapsed() < LINGER + Duration::from_secs(2),
            "the stream outlived its {LINGER:?} linger by 2 s after the daemon saw its \
             connection close"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gone_after = closed.elapsed();
    println!(
        "lingering stream dropped {gone_after:?} after its connection closed (linger {LINGER:?})"
    );
    assert!(
        gone_after >= LINGER,
        "dropped after {gone_after:?}, before the linger"
    );
    assert_eq!(daemon.open_streams(), 0);
    // Reading on is an error, not a quiet end: the caller learns it lost items 2 to 10.
    let after = items.next().await;
    assert!(
        matches!(&after, Some(Err(e)) if e.to_string().contains("terminated")),
        "{after:?}"
    );
    std::mem::forget(items); // its close_stream would go to a daemon that already dropped it
    daemon.shutdown();
}

#[tokio::test]
async fn a_reconnected_caller_picks_up_a_lingering_stream() {
    let (daemon, uri, dropped) =
        serve_sessions(Daemon::builder().stream_linger(Duration::from_secs(20))).await;
    let proxy = NumbersProxy::connect(&uri).await.unwrap();
    let mut items = proxy.count(5).await.unwrap();
    assert_eq!(items.next().await.unwrap().unwrap(), 1);
    proxy.proxy().close();
    // The daemon has seen the disconnect, and a zero linger would have dropped the stream by
    // now: the next poll can only go on if the stream lingered.
    eventually("the daemon saw the disconnect", || {
        dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(daemon.open_streams(), 1, "the stream did not linger");
    // The next poll redials and continues where it was.
    let rest: Vec<u32> = items.map(Result::unwrap).collect().await;
    assert_eq!(rest, [2, 3, 4, 5]);
    assert_eq!(daemon.open_streams(), 0, "an exhausted stream is gone");
    daemon.shutdown();
}

/// A streaming method called as a plain one (`call`, or a trait written to match a Python
/// class whose method returns a generator) is answered "result of call is an iterator", and
/// the stream the daemon opened for it is closed by the proxy's next call. (It stayed open for
/// the connection's life: past `max_streams_per_connection`, every stream was refused.)
#[tokio::test]
async fn a_stream_returned_to_a_plain_call_is_closed() {
    let (daemon, uri) = serve(Daemon::builder().max_streams_per_connection(4)).await;
    let proxy = NumbersProxy::connect(&uri).await.unwrap();
    for i in 0..10 {
        let err = proxy
            .proxy()
            .call::<_, Vec<u32>>("count", &(3u32,))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("is an iterator"),
            "call {i}: {err}"
        );
    }
    let items: Vec<u32> = proxy
        .count(3)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items, [1, 2, 3]);
    eventually("the unread streams closed", || daemon.open_streams() == 0).await;
}

/// A stream dropped unfinished, or opened for a plain call, is closed ahead of the proxy's next
/// call: a streaming call at `max_streams_per_connection` finds its place free. (The close went
/// out after the next call's request, which the daemon refused with `rmi.TooManyStreams`:
/// helper-124 #1. Pyro's iterator sends its close before anything else.)
///
/// On a multi-thread runtime, where the dropped stream's close is written by a task on another
/// worker (before, the next call could go out ahead of it: helper-129 #4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_let_go_is_closed_ahead_of_the_next_call() {
    let (daemon, uri) = serve(Daemon::builder().max_streams_per_connection(1)).await;
    let proxy = NumbersProxy::connect(&uri).await.unwrap();
    for round in 0..50 {
        let mut items = proxy
            .count(3)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(items.next().await.unwrap().unwrap(), 1);
        drop(items);
    }
    for round in 0..3 {
        let err = proxy
            .proxy()
            .call::<_, Vec<u32>>("count", &(3u32,))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("is an iterator"), "{err}");
        let items: Vec<u32> = proxy
            .count(2)
            .await
            .unwrap_or_else(|e| panic!("plain round {round}: {e}"))
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(items, [1, 2]);
    }
    eventually("every stream closed", || daemon.open_streams() == 0).await;
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
            tx.send((daemon.clone(), uri)).unwrap();
            std::future::pending::<()>().await;
            drop(daemon);
        });
    });
    let (daemon, uri) = rx.recv().unwrap();
    let numbers = NumbersBlockingProxy::connect(&uri).unwrap();
    let items: Vec<u32> = numbers.count(5).unwrap().map(Result::unwrap).collect();
    assert_eq!(items, [1, 2, 3, 4, 5]);
    let mut partial = numbers.count(100).unwrap();
    assert_eq!(partial.next().unwrap().unwrap(), 1);
    drop(partial); // closes the stream on the server
    assert_eq!(numbers.produced().unwrap(), 6);
    // The close went out (ahead of that call at the latest): the daemon holds no stream.
    let asked = std::time::Instant::now();
    while daemon.open_streams() != 0 {
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "the dropped iterator's stream is still open on the daemon"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
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

/// On the wire, a streamed result is Pyro's: an exception reply flagged
/// `FLAGS_EXCEPTION | FLAGS_ITEMSTREAMRESULT` with the stream id in `STRM`, which a Python
/// client needs to iterate; then `get_next_stream_item` on `Pyro.Daemon` yields the items.
#[tokio::test]
async fn a_streamed_result_is_flagged_and_annotated_as_pyro_expects() {
    use rmi::protocol::codec::{encode_invoke, DecodeLimits};
    use rmi::protocol::frame::{
        self, Message, MessageType, FLAGS_EXCEPTION, FLAGS_ITEMSTREAMRESULT,
    };
    use rmi::protocol::names::STREAM_ANNOTATION;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (daemon, uri) = serve(Daemon::builder()).await;
    let object = uri.object().unwrap();
    let mut s = crate::support::dial(&uri).await;
    crate::support::connect_handshake(&mut s, object).await;
    async fn call(
        s: &mut tokio::net::TcpStream,
        object: &str,
        method: &str,
        args: &impl serde::Serialize,
        seq: u16,
    ) -> Message {
        let payload = encode_invoke(Serializer::Bincode, object, method, args).unwrap();
        let msg = Message::new(
            MessageType::Invoke,
            Serializer::Bincode.id(),
            0,
            seq,
            payload,
        );
        s.write_all(&msg.to_bytes()).await.unwrap();
        let mut buf = bytes::BytesMut::new();
        loop {
            if let Ok(header) = frame::check(&buf, usize::MAX >> 1) {
                return Message::parse(&mut buf, &header).unwrap();
            }
            let n = tokio::time::timeout(Duration::from_secs(10), s.read_buf(&mut buf))
                .await
                .expect("a reply within 10 s")
                .unwrap();
            assert_ne!(n, 0, "the daemon closed the connection");
        }
    }
    let reply = call(&mut s, object, "count", &(2u32,), 1).await;
    assert_eq!((reply.msg_type, reply.seq), (MessageType::Result, 1));
    assert_eq!(
        reply.flags & (FLAGS_EXCEPTION | FLAGS_ITEMSTREAMRESULT),
        FLAGS_EXCEPTION | FLAGS_ITEMSTREAMRESULT,
        "flags {:#x}",
        reply.flags
    );
    let id = reply
        .annotation(&STREAM_ANNOTATION)
        .expect("the stream id in STRM")
        .clone();
    let id = std::str::from_utf8(&id).unwrap().to_owned();
    for (seq, expected) in [(2u16, 1u32), (3, 2)] {
        let item = call(
            &mut s,
            "Pyro.Daemon",
            "get_next_stream_item",
            &(id.clone(),),
            seq,
        )
        .await;
        assert_eq!(item.flags & FLAGS_EXCEPTION, 0, "item {expected}");
        let value: u32 = Serializer::Bincode
            .decode(&item.payload, &DecodeLimits::default())
            .unwrap();
        assert_eq!(value, expected);
    }
    // The end: Pyro's StopIteration, as an exception.
    let end = call(&mut s, "Pyro.Daemon", "get_next_stream_item", &(id,), 4).await;
    assert_ne!(end.flags & FLAGS_EXCEPTION, 0, "the end is an exception");
    let end = rmi::protocol::codec::decode_error(
        Serializer::Bincode,
        &end.payload,
        &DecodeLimits::default(),
    )
    .unwrap();
    assert_eq!(end.type_name, "builtins.StopIteration", "{end:?}");
    daemon.shutdown();
}

/// A library whose methods return a one-argument `Result` alias, as `io::Result<T>` and
/// `anyhow::Result<T>` are.
mod library {
    use rmi::RemoteStream;

    /// The alias: the macro knows a `Result` by its name.
    pub(crate) type Result<T> = std::result::Result<T, rmi::RemoteError>;

    #[rmi::remote]
    pub(crate) trait Library {
        /// The lines of the book called `title`; an unknown title raises before the first line.
        #[rmi(raises)]
        async fn lines(&self, title: String) -> Result<RemoteStream<String>>;
        /// How many lines the book has; an unknown title raises.
        #[rmi(raises)]
        async fn length(&self, title: String) -> Result<u32>;
    }

    pub(crate) struct Shelf;

    impl Shelf {
        /// The book's lines, or the `KeyError` to raise.
        fn book(title: &str) -> std::result::Result<Vec<String>, Box<rmi::RemoteError>> {
            let haiku = [
                "an old silent pond",
                "a frog jumps in",
                "splash! silence again",
            ];
            if title != "haiku" {
                return Err(Box::new(rmi::RemoteError::new(
                    rmi::RemoteErrorKind::Other,
                    "builtins.KeyError",
                    format!("no book called {title:?}"),
                )));
            }
            Ok(haiku.map(String::from).to_vec())
        }
    }

    impl Library for Shelf {
        async fn lines(&self, title: String) -> Result<RemoteStream<String>> {
            let lines = Self::book(&title).map_err(|e| *e)?;
            Ok(RemoteStream::new(futures_util::stream::iter(lines)))
        }

        async fn length(&self, title: String) -> Result<u32> {
            Ok(Self::book(&title).map_err(|e| *e)?.len() as u32)
        }
    }
}

/// `#[rmi(raises)]` on a method returning `Result<RemoteStream<T>, E>`: an `Ok` streams, an
/// `Err` is the call's error before any item, through the async and the blocking proxy alike.
#[tokio::test]
async fn a_stream_that_can_fail_raises_its_error_before_the_first_item() {
    let daemon = Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon
        .register(library::LibraryServer::new(library::Shelf))
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let library = library::LibraryProxy::connect(&uri).await.unwrap();
    let lines: Vec<String> = library
        .lines("haiku".into())
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2], "splash! silence again");
    assert_eq!(library.length("haiku".into()).await.unwrap(), 3);
    for err in [
        library.lines("missing".into()).await.err(),
        library.length("missing".into()).await.err(),
    ] {
        match err {
            Some(Error::Remote(e)) => {
                assert_eq!(e.type_name, "builtins.KeyError");
                assert_eq!(e.message, "no book called \"missing\"");
            }
            other => panic!("expected the raised KeyError, got {other:?}"),
        }
    }
    // The blocking proxy on a thread outside the runtime, which keeps serving meanwhile.
    let (sent, blocking) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let library = library::LibraryBlockingProxy::connect(&uri).unwrap();
        let lines: Vec<String> = library
            .lines("haiku".into())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let _ = sent.send((lines, library.lines("missing".into()).err()));
    });
    let (lines, err) = blocking.await.unwrap();
    assert_eq!(lines.len(), 3);
    assert!(matches!(err, Some(Error::Remote(e)) if e.type_name == "builtins.KeyError"));
    daemon.shutdown();
}

/// A oneway call to a method that returns a stream (a Python client may mark any call
/// oneway): its stream id goes in no reply, so nobody could read or close it. It is not
/// opened, and takes none of the connection's streams.
#[tokio::test]
async fn a_oneway_call_to_a_streaming_method_opens_no_stream() {
    let (daemon, uri) =
        crate::support::serve_lab(Daemon::builder().max_streams_per_connection(4)).await;
    let lab = crate::support::LabProxy::connect(&uri).await.unwrap();
    for _ in 0..10 {
        lab.proxy()
            .call_oneway("slow_numbers", &(0u64, 3u32))
            .await
            .unwrap();
    }
    for _ in 0..500 {
        if lab.calls().await.unwrap() >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lab.calls().await.unwrap(), 10, "the oneway calls ran");
    assert_eq!(daemon.open_streams(), 0);
    let items: Vec<u32> = lab
        .slow_numbers(0, 3)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items, [0, 1, 2]);
    daemon.shutdown();
}

#[rmi::remote]
pub(crate) trait Cursors {
    /// An endless stream whose `Drop` asks the daemon how many streams it has open (as a
    /// cursor's cleanup might look at its daemon).
    async fn cursor(&self) -> RemoteStream<u32>;
    /// How many times a cursor was dropped.
    async fn dropped(&self) -> usize;
}

#[derive(Default)]
struct CursorsObject {
    dropped: Arc<AtomicUsize>,
}

/// An endless iterator that uses its daemon when it is dropped.
struct Cursor {
    daemon: Daemon,
    dropped: Arc<AtomicUsize>,
}

impl Iterator for Cursor {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        Some(1)
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        let _ = self.daemon.open_streams();
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl Cursors for CursorsObject {
    async fn cursor(&self) -> RemoteStream<u32> {
        let daemon = rmi::context::current()
            .expect("call context")
            .daemon()
            .clone();
        RemoteStream::iter(Cursor {
            daemon,
            dropped: self.dropped.clone(),
        })
    }

    async fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

/// A stream's `Drop` is user code: it runs after the daemon lets go of its stream table, so
/// one that asks the daemon about its streams (or is slow) holds up nobody. Closed by its
/// caller, swept after its connection lingered, and dropped at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streams_drop_may_use_the_daemon() {
    let daemon = Daemon::builder()
        .stream_linger(Duration::from_millis(50))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let uri = daemon
        .register(CursorsServer::new(CursorsObject::default()))
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let proxy = CursorsProxy::connect(&uri).await.unwrap();
    // Closed by its caller.
    let mut items = proxy.cursor().await.unwrap();
    assert_eq!(items.next().await.unwrap().unwrap(), 1);
    drop(items);
    let d = daemon.clone();
    tokio::time::timeout(
        Duration::from_secs(10),
        eventually("the closed cursor dropped", move || d.open_streams() == 0),
    )
    .await
    .expect("close: the daemon hung (a stream dropped under its lock)");
    assert_eq!(proxy.dropped().await.unwrap(), 1);
    // Swept after its connection went away and the linger passed.
    let other = CursorsProxy::connect(&uri).await.unwrap();
    let items = other.cursor().await.unwrap();
    std::mem::forget(items);
    other.proxy().close();
    let d = daemon.clone();
    tokio::time::timeout(
        Duration::from_secs(10),
        eventually("the lingering cursor swept", move || d.open_streams() == 0),
    )
    .await
    .expect("sweep: the daemon hung (a stream dropped under its lock)");
    let seen = tokio::time::timeout(Duration::from_secs(10), proxy.dropped())
        .await
        .expect("the daemon hung")
        .unwrap();
    assert_eq!(seen, 2);
    daemon.shutdown();
}

#[rmi::remote]
pub(crate) trait LateFirst {
    /// 0 after 400 ms, then 1, 2, 3 at once.
    async fn late_first(&self) -> RemoteStream<u32>;
}

struct LateFirstObject;

impl LateFirst for LateFirstObject {
    async fn late_first(&self) -> RemoteStream<u32> {
        RemoteStream::new(futures_util::stream::iter(0..4u32).then(|i| async move {
            if i == 0 {
                tokio::time::sleep(Duration::from_millis(3_000)).await;
            }
            i
        }))
    }
}

/// Asking for a stream's next item is not safe to repeat, even through a proxy whose calls
/// are idempotent or retried: a retry after a timeout would be answered with the item after
/// the one the daemon was still producing, and that one would be lost without a word.
#[tokio::test]
async fn a_streams_items_are_never_asked_for_twice_by_a_retrying_proxy() {
    let daemon = Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon
        .register(LateFirstServer::new(LateFirstObject))
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let proxy = LateFirstProxy::connect(&uri).await.unwrap();
    for retrying in [
        // A second: the stream's opening must come within it, and the first item not.
        proxy
            .proxy()
            .with_timeout(Duration::from_secs(1))
            .idempotent(),
        proxy
            .proxy()
            .with_timeout(Duration::from_secs(1))
            .with_retries(3),
    ] {
        let mut items = retrying
            .call_stream::<_, u32>("late_first", &())
            .await
            .unwrap();
        let first = items.next().await.unwrap();
        assert!(
            matches!(first, Err(Error::Timeout(_))),
            "the first item timed out, and was not asked for again: {first:?}"
        );
    }
    daemon.shutdown();
}

/// `call_stream` on a method that returns a plain value says so, in every serializer (bincode
/// cannot decode a value without its type, and said that instead); a remote error stays that
/// error.
#[tokio::test]
async fn call_stream_on_a_method_that_does_not_stream_says_so() {
    let (daemon, lab, _) = crate::support::start_daemon().await;
    for serializer in [
        Serializer::Bincode,
        Serializer::MsgPack,
        Serializer::Serpent,
    ] {
        let proxy = rmi::Proxy::builder(lab.clone())
            .serializer(serializer)
            .build();
        let err = proxy
            .call_stream::<_, u32>("echo", &(1u32, 2u32, "x"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Protocol(m) if m.contains("did not return a stream")),
            "{serializer:?}: {err}"
        );
        let err = proxy
            .call_stream::<_, u32>("explode", &("boom",))
            .await
            .unwrap_err();
        assert!(matches!(&err, Error::Panicked(_)), "{serializer:?}: {err}");
    }
    daemon.shutdown();
}

#[rmi::remote]
pub(crate) trait Quiet {
    /// A stream that never yields; its `Drop` counts.
    async fn quiet(&self) -> RemoteStream<u32>;
}

struct QuietObject(Arc<AtomicUsize>);

/// Never ready; counts its drop.
struct Never(Arc<AtomicUsize>);

impl futures_util::Stream for Never {
    type Item = u32;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<u32>> {
        std::task::Poll::Pending
    }
}

impl Drop for Never {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Quiet for QuietObject {
    async fn quiet(&self) -> RemoteStream<u32> {
        RemoteStream::new(Never(self.0.clone()))
    }
}

/// A daemon serving [`Quiet`] with a grace period of a minute; the counter counts the quiet
/// streams dropped, the handle ends when `serve` does.
async fn serve_quiet() -> (
    Daemon,
    QuietProxy,
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let daemon = Daemon::builder()
        .grace_period(Duration::from_secs(60))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let dropped = Arc::new(AtomicUsize::new(0));
    let uri = daemon
        .register(QuietServer::new(QuietObject(dropped.clone())))
        .unwrap();
    let served = tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await.unwrap() }
    });
    let proxy = QuietProxy::connect(&uri).await.unwrap();
    (daemon, proxy, dropped, served)
}

/// A caller that gives up on a stream while a read of it waits (its `ItemStream` dropped:
/// `close_stream` goes out): the daemon ends that read and drops the stream at once. (Before,
/// the waiting read held the stream, its task and an in-flight slot of the connection until an
/// item came, which may be never.)
#[tokio::test]
async fn closing_a_stream_ends_the_read_waiting_on_it() {
    let (daemon, proxy, dropped, _served) = serve_quiet().await;
    let mut quiet = proxy.quiet().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), quiet.next())
            .await
            .is_err(),
        "nothing comes"
    );
    drop(quiet);
    eventually("the daemon dropped the stream", || {
        dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(daemon.open_streams(), 0);
    daemon.shutdown();
}

/// Shutdown ends open streams first: a read waiting for an item is answered "item stream
/// terminated" and the daemon stops at once, not after its grace period (a minute here).
#[tokio::test]
async fn shutdown_ends_a_read_waiting_on_a_stream_instead_of_waiting_out_the_grace_period() {
    let (daemon, proxy, dropped, served) = serve_quiet().await;
    let mut quiet = proxy.quiet().await.unwrap();
    let waiting = tokio::spawn(async move { quiet.next().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    daemon.shutdown();
    tokio::time::timeout(Duration::from_secs(20), served)
        .await
        .expect("the daemon waited out its grace period")
        .unwrap();
    let read = waiting.await.unwrap();
    assert!(
        matches!(&read, Some(Err(Error::Remote(e))) if e.message.contains("item stream terminated")),
        "{read:?}"
    );
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

/// `stream_lifetime` (Pyro's `ITER_STREAM_LIFETIME`): a stream left unread for its lifetime is
/// dropped though its connection lives on; one read more often lives on, and a read that waits
/// longer than the lifetime for its item is not cut short.
#[tokio::test]
async fn a_stream_unread_for_its_lifetime_is_dropped_on_a_live_connection() {
    const LIFETIME: Duration = Duration::from_secs(1);
    let (daemon, uri) =
        crate::support::serve_lab(Daemon::builder().stream_lifetime(LIFETIME)).await;
    let lab = crate::support::LabProxy::connect(&uri).await.unwrap();
    let mut forgotten = lab.slow_numbers(0, 10).await.unwrap();
    let mut read = lab.slow_numbers(0, 100).await.unwrap();
    let mut slow = lab.ticking(2_500, 1).await.unwrap();
    let opened = std::time::Instant::now();
    assert_eq!(lab.open_streams().await.unwrap(), 3);
    let slow_reads = tokio::spawn(async move {
        let first = slow.next().await;
        (first, slow.next().await)
    });
    for i in 0..25 {
        assert_eq!(read.next().await.unwrap().unwrap(), i, "read often: kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
        if i == 14 {
            // About 1.5 s in: half a lifetime past the unread one's, half one before twice it.
            let open = lab.open_streams().await.unwrap();
            assert_eq!(
                open,
                2,
                "{:?} after they opened, only the unread stream is gone",
                opened.elapsed()
            );
        }
    }
    let (first, end) = slow_reads.await.unwrap();
    assert_eq!(
        first.unwrap().unwrap(),
        0,
        "a read waiting 2.5 s for its item, longer than the lifetime, is not cut"
    );
    assert!(end.is_none(), "and its stream is still there: {end:?}");
    let after = forgotten.next().await;
    assert!(
        matches!(&after, Some(Err(Error::Remote(e))) if e.message.contains("item stream terminated")),
        "unread for 2.5 s: dropped, {after:?}"
    );
    daemon.shutdown();
}

/// A stream given up on whose close cannot go out at once (every slot of the connection taken)
/// is closed from a task once a slot frees: the call that found it does not wait for it past
/// `CLOSE_AHEAD`, and the close is not dropped when that call's timeout passes. (Before, the
/// close took the call's timeout, then the call took it again; and a close that timed out was
/// dropped, its stream left open for the connection's life: helper-127 #2.)
#[tokio::test]
async fn a_close_that_waits_for_a_slot_is_not_lost() {
    close_waits_for_a_slot(false).await;
}

/// The same, with the call that found the stream to close given up within the 20 ms it waits
/// for the close: the close goes on (before, it was dropped with the call: helper-129 #3).
#[tokio::test]
async fn a_close_whose_call_is_given_up_is_not_lost() {
    close_waits_for_a_slot(true).await;
}

/// [`a_close_that_waits_for_a_slot_is_not_lost`], its call given up after 5 ms if `give_up`.
async fn close_waits_for_a_slot(give_up: bool) {
    use crate::support::LabProxy;
    let (daemon, uri) = crate::support::serve_lab(Daemon::builder()).await;
    let lab: LabProxy = LabProxy::builder(&uri)
        .unwrap()
        .max_in_flight(2)
        .connect()
        .await
        .unwrap();
    let quick = LabProxy::from_proxy(lab.proxy().with_timeout(Duration::from_millis(100)));
    // A streaming call given up before its reply (at 1.5 s, long after the calls below began,
    // even on a loaded machine; dropped, so the daemon saw no deadline) opens a stream nobody
    // reads...
    let given_up = tokio::spawn({
        let lab = lab.clone();
        async move {
            tokio::time::timeout(Duration::from_millis(100), lab.slow_numbers(1_500, 3))
                .await
                .map(drop)
        }
    });
    // ...while two long calls take both slots.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let long: Vec<_> = (0..2)
        .map(|_| {
            let lab = lab.clone();
            tokio::spawn(async move { lab.sleep(3_000).await })
        })
        .collect();
    assert!(given_up.await.unwrap().is_err());
    eventually("the late reply opened its stream", || {
        daemon.open_streams() == 1
    })
    .await;
    // (The reply that opened it reaches the proxy a moment later.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A call that finds the stream to close: its close cannot go out, nor can the call.
    let started = Instant::now();
    if give_up {
        let given_up = tokio::time::timeout(Duration::from_millis(5), quick.calls()).await;
        assert!(given_up.is_err(), "{given_up:?}");
    } else {
        let err = quick.calls().await.unwrap_err();
        assert!(err.is_timeout(), "{err}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(1_000),
        "the call waited for the close: {:?}",
        started.elapsed()
    );
    for call in long {
        call.await.unwrap().unwrap();
    }
    // (A call that would close the stream itself, had the one above found it not yet noted on
    // a loaded machine; one that found it and let its close go, as before, finds nothing.)
    lab.calls().await.unwrap();
    eventually("the stream was closed once a slot freed", || {
        daemon.open_streams() == 0
    })
    .await;
    daemon.shutdown();
}

/// A `stream_lifetime` of zero is no limit, as Pyro's `ITER_STREAM_LIFETIME` of 0 (before, every
/// stream was dropped before its first read: helper-124 #3).
#[tokio::test]
async fn a_stream_lifetime_of_zero_is_no_limit() {
    let (daemon, uri) = serve(Daemon::builder().stream_lifetime(Duration::ZERO)).await;
    let proxy = NumbersProxy::connect(&uri).await.unwrap();
    let mut items = proxy.count(3).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut got = Vec::new();
    while let Some(item) = items.next().await {
        got.push(item.unwrap());
    }
    assert_eq!(got, [1, 2, 3]);
    daemon.shutdown();
}

/// A producer that panics ends its stream, as a Python generator that raises does: the reader
/// gets the panic as that item's error, and the daemon drops the stream, instead of keeping it
/// open to give the item after the lost one (or to panic on every read).
#[tokio::test]
async fn a_producer_that_panics_ends_its_stream() {
    let (daemon, uri) = serve(Daemon::builder()).await;
    let proxy = NumbersProxy::connect(&uri).await.unwrap();
    let mut items = proxy.panics_at(2).await.unwrap();
    assert_eq!(items.next().await.unwrap().unwrap(), 1);
    let err = items.next().await.unwrap().unwrap_err();
    assert!(err.to_string().contains("item 2 is cursed"), "{err}");
    // Held, not dropped (which would close it from this side): the daemon dropped it.
    eventually("the daemon dropped the stream", || {
        daemon.open_streams() == 0
    })
    .await;
    drop(items);
    daemon.shutdown();
}

/// An item too large for `max_message_size` ends its stream with an error saying so: taken
/// from the stream and not sent, it would leave a gap for a reader that went on.
#[tokio::test]
async fn an_item_too_large_to_send_ends_its_stream() {
    let (daemon, uri) = serve(Daemon::builder().limits(rmi::DecodeLimits {
        max_message_size: 64 * 1024,
        ..rmi::DecodeLimits::default()
    }))
    .await;
    let proxy = NumbersProxy::connect(&uri).await.unwrap();
    let mut items = proxy.sized(vec![10, 100_000, 10]).await.unwrap();
    assert_eq!(items.next().await.unwrap().unwrap().len(), 10);
    let err = items.next().await.unwrap().unwrap_err();
    assert!(
        err.to_string().contains("rmi.MessageTooLarge")
            && err.to_string().contains("the stream is closed"),
        "{err}"
    );
    eventually("the daemon dropped the stream", || {
        daemon.open_streams() == 0
    })
    .await;
    drop(items);
    daemon.shutdown();
}

/// A stream over an iterator that blocks (`std::sync::mpsc::Receiver::into_iter`, as a Pyro
/// generator doing `queue.get()` ports), made with `RemoteStream::blocking`: while its read
/// waits, the daemon serves other calls on the test's one runtime thread, the item comes when
/// it is sent, and a shutdown with a read still waiting ends at once. (With `iter`, the wait
/// blocked the worker thread: here the whole daemon, and the shutdown could not end the read.)
#[tokio::test]
async fn a_stream_over_a_blocking_iterator_holds_no_runtime_thread() {
    let (send, received) = std::sync::mpsc::channel();
    let object = NumbersObject::default();
    *object.waiting.lock().unwrap() = Some(received);
    let daemon = Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon.register(NumbersServer::new(object)).unwrap();
    let serving = tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let proxy = NumbersProxy::connect(&uri).await.unwrap();
    let mut waiting = proxy.waiting().await.unwrap();
    let first = tokio::spawn(async move {
        let item = waiting.next().await;
        (item, waiting)
    });
    // The read waits in the iterator; other calls go on.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let counted: Vec<u32> = proxy
        .count(3)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(counted, [1, 2, 3]);
    send.send(7).unwrap();
    let (item, mut waiting) = first.await.unwrap();
    assert_eq!(item.unwrap().unwrap(), 7);
    // A read left waiting does not hold up a shutdown.
    let left = tokio::spawn(async move { waiting.next().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    daemon.shutdown();
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("the daemon stopped with a read waiting in the iterator")
        .unwrap()
        .unwrap();
    left.abort();
    drop(send);
}

/// A stream over a shared work queue (`RemoteStream::blocking`) takes an item off it only when
/// a reader asks: a stream read once and dropped took one item, and the next stream's first
/// item is the second. (A first version ran up to two items ahead of its reader, lost with
/// the stream, and held a blocking thread for as long as a reader left the stream unread.)
#[tokio::test]
async fn a_blocking_stream_takes_nothing_ahead_of_its_reader() {
    let (send, work) = std::sync::mpsc::channel();
    for i in 1..=10 {
        send.send(i).unwrap();
    }
    let object = NumbersObject::default();
    *object.work.lock().unwrap() = Some(work);
    let taken = object.taken.clone();
    let (daemon, uri) = serve_object(Daemon::builder(), object).await;
    let proxy = NumbersProxy::connect(&uri).await.unwrap();
    let mut first = proxy.taking().await.unwrap();
    assert_eq!(first.next().await.unwrap().unwrap(), 1);
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(taken.load(Ordering::SeqCst), 1, "taken ahead of the reader");
    let mut second = proxy.taking().await.unwrap();
    assert_eq!(second.next().await.unwrap().unwrap(), 2);
    daemon.shutdown();
}

/// An item that fits alone but not with the reply annotations its producer set ends its
/// stream too. (Before, it passed the stream's check and failed the reply's: the item was taken
/// and lost, and the stream stayed open, so a reader that went on found a gap.)
#[tokio::test]
async fn an_item_too_large_with_its_annotations_ends_its_stream() {
    let (daemon, uri) = serve(Daemon::builder().limits(rmi::DecodeLimits {
        max_message_size: 64 * 1024,
        ..rmi::DecodeLimits::default()
    }))
    .await;
    let proxy = NumbersProxy::connect(&uri).await.unwrap();
    let mut items = proxy
        .annotated(vec![10, 64 * 1024 - 600, 10])
        .await
        .unwrap();
    assert_eq!(items.next().await.unwrap().unwrap().len(), 10);
    let err = items.next().await.unwrap().unwrap_err();
    assert!(
        err.to_string().contains("rmi.MessageTooLarge")
            && err.to_string().contains("the stream is closed"),
        "{err}"
    );
    eventually("the daemon dropped the stream", || {
        daemon.open_streams() == 0
    })
    .await;
    drop(items);
    daemon.shutdown();
}

/// With `stream_lifetime` set, a stream that ends leaves no task sleeping out the lifetime.
#[tokio::test]
async fn streams_that_end_leave_no_lifetime_task_behind() {
    let (daemon, uri) = serve(Daemon::builder().stream_lifetime(Duration::from_secs(3600))).await;
    let proxy = NumbersProxy::connect(&uri).await.unwrap();
    let runtime = tokio::runtime::Handle::current().metrics();
    let before = runtime.num_alive_tasks();
    for _ in 0..50 {
        let items: Vec<u32> = proxy
            .count(2)
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(items, [1, 2]);
    }
    assert_eq!(daemon.open_streams(), 0);
    eventually("the lifetime tasks ended", || {
        runtime.num_alive_tasks() < before + 10
    })
    .await;
    daemon.shutdown();
}

/// A call to a streaming method given up before its reply came (its future dropped) leaves no
/// stream open on the daemon: the proxy's next call closes it. Before, each stayed open for
/// the connection's life, and two used up `max_streams_per_connection = 2` for good.
#[tokio::test]
async fn a_stream_opened_for_a_call_given_up_is_closed() {
    let (daemon, uri) =
        crate::support::serve_lab(Daemon::builder().max_streams_per_connection(2)).await;
    let proxy = crate::support::LabProxy::connect(&uri).await.unwrap();
    for _ in 0..2 {
        let gave_up = tokio::time::timeout(Duration::from_millis(20), proxy.slow_numbers(150, 3));
        assert!(gave_up.await.is_err(), "the call was given up");
    }
    eventually("the daemon opened both streams", || {
        daemon.open_streams() == 2
    })
    .await;
    // Their replies reach the proxy (its reader is reading: the calls are still in flight);
    // the next calls close the streams they opened.
    calls_until_no_stream_is_open(&daemon, &proxy).await;
    let items: Vec<u32> = proxy
        .slow_numbers(0, 3)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items, [0, 1, 2]);
    daemon.shutdown();
}

/// An unfinished stream dropped after its proxy's connection was closed, or just before (the
/// natural order at the end of a block: its close goes out later, from a task), is not closed
/// through a new connection: the daemon drops it after its linger, and the proxy stays
/// closed. (Before, the second order dialed again; found by a review, 2026-12-06.)
#[tokio::test]
async fn a_stream_dropped_after_its_proxy_closed_does_not_redial() {
    let (daemon, uri) = serve(Daemon::builder().stream_linger(Duration::ZERO)).await;
    for close_first in [true, false] {
        let proxy = NumbersProxy::connect(&uri).await.unwrap();
        let mut items = proxy.count(5).await.unwrap();
        assert_eq!(items.next().await.unwrap().unwrap(), 1);
        if close_first {
            proxy.proxy().close();
            drop(items);
        } else {
            drop(items);
            proxy.proxy().close();
        }
        eventually("the daemon dropped the stream", || {
            daemon.open_streams() == 0
        })
        .await;
        // Time for a dial the drop might have started.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            proxy.proxy().connected_uri().is_none(),
            "the dropped stream dialed again (closed first: {close_first})"
        );
    }
    daemon.shutdown();
}

/// A stream read through a connection that speaks another serializer is refused with an error
/// saying which, and left as it was: its items are encoded in its opener's serializer, and
/// sent to this reader they would not decode (or decode as something else).
#[tokio::test]
async fn a_stream_read_in_another_serializer_is_refused_and_left_as_it_was() {
    let (daemon, uri) = serve(Daemon::builder()).await;
    let opener = NumbersProxy::connect(&uri).await.unwrap();
    let mut items = opener.count(3).await.unwrap();
    assert_eq!(items.next().await.unwrap().unwrap(), 1);
    let other = rmi::Proxy::builder(uri.clone())
        .serializer(Serializer::MsgPack)
        .connect::<rmi::Proxy>()
        .await
        .unwrap();
    let err = other
        .call_daemon::<_, u32>("get_next_stream_item", &(items.id().to_owned(),))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("read it with that serializer"),
        "{err}"
    );
    // The opener goes on where it was.
    assert_eq!(items.next().await.unwrap().unwrap(), 2);
    assert_eq!(items.next().await.unwrap().unwrap(), 3);
    daemon.shutdown();
}

/// The same when the reply has come but its caller is dropped before it reads it (another
/// call in flight, so the proxy's reader took the reply in for it).
#[tokio::test]
async fn a_stream_whose_reply_came_but_was_never_read_is_closed() {
    let (daemon, uri) = crate::support::serve_lab(Daemon::builder()).await;
    let proxy = crate::support::LabProxy::connect(&uri).await.unwrap();
    let other = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.sleep(300).await }
    });
    let mut call = Box::pin(proxy.slow_numbers(0, 3));
    // Polled once: the request goes out; then left unpolled while its reply comes in.
    assert!(futures_util::poll!(call.as_mut()).is_pending());
    eventually("the daemon opened the stream", || {
        daemon.open_streams() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(call);
    assert_eq!(other.await.unwrap().unwrap(), 300);
    calls_until_no_stream_is_open(&daemon, &proxy).await;
    daemon.shutdown();
}

/// Makes calls through `proxy` until `daemon` has no stream open (a proxy closes the streams
/// of calls given up on its next call); fails after 10 s.
async fn calls_until_no_stream_is_open(daemon: &Daemon, proxy: &crate::support::LabProxy) {
    let started = Instant::now();
    while daemon.open_streams() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} streams still open",
            daemon.open_streams()
        );
        proxy.echo(0, 0, "next".into()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[rmi::remote]
pub(crate) trait Owning {
    /// 0, 1, … `n - 1` from a blocking iterator that owns a runtime of its own, as a
    /// synchronous database or HTTP client does: dropping it on a runtime's worker panics.
    async fn owning(&self, n: u32) -> RemoteStream<u32>;
    /// 0, 1, … `n - 1` from a stream whose `Drop` panics.
    async fn bomb(&self, n: u32) -> RemoteStream<u32>;
    /// The id of the connection the call came on.
    async fn connection(&self) -> u64;
}

struct OwningObject;

/// An iterator holding a tokio runtime (dropped where it is dropped).
struct RuntimeOwner {
    _runtime: tokio::runtime::Runtime,
    next: u32,
    end: u32,
}

impl Iterator for RuntimeOwner {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        (self.next < self.end).then(|| {
            self.next += 1;
            self.next - 1
        })
    }
}

/// Panics when dropped.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("a producer's Drop panicked");
    }
}

impl Owning for OwningObject {
    async fn owning(&self, n: u32) -> RemoteStream<u32> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        RemoteStream::blocking(RuntimeOwner {
            _runtime: runtime,
            next: 0,
            end: n,
        })
    }

    async fn bomb(&self, n: u32) -> RemoteStream<u32> {
        let bomb = Bomb;
        RemoteStream::new(futures_util::stream::iter(0..n).map(move |i| {
            let _armed = &bomb;
            i
        }))
    }

    async fn connection(&self) -> u64 {
        rmi::context::current().expect("call context").connection()
    }
}

/// A stream's producer is user code, dropped where the stream ends: read to its end, closed
/// early, or cleared at shutdown. One that blocks or panics when dropped (an iterator owning
/// a runtime panics on a worker) must not end the stream with an error, close its
/// connection, or make `serve` panic. (The blocking iterator's end came back as a panic, a
/// panicking `Drop` at a stream's end closed the connection, and `serve` panicked at a
/// shutdown with either open.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_panics_when_dropped_harms_no_one() {
    let daemon = Daemon::builder().bind("127.0.0.1:0").await.unwrap();
    let uri = daemon.register(OwningServer::new(OwningObject)).unwrap();
    let served = tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let proxy = OwningProxy::connect(&uri).await.unwrap();
    let read = |s: rmi::ItemStream<u32>| s.map(|item| item.unwrap()).collect::<Vec<_>>();
    assert_eq!(read(proxy.owning(3).await.unwrap()).await, [0, 1, 2]);
    assert_eq!(read(proxy.bomb(3).await.unwrap()).await, [0, 1, 2]);
    let connection = proxy.connection().await.unwrap();
    // Closed after one item.
    for _ in 0..2 {
        let mut owning = proxy.owning(3).await.unwrap();
        assert_eq!(owning.next().await.unwrap().unwrap(), 0);
        drop(owning);
        let mut bomb = proxy.bomb(3).await.unwrap();
        assert_eq!(bomb.next().await.unwrap().unwrap(), 0);
        drop(bomb);
    }
    assert_eq!(
        proxy.connection().await.unwrap(),
        connection,
        "the connection was lost"
    );
    // Open at the shutdown.
    let mut owning = proxy.owning(3).await.unwrap();
    assert_eq!(owning.next().await.unwrap().unwrap(), 0);
    let mut bomb = proxy.bomb(3).await.unwrap();
    assert_eq!(bomb.next().await.unwrap().unwrap(), 0);
    daemon.shutdown();
    let served = tokio::time::timeout(Duration::from_secs(30), served)
        .await
        .expect("serve did not return");
    assert!(matches!(served, Ok(Ok(()))), "serve: {served:?}");
}
