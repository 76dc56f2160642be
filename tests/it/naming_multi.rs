//! Several daemons behind one name: shared registrations, `PYRONAME:`/`PYROMETA:` choosing
//! among them (random and round-robin), failover when one dies, leases taking a dead daemon's
//! entry only, the remote watch, and the watch-backed lookup cache. Everything on 127.0.0.1
//! with free ports; leases of 1 s (far from the default); no timing is asserted, and every
//! wait is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rmi::naming::registry::Change;
use rmi::naming::{
    LeaseId, NameServer, NameServerApiServer, NameServerHandle, NameServerProxy, NamingResolver,
    NsLocator, NAME_SERVER_OBJECT_ID,
};
use rmi::{Daemon, Uri};

use crate::support::{spawn_child_daemon, ChildGuard, HeldRelay, LabProxy, Relay};

const TTL: Duration = Duration::from_secs(1);

/// Says which daemon it is.
#[rmi::remote]
pub(crate) trait Who {
    /// The daemon's number.
    async fn who(&self) -> u32;
}

struct Numbered(u32);

impl Who for Numbered {
    async fn who(&self) -> u32 {
        self.0
    }
}

/// A daemon serving `Numbered(n)`; returns it and the object's URI.
async fn who_daemon(n: u32) -> (Daemon, Uri) {
    let daemon = Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon.register(WhoServer::new(Numbered(n))).unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    (daemon, uri)
}

async fn name_server() -> (NameServerHandle, NameServerProxy, u16) {
    let ns = NameServer::builder()
        .port(0)
        .no_broadcast()
        .start()
        .await
        .unwrap();
    let port = ns.daemon().local_addr().unwrap().port();
    let proxy = NameServerProxy::connect(ns.uri()).await.unwrap();
    (ns, proxy, port)
}

/// Looks a name up after its caller's deadline.
#[rmi::remote]
pub(crate) trait Late {
    /// Starts, in this call's scope, a call through `PYRONAME:` made once the caller's deadline
    /// has passed; its outcome goes to the test.
    async fn call_late(&self);
}

struct LateCalls {
    resolver: NamingResolver,
    name: Uri,
    outcomes: tokio::sync::mpsc::UnboundedSender<Result<u32, rmi::Error>>,
}

impl Late for LateCalls {
    async fn call_late(&self) {
        let ctx = rmi::CallContext::current().unwrap();
        let left = ctx.time_left().expect("a deadline");
        let (resolver, name, outcomes) = (
            self.resolver.clone(),
            self.name.clone(),
            self.outcomes.clone(),
        );
        tokio::spawn(ctx.in_scope(async move {
            tokio::time::sleep(left + Duration::from_millis(20)).await;
            let proxy = rmi::proxy_builder(name)
                .unwrap()
                .resolver(Arc::new(resolver))
                .reconnect_attempts(0)
                .build();
            let _ = outcomes.send(WhoProxy::from_proxy(proxy).who().await);
        }));
    }
}

fn resolver(port: u16) -> NamingResolver {
    NamingResolver::new(NsLocator::new().host("127.0.0.1").port(port).no_broadcast())
}

fn logical(name: &str, port: u16) -> Uri {
    format!("PYRONAME:{name}@127.0.0.1:{port}").parse().unwrap()
}

fn tags(t: &[&str]) -> BTreeSet<String> {
    t.iter().map(|s| s.to_string()).collect()
}

/// A proxy to `uri` resolving through `resolver`.
async fn proxy_via(uri: &Uri, resolver: &NamingResolver) -> rmi::Proxy {
    rmi::proxy_builder(uri.clone())
        .unwrap()
        .resolver(Arc::new(resolver.clone()))
        .connect()
        .await
        .unwrap()
}

/// Polls (up to 15 s) until `f` gives true.
async fn until<F, Fut>(what: &str, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} never happened");
}

/// The next change from `stream` that `pick` accepts (up to 15 s).
async fn next_change<S>(stream: &mut S, pick: impl Fn(&Change) -> bool) -> Change
where
    S: futures_util::Stream<Item = Result<Change, rmi::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let change = stream
                .next()
                .await
                .expect("the watch ended")
                .expect("the watch failed");
            if pick(&change) {
                return change;
            }
        }
    })
    .await
    .expect("the change never came")
}

