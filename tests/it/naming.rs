//! The name server: Pyro5's register/lookup/list/remove/yplookup semantics, and discovery.

use std::collections::BTreeSet;

use rmi::naming::{NameServer, NameServerProxy, NsLocator};
use rmi::{Error, Uri};

use crate::support::{start_daemon, unused_port, GreeterProxy};

fn tags(t: &[&str]) -> BTreeSet<String> {
    t.iter().map(|s| s.to_string()).collect()
}

fn uri(port: u16) -> Uri {
    Uri::tcp("obj", "127.0.0.1", port)
}

async fn name_server() -> (rmi::naming::NameServerHandle, NameServerProxy) {
    let ns = NameServer::builder()
        .port(0)
        .no_broadcast()
        .start()
        .await
        .unwrap();
    let proxy = NameServerProxy::connect(ns.uri()).await.unwrap();
    (ns, proxy)
}

#[tokio::test]
async fn safe_register_refuses_a_taken_name_and_plain_register_replaces_it() {
    let (_ns, names) = name_server().await;
    names
        .register_with("a", &uri(1), true, tags(&[]))
        .await
        .unwrap();
    let err = names
        .register_with("a", &uri(2), true, tags(&[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Resolve(m) if m.contains("already registered")),
        "{err}"
    );
    assert_eq!(
        names.lookup("a").await.unwrap(),
        uri(1),
        "the refused registration changed nothing"
    );
    names.register("a", &uri(3)).await.unwrap();
    assert_eq!(names.lookup("a").await.unwrap(), uri(3));
}

#[tokio::test]
async fn unknown_name_is_a_naming_error() {
    let (_ns, names) = name_server().await;
    let err = names.lookup("no.such.name").await.unwrap_err();
    assert!(
        matches!(&err, Error::Resolve(m) if m == "unknown name: no.such.name"),
        "{err}"
    );
    // So is connecting to it by PYRONAME:.
    let err = GreeterProxy::connect(format!(
        "PYRONAME:no.such.name@{}",
        names.uri().location().unwrap()
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Resolve(_)), "{err}");
}

#[tokio::test]
async fn list_by_prefix_and_by_regex_and_remove() {
    let (_ns, names) = name_server().await;
    for (i, n) in ["app.one", "app.two", "other.app", "apple"]
        .iter()
        .enumerate()
    {
        names.register(n, &uri(i as u16 + 1)).await.unwrap();
    }
    let all = names.list().await.unwrap();
    assert_eq!(
        all.len(),
        5,
        "four names plus the name server's own: {all:?}"
    );
    assert!(all.contains_key("Pyro.NameServer"));
    let prefixed: Vec<_> = names
        .list_prefix("app.")
        .await
        .unwrap()
        .into_keys()
        .collect();
    assert_eq!(prefixed, ["app.one", "app.two"]);
    // Python's re.match: anchored at the start, not the end.
    let matched: Vec<_> = names
        .list_regex(r"app.*o")
        .await
        .unwrap()
        .into_keys()
        .collect();
    assert_eq!(matched, ["app.one", "app.two"]);
    let matched: Vec<_> = names
        .list_regex(r"app")
        .await
        .unwrap()
        .into_keys()
        .collect();
    assert_eq!(matched, ["app.one", "app.two", "apple"]);
    assert!(matches!(
        names.list_regex("(").await.unwrap_err(),
        Error::Resolve(_)
    ));
    let err = names
        .api()
        .list(Some("a".into()), Some("b".into()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.message.contains("not both"), "{err}");

    assert_eq!(names.count().await.unwrap(), 5);
    assert!(names.remove("apple").await.unwrap());
    assert!(!names.remove("apple").await.unwrap());
    assert_eq!(names.remove_prefix("app.").await.unwrap(), 2);
    assert_eq!(
        names.remove_regex(".*").await.unwrap(),
        1,
        "everything but the name server"
    );
    assert!(
        !names.remove("Pyro.NameServer").await.unwrap(),
        "the name server's entry stays"
    );
    assert_eq!(names.count().await.unwrap(), 1);
    names.ping().await.unwrap();
}

#[tokio::test]
async fn yplookup_by_all_and_by_any_and_set_metadata() {
    let (_ns, names) = name_server().await;
    names
        .register_with("a", &uri(1), false, tags(&["red", "big"]))
        .await
        .unwrap();
    names
        .register_with("b", &uri(2), false, tags(&["red"]))
        .await
        .unwrap();
    names
        .register_with("c", &uri(3), false, tags(&["blue"]))
        .await
        .unwrap();

    let all: Vec<_> = names
        .yplookup_all(["red", "big"])
        .await
        .unwrap()
        .into_keys()
        .collect();
    assert_eq!(all, ["a"]);
    let all = names.yplookup_all(["red"]).await.unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(all["b"], (uri(2), tags(&["red"])));
    let any: Vec<_> = names
        .yplookup_any(["big", "blue"])
        .await
        .unwrap()
        .into_keys()
        .collect();
    assert_eq!(any, ["a", "c"]);

    names.set_metadata("c", tags(&["red"])).await.unwrap();
    assert_eq!(
        names.lookup_with_metadata("c").await.unwrap(),
        (uri(3), tags(&["red"]))
    );
    assert!(matches!(
        names.set_metadata("zz", tags(&[])).await.unwrap_err(),
        Error::Resolve(_)
    ));
    let none = names.api().yplookup(None, None).await.unwrap().unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn pyrometa_connects_to_an_object_with_all_the_tags() {
    let (ns, names) = name_server().await;
    let (daemon, _, greeter) = start_daemon().await;
    names
        .register_with("greeter", &greeter, false, tags(&["greeting", "tutorial"]))
        .await
        .unwrap();
    names
        .register_with("decoy", &uri(unused_port()), false, tags(&["greeting"]))
        .await
        .unwrap();
    let proxy = GreeterProxy::connect(format!(
        "PYROMETA:greeting,tutorial@{}",
        ns.daemon().location()
    ))
    .await
    .unwrap();
    assert_eq!(
        proxy.welcome_message("meta".into()).await.unwrap(),
        "Hi welcome meta"
    );
    let err = GreeterProxy::connect(format!("PYROMETA:nothing@{}", ns.daemon().location()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Resolve(_)), "{err}");
    daemon.shutdown();
}

#[tokio::test]
async fn locate_ns_without_an_address_finds_the_name_server_by_loopback_broadcast() {
    let ns = NameServer::builder()
        .port(0)
        .broadcast("127.255.255.255", 0)
        .start()
        .await
        .unwrap();
    let bc_port = ns.broadcast_addr().expect("responder").port();
    // Nothing listens on the "default" port this locator tries first, so only the broadcast
    // on 127.255.255.255 can find the name server.
    let locator = NsLocator::new()
        .port(unused_port())
        .broadcast("127.255.255.255", bc_port);
    let found = locator.locate().await.unwrap();
    assert_eq!(found.uri(), ns.uri());
    found.ping().await.unwrap();

    // With no responder, locating fails with a naming error that says what was tried.
    let err = NsLocator::new()
        .port(unused_port())
        .broadcast("127.255.255.255", unused_udp_port())
        .locate()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Resolve(m) if m.contains("GET_NSURI")),
        "{err}"
    );
    // For people: the socket's own reason, once, and what to do about it.
    let text = err.to_string();
    assert!(text.contains("is rmi-ns running?"), "{text}");
    assert_eq!(text.matches("refused").count(), 1, "{text}");
}

fn unused_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
