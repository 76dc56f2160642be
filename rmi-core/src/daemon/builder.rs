//! [`DaemonBuilder`]: a daemon's settings, their documented defaults, and binding.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpListener;

use super::bind::{BindAddr, Target};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::handshake::ValidateHandshake;
use super::hooks::{CallErrorHook, ClientGone, DisconnectHook, FailedCall};
use super::listener::{Listener, ListenerSlot};
use super::registration::{Entry, Registration};
use super::{object, streams, Daemon, Inner};
use crate::error::Error;
use crate::protocol::codec::DecodeLimits;
use crate::protocol::names::DAEMON_OBJECT_ID;
use crate::transport::received::{DialSecurity, Scope};
use crate::uri::Location;

/// Host a daemon binds when none is given: loopback, never all interfaces unless asked.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default [`DaemonBuilder::max_in_flight`]: calls running at once per connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Default [`DaemonBuilder::max_orphaned_calls`]: calls that may run on after their
/// connections ended, in the whole daemon.
pub const DEFAULT_MAX_ORPHANED_CALLS: usize = 1024;
/// Default [`DaemonBuilder::grace_period`]: how long shutdown waits for running calls.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(5);
/// The most calls or connections a limit can count: what a semaphore holds, and what a
/// connection's running calls are counted in (`u32`). A larger setting means this.
const MAX_COUNT: usize = if Semaphore::MAX_PERMITS < u32::MAX as usize {
    Semaphore::MAX_PERMITS
} else {
    u32::MAX as usize
};

/// Default [`DaemonBuilder::max_connections`]: open connections per daemon (each costs a file
/// descriptor and a few KiB; raise the process's descriptor limit to go higher).
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// Default [`DaemonBuilder::frame_timeout`]: how long a message may take once it has started
/// (plus its size at [`DEFAULT_MIN_READ_RATE`]).
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`DaemonBuilder::write_timeout`]: how long a peer may leave our replies unread.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`DaemonBuilder::max_streams_per_connection`].
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: usize = 100;
/// Default [`DaemonBuilder::max_streams`]: open streams in a daemon, lingering ones included.
pub const DEFAULT_MAX_STREAMS: usize = 10_000;
/// Default [`DaemonBuilder::stream_linger`] (Pyro's `ITER_STREAM_LINGER`).
pub const DEFAULT_STREAM_LINGER: Duration = Duration::from_secs(30);
/// Default [`DaemonBuilder::handshake_timeout`]: how long a new connection may take to CONNECT.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`DaemonBuilder::max_queued_bytes`]: bytes one connection may make the daemon hold
/// (replies not yet written, requests of calls still running) before it stops reading its
/// requests (one maximal message).
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 64 << 20;
/// Default [`DaemonBuilder::min_write_rate`], bytes per second: 256 KiB/s, so a maximal
/// 64 MiB reply may take about 4.5 minutes on top of the write timeout.
pub const DEFAULT_MIN_WRITE_RATE: u64 = 256 << 10;
/// Default [`DaemonBuilder::min_read_rate`], bytes per second: 256 KiB/s, so a maximal 64 MiB
/// request may take about 4.5 minutes on top of the frame timeout.
pub const DEFAULT_MIN_READ_RATE: u64 = 256 << 10;
/// Default [`DaemonBuilder::max_batch_calls`]: calls in one `<batch>`.
pub const DEFAULT_MAX_BATCH_CALLS: usize = 10_000;

