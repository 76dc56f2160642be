//! The storage behind the name server: the [`Store`] trait (names to URIs and metadata tags,
//! leases, a stream of changes), its backends, and [`Registry`], the guarded front the name
//! server object calls.
//!
//! Backends: [`memory`] (the default); with the `sqlite` feature, `sqlite` (embedded
//! persistence); with the `etcd` feature, `etcd` (names in an etcd cluster that several name
//! servers share). The first two serve from the same in-memory state and emulate leases with
//! timers, so they behave alike; the SQLite one writes every change to disk before it answers.
//! The etcd one keeps nothing but the name server's own entry in the process: leases are etcd
//! leases, and a watch is an etcd prefix watch.
//!
//! [`Registry`] checks every request against [`Limits`] before a backend sees it: name and tag
//! sizes, tags per entry, regex length and compiled size (compiled outside any lock, in a small
//! bounded cache). The backends enforce the limits that need their state: entries and leases in
//! total, and the size of a reply.

mod engine;
#[cfg(feature = "etcd")]
pub mod etcd;
mod limits;
pub mod memory;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(test)]
mod suite;

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use rmi_core::Uri;
use serde::{Deserialize, Serialize};

use crate::NamingError;

#[cfg(feature = "etcd")]
pub use etcd::{EtcdOptions, EtcdStore};
pub use limits::Limits;
use limits::PatternCache;
pub use memory::MemoryStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// Name under which the name server registers itself; it cannot be removed.
pub const NAME_SERVER_NAME: &str = "Pyro.NameServer";

/// The id of a lease: names bound to it live as long as it is kept alive. Ids are random and
/// never reused, so a lease from before a name-server restart is never mistaken for a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseId(pub u64);

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// One registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Where the object is.
    pub uri: Uri,
    /// Its metadata tags.
    pub metadata: BTreeSet<String>,
    /// The lease the name lives by; `None` for a name that stays until removed (Pyro's way).
    pub lease: Option<LeaseId>,
    /// One of several entries of a shared name (several daemons behind one name, each with
    /// its own URI); `false` for a plain name, which has exactly one entry.
    #[serde(default)]
    pub shared: bool,
}

impl Entry {
    /// A plain entry without a lease.
    pub fn new(uri: Uri, metadata: BTreeSet<String>) -> Self {
        Entry {
            uri,
            metadata,
            lease: None,
            shared: false,
        }
    }
}

/// Which names an operation applies to.
#[derive(Debug, Clone)]
pub enum NameFilter {
    /// Every name.
    All,
    /// Exactly this name.
    Name(String),
    /// Names starting with this prefix.
    Prefix(String),
    /// Names matching this regex (compiled anchored at the start, like Python's `re.match`).
    Regex(regex::Regex),
}

impl NameFilter {
    /// Whether `name` passes the filter.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NameFilter::All => true,
            NameFilter::Name(n) => n == name,
            NameFilter::Prefix(p) => name.starts_with(p.as_str()),
            NameFilter::Regex(re) => re.is_match(name),
        }
    }
}

/// How long a scan over names (a regex matched against each) runs before it lets other tasks
/// run: a pattern may cost milliseconds a name, and a scan must not stall the lookups and
/// keep-alives of everyone else on its thread.
const SCAN_SLICE: std::time::Duration = std::time::Duration::from_millis(2);

/// Lets other tasks run every [`SCAN_SLICE`] of a long scan.
#[derive(Debug)]
pub(crate) struct Slicer {
    since: std::time::Instant,
}

impl Default for Slicer {
    fn default() -> Self {
        Slicer {
            since: std::time::Instant::now(),
        }
    }
}

impl Slicer {
    /// Called after each step of the scan: yields once the slice is over.
    pub(crate) async fn tick(&mut self) {
        if self.since.elapsed() >= SCAN_SLICE {
            tokio::task::yield_now().await;
            self.since = std::time::Instant::now();
        }
    }
}

