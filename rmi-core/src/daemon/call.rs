//! One INVOKE: route it to its object, run it inside its context (deadline, panics, tracing
//! span), run `<batch>`es call by call, and build the reply.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tracing::Instrument;

use super::connection::Instance;
use super::connection::{Conn, ConnectionState, Late, Turn};
use super::context::{CallContext, ContextAlloc};
use super::handshake::HandshakeInfo;
use super::hooks::{self, Failure};
use super::log::PeerText;
use super::registration::{Entry, Target};
use super::{reply_to, ObjectHint};
use crate::dispatch::{Dispatch, Outcome};
use crate::error::{RemoteError, RemoteErrorKind};
use crate::protocol::codec::{self, Serializer};
use crate::protocol::frame::{self, Message, MessageType, Protocol};
use crate::protocol::names::{BATCH_METHOD, BULK_ANNOTATION, DAEMON_OBJECT_ID, STREAM_ANNOTATION};

/// A call's failure on its way to the reply, boxed: a `RemoteError` is 152 bytes, and a result
/// that holds one is moved by every layer of the call's future it passes through (seven
/// copies per call on the daemon, `compare --profile rmi 8x8` under `perf`); boxed, it is the
/// size of an `Outcome`. Only a failed call pays the allocation.
type Failed = Box<RemoteError>;

/// A stream id's length in its annotation (a UUID's text).
const STREAM_ID_LEN: usize = 36;

/// One INVOKE to run.
pub(super) struct Call {
    /// What the connection's calls share.
    pub(super) conn: Arc<Conn>,
    /// The connection's session instances.
    pub(super) state: Arc<ConnectionState>,
    pub(super) ser: Serializer,
    /// The connection's protocol: the reply is encoded for it.
    pub(super) protocol: Protocol,
    pub(super) req: Message,
    /// This call's place in the connection's arrival order, when its object runs calls one
    /// at a time.
    pub(super) turn: Option<Turn>,
    /// A finished call's context allocation to run this one's in; this call's, once it is
    /// done (for the connection's next call).
    pub(super) context: Option<ContextAlloc>,
    /// The connection's last object lookup, for this call's; this call's, once it is done.
    pub(super) object_hint: Option<ObjectHint>,
}

