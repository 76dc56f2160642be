//! One test suite run against every backend, through [`Registry`]: Pyro5's semantics, leases,
//! watches and limits behave the same whatever the storage.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use rmi_core::Uri;

use super::*;

fn uri(n: u16) -> Uri {
    Uri::tcp("obj", "127.0.0.1", n)
}

fn tags(t: &[&str]) -> BTreeSet<String> {
    t.iter().map(|s| s.to_string()).collect()
}

/// Limits for tests: short leases allowed.
fn test_limits() -> Limits {
    Limits {
        min_lease_ttl: Duration::from_millis(10),
        ..Limits::default()
    }
}

fn names(listed: Vec<(String, Entry)>) -> Vec<String> {
    listed.into_iter().map(|(k, _)| k).collect()
}

/// Waits (up to 10 s) for the next change on `watch` that `pick` accepts.
async fn next_change(watch: &mut Watch, pick: impl Fn(&Change) -> bool) -> Change {
    tokio::time::timeout(Duration::from_secs(10), async {
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

/// Polls (up to 10 s) until `name` is gone.
#[cfg(feature = "sqlite")]
async fn until_gone(r: &Registry, name: &str) {
    for _ in 0..1000 {
        if r.lookup(name).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name} never went");
}

async fn pyro_semantics(r: Registry) {
    r.register(NAME_SERVER_NAME, uri(9), false, tags(&[]), None)
        .await
        .unwrap();
    // The name server's own name is held like any other: a safe registration is refused.
    let err = r
        .register(NAME_SERVER_NAME, uri(5), true, tags(&[]), None)
        .await
        .unwrap_err();
    assert_eq!(err.message, "name already registered: Pyro.NameServer");
    assert_eq!(r.lookup(NAME_SERVER_NAME).await.unwrap().uri, uri(9));
    r.register("a", uri(1), true, tags(&["red", "big"]), None)
        .await
        .unwrap();
    let err = r
        .register("a", uri(2), true, tags(&[]), None)
        .await
        .unwrap_err();
    assert_eq!(err.message, "name already registered: a");
    assert_eq!(r.lookup("a").await.unwrap().uri, uri(1));
    r.register("a", uri(3), false, tags(&["red", "big"]), None)
        .await
        .unwrap();
    assert_eq!(r.lookup("a").await.unwrap().uri, uri(3));
    assert_eq!(
        r.lookup("zz").await.unwrap_err().message,
        "unknown name: zz"
    );
    assert!(r
        .register("x", "PYRONAME:y".parse().unwrap(), false, tags(&[]), None)
        .await
        .unwrap_err()
        .message
        .contains("only PYRO:"));
    assert!(r
        .register("has space", uri(1), false, tags(&[]), None)
        .await
        .is_err());
    for (i, n) in ["app.one", "app.two", "xapp.three", "apple"]
        .iter()
        .enumerate()
    {
        r.register(n, uri(10 + i as u16), false, tags(&["red"]), None)
            .await
            .unwrap();
    }
    assert_eq!(
        names(r.list(Some("app."), None).await.unwrap()),
        ["app.one", "app.two"]
    );
    assert_eq!(
        names(r.list(None, Some("app")).await.unwrap()),
        ["app.one", "app.two", "apple"],
        "anchored at the start, like re.match"
    );
    assert!(r.list(None, Some("(")).await.is_err());
    assert!(r.list(Some("a"), Some("b")).await.is_err());
    assert_eq!(r.count().await.unwrap(), 6);

    assert_eq!(
        names(r.yplookup(Some(tags(&["red", "big"])), None).await.unwrap()),
        ["a"]
    );
    assert_eq!(
        r.yplookup(Some(tags(&["red"])), None).await.unwrap().len(),
        5
    );
    assert_eq!(
        names(r.yplookup(None, Some(tags(&["big", "no"]))).await.unwrap()),
        ["a"]
    );
    assert!(r.yplookup(None, None).await.unwrap().is_empty());
    // As Pyro5 (empty sets are false there): both empty is no filter, and answers nothing;
    // both given is refused.
    assert!(r
        .yplookup(Some(tags(&[])), Some(tags(&[])))
        .await
        .unwrap()
        .is_empty());
    assert!(r
        .yplookup(Some(tags(&["red"])), Some(tags(&["big"])))
        .await
        .is_err());
    r.set_metadata("a", tags(&["blue"])).await.unwrap();
    assert_eq!(r.lookup("a").await.unwrap().metadata, tags(&["blue"]));
    assert!(r.set_metadata("zz", tags(&[])).await.is_err());

    assert_eq!(r.remove(Some("apple"), None, None).await.unwrap(), 1);
    assert_eq!(r.remove(Some("apple"), None, None).await.unwrap(), 0);
    assert_eq!(r.remove(None, Some("app."), None).await.unwrap(), 2);
    assert_eq!(r.remove(None, None, None).await.unwrap(), 0);
    // As Pyro's: an empty prefix or regex is none (it would match every name).
    assert_eq!(r.remove(None, Some(""), None).await.unwrap(), 0);
    assert_eq!(r.remove(None, None, Some("")).await.unwrap(), 0);
    assert_eq!(r.remove(Some(""), Some(""), Some("")).await.unwrap(), 0);
    assert_eq!(r.count().await.unwrap(), 3);
    // A pattern that closes the group it is anchored in is refused, not run unanchored.
    assert!(r.remove(None, None, Some("x)|(?:.")).await.is_err());
    assert_eq!(
        r.remove(None, None, Some(".*")).await.unwrap(),
        2,
        "all but the name server"
    );
    assert_eq!(
        r.remove(Some(NAME_SERVER_NAME), None, None).await.unwrap(),
        0
    );
    assert_eq!(r.remove(None, Some("Pyro."), None).await.unwrap(), 0);
    assert_eq!(r.count().await.unwrap(), 1);
    // As Pyro's: the name server's own name is passed over, and the prefix given with it
    // still applies.
    r.register("x.a", uri(1), false, tags(&[]), None)
        .await
        .unwrap();
    r.register("x.b", uri(2), false, tags(&[]), None)
        .await
        .unwrap();
    assert_eq!(
        r.remove(Some(NAME_SERVER_NAME), Some("x."), None)
            .await
            .unwrap(),
        2
    );
    assert_eq!(r.count().await.unwrap(), 1);
    // Its lease's end would take the name server's own entry: refused, as is sharing it.
    let lease = r.grant(Duration::from_secs(60)).await.unwrap();
    let err = r
        .register(NAME_SERVER_NAME, uri(9), false, tags(&[]), Some(lease))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("cannot be registered under a lease"),
        "{err}"
    );
    assert!(r
        .register_shared(NAME_SERVER_NAME, uri(8), tags(&[]), None)
        .await
        .is_err());
    r.revoke(lease).await.unwrap();
    assert_eq!(r.lookup(NAME_SERVER_NAME).await.unwrap().uri, uri(9));
    // A URI built from parts (as Pyro's class dict arrives) that does not read back as itself.
    for bad in [
        Uri::Pyro {
            object: "has space".into(),
            location: rmi_core::Location::Tcp {
                host: "127.0.0.1".into(),
                port: 1,
            },
        },
        Uri::Pyro {
            object: "obj".into(),
            location: rmi_core::Location::Tcp {
                host: String::new(),
                port: 1,
            },
        },
    ] {
        let err = r
            .register("bad.uri", bad.clone(), false, tags(&[]), None)
            .await
            .unwrap_err();
        assert!(err.message.contains("does not read back"), "{bad:?}: {err}");
    }
    assert_eq!(r.count().await.unwrap(), 1);
}

async fn leases_bind_names(r: Registry) {
    let lease = r.grant(Duration::from_secs(60)).await.unwrap();
    let other = r.grant(Duration::from_secs(60)).await.unwrap();
    assert_ne!(lease, other);
    r.register("leased.a", uri(1), false, tags(&[]), Some(lease))
        .await
        .unwrap();
    r.register("leased.b", uri(2), false, tags(&["t"]), Some(lease))
        .await
        .unwrap();
    r.register("moved", uri(3), false, tags(&[]), Some(lease))
        .await
        .unwrap();
    r.register("moved", uri(3), false, tags(&[]), Some(other))
        .await
        .unwrap();
    r.register("plain", uri(4), false, tags(&[]), None)
        .await
        .unwrap();
    r.register("unbound", uri(5), false, tags(&[]), Some(lease))
        .await
        .unwrap();
    r.register("unbound", uri(5), false, tags(&[]), None)
        .await
        .unwrap();
    assert_eq!(r.lookup("leased.a").await.unwrap().lease, Some(lease));
    assert_eq!(r.keep_alive(lease).await.unwrap(), Duration::from_secs(60));

    let mut watch = r.watch();
    assert_eq!(r.revoke(lease).await.unwrap(), 2, "leased.a and leased.b");
    let removed = next_change(&mut watch, |_| true).await;
    assert_eq!(
        removed,
        Change::Removed {
            name: "leased.a".into(),
            uri: Some(uri(1)),
        }
    );
    for gone in ["leased.a", "leased.b"] {
        assert!(r.lookup(gone).await.is_err(), "{gone}");
    }
    for kept in ["moved", "plain", "unbound"] {
        r.lookup(kept).await.unwrap();
    }
    assert_eq!(
        r.revoke(lease).await.unwrap(),
        0,
        "revoking twice is harmless"
    );
    let err = r.keep_alive(lease).await.unwrap_err();
    assert!(err.message.contains("unknown lease"), "{err}");
    let err = r
        .register("late", uri(6), false, tags(&[]), Some(lease))
        .await
        .unwrap_err();
    assert!(err.message.contains("unknown lease"), "{err}");
    assert!(r.lookup("late").await.is_err());
    // Ids never granted, 0 among them (etcd's "no lease"): unknown, never "no lease at all".
    for never in [LeaseId(0), LeaseId(u64::MAX)] {
        let err = r
            .register("never", uri(7), false, tags(&[]), Some(never))
            .await
            .unwrap_err();
        assert!(err.message.contains("unknown lease"), "{never}: {err}");
        let err = r.keep_alive(never).await.unwrap_err();
        assert!(err.message.contains("unknown lease"), "{never}: {err}");
        assert_eq!(r.revoke(never).await.unwrap(), 0, "{never}");
    }
    assert!(r.lookup("never").await.is_err());
}

async fn an_expired_lease_takes_its_names_and_a_watch_sees_it(r: Registry) {
    let mut watch = r.watch();
    let lease = r.grant(Duration::from_millis(200)).await.unwrap();
    r.register("short", uri(1), false, tags(&[]), Some(lease))
        .await
        .unwrap();
    r.register("stays", uri(2), false, tags(&[]), None)
        .await
        .unwrap();
    match next_change(&mut watch, |_| true).await {
        Change::Registered { name, entry } => {
            assert_eq!(name, "short");
            assert_eq!(entry.lease, Some(lease));
        }
        other => panic!("{other:?}"),
    }
    let expired = next_change(&mut watch, |c| matches!(c, Change::Expired { .. })).await;
    assert_eq!(
        expired,
        Change::Expired {
            name: "short".into(),
            lease,
            uri: Some(uri(1)),
        }
    );
    assert!(r.lookup("short").await.is_err());
    r.lookup("stays").await.unwrap();
    assert!(r.keep_alive(lease).await.is_err());
    r.remove(Some("stays"), None, None).await.unwrap();
    let removed = next_change(&mut watch, |c| matches!(c, Change::Removed { .. })).await;
    assert_eq!(
        removed,
        Change::Removed {
            name: "stays".into(),
            uri: Some(uri(2)),
        }
    );
}

fn uris(entries: &[Entry]) -> BTreeSet<String> {
    entries.iter().map(|e| e.uri.to_string()).collect()
}

fn uri_set(ports: &[u16]) -> BTreeSet<String> {
    ports.iter().map(|&p| uri(p).to_string()).collect()
}

async fn shared_names_hold_several_entries(r: Registry) {
    let mut watch = r.watch();
    let lease = r.grant(Duration::from_secs(60)).await.unwrap();
    r.register_shared("svc", uri(1), tags(&["a"]), None)
        .await
        .unwrap();
    r.register_shared("svc", uri(2), tags(&["a"]), Some(lease))
        .await
        .unwrap();
    // The same URI again replaces its own entry.
    r.register_shared("svc", uri(2), tags(&["a"]), Some(lease))
        .await
        .unwrap();
    let all = r.lookup_all("svc").await.unwrap();
    assert_eq!(uris(&all), uri_set(&[1, 2]));
    assert!(all.iter().all(|e| e.shared));
    assert_eq!(r.count().await.unwrap(), 2, "one per entry");
    for _ in 0..20 {
        let one = r.lookup("svc").await.unwrap();
        assert!(uri_set(&[1, 2]).contains(&one.uri.to_string()));
    }
    let listed = r.list(Some("sv"), None).await.unwrap();
    assert_eq!(names(listed), ["svc", "svc"]);
    assert_eq!(r.yplookup(Some(tags(&["a"])), None).await.unwrap().len(), 2);
    r.set_metadata("svc", tags(&["b"])).await.unwrap();
    let all = r.lookup_all("svc").await.unwrap();
    assert!(all.iter().all(|e| e.metadata == tags(&["b"])), "{all:?}");

    // A plain name is not shared, and a shared one is not taken by a safe registration.
    r.register("plain", uri(5), false, tags(&[]), None)
        .await
        .unwrap();
    let err = r
        .register_shared("plain", uri(6), tags(&[]), None)
        .await
        .unwrap_err();
    assert!(err.message.contains("not shared"), "{err}");
    assert_eq!(uris(&r.lookup_all("plain").await.unwrap()), uri_set(&[5]));
    let err = r
        .register("svc", uri(7), true, tags(&[]), None)
        .await
        .unwrap_err();
    assert!(err.message.contains("already registered"), "{err}");

    // Revoking one daemon's lease takes its entry only.
    assert_eq!(r.revoke(lease).await.unwrap(), 1);
    let removed = next_change(&mut watch, |c| matches!(c, Change::Removed { .. })).await;
    assert_eq!(
        removed,
        Change::Removed {
            name: "svc".into(),
            uri: Some(uri(2)),
        }
    );
    assert_eq!(uris(&r.lookup_all("svc").await.unwrap()), uri_set(&[1]));

    // An expiring one likewise, and a watch sees which entry expired.
    let short = r.grant(Duration::from_millis(200)).await.unwrap();
    r.register_shared("svc", uri(3), tags(&[]), Some(short))
        .await
        .unwrap();
    let expired = next_change(&mut watch, |c| matches!(c, Change::Expired { .. })).await;
    assert_eq!(
        expired,
        Change::Expired {
            name: "svc".into(),
            lease: short,
            uri: Some(uri(3)),
        }
    );
    assert_eq!(uris(&r.lookup_all("svc").await.unwrap()), uri_set(&[1]));

    // Removing a shared name takes every entry; a plain registration replaces them all.
    r.register_shared("svc", uri(4), tags(&[]), None)
        .await
        .unwrap();
    assert_eq!(r.remove(Some("svc"), None, None).await.unwrap(), 2);
    assert!(r.lookup_all("svc").await.is_err());
    r.register_shared("svc", uri(1), tags(&[]), None)
        .await
        .unwrap();
    r.register_shared("svc", uri(2), tags(&[]), None)
        .await
        .unwrap();
    r.register("svc", uri(9), false, tags(&[]), None)
        .await
        .unwrap();
    // A watch sees each shared entry the plain registration replaced go, then the new one.
    let mut since_second = Vec::new();
    loop {
        let change = next_change(&mut watch, |_| true).await;
        match &change {
            Change::Registered { name, entry } if name == "svc" && entry.uri == uri(2) => {
                since_second.clear();
            }
            Change::Registered { name, entry } if name == "svc" && entry.uri == uri(9) => break,
            _ => since_second.push(change),
        }
    }
    let mut replaced: Vec<String> = since_second
        .iter()
        .map(|c| match c {
            Change::Removed {
                name,
                uri: Some(uri),
            } if name == "svc" => uri.to_string(),
            other => panic!("only the replaced entries' removals come between: {other:?}"),
        })
        .collect();
    replaced.sort();
    assert_eq!(replaced, [uri(1).to_string(), uri(2).to_string()]);
    let all = r.lookup_all("svc").await.unwrap();
    assert_eq!(uris(&all), uri_set(&[9]));
    assert!(!all[0].shared);
    assert_eq!(r.count().await.unwrap(), 2, "svc and plain");
    r.register_shared("many", uri(1), tags(&[]), None)
        .await
        .unwrap();
    r.register_shared("many", uri(2), tags(&[]), None)
        .await
        .unwrap();
    assert_eq!(r.remove(None, None, Some("ma")).await.unwrap(), 2);
    assert_eq!(r.remove(None, Some("sv"), None).await.unwrap(), 1);
    // Lookups are counted, answered or not; other requests are not.
    let before = r.lookups();
    assert!(r.lookup("plain").await.is_ok());
    assert!(r.lookup("nothing here").await.is_err());
    assert!(r.lookup_all("plain").await.is_ok());
    r.yplookup(Some(tags(&["x"])), None).await.unwrap();
    r.count().await.unwrap();
    r.list(None, None).await.unwrap();
    assert_eq!(r.lookups() - before, 4, "lookups are counted");
}

async fn keep_alive_keeps_names(r: Registry) {
    // Renewed every 50 ms for three TTLs: it would have expired thrice without them.
    let ttl = Duration::from_millis(1500);
    let lease = r.grant(ttl).await.unwrap();
    r.register("kept", uri(1), false, tags(&[]), Some(lease))
        .await
        .unwrap();
    let until = tokio::time::Instant::now() + ttl * 3;
    while tokio::time::Instant::now() < until {
        r.keep_alive(lease).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(r.lookup("kept").await.unwrap().lease, Some(lease));
    r.revoke(lease).await.unwrap();
}

async fn limits_refuse_with_the_setting_named(r: Registry) {
    let limits = r.limits().clone();
    let many: BTreeSet<String> = (0..=limits.max_tags).map(|i| format!("t{i}")).collect();
    let err = r
        .register("n", uri(1), false, many.clone(), None)
        .await
        .unwrap_err();
    assert!(err.message.contains("max_tags"), "{err}");
    let err = r.yplookup(Some(many), None).await.unwrap_err();
    assert!(err.message.contains("max_tags"), "{err}");
    let long = tags(&[&"x".repeat(limits.max_tag_len + 1)]);
    let err = r
        .register("n", uri(1), false, long.clone(), None)
        .await
        .unwrap_err();
    assert!(err.message.contains("max_tag_len"), "{err}");
    r.register("n", uri(1), false, tags(&[]), None)
        .await
        .unwrap();
    let err = r.set_metadata("n", long).await.unwrap_err();
    assert!(err.message.contains("max_tag_len"), "{err}");
    let err = r
        .register(
            &"n".repeat(limits.max_name_len + 1),
            uri(1),
            false,
            tags(&[]),
            None,
        )
        .await
        .unwrap_err();
    assert!(err.message.contains("max_name_len"), "{err}");
    let err = r.list(None, Some(r"\w{1000}")).await.unwrap_err();
    assert!(err.message.contains("regex_size_limit"), "{err}");
    let err = r.remove(None, None, Some(r"\w{1000}")).await.unwrap_err();
    assert!(err.message.contains("regex_size_limit"), "{err}");
    let err = r.grant(Duration::from_millis(1)).await.unwrap_err();
    assert!(err.message.contains("min_lease_ttl"), "{err}");
    // Fill to max_entries (4 in these limits), then one more is refused; replacing is not.
    for i in 0..3 {
        r.register(&format!("fill{i}"), uri(i), false, tags(&[]), None)
            .await
            .unwrap();
    }
    let err = r
        .register("over", uri(9), false, tags(&[]), None)
        .await
        .unwrap_err();
    assert!(err.message.contains("max_entries"), "{err}");
    r.register("fill0", uri(8), false, tags(&[]), None)
        .await
        .unwrap();
    // The reply limit: four entries do not fit in max_reply_bytes.
    let err = r.list(None, None).await.unwrap_err();
    assert!(err.message.contains("max_reply_bytes"), "{err}");
    assert_eq!(r.list(Some("fill1"), None).await.unwrap().len(), 1);
    // The name server's own reading (autoclean's) is held to no reply limit.
    let all = r.all_entries().await.unwrap();
    assert_eq!(all.len(), r.count().await.unwrap() as usize, "{all:?}");
    assert!(all.len() >= 4);
    let err = r.yplookup(None, Some(tags(&[]))).await;
    assert!(err.unwrap().is_empty());
    for _ in 0..limits.max_leases {
        r.grant(Duration::from_secs(60)).await.unwrap();
    }
    let err = r.grant(Duration::from_secs(60)).await.unwrap_err();
    assert!(err.message.contains("max_leases"), "{err}");
}

/// A shared name's entries count one each toward `max_entries` and its `lookup_all` reply
/// toward `max_reply_bytes`; a registered URI is held to `max_uri_len`.
async fn shared_entries_and_uris_are_held_to_the_limits(r: Registry) {
    let limits = small_limits();
    // Four daemons fill the registry (max_entries 4) under one shared name.
    for port in 1..=4 {
        r.register_shared("s", uri(port), tags(&[]), None)
            .await
            .unwrap();
    }
    let err = r
        .register_shared("s", uri(5), tags(&[]), None)
        .await
        .unwrap_err();
    assert!(err.message.contains("max_entries"), "{err}");
    let err = r
        .register("p", uri(5), false, tags(&[]), None)
        .await
        .unwrap_err();
    assert!(err.message.contains("max_entries"), "{err}");
    // Updating an entry adds nothing, so it is not refused.
    r.register_shared("s", uri(4), tags(&["t"]), None)
        .await
        .unwrap();
    assert_eq!(r.count().await.unwrap(), 4);
    // Metadata set on all four entries at once is held to max_metadata_writes (12): four tags
    // each would be 16 (before, unbounded: helper-123 #2), three are 12.
    let err = r
        .set_metadata("s", tags(&["a", "b", "c", "d"]))
        .await
        .unwrap_err();
    assert!(err.message.contains("max_metadata_writes (12)"), "{err}");
    assert!(r.lookup("s").await.unwrap().metadata.len() <= 1);
    r.set_metadata("s", tags(&["a", "b", "c"])).await.unwrap();
    assert_eq!(
        r.lookup("s").await.unwrap().metadata,
        tags(&["a", "b", "c"])
    );
    // Four entries do not fit in max_reply_bytes (150): lookup_all is refused like list, while
    // lookup still picks one.
    let err = r.lookup_all("s").await.unwrap_err();
    assert!(err.message.contains("max_reply_bytes"), "{err}");
    assert!(uri_set(&[1, 2, 3, 4]).contains(&r.lookup("s").await.unwrap().uri.to_string()));
    // Picked at random among all four (a store in memory copies the one picked alone).
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        seen.insert(r.lookup("s").await.unwrap().uri.to_string());
    }
    assert_eq!(seen, uri_set(&[1, 2, 3, 4]));
    // A plain registration replaces the four, leaving room again.
    r.register("s", uri(6), false, tags(&[]), None)
        .await
        .unwrap();
    assert_eq!(r.count().await.unwrap(), 1);
    assert_eq!(r.lookup_all("s").await.unwrap().len(), 1);
    // A URI at max_uri_len registers; one byte more is refused, plainly or shared.
    let base = Uri::tcp("", "127.0.0.1", 1).to_string().len();
    let at_limit = Uri::tcp("o".repeat(limits.max_uri_len - base), "127.0.0.1", 1);
    assert_eq!(at_limit.to_string().len(), limits.max_uri_len);
    r.register("long", at_limit, false, tags(&[]), None)
        .await
        .unwrap();
    let over = Uri::tcp("o".repeat(limits.max_uri_len - base + 1), "127.0.0.1", 1);
    let err = r
        .register("longer", over.clone(), false, tags(&[]), None)
        .await
        .unwrap_err();
    assert!(err.message.contains("max_uri_len"), "{err}");
    let err = r
        .register_shared("longer", over, tags(&[]), None)
        .await
        .unwrap_err();
    assert!(err.message.contains("max_uri_len"), "{err}");
    assert!(r.lookup("longer").await.is_err());
}

/// One daemon's entry of a shared name can be removed alone: the others stay, a leased one
/// leaves its lease (revoking it later removes nothing), a watch sees that one entry go, and a
/// plain name is never taken by it.
async fn one_shared_entry_is_removed_alone(r: Registry) {
    let lease = r.grant(Duration::from_secs(60)).await.unwrap();
    r.register_shared("svc", uri(1), tags(&[]), Some(lease))
        .await
        .unwrap();
    r.register_shared("svc", uri(2), tags(&[]), None)
        .await
        .unwrap();
    let mut watch = r.watch();
    assert!(r.remove_shared("svc", &uri(1)).await.unwrap());
    assert!(!r.remove_shared("svc", &uri(1)).await.unwrap());
    assert!(!r.remove_shared("svc", &uri(3)).await.unwrap());
    let change = next_change(&mut watch, |c| matches!(c, Change::Removed { .. })).await;
    assert_eq!(
        change,
        Change::Removed {
            name: "svc".into(),
            uri: Some(uri(1))
        }
    );
    assert_eq!(uris(&r.lookup_all("svc").await.unwrap()), uri_set(&[2]));
    assert_eq!(r.count().await.unwrap(), 1);
    assert_eq!(
        r.revoke(lease).await.unwrap(),
        0,
        "the entry left its lease"
    );
    assert_eq!(uris(&r.lookup_all("svc").await.unwrap()), uri_set(&[2]));
    // The last entry going takes the name.
    assert!(r.remove_shared("svc", &uri(2)).await.unwrap());
    assert!(r.lookup("svc").await.is_err());
    // A plain name is not a shared entry.
    r.register("plain", uri(5), false, tags(&[]), None)
        .await
        .unwrap();
    assert!(!r.remove_shared("plain", &uri(5)).await.unwrap());
    assert_eq!(r.lookup("plain").await.unwrap().uri, uri(5));
}

/// Autoclean's removal: a plain name goes only while it still points where it was seen to,
/// with no lease; checked and removed in one step.
async fn a_plain_name_is_removed_only_while_it_points_where_it_did(r: Registry) {
    r.register("svc", uri(1), false, tags(&[]), None)
        .await
        .unwrap();
    // Registered again elsewhere since it was seen at uri(1): kept.
    r.register("svc", uri(2), false, tags(&[]), None)
        .await
        .unwrap();
    assert!(!r.remove_plain_at("svc", &uri(1)).await.unwrap());
    assert_eq!(r.lookup("svc").await.unwrap().uri, uri(2));
    // Registered again at the same place under a lease: left to its lease.
    let lease = r.grant(Duration::from_secs(60)).await.unwrap();
    r.register("svc", uri(2), false, tags(&[]), Some(lease))
        .await
        .unwrap();
    assert!(!r.remove_plain_at("svc", &uri(2)).await.unwrap());
    assert_eq!(r.lookup("svc").await.unwrap().uri, uri(2));
    // A shared entry at that place is not a plain name.
    r.register_shared("pool", uri(3), tags(&[]), None)
        .await
        .unwrap();
    assert!(!r.remove_plain_at("pool", &uri(3)).await.unwrap());
    assert_eq!(uris(&r.lookup_all("pool").await.unwrap()), uri_set(&[3]));
    // Still where it was: removed, and a watch sees it go.
    r.register("plain", uri(4), false, tags(&["t"]), None)
        .await
        .unwrap();
    let mut watch = r.watch();
    assert!(r.remove_plain_at("plain", &uri(4)).await.unwrap());
    let change = next_change(&mut watch, |c| matches!(c, Change::Removed { .. })).await;
    assert_eq!(
        change,
        Change::Removed {
            name: "plain".into(),
            uri: Some(uri(4))
        }
    );
    assert!(r.lookup("plain").await.is_err());
    assert!(!r.remove_plain_at("plain", &uri(4)).await.unwrap());
    assert!(!r.remove_plain_at("never", &uri(4)).await.unwrap());
    // The name server's own name is never removed.
    r.register(NAME_SERVER_NAME, uri(9), false, tags(&[]), None)
        .await
        .unwrap();
    assert!(!r.remove_plain_at(NAME_SERVER_NAME, &uri(9)).await.unwrap());
    assert_eq!(r.count().await.unwrap(), 3);
}

fn small_limits() -> Limits {
    Limits {
        max_entries: 4,
        max_leases: 3,
        max_reply_bytes: 150,
        max_tags: 4,
        max_tag_len: 8,
        max_name_len: 32,
        max_uri_len: 64,
        max_metadata_writes: 12,
        ..test_limits()
    }
}

/// What a test keeps alive while it uses a store (a directory, an etcd process).
type Keep = Box<dyn std::any::Any + Send>;

/// The suite, for a backend opened by `$open(dir, limits)`, which gives `None` to skip (a
/// backend whose server is not installed) or the store and what to keep alive with it.
macro_rules! suite {
    ($backend:ident, $open:expr) => {
        mod $backend {
            use super::*;

            async fn open(limits: Limits) -> Option<(Keep, tempfile::TempDir, Registry)> {
                let dir = tempfile::tempdir().unwrap();
                let (keep, store) = $open(dir.path(), limits.clone()).await?;
                Some((keep, dir, Registry::new(store, limits)))
            }

            #[tokio::test]
            async fn pyro_semantics() {
                let Some((_keep, _dir, r)) = open(test_limits()).await else {
                    return;
                };
                super::pyro_semantics(r).await;
            }

            #[tokio::test]
            async fn leases_bind_names() {
                let Some((_keep, _dir, r)) = open(test_limits()).await else {
                    return;
                };
                super::leases_bind_names(r).await;
            }

            #[tokio::test]
            async fn an_expired_lease_takes_its_names_and_a_watch_sees_it() {
                let Some((_keep, _dir, r)) = open(test_limits()).await else {
                    return;
                };
                super::an_expired_lease_takes_its_names_and_a_watch_sees_it(r).await;
            }

            #[tokio::test]
            async fn shared_names_hold_several_entries() {
                let Some((_keep, _dir, r)) = open(test_limits()).await else {
                    return;
                };
                super::shared_names_hold_several_entries(r).await;
            }

            #[tokio::test]
            async fn one_shared_entry_is_removed_alone() {
                let Some((_keep, _dir, r)) = open(test_limits()).await else {
                    return;
                };
                super::one_shared_entry_is_removed_alone(r).await;
            }

            #[tokio::test]
            async fn a_plain_name_is_removed_only_while_it_points_where_it_did() {
                let Some((_keep, _dir, r)) = open(test_limits()).await else {
                    return;
                };
                super::a_plain_name_is_removed_only_while_it_points_where_it_did(r).await;
            }

            #[tokio::test]
            async fn keep_alive_keeps_names() {
                let Some((_keep, _dir, r)) = open(test_limits()).await else {
                    return;
                };
                super::keep_alive_keeps_names(r).await;
            }

            #[tokio::test]
            async fn limits_refuse_with_the_setting_named() {
                let Some((_keep, _dir, r)) = open(small_limits()).await else {
                    return;
                };
                super::limits_refuse_with_the_setting_named(r).await;
            }

            #[tokio::test]
            async fn shared_entries_and_uris_are_held_to_the_limits() {
                let Some((_keep, _dir, r)) = open(small_limits()).await else {
                    return;
                };
                super::shared_entries_and_uris_are_held_to_the_limits(r).await;
            }
        }
    };
}

async fn open_memory(_dir: &Path, limits: Limits) -> Option<(Keep, Arc<dyn Store>)> {
    Some((Box::new(()), Arc::new(MemoryStore::new(limits))))
}

suite!(memory_store, open_memory);

#[cfg(feature = "sqlite")]
async fn open_sqlite(dir: &Path, limits: Limits) -> Option<(Keep, Arc<dyn Store>)> {
    let store = SqliteStore::open(dir.join("names.db"), limits)
        .await
        .unwrap();
    Some((Box::new(()), Arc::new(store)))
}

#[cfg(feature = "etcd")]
#[path = "../../tests/support/etcd.rs"]
mod etcd_process;

/// A one-member etcd of its own (killed when the test ends), or `None` (a loud skip) without
/// an etcd binary.
#[cfg(feature = "etcd")]
async fn open_etcd(_dir: &Path, limits: Limits) -> Option<(Keep, Arc<dyn Store>)> {
    let cluster = etcd_process::EtcdCluster::start(1, "the registry suite on etcd")?;
    let store = EtcdStore::connect(&cluster.endpoints(), limits)
        .await
        .unwrap();
    Some((Box::new(cluster), Arc::new(store)))
}

#[cfg(feature = "etcd")]
suite!(etcd_store, open_etcd);

/// A one-member etcd of the test's own and a store connected to it with the test limits, or
/// `None` (a loud skip) without an etcd binary.
#[cfg(feature = "etcd")]
async fn one_etcd(test: &str) -> Option<(etcd_process::EtcdCluster, EtcdStore)> {
    let cluster = etcd_process::EtcdCluster::start(1, test)?;
    let store = EtcdStore::connect(&cluster.endpoints(), test_limits())
        .await
        .unwrap();
    Some((cluster, store))
}

/// A watch follows on from the last answer its store had (its connect's, here): a change
/// another name server made in between, before the watch was opened, is seen, not skipped.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn an_etcd_watch_sees_what_changed_since_its_stores_last_answer() {
    let Some((cluster, a)) = one_etcd("an etcd watch's start").await else {
        return;
    };
    let endpoints = cluster.endpoints();
    let b = EtcdStore::connect(&endpoints, test_limits()).await.unwrap();
    assert_eq!(a.endpoints(), endpoints);
    assert_eq!(a.healthy_endpoints(), endpoints);
    assert_eq!((a.root(), a.retries()), (etcd::DEFAULT_ROOT, 0));
    // (A's last answer is its connect's.)
    b.register("between".into(), Entry::new(uri(2), tags(&[])), false)
        .await
        .unwrap();
    let mut watch = a.watch();
    let seen = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the change made between the answer and the watch")
        .expect("the watch ended");
    assert!(
        matches!(&seen, Change::Registered { name, .. } if name == "between"),
        "{seen:?}"
    );
}

/// More names than one page of an etcd listing (512): listed, found by regex and removed by
/// regex, every one of them, in a few transactions of at most 64 deletes.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_listings_and_removals_go_past_one_page() {
    let Some((_cluster, store)) = one_etcd("etcd listings past a page").await else {
        return;
    };
    let n = 600u16;
    for i in 0..n {
        let entry = Entry::new(uri(i), tags(&[]));
        store
            .register(format!("many.{i:04}"), entry, false)
            .await
            .unwrap();
    }
    store
        .register("other".into(), Entry::new(uri(1), tags(&[])), false)
        .await
        .unwrap();
    let all = store.list(&NameFilter::All).await.unwrap();
    assert_eq!(all.len(), usize::from(n) + 1);
    let want: Vec<String> = (0..n).map(|i| format!("many.{i:04}")).collect();
    assert_eq!(names(all)[..usize::from(n)], want[..]);
    let regex = NameFilter::Regex(regex::Regex::new(r"many\.0[0-5]").unwrap());
    assert_eq!(store.list(&regex).await.unwrap().len(), 600);
    assert_eq!(store.remove(&regex).await.unwrap(), 600);
    assert_eq!(
        names(store.list(&NameFilter::All).await.unwrap()),
        ["other"]
    );
}

