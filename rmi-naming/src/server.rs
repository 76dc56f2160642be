//! The name server object (`Pyro.NameServer`) and a builder that starts it with its responder.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rmi_core::{Daemon, Error, RemoteStream, Uri};
use rmi_macros::remote;
use tokio::task::JoinHandle;

use crate::broadcast::{BroadcastResponder, DEFAULT_BROADCAST_ADDR, DEFAULT_BROADCAST_PORT};
use crate::registry::{Change, Entry, LeaseId, Limits, Registry, Storage, Store, NAME_SERVER_NAME};
use crate::NamingError;

/// Object id of the name server in its daemon, as in Pyro.
pub const NAME_SERVER_OBJECT_ID: &str = "Pyro.NameServer";

/// The name server's own entry's metadata: its class as Pyro5 and Pyro4 tag theirs (Pyro's
/// examples find a name server by `PYROMETA:class:Pyro5.nameserver.NameServer`), and rmi's.
const NAME_SERVER_TAGS: [&str; 3] = [
    "class:Pyro5.nameserver.NameServer",
    "class:Pyro4.naming.NameServer",
    "class:rmi.NameServer",
];

/// A listing's entries as `list` and `yplookup` answer them, one per name: a shared name's
/// (several daemons behind it) picked at random, so that a Python client's `PYROMETA:`, which
/// picks among the names these return, spreads over its daemons as `PYRONAME:` does.
fn one_per_name<const M: bool, const T: bool>(
    entries: Vec<(String, Entry)>,
    with_metadata: bool,
) -> BTreeMap<String, Found<M, T>> {
    let mut picked: BTreeMap<String, (Entry, u32)> = BTreeMap::new();
    for (name, entry) in entries {
        match picked.entry(name) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert((entry, 1));
            }
            // Each of a name's k entries kept with chance 1/k.
            std::collections::btree_map::Entry::Occupied(mut slot) => {
                let (kept, seen) = slot.get_mut();
                *seen += 1;
                if rand::random_range(0..*seen) == 0 {
                    *kept = entry;
                }
            }
        }
    }
    picked
        .into_iter()
        .map(|(name, (e, _))| (name, Found::new(e.uri, e.metadata, with_metadata)))
        .collect()
}

