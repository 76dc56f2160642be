//! Reconnecting after a daemon restart, once for all waiting calls, and retry rules.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rmi::Error;

use crate::support::{
    daemon_on_its_own_thread, eventually, spawn_child_daemon_on, unused_port, LabObject, LabProxy,
    LabServer,
};

// Multi-threaded: spawning the child blocks a thread, and the proxy must see the EOF meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_call_reconnects_after_a_restart_once_for_all_callers() {
    // The first daemon binds a port of its own choosing (a port found free and released
    // could be taken meanwhile); the second binds that one again.
    let (first, uri) = spawn_child_daemon_on(0);
    let port = port_of(&uri);
    let proxy: LabProxy = LabProxy::builder(&uri)
        .unwrap()
        .reconnect_attempts(20)
        .connect()
        .await
        .unwrap();
    assert_eq!(proxy.echo(0, 0, "first".into()).await.unwrap().2, "first");
    // Kill the daemon, and wait until the proxy's reader has seen the connection close, as it
    // would in a program whose daemon restarts (a call sent into a dying connection may have
    // run, so it fails).
    drop(first);
    eventually("the proxy saw its connection close", || {
        proxy.proxy().connected_uri().is_none()
    })
    .await;

    let (_second, uri2) = spawn_child_daemon_on(port);
    assert_eq!(uri, uri2, "same address, same object id");
    // Twenty callers at once: one redial serves them all (connection ids are per daemon, so
    // twenty separate redials would show twenty ids).
    let conns = join_all((0..20).map(|_| proxy.connection())).await;
    let conns: Vec<u64> = conns.into_iter().map(|c| c.unwrap()).collect();
    assert!(
        conns.iter().all(|c| *c == conns[0]),
        "callers reconnected separately: {conns:?}"
    );
    assert_eq!(proxy.echo(1, 1, "back".into()).await.unwrap().2, "back");
}

/// How long each call under test runs: far longer than it takes to see all of them start on
/// the first daemon and kill it, so none can finish there.
const RUNNING_MS: u64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_idempotent_or_retrying_calls_are_resent_after_a_connection_loss() {
    // The first daemon binds a port of its own choosing (a port found free and released
    // could be taken meanwhile); the second binds that one again.
    let (first, uri) = spawn_child_daemon_on(0);
    let port = port_of(&uri);
    let builder = || LabProxy::builder(&uri).unwrap().reconnect_attempts(50);
    let proxy: LabProxy = builder().connect().await.unwrap();
    // `ProxyBuilder::retries` on a proxy of its own (its own connection).
    let retrying: LabProxy = builder().retries(3).connect().await.unwrap();
    // Watches the first daemon's call counter over a third connection.
    let observer: LabProxy = builder().reconnect_attempts(0).connect().await.unwrap();

    // Five calls of plain (non-idempotent) or idempotent methods, each running when the
    // daemon dies: every way of asking for a resend, and one call that asks for none.
    let spawn =
        |call: futures_util::future::BoxFuture<'static, Result<u64, Error>>| tokio::spawn(call);
    let plain = spawn(Box::pin({
        let p = proxy.clone();
        async move { p.sleep(RUNNING_MS).await }
    }));
    let resent = [
        (
            "an #[rmi(idempotent)] method",
            spawn(Box::pin({
                let p = proxy.clone();
                async move { p.sleep_idempotent(RUNNING_MS).await }
            })),
        ),
        (
            "a plain method through Proxy::idempotent()",
            spawn(Box::pin({
                let p = LabProxy::from_proxy(proxy.proxy().idempotent());
                async move { p.sleep(RUNNING_MS).await }
            })),
        ),
        (
            "a plain method through Proxy::with_retries(2)",
            spawn(Box::pin({
                let p = LabProxy::from_proxy(proxy.proxy().with_retries(2));
                async move { p.sleep(RUNNING_MS).await }
            })),
        ),
        (
            "a plain method on a proxy built with retries(3)",
            spawn(Box::pin({
                let p = retrying.clone();
                async move { p.sleep(RUNNING_MS).await }
            })),
        ),
    ];
    // All five are running on the first daemon: it counted them.
    let started = Instant::now();
    loop {
        let ran = observer.calls().await.unwrap();
        if ran == 5 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "only {ran} of the 5 calls started on the first daemon"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(first); // killed mid-call
    let killed_after = started.elapsed();

    // The plain call fails at once (no daemon is listening yet, so a resend would wait).
    let err = tokio::time::timeout(Duration::from_secs(30), plain)
        .await
        .expect("the plain call was resent: it waited for a new daemon")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, Error::ConnectionClosed(_)),
        "a plain call is not resent: {err}"
    );

    // The resends run on the new daemon: it counts exactly the four of them, and not the
    // plain call.
    let (second, _) = spawn_child_daemon_on(port);
    let counter: LabProxy = builder().reconnect_attempts(0).connect().await.unwrap();
    let started = Instant::now();
    loop {
        let ran = counter.calls().await.unwrap();
        if ran == 4 {
            break;
        }
        assert!(ran < 4, "{ran} calls ran on the second daemon");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "only {ran} of the 4 resends started on the second daemon (the first was killed \
             {killed_after:?} after the calls started)"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // That daemon dies too: a call allowed one resend (idempotent) has used it and fails; one
    // allowed two or three (retries) is sent a third time (helper-149 #1: with every budget
    // taken as one, no test failed).
    drop(second);
    let mut resent = resent.into_iter();
    for (what, call) in resent.by_ref().take(2) {
        let err = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .unwrap_or_else(|_| panic!("{what}: resent a second time: it waited for a daemon"))
            .unwrap()
            .unwrap_err();
        assert!(err.is_communication(), "{what}: {err}");
    }
    let (_third, _) = spawn_child_daemon_on(port);
    for (what, call) in resent {
        let result = tokio::time::timeout(Duration::from_secs(60), call)
            .await
            .unwrap_or_else(|_| panic!("{what}: never answered"))
            .unwrap();
        assert_eq!(
            result.unwrap_or_else(|e| panic!("{what}: not resent twice: {e}")),
            RUNNING_MS,
            "{what}"
        );
    }
    let counter = LabProxy::connect(&uri).await.unwrap();
    assert_eq!(
        counter.calls().await.unwrap(),
        2,
        "the third daemon ran the two calls allowed more than one resend, once each"
    );
}