#[tokio::test]
async fn two_daemons_behind_one_shared_name_are_both_chosen_at_random_and_in_turn() {
    let (_ns, names, port) = name_server().await;
    let (_a, uri_a) = who_daemon(1).await;
    let (_b, uri_b) = who_daemon(2).await;
    for uri in [&uri_a, &uri_b] {
        names
            .register_shared("multi.who", uri, tags(&["multi.tag"]))
            .await
            .unwrap();
    }
    // Pyro's `register` semantics stay for other names; `lookup` answers one entry.
    let all: BTreeSet<String> = names
        .lookup_all("multi.who")
        .await
        .unwrap()
        .into_iter()
        .map(|(u, _)| u.to_string())
        .collect();
    assert_eq!(all, BTreeSet::from([uri_a.to_string(), uri_b.to_string()]));
    assert!([&uri_a, &uri_b].contains(&&names.lookup("multi.who").await.unwrap()));

    // Random (the default): both are chosen over many resolutions.
    let random = resolver(port);
    let name = logical("multi.who", port);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..100 {
        *seen
            .entry(random.resolve_uri(&name).await.unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "both daemons chosen: {seen:?}");
    // And through proxies, which reach both daemons.
    let mut answered = BTreeSet::new();
    for _ in 0..100 {
        let who = WhoProxy::from_proxy(proxy_via(&name, &random).await);
        answered.insert(who.who().await.unwrap());
        if answered.len() == 2 {
            break;
        }
    }
    assert_eq!(answered, BTreeSet::from([1, 2]));

    // Round-robin: alternately, for PYRONAME: and PYROMETA:.
    for logical in [
        name.clone(),
        format!("PYROMETA:multi.tag@127.0.0.1:{port}")
            .parse()
            .unwrap(),
    ] {
        let turns = resolver(port).round_robin();
        let mut picks = Vec::new();
        for _ in 0..10 {
            picks.push(turns.resolve_uri(&logical).await.unwrap());
        }
        for pair in picks.windows(2) {
            assert_ne!(pair[0], pair[1], "{logical}: {picks:?}");
        }
        let mut answers = Vec::new();
        for _ in 0..4 {
            let who = WhoProxy::from_proxy(proxy_via(&logical, &turns).await);
            answers.push(who.who().await.unwrap());
        }
        for pair in answers.windows(2) {
            assert_ne!(pair[0], pair[1], "{logical}: {answers:?}");
        }
    }
}

/// Calls served by the child daemon at `uri` (not counting `calls` itself).
async fn calls(uri: &Uri) -> usize {
    LabProxy::connect(uri.clone())
        .await
        .unwrap()
        .calls()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_pyroname_proxy_fails_over_when_its_daemon_is_killed() {
    let (_ns, names, port) = name_server().await;
    // Two daemon processes serving the same object.
    let (children, uris): (Vec<ChildGuard>, Vec<Uri>) =
        tokio::task::spawn_blocking(|| (0..2).map(|_| spawn_child_daemon()).unzip())
            .await
            .unwrap();
    let mut children: Vec<Option<ChildGuard>> = children.into_iter().map(Some).collect();
    for uri in &uris {
        names
            .register_shared("multi.lab", uri, tags(&[]))
            .await
            .unwrap();
    }
    let resolver = resolver(port).suspect_for(Duration::from_secs(600));
    let name = logical("multi.lab", port);
    // `sleep_idempotent` may be retried after a failure on the connection, as today.
    let lab = LabProxy::from_proxy(proxy_via(&name, &resolver).await);
    let before = [calls(&uris[0]).await, calls(&uris[1]).await];
    assert_eq!(lab.sleep_idempotent(0).await.unwrap(), 0);
    let after = [calls(&uris[0]).await, calls(&uris[1]).await];
    let served = (0..2)
        .find(|&i| after[i] > before[i])
        .expect("one daemon served the call");
    let other = 1 - served;

    // Kill the daemon the proxy is connected to.
    let mut dead = children[served].take().unwrap();
    tokio::task::spawn_blocking(move || {
        let _ = dead.0.kill();
        let _ = dead.0.wait();
    })
    .await
    .unwrap();

    // The proxy redials, re-resolves and reaches the other daemon.
    let live_before = calls(&uris[other]).await;
    for _ in 0..10 {
        assert_eq!(lab.sleep_idempotent(0).await.unwrap(), 0);
    }
    assert!(calls(&uris[other]).await >= live_before + 10);
    // New proxies pass over the dead daemon, which is still registered (no lease).
    assert_eq!(names.lookup_all("multi.lab").await.unwrap().len(), 2);
    for _ in 0..10 {
        let lab = LabProxy::from_proxy(proxy_via(&name, &resolver).await);
        assert_eq!(lab.sleep_idempotent(0).await.unwrap(), 0);
    }
    assert!(children[other].as_mut().unwrap().is_alive());
}

#[tokio::test]
async fn a_daemon_a_proxy_could_not_dial_is_passed_over_for_suspect_for_and_then_picked_again() {
    let (_ns, names, port) = name_server().await;
    // The resolver never dials: addresses nobody listens on will do.
    let (a, b) = (
        Uri::tcp("obj", "127.0.0.1", 1),
        Uri::tcp("obj", "127.0.0.1", 2),
    );
    for uri in [&a, &b] {
        names
            .register_shared("suspect.pair", uri, tags(&[]))
            .await
            .unwrap();
    }
    let name = logical("suspect.pair", port);
    // Passed over while suspected (long enough never to end during the test)...
    let long = resolver(port)
        .round_robin()
        .suspect_for(Duration::from_secs(600));
    rmi::Resolve::dial_failed(&long, &name, &a);
    for _ in 0..4 {
        assert_eq!(long.resolve_uri(&name).await.unwrap(), b);
    }
    // ...and in its turn again once `suspect_for` has passed.
    let short = resolver(port)
        .round_robin()
        .suspect_for(Duration::from_millis(1));
    rmi::Resolve::dial_failed(&short, &name, &a);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let picks: BTreeSet<String> = [
        short.resolve_uri(&name).await.unwrap().to_string(),
        short.resolve_uri(&name).await.unwrap().to_string(),
    ]
    .into();
    assert_eq!(picks, [a.to_string(), b.to_string()].into());
}

#[tokio::test]
async fn what_names_resolved_to_is_remembered_for_the_dial_ahead_up_to_1024_names() {
    let (_ns, names, port) = name_server().await;
    let direct = |i: u16| Uri::tcp("obj", "127.0.0.1", 1000 + i);
    for i in 0..1025 {
        names
            .register(&format!("many.{i}"), &direct(i))
            .await
            .unwrap();
    }
    let resolver = resolver(port);
    let likely = |i: u16| rmi::Resolve::likely(&resolver, &logical(&format!("many.{i}"), port));
    let resolve = |i: u16| {
        let resolver = resolver.clone();
        async move {
            let uri = logical(&format!("many.{i}"), port);
            assert_eq!(resolver.resolve_uri(&uri).await.unwrap(), direct(i));
        }
    };
    resolve(0).await;
    resolve(1).await;
    assert_eq!((likely(0), likely(1)), (Some(direct(0)), Some(direct(1))));
    for i in 2..1024 {
        resolve(i).await;
    }
    // 1,024 remembered: resolving one of them again keeps them all...
    resolve(0).await;
    assert_eq!(
        (likely(1), likely(1023)),
        (Some(direct(1)), Some(direct(1023)))
    );
    // ...and a new one starts the memory over, so it never grows past the bound.
    resolve(1024).await;
    assert_eq!((likely(0), likely(1023)), (None, None));
    assert_eq!(likely(1024), Some(direct(1024)));
}

#[tokio::test]
async fn a_cache_whose_name_server_is_down_retries_its_watch_with_a_growing_backoff() {
    // A "name server" that takes each connection and closes it at once: every attempt to
    // reach it (a lookup, or the cache's watch) fails, and each one is counted.
    let down = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = down.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let _down = tokio::spawn(async move {
        while let Ok((stream, _)) = down.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    let cached = resolver(port).cache(Duration::from_secs(60));
    assert!(cached.resolve_uri(&logical("down.x", port)).await.is_err());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The watch is retried after 100 ms, 200, 400, 800 (then every 2 s): at most five
    // attempts in 1.5 s, each a few connections (the proxy's own connect retries), 15 in all
    // on the machine this was written on. A backoff that halved instead made 32.
    let attempts = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (2..=20).contains(&attempts),
        "{attempts} connections in 1.5 s"
    );
    println!("{attempts} connections to a name server that is down, in 1.5 s");
    assert!(!cached.cache_watching(&logical("down.x", port)));
}

/// Keeps `lease`, of `ttl`, alive every third of it until aborted (the daemon's "life").
fn keep_alive(
    names: &NameServerProxy,
    lease: LeaseId,
    ttl: Duration,
) -> tokio::task::JoinHandle<()> {
    let api = names.api().clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(ttl / 3).await;
            let _ = api.lease_keep_alive(lease.0).await;
        }
    })
}

