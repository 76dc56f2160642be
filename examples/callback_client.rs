//! The client half of Pyro's `callback` example: serves a listener from its own daemon, finds
//! the server as `PYRONAME:example.callback` and asks it for callbacks, one of which the
//! listener refuses; the server reports that failure back as its call's error.
//!
//! Needs a running name server and `cargo run --example callback_server` (see there).
//! `RMI_NS_HOST`/`RMI_NS_PORT` are honoured. Exits 0 once both requests are answered.

#[path = "common/callback.rs"]
mod callback;

use std::sync::Arc;

use callback::{CallbackHandler, ListenerProxy, ListenerServer, NotifierProxy};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The client's own daemon, for the callback object.
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await?;
    let listener_uri = daemon.register(ListenerServer::new(CallbackHandler { refuse: Some(2) }))?;
    let served = tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    println!("client: listener ready at {listener_uri}");

    // The server, by name (binaries may read RMI_NS_HOST/RMI_NS_PORT; the library does not).
    let resolver = Arc::new(rmi::naming::NamingResolver::new(
        rmi::naming::NsLocator::from_env()?,
    ));
    let server: NotifierProxy = NotifierProxy::builder("PYRONAME:example.callback")?
        .resolver(resolver)
        .connect()
        .await?;
    let me = ListenerProxy::from_uri(&listener_uri)?;

    for times in [1, 3] {
        println!("client: asking the server for {times} callback(s)");
        match server.do_callback(me.clone(), times).await? {
            Ok(acks) => println!("client: the server reports success: {acks:?}"),
            Err(e) => println!("client: the server reports an error: {e}"),
        }
    }

    daemon.shutdown();
    served.await.expect("daemon task")?;
    Ok(())
}