/// Dials that fail are retried after a wait that doubles each time (50 ms, jittered by half
/// either way): a "daemon" that accepts and hangs up sees the dials come ever further apart.
/// (helper-149 #5: a steady 50 ms, twenty dials a second per proxy for as long as its
/// attempts last, passed every test.)
#[tokio::test]
async fn dials_that_fail_are_retried_ever_further_apart() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let arrivals = tokio::spawn(async move {
        let mut at = Vec::new();
        // (A seventh, were there one, would come within the eighth's wait, 2.4 s at most.)
        while let Ok(Ok((client, _))) =
            tokio::time::timeout(Duration::from_millis(2_500), listener.accept()).await
        {
            at.push(Instant::now());
            drop(client);
        }
        at
    });
    let uri = rmi::Uri::tcp("nobody", "127.0.0.1", port);
    let err = LabProxy::builder(&uri)
        .unwrap()
        .reconnect_attempts(5)
        .connect::<LabProxy>()
        .await
        .unwrap_err();
    assert!(err.is_communication(), "{err}");
    let at = arrivals.await.unwrap();
    assert_eq!(at.len(), 6, "the first dial and five more");
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // 50, 100, 200, 400 and 800 ms, each at least half that.
    let total: Duration = gaps.iter().sum();
    assert!(total >= Duration::from_millis(775), "{gaps:?}");
    assert!(gaps[4] >= Duration::from_millis(400), "{gaps:?}");
}

/// The TCP port of a `PYRO:` URI.
fn port_of(uri: &rmi::Uri) -> u16 {
    match uri.location() {
        Some(rmi::Location::Tcp { port, .. }) => *port,
        other => panic!("not a TCP URI: {other:?}"),
    }
}

#[tokio::test]
async fn close_drops_the_connection_and_the_next_call_dials_again() {
    let (daemon, lab, _) = crate::support::start_daemon().await;
    let relay = crate::support::Relay::start(port_of(&lab)).await;
    let uri = rmi::Uri::tcp(lab.object().unwrap(), "127.0.0.1", relay.port);
    let proxy = LabProxy::connect(&uri).await.unwrap();
    assert_eq!(proxy.echo(1, 1, "a".into()).await.unwrap().2, "a");
    assert_eq!(relay.accepted(), 1);
    proxy.proxy().close();
    assert!(proxy.proxy().connected_uri().is_none(), "closed at once");
    assert_eq!(proxy.echo(2, 2, "b".into()).await.unwrap().2, "b");
    assert_eq!(relay.accepted(), 2, "the call after close dialed again");
    daemon.shutdown();
}

