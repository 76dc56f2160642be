//! [`LeasedNames`]: a daemon's names held under one lease that a background task keeps alive,
//! registered again by itself when the lease is lost, and removed at once on [`revoke`].
//!
//! This is how a Rust daemon should register: if its process dies (even by `kill -9`) its
//! names vanish within the TTL, instead of pointing at nothing for ever. Names registered with
//! plain [`NameServerProxy::register`] (and by Python clients) stay until removed, as in Pyro.
//!
//! Python's name servers (`pyro5-ns`, `python -m Pyro4.naming`) have no leases: they answer
//! `lease_grant` with an `AttributeError`. Against them [`NameServerProxy::lease`] falls back to
//! plain registration, with a `tracing` warning: the names then stay until removed (as in
//! Pyro), [`revoke`] still removes them on a clean shutdown, and nothing runs in the
//! background.
//!
//! [`revoke`]: LeasedNames::revoke

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rmi_core::{Error, Uri};
use tokio::task::JoinHandle;

use crate::registry::LeaseId;
use crate::{NameServerProxy, Truthy};

/// The lease TTL [`NameServerProxy::lease`] callers usually pass: names of a daemon that died
/// vanish within it. Kept alive every third of it.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(6);

/// How many names a recovery registers at once (see `Shared::recover`).
const RECOVER_AT_ONCE: usize = 16;

/// One name as registered, to register it again under a new lease.
#[derive(Debug, Clone)]
struct Held {
    uri: Uri,
    safe: bool,
    metadata: BTreeSet<String>,
    /// Registered as one daemon's entry of a shared name (`register_shared`).
    shared: bool,
}

/// The lease and the names under it.
#[derive(Debug, Default)]
struct Names {
    lease: Option<LeaseId>,
    /// The name server has no lease methods (a Python Pyro name server): names are registered
    /// plainly, and stay until removed.
    plain: bool,
    names: BTreeMap<String, Held>,
    /// Names the last recovery could not register again (another process took a `safe` name,
    /// the name server was full, a call failed): tried again in later keep-alive rounds, each
    /// after a backoff.
    missing: BTreeMap<String, Backoff>,
    /// Names still to be registered plainly after the switch to plain registration (see
    /// `Shared::go_plain`), the last first: left by a caller that stopped waiting part way,
    /// for the keeper's next round.
    plain_todo: Vec<String>,
}

/// When a missing name is tried again: after `wait` more keep-alive rounds; each failure
/// doubles the wait, up to [`Backoff::MAX_ROUNDS`], so a full or refusing name server is not
/// asked about every name every round.
#[derive(Debug, Default, Clone, Copy)]
struct Backoff {
    wait: u32,
    next: u32,
}

impl Backoff {
    /// The longest wait, in keep-alive rounds (a third of the TTL each).
    const MAX_ROUNDS: u32 = 32;

    /// Whether the name is due this round (counting the round down otherwise).
    fn due(&mut self) -> bool {
        if self.wait == 0 {
            return true;
        }
        self.wait -= 1;
        false
    }

    /// One more failed attempt.
    fn failed(&mut self) {
        self.next = (self.next * 2).clamp(1, Self::MAX_ROUNDS);
        self.wait = self.next;
    }
}

#[derive(Debug)]
struct Shared {
    ns: NameServerProxy,
    ttl: Duration,
    /// Held across calls to the name server, so a registration and a recovery never interleave.
    names: tokio::sync::Mutex<Names>,
    /// The current lease, readable without waiting.
    current: parking_lot::Mutex<Current>,
}

/// The lease held now, and whether the holder has been let go (revoked or dropped): a grant
/// answered after that is revoked by its own task (see `Shared::grant`).
#[derive(Debug, Default)]
struct Current {
    lease: Option<LeaseId>,
    closed: bool,
}

