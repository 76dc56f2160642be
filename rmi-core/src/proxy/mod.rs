//! The client side: [`Proxy`], one lazily dialed, multiplexed connection shared by its clones.
//!
//! Many calls may be in flight at once; each takes a sequence number that is not in use (never
//! 0, which belongs to CONNECT and PING), and a reader task hands each reply to the call with
//! that number. A call that times out or is dropped keeps its number reserved until its reply
//! arrives or the connection closes, so a late reply can never reach another call. At most
//! `max_in_flight` calls are live per connection; more wait for a slot.
//!
//! Nothing needs configuring to call a Python daemon: the CONNECT, in serpent, offers bincode
//! in an annotation only rmi daemons answer, so calls to an rmi daemon go in bincode and calls
//! to a Python one in serpent; a Pyro4 daemon answers a Pyro5 CONNECT in its own protocol 48,
//! and the proxy dials it again in that protocol (see [`ProxyBuilder::serializer`] and
//! [`ProxyBuilder::protocol`] to set either).
//!
//! When the connection dies, the next call dials again (resolving a logical URI again, so a
//! server that moved is found), once for all waiting calls, with jittered backoff. A failed
//! call is retried only when it provably did not execute, when the proxy is marked
//! [`idempotent`](Proxy::idempotent), or when it has [`retries`](Proxy::with_retries).
//!
//! # Layout
//!
//! - `builder`: [`ProxyBuilder`], the settings and their defaults;
//! - `call`: the `call*` entry points, retries and the INVOKE message;
//! - `connection`: one open connection: handshake, in-flight table, reader and writer tasks;
//! - `dial`: resolving, dialing with jittered backoff, and reconnecting;
//! - [`stream`]: [`ItemStream`](crate::ItemStream), the caller's side of a streamed result;
//! - [`batch`]: [`Batch`], calls sent in one round trip;
//! - [`blocking`]: the blocking facade for synchronous programs.

pub mod batch;
pub mod blocking;
mod builder;
mod call;
mod connection;
mod dial;
mod in_flight;
pub mod stream;

pub use builder::{
    ProxyBuilder, DEFAULT_ABANDONED_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HANDSHAKE,
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_RECONNECT_ATTEMPTS,
};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::Error;
use crate::protocol::codec::{DecodeLimits, Metadata, Serializer};
use crate::protocol::frame::{Annotation, Protocol};
use crate::transport::received::{self, DialSecurity};
use crate::uri::Uri;
use batch::Batch;
use connection::Connection;

/// Per-call settings a proxy applies; a proxy made with [`Proxy::with_timeout`] and friends
/// shares the connection but carries its own.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Deadline for the call; sent along as the `DDLN` annotation.
    pub timeout: Option<Duration>,
    /// Annotations sent with every call.
    pub annotations: Vec<Annotation>,
    /// Correlation id for every call (a fresh random one per call when `None`).
    pub correlation_id: Option<uuid::Uuid>,
    /// Retries after a communication failure (the call may have run).
    pub retries: u32,
    /// The methods called are safe to run twice: retry once after a communication failure.
    pub idempotent: bool,
}

/// A result with what came along with it.
#[derive(Debug, Clone)]
pub struct Reply<R> {
    /// The method's result.
    pub value: R,
    /// Annotations the method set on its reply.
    pub annotations: Vec<Annotation>,
    /// The correlation id of the call.
    pub correlation_id: uuid::Uuid,
}

/// A reply as it came, not decoded: Pyro's `_pyroRawWireResponse`, for a program that passes
/// results on as they are (the HTTP gateway hands a daemon's JSON to browsers unchanged: NaN,
/// integers of any size, and an exception's arguments and attributes included). See
/// [`Proxy::call_raw_kwargs`].
#[derive(Debug, Clone)]
pub struct RawReply {
    /// The format of `payload`: the one the call was made in.
    pub serializer: Serializer,
    /// The result (or, with [`exception`](Self::exception), the exception the method raised),
    /// as the daemon encoded it; inflated if it came compressed, in one piece.
    pub payload: Bytes,
    /// `payload` is an exception (Pyro's `FLAGS_EXCEPTION`).
    pub exception: bool,
    /// The message's flag bits (`rmi::protocol::frame::FLAGS_*`), `FLAGS_COMPRESSED` cleared.
    pub flags: u16,
    /// Annotations the method set on its reply.
    pub annotations: Vec<Annotation>,
    /// The correlation id of the call.
    pub correlation_id: uuid::Uuid,
}

