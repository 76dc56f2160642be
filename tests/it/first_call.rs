//! A call that opens its proxy's connection goes out right behind the CONNECT (with the
//! serializer configured), so it costs one round trip, not two; and it is never run where the
//! handshake refuses, never sent where the daemon's answer must be checked first, and never
//! sent twice when the connection fails after it went out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rmi::protocol::frame::{MessageType, Protocol};
use rmi::{Daemon, Error, Proxy, Serializer, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{serve_lab, start_daemon, LabObject, LabProxy, LabServer};

/// The next whole frame (Pyro5 or Pyro4) from `s`, as its bytes and type; `None` at its end.
pub(crate) async fn next_frame<R: AsyncRead + Unpin>(s: &mut R) -> Option<(Vec<u8>, MessageType)> {
    let mut buf = vec![0; 6];
    s.read_exact(&mut buf).await.ok()?;
    let protocol = Protocol::detect(&buf).expect("a Pyro header");
    buf.resize(protocol.header_size(), 0);
    s.read_exact(&mut buf[6..]).await.ok()?;
    let header = protocol
        .parse_header(&buf, 1 << 20)
        .expect("a valid header");
    let head = buf.len();
    buf.resize(header.total_len(), 0);
    s.read_exact(&mut buf[head..]).await.ok()?;
    Some((buf, header.msg_type))
}

/// The next whole frame from `s`, as its bytes and type.
async fn frame<R: AsyncRead + Unpin>(s: &mut R) -> (Vec<u8>, MessageType) {
    next_frame(s).await.expect("a whole frame")
}

/// A relay on loopback to `target` for one connection, passing everything both ways; once the
/// proxy's side ends, the task returns how many INVOKEs the proxy sent.
async fn counting_relay(target: u16) -> (u16, tokio::task::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let counted = tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let upstream = TcpStream::connect(("127.0.0.1", target)).await.unwrap();
        let (mut from_client, mut to_client) = client.into_split();
        let (mut from_daemon, mut to_daemon) = upstream.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from_daemon, &mut to_client).await;
        });
        let mut invokes = 0;
        while let Some((bytes, kind)) = next_frame(&mut from_client).await {
            invokes += usize::from(kind == MessageType::Invoke);
            if to_daemon.write_all(&bytes).await.is_err() {
                break;
            }
        }
        invokes
    });
    (port, counted)
}

/// A lazy proxy to the object at `uri` moved to `port` on loopback, with bincode configured.
fn lazy(uri: &Uri, port: u16) -> LabProxy {
    let uri = Uri::tcp(uri.object().unwrap(), "127.0.0.1", port);
    LabProxy::from_proxy(
        Proxy::builder(uri)
            .serializer(Serializer::Bincode)
            .reconnect_attempts(3)
            .connect_timeout(Duration::from_secs(60))
            .build(),
    )
}

/// Stands in at `listener` for the daemon at `daemon_port` while `call`, a lazy proxy's first
/// call dialing `listener`, runs: the call must come before anything answered its CONNECT; then
/// both go to the daemon as they came, and its answers back. Returns what `call` returned.
pub(crate) async fn first_call_comes_unanswered<T>(
    listener: TcpListener,
    daemon_port: u16,
    call: tokio::task::JoinHandle<T>,
) -> T {
    let (mut client, connect) = accept_a_connect(listener).await;
    let (invoke, kind) = tokio::time::timeout(Duration::from_secs(20), frame(&mut client))
        .await
        .expect("the call waited for the CONNECTOK: it was not sent with the CONNECT");
    assert_eq!(kind, MessageType::Invoke);
    let mut upstream = TcpStream::connect(("127.0.0.1", daemon_port))
        .await
        .unwrap();
    upstream.write_all(&connect).await.unwrap();
    upstream.write_all(&invoke).await.unwrap();
    tokio::spawn(async move {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    });
    call.await.unwrap()
}

/// The other way round: stands in at `listener` while `call` runs, and requires that nothing
/// follows the CONNECT for 300 ms (the call waits for the CONNECTOK); then forwards both ways.
async fn first_call_waits_for_the_connectok<T>(
    listener: TcpListener,
    daemon_port: u16,
    call: tokio::task::JoinHandle<T>,
) -> T {
    let (mut client, connect) = accept_a_connect(listener).await;
    let early = tokio::time::timeout(Duration::from_millis(300), frame(&mut client)).await;
    assert!(
        early.is_err(),
        "the call went out before the CONNECTOK: {:?}",
        early.map(|(_, kind)| kind)
    );
    let mut upstream = TcpStream::connect(("127.0.0.1", daemon_port))
        .await
        .unwrap();
    upstream.write_all(&connect).await.unwrap();
    tokio::spawn(async move {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    });
    call.await.unwrap()
}