#[tokio::test]
async fn with_leases_a_dead_daemons_entry_vanishes_and_the_others_stays() {
    let (ns, names, port) = name_server().await;
    let mut local = ns.registry().watch();
    let mut remote = names.watch(Some("multi.")).await.unwrap();
    let (a, uri_a) = who_daemon(1).await;
    let (_b, uri_b) = who_daemon(2).await;
    // Two seconds, not the file's one: B's keep-alives, made by hand, then have 1.3 s each to
    // arrive, which a stall of a loaded machine does not take.
    let ttl = 2 * TTL;
    let mut keepers = Vec::new();
    for uri in [&uri_a, &uri_b] {
        let lease = LeaseId(
            names
                .api()
                .lease_grant(ttl.as_millis() as u64)
                .await
                .unwrap(),
        );
        names
            .register_shared_leased("multi.leased", uri, lease, tags(&[]))
            .await
            .unwrap();
        keepers.push((lease, keep_alive(&names, lease, ttl)));
    }
    assert_eq!(names.lookup_all("multi.leased").await.unwrap().len(), 2);

    // Daemon A dies: its keep-alives stop and it serves no more.
    let (lease_a, keeper_a) = keepers.remove(0);
    keeper_a.abort();
    a.shutdown();

    let expired = next_change(&mut remote, |c| matches!(c, Change::Expired { .. })).await;
    assert_eq!(
        expired,
        Change::Expired {
            name: "multi.leased".into(),
            lease: lease_a,
            uri: Some(uri_a.clone()),
        }
    );
    let seen = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Some(Change::Expired { uri, .. }) = local.next().await {
                return uri;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(seen, Some(uri_a.clone()));
    let left: Vec<Uri> = names
        .lookup_all("multi.leased")
        .await
        .unwrap()
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    assert_eq!(
        left,
        std::slice::from_ref(&uri_b),
        "B stays while it is kept alive"
    );
    let who =
        WhoProxy::from_proxy(proxy_via(&logical("multi.leased", port), &resolver(port)).await);
    assert_eq!(who.who().await.unwrap(), 2);
    keepers[0].1.abort();
}

#[tokio::test]
async fn a_remote_watch_sees_registrations_removals_and_expiries_and_ends_with_the_name_server() {
    let (ns, names, _port) = name_server().await;
    let mut watch = names.watch(Some("w.")).await.unwrap();
    let (_d, uri) = who_daemon(1).await;
    names.register("other.name", &uri).await.unwrap();
    names.register("w.plain", &uri).await.unwrap();
    match next_change(&mut watch, |_| true).await {
        Change::Registered { name, entry } => {
            assert_eq!(name, "w.plain", "names outside the prefix are left out");
            assert_eq!((entry.uri, entry.shared), (uri.clone(), false));
        }
        other => panic!("{other:?}"),
    }
    names
        .register_shared("w.shared", &uri, tags(&["t"]))
        .await
        .unwrap();
    match next_change(&mut watch, |_| true).await {
        Change::Registered { name, entry } => {
            assert_eq!(name, "w.shared");
            assert!(entry.shared);
            assert_eq!(entry.metadata, tags(&["t"]));
        }
        other => panic!("{other:?}"),
    }
    assert!(names.remove("w.plain").await.unwrap());
    assert_eq!(
        next_change(&mut watch, |_| true).await,
        Change::Removed {
            name: "w.plain".into(),
            uri: Some(uri.clone()),
        }
    );
    // A lease left to expire.
    let lease = LeaseId(
        names
            .api()
            .lease_grant(TTL.as_millis() as u64)
            .await
            .unwrap(),
    );
    names
        .register_shared_leased("w.shared", &uri, lease, tags(&[]))
        .await
        .unwrap();
    let expired = next_change(&mut watch, |c| matches!(c, Change::Expired { .. })).await;
    assert_eq!(
        expired,
        Change::Expired {
            name: "w.shared".into(),
            lease,
            uri: Some(uri.clone()),
        }
    );
    // The name server stops: the stream ends (or fails), it does not hang.
    ns.shutdown();
    let end = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match watch.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch outlived the name server");
    assert!(
        match &end {
            None => true,
            Some(Err(e)) => e.is_connection(),
            Some(Ok(_)) => false,
        },
        "{end:?}"
    );
}

/// A name server that stops while no pull is waiting cannot end the stream with an answer:
/// the next pull is a connection error, promptly, as `watch`'s documentation says (what
/// `rmi-nsc watch` reads as the name server's end).
#[tokio::test]
async fn a_watch_pulled_after_the_name_server_stopped_is_a_connection_error() {
    let (ns, names, _port) = name_server().await;
    let mut watch = names.watch(None).await.unwrap();
    ns.shutdown();
    // Its connection closes once the daemon has stopped.
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        while names.api().proxy().connected_uri().is_some() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    closed.await.expect("the name server kept the connection");
    let next = tokio::time::timeout(Duration::from_secs(15), watch.next())
        .await
        .expect("a pull after the name server stopped hung");
    assert!(
        matches!(&next, Some(Err(e)) if e.is_connection()),
        "{next:?}"
    );
    assert!(watch.next().await.is_none(), "a failed stream is over");
}

/// A watch not being pulled when its name server stops still gets the clean end, if it pulls
/// within the second the name server waits for its readers: `rmi-nsc watch`, between two pulls
/// at the stop, tells a stop from a crash (H92).
#[tokio::test]
async fn a_watch_pulled_soon_after_the_name_server_stopped_ends_cleanly() {
    let (ns, names, _port) = name_server().await;
    let mut watch = names.watch(None).await.unwrap();
    ns.shutdown();
    // Well within the second: a loaded machine may stall this task for most of it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let next = tokio::time::timeout(Duration::from_secs(15), watch.next())
        .await
        .expect("a pull after the name server stopped hung");
    assert!(next.is_none(), "{next:?}");
}

#[tokio::test]
async fn a_name_server_served_by_the_users_own_daemon_ends_its_watches_when_told() {
    let server = Arc::new(NameServer::new());
    let (daemon, _) = who_daemon(1).await;
    let uri = daemon
        .register_with_id(
            NameServerApiServer::from_arc(server.clone()),
            NAME_SERVER_OBJECT_ID,
        )
        .unwrap();
    let names = NameServerProxy::connect(&uri).await.unwrap();
    let mut watch = names.watch(None).await.unwrap();
    names.register("own.name", &uri).await.unwrap();
    assert!(matches!(
        next_change(&mut watch, |_| true).await,
        Change::Registered { name, .. } if name == "own.name"
    ));
    server.end_watches();
    let end = tokio::time::timeout(Duration::from_secs(15), watch.next())
        .await
        .expect("the watch outlived end_watches");
    assert!(end.is_none(), "{end:?}");
    // Only the watches end: the daemon and the name server go on serving.
    assert_eq!(names.lookup("own.name").await.unwrap(), uri);
    assert_eq!(server.registry().count().await.unwrap(), 1);
}

/// A name the name server has said is unknown is not answered from the cache once the name
/// server is down: the entry goes with that answer. (Before, it stayed, and while no watch
/// vouched for the cache (a name server without watches, Pyro's; one that ended them; a watch
/// that lagged) a lookup that found the name server down answered it stale for up to
/// `max_stale`: callers sent back to a daemon drained on purpose; helper-153 #1.)
#[tokio::test]
async fn a_name_the_name_server_said_is_unknown_is_not_answered_stale_later() {
    let server = Arc::new(NameServer::new());
    let (daemon, _) = who_daemon(1).await;
    let ns_uri = daemon
        .register_with_id(
            NameServerApiServer::from_arc(server.clone()),
            NAME_SERVER_OBJECT_ID,
        )
        .unwrap();
    let Some(rmi::Location::Tcp { port, .. }) = ns_uri.location().cloned() else {
        panic!("{ns_uri}");
    };
    let names = NameServerProxy::connect(&ns_uri).await.unwrap();
    let (_drained, drained) = who_daemon(2).await;
    names.register("drained.who", &drained).await.unwrap();
    let cached = resolver(port).cache(Duration::from_secs(3600));
    let name = logical("drained.who", port);
    assert_eq!(cached.resolve_uri(&name).await.unwrap(), drained);
    server.end_watches();
    until("the watch to end", || async {
        !cached.cache_watching(&name)
    })
    .await;
    assert!(names.remove("drained.who").await.unwrap());
    let gone = cached.resolve_uri(&name).await.unwrap_err();
    assert!(gone.to_string().contains("unknown name"), "{gone}");
    daemon.shutdown();
    until("the name server to be unreachable", || async {
        NameServerProxy::connect(&ns_uri).await.is_err()
    })
    .await;
    let down = cached.resolve_uri(&name).await;
    assert!(down.is_err(), "answered from the cache: {down:?}");
}

#[tokio::test]
async fn the_lookup_cache_spares_the_name_server_and_answers_stale_when_it_is_down() {
    let (ns, names, port) = name_server().await;
    let (_d, uri) = who_daemon(7).await;
    names
        .register_shared("cached.who", &uri, tags(&[]))
        .await
        .unwrap();
    // A long staleness bound (there is no default: the cache is opt-in).
    let cached = resolver(port).cache(Duration::from_secs(3600));
    let name = logical("cached.who", port);

    let before = ns.registry().lookups();
    for _ in 0..100 {
        let who = WhoProxy::from_proxy(proxy_via(&name, &cached).await);
        assert_eq!(who.who().await.unwrap(), 7);
    }
    let lookups = ns.registry().lookups() - before;
    // The first lookup waits (up to the locator's timeout) for the watch to open, so what it
    // caches is kept, and the other 99 are answered from the cache.
    assert_eq!(
        lookups, 1,
        "100 connects by PYRONAME made {lookups} lookups on the name server"
    );
    assert!(cached.cache_watching(&name));

    // Without the cache, each connect is a lookup.
    let plain = resolver(port);
    let before = ns.registry().lookups();
    for _ in 0..5 {
        plain.resolve_uri(&name).await.unwrap();
    }
    assert_eq!(ns.registry().lookups() - before, 5);

    // A change reaches the cache through the watch: a second daemon joins the name.
    let (_e, second) = who_daemon(8).await;
    names
        .register_shared("cached.who", &second, tags(&[]))
        .await
        .unwrap();
    until("the cache to see the second daemon", || async {
        cached.resolve_uri(&name).await.unwrap() == second
    })
    .await;
    names.remove("cached.who").await.unwrap();
    names.register("cached.who", &uri).await.unwrap();
    until("the cache to see the name registered again", || async {
        cached.resolve_uri(&name).await.unwrap() == uri
    })
    .await;
    // Cache it, with the watch open. (A lookup that crossed a change the watch had not yet
    // reported is answered but not cached: resolve until an answer comes from the cache.)
    until("the watch to be open", || async {
        cached.cache_watching(&name)
    })
    .await;
    until("the name to be cached", || async {
        let before = ns.registry().lookups();
        cached.resolve_uri(&name).await.unwrap();
        ns.registry().lookups() == before
    })
    .await;
    // A resolver whose cache may not serve anything stale.
    let strict = resolver(port).cache(Duration::ZERO);
    strict.resolve_uri(&name).await.unwrap();

    // A watch nobody reads (a client that went quiet): the stopping name server waits up to a
    // second for it, while a resolver whose watch ended would open another, and must not
    // empty its cache doing so (it did, and answered nothing stale after).
    let _unread = names.watch(None).await.unwrap();

    // The name server goes away: the watch notices, and the cache answers, stale.
    ns.shutdown();
    drop(ns);
    until("the watch to notice", || async {
        !cached.cache_watching(&name) && !strict.cache_watching(&name)
    })
    .await;
    until("the name server to be unreachable", || async {
        NameServerProxy::connect(names.uri()).await.is_err()
    })
    .await;
    for _ in 0..10 {
        assert_eq!(cached.resolve_uri(&name).await.unwrap(), uri);
        let who = WhoProxy::from_proxy(proxy_via(&name, &cached).await);
        assert_eq!(who.who().await.unwrap(), 7);
    }
    // Bounded staleness: past max_stale, and for names never cached, resolution fails.
    assert!(strict.resolve_uri(&name).await.is_err());
    assert!(cached
        .resolve_uri(&logical("never.looked.up", port))
        .await
        .is_err());
}

/// Connections to the name server that die without a word (a NAT forgot them, its host lost
/// power: no FIN, no reset): a lookup on the kept one gives up after `lookup_timeout` and the
/// next one locates the name server again, and the cache's silent watch is found by its ping, stops
/// vouching for the cache and is opened again, so a name moved meanwhile resolves to its new
/// daemon. (Before, the lookup waited for TCP to give up, some fifteen minutes, and the cache
/// answered the old daemon for ever.)
#[tokio::test]
async fn name_server_connections_that_die_without_a_word_are_given_up_and_opened_again() {
    let (_ns, names, port) = name_server().await;
    let relay = Relay::start(port).await;
    let (_a, uri_a) = who_daemon(1).await;
    let (_b, uri_b) = who_daemon(2).await;
    names.register("silent.who", &uri_a).await.unwrap();
    let locator = NsLocator::new()
        .host("127.0.0.1")
        .port(relay.port)
        .no_broadcast();
    let name = logical("silent.who", relay.port);
    let bounded = |what: &'static str, r: &NamingResolver| {
        let (r, name) = (r.clone(), name.clone());
        async move {
            tokio::time::timeout(Duration::from_secs(30), r.resolve_uri(&name))
                .await
                .unwrap_or_else(|_| panic!("{what}: the lookup hung"))
        }
    };

    let plain = NamingResolver::new(locator.clone()).lookup_timeout(Duration::from_millis(500));
    assert_eq!(bounded("first", &plain).await.unwrap(), uri_a);
    let cached = NamingResolver::new(locator)
        .lookup_timeout(Duration::from_millis(500))
        .cache(Duration::from_secs(3600))
        .watch_probe(Duration::from_millis(200));
    assert_eq!(bounded("cached", &cached).await.unwrap(), uri_a);
    until("the watch to be open", || async {
        cached.cache_watching(&name)
    })
    .await;

    relay.blackhole();
    names.register("silent.who", &uri_b).await.unwrap();
    // The lookup on the silenced connection fails after 500 ms; the next connects anew.
    let err = bounded("after the silence", &plain).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(bounded("then", &plain).await.unwrap(), uri_b);
    until("the cache to see the name moved", || async {
        bounded("cached, after the silence", &cached).await.ok() == Some(uri_b.clone())
    })
    .await;
    until("the watch to be open again", || async {
        cached.cache_watching(&name)
    })
    .await;
}

