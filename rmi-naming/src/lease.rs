//! [`LeasedNames`]: a daemon's names held under one lease that a background task keeps alive,
//! registered again by itself when the lease is lost, and removed at once on [`revoke`].
//!
//! This is how a Rust daemon should register: if its process dies (even by `kill -9`) its
//! names vanish within the TTL, instead of pointing at nothing for ever. Names registered with
//! plain [`NameServerProxy::register`] (and by Python clients) stay until removed, as in Pyro.
//!
//! [`revoke`]: LeasedNames::revoke

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rmi_core::{Error, Uri};
use tokio::task::JoinHandle;

use crate::registry::LeaseId;
use crate::NameServerProxy;

/// The lease TTL [`NameServerProxy::lease`] callers usually pass: names of a daemon that died
/// vanish within it. Kept alive every third of it.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(6);

/// One name as registered, to register it again under a new lease.
#[derive(Debug, Clone)]
struct Held {
    uri: Uri,
    safe: bool,
    metadata: BTreeSet<String>,
}

/// The lease and the names under it.
#[derive(Debug, Default)]
struct Names {
    lease: Option<LeaseId>,
    names: BTreeMap<String, Held>,
}

#[derive(Debug)]
struct Shared {
    ns: NameServerProxy,
    ttl: Duration,
    /// Held across calls to the name server, so a registration and a recovery never interleave.
    names: tokio::sync::Mutex<Names>,
    /// The current lease, readable without waiting.
    current: parking_lot::Mutex<Option<LeaseId>>,
}

/// Names registered under one lease, kept alive in the background at a third of its TTL.
///
/// If the name server loses the lease (it restarted without persistence, or it could not be
/// reached for longer than the TTL), the keeper grants a new one and registers every name again
/// by itself. [`revoke`](Self::revoke) on a clean shutdown removes the names at once; dropping
/// it stops the keeper and revokes in the background when a runtime is there to do it.
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
    keeper: Option<JoinHandle<()>>,
}

/// A lost lease comes back from the name server as a naming error (`Error::Resolve`).
fn lease_lost(e: &Error) -> bool {
    matches!(e, Error::Resolve(m) if m.contains("unknown lease"))
}

impl Shared {
    /// The name server's proxy, with calls bounded by the TTL (at most 10 s): a call slower
    /// than that is too late for the lease anyway.
    fn api(&self) -> crate::NameServerApiProxy {
        self.ns
            .api()
            .with_timeout(self.ttl.min(Duration::from_secs(10)))
    }

    async fn grant(&self) -> Result<LeaseId, Error> {
        let ttl_ms = self.ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
        let lease = LeaseId(self.api().lease_grant(ttl_ms).await?);
        *self.current.lock() = Some(lease);
        Ok(lease)
    }

    async fn register_one(&self, lease: LeaseId, name: &str, held: &Held) -> Result<(), Error> {
        self.api()
            .register_leased(
                name.to_owned(),
                held.uri.clone(),
                lease.0,
                Some(held.safe),
                Some(held.metadata.clone()),
            )
            .await
    }

    /// Grants a new lease and registers every name again under it. A name that fails is
    /// logged and left out (its registration is kept, to try again on the next recovery).
    async fn recover(&self, names: &mut Names) -> Result<(), Error> {
        let lease = self.grant().await?;
        names.lease = Some(lease);
        let mut again = 0;
        for (name, held) in &names.names {
            match self.register_one(lease, name, held).await {
                Ok(()) => again += 1,
                Err(e) if lease_lost(&e) => return Err(e),
                Err(e) => tracing::warn!(%name, error = %e, "could not register again"),
            }
        }
        tracing::info!(%lease, names = again, "lease lost: registered again under a new one");
        Ok(())
    }

    /// One keep-alive round: renew, or recover if the lease is gone.
    async fn keep_alive(&self) {
        let mut names = self.names.lock().await;
        let result = match names.lease {
            Some(lease) => self.api().lease_keep_alive(lease.0).await.map(drop),
            None => Err(Error::Resolve("unknown lease: none held".into())),
        };
        match result {
            Ok(()) => {}
            Err(e) if lease_lost(&e) => {
                if let Err(e) = self.recover(&mut names).await {
                    names.lease = None;
                    tracing::warn!(error = %e, "could not renew the lease; trying again");
                }
            }
            // The name server is unreachable: keep trying; if it comes back with the lease
            // gone, the next round recovers.
            Err(e) => tracing::warn!(error = %e, "lease keep-alive failed; trying again"),
        }
    }
}

impl NameServerProxy {
    /// Grants a lease of `ttl` and returns the holder to register names under it (usually
    /// [`DEFAULT_LEASE_TTL`]); a background task keeps it alive every third of `ttl`. Needs a
    /// tokio runtime.
    pub async fn lease(&self, ttl: Duration) -> Result<LeasedNames, Error> {
        let shared = Arc::new(Shared {
            ns: self.clone(),
            ttl,
            names: tokio::sync::Mutex::new(Names::default()),
            current: parking_lot::Mutex::new(None),
        });
        let lease = shared.grant().await?;
        shared.names.lock().await.lease = Some(lease);
        let keeper = tokio::spawn({
            let shared = shared.clone();
            async move {
                let period = (shared.ttl / 3).max(Duration::from_millis(10));
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    shared.keep_alive().await;
                }
            }
        });
        Ok(LeasedNames {
            shared,
            keeper: Some(keeper),
        })
    }
}

impl LeasedNames {
    /// The lease's TTL.
    pub fn ttl(&self) -> Duration {
        self.shared.ttl
    }

    /// The lease held now (it changes when a lost lease is replaced).
    pub fn lease(&self) -> Option<LeaseId> {
        *self.shared.current.lock()
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
        };
        let mut names = self.shared.names.lock().await;
        let first = match names.lease {
            Some(lease) => self.shared.register_one(lease, name, &held).await,
            None => Err(Error::Resolve("unknown lease: none held".into())),
        };
        match first {
            Err(e) if lease_lost(&e) => {
                self.shared.recover(&mut names).await?;
                let lease = names.lease.expect("recovered");
                self.shared.register_one(lease, name, &held).await?;
            }
            other => other?,
        }
        names.names.insert(name.to_owned(), held);
        Ok(())
    }

    /// Removes `name` from the name server and from the lease; returns whether it was there.
    pub async fn unregister(&self, name: &str) -> Result<bool, Error> {
        let mut names = self.shared.names.lock().await;
        names.names.remove(name);
        self.shared.ns.remove(name).await
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
    pub async fn revoke(mut self) -> Result<u32, Error> {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
        }
        let lease = self.shared.names.lock().await.lease.take();
        *self.shared.current.lock() = None;
        match lease {
            Some(lease) => self.shared.api().lease_revoke(lease.0).await,
            None => Ok(0),
        }
    }
}

impl Drop for LeasedNames {
    fn drop(&mut self) {
        let Some(keeper) = self.keeper.take() else {
            return;
        };
        keeper.abort();
        let Some(lease) = self.shared.current.lock().take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let api = self.shared.api();
            runtime.spawn(async move {
                let _ = api.lease_revoke(lease.0).await;
            });
        }
    }
}
