//! The etcd store against real etcd processes (feature `etcd`): a 3-member cluster loses a
//! member while registrations and lookups run, with no operation failing; two name servers over
//! one etcd serve the same names, leases and watches. Everything runs on 127.0.0.1 with free
//! ports and temporary directories; waits are bounded, timings are printed, never asserted.
//!
//! Run with `cargo test -p rmi-naming -p rmi-cli --features etcd` (needs protoc to build and
//! Debian's etcd-server to run; without etcd each test says loudly that it skipped).

#[cfg(not(feature = "etcd"))]
#[test]
fn etcd_tests_were_not_built() {
    use std::io::Write;
    // Straight to the process's stderr, past the test harness's capture: seen even on success.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** NOT BUILT: the etcd store's tests need the `etcd` feature: run \
         `cargo test -p rmi-naming -p rmi-cli --features etcd` (needs protoc, Debian \
         protobuf-compiler, to build, and etcd, Debian etcd-server, to run) ***\n"
    );
}

#[cfg(feature = "etcd")]
#[path = "support/etcd.rs"]
mod etcd_process;

#[cfg(feature = "etcd")]
mod etcd {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use futures_util::StreamExt;
    use parking_lot::Mutex;
    use rmi_core::Uri;
    use rmi_naming::registry::{Change, EtcdOptions, EtcdStore, Registry, Watch};
    use rmi_naming::{Limits, NameServer, NameServerHandle, NameServerProxy, Storage};

    use crate::etcd_process::EtcdCluster;

    fn uri(port: u16) -> Uri {
        Uri::tcp("obj", "127.0.0.1", port)
    }