#[tokio::test]
async fn a_close_while_a_call_dials_leaves_no_connection_open_once_the_call_ends() {
    // A gate in front of the daemon: it accepts, and carries nothing until told to, so the
    // call's dial is surely under way when the proxy is closed (helper-158 #2: the dial then
    // stored its connection, which stayed open, held by a proxy told to close).
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let (daemon, lab, _) = crate::support::start_daemon().await;
    let target = port_of(&lab);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted_tx, accepted) = tokio::sync::oneshot::channel();
    let open = Arc::new(tokio::sync::Notify::new());
    let carried = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let (open, carried) = (open.clone(), carried.clone());
        async move {
            let (mut client, _) = listener.accept().await.unwrap();
            accepted_tx.send(()).unwrap();
            open.notified().await;
            let mut up = tokio::net::TcpStream::connect(("127.0.0.1", target))
                .await
                .unwrap();
            let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            carried.store(true, Ordering::SeqCst);
        }
    });
    let uri = rmi::Uri::tcp(lab.object().unwrap(), "127.0.0.1", port);
    let proxy = LabProxy::from_proxy(rmi::Proxy::builder(uri).build());
    let call = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.echo(1, 1, "dialing".into()).await }
    });
    accepted.await.unwrap();
    proxy.proxy().close();
    open.notify_one();
    // The call that dialed is made on its connection all the same...
    assert_eq!(call.await.unwrap().unwrap().2, "dialing");
    // ...which the proxy does not keep, and which closes with that call.
    assert!(proxy.proxy().connected_uri().is_none(), "kept after close");
    eventually("the connection dialed across the close closing", || {
        carried.load(Ordering::SeqCst)
    })
    .await;
    daemon.shutdown();
}

#[tokio::test]
async fn callers_waiting_for_a_dial_share_its_failure_instead_of_dialing_again() {
    // A "daemon" that accepts and hangs up at once (a relay to a port nothing listens on):
    // every handshake fails. Ten pings at once through one proxy (no reconnect attempts): one
    // dial, its failure shared by all ten.
    let relay = crate::support::Relay::start(unused_port()).await;
    let proxy = rmi::Proxy::builder(rmi::Uri::tcp("obj", "127.0.0.1", relay.port))
        .reconnect_attempts(0)
        .build();
    let pings = join_all((0..10).map(|_| proxy.ping())).await;
    assert!(pings.iter().all(Result::is_err), "{pings:?}");
    assert_eq!(relay.accepted(), 1, "one dial for ten waiting callers");
    // A later call does not reuse that old failure: it dials again.
    assert!(proxy.ping().await.is_err());
    assert_eq!(relay.accepted(), 2);
}

#[tokio::test]
async fn an_answer_at_connect_is_not_retried_however_many_reconnect_attempts() {
    // An unknown object is the daemon's answer, not an outage: dialing again would get the
    // same, so a proxy with 3 reconnect attempts dials once.
    let (daemon, lab, _) = crate::support::start_daemon().await;
    let relay = crate::support::Relay::start(port_of(&lab)).await;
    let missing = rmi::Uri::tcp("no_such_object", "127.0.0.1", relay.port);
    let err = LabProxy::builder(&missing)
        .unwrap()
        .reconnect_attempts(3)
        .connect::<LabProxy>()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownObject(_)), "{err:?}");
    assert_eq!(relay.accepted(), 1, "dialed once");
    daemon.shutdown();
}

/// An answer at connect (no such object, no such name, a name server down) is shared too: ten
/// callers waiting for one dial get its answer, of its kind, instead of each dialing in turn
/// (behind a name server that is down, each lookup seconds long: the tenth caller waited ten).
#[tokio::test]
async fn callers_waiting_for_a_dial_share_its_answer_of_the_same_kind() {
    let (daemon, lab, _) = crate::support::start_daemon().await;
    let relay = crate::support::Relay::start(port_of(&lab)).await;
    let proxy = rmi::Proxy::builder(rmi::Uri::tcp("no_such_object", "127.0.0.1", relay.port))
        .reconnect_attempts(3)
        .build();
    let pings = join_all((0..10).map(|_| proxy.ping())).await;
    for ping in &pings {
        assert!(matches!(ping, Err(Error::UnknownObject(_))), "{ping:?}");
    }
    assert_eq!(relay.accepted(), 1, "one dial for ten waiting callers");
    daemon.shutdown();
}

