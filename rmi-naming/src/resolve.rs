//! [`NamingResolver`]: resolves `PYRONAME:` and `PYROMETA:` URIs through a name server, choosing
//! among several live daemons ([`Pick`]), passing over daemons a proxy could not reach, and,
//! when asked ([`NamingResolver::cache`]), answering from a client-side cache that a remote
//! watch keeps fresh.
//!
//! # Choosing among daemons
//!
//! A shared name (registered with `register_shared` by several daemons) and a metadata query
//! can match several URIs. The resolver picks one at random ([`Pick::Random`], the default) or
//! in turn ([`Pick::RoundRobin`], per logical URI). A daemon that a proxy failed to dial (it
//! tells the resolver through [`Resolve::dial_failed`]) is passed over for
//! [`NamingResolver::suspect_for`] while another is registered, so a proxy whose daemon died
//! fails over on its next dial. Which calls are retried is the proxy's business, as always:
//! a call that may have run is retried only on an idempotent proxy or method.
//!
//! # Dialing ahead of a lookup
//!
//! A name that resolved to one URI is remembered ([`Resolve::likely`]): the next proxy that
//! resolves it dials that daemon while the lookup is under way, and uses the connection if the
//! lookup answers the same address (and the connection, at most 250 ms old, is still open and
//! silent), so a `PYRONAME:` proxy's first call waits for the lookup and the rest of the
//! connect, not for the dial as well. Nothing is sent on the early connection before the
//! answer; if the name moved, it is closed unused. Not dialed ahead: a name with several URIs
//! (the next pick may be another), one whose last lookup failed, one whose daemon a proxy
//! could not dial (while it is passed over, see above), and any name while the lookup cache is
//! on (a lookup that goes to the name server then mostly follows a change).
//! [`NamingResolver::dial_ahead`] turns it off (`RMI_DIAL_AHEAD=0` for the `rmi` facade's
//! default resolver).
//!
//! # The lookup cache
//!
//! With [`NamingResolver::cache`], the resolver keeps the URIs it looked up, per name server,
//! and opens a remote watch (`watch` on the name server) that drops a cached name whenever it
//! changes. While the watch is open, a cached name is answered without asking the name
//! server, so a run of `connect("PYRONAME:x")` costs one lookup (two when the watch opens
//! after the first; lookups of a name not cached yet that are under way at once each ask,
//! over the one connection). When the watch breaks (the name server stopped or is unreachable), the
//! resolver asks the name server again and, if it cannot be reached, answers from the cache
//! with entries at most `max_stale` old (counted from the moment the watch last vouched for
//! them); older ones, and names never looked up, fail as without a cache. When the watch
//! opens again, the cache is emptied (changes made meanwhile were missed).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use rand::seq::IndexedRandom;
use rmi_core::dispatch::BoxFuture;
use rmi_core::{Error, Resolve, Uri};
use tokio::time::Instant;

use crate::client::missing_method;
use crate::locate::NsLocator;
use crate::registry::Change;
use crate::NameServerProxy;

/// How a resolver chooses among several URIs a logical one names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pick {
    /// One at random, each time (the default; Pyro's choice for `PYROMETA:`).
    #[default]
    Random,
    /// Each in turn, per logical URI, in URI order.
    RoundRobin,
}

/// How long a daemon a proxy could not dial is passed over by default.
pub const DEFAULT_SUSPECT_FOR: Duration = Duration::from_secs(5);

/// How long a lookup may wait for the name server's answer by default
/// ([`NamingResolver::lookup_timeout`]): longer than an etcd-backed name server takes to answer
/// without quorum (half its 10 s retry budget, then a read from any member), shorter than a
/// proxy's default connect timeout, which the resolution counts in.
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(8);

/// How long the lookup cache's watch may go without news before the resolver checks, by
/// default, that the name server still answers on its connection
/// ([`NamingResolver::watch_probe`]).
pub const DEFAULT_WATCH_PROBE: Duration = Duration::from_secs(10);

/// The shortest [`NamingResolver::watch_probe`] is taken as.
pub const MIN_WATCH_PROBE: Duration = Duration::from_millis(100);

/// Resolves logical URIs: `PYRONAME:` by `lookup_all` (a name server without it, such as
/// Pyro's: `lookup`), `PYROMETA:` by `yplookup_entries` (else `yplookup`; Pyro4's name server,
/// which has neither: `list` with `metadata_all`), then picks one of the URIs found (see
/// [`Pick`]). A URI that names its name server (`@host:port`) goes there; otherwise the
/// locator finds one. Lookups reuse the name-server connection the previous one opened.
/// Clones share their round-robin turns, suspects, cache and name-server connections.
#[derive(Debug, Clone, Default)]
pub struct NamingResolver {
    locator: NsLocator,
    pick: Pick,
    suspect_for: Option<Duration>,
    cache: Option<Duration>,
    /// How long a watch may stay silent before it is asked whether it still works.
    watch_probe: Option<Duration>,
    /// How long a lookup may wait for the name server's answer.
    lookup_timeout: Option<Duration>,
    /// How long a name not (yet) registered is looked up again (Pyro's `NS_LOOKUP_DELAY`).
    lookup_delay: Option<Duration>,
    /// Off: proxies do not dial ahead of a lookup (see the module documentation).
    no_dial_ahead: bool,
    state: Arc<State>,
}

/// What clones share.
#[derive(Debug, Default)]
struct State {
    /// Round-robin turns, per logical URI.
    turns: Mutex<HashMap<String, usize>>,
    /// Direct URIs a proxy failed to dial, until when they are passed over.
    suspects: Mutex<HashMap<String, Instant>>,
    /// Per name server (as the logical URI names it): its cache.
    caches: Mutex<HashMap<NsKey, Arc<NsCache>>>,
    /// Per name server: the connected proxy the last lookup used, reused by the next one (a
    /// lookup then costs one round trip, not a connection and a handshake too).
    name_servers: Mutex<HashMap<NsKey, (u64, NameServerProxy)>>,
    /// Numbers the kept connections, so a lookup drops only the one it found failing.
    kept_count: std::sync::atomic::AtomicU64,
    /// Per name server: the turn to locate it, held by the one lookup locating it, with how
    /// the last locating failed (see [`NamingResolver::on_ns`]).
    locating: Mutex<HashMap<NsKey, Arc<LocateTurn>>>,
    /// Per logical URI that last resolved to one URI only: that URI, which a proxy dials while
    /// the next lookup of it is under way ([`Resolve::likely`]).
    likely: Mutex<HashMap<Uri, Uri>>,
}