/// The name server's remote interface, with Pyro5's methods and semantics: plain return
/// values, and failures raised as `Pyro5.errors.NamingError` (so a Python client gets its own
/// exception; a Rust one gets [`Error::Resolve`]). `safe` and `metadata` may be left out, as in
/// Pyro5.
///
/// Most code uses [`NameServerProxy`](crate::NameServerProxy), which wraps the generated
/// `NameServerApiProxy` and turns naming failures into [`Error::Resolve`].
#[remote(crate = ::rmi_core)]
pub trait NameServerApi {
    /// Registers `name` for `uri`; with `safe`, an existing name is refused.
    #[rmi(raises)]
    async fn register(
        &self,
        name: String,
        uri: Uri,
        safe: Option<Truthy>,
        metadata: Option<BTreeSet<String>>,
    ) -> Result<(), NamingError>;
    /// The URI registered under `name`; with `return_metadata` true, its URI and metadata
    /// (Pyro's `(uri, metadata)`: a Python caller's shape; under bincode a Rust caller gets
    /// the URI only, and calls `lookup_with_metadata` for both).
    #[rmi(raises)]
    async fn lookup(
        &self,
        name: String,
        return_metadata: Option<Truthy>,
    ) -> Result<Found, NamingError>;
    /// The URI and metadata registered under `name`.
    #[rmi(raises)]
    async fn lookup_with_metadata(
        &self,
        name: String,
    ) -> Result<(Uri, BTreeSet<String>), NamingError>;
    /// Removes by name, else by prefix, else by regex (matched at the start); returns the count.
    #[rmi(raises)]
    async fn remove(
        &self,
        name: Option<String>,
        prefix: Option<String>,
        regex: Option<String>,
    ) -> Result<u32, NamingError>;
    /// Names and URIs, filtered by prefix, by regex (matched at the start), by metadata all
    /// in `metadata_all` or by metadata any in `metadata_any`: one filter at most; with
    /// `return_metadata` true, each name's URI and metadata (see [`Found`]). These are Pyro4's
    /// parameters; Pyro5's third is `return_metadata`, which a Pyro5 caller passing it
    /// positionally puts in `metadata_all` (see [`TagsOrFlag`]).
    #[rmi(raises)]
    async fn list(
        &self,
        prefix: Option<String>,
        regex: Option<String>,
        metadata_all: Option<TagsOrFlag>,
        metadata_any: Option<BTreeSet<String>>,
        return_metadata: Option<Truthy>,
    ) -> Result<BTreeMap<String, Found<false, true>>, NamingError>;
    /// Names whose metadata has all of `meta_all` or any of `meta_any`, with URI and metadata
    /// unless `return_metadata` is false (Pyro5's default is true; see [`Found`]).
    #[rmi(raises)]
    async fn yplookup(
        &self,
        meta_all: Option<BTreeSet<String>>,
        meta_any: Option<BTreeSet<String>>,
        return_metadata: Option<Truthy>,
    ) -> Result<BTreeMap<String, Found<true, true>>, NamingError>;
    /// Replaces the metadata of `name`; `None` (Python's `set_metadata(name, None)`) clears it.
    #[rmi(raises)]
    async fn set_metadata(
        &self,
        name: String,
        metadata: Option<BTreeSet<String>>,
    ) -> Result<(), NamingError>;
    /// Number of registered names, the name server's own included. A store that cannot count
    /// (an etcd cluster without quorum) raises a `NamingError`, never a wrong number.
    #[rmi(raises, idempotent)]
    async fn count(&self) -> Result<u32, NamingError>;
    /// Does nothing; shows the name server is alive.
    async fn ping(&self);
    /// Grants a lease of `ttl_ms` milliseconds and returns its id. Names registered with it
    /// (`register_leased`) live while it is kept alive, and go when it expires or is revoked.
    #[rmi(raises)]
    async fn lease_grant(&self, ttl_ms: u64) -> Result<u64, NamingError>;
    /// Renews `lease` for its full TTL; returns the TTL in milliseconds. An expired or unknown
    /// lease is a `NamingError`: grant a new one and register the names again.
    #[rmi(raises, idempotent)]
    async fn lease_keep_alive(&self, lease: u64) -> Result<u64, NamingError>;
    /// Ends `lease` and removes its names at once; returns how many went.
    #[rmi(raises, idempotent)]
    async fn lease_revoke(&self, lease: u64) -> Result<u32, NamingError>;
    /// Registers `name` for `uri` bound to `lease`; otherwise as `register`.
    #[rmi(raises)]
    async fn register_leased(
        &self,
        name: String,
        uri: Uri,
        lease: u64,
        safe: Option<Truthy>,
        metadata: Option<BTreeSet<String>>,
    ) -> Result<(), NamingError>;
    /// Adds `uri` to the daemons serving the shared name `name` (or updates its entry), bound
    /// to `lease` if given. Several live daemons may serve one shared name; `lookup` answers
    /// one of them at random, `lookup_all` every one. Refused if `name` is registered plainly
    /// (with `register`, which replaces every entry of a name, shared or not).
    #[rmi(raises)]
    async fn register_shared(
        &self,
        name: String,
        uri: Uri,
        lease: Option<u64>,
        metadata: Option<BTreeSet<String>>,
    ) -> Result<(), NamingError>;
    /// Removes the entry of `uri` from the shared name `name`, leaving the other daemons'
    /// entries; returns whether it was there. A plain registration of `name` is left alone.
    #[rmi(raises, idempotent)]
    async fn remove_shared(&self, name: String, uri: Uri) -> Result<bool, NamingError>;
    /// Every URI registered under `name`, with its metadata: one for a plain name, one per
    /// daemon for a shared one.
    #[rmi(raises, idempotent)]
    async fn lookup_all(&self, name: String) -> Result<Vec<(Uri, BTreeSet<String>)>, NamingError>;
    /// Like `yplookup`, but every entry: a shared name once per daemon, as (name, URI,
    /// metadata).
    #[rmi(raises, idempotent)]
    async fn yplookup_entries(
        &self,
        meta_all: Option<BTreeSet<String>>,
        meta_any: Option<BTreeSet<String>>,
    ) -> Result<Vec<(String, Uri, BTreeSet<String>)>, NamingError>;
    /// Like `list` with `return_metadata`, but every entry, in every serializer: a shared name
    /// once per daemon, as (name, URI, metadata); by `prefix` or `regex` (not both), or all.
    #[rmi(raises, idempotent)]
    async fn list_entries(
        &self,
        prefix: Option<String>,
        regex: Option<String>,
    ) -> Result<Vec<(String, Uri, BTreeSet<String>)>, NamingError>;
    /// The changes to names starting with `prefix` (every name if `None`), from now on, as
    /// they happen: registrations, removals, expiries, and `Lagged` when the watcher fell too
    /// far behind (then list again). Ends when the name server shuts down; refused while it
    /// is shutting down.
    #[rmi(raises)]
    async fn watch(&self, prefix: Option<String>) -> Result<RemoteStream<Change>, NamingError>;
}

/// A flag as Python reads one: any value, by its truthiness (`0.0` and `None` are false). Pyro5
/// passes such values positionally. Under bincode, a plain bool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Truthy(pub bool);

impl<'de> serde::Deserialize<'de> for Truthy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Truthy;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a value to read as true or false")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Truthy, E> {
                Ok(Truthy(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Truthy, E> {
                Ok(Truthy(v != 0))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Truthy, E> {
                Ok(Truthy(v != 0))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Truthy, E> {
                Ok(Truthy(v != 0.0))
            }
            fn visit_str<E>(self, v: &str) -> Result<Truthy, E> {
                Ok(Truthy(!v.is_empty()))
            }
            fn visit_unit<E>(self) -> Result<Truthy, E> {
                Ok(Truthy(false))
            }
        }
        if d.is_human_readable() {
            d.deserialize_any(V)
        } else {
            d.deserialize_bool(V)
        }
    }
}

/// `list`'s third parameter: Pyro4's `metadata_all` (tags), or the flag a Pyro5 caller passes
/// there positionally, Pyro5's `list(prefix, regex, return_metadata)`. A flag is read as
/// Python reads it (see [`Truthy`]); under bincode the parameter is always tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagsOrFlag {
    /// Names whose metadata has all of these tags.
    Tags(BTreeSet<String>),
    /// Pyro5's `return_metadata`.
    Flag(bool),
}

impl From<BTreeSet<String>> for TagsOrFlag {
    fn from(tags: BTreeSet<String>) -> Self {
        TagsOrFlag::Tags(tags)
    }
}