// Multi-threaded: spawning the child blocks a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_call_waits_out_a_daemon_that_is_still_starting() {
    // Nothing listens yet: the proxy's dials are refused, and it tries again with backoff
    // (30 attempts allowed) until the daemon, started 300 ms later, answers.
    let port = unused_port();
    let proxy = LabProxy::from_proxy(
        rmi::Proxy::builder(rmi::Uri::tcp("lab", "127.0.0.1", port))
            .reconnect_attempts(30)
            .build(),
    );
    let starter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::task::spawn_blocking(move || spawn_child_daemon_on(port))
            .await
            .unwrap()
    });
    let echoed = proxy.echo(7, 7, "late".into()).await;
    let (_child, _) = starter.await.unwrap();
    assert_eq!(echoed.unwrap().2, "late");
}

#[tokio::test]
async fn a_dial_whose_handshake_is_cut_off_is_tried_again() {
    // The first two connections are hung up on during the handshake (never sent, so safe to
    // try again); the third reaches the daemon. With 5 reconnect attempts the call succeeds.
    let (daemon, lab, _) = crate::support::start_daemon().await;
    let target = port_of(&lab);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn({
        let accepted = accepted.clone();
        async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    let mut up = tokio::net::TcpStream::connect(("127.0.0.1", target))
                        .await
                        .unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                });
            }
        }
    });
    let uri = rmi::Uri::tcp(lab.object().unwrap(), "127.0.0.1", port);
    let proxy = LabProxy::from_proxy(rmi::Proxy::builder(uri).reconnect_attempts(5).build());
    assert_eq!(proxy.echo(3, 3, "third".into()).await.unwrap().2, "third");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    daemon.shutdown();
}

/// A lone call reads its own reply; one that is polled once and then left holds that reading.
/// The proxy must still see its connection close (so the next call redials before sending).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_is_seen_while_a_lone_call_nobody_polls_holds_the_reading() {
    let (daemon, uri) = crate::support::spawn_child_daemon();
    let proxy: LabProxy = LabProxy::builder(&uri).unwrap().connect().await.unwrap();
    assert_eq!(proxy.echo(0, 0, "open".into()).await.unwrap().2, "open");
    let mut left = Box::pin(proxy.sleep(60_000));
    assert!(futures_util::poll!(&mut left).is_pending());
    drop(daemon);
    eventually("the proxy saw its connection close", || {
        proxy.proxy().connected_uri().is_none()
    })
    .await;
    let err = left.await.unwrap_err();
    assert!(err.is_communication(), "{err}");
}

/// A proxy whose connection was opened on a runtime that has since shut down (a proxy kept in
/// a static across tests, say) has a dead socket: the next call, from another runtime, dials
/// again instead of failing on it.
#[test]
fn a_proxy_that_outlives_the_runtime_of_its_connection_dials_again() {
    let (daemon, lab) = daemon_on_its_own_thread(LabServer::new(LabObject::default()));
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    // Connected and used, then the runtime gone.
    let first = runtime();
    let (proxy, before) = first.block_on(async {
        let proxy = LabProxy::connect(&lab).await.unwrap();
        let before = proxy.connection().await.unwrap();
        (proxy, before)
    });
    drop(first);
    let call_again = |proxy: &LabProxy| {
        runtime().block_on(async {
            let reply =
                tokio::time::timeout(Duration::from_secs(10), proxy.echo(1, 1, "again".into()))
                    .await
                    .expect("the call hung")
                    .expect("the call failed on the dead connection");
            assert_eq!(reply.2, "again");
            proxy.connection().await.unwrap()
        })
    };
    assert_ne!(call_again(&proxy), before, "not a new connection");

    // Only connected (the connection's tasks never ran), then the runtime gone.
    let proxy = runtime().block_on(LabProxy::connect(&lab)).unwrap();
    call_again(&proxy);
    daemon.shutdown();
}

