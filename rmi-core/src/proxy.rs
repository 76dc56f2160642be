//! The client side: [`Proxy`], one lazily dialed, multiplexed connection shared by its clones.
//!
//! Many calls may be in flight at once; each takes a sequence number that is not in use (never
//! 0, which belongs to CONNECT and PING), and a reader task hands each reply to the call with
//! that number. A call that times out or is dropped keeps its number reserved until its reply
//! arrives or the connection closes, so a late reply can never reach another call. At most
//! `max_in_flight` calls are live per connection; more wait for a slot.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, RemoteError};
use crate::protocol::codec::{self, ConnectOk, ConnectRequest, DecodeLimits, Metadata, Serializer};
use crate::protocol::frame::{self, Message, MessageType};
use crate::resolve::Resolve;
use crate::transport::{self, BoxStream, FrameReader};
use crate::uri::Uri;

/// Default [`ProxyBuilder::max_in_flight`]: calls live at once on one connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Default [`ProxyBuilder::connect_timeout`]: dial plus handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshake data sent when none is configured (Pyro's default).
pub const DEFAULT_HANDSHAKE: &str = "hello";
/// Sequence numbers usable by calls: 1 to 65535.
const SEQ_VALUES: usize = u16::MAX as usize;

/// Settings of a proxy, with documented defaults; build one with [`Proxy::builder`].
#[derive(Clone)]
pub struct ProxyBuilder {
    uri: Uri,
    serializer: Serializer,
    timeout: Option<Duration>,
    connect_timeout: Duration,
    max_in_flight: usize,
    limits: DecodeLimits,
    handshake: String,
    resolver: Option<Arc<dyn Resolve>>,
}

impl std::fmt::Debug for ProxyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyBuilder")
            .field("uri", &self.uri)
            .field("serializer", &self.serializer)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("limits", &self.limits)
            .field("resolver", &self.resolver.is_some())
            .finish()
    }
}

impl ProxyBuilder {
    /// Settings for a proxy to `uri`, with the defaults: bincode, no call timeout, 10 s connect
    /// timeout, 1,024 calls in flight, 64 MiB messages, nesting depth 128, no resolver.
    pub fn new(uri: Uri) -> Self {
        ProxyBuilder {
            uri,
            serializer: Serializer::default(),
            timeout: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            limits: DecodeLimits::default(),
            handshake: DEFAULT_HANDSHAKE.to_owned(),
            resolver: None,
        }
    }

    /// The payload serializer for calls (the daemon answers in the same one).
    pub fn serializer(mut self, serializer: Serializer) -> Self {
        self.serializer = serializer;
        self
    }

    /// Deadline for each call, from sending to reply (default: none).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Deadline for dialing plus the CONNECT handshake (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Most calls live at once on the connection; more wait (default 1,024, at most 65,535).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.clamp(1, SEQ_VALUES);
        self
    }

    /// Limits for decoding replies (default 64 MiB, depth 128).
    pub fn limits(mut self, limits: DecodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Handshake data sent in CONNECT (default `"hello"`).
    pub fn handshake(mut self, data: impl Into<String>) -> Self {
        self.handshake = data.into();
        self
    }

    /// The resolver for `PYRONAME:`/`PYROMETA:` URIs, consulted on every dial.
    pub fn resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Builds the proxy without any I/O; it dials on its first call.
    pub fn build(self) -> Proxy {
        Proxy {
            shared: Arc::new(Shared { config: self, conn: RwLock::new(None), dial_lock: tokio::sync::Mutex::new(()) }),
        }
    }

    /// Builds the proxy and dials now, so a bad address or unknown object fails here.
    pub async fn connect<P: From<Proxy>>(self) -> Result<P, Error> {
        let proxy = self.build();
        proxy.connection().await?;
        Ok(P::from(proxy))
    }

    /// Builds a proxy that runs over an already open stream (any transport, e.g. an in-memory
    /// duplex in tests); it performs the handshake now and never redials.
    pub async fn connect_over<S, P>(self, stream: S) -> Result<P, Error>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        P: From<Proxy>,
    {
        let object = self.uri.object().map(str::to_owned).ok_or_else(|| Error::InvalidUri {
            uri: self.uri.to_string(),
            reason: "a proxy over a given stream needs a direct PYRO: uri".into(),
        })?;
        let conn = tokio::time::timeout(self.connect_timeout, Connection::open(Box::new(stream), &object, &self))
            .await
            .map_err(|_| Error::Timeout(self.connect_timeout))??;
        let proxy = self.build();
        *proxy.shared.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(conn));
        Ok(P::from(proxy))
    }
}

