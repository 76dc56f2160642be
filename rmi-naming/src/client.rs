//! [`NameServerProxy`]: the name server's client, with naming failures as [`Error::Resolve`].

use std::collections::{BTreeMap, BTreeSet};

use rmi_core::{Error, IntoUri, Proxy, Uri};

use crate::server::NameServerApiProxy;

/// A connected name server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NameServerProxy {
    api: NameServerApiProxy,
}

/// Naming failures arrive raised, as `Pyro5.errors.NamingError`: [`Error::Resolve`] here.
fn flatten<T>(r: Result<T, Error>) -> Result<T, Error> {
    r
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
        flatten(
            self.api
                .register(name.to_owned(), uri.clone(), Some(safe), Some(metadata))
                .await,
        )
    }

    /// The URI registered under `name`.
    pub async fn lookup(&self, name: &str) -> Result<Uri, Error> {
        flatten(self.api.lookup(name.to_owned(), None).await)
    }

    /// The URI and metadata registered under `name`.
    pub async fn lookup_with_metadata(&self, name: &str) -> Result<(Uri, BTreeSet<String>), Error> {
        flatten(self.api.lookup_with_metadata(name.to_owned()).await)
    }

    /// Removes `name`; returns whether it was registered.
    pub async fn remove(&self, name: &str) -> Result<bool, Error> {
        Ok(flatten(self.api.remove(Some(name.to_owned()), None, None).await)? > 0)
    }

    /// Removes every name starting with `prefix`; returns how many.
    pub async fn remove_prefix(&self, prefix: &str) -> Result<u32, Error> {
        flatten(self.api.remove(None, Some(prefix.to_owned()), None).await)
    }

    /// Removes every name matching `regex` at its start; returns how many.
    pub async fn remove_regex(&self, regex: &str) -> Result<u32, Error> {
        flatten(self.api.remove(None, None, Some(regex.to_owned())).await)
    }

    /// All names and URIs.
    pub async fn list(&self) -> Result<BTreeMap<String, Uri>, Error> {
        flatten(self.api.list(None, None, None, None, None).await)
    }

    /// Names starting with `prefix`.
    pub async fn list_prefix(&self, prefix: &str) -> Result<BTreeMap<String, Uri>, Error> {
        flatten(
            self.api
                .list(Some(prefix.to_owned()), None, None, None, None)
                .await,
        )
    }

    /// Names matching `regex` at their start (Python's `re.match`).
    pub async fn list_regex(&self, regex: &str) -> Result<BTreeMap<String, Uri>, Error> {
        flatten(
            self.api
                .list(None, Some(regex.to_owned()), None, None, None)
                .await,
        )
    }

    /// Names whose metadata has every tag in `tags`.
    pub async fn yplookup_all<I, S>(
        &self,
        tags: I,
    ) -> Result<BTreeMap<String, (Uri, BTreeSet<String>)>, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        flatten(
            self.api
                .yplookup(Some(tags.into_iter().map(Into::into).collect()), None)
                .await,
        )
    }

    /// Names whose metadata has at least one tag in `tags`.
    pub async fn yplookup_any<I, S>(
        &self,
        tags: I,
    ) -> Result<BTreeMap<String, (Uri, BTreeSet<String>)>, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        flatten(
            self.api
                .yplookup(None, Some(tags.into_iter().map(Into::into).collect()))
                .await,
        )
    }

    /// Replaces the metadata of `name`.
    pub async fn set_metadata(&self, name: &str, metadata: BTreeSet<String>) -> Result<(), Error> {
        flatten(self.api.set_metadata(name.to_owned(), metadata).await)
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
