//! The tutorial's server: registers the greeting object in a daemon and its URI in the name
//! server under "server", then serves until Ctrl-C.
//!
//! Start `cargo run -p rmi-cli --bin rmi-ns` first. The name server is found as
//! `locate_ns()` does (`RMI_NS_HOST`/`RMI_NS_PORT` are honoured here, since this is a binary).

#[path = "common/greeter.rs"]
mod greeter;

use greeter::{GreeterServer, GreetingMaker};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await?;
    let ns = rmi::naming::NsLocator::from_env()?.locate().await?;
    let uri = daemon.register(GreeterServer::new(GreetingMaker))?;
    ns.register("server", &uri).await?;
    println!("Ready. Object uri = {uri}");
    let stop = daemon.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.shutdown();
    });
    Ok(daemon.serve().await?)
}
