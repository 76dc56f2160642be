//! Callbacks in one process, after Pyro's `callback` example: the client serves a listener
//! object from its own daemon and passes its proxy to the server, which calls it back.
//!
//! A proxy travels as its URI, so `ListenerProxy` is an ordinary argument. A callback that
//! fails is not lost: the server turns it into its own error, which its caller receives.
//!
//! Run with `cargo run --example callback`; everything listens on 127.0.0.1 and it exits 0.

#[path = "common/callback.rs"]
mod callback;

use callback::{
    CallbackHandler, CallbackServer, ListenerProxy, ListenerServer, NotifierProxy, NotifierServer,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The server: a daemon serving the notifier.
    let server = rmi::Daemon::bind("127.0.0.1:0").await?;
    let notifier_uri = server.register(NotifierServer::new(CallbackServer))?;
    let server_task = tokio::spawn({
        let d = server.clone();
        async move { d.serve().await }
    });
    println!("server: notifier ready at {notifier_uri}");

    // The client runs a daemon of its own for the callback object (Pyro's client does too).
    let client = rmi::Daemon::bind("127.0.0.1:0").await?;
    let listener_uri = client.register(ListenerServer::new(CallbackHandler { refuse: Some(3) }))?;
    let client_task = tokio::spawn({
        let d = client.clone();
        async move { d.serve().await }
    });
    println!("client: listener ready at {listener_uri}");
    let me = ListenerProxy::from_uri(&listener_uri)?;
    let notifier = NotifierProxy::connect(&notifier_uri).await?;

    // 1. Two callbacks, both accepted.
    println!("\nclient: asking for 2 callbacks");
    match notifier.do_callback(me.clone(), 2).await? {
        Ok(acks) => println!("client: the server reports success: {acks:?}"),
        Err(e) => println!("client: the server reports an error: {e}"),
    }

    // 2. Four callbacks; the listener refuses the third, and the server's caller hears about it.
    println!("\nclient: asking for 4 callbacks (the listener refuses number 3)");
    match notifier.do_callback(me.clone(), 4).await? {
        Ok(acks) => println!("client: the server reports success: {acks:?}"),
        Err(e) => println!("client: the server reports an error: {e}"),
    }

    // 3. The client's daemon is gone: the callback cannot be delivered, and that is reported too.
    client.shutdown();
    client_task.await.expect("client daemon task")?;
    println!("\nclient: daemon stopped; asking for 1 callback");
    match notifier.do_callback(me, 1).await? {
        Ok(acks) => println!("client: the server reports success: {acks:?}"),
        Err(e) => println!("client: the server reports an error: {e}"),
    }

    server.shutdown();
    server_task.await.expect("server daemon task")?;
    Ok(())
}