impl Call {
    /// Runs the call; returns the reply to send (none for oneway calls).
    ///
    /// The connection allocates this future for every call that has to wait (the others reuse
    /// one), so it is kept under 1 KiB, within glibc's per-thread cache of small blocks (larger
    /// ones cost several times as much to allocate and free): the call is borrowed, not moved
    /// in, and batches and deadlines, which need more state, box theirs.
    ///
    /// `inflated` is what inflating a compressed request (`FLAGS_COMPRESSED`, within
    /// `max_message_size`) came to: the request loop inflates it, so that a call that waits is
    /// counted at its real size; one that does not inflate is answered as malformed here.
    pub(super) async fn run(&mut self, inflated: Result<(), frame::Error>) -> Option<Message> {
        let oneway = self.req.has_flag(frame::FLAGS_ONEWAY);
        let corr = if self.req.has_flag(frame::FLAGS_CORR_ID) {
            uuid::Uuid::from_bytes(self.req.corr_id)
        } else {
            frame::new_correlation_id()
        };
        let turn = self.turn.take();
        let mut context = self.context.take();
        let mut hint = self.object_hint.take();
        // (An error reported to the call-error hook where the call's names were known.)
        let (result, mut annotations, mut reported) = match inflated {
            Ok(()) => {
                // Taken, not cloned: the reply needs only the request's header fields.
                let payload = std::mem::take(&mut self.req.payload);
                let reuse = (&mut context, &mut hint);
                self.invoke(payload, corr, oneway, turn, reuse).await
            }
            // Reported here, with no names: the allocation still holds the previous call's.
            Err(e) => (
                Err(Box::new(self.malformed_reported(e, corr, oneway))),
                Vec::new(),
                true,
            ),
        };
        self.context = context;
        self.object_hint = hint;
        // Nobody reads a oneway call's result: not checked, encoded or counted as a failure.
        if oneway && result.is_ok() {
            // Nor could anyone read a stream it opened (its id goes in no reply).
            if let Ok(Outcome::Stream(items)) = result {
                drop_quietly(items, "a stream's producer");
            }
            return None;
        }
        let ser = self.ser;
        let inner = &self.conn.daemon.inner;
        // Pyro4's header counts a message's annotations in 16 bits: a reply whose annotations
        // (the method's, a stream's id, the correlation id, a MAC) take more goes without
        // them, and a result in it becomes that failure (a method's own error stays). The
        // frame would leave some out: under an HMAC key after the MAC covered them, so the
        // proxy refused the reply and dropped the connection; without one, unsaid. A stream
        // the call would have opened is not opened.
        let result = match result {
            result if self.protocol == Protocol::Pyro4 => {
                let signed = inner.config.secret.is_some() || inner.config.hmac_key.is_some();
                let stream = match result {
                    Ok(Outcome::Stream(_)) => {
                        self.protocol.annotation_header_size() + STREAM_ID_LEN
                    }
                    _ => 0,
                };
                let all = reply_overhead(&annotations, signed, self.protocol, true) + stream;
                if all <= usize::from(u16::MAX) {
                    result
                } else {
                    annotations.clear();
                    match result {
                        Err(e) => Err(e),
                        Ok(outcome) => {
                            if let Outcome::Stream(items) = outcome {
                                drop_quietly(items, "a stream's producer");
                            }
                            Err(Failed::new(over_pyro4s_count(all)))
                        }
                    }
                }
            }
            other => other,
        };
        let result = match result {
            // Nobody could read a stream a oneway call opened (its id goes in no reply): not
            // opened, so it takes none of the connection's streams.
            Ok(Outcome::Stream(_)) if oneway => Ok(None),
            Ok(Outcome::Stream(items)) => inner
                .streams
                .open(
                    self.conn.id,
                    (ser, self.protocol),
                    items,
                    inner.config.max_streams_per_connection,
                    inner.config.max_streams,
                )
                .map(|id| {
                    annotations.push((STREAM_ANNOTATION, bytes::Bytes::from(id.into_bytes())));
                    None
                })
                .map_err(Box::new),
            Ok(Outcome::Value(payload)) => Ok(Some((payload, Vec::new()))),
            Ok(Outcome::Pieces(payload, tail)) => Ok(Some((payload, tail))),
            Err(e) => Err(e),
        };
        let batch = self.req.flags & frame::FLAGS_BATCH;
        // A result too big for the limits would make the caller drop the whole connection:
        // answer this call with an error instead. The limit counts the whole message:
        // annotations (the method's, a stream id, the MAC a shared secret adds) and payload.
        let max = inner
            .config
            .limits
            .max_message_size
            .min(self.protocol.max_payload());
        // A large byte string left out of the result is announced (see below).
        let announced = matches!(&result, Ok(Some((_, tail))) if !tail.is_empty())
            && matches!(ser, codec::Serializer::Bincode | codec::Serializer::MsgPack);
        let overhead = reply_overhead(
            &annotations,
            inner.config.secret.is_some() || inner.config.hmac_key.is_some(),
            self.protocol,
            self.req.corr_id != [0; 16],
        ) + if announced {
            frame::BULK_ANNOUNCEMENT_SIZE
        } else {
            0
        };
        let result = match result {
            Ok(Some((payload, tail)))
                if tail
                    .iter()
                    .fold(payload.len(), |n, piece| n.saturating_add(piece.len()))
                    .saturating_add(overhead)
                    > max =>
            {
                let len = tail.iter().map(bytes::Bytes::len).sum::<usize>() + payload.len();
                Err(Failed::new(RemoteError::new(
                    RemoteErrorKind::Other,
                    "rmi.MessageTooLarge",
                    format!(
                        "the result of {len} bytes (with {overhead} bytes of annotations) exceeds max_message_size ({max} bytes)"
                    ),
                )))
            }
            other => other,
        };
        let mut reply = match result {
            Ok(Some((payload, tail))) => {
                let mut reply = reply_to(&self.req, MessageType::Result, batch, payload);
                reply.payload_tail = tail;
                reply
            }
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
                    codec::encode_error_in(ser, self.protocol, &marker),
                )
            }
            Err(mut err) => {
                err.keep_class = inner.config.keeps_class(&err.type_name);
                if !std::mem::replace(&mut reported, true) {
                    // Raised after the call (its result too large, no room for its stream):
                    // its names are those its context's allocation kept, if it has it back.
                    let names = self.context.as_ref().map(|alloc| alloc.names());
                    let call = Failure {
                        object: names.map(|(object, _)| object),
                        method: names.map(|(_, method)| method),
                        correlation_id: corr,
                        oneway,
                    };
                    hooks::call_failed(&self.conn, call, &err);
                }
                if oneway {
                    let warnings = &inner.oneway_warnings;
                    let peer = &*self.conn.peer;
                    if warnings
                        .allow(|n| tracing::warn!(%peer, left_out = n, "more oneway calls failed"))
                    {
                        tracing::warn!(%peer, error = %PeerText(&err.to_string()), "oneway call failed");
                    }
                }
                reply_to(
                    &self.req,
                    MessageType::Result,
                    frame::FLAGS_EXCEPTION,
                    codec::encode_error_in(ser, self.protocol, &err),
                )
            }
        };
        reply.corr_id = *corr.as_bytes();
        reply.annotations = annotations;
        if announced {
            // For the proxy to read it into a buffer of its own and hand it to its caller.
            reply.announce_bulk();
        }
        if inner.config.compression {
            reply.compress();
        }
        (!oneway).then_some(reply)
    }

    /// Routes and runs the call (`payload`, the request's, and its tail) in a context made in
    /// `context` (a finished call's allocation, when given), which gets this call's back; its
    /// object is looked up through `hint` (see `Inner::object_hinted`).
    async fn invoke(
        &mut self,
        payload: bytes::Bytes,
        corr: uuid::Uuid,
        oneway: bool,
        turn: Option<Turn>,
        (context, hint): (&mut Option<ContextAlloc>, &mut Option<ObjectHint>),
    ) -> (Result<Outcome, Failed>, Vec<frame::Annotation>, bool) {
        if !self.req.annotations.is_empty() {
            // How the bytes travelled is no annotation of the caller's (whether or not the
            // reader split them off).
            self.req
                .annotations
                .retain(|(id, _)| *id != BULK_ANNOTATION);
        }
        // (Taken here, not passed in: the rare tail does not enlarge every call's future.)
        let tail = if self.req.payload_tail.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.req.payload_tail))
        };
        let inner = &self.conn.daemon.inner;
        // The caller's annotations go to the call's context (nothing reads the request's after).
        let annotations = std::mem::take(&mut self.req.annotations);
        // The names are copied into the call's context (made in a finished call's allocation
        // when there is one); the call borrows them back from it.
        let decoded = codec::decode_invoke_with(
            self.ser,
            (payload, tail),
            &inner.config.limits,
            &self.conn.connected,
            |object, method| {
                CallContext::new(
                    context.take(),
                    &self.conn,
                    object,
                    method,
                    corr,
                    annotations,
                    oneway,
                )
            },
        );
        let (ctx, args) = match decoded {
            Ok((ctx, args)) => (ctx, args.in_protocol(self.protocol)),
            Err(e) => {
                return (
                    Err(Box::new(self.malformed_reported(e, corr, oneway))),
                    Vec::new(),
                    true,
                )
            }
        };
        let result = match self.refusal(ctx.object()) {
            Some(refused) => Err(Box::new(refused)),
            None => self.invoke_in(&ctx, args, turn, corr, hint).await,
        };
        if let Err(err) = &result {
            let call = Failure {
                object: Some(ctx.object()),
                method: Some(ctx.method()),
                correlation_id: corr,
                oneway,
            };
            hooks::call_failed(&self.conn, call, err);
        }
        let reported = result.is_err();
        let (annotations, alloc) = ctx.finish();
        *context = alloc;
        (result, annotations, reported)
    }

    /// The error for a request that did not decode (or inflate), told to the call-error hook
    /// with no names: none were read.
    fn malformed_reported(
        &self,
        e: impl std::fmt::Display,
        corr: uuid::Uuid,
        oneway: bool,
    ) -> RemoteError {
        let err = malformed(e);
        let call = Failure {
            object: None,
            method: None,
            correlation_id: corr,
            oneway,
        };
        hooks::call_failed(&self.conn, call, &err);
        err
    }

    /// Tells the daemon's call-error hook that the call to `method` of `object` in this
    /// call's batch failed.
    fn batch_item_failed(
        &self,
        object: &str,
        method: Option<&str>,
        ctx: &CallContext,
        error: &RemoteError,
    ) {
        let call = Failure {
            object: Some(object),
            method,
            correlation_id: ctx.correlation_id(),
            oneway: ctx.is_oneway(),
        };
        hooks::call_failed(&self.conn, call, error);
    }

    /// Why a call to `object` is refused on this connection, if it is.
    fn refusal(&self, object: &str) -> Option<RemoteError> {
        if object == &*self.conn.connected || object == DAEMON_OBJECT_ID {
            return None;
        }
        // A connection opened for no object (a Pyro4 client without metadata) is bound by its
        // first call, once the validator accepts that object; its calls to it look nothing up.
        let late = self.conn.late.as_ref();
        let bound = late.and_then(|late| late.bound.get());
        if bound.is_some_and(|bound| **bound == *object) {
            return None;
        }
        if self.conn.daemon.inner.object(object).is_none() {
            return Some(RemoteError::unknown_object(object));
        }
        let opened_for = match (late, bound) {
            (Some(late), None) => return self.bind(late, object).err(),
            (_, Some(bound)) => bound,
            (None, None) => &self.conn.connected,
        };
        Some(refused(
            "Pyro5.errors.ProtocolError",
            format!("this connection was opened for object {opened_for:?}, not {object:?}"),
            object,
        ))
    }

    /// Binds a connection opened for no object to `object`, which its first call addresses,
    /// if the handshake validator accepts it (asked again, now with the object). Two first
    /// calls at once: one binds, the other is refused unless it addresses the same object.
    fn bind(&self, late: &Late, object: &str) -> Result<(), RemoteError> {
        let inner = &self.conn.daemon.inner;
        if let (Some(validator), Some(data)) = (&inner.config.validator, &late.handshake) {
            let info = HandshakeInfo {
                connection: self.conn.id,
                peer: &self.conn.peer,
                object,
                data,
                peer_certificate: self.conn.peer_certificate.as_ref(),
            };
            let warnings = &inner.panic_warnings;
            if let Err(reason) = super::handshake::validate(warnings, &**validator, &info) {
                tracing::debug!(peer = %self.conn.peer, %object, "the validator refused the first call's object");
                return Err(refused(
                    "Pyro5.errors.SecurityError",
                    format!("the daemon refused a connection to object {object:?}: {reason}"),
                    object,
                ));
            }
        }
        let bound = late.bound.get_or_init(|| object.into());
        if **bound == *object {
            return Ok(());
        }
        Err(refused(
            "Pyro5.errors.ProtocolError",
            format!("this connection was opened for object {bound:?}, not {object:?}"),
            object,
        ))
    }

    /// Runs the call whose context is `ctx`: waits for its turn, if its object takes calls one
    /// at a time, then runs the method (or the batch).
    async fn invoke_in(
        &self,
        ctx: &CallContext,
        args: codec::Args,
        turn: Option<Turn>,
        corr: uuid::Uuid,
        hint: &mut Option<ObjectHint>,
    ) -> Result<Outcome, Failed> {
        // A call to the connection's one-at-a-time object waits for the calls that arrived
        // before it and holds its turn while it runs; any other call gives its turn up now.
        // It waits no longer than its caller does: at its deadline it gives up its turn (the
        // calls behind it keep their order) and, with its reply, its in-flight slot.
        let _turn = match turn {
            Some(turn) if ctx.object() == &*self.conn.connected => {
                match ctx.deadline() {
                    // Boxed: a timer would otherwise enlarge every call's future.
                    Some(deadline) => {
                        if Box::pin(tokio::time::timeout_at(deadline, turn.wait()))
                            .await
                            .is_err()
                        {
                            return Err(Box::new(deadline_exceeded(ctx.object(), ctx.method())));
                        }
                    }
                    None => turn.wait().await,
                }
                Some(turn)
            }
            // Dropped here, not at the end of the call: a `_` arm would leave it alive.
            other => {
                drop(other);
                None
            }
        };
        let (object, method) = (ctx.object(), ctx.method());
        if method == BATCH_METHOD && self.req.has_flag(frame::FLAGS_BATCH) {
            // Boxed, as is a deadline's timer: each would otherwise enlarge every call's
            // future, which is allocated per call (see `run`).
            Box::pin(self.batch(object, args, ctx))
                .await
                .map_err(Box::new)
        } else {
            let entry = self.conn.daemon.inner.object_hinted(object, hint);
            self.dispatch(entry.as_deref(), object, method, args, ctx, corr, None)
                .await
        }
    }

    /// Runs the calls of a `<batch>` in order, stopping at the first error (as Pyro does).
    ///
    /// Two shapes arrive: Pyro's (what Python's `BatchProxy` sends, and a Rust batch in a Pyro
    /// format), whose arguments are the calls `[method, [args...], {kwargs}]` and whose reply
    /// is the list of results with the failure as Pyro's `_ExceptionWrapper`; and rmi's own
    /// (under bincode), one argument holding the encoded calls, answered with `BatchItem`s.
    async fn batch(
        &self,
        object: &str,
        args: codec::Args,
        ctx: &CallContext,
    ) -> Result<Outcome, RemoteError> {
        let config = &self.conn.daemon.inner.config;
        let limits = &config.limits;
        let max = config.max_batch_calls;
        if let Some(calls) = args
            .pyro_batch()
            .map_err(|e| RemoteError::bad_arguments(BATCH_METHOD, e))?
        {
            return self.pyro_batch(object, calls, ctx).await;
        }
        // Refuse from the declared length, before decoding a single call.
        if let Some(n) = args.leading_seq_len().filter(|&n| n > max as u64) {
            return Err(too_many_calls(n, max));
        }
        let (calls,): (Vec<serde_bytes::ByteBuf>,) = args
            .decode()
            .map_err(|e| RemoteError::bad_arguments(BATCH_METHOD, e))?;
        if calls.len() > max {
            return Err(too_many_calls(calls.len() as u64, max));
        }
        let mut results = Vec::with_capacity(calls.len());
        let mut size = 0usize;
        let percall = BatchInstance::default();
        for payload in calls {
            // Work done only for this caller stops when it is gone (not a oneway batch's: its
            // caller need not stay, as Pyro's runs to the end); and a long batch yields to the
            // runtime between calls, so it cannot hold a worker thread. The results so far go
            // back, the stop in the next one's place: a caller that only half-closed (shut
            // its sending side, still reading) learns which calls ran.
            if self.conn.peer_gone.is_raised() && !ctx.is_oneway() {
                tracing::debug!(peer = %self.conn.peer, ran = results.len(), "caller gone; batch stopped");
                results.push(codec::BatchItem::from(Err(caller_gone())));
                break;
            }
            tokio::task::consume_budget().await;
            let (item, method) =
                match codec::decode_invoke(self.ser, payload.into_vec().into(), limits) {
                    Err(e) => (Err(RemoteError::bad_arguments(BATCH_METHOD, e)), None),
                    Ok(call) => {
                        let args = call.args.in_protocol(self.protocol);
                        let item = self
                            .batched(object, &call.method, args, ctx, &percall)
                            .await;
                        (item, Some(call.method))
                    }
                };
            // Nobody reads a oneway batch's results: not bounded by one reply's size, nor kept,
            // so all its calls run (to the first failure), as in Pyro.
            if ctx.is_oneway() {
                if let Err(err) = &item {
                    self.batch_item_failed(object, method.as_deref(), ctx, err);
                    break;
                }
                continue;
            }
            let item = self.batch_item_fits(&mut size, results.len(), item, ctx);
            if let Err(err) = &item {
                self.batch_item_failed(object, method.as_deref(), ctx, err);
            }
            let failed = item.is_err();
            results.push(codec::BatchItem::from(item));
            if failed {
                break;
            }
        }
        self.ser
            .encode(&results)
            .map(|v| Outcome::Value(v.into()))
            .map_err(|e| {
                RemoteError::new(
                    RemoteErrorKind::Other,
                    "rmi.SerializeError",
                    format!("could not serialize the batch: {e}"),
                )
            })
    }

    /// Runs the calls of a batch in Pyro's format, in order, stopping at the first error.
    async fn pyro_batch(
        &self,
        object: &str,
        calls: Vec<codec::BatchCall>,
        ctx: &CallContext,
    ) -> Result<Outcome, RemoteError> {
        let max = self.conn.daemon.inner.config.max_batch_calls;
        if calls.len() > max {
            return Err(too_many_calls(calls.len() as u64, max));
        }
        let mut results = Vec::with_capacity(calls.len());
        let mut size = 0usize;
        let percall = BatchInstance::default();
        for call in calls {
            // (As in `batch`: the results so far, then the stop.)
            if self.conn.peer_gone.is_raised() && !ctx.is_oneway() {
                tracing::debug!(peer = %self.conn.peer, ran = results.len(), "caller gone; batch stopped");
                results.push(Err(caller_gone()));
                break;
            }
            tokio::task::consume_budget().await;
            let item = self
                .batched(object, &call.method, call.args, ctx, &percall)
                .await;
            // (Marked after the size check, which may put its own error in the item's place;
            // a oneway batch's results are not bounded by one reply's size, as in `batch`.)
            let item = match ctx.is_oneway() {
                true => item,
                false => self.batch_item_fits(&mut size, results.len(), item, ctx),
            }
            .map_err(|mut err| {
                err.keep_class = self.conn.daemon.inner.config.keeps_class(&err.type_name);
                err
            });
            // A method the object does not have fails the whole batch, as in Pyro (which looks
            // it up outside the call's own error handling): the caller's `batch()` raises
            // `AttributeError`, not the iteration of its results.
            // (Decided by the object's methods, not by the error's kind alone: a method that
            // exists may relay an `UnknownMethod` of another call as its own failure.)
            if let Err(e) = &item {
                let lacks = || {
                    self.conn.daemon.inner.object(object).is_none_or(|entry| {
                        let named = |names: &[String]| names.contains(&call.method);
                        !named(&entry.meta.methods) && !named(&entry.meta.attrs)
                    })
                };
                // (Told to the call-error hook once, as the batch's failure.)
                if e.kind == RemoteErrorKind::UnknownMethod && lacks() {
                    return item.map(|_| Outcome::Value(Default::default()));
                }
                self.batch_item_failed(object, Some(&call.method), ctx, e);
            }
            let failed = item.is_err();
            // (A oneway batch's results, which nobody reads, are not kept.)
            if !ctx.is_oneway() || failed {
                results.push(item);
            }
            if failed {
                break;
            }
        }
        codec::encode_pyro_batch(self.ser, self.protocol, results)
            .map(|v| Outcome::Value(v.into()))
            .map_err(|e| {
                RemoteError::new(
                    RemoteErrorKind::Other,
                    "rmi.SerializeError",
                    format!("could not serialize the batch: {e}"),
                )
            })
    }

    /// The result of a batch's call number `ran` (from 0) as the reply is to carry it, `size`
    /// being the bytes of the results before it: itself if it still fits in one reply with
    /// them, else an `rmi.MessageTooLarge` error in its place, which stops the batch there. The
    /// calls before it keep their results (they ran, as this one did), and the daemon does not
    /// run every call and hold every result first when the reply could not go anyway.
    fn batch_item_fits(
        &self,
        size: &mut usize,
        ran: usize,
        item: Result<Vec<u8>, RemoteError>,
        ctx: &CallContext,
    ) -> Result<Vec<u8>, RemoteError> {
        let max = self
            .conn
            .daemon
            .inner
            .config
            .limits
            .max_message_size
            .min(self.protocol.max_payload());
        // The error that takes the place of a result that does not fit always fits: the
        // results kept leave room for it.
        // The reply carries the annotations its calls set too.
        let room = max
            .saturating_sub(BATCH_REPLY_RESERVE)
            .saturating_sub(ctx.response_annotations_size());
        let (cost, limit) = match &item {
            Ok(result) => (
                result.len().saturating_add(BATCH_ITEM_FRAMING),
                room.saturating_sub(BATCH_STOP_ERROR),
            ),
            Err(e) => (batch_error_cost(e), room),
        };
        let total = size.saturating_add(cost);
        if total <= limit {
            *size = total;
            return item;
        }
        let what = match &item {
            Ok(result) => format!("its result of {} bytes", result.len()),
            Err(_) => "its error".to_owned(),
        };
        Err(RemoteError::new(
            RemoteErrorKind::Other,
            "rmi.MessageTooLarge",
            format!(
                "call {} of the batch ran, but {what} would take the reply past \
                 max_message_size ({max} bytes) after {ran} results of {size} bytes; the batch \
                 stopped there",
                ran + 1,
                size = *size,
            ),
        ))
    }

    /// Runs one call of a batch: its encoded result; a streamed result is refused.
    async fn batched(
        &self,
        object: &str,
        method: &str,
        args: codec::Args,
        ctx: &CallContext,
        percall: &BatchInstance,
    ) -> Result<Vec<u8>, RemoteError> {
        let corr = ctx.correlation_id();
        // Looked up for each call: an object removed meanwhile fails the rest of the batch.
        let entry = self.conn.daemon.inner.object(object);
        // Each call sees its own method name (not `<batch>`); the reply annotations it sets
        // are the batch's.
        let own = ctx.for_batched(method);
        let outcome = self
            .dispatch(
                entry.as_deref(),
                object,
                method,
                args,
                &own,
                corr,
                Some(percall),
            )
            .await;
        own.pass_annotations_to(ctx);
        match outcome {
            Ok(Outcome::Value(v)) => Ok(Vec::from(v)),
            Ok(Outcome::Pieces(head, tail)) => {
                let mut v = Vec::from(head);
                tail.iter().for_each(|piece| v.extend_from_slice(piece));
                Ok(v)
            }
            Ok(Outcome::Stream(items)) => {
                // Dropped as every producer is: one that panics as it goes must not take the
                // batch's answer, or the connection, with it (helper-164 #1).
                drop_quietly(items, "a stream's producer");
                Err(RemoteError::new(
                    RemoteErrorKind::Other,
                    "Pyro5.errors.PyroError",
                    format!("{method:?}: streamed results are not supported inside a batch"),
                ))
            }
            Err(e) => Err(*e),
        }
    }

    /// Runs one method on the object (`entry`, registered as `object`; or this connection's
    /// instance of it) inside `ctx`. The calls of a batch share `percall`: one instance of a
    /// per-call object serves the whole batch, as in Pyro.
    #[allow(clippy::too_many_arguments)]
    async fn dispatch(
        &self,
        entry: Option<&Entry>,
        object: &str,
        method: &str,
        args: codec::Args,
        ctx: &CallContext,
        corr: uuid::Uuid,
        percall: Option<&BatchInstance>,
    ) -> Result<Outcome, Failed> {
        let inner = &self.conn.daemon.inner;
        let entry = entry.ok_or_else(|| RemoteError::unknown_object(object))?;
        // The deadline counts from the request's arrival: a call whose deadline passed while
        // it waited (for a one-at-a-time object's turn) is not started at all.
        if ctx
            .deadline()
            .is_some_and(|deadline| deadline <= tokio::time::Instant::now())
        {
            return Err(Box::new(deadline_exceeded(object, method)));
        }
        let span = crate::spans::debug_span!("rmi.dispatch", object, method, correlation_id = %corr, peer = %self.conn.peer);
        // The instance is made and `dispatch` is called on the first poll, inside the scope
        // and the panic guard: a session, per-call or lazy single instance's factory is user
        // code that may ask for the call's context (as Pyro's instance creators may), and a
        // hand-written dispatch may decode its arguments (proxies in them included) or panic
        // before it returns its future.
        let run = ctx
            .scope(
                AssertUnwindSafe(async {
                    let kept = percall.and_then(|kept| {
                        kept.0
                            .lock()
                            .as_ref()
                            .filter(|(generation, _)| *generation == entry.generation)
                            .map(|(_, instance)| instance.clone())
                    });
                    let target = match kept {
                        Some(instance) => Instance::Own(instance),
                        None => {
                            let target = self.instance(object, method, entry)?;
                            // (Replaced, if the object was registered again meanwhile.)
                            if let (Some(percall), Target::PerCall(_), Instance::Own(made)) =
                                (percall, &entry.target, &target)
                            {
                                *percall.0.lock() = Some((entry.generation, made.clone()));
                            }
                            target
                        }
                    };
                    // (Boxed as it comes out of the method: see `Failed`.)
                    let outcome = target.dispatch(method, args).await.map_err(Box::new);
                    // A per-call instance's `Drop` (user code) runs here: one that panics is
                    // logged, and the call's result stands.
                    if let Instance::Own(instance) = target {
                        drop_quietly(instance, "an instance");
                    }
                    outcome
                })
                .catch_unwind(),
            )
            .instrument(span);
        // The caller stops waiting at its deadline; so does the method (gRPC-style propagation).
        let outcome = match ctx.deadline() {
            Some(deadline) => match Box::pin(tokio::time::timeout_at(deadline, run)).await {
                Ok(outcome) => outcome,
                Err(_) => return Err(Box::new(deadline_exceeded(object, method))),
            },
            None => run.await,
        };
        match outcome {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(mut err)) => {
                if err.object.as_deref().is_none_or(str::is_empty) {
                    err.object = Some(object.to_owned());
                }
                if err.method.as_deref().is_none_or(str::is_empty) {
                    err.method = Some(method.to_owned());
                }
                Err(err)
            }
            Err(panic) => {
                let text = panic_text(&*panic);
                if inner
                    .panic_warnings
                    .allow(|n| tracing::error!(left_out = n, "more calls panicked"))
                {
                    tracing::error!(object = %PeerText(object), method = %PeerText(method), panic = %PeerText(&text), "remote method panicked");
                }
                let mut err = RemoteError::panic(method, &text);
                err.object = Some(object.to_owned());
                Err(Box::new(err))
            }
        }
    }
    /// The instance that serves this call: the shared one, or this connection's or this
    /// call's, made now. A panic in the factory is this caller's error, like one in a method.
    fn instance<'e>(
        &self,
        object: &str,
        method: &str,
        entry: &'e Entry,
    ) -> Result<super::connection::Instance<'e>, RemoteError> {
        std::panic::catch_unwind(AssertUnwindSafe(|| self.state.target(object, entry))).map_err(
            |panic| {
                let text = panic_text(&*panic);
                if self
                    .conn
                    .daemon
                    .inner
                    .panic_warnings
                    .allow(|n| tracing::error!(left_out = n, "more calls panicked"))
                {
                    tracing::error!(object = %PeerText(object), method = %PeerText(method), panic = %PeerText(&text), "instance factory panicked");
                }
                RemoteError::panic(method, &format!("the instance factory panicked: {text}"))
            },
        )
    }
}

