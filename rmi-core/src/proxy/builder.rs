//! [`ProxyBuilder`]: a proxy's settings, their documented defaults, and connecting.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::io::{AsyncRead, AsyncWrite};

use super::connection::{Connection, Opened};
use super::{CallOptions, Proxy, Shared};
use crate::error::Error;
use crate::protocol::codec::{DecodeLimits, HandshakeData, Serializer};
use crate::protocol::frame::Protocol;
use crate::resolve::Resolve;
use crate::transport::received::{DialSecurity, Scope};
use crate::uri::Uri;

/// Default [`ProxyBuilder::max_in_flight`]: calls live at once on one connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Default [`ProxyBuilder::connect_timeout`]: dial plus handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshake data sent when none is configured (Pyro's default).
pub const DEFAULT_HANDSHAKE: &str = "hello";
/// Default [`ProxyBuilder::abandoned_timeout`]: how long a call waits while every in-flight
/// slot is held by calls their callers gave up on, before the connection is dropped.
pub const DEFAULT_ABANDONED_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ProxyBuilder::reconnect_attempts`]: extra dials after a failed one.
pub const DEFAULT_RECONNECT_ATTEMPTS: u32 = 2;
/// Sequence numbers usable by calls: 1 to 65535.
const SEQ_VALUES: usize = u16::MAX as usize;

/// A client-side check of the daemon's handshake answer.
pub(super) type AnswerCheck = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Settings of a proxy, with documented defaults; build one with [`Proxy::builder`].
#[derive(Clone)]
pub struct ProxyBuilder {
    /// Shared: every dial of a `PYRO:` URI, the call encoded ahead of it and the connection
    /// it makes hold it, and a clone of a `Uri` is two or more allocations.
    pub(super) uri: Arc<Uri>,
    /// `None`: negotiated at CONNECT (bincode with rmi daemons, serpent with Python's).
    pub(super) serializer: Option<Serializer>,
    /// `None`: Pyro5, or Pyro4 when the daemon answers in protocol 48.
    pub(super) protocol: Option<Protocol>,
    pub(super) connect_timeout: Duration,
    pub(super) max_in_flight: usize,
    pub(super) abandoned_timeout: Duration,
    pub(super) compression: bool,
    pub(super) limits: DecodeLimits,
    pub(super) handshake: HandshakeData,
    pub(super) resolver: Option<Arc<dyn Resolve>>,
    pub(super) reconnect_attempts: u32,
    /// Made by [`connect_over`](Self::connect_over): the proxy never dials.
    pub(super) over_stream: bool,
    pub(super) options: CallOptions,
    pub(super) secret: Option<crate::auth::SharedSecret>,
    pub(super) hmac_key: Option<crate::auth::HmacKey>,
    #[cfg(feature = "tls")]
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
    pub(super) validate_answer: Option<AnswerCheck>,
}

impl std::fmt::Debug for ProxyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyBuilder")
            .field("uri", &self.uri)
            .field("serializer", &self.serializer)
            .field("protocol", &self.protocol)
            .field("options", &self.options)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("limits", &self.limits)
            .field("resolver", &self.resolver.is_some())
            .field("shared_secret", &self.secret.is_some())
            .field("hmac_key", &self.hmac_key.is_some())
            .field("tls", &self.uses_tls())
            .finish()
    }
}

impl ProxyBuilder {
    /// True when connections are made over TLS.
    fn uses_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}

impl ProxyBuilder {
    /// Settings for a proxy to `uri`, with the defaults: the serializer and protocol negotiated
    /// with the daemon (bincode with an rmi daemon, serpent with Python's Pyro5 or Pyro4; see
    /// [`serializer`](Self::serializer) and [`protocol`](Self::protocol)), no call timeout, 10 s
    /// connect timeout, 2 reconnect attempts, no retries, 1,024 calls in flight, 64 MiB messages,
    /// nesting depth 128, and the process's default resolver if one was installed
    /// ([`crate::resolve::install_default`]; the `rmi` facade installs the name server's).
    pub fn new(uri: Uri) -> Self {
        ProxyBuilder {
            uri: Arc::new(uri),
            serializer: None,
            protocol: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            abandoned_timeout: DEFAULT_ABANDONED_TIMEOUT,
            compression: false,
            limits: DecodeLimits::default(),
            handshake: DEFAULT_HANDSHAKE.into(),
            resolver: crate::resolve::default_resolver(),
            reconnect_attempts: DEFAULT_RECONNECT_ATTEMPTS,
            over_stream: false,
            options: CallOptions::default(),
            secret: None,
            hmac_key: None,
            #[cfg(feature = "tls")]
            tls: None,
            validate_answer: None,
        }
    }

    /// Proves `secret` to the daemon (which must prove it back) and signs every message; see
    /// [`crate::auth`].
    pub fn shared_secret(mut self, secret: crate::auth::SharedSecret) -> Self {
        self.secret = Some(secret);
        self.hmac_key = None;
        self
    }

    /// Signs every message with Pyro4's HMAC key and refuses any answer not signed with it:
    /// Pyro4's `proxy._pyroHmacKey`, for a Pyro4 daemon or name server that sets one (or an rmi
    /// daemon with [`DaemonBuilder::hmac_key`](crate::DaemonBuilder::hmac_key)). It replaces a
    /// [`shared_secret`](Self::shared_secret): both sign in the `HMAC` annotation. Weaker than
    /// a shared secret (see [`crate::auth`]).
    pub fn hmac_key(mut self, key: crate::auth::HmacKey) -> Self {
        self.hmac_key = Some(key);
        self.secret = None;
        self
    }

    /// Connects with TLS (rustls): the daemon's certificate is verified against the config's
    /// roots and the URI's host name. Add a client certificate to the config for mutual TLS.
    ///
    /// It covers the daemon the proxy dials, not the name-server lookup of a `PYRONAME:` URI,
    /// which is the [`resolver`](Self::resolver)'s: for a name server that serves TLS only,
    /// give it a resolver whose locator has TLS too (rmi-naming's
    /// `NamingResolver::new(NsLocator::new().tls(config))`).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// These settings with `security`'s TLS settings and shared secret (a proxy received in
    /// a value dials as the side that received it).
    pub(crate) fn secured_by(mut self, security: &DialSecurity) -> Self {
        if let Some(limits) = security.limits {
            self.limits = limits;
        }
        if !security.applies_to(self.uri.location()) {
            return self;
        }
        self.secret = security.secret.clone();
        self.hmac_key = security.hmac_key.clone();
        // TLS runs over TCP only: a callback to a daemon on a Unix socket dials it plainly (a
        // logical URI, resolved later, keeps the TLS settings).
        #[cfg(feature = "tls")]
        if !matches!(self.uri.location(), Some(crate::uri::Location::Unix(_))) {
            self.tls = security.tls.clone();
        }
        self
    }

    /// What the proxies in replies to these settings' proxy dial with.
    fn security(&self) -> DialSecurity {
        DialSecurity {
            scope: Scope::at(self.uri.location().cloned()),
            secret: self.secret.clone(),
            hmac_key: self.hmac_key.clone(),
            #[cfg(feature = "tls")]
            tls: self.tls.clone(),
            limits: Some(self.limits),
        }
    }

    /// Checks the daemon's handshake answer (Pyro's `_pyroValidateHandshake`); an `Err`
    /// refuses the connection with that reason. An answer that is not a string (a Python
    /// daemon's may be any value) is seen as its Python `repr`.
    pub fn validate_handshake(
        mut self,
        check: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.validate_answer = Some(Arc::new(check));
        self
    }

    /// Extra dials, with jittered exponential backoff, when connecting fails (default 2).
    pub fn reconnect_attempts(mut self, n: u32) -> Self {
        self.reconnect_attempts = n;
        self
    }

    /// Retries for calls that failed on the connection (they may have run: use for
    /// idempotent methods only; default 0). A call whose dial failed is not retried: the dial
    /// made its [`reconnect_attempts`](Self::reconnect_attempts) already.
    pub fn retries(mut self, n: u32) -> Self {
        self.options.retries = n;
        self
    }

    /// The payload serializer for CONNECT and every call (the daemon answers in the same one),
    /// instead of negotiating it.
    ///
    /// By default the proxy negotiates, with no extra round trip: its CONNECT goes in serpent
    /// (which every Pyro daemon reads) and offers bincode in an annotation only rmi daemons
    /// answer ([`SERIALIZER_ANNOTATION`](crate::protocol::names::SERIALIZER_ANNOTATION)). An rmi
    /// daemon names bincode in its CONNECTOK and the calls use it; a Python daemon ignores the
    /// offer and the calls stay on serpent. Set msgpack here for a Python daemon configured
    /// for it, or bincode for a daemon that must not be asked.
    ///
    /// Set, it also saves a round trip whenever a call opens the connection: that call (up to
    /// 64 KiB) is encoded before the handshake and sent right behind the CONNECT (not with a
    /// shared secret or [`validate_handshake`](Self::validate_handshake), which must succeed
    /// first). A daemon refusing the CONNECT never runs it; once the handshake is under way, a
    /// failure of the connection is that call's (it may have run), never retried as unsent.
    pub fn serializer(mut self, serializer: Serializer) -> Self {
        self.serializer = Some(serializer);
        self
    }

    /// The wire protocol, instead of detecting it: [`Protocol::Pyro5`] (rmi daemons, Python's
    /// Pyro5) or [`Protocol::Pyro4`] (Python's Pyro4, protocol 48).
    ///
    /// A URI does not say which one a daemon speaks. By default the proxy sends a Pyro5 CONNECT;
    /// a Pyro4 daemon refuses it with a CONNECTFAIL in its own protocol 48 ("unsupported protocol
    /// version"), on which the proxy dials again speaking Pyro4, and keeps speaking it on
    /// reconnects (going back to Pyro5 if a reconnect in Pyro4 is dropped unanswered, as a
    /// Pyro5 daemon drops a Pyro4 header). Setting the protocol saves that one extra dial.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Deadline for each call, from sending to reply (default: none). The remaining time
    /// travels with the call, so the method can read it from its call context.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// Deadline for one attempt at dialing plus the CONNECT handshake (default 10 s). A dial
    /// that fails or times out is tried again [`reconnect_attempts`](Self::reconnect_attempts)
    /// times, with a backoff of up to 2 s between: with the defaults, a host that drops
    /// packets holds a call for about 30 s before it fails. A call's own
    /// [`timeout`](Self::timeout) does not cover dialing.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Most calls live at once on the connection; more wait (default 1,024, at most 65,535).
    /// A Python Pyro daemon over TLS gets one at a time, as from Pyro's own proxies: its
    /// multiplex server would leave requests that came in one TLS record unread.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.clamp(1, SEQ_VALUES);
        self
    }

    /// Compresses requests larger than 100 bytes with zlib (`FLAGS_COMPRESSED`, Pyro's
    /// `COMPRESSION`; default off). Compressed replies are accepted either way, and inflated
    /// within `max_message_size`.
    pub fn compression(mut self, on: bool) -> Self {
        self.compression = on;
        self
    }

    /// How long every in-flight slot may be held by calls whose callers gave up on them (timed
    /// out or dropped: their numbers stay reserved until their replies come, which may be
    /// never), counted from the last of them given up, with no reply since. Past it the next
    /// call (whatever its own deadline) drops the connection and redials, and calls still
    /// waiting on it get `ConnectionClosed` (default 30 s).
    ///
    /// Also how long a connection may stay silent after a call was given up on: when nothing
    /// at all was read for this long since (no reply, late or not) and no caller waits on it
    /// any more, the next call drops it and goes out on a new one (a peer gone without a
    /// close, or a write stuck on a socket nobody reads, is found so with slots to spare) unless
    /// a ping sent then is answered within a second (or the call's deadline, or this, if
    /// shorter): a daemon still running the given-up call while its caller was idle keeps the
    /// connection, and a `session` instance on it. One that does not answer sees its connection
    /// close.
    pub fn abandoned_timeout(mut self, timeout: Duration) -> Self {
        self.abandoned_timeout = timeout;
        self
    }

    /// Limits for decoding replies (default 64 MiB, depth 128).
    pub fn limits(mut self, limits: DecodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Handshake data sent in CONNECT (default `"hello"`).
    pub fn handshake(mut self, data: impl Into<HandshakeData>) -> Self {
        self.handshake = data.into();
        self
    }

    /// Handshake data of any serializable value (a dict with a user and a token, say), as
    /// Pyro's `proxy._pyroHandshake` allows; a Python daemon's `validateHandshake` receives it
    /// as that value. Under bincode (an rmi daemon) a value that is not a string travels as its
    /// Python-style text.
    pub fn handshake_value<T: serde::Serialize + ?Sized>(
        mut self,
        data: &T,
    ) -> Result<Self, Error> {
        self.handshake = HandshakeData::new(data)?;
        Ok(self)
    }

    /// The resolver for `PYRONAME:`/`PYROMETA:` URIs, consulted on every dial.
    pub fn resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// The serializer a call that opens a connection is encoded in ahead of the handshake, to
    /// go out right behind the CONNECT: the configured one (a negotiated one is known only from
    /// the answer), unless a shared secret is set (the daemon proves itself before anything
    /// else is sent), or Pyro4's HMAC key (a signed call, which has no counter, could be
    /// replayed by whoever answers without the key), or the daemon's answer is checked (it
    /// must pass first).
    pub(super) fn early_serializer(&self) -> Option<Serializer> {
        self.serializer.filter(|_| {
            self.secret.is_none() && self.hmac_key.is_none() && self.validate_answer.is_none()
        })
    }

    /// Builds the proxy without any I/O; it dials on its first call (and, with
    /// [`serializer`](Self::serializer) set, sends that call right behind the CONNECT, so the
    /// first call costs one round trip, not two).
    pub fn build(self) -> Proxy {
        let options = Arc::new(self.options.clone());
        Proxy {
            shared: Arc::new(Shared {
                security: self.security(),
                config: self,
                conn: RwLock::new(None),
                learned: parking_lot::Mutex::new(None),
                dial_lock: tokio::sync::Mutex::new(None),
                closes: std::sync::atomic::AtomicU64::new(0),
            }),
            options,
        }
    }

    /// Builds the proxy and dials now, so a bad address or unknown object fails here.
    pub async fn connect<P: From<Proxy>>(self) -> Result<P, Error> {
        let proxy = self.build();
        proxy.connection().await.map_err(Error::not_sent)?;
        Ok(P::from(proxy))
    }

    /// Builds a proxy that runs over an already open stream (any transport, e.g. an in-memory
    /// duplex in tests); it performs the handshake now and never redials: once the stream
    /// has closed (or [`Proxy::close`] closed it), calls fail with
    /// [`Error::ConnectionClosed`], inside [`Error::NotSent`]. With
    /// [`tls`](Self::tls) set, the TLS handshake runs over the stream first, the daemon's
    /// certificate checked against the URI's host, as on a dial.
    pub async fn connect_over<S, P>(self, stream: S) -> Result<P, Error>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        P: From<Proxy>,
    {
        if self.uri.object().is_none() {
            return Err(Error::InvalidUri {
                uri: self.uri.to_string(),
                reason: "a proxy over a given stream needs a direct PYRO: uri".into(),
            });
        }
        let uri = self.uri.clone();
        let protocol = self.protocol.unwrap_or_default();
        let open = async {
            let stream: crate::transport::BoxIo = Box::new(stream);
            #[cfg(feature = "tls")]
            let stream = match (&self.tls, uri.location()) {
                (Some(tls), Some(location)) => {
                    crate::transport::tls_connect(stream, location, tls.clone()).await?
                }
                _ => stream,
            };
            Connection::open(stream, uri, &self, protocol, None).await
        };
        let opened = tokio::time::timeout(self.connect_timeout, open)
            .await
            .map_err(|_| Error::Timeout(self.connect_timeout))??;
        let conn = match opened {
            Opened::Ready(conn, _) => conn,
            Opened::Speaks(other) => {
                return Err(Error::ConnectFailed(format!(
                    "the daemon speaks {other}, not {protocol}; a proxy over a given stream cannot \
                     dial again: set ProxyBuilder::protocol"
                )))
            }
        };
        let proxy = ProxyBuilder {
            over_stream: true,
            ..self
        }
        .build();
        *proxy.shared.conn.write() = Some(Arc::new(conn));
        Ok(P::from(proxy))
    }
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::*;

    /// Received proxies take the receiver's TLS settings for TCP and logical URIs (which may
    /// resolve to TCP daemons), never for a Unix socket, which cannot run TLS.
    #[test]
    fn received_proxies_take_tls_except_to_a_unix_socket() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        );
        let security = DialSecurity {
            scope: Scope::Anywhere,
            secret: None,
            hmac_key: None,
            tls: Some(config),
            limits: None,
        };
        for (uri, tls) in [
            ("PYRO:obj@127.0.0.1:9999", true),
            ("PYRONAME:client.listener", true),
            ("PYROMETA:listener", true),
            ("PYRO:obj@./u:/tmp/callbacks.sock", false),
        ] {
            let builder = ProxyBuilder::new(uri.parse().unwrap()).secured_by(&security);
            assert_eq!(builder.tls.is_some(), tls, "{uri}");
        }
    }
}
