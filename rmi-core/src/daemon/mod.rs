//! The server side: [`Daemon`] accepts connections and runs calls on registered objects.
//!
//! A listener accepts connections; each gets a handler that performs the CONNECT handshake and
//! then reads requests, spawning one task per call so pipelined calls run concurrently and are
//! answered by sequence number as they finish. A malformed message closes only its own
//! connection; a panicking method becomes an error reply to its caller only. Every call runs
//! inside a [`crate::context::CallContext`] and a `tracing` span.

mod object;
mod registration;
mod streams;

pub use registration::{InstanceMode, Registration};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::AsyncWrite;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::context::CallContext;
use crate::dispatch::{Dispatch, Outcome};
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::protocol::codec::{self, ConnectOk, ConnectRequest, DecodeLimits, Serializer};
use crate::protocol::frame::{self, Message, MessageType};
use crate::transport::{self, BoxStream, Outgoing};
use crate::uri::{Location, Uri};
use registration::{Entry, Target};

/// Object id of the daemon's own object, as in Pyro.
pub const DAEMON_OBJECT_ID: &str = "Pyro.Daemon";
/// Host a daemon binds when none is given: loopback, never all interfaces unless asked.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default [`DaemonBuilder::max_in_flight`]: calls running at once per connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Default [`DaemonBuilder::grace_period`]: how long shutdown waits for running calls.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(5);
/// Default [`DaemonBuilder::max_connections`]: open connections per daemon (each costs a file
/// descriptor and a few KiB; raise the process's descriptor limit to go higher).
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// Default [`DaemonBuilder::frame_timeout`]: how long a message may take once it has started.
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