/// The first client of `listener`, and the CONNECT it sent first.
async fn accept_a_connect(listener: TcpListener) -> (TcpStream, Vec<u8>) {
    let (mut client, _) = listener.accept().await.unwrap();
    let (connect, kind) = frame(&mut client).await;
    assert_eq!(kind, MessageType::Connect);
    (client, connect)
}

/// `echo(1, 2, "first")` through `proxy`, as its first call: see [`first_call_comes_unanswered`].
async fn first_echo_comes_unanswered(listener: TcpListener, daemon_port: u16, proxy: LabProxy) {
    let call = tokio::spawn(async move { proxy.echo(1, 2, "first".into()).await });
    let (task, call_no, text) = first_call_comes_unanswered(listener, daemon_port, call)
        .await
        .unwrap();
    assert_eq!((task, call_no, text.as_str()), (1, 2, "first"));
}

#[tokio::test]
async fn the_call_that_opens_the_connection_does_not_wait_for_the_connectok() {
    let (daemon, lab, _) = start_daemon().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = lazy(&lab, listener.local_addr().unwrap().port());
    first_echo_comes_unanswered(listener, daemon.local_addr().unwrap().port(), proxy).await;
    daemon.shutdown();
}

#[tokio::test]
async fn through_pyroname_too_the_first_call_does_not_wait_for_the_connectok() {
    let (daemon, lab, _) = start_daemon().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (ns, names) = crate::naming::name_server().await;
    let stand_in = Uri::tcp(
        lab.object().unwrap(),
        "127.0.0.1",
        listener.local_addr().unwrap().port(),
    );
    names.register("lab.first", &stand_in).await.unwrap();
    let logical = format!("PYRONAME:lab.first@{}", ns.uri().location().unwrap());
    let proxy = LabProxy::from_proxy(
        LabProxy::builder(logical)
            .unwrap()
            .serializer(Serializer::Bincode)
            .connect_timeout(Duration::from_secs(60))
            .build(),
    );
    first_echo_comes_unanswered(listener, daemon.local_addr().unwrap().port(), proxy).await;
    daemon.shutdown();
}

/// A validator that panics on a client's handshake data refuses that client with a
/// CONNECTFAIL; the daemon serves the others. (Before, the connection's task unwound: the
/// client saw its connection dropped, with no answer; found by a review, 2026-12-06.)
#[tokio::test]
async fn a_panicking_handshake_validator_refuses_the_client_and_the_daemon_serves_on() {
    let (daemon, uri) = serve_lab(Daemon::builder().validator(
        |info: &rmi::daemon::HandshakeInfo<'_>| {
            if info.data == "not a number" {
                panic!("the validator's own bug");
            }
            Ok("welcome".to_string())
        },
    ))
    .await;
    let refused = LabProxy::from_proxy(
        Proxy::builder(uri.clone())
            .handshake("not a number")
            .reconnect_attempts(0)
            .build(),
    );
    let err = refused.calls().await.unwrap_err();
    assert!(
        matches!(&err, Error::ConnectFailed(m) if m.contains("handshake validator failed")),
        "{err}"
    );
    let admitted = LabProxy::connect(&uri).await.unwrap();
    assert_eq!(admitted.echo(0, 1, "in".into()).await.unwrap().2, "in");
    daemon.shutdown();
}

