//! The client side: [`Proxy`], one lazily dialed, multiplexed connection shared by its clones.
//!
//! Many calls may be in flight at once; each takes a sequence number that is not in use (never
//! 0, which belongs to CONNECT and PING), and a reader task hands each reply to the call with
//! that number. A call that times out or is dropped keeps its number reserved until its reply
//! arrives or the connection closes, so a late reply can never reach another call. At most
//! `max_in_flight` calls are live per connection; more wait for a slot.
//!
//! When the connection dies, the next call dials again (resolving a logical URI again, so a
//! server that moved is found), once for all waiting calls, with jittered backoff. A failed
//! call is retried only when it provably did not execute, when the proxy is marked
//! [`idempotent`](Proxy::idempotent), or when it has [`retries`](Proxy::with_retries).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::batch::Batch;
use crate::context::DEADLINE_ANNOTATION;
use crate::error::{Error, RemoteError};
use crate::protocol::codec::{self, ConnectOk, ConnectRequest, DecodeLimits, Metadata, Serializer};
use crate::protocol::frame::{self, Annotation, Message, MessageType};
use crate::resolve::Resolve;
use crate::stream::ItemStream;
use crate::transport::{self, BoxStream, FrameReader, Outgoing};
use crate::uri::Uri;

/// Default [`ProxyBuilder::max_in_flight`]: calls live at once on one connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Default [`ProxyBuilder::connect_timeout`]: dial plus handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshake data sent when none is configured (Pyro's default).
pub const DEFAULT_HANDSHAKE: &str = "hello";
/// Default [`ProxyBuilder::reconnect_attempts`]: extra dials after a failed one.
pub const DEFAULT_RECONNECT_ATTEMPTS: u32 = 2;
/// First backoff between dials; doubled each time, jittered, capped at [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between two dials.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Sequence numbers usable by calls: 1 to 65535.
const SEQ_VALUES: usize = u16::MAX as usize;

/// A client-side check of the daemon's handshake answer.
type AnswerCheck = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Settings of a proxy, with documented defaults; build one with [`Proxy::builder`].
#[derive(Clone)]
pub struct ProxyBuilder {
    uri: Uri,
    serializer: Serializer,
    connect_timeout: Duration,
    max_in_flight: usize,
    limits: DecodeLimits,
    handshake: String,
    resolver: Option<Arc<dyn Resolve>>,
    reconnect_attempts: u32,
    options: CallOptions,
    secret: Option<crate::auth::SharedSecret>,
    tls: Option<Arc<rustls::ClientConfig>>,
    validate_answer: Option<AnswerCheck>,
}