/// At most this many logical URIs are remembered for [`Resolve::likely`]; past it, the memory
/// starts over (a process that resolves ever new names does not grow it without bound).
const MAX_LIKELY: usize = 1024;

/// At most this many round-robin turns (one per logical URI) are kept.
const MAX_TURNS: usize = 1024;

/// At most this many name servers get a cache (each with its watch task) and a kept
/// connection. Logical URIs can arrive in values from peers, each naming any name server; past
/// this, one is dropped (its watch ends) to make room.
const MAX_NAME_SERVERS: usize = 64;

/// At most this many queries are cached per name server.
const MAX_CACHED: usize = 4096;

/// At most this many daemons are passed over at once (see [`NamingResolver::suspect_for`]);
/// past it, those whose time is over go, then one at random.
const MAX_SUSPECTS: usize = 1024;

/// How long the cache's watch waits before it tries again on a name server that has no
/// `watch` (Python's, an older rmi one): it will not have one two seconds later.
const NO_WATCH_RETRY: Duration = Duration::from_secs(60);

/// Makes room for `key` in `map`, holding at most `max`: when `key` is new and `map` full, one
/// other entry picked at random goes (not the first in the table, which a key put back would
/// take again, so one hot entry would go every time).
fn make_room<K: Eq + std::hash::Hash + Clone, V>(map: &mut HashMap<K, V>, key: &K, max: usize) {
    if map.len() >= max && !map.contains_key(key) {
        let at = rand::random_range(0..map.len());
        if let Some(evicted) = map.keys().nth(at).cloned() {
            map.remove(&evicted);
        }
    }
}

/// A name server as a logical URI names it (`None`: the one the locator finds).
type NsKey = Option<(String, u16)>;

/// The turn to locate one name server: held by the lookup locating it; the others wait for it
/// and take its connection or its failure (see [`NamingResolver::locate_once`]).
#[derive(Debug, Default)]
struct LocateTurn {
    /// How the last locating failed, and which attempt that was.
    failed: tokio::sync::Mutex<Option<(u64, LocateError)>>,
    /// Attempts made so far: a lookup reads it before it waits, so it takes only a failure
    /// that came after.
    attempts: std::sync::atomic::AtomicU64,
}

/// A locating error, kept to be said again to the lookups that waited for it: as it was,
/// where its variant carries only words (which `Error` does not clone), else as a connection
/// that could not be made.
#[derive(Debug)]
enum LocateError {
    Resolve(String),
    ConnectFailed(String),
    UnknownObject(String),
    Closed(String),
    Timeout(Duration),
    Other(String),
}

impl LocateError {
    fn new(e: &Error) -> Self {
        match e.cause() {
            Error::Resolve(m) => LocateError::Resolve(m.clone()),
            Error::ConnectFailed(m) => LocateError::ConnectFailed(m.clone()),
            Error::UnknownObject(m) => LocateError::UnknownObject(m.clone()),
            Error::Closed(m) => LocateError::Closed(m.clone()),
            Error::Timeout(t) => LocateError::Timeout(*t),
            other => LocateError::Other(rmi_core::error::Report(other).to_string()),
        }
    }

    /// The failure again, for a lookup that waited for it.
    fn again(&self) -> Error {
        match self {
            LocateError::Resolve(m) => Error::Resolve(m.clone()),
            LocateError::ConnectFailed(m) => Error::ConnectFailed(m.clone()),
            LocateError::UnknownObject(m) => Error::UnknownObject(m.clone()),
            LocateError::Closed(m) => Error::Closed(m.clone()),
            LocateError::Timeout(t) => Error::Timeout(*t),
            LocateError::Other(m) => {
                Error::ConnectionClosed(format!("locating the name server failed: {m}"))
            }
        }
    }
}

/// Whether a lookup's error may go away by waiting ([`NamingResolver::lookup_delay`]): the
/// name server's "unknown name" (Pyro's words too), no match for `PYROMETA:`, or a timeout.
/// Not a name server that cannot be found or refuses the client (a wrong key, TLS): asked
/// again, it would only count more failed handshakes against the client's address.
fn not_there_yet(e: &Error) -> bool {
    match e {
        Error::Timeout(_) => true,
        Error::Resolve(m) => {
            m.contains("unknown name")
                || m.contains("no object has all")
                || m.contains("nothing registered")
        }
        _ => false,
    }
}

/// The URIs of one cached name or metadata query, and when they were last known current.
#[derive(Debug, Clone)]
struct Cached {
    uris: Vec<Uri>,
    fresh_at: Instant,
    /// The watch vouches for it: it may answer while the watch runs. Not once the watch said
    /// it lagged (it may have missed the change): asked again then, and kept meanwhile to
    /// answer within `max_stale` when the name server cannot be reached.
    vouched: bool,
}

/// The cache for one name server, kept fresh by its watch task.
#[derive(Debug)]
struct NsCache {
    state: Mutex<CacheState>,
    /// Dropped with the cache: ends its watch task.
    _alive: tokio::sync::watch::Sender<()>,
    /// Attempts the watch task has made to open the watch (opened or failed).
    attempts: tokio::sync::watch::Sender<u64>,
    /// The watch task: it ends only with the cache, or with the runtime it runs on.
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl NsCache {
    /// Whether the watch task ended: with the runtime it ran on.
    fn ended(&self) -> bool {
        self.task
            .lock()
            .as_ref()
            .is_some_and(tokio::task::AbortHandle::is_finished)
    }
}

#[derive(Debug, Default)]
struct CacheState {
    names: HashMap<String, Cached>,
    metas: HashMap<BTreeSet<String>, Cached>,
    /// Bumped by every change the watch sees: a lookup that started before one is not cached.
    generation: u64,
    /// The watch is open: cached entries are current.
    watching: bool,
}

impl NamingResolver {
    /// A resolver that finds name servers with `locator`.
    pub fn new(locator: NsLocator) -> Self {
        NamingResolver {
            locator,
            ..NamingResolver::default()
        }
    }