#[tokio::test]
async fn a_refused_handshake_runs_nothing_sent_with_its_connect() {
    let daemon = Daemon::builder()
        .validator(|info: &rmi::daemon::HandshakeInfo<'_>| {
            if info.data == "open sesame" {
                Ok("welcome".to_string())
            } else {
                Err("not the password".to_string())
            }
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let uri = daemon
        .register_with_id(LabServer::new(LabObject::default()), "lab")
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let refused = LabProxy::from_proxy(
        Proxy::builder(uri.clone())
            .serializer(Serializer::Bincode)
            .handshake("guess")
            .build(),
    );
    let err = refused.echo(0, 0, "sneaked".into()).await.unwrap_err();
    assert!(
        matches!(&err, Error::ConnectFailed(m) if m.contains("not the password")),
        "{err}"
    );
    assert!(err.is_not_executed(), "a refused call did not run: {err}");
    // A first call larger than the daemon's first read (8 KiB) is still in its socket when it
    // refuses: the refusal must reach the proxy all the same.
    let large = LabProxy::from_proxy(
        Proxy::builder(uri.clone())
            .serializer(Serializer::Bincode)
            .handshake("guess")
            .build(),
    );
    let err = large.echo(0, 0, "x".repeat(50_000)).await.unwrap_err();
    assert!(
        matches!(&err, Error::ConnectFailed(m) if m.contains("not the password")),
        "{err}"
    );
    let admitted = LabProxy::from_proxy(
        Proxy::builder(uri)
            .serializer(Serializer::Bincode)
            .handshake("open sesame")
            .build(),
    );
    // Its own first call (sent with its CONNECT) is the only call that ran.
    assert_eq!(admitted.calls().await.unwrap(), 0);
    assert_eq!(admitted.echo(0, 1, "in".into()).await.unwrap().2, "in");
    assert_eq!(admitted.calls().await.unwrap(), 1);
    daemon.shutdown();
}

#[tokio::test]
async fn a_daemon_answer_the_proxy_refuses_has_run_no_call() {
    let (daemon, lab, _) = start_daemon().await;
    let (port, counted) = counting_relay(daemon.local_addr().unwrap().port()).await;
    let checked = LabProxy::from_proxy(
        Proxy::builder(Uri::tcp(lab.object().unwrap(), "127.0.0.1", port))
            .serializer(Serializer::Bincode)
            .validate_handshake(|_| Err("not the daemon I expected".into()))
            .build(),
    );
    let err = checked.echo(0, 0, "secret".into()).await.unwrap_err();
    assert!(
        matches!(&err, Error::ConnectFailed(m) if m.contains("not the daemon I expected")),
        "{err}"
    );
    // The refused connection is closed: the relay has seen all the proxy sent on it.
    assert_eq!(
        counted.await.unwrap(),
        0,
        "the call went out before the daemon's answer was checked"
    );
    daemon.shutdown();
}

#[tokio::test]
async fn a_call_sent_with_the_connect_is_not_sent_again_when_the_connection_fails_and_waiters_dial()
{
    let (daemon, lab, _) = start_daemon().await;
    let daemon_port = daemon.local_addr().unwrap().port();
    // Passes the first connection's CONNECT and call to the daemon, then cuts it before any
    // answer comes back; later connections pass through untouched.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    tokio::spawn({
        let accepted = accepted.clone();
        async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut upstream = TcpStream::connect(("127.0.0.1", daemon_port))
                    .await
                    .unwrap();
                if accepted.fetch_add(1, Ordering::SeqCst) == 0 {
                    let (connect, _) = frame(&mut client).await;
                    let (invoke, _) = frame(&mut client).await;
                    upstream.write_all(&connect).await.unwrap();
                    upstream.write_all(&invoke).await.unwrap();
                    // The daemon answers both (the call ran); the proxy gets neither answer.
                    assert_eq!(frame(&mut upstream).await.1, MessageType::ConnectOk);
                    assert_eq!(frame(&mut upstream).await.1, MessageType::Result);
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        }
    });
    let proxy = lazy(&lab, port);
    let dialer = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.echo(0, 0, "once".into()).await }
    });
    // Queued on that dial: its failure was the call's, not the daemon's, so this one dials
    // again (a ping has no retry of its own).
    let waiter = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.proxy().ping().await }
    });
    let err = dialer.await.unwrap().unwrap_err();
    assert!(
        !err.is_not_executed(),
        "the call may have run: its error must not say otherwise: {err}"
    );
    waiter.await.unwrap().unwrap();
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the call was not sent again; the waiter dialed once"
    );
    // The first call ran exactly once.
    assert_eq!(proxy.calls().await.unwrap(), 1);
    daemon.shutdown();
}

