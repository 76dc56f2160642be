//! [`NameServerProxy`]: the name server's client, with naming failures as [`Error::Resolve`].

use std::collections::{BTreeMap, BTreeSet};

use rmi_core::{Error, IntoUri, ItemStream, Proxy, Uri};

use crate::registry::{Change, LeaseId};

use crate::server::{Found, NameServerApiProxy, Truthy};

/// A connected name server. Cheap to clone.
///
/// Naming failures (an unknown name, a `safe` registration of a taken one) arrive raised, as
/// Pyro's `NamingError`: [`Error::Resolve`] here.
#[derive(Debug, Clone)]
pub struct NameServerProxy {
    api: NameServerApiProxy,
}

/// A listing's URIs.
fn uris<const M: bool, const T: bool>(
    r: Result<BTreeMap<String, Found<M, T>>, Error>,
) -> Result<BTreeMap<String, Uri>, Error> {
    Ok(r?
        .into_iter()
        .map(|(name, found)| (name, found.into_uri()))
        .collect())
}

/// True when the name server has no such method (Pyro4's has no `yplookup`, no `lookup_all`).
pub(crate) fn missing_method(e: &Error) -> bool {
    match e {
        Error::UnknownMethod { .. } => true,
        Error::Remote(r) => r.type_name == "builtins.AttributeError",
        _ => false,
    }
}

/// A listing's URIs and metadata.
fn with_metadata<const M: bool, const T: bool>(
    r: Result<BTreeMap<String, Found<M, T>>, Error>,
) -> Result<BTreeMap<String, (Uri, BTreeSet<String>)>, Error> {
    Ok(r?
        .into_iter()
        .map(|(name, found)| (name, found.into_parts()))
        .collect())
}

impl NameServerProxy {
    /// Connects to the name server at `uri` (`PYRO:Pyro.NameServer@host:port`).
    pub async fn connect(uri: impl IntoUri) -> Result<Self, Error> {
        Ok(Self::from_proxy(
            Proxy::builder(uri.into_uri()?).connect().await?,
        ))
    }

    /// Wraps an untyped proxy to a name server.
    pub fn from_proxy(proxy: Proxy) -> Self {
        NameServerProxy {
            api: NameServerApiProxy::from_proxy(proxy),
        }
    }

    /// The generated proxy, with Pyro's full signatures.
    pub fn api(&self) -> &NameServerApiProxy {
        &self.api
    }

    /// The name server's URI.
    pub fn uri(&self) -> &Uri {
        self.api.proxy().uri()
    }

    /// Registers (or re-registers) `name` for `uri`, without metadata.
    pub async fn register(&self, name: &str, uri: &Uri) -> Result<(), Error> {
        self.register_with(name, uri, false, BTreeSet::new()).await
    }

    /// Registers `name` for `uri` with metadata tags; with `safe`, an existing name is refused.
    pub async fn register_with(
        &self,
        name: &str,
        uri: &Uri,
        safe: bool,
        metadata: BTreeSet<String>,
    ) -> Result<(), Error> {
        self.api
            .register(
                name.to_owned(),
                uri.clone(),
                Some(Truthy(safe)),
                Some(metadata),
            )
            .await
    }

    /// Adds `uri` to the daemons serving the shared name `name`, with metadata tags, and
    /// without a lease (it stays until removed). Several daemons may register one shared name;
    /// `PYRONAME:` then picks among them. Refused if `name` is registered plainly.
    pub async fn register_shared(
        &self,
        name: &str,
        uri: &Uri,
        metadata: BTreeSet<String>,
    ) -> Result<(), Error> {
        self.api
            .register_shared(name.to_owned(), uri.clone(), None, Some(metadata))
            .await
    }

    /// [`register_shared`](Self::register_shared) bound to `lease`: this daemon's entry goes
    /// when the lease expires or is revoked, and the other daemons' entries stay.
    pub async fn register_shared_leased(
        &self,
        name: &str,
        uri: &Uri,
        lease: LeaseId,
        metadata: BTreeSet<String>,
    ) -> Result<(), Error> {
        self.api
            .register_shared(name.to_owned(), uri.clone(), Some(lease.0), Some(metadata))
            .await
    }