/// Names registered under one lease, kept alive in the background at a third of its TTL.
///
/// If the name server loses the lease (it restarted without persistence, or it could not be
/// reached for longer than the TTL), the keeper grants a new one and registers every name again
/// by itself; a name it cannot register then (taken meanwhile by a `safe`-refusing owner, the
/// name server full) is tried again in later keep-alive rounds, with a backoff, until it is.
/// [`revoke`](Self::revoke) on a clean shutdown removes the names at once; dropping
/// it stops the keeper and revokes in the background when a runtime is there to do it. Not at
/// the end of `#[tokio::main]` or a test: the runtime ends right after, before the revoke runs,
/// and the names stay for their TTL (for ever in a Python name server): call `revoke` there.
///
/// ```no_run
/// # async fn example(ns: rmi_naming::NameServerProxy, uri: rmi_core::Uri) -> Result<(), rmi_core::Error> {
/// use rmi_naming::DEFAULT_LEASE_TTL;
/// let names = ns.lease(DEFAULT_LEASE_TTL).await?;
/// names.register("example.greeter", &uri).await?;
/// // ... serve ...
/// names.revoke().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LeasedNames {
    shared: Arc<Shared>,
    /// The keep-alive task (none against a name server without leases). Started again on the
    /// runtime of the holder's next use if the runtime it ran on ended.
    keeper: parking_lot::Mutex<Option<JoinHandle<()>>>,
    /// Revoked already: nothing left to do on drop.
    done: bool,
}

/// A grant's answer not taken yet (see `Shared::grant`): dropped before it is taken (its
/// taker cancelled), it closes the hand-over, so that a lease granted later is revoked by the
/// granting task, and revokes one already in it.
struct Unclaimed {
    answer: tokio::sync::oneshot::Receiver<Result<LeaseId, Error>>,
    shared: Arc<Shared>,
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        self.answer.close();
        if let Ok(Ok(lease)) = self.answer.try_recv() {
            let shared = self.shared.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { shared.revoke_unwanted(lease).await });
            }
        }
    }
}

/// A lost lease comes back from the name server as a naming error (`Error::Resolve`).
fn lease_lost(e: &Error) -> bool {
    matches!(e, Error::Resolve(m) if m.contains("unknown lease"))
}

/// The name server has no lease methods: Python's (Pyro5's and Pyro4's daemons raise
/// `AttributeError` for a method the object lacks, which arrives as [`Error::Remote`] with
/// that class), or an rmi name server from before leases ([`Error::UnknownMethod`]).
fn no_lease_methods(e: &Error) -> bool {
    match e.cause() {
        Error::UnknownMethod { .. } => true,
        Error::Remote(r) => r.type_name == "builtins.AttributeError",
        _ => false,
    }
}

/// Says once, for each holder, that names go without a lease.
fn warn_plain(ns: &Uri, e: &Error) {
    tracing::warn!(
        name_server = %ns,
        error = %e,
        "the name server has no leases (a Python Pyro name server?): names are registered \
         plainly and stay until removed, as in Pyro; they are not kept alive or registered \
         again if the name server loses them",
    );
}

/// The least time a lease's grant is given, however short its TTL.
const GRANT_TIMEOUT_MIN: Duration = Duration::from_secs(1);

impl Shared {
    /// The name server's proxy, with calls bounded by the TTL (at most 10 s): a call slower
    /// than that is too late for the lease anyway.
    fn api(&self) -> crate::NameServerApiProxy {
        self.ns
            .api()
            .with_timeout(self.ttl.min(Duration::from_secs(10)))
    }

    /// Renews `lease`. A keep-alive without an answer within a third of the TTL is given up,
    /// its connection closed, and sent once more at once on a new connection, still within
    /// the TTL: the connection may be one the name server's host dropped without a word
    /// (powered off, a NAT that forgot it), on which every call would time out until TCP gives
    /// up, some fifteen minutes, while the name server expires the lease and its names.
    async fn renew(&self, lease: LeaseId) -> Result<(), Error> {
        let patience = (self.ttl / 3)
            .max(Duration::from_millis(10))
            .min(Duration::from_secs(10));
        let api = self.api();
        let once = || tokio::time::timeout(patience, api.lease_keep_alive(lease.0));
        match once().await {
            Ok(renewed) => return renewed.map(drop),
            Err(_) => {
                tracing::debug!(%lease, "no answer to a keep-alive; trying a new connection");
                self.drop_connection();
            }
        }
        // (A second silence is the caller's to act on: see `after_failure`.)
        once()
            .await
            .unwrap_or(Err(Error::Timeout(patience)))
            .map(drop)
    }

    /// Closes the holder's connection to the name server (its own: see `lease`), so that the
    /// next call dials a new one.
    fn drop_connection(&self) {
        self.ns.api().proxy().close();
    }

    /// After a failed call: a timeout closes the connection (see [`renew`](Self::renew)).
    fn after_failure(&self, e: &Error) {
        if e.is_timeout() {
            self.drop_connection();
        }
    }

