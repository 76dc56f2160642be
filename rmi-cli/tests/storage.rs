//! `rmi-ns --storage`: names in an SQLite file survive `kill -9` of the process, etcd without
//! its feature is refused with how to build it, and the quotas refuse hostile requests while
//! the process keeps serving. (rmi-ns over etcd is in `etcd.rs`.)
//! Everything runs on 127.0.0.1 with free ports and a temporary directory.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

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

#[test]
fn an_unknown_or_unbuilt_storage_is_refused_clearly() {
    #[cfg(not(feature = "etcd"))]
    {
        let out = Command::new(env!("CARGO_BIN_EXE_rmi-ns"))
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
    let out = Command::new(env!("CARGO_BIN_EXE_rmi-ns"))
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

#[tokio::test]
async fn quotas_refuse_hostile_requests_and_rmi_ns_keeps_serving() {
    let (mut ns, port) = spawn_rmi_ns(&[]);
    let names = locate(port).await;
    let uri = Uri::tcp("obj", "127.0.0.1", 4000);
    names.ping().await.unwrap();
    let before = ns.rss_kib();

    // One register carrying 1M metadata tags (18 MB on the wire).
    let many: BTreeSet<String> = (0..1_000_000).map(|i| format!("tag{i:07}")).collect();
    let err = names
        .register_with("greedy", &uri, false, many)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Resolve(m) if m.contains("max_tags")),
        "{err}"
    );
    let after = ns.rss_kib();
    // Again: the decode's memory is reused, not added to (nothing was stored).
    let many: BTreeSet<String> = (0..1_000_000).map(|i| format!("tag{i:07}")).collect();
    assert!(names
        .register_with("greedy", &uri, false, many)
        .await
        .is_err());
    let again = ns.rss_kib();
    eprintln!(
        "rmi-ns RSS around refused 1M-tag registers: {before} KiB before, {after} KiB after one, \
         {again} KiB after two"
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
    names.register("after", &uri).await.unwrap();
    assert_eq!(names.lookup("after").await.unwrap(), uri);
    assert!(names.lookup("greedy").await.is_err());
}
