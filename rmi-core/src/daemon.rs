//! The server side: [`Daemon`] accepts connections and runs calls on registered objects.
//!
//! A listener accepts connections; each gets a handler that performs the CONNECT handshake and
//! then reads requests, spawning one task per call so pipelined calls run concurrently and are
//! answered by sequence number as they finish. A malformed message closes only its own
//! connection; a panicking method becomes an error reply to its caller only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::AsyncWrite;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dispatch::{BoxFuture, Dispatch};
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::protocol::codec::{self, Args, ConnectOk, ConnectRequest, DecodeLimits, Metadata, Serializer};
use crate::protocol::frame::{self, Message, MessageType};
use crate::transport::{self, BoxStream};
use crate::uri::{Location, Uri};

/// Object id of the daemon's own object, as in Pyro.
pub const DAEMON_OBJECT_ID: &str = "Pyro.Daemon";
/// Host a daemon binds when none is given: loopback, never all interfaces unless asked.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default [`DaemonBuilder::max_in_flight`]: calls running at once per connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Default [`DaemonBuilder::grace_period`]: how long shutdown waits for running calls.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(5);
/// Default [`DaemonBuilder::handshake_timeout`]: how long a new connection may take to CONNECT.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a daemon, with documented defaults.
#[derive(Debug, Clone)]
pub struct DaemonBuilder {
    limits: DecodeLimits,
    max_in_flight: usize,
    grace_period: Duration,
    handshake_timeout: Duration,
}

