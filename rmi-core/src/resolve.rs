//! The [`Resolve`] hook: turns a logical URI (`PYRONAME:`, `PYROMETA:`) into a direct `PYRO:` one.
//!
//! rmi-core knows no name server; `rmi-naming` implements this trait and the `rmi` facade
//! installs it in the proxies it builds. A proxy calls it each time it dials.

use futures_util::future::BoxFuture;

use crate::error::Error;
use crate::uri::Uri;

/// Resolves logical URIs to direct ones.
pub trait Resolve: Send + Sync + 'static {
    /// Returns the `PYRO:` URI that `uri` currently names.
    fn resolve<'a>(&'a self, uri: &'a Uri) -> BoxFuture<'a, Result<Uri, Error>>;

    /// Told by a proxy that dialing `direct`, which `logical` resolved to, failed on the
    /// connection (refused, unreachable, timed out, closed during the handshake). A resolver
    /// choosing among several daemons can pass over `direct` for a while, so the proxy's next
    /// dial fails over to a live one. The default does nothing.
    fn dial_failed(&self, logical: &Uri, direct: &Uri) {
        let _ = (logical, direct);
    }

    /// Where `logical` will most likely resolve to, known without asking anyone (the one URI it
    /// resolved to last time, say), or `None`. A proxy that has to wait for
    /// [`resolve`](Self::resolve) dials this daemon meanwhile, and uses that connection if the
    /// answer is the same daemon (else closes it unused: nothing is sent on it before the
    /// answer). The default knows nothing.
    fn likely(&self, logical: &Uri) -> Option<Uri> {
        let _ = logical;
        None
    }
}

static DEFAULT: std::sync::OnceLock<std::sync::Arc<dyn Resolve>> = std::sync::OnceLock::new();

/// Installs the resolver every new [`ProxyBuilder`](crate::ProxyBuilder) starts with (the
/// first installed wins). The `rmi` facade installs the name server's on first use, so proxies
/// received inside values (autoproxy) resolve `PYRONAME:` too.
pub fn install_default(resolver: std::sync::Arc<dyn Resolve>) {
    let _ = DEFAULT.set(resolver);
}

/// The installed default resolver, if any.
pub fn default_resolver() -> Option<std::sync::Arc<dyn Resolve>> {
    DEFAULT.get().cloned()
}

static FALLBACK: std::sync::OnceLock<fn() -> std::sync::Arc<dyn Resolve>> =
    std::sync::OnceLock::new();

/// Installs what a proxy with no resolver of its own asks for one when it dials a logical URI
/// and no default is installed (the first installed wins): the `rmi` facade's installs the
/// name server's default then, in a process that serves objects or receives proxies, so that
/// a received `PYRONAME:` proxy resolves, without installing a default before the program
/// had the chance to set its own.
pub fn install_fallback(make: fn() -> std::sync::Arc<dyn Resolve>) {
    let _ = FALLBACK.set(make);
}

/// The resolver a proxy without one uses at its dial: the default, else the fallback's.
pub(crate) fn at_dial() -> Option<std::sync::Arc<dyn Resolve>> {
    default_resolver().or_else(|| FALLBACK.get().map(|make| make()))
}