/// A handle to a remote object. Cheap to clone; clones share one connection.
///
/// A proxy serializes as its URI, so a method can take or return one (Pyro's autoproxy); a
/// deserialized proxy dials on first use with default settings, but the TLS settings and
/// shared secret of the side that received it where they apply (see its `Deserialize`).
///
/// ```no_run
/// # async fn demo() -> Result<(), rmi_core::Error> {
/// let proxy: rmi_core::Proxy = rmi_core::Proxy::builder("PYRO:obj@127.0.0.1:9999".parse()?).connect().await?;
/// let reply: String = proxy.call("welcomeMessage", &("Rashmi",)).await?;
/// let quick = proxy.with_timeout(std::time::Duration::from_millis(200));
/// let reply: String = quick.call("welcomeMessage", &("Irmen",)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
    options: Arc<CallOptions>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("uri", &self.shared.config.uri.to_string())
            .field("options", &self.options)
            .finish()
    }
}

/// What a proxy and its clones share: settings and the connection.
struct Shared {
    config: ProxyBuilder,
    /// What the proxies in this proxy's replies dial with (its TLS settings and secret).
    security: DialSecurity,
    /// The live connection, if dialed; replaced when it dies.
    conn: RwLock<Option<Arc<Connection>>>,
    /// The protocol the daemon was found to speak when none is configured, and where: tried
    /// first on reconnects to that address (a name that moves to another daemon starts from
    /// Pyro5 again: an rmi daemon answers Pyro4 too, and would be spoken to in it for good).
    learned: parking_lot::Mutex<Option<(crate::uri::Location, Protocol)>>,
    /// Serializes dialing so concurrent first calls, and calls after a failure, dial once;
    /// holds when the last dial failed and why, so callers that waited for it share the failure.
    dial_lock: tokio::sync::Mutex<Option<dial::Failure>>,
    /// How many times [`Proxy::close`] was called: a dial under way when it changes makes a
    /// connection its caller uses and the proxy does not keep.
    closes: std::sync::atomic::AtomicU64,
}

impl Proxy {
    /// Settings for a proxy to `uri`; see [`ProxyBuilder`].
    pub fn builder(uri: Uri) -> ProxyBuilder {
        ProxyBuilder::new(uri)
    }

    /// The URI this proxy was made for (possibly a logical one).
    pub fn uri(&self) -> &Uri {
        &self.shared.config.uri
    }

    /// The direct URI of the current connection, if connected.
    pub fn connected_uri(&self) -> Option<Uri> {
        self.live().map(|c| Uri::clone(&c.direct))
    }

    /// The object's metadata from the last handshake, dialing if needed.
    pub async fn metadata(&self) -> Result<Metadata, Error> {
        Ok(self.connection().await?.meta.clone())
    }

    /// A proxy with this one's settings (URI, security, limits, per-call options) and a
    /// connection of its own, dialed on its first call, as Pyro's `_pyroClone`: for work that
    /// must not share a connection with other callers, so that closing it, or its failing,
    /// touches nothing else. A proxy made over a stream
    /// ([`ProxyBuilder::connect_over`]) never dials: its copy has no connection at all.
    pub fn detached(&self) -> Proxy {
        Proxy {
            options: self.options.clone(),
            ..self.shared.config.clone().build()
        }
    }

    /// The per-call settings of this proxy.
    pub fn options(&self) -> &CallOptions {
        &self.options
    }

    /// The same connection with other per-call settings.
    pub fn with_options(&self, options: CallOptions) -> Proxy {
        Proxy {
            shared: self.shared.clone(),
            options: Arc::new(options),
        }
    }