/// A handle to a remote object. Cheap to clone; clones share one connection.
///
/// ```no_run
/// # async fn demo() -> Result<(), rmi_core::Error> {
/// let proxy: rmi_core::Proxy = rmi_core::Proxy::builder("PYRO:obj@127.0.0.1:9999".parse()?).connect().await?;
/// let reply: String = proxy.call("welcomeMessage", &("Rashmi",)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("uri", &self.shared.config.uri.to_string()).finish()
    }
}

struct Shared {
    config: ProxyBuilder,
    /// The live connection, if dialed; replaced when it dies.
    conn: RwLock<Option<Arc<Connection>>>,
    /// Serializes dialing so concurrent first calls dial once.
    dial_lock: tokio::sync::Mutex<()>,
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

    /// The object's metadata from the last handshake, dialing if needed.
    pub async fn metadata(&self) -> Result<Metadata, Error> {
        Ok(self.connection().await?.meta.clone())
    }

    /// Calls `method` with the argument tuple `args` and decodes the result as `R`.
    pub async fn call<A: Serialize, R: DeserializeOwned>(&self, method: &str, args: &A) -> Result<R, Error> {
        let conn = self.connection().await?;
        let payload = codec::encode_invoke(conn.serializer, &conn.object, method, args)?;
        let reply = conn.request(payload, self.shared.config.timeout).await?;
        decode_result(&reply, &self.shared.config.limits)
    }

    /// Calls a method of the daemon object `Pyro.Daemon` on the same connection.
    pub async fn call_daemon<A: Serialize, R: DeserializeOwned>(&self, method: &str, args: &A) -> Result<R, Error> {
        let conn = self.connection().await?;
        let payload = codec::encode_invoke(conn.serializer, crate::daemon::DAEMON_OBJECT_ID, method, args)?;
        let reply = conn.request(payload, self.shared.config.timeout).await?;
        decode_result(&reply, &self.shared.config.limits)
    }

    /// Sends a protocol-level `MSG_PING` and waits for the answer.
    pub async fn ping(&self) -> Result<(), Error> {
        let conn = self.connection().await?;
        conn.ping(self.shared.config.timeout).await
    }

    /// Closes the connection now; the next call dials again.
    pub fn close(&self) {
        if let Some(conn) = self.shared.conn.write().unwrap_or_else(|e| e.into_inner()).take() {
            conn.shared.close("closed by the proxy".into());
        }
    }

