//! The call context: caller address, correlation id, annotations both ways, deadline.

use std::time::Duration;

#[rmi::remote]
pub(crate) trait Introspect {
    /// Reports what the method sees of its call.
    async fn whoami(&self) -> Seen;
    /// The `USER` annotation it was sent; sets a `MARK` reply annotation when `mark`.
    async fn mark(&self, mark: bool) -> Option<Vec<u8>>;
    /// Keeps this call's context.
    async fn keep(&self);
    /// The `USER` annotation and method of the kept context.
    async fn kept(&self) -> (Option<Vec<u8>>, String);
    /// Waits `ms` milliseconds, with a guard that notes, when dropped, the method its context
    /// names (its caller's deadline cancels it first).
    async fn guarded(&self, ms: u64);
    /// The length of `bytes`.
    async fn swallow(&self, bytes: Vec<u8>) -> usize;
    /// What the last dropped guard noted: `Some(None)` if it saw no context.
    async fn guard_saw(&self) -> Option<Option<String>>;
    /// Notes whether its context says oneway (oneway itself).
    #[rmi(oneway)]
    async fn note_oneway(&self);
    /// What the last `note_oneway` noted.
    async fn noted_oneway(&self) -> Option<bool>;
    /// Waits up to `ms` milliseconds for its caller to go, then notes whether the caller was
    /// gone when it started and whether it went.
    async fn outlast_caller(&self, ms: u64);
    /// What the last `outlast_caller` noted, and how many have started.
    async fn outlasted(&self) -> (Option<(bool, bool)>, usize);
    /// 1, 2, 3, having set reply annotations `STRM` (the runtime's) and `ZONE`.
    async fn shadow_stream(&self) -> rmi::RemoteStream<u32>;
    /// Counts itself, sets the reply annotation `NRUN` (the runtime's "not run"), and fails.
    #[rmi(raises)]
    async fn ran_and_failed(&self) -> Result<u32, rmi::RemoteError>;
    /// How many `ran_and_failed` calls ran.
    async fn failed_runs(&self) -> usize;
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Seen {
    peer: String,
    correlation_id: String,
    user: Option<Vec<u8>>,
    time_left_ms: Option<u64>,
    has_deadline: bool,
    method: String,
    object: String,
    oneway: bool,
    connection: u64,
    /// The ids of the request annotations, in order.
    annotation_ids: Vec<String>,
    /// `CallContext::current()` agrees with `rmi::context::current()`.
    current_agrees: bool,
}

#[derive(Default)]
struct IntrospectObject {
    kept: std::sync::Mutex<Option<rmi::CallContext>>,
    guard_saw: std::sync::Arc<std::sync::Mutex<Option<Option<String>>>>,
    noted_oneway: std::sync::Mutex<Option<bool>>,
    outlasted: std::sync::Mutex<Option<(bool, bool)>>,
    outlasting: std::sync::atomic::AtomicUsize,
    failed_runs: std::sync::atomic::AtomicUsize,
}

/// Notes the method of the context current when it is dropped.
struct Guard(std::sync::Arc<std::sync::Mutex<Option<Option<String>>>>);

impl Drop for Guard {
    fn drop(&mut self) {
        let method = rmi::context::current().map(|ctx| ctx.method().to_owned());
        *self.0.lock().unwrap() = Some(method);
    }
}

impl Introspect for IntrospectObject {
    async fn ran_and_failed(&self) -> Result<u32, rmi::RemoteError> {
        self.failed_runs
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let ctx = rmi::context::current().expect("a context");
        ctx.set_response_annotation(*b"NRUN", Vec::new());
        Err(rmi::RemoteError::new(
            rmi::RemoteErrorKind::Other,
            "app.Failed",
            "it ran, then failed",
        ))
    }