/// Settings of a daemon, with documented defaults.
#[derive(Clone)]
pub struct DaemonBuilder {
    limits: DecodeLimits,
    max_in_flight: usize,
    grace_period: Duration,
    handshake_timeout: Duration,
    advertise: Option<(String, Option<u16>)>,
    max_streams_per_connection: usize,
    max_streams: usize,
    stream_linger: Duration,
    max_connections: usize,
    idle_timeout: Option<Duration>,
    frame_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    validator: Option<Arc<dyn ValidateHandshake>>,
    secret: Option<crate::auth::SharedSecret>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for DaemonBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonBuilder")
            .field("limits", &self.limits)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_connections", &self.max_connections)
            .field("grace_period", &self.grace_period)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("frame_timeout", &self.frame_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("advertise", &self.advertise)
            .field("validator", &self.validator.is_some())
            .field("shared_secret", &self.secret.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Default for DaemonBuilder {
    fn default() -> Self {
        DaemonBuilder {
            limits: DecodeLimits::default(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            grace_period: DEFAULT_GRACE_PERIOD,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            advertise: None,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            max_streams: DEFAULT_MAX_STREAMS,
            stream_linger: DEFAULT_STREAM_LINGER,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: None,
            frame_timeout: Some(DEFAULT_FRAME_TIMEOUT),
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            validator: None,
            secret: None,
            tls: None,
        }
    }
}

impl DaemonBuilder {
    /// Message size and nesting limits for requests (default 64 MiB, depth 128).
    pub fn limits(mut self, limits: DecodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Calls running at once per connection; past it the daemon stops reading that
    /// connection until one finishes (default 1,024).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// How long [`Daemon::serve`] waits for running calls after shutdown (default 5 s).
    pub fn grace_period(mut self, d: Duration) -> Self {
        self.grace_period = d;
        self
    }

    /// How long a new connection may take to send its CONNECT (default 10 s).
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// Checks each client's handshake (and TLS certificate) before it may call anything.
    pub fn validator(mut self, validator: impl ValidateHandshake) -> Self {
        self.validator = Some(Arc::new(validator));
        self
    }

    /// Requires clients to prove `secret` and signs every message (see [`crate::auth`]).
    pub fn shared_secret(mut self, secret: crate::auth::SharedSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Serves TLS with `config` (rustls); require client certificates in the config for mutual
    /// TLS. URIs stay `PYRO:` (as in Pyro): clients must be configured for TLS too.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(tokio_rustls::TlsAcceptor::from(config));
        self
    }

    /// Most connections open at once; one more is answered with a CONNECTFAIL naming this
    /// setting and closed (default 16,384).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Closes a connection with no call running and no request arriving for this long
    /// (default: never; proxies redial by themselves, but session instances die with it).
    pub fn idle_timeout(mut self, d: Option<Duration>) -> Self {
        self.idle_timeout = d;
        self
    }

    /// Closes a connection whose message has not fully arrived this long after its first
    /// byte, so a peer sending a byte at a time cannot hold it (default 30 s).
    pub fn frame_timeout(mut self, d: Option<Duration>) -> Self {
        self.frame_timeout = d;
        self
    }

    /// Closes a connection whose peer takes none of our data for this long, e.g. one that
    /// stopped reading its replies (default 30 s).
    pub fn write_timeout(mut self, d: Option<Duration>) -> Self {
        self.write_timeout = d;
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

    /// The host (and port; `None` = the bound port) put in the URIs this daemon hands out,
    /// when clients reach it through another address than it binds (Pyro's `nathost`/`natport`).
    pub fn advertise(mut self, host: impl Into<String>, port: Option<u16>) -> Self {
        self.advertise = Some((host.into(), port));
        self
    }

    /// Binds a TCP listener on `addr` (e.g. `"127.0.0.1:0"`).
    pub async fn bind(self, addr: impl ToSocketAddrs) -> Result<Daemon, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io("binding the daemon", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the bound address", e))?;
        let location = Location::Tcp {
            host: addr.ip().to_string(),
            port: addr.port(),
        };
        Ok(self.build(Listener::Tcp(listener), location))
    }

    /// Binds a Unix domain socket at `path`; URIs read `PYRO:obj@./u:path`. The socket file is
    /// removed when the daemon stops serving.
    #[cfg(unix)]
    pub async fn bind_unix(self, path: impl AsRef<std::path::Path>) -> Result<Daemon, Error> {
        let path = path.as_ref();
        let listener =
            tokio::net::UnixListener::bind(path).map_err(|e| Error::io("binding the daemon", e))?;
        let location = Location::Unix(path.to_string_lossy().into_owned());
        Ok(self.build(Listener::Unix(listener, path.to_owned()), location))
    }

    fn build(self, listener: Listener, bound: Location) -> Daemon {
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
            _ => bound.clone(),
        };
        if let Location::Tcp { host, .. } = &bound {
            let exposed = host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| !ip.is_loopback());
            if exposed && self.tls.is_none() && self.secret.is_none() {
                tracing::warn!(
                    %bound,
                    "daemon reachable beyond this machine with neither TLS nor a shared secret: anyone who can connect can call its objects"
                );
            }
        }
        if let Location::Tcp { host, .. } = &advertised {
            if host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_unspecified())
            {
                tracing::warn!(
                    %advertised,
                    "daemon URIs would advertise an unspecified address, which clients cannot dial; set DaemonBuilder::advertise"
                );
            }
        }
        let max_connections = self.max_connections;
        let inner = Arc::new(Inner {
            config: self,
            bound,
            advertised,
            objects: RwLock::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            tasks: TaskTracker::new(),
            streams: Arc::new(streams::Streams::default()),
            next_connection: AtomicU64::new(1),
            connections: Arc::new(Semaphore::new(max_connections)),
        });
        let object = object::DaemonObject {
            daemon: Arc::downgrade(&inner),
        };
        inner
            .objects
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                DAEMON_OBJECT_ID.to_owned(),
                Arc::new(Entry::from_registration(Registration::instance(object))),
            );
        Daemon {
            inner,
            listener: Arc::new(Mutex::new(Some(listener))),
        }
    }
}

/// A bound listening socket.
enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<(BoxStream, String)> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok((Box::new(stream), peer.to_string()))
            }
            #[cfg(unix)]
            Listener::Unix(l, path) => {
                let (stream, _) = l.accept().await?;
                Ok((Box::new(stream), format!("unix:{}", path.display())))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Serves registered objects. Cheap to clone; clones are the same daemon.
///
/// ```
/// # async fn demo() -> Result<(), rmi_core::Error> {
/// let daemon = rmi_core::Daemon::bind("127.0.0.1:0").await?;
/// let server = tokio::spawn({ let d = daemon.clone(); async move { d.serve().await } });
/// daemon.shutdown();
/// server.await.unwrap()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
    /// The listener until `serve` takes it.
    listener: Arc<Mutex<Option<Listener>>>,
}

struct Inner {
    config: DaemonBuilder,
    /// Where the listener is bound.
    bound: Location,
    /// The location put in URIs (the bound one unless advertised otherwise).
    advertised: Location,
    /// Registered objects by id, the daemon object included.
    objects: RwLock<HashMap<String, Arc<Entry>>>,
    /// Cancelled to stop accepting and reading; running calls go on.
    shutdown: CancellationToken,
    /// Cancelled when the grace period is over: running calls are dropped.
    abort: CancellationToken,
    /// Connection handlers and call tasks, so shutdown can wait for them.
    tasks: TaskTracker,
    /// Open streamed results of all connections.
    streams: Arc<streams::Streams>,
    /// The id the next connection gets.
    next_connection: AtomicU64,
    /// One permit per open connection (`max_connections`).
    connections: Arc<Semaphore>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("bound", &self.inner.bound)
            .field("advertised", &self.inner.advertised)
            .finish()
    }
}

