//! The call API: `call*` entry points, the retry policy, and building the INVOKE message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use super::connection::{Connection, Wire};
use super::dial::{Ahead, DialFailed, Dialing, Due};
use super::stream::ItemStream;
use super::{Proxy, RawReply, Reply, Shared};
use crate::error::{Error, RemoteErrorKind};
use crate::protocol::codec::{self, DecodeLimits, Serializer};
use crate::protocol::frame::{self, Message, MessageType, Protocol};
use crate::protocol::names::{
    daemon_method::CLOSE_STREAM, deadline_millis, BATCH_METHOD, BULK_ANNOTATION, DAEMON_OBJECT_ID,
    DEADLINE_ANNOTATION, MAC_LEN, NOT_RUN_ANNOTATION, STREAM_ANNOTATION,
};
use crate::transport::received;

/// The largest call sent right behind the CONNECT. A daemon that refuses the CONNECT closes
/// with the call unread: a small one is in its socket buffer, and its answer reaches the proxy;
/// a large one could fail the proxy's write first, hiding the refusal. A large argument is
/// also better not encoded by every caller of a fresh proxy at once, for one of them to use.
const AHEAD_MAX: usize = 64 * 1024;

/// How long a call waits for the closes of streams given up on to go out ahead of it (at once,
/// unless every slot is taken); the rest go on from a task.
const CLOSE_AHEAD: Duration = Duration::from_millis(20);

/// A call encoded before its dial but too large to go with the CONNECT (see
/// [`Proxy::encode_ahead`]), for the connection it was encoded for.
struct Kept {
    serializer: Serializer,
    protocol: Protocol,
    object: String,
    msg: Message,
}

impl Kept {
    /// Whether a connection speaking `wire` reads it as encoded.
    fn fits(&self, wire: &Wire<'_>) -> bool {
        self.serializer == wire.serializer
            && self.protocol == wire.protocol
            && self.object == wire.object
    }
}

impl Proxy {
    /// Calls `method` with the argument tuple `args` and decodes the result as `R`.
    ///
    /// In Pyro's formats, trailing `None` arguments are left out, as a Python caller leaves
    /// out arguments that have defaults (a Python method then uses its defaults). To pass a
    /// trailing `None` to a Python parameter that has no default, or to override a default
    /// with `None`, pass `()`, which travels as `None` and is never left out:
    /// `proxy.call("store", &("key", ()))` is Python's `proxy.store("key", None)`.
    pub async fn call<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<R, Error> {
        Ok(self.call_full(method, args).await?.value)
    }