/// The message of a panic payload.
/// Drops `value`, user code (a per-call instance, a stream's producer), where a panic in its
/// `Drop` must not unwind the daemon's own code: the panic is logged, and goes no further.
pub(super) fn drop_quietly<T>(value: T, what: &str) {
    if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(move || drop(value))) {
        let panic = panic_text(&*panic);
        tracing::error!(what, %panic, "dropping it panicked");
    }
}

pub(super) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic payload)".into())
}

/// The error for a batch whose caller went away.
fn caller_gone() -> RemoteError {
    RemoteError::new(
        RemoteErrorKind::Other,
        super::hooks::CALLER_GONE,
        "the caller's connection closed; the batch stopped",
    )
}

/// The error for a `<batch>` longer than `max_batch_calls`.
fn too_many_calls(n: u64, max: usize) -> RemoteError {
    RemoteError::new(
        RemoteErrorKind::Other,
        "rmi.TooManyCalls",
        format!("a batch of {n} calls exceeds max_batch_calls ({max}); none ran"),
    )
}

/// Bytes a reply carries besides its payload: its annotations, plus the MAC annotation the
/// writer adds on an authenticated connection.
fn reply_overhead(
    annotations: &[frame::Annotation],
    signed: bool,
    protocol: Protocol,
    correlated: bool,
) -> usize {
    let mac = if signed {
        frame::ANNOTATION_HEADER_SIZE + crate::protocol::names::MAC_LEN
    } else {
        0
    };
    // Pyro4 carries the correlation id as a `CORR` annotation (a 6-byte header, 16 bytes).
    let corr = if correlated && protocol == Protocol::Pyro4 {
        protocol.annotation_header_size() + 16
    } else {
        0
    };
    annotations
        .iter()
        .map(|(_, v)| protocol.annotation_header_size() + v.len())
        .sum::<usize>()
        + mac
        + corr
}