/// What a proxy reports of itself: the per-call settings it was given, the decoding limits
/// it was built with, and the wire protocol only while a connection is live.
#[tokio::test]
async fn a_proxy_reports_its_settings_and_its_connection() {
    let (daemon, uri, _) = crate::support::start_daemon().await;
    let limits = rmi::DecodeLimits {
        max_message_size: 1 << 20,
        max_depth: 17,
    };
    let proxy = rmi::Proxy::builder(uri.clone()).limits(limits).build();
    assert_eq!(
        (proxy.limits().max_message_size, proxy.limits().max_depth),
        (1 << 20, 17)
    );
    assert_eq!(proxy.protocol(), None, "not connected yet");
    let tuned = proxy
        .with_timeout(Duration::from_secs(7))
        .with_retries(2)
        .idempotent()
        .with_annotation(*b"AAAA", &b"1"[..])
        .with_annotation(*b"BBBB", &b"2"[..])
        .with_annotation(*b"AAAA", &b"3"[..]);
    let options = tuned.options();
    assert_eq!(options.timeout, Some(Duration::from_secs(7)));
    assert_eq!((options.retries, options.idempotent), (2, true));
    let annotations: Vec<(&[u8], &[u8])> = options
        .annotations
        .iter()
        .map(|(k, v)| (&k[..], &v[..]))
        .collect();
    assert_eq!(
        annotations,
        [(&b"BBBB"[..], &b"2"[..]), (&b"AAAA"[..], &b"3"[..])],
        "a second AAAA replaces the first and leaves BBBB"
    );
    assert_eq!(proxy.options().timeout, None, "the original is unchanged");
    let lab = LabProxy::from(tuned);
    assert_eq!(lab.echo(1, 2, "x".into()).await.unwrap().2, "x");
    assert_eq!(
        lab.proxy().protocol(),
        Some(rmi::protocol::frame::Protocol::Pyro5)
    );
    daemon.shutdown();
}

/// A proxy made over a given stream never dials, even when its URI names a daemon that would
/// answer: once its stream has closed, calls fail, unsent, and nobody else is connected to.
#[tokio::test]
async fn a_proxy_over_a_given_stream_never_dials_when_it_closes() {
    let (daemon, uri) = daemon_on_its_own_thread(LabServer::new(LabObject::default()));
    let watcher = LabProxy::connect(&uri).await.unwrap();
    let stream = crate::support::dial(&uri).await;
    let proxy: LabProxy = rmi::Proxy::builder(uri.clone())
        .connect_over(stream)
        .await
        .unwrap();
    let connection = proxy.connection().await.unwrap();
    assert_ne!(connection, watcher.connection().await.unwrap());
    proxy.proxy().close();
    let err = proxy.echo(1, 2, "again".into()).await.unwrap_err();
    assert!(matches!(err, Error::NotSent(_)), "{err}");
    assert!(err.to_string().contains("never dials"), "{err}");
    // Not run anywhere: only the watcher's and the given stream's calls were counted.
    assert_eq!(watcher.calls().await.unwrap(), 2);
    drop(daemon);
}

/// A call whose connecting fails makes `reconnect_attempts` extra dials and no more: neither the
/// retry of a call found unsent on a dead connection nor the `retries` a proxy was given repeat
/// a whole failed dial (with `retries(3)`, four times `reconnect_attempts + 1` dials).
#[tokio::test]
async fn a_failing_dial_is_tried_reconnect_attempts_more_times_and_no_more() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    // Accepts and hangs up at once: every dial fails in its handshake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    tokio::spawn({
        let accepted = accepted.clone();
        async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                accepted.fetch_add(1, Ordering::SeqCst);
                drop(s);
            }
        }
    });
    let uri = rmi::Uri::tcp("lab", "127.0.0.1", port);
    for (attempts, retries) in [(0u32, 0u32), (2, 0), (2, 3)] {
        let before = accepted.load(Ordering::SeqCst);
        let proxy: LabProxy = rmi::Proxy::builder(uri.clone())
            .reconnect_attempts(attempts)
            .retries(retries)
            .build()
            .into();
        let err = proxy.echo(0, 0, "never".into()).await.unwrap_err();
        assert!(err.is_not_executed(), "{err}");
        // (Counted before the hang-up the proxy saw.)
        assert_eq!(
            accepted.load(Ordering::SeqCst) - before,
            attempts as usize + 1,
            "reconnect_attempts({attempts}), retries({retries}): {err}"
        );
    }
}