impl Daemon {
    /// Binds a daemon with default settings on `addr` (use `"127.0.0.1:0"` for any free port).
    pub async fn bind(addr: impl ToSocketAddrs) -> Result<Daemon, Error> {
        DaemonBuilder::default().bind(addr).await
    }

    /// Binds a daemon with default settings on 127.0.0.1 and a free port, like Pyro's `Daemon()`.
    pub async fn bind_default() -> Result<Daemon, Error> {
        DaemonBuilder::default().bind((DEFAULT_HOST, 0)).await
    }

    /// Settings for a daemon; see [`DaemonBuilder`].
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder::default()
    }

    /// The TCP address the daemon listens on (`None` for a Unix-socket daemon).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.inner.bound {
            Location::Tcp { host, port } => host.parse().ok().map(|ip| SocketAddr::new(ip, *port)),
            Location::Unix(_) => None,
        }
    }

    /// Where the daemon listens.
    pub fn location(&self) -> &Location {
        &self.inner.bound
    }

    /// The `PYRO:` URI of object `id` in this daemon, with the advertised address.
    pub fn uri_for(&self, id: &str) -> Uri {
        Uri::Pyro {
            object: id.to_owned(),
            location: self.inner.advertised.clone(),
        }
    }

    /// Registers one shared `object` under a generated id (`obj_` + 32 hex digits) and returns
    /// its URI.
    pub fn register(&self, object: impl Dispatch) -> Result<Uri, Error> {
        self.register_entry(Registration::instance(object))
    }

    /// Registers `object` under `id`; refuses an id already in use.
    pub fn register_with_id(&self, object: impl Dispatch, id: &str) -> Result<Uri, Error> {
        self.register_entry(Registration::instance(object).id(id))
    }

    /// Registers `object` under `id`, replacing any object registered there.
    pub fn register_replacing(&self, object: impl Dispatch, id: &str) -> Result<Uri, Error> {
        self.register_entry(Registration::instance(object).id(id).replace())
    }

    /// Registers a factory whose instances live as long as each client connection (Pyro's
    /// `session` instance mode).
    pub fn register_session<D, F>(&self, make: F) -> Result<Uri, Error>
    where
        D: Dispatch,
        F: Fn() -> D + Send + Sync + 'static,
    {
        self.register_entry(Registration::session(make))
    }

    /// Registers a factory that makes a fresh instance for every call (Pyro's `percall`).
    pub fn register_percall<D, F>(&self, make: F) -> Result<Uri, Error>
    where
        D: Dispatch,
        F: Fn() -> D + Send + Sync + 'static,
    {
        self.register_entry(Registration::percall(make))
    }

    /// Registers as `registration` says (id, instance mode, one call at a time).
    pub fn register_entry(&self, registration: Registration) -> Result<Uri, Error> {
        let id = registration
            .id
            .clone()
            .unwrap_or_else(|| format!("obj_{}", uuid::Uuid::new_v4().simple()));
        let force = registration.replace;
        self.insert(Arc::new(Entry::from_registration(registration)), &id, force)
    }

    fn insert(&self, object: Arc<Entry>, id: &str, force: bool) -> Result<Uri, Error> {
        if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c == '@') {
            return Err(Error::InvalidUri {
                uri: id.to_owned(),
                reason: "object ids may not be empty or contain whitespace or '@'".into(),
            });
        }
        if id == DAEMON_OBJECT_ID {
            return Err(Error::Daemon(format!(
                "the object id {DAEMON_OBJECT_ID:?} is reserved for the daemon"
            )));
        }
        let mut objects = self
            .inner
            .objects
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if !force && objects.contains_key(id) {
            return Err(Error::Daemon(format!(
                "an object is already registered under id {id:?}"
            )));
        }
        objects.insert(id.to_owned(), object);
        Ok(self.uri_for(id))
    }

    /// Removes object `id`; returns whether it was registered. Open connections to it get
    /// `UnknownObject` on their next call.
    pub fn unregister(&self, id: &str) -> bool {
        if id == DAEMON_OBJECT_ID {
            return false;
        }
        self.inner
            .objects
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .is_some()
    }

    /// Number of streamed results open in this daemon (lingering ones included).
    pub fn open_streams(&self) -> usize {
        self.inner.streams.len()
    }

    /// Ids of all registered objects, the daemon object included.
    pub fn registered(&self) -> Vec<String> {
        self.inner.registered()
    }

    /// Asks [`serve`](Self::serve) to stop: no new connections or requests; running calls get
    /// the grace period to finish.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Accepts connections and serves calls until [`shutdown`](Self::shutdown), then waits up
    /// to the grace period for running calls and returns.
    pub async fn serve(&self) -> Result<(), Error> {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| Error::Closed("this daemon is already serving or has served".into()))?;
        let inner = &self.inner;
        tracing::info!(location = %inner.bound, "daemon serving");
        loop {
            tokio::select! {
                _ = inner.shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => match inner.connections.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let daemon = self.clone();
                            inner.tasks.spawn(async move {
                                let _permit = permit;
                                let abort = daemon.inner.abort.clone();
                                tokio::select! {
                                    _ = accept_connection(daemon, stream, peer) => {}
                                    _ = abort.cancelled() => {}
                                }
                            });
                        }
                        Err(_) => {
                            let max = inner.config.max_connections;
                            tracing::warn!(%peer, max_connections = max, "connection refused: too many connections");
                            inner.tasks.spawn(refuse_connection(stream, max, inner.config.limits));
                        }
                    },
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        inner.tasks.close();
        if tokio::time::timeout(inner.config.grace_period, inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; dropping calls still running");
            inner.abort.cancel();
            inner.tasks.wait().await;
        }
        inner.streams.clear();
        tracing::info!(location = %inner.bound, "daemon stopped");
        Ok(())
    }

    /// Serves one already accepted stream (any transport) until it closes or the daemon shuts down.
    pub async fn serve_stream<S>(&self, stream: S, peer: impl Into<String>)
    where
        S: tokio::io::AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        accept_connection(self.clone(), Box::new(stream), peer.into()).await
    }
}

