//! Deadlines: per proxy, per call, on connect; a timed-out call leaves the connection usable.

use std::time::Duration;

use rmi::Error;

use crate::support::{silent_listener, start_daemon, unused_port, LabProxy};

#[tokio::test]
async fn a_timed_out_call_leaves_the_shared_connection_usable() {
    let (daemon, lab, _) = start_daemon().await;
    let proxy: LabProxy = LabProxy::builder(&lab)
        .unwrap()
        .timeout(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    // The calls that must succeed go with time to spare, on the same connection.
    let unhurried = proxy.with_timeout(Duration::from_secs(10));
    let before = unhurried.connection().await.unwrap();
    let err = proxy.sleep(5_000).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    assert!(!err.is_not_executed(), "a timed-out call may have run");
    // Same connection (Pyro would have dropped it), still answering.
    assert_eq!(unhurried.connection().await.unwrap(), before);
    assert_eq!(
        unhurried.echo(1, 2, "still here".into()).await.unwrap().2,
        "still here"
    );
    daemon.shutdown();
}

#[tokio::test]
async fn a_per_call_timeout_overrides_the_proxy_default() {
    let (daemon, lab, _) = start_daemon().await;
    let patient = LabProxy::connect(&lab).await.unwrap();
    let hasty = patient.with_timeout(Duration::from_millis(100));
    assert!(matches!(
        hasty.sleep(5_000).await.unwrap_err(),
        Error::Timeout(_)
    ));
    assert_eq!(
        patient.sleep(200).await.unwrap(),
        200,
        "the original proxy has no deadline"
    );
    assert_eq!(
        patient.connection().await.unwrap(),
        hasty.connection().await.unwrap(),
        "both share one connection"
    );
    daemon.shutdown();
}

#[tokio::test]
async fn connect_timeout_and_requests_that_provably_did_not_run() {
    // A listener that accepts but never answers the handshake.
    let port = silent_listener().await;
    let uri = rmi::Uri::tcp("obj", "127.0.0.1", port);
    let started = std::time::Instant::now();
    let err = LabProxy::builder(&uri)
        .unwrap()
        .connect_timeout(Duration::from_millis(200))
        .reconnect_attempts(0)
        .connect::<LabProxy>()
        .await
        .unwrap_err();
    assert!(err.is_communication() && err.is_not_executed(), "{err:?}");
    assert!(err.to_string().contains("timed out"), "{err}");
    // At the connect timeout, not at some other bound (a loose one: the machine may be slow).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Nothing listening: the call was never sent, and the error says so.
    let nobody = LabProxy::builder(rmi::Uri::tcp("lab", "127.0.0.1", unused_port()))
        .unwrap()
        .reconnect_attempts(1)
        .build();
    let nobody = LabProxy::from_proxy(nobody);
    let err = nobody.echo(0, 0, "x".into()).await.unwrap_err();
    assert!(
        matches!(err, Error::NotSent(_)) && err.is_not_executed(),
        "{err:?}"
    );

    // Refused before dispatch: also provably not executed.
    let (daemon, lab, _) = start_daemon().await;
    let proxy: rmi::Proxy = rmi::Proxy::builder(lab).connect().await.unwrap();
    let err = proxy.call::<_, ()>("nope", &[(); 0]).await.unwrap_err();
    assert!(err.is_not_executed(), "{err}");
    daemon.shutdown();
}

#[tokio::test]
async fn a_tcp_connect_that_never_completes_fails_at_the_connect_timeout() {
    // A listener whose accept queue is full and never drained: Linux drops further SYNs, so a
    // connect to it hangs in the kernel (SYN retransmits for minutes), before any handshake.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    let full = loop {
        let probe = tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr),
        )
        .await;
        match probe {
            Ok(Ok(stream)) => fillers.push(stream),
            Ok(Err(e)) => panic!("connecting to the filled listener: {e}"),
            Err(_) => break true,
        }
        if fillers.len() > 16 {
            break false;
        }
    };
    assert!(
        full,
        "the accept queue never filled: this kernel does not drop SYNs"
    );

    let uri = rmi::Uri::tcp("obj", "127.0.0.1", addr.port());
    let started = std::time::Instant::now();
    let err = LabProxy::builder(&uri)
        .unwrap()
        .connect_timeout(Duration::from_millis(300))
        .reconnect_attempts(0)
        .connect::<LabProxy>()
        .await
        .unwrap_err();
    // Never sent, for want of a connection within the connect timeout.
    assert!(
        matches!(&err, Error::NotSent(inner)
            if matches!(**inner, Error::Timeout(t) if t == Duration::from_millis(300))),
        "{err:?}"
    );
    assert!(err.is_not_executed(), "{err:?}");
    // Bounded by the connect timeout, not by the kernel's SYN retries (the first alone is 1 s
    // later, the second 3 s; a loose bound, as the machine may be slow).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    drop(listener);
}

#[rmi::remote]
pub(crate) trait Slow {
    /// Sleeps `ms`, then marks itself finished.
    async fn work(&self, ms: u64) -> u64;
    /// Whether a `work` call ever finished.
    async fn finished(&self) -> bool;
    /// How many `work` calls started.
    async fn started(&self) -> usize;
    /// The `ms` of each `work` call that finished, in order.
    async fn completed(&self) -> Vec<u64>;
    /// The daemon's id of the connection this call came on.
    async fn connection(&self) -> u64;
}