/// Ten callers of one `PYRONAME:` proxy waiting for its dial, whose pick answers "no such
/// object" (a stale entry of a shared name): the waiters resolve again and reach the live
/// daemon, rather than all sharing the first pick's answer.
#[tokio::test]
async fn waiters_of_a_pyroname_dial_that_met_a_stale_entry_resolve_again() {
    let (_ns, names, port) = name_server().await;
    let (_d, live) = who_daemon(1).await;
    let stale = Uri::tcp("no_such_object", "127.0.0.1", port_of(&live));
    for uri in [&stale, &live] {
        names
            .register_shared("stale.who", uri, tags(&[]))
            .await
            .unwrap();
    }
    // Round robin in URI order: the stale entry is the first pick.
    assert!(stale.to_string() < live.to_string());
    let proxy = rmi::proxy_builder(logical("stale.who", port))
        .unwrap()
        .resolver(Arc::new(resolver(port).round_robin()))
        .reconnect_attempts(0)
        .build();
    let pings = futures_util::future::join_all((0..10).map(|_| proxy.ping())).await;
    let failed = pings.iter().filter(|p| p.is_err()).count();
    assert!(failed <= 1, "{failed} of 10 failed: {pings:?}");
    assert_eq!(proxy.connected_uri(), Some(live));
}