/// Which entries a metadata lookup (`yplookup`) returns.
#[derive(Debug, Clone)]
pub enum MetaFilter {
    /// Entries having every one of these tags.
    All(BTreeSet<String>),
    /// Entries having at least one of these tags.
    Any(BTreeSet<String>),
}

impl MetaFilter {
    /// Whether an entry with `metadata` passes the filter.
    pub fn matches(&self, metadata: &BTreeSet<String>) -> bool {
        match self {
            MetaFilter::All(all) => all.is_subset(metadata),
            MetaFilter::Any(any) => !any.is_disjoint(metadata),
        }
    }
}

/// A change to the registry, as a watch sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A name was registered or re-registered, or its metadata was replaced; the new entry.
    Registered {
        /// The name.
        name: String,
        /// Its entry now.
        entry: Entry,
    },
    /// An entry was removed, by a `remove` or by revoking its lease (one change per entry: a
    /// shared name removed whole gives one for each of its URIs).
    Removed {
        /// The name.
        name: String,
        /// The URI of the entry that went, when the store can tell (a shared name's entries
        /// go one by one); `None`: every entry of the name.
        #[serde(default)]
        uri: Option<Uri>,
    },
    /// An entry went because its lease expired (its holder stopped keeping it alive).
    Expired {
        /// The name.
        name: String,
        /// The lease that expired.
        lease: LeaseId,
        /// The URI of the entry that went, when the store can tell; `None`: every entry of the
        /// name bound to that lease.
        #[serde(default)]
        uri: Option<Uri>,
    },
    /// The watcher fell behind and this many changes were dropped; list again to catch up.
    Lagged {
        /// How many changes were missed.
        missed: u64,
    },
}

impl Change {
    /// The name the change is about (`None` for [`Change::Lagged`]).
    pub fn name(&self) -> Option<&str> {
        match self {
            Change::Registered { name, .. }
            | Change::Removed { name, .. }
            | Change::Expired { name, .. } => Some(name),
            Change::Lagged { .. } => None,
        }
    }
}

/// A stream of [`Change`]s, from the moment the watch was made.
pub type Watch = Pin<Box<dyn Stream<Item = Change> + Send + 'static>>;

/// The storage behind the name server. Every backend gives Pyro5's semantics and the same lease
/// behaviour; [`Registry`] validates requests before they get here.
///
/// Names registered without a lease stay until removed. A name bound to a lease goes when the
/// lease is revoked or expires; registering it again (with or without a lease) rebinds it.
///
/// A name holds one plain entry, or one or more shared entries ([`Entry::shared`]: several
/// daemons behind one name), one per URI, never both. A plain registration replaces every
/// entry of the name (with `safe`, it is refused if there is any); a shared one adds its URI
/// or replaces the entry with the same URI, and is refused under a name registered plainly.
/// The refusal of a `lookup_all` of `name`'s `count` entries, over `max_bytes` of a reply.
pub(crate) fn lookup_all_too_large(name: &str, count: usize, max_bytes: usize) -> NamingError {
    NamingError::new(format!(
        "lookup_all of {name}: its {count} entries would exceed the name server's \
         max_reply_bytes ({max_bytes} bytes); lookup answers one of them"
    ))
}