    /// How to choose among several URIs (default [`Pick::Random`]).
    pub fn pick(mut self, pick: Pick) -> Self {
        self.pick = pick;
        self
    }

    /// Choose among several URIs in turn ([`Pick::RoundRobin`]).
    pub fn round_robin(self) -> Self {
        self.pick(Pick::RoundRobin)
    }

    /// How long a daemon that a proxy failed to dial is passed over while others are
    /// registered (default [`DEFAULT_SUSPECT_FOR`]).
    pub fn suspect_for(mut self, duration: Duration) -> Self {
        self.suspect_for = Some(duration);
        self
    }

    /// Whether proxies dial the daemon a name last resolved to while they look it up again
    /// (default on; see the module documentation).
    pub fn dial_ahead(mut self, on: bool) -> Self {
        self.no_dial_ahead = !on;
        self
    }

    /// [`dial_ahead`](Self::dial_ahead) off when the environment variable `RMI_DIAL_AHEAD` is
    /// `0`, `false`, `no` or `off` (how the `rmi` facade's default resolver is set up); on when
    /// it is unset, empty, `1`, `true`, `yes` or `on`; any other value is warned of, and leaves
    /// it on.
    pub fn dial_ahead_from_env(self) -> Self {
        let var = std::env::var("RMI_DIAL_AHEAD").ok();
        let on = switch(var.as_deref()).unwrap_or_else(|| {
            tracing::warn!(
                value = var.as_deref().unwrap_or_default(),
                "RMI_DIAL_AHEAD is not one of 0, false, no, off, 1, true, yes, on: dialing ahead"
            );
            true
        });
        self.dial_ahead(on)
    }

    /// Answer lookups from a client-side cache kept fresh by a watch on the name server; when
    /// the name server cannot be reached, answer from entries at most `max_stale` old (see the
    /// module documentation). Off by default: every resolution asks the name server.
    pub fn cache(mut self, max_stale: Duration) -> Self {
        self.cache = Some(max_stale);
        self
    }

    /// How long a lookup may wait for the name server's answer (default
    /// [`DEFAULT_LOOKUP_TIMEOUT`]). Past it the connection the lookup used is dropped (it may
    /// have died without a word: the next lookup locates the name server again) and the lookup
    /// fails as with the name server down: the cache answers stale, if it may.
    ///
    /// Finding the name server when there is no connection to it yet is the locator's: each
    /// of its tries (localhost, the broadcast, the address the broadcast gave) is bounded by
    /// its [`connect_timeout`](NsLocator::connect_timeout), not by this. For a lookup that
    /// fails fast whatever the cause, give the locator a short `connect_timeout` too.
    pub fn lookup_timeout(mut self, timeout: Duration) -> Self {
        self.lookup_timeout = Some(timeout);
        self
    }

    /// How long a name that is not registered (yet) is looked up again before its lookup
    /// fails: Pyro's `NS_LOOKUP_DELAY` (default none: it fails at once). For clients that may
    /// start before the server registers its name. As in Pyro, a lookup the name server
    /// answers with "unknown name" (or nothing, for `PYROMETA:`), or that times out, is made
    /// again, every fifth of the delay (at least every 200 ms), until the delay has passed;
    /// then its error is the last one. A name server that cannot be found or refuses the
    /// client fails at once. A proxy bounds its resolving by its `connect_timeout` (default
    /// 10 s): give a longer one for a longer delay.
    pub fn lookup_delay(mut self, delay: Duration) -> Self {
        self.lookup_delay = Some(delay);
        self
    }

    /// How long the cache's watch may go without news before the resolver pings the name
    /// server on the watch's connection (default [`DEFAULT_WATCH_PROBE`]). A connection can
    /// die without a word (the name server's host lost power, a NAT or firewall forgot an idle
    /// connection): its watch then reports nothing ever again, and would vouch for cached
    /// entries for good. A ping unanswered within the [`lookup_timeout`](Self::lookup_timeout)
    /// breaks the watch, so cached entries are vouched for at most this plus that timeout after
    /// the last sign of life; then they age as when the name server is down, and the watch is
    /// opened again. At least [`MIN_WATCH_PROBE`]: a zero would ping the name server in a
    /// loop, about every millisecond for each name server cached.
    pub fn watch_probe(mut self, after: Duration) -> Self {
        self.watch_probe = Some(after.max(MIN_WATCH_PROBE));
        self
    }

    /// Whether the cache for the name server `uri` names (`PYRONAME:x@host:port`, or the one
    /// the locator finds) has its watch open: cached entries are then current. `false`
    /// without a cache, before the first lookup, and while the name server is unreachable.
    pub fn cache_watching(&self, uri: &Uri) -> bool {
        let ns = match uri {
            Uri::PyroName { ns, .. } | Uri::PyroMeta { ns, .. } => ns.clone(),
            Uri::Pyro { .. } => None,
        };
        let cache = self.state.caches.lock().get(&ns).cloned();
        cache.is_some_and(|c| c.state.lock().watching && !c.ended())
    }

    fn locator_for(&self, ns: &NsKey) -> NsLocator {
        match ns {
            Some((host, port)) => self.locator.clone().host(host.clone()).port(*port),
            None => self.locator.clone(),
        }
    }

