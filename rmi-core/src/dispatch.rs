//! The server side of an object: [`Dispatch`], which generated `{Trait}Server` types implement,
//! and [`RemoteStream`], what a streaming method returns.

use futures_util::stream::{Stream, StreamExt};
use serde::Serialize;

use crate::error::{RemoteError, RemoteErrorKind};
use crate::protocol::codec::{Args, Metadata, Serializer};
use crate::protocol::frame::Protocol;

pub use futures_util::future::BoxFuture;

/// Items already encoded in the caller's serializer, as the daemon keeps them.
pub type EncodedStream = futures_util::stream::BoxStream<'static, Result<Vec<u8>, RemoteError>>;

/// What a dispatched call produced. (More forms may come: a `match` needs a wildcard arm.)
#[non_exhaustive]
pub enum Outcome {
    /// The encoded result (a `Vec<u8>` converts with `.into()`).
    Value(bytes::Bytes),
    /// The encoded result in pieces, sent one after the other as one payload without being
    /// joined: what precedes a large byte buffer, the buffer, and what follows it (a method's
    /// large `Vec<u8>` result is sent from its own buffer, see
    /// [`ByteArg`](crate::protocol::codec::ByteArg)).
    Pieces(bytes::Bytes, Vec<bytes::Bytes>),
    /// A stream of encoded items, for a method returning `RemoteStream<T>`.
    Stream(EncodedStream),
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Value(v) => write!(f, "Value({} bytes)", v.len()),
            Outcome::Pieces(head, tail) => write!(
                f,
                "Pieces({} bytes)",
                head.len() + tail.iter().map(bytes::Bytes::len).sum::<usize>()
            ),
            Outcome::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// An object a daemon can serve: it names its methods and runs a call by wire name.
///
/// `#[rmi::remote]` implements this for `{Trait}Server<T>`; implement it by hand only for
/// dynamic objects. It is dyn-compatible, so it returns a boxed future rather than being an
/// `async fn`.
pub trait Dispatch: Send + Sync + 'static {
    /// The object's methods and which of them are oneway (sent in CONNECTOK).
    fn metadata(&self) -> Metadata;

    /// The metadata of every instance of this type, known without an instance; used for
    /// session and per-call registrations, which make instances only when calls come. Generated
    /// servers implement it; the default (no methods) suits hand-written dispatchers that are
    /// only registered as instances.
    fn describe() -> Metadata
    where
        Self: Sized,
    {
        Metadata::default()
    }

    /// Runs `method` with the encoded `args`; returns the encoded result (or stream) in the
    /// arguments' serializer, or the error to send back.
    fn dispatch<'a>(
        &'a self,
        method: &'a str,
        args: Args,
    ) -> BoxFuture<'a, Result<Outcome, RemoteError>>;
}

/// The return type of a streaming remote method: any `Stream` (or iterator) of `T`.
///
/// With `#[rmi::remote]`, `async fn numbers(&self, n: u32) -> RemoteStream<u32>` gives the
/// proxy `async fn numbers(&self, n: u32) -> Result<ItemStream<u32>, rmi::Error>`. The daemon
/// keeps the stream under an id and the caller pulls items one at a time (Pyro's
/// ITEMSTREAMRESULT); a stream outlives its connection only for the daemon's linger period.
///
/// The stream is polled by the reads that pull its items, calls to the daemon object: inside
/// it, [`CallContext::current`](crate::CallContext::current) is that read's context (its
/// correlation id, annotations and deadline), not the context of the call that returned the
/// stream, and a `one_at_a_time` object's turn is not held (the stream runs beside the
/// object's other calls). A panic in it ends the stream, as an exception in a Python generator
/// ends Pyro's: the reader gets the panic as an error.
pub struct RemoteStream<T> {
    inner: futures_util::stream::BoxStream<'static, T>,
}

