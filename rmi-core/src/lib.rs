//! The runtime of [rmi](https://docs.rs/rmi): URIs, Pyro5's wire protocol (502) and Pyro4's
//! (48), the payload codecs (bincode, serpent, json, msgpack, marshal), transport, the
//! [`Daemon`] that serves objects and the [`Proxy`] that calls them.
//!
//! Most users depend on the `rmi` facade instead, which adds the `#[remote]` macro and the name
//! server. This crate works on its own with direct `PYRO:` URIs.
//!
//! # Layout
//!
//! A call flows one way: [`Proxy`] → [`protocol::codec`] → [`protocol::frame`] →
//! [`transport`] → [`Daemon`] → [`Dispatch`] → your object, and the reply comes back the
//! same way. The modules, bottom to top:
//!
//! - [`error`]: [`Error`], what a caller sees, and [`RemoteError`], what crosses the wire;
//! - [`uri`]: `PYRO:`, `PYRONAME:` and `PYROMETA:` URIs; no I/O;
//! - [`protocol`]: the wire, pure: frames, per-format codecs, and the names both sides share;
//! - [`auth`]: the shared-secret handshake (both halves) and message signing;
//! - [`transport`]: byte I/O and framed reading and writing;
//! - [`dispatch`]: the server side of one object ([`Dispatch`], [`RemoteStream`]);
//! - [`resolve`]: the hook that turns logical URIs into direct ones;
//! - [`proxy`]: the client edge ([`Proxy`], item streams, batches, the blocking facade);
//! - [`daemon`]: the server edge ([`Daemon`], call context, registration, streams).
//!
//! # Feature flags
//!
//! - `tls` (on by default): TLS through rustls with the ring provider (`DaemonBuilder::tls`,
//!   `ProxyBuilder::tls`, the `rustls` re-export). Without it, rustls and ring are not built.
//!
//! # Example
//!
//! A hand-written [`Dispatch`] served over loopback (generated code does the same for you):
//!
//! ```
//! use rmi_core::dispatch::{BoxFuture, Outcome};
//! use rmi_core::protocol::codec::{Args, Metadata};
//! use rmi_core::{Daemon, Dispatch, Proxy, RemoteError};
//!
//! struct Echo;
//! impl Dispatch for Echo {
//!     fn metadata(&self) -> Metadata {
//!         Metadata { methods: vec!["echo".into()], ..Metadata::default() }
//!     }
//!     fn dispatch<'a>(&'a self, method: &'a str, args: Args) -> BoxFuture<'a, Result<Outcome, RemoteError>> {
//!         Box::pin(async move {
//!             let (text,): (String,) = args.decode().map_err(|e| RemoteError::bad_arguments(method, e))?;
//!             Ok(Outcome::Value(args.serializer().encode(&text).unwrap().into()))
//!         })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rmi_core::Error> {
//! let daemon = Daemon::bind("127.0.0.1:0").await?;
//! let uri = daemon.register(Echo)?;
//! tokio::spawn({ let d = daemon.clone(); async move { d.serve().await } });
//!
//! let proxy: Proxy = Proxy::builder(uri).connect().await?;
//! let reply: String = proxy.call("echo", &("hello",)).await?;
//! assert_eq!(reply, "hello");
//! daemon.shutdown();
//! # Ok(()) }
//! ```

// RemoteError is returned by value on the (cold) error path of every dispatch; boxing it
// would cost an allocation per remote error for no gain on the success path.
#![allow(clippy::result_large_err)]

pub mod auth;
mod chain;
pub mod daemon;
pub mod dispatch;
pub mod error;
pub mod protocol;
pub mod proxy;
pub mod resolve;
mod spans;
pub mod transport;
pub mod uri;

pub use auth::{HmacKey, SharedSecret};
pub use daemon::context::{self, CallContext, InScope};
pub use daemon::{BindAddr, Daemon, DaemonBuilder, InstanceMode, Registration};
pub use dispatch::{Dispatch, RemoteStream};
pub use error::{Error, RemoteError, RemoteErrorKind, Result};
pub use protocol::{DecodeLimits, Metadata, Serializer};
pub use proxy::batch::{self, Batch, BatchResults, Slot};
pub use proxy::blocking;
pub use proxy::stream::ItemStream;
pub use proxy::{CallOptions, Proxy, ProxyBuilder, RawReply, Reply};
pub use resolve::Resolve;
/// The `rustls` crate, to build TLS configurations for daemons and proxies.
#[cfg(feature = "tls")]
pub use rustls;
pub use uri::{IntoUri, Location, Uri};
/// The `uuid` crate, for correlation ids.
pub use uuid;