/// Each entry has its own lease. Counts (`count`, `remove`, `max_entries`) are of entries.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Registers `name` for `entry` (bound to `entry.lease` if set, which must be live); with
    /// `safe`, refuses a name already registered. A shared entry ([`Entry::shared`]) joins the
    /// name's other shared entries (replacing one with the same URI); `safe` does not apply.
    async fn register(&self, name: String, entry: Entry, safe: bool) -> Result<(), NamingError>;
    /// Every entry of `name` (one for a plain name), never empty: an unknown name is an error.
    async fn lookup_all(&self, name: &str) -> Result<Vec<Entry>, NamingError>;
    /// One entry of `name`: a shared name's picked at random. (A store that holds entries in
    /// memory copies that one alone: a shared name may have many, each with metadata.)
    async fn lookup_one(&self, name: &str) -> Result<Entry, NamingError> {
        let mut all = self.lookup_all(name).await?;
        if all.is_empty() {
            return Err(NamingError::new(format!("unknown name: {name}")));
        }
        let at = rand::random_range(0..all.len());
        Ok(all.swap_remove(at))
    }
    /// [`lookup_all`](Self::lookup_all), refused (naming `max_reply_bytes`) when the entries
    /// would not fit in `max_bytes` of a reply (a store that holds them in memory refuses
    /// before it copies them).
    async fn lookup_all_within(
        &self,
        name: &str,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, NamingError> {
        let all = self.lookup_all(name).await?;
        let size: usize = all.iter().map(|e| engine::reply_size(name, e)).sum();
        if size > max_bytes {
            return Err(lookup_all_too_large(name, all.len(), max_bytes));
        }
        Ok(all)
    }
    /// The names passing `filter`, in name order, with their entries (a shared name once per
    /// entry).
    async fn list(&self, filter: &NameFilter) -> Result<Vec<(String, Entry)>, NamingError>;
    /// Every entry (a shared name once per entry), however many: for the name server's own
    /// work (autoclean), which sends them nowhere. What answers a client is held to
    /// `max_reply_bytes`.
    async fn all_entries(&self) -> Result<Vec<(String, Entry)>, NamingError>;
    /// Removes the names passing `filter` (every entry of each), never the name server's own;
    /// returns how many entries went.
    async fn remove(&self, filter: &NameFilter) -> Result<u32, NamingError>;
    /// Removes the one shared entry of `name` for `uri` (one daemon of several), leaving the
    /// others; returns whether it was there. A plain entry is never removed by this.
    async fn remove_shared(&self, name: &str, uri: &Uri) -> Result<bool, NamingError>;
    /// Removes the plain name `name` only while it still points at `uri` and lives by no
    /// lease, checked and removed in one step; returns whether it went. A name registered
    /// again meanwhile (elsewhere, or under a lease) stays, and a shared name is never removed
    /// by this. What autoclean removes.
    async fn remove_plain_at(&self, name: &str, uri: &Uri) -> Result<bool, NamingError>;
    /// Replaces the metadata of `name` (of every entry of a shared name).
    async fn set_metadata(&self, name: &str, metadata: BTreeSet<String>)
        -> Result<(), NamingError>;
    /// The entries passing `filter`, in name order.
    async fn yplookup(&self, filter: &MetaFilter) -> Result<Vec<(String, Entry)>, NamingError>;
    /// Number of entries, the name server's own included.
    async fn count(&self) -> Result<u32, NamingError>;
    /// The changes from now on.
    fn watch(&self) -> Watch;
    /// Grants a lease that lives `ttl` unless kept alive; returns its id.
    async fn grant(&self, ttl: Duration) -> Result<LeaseId, NamingError>;
    /// Renews `lease` for its full TTL; returns the TTL. An unknown or expired lease is an error
    /// (its holder should grant a new one and register its names again).
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, NamingError>;
    /// Ends `lease` now and removes its names; returns how many. An unknown lease removes none.
    async fn revoke(&self, lease: LeaseId) -> Result<u32, NamingError>;
}

/// Where the name server keeps its names; parsed from `--storage` values as pyro5-ns's `-s`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Storage {
    /// In memory (the default): names go when the process does.
    #[default]
    Memory,
    /// In an SQLite database file (`sql:PATH`), which survives restarts and crashes.
    Sql(std::path::PathBuf),
    /// In an etcd cluster (`etcd:HOST:PORT[,HOST:PORT…]`), shared by every name server over it;
    /// needs the `etcd` feature.
    Etcd(Vec<String>),
}

impl std::str::FromStr for Storage {
    type Err = NamingError;