    /// Removes this daemon's entry (`uri`) of the shared name `name`, leaving the other
    /// daemons' entries; returns whether it was there. (`remove` takes every entry.)
    pub async fn remove_shared(&self, name: &str, uri: &Uri) -> Result<bool, Error> {
        self.api.remove_shared(name.to_owned(), uri.clone()).await
    }

    /// Every URI registered under `name` with its metadata: one for a plain name, one per
    /// daemon for a shared one.
    pub async fn lookup_all(&self, name: &str) -> Result<Vec<(Uri, BTreeSet<String>)>, Error> {
        match self.api.lookup_all(name.to_owned()).await {
            // Python's name servers have no shared names, nor `lookup_all`: their one entry.
            Err(e) if missing_method(&e) => Ok(vec![self.lookup_with_metadata(name).await?]),
            other => other,
        }
    }

    /// The changes to names starting with `prefix` (every name if `None`) from now on, as the
    /// name server makes them: see [`Change`]. The stream ends when the name server stops
    /// while the next change is being waited for; a name server that stops between two of
    /// them closes the connection instead, and the next item is a connection error
    /// ([`Error::is_connection`]): the connection closed, or refused when dialled again.
    pub async fn watch(&self, prefix: Option<&str>) -> Result<ItemStream<Change>, Error> {
        self.api.watch(prefix.map(str::to_owned)).await
    }

    /// The URI registered under `name` (of a shared name, one of its daemons at random).
    pub async fn lookup(&self, name: &str) -> Result<Uri, Error> {
        self.api
            .lookup(name.to_owned(), None)
            .await
            .map(Found::into_uri)
    }

    /// The URI and metadata registered under `name`.
    pub async fn lookup_with_metadata(&self, name: &str) -> Result<(Uri, BTreeSet<String>), Error> {
        match self.api.lookup_with_metadata(name.to_owned()).await {
            // Python's name servers have no `lookup_with_metadata` (their daemons raise
            // AttributeError): Pyro's `lookup(name, return_metadata=True)` answers the same.
            Err(e) if missing_method(&e) => {
                self.api
                    .proxy()
                    .call("lookup", &(name.to_owned(), true))
                    .await
            }
            other => other,
        }
    }

    /// Removes `name`; returns whether it was registered.
    pub async fn remove(&self, name: &str) -> Result<bool, Error> {
        Ok(self.api.remove(Some(name.to_owned()), None, None).await? > 0)
    }

    /// Removes every name starting with `prefix`; returns how many.
    pub async fn remove_prefix(&self, prefix: &str) -> Result<u32, Error> {
        self.api.remove(None, Some(prefix.to_owned()), None).await
    }

    /// Removes every name matching `regex` at its start; returns how many.
    pub async fn remove_regex(&self, regex: &str) -> Result<u32, Error> {
        self.api.remove(None, None, Some(regex.to_owned())).await
    }

    /// All names and URIs.
    pub async fn list(&self) -> Result<BTreeMap<String, Uri>, Error> {
        uris(self.api.list(None, None, None, None, None).await)
    }

    /// Names starting with `prefix`.
    pub async fn list_prefix(&self, prefix: &str) -> Result<BTreeMap<String, Uri>, Error> {
        uris(
            self.api
                .list(Some(prefix.to_owned()), None, None, None, None)
                .await,
        )
    }

    /// Names matching `regex` at their start (Python's `re.match`).
    pub async fn list_regex(&self, regex: &str) -> Result<BTreeMap<String, Uri>, Error> {
        uris(
            self.api
                .list(None, Some(regex.to_owned()), None, None, None)
                .await,
        )
    }

