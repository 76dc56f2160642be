//! The name server of [rmi](https://docs.rs/rmi): registration, lookup, discovery and
//! resolution of `PYRONAME:`/`PYROMETA:` URIs, with Pyro5's semantics.
//!
//! Run it as a process with the `rmi-ns` binary, or in-process with [`NameServer::builder`].
//!
//! # Feature flags
//!
//! - `tls` (on by default): `NsLocator::tls`, to find a name server that serves TLS.
//! - `sqlite` (on by default here; off in `rmi` unless asked): [`Storage::Sql`], names kept in
//!   an SQLite file (SQLite compiled in).
//! - `etcd` (off by default): [`Storage::Etcd`], names in an etcd cluster that several name
//!   servers share (`registry::EtcdStore`); building it needs `protoc`.
//!
//! # Liveness
//!
//! A daemon that registers its names through [`NameServerProxy::lease`] holds them under one
//! lease that a background task keeps alive; they vanish within the TTL if the process dies,
//! at once on [`LeasedNames::revoke`], and are registered again by themselves if the name server
//! loses the lease. Names registered plainly stay until removed, as in Pyro.
//!
//! # Several daemons behind one name
//!
//! Daemons that serve the same object register one name with
//! [`NameServerProxy::register_shared`] (or `register_shared_leased`, so each daemon's entry
//! vanishes with it). `PYRONAME:` and `PYROMETA:` then pick among the live entries, at random
//! or in turn ([`Pick`]), and a proxy whose daemon died dials another on its next call. Pyro's
//! `register` is unchanged: it gives a name one entry. A [`NamingResolver`] can also cache
//! lookups, kept fresh by a watch on the name server ([`NameServerProxy::watch`]), and answer
//! from entries of bounded age when the name server is down ([`NamingResolver::cache`]).
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rmi_core::Error> {
//! use rmi_naming::{NameServer, NamingResolver, NsLocator};
//!
//! let ns = NameServer::builder().port(0).no_broadcast().start().await?;
//! let port = ns.daemon().local_addr().expect("tcp").port();
//! let proxy = NsLocator::new().host("127.0.0.1").port(port).locate().await?;
//!
//! let uri: rmi_core::Uri = "PYRO:obj_1@127.0.0.1:4000".parse()?;
//! proxy.register("example.greeter", &uri).await?;
//! assert_eq!(proxy.lookup("example.greeter").await?, uri);
//!
//! let resolver = NamingResolver::new(NsLocator::new().host("127.0.0.1").port(port));
//! let logical: rmi_core::Uri = "PYRONAME:example.greeter".parse()?;
//! assert_eq!(resolver.resolve_uri(&logical).await?, uri);
//! # Ok(()) }
//! ```

mod autoclean;
pub mod broadcast;
mod client;
mod lease;
pub mod locate;
pub mod registry;
mod resolve;
mod serve;
mod server;

pub use autoclean::Autoclean;
pub use broadcast::BroadcastResponder;
pub use client::NameServerProxy;
pub use lease::{LeasedNames, DEFAULT_LEASE_TTL};
pub use locate::{locate_ns, NsLocator, PYRO_ENV};
pub use registry::{LeaseId, Limits, Registry, Storage, NAME_SERVER_NAME};
pub use resolve::{
    NamingResolver, Pick, DEFAULT_LOOKUP_TIMEOUT, DEFAULT_SUSPECT_FOR, DEFAULT_WATCH_PROBE,
    MIN_WATCH_PROBE,
};
pub use serve::ServeSimple;
pub use server::{
    Found, NameServer, NameServerApi, NameServerApiProxy, NameServerApiServer, NameServerBuilder,
    NameServerHandle, TagsOrFlag, Truthy, NAME_SERVER_OBJECT_ID,
};

use serde::{Deserialize, Serialize};

/// A naming operation was refused (unknown name, name taken, bad pattern); Pyro's `NamingError`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct NamingError {
    /// What went wrong.
    pub message: String,
    /// The store could not answer (an etcd cluster out of reach): an outage, raised as Pyro's
    /// `CommunicationError`, not a refusal.
    #[serde(skip)]
    unavailable: bool,
    /// The Python class it is raised as, where Pyro's name server raises another than
    /// `NamingError` for the same refusal (`ValueError` for two filters at once, `TypeError`
    /// for arguments Python itself would refuse), so that a Python client's `except` catches it.
    #[serde(skip)]
    class: Option<&'static str>,
}

impl NamingError {
    /// A naming error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        NamingError {
            message: message.into(),
            unavailable: false,
            class: None,
        }
    }

    /// Refused as Pyro's name server refuses it: with Python's `ValueError`.
    pub(crate) fn value_error(message: impl Into<String>) -> Self {
        NamingError {
            class: Some("builtins.ValueError"),
            ..NamingError::new(message)
        }
    }

    /// Refused as Python refuses the arguments: with `TypeError`.
    pub(crate) fn type_error(message: impl Into<String>) -> Self {
        NamingError {
            class: Some("builtins.TypeError"),
            ..NamingError::new(message)
        }
    }

    /// The store could not answer now (its backend out of reach), with `message`: raised to
    /// the caller as Pyro's `CommunicationError`, so that a resolver takes the name server for
    /// down (and may answer from its cache) rather than the name for unknown.
    pub fn unavailable(message: impl Into<String>) -> Self {
        NamingError {
            unavailable: true,
            ..NamingError::new(message)
        }
    }

    /// True for [`unavailable`](Self::unavailable)'s errors.
    pub fn is_unavailable(&self) -> bool {
        self.unavailable
    }
}

/// A naming failure raised to the caller as Pyro's `NamingError` (a Python client catches
/// `Pyro5.errors.NamingError`; a Rust one gets `Error::Resolve`); where Pyro's name server
/// raises `ValueError` or `TypeError`, that (`Error::Remote`, `Error::BadArguments`).
impl From<NamingError> for rmi_core::RemoteError {
    fn from(e: NamingError) -> Self {
        if let Some(class) = e.class {
            let kind = match class {
                "builtins.TypeError" => rmi_core::RemoteErrorKind::BadArguments,
                _ => rmi_core::RemoteErrorKind::Other,
            };
            return rmi_core::RemoteError::new(kind, class, e.message);
        }
        if e.unavailable {
            return rmi_core::RemoteError::new(
                rmi_core::RemoteErrorKind::Other,
                STORE_UNAVAILABLE,
                e.message,
            );
        }
        rmi_core::RemoteError::new(
            rmi_core::RemoteErrorKind::Resolve,
            "Pyro5.errors.NamingError",
            e.message,
        )
    }
}

/// The class a name server raises when its store cannot answer (see
/// [`NamingError::unavailable`]).
pub(crate) const STORE_UNAVAILABLE: &str = "Pyro5.errors.CommunicationError";
