#![doc = include_str!("../docs/rmi.md")]

pub use rmi_core::{
    auth, batch, blocking, context, daemon, dispatch, error, protocol, proxy, transport, uri, uuid,
    Batch, BatchResults, BindAddr, CallContext, CallOptions, Daemon, DaemonBuilder, DecodeLimits,
    Dispatch, Error, HmacKey, InScope, InstanceMode, IntoUri, ItemStream, Location, Metadata,
    Proxy, ProxyBuilder, RawReply, Registration, RemoteError, RemoteErrorKind, RemoteStream, Reply,
    Resolve, Result, Serializer, SharedSecret, Slot, Uri,
};

/// The `rustls` crate, to build TLS configurations (feature `tls`).
#[cfg(feature = "tls")]
pub use rmi_core::rustls;

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
/// rewrites the trait and generates four types next to it, each with the trait's visibility:
///
/// - `Counter`, the trait itself, as the contract: each `async fn` becomes
///   `fn … -> impl Future<Output = T> + Send` (a default body becomes an `async move` block),
///   `Send + Sync + 'static` is added to its supertraits, and the `#[rmi(…)]` attributes are
///   removed;
/// - `CounterServer<T>`, the server side: `CounterServer::new(obj)` (or `from_arc(arc)` for an
///   object shared with other code) wraps an implementation for [`Daemon::register`]. It
///   implements [`Dispatch`] (one `match` arm per wire name: decode the arguments, call, encode
///   the result) and `Clone` (clones share the object); `get_ref()` returns the object;
/// - `CounterProxy`, the typed async client: `Clone + Send + Sync` (clones share one connection),
///   made by `CounterProxy::connect(uri)` (`PYRO:`, `PYRONAME:` or `PYROMETA:`),
///   `CounterProxy::builder(uri)?.….connect()` (a [`ProxyBuilder`]), `from_uri(uri)` (dials on
///   its first call) or `from_proxy(proxy)` and `From<Proxy>`, with one `async fn` per method
///   returning `Result<T, rmi::Error>`: `Result<(), rmi::Error>` for a `#[rmi(oneway)]` method,
///   and `Result<ItemStream<T>, rmi::Error>` (an [`ItemStream`]) for one that returns
///   [`RemoteStream<T>`](RemoteStream). `with_timeout`, `with_options`, `with_annotation`,
///   `with_correlation_id` and `with_retries` return a proxy on the same connection with other
///   call settings; `proxy()` and `into_proxy()` give the untyped [`Proxy`]. It implements
///   `Serialize` and `Deserialize`, travelling as the object's URI, so methods can take and
///   return proxies (a received one dials on its first call);
/// - `CounterBatch`, calls queued to go in one round trip, from `CounterProxy::batch()`: one
///   method per method (streams excepted) returning a [`Slot`] for its result, then `send()`
///   (results in order; execution stops at the first error) or `send_oneway()`;
/// - `CounterBlockingProxy`, the blocking client for synchronous programs (not for use inside
///   an async runtime): `CounterBlockingProxy::connect(uri)` or `connect_with(builder)`, one
///   blocking method per method (a stream becomes a blocking iterator), and `as_async()` for the
///   `CounterProxy` underneath.
///
/// Methods must be `async fn(&self, args…) -> T` with owned serde types. Implement them with
/// plain `async fn`: since the contract asks for `Send` futures, a non-`Send` future is reported
/// at your impl. `#[rmi(name = "…")]` sets the wire name (default: the Rust name),
/// `#[rmi(oneway)]` sends without waiting for a reply (the method must return `()`), and
/// `#[rmi(idempotent)]` marks a method safe to run twice, so a call that fails on the connection
/// is retried (once, or as often as `with_retries` allows). In the Pyro formats a proxy leaves
/// trailing `None` arguments out of a call, so that a Python method's defaults apply
/// (`def greet(self, name, greeting="Hello")`); `#[rmi(keep_none)]` sends them as `None`, for
/// a Python method whose parameter has no default or whose `None` means something. Doc comments, `#[cfg]` and
/// `#[deprecated]` carry over to the generated items (a deprecated method is still served; the
/// callers of its proxy, batch and blocking methods are warned); two methods that `#[cfg]`
/// keeps apart may share a name (a build where both are compiled in fails), and a parameter
/// cannot have a `#[cfg]` of its own. `#[remote(crate = path)]`
/// points generated code at another path to this crate. A method cannot share a Rust name with
/// one the generated types have themselves (`connect`, `batch`, `send`, `as_async`…; the error
/// says which): rename it and keep the wire name with `#[rmi(name = "…")]`. A raw identifier
/// (`r#type`, a parameter `r#match`) is its plain name on the wire and as a keyword argument,
/// as Python callers write it.
///
/// A parameter or result of type `Vec<u8>` crosses as bytes, written and read in one copy:
/// under bincode the wire is the same as a sequence of `u8`, so untyped callers still send a
/// plain `Vec<u8>`; Python receives `bytes` (in serpent and json, Pyro's base64 dict). A
/// `Vec<u8>` inside another type, or behind a type alias, is not seen: use `serde_bytes` there.
///
/// `#[rmi(raises)]` on a method returning `Result<T, E>` (with `E: Into<rmi::RemoteError>`)
/// raises its error instead of returning it: an `Err` travels as the call's remote exception
/// (like a Python `raise`), and the proxy method returns `Result<T, rmi::Error>` with that error
/// as [`Error::Remote`] (a raised error never passes for the daemon's own answers: "unknown
/// object", "unknown method", "bad arguments", a panic or a deadline exceeded). In a batch,
/// a raised error stops the batch. Without the attribute, a `Result<U, E>` is an ordinary value.
/// The macro knows a `Result` by its name, so a one-argument alias named `Result` (as
/// `io::Result<T>`: an `io::Error` raises Python's `OSError`, or the subclass Python raises for
/// the same failure, such as `FileNotFoundError`) works too, and one named otherwise does not. A stream that can fail before
/// its first item returns `Result<RemoteStream<T>, E>` with `#[rmi(raises)]`: an `Ok` streams,
/// an `Err` is the call's error.
///
/// `#[rmi(property)]` on `async fn verbose(&self) -> T` makes it a property, as a Python
/// `@property` exposed by Pyro: Python reads it as `proxy.verbose`, and the proxy's
/// `verbose()` reads it through Pyro's `__getattr__`, from a Python object's property too.
/// `#[rmi(setter)]` on `async fn set_verbose(&self, value: T)` sets it (`proxy.verbose =
/// value`, Pyro's `__setattr__`); `#[rmi(setter, name = "…")]` names another property. Both
/// may raise (`#[rmi(raises)]`); a property is listed in the metadata's `attrs`, not its
/// methods, cannot be called as a method, and is not batched. A property without a setter is
/// read only: setting it raises `AttributeError`, as does an unknown one.
///
/// Wire names starting with `_` are refused, but for Python's special methods that Pyro 5
/// exposes and its proxy calls for `len(proxy)`, `proxy[i]`, `proxy[i] = v`, `del proxy[i]`
/// and `for x in proxy`: `#[rmi(name = "__len__")]`, `"__getitem__"`, `"__setitem__"`,
/// `"__delitem__"`, `"__iter__"` and the like (not the private ones, such as `__init__`).
///
/// `#[remote(server_only)]` generates the contract and `{Trait}Server<T>` only, for objects
/// whose callers are not Rust proxies (Python's Pyro, or the runtime itself: the daemon's own
/// `Pyro.Daemon` object is served this way).
pub use rmi_macros::remote;

