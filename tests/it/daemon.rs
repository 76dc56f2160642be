//! Daemon behaviour: object ids, registration rules, the `Pyro.Daemon` object, IPv6 and
//! graceful shutdown.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use rmi::{Daemon, Error, Metadata, Proxy};

use crate::support::{
    shut_down_within, start_daemon, GreeterProxy, GreeterServer, GreetingMaker, LabObject,
    LabProxy, LabServer,
};

#[tokio::test]
async fn generated_and_chosen_ids() {
    let daemon = Daemon::bind_default().await.unwrap();
    assert!(daemon.local_addr().unwrap().ip().is_loopback());
    let uri = daemon.register(GreeterServer::new(GreetingMaker)).unwrap();
    let id = uri.object().unwrap();
    assert!(id.starts_with("obj_") && id.len() == 36, "{id}");
    assert!(
        id[4..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{id}"
    );
    assert_eq!(
        uri.to_string(),
        format!(
            "PYRO:{id}@127.0.0.1:{}",
            daemon.local_addr().unwrap().port()
        )
    );

    let chosen = daemon
        .register_with_id(GreeterServer::new(GreetingMaker), "example.greeter")
        .unwrap();
    assert_eq!(chosen.object(), Some("example.greeter"));
    let err = daemon
        .register_with_id(LabServer::new(LabObject::default()), "example.greeter")
        .unwrap_err();
    assert!(
        matches!(&err, Error::Daemon(m) if m.contains("already registered")),
        "{err}"
    );
    assert!(daemon
        .register_with_id(GreeterServer::new(GreetingMaker), "Pyro.Daemon")
        .is_err());
    // No id that would not make a URI a client can parse (`PYRO:a@b@127.0.0.1:p`), and the
    // daemon's own id neither replaced nor removed: it serves streams and Python's metadata
    // (helper-149 #6).
    for bad in ["has space", "a@b", "", "tab\there"] {
        let err = daemon
            .register_with_id(GreeterServer::new(GreetingMaker), bad)
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidUri { reason, .. } if reason.contains("object ids")),
            "{bad:?}: {err}"
        );
    }
    assert!(daemon
        .register_replacing(GreeterServer::new(GreetingMaker), "Pyro.Daemon")
        .is_err());
    assert!(!daemon.unregister("Pyro.Daemon"));
    assert!(daemon.registered().iter().any(|id| id == "Pyro.Daemon"));

    // Forced registration replaces the object.
    daemon
        .register_replacing(LabServer::new(LabObject::default()), "example.greeter")
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let lab = LabProxy::connect(&chosen).await.unwrap();
    assert_eq!(
        lab.echo(1, 2, "replaced".into()).await.unwrap().2,
        "replaced"
    );
    Proxy::builder(daemon.uri_for("Pyro.Daemon"))
        .connect::<Proxy>()
        .await
        .unwrap()
        .ping()
        .await
        .expect("the daemon object still answers");

    // Unregistered objects are unknown to new connections and to calls on old ones.
    assert!(daemon.unregister("example.greeter"));
    assert!(!daemon.unregister("example.greeter"));
    assert!(matches!(
        LabProxy::connect(&chosen).await.unwrap_err(),
        Error::UnknownObject(_)
    ));
    assert!(matches!(
        lab.echo(1, 2, "gone".into()).await.unwrap_err(),
        Error::UnknownObject(_)
    ));
    daemon.shutdown();
}

#[tokio::test]
async fn the_daemon_object_answers_ping_registered_get_metadata_and_info() {
    let (daemon, lab, greeter) = start_daemon().await;
    let proxy = Proxy::builder(daemon.uri_for("Pyro.Daemon"))
        .connect::<Proxy>()
        .await
        .unwrap();
    // Its own metadata, which a Python proxy reads from CONNECTOK: Pyro's daemon methods and
    // the stream iteration a Python client calls.
    let own = proxy.metadata().await.unwrap().methods;
    for method in [
        "get_metadata",
        "get_next_stream_item",
        "info",
        "ping",
        "registered",
    ] {
        assert!(own.iter().any(|m| m == method), "{method} missing: {own:?}");
    }
    proxy.call::<_, ()>("ping", &[(); 0]).await.unwrap();
    let mut ids: Vec<String> = proxy.call("registered", &[(); 0]).await.unwrap();
    ids.sort();
    let mut expected = vec![
        "Pyro.Daemon".to_string(),
        lab.object().unwrap().into(),
        greeter.object().unwrap().into(),
    ];
    expected.sort();
    assert_eq!(ids, expected);
    let meta: Metadata = proxy
        .call("get_metadata", &(greeter.object().unwrap(),))
        .await
        .unwrap();
    assert_eq!(meta.methods, ["welcomeMessage"]);
    assert!(meta.oneway.is_empty());
    let err = proxy
        .call::<_, Metadata>("get_metadata", &("nope",))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownObject(_)), "{err}");
    let info: String = proxy.call("info", &[(); 0]).await.unwrap();
    assert!(
        info.contains(&daemon.local_addr().unwrap().to_string()),
        "{info}"
    );

    // The handshake hands the object's metadata to the proxy.
    let g = GreeterProxy::connect(&greeter).await.unwrap();
    assert_eq!(
        g.proxy().metadata().await.unwrap().methods,
        ["welcomeMessage"]
    );
    daemon.shutdown();
}

