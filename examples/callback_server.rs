//! The server half of Pyro's `callback` example: registers the notifier in a daemon and its URI
//! in the name server as `example.callback`, then serves until Ctrl-C.
//!
//! Needs a running name server: start `cargo run -p rmi-cli --bin rmi-ns` first, then this, then
//! `cargo run --example callback_client`. The name server is found through
//! `NsLocator::from_env()`, so `RMI_NS_HOST`/`RMI_NS_PORT` are honoured.
//! `cargo run --example callback` shows the same in one process.

#[path = "common/callback.rs"]
mod callback;

use callback::{CallbackServer, NotifierServer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await?;
    let ns = rmi::naming::NsLocator::from_env()?.locate().await?;
    let uri = daemon.register(NotifierServer::new(CallbackServer))?;
    ns.register("example.callback", &uri).await?;
    println!("Server ready. Object uri = {uri}, registered as example.callback");
    let stop = daemon.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.shutdown();
    });
    Ok(daemon.serve().await?)
}