impl std::fmt::Debug for ProxyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyBuilder")
            .field("uri", &self.uri)
            .field("serializer", &self.serializer)
            .field("options", &self.options)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("limits", &self.limits)
            .field("resolver", &self.resolver.is_some())
            .field("shared_secret", &self.secret.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl ProxyBuilder {
    /// Settings for a proxy to `uri`, with the defaults: bincode, no call timeout, 10 s connect
    /// timeout, 2 reconnect attempts, no retries, 1,024 calls in flight, 64 MiB messages,
    /// nesting depth 128, and the process's default resolver if one was installed
    /// ([`crate::resolve::install_default`]; the `rmi` facade installs the name server's).
    pub fn new(uri: Uri) -> Self {
        ProxyBuilder {
            uri,
            serializer: Serializer::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            limits: DecodeLimits::default(),
            handshake: DEFAULT_HANDSHAKE.to_owned(),
            resolver: crate::resolve::default_resolver(),
            reconnect_attempts: DEFAULT_RECONNECT_ATTEMPTS,
            options: CallOptions::default(),
            secret: None,
            tls: None,
            validate_answer: None,
        }
    }

    /// Proves `secret` to the daemon (which must prove it back) and signs every message; see
    /// [`crate::auth`].
    pub fn shared_secret(mut self, secret: crate::auth::SharedSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Connects with TLS (rustls): the daemon's certificate is verified against the config's
    /// roots and the URI's host name. Add a client certificate to the config for mutual TLS.
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Checks the daemon's handshake answer (Pyro's `_pyroValidateHandshake`); an `Err`
    /// refuses the connection with that reason.
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
    /// idempotent methods only; default 0).
    pub fn retries(mut self, n: u32) -> Self {
        self.options.retries = n;
        self
    }

    /// The payload serializer for calls (the daemon answers in the same one).
    pub fn serializer(mut self, serializer: Serializer) -> Self {
        self.serializer = serializer;
        self
    }

    /// Deadline for each call, from sending to reply (default: none). The remaining time
    /// travels with the call, so the method can read it from its call context.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
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
        let options = Arc::new(self.options.clone());
        Proxy {
            shared: Arc::new(Shared {
                config: self,
                conn: RwLock::new(None),
                dial_lock: tokio::sync::Mutex::new(None),
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
    /// duplex in tests); it performs the handshake now and never redials.
    pub async fn connect_over<S, P>(self, stream: S) -> Result<P, Error>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        P: From<Proxy>,
    {
        let object = self
            .uri
            .object()
            .map(str::to_owned)
            .ok_or_else(|| Error::InvalidUri {
                uri: self.uri.to_string(),
                reason: "a proxy over a given stream needs a direct PYRO: uri".into(),
            })?;
        let uri = self.uri.clone();
        let conn = tokio::time::timeout(
            self.connect_timeout,
            Connection::open(Box::new(stream), &object, uri, &self),
        )
        .await
        .map_err(|_| Error::Timeout(self.connect_timeout))??;
        let proxy = self.build();
        *proxy.shared.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(conn));
        Ok(P::from(proxy))
    }
}

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

/// A handle to a remote object. Cheap to clone; clones share one connection.
///
/// A proxy serializes as its URI, so a method can take or return one (Pyro's autoproxy); a
/// deserialized proxy dials on first use with default settings.
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

struct Shared {
    config: ProxyBuilder,
    /// The live connection, if dialed; replaced when it dies.
    conn: RwLock<Option<Arc<Connection>>>,
    /// Serializes dialing so concurrent first calls, and calls after a failure, dial once;
    /// holds when the last dial failed and why, so callers that waited for it share the failure.
    dial_lock: tokio::sync::Mutex<Option<(tokio::time::Instant, String)>>,
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
        self.live().map(|c| c.direct.clone())
    }

    /// The object's metadata from the last handshake, dialing if needed.
    pub async fn metadata(&self) -> Result<Metadata, Error> {
        Ok(self.connection().await?.meta.clone())
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

    /// Calls `method` with the argument tuple `args` and decodes the result as `R`.
    pub async fn call<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<R, Error> {
        Ok(self.call_full(method, args).await?.value)
    }

    /// Like [`call`](Self::call), also returning the reply's annotations and correlation id.
    pub async fn call_full<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<Reply<R>, Error> {
        self.call_object(None, method, args).await
    }

    /// Calls a method of the daemon object `Pyro.Daemon` on the same connection.
    pub async fn call_daemon<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<R, Error> {
        Ok(self
            .call_object(Some(crate::daemon::DAEMON_OBJECT_ID), method, args)
            .await?
            .value)
    }

    async fn call_object<A: Serialize, R: DeserializeOwned>(
        &self,
        object: Option<&str>,
        method: &str,
        args: &A,
    ) -> Result<Reply<R>, Error> {
        let (reply, correlation_id) = self.request(object, method, args, 0).await?;
        let value = decode_result(&reply, &self.shared.config.limits)?;
        Ok(Reply {
            value,
            annotations: reply.annotations,
            correlation_id,
        })
    }

    /// Calls a method declared to return `RemoteStream<T>`; the items are fetched as the
    /// returned stream is polled.
    pub async fn call_stream<A: Serialize, T: DeserializeOwned + Send + 'static>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<ItemStream<T>, Error> {
        let (reply, _) = self.request(None, method, args, 0).await?;
        if !reply.has_flag(frame::FLAGS_ITEMSTREAMRESULT) {
            // An error (or a plain value from a method that is not streaming).
            decode_result::<serde::de::IgnoredAny>(&reply, &self.shared.config.limits)?;
            return Err(Error::Protocol(format!(
                "{method:?} did not return a stream"
            )));
        }
        let id = reply
            .annotation(b"STRM")
            .and_then(|v| std::str::from_utf8(v).ok())
            .ok_or_else(|| Error::Protocol("stream result without a STRM annotation".into()))?;
        Ok(ItemStream::new(self.clone(), id.to_owned()))
    }

    /// Sends a request with this proxy's retry policy; returns the raw reply.
    async fn request<A: Serialize>(
        &self,
        object: Option<&str>,
        method: &str,
        args: &A,
        flags: u16,
    ) -> Result<(Message, uuid::Uuid), Error> {
        let mut retries_left = self.options.retries.max(u32::from(self.options.idempotent));
        let mut unsent_retry = true;
        loop {
            let corr = self
                .options
                .correlation_id
                .unwrap_or_else(uuid::Uuid::new_v4);
            let span = tracing::debug_span!("rmi.call", uri = %self.shared.config.uri, method, correlation_id = %corr);
            let attempt = async {
                let conn = self.connection().await.map_err(Error::not_sent)?;
                let msg = self.invoke_message(&conn, object, method, args, corr, flags)?;
                conn.request(msg, self.options.timeout).await
            };
            match attempt.instrument(span).await {
                Ok(reply) => return Ok((reply, corr)),
                // Never sent: safe to try once more on a fresh connection.
                Err(e @ Error::NotSent(_))
                    if e.is_communication() && std::mem::take(&mut unsent_retry) =>
                {
                    tracing::debug!(error = %e, method, "request not sent; retrying");
                }
                Err(e) if e.is_communication() && retries_left > 0 => {
                    retries_left -= 1;
                    tracing::debug!(error = %e, method, retries_left, "call failed on the connection; retrying");
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn invoke_message<A: Serialize>(
        &self,
        conn: &Connection,
        object: Option<&str>,
        method: &str,
        args: &A,
        corr: uuid::Uuid,
        flags: u16,
    ) -> Result<Message, Error> {
        let payload = codec::encode_invoke(
            conn.serializer,
            object.unwrap_or(&conn.object),
            method,
            args,
        )?;
        let max = self
            .shared
            .config
            .limits
            .max_message_size
            .min(u32::MAX as usize);
        if payload.len() > max {
            return Err(Error::Protocol(format!(
                "request of {} bytes exceeds max_message_size ({max} bytes); not sent",
                payload.len()
            ))
            .not_sent());
        }
        let mut msg = Message::new(MessageType::Invoke, conn.serializer.id(), flags, 0, payload);
        msg.corr_id = *corr.as_bytes();
        msg.annotations = self.options.annotations.clone();
        // A deadline means "stop waiting for the reply": oneway calls have none to wait for.
        if let Some(t) = self
            .options
            .timeout
            .filter(|_| flags & frame::FLAGS_ONEWAY == 0)
        {
            let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
            msg.annotations.push((
                DEADLINE_ANNOTATION,
                Bytes::copy_from_slice(&ms.to_be_bytes()),
            ));
        }
        Ok(msg)
    }

    /// A batch of calls to this object, sent in one round trip; see [`Batch`].
    pub fn batch(&self) -> Batch {
        Batch::new(self.clone())
    }

    /// The serializer calls use.
    pub fn serializer(&self) -> Serializer {
        self.shared.config.serializer
    }

    /// The limits replies are decoded with.
    pub fn limits(&self) -> &DecodeLimits {
        &self.shared.config.limits
    }

    pub(crate) async fn send_batch(
        &self,
        calls: Vec<serde_bytes::ByteBuf>,
    ) -> Result<Vec<codec::BatchItem>, Error> {
        let (reply, _) = self
            .request(None, codec::BATCH_METHOD, &(calls,), frame::FLAGS_BATCH)
            .await?;
        decode_result(&reply, &self.shared.config.limits)
    }

    pub(crate) async fn send_batch_oneway(
        &self,
        calls: Vec<serde_bytes::ByteBuf>,
    ) -> Result<(), Error> {
        let corr = self
            .options
            .correlation_id
            .unwrap_or_else(uuid::Uuid::new_v4);
        let conn = self.connection().await.map_err(Error::not_sent)?;
        let flags = frame::FLAGS_BATCH | frame::FLAGS_ONEWAY;
        let msg = self.invoke_message(&conn, None, codec::BATCH_METHOD, &(calls,), corr, flags)?;
        conn.send_oneway(msg, self.options.timeout).await
    }

    /// Sends a oneway call: returns once the request is written; the daemon sends no reply and
    /// the call has no ordering guarantee against the caller's next call (as in Pyro).
    pub async fn call_oneway<A: Serialize>(&self, method: &str, args: &A) -> Result<(), Error> {
        self.oneway_to(None, method, args).await
    }

    /// Sends a oneway call to the daemon object `Pyro.Daemon`.
    pub async fn call_daemon_oneway<A: Serialize>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<(), Error> {
        self.oneway_to(Some(crate::daemon::DAEMON_OBJECT_ID), method, args)
            .await
    }

    async fn oneway_to<A: Serialize>(
        &self,
        object: Option<&str>,
        method: &str,
        args: &A,
    ) -> Result<(), Error> {
        let corr = self
            .options
            .correlation_id
            .unwrap_or_else(uuid::Uuid::new_v4);
        let span = tracing::debug_span!("rmi.oneway", uri = %self.shared.config.uri, method, correlation_id = %corr);
        async {
            let conn = self.connection().await.map_err(Error::not_sent)?;
            let msg =
                self.invoke_message(&conn, object, method, args, corr, frame::FLAGS_ONEWAY)?;
            conn.send_oneway(msg, self.options.timeout).await
        }
        .instrument(span)
        .await
    }

    /// Sends a protocol-level `MSG_PING` and waits for the answer.
    pub async fn ping(&self) -> Result<(), Error> {
        let conn = self.connection().await.map_err(Error::not_sent)?;
        conn.ping(self.options.timeout).await
    }

    /// Closes the connection now; the next call dials again.
    pub fn close(&self) {
        if let Some(conn) = self
            .shared
            .conn
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            conn.shared.close("closed by the proxy".into());
        }
    }

    /// The live connection, dialing (and resolving a logical URI) if there is none. Concurrent
    /// callers wait for one dial; failed dials are retried with jittered exponential backoff.
    async fn connection(&self) -> Result<Arc<Connection>, Error> {
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let waiting_since = tokio::time::Instant::now();
        let mut last_failure = self.shared.dial_lock.lock().await;
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        // A dial that ended while we waited failed for us too: do not dial all over again.
        if let Some((_, reason)) = last_failure.as_ref().filter(|(at, _)| *at >= waiting_since) {
            return Err(Error::ConnectionClosed(format!("connecting failed: {reason}")).not_sent());
        }
        let config = &self.shared.config;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        let conn = loop {
            match self.dial().await {
                Ok(conn) => break conn,
                // Answers, not outages: another dial would get the same.
                Err(e) if e.is_not_executed() && !matches!(e, Error::NotSent(_)) => return Err(e),
                Err(e) if attempt >= config.reconnect_attempts => {
                    *last_failure = Some((tokio::time::Instant::now(), e.to_string()));
                    return Err(e);
                }
                Err(e) => {
                    attempt += 1;
                    let wait = jitter(backoff);
                    tracing::debug!(error = %e, attempt, ?wait, uri = %config.uri, "dial failed; retrying");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        let conn = Arc::new(conn);
        *self.shared.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    /// Resolves (if logical), dials and performs the handshake, within the connect timeout.
    async fn dial(&self) -> Result<Connection, Error> {
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
            let object = object.to_owned();
            let mut stream = transport::dial(location, config.connect_timeout).await?;
            if let Some(tls) = &config.tls {
                stream = transport::tls_connect(stream, location, tls.clone()).await?;
            }
            Connection::open(stream, &object, direct, config).await
        };
        tokio::time::timeout(config.connect_timeout, fut)
            .await
            .map_err(|_| Error::Timeout(config.connect_timeout))?
    }

    fn live(&self) -> Option<Arc<Connection>> {
        let guard = self.shared.conn.read().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().filter(|c| !c.shared.is_closed()).cloned()
    }
}

/// `d` scaled by a pseudo-random factor in [0.5, 1.5), so many proxies do not redial in step.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let mut x = u64::from(nanos) ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    d.mul_f64(0.5 + (x % 1000) as f64 / 1000.0)
}

/// A proxy travels as its URI: the direct one it is connected to, else the one it was made for.
impl Serialize for Proxy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let uri = self.connected_uri().unwrap_or_else(|| self.uri().clone());
        s.collect_str(&uri)
    }
}

/// A received proxy dials on first use, with default settings.
impl<'de> Deserialize<'de> for Proxy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let uri = Uri::deserialize(d)?;
        Ok(ProxyBuilder::new(uri).build())
    }
}

fn decode_result<R: DeserializeOwned>(reply: &Message, limits: &DecodeLimits) -> Result<R, Error> {
    let ser = Serializer::from_id(reply.serializer).ok_or_else(|| {
        Error::Protocol(format!(
            "reply uses unknown serializer id {}",
            reply.serializer
        ))
    })?;
    if reply.has_flag(frame::FLAGS_EXCEPTION) {
        let err: RemoteError = ser.decode(&reply.payload, limits)?;
        return Err(Error::from_remote(err));
    }
    ser.decode(&reply.payload, limits)
}

/// One open connection: the writer channel plus the state shared with its reader task.
struct Connection {
    tx: mpsc::UnboundedSender<Outgoing>,
    shared: Arc<ConnShared>,
    serializer: Serializer,
    object: String,
    /// The direct URI this connection was dialed for.
    direct: Uri,
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
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed
            .is_some()
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
            None => tracing::warn!(
                seq = msg.seq,
                "reply for a sequence number with no call; ignored"
            ),
        }
    }
}

impl Connection {
    /// Performs the CONNECT handshake on `stream` and starts the reader and writer tasks.
    async fn open(
        stream: BoxStream,
        object: &str,
        direct: Uri,
        config: &ProxyBuilder,
    ) -> Result<Connection, Error> {
        let (mut reader, mut writer) = transport::split(stream, config.limits.max_message_size);
        let ser = config.serializer;
        let request = ConnectRequest {
            handshake: config.handshake.clone(),
            object: object.to_owned(),
        };
        let mut connect = Message::new(MessageType::Connect, ser.id(), 0, 0, ser.encode(&request)?);
        let client_nonce = match &config.secret {
            Some(_) => {
                let n = crate::auth::nonce()?;
                connect
                    .annotations
                    .push((crate::auth::NONCE_ANNOTATION, Bytes::copy_from_slice(&n)));
                Some(n)
            }
            None => None,
        };
        writer.write_frame(&connect).await?;
        let reply = reader.read_frame().await?.ok_or_else(|| {
            Error::ConnectionClosed("daemon closed the connection during the handshake".into())
        })?;
        let meta = match reply.msg_type {
            MessageType::ConnectOk => {
                let ok = ser.decode::<ConnectOk>(&reply.payload, &config.limits)?;
                if let Some(validate) = &config.validate_answer {
                    validate(&ok.handshake).map_err(Error::ConnectFailed)?;
                }
                ok.meta
            }
            MessageType::ConnectFail => {
                let reason: String = ser
                    .decode(&reply.payload, &config.limits)
                    .unwrap_or_else(|_| "(undecodable reason)".into());
                if reason.starts_with("unknown object") {
                    return Err(Error::UnknownObject(object.to_owned()));
                }
                return Err(Error::ConnectFailed(reason));
            }
            other => {
                return Err(Error::Protocol(format!(
                    "expected CONNECTOK or CONNECTFAIL, got {other:?}"
                )))
            }
        };
        // With a shared secret the daemon must prove it knows it before anything is sent.
        let (signer, verifier) = match (&config.secret, client_nonce) {
            (Some(secret), Some(client)) => {
                let server =
                    crate::auth::check_nonce(reply.annotation(&crate::auth::NONCE_ANNOTATION))
                        .map_err(|_| {
                            Error::ConnectFailed(
                                "the daemon did not authenticate (no nonce)".into(),
                            )
                        })?;
                let proof = reply
                    .annotation(&crate::auth::PROOF_ANNOTATION)
                    .map(|p| p.as_ref())
                    .unwrap_or_default();
                let transcript = crate::auth::transcript(&connect.payload, &reply.payload);
                if !crate::auth::same(&secret.server_proof(&client, server, &transcript), proof) {
                    return Err(Error::ConnectFailed(
                        "the daemon could not prove the shared secret".into(),
                    ));
                }
                let (s, v) = secret.client_session(&client, server, &transcript);
                (Some(s), Some(v))
            }
            _ => (None, None),
        };
        let shared = Arc::new(ConnShared {
            state: Mutex::new(ConnState {
                pending: HashMap::new(),
                pings: VecDeque::new(),
                next_seq: 1,
                closed: None,
            }),
            slots: Arc::new(Semaphore::new(config.max_in_flight)),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let (slots, max) = (shared.slots.clone(), config.max_in_flight);
        let closer = shared.clone();
        tokio::spawn(async move {
            let busy = move || max - slots.available_permits() >= 2;
            if let Err(e) = transport::write_loop(writer, rx, busy, None, signer).await {
                closer.close(e.to_string());
            }
        });
        tokio::spawn(read_loop(reader, shared.clone(), verifier));
        Ok(Connection {
            tx,
            shared,
            serializer: ser,
            object: object.to_owned(),
            direct,
            meta,
        })
    }

    /// Sends an INVOKE (its sequence number is filled in here) and waits for its reply.
    async fn request(&self, mut msg: Message, timeout: Option<Duration>) -> Result<Message, Error> {
        // One deadline for the whole call: waiting for an in-flight slot counts too.
        let deadline = timeout.map(|t| (tokio::time::Instant::now() + t, t));
        let slot = self.slot(deadline).await?;
        let (reply_tx, reply_rx) = oneshot::channel();
        let seq = self.take_seq(Some(Pending {
            reply: reply_tx,
            _slot: slot,
        }))?;
        msg.seq = seq;
        if self.tx.send(msg.into()).is_err() {
            self.shared
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pending
                .remove(&seq);
            return Err(self.closed_error().not_sent());
        }
        let wait = async { reply_rx.await.unwrap_or_else(|_| Err(self.closed_error())) };
        match deadline {
            Some((at, t)) => tokio::time::timeout_at(at, wait)
                .await
                .map_err(|_| Error::Timeout(t))?,
            None => wait.await,
        }
    }

    /// Waits for an in-flight slot, until `deadline` if there is one; a call that never got a
    /// slot was never sent.
    async fn slot(
        &self,
        deadline: Option<(tokio::time::Instant, Duration)>,
    ) -> Result<OwnedSemaphorePermit, Error> {
        let acquire = self.shared.slots.clone().acquire_owned();
        let slot = match deadline {
            Some((at, t)) => tokio::time::timeout_at(at, acquire)
                .await
                .map_err(|_| Error::Timeout(t).not_sent())?,
            None => acquire.await,
        };
        slot.map_err(|_| self.closed_error().not_sent())
    }

    /// Takes the next free sequence number; with `pending`, reserves it until the reply comes.
    fn take_seq(&self, pending: Option<Pending>) -> Result<u16, Error> {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reason) = &state.closed {
            return Err(Error::ConnectionClosed(reason.clone()).not_sent());
        }
        let seq = free_seq(&state.pending, state.next_seq);
        state.next_seq = seq.wrapping_add(1);
        if let Some(pending) = pending {
            state.pending.insert(seq, pending);
        }
        Ok(seq)
    }

    /// Writes a oneway INVOKE; it holds an in-flight slot until it is on the socket.
    async fn send_oneway(&self, mut msg: Message, timeout: Option<Duration>) -> Result<(), Error> {
        let _slot = self
            .slot(timeout.map(|t| (tokio::time::Instant::now() + t, t)))
            .await?;
        // Oneway calls take a number (as in Pyro) but never reserve it: no reply will come.
        msg.seq = self.take_seq(None)?;
        let (flushed, written) = oneshot::channel();
        self.tx
            .send(Outgoing {
                msg,
                flushed: Some(flushed),
                slot: None,
            })
            .map_err(|_| self.closed_error().not_sent())?;
        written.await.map_err(|_| self.closed_error())
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
        let ping = Message::new(
            MessageType::Ping,
            frame::PING_SERIALIZER,
            0,
            0,
            Bytes::from_static(b"ping"),
        );
        self.tx
            .send(ping.into())
            .map_err(|_| self.closed_error().not_sent())?;
        let wait = async {
            rx.await
                .unwrap_or_else(|_| Err(self.closed_error()))
                .map(drop)
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, wait)
                .await
                .map_err(|_| Error::Timeout(t))?,
            None => wait.await,
        }
    }

    fn closed_error(&self) -> Error {
        let state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        Error::ConnectionClosed(
            state
                .closed
                .clone()
                .unwrap_or_else(|| "connection closed".into()),
        )
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

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    shared: Arc<ConnShared>,
    mut verifier: Option<crate::auth::Verifier>,
) {
    loop {
        let read = reader.read_frame().await;
        // Authenticated connections: a reply that fails its MAC is never decoded.
        if let (Ok(Some(msg)), Some(verifier)) = (&read, verifier.as_mut()) {
            if let Err(e) = verifier.verify(msg) {
                shared.close(e.to_string());
                return;
            }
        }
        match read {
            Ok(Some(msg)) if matches!(msg.msg_type, MessageType::Result | MessageType::Ping) => {
                shared.deliver(msg)
            }
            Ok(Some(msg)) => {
                shared.close(format!(
                    "protocol error: unexpected {:?} message from the daemon",
                    msg.msg_type
                ));
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
        assert_eq!(
            free_seq(&pending, u16::MAX),
            3,
            "wraps past 65535, skipping 0 and taken numbers"
        );
    }
}