impl Default for DaemonBuilder {
    fn default() -> Self {
        DaemonBuilder {
            limits: DecodeLimits::default(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            grace_period: DEFAULT_GRACE_PERIOD,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
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

    /// Binds a TCP listener on `addr` (e.g. `"127.0.0.1:0"`).
    pub async fn bind(self, addr: impl ToSocketAddrs) -> Result<Daemon, Error> {
        let listener = TcpListener::bind(addr).await.map_err(|e| Error::io("binding the daemon", e))?;
        let local_addr = listener.local_addr().map_err(|e| Error::io("reading the bound address", e))?;
        if local_addr.ip().is_unspecified() {
            tracing::warn!(%local_addr, "daemon bound to an unspecified address: its URIs will not be dialable");
        }
        let inner = Arc::new(Inner {
            config: self,
            local_addr,
            objects: RwLock::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        inner
            .objects
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(DAEMON_OBJECT_ID.to_owned(), Arc::new(DaemonObject { daemon: Arc::downgrade(&inner) }));
        Ok(Daemon { inner, listener: Arc::new(Mutex::new(Some(listener))) })
    }
}

/// Serves registered objects over TCP. Cheap to clone; clones are the same daemon.
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
    listener: Arc<Mutex<Option<TcpListener>>>,
}

struct Inner {
    config: DaemonBuilder,
    local_addr: SocketAddr,
    /// Registered objects by id, the daemon object included.
    objects: RwLock<HashMap<String, Arc<dyn Dispatch>>>,
    /// Cancelled to stop accepting and reading; running calls go on.
    shutdown: CancellationToken,
    /// Cancelled when the grace period is over: running calls are dropped.
    abort: CancellationToken,
    /// Connection handlers and call tasks, so shutdown can wait for them.
    tasks: TaskTracker,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("local_addr", &self.inner.local_addr).finish()
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

    /// The address the daemon listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The `PYRO:` URI of object `id` in this daemon.
    pub fn uri_for(&self, id: &str) -> Uri {
        let addr = self.inner.local_addr;
        Uri::Pyro { object: id.to_owned(), location: Location::Tcp { host: addr.ip().to_string(), port: addr.port() } }
    }

    /// Registers `object` under a generated id (`obj_` + 32 hex digits) and returns its URI.
    pub fn register(&self, object: impl Dispatch) -> Result<Uri, Error> {
        let id = format!("obj_{}", uuid::Uuid::new_v4().simple());
        self.register_with_id(object, &id)
    }

    /// Registers `object` under `id`; refuses an id already in use.
    pub fn register_with_id(&self, object: impl Dispatch, id: &str) -> Result<Uri, Error> {
        self.insert(Arc::new(object), id, false)
    }

    /// Registers `object` under `id`, replacing any object registered there.
    pub fn register_replacing(&self, object: impl Dispatch, id: &str) -> Result<Uri, Error> {
        self.insert(Arc::new(object), id, true)
    }

    fn insert(&self, object: Arc<dyn Dispatch>, id: &str, force: bool) -> Result<Uri, Error> {
        if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c == '@') {
            return Err(Error::InvalidUri {
                uri: id.to_owned(),
                reason: "object ids may not be empty or contain whitespace or '@'".into(),
            });
        }
        if id == DAEMON_OBJECT_ID {
            return Err(Error::Daemon(format!("the object id {DAEMON_OBJECT_ID:?} is reserved for the daemon")));
        }
        let mut objects = self.inner.objects.write().unwrap_or_else(|e| e.into_inner());
        if !force && objects.contains_key(id) {
            return Err(Error::Daemon(format!("an object is already registered under id {id:?}")));
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
        self.inner.objects.write().unwrap_or_else(|e| e.into_inner()).remove(id).is_some()
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
        tracing::info!(addr = %inner.local_addr, "daemon serving");
        loop {
            tokio::select! {
                _ = inner.shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let inner = inner.clone();
                        inner.tasks.clone().spawn(async move {
                            let abort = inner.abort.clone();
                            tokio::select! {
                                _ = handle_connection(inner, Box::new(stream), peer.to_string()) => {}
                                _ = abort.cancelled() => {}
                            }
                        });
                    }
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
        if tokio::time::timeout(inner.config.grace_period, inner.tasks.wait()).await.is_err() {
            tracing::warn!("grace period over; dropping calls still running");
            inner.abort.cancel();
            inner.tasks.wait().await;
        }
        tracing::info!(addr = %inner.local_addr, "daemon stopped");
        Ok(())
    }

    /// Serves one already accepted stream (any transport) until it closes or the daemon shuts down.
    pub async fn serve_stream<S>(&self, stream: S, peer: impl Into<String>)
    where
        S: tokio::io::AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        handle_connection(self.inner.clone(), Box::new(stream), peer.into()).await
    }
}

impl Inner {
    fn object(&self, id: &str) -> Option<Arc<dyn Dispatch>> {
        self.objects.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    fn registered(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.objects.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        ids.sort();
        ids
    }
}

fn reply_to(req: &Message, msg_type: MessageType, flags: u16, payload: Vec<u8>) -> Message {
    let mut msg = Message::new(msg_type, req.serializer, flags, req.seq, payload);
    msg.corr_id = if req.has_flag(frame::FLAGS_CORR_ID) { req.corr_id } else { *uuid::Uuid::new_v4().as_bytes() };
    msg
}

async fn handle_connection(inner: Arc<Inner>, stream: BoxStream, peer: String) {
    let (mut reader, writer) = transport::split(stream, inner.config.limits.max_message_size);
    let (tx, rx) = mpsc::unbounded_channel();
    // The request loop holds one slot while it waits for the next request; more than one other
    // taken slot means calls are finishing concurrently and their replies can share a write.
    let max = inner.config.max_in_flight;
    let slots = Arc::new(Semaphore::new(max));
    let busy = {
        let slots = slots.clone();
        move || max - slots.available_permits() >= 3
    };
    let writer_task = tokio::spawn(transport::write_loop(writer, rx, busy));

    // The handshake: the first message must be a CONNECT to a registered object.
    let first = tokio::time::timeout(inner.config.handshake_timeout, reader.read_frame()).await;
    let object_id = match first {
        Ok(Ok(Some(req))) => match handshake(&inner, &req) {
            Ok((id, reply)) => {
                let _ = tx.send(reply);
                id
            }
            Err(reply) => {
                tracing::debug!(%peer, "handshake refused");
                if let Some(reply) = reply {
                    let _ = tx.send(reply);
                }
                drop(tx);
                let _ = writer_task.await;
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
    tracing::debug!(%peer, object = %object_id, "connected");

    loop {
        // Back-pressure: wait for a free slot before reading the next request.
        let slot = tokio::select! {
            _ = inner.shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
        };
        let req = tokio::select! {
            _ = inner.shutdown.cancelled() => break,
            read = reader.read_frame() => match read {
                Ok(Some(req)) => req,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "malformed message; closing this connection");
                    break;
                }
            },
        };
        match req.msg_type {
            MessageType::Ping => {
                let _ = tx.send(reply_to(&req, MessageType::Ping, 0, b"pong".to_vec()));
            }
            MessageType::Invoke => {
                let Some(ser) = Serializer::from_id(req.serializer) else {
                    tracing::debug!(%peer, id = req.serializer, "unknown serializer id; closing");
                    break;
                };
                let inner2 = inner.clone();
                let tx = tx.clone();
                let object_id = object_id.clone();
                inner.tasks.spawn(async move {
                    let _slot = slot;
                    let oneway = req.has_flag(frame::FLAGS_ONEWAY);
                    let result = tokio::select! {
                        r = invoke(&inner2, &object_id, ser, &req) => r,
                        _ = inner2.abort.cancelled() => return,
                    };
                    let reply = match result {
                        Ok(payload) => reply_to(&req, MessageType::Result, 0, payload),
                        Err(err) => {
                            if oneway {
                                tracing::warn!(error = %err, "oneway call failed");
                            }
                            reply_to(&req, MessageType::Result, frame::FLAGS_EXCEPTION, codec::encode_error(ser, &err))
                        }
                    };
                    if !oneway {
                        let _ = tx.send(reply);
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
}

/// Checks a CONNECT; returns the object id and the CONNECTOK, or the reply to send before closing.
fn handshake(inner: &Inner, req: &Message) -> Result<(String, Message), Option<Message>> {
    // An unknown serializer or a message that is not CONNECT: Pyro closes (after a CONNECTFAIL
    // for the latter, when it can say it in a serializer the client knows).
    let ser = Serializer::from_id(req.serializer).ok_or(None)?;
    let fail = |reason: String| {
        let payload = ser.encode(&reason).unwrap_or_default();
        Some(reply_to(req, MessageType::ConnectFail, 0, payload))
    };
    if req.msg_type != MessageType::Connect {
        return Err(fail(format!("invalid msg type {} received (expected: 1)", req.msg_type as u8)));
    }
    let connect: ConnectRequest =
        ser.decode(&req.payload, &inner.config.limits).map_err(|e| fail(format!("invalid data: {e}")))?;
    let Some(object) = inner.object(&connect.object) else {
        return Err(fail(format!("unknown object {:?}", connect.object)));
    };
    let ok = ConnectOk { handshake: connect.handshake, meta: object.metadata() };
    let payload = ser.encode(&ok).map_err(|e| fail(e.to_string()))?;
    Ok((connect.object, reply_to(req, MessageType::ConnectOk, 0, payload)))
}

/// Runs one INVOKE and returns the encoded result or the error for the caller.
async fn invoke(inner: &Inner, connected: &str, ser: Serializer, req: &Message) -> Result<Vec<u8>, RemoteError> {
    let call = codec::decode_invoke(ser, req.payload.clone(), &inner.config.limits).map_err(|e| {
        RemoteError::new(RemoteErrorKind::Protocol, "Pyro5.errors.ProtocolError", format!("malformed call: {e}"))
    })?;
    if call.object != connected && call.object != DAEMON_OBJECT_ID {
        return Err(if inner.object(&call.object).is_none() {
            RemoteError::unknown_object(&call.object)
        } else {
            let mut e = RemoteError::new(
                RemoteErrorKind::Protocol,
                "Pyro5.errors.ProtocolError",
                format!("this connection was opened for object {connected:?}, not {:?}", call.object),
            );
            e.object = Some(call.object.clone());
            e
        });
    }
    let object = inner.object(&call.object).ok_or_else(|| RemoteError::unknown_object(&call.object))?;
    let method = call.method.as_str();
    match AssertUnwindSafe(object.dispatch(method, call.args)).catch_unwind().await {
        Ok(Ok(payload)) => Ok(payload),
        Ok(Err(mut err)) => {
            if err.object.as_deref().is_none_or(str::is_empty) {
                err.object = Some(call.object.clone());
            }
            Err(err)
        }
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic payload)".into());
            tracing::error!(object = %call.object, method, panic = %text, "remote method panicked");
            let mut err = RemoteError::panic(method, &text);
            err.object = Some(call.object.clone());
            Err(err)
        }
    }
}

/// The daemon's own object, `Pyro.Daemon`: ping, registered, get_metadata, info.
struct DaemonObject {
    daemon: Weak<Inner>,
}

impl Dispatch for DaemonObject {
    fn metadata(&self) -> Metadata {
        Metadata {
            methods: ["get_metadata", "info", "ping", "registered"].map(String::from).to_vec(),
            oneway: Vec::new(),
            attrs: Vec::new(),
        }
    }

    fn dispatch<'a>(&'a self, method: &'a str, args: Args) -> BoxFuture<'a, Result<Vec<u8>, RemoteError>> {
        Box::pin(async move {
            let ser = args.serializer();
            let inner = self.daemon.upgrade().ok_or_else(|| RemoteError::unknown_object(DAEMON_OBJECT_ID))?;
            let bad = |e: Error| RemoteError::bad_arguments(method, e);
            let encoded = match method {
                "ping" => {
                    args.decode::<[(); 0]>().map_err(bad)?;
                    ser.encode(&())
                }
                "registered" => {
                    args.decode::<[(); 0]>().map_err(bad)?;
                    ser.encode(&inner.registered())
                }
                "info" => {
                    args.decode::<[(); 0]>().map_err(bad)?;
                    let n = inner.objects.read().unwrap_or_else(|e| e.into_inner()).len();
                    ser.encode(&format!("rmi daemon bound on {}, {n} objects registered", inner.local_addr))
                }
                "get_metadata" => {
                    let (id,): (String,) = args.decode().map_err(bad)?;
                    let object = inner.object(&id).ok_or_else(|| RemoteError::unknown_object(&id))?;
                    ser.encode(&object.metadata())
                }
                _ => return Err(RemoteError::unknown_method(DAEMON_OBJECT_ID, method)),
            };
            encoded.map_err(|e| RemoteError::new(RemoteErrorKind::Other, "rmi.SerializeError", e.to_string()))
        })
    }
}