    /// Grants a lease and makes it the current one.
    ///
    /// A name server grants a lease once asked, whatever becomes of the asker; a lease nobody
    /// takes is revoked here rather than left to run out its TTL (it, and with `max_leases`
    /// reached, everyone else's chance of one):
    /// - the caller (the keeper, a `register`, [`NameServerProxy::lease`]) is cancelled while
    ///   waiting: the ask runs in a task of its own, which finds its hand-over closed, or the
    ///   caller's [`Unclaimed`] guard finds the lease in it;
    /// - the holder has been let go meanwhile ([`close`](Self::close)): decided under
    ///   `current`'s lock, where `close` takes the lease if it came first.
    async fn grant(self: &Arc<Self>) -> Result<LeaseId, Error> {
        let (handover, answer) = tokio::sync::oneshot::channel();
        let shared = self.clone();
        tokio::spawn(async move {
            let ttl_ms = shared.ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
            // Not held to the TTL, as the keep-alives are (no lease runs yet): a TTL too short
            // for the name server reaches it, and its refusal names the bound.
            let limit = shared.ttl.clamp(GRANT_TIMEOUT_MIN, Duration::from_secs(10));
            let api = shared.ns.api().with_timeout(limit);
            let granted = api.lease_grant(ttl_ms).await.map(LeaseId);
            if let Err(Ok(lease)) = handover.send(granted) {
                shared.revoke_unwanted(lease).await;
            }
        });
        let mut unclaimed = Unclaimed {
            answer,
            shared: self.clone(),
        };
        let lease = (&mut unclaimed.answer)
            .await
            .unwrap_or_else(|_| Err(Error::Closed("the lease grant ended unanswered".into())))?;
        {
            let mut current = self.current.lock();
            if !current.closed {
                current.lease = Some(lease);
                return Ok(lease);
            }
        }
        let shared = self.clone();
        tokio::spawn(async move { shared.revoke_unwanted(lease).await });
        Err(Error::Closed(
            "the lease holder was let go while a lease was being granted".into(),
        ))
    }

    /// Revokes a lease granted to nobody (see [`grant`](Self::grant)).
    async fn revoke_unwanted(&self, lease: LeaseId) {
        if let Err(e) = self.api().lease_revoke(lease.0).await {
            tracing::debug!(%lease, error = %e, "could not revoke a lease granted to nobody");
        }
    }

    /// Marks the holder let go and takes the current lease, for the caller to revoke: from
    /// now on a grant that comes back is revoked by its own task.
    fn close(&self) -> Option<LeaseId> {
        let mut current = self.current.lock();
        current.closed = true;
        current.lease.take()
    }

    /// Registers `name` without a lease (Pyro's `register`), for a name server without leases.
    async fn register_plain(&self, name: &str, held: &Held) -> Result<(), Error> {
        self.api()
            .register(
                name.to_owned(),
                held.uri.clone(),
                Some(Truthy(held.safe)),
                Some(held.metadata.clone()),
            )
            .await
    }

    /// Switches to plain registration (the name server turned out to have no leases) and
    /// registers every name held so far plainly, once (see [`finish_plain`]).
    ///
    /// [`finish_plain`]: Shared::finish_plain
    async fn go_plain(&self, names: &mut Names, why: &Error) {
        warn_plain(self.ns.uri(), why);
        names.plain = true;
        names.lease = None;
        self.current.lock().lease = None;
        names.plain_todo = names.names.keys().cloned().collect();
        self.finish_plain(names).await;
    }

    /// Registers plainly the names still to be (`plain_todo`), under the names' lock, which
    /// a revoke or an unregister waits for. One is ticked off only once its call has ended: a
    /// caller that stops waiting part way (a timeout around a `register`) leaves the rest to
    /// the keeper's next round; a name unregistered (or revoked) meanwhile is skipped.
    async fn finish_plain(&self, names: &mut Names) {
        while let Some(name) = names.plain_todo.last() {
            if let Some(held) = names.names.get(name) {
                if let Err(e) = self.register_plain(name, held).await {
                    tracing::warn!(%name, error = %e, "could not register again");
                }
            }
            names.plain_todo.pop();
        }
    }