#[tokio::test]
async fn serves_over_ipv6_loopback() {
    let daemon = Daemon::bind("[::1]:0").await.unwrap();
    let uri = daemon.register(GreeterServer::new(GreetingMaker)).unwrap();
    assert!(uri.to_string().contains("@[::1]:"), "{uri}");
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let greeter = GreeterProxy::connect(uri.to_string()).await.unwrap();
    assert_eq!(
        greeter.welcome_message("six".into()).await.unwrap(),
        "Hi welcome six"
    );
    daemon.shutdown();
}

/// A daemon with `grace` as its grace period serving a fresh lab object on 127.0.0.1:0: the
/// daemon, the object's URI and the task serving it (which ends when `serve` returns).
async fn lab_with_grace(
    grace: Duration,
) -> (Daemon, rmi::Uri, tokio::task::JoinHandle<Result<(), Error>>) {
    lab_served(Daemon::builder().grace_period(grace)).await
}

/// The lab object in a daemon made by `builder` on 127.0.0.1:0, not served yet.
async fn lab_daemon(builder: rmi::DaemonBuilder) -> (Daemon, rmi::Uri) {
    let daemon = builder.bind("127.0.0.1:0").await.unwrap();
    let lab = daemon
        .register(LabServer::new(LabObject::default()))
        .unwrap();
    (daemon, lab)
}

/// [`lab_daemon`], served.
async fn lab_served(
    builder: rmi::DaemonBuilder,
) -> (Daemon, rmi::Uri, tokio::task::JoinHandle<Result<(), Error>>) {
    let (daemon, lab) = lab_daemon(builder).await;
    let serving = tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    (daemon, lab, serving)
}

/// A daemon bound but never served, shut down while its handle lives on: its socket is closed
/// at once, so clients are refused instead of waiting in the listen backlog for an answer that
/// never comes; serving it afterwards returns at once, and only once.
#[tokio::test]
async fn a_daemon_shut_down_before_serving_closes_its_socket_at_once() {
    let daemon = Daemon::bind_default().await.unwrap();
    let uri = daemon.register(GreeterServer::new(GreetingMaker)).unwrap();
    let addr = daemon.local_addr().unwrap();
    daemon.shutdown();
    let connect =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .expect("a connect to a closed socket is answered at once");
    let err = connect.expect_err("nothing listens after the shutdown");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    let err = tokio::time::timeout(Duration::from_secs(5), GreeterProxy::connect(&uri))
        .await
        .expect("a proxy fails at once")
        .unwrap_err();
    assert!(err.is_communication(), "{err}");
    tokio::time::timeout(Duration::from_secs(5), daemon.serve())
        .await
        .expect("serving a shut-down daemon returns at once")
        .unwrap();
    assert!(matches!(
        daemon.serve().await.unwrap_err(),
        Error::Closed(_)
    ));
}

/// The same for a Unix-socket daemon: its socket file is removed at the shutdown.
#[cfg(unix)]
#[tokio::test]
async fn a_unix_daemon_shut_down_before_serving_removes_its_socket_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.sock");
    let daemon = Daemon::builder().bind_unix(&path).await.unwrap();
    assert!(path.exists());
    daemon.shutdown();
    assert!(
        !path.exists(),
        "the socket file is gone once the daemon is shut down"
    );
    daemon.serve().await.unwrap();
}