/// The name server's address taken by another daemon (no name server there: "unknown
/// object"): a cached name is answered from the cache, within `max_stale`, as with the name
/// server down, and once the name server is back the resolver finds it again. (Before, that
/// answer counted as the name server's: every lookup failed with it and the cache was not
/// asked.)
#[tokio::test]
async fn a_name_server_address_taken_by_another_daemon_counts_as_the_name_server_down() {
    let (_ns, names, port) = name_server().await;
    let relay = Relay::start(port).await;
    let (_a, uri_a) = who_daemon(1).await;
    let (_b, uri_b) = who_daemon(2).await;
    names.register("taken.who", &uri_a).await.unwrap();
    let name = logical("taken.who", relay.port);
    let cached = resolver(relay.port).cache(Duration::from_secs(3600));
    assert_eq!(cached.resolve_uri(&name).await.unwrap(), uri_a);
    until("the watch to be open", || async {
        cached.cache_watching(&name)
    })
    .await;
    relay.move_to(port_of(&uri_b));
    until("the watch to break", || async {
        !cached.cache_watching(&name)
    })
    .await;
    assert_eq!(cached.resolve_uri(&name).await.unwrap(), uri_a);
    relay.move_to(port);
    names.register("taken.who", &uri_b).await.unwrap();
    until("the name server to be found again", || async {
        cached.resolve_uri(&name).await.ok() == Some(uri_b.clone())
    })
    .await;
}

/// A lookup cache whose watch ran on a runtime since shut down (a resolver shared by tests,
/// or by synchronous code that makes a runtime per call) does not vouch for its entries any
/// more: the next lookup, on another runtime, watches again and sees a name that moved.
/// (Before, the cache still said it was watching, and answered the old URI for ever.)
#[test]
fn a_lookup_cache_whose_watch_ended_with_its_runtime_watches_again() {
    let serving = tokio::runtime::Runtime::new().unwrap();
    let (_ns, names, port) = serving.block_on(name_server());
    let (_a, uri_a) = serving.block_on(who_daemon(1));
    let (_b, uri_b) = serving.block_on(who_daemon(2));
    serving
        .block_on(names.register("runtime.who", &uri_a))
        .unwrap();
    let name = logical("runtime.who", port);
    let cached = resolver(port).cache(Duration::from_secs(3600));
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    runtime().block_on(async {
        assert_eq!(cached.resolve_uri(&name).await.unwrap(), uri_a);
        until("the watch to be open", || async {
            cached.cache_watching(&name)
        })
        .await;
    });
    serving
        .block_on(names.register("runtime.who", &uri_b))
        .unwrap();
    runtime().block_on(async {
        until("the cache to see the name moved", || async {
            cached.resolve_uri(&name).await.ok() == Some(uri_b.clone())
        })
        .await;
        until("the watch to be open again", || async {
            cached.cache_watching(&name)
        })
        .await;
    });
}

/// A lease whose connection to the name server dies without a word (a NAT forgot it, its
/// host lost power: no FIN, no reset) is kept alive over a new connection: a keep-alive without
/// an answer within a third of the TTL is sent again on one, so the name never expires.
/// (Before, every keep-alive went over the silent connection until TCP would give up, some
/// fifteen minutes, and the name server expired the lease and its names after one TTL.)
#[tokio::test]
async fn a_lease_outlives_a_name_server_connection_that_dies_without_a_word() {
    use futures_util::FutureExt;
    let (ns, names, port) = name_server().await;
    let mut changes = ns.registry().watch();
    let relay = Relay::start(port).await;
    let through =
        NameServerProxy::connect(Uri::tcp(NAME_SERVER_OBJECT_ID, "127.0.0.1", relay.port))
            .await
            .unwrap();
    let (_a, uri_a) = who_daemon(1).await;
    // Three seconds, not the file's one: the keep-alive sent again on a new connection has a
    // third of the TTL to arrive, which a loaded machine could take of 330 ms.
    let ttl = Duration::from_secs(3);
    let held = through.lease(ttl).await.unwrap();
    held.register("silent.kept", &uri_a).await.unwrap();
    relay.blackhole();
    until("the keeper connected again", || async {
        relay.accepted() >= 2
    })
    .await;
    tokio::time::sleep(ttl * 3 / 2).await;
    assert_eq!(names.lookup("silent.kept").await.unwrap(), uri_a);
    while let Some(Some(change)) = changes.next().now_or_never() {
        assert!(
            !matches!(change, Change::Expired { .. }),
            "the lease expired: {change:?}"
        );
    }
    held.revoke().await.unwrap();
    assert!(names.lookup("silent.kept").await.is_err());
}