/// A watch that starts behind etcd's compaction says how many revisions it lost
/// (`Lagged`), then goes on from what is left: no change after the compaction is lost.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn an_etcd_watch_behind_a_compaction_says_it_lagged_and_goes_on() {
    let Some((cluster, a)) = one_etcd("an etcd watch and compaction").await else {
        return;
    };
    let endpoints = cluster.endpoints();
    let mut raw = etcd_client::Client::connect(&endpoints, None)
        .await
        .unwrap();
    let revision = |r: etcd_client::GetResponse| r.header().unwrap().revision();
    // A's last answer is at `seen`; five changes follow, and the history up to the last is
    // compacted away.
    let seen = revision(raw.get("/", None).await.unwrap());
    let b = EtcdStore::connect(&endpoints, test_limits()).await.unwrap();
    for i in 1..=5 {
        let entry = Entry::new(uri(i), tags(&[]));
        b.register(format!("x{i}"), entry, false).await.unwrap();
    }
    let compacted = revision(raw.get("/", None).await.unwrap());
    assert_eq!(compacted, seen + 5, "one revision per registration");
    raw.compact(compacted, None).await.unwrap();
    let mut watch = a.watch();
    let lagged = next_change(&mut watch, |_| true).await;
    let missed = u64::try_from(compacted - (seen + 1)).unwrap();
    assert_eq!(lagged, Change::Lagged { missed });
    let kept = next_change(&mut watch, |_| true).await;
    assert!(
        matches!(&kept, Change::Registered { name, .. } if name == "x5"),
        "{kept:?}"
    );
    registered_and_seen(&b, &mut watch, "after").await;
}