    /// Calls `method` with the positional argument tuple `args` and the keyword arguments
    /// `kwargs`, and decodes the result as `R`: Python's `proxy.method(*args, **kwargs)`, for
    /// any Python object (parameters with defaults left out, keyword-only ones given by name).
    ///
    /// `kwargs` is anything that serializes as a map of parameter names to values: a
    /// `BTreeMap<&str, V>` or `HashMap`, or, for values of different types, a struct with named
    /// fields. Keyword arguments travel in Pyro's
    /// formats only: under bincode (two rmi peers) a non-empty `kwargs` is an error; set
    /// `ProxyBuilder::serializer` to a Pyro format to call an rmi daemon by keyword (it binds
    /// them to the Rust parameter names).
    pub async fn call_kwargs<A: Serialize, K: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
        kwargs: &K,
    ) -> Result<R, Error> {
        let (mut reply, origin, _) = self.request(None, method, args, Some(kwargs), 0).await?;
        self.decode_plain(&mut reply, origin)
    }

    /// Calls `method` as [`call_kwargs`](Self::call_kwargs) does, and returns its reply
    /// undecoded, an exception the method raised included (Pyro's `_pyroRawWireResponse`):
    /// the bytes the daemon wrote, in the proxy's serializer. Errors of the call itself (the
    /// connection, a timeout, a refused request) are still errors.
    pub async fn call_raw_kwargs<A: Serialize, K: Serialize + ?Sized>(
        &self,
        method: &str,
        args: &A,
        kwargs: &K,
    ) -> Result<RawReply, Error> {
        let (mut reply, origin, correlation_id) =
            self.request(None, method, args, Some(kwargs), 0).await?;
        let serializer = origin.serializer_of(&reply)?;
        reply.join_payload();
        reply
            .decompress(self.shared.config.limits.max_message_size)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        Ok(RawReply {
            serializer,
            exception: reply.has_flag(frame::FLAGS_EXCEPTION),
            flags: reply.flags,
            payload: reply.payload,
            annotations: reply.annotations,
            correlation_id,
        })
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
            .call_object(Some(DAEMON_OBJECT_ID), method, args)
            .await?
            .value)
    }

    async fn call_object<A: Serialize, R: DeserializeOwned>(
        &self,
        object: Option<&str>,
        method: &str,
        args: &A,
    ) -> Result<Reply<R>, Error> {
        let (mut reply, origin, correlation_id) =
            self.request(object, method, args, None::<&()>, 0).await?;
        let value = self.decode_plain(&mut reply, origin)?;
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
        let (mut reply, origin, _) = self.request(None, method, args, None::<&()>, 0).await?;
        if !reply.has_flag(frame::FLAGS_ITEMSTREAMRESULT) {
            // An error; or a plain value from a method that is not streaming, which is not
            // decoded (bincode could not decode it without its type).
            if reply.has_flag(frame::FLAGS_EXCEPTION) {
                decode_result::<()>(&mut reply, origin, &self.shared)?;
            }
            return Err(Error::Protocol(format!(
                "{method:?} did not return a stream"
            )));
        }
        let id = reply
            .annotation(&STREAM_ANNOTATION)
            .and_then(|v| std::str::from_utf8(v).ok())
            .ok_or_else(|| Error::Protocol("stream result without a STRM annotation".into()))?;
        // Asking for the next item is never safe to repeat (a reply lost or late would skip an
        // item): the stream's calls are not retried, whatever this proxy's retry policy says.
        let once = self.map_options(|o| {
            o.retries = 0;
            o.idempotent = false;
        });
        Ok(ItemStream::new(once, id.to_owned()))
    }

    /// Sends a request with this proxy's retry policy; returns the raw reply and the protocol
    /// of the connection it came on.
    async fn request<A: Serialize, K: Serialize + ?Sized>(
        &self,
        object: Option<&str>,
        method: &str,
        args: &A,
        kwargs: Option<&K>,
        flags: u16,
    ) -> Result<(Message, Origin, uuid::Uuid), Error> {
        let mut retries_left = self.options.retries.max(u32::from(self.options.idempotent));
        let mut unsent_retry = true;
        // Set when the attempt's own dial failed: that dial made its `reconnect_attempts`
        // already, and a retry would make them all again.
        let dial_failed = AtomicBool::new(false);
        // One correlation id for the call, its retries included: the daemon's logs (and a
        // server that looks for repeated requests) see one call.
        let mut call_corr = None;
        loop {
            dial_failed.store(false, Ordering::Relaxed);
            let (corr, timeout) = self.call_settings();
            let corr = *call_corr.get_or_insert(corr);
            // Made inside a remote method whose caller has no time left: timed out at once,
            // neither dialed nor sent.
            if timeout == Some(Duration::ZERO) {
                return Err(Error::Timeout(Duration::ZERO).not_sent());
            }
            let span = crate::spans::debug_span!("rmi.call", uri = %self.shared.config.uri, method, correlation_id = %corr);
            let attempt = async {
                let invoke = |wire: &Wire<'_>| {
                    self.invoke_message(
                        wire,
                        object,
                        method,
                        (args, kwargs),
                        (corr, timeout),
                        flags,
                    )
                };
                // The dial is boxed: inline, its state (connect, TLS, handshake) would make
                // every call's future about 4 KiB larger, though only a call that dials runs it.
                let dialing = match self.live() {
                    Some(conn) => Ok(Dialing::Live(conn)),
                    None => Box::pin(self.begin_dial()).await,
                };
                // `sent`: the call went with the CONNECT; `prepared`: it was too large to, but
                // is encoded for this connection all the same.
                let (conn, sent, prepared) = match dialing {
                    Ok(Dialing::Live(conn)) => (conn, None, None),
                    Ok(Dialing::Due(due)) => {
                        // This call dials: encoded now, it can go out with the CONNECT.
                        let (ahead, kept) = self.encode_ahead(&due, &invoke);
                        let (conn, sent) =
                            Box::pin(self.finish_dial(due, ahead))
                                .await
                                .map_err(|failed| {
                                    // A call that went with the CONNECT and failed after is
                                    // the call's failure: retried as any other.
                                    let unsent = matches!(failed, DialFailed::Unsent(_));
                                    dial_failed.store(unsent, Ordering::Relaxed);
                                    failed.into_call_error()
                                })?;
                        let prepared = kept.filter(|k| k.fits(&conn.wire())).map(|k| k.msg);
                        (conn, sent, prepared)
                    }
                    Err(failed) => {
                        dial_failed.store(true, Ordering::Relaxed);
                        return Err(failed.into_call_error());
                    }
                };
                // Closed ahead of this call's request (these, and those a dropped stream's task
                // is writing), so a stream this call opens finds their places free under
                // `max_streams_per_connection`; waited for `CLOSE_AHEAD` at most: closes that
                // cannot go out at once (every slot taken) go on in their task, and this call's
                // time is its own. (A task: a call given up meanwhile does not take them along.)
                let orphans = conn.shared.take_orphan_streams();
                if !orphans.is_empty() {
                    self.spawn_closes(&conn, orphans);
                }
                // (One atomic load when none are under way: no future, no allocation.)
                if conn.shared.closes_under_way() {
                    Box::pin(conn.shared.closes_written(CLOSE_AHEAD)).await;
                }
                let reply = match sent {
                    Some(seq) => conn.reply(seq, timeout).await,
                    None => {
                        let msg = match prepared {
                            Some(msg) => msg,
                            None => invoke(&conn.wire())?,
                        };
                        conn.request(msg, timeout, self.shared.config.abandoned_timeout)
                            .await
                    }
                };
                // (A call given up on where the daemon runs calls in order, a Pyro daemon,
                // retired the connection: see `ConnShared::retired`.)
                let reply = reply?;
                let origin = Origin {
                    protocol: conn.protocol,
                    rmi_peer: conn.shared.rmi_peer,
                };
                if reply.has_flag(frame::FLAGS_EXCEPTION) {
                    // (Only rmi daemons refuse so; a method cannot set the annotation.)
                    if !conn.shared.in_order && reply.annotation(&NOT_RUN_ANNOTATION).is_some() {
                        return Err(self.not_run(&conn));
                    }
                    // The daemon's clock of this call's deadline ran out before ours (it
                    // counts from the request's arrival, ours from the send; a call sent with
                    // the CONNECT was stamped before the dial): a timeout all the same, as
                    // the caller's own timer would have said a moment later.
                    if let Some(timeout) = timeout {
                        if deadline_passed(&reply, origin, &self.shared.config.limits) {
                            return Err(Error::Timeout(timeout));
                        }
                    }
                }
                Ok((reply, origin))
            };
            match attempt.instrument(span).await {
                Ok((reply, origin)) => return Ok((reply, origin, corr)),
                // Never sent, for the connection was found dead: safe to try once more on a
                // fresh one. Not after a timeout (waiting for an in-flight slot): the call's
                // one deadline has passed, and another try would wait as long again. Nor after
                // a failed dial, which made its own attempts.
                Err(e @ Error::NotSent(_))
                    if e.is_connection()
                        && !dial_failed.load(Ordering::Relaxed)
                        && std::mem::take(&mut unsent_retry) =>
                {
                    tracing::debug!(error = %e, method, "request not sent; retrying");
                }
                // Not after a failed dial either: it made `reconnect_attempts` of its own, and
                // each retry would make them all again. Nor after a timeout waiting for a slot,
                // as above.
                Err(e)
                    if e.is_communication()
                        && retries_left > 0
                        && !dial_failed.load(Ordering::Relaxed)
                        && !(matches!(e, Error::NotSent(_)) && e.is_timeout()) =>
                {
                    retries_left -= 1;
                    tracing::debug!(error = %e, method, retries_left, "call failed on the connection; retrying");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// [`decode_result`], for a caller that reads no stream: a stream the reply opened anyway
    /// (a Python method that returned a generator, a streaming method called as a plain one,
    /// both answered "result of call is an iterator") is closed by the proxy's next call, as
    /// one given up on is, instead of staying open on the daemon for the connection's life.
    fn decode_plain<R: DeserializeOwned>(
        &self,
        reply: &mut Message,
        origin: Origin,
    ) -> Result<R, Error> {
        if reply.has_flag(frame::FLAGS_ITEMSTREAMRESULT) {
            if let Some(conn) = self.live() {
                conn.shared.note_unread_stream(reply);
            }
        }
        decode_result(reply, origin, &self.shared)
    }

    /// Closes streams given up on: those the daemon opened for calls given up before their
    /// replies came (their futures dropped, or timed out without a deadline the daemon saw),
    /// and a dropped [`ItemStream`](super::stream::ItemStream)'s own; oneway, as Pyro's client
    /// does. Left open, each would hold a place of the connection's
    /// `max_streams_per_connection`, and whatever its producer holds, for the connection's
    /// life. Sent on `conn`, where the streams are, and only while it is the proxy's connection:
    /// closed, it took them with it (the daemon drops them after their linger), and a new
    /// dial only to close them would open a connection the caller had closed.
    ///
    /// Written by a task counted on the connection until its closes are out, which a call lets
    /// finish first (see [`ConnShared::closes_written`](super::connection::ConnShared::closes_written)),
    /// so its request reaches the daemon after them. A close waits for a slot as long as the
    /// connection lives (not the proxy's timeout: a close given up would leave its stream open
    /// for the connection's life).
    pub(super) fn spawn_closes(&self, conn: &Arc<Connection>, ids: Vec<String>) {
        let under_way = conn.shared.closing();
        let (proxy, conn) = (self.clone(), conn.clone());
        tokio::spawn(async move {
            proxy.close_streams(conn, ids).await;
            drop(under_way);
        });
    }

    /// [`spawn_closes`](Self::spawn_closes)'s task.
    async fn close_streams(self, conn: Arc<Connection>, ids: Vec<String>) {
        let proxy = match self.options.timeout {
            Some(_) => self.map_options(|o| o.timeout = None),
            None => self,
        };
        for id in ids {
            // Sent on the stream's connection while it is open, the proxy's or not: one the
            // proxy retired when a read was given up on (a Pyro daemon runs a connection's
            // calls in turn) still carries the close, run after the item it is making; sent
            // nowhere else, the close would wait for the proxy's next call (helper-164 #2).
            // A connection closed meanwhile (`Proxy::close`) is not dialed again for it.
            if conn.shared.is_closed() {
                return;
            }
            tracing::debug!(stream = %id, "closing a stream given up on");
            let corr = frame::new_correlation_id();
            let _ = proxy
                .oneway_on(
                    &conn,
                    Some(DAEMON_OBJECT_ID),
                    CLOSE_STREAM,
                    (&(id,), None::<&()>),
                    (corr, frame::FLAGS_ONEWAY),
                )
                .await;
        }
    }

    /// Encodes a call that is to make the `due` dial, for the daemon and protocol that dial
    /// reaches first (see [`Proxy::ahead_wire`]): to go out with the CONNECT if it is at most
    /// [`AHEAD_MAX`] bytes, else kept, to be sent once that connection is open (not encoded
    /// twice). Neither when nothing may go ahead, or the call does not encode.
    fn encode_ahead(
        &self,
        due: &Due<'_>,
        invoke: &dyn Fn(&Wire<'_>) -> Result<Message, Error>,
    ) -> (Option<Ahead>, Option<Kept>) {
        let Some((direct, serializer, protocol)) = self.ahead_wire(due) else {
            return (None, None);
        };
        let Some(object) = direct.object() else {
            return (None, None);
        };
        let wire = Wire {
            serializer,
            protocol,
            object,
        };
        let Ok(mut msg) = invoke(&wire) else {
            return (None, None);
        };
        // It waits for the dial: out of the encoder's shared arena.
        if msg.payload.len() <= codec::ARENA_MAX {
            msg.payload = Bytes::copy_from_slice(&msg.payload);
        }
        // A large one would be timed by the connect timeout, and lost with a refusal the
        // daemon answers before reading it.
        if !msg.payload_tail.is_empty() || msg.size() > AHEAD_MAX {
            let kept = Kept {
                serializer,
                protocol,
                object: object.to_owned(),
                msg,
            };
            return (None, Some(kept));
        }
        let ahead = Ahead {
            direct: direct.clone(),
            protocol,
            msg,
        };
        (Some(ahead), None)
    }

    /// The correlation id and timeout of a call made now: the proxy's, unless the call is made
    /// inside a remote method: then the correlation id of the call it serves (where this proxy
    /// sets none), and the timeout cut to the time that call's caller has left. A chain of
    /// calls then shares one id in every process's logs, as with Pyro's `current_context`, and
    /// one deadline, as with gRPC's: a daemon further down stops when the first caller stops
    /// waiting.
    fn call_settings(&self) -> (uuid::Uuid, Option<Duration>) {
        let options = &self.options;
        match crate::chain::inherited() {
            None => (
                options
                    .correlation_id
                    .unwrap_or_else(frame::new_correlation_id),
                options.timeout,
            ),
            Some((corr, left)) => (
                options.correlation_id.unwrap_or(corr),
                match (options.timeout, left) {
                    (Some(own), Some(left)) => Some(own.min(left)),
                    (own, left) => own.or(left),
                },
            ),
        }
    }

    /// The INVOKE message of a call with `args` (the positional argument tuple and the
    /// keyword arguments, if any), its correlation id and timeout (sent as its deadline).
    fn invoke_message<A: Serialize, K: Serialize + ?Sized>(
        &self,
        conn: &Wire<'_>,
        object: Option<&str>,
        method: &str,
        (args, kwargs): (&A, Option<&K>),
        (corr, timeout): (uuid::Uuid, Option<Duration>),
        flags: u16,
    ) -> Result<Message, Error> {
        let (payload, tail) = codec::encode_invoke_payload(
            conn.serializer,
            conn.protocol,
            object.unwrap_or(conn.object),
            method,
            args,
            kwargs,
        )?;
        let ser_id = conn.protocol.serializer_id(conn.serializer);
        let mut msg = Message::new(MessageType::Invoke, ser_id, flags, 0, payload);
        msg.payload_tail = tail;
        msg.corr_id = *corr.as_bytes();
        msg.annotations = self.options.annotations.clone();
        // The deadline is the proxy's when it has one (its timeout, or the time left of the
        // call served here), and a oneway call has none: a caller's own `DDLN` goes then. The
        // daemon reads the first, so a middle tier that forwarded its caller's annotations
        // sent that caller's whole time on, and a malformed one turned deadlines off
        // (helper-158 #1).
        let oneway = flags & frame::FLAGS_ONEWAY != 0;
        if (timeout.is_some() || oneway) && !msg.annotations.is_empty() {
            msg.annotations.retain(|(id, _)| *id != DEADLINE_ANNOTATION);
        }
        // A deadline means "stop waiting for the reply": oneway calls have none to wait for.
        if let Some(t) = timeout.filter(|_| !oneway) {
            msg.annotations.push((
                DEADLINE_ANNOTATION,
                Bytes::copy_from_slice(&deadline_millis(t).to_be_bytes()),
            ));
        }
        // A large byte string left out of the payload is announced, so that an rmi daemon
        // reads it into a buffer of its own and hands it to the method without a copy (a
        // Python daemon ignores the annotation).
        if !msg.payload_tail.is_empty()
            && matches!(conn.serializer, Serializer::Bincode | Serializer::MsgPack)
        {
            msg.announce_bulk();
        }
        // The limit counts the whole message: annotations (the caller's, the deadline, the MAC
        // a shared secret adds; under Pyro4 the correlation id too, as a `CORR` annotation,
        // each with Pyro4's shorter header) and payload. Too large a request fails this call
        // only.
        let max = self
            .shared
            .config
            .limits
            .max_message_size
            .min(conn.protocol.max_payload());
        let config = &self.shared.config;
        let mac = if config.secret.is_some() || config.hmac_key.is_some() {
            frame::ANNOTATION_HEADER_SIZE + MAC_LEN
        } else {
            0
        };
        let size = match conn.protocol {
            frame::Protocol::Pyro5 => msg.size() + mac,
            frame::Protocol::Pyro4 => {
                let header = conn.protocol.annotation_header_size();
                let annotations: usize =
                    msg.annotations.iter().map(|(_, v)| header + v.len()).sum();
                // Pyro4's header counts the annotations in 16 bits: more would be left out of
                // the frame, after the MAC was computed over them (the daemon would refuse it
                // and close the connection), or without a word.
                let all = annotations + header + msg.corr_id.len() + mac;
                if all > usize::from(u16::MAX) {
                    return Err(Error::Protocol(format!(
                        "the request's annotations take {all} bytes, over the {} Pyro4's \
                         header can count; not sent",
                        u16::MAX
                    ))
                    .not_sent());
                }
                msg.payload_len() + annotations + header + msg.corr_id.len() + mac
            }
        };
        // (Compressed only after this check, so a request that fits uncompressed always fits.)
        if size > max {
            return Err(Error::Protocol(format!(
                "request of {size} bytes ({} of payload) exceeds max_message_size ({max} bytes); not sent",
                msg.payload_len()
            ))
            .not_sent());
        }
        if self.shared.config.compression {
            msg.compress();
        }
        Ok(msg)
    }

    /// Sends a `<batch>` whose arguments are `args` (rmi's `(calls,)`, or Pyro's calls
    /// themselves) and decodes its reply as an `R`.
    pub(crate) async fn send_batch<A: Serialize, R: DeserializeOwned>(
        &self,
        args: &A,
    ) -> Result<(R, Origin), Error> {
        let (mut reply, origin, _) = self
            .request(None, BATCH_METHOD, args, None::<&()>, frame::FLAGS_BATCH)
            .await?;
        Ok((self.decode_plain(&mut reply, origin)?, origin))
    }

    /// Connects if needed; the serializer and protocol of the connection a batch goes over.
    pub(crate) async fn batch_connection(&self) -> Result<(Serializer, Protocol), Error> {
        let conn = self.connection().await.map_err(Error::not_sent)?;
        Ok((conn.serializer, conn.protocol))
    }

    /// The kinds of connection (serializer and protocol) a batch made now may be sent over:
    /// the live connection's; else every kind the proxy may open (the configured serializer,
    /// else bincode for an rmi daemon and serpent for a Python one; the configured protocol,
    /// else both).
    pub(crate) fn batch_shapes(&self) -> Vec<(Serializer, Protocol)> {
        if let Some(conn) = self.live() {
            return vec![(conn.serializer, conn.protocol)];
        }
        let config = &self.shared.config;
        let protocols = match config.protocol {
            Some(protocol) => vec![protocol],
            None => vec![Protocol::Pyro5, Protocol::Pyro4],
        };
        let mut shapes = Vec::new();
        for protocol in protocols {
            match config.serializer {
                // Bincode is the same in both protocols: one shape.
                Some(Serializer::Bincode) if !shapes.is_empty() => {}
                Some(ser) => shapes.push((ser, protocol)),
                // A shared secret means bincode (only rmi daemons run its handshake).
                None if config.secret.is_some() && protocol == Protocol::Pyro5 => {
                    shapes.push((Serializer::Bincode, protocol))
                }
                // Offered bincode, an rmi daemon takes it; a Python one answers in serpent.
                None if protocol == Protocol::Pyro5 => {
                    shapes.push((Serializer::Bincode, protocol));
                    shapes.push((Serializer::Serpent, protocol));
                }
                None => shapes.push((Serializer::Serpent, protocol)),
            }
        }
        shapes
    }

    pub(crate) async fn send_batch_oneway<A: Serialize>(&self, args: &A) -> Result<(), Error> {
        let (corr, _) = self.call_settings();
        let conn = self.connection().await.map_err(Error::not_sent)?;
        let flags = frame::FLAGS_BATCH | frame::FLAGS_ONEWAY;
        self.oneway_on(
            &conn,
            None,
            BATCH_METHOD,
            (args, None::<&()>),
            (corr, flags),
        )
        .await
    }

    /// Sends a oneway call: returns once the request is written; the daemon sends no reply and
    /// the call has no ordering guarantee against the caller's next call (as in Pyro).
    ///
    /// The proxy's timeout covers the wait for an in-flight slot and the write: a daemon that
    /// stops reading fails the call with [`Error::Timeout`], inside [`Error::NotSent`] when the
    /// call was still queued behind others (it is then taken back, and never sent); a call
    /// already in a write may still arrive. A call whose future is dropped while still queued
    /// is taken back too.
    pub async fn call_oneway<A: Serialize>(&self, method: &str, args: &A) -> Result<(), Error> {
        self.oneway_to(None, method, (args, None::<&()>)).await
    }

    /// Sends a oneway call with positional `args` and keyword arguments `kwargs` (as
    /// [`call_kwargs`](Self::call_kwargs) takes them; Pyro's formats only), as
    /// [`call_oneway`](Self::call_oneway) sends one.
    pub async fn call_oneway_kwargs<A: Serialize, K: Serialize + ?Sized>(
        &self,
        method: &str,
        args: &A,
        kwargs: &K,
    ) -> Result<(), Error> {
        self.oneway_to(None, method, (args, Some(kwargs))).await
    }

    /// Sends a oneway call to the daemon object `Pyro.Daemon`.
    pub async fn call_daemon_oneway<A: Serialize>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<(), Error> {
        self.oneway_to(Some(DAEMON_OBJECT_ID), method, (args, None::<&()>))
            .await
    }

    async fn oneway_to<A: Serialize, K: Serialize + ?Sized>(
        &self,
        object: Option<&str>,
        method: &str,
        args: (&A, Option<&K>),
    ) -> Result<(), Error> {
        let (corr, _) = self.call_settings();
        let span = crate::spans::debug_span!("rmi.oneway", uri = %self.shared.config.uri, method, correlation_id = %corr);
        async {
            let conn = self.connection().await.map_err(Error::not_sent)?;
            self.oneway_on(&conn, object, method, args, (corr, frame::FLAGS_ONEWAY))
                .await
        }
        .instrument(span)
        .await
    }

    /// Sends a oneway call (`flags` include [`frame::FLAGS_ONEWAY`]) with correlation id
    /// `corr` on `conn`, never dialing.
    async fn oneway_on<A: Serialize, K: Serialize + ?Sized>(
        &self,
        conn: &Connection,
        object: Option<&str>,
        method: &str,
        args: (&A, Option<&K>),
        (corr, flags): (uuid::Uuid, u16),
    ) -> Result<(), Error> {
        let msg = self.invoke_message(&conn.wire(), object, method, args, (corr, None), flags)?;
        conn.send_oneway(
            msg,
            self.options.timeout,
            self.shared.config.abandoned_timeout,
        )
        .await
    }

    /// Sends a protocol-level `MSG_PING` and waits for the answer.
    pub async fn ping(&self) -> Result<(), Error> {
        let conn = self.connection().await.map_err(Error::not_sent)?;
        conn.ping(self.options.timeout).await
    }
}

/// Decodes a reply from a daemon speaking `protocol` (whose serializer ids it names). A large
/// byte string the reader split off (see `FrameReader::split_bulk`) is handed to the value's
/// `serde_bytes::ByteBuf` that reads it, not copied, and is no longer the reply's.
///
/// Proxies in the value dial with the TLS settings and shared secret of the proxy, `shared`.
fn decode_result<R: DeserializeOwned>(
    reply: &mut Message,
    origin: Origin,
    shared: &Shared,
) -> Result<R, Error> {
    let limits = &shared.config.limits;
    received::receiving(&shared.security, || decode_reply(reply, origin, limits))
}

/// The connection a reply came on, as decoding it needs: its daemon's protocol (whose
/// serializer ids the reply names) and whether the daemon is rmi's (whose own kinds of error
/// are believed: see `ConnShared::rmi_peer`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    pub(crate) protocol: Protocol,
    pub(crate) rmi_peer: bool,
}

impl Origin {
    /// The serializer `reply` names, as its daemon's protocol numbers them.
    fn serializer_of(&self, reply: &Message) -> Result<Serializer, Error> {
        self.protocol.serializer(reply.serializer).ok_or_else(|| {
            Error::Protocol(format!(
                "reply uses unknown serializer id {}",
                reply.serializer
            ))
        })
    }
}

/// [`decode_result`]'s decoding.
fn decode_reply<R: DeserializeOwned>(
    reply: &mut Message,
    origin: Origin,
    limits: &DecodeLimits,
) -> Result<R, Error> {
    let ser = origin.serializer_of(reply)?;
    if !reply.annotations.is_empty() {
        // How the bytes travelled is no annotation of the caller's (whether or not the reader
        // split them off).
        reply.annotations.retain(|(id, _)| *id != BULK_ANNOTATION);
    }
    if !reply.payload_tail.is_empty() {
        if !reply.has_flag(frame::FLAGS_EXCEPTION) {
            let (head, tail) = (&reply.payload, &mut reply.payload_tail);
            if let Some(decoded) = codec::decode_taking(ser, head, tail, limits) {
                return decoded;
            }
        }
        reply.join_payload();
    }
    // A compressed reply (FLAGS_COMPRESSED) is inflated here, in the caller's task, within the
    // message size limit.
    let inflated;
    let reply = if reply.has_flag(frame::FLAGS_COMPRESSED) {
        let mut copy = reply.clone();
        copy.decompress(limits.max_message_size)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        inflated = copy;
        &inflated
    } else {
        reply
    };
    if reply.has_flag(frame::FLAGS_EXCEPTION) {
        let err = codec::decode_error_from(ser, &reply.payload, limits, origin.rmi_peer)?;
        return Err(Error::from_remote(err));
    }
    ser.decode(&reply.payload, limits)
}

/// True when `reply` is the daemon's answer that the call's deadline passed
/// ([`RemoteErrorKind::DeadlineExceeded`]).
fn deadline_passed(reply: &Message, origin: Origin, limits: &DecodeLimits) -> bool {
    matches!(
        decode_reply::<serde::de::IgnoredAny>(&mut reply.clone(), origin, limits),
        Err(Error::Remote(e)) if e.kind == RemoteErrorKind::DeadlineExceeded
    )
}
