//! Pyro's tutorial by name: a proxy by `PYRONAME:` finds the server again when it moves. (The
//! tutorial through the real `rmi-ns` process is tested in rmi-cli, beside the binary.)

use crate::support::{GreeterProxy, GreeterServer, GreetingMaker};

#[tokio::test]
async fn pyroname_is_resolved_again_when_the_proxy_redials() {
    let (ns, names) = crate::naming::name_server().await;
    let ns_addr = ns.daemon().location().clone();

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