    async fn failed_runs(&self) -> usize {
        self.failed_runs.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn shadow_stream(&self) -> rmi::RemoteStream<u32> {
        let ctx = rmi::context::current().expect("a context");
        ctx.set_response_annotation(*b"STRM", b"not-a-stream".to_vec());
        ctx.set_response_annotation(*b"ZONE", b"eu".to_vec());
        rmi::RemoteStream::iter([1, 2, 3])
    }

    async fn whoami(&self) -> Seen {
        let ctx = rmi::context::current().expect("every call has a context");
        // Set twice: the second replaces the first, and leaves ZONE alone.
        ctx.set_response_annotation(*b"SRVR", b"node-0".to_vec());
        ctx.set_response_annotation(*b"ZONE", b"eu".to_vec());
        ctx.set_response_annotation(*b"SRVR", b"node-1".to_vec());
        Seen {
            peer: ctx.peer().to_string(),
            correlation_id: ctx.correlation_id().to_string(),
            user: ctx.annotation(b"USER").map(|v| v.to_vec()),
            time_left_ms: ctx.time_left().map(|d| d.as_millis() as u64),
            has_deadline: ctx.deadline().is_some(),
            method: ctx.method().to_string(),
            object: ctx.object().to_string(),
            oneway: ctx.is_oneway(),
            connection: ctx.connection(),
            annotation_ids: ctx
                .annotations()
                .iter()
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                .collect(),
            current_agrees: rmi::CallContext::current()
                .is_some_and(|c| c.correlation_id() == ctx.correlation_id()),
        }
    }

    async fn note_oneway(&self) {
        let ctx = rmi::context::current().expect("every call has a context");
        *self.noted_oneway.lock().unwrap() = Some(ctx.is_oneway());
    }

    async fn noted_oneway(&self) -> Option<bool> {
        *self.noted_oneway.lock().unwrap()
    }

    async fn outlast_caller(&self, ms: u64) {
        let ctx = rmi::context::current().expect("every call has a context");
        let gone_at_start = ctx.is_caller_gone();
        self.outlasting
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let went = tokio::select! {
            () = ctx.caller_gone() => true,
            () = tokio::time::sleep(Duration::from_millis(ms)) => false,
        };
        assert_eq!(went, ctx.is_caller_gone());
        *self.outlasted.lock().unwrap() = Some((gone_at_start, went));
    }

    async fn outlasted(&self) -> (Option<(bool, bool)>, usize) {
        let started = self.outlasting.load(std::sync::atomic::Ordering::SeqCst);
        (*self.outlasted.lock().unwrap(), started)
    }

    async fn mark(&self, mark: bool) -> Option<Vec<u8>> {
        let ctx = rmi::context::current().expect("every call has a context");
        if mark {
            ctx.set_response_annotation(*b"MARK", b"set".to_vec());
        }
        ctx.annotation(b"USER").map(|v| v.to_vec())
    }

    async fn keep(&self) {
        let ctx = rmi::context::current();
        if let Some(ctx) = &ctx {
            // Set on a context that outlives the call: the reply carries it all the same.
            ctx.set_response_annotation(*b"KEPT", b"yes".to_vec());
        }
        *self.kept.lock().unwrap() = ctx;
    }

    async fn guarded(&self, ms: u64) {
        let _guard = Guard(self.guard_saw.clone());
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    async fn swallow(&self, bytes: Vec<u8>) -> usize {
        bytes.len()
    }

    async fn guard_saw(&self) -> Option<Option<String>> {
        self.guard_saw.lock().unwrap().clone()
    }

    async fn kept(&self) -> (Option<Vec<u8>>, String) {
        let kept = self.kept.lock().unwrap();
        let ctx = kept.as_ref().expect("kept");
        (
            ctx.annotation(b"USER").map(|v| v.to_vec()),
            ctx.method().to_string(),
        )
    }
}

/// A daemon serving an [`IntrospectObject`], and a proxy connected to it.
async fn introspect() -> (rmi::Daemon, IntrospectProxy) {
    introspect_on(rmi::Daemon::builder()).await
}

/// [`introspect`] on a daemon made by `builder`.
async fn introspect_on(builder: rmi::daemon::DaemonBuilder) -> (rmi::Daemon, IntrospectProxy) {
    let daemon = builder.bind("127.0.0.1:0").await.unwrap();
    let uri = daemon
        .register(IntrospectServer::new(IntrospectObject::default()))
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let proxy = IntrospectProxy::connect(&uri).await.unwrap();
    (daemon, proxy)
}

#[tokio::test]
async fn a_method_sees_its_caller_and_sets_reply_annotations() {
    let (daemon, proxy) = introspect().await;

    // Without options: a fresh correlation id, no annotations, no deadline.
    let seen = proxy.whoami().await.unwrap();
    assert!(seen.peer.starts_with("127.0.0.1:"), "{seen:?}");
    assert_eq!(seen.method, "whoami");
    assert_eq!(seen.object, proxy.proxy().uri().object().unwrap());
    assert!(
        seen.user.is_none() && seen.time_left_ms.is_none() && !seen.has_deadline,
        "{seen:?}"
    );
    assert!(!seen.oneway && seen.current_agrees, "{seen:?}");
    assert!(seen.annotation_ids.is_empty(), "{seen:?}");
    // The connection: the same for this proxy's calls, another for another proxy's.
    assert_eq!(proxy.whoami().await.unwrap().connection, seen.connection);
    let other = IntrospectProxy::connect(proxy.proxy().uri().clone())
        .await
        .unwrap();
    assert_ne!(other.whoami().await.unwrap().connection, seen.connection);
    // A oneway call's context says so.
    proxy.note_oneway().await.unwrap();
    let noted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(noted) = proxy.noted_oneway().await.unwrap() {
                return noted;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the oneway call ran");
    assert!(noted, "a oneway call's context says oneway");

    // With a correlation id, an annotation and a deadline, through the untyped proxy to get
    // the reply annotations too.
    let corr = uuid_like();
    let tuned = proxy
        .proxy()
        .with_correlation_id(corr)
        .with_annotation(*b"USER", &b"alice"[..])
        .with_annotation(*b"ANN2", &b"more"[..])
        .with_timeout(Duration::from_secs(20));
    let reply = tuned
        .call_full::<_, Seen>("whoami", &[(); 0])
        .await
        .unwrap();
    assert_eq!(reply.value.correlation_id, corr.to_string());
    assert_eq!(reply.correlation_id, corr);
    assert_eq!(reply.value.user.as_deref(), Some(&b"alice"[..]));
    let left = reply.value.time_left_ms.expect("deadline travelled");
    assert!(left > 0 && left <= 20_000, "{left}");
    assert!(reply.value.has_deadline);
    let ids = &reply.value.annotation_ids;
    let user = ids.iter().position(|k| k == "USER");
    let ann2 = ids.iter().position(|k| k == "ANN2");
    assert!(
        matches!((user, ann2), (Some(u), Some(a)) if u < a),
        "every request annotation, in order: {ids:?}"
    );
    let values = |id: &[u8; 4]| -> Vec<Vec<u8>> {
        reply
            .annotations
            .iter()
            .filter(|(k, _)| k == id)
            .map(|(_, v)| v.to_vec())
            .collect()
    };
    assert_eq!(values(b"SRVR"), [b"node-1".to_vec()], "replaced, not added");
    assert_eq!(values(b"ZONE"), [b"eu".to_vec()]);
    daemon.shutdown();
}

fn uuid_like() -> rmi::uuid::Uuid {
    rmi::uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1122_3344_5566_7788)
}

/// One call's context never shows in the next call's on the same connection (the daemon runs
/// them in one reused allocation when the method kept no clone), and a context a method kept
/// stays its own call's.
#[tokio::test]
async fn each_call_sees_only_its_own_context() {
    let (daemon, proxy) = introspect().await;
    let marked =
        |reply: &rmi::Reply<Option<Vec<u8>>>| reply.annotations.iter().any(|(k, _)| k == b"MARK");
    for _ in 0..3 {
        let tuned = proxy
            .proxy()
            .with_annotation(*b"USER", &b"alice"[..])
            .with_timeout(Duration::from_secs(20));
        let first = tuned
            .call_full::<_, Option<Vec<u8>>>("mark", &(true,))
            .await
            .unwrap();
        assert_eq!(first.value.as_deref(), Some(&b"alice"[..]));
        assert!(marked(&first));
        let plain = proxy
            .proxy()
            .call_full::<_, Option<Vec<u8>>>("mark", &(false,))
            .await
            .unwrap();
        assert_eq!(
            plain.value, None,
            "a request annotation leaked into the next call"
        );
        assert!(
            !marked(&plain),
            "a reply annotation leaked into the next call"
        );
        let seen = proxy.whoami().await.unwrap();
        assert_eq!(
            seen.time_left_ms, None,
            "a deadline leaked into the next call"
        );
        assert_eq!(seen.method, "whoami");
    }
    let kept = proxy
        .proxy()
        .with_annotation(*b"USER", &b"alice"[..])
        .call_full::<_, ()>("keep", &[(); 0])
        .await
        .unwrap();
    assert!(
        kept.annotations
            .iter()
            .any(|(k, v)| k == b"KEPT" && &v[..] == b"yes"),
        "a reply annotation set on a context the method kept"
    );
    let later = proxy.proxy().with_annotation(*b"USER", &b"bob"[..]);
    assert_eq!(
        later
            .call::<_, Option<Vec<u8>>>("mark", &(false,))
            .await
            .unwrap()
            .as_deref(),
        Some(&b"bob"[..])
    );
    let (user, method) = proxy.kept().await.unwrap();
    assert_eq!(
        (user.as_deref(), method.as_str()),
        (Some(&b"alice"[..]), "keep")
    );
    daemon.shutdown();
}

/// A call that waited for an in-flight slot tells the daemon the time its caller has left, not
/// the whole timeout: the daemon would otherwise run it (and hold its resources) for as long
/// again after its caller had given up.
#[tokio::test]
async fn a_call_that_waited_for_a_slot_sends_the_time_its_caller_has_left() {
    let (daemon, proxy) = introspect().await;
    let timeout = Duration::from_secs(4);
    let one_slot = IntrospectProxy::builder(proxy.proxy().uri())
        .unwrap()
        .max_in_flight(1)
        .timeout(timeout)
        .connect::<IntrospectProxy>()
        .await
        .unwrap();
    let holder = tokio::spawn({
        let p = one_slot.clone();
        async move { p.guarded(1_500).await }
    });
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = std::time::Instant::now();
    // Queued behind `guarded`: its slot comes free no sooner than 1.5 s after `started`.
    let seen = one_slot.whoami().await.unwrap();
    holder.await.unwrap().unwrap();
    assert_given_the_time_left(&seen, asked - started, timeout);
    daemon.shutdown();
}

/// Asserts that `seen`, a call asked `after` the 1.5 s `guarded` call ahead of it started, was
/// given its `timeout` less what it waited for that call: at least the rest of the 1.5 s.
fn assert_given_the_time_left(seen: &Seen, after: Duration, timeout: Duration) {
    let waited_at_least = Duration::from_millis(1_500).saturating_sub(after);
    let left = Duration::from_millis(seen.time_left_ms.expect("a deadline travelled"));
    assert!(
        left + waited_at_least <= timeout,
        "the daemon was given {left:?}, though the call had waited at least {waited_at_least:?} \
         of its {timeout:?}"
    );
}

/// A call that waited in the proxy's outbox (behind a large argument the daemon was not
/// reading yet) tells the daemon the time its caller has left when it is written, not the
/// timeout it was encoded with.
#[tokio::test]
async fn a_call_that_waited_behind_a_large_write_sends_the_time_its_caller_has_left() {
    behind_a_large_write(false).await;
}

/// The same for a call sent in the same turn as the large argument, which the outbox would
/// write together (helper-141 #1): it waits for the next write, and is stamped then.
#[tokio::test]
async fn a_call_sent_with_a_large_write_sends_the_time_its_caller_has_left() {
    behind_a_large_write(true).await;
}

async fn behind_a_large_write(together: bool) {
    // One call at a time per connection: while `guarded` runs, the daemon reads nothing more,
    // so the large argument behind it fills the socket and the proxy's writer waits on it.
    let (daemon, proxy) = introspect_on(rmi::Daemon::builder().max_in_flight(1)).await;
    let timeout = Duration::from_secs(5);
    let proxy = IntrospectProxy::from(proxy.proxy().with_timeout(timeout));
    proxy.whoami().await.unwrap();
    let started = std::time::Instant::now();
    let holder = tokio::spawn({
        let p = proxy.clone();
        async move { p.guarded(1_500).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Queued behind the large argument, which the daemon reads no sooner than 1.5 s after
    // `started`: written in an earlier write, or queued in the same turn.
    let large = {
        let p = proxy.clone();
        async move { p.swallow(vec![7; 32 << 20]).await }
    };
    let (asked, large, seen) = if together {
        let asked = std::time::Instant::now();
        let (large, seen) = tokio::join!(large, proxy.whoami());
        (asked, large, seen)
    } else {
        let large = tokio::spawn(large);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let asked = std::time::Instant::now();
        let seen = proxy.whoami().await;
        (asked, large.await.unwrap(), seen)
    };
    let seen = seen.unwrap();
    holder.await.unwrap().unwrap();
    assert_eq!(large.unwrap(), 32 << 20);
    assert_given_the_time_left(&seen, asked - started, timeout);
    daemon.shutdown();
}

/// A method cancelled at its caller's deadline is dropped with its context still current, as
/// it is while it runs: cleanup code in a drop guard may ask for it.
#[tokio::test]
async fn a_method_cancelled_at_its_deadline_sees_its_context_while_it_is_dropped() {
    let (daemon, proxy) = introspect().await;
    let hurried = IntrospectProxy::from(proxy.proxy().with_timeout(Duration::from_millis(100)));
    assert!(matches!(
        hurried.guarded(60_000).await.unwrap_err(),
        rmi::Error::Timeout(_)
    ));
    // Within seconds of the deadline, not when the minute's sleep would have ended.
    let saw = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Some(saw) = proxy.guard_saw().await.unwrap() {
                return saw;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the daemon cancels the call at the deadline");
    assert_eq!(saw.as_deref(), Some("guarded"));
    daemon.shutdown();
}

#[tokio::test]
async fn a_method_learns_that_its_caller_is_gone() {
    let (daemon, watcher) = introspect().await;
    let uri = watcher.proxy().uri().clone();
    // A caller that stays: the method waits its whole time.
    watcher.outlast_caller(50).await.unwrap();
    assert_eq!(watcher.outlasted().await.unwrap().0, Some((false, false)));
    // A caller that goes while the method waits: the method hears it at once, not after
    // its minute.
    let leaving = IntrospectProxy::connect(&uri).await.unwrap();
    let call = tokio::spawn({
        let leaving = leaving.clone();
        async move { leaving.outlast_caller(60_000).await }
    });
    // Closed once the method runs.
    while watcher.outlasted().await.unwrap().1 < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    leaving.proxy().close();
    assert!(call.await.unwrap().is_err(), "its connection closed");
    let noted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(noted) = watcher.outlasted().await.unwrap().0.filter(|n| n.1) {
                return noted;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the method heard its caller go");
    assert_eq!(noted, (false, true));
    daemon.shutdown();
}

/// A caller that leaves while its call runs in the grace period of a shutdown: the method
/// hears it at once, and the shutdown ends then, not at the grace period's end (helper-156
/// #4: the connection took any end during a shutdown for the shutdown's, so the method ran
/// on for the whole grace period).
#[tokio::test]
async fn a_method_learns_that_its_caller_left_during_the_grace_period() {
    let daemon = rmi::Daemon::builder()
        .grace_period(Duration::from_secs(60))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let uri = daemon
        .register(IntrospectServer::new(IntrospectObject::default()))
        .unwrap();
    let serving = tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let watcher = IntrospectProxy::connect(&uri).await.unwrap();
    let leaving = IntrospectProxy::connect(&uri).await.unwrap();
    let call = tokio::spawn({
        let leaving = leaving.clone();
        async move { leaving.outlast_caller(60_000).await }
    });
    while watcher.outlasted().await.unwrap().1 < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    daemon.shutdown();
    leaving.proxy().close();
    assert!(call.await.unwrap().is_err(), "its connection closed");
    tokio::time::timeout(Duration::from_secs(20), serving)
        .await
        .expect("the shutdown ended with the call, not at the grace period's end")
        .unwrap()
        .unwrap();
}

/// Passes a call on to the introspecting object, with the proxy it was given.
#[rmi::remote]
pub(crate) trait Relay {
    /// What `whoami` sees when this method calls it.
    async fn relay(&self) -> Seen;
    /// The same, called after `ms` milliseconds.
    async fn relay_after(&self, ms: u64) -> Seen;
    /// The same, through a proxy that sets a correlation id and a timeout of its own.
    async fn relay_own(&self) -> Seen;
    /// What `whoami` sees when a task this method spawned calls it: in the method's context
    /// (`in_scope`), and without.
    async fn relay_spawned(&self) -> (Seen, Seen, bool);
}

struct RelayObject(IntrospectProxy);

impl Relay for RelayObject {
    async fn relay(&self) -> Seen {
        self.0.whoami().await.unwrap()
    }

    async fn relay_after(&self, ms: u64) -> Seen {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.0.whoami().await.unwrap()
    }

    async fn relay_own(&self) -> Seen {
        let own = self
            .0
            .proxy()
            .with_correlation_id(rmi::uuid::Uuid::from_u128(7))
            .with_timeout(Duration::from_secs(3));
        own.call("whoami", &()).await.unwrap()
    }

    async fn relay_spawned(&self) -> (Seen, Seen, bool) {
        let ctx = rmi::CallContext::current().expect("in a method");
        let introspect = self.0.clone();
        let scoped = tokio::spawn(ctx.in_scope(async move {
            let current = rmi::CallContext::current().is_some();
            (introspect.whoami().await.unwrap(), current)
        }));
        let introspect = self.0.clone();
        let plain = tokio::spawn(async move { introspect.whoami().await.unwrap() });
        let (scoped, current) = scoped.await.unwrap();
        (scoped, plain.await.unwrap(), current)
    }
}

/// A call a method makes carries on the call it serves: its correlation id (so the logs of a
/// chain of services join up, as with Pyro's `current_context`) and its caller's deadline,
/// less what has passed (as gRPC's deadlines do: the daemon down the chain stops when the
/// first caller stops waiting); a proxy's own settings win where shorter or set. (Before, the
/// call went with a fresh correlation id and no deadline.)
#[tokio::test]
async fn a_call_made_inside_a_method_carries_its_callers_correlation_id_and_deadline() {
    let (daemon, introspect) = introspect().await;
    let relays = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let relay = relays
        .register(RelayServer::new(RelayObject(introspect)))
        .unwrap();
    tokio::spawn({
        let d = relays.clone();
        async move { d.serve().await }
    });
    let relay = RelayProxy::connect(&relay).await.unwrap();
    let id = rmi::uuid::Uuid::from_u128(0x1234);
    let traced = RelayProxy::from_proxy(
        relay
            .proxy()
            .with_correlation_id(id)
            .with_timeout(Duration::from_secs(20)),
    );
    let seen = traced.relay().await.unwrap();
    assert_eq!(seen.correlation_id, id.to_string());
    assert!(seen.has_deadline, "{seen:?}");
    let left = seen.time_left_ms.unwrap();
    assert!(left <= 20_000 && left > 0, "{seen:?}");
    // Less what has passed: a second spent before the call is not passed on.
    let seen = traced.relay_after(1_000).await.unwrap();
    let left = seen.time_left_ms.unwrap();
    assert!(left <= 19_000 && left > 0, "{seen:?}");
    // Without a deadline from the first caller, none further down.
    let seen = relay.relay().await.unwrap();
    assert!(!seen.has_deadline, "{seen:?}");
    assert_ne!(seen.correlation_id, id.to_string());
    // A proxy's own correlation id, and its timeout when shorter, win.
    let seen = traced.relay_own().await.unwrap();
    assert_eq!(
        seen.correlation_id,
        rmi::uuid::Uuid::from_u128(7).to_string()
    );
    assert!(seen.time_left_ms.unwrap() <= 3_000, "{seen:?}");
    // A task the method spawns carries on its call when run in its context (`in_scope`);
    // one spawned plainly runs without it.
    let (scoped, plain, current) = traced.relay_spawned().await.unwrap();
    assert!(current, "CallContext::current() in the scoped task");
    assert_eq!(scoped.correlation_id, id.to_string());
    assert!(scoped.has_deadline, "{scoped:?}");
    assert_ne!(plain.correlation_id, id.to_string());
    assert!(!plain.has_deadline, "{plain:?}");
    daemon.shutdown();
    relays.shutdown();
}

/// Each call of a batch sees its own method name in its context (not `<batch>`), with the
/// batch's caller, correlation id and deadline. (Before, every call of a batch saw
/// `<batch>`, so a method or instance factory that logs or authorises by method name could
/// not tell them apart.)
#[tokio::test]
async fn each_call_of_a_batch_sees_its_own_method_name() {
    let (daemon, proxy) = introspect().await;
    let id = rmi::uuid::Uuid::from_u128(0xba7c);
    let traced = IntrospectProxy::from_proxy(
        proxy
            .proxy()
            .with_correlation_id(id)
            .with_timeout(Duration::from_secs(20)),
    );
    let mut batch = traced.batch();
    let first = batch.whoami();
    let marked = batch.mark(false);
    let second = batch.whoami();
    let results = batch.send().await.unwrap();
    for slot in [first, second] {
        let seen = results.get(&slot).unwrap();
        assert_eq!(seen.method, "whoami", "{seen:?}");
        assert_eq!(seen.correlation_id, id.to_string());
        assert!(seen.has_deadline, "{seen:?}");
    }
    assert_eq!(results.get(&marked).unwrap(), None);
    daemon.shutdown();
}

/// A method cannot set a reply annotation whose id the runtime uses (`STRM`, the stream's id,
/// here): it is left out, and the stream is read as usual. (Before,
/// its `STRM` came first in the reply and the proxy asked the daemon for stream
/// `not-a-stream`.)
#[tokio::test]
async fn a_method_cannot_set_an_annotation_the_runtime_uses() {
    use futures_util::StreamExt;
    let (daemon, proxy) = introspect().await;
    let items: Vec<u32> = proxy
        .shadow_stream()
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items, [1, 2, 3]);
    // Nor the daemon's "not run" mark (`NRUN`), which would have the proxy send a call that
    // ran, and failed, once more, and report it as not run (found by a review, helper-109).
    let err = proxy.ran_and_failed().await.unwrap_err();
    assert!(
        matches!(&err, rmi::Error::Remote(e) if e.type_name == "app.Failed"),
        "{err:?}"
    );
    assert_eq!(proxy.failed_runs().await.unwrap(), 1, "run once");
    daemon.shutdown();
}

/// A caller's own `DDLN` annotation (a middle tier forwarding its caller's annotations, say)
/// gives way to the proxy's deadline: the daemon reads the first `DDLN`, which was the
/// caller's, so its whole time went on instead of the time left, and a malformed one turned
/// the deadline off. Without a timeout of the proxy's, the caller's own stays (helper-158 #1).
/// (That a oneway call now carries none is not seen here: its method cannot answer.)
#[tokio::test]
async fn a_callers_own_deadline_annotation_gives_way_to_the_proxys() {
    let (daemon, proxy) = introspect().await;
    let minute = 60_000u64.to_be_bytes().to_vec();
    let stale = proxy
        .proxy()
        .with_annotation(*b"DDLN", minute.clone())
        .with_timeout(Duration::from_secs(5));
    let seen = IntrospectProxy::from(stale).whoami().await.unwrap();
    assert!(
        seen.has_deadline && seen.time_left_ms.unwrap() <= 5_000,
        "{seen:?}"
    );
    assert_eq!(
        seen.annotation_ids
            .iter()
            .filter(|id| *id == "DDLN")
            .count(),
        1,
        "{seen:?}"
    );
    let malformed = proxy
        .proxy()
        .with_annotation(*b"DDLN", &b"x"[..])
        .with_timeout(Duration::from_secs(5));
    let seen = IntrospectProxy::from(malformed).whoami().await.unwrap();
    assert!(seen.has_deadline, "{seen:?}");
    // The caller's own, with no timeout of the proxy's: kept.
    let own = proxy.proxy().with_annotation(*b"DDLN", minute);
    let seen = IntrospectProxy::from(own).whoami().await.unwrap();
    assert!(
        seen.has_deadline && seen.time_left_ms.unwrap() > 50_000,
        "{seen:?}"
    );
    daemon.shutdown();
}
