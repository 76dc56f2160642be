//! `rmi-ns --storage etcd:…` end to end (feature `etcd`): two rmi-ns processes over one real
//! etcd serve the same names, each answering as `Pyro.NameServer` for itself; names outlive
//! `kill -9` of an rmi-ns; an unreachable etcd is reported clearly. 127.0.0.1 only.
//!
//! Run with `cargo test -p rmi-naming -p rmi-cli --features etcd`.
#![cfg(feature = "etcd")]

mod support;

#[path = "../../rmi-naming/tests/support/etcd.rs"]
mod etcd_process;

use std::collections::BTreeSet;

use etcd_process::EtcdCluster;
use rmi::naming::NsLocator;
use rmi::Uri;
use support::{locate, spawn_rmi_ns};

#[tokio::test]
async fn two_rmi_ns_over_one_etcd_serve_the_same_names() {
    let Some(cluster) = EtcdCluster::start(1, "rmi-ns --storage etcd") else {
        return;
    };
    let storage = cluster.storage();
    let (mut first, first_port) = spawn_rmi_ns(&["--storage", &storage]);
    let (mut second, second_port) = spawn_rmi_ns(&["--storage", &storage]);
    let one = locate(first_port).await;
    let two = locate(second_port).await;

    let uri = Uri::tcp("obj", "127.0.0.1", 4001);
    let tags: BTreeSet<String> = ["red".to_owned()].into();
    one.register_with("app.shared", &uri, false, tags.clone())
        .await
        .unwrap();
    assert_eq!(
        two.lookup_with_metadata("app.shared").await.unwrap(),
        (uri.clone(), tags)
    );
    assert_eq!(one.lookup("Pyro.NameServer").await.unwrap(), *one.uri());
    assert_eq!(two.lookup("Pyro.NameServer").await.unwrap(), *two.uri());
    assert_ne!(one.uri(), two.uri(), "each answers for itself");
    assert_eq!(two.list_prefix("app.").await.unwrap().len(), 1);
    assert_eq!(
        two.count().await.unwrap(),
        2,
        "app.shared and the name server"
    );
    let err = two
        .register_with("app.shared", &uri, true, BTreeSet::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already registered"), "{err}");

    // The names are in etcd, not in the process: they outlive it.
    first.kill_9();
    assert_eq!(two.lookup("app.shared").await.unwrap(), uri);
    let (mut third, third_port) = spawn_rmi_ns(&["--storage", &storage]);
    let three = locate(third_port).await;
    assert_eq!(three.lookup("app.shared").await.unwrap(), uri);
    assert!(three.remove("app.shared").await.unwrap());
    assert!(two.lookup("app.shared").await.is_err());
    assert!(second.is_alive() && third.is_alive());
}

#[test]
fn rmi_ns_says_clearly_when_etcd_is_unreachable() {
    // A port nobody listens on (bound and released).
    let port = support::unused_port();
    let out = support::tool(env!("CARGO_BIN_EXE_rmi-ns"))
        .args(["--port", "0", "--nobc", "--storage"])
        .arg(format!("etcd:127.0.0.1:{port}"))
        .env("RMI_LOG", "error")
        .output()
        .expect("run rmi-ns");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach etcd at 127.0.0.1:{port}"))
            && stderr.contains("is etcd running"),
        "{stderr}"
    );
}

/// Several rmi-ns over one etcd share a broadcast port (SO_REUSEADDR): a client that finds the
/// name server by broadcast reaches one of them, and after that one is killed, finds another,
/// which serves the same names.
#[tokio::test]
async fn several_rmi_ns_over_one_etcd_each_answer_discovery_broadcasts() {
    let Some(cluster) = EtcdCluster::start(1, "rmi-ns broadcasts over etcd") else {
        return;
    };
    let storage = cluster.storage();
    // A free UDP port for both responders.
    let bcport = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    // Both on one TCP port, on two loopback addresses that are not 127.0.0.1: rmi-nsc's first
    // try (127.0.0.1 at that port) finds nothing, and only the broadcast can find a server,
    // one on the port asked for.
    let port = support::unused_port().to_string();
    let args = |host: &str| {
        vec![
            "--host".to_owned(),
            host.to_owned(),
            "--port".to_owned(),
            port.clone(),
            "--bcport".to_owned(),
            bcport.clone(),
            "--storage".to_owned(),
            storage.to_owned(),
        ]
    };
    let hosts = ["127.0.0.2", "127.0.0.3"];
    let first_args = args(hosts[0]);
    let first_refs: Vec<&str> = first_args.iter().map(String::as_str).collect();
    let second_args = args(hosts[1]);
    let second_refs: Vec<&str> = second_args.iter().map(String::as_str).collect();
    let (mut first, _) = support::spawn_rmi_ns_with(&first_refs, &[], 2);
    let (mut second, _) = support::spawn_rmi_ns_with(&second_refs, &[], 2);
    let one = NsLocator::new()
        .host(hosts[0])
        .port(port.parse().unwrap())
        .no_broadcast()
        .locate()
        .await
        .unwrap();
    one.register("app.found", &Uri::tcp("obj", "127.0.0.1", 4002))
        .await
        .unwrap();
    let env = [
        ("RMI_NS_PORT", port.as_str()),
        ("RMI_NS_BCADDR", "127.255.255.255"),
        ("RMI_NS_BCPORT", bcport.as_str()),
    ];
    let answered_by = |out: &str| {
        hosts
            .iter()
            .position(|h| out.contains(&format!("PYRO:Pyro.NameServer@{h}:{port}")))
    };
    let (ok, out) = support::nsc(&["-v", "lookup", "app.found"], &env);
    assert!(ok, "{out}");
    let found = answered_by(&out).unwrap_or_else(|| panic!("found by broadcast: {out}"));
    assert!(out.contains("PYRO:obj@127.0.0.1:4002"), "{out}");
    // Kill the one that answered: the other answers the next broadcast, with the same names.
    if found == 0 {
        first.kill_9();
    } else {
        second.kill_9();
    }
    let (ok, out) = support::nsc(&["-v", "lookup", "app.found"], &env);
    assert!(ok, "{out}");
    assert_eq!(answered_by(&out), Some(1 - found), "the other one: {out}");
    assert!(out.contains("PYRO:obj@127.0.0.1:4002"), "{out}");
}