/// Items used by code that `#[remote]` generates; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::dispatch::{BoxFuture, Dispatch, Outcome, RemoteStream};
    pub use crate::error::{Error, RemoteError, RemoteErrorKind};
    pub use crate::protocol::codec::{Args, ByteArg, Metadata};
    pub use crate::proxy::batch::{Batch, BatchResults, Slot};
    pub use crate::proxy::blocking;
    pub use crate::proxy::stream::ItemStream;
    pub use crate::proxy::CallOptions;
    pub use crate::proxy::{Proxy, ProxyBuilder};
    pub use crate::uri::{IntoUri, Uri};
    pub use bytes::Bytes;
    pub use serde;
    pub use serde_bytes;
    pub use std;
    pub use uuid::Uuid;

    /// A proxy builder for `uri` with no name-server resolver (direct `PYRO:` URIs only).
    pub fn proxy_builder(uri: impl IntoUri) -> Result<ProxyBuilder, Error> {
        Ok(ProxyBuilder::new(uri.into_uri()?))
    }

    /// A setter's value, never left out of its call as a trailing `None` argument is (see
    /// `codec::trim`): Python's `__setattr__` takes it, `None` included.
    #[derive(Debug)]
    pub struct Untrimmed<T>(pub T);

    impl<T: serde::Serialize> serde::Serialize for Untrimmed<T> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_newtype_struct("Untrimmed", &self.0)
        }
    }

    /// A proxy received inside a value (a typed proxy's `Deserialize`); the `rmi` facade's
    /// also installs the name server's resolver as the fallback (`resolve::install_fallback`).
    pub fn received_proxy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Proxy, D::Error> {
        <Proxy as serde::Deserialize>::deserialize(d)
    }

    /// Called when a generated server is made; the `rmi` facade's installs the name server's
    /// resolver as the fallback (a process that serves may receive `PYRONAME:` proxies).
    pub fn serving() {}

    /// Encodes a method's result in the serializer of its arguments.
    pub fn encode_result<T: serde::Serialize>(
        args: &Args,
        value: &T,
    ) -> Result<Outcome, RemoteError> {
        args.encode_bytes(value)
            .map(Outcome::Value)
            .map_err(unserializable)
    }

    /// [`encode_result`] for a `Vec<u8>` result: written as bytes, and a large one (under
    /// bincode or msgpack) sent from its own buffer rather than copied.
    pub fn encode_bytes_result(args: &Args, value: Vec<u8>) -> Result<Outcome, RemoteError> {
        let value = ByteArg::from(value);
        let encode = || args.encode_bytes(&value);
        // (Pyro4's class renaming rewrites an encoding afterwards: nothing is left out there.)
        let encoded = match args.protocol() {
            crate::protocol::frame::Protocol::Pyro5 => crate::protocol::codec::offering(encode),
            crate::protocol::frame::Protocol::Pyro4 => encode().map(|head| (head, Vec::new())),
        };
        match encoded {
            Ok((head, tail)) if tail.is_empty() => Ok(Outcome::Value(head)),
            Ok((head, tail)) => Ok(Outcome::Pieces(head, tail)),
            Err(e) => Err(unserializable(e)),
        }
    }

    fn unserializable(e: Error) -> RemoteError {
        RemoteError::new(
            RemoteErrorKind::Other,
            "rmi.SerializeError",
            format!("could not serialize the result: {e}"),
        )
    }

    /// [`encode_raised`] for a `Vec<u8>` result (see [`encode_bytes_result`]).
    pub fn encode_raised_bytes<E: Into<RemoteError>>(
        args: &Args,
        result: Result<Vec<u8>, E>,
    ) -> Result<Outcome, RemoteError> {
        match result {
            Ok(value) => encode_bytes_result(args, value),
            Err(e) => Err(raised(e)),
        }
    }

    /// Encodes the result of a `#[rmi(raises)]` method: `Ok` as the value, `Err` raised as
    /// the call's remote exception. A raised error cannot pass for one of the daemon's own
    /// answers that mean "not executed" (unknown method, bad arguments) or for a panic.
    pub fn encode_raised<T: serde::Serialize, E: Into<RemoteError>>(
        args: &Args,
        result: Result<T, E>,
    ) -> Result<Outcome, RemoteError> {
        match result {
            Ok(value) => encode_result(args, &value),
            Err(e) => Err(raised(e)),
        }
    }

    /// A method's own error, which cannot pass for one of the daemon's answers.
    fn raised<E: Into<RemoteError>>(e: E) -> RemoteError {
        let mut e: RemoteError = e.into();
        // (An unknown object reads as a call that never ran, and a deadline passed as the
        // caller's own timeout: either one raised by the method would have a retry run it
        // again.)
        if !e.daemon_answer
            && matches!(
                e.kind,
                RemoteErrorKind::UnknownObject
                    | RemoteErrorKind::UnknownMethod
                    | RemoteErrorKind::BadArguments
                    | RemoteErrorKind::Panic
                    | RemoteErrorKind::DeadlineExceeded
            )
        {
            e.kind = RemoteErrorKind::Other;
        }
        e
    }

    /// [`encode_raised`] for a stream: `Ok` streams, `Err` is raised before the first item.
    pub fn encode_raised_stream<T: serde::Serialize + Send + 'static, E: Into<RemoteError>>(
        args: &Args,
        result: Result<RemoteStream<T>, E>,
    ) -> Result<Outcome, RemoteError> {
        match result {
            Ok(stream) => encode_stream(args, stream),
            Err(e) => Err(raised(e)),
        }
    }

    /// Hands a method's stream to the daemon, items encoded in the arguments' serializer.
    pub fn encode_stream<T: serde::Serialize + Send + 'static>(
        args: &Args,
        stream: RemoteStream<T>,
    ) -> Result<Outcome, RemoteError> {
        Ok(Outcome::Stream(
            stream.encode_in(args.serializer(), args.protocol()),
        ))
    }
}