/// Registers `name` through `store`; the next change `watch` reports is that registration.
#[cfg(feature = "etcd")]
async fn registered_and_seen(store: &EtcdStore, watch: &mut Watch, name: &str) {
    store
        .register(name.into(), Entry::new(uri(6), tags(&[])), false)
        .await
        .unwrap();
    let seen = next_change(watch, |_| true).await;
    assert!(
        matches!(&seen, Change::Registered { name: n, .. } if n == name),
        "{seen:?}"
    );
}

/// etcd counts leases in whole seconds: a TTL with a fraction is rounded up, never down (a
/// name must not vanish before its TTL). (etcd itself grants at least its minimum, 2 s with
/// the default election timeout, so shorter TTLs are not asked here.)
#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_lease_ttls_round_up_to_whole_seconds() {
    let Some((_cluster, store)) = one_etcd("etcd lease TTLs").await else {
        return;
    };
    for (asked, granted) in [(1500, 2), (2000, 2), (2001, 3), (60_001, 61)] {
        let lease = store.grant(Duration::from_millis(asked)).await.unwrap();
        let ttl = store.keep_alive(lease).await.unwrap();
        assert_eq!(ttl, Duration::from_secs(granted), "{asked} ms");
    }
}

/// The most metadata the default limits let an entry carry: 64 tags of 256 bytes (an entry
/// of about 17 KB in etcd).
#[cfg(feature = "etcd")]
fn heavy_tags() -> BTreeSet<String> {
    let limits = Limits::default();
    (0..limits.max_tags)
        .map(|i| format!("{i:03}{}", "t".repeat(limits.max_tag_len - 3)))
        .collect()
}

