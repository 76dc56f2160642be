//! The [`Resolve`] hook: turns a logical URI (`PYRONAME:`, `PYROMETA:`) into a direct `PYRO:` one.
//!
//! rmi-core knows no name server; `rmi-naming` implements this trait and the `rmi` facade
//! installs it in the proxies it builds. A proxy calls it each time it dials.

use crate::dispatch::BoxFuture;
use crate::error::Error;
use crate::uri::Uri;

/// Resolves logical URIs to direct ones.
pub trait Resolve: Send + Sync + 'static {
    /// Returns the `PYRO:` URI that `uri` currently names.
    fn resolve<'a>(&'a self, uri: &'a Uri) -> BoxFuture<'a, Result<Uri, Error>>;
}