    fn from_str(s: &str) -> Result<Self, NamingError> {
        if s == "memory" {
            Ok(Storage::Memory)
        } else if let Some(path) = s.strip_prefix("sql:") {
            if path.is_empty() {
                return Err(NamingError::new("storage sql:PATH needs a file path"));
            }
            Ok(Storage::Sql(path.into()))
        } else if let Some(endpoints) = s.strip_prefix("etcd:") {
            let endpoints: Vec<String> = endpoints.split(',').map(str::to_owned).collect();
            if endpoints.iter().any(|e| {
                e.rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            }) {
                return Err(NamingError::new(format!(
                    "storage {s:?}: etcd endpoints are HOST:PORT[,HOST:PORT…]"
                )));
            }
            Ok(Storage::Etcd(endpoints))
        } else {
            Err(NamingError::new(format!(
                "unknown storage {s:?}: expected memory, sql:PATH or etcd:HOST:PORT[,HOST:PORT…]"
            )))
        }
    }
}

impl Storage {
    /// Opens the store this names, with `limits`.
    pub async fn open(&self, limits: Limits) -> Result<Arc<dyn Store>, NamingError> {
        match self {
            Storage::Memory => Ok(Arc::new(MemoryStore::new(limits))),
            #[cfg(feature = "sqlite")]
            Storage::Sql(path) => Ok(Arc::new(SqliteStore::open(path, limits).await?)),
            #[cfg(not(feature = "sqlite"))]
            Storage::Sql(_) => Err(NamingError::new(
                "the SQLite backend is not built: enable the `sqlite` feature of rmi (rmi-naming)",
            )),
            #[cfg(feature = "etcd")]
            Storage::Etcd(endpoints) => Ok(Arc::new(EtcdStore::connect(endpoints, limits).await?)),
            #[cfg(not(feature = "etcd"))]
            Storage::Etcd(endpoints) => Err(NamingError::new(format!(
                "the etcd backend is not built (asked for etcd at {}): rebuild with \
                 `--features etcd` (the `etcd` feature of rmi-cli, rmi or rmi-naming; building \
                 it needs protoc)",
                endpoints.join(",")
            ))),
        }
    }
}

/// The name server's registry: a [`Store`] behind checks of every request against [`Limits`].
/// Cheap to clone; clones share the store.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
    limits: Limits,
    patterns: Arc<PatternCache>,
    /// Lookups served (`lookup`, `lookup_all`, `yplookup`), shared by clones.
    lookups: Arc<AtomicU64>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::memory(Limits::default())
    }
}