/// Two daemons each hold their own lease (`NameServerProxy::lease`) and register the same
/// shared name through it: both are served; one revoking its lease takes only its own entry,
/// and the other daemon's keep-alives hold its entry past several TTLs.
#[tokio::test]
async fn daemons_holding_their_own_leases_share_a_name_and_leave_it_one_by_one() {
    let (_ns, names, port) = name_server().await;
    let (_a, uri_a) = who_daemon(1).await;
    let (_b, uri_b) = who_daemon(2).await;
    // Two seconds, not the file's one: B's keep-alives then have 1.3 s each to arrive, which
    // a stall of a loaded machine does not take.
    let ttl = 2 * TTL;
    let lease_a = names.lease(ttl).await.unwrap();
    let lease_b = names.lease(ttl).await.unwrap();
    assert!(lease_a.is_leased().await && lease_b.is_leased().await);
    lease_a
        .register_shared("multi.own", &uri_a, tags(&["a"]))
        .await
        .unwrap();
    lease_b
        .register_shared("multi.own", &uri_b, tags(&["b"]))
        .await
        .unwrap();
    let mut both: Vec<Uri> = names
        .lookup_all("multi.own")
        .await
        .unwrap()
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    both.sort_by_key(|u| u.to_string());
    let mut expected = vec![uri_a.clone(), uri_b.clone()];
    expected.sort_by_key(|u| u.to_string());
    assert_eq!(both, expected);
    // A shared registration under a name registered plainly is refused.
    lease_a.register("multi.plain", &uri_a).await.unwrap();
    assert!(lease_b
        .register_shared("multi.plain", &uri_b, tags(&[]))
        .await
        .is_err());

    // A goes: revoking its lease removes its entry at once, and B's stays.
    lease_a.revoke().await.unwrap();
    let left: Vec<Uri> = names
        .lookup_all("multi.own")
        .await
        .unwrap()
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    assert_eq!(left, std::slice::from_ref(&uri_b));
    // B's lease is kept alive in the background: its entry outlives two TTLs.
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(names.lookup_all("multi.own").await.unwrap().len(), 1);
    let who = WhoProxy::from_proxy(proxy_via(&logical("multi.own", port), &resolver(port)).await);
    assert_eq!(who.who().await.unwrap(), 2);
}

/// `LeasedNames::unregister` takes only what its holder registered: of a shared name, this
/// daemon's entry (the other daemon's stays and is served); a plain name that another process
/// registered again since is left alone; a name the holder never had is not removed.
#[tokio::test]
async fn unregistering_a_leased_name_takes_only_the_holders_own_entry() {
    let (_ns, names, port) = name_server().await;
    let (_a, uri_a) = who_daemon(1).await;
    let (_b, uri_b) = who_daemon(2).await;
    let lease_a = names.lease(TTL).await.unwrap();
    let lease_b = names.lease(TTL).await.unwrap();
    lease_a
        .register_shared("left.one", &uri_a, tags(&[]))
        .await
        .unwrap();
    lease_b
        .register_shared("left.one", &uri_b, tags(&[]))
        .await
        .unwrap();
    assert!(lease_a.unregister("left.one").await.unwrap());
    assert!(!lease_a.unregister("left.one").await.unwrap());
    let left: Vec<Uri> = names
        .lookup_all("left.one")
        .await
        .unwrap()
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    assert_eq!(left, std::slice::from_ref(&uri_b));
    let who = WhoProxy::from_proxy(proxy_via(&logical("left.one", port), &resolver(port)).await);
    assert_eq!(who.who().await.unwrap(), 2);
    // A's lease no longer covers the name: revoking it leaves B's entry.
    assert_eq!(lease_a.revoke().await.unwrap(), 0);
    assert_eq!(names.lookup_all("left.one").await.unwrap().len(), 1);

    // A plain name taken over by another process since is not A's to remove.
    let lease_a = names.lease(TTL).await.unwrap();
    lease_a.register("left.plain", &uri_a).await.unwrap();
    names.register("left.plain", &uri_b).await.unwrap();
    assert!(!lease_a.unregister("left.plain").await.unwrap());
    assert_eq!(names.lookup("left.plain").await.unwrap(), uri_b);
    // Nor is a name A never registered.
    assert!(!lease_a.unregister("left.one").await.unwrap());
    assert_eq!(names.lookup_all("left.one").await.unwrap().len(), 1);
    // Its own plain name goes.
    lease_a.register("left.mine", &uri_a).await.unwrap();
    assert!(lease_a.unregister("left.mine").await.unwrap());
    assert!(names.lookup("left.mine").await.is_err());
}

/// A lazy proxy (it dials on its first call) to `uri`, resolving through `resolver`.
fn lazy_via(uri: &Uri, resolver: &NamingResolver) -> WhoProxy {
    WhoProxy::from_proxy(
        rmi::proxy_builder(uri.clone())
            .unwrap()
            .resolver(Arc::new(resolver.clone()))
            .build(),
    )
}

/// The port of a TCP URI.
fn port_of(uri: &Uri) -> u16 {
    match uri.location() {
        Some(rmi::Location::Tcp { port, .. }) => *port,
        other => panic!("not a TCP location: {other:?}"),
    }
}

/// `uri` with its port replaced by `port` (a relay's).
fn through(uri: &Uri, port: u16) -> Uri {
    format!("PYRO:{}@127.0.0.1:{port}", uri.object().unwrap())
        .parse()
        .unwrap()
}

/// `name` registered for `uri`'s daemon behind a relay that counts connections, and a
/// resolver asking the name server through `ns_relay`: the relay, the resolver and the name's
/// `PYRONAME:` URI.
async fn named_through_relay(
    names: &NameServerProxy,
    name: &str,
    uri: &Uri,
    ns_relay: &HeldRelay,
) -> (crate::support::Relay, NamingResolver, Uri) {
    let relay = crate::support::Relay::start(port_of(uri)).await;
    names
        .register(name, &through(uri, relay.port))
        .await
        .unwrap();
    (relay, resolver(ns_relay.port), logical(name, ns_relay.port))
}