/// The failure of a call whose reply's annotations take `all` bytes, more than Pyro4's header
/// counts.
fn over_pyro4s_count(all: usize) -> RemoteError {
    RemoteError::new(
        RemoteErrorKind::Other,
        "rmi.MessageTooLarge",
        format!(
            "the reply's annotations take {all} bytes, over the {} Pyro4's header can count",
            u16::MAX
        ),
    )
}

/// The error for a request that is not a well-formed call.
fn malformed(reason: impl std::fmt::Display) -> RemoteError {
    RemoteError::new(
        RemoteErrorKind::Protocol,
        "Pyro5.errors.ProtocolError",
        format!("malformed call: {reason}"),
    )
}

/// The instance of a per-call object that serves every call of one batch (with the number of
/// the registration that made it), made by the first.
#[derive(Default)]
struct BatchInstance(parking_lot::Mutex<Option<(u64, Arc<dyn Dispatch>)>>);

impl Drop for BatchInstance {
    fn drop(&mut self) {
        // Dropped after the batch, outside any call's panic guard.
        if let Some(kept) = self.0.get_mut().take() {
            drop_quietly(kept, "a batch's per-call instance");
        }
    }
}

/// Room a batch's reply keeps beside its results for its annotations (the MAC a shared secret
/// adds, Pyro4's correlation id).
const BATCH_REPLY_RESERVE: usize = 256;
/// What each result of a batch takes in its reply beyond its own bytes, at most: a tag and a
/// length in rmi's format, separators and a wrapper in Pyro's.
const BATCH_ITEM_FRAMING: usize = 32;
/// Room the results of a batch leave for the `rmi.MessageTooLarge` error that stops it, in
/// any format: an exception dict's 512 bytes of names, with its type three times (its
/// arguments, the traceback text, `_rmiClass`) and a message under 200 bytes of ASCII (nothing
/// to escape) twice.
const BATCH_STOP_ERROR: usize = 1152;