/// Entries with the most metadata the limits allow: a listing's page of 512 of them, or a
/// shared name's 300 entries in one answer, is over the 4 MiB the client receives. They are
/// read in smaller pages; before, `list`, `yplookup` and `lookup_all` failed for good
/// ("etcd refused a listing: … message length too large"), and so did a plain `lookup` of such
/// a shared name, and setting its metadata (one transaction of 300 puts).
#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_answers_too_large_for_one_message_are_read_in_smaller_pages() {
    let Some((_cluster, store)) = one_etcd("answers too large for one message").await else {
        return;
    };
    for i in 0..300u16 {
        store
            .register(
                format!("big{i:03}"),
                Entry::new(uri(i), heavy_tags()),
                false,
            )
            .await
            .unwrap();
        let shared = Entry {
            shared: true,
            ..Entry::new(uri(1000 + i), heavy_tags())
        };
        store.register("svc".into(), shared, false).await.unwrap();
    }
    let listed = store.list(&NameFilter::Prefix("big".into())).await.unwrap();
    assert_eq!(listed.len(), 300);
    assert_eq!(listed[299].0, "big299");
    assert_eq!(store.lookup_all("svc").await.unwrap().len(), 300);
    let all = store.list(&NameFilter::All).await.unwrap();
    assert_eq!(all.len(), 600);
    // Setting the shared name's metadata puts all 300 (5 MB: more than one transaction takes).
    store.set_metadata("svc", tags(&["light"])).await.unwrap();
    let entries = store.lookup_all("svc").await.unwrap();
    assert_eq!(entries.len(), 300);
    assert!(entries.iter().all(|e| e.metadata == tags(&["light"])));
}