impl Inner {
    fn object(&self, id: &str) -> Option<Arc<Entry>> {
        self.objects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn registered(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .objects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }
}

fn reply_to(req: &Message, msg_type: MessageType, flags: u16, payload: Vec<u8>) -> Message {
    let mut msg = Message::new(msg_type, req.serializer, flags, req.seq, payload);
    msg.corr_id = if req.has_flag(frame::FLAGS_CORR_ID) {
        req.corr_id
    } else {
        *uuid::Uuid::new_v4().as_bytes()
    };
    msg
}

/// What one client connection owns: its session instances. Dropped, with them, when the
/// connection and its last running call are gone.
struct ConnectionState {
    id: streams::ConnectionId,
    sessions: Mutex<HashMap<String, Arc<dyn Dispatch>>>,
    /// The client's verified TLS certificate, if it sent one.
    peer_certificate: Option<Certificate>,
}

impl ConnectionState {
    /// The instance that serves a call to `entry`: shared, this connection's, or a new one.
    fn target(&self, id: &str, entry: &Entry) -> Arc<dyn Dispatch> {
        match &entry.target {
            Target::Shared(d) => d.clone(),
            Target::Session(make) => self
                .sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(id.to_owned())
                .or_insert_with(|| make())
                .clone(),
            Target::PerCall(make) => make(),
        }
    }
}

async fn handle_connection(
    daemon: Daemon,
    stream: BoxStream,
    peer: String,
    peer_certificate: Option<Certificate>,
) {
    let inner = daemon.inner.clone();
    let (mut reader, mut writer) = transport::split(stream, inner.config.limits.max_message_size);
    reader.set_frame_timeout(inner.config.frame_timeout);

    // The handshake: the first message must be a CONNECT to a registered object, accepted by
    // the validator and, with a shared secret, carrying the client's nonce.
    let first = tokio::time::timeout(inner.config.handshake_timeout, reader.read_frame()).await;
    let (object_id, session) = match first {
        Ok(Ok(Some(req))) => match handshake(&inner, &req, &peer, peer_certificate.as_ref()) {
            Ok((id, reply, session)) => {
                if writer.write_frame(&reply).await.is_err() {
                    return;
                }
                (id, session)
            }
            Err(reply) => {
                tracing::debug!(%peer, "handshake refused");
                if let Some(reply) = reply {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), writer.write_frame(&reply))
                            .await;
                }
                writer.shutdown().await;
                return;
            }
        },
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "bad first message; closing");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no CONNECT within the handshake timeout; closing");
            return;
        }
    };
    let (signer, mut verifier) = match session {
        Some((s, v)) => (Some(s), Some(v)),
        None => (None, None),
    };
    tracing::debug!(%peer, object = %object_id, "connected");

    let (tx, rx) = mpsc::unbounded_channel::<Outgoing>();
    // The request loop holds one slot while it waits for the next request; more than one other
    // taken slot means calls are finishing concurrently and their replies can share a write.
    let max = inner.config.max_in_flight;
    let slots = Arc::new(Semaphore::new(max));
    let busy = {
        let slots = slots.clone();
        move || max - slots.available_permits() >= 3
    };
    // The writer failing (a peer that stopped reading) ends the request loop too.
    let writer_gone = CancellationToken::new();
    let writer_task = inner.tasks.spawn({
        let (gone, write_timeout, peer) = (writer_gone.clone(), inner.config.write_timeout, peer.clone());
        let abort = inner.abort.clone();
        async move {
            tokio::select! {
                written = transport::write_loop(writer, rx, busy, write_timeout, signer) => if let Err(e) = written {
                    tracing::debug!(%peer, error = %e, "closing the connection");
                },
                _ = abort.cancelled() => {}
            }
            gone.cancel();
        }
    });
    let state = Arc::new(ConnectionState {
        id: inner.next_connection.fetch_add(1, Ordering::Relaxed),
        sessions: Mutex::default(),
        peer_certificate,
    });
    let peer: Arc<str> = peer.into();
    let object_id: Arc<str> = object_id.into();

    loop {
        // Back-pressure: wait for a free slot before reading the next request. Slots are held
        // by running calls and by replies not yet written.
        let slot = tokio::select! {
            _ = inner.shutdown.cancelled() => break,
            _ = writer_gone.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
        };
        // An idle connection (no calls running, no replies pending) may be closed.
        let idle = slots.available_permits() + 1 == max;
        let idle_timeout = inner.config.idle_timeout.filter(|_| idle);
        let req = tokio::select! {
            _ = inner.shutdown.cancelled() => break,
            _ = writer_gone.cancelled() => break,
            read = reader.read_frame_within(idle_timeout) => match read {
                Ok(Some(req)) => req,
                Ok(None) => break,
                Err(Error::Timeout(_)) => {
                    tracing::debug!(%peer, "idle for idle_timeout; closing");
                    break;
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "malformed message; closing this connection");
                    break;
                }
            },
        };
        // Authenticated connections: nothing unsigned is ever decoded.
        if let Some(verifier) = verifier.as_mut() {
            if let Err(e) = verifier.verify(&req) {
                tracing::warn!(%peer, error = %e, "closing the connection");
                break;
            }
        }
        match req.msg_type {
            MessageType::Ping => {
                // The answer holds the slot until written, like any reply.
                let msg = reply_to(&req, MessageType::Ping, 0, b"pong".to_vec());
                let _ = tx.send(Outgoing {
                    msg,
                    flushed: None,
                    slot: Some(slot),
                });
            }
            MessageType::Invoke => {
                let Some(ser) = Serializer::from_id(req.serializer) else {
                    tracing::debug!(%peer, id = req.serializer, "unknown serializer id; closing");
                    break;
                };
                let call = Call {
                    daemon: daemon.clone(),
                    state: state.clone(),
                    peer: peer.clone(),
                    connected: object_id.clone(),
                    ser,
                    req,
                };
                let tx = tx.clone();
                let abort = inner.abort.clone();
                inner.tasks.spawn(async move {
                    tokio::select! {
                        // The reply keeps the call's slot until it is written.
                        reply = call.run() => if let Some(msg) = reply {
                            let _ = tx.send(Outgoing { msg, flushed: None, slot: Some(slot) });
                        },
                        _ = abort.cancelled() => {}
                    }
                });
            }
            other => {
                tracing::debug!(%peer, ?other, "unexpected message type after the handshake; closing");
                break;
            }
        }
    }
    // Let running calls of this connection send their replies, then close.
    drop(tx);
    let _ = writer_task.await;
    inner.streams.orphan(state.id, inner.config.stream_linger);
}