#[tokio::test]
async fn a_call_that_waits_does_not_hold_up_the_connectok_it_came_with() {
    use rmi::protocol::codec;
    use rmi::protocol::frame::Message;
    let (daemon, lab, _) = start_daemon().await;
    let object = lab.object().unwrap();
    let (mut rd, mut wr) = rmi::transport::split(crate::support::dial(&lab).await, 1 << 20);
    let ser = Serializer::Bincode;
    let connect = crate::support::connect_message(object);
    // `rendezvous(2)` returns only once a second caller has come.
    let call = codec::encode_invoke(ser, object, "rendezvous", &(2usize,)).unwrap();
    let invoke = Message::new(MessageType::Invoke, ser.id(), 0, 1, call);
    wr.queue(&connect);
    wr.queue(&invoke);
    wr.flush().await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(20), rd.read_frame())
        .await
        .expect("the CONNECTOK waited for the call that came with it")
        .unwrap()
        .unwrap();
    assert_eq!(answer.msg_type, MessageType::ConnectOk);
    // A second caller lets the first call finish: its reply follows.
    let other = LabProxy::from_uri(&lab).unwrap();
    assert_eq!(other.rendezvous(2).await.unwrap(), 2);
    let reply = tokio::time::timeout(Duration::from_secs(20), rd.read_frame())
        .await
        .expect("the first call's reply")
        .unwrap()
        .unwrap();
    assert_eq!((reply.msg_type, reply.seq), (MessageType::Result, 1));
    let met: usize = ser.decode(&reply.payload, &Default::default()).unwrap();
    assert_eq!(met, 2);
    daemon.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_first_callers_of_a_fresh_proxy_share_one_connection_and_each_call_runs_once() {
    let (daemon, lab, _) = start_daemon().await;
    let proxy = LabProxy::from_proxy(
        Proxy::builder(lab.clone())
            .serializer(Serializer::Bincode)
            .build(),
    );
    let calls = (0..16u32).map(|task| {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let (t, _, text) = proxy.echo(task, 0, format!("call {task}")).await.unwrap();
            assert_eq!((t, text), (task, format!("call {task}")));
            proxy.connection().await.unwrap()
        })
    });
    let mut connections = Vec::new();
    for call in calls {
        connections.push(call.await.unwrap());
    }
    connections.dedup();
    assert_eq!(connections.len(), 1, "one dial for them all");
    assert_eq!(proxy.calls().await.unwrap(), 16 + 16);
    daemon.shutdown();
}

/// An object whose method blocks its thread (as CPU-bound work does).
#[rmi::remote]
trait Busy {
    /// Blocks for `ms` milliseconds; returns `ms`.
    async fn spin(&self, ms: u64) -> u64;
    /// How many `spin`s ran.
    async fn runs(&self) -> u64;
}

struct BusyObject(std::sync::atomic::AtomicU64);

impl Busy for BusyObject {
    async fn spin(&self, ms: u64) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
    async fn runs(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_first_call_longer_than_the_connect_timeout_runs_once_and_answers() {
    // The daemon on a thread of its own, which the method blocks.
    let (daemon, uri) =
        crate::support::daemon_on_its_own_thread(BusyServer::new(BusyObject(Default::default())));
    let proxy = BusyProxy::from_proxy(
        Proxy::builder(uri)
            .serializer(Serializer::Bincode)
            .connect_timeout(Duration::from_millis(750))
            .build(),
    );
    // The handshake is answered before the call runs: the connect timeout is not the call's.
    assert_eq!(proxy.spin(1500).await.unwrap(), 1500);
    assert_eq!(proxy.runs().await.unwrap(), 1);
    daemon.shutdown();
}

#[tokio::test]
async fn a_first_call_too_large_to_go_ahead_is_sent_once_connected() {
    let (daemon, lab, _) = start_daemon().await;
    // Held back until the CONNECTOK, not written behind the CONNECT.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let held = lazy(&lab, listener.local_addr().unwrap().port());
    let call =
        tokio::spawn(async move { held.blob_len(crate::support::Blob(vec![7; 200_000])).await });
    let len =
        first_call_waits_for_the_connectok(listener, daemon.local_addr().unwrap().port(), call)
            .await;
    assert_eq!(len.unwrap(), 200_000);
    // And sent once.
    let (port, counted) = counting_relay(daemon.local_addr().unwrap().port()).await;
    let proxy = lazy(&lab, port);
    let big = crate::support::Blob(vec![7; 200_000]);
    assert_eq!(proxy.blob_len(big).await.unwrap(), 200_000);
    assert_eq!(proxy.calls().await.unwrap(), 2, "each large call ran once");
    drop(proxy);
    assert_eq!(
        counted.await.unwrap(),
        2,
        "the large call and `calls`, once each"
    );
    daemon.shutdown();
}

/// Bytes that count how many times a proxy serializes them.
#[derive(serde::Deserialize)]
struct Counted(#[serde(with = "serde_bytes")] Vec<u8>);

/// Serializations of [`Counted`] values (only `a_first_call_too_large_to_go_ahead_is_encoded_once`
/// makes them).
static ENCODED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl serde::Serialize for Counted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ENCODED.fetch_add(1, Ordering::SeqCst);
        serde_bytes::serialize(&self.0, s)
    }
}

/// A number that takes 400 ms to serialize (an argument slow to encode).
#[derive(serde::Deserialize)]
struct Slow(u32);

impl serde::Serialize for Slow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        std::thread::sleep(Duration::from_millis(400));
        s.serialize_u32(self.0)
    }
}