    /// Resolves `uri` to a direct `PYRO:` URI (waiting up to the
    /// [`lookup_delay`](Self::lookup_delay) for a name not registered yet).
    pub async fn resolve_uri(&self, uri: &Uri) -> Result<Uri, Error> {
        if let Uri::Pyro { .. } = uri {
            return Ok(uri.clone());
        }
        // (A delay too long to represent waits as long as it can.)
        let until = self.lookup_delay.map(|delay| {
            let until = Instant::now()
                .checked_add(delay)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365 * 30));
            (until, delay)
        });
        loop {
            let found = self.found(uri).await;
            if self.remembers() {
                self.remember(uri, found.as_deref().unwrap_or_default());
            }
            let chosen = found.and_then(|found| {
                self.choose(uri, found)
                    .ok_or_else(|| Error::Resolve(format!("nothing registered for {uri}")))
            });
            match (chosen, until) {
                (Err(e), Some((until, delay))) if not_there_yet(&e) && Instant::now() < until => {
                    let pause = (delay / 5).max(Duration::from_millis(200));
                    tokio::time::sleep(pause.min(until - Instant::now())).await;
                }
                (chosen, _) => return chosen,
            }
        }
    }

    /// Whether this resolver keeps what names resolved to, for [`Resolve::likely`].
    fn remembers(&self) -> bool {
        !self.no_dial_ahead && self.cache.is_none()
    }

    /// Every URI the logical `uri` names.
    async fn found(&self, uri: &Uri) -> Result<Vec<Uri>, Error> {
        Ok(match uri {
            Uri::Pyro { .. } => vec![uri.clone()],
            Uri::PyroName { name, ns } => match self.cache {
                Some(max_stale) => {
                    self.cached(ns, Query::Name(name), max_stale, || {
                        self.name_uris(ns, name)
                    })
                    .await?
                }
                None => self.name_uris(ns, name).await?,
            },
            Uri::PyroMeta { tags, ns } => {
                let tags: &BTreeSet<String> = &tags.iter().cloned().collect();
                let uris = match self.cache {
                    Some(max_stale) => {
                        self.cached(ns, Query::Meta(tags), max_stale, || {
                            self.meta_uris(ns, tags)
                        })
                        .await?
                    }
                    None => self.meta_uris(ns, tags).await?,
                };
                if uris.is_empty() {
                    return Err(Error::Resolve(format!(
                        "no object has all of the metadata {tags:?}"
                    )));
                }
                uris
            }
        })
    }

    /// Keeps what `logical` resolved to for [`Resolve::likely`] when that was one URI whose
    /// daemon is not passed over (with several, the next pick may be another daemon: a dial
    /// ahead would be a guess); forgets it otherwise (none, several, or the lookup failed).
    fn remember(&self, logical: &Uri, uris: &[Uri]) {
        // `likely` held while the suspects are looked at: a `dial_failed` in between (which
        // marks the suspect, then forgets the URI here) cannot be undone by this insert.
        let mut likely = self.state.likely.lock();
        let keep = match uris {
            [one] if !self.is_suspect(one) => Some(one),
            _ => None,
        };
        match keep {
            Some(one) if likely.get(logical) == Some(one) => {}
            Some(one) => {
                if likely.len() >= MAX_LIKELY && !likely.contains_key(logical) {
                    likely.clear();
                }
                likely.insert(logical.clone(), one.clone());
            }
            None => {
                likely.remove(logical);
            }
        }
    }

    /// Whether a proxy failed to dial `direct` lately (it is passed over for a while).
    fn is_suspect(&self, direct: &Uri) -> bool {
        let suspects = self.state.suspects.lock();
        !suspects.is_empty()
            && suspects
                .get(&direct.to_string())
                .is_some_and(|until| *until > Instant::now())
    }

    /// Runs `query` on the name server `key` names: over the connection an earlier lookup
    /// opened while it works, else (none yet, or it broke) over a new one, found by the
    /// locator and kept for the next lookup.
    async fn on_ns<T, F, Fut>(&self, key: &NsKey, query: F) -> Result<T, Lookup>
    where
        F: Fn(NameServerProxy) -> Fut,
        Fut: std::future::Future<Output = Result<T, Lookup>>,
    {
        // A lookup is bounded (`lookup_timeout`): a kept connection the name server's host
        // dropped without a word (powered off, a NAT that forgot it) would otherwise hold every
        // lookup until TCP gives up, some fifteen minutes, and with it the cache's stale
        // answers, which only a name server found down gives.
        let limit = self.lookup_limit();
        let query = &query;
        let bounded = move |ns| async move {
            tokio::time::timeout(limit, query(ns))
                .await
                .map_err(|_| Error::Timeout(limit))
        };
        let kept = self.state.name_servers.lock().get(key).cloned();
        if let Some((id, ns)) = kept {
            let forget = || {
                let mut kept = self.state.name_servers.lock();
                // Only that connection: another lookup may have put a new one in its place.
                if kept.get(key).is_some_and(|(k, _)| *k == id) {
                    kept.remove(key);
                }
            };
            match bounded(ns).await {
                // Its store is out of reach, not the name server: another connection to it
                // would get the same.
                Ok(Err(Lookup::Down(e))) if store_down(&e) => return Err(Lookup::Down(e)),
                Ok(Err(Lookup::Down(e))) => {
                    tracing::debug!(error = %e, "the name server connection failed; locating it again");
                    forget();
                }
                // No answer in time: the connection is dropped (the next lookup locates the
                // name server again), and this lookup fails now rather than spend another
                // timeout on locating, so a cache answers stale within one.
                Err(timeout) => {
                    tracing::debug!(error = %timeout, "the name server did not answer; dropping the connection");
                    forget();
                    return Err(Lookup::Down(timeout));
                }
                Ok(answered) => return answered,
            }
        }
        let ns = self.locate_once(key).await.map_err(Lookup::Down)?;
        bounded(ns).await.unwrap_or_else(|t| Err(Lookup::Down(t)))
    }

    /// Locates the name server `key` names and keeps the connection, one lookup at a time: a
    /// burst of lookups that find no connection (the first ones, or all of them after the name
    /// server restarted) would each locate it (a broadcast each, when it has no address) and
    /// open a connection of its own, all but one dropped. A lookup that waited takes the
    /// connection the locating lookup kept, or its failure.
    async fn locate_once(&self, key: &NsKey) -> Result<NameServerProxy, Error> {
        let turn = {
            let mut locating = self.state.locating.lock();
            make_room(&mut locating, key, MAX_NAME_SERVERS);
            locating.entry(key.clone()).or_default().clone()
        };
        use std::sync::atomic::Ordering;
        let seen = turn.attempts.load(Ordering::Acquire);
        let mut last_failure = turn.failed.lock().await;
        if let Some((_, ns)) = self.state.name_servers.lock().get(key).cloned() {
            return Ok(ns);
        }
        // A locating that ended while this lookup waited failed for it too.
        if let Some((_, failed)) = last_failure.as_ref().filter(|(at, _)| *at > seen) {
            return Err(failed.again());
        }
        let located = self.locator_for(key).locate().await;
        let attempt = turn.attempts.fetch_add(1, Ordering::AcqRel) + 1;
        match located {
            Ok(ns) => {
                *last_failure = None;
                let id = self
                    .state
                    .kept_count
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut kept = self.state.name_servers.lock();
                make_room(&mut kept, key, MAX_NAME_SERVERS);
                kept.insert(key.clone(), (id, ns.clone()));
                Ok(ns)
            }
            Err(e) => {
                *last_failure = Some((attempt, LocateError::new(&e)));
                Err(e)
            }
        }
    }

    /// How long a lookup, or the cache's watch ping, may wait for the name server.
    fn lookup_limit(&self) -> Duration {
        self.lookup_timeout.unwrap_or(DEFAULT_LOOKUP_TIMEOUT)
    }

    /// Every URI registered under `name`.
    async fn name_uris(&self, ns: &NsKey, name: &str) -> Result<Vec<Uri>, Lookup> {
        self.on_ns(ns, |ns| Self::name_uris_on(ns, name)).await
    }

    async fn name_uris_on(ns: NameServerProxy, name: &str) -> Result<Vec<Uri>, Lookup> {
        match ns.lookup_all(name).await {
            Ok(all) => Ok(all.into_iter().map(|(u, _)| u).collect()),
            // A name server without `lookup_all` (Pyro's), or a shared name with more daemons
            // than one reply may carry (`max_reply_bytes`): one URI, the name server's pick.
            Err(e)
                if missing_method(&e)
                    || matches!(&e, Error::Resolve(m) if m.contains("max_reply_bytes")) =>
            {
                ns.lookup(name)
                    .await
                    .map(|u| vec![u])
                    .map_err(Lookup::from_call)
            }
            Err(e) => Err(Lookup::from_call(e)),
        }
    }

    /// Every URI whose metadata has all of `tags`.
    async fn meta_uris(&self, ns: &NsKey, tags: &BTreeSet<String>) -> Result<Vec<Uri>, Lookup> {
        self.on_ns(ns, |ns| Self::meta_uris_on(ns, tags)).await
    }

    async fn meta_uris_on(
        ns: NameServerProxy,
        tags: &BTreeSet<String>,
    ) -> Result<Vec<Uri>, Lookup> {
        match ns.api().yplookup_entries(Some(tags.clone()), None).await {
            Ok(all) => Ok(all.into_iter().map(|(_, u, _)| u).collect()),
            // A Pyro name server (and Pyro4's has no `yplookup` either: its `list`, filtered
            // by metadata, answers the same, see `NameServerProxy::yplookup_all`).
            Err(e) if missing_method(&e) => ns
                .yplookup_all(tags.iter().cloned())
                .await
                .map(|matches| matches.into_values().map(|(u, _)| u).collect())
                .map_err(Lookup::from_call),
            Err(e) => Err(Lookup::from_call(e)),
        }
    }

    /// One of `uris` for the logical URI `key`: daemons under suspicion passed over while
    /// others remain, then as [`Pick`] says.
    fn choose(&self, query: &Uri, mut uris: Vec<Uri>) -> Option<Uri> {
        // One candidate is the pick whatever the policy and the suspects say (a pool of only
        // suspects is used as it is): no URI is formatted for it, which costs more than the
        // lookup's own call.
        if uris.len() == 1 {
            return uris.pop();
        }
        uris.sort_by_cached_key(Uri::to_string);
        uris.dedup();
        let now = Instant::now();
        let live: Vec<Uri> = {
            let mut suspects = self.state.suspects.lock();
            suspects.retain(|_, until| *until > now);
            uris.iter()
                .filter(|u| !suspects.contains_key(&u.to_string()))
                .cloned()
                .collect()
        };
        let pool = if live.is_empty() { uris } else { live };
        match self.pick {
            Pick::Random => pool.choose(&mut rand::rng()).cloned(),
            Pick::RoundRobin => {
                if pool.is_empty() {
                    return None;
                }
                let mut turns = self.state.turns.lock();
                let key = query.to_string();
                make_room(&mut turns, &key, MAX_TURNS);
                // A name's first turn (or its first since its turn was let go, past
                // `MAX_TURNS` names) is at a random place: at 0, with more names than that in
                // turn, most picks went to each name's first daemon (helper-153 #4).
                let turn = turns
                    .entry(key)
                    .or_insert_with(|| rand::random_range(0..usize::MAX));
                let at = *turn % pool.len();
                *turn = turn.wrapping_add(1);
                Some(pool[at].clone())
            }
        }
    }

    /// The URIs of `query`, from the cache when its watch vouches for them, else from the name
    /// server (`fetch`), else, when the name server cannot be reached, from the cache if at most
    /// `max_stale` old.
    async fn cached<'a, F, Fut>(
        &'a self,
        ns: &NsKey,
        query: Query<'a>,
        max_stale: Duration,
        fetch: F,
    ) -> Result<Vec<Uri>, Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Uri>, Lookup>>,
    {
        let cache = self.ns_cache(ns);
        // The first lookup waits (a bounded while) for the watch to open, so what it caches is
        // kept fresh from the start.
        let mut attempts = cache.attempts.subscribe();
        if *attempts.borrow_and_update() == 0 {
            let _ = tokio::time::timeout(self.locator.timeout(), attempts.changed()).await;
        }
        let generation = {
            let state = cache.state.lock();
            if state.watching {
                if let Some(hit) = query.get(&state).filter(|hit| hit.vouched) {
                    return Ok(hit.uris.clone());
                }
            }
            state.generation
        };
        match fetch().await {
            Ok(uris) => {
                let mut state = cache.state.lock();
                if state.generation == generation {
                    query.put(
                        &mut state,
                        Cached {
                            uris: uris.clone(),
                            fresh_at: Instant::now(),
                            vouched: true,
                        },
                    );
                }
                Ok(uris)
            }
            Err(Lookup::Down(e)) => {
                let state = cache.state.lock();
                match query.get(&state) {
                    Some(stale) if stale.fresh_at.elapsed() <= max_stale => {
                        tracing::debug!(error = %e, "name server unreachable; answering from the cache");
                        Ok(stale.uris.clone())
                    }
                    _ => Err(e),
                }
            }
            // The name server is up and did not confirm what is cached (an unknown name, say):
            // the entry goes, or a later lookup that finds it down would answer from it, and
            // send callers back to a daemon drained on purpose (helper-153 #1).
            Err(Lookup::Answer(e)) => {
                let mut state = cache.state.lock();
                if state.generation == generation {
                    query.remove(&mut state);
                }
                Err(e)
            }
        }
    }

    /// The cache of the name server `ns`, its watch started.
    fn ns_cache(&self, ns: &NsKey) -> Arc<NsCache> {
        let mut caches = self.state.caches.lock();
        if let Some(cache) = caches.get(ns) {
            // A watch task that ended went with the runtime it ran on (a lookup's runtime that
            // was shut down since): its cache can vouch for nothing, and is made again here.
            if !cache.ended() {
                return cache.clone();
            }
            tracing::debug!("the lookup cache's watch ended with its runtime; starting over");
        }
        let (alive, closed) = tokio::sync::watch::channel(());
        let cache = Arc::new(NsCache {
            state: Mutex::new(CacheState::default()),
            _alive: alive,
            attempts: tokio::sync::watch::channel(0).0,
            task: Mutex::new(None),
        });
        let task = tokio::spawn(watch_task(
            self.locator_for(ns),
            (
                self.watch_probe.unwrap_or(DEFAULT_WATCH_PROBE),
                self.lookup_limit(),
            ),
            Arc::downgrade(&cache),
            closed,
        ));
        *cache.task.lock() = Some(task.abort_handle());
        make_room(&mut caches, ns, MAX_NAME_SERVERS);
        caches.insert(ns.clone(), cache.clone());
        cache
    }
}