/// A client's TLS certificate (DER).
pub type Certificate = rustls_pki_types::CertificateDer<'static>;

/// Runs the TLS handshake when the daemon serves TLS, then the connection.
async fn accept_connection(daemon: Daemon, stream: BoxStream, peer: String) {
    let Some(acceptor) = daemon.inner.config.tls.clone() else {
        return handle_connection(daemon, stream, peer, None).await;
    };
    let timeout = daemon.inner.config.handshake_timeout;
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.clone().into_owned());
            handle_connection(daemon, Box::new(tls), peer, certificate).await
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "no TLS handshake within the handshake timeout"),
    }
}

/// The message of a panic payload.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic payload)".into())
}

/// Answers a connection over `max_connections`: a CONNECTFAIL naming the limit, then close.
async fn refuse_connection(stream: BoxStream, max: usize, limits: DecodeLimits) {
    let (mut reader, mut writer) = transport::split(stream, limits.max_message_size);
    // Read the CONNECT (briefly) to answer in the client's serializer.
    if let Ok(Ok(Some(req))) =
        tokio::time::timeout(Duration::from_secs(1), reader.read_frame()).await
    {
        if let Some(ser) = Serializer::from_id(req.serializer) {
            let reason = format!("too many connections (max_connections = {max})");
            let payload = ser.encode(&reason).unwrap_or_default();
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                writer.write_frame(&reply_to(&req, MessageType::ConnectFail, 0, payload)),
            )
            .await;
        }
    }
    writer.shutdown().await;
}