/// Takes [`Counted`] bytes, or a [`Slow`] number.
#[rmi::remote]
trait Sink {
    /// The number of bytes taken.
    async fn take(&self, data: Counted) -> usize;
    /// The number.
    async fn slow(&self, n: Slow) -> u32;
}

struct SinkObject;

impl Sink for SinkObject {
    async fn take(&self, data: Counted) -> usize {
        data.0.len()
    }
    async fn slow(&self, n: Slow) -> u32 {
        n.0
    }
}

/// A daemon serving a [`SinkObject`], and a lazy bincode proxy to it with `connect_timeout`.
async fn sink(connect_timeout: Duration) -> (Daemon, SinkProxy) {
    let daemon = Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon.register(SinkServer::new(SinkObject)).unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    // One dial: a first attempt that ran out of its connect timeout is not hidden by a second.
    let proxy = Proxy::builder(uri)
        .serializer(Serializer::Bincode)
        .connect_timeout(connect_timeout)
        .reconnect_attempts(0)
        .build();
    (daemon, SinkProxy::from_proxy(proxy))
}

#[tokio::test]
async fn a_first_call_slow_to_encode_does_not_use_up_the_connect_timeout() {
    let (daemon, proxy) = sink(Duration::from_millis(500)).await;
    // Encoded before the dial (at least 400 ms, more than once with a size pass): the
    // connect timeout counts the dial and the handshake only.
    assert_eq!(proxy.slow(Slow(7)).await.unwrap(), 7);
    daemon.shutdown();
}

#[tokio::test]
async fn a_first_call_too_large_to_go_ahead_is_encoded_once() {
    let (daemon, proxy) = sink(Duration::from_secs(10)).await;
    let big = || Counted(vec![1; 100_000]);
    assert_eq!(proxy.take(big()).await.unwrap(), 100_000);
    let first = ENCODED.swap(0, Ordering::SeqCst);
    // The same call on the open connection: what one encoding serializes.
    assert_eq!(proxy.take(big()).await.unwrap(), 100_000);
    let once = ENCODED.load(Ordering::SeqCst);
    assert!(once >= 1, "the counter counts");
    assert_eq!(
        first, once,
        "encoded before the dial and sent once connected, not encoded again"
    );
    daemon.shutdown();
}

/// The CONNECT is held to `MAX_HANDSHAKE_SIZE`; a first call far larger is not: the proxy
/// keeps a call over 64 KiB until the CONNECTOK (only smaller ones go in the CONNECT's write),
/// and the daemon reads it under `max_message_size`. (A request over the handshake bound in
/// the CONNECT's own write, which only a hand-made client sends, is
/// `hostile::a_client_that_has_proved_nothing_cannot_make_the_daemon_hold_a_large_connect`.)
#[tokio::test]
async fn a_first_call_larger_than_the_handshake_bound_is_sent_once_connected_and_runs() {
    let (daemon, lab, _) = start_daemon().await;
    for serializer in [Serializer::Bincode, Serializer::MsgPack] {
        let proxy =
            LabProxy::from_proxy(Proxy::builder(lab.clone()).serializer(serializer).build());
        let big = "x".repeat(8 * rmi::daemon::MAX_HANDSHAKE_SIZE);
        let (_, _, echoed) = proxy.echo(1, 1, big.clone()).await.unwrap();
        assert_eq!(echoed.len(), big.len(), "{serializer:?}");
    }
    daemon.shutdown();
}

