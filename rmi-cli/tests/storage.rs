//! `rmi-ns --storage`: names in an SQLite file survive `kill -9` of the process, etcd without
//! its feature is refused with how to build it, and the quotas (rmi-ns's 8 MiB
//! `--max-message-size` first) refuse hostile requests while the process keeps serving, its
//! memory growth printed. (rmi-ns over etcd is in `etcd.rs`.)
//! Everything runs on 127.0.0.1 with free ports and a temporary directory.

mod support;

use std::collections::BTreeSet;

use rmi::{Error, Uri};
use support::{locate, spawn_rmi_ns};

fn tags(t: &[&str]) -> BTreeSet<String> {
    t.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn sqlite_names_survive_kill_9_of_rmi_ns() {
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("sql:{}", dir.path().join("names.db").display());
    let (mut ns, port) = spawn_rmi_ns(&["--storage", &storage]);
    let names = locate(port).await;
    let one = Uri::tcp("one", "127.0.0.1", 4001);
    let two = Uri::tcp("two", "127.0.0.1", 4002);
    names
        .register_with("app.one", &one, false, tags(&["red", "big"]))
        .await
        .unwrap();
    names.register("app.two", &two).await.unwrap();
    names.register("app.gone", &two).await.unwrap();
    assert!(names.remove("app.gone").await.unwrap());
    // Many at once, on one connection (they share commits).
    let many = (0..200).map(|i| {
        let names = names.clone();
        async move {
            names
                .register(&format!("many.{i}"), &Uri::tcp("m", "127.0.0.1", i))
                .await
        }
    });
    for result in futures_util::future::join_all(many).await {
        result.unwrap();
    }
    // Each of those calls was answered, so each is on disk: kill at once, no clean shutdown.
    ns.kill_9();

    let (mut ns, port) = spawn_rmi_ns(&["--storage", &storage]);
    let names = locate(port).await;
    assert_eq!(
        names.lookup_with_metadata("app.one").await.unwrap(),
        (one, tags(&["red", "big"]))
    );
    assert_eq!(names.lookup("app.two").await.unwrap(), two);
    assert!(names.lookup("app.gone").await.is_err());
    assert_eq!(
        names.lookup("Pyro.NameServer").await.unwrap(),
        *names.uri(),
        "the name server's own entry names the new process"
    );
    let many = names.list_prefix("many.").await.unwrap();
    assert_eq!(many.len(), 200, "every acknowledged registration is there");
    assert_eq!(many["many.7"], Uri::tcp("m", "127.0.0.1", 7));
    assert_eq!(names.count().await.unwrap(), 203);
    assert!(ns.is_alive());
}

/// Stopped cleanly (SIGTERM), rmi-ns leaves its SQLite store whole in its one file: the WAL
/// folded in, so that `names.db` copied alone (a move, a backup) holds every name. (Before,
/// the writer thread was killed with the process: the names were in `names.db-wal` only, and
/// the copy started as an empty store without a word; helper-151 #1.)
#[tokio::test]
async fn a_clean_stop_leaves_the_sqlite_store_whole_in_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("names.db");
    let (mut ns, port) = spawn_rmi_ns(&["--storage", &format!("sql:{}", db.display())]);
    let names = locate(port).await;
    let one = Uri::tcp("one", "127.0.0.1", 4001);
    names.register("app.one", &one).await.unwrap();
    drop(names);
    let (status, _) = ns.terminate();
    assert!(status.success(), "{status:?}");
    let wal = dir.path().join("names.db-wal");
    let left = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(left, 0, "{} bytes left in {}", left, wal.display());

    let copy = tempfile::tempdir().unwrap();
    let copied = copy.path().join("names.db");
    std::fs::copy(&db, &copied).unwrap();
    let (_ns, port) = spawn_rmi_ns(&["--storage", &format!("sql:{}", copied.display())]);
    let names = locate(port).await;
    assert_eq!(names.lookup("app.one").await.unwrap(), one);
}