/// One INVOKE to run.
struct Call {
    daemon: Daemon,
    state: Arc<ConnectionState>,
    peer: Arc<str>,
    /// The object this connection's CONNECT named.
    connected: Arc<str>,
    ser: Serializer,
    req: Message,
}

impl Call {
    /// Runs the call; returns the reply to send (none for oneway calls).
    async fn run(self) -> Option<Message> {
        let oneway = self.req.has_flag(frame::FLAGS_ONEWAY);
        let corr = if self.req.has_flag(frame::FLAGS_CORR_ID) {
            uuid::Uuid::from_bytes(self.req.corr_id)
        } else {
            uuid::Uuid::new_v4()
        };
        let (result, mut annotations) = self.invoke(corr, oneway).await;
        let ser = self.ser;
        let inner = &self.daemon.inner;
        let result = match result {
            Ok(Outcome::Stream(items)) => inner
                .streams
                .open(
                    self.state.id,
                    items,
                    inner.config.max_streams_per_connection,
                    inner.config.max_streams,
                )
                .map(|id| {
                    annotations.push((*b"STRM", bytes::Bytes::from(id.into_bytes())));
                    None
                }),
            Ok(Outcome::Value(payload)) => Ok(Some(payload)),
            Err(e) => Err(e),
        };
        let batch = self.req.flags & frame::FLAGS_BATCH;
        // A result too big for the limits would make the caller drop the whole connection:
        // answer this call with an error instead.
        let max = inner.config.limits.max_message_size.min(u32::MAX as usize);
        let result = match result {
            Ok(Some(payload)) if payload.len() > max => Err(RemoteError::new(
                RemoteErrorKind::Other,
                "rmi.MessageTooLarge",
                format!(
                    "the result of {} bytes exceeds max_message_size ({max} bytes)",
                    payload.len()
                ),
            )),
            other => other,
        };
        let mut reply = match result {
            Ok(Some(payload)) => reply_to(&self.req, MessageType::Result, batch, payload),
            // As Pyro: an exception for clients that do not know streams, flagged and annotated.
            Ok(None) => {
                let marker = RemoteError::new(
                    RemoteErrorKind::Protocol,
                    "Pyro5.errors.ProtocolError",
                    "result of call is an iterator",
                );
                let flags = frame::FLAGS_EXCEPTION | frame::FLAGS_ITEMSTREAMRESULT;
                reply_to(
                    &self.req,
                    MessageType::Result,
                    flags,
                    codec::encode_error(ser, &marker),
                )
            }
            Err(err) => {
                if oneway {
                    tracing::warn!(error = %err, "oneway call failed");
                }
                reply_to(
                    &self.req,
                    MessageType::Result,
                    frame::FLAGS_EXCEPTION,
                    codec::encode_error(ser, &err),
                )
            }
        };
        reply.corr_id = *corr.as_bytes();
        reply.annotations = annotations;
        (!oneway).then_some(reply)
    }