/// The name server: run one, find one, register and look up names.
pub mod naming {
    pub use rmi_naming::*;

    /// The process's resolver: every proxy made by [`proxy_builder`](crate::proxy_builder)
    /// or a generated `connect`/`from_uri`/`builder` starts with it, and proxies received
    /// inside values resolve `PYRONAME:` with it. One for every proxy, so lookups reuse its
    /// name-server connections.
    ///
    /// It is the one [`set_default_resolver`] installed (or
    /// `rmi_core::resolve::install_default`); else, installed by the first call, a
    /// [`NamingResolver`] that finds name servers with the default [`NsLocator`] (localhost,
    /// then the loopback broadcast) and dials ahead of lookups unless `RMI_DIAL_AHEAD=0`
    /// ([`NamingResolver::dial_ahead_from_env`]).
    pub fn default_resolver() -> std::sync::Arc<dyn rmi_core::Resolve> {
        if let Some(installed) = rmi_core::resolve::default_resolver() {
            return installed;
        }
        rmi_core::resolve::install_default(std::sync::Arc::new(
            NamingResolver::default().dial_ahead_from_env(),
        ));
        // The first installed wins: another thread's, if it raced this one.
        rmi_core::resolve::default_resolver().expect("a default resolver was just installed")
    }

    /// Makes `resolver` the process's [`default_resolver`]: for a name server on another
    /// host or port, over TLS or with a secret, or with a lookup cache, for every proxy
    /// without a resolver of its own, received ones included. Call it before the first proxy
    /// is made: once a default is in use it stays, and this says so.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use rmi::naming::{NamingResolver, NsLocator};
    /// let locator = NsLocator::new().host("127.0.0.1").port(19090).no_broadcast();
    /// rmi::naming::set_default_resolver(Arc::new(NamingResolver::new(locator))).unwrap();
    /// ```
    pub fn set_default_resolver(
        resolver: std::sync::Arc<dyn rmi_core::Resolve>,
    ) -> Result<(), rmi_core::Error> {
        let wanted = std::sync::Arc::as_ptr(&resolver).cast::<()>();
        rmi_core::resolve::install_default(resolver);
        match rmi_core::resolve::default_resolver() {
            Some(installed) if std::sync::Arc::as_ptr(&installed).cast::<()>() == wanted => Ok(()),
            _ => Err(rmi_core::Error::Resolve(
                "a default resolver is in use already: set it before the first proxy is made"
                    .into(),
            )),
        }
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

    /// A proxy received inside a value: `PYRONAME:`/`PYROMETA:` resolve, at its dial, through
    /// the process's default resolver, the name server's if the program set none (a process
    /// that only serves receives a `PYRONAME:` callback proxy from a Python client, and
    /// calls it).
    pub fn received_proxy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Proxy, D::Error> {
        serving();
        <Proxy as serde::Deserialize>::deserialize(d)
    }

    /// A generated server is made: proxies this process receives may be `PYRONAME:` ones
    /// (an untyped `rmi::Proxy` argument too), which resolve at their dial through the
    /// default resolver, the name server's if the program set none by then.
    pub fn serving() {
        rmi_core::resolve::install_fallback(crate::naming::default_resolver);
    }
}
