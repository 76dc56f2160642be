//! Autoclean: the name server probes where its names point and removes those no daemon
//! answers at for a while (Pyro's `NS_AUTOCLEAN`).
//!
//! As Pyro's: every [`interval`](Autoclean::interval), each entry's location is probed with a
//! plain connect (TCP, or a Unix socket), and an entry whose location has refused or not
//! answered for [`unreachable_for`](Autoclean::unreachable_for) is removed. Unlike Pyro's, an
//! entry held by a lease is left to its lease (a daemon that keeps it alive is alive), one
//! entry of a shared name goes alone, a name registered again at another URI meanwhile is
//! kept, a location is probed once more just before its entries go, and each location is
//! probed once a round however many names point at it, a few at a time.
//!
//! What it cannot tell: a probe is made from the name server's host, so a daemon it cannot
//! reach (behind NAT, bound to an address only its clients route to) is removed although its
//! clients reach it; a name server sharing an etcd store with others removes for all of them
//! what it alone cannot reach. A registry whose whole listing is over `max_reply_bytes` is not
//! cleaned (a warning says so each round). As Pyro's, it connects wherever a client
//! registered a name pointing, which tells that client whether the name server reaches it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::StreamExt;
use rmi_core::uri::Location;
use rmi_core::Uri;
use tokio::time::Instant;

use crate::registry::{Registry, NAME_SERVER_NAME};

/// Locations probed at once.
const PROBES_AT_ONCE: usize = 32;

/// Settings of the autoclean (see
/// [`NameServerBuilder::autoclean`](crate::NameServerBuilder::autoclean)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Autoclean {
    /// How often every location is probed (Pyro's `NS_AUTOCLEAN`, which must be 3 s or more).
    pub interval: Duration,
    /// How long a location must stay unreachable before its entries are removed (Pyro: 20 s).
    pub unreachable_for: Duration,
    /// The longest one probe (a connect) may take (Pyro: `COMMTIMEOUT`, or 5 s).
    pub probe_timeout: Duration,
}

impl Autoclean {
    /// Probing every `interval`, with Pyro's other settings: removed after 20 s unreachable,
    /// 5 s per probe.
    pub fn every(interval: Duration) -> Self {
        Autoclean {
            interval,
            unreachable_for: Duration::from_secs(20),
            probe_timeout: Duration::from_secs(5),
        }
    }
}

/// Whether a daemon answers at `location` (a connect is made and closed at once).
async fn reachable(location: &Location, timeout: Duration) -> bool {
    let connect = async {
        match location {
            Location::Tcp { host, port } => tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .is_ok(),
            #[cfg(unix)]
            Location::Unix(path) => tokio::net::UnixStream::connect(path).await.is_ok(),
            #[cfg(not(unix))]
            Location::Unix(_) => false,
        }
    };
    tokio::time::timeout(timeout, connect)
        .await
        .unwrap_or(false)
}

/// Whether a daemon answers at each of `locations` (each probed once, a few at a time).
async fn probe<'a>(
    locations: impl Iterator<Item = &'a Location>,
    timeout: Duration,
) -> HashMap<Location, bool> {
    let locations: HashSet<Location> = locations.cloned().collect();
    futures_util::stream::iter(locations)
        .map(|location| async move {
            let up = reachable(&location, timeout).await;
            (location, up)
        })
        .buffer_unordered(PROBES_AT_ONCE)
        .collect()
        .await
}

/// Runs the autoclean over `registry` until the task is aborted.
pub(crate) async fn run(registry: Registry, settings: Autoclean) {
    // Since when each (name, URI) has been unreachable.
    let mut unreachable: HashMap<(String, String), Instant> = HashMap::new();
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        // All of them, however many: a listing held to max_reply_bytes would stop the
        // autoclean of a large registry altogether.
        let entries = match registry.all_entries().await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %e, "autoclean: cannot list the names; nothing is cleaned");
                continue;
            }
        };
        let entries: Vec<(String, Uri, bool)> = entries
            .into_iter()
            .filter(|(name, entry)| name != NAME_SERVER_NAME && entry.lease.is_none())
            .map(|(name, entry)| (name, entry.uri, entry.shared))
            .collect();
        let answered = probe(
            entries.iter().filter_map(|(_, uri, _)| uri.location()),
            settings.probe_timeout,
        )
        .await;
        let now = Instant::now();
        let mut seen = HashSet::new();
        // The entries unreachable for long enough, to be removed.
        let mut due = Vec::new();
        for (name, uri, shared) in entries {
            let Some(up) = uri.location().and_then(|l| answered.get(l)) else {
                continue;
            };
            let key = (name, uri.to_string());
            seen.insert(key.clone());
            if *up {
                unreachable.remove(&key);
                continue;
            }
            let since = *unreachable.entry(key.clone()).or_insert(now);
            if now.duration_since(since) < settings.unreachable_for {
                continue;
            }
            unreachable.remove(&key);
            due.push((key.0, uri, shared));
        }
        // The round's probes may be seconds old: the locations of the entries due are asked
        // again just before they go, each once, a few at a time (one after another per entry,
        // a host gone silent with 200 names took 200 probe timeouts, the other names waiting).
        let again = probe(
            due.iter().filter_map(|(_, uri, _)| uri.location()),
            settings.probe_timeout,
        )
        .await;
        for (name, uri, shared) in due {
            let up = uri.location().and_then(|l| again.get(l)).copied();
            if up != Some(false) {
                continue;
            }
            match remove(&registry, &name, &uri, shared).await {
                Ok(true) => tracing::info!(
                    %name, %uri, for_secs = settings.unreachable_for.as_secs_f64(),
                    "autoclean: removed a name no daemon answered for"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(%name, error = %e, "autoclean: cannot remove"),
            }
        }
        // Entries gone (removed, registered again elsewhere) start over if they come back.
        unreachable.retain(|key, _| seen.contains(key));
    }
}

/// Removes `name`'s entry at `uri`, unless it changed meanwhile: a shared entry alone; a plain
/// name only while it still points at `uri` with no lease, checked and removed in one step by
/// the store (a daemon may register it again elsewhere at any moment).
async fn remove(
    registry: &Registry,
    name: &str,
    uri: &Uri,
    shared: bool,
) -> Result<bool, crate::NamingError> {
    if shared {
        return registry.remove_shared(name, uri).await;
    }
    registry.remove_plain_at(name, uri).await
}