impl serde::Serialize for TagsOrFlag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TagsOrFlag::Tags(tags) => tags.serialize(s),
            TagsOrFlag::Flag(flag) if s.is_human_readable() => s.serialize_bool(*flag),
            TagsOrFlag::Flag(_) => Err(serde::ser::Error::custom(
                "under bincode, list's third parameter is tags: pass return_metadata instead",
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for TagsOrFlag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TagsOrFlag;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("tags (a set, list or tuple of strings) or a flag")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<TagsOrFlag, A::Error> {
                let mut tags = BTreeSet::new();
                while let Some(tag) = seq.next_element::<String>()? {
                    tags.insert(tag);
                }
                Ok(TagsOrFlag::Tags(tags))
            }
            fn visit_bool<E>(self, v: bool) -> Result<TagsOrFlag, E> {
                Ok(TagsOrFlag::Flag(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<TagsOrFlag, E> {
                Ok(TagsOrFlag::Flag(v != 0))
            }
            fn visit_u64<E>(self, v: u64) -> Result<TagsOrFlag, E> {
                Ok(TagsOrFlag::Flag(v != 0))
            }
            fn visit_f64<E>(self, v: f64) -> Result<TagsOrFlag, E> {
                Ok(TagsOrFlag::Flag(v != 0.0))
            }
            fn visit_unit<E>(self) -> Result<TagsOrFlag, E> {
                Ok(TagsOrFlag::Flag(false))
            }
        }
        if d.is_human_readable() {
            d.deserialize_any(V)
        } else {
            BTreeSet::deserialize(d).map(TagsOrFlag::Tags)
        }
    }
}

/// What `lookup`, `list` and `yplookup` answer for a name: its URI, or its URI and metadata
/// when the caller passed Pyro's `return_metadata=True`. A Python caller reads `uri` or the
/// tuple `(uri, metadata)`, the metadata a `set`.
///
/// In Pyro's formats (serpent, json, msgpack) the value says which it is. bincode does not, so
/// there the shape is `METADATA`'s: `Found` (`lookup`, `list`) travels as the URI alone and
/// `Found<true>` (`yplookup`) as the pair, as these methods answer by default; a Rust caller
/// asking for the other shape under bincode gets an error naming the method to call instead
/// (`lookup_with_metadata`, `yplookup`, `list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found<const METADATA: bool = false, const TEXT: bool = false> {
    /// The URI alone.
    Uri(Uri),
    /// The URI and the metadata.
    WithMetadata(Uri, BTreeSet<String>),
}

impl<const METADATA: bool, const TEXT: bool> Found<METADATA, TEXT> {
    /// The URI, with `metadata` if `with_metadata`.
    pub fn new(uri: Uri, metadata: BTreeSet<String>, with_metadata: bool) -> Self {
        if with_metadata {
            Found::WithMetadata(uri, metadata)
        } else {
            Found::Uri(uri)
        }
    }

    /// The URI.
    pub fn uri(&self) -> &Uri {
        match self {
            Found::Uri(uri) | Found::WithMetadata(uri, _) => uri,
        }
    }

    /// The metadata, if it was asked for.
    pub fn metadata(&self) -> Option<&BTreeSet<String>> {
        match self {
            Found::Uri(_) => None,
            Found::WithMetadata(_, metadata) => Some(metadata),
        }
    }

    /// The URI.
    pub fn into_uri(self) -> Uri {
        match self {
            Found::Uri(uri) | Found::WithMetadata(uri, _) => uri,
        }
    }

    /// The URI and the metadata (empty if it was not asked for).
    pub fn into_parts(self) -> (Uri, BTreeSet<String>) {
        match self {
            Found::Uri(uri) => (uri, BTreeSet::new()),
            Found::WithMetadata(uri, metadata) => (uri, metadata),
        }
    }
}

/// A `Found` is equal to the URI it holds.
impl<const METADATA: bool, const TEXT: bool> PartialEq<Uri> for Found<METADATA, TEXT> {
    fn eq(&self, other: &Uri) -> bool {
        self.uri() == other
    }
}

/// Metadata as a Python `set` (serpent's set literal; a sequence in the other formats).
struct PySet<'a>(&'a BTreeSet<String>);

impl serde::Serialize for PySet<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(rmi_core::protocol::codec::PYTHON_SET, self.0)
    }
}

impl<const METADATA: bool, const TEXT: bool> serde::Serialize for Found<METADATA, TEXT> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeTuple};
        if !s.is_human_readable() && self.metadata().is_some() != METADATA {
            let instead = if METADATA {
                "list"
            } else {
                "lookup_with_metadata or yplookup"
            };
            return Err(S::Error::custom(format!(
                "this return_metadata needs one of Pyro's serializers; under bincode call {instead}"
            )));
        }
        // Pyro5's `list` and `yplookup` answer URI strings (its `lookup` a URI object).
        let text = TEXT && s.is_human_readable();
        match self {
            Found::Uri(uri) if text => s.serialize_str(&uri.to_string()),
            Found::Uri(uri) => uri.serialize(s),
            Found::WithMetadata(uri, metadata) => {
                let mut t = s.serialize_tuple(2)?;
                if text {
                    t.serialize_element(&uri.to_string())?;
                } else {
                    t.serialize_element(uri)?;
                }
                t.serialize_element(&PySet(metadata))?;
                t.end()
            }
        }
    }
}

impl<'de, const METADATA: bool, const TEXT: bool> serde::Deserialize<'de>
    for Found<METADATA, TEXT>
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return Ok(if METADATA {
                let (uri, metadata) = <(Uri, BTreeSet<String>)>::deserialize(d)?;
                Found::WithMetadata(uri, metadata)
            } else {
                Found::Uri(Uri::deserialize(d)?)
            });
        }
        d.deserialize_any(FoundVisitor)
    }
}

/// Reads either shape, by what the value is: a str or URI class dict, or a 2-sequence.
struct FoundVisitor<const METADATA: bool, const TEXT: bool>;

impl<'de, const METADATA: bool, const TEXT: bool> serde::de::Visitor<'de>
    for FoundVisitor<METADATA, TEXT>
{
    type Value = Found<METADATA, TEXT>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a URI, or a (URI, metadata) pair")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        v.parse().map(Found::Uri).map_err(E::custom)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        use serde::Deserialize as _;
        Uri::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Found::Uri)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error as _;
        let uri: Uri = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(0, &self))?;
        // Python's metadata may be None where a name has none.
        let metadata: Option<BTreeSet<String>> = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(1, &self))?;
        if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            return Err(A::Error::invalid_length(3, &self));
        }
        Ok(Found::WithMetadata(uri, metadata.unwrap_or_default()))
    }
}

