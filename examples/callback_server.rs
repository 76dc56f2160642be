//! The server half of Pyro's `callback` example: registers the notifier in a daemon and its URI
//! in the name server as `example.callback`, then serves until Ctrl-C.
//!
//! Needs a running name server: start `cargo run -p rmi-cli --bin rmi-ns` first, then this, then
//! `cargo run --example callback_client`. The name server is found through
//! `NsLocator::from_env()`, so `RMI_NS_HOST`/`RMI_NS_PORT` are honoured.
//! `cargo run --example callback` shows the same in one process.
//!
//! The name is registered under a lease this process keeps alive, as the tutorial server's:
//! it goes at once on Ctrl-C (or SIGTERM, SIGHUP), and within the lease's TTL if the process
//! is killed. (Python's name servers have no leases: there it is registered plainly, and still
//! goes on Ctrl-C.)

#[path = "common/callback.rs"]
mod callback;
#[path = "common/stop.rs"]
mod stop;

use callback::{CallbackServer, NotifierServer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await?;
    // Heard from before the name is registered, so that a stop asked for meanwhile removes
    // it too.
    let stop_asked = stop::stop_asked()?;
    let ns = rmi::naming::NsLocator::from_env()?.locate().await?;
    let uri = daemon.register(NotifierServer::new(CallbackServer))?;
    let names = ns.lease(rmi::naming::DEFAULT_LEASE_TTL).await?;
    names.register("example.callback", &uri).await?;
    println!("Server ready. Object uri = {uri}, registered as example.callback");
    let stop = daemon.clone();
    tokio::spawn(async move {
        stop_asked.await;
        // The name first, while the daemon still serves whoever looked it up.
        if let Err(e) = names.revoke().await {
            eprintln!("could not remove the name: {e}");
        }
        stop.shutdown();
    });
    Ok(daemon.serve().await?)
}