    fn map_options(&self, f: impl FnOnce(&mut CallOptions)) -> Proxy {
        let mut options = (*self.options).clone();
        f(&mut options);
        self.with_options(options)
    }

    /// The same connection, with a deadline for each call.
    pub fn with_timeout(&self, timeout: Duration) -> Proxy {
        self.map_options(|o| o.timeout = Some(timeout))
    }

    /// The same connection, sending annotation `id` with every call.
    pub fn with_annotation(&self, id: [u8; 4], value: impl Into<Bytes>) -> Proxy {
        let value = value.into();
        self.map_options(|o| {
            o.annotations.retain(|(k, _)| *k != id);
            o.annotations.push((id, value));
        })
    }

    /// The same connection, sending `id` as the correlation id of every call.
    pub fn with_correlation_id(&self, id: uuid::Uuid) -> Proxy {
        self.map_options(|o| o.correlation_id = Some(id))
    }

    /// The same connection, retrying each call up to `n` times after a communication failure.
    pub fn with_retries(&self, n: u32) -> Proxy {
        self.map_options(|o| o.retries = n)
    }

    /// The same connection, for methods that are safe to run twice: a call that failed on the
    /// connection is retried once.
    pub fn idempotent(&self) -> Proxy {
        self.map_options(|o| o.idempotent = true)
    }

    /// The serializer calls use: the one of the live connection (configured, or negotiated at
    /// CONNECT: bincode with an rmi daemon, serpent with a Python one); before the first
    /// connection, the configured one, or bincode (what an rmi daemon picks) when negotiating.
    pub fn serializer(&self) -> Serializer {
        self.live()
            .map(|c| c.serializer)
            .or(self.shared.config.serializer)
            .unwrap_or(Serializer::Bincode)
    }

    /// The wire protocol of the live connection (Pyro4 for a Python Pyro4 daemon, else Pyro5);
    /// `None` when not connected.
    pub fn protocol(&self) -> Option<Protocol> {
        self.live().map(|c| c.protocol)
    }

    /// The limits replies are decoded with.
    pub fn limits(&self) -> &DecodeLimits {
        &self.shared.config.limits
    }

    /// A batch of calls to this object, sent in one round trip; see [`Batch`].
    pub fn batch(&self) -> Batch {
        Batch::new(self.clone())
    }
}

/// A proxy travels as Pyro's proxy class dict in the Pyro formats (serpent, json, msgpack), so
/// a Python peer receives a working Pyro proxy:
/// `{'__class__': 'Pyro5.client.Proxy', 'state': (uri, oneway, methods, attrs, handshake, None)}`
/// (to a Pyro4 peer, `Pyro4.core.Proxy` with Pyro4's 9-field state). The URI is the direct one
/// it is connected to, else the one it was made for; the metadata is the connection's, or empty
/// (the Python proxy then asks for it). Under bincode it is the URI's text, followed, for a
/// proxy whose handshake is not the default, by a NUL and the handshake's text (which no URI
/// holds): the proxy greets the daemon as its sender's would.
impl Serialize for Proxy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let uri = self.connected_uri().unwrap_or_else(|| self.uri().clone());
        if !s.is_human_readable() {
            let handshake = &self.shared.config.handshake;
            if *handshake == builder::DEFAULT_HANDSHAKE {
                return s.collect_str(&uri);
            }
            return s.collect_str(&format_args!("{uri}{HANDSHAKE_AFTER}{handshake}"));
        }
        let meta = self.live().map(|c| c.meta.clone()).unwrap_or_default();
        let uri = uri.to_string();
        let handshake = &self.shared.config.handshake;
        let mut map = s.serialize_map(Some(2))?;
        if crate::protocol::codec::encoding_for_pyro4() {
            map.serialize_entry("__class__", "Pyro4.core.Proxy")?;
            // (uri, oneway, methods, attrs, timeout, hmac key, handshake, max retries, serializer)
            let state = (
                uri,
                &meta.oneway,
                &meta.methods,
                &meta.attrs,
                0.0f64,
                None::<String>,
                handshake,
                0u32,
                None::<String>,
            );
            map.serialize_entry("state", &state)?;
        } else {
            map.serialize_entry("__class__", "Pyro5.client.Proxy")?;
            // (uri, oneway, methods, attrs, handshake, serializer)
            let state = (
                uri,
                &meta.oneway,
                &meta.methods,
                &meta.attrs,
                handshake,
                None::<String>,
            );
            map.serialize_entry("state", &state)?;
        }
        map.end()
    }
}