    async fn invoke(
        &self,
        corr: uuid::Uuid,
        oneway: bool,
    ) -> (Result<Outcome, RemoteError>, Vec<frame::Annotation>) {
        let inner = &self.daemon.inner;
        let call =
            match codec::decode_invoke(self.ser, self.req.payload.clone(), &inner.config.limits) {
                Ok(call) => call,
                Err(e) => {
                    let err = RemoteError::new(
                        RemoteErrorKind::Protocol,
                        "Pyro5.errors.ProtocolError",
                        format!("malformed call: {e}"),
                    );
                    return (Err(err), Vec::new());
                }
            };
        let object = call.object.as_str();
        if object != &*self.connected && object != DAEMON_OBJECT_ID {
            let err = if inner.object(object).is_none() {
                RemoteError::unknown_object(object)
            } else {
                let mut e = RemoteError::new(
                    RemoteErrorKind::Protocol,
                    "Pyro5.errors.ProtocolError",
                    format!(
                        "this connection was opened for object {:?}, not {object:?}",
                        &*self.connected
                    ),
                );
                e.object = Some(object.to_owned());
                e
            };
            return (Err(err), Vec::new());
        }
        let method = call.method.as_str();
        let ctx = CallContext::new(
            self.peer.clone(),
            object.to_owned(),
            method.to_owned(),
            corr,
            self.req.annotations.clone(),
            oneway,
            self.daemon.clone(),
            self.state.id,
            self.state.peer_certificate.clone(),
        );
        let result = if method == codec::BATCH_METHOD && self.req.has_flag(frame::FLAGS_BATCH) {
            self.batch(object, call.args, &ctx).await
        } else {
            self.dispatch(object, method, call.args, &ctx, corr).await
        };
        (result, ctx.take_response_annotations())
    }

    /// Runs the calls of a `<batch>` in order, stopping at the first error (as Pyro does).
    async fn batch(
        &self,
        object: &str,
        args: codec::Args,
        ctx: &CallContext,
    ) -> Result<Outcome, RemoteError> {
        let limits = &self.daemon.inner.config.limits;
        let (calls,): (Vec<serde_bytes::ByteBuf>,) = args
            .decode()
            .map_err(|e| RemoteError::bad_arguments(codec::BATCH_METHOD, e))?;
        let mut results = Vec::with_capacity(calls.len());
        for payload in calls {
            let item = match codec::decode_invoke(self.ser, payload.into_vec().into(), limits) {
                Err(e) => Err(RemoteError::bad_arguments(codec::BATCH_METHOD, e)),
                Ok(call) => {
                    let corr = ctx.correlation_id();
                    match self
                        .dispatch(object, &call.method, call.args, ctx, corr)
                        .await
                    {
                        Ok(Outcome::Value(v)) => Ok(v),
                        Ok(Outcome::Stream(_)) => Err(RemoteError::new(
                            RemoteErrorKind::Other,
                            "Pyro5.errors.PyroError",
                            format!(
                                "{:?}: streamed results are not supported inside a batch",
                                call.method
                            ),
                        )),
                        Err(e) => Err(e),
                    }
                }
            };
            let failed = item.is_err();
            results.push(codec::BatchItem::from(item));
            if failed {
                break;
            }
        }
        self.ser.encode(&results).map(Outcome::Value).map_err(|e| {
            RemoteError::new(
                RemoteErrorKind::Other,
                "rmi.SerializeError",
                format!("could not serialize the batch: {e}"),
            )
        })
    }

    /// Runs one method on the object (or this connection's instance of it) inside `ctx`.
    async fn dispatch(
        &self,
        object: &str,
        method: &str,
        args: codec::Args,
        ctx: &CallContext,
        corr: uuid::Uuid,
    ) -> Result<Outcome, RemoteError> {
        let inner = &self.daemon.inner;
        let entry = inner
            .object(object)
            .ok_or_else(|| RemoteError::unknown_object(object))?;
        // Making a session or per-call instance runs user code too: a panic there is this
        // caller's error, like a panic in the method.
        let target = match std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.state.target(object, &entry)
        })) {
            Ok(target) => target,
            Err(panic) => {
                let text = panic_text(&*panic);
                tracing::error!(object, method, panic = %text, "instance factory panicked");
                let mut err =
                    RemoteError::panic(method, &format!("the instance factory panicked: {text}"));
                err.object = Some(object.to_owned());
                return Err(err);
            }
        };
        let span = tracing::debug_span!("rmi.dispatch", object, method, correlation_id = %corr, peer = %self.peer);
        let run = ctx
            .clone()
            .scope(AssertUnwindSafe(target.dispatch(method, args)).catch_unwind())
            .instrument(span);
        // The caller stops waiting at its deadline; so does the method (gRPC-style propagation).
        let outcome = match ctx.deadline() {
            Some(deadline) => match tokio::time::timeout_at(deadline, run).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    tracing::debug!(object, method, "caller's deadline passed; call cancelled");
                    let mut err = RemoteError::new(
                        RemoteErrorKind::DeadlineExceeded,
                        "rmi.DeadlineExceeded",
                        format!("the caller's deadline passed, so {method:?} was cancelled"),
                    );
                    err.object = Some(object.to_owned());
                    return Err(err);
                }
            },
            None => run.await,
        };
        match outcome {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(mut err)) => {
                if err.object.as_deref().is_none_or(str::is_empty) {
                    err.object = Some(object.to_owned());
                }
                Err(err)
            }
            Err(panic) => {
                let text = panic_text(&*panic);
                tracing::error!(object, method, panic = %text, "remote method panicked");
                let mut err = RemoteError::panic(method, &text);
                err.object = Some(object.to_owned());
                Err(err)
            }
        }
    }
}

