//! Addresses: an advertised (NAT) address, Unix domain sockets, and localhost on IPv4 and IPv6.

use rmi::{Daemon, Location, Uri};

use crate::support::{GreeterProxy, GreeterServer, GreetingMaker};

async fn serve(daemon: &Daemon) {
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
}

#[tokio::test]
async fn uris_carry_the_advertised_address_not_the_bound_one() {
    let daemon = Daemon::builder()
        .advertise("gateway.example", Some(4444))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let uri = daemon
        .register_with_id(GreeterServer::new(GreetingMaker), "greeter")
        .unwrap();
    assert_eq!(uri.to_string(), "PYRO:greeter@gateway.example:4444");
    // The daemon still listens where it was bound.
    serve(&daemon).await;
    let bound = daemon.local_addr().unwrap();
    let direct = GreeterProxy::connect(Uri::tcp("greeter", "127.0.0.1", bound.port()))
        .await
        .unwrap();
    assert_eq!(
        direct.welcome_message("nat".into()).await.unwrap(),
        "Hi welcome nat"
    );
    // Advertising only a host keeps the bound port.
    let d2 = Daemon::builder()
        .advertise("localhost", None)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let port = d2.local_addr().unwrap().port();
    assert_eq!(
        d2.uri_for("x").to_string(),
        format!("PYRO:x@localhost:{port}")
    );
    // So does port 0, as Pyro's `natport` 0: a URI with port 0 could never be dialled.
    let d3 = Daemon::builder()
        .advertise("localhost", Some(0))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let port = d3.local_addr().unwrap().port();
    assert_eq!(
        d3.uri_for("x").to_string(),
        format!("PYRO:x@localhost:{port}")
    );
    daemon.shutdown();
}

#[cfg(unix)]
#[tokio::test]
async fn daemon_proxy_and_name_server_over_unix_sockets() {
    // An `@` in the path, which the URI's parse once took for the object id's end (helper-167
    // #2): the URI did not read back, and the name server refused it.
    let made = tempfile::Builder::new()
        .prefix("rmi-test@")
        .tempdir()
        .unwrap();
    let dir = made.path().to_owned();
    // A path that is not UTF-8 cannot go in a URI as it is: refused, not advertised as another.
    let bad = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"bad-\xff.sock");
    let err = Daemon::builder()
        .bind_unix(dir.join(bad))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("UTF-8"), "{err}");
    let sock = dir.join("greeter.sock");
    let _ = std::fs::remove_file(&sock);
    // What the daemon tells of a Unix client: its credentials (helper-167 #4: the daemon's own
    // path, the same for every client).
    let peers = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let daemon = Daemon::builder()
        .validator({
            let peers = peers.clone();
            move |info: &rmi::daemon::HandshakeInfo<'_>| {
                peers.lock().unwrap().push(info.peer.to_owned());
                Ok(String::new())
            }
        })
        .bind_unix(&sock)
        .await
        .unwrap();
    let uri = daemon
        .register_with_id(GreeterServer::new(GreetingMaker), "greeter")
        .unwrap();
    assert_eq!(
        uri.to_string(),
        format!("PYRO:greeter@./u:{}", sock.display())
    );
    assert!(matches!(daemon.location(), Location::Unix(_)));
    serve(&daemon).await;
    let greeter = GreeterProxy::connect(uri.to_string()).await.unwrap();
    assert_eq!(
        greeter.welcome_message("unix".into()).await.unwrap(),
        "Hi welcome unix"
    );
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&dir).unwrap());
    assert_eq!(
        peers.lock().unwrap().clone(),
        [format!(
            "unix:{} uid={uid} pid={}",
            sock.display(),
            std::process::id()
        )]
    );

    // A name server on a Unix socket, used directly.
    let ns_sock = dir.join("ns.sock");
    let _ = std::fs::remove_file(&ns_sock);
    let ns = rmi::naming::NameServer::builder()
        .unix(&ns_sock)
        .start()
        .await
        .unwrap();
    let names = rmi::naming::NameServerProxy::connect(ns.uri())
        .await
        .unwrap();
    names.register("greeter", &uri).await.unwrap();
    assert_eq!(names.lookup("greeter").await.unwrap(), uri);
    // ...and found as Pyro's `locate_ns("./u:PATH")` finds it, for `PYRONAME:` (helper-167
    // #1: the path was taken for a TCP host, and every lookup failed in DNS).
    let locator = rmi::naming::NsLocator::new()
        .host(format!("./u:{}", ns_sock.display()))
        .no_broadcast();
    let resolver: std::sync::Arc<dyn rmi::Resolve> =
        std::sync::Arc::new(rmi::naming::NamingResolver::new(locator));
    let named: GreeterProxy = GreeterProxy::builder("PYRONAME:greeter")
        .unwrap()
        .resolver(resolver)
        .connect()
        .await
        .unwrap();
    assert_eq!(
        named.welcome_message("by name".into()).await.unwrap(),
        "Hi welcome by name"
    );
    // A locator with TLS set dials a Unix socket plainly, as `rmi-nsc -u` does (helper-171
    // #4: "TLS needs a TCP location").
    let tls = std::sync::Arc::new(
        rmi::rustls::ClientConfig::builder()
            .with_root_certificates(rmi::rustls::RootCertStore::empty())
            .with_no_client_auth(),
    );
    let with_tls = rmi::naming::NsLocator::new()
        .host(format!("./u:{}", ns_sock.display()))
        .no_broadcast()
        .tls(tls)
        .locate()
        .await
        .unwrap();
    with_tls.ping().await.unwrap();
    ns.shutdown();
    daemon.shutdown();
    // The socket file goes away with the daemon.
    for _ in 0..200 {
        if !sock.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!sock.exists(), "socket file left behind");
}