/// At most what `e` takes in a batch's reply: in Pyro's formats an exception dict (class
/// names and keys), with its type three times (its arguments, the traceback text and
/// `_rmiClass`, when it goes as `RuntimeError`) and its message twice, each escaped, a control
/// character at worst six bytes (JSON's `\u00NN`); under bincode, less.
fn batch_error_cost(e: &RemoteError) -> usize {
    let text = 18 * e.type_name.len() + 12 * e.message.len();
    let chain: usize = e.chain.iter().map(|c| 12 * c.len() + 16).sum();
    let names = e.object.as_ref().map_or(0, String::len) + e.method.as_ref().map_or(0, String::len);
    (text + chain + names).saturating_add(512)
}

/// The error of a call cancelled (or never started) because its caller's deadline passed.
fn deadline_exceeded(object: &str, method: &str) -> RemoteError {
    tracing::debug!(object, method, "caller's deadline passed; call cancelled");
    let mut err = RemoteError::new(
        RemoteErrorKind::DeadlineExceeded,
        "rmi.DeadlineExceeded",
        format!("the caller's deadline passed, so {method:?} was cancelled"),
    );
    err.object = Some(object.to_owned());
    err
}

/// A call refused on its connection (not run): a protocol-level error of `type_name`.
fn refused(type_name: &str, message: String, object: &str) -> RemoteError {
    let mut e = RemoteError::new(RemoteErrorKind::Protocol, type_name, message);
    e.object = Some(object.to_owned());
    e
}
