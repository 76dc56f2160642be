//! Liveness through a real `rmi-ns` per backend: a daemon (this test binary re-run as a child
//! process) registers a name under a lease and is killed with SIGKILL; its name vanishes
//! within the TTL. The time from the kill to the name's absence is printed for RELIABILITY.md,
//! never asserted:
//!
//! ```sh
//! cargo test -p rmi-cli --features etcd --test liveness -- --nocapture --test-threads=1
//! ```
//!
//! 127.0.0.1 only; the etcd case needs the `etcd` feature and an etcd binary.

mod support;

#[cfg(feature = "etcd")]
#[path = "../../rmi-naming/tests/support/etcd.rs"]
mod etcd_process;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rmi::naming::NameServerProxy;
use rmi::Uri;
use support::{locate, spawn_rmi_ns, ChildGuard};

/// Environment variable that turns this test binary into a daemon holding a lease:
/// `ns_uri;name;ttl_ms`.
const LEASED_DAEMON_ENV: &str = "RMI_TEST_LEASED_DAEMON";

/// Not a test: with [`LEASED_DAEMON_ENV`] set, this process is a daemon that registers its
/// own `Pyro.Daemon` object under a lease and serves until killed.
#[test]
fn leased_daemon_entry() {
    let Ok(spec) = std::env::var(LEASED_DAEMON_ENV) else {
        return;
    };
    let mut parts = spec.split(';');
    let (ns, name, ttl) = (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        Duration::from_millis(parts.next().unwrap().parse().unwrap()),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
        let uri = daemon.uri_for("Pyro.Daemon");
        let names = NameServerProxy::connect(ns.as_str()).await.unwrap();
        let held = names.lease(ttl).await.unwrap();
        held.register(&name, &uri).await.unwrap();
        println!("LEASED {uri}");
        daemon.serve().await.unwrap();
    });
}

/// Starts this test binary as a daemon holding `name` under a lease of `ttl` at `ns`.
fn spawn_leased_daemon(ns: &Uri, name: &str, ttl: Duration) -> (ChildGuard, Uri) {
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "--exact",
            "leased_daemon_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            LEASED_DAEMON_ENV,
            format!("{ns};{name};{}", ttl.as_millis()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn leased daemon");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let uri = loop {
        let line = lines
            .next()
            .expect("the child exited before registering")
            .unwrap();
        if let Some(at) = line.find("LEASED ") {
            break line[at + "LEASED ".len()..].trim().parse().unwrap();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (ChildGuard(child), uri)
}

/// A daemon registered through `rmi-ns --storage {storage}` with a lease of `ttl` is killed
/// with SIGKILL; returns how long its name took to vanish (polled every 10 ms, up to 4 TTLs).
async fn killed_daemon_loses_its_name(backend: &str, storage: &str, ttl: Duration) -> Duration {
    let (mut ns, port) = spawn_rmi_ns(&["--storage", storage]);
    let names = locate(port).await;
    let ns_uri = names.uri().clone();
    let (mut daemon, uri) =
        tokio::task::spawn_blocking(move || spawn_leased_daemon(&ns_uri, "killed.daemon", ttl))
            .await
            .unwrap();
    assert_eq!(names.lookup("killed.daemon").await.unwrap(), uri);
    // Alive past a TTL: the lease is being kept alive.
    tokio::time::sleep(ttl + ttl / 2).await;
    assert_eq!(names.lookup("killed.daemon").await.unwrap(), uri);

    let killed = tokio::task::spawn_blocking(move || {
        daemon.kill_9();
        Instant::now()
    })
    .await
    .unwrap();
    let gone = loop {
        match names.lookup("killed.daemon").await {
            Err(rmi::Error::Resolve(m)) if m.contains("unknown name") => break killed.elapsed(),
            Err(e) => panic!("lookup failed otherwise: {e}"),
            Ok(_) => {}
        }
        // Within the TTL (the lease was kept alive at most a third of it before the kill),
        // with a TTL's slack for a loaded machine.
        assert!(
            killed.elapsed() < ttl * 2,
            "the killed daemon's name is still there after 2 TTLs"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(ns.is_alive());
    eprintln!(
        "LIVENESS {backend}: name gone {:.2} s after kill -9 of its daemon (lease TTL {:?}, \
         rmi-ns child, polled every 10 ms)",
        gone.as_secs_f64(),
        ttl
    );
    gone
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_killed_daemons_name_vanishes_within_the_ttl() {
    killed_daemon_loses_its_name("memory", "memory", Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_killed_daemons_name_vanishes_within_the_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("sql:{}", dir.path().join("names.db").display());
    killed_daemon_loses_its_name("SQLite", &storage, Duration::from_secs(1)).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_killed_daemons_name_vanishes_within_the_ttl() {
    let Some(cluster) =
        tokio::task::spawn_blocking(|| etcd_process::EtcdCluster::start(1, "liveness over etcd"))
            .await
            .unwrap()
    else {
        return;
    };
    // etcd raises TTLs below about 1.5 s (its election timeout) to that minimum.
    killed_daemon_loses_its_name("etcd", &cluster.storage(), Duration::from_secs(2)).await;
}
