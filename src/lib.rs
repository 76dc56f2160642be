//! rmi: remote objects for Rust in the spirit of Pyro. Define a trait, serve an implementation
//! from a [`Daemon`], find it by name through the name server, and call it through a typed
//! async proxy as if it were local.
//!
//! This crate is the one dependency you add. It joins the runtime (`rmi-core`), the
//! [`remote`] macro (`rmi-macros`) and the name server ([`naming`]), so `PYRONAME:` and
//! `PYROMETA:` URIs work wherever a URI does.
//!
//! # Example
//!
//! The Pyro tutorial, in one process over loopback:
//!
//! ```
//! #[rmi::remote]
//! pub trait Greeter {
//!     /// Says hello.
//!     #[rmi(name = "welcomeMessage")]
//!     async fn welcome_message(&self, name: String) -> String;
//! }
//!
//! struct Server;
//! impl Greeter for Server {
//!     async fn welcome_message(&self, name: String) -> String {
//!         format!("Hi welcome {name}")
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rmi::Error> {
//! // A name server on a free port (the `rmi-ns` binary runs the same thing).
//! let ns = rmi::naming::NameServer::builder().port(0).no_broadcast().start().await?;
//!
//! // Server: daemon, register the object, register its URI under a name.
//! let daemon = rmi::Daemon::bind("127.0.0.1:0").await?;
//! let uri = daemon.register(GreeterServer::new(Server))?;
//! let names = rmi::naming::NameServerProxy::connect(ns.uri()).await?;
//! names.register("server", &uri).await?;
//! tokio::spawn({ let d = daemon.clone(); async move { d.serve().await } });
//!
//! // Client: a proxy by name, then a call.
//! let greeter = GreeterProxy::connect(format!("PYRONAME:server@{}", ns.daemon().location())).await?;
//! assert_eq!(greeter.welcome_message("Rashmi".into()).await?, "Hi welcome Rashmi");
//! # daemon.shutdown();
//! # Ok(()) }
//! ```
//!
//! # Serializers
//!
//! Calls use bincode by default (fastest; Rust to Rust). Select msgpack per proxy with
//! `Proxy::builder(uri).serializer(Serializer::MsgPack)`. bincode is not self-describing:
//! untagged enums, `#[serde(flatten)]` and `skip_serializing_if` fail at run time under it;
//! use msgpack for such types. Byte buffers should use `serde_bytes`.

pub use rmi_core::{
    batch, blocking, context, daemon, dispatch, error, protocol, proxy, stream, transport, uri, uuid, Batch,
    BatchResults, CallContext, CallOptions, Daemon, DaemonBuilder, DecodeLimits, Dispatch, Error, InstanceMode,
    IntoUri, ItemStream, Location, Metadata, Proxy, ProxyBuilder, Registration, RemoteError, RemoteErrorKind,
    RemoteStream, Reply, Resolve, Result, Serializer, Slot, Uri,
};

/// Makes a trait a remote contract.
///
/// ```
/// #[rmi::remote]
/// pub trait Counter {
///     /// Adds `n` and returns the new total.
///     async fn add(&self, n: u64) -> u64;
///     /// Application errors travel as `Result<U, E>`; the caller gets `Result<Result<U, E>, rmi::Error>`.
///     #[rmi(name = "checkedDiv")]
///     async fn checked_div(&self, a: u64, b: u64) -> Result<u64, String>;
/// }
/// ```
///
/// generates, next to the trait:
///
/// - `CounterServer<T>`: `CounterServer::new(obj)` wraps an implementation for
///   [`Daemon::register`];
/// - `CounterProxy`: `Clone + Send + Sync`, made by `CounterProxy::connect(uri)` (`PYRO:`,
///   `PYRONAME:` or `PYROMETA:`) or `CounterProxy::builder(uri)?.….connect()`, with one
///   `async fn` per method returning `Result<T, rmi::Error>`.
///
/// Methods must be `async fn(&self, args…) -> T` with owned serde types. Implement them with
/// plain `async fn`: the macro rewrites each to `fn … -> impl Future<Output = T> + Send` and
/// adds `Send + Sync + 'static` to the trait, so a non-`Send` future is reported at your impl.
/// `#[rmi(name = "…")]` sets the wire name (default: the Rust name). Doc comments and `#[cfg]`
/// carry over to the generated items. `#[remote(crate = path)]` points generated code at
/// another path to this crate.
pub use rmi_macros::remote;

/// The name server: run one, find one, register and look up names.
pub mod naming {
    pub use rmi_naming::*;

    /// A resolver that finds name servers with the default [`NsLocator`] (localhost, then the
    /// loopback broadcast). The first call also installs it as the process default, so proxies
    /// received inside values resolve `PYRONAME:` too.
    pub fn default_resolver() -> std::sync::Arc<dyn rmi_core::Resolve> {
        let resolver: std::sync::Arc<dyn rmi_core::Resolve> = std::sync::Arc::new(NamingResolver::default());
        rmi_core::resolve::install_default(resolver.clone());
        resolver
    }
}

/// Settings for an untyped proxy to `uri`, with the default name-server resolver installed so
/// `PYRONAME:`/`PYROMETA:` work.
pub fn proxy_builder(uri: impl IntoUri) -> Result<ProxyBuilder> {
    Ok(ProxyBuilder::new(uri.into_uri()?).resolver(naming::default_resolver()))
}

/// Items used by code that `#[remote]` generates; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use rmi_core::__private::*;

    /// A proxy builder for `uri` that resolves names through the name server.
    pub fn proxy_builder(uri: impl IntoUri) -> Result<ProxyBuilder, Error> {
        crate::proxy_builder(uri)
    }
}
