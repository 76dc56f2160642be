//! [`NamingResolver`]: resolves `PYRONAME:` and `PYROMETA:` URIs through a name server.

use rand::seq::IndexedRandom;
use rmi_core::dispatch::BoxFuture;
use rmi_core::{Error, Resolve, Uri};

use crate::locate::NsLocator;

/// Resolves logical URIs: `PYRONAME:` by `lookup`, `PYROMETA:` by `yplookup` (Pyro4's name
/// server, which has none: by `list` with `metadata_all`) and a random pick among the matches. A URI that names its name server (`@host:port`) goes there; otherwise
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
                let ns = ns_of(ns).locate().await?;
                let uris: Vec<Uri> = match ns.yplookup_all(tags.iter().cloned()).await {
                    Ok(matches) => matches.into_values().map(|(u, _)| u).collect(),
                    // Pyro4's name server has no `yplookup`: its `list` filters by metadata.
                    Err(Error::Remote(e)) if e.type_name == "builtins.AttributeError" => ns
                        .api()
                        .list(None, None, Some(tags.iter().cloned().collect()), None, None)
                        .await?
                        .into_values()
                        .collect(),
                    Err(e) => return Err(e),
                };
                uris.choose(&mut rand::rng()).cloned().ok_or_else(|| {
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