/// A proxy whose CONNECT is over the daemon's handshake bound (handshake data of 70 KiB) is told
/// so at once, as a refusal: no dial again, and the call (never sent behind such a CONNECT: see
/// the next test) did not run. Counted by a daemon that sees every connection.
#[tokio::test]
async fn a_connect_over_the_handshake_bound_is_refused_by_name_without_redialing() {
    use rmi::daemon::MAX_HANDSHAKE_SIZE;
    let connections = Arc::new(AtomicUsize::new(0));
    let daemon = Daemon::builder()
        .validator({
            let connections = connections.clone();
            move |_: &rmi::daemon::HandshakeInfo<'_>| {
                connections.fetch_add(1, Ordering::Relaxed);
                Ok("welcome".to_string())
            }
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let uri = daemon
        .register_with_id(LabServer::new(LabObject::default()), "lab")
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    // Through a relay that counts connections: one dial each, never a second.
    let relay = crate::support::Relay::start(daemon.local_addr().unwrap().port()).await;
    let relayed = Uri::tcp("lab", "127.0.0.1", relay.port);
    let cases = [
        (Serializer::Bincode, MAX_HANDSHAKE_SIZE + 6 * 1024),
        (Serializer::Serpent, MAX_HANDSHAKE_SIZE + 6 * 1024),
        // Larger than the sockets' buffers: the close is seen while the CONNECT is written.
        (Serializer::Bincode, 4 << 20),
    ];
    for (n, (serializer, size)) in cases.into_iter().enumerate() {
        let huge = LabProxy::from_proxy(
            Proxy::builder(relayed.clone())
                .serializer(serializer)
                .handshake("h".repeat(size))
                .connect_timeout(Duration::from_secs(30))
                .build(),
        );
        let started = std::time::Instant::now();
        let err = huge.echo(0, 0, "never".into()).await.unwrap_err();
        assert!(
            matches!(&err, Error::ConnectFailed(m) if m.contains("MAX_HANDSHAKE_SIZE")),
            "{serializer:?}, {size} bytes: {err}"
        );
        assert!(err.is_not_executed(), "{err}");
        assert_eq!(
            relay.accepted(),
            n + 1,
            "{serializer:?}, {size} bytes: dialled again"
        );
        eprintln!(
            "{serializer:?}, {size} bytes: refused after {:?}",
            started.elapsed()
        );
    }
    // The daemon never got to validate them, and serves a proxy within the bound.
    assert_eq!(connections.load(Ordering::Relaxed), 0);
    let fine = LabProxy::from_proxy(
        Proxy::builder(uri)
            .handshake("h".repeat(MAX_HANDSHAKE_SIZE / 2))
            .build(),
    );
    assert_eq!(fine.echo(0, 1, "in".into()).await.unwrap().2, "in");
    assert_eq!(connections.load(Ordering::Relaxed), 1);
    daemon.shutdown();
}

/// A CONNECT over rmi daemons' bound goes alone: a Python daemon, which has no such bound, may
/// take it, and the first call must not already be on its way behind it (the proxy could not
/// then tell whether it ran when the connection drops). A raw listener reads the whole CONNECT
/// and sees nothing behind it; its close is then a refusal of a call that never left.
#[tokio::test]
async fn a_call_is_never_sent_behind_a_connect_over_the_handshake_bound() {
    use rmi::daemon::MAX_HANDSHAKE_SIZE;
    use rmi::protocol::frame::HEADER_SIZE;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let peer = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = [0u8; HEADER_SIZE];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(head[6], MessageType::Connect as u8);
        let len = u32::from_be_bytes(head[12..16].try_into().unwrap()) as usize
            + u32::from_be_bytes(head[16..20].try_into().unwrap()) as usize;
        let mut body = vec![0; len];
        s.read_exact(&mut body).await.unwrap();
        // Anything behind the CONNECT was sent with it.
        let mut more = [0u8; 64];
        let behind = match tokio::time::timeout(Duration::from_millis(300), s.read(&mut more)).await
        {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => 0,
        };
        (len, behind)
    });
    let huge = LabProxy::from_proxy(
        Proxy::builder(Uri::tcp("lab", "127.0.0.1", port))
            .serializer(Serializer::Bincode)
            .handshake("h".repeat(MAX_HANDSHAKE_SIZE + 1024))
            .build(),
    );
    let err = huge.echo(0, 0, "never".into()).await.unwrap_err();
    let (len, behind) = peer.await.unwrap();
    assert!(len > MAX_HANDSHAKE_SIZE, "{len}");
    assert_eq!(behind, 0, "the call was sent behind an oversized CONNECT");
    assert!(err.is_not_executed(), "{err}");
}