/// etcd sends a revision's events, and a watcher catching up up to a thousand revisions, in
/// one answer, and the client receives at most 4 MiB: a watch that fell behind over 300
/// entries of 17 KB (the default limits' most metadata) is 10 MB behind. It asks for answers
/// in fragments of etcd's request limit (1.5 MiB), so it delivers all 300 and goes on; before,
/// it said `Lagged` and skipped them.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn an_etcd_watch_far_behind_over_large_entries_delivers_every_change() {
    let Some((cluster, a)) = one_etcd("a watch far behind").await else {
        return;
    };
    let mut watch = fallen_behind(&cluster, &a).await;
    for i in 0..300 {
        let change = next_change(&mut watch, |_| true).await;
        assert!(
            matches!(&change, Change::Registered { name, .. } if *name == format!("big{i}")),
            "change {i}: {change:?}"
        );
    }
    registered_and_seen(&a, &mut watch, "after").await;
}

/// A cluster whose request limit is over the client's 4 MiB sends fragments too large to
/// receive: the watch says so (`Lagged`, so a cache reads again) and goes on from now; before,
/// it opened again at the same revision for ever, in a tight loop, and delivered nothing more.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn an_etcd_watch_answer_too_large_to_receive_is_reported_as_lagged_and_the_watch_goes_on() {
    let Some(cluster) = etcd_process::EtcdCluster::start_with(
        1,
        "a watch answer too large",
        &["--max-request-bytes", "8388608"],
    ) else {
        return;
    };
    let a = EtcdStore::connect(&cluster.endpoints(), test_limits())
        .await
        .unwrap();
    let mut watch = fallen_behind(&cluster, &a).await;
    let first = next_change(&mut watch, |_| true).await;
    assert!(
        matches!(first, Change::Lagged { missed } if missed >= 300),
        "{first:?}"
    );
    registered_and_seen(&a, &mut watch, "after").await;
}