/// A Pyro flag's value, `default` when left out.
fn flag(given: Option<Truthy>, default: bool) -> bool {
    given.map_or(default, |Truthy(b)| b)
}

/// The name server object: a [`Registry`] (limits in front of a store).
#[derive(Debug, Default)]
pub struct NameServer {
    registry: Registry,
    /// Its remote watches.
    watches: std::sync::Arc<Watches>,
}

/// How long a stopping name server waits for its remote watches' readers to read that the
/// watch ended, before its daemon stops (and closes their connections).
const WATCH_END_WAIT: Duration = Duration::from_secs(1);

/// A name server's remote watches: ended together when it stops, and counted until each has
/// told its reader so.
#[derive(Debug, Default)]
struct Watches {
    /// Set to `true` when the name server stops: remote watches end then.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Remote watches not yet dropped: a watch is dropped once its reader has read its end
    /// (or the daemon has given up on it).
    open: tokio::sync::watch::Sender<usize>,
}

impl Watches {
    /// Counts one more open watch, until the returned guard is dropped.
    fn open(self: &std::sync::Arc<Self>) -> OpenWatch {
        self.open.send_modify(|n| *n += 1);
        OpenWatch(self.clone())
    }

    /// Waits until no watch is open, up to [`WATCH_END_WAIT`].
    async fn closed(&self) {
        let mut open = self.open.subscribe();
        let _ = tokio::time::timeout(WATCH_END_WAIT, open.wait_for(|n| *n == 0)).await;
    }
}

/// One open remote watch, counted in [`Watches::open`] while it lives.
struct OpenWatch(std::sync::Arc<Watches>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n -= 1);
    }
}

impl NameServer {
    /// An empty name server, in memory, with the default limits.
    pub fn new() -> Self {
        NameServer::default()
    }

    /// A name server over `registry`.
    pub fn with_registry(registry: Registry) -> Self {
        NameServer {
            registry,
            watches: Default::default(),
        }
    }

    /// Ends every remote watch (their callers see the stream end); call when stopping the
    /// daemon that serves this object, so open watches do not hold up its grace period.
    /// [`NameServerHandle::shutdown`] does it.
    pub fn end_watches(&self) {
        self.watches.stopping.send_replace(true);
    }

    /// Its registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// Logs a change a client asked for, once the registry has checked it: until then its name and
/// URI may be as large as a message (megabytes), so a refused one is logged by its error,
/// which quotes only what passed the limits.
fn logged<T>(
    result: Result<T, NamingError>,
    what: &str,
    name: &str,
    uri: &Uri,
    lease: Option<u64>,
) -> Result<T, NamingError> {
    let lease = lease.map(LeaseId);
    match &result {
        Ok(_) => tracing::info!(%name, %uri, ?lease, "{what}"),
        Err(e) => tracing::info!(error = %e.message, ?lease, "{what} refused"),
    }
    result
}

impl NameServerApi for NameServer {
    async fn register(
        &self,
        name: String,
        uri: Uri,
        safe: Option<Truthy>,
        metadata: Option<BTreeSet<String>>,
    ) -> Result<(), NamingError> {
        let (safe, metadata) = (flag(safe, false), metadata.unwrap_or_default());
        let result = self
            .registry
            .register(&name, uri.clone(), safe, metadata, None)
            .await;
        logged(result, "register", &name, &uri, None)
    }

    async fn lookup(
        &self,
        name: String,
        return_metadata: Option<Truthy>,
    ) -> Result<Found, NamingError> {
        let entry = self.registry.lookup(&name).await?;
        Ok(Found::new(
            entry.uri,
            entry.metadata,
            flag(return_metadata, false),
        ))
    }

    async fn lookup_with_metadata(
        &self,
        name: String,
    ) -> Result<(Uri, BTreeSet<String>), NamingError> {
        let entry = self.registry.lookup(&name).await?;
        Ok((entry.uri, entry.metadata))
    }

    async fn remove(
        &self,
        name: Option<String>,
        prefix: Option<String>,
        regex: Option<String>,
    ) -> Result<u32, NamingError> {
        self.registry
            .remove(name.as_deref(), prefix.as_deref(), regex.as_deref())
            .await
    }

    async fn list(
        &self,
        prefix: Option<String>,
        regex: Option<String>,
        metadata_all: Option<TagsOrFlag>,
        metadata_any: Option<BTreeSet<String>>,
        return_metadata: Option<Truthy>,
    ) -> Result<BTreeMap<String, Found<false, true>>, NamingError> {
        let (metadata_all, return_metadata) = match metadata_all {
            Some(TagsOrFlag::Flag(_)) if return_metadata.is_some() => {
                // Python's own words for list(None, None, True, return_metadata=True).
                return Err(NamingError::type_error(
                    "list() got multiple values for argument 'return_metadata'",
                ));
            }
            Some(TagsOrFlag::Flag(f)) => (None, Some(Truthy(f))),
            Some(TagsOrFlag::Tags(tags)) => (Some(tags), return_metadata),
            None => (None, return_metadata),
        };
        let with_metadata = flag(return_metadata, false);
        // As Pyro5 (`if prefix and regex`): an empty prefix or regex is no filter; so
        // `list("", "x")` lists by the regex rather than refuse two filters. (For every client:
        // Pyro4 counted any argument not None, and refused it.)
        let prefix = prefix.filter(|p| !p.is_empty());
        let regex = regex.filter(|r| !r.is_empty());
        let given = [
            prefix.is_some(),
            regex.is_some(),
            metadata_all.is_some(),
            metadata_any.is_some(),
        ];
        let filters = given.into_iter().filter(|&g| g).count();
        if filters > 1 {
            // Pyro's words and class.
            return Err(NamingError::value_error(
                "you can only filter on one thing at a time",
            ));
        }
        // As Pyro4: an empty tag set counts as a filter above, and then filters nothing.
        let metadata_all = metadata_all.filter(|t| !t.is_empty());
        let metadata_any = metadata_any.filter(|t| !t.is_empty());
        let entries = if metadata_all.is_some() || metadata_any.is_some() {
            self.registry.yplookup(metadata_all, metadata_any).await?
        } else {
            self.registry
                .list(prefix.as_deref(), regex.as_deref())
                .await?
        };
        Ok(one_per_name(entries, with_metadata))
    }