    /// Every entry starting with `prefix` or matching `regex` (at most one of them; neither:
    /// all), with its metadata: a shared name once per daemon. (Of a Python name server,
    /// which has no shared names, its `list` with `return_metadata`.)
    pub async fn list_entries(
        &self,
        prefix: Option<&str>,
        regex: Option<&str>,
    ) -> Result<Vec<(String, Uri, BTreeSet<String>)>, Error> {
        let (prefix, regex) = (prefix.map(str::to_owned), regex.map(str::to_owned));
        match self.api.list_entries(prefix.clone(), regex.clone()).await {
            // An rmi name server from before `list_entries` (under bincode, which has no
            // keyword arguments and in which its `list` gives no metadata): its `list`, one
            // entry a name, without the metadata.
            Err(Error::UnknownMethod { .. }) => Ok(self
                .api
                .list(prefix, regex, None, None, None)
                .await?
                .into_iter()
                .map(|(name, found)| (name, found.into_uri(), BTreeSet::new()))
                .collect()),
            Err(e) if missing_method(&e) => {
                // By keyword: Pyro5's `list` takes `return_metadata` third, Pyro4's fifth.
                #[derive(serde::Serialize)]
                struct Kwargs {
                    prefix: Option<String>,
                    regex: Option<String>,
                    return_metadata: bool,
                }
                let kwargs = Kwargs {
                    prefix,
                    regex,
                    return_metadata: true,
                };
                let found: BTreeMap<String, Found<true, true>> =
                    self.api.proxy().call_kwargs("list", &(), &kwargs).await?;
                Ok(found
                    .into_iter()
                    .map(|(name, found)| {
                        let (uri, metadata) = found.into_parts();
                        (name, uri, metadata)
                    })
                    .collect())
            }
            entries => entries,
        }
    }

    /// Every entry whose metadata has all the tags of `all`, or any of `any` (give one): a
    /// shared name once per daemon. (Of a Python name server, which has no shared names, its
    /// `yplookup`, or Pyro4's `list` by metadata.)
    pub async fn yplookup_entries(
        &self,
        all: Option<BTreeSet<String>>,
        any: Option<BTreeSet<String>>,
    ) -> Result<Vec<(String, Uri, BTreeSet<String>)>, Error> {
        match self.api.yplookup_entries(all.clone(), any.clone()).await {
            Err(e) if missing_method(&e) => {
                let found = match (all, any) {
                    (Some(all), _) => self.yplookup_all(all).await?,
                    (None, any) => self.yplookup_any(any.unwrap_or_default()).await?,
                };
                Ok(found
                    .into_iter()
                    .map(|(name, (uri, metadata))| (name, uri, metadata))
                    .collect())
            }
            entries => entries,
        }
    }

    /// Names whose metadata has every tag in `tags`. (Of Pyro4's name server, which has no
    /// `yplookup`, its `list` filtered by metadata: the same answer.)
    pub async fn yplookup_all<I, S>(
        &self,
        tags: I,
    ) -> Result<BTreeMap<String, (Uri, BTreeSet<String>)>, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let tags: BTreeSet<String> = tags.into_iter().map(Into::into).collect();
        match self.api.yplookup(Some(tags.clone()), None, None).await {
            Err(e) if missing_method(&e) => with_metadata(
                self.api
                    .list(None, None, Some(tags.into()), None, Some(Truthy(true)))
                    .await,
            ),
            found => with_metadata(found),
        }
    }

    /// Names whose metadata has at least one tag in `tags` (of Pyro4's name server, as
    /// [`yplookup_all`](Self::yplookup_all)).
    pub async fn yplookup_any<I, S>(
        &self,
        tags: I,
    ) -> Result<BTreeMap<String, (Uri, BTreeSet<String>)>, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let tags: BTreeSet<String> = tags.into_iter().map(Into::into).collect();
        match self.api.yplookup(None, Some(tags.clone()), None).await {
            Err(e) if missing_method(&e) => with_metadata(
                self.api
                    .list(None, None, None, Some(tags), Some(Truthy(true)))
                    .await,
            ),
            found => with_metadata(found),
        }
    }

    /// Replaces the metadata of `name`.
    pub async fn set_metadata(&self, name: &str, metadata: BTreeSet<String>) -> Result<(), Error> {
        self.api.set_metadata(name.to_owned(), Some(metadata)).await
    }

    /// Number of registered names, the name server's own included.
    pub async fn count(&self) -> Result<u32, Error> {
        self.api.count().await
    }

    /// Checks that the name server answers.
    pub async fn ping(&self) -> Result<(), Error> {
        self.api.ping().await
    }
}