#[tokio::test]
async fn a_pyroname_proxy_dials_the_daemon_of_the_last_lookup_while_the_next_one_runs() {
    let (_ns, names, ns_port) = name_server().await;
    let ns_relay = HeldRelay::start(ns_port).await;
    let (_a, uri_a) = who_daemon(1).await;
    let (relay_a, resolver, name) =
        named_through_relay(&names, "ahead.who", &uri_a, &ns_relay).await;
    let via_relay = through(&uri_a, relay_a.port);

    // A first lookup finds one URI: the resolver remembers it.
    assert_eq!(lazy_via(&name, &resolver).who().await.unwrap(), 1);
    assert_eq!(rmi::Resolve::likely(&resolver, &name), Some(via_relay));
    assert_eq!(relay_a.accepted(), 1);

    // The next lookup's answer held: the daemon is dialed meanwhile, and that connection is
    // the one the call then uses.
    ns_relay.hold(true);
    let second = lazy_via(&name, &resolver);
    let call = tokio::spawn(async move { second.who().await });
    crate::support::eventually("a dial to the daemon before the lookup answered", || {
        relay_a.accepted() == 2
    })
    .await;
    assert!(!call.is_finished(), "the lookup's answer is still held");
    ns_relay.hold(false);
    assert_eq!(call.await.unwrap().unwrap(), 1);
    assert_eq!(
        relay_a.accepted(),
        2,
        "no second dial: the early one was used"
    );
}

#[tokio::test]
async fn a_name_that_moved_is_called_where_the_lookup_says_not_where_it_was_dialed_ahead() {
    let (_ns, names, ns_port) = name_server().await;
    let ns_relay = HeldRelay::start(ns_port).await;
    let (_a, uri_a) = who_daemon(1).await;
    let (_b, uri_b) = who_daemon(2).await;
    let (relay_a, resolver, name) =
        named_through_relay(&names, "moved.who", &uri_a, &ns_relay).await;
    assert_eq!(lazy_via(&name, &resolver).who().await.unwrap(), 1);

    // The name moves to daemon 2; the next lookup is held until the old daemon was dialed.
    names.register("moved.who", &uri_b).await.unwrap();
    ns_relay.hold(true);
    let second = lazy_via(&name, &resolver);
    let call = tokio::spawn(async move { second.who().await });
    crate::support::eventually("a dial to where the name was", || relay_a.accepted() == 2).await;
    ns_relay.hold(false);
    assert_eq!(
        call.await.unwrap().unwrap(),
        2,
        "called where the name is now"
    );
    assert_eq!(rmi::Resolve::likely(&resolver, &name), Some(uri_b));
}