/// A Unix socket path and the daemons that take it in turn: a socket file a killed daemon left
/// behind is taken over; one a daemon serves is not (the bind fails and the daemon serves on);
/// a file that is no socket is left alone; and a daemon shut down after its file was replaced
/// by another daemon's leaves that one in place. (Before, the stale file made every bind fail,
/// and the shutdown removed whatever file was at the path, cutting the new daemon off.)
#[cfg(unix)]
#[tokio::test]
async fn a_unix_socket_path_is_taken_over_only_from_a_daemon_that_is_gone() {
    use crate::support::{GreeterProxy, GreeterServer, GreetingMaker};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.sock");
    let serve_greeter = |daemon: Daemon| {
        let uri = daemon
            .register_with_id(GreeterServer::new(GreetingMaker), "greeter")
            .unwrap();
        let serving = tokio::spawn({
            let d = daemon.clone();
            async move { d.serve().await }
        });
        (daemon, uri, serving)
    };
    // Left behind: a socket bound and closed without its file removed, as after a kill.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let (first, uri, first_serving) =
        serve_greeter(Daemon::builder().bind_unix(&path).await.unwrap());
    let greeter = GreeterProxy::connect(&uri).await.unwrap();
    assert_eq!(
        greeter.welcome_message("a".into()).await.unwrap(),
        "Hi welcome a"
    );

    // Served: not taken.
    let err = Daemon::builder().bind_unix(&path).await.unwrap_err();
    assert!(err.to_string().contains("a process serves there"), "{err}");
    assert_eq!(
        greeter.welcome_message("b".into()).await.unwrap(),
        "Hi welcome b"
    );

    // Replaced by hand (an operator's `rm`, then another daemon): the first daemon's shutdown
    // leaves the second's file.
    std::fs::remove_file(&path).unwrap();
    let (second, uri, second_serving) =
        serve_greeter(Daemon::builder().bind_unix(&path).await.unwrap());
    first.shutdown();
    first_serving.await.unwrap().unwrap();
    assert!(
        path.exists(),
        "the first daemon removed the second's socket file"
    );
    let greeter = GreeterProxy::connect(&uri).await.unwrap();
    assert_eq!(
        greeter.welcome_message("c".into()).await.unwrap(),
        "Hi welcome c"
    );
    second.shutdown();
    second_serving.await.unwrap().unwrap();
    assert!(!path.exists(), "the second daemon removed its own file");

    // Not a socket: left alone, and the bind says so.
    std::fs::write(&path, b"precious").unwrap();
    assert!(Daemon::builder().bind_unix(&path).await.is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[tokio::test]
async fn graceful_shutdown_lets_running_calls_finish_then_stops_accepting() {
    let (daemon, lab, serving) = lab_with_grace(Duration::from_secs(30)).await;
    let proxy = LabProxy::connect(&lab).await.unwrap();
    let running = tokio::spawn({
        let p = proxy.clone();
        async move { p.sleep(300).await }
    });
    wait_until_running(&proxy).await;
    daemon.shutdown();
    assert_eq!(
        running.await.unwrap().unwrap(),
        300,
        "the running call finished and was answered"
    );
    serving.await.unwrap().unwrap();
    let err = LabProxy::connect(&lab).await.unwrap_err();
    assert!(
        err.is_communication(),
        "no new connections after shutdown: {err}"
    );
    assert!(matches!(
        daemon.serve().await.unwrap_err(),
        Error::Closed(_)
    ));
}

/// A connection closed by a graceful shutdown ends with a FIN, not a reset (which throws away
/// what the daemon wrote but the peer had not read yet): the large reply of a call that ran
/// through the grace period arrives whole at a client that reads it slowly, then the end.
/// Requests the client sent meanwhile are answered at once as not run: Pyro's
/// `ConnectionClosedError`, marked `NRUN` for rmi proxies, which send them again elsewhere.
#[tokio::test]
async fn a_reply_finished_in_the_grace_period_arrives_whole_and_later_requests_are_refused_as_not_run(
) {
    use crate::support::{connect_handshake, dial, invoke_frame};
    use rmi::protocol::frame::{Header, Message, FLAGS_EXCEPTION, HEADER_SIZE};
    use rmi::protocol::names::NOT_RUN_ANNOTATION;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (daemon, lab) =
        crate::support::serve_lab(Daemon::builder().grace_period(Duration::from_secs(30))).await;
    let object = lab.object().unwrap().to_owned();
    let mut raw = dial(&lab).await;
    connect_handshake(&mut raw, &object).await;
    const LEN: usize = 8 << 20;
    // Three seconds: the requests below must be read while it runs, on a loaded machine too.
    let call = invoke_frame(&object, "blob_after", &(3_000u64, LEN), 1, 0);
    raw.write_all(&call).await.unwrap();
    let proxy = LabProxy::connect(&lab).await.unwrap();
    wait_until_running(&proxy).await;
    daemon.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Requests sent while the call runs on.
    for seq in 2..6 {
        let echo = invoke_frame(
            &object,
            "echo",
            &(seq as u32, 0u32, "x".repeat(4096)),
            seq,
            0,
        );
        raw.write_all(&echo).await.unwrap();
    }
    // They are answered first, the call still running; then its reply.
    let mut head = [0u8; HEADER_SIZE];
    let mut refused = Vec::new();
    let len = loop {
        raw.read_exact(&mut head).await.expect("a reply's header");
        let header = Header::parse(&head, usize::MAX).unwrap();
        let len = header.total_len() - HEADER_SIZE;
        if header.seq == 1 {
            break len;
        }
        let mut whole = bytes::BytesMut::from(&head[..]);
        whole.resize(HEADER_SIZE + len, 0);
        raw.read_exact(&mut whole[HEADER_SIZE..]).await.unwrap();
        let reply = Message::parse(&mut whole, &header).unwrap();
        assert!(reply.has_flag(FLAGS_EXCEPTION), "{reply:?}");
        assert!(reply.annotation(&NOT_RUN_ANNOTATION).is_some(), "{reply:?}");
        let text = String::from_utf8_lossy(&reply.payload);
        assert!(
            text.contains("Pyro5.errors.ConnectionClosedError"),
            "{text}"
        );
        assert!(text.contains("the call was not run"), "{text}");
        refused.push(header.seq);
    };
    assert_eq!(refused, [2, 3, 4, 5]);
    // The reply, read slowly: most of it waits in the daemon's socket when it closes.
    assert!(len > LEN, "the whole blob in one reply: {len}");
    let mut chunk = vec![0u8; 64 << 10];
    let mut left = len;
    while left > 0 {
        let want = left.min(chunk.len());
        raw.read_exact(&mut chunk[..want])
            .await
            .unwrap_or_else(|e| panic!("the reply broke off with {left} bytes to go: {e}"));
        left -= want;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let end = tokio::time::timeout(Duration::from_secs(10), raw.read(&mut chunk))
        .await
        .expect("the daemon closed the connection");
    assert!(matches!(end, Ok(0)), "a FIN after the reply: {end:?}");
}

/// A rolling restart loses no call: while a daemon shutting down lets a long call finish, a
/// call made on the same proxy (the same connection) is answered as not run at once, and the
/// proxy sends it again on a new connection, to the daemon that took the old one's address.
/// (Read off and dropped, it would fail only when the long call ended, as "connection closed":
/// perhaps run, never retried.)
#[tokio::test]
async fn a_call_made_during_the_grace_period_runs_on_the_daemon_that_replaces_it() {
    let (daemon, lab, serving) = lab_with_grace(Duration::from_secs(30)).await;
    let proxy = LabProxy::connect(&lab).await.unwrap();
    let long = tokio::spawn({
        let p = proxy.clone();
        async move { p.sleep(1_500).await }
    });
    wait_until_running(&proxy).await;
    let addr = daemon.local_addr().unwrap();
    daemon.shutdown();
    // The old daemon's listening socket closes at its shutdown; its connections stay.
    let started = std::time::Instant::now();
    let next = loop {
        match Daemon::bind(addr).await {
            Ok(next) => break next,
            Err(e) => {
                assert!(started.elapsed() < Duration::from_secs(10), "{e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    next.register_with_id(LabServer::new(LabObject::default()), lab.object().unwrap())
        .unwrap();
    tokio::spawn({
        let next = next.clone();
        async move { next.serve().await }
    });
    let echoed = proxy.echo(7, 1, "after".into()).await.unwrap();
    assert_eq!(echoed, (7, 1, "after".to_owned()));
    assert!(
        !long.is_finished(),
        "answered while the old daemon's call ran on"
    );
    // The new daemon ran it: its object has counted the echo alone.
    assert_eq!(proxy.calls().await.unwrap(), 1);
    assert_eq!(
        long.await.unwrap().unwrap(),
        1_500,
        "the long call's reply came"
    );
    serving.await.unwrap().unwrap();
    next.shutdown();
}

/// The error a call answered as not run gives when it cannot be sent again: a daemon shutting
/// down with nobody in its place. It was not sent, as far as running goes: safe to retry.
#[tokio::test]
async fn a_call_made_during_the_grace_period_with_no_daemon_to_take_over_fails_as_not_sent() {
    let (daemon, lab, serving) = lab_with_grace(Duration::from_secs(30)).await;
    let proxy = LabProxy::connect(&lab).await.unwrap();
    let long = tokio::spawn({
        let p = proxy.clone();
        async move { p.sleep(1_500).await }
    });
    wait_until_running(&proxy).await;
    daemon.shutdown();
    let err = proxy.echo(7, 1, "after".into()).await.unwrap_err();
    assert!(matches!(err, Error::NotSent(_)), "{err:?}");
    assert!(err.is_not_executed() && err.is_connection(), "{err:?}");
    assert!(!long.is_finished(), "failed while the call ran on: {err}");
    assert_eq!(long.await.unwrap().unwrap(), 1_500);
    serving.await.unwrap().unwrap();
}

/// A connection to an idle peer (a proxy between calls reads nothing, so it does not notice
/// the daemon's FIN) is closed at once at shutdown: it had nothing unread to drain.
#[tokio::test]
async fn shutdown_with_an_idle_proxy_connected_is_prompt() {
    let (daemon, lab, serving) = lab_with_grace(Duration::from_secs(30)).await;
    let proxy = LabProxy::connect(&lab).await.unwrap();
    assert_eq!(proxy.echo(1, 2, "x".into()).await.unwrap().2, "x");
    // Far below the second a closing connection waits for a peer that was still sending.
    shut_down_within(&daemon, serving, Duration::from_millis(800)).await;
    drop(proxy);
}

/// A peer silent in its handshake (a port probe, a stalled client) does not hold up a shutdown
/// for the grace period, nor for its handshake timeout: the daemon takes no new clients.
#[tokio::test]
async fn shutdown_with_a_peer_silent_in_its_handshake_is_prompt() {
    let (daemon, lab, serving) = lab_with_grace(Duration::from_secs(30)).await;
    let silent = tokio::net::TcpStream::connect(daemon.local_addr().unwrap())
        .await
        .unwrap();
    // Accepted after the silent peer, so that one is in its handshake now.
    let proxy = LabProxy::connect(&lab).await.unwrap();
    assert_eq!(proxy.echo(1, 2, "x".into()).await.unwrap().2, "x");
    drop(proxy);
    // Far below the handshake timeout (10 s) and the grace period (30 s).
    shut_down_within(&daemon, serving, Duration::from_secs(5)).await;
    drop(silent);
}

/// Waits until the lab object has started one call (it counts calls as they start).
async fn wait_until_running(proxy: &LabProxy) {
    let started = std::time::Instant::now();
    while proxy.calls().await.unwrap() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the call never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_grace_period_bounds_shutdown() {
    // Far from the 5 s default: serve must return long before the default could end it.
    const GRACE: Duration = Duration::from_millis(200);
    const BOUND: Duration = Duration::from_millis(2_500);
    let (daemon, lab, serving) = lab_with_grace(GRACE).await;
    let proxy = LabProxy::connect(&lab).await.unwrap();
    let stuck = tokio::spawn({
        let p = proxy.clone();
        async move { p.sleep(600_000).await }
    });
    wait_until_running(&proxy).await;
    let stopping = std::time::Instant::now();
    daemon.shutdown();
    tokio::time::timeout(BOUND, serving)
        .await
        .unwrap_or_else(|_| {
            panic!("serve still running {BOUND:?} after shutdown with a {GRACE:?} grace period")
        })
        .unwrap()
        .unwrap();
    let took = stopping.elapsed();
    println!("shutdown with a call still running: serve returned after {took:?} (grace {GRACE:?})");
    assert!(
        took >= GRACE - Duration::from_millis(10),
        "serve returned after {took:?}, without waiting for the {GRACE:?} grace period"
    );
    let err = tokio::time::timeout(BOUND, stuck)
        .await
        .expect("the dropped call's caller was never told")
        .unwrap()
        .unwrap_err();
    assert!(
        err.is_communication(),
        "the dropped call's caller gets a communication error: {err}"
    );
}

#[rmi::remote]
trait Named {
    async fn name(&self) -> String;
    /// Runs for `ms` milliseconds (its object cannot be dropped meanwhile).
    async fn hold(&self, ms: u64);
}

/// An object that says when it is dropped, and when a `hold` started.
struct NamedObject {
    name: &'static str,
    dropped: Arc<AtomicBool>,
    holding: Arc<AtomicBool>,
}

impl Named for NamedObject {
    async fn name(&self) -> String {
        self.name.to_owned()
    }
    async fn hold(&self, ms: u64) {
        self.holding.store(true, SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

impl Drop for NamedObject {
    fn drop(&mut self) {
        self.dropped.store(true, SeqCst);
    }
}

/// A connection remembers the object it called last (to skip the table's lock): it must still
/// reach a replacement at its next call, even while the old object lives on in a call of
/// another connection, and never keep a replaced or removed object alive itself.
#[tokio::test]
async fn an_open_connection_reaches_a_replacement_and_keeps_no_removed_object_alive() {
    let daemon = Daemon::bind("127.0.0.1:0").await.unwrap();
    let named = |name| {
        let (dropped, holding) = (Arc::<AtomicBool>::default(), Arc::<AtomicBool>::default());
        let object = NamedServer::new(NamedObject {
            name,
            dropped: dropped.clone(),
            holding: holding.clone(),
        });
        (object, dropped, holding)
    };
    let (first, first_dropped, first_holding) = named("first");
    let uri = daemon.register_with_id(first, "named").unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let proxy = NamedProxy::connect(&uri).await.unwrap();
    for _ in 0..2 {
        assert_eq!(proxy.name().await.unwrap(), "first");
    }
    // Another connection's call keeps the first object alive through its replacement.
    let other = NamedProxy::connect(&uri).await.unwrap();
    let held = tokio::spawn(async move { other.hold(300).await });
    tokio::time::timeout(Duration::from_secs(10), async {
        while !first_holding.load(SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the hold started");
    let (second, second_dropped, second_holding) = named("second");
    daemon.register_replacing(second, "named").unwrap();
    assert_eq!(
        proxy.name().await.unwrap(),
        "second",
        "the connection called the replaced object"
    );
    held.await.unwrap().unwrap();
    assert!(
        first_dropped.load(SeqCst),
        "the replaced object was kept alive after its last call"
    );
    // Removed while another connection's call still holds it: this connection, which called
    // it last, finds it gone at once, though the object lives on for that call (helper-149 #2:
    // a removal that left the table's change count as it was let the connection's remembered
    // lookup reach it).
    let third = NamedProxy::connect(&uri).await.unwrap();
    let held = tokio::spawn(async move { third.hold(1_000).await });
    tokio::time::timeout(Duration::from_secs(10), async {
        while !second_holding.load(SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the hold started");
    assert!(daemon.unregister("named"));
    assert!(matches!(
        proxy.name().await.unwrap_err(),
        Error::UnknownObject(_)
    ));
    assert!(!held.is_finished(), "the hold ended before the check");
    assert!(!second_dropped.load(SeqCst), "dropped under a running call");
    held.await.unwrap().unwrap();
    assert!(
        second_dropped.load(SeqCst),
        "the removed object was kept alive by the connection that called it"
    );
    assert!(matches!(
        proxy.name().await.unwrap_err(),
        Error::UnknownObject(_)
    ));
    daemon.shutdown();
}

/// An object that removes another from its daemon when it is dropped.
struct Tidy {
    daemon: Daemon,
    companion: &'static str,
}

impl Named for Tidy {
    async fn name(&self) -> String {
        "tidy".to_owned()
    }
    async fn hold(&self, _ms: u64) {}
}

impl Drop for Tidy {
    fn drop(&mut self) {
        self.daemon.unregister(self.companion);
    }
}

/// An object's `Drop` may use its daemon: an object replaced, or refused for a taken id, is
/// dropped after the object table is unlocked.
#[test]
fn an_object_dropped_by_a_registration_may_use_the_daemon_in_its_drop() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let daemon = runtime.block_on(Daemon::bind("127.0.0.1:0")).unwrap();
    let tidy = |companion| {
        NamedServer::new(Tidy {
            daemon: daemon.clone(),
            companion,
        })
    };
    for id in ["first", "second", "tidy"] {
        daemon
            .register_with_id(GreeterServer::new(GreetingMaker), id)
            .unwrap();
    }
    // On a thread of its own: a deadlock fails the test instead of hanging it.
    let (done, finished) = std::sync::mpsc::channel();
    let (first, second) = (tidy("first"), tidy("second"));
    let registering = daemon.clone();
    std::thread::spawn(move || {
        // Replaces the greeter under "tidy"; then is itself replaced by `second`'s object.
        registering.register_replacing(first, "tidy").unwrap();
        registering.register_replacing(second, "tidy").unwrap();
        // Refused: the id is taken; the refused object is dropped.
        let refused = NamedServer::new(Tidy {
            daemon: registering.clone(),
            companion: "second",
        });
        assert!(registering.register_with_id(refused, "tidy").is_err());
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(10))
        .expect("a registration deadlocked in an object's Drop");
    let left = daemon.registered();
    assert!(
        !left.iter().any(|id| id == "first" || id == "second"),
        "the dropped objects' Drop did not run: {left:?}"
    );
    assert!(left.iter().any(|id| id == "tidy"));
    daemon.shutdown();
}

/// A method or parameter that needs a raw identifier in Rust (`r#type`, `r#match`) is `type` or
/// `match` on the wire and in its metadata, the names a Python client calls it by.
#[tokio::test]
async fn a_raw_identifier_method_is_served_under_its_plain_name() {
    #[rmi::remote]
    trait Shape {
        /// The kind of shape, `match` times.
        async fn r#type(&self, r#match: u32) -> String;
    }
    struct Square;
    impl Shape for Square {
        async fn r#type(&self, r#match: u32) -> String {
            "square".repeat(r#match as usize)
        }
    }
    let daemon = Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon.register(ShapeServer::new(Square)).unwrap();
    let serve = tokio::spawn({
        let daemon = daemon.clone();
        async move { daemon.serve().await }
    });
    let shape = ShapeProxy::connect(&uri).await.unwrap();
    assert_eq!(shape.r#type(2).await.unwrap(), "squaresquare");
    assert_eq!(shape.proxy().metadata().await.unwrap().methods, ["type"]);
    let plain: String = shape.proxy().call("type", &(1u32,)).await.unwrap();
    assert_eq!(plain, "square");
    // The parameter `r#match` is `match` to a caller by keyword (Python's `shape.type(match=3)`).
    let by_keyword: rmi::Proxy = rmi::Proxy::builder(uri.clone())
        .serializer(rmi::Serializer::MsgPack)
        .connect()
        .await
        .unwrap();
    let kwargs = std::collections::BTreeMap::from([("match", 3u32)]);
    let text: String = by_keyword.call_kwargs("type", &(), &kwargs).await.unwrap();
    assert_eq!(text, "square".repeat(3));
    daemon.shutdown();
    serve.await.unwrap().unwrap();
}

/// `Proxy::call_raw_kwargs` (Pyro's `_pyroRawWireResponse`) returns the reply as the daemon
/// wrote it, in the proxy's format: a result, or an exception the method raised (flagged, not
/// an `Err`); a large reply comes in one piece.
#[tokio::test]
async fn a_raw_call_returns_the_daemons_bytes_results_and_exceptions_alike() {
    use rmi::{DecodeLimits, Serializer};
    let (daemon, lab, _) = crate::support::start_daemon().await;
    let none = std::collections::BTreeMap::<String, u32>::new();
    let limits = DecodeLimits::default();
    for serializer in [
        Serializer::Bincode,
        Serializer::MsgPack,
        Serializer::Serpent,
        Serializer::Json,
    ] {
        let proxy: rmi::Proxy = rmi::Proxy::builder(lab.clone())
            .serializer(serializer)
            .connect()
            .await
            .unwrap();
        let raw = proxy
            .call_raw_kwargs("echo", &(1u32, 2u32, "raw"), &none)
            .await
            .unwrap();
        assert!(!raw.exception, "{serializer:?}");
        assert_eq!(raw.serializer, serializer);
        let value: (u32, u32, String) = serializer.decode(&raw.payload, &limits).unwrap();
        assert_eq!(value, (1, 2, "raw".into()), "{serializer:?}");
        let raw = proxy
            .call_raw_kwargs("explode", &("on purpose",), &none)
            .await
            .unwrap();
        assert!(raw.exception, "{serializer:?}");
        let err = rmi::protocol::codec::decode_error(serializer, &raw.payload, &limits).unwrap();
        assert!(
            err.message.contains("on purpose"),
            "{serializer:?}: {err:?}"
        );
        let len = 3 << 20;
        let raw = proxy
            .call_raw_kwargs("make_blob", &(len,), &none)
            .await
            .unwrap();
        let blob: crate::support::Blob = serializer.decode(&raw.payload, &limits).unwrap();
        assert_eq!(blob.0.len(), len, "{serializer:?}");
    }
    daemon.shutdown();
}

/// Both ends of a connection keep it alive at the TCP level, as Pyro's sockets do: a peer gone
/// without a word (a host powered off, a NAT that forgot the connection) is found dead by the
/// system, even by a call with no deadline. Seen in the kernel's own table: an idle
/// established socket with `SO_KEEPALIVE` runs the keep-alive timer (`tr` 2); one without runs
/// none. (Before, neither end set it.)
#[cfg(target_os = "linux")]
#[tokio::test]
async fn both_ends_of_a_connection_keep_it_alive_at_the_tcp_level() {
    let (daemon, lab, _serving) = lab_with_grace(Duration::from_secs(1)).await;
    let proxy = LabProxy::connect(&lab).await.unwrap();
    proxy.calls().await.unwrap();
    let port = daemon.local_addr().unwrap().port();
    let port_of =
        |address: &str| u16::from_str_radix(address.rsplit(':').next().unwrap(), 16).unwrap();
    // Each established connection to the daemon's port, as (local port, remote port, timer);
    // read again while a timer is still the retransmission's (data just sent, not yet acked).
    let mut ends: Vec<(u16, u16, String)> = Vec::new();
    for _ in 0..100 {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        ends = table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (local, remote) = (port_of(fields[1]), port_of(fields[2]));
                let established = fields[3] == "01";
                let timer = fields[5].split(':').next().unwrap().to_owned();
                (established && (local == port || remote == port)).then_some((local, remote, timer))
            })
            .collect();
        if ends.iter().all(|(_, _, timer)| timer != "01") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ends.len(), 2, "the proxy's end and the daemon's: {ends:?}");
    for (local, remote, timer) in &ends {
        assert_eq!(
            timer, "02",
            "{local} -> {remote}: no keep-alive timer ({ends:?})"
        );
    }
    daemon.shutdown();
}

/// A lab daemon with a 200 ms grace period, not serving yet, and a call of a minute running on
/// a connection of `lab`, counted by the lab.
async fn a_call_of_a_minute_running(lab: &LabProxy) -> tokio::task::JoinHandle<Result<u64, Error>> {
    let running = tokio::spawn({
        let lab = lab.clone();
        async move { lab.sleep(60_000).await }
    });
    for _ in 0..1_000 {
        if lab.sleeping().await.unwrap() == 1 {
            return running;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the call never started");
}

/// A daemon whose connections come through `serve_stream` alone (an accept loop of the
/// user's own), shut down: a call that never ends is cut off once the grace period is over,
/// and the connection ends. (Only `serve` cut calls off: with no `serve`, the shutdown waited
/// for ever; helper-156 #1.)
#[tokio::test]
async fn a_daemon_served_by_serve_stream_alone_cuts_calls_off_after_the_grace_period() {
    let (daemon, uri) =
        lab_daemon(Daemon::builder().grace_period(Duration::from_millis(200))).await;
    let (client, server) = tokio::io::duplex(64 << 10);
    let served = tokio::spawn({
        let daemon = daemon.clone();
        async move { daemon.serve_stream(server, "pipe").await }
    });
    let lab: LabProxy = Proxy::builder(uri).connect_over(client).await.unwrap();
    let running = a_call_of_a_minute_running(&lab).await;
    daemon.shutdown();
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("the connection outlived the grace period by 10 s")
        .unwrap();
    let cut = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the call was never cut off")
        .unwrap();
    assert!(cut.is_err(), "{cut:?}");
}

/// `serve`'s future dropped (a `select!` that took another branch): the daemon stops as at a
/// shutdown, and a call that never ends is cut off after the grace period. (Before, the
/// connections it had accepted went on being served by nobody's daemon, for ever;
/// helper-156 #2.)
#[tokio::test]
async fn dropping_serve_stops_the_daemon() {
    let (daemon, uri, serving) = lab_with_grace(Duration::from_millis(200)).await;
    let lab = LabProxy::connect(&uri).await.unwrap();
    // A second `serve`, refused, stops nothing: it never had the daemon. (The first version
    // of this fix stopped it then, and the gateway's tests, which serve twice, failed.)
    let again = daemon.serve().await;
    assert!(matches!(again, Err(Error::Closed(_))), "{again:?}");
    assert_eq!(lab.echo(1, 2, "still".into()).await.unwrap().2, "still");
    let running = a_call_of_a_minute_running(&lab).await;
    serving.abort();
    let cut = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the call ran on after serve was dropped")
        .unwrap();
    assert!(cut.is_err(), "{cut:?}");
    let after = lab.echo(1, 2, "after".into()).await;
    assert!(after.is_err(), "served after serve was dropped: {after:?}");
}

/// A connection being refused at `max_connections` (a silent one: the refusal waits a second
/// for its CONNECT) does not hold up a shutdown with no grace period. (The refusal's own waits,
/// up to about 3 s, held `serve` past it; helper-155 #4.)
#[tokio::test]
async fn shutdown_is_prompt_with_a_connection_being_refused() {
    let builder = Daemon::builder()
        .grace_period(Duration::ZERO)
        .max_connections(1);
    let (daemon, uri, serving) = lab_served(builder).await;
    let lab = LabProxy::connect(&uri).await.unwrap();
    assert_eq!(lab.echo(1, 2, "in".into()).await.unwrap().2, "in");
    let _refused = crate::support::dial(&uri).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    shut_down_within(&daemon, serving, Duration::from_millis(800)).await;
}

/// A daemon bound on one runtime (a throwaway one, a test fixture's) and served on another
/// serves: `serve` moves the listening socket to the runtime it runs on. Before, every accept
/// failed once the binding runtime was gone ("being shutdown"), taken for a lack of file
/// descriptors and retried for ever, and clients timed out (helper-165 #2).
#[test]
fn a_daemon_bound_on_a_runtime_since_gone_serves_on_the_one_serve_runs_on() {
    let bound_on = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (daemon, lab) = bound_on.block_on(async {
        let daemon = Daemon::bind("127.0.0.1:0").await.unwrap();
        let lab = daemon
            .register(crate::support::LabServer::new(
                crate::support::LabObject::default(),
            ))
            .unwrap();
        (daemon, lab)
    });
    drop(bound_on);
    let serving = std::thread::spawn({
        let daemon = daemon.clone();
        move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(daemon.serve())
        }
    });
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let echoed = client.block_on(async {
        let proxy: LabProxy = LabProxy::builder(&lab)
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap();
        proxy.echo(1, 2, "served".into()).await.unwrap().2
    });
    assert_eq!(echoed, "served");
    daemon.shutdown();
    serving.join().unwrap().unwrap();
}