/// A cached query.
#[derive(Debug, Clone, Copy)]
enum Query<'a> {
    Name(&'a str),
    Meta(&'a BTreeSet<String>),
}

impl Query<'_> {
    fn get<'s>(&self, state: &'s CacheState) -> Option<&'s Cached> {
        match self {
            Query::Name(name) => state.names.get(*name),
            Query::Meta(tags) => state.metas.get(*tags),
        }
    }

    fn remove(&self, state: &mut CacheState) {
        match self {
            Query::Name(name) => {
                state.names.remove(*name);
            }
            Query::Meta(tags) => {
                state.metas.remove(*tags);
            }
        }
    }

    fn put(&self, state: &mut CacheState, cached: Cached) {
        match self {
            Query::Name(name) => {
                let name = (*name).to_owned();
                make_room(&mut state.names, &name, MAX_CACHED);
                state.names.insert(name, cached);
            }
            Query::Meta(tags) => {
                make_room(&mut state.metas, *tags, MAX_CACHED);
                state.metas.insert((*tags).clone(), cached);
            }
        }
    }
}

/// True for the answer of a name server whose store cannot answer (an etcd cluster out of
/// reach): Pyro's `CommunicationError`, as good as down, though its connection is fine.
fn store_down(e: &Error) -> bool {
    matches!(
        e,
        Error::Remote(r) if r.type_name == crate::STORE_UNAVAILABLE
            || r.type_name == "Pyro4.errors.CommunicationError"
    )
}

