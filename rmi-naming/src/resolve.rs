//! [`NamingResolver`]: resolves `PYRONAME:` and `PYROMETA:` URIs through a name server.

use rand::seq::IndexedRandom;
use rmi_core::dispatch::BoxFuture;
use rmi_core::{Error, Resolve, Uri};

use crate::locate::NsLocator;

/// Resolves logical URIs: `PYRONAME:` by `lookup`, `PYROMETA:` by `yplookup` and a random pick
/// among the matches. A URI that names its name server (`@host:port`) goes there; otherwise
/// the locator finds one.
#[derive(Debug, Clone, Default)]
pub struct NamingResolver {
    locator: NsLocator,
}

impl NamingResolver {
    /// A resolver that finds name servers with `locator`.
    pub fn new(locator: NsLocator) -> Self {
        NamingResolver { locator }
    }

    /// Resolves `uri` to a direct `PYRO:` URI.
    pub async fn resolve_uri(&self, uri: &Uri) -> Result<Uri, Error> {
        let ns_of = |ns: &Option<(String, u16)>| match ns {
            Some((host, port)) => self.locator.clone().host(host.clone()).port(*port),
            None => self.locator.clone(),
        };
        match uri {
            Uri::Pyro { .. } => Ok(uri.clone()),
            Uri::PyroName { name, ns } => ns_of(ns).locate().await?.lookup(name).await,
            Uri::PyroMeta { tags, ns } => {
                let matches = ns_of(ns)
                    .locate()
                    .await?
                    .yplookup_all(tags.iter().cloned())
                    .await?;
                let uris: Vec<&Uri> = matches.values().map(|(u, _)| u).collect();
                uris.choose(&mut rand::rng())
                    .map(|u| (*u).clone())
                    .ok_or_else(|| {
                        Error::Resolve(format!("no object has all of the metadata {tags:?}"))
                    })
            }
        }
    }
}

impl Resolve for NamingResolver {
    fn resolve<'a>(&'a self, uri: &'a Uri) -> BoxFuture<'a, Result<Uri, Error>> {
        Box::pin(self.resolve_uri(uri))
    }
}
