//! Pyro's tutorial in one process: a name server, a daemon serving the greeting object
//! registered as "server", and a client that calls it through `PYRONAME:server`.
//!
//! Run with `cargo run --example greeting`; it prints `Hi welcome Rashmi` and exits 0.

#[path = "common/greeter.rs"]
mod greeter;

use greeter::{GreeterProxy, GreeterServer, GreetingMaker};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // 1. The name server, on a free loopback port (the `rmi-ns` binary does the same on 9090).
    let ns = rmi::naming::NameServer::builder()
        .port(0)
        .no_broadcast()
        .start()
        .await?;
    let ns_addr = ns.daemon().location().clone();
    println!("Name server running on {}", ns.uri());

    // 2. The server: a daemon, the object registered in it, its URI registered as "server".
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await?;
    let uri = daemon.register(GreeterServer::new(GreetingMaker))?;
    let ns_proxy = rmi::naming::NameServerProxy::connect(ns.uri()).await?;
    // Under a lease this process keeps alive: the name vanishes if the server dies.
    let names = ns_proxy.lease(rmi::naming::DEFAULT_LEASE_TTL).await?;
    names.register("server", &uri).await?;
    println!("Ready. Object uri = {uri}");
    let server = tokio::spawn({
        let daemon = daemon.clone();
        async move { daemon.serve().await }
    });

    // 3. The client: a proxy from the name, and the call.
    let greeter = GreeterProxy::connect(format!("PYRONAME:server@{ns_addr}")).await?;
    println!("{}", greeter.welcome_message("Rashmi".to_string()).await?);

    names.revoke().await?;
    daemon.shutdown();
    server.await.expect("daemon task")?;
    ns.shutdown();
    Ok(())
}