/// A second rmi-ns on a store in use, or a store whose directory cannot be written, is told
/// what is wrong with the file and nothing about choosing a storage; a missing directory says
/// where SQLite writes (before: "disk I/O error" or "unable to open database file" alone, and
/// a hint to choose the storage for each; helper-151 #3).
#[test]
fn a_sqlite_store_that_cannot_be_opened_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("sql:{}", dir.path().join("names.db").display());
    let (_first, _) = spawn_rmi_ns(&["--storage", &storage]);
    let missing = format!("sql:{}", dir.path().join("none/names.db").display());
    for (storage, says) in [
        (&storage, "in use by another process"),
        (&missing, "write its directory"),
    ] {
        let out = support::tool(env!("CARGO_BIN_EXE_rmi-ns"))
            .args(["--port", "0", "--nobc", "--storage", storage])
            .output()
            .expect("run rmi-ns");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
        assert!(!stderr.contains("choose the storage"), "{stderr}");
    }
}

#[test]
fn an_unknown_or_unbuilt_storage_is_refused_clearly() {
    #[cfg(not(feature = "etcd"))]
    {
        let out = support::tool(env!("CARGO_BIN_EXE_rmi-ns"))
            .args(["--port", "0", "--nobc", "--storage", "etcd:127.0.0.1:2379"])
            .output()
            .expect("run rmi-ns");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("etcd backend is not built") && stderr.contains("--features etcd"),
            "{stderr}"
        );
    }
    let out = support::tool(env!("CARGO_BIN_EXE_rmi-ns"))
        .args(["--port", "0", "--nobc", "--storage", "mongodb:x"])
        .output()
        .expect("run rmi-ns");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("expected memory, sql:PATH or etcd"),
        "{stderr}"
    );
}

/// `count` tags of 10 bytes each (`tag0000000`…).
fn many_tags(count: usize) -> BTreeSet<String> {
    (0..count).map(|i| format!("tag{i:07}")).collect()
}

/// Registers `count` tags on one name (refused one way or another) and returns rmi-ns's RSS
/// in KiB afterwards, and the error.
async fn refused_register(ns: &support::ChildGuard, port: u16, count: usize) -> (u64, Error) {
    let names = locate(port).await;
    let uri = Uri::tcp("obj", "127.0.0.1", 4000);
    let err = names
        .register_with("greedy", &uri, false, many_tags(count))
        .await
        .unwrap_err();
    (ns.rss_kib(), err)
}

#[tokio::test]
async fn quotas_refuse_hostile_requests_and_rmi_ns_keeps_serving() {
    let (mut ns, port) = spawn_rmi_ns(&[]);
    let names = locate(port).await;
    let uri = Uri::tcp("obj", "127.0.0.1", 4000);
    names.ping().await.unwrap();
    let before = ns.rss_kib();

    // One register carrying 1M metadata tags (18 MB on the wire): over rmi-ns's default
    // --max-message-size (8 MiB), refused from its header before the body is read.
    let (after_1m, err) = refused_register(&ns, port, 1_000_000).await;
    eprintln!("a 1M-tag register to rmi-ns (8 MiB messages): {err}");
    let text = err.to_string();
    assert!(
        text.contains("max_message_size") && !text.contains("max_tags"),
        "refused for its size, not decoded: {err}"
    );
    // Just under the message limit (600k tags, 6.6 MB): decoded, then refused by max_tags.
    let (after_600k, err) = refused_register(&ns, port, 600_000).await;
    assert!(
        matches!(&err, Error::Resolve(m) if m.contains("max_tags")),
        "{err}"
    );
    // Again: the decode's memory is reused, not added to (nothing was stored).
    let (again, _) = refused_register(&ns, port, 600_000).await;
    eprintln!(
        "QUOTA rmi-ns RSS (default --max-message-size 8MiB): {before} KiB before, {after_1m} KiB \
         after a refused 1M-tag register (18 MB), {after_600k} KiB after a refused 600k-tag one \
         (6.6 MB), {again} KiB after a second"
    );
    // A regex that compiles huge, many times over, pipelined.
    let calls = (0..20).map(|_| names.list_regex(r"\w{1000}"));
    for result in futures_util::future::join_all(calls).await {
        let err = result.unwrap_err();
        assert!(
            matches!(&err, Error::Resolve(m) if m.contains("regex_size_limit")),
            "{err}"
        );
    }
    assert!(ns.is_alive(), "rmi-ns survived");
    let names = locate(port).await;
    names.register("after", &uri).await.unwrap();
    assert_eq!(names.lookup("after").await.unwrap(), uri);
    assert!(names.lookup("greedy").await.is_err());
}