    async fn yplookup(
        &self,
        meta_all: Option<BTreeSet<String>>,
        meta_any: Option<BTreeSet<String>>,
        return_metadata: Option<Truthy>,
    ) -> Result<BTreeMap<String, Found<true, true>>, NamingError> {
        let with_metadata = flag(return_metadata, true);
        let entries = self.registry.yplookup(meta_all, meta_any).await?;
        Ok(one_per_name(entries, with_metadata))
    }

    async fn set_metadata(
        &self,
        name: String,
        metadata: Option<BTreeSet<String>>,
    ) -> Result<(), NamingError> {
        self.registry
            .set_metadata(&name, metadata.unwrap_or_default())
            .await
    }

    async fn count(&self) -> Result<u32, NamingError> {
        self.registry.count().await
    }

    async fn ping(&self) {}

    async fn lease_grant(&self, ttl_ms: u64) -> Result<u64, NamingError> {
        let lease = self.registry.grant(Duration::from_millis(ttl_ms)).await?;
        tracing::info!(%lease, ttl_ms, "lease granted");
        Ok(lease.0)
    }

    async fn lease_keep_alive(&self, lease: u64) -> Result<u64, NamingError> {
        let ttl = self.registry.keep_alive(LeaseId(lease)).await?;
        Ok(ttl.as_millis() as u64)
    }

    async fn lease_revoke(&self, lease: u64) -> Result<u32, NamingError> {
        let removed = self.registry.revoke(LeaseId(lease)).await?;
        tracing::info!(lease = %LeaseId(lease), removed, "lease revoked");
        Ok(removed)
    }

    async fn register_leased(
        &self,
        name: String,
        uri: Uri,
        lease: u64,
        safe: Option<Truthy>,
        metadata: Option<BTreeSet<String>>,
    ) -> Result<(), NamingError> {
        let (safe, metadata) = (flag(safe, false), metadata.unwrap_or_default());
        let result = self
            .registry
            .register(&name, uri.clone(), safe, metadata, Some(LeaseId(lease)))
            .await;
        logged(result, "register", &name, &uri, Some(lease))
    }

    async fn register_shared(
        &self,
        name: String,
        uri: Uri,
        lease: Option<u64>,
        metadata: Option<BTreeSet<String>>,
    ) -> Result<(), NamingError> {
        let result = self
            .registry
            .register_shared(
                &name,
                uri.clone(),
                metadata.unwrap_or_default(),
                lease.map(LeaseId),
            )
            .await;
        logged(result, "register shared", &name, &uri, lease)
    }

    async fn remove_shared(&self, name: String, uri: Uri) -> Result<bool, NamingError> {
        let result = self.registry.remove_shared(&name, &uri).await;
        logged(result, "remove shared", &name, &uri, None)
    }

    async fn lookup_all(&self, name: String) -> Result<Vec<(Uri, BTreeSet<String>)>, NamingError> {
        Ok(self
            .registry
            .lookup_all(&name)
            .await?
            .into_iter()
            .map(|e| (e.uri, e.metadata))
            .collect())
    }

    async fn yplookup_entries(
        &self,
        meta_all: Option<BTreeSet<String>>,
        meta_any: Option<BTreeSet<String>>,
    ) -> Result<Vec<(String, Uri, BTreeSet<String>)>, NamingError> {
        Ok(self
            .registry
            .yplookup(meta_all, meta_any)
            .await?
            .into_iter()
            .map(|(k, e)| (k, e.uri, e.metadata))
            .collect())
    }

    async fn list_entries(
        &self,
        prefix: Option<String>,
        regex: Option<String>,
    ) -> Result<Vec<(String, Uri, BTreeSet<String>)>, NamingError> {
        // (An empty prefix or regex is no filter, as in `list`.)
        let prefix = prefix.filter(|p| !p.is_empty());
        let regex = regex.filter(|r| !r.is_empty());
        if prefix.is_some() && regex.is_some() {
            return Err(NamingError::value_error(
                "you can only filter on one thing at a time",
            ));
        }
        Ok(self
            .registry
            .list(prefix.as_deref(), regex.as_deref())
            .await?
            .into_iter()
            .map(|(k, e)| (k, e.uri, e.metadata))
            .collect())
    }