/// Settings of a daemon, with documented defaults.
#[derive(Clone)]
pub struct DaemonBuilder {
    pub(super) limits: DecodeLimits,
    pub(super) max_in_flight: usize,
    pub(super) max_orphaned_calls: usize,
    pub(super) grace_period: Duration,
    pub(super) handshake_timeout: Duration,
    pub(super) advertise: Option<(String, Option<u16>)>,
    /// The host `bind` was given by name: in URIs unless [`advertise`](Self::advertise) says
    /// otherwise, and in [`Daemon::internal_uri_for`]'s always.
    named: Option<String>,
    pub(super) max_streams_per_connection: usize,
    pub(super) max_streams: usize,
    pub(super) stream_linger: Duration,
    pub(super) stream_lifetime: Option<Duration>,
    pub(super) max_connections: usize,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) frame_timeout: Option<Duration>,
    pub(super) write_timeout: Option<Duration>,
    pub(super) min_write_rate: Option<u64>,
    pub(super) min_read_rate: Option<u64>,
    pub(super) max_queued_bytes: usize,
    pub(super) max_batch_calls: usize,
    pub(super) compression: bool,
    pub(super) exception_classes: Vec<String>,
    pub(super) validator: Option<Arc<dyn ValidateHandshake>>,
    pub(super) on_disconnect: Option<DisconnectHook>,
    pub(super) on_call_error: Option<CallErrorHook>,
    pub(super) secret: Option<crate::auth::SharedSecret>,
    pub(super) hmac_key: Option<crate::auth::HmacKey>,
    pub(super) callback_secret: Option<crate::auth::SharedSecret>,
    pub(super) callback_hmac_key: Option<crate::auth::HmacKey>,
    #[cfg(feature = "tls")]
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
    #[cfg(feature = "tls")]
    pub(super) callback_tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for DaemonBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonBuilder")
            .field("limits", &self.limits)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_orphaned_calls", &self.max_orphaned_calls)
            .field("max_connections", &self.max_connections)
            .field("grace_period", &self.grace_period)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("frame_timeout", &self.frame_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("min_write_rate", &self.min_write_rate)
            .field("min_read_rate", &self.min_read_rate)
            .field("max_queued_bytes", &self.max_queued_bytes)
            .field("max_batch_calls", &self.max_batch_calls)
            .field("compression", &self.compression)
            .field("max_streams", &self.max_streams)
            .field(
                "max_streams_per_connection",
                &self.max_streams_per_connection,
            )
            .field("stream_linger", &self.stream_linger)
            .field("stream_lifetime", &self.stream_lifetime)
            .field("idle_timeout", &self.idle_timeout)
            .field("advertise", &self.advertise)
            .field("named", &self.named)
            .field("validator", &self.validator.is_some())
            .field("on_disconnect", &self.on_disconnect.is_some())
            .field("on_call_error", &self.on_call_error.is_some())
            .field("shared_secret", &self.secret.is_some())
            .field("hmac_key", &self.hmac_key.is_some())
            .field("tls", &self.serves_tls())
            .field("callback_tls", &self.callback_tls_set())
            .finish()
    }
}

impl Default for DaemonBuilder {
    fn default() -> Self {
        DaemonBuilder {
            limits: DecodeLimits::default(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_orphaned_calls: DEFAULT_MAX_ORPHANED_CALLS,
            grace_period: DEFAULT_GRACE_PERIOD,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            advertise: None,
            named: None,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            max_streams: DEFAULT_MAX_STREAMS,
            stream_linger: DEFAULT_STREAM_LINGER,
            stream_lifetime: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: None,
            frame_timeout: Some(DEFAULT_FRAME_TIMEOUT),
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            min_write_rate: Some(DEFAULT_MIN_WRITE_RATE),
            min_read_rate: Some(DEFAULT_MIN_READ_RATE),
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            max_batch_calls: DEFAULT_MAX_BATCH_CALLS,
            compression: false,
            exception_classes: Vec::new(),
            validator: None,
            on_disconnect: None,
            on_call_error: None,
            secret: None,
            hmac_key: None,
            callback_secret: None,
            callback_hmac_key: None,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            callback_tls: None,
        }
    }
}

impl DaemonBuilder {
    /// True when proxies received in arguments dial with TLS.
    fn callback_tls_set(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.callback_tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// True when connections are served over TLS.
    fn serves_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}

impl DaemonBuilder {
    /// Message size and nesting limits for requests (default 64 MiB, depth 128).
    pub fn limits(mut self, limits: DecodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Calls running at once per connection; past it the daemon stops reading that
    /// connection until one finishes (default 1,024). At least 1; `usize::MAX` ("no limit")
    /// means `u32::MAX`, the most a connection's count of running calls is kept in.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.clamp(1, MAX_COUNT);
        self
    }