impl Registry {
    /// A registry over `store`, checking requests against `limits` (give the store the same).
    pub fn new(store: Arc<dyn Store>, limits: Limits) -> Self {
        Registry {
            store,
            limits,
            patterns: Arc::new(PatternCache::default()),
            lookups: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A registry in memory.
    pub fn memory(limits: Limits) -> Self {
        Registry::new(Arc::new(MemoryStore::new(limits.clone())), limits)
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The limits requests are checked against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How many lookups this registry (and its clones) served: `lookup`, `lookup_all` and
    /// `yplookup` calls, answered or not. Shows how often clients came to the name server.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// Registers `name` for `uri` with `metadata`, bound to `lease` if given; with `safe`,
    /// refuses a name already registered. This is Pyro's `register`: the name gets this one
    /// entry, replacing any others.
    pub async fn register(
        &self,
        name: &str,
        uri: Uri,
        safe: bool,
        metadata: BTreeSet<String>,
        lease: Option<LeaseId>,
    ) -> Result<(), NamingError> {
        let entry = self.entry(name, uri, metadata, lease, false)?;
        self.store.register(name.to_owned(), entry, safe).await
    }

    /// Adds `uri` to the daemons serving the shared name `name` (or updates its entry), with
    /// `metadata`, bound to `lease` if given. Refused if `name` is registered plainly.
    pub async fn register_shared(
        &self,
        name: &str,
        uri: Uri,
        metadata: BTreeSet<String>,
        lease: Option<LeaseId>,
    ) -> Result<(), NamingError> {
        let entry = self.entry(name, uri, metadata, lease, true)?;
        self.store.register(name.to_owned(), entry, false).await
    }

    fn entry(
        &self,
        name: &str,
        uri: Uri,
        metadata: BTreeSet<String>,
        lease: Option<LeaseId>,
        shared: bool,
    ) -> Result<Entry, NamingError> {
        self.limits.check_name(name)?;
        if name == NAME_SERVER_NAME && (lease.is_some() || shared) {
            // Its lease's end, or the shared entries' removal, would take the name server's
            // own entry, which nothing else removes.
            return Err(NamingError::new(format!(
                "{NAME_SERVER_NAME} cannot be registered under a lease or shared"
            )));
        }
        let text = uri.to_string();
        // The length first: the refusals below quote the URI.
        self.limits.check_uri(&text)?;
        if !uri.is_direct() {
            return Err(NamingError::new(format!(
                "only PYRO: uris can be registered, not {uri}"
            )));
        }
        // A URI that arrived as Pyro's class dict was built from its parts, unchecked: one
        // whose text does not read back as itself (an object id with a space or an `@`, an
        // empty host) would be listed to no client's use and, stored, keep the SQLite store
        // from opening again.
        if text.parse::<Uri>().ok().as_ref() != Some(&uri) {
            return Err(NamingError::new(format!(
                "invalid uri {text:?}: it does not read back as the same uri"
            )));
        }
        self.limits.check_tags(&metadata, "metadata")?;
        Ok(Entry {
            uri,
            metadata,
            lease,
            shared,
        })
    }

    /// The entry of `name`; of a shared name, one of its entries picked at random.
    pub async fn lookup(&self, name: &str) -> Result<Entry, NamingError> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        self.store.lookup_one(name).await
    }

    /// Every entry of `name`: one for a plain name, one per daemon for a shared one. Refused,
    /// like `list`, if they would not fit in `max_reply_bytes`.
    pub async fn lookup_all(&self, name: &str) -> Result<Vec<Entry>, NamingError> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let all = self
            .store
            .lookup_all_within(name, self.limits.max_reply_bytes)
            .await?;
        if all.is_empty() {
            return Err(NamingError::new(format!("unknown name: {name}")));
        }
        Ok(all)
    }

    /// Names with their entries, filtered by prefix or by regex (not both).
    pub async fn list(
        &self,
        prefix: Option<&str>,
        regex: Option<&str>,
    ) -> Result<Vec<(String, Entry)>, NamingError> {
        let filter = match (prefix, regex) {
            (Some(_), Some(_)) => {
                return Err(NamingError::new("filter on prefix or on regex, not both"))
            }
            (Some(prefix), None) => NameFilter::Prefix(prefix.to_owned()),
            (None, Some(regex)) => NameFilter::Regex(self.compile(regex)?),
            (None, None) => NameFilter::All,
        };
        self.store.list(&filter).await
    }

    /// Removes this daemon's entry (`uri`) of the shared name `name`, leaving the other
    /// daemons'; returns whether it was there.
    pub async fn remove_shared(&self, name: &str, uri: &Uri) -> Result<bool, NamingError> {
        self.limits.check_name(name)?;
        self.store.remove_shared(name, uri).await
    }

    /// Every entry, however many (see [`Store::all_entries`]): for the name server's own work,
    /// which sends them nowhere.
    pub async fn all_entries(&self) -> Result<Vec<(String, Entry)>, NamingError> {
        self.store.all_entries().await
    }

    /// Removes the plain name `name` only while it still points at `uri` and lives by no
    /// lease, in one step (see [`Store::remove_plain_at`]); returns whether it went.
    pub async fn remove_plain_at(&self, name: &str, uri: &Uri) -> Result<bool, NamingError> {
        self.limits.check_name(name)?;
        if name == NAME_SERVER_NAME {
            return Ok(false);
        }
        self.store.remove_plain_at(name, uri).await
    }

    /// Removes by exact name, else by prefix, else by regex; returns how many went. The name
    /// server's own entry is never removed.
    pub async fn remove(
        &self,
        name: Option<&str>,
        prefix: Option<&str>,
        regex: Option<&str>,
    ) -> Result<u32, NamingError> {
        // As Pyro's: an empty argument is no argument (an empty prefix or regex would match
        // every name).
        let (name, prefix, regex) = (
            name.filter(|a| !a.is_empty()),
            prefix.filter(|a| !a.is_empty()),
            regex.filter(|a| !a.is_empty()),
        );
        // As Pyro's: the name server's own name is passed over (it cannot be removed), and a
        // prefix or regex given with it still applies.
        let name = name.filter(|n| *n != NAME_SERVER_NAME);
        let filter = if let Some(name) = name {
            NameFilter::Name(name.to_owned())
        } else if let Some(prefix) = prefix {
            NameFilter::Prefix(prefix.to_owned())
        } else if let Some(regex) = regex {
            NameFilter::Regex(self.compile(regex)?)
        } else {
            return Ok(0);
        };
        self.store.remove(&filter).await
    }

    /// Replaces the metadata of `name`.
    pub async fn set_metadata(
        &self,
        name: &str,
        metadata: BTreeSet<String>,
    ) -> Result<(), NamingError> {
        self.limits.check_tags(&metadata, "metadata")?;
        self.store.set_metadata(name, metadata).await
    }

    /// Entries whose metadata has all of `meta_all`, or any of `meta_any` (not both; neither
    /// gives nothing). An empty set counts as none given, as in Pyro5 (where it is false).
    pub async fn yplookup(
        &self,
        meta_all: Option<BTreeSet<String>>,
        meta_any: Option<BTreeSet<String>>,
    ) -> Result<Vec<(String, Entry)>, NamingError> {
        let given = |tags: Option<BTreeSet<String>>| tags.filter(|t| !t.is_empty());
        let filter = match (given(meta_all), given(meta_any)) {
            (Some(_), Some(_)) => {
                return Err(NamingError::value_error(
                    "you can't use meta_all or meta_any at the same time",
                ))
            }
            (Some(all), None) => {
                self.limits.check_tags(&all, "meta_all")?;
                MetaFilter::All(all)
            }
            (None, Some(any)) => {
                self.limits.check_tags(&any, "meta_any")?;
                MetaFilter::Any(any)
            }
            (None, None) => return Ok(Vec::new()),
        };
        self.lookups.fetch_add(1, Ordering::Relaxed);
        self.store.yplookup(&filter).await
    }

    /// Number of entries, the name server's own included.
    pub async fn count(&self) -> Result<u32, NamingError> {
        self.store.count().await
    }

    /// The changes from now on.
    pub fn watch(&self) -> Watch {
        self.store.watch()
    }

    /// Grants a lease of `ttl`, which must lie within the limits' lease TTL bounds.
    pub async fn grant(&self, ttl: Duration) -> Result<LeaseId, NamingError> {
        self.limits.check_ttl(ttl)?;
        self.store.grant(ttl).await
    }

    /// Renews `lease` for its full TTL; returns the TTL.
    pub async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, NamingError> {
        self.store.keep_alive(lease).await
    }

    /// Ends `lease` and removes its names; returns how many.
    pub async fn revoke(&self, lease: LeaseId) -> Result<u32, NamingError> {
        self.store.revoke(lease).await
    }

    /// Compiles a Pyro-style pattern within the regex limits, outside any registry lock.
    fn compile(&self, regex: &str) -> Result<regex::Regex, NamingError> {
        self.patterns.compile(regex, &self.limits)
    }
}