/// A watch of a second store on `cluster` that starts behind 300 entries of 17 KB, `big0` to
/// `big299`, registered through `a`.
#[cfg(feature = "etcd")]
async fn fallen_behind(cluster: &etcd_process::EtcdCluster, a: &EtcdStore) -> super::Watch {
    // B's last answer is its connect's: its watch starts there, behind what A writes next.
    let b = EtcdStore::connect(&cluster.endpoints(), test_limits())
        .await
        .unwrap();
    for i in 0..300 {
        a.register(format!("big{i}"), Entry::new(uri(1), heavy_tags()), false)
            .await
            .unwrap();
    }
    b.watch()
}

/// A `safe` registration whose check found the name free, while another name server shares
/// the name before its write: it is refused, and the other's shared entry stays (before, the
/// write only asked whether the plain key existed, and dropped the shared entries with it).
#[cfg(feature = "etcd")]
#[tokio::test]
async fn a_safe_etcd_registration_never_drops_shared_entries_made_after_its_check() {
    let Some((cluster, a)) = one_etcd("a safe registration racing a shared one").await else {
        return;
    };
    let b = std::sync::Arc::new(
        EtcdStore::connect(&cluster.endpoints(), test_limits())
            .await
            .unwrap(),
    );
    let shared = Entry {
        shared: true,
        ..Entry::new(uri(1), tags(&[]))
    };
    *a.between_probe_and_write.lock() = Some(Box::pin({
        let b = b.clone();
        async move { b.register("svc".into(), shared, false).await.unwrap() }
    }));
    let err = a
        .register("svc".into(), Entry::new(uri(2), tags(&[])), true)
        .await
        .unwrap_err();
    assert!(err.message.contains("already registered"), "{err}");
    assert_eq!(uris(&a.lookup_all("svc").await.unwrap()), uri_set(&[1]));
}

/// A full etcd database (its space quota reached: an alarm every member answers with until an
/// operator acts) is a refusal that names it, at once; before, it was retried as a busy member
/// for the whole retry budget and reported as a cluster that did not answer.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn a_full_etcd_database_is_a_refusal_that_says_so_not_an_outage() {
    let Some(cluster) = etcd_process::EtcdCluster::start_with(
        1,
        "a full etcd database",
        &["--quota-backend-bytes", "1048576"],
    ) else {
        return;
    };
    let store = EtcdStore::connect(&cluster.endpoints(), test_limits())
        .await
        .unwrap();
    let mut raw = etcd_client::Client::connect(&cluster.endpoints(), None)
        .await
        .unwrap();
    let filler = vec![b'x'; 256 << 10];
    let mut full = false;
    for i in 0..64 {
        if let Err(e) = raw.put(format!("/filler/{i}"), filler.clone(), None).await {
            assert!(e.to_string().contains("space exceeded"), "{e}");
            full = true;
            break;
        }
    }
    assert!(full, "the 1 MiB quota was never reached");
    let retries = store.retries();
    let err = store
        .register("n".into(), Entry::new(uri(1), tags(&[])), false)
        .await
        .unwrap_err();
    assert!(err.message.contains("etcd refused a registration"), "{err}");
    assert!(err.message.contains("space exceeded"), "{err}");
    assert_eq!(store.retries(), retries, "refused at once, not retried");
}

/// A shared entry's key is its name, a space and its URI: removing by a prefix or name that
/// holds the space (no name does) removes nothing, as in the other stores; before, `"app "`
/// removed every shared entry of `app`, and `"app <uri>"` one of them.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn removing_by_a_prefix_or_name_no_name_can_have_removes_nothing_from_etcd() {
    let Some((_cluster, store)) = one_etcd("removing by what no name can be").await else {
        return;
    };
    for port in [1, 2] {
        let shared = Entry {
            shared: true,
            ..Entry::new(uri(port), tags(&[]))
        };
        store.register("app".into(), shared, false).await.unwrap();
    }
    let one = format!("app {}", uri(1));
    for filter in [
        NameFilter::Prefix("app ".into()),
        NameFilter::Name(one),
        NameFilter::Prefix("app\u{1}".into()),
    ] {
        assert_eq!(store.remove(&filter).await.unwrap(), 0, "{filter:?}");
    }
    assert_eq!(
        uris(&store.lookup_all("app").await.unwrap()),
        uri_set(&[1, 2])
    );
    assert_eq!(
        store
            .remove(&NameFilter::Prefix("ap".into()))
            .await
            .unwrap(),
        2
    );
}

/// A lease whose revocation began (its record marked, the revoke itself not yet done: a name
/// server that died in between) is not kept alive: its holder hears it is gone and registers
/// again, rather than keeping names that watchers already saw removed. A record whose TTL
/// cannot be read (written by hand, or by another version) still works: its TTL is etcd's.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn an_etcd_lease_being_revoked_is_not_kept_alive() {
    let Some((cluster, store)) = one_etcd("a lease being revoked").await else {
        return;
    };
    let mut raw = etcd_client::Client::connect(&cluster.endpoints(), None)
        .await
        .unwrap();
    let record = |lease: LeaseId| format!("{}leases/{:016x}", etcd::DEFAULT_ROOT, lease.0);
    let put = |lease: LeaseId, value: &'static str| {
        let mut raw = raw.clone();
        let key = record(lease);
        async move {
            let id = i64::try_from(lease.0).unwrap();
            raw.put(
                key,
                value,
                Some(etcd_client::PutOptions::new().with_lease(id)),
            )
            .await
            .unwrap();
        }
    };
    let lease = store.grant(Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        store.keep_alive(lease).await.unwrap(),
        Duration::from_secs(60)
    );
    put(lease, r#"{"ttl_ms":0,"revoking":true}"#).await;
    let err = store.keep_alive(lease).await.unwrap_err();
    assert!(err.message.contains("unknown lease"), "{err}");

    let other = store.grant(Duration::from_secs(30)).await.unwrap();
    put(other, "not a record this version wrote").await;
    assert_eq!(
        store.keep_alive(other).await.unwrap(),
        Duration::from_secs(30)
    );
    let id = i64::try_from(other.0).unwrap();
    assert!(raw.lease_time_to_live(id, None).await.unwrap().ttl() > 0);
}