    /// Calls that may run on, in the whole daemon, after their connections ended with nobody
    /// left to answer (a client that reset its connection, or stopped reading its replies; a
    /// oneway call whose client closed its connection):
    /// they run to their end, as Pyro's threads do, and a connection's place is free at once
    /// (default 1,024). A connection that ends with more calls running than there is room
    /// for has its calls dropped (cancelled, as at the end of the grace period), so that
    /// clients that reset and connect again cannot leave calls running without bound.
    pub fn max_orphaned_calls(mut self, n: usize) -> Self {
        self.max_orphaned_calls = n;
        self
    }

    /// How long [`Daemon::serve`] waits for running calls after shutdown (default 5 s).
    pub fn grace_period(mut self, d: Duration) -> Self {
        self.grace_period = d;
        self
    }

    /// How long a new connection may take to send its CONNECT (default 10 s). Its CONNECT
    /// messages are also held to [`MAX_HANDSHAKE_SIZE`](super::MAX_HANDSHAKE_SIZE) bytes, so a
    /// client that has proved nothing holds little memory for that long.
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// Error classes sent to Python peers under their own names, as Pyro sends an exception:
    /// each a class name (`myapp.Overdrawn`) or a module prefix ending in `.` (`myapp.`).
    /// Python rebuilds only its own and Pyro's exceptions by itself: a client must register
    /// the others (`SerializerBase.register_dict_to_class("myapp.Overdrawn", …)` in Pyro5 and
    /// Pyro4), or it fails to read the reply (a `SerializeError`, after which its proxy drops
    /// the connection), as with a Python Pyro daemon. Every other class goes as Python's
    /// `RuntimeError("myapp.Overdrawn: …")`, which every client reads (default). rmi clients
    /// get the class either way.
    pub fn exception_classes<I, S>(mut self, classes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.exception_classes = classes.into_iter().map(Into::into).collect();
        self
    }

    /// Whether errors of `class` go to Python peers under their own name (see
    /// [`exception_classes`](Self::exception_classes)).
    pub(super) fn keeps_class(&self, class: &str) -> bool {
        self.exception_classes
            .iter()
            .any(|kept| class == kept || (kept.ends_with('.') && class.starts_with(kept.as_str())))
    }

    /// Checks each client's handshake (and TLS certificate) before it may call anything.
    pub fn validator(mut self, validator: impl ValidateHandshake) -> Self {
        self.validator = Some(Arc::new(validator));
        self
    }

