//! Pyro's tutorial, end to end: the real `rmi-ns` process, a daemon, a proxy by name.

use crate::support::{spawn_name_server, GreeterProxy, GreeterServer, GreetingMaker};

#[tokio::test]
async fn tutorial_through_rmi_ns_process_and_pyroname() {
    let (mut ns_process, ns_port) = spawn_name_server();

    // Server: daemon, object, name registration, request loop.
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon.register(GreeterServer::new(GreetingMaker)).unwrap();
    let ns = rmi::naming::NsLocator::new()
        .host("127.0.0.1")
        .port(ns_port)
        .locate()
        .await
        .unwrap();
    ns.register("server", &uri).await.unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });

    // Client: PYRONAME:server, as the tutorial's client types it (plus where the NS is).
    let greeter = GreeterProxy::connect(format!("PYRONAME:server@127.0.0.1:{ns_port}"))
        .await
        .unwrap();
    assert_eq!(
        greeter.welcome_message("Rashmi".into()).await.unwrap(),
        "Hi welcome Rashmi"
    );

    // The PYRO: URI the server printed works too.
    let direct = GreeterProxy::connect(uri.to_string()).await.unwrap();
    assert_eq!(
        direct.welcome_message("Irmen".into()).await.unwrap(),
        "Hi welcome Irmen"
    );
    assert!(ns_process.is_alive());
    daemon.shutdown();
}

#[tokio::test]
async fn pyroname_is_resolved_again_when_the_proxy_redials() {
    let ns = rmi::naming::NameServer::builder()
        .port(0)
        .no_broadcast()
        .start()
        .await
        .unwrap();
    let ns_addr = ns.daemon().location().clone();
    let names = rmi::naming::NameServerProxy::connect(ns.uri())
        .await
        .unwrap();

    let first = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    names
        .register(
            "server",
            &first.register(GreeterServer::new(GreetingMaker)).unwrap(),
        )
        .await
        .unwrap();
    tokio::spawn({
        let d = first.clone();
        async move { d.serve().await }
    });
    let greeter = GreeterProxy::connect(format!("PYRONAME:server@{ns_addr}"))
        .await
        .unwrap();
    assert_eq!(
        greeter.welcome_message("a".into()).await.unwrap(),
        "Hi welcome a"
    );

    // The server moves to another daemon (another port) and re-registers its name.
    let second = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    names
        .register(
            "server",
            &second.register(GreeterServer::new(GreetingMaker)).unwrap(),
        )
        .await
        .unwrap();
    tokio::spawn({
        let d = second.clone();
        async move { d.serve().await }
    });
    first.shutdown();
    greeter.proxy().close();
    assert_eq!(
        greeter.welcome_message("b".into()).await.unwrap(),
        "Hi welcome b"
    );
    second.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmi_nsc_controls_a_running_rmi_ns() {
    let (_ns, port) = crate::support::spawn_name_server();
    let nsc = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rmi-nsc"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(args)
            .output()
            .expect("run rmi-nsc");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    assert_eq!(nsc(&["ping"]), (true, "name server ping ok\n".into()));
    assert!(nsc(&["register", "app.greeter", "PYRO:obj@127.0.0.1:4000"]).0);
    let (ok, err) = nsc(&["register", "app.greeter", "PYRO:obj@127.0.0.1:4001"]);
    assert!(!ok && err.contains("already registered"), "{err}");
    assert!(nsc(&["setmeta", "app.greeter", "greeting", "tutorial"]).0);
    let (ok, out) = nsc(&["lookup", "app.greeter"]);
    assert!(
        ok && out.contains("PYRO:obj@127.0.0.1:4000") && out.contains("tutorial"),
        "{out}"
    );
    let (_, out) = nsc(&["list", "app."]);
    assert!(
        out.contains("app.greeter --> PYRO:obj@127.0.0.1:4000"),
        "{out}"
    );
    let (_, out) = nsc(&["yplookup-all", "greeting", "tutorial"]);
    assert!(out.contains("app.greeter"), "{out}");
    let (_, out) = nsc(&["listmatching", "Pyro"]);
    assert!(out.contains("Pyro.NameServer"), "{out}");
    assert_eq!(
        nsc(&["remove", "app.greeter"]),
        (true, "removed app.greeter\n".into())
    );
    let (ok, err) = nsc(&["lookup", "app.greeter"]);
    assert!(!ok && err.contains("unknown name"), "{err}");
}