    /// Removes the names held plainly, each only while it still points at its URI (a newer
    /// registration of the same name by another process is left alone); returns how many went.
    async fn remove_plain(&self, names: &BTreeMap<String, Held>) -> Result<u32, Error> {
        let mut removed = 0;
        let mut failed = None;
        for (name, held) in names {
            let result = match self.api().lookup(name.clone(), None).await {
                Ok(uri) if uri == held.uri => self
                    .api()
                    .remove(Some(name.clone()), None, None)
                    .await
                    .map(|n| n > 0),
                Ok(_) => Ok(false),
                Err(Error::Resolve(_)) => Ok(false),
                Err(e) => Err(e),
            };
            match result {
                Ok(gone) => removed += u32::from(gone),
                Err(e) => {
                    tracing::warn!(%name, error = %e, "could not remove");
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }

    async fn register_one(&self, lease: LeaseId, name: &str, held: &Held) -> Result<(), Error> {
        if held.shared {
            return self
                .api()
                .register_shared(
                    name.to_owned(),
                    held.uri.clone(),
                    Some(lease.0),
                    Some(held.metadata.clone()),
                )
                .await;
        }
        self.api()
            .register_leased(
                name.to_owned(),
                held.uri.clone(),
                lease.0,
                Some(Truthy(held.safe)),
                Some(held.metadata.clone()),
            )
            .await
    }

    /// Grants a new lease and registers every name again under it. A name that fails is
    /// logged and marked missing, to be tried again in later keep-alive rounds (see [`Backoff`]).
    ///
    /// The names go [`RECOVER_AT_ONCE`] at a time, and the new lease is kept alive meanwhile:
    /// a daemon with many names, one round trip each, far from its name server or behind a
    /// store that syncs each write, could otherwise take longer than the TTL, lose the new
    /// lease part way, and start over, for ever.
    async fn recover(self: &Arc<Self>, names: &mut Names) -> Result<(), Error> {
        let lease = self.grant().await?;
        names.lease = Some(lease);
        // Every name is missing until registered again under the new lease: a recovery cut
        // short (its caller stopped waiting, as a timeout around a `register` does) leaves
        // the rest to the keeper's next rounds instead of losing them.
        names.missing = names
            .names
            .keys()
            .map(|name| (name.clone(), Backoff::default()))
            .collect();
        let todo: Vec<(String, Held)> = names
            .names
            .iter()
            .map(|(name, held)| (name.clone(), held.clone()))
            .collect();
        let results = self.register_all(lease, todo).await;
        let mut again = 0;
        for (name, result) in results {
            match result {
                Ok(()) => {
                    again += 1;
                    names.missing.remove(&name);
                }
                Err(e) if lease_lost(&e) => return Err(e),
                Err(e) => {
                    tracing::warn!(%name, error = %e, "could not register again; will keep trying");
                }
            }
        }
        tracing::info!(%lease, names = again, "lease lost: registered again under a new one");
        Ok(())
    }

    /// Registers `todo` under `lease`, [`RECOVER_AT_ONCE`] at a time, keeping the lease alive
    /// meanwhile; returns each name's result.
    async fn register_all(
        &self,
        lease: LeaseId,
        todo: Vec<(String, Held)>,
    ) -> Vec<(String, Result<(), Error>)> {
        use futures_util::StreamExt;
        let registering = futures_util::stream::iter(todo)
            .map(|(name, held)| async move {
                let result = self.register_one(lease, &name, &held).await;
                (name, result)
            })
            .buffer_unordered(RECOVER_AT_ONCE)
            .collect::<Vec<_>>();
        let keeping = async {
            let period = (self.ttl / 3).max(Duration::from_millis(10));
            loop {
                tokio::time::sleep(period).await;
                if let Err(e) = self.renew(lease).await {
                    tracing::debug!(error = %e, "keep-alive while registering failed");
                }
            }
        };
        tokio::select! {
            results = registering => results,
            () = keeping => unreachable!("keeps the lease alive until the names are registered"),
        }
    }

    /// Tries once more to register the names the last recovery could not, those whose
    /// backoff is over (several at once, the lease kept alive meanwhile, as a recovery).
    async fn retry_missing(&self, names: &mut Names, lease: LeaseId) {
        let mut todo = Vec::new();
        for (name, backoff) in names.missing.iter_mut() {
            if backoff.due() {
                if let Some(held) = names.names.get(name) {
                    todo.push((name.clone(), held.clone()));
                }
            }
        }
        names
            .missing
            .retain(|name, _| names.names.contains_key(name));
        for (name, result) in self.register_all(lease, todo).await {
            match result {
                Ok(()) => {
                    tracing::info!(%name, %lease, "registered again");
                    names.missing.remove(&name);
                }
                // The next round recovers the lease, and every name with it.
                Err(e) if lease_lost(&e) => return,
                Err(e) => {
                    tracing::debug!(%name, error = %e, "still could not register again");
                    if let Some(backoff) = names.missing.get_mut(&name) {
                        backoff.failed();
                    }
                }
            }
        }
    }

    /// One keep-alive round: renew, or recover if the lease is gone.
    async fn keep_alive(self: &Arc<Self>) {
        let mut names = self.names.lock().await;
        if names.plain {
            // Names a caller left unregistered when it stopped waiting (none, usually).
            self.finish_plain(&mut names).await;
            return;
        }
        let result = match names.lease {
            Some(lease) => self.renew(lease).await,
            None => Err(Error::Resolve("unknown lease: none held".into())),
        };
        match result {
            Ok(()) => {
                if let (Some(lease), false) = (names.lease, names.missing.is_empty()) {
                    self.retry_missing(&mut names, lease).await;
                }
            }
            // Another name server answers at that address now, one without leases.
            Err(e) if no_lease_methods(&e) => self.go_plain(&mut names, &e).await,
            Err(e) if lease_lost(&e) => match self.recover(&mut names).await {
                Ok(()) => {}
                Err(e) if no_lease_methods(&e) => self.go_plain(&mut names, &e).await,
                Err(e) => {
                    self.after_failure(&e);
                    names.lease = None;
                    self.current.lock().lease = None;
                    tracing::warn!(error = %e, "could not renew the lease; trying again");
                }
            },
            // The name server is unreachable: keep trying; if it comes back with the lease
            // gone, the next round recovers.
            Err(e) => {
                self.after_failure(&e);
                tracing::warn!(error = %e, "lease keep-alive failed; trying again")
            }
        }
    }
}

impl NameServerProxy {
    /// Grants a lease of `ttl` and returns the holder to register names under it (usually
    /// [`DEFAULT_LEASE_TTL`]); a background task keeps it alive every third of `ttl`. Needs a
    /// tokio runtime: the task runs on the one that calls this, and if that one ends (a
    /// throwaway runtime, a test's), on the one of the holder's next use; until then nothing
    /// keeps the lease alive. The holder talks to the name server over a connection of its own
    /// ([`Proxy::detached`](rmi_core::Proxy::detached)), which it closes and dials again when
    /// a keep-alive goes unanswered for a third of `ttl`.
    ///
    /// A name server without leases (Python's `pyro5-ns` or `python -m Pyro4.naming`, which
    /// answer with an `AttributeError`) is not an error: the holder then registers its names
    /// plainly, where they stay until removed as in Pyro, says so in a `tracing` warning, and
    /// runs no background task ([`LeasedNames::is_leased`] is false).
    pub async fn lease(&self, ttl: Duration) -> Result<LeasedNames, Error> {
        let shared = Arc::new(Shared {
            // A connection of its own: the keeper closes it when a keep-alive goes unanswered
            // (see `renew`), which must not fail the caller's other calls on theirs.
            ns: NameServerProxy::from_proxy(self.api().proxy().detached()),
            ttl,
            names: tokio::sync::Mutex::new(Names::default()),
            current: parking_lot::Mutex::new(Current::default()),
        });
        match shared.grant().await {
            Ok(lease) => shared.names.lock().await.lease = Some(lease),
            Err(e) if no_lease_methods(&e) => {
                warn_plain(self.uri(), &e);
                shared.names.lock().await.plain = true;
                return Ok(LeasedNames {
                    shared,
                    keeper: parking_lot::Mutex::new(None),
                    done: false,
                });
            }
            Err(e) => return Err(e),
        }
        let keeper = spawn_keeper(shared.clone());
        Ok(LeasedNames {
            shared,
            keeper: parking_lot::Mutex::new(Some(keeper)),
            done: false,
        })
    }
}

/// The keep-alive task: a keep-alive every third of the TTL, the first a third from now.
fn spawn_keeper(shared: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let period = (shared.ttl / 3).max(Duration::from_millis(10));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            shared.keep_alive().await;
        }
    })
}