/// A proxy received inside a value: `builder` with the TLS settings and shared secret of the
/// side that received it (see [`transport::received`](crate::transport)), which do not travel
/// in a proxy's state; without them it could not reach a daemon that requires them.
fn dial_like_its_receiver(builder: ProxyBuilder) -> ProxyBuilder {
    received::with_receiver(|security| match security {
        Some(security) => builder.secured_by(security),
        None => builder,
    })
}

/// A received proxy dials on first use, with default settings, the sender's handshake (any
/// value in the Pyro formats, its text under bincode) when it sent one, and the TLS settings and shared secret of the side that received it: a
/// proxy's own for the proxies in its replies to the daemon it talks to (its own objects),
/// `DaemonBuilder::callback_secret` and `callback_tls` (feature `tls`) for those in a method's
/// arguments.
/// It is read from Pyro's proxy class dict (`Pyro5.client.Proxy`, `Pyro4.core.Proxy`), from a
/// URI class dict, or from a URI's text.
impl<'de> Deserialize<'de> for Proxy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            let text = std::borrow::Cow::<str>::deserialize(d)?;
            let (uri, handshake) = match text.split_once(HANDSHAKE_AFTER) {
                Some((uri, handshake)) => (uri, Some(handshake)),
                None => (&*text, None),
            };
            let uri: Uri = uri.parse().map_err(serde::de::Error::custom)?;
            let builder = ProxyBuilder::new(uri);
            let builder = match handshake {
                Some(handshake) => builder.handshake(handshake),
                None => builder,
            };
            return Ok(dial_like_its_receiver(builder).build());
        }
        let builder = match Received::deserialize(d)? {
            Received::Uri(uri) => ProxyBuilder::new(uri),
            Received::Proxy { class, state } => {
                if !class.ends_with(".Proxy") {
                    return Err(serde::de::Error::custom(format!(
                        "a {class} is not a proxy"
                    )));
                }
                let mut builder = ProxyBuilder::new(state.uri);
                if let Some(handshake) = state.handshake {
                    builder = builder.handshake(handshake);
                }
                builder
            }
        };
        Ok(dial_like_its_receiver(builder).build())
    }
}

/// Between a proxy's URI and its handshake, under bincode.
const HANDSHAKE_AFTER: char = '\0';

/// What a received proxy can be, in the Pyro formats.
#[derive(Deserialize)]
#[serde(untagged)]
enum Received {
    Uri(Uri),
    Proxy {
        #[serde(rename = "__class__")]
        class: String,
        state: ProxyState,
    },
}

/// A Pyro proxy's state: its URI first; Pyro5's has 6 fields (handshake the 5th), Pyro4's 9
/// (handshake the 7th).
struct ProxyState {
    uri: Uri,
    handshake: Option<crate::protocol::codec::HandshakeData>,
}

impl<'de> Deserialize<'de> for ProxyState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// A state field: any value, as a handshake may be (a dict of credentials, say).
        type Field = crate::protocol::codec::HandshakeData;
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ProxyState;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Pyro proxy's state tuple")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ProxyState, A::Error> {
                let uri: Uri = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::custom("a proxy state without its URI"))?;
                let mut rest = Vec::new();
                // At most Pyro4's 8 more fields are looked at; more is not a proxy state.
                while let Some(field) = seq.next_element::<Field>()? {
                    if rest.len() == 8 {
                        return Err(serde::de::Error::custom("a proxy state of over 9 fields"));
                    }
                    rest.push(field);
                }
                let at = match rest.len() {
                    5 => Some(3),
                    8 => Some(5),
                    _ => None,
                };
                let handshake = at.map(|at| rest.swap_remove(at));
                Ok(ProxyState { uri, handshake })
            }
        }
        d.deserialize_seq(V)
    }
}