/// `Proxy::detached` is the proxy with its settings on a connection of its own (Pyro's
/// `_pyroClone`): it dials on its first call, and closing it leaves the original's connection
/// alone. (The lease keeper relies on it to close a connection that went silent without
/// failing its caller's other calls.)
#[tokio::test]
async fn a_detached_proxy_has_a_connection_of_its_own() {
    let (daemon, _, greeter) = crate::support::start_daemon().await;
    let port = match greeter.location() {
        Some(rmi::Location::Tcp { port, .. }) => *port,
        other => panic!("{other:?}"),
    };
    let relay = crate::support::Relay::start(port).await;
    let through = rmi::Uri::tcp(greeter.object().unwrap(), "127.0.0.1", relay.port);
    let original: rmi::Proxy = rmi::Proxy::builder(through).connect().await.unwrap();
    let original = original.with_timeout(Duration::from_secs(7));
    let hi = |p: rmi::Proxy| async move {
        p.call::<_, String>("welcomeMessage", &("d",))
            .await
            .unwrap()
    };
    assert_eq!(hi(original.clone()).await, "Hi welcome d");
    let detached = original.detached();
    assert_eq!(detached.options().timeout, Some(Duration::from_secs(7)));
    assert!(
        detached.connected_uri().is_none(),
        "it dials on its first call"
    );
    assert_eq!(hi(detached.clone()).await, "Hi welcome d");
    assert_eq!(relay.accepted(), 2, "a connection of its own");
    detached.close();
    assert!(original.connected_uri().is_some());
    assert_eq!(hi(original.clone()).await, "Hi welcome d");
    assert_eq!(
        relay.accepted(),
        2,
        "the original's connection was left alone"
    );
    daemon.shutdown();
}

/// The test plan's T-REC-1: a client calling every 10 ms while its daemon is killed and, a
/// second later, started again on the same port. Calls fail only while it is down (and the
/// ones it was running as it died); the first call after the new daemon is up succeeds within
/// a second; and every call the client saw succeed on the new daemon ran there exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_made_while_the_daemon_is_down_fail_and_recover_once_it_is_back() {
    // The first daemon binds a port of its own choosing (a port found free and released
    // could be taken meanwhile); the second binds that one again.
    let (first, uri) = spawn_child_daemon_on(0);
    let port = port_of(&uri);
    // No extra dials: a call while the daemon is down fails at once, as it would in a
    // program that reports outages rather than waiting them out.
    let proxy: LabProxy = LabProxy::builder(&uri)
        .unwrap()
        .reconnect_attempts(0)
        .connect()
        .await
        .unwrap();
    let started = Instant::now();
    let calls = tokio::spawn({
        let proxy = proxy.clone();
        async move {
            let mut outcomes = Vec::new();
            while started.elapsed() < Duration::from_millis(3_500) {
                let at = started.elapsed();
                let ok = proxy.echo(0, 0, "tick".into()).await.is_ok();
                outcomes.push((at, started.elapsed(), ok));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            outcomes
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = started.elapsed();
    drop(first);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (_second, uri2) = spawn_child_daemon_on(port);
    let back = started.elapsed();
    assert_eq!(uri, uri2);
    let outcomes = calls.await.unwrap();

    let failed: Vec<_> = outcomes.iter().filter(|(_, _, ok)| !ok).collect();
    assert!(!failed.is_empty(), "no call saw the daemon down");
    for (at, done, _) in &failed {
        assert!(
            *done >= killed && *at <= back,
            "a call failed outside the outage ({killed:?} to {back:?}): sent {at:?}, failed {done:?}"
        );
    }
    let recovered = outcomes
        .iter()
        .find(|(at, _, ok)| *ok && *at >= back)
        .map(|(_, done, _)| *done)
        .expect("no call succeeded after the restart");
    assert!(
        recovered - back < Duration::from_secs(1),
        "the first call after the restart succeeded {:?} after it",
        recovered - back
    );
    // Successes on the new daemon, against what it ran (each call sent after the first
    // failure went to it, if it went anywhere).
    let first_failure = failed[0].0;
    let after: usize = outcomes
        .iter()
        .filter(|(at, _, ok)| *ok && *at > first_failure)
        .count();
    let ran = proxy.calls().await.unwrap();
    println!(
        "outage {killed:?} to {back:?}: {} calls failed, the first success after it at {recovered:?}, {after} succeeded on the new daemon, which ran {ran}",
        failed.len()
    );
    assert_eq!(
        ran, after,
        "calls on the new daemon ran twice or went missing"
    );
}