    /// The next change `pick` accepts (up to 20 s).
    async fn next_change(watch: &mut Watch, pick: impl Fn(&Change) -> bool) -> Change {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let change = watch.next().await.expect("the watch ended");
                if pick(&change) {
                    return change;
                }
            }
        })
        .await
        .expect("the change never came")
    }

    /// Polls (up to 20 s) until `f` gives true; returns how long it took.
    /// `f`'s first success, tried again (up to 20 s) while it fails: for the steps that must
    /// succeed in a test whose store has a short retry budget for its failure path, which a
    /// slow etcd (an fsync stall) may run out on the way.
    async fn first_ok<T, E, F, Fut>(what: &str, f: F) -> T
    where
        E: std::fmt::Display,
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let start = Instant::now();
        loop {
            match f().await {
                Ok(value) => return value,
                Err(e) if start.elapsed() > Duration::from_secs(20) => panic!("{what}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn until<F, Fut>(what: &str, f: F) -> Duration
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if f().await {
                return start.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{what} never happened");
    }

    /// Counters of the registration/lookup loop.
    #[derive(Default)]
    struct Load {
        done: AtomicU64,
        failed: AtomicU64,
        failures: Mutex<Vec<String>>,
        registered: Mutex<Vec<(String, Uri)>>,
        stop: AtomicBool,
    }

    /// Registers a fresh name and looks it up, again and again, counting failures.
    async fn worker(registry: Registry, load: Arc<Load>, worker: u16) {
        let mut i = 0u32;
        while !load.stop.load(Ordering::SeqCst) {
            let name = format!("load.w{worker}.{i}");
            let target = uri(1000 + worker);
            let result = async {
                registry
                    .register(&name, target.clone(), true, BTreeSet::new(), None)
                    .await?;
                let found = registry.lookup(&name).await?;
                if found.uri != target {
                    return Err(rmi_naming::NamingError::new(format!(
                        "{name} looked up as {}",
                        found.uri
                    )));
                }
                Ok::<_, rmi_naming::NamingError>(())
            }
            .await;
            match result {
                Ok(()) => load.registered.lock().push((name, target)),
                Err(e) => {
                    load.failed.fetch_add(1, Ordering::SeqCst);
                    load.failures.lock().push(format!("{name}: {e}"));
                }
            }
            load.done.fetch_add(1, Ordering::SeqCst);
            i += 1;
        }
    }

    /// Waits (up to 60 s) until the loop has done `ops` more operations.
    async fn wait_ops(load: &Load, ops: u64) {
        let target = load.done.load(Ordering::SeqCst) + ops;
        until("the load to make progress", || async {
            load.done.load(Ordering::SeqCst) >= target
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_three_member_cluster_loses_its_leader_with_zero_failed_operations() {
        let Some(mut cluster) = EtcdCluster::start(3, "3-member failover") else {
            return;
        };
        let leader = cluster.leader().expect("the cluster elected a leader");
        // The store starts on the leader, so the kill hits the member it is using.
        let mut endpoints = cluster.endpoints();
        endpoints.rotate_left(leader);
        let options = EtcdOptions {
            root: "/failover/".into(),
            ..EtcdOptions::default()
        };
        let store = Arc::new(
            EtcdStore::connect_with(&endpoints, Limits::default(), options)
                .await
                .unwrap(),
        );
        let registry = Registry::new(store.clone(), Limits::default());
        let mut watch = registry.watch();

        let load = Arc::new(Load::default());
        let workers: Vec<_> = (0..4)
            .map(|w| tokio::spawn(worker(registry.clone(), load.clone(), w)))
            .collect();
        wait_ops(&load, 100).await;
        let before = load.done.load(Ordering::SeqCst);
        let killed_at = Instant::now();
        cluster.members[leader].kill_9();
        wait_ops(&load, 200).await;
        // Failed over, it stays over: a stretch of one and a half times a dead member's second
        // out of the rotation passes, under load, with no attempt retried (helper-150 #4: with
        // the member that answered not made the first to try, the dead one was tried first
        // again each time its second lapsed, and retried, which only a count of retries
        // shows). A retry or two while the cluster settles on its new leader is allowed.
        let settling = Instant::now();
        let mut quiet = None;
        while quiet.is_none() && settling.elapsed() < Duration::from_secs(15) {
            let (retried, from) = (store.retries(), Instant::now());
            while from.elapsed() < Duration::from_millis(1_500) && store.retries() == retried {
                wait_ops(&load, 10).await;
            }
            if store.retries() == retried {
                quiet = Some(settling.elapsed());
            }
        }
        load.stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.await.unwrap();
        }
        let total = load.done.load(Ordering::SeqCst);
        let failed = load.failed.load(Ordering::SeqCst);
        eprintln!(
            "etcd failover: leader {} killed with SIGKILL after {before} register+lookup \
             operations; {total} in all, {failed} failed, {} attempts retried on another \
             member, 200 more done {:?} after the kill; healthy now: {:?}",
            cluster.members[leader].name,
            store.retries(),
            killed_at.elapsed(),
            store.healthy_endpoints()
        );
        assert_eq!(
            failed,
            0,
            "operations failed: {:?}",
            &load.failures.lock()[..]
        );
        // The kill hit the member in use: at least one attempt went to another.
        assert!(store.retries() > 0, "no attempt was retried");
        assert!(
            quiet.is_some(),
            "no 1.5 s without a retried attempt in 15 s after the failover: the dead member is \
             tried first again"
        );

        // Every name registered is there, and the watch (moved to another member) saw the
        // last one.
        let registered = load.registered.lock().clone();
        let listed = registry.list(Some("load."), None).await.unwrap();
        assert_eq!(listed.len(), registered.len());
        for (name, target) in &registered {
            assert_eq!(&registry.lookup(name).await.unwrap().uri, target, "{name}");
        }
        // The watch saw each registration once: none lost, none repeated where it was opened
        // again on another member.
        registry
            .register("after.kill", uri(9), false, BTreeSet::new(), None)
            .await
            .unwrap();
        let mut seen = Vec::new();
        loop {
            let change = next_change(&mut watch, |c| matches!(c, Change::Registered { .. })).await;
            let Change::Registered { name, .. } = change else {
                unreachable!()
            };
            let done = name == "after.kill";
            seen.push(name);
            if done {
                break;
            }
        }
        let mut want: Vec<String> = registered.iter().map(|(name, _)| name.clone()).collect();
        want.push("after.kill".into());
        assert_eq!(seen.len(), want.len(), "registrations seen by the watch");
        seen.sort();
        want.sort();
        assert_eq!(seen, want);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_quorum_registrations_fail_clearly_and_lookups_still_answer() {
        let Some(mut cluster) = EtcdCluster::start(3, "quorum loss") else {
            return;
        };
        let options = EtcdOptions {
            root: "/quorum/".into(),
            retry_budget: Duration::from_secs(4),
            ..EtcdOptions::default()
        };
        let store = EtcdStore::connect_with(&cluster.endpoints(), Limits::default(), options)
            .await
            .unwrap();
        let registry = Registry::new(Arc::new(store), Limits::default());
        registry
            .register("kept", uri(1), false, BTreeSet::new(), None)
            .await
            .unwrap();
        cluster.members[0].kill_9();
        cluster.members[1].kill_9();
        let started = Instant::now();
        let err = registry
            .register("lost", uri(2), false, BTreeSet::new(), None)
            .await
            .unwrap_err();
        assert!(
            err.message.contains("did not answer a registration"),
            "{err}"
        );
        let refused_after = started.elapsed();
        let started = Instant::now();
        let kept = registry.lookup("kept").await.unwrap();
        assert_eq!(kept.uri, uri(1), "a serializable read from the member left");
        eprintln!(
            "etcd without quorum: a registration refused after {refused_after:?} ({err}); a \
             lookup answered after {:?}",
            started.elapsed()
        );
    }

    /// Without quorum, only the first read spends its half of the retry budget asking for
    /// one: the pages of a listing after it, and the reads after that, go to the member left
    /// at once. (Before, every page of every read did, 5 s each at the defaults: a `yplookup`
    /// of 600 names took 10 s, past a resolver's 8 s lookup timeout, so every `PYROMETA:`
    /// failed, and a listing of 100,000 names took 16 minutes.) Counted in failed attempts,
    /// not timed.
    #[tokio::test]
    async fn without_quorum_a_listing_asks_for_a_quorum_once_not_per_page() {
        let Some(mut cluster) = EtcdCluster::start(3, "quorum loss, a listing") else {
            return;
        };
        let options = EtcdOptions {
            root: "/pages/".into(),
            retry_budget: Duration::from_secs(2),
            ..EtcdOptions::default()
        };
        let store = Arc::new(
            EtcdStore::connect_with(&cluster.endpoints(), Limits::default(), options)
                .await
                .unwrap(),
        );
        let registry = Registry::new(store.clone(), Limits::default());
        let tags = BTreeSet::from(["t".to_owned()]);
        for i in 0..600u16 {
            registry
                .register(&format!("n{i}"), uri(i + 1), false, tags.clone(), None)
                .await
                .unwrap();
        }
        cluster.members[0].kill_9();
        cluster.members[1].kill_9();
        let started = Instant::now();
        let first = registry.yplookup(Some(tags.clone()), None).await.unwrap();
        assert_eq!(first.len(), 600, "two pages, from the member left");
        let took = started.elapsed();
        let before = store.retries();
        let started = Instant::now();
        let again = registry.yplookup(Some(tags.clone()), None).await.unwrap();
        assert_eq!(again.len(), 600);
        assert_eq!(registry.lookup("n7").await.unwrap().uri, uri(8));
        let spent = store.retries() - before;
        eprintln!(
            "etcd without quorum: the first listing of 600 names took {took:?}, the next with \
             a lookup {:?} and {spent} failed attempts",
            started.elapsed()
        );
        assert!(spent <= 2, "{spent} failed attempts after the first read");
    }

    /// A name server whose etcd is gone answers `count` with a clear error, not with 0 (which
    /// would read as "no names").
    #[tokio::test]
    async fn a_count_the_store_cannot_make_is_an_error_not_zero() {
        let Some(mut cluster) = EtcdCluster::start(1, "count without etcd") else {
            return;
        };
        let options = EtcdOptions {
            root: "/count/".into(),
            retry_budget: Duration::from_secs(1),
            ..EtcdOptions::default()
        };
        let store = EtcdStore::connect_with(&cluster.endpoints(), Limits::default(), options)
            .await
            .unwrap();
        let ns = NameServer::builder()
            .port(0)
            .no_broadcast()
            .store(Arc::new(store))
            .start()
            .await
            .unwrap();
        let names = NameServerProxy::connect(ns.uri()).await.unwrap();
        let counted = uri(1);
        first_ok("register", || names.register("counted", &counted)).await;
        assert_eq!(
            first_ok("count", || names.count()).await,
            2,
            "the name server's own and one"
        );
        cluster.members[0].kill_9();
        let err = names.count().await.unwrap_err();
        assert!(err.to_string().contains("a count"), "{err}");
        // The name server itself serves on.
        names.ping().await.unwrap();
    }

    /// Sends `signal` (`STOP`, `CONT`) to a process, with the system's `kill`.
    fn signal(pid: u32, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// A one-member cluster, a store on it with these timeouts, and a registry over the store;
    /// `None` (after a loud skip message) without etcd.
    async fn one_member(
        test: &str,
        attempt_timeout: Duration,
        retry_budget: Duration,
    ) -> Option<(EtcdCluster, Arc<EtcdStore>, Registry)> {
        let cluster = EtcdCluster::start(1, test)?;
        let options = EtcdOptions {
            attempt_timeout,
            retry_budget,
            ..EtcdOptions::default()
        };
        let store = Arc::new(
            EtcdStore::connect_with(&cluster.endpoints(), Limits::default(), options)
                .await
                .unwrap(),
        );
        let registry = Registry::new(store.clone(), Limits::default());
        Some((cluster, store, registry))
    }

    /// [`one_member`] with the store's default timeouts.
    async fn one_member_with_defaults(
        test: &str,
    ) -> Option<(EtcdCluster, Arc<EtcdStore>, Registry)> {
        let defaults = EtcdOptions::default();
        one_member(test, defaults.attempt_timeout, defaults.retry_budget).await
    }

    /// A member that stops answering for a while (here: stopped, then continued after 1 s)
    /// costs an operation time, not its success: round after round of attempts, it goes
    /// through once the member answers again, within the retry budget.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_operation_rides_out_a_member_that_stops_answering_for_a_while() {
        let Some((cluster, store, registry)) = one_member(
            "a paused member",
            Duration::from_millis(200),
            Duration::from_secs(15),
        )
        .await
        else {
            return;
        };
        let pid = cluster.members[0].pid().expect("running");
        signal(pid, "STOP");
        let resume = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            signal(pid, "CONT");
        });
        let started = Instant::now();
        let registered = registry
            .register("paused", uri(1), false, BTreeSet::new(), None)
            .await;
        let took = started.elapsed();
        resume.await.unwrap();
        registered.unwrap();
        assert_eq!(registry.lookup("paused").await.unwrap().uri, uri(1));
        assert!(store.retries() > 0, "no attempt was retried");
        eprintln!(
            "etcd paused for 1 s: the registration went through after {took:?}, {} attempts \
             retried",
            store.retries()
        );
    }

    /// A name server whose etcd is out of reach: a resolver's watched cache, told its watch
    /// lagged, asks again, and answers from what it had (within `max_stale`) when the name
    /// server says its store cannot answer (Pyro's `CommunicationError`, not a `NamingError`:
    /// an outage, not an unknown name). Before, the `Lagged` emptied the cache, and the name
    /// server's answer was taken for "unknown": every lookup failed for the outage.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cached_name_is_answered_while_the_name_servers_etcd_is_out_of_reach() {
        use rmi_core::Resolve;
        let Some((cluster, store, _)) = one_member(
            "a cache while etcd is out of reach",
            Duration::from_millis(300),
            Duration::from_secs(1),
        )
        .await
        else {
            return;
        };
        let ns = NameServer::builder()
            .host("127.0.0.1")
            .port(0)
            .no_broadcast()
            .store(store)
            .start()
            .await
            .unwrap();
        let names = NameServerProxy::connect(ns.uri()).await.unwrap();
        let cached = uri(1);
        first_ok("register", || names.register("cached", &cached)).await;
        let port = ns.daemon().local_addr().unwrap().port();
        let resolver = rmi_naming::NamingResolver::new(
            rmi_naming::NsLocator::new()
                .host("127.0.0.1")
                .port(port)
                .no_broadcast(),
        )
        .cache(Duration::from_secs(60))
        .lookup_timeout(Duration::from_secs(5));
        let logical: Uri = format!("PYRONAME:cached@127.0.0.1:{port}").parse().unwrap();
        assert_eq!(
            first_ok("resolve", || resolver.resolve(&logical)).await,
            uri(1)
        );
        let mut watch = names.watch(None).await.unwrap();
        let pid = cluster.members[0].pid().expect("running");
        signal(pid, "STOP");
        let lagged = tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .expect("the watch said it lagged")
            .unwrap()
            .unwrap();
        assert_eq!(lagged, Change::Lagged { missed: 0 });
        // (The resolver's own watch is told at the same moment.)
        tokio::time::sleep(Duration::from_millis(300)).await;
        let answered = resolver.resolve(&logical).await;
        let err = names.lookup("cached").await.unwrap_err();
        signal(pid, "CONT");
        assert_eq!(answered.unwrap(), uri(1), "answered from the cache");
        assert!(
            matches!(&err, rmi_core::Error::Remote(r) if r.type_name == "Pyro5.errors.CommunicationError"),
            "{err:?}"
        );
    }

    /// A watch cut off from etcd (its only member stopped) cannot vouch for what a watcher
    /// cached: after the retry budget it says so (`Lagged`, so a cache reads again rather than
    /// answering from what it had, for as long as the outage lasts), and again when it is back
    /// (what was read meanwhile may be older than what it goes on from). Changes made after
    /// are seen. Before, a cut-off watch was silent: a resolver's cache answered unasked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_cut_off_from_etcd_says_it_lagged_and_again_when_it_is_back() {
        let Some((cluster, _store, registry)) = one_member(
            "a watch cut off from etcd",
            Duration::from_millis(300),
            Duration::from_secs(2),
        )
        .await
        else {
            return;
        };
        let mut watch = registry.watch();
        // Safe: a write retried after its 300 ms attempt timed out (a slow fsync) is not put
        // twice, which the watch would show as a second registration where `Lagged` is due.
        registry
            .register("before", uri(1), true, BTreeSet::new(), None)
            .await
            .unwrap();
        let seen = next_change(&mut watch, |_| true).await;
        assert!(
            matches!(&seen, Change::Registered { name, .. } if name == "before"),
            "{seen:?}"
        );
        let pid = cluster.members[0].pid().expect("running");
        signal(pid, "STOP");
        let stopped = Instant::now();
        let lagged = next_change(&mut watch, |_| true).await;
        let told_after = stopped.elapsed();
        signal(pid, "CONT");
        assert_eq!(lagged, Change::Lagged { missed: 0 });
        let back = next_change(&mut watch, |_| true).await;
        assert_eq!(back, Change::Lagged { missed: 0 });
        registry
            .register("after", uri(2), true, BTreeSet::new(), None)
            .await
            .unwrap();
        let seen = next_change(&mut watch, |_| true).await;
        assert!(
            matches!(&seen, Change::Registered { name, .. } if name == "after"),
            "{seen:?}"
        );
        eprintln!("etcd stopped: the watch said it lagged after {told_after:?} (retry budget 2 s)");
    }

    async fn name_server(storage: &Storage) -> (NameServerHandle, NameServerProxy) {
        let ns = NameServer::builder()
            .port(0)
            .no_broadcast()
            .storage(storage.clone())
            .start()
            .await
            .unwrap();
        let proxy = NameServerProxy::connect(ns.uri()).await.unwrap();
        (ns, proxy)
    }

    /// An idle store with a watch open keeps its member: it pings no more often than etcd
    /// takes (every 5 s at most, and never on a connection with nothing open). (Before, it
    /// pinged every 2 s even while idle; etcd answered GOAWAY "too_many_pings" after a few,
    /// and the store marked its healthy member down every few seconds and reopened its
    /// watch.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_store_keeps_its_member() {
        let Some((cluster, store, registry)) = one_member_with_defaults("an idle store").await
        else {
            return;
        };
        let mut watch = registry.watch();
        registry
            .register("idle", uri(1), false, BTreeSet::new(), None)
            .await
            .unwrap();
        next_change(&mut watch, |_| true).await;
        let start = Instant::now();
        let mut down = 0;
        while start.elapsed() < Duration::from_secs(12) {
            down += usize::from(store.healthy_endpoints() != cluster.endpoints());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            down, 0,
            "the member was marked down in {down} samples of 100 ms"
        );
        assert_eq!(store.retries(), 0);
    }

    /// Watchers that stop reading (a paused `rmi-nsc watch`, a stalled cache's client) do not
    /// stall the store: what etcd sends them must not sit unread in the HTTP/2 flow-control
    /// window that every call to that member shares (5 MiB; 2 MiB a stream). Three or four
    /// stalled watches over 16 KiB entries held it all, and every later registration waited until its
    /// retry budget ran out. Once read, each watch reports every change: what it stopped
    /// reading is read again from etcd's history.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watchers_that_stop_reading_do_not_stall_the_store() {
        let Some((_cluster, _store, registry)) =
            one_member_with_defaults("watchers that stop reading").await
        else {
            return;
        };
        let mut stalled: Vec<Watch> = (0..4).map(|_| registry.watch()).collect();
        // Each change is about 32 KiB on the wire (the entry and its previous value): 2,000 of
        // them are 1,024 queued per watcher and 30 MiB more a watcher that etcd would send.
        let tags: BTreeSet<String> = (0..64)
            .map(|i| format!("{i:02}{}", "t".repeat(254)))
            .collect();
        let registrations = 2000u16;
        let start = Instant::now();
        let writers: Vec<_> = (0..8u16)
            .map(|w| {
                let registry = registry.clone();
                let tags = tags.clone();
                tokio::spawn(async move {
                    for i in (w..registrations).step_by(8) {
                        registry
                            .register(
                                &format!("big.{}", i % 50),
                                uri(i),
                                false,
                                tags.clone(),
                                None,
                            )
                            .await
                            .map_err(|e| format!("registration {i}: {e}"))?;
                    }
                    Ok::<_, String>(())
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap().unwrap();
        }
        let took = start.elapsed();
        // The store still answers at once.
        assert!(registry.lookup("big.0").await.is_ok());
        registry
            .register("end", uri(60000), false, BTreeSet::new(), None)
            .await
            .unwrap();
        // And each watch reports every one of the 2,000 registrations, once.
        for (n, watch) in stalled.iter_mut().enumerate() {
            let mut seen = BTreeSet::new();
            while seen.len() < usize::from(registrations) {
                match next_change(watch, |_| true).await {
                    Change::Registered { entry, .. } => {
                        assert!(
                            seen.insert(entry.uri.to_string()),
                            "watch {n}: {entry:?} twice"
                        );
                    }
                    other => panic!("watch {n}: {other:?} among the registrations"),
                }
            }
            // Nothing delivered twice after the last: the next change is the sentinel.
            let next = next_change(watch, |_| true).await;
            assert!(
                matches!(&next, Change::Registered { name, .. } if name == "end"),
                "watch {n}: {next:?} after the 2,000"
            );
        }
        eprintln!(
            "{registrations} registrations of 16 KiB entries with four stalled watches took \
             {took:?}"
        );
    }

    /// A store's watchers share one etcd watch (etcd's own gauge of watchers says 1 for 20 of
    /// them), which ends with the last of them and starts again with the next. Before, each
    /// watcher (a cached resolver, an `rmi-nsc watch`) was an etcd watch of its own: N of them
    /// had etcd send every change N times and read its history N times whenever they resumed
    /// (helper-106 #2).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_s_watchers_share_one_etcd_watch() {
        let Some((cluster, _store, registry)) =
            one_member_with_defaults("watchers share one etcd watch").await
        else {
            return;
        };
        let watchers = || cluster.metric(0, "etcd_debugging_mvcc_watcher_total");
        assert_eq!(watchers(), Some(0.0));
        let mut watches: Vec<Watch> = (0..20).map(|_| registry.watch()).collect();
        registry
            .register("first", uri(1), false, BTreeSet::new(), None)
            .await
            .unwrap();
        // Every watcher has its watch open once it has seen the change.
        for watch in &mut watches {
            let seen = next_change(watch, |_| true).await;
            assert!(
                matches!(&seen, Change::Registered { name, .. } if name == "first"),
                "{seen:?}"
            );
        }
        assert_eq!(
            watchers(),
            Some(1.0),
            "etcd's watchers for 20 of the store's"
        );
        // The last one left still sees what comes next; with none left, etcd has none.
        let mut last = watches.pop().unwrap();
        drop(watches);
        registry
            .register("second", uri(2), false, BTreeSet::new(), None)
            .await
            .unwrap();
        let seen = next_change(&mut last, |_| true).await;
        assert!(
            matches!(&seen, Change::Registered { name, .. } if name == "second"),
            "{seen:?}"
        );
        assert_eq!(watchers(), Some(1.0));
        drop(last);
        until("the shared watch ending with its last watcher", || async {
            watchers() == Some(0.0)
        })
        .await;
        // A new watcher starts it again.
        let mut again = registry.watch();
        registry
            .register("third", uri(3), false, BTreeSet::new(), None)
            .await
            .unwrap();
        let seen = next_change(&mut again, |_| true).await;
        assert!(
            matches!(&seen, Change::Registered { name, .. } if name == "third"),
            "{seen:?}"
        );
        assert_eq!(watchers(), Some(1.0));
    }

    /// The shared watch started on a runtime that is then dropped (a test's, a tool's short
    /// one) goes with it: the next watch, on another runtime, starts a watch of its own and
    /// sees changes. (Before, the store's slot still held the dead watch: every later watch
    /// joined it and never saw a change.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shared_watch_gone_with_its_runtime_is_started_again() {
        let Some((_cluster, store, registry)) =
            one_member_with_defaults("a shared watch gone with its runtime").await
        else {
            return;
        };
        std::thread::spawn({
            let store = store.clone();
            move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    use rmi_naming::registry::Store as _;
                    let _watch = store.watch();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                });
                drop(runtime);
            }
        })
        .join()
        .unwrap();
        let mut watch = registry.watch();
        registry
            .register("after", uri(1), false, BTreeSet::new(), None)
            .await
            .unwrap();
        let seen = next_change(&mut watch, |_| true).await;
        assert!(
            matches!(&seen, Change::Registered { name, .. } if name == "after"),
            "{seen:?}"
        );
    }

    /// A lease of 1,500 names expires (no revoke) while a watcher reads nothing: its queue fills
    /// 1,024 changes into that revision, and it leaves the shared watch for one of its own, which
    /// opens again in the middle of the revision. Every name is still reported `Expired`: the
    /// lease's record, among the events passed over, still says so. (Before, the names after the
    /// reopening were reported `Removed`.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn names_of_a_lease_that_expires_are_expired_for_a_watcher_that_fell_behind() {
        let Some((_cluster, _store, registry)) =
            one_member_with_defaults("expiry for a watcher that fell behind").await
        else {
            return;
        };
        let mut watch = registry.watch();
        let lease = registry.grant(Duration::from_secs(8)).await.unwrap();
        // Kept alive while the names are registered (on a slow disk that can take longer than
        // the lease lives), then left to expire.
        let keeping = tokio::spawn({
            let registry = registry.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let _ = registry.keep_alive(lease).await;
                }
            }
        });
        let names = 1500u16;
        let writers: Vec<_> = (0..8u16)
            .map(|w| {
                let registry = registry.clone();
                tokio::spawn(async move {
                    for i in (w..names).step_by(8) {
                        registry
                            .register(
                                &format!("exp.{i:04}"),
                                uri(i),
                                false,
                                BTreeSet::new(),
                                Some(lease),
                            )
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        // Read each registration as it comes (the queue never fills), then nothing more until
        // the lease is gone.
        let mut registered = 0;
        while registered < names {
            if let Change::Registered { .. } = next_change(&mut watch, |_| true).await {
                registered += 1;
            }
        }
        for writer in writers {
            writer.await.unwrap();
        }
        keeping.abort();
        until("the lease to expire", || async {
            registry.lookup("exp.0000").await.is_err()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut expired = BTreeSet::new();
        while expired.len() < usize::from(names) {
            match next_change(&mut watch, |c| !matches!(c, Change::Lagged { .. })).await {
                Change::Expired { name, .. } => {
                    assert!(expired.insert(name.clone()), "{name} twice")
                }
                other => panic!("after {} expired: {other:?}", expired.len()),
            }
        }
    }

    /// A watcher whose queue fills in the middle of a revision etcd sends in fragments (a
    /// lease revoked with 150 names of 17 KB: 2.5 MB, over the 1.5 MiB of a fragment): its
    /// watch is opened again at that revision and passes over the events it delivered, so each
    /// change comes once and none is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_closed_in_the_middle_of_a_revision_delivers_the_rest_once() {
        let Some((_cluster, _store, registry)) =
            one_member_with_defaults("a watch closed in the middle of a revision").await
        else {
            return;
        };
        let mut watch = registry.watch();
        let lease = registry.grant(Duration::from_secs(60)).await.unwrap();
        let tags: BTreeSet<String> = (0..64)
            .map(|i| format!("{i:02}{}", "t".repeat(254)))
            .collect();
        for i in 0..150u16 {
            registry
                .register(
                    &format!("leased.{i:03}"),
                    uri(i),
                    false,
                    tags.clone(),
                    Some(lease),
                )
                .await
                .unwrap();
        }
        // 1,004 changes queued (of 1,024) when the revoke comes: the queue fills 20 events
        // into its revision.
        for i in 0..854u16 {
            registry
                .register(
                    &format!("plain.{i:03}"),
                    uri(1000 + i),
                    false,
                    BTreeSet::new(),
                    None,
                )
                .await
                .unwrap();
        }
        assert_eq!(registry.revoke(lease).await.unwrap(), 150);
        registry
            .register("end", uri(60000), false, BTreeSet::new(), None)
            .await
            .unwrap();
        // Time for the watch to take in the revoke's first fragment and find the queue full
        // (a few milliseconds here; were it slower, the test would pass without closing the
        // watch mid-revision, never fail for it).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (mut registered, mut removed) = (BTreeSet::new(), BTreeSet::new());
        loop {
            match next_change(&mut watch, |_| true).await {
                Change::Registered { name, .. } if name == "end" => break,
                Change::Registered { name, .. } => {
                    assert!(removed.is_empty(), "{name} registered after the revoke");
                    assert!(registered.insert(name.clone()), "{name} registered twice");
                }
                Change::Removed { name, .. } => {
                    assert!(name.starts_with("leased."), "{name} removed");
                    assert!(removed.insert(name.clone()), "{name} removed twice");
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(registered.len(), 1004);
        assert_eq!(removed.len(), 150, "every name of the lease, once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_name_servers_over_one_etcd_share_names_leases_and_watches() {
        let Some(cluster) = EtcdCluster::start(1, "two name servers over one etcd") else {
            return;
        };
        let storage = Storage::Etcd(cluster.endpoints());
        let (a, pa) = name_server(&storage).await;
        let (b, pb) = name_server(&storage).await;
        let mut watch = b.registry().watch();

        // Each answers for itself as Pyro.NameServer.
        assert_eq!(pa.lookup("Pyro.NameServer").await.unwrap(), *a.uri());
        assert_eq!(pb.lookup("Pyro.NameServer").await.unwrap(), *b.uri());
        assert_ne!(a.uri(), b.uri());

        // Registered through one, found through the other; the other's watch sees it.
        let tags: BTreeSet<String> = ["red".to_owned()].into();
        pa.register_with("shared.one", &uri(1), false, tags.clone())
            .await
            .unwrap();
        assert_eq!(
            pb.lookup_with_metadata("shared.one").await.unwrap(),
            (uri(1), tags)
        );
        let seen = next_change(&mut watch, |_| true).await;
        assert!(
            matches!(&seen, Change::Registered { name, entry } if name == "shared.one" && entry.uri == uri(1)),
            "{seen:?}"
        );
        assert_eq!(pb.count().await.unwrap(), 2, "shared.one and B itself");
        assert_eq!(pb.yplookup_all(["red"]).await.unwrap().len(), 1);
        assert!(pb.remove("shared.one").await.unwrap());
        assert!(pa.lookup("shared.one").await.is_err());
        let seen = next_change(&mut watch, |_| true).await;
        assert_eq!(
            seen,
            Change::Removed {
                name: "shared.one".into(),
                uri: Some(uri(1)),
            }
        );

        // A lease granted through A, kept alive once through B, then left: the name vanishes
        // from both within the TTL, and the watch says it expired. (Six seconds: the grant, a
        // registration, a lookup and the keep-alive, each an fsync'd write or a read of etcd,
        // must all come within it.)
        let ttl = Duration::from_secs(6);
        let lease = pa.api().lease_grant(ttl.as_millis() as u64).await.unwrap();
        pa.api()
            .register_leased("leased.x".into(), uri(2), lease, None, None)
            .await
            .unwrap();
        assert_eq!(pb.lookup("leased.x").await.unwrap(), uri(2));
        let granted = pb.api().lease_keep_alive(lease).await.unwrap();
        let last_keep_alive = Instant::now();
        until("leased.x to vanish from B", || async {
            pb.lookup("leased.x").await.is_err()
        })
        .await;
        let vanished = last_keep_alive.elapsed();
        assert!(pa.lookup("leased.x").await.is_err());
        let expired = next_change(&mut watch, |c| matches!(c, Change::Expired { .. })).await;
        assert!(
            matches!(&expired, Change::Expired { name, lease: l, .. } if name == "leased.x" && l.0 == lease),
            "{expired:?}"
        );
        eprintln!(
            "etcd lease expiry: TTL {granted} ms; the name vanished from the other name server \
             {vanished:?} after the last keep-alive (the daemon's death), polled every 20 ms"
        );
        let err = pa.api().lease_keep_alive(lease).await.unwrap_err();
        assert!(err.to_string().contains("unknown lease"), "{err}");

        // A daemon's leased names, revoked on a clean shutdown through A: gone from B at once,
        // seen as removed.
        let held = pa.lease(ttl).await.unwrap();
        held.register("leased.y", &uri(3)).await.unwrap();
        assert_eq!(pb.lookup("leased.y").await.unwrap(), uri(3));
        assert_eq!(held.revoke().await.unwrap(), 1);
        assert!(pb.lookup("leased.y").await.is_err());
        let removed = next_change(&mut watch, |c| !matches!(c, Change::Registered { .. })).await;
        assert_eq!(
            removed,
            Change::Removed {
                name: "leased.y".into(),
                uri: Some(uri(3)),
            }
        );
    }
}