    async fn watch(&self, prefix: Option<String>) -> Result<RemoteStream<Change>, NamingError> {
        use futures_util::StreamExt;
        // While it waits for open watches' readers to read their end: a resolver whose watch
        // ended would open a new one here, which ends at once, and empty its cache each time,
        // losing the stale answers it is to give while the name server restarts.
        if *self.watches.stopping.borrow() {
            return Err(NamingError::new("the name server is shutting down"));
        }
        let mut stopping = self.watches.stopping.subscribe();
        let stopped = async move {
            let _ = stopping.wait_for(|s| *s).await;
        };
        // Counted until the daemon drops it: after its reader has read the end, at best.
        let open = self.watches.open();
        let changes = self.registry.watch().filter(move |change| {
            let keep = match (&prefix, change.name()) {
                (Some(prefix), Some(name)) => name.starts_with(prefix.as_str()),
                _ => true,
            };
            std::future::ready(keep)
        });
        Ok(RemoteStream::new(changes.take_until(stopped).map(
            move |change| {
                let _counted = &open;
                change
            },
        )))
    }
}

/// Settings for starting a name server; see [`NameServer::builder`].
#[derive(Debug, Clone)]
pub struct NameServerBuilder {
    host: String,
    port: u16,
    unix: Option<std::path::PathBuf>,
    broadcast: Option<(String, u16)>,
    daemon: rmi_core::DaemonBuilder,
    storage: Storage,
    store: Option<std::sync::Arc<dyn Store>>,
    limits: Limits,
    autoclean: Option<crate::Autoclean>,
}

impl NameServer {
    /// Settings for a name server on 127.0.0.1:9090 with a broadcast responder on
    /// 127.255.255.255:9091.
    pub fn builder() -> NameServerBuilder {
        NameServerBuilder {
            host: "127.0.0.1".into(),
            port: rmi_core::uri::DEFAULT_NS_PORT,
            unix: None,
            daemon: Daemon::builder(),
            broadcast: Some((DEFAULT_BROADCAST_ADDR.into(), DEFAULT_BROADCAST_PORT)),
            storage: Storage::Memory,
            store: None,
            limits: Limits::default(),
            autoclean: None,
        }
    }
}

impl NameServerBuilder {
    /// Host or address to bind (default 127.0.0.1). A host given by name is what the name
    /// server's URIs carry (its own entry, its broadcast answer), as in Pyro; clients must be
    /// able to resolve it. An address puts the bound address in them.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// TCP port (default 9090; 0 picks a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Address and UDP port of the `GET_NSURI` responder (default 127.255.255.255:9091; port 0
    /// picks a free one).
    pub fn broadcast(mut self, addr: impl Into<String>, port: u16) -> Self {
        self.broadcast = Some((addr.into(), port));
        self
    }

    /// Listen on a Unix domain socket at `path` instead of TCP (no broadcast responder then).
    pub fn unix(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.unix = Some(path.into());
        self.broadcast = None;
        self
    }

    /// The settings of the daemon hosting the name server: limits, TLS
    /// ([`DaemonBuilder::tls`](rmi_core::DaemonBuilder::tls)), shared secret, validator.
    pub fn daemon(mut self, builder: rmi_core::DaemonBuilder) -> Self {
        self.daemon = builder;
        self
    }

    /// No broadcast responder.
    pub fn no_broadcast(mut self) -> Self {
        self.broadcast = None;
        self
    }