/// What a handshake validator sees of a connecting client.
#[derive(Debug)]
#[non_exhaustive]
pub struct HandshakeInfo<'a> {
    /// The client's address.
    pub peer: &'a str,
    /// The object the client connects to.
    pub object: &'a str,
    /// The client's handshake data (Pyro's `_pyroHandshake`; `"hello"` by default).
    pub data: &'a str,
    /// The client's TLS certificate, verified against the daemon's client CA (mutual TLS).
    pub peer_certificate: Option<&'a Certificate>,
}

/// Decides whether a client may connect (Pyro's `Daemon.validateHandshake`): `Ok` carries the
/// answer sent back in CONNECTOK, `Err` the reason sent in CONNECTFAIL.
pub trait ValidateHandshake: Send + Sync + 'static {
    /// Accepts or refuses one connection.
    fn validate(&self, info: &HandshakeInfo<'_>) -> Result<String, String>;
}

impl<F> ValidateHandshake for F
where
    F: Fn(&HandshakeInfo<'_>) -> Result<String, String> + Send + Sync + 'static,
{
    fn validate(&self, info: &HandshakeInfo<'_>) -> Result<String, String> {
        self(info)
    }
}

/// Checks a CONNECT; returns the object id, the CONNECTOK and the authenticated session, or the
/// reply to send before closing.
fn handshake(
    inner: &Inner,
    req: &Message,
    peer: &str,
    peer_certificate: Option<&Certificate>,
) -> Result<(String, Message, Option<crate::auth::Session>), Option<Message>> {
    // An unknown serializer or a message that is not CONNECT: Pyro closes (after a CONNECTFAIL
    // for the latter, when it can say it in a serializer the client knows).
    let ser = Serializer::from_id(req.serializer).ok_or(None)?;
    let fail = |reason: String| {
        let payload = ser.encode(&reason).unwrap_or_default();
        Some(reply_to(req, MessageType::ConnectFail, 0, payload))
    };
    if req.msg_type != MessageType::Connect {
        return Err(fail(format!(
            "invalid msg type {} received (expected: 1)",
            req.msg_type as u8
        )));
    }
    let connect: ConnectRequest = ser
        .decode(&req.payload, &inner.config.limits)
        .map_err(|e| fail(format!("invalid data: {e}")))?;
    let Some(object) = inner.object(&connect.object) else {
        return Err(fail(format!("unknown object {:?}", connect.object)));
    };
    let answer = match &inner.config.validator {
        Some(validator) => {
            let info = HandshakeInfo {
                peer,
                object: &connect.object,
                data: &connect.handshake,
                peer_certificate,
            };
            validator.validate(&info).map_err(fail)?
        }
        None => connect.handshake,
    };
    let ok = ConnectOk {
        handshake: answer,
        meta: object.meta.clone(),
    };
    let payload = ser.encode(&ok).map_err(|e| fail(e.to_string()))?;
    let mut reply = reply_to(req, MessageType::ConnectOk, 0, payload);
    let session = match &inner.config.secret {
        None => None,
        Some(secret) => {
            let client = crate::auth::check_nonce(req.annotation(&crate::auth::NONCE_ANNOTATION))
                .map_err(fail)?;
            let server = crate::auth::nonce().map_err(|e| fail(e.to_string()))?;
            let transcript = crate::auth::transcript(&req.payload, &reply.payload);
            let proof = secret.server_proof(client, &server, &transcript);
            reply.annotations.push((
                crate::auth::NONCE_ANNOTATION,
                bytes::Bytes::copy_from_slice(&server),
            ));
            reply.annotations.push((
                crate::auth::PROOF_ANNOTATION,
                bytes::Bytes::copy_from_slice(&proof),
            ));
            Some(secret.server_session(client, &server, &transcript))
        }
    };
    Ok((connect.object, reply, session))
}