impl<T: Send + 'static> RemoteStream<T> {
    /// Streams the items of `stream`.
    pub fn new(stream: impl Stream<Item = T> + Send + 'static) -> Self {
        RemoteStream {
            inner: stream.boxed(),
        }
    }

    /// Streams the items of `iter` (lazily: the iterator runs as items are asked for).
    ///
    /// The iterator runs on the runtime's worker that reads the stream: it must not block. One
    /// that waits (a `std::sync::mpsc::Receiver`, a pipe read line by line, the port of a Pyro
    /// generator doing `queue.get()`) stalls every connection that worker serves, and neither
    /// a close nor a shutdown can end the read: use [`blocking`](Self::blocking) for it.
    pub fn iter<I>(iter: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Self::new(futures_util::stream::iter(iter))
    }

    /// Streams the items of `iter`, an iterator that may block: each item is asked of it on
    /// one of tokio's blocking threads, when a reader asks for it, so a read that waits holds
    /// no runtime worker, and a close, a caller gone or a shutdown ends the read at once.
    /// Nothing runs ahead of the reader: a stream closed while a read waits loses at most
    /// that one item, when the iterator gives it. A panic in it ends the stream as one in
    /// [`iter`](Self::iter)'s does. The iterator runs without the read's
    /// [`CallContext`](crate::CallContext). (Its thread is held only while it is asked for an
    /// item; one blocked for ever keeps its thread, and a runtime being dropped waits for it:
    /// have it end, as a channel does when its senders go.) It is dropped on a blocking thread
    /// too, at its end or when the stream closes, so its `Drop` may block, or drop a runtime
    /// of its own, as a synchronous database or HTTP client does.
    pub fn blocking<I>(iter: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Self::new(futures_util::stream::unfold(
            Some(OffWorker(Some(iter.into_iter()))),
            |held| async move {
                let mut iter = held?.0.take()?;
                let asked = tokio::task::spawn_blocking(move || {
                    let next =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| iter.next()));
                    // Done with at its end (or its panic): dropped here, on this thread.
                    let iter = matches!(next, Ok(Some(_))).then_some(iter);
                    (iter, next)
                });
                // (Not run at all: the runtime is shutting down. The stream ends.)
                let (iter, next) = asked.await.ok()?;
                match next {
                    Ok(Some(item)) => Some((item, Some(OffWorker(iter)))),
                    Ok(None) => None,
                    // Raised here, where the daemon catches a producer's panic.
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            },
        ))
    }
}

/// The iterator of a [`RemoteStream::blocking`] between reads: dropped on a blocking thread,
/// where a `Drop` may block (closing a database connection, joining a thread) or drop a
/// runtime of its own (which panics on a runtime's worker).
struct OffWorker<I: Send + 'static>(Option<I>);

impl<I: Send + 'static> Drop for OffWorker<I> {
    fn drop(&mut self) {
        let Some(iter) = self.0.take() else { return };
        match tokio::runtime::Handle::try_current() {
            // (A runtime shutting down drops the task, and `iter` with it, here.)
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(iter))),
            Err(_) => drop(iter),
        }
    }
}

impl<T: Serialize + Send + 'static> RemoteStream<T> {
    /// The stream with each item encoded in `ser`.
    pub fn encode_with(self, ser: Serializer) -> EncodedStream {
        self.encode_in(ser, Protocol::Pyro5)
    }

    /// The stream with each item encoded in `ser`, for a peer speaking `protocol`.
    pub fn encode_in(self, ser: Serializer, protocol: Protocol) -> EncodedStream {
        self.inner
            .map(move |item| {
                ser.encode_in(protocol, &item).map_err(|e| {
                    RemoteError::new(
                        RemoteErrorKind::Other,
                        "rmi.SerializeError",
                        format!("could not serialize a stream item: {e}"),
                    )
                })
            })
            .boxed()
    }
}

impl<T> std::fmt::Debug for RemoteStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemoteStream")
    }
}
