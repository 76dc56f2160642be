//! The tutorial's server: registers the greeting object in a daemon and its URI in the name
//! server under "server", then serves until Ctrl-C (or SIGTERM, SIGHUP: `kill`, `docker stop`,
//! systemd).
//!
//! Start `cargo run -p rmi-cli --bin rmi-ns` first, or Python's `python -m Pyro4.naming` or
//! `pyro5-ns`. The name server is found as `locate_ns()` does (`RMI_NS_HOST`/`RMI_NS_PORT` are
//! honoured here, since this is a binary).
//!
//! In rmi-ns the name is registered under a lease that this process keeps alive: if it is
//! killed (even with `kill -9`) the name vanishes within the TTL (`RMI_LEASE_TTL` seconds,
//! default 6), on Ctrl-C (or SIGTERM, SIGHUP) it goes at once, and if the name server restarts it is registered
//! again by itself. Python's name servers have no leases: there the name is registered plainly
//! (a warning says so), stays until removed as in Pyro, and still goes on Ctrl-C.

#[path = "common/greeter.rs"]
mod greeter;
#[path = "common/stop.rs"]
mod stop;

use std::time::Duration;

use greeter::{GreeterServer, GreetingMaker};
use rmi::naming::{LeasedNames, NsLocator};

/// Registers the greeting object in `daemon`, and its URI as "server" in the name server that
/// `locator` finds, under a lease of `ttl` (plainly in a name server without leases).
pub(crate) async fn register_greeter(
    daemon: &rmi::Daemon,
    locator: NsLocator,
    ttl: Duration,
) -> anyhow::Result<(rmi::Uri, LeasedNames)> {
    let ns = locator.locate().await?;
    let uri = daemon.register(GreeterServer::new(GreetingMaker))?;
    let names = ns.lease(ttl).await?;
    names.register("server", &uri).await?;
    Ok((uri, names))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // (Empty counts as unset.)
    let ttl = match std::env::var("RMI_LEASE_TTL") {
        Ok(secs) if !secs.trim().is_empty() => secs
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .filter(|ttl| !ttl.is_zero())
            .ok_or_else(|| anyhow::anyhow!("RMI_LEASE_TTL={secs:?} is not a number of seconds"))?,
        _ => rmi::naming::DEFAULT_LEASE_TTL,
    };
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await?;
    // Heard from before the name is registered: a stop asked for meanwhile, or by a supervisor
    // as soon as it reads "Ready.", removes the name too.
    let stop_asked = stop::stop_asked()?;
    let (uri, names) = register_greeter(&daemon, NsLocator::from_env()?, ttl).await?;
    println!("Ready. Object uri = {uri}");
    let stop = daemon.clone();
    tokio::spawn(async move {
        stop_asked.await;
        // A clean shutdown: the name goes now, not when the lease runs out, and first, while
        // the daemon still serves whoever looked it up; then the daemon.
        if let Err(e) = names.revoke().await {
            eprintln!("could not remove the name: {e}");
        }
        stop.shutdown();
    });
    daemon.serve().await?;
    Ok(())
}