/// Registers `name` plainly (a name server without leases), held from before the call: a
/// registration cut short (its caller cancelled) may have reached the name server, where a
/// plain name stays until removed, so it is removed on revoke as the others are (if it still
/// points at its URI). One that fails is held as before.
async fn register_plain_held(
    shared: &Shared,
    names: &mut Names,
    name: &str,
    held: Held,
) -> Result<(), Error> {
    let before = names.names.insert(name.to_owned(), held.clone());
    let registered = shared.register_plain(name, &held).await;
    if registered.is_err() {
        match before {
            Some(before) => names.names.insert(name.to_owned(), before),
            None => names.names.remove(name),
        };
    }
    registered
}

impl LeasedNames {
    /// The lease's TTL.
    pub fn ttl(&self) -> Duration {
        self.shared.ttl
    }

    /// The lease held now (it changes when a lost lease is replaced); `None` against a name
    /// server without leases.
    pub fn lease(&self) -> Option<LeaseId> {
        self.shared.current.lock().lease
    }

    /// Whether the names are held under a lease; false when the name server has none (a
    /// Python Pyro name server) and they were registered plainly.
    pub async fn is_leased(&self) -> bool {
        self.keeper_running();
        !self.shared.names.lock().await.plain
    }

    /// Starts the keeper again, on this runtime, if the runtime it ran on has ended (the
    /// holder was made on a runtime since dropped: a throwaway one, a test's): its lease
    /// would otherwise expire one TTL later, and every lease a recovery granted after it
    /// (helper-165 #3). The first keep-alive goes a third of the TTL from now; a lease lost
    /// meanwhile is recovered by the call that started it, or by that keep-alive.
    fn keeper_running(&self) {
        let mut keeper = self.keeper.lock();
        if keeper.as_ref().is_some_and(JoinHandle::is_finished)
            && tokio::runtime::Handle::try_current().is_ok()
        {
            *keeper = Some(spawn_keeper(self.shared.clone()));
        }
    }