/// A TCP relay to `target` that closes its second connection as soon as it accepts it (as a
/// daemon does that drops a client which says nothing), and carries the others; it counts
/// the connections it accepted and, apart, the one it closed.
struct ClosingRelay {
    port: u16,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl ClosingRelay {
    async fn start(target: u16) -> ClosingRelay {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = ClosingRelay {
            port: listener.local_addr().unwrap().port(),
            accepted: Arc::default(),
            closed: Arc::default(),
        };
        let (accepted, closed) = (relay.accepted.clone(), relay.closed.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if accepted.fetch_add(1, Ordering::SeqCst) + 1 == 2 {
                    drop(client);
                    closed.store(true, Ordering::SeqCst);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut upstream) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        relay
    }
}

/// A lazy proxy to `name` through `resolver` with the serializer set: its first call goes out
/// with the CONNECT, and a connection that fails after it went out fails the call (a call that
/// may have run is not sent again).
fn lazy_with_serializer(name: &Uri, resolver: &NamingResolver) -> WhoProxy {
    WhoProxy::from_proxy(
        rmi::proxy_builder(name.clone())
            .unwrap()
            .resolver(Arc::new(resolver.clone()))
            .serializer(rmi::Serializer::Bincode)
            .build(),
    )
}

#[tokio::test]
async fn a_connection_dialed_ahead_that_the_daemon_closed_meanwhile_is_not_used() {
    use std::sync::atomic::Ordering;
    let (_ns, names, ns_port) = name_server().await;
    let ns_relay = HeldRelay::start(ns_port).await;
    let (_daemon, uri) = who_daemon(7).await;
    let relay = ClosingRelay::start(port_of(&uri)).await;
    names
        .register("closed.who", &through(&uri, relay.port))
        .await
        .unwrap();
    let resolver = resolver(ns_relay.port);
    let name = logical("closed.who", ns_relay.port);
    let first = lazy_with_serializer(&name, &resolver);
    assert_eq!(first.who().await.unwrap(), 7);

    // The connection dialed ahead is closed at once; the lookup answers only after that.
    ns_relay.hold(true);
    let second = lazy_with_serializer(&name, &resolver);
    let call = tokio::spawn(async move { second.who().await });
    crate::support::eventually("the dial ahead, closed", || {
        relay.closed.load(Ordering::SeqCst)
    })
    .await;
    ns_relay.hold(false);
    assert_eq!(
        call.await.unwrap().unwrap(),
        7,
        "called on a fresh connection, not failed on the closed one"
    );
    assert_eq!(relay.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_connection_dialed_ahead_is_closed_unused_when_the_lookup_takes_long() {
    let (_ns, names, ns_port) = name_server().await;
    let ns_relay = HeldRelay::start(ns_port).await;
    let (_daemon, uri) = who_daemon(8).await;
    let (relay, resolver, name) = named_through_relay(&names, "slow.who", &uri, &ns_relay).await;
    // Kept, so that its connection stays open: the only one the relay sees close is the
    // early one.
    let first = lazy_with_serializer(&name, &resolver);
    assert_eq!(first.who().await.unwrap(), 8);

    ns_relay.hold(true);
    let second = lazy_with_serializer(&name, &resolver);
    let call = tokio::spawn(async move { second.who().await });
    crate::support::eventually("the dial ahead", || relay.accepted() == 2).await;
    // Closed while the lookup is still held (the lookup is slower than the early connection
    // may be old).
    crate::support::eventually("the early connection closed", || relay.finished() == 1).await;
    assert!(!call.is_finished());
    ns_relay.hold(false);
    assert_eq!(call.await.unwrap().unwrap(), 8);
    assert_eq!(relay.accepted(), 3, "a fresh connection for the call");
}

#[tokio::test]
async fn only_a_name_that_resolved_to_one_live_daemon_is_dialed_ahead() {
    let (_ns, names, port) = name_server().await;
    let (_a, uri_a) = who_daemon(1).await;
    let (_b, uri_b) = who_daemon(2).await;
    let resolver = resolver(port);
    let likely = |uri: &Uri| rmi::Resolve::likely(&resolver, uri);
    let (one, shared) = (logical("one.who", port), logical("shared.who", port));
    names.register("one.who", &uri_a).await.unwrap();
    for uri in [&uri_a, &uri_b] {
        names
            .register_shared("shared.who", uri, BTreeSet::new())
            .await
            .unwrap();
    }
    resolver.resolve_uri(&one).await.unwrap();
    resolver.resolve_uri(&shared).await.unwrap();
    assert_eq!(likely(&one), Some(uri_a.clone()));
    assert_eq!(
        likely(&shared),
        None,
        "two daemons: the next pick may be the other"
    );

    // A daemon a proxy could not dial: forgotten, and not remembered again while it is
    // passed over.
    rmi::Resolve::dial_failed(&resolver, &one, &uri_a);
    assert_eq!(likely(&one), None);
    resolver.resolve_uri(&one).await.unwrap();
    assert_eq!(likely(&one), None, "still passed over");

    // A name gone from the name server: forgotten at its failed lookup.
    names.register("gone.who", &uri_b).await.unwrap();
    let gone = logical("gone.who", port);
    resolver.resolve_uri(&gone).await.unwrap();
    assert_eq!(likely(&gone), Some(uri_b.clone()));
    assert!(names.remove("gone.who").await.unwrap());
    assert!(resolver.resolve_uri(&gone).await.is_err());
    assert_eq!(likely(&gone), None);

    // Turned off, or with the lookup cache on: nothing is remembered.
    names.register("again.who", &uri_b).await.unwrap();
    let again = logical("again.who", port);
    for other in [
        self::resolver(port).dial_ahead(false),
        self::resolver(port).cache(Duration::from_secs(5)),
    ] {
        other.resolve_uri(&again).await.unwrap();
        assert_eq!(rmi::Resolve::likely(&other, &again), None);
    }
}

/// A shared name with more daemons than one `lookup_all` reply may carry (`max_reply_bytes`)
/// still resolves: `lookup_all` is refused naming the limit, and `PYRONAME:` falls back to
/// `lookup`, the name server's pick of one.
#[tokio::test]
async fn a_shared_name_too_large_for_one_reply_still_resolves_to_one_daemon() {
    let ns = NameServer::builder()
        .port(0)
        .no_broadcast()
        .limits(rmi::naming::Limits {
            max_reply_bytes: 200,
            ..rmi::naming::Limits::default()
        })
        .start()
        .await
        .unwrap();
    let port = ns.daemon().local_addr().unwrap().port();
    let names = NameServerProxy::connect(ns.uri()).await.unwrap();
    let uris: Vec<Uri> = (1..=8)
        .map(|p| Uri::tcp("obj", "127.0.0.1", 40_000 + p))
        .collect();
    for uri in &uris {
        names
            .register_shared("many.daemons", uri, tags(&[]))
            .await
            .unwrap();
    }
    let err = names.lookup_all("many.daemons").await.unwrap_err();
    assert!(err.to_string().contains("max_reply_bytes"), "{err}");
    let resolved = resolver(port)
        .resolve_uri(&logical("many.daemons", port))
        .await
        .unwrap();
    assert!(uris.contains(&resolved), "{resolved}");
}

/// Work a method leaves behind in its call's scope (`in_scope`) and runs after its caller's
/// deadline inherits a deadline that has passed, and so does the name-server lookup of a
/// `PYRONAME:` it calls: that lookup fails for it alone. The resolver's one name-server
/// connection stays (before, each such lookup counted as the name server down: the connection
/// every lookup shares was dropped and the name server located again, one new connection per
/// late call).
#[tokio::test]
async fn a_lookup_out_of_its_callers_time_keeps_the_name_server_connection() {
    let (_ns, names, port) = name_server().await;
    let relay = Relay::start(port).await;
    let (_a, uri_a) = who_daemon(1).await;
    names.register("late.who", &uri_a).await.unwrap();
    let shared = resolver(relay.port);
    let name = logical("late.who", relay.port);
    assert_eq!(shared.resolve_uri(&name).await.unwrap(), uri_a);
    assert_eq!(relay.accepted(), 1);

    let (outcomes, mut outcome) = tokio::sync::mpsc::unbounded_channel();
    let front = Daemon::bind("127.0.0.1:0").await.unwrap();
    let front_uri = front
        .register(LateServer::new(LateCalls {
            resolver: shared.clone(),
            name: name.clone(),
            outcomes,
        }))
        .unwrap();
    tokio::spawn({
        let d = front.clone();
        async move { d.serve().await }
    });
    let late = LateProxy::connect(front_uri).await.unwrap();
    // A second: the call itself (the method only spawns the late lookup) must be answered
    // within it, on a machine that may be loaded.
    let late = LateProxy::from_proxy(late.proxy().with_timeout(Duration::from_secs(1)));
    for n in 0..3 {
        late.call_late().await.unwrap();
        let done = tokio::time::timeout(Duration::from_secs(20), outcome.recv())
            .await
            .expect("the late call ended")
            .unwrap();
        assert!(
            matches!(&done, Err(e) if e.is_timeout()),
            "late call {n}: {done:?}"
        );
    }
    assert_eq!(relay.accepted(), 1, "the name-server connection was kept");
    assert_eq!(shared.resolve_uri(&name).await.unwrap(), uri_a);
    assert_eq!(relay.accepted(), 1);
    front.shutdown();
}

/// A name server serving on a thread of its own, stopped from another runtime that then
/// blocks (a fixture's `Drop` joining the server's thread) while a watch is open, stops: the
/// wait for the watch's reader runs on the name server's runtime. Before, it was a task on
/// the caller's runtime, which never ran again, and the join waited for ever (helper-165 #1).
#[test]
fn a_name_server_stopped_with_a_watch_open_from_a_runtime_that_then_blocks_stops() {
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let ns = std::sync::Arc::new(
                    NameServer::builder()
                        .host("127.0.0.1")
                        .port(0)
                        .no_broadcast()
                        .start()
                        .await
                        .unwrap(),
                );
                started_tx.send(ns.clone()).unwrap();
                let _ = ns.wait().await;
                done_tx.send(()).unwrap();
            });
    });
    let ns = started_rx.recv().unwrap();
    let caller = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _watch = caller.block_on(async {
        let names = NameServerProxy::connect(ns.uri()).await.unwrap();
        let watch = names.watch(None).await.unwrap();
        // The watch is open on the name server before the stop.
        tokio::time::sleep(Duration::from_millis(100)).await;
        ns.shutdown();
        watch
    });
    // The caller's runtime is not driven again.
    assert!(
        done_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "the name server did not stop"
    );
}