    /// The live connection, dialing (and resolving a logical URI) if there is none.
    async fn connection(&self) -> Result<Arc<Connection>, Error> {
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let _guard = self.shared.dial_lock.lock().await;
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let config = &self.shared.config;
        let fut = async {
            let direct =
                match (&config.uri, &config.resolver) {
                    (Uri::Pyro { .. }, _) => config.uri.clone(),
                    (_, Some(resolver)) => resolver.resolve(&config.uri).await?,
                    (uri, None) => return Err(Error::InvalidUri {
                        uri: uri.to_string(),
                        reason:
                            "a PYRONAME:/PYROMETA: uri needs a name-server resolver (connect through the `rmi` crate)"
                                .into(),
                    }),
                };
            let (Some(object), Some(location)) = (direct.object(), direct.location()) else {
                return Err(Error::InvalidUri {
                    uri: direct.to_string(),
                    reason: "resolver returned a logical uri".into(),
                });
            };
            let stream = transport::dial(location, config.connect_timeout).await?;
            Connection::open(stream, object, config).await
        };
        let conn = tokio::time::timeout(config.connect_timeout, fut)
            .await
            .map_err(|_| Error::Timeout(config.connect_timeout))??;
        let conn = Arc::new(conn);
        *self.shared.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    fn live(&self) -> Option<Arc<Connection>> {
        let guard = self.shared.conn.read().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().filter(|c| !c.shared.is_closed()).cloned()
    }
}

fn decode_result<R: DeserializeOwned>(reply: &Message, limits: &DecodeLimits) -> Result<R, Error> {
    let ser = Serializer::from_id(reply.serializer)
        .ok_or_else(|| Error::Protocol(format!("reply uses unknown serializer id {}", reply.serializer)))?;
    if reply.has_flag(frame::FLAGS_EXCEPTION) {
        let err: RemoteError = ser.decode(&reply.payload, limits)?;
        return Err(Error::from_remote(err));
    }
    ser.decode(&reply.payload, limits)
}

/// One open connection: the writer channel plus the state shared with its reader task.
struct Connection {
    tx: mpsc::UnboundedSender<Message>,
    shared: Arc<ConnShared>,
    serializer: Serializer,
    object: String,
    meta: Metadata,
}

struct ConnShared {
    state: Mutex<ConnState>,
    slots: Arc<Semaphore>,
}

struct ConnState {
    pending: HashMap<u16, Pending>,
    pings: VecDeque<oneshot::Sender<Result<Message, Error>>>,
    next_seq: u16,
    closed: Option<String>,
}

struct Pending {
    reply: oneshot::Sender<Result<Message, Error>>,
    /// The in-flight slot, released only when the reply arrives or the connection dies.
    _slot: OwnedSemaphorePermit,
}

impl ConnShared {
    fn is_closed(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed.is_some()
    }

    /// Marks the connection dead and fails every waiting call with `reason`.
    fn close(&self, reason: String) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.closed.is_none() {
            state.closed = Some(reason.clone());
        }
        for (_, p) in state.pending.drain() {
            let _ = p.reply.send(Err(Error::ConnectionClosed(reason.clone())));
        }
        for p in state.pings.drain(..) {
            let _ = p.send(Err(Error::ConnectionClosed(reason.clone())));
        }
        self.slots.close();
    }

    fn deliver(&self, msg: Message) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if msg.msg_type == MessageType::Ping {
            if let Some(waiter) = state.pings.pop_front() {
                let _ = waiter.send(Ok(msg));
            }
            return;
        }
        match state.pending.remove(&msg.seq) {
            // The receiver may be gone (timed out or dropped); the number is free again either way.
            Some(p) => drop(p.reply.send(Ok(msg))),
            None => tracing::warn!(seq = msg.seq, "reply for a sequence number with no call; ignored"),
        }
    }
}