/// Leases another program granted on the same cluster are not the name server's: a client
/// cannot keep one alive, revoke it (deleting that program's keys) or bind a name to it through
/// rmi, even knowing its id. Only leases with rmi's record are.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn leases_granted_by_other_programs_are_not_the_name_servers() {
    let Some((cluster, store)) = one_etcd("leases of other programs").await else {
        return;
    };
    let mut raw = etcd_client::Client::connect(&cluster.endpoints(), None)
        .await
        .unwrap();
    let foreign = raw.lease_grant(60, None).await.unwrap().id();
    raw.put(
        "/app/lock",
        "held",
        Some(etcd_client::PutOptions::new().with_lease(foreign)),
    )
    .await
    .unwrap();
    let id = LeaseId(u64::try_from(foreign).unwrap());
    let err = store.keep_alive(id).await.unwrap_err();
    assert!(err.message.contains("unknown lease"), "{err}");
    let err = store
        .register(
            "n".into(),
            Entry {
                lease: Some(id),
                ..Entry::new(uri(1), tags(&[]))
            },
            false,
        )
        .await
        .unwrap_err();
    assert!(err.message.contains("unknown lease"), "{err}");
    let err = store
        .register(
            "s".into(),
            Entry {
                lease: Some(id),
                shared: true,
                ..Entry::new(uri(1), tags(&[]))
            },
            false,
        )
        .await
        .unwrap_err();
    assert!(err.message.contains("unknown lease"), "{err}");
    assert_eq!(store.revoke(id).await.unwrap(), 0);
    // The other program's key and lease are untouched, and no name was written.
    let held = raw.get("/app/lock", None).await.unwrap();
    assert_eq!(held.kvs().len(), 1, "the foreign key survived");
    assert!(raw.lease_time_to_live(foreign, None).await.unwrap().ttl() > 0);
    assert_eq!(store.count().await.unwrap(), 0);
    // A lease the store granted works for all three.
    let own = store.grant(Duration::from_secs(60)).await.unwrap();
    store
        .register(
            "n".into(),
            Entry {
                lease: Some(own),
                ..Entry::new(uri(1), tags(&[]))
            },
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        store.keep_alive(own).await.unwrap(),
        Duration::from_secs(60)
    );
    assert_eq!(store.revoke(own).await.unwrap(), 1);
    assert_eq!(store.count().await.unwrap(), 0);
}

/// Keys a name server did not write under `names/` (by hand, or by a tool) never break it:
/// a malformed value is skipped in listings and named in a lookup's error, and a stray
/// `Pyro.NameServer` key never shadows each name server's own entry.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn foreign_keys_in_etcd_are_passed_over() {
    let Some((cluster, store)) = one_etcd("foreign keys in etcd").await else {
        return;
    };
    let endpoints = cluster.endpoints();
    let own = Entry::new(uri(9090), tags(&[]));
    store
        .register(NAME_SERVER_NAME.into(), own.clone(), false)
        .await
        .unwrap();
    store
        .register("good".into(), Entry::new(uri(1), tags(&[])), false)
        .await
        .unwrap();
    let mut raw = etcd_client::Client::connect(&endpoints, None)
        .await
        .unwrap();
    let stray = r#"{"uri":"PYRO:other@127.0.0.1:1"}"#;
    let root = etcd::DEFAULT_ROOT;
    raw.put(format!("{root}names/{NAME_SERVER_NAME}"), stray, None)
        .await
        .unwrap();
    raw.put(format!("{root}names/bad"), "not json", None)
        .await
        .unwrap();
    let listed = store.list(&NameFilter::All).await.unwrap();
    assert_eq!(names(listed.clone()), [NAME_SERVER_NAME, "good"]);
    assert_eq!(listed[0].1.uri, own.uri);
    let err = store.lookup_all("bad").await.unwrap_err();
    assert!(err.message.contains("malformed"), "{err}");
    let own_again = store.lookup_all(NAME_SERVER_NAME).await.unwrap();
    assert_eq!(own_again[0].uri, own.uri);
    // Removing the name server's name removes nothing, the stray key included.
    let by_name = NameFilter::Name(NAME_SERVER_NAME.into());
    assert_eq!(store.remove(&by_name).await.unwrap(), 0);
    let left = raw
        .get(format!("{root}names/{NAME_SERVER_NAME}"), None)
        .await;
    assert_eq!(left.unwrap().kvs().len(), 1, "the stray key was deleted");
}

#[cfg(feature = "sqlite")]
suite!(sqlite_store, open_sqlite);

#[cfg(feature = "sqlite")]
mod sqlite_persistence {
    use super::*;

    async fn open(path: &Path) -> Registry {
        let store = SqliteStore::open(path, test_limits()).await.unwrap();
        Registry::new(Arc::new(store), test_limits())
    }

    /// Drops `r` and waits until its file can be opened again (the writer thread lets go).
    async fn reopen(r: Registry, path: &Path) -> Registry {
        drop(r);
        for _ in 0..100 {
            match SqliteStore::open(path, test_limits()).await {
                Ok(store) => return Registry::new(Arc::new(store), test_limits()),
                Err(e) if e.message.contains("in use") => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("the store stayed locked");
    }

    /// A Pyro5 name server's database (the schema of Pyro5's `SqlStorage`), or another
    /// program's, is refused with a message saying what it is, and left byte for byte as it
    /// was. (Before, rmi-ns started empty on a Pyro5 file, its names unseen, after switching
    /// the file to WAL and adding its own tables; any file got them.)
    #[tokio::test]
    async fn a_pyro_name_servers_database_or_another_programs_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        for (file, schema, says) in [
            (
                "pyro5.db",
                "CREATE TABLE pyro_names(id integer PRIMARY KEY, name nvarchar NOT NULL UNIQUE, \
                 uri nvarchar NOT NULL); \
                 CREATE TABLE pyro_metadata(object integer NOT NULL, metadata nvarchar NOT NULL); \
                 INSERT INTO pyro_names(name, uri) VALUES ('example', 'PYRO:obj@127.0.0.1:9999');",
                "Pyro name server's database",
            ),
            (
                "other.db",
                "CREATE TABLE orders(id integer PRIMARY KEY, item text);",
                "tables no rmi-ns made (orders)",
            ),
            // Whatever its `user_version` says (before, any but 0 passed: helper-123 #1)...
            (
                "versioned.db",
                "CREATE TABLE orders(id integer PRIMARY KEY); PRAGMA user_version = 1;",
                "tables no rmi-ns made (orders)",
            ),
            (
                "newer.db",
                "CREATE TABLE orders(id integer PRIMARY KEY); PRAGMA user_version = 7;",
                "made by a newer rmi",
            ),
            (
                "no-tables.db",
                "PRAGMA user_version = 1;",
                "none of rmi-ns's tables",
            ),
            // ...and whatever its tables are called.
            (
                "lookalike.db",
                "CREATE TABLE tags(id integer PRIMARY KEY, label text);",
                "its table tags is not rmi-ns's (columns id, label)",
            ),
        ] {
            let path = dir.path().join(file);
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(schema).unwrap();
            drop(conn);
            let before = std::fs::read(&path).unwrap();
            let err = SqliteStore::open(&path, test_limits()).await.unwrap_err();
            assert!(err.message.contains(says), "{file}: {err}");
            assert!(err.message.contains("not changed"), "{file}: {err}");
            assert_eq!(std::fs::read(&path).unwrap(), before, "{file} was changed");
            assert!(!dir.path().join(format!("{file}-wal")).exists());
        }
        // A file with some of rmi-ns's own tables and no version (a first start killed as it
        // made them, before they went in one transaction with the version) is taken.
        let path = dir.path().join("half.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE names (name TEXT PRIMARY KEY NOT NULL, uri TEXT NOT NULL, \
             lease INTEGER) WITHOUT ROWID;",
        )
        .unwrap();
        drop(conn);
        let r = open(&path).await;
        r.register("x", uri(1), false, tags(&[]), None)
            .await
            .unwrap();
        drop(r);
        // An empty file is a new store.
        let path = dir.path().join("empty.db");
        std::fs::write(&path, b"").unwrap();
        let r = open(&path).await;
        r.register("x", uri(1), false, tags(&[]), None)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn names_metadata_and_leases_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("names.db");
        let r = open(&path).await;
        let lease = r.grant(Duration::from_secs(60)).await.unwrap();
        r.register("plain", uri(1), false, tags(&["a", "b\nc"]), None)
            .await
            .unwrap();
        r.register("leased", uri(2), false, tags(&[]), Some(lease))
            .await
            .unwrap();
        r.register("gone", uri(3), false, tags(&[]), None)
            .await
            .unwrap();
        r.remove(Some("gone"), None, None).await.unwrap();
        r.set_metadata("leased", tags(&["m"])).await.unwrap();
        r.register_shared("multi", uri(4), tags(&["s"]), None)
            .await
            .unwrap();
        r.register_shared("multi", uri(5), tags(&[]), Some(lease))
            .await
            .unwrap();
        r.register_shared("multi", uri(6), tags(&[]), None)
            .await
            .unwrap();
        r.remove(Some("gone"), None, None).await.unwrap();
        // A lease kept alive is stored with its new deadline.
        assert_eq!(r.keep_alive(lease).await.unwrap(), Duration::from_secs(60));

        let r = reopen(r, &path).await;
        assert_eq!(
            r.lookup("plain").await.unwrap(),
            Entry::new(uri(1), tags(&["a", "b\nc"]))
        );
        let leased = r.lookup("leased").await.unwrap();
        assert_eq!(
            (leased.uri, leased.metadata, leased.lease),
            (uri(2), tags(&["m"]), Some(lease))
        );
        assert!(r.lookup("gone").await.is_err());
        let multi = r.lookup_all("multi").await.unwrap();
        assert_eq!(uris(&multi), uri_set(&[4, 5, 6]));
        assert!(multi.iter().all(|e| e.shared));
        assert_eq!(multi[0].metadata, tags(&["s"]));
        assert_eq!(r.keep_alive(lease).await.unwrap(), Duration::from_secs(60));
        assert_eq!(
            r.revoke(lease).await.unwrap(),
            2,
            "the reloaded lease still holds its name and its shared entry"
        );
        let r = reopen(r, &path).await;
        assert!(r.lookup("leased").await.is_err(), "the revoke was stored");
        assert_eq!(
            uris(&r.lookup_all("multi").await.unwrap()),
            uri_set(&[4, 6])
        );
        // A plain registration over the shared name replaces its stored entries.
        r.register("multi", uri(7), false, tags(&[]), None)
            .await
            .unwrap();
        let r = reopen(r, &path).await;
        assert_eq!(uris(&r.lookup_all("multi").await.unwrap()), uri_set(&[7]));
        assert_eq!(r.count().await.unwrap(), 2);
    }

    /// A lease whose deadline passed while the store was closed is gone on open, not given a
    /// fresh TTL (a minute here: a TTL-long wait would fail the test; helper-123 #3).
    #[tokio::test]
    async fn a_lease_that_ran_out_while_closed_expires_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("names.db");
        let r = open(&path).await;
        let lease = r.grant(Duration::from_secs(60)).await.unwrap();
        r.register("short", uri(1), false, tags(&[]), Some(lease))
            .await
            .unwrap();
        r.register("kept", uri(2), false, tags(&[]), None)
            .await
            .unwrap();
        drop(r);
        // Closed for longer than the TTL: the deadline a second in the past.
        let r = reopen(Registry::default(), &path).await;
        drop(r);
        let db = rusqlite::Connection::open(&path).unwrap();
        db.busy_timeout(Duration::from_secs(10)).unwrap();
        db.execute("UPDATE leases SET deadline_ms = deadline_ms - 61000", [])
            .unwrap();
        drop(db);
        let r = reopen(Registry::default(), &path).await;
        let gone = tokio::time::timeout(Duration::from_secs(2), until_gone(&r, "short")).await;
        assert!(
            gone.is_ok(),
            "the lease ran out while closed, yet its name stayed"
        );
        assert!(r.keep_alive(lease).await.is_err());
        assert_eq!(r.lookup("kept").await.unwrap().uri, uri(2));
    }