    /// Where names are kept (default [`Storage::Memory`]).
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Serve names from an already opened `store` (instead of opening [`storage`](Self::storage);
    /// open it with the same limits).
    pub fn store(mut self, store: std::sync::Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The quotas every request is checked against (default [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Probes where names point and removes those no daemon answers at for a while, as Pyro's
    /// `NS_AUTOCLEAN` (off by default): see [`Autoclean`](crate::Autoclean). Names held by a
    /// lease are left to it. A zero `interval` is off, as Pyro's `NS_AUTOCLEAN = 0`.
    pub fn autoclean(mut self, settings: crate::Autoclean) -> Self {
        self.autoclean = (!settings.interval.is_zero()).then_some(settings);
        self
    }

    /// Binds, registers the name server and starts serving in the background.
    pub async fn start(self) -> Result<NameServerHandle, Error> {
        let store = match self.store.clone() {
            Some(store) => store,
            None => self
                .storage
                .open(self.limits.clone())
                .await
                .map_err(|e| Error::Daemon(e.message))?,
        };
        let registry = Registry::new(store, self.limits.clone());
        let builder = self.daemon.clone();
        let daemon = match &self.unix {
            #[cfg(unix)]
            Some(path) => builder.bind_unix(path).await?,
            #[cfg(not(unix))]
            Some(_) => {
                return Err(Error::Daemon(
                    "unix sockets are not available on this platform".into(),
                ))
            }
            None => builder.bind((self.host.as_str(), self.port)).await?,
        };
        let server = NameServer::with_registry(registry.clone());
        let watches = server.watches.clone();
        let uri = daemon.uri_for(NAME_SERVER_OBJECT_ID);
        // The tags the limits allow (a short `max_tag_len` leaves Pyro's out), but at least one:
        // limits that allow none refuse the name server its entry, and it says so.
        let limits = registry.limits();
        let mut tags: BTreeSet<String> = NAME_SERVER_TAGS
            .iter()
            .filter(|t| t.len() <= limits.max_tag_len)
            .take(limits.max_tags)
            .map(|t| t.to_string())
            .collect();
        if tags.is_empty() {
            tags.insert(NAME_SERVER_TAGS[0].to_owned());
        }
        registry
            .register(NAME_SERVER_NAME, uri.clone(), false, tags, None)
            .await
            .map_err(|e| {
                Error::Resolve(format!(
                    "the name server cannot register itself as {NAME_SERVER_NAME} (its entry, \
                     tagged with its classes, must fit the registry's limits): {}",
                    e.message
                ))
            })?;
        daemon.register_with_id(NameServerApiServer::new(server), NAME_SERVER_OBJECT_ID)?;
        // As Pyro's: the broadcast answers with the address the name server is bound by, not
        // one advertised for clients beyond address translation (a broadcast reaches only
        // clients on this side of it, which may have no route to the outside address).
        let internal = daemon.internal_uri_for(NAME_SERVER_OBJECT_ID);
        let responder = match &self.broadcast {
            Some((addr, port)) => Some(BroadcastResponder::bind(addr, *port, internal).await?),
            None => None,
        };
        let broadcast_addr = responder.as_ref().map(|r| r.local_addr());
        let responder_task = responder.map(|r| tokio::spawn(r.run()));
        let autoclean_task = self
            .autoclean
            .map(|settings| tokio::spawn(crate::autoclean::run(registry.clone(), settings)));
        let serve_task = tokio::spawn({
            let daemon = daemon.clone();
            async move { daemon.serve().await }
        });
        tracing::info!(%uri, ?broadcast_addr, "name server running");
        Ok(NameServerHandle {
            uri,
            daemon,
            registry,
            broadcast_addr,
            serve_task: tokio::sync::Mutex::new(Some(serve_task)),
            responder_task,
            autoclean_task,
            watches,
            runtime: tokio::runtime::Handle::current(),
        })
    }
}

/// The task running the name server's daemon.
type ServeTask = JoinHandle<Result<(), Error>>;

/// A running name server.
#[derive(Debug)]
pub struct NameServerHandle {
    uri: Uri,
    daemon: Daemon,
    registry: Registry,
    broadcast_addr: Option<std::net::SocketAddr>,
    /// Held by [`wait`](NameServerHandle::wait) while it waits (so a cancelled wait leaves
    /// the task for the next); `None` once the task has ended.
    serve_task: tokio::sync::Mutex<Option<ServeTask>>,
    responder_task: Option<JoinHandle<()>>,
    autoclean_task: Option<JoinHandle<()>>,
    watches: std::sync::Arc<Watches>,
    /// The runtime the name server serves on: a stop that waits for open watches waits
    /// there, not on the caller's, which may not run again (a fixture's `Drop` joining the
    /// server's thread: helper-165 #1).
    runtime: tokio::runtime::Handle,
}

impl NameServerHandle {
    /// The name server's URI (`PYRO:Pyro.NameServer@host:port`).
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The daemon hosting the name server.
    pub fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    /// The registry it serves (to watch changes in-process, for instance).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The address of the broadcast responder, if one runs.
    pub fn broadcast_addr(&self) -> Option<std::net::SocketAddr> {
        self.broadcast_addr
    }

    /// Runs until the daemon stops (after [`shutdown`](Self::shutdown) or a fatal error).
    /// Cancel-safe: a `wait` dropped early (in a `select!`, say) leaves the next one waiting
    /// just the same. Once the daemon has stopped and one `wait` has returned its outcome,
    /// later ones return `Ok(())` at once.
    pub async fn wait(&self) -> Result<(), Error> {
        let mut task = self.serve_task.lock().await;
        let Some(running) = task.as_mut() else {
            return Ok(());
        };
        let outcome = running.await;
        *task = None;
        outcome.map_err(|e| Error::Closed(format!("name server task failed: {e}")))?
    }

    /// Stops the name server and its responder; remote watches end. Their readers get up to a
    /// second to read that end before the daemon stops (with its grace period for calls
    /// running) and closes their connections: a watch that finds its connection closed
    /// instead cannot tell a stop from a crash (`rmi-nsc watch` then fails).
    pub fn shutdown(&self) {
        self.stop(true);
    }

    /// [`shutdown`](Self::shutdown), waiting for open watches' readers only if `wait`.
    fn stop(&self, wait: bool) {
        self.watches.stopping.send_replace(true);
        if let Some(t) = &self.responder_task {
            t.abort();
        }
        if let Some(t) = &self.autoclean_task {
            t.abort();
        }
        if wait && *self.watches.open.borrow() > 0 {
            // On the name server's runtime, which runs while it serves (the caller's may not
            // run again; helper-165 #1).
            // (Dropped unrun, on a runtime since shut down, it stops the daemon at once.)
            struct StopWhenDone(Daemon);
            impl Drop for StopWhenDone {
                fn drop(&mut self) {
                    self.0.shutdown();
                }
            }
            let (watches, stop) = (self.watches.clone(), StopWhenDone(self.daemon.clone()));
            self.runtime.spawn(async move {
                let _stop = stop;
                watches.closed().await;
            });
        } else {
            self.daemon.shutdown();
        }
    }
}

impl Drop for NameServerHandle {
    fn drop(&mut self) {
        // Dropped without a shutdown: nobody waits for the end, so none is waited for. (After
        // a shutdown, the daemon stops when its watches have ended, as that said.)
        if !*self.watches.stopping.borrow() {
            self.stop(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmi_core::{DecodeLimits, Serializer};

    fn uri() -> Uri {
        "PYRO:obj@127.0.0.1:4000".parse().unwrap()
    }

    fn tags() -> BTreeSet<String> {
        ["b".to_owned(), "a".to_owned()].into()
    }

    fn round_trip<T>(ser: Serializer, value: &T) -> T
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        let bytes = ser.encode(value).unwrap();
        ser.decode(&bytes, &DecodeLimits::default()).unwrap()
    }

    #[test]
    fn in_pyros_formats_either_shape_reads_back_by_what_it_is() {
        for ser in [Serializer::Serpent, Serializer::Json, Serializer::MsgPack] {
            for found in [
                Found::<false>::Uri(uri()),
                Found::WithMetadata(uri(), tags()),
                Found::WithMetadata(uri(), BTreeSet::new()),
            ] {
                assert_eq!(round_trip(ser, &found), found, "{ser:?}");
                let map = BTreeMap::from([("n".to_owned(), found.clone())]);
                assert_eq!(round_trip(ser, &map), map, "{ser:?}");
                let other: Found<true> = Found::new(
                    found.uri().clone(),
                    found.metadata().cloned().unwrap_or_default(),
                    found.metadata().is_some(),
                );
                assert_eq!(round_trip(ser, &other), other, "{ser:?}");
            }
        }
        let text = Serializer::Serpent
            .encode(&Found::<false>::WithMetadata(uri(), tags()))
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.ends_with(",{'a','b'})"), "{text}");
    }

    #[test]
    fn a_flag_from_python_is_read_by_its_truthiness() {
        let read = |ser: Serializer, doc: &[u8]| -> Truthy {
            ser.decode(doc, &DecodeLimits::default())
                .unwrap_or_else(|e| panic!("{ser:?} {:?}: {e}", String::from_utf8_lossy(doc)))
        };
        let serpent = |value: &str| format!("# serpent utf-8 python3.2\n{value}").into_bytes();
        for (value, truth) in [
            ("True", true),
            ("False", false),
            ("None", false),
            ("0", false),
            ("1", true),
            ("-1", true),
            ("18446744073709551615", true),
            ("0.0", false),
            ("0.5", true),
            ("-0.5", true),
            ("''", false),
            ("'no'", true),
        ] {
            assert_eq!(
                read(Serializer::Serpent, &serpent(value)),
                Truthy(truth),
                "{value}"
            );
        }
        for (value, truth) in [
            ("0", false),
            ("7", true),
            ("0.0", false),
            ("\"\"", false),
            ("\"x\"", true),
            ("null", false),
        ] {
            assert_eq!(
                read(Serializer::Json, value.as_bytes()),
                Truthy(truth),
                "{value}"
            );
        }
        // Under bincode, a plain bool.
        for truth in [false, true] {
            let bytes = Serializer::Bincode.encode(&truth).unwrap();
            assert_eq!(read(Serializer::Bincode, &bytes), Truthy(truth));
            assert_eq!(
                round_trip(Serializer::Bincode, &Truthy(truth)),
                Truthy(truth)
            );
        }
        // Anything else is an error that says what was expected.
        let err = Serializer::Serpent
            .decode::<Truthy>(&serpent("[1]"), &DecodeLimits::default())
            .unwrap_err();
        assert!(
            err.to_string().contains("a value to read as true or false"),
            "{err}"
        );
    }

    #[test]
    fn lookup_answers_uri_objects_and_the_listings_uri_strings_as_pyro5_does() {
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
        let ser = Serializer::Serpent;
        let object = "{'__class__':'Pyro5.core.URI','state':('PYRO','obj',None,'127.0.0.1',4000)}";
        // `lookup`'s shape: the URI object, alone or in the pair.
        let plain = text(ser.encode(&Found::<false>::Uri(uri())).unwrap());
        assert!(plain.ends_with(&format!("\n{object}")), "{plain}");
        let pair = text(
            ser.encode(&Found::<false>::WithMetadata(uri(), tags()))
                .unwrap(),
        );
        assert!(
            pair.ends_with(&format!("\n({object},{{'a','b'}})")),
            "{pair}"
        );
        // `list`'s and `yplookup`'s: the URI as a str.
        let plain = text(ser.encode(&Found::<false, true>::Uri(uri())).unwrap());
        assert!(plain.ends_with("\n'PYRO:obj@127.0.0.1:4000'"), "{plain}");
        let pair = text(
            ser.encode(&Found::<true, true>::WithMetadata(uri(), tags()))
                .unwrap(),
        );
        assert!(
            pair.ends_with("\n('PYRO:obj@127.0.0.1:4000',{'a','b'})"),
            "{pair}"
        );
    }

    #[test]
    fn a_found_equals_the_uri_it_holds_and_no_other() {
        let other: Uri = "PYRO:other@127.0.0.1:4000".parse().unwrap();
        for found in [
            Found::<false>::Uri(uri()),
            Found::WithMetadata(uri(), tags()),
        ] {
            assert!(found == uri());
            assert!(found != other);
        }
    }

    #[test]
    fn a_value_of_neither_shape_is_an_error_saying_what_was_expected() {
        for doc in ["5", "('PYRO:obj@127.0.0.1:4000',None,1)", "()"] {
            let doc = format!("# serpent utf-8 python3.2\n{doc}");
            let err = Serializer::Serpent
                .decode::<Found>(doc.as_bytes(), &DecodeLimits::default())
                .unwrap_err();
            assert!(
                err.to_string().contains("a URI, or a (URI, metadata) pair"),
                "{doc}: {err}"
            );
        }
    }

    #[test]
    fn a_python_answer_with_none_for_metadata_reads_as_none() {
        let doc = b"# serpent utf-8 python3.2\n('PYRO:obj@127.0.0.1:4000',None)";
        let found: Found = Serializer::Serpent
            .decode(doc, &DecodeLimits::default())
            .unwrap();
        assert_eq!(found, Found::WithMetadata(uri(), BTreeSet::new()));
    }

    #[test]
    fn under_bincode_the_default_shapes_are_the_plain_types_bytes() {
        let ser = Serializer::Bincode;
        let plain = Found::<false>::Uri(uri());
        assert_eq!(ser.encode(&plain).unwrap(), ser.encode(&uri()).unwrap());
        assert_eq!(round_trip(ser, &plain), plain);
        let pair = Found::<true>::WithMetadata(uri(), tags());
        assert_eq!(
            ser.encode(&pair).unwrap(),
            ser.encode(&(uri(), tags())).unwrap()
        );
        assert_eq!(round_trip(ser, &pair), pair);
        // The other shapes cannot be told apart there: refused when written.
        let err = ser
            .encode(&Found::<false>::WithMetadata(uri(), tags()))
            .unwrap_err();
        assert!(err.to_string().contains("lookup_with_metadata"), "{err}");
        let err = ser.encode(&Found::<true>::Uri(uri())).unwrap_err();
        assert!(err.to_string().contains("call list"), "{err}");
        assert_eq!(plain, uri());
    }
}