#[tokio::test]
async fn with_64_mib_messages_a_1m_tag_register_is_decoded_then_refused_by_max_tags() {
    // The library's defaults (a daemon's 64 MiB messages, 16 MiB replies), for comparison.
    let (mut ns, port) =
        spawn_rmi_ns(&["--max-message-size", "64MiB", "--max-reply-bytes", "16MiB"]);
    locate(port).await.ping().await.unwrap();
    let before = ns.rss_kib();
    let (after, err) = refused_register(&ns, port, 1_000_000).await;
    assert!(
        matches!(&err, Error::Resolve(m) if m.contains("max_tags")),
        "{err}"
    );
    let (again, _) = refused_register(&ns, port, 1_000_000).await;
    eprintln!(
        "QUOTA rmi-ns RSS (--max-message-size 64MiB): {before} KiB before, {after} KiB after a \
         refused 1M-tag register (18 MB), {again} KiB after a second"
    );
    assert!(ns.is_alive());
    locate(port).await.ping().await.unwrap();
}

/// The test plan's T-REC-4: `kill -9` in the middle of a burst of registrations from eight
/// clients, five times on one file. Each time the store opens again, and holds every
/// registration that was answered (and of those in flight, any).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_every_answered_registration_through_kill_9_mid_burst() {
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("sql:{}", dir.path().join("names.db").display());
    let mut answered_before = 0;
    for (round, after_ms) in [15u64, 40, 80, 130, 200].into_iter().enumerate() {
        let (mut ns, port) = spawn_rmi_ns(&["--storage", &storage]);
        let names = locate(port).await;
        // What earlier rounds had answered is still there.
        let count = names.count().await.unwrap() as usize;
        assert!(
            count >= answered_before,
            "round {round}: {count} names after the restart, {answered_before} before it"
        );
        let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let burst = (0..8).map(|client| {
            let (names, answered) = (names.clone(), answered.clone());
            tokio::spawn(async move {
                for i in 0u16.. {
                    let name = format!("r{round}.c{client}.{i}");
                    let uri = Uri::tcp("obj", "127.0.0.1", i);
                    if names.register(&name, &uri).await.is_err() {
                        return;
                    }
                    answered.lock().unwrap().push(name);
                }
            })
        });
        let burst: Vec<_> = burst.collect();
        // The burst under way (its first answer in: on a loaded machine the first takes a
        // while, the file's creation among it), then `after_ms` more of it.
        let started = std::time::Instant::now();
        while answered.lock().unwrap().is_empty() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "round {round}: no registration answered in 20 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(after_ms)).await;
        ns.kill_9();
        for client in burst {
            client.await.unwrap();
        }
        let answered = answered.lock().unwrap().clone();
        assert!(
            !answered.is_empty(),
            "round {round}: nothing was registered before the kill"
        );

        let (mut ns, port) = spawn_rmi_ns(&["--storage", &storage]);
        let names = locate(port).await;
        let kept = names.list_prefix(&format!("r{round}.")).await.unwrap();
        let lost: Vec<_> = answered.iter().filter(|n| !kept.contains_key(*n)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} answered registrations lost, e.g. {:?}",
            lost.len(),
            answered.len(),
            lost.first()
        );
        // At most the eight in flight were written but not answered.
        assert!(
            kept.len() <= answered.len() + 8,
            "round {round}: {} kept, {} answered",
            kept.len(),
            answered.len()
        );
        println!(
            "round {round}: killed after {after_ms} ms, {} registrations answered, {} kept",
            answered.len(),
            kept.len()
        );
        answered_before = names.count().await.unwrap() as usize;
        ns.kill_9();
        assert!(!ns.is_alive());
    }
}