    /// A lease reloaded after the clock was set back (here: its stored deadline ten years
    /// ahead) keeps at most its TTL; before, a dead daemon's names stayed for the jump's length.
    #[tokio::test]
    async fn a_lease_reloaded_after_the_clock_went_back_keeps_at_most_its_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("names.db");
        let r = open(&path).await;
        let lease = r.grant(Duration::from_millis(300)).await.unwrap();
        r.register("stale", uri(1), false, tags(&[]), Some(lease))
            .await
            .unwrap();
        drop(r);
        let r = reopen(Registry::default(), &path).await;
        drop(r);
        let ten_years_ms: i64 = 10 * 365 * 86_400_000;
        let db = rusqlite::Connection::open(&path).unwrap();
        db.busy_timeout(Duration::from_secs(10)).unwrap();
        db.execute(
            "UPDATE leases SET deadline_ms = deadline_ms + ?1",
            [ten_years_ms],
        )
        .unwrap();
        drop(db);
        let r = reopen(Registry::default(), &path).await;
        until_gone(&r, "stale").await;
    }

    #[tokio::test]
    async fn a_second_store_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("names.db");
        let _r = open(&path).await;
        let err = SqliteStore::open(&path, test_limits()).await.unwrap_err();
        assert!(err.message.contains("in use by another process"), "{err}");
    }
}

/// Lease ids are random, never 0, and fit the signed 64-bit integers SQLite and etcd store.
#[tokio::test]
async fn lease_ids_fit_a_signed_64_bit_integer() {
    let r = Registry::memory(Limits::default());
    let mut ids = BTreeSet::new();
    for _ in 0..200 {
        let id = r.grant(Duration::from_secs(60)).await.unwrap();
        assert!(id.0 != 0 && i64::try_from(id.0).is_ok(), "{id}");
        ids.insert(id);
    }
    assert_eq!(ids.len(), 200, "never the same twice");
}

/// The lease timer is a task of its own: a store dropped while a lease is still hours from
/// expiring must not leave it behind.
#[tokio::test]
async fn a_dropped_store_stops_its_lease_timer() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let r = Registry::memory(Limits::default());
    r.grant(Duration::from_secs(3 * 3600)).await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(
        metrics.num_alive_tasks(),
        before + 1,
        "the lease timer runs"
    );
    drop(r);
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        while metrics.num_alive_tasks() > before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the lease timer outlived its store");
}

#[test]
fn filters_changes_and_lease_ids_say_what_they_are_about() {
    let name = NameFilter::Name("a.b".into());
    assert!(name.matches("a.b"));
    assert!(!name.matches("a.bc") && !name.matches("a"));
    let prefix = NameFilter::Prefix("a.".into());
    assert!(prefix.matches("a.b") && prefix.matches("a."));
    assert!(!prefix.matches("xa.b"));
    let regex = NameFilter::Regex(regex::Regex::new("^a\\.[0-9]+$").unwrap());
    assert!(regex.matches("a.12") && !regex.matches("a.x"));
    assert!(NameFilter::All.matches(""));
    let has = tags(&["x", "y"]);
    assert!(MetaFilter::All(tags(&["x", "y"])).matches(&has));
    assert!(!MetaFilter::All(tags(&["x", "z"])).matches(&has));
    assert!(MetaFilter::Any(tags(&["z", "y"])).matches(&has));
    assert!(!MetaFilter::Any(tags(&["z"])).matches(&has));

    let entry = Entry::new(uri(1), tags(&[]));
    let registered = Change::Registered {
        name: "svc".into(),
        entry,
    };
    let removed = Change::Removed {
        name: "gone".into(),
        uri: None,
    };
    let expired = Change::Expired {
        name: "late".into(),
        lease: LeaseId(1),
        uri: Some(uri(2)),
    };
    assert_eq!(registered.name(), Some("svc"));
    assert_eq!(removed.name(), Some("gone"));
    assert_eq!(expired.name(), Some("late"));
    assert_eq!(Change::Lagged { missed: 3 }.name(), None);

    // Lease ids print in hex, as the name server's tools and logs show them.
    assert_eq!(LeaseId(0xbeef).to_string(), "beef");
    assert_eq!(LeaseId(u64::MAX).to_string(), "ffffffffffffffff");
}

#[test]
fn storage_parses_as_pyro5_ns_spells_it() {
    assert_eq!("memory".parse::<Storage>().unwrap(), Storage::Memory);
    assert_eq!(
        "sql:/tmp/x/names.db".parse::<Storage>().unwrap(),
        Storage::Sql("/tmp/x/names.db".into())
    );
    assert_eq!(
        "etcd:127.0.0.1:2379,127.0.0.2:2379"
            .parse::<Storage>()
            .unwrap(),
        Storage::Etcd(vec!["127.0.0.1:2379".into(), "127.0.0.2:2379".into()])
    );
    for bad in [
        "",
        "sql:",
        "etcd:",
        "etcd:host",
        "etcd:host:port",
        "redis:x",
    ] {
        assert!(bad.parse::<Storage>().is_err(), "{bad:?}");
    }
}

#[cfg(not(feature = "etcd"))]
#[tokio::test]
async fn etcd_without_its_feature_says_how_to_build_it() {
    let err = Storage::Etcd(vec!["127.0.0.1:2379".into()])
        .open(Limits::default())
        .await
        .unwrap_err();
    assert!(
        err.message.contains("etcd backend is not built")
            && err.message.contains("--features etcd"),
        "{err}"
    );
}