/// Whether the remote call being served here (this lookup is made for it) has no time left
/// before its caller's deadline.
fn caller_out_of_time() -> bool {
    rmi_core::CallContext::current()
        .and_then(|ctx| ctx.time_left())
        .is_some_and(|left| left.is_zero())
}

/// Why a lookup failed: the name server answered so, or could not be reached.
#[derive(Debug)]
enum Lookup {
    Answer(Error),
    Down(Error),
}

impl Lookup {
    /// A call's failure: the name server's answer, or the name server down. What answers at
    /// its address but is no name server (now) counts as down: a daemon without one ("unknown
    /// object": another process has the port), one refusing the connection, one shutting
    /// down. The kept connection is then dropped, the name server located again, and the
    /// cache may answer, rather than every lookup fail with that answer.
    ///
    /// A timeout once the remote call this lookup is made for (inside a method, or its
    /// `in_scope` work) has no time left is that caller's deadline, which its name-server calls
    /// inherit: an answer, not the name server down. (Counted down, every such lookup dropped
    /// the connection every other lookup shares and located the name server again.)
    fn from_call(e: Error) -> Self {
        if matches!(e, Error::Timeout(_)) && caller_out_of_time() {
            return Lookup::Answer(e);
        }
        if store_down(&e)
            || e.is_communication()
            || matches!(
                e,
                Error::NotSent(_)
                    | Error::UnknownObject(_)
                    | Error::ConnectFailed(_)
                    | Error::Closed(_)
            )
        {
            Lookup::Down(e)
        } else {
            Lookup::Answer(e)
        }
    }
}

impl From<Lookup> for Error {
    fn from(l: Lookup) -> Self {
        match l {
            Lookup::Answer(e) | Lookup::Down(e) => e,
        }
    }
}