impl Connection {
    /// Performs the CONNECT handshake on `stream` and starts the reader and writer tasks.
    async fn open(stream: BoxStream, object: &str, config: &ProxyBuilder) -> Result<Connection, Error> {
        let (mut reader, mut writer) = transport::split(stream, config.limits.max_message_size);
        let ser = config.serializer;
        let request = ConnectRequest { handshake: config.handshake.clone(), object: object.to_owned() };
        writer.write_frame(&Message::new(MessageType::Connect, ser.id(), 0, 0, ser.encode(&request)?)).await?;
        let reply = reader
            .read_frame()
            .await?
            .ok_or_else(|| Error::ConnectionClosed("daemon closed the connection during the handshake".into()))?;
        let meta = match reply.msg_type {
            MessageType::ConnectOk => ser.decode::<ConnectOk>(&reply.payload, &config.limits)?.meta,
            MessageType::ConnectFail => {
                let reason: String =
                    ser.decode(&reply.payload, &config.limits).unwrap_or_else(|_| "(undecodable reason)".into());
                if reason.starts_with("unknown object") {
                    return Err(Error::UnknownObject(object.to_owned()));
                }
                return Err(Error::ConnectFailed(reason));
            }
            other => return Err(Error::Protocol(format!("expected CONNECTOK or CONNECTFAIL, got {other:?}"))),
        };
        let shared = Arc::new(ConnShared {
            state: Mutex::new(ConnState { pending: HashMap::new(), pings: VecDeque::new(), next_seq: 1, closed: None }),
            slots: Arc::new(Semaphore::new(config.max_in_flight)),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let (slots, max) = (shared.slots.clone(), config.max_in_flight);
        let closer = shared.clone();
        tokio::spawn(async move {
            let busy = move || max - slots.available_permits() >= 2;
            if let Err(e) = transport::write_loop(writer, rx, busy).await {
                closer.close(e.to_string());
            }
        });
        tokio::spawn(read_loop(reader, shared.clone()));
        Ok(Connection { tx, shared, serializer: ser, object: object.to_owned(), meta })
    }

    /// Sends an INVOKE with `payload` and waits for its reply.
    async fn request(&self, payload: Vec<u8>, timeout: Option<Duration>) -> Result<Message, Error> {
        let slot = self.shared.slots.clone().acquire_owned().await.map_err(|_| self.closed_error())?;
        let (reply_tx, reply_rx) = oneshot::channel();
        let seq = {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(reason) = &state.closed {
                return Err(Error::ConnectionClosed(reason.clone()));
            }
            let seq = free_seq(&state.pending, state.next_seq);
            state.next_seq = seq.wrapping_add(1);
            state.pending.insert(seq, Pending { reply: reply_tx, _slot: slot });
            seq
        };
        let msg = Message::new(MessageType::Invoke, self.serializer.id(), 0, seq, payload);
        if self.tx.send(msg).is_err() {
            self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).pending.remove(&seq);
            return Err(self.closed_error());
        }
        let wait = async { reply_rx.await.unwrap_or_else(|_| Err(self.closed_error())) };
        match timeout {
            Some(t) => tokio::time::timeout(t, wait).await.map_err(|_| Error::Timeout(t))?,
            None => wait.await,
        }
    }

    async fn ping(&self, timeout: Option<Duration>) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(reason) = &state.closed {
                return Err(Error::ConnectionClosed(reason.clone()));
            }
            state.pings.push_back(tx);
        }
        let ping = Message::new(MessageType::Ping, frame::PING_SERIALIZER, 0, 0, Bytes::from_static(b"ping"));
        self.tx.send(ping).map_err(|_| self.closed_error())?;
        let wait = async { rx.await.unwrap_or_else(|_| Err(self.closed_error())).map(drop) };
        match timeout {
            Some(t) => tokio::time::timeout(t, wait).await.map_err(|_| Error::Timeout(t))?,
            None => wait.await,
        }
    }

    fn closed_error(&self) -> Error {
        let state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        Error::ConnectionClosed(state.closed.clone().unwrap_or_else(|| "connection closed".into()))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The last handle is gone: fail anything still waiting; the writer task ends when the
        // channel closes and shuts the socket down, which ends the reader.
        self.shared.close("proxy dropped".into());
    }
}

/// The first sequence number at or after `start` that is neither 0 nor in use.
///
/// The in-flight limit (at most 65,535) guarantees one is free.
fn free_seq<V>(pending: &HashMap<u16, V>, start: u16) -> u16 {
    let mut seq = start;
    loop {
        if seq != 0 && !pending.contains_key(&seq) {
            return seq;
        }
        seq = seq.wrapping_add(1);
    }
}

async fn read_loop<R: AsyncRead + Unpin>(mut reader: FrameReader<R>, shared: Arc<ConnShared>) {
    loop {
        match reader.read_frame().await {
            Ok(Some(msg)) if matches!(msg.msg_type, MessageType::Result | MessageType::Ping) => shared.deliver(msg),
            Ok(Some(msg)) => {
                shared.close(format!("protocol error: unexpected {:?} message from the daemon", msg.msg_type));
                return;
            }
            Ok(None) => {
                shared.close("the daemon closed the connection".into());
                return;
            }
            Err(e) => {
                shared.close(e.to_string());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_seq_skips_zero_and_numbers_in_use() {
        let mut pending = HashMap::new();
        assert_eq!(free_seq(&pending, 0), 1);
        pending.insert(1u16, ());
        pending.insert(2u16, ());
        assert_eq!(free_seq(&pending, 1), 3);
        pending.insert(u16::MAX, ());
        assert_eq!(free_seq(&pending, u16::MAX), 3, "wraps past 65535, skipping 0 and taken numbers");
    }
}