#[derive(Default)]
struct SlowObject {
    finished: std::sync::atomic::AtomicBool,
    started: std::sync::atomic::AtomicUsize,
    completed: std::sync::Mutex<Vec<u64>>,
}

impl Slow for SlowObject {
    async fn work(&self, ms: u64) -> u64 {
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.finished
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.completed.lock().unwrap().push(ms);
        ms
    }

    async fn finished(&self) -> bool {
        self.finished.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn started(&self) -> usize {
        self.started.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn completed(&self) -> Vec<u64> {
        self.completed.lock().unwrap().clone()
    }

    async fn connection(&self) -> u64 {
        rmi::context::current().expect("a call").connection()
    }
}

#[tokio::test]
async fn the_daemon_cancels_a_method_when_its_callers_deadline_passes() {
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon
        .register(SlowServer::new(SlowObject::default()))
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let proxy = SlowProxy::connect(&uri).await.unwrap();
    let err = proxy
        .with_timeout(Duration::from_millis(200))
        .work(1_500)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert!(
        !proxy.finished().await.unwrap(),
        "the method ran on after its caller's deadline"
    );
    // Without a deadline it runs to the end.
    assert_eq!(proxy.work(10).await.unwrap(), 10);
    assert!(proxy.finished().await.unwrap());
    daemon.shutdown();
}

#[tokio::test]
async fn dropping_a_calls_future_cancels_it_for_the_caller_and_the_method_runs_to_completion() {
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon
        .register(SlowServer::new(SlowObject::default()))
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let proxy = SlowProxy::connect(&uri).await.unwrap();
    let connection = proxy.connection().await.unwrap();
    // A call without a deadline, whose future is dropped once the method has started.
    let call = tokio::spawn({
        let p = proxy.clone();
        async move { p.work(1_000).await }
    });
    let started = std::time::Instant::now();
    while proxy.started().await.unwrap() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the call never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    call.abort();
    assert!(
        call.await.unwrap_err().is_cancelled(),
        "the caller's side was cancelled"
    );
    assert!(
        proxy.completed().await.unwrap().is_empty(),
        "finished too early to tell"
    );
    // The connection is unharmed, and new calls get their own answers: one answered before
    // the dropped call's late reply comes, one still waiting when it comes.
    assert_eq!(proxy.work(5).await.unwrap(), 5);
    let waiting = tokio::spawn({
        let p = proxy.clone();
        async move { p.work(1_500).await }
    });
    // The dropped call, which had no deadline, runs to completion on the daemon (2 s of
    // margin over its 1 s).
    while !proxy.completed().await.unwrap().contains(&1_000) {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the dropped call did not run to completion: {:?}",
            proxy.completed().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(waiting.await.unwrap().unwrap(), 1_500);
    assert_eq!(
        proxy.connection().await.unwrap(),
        connection,
        "all on the first connection: dropping a call's future does not cost it"
    );
    daemon.shutdown();
}

/// A call its caller gave up on keeps its in-flight slot until its reply comes; the late reply
/// frees it, so a proxy with every slot once abandoned goes on serving on the same connection
/// (without waiting out `abandoned_timeout` and redialling).
#[tokio::test]
async fn late_replies_to_abandoned_calls_free_their_slots() {
    let (daemon, lab, _) = start_daemon().await;
    let proxy: LabProxy = LabProxy::builder(&lab)
        .unwrap()
        .max_in_flight(2)
        .abandoned_timeout(Duration::from_secs(600))
        .connect()
        .await
        .unwrap();
    let before = proxy.connection().await.unwrap();
    let hasty = proxy.with_timeout(Duration::from_millis(100));
    for _ in 0..2 {
        let err = hasty.sleep(300).await.unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err}");
    }
    // Both replies come late (the daemon cancels each call at its deadline).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let patient = proxy.with_timeout(Duration::from_secs(20));
    for i in 0..4 {
        let echoed = patient.echo(i, 0, "after".into()).await;
        assert_eq!(echoed.expect("a slot is free").2, "after");
    }
    assert_eq!(proxy.connection().await.unwrap(), before, "no redial");
    daemon.shutdown();
}

/// A call whose deadline passes is an `Error::Timeout` whichever side's clock ran out first:
/// the daemon's (on a runtime of its own) counts from the request's arrival, and a first call
/// sent with its CONNECT was stamped before the dial, so its cancellation can reach the proxy
/// before the proxy's own timer fires. Before, that call came back as
/// `Error::Remote(DeadlineExceeded)`: not `is_timeout()`, and not retried by a retry policy
/// that retries timeouts.
#[tokio::test]
async fn a_deadline_passed_is_a_timeout_whichever_clock_runs_out_first() {
    let (daemon, uri) =
        crate::support::daemon_on_its_own_thread(SlowServer::new(SlowObject::default()));
    let timeout = Duration::from_millis(20);
    let shared = SlowProxy::connect(&uri).await.unwrap();
    for round in 0..40 {
        let fresh = SlowProxy::connect(&uri).await.unwrap();
        for (which, proxy) in [("fresh", &fresh), ("shared", &shared)] {
            let err = proxy.with_timeout(timeout).work(5_000).await.unwrap_err();
            assert!(
                matches!(err, Error::Timeout(t) if t == timeout) && err.is_timeout(),
                "round {round}, {which} proxy: {err:?}"
            );
        }
    }
    daemon.shutdown();
}