#[tokio::test]
async fn localhost_reaches_daemons_on_ipv4_and_on_ipv6() {
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let daemon = Daemon::bind(bind).await.unwrap();
        serve(&daemon).await;
        let id = daemon
            .register(GreeterServer::new(GreetingMaker))
            .unwrap()
            .object()
            .unwrap()
            .to_string();
        let port = daemon.local_addr().unwrap().port();
        let greeter = GreeterProxy::connect(format!("PYRO:{id}@localhost:{port}"))
            .await
            .unwrap();
        assert_eq!(
            greeter.welcome_message(bind.into()).await.unwrap(),
            format!("Hi welcome {bind}")
        );
        daemon.shutdown();
    }
}

/// Two daemons started at once on a path a dead daemon left its socket file at: one binds, the
/// other is told a process serves there. Before, both could find the file stale, both remove
/// it and bind, and the first then served on an unlinked socket nobody could reach, its URIs
/// reaching the other (helper-167 #3).
#[cfg(unix)]
#[test]
fn two_daemons_taking_over_one_stale_socket_file_never_both_bind_it() {
    use std::sync::{Arc, Barrier};
    let made = tempfile::Builder::new()
        .prefix("rmi-race-")
        .tempdir()
        .unwrap();
    let dir = made.path().to_owned();
    let path = dir.join("d.sock");
    for round in 0..100 {
        let _ = std::fs::remove_file(&path);
        // A socket file nobody listens on any more.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let (start, bound) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let daemons: Vec<_> = (0..2)
            .map(|_| {
                let (start, bound, path) = (start.clone(), bound.clone(), path.clone());
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async {
                        start.wait();
                        let daemon = Daemon::builder().bind_unix(&path).await;
                        // Both held until both have tried.
                        bound.wait();
                        daemon.map(drop).map_err(|e| e.to_string())
                    })
                })
            })
            .collect();
        let results: Vec<_> = daemons.into_iter().map(|d| d.join().unwrap()).collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "round {round}: {results:?}");
        let refused = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert!(refused.contains("a process serves there"), "{refused}");
    }
    drop(made);
}