    /// Registers (or re-registers) `name` for `uri` under the lease, without metadata.
    pub async fn register(&self, name: &str, uri: &Uri) -> Result<(), Error> {
        self.register_with(name, uri, false, BTreeSet::new()).await
    }

    /// Registers `name` for `uri` with metadata tags under the lease; with `safe`, an existing
    /// name is refused.
    pub async fn register_with(
        &self,
        name: &str,
        uri: &Uri,
        safe: bool,
        metadata: BTreeSet<String>,
    ) -> Result<(), Error> {
        let held = Held {
            uri: uri.clone(),
            safe,
            metadata,
            shared: false,
        };
        self.register_held(name, held).await
    }

    /// Registers `uri` as this daemon's entry of the shared name `name`, under the lease:
    /// several daemons serve one name, `PYRONAME:` picks among the live ones, and this entry
    /// goes with this daemon's lease while the others stay. A name registered plainly is
    /// refused. Against a name server without leases or shared names (a Python Pyro name
    /// server) the name is registered plainly instead, replacing any other daemon's entry.
    pub async fn register_shared(
        &self,
        name: &str,
        uri: &Uri,
        metadata: BTreeSet<String>,
    ) -> Result<(), Error> {
        let held = Held {
            uri: uri.clone(),
            safe: false,
            metadata,
            shared: true,
        };
        self.register_held(name, held).await
    }