/// What a switch's value says: off, on (also unset or empty), or nothing it knows (`None`).
fn switch(value: Option<&str>) -> Option<bool> {
    let v = value.unwrap_or_default().trim();
    let is = |words: &[&str]| words.iter().any(|w| v.eq_ignore_ascii_case(w));
    if is(&["0", "false", "no", "off"]) {
        Some(false)
    } else if v.is_empty() || is(&["1", "true", "yes", "on"]) {
        Some(true)
    } else {
        None
    }
}

/// Keeps `cache` fresh: opens a watch on the name server, drops every name a change touches
/// (and every metadata query), and on a broken watch marks the cache unwatched and opens it
/// again with a backoff. A watch silent for `probe` is asked, by a ping on its connection,
/// whether it still works; no answer within `limit` breaks it. Ends when the
/// cache is dropped.
async fn watch_task(
    locator: NsLocator,
    (probe, limit): (Duration, Duration),
    cache: Weak<NsCache>,
    mut closed: tokio::sync::watch::Receiver<()>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let opened = async {
            let ns: NameServerProxy = locator.locate().await?;
            // Bounded as the locating is: a `watch` whose answer never comes (a connection
            // that died silently after its handshake) would leave the cache unwatched with
            // no retry, and every cached lookup waiting the locator's timeout for the watch
            // to open (helper-153 #3).
            let stream = tokio::time::timeout(locator.timeout(), ns.watch(None))
                .await
                .map_err(|_| Error::Timeout(locator.timeout()))??;
            Ok::<_, Error>((ns, stream))
        };
        let stream = tokio::select! {
            _ = closed.changed() => return,
            s = opened => s,
        };
        let attempted = |cache: &NsCache| cache.attempts.send_modify(|n| *n += 1);
        match stream {
            Ok((ns, mut stream)) => {
                backoff = Duration::from_millis(100);
                {
                    let Some(cache) = cache.upgrade() else { return };
                    let mut state = cache.state.lock();
                    // Changes made while the watch was down were missed.
                    state.names.clear();
                    state.metas.clear();
                    state.generation += 1;
                    state.watching = true;
                    drop(state);
                    attempted(&cache);
                }
                loop {
                    // The pending pull lives in the stream, so a probe loses no change.
                    let item = tokio::select! {
                        _ = closed.changed() => return,
                        item = stream.next() => item,
                        () = tokio::time::sleep(probe) => {
                            match tokio::time::timeout(limit, ns.ping()).await {
                                Ok(Ok(())) => continue,
                                Ok(Err(e)) => Some(Err(e)),
                                Err(_) => Some(Err(Error::Timeout(limit))),
                            }
                        }
                    };
                    let Some(cache) = cache.upgrade() else { return };
                    let mut state = cache.state.lock();
                    match item {
                        Some(Ok(change)) => {
                            state.generation += 1;
                            match change.name() {
                                Some(name) => {
                                    state.metas.clear();
                                    state.names.remove(name);
                                }
                                // The watch lagged (it fell behind, or, on etcd, lost its
                                // store): what it vouched for may have changed unseen. Asked
                                // again, but kept, aging from now, for an outage.
                                None => {
                                    let now = Instant::now();
                                    let state = &mut *state;
                                    for cached in
                                        state.names.values_mut().chain(state.metas.values_mut())
                                    {
                                        if cached.vouched {
                                            cached.vouched = false;
                                            cached.fresh_at = now;
                                        }
                                    }
                                }
                            }
                            if let Change::Lagged { missed } = change {
                                tracing::debug!(missed, "the name server watch lagged");
                            }
                        }
                        end => {
                            if let Some(Err(e)) = end {
                                tracing::debug!(error = %e, "the name server watch broke");
                            }
                            // Entries were current until now; from now on they age.
                            let now = Instant::now();
                            let state = &mut *state;
                            state.watching = false;
                            state.generation += 1;
                            // (Those a lag left unvouched age from then, not from now.)
                            for cached in state.names.values_mut().chain(state.metas.values_mut()) {
                                if cached.vouched {
                                    cached.fresh_at = now;
                                }
                            }
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch the name server; trying again");
                // A name server without watches, or one that refuses this client (a secret
                // it does not share, say: each refusal counts against this host's address),
                // is not asked again every 2 s.
                if missing_method(&e) || matches!(e, Error::ConnectFailed(_)) {
                    backoff = NO_WATCH_RETRY;
                }
                let Some(cache) = cache.upgrade() else { return };
                attempted(&cache);
            }
        }
        tokio::select! {
            _ = closed.changed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

impl Resolve for NamingResolver {
    fn resolve<'a>(&'a self, uri: &'a Uri) -> BoxFuture<'a, Result<Uri, Error>> {
        Box::pin(self.resolve_uri(uri))
    }

    fn dial_failed(&self, logical: &Uri, direct: &Uri) {
        let now = Instant::now();
        // `suspect_for(Duration::MAX)` is "for good": a far instant, not an overflow.
        let until = now
            .checked_add(self.suspect_for.unwrap_or(DEFAULT_SUSPECT_FOR))
            .unwrap_or_else(|| now + Duration::from_secs(u64::from(u32::MAX)));
        tracing::debug!(%logical, %direct, "dial failed; passing over this daemon for a while");
        {
            // Daemons a name server names may come and go for the life of the process, and
            // a hostile one can name a new one at every lookup: the set stays bounded.
            let mut suspects = self.state.suspects.lock();
            let key = direct.to_string();
            if suspects.len() >= MAX_SUSPECTS && !suspects.contains_key(&key) {
                suspects.retain(|_, until| *until > now);
                make_room(&mut suspects, &key, MAX_SUSPECTS);
            }
            suspects.insert(key, until);
        }
        // Not worth dialing ahead of the next lookup.
        let mut likely = self.state.likely.lock();
        if likely.get(logical) == Some(direct) {
            likely.remove(logical);
        }
    }

    fn likely(&self, logical: &Uri) -> Option<Uri> {
        if !self.remembers() {
            return None;
        }
        self.state.likely.lock().get(logical).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zero (or tiny) watch probe is the floor, not a ping in a loop.
    #[test]
    fn a_watch_probe_has_a_floor() {
        for asked in [Duration::ZERO, Duration::from_millis(1)] {
            let resolver = NamingResolver::default().watch_probe(asked);
            assert_eq!(resolver.watch_probe, Some(MIN_WATCH_PROBE));
        }
        let resolver = NamingResolver::default().watch_probe(Duration::from_secs(3));
        assert_eq!(resolver.watch_probe, Some(Duration::from_secs(3)));
    }

    /// Round-robin over more names than the turns kept: each daemon still gets about its share.
    /// (A turn let go started again at the first daemon: 84 % of the picks went to it with
    /// 2,048 names and two daemons each; helper-153 #4.)
    #[test]
    fn round_robin_over_more_names_than_turns_kept_shares_the_picks() {
        let resolver = NamingResolver::default().pick(Pick::RoundRobin);
        let a = Uri::tcp("a", "127.0.0.1", 1);
        let uris = vec![a.clone(), Uri::tcp("b", "127.0.0.1", 2)];
        let (mut to_a, mut picks) = (0, 0);
        for _ in 0..10 {
            for i in 0..(MAX_TURNS * 2) {
                let logical: Uri = format!("PYRONAME:n{i}").parse().unwrap();
                to_a += usize::from(resolver.choose(&logical, uris.clone()) == Some(a.clone()));
                picks += 1;
            }
        }
        let share = to_a as f64 / picks as f64;
        assert!(
            (0.4..=0.6).contains(&share),
            "{:.0} % to the first",
            share * 100.0
        );
    }

    /// Logical URIs can come from peers, each naming any name server and any name: what the
    /// resolver keeps per name server and per logical URI stays bounded, and a name server's
    /// cache that is dropped to make room ends its watch task.
    #[tokio::test]
    async fn what_the_resolver_keeps_per_name_server_and_name_is_bounded() {
        let resolver = NamingResolver::default().pick(Pick::RoundRobin);
        let uris = vec![Uri::tcp("a", "127.0.0.1", 1), Uri::tcp("b", "127.0.0.1", 2)];
        for i in 0..(MAX_TURNS * 2) {
            let logical: Uri = format!("PYRONAME:n{i}").parse().unwrap();
            assert!(resolver.choose(&logical, uris.clone()).is_some());
            assert!(resolver.state.turns.lock().len() <= MAX_TURNS);
        }
        // Turns still alternate for a name asked again.
        let logical: Uri = "PYRONAME:again".parse().unwrap();
        let first = resolver.choose(&logical, uris.clone()).unwrap();
        let second = resolver.choose(&logical, uris.clone()).unwrap();
        assert_ne!(first, second);

        let mut made = Vec::new();
        for port in 1..=(MAX_NAME_SERVERS as u16 * 2) {
            let cache = resolver.ns_cache(&Some(("127.0.0.1".into(), port)));
            let task = cache.task.lock().clone().expect("a watch task");
            made.push((Arc::downgrade(&cache), task));
            assert!(resolver.state.caches.lock().len() <= MAX_NAME_SERVERS);
            // Each watch task starts before the next cache may push its cache out.
            drop(cache);
            tokio::task::yield_now().await;
        }
        // Their watch tasks run a while (each trying its name server, which refuses).
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The caches dropped to make room are gone (their watch tasks hold them weakly, and
        // end when they go); the kept ones live, and so do their tasks.
        let alive = made.iter().filter(|(c, _)| c.upgrade().is_some()).count();
        assert_eq!(alive, MAX_NAME_SERVERS);
        for (cache, task) in &made {
            let kept = cache.upgrade().is_some();
            assert_eq!(
                task.is_finished(),
                !kept,
                "a watch task ends with its cache, and only then (kept: {kept})"
            );
        }
        let mut state = CacheState::default();
        let cached = Cached {
            uris: Vec::new(),
            fresh_at: Instant::now(),
            vouched: true,
        };
        for i in 0..(MAX_CACHED * 2) {
            Query::Name(&format!("n{i}")).put(&mut state, cached.clone());
            Query::Meta(&BTreeSet::from([format!("t{i}")])).put(&mut state, cached.clone());
        }
        assert!(state.names.len() <= MAX_CACHED && state.metas.len() <= MAX_CACHED);
    }

    /// Daemons a proxy failed to dial are passed over, but a process that meets ever new
    /// ones (restarts on new ports, a hostile name server naming a new one at each lookup)
    /// keeps a bounded set; and "for good" (`Duration::MAX`) is a far instant, not a panic.
    #[tokio::test]
    async fn daemons_passed_over_are_bounded_and_may_be_passed_over_for_good() {
        let resolver = NamingResolver::default().suspect_for(Duration::MAX);
        let logical: Uri = "PYRONAME:n".parse().unwrap();
        for port in 0..(MAX_SUSPECTS as u16 * 3) {
            resolver.dial_failed(&logical, &Uri::tcp("o", "127.0.0.1", port));
            assert!(resolver.state.suspects.lock().len() <= MAX_SUSPECTS);
        }
        let last = Uri::tcp("o", "127.0.0.1", MAX_SUSPECTS as u16 * 3 - 1);
        assert!(resolver.is_suspect(&last));
        let live = Uri::tcp("o", "127.0.0.1", 60000);
        assert_eq!(
            resolver.choose(&logical, vec![last, live.clone()]),
            Some(live)
        );
    }

    #[test]
    fn a_switch_is_off_only_when_it_says_so() {
        for off in ["0", "false", "No", " OFF "] {
            assert_eq!(switch(Some(off)), Some(false), "{off:?}");
        }
        for on in [None, Some("1"), Some("yes"), Some(""), Some(" On")] {
            assert_eq!(switch(on), Some(true), "{on:?}");
        }
        // Neither: warned of by its reader (before, silently on: helper-126 #6).
        for unknown in ["offline", "disable", "n"] {
            assert_eq!(switch(Some(unknown)), None, "{unknown:?}");
        }
    }
}