    /// Calls `hook` once for each client connection that passed the handshake (Pyro's
    /// `Daemon.clientDisconnect`): the place to release what the application keeps for that
    /// client, keyed by the connection number the validator
    /// ([`HandshakeInfo::connection`](super::HandshakeInfo)) and its calls
    /// ([`CallContext::connection`](super::context::CallContext::connection)) saw.
    ///
    /// It runs when the connection has closed **and** the last of its calls has ended, oneway
    /// ones included, so nothing of that client still runs in a method when it does (Pyro
    /// calls it when the socket closes, while oneway calls may still run): a method that runs
    /// for hours holds it back that long. The connection's session instances
    /// ([`InstanceMode::Session`](super::InstanceMode)) are dropped right after it. Not held
    /// back, and able to outlive it: tasks a method spawned (with
    /// [`CallContext::in_scope`](super::context::CallContext::in_scope) too), and the
    /// connection's open streams, which linger for their reader to pick up from another
    /// connection.
    ///
    /// A connection refused in its handshake is not reported; nor is one whose CONNECTOK could
    /// not be sent after the validator accepted it (the client gone meanwhile, the handshake
    /// timeout, the daemon shutting down): a validator that keeps state per connection should
    /// expect that. A connection still open when the daemon shuts down is reported once its
    /// calls end (or are dropped past the grace period).
    ///
    /// See [`ClientGone`] for what the hook is told; a panic in it is logged.
    pub fn on_disconnect(mut self, hook: impl Fn(&ClientGone<'_>) + Send + Sync + 'static) -> Self {
        self.on_disconnect = Some(Arc::new(hook));
        self
    }

    /// Calls `hook` for every call that ends in an error (Pyro5's
    /// `Daemon.methodcall_error_handler`), with the error its caller gets: an error the method
    /// raised, its panic, an unknown object or method, arguments that did not decode, a
    /// request that did not decode or was refused unread for its size, a result too large to
    /// send, a passed deadline, and each failing call of a batch. It is the only way to see
    /// why a oneway call failed, since its caller never learns.
    ///
    /// Not failures, and not reported: the end of a streamed result its reader asked for, a
    /// call whose caller went away before it could be answered (a batch or a wait for a
    /// stream's item stopped for it), and a oneway call's result, however large. A stream that
    /// ends in an error is reported as the failure of the call that read it
    /// (`Pyro.Daemon.get_next_stream_item`), on the reader's connection.
    ///
    /// See [`FailedCall`] for what the hook is told; a panic in it is logged.
    pub fn on_call_error(mut self, hook: impl Fn(&FailedCall<'_>) + Send + Sync + 'static) -> Self {
        self.on_call_error = Some(Arc::new(hook));
        self
    }

    /// Requires clients to prove `secret` and signs every message (see [`crate::auth`]).
    pub fn shared_secret(mut self, secret: crate::auth::SharedSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Signs every message with Pyro4's HMAC key and refuses any not signed with it, on every
    /// connection, Pyro4's or Pyro5's: what a Pyro4 daemon with `_pyroHmacKey` does, for
    /// Pyro4 clients that set the key (`proxy._pyroHmacKey`, `locateNS(hmac_key=…)`). A client
    /// without it, or with another key, is refused: a Pyro4 client says `hmac key config not
    /// symmetric` for both, as rmi signs nothing for a client that did not prove the key (the
    /// refusal's own text says `message hmac mismatch` for a wrong key); a message that fails
    /// later closes its connection. Weaker than [`shared_secret`](Self::shared_secret),
    /// which it cannot be combined with: a message captured on the network lets the key be
    /// guessed offline, so use a long random key (see [`crate::auth`]). Python Pyro5 clients
    /// cannot sign at all.
    pub fn hmac_key(mut self, key: crate::auth::HmacKey) -> Self {
        self.hmac_key = Some(key);
        self
    }

    /// Refuses a shared secret with Pyro4's HMAC key: both sign in the `HMAC` annotation.
    fn check_authentication(&self) -> Result<(), Error> {
        match (&self.secret, &self.hmac_key) {
            (Some(_), Some(_)) => Err(Error::Daemon(
                "a daemon takes a shared secret or Pyro4's HMAC key, not both (both sign \
                 messages in the HMAC annotation)"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    /// The shared secret the proxies this daemon's methods receive in their arguments (a
    /// client's callback objects) prove to the daemons they dial (default: none, as a client's
    /// callback daemon may have none; often the same as [`shared_secret`](Self::shared_secret)).
    pub fn callback_secret(mut self, secret: crate::auth::SharedSecret) -> Self {
        self.callback_secret = Some(secret);
        self.callback_hmac_key = None;
        self
    }

    /// Pyro4's HMAC key the proxies this daemon's methods receive in their arguments (a
    /// client's callback objects) sign with (default: none; a Pyro4 proxy's serialized state
    /// may carry one, which rmi does not take from the wire). Replaces a
    /// [`callback_secret`](Self::callback_secret).
    pub fn callback_hmac_key(mut self, key: crate::auth::HmacKey) -> Self {
        self.callback_hmac_key = Some(key);
        self.callback_secret = None;
        self
    }

    /// Serves TLS with `config` (rustls); require client certificates in the config for mutual
    /// TLS. URIs stay `PYRO:` (as in Pyro): clients must be configured for TLS too.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(tokio_rustls::TlsAcceptor::from(config));
        self
    }

    /// The TLS settings (rustls) of the proxies this daemon's methods receive in their
    /// arguments, a client's callback objects: they dial with TLS, checking the other daemon's
    /// certificate against the config's roots (default: no TLS); those to a daemon on a Unix
    /// socket dial without TLS, which runs over TCP only. Such proxies also prove this
    /// [`callback_secret`](Self::callback_secret), if set.
    ///
    /// A caller chooses where its callback proxy points: a client certificate in `config`
    /// goes with every such dial, to any daemon whose certificate chains to `config`'s roots,
    /// which then sees this daemon, not the caller, as its client (as with Pyro). Give
    /// callbacks a certificate of their own, trusted only where callbacks may go.
    #[cfg(feature = "tls")]
    pub fn callback_tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.callback_tls = Some(config);
        self
    }

    /// Most connections open at once; one more is answered with a CONNECTFAIL naming this
    /// setting and closed (default 16,384).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.clamp(1, MAX_COUNT);
        self
    }

    /// Closes a connection with no call running, no reply waiting and no request arriving for
    /// at least this long (at most twice this long: the connection looks every `d`), never in
    /// the middle of a message (default: never; proxies redial by themselves, but session
    /// instances die with it).
    pub fn idle_timeout(mut self, d: Option<Duration>) -> Self {
        self.idle_timeout = d;
        self
    }

    /// Closes a connection whose message has not fully arrived this long after its first
    /// byte, plus the time its bytes received so far take at
    /// [`min_read_rate`](Self::min_read_rate), so a peer sending a byte at a time cannot hold
    /// it, while a large request over a slow link is not cut off for its size (default 30 s).
    /// `None`: a message may take any time.
    pub fn frame_timeout(mut self, d: Option<Duration>) -> Self {
        self.frame_timeout = d;
        self
    }

    /// Slowest rate, in bytes per second, at which a peer may send a message: one of which `n`
    /// bytes have arrived may take `frame_timeout + n / rate` since its first byte, or the
    /// connection closes with an error naming both settings (default 256 KiB/s; `None`: only
    /// `frame_timeout` applies, whatever the message's size). A peer sending slower than this
    /// gains almost nothing: a byte at a time earns microseconds.
    pub fn min_read_rate(mut self, bytes_per_second: Option<u64>) -> Self {
        self.min_read_rate = bytes_per_second.map(|r| r.max(1));
        self
    }

    /// Closes a connection whose peer takes none of our data for this long, e.g. one that
    /// stopped reading its replies (default 30 s).
    pub fn write_timeout(mut self, d: Option<Duration>) -> Self {
        self.write_timeout = d;
        self
    }

    /// Slowest rate, in bytes per second, at which a peer may take our replies: a batch of
    /// `n` bytes must be written within `write_timeout + n / rate`, or the connection closes
    /// with an error naming this setting, so a peer reading a trickle cannot hold replies
    /// queued (default 256 KiB/s; `None`: only `write_timeout` applies).
    pub fn min_write_rate(mut self, bytes_per_second: Option<u64>) -> Self {
        self.min_write_rate = bytes_per_second.map(|r| r.max(1));
        self
    }

    /// Most bytes one connection may make the daemon hold: replies not yet written, and the
    /// requests of calls still running after their first poll. Past it the daemon stops
    /// reading that connection's requests until its peer takes replies or calls end (default
    /// 64 MiB). With `max_in_flight`, this bounds what a client that does not read, or that
    /// pipelines large requests to slow methods, can make the daemon hold. One call is
    /// always read and run, however large (up to `max_message_size`). While the daemon waits
    /// for room, it reads nothing from that connection: calls that wait for a later request
    /// on the same connection (a `commit` after `upload`s) should together carry less than
    /// this, or come over connections of their own.
    pub fn max_queued_bytes(mut self, n: usize) -> Self {
        self.max_queued_bytes = n;
        self
    }

    /// Compresses replies larger than 100 bytes with zlib (`FLAGS_COMPRESSED`, Pyro's
    /// `COMPRESSION`; default off). Compressed requests are accepted either way, and inflated
    /// within `max_message_size`.
    pub fn compression(mut self, on: bool) -> Self {
        self.compression = on;
        self
    }

    /// Most calls in one `<batch>`; a larger batch fails as a whole, naming this setting,
    /// before any of its calls runs (default 10,000).
    pub fn max_batch_calls(mut self, n: usize) -> Self {
        self.max_batch_calls = n.max(1);
        self
    }

    /// Most streamed results open at once per connection; past it a streaming call fails
    /// (default 100).
    pub fn max_streams_per_connection(mut self, n: usize) -> Self {
        self.max_streams_per_connection = n;
        self
    }

    /// Most streamed results open at once in the daemon, lingering ones included (default
    /// 10,000), so connections that open streams and vanish cannot pile them up.
    pub fn max_streams(mut self, n: usize) -> Self {
        self.max_streams = n;
        self
    }

    /// How long a connection's open streams survive it, for a reconnecting caller (default 30 s).
    pub fn stream_linger(mut self, d: Duration) -> Self {
        self.stream_linger = d;
        self
    }

    /// How long an open stream may go unread before it is dropped, its connection alive or not
    /// (default: no limit, as Pyro's `ITER_STREAM_LIFETIME` of 0). A read under way counts as a
    /// use however long its item takes; the next read of a dropped stream fails with "item
    /// stream terminated". Set it where clients may open streams and forget them: each holds
    /// a slot of `max_streams` until its connection closes and its linger ends. Zero means no
    /// limit, as Pyro's 0 does.
    pub fn stream_lifetime(mut self, d: Duration) -> Self {
        self.stream_lifetime = (!d.is_zero()).then_some(d);
        self
    }

    /// The host (and port; `None` or `Some(0)` = the bound port, as Pyro's `natport` 0) put in
    /// the URIs this daemon hands out, when clients reach it through another address than it
    /// binds (Pyro's `nathost`/`natport`).
    pub fn advertise(mut self, host: impl Into<String>, port: Option<u16>) -> Self {
        self.advertise = Some((host.into(), port.filter(|&p| p != 0)));
        self
    }

    /// Binds a TCP listener on `addr` (e.g. `"127.0.0.1:0"`): anything tokio's
    /// `ToSocketAddrs` takes. The daemon's URIs carry the host as `addr` names it, as Pyro's
    /// do: `"localhost:9090"` gives `PYRO:…@localhost:9090` (so a client checks a TLS
    /// certificate against `localhost`), `"127.0.0.1:0"` the address and the port bound.
    /// [`advertise`](Self::advertise) overrides both.
    pub async fn bind(self, addr: impl BindAddr) -> Result<Daemon, Error> {
        self.check_authentication()?;
        let (listener, name) = match addr.target() {
            Target::Addrs(addrs) => (TcpListener::bind(&addrs[..]).await, None),
            // Bound where a client dialing `localhost` looks first (127.0.0.1, then ::1),
            // whatever order the resolver gives: the URIs say `localhost`.
            Target::Named(host, port) if host.eq_ignore_ascii_case("localhost") => {
                let loopbacks = [
                    SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
                ];
                (TcpListener::bind(&loopbacks[..]).await, Some(host))
            }
            Target::Named(host, port) => {
                (TcpListener::bind((host.as_str(), port)).await, Some(host))
            }
            Target::Text(text) => (TcpListener::bind(text.as_str()).await, None),
        };
        let listener = listener.map_err(|e| Error::io("binding the daemon", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the bound address", e))?;
        let location = Location::Tcp {
            host: addr.ip().to_string(),
            port: addr.port(),
        };
        // The name given is what the URIs carry, unless told otherwise.
        let this = DaemonBuilder {
            named: name,
            ..self
        };
        Ok(this.build(Listener::Tcp(listener), location))
    }

    /// Binds a Unix domain socket at `path`; URIs read `PYRO:obj@./u:path`. A socket file left
    /// there by a daemon that died (nobody accepts on it) is removed first; one a process still
    /// serves, or a file that is no socket, makes the bind fail. The socket file is removed
    /// when the daemon stops serving, unless another daemon has bound the path since.
    #[cfg(unix)]
    pub async fn bind_unix(self, path: impl AsRef<std::path::Path>) -> Result<Daemon, Error> {
        self.check_authentication()?;
        if self.serves_tls() {
            // No client could reach it: proxies run TLS over TCP only (a Unix location has no
            // host name to check), and a plain proxy would fail the TLS accept.
            return Err(Error::Daemon(
                "TLS runs over TCP only: bind a TCP address, or leave TLS out on a Unix socket \
                 (its file permissions guard it)"
                    .into(),
            ));
        }
        let path = path.as_ref();
        // The URI carries the path as text: one that is not UTF-8 would name another path
        // there (U+FFFD in its place), which no client could reach.
        let Some(text) = path.to_str() else {
            return Err(Error::Daemon(format!(
                "a Unix socket path must be UTF-8 to go in a PYRO: uri: {}",
                path.display()
            )));
        };
        // Held from the look at a stale file to the listen (`bind` listens too).
        let locked = super::listener::lock_socket_dir(path).await;
        super::listener::remove_stale_socket(path).await;
        let bound = tokio::net::UnixListener::bind(path);
        drop(locked);
        let listener = bound.map_err(|e| {
            let context = match e.kind() {
                std::io::ErrorKind::AddrInUse => format!(
                    "binding the daemon at {}: a process serves there, or the file is no socket",
                    path.display()
                ),
                _ => format!("binding the daemon at {}", path.display()),
            };
            Error::io(context, e)
        })?;
        let location = Location::Unix(text.to_owned());
        let at = super::listener::UnixPath::bound(path);
        Ok(self.build(Listener::Unix(listener, at), location))
    }

    fn build(self, listener: Listener, bound: Location) -> Daemon {
        // Calls its methods make carry their calls' correlation ids and deadlines on.
        crate::chain::install(super::context::inherited);
        let internal = match (&self.named, &bound) {
            (Some(host), Location::Tcp { port, .. }) => Location::Tcp {
                host: host.clone(),
                port: *port,
            },
            _ => bound.clone(),
        };
        let advertised = match (&self.advertise, &bound) {
            (
                Some((host, port)),
                Location::Tcp {
                    port: bound_port, ..
                },
            ) => Location::Tcp {
                host: host.clone(),
                port: port.unwrap_or(*bound_port),
            },
            _ => internal.clone(),
        };
        // (What the socket is bound to, not what the URIs advertise: a daemon on 0.0.0.0
        // advertised as 127.0.0.1 is reachable all the same.)
        if exposed(&bound) && !self.serves_tls() && self.secret.is_none() && self.hmac_key.is_none()
        {
            tracing::warn!(
                %bound,
                "daemon reachable beyond this machine with neither TLS nor a shared secret nor an HMAC key: anyone who can connect can call its objects"
            );
        }
        if let Location::Tcp { host, .. } = &advertised {
            if host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.to_canonical().is_unspecified())
            {
                tracing::warn!(
                    %advertised,
                    "daemon URIs would advertise an unspecified address, which clients cannot dial; set DaemonBuilder::advertise"
                );
            }
        }
        let max_connections = self.max_connections;
        let orphans = self.max_orphaned_calls.min(Semaphore::MAX_PERMITS);
        let streams = Arc::new(streams::Streams::new(
            self.stream_linger,
            self.stream_lifetime,
        ));
        let callbacks = DialSecurity {
            scope: Scope::Anywhere,
            secret: self.callback_secret.clone(),
            hmac_key: self.callback_hmac_key.clone(),
            #[cfg(feature = "tls")]
            tls: self.callback_tls.clone(),
            // (Its `limits` bound the requests it serves, not what its callbacks answer.)
            limits: None,
        }
        .some();
        let inner = Arc::new(Inner {
            config: self,
            bound,
            internal,
            advertised,
            objects: Default::default(),
            shutdown: Default::default(),
            abort: Default::default(),
            tasks: TaskTracker::new(),
            streams,
            next_connection: AtomicU64::new(1),
            burst_ticks: AtomicU64::new(0),
            connections: Arc::new(Semaphore::new(max_connections)),
            orphans: Arc::new(Semaphore::new(orphans)),
            refusing: Arc::new(Semaphore::new(super::listener::MAX_REFUSING)),
            refusal_warnings: Default::default(),
            accept_warnings: Default::default(),
            oneway_warnings: Default::default(),
            panic_warnings: Default::default(),
            auth_failures: Default::default(),
            callbacks,
        });
        let object = object::DaemonObject::new(Arc::downgrade(&inner));
        inner.objects.change(|map| {
            map.insert(
                DAEMON_OBJECT_ID.to_owned(),
                Arc::new(Entry::from_registration(Registration::instance(object))),
            )
        });
        Daemon {
            inner,
            listener: Arc::new(Mutex::new(ListenerSlot::Bound(listener))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DaemonBuilder;

    #[test]
    fn exception_classes_are_names_or_module_prefixes_ending_in_a_dot() {
        let builder =
            DaemonBuilder::default().exception_classes(["bank.", "Overdrawn", "__main__.Late"]);
        for (class, kept) in [
            ("bank.Overdrawn", true),
            ("bank.errors.Overdrawn", true),
            ("banking.Overdrawn", false),
            ("Overdrawn", true),
            ("OverdrawnToo", false),
            ("__main__.Late", true),
            ("", false),
            ("rmi.Panic", false),
        ] {
            assert_eq!(builder.keeps_class(class), kept, "{class:?}");
        }
        assert!(!DaemonBuilder::default().keeps_class("bank.Overdrawn"));
    }
}

/// Whether a daemon bound at `bound` can be reached from other hosts: a TCP socket on any
/// address but loopback's (IPv4-mapped loopback included). A Unix socket cannot.
fn exposed(bound: &Location) -> bool {
    match bound {
        Location::Tcp { host, .. } => host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| !ip.to_canonical().is_loopback()),
        _ => false,
    }
}

#[cfg(test)]
mod exposure_tests {
    use super::exposed;
    use crate::Location;

    fn tcp(host: &str) -> Location {
        Location::Tcp {
            host: host.into(),
            port: 9090,
        }
    }

    /// The warning's test: every address off loopback, and only those (helper-150 #7: the
    /// tests bind loopback only, so they could show its absence, never that it comes). (The
    /// addresses are values: nothing binds them.)
    #[test]
    fn a_daemon_bound_off_loopback_is_exposed() {
        for host in [
            "0.0.0.0",
            "::",
            "10.1.2.3",
            "192.168.1.5",
            "::ffff:10.1.2.3",
            "fe80::1",
        ] {
            assert!(exposed(&tcp(host)), "{host}");
        }
        for host in ["127.0.0.1", "127.0.0.5", "::1", "::ffff:127.0.0.1"] {
            assert!(!exposed(&tcp(host)), "{host}");
        }
        assert!(!exposed(&Location::Unix("/tmp/rmi.sock".into())));
    }
}