    async fn register_held(&self, name: &str, held: Held) -> Result<(), Error> {
        self.keeper_running();
        let mut names = self.shared.names.lock().await;
        if names.plain {
            return register_plain_held(&self.shared, &mut names, name, held).await;
        }
        let first = match names.lease {
            Some(lease) => self.shared.register_one(lease, name, &held).await,
            None => Err(Error::Resolve("unknown lease: none held".into())),
        };
        match first {
            Err(e) if no_lease_methods(&e) => {
                self.shared.go_plain(&mut names, &e).await;
                register_plain_held(&self.shared, &mut names, name, held.clone()).await?;
            }
            Err(e) if lease_lost(&e) => match self.shared.recover(&mut names).await {
                Ok(()) => {
                    let lease = names.lease.expect("recovered");
                    self.shared.register_one(lease, name, &held).await?;
                }
                Err(e) if no_lease_methods(&e) => {
                    self.shared.go_plain(&mut names, &e).await;
                    register_plain_held(&self.shared, &mut names, name, held.clone()).await?;
                }
                Err(e) => {
                    // No lease now, as after a failed recovery in a keep-alive round.
                    names.lease = None;
                    self.shared.current.lock().lease = None;
                    return Err(e);
                }
            },
            other => other?,
        }
        names.missing.remove(name);
        // This daemon's entry of a shared name, registered again at another URI (the daemon
        // moved): the old entry is the daemon's no longer, and would stay under the lease,
        // picked by resolvers and failing, until the lease went.
        let moved = names
            .names
            .insert(name.to_owned(), held)
            .filter(|old| old.shared && !names.plain)
            .filter(|old| names.names.get(name).is_some_and(|new| new.uri != old.uri));
        if let Some(old) = moved {
            if let Err(e) = self
                .shared
                .api()
                .remove_shared(name.to_owned(), old.uri.clone())
                .await
            {
                tracing::warn!(%name, uri = %old.uri, error = %e, "could not remove the entry this daemon had before");
            }
        }
        Ok(())
    }

    /// Removes `name` from the name server and from the lease; returns whether it was there.
    /// Only this holder's registration goes: of a shared name, this daemon's entry (the other
    /// daemons' stay); a name another process registered since is left alone.
    pub async fn unregister(&self, name: &str) -> Result<bool, Error> {
        self.keeper_running();
        let mut names = self.shared.names.lock().await;
        let Some(held) = names.names.get(name).cloned() else {
            return Ok(false);
        };
        let removed = if held.shared && !names.plain {
            self.shared
                .api()
                .remove_shared(name.to_owned(), held.uri.clone())
                .await
        } else {
            let one = BTreeMap::from([(name.to_owned(), held)]);
            self.shared.remove_plain(&one).await.map(|n| n > 0)
        };
        // Held until the name server has let it go: on an error it is still kept alive, and
        // a second `unregister` tries again.
        if removed.is_ok() {
            names.names.remove(name);
            names.missing.remove(name);
        }
        removed
    }

    /// The names held.
    pub async fn names(&self) -> Vec<String> {
        self.shared
            .names
            .lock()
            .await
            .names
            .keys()
            .cloned()
            .collect()
    }

    /// Stops keeping the lease alive and revokes it: its names go at once. Returns how many.
    /// Without leases (a Python name server), removes each name that still points at the URI
    /// it was registered for.
    pub async fn revoke(mut self) -> Result<u32, Error> {
        self.done = true;
        if let Some(keeper) = self.keeper.get_mut().take() {
            keeper.abort();
        }
        // Taken once the keeper has let go of the names (aborted, it drops their lock). The
        // current lease, not `names.lease`: a recovery may have granted a new one before it
        // could record it there.
        let mut names = self.shared.names.lock().await;
        names.lease = None;
        let lease = self.shared.close();
        if names.plain {
            let held = std::mem::take(&mut names.names);
            return self.shared.remove_plain(&held).await;
        }
        match lease {
            Some(lease) => self.shared.api().lease_revoke(lease.0).await,
            None => Ok(0),
        }
    }
}

impl Drop for LeasedNames {
    fn drop(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if let Some(keeper) = self.keeper.get_mut().take() {
            keeper.abort();
        }
        // Closed even without a runtime here: a grant under way on one elsewhere then revokes
        // what it gets.
        let lease = self.shared.close();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = self.shared.clone();
        runtime.spawn(async move {
            match lease {
                Some(lease) => {
                    let _ = shared.api().lease_revoke(lease.0).await;
                }
                None => {
                    let mut names = shared.names.lock().await;
                    if names.plain {
                        let held = std::mem::take(&mut names.names);
                        let _ = shared.remove_plain(&held).await;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A missing name is tried at once, then again after skipping 1, 2, 4 … rounds (at most
    /// 32).
    #[test]
    fn a_missing_name_is_tried_again_after_a_growing_number_of_rounds() {
        let mut backoff = Backoff::default();
        let mut tried_at = Vec::new();
        for round in 0..200 {
            if backoff.due() {
                tried_at.push(round);
                backoff.failed();
            }
        }
        let gaps: Vec<u32> = tried_at.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(&gaps[..6], [2, 3, 5, 9, 17, 33]);
        assert!(
            gaps.iter().all(|&g| g <= Backoff::MAX_ROUNDS + 1),
            "{gaps:?}"
        );
    }
}
